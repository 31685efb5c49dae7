//! Extractors of the peer API's HTTP handlers.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::api_error::ApiError;
use crate::error::Error;
use crate::remote::Remote;

/// The sender of a request as the pipeline and the limits know it: the address of the TCP peer
/// or the client a trusted proxy named, the key of an endpoint that names peers by key (the
/// carrier's [`Accept`](crate::carrier::Accept) loop puts it in the request's extensions).
pub(crate) struct PeerRemote(pub(crate) Remote);

impl<S: Send + Sync> FromRequestParts<S> for PeerRemote {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let remote = parts
            .extensions
            .get::<Remote>()
            .copied()
            .ok_or_else(|| Error::internal("a peer request without its remote"))?;
        Ok(PeerRemote(remote))
    }
}
