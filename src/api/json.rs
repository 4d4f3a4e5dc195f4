//! A small scanner over already-validated JSON: finds a top-level member's value span, so the
//! gateway can rewrite or read one field without re-serialising the body.

use std::ops::Range;

/// Byte range of the value of top-level member `key` in a JSON object, or `None`.
///
/// `body` must be valid JSON (callers validate it first with simd-json); on anything else the
/// scanner returns `None` rather than panicking. Keys are compared by raw bytes, so a key
/// written with escapes (`"mod\u0065l"`) does not match: such a body is decoded by simd-json
/// (which unescapes) and the mismatch is caught by the caller.
pub fn top_level_value(body: &[u8], key: &[u8]) -> Option<Range<usize>> {
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(body, i);
        match body.get(i)? {
            b'}' => return None,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = string_end(body, i)?;
        let this_key = &body[i + 1..key_end - 1];
        i = skip_ws(body, key_end);
        if body.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(body, i + 1);
        let value_end = value_end(body, i)?;
        if this_key == key {
            return Some(i..value_end);
        }
        i = value_end;
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `b[start]` is `"`; returns the index one past the closing quote.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let off = memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        i += off;
        if b[i] == b'\\' {
            i += 2;
        } else {
            return Some(i + 1);
        }
    }
}

/// Index one past the value starting at `start`.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match *b.get(start)? {
        b'"' => string_end(b, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = start;
            while let Some(&c) = b.get(i) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// Append `s` to `out` as a JSON string literal (with quotes). Runs of bytes that need no
/// escape are copied whole (UTF-8 continuation bytes never do).
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        run = i + 1;
        if short.is_empty() {
            let hex = [HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]];
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&hex);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

/// Append `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(body: &'a str, key: &str) -> Option<&'a str> {
        top_level_value(body.as_bytes(), key.as_bytes()).map(|r| &body[r])
    }

    #[test]
    fn finds_top_level_members_only() {
        let body = r#"{"messages":[{"model":"inner","content":"a \"model\": x"}], "model" : "gpt-4o", "n":2}"#;
        assert_eq!(value(body, "model"), Some("\"gpt-4o\""));
        assert_eq!(value(body, "n"), Some("2"));
        assert_eq!(
            value(body, "messages"),
            Some(r#"[{"model":"inner","content":"a \"model\": x"}]"#)
        );
        assert_eq!(value(body, "stream"), None);
    }

    #[test]
    fn survives_escapes_and_nesting() {
        let body = r#"{"a":"x\\\"}","b":{"c":[1,{"d":"]"}]},"model":null}"#;
        assert_eq!(value(body, "model"), Some("null"));
        assert_eq!(value(body, "b"), Some(r#"{"c":[1,{"d":"]"}]}"#));
    }

    #[test]
    fn garbage_gives_none_not_panic() {
        for b in [
            "",
            "[",
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":\"x",
            "{\"a\":[1,",
            "nul",
        ] {
            assert_eq!(top_level_value(b.as_bytes(), b"a"), None, "{b}");
        }
    }

    #[test]
    fn write_string_escapes() {
        let mut out = Vec::new();
        write_string(&mut out, "a\"b\\c\n\u{1}é");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\n\\u0001é\""
        );
    }

    #[test]
    fn write_string_reads_back_as_the_same_text() {
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        for text in [
            "",
            "plain",
            every_ascii.as_str(),
            "é中\u{1F600}\u{2028}\"end",
            "\\\\\"\"\n\n\u{7f}",
        ] {
            let mut out = Vec::new();
            write_string(&mut out, text);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, text);
        }
    }

    #[test]
    fn write_u64_is_decimal() {
        for n in [0, 7, 10, 4096, u64::MAX] {
            let mut out = b"x".to_vec();
            write_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
