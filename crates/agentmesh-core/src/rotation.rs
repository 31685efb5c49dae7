//! Key rotation: statements that hand an agent id from one key pair to the next.
//!
//! An agent id is derived from the agent's first (genesis) Ed25519 key and never changes. When
//! the agent rotates, it signs a [`RotationStatement`] with **both** the outgoing and the incoming
//! Ed25519 key; its card carries the whole chain, oldest first, so anyone holding the card can
//! check that the current key belongs to the id:
//!
//! ```json
//! {"v":1,"agent_id":"<16 hex>","seq":1,"old_ed25519":"<b64, 32 bytes>",
//!  "new_ed25519":"<b64, 32 bytes>","new_x25519":"<b64, 32 bytes>","rotated_at":<ms since epoch>,
//!  "old_sig":"<b64, 64 bytes>","new_sig":"<b64, 64 bytes>"}
//! ```
//!
//! Both signatures are Ed25519 (RFC 8032, strict verification) over `"agentmesh/v1 rotation\n"`
//! followed by the [canonical JSON](crate::canonical) of the statement without `old_sig` and
//! `new_sig`. A chain `s1 … sn` is valid for agent id `A` and current key `K` when:
//!
//! 1. `A` is the id derived from `s1.old_ed25519` (the genesis key);
//! 2. for every `i`: `si.seq == i`, `si.agent_id == A`, `si.old_ed25519` equals the previous
//!    statement's `new_ed25519`, `rotated_at` does not go backwards, and both signatures verify;
//! 3. `sn.new_ed25519 == K`, and `sn.new_x25519` is the card's X25519 key.
//!
//! Chains are at most [`MAX_ROTATIONS`] long. Because the old key signs, a thief of the *new*
//! key alone cannot graft it onto an id; because the new key signs, nobody can name a key they do
//! not hold as the successor.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keys::{AgentId, Identity};
use crate::{b64, canonical};

const ROTATION_DOMAIN: &[u8] = b"agentmesh/v1 rotation\n";

/// Most rotation statements a card may carry.
pub const MAX_ROTATIONS: usize = 16;

/// One link of a rotation chain. See the module docs for the wire shape and rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationStatement {
    /// Statement format version, `1`.
    pub v: u32,
    /// The agent id (derived from the genesis key).
    pub agent_id: AgentId,
    /// Position in the chain, from 1.
    pub seq: u32,
    /// The outgoing Ed25519 key, standard base64 of 32 bytes.
    pub old_ed25519: String,
    /// The incoming Ed25519 key, standard base64 of 32 bytes.
    pub new_ed25519: String,
    /// The incoming X25519 HPKE key, standard base64 of 32 bytes.
    pub new_x25519: String,
    /// When the rotation was made, milliseconds since the Unix epoch.
    pub rotated_at: u64,
    /// Ed25519 signature by the outgoing key, standard base64 of 64 bytes.
    pub old_sig: String,
    /// Ed25519 signature by the incoming key, standard base64 of 64 bytes.
    pub new_sig: String,
}

/// Why a rotation chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// A key or signature is not well-formed base64 of the right length, or a weak key.
    #[error("malformed rotation statement {0}: {1}")]
    Malformed(u32, &'static str),
    /// More than [`MAX_ROTATIONS`] statements.
    #[error("rotation chain longer than {MAX_ROTATIONS}")]
    TooLong,
    /// The genesis key does not derive the agent id.
    #[error("the rotation chain does not start at the key the agent id derives from")]
    WrongGenesis,
    /// A statement's `seq`, `agent_id`, `old_ed25519` or time does not follow the one before.
    #[error("rotation statement {0} does not follow the one before it")]
    Broken(u32),
    /// A signature does not verify.
    #[error("rotation statement {0} has an invalid signature")]
    BadSignature(u32),
    /// The chain ends at another key than the card's.
    #[error("the rotation chain does not end at the card's current key")]
    WrongHead,
}

impl RotationStatement {
    /// Makes statement number `seq` of `agent_id`, handing over from `old` to `new`, signed by both.
    pub fn sign(agent_id: AgentId, seq: u32, old: &Identity, new: &Identity, rotated_at: u64) -> Self {
        let mut statement = RotationStatement {
            v: 1,
            agent_id,
            seq,
            old_ed25519: b64::encode(old.public().ed25519.as_bytes()),
            new_ed25519: b64::encode(new.public().ed25519.as_bytes()),
            new_x25519: b64::encode(new.public().x25519),
            rotated_at,
            old_sig: String::new(),
            new_sig: String::new(),
        };
        let bytes = statement.signing_bytes();
        statement.old_sig = b64::encode(old.sign(&bytes));
        statement.new_sig = b64::encode(new.sign(&bytes));
        statement
    }

    /// The bytes both signatures cover (see the module docs).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut bytes = ROTATION_DOMAIN.to_vec();
        if let Ok(Value::Object(map)) = serde_json::to_value(self) {
            let mut map = map;
            map.remove("old_sig");
            map.remove("new_sig");
            bytes.extend_from_slice(canonical::to_string(&Value::Object(map)).as_bytes());
        }
        bytes
    }
}

fn key(text: &str, seq: u32, what: &'static str) -> Result<VerifyingKey, RotationError> {
    b64::decode_array::<32>(text)
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .filter(|k| !k.is_weak())
        .ok_or(RotationError::Malformed(seq, what))
}

fn check_sig(key: &VerifyingKey, bytes: &[u8], sig: &str, seq: u32) -> Result<(), RotationError> {
    let sig = b64::decode_array::<64>(sig).ok_or(RotationError::Malformed(seq, "signature"))?;
    key.verify_strict(bytes, &Signature::from_bytes(&sig)).map_err(|_| RotationError::BadSignature(seq))
}

/// Verifies `chain` for `agent_id` ending at `current` (ed25519) and `current_x25519`.
///
/// Returns every Ed25519 key the agent has held, genesis first, `current` last. An empty chain
/// is valid when `current` itself derives `agent_id`.
pub fn verify_chain(
    agent_id: AgentId,
    chain: &[RotationStatement],
    current: &VerifyingKey,
    current_x25519: &[u8; 32],
) -> Result<Vec<VerifyingKey>, RotationError> {
    if chain.len() > MAX_ROTATIONS {
        return Err(RotationError::TooLong);
    }
    let Some(first) = chain.first() else {
        return if AgentId::from_key(current) == agent_id {
            Ok(vec![*current])
        } else {
            Err(RotationError::WrongGenesis)
        };
    };
    let genesis = key(&first.old_ed25519, first.seq, "old_ed25519")?;
    if AgentId::from_key(&genesis) != agent_id {
        return Err(RotationError::WrongGenesis);
    }
    let mut keys = vec![genesis];
    let mut last_time = 0u64;
    for (i, statement) in chain.iter().enumerate() {
        let seq = statement.seq;
        let previous = keys[keys.len() - 1];
        if statement.v != 1
            || seq as usize != i + 1
            || statement.agent_id != agent_id
            || statement.rotated_at < last_time
            || key(&statement.old_ed25519, seq, "old_ed25519")? != previous
        {
            return Err(RotationError::Broken(seq));
        }
        let new = key(&statement.new_ed25519, seq, "new_ed25519")?;
        b64::decode_array::<32>(&statement.new_x25519).ok_or(RotationError::Malformed(seq, "new_x25519"))?;
        if keys.contains(&new) {
            return Err(RotationError::Broken(seq));
        }
        let bytes = statement.signing_bytes();
        check_sig(&previous, &bytes, &statement.old_sig, seq)?;
        check_sig(&new, &bytes, &statement.new_sig, seq)?;
        last_time = statement.rotated_at;
        keys.push(new);
    }
    let head = &chain[chain.len() - 1];
    if keys[keys.len() - 1] != *current || b64::decode_array::<32>(&head.new_x25519).as_ref() != Some(current_x25519) {
        return Err(RotationError::WrongHead);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> (AgentId, Vec<Identity>, Vec<RotationStatement>) {
        let mut ids = vec![Identity::generate()];
        let agent = ids[0].agent_id();
        let mut statements = Vec::new();
        for i in 0..n {
            let next = Identity::generate();
            statements.push(RotationStatement::sign(agent, i as u32 + 1, &ids[i], &next, 1000 + i as u64));
            ids.push(next);
        }
        (agent, ids, statements)
    }

    #[test]
    fn a_valid_chain_lists_every_key() {
        let (agent, ids, statements) = chain(3);
        let head = ids[3].public();
        let keys = verify_chain(agent, &statements, &head.ed25519, &head.x25519).expect("valid");
        assert_eq!(keys, ids.iter().map(|i| i.public().ed25519).collect::<Vec<_>>());
        let genesis = ids[0].public();
        assert_eq!(verify_chain(agent, &[], &genesis.ed25519, &genesis.x25519), Ok(vec![genesis.ed25519]));
    }

    #[test]
    fn broken_chains_are_refused() {
        let (agent, ids, statements) = chain(2);
        let head = ids[2].public();
        let verify = |c: &[RotationStatement]| verify_chain(agent, c, &head.ed25519, &head.x25519);

        // Dropping a link, reordering, or ending elsewhere.
        assert!(verify(&statements[1..]).is_err());
        assert_eq!(verify(&statements[..1]), Err(RotationError::WrongHead));
        assert!(verify(&[statements[1].clone(), statements[0].clone()]).is_err());

        // A statement signed by the new key only (the thief of a successor key).
        let mallory = Identity::generate();
        let mut forged = RotationStatement::sign(agent, 3, &mallory, &mallory, 5000);
        forged.old_ed25519 = statements[1].new_ed25519.clone();
        let mut long = statements.clone();
        long.push(forged);
        let m = mallory.public();
        assert_eq!(
            verify_chain(agent, &long, &m.ed25519, &m.x25519),
            Err(RotationError::BadSignature(3)),
            "the outgoing key must sign"
        );

        // Tampering with a signed member.
        let mut tampered = statements.clone();
        tampered[1].rotated_at += 1;
        assert_eq!(verify(&tampered), Err(RotationError::BadSignature(2)));

        // A chain for another agent id.
        let other = Identity::generate().agent_id();
        assert_eq!(verify_chain(other, &statements, &head.ed25519, &head.x25519), Err(RotationError::WrongGenesis));
    }
}
