//! The HTTP carrier: requests to a node's http(s) base URL over TCP (TLS for `https://`), with
//! the node's one outbound client ([`crate::net::client`]).

use agentmesh_core::endpoint::Endpoint;
use axum::http::StatusCode;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};

use super::{Carrier, CarrierError, Method, Request, Response};

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
