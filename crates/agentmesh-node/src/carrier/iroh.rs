//! The iroh carrier: the peer API over QUIC connections dialled by public key, with hole
//! punching and relays ([iroh](https://docs.rs/iroh/1.4)). Each request travels on a
//! bidirectional stream of a connection negotiated with the ALPN [`ALPN`] (`agentmesh/1`), as
//! one HTTP/1.1 exchange (RFC 9112): the same routes, bodies, statuses and error bodies as over
//! TCP, so every envelope, receipt and check is the same whatever carried it.
//!
//! **Keys.** The endpoint authenticates with its own Ed25519 key (`<home>/keys/iroh.key`,
//! [`crate::home::Home::carrier_key`]), not the agent's: the card, signed by the agent's key,
//! lists the endpoint id (`iroh:<64 hex>?relay=…&addr=…`), which binds the two, and the key
//! stays when the agent rotates its own. TLS with raw public keys (RFC 7250) proves to a dialer
//! that it reached the id it dialled; on the accepting side the pipeline refuses an envelope
//! whose connection's key is not an iroh endpoint of its sender's card (403
//! `endpoint_mismatch`), so one agent cannot speak over another's endpoint.
//!
//! **Reach.** `[iroh] listen` is the UDP address bound (loopback unless the owner binds more);
//! `[iroh] relays` are relay servers (`agentmesh relay serve`) the endpoint stays connected to,
//! through which peers behind NATs reach it and punch holes; no discovery service is used:
//! cards, gossip and the registry carry the addresses.
//!
//! **Bounds.** Connections are admitted like TCP ones ([`crate::admission`], keyed by the remote
//! endpoint id); a peer may open [`MAX_STREAMS`] request streams at once on a connection and no
//! unidirectional one, and QUIC flow control bounds what it sends us unread
//! ([`STREAM_RECEIVE_WINDOW`], [`RECEIVE_WINDOW`]); request heads are bounded in size and time;
//! one dial at a time per peer, the connection kept for reuse while used (at most
//! [`MAX_CONNECTIONS`]), and every exchange, its answer's body included, is bounded by the
//! request's timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentmesh_core::endpoint::{Endpoint, IrohEndpoint, MAX_IROH_ADDRS};
use anyhow::Context as _;
use axum::http;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use iroh::endpoint::{Connection, presets};
use iroh::{EndpointAddr, RelayMap, RelayMode, RelayUrl};
use rustls::pki_types::CertificateDer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::start::{Accept, Admitted, Busy, StartCarrier, StartContext, Started};
use super::{Carrier, CarrierError, LivePath, Method, Request, Response, Status};
use crate::Node;
use crate::remote::Remote;

/// The ALPN (RFC 7301) of the peer API over iroh.
pub(crate) const ALPN: &[u8] = b"agentmesh/1";

/// Most connections dialled and kept for reuse; past it, closed ones go first, then any.
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// Request streams a peer may have open at once on one connection.
pub(crate) const MAX_STREAMS: u32 = 32;

/// Bytes a peer may send on one stream ahead of our reading them (QUIC flow control).
pub(crate) const STREAM_RECEIVE_WINDOW: u32 = 1 << 20;

/// Bytes a peer may send on one connection, all streams together, ahead of our reading them.
pub(crate) const RECEIVE_WINDOW: u32 = 4 << 20;

/// A kept connection unused this long is let go (its keep-alives would hold it open forever).
const KEEP_UNUSED: Duration = Duration::from_secs(60);

/// A connection that hears nothing from its peer this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Time allowed for an accepted connection's handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Carries requests to [`Endpoint::Iroh`] endpoints.
pub(crate) struct IrohCarrier {
    endpoint: iroh::Endpoint,
    /// The node's `outbound_timeout_ms`, for requests without a timeout of their own.
    timeout: Duration,
    /// Connections we dialled, by endpoint id, with when each was last used.
    connections: Mutex<HashMap<[u8; 32], (Connection, Instant)>>,
    /// One dial at a time per endpoint id: concurrent sends wait for it and share its connection.
    dialing: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
}

impl IrohCarrier {
    fn new(endpoint: iroh::Endpoint, timeout: Duration) -> Self {
        IrohCarrier { endpoint, timeout, connections: Mutex::new(HashMap::new()), dialing: Mutex::new(HashMap::new()) }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Connection, Instant)>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept connection to `id` while it is open, marked used now.
    fn kept(&self, id: &[u8; 32]) -> Option<Connection> {
        let mut table = self.table();
        let (connection, used) = table.get_mut(id).filter(|(c, _)| c.close_reason().is_none())?;
        *used = Instant::now();
        Some(connection.clone())
    }

    /// A connection to `target`: the one kept, while it is open, else a new one.
    async fn connection(&self, target: &IrohEndpoint) -> Result<Connection, CarrierError> {
        if let Some(open) = self.kept(&target.id) {
            return Ok(open);
        }
        let turn = {
            let mut dialing = self.dialing.lock().unwrap_or_else(|p| p.into_inner());
            // Locks nobody holds or waits for are dropped (bounded like the table).
            dialing.retain(|_, lock| Arc::strong_count(lock) > 1);
            Arc::clone(dialing.entry(target.id).or_default())
        };
        let _turn = turn.lock().await;
        if let Some(open) = self.kept(&target.id) {
            return Ok(open);
        }
        let id = iroh::PublicKey::from_bytes(&target.id).map_err(|e| unsent(format!("endpoint id: {e}")))?;
        let mut addr = EndpointAddr::new(id);
        for relay in &target.relays {
            if let Ok(url) = relay.parse::<RelayUrl>() {
                addr = addr.with_relay_url(url);
            }
        }
        for direct in &target.addrs {
            addr = addr.with_ip_addr(*direct);
        }
        let connection = self
            .endpoint
            .connect(addr, ALPN)
            .await
            .map_err(|e| unsent(format!("connecting to iroh:{}: {e}", short(&target.id))))?;
        let mut table = self.table();
        // Closed connections and those unused for a while go (dropping our handle lets QUIC
        // close them once the requests still on them end); past the cap, the least recently used.
        table.retain(|_, (c, used)| c.close_reason().is_none() && used.elapsed() < KEEP_UNUSED);
        if table.len() >= MAX_CONNECTIONS
            && let Some(oldest) = table.iter().min_by_key(|(_, (_, used))| *used).map(|(id, _)| *id)
        {
            table.remove(&oldest);
        }
        table.insert(target.id, (connection.clone(), Instant::now()));
        Ok(connection)
    }

    /// Forgets `connection` for `id` (it failed), unless another took its place.
    fn forget(&self, id: &[u8; 32], connection: &Connection) {
        let mut table = self.table();
        if table.get(id).is_some_and(|(c, _)| c.stable_id() == connection.stable_id()) {
            table.remove(id);
        }
    }

    /// A stream on a connection to `target`; a kept connection that turns out dead is replaced
    /// once.
    async fn stream(
        &self,
        target: &IrohEndpoint,
    ) -> Result<(Connection, iroh::endpoint::SendStream, iroh::endpoint::RecvStream), CarrierError> {
        let connection = self.connection(target).await?;
        match connection.open_bi().await {
            Ok((send, recv)) => Ok((connection, send, recv)),
            Err(_) => {
                self.forget(&target.id, &connection);
                let connection = self.connection(target).await?;
                let (send, recv) = connection.open_bi().await.map_err(|e| {
                    self.forget(&target.id, &connection);
                    unsent(format!("opening a stream to iroh:{}: {e}", short(&target.id)))
                })?;
                Ok((connection, send, recv))
            }
        }
    }
}

fn short(id: &[u8; 32]) -> String {
    hex::encode(&id[..8])
}

/// Nothing reached the peer.
fn unsent(message: String) -> CarrierError {
    CarrierError { before_send: true, message }
}

/// The request may have reached the peer.
fn sent(message: String) -> CarrierError {
    CarrierError { before_send: false, message }
}

impl Carrier for IrohCarrier {
    fn name(&self) -> &'static str {
        "iroh"
    }

    fn reaches(&self, endpoint: &Endpoint) -> bool {
        matches!(endpoint, Endpoint::Iroh(_))
    }

    fn send<'a>(&'a self, endpoint: &'a Endpoint, request: Request) -> BoxFuture<'a, Result<Response, CarrierError>> {
        Box::pin(async move {
            let Endpoint::Iroh(target) = endpoint else {
                return Err(unsent(format!("{endpoint} is not an iroh endpoint")));
            };
            let limit = request.timeout.unwrap_or(self.timeout);
            let deadline = Instant::now() + limit;
            let late = || format!("no answer from iroh:{} within {} ms", short(&target.id), limit.as_millis());
            let (connection, send, recv) =
                tokio::time::timeout_at(deadline, self.stream(target)).await.map_err(|_| unsent(late()))??;
            let io = TokioIo::new(tokio::io::join(recv, send));
            let exchange = async {
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(io).await.map_err(|e| unsent(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                let mut head = http::Request::builder()
                    .uri(&request.path)
                    .header(http::header::HOST, format!("iroh-{}", short(&target.id)));
                head = match request.method {
                    Method::Get => head.method(http::Method::GET),
                    Method::Post => {
                        head.method(http::Method::POST).header(http::header::CONTENT_TYPE, "application/json")
                    }
                };
                if let Some(token) = &request.bearer {
                    head = head.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
                }
                let outgoing = head
                    .body(http_body_util::Full::new(request.body.clone()))
                    .map_err(|e| unsent(format!("request to {}: {e}", request.path)))?;
                sender.send_request(outgoing).await.map_err(|e| sent(e.to_string()))
            };
            let answer = tokio::time::timeout_at(deadline, exchange).await.unwrap_or_else(|_| Err(sent(late())));
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    // The connection may be dead without QUIC knowing yet (the peer's process
                    // went away): the next request dials afresh, those in flight on it finish.
                    self.forget(&target.id, &connection);
                    return Err(e);
                }
            };
            let status = Status(answer.status().as_u16());
            let declared_len = answer
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            // The whole answer, body included, within the request's time (as over HTTP): a peer
            // that sends a head and then stalls cannot hold the caller.
            let raw = answer.into_body().into_data_stream().map_err(|e| sent(e.to_string())).boxed();
            let stalled =
                format!("the answer of iroh:{} did not end within {} ms", short(&target.id), limit.as_millis());
            let body = futures_util::stream::unfold(Some(raw), move |state| {
                let stalled = stalled.clone();
                async move {
                    let mut raw = state?;
                    match tokio::time::timeout_at(deadline, raw.next()).await {
                        Ok(Some(item)) => Some((item, Some(raw))),
                        Ok(None) => None,
                        Err(_) => Some((Err(sent(stalled)), None)),
                    }
                }
            })
            .boxed();
            Ok(Response::new(status, declared_len, body))
        })
    }

    fn relays(&self) -> Vec<(String, bool)> {
        use iroh::Watcher as _;
        self.endpoint
            .home_relay_status()
            .get()
            .iter()
            .map(|r| (r.url().to_string().trim_end_matches('/').to_owned(), r.is_connected()))
            .collect()
    }

    fn path(&self, endpoint: &Endpoint) -> Option<LivePath> {
        let Endpoint::Iroh(target) = endpoint else { return None };
        let connection = self.table().get(&target.id).filter(|(c, _)| c.close_reason().is_none())?.0.clone();
        let paths = connection.paths();
        let selected = paths.iter().find(|p| p.is_selected())?;
        let (kind, via) = match selected.remote_addr() {
            iroh::TransportAddr::Ip(addr) => ("direct", addr.to_string()),
            iroh::TransportAddr::Relay(url) => ("relayed", url.to_string()),
            other => ("direct", format!("{other:?}")),
        };
        Some(LivePath { kind, via, rtt: Some(selected.rtt()) })
    }
}

/// Serves the peer API on the iroh endpoint's incoming connections.
pub(crate) struct IrohAccept {
    endpoint: iroh::Endpoint,
}

impl Accept for IrohAccept {
    fn name(&self) -> &'static str {
        "iroh"
    }

    fn serve(self: Box<Self>, app: axum::Router, node: Arc<Node>, stop: CancellationToken) -> BoxFuture<'static, ()> {
        Box::pin(serve(self.endpoint, app, node, stop))
    }
}

/// Accepts connections until `stop`, then lets the requests in flight finish (up to 10 s) and
/// closes the endpoint.
async fn serve(endpoint: iroh::Endpoint, app: axum::Router, node: Arc<Node>, stop: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        connections.spawn(connection(incoming, app.clone(), Arc::clone(&node), stop.clone()));
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(11), connections.wait()).await;
    endpoint.close().await;
}

/// Serves one connection: admitted by its endpoint id like a TCP client by its address, each
/// stream one HTTP/1.1 exchange with the remote's key in the request's extensions.
async fn connection(incoming: iroh::endpoint::Incoming, app: axum::Router, node: Arc<Node>, stop: CancellationToken) {
    use tower::ServiceExt as _;

    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "iroh handshake failed");
            return;
        }
        Err(_) => return,
    };
    let remote = Remote::Key(*connection.remote_id().as_bytes());
    let Some(ticket) = node.admission().admit(remote, false) else {
        connection.close(1u32.into(), b"busy");
        return;
    };
    let _admitted = Admitted { node: Arc::clone(&node), id: ticket.id };
    let config = node.config();
    let write_timeout = Duration::from_secs(config.peer_write_timeout_secs.max(1));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(false)
        .half_close(true)
        .header_read_timeout(Duration::from_secs(config.header_read_timeout_secs.max(1)))
        .max_buf_size(config.max_header_bytes.max(8192));
    let streams = TaskTracker::new();
    loop {
        let (send, recv) = tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok(streams) => streams,
                Err(_) => break,
            },
            _ = ticket.shed.cancelled() => break,
            _ = stop.cancelled() => break,
        };
        let app = app.clone();
        let active = Arc::clone(&ticket.active);
        let service = hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(remote);
            let (app, busy) = (app.clone(), Busy::start(&active));
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                drop(busy);
                response
            }
        });
        let io = crate::stall::Guarded::new(tokio::io::join(recv, send), write_timeout);
        let exchange = http.serve_connection(TokioIo::new(io), service);
        streams.spawn(async move {
            let _ = exchange.await;
        });
    }
    // Requests being served finish first, for at most 10 s.
    streams.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), streams.wait()).await;
    connection.close(0u32.into(), b"bye");
}

/// Starts the iroh carrier when the settings have an `[iroh]` table: binds the endpoint with
/// the node's iroh key, connects to the relays, and advertises
/// `iroh:<id>?relay=<each relay>&addr=<each direct address>` (before HTTP unless
/// `[iroh] first = false`).
pub(crate) struct IrohStart;

impl StartCarrier for IrohStart {
    fn name(&self) -> &'static str {
        "iroh"
    }

    fn start<'a>(self: Box<Self>, cx: &'a StartContext<'a>) -> BoxFuture<'a, anyhow::Result<Option<Started>>> {
        Box::pin(async move {
            let Some(settings) = cx.config.iroh.clone() else { return Ok(None) };
            let home = cx.home.clone();
            let secret = tokio::task::spawn_blocking(move || home.carrier_key("iroh")).await??;
            let secret = iroh::SecretKey::from_bytes(&secret);
            let relay_mode = if settings.relays.is_empty() {
                RelayMode::Disabled
            } else {
                let map = RelayMap::try_from_iter(settings.relays.iter().map(String::as_str))
                    .map_err(|e| anyhow::anyhow!("iroh.relays: {e}"))?;
                RelayMode::Custom(map)
            };
            let roots = trusted_roots(cx.config.tls_ca_file.as_deref())?;
            // A peer whose process went away is noticed within 15 s (keep-alives every 5 s). A
            // peer opens at most MAX_STREAMS request streams at once on a connection and no
            // unidirectional one, and what it sends us unread is bounded per stream and per
            // connection (QUIC flow control), so one connection holds at most RECEIVE_WINDOW.
            let idle = iroh::endpoint::IdleTimeout::try_from(IDLE_TIMEOUT).context("idle timeout")?;
            let transport = iroh::endpoint::QuicTransportConfig::builder()
                .max_idle_timeout(Some(idle))
                .max_concurrent_uni_streams(0u32.into())
                .max_concurrent_bidi_streams(MAX_STREAMS.into())
                .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
                .receive_window(RECEIVE_WINDOW.into())
                .build();
            let endpoint = iroh::Endpoint::builder(presets::Minimal)
                .secret_key(secret)
                .transport_config(transport)
                .alpns(vec![ALPN.to_vec()])
                .clear_ip_transports()
                .bind_addr(settings.listen)
                .map_err(|e| anyhow::anyhow!("iroh.listen: {e}"))?
                .relay_mode(relay_mode)
                .ca_tls_config(iroh::tls::CaTlsConfig::custom_roots(roots))
                .bind()
                .await
                .with_context(|| format!("binding the iroh endpoint on {}", settings.listen))?;
            let mut advertised = IrohEndpoint::new(*endpoint.id().as_bytes());
            advertised.relays = settings.relays.iter().map(|r| r.trim_end_matches('/').to_owned()).collect();
            advertised.addrs = if settings.addrs.is_empty() {
                let found = endpoint.addr();
                let mut direct: Vec<std::net::SocketAddr> = found.ip_addrs().copied().collect();
                direct.extend(endpoint.bound_sockets());
                let mut seen = Vec::new();
                for addr in direct {
                    let addr = std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port());
                    if !addr.ip().is_unspecified() && addr.port() != 0 && !seen.contains(&addr) {
                        seen.push(addr);
                    }
                }
                seen.truncate(MAX_IROH_ADDRS);
                seen
            } else {
                settings.addrs.clone()
            };
            // What the card cannot hold is left out, last address first.
            while advertised.to_string().len() > agentmesh_core::card::MAX_ENDPOINT_BYTES
                && advertised.addrs.pop().is_some()
            {}
            let mut warnings = Vec::new();
            if settings.listen.ip().is_loopback() && settings.relays.is_empty() {
                warnings.push(format!(
                    "iroh listens on {} with no relay: only this machine can reach it; bind 0.0.0.0 or add relays \
                     in [iroh] to be reached from elsewhere",
                    settings.listen
                ));
            }
            let timeout = Duration::from_millis(cx.config.outbound_timeout_ms.max(1));
            tracing::info!(endpoint = %advertised, "iroh endpoint bound");
            Ok(Some(Started {
                carrier: Arc::new(IrohCarrier::new(endpoint.clone(), timeout)),
                accept: Some(Box::new(IrohAccept { endpoint })),
                endpoints: vec![advertised.to_string()],
                preferred: settings.first,
                local_url: None,
                lan: None,
                warnings,
            }))
        })
    }
}

/// The CA certificates a relay's TLS certificate is checked against: the system's, and those
/// of `tls_ca_file` (as for every https:// request, [`crate::net::client`]).
fn trusted_roots(extra: Option<&std::path::Path>) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut roots = rustls_native_certs::load_native_certs().certs;
    if let Some(path) = extra {
        let pem = std::fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))?;
        roots.extend(crate::net::pem_certificates(&pem).with_context(|| format!("CA file {}", path.display()))?);
    }
    Ok(roots)
}
