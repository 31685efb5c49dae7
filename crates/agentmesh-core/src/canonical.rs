//! Python-compatible canonical JSON.
//!
//! Produces exactly the bytes of Python's
//! `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()`:
//! object keys sorted by code point at every level, no whitespace, every character outside
//! printable ASCII (`0x20..=0x7e`) escaped as `\uXXXX` (lowercase hex, UTF-16 surrogate pairs above
//! U+FFFF), and floats in Python's `repr` form (`1.0`, `1e-05`, `1e+16`).
//!
//! Agent Mesh V1 signs these bytes (`../shared/PROTOCOLS.md` §1) and so do our agent cards. No
//! published crate emits Python's `ensure_ascii` and float `repr` conventions, so this serializer
//! is ours; parsing is always `serde_json`'s.

use serde_json::{Map, Number, Value};

/// Serializes `value` to canonical JSON text (see the module docs for the exact rules).
pub fn to_string(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value);
    out
}

/// Canonical JSON of `object` with the member `skip` left out (e.g. the `signature` field).
pub fn to_string_without(object: &Map<String, Value>, skip: &str) -> String {
    let mut out = String::with_capacity(256);
    write_object(&mut out, object, Some(skip));
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, None),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>, skip: Option<&str>) {
    // UTF-8 byte order equals code point order, which is how Python sorts `str` keys.
    let mut keys: Vec<&String> = map.keys().filter(|k| Some(k.as_str()) != skip).collect();
    keys.sort_unstable();
    out.push('{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        if let Some(v) = map.get(key) {
            write_value(out, v);
        }
    }
    out.push('}');
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        out.push_str(&python_float_repr(f));
    }
}

/// Python's `repr(float)`: the shortest round-tripping digits, positional notation for decimal
/// exponents in `-4..16`, otherwise `d.ddde±XX` with at least two exponent digits.
fn python_float_repr(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let sci = format!("{f:e}"); // shortest round-trip digits, e.g. "1.5e16", "-2e-5"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let fixed = format!("{f}");
        if fixed.contains('.') { fixed } else { format!("{fixed}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps() {
        // Expected strings produced by CPython 3.11:
        // json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        let v = json!({"b": [1, 2.5, null, true], "a": {"z": "x", "é": "ü😀"}, "c": "tab\tq\"\\\u{7f}"});
        assert_eq!(
            to_string(&v),
            r#"{"a":{"z":"x","\u00e9":"\u00fc\ud83d\ude00"},"b":[1,2.5,null,true],"c":"tab\tq\"\\\u007f"}"#
        );
    }

    #[test]
    fn floats_survive_a_parse_round_trip() {
        // Found by proptest: without serde_json's `float_roundtrip`, parsing this text gave a
        // neighbouring f64, so re-canonicalizing a peer's JSON changed the signed bytes.
        let text = "[-1.1406277700094495e+268]";
        let value: Value = serde_json::from_str(text).expect("parse");
        assert_eq!(to_string(&value), text);
    }

    #[test]
    fn floats_follow_python_repr() {
        for (f, expect) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (123.456, "123.456"),
        ] {
            assert_eq!(python_float_repr(f), expect, "{f}");
        }
    }

    #[test]
    fn skips_member() {
        let v = json!({"signature": "x", "a": 1});
        let Value::Object(map) = v else { unreachable!() };
        assert_eq!(to_string_without(&map, "signature"), r#"{"a":1}"#);
    }
}
