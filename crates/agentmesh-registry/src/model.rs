//! Records, registrations, search queries and the request-signing scheme.

use agentmesh_core::time::iso_seconds;
use agentmesh_core::{AgentCard, AgentId, Fingerprint, b64};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest hostname, bytes (RFC 1035 §2.3.4).
pub const MAX_HOSTNAME: usize = 253;
/// Longest display name, characters.
pub const MAX_DISPLAY_NAME: usize = 64;
/// Longest description, characters.
pub const MAX_DESCRIPTION: usize = 1000;
/// Most capabilities per agent.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest capability, bytes.
pub const MAX_CAPABILITY: usize = 64;
/// Most capabilities a search may require (`../shared/PROTOCOLS.md` §4).
pub const MAX_SEARCH_CAPABILITIES: usize = 20;
/// Largest `limit` of a search.
pub const MAX_LIMIT: usize = 50;

/// Whether an agent is listed in search results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Listed in search (the default).
    #[default]
    Public,
    /// Never listed in search; reachable by id or hostname only.
    Private,
}

impl Visibility {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Self {
        if s == "private" { Visibility::Private } else { Visibility::Public }
    }
}

/// A stored agent. Times are ms since the epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentRecord {
    /// Agent id: derived from the genesis key (16 hex).
    pub id: String,
    /// Unique hostname; belongs to the first key that claimed it.
    pub hostname: String,
    /// Display name.
    pub display_name: String,
    /// Free text.
    pub description: String,
    /// Capability tags, lowercase, unique.
    pub capabilities: Vec<String>,
    /// Where peers reach the agent.
    pub p2p_endpoint: String,
    /// Listed in search or not.
    pub visibility: Visibility,
    /// The Ed25519 key that signs this agent's requests (32 bytes).
    pub public_key: [u8; 32],
    /// Registered first, ms.
    pub registered_at: i64,
    /// Last registration, update or heartbeat, ms.
    pub last_seen: i64,
    /// Timestamp of the last signed request accepted (replay guard), ms.
    pub last_request: i64,
}

impl AgentRecord {
    /// The JSON shape of `../shared/PROTOCOLS.md` §4, with `status` judged at `online_since`.
    pub fn to_json(&self, online_since: i64) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "hostname": self.hostname,
            "display_name": self.display_name,
            "description": self.description,
            "capabilities": self.capabilities,
            "p2p_endpoint": self.p2p_endpoint,
            "visibility": self.visibility,
            "public_key": b64::encode(self.public_key),
            "fingerprint": Fingerprint::of(&self.public_key),
            "registered_at": iso_seconds(self.registered_at.max(0) as u64),
            "last_seen": iso_seconds(self.last_seen.max(0) as u64),
            "status": if self.last_seen >= online_since { "online" } else { "offline" },
        })
    }
}

/// A registration or update body (`POST /api/v1/agents/`, `PUT /api/v1/agents/{id}`). Unknown
/// members are ignored so existing clients' extra fields do not break them.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Registration {
    /// Unique hostname.
    pub hostname: String,
    /// Display name.
    pub display_name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Capability tags.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Where peers reach the agent (http(s) URL).
    pub p2p_endpoint: String,
    /// `public` (default) or `private`.
    #[serde(default)]
    pub visibility: Visibility,
    /// The agent's card, for agents that rotated keys: its chain ties the signing key to the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<AgentCard>,
}

impl Registration {
    /// Checks limits and shapes; returns normalized capabilities (trimmed, lowercase, unique).
    pub fn check(&self) -> Result<Vec<String>, String> {
        let host_ok = !self.hostname.is_empty()
            && self.hostname.len() <= MAX_HOSTNAME
            && self.hostname.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !host_ok {
            return Err("hostname must be 1 to 253 characters of a-z, 0-9, '-' and '.'".into());
        }
        let name = self.display_name.chars().count();
        if name == 0 || name > MAX_DISPLAY_NAME {
            return Err(format!("display_name must be 1 to {MAX_DISPLAY_NAME} characters"));
        }
        if self.description.chars().count() > MAX_DESCRIPTION {
            return Err(format!("description is limited to {MAX_DESCRIPTION} characters"));
        }
        let endpoint_ok = (self.p2p_endpoint.starts_with("http://") || self.p2p_endpoint.starts_with("https://"))
            && self.p2p_endpoint.len() <= 512
            && !self.p2p_endpoint.contains(char::is_whitespace);
        if !endpoint_ok {
            return Err("p2p_endpoint must be an http(s) URL of at most 512 bytes".into());
        }
        normalize_capabilities(&self.capabilities, MAX_CAPABILITIES)
    }
}

/// Trims, lowercases and de-duplicates capability tags; refuses empty or long ones.
pub fn normalize_capabilities(caps: &[String], max: usize) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(caps.len());
    for c in caps {
        let c = c.trim().to_lowercase();
        if c.is_empty() || c.len() > MAX_CAPABILITY || c.chars().any(char::is_control) {
            return Err(format!("a capability is 1 to {MAX_CAPABILITY} bytes without control characters"));
        }
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if out.len() > max {
        return Err(format!("at most {max} capabilities"));
    }
    Ok(out)
}

/// A search: text over name, description and capabilities (ranked), capabilities all required.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchQuery {
    /// Free text; words are matched as prefixes, all words required.
    pub text: Option<String>,
    /// Required capabilities (normalized).
    pub capabilities: Vec<String>,
    /// 1..=50.
    pub limit: usize,
    /// Results to skip.
    pub offset: usize,
}

/// The words of a free-text query: runs of letters and digits, lowercased, at most 16.
pub fn query_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).take(16).map(str::to_lowercase).collect()
}

/// Headers that carry a signed request.
pub const HEADER_KEY: &str = "x-agent-key";
/// Request time, ms since the epoch.
pub const HEADER_TIMESTAMP: &str = "x-agent-timestamp";
/// Ed25519 signature, base64.
pub const HEADER_SIGNATURE: &str = "x-agent-signature";

/// The bytes a request signature covers:
/// `"agentmesh/v1 registry\n" METHOD "\n" PATH "\n" TIMESTAMP "\n" hex(SHA-256(body))`.
pub fn signing_bytes(method: &str, path: &str, timestamp: u64, body: &[u8]) -> Vec<u8> {
    format!("agentmesh/v1 registry\n{method}\n{path}\n{timestamp}\n{}", hex::encode(Sha256::digest(body))).into_bytes()
}

/// Signs a request (for clients): returns the three header values.
pub fn sign_request(
    identity: &agentmesh_core::Identity,
    method: &str,
    path: &str,
    timestamp: u64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let sig = identity.sign(&signing_bytes(method, path, timestamp, body));
    [
        (HEADER_KEY, b64::encode(identity.public().ed25519.as_bytes())),
        (HEADER_TIMESTAMP, timestamp.to_string()),
        (HEADER_SIGNATURE, b64::encode(sig)),
    ]
}

/// Checks a signed request; returns the signer's key.
pub fn verify_request(
    key: &str,
    timestamp: u64,
    signature: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<VerifyingKey, String> {
    let key = b64::decode_array::<32>(key)
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .filter(|k| !k.is_weak())
        .ok_or("X-Agent-Key is not a valid Ed25519 key")?;
    let sig = b64::decode_array::<64>(signature).ok_or("X-Agent-Signature is not 64 bytes of base64")?;
    key.verify_strict(&signing_bytes(method, path, timestamp, body), &Signature::from_bytes(&sig))
        .map_err(|_| "the request signature does not verify")?;
    Ok(key)
}

/// The id a signer registers under: the card's agent id when a verified card whose current key
/// is `key` comes along (rotated agents), else the id derived from `key`. Also returns every key
/// the agent has held (for key changes of a stored record).
pub fn signer_id(key: &VerifyingKey, card: Option<&AgentCard>) -> Result<(AgentId, Vec<[u8; 32]>), String> {
    match card {
        None => Ok((AgentId::from_key(key), vec![key.to_bytes()])),
        Some(card) => {
            let keys = card.verify().map_err(|e| format!("card: {e}"))?;
            if keys.ed25519 != *key {
                return Err("the card is not the signer's".into());
            }
            Ok((card.agent_id, card.key_history()))
        }
    }
}
