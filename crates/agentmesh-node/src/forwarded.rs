//! Who a request really comes from, behind a reverse proxy (the README's way to serve HTTPS).
//!
//! A proxy connects to us from its own address, so every peer behind it would share one address's
//! budget, connection share and pending-request share. From the addresses listed in
//! `trusted_proxies` only, the client is taken from the one header the proxy writes
//! (`forwarded_header`): `X-Forwarded-For` (a comma-separated list of addresses, the default:
//! what nginx, HAProxy and Caddy append to) or `Forwarded` (RFC 7239 §4, its `for=` parameters,
//! parsed by the `rfc7239` crate). The other header is ignored, whatever it says: a proxy passes
//! it through from the client untouched, so believing it would let a client pick its address.
//! The client is the right-most address that is not itself a trusted proxy, the one our own proxy
//! saw. Anyone else's forwarding headers are ignored; a trusted proxy that names no usable client
//! is taken for the client.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::Config;

/// The header a trusted proxy writes the client into (`forwarded_header`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Header {
    /// `X-Forwarded-For`.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

/// The networks whose forwarding header is believed (`trusted_proxies`), and which header.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<IpNet>,
    header: Header,
}

impl TrustedProxies {
    /// The proxies `config` trusts ([`Config::trusted_proxies`]).
    ///
    /// Errors: as [`Config::trusted_proxies`] (which `Config::load` has checked already).
    pub(crate) fn from_config(config: &Config) -> Result<Self, String> {
        let (nets, rfc7239) = config.trusted_proxies()?;
        Ok(TrustedProxies { nets, header: if rfc7239 { Header::Forwarded } else { Header::XForwardedFor } })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that reached us from `peer`: `peer` itself unless it is a trusted
    /// proxy, else the right-most forwarded address that is not a trusted proxy (or `peer` when
    /// the headers name none, or are out of shape).
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let chain = match self.header {
            Header::XForwardedFor => x_forwarded_for(headers),
            Header::Forwarded => forwarded_for(headers),
        };
        let chain = chain.unwrap_or_default();
        chain.into_iter().rev().find(|ip| !self.contains(*ip)).map_or(peer, |ip| ip.to_canonical())
    }
}

/// The `for=` addresses of every `Forwarded` header, in order; `None` when there is none, or one
/// is out of shape (then nothing of it is believed).
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut out = Vec::new();
    let mut any = false;
    for value in headers.get_all(axum::http::header::FORWARDED) {
        any = true;
        for node in rfc7239::parse(value.to_str().ok()?) {
            if let Some(rfc7239::NodeIdentifier { name: rfc7239::NodeName::Ip(ip), .. }) = node.ok()?.forwarded_for {
                out.push(ip);
            }
        }
    }
    any.then_some(out)
}

/// The addresses of every `X-Forwarded-For` header, in order; `None` when there is none, or an
/// entry is not an address.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut out = Vec::new();
    let mut any = false;
    for value in headers.get_all("x-forwarded-for") {
        any = true;
        for entry in value.to_str().ok()?.split(',') {
            out.push(entry.trim().parse().ok()?);
        }
    }
    any.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entries: &[String], header: &str) -> Result<TrustedProxies, String> {
        TrustedProxies::from_config(&Config {
            trusted_proxies: entries.to_vec(),
            forwarded_header: header.into(),
            ..Config::default()
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn only_trusted_proxies_and_their_own_header_are_believed() {
        let nets: Vec<String> = vec!["127.0.0.2".into(), "10.0.0.0/8".into()];
        let proxies = parse(&nets, "x-forwarded-for").expect("parse");
        let xff = headers(&[("x-forwarded-for", "198.51.100.7, 10.1.2.3")]);
        assert_eq!(proxies.client(ip("127.0.0.2"), &xff), ip("198.51.100.7"), "the right-most untrusted");
        assert_eq!(proxies.client(ip("127.0.0.3"), &xff), ip("127.0.0.3"), "an untrusted peer's header is ignored");
        // The header the proxy does not write is the client's own: ignored.
        let both = headers(&[("forwarded", "for=192.0.2.60"), ("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(proxies.client(ip("127.0.0.2"), &both), ip("203.0.113.9"));
        let only_forwarded = headers(&[("forwarded", "for=192.0.2.60")]);
        assert_eq!(proxies.client(ip("127.0.0.2"), &only_forwarded), ip("127.0.0.2"));
        let bad = headers(&[("x-forwarded-for", "198.51.100.7, not-an-ip")]);
        assert_eq!(proxies.client(ip("127.0.0.2"), &bad), ip("127.0.0.2"));
        assert_eq!(proxies.client(ip("127.0.0.2"), &HeaderMap::new()), ip("127.0.0.2"));
        assert_eq!(proxies.client(ip("::ffff:127.0.0.2"), &xff), ip("198.51.100.7"), "an IPv4-mapped proxy");
        // A proxy that writes RFC 7239's Forwarded.
        let rfc = parse(&nets, "Forwarded").expect("parse");
        let fwd = headers(&[("forwarded", "for=192.0.2.60;proto=https, for=\"[2001:db8::1]:4711\"")]);
        assert_eq!(rfc.client(ip("127.0.0.2"), &fwd), ip("2001:db8::1"));
        assert_eq!(rfc.client(ip("127.0.0.2"), &both), ip("192.0.2.60"), "X-Forwarded-For ignored then");
        assert!(parse(&["proxy.example".into()], "x-forwarded-for").is_err());
        assert!(parse(&nets, "x-real-ip").is_err());
    }
}
