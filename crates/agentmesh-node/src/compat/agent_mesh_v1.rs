//! OpenClaw Agent Mesh V1 (`openclaw-agent-mesh/v1`), as documented in `../shared/PROTOCOLS.md` §1.
//!
//! * Identity: `{agent_id, display_name, endpoint, public_key, fingerprint}` where `public_key` is
//!   the Ed25519 key as SPKI PEM text and `fingerprint` is `sha256:` + hex SHA-256 of that exact
//!   text. We present our native agent id as the V1 `agent_id`.
//! * Signatures: Ed25519 over the [canonical JSON](agentmesh_core::canonical) of the object
//!   without its `signature` member, standard base64. Timestamps: `YYYY-MM-DDTHH:MM:SSZ`.
//! * Routes served: `GET /agent-mesh/discovery`, `POST /agent-mesh/contact-request`,
//!   `POST /agent-mesh/message`; errors as `{"ok":false,"error":"<code>","message":"…"}`.
//!
//! V1 bodies are signed but not encrypted; listings mark such messages `encrypted: false`.
//! V1 trust is one-sided: approving a V1 request makes us trust the requester (their messages are
//! accepted); for them to accept ours, we must ask them for contact and their owner approve.
//! We are stricter than the reference implementation: a bad signature is 401, an untrusted sender
//! 403, a stale timestamp (outside the freshness window) 400, and replays get the original reply.

use std::net::SocketAddr;
use std::sync::Arc;

use agentmesh_core::time::{iso_seconds, now_ms, parse_iso};
use agentmesh_core::{AgentId, Fingerprint, PROTOCOL_AGENT_MESH_V1, b64, canonical, keys};
use agentmesh_store::{ContactRequest, Direction, IncomingMessage, OutboxItem, Peer, RequestStatus, Trust};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, read_json_body};
use crate::outbox::Outcome;
use crate::peer_api::is_request_id;
use crate::{Event, Node, net};

/// A V1 identity card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct V1Agent {
    /// Agent id: `agent-` + 12 hex, or any id the agent chose.
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
    /// Validates the card's fields and returns its key.
    ///
    /// Errors: `invalid_agent` (a field out of shape), `invalid_public_key`,
    /// `fingerprint_mismatch`, `key_mismatch` (a 16-hex id that is not derived from the key, i.e.
    /// an attempt to impersonate a native agent id).
    pub fn validate(&self) -> Result<VerifyingKey, ApiError> {
        let id_ok = !self.agent_id.is_empty()
            && self.agent_id.len() <= 128
            && self.agent_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !id_ok {
            return Err(ApiError::bad_request(
                "invalid_agent",
                "agent_id must be 1 to 128 characters of [A-Za-z0-9._-]",
            ));
        }
        if self.display_name.chars().count() > 64 || self.endpoint.len() > 512 || self.public_key.len() > 1024 {
            return Err(ApiError::bad_request("invalid_agent", "display_name, endpoint or public_key too long"));
        }
        let key = keys::ed25519_from_pem(&self.public_key)
            .filter(|k| !k.is_weak())
            .ok_or_else(|| ApiError::bad_request("invalid_public_key", "public_key is not an Ed25519 SPKI PEM key"))?;
        if Fingerprint::of(self.public_key.as_bytes()).as_str() != self.fingerprint {
            return Err(ApiError::bad_request("fingerprint_mismatch", "fingerprint is not SHA-256 of public_key"));
        }
        if let Ok(native) = self.agent_id.parse::<AgentId>()
            && native != AgentId::from_key(&key)
        {
            return Err(ApiError::forbidden("key_mismatch", "a 16-hex agent_id must be derived from the key"));
        }
        Ok(key)
    }
}

/// Our identity as a V1 card.
pub fn our_agent(node: &Node) -> V1Agent {
    let pem = node.keys().identity.ed25519_pem();
    V1Agent {
        agent_id: node.agent_id(),
        display_name: node.keys().card.name.clone(),
        endpoint: node.endpoint.clone(),
        fingerprint: Fingerprint::of(pem.as_bytes()).to_string(),
        public_key: pem,
    }
}

fn signature_of(node: &Node, object: &Map<String, Value>) -> String {
    b64::encode(node.keys().identity.sign(canonical::to_string_without(object, "signature").as_bytes()))
}

fn verify(object: &Map<String, Value>, key: &VerifyingKey) -> Result<(), ApiError> {
    let sig = object
        .get("signature")
        .and_then(Value::as_str)
        .and_then(b64::decode_array::<64>)
        .ok_or_else(|| ApiError::bad_signature("signature must be base64 of 64 bytes"))?;
    key.verify_strict(canonical::to_string_without(object, "signature").as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| ApiError::bad_signature("signature does not verify"))
}

/// A V1-shaped error response (`{"ok":false,"error":code,"message":…}`).
struct V1Error(ApiError);

impl From<ApiError> for V1Error {
    fn from(e: ApiError) -> Self {
        V1Error(e)
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let mut body = json!({"ok": false, "error": self.0.code, "message": self.0.message});
        let mut response = (self.0.status, Json(&body)).into_response();
        if let Some(secs) = self.0.retry_after {
            body["retry_after"] = json!(secs);
            response =
                (self.0.status, [(axum::http::header::RETRY_AFTER, secs.to_string())], Json(body)).into_response();
        }
        response
    }
}

/// The V1 routes, merged into the peer API.
pub fn router() -> Router<Arc<Node>> {
    Router::new()
        .route("/agent-mesh/discovery", get(discovery))
        .route("/agent-mesh/contact-request", post(contact_request))
        .route("/agent-mesh/message", post(message))
}

async fn discovery(
    State(node): State<Arc<Node>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
) -> Result<Json<Value>, V1Error> {
    node.limits.other_from_ip(remote.ip())?;
    Ok(Json(json!({"ok": true, "protocol": PROTOCOL_AGENT_MESH_V1, "agent": our_agent(&node)})))
}

async fn parse_object(
    node: &Node,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    kind: &str,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = read_json_body(headers, body, limit, node.body_timeout()).await?;
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(ApiError::bad_request("invalid_json", "body is not a JSON object"));
    };
    if object.get("type").and_then(Value::as_str) != Some(kind) {
        return Err(ApiError::bad_request("invalid_type", format!("type must be {kind:?}")));
    }
    Ok(object)
}

/// Until when (ms) a V1 id accepted at `now` must be remembered: its timestamp was within the
/// freshness window of `now`, so after two windows a replay is refused as stale anyway.
fn replay_horizon(node: &Node, now: i64) -> i64 {
    now.saturating_add(node.config.freshness_window_secs.saturating_mul(2000) as i64)
}

fn fresh_timestamp(node: &Node, object: &Map<String, Value>) -> Result<u64, ApiError> {
    let ts = object
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(parse_iso)
        .ok_or_else(|| ApiError::bad_request("invalid_timestamp", "timestamp must be ISO-8601 UTC"))?;
    let window = node.config.freshness_window_secs * 1000;
    if ts.abs_diff(now_ms()) > window {
        return Err(ApiError::bad_request(
            "stale_timestamp",
            format!("timestamp is outside the ±{} s window", window / 1000),
        ));
    }
    Ok(ts)
}

fn ok_reply(result: Value) -> String {
    json!({"ok": true, "result": result}).to_string()
}

fn reply(text: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn contact_request(
    State(node): State<Arc<Node>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    node.limits.contact_from_ip(remote.ip())?;
    let object = parse_object(&node, &headers, body, node.config.max_contact_request_bytes, "contact_request").await?;
    let request_id = object.get("request_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    if !is_request_id(&request_id) {
        return Err(ApiError::bad_request("invalid_request_id", "request_id must be req_ followed by 32 hex").into());
    }
    let from: V1Agent = object
        .get("from")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| ApiError::bad_request("invalid_agent", "from must be a V1 identity card"))?;
    let key = from.validate()?;
    if from.agent_id == node.agent_id() {
        return Err(ApiError::bad_request("invalid_agent", "that is this agent's own id").into());
    }
    let purpose = match object.get("purpose") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(p)) if p.chars().count() <= 1000 => p.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_purpose",
                "purpose must be a string of at most 1000 characters",
            )
            .into());
        }
    };
    let agent_id = from.agent_id.clone();
    let (known, replay) = {
        let (id, rid) = (agent_id.clone(), request_id.clone());
        node.db(move |s| Ok((s.peer(&id)?, s.accepted_receipt(&id, &rid)?))).await?
    };
    if let Some(p) = &known {
        if p.trust == Trust::Blocked {
            return Err(ApiError::forbidden("blocked_sender", format!("{agent_id} is blocked")).into());
        }
        if p.ed25519 != key.to_bytes() {
            // Refused either way; recorded only when the request proves it holds the presented key.
            if verify(&object, &key).is_ok() {
                node.record_key_mismatch(agentmesh_store::KeyMismatch {
                    peer_id: agent_id.clone(),
                    pinned_fingerprint: p.fingerprint.clone(),
                    presented_fingerprint: from.fingerprint.clone(),
                    presented_ed25519: key.to_bytes(),
                    presented_x25519: None,
                    presented_card: serde_json::to_string(&from).ok(),
                    direction: "inbound".into(),
                    count: 1,
                    first_at: now_ms() as i64,
                    last_at: now_ms() as i64,
                    resolved_at: None,
                })
                .await;
            }
            return Err(ApiError::forbidden(
                "key_mismatch",
                format!("{agent_id} presented a key other than the one pinned; the owner must run `agentmesh repin`"),
            )
            .into());
        }
    }
    fresh_timestamp(&node, &object)?;
    if let Some(stored) = replay {
        return Ok(reply(stored));
    }
    verify(&object, &key)?;
    // Charged once the signature proves the sender: forgeries cannot drain its budget.
    node.limits.contact_from_agent(&from.agent_id)?;

    let now = now_ms() as i64;
    let peer = Peer {
        agent_id: agent_id.clone(),
        name: from.display_name.clone(),
        protocol: PROTOCOL_AGENT_MESH_V1.into(),
        endpoint: from.endpoint.clone(),
        ed25519: key.to_bytes(),
        x25519: None,
        fingerprint: from.fingerprint.clone(),
        card: serde_json::to_string(&from).ok(),
        trust: known.as_ref().map(|p| p.trust).unwrap_or(Trust::Pending),
        first_seen: now,
        last_seen: now,
        alias: None,
        prev_ed25519: None,
        prev_until: None,
    };
    let request = ContactRequest {
        request_id: request_id.clone(),
        direction: Direction::Incoming,
        peer_id: agent_id.clone(),
        peer_name: Some(from.display_name.clone()),
        fingerprint: Some(from.fingerprint.clone()),
        purpose,
        status: RequestStatus::Pending,
        reason: None,
        protocol: PROTOCOL_AGENT_MESH_V1.into(),
        created_at: now,
        decided_at: None,
    };
    let answer = ok_reply(json!({"verified": true, "request_id": request_id}));
    let max_pending = node.config.max_pending_requests;
    let keep_until = replay_horizon(&node, now);
    let stored = node
        .db(move |s| {
            if s.request(&request.request_id)?.is_some() {
                return Ok(Err(ApiError::conflict("duplicate_request", "a contact request with this id exists")));
            }
            if s.pending_incoming()? >= i64::from(max_pending) {
                return Ok(Err(ApiError::too_many_pending(max_pending)));
            }
            if !s.upsert_peer(&peer)? {
                return Ok(Err(ApiError::forbidden("key_mismatch", "presented a key other than the one pinned")));
            }
            if let Some(earlier) =
                s.record_accepted(&peer.agent_id, &request.request_id, "contact_request", &answer, now, keep_until)?
            {
                return Ok(Ok((earlier, None)));
            }
            if peer.trust == Trust::Discovered {
                s.set_trust(&peer.agent_id, Trust::Pending)?;
            }
            s.insert_request(&request)?;
            Ok(Ok((answer, s.request(&request.request_id)?)))
        })
        .await?;
    let (answer, event) = stored?;
    if let Some(request) = event {
        node.emit(Event::ContactRequest { request });
    }
    Ok(reply(answer))
}

async fn message(State(node): State<Arc<Node>>, headers: HeaderMap, body: Body) -> Result<Response, V1Error> {
    let object = parse_object(&node, &headers, body, node.config.max_message_bytes, "direct_message").await?;
    let field = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (message_id, from, to) = (field("message_id"), field("from"), field("to"));
    let id_ok = !message_id.is_empty()
        && message_id.len() <= 128
        && message_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !id_ok {
        return Err(ApiError::bad_request("invalid_message_id", "message_id must be msg_ followed by hex").into());
    }
    let text = object
        .get("body")
        .and_then(|b| b.get("text"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("invalid_body", "body must be {\"text\": \"…\"}"))?
        .to_owned();
    node.limits.throttled(&from)?;
    let (peer, replay) = {
        let (f, m) = (from.clone(), message_id.clone());
        node.db(move |s| Ok((s.peer(&f)?, s.accepted_receipt(&f, &m)?))).await?
    };
    let peer = match peer {
        None => {
            return Err(ApiError::forbidden(
                "unknown_sender",
                format!("{from} is not a contact; send a contact request first"),
            )
            .into());
        }
        Some(p) if p.trust == Trust::Blocked => {
            return Err(ApiError::forbidden("blocked_sender", format!("{from} is blocked")).into());
        }
        Some(p) if p.trust != Trust::Trusted || p.protocol != PROTOCOL_AGENT_MESH_V1 => {
            return Err(
                ApiError::forbidden("untrusted_sender", format!("{from} has not been approved as a contact")).into()
            );
        }
        Some(p) => p,
    };
    if to != node.agent_id() {
        return Err(
            ApiError::bad_request("wrong_recipient", format!("this node is {}, not {to}", node.agent_id())).into()
        );
    }
    let sent = fresh_timestamp(&node, &object)?;
    if let Some(stored) = replay {
        return Ok(reply(stored));
    }
    let key = VerifyingKey::from_bytes(&peer.ed25519).map_err(ApiError::internal)?;
    verify(&object, &key)?;
    node.limits.message_from(&from)?;

    let now = now_ms() as i64;
    let ack =
        json!({"type": "ack", "message_id": message_id, "status": "received", "timestamp": iso_seconds(now as u64)});
    let answer = ok_reply(json!({"verified": true, "message_id": message_id, "ack": ack}));
    let keep_until = replay_horizon(&node, now);
    let incoming = IncomingMessage {
        peer_id: from.clone(),
        id: message_id.clone(),
        protocol: PROTOCOL_AGENT_MESH_V1.into(),
        encrypted: false,
        content_type: agentmesh_core::envelope::TEXT_PLAIN.into(),
        text,
        reply_to: None,
        thread: None,
        created_at: sent as i64,
        received_at: now,
    };
    let (answer, stored) = node
        .db(move |s| {
            if let Some(earlier) =
                s.record_accepted(&incoming.peer_id, &incoming.id, "message", &answer, now, keep_until)?
            {
                return Ok((earlier, None));
            }
            s.insert_incoming(&incoming)?;
            s.touch_peer(&incoming.peer_id, now)?;
            Ok((answer, s.incoming(&incoming.id)?.into_iter().find(|m| m.peer_id == incoming.peer_id)))
        })
        .await?;
    if let Some(message) = stored {
        node.emit(Event::Message { message });
    }
    Ok(reply(answer))
}

/// Fetches and validates a V1 peer's discovery document at `base` (no trailing slash).
pub async fn fetch_discovery(node: &Node, base: &str) -> Result<(V1Agent, VerifyingKey), String> {
    let url = format!("{base}/agent-mesh/discovery");
    let (status, body) = net::get(&node.http, &url, 64 * 1024).await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}"));
    }
    let doc: Value = serde_json::from_slice(&body).map_err(|_| format!("{url} did not return JSON"))?;
    if doc.get("protocol").and_then(Value::as_str) != Some(PROTOCOL_AGENT_MESH_V1) {
        return Err(format!("{url} does not speak {PROTOCOL_AGENT_MESH_V1}"));
    }
    let agent: V1Agent = doc
        .get("agent")
        .cloned()
        .and_then(|a| serde_json::from_value(a).ok())
        .ok_or_else(|| format!("{url} returned no valid agent"))?;
    let key = agent.validate().map_err(|e| e.message)?;
    Ok((agent, key))
}

/// The unsigned outbox payload of a V1 contact request from us.
pub fn contact_request_payload(node: &Node, request_id: &str, purpose: &str) -> String {
    json!({"type": "contact_request", "request_id": request_id, "from": our_agent(node), "purpose": purpose})
        .to_string()
}

/// The unsigned outbox payload of a V1 direct message from us.
pub fn message_payload(node: &Node, message_id: &str, to: &str, text: &str) -> String {
    json!({"type": "direct_message", "message_id": message_id, "from": node.agent_id(), "to": to, "body": {"text": text}})
        .to_string()
}

/// A fresh V1 message id, `msg_` + 32 hex (the UUIDv7 without dashes).
pub fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

/// Delivers one outbox entry to a V1 peer: stamps the timestamp, signs, posts.
pub async fn deliver(node: &Node, peer: &Peer, item: &OutboxItem) -> Outcome {
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&item.payload) else {
        return Outcome::Failed("corrupt outbox payload".into());
    };
    let route = match item.kind.as_str() {
        "contact_request" => "contact-request",
        "message" => "message",
        other => return Outcome::Failed(format!("{other} cannot be sent to an Agent Mesh V1 peer")),
    };
    object.insert("timestamp".into(), Value::String(iso_seconds(now_ms())));
    object.remove("signature");
    let signature = signature_of(node, &object);
    object.insert("signature".into(), Value::String(signature));
    let url = format!("{}/agent-mesh/{route}", peer.endpoint.trim_end_matches('/'));
    match net::post_json(&node.http, &url, Value::Object(object).to_string(), node.config.max_response_bytes).await {
        Err(e) => Outcome::Retry { sent: !e.before_send, error: e.message, after_secs: 0 },
        Ok((status, body)) => {
            let parsed: Option<Value> = serde_json::from_slice(&body).ok();
            let ok = parsed.as_ref().and_then(|v| v.get("ok")).and_then(Value::as_bool) == Some(true);
            if status.is_success() && ok {
                let result = parsed.and_then(|v| v.get("result").cloned()).unwrap_or(Value::Null);
                Outcome::Delivered(
                    json!({"protocol": PROTOCOL_AGENT_MESH_V1, "signed": false, "result": result}).to_string(),
                )
            } else {
                let error = parsed
                    .as_ref()
                    .and_then(|v| v.get("error"))
                    .map(|e| e.as_str().map(str::to_owned).unwrap_or_else(|| e.to_string()))
                    .unwrap_or_else(|| "no error given".into());
                // A V1 peer refuses us until its owner approves our contact request, which may
                // come later: keep retrying within the attempt and TTL bounds.
                let after_secs =
                    parsed.as_ref().and_then(|v| v.get("retry_after")).and_then(Value::as_u64).unwrap_or(0);
                Outcome::Retry {
                    sent: true,
                    error: format!("peer answered {}: {error}", status.as_u16()),
                    after_secs: after_secs.min(86_400),
                }
            }
        }
    }
}
