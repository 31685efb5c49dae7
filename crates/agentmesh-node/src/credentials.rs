//! What an HTTP request presents to be let in: a bearer token (RFC 6750 §2.1) and, on the
//! control API, a `Host` that names the listener itself (RFC 9110 §7.2), so that a web page a
//! browser loaded from elsewhere cannot reach it through a rebound DNS name.

use axum::http::{HeaderMap, header};

/// The token of an `Authorization: Bearer <token>` header, exactly as RFC 6750 §2.1 writes it:
/// the scheme in any case, one or more spaces, then a `b64token` (letters, digits, `-._~+/`,
/// then `=` padding) and nothing else. `None` when the header is missing, not UTF-8, another
/// scheme, or out of shape (a trailing space, a second word).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    let well_formed = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
        && token[body.len()..].bytes().all(|b| b == b'=');
    well_formed.then_some(token)
}

/// Whether `host` (a `Host` header's value) names a loopback listener on `port`: `127.0.0.1`,
/// `localhost` or `[::1]`, with that port. A control API bound elsewhere on purpose (never by
/// default) is reached by its address too, so `bound` (the listener's own `ip:port`) counts.
pub fn is_own_host(host: &str, port: u16, bound: &str) -> bool {
    let host = host.trim();
    if host.eq_ignore_ascii_case(bound) {
        return true;
    }
    let Some((name, given)) = host.rsplit_once(':') else { return false };
    if given.parse::<u16>().ok() != Some(port) {
        return false;
    }
    matches!(name.to_ascii_lowercase().as_str(), "127.0.0.1" | "localhost" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().expect("header"));
        h
    }

    #[test]
    fn bearer_tokens_are_taken_exactly() {
        assert_eq!(bearer_token(&headers("Bearer abc-DEF_1.2~3+4/5==")), Some("abc-DEF_1.2~3+4/5=="));
        assert_eq!(bearer_token(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("BEARER  abc")), Some("abc"));
        for bad in
            ["Bearer abc ", "Bearer abc def", "Bearer ", "Bearer", "Basic abc", "Bearer ab=c", "Bearer =", "Bearerabc"]
        {
            assert_eq!(bearer_token(&headers(bad)), None, "{bad:?}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn only_the_listeners_own_names_are_its_host() {
        for ok in ["127.0.0.1:4100", "localhost:4100", "LOCALHOST:4100", "[::1]:4100"] {
            assert!(is_own_host(ok, 4100, "127.0.0.1:4100"), "{ok}");
        }
        for bad in ["evil.example:4100", "127.0.0.1:4101", "127.0.0.1", "localhost", "127.0.0.1.evil.example:4100", ""]
        {
            assert!(!is_own_host(bad, 4100, "127.0.0.1:4100"), "{bad}");
        }
        assert!(is_own_host("10.0.0.5:4100", 4100, "10.0.0.5:4100"), "an address bound on purpose");
    }
}
