//! PCR policy per role (`ITL_PCR_POLICY_FILE`) on top of each machine's own baseline.
//!
//! A machine's baseline is what its first verified quote after approval showed: it catches
//! a change on that machine without anyone writing reference values. Reference values per
//! role catch what a baseline cannot: a machine that was already wrong when it was first
//! seen. A role can also say what a violation does: refuse the attestation (default) or
//! lock the machine too, so that its agent is told to lock at the next contact.

use std::collections::HashMap;
use std::path::Path;

use attest_common::tpm::pcr::{PcrPolicy, PolicyViolation};
use attest_common::wire::{PcrValue, Role};
use serde::Deserialize;

/// What a violation does to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnViolation {
    /// The attestation is refused; the machine keeps its state.
    #[default]
    Refuse,
    /// The attestation is refused and an attested machine is locked.
    Lock,
}

/// What a change of the TPM's clock information does (`service::tpm_clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnClock {
    /// The attestation is refused (audited); the machine keeps its state.
    Refuse,
    /// The attestation is accepted and the change audited.
    Flag,
}

fn refuse() -> OnClock {
    OnClock::Refuse
}

fn flag() -> OnClock {
    OnClock::Flag
}

/// The policy for one role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePolicy {
    /// Pin the first verified quote's values as the machine's baseline and hold it to them.
    #[serde(default = "yes")]
    pub pin_baseline: bool,
    #[serde(default)]
    pub on_violation: OnViolation,
    /// Reference values every machine of the role must quote.
    #[serde(default)]
    pub values: Vec<PcrValue>,
    /// The TPM's resetCount or restartCount going back, or its clock running backwards
    /// within one reset (a rolled-back TPM state, an old quote): refused by default.
    #[serde(default = "refuse")]
    pub on_clock_rollback: OnClock,
    /// The TPM's firmware version changing: flagged (audited) by default.
    #[serde(default = "flag")]
    pub on_firmware_change: OnClock,
}

fn yes() -> bool {
    true
}

impl Default for RolePolicy {
    fn default() -> Self {
        RolePolicy {
            pin_baseline: true,
            on_violation: OnViolation::Refuse,
            values: Vec::new(),
            on_clock_rollback: OnClock::Refuse,
            on_firmware_change: OnClock::Flag,
        }
    }
}

impl RolePolicy {
    /// Checks quoted values against the role's reference values and the machine's
    /// baseline (when pinning); `Ok(true)` when the baseline should be pinned now.
    pub fn check(
        &self,
        baseline: Option<&[PcrValue]>,
        quoted: &[PcrValue],
    ) -> Result<bool, PolicyViolation> {
        if !self.values.is_empty() {
            // Reference values are bounded when loaded (at most MAX_PCR_VALUES).
            PcrPolicy::from_values(&self.values)
                .unwrap_or_default()
                .check(quoted)?;
        }
        match (self.pin_baseline, baseline) {
            (false, _) => Ok(false),
            (true, None) => Ok(true),
            (true, Some(b)) => PcrPolicy::from_values(b)
                .unwrap_or_default()
                .check(quoted)
                .map(|()| false),
        }
    }
}

/// The policies of all roles.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrPolicies {
    /// For machines whose role has no entry (and machines without a role).
    #[serde(default)]
    pub default: RolePolicy,
    #[serde(default)]
    pub roles: HashMap<Role, RolePolicy>,
}

impl PcrPolicies {
    /// Reads the JSON policy file.
    pub fn load(path: &Path) -> Result<PcrPolicies, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let p: PcrPolicies = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is not a PCR policy: {e}", path.display()))?;
        for (name, role) in std::iter::once(("default".to_owned(), &p.default))
            .chain(p.roles.iter().map(|(r, p)| (r.to_string(), p)))
        {
            if role.values.len() > attest_common::wire::MAX_PCR_VALUES {
                return Err(format!(
                    "{}: role {name} lists more than {} PCR values",
                    path.display(),
                    attest_common::wire::MAX_PCR_VALUES
                ));
            }
            if let Some(v) = role
                .values
                .iter()
                .find(|v| v.value.0.len() != v.hash_alg.digest_len())
            {
                return Err(format!(
                    "{}: role {name}: {:?} PCR {} has {} bytes, not {}",
                    path.display(),
                    v.hash_alg,
                    v.index,
                    v.value.0.len(),
                    v.hash_alg.digest_len()
                ));
            }
        }
        Ok(p)
    }

    pub fn for_role(&self, role: Option<Role>) -> &RolePolicy {
        role.and_then(|r| self.roles.get(&r))
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_common::wire::{HashAlg, HexVec};

    fn v(index: u8, byte: u8) -> PcrValue {
        PcrValue {
            hash_alg: HashAlg::Sha384,
            index,
            value: HexVec(heapless::Vec::from_slice(&[byte; 48]).unwrap()),
        }
    }

    #[test]
    fn reference_values_baseline_and_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let hex7 = "07".repeat(48);
        std::fs::write(
            &path,
            format!(
                r#"{{"roles":{{"controlplane":{{"on_violation":"lock","values":[{{"hash_alg":"sha384","index":7,"value":"{hex7}"}}]}}}}}}"#
            ),
        )
        .unwrap();
        let p = PcrPolicies::load(&path).unwrap();
        let cp = p.for_role(Some(Role::Controlplane));
        assert_eq!(cp.on_violation, OnViolation::Lock);
        assert_eq!(p.for_role(Some(Role::WorkerApp)), &RolePolicy::default());
        // Reference value matches; no baseline yet → pin.
        assert_eq!(cp.check(None, &[v(0, 0), v(7, 7)]), Ok(true));
        // Reference value differs → violation even without a baseline.
        let e = cp.check(None, &[v(0, 0), v(7, 8)]).unwrap_err();
        assert_eq!(e.to_string(), "PCR policy violated: sha384:7 differs");
        // Baseline differs.
        assert!(cp.check(Some(&[v(0, 0)]), &[v(0, 1), v(7, 7)]).is_err());
        assert_eq!(cp.check(Some(&[v(0, 0)]), &[v(0, 0), v(7, 7)]), Ok(false));
        let unpinned = RolePolicy {
            pin_baseline: false,
            ..RolePolicy::default()
        };
        assert_eq!(unpinned.check(Some(&[v(0, 0)]), &[v(0, 1)]), Ok(false));

        std::fs::write(&path, r#"{"roles":{"worker":{}}}"#).unwrap();
        assert!(
            PcrPolicies::load(&path)
                .unwrap_err()
                .contains("not a PCR policy")
        );
        std::fs::write(
            &path,
            r#"{"default":{"values":[{"hash_alg":"sha384","index":7,"value":"0707"}]}}"#,
        )
        .unwrap();
        assert!(
            PcrPolicies::load(&path)
                .unwrap_err()
                .contains("has 2 bytes, not 48")
        );
    }
}
