//! What `attest-agent` does: register a TPM, then push attestations and act on the
//! server's (signed) answers.
//!
//! Every action the server asks for is checked against the pinned response key before any
//! hook runs: a man in the middle can delay a machine, never lock or wipe it. The pinned
//! key is the one configured (`server_key`), or else the one fetched at the first
//! registration (trust on first use, kept in the state directory, never replaced
//! silently).

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use attest_common::lifecycle::{Action, Status};
use attest_common::nonce::{Domain, verify, verifying_key_from_spki, verifying_key_to_spki};
use attest_common::tpm::hash::{HashAlg, hmac};
use attest_common::wire::{
    AttestRequest, AttestResponse, Blob, CertificateDer, ChallengeRequest, Hex, HwField,
    RegisterRequest, RegisterResponse, TpmReceipt,
};
use attest_common::{EkSource, Fingerprint};
use p384::ecdsa::VerifyingKey;

use crate::backoff::{self, Backoff};
use crate::client::{ApiError, Client};
use crate::config::Settings;
use crate::hooks;
use crate::state::{Enrollment, PINNED_SERVER_KEY, StateDir};
use crate::tpm::{AkType, EkIdentity, EkType, Tpm};

/// An error that retrying cannot fix (configuration, missing registration): the attest
/// loop stops on it instead of backing off.
#[derive(Debug)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// The server's answer did not verify against the pinned key: nothing was acted on.
#[derive(Debug)]
pub struct UnverifiedAnswer;

impl std::fmt::Display for UnverifiedAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the server's answer is not signed by the pinned server key: refusing to act on it",
        )
    }
}

impl std::error::Error for UnverifiedAnswer {}

/// `last_action` while a wipe order's hook has not succeeded.
const WIPE_PENDING: &str = "wipe-pending";
/// `last_action` once a wipe order's hook has succeeded: reported (`wipe_done`) until the
/// server confirms.
const WIPED: &str = "wipe";

/// One attestation's result.
#[derive(Debug, Clone)]
pub struct Attested {
    pub response: AttestResponse,
    /// The hooks that ran (`apply-config`, `lock`, `wipe`).
    pub hooks_run: Vec<&'static str>,
    /// Warnings for the operator (an action without a hook).
    pub warnings: Vec<String>,
}

pub struct Agent {
    settings: Settings,
    state: StateDir,
}

/// Reads a pinned key: PEM (`PUBLIC KEY`) or DER SubjectPublicKeyInfo, P-384.
pub fn read_server_key(bytes: &[u8]) -> Result<VerifyingKey> {
    let der = match pem_rfc7468::decode_vec(bytes) {
        Ok(("PUBLIC KEY", der)) => der,
        Ok((label, _)) => bail!("a PEM '{label}' is not a public key"),
        Err(_) => bytes.to_vec(),
    };
    verifying_key_from_spki(&der).map_err(|e| anyhow!("not a P-384 public key: {e}"))
}

fn server_key_pem(key: &VerifyingKey) -> String {
    pem_rfc7468::encode_string(
        "PUBLIC KEY",
        pem_rfc7468::LineEnding::LF,
        &verifying_key_to_spki(key),
    )
    .expect("a P-384 SPKI encodes as PEM")
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    b
}

/// A hardware identity field from sysfs (DMI), when readable (product_uuid needs root).
fn sysfs_field(path: &str) -> Option<HwField> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty())
        .then(|| HwField::try_from(text).ok())
        .flatten()
}

/// The MAC address of the first physical network interface.
fn first_mac() -> Option<HwField> {
    let mut names: Vec<_> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("device").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        sysfs_field(&format!("/sys/class/net/{n}/address"))
            .filter(|m| m.as_str() != "00:00:00:00:00:00")
    })
}

/// Flushes the transient EK and AK however an attestation ends (a TPM without a resource
/// manager, as swtpm, would otherwise fill up).
struct Loaded<'a> {
    tpm: &'a mut Tpm,
    handles: Vec<tss_esapi::handles::KeyHandle>,
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        for h in self.handles.drain(..).rev() {
            let _ = self.tpm.flush(h);
        }
    }
}

impl Agent {
    pub fn new(settings: Settings) -> Result<Agent> {
        let state = StateDir::open(&settings.state_dir)?;
        Ok(Agent { settings, state })
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    fn client(&self, server: &str) -> Result<Client> {
        Client::for_server(&self.settings, server)
    }

    fn open_tpm(&self) -> Result<Tpm> {
        Tpm::open(&self.settings.tcti).with_context(|| {
            format!(
                "cannot open the TPM at '{}' (set --tcti or TPM2TOOLS_TCTI)",
                self.settings.tcti
            )
        })
    }

    /// The configured pinned key, else the one pinned at registration.
    pub fn pinned_key(&self) -> Result<Option<VerifyingKey>> {
        if let Some(path) = &self.settings.server_key {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the server key {}", path.display()))?;
            return read_server_key(&bytes)
                .with_context(|| format!("{}", path.display()))
                .map(Some);
        }
        match self.state.read(PINNED_SERVER_KEY)? {
            Some(bytes) => read_server_key(&bytes)
                .with_context(|| format!("{}/{PINNED_SERVER_KEY}", self.state.path().display()))
                .map(Some),
            None => Ok(None),
        }
    }

    /// The TPM's identity as a register request (without the AK).
    fn identity_request(&self, ek: &EkIdentity) -> Result<RegisterRequest> {
        let fingerprint = attest_common::ek_fingerprint(&ek.der)
            .map_err(|e| anyhow!("the TPM's EK material is not usable: {e}"))?
            .fingerprint;
        let (cert, public) = match ek.source {
            EkSource::Cert => (
                Some(
                    CertificateDer::from_der(&ek.der)
                        .map_err(|_| anyhow!("the EK certificate is too large"))?,
                ),
                None,
            ),
            EkSource::Pub => (
                None,
                Some(
                    ek.public
                        .as_deref()
                        .and_then(Blob::from_slice)
                        .ok_or_else(|| anyhow!("no EK public area, or one too large"))?,
                ),
            ),
        };
        Ok(RegisterRequest {
            ek_fingerprint: fingerprint,
            ek_cert_pem: cert,
            ek_public: public,
            ek_source: ek.source,
            hw_uuid: sysfs_field("/sys/class/dmi/id/product_uuid"),
            hw_mac: first_mac(),
            hw_serial: sysfs_field("/sys/class/dmi/id/product_serial"),
            hw_product: sysfs_field("/sys/class/dmi/id/product_name"),
            desired_role: self.settings.desired_role,
            cluster_id: heapless::String::try_from(self.settings.cluster_id.as_str())
                .map_err(|_| anyhow!("cluster_id is longer than 63 characters"))?,
            ak_public: None,
            agent_nonce: None,
        })
    }

    fn ek_types(&self) -> Vec<EkType> {
        match self.settings.ek_type {
            Some(t) => vec![t],
            None => EkType::PREFERENCE.to_vec(),
        }
    }

    /// Registers this TPM (`register`: the USB path; `self-register`: zero-touch) with a new
    /// AK, activates the credential the server answers with, and saves the enrollment.
    pub fn register(&self, self_register: bool) -> Result<RegisterResponse> {
        let server = self.settings.server()?.to_owned();
        let client = self.client(&server)?;
        // Pin the server key before anything is sent: a key that changed since the last
        // registration is refused, not replaced.
        let fetched = read_server_key(&client.server_key()?)
            .context("the server's published response key")?;
        match self.pinned_key()? {
            Some(pinned) if pinned != fetched => bail!(Fatal(format!(
                "the server's response key differs from the pinned one ({}): refusing to register \
                 (if the server key was rotated on purpose, update the pinned key)",
                self.settings
                    .server_key
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| format!(
                        "{}/{PINNED_SERVER_KEY}",
                        self.state.path().display()
                    ))
            ))),
            Some(_) => {}
            None => {
                if server.starts_with("http://") {
                    // Trust on first use over plain HTTP trusts whoever answered (review
                    // F4): allowed for labs (allow_plain_http), said loudly.
                    eprintln!(
                        "attest-agent: warning: pinning the server key fetched over plain HTTP \
                         from {server}: anyone on the path could have answered; in production \
                         give the key with --server-key (or server_key in the config)"
                    );
                }
                self.state
                    .write(PINNED_SERVER_KEY, server_key_pem(&fetched).as_bytes())?
            }
        }

        let mut tpm = self.open_tpm()?;
        let ek = tpm.ek_identity(&self.ek_types())?;
        let mut req = self.identity_request(&ek)?;
        // P-384 whatever the EK (an RSA EK is the parent of a P-384 AK as well): the one AK
        // every server takes (DESIGN.md §3.2).
        let ak_type = self.settings.ak_type.unwrap_or(AkType::EccP384);
        let ek_handle = tpm.ek(ek.ek_type)?;
        let mut loaded = Loaded {
            tpm: &mut tpm,
            handles: vec![ek_handle],
        };
        let ak = loaded.tpm.create_ak(ek_handle, ak_type)?;
        loaded.handles.push(ak.handle);
        req.ak_public = Some(
            Blob::from_slice(&ak.public_tpm2b)
                .ok_or_else(|| anyhow!("AK public area too large"))?,
        );
        // A fresh nonce in the request: the signed answer covers the request's digest, so no
        // earlier answer (another credential, another ISO URL) passes for this one.
        req.agent_nonce = Some(Hex(random32()));
        let response = client.register(&req, self_register)?;
        let signed = response.signature.as_ref().ok_or(UnverifiedAnswer)?;
        verify(
            &fetched,
            Domain::Action,
            &req.digest(),
            &response.signed_context_for(&req),
            signed,
        )
        .map_err(|_| UnverifiedAnswer)?;
        let credential = response
            .credential
            .as_ref()
            .ok_or_else(|| anyhow!("the server did not answer with a credential for the AK"))?;
        let secret = loaded
            .tpm
            .activate_credential(
                ak.handle,
                ek_handle,
                ek.ek_type,
                &credential.credential_blob,
                &credential.encrypted_secret,
            )
            .context("activating the server's credential (is this the TPM of the EK sent?)")?;
        drop(loaded);
        self.state.save_ak(&ak.public_tpm2b, &ak.private_tpm2b)?;
        self.state.save_activation_secret(&secret)?;
        self.state.save_enrollment(&Enrollment {
            version: Enrollment::VERSION,
            server,
            machine_id: response.machine_id.to_string(),
            ek_fingerprint: req.ek_fingerprint.to_string(),
            ek_type: ek.ek_type.name().into(),
            registered_via: if self_register {
                "self-register"
            } else {
                "register"
            }
            .into(),
            iso_url: response.iso_url.as_ref().map(|s| s.to_string()),
            config_url: response.config_url.as_ref().map(|s| s.to_string()),
            pending_apply_config: None,
            pending_config_sha384: None,
            applied_config_sha384: None,
            last_action: None,
            lock_boot_id: None,
        })?;
        Ok(response)
    }

    /// A TPM receipt for offline import (`POST /machines/import`), without any network.
    pub fn receipt(&self) -> Result<TpmReceipt> {
        let mut tpm = self.open_tpm()?;
        let ek = tpm.ek_identity(&self.ek_types())?;
        let identity = self.identity_request(&ek)?;
        Ok(TpmReceipt {
            format: TpmReceipt::FORMAT,
            identity,
            agent_version: heapless::String::try_from(env!("CARGO_PKG_VERSION"))
                .unwrap_or_default(),
            created_at: attest_common::wire::Timestamp(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            ),
        })
    }

    /// Runs the wipe hook again if a verified wipe order's hook has not succeeded yet.
    /// True when such a wipe was pending (and has now run).
    pub fn resume_pending_wipe(&self) -> Result<bool> {
        let Some(mut enrollment) = self.state.enrollment()? else {
            return Ok(false);
        };
        if enrollment.last_action.as_deref() != Some(WIPE_PENDING) {
            return Ok(false);
        }
        if let Some(cmd) = &self.settings.hooks.wipe {
            hooks::run(
                cmd,
                b"",
                &[
                    ("ITL_ACTION", "wipe"),
                    ("ITL_MACHINE_ID", &enrollment.machine_id),
                ],
                self.settings.hooks.timeout,
            )?;
        }
        enrollment.last_action = Some(WIPED.into());
        self.state.save_enrollment(&enrollment)?;
        Ok(true)
    }

    /// Quotes, sends the evidence, verifies the answer's signature and runs the hook for
    /// the action it carries.
    pub fn attest_once(&self) -> Result<Attested> {
        let mut enrollment = self.state.enrollment()?.ok_or_else(|| {
            Fatal(format!(
                "this machine is not registered ({} has no enrollment): run `attest-agent \
                 self-register` (zero-touch) or `attest-agent register` first",
                self.state.path().display()
            ))
        })?;
        let key = self.pinned_key()?.ok_or_else(|| {
            Fatal("no pinned server key: pass --server-key FILE or register first".into())
        })?;
        let server = self
            .settings
            .server
            .clone()
            .unwrap_or_else(|| enrollment.server.clone());
        let client = self.client(&server)?;
        let ek_type = enrollment.ek_type.parse::<EkType>().map_err(|_| {
            Fatal(format!(
                "unknown ek_type '{}' in the enrollment",
                enrollment.ek_type
            ))
        })?;
        let fingerprint = Fingerprint::from_str(&enrollment.ek_fingerprint)
            .map_err(|e| Fatal(format!("the enrollment's fingerprint: {e}")))?;
        let (ak_public, ak_private) = self
            .state
            .ak()?
            .ok_or_else(|| Fatal("the state directory has no AK: register again".into()))?;

        let challenge = client.challenge(&ChallengeRequest {
            ek_fingerprint: Some(fingerprint),
        })?;
        let secret = self.state.activation_secret()?;
        let proof = match &secret {
            Some(s) => {
                let mac = hmac(HashAlg::Sha384, s, &[&challenge.nonce.0])
                    .map_err(|_| anyhow!("HMAC-SHA384 failed"))?;
                Some(Hex(mac
                    .as_slice()
                    .try_into()
                    .map_err(|_| anyhow!("HMAC length"))?))
            }
            None => None,
        };
        let agent_nonce = random32();
        let mut req = AttestRequest {
            ek_fingerprint: fingerprint,
            nonce_id: challenge.nonce_id,
            agent_nonce: Hex(agent_nonce),
            quote: Blob::default(),
            signature: Blob::default(),
            pcr_values: heapless::Vec::new(),
            activation_proof: proof,
            // The AK this quote is made with: a new one (after a reset) is rotated to once
            // the server sees it activated; the bound one changes nothing.
            ak_public: Blob::from_slice(&ak_public),
            config_applied: enrollment.applied_config_sha384.as_deref().and_then(|h| {
                let mut d = [0u8; 48];
                attest_common::hex::decode_into(h, &mut d).ok()?;
                Some(Hex(d))
            }),
            // The wipe hook ran (exit 0): the server may clear its pending wipe.
            wipe_done: enrollment.last_action.as_deref() == Some(WIPED),
        };
        // The TPM quotes over the challenge nonce, our nonce and the request's claims
        // (`attest_common::binding`): our nonce, over which the answer is signed, is then
        // this TPM's, and no claim can be changed on the way.
        let qualifying = req.qualifying_data(&challenge.nonce.0);
        let (quote, signature, pcr_values) = {
            let mut tpm = self.open_tpm()?;
            let ek = tpm.ek(ek_type)?;
            let mut loaded = Loaded {
                tpm: &mut tpm,
                handles: vec![ek],
            };
            let ak = loaded
                .tpm
                .load_ak(ek, &ak_public, &ak_private)
                .map_err(|e| Fatal(format!("{e:#}: register again")))?;
            loaded.handles.push(ak.handle);
            let (q, s) = loaded
                .tpm
                .quote(ak.handle, &qualifying, &challenge.pcr_selection)?;
            let values = loaded.tpm.pcr_values(&challenge.pcr_selection)?;
            (q, s, values)
        };
        req.quote = Blob::from_slice(&quote).ok_or_else(|| anyhow!("quote too large"))?;
        req.signature =
            Blob::from_slice(&signature).ok_or_else(|| anyhow!("signature too large"))?;
        req.pcr_values = heapless::Vec::from_slice(&pcr_values)
            .map_err(|_| anyhow!("too many PCR values selected"))?;
        let response = client.attest(&req)?;
        // Signed over our nonce and this very request (EK fingerprint, challenge id, its
        // digest): an answer to another machine's or another request does not verify.
        verify(
            &key,
            Domain::Action,
            &agent_nonce,
            &response.signed_context_for(&req),
            &response.signature,
        )
        .map_err(|_| UnverifiedAnswer)?;
        // Our machine id is the one registration gave us; an answer never changes it. A
        // known EK's registration names none (whoever holds the EK certificate may ask): the
        // first answer bound to this TPM's quote does.
        if enrollment.machine_id.is_empty() && !response.machine_id.is_empty() {
            enrollment.machine_id = response.machine_id.to_string();
            self.state.save_enrollment(&enrollment)?;
        } else if response.machine_id.as_str() != enrollment.machine_id {
            bail!(UnverifiedAnswer);
        }

        // The activation secret is kept (0600) for as long as this AK lives: another agent
        // of the same TPM (the firmware, a second installation) may bind its own AK in
        // between, and only the proof takes this AK back (review F8). Without the TPM that
        // holds the AK it proves nothing.
        let mut done = Attested {
            response: response.clone(),
            hooks_run: Vec::new(),
            warnings: Vec::new(),
        };
        match response.action {
            Action::ApplyConfig => {
                let url = response
                    .config_url
                    .as_ref()
                    .ok_or_else(|| anyhow!("apply-config without a config_url"))?;
                let digest = response.config_sha384.as_ref().ok_or_else(|| {
                    anyhow!("apply-config without the config's digest: refused (an older or altered server?)")
                })?;
                enrollment.pending_apply_config = Some(url.to_string());
                enrollment.pending_config_sha384 = Some(hex(&digest.0));
                enrollment.config_url = Some(url.to_string());
                self.state.save_enrollment(&enrollment)?;
            }
            Action::Lock | Action::Wipe => {}
            Action::None | Action::Pending => enrollment.last_action = None,
        }
        let machine_id = response.machine_id.to_string();
        let status = response.status.to_string();
        let run = |command: &str, stdin: &[u8], action: &str, config_url: &str| {
            let env = [
                ("ITL_ACTION", action),
                ("ITL_MACHINE_ID", machine_id.as_str()),
                ("ITL_STATUS", status.as_str()),
                ("ITL_SERVER", server.as_str()),
                ("ITL_CONFIG_URL", config_url),
            ];
            hooks::run(command, stdin, &env, self.settings.hooks.timeout)
        };
        let hooks = &self.settings.hooks;
        if let Some(url) = enrollment.pending_apply_config.clone()
            && !matches!(response.action, Action::Lock | Action::Wipe)
        {
            match &hooks.apply_config {
                Some(cmd) => {
                    let yaml = client.config(&url).context("fetching the machine config");
                    let want = enrollment.pending_config_sha384.take();
                    enrollment.pending_apply_config = None;
                    // The URL works once: whatever happens now, it is spent.
                    self.state.save_enrollment(&enrollment)?;
                    let yaml = yaml?;
                    check_config_digest(&yaml, want.as_deref())?;
                    run(cmd, &yaml, "apply-config", &url)?;
                    enrollment.applied_config_sha384 = want;
                    done.hooks_run.push("apply-config");
                }
                None => done.warnings.push(
                    "apply-config: no hook configured (hooks.apply_config); its single-use URL was not used"
                        .into(),
                ),
            }
            enrollment.pending_apply_config = None;
        }
        // Once per lock, and again in every later boot while it lasts: a lock is undone by
        // a reboot otherwise (a hook's effect need not survive one).
        let boot = crate::state::boot_id();
        let locked_here =
            enrollment.last_action.as_deref() == Some("lock") && enrollment.lock_boot_id == boot;
        match response.action {
            Action::Lock if !locked_here => {
                enrollment.lock_boot_id = boot;
                match &hooks.lock {
                    Some(cmd) => {
                        run(cmd, b"", "lock", "")?;
                        done.hooks_run.push("lock");
                    }
                    None => done
                        .warnings
                        .push("lock: no hook configured (hooks.lock)".into()),
                }
                enrollment.last_action = Some("lock".into());
            }
            Action::Wipe => {
                // Sent once: remember it before running the hook, so that a failed hook is
                // run again (by `resume_pending_wipe`) even though the server now refuses.
                enrollment.last_action = Some(WIPE_PENDING.into());
                self.state.save_enrollment(&enrollment)?;
                match &hooks.wipe {
                    Some(cmd) => {
                        run(cmd, b"", "wipe", "")?;
                        done.hooks_run.push("wipe");
                        enrollment.last_action = Some(WIPED.into());
                    }
                    None => {
                        done.warnings.push(
                            "wipe: no hook configured (hooks.wipe): NOTHING WAS WIPED".into(),
                        );
                        enrollment.last_action = Some("wipe-not-run".into());
                    }
                }
            }
            _ => {}
        }
        self.state.save_enrollment(&enrollment)?;
        Ok(done)
    }

    /// Attests forever: again after the server's interval, or after a backoff (10 s doubling
    /// to 300 s, at least `Retry-After`) when an attempt fails. Ends when the server's signed
    /// answer says the machine is revoked with nothing left to do (after a wipe: once the
    /// wipe is confirmed), or on an error that retrying cannot fix. `report` sees every
    /// outcome.
    pub fn run(
        &self,
        mut report: impl FnMut(&Result<Attested>, Option<Duration>),
        mut sleep: impl FnMut(Duration),
    ) -> Result<()> {
        let mut backoff = Backoff::default();
        loop {
            match self.resume_pending_wipe() {
                // Wiped now: the next attestation confirms it to the server.
                Ok(_) => {}
                Err(e) => {
                    let d = backoff.next(None, backoff::jitter());
                    report(&Err(e), Some(d));
                    sleep(d);
                    continue;
                }
            }
            let result = self.attest_once();
            let next = match &result {
                // Revoked, and nothing (left) to do: the server's signed last word.
                Ok(a)
                    if a.response.status == Status::Revoked
                        && a.response.action == Action::None =>
                {
                    None
                }
                // Wiped: confirmed at the next contact, soon.
                Ok(a) if a.response.action == Action::Wipe => Some(crate::config::MIN_INTERVAL),
                Ok(a) => {
                    backoff.reset();
                    Some(
                        self.settings
                            .interval(a.response.seconds_to_next_attestation),
                    )
                }
                Err(e) if e.is::<Fatal>() => None,
                Err(e) => {
                    let retry_after = e.downcast_ref::<ApiError>().and_then(|a| a.retry_after);
                    Some(backoff.next(retry_after, backoff::jitter()))
                }
            };
            report(&result, next);
            match (result, next) {
                (Err(e), None) => return Err(e),
                (Ok(_), None) => return Ok(()),
                (_, Some(d)) => sleep(d),
            }
        }
    }
}

/// Refuses a config that is not the one the server's signed answer named (DESIGN.md §3.7):
/// a man in the middle may change the body, never the digest.
fn check_config_digest(yaml: &[u8], want_hex: Option<&str>) -> Result<()> {
    let want = want_hex.ok_or_else(|| anyhow!("no signed digest for this config: not applied"))?;
    let got = attest_common::tpm::hash::digest(HashAlg::Sha384, &[yaml])
        .map_err(|_| anyhow!("SHA-384 failed"))?;
    let got = hex(got.as_slice());
    if got != want {
        return Err(anyhow!(
            "the config served is not the one the server signed (SHA-384 {got}, signed {want}): not applied"
        ));
    }
    Ok(())
}

/// Lower-case hex of a digest.
fn hex(bytes: &[u8]) -> String {
    let mut buf = [0u8; 128];
    attest_common::hex::encode(bytes, &mut buf[..bytes.len() * 2]).to_owned()
}
