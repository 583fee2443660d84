//! Short text held on the stack: an address or a timestamp written on every request, without a
//! heap allocation for each.

use std::fmt;
use std::ops::Deref;

/// At most `N` bytes of UTF-8 text. Text is only ever appended whole (a `&str` or an ASCII
/// byte), so what it holds is always valid UTF-8.
#[derive(Clone, Copy)]
pub struct StackStr<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    pub const fn new() -> StackStr<N> {
        StackStr {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Appends `text`; `false`, with nothing appended, when it does not fit.
    pub fn push_str(&mut self, text: &str) -> bool {
        let end = self.len + text.len();
        match self.bytes.get_mut(self.len..end) {
            Some(room) => {
                room.copy_from_slice(text.as_bytes());
                self.len = end;
                true
            }
            None => false,
        }
    }

    /// Appends ASCII bytes whole; `false`, with nothing appended, when one is not ASCII or
    /// they do not fit.
    pub fn push_ascii_bytes(&mut self, bytes: &[u8]) -> bool {
        let end = self.len + bytes.len();
        match self.bytes.get_mut(self.len..end) {
            Some(room) if bytes.is_ascii() => {
                room.copy_from_slice(bytes);
                self.len = end;
                true
            }
            _ => false,
        }
    }

    /// Appends one ASCII byte; `false`, with nothing appended, when it is not ASCII or does
    /// not fit.
    pub fn push_ascii(&mut self, byte: u8) -> bool {
        match self.bytes.get_mut(self.len) {
            Some(slot) if byte.is_ascii() => {
                *slot = byte;
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    /// The bytes, without the UTF-8 check `as_str` makes (about 100 instructions; these are
    /// written into header lines and log lines several times a request).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Always UTF-8 (see the type): the fallback is never taken.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl<const N: usize> Default for StackStr<N> {
    fn default() -> StackStr<N> {
        StackStr::new()
    }
}

impl<const N: usize> Deref for StackStr<N> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> fmt::Write for StackStr<N> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.push_str(text) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

impl<const N: usize> fmt::Display for StackStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for StackStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> serde::Serialize for StackStr<N> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write;

    #[test]
    fn text_that_fits_is_kept_and_text_that_does_not_is_refused_whole() {
        let mut text = StackStr::<8>::new();
        assert!(text.push_str("abc"));
        assert!(text.push_ascii(b'-'));
        assert!(!text.push_str("12345"), "9 bytes in 8");
        assert_eq!(text.as_str(), "abc-");
        assert!(text.push_str("1234"));
        assert_eq!(&*text, "abc-1234");
        assert!(!text.push_ascii(b'x'));
        assert!(write!(text, "{}", 5).is_err());
        assert_eq!(text.to_string(), "abc-1234");
        let mut text = StackStr::<4>::new();
        assert!(!text.push_ascii_bytes("é".as_bytes()), "not ASCII");
        assert!(text.push_ascii_bytes(b"ab"));
        assert!(!text.push_ascii_bytes(b"cde"), "5 bytes in 4");
        assert!(text.push_ascii_bytes(b"cd"));
        assert_eq!(text.as_str(), "abcd");
    }

    #[test]
    fn only_ascii_bytes_are_pushed_alone() {
        let mut text = StackStr::<8>::new();
        assert!(!text.push_ascii(0xc3), "half of a UTF-8 sequence");
        assert!(text.push_str("é"));
        assert_eq!(text.as_str(), "é");
        assert_eq!(format!("{text:?}"), "\"é\"");
    }
}
