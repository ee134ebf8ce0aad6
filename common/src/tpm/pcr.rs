//! PCR policy: the values a machine's PCRs must have, per bank and index.
//!
//! A violation names every PCR that differs or is missing, so an operator can tell a firmware
//! update (PCR 0) from a changed boot order (PCR 4) without reading hex.

use core::fmt;

use heapless::Vec;
use subtle::ConstantTimeEq;

use super::hash::HashAlg;
use crate::wire::{MAX_PCR_VALUES, PcrValue};

/// Expected PCR values.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PcrPolicy {
    pub expected: Vec<PcrValue, MAX_PCR_VALUES>,
}

/// One PCR, named `bank:index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PcrId {
    pub hash: HashAlg,
    pub index: u8,
}

impl fmt::Display for PcrId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.hash.name(), self.index)
    }
}

/// A set of PCRs: one bit mask per bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PcrSet([u32; 4]);

const BANKS: [HashAlg; 4] = [
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
];

impl PcrSet {
    fn bank(hash: HashAlg) -> usize {
        BANKS.iter().position(|h| *h == hash).unwrap_or(0)
    }

    pub fn insert(&mut self, id: PcrId) {
        if id.index < 32 {
            self.0[Self::bank(id.hash)] |= 1 << id.index;
        }
    }

    pub fn contains(&self, id: PcrId) -> bool {
        id.index < 32 && self.0[Self::bank(id.hash)] & (1 << id.index) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// Members by bank (SHA-1, SHA-256, SHA-384, SHA-512), indices ascending.
    pub fn iter(&self) -> impl Iterator<Item = PcrId> + '_ {
        BANKS.iter().zip(self.0).flat_map(|(&hash, mask)| {
            (0u8..32)
                .filter(move |i| mask & (1 << i) != 0)
                .map(move |index| PcrId { hash, index })
        })
    }
}

/// The PCRs that broke the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyViolation {
    /// Quoted with a value other than the expected one.
    pub mismatched: PcrSet,
    /// Expected but not among the quoted values.
    pub missing: PcrSet,
}

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PCR policy violated:")?;
        let mut sep = " ";
        for id in self.mismatched.iter() {
            write!(f, "{sep}{id} differs")?;
            sep = ", ";
        }
        for id in self.missing.iter() {
            write!(f, "{sep}{id} not quoted")?;
            sep = ", ";
        }
        Ok(())
    }
}

impl core::error::Error for PolicyViolation {}

impl PcrPolicy {
    /// A policy that expects exactly these values (e.g. the baseline of a first good quote).
    pub fn from_values(values: &[PcrValue]) -> Option<PcrPolicy> {
        Vec::from_slice(values)
            .ok()
            .map(|expected| PcrPolicy { expected })
    }

    /// Checks quoted values against the policy; values the policy does not mention pass.
    pub fn check(&self, values: &[PcrValue]) -> Result<(), PolicyViolation> {
        let mut violation = PolicyViolation::default();
        for want in &self.expected {
            let id = PcrId {
                hash: want.hash_alg,
                index: want.index,
            };
            match values
                .iter()
                .find(|v| v.hash_alg == want.hash_alg && v.index == want.index)
            {
                None => violation.missing.insert(id),
                Some(got) if !bool::from(got.value.ct_eq(&want.value)) => {
                    violation.mismatched.insert(id)
                }
                Some(_) => {}
            }
        }
        if violation.mismatched.is_empty() && violation.missing.is_empty() {
            Ok(())
        } else {
            Err(violation)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HexVec;
    extern crate std;
    use std::string::ToString;

    fn v(index: u8, byte: u8) -> PcrValue {
        PcrValue {
            hash_alg: HashAlg::Sha384,
            index,
            value: HexVec(Vec::from_slice(&[byte; 48]).unwrap()),
        }
    }

    #[test]
    fn names_every_mismatch() {
        let policy = PcrPolicy::from_values(&[v(0, 1), v(4, 2), v(7, 3), v(9, 9)]).unwrap();
        assert_eq!(
            policy.check(&[v(0, 1), v(4, 2), v(7, 3), v(9, 9), v(1, 5)]),
            Ok(())
        );
        let err = policy
            .check(&[v(0, 0xff), v(4, 2), v(7, 0xee)])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PCR policy violated: sha384:0 differs, sha384:7 differs, sha384:9 not quoted"
        );
        let other_bank = PcrValue {
            hash_alg: HashAlg::Sha256,
            ..v(4, 2)
        };
        let err = policy
            .check(&[v(0, 1), other_bank, v(7, 3), v(9, 9)])
            .unwrap_err();
        let missing: std::vec::Vec<_> = err.missing.iter().collect();
        assert_eq!(
            missing,
            [PcrId {
                hash: HashAlg::Sha384,
                index: 4
            }]
        );
        assert!(err.mismatched.is_empty());
    }
}
