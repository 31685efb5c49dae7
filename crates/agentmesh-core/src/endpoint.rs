//! Where an agent's node is reached, as its card lists it: typed, so that each carrier picks the
//! endpoints it can use and skips the others.
//!
//! A card keeps its endpoints as URI strings (`endpoints`, at most 8, in the agent's order of
//! preference): the signature covers them as written, and a card from a node that knows more
//! schemes than we do still verifies and still lists what we can use. An endpoint is parsed
//! without ever failing; one we cannot use is [`Endpoint::Other`], kept as written.
//!
//! | scheme | form | variant |
//! |---|---|---|
//! | `http`, `https` | a base URL: `http(s)://host[:port][/path]`, no query, no fragment | [`Endpoint::Http`] |
//! | `iroh` | `iroh:<64 lowercase hex>`: the node's iroh endpoint id (its Ed25519 public key) | [`Endpoint::Iroh`] |
//! | anything else | as written | [`Endpoint::Other`] |

use std::fmt;
use std::str::FromStr;

/// One endpoint of a card (see the module docs for the forms).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// An http(s) base URL, without a trailing slash.
    Http(String),
    /// An iroh endpoint, by its 32-byte endpoint id.
    Iroh([u8; 32]),
    /// A scheme this build does not use (or an endpoint out of shape), as written.
    Other(String),
}

impl Endpoint {
    /// The http(s) base URL, for an HTTP endpoint.
    pub fn http_base(&self) -> Option<&str> {
        match self {
            Endpoint::Http(base) => Some(base),
            _ => None,
        }
    }
}

impl FromStr for Endpoint {
    type Err = std::convert::Infallible;

    /// Never fails: what is not an http(s) base URL or an iroh endpoint id is [`Endpoint::Other`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim_end_matches('/');
        let http = ["http://", "https://"].iter().find_map(|p| trimmed.strip_prefix(p));
        if let Some(rest) = http {
            let host = rest.split('/').next().unwrap_or_default();
            let clean = !host.is_empty()
                && !trimmed.contains(['?', '#'])
                && !trimmed.contains(char::is_whitespace)
                && !trimmed.chars().any(char::is_control);
            return Ok(if clean { Endpoint::Http(trimmed.to_owned()) } else { Endpoint::Other(text.to_owned()) });
        }
        if let Some(id) = text.strip_prefix("iroh:")
            && id.len() == 64
            && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            let mut key = [0u8; 32];
            if hex::decode_to_slice(id, &mut key).is_ok() {
                return Ok(Endpoint::Iroh(key));
            }
        }
        Ok(Endpoint::Other(text.to_owned()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Http(base) => f.write_str(base),
            Endpoint::Iroh(id) => write!(f, "iroh:{}", hex::encode(id)),
            Endpoint::Other(text) => f.write_str(text),
        }
    }
}

/// The endpoints of `texts`, typed, in their order.
pub fn parse_all(texts: &[String]) -> Vec<Endpoint> {
    texts.iter().map(|t| t.parse().unwrap_or_else(|never| match never {})).collect()
}

/// The first http(s) base URL of `texts`, if any: what an HTTP carrier reaches.
pub fn first_http(texts: &[String]) -> Option<String> {
    parse_all(texts).into_iter().find_map(|e| e.http_base().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Endpoint {
        text.parse().unwrap_or_else(|never| match never {})
    }

    #[test]
    fn endpoints_are_typed_and_written_back_as_they_were() {
        assert_eq!(parse("http://127.0.0.1:8787"), Endpoint::Http("http://127.0.0.1:8787".into()));
        assert_eq!(parse("https://agent.example/mesh/"), Endpoint::Http("https://agent.example/mesh".into()));
        let id = "ab".repeat(32);
        assert_eq!(parse(&format!("iroh:{id}")), Endpoint::Iroh([0xab; 32]));
        assert_eq!(parse(&format!("iroh:{id}")).to_string(), format!("iroh:{id}"));
        for other in ["nostr:npub1xyz", "http://", "http://a b", "http://h?x=1", "iroh:ABCD", "ftp://h"] {
            assert_eq!(parse(other), Endpoint::Other(other.into()), "{other}");
            assert_eq!(parse(other).to_string(), other);
        }
        let listed = vec![format!("iroh:{id}"), "nostr:x".into(), "http://10.0.0.5:8787".into()];
        assert_eq!(first_http(&listed).as_deref(), Some("http://10.0.0.5:8787"), "the first one HTTP can use");
        assert_eq!(first_http(&listed[..2]), None);
    }
}
