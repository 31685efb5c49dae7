//! The agentmesh node: the daemon behind `agentmesh up`.
//!
//! It serves two HTTP APIs from two listeners:
//!
//! * the **peer API** ([`peer_api`]), what other agents call: our native routes under `/v1/` and
//!   the Agent Mesh V1 routes under `/agent-mesh/` ([`compat::agent_mesh_v1`]);
//! * the **control API** ([`control_api`]), what the owner and the CLI call: bound to
//!   `127.0.0.1` on its own port, every request authenticated with a bearer token that the node
//!   writes to `<home>/control.token` (mode 0600) at start.
//!
//! Everything sent goes through the durable outbox ([`outbox`]); everything received is verified
//! and stored before it is acknowledged.

pub mod compat;
pub mod config;
pub mod control_api;
pub mod db;
pub mod discovery;
pub mod error;
pub mod fuzzing;
pub mod gossip;
pub mod home;
pub mod limits;
pub mod mdns;
pub mod net;
pub mod outbox;
pub mod peer_api;
pub mod registration;
mod run;

use agentmesh_core::{AgentCard, Identity};
use agentmesh_store::{ContactRequest, Message, Store};

use crate::db::Db;
use serde::Serialize;
use tokio::sync::{Notify, broadcast};

pub use config::Config;
pub use error::ApiError;
pub use home::{Home, Profile, RuntimeInfo};
pub use run::{UpOptions, run};

/// Something that happened, streamed to `list-messages --follow` and other watchers.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A message arrived and was stored.
    Message {
        /// The stored message.
        message: Message,
    },
    /// An outgoing entry changed state (`sent`, `delivered`, `read`, `failed`, `queued`).
    Status {
        /// Message id.
        id: String,
        /// Recipient.
        peer_id: String,
        /// Entry kind (`message`, `receipt`, `contact_request`, `contact_response`).
        kind: String,
        /// New status.
        status: String,
        /// When, ms.
        at: i64,
        /// Delivery error, for `queued`/`sent` retries and `failed`.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A contact request arrived.
    ContactRequest {
        /// The stored request.
        request: ContactRequest,
    },
    /// A pinned agent id presented another key and was refused; see `status` and `repin`.
    KeyMismatch {
        /// The record (peer, pinned and presented fingerprints, direction, count).
        mismatch: agentmesh_store::KeyMismatch,
    },
    /// A contact rotated its keys; its pin moved along its verified rotation chain.
    KeyRotated {
        /// The contact.
        peer_id: String,
        /// Fingerprint of its new key.
        fingerprint: String,
    },
    /// A peer answered one of our contact requests.
    ContactResponse {
        /// The request answered.
        request_id: String,
        /// Who answered.
        peer_id: String,
        /// Whether they approved.
        accepted: bool,
    },
}

/// Batches up to this many envelopes are signed, verified and opened on the calling task.
const INLINE_CRYPTO_ITEMS: usize = 4;

/// Our keys and the card that publishes them; replaced as a whole by a key rotation.
pub struct Keys {
    /// Current keys, agent id and rotation chain.
    pub identity: Identity,
    /// Our signed agent card, carrying the rotation chain.
    pub card: AgentCard,
    /// The keys before the last rotation, honoured until the instant given (ms): bodies sealed to
    /// them are opened, and answered with receipts signed by them.
    pub previous: Option<(Identity, u64)>,
}

impl Keys {
    /// The previous keys while their grace period lasts.
    pub fn previous(&self, now_ms: u64) -> Option<&Identity> {
        self.previous.as_ref().filter(|(_, until)| *until > now_ms).map(|(id, _)| id)
    }
}

/// Shared state of a running node.
pub struct Node {
    /// Our keys and card (see [`Node::keys`]).
    keys: std::sync::RwLock<std::sync::Arc<Keys>>,
    /// Our agent id, fixed for the node's life (it survives rotations).
    agent_id: agentmesh_core::AgentId,
    /// Settings.
    pub config: Config,
    /// Our advertised base URL.
    pub endpoint: String,
    /// The database thread (one connection, group commit).
    pub db: Db,
    /// Event fan-out (bounded; slow watchers miss events and are told so).
    pub events: broadcast::Sender<Event>,
    /// Wakes the outbox worker when something is queued.
    pub outbox_wake: Notify,
    /// Outbound HTTP client (timeouts set; proxies ignored).
    pub http: reqwest::Client,
    /// Rate limits of the peer API.
    pub limits: limits::RateLimits,
    /// Set while `key_rotation` announcements may be queued: the outbox then sends them to each
    /// contact before anything else (signed with the new key, which the contact learns from them).
    pub rotation_pending: std::sync::atomic::AtomicBool,
    /// Our signed peer record as last issued: `(issued_at ms, fingerprint, JSON)`.
    pub(crate) own_record: std::sync::Mutex<Option<(u64, String, String)>>,
}

impl Node {
    /// Runs `f` atomically against the store on the database thread; resolves once committed.
    pub async fn db<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> agentmesh_store::Result<T> + Send + 'static,
    {
        self.db.run(f).await
    }

    /// Runs CPU work (signatures, HPKE) for `items` envelopes: inline when there are few (a
    /// thread hand-off costs more than ~0.3 ms of crypto), on the blocking pool otherwise.
    pub async fn crypto<T, F>(&self, items: usize, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if items <= INLINE_CRYPTO_ITEMS {
            return Ok(f());
        }
        tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)
    }

    /// How long a client may take to send a request body.
    pub fn body_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.config.body_read_timeout_secs.max(1))
    }

    /// Stores a key mismatch and tells watchers; the caller refuses the peer.
    pub async fn record_key_mismatch(&self, mismatch: agentmesh_store::KeyMismatch) {
        tracing::warn!(
            peer = %mismatch.peer_id,
            pinned = %mismatch.pinned_fingerprint,
            presented = %mismatch.presented_fingerprint,
            direction = %mismatch.direction,
            "pinned agent presented another key; refused until `agentmesh repin`"
        );
        let m = mismatch.clone();
        if self.db(move |s| s.record_key_mismatch(&m)).await.is_ok() {
            self.emit(Event::KeyMismatch { mismatch });
        }
    }

    /// Publishes an event; nobody listening is fine.
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Our agent id as text.
    pub fn agent_id(&self) -> String {
        self.agent_id.to_string()
    }

    /// Our agent id.
    pub fn id(&self) -> agentmesh_core::AgentId {
        self.agent_id
    }

    /// The current keys and card; a snapshot that stays valid across a concurrent rotation.
    pub fn keys(&self) -> std::sync::Arc<Keys> {
        std::sync::Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Installs new keys and card after a rotation.
    pub fn set_keys(&self, keys: Keys) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(keys);
    }

    /// Assembles a node from its parts (what `agentmesh up` does after loading the home).
    pub fn new(keys: Keys, config: Config, endpoint: String, db: Db, http: reqwest::Client) -> Self {
        let (events, _) = broadcast::channel(1024);
        let limits = limits::RateLimits::new(&config);
        Node {
            agent_id: keys.identity.agent_id(),
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            config,
            endpoint,
            db,
            events,
            outbox_wake: Notify::new(),
            http,
            limits,
            rotation_pending: std::sync::atomic::AtomicBool::new(true),
            own_record: std::sync::Mutex::new(None),
        }
    }
}
