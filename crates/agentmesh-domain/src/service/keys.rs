//! Our keys: rotating them, and telling contacts the new card.

use std::sync::Arc;

use agentmesh_api::TrustState;
use agentmesh_api::control::RotateReply;
use agentmesh_core::{AgentCard, Identity};

use crate::adapter::{Adapters, Capability, Outgoing};
use crate::error::Error;
use crate::home::{Home, Profile};
use crate::{Keys, Node};

const ANNOUNCED_KEY: &str = "announced_fingerprint";

/// Our card for `identity` as `profile` describes it, listing `endpoints` (in order of
/// preference) and the protocols of `adapters` (in the order they were registered).
pub fn card_for(identity: &Identity, profile: &Profile, endpoints: &[String], adapters: &Adapters) -> AgentCard {
    AgentCard::new(
        identity,
        &profile.name,
        endpoints.to_vec(),
        profile.capabilities.clone(),
        adapters.all().map(|a| a.protocol().as_str().to_owned()).collect(),
        profile.created_at,
    )
}

/// Rotates our keys (see [`Home::rotate_keys`]), installs them, and queues a `key_rotation`
/// envelope with the new card to every contact. The caller serializes rotations.
pub async fn rotate(node: &Arc<Node>, home: &Home) -> Result<RotateReply, Error> {
    let grace_ms = node.config().rotation_grace_secs.saturating_mul(1000);
    let old_fingerprint = node.keys().identity.fingerprint().to_string();
    let home = home.clone();
    let (state, profile) = tokio::task::spawn_blocking(move || {
        Ok::<_, anyhow::Error>((home.rotate_keys(grace_ms)?, home.load_profile()?))
    })
    .await
    .map_err(Error::internal)?
    .map_err(|e| Error::internal(format!("{e:#}")))?;
    let card = card_for(&state.identity, &profile, node.endpoints(), node.adapters());
    let fingerprint = state.identity.fingerprint().to_string();
    let key_rotations = state.identity.rotations().len();
    let previous_key_until = state.previous.as_ref().map(|(_, until)| *until as i64);
    node.set_keys(Keys { identity: state.identity, card, previous: state.previous });
    tracing::info!(old = %old_fingerprint, new = %fingerprint, "rotated keys");
    let contacts_told = announce_card(node).await?;
    Ok(RotateReply {
        agent_id: node.id(),
        old_fingerprint,
        fingerprint,
        key_rotations,
        previous_key_until,
        contacts_told,
    })
}

/// Queues our current card in a `key_rotation` envelope to every native contact (trusted, or
/// with a request open either way) unless it was announced already; returns how many were
/// queued. Run at start (a rotation made while the node was down) and after each rotation.
pub async fn announce_card(node: &Arc<Node>) -> Result<usize, Error> {
    let keys = node.keys();
    let fingerprint = keys.identity.fingerprint().to_string();
    let rotated = !keys.identity.rotations().is_empty();
    let told = node
        .transact(move |tx| {
            let announced = tx.meta(ANNOUNCED_KEY)?;
            if announced.as_deref() == Some(fingerprint.as_str()) || (announced.is_none() && !rotated) {
                tx.set_meta(ANNOUNCED_KEY, &fingerprint)?;
                return Ok(0);
            }
            let mut told = 0;
            for peer in tx.peers(false)? {
                let related =
                    matches!(peer.trust, TrustState::Trusted | TrustState::RequestedIn | TrustState::RequestedOut);
                if !tx.node().adapters().get(peer.protocol).can(Capability::KeyRotation) || !related {
                    continue;
                }
                let outbound =
                    tx.node().adapters().get(peer.protocol).prepare(tx.node(), &peer, Outgoing::KeyRotation)?;
                tx.enqueue(&outbound)?;
                told += 1;
            }
            tx.set_meta(ANNOUNCED_KEY, &fingerprint)?;
            Ok(told)
        })
        .await?;
    if told > 0 {
        node.set_rotation_pending(true);
        node.wake_outbox();
    }
    Ok(told)
}
