//! OpenClaw Agent Mesh V1 (`openclaw-agent-mesh/v1`), as documented in `../shared/PROTOCOLS.md` §1:
//! an adapter both ways. Inbound, its routes parse V1 bodies into [`Inbound`] values for the one
//! [pipeline](crate::pipeline) (same freshness, replay, trust, pinning, budgets and storage as
//! native envelopes); outbound, [`V1Adapter`] signs and posts what the outbox holds.
//!
//! * Identity: `{agent_id, display_name, endpoint, public_key, fingerprint}` where `public_key` is
//!   the Ed25519 key as SPKI PEM text and `fingerprint` is `sha256:` + hex SHA-256 of that exact
//!   text. We present our native agent id as the V1 `agent_id`. V1 ids must be valid
//!   [`PeerId`]s (no `.`, `..`, path characters, or upper-case copies of native ids).
//! * Signatures: Ed25519 over the [canonical JSON](agentmesh_core::canonical) of the object
//!   without its `signature` member, standard base64. Timestamps: `YYYY-MM-DDTHH:MM:SSZ`.
//! * Routes served: `GET /agent-mesh/discovery`, `POST /agent-mesh/contact-request`,
//!   `POST /agent-mesh/message`; errors as `{"ok":false,"error":"<code>","message":"…"}`.
//!
//! V1 bodies are signed but not encrypted; listings mark such messages `encrypted: false`. V1
//! trust is one-sided and V1 has no answers: approving a V1 request makes us trust the requester;
//! for it to accept our messages we ask it and its owner approves, which we learn only when our
//! messages go through (they are retried until then). V1 contact requests name no recipient, so a
//! request sent to one agent could be replayed to another within the freshness window; list them
//! with that in mind.

use std::sync::Arc;

use agentmesh_api::ErrorCode;
use agentmesh_core::endpoint::Endpoint;
use agentmesh_core::envelope::TEXT_PLAIN;
use agentmesh_core::time::{iso_seconds, now_ms, parse_iso};
use agentmesh_core::{
    AgentId, EnvelopeKind, Fingerprint, PROTOCOL_AGENT_MESH_V1, PeerId, Protocol, b64, canonical, keys,
};
use agentmesh_store::{NewOutbound, OutboxItem, Peer};
use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ed25519_dalek::VerifyingKey;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Node;
use crate::adapter::{Adapter, Outcome, Outgoing};
use crate::api_error::{ApiError, read_json_body};
use crate::carrier::{Carriers, ProbeError, Request};
use crate::error::Error;
use crate::pipeline::{self, AnswerContext, Body, Inbound, Payload, Presented};
use agentmesh_core::envelope::is_request_id;

/// A V1 identity card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct V1Agent {
    /// Agent id: `agent-` + 12 hex, or any id the agent chose (a valid [`PeerId`]).
    pub agent_id: String,
    /// Display name.
    pub display_name: String,
    /// Base URL.
    pub endpoint: String,
    /// Ed25519 public key, SPKI PEM text with trailing newline.
    pub public_key: String,
    /// `sha256:` + hex SHA-256 of `public_key`'s exact text.
    pub fingerprint: String,
}

impl V1Agent {
    /// Validates the card's fields and returns its id and key.
    ///
    /// Errors: `invalid_agent` (an id that is not a valid [`PeerId`], a field too long),
    /// `invalid_public_key`, `fingerprint_mismatch`, `key_mismatch` (a 16-hex id that is not
    /// derived from the key, i.e. an attempt to impersonate a native agent id).
    pub fn validate(&self) -> Result<(PeerId, VerifyingKey), Error> {
        let id = PeerId::parse(&self.agent_id)
            .map_err(|e| Error::invalid(ErrorCode::InvalidAgent, format!("agent_id: {e}")))?;
        if self.display_name.chars().count() > 64 || self.endpoint.len() > 512 || self.public_key.len() > 1024 {
            return Err(Error::invalid(ErrorCode::InvalidAgent, "display_name, endpoint or public_key too long"));
        }
        let key = keys::ed25519_from_pem(&self.public_key)
            .filter(|k| !k.is_weak())
            .ok_or_else(|| Error::invalid(ErrorCode::InvalidPublicKey, "public_key is not an Ed25519 SPKI PEM key"))?;
        if Fingerprint::of(self.public_key.as_bytes()).as_str() != self.fingerprint {
            return Err(Error::invalid(ErrorCode::FingerprintMismatch, "fingerprint is not SHA-256 of public_key"));
        }
        if let Some(native) = id.agent_id()
            && native != AgentId::from_key(&key)
        {
            return Err(Error::refused(ErrorCode::KeyMismatch, "a 16-hex agent_id must be derived from the key"));
        }
        Ok((id, key))
    }
}

/// Our identity as a V1 card.
pub fn our_agent(node_id: AgentId, name: &str, endpoint: &str, pem: String) -> V1Agent {
    V1Agent {
        agent_id: node_id.to_string(),
        display_name: name.to_owned(),
        endpoint: endpoint.to_owned(),
        fingerprint: Fingerprint::of(pem.as_bytes()).to_string(),
        public_key: pem,
    }
}

fn our(node: &Node) -> V1Agent {
    let keys = node.keys();
    our_agent(node.id(), &keys.card.name, node.endpoint(), keys.identity.ed25519_pem())
}

/// A V1-shaped error response (`{"ok":false,"error":code,"message":…}`).
struct V1Error(ApiError);

impl From<Error> for V1Error {
    fn from(e: Error) -> Self {
        V1Error(ApiError::from(e))
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let mut body = json!({"ok": false, "error": self.0.code.as_str(), "message": self.0.message});
        if let Some(now) = self.0.now {
            body["now"] = json!(now);
        }
        match self.0.retry_after {
            Some(secs) => {
                body["retry_after"] = json!(secs);
                (self.0.status, [(header::RETRY_AFTER, secs.to_string())], Json(body)).into_response()
            }
            None => (self.0.status, Json(body)).into_response(),
        }
    }
}

/// The V1 routes, merged into the peer API.
pub(crate) fn router() -> Router<Arc<Node>> {
    Router::new()
        .route("/agent-mesh/discovery", get(discovery))
        .route("/agent-mesh/contact-request", post(contact_request))
        .route("/agent-mesh/message", post(message))
}

async fn discovery(
    State(node): State<Arc<Node>>,
    crate::extract::PeerRemote(remote): crate::extract::PeerRemote,
) -> Result<Json<Value>, V1Error> {
    node.limits().other_from(remote)?;
    Ok(Json(json!({"ok": true, "protocol": PROTOCOL_AGENT_MESH_V1, "agent": our(&node)})))
}

async fn parse_object(
    node: &Node,
    headers: &HeaderMap,
    body: HttpBody,
    limit: usize,
    kind: &str,
) -> Result<Map<String, Value>, Error> {
    let bytes = read_json_body(headers, body, limit, "request body", node.body_timeout()).await?;
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(Error::invalid(ErrorCode::InvalidJson, "body is not a JSON object"));
    };
    if object.get("type").and_then(Value::as_str) != Some(kind) {
        return Err(Error::invalid(ErrorCode::InvalidType, format!("type must be {kind:?}")));
    }
    Ok(object)
}

fn timestamp(object: &Map<String, Value>) -> Result<u64, Error> {
    object
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(parse_iso)
        .ok_or_else(|| Error::invalid(ErrorCode::InvalidTimestamp, "timestamp must be ISO-8601 UTC"))
}

/// The signed bytes and signature of a V1 object.
fn signed(object: &Map<String, Value>) -> (Vec<u8>, Option<[u8; 64]>) {
    let signature = object.get("signature").and_then(Value::as_str).and_then(b64::decode_array::<64>);
    (canonical::to_string_without(object, "signature").into_bytes(), signature)
}

fn ok_reply(result: Value) -> String {
    json!({"ok": true, "result": result}).to_string()
}

fn reply(text: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn run(node: &Arc<Node>, inbound: Inbound) -> Result<Response, V1Error> {
    match pipeline::process(node, vec![inbound]).await.pop() {
        Some(Ok(answer)) => Ok(reply(answer)),
        Some(Err(e)) => Err(e.into()),
        None => Err(Error::internal("empty result").into()),
    }
}

async fn contact_request(
    State(node): State<Arc<Node>>,
    crate::extract::PeerRemote(remote): crate::extract::PeerRemote,
    headers: HeaderMap,
    body: HttpBody,
) -> Result<Response, V1Error> {
    node.limits().contact_from(remote)?;
    let limit = node.config().max_contact_request_bytes;
    let object = parse_object(&node, &headers, body, limit, "contact_request").await?;
    let request_id = object.get("request_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    if !is_request_id(&request_id) {
        return Err(Error::invalid(ErrorCode::InvalidRequestId, "request_id must be req_ followed by 32 hex").into());
    }
    let from: V1Agent = object
        .get("from")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| Error::invalid(ErrorCode::InvalidAgent, "from must be a V1 identity card"))?;
    let (id, key) = from.validate()?;
    if id == node.peer_id() {
        return Err(Error::invalid(ErrorCode::InvalidAgent, "that is this agent's own id").into());
    }
    let purpose = match object.get("purpose") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(p)) if p.chars().count() <= 1000 => p.clone(),
        Some(_) => {
            return Err(Error::invalid(
                ErrorCode::InvalidPurpose,
                "purpose must be a string of at most 1000 characters",
            )
            .into());
        }
    };
    let sent_at = timestamp(&object)?;
    let (signed, signature) = signed(&object);
    let now = now_ms() as i64;
    let inbound = Inbound {
        protocol: Protocol::AgentMeshV1,
        from: id.clone(),
        to: None,
        id: request_id.clone(),
        kind: EnvelopeKind::ContactRequest,
        sent_at,
        expires_at: None,
        presented: Some(Presented {
            peer: v1_peer(&from, id, &key, &from.endpoint, now),
            history: vec![key.to_bytes()],
        }),
        signed,
        signature,
        body: Body::Open(Payload::ContactRequest { request_id, purpose }),
        answer: request_answer,
        remote: Some(remote),
    };
    run(&node, inbound).await
}

fn request_answer(context: &AnswerContext<'_>) -> Result<String, Error> {
    Ok(ok_reply(json!({"verified": true, "request_id": context.id})))
}

fn message_answer(context: &AnswerContext<'_>) -> Result<String, Error> {
    let ack =
        json!({"type": "ack", "message_id": context.id, "status": "received", "timestamp": iso_seconds(context.now)});
    Ok(ok_reply(json!({"verified": true, "message_id": context.id, "ack": ack})))
}

async fn message(
    State(node): State<Arc<Node>>,
    crate::extract::PeerRemote(remote): crate::extract::PeerRemote,
    headers: HeaderMap,
    body: HttpBody,
) -> Result<Response, V1Error> {
    let limit = node.config().max_message_bytes;
    let object = parse_object(&node, &headers, body, limit, "direct_message").await?;
    let field = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (message_id, from, to) = (field("message_id"), field("from"), field("to"));
    let id_ok = !message_id.is_empty()
        && message_id.len() <= 128
        && message_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !id_ok {
        return Err(Error::invalid(ErrorCode::InvalidMessageId, "message_id must be msg_ followed by hex").into());
    }
    let from = PeerId::parse(&from).map_err(|e| Error::invalid(ErrorCode::InvalidAgent, format!("from: {e}")))?;
    let text = object
        .get("body")
        .and_then(|b| b.get("text"))
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid(ErrorCode::InvalidBody, "body must be {\"text\": \"…\"}"))?
        .to_owned();
    let to: AgentId = to.parse().map_err(|_| Error::WrongRecipient { me: node.id().to_string(), to: to.clone() })?;
    let sent_at = timestamp(&object)?;
    let (signed, signature) = signed(&object);
    let inbound = Inbound {
        protocol: Protocol::AgentMeshV1,
        from,
        to: Some(to),
        id: message_id,
        kind: EnvelopeKind::Message,
        sent_at,
        expires_at: None,
        presented: None,
        signed,
        signature,
        body: Body::Open(Payload::Message {
            text,
            content_type: TEXT_PLAIN.into(),
            reply_to: None,
            thread: None,
            created_at: sent_at,
        }),
        answer: message_answer,
        remote: Some(remote),
    };
    run(&node, inbound).await
}

/// A `discovered` peer row for an Agent Mesh V1 agent whose document validated to `id` and
/// `key`.
pub(crate) fn v1_peer(agent: &V1Agent, id: PeerId, key: &VerifyingKey, endpoint: &str, now: i64) -> Peer {
    Peer {
        ed25519: key.to_bytes(),
        fingerprint: agent.fingerprint.clone(),
        card: serde_json::to_string(agent).ok(),
        ..Peer::discovered(id, &agent.display_name, Protocol::AgentMeshV1, endpoint, now)
    }
}

/// The V1 agent of the discovery document at `endpoint` (`GET /agent-mesh/discovery`), parsed
/// but not validated yet.
pub(crate) async fn fetch_agent(
    carriers: &Carriers,
    endpoint: &Endpoint,
    timeout: Option<std::time::Duration>,
) -> Result<V1Agent, ProbeError> {
    let body = carriers.get_document(endpoint, "/agent-mesh/discovery", timeout).await?;
    let not = |why: String| ProbeError::NotADocument(why);
    let doc: Value = serde_json::from_slice(&body).map_err(|_| not(format!("{endpoint} did not return JSON")))?;
    if doc.get("protocol").and_then(Value::as_str) != Some(PROTOCOL_AGENT_MESH_V1) {
        return Err(not(format!("{endpoint} does not speak {PROTOCOL_AGENT_MESH_V1}")));
    }
    doc.get("agent")
        .cloned()
        .and_then(|a| serde_json::from_value(a).ok())
        .ok_or_else(|| not(format!("{endpoint} returned no valid agent")))
}

/// Fetches and validates the discovery document of V1 peer `peer`.
async fn fetch_discovery(node: &Node, peer: &Peer) -> Result<(V1Agent, PeerId, VerifyingKey), String> {
    let endpoint = node.carriers().route(peer).ok_or("no carrier of this node reaches its endpoint")?;
    let agent = fetch_agent(node.carriers(), &endpoint, None).await.map_err(|e| e.to_string())?;
    let (id, key) = agent.validate().map_err(|e| e.to_string())?;
    Ok((agent, id, key))
}

/// A fresh V1 message id, `msg_` + 32 hex (the UUIDv7 without dashes).
fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

/// Sends V1 bodies: each attempt stamps a fresh `timestamp`, signs, and posts one entry. V1
/// carries contact requests and messages only.
pub(crate) struct V1Adapter;

impl Adapter for V1Adapter {
    fn protocol(&self) -> Protocol {
        Protocol::AgentMeshV1
    }

    fn peer_from_document(&self, endpoint: &str, document: &serde_json::Value, now: i64) -> Option<Peer> {
        let agent = serde_json::from_value::<V1Agent>(document.clone()).ok()?;
        let (id, key) = agent.validate().ok()?;
        Some(v1_peer(&agent, id, &key, endpoint, now))
    }

    /// V1 signs but does not encrypt, trusts one way, lets an agent choose its id, and has no
    /// calls, tasks, files or rotations.
    fn can(&self, _what: crate::adapter::Capability) -> bool {
        false
    }

    fn carries(&self, kind: EnvelopeKind) -> bool {
        matches!(kind, EnvelopeKind::ContactRequest | EnvelopeKind::Message)
    }

    fn fetch_peer<'a>(
        &'a self,
        node: &'a Node,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<'a, Result<crate::adapter::Fetched, crate::adapter::FetchError>> {
        use crate::adapter::FetchError;
        Box::pin(async move {
            let agent = fetch_agent(node.carriers(), endpoint, None).await.map_err(FetchError::Probe)?;
            let (id, key) = agent
                .validate()
                .map_err(|e| FetchError::Probe(ProbeError::NotADocument(format!("{endpoint}: {e}"))))?;
            Ok((v1_peer(&agent, id, &key, &endpoint.to_string(), now_ms() as i64), vec![key.to_bytes()]))
        })
    }

    fn prepare(&self, node: &Node, peer: &Peer, what: Outgoing) -> Result<NewOutbound, Error> {
        let kind = what.kind();
        let (id, payload, text) = match what {
            Outgoing::ContactRequest { request_id, purpose } => {
                let payload =
                    json!({"type": "contact_request", "request_id": request_id, "from": our(node), "purpose": purpose});
                (request_id, payload, None)
            }
            Outgoing::Message { text, .. } => {
                let id = new_message_id();
                let payload = json!({"type": "direct_message", "message_id": id, "from": node.id().to_string(),
                    "to": peer.agent_id.as_str(), "body": {"text": text}});
                (id, payload, Some(text))
            }
            other => return Err(Error::internal(format!("{} cannot be sent to an Agent Mesh V1 peer", other.kind()))),
        };
        let now = now_ms();
        Ok(NewOutbound {
            id,
            kind,
            peer_id: peer.agent_id.clone(),
            protocol: Protocol::AgentMeshV1,
            payload: payload.to_string(),
            text,
            content_type: TEXT_PLAIN.into(),
            reply_to: None,
            thread: None,
            encrypted: false,
            created_at: now as i64,
            expires_at: now.saturating_add(node.config().message_ttl_secs.saturating_mul(1000)) as i64,
        })
    }

    fn deliver<'a>(
        &'a self,
        node: &'a Arc<Node>,
        peer: &'a Peer,
        items: Vec<OutboxItem>,
    ) -> BoxFuture<'a, Vec<(OutboxItem, Outcome)>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let outcome = deliver_one(node, peer, &item).await;
                out.push((item, outcome));
            }
            out
        })
    }

    fn health<'a>(&'a self, node: &'a Node, peer: &'a Peer) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let (_, _, key) = fetch_discovery(node, peer).await?;
            if key.to_bytes() != peer.ed25519 {
                return Err("it presents another key than the one pinned".into());
            }
            Ok(started.elapsed().as_millis() as u64)
        })
    }
}

/// Stamps, signs and posts one entry.
async fn deliver_one(node: &Node, peer: &Peer, item: &OutboxItem) -> Outcome {
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&item.payload) else {
        return Outcome::failed("corrupt outbox payload");
    };
    let route = match item.kind {
        EnvelopeKind::ContactRequest => "contact-request",
        EnvelopeKind::Message => "message",
        other => return Outcome::failed(format!("{other} cannot be sent to an Agent Mesh V1 peer")),
    };
    object.insert("timestamp".into(), Value::String(iso_seconds(now_ms())));
    object.remove("signature");
    let signature =
        b64::encode(node.keys().identity.sign(canonical::to_string_without(&object, "signature").as_bytes()));
    object.insert("signature".into(), Value::String(signature));
    let request = Request::post_json(format!("/agent-mesh/{route}"), Value::Object(object).to_string());
    match node.carriers().exchange(peer, request, node.config().max_response_bytes).await {
        Err(e) => Outcome::retry(!e.before_send, e.message),
        Ok((status, body)) => {
            let parsed: Option<Value> = serde_json::from_slice(&body).ok();
            let ok = parsed.as_ref().and_then(|v| v.get("ok")).and_then(Value::as_bool) == Some(true);
            if status.is_success() && ok {
                let result = parsed.and_then(|v| v.get("result").cloned()).unwrap_or(Value::Null);
                return Outcome::Delivered(
                    json!({"protocol": PROTOCOL_AGENT_MESH_V1, "signed": false, "result": result}).to_string(),
                );
            }
            // V1 nodes answer a short phrase ("untrusted sender"): kept as our code when it is one
            // ("untrusted_sender"), never as the peer's free text (see `native::refusal`).
            let code = parsed
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .map(|e| e.trim().to_ascii_lowercase().replace([' ', '-'], "_"))
                .filter(|c| ErrorCode::is_known(c));
            let error = format!("peer answered {}: {}", status.as_u16(), code.as_deref().unwrap_or("no error given"));
            let after_secs = parsed.as_ref().and_then(|v| v.get("retry_after")).and_then(Value::as_u64).unwrap_or(0);
            let stale = code.as_deref() == Some(ErrorCode::StaleTimestamp.as_str());
            // Our own V1 answers carry the receiver's clock on a stale timestamp.
            let peer_now = parsed.as_ref().and_then(|v| v.get("now")).and_then(Value::as_u64).filter(|_| stale);
            let retry = Outcome::Retry {
                sent: true,
                error: error.clone(),
                after_secs: after_secs.min(86_400),
                code: code.clone(),
                peer_now,
            };
            match (item.kind, status.as_u16()) {
                // A V1 peer refuses our messages until its owner approves our contact request,
                // which may come later: keep retrying within the attempt and TTL bounds. A clock
                // it finds off is retried with a fresh timestamp, like overload.
                (EnvelopeKind::Message, _) | (_, 408 | 425 | 429 | 500..=599) => retry,
                _ if stale => retry,
                _ => Outcome::Failed { error, code },
            }
        }
    }
}
