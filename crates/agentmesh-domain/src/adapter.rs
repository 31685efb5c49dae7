//! What the bytes mean: one [`Adapter`] per wire protocol (our native envelopes, Agent Mesh V1),
//! chosen per peer by the outbox. How they travel is a [`crate::carrier`]'s business.
//!
//! An adapter turns what we want to say ([`Outgoing`]) into an outbox entry for a peer
//! ([`Adapter::prepare`], run inside the transaction that queues it, so nothing is sent before
//! it is stored), delivers due entries ([`Adapter::deliver`]) and checks whether a peer answers
//! ([`Adapter::health`]), and finds the agent at an endpoint ([`Adapter::fetch_peer`]); its
//! bytes travel on the node's carriers. Adding a protocol means one module that implements this
//! trait and its inbound side (routes of the peer API that parse and verify its format into a
//! [`crate::pipeline::Inbound`]), registered in [`Adapters`] where the node is built: this module
//! knows no protocol.

use std::sync::Arc;

use agentmesh_core::call::CallBody;
use agentmesh_core::endpoint::Endpoint;
use agentmesh_core::envelope::ContactUpdateBody;
use agentmesh_core::file::FileBody;
use agentmesh_core::task::TaskBody;
use agentmesh_core::{EnvelopeKind, Protocol};
use agentmesh_store::{NewOutbound, OutboxItem, Peer};
use futures_util::future::BoxFuture;

use crate::Node;
use crate::carrier::ProbeError;
use crate::error::Error;

/// What we want to tell a peer.
#[derive(Clone, Debug, PartialEq)]
pub enum Outgoing {
    /// A message for its agent.
    Message {
        /// The text.
        text: String,
        /// The id of the message it answers.
        reply_to: Option<String>,
        /// The conversation it belongs to.
        thread: Option<String>,
    },
    /// A read receipt for its message.
    Read {
        /// Its message's id.
        message_id: String,
        /// When our agent read it, ms since the epoch.
        at: u64,
    },
    /// A contact request (the entry's id is the request id).
    ContactRequest {
        /// The request's id (`req_` and 32 hex digits).
        request_id: String,
        /// Why we ask.
        purpose: String,
    },
    /// The answer to its contact request.
    ContactResponse {
        /// Its request's id.
        request_id: String,
        /// Whether our owner approved.
        accepted: bool,
        /// Our owner's reason, when given.
        reason: Option<String>,
    },
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
    pub fn kind(&self) -> EnvelopeKind {
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
pub enum Outcome {
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
    /// A retry after a carrier error.
    pub fn retry(sent: bool, error: impl Into<String>) -> Self {
        Outcome::Retry { sent, error: error.into(), after_secs: 0, code: None, peer_now: None }
    }

    /// A final failure of ours (no peer code).
    pub fn failed(error: impl Into<String>) -> Self {
        Outcome::Failed { error: error.into(), code: None }
    }
}

/// The agent a protocol found at a base URL: its verified document as a `discovered` peer row,
/// and every key its verified rotation chain holds.
pub type Fetched = (Peer, Vec<[u8; 32]>);

/// Why a protocol found no agent at a base URL.
#[derive(Debug)]
pub enum FetchError {
    /// Nothing answered, or not with this protocol's document.
    Probe(ProbeError),
    /// The document does not verify (`invalid_card`): nothing else is tried.
    Invalid(Error),
}

/// What a protocol can do, asked by the services instead of which protocol a peer speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Calls between contacts.
    Calls,
    /// Delegated tasks.
    Tasks,
    /// File transfers (offers and chunk fetches).
    Files,
    /// Key rotation: announcements of ours, and a contact's pin following its verified rotation
    /// chain.
    KeyRotation,
    /// Bodies are end-to-end encrypted.
    Encrypted,
    /// Trust is mutual: a peer becomes a contact when both owners agree. Without it (Agent Mesh
    /// V1) trust is one-sided: once we asked, our messages wait at its door until its owner
    /// approves, and a request of ours is always sent, even to a peer that asked us.
    MutualTrust,
    /// An agent id derives from its key, so the id is no word of the agent's own.
    DerivedIds,
}

/// One protocol's way out.
pub trait Adapter: Send + Sync {
    /// The protocol it speaks: peers stored with it are reached through it.
    fn protocol(&self) -> Protocol;

    /// Whether it can do `what`.
    fn can(&self, what: Capability) -> bool;

    /// Whether envelopes of `kind` travel over this protocol at all (Agent Mesh V1 has no
    /// contact responses, updates, read receipts or key rotations).
    fn carries(&self, kind: EnvelopeKind) -> bool;

    /// The outbox entry that tells `peer` `what`: no I/O and no cryptography (an adapter that
    /// seals or signs does it in [`deliver`](Self::deliver), off the database thread). Called
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

    /// The agent this protocol finds at `endpoint`.
    fn fetch_peer<'a>(&'a self, node: &'a Node, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<Fetched, FetchError>>;

    /// The `discovered` peer row a discovery document of this protocol describes (our card, a
    /// V1 agent document, as served at `endpoint`), seen at `now` (ms); `None` when it is out of
    /// shape or does not verify.
    fn peer_from_document(&self, endpoint: &str, document: &serde_json::Value, now: i64) -> Option<Peer>;
}

/// The node's adapters, one per protocol, in the order a base URL is probed.
pub struct Adapters(Vec<Arc<dyn Adapter>>);

impl Adapters {
    /// The adapters registered, the first one the default.
    pub fn new(all: Vec<Arc<dyn Adapter>>) -> Self {
        Adapters(all)
    }

    /// The adapter of `protocol` (the first registered when none speaks it).
    pub fn get(&self, protocol: Protocol) -> &dyn Adapter {
        let found = self.0.iter().find(|t| t.protocol() == protocol).or_else(|| self.0.first());
        found.map(|t| &**t).unwrap_or(&NONE)
    }

    /// Whether an adapter of `protocol` is registered.
    pub fn speaks(&self, protocol: Protocol) -> bool {
        self.0.iter().any(|a| a.protocol() == protocol)
    }

    /// Every adapter, in the order registered.
    pub fn all(&self) -> impl Iterator<Item = &dyn Adapter> {
        self.0.iter().map(|t| &**t)
    }
}

/// What a node with no adapter at all has: nothing can be sent or found.
struct NoAdapter;

static NONE: NoAdapter = NoAdapter;

impl Adapter for NoAdapter {
    fn protocol(&self) -> Protocol {
        Protocol::Native
    }

    fn can(&self, _: Capability) -> bool {
        false
    }

    fn carries(&self, _: EnvelopeKind) -> bool {
        false
    }

    fn prepare(&self, _: &Node, _: &Peer, _: Outgoing) -> Result<NewOutbound, Error> {
        Err(Error::internal("no adapter is registered"))
    }

    fn deliver<'a>(
        &'a self,
        _: &'a Arc<Node>,
        _: &'a Peer,
        items: Vec<OutboxItem>,
    ) -> BoxFuture<'a, Vec<(OutboxItem, Outcome)>> {
        Box::pin(async move { items.into_iter().map(|i| (i, Outcome::failed("no adapter is registered"))).collect() })
    }

    fn health<'a>(&'a self, _: &'a Node, _: &'a Peer) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async { Err("no adapter is registered".to_owned()) })
    }

    fn fetch_peer<'a>(&'a self, _: &'a Node, _: &'a Endpoint) -> BoxFuture<'a, Result<Fetched, FetchError>> {
        Box::pin(async { Err(FetchError::Probe(ProbeError::NotADocument("no adapter is registered".into()))) })
    }

    fn peer_from_document(&self, _: &str, _: &serde_json::Value, _: i64) -> Option<Peer> {
        None
    }
}
