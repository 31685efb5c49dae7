//! A peer that speaks to a node's peer API over iroh the way a node does (ALPN `agentmesh/1`,
//! one HTTP/1.1 exchange per QUIC stream), with an endpoint key of its own: tests send it
//! forged, malformed or well-formed requests over iroh as they do over HTTP.

use std::net::SocketAddr;

use agentmesh_core::endpoint::{Endpoint, IrohEndpoint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

/// The ALPN the node serves its peer API on over iroh.
pub const ALPN: &[u8] = b"agentmesh/1";

/// Why an exchange over iroh failed.
#[derive(Debug, thiserror::Error)]
pub enum IrohPeerError {
    /// Binding, dialling or the exchange failed; what happened.
    #[error("iroh: {0}")]
    Iroh(String),
}

fn fail(e: impl std::fmt::Display) -> IrohPeerError {
    IrohPeerError::Iroh(e.to_string())
}

/// A test peer's iroh endpoint, bound on loopback with a fresh key and no relay.
pub struct IrohPeer {
    endpoint: iroh::Endpoint,
}

impl IrohPeer {
    /// Binds on `127.0.0.1`, any free port, with a fresh key.
    ///
    /// Errors: the endpoint cannot bind.
    pub async fn bind() -> Result<Self, IrohPeerError> {
        Self::bind_as(rand_key()).await
    }

    /// Binds on `127.0.0.1`, any free port, with the 32-byte secret key `secret` (so that a
    /// test's fake cards can name the key before the endpoint exists: [`endpoint_of`]).
    ///
    /// Errors: the endpoint cannot bind.
    pub async fn bind_as(secret: [u8; 32]) -> Result<Self, IrohPeerError> {
        let endpoint = iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
            .secret_key(iroh::SecretKey::from_bytes(&secret))
            .alpns(vec![ALPN.to_vec()])
            .clear_ip_transports()
            .bind_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(fail)?
            .relay_mode(iroh::RelayMode::Disabled)
            .bind()
            .await
            .map_err(fail)?;
        Ok(IrohPeer { endpoint })
    }

    /// Its endpoint id (32 bytes).
    pub fn id(&self) -> [u8; 32] {
        *self.endpoint.id().as_bytes()
    }

    /// Its endpoint as a card lists it: `iroh:<id>?addr=<bound address>`.
    pub fn card_endpoint(&self) -> String {
        let mut me = IrohEndpoint::new(self.id());
        me.addrs = self.endpoint.bound_sockets().into_iter().filter(|a| !a.ip().is_unspecified()).collect();
        me.to_string()
    }

    /// Sends `method path` (with `body` as `content_type` when given) to the node at `target`
    /// (an `iroh:` endpoint of its card) on a new connection; returns the status and the body.
    ///
    /// Errors: `target` is not an iroh endpoint, or dialling or the exchange failed.
    pub async fn request(
        &self,
        target: &str,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<(u16, String), IrohPeerError> {
        let Ok(Endpoint::Iroh(target)) = target.parse::<Endpoint>() else {
            return Err(IrohPeerError::Iroh(format!("{target} is not an iroh endpoint")));
        };
        let id = iroh::PublicKey::from_bytes(&target.id).map_err(fail)?;
        let mut addr = iroh::EndpointAddr::new(id);
        for a in &target.addrs {
            addr = addr.with_ip_addr(*a);
        }
        let connection = self.endpoint.connect(addr, ALPN).await.map_err(fail)?;
        let (send, recv) = connection.open_bi().await.map_err(fail)?;
        let (mut sender, driver) =
            hyper::client::conn::http1::handshake(TokioIo::new(tokio::io::join(recv, send))).await.map_err(fail)?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        let mut head = hyper::Request::builder().method(method).uri(path).header("host", "iroh");
        let payload = match body {
            Some((bytes, content_type)) => {
                if !content_type.is_empty() {
                    head = head.header("content-type", content_type);
                }
                bytes
            }
            None => Vec::new(),
        };
        let request = head.body(http_body_util::Full::new(bytes::Bytes::from(payload))).map_err(fail)?;
        let response = sender.send_request(request).await.map_err(fail)?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.map_err(fail)?.to_bytes();
        connection.close(0u32.into(), b"done");
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }
}

/// The endpoint (`iroh:<id>`, no address) of the peer bound with the secret key `secret`.
pub fn endpoint_of(secret: [u8; 32]) -> String {
    IrohEndpoint::new(*iroh::SecretKey::from_bytes(&secret).public().as_bytes()).to_string()
}

fn rand_key() -> [u8; 32] {
    iroh::SecretKey::generate().to_bytes()
}
