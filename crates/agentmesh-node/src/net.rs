//! Outbound HTTP: every request has a timeout (set on the client) and every response body is
//! read up to a cap.

use axum::http::StatusCode;
use bytes::Bytes;

/// Why an outbound request produced no response.
#[derive(Debug)]
pub struct TransportError {
    /// `true` when no connection was made, so the peer cannot have seen the request.
    pub before_send: bool,
    /// What went wrong, without URLs' secrets (we put none in URLs).
    pub message: String,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn transport(e: reqwest::Error) -> TransportError {
    let before_send = e.is_connect() || e.is_builder();
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut message = what.to_owned();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message = format!("{what}: {s}");
        source = s.source();
    }
    TransportError { before_send, message }
}

async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<(StatusCode, Bytes), TransportError> {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if response.content_length().is_some_and(|n| n as usize > cap) {
        return Err(TransportError { before_send: false, message: format!("response larger than {cap} bytes") });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > cap {
            return Err(TransportError { before_send: false, message: format!("response larger than {cap} bytes") });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, Bytes::from(body)))
}

/// `POST url` with a JSON body; returns the status and body (at most `cap` bytes).
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: String,
    cap: usize,
) -> Result<(StatusCode, Bytes), TransportError> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(transport)?;
    read_capped(response, cap).await
}

/// `GET url`; returns the status and body (at most `cap` bytes).
pub async fn get(client: &reqwest::Client, url: &str, cap: usize) -> Result<(StatusCode, Bytes), TransportError> {
    let response = client.get(url).send().await.map_err(transport)?;
    read_capped(response, cap).await
}
