//! Pure building blocks of agentmesh: identities, agent cards, envelopes and receipts.
//!
//! Nothing in this crate performs I/O; the node, store and CLI crates build on it.
//!
//! * [`keys`]: the Ed25519 signing key and X25519 (HPKE) encryption key of an agent,
//!   [`AgentId`] and [`Fingerprint`].
//! * [`peer`]: [`PeerId`], the id of any peer (native or not), and the [`Protocol`]s we speak.
//! * [`card`]: the self-signed [`AgentCard`] an agent publishes.
//! * [`record`]: the signed, expiring [`PeerRecord`] that bootstrap nodes and gossip pass on.
//! * [`rotation`]: the [`RotationStatement`] chain that keeps an agent id across key rotations.
//! * [`envelope`]: the signed, end-to-end encrypted [`Envelope`] every native message travels in,
//!   and the signed [`DeliveryReceipt`] that acknowledges it.
//! * [`canonical`]: Python-compatible canonical JSON (`json.dumps(sort_keys=True,
//!   separators=(",", ":"))`), used for agent cards and the Agent Mesh V1 wire format.
//!
//! ```no_run
//! use agentmesh_core::{Identity, envelope::{Draft, EnvelopeKind}, time::now_ms};
//!
//! let alice = Identity::generate();
//! let bob = Identity::generate();
//! let draft = Draft::new(EnvelopeKind::Message, alice.agent_id(), bob.agent_id(), now_ms(), 3_600_000,
//!     "text/plain; charset=utf-8", b"hello".to_vec());
//! let sealed = draft.seal(&bob.public().x25519).expect("seal");
//! let envelope = sealed.sign(&alice, now_ms());
//! envelope.verify(&alice.public().ed25519).expect("authentic");
//! assert_eq!(envelope.open(&bob).expect("decrypt"), b"hello");
//! ```

pub mod b64;
pub mod call;
pub mod canonical;
pub mod card;
pub mod endpoint;
pub mod envelope;
pub mod file;
pub mod ids;
pub mod keys;
pub mod peer;
pub mod record;
pub mod rotation;
pub mod task;
pub mod text;
pub mod time;

pub use card::{AgentCard, CardError};
pub use envelope::{DeliveryReceipt, Envelope, EnvelopeKind, OpenError, VerifyError};
pub use keys::{AgentId, Fingerprint, Identity, PublicKeys};
pub use peer::{ParsePeerIdError, PeerId, Protocol};
pub use record::{PeerRecord, RecordError};
pub use rotation::{RotationError, RotationStatement};

/// The name of our native protocol as it appears in agent cards.
pub const PROTOCOL_NATIVE: &str = "agentmesh/1";
/// The Agent Mesh V1 protocol name (`../shared/PROTOCOLS.md` §1).
pub const PROTOCOL_AGENT_MESH_V1: &str = "openclaw-agent-mesh/v1";
