//! The delivery worker: takes due outbox entries, hands them to their peer's adapter, records
//! receipts and retries.
//!
//! Entries are written to the outbox before any network I/O. The worker leases what it sends (its
//! `next_attempt_at` moves past the request timeout) so nothing is sent twice at once, groups
//! entries per peer within the in-flight caps, and gives each group to the
//! [`Adapter`](crate::adapter::Adapter) of the peer's protocol. A signed receipt marks an
//! entry `delivered`. A failure schedules a retry after `min(retry_base · 2^attempts, retry_max)`,
//! half of it random jitter, until `max_attempts` or the entry's expiry, after which it is
//! `failed`. A final refusal follows the trust state machine: a refused contact request closes as
//! `refused` with the peer's code, an envelope refused because the peer does not count us as a
//! contact moves our side too ([`crate::trust`]). A peer that finds our clock off is retried with
//! a fresh timestamp, and the owner is told. On start-up every lease is released, so a restarted
//! node resumes at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentmesh_api::{ClockSkew, Event, MessageStatus, TrustState};
use agentmesh_core::time::now_ms;
use agentmesh_core::{EnvelopeKind, PeerId};
use agentmesh_store::{Attempt, OutboxItem, Peer};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::adapter::Outcome;
use crate::service::contacts;
use crate::{FirstOutcome, Node};

/// Runs the worker until `shutdown`; in-flight deliveries are awaited (bounded by the request
/// timeout).
pub async fn run(node: Arc<Node>, shutdown: CancellationToken) {
    let config = node.config();
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.delivery_concurrency.max(1)));
    let inflight: Arc<Mutex<HashMap<PeerId, usize>>> = Arc::default();
    let finished = Arc::new(Notify::new());
    let lease_ms = config.outbound_timeout_ms as i64 + 5_000;
    let batch_size = config.max_batch_envelopes.max(1);
    // Enough rows to fill every free delivery slot with a full batch.
    let fetch_limit = (batch_size * config.per_peer_inflight.max(1) * 2).min(4096) as u32;
    let per_peer = config.per_peer_inflight.max(1);
    loop {
        let now = now_ms() as i64;
        let check_rotation = node.rotation_pending();
        let busy: HashMap<PeerId, usize> = inflight.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // One visit to the database: what is due, grouped per peer within the in-flight caps,
        // leased, with each peer's record and the time the next entry falls due.
        let taken = node
            .db(move |s| {
                let mut groups: Vec<(PeerId, Vec<OutboxItem>)> = Vec::new();
                let mut held_back = false;
                // After a key rotation, a contact first gets the `key_rotation` envelope, alone:
                // everything else is signed with the new key it announces.
                let rotating = if check_rotation { s.peers_awaiting(EnvelopeKind::KeyRotation)? } else { Vec::new() };
                // A peer's contact envelopes leave one at a time, oldest first (`due` lists only
                // the oldest pending one per peer): a change never overtakes an earlier one, even
                // when that one waits for a retry.
                for item in s.due(now, fetch_limit)? {
                    if is_contact(item.kind) {
                        // Alone in its request, like a contact request always is.
                        if !rotating.contains(&item.peer_id) {
                            let running = busy.get(&item.peer_id).copied().unwrap_or(0);
                            let chunks = groups.iter().filter(|(p, _)| *p == item.peer_id).count();
                            if running + chunks < per_peer {
                                groups.push((item.peer_id.clone(), vec![item]));
                            } else {
                                held_back = true;
                            }
                            continue;
                        }
                    }
                    if rotating.contains(&item.peer_id) {
                        if item.kind == EnvelopeKind::KeyRotation && !busy.contains_key(&item.peer_id) {
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
            node.set_rotation_pending(false);
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
                _ = node.outbox_woken() => {}
                _ = finished.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait_ms.max(1))) => {}
            }
        }
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_millis(config.outbound_timeout_ms + 1_000), tracker.wait()).await;
}

/// Whether `kind` is one of the contact envelopes that go to a peer in order.
fn is_contact(kind: EnvelopeKind) -> bool {
    matches!(kind, EnvelopeKind::ContactRequest | EnvelopeKind::ContactResponse | EnvelopeKind::ContactUpdate)
}

async fn deliver_group(node: &Arc<Node>, peer: Option<Peer>, items: Vec<OutboxItem>) {
    let now = now_ms() as i64;
    let mut outcomes: Vec<(OutboxItem, Outcome)> = Vec::with_capacity(items.len());
    let mut live = Vec::with_capacity(items.len());
    for item in items {
        if item.expires_at <= now {
            // Our own verdict, not the peer's: no code (a contact request ends `failed`).
            let outcome = Outcome::failed("expired before delivery");
            outcomes.push((item, outcome));
        } else {
            live.push(item);
        }
    }
    match peer {
        None => outcomes.extend(live.into_iter().map(|i| (i, Outcome::failed("the peer is unknown")))),
        Some(p) => {
            // A blocked or removed peer still hears of that (the news itself), nothing else.
            let closed = matches!(p.trust, TrustState::Blocked | TrustState::Removed);
            let (sendable, dropped): (Vec<_>, Vec<_>) =
                live.into_iter().partition(|i| !closed || i.kind == EnvelopeKind::ContactUpdate);
            let why = format!("the peer is {}", p.trust);
            outcomes.extend(dropped.into_iter().map(|i| (i, Outcome::failed(why.clone()))));
            if !sendable.is_empty() {
                outcomes.extend(node.adapters().get(p.protocol).deliver(node, &p, sendable).await);
            }
        }
    }
    record(node, outcomes).await;
}

/// Delay before the next attempt, ms: `min(base · 2^attempts, max)`, the upper half random.
fn backoff_ms(base_ms: u64, max_ms: u64, attempts: i64) -> i64 {
    let base = base_ms.max(1);
    let exp = base.saturating_mul(1u64 << attempts.clamp(0, 30)).min(max_ms.max(base));
    let half = exp / 2;
    (half + rand::random_range(0..=half)) as i64
}

/// What recording one outcome did, for the events and waiters after the commit.
struct Recorded {
    item: OutboxItem,
    status: MessageStatus,
    error: Option<String>,
    code: Option<String>,
    first: FirstOutcome,
}

async fn record(node: &Arc<Node>, outcomes: Vec<(OutboxItem, Outcome)>) {
    let now = now_ms() as i64;
    let config = node.config();
    let mut delivered = Vec::new();
    let mut attempts = Vec::new();
    let mut recorded = Vec::with_capacity(outcomes.len());
    let mut skews = Vec::new();
    // Whether each peer answered (a receipt or any reply) or could not be reached at all.
    let mut reached: HashMap<PeerId, Result<(), String>> = HashMap::new();
    for (item, outcome) in &outcomes {
        let answered = match outcome {
            Outcome::Delivered(_) => Ok(()),
            Outcome::Retry { sent: false, code: None, error, .. } => Err(error.clone()),
            Outcome::Retry { .. } | Outcome::Failed { .. } => continue,
        };
        let entry = reached.entry(item.peer_id.clone()).or_insert_with(|| answered.clone());
        if answered.is_ok() {
            *entry = Ok(());
        }
    }
    let reachability: Vec<Event> =
        reached.iter().filter_map(|(peer, answered)| node.reachability_change(peer, answered)).collect();
    for (item, outcome) in outcomes {
        let (status, error, code, first) = match outcome {
            Outcome::Delivered(receipt) => {
                delivered.push((item.id.clone(), receipt, now));
                (MessageStatus::Delivered, None, None, FirstOutcome::Delivered)
            }
            Outcome::Retry { sent, error, after_secs, code, peer_now } => {
                if let Some(peer_now) = peer_now {
                    skews.push(ClockSkew { peer_id: item.peer_id.clone(), skew_ms: peer_now as i64 - now, at: now });
                }
                let tries = item.attempts + 1;
                let backoff = backoff_ms(config.retry_base_ms, config.retry_max_ms, item.attempts);
                let next = now + backoff.max(after_secs as i64 * 1000);
                // A clock the peer finds off is ours to fix, not a reason to drop the owner's
                // message: such attempts back off like any other but are not counted, so they
                // end only when the envelope expires.
                let clock_refusal = peer_now.is_some();
                let counted = tries - item.clock_refusals;
                let out_of_attempts = !clock_refusal && counted >= i64::from(config.max_attempts);
                if out_of_attempts || next >= item.expires_at {
                    let why = format!("gave up after {tries} attempts: {error}");
                    let first = FirstOutcome::Failed { code: code.clone(), message: why.clone() };
                    attempts.push(Attempt {
                        id: item.id.clone(),
                        status: MessageStatus::Failed,
                        next_attempt_at: now,
                        error: why.clone(),
                        code: None,
                        clock_refusal: false,
                    });
                    (MessageStatus::Failed, Some(why), None, first)
                } else {
                    let status = if sent { MessageStatus::Sent } else { MessageStatus::Queued };
                    let first = FirstOutcome::Retrying { code: code.clone(), message: error.clone() };
                    attempts.push(Attempt {
                        id: item.id.clone(),
                        status,
                        next_attempt_at: next,
                        error: error.clone(),
                        code: code.clone(),
                        clock_refusal,
                    });
                    (status, Some(error), code, first)
                }
            }
            Outcome::Failed { error, code } => {
                let first = FirstOutcome::Failed { code: code.clone(), message: error.clone() };
                attempts.push(Attempt {
                    id: item.id.clone(),
                    status: MessageStatus::Failed,
                    next_attempt_at: now,
                    error: error.clone(),
                    code: code.clone(),
                    clock_refusal: false,
                });
                (MessageStatus::Failed, Some(error), code, first)
            }
        };
        if status == MessageStatus::Failed {
            tracing::warn!(id = %item.id, peer = %item.peer_id, kind = %item.kind, error = error.as_deref().unwrap_or(""), "delivery failed");
        }
        recorded.push(Recorded { item, status, error, code, first });
    }
    tracing::debug!(delivered = delivered.len(), retried_or_failed = attempts.len(), "recorded delivery outcomes");
    let failures: Vec<(PeerId, EnvelopeKind, String, Option<String>)> = recorded
        .iter()
        .filter(|r| r.status == MessageStatus::Failed)
        .map(|r| (r.item.peer_id.clone(), r.item.kind, r.item.id.clone(), r.code.clone()))
        .collect();
    for skew in &skews {
        tracing::warn!(peer = %skew.peer_id, skew_ms = skew.skew_ms, "the peer reports our clock is off; retrying with fresh timestamps");
        node.note_clock_skew(skew.clone());
    }
    // Logged: receipts and final failures (retries show in the outbox, not as events), clock
    // reports, and peers going offline or coming back.
    let mut events: Vec<Event> = skews.into_iter().map(|skew| Event::ClockSkew { skew }).collect();
    events.extend(reachability);
    events.extend(
        recorded.iter().filter(|r| matches!(r.status, MessageStatus::Delivered | MessageStatus::Failed)).map(|r| {
            Event::Status {
                id: r.item.id.clone(),
                peer_id: r.item.peer_id.clone(),
                kind: r.item.kind,
                status: r.status,
                error: r.error.clone(),
                code: r.code.clone(),
            }
        }),
    );
    let stored = node
        .transact(move |tx| {
            tx.mark_delivered(&delivered)?;
            for attempt in &attempts {
                tx.mark_attempt(attempt)?;
            }
            // Final refusals move the trust state machine (each on its own: one peer's trouble
            // must not keep the others' outcomes from being stored).
            for (peer, kind, id, code) in failures {
                if let Err(e) = tx.atomic(|tx| contacts::delivery_failed(tx, &peer, kind, &id, code.as_deref())) {
                    tracing::warn!(peer = %peer, error = %e, "could not follow a refused delivery");
                }
            }
            for event in events {
                tx.emit(event);
            }
            Ok(())
        })
        .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "could not record delivery outcomes; they will be retried");
        return;
    }
    for (peer, answered) in reached {
        node.set_reachability(peer, answered.is_ok());
    }
    for r in recorded {
        if r.status == MessageStatus::Delivered {
            node.clear_clock_skew(&r.item.peer_id);
        }
        node.delivery_outcome(&r.item.id, r.first);
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
}
