//! Response parameters read straight from the frame.
//!
//! The client needs a few fields of each answer (a handle, a sized buffer, a property). The
//! typed unmarshalling of `tpm2-protocol` builds whole response structures, unions
//! included, on the stack: 6–7 KiB of stack and several KiB of code per response type,
//! which a 64 KiB, 128 KiB boot image cannot carry. Commands are still marshalled by
//! `tpm2-protocol`; answers are read here, every length checked against what is left, so a
//! lying TPM gets an error, never an out-of-bounds read.

const HEADER: usize = 10;
const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;

/// A response header that holds together: tag, size equal to the frame, response code.
pub fn check_header(frame: &[u8]) -> Option<u32> {
    let mut r = Reader(frame);
    let tag = r.u16()?;
    let size = r.u32()?;
    let rc = r.u32()?;
    let known_tag = tag == ST_NO_SESSIONS || tag == ST_SESSIONS;
    (known_tag && size as usize == frame.len()).then_some(rc)
}

/// A successful frame's handles (`handles` of them) and its parameter area (without the
/// sessions that follow it when the tag says there are some).
pub fn split(frame: &[u8], handles: usize) -> Option<(Reader<'_>, Reader<'_>)> {
    check_header(frame)?;
    let tag = u16::from_be_bytes([frame[0], frame[1]]);
    let mut r = Reader(frame.get(HEADER..)?);
    let handle_bytes = Reader(r.take(handles.checked_mul(4)?)?);
    let params = if tag == ST_SESSIONS {
        let size = r.u32()? as usize;
        Reader(r.take(size)?)
    } else {
        r
    };
    Some((handle_bytes, params))
}

/// Big-endian fields off the front of a byte slice; `None` when it runs out.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A TPM2B's contents.
    pub fn sized(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A byte-counted list (TPMS_PCR_SELECTION's sizeofSelect and pcrSelect).
    pub fn sized_u8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A TPM2B with its size prefix, as it was marshalled.
    pub fn sized_raw(&mut self) -> Option<&'a [u8]> {
        let whole = self.0;
        let n = usize::from(self.u16()?);
        self.take(n)?;
        Some(&whole[..2 + n])
    }

    pub fn rest(&self) -> &'a [u8] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u16, body: &[u8]) -> heapless::Vec<u8, 64> {
        let mut f = heapless::Vec::new();
        for part in [
            &tag.to_be_bytes()[..],
            &((10 + body.len()) as u32).to_be_bytes(),
            &[0; 4],
            body,
        ] {
            f.extend_from_slice(part).unwrap();
        }
        f
    }

    #[test]
    fn handles_parameters_and_sessions() {
        // One handle, parameterSize 4, a TPM2B of 2 bytes, then a session area.
        let f = frame(
            ST_SESSIONS,
            &[0x80, 0, 0, 1, 0, 0, 0, 4, 0, 2, 0xaa, 0xbb, 0, 0, 1, 0, 0],
        );
        let (mut h, mut p) = split(&f, 1).unwrap();
        assert_eq!(h.u32(), Some(0x8000_0001));
        assert_eq!(p.sized(), Some(&[0xaa, 0xbb][..]));
        assert!(p.rest().is_empty(), "the sessions are not parameters");
        let f = frame(ST_NO_SESSIONS, &[0, 1, 7]);
        let (_, mut p) = split(&f, 0).unwrap();
        assert_eq!(p.sized_raw(), Some(&[0, 1, 7][..]));
    }

    #[test]
    fn lies_are_refused() {
        assert!(split(&frame(0x1234, &[]), 0).is_none(), "unknown tag");
        let mut f = frame(ST_NO_SESSIONS, &[0, 5, 1]);
        assert!(
            split(&f, 0).unwrap().1.sized().is_none(),
            "TPM2B past the end"
        );
        f[5] += 1;
        assert!(check_header(&f).is_none(), "size field is not the frame's");
        let f = frame(ST_SESSIONS, &[0, 0, 0, 9, 1]);
        assert!(split(&f, 0).is_none(), "parameterSize past the end");
        assert!(
            split(&frame(ST_NO_SESSIONS, &[0, 0]), 1).is_none(),
            "missing handle"
        );
        assert!(check_header(&[0x80, 0x01, 0, 0]).is_none(), "short header");
    }
}
