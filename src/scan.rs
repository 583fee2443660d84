//! Byte scans eight bytes at a time (SWAR: plain integer arithmetic on a `u64`), for the text
//! every request writes: access-log strings that almost never need escaping, and header values
//! that almost never hold a control character. A word that has none of the bytes looked for is
//! skipped whole; only a word that has one is looked at byte by byte.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is below `n` (exact for `n <= 0x80`).
fn has_below(word: u64, n: u8) -> bool {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0
}

/// Whether any byte of `word` is `b`.
fn has_byte(word: u64, b: u8) -> bool {
    has_below(word ^ (ONES * u64::from(b)), 1)
}

/// How many leading bytes can be skipped, in whole words, because no word among them has a
/// byte that `dirty` flags. The bytes after that still need a byte-by-byte look.
fn clean_words(bytes: &[u8], dirty: impl Fn(u64) -> bool) -> usize {
    let mut skipped = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if dirty(u64::from_le_bytes(word)) {
            break;
        }
        skipped += 8;
    }
    skipped
}

/// Whether a byte must be escaped in a JSON string: a control character, `"` or `\`.
pub fn json_escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The index of the first byte from `from` on that must be escaped in a JSON string.
pub fn next_json_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let skipped = clean_words(rest, |w| {
        has_below(w, 0x20) || has_byte(w, b'"') || has_byte(w, b'\\')
    });
    rest[skipped..]
        .iter()
        .position(|&b| json_escaped(b))
        .map(|i| from + skipped + i)
}

/// Whether a byte may stand in a header value: no control character but tab, no DEL (what
/// `http::HeaderValue` accepts).
pub fn header_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// Whether every byte may stand in a header value.
pub fn is_header_value(bytes: &[u8]) -> bool {
    let skipped = clean_words(bytes, |w| has_below(w, 0x20) || has_byte(w, 0x7f));
    bytes[skipped..].iter().all(|&b| header_value_byte(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value, at every position of a word and past the last whole word, against the
    /// byte-by-byte definitions.
    #[test]
    fn word_scans_agree_with_byte_scans() {
        for len in [0usize, 1, 7, 8, 9, 16, 23, 24, 31] {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut text = vec![b'a'; len];
                    text[pos] = b;
                    let want = text.iter().position(|&c| json_escaped(c));
                    assert_eq!(
                        next_json_escape(&text, 0),
                        want,
                        "len {len} pos {pos} byte {b:#x}"
                    );
                    assert_eq!(
                        is_header_value(&text),
                        text.iter().all(|&c| header_value_byte(c)),
                        "len {len} pos {pos} byte {b:#x}"
                    );
                }
            }
        }
    }

    /// Pairs of bytes in one word, high bytes among them: a borrow from one lane must not
    /// hide or invent a byte in the next.
    #[test]
    fn two_bytes_in_one_word_agree_with_byte_scans() {
        let interesting = [
            0x00u8, 0x01, 0x08, 0x09, 0x0a, 0x1f, 0x20, 0x21, b'"', b'\\', 0x5b, 0x7e, 0x7f, 0x80,
            0x9f, 0xa0, 0xdc, 0xff,
        ];
        for i in 0..8 {
            for j in 0..8 {
                for &a in &interesting {
                    for &b in &interesting {
                        let mut text = *b"abcdefghij";
                        text[i] = a;
                        text[j] = b;
                        let want = text.iter().position(|&c| json_escaped(c));
                        assert_eq!(next_json_escape(&text, 0), want, "{text:?}");
                        assert_eq!(
                            is_header_value(&text),
                            text.iter().all(|&c| header_value_byte(c)),
                            "{text:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_scan_resumes_after_an_escape_and_stops_at_the_end() {
        let text = br#"0123456789"abcdefgh\ijklmnopq"#;
        assert_eq!(next_json_escape(text, 0), Some(10));
        assert_eq!(next_json_escape(text, 11), Some(19));
        assert_eq!(next_json_escape(text, 20), None);
        assert_eq!(next_json_escape(text, text.len()), None);
        assert_eq!(next_json_escape(text, text.len() + 1), None);
    }

    #[test]
    fn header_values_keep_tab_and_high_bytes_and_refuse_controls() {
        assert!(is_header_value(
            b"text/html;\tcharset=\xe9t\xe9 and more words"
        ));
        assert!(!is_header_value(b"a perfectly fine value\r\nSet-Cookie: x"));
        assert!(!is_header_value(b"a perfectly fine value with DEL\x7f"));
        assert!(!is_header_value(b"nul\0"));
    }
}
