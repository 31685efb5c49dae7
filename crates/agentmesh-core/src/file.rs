//! File transfers on the wire. The offer and the steps around it (`received`, `decline`,
//! `cancel`) are ordinary `message` envelopes — signed, HPKE-sealed, acknowledged — whose
//! `content_type` is [`FILE_CONTENT_TYPE`], whose `thread` is the transfer id and whose body is a
//! [`FileBody`] (JSON). The bytes themselves never travel in envelopes: the receiver pulls them
//! from the sender's peer API as a stream of chunks, each sealed with ChaCha20-Poly1305 under a
//! key derived from the per-transfer secret the offer carries (so only the two ends can read,
//! forge, reorder or truncate them). docs/PROTOCOL.md, "Files", describes the exchange.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Content type of file-transfer envelopes.
pub const FILE_CONTENT_TYPE: &str = "application/vnd.agentmesh.file+json";

/// Bytes of the authentication tag after each chunk's ciphertext.
pub const TAG_BYTES: usize = 16;

/// Smallest and largest chunk size an offer may name, bytes.
pub const MIN_CHUNK_BYTES: u32 = 4 * 1024;
/// See [`MIN_CHUNK_BYTES`].
pub const MAX_CHUNK_BYTES: u32 = 4 * 1024 * 1024;

/// Longest file name in an offer, bytes (a longer one is `malformed_body`; saved names are
/// shorter still, see [`sanitise_name`]).
pub const MAX_OFFER_NAME_BYTES: usize = 1024;

/// Longest reason, characters.
pub const MAX_FILE_NOTE_CHARS: usize = 1000;

/// Longest saved file name, bytes.
pub const MAX_SAVED_NAME_BYTES: usize = 200;

/// Largest file an offer may announce, bytes (1 TiB; a receiver has its own, lower cap).
pub const MAX_FILE_BYTES: u64 = 1 << 40;

const CHUNK_KEY_INFO: &[u8] = b"agentmesh/v1 file chunk key";
const TOKEN_INFO: &[u8] = b"agentmesh/v1 file token";
const CHUNK_AAD: &[u8] = b"agentmesh/v1 file chunk\n";

/// Body of a file envelope: `{"transfer_id":"file_…","op":"offer",…}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBody {
    /// The transfer, `file_` + 32 lowercase hex, chosen by the sender (see [`new_transfer_id`]).
    pub transfer_id: String,
    /// The step.
    #[serde(flatten)]
    pub op: FileOp,
}

/// A step of a transfer, tagged by `op`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FileOp {
    /// The sender offers a file.
    Offer {
        /// The file's name as the sender has it (the receiver saves it under a sanitised one).
        name: String,
        /// Bytes.
        size: u64,
        /// SHA-256 of the whole file, 64 lowercase hex.
        sha256: String,
        /// Bytes per chunk (the last one may be shorter), [`MIN_CHUNK_BYTES`] to
        /// [`MAX_CHUNK_BYTES`].
        chunk_size: u32,
        /// The per-transfer secret, 32 bytes, base64: chunk key and fetch token derive from it.
        key: String,
        /// The call the file belongs to, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
    },
    /// The receiver has the whole file and its digest matched.
    Received {
        /// SHA-256 of what it stored, 64 lowercase hex.
        sha256: String,
    },
    /// The receiver does not want the file.
    Decline {
        /// Why (at most [`MAX_FILE_NOTE_CHARS`] characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Either side stops the transfer.
    Cancel {
        /// Why (at most [`MAX_FILE_NOTE_CHARS`] characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

// Never print the key.
impl std::fmt::Debug for FileOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileOp::Offer { name, size, sha256, chunk_size, call_id, .. } => f
                .debug_struct("Offer")
                .field("name", name)
                .field("size", size)
                .field("sha256", sha256)
                .field("chunk_size", chunk_size)
                .field("key", &"..")
                .field("call_id", call_id)
                .finish(),
            FileOp::Received { sha256 } => f.debug_struct("Received").field("sha256", sha256).finish(),
            FileOp::Decline { reason } => f.debug_struct("Decline").field("reason", reason).finish(),
            FileOp::Cancel { reason } => f.debug_struct("Cancel").field("reason", reason).finish(),
        }
    }
}

impl FileOp {
    /// The `op` name: `offer`, `received`, `decline`, `cancel`.
    pub fn name(&self) -> &'static str {
        match self {
            FileOp::Offer { .. } => "offer",
            FileOp::Received { .. } => "received",
            FileOp::Decline { .. } => "decline",
            FileOp::Cancel { .. } => "cancel",
        }
    }

    /// Why the body is out of shape, if it is: an offer's name empty or over
    /// [`MAX_OFFER_NAME_BYTES`], its size over [`MAX_FILE_BYTES`], a digest that is not 64
    /// lowercase hex, a chunk size out of range, a key that is not 32 bytes, a call id out of
    /// shape, a reason too long.
    pub fn check(&self) -> Result<(), &'static str> {
        match self {
            FileOp::Offer { name, size, sha256, chunk_size, key, call_id } => {
                if name.is_empty() || name.len() > MAX_OFFER_NAME_BYTES {
                    return Err("a file name is 1 to 1024 bytes");
                }
                if *size > MAX_FILE_BYTES {
                    return Err("a file is at most 1 TiB");
                }
                if !is_sha256_hex(sha256) {
                    return Err("sha256 must be 64 lowercase hex");
                }
                if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(chunk_size) {
                    return Err("chunk_size must be 4 KiB to 4 MiB");
                }
                if crate::b64::decode_array::<32>(key).is_none() {
                    return Err("key must be 32 bytes of base64");
                }
                if call_id.as_deref().is_some_and(|c| !crate::call::is_call_id(c)) {
                    return Err("call_id must be call_ followed by 32 hex");
                }
            }
            FileOp::Received { sha256 } if !is_sha256_hex(sha256) => return Err("sha256 must be 64 lowercase hex"),
            FileOp::Decline { reason } | FileOp::Cancel { reason }
                if reason.as_ref().is_some_and(|r| r.chars().count() > MAX_FILE_NOTE_CHARS) =>
            {
                return Err("a reason is limited to 1000 characters");
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether `s` is 64 lowercase hex characters.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh transfer id: `file_` + 32 lowercase hex (128 random bits).
pub fn new_transfer_id() -> String {
    crate::ids::random_id("file")
}

/// Whether `s` is `file_` followed by 32 lowercase hex characters.
pub fn is_transfer_id(s: &str) -> bool {
    crate::ids::is_random_id(s, "file")
}

/// How many chunks a file of `size` bytes has in chunks of `chunk_size` (0 for an empty file).
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size.max(1)))
}

/// Plaintext bytes of chunk `index` of a file of `size` bytes (0 past the end).
pub fn chunk_len(size: u64, chunk_size: u32, index: u64) -> usize {
    let start = index.saturating_mul(u64::from(chunk_size));
    size.saturating_sub(start).min(u64::from(chunk_size)) as usize
}

/// A file name safe to create in a directory of our own: the last component of what the
/// sender named (after `/` or `\`), control and other invisible characters (bidirectional
/// overrides, zero-width characters: [`crate::text::is_invisible`], and U+FFFD, which shows where
/// one was), `:` and other characters
/// some file systems refuse replaced by `_`, leading dots and spaces and trailing dots and spaces removed,
/// cut to [`MAX_SAVED_NAME_BYTES`] on a character boundary (keeping a short extension); `file`
/// when nothing is left.
pub fn sanitise_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| {
            let hidden = crate::text::is_invisible(c) || c == crate::text::SHOWN_AS;
            if hidden || matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|') { '_' } else { c }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches(['.', ' ']).trim_end_matches(['.', ' ']);
    let mut out = trimmed.to_owned();
    if out.len() > MAX_SAVED_NAME_BYTES {
        let ext = match out.rfind('.') {
            Some(i) if out.len() - i <= 16 => out[i..].to_owned(),
            _ => String::new(),
        };
        let mut cut = MAX_SAVED_NAME_BYTES - ext.len();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(&ext);
    }
    if out.is_empty() { "file".to_owned() } else { out }
}

/// The per-transfer secret: the chunk key and the fetch token derive from it (HKDF-SHA256).
/// Zeroized on drop; prints as `TransferKey(..)`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TransferKey([u8; 32]);

impl std::fmt::Debug for TransferKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransferKey(..)")
    }
}

/// A chunk failed authentication: altered, reordered, truncated or under another key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("chunk {0} does not authenticate")]
pub struct ChunkError(pub u64);

impl TransferKey {
    /// A fresh random secret.
    pub fn generate() -> Self {
        TransferKey(rand::random())
    }

    /// From its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TransferKey(bytes)
    }

    /// Its 32 bytes (to store).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Base64 of its bytes, for the offer.
    pub fn to_base64(&self) -> String {
        crate::b64::encode(self.0)
    }

    /// From the offer's base64; `None` when it is not 32 bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        crate::b64::decode_array::<32>(text).map(TransferKey)
    }

    fn derive(&self, info: &[u8], transfer_id: &str) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(transfer_id.as_bytes()), &self.0);
        let mut out = [0u8; 32];
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(info, &mut out);
        out
    }

    /// The bearer token that authorises fetching `transfer_id`'s chunks: 64 lowercase hex of
    /// HKDF-SHA256(salt = transfer id, ikm = secret, info = `"agentmesh/v1 file token"`).
    pub fn token(&self, transfer_id: &str) -> String {
        hex::encode(self.derive(TOKEN_INFO, transfer_id))
    }

    /// The cipher for `transfer_id`'s chunks.
    pub fn chunks(&self, transfer_id: &str) -> ChunkCipher {
        let mut key = self.derive(CHUNK_KEY_INFO, transfer_id);
        let cipher = ChaCha20Poly1305::new(&key.into());
        key.zeroize();
        ChunkCipher { cipher, transfer_id: transfer_id.to_owned() }
    }
}

/// Seals and opens the chunks of one transfer: ChaCha20-Poly1305, nonce = 4 zero bytes and the
/// chunk index (8 bytes, big-endian), associated data = `"agentmesh/v1 file chunk\n"`, the
/// transfer id's length (4 bytes, big-endian) and bytes, the index (8 bytes, big-endian) and a
/// last-chunk flag byte (1 for the last chunk, else 0).
pub struct ChunkCipher {
    cipher: ChaCha20Poly1305,
    transfer_id: String,
}

impl std::fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCipher").field("transfer_id", &self.transfer_id).finish_non_exhaustive()
    }
}

impl ChunkCipher {
    fn nonce(index: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&index.to_be_bytes());
        n.into()
    }

    fn aad(&self, index: u64, last: bool) -> Vec<u8> {
        let id = self.transfer_id.as_bytes();
        let mut aad = Vec::with_capacity(CHUNK_AAD.len() + 4 + id.len() + 9);
        aad.extend_from_slice(CHUNK_AAD);
        aad.extend_from_slice(&(id.len() as u32).to_be_bytes());
        aad.extend_from_slice(id);
        aad.extend_from_slice(&index.to_be_bytes());
        aad.push(u8::from(last));
        aad
    }

    /// Encrypts chunk `index` in place and appends its 16-byte tag.
    pub fn seal(&self, index: u64, last: bool, buf: &mut Vec<u8>) {
        let tag = self
            .cipher
            .encrypt_inout_detached(&Self::nonce(index), &self.aad(index, last), buf.as_mut_slice().into())
            // Only fails for plaintexts over 256 GiB.
            .unwrap_or_default();
        buf.extend_from_slice(&tag);
    }

    /// Checks and decrypts chunk `index` in place (ciphertext followed by its tag); on success
    /// `buf` holds the plaintext.
    ///
    /// Errors: [`ChunkError`] when `buf` is shorter than a tag or does not authenticate for this
    /// transfer, index and last-chunk flag.
    pub fn open(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), ChunkError> {
        let split = buf.len().checked_sub(TAG_BYTES).ok_or(ChunkError(index))?;
        let tag = Tag::try_from(&buf[split..]).map_err(|_| ChunkError(index))?;
        buf.truncate(split);
        self.cipher
            .decrypt_inout_detached(&Self::nonce(index), &self.aad(index, last), buf.as_mut_slice().into(), &tag)
            .map_err(|_| ChunkError(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_flat_json_and_checked() {
        let key = TransferKey::generate();
        let body = FileBody {
            transfer_id: new_transfer_id(),
            op: FileOp::Offer {
                name: "a.txt".into(),
                size: 10,
                sha256: "0".repeat(64),
                chunk_size: 65536,
                key: key.to_base64(),
                call_id: None,
            },
        };
        let json = serde_json::to_value(&body).expect("ok");
        assert_eq!(json["op"], "offer");
        assert!(is_transfer_id(json["transfer_id"].as_str().expect("ok")));
        assert_eq!(serde_json::from_value::<FileBody>(json).expect("ok"), body);
        assert!(body.op.check().is_ok());
        assert!(!format!("{:?}", body).contains(&key.to_base64()), "the key never prints");
        let bad = FileOp::Offer {
            name: "a".into(),
            size: 1,
            sha256: "0".repeat(64),
            chunk_size: 1,
            key: key.to_base64(),
            call_id: None,
        };
        assert!(bad.check().is_err());
        assert!(FileOp::Received { sha256: "x".into() }.check().is_err());
        assert!(!is_transfer_id("file_ABC"));
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitise_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitise_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(sanitise_name(".."), "file");
        assert_eq!(sanitise_name("/"), "file");
        assert_eq!(sanitise_name(".bashrc"), "bashrc");
        assert_eq!(sanitise_name("a\u{0}b\nc"), "a_b_c");
        assert_eq!(sanitise_name("report.pdf"), "report.pdf");
        let long = format!("{}.tar.gz", "é".repeat(300));
        let saved = sanitise_name(&long);
        assert!(saved.len() <= MAX_SAVED_NAME_BYTES && saved.ends_with(".gz"), "{saved}");
    }

    #[test]
    fn chunks_authenticate_index_transfer_and_end() {
        let key = TransferKey::generate();
        let id = new_transfer_id();
        let c = key.chunks(&id);
        let mut buf = b"hello".to_vec();
        c.seal(3, false, &mut buf);
        assert_eq!(buf.len(), 5 + TAG_BYTES);
        let sealed = buf.clone();
        c.open(3, false, &mut buf).expect("opens");
        assert_eq!(buf, b"hello");
        for (index, last) in [(4, false), (3, true)] {
            let mut b = sealed.clone();
            assert_eq!(c.open(index, last, &mut b), Err(ChunkError(index)));
        }
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert!(c.open(3, false, &mut flipped).is_err());
        let mut other = sealed.clone();
        assert!(key.chunks(&new_transfer_id()).open(3, false, &mut other).is_err());
        assert!(c.open(0, false, &mut vec![1, 2]).is_err());
        assert_ne!(key.token(&id), key.token(&new_transfer_id()));
        assert_eq!(key.token(&id).len(), 64);
        assert_eq!(chunk_count(0, 4096), 0);
        assert_eq!(chunk_count(4097, 4096), 2);
        assert_eq!(chunk_len(4097, 4096, 1), 1);
        assert_eq!(chunk_len(4097, 4096, 2), 0);
    }
}
