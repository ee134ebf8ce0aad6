//! Which AKs this server takes (DESIGN.md §3.2): `ITL_AK_ALGORITHMS`, P-384 only unless the
//! operator allows more, and P-384 only whatever it says under `ITL_HIGH_ASSURANCE=true`
//! (CNSA 1.0). An AK is judged when it is offered — registration, import, and an attest
//! that rotates to a new AK — and, under `ITL_HIGH_ASSURANCE=true` only, again at every
//! attestation (an AK bound under an earlier, wider policy is then refused until the agent
//! registers a P-384 one); otherwise a bound AK was judged when it came.
//! The form itself (fixed scheme, hash, nameAlg) is `attest_common::tpm::ak`'s.

use attest_common::tpm::ak::{AkAlgorithm, AkError, check_ak};
use attest_common::tpm::public::TpmPublic;

use super::{ErrorKind, Service, ServiceError};
use crate::store::Registry;

/// The AK algorithms accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkPolicy {
    allowed: Vec<AkAlgorithm>,
    /// `ITL_HIGH_ASSURANCE=true`: AKs bound before are judged again at every attestation
    /// (one bound under an earlier, wider policy must be replaced by re-registering).
    rejudge_bound: bool,
}

impl Default for AkPolicy {
    /// P-384 with ECDSA-SHA384 only.
    fn default() -> Self {
        AkPolicy {
            allowed: vec![AkAlgorithm::EccP384],
            rejudge_bound: false,
        }
    }
}

impl AkPolicy {
    /// From `ITL_AK_ALGORITHMS` (comma-separated names; `None`: the default) and whether
    /// `ITL_HIGH_ASSURANCE` is on. The error is the message for the variable.
    pub fn parse(list: Option<&str>, high_assurance: bool) -> Result<AkPolicy, String> {
        let Some(list) = list.filter(|l| !l.trim().is_empty()) else {
            return Ok(AkPolicy {
                rejudge_bound: high_assurance,
                ..AkPolicy::default()
            });
        };
        let mut allowed = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let algorithm = AkAlgorithm::from_name(name).ok_or_else(|| {
                format!(
                    "'{name}' is not an AK algorithm ({})",
                    names(&AkAlgorithm::ALL)
                )
            })?;
            if !allowed.contains(&algorithm) {
                allowed.push(algorithm);
            }
        }
        if allowed.is_empty() {
            return Err(format!("'{list}' names no AK algorithm"));
        }
        if high_assurance && allowed != [AkAlgorithm::EccP384] {
            return Err(format!(
                "'{list}' conflicts with ITL_HIGH_ASSURANCE=true (CNSA 1.0: ecc-p384 only, \
                 ECDSA-SHA384); leave it unset or set ecc-p384"
            ));
        }
        Ok(AkPolicy {
            allowed,
            rejudge_bound: high_assurance,
        })
    }

    /// Whether a bound AK is judged again at each attestation (`ITL_HIGH_ASSURANCE`).
    pub fn rejudges_bound(&self) -> bool {
        self.rejudge_bound
    }

    pub fn allowed(&self) -> &[AkAlgorithm] {
        &self.allowed
    }

    /// `ecc-p384,rsa-2048`: for logs and messages.
    pub fn names(&self) -> String {
        names(&self.allowed)
    }

    /// Checks an offered AK (TPM2B_PUBLIC): 400 `invalid_ak` when it does not parse, 422
    /// `invalid_ak` when it is not a restricted signing key with a fixed ECDSA, RSASSA or
    /// RSAPSS scheme, 422 `ak_algorithm_refused` when its algorithm, hash or nameAlg is not
    /// one this server accepts. Every message names `ak_public` and the part at fault.
    pub fn check(&self, ak_public: &[u8]) -> Result<TpmPublic, ServiceError> {
        check_ak(ak_public, &self.allowed).map_err(|e| {
            let (kind, code) = match e {
                AkError::Malformed(_) => (ErrorKind::BadRequest, "invalid_ak"),
                AkError::NotRestrictedSigning | AkError::Scheme(_) | AkError::SchemeForKey(..) => {
                    (ErrorKind::Unprocessable, "invalid_ak")
                }
                AkError::NotAllowed(_) | AkError::SchemeHash { .. } | AkError::NameAlg { .. } => {
                    (ErrorKind::Unprocessable, "ak_algorithm_refused")
                }
            };
            let message = match e {
                AkError::Malformed(_)
                | AkError::NotRestrictedSigning
                | AkError::Scheme(_)
                | AkError::SchemeForKey(..) => e.to_string(),
                _ => format!(
                    "{e}; this server accepts {} (ITL_AK_ALGORITHMS)",
                    self.names()
                ),
            };
            ServiceError::new(kind, code, message)
        })
    }
}

fn names(algorithms: &[AkAlgorithm]) -> String {
    algorithms
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(",")
}

impl<R: Registry> Service<R> {
    /// Accepts these AK algorithms (`ITL_AK_ALGORITHMS`).
    pub fn with_ak_policy(mut self, policy: AkPolicy) -> Service<R> {
        self.ak_policy = policy;
        self
    }

    pub fn ak_policy(&self) -> &AkPolicy {
        &self.ak_policy
    }

    /// An AK offered to this server (registration, or a rotation in an attestation),
    /// judged by its policy: [`AkPolicy::check`].
    pub(super) fn check_ak(&self, ak_public: &[u8]) -> Result<TpmPublic, ServiceError> {
        self.ak_policy.check(ak_public)
    }

    /// Whether bound AKs are judged again (`ITL_HIGH_ASSURANCE`).
    pub(super) fn ak_policy_rejudges(&self) -> bool {
        self.ak_policy.rejudges_bound()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_defaults_and_conflicts() {
        assert_eq!(AkPolicy::parse(None, false), Ok(AkPolicy::default()));
        assert!(!AkPolicy::default().rejudges_bound());
        assert!(AkPolicy::parse(None, true).unwrap().rejudges_bound());
        assert!(
            AkPolicy::parse(Some("ecc-p384"), true)
                .unwrap()
                .rejudges_bound()
        );
        assert_eq!(
            AkPolicy::parse(Some(" "), true).map(|p| p.allowed().to_vec()),
            Ok(vec![AkAlgorithm::EccP384])
        );
        let p = AkPolicy::parse(Some("ecc-p384, rsa-2048,ecc-p384"), false).unwrap();
        assert_eq!(p.names(), "ecc-p384,rsa-2048");
        assert_eq!(
            AkPolicy::parse(Some("ecc-p384"), true).map(|p| p.allowed().to_vec()),
            Ok(vec![AkAlgorithm::EccP384])
        );
        let e = AkPolicy::parse(Some("ecc-p384,ecc-p256"), true).unwrap_err();
        assert!(e.contains("conflicts with ITL_HIGH_ASSURANCE=true"), "{e}");
        let e = AkPolicy::parse(Some("ecc-p521"), false).unwrap_err();
        assert_eq!(
            e,
            "'ecc-p521' is not an AK algorithm (ecc-p384,ecc-p256,rsa-2048,rsa-3072,rsa-4096)"
        );
        assert!(AkPolicy::parse(Some(",,"), false).is_err());
    }
}
