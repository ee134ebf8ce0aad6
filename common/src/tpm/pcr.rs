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

/// The PCRs that broke the policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyViolation {
    /// Quoted with a value other than the expected one.
    pub mismatched: Vec<PcrId, MAX_PCR_VALUES>,
    /// Expected but not among the quoted values.
    pub missing: Vec<PcrId, MAX_PCR_VALUES>,
}

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PCR policy violated:")?;
        let mut sep = " ";
        for id in &self.mismatched {
            write!(f, "{sep}{id} differs")?;
            sep = ", ";
        }
        for id in &self.missing {
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
                None => {
                    let _ = violation.missing.push(id);
                }
                Some(got) if !bool::from(got.value.ct_eq(&want.value)) => {
                    let _ = violation.mismatched.push(id);
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
        assert_eq!(
            err.missing.as_slice(),
            &[PcrId {
                hash: HashAlg::Sha384,
                index: 4
            }]
        );
    }
}
