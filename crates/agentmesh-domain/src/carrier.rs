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

use std::sync::Arc;
use std::time::Duration;

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
}

/// The node's carriers, in order of preference.
pub struct Carriers(Vec<Arc<dyn Carrier>>);

impl Carriers {
    /// The carriers registered, the first one preferred where several reach an endpoint.
    pub fn new(all: Vec<Arc<dyn Carrier>>) -> Self {
        Carriers(all)
    }

    /// The carrier that reaches `endpoint`, if any.
    pub fn reaching(&self, endpoint: &Endpoint) -> Option<&dyn Carrier> {
        self.0.iter().find(|c| c.reaches(endpoint)).map(|c| &**c)
    }

    /// Sends `request` to the node at `endpoint`.
    ///
    /// Errors: no carrier reaches it (`before_send`), or the carrier's own.
    pub async fn send(&self, endpoint: &Endpoint, request: Request) -> Result<Response, CarrierError> {
        match self.reaching(endpoint) {
            Some(carrier) => {
                let path = request.path.clone();
                let sent = carrier.send(endpoint, request).await;
                if let Err(e) = &sent {
                    tracing::debug!(carrier = carrier.name(), %endpoint, %path, error = %e, "no answer");
                }
                sent
            }
            None => Err(CarrierError {
                before_send: true,
                message: format!("this node has no carrier that reaches {endpoint}"),
            }),
        }
    }

    /// The endpoint `peer` is reached at: the first of [`endpoints_of`] a carrier reaches.
    pub fn route(&self, peer: &Peer) -> Option<Endpoint> {
        endpoints_of(peer).into_iter().find(|e| self.reaching(e).is_some())
    }

    /// Sends `request` to `peer`'s node at its [`route`](Self::route).
    ///
    /// Errors: none of its endpoints is reachable by a carrier of ours (`before_send`), or the
    /// carrier's own.
    pub async fn send_to(&self, peer: &Peer, request: Request) -> Result<Response, CarrierError> {
        match self.route(peer) {
            Some(endpoint) => self.send(&endpoint, request).await,
            None => Err(CarrierError {
                before_send: true,
                message: format!("this node has no carrier that reaches any endpoint of {}", peer.agent_id),
            }),
        }
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

/// The endpoints `peer` is reached at, in order: the one we reach it at (where the owner told us
/// to find it, or its card's first http(s) one), then the others its card lists, in the card's
/// order, each once.
pub fn endpoints_of(peer: &Peer) -> Vec<Endpoint> {
    let mut all: Vec<Endpoint> = Vec::with_capacity(peer.endpoints.len() + 1);
    let first = std::iter::once(&peer.endpoint).filter(|e| !e.is_empty());
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
        assert_eq!(listed, ["http://127.0.0.1:9", "nostr:x", iroh.as_str()], "the endpoint in use first, each once");

        let both = Carriers::new(vec![Arc::new(IrohOnly), Arc::new(HttpOnly)]);
        assert_eq!(both.route(&peer).map(|e| e.to_string()).as_deref(), Some("http://127.0.0.1:9"));
        peer.endpoint = iroh.clone();
        assert_eq!(both.route(&peer).map(|e| e.to_string()), Some(iroh.clone()));
        let iroh_only = Carriers::new(vec![Arc::new(IrohOnly)]);
        peer.endpoint = "http://127.0.0.1:9".into();
        assert_eq!(iroh_only.route(&peer).map(|e| e.to_string()), Some(iroh), "skips what it cannot reach");
        peer.endpoints.retain(|e| !e.starts_with("iroh:"));
        assert_eq!(iroh_only.route(&peer), None);
    }
}
