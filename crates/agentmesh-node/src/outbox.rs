//! The delivery worker: takes due outbox entries, delivers them, records receipts and retries.
//!
//! Entries are written to the outbox before any network I/O. The worker leases what it sends (its
//! `next_attempt_at` moves past the request timeout) so nothing is sent twice at once, groups
//! entries per peer, posts native ones in batches to `/v1/batch` (contact requests one by one to
//! `/v1/contact-request`) and V1 ones one by one. A signed receipt marks an entry `delivered`. A
//! failure schedules a retry after `min(retry_base · 2^attempts, retry_max)`, half of it random
//! jitter, until `max_attempts` or the entry's expiry, after which it is `failed`. On start-up
//! every lease is released, so a restarted node resumes at once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentmesh_core::time::now_ms;
use agentmesh_core::{DeliveryReceipt, Envelope, PROTOCOL_AGENT_MESH_V1};
use agentmesh_store::{OutboxItem, Peer, Trust};
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Event, Node, compat, net};

const KEY_ROTATION: &str = "key_rotation";

/// The result of one delivery attempt of one entry.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Acknowledged; the receipt JSON to store.
    Delivered(String),
    /// Try again later. `sent` when the peer may have received it (status `sent`), otherwise it
    /// stays `queued`.
    Retry {
        /// Whether the request reached the peer.
        sent: bool,
        /// What went wrong.
        error: String,
        /// Not before this many seconds (a rate-limiting peer's `retry_after`); 0 for none.
        after_secs: u64,
    },
    /// Give up now (the peer refused it for good, or it is invalid).
    Failed(String),
}

/// Runs the worker until `shutdown`; in-flight deliveries are awaited (bounded by the request
/// timeout).
pub async fn run(node: Arc<Node>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(node.config.delivery_concurrency.max(1)));
    let inflight: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let finished = Arc::new(Notify::new());
    let lease_ms = node.config.outbound_timeout_ms as i64 + 5_000;
    let batch_size = node.config.max_batch_envelopes.max(1);
    // Enough rows to fill every free delivery slot with a full batch.
    let fetch_limit = (batch_size * node.config.per_peer_inflight.max(1) * 2).min(4096) as u32;
    let per_peer = node.config.per_peer_inflight.max(1);
    loop {
        let now = now_ms() as i64;
        let check_rotation = node.rotation_pending.load(Ordering::SeqCst);
        let busy: HashMap<String, usize> = inflight.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // One visit to the database: what is due, grouped per peer within the in-flight caps,
        // leased, with each peer's record and the time the next entry falls due.
        let taken = node
            .db(move |s| {
                let mut groups: Vec<(String, Vec<OutboxItem>)> = Vec::new();
                let mut held_back = false;
                // After a key rotation, a contact first gets the `key_rotation` envelope, alone:
                // everything else is signed with the new key it announces.
                let rotating = if check_rotation { s.peers_awaiting(KEY_ROTATION)? } else { Vec::new() };
                for item in s.due(now, fetch_limit)? {
                    if rotating.contains(&item.peer_id) {
                        if item.kind == KEY_ROTATION && !busy.contains_key(&item.peer_id) {
                            groups.push((item.peer_id.clone(), vec![item]));
                        } else {
                            held_back = true;
                        }
                        continue;
                    }
                    let running = busy.get(&item.peer_id).copied().unwrap_or(0);
                    let chunks = groups.iter().filter(|(p, _)| *p == item.peer_id).count();
                    match groups.iter_mut().rev().find(|(p, _)| *p == item.peer_id) {
                        Some((_, items)) if items.len() < batch_size => items.push(item),
                        _ if running + chunks < per_peer => groups.push((item.peer_id.clone(), vec![item])),
                        _ => held_back = true,
                    }
                }
                let ids: Vec<String> =
                    groups.iter().flat_map(|(_, items)| items.iter().map(|i| i.id.clone())).collect();
                s.lease(&ids, now + lease_ms)?;
                let mut with_peers = Vec::with_capacity(groups.len());
                for (peer_id, items) in groups {
                    let peer = s.peer(&peer_id)?;
                    with_peers.push((peer_id, peer, items));
                }
                Ok((with_peers, held_back, s.next_due()?, check_rotation && rotating.is_empty()))
            })
            .await;
        let (groups, held_back, next, rotation_done) = match taken {
            Ok(t) => t,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if rotation_done {
            node.rotation_pending.store(false, Ordering::SeqCst);
        }
        for (peer_id, peer, items) in groups {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { break };
            *inflight.lock().unwrap_or_else(|p| p.into_inner()).entry(peer_id.clone()).or_default() += 1;
            let (node, inflight, finished) = (Arc::clone(&node), Arc::clone(&inflight), Arc::clone(&finished));
            tracker.spawn(async move {
                deliver_group(&node, peer, items).await;
                let mut busy = inflight.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = busy.get_mut(&peer_id) {
                    *n -= 1;
                    if *n == 0 {
                        busy.remove(&peer_id);
                    }
                }
                drop(permit);
                finished.notify_one();
            });
        }

        let wait_ms = next.map(|t| (t - now_ms() as i64).clamp(0, 1_000)).unwrap_or(1_000) as u64;
        if held_back {
            // Everything due waits for a delivery slot: new entries cannot go out sooner, so
            // wake on a completion rather than re-reading the outbox on every enqueue.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = finished.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(1_000)) => {}
            }
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = node.outbox_wake.notified() => {}
                _ = finished.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait_ms.max(1))) => {}
            }
        }
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_millis(node.config.outbound_timeout_ms + 1_000), tracker.wait()).await;
}

async fn deliver_group(node: &Arc<Node>, peer: Option<Peer>, items: Vec<OutboxItem>) {
    let now = now_ms() as i64;
    let mut outcomes: Vec<(OutboxItem, Outcome)> = Vec::with_capacity(items.len());
    let mut live = Vec::with_capacity(items.len());
    for item in items {
        if item.expires_at <= now {
            outcomes.push((item, Outcome::Failed("expired before delivery".into())));
        } else {
            live.push(item);
        }
    }
    match peer {
        None => outcomes.extend(live.into_iter().map(|i| (i, Outcome::Failed("peer is unknown (removed?)".into())))),
        Some(p) if p.trust == Trust::Blocked => {
            outcomes.extend(live.into_iter().map(|i| (i, Outcome::Failed("peer is blocked".into()))));
        }
        Some(p) if p.protocol == PROTOCOL_AGENT_MESH_V1 => {
            for item in live {
                let outcome = compat::agent_mesh_v1::deliver(node, &p, &item).await;
                outcomes.push((item, outcome));
            }
        }
        Some(p) => {
            let (requests, others): (Vec<_>, Vec<_>) = live.into_iter().partition(|i| i.kind == "contact_request");
            for item in requests {
                let outcome = deliver_single(node, &p, &item).await;
                outcomes.push((item, outcome));
            }
            if !others.is_empty() {
                outcomes.extend(deliver_batch(node, &p, others).await);
            }
        }
    }
    record(node, outcomes).await;
}

/// Signs each entry's envelope with a fresh `sent_at`; `None` for corrupt payloads.
fn sign_all(node: &Node, items: &[OutboxItem]) -> Vec<Option<Envelope>> {
    let now = now_ms();
    let keys = node.keys();
    items
        .iter()
        .map(|i| serde_json::from_str::<Envelope>(&i.payload).ok().map(|e| e.sign(&keys.identity, now)))
        .collect()
}

/// Checks a receipt's fields against the entry it answers; the signature is checked by
/// [`verify_receipts`].
fn parse_receipt(node: &Node, peer: &Peer, item: &OutboxItem, receipt: &Value) -> Result<DeliveryReceipt, Outcome> {
    let Ok(receipt) = serde_json::from_value::<DeliveryReceipt>(receipt.clone()) else {
        return Err(Outcome::Retry { sent: true, error: "peer returned a malformed receipt".into(), after_secs: 0 });
    };
    let matches = receipt.message_id == item.id
        && receipt.from.to_string() == peer.agent_id
        && receipt.to == node.id()
        && receipt.status == "delivered";
    if !matches {
        return Err(Outcome::Retry {
            sent: true,
            error: "peer returned a receipt for something else".into(),
            after_secs: 0,
        });
    }
    Ok(receipt)
}

/// Verifies receipts signed by `peer` (one batch) and turns each into an outcome.
async fn verify_receipts(
    node: &Node,
    peer: &Peer,
    receipts: Vec<(OutboxItem, DeliveryReceipt)>,
) -> Vec<(OutboxItem, Outcome)> {
    let Ok(key) = VerifyingKey::from_bytes(&peer.ed25519) else {
        return receipts.into_iter().map(|(i, _)| (i, Outcome::Failed("stored peer key is invalid".into()))).collect();
    };
    // A peer that rotated signs with its new key; until it has heard our own rotation
    // announcement it may still sign with the previous one, honoured during the grace period.
    let previous = peer.previous_key(now_ms() as i64).and_then(|k| VerifyingKey::from_bytes(&k).ok());
    node.crypto(receipts.len(), move || {
        let entries: Vec<(Vec<u8>, &str, VerifyingKey)> =
            receipts.iter().map(|(_, r)| (r.signing_bytes(), r.sig.as_str(), key)).collect();
        let verdicts = agentmesh_core::envelope::verify_signatures(&entries);
        let outcomes: Vec<Outcome> = receipts
            .iter()
            .zip(verdicts)
            .map(|((_, receipt), verdict)| match (verdict, previous) {
                (Err(_), Some(old)) => receipt.verify(&old).map_err(|_| ()),
                (verdict, _) => verdict.map_err(|_| ()),
            })
            .zip(receipts.iter())
            .map(|(verdict, (_, receipt))| match verdict {
                Ok(()) => Outcome::Delivered(serde_json::to_string(receipt).unwrap_or_default()),
                Err(_) => Outcome::Retry {
                    sent: true,
                    error: "peer returned a receipt that does not verify".into(),
                    after_secs: 0,
                },
            })
            .collect();
        receipts.into_iter().map(|(item, _)| item).zip(outcomes).collect()
    })
    .await
    .unwrap_or_default()
}

/// Maps a refusal (status + JSON error body) to an outcome: overload and server errors are
/// retried, any other refusal is final.
fn refusal(status: u16, error: &Value) -> Outcome {
    let code = error.get("code").and_then(Value::as_str).unwrap_or("unknown");
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    let text = format!("peer refused ({status} {code}): {message}");
    if let Some(secs) = error.get("retry_after").and_then(Value::as_u64) {
        return Outcome::Retry { sent: true, error: text, after_secs: secs.min(86_400) };
    }
    match status {
        408 | 425 | 429 | 500..=599 => Outcome::Retry { sent: true, error: text, after_secs: 0 },
        _ => Outcome::Failed(text),
    }
}

async fn deliver_single(node: &Arc<Node>, peer: &Peer, item: &OutboxItem) -> Outcome {
    let Some(Some(envelope)) = sign_all(node, std::slice::from_ref(item)).pop() else {
        return Outcome::Failed("corrupt outbox payload".into());
    };
    let route = match item.kind.as_str() {
        "contact_request" => "contact-request",
        "contact_response" => "contact-response",
        "receipt" => "receipt",
        _ => "message",
    };
    let url = format!("{}/v1/{route}", peer.endpoint.trim_end_matches('/'));
    let body = serde_json::to_string(&envelope).unwrap_or_default();
    match net::post_json(&node.http, &url, body, node.config.max_response_bytes).await {
        Err(e) => Outcome::Retry { sent: !e.before_send, error: e.message, after_secs: 0 },
        Ok((status, bytes)) => {
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if status.is_success() {
                match parse_receipt(node, peer, item, value.get("receipt").unwrap_or(&Value::Null)) {
                    Ok(receipt) => verify_receipts(node, peer, vec![(item.clone(), receipt)])
                        .await
                        .pop()
                        .map(|(_, o)| o)
                        .unwrap_or(Outcome::Failed("lost".into())),
                    Err(outcome) => outcome,
                }
            } else {
                refusal(status.as_u16(), value.get("error").unwrap_or(&Value::Null))
            }
        }
    }
}

#[derive(Deserialize)]
struct BatchResponse {
    results: Vec<BatchResult>,
}

#[derive(Deserialize)]
struct BatchResult {
    id: Option<String>,
    ok: bool,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    receipt: Value,
    #[serde(default)]
    error: Value,
}

async fn deliver_batch(node: &Arc<Node>, peer: &Peer, items: Vec<OutboxItem>) -> Vec<(OutboxItem, Outcome)> {
    let node2 = Arc::clone(node);
    let (items, signed) = node
        .crypto(items.len(), move || {
            let signed = sign_all(&node2, &items);
            (items, signed)
        })
        .await
        .unwrap_or_default();
    let mut body = String::from("{\"envelopes\":[");
    let mut sendable = Vec::new();
    let mut out = Vec::new();
    for (item, envelope) in items.into_iter().zip(signed) {
        match envelope.and_then(|e| serde_json::to_string(&e).ok()) {
            Some(json) => {
                if !sendable.is_empty() {
                    body.push(',');
                }
                body.push_str(&json);
                sendable.push(item);
            }
            None => out.push((item, Outcome::Failed("corrupt outbox payload".into()))),
        }
    }
    body.push_str("]}");
    let url = format!("{}/v1/batch", peer.endpoint.trim_end_matches('/'));
    match net::post_json(&node.http, &url, body, node.config.max_response_bytes).await {
        Err(e) => out.extend(
            sendable
                .into_iter()
                .map(|i| (i, Outcome::Retry { sent: !e.before_send, error: e.message.clone(), after_secs: 0 })),
        ),
        Ok((status, bytes)) if !status.is_success() => {
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let outcome = refusal(status.as_u16(), value.get("error").unwrap_or(&Value::Null));
            out.extend(sendable.into_iter().map(|i| (i, outcome.clone())));
        }
        Ok((_, bytes)) => {
            let parsed: Option<BatchResponse> = serde_json::from_slice(&bytes).ok();
            let mut by_id: HashMap<String, BatchResult> = parsed
                .map(|p| p.results.into_iter().filter_map(|r| r.id.clone().map(|id| (id, r))).collect())
                .unwrap_or_default();
            let mut receipts = Vec::new();
            for item in sendable {
                match by_id.remove(&item.id) {
                    None => out.push((
                        item,
                        Outcome::Retry {
                            sent: true,
                            error: "peer's batch reply lacks this message".into(),
                            after_secs: 0,
                        },
                    )),
                    Some(r) if r.ok => match parse_receipt(node, peer, &item, &r.receipt) {
                        Ok(receipt) => receipts.push((item, receipt)),
                        Err(outcome) => out.push((item, outcome)),
                    },
                    Some(r) => out.push((item, refusal(r.status, &r.error))),
                }
            }
            out.extend(verify_receipts(node, peer, receipts).await);
        }
    }
    out
}

/// Delay before the next attempt, ms: `min(base · 2^attempts, max)`, the upper half random.
fn backoff_ms(base_ms: u64, max_ms: u64, attempts: i64) -> i64 {
    let base = base_ms.max(1);
    let exp = base.saturating_mul(1u64 << attempts.clamp(0, 30)).min(max_ms.max(base));
    let half = exp / 2;
    (half + rand::random_range(0..=half)) as i64
}

async fn record(node: &Arc<Node>, outcomes: Vec<(OutboxItem, Outcome)>) {
    let now = now_ms() as i64;
    let mut delivered = Vec::new();
    let mut attempts = Vec::new();
    let mut events = Vec::new();
    for (item, outcome) in outcomes {
        let (status, error) = match outcome {
            Outcome::Delivered(receipt) => {
                delivered.push((item.id.clone(), receipt, now));
                ("delivered".to_owned(), None)
            }
            Outcome::Retry { sent, error, after_secs } => {
                let tries = item.attempts + 1;
                let backoff = backoff_ms(node.config.retry_base_ms, node.config.retry_max_ms, item.attempts);
                let next = now + backoff.max(after_secs as i64 * 1000);
                if tries >= node.config.max_attempts as i64 || next >= item.expires_at {
                    let why = format!("gave up after {tries} attempts: {error}");
                    attempts.push((item.id.clone(), "failed", now, why.clone()));
                    ("failed".to_owned(), Some(why))
                } else {
                    let status = if sent { "sent" } else { "queued" };
                    attempts.push((item.id.clone(), status, next, error.clone()));
                    (status.to_owned(), Some(error))
                }
            }
            Outcome::Failed(error) => {
                attempts.push((item.id.clone(), "failed", now, error.clone()));
                ("failed".to_owned(), Some(error))
            }
        };
        if status == "failed" {
            tracing::warn!(id = %item.id, peer = %item.peer_id, kind = %item.kind, error = ?error, "delivery failed");
        }
        events.push(Event::Status { id: item.id, peer_id: item.peer_id, kind: item.kind, status, at: now, error });
    }
    tracing::debug!(delivered = delivered.len(), retried_or_failed = attempts.len(), "recorded delivery outcomes");
    let stored = node
        .db(move |s| {
            s.mark_delivered(&delivered)?;
            for (id, status, next, error) in &attempts {
                s.mark_attempt(id, status, *next, error)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "could not record delivery outcomes; they will be retried");
        return;
    }
    for event in events {
        node.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds_with_jitter() {
        for attempts in 0..40 {
            let expected = (500u64 << attempts.min(30)).min(300_000) as i64;
            for _ in 0..50 {
                let d = backoff_ms(500, 300_000, attempts);
                assert!(
                    d >= expected / 2 && d <= expected,
                    "attempt {attempts}: {d} not in [{}, {expected}]",
                    expected / 2
                );
            }
        }
    }

    #[test]
    fn overload_and_server_errors_retry_other_refusals_are_final() {
        let error = serde_json::json!({"code": "x", "message": "y"});
        let limited = serde_json::json!({"code": "rate_limited", "message": "y", "retry_after": 42});
        assert!(matches!(refusal(429, &limited), Outcome::Retry { sent: true, after_secs: 42, .. }));
        for status in [408, 425, 429, 500, 502, 503] {
            assert!(matches!(refusal(status, &error), Outcome::Retry { sent: true, .. }), "{status}");
        }
        for status in [400, 401, 403, 404, 413, 415] {
            assert!(matches!(refusal(status, &error), Outcome::Failed(_)), "{status}");
        }
    }
}
