//! The node's identity, addresses and counters.

use std::sync::Arc;

use agentmesh_api::Status;
use agentmesh_core::time::now_ms;

use crate::Node;
use crate::error::Error;

/// `GET /control/status`; `listen` is the peer API's bound URL.
pub async fn status(node: &Arc<Node>, listen: &str) -> Result<Status, Error> {
    let (stats, mismatches) = node.db(|s| Ok((s.stats()?, s.key_mismatches(true)?))).await?;
    let keys = node.keys();
    let previous_key_until =
        keys.previous.as_ref().map(|(_, until)| *until).filter(|u| *u > now_ms()).map(|u| u as i64);
    Ok(Status {
        agent_id: node.id(),
        name: keys.card.name.clone(),
        fingerprint: keys.identity.fingerprint().to_string(),
        key_rotations: keys.identity.rotations().len(),
        previous_key_until,
        key_mismatches: mismatches.iter().map(|m| m.view()).collect(),
        clock_skews: node.clock_skews(),
        running: true,
        listen: Some(listen.to_owned()),
        endpoint: Some(node.endpoint().to_owned()),
        endpoints: node.endpoints().to_vec(),
        paths: node.carriers().path_counts(),
        relays: node
            .carriers()
            .all()
            .iter()
            .flat_map(|c| c.relays())
            .map(|(url, connected)| agentmesh_api::RelayState { url, connected })
            .collect(),
        protocols: keys.card.protocols.clone(),
        capabilities: keys.card.capabilities.clone(),
        peers: stats.peers,
        trusted_peers: stats.trusted_peers,
        pending_requests: stats.pending_requests,
        outgoing_requests: stats.outgoing_requests,
        unread_messages: stats.unread_messages,
        outbox_depth: stats.outbox_depth,
        failed_deliveries: stats.failed_deliveries,
        warnings: node.warnings().to_vec(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}
