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

/// What a carrier is started with, before the node exists: the home (a carrier that names nodes
/// by key keeps its key there), the settings, the owner's profile, our identity and the node's
/// outbound HTTP client.
pub(crate) struct StartContext<'a> {
    /// The node's home.
    pub(crate) home: &'a crate::home::Home,
    /// Settings, with `agentmesh up`'s flags applied.
    pub(crate) config: &'a crate::Config,
    /// The owner's profile (name, capabilities, the endpoint `init` was given).
    pub(crate) profile: &'a crate::Profile,
    /// Our current keys.
    #[expect(dead_code, reason = "no carrier needs the agent's keys yet: iroh's key is its own, bound by the card")]
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
    /// The card lists these endpoints before those of carriers started without it (else in the
    /// order the carriers were added).
    pub(crate) preferred: bool,
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

    /// Binds or connects what it needs; `None` when the settings do not ask for it (iroh
    /// without `[iroh]`).
    ///
    /// Errors: what stops the start; a [`crate::LaunchError`] where the owner can fix it.
    fn start<'a>(self: Box<Self>, cx: &'a StartContext<'a>) -> BoxFuture<'a, anyhow::Result<Option<Started>>>;
}

/// An admitted peer connection; releases its place in [`crate::admission`] when dropped.
pub(crate) struct Admitted {
    pub(crate) node: Arc<Node>,
    pub(crate) id: u64,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.node.admission().release(self.id);
    }
}

/// A request being served on a connection (so the connection is not idle); counted out when
/// dropped, however the request ends.
pub(crate) struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    /// Counts a request in on `active`.
    pub(crate) fn start(active: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        active.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(Arc::clone(active))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
