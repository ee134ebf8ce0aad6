//! The verdict on one EK certificate's chain, as the machine record keeps it.
//!
//! Serialised with a `status` tag: `{"status":"verified","by":...,"path":[...],
//! "not_checked":[...]}` or `{"status":"unverified","reason":...}`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::asn1::date;
use super::cert::Cert;

/// What the verifier concluded about one EK certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChainVerdict {
    /// Every link from the EK certificate to a trust store certificate holds.
    Verified {
        /// Subject CN of the last certificate of the path (the trust anchor reached).
        by: String,
        /// Subject CN of each certificate, EK certificate first, anchor last (a name without
        /// a CN is written out whole; an empty one is `(empty name)`).
        path: Vec<String>,
        /// What was not checked: always validity periods and revocation, plus each
        /// certificate of the path that is expired or not yet valid at the time given.
        not_checked: Vec<String>,
    },
    /// No path to the trust store could be verified.
    Unverified {
        /// Why, naming the certificates (and the issuer that was missing).
        reason: String,
    },
}

impl ChainVerdict {
    pub fn is_verified(&self) -> bool {
        matches!(self, ChainVerdict::Verified { .. })
    }

    /// `verified` or `unverified` (what the machine view shows as `ek_chain`).
    pub fn status(&self) -> &'static str {
        match self {
            ChainVerdict::Verified { .. } => "verified",
            ChainVerdict::Unverified { .. } => "unverified",
        }
    }
}

pub(crate) fn unverified(reason: String) -> ChainVerdict {
    ChainVerdict::Unverified { reason }
}

/// The verdict for a verified `path` (EK certificate first), noting validity at `now`.
pub(crate) fn verified(path: &[Arc<Cert>], now: u64) -> ChainVerdict {
    let labels: Vec<String> = path.iter().map(|c| c.subject.label()).collect();
    let mut not_checked = vec![
        "validity periods (not enforced for EK chains, as in Keylime and go-attestation)".into(),
        "revocation (no CRL or OCSP)".into(),
    ];
    for (cert, who) in path.iter().zip(&labels) {
        match (cert.not_before, cert.not_after) {
            (_, Some(end)) if end < now => {
                not_checked.push(format!("'{who}' expired on {}", date(end)));
            }
            (Some(start), _) if start > now => {
                not_checked.push(format!("'{who}' is not valid before {}", date(start)));
            }
            (None, _) | (_, None) => {
                not_checked.push(format!("'{who}' has a validity time that cannot be read"));
            }
            _ => {}
        }
    }
    ChainVerdict::Verified {
        by: labels.last().cloned().unwrap_or_default(),
        path: labels,
        not_checked,
    }
}
