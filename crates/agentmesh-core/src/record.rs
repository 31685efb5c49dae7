//! Peer records: an agent card wrapped with a validity window and signed again, what bootstrap
//! nodes and gossip pass around.
//!
//! ```json
//! {"v":1,"card":{…agent card…},"issued_at":<ms since epoch>,"expires_at":<ms since epoch>,
//!  "sig":"<b64 Ed25519 signature, 64 bytes>"}
//! ```
//!
//! `sig` is Ed25519 (RFC 8032, strict) by the card's current key over
//! `"agentmesh/v1 peer-record\n"` followed by the [canonical JSON](crate::canonical) of the record
//! without `sig`. A record is valid at time `now` when its card verifies ([`AgentCard::verify`]:
//! self-signature, id derived from the key through any rotation chain), its signature verifies
//! under the card's key, `issued_at <= now + skew`, `now < expires_at`, and the window
//! `expires_at - issued_at` is at most [`MAX_RECORD_TTL_MS`]. Because only the key holder can
//! sign one, a relay can pass records on but never forge or extend them.

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::card::{AgentCard, CardError};
use crate::keys::{Identity, PublicKeys};
use crate::{b64, canonical};

const RECORD_DOMAIN: &[u8] = b"agentmesh/v1 peer-record\n";

/// Longest validity window a record may claim: one day, in ms.
pub const MAX_RECORD_TTL_MS: u64 = 86_400_000;

/// A signed, expiring peer record. See the module docs for the wire shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRecord {
    /// Format version, `1`.
    pub v: u32,
    /// The agent's card.
    pub card: AgentCard,
    /// When the record was signed, ms since the epoch.
    pub issued_at: u64,
    /// When it stops being valid, ms since the epoch.
    pub expires_at: u64,
    /// Ed25519 signature by the card's key, standard base64 of 64 bytes.
    pub sig: String,
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The card inside does not verify.
    #[error("peer record's card: {0}")]
    Card(CardError),
    /// Unsupported version, or a validity window that is empty, longer than a day, or starts
    /// in the future.
    #[error("peer record is malformed: {0}")]
    Malformed(&'static str),
    /// `expires_at` has passed.
    #[error("peer record has expired")]
    Expired,
    /// The record's signature does not verify under the card's key.
    #[error("peer record signature is invalid")]
    BadSignature,
}

impl PeerRecord {
    /// Signs a record for `card` (which must be `identity`'s) valid for `ttl_ms` from `now`.
    pub fn sign(identity: &Identity, card: AgentCard, now: u64, ttl_ms: u64) -> Self {
        let mut record = PeerRecord {
            v: 1,
            card,
            issued_at: now,
            expires_at: now.saturating_add(ttl_ms.min(MAX_RECORD_TTL_MS)),
            sig: String::new(),
        };
        record.sig = b64::encode(identity.sign(&record.signing_bytes()));
        record
    }

    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut bytes = RECORD_DOMAIN.to_vec();
        if let Ok(Value::Object(mut map)) = serde_json::to_value(self) {
            map.remove("sig");
            bytes.extend_from_slice(canonical::to_string(&Value::Object(map)).as_bytes());
        }
        bytes
    }

    /// Checks the record at `now` (ms), allowing `skew_ms` of clock difference on `issued_at`.
    /// Returns the card's verified keys.
    pub fn verify(&self, now: u64, skew_ms: u64) -> Result<PublicKeys, RecordError> {
        if self.v != 1 {
            return Err(RecordError::Malformed("unsupported version"));
        }
        if self.expires_at <= self.issued_at || self.expires_at - self.issued_at > MAX_RECORD_TTL_MS {
            return Err(RecordError::Malformed("validity window must be 1 ms to 1 day"));
        }
        if self.issued_at > now.saturating_add(skew_ms) {
            return Err(RecordError::Malformed("issued in the future"));
        }
        if self.expires_at <= now {
            return Err(RecordError::Expired);
        }
        let keys = self.card.verify().map_err(RecordError::Card)?;
        let sig = b64::decode_array::<64>(&self.sig).ok_or(RecordError::BadSignature)?;
        keys.ed25519
            .verify_strict(&self.signing_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| RecordError::BadSignature)?;
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(now: u64) -> (Identity, PeerRecord) {
        let id = Identity::generate();
        let card = AgentCard::new(&id, "a", vec!["http://127.0.0.1:1".into()], vec!["search".into()], vec![], 1);
        let record = PeerRecord::sign(&id, card, now, 1_800_000);
        (id, record)
    }

    #[test]
    fn valid_until_it_expires() {
        let (id, r) = record(1_000_000);
        assert_eq!(r.verify(1_000_000, 0).map(|k| k.ed25519), Ok(id.public().ed25519));
        assert_eq!(r.verify(2_800_000, 0), Err(RecordError::Expired));
        assert!(matches!(r.verify(900_000, 0), Err(RecordError::Malformed(_))), "issued in the future");
        let back: PeerRecord = serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert!(back.verify(1_000_001, 0).is_ok());
    }

    #[test]
    fn relays_cannot_extend_or_swap() {
        let (_, r) = record(1_000_000);
        let mut extended = r.clone();
        extended.expires_at += 60_000;
        assert_eq!(extended.verify(1_000_000, 0), Err(RecordError::BadSignature));
        let (_, other) = record(1_000_000);
        let mut swapped = r.clone();
        swapped.card = other.card;
        assert_eq!(swapped.verify(1_000_000, 0), Err(RecordError::BadSignature));
    }
}
