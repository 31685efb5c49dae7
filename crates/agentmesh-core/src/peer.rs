//! Ids and protocols of peers: any agent we talk to, native or speaking another protocol.
//!
//! A native agent's id is its [`AgentId`] (16 lowercase hex, derived from its genesis key). An
//! Agent Mesh V1 agent chooses its own id (`agent-` + 12 hex by default, `../shared/PROTOCOLS.md`
//! §1), so a [`PeerId`] is the common text form, validated so that it is safe as a URL path
//! segment and as a file name and cannot pose as another agent:
//!
//! * 1 to 128 bytes of `[A-Za-z0-9._-]`, starting with a letter or digit (so never `.` or `..`);
//! * an id of 16 hex digits is a native agent id and must be lower case (an upper-case copy of
//!   `57251aa7286351d3` is refused, not taken for a second agent).
//!
//! Stores compare peer ids case-insensitively, so `Agent-1` cannot sit next to `agent-1` either.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::keys::AgentId;

/// Longest peer id, in bytes.
pub const MAX_PEER_ID_BYTES: usize = 128;

/// The id of a peer: a native [`AgentId`] or another protocol's agent id (see the module docs).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(String);

/// Why a text is not a [`PeerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePeerIdError {
    /// Empty, longer than 128 bytes, a character outside `[A-Za-z0-9._-]`, or not starting with a
    /// letter or digit.
    #[error("an agent id is 1 to 128 characters of [A-Za-z0-9._-] starting with a letter or digit")]
    Shape,
    /// 16 hex digits with upper-case letters: a copy of a native id in another case.
    #[error("an agent id of 16 hex digits is a native agent id and must be lower case")]
    UpperCaseNativeId,
}

impl PeerId {
    /// Validates `text` as a peer id (see the module docs).
    pub fn parse(text: &str) -> Result<Self, ParsePeerIdError> {
        let bytes = text.as_bytes();
        let shape_ok = !bytes.is_empty()
            && bytes.len() <= MAX_PEER_ID_BYTES
            && bytes[0].is_ascii_alphanumeric()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b));
        if !shape_ok {
            return Err(ParsePeerIdError::Shape);
        }
        if bytes.len() == 16 && bytes.iter().all(u8::is_ascii_hexdigit) && bytes.iter().any(u8::is_ascii_uppercase) {
            return Err(ParsePeerIdError::UpperCaseNativeId);
        }
        Ok(PeerId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The native agent id, when this is one (16 lowercase hex).
    pub fn agent_id(&self) -> Option<AgentId> {
        self.0.parse().ok()
    }
}

impl From<AgentId> for PeerId {
    fn from(id: AgentId) -> Self {
        PeerId(id.to_string())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.0)
    }
}

impl FromStr for PeerId {
    type Err = ParsePeerIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PeerId::parse(s)
    }
}

impl AsRef<str> for PeerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for PeerId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for PeerId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<AgentId> for PeerId {
    fn eq(&self, other: &AgentId) -> bool {
        self.agent_id().as_ref() == Some(other)
    }
}

impl Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        PeerId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A wire protocol a peer speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Protocol {
    /// Our own protocol, `agentmesh/1`: signed, HPKE-encrypted envelopes (docs/PROTOCOL.md).
    #[serde(rename = "agentmesh/1")]
    Native,
    /// OpenClaw Agent Mesh V1, `openclaw-agent-mesh/v1` (`../shared/PROTOCOLS.md` §1): signed,
    /// not encrypted, one-sided trust.
    #[serde(rename = "openclaw-agent-mesh/v1")]
    AgentMeshV1,
}

/// Why a text is not a known [`Protocol`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?}")]
pub struct UnknownProtocol(pub String);

impl Protocol {
    /// Every protocol, in order of preference.
    pub const ALL: [Protocol; 2] = [Protocol::Native, Protocol::AgentMeshV1];

    /// The protocol's name as agent cards and listings show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Native => crate::PROTOCOL_NATIVE,
            Protocol::AgentMeshV1 => crate::PROTOCOL_AGENT_MESH_V1,
        }
    }

    /// Whether message bodies travel end-to-end encrypted.
    pub fn encrypts(self) -> bool {
        matches!(self, Protocol::Native)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| UnknownProtocol(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_are_safe_path_segments() {
        for good in ["57251aa7286351d3", "agent-0123456789ab", "Bob_1", "a", "x.y-z"] {
            assert!(PeerId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "-x", "a/b", "a b", "a%2e", "é", &"a".repeat(129)] {
            assert_eq!(PeerId::parse(bad), Err(ParsePeerIdError::Shape), "{bad:?}");
        }
    }

    #[test]
    fn regression_upper_case_copy_of_a_native_id_is_refused() {
        assert_eq!(PeerId::parse("57251AA7286351D3"), Err(ParsePeerIdError::UpperCaseNativeId));
        assert_eq!(PeerId::parse("57251aA7286351d3"), Err(ParsePeerIdError::UpperCaseNativeId));
        let native = PeerId::parse("57251aa7286351d3").expect("native");
        assert!(native.agent_id().is_some());
        assert!(serde_json::from_str::<PeerId>("\"..\"").is_err());
    }

    #[test]
    fn protocol_names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).expect("json"), format!("\"{}\"", p.as_str()));
        }
        assert!("smtp".parse::<Protocol>().is_err());
    }
}
