//! The agent card: a self-signed document describing an agent.
//!
//! JSON shape (all members required unless noted; unknown members are kept and signed):
//!
//! ```json
//! {"v":1,"agent_id":"<16 hex>","name":"…","ed25519":"<b64, 32 bytes>","x25519":"<b64, 32 bytes>",
//!  "fingerprint":"sha256:<64 hex>","endpoints":["http://127.0.0.1:8787"],"capabilities":["…"],
//!  "protocols":["agentmesh/1","openclaw-agent-mesh/v1"],"created_at":<ms since epoch>,
//!  "rotations":[…],"sig":"<b64 Ed25519 signature, 64 bytes>"}
//! ```
//!
//! `ed25519`, `x25519` and `fingerprint` are the agent's *current* keys. `agent_id` is derived
//! from the first (genesis) Ed25519 key; after a rotation, `rotations` holds the chain of
//! [`RotationStatement`]s from the genesis key to the current one ([`crate::rotation`]). The member
//! is left out while the chain is empty, so cards of never-rotated agents are unchanged.
//!
//! `sig` is Ed25519 (RFC 8032) by the card's own `ed25519` key over the bytes
//! `"agentmesh/v1 card\n"` followed by the [canonical JSON](crate::canonical) of the card without
//! its `sig` member.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::keys::{AgentId, Fingerprint, Identity, PublicKeys};
use crate::rotation::{RotationError, RotationStatement};
use crate::{b64, canonical};

const CARD_DOMAIN: &[u8] = b"agentmesh/v1 card\n";

/// Most endpoints a card may list.
pub const MAX_ENDPOINTS: usize = 8;
/// Longest endpoint a card may list, bytes.
pub const MAX_ENDPOINT_BYTES: usize = 512;
/// Most capabilities a card may list.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Largest serialized card, in bytes.
pub const MAX_CARD_BYTES: usize = 12 * 1024;

/// A self-signed agent card. See the module docs for the wire shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentCard {
    /// Card format version, `1`.
    pub v: u32,
    /// The agent id derived from `ed25519`.
    pub agent_id: AgentId,
    /// Display name, 1 to 64 characters.
    pub name: String,
    /// Ed25519 public key, standard base64 of the 32 raw bytes.
    pub ed25519: String,
    /// X25519 HPKE public key, standard base64 of the 32 raw bytes.
    pub x25519: String,
    /// Fingerprint of `ed25519`.
    pub fingerprint: Fingerprint,
    /// Base URLs where the agent's node is reachable (at most 8).
    pub endpoints: Vec<String>,
    /// What the agent can do, free-form short tags (at most 64).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Protocols the node speaks, e.g. `agentmesh/1`.
    #[serde(default)]
    pub protocols: Vec<String>,
    /// When the identity was created, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Rotation chain from the genesis key to `ed25519`, oldest first; absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotations: Vec<RotationStatement>,
    /// Members this version does not know; kept so the signature still verifies.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Ed25519 signature, standard base64 of 64 bytes.
    pub sig: String,
}

/// Why a card was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    /// Not a card: bad JSON, a missing member, a key that is not 32 bytes of base64, …
    #[error("malformed agent card: {0}")]
    Malformed(String),
    /// A field is over its limit (name, endpoints, capabilities, total size).
    #[error("agent card too large: {0}")]
    TooLarge(&'static str),
    /// `agent_id` is not the id derived from `ed25519` (or, after rotations, from the genesis key).
    #[error("agent card's agent_id does not match its key")]
    IdMismatch,
    /// The rotation chain is invalid (see [`RotationError`]).
    #[error("agent card's rotation chain is invalid: {0}")]
    Rotation(RotationError),
    /// `fingerprint` is not the fingerprint of `ed25519`.
    #[error("agent card's fingerprint does not match its key")]
    FingerprintMismatch,
    /// The self-signature does not verify.
    #[error("agent card signature is invalid")]
    BadSignature,
}

impl AgentCard {
    /// Builds and signs the card of `identity`.
    pub fn new(
        identity: &Identity,
        name: &str,
        endpoints: Vec<String>,
        capabilities: Vec<String>,
        protocols: Vec<String>,
        created_at: u64,
    ) -> Self {
        let public = identity.public();
        let mut card = AgentCard {
            v: 1,
            agent_id: identity.agent_id(),
            name: name.to_owned(),
            ed25519: b64::encode(public.ed25519.as_bytes()),
            x25519: b64::encode(public.x25519),
            fingerprint: identity.fingerprint(),
            endpoints,
            capabilities,
            protocols,
            created_at,
            rotations: identity.rotations().to_vec(),
            extra: Map::new(),
            sig: String::new(),
        };
        card.sig = b64::encode(identity.sign(&card.signing_bytes()));
        card
    }

    /// The bytes the signature covers (see the module docs).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        let text = match &value {
            Value::Object(map) => canonical::to_string_without(map, "sig"),
            _ => String::new(),
        };
        let mut bytes = CARD_DOMAIN.to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes
    }

    /// Canonical JSON of the whole card, signature included; what envelopes bind to.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        canonical::to_string(&value).into_bytes()
    }

    /// Checks limits, that the id derives from the key (through the rotation chain, if any),
    /// the fingerprint, and the self-signature. Returns the card's current public keys.
    pub fn verify(&self) -> Result<PublicKeys, CardError> {
        if self.v != 1 {
            return Err(CardError::Malformed(format!("unsupported card version {}", self.v)));
        }
        let name_chars = self.name.chars().count();
        if name_chars == 0 {
            return Err(CardError::Malformed("empty name".into()));
        }
        if name_chars > MAX_NAME_CHARS {
            return Err(CardError::TooLarge("name"));
        }
        if self.endpoints.len() > MAX_ENDPOINTS || self.endpoints.iter().any(|e| e.len() > MAX_ENDPOINT_BYTES) {
            return Err(CardError::TooLarge("endpoints"));
        }
        if self.capabilities.len() > MAX_CAPABILITIES || self.capabilities.iter().any(|c| c.len() > 64) {
            return Err(CardError::TooLarge("capabilities"));
        }
        if self.protocols.len() > 16 || self.protocols.iter().any(|p| p.len() > 64) {
            return Err(CardError::TooLarge("protocols"));
        }
        let ed = b64::decode_array::<32>(&self.ed25519)
            .ok_or_else(|| CardError::Malformed("ed25519 is not 32 bytes of base64".into()))?;
        let ed25519 = VerifyingKey::from_bytes(&ed)
            .ok()
            .filter(|k| !k.is_weak())
            .ok_or_else(|| CardError::Malformed("ed25519 is not a valid, full-order public key".into()))?;
        let x25519 = b64::decode_array::<32>(&self.x25519)
            .ok_or_else(|| CardError::Malformed("x25519 is not 32 bytes of base64".into()))?;
        let keys = PublicKeys { ed25519, x25519 };
        if self.rotations.is_empty() && keys.agent_id() != self.agent_id {
            return Err(CardError::IdMismatch);
        }
        if keys.fingerprint() != self.fingerprint {
            return Err(CardError::FingerprintMismatch);
        }
        let bytes = self.signing_bytes();
        if bytes.len() > MAX_CARD_BYTES {
            return Err(CardError::TooLarge("card"));
        }
        let sig = b64::decode_array::<64>(&self.sig).ok_or(CardError::BadSignature)?;
        ed25519.verify_strict(&bytes, &Signature::from_bytes(&sig)).map_err(|_| CardError::BadSignature)?;
        if !self.rotations.is_empty() {
            crate::rotation::verify_chain(self.agent_id, &self.rotations, &ed25519, &x25519)
                .map_err(CardError::Rotation)?;
        }
        Ok(keys)
    }

    /// Every Ed25519 key the agent has held, genesis first, the current one last, as raw bytes.
    /// Meaningful only for a card that [`verify`](Self::verify) accepted.
    pub fn key_history(&self) -> Vec<[u8; 32]> {
        let mut keys: Vec<[u8; 32]> =
            self.rotations.iter().filter_map(|r| b64::decode_array::<32>(&r.old_ed25519)).collect();
        keys.extend(b64::decode_array::<32>(&self.ed25519));
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> (Identity, AgentCard) {
        let id = Identity::generate();
        let card = AgentCard::new(
            &id,
            "alice",
            vec!["http://127.0.0.1:8787".into()],
            vec!["chat".into()],
            vec![crate::PROTOCOL_NATIVE.into()],
            1_700_000_000_000,
        );
        (id, card)
    }

    #[test]
    fn signed_card_verifies_and_round_trips() {
        let (id, card) = card();
        assert_eq!(card.verify().expect("valid").agent_id(), id.agent_id());
        let json = serde_json::to_string(&card).expect("json");
        let back: AgentCard = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.verify().map(|k| k.agent_id()), Ok(id.agent_id()));
    }

    #[test]
    fn tampering_is_detected() {
        let (_, card) = card();
        let mut renamed = card.clone();
        renamed.name = "mallory".into();
        assert_eq!(renamed.verify(), Err(CardError::BadSignature));

        let mut extra = card.clone();
        extra.extra.insert("admin".into(), Value::Bool(true));
        assert_eq!(extra.verify(), Err(CardError::BadSignature));

        let other = Identity::generate();
        let mut swapped = card.clone();
        swapped.ed25519 = b64::encode(other.public().ed25519.as_bytes());
        assert_eq!(swapped.verify(), Err(CardError::IdMismatch));
    }

    #[test]
    fn unknown_members_are_signed_and_kept() {
        let id = Identity::generate();
        let mut card = AgentCard::new(&id, "a", vec![], vec![], vec![], 1);
        card.extra.insert("future".into(), Value::String("x".into()));
        card.sig = b64::encode(id.sign(&card.signing_bytes()));
        let back: AgentCard = serde_json::from_str(&serde_json::to_string(&card).expect("json")).expect("parse");
        assert!(back.verify().is_ok());
        assert_eq!(back.extra.get("future"), Some(&Value::String("x".into())));
    }

    #[test]
    fn rotated_cards_keep_the_genesis_id() {
        let genesis = Identity::generate();
        let agent = genesis.agent_id();
        let next = Identity::generate();
        let statement = RotationStatement::sign(agent, 1, &genesis, &next, 5);
        let rotated = Identity::generate().with_history(agent, vec![statement.clone()]);
        assert!(rotated.is_err(), "a chain must end at the identity's own keys");
        let next = next.with_history(agent, vec![statement]).expect("valid chain");
        let card = AgentCard::new(&next, "a", vec![], vec![], vec![], 1);
        assert_eq!(card.agent_id, agent);
        assert_eq!(card.verify().map(|k| k.ed25519), Ok(next.public().ed25519));
        assert_eq!(card.key_history(), vec![genesis.public().ed25519.to_bytes(), next.public().ed25519.to_bytes()]);

        // Someone else's key cannot take the id by re-signing a card with a copied chain.
        let mallory = Identity::generate();
        let mut stolen = AgentCard::new(&mallory, "a", vec![], vec![], vec![], 1);
        stolen.agent_id = agent;
        stolen.rotations = card.rotations.clone();
        stolen.sig = b64::encode(mallory.sign(&stolen.signing_bytes()));
        assert!(matches!(stolen.verify(), Err(CardError::Rotation(RotationError::WrongHead))));
    }
}
