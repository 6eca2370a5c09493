//! Text for people, made safe to write: what a handler puts on a terminal,
//! into a log file or a spreadsheet must not let one event's text pass for
//! another line, recolour the screen or run as a formula.
//!
//! ```
//! let mut line = String::new();
//! correlator_sdk::text::push_escaped(&mut line, "user\nroot logged in\u{1b}[2J");
//! assert_eq!(line, "user\\u{a}root logged in\\u{1b}[2J");
//! ```

/// Append `value` in decimal. `core::fmt` costs a WebAssembly guest
/// several times as much per number (a formatter, padding, dynamic calls),
/// which shows in modules and handlers that write a line per record or
/// event.
///
/// ```
/// let mut line = String::from("port ");
/// correlator_sdk::text::push_integer(&mut line, -2025);
/// assert_eq!(line, "port -2025");
/// ```
pub fn push_integer(out: &mut String, value: i64) {
    let mut digits = [0u8; 20];
    let mut rest = value.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        out.push('-');
    }
    for &digit in &digits[at..] {
        out.push(char::from(digit));
    }
}

/// Whether `c` could change how a line reads beyond its own glyph: C0 and
/// C1 control characters (but tab), DEL, the line and paragraph separators,
/// and the invisible and bidirectional formatting characters (U+200B to
/// U+200F, U+202A to U+202E, U+2060 to U+2069, U+FEFF), which can reverse
/// or hide what follows them.
pub fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Whether a byte may start an unsafe character: a C0 control or DEL, or
/// the lead byte of C1 controls (0xC2) or of the formatting characters
/// (0xE2, 0xEF). Text without any is copied as it is.
fn may_start_unsafe(byte: u8) -> bool {
    byte < 0x20 || matches!(byte, 0x7f | 0xc2 | 0xe2 | 0xef)
}

/// Append `text` to `out` with every [`is_unsafe`] character written as a
/// Rust-style `\u{..}` escape (and tab kept), so that it stays on one line
/// and shows what it holds.
pub fn push_escaped(out: &mut String, text: &str) {
    if !text.bytes().any(may_start_unsafe) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
}

/// Append `text` as one CSV cell: quoted when it holds a comma, quote or
/// line break (RFC 4180), and, when it could be read as a formula by a
/// spreadsheet (it starts with `=`, `+`, `-`, `@`, tab or carriage return),
/// prefixed with `'` and quoted, as OWASP's rule against CSV injection
/// says. Numbers that the handler renders itself need no neutralising;
/// use this for text.
pub fn push_csv_text(out: &mut String, text: &str) {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula || text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if formula {
            out.push('\'');
        }
        for c in text.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(text);
    }
}

/// Standard base64 (RFC 4648, with padding), for handlers that encode
/// bodies, headers or credentials.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = u32::from(chunk[0]) << 16
            | u32::from(chunk.get(1).copied().unwrap_or(0)) << 8
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(
                    ALPHABET[(group >> (18 - 6 * index) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn integers_read_as_display_writes_them() {
        for value in [0, 7, -7, 60116, i64::MAX, i64::MIN] {
            let mut out = String::new();
            super::push_integer(&mut out, value);
            assert_eq!(out, value.to_string());
        }
    }

    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        push_escaped(&mut out, text);
        out
    }

    fn cell(text: &str) -> String {
        let mut out = String::new();
        push_csv_text(&mut out, text);
        out
    }

    #[test]
    fn control_characters_separators_and_reordering_marks_are_escaped() {
        assert_eq!(escaped("plain – ünïcödé €"), "plain – ünïcödé €");
        assert_eq!(
            escaped("a\nb\r\x1b[31m\x07\0\x7f\u{85}c\td"),
            "a\\u{a}b\\u{d}\\u{1b}[31m\\u{7}\\u{0}\\u{7f}\\u{85}c\td"
        );
        assert_eq!(
            escaped("x\u{202e}gnp.exe\u{2028}\u{feff}"),
            "x\\u{202e}gnp.exe\\u{2028}\\u{feff}"
        );
    }

    #[test]
    fn csv_cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=cmd|' /C calc'!A0"), "\"'=cmd|' /C calc'!A0\"");
        assert_eq!(cell("+1"), "\"'+1\"");
        assert_eq!(cell("-2+3"), "\"'-2+3\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(cell("\tx"), "\"'\tx\"");
        assert_eq!(cell("a=b"), "a=b");
    }

    #[test]
    fn base64_is_rfc_4648s() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
    }
}
