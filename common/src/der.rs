//! Just enough DER to find our way around certificates and public keys without an allocator.
//!
//! The fingerprint must be computed over exactly the bytes of one DER object, and we must be
//! able to tell a certificate from a bare SubjectPublicKeyInfo and to pull the EK public key
//! out of a certificate. A full X.509 parser needs `alloc`; this walker needs nothing, never
//! panics on any input (property-tested), and reads DER only (DESIGN.md §3.1): indefinite,
//! over-long and non-minimal lengths are refused, and so are bytes left inside a structure
//! after its last field. One key must have one encoding, or one EK could come back under
//! many fingerprints; [`check_strict`] walks a whole object and names the offset of the
//! first fault.

/// DER tag numbers we need (universal class, constructed where applicable).
pub const SEQUENCE: u8 = 0x30;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OID: u8 = 0x06;
/// `[0] EXPLICIT` context tag (certificate version).
pub const CONTEXT_0: u8 = 0xa0;

/// Why some bytes are not the DER we expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DerError {
    /// The input ended inside a tag, a length or a value.
    Truncated,
    /// Indefinite length (BER), or a length that does not fit in four bytes.
    BadLength,
    /// Multi-byte tag numbers: never used by the structures we read.
    UnsupportedTag,
    /// A tag other than the one the structure requires.
    UnexpectedTag { expected: u8, found: u8 },
    /// A length in the long form where the short form fits, or with a leading zero byte
    /// (BER allows both; DER does not).
    NonMinimalLength,
    /// Bytes left inside a structure after its last field, or after the object.
    ExtraData,
    /// Constructed objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// Deepest nesting [`check_strict`] follows (X.509 certificates use about 8).
pub const MAX_DEPTH: usize = 16;

/// A DER fault and where it is: the offset of the object it was found in, from the start
/// of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DerFault {
    pub offset: usize,
    pub error: DerError,
}

impl core::fmt::Display for DerFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} at byte offset {}", self.error, self.offset)
    }
}

impl core::fmt::Display for DerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DerError::Truncated => f.write_str("truncated (neither PEM nor complete DER)"),
            DerError::BadLength => f.write_str("indefinite or over-long length"),
            DerError::UnsupportedTag => f.write_str("multi-byte tag"),
            DerError::UnexpectedTag { expected, found } => {
                write!(f, "tag {found:#04x} where {expected:#04x} was expected")
            }
            DerError::NonMinimalLength => f.write_str("non-minimal length encoding (not DER)"),
            DerError::ExtraData => f.write_str("bytes after the last field of a structure"),
            DerError::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// One tag-length-value object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u8,
    /// The value bytes (without tag and length).
    pub value: &'a [u8],
    /// The whole encoding (tag, length and value).
    pub raw: &'a [u8],
}

/// Reads one TLV from the front of `input`; returns it and the bytes after it.
pub fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError::Truncated)?;
    if tag & 0x1f == 0x1f {
        return Err(DerError::UnsupportedTag);
    }
    let (&first, mut rest) = rest.split_first().ok_or(DerError::Truncated)?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err(DerError::BadLength);
        }
        if rest.len() < n {
            return Err(DerError::Truncated);
        }
        if rest[0] == 0 {
            return Err(DerError::NonMinimalLength);
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        if len < 0x80 {
            return Err(DerError::NonMinimalLength);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(DerError::Truncated);
    }
    let header = input.len() - rest.len();
    let total = header + len;
    Ok((
        Tlv {
            tag,
            value: &rest[..len],
            raw: &input[..total],
        },
        &rest[len..],
    ))
}

/// Checks that `der` is exactly one DER object: minimal lengths everywhere, every
/// constructed object exactly filled by its children, nothing after it.
pub fn check_strict(der: &[u8]) -> Result<(), DerFault> {
    let rest = walk(der, 0, 0)?;
    match rest {
        0 => Ok(()),
        left => Err(DerFault {
            offset: der.len() - left,
            error: DerError::ExtraData,
        }),
    }
}

/// Checks the object at the front of `input` (at `offset` in the whole) and its children;
/// returns how many bytes of `input` follow it.
fn walk(input: &[u8], offset: usize, depth: usize) -> Result<usize, DerFault> {
    let fault = |error| DerFault { offset, error };
    if depth > MAX_DEPTH {
        return Err(fault(DerError::TooDeep));
    }
    let (tlv, rest) = read_tlv(input).map_err(fault)?;
    if tlv.tag & 0x20 != 0 {
        let header = tlv.raw.len() - tlv.value.len();
        let mut children = tlv.value;
        while !children.is_empty() {
            let at = offset + header + (tlv.value.len() - children.len());
            let left = walk(children, at, depth + 1)?;
            children = &children[children.len() - left..];
        }
    }
    Ok(rest.len())
}

/// Reads one TLV with the given tag.
pub fn expect(input: &[u8], tag: u8) -> Result<(Tlv<'_>, &[u8]), DerError> {
    let (tlv, rest) = read_tlv(input)?;
    if tlv.tag != tag {
        return Err(DerError::UnexpectedTag {
            expected: tag,
            found: tlv.tag,
        });
    }
    Ok((tlv, rest))
}

/// Length of the first DER object in `input`, for buffers that carry padding after it
/// (TPM NV indices are often larger than the certificate they hold).
pub fn object_len(input: &[u8]) -> Result<usize, DerError> {
    read_tlv(input).map(|(tlv, _)| tlv.raw.len())
}

/// The parts of an X.509 certificate the trust model needs, borrowed from its DER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateRef<'a> {
    /// The whole certificate DER.
    pub raw: &'a [u8],
    /// `tbsCertificate` (the signed part), whole TLV.
    pub tbs: &'a [u8],
    /// `subjectPublicKeyInfo`, whole TLV.
    pub spki: &'a [u8],
}

/// Recognises `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }`
/// with the TBS fields up to the SubjectPublicKeyInfo, which is returned.
pub fn parse_certificate(der: &[u8]) -> Result<CertificateRef<'_>, DerError> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, rest) = expect(cert.value, SEQUENCE)?;
    let (_sig_alg, rest) = expect(rest, SEQUENCE)?;
    let (_sig, rest) = expect(rest, BIT_STRING)?;
    if !rest.is_empty() {
        return Err(DerError::ExtraData);
    }
    let mut fields = tbs.value;
    if fields.first() == Some(&CONTEXT_0) {
        fields = read_tlv(fields)?.1;
    }
    let (_serial, fields) = expect(fields, INTEGER)?;
    let (_sig_alg, fields) = expect(fields, SEQUENCE)?;
    let (_issuer, fields) = expect(fields, SEQUENCE)?;
    let (_validity, fields) = expect(fields, SEQUENCE)?;
    let (_subject, fields) = expect(fields, SEQUENCE)?;
    let (spki, _) = expect(fields, SEQUENCE)?;
    parse_spki(spki.raw)?;
    Ok(CertificateRef {
        raw: cert.raw,
        tbs: tbs.raw,
        spki: spki.raw,
    })
}

/// The parts of a SubjectPublicKeyInfo, borrowed from its DER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpkiRef<'a> {
    /// The whole SPKI DER.
    pub raw: &'a [u8],
    /// The algorithm OID (value bytes).
    pub algorithm: &'a [u8],
    /// The algorithm parameters TLV (curve OID for EC keys, NULL for RSA), if any.
    pub parameters: Option<Tlv<'a>>,
    /// The public key bits (BIT STRING value without its unused-bits byte).
    pub key: &'a [u8],
}

/// Recognises `SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING }`.
pub fn parse_spki(der: &[u8]) -> Result<SpkiRef<'_>, DerError> {
    let (spki, _) = expect(der, SEQUENCE)?;
    let (alg, rest) = expect(spki.value, SEQUENCE)?;
    let (bits, rest) = expect(rest, BIT_STRING)?;
    if !rest.is_empty() {
        return Err(DerError::ExtraData);
    }
    let (oid, params) = expect(alg.value, OID)?;
    let parameters = if params.is_empty() {
        None
    } else {
        let (params, rest) = read_tlv(params)?;
        if !rest.is_empty() {
            return Err(DerError::ExtraData);
        }
        Some(params)
    };
    let (&unused, key) = bits.value.split_first().ok_or(DerError::Truncated)?;
    if unused != 0 {
        return Err(DerError::BadLength);
    }
    Ok(SpkiRef {
        raw: spki.raw,
        algorithm: oid.value,
        parameters,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths() {
        let (tlv, rest) = read_tlv(&[0x04, 0x02, 0xaa, 0xbb, 0xcc]).unwrap();
        assert_eq!(
            (tlv.tag, tlv.value, rest),
            (0x04, &[0xaa, 0xbb][..], &[0xcc][..])
        );
        let mut long = [0u8; 3 + 200];
        long[..3].copy_from_slice(&[0x04, 0x81, 200]);
        assert_eq!(read_tlv(&long).unwrap().0.value.len(), 200);
    }

    #[test]
    fn non_minimal_lengths_and_extra_bytes_are_refused() {
        // 2 written in the long form, and 200 with a leading zero byte.
        assert_eq!(
            read_tlv(&[0x04, 0x81, 0x02, 0xaa, 0xbb]),
            Err(DerError::NonMinimalLength)
        );
        let mut padded = [0u8; 4 + 200];
        padded[..4].copy_from_slice(&[0x04, 0x82, 0x00, 200]);
        assert_eq!(read_tlv(&padded), Err(DerError::NonMinimalLength));
        // A SEQUENCE { SEQUENCE { INTEGER 1 } } whose inner length is non-minimal: the
        // fault is named at the inner object's offset.
        let nested = [0x30, 0x06, 0x30, 0x81, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(
            check_strict(&nested),
            Err(DerFault {
                offset: 2,
                error: DerError::NonMinimalLength
            })
        );
        assert_eq!(check_strict(&[0x30, 0x03, 0x02, 0x01, 0x01]), Ok(()));
        assert_eq!(
            check_strict(&[0x30, 0x03, 0x02, 0x01, 0x01, 0x00]),
            Err(DerFault {
                offset: 5,
                error: DerError::ExtraData
            })
        );
        // A child running past its parent's end.
        assert_eq!(
            check_strict(&[0x30, 0x02, 0x02, 0x01, 0x01]),
            Err(DerFault {
                offset: 2,
                error: DerError::Truncated
            })
        );
        let mut deep = [0u8; 2 * (MAX_DEPTH + 2)];
        for (i, pair) in deep.chunks_mut(2).enumerate() {
            pair.copy_from_slice(&[0x30, (2 * (MAX_DEPTH + 1 - i)) as u8]);
        }
        assert_eq!(check_strict(&deep).unwrap_err().error, DerError::TooDeep);
    }

    #[test]
    fn rejects_bad_lengths() {
        assert_eq!(read_tlv(&[]), Err(DerError::Truncated));
        assert_eq!(read_tlv(&[0x30]), Err(DerError::Truncated));
        assert_eq!(read_tlv(&[0x30, 0x80]), Err(DerError::BadLength));
        assert_eq!(
            read_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]),
            Err(DerError::BadLength)
        );
        assert_eq!(read_tlv(&[0x30, 0x03, 1]), Err(DerError::Truncated));
        assert_eq!(read_tlv(&[0x1f, 0x01, 0]), Err(DerError::UnsupportedTag));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_certificate(&bytes);
            let _ = parse_spki(&bytes);
            let _ = object_len(&bytes);
            let _ = check_strict(&bytes);
        }
    }
}
