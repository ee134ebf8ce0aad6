//! The service layer: what the server does, with no HTTP, no storage engine, no clock and
//! no randomness of its own in sight.
//!
//! One file per use case (register, attest and its batched heartbeat, approval, operator
//! changes, config delivery, liveness, offline enrollment, queries), each an `impl` block of
//! [`Service`]. Every operation validates its input first, then runs the lifecycle
//! transition from `attest-common` inside one registry transaction together with its audit
//! entry ([`Change`]); a refused transition or a bad input returns an error and writes
//! nothing. The service works against the [`Registry`] trait and takes time and randomness
//! from its [`Platform`], so its tests move a clock instead of sleeping. The answers agents
//! receive are built and signed here (`answers`); the adapters only decode and encode.

mod ak_policy;
mod answers;
mod approval;
mod attest;
mod attest_proof;
mod attest_refused;
mod audited;
mod challenge;
mod checkpoints;
mod config_delivery;
mod error;
mod evidence;
mod heartbeat;
mod liveness;
mod offline;
mod operate;
pub mod platform;
mod queries;
mod quota;
mod refusals;
mod register;
mod tpm_clock;

pub use ak_policy::AkPolicy;
pub use answers::{ResponseKey, ServerKey};
pub use approval::{Approval, Approvals, ApproveOutcome, DualControl, check_cidr, check_hostname};
pub use attest::AttestOutcome;
pub use audited::{Actor, Change};
pub use challenge::{Challenges, parse_pcr_selection};
pub use checkpoints::AuditCheckpoints;
pub use config_delivery::ConfigFetch;
pub use error::{ErrorKind, ServiceError, not_found};
pub use offline::{Admitted, Enrollment, OfflineBundle};
pub use platform::Platform;
pub use quota::DEFAULT_MAX_UNVERIFIED_PENDING;
pub use register::Registered;

use crate::challenge::ChallengeKey;
use crate::ekchain::{EkChain, EkChainPolicy};
use crate::factory::IsoSource;
use crate::machineconfig::BaseConfigs;
use crate::metrics::Counters;
use crate::policy::PcrPolicies;
use crate::store::Registry;

/// The control plane over registry `R`.
pub struct Service<R: Registry> {
    registry: R,
    platform: Platform,
    dual_control: DualControl,
    configs: Option<BaseConfigs>,
    challenges: Challenges,
    policies: PcrPolicies,
    enrollment: Option<Enrollment>,
    iso: Option<IsoSource>,
    service_url: Option<String>,
    /// Shared with the registry's checkpoint signer (`checkpoints`).
    response_key: Option<std::sync::Arc<ResponseKey>>,
    /// `ITL_AUDIT_CHECKPOINT_ENTRIES` and `_MINUTES`.
    audit_checkpoints: AuditCheckpoints,
    /// `ITL_CONFIG_URL_SECONDS`: how long a single-use config URL lives.
    config_url_seconds: u64,
    /// What `GET /metrics` counts.
    counters: Counters,
    /// Contacts that proved nothing, counted and logged at a bounded rate.
    refusals: refusals::Refusals,
    /// The EK certificate chain check and what it decides (`None`: `ITL_EK_CHAIN=off`).
    ek_chain: Option<(EkChain, EkChainPolicy)>,
    /// Derives activation secrets (`ChallengeKey::activation_secret`); kept in a file
    /// beside the registry, never in it, so a registry backup cannot make credentials.
    activation_key: ChallengeKey,
    /// Derives and checks challenge ids and nonces; kept in a file beside the registry
    /// (`ITL_DATA_DIR/challenge-key`), never in it, so a registry backup cannot mint
    /// challenges for a later time.
    challenge_key: ChallengeKey,
    /// `ITL_MAX_UNVERIFIED_PENDING`: unapproved machines with an unverified EK.
    unverified_quota: quota::UnverifiedQuota,
    /// `ITL_AK_ALGORITHMS`: the AKs registration and rotation accept.
    ak_policy: AkPolicy,
}

impl<R: Registry> Service<R> {
    /// A service on `registry` with the wall clock and the operating system's randomness,
    /// single control, the default challenges and no optional parts.
    pub fn new(registry: R) -> Service<R> {
        Service {
            registry,
            platform: Platform::default(),
            dual_control: DualControl::default(),
            configs: None,
            challenges: Challenges::default(),
            policies: PcrPolicies::default(),
            enrollment: None,
            iso: None,
            service_url: None,
            response_key: None,
            audit_checkpoints: AuditCheckpoints::default(),
            config_url_seconds: 300,
            counters: Counters::default(),
            refusals: refusals::Refusals::default(),
            ek_chain: None,
            // Per process unless the binary loads the kept one (`with_activation_key`).
            activation_key: ChallengeKey::new(&Platform::default().bytes::<48>()),
            // Likewise (`with_challenge_key`): then a restart forgets outstanding challenges.
            challenge_key: ChallengeKey::new(&Platform::default().bytes::<48>()),
            unverified_quota: quota::UnverifiedQuota::default(),
            ak_policy: AkPolicy::default(),
        }
    }

    /// Derives activation secrets with this key (`ITL_DATA_DIR/activation-key`).
    pub fn with_activation_key(mut self, key: ChallengeKey) -> Service<R> {
        self.activation_key = key;
        self
    }

    /// Derives challenges with this key (`ITL_DATA_DIR/challenge-key`).
    pub fn with_challenge_key(mut self, key: ChallengeKey) -> Service<R> {
        self.challenge_key = key;
        self
    }

    /// Checks EK certificate chains at registration and import, as `policy` says.
    pub fn with_ek_chain(mut self, chain: EkChain, policy: EkChainPolicy) -> Service<R> {
        self.ek_chain = (policy != EkChainPolicy::Off).then_some((chain, policy));
        self
    }

    /// At most `limit` unapproved machines with an EK no vendor vouches for
    /// (`ITL_MAX_UNVERIFIED_PENDING`; `None`: no bound).
    pub fn with_unverified_pending_limit(mut self, limit: Option<u64>) -> Service<R> {
        self.unverified_quota = quota::UnverifiedQuota::new(limit);
        self
    }

    /// Single-use config URLs live this long (`ITL_CONFIG_URL_SECONDS`).
    pub fn with_config_url_seconds(mut self, seconds: u64) -> Service<R> {
        self.config_url_seconds = seconds;
        self
    }

    /// Takes time and randomness from `platform`.
    pub fn with_platform(mut self, platform: Platform) -> Service<R> {
        self.platform = platform;
        self
    }

    pub fn with_dual_control(mut self, dual_control: DualControl) -> Service<R> {
        self.dual_control = dual_control;
        self
    }

    /// Issues challenges with this lifetime and PCR selection.
    pub fn with_challenges(mut self, challenges: Challenges) -> Service<R> {
        self.challenges = challenges;
        self
    }

    /// Checks attestations against these PCR policies.
    pub fn with_policies(mut self, policies: PcrPolicies) -> Service<R> {
        self.policies = policies;
        self
    }

    /// Serves configs rendered from these role base configs.
    pub fn with_configs(mut self, configs: BaseConfigs) -> Service<R> {
        self.configs = Some(configs);
        self
    }

    /// Issues enrollment certificates (offline bundles) and checks them (`/enroll`).
    pub fn with_enrollment(mut self, enrollment: Enrollment) -> Service<R> {
        self.enrollment = Some(enrollment);
        self
    }

    /// Gives `/register` and offline bundles ISO URLs from this source.
    pub fn with_iso(mut self, iso: IsoSource) -> Service<R> {
        self.iso = Some(iso);
        self
    }

    /// The URL agents reach this server at (config URLs are built on it).
    pub fn with_service_url(mut self, url: &str) -> Service<R> {
        self.service_url = Some(url.trim_end_matches('/').to_owned());
        self
    }

    /// Signs agent answers (DESIGN.md §3.7) and the audit log's checkpoints (§6) with this
    /// key.
    pub fn with_response_key(mut self, key: ResponseKey) -> Service<R> {
        self.response_key = Some(std::sync::Arc::new(key));
        self.install_checkpoint_signer();
        self
    }

    /// Signs a checkpoint of the audit chain this often (`ITL_AUDIT_CHECKPOINT_ENTRIES`,
    /// `ITL_AUDIT_CHECKPOINT_MINUTES`).
    pub fn with_audit_checkpoints(mut self, checkpoints: AuditCheckpoints) -> Service<R> {
        self.audit_checkpoints = checkpoints;
        self.install_checkpoint_signer();
        self
    }

    /// The registry (tests and the backup command read it directly).
    pub fn registry(&self) -> &R {
        &self.registry
    }

    /// The service's clock: seconds since the epoch.
    pub fn now(&self) -> u64 {
        self.platform.now()
    }

    /// Counters since start, for `/metrics`.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Unauthenticated contacts refused since start, by reason (`/metrics`).
    pub fn refusal_counts(&self) -> Vec<(&'static str, u64)> {
        self.refusals
            .counts()
            .into_iter()
            .map(|(r, n)| (r.as_str(), n))
            .collect()
    }
}
