//! The HTTP edge of [`Error`]: [`ApiError`] gives each error its status (the README's tables) and
//! renders it as `{"error":{"code":"stale_timestamp","message":"…"}}`, with `Retry-After` on a
//! 429 and `WWW-Authenticate` on a 401 (handlers return it, or answer with [`Respond`]; the
//! domain's [`Error`] knows nothing of HTTP); [`read_json_body`] reads a bounded JSON request
//! body.

use agentmesh_api::{ErrorBody, ErrorCode, ErrorDetail, MismatchDirection};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Error;

/// The HTTP status of `e`.
fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Invalid { .. }
        | Error::StaleTimestamp { .. }
        | Error::Expired
        | Error::WrongRecipient { .. }
        | Error::Undecryptable
        | Error::UnknownRequest { .. } => StatusCode::BAD_REQUEST,
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        Error::BadSignature(_) | Error::Unauthorized => StatusCode::UNAUTHORIZED,
        Error::Refused { .. } => StatusCode::FORBIDDEN,
        Error::KeyMismatch { direction, .. } | Error::SupersededKey { direction, .. } => match direction {
            MismatchDirection::Inbound => StatusCode::FORBIDDEN,
            MismatchDirection::Outbound => StatusCode::CONFLICT,
        },
        Error::DuplicateRequest | Error::AmbiguousPeer { .. } => StatusCode::CONFLICT,
        Error::Conflict { code: ErrorCode::NotTrusted, .. } => StatusCode::FORBIDDEN,
        Error::Conflict {
            code: ErrorCode::UnknownCall | ErrorCode::UnknownTask | ErrorCode::UnknownTransfer, ..
        } => StatusCode::NOT_FOUND,
        Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::RateLimited { .. } | Error::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::WrongHost(_) => StatusCode::MISDIRECTED_REQUEST,
        Error::Upstream { .. } => StatusCode::BAD_GATEWAY,
        Error::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The HTTP form of an [`Error`]: status, code, message and, for 429, `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: ErrorCode,
    /// One line for a person.
    pub message: String,
    /// 429: whole seconds until a request is allowed again.
    pub retry_after: Option<u64>,
    /// `stale_timestamp`: our clock, ms.
    pub now: Option<u64>,
}

impl ApiError {
    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: self.detail() }
    }

    /// The inside of the body (also used per envelope in batch answers).
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code.as_str().to_owned(),
            message: self.message.clone(),
            retry_after: self.retry_after,
            now: self.now,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let retry_after = match &e {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let now = match &e {
            Error::StaleTimestamp { now, .. } => Some(*now),
            _ => None,
        };
        ApiError { status: status_of(&e), code: e.code(), message: e.to_string(), retry_after, now }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == ErrorCode::Unauthorized {
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
/// `too_large` over the limit (reported as `what`; the rest of the body, up to 1 MiB, is read and
/// dropped first so the client sees the answer); 408 `request_timeout` when the body does not
/// arrive in time; 400 `malformed` when the connection breaks mid-body.
pub(crate) async fn read_json_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
    what: &'static str,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, Error> {
    use http_body_util::BodyExt as _;

    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return Err(Error::UnsupportedMediaType);
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
            Err(_) => return Err(Error::RequestTimeout { secs: timeout.as_secs() }),
            Ok(None) => break,
            Ok(Some(Err(_))) if over => break,
            Ok(Some(Err(_))) => return Err(Error::malformed("request body could not be read (truncated?)")),
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
        return Err(Error::TooLarge { what, limit });
    }
    Ok(bytes::Bytes::from(buf))
}

/// An [`Error`] answered as its [`ApiError`], for handlers that build a [`Response`] by hand.
pub(crate) trait Respond {
    /// The response.
    fn respond(self) -> Response;
}

impl Respond for Error {
    fn respond(self) -> Response {
        ApiError::from(self).into_response()
    }
}
