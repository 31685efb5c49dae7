//! Error codes and the error body every API answers with.
//!
//! Both of the node's APIs answer a refusal as `{"error":{"code":"…","message":"…"}}` (Agent
//! Mesh V1 routes as `{"ok":false,"error":"<code>","message":"…"}`), and the CLI prints the same
//! shape on stderr. `code` is one of [`ErrorCode`]; the README's error tables list exactly these
//! codes (a test compares them). The HTTP status depends on where the code is used (a
//! `key_mismatch` is 403 to the peer that presented the key, 409 to our owner), so it is not part
//! of the code.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)+) => {
        /// A stable, machine-readable error code (see the module docs).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// Whether `code` is one of these codes (a peer's code may be passed on to the
            /// owner's agent only then: anything else is the peer's free text).
            pub fn is_known(code: &str) -> bool {
                code.parse::<ErrorCode>().is_ok()
            }

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)+
                }
            }
        }

        impl FromStr for ErrorCode {
            type Err = UnknownErrorCode;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(ErrorCode::$variant),)+
                    other => Err(UnknownErrorCode(other.to_owned())),
                }
            }
        }
    };
}

codes! {
    // Peer API: what other agents see.
    /// The body is not JSON, is truncated, is not an envelope, or has a member out of shape.
    Malformed = "malformed",
    /// `sent_at` (V1: `timestamp`) is outside the freshness window of the receiver's clock.
    StaleTimestamp = "stale_timestamp",
    /// The envelope's `expires_at` has passed.
    Expired = "expired",
    /// `to` is not the receiving agent.
    WrongRecipient = "wrong_recipient",
    /// The body does not decrypt with the recipient's key.
    Undecryptable = "undecryptable",
    /// The decrypted body is not what the envelope type requires.
    MalformedBody = "malformed_body",
    /// The attached agent card is forged, not the sender's, or lists no endpoint (a missing
    /// card is `malformed`); `request-contact`: the URL serves a card that does not verify.
    InvalidCard = "invalid_card",
    /// A contact response about a request the receiver never sent.
    UnknownRequest = "unknown_request",
    /// The envelope type does not belong on this route.
    WrongRoute = "wrong_route",
    /// Gossip: the peer record does not verify or has expired.
    InvalidRecord = "invalid_record",
    /// Gossip: the record is the receiver's own.
    SelfRecord = "self_record",
    /// V1: the body is not a JSON object.
    InvalidJson = "invalid_json",
    /// V1: `type` is not the one the route takes.
    InvalidType = "invalid_type",
    /// V1: the identity card (`from`) is out of shape.
    InvalidAgent = "invalid_agent",
    /// V1: `public_key` is not an Ed25519 SPKI PEM key.
    InvalidPublicKey = "invalid_public_key",
    /// V1: `fingerprint` is not SHA-256 of `public_key`; `repin`: another fingerprint than given.
    FingerprintMismatch = "fingerprint_mismatch",
    /// V1: `timestamp` is not ISO-8601 UTC.
    InvalidTimestamp = "invalid_timestamp",
    /// V1: `request_id` is not `req_` + 32 hex.
    InvalidRequestId = "invalid_request_id",
    /// V1: `message_id` is out of shape.
    InvalidMessageId = "invalid_message_id",
    /// V1: `body` is not `{"text": "…"}`.
    InvalidBody = "invalid_body",
    /// A purpose longer than 1,000 characters, or not a string.
    InvalidPurpose = "invalid_purpose",
    /// The Ed25519 signature does not verify.
    BadSignature = "bad_signature",
    /// The sender is not a contact (only contact requests are accepted from strangers).
    UnknownSender = "unknown_sender",
    /// The sender is known but not approved.
    UntrustedSender = "untrusted_sender",
    /// The sender is blocked.
    BlockedSender = "blocked_sender",
    /// The sender (or the card fetched for an id) presents a key other than the one pinned.
    KeyMismatch = "key_mismatch",
    /// The sender presents a key it has rotated away from.
    SupersededKey = "superseded_key",
    /// The envelope came over a carrier that authenticates nodes by key (iroh), from a key that
    /// the sender's signed card does not list as one of its endpoints.
    EndpointMismatch = "endpoint_mismatch",
    /// No such route, request, message or peer.
    NotFound = "not_found",
    /// The request body did not arrive in time.
    RequestTimeout = "request_timeout",
    /// A contact request with this id exists.
    DuplicateRequest = "duplicate_request",
    /// A body, batch or text over its limit.
    TooLarge = "too_large",
    /// The body was not sent as `Content-Type: application/json`.
    UnsupportedMediaType = "unsupported_media_type",
    /// Over a rate limit; `retry_after` gives the whole seconds to wait.
    RateLimited = "rate_limited",
    /// The receiver's owner has too many contact requests to answer.
    TooManyPendingRequests = "too_many_pending_requests",
    /// Storage or another internal failure; nothing was acknowledged.
    Internal = "internal",

    // Control API and CLI: what the owner sees.
    /// CLI: no node runs for this home.
    NodeNotRunning = "node_not_running",
    /// CLI: the node's control API did not answer.
    NodeUnreachable = "node_unreachable",
    /// CLI: the node (or a registry) answered something unexpected.
    BadResponse = "bad_response",
    /// CLI: a command-line argument is missing, unknown or out of shape.
    InvalidArgument = "invalid_argument",
    /// Not an http(s) base URL.
    InvalidUrl = "invalid_url",
    /// A rejection reason longer than 1,000 characters.
    InvalidReason = "invalid_reason",
    /// An alias that is empty, longer than 64 characters, or another peer's.
    InvalidAlias = "invalid_alias",
    /// An endpoint peers could not use (`0.0.0.0`, or another port than the node listens on).
    InvalidEndpoint = "invalid_endpoint",
    /// The message text is empty.
    EmptyMessage = "empty_message",
    /// The URL or id is this agent itself.
    SelfContact = "self_contact",
    /// Missing or wrong control token.
    Unauthorized = "unauthorized",
    /// Control API: the `Host` header names none of the listener's own names (`127.0.0.1`,
    /// `localhost`, `[::1]` with its port): a guard against DNS rebinding.
    WrongHost = "wrong_host",
    /// The peer is not a contact (see `trust` for where contact stands).
    NotTrusted = "not_trusted",
    /// A name or prefix that fits more than one peer.
    AmbiguousPeer = "ambiguous_peer",
    /// A call step about a call this agent does not have with the sender (peer API), or no
    /// such call (owner).
    UnknownCall = "unknown_call",
    /// An invitation with a call id this agent holds for another peer.
    DuplicateCall = "duplicate_call",
    /// The open calls fill `max_open_calls` (or `max_open_calls_per_peer` for this peer).
    TooManyCalls = "too_many_calls",
    /// The call is not in a state that allows this step (answer a call that is not ringing,
    /// speak in one that is not active, …); the message says where it stands.
    CallState = "call_state",
    /// The peer's protocol (Agent Mesh V1) has no calls or tasks.
    UnsupportedByPeer = "unsupported_by_peer",
    /// A file step or chunk fetch about a transfer this agent does not have with the caller
    /// (peer API), or no such transfer (owner).
    UnknownTransfer = "unknown_transfer",
    /// The transfer is not in a state that allows this (accept one that is not offered, fetch
    /// one that is over); the message says where it stands.
    TransferState = "transfer_state",
    /// The file being sent changed on disk since it was offered (size or modification time):
    /// the sender no longer serves it.
    FileChanged = "file_changed",
    /// A task step about a task this agent does not have with the sender (peer API), or no such
    /// task (owner).
    UnknownTask = "unknown_task",
    /// A task id this agent holds for another peer, or (owner) a delegation under an id in use
    /// for another request.
    DuplicateTask = "duplicate_task",
    /// The open tasks fill `max_open_tasks` (or `max_open_tasks_per_peer` for this peer).
    TooManyTasks = "too_many_tasks",
    /// The task is not in a state that allows this step (an update of a final task, an answer
    /// to a task that asked nothing, …); the message says where it stands.
    TaskState = "task_state",
    /// Our agent's escalations waiting for the owner fill `max_open_escalations`, or the four
    /// one conversation may have open: the owner answers some first.
    TooManyEscalations = "too_many_escalations",
    /// The request was answered already.
    AlreadyDecided = "already_decided",
    /// The request is ours: the peer answers it (withdraw it instead).
    OutgoingRequest = "outgoing_request",
    /// The request is the peer's: approve or reject it.
    IncomingRequest = "incoming_request",
    /// The peer is blocked: unblock it first.
    Blocked = "blocked",
    /// The peer is not blocked.
    NotBlocked = "not_blocked",
    /// `retry`: the message has not failed.
    NotFailed = "not_failed",
    /// The peer refused our contact request; the message carries its reason code.
    ContactRefused = "contact_refused",
    /// The URL did not answer.
    PeerUnreachable = "peer_unreachable",
    /// The URL serves no agent card or V1 discovery document.
    NotAnAgent = "not_an_agent",
    /// `add-peer`: the URL serves another agent than the id given.
    AgentIdMismatch = "agent_id_mismatch",
    /// `init`: an identity exists in this home.
    IdentityExists = "identity_exists",
    /// No identity in this home (`agentmesh init` creates one).
    NoIdentity = "no_identity",
    /// `up`: a node already runs for this home.
    NodeRunning = "node_running",
    /// `up`: the listen address is taken by another program.
    AddressInUse = "address_in_use",
    /// A file of the home is readable by others, or cannot be read.
    InsecureFile = "insecure_file",
    /// `config.toml` (or an `AGENTMESH_*` setting) does not parse.
    InvalidConfig = "invalid_config",
    /// The registry refused our API key (401).
    RegistryUnauthorized = "registry_unauthorized",
    /// The registry refused the request.
    RegistryError = "registry_error",
    /// A local file or stream could not be read or written.
    Io = "io_error",
    /// MCP: a tool that changes trust (approve, block, repin) while the owner has not set
    /// `mcp_allow_trust_changes = true`.
    TrustChangesDisabled = "trust_changes_disabled",
    /// A path the node will not read for this caller: a file of the agent's home under any name
    /// (its keys, control token, database), or, over MCP, a path outside `mcp_file_roots`.
    PathNotAllowed = "path_not_allowed",
    /// MCP `send_message` with `wait_for_delivery`: the message failed for good and the peer
    /// gave no code of its own (the message says why: attempts, expiry).
    DeliveryFailed = "delivery_failed",
}

/// A code this build does not know (a newer node's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownErrorCode(pub String);

impl fmt::Display for UnknownErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown error code {:?}", self.0)
    }
}

impl std::error::Error for UnknownErrorCode {}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `{"error": {…}}`: the body of every refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// One of [`ErrorCode`], as text (a newer node may send a code this build does not know).
    pub code: String,
    /// One line for a person; never holds secrets.
    pub message: String,
    /// `rate_limited`: whole seconds until a request is allowed again (also in `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// `stale_timestamp`: the receiver's clock when it refused, ms since the Unix epoch, so the
    /// sender can tell its owner how far off its clock is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<u64>,
}

impl ErrorDetail {
    /// The code, when this build knows it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.code.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(*code));
            let json = serde_json::to_string(code).expect("json");
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).expect("back"), *code);
        }
    }
}
