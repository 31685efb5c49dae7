//! Keeping this agent listed in a registry (`agentmesh up --registry URL`): register at start,
//! heartbeat every `registry_heartbeat_secs`, register again after three failed heartbeats or a
//! key rotation, deregister on clean shutdown. Registration failures are retried with backoff
//! (up to one heartbeat interval) and never stop the node.

use std::sync::Arc;
use std::time::Duration;

use agentmesh_registry::Registration;
use agentmesh_registry::client::RegistryClient;
use agentmesh_registry::model::Visibility;
use tokio_util::sync::CancellationToken;

use crate::Node;

/// The hostname we claim by default: the name as a DNS label, then the agent id.
pub(crate) fn default_hostname(name: &str, agent_id: &str) -> String {
    let mut label: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(40)
        .collect();
    if label.is_empty() {
        label = "agent".into();
    }
    format!("{label}-{agent_id}")
}

fn registration(node: &Node) -> Registration {
    let keys = node.keys();
    let card = &keys.card;
    Registration {
        hostname: node
            .config()
            .registry_hostname
            .clone()
            .unwrap_or_else(|| default_hostname(&card.name, &node.id().to_string())),
        display_name: card.name.clone(),
        description: node.config().registry_description.clone(),
        capabilities: card.capabilities.clone(),
        p2p_endpoint: node.endpoint().to_owned(),
        visibility: Visibility::parse(&node.config().registry_visibility),
        card: Some(card.clone()),
    }
}

/// Keeps us listed in the registry at `url` (with the node's outbound client `http`) until
/// `shutdown`, then deregisters.
pub(crate) async fn run(
    node: Arc<Node>,
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    shutdown: CancellationToken,
) {
    let client = RegistryClient::new(http, &url, api_key);
    let interval = Duration::from_secs(node.config().registry_heartbeat_secs.max(1));
    let id = node.id().to_string();
    let mut registered_as: Option<String> = None; // fingerprint of the key last registered
    let mut failures = 0u32;
    let mut backoff = Duration::from_secs(1);
    loop {
        let fingerprint = node.keys().identity.fingerprint().to_string();
        let wait = if registered_as.as_deref() != Some(fingerprint.as_str()) || failures >= 3 {
            let keys = node.keys();
            match client.register(&keys.identity, &registration(&node)).await {
                Ok(_) => {
                    tracing::info!(registry = %url, "registered");
                    registered_as = Some(fingerprint);
                    failures = 0;
                    backoff = Duration::from_secs(1);
                    interval
                }
                Err(e) => {
                    tracing::warn!(registry = %url, error = %e, "registration failed; retrying");
                    backoff = (backoff * 2).min(interval);
                    backoff
                }
            }
        } else {
            match client.heartbeat(&node.keys().identity, &id).await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(registry = %url, error = %e, failures, "heartbeat failed");
                }
            }
            interval
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if registered_as.is_some() {
        match tokio::time::timeout(Duration::from_secs(3), client.deregister(&node.keys().identity, &id)).await {
            Ok(Ok(_)) => tracing::info!(registry = %url, "deregistered"),
            Ok(Err(e)) => tracing::warn!(registry = %url, error = %e, "deregistration failed"),
            Err(_) => tracing::warn!(registry = %url, "deregistration timed out"),
        }
    }
}
