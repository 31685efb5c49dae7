//! Agent identities: keys, agent ids and fingerprints.
//!
//! An agent has two key pairs: an Ed25519 key (RFC 8032) that signs, and an X25519 key (RFC 7748)
//! that receives HPKE-encrypted bodies (RFC 9180, DHKEM(X25519, HKDF-SHA256)). Its identity is
//! derived from the Ed25519 public key alone:
//!
//! * agent id: the first 8 bytes of SHA-256(raw 32-byte Ed25519 public key), 16 lowercase hex;
//! * fingerprint: `sha256:` + the full 64 lowercase hex of that digest.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Serializable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::rotation::RotationStatement;

/// The HPKE KEM used for bodies: DHKEM(X25519, HKDF-SHA256), RFC 9180 §7.1.
pub type Kem = X25519HkdfSha256;

/// A 16-character lowercase hex agent id (8 bytes of SHA-256 of the Ed25519 public key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId([u8; 8]);

impl AgentId {
    /// Derives the agent id of an Ed25519 public key.
    pub fn from_key(key: &VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        AgentId(id)
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({self})")
    }
}

/// Error parsing an [`AgentId`]: it must be exactly 16 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an agent id is 16 lowercase hex characters")]
pub struct ParseAgentIdError;

impl FromStr for AgentId {
    type Err = ParseAgentIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(ParseAgentIdError);
        }
        let mut id = [0u8; 8];
        hex::decode_to_slice(s, &mut id).map_err(|_| ParseAgentIdError)?;
        Ok(AgentId(id))
    }
}

impl Serialize for AgentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `sha256:` + 64 lowercase hex of SHA-256 over some key encoding.
///
/// Native agents fingerprint the raw 32-byte Ed25519 key; Agent Mesh V1 peers fingerprint the exact
/// SPKI PEM text of their key (`../shared/PROTOCOLS.md` §1).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of arbitrary bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Fingerprint(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The text form, `sha256:<64 hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.0)
    }
}

/// The public half of an agent's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeys {
    /// Ed25519 signature key (32 bytes raw).
    pub ed25519: VerifyingKey,
    /// X25519 HPKE key (32 bytes raw).
    pub x25519: [u8; 32],
}

impl PublicKeys {
    /// The agent id derived from the Ed25519 key: the agent's id when this is its genesis key.
    pub fn agent_id(&self) -> AgentId {
        AgentId::from_key(&self.ed25519)
    }

    /// The fingerprint of the Ed25519 key.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.ed25519.as_bytes())
    }
}

/// An agent's secret keys. Never leaves the host; zeroized on drop; `Debug` prints no secret.
pub struct Identity {
    signing: SigningKey,
    x25519_secret: Zeroizing<[u8; 32]>,
    public: PublicKeys,
    agent_id: AgentId,
    rotations: Vec<RotationStatement>,
}

/// Error loading an [`Identity`] from stored secret bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The X25519 secret is not a valid 32-byte key.
    #[error("the X25519 secret key is not a valid 32-byte key")]
    InvalidX25519,
}

impl Identity {
    /// Generates fresh Ed25519 and X25519 key pairs from the operating system's CSPRNG.
    pub fn generate() -> Self {
        loop {
            let ed_seed = Zeroizing::new(rand::random::<[u8; 32]>());
            // An X25519 secret is any 32 bytes, clamped at use (RFC 7748 §5); the loop only
            // guards against the KEM refusing a key, which it does not do for X25519.
            let x_seed = Zeroizing::new(rand::random::<[u8; 32]>());
            if let Ok(identity) = Self::from_secret_bytes(&ed_seed, &x_seed) {
                return identity;
            }
        }
    }

    /// Rebuilds an identity from its two 32-byte secret keys.
    pub fn from_secret_bytes(ed25519: &[u8; 32], x25519: &[u8; 32]) -> Result<Self, KeyError> {
        let signing = SigningKey::from_bytes(ed25519);
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(x25519).map_err(|_| KeyError::InvalidX25519)?;
        let pk = <Kem as hpke::Kem>::sk_to_pk(&sk);
        let mut x_pub = [0u8; 32];
        x_pub.copy_from_slice(&pk.to_bytes());
        let public = PublicKeys { ed25519: signing.verifying_key(), x25519: x_pub };
        let agent_id = public.agent_id();
        Ok(Identity { signing, x25519_secret: Zeroizing::new(*x25519), public, agent_id, rotations: Vec::new() })
    }

    /// These keys as the current keys of `agent_id`, which they were rotated into through
    /// `rotations` (oldest first; see [`crate::rotation`]). The chain is checked.
    pub fn with_history(
        mut self,
        agent_id: AgentId,
        rotations: Vec<RotationStatement>,
    ) -> Result<Self, crate::rotation::RotationError> {
        crate::rotation::verify_chain(agent_id, &rotations, &self.public.ed25519, &self.public.x25519)?;
        self.agent_id = agent_id;
        self.rotations = rotations;
        Ok(self)
    }

    /// The rotation statements that lead from the genesis key to these keys; empty before the
    /// first rotation.
    pub fn rotations(&self) -> &[RotationStatement] {
        &self.rotations
    }

    /// The 32-byte Ed25519 secret seed, for writing to the 0600 key file only.
    pub fn ed25519_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The 32-byte X25519 secret, for writing to the 0600 key file only.
    pub fn x25519_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.x25519_secret.clone()
    }

    /// The public keys.
    pub fn public(&self) -> &PublicKeys {
        &self.public
    }

    /// The agent id: derived from the genesis key, so it survives rotations.
    pub fn agent_id(&self) -> AgentId {
        self.agent_id
    }

    /// The fingerprint of the current Ed25519 key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint()
    }

    /// Signs `message` with Ed25519; returns the 64-byte signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The HPKE private key for opening bodies addressed to us.
    pub(crate) fn hpke_secret(&self) -> Option<<Kem as hpke::Kem>::PrivateKey> {
        <Kem as hpke::Kem>::PrivateKey::from_bytes(&self.x25519_secret[..]).ok()
    }

    /// The Ed25519 public key as SPKI PEM text (RFC 8410), `\n` line endings, trailing newline.
    pub fn ed25519_pem(&self) -> String {
        ed25519_pem(&self.public.ed25519)
    }
}

/// An Ed25519 public key as SPKI PEM text (RFC 8410 / RFC 7468), LF line endings.
pub fn ed25519_pem(key: &VerifyingKey) -> String {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
}

/// Parses SPKI PEM text holding an Ed25519 public key; `None` when it is not one.
pub fn ed25519_from_pem(pem: &str) -> Option<VerifyingKey> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    VerifyingKey::from_public_key_pem(pem).ok()
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("agent_id", &self.agent_id()).field("secret_keys", &"SecretKey(..)").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_and_fingerprint_derivation() {
        let id = Identity::from_secret_bytes(&[7u8; 32], &[9u8; 32]).expect("keys");
        let digest = hex::encode(Sha256::digest(id.public().ed25519.as_bytes()));
        assert_eq!(id.agent_id().to_string(), digest[..16]);
        assert_eq!(id.fingerprint().as_str(), format!("sha256:{digest}"));
        assert_eq!(id.agent_id().to_string().parse::<AgentId>(), Ok(id.agent_id()));
        assert!("ABCDEF0123456789".parse::<AgentId>().is_err());
        assert!("abc".parse::<AgentId>().is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let id = Identity::from_secret_bytes(&[7u8; 32], &[9u8; 32]).expect("keys");
        let dbg = format!("{id:?}");
        assert!(dbg.contains("SecretKey(..)"));
        assert!(!dbg.contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn pem_round_trip() {
        let id = Identity::generate();
        let pem = id.ed25519_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n") && pem.ends_with("-----END PUBLIC KEY-----\n"));
        assert_eq!(ed25519_from_pem(&pem), Some(id.public().ed25519));
    }
}
