//! The service layer: what the server does, with no HTTP in sight.
//!
//! Every operation validates its input first, then runs the lifecycle transition from
//! `attest-common` inside one store transaction together with its audit entry. A refused
//! transition or a bad input returns an error and writes nothing. The HTTP adapter (tide
//! today) maps [`ServiceError`] kinds to status codes and nothing else.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use attest_common::crypto::CryptoProvider;
use attest_common::fingerprint::{EkSource, ek_fingerprint};
use attest_common::lifecycle::{Action, Event, Refused, State, Status, Transition, transition};
use attest_common::tpm::credential::{Credential, EkKey, OsEntropy, make_credential};
use attest_common::tpm::public::TpmPublic;
use attest_common::tpm::verify_quote;
use attest_common::wire::{
    AttestRequest, ChallengeResponse, HashAlg, Hex, PcrBank, PcrSelection, RegisterRequest, Role,
    Timestamp,
};

mod offline;
pub use offline::{Admitted, OfflineBundle};

use crate::audit::NewEntry;
use crate::enrollment::EnrollmentCa;
use crate::factory::IsoSource;
use crate::machineconfig::BaseConfigs;
use crate::policy::{OnViolation, PcrPolicies};
use crate::record::MachineRecord;
use crate::store::{Store, StoreError, Tx, Vote};

/// What went wrong, as the HTTP layer needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: malformed input.
    BadRequest,
    /// 404.
    NotFound,
    /// 409: the lifecycle does not allow this now.
    Conflict,
    /// 403: the machine's state forbids it (locked, revoked, rejected).
    Forbidden,
    /// 422: well-formed but inconsistent (fingerprint does not match the certificate).
    Unprocessable,
    /// 410: expired (a challenge nonce).
    Gone,
    /// 503: a dependency or configuration is missing.
    Unavailable,
    /// 500: storage failure; nothing was written.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub kind: ErrorKind,
    /// Machine-readable code for the JSON error body.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ServiceError {
            kind,
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ServiceError {}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::new(ErrorKind::Internal, "storage_error", e.to_string())
    }
}

impl From<Refused> for ServiceError {
    fn from(e: Refused) -> Self {
        ServiceError::new(ErrorKind::Conflict, "invalid_transition", e.to_string())
    }
}

/// Who acts, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Operator identity; `SYSTEM` for the break-glass token; `agent` for machines.
    pub identity: String,
    pub source_ip: Option<String>,
}

impl Actor {
    pub fn agent(source_ip: Option<String>) -> Actor {
        Actor {
            identity: "agent".into(),
            source_ip,
        }
    }
}

/// An operator's approval: what the machine becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub role: Role,
    pub hostname: String,
    /// Static address with prefix, e.g. `10.0.0.5/24`.
    pub assigned_ip: String,
}

/// Checks a hostname (RFC 1123: dot-separated labels of letters, digits and hyphens).
pub fn check_hostname(h: &str) -> Result<(), ServiceError> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ServiceError::new(
            ErrorKind::BadRequest,
            "invalid_hostname",
            format!("'{h}' is not a hostname (letters, digits, '-', dot-separated labels)"),
        ))
    }
}

/// Checks an address with prefix length (`10.0.0.5/24`, `fd00::5/64`).
pub fn check_cidr(c: &str) -> Result<(), ServiceError> {
    let bad = || {
        ServiceError::new(
            ErrorKind::BadRequest,
            "invalid_assigned_ip",
            format!("'{c}' is not an address with prefix length such as 10.0.0.5/24"),
        )
    };
    let (addr, prefix) = c.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(())
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random (version 4) UUID.
fn new_machine_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::audit::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Dual control (DESIGN.md §5): approvals for these roles need `quorum` votes from distinct
/// identities, all naming the same role, hostname and address, within `window_seconds` of
/// the first vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DualControl {
    pub roles: Vec<Role>,
    pub quorum: usize,
    pub window_seconds: u64,
}

impl Default for DualControl {
    fn default() -> Self {
        DualControl {
            roles: Vec::new(),
            quorum: 2,
            window_seconds: 600,
        }
    }
}

/// What an approval vote achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApproveOutcome {
    /// The machine is approved (single control, or the quorum-th vote).
    Approved(Box<MachineRecord>),
    /// More votes are needed.
    Pending {
        approvals_received: usize,
        approvals_required: usize,
        /// Seconds since the epoch when the window closes.
        expires_at: u64,
    },
}

pub struct Service {
    store: Store,
    dual_control: DualControl,
    configs: Option<BaseConfigs>,
    challenges: Challenges,
    policies: PcrPolicies,
    enrollment: Option<Enrollment>,
    iso: Option<IsoSource>,
    service_url: Option<String>,
}

/// The Enrollment CA and how long its machine certificates last.
pub struct Enrollment {
    pub ca: EnrollmentCa,
    pub cert_days: u32,
}

/// What a challenge asks for (DESIGN.md §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenges {
    /// `ITL_CHALLENGE_LIFETIME_SECONDS`.
    pub lifetime_seconds: u64,
    /// `ITL_PCR_SELECTION`.
    pub pcr_selection: PcrSelection,
    /// `ITL_ATTESTATION_INTERVAL_SECONDS`: when agents are told to attest again.
    pub interval_seconds: u32,
    /// `ITL_LIVENESS_FACTOR`: an attested machine silent for interval × factor is stale.
    pub liveness_factor: u32,
}

impl Challenges {
    /// How long an attested machine may stay silent before it is stale.
    pub fn liveness_seconds(&self) -> u64 {
        u64::from(self.interval_seconds) * u64::from(self.liveness_factor)
    }
}

impl Default for Challenges {
    fn default() -> Self {
        Challenges {
            lifetime_seconds: 60,
            pcr_selection: parse_pcr_selection("sha384:0-7").expect("the default selection parses"),
            interval_seconds: 300,
            liveness_factor: 5,
        }
    }
}

/// Parses `sha384:0-7,14+sha256:0` (banks joined by `+`, PCRs as lists and ranges).
pub fn parse_pcr_selection(text: &str) -> Result<PcrSelection, String> {
    let mut out = PcrSelection::new();
    for bank in text.split('+') {
        let (alg, pcrs) = bank
            .split_once(':')
            .ok_or_else(|| format!("'{bank}' is not <bank>:<pcrs>, e.g. sha384:0-7"))?;
        let hash_alg = match alg.trim() {
            "sha256" => HashAlg::Sha256,
            "sha384" => HashAlg::Sha384,
            "sha512" => HashAlg::Sha512,
            other => {
                return Err(format!(
                    "unknown PCR bank '{other}' (sha256, sha384, sha512)"
                ));
            }
        };
        let mut mask = 0u32;
        for part in pcrs.split(',') {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let parse = |v: &str| {
                v.trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|i| *i < 24)
                    .ok_or_else(|| format!("'{v}' is not a PCR index 0-23"))
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(format!("'{part}' is an empty range"));
            }
            for i in lo..=hi {
                mask |= 1 << i;
            }
        }
        let pcrs = (0u8..24).filter(|i| mask & (1 << i) != 0).collect();
        out.push(PcrBank { hash_alg, pcrs })
            .map_err(|_| "at most four PCR banks".to_owned())?;
    }
    Ok(out)
}

/// A config served to a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFetch {
    pub machine_id: String,
    pub yaml: String,
    /// The first use of the token.
    pub first: bool,
}

/// The result of register / self-register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub machine: MachineRecord,
    /// The ISO to boot (`/register` only, when ISO URLs are configured).
    pub iso_url: Option<String>,
    /// False when the EK was already known (idempotent re-registration).
    pub created: bool,
    /// MakeCredential for the AK the request carried: activate it to prove the TPM.
    pub credential: Option<Credential>,
}

/// What an attestation achieved: the lifecycle's answer for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestOutcome {
    pub machine_id: String,
    pub status: Status,
    pub action: Action,
    /// The config token, with `apply-config`.
    pub config_token: Option<String>,
}

/// The evidence of one attestation checked against a nonce, an AK and an activation
/// secret; valid for the transaction only while those are still the same.
#[derive(Clone)]
struct Checked {
    nonce: [u8; 32],
    ak: Vec<u8>,
    secret: Option<Vec<u8>>,
    /// The activation proof matches the secret.
    proven: bool,
    /// `verify_quote`'s verdict.
    quote: Result<(), String>,
}

impl Checked {
    fn new(
        nonce: &[u8; 32],
        ak: &[u8],
        secret: Option<&[u8]>,
        req: &AttestRequest,
        provider: &dyn CryptoProvider,
    ) -> Checked {
        let proven = match (secret, &req.activation_proof) {
            (Some(secret), Some(proof)) => {
                attest_common::tpm::hash::hmac(HashAlg::Sha384, secret, &[nonce]).is_ok_and(
                    |want| bool::from(subtle::ConstantTimeEq::ct_eq(want.as_slice(), &proof.0[..])),
                )
            }
            _ => false,
        };
        let quote = match TpmPublic::from_tpm2b(ak) {
            Ok(key) => verify_quote(
                provider,
                &key,
                &req.quote,
                &req.signature,
                nonce,
                &req.pcr_values,
            )
            .map(|_| ())
            .map_err(|e| e.to_string()),
            Err(e) => Err(format!("the stored AK does not parse: {e}")),
        };
        Checked {
            nonce: *nonce,
            ak: ak.to_vec(),
            secret: secret.map(<[u8]>::to_vec),
            proven,
            quote,
        }
    }

    fn holds(&self, nonce: &[u8; 32], ak: &[u8], secret: Option<&[u8]>) -> bool {
        &self.nonce == nonce && self.ak == ak && self.secret.as_deref() == secret
    }
}

/// The credential (and its secret) binding the (checked) AK to the request's EK
/// (DESIGN.md §3.2).
fn make_ak_credential(
    req: &RegisterRequest,
    ak: &TpmPublic,
) -> Result<(Credential, Vec<u8>), ServiceError> {
    let unprocessable =
        |m: String| ServiceError::new(ErrorKind::Unprocessable, "unsupported_ek", m);
    let spki = match (&req.ek_cert_pem, &req.ek_public) {
        (Some(cert), _) => attest_common::der::parse_certificate(cert.der())
            .map_err(|e| unprocessable(format!("EK certificate: {e}")))?
            .spki
            .to_vec(),
        (None, Some(public)) => public.to_vec(),
        (None, None) => {
            return Err(ServiceError::new(
                ErrorKind::BadRequest,
                "missing_ek_material",
                "ek_cert_pem or ek_public is required with ak_public",
            ));
        }
    };
    let ek = EkKey::from_spki(&spki).map_err(|e| unprocessable(format!("EK: {e}")))?;
    let mut secret = vec![0u8; 32];
    getrandom::fill(&mut secret).expect("the operating system's random number generator failed");
    let credential = make_credential(&ek, &ak.name, &secret, &mut OsEntropy)
        .map_err(|e| unprocessable(format!("MakeCredential: {e}")))?;
    Ok((credential, secret))
}

impl Service {
    pub fn new(store: Store) -> Service {
        Self::with_dual_control(store, DualControl::default())
    }

    pub fn with_dual_control(store: Store, dual_control: DualControl) -> Service {
        Service {
            store,
            dual_control,
            configs: None,
            challenges: Challenges::default(),
            policies: PcrPolicies::default(),
            enrollment: None,
            iso: None,
            service_url: None,
        }
    }

    /// Issues enrollment certificates (offline bundles) and checks them (`/enroll`).
    pub fn with_enrollment(mut self, enrollment: Enrollment) -> Service {
        self.enrollment = Some(enrollment);
        self
    }

    /// Gives `/register` and offline bundles ISO URLs from this source.
    pub fn with_iso(mut self, iso: IsoSource) -> Service {
        self.iso = Some(iso);
        self
    }

    /// The URL agents reach this server at (config URLs are built on it).
    pub fn with_service_url(mut self, url: &str) -> Service {
        self.service_url = Some(url.trim_end_matches('/').to_owned());
        self
    }

    /// A consistent copy of the registry in a new file in `dir` (DESIGN.md §7), audited
    /// after the copy was taken; the caller streams it out and removes it.
    pub fn backup(
        &self,
        dir: &std::path::Path,
        actor: &Actor,
    ) -> Result<(std::path::PathBuf, crate::store::BackupSummary), ServiceError> {
        let mut tag = [0u8; 8];
        getrandom::fill(&mut tag).expect("the operating system's random number generator failed");
        let path = dir.join(format!(".backup-{}.redb", crate::audit::hex(&tag)));
        let summary = self.store.backup(&path)?;
        let now = now();
        let detail = format!(
            "Backup taken: machines={} audit_entries={}",
            summary.machines, summary.audit_entries
        );
        let audited = self.store.write(|tx| {
            tx.audit(
                NewEntry {
                    operator_cn: actor.identity.clone(),
                    action: "backup".into(),
                    machine_id: None,
                    prev_state: None,
                    new_state: None,
                    detail: detail.clone(),
                    source_ip: actor.source_ip.clone(),
                },
                now,
            )?;
            tx.log(detail.clone());
            Ok::<_, ServiceError>(())
        });
        if let Err(e) = audited {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok((path, summary))
    }

    /// The config URL of a token.
    pub fn config_url(&self, token: &str) -> Option<String> {
        self.service_url
            .as_ref()
            .map(|u| format!("{u}/api/v1/config/{token}"))
    }

    /// The ISO URL for a machine with config token `token`: `None` when no ISO source is
    /// configured, 503 when the factory cannot answer.
    fn iso_url(&self, token: &str) -> Result<Option<String>, ServiceError> {
        let (Some(iso), Some(config_url)) = (&self.iso, self.config_url(token)) else {
            return Ok(None);
        };
        iso.iso_url(&config_url).map(Some).map_err(|e| {
            ServiceError::new(ErrorKind::Unavailable, "image_factory_unavailable", e.0)
        })
    }

    /// Issues challenges with this lifetime and PCR selection.
    pub fn with_challenges(mut self, challenges: Challenges) -> Service {
        self.challenges = challenges;
        self
    }

    /// `POST /attest/challenge`: a single-use nonce with its lifetime and what to quote.
    /// Nothing is written: the nonce is derived from its id (crate::challenge).
    pub fn challenge(&self) -> ChallengeResponse {
        let (nonce_id, nonce) = self
            .store
            .challenge_key()
            .issue(now() + self.challenges.lifetime_seconds);
        ChallengeResponse {
            nonce_id: heapless::String::try_from(nonce_id.as_str()).unwrap_or_default(),
            nonce: Hex(nonce),
            expires_at: Timestamp(crate::challenge::expiry(&nonce_id).unwrap_or_default()),
            pcr_selection: self.challenges.pcr_selection.clone(),
            hash_alg: HashAlg::Sha384,
        }
    }

    /// Uses a challenge nonce once, in the transaction of what it authorises: malformed →
    /// 404, used → 409 (replay), expired → 410. Used nonces that have expired are purged
    /// here (an expired nonce is refused for that alone).
    pub fn use_nonce(
        &self,
        tx: &Tx<'_>,
        nonce_id: &str,
        now: u64,
    ) -> Result<[u8; 32], ServiceError> {
        use crate::challenge::Unusable;
        let (nonce, _) = self
            .store
            .challenge_key()
            .open(nonce_id, now)
            .map_err(|e| match e {
                Unusable::Malformed => ServiceError::new(
                    ErrorKind::NotFound,
                    "unknown_nonce",
                    format!("'{nonce_id}' is not a challenge id of this server"),
                ),
                Unusable::Expired(at) => ServiceError::new(
                    ErrorKind::Gone,
                    "nonce_expired",
                    format!("challenge {nonce_id} expired at {}", Timestamp(at)),
                ),
            })?;
        if !tx.use_nonce(nonce_id, now)? {
            return Err(ServiceError::new(
                ErrorKind::Conflict,
                "nonce_replayed",
                format!("challenge {nonce_id} was already used"),
            ));
        }
        tx.purge_nonces(now)?;
        Ok(nonce)
    }

    /// Checks attestations against these PCR policies.
    pub fn with_policies(mut self, policies: PcrPolicies) -> Service {
        self.policies = policies;
        self
    }

    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    /// Whether an attested machine has been silent longer than the liveness limit
    /// (DESIGN.md §3.5): a derived fact, not a lifecycle state.
    pub fn is_stale(&self, record: &MachineRecord, now: u64) -> bool {
        record.state.status == Status::Attested
            && record
                .last_attested_at
                .is_some_and(|t| now.saturating_sub(t) > self.challenges.liveness_seconds())
    }

    /// Audits machines that became stale since the last sweep, once each (an attestation
    /// clears the mark). Answers how many were newly marked.
    pub fn sweep_stale(&self) -> Result<usize, ServiceError> {
        let now = now();
        let limit = self.challenges.liveness_seconds();
        let mut candidates: Vec<String> = Vec::new();
        // Already marked ones were audited when they turned stale: skipped without a write.
        self.store.each_machine(|m, marked| {
            if !marked && self.is_stale(&m, now) {
                candidates.push(m.id);
            }
            std::ops::ControlFlow::Continue(())
        })?;
        let mut marked = 0;
        for id in candidates {
            marked += self.store.write(|tx| {
                // Re-read inside the transaction: the machine may have attested since.
                let Some(m) = tx.machine(&id)? else { return Ok::<_, ServiceError>(0) };
                if !self.is_stale(&m, now) || !tx.mark_stale(&id, now)? {
                    return Ok(0);
                }
                let detail = format!(
                    "Machine stale: id={id} last_attested_at={} (no attestation for more than {limit}s = interval {}s x {})",
                    m.last_attested_at.map(|t| Timestamp(t).to_string()).unwrap_or_default(),
                    self.challenges.interval_seconds,
                    self.challenges.liveness_factor
                );
                tx.audit(
                    NewEntry {
                        operator_cn: "SYSTEM".into(),
                        action: "stale".into(),
                        machine_id: Some(id.clone()),
                        prev_state: Some(m.state.status.to_string()),
                        new_state: Some(m.state.status.to_string()),
                        detail: detail.clone(),
                        source_ip: None,
                    },
                    now,
                )?;
                tx.log(detail);
                Ok(1)
            })?;
        }
        Ok(marked)
    }

    /// Forgets a machine's PCR baseline: its next verified attestation pins a new one (after
    /// a deliberate firmware or boot-chain change).
    pub fn reset_baseline(
        &self,
        id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        let now = now();
        self.store.write(|tx| {
            let mut record = tx.machine(id)?.ok_or_else(|| not_found(id))?;
            let had = record.pcr_baseline.take().is_some();
            record.updated_at = now;
            tx.put_machine(&record)?;
            let detail = format!("PCR baseline reset: id={id} had_baseline={had} reason={reason}");
            tx.audit(
                NewEntry {
                    operator_cn: actor.identity.clone(),
                    action: "pcr-baseline-reset".into(),
                    machine_id: Some(id.to_owned()),
                    prev_state: Some(record.state.status.to_string()),
                    new_state: Some(record.state.status.to_string()),
                    detail: detail.clone(),
                    source_ip: actor.source_ip.clone(),
                },
                now,
            )?;
            tx.log(detail);
            Ok(record)
        })
    }

    /// Serves configs rendered from these role base configs.
    pub fn with_configs(mut self, configs: BaseConfigs) -> Service {
        self.configs = Some(configs);
        self
    }

    fn configs(&self) -> Result<&BaseConfigs, ServiceError> {
        self.configs.as_ref().ok_or_else(|| {
            ServiceError::new(
                ErrorKind::Unavailable,
                "no_base_configs",
                "no role base configs are configured: set ITL_CONFIG_DIR to a directory with \
                 controlplane.yaml, worker-infra.yaml and worker-app.yaml",
            )
        })
    }

    /// `POST /attest`: uses the challenge nonce, then applies the lifecycle. For registered
    /// and attested machines the AK must have been activated (the first attestation carries
    /// the proof), the quote must verify with `provider`, and the PCRs must match the
    /// baseline pinned by the first verified attestation. Failures are audited with their
    /// reason and use up the nonce.
    pub fn attest(
        &self,
        req: &AttestRequest,
        provider: &dyn CryptoProvider,
        actor: &Actor,
    ) -> Result<AttestOutcome, ServiceError> {
        let now = now();
        let fp = req.ek_fingerprint.to_string();
        // The signature check is the expensive part: do it before the write transaction,
        // on a snapshot, so that attestations verify in parallel and the (serial) write
        // only re-checks that the snapshot still holds. If it does not (the machine changed
        // in between), the evidence is checked again inside.
        let nonce = self.store.challenge_key().open(&req.nonce_id, now).ok();
        let snapshot = match nonce {
            Some(_) => self.store.machine_by_ek(&fp)?,
            None => None,
        };
        let checked = nonce
            .zip(snapshot.as_ref())
            .and_then(|((nonce, _), record)| {
                let ak = record.ak_public.as_deref()?;
                Some(Checked::new(
                    &nonce,
                    ak,
                    record.activation_secret.as_deref(),
                    req,
                    provider,
                ))
            });
        if let (Some(record), Some(evidence)) = (snapshot, &checked)
            && let Some(done) = self.heartbeat(req, record, evidence, now)?
        {
            return Ok(done);
        }
        // Outer error: roll back. Inner error: commit (nonce used, failure audited), then
        // answer with it.
        let committed: Result<AttestOutcome, ServiceError> = self.store.write(|tx| {
            let nonce = match self.use_nonce(tx, &req.nonce_id, now) {
                Ok(n) => n,
                Err(e) if e.kind != ErrorKind::Internal => {
                    // Replayed, expired or unknown challenge: refused and audited, and the
                    // machine (if the EK is known) is left as it was.
                    let known = tx.machine_by_ek(&fp)?;
                    let detail = format!(
                        "Attestation failed: id={} ek={fp} reason={}",
                        known.as_ref().map_or("unknown", |m| m.id.as_str()),
                        e.message
                    );
                    tx.audit(
                        NewEntry {
                            operator_cn: actor.identity.clone(),
                            action: "attest-failed".into(),
                            machine_id: known.as_ref().map(|m| m.id.clone()),
                            prev_state: known.as_ref().map(|m| m.state.status.to_string()),
                            new_state: known.as_ref().map(|m| m.state.status.to_string()),
                            detail: detail.clone(),
                            source_ip: actor.source_ip.clone(),
                        },
                        now,
                    )?;
                    tx.log(detail);
                    return Ok(Err(e));
                }
                Err(e) => return Err(e),
            };
            let audit = |record: &MachineRecord, action: &str, prev: Status, detail: String| {
                tx.log(detail.clone());
                tx.audit(
                    NewEntry {
                        operator_cn: actor.identity.clone(),
                        action: action.into(),
                        machine_id: Some(record.id.clone()),
                        prev_state: Some(prev.to_string()),
                        new_state: Some(record.state.status.to_string()),
                        detail,
                        source_ip: actor.source_ip.clone(),
                    },
                    now,
                )
            };
            let Some(mut record) = tx.machine_by_ek(&fp)? else {
                // First attestation of an unknown EK: pending approval, nothing trusted yet.
                let t = transition(None, Event::Attest)?;
                let record = MachineRecord::new(
                    new_machine_id(),
                    fp.clone(),
                    attest_common::EkSource::Cert,
                    t.to.unwrap_or(State::new(Status::PendingApproval)),
                    now,
                );
                tx.put_machine(&record)?;
                tx.audit(
                    NewEntry {
                        operator_cn: actor.identity.clone(),
                        action: "first-attest".into(),
                        machine_id: Some(record.id.clone()),
                        prev_state: None,
                        new_state: Some(record.state.status.to_string()),
                        detail: format!(
                            "New machine registered: id={} role=none ek={fp} (first attestation of an unknown EK)",
                            record.id
                        ),
                        source_ip: actor.source_ip.clone(),
                    },
                    now,
                )?;
                tx.log(format!("New machine registered: id={} role=none ek={fp}", record.id));
                return Ok(Ok(AttestOutcome {
                    machine_id: record.id,
                    status: Status::PendingApproval,
                    action: Action::Pending,
                    config_token: None,
                }));
            };
            let prev = record.state.status;
            let fail = |record: &MachineRecord, code: &'static str, kind: ErrorKind, why: String| {
                audit(record, "attest-failed", prev, format!("Attestation failed: id={} reason={why}", record.id))?;
                Ok::<_, ServiceError>(Err(ServiceError::new(kind, code, why)))
            };
            let t = match transition(Some(record.state), Event::Attest) {
                Ok(t) => t,
                Err(refused) => {
                    return fail(&record, "machine_refused", ErrorKind::Forbidden, refused.to_string());
                }
            };
            let action = t.action.unwrap_or(Action::None);
            // A heartbeat that changes nothing but the time of the last attestation: kept on
            // the record, not appended to the audit log (which would otherwise grow by one
            // entry per machine per interval and drown the changes it is there to show).
            let mut routine = false;
            if matches!(prev, Status::Registered | Status::Attested) {
                let Some(ak_bytes) = record.ak_public.clone() else {
                    return fail(&record, "no_ak", ErrorKind::Unprocessable,
                        "no AK on record: register or self-register with ak_public first".into());
                };
                let evidence = match &checked {
                    Some(c) if c.holds(&nonce, &ak_bytes, record.activation_secret.as_deref()) => c.clone(),
                    _ => Checked::new(&nonce, &ak_bytes, record.activation_secret.as_deref(), req, provider),
                };
                routine = self.routine(&record, &t, &evidence, req);
                if !record.ak_activated {
                    if !evidence.proven {
                        return fail(&record, "activation_failed", ErrorKind::Forbidden,
                            "credential activation not proven (activation_proof missing or wrong)".into());
                    }
                    record.ak_activated = true;
                    record.activation_secret = None;
                }
                if let Err(e) = evidence.quote {
                    return fail(&record, "quote_invalid", ErrorKind::Forbidden, e);
                }
                let policy = self.policies.for_role(record.role);
                match policy.check(record.pcr_baseline.as_deref(), &req.pcr_values) {
                    Ok(true) => record.pcr_baseline = Some(req.pcr_values.to_vec()),
                    Ok(false) => {}
                    Err(v) => {
                        let locks = policy.on_violation == OnViolation::Lock;
                        let lock = locks.then(|| transition(Some(record.state), Event::Lock).ok()).flatten();
                        let Some(Transition { to: Some(locked), .. }) = lock else {
                            return fail(&record, "pcr_policy_violation", ErrorKind::Forbidden, v.to_string());
                        };
                        // The policy locks: the refusal and the lock are one change.
                        record.state = locked;
                        record.updated_at = now;
                        tx.put_machine(&record)?;
                        let why = format!("{v}; machine locked by the PCR policy");
                        audit(&record, "attest-failed", prev, format!("Attestation failed: id={} reason={why}", record.id))?;
                        return Ok(Err(ServiceError::new(ErrorKind::Forbidden, "pcr_policy_violation", why)));
                    }
                }
                record.last_attested_at = Some(now);
                if tx.clear_stale(&record.id)? {
                    tx.log(format!("Machine fresh again: id={}", record.id));
                    routine = false;
                }
            }
            if let Some(to) = t.to {
                record.state = to;
            }
            record.updated_at = now;
            tx.put_machine(&record)?;
            if routine {
                return Ok(Ok(AttestOutcome {
                    machine_id: record.id.clone(),
                    status: record.state.status,
                    action,
                    config_token: None,
                }));
            }
            let detail = match action {
                Action::Lock => format!("Locked machine contacted: id={}", record.id),
                Action::Wipe => format!("Wipe sent to revoked machine: id={}", record.id),
                Action::Pending => format!("Pending machine contacted: id={}", record.id),
                Action::ApplyConfig => format!("Machine attested: id={} action=apply-config", record.id),
                Action::None => format!("Machine attested: id={}", record.id),
            };
            audit(&record, "attest", prev, detail)?;
            Ok(Ok(AttestOutcome {
                machine_id: record.id.clone(),
                status: record.state.status,
                action,
                config_token: (action == Action::ApplyConfig).then(|| record.config_token.clone()).flatten(),
            }))
        })?;
        committed
    }

    /// The routine attestation of an attested machine whose evidence verified and whose
    /// PCRs match its baseline: nothing changes but the time of its last attestation and the
    /// nonce it used, so it is written in a batch with the others (Store::write_batched)
    /// and not audited. `None` when anything differs from that (the machine changed since
    /// `snapshot` was read, the nonce was used, the machine is marked stale, ...): the full
    /// path then decides, audits and refuses as it must.
    fn heartbeat(
        &self,
        req: &AttestRequest,
        snapshot: MachineRecord,
        evidence: &Checked,
        now: u64,
    ) -> Result<Option<AttestOutcome>, ServiceError> {
        let routine = transition(Some(snapshot.state), Event::Attest)
            .is_ok_and(|t| self.routine(&snapshot, &t, evidence, req));
        if !routine {
            return Ok(None);
        }
        let done = self.store.write_batched(|tx| {
            if tx.nonce_used(&req.nonce_id)? || tx.is_stale(&snapshot.id)? {
                return Ok(None);
            }
            match tx.machine(&snapshot.id)? {
                Some(current) if current == snapshot => {}
                _ => return Ok(None),
            }
            let mut record = snapshot;
            record.last_attested_at = Some(now);
            record.updated_at = now;
            tx.use_nonce(&req.nonce_id, now)?;
            tx.purge_nonces(now)?;
            tx.update_machine(&record)?;
            Ok(Some(AttestOutcome {
                machine_id: record.id,
                status: record.state.status,
                action: Action::None,
                config_token: None,
            }))
        })?;
        Ok(done)
    }

    /// Whether attesting `record` (taking transition `t`) with this evidence is routine: an
    /// attested, activated machine whose quote verified and whose PCRs equal its baseline,
    /// told no action and left in its state. Such an attestation changes nothing but the
    /// time of the last one (and clears a stale mark, which the callers check). One
    /// predicate for both paths, so that the batched heartbeat never takes an attestation
    /// the full path would have audited.
    fn routine(
        &self,
        record: &MachineRecord,
        t: &Transition,
        evidence: &Checked,
        req: &AttestRequest,
    ) -> bool {
        record.state.status == Status::Attested
            && record.ak_activated
            && evidence.quote.is_ok()
            && t.action.unwrap_or(Action::None) == Action::None
            && t.to.is_none_or(|to| to == record.state)
            && self
                .policies
                .for_role(record.role)
                .check(record.pcr_baseline.as_deref(), &req.pcr_values)
                == Ok(false)
    }

    /// `GET /config/{token}`: the machine's config, with secrets only once its TPM proof has
    /// been verified (attested). Refused for locked, revoked and rejected machines; the first
    /// use is audited as consumed, later ones as re-fetches.
    pub fn fetch_config(&self, token: &str, actor: &Actor) -> Result<ConfigFetch, ServiceError> {
        let configs = self.configs()?;
        let now = now();
        self.store.write(|tx| {
            let mut record = tx.machine_by_token(token)?.ok_or_else(|| {
                ServiceError::new(
                    ErrorKind::NotFound,
                    "unknown_config_token",
                    "unknown config token",
                )
            })?;
            let status = record.state.status;
            if status.is_refused() {
                return Err(ServiceError::new(
                    ErrorKind::Forbidden,
                    "machine_refused",
                    format!(
                        "machine {} is {status}: no configuration is served",
                        record.id
                    ),
                ));
            }
            let (Some(role), Some(hostname), Some(ip)) = (
                record.role,
                record.hostname.clone(),
                record.assigned_ip.clone(),
            ) else {
                return Err(ServiceError::new(
                    ErrorKind::Forbidden,
                    "not_approved",
                    format!("machine {} is not approved", record.id),
                ));
            };
            // Secrets only after the TPM proof: an approved machine that has not attested
            // yet gets its config without them (DESIGN.md §3.2).
            let rendered = configs.render(role, &hostname, &ip);
            let with_secrets = status == Status::Attested;
            let yaml = BaseConfigs::to_yaml(&if with_secrets {
                rendered
            } else {
                BaseConfigs::without_secrets(rendered)
            });
            let first = !record.config_fetched;
            let detail = if first {
                format!(
                    "Config token consumed: id={} role={role} hostname={hostname}",
                    record.id
                )
            } else {
                format!(
                    "Config re-fetch: id={} role={role} hostname={hostname}",
                    record.id
                )
            };
            record.config_fetched = true;
            tx.put_machine(&record)?;
            tx.audit(
                NewEntry {
                    operator_cn: actor.identity.clone(),
                    action: if first {
                        "config-consumed"
                    } else {
                        "config-refetch"
                    }
                    .into(),
                    machine_id: Some(record.id.clone()),
                    prev_state: Some(status.to_string()),
                    new_state: Some(status.to_string()),
                    detail: detail.clone(),
                    source_ip: actor.source_ip.clone(),
                },
                now,
            )?;
            tx.log(detail);
            Ok(ConfigFetch {
                machine_id: record.id,
                yaml,
                first,
            })
        })
    }

    /// `GET /config`: a role's config without any secret and without machine identity.
    pub fn pending_config(&self, role: Role) -> Result<String, ServiceError> {
        let configs = self.configs()?;
        let config = BaseConfigs::without_secrets(configs.base(role).clone());
        Ok(BaseConfigs::to_yaml(&config))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks the EK material against the claimed fingerprint and the AK's form.
    fn check_identity(req: &RegisterRequest) -> Result<Option<TpmPublic>, ServiceError> {
        let material = match (&req.ek_cert_pem, &req.ek_public, req.ek_source) {
            (Some(cert), _, EkSource::Cert) => cert.der().to_vec(),
            (_, Some(public), EkSource::Pub) => public.as_slice().to_vec(),
            (None, _, EkSource::Cert) => {
                return Err(ServiceError::new(
                    ErrorKind::BadRequest,
                    "missing_ek_material",
                    "ek_cert_pem is required when ek_source is cert",
                ));
            }
            (_, None, EkSource::Pub) => {
                return Err(ServiceError::new(
                    ErrorKind::BadRequest,
                    "missing_ek_material",
                    "ek_public is required when ek_source is pub",
                ));
            }
        };
        let computed = ek_fingerprint(&material).map_err(|e| {
            ServiceError::new(
                ErrorKind::BadRequest,
                "invalid_ek",
                format!("EK material: {e}"),
            )
        })?;
        if computed.fingerprint != req.ek_fingerprint || computed.source != req.ek_source {
            return Err(ServiceError::new(
                ErrorKind::Unprocessable,
                "fingerprint_mismatch",
                format!(
                    "ek_fingerprint {} does not match the EK material (its fingerprint is {})",
                    req.ek_fingerprint, computed.fingerprint
                ),
            ));
        }
        let Some(ak) = &req.ak_public else {
            return Ok(None);
        };
        let ak = TpmPublic::from_tpm2b(ak).map_err(|e| {
            ServiceError::new(
                ErrorKind::BadRequest,
                "invalid_ak",
                format!("ak_public: {e}"),
            )
        })?;
        if !ak.is_restricted_signing() {
            return Err(ServiceError::new(
                ErrorKind::Unprocessable,
                "invalid_ak",
                "ak_public is not a restricted signing key",
            ));
        }
        Ok(Some(ak))
    }

    /// `POST /register` (pre-registration) or `/self-register` (zero-touch).
    pub fn register(
        &self,
        req: &RegisterRequest,
        self_register: bool,
        actor: &Actor,
    ) -> Result<Registered, ServiceError> {
        let ak = Self::check_identity(req)?;
        let credential = match &ak {
            Some(ak) => Some(make_ak_credential(req, ak)?),
            None => None,
        };
        let event = if self_register {
            Event::SelfRegister
        } else {
            Event::Register
        };
        let fp = req.ek_fingerprint.to_string();
        let now = now();
        // USB path: the ISO boots with this machine's config URL, so its config token
        // exists from registration on, and the factory is asked before anything is written
        // (down → 503, nothing changed).
        let planned = match self_register {
            true => None,
            false => {
                let token = self
                    .store
                    .machine_by_ek(&fp)?
                    .and_then(|m| m.config_token)
                    .unwrap_or_else(new_token);
                let iso_url = self.iso_url(&token)?;
                Some((token, iso_url))
            }
        };
        let mut done = self.store.write(|tx| -> Result<Registered, ServiceError> {
            let existing = tx.machine_by_ek(&fp)?;
            let prev_state = existing.as_ref().map(|m| m.state.status.to_string());
            let t = transition(existing.as_ref().map(|m| m.state), event)?;
            let mut record = match existing {
                Some(m) => m,
                None => MachineRecord::new(
                    new_machine_id(),
                    fp.clone(),
                    req.ek_source,
                    State::new(Status::PendingApproval),
                    now,
                ),
            };
            record.ek_cert_der = req.ek_cert_pem.as_ref().map(|c| c.der().to_vec());
            record.ek_public_der = req.ek_public.as_ref().map(|p| p.to_vec());
            record.ak_public = req
                .ak_public
                .as_ref()
                .map(|p| p.to_vec())
                .or(record.ak_public);
            if let Some((_, secret)) = &credential {
                // A new AK must prove itself again.
                record.activation_secret = Some(secret.clone());
                record.ak_activated = false;
            }
            record.hw_uuid = req.hw_uuid.as_ref().map(|s| s.to_string());
            record.hw_mac = req.hw_mac.as_ref().map(|s| s.to_string());
            record.hw_serial = req.hw_serial.as_ref().map(|s| s.to_string());
            record.hw_product = req.hw_product.as_ref().map(|s| s.to_string());
            record.desired_role = req.desired_role;
            record.cluster_id = req.cluster_id.to_string();
            record.updated_at = now;
            if let Some(to) = t.to {
                record.state = to;
            }
            if let (None, Some((token, _))) = (&record.config_token, &planned) {
                record.config_token = Some(token.clone());
            }
            tx.put_machine(&record)?;
            let (action, detail) = if t.reregistration {
                (
                    "re-register",
                    format!("Re-registration of machine {} (ek={fp})", record.id),
                )
            } else {
                (
                    if self_register {
                        "self-register"
                    } else {
                        "register"
                    },
                    format!(
                        "New machine registered: id={} role={} ek={fp}",
                        record.id,
                        req.desired_role.map_or("none", Role::as_str)
                    ),
                )
            };
            tx.audit(
                NewEntry {
                    operator_cn: actor.identity.clone(),
                    action: action.into(),
                    machine_id: Some(record.id.clone()),
                    prev_state,
                    new_state: Some(record.state.status.to_string()),
                    detail: detail.clone(),
                    source_ip: actor.source_ip.clone(),
                },
                now,
            )?;
            tx.log(detail);
            Ok(Registered {
                machine: record,
                iso_url: None,
                created: !t.reregistration,
                credential: credential.map(|(c, _)| c),
            })
        })?;
        if let Some((token, iso_url)) = planned {
            done.iso_url = match &done.machine.config_token {
                Some(t) if *t == token => iso_url,
                // A concurrent registration of the same EK set the token first.
                Some(t) => self.iso_url(t)?,
                None => None,
            };
        }
        Ok(done)
    }

    /// Applies an operator event to machine `id`, with `update` run on the record first.
    fn operate(
        &self,
        id: &str,
        event: Event,
        actor: &Actor,
        detail: String,
        update: impl FnOnce(&mut MachineRecord),
    ) -> Result<Option<MachineRecord>, ServiceError> {
        let now = now();
        self.store
            .write(|tx| apply_event(tx, id, event, actor, detail, now, update))
    }

    /// An operator's approval. Under dual control for the role this is a vote: it answers
    /// `Pending` until the quorum-th distinct identity agrees.
    pub fn approve(
        &self,
        id: &str,
        approval: &Approval,
        actor: &Actor,
    ) -> Result<ApproveOutcome, ServiceError> {
        check_hostname(&approval.hostname)?;
        check_cidr(&approval.assigned_ip)?;
        if !self.dual_control.roles.contains(&approval.role) {
            return self
                .apply_approval(id, approval, actor)
                .map(|m| ApproveOutcome::Approved(Box::new(m)));
        }
        let dc = self.dual_control.clone();
        let now = now();
        let outcome = self.store.write(|tx| {
            let record = tx.machine(id)?.ok_or_else(|| not_found(id))?;
            // Refuse before counting: a vote for a machine that cannot be approved is void.
            transition(Some(record.state), Event::Approve)?;
            let mut votes = tx.votes(id)?;
            let expired = votes
                .first()
                .is_some_and(|first| now > first.at + dc.window_seconds);
            if expired {
                votes.clear();
            }
            if let Some(first) = votes.first() {
                let mut differences = Vec::new();
                if first.role != approval.role {
                    differences.push(format!("role {} vs {}", first.role, approval.role));
                }
                if first.hostname != approval.hostname {
                    differences.push(format!(
                        "hostname {} vs {}",
                        first.hostname, approval.hostname
                    ));
                }
                if first.assigned_ip != approval.assigned_ip {
                    differences.push(format!(
                        "assigned_ip {} vs {}",
                        first.assigned_ip, approval.assigned_ip
                    ));
                }
                if !differences.is_empty() {
                    return Err(ServiceError::new(
                        ErrorKind::Conflict,
                        "approval_mismatch",
                        format!(
                            "this vote disagrees with the pending approval: {}",
                            differences.join(", ")
                        ),
                    ));
                }
            }
            if votes.iter().any(|v| v.identity == actor.identity) {
                return Err(ServiceError::new(
                    ErrorKind::Conflict,
                    "duplicate_approval",
                    format!(
                        "{} has already approved machine {id}; dual control needs another operator",
                        actor.identity
                    ),
                ));
            }
            votes.push(Vote {
                identity: actor.identity.clone(),
                role: approval.role,
                hostname: approval.hostname.clone(),
                assigned_ip: approval.assigned_ip.clone(),
                at: now,
            });
            let received = votes.len();
            let expires_at = votes[0].at + dc.window_seconds;
            if received >= dc.quorum {
                // The quorum-th vote approves, in the same transaction that moves the votes
                // from pending to the record of who approved.
                tx.put_votes(id, &[])?;
                tx.put_votes(&approved_key(id), &votes)?;
                let voters: Vec<_> = votes.iter().map(|v| v.identity.as_str()).collect();
                let detail = approval_detail(
                    id,
                    approval,
                    &format!(" (dual control: {})", voters.join(", ")),
                );
                let record = apply_event(tx, id, Event::Approve, actor, detail, now, |r| {
                    set_approval(r, approval)
                })?;
                return Ok(ApproveOutcome::Approved(Box::new(
                    record.expect("approve keeps the record"),
                )));
            }
            tx.put_votes(id, &votes)?;
            tx.log(format!(
                "Approval vote {received}/{}: id={id} by={} role={} hostname={}",
                dc.quorum, actor.identity, approval.role, approval.hostname
            ));
            tx.audit(
                NewEntry {
                    operator_cn: actor.identity.clone(),
                    action: "approve-vote".into(),
                    machine_id: Some(id.to_owned()),
                    prev_state: Some(record.state.status.to_string()),
                    new_state: Some(record.state.status.to_string()),
                    detail: format!(
                        "Approval vote {received}/{}: id={id} role={} hostname={} ip={}",
                        dc.quorum, approval.role, approval.hostname, approval.assigned_ip
                    ),
                    source_ip: actor.source_ip.clone(),
                },
                now,
            )?;
            Ok(ApproveOutcome::Pending {
                approvals_received: received,
                approvals_required: dc.quorum,
                expires_at,
            })
        })?;
        Ok(outcome)
    }

    fn apply_approval(
        &self,
        id: &str,
        approval: &Approval,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        let detail = approval_detail(id, approval, "");
        let now = now();
        let vote = Vote {
            identity: actor.identity.clone(),
            role: approval.role,
            hostname: approval.hostname.clone(),
            assigned_ip: approval.assigned_ip.clone(),
            at: now,
        };
        self.store
            .write(|tx| {
                let record = apply_event(tx, id, Event::Approve, actor, detail, now, |r| {
                    set_approval(r, approval)
                })?;
                tx.put_votes(&approved_key(id), &[vote])?;
                Ok(record)
            })
            .map(|r| r.expect("approve keeps the record"))
    }

    /// The votes that approved a machine, and the dual-control votes still pending.
    pub fn approvals(&self, id: &str) -> Result<Approvals, ServiceError> {
        self.machine(id)?;
        let mut pending = self.store.votes(id)?;
        if pending
            .first()
            .is_some_and(|f| now() > f.at + self.dual_control.window_seconds)
        {
            pending.clear();
        }
        Ok(Approvals {
            approved: self.store.votes(&approved_key(id))?,
            pending,
        })
    }

    /// Reject, lock, unlock or revoke: the record stays, the reason goes to the audit log.
    fn change_state(
        &self,
        id: &str,
        event: Event,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        let (verb, extra) = match event {
            Event::Reject => ("rejected", String::new()),
            Event::Lock => ("locked", String::new()),
            Event::Unlock => ("unlocked", String::new()),
            Event::Revoke { wipe } => ("revoked", format!(" wipe={wipe}")),
            other => unreachable!("{} is not an operator state change", other.name()),
        };
        let detail = format!("Machine {verb}: id={id}{extra} reason={reason}");
        self.operate(id, event, actor, detail, |_| {})
            .map(|r| r.expect("these events keep the record"))
    }

    pub fn reject(
        &self,
        id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        self.change_state(id, Event::Reject, reason, actor)
    }

    pub fn lock(
        &self,
        id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        self.change_state(id, Event::Lock, reason, actor)
    }

    pub fn unlock(
        &self,
        id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        self.change_state(id, Event::Unlock, reason, actor)
    }

    pub fn revoke(
        &self,
        id: &str,
        wipe: bool,
        reason: &str,
        actor: &Actor,
    ) -> Result<MachineRecord, ServiceError> {
        self.change_state(id, Event::Revoke { wipe }, reason, actor)
    }

    /// Deletes a revoked or rejected record (its audit entries stay).
    pub fn delete(&self, id: &str, actor: &Actor) -> Result<(), ServiceError> {
        self.operate(
            id,
            Event::Delete,
            actor,
            format!("Machine record deleted: id={id}"),
            |_| {},
        )
        .map(|_| ())
    }

    pub fn machine(&self, id: &str) -> Result<MachineRecord, ServiceError> {
        self.store.machine(id)?.ok_or_else(|| not_found(id))
    }

    pub fn machines(&self, status: Option<Status>) -> Result<Vec<MachineRecord>, ServiceError> {
        let mut all = Vec::new();
        self.each_machine(status, now(), |m, _| {
            all.push(m);
            std::ops::ControlFlow::Continue(())
        })?;
        Ok(all)
    }

    /// The machines (of one status), each with whether it is stale at `now`, one at a time
    /// until `f` breaks: a listing of the whole registry that holds one record in memory.
    pub fn each_machine(
        &self,
        status: Option<Status>,
        now: u64,
        mut f: impl FnMut(MachineRecord, bool) -> std::ops::ControlFlow<()>,
    ) -> Result<(), ServiceError> {
        self.store.each_machine(|m, _| {
            if status.is_some_and(|s| m.state.status != s) {
                return std::ops::ControlFlow::Continue(());
            }
            let stale = self.is_stale(&m, now);
            f(m, stale)
        })?;
        Ok(())
    }
}

fn approval_detail(id: &str, a: &Approval, note: &str) -> String {
    format!(
        "Machine approved: id={id} role={} hostname={} ip={}{note}",
        a.role, a.hostname, a.assigned_ip
    )
}

fn set_approval(r: &mut MachineRecord, a: &Approval) {
    r.role = Some(a.role);
    r.hostname = Some(a.hostname.clone());
    r.assigned_ip = Some(a.assigned_ip.clone());
    if r.config_token.is_none() {
        r.config_token = Some(new_token());
    }
}

/// A config token: 256 random bits, hex.
fn new_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    crate::audit::hex(&b)
}

/// Runs the lifecycle transition for `event` on machine `id` inside `tx`, with its audit
/// entry; `None` when the event deletes the record.
/// Where the votes that approved a machine are kept (the approvals table, beside its pending
/// votes under the plain id).
fn approved_key(id: &str) -> String {
    format!("{id}#approved")
}

/// What `GET /machines/{id}/approvals` shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Approvals {
    /// The votes that approved the machine (one without dual control), oldest first.
    pub approved: Vec<Vote>,
    /// Dual-control votes inside the window, not yet at the quorum.
    pub pending: Vec<Vote>,
}

fn apply_event(
    tx: &Tx<'_>,
    id: &str,
    event: Event,
    actor: &Actor,
    detail: String,
    now: u64,
    update: impl FnOnce(&mut MachineRecord),
) -> Result<Option<MachineRecord>, ServiceError> {
    let mut record = tx.machine(id)?.ok_or_else(|| not_found(id))?;
    let t = transition(Some(record.state), event)?;
    let prev = record.state.status.to_string();
    let new_state = t.to.map(|s| s.status.to_string());
    let result = match t.to {
        Some(state) => {
            record.state = state;
            record.updated_at = now;
            update(&mut record);
            tx.put_machine(&record)?;
            Some(record)
        }
        None => {
            tx.delete_machine(&record)?;
            tx.put_votes(id, &[])?;
            tx.put_votes(&approved_key(id), &[])?;
            None
        }
    };
    tx.log(format!("{detail} by={}", actor.identity));
    tx.audit(
        NewEntry {
            operator_cn: actor.identity.clone(),
            action: event.name().into(),
            machine_id: Some(id.to_owned()),
            prev_state: Some(prev),
            new_state,
            detail,
            source_ip: actor.source_ip.clone(),
        },
        now,
    )?;
    Ok(result)
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::new(
        ErrorKind::NotFound,
        "not_found",
        format!("no machine with id '{id}'"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_selections() {
        let s = parse_pcr_selection("sha384:0-7,14+sha256:0").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].hash_alg, HashAlg::Sha384);
        assert_eq!(s[0].pcrs.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7, 14]);
        assert_eq!(s[1].pcrs.as_slice(), &[0]);
        for bad in [
            "sha1:0",
            "sha384",
            "sha384:24",
            "sha384:5-3",
            "sha384:x",
            "",
        ] {
            assert!(parse_pcr_selection(bad).is_err(), "{bad}");
        }
    }
}
