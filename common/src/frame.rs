//! Frames on a byte stream (the firmware's serial link): `COBS(payload ‖ CRC-32) ‖ 0x00`.
//!
//! COBS makes 0x00 a delimiter that never occurs inside a frame, so a receiver that joins
//! mid-stream or loses bytes resynchronises at the next zero; the CRC (IEEE 802.3, little
//! endian) rejects a frame damaged on the wire before postcard sees it. Both ends use this
//! module: the firmware (no heap, fixed buffers) and `attest-agent relay`.

/// Bytes added around a payload of `n` bytes, at most: CRC, COBS overhead, delimiter.
pub const fn max_encoded_len(n: usize) -> usize {
    let raw = n + 4;
    raw + raw / 254 + 1 + 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// The output or receive buffer is too small for this frame.
    TooLarge,
    /// Not valid COBS (a code byte points past the frame's end).
    Malformed,
    /// The CRC does not match: the frame was damaged.
    BadCrc,
    /// Fewer bytes than a CRC.
    TooShort,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FrameError::TooLarge => "frame larger than the buffer",
            FrameError::Malformed => "frame is not valid COBS",
            FrameError::BadCrc => "frame CRC mismatch",
            FrameError::TooShort => "frame shorter than its CRC",
        })
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it), bitwise: small over fast.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Frames `payload` into `out` (which needs [`max_encoded_len`]`(payload.len())` bytes);
/// returns the frame's length, delimiter included.
pub fn encode(payload: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    let start = in_place_start(payload.len());
    out.get_mut(start..start + payload.len())
        .ok_or(FrameError::TooLarge)?
        .copy_from_slice(payload);
    encode_in_place(out, start, payload.len())
}

/// Where [`encode_in_place`] wants a payload of `len` bytes: late enough in the buffer that
/// the frame written from index 0 never overtakes the payload bytes not yet read (COBS adds
/// one byte per 254, plus the first code byte).
pub const fn in_place_start(len: usize) -> usize {
    max_encoded_len(len) - len
}

/// Frames the payload at `buf[start..start + len]` into `buf` itself, from index 0: a
/// sender serializes straight into its frame buffer and needs no second buffer. `start`
/// must be at least [`in_place_start`]`(len)`.
pub fn encode_in_place(buf: &mut [u8], start: usize, len: usize) -> Result<usize, FrameError> {
    let payload_end = start.checked_add(len).ok_or(FrameError::TooLarge)?;
    if start < in_place_start(len) || payload_end > buf.len() {
        return Err(FrameError::TooLarge);
    }
    let crc = crc32(&buf[start..payload_end]).to_le_bytes();
    let mut code_at = 0;
    let mut at = 1;
    let mut code = 1u8;
    for i in 0..len + crc.len() {
        // Read before any write: `at` is at most `start + i` here (see in_place_start).
        let b = if i < len {
            buf[start + i]
        } else {
            crc[i - len]
        };
        if b == 0 {
            *buf.get_mut(code_at).ok_or(FrameError::TooLarge)? = code;
            code_at = at;
            at += 1;
            code = 1;
        } else {
            *buf.get_mut(at).ok_or(FrameError::TooLarge)? = b;
            at += 1;
            code += 1;
            if code == 0xff {
                *buf.get_mut(code_at).ok_or(FrameError::TooLarge)? = code;
                code_at = at;
                at += 1;
                code = 1;
            }
        }
    }
    *buf.get_mut(code_at).ok_or(FrameError::TooLarge)? = code;
    *buf.get_mut(at).ok_or(FrameError::TooLarge)? = 0;
    Ok(at + 1)
}

/// Decodes one frame's COBS bytes (without the delimiter) in place; returns the payload's
/// length after checking and removing the CRC.
pub fn decode_in_place(buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut read = 0;
    let mut write = 0;
    while read < buf.len() {
        let code = usize::from(buf[read]);
        if code == 0 || read + code > buf.len() {
            return Err(FrameError::Malformed);
        }
        read += 1;
        for _ in 1..code {
            buf[write] = buf[read];
            write += 1;
            read += 1;
        }
        if code != 0xff && read < buf.len() {
            buf[write] = 0;
            write += 1;
        }
    }
    if write < 4 {
        return Err(FrameError::TooShort);
    }
    let n = write - 4;
    let crc = u32::from_le_bytes([buf[n], buf[n + 1], buf[n + 2], buf[n + 3]]);
    if crc != crc32(&buf[..n]) {
        return Err(FrameError::BadCrc);
    }
    Ok(n)
}

/// Collects bytes from a stream into frames, in a buffer of `N` bytes. An overlong frame is
/// reported once and skipped up to the next delimiter.
pub struct Deframer<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Default for Deframer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Deframer<N> {
    pub const fn new() -> Self {
        Deframer {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// Feeds one byte. At a delimiter: `Some(Ok(payload))` for a good frame, `Some(Err)`
    /// for a bad one; empty frames (repeated delimiters) are ignored.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        if byte != 0 {
            if self.len < N {
                self.buf[self.len] = byte;
                self.len += 1;
            } else {
                self.overflow = true;
            }
            return None;
        }
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.overflow) {
            return Some(Err(FrameError::TooLarge));
        }
        if len == 0 {
            return None;
        }
        Some(decode_in_place(&mut self.buf[..len]).map(|n| &self.buf[..n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn known_cobs_vectors() {
        // payload 11 22 00 33 → CRC appended, then COBS; round trip and no zero inside.
        let mut out = [0u8; 32];
        let n = encode(&[0x11, 0x22, 0x00, 0x33], &mut out).unwrap();
        assert_eq!(out[n - 1], 0);
        assert!(out[..n - 1].iter().all(|&b| b != 0));
        assert_eq!(&out[..3], &[0x03, 0x11, 0x22]);
        let mut frame = out;
        let len = decode_in_place(&mut frame[..n - 1]).unwrap();
        assert_eq!(&frame[..len], &[0x11, 0x22, 0x00, 0x33]);
    }

    #[test]
    fn long_runs_without_zero_round_trip() {
        let payload = [0x41u8; 700];
        let mut out = [0u8; max_encoded_len(700)];
        let n = encode(&payload, &mut out).unwrap();
        let mut d = Deframer::<1024>::new();
        let mut got = None;
        for &b in &out[..n] {
            if let Some(r) = d.push(b) {
                got = Some(r.unwrap().to_vec());
            }
        }
        assert_eq!(got.unwrap(), payload);
    }
}
