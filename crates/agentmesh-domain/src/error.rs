//! Errors: the domain error every service returns ([`Error`]; its HTTP form is
//! `agentmesh_node::ApiError`, at the edge), and why a node did not start ([`LaunchError`]).

use std::net::SocketAddr;

use agentmesh_api::{ErrorCode, MismatchDirection};
use agentmesh_core::PeerId;

/// Why a service refused or failed. Each variant maps to one [`ErrorCode`] ([`Error::code`]) and,
/// at the HTTP edge, one status (`agentmesh_node::ApiError`); the message is for a person and never holds
/// secrets.
///
/// Exhaustive on purpose: each edge maps every variant (the HTTP one to a status), and a new
/// variant must be given one there.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Something sent is out of shape (400); `code` names what (`malformed`, `malformed_body`,
    /// `invalid_card`, `wrong_route`, `invalid_url`, `empty_message`, the V1 `invalid_*` codes, …).
    #[error("{message}")]
    Invalid {
        /// Which check failed.
        code: ErrorCode,
        /// What was wrong.
        message: String,
    },
    /// A body, batch or text over its limit (413).
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large ("request body", "message text", …).
        what: &'static str,
        /// The limit, bytes.
        limit: usize,
    },
    /// The body was not sent as JSON (415).
    #[error("send the body as Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body did not arrive in time (408).
    #[error("the request body did not arrive within {secs} s")]
    RequestTimeout {
        /// The allowance, seconds.
        secs: u64,
    },
    /// The Ed25519 signature does not verify (401).
    #[error("{0}")]
    BadSignature(String),
    /// `sent_at` is outside the freshness window (400); the answer carries our clock.
    #[error("sent_at is {} s from our clock; the window is ±{window_secs} s", skew_ms.unsigned_abs() / 1000)]
    StaleTimestamp {
        /// Our clock minus theirs, ms.
        skew_ms: i64,
        /// The window, seconds.
        window_secs: u64,
        /// Our clock, ms.
        now: u64,
    },
    /// The envelope's `expires_at` has passed (400).
    #[error("the envelope's expires_at has passed")]
    Expired,
    /// Addressed to another agent (400).
    #[error("this node is {me}, not {to}")]
    WrongRecipient {
        /// Us.
        me: String,
        /// Whom it named.
        to: String,
    },
    /// The body does not decrypt with our key (400).
    #[error("the body could not be decrypted with this agent's key")]
    Undecryptable,
    /// An answer or update about a request we never had (400).
    #[error("no contact request {request_id} with this agent")]
    UnknownRequest {
        /// The request named.
        request_id: String,
    },
    /// A contact request with this id exists (409).
    #[error("a contact request with this id exists")]
    DuplicateRequest,
    /// The sender may not send this (403): `unknown_sender`, `untrusted_sender`, `blocked_sender`.
    #[error("{message}")]
    Refused {
        /// Which refusal.
        code: ErrorCode,
        /// Why, for the sender.
        message: String,
    },
    /// The peer presents a key other than the one pinned (403 inbound, 409 outbound).
    #[error("{}", key_mismatch_message(peer, *direction))]
    KeyMismatch {
        /// The peer.
        peer: PeerId,
        /// Who presented it.
        direction: MismatchDirection,
    },
    /// The peer presents a key it rotated away from (403 inbound, 409 outbound).
    #[error("{peer} presents a key it has rotated away from")]
    SupersededKey {
        /// The peer.
        peer: PeerId,
        /// Who presented it.
        direction: MismatchDirection,
    },
    /// Over a rate limit (429).
    #[error("too many {what}; retry in {retry_after} s")]
    RateLimited {
        /// What was limited.
        what: &'static str,
        /// Whole seconds until a request is allowed.
        retry_after: u64,
    },
    /// Our owner has too many contact requests to answer (429).
    #[error("this agent has {limit} contact requests{scope} waiting for its owner; try again later")]
    TooManyPending {
        /// The cap.
        limit: u32,
        /// Which requests the cap counts: `""` (all from senders it did not know), or
        /// `" from your network"`.
        scope: &'static str,
    },
    /// Missing or wrong control token (401).
    #[error("missing or wrong control token")]
    Unauthorized,
    /// Control API: a `Host` that is not the listener's own (421).
    #[error("{0} is not this control API's host: reach it at 127.0.0.1, localhost or [::1] with its port")]
    WrongHost(String),
    /// No such route, request, message or peer (404).
    #[error("{0}")]
    NotFound(String),
    /// A peer reference that fits several peers (409).
    #[error("{query:?} fits {}: give more of the agent id", candidates.join(", "))]
    AmbiguousPeer {
        /// What was given.
        query: String,
        /// `name (id)` of each.
        candidates: Vec<String>,
    },
    /// The action does not fit where things stand (409): `not_trusted` (403), `blocked`,
    /// `not_blocked`, `already_decided`, `outgoing_request`, `incoming_request`, `not_failed`,
    /// `fingerprint_mismatch`, `invalid_alias`.
    #[error("{message}")]
    Conflict {
        /// Which conflict.
        code: ErrorCode,
        /// What to do about it.
        message: String,
    },
    /// A remote agent or registry failed us (502): `peer_unreachable`, `not_an_agent`,
    /// `invalid_card`, `agent_id_mismatch`.
    #[error("{message}")]
    Upstream {
        /// Which failure.
        code: ErrorCode,
        /// What happened.
        message: String,
    },
    /// Storage or another internal failure (500); the cause is logged, not returned.
    #[error("internal error; see the node's log")]
    Internal,
}

fn key_mismatch_message(peer: &PeerId, direction: MismatchDirection) -> String {
    match direction {
        MismatchDirection::Inbound => format!(
            "{peer} presented a key other than the one pinned for it; refused until the owner checks the new \
             fingerprint and runs `agentmesh repin`"
        ),
        MismatchDirection::Outbound => format!(
            "{peer} now presents a key other than the one pinned for it; nothing was sent. Check the new \
             fingerprint with its owner (`agentmesh status` lists it), then run `agentmesh repin {peer} --fingerprint <sha256:…>`"
        ),
    }
}

impl Error {
    /// A 400 with `code`.
    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Invalid { code, message: message.into() }
    }

    /// A 400 `malformed`.
    pub fn malformed(message: impl Into<String>) -> Self {
        Error::invalid(ErrorCode::Malformed, message)
    }

    /// A 409 (403 for `not_trusted`) with `code`.
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Conflict { code, message: message.into() }
    }

    /// A 403 refusal of the sender.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Refused { code, message: message.into() }
    }

    /// A 502 with `code`.
    pub fn upstream(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Upstream { code, message: message.into() }
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }

    /// A 500; logs `cause`, which never reaches the caller.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Error::Internal
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Invalid { code, .. }
            | Error::Refused { code, .. }
            | Error::Conflict { code, .. }
            | Error::Upstream { code, .. } => *code,
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Error::RequestTimeout { .. } => ErrorCode::RequestTimeout,
            Error::BadSignature(_) => ErrorCode::BadSignature,
            Error::StaleTimestamp { .. } => ErrorCode::StaleTimestamp,
            Error::Expired => ErrorCode::Expired,
            Error::WrongRecipient { .. } => ErrorCode::WrongRecipient,
            Error::Undecryptable => ErrorCode::Undecryptable,
            Error::UnknownRequest { .. } => ErrorCode::UnknownRequest,
            Error::DuplicateRequest => ErrorCode::DuplicateRequest,
            Error::KeyMismatch { .. } => ErrorCode::KeyMismatch,
            Error::SupersededKey { .. } => ErrorCode::SupersededKey,
            Error::RateLimited { .. } => ErrorCode::RateLimited,
            Error::TooManyPending { .. } => ErrorCode::TooManyPendingRequests,
            Error::Unauthorized => ErrorCode::Unauthorized,
            Error::WrongHost(_) => ErrorCode::WrongHost,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AmbiguousPeer { .. } => ErrorCode::AmbiguousPeer,
            Error::Internal => ErrorCode::Internal,
        }
    }
}

impl From<agentmesh_store::StoreError> for Error {
    fn from(e: agentmesh_store::StoreError) -> Self {
        Error::internal(e)
    }
}

/// Why a node did not start. Other failures (unreadable files, a corrupt database) come as
/// plain errors with context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// Another node holds this home's lock.
    #[error("another agentmesh node is already running for {0}")]
    NodeRunning(String),
    /// The listen address is taken.
    #[error("{addr} is in use by another program; pick another with `agentmesh up --listen 127.0.0.1:<port>`")]
    AddressInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// The endpoint peers would be told cannot reach this node; the message says how to fix it.
    #[error("{0}")]
    InvalidEndpoint(String),
}

impl LaunchError {
    /// The error code the CLI reports.
    pub fn code(&self) -> ErrorCode {
        match self {
            LaunchError::NodeRunning(_) => ErrorCode::NodeRunning,
            LaunchError::AddressInUse { .. } => ErrorCode::AddressInUse,
            LaunchError::InvalidEndpoint(_) => ErrorCode::InvalidEndpoint,
        }
    }
}
