//! The peer API: what other agents call. One router per protocol adapter ([`crate::native`],
//! [`crate::compat::agent_mesh_v1`]) plus gossip ([`crate::gossip`]), merged here; anything else
//! is 404 (counted against the caller's per-IP budget of other routes).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};

use crate::api_error::ApiError;
use crate::error::Error;
use crate::extract::PeerRemote;
use crate::{Node, a2a, compat, gossip, native};

/// Builds the peer API router: the routes of each protocol the node has an adapter for.
pub(crate) fn router(node: Arc<Node>) -> Router {
    let mut router = Router::new().merge(native::router()).merge(a2a::router()).merge(gossip::router());
    if node.adapters().speaks(agentmesh_core::Protocol::AgentMeshV1) {
        router = router.merge(compat::agent_mesh_v1::router());
    }
    router.fallback(not_found).layer(DefaultBodyLimit::disable()).with_state(node)
}

async fn not_found(State(node): State<Arc<Node>>, PeerRemote(remote): PeerRemote) -> ApiError {
    node.limits().other_from(remote).err().unwrap_or_else(|| Error::not_found("no such route")).into()
}
