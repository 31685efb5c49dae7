//! Extractors of the peer API's HTTP handlers.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::error::Error;
use crate::remote::Remote;

/// The sender of an HTTP request as the pipeline and the limits know it: the address of the TCP
/// peer, or the client a trusted proxy named (the accept loop puts it in `ConnectInfo`).
pub(crate) struct PeerRemote(pub(crate) Remote);

impl<S: Send + Sync> FromRequestParts<S> for PeerRemote {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let ConnectInfo(addr) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| Error::internal("a peer request without its address"))?;
        Ok(PeerRemote(Remote::Ip(addr.ip())))
    }
}
