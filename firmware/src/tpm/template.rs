//! Key templates as the TPM sees them (TPMT_PUBLIC bytes), parsed by `tpm2-protocol`.
//!
//! The EK templates are the TCG EK Credential Profile 2.5 ones (L-1 for RSA-2048, H-2 for
//! P-384): a TPM recreates exactly the key its manufacturer certified from them, so the
//! firmware needs no storage to find its EK. The AK is a *primary* restricted P-384
//! signing key in the endorsement hierarchy: derived from the same seed, it is the same key
//! at every boot, which is what lets a storage-less agent keep one AK.

use attest_common::tpm::ek::{EkType, POLICY_A_SHA256, POLICY_B_SHA384};

/// Low-range EK attributes (L-1): fixedTPM, fixedParent, sensitiveDataOrigin,
/// adminWithPolicy, restricted, decrypt.
const EK_ATTRIBUTES_LOW: [u8; 4] = [0x00, 0x03, 0x00, 0xb2];
/// High-range EK attributes (H-2): the same and userWithAuth.
const EK_ATTRIBUTES_HIGH: [u8; 4] = [0x00, 0x03, 0x00, 0xf2];

const fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    let mut p = 0;
    while p < parts.len() {
        let mut i = 0;
        while i < parts[p].len() {
            out[at] = parts[p][i];
            at += 1;
            i += 1;
        }
        p += 1;
    }
    assert!(at == N, "template length");
    out
}

/// Template H-2: ECC NIST P-384, SHA-384, AES-256-CFB, empty unique.
pub const EK_P384: [u8; 74] = concat(&[
    &[0x00, 0x23, 0x00, 0x0c],
    &EK_ATTRIBUTES_HIGH,
    &[0x00, 0x30],
    &POLICY_B_SHA384,
    &[0x00, 0x06, 0x01, 0x00, 0x00, 0x43],
    &[0x00, 0x10, 0x00, 0x04, 0x00, 0x10],
    &[0x00, 0x00, 0x00, 0x00],
]);

/// Template L-1: RSA-2048, SHA-256, AES-128-CFB, 256 zero bytes of unique.
pub const EK_RSA2048: [u8; 314] = concat(&[
    &[0x00, 0x01, 0x00, 0x0b],
    &EK_ATTRIBUTES_LOW,
    &[0x00, 0x20],
    &POLICY_A_SHA256,
    &[0x00, 0x06, 0x00, 0x80, 0x00, 0x43],
    &[0x00, 0x10, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[0x01, 0x00],
    &[0u8; 256],
]);

/// The template of an EK type.
pub fn ek(ek_type: EkType) -> &'static [u8] {
    match ek_type {
        EkType::EccP384 => &EK_P384,
        EkType::Rsa2048 => &EK_RSA2048,
    }
}

/// The AK: P-384, SHA-384 name, fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth,
/// restricted, sign; ECDSA with SHA-384: the `ecc-p384` form every server accepts
/// (`attest_common::tpm::ak`, DESIGN.md §3.2).
pub const AK_P384: [u8; 24] = concat(&[
    &[0x00, 0x23, 0x00, 0x0c],
    &[0x00, 0x05, 0x00, 0x72],
    &[0x00, 0x00],
    &[0x00, 0x10],
    &[0x00, 0x18, 0x00, 0x0c],
    &[0x00, 0x04, 0x00, 0x10],
    &[0x00, 0x00, 0x00, 0x00],
]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_with_tpm2_protocol_and_nothing_is_left_over() {
        use tpm2_protocol::TpmUnmarshal as _;
        use tpm2_protocol::data::TpmtPublic;
        for t in [&AK_P384[..], &EK_P384[..], &EK_RSA2048[..]] {
            let (_, rest) = TpmtPublic::unmarshal(t).unwrap();
            assert!(rest.is_empty());
        }
        // restricted sign for the AK, restricted decrypt for the EKs
        assert_eq!(&AK_P384[4..8], &[0x00, 0x05, 0x00, 0x72]);
        // The AK's scheme and name: ECDSA-SHA384, SHA-384 (what a server takes by default).
        assert_eq!(
            attest_common::tpm::ak::declared_scheme(&AK_P384),
            Some(attest_common::tpm::ak::scheme_id::ECDSA)
        );
        assert_eq!(&AK_P384[2..4], &[0x00, 0x0c]);
        assert_eq!(&AK_P384[14..16], &[0x00, 0x0c]);
        assert_eq!(EK_P384[5] & 0x03, 0x03);
        assert_eq!(EK_RSA2048[5] & 0x03, 0x03);
    }
}
