//! Typed client for an agentmesh node's control API.
//!
//! The node writes its control URL to `<home>/node.json` and a bearer token to
//! `<home>/control.token`; pass both to [`Client::new`]. Every method maps to one route of the
//! control API (documented in `agentmesh_node::control_api`) and returns its JSON document.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agentmesh_client::ClientError> {
//! let client = agentmesh_client::Client::new("http://127.0.0.1:40000", "token")?;
//! let status = client.status().await?;
//! println!("{}", status["agent_id"]);
//! # Ok(()) }
//! ```

pub mod local;

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

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
    /// The node answered with an error (`{"error":{"code","message"}}`).
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Machine code, e.g. `not_trusted`.
        code: String,
        /// Human explanation.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer from the node: {0}")]
    Decode(String),
}

impl ClientError {
    /// The machine code: the API's, or `node_unreachable` / `bad_response`.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Unreachable { .. } => "node_unreachable",
            ClientError::Api { code, .. } => code,
            ClientError::Decode(_) => "bad_response",
        }
    }
}

/// A control API client.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Which contact requests to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestDirection {
    /// Requests other agents sent us.
    Incoming,
    /// Requests we sent.
    Outgoing,
}

/// Filter for [`Client::messages`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct MessageQuery {
    /// `incoming` or `outgoing`; both when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<RequestDirection>,
    /// Only unread incoming messages.
    pub unread: bool,
    /// Only messages with this peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// At most this many per direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A rustls configuration (ring provider) with no trusted roots: enough to build a client that
/// only ever speaks plain HTTP.
fn reqwest_tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

impl Client {
    /// A client for the control API at `base` (e.g. `http://127.0.0.1:40000`) with `token`.
    pub fn new(base: &str, token: &str) -> Result<Self, ClientError> {
        // The control API is plain HTTP on loopback. reqwest is built with rustls and no crypto
        // provider, so a bare builder would panic: give it a TLS setup that trusts nothing.
        let tls = reqwest_tls_config().map_err(|e| ClientError::Unreachable { message: format!("TLS setup: {e}") })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| ClientError::Unreachable { message: e.to_string() })?;
        Ok(Client { http, base: base.trim_end_matches('/').to_owned(), token: token.to_owned() })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        query: Option<&[(String, String)]>,
    ) -> Result<Value, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60));
        if let Some(q) = query {
            request = request.query(q);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable { message: describe(&e) })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| ClientError::Unreachable { message: describe(&e) })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let error = &value["error"];
        Err(ClientError::Api {
            status,
            code: error["code"].as_str().unwrap_or("unknown").to_owned(),
            message: error["message"].as_str().unwrap_or("the node refused the request").to_owned(),
        })
    }

    async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body), None).await
    }

    /// `GET /control/status`: identity, addresses and counters.
    pub async fn status(&self) -> Result<Value, ClientError> {
        self.get("/control/status").await
    }

    /// `GET /control/card`: our signed agent card.
    pub async fn card(&self) -> Result<Value, ClientError> {
        self.get("/control/card").await
    }

    /// `POST /control/contacts`: fetch the agent at `url`, send it a contact request.
    /// Returns `{status, request_id, peer}`.
    pub async fn request_contact(&self, url: &str, purpose: &str) -> Result<Value, ClientError> {
        self.post("/control/contacts", json!({"url": url, "purpose": purpose})).await
    }

    /// `POST /control/contacts` with an expected agent id (TOFU `add-peer`): fetch the card at
    /// `url`, refuse it unless it is `agent_id`'s, pin its key, send a contact request.
    pub async fn add_peer(
        &self,
        agent_id: &str,
        url: &str,
        alias: Option<&str>,
        purpose: &str,
    ) -> Result<Value, ClientError> {
        self.post("/control/contacts", json!({"url": url, "agent_id": agent_id, "alias": alias, "purpose": purpose}))
            .await
    }

    /// `POST /control/peers/{id}/repin`: pin the key with `fingerprint` that the peer presented
    /// in an open key mismatch. `{peer}`.
    pub async fn repin(&self, agent_id: &str, fingerprint: &str) -> Result<Value, ClientError> {
        self.post(&format!("/control/peers/{}/repin", segment(agent_id)), json!({"fingerprint": fingerprint})).await
    }

    /// `POST /control/rotate-key`: new keys, contacts told.
    /// `{agent_id, old_fingerprint, fingerprint, key_rotations, previous_key_until, contacts_told}`.
    pub async fn rotate_key(&self) -> Result<Value, ClientError> {
        self.post("/control/rotate-key", json!({})).await
    }

    /// `GET /control/discover`: known agents from every source. `{agents: [...]}`.
    pub async fn discover(
        &self,
        query: Option<&str>,
        capabilities: &[String],
        limit: usize,
    ) -> Result<Value, ClientError> {
        let mut params: Vec<(String, String)> = vec![("limit".into(), limit.to_string())];
        if let Some(q) = query {
            params.push(("query".into(), q.to_owned()));
        }
        if !capabilities.is_empty() {
            params.push(("capability".into(), capabilities.join(",")));
        }
        self.call(reqwest::Method::GET, "/control/discover", None, Some(&params)).await
    }

    /// `POST /control/discovered`: record scan finds (`{protocol, endpoint, document}` each) as
    /// discovered peers. `{recorded: [{agent_id, outcome}]}`.
    pub async fn record_discovered(&self, found: Vec<Value>) -> Result<Value, ClientError> {
        self.post("/control/discovered", json!({ "found": found })).await
    }

    /// `GET /control/requests`: `{requests: [...]}`.
    pub async fn requests(&self, direction: Option<RequestDirection>) -> Result<Value, ClientError> {
        let query: Vec<(String, String)> = direction
            .map(|d| {
                vec![(
                    "direction".to_owned(),
                    serde_json::to_value(d).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                )]
            })
            .unwrap_or_default();
        self.call(reqwest::Method::GET, "/control/requests", None, Some(&query)).await
    }

    /// `POST /control/requests/{id}/approve`: `{request}`.
    pub async fn approve(&self, request_id: &str) -> Result<Value, ClientError> {
        self.post(&format!("/control/requests/{}/approve", segment(request_id)), json!({})).await
    }

    /// `POST /control/requests/{id}/reject`: `{request}`.
    pub async fn reject(&self, request_id: &str, reason: Option<&str>) -> Result<Value, ClientError> {
        self.post(&format!("/control/requests/{}/reject", segment(request_id)), json!({"reason": reason})).await
    }

    /// `GET /control/peers`: `{peers: [...]}`.
    pub async fn peers(&self) -> Result<Value, ClientError> {
        self.get("/control/peers").await
    }

    /// `POST /control/peers/{id}/block`: `{peer}`.
    pub async fn block(&self, agent_id: &str) -> Result<Value, ClientError> {
        self.post(&format!("/control/peers/{}/block", segment(agent_id)), json!({})).await
    }

    /// `POST /control/peers/{id}/unblock`: `{peer}`.
    pub async fn unblock(&self, agent_id: &str) -> Result<Value, ClientError> {
        self.post(&format!("/control/peers/{}/unblock", segment(agent_id)), json!({})).await
    }

    /// `DELETE /control/peers/{id}`: `{removed}`.
    pub async fn remove(&self, agent_id: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::DELETE, &format!("/control/peers/{}", segment(agent_id)), None, None).await
    }

    /// `POST /control/messages`: queue a message. Returns `{message_id, to, status, encrypted, protocol}`.
    pub async fn send(
        &self,
        to: &str,
        text: &str,
        reply_to: Option<&str>,
        thread: Option<&str>,
    ) -> Result<Value, ClientError> {
        self.post("/control/messages", json!({"to": to, "text": text, "reply_to": reply_to, "thread": thread})).await
    }

    /// `GET /control/messages`: `{messages: [...]}`.
    pub async fn messages(&self, q: &MessageQuery) -> Result<Value, ClientError> {
        let mut query = Vec::new();
        if let Some(d) = q.direction {
            query.push((
                "direction".to_owned(),
                if matches!(d, RequestDirection::Incoming) { "incoming" } else { "outgoing" }.to_owned(),
            ));
        }
        if q.unread {
            query.push(("unread".to_owned(), "true".to_owned()));
        }
        if let Some(p) = &q.peer {
            query.push(("peer".to_owned(), p.clone()));
        }
        if let Some(l) = q.limit {
            query.push(("limit".to_owned(), l.to_string()));
        }
        self.call(reqwest::Method::GET, "/control/messages", None, Some(&query)).await
    }

    /// `POST /control/messages/{id}/read`: `{message}`; sends a read receipt to the sender.
    pub async fn read(&self, message_id: &str) -> Result<Value, ClientError> {
        self.post(&format!("/control/messages/{}/read", segment(message_id)), json!({})).await
    }

    /// `GET /control/events`: a live stream of events, one JSON object each.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let response = self
            .http
            .get(format!("{}/control/events", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { message: describe(&e) })?;
        if !response.status().is_success() {
            return Err(ClientError::Api {
                status: response.status().as_u16(),
                code: "unauthorized".into(),
                message: "events refused".into(),
            });
        }
        Ok(EventStream { response, buffer: Vec::new() })
    }
}

/// A live stream of node events (JSON lines).
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the node closed the stream.
    pub async fn next(&mut self) -> Option<Result<Value, ClientError>> {
        loop {
            if let Some(pos) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=pos).collect();
                if line.len() <= 1 {
                    continue;
                }
                return Some(serde_json::from_slice(&line).map_err(|e| ClientError::Decode(e.to_string())));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return None,
                Err(e) => return Some(Err(ClientError::Unreachable { message: describe(&e) })),
            }
        }
    }
}

/// Percent-encodes a path segment (ids are plain ASCII, but never trust input).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
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
