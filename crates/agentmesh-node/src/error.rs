//! The one HTTP error type of both APIs: a status, a stable machine code and a human message,
//! rendered as `{"error":{"code":"stale_timestamp","message":"…"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error. `code` values are listed in the README's error table.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `bad_signature`.
    pub code: &'static str,
    /// Human-readable explanation; never contains secrets or internals.
    pub message: String,
    /// For 429: whole seconds until a new request would be allowed (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 401 `bad_signature`.
    pub fn bad_signature(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "bad_signature", message)
    }
    /// 403.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// 413 `too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("request body exceeds {limit} bytes"))
    }
    /// 429 `too_many_pending_requests`: the owner has `limit` contact requests to answer first.
    pub fn too_many_pending(limit: u32) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_pending_requests",
            format!("this agent has {limit} contact requests waiting for its owner; try again later"),
        )
    }
    /// 500 `internal`; the cause is logged, not returned.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the node's log")
    }

    /// 429 `rate_limited`, allowed again after `retry_after` whole seconds.
    pub fn rate_limited(what: &str, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many {what}; retry in {retry_after} s"),
            )
        }
    }

    /// The JSON body (`retry_after` included when set).
    pub fn body(&self) -> serde_json::Value {
        match self.retry_after {
            Some(secs) => json!({"error": {"code": self.code, "message": self.message, "retry_after": secs}}),
            None => json!({"error": {"code": self.code, "message": self.message}}),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status.as_u16(), self.message)
    }
}

impl From<agentmesh_store::StoreError> for ApiError {
    fn from(e: agentmesh_store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED && self.code == "unauthorized" {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Most bytes read and discarded after a body goes over its limit, so that the client reads our
/// 413 instead of a connection reset (a bounded "lingering" read).
const DRAIN_MAX: usize = 1024 * 1024;

/// Reads a request body up to `limit` bytes within `timeout`, requiring a JSON content type.
///
/// Errors: 415 `unsupported_media_type` without `Content-Type: application/json`; 413
/// `too_large` over the limit (the rest of the body, up to 1 MiB, is read and dropped first so the
/// client sees the answer); 408 `request_timeout` when the body does not arrive in time; 400
/// `malformed` when the connection breaks mid-body.
pub async fn read_json_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt as _;

    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = body;
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut over = declared.is_some_and(|n| n > limit);
    let mut drained = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) if over => break,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!("the request body did not arrive within {} s", timeout.as_secs()),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(_))) if over => break,
            Ok(Some(Err(_))) => {
                return Err(ApiError::bad_request("malformed", "request body could not be read (truncated?)"));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if over {
            drained += data.len();
            if drained > DRAIN_MAX {
                break;
            }
        } else if buf.len() + data.len() > limit {
            over = true;
            drained = buf.len() + data.len();
            buf = Vec::new();
        } else {
            buf.extend_from_slice(&data);
        }
    }
    if over {
        return Err(ApiError::too_large(limit));
    }
    Ok(bytes::Bytes::from(buf))
}
