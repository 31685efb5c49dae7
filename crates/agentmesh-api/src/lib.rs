//! The typed contract of the agentmesh node's control API, shared by the node (which serves it),
//! the client (which calls it), the CLI and the tests: one struct per request and reply, one
//! shape per concept (a [`Peer`] is the same everywhere; times are always milliseconds since the
//! Unix epoch), the [`Event`]s pushed to watchers, and the [`ErrorCode`]s of every refusal.
//!
//! ```
//! use agentmesh_api::{ErrorCode, TrustState};
//!
//! assert_eq!("requested_out".parse::<TrustState>().unwrap(), TrustState::RequestedOut);
//! assert_eq!(ErrorCode::BlockedSender.as_str(), "blocked_sender");
//! ```

pub mod control;
pub mod error;
pub mod model;

pub use error::{ErrorBody, ErrorCode, ErrorDetail, UnknownErrorCode};
pub use model::{
    A2aClient, Call, CallLine, CallState, ClockSkew, ContactRequest, Direction, Escalation, EscalationState, Event,
    KeyMismatch, KnownAgent, LineKind, LoggedEvent, Message, MessageStatus, MismatchDirection, PathCounts, Peer,
    PeerPath, RelayState, RequestStatus, Side, Source, Status, StreamNotice, Task, TaskDetail, TaskEntry,
    TaskEntryKind, TaskState, Transcript, Transfer, TransferState, TrustReason, TrustState, UnknownName,
};

pub use agentmesh_core::{AgentCard, AgentId, PeerId, Protocol};
