//! Outbound: one [`Transport`] per wire protocol, chosen per peer by the outbox.
//!
//! A transport turns what we want to say ([`Outgoing`]) into an outbox entry for a peer
//! ([`Transport::prepare`], run inside the transaction that queues it, so nothing is sent before
//! it is stored), delivers due entries ([`Transport::deliver`]) and checks whether a peer answers
//! ([`Transport::health`]). Adding a protocol means one module that implements this trait and
//! its inbound adapter, registered in [`Transports`].

use std::sync::Arc;

use agentmesh_core::call::CallBody;
use agentmesh_core::envelope::ContactUpdateBody;
use agentmesh_core::file::FileBody;
use agentmesh_core::task::TaskBody;
use agentmesh_core::{EnvelopeKind, Protocol};
use agentmesh_store::{NewOutbound, OutboxItem, Peer};
use futures_util::future::BoxFuture;

use crate::error::Error;
use crate::{Node, compat, native};

/// What we want to tell a peer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outgoing {
    /// A message for its agent.
    Message { text: String, reply_to: Option<String>, thread: Option<String> },
    /// A read receipt for its message.
    Read { message_id: String, at: u64 },
    /// A contact request (the entry's id is the request id).
    ContactRequest { request_id: String, purpose: String },
    /// The answer to its contact request.
    ContactResponse { request_id: String, accepted: bool, reason: Option<String> },
    /// A change of what it may do.
    ContactUpdate(ContactUpdateBody),
    /// Our new card after a key rotation.
    KeyRotation,
    /// A step of a call (a `message` envelope of the call content type).
    Call(CallBody),
    /// A step of a task (a `message` envelope of the task content type).
    Task(TaskBody),
    /// A step of a file transfer (a `message` envelope of the file content type).
    File(FileBody),
}

impl Outgoing {
    /// The envelope kind that carries it.
    pub(crate) fn kind(&self) -> EnvelopeKind {
        match self {
            Outgoing::Message { .. } | Outgoing::Call(_) | Outgoing::Task(_) | Outgoing::File(_) => {
                EnvelopeKind::Message
            }
            Outgoing::Read { .. } => EnvelopeKind::Receipt,
            Outgoing::ContactRequest { .. } => EnvelopeKind::ContactRequest,
            Outgoing::ContactResponse { .. } => EnvelopeKind::ContactResponse,
            Outgoing::ContactUpdate(_) => EnvelopeKind::ContactUpdate,
            Outgoing::KeyRotation => EnvelopeKind::KeyRotation,
        }
    }
}

/// How one delivery attempt of one entry went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Acknowledged; the receipt (JSON) to store.
    Delivered(String),
    /// Try again later.
    Retry {
        /// Whether the request reached the peer (status `sent`), or not (stays `queued`).
        sent: bool,
        /// What went wrong.
        error: String,
        /// Not before this many seconds (a rate-limiting peer's `retry_after`); 0 for none.
        after_secs: u64,
        /// The peer's error code, when it refused.
        code: Option<String>,
        /// The peer's clock, ms, when it refused our timestamp as stale.
        peer_now: Option<u64>,
    },
    /// Give up now: the peer refused it for good, or it cannot be sent.
    Failed {
        /// What went wrong.
        error: String,
        /// The peer's error code, when it refused.
        code: Option<String>,
    },
}

impl Outcome {
    /// A retry after a transport error.
    pub(crate) fn retry(sent: bool, error: impl Into<String>) -> Self {
        Outcome::Retry { sent, error: error.into(), after_secs: 0, code: None, peer_now: None }
    }

    /// A final failure of ours (no peer code).
    pub(crate) fn failed(error: impl Into<String>) -> Self {
        Outcome::Failed { error: error.into(), code: None }
    }
}

/// One protocol's way out.
pub(crate) trait Transport: Send + Sync {
    /// Whether envelopes of `kind` travel over this protocol at all (Agent Mesh V1 has no
    /// contact responses, updates, read receipts or key rotations).
    fn carries(&self, kind: EnvelopeKind) -> bool;

    /// The outbox entry that tells `peer` `what` (sealed and signed: CPU work, no I/O). Called
    /// inside the transaction that queues it, or before it for messages, whose sender checks the
    /// peer again when it queues. The entry's id is the request id for contact requests.
    fn prepare(&self, node: &Node, peer: &Peer, what: Outgoing) -> Result<NewOutbound, Error>;

    /// Delivers due entries to `peer`; one outcome per entry.
    fn deliver<'a>(
        &'a self,
        node: &'a Arc<Node>,
        peer: &'a Peer,
        items: Vec<OutboxItem>,
    ) -> BoxFuture<'a, Vec<(OutboxItem, Outcome)>>;

    /// Whether `peer` answers at its endpoint with the key we pinned: `Ok` with its
    /// round-trip time in ms, or why not.
    fn health<'a>(&'a self, node: &'a Node, peer: &'a Peer) -> BoxFuture<'a, Result<u64, String>>;
}

/// The transports, one per protocol.
pub(crate) struct Transports {
    native: native::HttpTransport,
    agent_mesh_v1: compat::agent_mesh_v1::V1Transport,
}

impl Transports {
    /// Every protocol's transport.
    pub(crate) fn new() -> Self {
        Transports { native: native::HttpTransport, agent_mesh_v1: compat::agent_mesh_v1::V1Transport }
    }

    /// The transport of `protocol`.
    pub(crate) fn get(&self, protocol: Protocol) -> &dyn Transport {
        match protocol {
            Protocol::AgentMeshV1 => &self.agent_mesh_v1,
            _ => &self.native,
        }
    }
}
