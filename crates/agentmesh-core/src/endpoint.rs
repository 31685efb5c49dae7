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
//! | `iroh` | `iroh:<64 lowercase hex>[?relay=<url>&addr=<ip:port>…]`: the node's iroh endpoint id (the Ed25519 public key of its iroh endpoint: not the agent's key, bound to the agent by the signed card that lists it), then where to dial it | [`Endpoint::Iroh`] |
//! | anything else | as written | [`Endpoint::Other`] |
//!
//! An iroh endpoint's query is `application/x-www-form-urlencoded` (WHATWG URL §5): each `relay`
//! an http(s) URL of a relay server the node is reachable through (at most
//! [`MAX_IROH_RELAYS`]), each `addr` a direct UDP socket address (at most [`MAX_IROH_ADDRS`]),
//! in order of preference; other parameters are ignored (room for more). Without either, a
//! dialer needs some other way to learn where the node is. A direct address must be dialable
//! (not unspecified, not multicast, port not 0). A card refuses an endpoint over
//! [`MAX_ENDPOINT_BYTES`](crate::card::MAX_ENDPOINT_BYTES), whatever its scheme, so relays and
//! addresses together must fit in it. [`Display`](fmt::Display) writes an iroh endpoint in its
//! canonical form (unknown parameters dropped, values encoded): code that needs the text a card
//! signed keeps the card's string.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Most relay URLs an iroh endpoint lists.
pub const MAX_IROH_RELAYS: usize = 4;
/// Most direct addresses an iroh endpoint lists.
pub const MAX_IROH_ADDRS: usize = 8;

/// An iroh endpoint: who (the id) and where to dial it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IrohEndpoint {
    /// The endpoint id: the 32-byte Ed25519 public key its iroh endpoint authenticates with
    /// (TLS with raw public keys, RFC 7250), bound to the agent by the card that lists it.
    pub id: [u8; 32],
    /// Relay servers it is reachable through (http(s) URLs), in order of preference.
    pub relays: Vec<String>,
    /// Direct UDP socket addresses, in order of preference.
    pub addrs: Vec<SocketAddr>,
}

impl IrohEndpoint {
    /// The endpoint `id`, with nowhere to dial it yet.
    pub fn new(id: [u8; 32]) -> Self {
        IrohEndpoint { id, relays: Vec::new(), addrs: Vec::new() }
    }

    /// Parses what follows `iroh:`; `None` when it is out of shape.
    fn parse(rest: &str) -> Option<Self> {
        if rest.contains('#') {
            return None;
        }
        let (id, query) = rest.split_once('?').unwrap_or((rest, ""));
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        let mut endpoint = IrohEndpoint::new([0u8; 32]);
        hex::decode_to_slice(id, &mut endpoint.id).ok()?;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "relay" => {
                    let clean = matches!(value.parse(), Ok(Endpoint::Http(_)));
                    if !clean || endpoint.relays.len() == MAX_IROH_RELAYS {
                        return None;
                    }
                    endpoint.relays.push(value.trim_end_matches('/').to_owned());
                }
                "addr" => {
                    if endpoint.addrs.len() == MAX_IROH_ADDRS {
                        return None;
                    }
                    let addr: SocketAddr = value.parse().ok()?;
                    if addr.ip().is_unspecified() || addr.ip().is_multicast() || addr.port() == 0 {
                        return None;
                    }
                    endpoint.addrs.push(addr);
                }
                _ => {}
            }
        }
        Some(endpoint)
    }
}

impl fmt::Display for IrohEndpoint {
    /// The canonical form: the id, then the relays and the addresses, encoded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iroh:{}", hex::encode(self.id))?;
        if self.relays.is_empty() && self.addrs.is_empty() {
            return Ok(());
        }
        let mut query = form_urlencoded::Serializer::new(String::new());
        for relay in &self.relays {
            query.append_pair("relay", relay);
        }
        for addr in &self.addrs {
            query.append_pair("addr", &addr.to_string());
        }
        write!(f, "?{}", query.finish())
    }
}

/// One endpoint of a card (see the module docs for the forms).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// An http(s) base URL, without a trailing slash.
    Http(String),
    /// An iroh endpoint: its id and where to dial it.
    Iroh(IrohEndpoint),
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

impl Endpoint {
    /// The 32-byte public key a carrier authenticates the node by at this endpoint (an iroh
    /// endpoint id); `None` for endpoints reached by address (http(s)).
    pub fn transport_key(&self) -> Option<[u8; 32]> {
        match self {
            Endpoint::Iroh(iroh) => Some(iroh.id),
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
        let clean = !text.contains(char::is_whitespace) && !text.chars().any(char::is_control);
        if let Some(iroh) = text.strip_prefix("iroh:").filter(|_| clean).and_then(IrohEndpoint::parse) {
            return Ok(Endpoint::Iroh(iroh));
        }
        Ok(Endpoint::Other(text.to_owned()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Http(base) => f.write_str(base),
            Endpoint::Iroh(iroh) => iroh.fmt(f),
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
    fn endpoints_are_typed_and_written_back() {
        assert_eq!(parse("http://127.0.0.1:8787"), Endpoint::Http("http://127.0.0.1:8787".into()));
        assert_eq!(parse("https://agent.example/mesh/"), Endpoint::Http("https://agent.example/mesh".into()));
        let id = "ab".repeat(32);
        assert_eq!(parse(&format!("iroh:{id}")), Endpoint::Iroh(IrohEndpoint::new([0xab; 32])));
        assert_eq!(parse(&format!("iroh:{id}")).to_string(), format!("iroh:{id}"));
        for other in ["nostr:npub1xyz", "http://", "http://a b", "http://h?x=1", "iroh:ABCD", "ftp://h"] {
            assert_eq!(parse(other), Endpoint::Other(other.into()), "{other}");
            assert_eq!(parse(other).to_string(), other);
        }
        let listed = vec![format!("iroh:{id}"), "nostr:x".into(), "http://10.0.0.5:8787".into()];
        assert_eq!(first_http(&listed).as_deref(), Some("http://10.0.0.5:8787"), "the first one HTTP can use");
        assert_eq!(first_http(&listed[..2]), None);
    }

    #[test]
    fn an_iroh_endpoint_says_where_to_dial_it() {
        let id = "cd".repeat(32);
        let text = format!(
            "iroh:{id}?relay=https%3A%2F%2Frelay.example%3A8443&addr=127.0.0.1%3A4433&addr=%5B%3A%3A1%5D%3A4433"
        );
        let Endpoint::Iroh(iroh) = parse(&text) else { panic!("{text} is an iroh endpoint") };
        assert_eq!(iroh.id, [0xcd; 32]);
        assert_eq!(iroh.relays, ["https://relay.example:8443"]);
        assert_eq!(
            iroh.addrs,
            ["127.0.0.1:4433".parse::<SocketAddr>().expect("v4"), "[::1]:4433".parse().expect("v6")]
        );
        assert_eq!(iroh.to_string(), text, "written back in the canonical form");
        assert_eq!(parse(&iroh.to_string()), Endpoint::Iroh(iroh.clone()));
        // Parameters of later versions are passed over; out-of-shape ones make it unusable.
        assert_eq!(parse(&format!("iroh:{id}?relay=https%3A%2F%2Fr.example&quic=v2")), {
            let mut only_relay = IrohEndpoint::new([0xcd; 32]);
            only_relay.relays.push("https://r.example".into());
            Endpoint::Iroh(only_relay)
        });
        let too_many = format!("iroh:{id}?{}", "addr=127.0.0.1%3A1&".repeat(MAX_IROH_ADDRS + 1));
        for bad in [
            format!("iroh:{id}?addr=localhost%3A1"),
            format!("iroh:{id}?relay=ftp%3A%2F%2Fr.example"),
            format!("iroh:{id}?relay=https%3A%2F%2Fr.example%2F%3Fx%3D1"),
            format!("iroh:{id}?addr=127.0.0.1:1 "),
            format!("iroh:{id}?addr=0.0.0.0%3A4433"),
            format!("iroh:{id}?addr=127.0.0.1%3A0"),
            format!("iroh:{id}?addr=%5Bff02%3A%3A1%5D%3A4433"),
            format!("iroh:{id}?later=x#frag"),
            too_many,
        ] {
            assert_eq!(parse(&bad), Endpoint::Other(bad.clone()), "{bad}");
        }
    }
}
