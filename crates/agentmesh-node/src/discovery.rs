//! Finding agents: probing HTTP endpoints for an agent card, and recording what was found.
//!
//! A probe of a base URL asks for our native card (`GET /v1/card`) and, failing that, the Agent
//! Mesh V1 discovery document (`GET /agent-mesh/discovery`, `../shared/PROTOCOLS.md` §1). Each
//! request has its own timeout and a 64 KiB response cap. Found agents are recorded as
//! `discovered`: discovery never implies trust, and a key already pinned for the id is never
//! replaced by a probe.

use std::time::Duration;

use agentmesh_api::control::Recorded;
use agentmesh_core::{AgentId, Protocol};
use agentmesh_store::Store;
use serde::Serialize;
use serde_json::Value;

use crate::carrier::http::HttpCarrier;
use crate::carrier::{Carriers, ProbeError};

pub use agentmesh_domain::carrier::MAX_DOCUMENT_BYTES;

/// An agent found at an endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    /// Its agent id as its card states it.
    pub agent_id: String,
    /// Display name.
    pub name: String,
    /// The base URL probed.
    pub endpoint: String,
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// Fingerprint as the card states it.
    pub fingerprint: String,
    /// Whether the card (or V1 document) verified: self-signature, id and fingerprint derived
    /// from the key. Only verified finds are recorded.
    pub signature_valid: bool,
    /// Why it did not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The card or V1 agent document as served.
    #[serde(skip)]
    pub document: Value,
}

/// Probes `base` (no trailing slash) for an agent, each request bounded by `timeout`.
/// `Ok(None)`: something answered, but not an agent; `Err`: nothing answered.
pub async fn probe(http: &reqwest::Client, base: &str, timeout: Duration) -> Result<Option<Found>, String> {
    let carriers = Carriers::new(vec![std::sync::Arc::new(HttpCarrier::new(http.clone()))]);
    let endpoint = base.parse().unwrap_or_else(|never| match never {});
    // The native card first; a connection failure there means nothing listens.
    let card = match crate::native::fetch_card(&carriers, &endpoint, Some(timeout)).await {
        Err(ProbeError::Unreachable(why)) => return Err(why),
        card => card.ok(),
    };
    if let Some(card) = card {
        let verdict = card.verify();
        return Ok(Some(Found {
            agent_id: card.agent_id.to_string(),
            name: card.name.clone(),
            endpoint: base.to_owned(),
            protocol: Protocol::Native,
            fingerprint: card.fingerprint.to_string(),
            signature_valid: verdict.is_ok(),
            problem: verdict.err().map(|e| e.to_string()),
            document: serde_json::to_value(&card).unwrap_or(Value::Null),
        }));
    }
    let Ok(agent) = crate::compat::agent_mesh_v1::fetch_agent(&carriers, &endpoint, Some(timeout)).await else {
        return Ok(None);
    };
    let verdict = agent.validate();
    Ok(Some(Found {
        agent_id: agent.agent_id.clone(),
        name: agent.display_name.clone(),
        endpoint: base.to_owned(),
        protocol: Protocol::AgentMeshV1,
        fingerprint: agent.fingerprint.clone(),
        signature_valid: verdict.is_ok(),
        problem: verdict.err().map(|e| e.to_string()),
        document: serde_json::to_value(&agent).unwrap_or(Value::Null),
    }))
}

/// Verifies a find again (the caller may be another process) and stores it as discovered, with
/// the protocols this build speaks. `me` is our own id: a scan that reaches ourselves records
/// nothing.
pub fn record(
    store: &Store,
    protocol: Protocol,
    endpoint: &str,
    document: &Value,
    me: AgentId,
) -> agentmesh_store::Result<Recorded> {
    crate::service::discovery::record(&crate::launch::standard_adapters(), store, protocol, endpoint, document, me)
}
