//! Output conventions: `--json` prints one JSON document (or JSON lines) on stdout and nothing
//! else; failures print `{"error":{"code","message"}}` on stderr. A closed stdout (broken pipe)
//! ends the program quietly. Peer-supplied text is made safe for a terminal before it is shown.

use std::io::Write;

use serde::Serialize;

/// Writes a line to stdout; exits quietly with status 0 if the reader went away.
pub(crate) fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Prints a value as JSON on one line (JSON lines for streams).
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) {
    line(&serde_json::to_string(value).unwrap_or_default());
}

/// Prints a value as one pretty-printed JSON document (`--json` replies).
pub(crate) fn json_doc<T: Serialize + ?Sized>(value: &T) {
    line(&serde_json::to_string_pretty(value).unwrap_or_default());
}

/// Makes peer-supplied text safe for a terminal: control characters (escape sequences, carriage
/// returns, …) and other invisible ones (bidirectional overrides, zero-width characters:
/// [`agentmesh_core::text::is_invisible`]) become U+FFFD; newlines and tabs are kept only when
/// `multiline`.
pub(crate) fn clean(text: &str, multiline: bool) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' if multiline => c,
            '\n' | '\t' => ' ',
            c if agentmesh_core::text::is_invisible(c) => agentmesh_core::text::SHOWN_AS,
            c => c,
        })
        .collect()
}

/// A one-line, terminal-safe rendering of an optional text, `-` when absent.
pub(crate) fn text(value: Option<&str>) -> String {
    clean(value.unwrap_or("-"), false)
}

/// Milliseconds since the epoch as a short UTC time.
pub(crate) fn time(ms: i64) -> String {
    agentmesh_core::time::iso_seconds(ms.max(0) as u64).replace('T', " ").trim_end_matches('Z').to_owned()
}

/// A duration in seconds, short: `42s`, `7m`, `3h`, `2d`.
pub(crate) fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7_200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Capability tags as `a,b,c`, control characters stripped.
pub(crate) fn list(items: &[String]) -> String {
    items.iter().map(|s| clean(s, false)).collect::<Vec<_>>().join(",")
}

/// The first 23 characters of a fingerprint (`sha256:` + 16 hex).
pub(crate) fn short_fingerprint(fingerprint: &str) -> String {
    clean(fingerprint, false).chars().take(23).collect()
}

/// Prints rows as an aligned table with a header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let render = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    line(&render(header.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        line(&render(row.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_number_fields_are_shown_as_numbers() {
        assert_eq!(age(7), "7s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(7_200), "2h");
        assert_eq!(age(3 * 86_400), "3d");
        assert_eq!(time(1_774_173_600_000), "2026-03-22 10:00:00");
    }
}
