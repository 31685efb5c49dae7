//! Output conventions: `--json` prints one JSON document (or JSON lines) on stdout and nothing
//! else; failures print `{"error":{"code","message"}}` on stderr. A closed stdout (broken pipe)
//! ends the program quietly.

use std::io::Write;

use serde_json::Value;

/// Writes a line to stdout; exits quietly with status 0 if the reader went away.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Prints a JSON value on one line.
pub fn json(value: &Value) {
    line(&value.to_string());
}

/// Prints a JSON value pretty-printed (for `--json` single documents).
pub fn json_doc(value: &Value) {
    line(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// Makes peer-supplied text safe for a terminal: control characters (escape sequences, carriage
/// returns, …) become U+FFFD; newlines and tabs are kept only when `multiline`.
pub fn clean(text: &str, multiline: bool) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' if multiline => c,
            '\n' | '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// Formats milliseconds since the epoch as a short UTC time, `-` when absent.
pub fn time(ms: &Value) -> String {
    match ms.as_u64() {
        Some(ms) => agentmesh_core::time::iso_seconds(ms).replace('T', " ").trim_end_matches('Z').to_owned(),
        None => "-".into(),
    }
}

/// A string field or `-`, made safe for a terminal (see [`clean`]).
pub fn field(v: &Value, key: &str) -> String {
    clean(v.get(key).and_then(Value::as_str).unwrap_or("-"), false)
}

/// Prints rows as an aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
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

/// A JSON array of strings (capability tags) as `a,b,c`, control characters stripped.
pub fn list(value: &Value) -> String {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).map(|s| clean(s, false)).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}
