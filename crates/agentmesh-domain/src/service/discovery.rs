//! What is known of other agents: every source in one list, and recording what a scan found.

use std::sync::Arc;

use agentmesh_api::control::{AgentList, DiscoverQuery, DiscoveredArgs, DiscoveredReply, Recorded, RecordedFind};
use agentmesh_api::{KnownAgent, Source};
use agentmesh_core::time::now_ms;
use agentmesh_core::{AgentId, Protocol};
use agentmesh_store::Store;
use serde_json::Value;

use crate::Node;
use crate::adapter::Adapters;
use crate::error::Error;

/// Most finds recorded per call.
pub const MAX_DISCOVERED: usize = 4096;

/// `GET /control/discover`: the directory (bootstrap, gossip, LAN) and our peers table (scans,
/// contacts), newest first, each with its source, trust and age.
pub async fn discover(node: &Arc<Node>, q: DiscoverQuery) -> Result<AgentList, Error> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let capabilities: Vec<String> = q
        .capability
        .as_deref()
        .map(|c| c.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let query = q.query.filter(|t| !t.trim().is_empty());
    let now = now_ms() as i64;
    let age = move |seen: i64| ((now - seen).max(0) / 1000) as u64;
    let agents = node
        .db(move |s| {
            let mut out: Vec<KnownAgent> = Vec::new();
            let needle = query.as_deref().map(str::to_lowercase);
            for p in s.peers(false)? {
                let text_ok = needle.as_deref().is_none_or(|n| {
                    p.name.to_lowercase().contains(n)
                        || p.agent_id.as_str().to_lowercase().contains(n)
                        || p.alias.as_deref().is_some_and(|a| a.to_lowercase().contains(n))
                        || p.capabilities.iter().any(|c| c.to_lowercase().contains(n))
                });
                let caps_ok = capabilities.iter().all(|c| p.capabilities.iter().any(|h| h.eq_ignore_ascii_case(c)));
                if text_ok && caps_ok {
                    out.push(KnownAgent {
                        agent_id: p.agent_id.clone(),
                        name: p.name.clone(),
                        endpoint: p.endpoint.clone(),
                        protocol: p.protocol,
                        fingerprint: p.fingerprint.clone(),
                        capabilities: p.capabilities.clone(),
                        description: None,
                        source: Source::Peers,
                        trust: Some(p.trust),
                        last_seen: p.last_seen,
                        age_secs: age(p.last_seen),
                        expires_at: None,
                    });
                }
            }
            for e in s.directory(now, query.as_deref(), &capabilities, limit)? {
                if out.iter().any(|o| o.agent_id == e.agent_id) {
                    continue;
                }
                out.push(KnownAgent {
                    agent_id: e.agent_id,
                    name: e.name,
                    endpoint: e.endpoint,
                    protocol: e.protocol,
                    fingerprint: e.fingerprint,
                    capabilities: e.capabilities,
                    description: None,
                    source: e.source,
                    trust: None,
                    last_seen: e.last_seen,
                    age_secs: age(e.last_seen),
                    expires_at: Some(e.expires_at),
                });
            }
            out.sort_by_key(|a| std::cmp::Reverse(a.last_seen));
            out.truncate(limit);
            Ok(out)
        })
        .await?;
    Ok(AgentList { agents, total: None })
}

/// `POST /control/discovered`: records what a scan found, as `discovered` (never trusted);
/// each card or V1 document is verified again here, and our own is refused.
pub async fn record_discovered(node: &Arc<Node>, args: DiscoveredArgs) -> Result<DiscoveredReply, Error> {
    if args.found.len() > MAX_DISCOVERED {
        return Err(Error::TooLarge { what: "finds per call", limit: MAX_DISCOVERED });
    }
    let me = node.id();
    let node2 = Arc::clone(node);
    let recorded = node
        .db(move |s| {
            let mut out = Vec::with_capacity(args.found.len());
            for f in args.found {
                let agent_id = f.document.get("agent_id").and_then(Value::as_str).unwrap_or_default().to_owned();
                let outcome = record(node2.adapters(), s, f.protocol, &f.endpoint, &f.document, me)?;
                out.push(RecordedFind { agent_id, outcome });
            }
            Ok(out)
        })
        .await?;
    Ok(DiscoveredReply { recorded })
}

/// Verifies a find again (the caller may be another process) with the adapter of its
/// `protocol` and stores it as `discovered`; a key already pinned for its id is never replaced.
/// `me` is our own id: a scan that reaches ourselves records nothing.
pub fn record(
    adapters: &Adapters,
    store: &Store,
    protocol: Protocol,
    endpoint: &str,
    document: &Value,
    me: AgentId,
) -> agentmesh_store::Result<Recorded> {
    let now = now_ms() as i64;
    let Some(peer) = adapters.get(protocol).peer_from_document(endpoint, document, now) else {
        return Ok(Recorded::Refused);
    };
    if peer.agent_id == me {
        return Ok(Recorded::Refused);
    }
    let recorded = match store.peer(&peer.agent_id)? {
        Some(known) if known.ed25519 == peer.ed25519 => {
            store.touch_peer(&peer.agent_id, now)?;
            Recorded::Refreshed
        }
        Some(_) => Recorded::Refused,
        None if store.upsert_peer(&peer)? => Recorded::New,
        None => Recorded::Refused,
    };
    if recorded != Recorded::Refused {
        store.mark_found(&peer.agent_id)?;
    }
    Ok(recorded)
}
