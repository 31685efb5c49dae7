//! How bytes reach a peer's node: one [`Carrier`] per way of carrying them (HTTP over TCP today),
//! chosen per endpoint. What the bytes mean is an adapter's business ([`crate::adapter`]);
//! a carrier moves one request to a node and its answer back, and knows nothing of envelopes.
//!
//! Every exchange with a peer's node goes through [`Carriers`]: delivering envelopes, checking a
//! peer's health, fetching its card, gossip and file chunks. A peer is reached at the first of
//! its endpoints ([`endpoints_of`]) that a registered carrier reaches. Adding a carrier means one
//! module of `agentmesh-node` that implements [`Carrier`] (outbound), `carrier::start::Accept`
//! (inbound) and `carrier::start::StartCarrier` (both, started with what the node knows at
//! start-up), registered with one line where the node is built (`launch::launch`, through its
//! `NodeBuilder`).
//!
//! The request/answer shape is HTTP's (a method, a path under the endpoint's base, a JSON body,
//! an optional bearer credential, a status and a streamed body), so the peer API's routes and
//! their error bodies (`{"error":{"code":…,"message":…}}`) mean the same whatever carries them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentmesh_core::endpoint::Endpoint;
use agentmesh_store::Peer;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

/// A peer node's answer status: an HTTP status code (RFC 9110 §15), whatever carried the
/// request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    /// 200.
    pub const OK: Status = Status(200);
    /// 429: the peer limits us.
    pub const TOO_MANY_REQUESTS: Status = Status(429);

    /// 2xx.
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }

    /// 5xx.
    pub fn is_server_error(self) -> bool {
        (500..600).contains(&self.0)
    }

    /// The code.
    pub fn as_u16(self) -> u16 {
        self.0
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Largest card or discovery document read from a probed endpoint, bytes.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// A request's method: the peer APIs read with `GET` and submit JSON with `POST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Read a resource; no body.
    Get,
    /// Submit a JSON body.
    Post,
}

/// One request to a peer's node.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET` or `POST`.
    pub method: Method,
    /// Path (and query) under the endpoint's base, starting with `/`: `/v1/batch`.
    pub path: String,
    /// The JSON body of a `POST`; empty for a `GET`.
    pub body: Bytes,
    /// A bearer credential (RFC 6750 §2.1) for routes that take one. Never logged.
    pub bearer: Option<String>,
    /// Time allowed for the whole exchange up to the answer's head; `None`: the carrier's own
    /// (the node's `outbound_timeout_ms`).
    pub timeout: Option<Duration>,
}

impl Request {
    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Self {
        Request { method: Method::Get, path: path.into(), body: Bytes::new(), bearer: None, timeout: None }
    }

    /// `POST path` with a JSON `body`.
    pub fn post_json(path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Request { method: Method::Post, path: path.into(), body: body.into(), bearer: None, timeout: None }
    }

    /// With a bearer credential.
    pub fn bearer(mut self, token: String) -> Self {
        self.bearer = Some(token);
        self
    }

    /// With a timeout of its own.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A peer node's answer: its status and a body read as it arrives.
pub struct Response {
    /// The status the node answered.
    pub status: Status,
    /// The body's length as the node declared it, bytes, if it did.
    declared_len: Option<u64>,
    body: BoxStream<'static, Result<Bytes, CarrierError>>,
}

impl Response {
    /// An answer of `status` whose body arrives on `body`.
    pub fn new(
        status: Status,
        declared_len: Option<u64>,
        body: BoxStream<'static, Result<Bytes, CarrierError>>,
    ) -> Self {
        Response { status, declared_len, body }
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, CarrierError> {
        self.body.next().await.transpose()
    }

    /// The whole body, refused when longer than `cap` bytes.
    pub async fn read(mut self, cap: usize) -> Result<Bytes, CarrierError> {
        let too_long = || CarrierError { before_send: false, message: format!("response larger than {cap} bytes") };
        if self.declared_len.is_some_and(|n| n > cap as u64) {
            return Err(too_long());
        }
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if body.len() + chunk.len() > cap {
                return Err(too_long());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }
}

/// Why a request produced no (complete) answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarrierError {
    /// `true` when nothing reached the peer (no connection was made), so it cannot have seen the
    /// request: an envelope stays `queued` rather than `sent`.
    pub before_send: bool,
    /// What went wrong, without secrets (no credential is ever part of it).
    pub message: String,
}

impl std::fmt::Display for CarrierError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CarrierError {}

/// One way of carrying requests to peers' nodes.
pub trait Carrier: Send + Sync {
    /// Its name in logs and status: `http`.
    fn name(&self) -> &'static str;

    /// Whether it can carry requests to `endpoint`.
    fn reaches(&self, endpoint: &Endpoint) -> bool;

    /// Sends `request` to the node at `endpoint` (one it [`reaches`](Self::reaches)) and
    /// returns the answer's head; its body is read from the [`Response`].
    fn send<'a>(&'a self, endpoint: &'a Endpoint, request: Request) -> BoxFuture<'a, Result<Response, CarrierError>>;

    /// Where its connection to `endpoint` runs now, when it keeps one and knows (iroh: a direct
    /// address or a relay, with QUIC's round-trip estimate); `None` otherwise.
    fn path(&self, endpoint: &Endpoint) -> Option<LivePath> {
        let _ = endpoint;
        None
    }

    /// The relay servers it keeps a connection to (URL, whether the connection is up now);
    /// none by default.
    fn relays(&self) -> Vec<(String, bool)> {
        Vec::new()
    }
}

/// Where a carrier's connection runs, as it knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivePath {
    /// `direct` (straight to an address) or `relayed` (through a relay server).
    pub kind: &'static str,
    /// The address or relay URL.
    pub via: String,
    /// The connection's round-trip time estimate.
    pub rtt: Option<Duration>,
}

/// The path a peer is reached on: which endpoint, which carrier, and how it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathReport {
    /// The endpoint (as [`Endpoint`]'s `Display` writes it).
    pub endpoint: String,
    /// The carrier's name: `http`, `iroh`.
    pub carrier: &'static str,
    /// `http`, `direct` or `relayed`.
    pub kind: &'static str,
    /// The address or relay URL, when the carrier knows it.
    pub via: Option<String>,
    /// Round-trip time: the carrier's live estimate, else the last exchange's time to its answer.
    pub rtt: Option<Duration>,
}

/// Most endpoints whose health is remembered; past it, the least recently used are forgotten.
pub const MAX_PATHS: usize = 16_384;
/// How long an endpoint that failed is passed over before it is tried first again; doubles per
/// failure in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest it is passed over.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A request dropped unanswered after this long counts against its path.
pub const GAVE_UP_AFTER: Duration = Duration::from_secs(1);

/// A request on its way; notes its path as failed when dropped unanswered after
/// [`GAVE_UP_AFTER`].
struct Waiting<'a> {
    carriers: &'a Carriers,
    endpoint: &'a Endpoint,
    started: Instant,
    armed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.armed && self.started.elapsed() >= GAVE_UP_AFTER {
            self.carriers.note(self.endpoint, None);
        }
    }
}

/// How one endpoint has fared lately.
#[derive(Clone, Debug, Default)]
struct Health {
    /// Failures in a row.
    failures: u32,
    /// Passed over until then (after a failure).
    rest_until: Option<Instant>,
    /// Time to the answer's head of the last exchange that got one.
    rtt: Option<Duration>,
    /// When it last answered.
    answered: Option<Instant>,
    /// Last used (for eviction).
    used: Option<Instant>,
}

/// The node's carriers, in order of preference, and how each endpoint they reached has fared
/// (path choice: a peer's endpoints are tried in its card's order, those that failed lately
/// last; a failure falls back to the next, and the better path is tried first again once its
/// rest is over).
pub struct Carriers {
    all: Vec<Arc<dyn Carrier>>,
    health: Mutex<HashMap<String, Health>>,
    /// [`FIRST_BACKOFF`] (shorter in tests).
    first_backoff: Duration,
}

impl Carriers {
    /// The carriers registered, the first one preferred where several reach an endpoint.
    pub fn new(all: Vec<Arc<dyn Carrier>>) -> Self {
        Carriers { all, health: Mutex::new(HashMap::new()), first_backoff: FIRST_BACKOFF }
    }

    /// The carriers, in order.
    pub fn all(&self) -> &[Arc<dyn Carrier>] {
        &self.all
    }

    /// The carrier that reaches `endpoint`, if any.
    pub fn reaching(&self, endpoint: &Endpoint) -> Option<&dyn Carrier> {
        self.all.iter().find(|c| c.reaches(endpoint)).map(|c| &**c)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Health>> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `request` to the node at `endpoint`.
    ///
    /// Errors: no carrier reaches it (`before_send`), or the carrier's own.
    pub async fn send(&self, endpoint: &Endpoint, request: Request) -> Result<Response, CarrierError> {
        match self.reaching(endpoint) {
            Some(carrier) => {
                let path = request.path.clone();
                // A caller that gives up waiting (a stalled download, a shutdown) drops this
                // future: a path that kept it waiting that long counts as failed.
                let mut waiting = Waiting { carriers: self, endpoint, started: Instant::now(), armed: true };
                let sent = carrier.send(endpoint, request).await;
                waiting.armed = false;
                match &sent {
                    Ok(_) => self.note(endpoint, Some(waiting.started.elapsed())),
                    Err(e) => {
                        tracing::debug!(carrier = carrier.name(), %endpoint, %path, error = %e, "no answer");
                        self.note(endpoint, None);
                    }
                }
                sent
            }
            None => Err(CarrierError {
                before_send: true,
                message: format!("this node has no carrier that reaches {endpoint}"),
            }),
        }
    }

    /// Records an exchange with `endpoint`: answered after `rtt`, or failed (`None`).
    fn note(&self, endpoint: &Endpoint, rtt: Option<Duration>) {
        let now = Instant::now();
        let mut table = self.table();
        if table.len() >= MAX_PATHS && !table.contains_key(&endpoint.to_string()) {
            let oldest = table.iter().min_by_key(|(_, h)| h.used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                table.remove(&oldest);
            }
        }
        let health = table.entry(endpoint.to_string()).or_default();
        health.used = Some(now);
        match rtt {
            Some(rtt) => {
                *health =
                    Health { failures: 0, rest_until: None, rtt: Some(rtt), answered: Some(now), used: Some(now) };
            }
            None => {
                health.failures = health.failures.saturating_add(1);
                let rest =
                    self.first_backoff.saturating_mul(1 << health.failures.saturating_sub(1).min(16)).min(MAX_BACKOFF);
                health.rest_until = Some(now + rest);
            }
        }
    }

    /// `peer`'s endpoints that a carrier reaches, in the order they are tried: [`endpoints_of`]'s,
    /// those resting after a failure last (soonest back first).
    pub fn candidates(&self, peer: &Peer) -> Vec<Endpoint> {
        let now = Instant::now();
        let table = self.table();
        let mut ready = Vec::new();
        let mut resting = Vec::new();
        for endpoint in endpoints_of(peer).into_iter().filter(|e| self.reaching(e).is_some()) {
            match table.get(&endpoint.to_string()).and_then(|h| h.rest_until).filter(|t| *t > now) {
                Some(until) => resting.push((until, endpoint)),
                None => ready.push(endpoint),
            }
        }
        resting.sort_by_key(|(until, _)| *until);
        ready.extend(resting.into_iter().map(|(_, e)| e));
        ready
    }

    /// The endpoint `peer` is reached at first: the first of its [`candidates`](Self::candidates).
    pub fn route(&self, peer: &Peer) -> Option<Endpoint> {
        self.candidates(peer).into_iter().next()
    }

    /// The path `peer` was last reached on: the first of its candidates that answered, with what
    /// its carrier knows of it now.
    pub fn path(&self, peer: &Peer) -> Option<PathReport> {
        let candidates = self.candidates(peer);
        let endpoint = {
            let table = self.table();
            candidates
                .into_iter()
                .find(|e| table.get(&e.to_string()).is_some_and(|h| h.answered.is_some() && h.failures == 0))?
        };
        let carrier = self.reaching(&endpoint)?;
        let measured = self.table().get(&endpoint.to_string()).and_then(|h| h.rtt);
        let report = match carrier.path(&endpoint) {
            Some(live) => PathReport {
                endpoint: endpoint.to_string(),
                carrier: carrier.name(),
                kind: live.kind,
                via: Some(live.via),
                rtt: live.rtt.or(measured),
            },
            None => PathReport {
                endpoint: endpoint.to_string(),
                carrier: carrier.name(),
                kind: carrier.name(),
                via: None,
                rtt: measured,
            },
        };
        Some(report)
    }

    /// Peers' endpoints that answered their last exchange, by the kind of path: `http`, or what
    /// the carrier says (`direct`, `relayed`).
    pub fn path_counts(&self) -> agentmesh_api::PathCounts {
        let working: Vec<String> = {
            let table = self.table();
            table.iter().filter(|(_, h)| h.answered.is_some() && h.failures == 0).map(|(k, _)| k.clone()).collect()
        };
        let mut counts = agentmesh_api::PathCounts::default();
        for text in working {
            let endpoint: Endpoint = text.parse().unwrap_or_else(|never| match never {});
            let Some(carrier) = self.reaching(&endpoint) else { continue };
            match carrier.path(&endpoint).map(|p| p.kind) {
                Some("direct") => counts.direct += 1,
                Some("relayed") => counts.relayed += 1,
                None if carrier.name() == "http" => counts.http += 1,
                // A carrier that keeps connections, with none open now: not counted.
                _ => {}
            }
        }
        counts
    }

    /// Sends `request` to `peer`'s node: on each of its [`candidates`](Self::candidates) in turn
    /// until one answers (an envelope's id keeps it exactly once whichever path carried it).
    ///
    /// Errors: none of its endpoints is reachable by a carrier of ours (`before_send`), or the
    /// last endpoint's error (`before_send` only when no attempt can have reached the peer).
    pub async fn send_to(&self, peer: &Peer, request: Request) -> Result<Response, CarrierError> {
        let candidates = self.candidates(peer);
        if candidates.is_empty() {
            return Err(CarrierError {
                before_send: true,
                message: format!("this node has no carrier that reaches any endpoint of {}", peer.agent_id),
            });
        }
        let mut unsent = true;
        let mut last = None;
        for endpoint in candidates {
            match self.send(&endpoint, request.clone()).await {
                Ok(response) => return Ok(response),
                Err(e) => {
                    unsent &= e.before_send;
                    last = Some(e);
                }
            }
        }
        let last = last.map(|e| e.message).unwrap_or_default();
        Err(CarrierError { before_send: unsent, message: last })
    }

    /// [`send_to`](Self::send_to), then reads the whole answer (at most `cap` bytes).
    pub async fn exchange(&self, peer: &Peer, request: Request, cap: usize) -> Result<(Status, Bytes), CarrierError> {
        let response = self.send_to(peer, request).await?;
        let status = response.status;
        Ok((status, response.read(cap).await?))
    }

    /// An agent document (a card, a V1 discovery document) at `path` under `endpoint`: its body
    /// on a success status, at most [`MAX_DOCUMENT_BYTES`], within `timeout` (the carrier's own
    /// when `None`).
    pub async fn get_document(
        &self,
        endpoint: &Endpoint,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<Bytes, ProbeError> {
        let whole = async {
            let response = self.send(endpoint, Request::get(path)).await?;
            let status = response.status;
            Ok::<_, CarrierError>((status, response.read(MAX_DOCUMENT_BYTES).await?))
        };
        let answered = match timeout {
            Some(limit) => tokio::time::timeout(limit, whole).await.map_err(|_| {
                ProbeError::Unreachable(format!("{endpoint}{path}: no answer within {} ms", limit.as_millis()))
            })?,
            None => whole.await,
        };
        match answered {
            Ok((status, body)) if status.is_success() => Ok(body),
            Ok((status, _)) => Err(ProbeError::NotADocument(format!("{endpoint}{path} answered {status}"))),
            Err(e) => Err(ProbeError::Unreachable(format!("{endpoint}{path}: {e}"))),
        }
    }
}

/// Why an agent document (a card, a V1 discovery document) could not be had from an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// Nothing answered (connection refused, timed out, unreadable answer): what happened.
    Unreachable(String),
    /// Something answered, but not with the document: why (a status, not JSON, another shape).
    NotADocument(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Unreachable(why) | ProbeError::NotADocument(why) => f.write_str(why),
        }
    }
}

/// The endpoints `peer` is reached at, in order: those its card lists, in the card's order of
/// preference; where the owner told us to find it at an endpoint its card does not list (behind
/// a reverse proxy, say), that one first. Each once.
pub fn endpoints_of(peer: &Peer) -> Vec<Endpoint> {
    let mut all: Vec<Endpoint> = Vec::with_capacity(peer.endpoints.len() + 1);
    let listed = peer.endpoints.iter().any(|e| e.trim_end_matches('/') == peer.endpoint.trim_end_matches('/'));
    let first = std::iter::once(&peer.endpoint).filter(|e| !e.is_empty() && !listed);
    for endpoint in agentmesh_core::endpoint::parse_all(&first.chain(&peer.endpoints).cloned().collect::<Vec<_>>()) {
        if !all.contains(&endpoint) {
            all.push(endpoint);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use agentmesh_core::{PeerId, Protocol};

    use super::*;

    /// Reaches iroh endpoints only, and answers nothing.
    struct IrohOnly;

    impl Carrier for IrohOnly {
        fn name(&self) -> &'static str {
            "iroh"
        }

        fn reaches(&self, endpoint: &Endpoint) -> bool {
            matches!(endpoint, Endpoint::Iroh(_))
        }

        fn send<'a>(&'a self, _: &'a Endpoint, _: Request) -> BoxFuture<'a, Result<Response, CarrierError>> {
            Box::pin(async { Err(CarrierError { before_send: true, message: "test".into() }) })
        }
    }

    /// Reaches http(s) endpoints only, and answers nothing.
    struct HttpOnly;

    impl Carrier for HttpOnly {
        fn name(&self) -> &'static str {
            "http"
        }

        fn reaches(&self, endpoint: &Endpoint) -> bool {
            matches!(endpoint, Endpoint::Http(_))
        }

        fn send<'a>(&'a self, _: &'a Endpoint, _: Request) -> BoxFuture<'a, Result<Response, CarrierError>> {
            Box::pin(async { Err(CarrierError { before_send: true, message: "test".into() }) })
        }
    }

    #[test]
    fn a_peer_is_reached_at_its_first_endpoint_a_carrier_reaches() {
        let iroh = format!("iroh:{}", "ab".repeat(32));
        let mut peer =
            Peer::discovered(PeerId::parse("peer-x").expect("id"), "x", Protocol::Native, "http://127.0.0.1:9", 0);
        peer.endpoints = vec!["nostr:x".into(), iroh.clone(), "http://127.0.0.1:9".into()];
        let listed: Vec<String> = endpoints_of(&peer).iter().map(ToString::to_string).collect();
        assert_eq!(listed, ["nostr:x", iroh.as_str(), "http://127.0.0.1:9"], "the card's order, each once");
        peer.endpoint = "http://proxy.example".into();
        let listed: Vec<String> = endpoints_of(&peer).iter().map(ToString::to_string).collect();
        assert_eq!(listed[0], "http://proxy.example", "where the owner said, when the card does not list it");
        peer.endpoint = "http://127.0.0.1:9".into();

        let both = Carriers::new(vec![Arc::new(IrohOnly), Arc::new(HttpOnly)]);
        assert_eq!(both.route(&peer).map(|e| e.to_string()), Some(iroh.clone()));
        peer.endpoints = vec!["http://127.0.0.1:9".into(), iroh.clone()];
        assert_eq!(both.route(&peer).map(|e| e.to_string()).as_deref(), Some("http://127.0.0.1:9"));
        let iroh_only = Carriers::new(vec![Arc::new(IrohOnly)]);
        assert_eq!(iroh_only.route(&peer).map(|e| e.to_string()), Some(iroh), "skips what it cannot reach");
        peer.endpoints.retain(|e| !e.starts_with("iroh:"));
        assert_eq!(iroh_only.route(&peer), None);
    }

    /// Answers 200 at the endpoints that are up; counts what it was sent.
    struct Switchable {
        up: Mutex<HashMap<String, bool>>,
        sent: Mutex<Vec<String>>,
    }

    impl Carrier for Arc<Switchable> {
        fn name(&self) -> &'static str {
            "http"
        }

        fn reaches(&self, endpoint: &Endpoint) -> bool {
            matches!(endpoint, Endpoint::Http(_))
        }

        fn send<'a>(&'a self, endpoint: &'a Endpoint, _: Request) -> BoxFuture<'a, Result<Response, CarrierError>> {
            let key = endpoint.to_string();
            self.sent.lock().expect("lock").push(key.clone());
            let up = self.up.lock().expect("lock").get(&key).copied().unwrap_or(false);
            Box::pin(async move {
                if up {
                    Ok(Response::new(Status::OK, Some(0), futures_util::stream::empty().boxed()))
                } else {
                    Err(CarrierError { before_send: true, message: format!("{key} is down") })
                }
            })
        }
    }

    #[tokio::test]
    async fn a_failed_path_falls_back_to_the_next_and_is_tried_again_after_its_rest() {
        let (a, b) = ("http://127.0.0.1:1", "http://127.0.0.1:2");
        let fake = Arc::new(Switchable {
            up: Mutex::new(HashMap::from([(a.to_owned(), true), (b.to_owned(), true)])),
            sent: Mutex::new(Vec::new()),
        });
        let mut carriers = Carriers::new(vec![Arc::new(Arc::clone(&fake))]);
        carriers.first_backoff = Duration::from_millis(200);
        let mut peer = Peer::discovered(PeerId::parse("peer-y").expect("id"), "y", Protocol::Native, a, 0);
        peer.endpoints = vec![a.into(), b.into()];

        carriers.send_to(&peer, Request::get("/v1/card")).await.expect("answered");
        assert_eq!(carriers.path(&peer).map(|p| p.endpoint).as_deref(), Some(a), "the card's first");

        fake.up.lock().expect("lock").insert(a.into(), false);
        carriers.send_to(&peer, Request::get("/v1/card")).await.expect("answered on the second path");
        assert_eq!(*fake.sent.lock().expect("lock"), [a, a, b], "tried first, then fell back");
        assert_eq!(carriers.route(&peer).map(|e| e.to_string()).as_deref(), Some(b), "the failed path rests");
        assert_eq!(carriers.path(&peer).map(|p| p.endpoint).as_deref(), Some(b));

        fake.up.lock().expect("lock").insert(a.into(), true);
        tokio::time::sleep(Duration::from_millis(250)).await;
        carriers.send_to(&peer, Request::get("/v1/card")).await.expect("answered");
        assert_eq!(fake.sent.lock().expect("lock").last().map(String::as_str), Some(a), "back on the better path");
        assert_eq!(carriers.path(&peer).map(|p| p.endpoint).as_deref(), Some(a));

        fake.up.lock().expect("lock").insert(b.into(), false);
        fake.up.lock().expect("lock").insert(a.into(), false);
        let failed = carriers.send_to(&peer, Request::get("/v1/card")).await.err().expect("no path answers");
        assert!(failed.before_send, "nothing reached the peer");
        assert_eq!(carriers.path(&peer), None);
    }
}
