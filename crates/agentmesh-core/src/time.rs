//! Clocks and timestamp formats.
//!
//! Our native protocol uses integer **milliseconds** since the Unix epoch everywhere. Agent Mesh
//! V1 uses ISO-8601 UTC with whole seconds and a `Z` suffix (`2026-03-22T10:00:00Z`).

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, UTC).
pub fn iso_seconds(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses an RFC 3339 timestamp (`2026-03-22T10:00:00Z`, offsets and fractions allowed) into
/// milliseconds since the epoch; `None` when it is not RFC 3339 or lies before 1970.
pub fn parse_iso(text: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        let ms = 1_774_173_600_000; // 2026-03-22T10:00:00Z
        assert_eq!(iso_seconds(ms), "2026-03-22T10:00:00Z");
        assert_eq!(parse_iso("2026-03-22T10:00:00Z"), Some(ms));
        assert_eq!(parse_iso("2026-03-22T12:00:00+02:00"), Some(ms));
        assert_eq!(parse_iso("yesterday"), None);
    }
}
