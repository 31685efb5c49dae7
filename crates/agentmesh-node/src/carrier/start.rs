//! A carrier's start-up and inbound side, which the node builder ([`crate::launch::NodeBuilder`])
//! drives: [`StartCarrier`] starts a carrier with what the node knows before it exists and
//! yields its outbound [`Carrier`], its inbound [`Accept`] and the endpoints the card lists.
//! These are the edge's business (they bind sockets and serve the peer API's router); the
//! outbound side in [`super`] is what the domain (the outbox, file downloads) uses.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::Carrier;
use crate::Node;

/// The inbound side of a carrier: takes peers' requests off its medium and hands each to the
/// peer API's router, with the [`Remote`](crate::remote::Remote) it came from in the request's
/// extensions (what [`crate::extract::PeerRemote`] reads), until `stop`; then lets the requests
/// in flight finish for a bounded time.
pub(crate) trait Accept: Send {
    /// Its name in logs: `http`.
    fn name(&self) -> &'static str;

    /// Serves `app` until `stop`.
    fn serve(self: Box<Self>, app: axum::Router, node: Arc<Node>, stop: CancellationToken) -> BoxFuture<'static, ()>;
}

/// What a carrier is started with, before the node exists: the settings, the owner's profile,
/// our identity (a carrier that names nodes by key binds its key to it) and the node's outbound
/// HTTP client.
pub(crate) struct StartContext<'a> {
    /// Settings, with `agentmesh up`'s flags applied.
    pub(crate) config: &'a crate::Config,
    /// The owner's profile (name, capabilities, the endpoint `init` was given).
    pub(crate) profile: &'a crate::Profile,
    /// Our current keys.
    #[expect(dead_code, reason = "HTTP needs no key; the iroh carrier binds its endpoint key to it")]
    pub(crate) identity: &'a agentmesh_core::Identity,
    /// The node's outbound client (timeouts set, the extra CA trusted).
    pub(crate) http: &'a reqwest::Client,
}

/// A started carrier: both of its sides and what the card advertises for it.
pub(crate) struct Started {
    /// Its outbound side.
    pub(crate) carrier: Arc<dyn Carrier>,
    /// Its inbound side, when it takes peers' requests (served once the node is built).
    pub(crate) accept: Option<Box<dyn Accept>>,
    /// Endpoints the card lists for it, in order of preference (URI strings, as in
    /// [`agentmesh_core::AgentCard::endpoints`]).
    pub(crate) endpoints: Vec<String>,
    /// Where this node serves on it, for `node.json` and the log (`http://127.0.0.1:8787`).
    pub(crate) local_url: Option<String>,
    /// A TCP address to advertise on the LAN with mDNS.
    pub(crate) lan: Option<std::net::SocketAddr>,
    /// What the owner should fix (an endpoint peers may not reach), shown by `status`.
    pub(crate) warnings: Vec<String>,
}

/// A carrier as the node builder takes it ([`crate::launch::NodeBuilder`]): started once, after the
/// home is locked and before the database opens, so a carrier that cannot start (its address in
/// use, an endpoint no peer could reach) stops the start with nothing written.
pub(crate) trait StartCarrier: Send {
    /// Its name in logs: `http`.
    fn name(&self) -> &'static str;

    /// Binds or connects what it needs.
    ///
    /// Errors: what stops the start; a [`crate::LaunchError`] where the owner can fix it.
    fn start<'a>(self: Box<Self>, cx: &'a StartContext<'a>) -> BoxFuture<'a, anyhow::Result<Started>>;
}
