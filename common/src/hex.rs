//! Lower-case hex without an allocator: fingerprints and nonces travel as hex in JSON.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `2 * bytes.len()` lower-case hex digits into `out`; returns them as `&str`.
/// Panics if `out` is too short (a programming error: callers size it statically).
pub fn encode<'o>(bytes: &[u8], out: &'o mut [u8]) -> &'o str {
    let out = &mut out[..bytes.len() * 2];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[(b >> 4) as usize];
        pair[1] = DIGITS[(b & 0xf) as usize];
    }
    // Only ASCII digits were written.
    core::str::from_utf8(out).unwrap_or_default()
}

/// Why a hex string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HexError {
    /// The string has `found` characters; `expected` were required.
    Length { expected: usize, found: usize },
    /// A character that is not a hex digit, at this position.
    Digit { position: usize },
}

impl core::fmt::Display for HexError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HexError::Length { expected, found } => {
                write!(f, "expected {expected} hex characters, found {found}")
            }
            HexError::Digit { position } => write!(f, "not a hex digit at position {position}"),
        }
    }
}

/// Decodes exactly `out.len()` bytes of hex (either case) from `s`.
pub fn decode_into(s: &str, out: &mut [u8]) -> Result<(), HexError> {
    let s = s.as_bytes();
    if s.len() != out.len() * 2 {
        return Err(HexError::Length {
            expected: out.len() * 2,
            found: s.len(),
        });
    }
    for (i, (pair, o)) in s.chunks_exact(2).zip(out.iter_mut()).enumerate() {
        let hi = nibble(pair[0]).ok_or(HexError::Digit { position: 2 * i })?;
        let lo = nibble(pair[1]).ok_or(HexError::Digit {
            position: 2 * i + 1,
        })?;
        *o = (hi << 4) | lo;
    }
    Ok(())
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut buf = [0u8; 128];
            let s = encode(&bytes, &mut buf);
            let mut back = [0u8; 64];
            decode_into(s, &mut back[..bytes.len()]).unwrap();
            proptest::prop_assert_eq!(&back[..bytes.len()], &bytes[..]);
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let mut out = [0u8; 20];
            let _ = decode_into(&s, &mut out);
        }
    }

    #[test]
    fn errors_say_where() {
        let mut out = [0u8; 2];
        assert_eq!(
            decode_into("abc", &mut out),
            Err(HexError::Length {
                expected: 4,
                found: 3
            })
        );
        assert_eq!(
            decode_into("abzz", &mut out),
            Err(HexError::Digit { position: 2 })
        );
        decode_into("ABcd", &mut out).unwrap();
        assert_eq!(out, [0xab, 0xcd]);
    }
}
