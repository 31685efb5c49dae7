//! The agentmesh domain: what a node is, whatever carries its bytes. It holds the [`Node`]
//! (keys, settings, the database thread, the adapters and carriers it was built with), the trust
//! state machine ([`trust`]), the one inbound path every protocol's parsed envelopes go through
//! ([`pipeline`]), the services the control API and the tools call ([`service`]), the durable
//! outbox and its worker ([`outbox`]), and the traits the edges implement: an
//! [`adapter::Adapter`] per wire protocol and a [`carrier::Carrier`] per way of carrying
//! requests. It depends on no HTTP or QUIC crate: the HTTP and control routers, the protocols'
//! routes and adapters, A2A and the carriers live in `agentmesh-node`, which builds a node from
//! them.
//!
//! Everything sent goes through the outbox before any network I/O; everything received is
//! verified and stored before it is acknowledged.

pub mod adapter;
pub mod admission;
pub mod carrier;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod home;
pub mod limits;
pub mod outbox;
pub mod paths;
pub mod pipeline;
pub mod remote;
pub mod service;
pub mod trust;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use agentmesh_api::{ClockSkew, Event};
use agentmesh_core::{AgentCard, AgentId, Identity, PeerId};
use agentmesh_store::{NewOutbound, Store};
use tokio::sync::{Notify, broadcast, oneshot};

pub use config::{Config, HooksConfig};
pub use error::{Error, LaunchError};
pub use home::{Home, Profile, RuntimeInfo};

use crate::adapter::Adapters;
use crate::carrier::Carriers;
use crate::db::Db;
use crate::limits::RateLimits;

/// Batches up to this many envelopes are signed, verified and opened on the calling task.
const INLINE_CRYPTO_ITEMS: usize = 4;

/// Most contact-request deliveries waited on at once (`request-contact` waits for the first
/// attempt's outcome).
const MAX_DELIVERY_WAITERS: usize = 1024;

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

/// The first delivery outcome of an outbox entry, for a caller waiting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstOutcome {
    /// Acknowledged by the peer.
    Delivered,
    /// Not yet: will be retried.
    Retrying {
        /// The peer's error code when it refused.
        code: Option<String>,
        /// What went wrong.
        message: String,
    },
    /// Refused for good.
    Failed {
        /// The peer's error code when it refused.
        code: Option<String>,
        /// What went wrong.
        message: String,
    },
}

/// What [`Node::assemble`] builds a node from.
pub struct Parts {
    /// Our keys and signed card.
    pub keys: Keys,
    /// Settings.
    pub config: Config,
    /// The endpoints the card lists, in order of preference (URI strings).
    pub endpoints: Vec<String>,
    /// The database thread.
    pub db: Db,
    /// The adapter of each protocol spoken.
    pub adapters: Adapters,
    /// The carriers that reach peers' nodes.
    pub carriers: Carriers,
    /// What the owner should fix, found at start (shown by `status`).
    pub warnings: Vec<String>,
}

/// Shared state of a running node. Its parts are private; the services reach them through
/// methods that keep the invariants (an enqueue wakes the outbox, events leave only after their
/// transaction commits).
pub struct Node {
    agent_id: AgentId,
    keys: RwLock<Arc<Keys>>,
    config: Config,
    /// The endpoints our card lists, in order of preference.
    endpoints: Vec<String>,
    db: Db,
    outbox_wake: Notify,
    limits: RateLimits,
    adapters: Adapters,
    carriers: Carriers,
    /// Set while `key_rotation` announcements may be queued: the outbox then sends them to each
    /// contact before anything else (signed with the new key, which the contact learns from them).
    rotation_pending: AtomicBool,
    /// Our signed peer record as last issued: `(issued_at ms, fingerprint, JSON)`.
    own_record: Mutex<Option<(u64, String, String)>>,
    /// Callers waiting for an outbox entry's first delivery outcome, by entry id.
    waiters: Mutex<HashMap<String, oneshot::Sender<FirstOutcome>>>,
    /// Whether each peer answered our last deliveries (bounded by [`MAX_REACHABILITY`]).
    reachability: Mutex<HashMap<PeerId, bool>>,
    /// Peers whose nodes last reported our clock off (bounded by [`MAX_CLOCK_SKEWS`]).
    clock_skews: Mutex<HashMap<PeerId, ClockSkew>>,
    /// What the owner should fix, found at start (an endpoint peers may not reach, …).
    warnings: Vec<String>,
    /// Which peer API connections are kept (per-address caps, a share for contacts).
    admission: admission::Admission,
    /// Recipients of recent sends as last read, by the text the owner named them with: lets a
    /// send seal before its one database visit, which checks the peer again (bounded by
    /// [`MAX_SEND_PEERS`]; a stale entry only costs a second visit).
    /// File transfers: where files go, the downloads running, the fetch budget.
    files: service::files::Files,
    send_peers: Mutex<HashMap<String, agentmesh_store::Peer>>,
    /// A2A streams that may be open at once (`max_event_streams`, a quarter of them for one
    /// client), by client name.
    a2a_streams: limits::SharedSlots<String>,
}

/// Most peers whose reachability is remembered.
const MAX_REACHABILITY: usize = 4096;

/// Most recipients remembered for sending.
const MAX_SEND_PEERS: usize = 1024;

/// How long a new peer connection is safe from being shed to make room: time to send its first
/// request head.
const CONNECTION_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Most clock-skew reports kept.
const MAX_CLOCK_SKEWS: usize = 256;

/// A transaction of the node: the store, plus what to do once it commits (wake the outbox for
/// what was queued, publish the events).
pub struct Tx<'a> {
    store: &'a Store,
    node: &'a Node,
    queued: Cell<usize>,
    events: RefCell<Vec<Event>>,
}

impl std::ops::Deref for Tx<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.store
    }
}

impl Tx<'_> {
    /// The node.
    pub fn node(&self) -> &Node {
        self.node
    }

    /// Writes an entry to the outbox; the worker is woken once the transaction commits.
    pub fn enqueue(&self, outbound: &NewOutbound) -> Result<(), Error> {
        self.store.enqueue(outbound)?;
        self.queued.set(self.queued.get() + 1);
        Ok(())
    }

    /// Publishes `event` once the transaction commits.
    pub fn emit(&self, event: Event) {
        self.events.borrow_mut().push(event);
    }

    /// Runs `f` in a savepoint: when it fails, its writes, queued entries and events are
    /// dropped and nothing else is.
    pub fn atomic<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let (queued, events) = (self.queued.get(), self.events.borrow().len());
        let result = self.store.atomic(|_| f(self));
        if result.is_err() {
            self.queued.set(queued);
            self.events.borrow_mut().truncate(events);
        }
        result
    }
}

impl Node {
    /// Assembles a node from its parts: what `agentmesh-node`'s `NodeBuilder` does once the home is loaded and
    /// the carriers started, and what tests that need no process do.
    pub fn assemble(parts: Parts) -> Self {
        let Parts { keys, config, endpoints, db, adapters, carriers, warnings } = parts;
        let limits = RateLimits::new(&config);
        Node {
            agent_id: keys.identity.agent_id(),
            keys: RwLock::new(Arc::new(keys)),
            endpoints,
            db,
            outbox_wake: Notify::new(),
            limits,
            adapters,
            carriers,
            rotation_pending: AtomicBool::new(true),
            own_record: Mutex::new(None),
            waiters: Mutex::new(HashMap::new()),
            clock_skews: Mutex::new(HashMap::new()),
            files: service::files::Files::new(),
            reachability: Mutex::new(HashMap::new()),
            warnings,
            send_peers: Mutex::new(HashMap::new()),
            a2a_streams: limits::SharedSlots::new(config.max_event_streams, config.max_event_streams.div_ceil(4)),
            admission: admission::Admission::new(admission::Limits {
                max: config.max_connections,
                per_ip: config.max_connections_per_ip,
                reserved: config.reserved_connections,
                grace: CONNECTION_GRACE,
            }),
            config,
        }
    }

    /// The recipient last resolved from `to` by a send, if remembered.
    pub fn send_peer(&self, to: &str) -> Option<agentmesh_store::Peer> {
        self.send_peers.lock().unwrap_or_else(|p| p.into_inner()).get(to).cloned()
    }

    /// Remembers the recipient `to` resolved to (forgets them all when the table is full).
    pub fn remember_send_peer(&self, to: &str, peer: agentmesh_store::Peer) {
        let mut peers = self.send_peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_SEND_PEERS && !peers.contains_key(to) {
            peers.clear();
        }
        peers.insert(to.to_owned(), peer);
    }

    /// File transfers.
    pub fn files(&self) -> &service::files::Files {
        &self.files
    }

    /// Our signed peer record as last issued, `(issued_at ms, fingerprint, JSON)`: gossip reuses
    /// it until the keys change or it ages.
    pub fn own_record(&self) -> &Mutex<Option<(u64, String, String)>> {
        &self.own_record
    }

    /// Start-up warnings for the owner.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Runs `f` atomically against the store on the database thread; resolves once committed.
    pub async fn db<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, Error> + Send + 'static,
    {
        self.db.run(f).await
    }

    /// Runs `f` atomically in a [`Tx`]; the events it emitted are written to the event log in
    /// the same transaction. Once committed, wakes the outbox if `f` queued anything and
    /// publishes the events. On error nothing of it is kept or published.
    pub async fn transact<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, Error> + Send + 'static,
    {
        let node = Arc::clone(self);
        let (value, queued) = self
            .db
            .run_logged(move |store| {
                let tx = Tx { store, node: &node, queued: Cell::new(0), events: RefCell::new(Vec::new()) };
                let value = f(&tx)?;
                let events = tx.events.into_inner();
                let mut logged = Vec::with_capacity(events.len());
                if !events.is_empty() {
                    let at = agentmesh_core::time::now_ms() as i64;
                    for event in events {
                        logged.push(store.append_event(at, event)?);
                    }
                }
                Ok(((value, tx.queued.get()), logged))
            })
            .await?;
        if queued > 0 {
            self.outbox_wake.notify_one();
        }
        Ok(value)
    }

    /// Runs CPU work (signatures, HPKE) for `items` envelopes: inline when there are few (a
    /// thread hand-off costs more than ~0.3 ms of crypto), on the blocking pool otherwise.
    pub async fn crypto<T, F>(&self, items: usize, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if items <= INLINE_CRYPTO_ITEMS {
            return Ok(f());
        }
        tokio::task::spawn_blocking(f).await.map_err(Error::internal)
    }

    /// Settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The http(s) base URL our card advertises (its first; empty when the node is reached on
    /// no HTTP endpoint): where Agent Mesh V1 and A2A clients find us.
    pub fn endpoint(&self) -> &str {
        self.endpoints
            .iter()
            .find(|e| matches!(e.parse(), Ok(agentmesh_core::endpoint::Endpoint::Http(_))))
            .map_or("", String::as_str)
    }

    /// Every endpoint our card lists, in order of preference.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Slots for A2A streams (`SendStreamingMessage`, `SubscribeToTask`) open at once, shared
    /// out among clients.
    pub fn a2a_streams(&self) -> &limits::SharedSlots<String> {
        &self.a2a_streams
    }

    /// Which peer API connections are kept.
    pub fn admission(&self) -> &admission::Admission {
        &self.admission
    }

    /// Rate limits of the peer API.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// The adapter of each protocol.
    pub fn adapters(&self) -> &Adapters {
        &self.adapters
    }

    /// The ways requests reach peers' nodes.
    pub fn carriers(&self) -> &Carriers {
        &self.carriers
    }

    /// How long a client may take to send a request body.
    pub fn body_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.config.body_read_timeout_secs.max(1))
    }

    /// Events as they are committed, in cursor order (bounded: see [`db::LIVE_EVENTS`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<agentmesh_api::LoggedEvent>> {
        self.db.subscribe()
    }

    /// Wakes the outbox worker (for entries made due again outside a [`Tx`]).
    pub fn wake_outbox(&self) {
        self.outbox_wake.notify_one();
    }

    /// Resolves when something was queued (or made due again) since the worker last looked.
    pub fn outbox_woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.outbox_wake.notified()
    }

    /// Whether `key_rotation` announcements may be waiting in the outbox: each contact then gets
    /// its announcement before anything else (signed with the new key it announces).
    pub fn rotation_pending(&self) -> bool {
        self.rotation_pending.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets [`rotation_pending`](Self::rotation_pending).
    pub fn set_rotation_pending(&self, pending: bool) {
        self.rotation_pending.store(pending, std::sync::atomic::Ordering::SeqCst);
    }

    /// Finishes queued database work, checkpoints the WAL and stops the database thread.
    pub async fn close_db(&self) -> Result<(), agentmesh_store::StoreError> {
        self.db.close().await
    }

    /// Our agent id.
    pub fn id(&self) -> AgentId {
        self.agent_id
    }

    /// Our agent id as a peer id.
    pub fn peer_id(&self) -> PeerId {
        PeerId::from(self.agent_id)
    }

    /// The current keys and card; a snapshot that stays valid across a concurrent rotation.
    pub fn keys(&self) -> Arc<Keys> {
        Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Installs new keys and card after a rotation.
    pub fn set_keys(&self, keys: Keys) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }

    /// Registers interest in the first delivery outcome of outbox entry `id`; `None` when too
    /// many callers wait already.
    pub fn watch_delivery(&self, id: &str) -> Option<oneshot::Receiver<FirstOutcome>> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.len() >= MAX_DELIVERY_WAITERS {
            waiters.retain(|_, tx| !tx.is_closed());
            if waiters.len() >= MAX_DELIVERY_WAITERS {
                return None;
            }
        }
        let (tx, rx) = oneshot::channel();
        waiters.insert(id.to_owned(), tx);
        Some(rx)
    }

    /// The event to log when `peer`'s reachability changes with `answered` (our deliveries
    /// answered, or the error when it could not be reached): offline the first time it cannot be
    /// reached, online when it answers again. Changes nothing: see [`Node::set_reachability`].
    pub fn reachability_change(&self, peer: &PeerId, answered: &Result<(), String>) -> Option<Event> {
        let before = self.reachability.lock().unwrap_or_else(|p| p.into_inner()).get(peer).copied();
        match (before, answered) {
            (Some(false), Ok(())) => Some(Event::PeerOnline { peer_id: peer.clone() }),
            (None | Some(true), Err(error)) => Some(Event::PeerOffline { peer_id: peer.clone(), error: error.clone() }),
            _ => None,
        }
    }

    /// Records whether `peer` answered, once the change's event is committed (bounded by
    /// [`MAX_REACHABILITY`]: peers known online go first, then everything).
    pub fn set_reachability(&self, peer: PeerId, online: bool) {
        let mut known = self.reachability.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_REACHABILITY && !known.contains_key(&peer) {
            known.retain(|_, online| !*online);
            if known.len() >= MAX_REACHABILITY {
                known.clear();
            }
        }
        known.insert(peer, online);
    }

    /// Remembers that `skew.peer_id` finds our clock off (the caller logs the event).
    pub fn note_clock_skew(&self, skew: ClockSkew) {
        let mut skews = self.clock_skews.lock().unwrap_or_else(|p| p.into_inner());
        if skews.len() >= MAX_CLOCK_SKEWS && !skews.contains_key(&skew.peer_id) {
            let oldest = skews.values().min_by_key(|s| s.at).map(|s| s.peer_id.clone());
            if let Some(oldest) = oldest {
                skews.remove(&oldest);
            }
        }
        skews.insert(skew.peer_id.clone(), skew);
    }

    /// Forgets a clock-skew report once the peer accepts our envelopes again.
    pub fn clear_clock_skew(&self, peer: &PeerId) {
        self.clock_skews.lock().unwrap_or_else(|p| p.into_inner()).remove(peer);
    }

    /// The peers that find our clock off, newest report first.
    pub fn clock_skews(&self) -> Vec<ClockSkew> {
        let mut out: Vec<ClockSkew> =
            self.clock_skews.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.at));
        out
    }

    /// Tells whoever waits on entry `id` how its delivery went.
    pub fn delivery_outcome(&self, id: &str, outcome: FirstOutcome) {
        let waiter = self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        if let Some(tx) = waiter {
            let _ = tx.send(outcome);
        }
    }
}
