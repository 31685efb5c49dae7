//! The envelope: how every native agentmesh message travels, and its delivery receipt.
//!
//! # Wire shape (JSON)
//!
//! ```json
//! {"v":1,"id":"<UUIDv7>","type":"message","from":"<agent id>","to":"<agent id>",
//!  "created_at":<ms>,"sent_at":<ms>,"expires_at":<ms>,"reply_to":"<id>","thread":"<text>",
//!  "content_type":"text/plain; charset=utf-8","enc":"<b64, 32 bytes>","body":"<b64 ciphertext>",
//!  "card":{…},"sig":"<b64, 64 bytes>"}
//! ```
//!
//! `reply_to`, `thread` and `card` are optional (`card` carries the sender's agent card on
//! contact requests and responses). Unknown members are refused. All times are milliseconds since
//! the Unix epoch: `created_at` when the message was written, `sent_at` when this copy was signed
//! (each delivery attempt re-signs, so a retry after an outage is still fresh), `expires_at` after
//! which it must not be delivered.
//!
//! # Encryption
//!
//! `body` is sealed with HPKE base mode (RFC 9180 §5.1.1), suite DHKEM(X25519, HKDF-SHA256) /
//! HKDF-SHA256 / ChaCha20-Poly1305, to the recipient's X25519 key. `enc` is the 32-byte
//! encapsulated key. `info` is `"agentmesh/v1 envelope body"`; the associated data binds the
//! envelope to its sender, recipient, id and type: `"agentmesh/v1 aad\n"` followed by
//! `lp(from) lp(to) lp(id) lp(type)`, where `lp(x)` is the 4-byte big-endian length of `x`
//! followed by its UTF-8 bytes.
//!
//! # Signature
//!
//! `sig` is Ed25519 (RFC 8032) by the sender over `"agentmesh/v1 envelope\n"` followed by
//! `lp(v) lp(id) lp(type) lp(from) lp(to) lp(created_at) lp(sent_at) lp(expires_at) opt(reply_to)
//! opt(thread) lp(content_type) lp(enc) lp(body) opt(card_digest)`, numbers in decimal ASCII,
//! `enc` and `body` as their base64 text, `opt(x)` a `0` byte when absent or a `1` byte and
//! `lp(x)` when present, and `card_digest` the raw 32-byte SHA-256 of the card's canonical JSON.

use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::b64;
use crate::card::AgentCard;
use crate::keys::{AgentId, Identity, Kem};

const ENVELOPE_DOMAIN: &[u8] = b"agentmesh/v1 envelope\n";
const RECEIPT_DOMAIN: &[u8] = b"agentmesh/v1 receipt\n";
const AAD_DOMAIN: &[u8] = b"agentmesh/v1 aad\n";
const HPKE_INFO: &[u8] = b"agentmesh/v1 envelope body";

/// Longest message id, thread or reply-to reference, in bytes.
pub const MAX_REF_BYTES: usize = 128;
/// Longest content type, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 128;
/// Content type of plain text message bodies.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
/// Content type of the JSON bodies of receipts and contact requests/responses.
pub const APPLICATION_JSON: &str = "application/json";

/// Latest instant any time field may hold: 9999-12-31T23:59:59.999Z, in ms. Larger values are
/// refused (they would not fit the signed 64-bit integers stores use, nor any calendar).
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// Longest lifetime an envelope may claim (`expires_at - created_at`): 30 days, in ms. Bounds
/// how long a receiver must remember accepted ids to detect replays.
pub const MAX_LIFETIME_MS: u64 = 30 * 86_400_000;

/// What an envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeKind {
    /// A message for the agent; body per `content_type`.
    Message,
    /// A read receipt; body is [`ReceiptBody`].
    Receipt,
    /// A request to become contacts; body is [`ContactRequestBody`], `card` is required.
    ContactRequest,
    /// The answer to a contact request; body is [`ContactResponseBody`], `card` is required.
    ContactResponse,
    /// The sender rotated its keys; body is `{}`, `card` is required and carries the rotation
    /// chain ([`crate::rotation`]); signed with the new key.
    KeyRotation,
    /// The sender changed what the recipient may do (withdrew its request, blocked, unblocked or
    /// removed the recipient); body is [`ContactUpdateBody`].
    ContactUpdate,
}

impl EnvelopeKind {
    /// Every kind.
    pub const ALL: [EnvelopeKind; 6] = [
        EnvelopeKind::Message,
        EnvelopeKind::Receipt,
        EnvelopeKind::ContactRequest,
        EnvelopeKind::ContactResponse,
        EnvelopeKind::KeyRotation,
        EnvelopeKind::ContactUpdate,
    ];

    /// The wire name (`message`, `receipt`, `contact_request`, `contact_response`,
    /// `key_rotation`, `contact_update`).
    pub fn as_str(self) -> &'static str {
        match self {
            EnvelopeKind::Message => "message",
            EnvelopeKind::Receipt => "receipt",
            EnvelopeKind::ContactRequest => "contact_request",
            EnvelopeKind::ContactResponse => "contact_response",
            EnvelopeKind::KeyRotation => "key_rotation",
            EnvelopeKind::ContactUpdate => "contact_update",
        }
    }

    /// The kind with wire name `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether envelopes of this kind carry the sender's card.
    pub fn carries_card(self) -> bool {
        matches!(self, EnvelopeKind::ContactRequest | EnvelopeKind::ContactResponse | EnvelopeKind::KeyRotation)
    }
}

impl fmt::Display for EnvelopeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signed, encrypted envelope. See the module docs for the format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Format version, `1`.
    pub v: u32,
    /// Message id, unique per sender: a UUIDv7 for envelopes we write.
    pub id: String,
    /// What the envelope carries.
    #[serde(rename = "type")]
    pub kind: EnvelopeKind,
    /// Sender's agent id.
    pub from: AgentId,
    /// Recipient's agent id.
    pub to: AgentId,
    /// When the message was written (ms since epoch).
    pub created_at: u64,
    /// When this copy was signed (ms since epoch); checked against the freshness window.
    pub sent_at: u64,
    /// After this instant (ms since epoch) the message must not be delivered.
    pub expires_at: u64,
    /// Id of the message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Conversation thread label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// MIME type of the decrypted body.
    pub content_type: String,
    /// HPKE encapsulated key, base64 of 32 bytes.
    pub enc: String,
    /// HPKE ciphertext of the body (plaintext + 16-byte tag), base64.
    pub body: String,
    /// The sender's agent card (contact requests and responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<AgentCard>,
    /// Ed25519 signature, base64 of 64 bytes; empty while unsigned (in the outbox).
    pub sig: String,
}

/// The plaintext parts of an envelope, before sealing.
#[derive(Clone, Debug)]
pub struct Draft {
    /// Message id (a fresh UUIDv7 from [`Draft::new`]).
    pub id: String,
    /// What the envelope carries.
    pub kind: EnvelopeKind,
    /// Sender.
    pub from: AgentId,
    /// Recipient.
    pub to: AgentId,
    /// Creation time, ms.
    pub created_at: u64,
    /// Expiry, ms.
    pub expires_at: u64,
    /// Answered message id.
    pub reply_to: Option<String>,
    /// Thread label.
    pub thread: Option<String>,
    /// MIME type of `plaintext`.
    pub content_type: String,
    /// The body to encrypt.
    pub plaintext: Vec<u8>,
    /// Sender's card to attach.
    pub card: Option<AgentCard>,
}

/// Why an envelope was refused before or during signature verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A member is out of shape: wrong version, over-long id, base64 of the wrong length, …
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The Ed25519 signature does not verify under the sender's key.
    #[error("envelope signature is invalid")]
    BadSignature,
}

/// Why an envelope body could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// `enc` is not a valid X25519 encapsulated key.
    #[error("envelope enc is not a valid encapsulated key")]
    BadEncappedKey,
    /// Authentication failed: wrong recipient key, altered ciphertext or altered associated data.
    #[error("envelope body could not be decrypted")]
    Decrypt,
}

/// Why sealing failed (the recipient's X25519 key is invalid).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recipient X25519 key is invalid")]
pub struct SealError;

fn lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn opt(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            lp(out, b);
        }
    }
}

fn aad(from: &AgentId, to: &AgentId, id: &str, kind: EnvelopeKind) -> Vec<u8> {
    let mut out = Vec::with_capacity(AAD_DOMAIN.len() + 80);
    out.extend_from_slice(AAD_DOMAIN);
    lp(&mut out, from.to_string().as_bytes());
    lp(&mut out, to.to_string().as_bytes());
    lp(&mut out, id.as_bytes());
    lp(&mut out, kind.as_str().as_bytes());
    out
}

impl Draft {
    /// A draft with a fresh UUIDv7 id, expiring `ttl_ms` after `created_at`.
    pub fn new(
        kind: EnvelopeKind,
        from: AgentId,
        to: AgentId,
        created_at: u64,
        ttl_ms: u64,
        content_type: &str,
        plaintext: Vec<u8>,
    ) -> Self {
        Draft {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            from,
            to,
            created_at,
            expires_at: created_at.saturating_add(ttl_ms),
            reply_to: None,
            thread: None,
            content_type: content_type.to_owned(),
            plaintext,
            card: None,
        }
    }

    /// Encrypts the body to `recipient_x25519`, returning an unsigned envelope (`sig` empty,
    /// `sent_at` 0) ready for the outbox.
    pub fn seal(self, recipient_x25519: &[u8; 32]) -> Result<Envelope, SealError> {
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(recipient_x25519).map_err(|_| SealError)?;
        let aad = aad(&self.from, &self.to, &self.id, self.kind);
        let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeS::Base,
            &pk,
            HPKE_INFO,
            &self.plaintext,
            &aad,
        )
        .map_err(|_| SealError)?;
        Ok(Envelope {
            v: 1,
            id: self.id,
            kind: self.kind,
            from: self.from,
            to: self.to,
            created_at: self.created_at,
            sent_at: 0,
            expires_at: self.expires_at,
            reply_to: self.reply_to,
            thread: self.thread,
            content_type: self.content_type,
            enc: b64::encode(enc.to_bytes()),
            body: b64::encode(ct),
            card: self.card,
            sig: String::new(),
        })
    }
}

impl Envelope {
    /// Returns a copy stamped with `sent_at` and signed by `identity`.
    pub fn sign(&self, identity: &Identity, sent_at: u64) -> Envelope {
        let mut signed = self.clone();
        signed.sent_at = sent_at;
        signed.sig = String::new();
        signed.sig = b64::encode(identity.sign(&signed.signing_bytes()));
        signed
    }

    /// The bytes the signature covers (see the module docs).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENVELOPE_DOMAIN.len() + 200 + self.body.len());
        out.extend_from_slice(ENVELOPE_DOMAIN);
        lp(&mut out, self.v.to_string().as_bytes());
        lp(&mut out, self.id.as_bytes());
        lp(&mut out, self.kind.as_str().as_bytes());
        lp(&mut out, self.from.to_string().as_bytes());
        lp(&mut out, self.to.to_string().as_bytes());
        lp(&mut out, self.created_at.to_string().as_bytes());
        lp(&mut out, self.sent_at.to_string().as_bytes());
        lp(&mut out, self.expires_at.to_string().as_bytes());
        opt(&mut out, self.reply_to.as_deref().map(str::as_bytes));
        opt(&mut out, self.thread.as_deref().map(str::as_bytes));
        lp(&mut out, self.content_type.as_bytes());
        lp(&mut out, self.enc.as_bytes());
        lp(&mut out, self.body.as_bytes());
        let digest = self.card.as_ref().map(|c| Sha256::digest(c.canonical_bytes()));
        opt(&mut out, digest.as_ref().map(|d| d.as_slice()));
        out
    }

    /// Cheap structural checks, done before any lookup or cryptography.
    pub fn check_shape(&self) -> Result<(), VerifyError> {
        let malformed = |m: &str| Err(VerifyError::Malformed(m.to_owned()));
        if self.v != 1 {
            return malformed("unsupported envelope version");
        }
        if !is_ref(&self.id) {
            return malformed("id must be 1 to 128 characters of [A-Za-z0-9_-]");
        }
        if self.reply_to.as_deref().is_some_and(|r| !is_ref(r)) {
            return malformed("reply_to must be 1 to 128 characters of [A-Za-z0-9_-]");
        }
        if self.thread.as_deref().is_some_and(|t| t.is_empty() || t.len() > MAX_REF_BYTES) {
            return malformed("thread must be 1 to 128 bytes");
        }
        if self.content_type.is_empty() || self.content_type.len() > MAX_CONTENT_TYPE_BYTES {
            return malformed("content_type must be 1 to 128 bytes");
        }
        if [self.created_at, self.sent_at, self.expires_at].iter().any(|t| *t > MAX_TIME_MS) {
            return malformed("a time is past the year 9999");
        }
        if self.expires_at < self.created_at {
            return malformed("expires_at is before created_at");
        }
        if self.expires_at - self.created_at > MAX_LIFETIME_MS {
            return malformed("expires_at is more than 30 days after created_at");
        }
        if b64::decode_array::<32>(&self.enc).is_none() {
            return malformed("enc must be base64 of 32 bytes");
        }
        if self.sig.len() != 88 {
            return malformed("sig must be base64 of 64 bytes");
        }
        if self.kind.carries_card() && self.card.is_none() {
            return malformed("contact requests, contact responses and key rotations carry the sender's card");
        }
        Ok(())
    }

    /// Verifies the signature under the sender's Ed25519 key.
    pub fn verify(&self, sender: &VerifyingKey) -> Result<(), VerifyError> {
        let sig = b64::decode_array::<64>(&self.sig).ok_or(VerifyError::BadSignature)?;
        sender.verify_strict(&self.signing_bytes(), &Signature::from_bytes(&sig)).map_err(|_| VerifyError::BadSignature)
    }

    /// Decrypts the body with the recipient's identity.
    pub fn open(&self, recipient: &Identity) -> Result<Vec<u8>, OpenError> {
        let enc_bytes = b64::decode_array::<32>(&self.enc).ok_or(OpenError::BadEncappedKey)?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc_bytes).map_err(|_| OpenError::BadEncappedKey)?;
        let ct = b64::decode(&self.body).ok_or(OpenError::Decrypt)?;
        let sk = recipient.hpke_secret().ok_or(OpenError::Decrypt)?;
        let aad = aad(&self.from, &self.to, &self.id, self.kind);
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(&OpModeR::Base, &sk, &enc, HPKE_INFO, &ct, &aad)
            .map_err(|_| OpenError::Decrypt)
    }
}

/// One entry for [`verify_signatures`]: the signed bytes, the 64-byte signature (`None` when
/// the sender's was missing or malformed), the key it must verify under.
pub type SignatureCheck<'a> = (&'a [u8], Option<&'a [u8; 64]>, VerifyingKey);

/// Verifies many Ed25519 signatures at once: `(signed bytes, signature, key)` each, the
/// signature as its 64 bytes (`None` when the sender's was missing or not 64 bytes of base64: a
/// bad signature).
///
/// Two or more are checked with ed25519-dalek's batch verification (about twice as fast per
/// signature); if the batch fails, each is checked alone with `verify_strict` to find the bad
/// ones. Returns one verdict per entry, in order. Batch verification does not refuse small-order
/// keys, so callers pin only keys that passed [`AgentCard::verify`](crate::AgentCard::verify),
/// which refuses weak keys.
pub fn verify_signatures(entries: &[SignatureCheck<'_>]) -> Vec<Result<(), VerifyError>> {
    let sigs: Vec<Option<Signature>> = entries.iter().map(|(_, sig, _)| sig.map(Signature::from_bytes)).collect();
    if entries.len() >= 2 && sigs.iter().all(Option::is_some) {
        let messages: Vec<&[u8]> = entries.iter().map(|(m, _, _)| *m).collect();
        let signatures: Vec<Signature> = sigs.iter().flatten().copied().collect();
        let keys: Vec<VerifyingKey> = entries.iter().map(|(_, _, k)| *k).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            return vec![Ok(()); entries.len()];
        }
    }
    entries
        .iter()
        .zip(sigs)
        .map(|((message, _, key), sig)| {
            let sig = sig.ok_or(VerifyError::BadSignature)?;
            key.verify_strict(message, &sig).map_err(|_| VerifyError::BadSignature)
        })
        .collect()
}

fn is_ref(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_REF_BYTES && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A signed delivery receipt: the recipient's proof that it stored a message.
///
/// Shape: `{"v":1,"message_id":"…","from":"<recipient id>","to":"<sender id>",
/// "status":"delivered","at":<ms>,"sig":"<b64, 64 bytes>"}`. `sig` is Ed25519 by `from` over
/// `"agentmesh/v1 receipt\n" lp(v) lp(message_id) lp(from) lp(to) lp(status) lp(at)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryReceipt {
    /// Format version, `1`.
    pub v: u32,
    /// The id of the message acknowledged.
    pub message_id: String,
    /// The agent that stored the message and signs the receipt.
    pub from: AgentId,
    /// The sender of the message.
    pub to: AgentId,
    /// `delivered`.
    pub status: String,
    /// When the message was stored, ms since epoch.
    pub at: u64,
    /// Ed25519 signature, base64 of 64 bytes.
    pub sig: String,
}

impl DeliveryReceipt {
    /// Signs a `delivered` receipt for `message_id` from `to`.
    pub fn sign(identity: &Identity, message_id: &str, to: AgentId, at: u64) -> Self {
        let mut receipt = DeliveryReceipt {
            v: 1,
            message_id: message_id.to_owned(),
            from: identity.agent_id(),
            to,
            status: "delivered".to_owned(),
            at,
            sig: String::new(),
        };
        receipt.sig = b64::encode(identity.sign(&receipt.signing_bytes()));
        receipt
    }

    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = RECEIPT_DOMAIN.to_vec();
        lp(&mut out, self.v.to_string().as_bytes());
        lp(&mut out, self.message_id.as_bytes());
        lp(&mut out, self.from.to_string().as_bytes());
        lp(&mut out, self.to.to_string().as_bytes());
        lp(&mut out, self.status.as_bytes());
        lp(&mut out, self.at.to_string().as_bytes());
        out
    }

    /// Verifies the receipt's signature under the recipient's key.
    pub fn verify(&self, signer: &VerifyingKey) -> Result<(), VerifyError> {
        let sig = b64::decode_array::<64>(&self.sig).ok_or(VerifyError::BadSignature)?;
        signer.verify_strict(&self.signing_bytes(), &Signature::from_bytes(&sig)).map_err(|_| VerifyError::BadSignature)
    }
}

/// Body of a [`EnvelopeKind::Receipt`] envelope (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// The message this receipt is about.
    pub message_id: String,
    /// `read`.
    pub status: String,
    /// When it was read, ms since epoch.
    pub at: u64,
}

/// Body of a [`EnvelopeKind::ContactRequest`] envelope (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRequestBody {
    /// Request id, `req_` + 32 hex.
    pub request_id: String,
    /// Why the requester wants contact (at most 1,000 characters).
    #[serde(default)]
    pub purpose: String,
}

/// A fresh contact request id: `req_` + 32 lowercase hex.
pub fn new_request_id() -> String {
    crate::ids::random_id("req")
}

/// Whether `s` is a contact request id: `req_` followed by 32 lowercase hex characters.
pub fn is_request_id(s: &str) -> bool {
    crate::ids::is_random_id(s, "req")
}

/// What a [`ContactUpdateBody`] tells the recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactChange {
    /// The sender withdrew its pending contact request `request_id`.
    Withdrawn,
    /// The sender blocked the recipient: nothing more is accepted from it.
    Blocked,
    /// The sender unblocked the recipient: it may ask for contact again (trust is not restored).
    Unblocked,
    /// The sender removed the recipient: trust is revoked and its key forgotten.
    Removed,
}

impl ContactChange {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactChange::Withdrawn => "withdrawn",
            ContactChange::Blocked => "blocked",
            ContactChange::Unblocked => "unblocked",
            ContactChange::Removed => "removed",
        }
    }
}

impl fmt::Display for ContactChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of a [`EnvelopeKind::ContactUpdate`] envelope (JSON): `{"change":"blocked"}`, or
/// `{"change":"withdrawn","request_id":"req_…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactUpdateBody {
    /// What changed.
    pub change: ContactChange,
    /// The request concerned (`withdrawn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Body of a [`EnvelopeKind::ContactResponse`] envelope (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactResponseBody {
    /// The request answered.
    pub request_id: String,
    /// `true` when approved: both sides now trust each other.
    pub accepted: bool,
    /// Optional reason given with a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::now_ms;

    fn pair() -> (Identity, Identity) {
        (Identity::generate(), Identity::generate())
    }

    fn sealed(a: &Identity, b: &Identity) -> Envelope {
        Draft::new(EnvelopeKind::Message, a.agent_id(), b.agent_id(), now_ms(), 60_000, TEXT_PLAIN, b"hi bob".to_vec())
            .seal(&b.public().x25519)
            .expect("seal")
    }

    #[test]
    fn seal_sign_verify_open() {
        let (a, b) = pair();
        let env = sealed(&a, &b).sign(&a, now_ms());
        env.check_shape().expect("shape");
        env.verify(&a.public().ed25519).expect("verify");
        assert_eq!(env.open(&b).expect("open"), b"hi bob");
        // JSON round trip keeps the signature valid.
        let back: Envelope = serde_json::from_str(&serde_json::to_string(&env).expect("json")).expect("parse");
        back.verify(&a.public().ed25519).expect("verify after round trip");
    }

    #[test]
    fn wrong_key_or_tamper_fails() {
        let (a, b) = pair();
        let env = sealed(&a, &b).sign(&a, now_ms());
        assert_eq!(env.verify(&b.public().ed25519), Err(VerifyError::BadSignature));
        let mut t = env.clone();
        t.sent_at += 1;
        assert_eq!(t.verify(&a.public().ed25519), Err(VerifyError::BadSignature));
        // A third party cannot decrypt.
        assert_eq!(env.open(&a), Err(OpenError::Decrypt));
        // Changing what the AAD binds breaks decryption even if a forger re-signs.
        let mut redirected = env.clone();
        redirected.id = "another-id".into();
        assert_eq!(redirected.open(&b), Err(OpenError::Decrypt));
    }

    #[test]
    fn receipt_sign_verify() {
        let (a, b) = pair();
        let r = DeliveryReceipt::sign(&b, "m1", a.agent_id(), 5);
        r.verify(&b.public().ed25519).expect("verify");
        let mut t = r.clone();
        t.message_id = "m2".into();
        assert_eq!(t.verify(&b.public().ed25519), Err(VerifyError::BadSignature));
    }

    #[test]
    fn batch_verification_pinpoints_bad_signatures() {
        let (a, b) = pair();
        let envs: Vec<Envelope> = (0..5).map(|_| sealed(&a, &b).sign(&a, now_ms())).collect();
        let key = a.public().ed25519;
        let mut signed: Vec<(Vec<u8>, [u8; 64])> = envs
            .iter()
            .map(|e| (e.signing_bytes(), b64::decode_array::<64>(&e.sig).expect("64-byte signature")))
            .collect();
        let check = |signed: &[(Vec<u8>, [u8; 64])]| {
            let entries: Vec<SignatureCheck<'_>> = signed.iter().map(|(m, s)| (m.as_slice(), Some(s), key)).collect();
            verify_signatures(&entries)
        };
        assert!(check(&signed).iter().all(Result::is_ok));
        signed[3].0.push(0);
        let verdicts = check(&signed);
        assert_eq!(verdicts.iter().filter(|v| v.is_err()).count(), 1);
        assert_eq!(verdicts[3], Err(VerifyError::BadSignature));
    }

    #[test]
    fn unknown_members_are_refused() {
        let (a, b) = pair();
        let env = sealed(&a, &b).sign(&a, now_ms());
        let mut v = serde_json::to_value(&env).expect("value");
        v["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<Envelope>(v).is_err());
    }
}
