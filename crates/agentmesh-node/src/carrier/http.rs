//! The HTTP carrier: requests to a node's http(s) base URL over TCP (TLS for `https://`), with
//! the node's one outbound client ([`crate::net::client`]); and the peer API served on a TCP
//! listener ([`HttpAccept`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentmesh_core::endpoint::Endpoint;
use axum::http::StatusCode;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Accept, Carrier, CarrierError, Method, Request, Response};
use crate::Node;
use crate::remote::Remote;

/// Carries requests to [`Endpoint::Http`] endpoints.
pub(crate) struct HttpCarrier {
    client: reqwest::Client,
}

impl HttpCarrier {
    /// A carrier sending with `client` (whose timeouts apply unless a request sets its own).
    pub(crate) fn new(client: reqwest::Client) -> Self {
        HttpCarrier { client }
    }
}

impl Carrier for HttpCarrier {
    fn name(&self) -> &'static str {
        "http"
    }

    fn reaches(&self, endpoint: &Endpoint) -> bool {
        matches!(endpoint, Endpoint::Http(_))
    }

    fn send<'a>(&'a self, endpoint: &'a Endpoint, request: Request) -> BoxFuture<'a, Result<Response, CarrierError>> {
        Box::pin(async move {
            let Some(base) = endpoint.http_base() else {
                return Err(CarrierError { before_send: true, message: format!("{endpoint} is not an http(s) URL") });
            };
            let url = format!("{}{}", base.trim_end_matches('/'), request.path);
            let mut builder = match request.method {
                Method::Get => self.client.get(&url),
                Method::Post => {
                    self.client.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json").body(request.body)
                }
            };
            if let Some(token) = request.bearer {
                builder = builder.bearer_auth(token);
            }
            if let Some(timeout) = request.timeout {
                builder = builder.timeout(timeout);
            }
            let response = builder.send().await.map_err(crate::net::transport)?;
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let declared_len = response.content_length();
            let body = response.bytes_stream().map_err(crate::net::transport).boxed();
            Ok(Response::new(status, declared_len, body))
        })
    }
}

/// Serves the peer API on a bound TCP listener (plain HTTP/1.1; TLS is a reverse proxy's).
pub(crate) struct HttpAccept {
    listener: TcpListener,
}

impl HttpAccept {
    /// Serves on `listener` once [`Accept::serve`] runs.
    pub(crate) fn new(listener: TcpListener) -> Self {
        HttpAccept { listener }
    }
}

impl Accept for HttpAccept {
    fn name(&self) -> &'static str {
        "http"
    }

    fn serve(self: Box<Self>, app: axum::Router, node: Arc<Node>, stop: CancellationToken) -> BoxFuture<'static, ()> {
        Box::pin(serve(self.listener, app, node, stop))
    }
}

/// Serves the peer API: connections are admitted by [`crate::admission`] (per-address caps, a
/// share for contacts, the oldest idle connection shed to make room), request heads are bounded
/// in size and in time (a client that trickles bytes, or idles on a kept-alive connection, is cut
/// off), `TCP_NODELAY`, a half-closed client still gets its answer, and on shutdown the requests
/// in flight finish (up to 10 s) before connections close.
async fn serve(listener: TcpListener, app: axum::Router, node: Arc<Node>, stop: CancellationToken) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use std::sync::atomic::Ordering;
    use tower::ServiceExt as _;

    let config = node.config();
    let write_timeout = Duration::from_secs(config.peer_write_timeout_secs.max(1));
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // A client that half-closes after sending a complete request still gets its answer.
        .half_close(true)
        .header_read_timeout(Duration::from_secs(config.header_read_timeout_secs.max(1)))
        .max_buf_size(config.max_header_bytes.max(8192));
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`: count it, limit it
        // and record it as the IPv4 address it is.
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        let proxy = node.proxies().contains(remote.ip());
        let Some(ticket) = node.admission().admit(remote.ip(), proxy) else {
            // Every connection in the way is busy: turned away at once rather than queued.
            drop(stream);
            continue;
        };
        // Released when the connection's task ends, however it ends (a panic included).
        let admitted = Admitted { node: Arc::clone(&node), id: ticket.id };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let active = Arc::clone(&ticket.active);
        let proxies = node.proxies().clone();
        let service = hyper::service::service_fn(move |mut request: axum::http::Request<hyper::body::Incoming>| {
            // Behind a trusted reverse proxy, the client it names is the remote every limit sees.
            let client = if proxy { proxies.client(remote.ip(), request.headers()) } else { remote.ip() };
            request.extensions_mut().insert(Remote::Ip(client));
            let (app, busy) = (app.clone(), Busy::start(&active));
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                drop(busy);
                response
            }
        });
        // A client that stops reading what we send (a chunk fetch, an A2A stream) is cut off
        // after `peer_write_timeout_secs`, and what its request held is freed.
        let stream = crate::stall::Guarded::new(stream, write_timeout);
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let stop = stop.clone();
        connections.spawn(async move {
            let _admitted = admitted;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = ticket.shed.cancelled() => {}
                _ = stop.cancelled() => {}
            }
            // Idle (kept alive, or still sending a request head): closed now. Serving a request:
            // that request finishes first, for at most 10 s.
            if ticket.active.load(Ordering::SeqCst) > 0 {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(10), connection.as_mut()).await;
            }
        });
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(11), connections.wait()).await;
}

/// An admitted peer connection; releases its place in [`crate::admission`] when dropped.
struct Admitted {
    node: Arc<Node>,
    id: u64,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.node.admission().release(self.id);
    }
}

/// A request being served on a connection (so the connection is not idle); counted out when
/// dropped, however the request ends.
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    fn start(active: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        active.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(Arc::clone(active))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
