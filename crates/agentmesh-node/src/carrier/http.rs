//! The HTTP carrier: requests to a node's http(s) base URL over TCP (TLS for `https://`), with
//! the node's one outbound client ([`crate::net::client`]); the peer API served on a TCP
//! listener ([`HttpAccept`]); and the endpoint the card advertises for them, checked against
//! the address bound ([`HttpStart`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentmesh_core::endpoint::Endpoint;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::start::{Accept, Admitted, Busy, StartCarrier, StartContext, Started};
use super::{Carrier, CarrierError, Method, Request, Response};
use crate::LaunchError;
use crate::Node;
use crate::forwarded::TrustedProxies;
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
            let status = super::Status(response.status().as_u16());
            let declared_len = response.content_length();
            let body = response.bytes_stream().map_err(crate::net::transport).boxed();
            Ok(Response::new(status, declared_len, body))
        })
    }
}

/// Serves the peer API on a bound TCP listener (plain HTTP/1.1; TLS is a reverse proxy's).
pub(crate) struct HttpAccept {
    listener: TcpListener,
    proxies: TrustedProxies,
}

impl HttpAccept {
    /// Serves on `listener` once [`Accept::serve`] runs, taking the client from the forwarding
    /// header of the `proxies` only.
    pub(crate) fn new(listener: TcpListener, proxies: TrustedProxies) -> Self {
        HttpAccept { listener, proxies }
    }
}

impl Accept for HttpAccept {
    fn name(&self) -> &'static str {
        "http"
    }

    fn serve(self: Box<Self>, app: axum::Router, node: Arc<Node>, stop: CancellationToken) -> BoxFuture<'static, ()> {
        Box::pin(serve(self.listener, self.proxies, app, node, stop))
    }
}

/// Serves the peer API: connections are admitted by [`crate::admission`] (per-address caps, a
/// share for contacts, the oldest idle connection shed to make room), request heads are bounded
/// in size and in time (a client that trickles bytes, or idles on a kept-alive connection, is cut
/// off), `TCP_NODELAY`, a half-closed client still gets its answer, and on shutdown the requests
/// in flight finish (up to 10 s) before connections close.
async fn serve(
    listener: TcpListener,
    proxies: TrustedProxies,
    app: axum::Router,
    node: Arc<Node>,
    stop: CancellationToken,
) {
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
        let proxy = proxies.contains(remote.ip());
        let Some(ticket) = node.admission().admit(Remote::Ip(remote.ip()), proxy) else {
            // Every connection in the way is busy: turned away at once rather than queued.
            drop(stream);
            continue;
        };
        // Released when the connection's task ends, however it ends (a panic included).
        let admitted = Admitted { node: Arc::clone(&node), id: ticket.id };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let active = Arc::clone(&ticket.active);
        let proxies = proxies.clone();
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

/// Starts the HTTP carrier: the outbound side over the node's client, and the peer API on a TCP
/// listener (bound from the config unless one is given), advertising one http(s) endpoint.
///
/// The endpoint advertised is, first found: `--endpoint` (`endpoint_flag`), `AGENTMESH_ENDPOINT`,
/// the profile's (`init --endpoint`), config.toml's `endpoint`, else the bound address. One no
/// peer could reach is refused with the fix ([`LaunchError::InvalidEndpoint`]); a doubtful one
/// is a warning.
pub(crate) struct HttpStart {
    endpoint_flag: Option<String>,
    listener: Option<TcpListener>,
}

impl HttpStart {
    /// The HTTP carrier advertising `endpoint_flag` when given (`agentmesh up --endpoint`).
    pub(crate) fn new(endpoint_flag: Option<String>) -> Self {
        HttpStart { endpoint_flag, listener: None }
    }

    /// Serves on `listener` instead of binding `listen` from the config (tests bind port 0).
    #[cfg_attr(not(test), expect(dead_code, reason = "only tests bind first"))]
    pub(crate) fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }
}

impl StartCarrier for HttpStart {
    fn name(&self) -> &'static str {
        "http"
    }

    fn start<'a>(self: Box<Self>, cx: &'a StartContext<'a>) -> BoxFuture<'a, anyhow::Result<Option<Started>>> {
        Box::pin(async move {
            let environment = std::env::var("AGENTMESH_ENDPOINT").ok();
            let (chosen, source) =
                match (self.endpoint_flag, environment, cx.profile.endpoint.clone(), cx.config.endpoint.clone()) {
                    (Some(e), _, _, _) => (Some(e), EndpointSource::Flag),
                    (None, Some(e), _, _) => (Some(e), EndpointSource::Environment),
                    (None, None, Some(e), _) => (Some(e), EndpointSource::Profile),
                    (None, None, None, Some(e)) => (Some(e), EndpointSource::Config),
                    _ => (None, EndpointSource::Default),
                };
            let listen = cx.config.listen_addr(chosen.as_deref());
            let proxies = TrustedProxies::from_config(cx.config).map_err(anyhow::Error::msg)?;
            if chosen.is_none() && listen.ip().is_unspecified() {
                // Refused before anything binds: the card would advertise 0.0.0.0.
                check_endpoint(&format!("http://{listen}"), EndpointSource::Default, listen)
                    .map_err(LaunchError::InvalidEndpoint)?;
            }
            let listener = match self.listener {
                Some(l) => l,
                None => bind_peer(listen).map_err(|e| match e.kind() {
                    std::io::ErrorKind::AddrInUse => anyhow::Error::from(LaunchError::AddressInUse { addr: listen }),
                    _ => anyhow::Error::from(e).context(format!("binding {listen}")),
                })?,
            };
            let bound = listener.local_addr()?;
            let local_url = format!("http://{bound}");
            let endpoint = chosen.unwrap_or_else(|| local_url.clone());
            let usable = matches!(endpoint.parse(), Ok(Endpoint::Http(_)));
            if !usable || endpoint.len() > agentmesh_core::card::MAX_ENDPOINT_BYTES {
                return Err(LaunchError::InvalidEndpoint(format!(
                    "the endpoint {endpoint:?} is not a base URL peers can use: give one like `agentmesh up \
                     --endpoint http://<this host's address>:{}` (http or https, no query or fragment, at most {} \
                     bytes)",
                    bound.port(),
                    agentmesh_core::card::MAX_ENDPOINT_BYTES
                ))
                .into());
            }
            let warnings = check_endpoint(&endpoint, source, bound).map_err(LaunchError::InvalidEndpoint)?;
            Ok(Some(Started {
                carrier: Arc::new(HttpCarrier::new(cx.http.clone())),
                accept: Some(Box::new(HttpAccept::new(listener, proxies))),
                endpoints: vec![endpoint],
                preferred: false,
                local_url: Some(local_url),
                lan: Some(bound),
                warnings,
            }))
        })
    }
}

/// Where the advertised endpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndpointSource {
    Flag,
    Environment,
    Profile,
    Config,
    Default,
}

/// Checks the endpoint peers will be told against the address the node listens on. Refuses one
/// no peer could use, with the fix; returns warnings for the doubtful ones.
fn check_endpoint(endpoint: &str, source: EndpointSource, bound: SocketAddr) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let advertised = endpoint.trim_end_matches('/');
    let unspecified_host = ["0.0.0.0", "[::]"].iter().any(|h| {
        advertised.strip_prefix("http://").or_else(|| advertised.strip_prefix("https://")).is_some_and(|rest| {
            rest.starts_with(h) && rest[h.len()..].chars().next().is_none_or(|c| c == ':' || c == '/')
        })
    });
    if unspecified_host {
        let port = bound.port();
        return Err(format!(
            "the card would advertise {advertised}, which no peer can reach ({} means \"every address\" only to a \
             listener). Give the URL peers use: `agentmesh up --listen {bound} --endpoint http://<this host's address>:{port}`",
            bound.ip()
        ));
    }
    if let Some(target) = crate::config::loopback_http_addr(advertised) {
        let serves = target.port() == bound.port() && (bound.ip().is_unspecified() || bound.ip().is_loopback());
        if !serves {
            let fix = format!(
                "start it with `agentmesh up --listen {target}`, or advertise another URL with `agentmesh up --endpoint <URL>`"
            );
            let what = format!(
                "the endpoint {advertised} names this host, but the node listens on {bound}: peers would knock on the wrong door"
            );
            match source {
                // Said on purpose (a proxy in front, say): warn only.
                EndpointSource::Flag | EndpointSource::Environment => warnings.push(format!("{what}; {fix}")),
                _ => return Err(format!("{what}; {fix}")),
            }
        }
    } else if bound.ip().is_loopback() && !advertised.starts_with("https://") {
        warnings.push(format!(
            "the node listens on {bound} (this host only) but advertises {advertised}: peers elsewhere reach it only \
             through a proxy; to serve them directly, use `agentmesh up --listen 0.0.0.0:{}`",
            bound.port()
        ));
    }
    Ok(warnings)
}

/// Pending connections the kernel holds for the peer listener (capped by `net.core.somaxconn`):
/// room for a burst of thousands of connects without dropping a contact's handshake.
const PEER_BACKLOG: u32 = 4096;

/// Binds the peer listener with [`PEER_BACKLOG`] (`SO_REUSEADDR` as `TcpListener::bind` sets it).
fn bind_peer(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(PEER_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn regression_listening_on_every_address_never_advertises_it() {
        let bound = addr("0.0.0.0:8787");
        let refused = check_endpoint("http://0.0.0.0:8787", EndpointSource::Default, bound).expect_err("refused");
        assert!(refused.contains("--endpoint http://<this host's address>:8787"), "{refused}");
        assert!(check_endpoint("http://[::]:8787", EndpointSource::Flag, addr("[::]:8787")).is_err());
        assert_eq!(check_endpoint("http://10.0.0.5:8787", EndpointSource::Flag, bound), Ok(vec![]));
    }

    #[test]
    fn regression_init_endpoint_port_that_up_does_not_listen_on_is_refused_with_the_fix() {
        let refused =
            check_endpoint("http://127.0.0.1:18787", EndpointSource::Profile, addr("127.0.0.1:8787")).expect_err("no");
        assert!(refused.contains("agentmesh up --listen 127.0.0.1:18787"), "{refused}");
        // Said on purpose (a proxy in front): a warning only.
        let warned = check_endpoint("http://127.0.0.1:18787", EndpointSource::Flag, addr("127.0.0.1:8787"));
        assert_eq!(warned.map(|w| w.len()), Ok(1));
        assert_eq!(
            check_endpoint("http://127.0.0.1:8787", EndpointSource::Default, addr("127.0.0.1:8787")),
            Ok(vec![])
        );
        assert_eq!(
            check_endpoint("https://localhost:8443", EndpointSource::Environment, addr("127.0.0.1:8787")),
            Ok(vec![])
        );
        let lan = check_endpoint("http://10.0.0.5:8787", EndpointSource::Profile, addr("127.0.0.1:8787"));
        assert_eq!(lan.map(|w| w.len()), Ok(1), "loopback listener advertising a LAN address is warned about");
    }
}
