//! Bootstrap and gossip: how agents on different networks learn of each other.
//!
//! Every node answers two peer routes:
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /v1/gossip/announce` | the caller's signed [`PeerRecord`] (≤ `max_contact_request_bytes`) | `{"peers":[records]}` |
//! | `GET /v1/gossip/peers` | — | `{"peers":[records]}` |
//!
//! Answers hold the answering node's own fresh record, then up to 50 unexpired records (1,000
//! with `bootstrap_mode`, and at most 2 MiB), most recently seen first, each passed on exactly as
//! its agent signed it. A node with
//! bootstraps (`agentmesh up --bootstrap URL`, or `bootstrap` in config.toml) announces a fresh
//! record of itself to each of them every `gossip_interval_secs` (records live
//! `peer_record_ttl_secs`), stores what they answer, and announces itself to up to
//! `gossip_fanout` newly learnt peers, whose answers it stores too.
//!
//! Every record is verified before it is stored or passed on — card self-signature, id derived
//! from the key (through any rotation chain), record signature, not expired — and may not move an
//! id to a key that neither its stored entry nor a pinned peer's key leads to. The directory is
//! bounded (`max_directory_peers`, least recently seen dropped first). Nothing learnt here is
//! trusted: it only lets the owner find agents to send contact requests to.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use agentmesh_api::{ErrorCode, Source};
use agentmesh_core::endpoint::Endpoint;
use agentmesh_core::time::now_ms;
use agentmesh_core::{PeerId, PeerRecord, Protocol};
use agentmesh_store::{DirectoryEntry, Store};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::Node;
use crate::api_error::{Respond, read_json_body};
use crate::carrier::Request;
use crate::error::Error;

/// Records in an answer from an ordinary node.
const REPLY_RECORDS: usize = 50;
/// Records in an answer from a bootstrap node.
const BOOTSTRAP_REPLY_RECORDS: usize = 1_000;
/// Largest answer we build, bytes.
const MAX_REPLY_BYTES: usize = 2 * 1024 * 1024;
/// Most records taken from one answer.
const MAX_INGEST: usize = 1_000;

/// The gossip routes, merged into the peer API.
pub(crate) fn router() -> Router<Arc<Node>> {
    Router::new().route("/v1/gossip/announce", post(announce)).route("/v1/gossip/peers", get(peers))
}

async fn announce(
    State(node): State<Arc<Node>>,
    crate::extract::PeerRemote(remote): crate::extract::PeerRemote,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = node.limits().other_from(remote) {
        return e.respond();
    }
    let limit = node.config().max_contact_request_bytes;
    let bytes = match read_json_body(&headers, body, limit, "request body", node.body_timeout()).await {
        Ok(b) => b,
        Err(e) => return e.respond(),
    };
    let record: PeerRecord = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return Error::malformed(format!("not a peer record: {e}")).respond(),
    };
    let announcer = PeerId::from(record.card.agent_id);
    match ingest(&node, vec![record], Source::Gossip).await {
        Ok(mut results) => {
            if let Some(Err(e)) = results.pop() {
                return e.respond();
            }
        }
        Err(e) => return e.respond(),
    }
    reply(&node, Some(announcer)).await
}

async fn peers(
    State(node): State<Arc<Node>>,
    crate::extract::PeerRemote(remote): crate::extract::PeerRemote,
) -> Response {
    if let Err(e) = node.limits().other_from(remote) {
        return e.respond();
    }
    reply(&node, None).await
}

/// `{"peers":[…]}`: unexpired records, most recently seen first, without `exclude`'s.
async fn reply(node: &Arc<Node>, exclude: Option<PeerId>) -> Response {
    let limit = if node.config().bootstrap_mode { BOOTSTRAP_REPLY_RECORDS } else { REPLY_RECORDS };
    let entries = node.db(move |s| Ok(s.directory(now_ms() as i64, None, &[], limit + 1)?)).await;
    let entries = match entries {
        Ok(e) => e,
        Err(e) => return e.respond(),
    };
    // Our own record first: whoever asks learns the node it asked, too.
    let mut out = String::from("{\"peers\":[");
    out.push_str(&own_record(node));
    for e in entries.iter().filter(|e| Some(&e.agent_id) != exclude.as_ref()).take(limit) {
        if out.len() + e.record.len() > MAX_REPLY_BYTES {
            break;
        }
        out.push(',');
        out.push_str(&e.record);
    }
    out.push_str("]}");
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// Our signed record, re-signed only when half its validity has passed or our keys rotated, so
/// receivers see (and skip re-verifying) the same record until then.
pub(crate) fn own_record(node: &Node) -> String {
    let keys = node.keys();
    let fingerprint = keys.identity.fingerprint().to_string();
    let ttl_ms =
        node.config().peer_record_ttl_secs.max(1).saturating_mul(1000).min(agentmesh_core::record::MAX_RECORD_TTL_MS);
    let now = now_ms();
    let mut cached = node.own_record().lock().unwrap_or_else(|p| p.into_inner());
    if let Some((issued, fp, json)) = cached.as_ref()
        && *fp == fingerprint
        && now < issued.saturating_add(ttl_ms / 2)
    {
        return json.clone();
    }
    let json =
        serde_json::to_string(&PeerRecord::sign(&keys.identity, keys.card.clone(), now, ttl_ms)).unwrap_or_default();
    *cached = Some((now, fingerprint, json.clone()));
    json
}

/// Verifies records and stores the valid ones in the directory under `source`. One result per
/// record: whether it was new, or why it was refused.
pub(crate) async fn ingest(
    node: &Arc<Node>,
    records: Vec<PeerRecord>,
    source: Source,
) -> Result<Vec<Result<bool, Error>>, Error> {
    let now = now_ms();
    let skew = node.config().freshness_window_secs.saturating_mul(1000);
    let me = node.id();
    // A record identical to the one held was verified when it was stored: skip the signatures.
    let texts: Vec<String> = records.iter().map(|r| serde_json::to_string(r).unwrap_or_default()).collect();
    let ids: Vec<PeerId> = records.iter().map(|r| PeerId::from(r.card.agent_id)).collect();
    let held: Vec<bool> = node
        .db(move |s| {
            let mut out = Vec::with_capacity(ids.len());
            for (id, text) in ids.iter().zip(&texts) {
                out.push(s.directory_entry(id)?.is_some_and(|e| e.record == *text));
            }
            Ok(out)
        })
        .await?;
    let fresh: Vec<usize> = held.iter().enumerate().filter(|(_, h)| !**h).map(|(i, _)| i).collect();
    let mut results: Vec<Result<bool, Error>> = held.iter().map(|_| Ok(false)).collect();
    let records: Vec<PeerRecord> =
        records.into_iter().enumerate().filter(|(i, _)| fresh.contains(i)).map(|(_, r)| r).collect();
    // Card and record signatures: CPU work, off the async threads for more than a few.
    let checked = node
        .crypto(records.len(), move || {
            records
                .into_iter()
                .map(|r| {
                    if r.card.agent_id == me {
                        return Err(Error::invalid(ErrorCode::SelfRecord, "that is this agent's own record"));
                    }
                    let keys =
                        r.verify(now, skew).map_err(|e| Error::invalid(ErrorCode::InvalidRecord, e.to_string()))?;
                    let entry = DirectoryEntry {
                        agent_id: PeerId::from(r.card.agent_id),
                        name: r.card.name.clone(),
                        // Gossip travels over HTTP: the first endpoint of the card it can use.
                        endpoint: agentmesh_core::endpoint::first_http(&r.card.endpoints).unwrap_or_default(),
                        protocol: Protocol::Native,
                        fingerprint: r.card.fingerprint.to_string(),
                        ed25519: keys.ed25519.to_bytes(),
                        capabilities: r.card.capabilities.clone(),
                        record: serde_json::to_string(&r).map_err(Error::internal)?,
                        source,
                        first_seen: now as i64,
                        last_seen: now as i64,
                        expires_at: r.expires_at as i64,
                    };
                    if entry.endpoint.is_empty() {
                        return Err(Error::invalid(ErrorCode::InvalidRecord, "the card lists no http(s) endpoint"));
                    }
                    Ok((entry, r.card.key_history()))
                })
                .collect::<Vec<_>>()
        })
        .await?;
    let cap = node.config().max_directory_peers.max(1);
    let stored = node
        .db(move |s| {
            let mut out = Vec::with_capacity(checked.len());
            for item in checked {
                out.push(item.and_then(|(entry, history)| store_entry(s, entry, &history, cap)));
            }
            Ok(out)
        })
        .await?;
    for (i, result) in fresh.into_iter().zip(stored) {
        results[i] = result;
    }
    Ok(results)
}

/// Stores a verified entry unless it would move the id to a key its history does not lead to
/// from the key we already hold for it (directory entry or pinned peer: `key_mismatch`).
/// Returns whether it was new.
fn store_entry(s: &Store, entry: DirectoryEntry, history: &[[u8; 32]], cap: usize) -> Result<bool, Error> {
    let known = s.directory_entry(&entry.agent_id)?.map(|e| e.ed25519);
    let pinned = s.peer(&entry.agent_id)?.map(|p| p.ed25519);
    for key in known.iter().chain(pinned.iter()) {
        if *key != entry.ed25519 && !history.contains(key) {
            return Err(Error::refused(
                ErrorCode::KeyMismatch,
                format!("{} is known with another key", entry.agent_id),
            ));
        }
    }
    // An older record than the one held (a replay) refreshes nothing.
    if let Some(held) = s.directory_entry(&entry.agent_id)?
        && held.ed25519 == entry.ed25519
        && held.expires_at >= entry.expires_at
    {
        return Ok(false);
    }
    Ok(s.upsert_directory(&entry, cap)?)
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    peers: Vec<&'a RawValue>,
}

/// Announces `record` to `base` and ingests its answer; returns the ids newly learnt.
async fn announce_to(
    node: &Arc<Node>,
    base: &str,
    record: &str,
    source: Source,
) -> Result<Vec<DirectoryEntry>, String> {
    let endpoint: Endpoint = base.parse().unwrap_or_else(|never| match never {});
    let url = format!("{endpoint}/v1/gossip/announce");
    let request = Request::post_json("/v1/gossip/announce", record.to_owned());
    let response = node.carriers().send(&endpoint, request).await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status;
    let body = response.read(node.config().max_response_bytes).await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])));
    }
    let answer: Answer<'_> = serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
    let records: Vec<PeerRecord> =
        answer.peers.iter().take(MAX_INGEST).filter_map(|r| serde_json::from_str(r.get()).ok()).collect();
    let ids: Vec<PeerId> = records.iter().map(|r| PeerId::from(r.card.agent_id)).collect();
    let results = ingest(node, records, source).await.map_err(|e| e.to_string())?;
    let new_ids: Vec<PeerId> =
        ids.into_iter().zip(results).filter_map(|(id, r)| matches!(r, Ok(true)).then_some(id)).collect();
    let entries = node
        .db(move |s| {
            let mut out = Vec::new();
            for id in &new_ids {
                out.extend(s.directory_entry(id)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(entries)
}

/// Announces us to the bootstraps every `gossip_interval_secs`, and to up to `gossip_fanout`
/// newly learnt peers each round, until `shutdown`.
pub(crate) async fn run(node: Arc<Node>, bootstraps: Vec<String>, shutdown: CancellationToken) {
    if bootstraps.is_empty() {
        return;
    }
    let interval = Duration::from_secs(node.config().gossip_interval_secs.max(1));
    let mut announced: HashSet<PeerId> = HashSet::new();
    loop {
        let record = own_record(&node);
        let mut learnt = Vec::new();
        for base in &bootstraps {
            match announce_to(&node, base, &record, Source::Bootstrap).await {
                Ok(new) => learnt.extend(new),
                Err(e) => tracing::warn!(bootstrap = %base, error = %e, "bootstrap announce failed"),
            }
        }
        let fresh: Vec<DirectoryEntry> =
            learnt.into_iter().filter(|e| !announced.contains(&e.agent_id)).take(node.config().gossip_fanout).collect();
        for entry in fresh {
            announced.insert(entry.agent_id.clone());
            if let Err(e) = announce_to(&node, &entry.endpoint, &record, Source::Gossip).await {
                tracing::debug!(peer = %entry.agent_id, error = %e, "gossip announce failed");
            }
        }
        if announced.len() > 100_000 {
            announced.clear();
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
