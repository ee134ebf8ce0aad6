//! Which endorsement key, and the facts of the TCG EK Credential Profile 2.5 that follow
//! from it: where its certificate lives in NV and the policy digests that authorise its use.
//! The host agent (tss-esapi) and the firmware (its own TPM client) must agree on these to
//! find the same certificate and open the same policy sessions, so they are written once.

use core::fmt;
use core::str::FromStr;

use crate::wire::HashAlg;

/// The EK key types the system uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EkType {
    EccP384,
    Rsa2048,
}

impl EkType {
    /// Preferred first (CNSA: P-384).
    pub const PREFERENCE: [EkType; 2] = [EkType::EccP384, EkType::Rsa2048];

    /// NV index of the EK certificate (§2.2.1.4–5).
    pub fn cert_nv_index(self) -> u32 {
        match self {
            EkType::EccP384 => 0x01c0_0016,
            EkType::Rsa2048 => 0x01c0_0002,
        }
    }

    /// The name used on command lines, in configuration and in enrollment state.
    pub fn name(self) -> &'static str {
        match self {
            EkType::EccP384 => "ecc-p384",
            EkType::Rsa2048 => "rsa-2048",
        }
    }

    /// The EK's name algorithm, and so the hash of its policy sessions.
    pub fn policy_hash(self) -> HashAlg {
        match self {
            EkType::EccP384 => HashAlg::Sha384,
            EkType::Rsa2048 => HashAlg::Sha256,
        }
    }
}

impl fmt::Display for EkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`EkType::name`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownEkType;

impl fmt::Display for UnknownEkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected ecc-p384 or rsa-2048")
    }
}

impl FromStr for EkType {
    type Err = UnknownEkType;

    fn from_str(s: &str) -> Result<EkType, UnknownEkType> {
        EkType::PREFERENCE
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or(UnknownEkType)
    }
}

/// PolicyA, SHA-384: PolicySecret(TPM_RH_ENDORSEMENT).
pub const POLICY_A_SHA384: [u8; 48] = [
    0x8b, 0xbf, 0x22, 0x66, 0x53, 0x7c, 0x17, 0x1c, 0xb5, 0x6e, 0x40, 0x3c, 0x4d, 0xc1, 0xd4, 0xb6,
    0x4f, 0x43, 0x26, 0x11, 0xdc, 0x38, 0x6e, 0x6f, 0x53, 0x20, 0x50, 0xc3, 0x27, 0x8c, 0x93, 0x0e,
    0x14, 0x3e, 0x8b, 0xb1, 0x13, 0x38, 0x24, 0xcc, 0xb4, 0x31, 0x05, 0x38, 0x71, 0xc6, 0xdb, 0x53,
];
/// PolicyC, SHA-384: PolicyAuthorizeNV of the EK policy NV index.
pub const POLICY_C_SHA384: [u8; 48] = [
    0xd6, 0x03, 0x2c, 0xe6, 0x1f, 0x2f, 0xb3, 0xc2, 0x40, 0xeb, 0x3c, 0xf6, 0xa3, 0x32, 0x37, 0xef,
    0x2b, 0x6a, 0x16, 0xf4, 0x29, 0x3c, 0x22, 0xb4, 0x55, 0xe2, 0x61, 0xcf, 0xfd, 0x21, 0x7a, 0xd5,
    0xb4, 0x94, 0x7c, 0x2d, 0x73, 0xe6, 0x30, 0x05, 0xee, 0xd2, 0xdc, 0x2b, 0x35, 0x93, 0xd1, 0x65,
];
/// PolicyB, SHA-384 = PolicyOR(PolicyA, PolicyC): the P-384 EK's authPolicy.
pub const POLICY_B_SHA384: [u8; 48] = [
    0xb2, 0x6e, 0x7d, 0x28, 0xd1, 0x1a, 0x50, 0xbc, 0x53, 0xd8, 0x82, 0xbc, 0xf5, 0xfd, 0x3a, 0x1a,
    0x07, 0x41, 0x48, 0xbb, 0x35, 0xd3, 0xb4, 0xe4, 0xcb, 0x1c, 0x0a, 0xd9, 0xbd, 0xe4, 0x19, 0xca,
    0xcb, 0x47, 0xba, 0x09, 0x69, 0x96, 0x46, 0x15, 0x0f, 0x9f, 0xc0, 0x00, 0xf3, 0xf8, 0x0e, 0x12,
];
/// PolicyA, SHA-256: the RSA-2048 EK's authPolicy.
pub const POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::hash::digest;

    #[test]
    fn policy_b_is_policy_or_of_a_and_c() {
        let d = digest(
            HashAlg::Sha384,
            &[
                &[0u8; 48],
                &0x0000_0171u32.to_be_bytes(),
                &POLICY_A_SHA384,
                &POLICY_C_SHA384,
            ],
        )
        .unwrap();
        assert_eq!(d.as_slice(), POLICY_B_SHA384.as_slice());
    }

    #[test]
    fn names_round_trip_and_others_are_refused() {
        for t in EkType::PREFERENCE {
            assert_eq!(t.name().parse(), Ok(t));
            assert_eq!(t.name().to_uppercase().parse(), Ok(t));
        }
        for bad in ["", "rsa-4096", "ecc-p256", "ecc-p384 "] {
            assert_eq!(bad.parse::<EkType>(), Err(UnknownEkType), "{bad:?}");
        }
    }
}
