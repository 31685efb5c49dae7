//! The control API: what the owner (the CLI, MCP, tests) calls. Bound to `127.0.0.1` only; every
//! request needs `Authorization: Bearer <token>` with the token from `<home>/control.token`.
//! Every trust change and every send goes through here.
//!
//! | route | purpose |
//! |---|---|
//! | `GET /control/status` | identity, addresses, counters |
//! | `GET /control/card` | our signed agent card |
//! | `POST /control/contacts` `{url, purpose?, agent_id?, alias?}` | fetch the card at `url` (it must be `agent_id`'s when given), pin it, send a contact request |
//! | `GET /control/requests?direction=incoming\|outgoing` | contact requests |
//! | `POST /control/requests/{id}/approve` | approve an incoming request (trust becomes mutual) |
//! | `POST /control/requests/{id}/reject` `{reason?}` | reject it |
//! | `GET /control/peers` | known peers |
//! | `POST /control/peers/{id}/block`, `…/unblock`; `DELETE /control/peers/{id}` | trust changes |
//! | `POST /control/peers/{id}/repin` `{fingerprint}` | pin the key a peer presented in a key mismatch |
//! | `POST /control/rotate-key` | new keys, rotation statement, contacts told |
//! | `GET /control/discover?query=&capability=&limit=` | known agents from every source, with source and age |
//! | `POST /control/discovered` `{found:[{protocol, endpoint, document}]}` | record scan finds as discovered (each re-verified) |
//! | `POST /control/messages` `{to, text, reply_to?, thread?}` | queue a message |
//! | `GET /control/messages?direction=&unread=&peer=&limit=` | inbox and outbox |
//! | `POST /control/messages/{id}/read` | show, mark read, send a read receipt |
//! | `GET /control/events` | JSON lines of [`Event`]s as they happen |

use std::sync::Arc;

use agentmesh_core::envelope::{
    APPLICATION_JSON, ContactRequestBody, ContactResponseBody, Draft, ReceiptBody, TEXT_PLAIN,
};
use agentmesh_core::time::now_ms;
use agentmesh_core::{AgentCard, EnvelopeKind, PROTOCOL_AGENT_MESH_V1, PROTOCOL_NATIVE};
use agentmesh_store::{
    ContactRequest, Direction, KeyMismatch, MessageFilter, NewOutbound, Peer, RequestStatus, Store, Trust,
};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::compat::agent_mesh_v1 as v1;
use crate::error::{ApiError, read_json_body};
use crate::home::Home;
use crate::{Node, net};

/// State of the control API: the node and the bearer token.
#[derive(Clone)]
pub struct ControlState {
    node: Arc<Node>,
    token: Arc<str>,
    peer_url: Arc<str>,
    home: Arc<Home>,
    /// Serializes key rotations.
    rotating: Arc<tokio::sync::Mutex<()>>,
}

/// Builds the control router; `token` is the bearer credential, `peer_url` our bound peer URL.
pub fn router(node: Arc<Node>, home: Home, token: String, peer_url: String) -> Router {
    let state = ControlState {
        node,
        token: token.into(),
        peer_url: peer_url.into(),
        home: Arc::new(home),
        rotating: Arc::default(),
    };
    Router::new()
        .route("/control/status", get(status))
        .route("/control/card", get(card))
        .route("/control/contacts", post(request_contact))
        .route("/control/requests", get(list_requests))
        .route("/control/requests/{id}/approve", post(approve))
        .route("/control/requests/{id}/reject", post(reject))
        .route("/control/peers", get(list_peers))
        .route("/control/peers/{id}", axum::routing::delete(remove_peer))
        .route("/control/peers/{id}/block", post(block))
        .route("/control/peers/{id}/unblock", post(unblock))
        .route("/control/peers/{id}/repin", post(repin))
        .route("/control/rotate-key", post(rotate_key))
        .route("/control/discovered", post(record_discovered))
        .route("/control/discover", get(discover))
        .route("/control/messages", post(send_message).get(list_messages))
        .route("/control/messages/{id}/read", post(read_message))
        .route("/control/events", get(events))
        .fallback(|| async { ApiError::not_found("no such control route") })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn authenticate(State(state): State<ControlState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(presented.as_bytes(), state.token.as_bytes()) {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong control token")
            .into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const CONTROL_BODY_LIMIT: usize = 1024 * 1024;

async fn json_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let bytes = read_json_body(headers, body, CONTROL_BODY_LIMIT, std::time::Duration::from_secs(30)).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request("malformed", e.to_string()))
}

async fn status(State(st): State<ControlState>) -> Result<Json<Value>, ApiError> {
    let node = &st.node;
    let (stats, mismatches) = node.db(|s| Ok((s.stats()?, s.key_mismatches(true)?))).await?;
    let keys = node.keys();
    let previous_until = keys.previous.as_ref().map(|(_, until)| *until).filter(|u| *u > now_ms());
    Ok(Json(json!({
        "agent_id": node.agent_id(),
        "name": keys.card.name,
        "fingerprint": keys.identity.fingerprint(),
        "key_rotations": keys.identity.rotations().len(),
        "previous_key_until": previous_until,
        "key_mismatches": mismatches,
        "listen": st.peer_url.as_ref(),
        "endpoint": node.endpoint,
        "protocols": keys.card.protocols,
        "capabilities": keys.card.capabilities,
        "peers": stats.peers,
        "trusted_peers": stats.trusted_peers,
        "pending_requests": stats.pending_requests,
        "unread_messages": stats.unread_messages,
        "outbox_depth": stats.outbox_depth,
        "failed_deliveries": stats.failed_deliveries,
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

async fn card(State(st): State<ControlState>) -> Json<AgentCard> {
    Json(st.node.keys().card.clone())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactArgs {
    url: String,
    #[serde(default)]
    purpose: String,
    /// The agent id the owner expects at `url` (`add-peer`): anything else is refused.
    agent_id: Option<String>,
    /// A name the owner gives the peer.
    alias: Option<String>,
}

fn new_request_id() -> String {
    format!("req_{}", hex::encode(rand::random::<[u8; 16]>()))
}

fn peer_json(p: &Peer) -> Value {
    json!({"agent_id": p.agent_id, "name": p.name, "fingerprint": p.fingerprint, "protocol": p.protocol, "endpoint": p.endpoint, "trust": p.trust})
}

/// Fetches the peer's native card, falling back to the V1 discovery document. Returns the peer
/// and every key it has held by its verified rotation chain (genesis first, current last).
async fn fetch_peer(node: &Node, base: &str) -> Result<(Peer, Vec<[u8; 32]>), ApiError> {
    let now = now_ms() as i64;
    let native_error = match net::get(&node.http, &format!("{base}/v1/card"), 64 * 1024).await {
        Ok((status, body)) if status.is_success() => match serde_json::from_slice::<AgentCard>(&body) {
            Ok(card) => match card.verify() {
                Ok(keys) => {
                    let history = card.key_history();
                    return Ok((crate::discovery::native_peer(&card, &keys, base, now), history));
                }
                Err(e) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "invalid_card",
                        format!("{base} served a card that does not verify: {e}"),
                    ));
                }
            },
            Err(_) => "no agentmesh card".to_owned(),
        },
        Ok((status, _)) => format!("{status} for /v1/card"),
        Err(e) => return Err(ApiError::new(StatusCode::BAD_GATEWAY, "peer_unreachable", format!("{base}: {e}"))),
    };
    match v1::fetch_discovery(node, base).await {
        Ok((agent, key)) => Ok((crate::discovery::v1_peer(&agent, &key, base, now), vec![key.to_bytes()])),
        Err(v1_error) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "not_an_agent",
            format!("{base} is not an agentmesh or Agent Mesh V1 agent ({native_error}; {v1_error})"),
        )),
    }
}

fn normalize_url(url: &str) -> Result<String, ApiError> {
    let url = url.trim().trim_end_matches('/');
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && url.len() <= 512 && !url.contains(char::is_whitespace) => Ok(url.to_owned()),
        _ => Err(ApiError::bad_request("invalid_url", "give the peer's base URL, e.g. http://127.0.0.1:8787")),
    }
}

async fn request_contact(
    State(st): State<ControlState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let args: ContactArgs = json_body(&headers, body).await?;
    if args.purpose.chars().count() > 1000 {
        return Err(ApiError::bad_request("invalid_purpose", "purpose is limited to 1000 characters"));
    }
    if args.alias.as_ref().is_some_and(|a| a.trim().is_empty() || a.chars().count() > 64) {
        return Err(ApiError::bad_request("invalid_alias", "an alias is 1 to 64 characters"));
    }
    let base = normalize_url(&args.url)?;
    let node = Arc::clone(&st.node);
    let (mut peer, history) = fetch_peer(&node, &base).await?;
    if let Some(expected) = &args.agent_id
        && *expected != peer.agent_id
    {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_id_mismatch",
            format!("{base} serves agent {}, not {expected}; nothing was pinned or sent", peer.agent_id),
        ));
    }
    if peer.agent_id == node.agent_id() {
        return Err(ApiError::bad_request("self_contact", format!("{base} is this agent itself")));
    }
    peer.alias = args.alias.map(|a| a.trim().to_owned());
    let grace_ms = node.config.rotation_grace_secs.saturating_mul(1000) as i64;
    let request_id = new_request_id();
    let now = now_ms();
    let outbound = if peer.protocol == PROTOCOL_NATIVE {
        let body = ContactRequestBody { request_id: request_id.clone(), purpose: args.purpose.clone() };
        let body = serde_json::to_vec(&body).map_err(ApiError::internal)?;
        native_outbound(&node, &peer, EnvelopeKind::ContactRequest, body, APPLICATION_JSON, None, None)?
    } else {
        let payload = v1::contact_request_payload(&node, &request_id, &args.purpose);
        v1_outbound(&node, &peer, request_id.clone(), "contact_request", payload, None)
    };
    let request = ContactRequest {
        request_id: request_id.clone(),
        direction: Direction::Outgoing,
        peer_id: peer.agent_id.clone(),
        peer_name: Some(peer.name.clone()),
        fingerprint: Some(peer.fingerprint.clone()),
        purpose: args.purpose,
        status: RequestStatus::Pending,
        reason: None,
        protocol: peer.protocol.clone(),
        created_at: now as i64,
        decided_at: None,
    };
    let p = peer.clone();
    let (outcome, mismatch) = node
        .db(move |s| {
            match pin_check(s, &p, &history, now as i64, grace_ms)? {
                PinCheck::Mismatch(m) => {
                    s.record_key_mismatch(&m)?;
                    return Ok((Err(outbound_mismatch(&p.agent_id)), Some(*m)));
                }
                PinCheck::Superseded => {
                    return Ok((
                        Err(ApiError::conflict(
                            "superseded_key",
                            format!(
                                "{} serves a card with a key it has rotated away from; nothing was sent",
                                p.agent_id
                            ),
                        )),
                        None,
                    ));
                }
                PinCheck::Ok => {}
            }
            if !s.upsert_peer(&p)? {
                return Ok((Err(outbound_mismatch(&p.agent_id)), None));
            }
            Ok((contact_outcome(s, &p, &request, &outbound)?, None))
        })
        .await?;
    if let Some(mismatch) = mismatch {
        tracing::warn!(peer = %mismatch.peer_id, presented = %mismatch.presented_fingerprint, "pinned agent serves another key");
        node.emit(crate::Event::KeyMismatch { mismatch });
    }
    let Some(trust) = outcome? else {
        return Ok(Json(
            json!({"status": "already_trusted", "request_id": null, "peer": peer_json(&Peer { trust: Trust::Trusted, ..peer })}),
        ));
    };
    node.outbox_wake.notify_one();
    Ok(Json(json!({"status": "pending", "request_id": request_id, "peer": peer_json(&Peer { trust, ..peer })})))
}

fn outbound_mismatch(agent_id: &str) -> ApiError {
    ApiError::conflict(
        "key_mismatch",
        format!(
            "{agent_id} now presents a key other than the one pinned for it; nothing was sent. Check the new \
             fingerprint with its owner (`agentmesh status` lists it), then run `agentmesh repin {agent_id} --fingerprint <sha256:…>`"
        ),
    )
}

enum PinCheck {
    Ok,
    Superseded,
    Mismatch(Box<KeyMismatch>),
}

/// Compares a fetched peer with its pin: the same key, a key its verified rotation chain leads to
/// (the pin moves, the old key kept for `grace_ms`), a key it rotated away from, or a mismatch.
fn pin_check(
    s: &Store,
    fetched: &Peer,
    history: &[[u8; 32]],
    now: i64,
    grace_ms: i64,
) -> agentmesh_store::Result<PinCheck> {
    let Some(pinned) = s.peer(&fetched.agent_id)? else { return Ok(PinCheck::Ok) };
    if pinned.ed25519 == fetched.ed25519 {
        return Ok(PinCheck::Ok);
    }
    if pinned.prev_ed25519 == Some(fetched.ed25519) {
        return Ok(PinCheck::Superseded);
    }
    if pinned.protocol == PROTOCOL_NATIVE && history.contains(&pinned.ed25519) {
        s.rotate_peer_key(fetched, now.saturating_add(grace_ms))?;
        return Ok(PinCheck::Ok);
    }
    Ok(PinCheck::Mismatch(Box::new(KeyMismatch {
        peer_id: fetched.agent_id.clone(),
        pinned_fingerprint: pinned.fingerprint,
        presented_fingerprint: fetched.fingerprint.clone(),
        presented_ed25519: fetched.ed25519,
        presented_x25519: fetched.x25519,
        presented_card: fetched.card.clone(),
        direction: "outbound".into(),
        count: 1,
        first_at: now,
        last_at: now,
        resolved_at: None,
    })))
}

/// Records an outgoing contact request (unless trust is already mutual) and queues it; returns
/// the resulting trust, `None` when there was nothing to ask.
fn contact_outcome(
    s: &Store,
    p: &Peer,
    request: &ContactRequest,
    outbound: &NewOutbound,
) -> agentmesh_store::Result<Result<Option<Trust>, ApiError>> {
    {
        {
            let current = s.peer(&p.agent_id)?.map(|x| x.trust).unwrap_or(Trust::Discovered);
            let native = p.protocol == PROTOCOL_NATIVE;
            match current {
                Trust::Blocked => {
                    return Ok(Err(ApiError::conflict(
                        "blocked",
                        format!("{} is blocked; unblock it first", p.agent_id),
                    )));
                }
                // Native trust is mutual: nothing to ask. V1 trust is one-sided: our trusting
                // them does not make them trust us, so the request still goes out.
                Trust::Trusted if native => return Ok(Ok(None)),
                Trust::Trusted => {}
                _ => {
                    s.set_trust(&p.agent_id, Trust::Pending)?;
                }
            }
            s.insert_request(request)?;
            s.enqueue(outbound)?;
            Ok(Ok(Some(if current == Trust::Trusted { Trust::Trusted } else { Trust::Pending })))
        }
    }
}

#[derive(Deserialize)]
struct RequestQuery {
    direction: Option<Direction>,
}

async fn list_requests(State(st): State<ControlState>, Query(q): Query<RequestQuery>) -> Result<Json<Value>, ApiError> {
    let requests = st.node.db(move |s| s.requests(q.direction)).await?;
    Ok(Json(json!({ "requests": requests })))
}

#[derive(Deserialize, Default)]
struct RejectArgs {
    reason: Option<String>,
}

async fn approve(State(st): State<ControlState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    decide(st.node, id, true, None).await
}

async fn reject(
    State(st): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let has_body = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v != "0");
    let args: RejectArgs = if has_body { json_body(&headers, body).await? } else { RejectArgs::default() };
    if args.reason.as_ref().is_some_and(|r| r.chars().count() > 1000) {
        return Err(ApiError::bad_request("invalid_reason", "reason is limited to 1000 characters"));
    }
    decide(st.node, id, false, args.reason).await
}

/// Approves or rejects an incoming request, and queues the signed answer to a native peer.
async fn decide(
    node: Arc<Node>,
    request_id: String,
    accept: bool,
    reason: Option<String>,
) -> Result<Json<Value>, ApiError> {
    let n = Arc::clone(&node);
    let result = node
        .db(move |s| {
            let Some(request) = s.request(&request_id)? else {
                return Ok(Err(ApiError::not_found(format!("no contact request {request_id}"))));
            };
            if request.direction != Direction::Incoming {
                return Ok(Err(ApiError::conflict("outgoing_request", "the peer answers outgoing requests, not us")));
            }
            if request.status != RequestStatus::Pending {
                return Ok(Err(ApiError::conflict(
                    "already_decided",
                    format!("request is already {}", request.status.as_str()),
                )));
            }
            let Some(peer) = s.peer(&request.peer_id)? else {
                return Ok(Err(ApiError::not_found(format!("peer {} was removed", request.peer_id))));
            };
            if accept && peer.trust == Trust::Blocked {
                return Ok(Err(ApiError::conflict(
                    "blocked",
                    format!("{} is blocked; unblock it before approving", peer.agent_id),
                )));
            }
            let now = now_ms();
            let status = if accept { RequestStatus::Approved } else { RequestStatus::Rejected };
            s.decide_request(&request_id, status, reason.as_deref(), now as i64)?;
            if accept {
                s.set_trust(&peer.agent_id, Trust::Trusted)?;
            } else if peer.trust == Trust::Pending {
                s.set_trust(&peer.agent_id, Trust::Discovered)?;
            }
            if peer.protocol == PROTOCOL_NATIVE {
                let body =
                    ContactResponseBody { request_id: request_id.clone(), accepted: accept, reason: reason.clone() };
                let outbound = match native_outbound(
                    &n,
                    &peer,
                    EnvelopeKind::ContactResponse,
                    serde_json::to_vec(&body).unwrap_or_default(),
                    APPLICATION_JSON,
                    None,
                    None,
                ) {
                    Ok(o) => o,
                    Err(e) => return Ok(Err(e)),
                };
                s.enqueue(&outbound)?;
            }
            Ok(Ok(s.request(&request_id)?))
        })
        .await??;
    node.outbox_wake.notify_one();
    Ok(Json(json!({ "request": result })))
}

/// Seals a native envelope to `peer` and wraps it as an outbox entry.
fn native_outbound(
    node: &Node,
    peer: &Peer,
    kind: EnvelopeKind,
    plaintext: Vec<u8>,
    content_type: &str,
    text: Option<String>,
    refs: Option<(Option<String>, Option<String>)>,
) -> Result<NewOutbound, ApiError> {
    let x25519 = peer.x25519.ok_or_else(|| ApiError::internal("native peer without X25519 key"))?;
    let to = peer.agent_id.parse().map_err(ApiError::internal)?;
    let now = now_ms();
    let mut draft = Draft::new(kind, node.id(), to, now, node.config.message_ttl_secs * 1000, content_type, plaintext);
    if kind.carries_card() {
        draft.card = Some(node.keys().card.clone());
    }
    let (reply_to, thread) = refs.unwrap_or_default();
    draft.reply_to = reply_to.clone();
    draft.thread = thread.clone();
    let expires_at = draft.expires_at as i64;
    let sealed = draft.seal(&x25519).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(NewOutbound {
        id: sealed.id.clone(),
        kind: kind.as_str().into(),
        peer_id: peer.agent_id.clone(),
        protocol: PROTOCOL_NATIVE.into(),
        payload: serde_json::to_string(&sealed).map_err(ApiError::internal)?,
        text,
        content_type: content_type.into(),
        reply_to,
        thread,
        encrypted: true,
        created_at: now as i64,
        expires_at,
    })
}

/// An outbox entry for an Agent Mesh V1 peer (signed at send time, never encrypted).
fn v1_outbound(node: &Node, peer: &Peer, id: String, kind: &str, payload: String, text: Option<String>) -> NewOutbound {
    let now = now_ms();
    NewOutbound {
        id,
        kind: kind.into(),
        peer_id: peer.agent_id.clone(),
        protocol: PROTOCOL_AGENT_MESH_V1.into(),
        payload,
        text,
        content_type: if kind == "message" { TEXT_PLAIN } else { APPLICATION_JSON }.into(),
        reply_to: None,
        thread: None,
        encrypted: false,
        created_at: now as i64,
        expires_at: (now + node.config.message_ttl_secs * 1000) as i64,
    }
}

async fn list_peers(State(st): State<ControlState>) -> Result<Json<Value>, ApiError> {
    let peers = st.node.db(|s| s.peers()).await?;
    Ok(Json(json!({ "peers": peers })))
}

async fn set_trust(node: &Arc<Node>, id: String, trust: Trust) -> Result<Json<Value>, ApiError> {
    let peer = node
        .db(move |s| {
            if !s.set_trust(&id, trust)? {
                return Ok(None);
            }
            s.peer(&id)
        })
        .await?
        .ok_or_else(|| ApiError::not_found("no such peer"))?;
    Ok(Json(json!({ "peer": peer })))
}

async fn block(State(st): State<ControlState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    set_trust(&st.node, id, Trust::Blocked).await
}

async fn unblock(State(st): State<ControlState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    // Unblocking does not restore trust: the peer must ask again (or be asked).
    set_trust(&st.node, id, Trust::Discovered).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepinArgs {
    fingerprint: String,
}

/// Pins the key a peer presented in an open key mismatch, once the owner has checked its
/// fingerprint out of band. Only through here does a mismatched peer become reachable again.
async fn repin(
    State(st): State<ControlState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let args: RepinArgs = json_body(&headers, body).await?;
    let agent_id = id.clone();
    let fingerprint = args.fingerprint.clone();
    let (peer, open) = st
        .node
        .db(move |s| {
            let open: Vec<String> = s
                .key_mismatches(true)?
                .into_iter()
                .filter(|m| m.peer_id == agent_id)
                .map(|m| m.presented_fingerprint)
                .collect();
            Ok((s.repin(&agent_id, &fingerprint, now_ms() as i64)?, open))
        })
        .await?;
    let Some(peer) = peer else {
        return Err(if open.is_empty() {
            ApiError::not_found(format!("{id} has no open key mismatch"))
        } else {
            ApiError::conflict(
                "fingerprint_mismatch",
                format!("{id} presented {}, not {}; nothing was changed", open.join(", "), args.fingerprint),
            )
        });
    };
    tracing::info!(peer = %peer.agent_id, fingerprint = %peer.fingerprint, "owner repinned peer key");
    Ok(Json(json!({ "peer": peer })))
}

/// Rotates our keys (see [`crate::home::Home::rotate_keys`]), installs them, and queues a
/// `key_rotation` envelope with the new card to every contact.
async fn rotate_key(State(st): State<ControlState>) -> Result<Json<Value>, ApiError> {
    let _one_at_a_time = st.rotating.lock().await;
    let node = Arc::clone(&st.node);
    let home = Arc::clone(&st.home);
    let grace_ms = node.config.rotation_grace_secs.saturating_mul(1000);
    let old_fingerprint = node.keys().identity.fingerprint();
    let (state, profile) = tokio::task::spawn_blocking(move || {
        Ok::<_, anyhow::Error>((home.rotate_keys(grace_ms)?, home.load_profile()?))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let card = crate::run::our_card(&state.identity, &profile, &node.endpoint);
    let fingerprint = state.identity.fingerprint();
    let rotations = state.identity.rotations().len();
    let previous_until = state.previous.as_ref().map(|(_, until)| *until);
    node.set_keys(crate::Keys { identity: state.identity, card, previous: state.previous });
    tracing::info!(old = %old_fingerprint, new = %fingerprint, "rotated keys");
    let told = announce_card(&node).await?;
    Ok(Json(json!({
        "agent_id": node.agent_id(),
        "old_fingerprint": old_fingerprint,
        "fingerprint": fingerprint,
        "key_rotations": rotations,
        "previous_key_until": previous_until,
        "contacts_told": told,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoveredArgs {
    found: Vec<FoundArg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FoundArg {
    protocol: String,
    endpoint: String,
    document: Value,
}

/// Most finds recorded per call.
const MAX_DISCOVERED: usize = 4096;

/// Records agents a scan found, as `discovered` (never trusted); each card or V1 document is
/// verified again here. Answers `{"recorded":[{"agent_id","outcome"}]}` in order.
async fn record_discovered(
    State(st): State<ControlState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let args: DiscoveredArgs = json_body(&headers, body).await?;
    if args.found.len() > MAX_DISCOVERED {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("at most {MAX_DISCOVERED} finds per call"),
        ));
    }
    let outcomes = st
        .node
        .db(move |s| {
            let mut out = Vec::with_capacity(args.found.len());
            for f in args.found {
                let agent_id = f.document.get("agent_id").and_then(Value::as_str).unwrap_or_default().to_owned();
                let found = crate::discovery::Found {
                    agent_id: agent_id.clone(),
                    name: String::new(),
                    endpoint: f.endpoint,
                    protocol: f.protocol,
                    fingerprint: String::new(),
                    signature_valid: false,
                    problem: None,
                    document: f.document,
                };
                out.push(json!({"agent_id": agent_id, "outcome": crate::discovery::record(s, &found)?}));
            }
            Ok(out)
        })
        .await?;
    Ok(Json(json!({ "recorded": outcomes })))
}

#[derive(Deserialize, Default)]
struct DiscoverQuery {
    query: Option<String>,
    /// Comma-separated; every one is required.
    capability: Option<String>,
    limit: Option<usize>,
}

/// Known agents from every source: the directory (bootstrap, gossip, LAN) and our peers table
/// (scan, contacts), newest first, each with `source`, `trust` and `age_secs`.
async fn discover(State(st): State<ControlState>, Query(q): Query<DiscoverQuery>) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let capabilities: Vec<String> = q
        .capability
        .as_deref()
        .map(|c| c.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let query = q.query.filter(|t| !t.trim().is_empty());
    let now = now_ms() as i64;
    let agents = st
        .node
        .db(move |s| {
            let mut out: Vec<Value> = Vec::new();
            let needle = query.as_deref().map(str::to_lowercase);
            for p in s.peers()? {
                let caps: Vec<String> = p
                    .card
                    .as_deref()
                    .and_then(|c| serde_json::from_str::<Value>(c).ok())
                    .and_then(|c| serde_json::from_value(c["capabilities"].clone()).ok())
                    .unwrap_or_default();
                let text_ok = needle.as_deref().is_none_or(|n| {
                    p.name.to_lowercase().contains(n)
                        || p.agent_id.contains(n)
                        || caps.iter().any(|c| c.to_lowercase().contains(n))
                });
                let caps_ok = capabilities.iter().all(|c| caps.iter().any(|h| h.eq_ignore_ascii_case(c)));
                if text_ok && caps_ok {
                    out.push(json!({
                        "agent_id": p.agent_id, "name": p.name, "endpoint": p.endpoint, "protocol": p.protocol,
                        "fingerprint": p.fingerprint, "capabilities": caps, "source": "peers", "trust": p.trust,
                        "last_seen": p.last_seen, "age_secs": (now - p.last_seen).max(0) / 1000,
                    }));
                }
            }
            for e in s.directory(now, query.as_deref(), &capabilities, limit)? {
                if out.iter().any(|o| o["agent_id"] == e.agent_id.as_str()) {
                    continue;
                }
                out.push(json!({
                    "agent_id": e.agent_id, "name": e.name, "endpoint": e.endpoint, "protocol": e.protocol,
                    "fingerprint": e.fingerprint, "capabilities": e.capabilities, "source": e.source, "trust": null,
                    "last_seen": e.last_seen, "age_secs": (now - e.last_seen).max(0) / 1000,
                    "expires_at": e.expires_at,
                }));
            }
            out.sort_by_key(|v| std::cmp::Reverse(v["last_seen"].as_i64().unwrap_or(0)));
            out.truncate(limit);
            Ok(out)
        })
        .await?;
    Ok(Json(json!({ "agents": agents })))
}

const ANNOUNCED_KEY: &str = "announced_fingerprint";

/// Queues our current card in a `key_rotation` envelope to every native contact (trusted, or
/// asked) unless it was already announced; returns how many were queued. Run at start (a
/// rotation made while the node was down) and after each rotation.
pub(crate) async fn announce_card(node: &Arc<Node>) -> Result<usize, ApiError> {
    let keys = node.keys();
    let fingerprint = keys.identity.fingerprint().to_string();
    let rotated = !keys.identity.rotations().is_empty();
    let n = Arc::clone(node);
    let told = node
        .db(move |s| {
            let announced = s.meta(ANNOUNCED_KEY)?;
            if announced.as_deref() == Some(fingerprint.as_str()) || (announced.is_none() && !rotated) {
                s.set_meta(ANNOUNCED_KEY, &fingerprint)?;
                return Ok(Ok(0));
            }
            let mut told = 0;
            for peer in s.peers()? {
                if peer.protocol != PROTOCOL_NATIVE || !matches!(peer.trust, Trust::Trusted | Trust::Pending) {
                    continue;
                }
                match native_outbound(
                    &n,
                    &peer,
                    EnvelopeKind::KeyRotation,
                    b"{}".to_vec(),
                    APPLICATION_JSON,
                    None,
                    None,
                ) {
                    Ok(outbound) => s.enqueue(&outbound)?,
                    Err(e) => return Ok(Err(e)),
                }
                told += 1;
            }
            s.set_meta(ANNOUNCED_KEY, &fingerprint)?;
            Ok(Ok(told))
        })
        .await??;
    if told > 0 {
        node.rotation_pending.store(true, std::sync::atomic::Ordering::SeqCst);
        node.outbox_wake.notify_one();
    }
    Ok(told)
}

async fn remove_peer(State(st): State<ControlState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let agent_id = id.clone();
    if !st.node.db(move |s| s.remove_peer(&id)).await? {
        return Err(ApiError::not_found("no such peer"));
    }
    Ok(Json(json!({ "removed": agent_id })))
}

#[derive(Deserialize)]
struct SendArgs {
    to: String,
    text: String,
    reply_to: Option<String>,
    thread: Option<String>,
}

async fn send_message(State(st): State<ControlState>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let args: SendArgs = json_body(&headers, body).await?;
    let node = Arc::clone(&st.node);
    if args.text.is_empty() {
        return Err(ApiError::bad_request("empty_message", "the message text is empty"));
    }
    if args.text.len() > node.config.max_text_bytes {
        return Err(ApiError::too_large(node.config.max_text_bytes));
    }
    let to = args.to.clone();
    let peer = node.db(move |s| s.peer(&to)).await?.ok_or_else(|| {
        ApiError::not_found(format!("no peer {}; run `agentmesh request-contact <URL>` first", args.to))
    })?;
    let outbound = if peer.protocol == PROTOCOL_NATIVE {
        match peer.trust {
            Trust::Trusted => {}
            Trust::Blocked => return Err(ApiError::conflict("blocked", format!("{} is blocked", peer.agent_id))),
            _ => {
                return Err(ApiError::forbidden(
                    "not_trusted",
                    format!(
                        "{} is not a contact yet (trust: {}); wait for it to approve",
                        peer.agent_id,
                        peer.trust.as_str()
                    ),
                ));
            }
        }
        // Sealing costs ~0.1 ms of CPU: cheaper done here than handed to another thread.
        let refs = Some((args.reply_to.clone(), args.thread.clone()));
        native_outbound(
            &node,
            &peer,
            EnvelopeKind::Message,
            args.text.clone().into_bytes(),
            TEXT_PLAIN,
            Some(args.text),
            refs,
        )?
    } else {
        if peer.trust == Trust::Blocked {
            return Err(ApiError::conflict("blocked", format!("{} is blocked", peer.agent_id)));
        }
        let id = v1::new_message_id();
        let payload = v1::message_payload(&node, &id, &peer.agent_id, &args.text);
        v1_outbound(&node, &peer, id, "message", payload, Some(args.text))
    };
    let reply = json!({"message_id": outbound.id, "to": outbound.peer_id, "status": "queued", "encrypted": outbound.encrypted, "protocol": outbound.protocol});
    tracing::debug!(id = %outbound.id, to = %outbound.peer_id, encrypted = outbound.encrypted, "queueing message");
    node.db(move |s| s.enqueue(&outbound)).await?;
    node.outbox_wake.notify_one();
    Ok(Json(reply))
}

async fn list_messages(
    State(st): State<ControlState>,
    Query(filter): Query<MessageFilter>,
) -> Result<Json<Value>, ApiError> {
    let messages = st.node.db(move |s| s.messages(&filter)).await?;
    Ok(Json(json!({ "messages": messages })))
}

async fn read_message(State(st): State<ControlState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let node = Arc::clone(&st.node);
    let n = Arc::clone(&node);
    let message = node
        .db(move |s: &Store| {
            let Some(message) = s.incoming(&id)?.into_iter().next() else {
                return Ok(Err(ApiError::not_found(format!("no incoming message {id}"))));
            };
            let now = now_ms() as i64;
            if s.mark_incoming_read(&message.peer_id, &message.id, now)?
                && message.protocol == PROTOCOL_NATIVE
                && let Some(peer) = s.peer(&message.peer_id)?
                && peer.trust == Trust::Trusted
            {
                let body = ReceiptBody { message_id: message.id.clone(), status: "read".into(), at: now as u64 };
                match native_outbound(
                    &n,
                    &peer,
                    EnvelopeKind::Receipt,
                    serde_json::to_vec(&body).unwrap_or_default(),
                    APPLICATION_JSON,
                    None,
                    None,
                ) {
                    Ok(outbound) => s.enqueue(&outbound)?,
                    Err(e) => return Ok(Err(e)),
                }
            }
            Ok(Ok(s.incoming(&message.id)?.into_iter().find(|m| m.peer_id == message.peer_id)))
        })
        .await??;
    node.outbox_wake.notify_one();
    Ok(Json(json!({ "message": message })))
}

async fn events(State(st): State<ControlState>) -> Response {
    let receiver = st.node.events.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut rx| async move {
        let line = match rx.recv().await {
            Ok(event) => serde_json::to_string(&event).unwrap_or_default(),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                json!({"event": "lagged", "missed": missed}).to_string()
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(format!("{line}\n")), rx))
    });
    // A first line so watchers know the stream is live.
    let hello = futures_util::stream::once(async { Ok(format!("{}\n", json!({"event": "subscribed"}))) });
    let body = Body::from_stream(futures_util::StreamExt::chain(hello, stream));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}
