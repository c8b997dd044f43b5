//! A fast path for the records nearly every producer writes: one flat JSON object whose values
//! are plain strings, small integers, booleans or null.
//!
//! serde_json spent about 2,900 instructions on such a record (a fifth of `process`'s), most of
//! it in its general machinery: visitors per field, `Option` handling, the skipping of unknown
//! values. This scanner reads that one shape directly. It is deliberately narrow: anything else
//! (an escape or control character in a string, a fraction or exponent, a long integer, a nested
//! value, a duplicate field, a syntax error) makes it answer `None`, and the caller decodes the
//! record with serde_json as before. So it never decides what is valid or what an error says;
//! it only answers what serde_json would answer for the records it does accept (a test compares
//! the two on generated and mangled records).

/// One value of a flat record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FlatValue<'a> {
    /// A string without escapes, borrowed from the record.
    Str(&'a str),
    /// An integer of at most 18 digits (so it fits u64 and i64 alike, as serde_json reads it).
    Int(i64),
    Bool,
    Null,
}

/// Calls `field` with each key and value of the flat object `text`, in order, and returns
/// `Some(())` once the whole text was read; `None` as soon as the text is not of the flat shape
/// or `field` returns false (then some fields may have been passed already).
pub(crate) fn for_each_field<'a>(
    text: &'a str,
    mut field: impl FnMut(&'a str, FlatValue<'a>) -> bool,
) -> Option<()> {
    let mut scan = Scanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    scan.skip_whitespace();
    scan.expect(b'{')?;
    scan.skip_whitespace();
    if scan.peek() == Some(b'}') {
        scan.at += 1;
    } else {
        loop {
            let key = scan.string()?;
            scan.skip_whitespace();
            scan.expect(b':')?;
            scan.skip_whitespace();
            let value = scan.value()?;
            if !field(key, value) {
                return None;
            }
            scan.skip_whitespace();
            match scan.next()? {
                b',' => scan.skip_whitespace(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    scan.skip_whitespace();
    (scan.at == scan.bytes.len()).then_some(())
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// JSON's whitespace only (serde_json refuses the rest, a form feed say).
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// A string without escapes or control characters, its quotes dropped.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let length = special_byte(&self.bytes[start..])?;
        if self.bytes[start + length] != b'"' {
            return None;
        }
        self.at = start + length + 1;
        // Both ends are ASCII quotes of valid UTF-8 text, so these are character boundaries.
        Some(&self.text[start..start + length])
    }

    fn value(&mut self) -> Option<FlatValue<'a>> {
        match self.peek()? {
            b'"' => self.string().map(FlatValue::Str),
            b'-' | b'0'..=b'9' => self.integer().map(FlatValue::Int),
            b't' => self.word("true", FlatValue::Bool),
            b'f' => self.word("false", FlatValue::Bool),
            b'n' => self.word("null", FlatValue::Null),
            _ => None,
        }
    }

    fn word(&mut self, word: &str, value: FlatValue<'a>) -> Option<FlatValue<'a>> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word.as_bytes()).then(|| {
            self.at = end;
            value
        })
    }

    /// `-?(0|[1-9][0-9]*)` of at most 18 digits, not followed by a fraction or an exponent, and
    /// not `-0`.
    fn integer(&mut self) -> Option<i64> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let start = self.at;
        let mut value: i64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            if self.at - start == 18 {
                return None;
            }
            value = value * 10 + i64::from(digit - b'0');
            self.at += 1;
        }
        let digits = self.at - start;
        let leading_zero = digits > 1 && self.bytes[start] == b'0';
        // serde_json reads `-0` as the float -0.0.
        let negative_zero = negative && value == 0;
        if digits == 0
            || leading_zero
            || negative_zero
            || matches!(self.peek(), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        Some(if negative { -value } else { value })
    }
}

/// The index of the first `"`, `\\` or control character (below 0x20) in `bytes`.
///
/// Strings were scanned a byte at a time, about 7 instructions a byte and the largest part of
/// this scanner's cost; this looks at 8 bytes per step. The memchr crate finds up to three given
/// bytes but not a range, and these strings are short, so a word at a time is enough.
fn special_byte(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // High bit of each byte below `n` (n <= 0x80). A borrow can only mark bytes after a true
    // one, so the lowest marked byte is always exact.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut words {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let marked = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if marked != 0 {
            return Some(offset + marked.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| matches!(b, b'"' | b'\\' | 0..=0x1f))
        .map(|at| offset + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Option<Vec<(&str, FlatValue<'_>)>> {
        let mut seen = Vec::new();
        for_each_field(text, |key, value| {
            seen.push((key, value));
            true
        })
        .map(|()| seen)
    }

    #[test]
    fn reads_the_flat_shape() {
        assert_eq!(
            fields(r#" {"a":"x y", "n" : -12,"z":0,"t":true,"f":false,"u":null,"e":""} "#),
            Some(vec![
                ("a", FlatValue::Str("x y")),
                ("n", FlatValue::Int(-12)),
                ("z", FlatValue::Int(0)),
                ("t", FlatValue::Bool),
                ("f", FlatValue::Bool),
                ("u", FlatValue::Null),
                ("e", FlatValue::Str("")),
            ])
        );
        assert_eq!(fields("{}"), Some(vec![]));
        assert_eq!(
            fields(r#"{"emoji":"🎉"}"#),
            Some(vec![("emoji", FlatValue::Str("🎉"))])
        );
    }

    #[test]
    fn finds_the_first_special_byte_at_any_position() {
        let naive = |bytes: &[u8]| {
            bytes
                .iter()
                .position(|&b| matches!(b, b'"' | b'\\' | 0..=0x1f))
        };
        // Neighbours of the special bytes and of the borrow boundaries, and UTF-8 bytes.
        let fillers = [
            0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xa1, 0xe2, 0xff, b'a',
        ];
        let specials = [b'"', b'\\', 0x00, 0x01, 0x1f, 0x0a];
        for length in 0..27 {
            for &filler in &fillers {
                let plain = vec![filler; length];
                assert_eq!(special_byte(&plain), naive(&plain));
                for at in 0..length {
                    for &first in &specials {
                        for &second in &specials {
                            let mut bytes = plain.clone();
                            bytes[at] = first;
                            if let Some(later) = bytes.get_mut(at + 1) {
                                *later = second;
                            }
                            assert_eq!(special_byte(&bytes), Some(at), "{bytes:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn leaves_everything_else_to_serde_json() {
        for text in [
            r#"{"a":"x\"y"}"#,
            "{\"a\":\"x\ty\"}",
            r#"{"a":1.5}"#,
            r#"{"a":1e3}"#,
            r#"{"a":01}"#,
            r#"{"a":-}"#,
            r#"{"a":-0}"#,
            r#"{"a":1234567890123456789}"#,
            r#"{"a":[1]}"#,
            r#"{"a":{}}"#,
            r#"{"a":nul}"#,
            r#"{"a":"x",}"#,
            r#"{"a":"x"} x"#,
            r#"{"a":"x""#,
            r#"{"a" "x"}"#,
            "{\"a\":\"x\"}\u{c}",
            r#"["a"]"#,
            "",
        ] {
            assert_eq!(fields(text), None, "{text}");
        }
    }
}
