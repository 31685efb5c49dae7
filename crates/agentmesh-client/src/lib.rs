//! Typed client for an agentmesh node's control API.
//!
//! The node writes its control URL to `<home>/node.json` and a bearer token to
//! `<home>/control.token`; pass both to [`Client::new`]. Every method maps to one route of the
//! control API and returns its typed reply from [`agentmesh_api`]; a refusal is
//! [`ClientError::Api`] with the node's error code.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agentmesh_client::ClientError> {
//! let client = agentmesh_client::Client::new("http://127.0.0.1:40000", "token")?;
//! let status = client.status().await?;
//! println!("{} has {} trusted peers", status.agent_id, status.trusted_peers);
//! # Ok(()) }
//! ```

use std::time::Duration;

use agentmesh_api::control::{
    A2aClientArgs, A2aClientList, A2aClientReply, DelegateArgs, EscalateArgs, EscalationList, EscalationReply,
    EscalationsQuery, ResolveArgs, TaskList, TaskMessageArgs, TaskReply, TasksQuery, UpdateTaskArgs,
};
use agentmesh_api::control::{
    AgentList, AnswerArgs, CallArgs, CallList, CallReply, CallsQuery, CancelFileArgs, ClearedReply, ContactArgs,
    ContactReply, DiscoverQuery, DiscoveredArgs, DiscoveredReply, EndArgs, EventList, EventListQuery, FilesQuery,
    HealthReply, LineReply, MessageList, MessageReply, MessagesQuery, PeerList, PeerReply, PeersQuery, RejectArgs,
    RejectManyArgs, RejectedReply, RepinArgs, RequestList, RequestReply, RequestsQuery, RotateReply, SayArgs, SendArgs,
    SendFileArgs, SendReply, TransferList, TransferReply,
};
use agentmesh_api::{AgentCard, ErrorBody, ErrorCode, LoggedEvent, Status, StreamNotice, TaskDetail, Transcript};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Errors from the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node did not answer: not running, or crashed. `message` says what the connection did.
    #[error("the node's control API is unreachable: {message}")]
    Unreachable {
        /// Transport error text.
        message: String,
    },
    /// The node refused (`{"error":{"code","message"}}`).
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Machine code, e.g. `not_trusted` (text: a newer node may send codes this build does
        /// not know).
        code: String,
        /// Human explanation.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer from the node: {0}")]
    Decode(String),
}

impl ClientError {
    /// The machine code: the node's, or `node_unreachable` / `bad_response`.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Unreachable { .. } => ErrorCode::NodeUnreachable.as_str(),
            ClientError::Api { code, .. } => code,
            ClientError::Decode(_) => ErrorCode::BadResponse.as_str(),
        }
    }

    /// The code as an [`ErrorCode`], when this build knows it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.code().parse().ok()
    }
}

/// A control API client.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// A rustls configuration with the ring provider that trusts no certificate: the control API is
/// plain HTTP on loopback, but reqwest (built with rustls and no process-wide crypto provider)
/// needs one to build a client at all.
fn reqwest_tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// Percent-encodes a path segment: everything but ASCII letters, digits, `-` and `_` (so `.`
/// and `..` can never be normalized away, and `/`, `?`, `#`, `%` stay inside the segment).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

impl Client {
    /// A client for the control API at `base` (e.g. `http://127.0.0.1:40000`) with `token`.
    pub fn new(base: &str, token: &str) -> Result<Self, ClientError> {
        let tls = reqwest_tls_config().map_err(|e| ClientError::Unreachable { message: format!("TLS setup: {e}") })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| ClientError::Unreachable { message: e.to_string() })?;
        Ok(Client { http, base: base.trim_end_matches('/').to_owned(), token: token.to_owned() })
    }

    async fn request<Q: Serialize, B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: Option<&Q>,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(90));
        if let Some(q) = query {
            request = request.query(q);
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable { message: describe(&e) })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| ClientError::Unreachable { message: describe(&e) })?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api { status, code: body.error.code, message: body.error.message }),
            Err(_) => Err(ClientError::Decode(format!("status {status} without an error body"))),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request::<(), (), T>(reqwest::Method::GET, path, None, None).await
    }

    async fn get_query<Q: Serialize, T: DeserializeOwned>(&self, path: &str, query: &Q) -> Result<T, ClientError> {
        self.request::<Q, (), T>(reqwest::Method::GET, path, Some(query), None).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.request::<(), B, T>(reqwest::Method::POST, path, None, Some(body)).await
    }

    async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request::<(), (), T>(reqwest::Method::POST, path, None, None).await
    }

    /// `GET /control/status`: identity, addresses and counters.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.get("/control/status").await
    }

    /// `GET /control/card`: our signed agent card.
    pub async fn card(&self) -> Result<AgentCard, ClientError> {
        self.get("/control/card").await
    }

    /// `POST /control/contacts`: ask an agent (base URL or known peer) for contact; waits for the
    /// first delivery attempt (`args.wait_ms`).
    pub async fn request_contact(&self, args: &ContactArgs) -> Result<ContactReply, ClientError> {
        self.post("/control/contacts", args).await
    }

    /// `GET /control/requests`.
    pub async fn requests(&self, query: &RequestsQuery) -> Result<RequestList, ClientError> {
        self.get_query("/control/requests", query).await
    }

    /// `GET /control/requests/{id}`: one request with the text its peer wrote (events leave it
    /// out), and the peer. 404 `not_found` for an id we do not have.
    pub async fn request_detail(&self, request_id: &str) -> Result<RequestReply, ClientError> {
        self.get(&format!("/control/requests/{}", segment(request_id))).await
    }

    /// `POST /control/requests/{id}/approve`: both agents then trust each other.
    pub async fn approve(&self, request_id: &str) -> Result<RequestReply, ClientError> {
        self.post_empty(&format!("/control/requests/{}/approve", segment(request_id))).await
    }

    /// `POST /control/requests/{id}/reject`; the requester is told (with `reason`).
    pub async fn reject(&self, request_id: &str, reason: Option<&str>) -> Result<RequestReply, ClientError> {
        let args = RejectArgs { reason: reason.map(str::to_owned) };
        self.post(&format!("/control/requests/{}/reject", segment(request_id)), &args).await
    }

    /// `POST /control/requests/reject`: rejects the pending incoming requests that match `args`.
    pub async fn reject_many(&self, args: &RejectManyArgs) -> Result<RejectedReply, ClientError> {
        self.post("/control/requests/reject", args).await
    }

    /// `POST /control/requests/{id}/withdraw`: takes back one of our requests; the peer is told.
    pub async fn withdraw(&self, request_id: &str) -> Result<RequestReply, ClientError> {
        self.post_empty(&format!("/control/requests/{}/withdraw", segment(request_id))).await
    }

    /// `GET /control/peers` (removed ones too with `all`).
    pub async fn peers(&self, all: bool) -> Result<PeerList, ClientError> {
        self.get_query("/control/peers", &PeersQuery { all }).await
    }

    /// `GET /control/peers/{peer}`: one peer, by agent id, alias, name or unique prefix.
    pub async fn peer(&self, peer: &str) -> Result<PeerReply, ClientError> {
        self.get(&format!("/control/peers/{}", segment(peer))).await
    }

    /// `GET /control/peers/{peer}/health`: does it answer, with the pinned key?
    pub async fn health(&self, peer: &str) -> Result<HealthReply, ClientError> {
        self.get(&format!("/control/peers/{}/health", segment(peer))).await
    }

    /// `POST /control/peers/{peer}/block`.
    pub async fn block(&self, peer: &str) -> Result<PeerReply, ClientError> {
        self.post_empty(&format!("/control/peers/{}/block", segment(peer))).await
    }

    /// `POST /control/peers/{peer}/unblock`.
    pub async fn unblock(&self, peer: &str) -> Result<PeerReply, ClientError> {
        self.post_empty(&format!("/control/peers/{}/unblock", segment(peer))).await
    }

    /// `DELETE /control/peers/{peer}`.
    pub async fn remove(&self, peer: &str) -> Result<PeerReply, ClientError> {
        self.request::<(), (), PeerReply>(
            reqwest::Method::DELETE,
            &format!("/control/peers/{}", segment(peer)),
            None,
            None,
        )
        .await
    }

    /// `POST /control/peers/{peer}/repin`: pin the key with `fingerprint` that the peer presented
    /// in an open key mismatch.
    pub async fn repin(&self, peer: &str, fingerprint: &str) -> Result<PeerReply, ClientError> {
        let args = RepinArgs { fingerprint: fingerprint.to_owned() };
        self.post(&format!("/control/peers/{}/repin", segment(peer)), &args).await
    }

    /// `POST /control/rotate-key`: new keys, contacts told.
    pub async fn rotate_key(&self) -> Result<RotateReply, ClientError> {
        self.post_empty("/control/rotate-key").await
    }

    /// `GET /control/discover`: known agents from every source.
    pub async fn discover(&self, query: &DiscoverQuery) -> Result<AgentList, ClientError> {
        self.get_query("/control/discover", query).await
    }

    /// `POST /control/discovered`: record scan finds as discovered peers.
    pub async fn record_discovered(&self, args: &DiscoveredArgs) -> Result<DiscoveredReply, ClientError> {
        self.post("/control/discovered", args).await
    }

    /// `POST /control/messages`: queue a message.
    pub async fn send(&self, args: &SendArgs) -> Result<SendReply, ClientError> {
        self.post("/control/messages", args).await
    }

    /// [`send`](Self::send) with just a recipient and a text.
    pub async fn send_text(&self, to: &str, text: &str) -> Result<SendReply, ClientError> {
        self.send(&SendArgs { to: to.to_owned(), text: text.to_owned(), ..SendArgs::default() }).await
    }

    /// `GET /control/messages`.
    pub async fn messages(&self, query: &MessagesQuery) -> Result<MessageList, ClientError> {
        self.get_query("/control/messages", query).await
    }

    /// `POST /control/messages/{id}/read`: show, mark read, send a read receipt.
    pub async fn read(&self, message_id: &str) -> Result<MessageReply, ClientError> {
        self.post_empty(&format!("/control/messages/{}/read", segment(message_id))).await
    }

    /// `POST /control/messages/{id}/retry`: a failed message is due again.
    pub async fn retry(&self, message_id: &str) -> Result<MessageReply, ClientError> {
        self.post_empty(&format!("/control/messages/{}/retry", segment(message_id))).await
    }

    /// `POST /control/outbox/clear-failed`: deletes failed outbox entries.
    pub async fn clear_failed(&self) -> Result<ClearedReply, ClientError> {
        self.post_empty("/control/outbox/clear-failed").await
    }

    /// `POST /control/calls`: ring a contact.
    pub async fn call(&self, args: &CallArgs) -> Result<CallReply, ClientError> {
        self.post("/control/calls", args).await
    }

    /// `GET /control/calls`: calls, newest first.
    pub async fn calls(&self, query: &CallsQuery) -> Result<CallList, ClientError> {
        self.get_query("/control/calls", query).await
    }

    /// `GET /control/calls/{id}`: a call and its transcript.
    pub async fn transcript(&self, call_id: &str) -> Result<Transcript, ClientError> {
        self.get(&format!("/control/calls/{}", segment(call_id))).await
    }

    /// `POST /control/calls/{id}/answer`: take (`accept`) or decline a ringing call.
    pub async fn answer(&self, call_id: &str, args: &AnswerArgs) -> Result<CallReply, ClientError> {
        self.post(&format!("/control/calls/{}/answer", segment(call_id)), args).await
    }

    /// `POST /control/calls/{id}/say`: say something in an active call.
    pub async fn say(&self, call_id: &str, text: &str) -> Result<LineReply, ClientError> {
        let args = SayArgs { text: text.to_owned() };
        self.post(&format!("/control/calls/{}/say", segment(call_id)), &args).await
    }

    /// `POST /control/calls/{id}/end`: hang up (or withdraw our ringing call).
    pub async fn end_call(&self, call_id: &str, reason: Option<&str>) -> Result<CallReply, ClientError> {
        let args = EndArgs { reason: reason.map(str::to_owned) };
        self.post(&format!("/control/calls/{}/end", segment(call_id)), &args).await
    }

    /// `POST /control/tasks`: delegate a task to a contact.
    pub async fn delegate(&self, args: &DelegateArgs) -> Result<TaskReply, ClientError> {
        self.post("/control/tasks", args).await
    }

    /// `GET /control/tasks`: tasks, most recently changed first.
    pub async fn tasks(&self, query: &TasksQuery) -> Result<TaskList, ClientError> {
        self.get_query("/control/tasks", query).await
    }

    /// `GET /control/tasks/{id}`: a task and its history.
    pub async fn task(&self, task_id: &str) -> Result<TaskDetail, ClientError> {
        self.get(&format!("/control/tasks/{}", segment(task_id))).await
    }

    /// `POST /control/tasks/{id}/update`: report where a task delegated to us stands.
    pub async fn update_task(&self, task_id: &str, args: &UpdateTaskArgs) -> Result<TaskReply, ClientError> {
        self.post(&format!("/control/tasks/{}/update", segment(task_id)), args).await
    }

    /// `POST /control/tasks/{id}/message`: answer a task we delegated.
    pub async fn task_message(&self, task_id: &str, text: &str) -> Result<TaskReply, ClientError> {
        let args = TaskMessageArgs { text: text.to_owned() };
        self.post(&format!("/control/tasks/{}/message", segment(task_id)), &args).await
    }

    /// `POST /control/tasks/{id}/cancel`: ask the worker to stop a task we delegated.
    pub async fn cancel_task(&self, task_id: &str) -> Result<TaskReply, ClientError> {
        self.post_empty(&format!("/control/tasks/{}/cancel", segment(task_id))).await
    }

    /// `POST /control/escalations`: ask our owner about a call or task.
    pub async fn escalate(&self, args: &EscalateArgs) -> Result<EscalationReply, ClientError> {
        self.post("/control/escalations", args).await
    }

    /// `GET /control/escalations`.
    pub async fn escalations(&self, query: &EscalationsQuery) -> Result<EscalationList, ClientError> {
        self.get_query("/control/escalations", query).await
    }

    /// `POST /control/escalations/{id}/resolve`: the owner answers.
    pub async fn resolve_escalation(&self, escalation_id: &str, answer: &str) -> Result<EscalationReply, ClientError> {
        let args = ResolveArgs { answer: answer.to_owned() };
        self.post(&format!("/control/escalations/{}/resolve", segment(escalation_id)), &args).await
    }

    /// `POST /control/a2a/clients`: issue a bearer token for an A2A client (written to a 0600
    /// file by the node; the reply names the file, never the token).
    pub async fn add_a2a_client(&self, name: &str) -> Result<A2aClientReply, ClientError> {
        self.post("/control/a2a/clients", &A2aClientArgs { name: name.to_owned() }).await
    }

    /// `GET /control/a2a/clients`.
    pub async fn a2a_clients(&self) -> Result<A2aClientList, ClientError> {
        self.get("/control/a2a/clients").await
    }

    /// `DELETE /control/a2a/clients/{name}`: revoke an A2A client's token.
    pub async fn revoke_a2a_client(&self, name: &str) -> Result<A2aClientReply, ClientError> {
        self.request::<(), (), A2aClientReply>(
            reqwest::Method::DELETE,
            &format!("/control/a2a/clients/{}", segment(name)),
            None,
            None,
        )
        .await
    }

    /// `POST /control/files`: offer a file (an absolute path on the node's machine) to a contact;
    /// the node hashes it first, so this takes a while for a large file.
    pub async fn send_file(&self, args: &SendFileArgs) -> Result<TransferReply, ClientError> {
        self.post("/control/files", args).await
    }

    /// `GET /control/files`: transfers, newest first.
    pub async fn files(&self, query: &FilesQuery) -> Result<TransferList, ClientError> {
        self.get_query("/control/files", query).await
    }

    /// `GET /control/files/{id}`: one transfer.
    pub async fn file(&self, transfer_id: &str) -> Result<TransferReply, ClientError> {
        self.get(&format!("/control/files/{}", segment(transfer_id))).await
    }

    /// `POST /control/files/{id}/accept`: accept an offered file; the download starts.
    pub async fn accept_file(&self, transfer_id: &str) -> Result<TransferReply, ClientError> {
        self.post_empty(&format!("/control/files/{}/accept", segment(transfer_id))).await
    }

    /// `POST /control/files/{id}/cancel`: decline an offer, or stop a transfer either way.
    pub async fn cancel_file(&self, transfer_id: &str, reason: Option<&str>) -> Result<TransferReply, ClientError> {
        let args = CancelFileArgs { reason: reason.map(str::to_owned) };
        self.post(&format!("/control/files/{}/cancel", segment(transfer_id)), &args).await
    }

    /// `GET /control/events`: a page of the event log.
    pub async fn event_list(&self, q: &EventListQuery) -> Result<EventList, ClientError> {
        self.get_query("/control/events", q).await
    }

    /// `GET /v1/events`: the node's events after cursor `after` (0: the whole log kept), or
    /// new events only when `None`, then live ones as they happen.
    pub async fn events(&self, after: Option<i64>) -> Result<EventStream, ClientError> {
        let mut request = self.http.get(format!("{}/v1/events", self.base)).bearer_auth(&self.token);
        if let Some(after) = after {
            request = request.query(&[("after", after)]);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable { message: describe(&e) })?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            let (code, message) = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| (b.error.code, b.error.message))
                .unwrap_or_else(|_| ("bad_response".into(), format!("events refused with status {status}")));
            return Err(ClientError::Api { status, code, message });
        }
        Ok(EventStream { frames: Box::pin(sse_stream::SseStream::from_bytes_stream(response.bytes_stream())) })
    }
}

/// What an [`EventStream`] yields.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StreamItem {
    /// The next event; resume after its `seq`.
    Event(Box<LoggedEvent>),
    /// Something about the stream itself (events pruned, the log replaced).
    Notice(StreamNotice),
    /// An event this build cannot read (a newer node's kind): resume after `seq` all the same.
    Unknown {
        /// Its cursor.
        seq: i64,
        /// Its kind, as the frame named it.
        kind: String,
    },
}

impl StreamItem {
    /// The cursor to resume after, for events (known or not).
    pub fn seq(&self) -> Option<i64> {
        match self {
            StreamItem::Event(event) => Some(event.seq),
            StreamItem::Unknown { seq, .. } => Some(*seq),
            StreamItem::Notice(_) => None,
        }
    }
}

type Frames = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<sse_stream::Sse, sse_stream::Error>> + Send>>;

/// The node's events as Server-Sent Events (`GET /v1/events`).
pub struct EventStream {
    frames: Frames,
}

impl EventStream {
    /// The next event or notice; `None` when the node closed the stream, an error when the
    /// connection broke (the node stopped) or a frame did not parse.
    pub async fn next(&mut self) -> Option<Result<StreamItem, ClientError>> {
        use futures_util::StreamExt;
        loop {
            let frame = match self.frames.next().await? {
                Ok(frame) => frame,
                Err(e) => return Some(Err(ClientError::Unreachable { message: e.to_string() })),
            };
            // Keep-alive comments and empty frames carry no data.
            let Some(data) = frame.data else { continue };
            let item = match frame.id.as_deref().map(str::parse::<i64>) {
                Some(Ok(seq)) => Ok(serde_json::from_str(&data).map_or_else(
                    |_| StreamItem::Unknown { seq, kind: frame.event.unwrap_or_default() },
                    |e| StreamItem::Event(Box::new(e)),
                )),
                Some(Err(e)) => Err(ClientError::Decode(format!("an event id is not a cursor: {e}"))),
                None => {
                    serde_json::from_str(&data).map(StreamItem::Notice).map_err(|e| ClientError::Decode(e.to_string()))
                }
            };
            return Some(item);
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_path_segments_are_percent_encoded_whole() {
        for reserved in [".", "..", "/", "?", "#", "%", " ", "a/../b", "é", "[", "]", "@", ":", "+", "&", "=", ";"] {
            let encoded = segment(reserved);
            assert!(
                encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_%".contains(&b)),
                "{reserved:?} → {encoded}"
            );
            assert!(!encoded.contains('.') && !encoded.contains('/'), "{reserved:?} → {encoded}");
            // Decoding gives back exactly the input.
            let decoded: Vec<u8> = {
                let bytes = encoded.as_bytes();
                let mut out = Vec::new();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'%' {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                        out.push(u8::from_str_radix(hex, 16).expect("hex digit"));
                        i += 3;
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                out
            };
            assert_eq!(decoded, reserved.as_bytes());
        }
        assert_eq!(segment("req_0a-Z"), "req_0a-Z");
    }
}
