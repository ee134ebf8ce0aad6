//! Building an EK certificate's path to the trust store and checking every link.
//!
//! Depth first from the leaf: the issuer candidates of a certificate are the store's
//! certificates whose subject matches its issuer name (and whose subjectKeyIdentifier, when
//! both sides carry one, matches its authorityKeyIdentifier), then the intermediates the
//! caller passed, then (only when nothing else matched, and only with fetching on) the
//! certificate at its caIssuers URL. A link holds when the candidate is a CA
//! (basicConstraints cA; keyCertSign if keyUsage is present; no unprocessed critical
//! extension), its pathLenConstraint allows the intermediates below it, and its key verifies
//! the signature. The path is verified as soon as it reaches a store certificate; it is then
//! extended through the store as far as links hold, so the verdict names the vendor's root
//! rather than the intermediate (an IFX intermediate whose SHA-1 link to its root is refused
//! stays the anchor).
//!
//! Bounded whatever the input: at most [`MAX_PATH_LEN`] certificates in a path,
//! [`MAX_CANDIDATES`] candidates per step, [`MAX_SIGNATURE_CHECKS`] signature checks and
//! [`MAX_AIA_FETCHES`] fetches per verification; a certificate already in the path is never
//! a candidate again, so cycles end.

use std::sync::Arc;

use super::aia::AiaFetcher;
use super::cert::Cert;
use super::signature;
use super::store::TrustStore;
use super::{MAX_AIA_FETCHES, MAX_CANDIDATES, MAX_PATH_LEN, MAX_SIGNATURE_CHECKS};

/// The path from `leaf` (first) to a trust store certificate (last), or why there is none.
pub(crate) fn build(
    store: &TrustStore,
    aia: Option<&AiaFetcher>,
    leaf: Arc<Cert>,
    intermediates: Vec<Arc<Cert>>,
    now: u64,
) -> Result<Vec<Arc<Cert>>, String> {
    let mut search = Search {
        store,
        aia,
        intermediates,
        now,
        signatures: 0,
        fetches: 0,
        fetched: Vec::new(),
        failures: Vec::new(),
    };
    let mut path = vec![leaf];
    match search.extend(&mut path, false) {
        Some(found) => {
            // Only what a verified path used goes to the disk cache: certificates fetched
            // from URLs an agent chose, that led nowhere, must not pile up there.
            if let Some(aia) = aia {
                for (url, cert) in &search.fetched {
                    if found.iter().any(|c| c.der == cert.der) {
                        aia.keep(url, &cert.der);
                    }
                }
            }
            Ok(found)
        }
        None if search.failures.is_empty() => Err("no path to the EK trust store".into()),
        None => Err(search.failures.join("; ")),
    }
}

/// Most failure reasons kept for the verdict.
const MAX_REASONS: usize = 4;

struct Search<'a> {
    store: &'a TrustStore,
    aia: Option<&'a AiaFetcher>,
    intermediates: Vec<Arc<Cert>>,
    now: u64,
    signatures: usize,
    fetches: usize,
    /// What was fetched, by URL.
    fetched: Vec<(String, Arc<Cert>)>,
    failures: Vec<String>,
}

impl Search<'_> {
    fn fail(&mut self, why: String) {
        if self.failures.len() < MAX_REASONS && !self.failures.contains(&why) {
            self.failures.push(why);
        }
    }

    /// The best path from `path` (leaf first) to the store, extended through the store as
    /// far as links hold once `anchored`. Failures are recorded only before that.
    fn extend(&mut self, path: &mut Vec<Arc<Cert>>, anchored: bool) -> Option<Vec<Arc<Cert>>> {
        let child = path.last()?.clone();
        if path.len() >= MAX_PATH_LEN {
            if !anchored {
                self.fail(format!(
                    "no trust store certificate within {MAX_PATH_LEN} certificates of the EK certificate"
                ));
            }
            return None;
        }
        let who = if path.len() == 1 {
            "the EK certificate".to_owned()
        } else {
            format!("'{}'", child.subject.label())
        };
        let mut candidates = self.candidates(&child, &who, anchored);
        if candidates.is_empty() && !anchored {
            candidates = self.fetched(&child, &who);
            if candidates.is_empty() {
                self.fail(missing_issuer(&child, &who, self.aia.is_some()));
                return None;
            }
        }
        for (issuer, trusted) in candidates {
            if path.iter().any(|c| c.der == issuer.der) {
                if !anchored {
                    self.fail(if issuer.der == child.der {
                        format!("{who} names itself as its issuer")
                    } else {
                        format!(
                            "{who} is issued by '{}', which is already in the path (a cycle)",
                            issuer.subject.label()
                        )
                    });
                }
                continue;
            }
            if let Err(why) = self.link(path, &who, &issuer) {
                if !anchored {
                    self.fail(why);
                }
                continue;
            }
            path.push(issuer);
            let found = if trusted {
                Some(self.extend(path, true).unwrap_or_else(|| path.clone()))
            } else if anchored {
                None
            } else {
                self.extend(path, false)
            };
            path.pop();
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Issuer candidates by name (store first, trusted), key identifiers agreeing.
    fn candidates(&mut self, child: &Cert, who: &str, anchored: bool) -> Vec<(Arc<Cert>, bool)> {
        let store = self.store;
        let mut found: Vec<(Arc<Cert>, bool)> = store
            .by_subject(&child.issuer)
            .map(|c| (c.clone(), true))
            .collect();
        if !anchored {
            found.extend(
                self.intermediates
                    .iter()
                    .filter(|c| c.subject.matches(&child.issuer) && !store.contains(c))
                    .map(|c| (c.clone(), false)),
            );
        }
        let named = found.len();
        found.retain(|(c, _)| key_ids_agree(child, c));
        if named > 0 && found.is_empty() && !anchored {
            self.fail(format!(
                "{who} names its issuer '{}' with another key identifier than the certificates of that name have (authorityKeyIdentifier)",
                child.issuer.label()
            ));
        }
        found.truncate(MAX_CANDIDATES);
        found
    }

    /// The issuer from `child`'s caIssuers URLs, when fetching is on.
    fn fetched(&mut self, child: &Cert, who: &str) -> Vec<(Arc<Cert>, bool)> {
        let Some(aia) = self.aia else {
            return Vec::new();
        };
        for url in &child.ext.ca_issuers {
            if self.fetches >= MAX_AIA_FETCHES {
                self.fail(format!(
                    "not fetching {url}: at most {MAX_AIA_FETCHES} fetches per EK certificate"
                ));
                break;
            }
            self.fetches += 1;
            match aia.get(url, self.now) {
                Ok(c) if c.subject.matches(&child.issuer) && key_ids_agree(child, &c) => {
                    self.fetched.push((url.clone(), c.clone()));
                    return vec![(c, false)];
                }
                Ok(c) => self.fail(format!(
                    "the certificate at {url} ('{}') is not the issuer {who} names",
                    c.subject.label()
                )),
                Err(e) => self.fail(format!("the issuer of {who} could not be fetched: {e}")),
            }
        }
        Vec::new()
    }

    /// Whether `issuer` may have issued the last certificate of `path`, and did.
    fn link(&mut self, path: &[Arc<Cert>], who: &str, issuer: &Cert) -> Result<(), String> {
        let child = path.last().ok_or_else(|| "empty path".to_owned())?;
        if let Some(why) = issuer.ca_refusal() {
            return Err(format!(
                "{who} is issued by a certificate that cannot issue: {why}"
            ));
        }
        if let Some((_, Some(max))) = issuer.ext.basic_constraints {
            // Intermediates between `issuer` and the leaf; self-issued ones do not count.
            let below = path.iter().skip(1).filter(|c| !c.is_self_issued()).count();
            if below > max as usize {
                return Err(format!(
                    "'{}' allows {max} intermediate certificate(s) below it (pathLenConstraint), the path has {below}",
                    issuer.subject.label()
                ));
            }
        }
        if self.signatures >= MAX_SIGNATURE_CHECKS {
            return Err(format!(
                "gave up after {MAX_SIGNATURE_CHECKS} signature checks (too many candidate issuers)"
            ));
        }
        self.signatures += 1;
        signature::check(
            &child.tbs,
            &child.signature_algorithm,
            &child.signature,
            &issuer.spki,
        )
        .map_err(|e| {
            format!(
                "{who}, checked with the key of '{}': {e}",
                issuer.subject.label()
            )
        })
    }
}

/// Why `child`'s issuer was not found.
fn missing_issuer(child: &Cert, who: &str, fetching: bool) -> String {
    let issuer = child.issuer.label();
    if child.is_self_issued() {
        return format!("{who} is self-issued ('{issuer}') and not in the EK trust store");
    }
    let mut why = format!("the issuer '{issuer}' of {who} is not in the EK trust store");
    match (child.ext.ca_issuers.first(), fetching) {
        (Some(url), false) => why.push_str(&format!(
            " (its caIssuers URL {url} was not fetched: ITL_EK_AIA_FETCH is off)"
        )),
        (None, _) => why.push_str(" (add its CA with ITL_EK_CA_DIR)"),
        (Some(_), true) => {}
    }
    why
}

/// Unless both carry one, any candidate; else authorityKeyIdentifier = subjectKeyIdentifier.
fn key_ids_agree(child: &Cert, issuer: &Cert) -> bool {
    match (&child.ext.authority_key_id, &issuer.ext.subject_key_id) {
        (Some(aki), Some(ski)) => aki == ski,
        _ => true,
    }
}
