//! Text a peer chose (a display name, a file name) made safe to show: characters that change
//! how the text around them looks without being seen themselves are replaced by a visible one.
//!
//! Those are the format characters (Unicode general category `Cf`: the bidirectional controls
//! U+202A–U+202E and U+2066–U+2069 that let `evil\u{202e}gnp.exe` show as `evilexe.png`, zero-width
//! spaces and joiners, the byte order mark, soft hyphens, tag characters), the line and paragraph
//! separators (`Zl`, `Zp`), the control characters (`Cc`), and the Hangul fillers, letters that
//! print as nothing. Categories come from the Unicode Character Database (UAX #44) through the
//! `unicode-general-category` crate.

use unicode_general_category::{GeneralCategory, get_general_category};

/// What an invisible character is shown as in a display name: U+FFFD REPLACEMENT CHARACTER.
pub const SHOWN_AS: char = '\u{fffd}';

/// Whether `c` is invisible or changes how the text around it is shown (see the module docs).
pub fn is_invisible(c: char) -> bool {
    matches!(c, '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}')
        || matches!(
            get_general_category(c),
            GeneralCategory::Format
                | GeneralCategory::Control
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// `text` with every invisible character replaced by `with`.
pub fn replace_invisible(text: &str, with: char) -> String {
    text.chars().map(|c| if is_invisible(c) { with } else { c }).collect()
}

/// A peer's display name as we keep and show it: invisible characters become [`SHOWN_AS`].
pub fn display_name(name: &str) -> String {
    replace_invisible(name, SHOWN_AS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_and_invisible_characters_are_seen() {
        assert_eq!(display_name("evil\u{202e}gnp.exe"), "evil\u{fffd}gnp.exe");
        for c in ['\u{202a}', '\u{2066}', '\u{2069}', '\u{200b}', '\u{200d}', '\u{200e}', '\u{feff}', '\u{ad}'] {
            assert!(is_invisible(c), "{:04x}", c as u32);
        }
        for c in ['\u{2028}', '\u{2029}', '\u{e0041}', '\u{3164}', '\n', '\u{1b}'] {
            assert!(is_invisible(c), "{:04x}", c as u32);
        }
        for c in ['a', 'é', 'ß', '日', 'ñ', ' ', '-', '😀'] {
            assert!(!is_invisible(c), "{c}");
        }
        assert_eq!(display_name("Ärztin Bob"), "Ärztin Bob");
    }
}
