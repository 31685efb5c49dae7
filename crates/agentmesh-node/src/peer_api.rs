//! The peer API: what other agents call.
//!
//! Native routes (bodies are [`Envelope`]s, JSON, `Content-Type: application/json`):
//!
//! | route | body | success |
//! |---|---|---|
//! | `GET /v1/card` | — | `200` our [`AgentCard`](agentmesh_core::AgentCard) |
//! | `POST /v1/contact-request` | one `contact_request` envelope | `200 {"receipt":…}` |
//! | `POST /v1/contact-response` | one `contact_response` envelope | `200 {"receipt":…}` |
//! | `POST /v1/message` | one `message` envelope | `200 {"receipt":…}` |
//! | `POST /v1/receipt` | one `receipt` (read receipt) envelope | `200 {"receipt":…}` |
//! | `POST /v1/key-rotation` | one `key_rotation` envelope (new card with its rotation chain) | `200 {"receipt":…}` |
//! | `POST /v1/batch` | `{"envelopes":[…]}`, any kind but contact requests | `200 {"results":[…]}` |
//!
//! Each envelope is checked cheapest first — size, parse, shape, sender (known, trusted, not
//! blocked, key pinned; for contact requests a valid card), recipient, freshness of `sent_at`,
//! expiry, replay (an id already accepted gets its original receipt again and stores nothing),
//! signature, the sender's rate budget (charged only once the signature proves the sender, so
//! forged envelopes cannot drain a real peer's budget), decryption — then stored in one
//! transaction, and only then acknowledged with a signed [`DeliveryReceipt`]. Failures answer `{"error":{"code","message"}}` with the status of the
//! README's error table; batch results carry the same per envelope.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use agentmesh_core::envelope::{ContactRequestBody, ContactResponseBody, ReceiptBody};
use agentmesh_core::time::now_ms;
use agentmesh_core::{AgentCard, DeliveryReceipt, Envelope, EnvelopeKind, PROTOCOL_NATIVE, PublicKeys};
use agentmesh_store::{ContactRequest, Direction, IncomingMessage, KeyMismatch, Peer, RequestStatus, Store, Trust};
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{ApiError, read_json_body};
use crate::{Event, Keys, Node, compat};

/// Builds the peer API router (native and Agent Mesh V1 routes).
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/card", get(card))
        .route("/v1/contact-request", post(contact_request))
        .route("/v1/contact-response", post(contact_response))
        .route("/v1/message", post(message))
        .route("/v1/receipt", post(receipt))
        .route("/v1/key-rotation", post(key_rotation))
        .route("/v1/batch", post(batch))
        .merge(crate::gossip::router())
        .merge(compat::agent_mesh_v1::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .with_state(node)
}

async fn card(
    State(node): State<Arc<Node>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
) -> Result<Json<AgentCard>, ApiError> {
    node.limits.other_from_ip(remote.ip())?;
    Ok(Json(node.keys().card.clone()))
}

async fn contact_request(
    State(node): State<Arc<Node>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Every attempt counts, before any parsing: a flood costs us as little as possible.
    if let Err(e) = node.limits.contact_from_ip(remote.ip()) {
        return e.into_response();
    }
    let limit = node.config.max_contact_request_bytes;
    single(node, headers, body, EnvelopeKind::ContactRequest, limit).await
}

async fn contact_response(
    State(node): State<Arc<Node>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    card_carrying(node, remote, headers, body, EnvelopeKind::ContactResponse).await
}

async fn key_rotation(
    State(node): State<Arc<Node>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    card_carrying(node, remote, headers, body, EnvelopeKind::KeyRotation).await
}

/// Contact responses and key rotations: the per-IP budget of other routes, the contact-request
/// body limit (they carry a card).
async fn card_carrying(
    node: Arc<Node>,
    remote: SocketAddr,
    headers: HeaderMap,
    body: Body,
    kind: EnvelopeKind,
) -> Response {
    if let Err(e) = node.limits.other_from_ip(remote.ip()) {
        return e.into_response();
    }
    let limit = node.config.max_contact_request_bytes;
    single(node, headers, body, kind, limit).await
}

async fn not_found(State(node): State<Arc<Node>>, ConnectInfo(remote): ConnectInfo<SocketAddr>) -> ApiError {
    node.limits.other_from_ip(remote.ip()).err().unwrap_or_else(|| ApiError::not_found("no such route"))
}

async fn message(State(node): State<Arc<Node>>, headers: HeaderMap, body: Body) -> Response {
    let limit = node.config.max_message_bytes;
    single(node, headers, body, EnvelopeKind::Message, limit).await
}

async fn receipt(State(node): State<Arc<Node>>, headers: HeaderMap, body: Body) -> Response {
    let limit = node.config.max_message_bytes;
    single(node, headers, body, EnvelopeKind::Receipt, limit).await
}

fn receipt_response(receipt_json: String) -> Response {
    let body = format!("{{\"receipt\":{receipt_json}}}");
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn single(node: Arc<Node>, headers: HeaderMap, body: Body, kind: EnvelopeKind, limit: usize) -> Response {
    let bytes = match read_json_body(&headers, body, limit, node.body_timeout()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let envelope: Envelope = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(e) => return ApiError::bad_request("malformed", format!("not an envelope: {e}")).into_response(),
    };
    if envelope.kind != kind {
        return ApiError::bad_request(
            "wrong_route",
            format!("this route takes {kind} envelopes, not {}", envelope.kind),
        )
        .into_response();
    }
    match process(&node, vec![envelope]).await.pop() {
        Some(Ok(receipt)) => receipt_response(receipt),
        Some(Err(e)) => e.into_response(),
        None => ApiError::internal("empty result").into_response(),
    }
}

#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    envelopes: Vec<&'a RawValue>,
}

async fn batch(State(node): State<Arc<Node>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_json_body(&headers, body, node.config.max_batch_bytes, node.body_timeout()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let batch: Batch<'_> = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request("malformed", format!("expected {{\"envelopes\":[…]}}: {e}")).into_response();
        }
    };
    if batch.envelopes.len() > node.config.max_batch_envelopes {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("at most {} envelopes per batch", node.config.max_batch_envelopes),
        )
        .into_response();
    }
    // Parse each envelope on its own so one bad entry does not sink the others.
    let mut slots: Vec<Result<usize, (Option<String>, ApiError)>> = Vec::with_capacity(batch.envelopes.len());
    let mut envelopes = Vec::new();
    for raw in &batch.envelopes {
        match serde_json::from_str::<Envelope>(raw.get()) {
            Ok(env) if env.kind == EnvelopeKind::ContactRequest => slots.push(Err((
                Some(env.id),
                ApiError::bad_request("wrong_route", "send contact requests to /v1/contact-request"),
            ))),
            Ok(env) => {
                slots.push(Ok(envelopes.len()));
                envelopes.push(env);
            }
            Err(e) => slots.push(Err((None, ApiError::bad_request("malformed", format!("not an envelope: {e}"))))),
        }
    }
    let ids: Vec<String> = envelopes.iter().map(|e| e.id.clone()).collect();
    let mut processed: Vec<Option<Result<String, ApiError>>> =
        process(&node, envelopes).await.into_iter().map(Some).collect();
    let mut out = String::with_capacity(64 + processed.len() * 300);
    out.push_str("{\"results\":[");
    for (i, slot) in slots.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let (id, result) = match slot {
            Ok(index) => (
                Some(ids[index].clone()),
                processed[index].take().unwrap_or_else(|| Err(ApiError::internal("lost result"))),
            ),
            Err((id, e)) => (id, Err(e)),
        };
        let id_json = serde_json::to_string(&id).unwrap_or_else(|_| "null".into());
        match result {
            Ok(receipt) => out.push_str(&format!("{{\"id\":{id_json},\"ok\":true,\"receipt\":{receipt}}}")),
            Err(e) => {
                let entry =
                    serde_json::json!({"id": id, "ok": false, "status": e.status.as_u16(), "error": e.body()["error"]});
                out.push_str(&entry.to_string());
            }
        }
    }
    out.push_str("]}");
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// What an accepted envelope changes, applied in the same transaction as its acceptance.
///
/// `rotated` marks a card whose verified rotation chain moves the sender's pinned key.
enum Effect {
    Message(IncomingMessage),
    Read { message_id: String, at: i64 },
    ContactRequest { peer: Box<Peer>, request: Box<ContactRequest>, rotated: Option<Peer> },
    ContactResponse { peer: Box<Peer>, body: ContactResponseBody, rotated: bool },
    KeyRotation { peer: Box<Peer>, rotated: bool },
}

struct Verified {
    index: usize,
    peer_id: String,
    id: String,
    expires_at: i64,
    kind: EnvelopeKind,
    receipt: String,
    effect: Effect,
}

/// Runs the checks on each envelope and stores the accepted ones; one result per envelope, in
/// order: the receipt JSON to answer with, or the error.
pub async fn process(node: &Arc<Node>, envelopes: Vec<Envelope>) -> Vec<Result<String, ApiError>> {
    let n = envelopes.len();
    let mut results: Vec<Option<Result<String, ApiError>>> = (0..n).map(|_| None).collect();

    // Shape first: no lookups for garbage; then senders known to be over their budget.
    for (i, env) in envelopes.iter().enumerate() {
        if let Err(e) = env.check_shape() {
            results[i] = Some(Err(ApiError::bad_request("malformed", e.to_string())));
        } else if matches!(env.kind, EnvelopeKind::Message | EnvelopeKind::Receipt)
            && let Err(e) = node.limits.throttled(&env.from.to_string())
        {
            results[i] = Some(Err(e));
        }
    }

    // One database visit for every sender and replay lookup.
    let keys: Vec<(usize, String, String)> = envelopes
        .iter()
        .enumerate()
        .filter(|(i, _)| results[*i].is_none())
        .map(|(i, e)| (i, e.from.to_string(), e.id.clone()))
        .collect();
    let lookups = node
        .db(move |s| {
            let mut peers: HashMap<String, Option<Peer>> = HashMap::new();
            let mut out = Vec::with_capacity(keys.len());
            for (i, from, id) in keys {
                if !peers.contains_key(&from) {
                    peers.insert(from.clone(), s.peer(&from)?);
                }
                out.push((i, s.accepted_receipt(&from, &id)?));
            }
            Ok((peers, out))
        })
        .await;
    let (peers, replays) = match lookups {
        Ok(v) => v,
        Err(e) => return (0..n).map(|_| Err(e.clone())).collect(),
    };

    let now = now_ms();
    let window = node.config.freshness_window_secs.saturating_mul(1000);
    let me = node.id();
    let mut key_cache: HashMap<[u8; 32], VerifyingKey> = HashMap::new();
    let mut to_verify: Vec<(usize, Sender)> = Vec::new();
    for (i, replay) in replays {
        let env = &envelopes[i];
        let peer = peers.get(&env.from.to_string()).and_then(Option::as_ref);
        let checked = sender_key(env, peer, &mut key_cache, now as i64).and_then(|key| {
            if env.to != me {
                return Err(ApiError::bad_request("wrong_recipient", format!("this node is {me}, not {}", env.to)));
            }
            if env.sent_at.abs_diff(now) > window {
                return Err(ApiError::bad_request(
                    "stale_timestamp",
                    format!(
                        "sent_at is {} s from our clock; the window is ±{} s",
                        env.sent_at.abs_diff(now) / 1000,
                        window / 1000
                    ),
                ));
            }
            if env.expires_at <= now {
                return Err(ApiError::bad_request("expired", "the envelope's expires_at has passed"));
            }
            Ok(key)
        });
        match (checked, replay) {
            (Err(e), _) => results[i] = Some(Err(e)),
            (Ok(sender), Some(receipt)) if sender.mismatch.is_none() => results[i] = Some(Ok(receipt)),
            (Ok(sender), _) => to_verify.push((i, sender)),
        }
    }

    // Signatures (batched), decryption and receipt signing: CPU work, off the async threads.
    let keys = node.keys();
    let node2 = Arc::clone(node);
    let envs = envelopes;
    let count = to_verify.len();
    let verified = node
        .crypto(count, move || {
            let entries: Vec<(Vec<u8>, &str, VerifyingKey)> =
                to_verify.iter().map(|(i, s)| (envs[*i].signing_bytes(), envs[*i].sig.as_str(), s.key)).collect();
            let verdicts = agentmesh_core::envelope::verify_signatures(&entries);
            to_verify
                .into_iter()
                .zip(verdicts)
                .map(|((i, sender), verdict)| {
                    let env = &envs[i];
                    // In flight from before the sender's rotation: signed with its previous key.
                    let verdict = match (verdict, sender.previous) {
                        (Err(_), Some(old)) => env.verify(&old),
                        (verdict, _) => verdict,
                    };
                    if let Some(mismatch) = sender.mismatch {
                        // Refused either way; recorded for the owner only when the signature
                        // proves the sender holds the presented key.
                        let error = key_mismatch_error(&mismatch.peer_id);
                        return (i, Err(error), verdict.is_ok().then_some(mismatch));
                    }
                    if let Err(e) = verdict {
                        return (i, Err(ApiError::bad_signature(e.to_string())), None);
                    }
                    // Per-sender budgets are charged only for envelopes that prove their sender:
                    // forged ones cannot drain a real peer's budget.
                    let from = env.from.to_string();
                    let budget = match env.kind {
                        EnvelopeKind::Message | EnvelopeKind::Receipt => node2.limits.message_from(&from),
                        EnvelopeKind::ContactRequest => node2.limits.contact_from_agent(&from),
                        EnvelopeKind::ContactResponse | EnvelopeKind::KeyRotation => Ok(()),
                    };
                    if let Err(e) = budget {
                        return (i, Err(e), None);
                    }
                    let peer = peers.get(&env.from.to_string()).and_then(Option::as_ref);
                    let outcome = open_and_build(&keys, env, &sender, peer, now).map(|v| Verified { index: i, ..v });
                    (i, outcome, None)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();

    let mut accepted = Vec::new();
    let mut mismatches = Vec::new();
    for (i, outcome, mismatch) in verified {
        match outcome {
            Ok(v) => accepted.push(v),
            Err(e) => results[i] = Some(Err(e)),
        }
        mismatches.extend(mismatch);
    }
    for mismatch in mismatches {
        node.record_key_mismatch(mismatch).await;
    }

    if !accepted.is_empty() {
        let settings = ApplySettings {
            now: now as i64,
            max_pending: node.config.max_pending_requests,
            keep_for: window as i64,
            grace_ms: node.config.rotation_grace_secs.saturating_mul(1000) as i64,
        };
        let stored = node.db(move |s| apply(s, accepted, &settings)).await;
        match stored {
            Ok((outcomes, events)) => {
                for (i, outcome) in outcomes {
                    results[i] = Some(outcome);
                }
                for event in events {
                    node.emit(event);
                }
            }
            Err(e) => {
                for slot in results.iter_mut().filter(|r| r.is_none()) {
                    *slot = Some(Err(e.clone()));
                }
            }
        }
    }
    let results: Vec<Result<String, ApiError>> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ApiError::internal("envelope left unprocessed"))))
        .collect();
    let refused = results.iter().filter(|r| r.is_err()).count();
    tracing::debug!(received = n, refused, "processed envelopes");
    results
}

/// What the checks before the signature found out about an envelope's sender.
struct Sender {
    /// The key the envelope must be signed with.
    key: VerifyingKey,
    /// The sender's previous key, still accepted during its rotation grace period.
    previous: Option<VerifyingKey>,
    /// The keys of the attached card, verified (contact requests, responses, key rotations).
    card_keys: Option<PublicKeys>,
    /// The card's rotation chain moves the pinned key to `card_keys`.
    rotates_pin: bool,
    /// The sender is pinned to another key and its card does not lead there: refused once the
    /// signature shows it holds the presented key, and recorded.
    mismatch: Option<KeyMismatch>,
}

fn key_mismatch_error(agent_id: &str) -> ApiError {
    ApiError::forbidden(
        "key_mismatch",
        format!(
            "{agent_id} presented a key other than the one pinned for it; refused until the owner checks the new \
             fingerprint and runs `agentmesh repin`"
        ),
    )
}

/// The key the envelope must be signed with, if its sender may send this kind at all.
///
/// Pinned keys are decompressed once per request through `cache`.
fn sender_key(
    env: &Envelope,
    peer: Option<&Peer>,
    cache: &mut HashMap<[u8; 32], VerifyingKey>,
    now: i64,
) -> Result<Sender, ApiError> {
    let mut decompress = |bytes: &[u8; 32]| -> Result<VerifyingKey, ApiError> {
        if let Some(key) = cache.get(bytes) {
            return Ok(*key);
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| ApiError::internal("a stored peer key is invalid"))?;
        cache.insert(*bytes, key);
        Ok(key)
    };
    match env.kind {
        EnvelopeKind::Message | EnvelopeKind::Receipt => match peer {
            None => Err(ApiError::forbidden(
                "unknown_sender",
                format!("{} is not a contact of this agent; send a contact request first", env.from),
            )),
            Some(p) if p.trust == Trust::Blocked => {
                Err(ApiError::forbidden("blocked_sender", format!("{} is blocked", env.from)))
            }
            Some(p) if p.trust != Trust::Trusted => {
                Err(ApiError::forbidden("untrusted_sender", format!("{} has not been approved as a contact", env.from)))
            }
            Some(p) if p.protocol != PROTOCOL_NATIVE => {
                Err(ApiError::forbidden("untrusted_sender", "this peer speaks Agent Mesh V1"))
            }
            Some(p) => Ok(Sender {
                key: decompress(&p.ed25519)?,
                previous: p.previous_key(now).map(|k| decompress(&k)).transpose()?,
                card_keys: None,
                rotates_pin: false,
                mismatch: None,
            }),
        },
        EnvelopeKind::ContactRequest | EnvelopeKind::ContactResponse | EnvelopeKind::KeyRotation => {
            let card = env
                .card
                .as_ref()
                .ok_or_else(|| ApiError::bad_request("invalid_card", "the sender's card is missing"))?;
            let keys = card.verify().map_err(|e| ApiError::bad_request("invalid_card", e.to_string()))?;
            if card.agent_id != env.from {
                return Err(ApiError::bad_request("invalid_card", "the attached card is not the sender's"));
            }
            let presented = keys.ed25519.to_bytes();
            let mut sender =
                Sender { key: keys.ed25519, previous: None, card_keys: None, rotates_pin: false, mismatch: None };
            match peer {
                Some(p) if p.trust == Trust::Blocked => {
                    return Err(ApiError::forbidden("blocked_sender", format!("{} is blocked", env.from)));
                }
                None if env.kind != EnvelopeKind::ContactRequest => {
                    return Err(ApiError::forbidden("unknown_sender", "this agent does not know the sender"));
                }
                Some(p) if p.ed25519 != presented => {
                    if p.prev_ed25519 == Some(presented) {
                        return Err(ApiError::forbidden(
                            "superseded_key",
                            format!("{} rotated away from the key this card presents", env.from),
                        ));
                    }
                    if card.key_history().contains(&p.ed25519) {
                        sender.rotates_pin = true;
                    } else {
                        sender.mismatch = Some(KeyMismatch {
                            peer_id: p.agent_id.clone(),
                            pinned_fingerprint: p.fingerprint.clone(),
                            presented_fingerprint: card.fingerprint.to_string(),
                            presented_ed25519: presented,
                            presented_x25519: Some(keys.x25519),
                            presented_card: serde_json::to_string(card).ok(),
                            direction: "inbound".into(),
                            count: 1,
                            first_at: now,
                            last_at: now,
                            resolved_at: None,
                        });
                    }
                }
                _ => {}
            }
            sender.card_keys = Some(keys);
            Ok(sender)
        }
    }
}

/// Decrypts a verified envelope and prepares its effect and signed receipt.
///
/// `sender.card_keys` are the keys of the attached card, verified by [`sender_key`] (contact
/// requests, responses and key rotations only).
fn open_and_build(
    keys: &Keys,
    env: &Envelope,
    sender: &Sender,
    peer: Option<&Peer>,
    now: u64,
) -> Result<Verified, ApiError> {
    let card_keys = sender.card_keys.as_ref();
    let rotates_pin = sender.rotates_pin;
    // Bodies sealed to our previous X25519 key (sent before the peer learnt of our rotation) open
    // during the grace period, and get a receipt signed with the key the peer still pins.
    let (plaintext, ours) = match env.open(&keys.identity) {
        Ok(p) => (p, &keys.identity),
        Err(e) => match keys.previous(now).and_then(|old| env.open(old).ok().map(|p| (p, old))) {
            Some(opened) => opened,
            None => return Err(ApiError::bad_request("undecryptable", e.to_string())),
        },
    };
    let from = env.from.to_string();
    let at = now as i64;
    let effect = match env.kind {
        EnvelopeKind::Message => {
            let text = if env.content_type.starts_with("text/") {
                String::from_utf8(plaintext)
                    .map_err(|_| ApiError::bad_request("malformed_body", "a text/* body must be UTF-8"))?
            } else {
                agentmesh_core::b64::encode(plaintext)
            };
            Effect::Message(IncomingMessage {
                peer_id: from.clone(),
                id: env.id.clone(),
                protocol: PROTOCOL_NATIVE.into(),
                encrypted: true,
                content_type: env.content_type.clone(),
                text,
                reply_to: env.reply_to.clone(),
                thread: env.thread.clone(),
                created_at: env.created_at as i64,
                received_at: at,
            })
        }
        EnvelopeKind::Receipt => {
            let body: ReceiptBody = parse_body(&plaintext)?;
            if body.status != "read" {
                return Err(ApiError::bad_request("malformed_body", "receipt status must be \"read\""));
            }
            Effect::Read { message_id: body.message_id, at: body.at as i64 }
        }
        EnvelopeKind::ContactRequest => {
            let body: ContactRequestBody = parse_body(&plaintext)?;
            if !is_request_id(&body.request_id) {
                return Err(ApiError::bad_request("malformed_body", "request_id must be req_ followed by 32 hex"));
            }
            if body.purpose.chars().count() > 1000 {
                return Err(ApiError::bad_request("malformed_body", "purpose is limited to 1000 characters"));
            }
            let peer = peer_from_card(env.card.as_ref(), card_keys, peer, at)?;
            let rotated = rotates_pin.then(|| peer.clone());
            let request = ContactRequest {
                request_id: body.request_id,
                direction: Direction::Incoming,
                peer_id: from.clone(),
                peer_name: Some(peer.name.clone()),
                fingerprint: Some(peer.fingerprint.clone()),
                purpose: body.purpose,
                status: RequestStatus::Pending,
                reason: None,
                protocol: PROTOCOL_NATIVE.into(),
                created_at: at,
                decided_at: None,
            };
            Effect::ContactRequest { peer: Box::new(peer), request: Box::new(request), rotated }
        }
        EnvelopeKind::ContactResponse => {
            let body: ContactResponseBody = parse_body(&plaintext)?;
            let peer = peer_from_card(env.card.as_ref(), card_keys, peer, at)?;
            Effect::ContactResponse { peer: Box::new(peer), body, rotated: rotates_pin }
        }
        EnvelopeKind::KeyRotation => {
            let _: serde_json::Map<String, serde_json::Value> = parse_body(&plaintext)?;
            let peer = peer_from_card(env.card.as_ref(), card_keys, peer, at)?;
            Effect::KeyRotation { peer: Box::new(peer), rotated: rotates_pin }
        }
    };
    let receipt = DeliveryReceipt::sign(ours, &env.id, env.from, now);
    let receipt = serde_json::to_string(&receipt).map_err(ApiError::internal)?;
    Ok(Verified {
        index: 0,
        peer_id: from,
        id: env.id.clone(),
        expires_at: env.expires_at as i64,
        kind: env.kind,
        receipt,
        effect,
    })
}

fn parse_body<T: serde::de::DeserializeOwned>(plaintext: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(plaintext)
        .map_err(|e| ApiError::bad_request("malformed_body", format!("decrypted body: {e}")))
}

/// `req_` followed by 32 lowercase hex characters.
pub fn is_request_id(s: &str) -> bool {
    s.strip_prefix("req_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The peer record for a sender whose card [`sender_key`] already verified (`keys`).
fn peer_from_card(
    card: Option<&AgentCard>,
    keys: Option<&PublicKeys>,
    known: Option<&Peer>,
    now: i64,
) -> Result<Peer, ApiError> {
    let (Some(card), Some(keys)) = (card, keys) else {
        return Err(ApiError::bad_request("invalid_card", "the sender's card is missing"));
    };
    let endpoint = card
        .endpoints
        .first()
        .cloned()
        .or_else(|| known.map(|p| p.endpoint.clone()))
        .ok_or_else(|| ApiError::bad_request("invalid_card", "the card lists no endpoint"))?;
    Ok(Peer {
        agent_id: card.agent_id.to_string(),
        name: card.name.clone(),
        protocol: PROTOCOL_NATIVE.into(),
        endpoint,
        ed25519: keys.ed25519.to_bytes(),
        x25519: Some(keys.x25519),
        fingerprint: card.fingerprint.to_string(),
        card: serde_json::to_string(card).ok(),
        trust: known.map(|p| p.trust).unwrap_or(Trust::Pending),
        first_seen: now,
        last_seen: now,
        alias: None,
        prev_ed25519: None,
        prev_until: None,
    })
}

type Applied = (Vec<(usize, Result<String, ApiError>)>, Vec<Event>);

struct ApplySettings {
    now: i64,
    max_pending: u32,
    /// Replay records are kept this long (ms) past an envelope's expiry.
    keep_for: i64,
    /// A rotated peer's previous key is honoured this long (ms).
    grace_ms: i64,
}

/// Moves a peer's pin along its verified rotation chain and reports it.
fn rotate_pin(
    s: &Store,
    peer: &Peer,
    settings: &ApplySettings,
    events: &mut Vec<Event>,
) -> agentmesh_store::Result<()> {
    if s.rotate_peer_key(peer, settings.now.saturating_add(settings.grace_ms))? {
        tracing::info!(peer = %peer.agent_id, fingerprint = %peer.fingerprint, "contact rotated its keys; pin updated");
        events.push(Event::KeyRotated { peer_id: peer.agent_id.clone(), fingerprint: peer.fingerprint.clone() });
    }
    Ok(())
}

/// Stores accepted envelopes and their effects; runs inside one transaction.
fn apply(s: &Store, accepted: Vec<Verified>, settings: &ApplySettings) -> agentmesh_store::Result<Applied> {
    let (now, max_pending) = (settings.now, settings.max_pending);
    let mut outcomes = Vec::with_capacity(accepted.len());
    let mut events = Vec::new();
    let mut touched: Vec<String> = Vec::new();
    for v in accepted {
        let index = v.index;
        // Contact responses are refused unless they answer a request we sent; check before
        // recording anything.
        if let Effect::ContactResponse { body, .. } = &v.effect {
            let pending = s.pending_outgoing_to(&v.peer_id)?;
            if !pending.contains(&body.request_id) {
                outcomes.push((
                    index,
                    Err(ApiError::bad_request("unknown_request", "no pending contact request with that id")),
                ));
                continue;
            }
        }
        if let Effect::ContactRequest { peer, request, rotated } = &v.effect {
            let replay = s.accepted_receipt(&v.peer_id, &v.id)?.is_some();
            if !replay && s.pending_incoming()? >= i64::from(max_pending) {
                outcomes.push((index, Err(ApiError::too_many_pending(max_pending))));
                continue;
            }
            if s.request(&request.request_id)?.is_some() && !replay {
                outcomes.push((
                    index,
                    Err(ApiError::conflict("duplicate_request", "a contact request with this id exists")),
                ));
                continue;
            }
            if let Some(rotated) = rotated {
                rotate_pin(s, rotated, settings, &mut events)?;
            }
            if !s.upsert_peer(peer)? {
                outcomes.push((index, Err(key_mismatch_error(&v.peer_id))));
                continue;
            }
        }
        let keep_until = v.expires_at.max(now).saturating_add(settings.keep_for);
        if let Some(earlier) = s.record_accepted(&v.peer_id, &v.id, v.kind.as_str(), &v.receipt, now, keep_until)? {
            outcomes.push((index, Ok(earlier)));
            continue;
        }
        match v.effect {
            Effect::Message(m) => {
                s.insert_incoming(&m)?;
                events.push(Event::Message { message: (&m).into() });
            }
            Effect::Read { message_id, at } => {
                if s.mark_outgoing_read(&v.peer_id, &message_id, at)? {
                    events.push(Event::Status {
                        id: message_id,
                        peer_id: v.peer_id.clone(),
                        kind: "message".into(),
                        status: "read".into(),
                        at,
                        error: None,
                    });
                }
            }
            Effect::ContactRequest { peer, request, .. } => {
                if peer.trust == Trust::Discovered {
                    s.set_trust(&peer.agent_id, Trust::Pending)?;
                }
                s.insert_request(&request)?;
                if let Some(stored) = s.request(&request.request_id)? {
                    events.push(Event::ContactRequest { request: stored });
                }
            }
            Effect::ContactResponse { peer, body, rotated } => {
                if rotated {
                    rotate_pin(s, &peer, settings, &mut events)?;
                }
                s.upsert_peer(&peer)?;
                let status = if body.accepted { RequestStatus::Approved } else { RequestStatus::Rejected };
                s.decide_request(&body.request_id, status, body.reason.as_deref(), now)?;
                let trust = if body.accepted { Trust::Trusted } else { Trust::Discovered };
                if peer.trust != Trust::Blocked {
                    s.set_trust(&v.peer_id, trust)?;
                }
                events.push(Event::ContactResponse {
                    request_id: body.request_id,
                    peer_id: v.peer_id.clone(),
                    accepted: body.accepted,
                });
            }
            Effect::KeyRotation { peer, rotated } => {
                if rotated {
                    rotate_pin(s, &peer, settings, &mut events)?;
                }
                s.upsert_peer(&peer)?;
            }
        }
        if !touched.contains(&v.peer_id) {
            touched.push(v.peer_id.clone());
        }
        outcomes.push((index, Ok(v.receipt)));
    }
    for peer in touched {
        s.touch_peer(&peer, now)?;
    }
    Ok((outcomes, events))
}
