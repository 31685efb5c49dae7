//! Standard base64 with padding (RFC 4648 §4), the encoding of every binary field on our wire.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Encodes bytes as standard, padded base64.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard, padded base64; `None` when the text is not valid base64.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// Decodes base64 that must hold exactly `N` bytes; `None` otherwise.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode(text)?.try_into().ok()
}
