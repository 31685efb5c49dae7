//! Random ids of the form `<prefix>_` + 32 lowercase hex (128 random bits): calls (`call_`),
//! tasks (`task_`), file transfers (`file_`), contact requests (`req_`), escalations (`esc_`).

/// A fresh id: `prefix` + `_` + 32 lowercase hex.
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Whether `s` is `prefix` + `_` followed by 32 lowercase hex characters.
pub fn is_random_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_prefix_and_32_lowercase_hex() {
        let id = random_id("call");
        assert!(is_random_id(&id, "call"));
        assert!(!is_random_id(&id, "task"));
        assert!(!is_random_id("call_ABCDEF0123456789abcdef0123456789", "call"));
        assert!(!is_random_id(&format!("{id}0"), "call"));
        assert!(!is_random_id("callx0123456789abcdef0123456789abcdef", "call"));
    }
}
