//! The boot-time agent as a deterministic state machine: no I/O, no clock, no heap.
//!
//! The image (or a test) drives it: it asks [`Agent::poll`] what to do next — write bytes
//! to the link, have the TPM activate a credential or make a quote, wait for bytes, or
//! stop with an [`Outcome`] — and feeds back what happened ([`Agent::received`],
//! [`Agent::activated`], [`Agent::quoted`], [`Agent::timed_out`]). Keeping the protocol
//! here, away from UARTs and MMIO, is what lets the same logic run on QEMU, a
//! microcontroller and in host tests against the real server (the quinn-proto / rustls
//! shape).
//!
//! The flows, one per [`Mode`]:
//! - `Register` (the USB registration stick): register the EK and AK, report the machine
//!   id and the ISO URL.
//! - `Attest`: self-register (idempotent; a fresh credential for this boot's AK), activate
//!   the credential in the TPM, fetch a challenge, quote the PCRs it names, attest with the
//!   activation proof HMAC-SHA384(secret, nonce), and report the server's action only after
//!   its signature over our own nonce verifies with the pinned key. A machine the server
//!   will not re-register (attested, locked, revoked: 409) attests without a proof — that
//!   is how a revoked machine receives its one `wipe`.
//! - `Receipt`: hand the identity to the relay as an offline receipt.

use attest_common::binding;
use attest_common::frame::{Deframer, encode_in_place, in_place_start, max_encoded_len};
use attest_common::lifecycle::{Action, Status};
use attest_common::nonce::{
    Domain, NONCE_LEN, NonceSignature, VerifyingKey, verify, verifying_key_from_spki,
};
use attest_common::tpm::hash::{HashAlg as TpmHash, hmac};
use attest_common::wire::{
    AttestRequest, Blob, ChallengeRequest, ChallengeResponse, CredentialChallenge, HW_FIELD_LEN,
    HashAlg, Hex, HexVec, LinkRequestBody, LinkResponse, LinkResponseBody, MAX_TPM2B_PUBLIC,
    NONCE_ID_LEN, PcrValue, Role, Timestamp, TpmReceipt, URL_LEN, VERSION_LEN,
};
use attest_common::{EkSource, Fingerprint, ek_fingerprint_der};
use heapless::{String, Vec};

use crate::tpm::{PcrBank, PcrRead, TpmError};

/// Largest request payload (postcard): a register request with a 2.5 KiB EK certificate,
/// or an attestation with 48 SHA-384 PCR values. (A P-384 EK's registration is ≈ 1.5 KiB.)
pub const MAX_REQUEST: usize = 4096;
/// Largest answer payload (postcard): a register answer with its URLs and credential.
pub const MAX_RESPONSE: usize = 3072;
/// Bytes of one encoded request frame on the line.
pub const MAX_REQUEST_FRAME: usize = max_encoded_len(MAX_REQUEST);
/// Sends of one request when no answer comes.
pub const ATTEMPTS: u8 = 3;

/// What this boot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    Register,
    Attest,
    Receipt,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "register" => Some(Mode::Register),
            "attest" => Some(Mode::Attest),
            "receipt" => Some(Mode::Receipt),
            _ => None,
        }
    }
}

/// What the TPM and the platform said about this machine.
pub struct Identity<'a> {
    /// DER EK certificate from the TPM's NV index.
    pub ek_cert: &'a [u8],
    /// TPM2B_PUBLIC of the attestation key.
    pub ak_public: &'a [u8],
    /// SMBIOS system UUID and serial number, when the platform has them.
    pub hw_uuid: Option<&'a str>,
    pub hw_serial: Option<&'a str>,
    pub hw_product: Option<&'a str>,
}

/// Why the agent stopped without a result from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AgentError {
    /// The EK certificate is not one the fingerprint rules accept.
    BadEkCertificate,
    /// A value does not fit its wire field (e.g. an SMBIOS string too long).
    TooLarge,
    /// Attest mode needs the server's response key to check actions; none was given or it
    /// is not a P-384 SubjectPublicKeyInfo.
    NoServerKey,
    /// The TPM failed a command.
    Tpm(TpmError),
    /// No answer after [`ATTEMPTS`] sends.
    NoAnswer,
    /// An answer that does not decode, or of the wrong kind.
    BadAnswer,
    /// The server's action signature does not verify with the pinned key.
    BadSignature,
}

impl core::fmt::Display for AgentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AgentError::BadEkCertificate => f.write_str("the EK certificate is not usable"),
            AgentError::TooLarge => f.write_str("a value does not fit its wire field"),
            AgentError::NoServerKey => {
                f.write_str("no valid server key pinned: cannot check the server's actions")
            }
            AgentError::Tpm(e) => write!(f, "TPM: {e}"),
            AgentError::NoAnswer => f.write_str("no answer on the link"),
            AgentError::BadAnswer => f.write_str("an answer that does not decode or fit"),
            AgentError::BadSignature => {
                f.write_str("the server's action signature does not verify: refused")
            }
        }
    }
}

/// How the boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Register mode: the server knows the TPM.
    Registered {
        machine_id: String<64>,
        status: Status,
        iso_url: Option<String<URL_LEN>>,
    },
    /// Attest mode: the server's verified answer.
    Attested {
        machine_id: String<64>,
        status: Status,
        action: Action,
        config_url: Option<String<URL_LEN>>,
        /// With `apply-config`: the SHA-384 of the only config that may be applied (the
        /// installer that fetches `config_url` checks it; the relay and the network cannot
        /// change it: it is signed).
        config_sha384: Option<[u8; 48]>,
        seconds_to_next_attestation: u32,
    },
    /// Receipt mode: the relay kept the receipt.
    ReceiptSaved,
    /// The server refused, with the HTTP status and error code the JSON API would give.
    Refused {
        status: u16,
        code: String<32>,
    },
    Failed(AgentError),
}

impl Outcome {
    /// The image's exit status (documented in the README): 0 done, 1 failed, 2 pending
    /// approval, 3 locked, 4 wiped, 5 refused.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Registered { .. } | Outcome::ReceiptSaved => 0,
            Outcome::Attested { action, .. } => match action {
                Action::None | Action::ApplyConfig => 0,
                Action::Pending => 2,
                Action::Lock => 3,
                Action::Wipe => 4,
            },
            Outcome::Refused { .. } => 5,
            Outcome::Failed(_) => 1,
        }
    }
}

/// The next thing the driver must do.
#[derive(Debug)]
pub enum Poll<'a> {
    /// Write these bytes to the link, then poll again.
    Transmit(&'a [u8]),
    /// Run TPM2_ActivateCredential and report with [`Agent::activated`].
    Activate {
        credential_blob: &'a [u8],
        encrypted_secret: &'a [u8],
    },
    /// Read these PCRs and quote them over `nonce`; report with [`Agent::quoted`].
    Quote {
        nonce: &'a [u8],
        banks: &'a [PcrBank],
    },
    /// Feed bytes from the link ([`Agent::received`]) or report silence
    /// ([`Agent::timed_out`]).
    Receive,
    Done(&'a Outcome),
}

/// A quote as the TPM made it.
pub struct Evidence<'a> {
    pub attest: &'a [u8],
    pub signature: &'a [u8],
    pub pcrs: &'a [PcrRead],
    /// The TPM2B_PUBLIC of the AK that signed the quote: sent with every attestation, so
    /// the server checks the quote against this boot's AK (and, once it is activated, binds
    /// it) rather than against whatever AK another registration of this EK left on record.
    pub ak_public: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Register,
    Challenge,
    Attest,
    Receipt,
}

#[allow(clippy::large_enum_variant)]
enum Step {
    /// `tx` holds a request; write it.
    Send(Expect),
    /// Written; waiting for the answer with our sequence number.
    Wait(Expect),
    Activate(CredentialChallenge),
    Quote {
        nonce_id: String<NONCE_ID_LEN>,
        nonce: [u8; NONCE_LEN],
        /// What the TPM quotes over (`attest_common::binding::qualifying_data`).
        qualifying: [u8; 48],
        banks: Vec<PcrBank, 4>,
    },
    Done(Outcome),
}

/// The agent. About 10 KiB: one request frame, one answer buffer and the step's data.
pub struct Agent {
    mode: Mode,
    step: Step,
    fingerprint: Fingerprint,
    server_key: Option<VerifyingKey>,
    /// Our nonce for this boot: the server signs its answer over it, so an answer recorded
    /// on another boot cannot be replayed to us.
    agent_nonce: [u8; NONCE_LEN],
    secret: Option<Vec<u8, 64>>,
    seq: u32,
    sends: u8,
    /// Attestations restarted from a fresh challenge after a timeout, this boot.
    restarts: u8,
    tx: [u8; MAX_REQUEST_FRAME],
    tx_len: usize,
    rx: Deframer<{ max_encoded_len(MAX_RESPONSE) }>,
    /// The request sent last (an attestation's challenge id; its SHA-384): the only one
    /// whose answer is taken (`attest_common::binding`).
    sent_nonce_id: String<NONCE_ID_LEN>,
    sent_digest: [u8; 48],
}

/// A body serialized as its variant's content only (its index is written separately).
struct Body<'a>(&'a LinkRequestBody);

impl serde::Serialize for Body<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            LinkRequestBody::Challenge(v) => v.serialize(s),
            LinkRequestBody::Register(v) | LinkRequestBody::SelfRegister(v) => v.serialize(s),
            LinkRequestBody::Attest(v) => v.serialize(s),
            LinkRequestBody::Enroll(v) => v.serialize(s),
            LinkRequestBody::Receipt(v) => v.serialize(s),
        }
    }
}

/// The postcard variant index of a request body (its declaration order).
fn variant(body: &LinkRequestBody) -> u32 {
    match body {
        LinkRequestBody::Challenge(_) => 0,
        LinkRequestBody::Register(_) => 1,
        LinkRequestBody::SelfRegister(_) => 2,
        LinkRequestBody::Attest(_) => 3,
        LinkRequestBody::Enroll(_) => 4,
        LinkRequestBody::Receipt(_) => 5,
    }
}

const ATTEST: u32 = 3;
const REGISTER: u32 = 1;
const SELF_REGISTER: u32 = 2;
const RECEIPT: u32 = 5;

fn tpm_alg(h: HashAlg) -> u16 {
    match h {
        HashAlg::Sha1 => 0x0004,
        HashAlg::Sha256 => 0x000b,
        HashAlg::Sha384 => 0x000c,
        HashAlg::Sha512 => 0x000d,
    }
}

fn wire_alg(alg: u16) -> Option<HashAlg> {
    match alg {
        0x0004 => Some(HashAlg::Sha1),
        0x000b => Some(HashAlg::Sha256),
        0x000c => Some(HashAlg::Sha384),
        0x000d => Some(HashAlg::Sha512),
        _ => None,
    }
}

/// Bytes as postcard writes a [`Blob`] or a `CertificateDer`: a length, then the bytes.
struct Bytes<'a>(&'a [u8]);

impl serde::Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// `RegisterRequest` as the firmware sends it: the same fields in the same order, borrowing
/// the EK certificate and the AK public area instead of copying them into the owned
/// request's 4 KiB of buffers on the stack. Postcard encodes both identically (tested).
#[derive(serde::Serialize)]
struct RegisterFields<'a> {
    ek_fingerprint: &'a Fingerprint,
    ek_cert_pem: Option<Bytes<'a>>,
    ek_public: Option<Bytes<'a>>,
    ek_source: EkSource,
    hw_uuid: Option<&'a str>,
    hw_mac: Option<&'a str>,
    hw_serial: Option<&'a str>,
    hw_product: Option<&'a str>,
    desired_role: Option<Role>,
    cluster_id: &'a str,
    ak_public: Option<Bytes<'a>>,
    agent_nonce: Option<Hex<NONCE_LEN>>,
}

/// A hardware field, refused when the server's bound would refuse it.
fn field(s: Option<&str>) -> Result<Option<&str>, AgentError> {
    match s {
        Some(v) if v.len() > HW_FIELD_LEN => Err(AgentError::TooLarge),
        other => Ok(other),
    }
}

impl Agent {
    /// Starts a boot. `server_key` is the DER SubjectPublicKeyInfo of the server's response
    /// key (required in attest mode); `agent_nonce` must be unpredictable (TPM2_GetRandom);
    /// `now` is the Unix time when the platform has a clock (the receipt's date).
    pub fn new(
        mode: Mode,
        identity: &Identity<'_>,
        server_key: Option<&[u8]>,
        agent_nonce: [u8; NONCE_LEN],
        now: Option<u64>,
    ) -> Agent {
        let mut agent = Agent::idle();
        agent.begin(mode, identity, server_key, agent_nonce, now);
        agent
    }

    /// An agent with nothing to do, for static storage (a microcontroller or the image keep
    /// it out of the stack); [`Agent::begin`] starts a boot in place.
    pub const fn idle() -> Agent {
        Agent {
            mode: Mode::Register,
            step: Step::Done(Outcome::Failed(AgentError::NoAnswer)),
            fingerprint: Fingerprint([0; 48]),
            server_key: None,
            agent_nonce: [0; NONCE_LEN],
            secret: None,
            seq: 0,
            sends: 0,
            restarts: 0,
            tx: [0; MAX_REQUEST_FRAME],
            tx_len: 0,
            rx: Deframer::new(),
            sent_nonce_id: String::new(),
            sent_digest: [0; 48],
        }
    }

    /// Starts a boot (see [`Agent::new`]), reusing this agent's buffers.
    pub fn begin(
        &mut self,
        mode: Mode,
        identity: &Identity<'_>,
        server_key: Option<&[u8]>,
        agent_nonce: [u8; NONCE_LEN],
        now: Option<u64>,
    ) {
        self.mode = mode;
        self.server_key = None;
        self.agent_nonce = agent_nonce;
        self.secret = None;
        self.restarts = 0;
        self.rx = Deframer::new();
        self.step = match self.start(identity, server_key, now) {
            Ok(step) => step,
            Err(e) => Step::Done(Outcome::Failed(e)),
        };
    }

    fn start(
        &mut self,
        identity: &Identity<'_>,
        server_key: Option<&[u8]>,
        now: Option<u64>,
    ) -> Result<Step, AgentError> {
        // Every answer acted on or shown is checked: register and attest modes need the key
        // (a relay must not show the operator its own ISO URL); a receipt gets no answer.
        if self.mode != Mode::Receipt {
            let key = server_key.ok_or(AgentError::NoServerKey)?;
            self.server_key =
                Some(verifying_key_from_spki(key).map_err(|_| AgentError::NoServerKey)?);
        }
        let fp = ek_fingerprint_der(identity.ek_cert).map_err(|_| AgentError::BadEkCertificate)?;
        if fp.source != EkSource::Cert {
            return Err(AgentError::BadEkCertificate);
        }
        if identity.ak_public.len() > MAX_TPM2B_PUBLIC {
            return Err(AgentError::TooLarge);
        }
        self.fingerprint = fp.fingerprint;
        let request = RegisterFields {
            ek_fingerprint: &fp.fingerprint,
            ek_cert_pem: Some(Bytes(identity.ek_cert)),
            ek_public: None,
            ek_source: EkSource::Cert,
            hw_uuid: field(identity.hw_uuid)?,
            hw_mac: None,
            hw_serial: field(identity.hw_serial)?,
            hw_product: field(identity.hw_product)?,
            desired_role: None,
            cluster_id: "default",
            ak_public: Some(Bytes(identity.ak_public)),
            agent_nonce: (self.mode != Mode::Receipt).then_some(Hex(self.agent_nonce)),
        };
        // The register answer is signed over this request's digest (with our nonce in it).
        self.sent_digest = binding::digest_of(&request);
        match self.mode {
            Mode::Register => self.queue_variant(REGISTER, &request)?,
            Mode::Attest => self.queue_variant(SELF_REGISTER, &request)?,
            Mode::Receipt => {
                let version = String::<VERSION_LEN>::try_from(concat!(
                    "firmware/",
                    env!("CARGO_PKG_VERSION")
                ))
                .map_err(|_| AgentError::TooLarge)?;
                // TpmReceipt's fields in order, borrowing the request (see queue_variant).
                let receipt = (
                    TpmReceipt::FORMAT,
                    &request,
                    &version,
                    Timestamp(now.unwrap_or(0)),
                );
                self.queue_variant(RECEIPT, &receipt)?
            }
        }
        Ok(Step::Send(match self.mode {
            Mode::Receipt => Expect::Receipt,
            _ => Expect::Register,
        }))
    }

    /// The EK fingerprint this boot presents.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Encodes a request with the next sequence number into `tx`.
    fn queue(&mut self, body: &LinkRequestBody) -> Result<(), AgentError> {
        self.queue_variant(variant(body), &Body(body))
    }

    /// Encodes `LinkRequest { seq, body: <variant>(value) }` from a borrowed value. Postcard
    /// writes a struct as its fields in order and an enum as its variant index (varint)
    /// then the content, so this tuple is byte for byte that request (checked in the
    /// tests) without building a 5 KiB `LinkRequestBody` on the stack.
    #[inline(never)]
    fn queue_variant<T: serde::Serialize>(
        &mut self,
        index: u32,
        value: &T,
    ) -> Result<(), AgentError> {
        self.seq = self.seq.wrapping_add(1);
        self.sends = 0;
        // Serialized into the tail of `tx` and framed in place: no 4 KiB payload buffer.
        let start = in_place_start(MAX_REQUEST);
        let used = postcard::to_slice(&(self.seq, index, value), &mut self.tx[start..])
            .map_err(|_| AgentError::TooLarge)?
            .len();
        self.tx_len =
            encode_in_place(&mut self.tx, start, used).map_err(|_| AgentError::TooLarge)?;
        Ok(())
    }

    pub fn poll(&mut self) -> Poll<'_> {
        if let Step::Send(expect) = self.step {
            self.sends += 1;
            self.step = Step::Wait(expect);
            return Poll::Transmit(&self.tx[..self.tx_len]);
        }
        match &self.step {
            Step::Send(_) => unreachable!("handled above"),
            Step::Wait(_) => Poll::Receive,
            Step::Activate(c) => Poll::Activate {
                credential_blob: &c.credential_blob,
                encrypted_secret: &c.encrypted_secret,
            },
            Step::Quote {
                qualifying, banks, ..
            } => Poll::Quote {
                nonce: qualifying,
                banks,
            },
            Step::Done(outcome) => Poll::Done(outcome),
        }
    }

    /// The outcome, once [`Poll::Done`].
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.step {
            Step::Done(o) => Some(o),
            _ => None,
        }
    }

    fn fail(&mut self, e: AgentError) {
        self.step = Step::Done(Outcome::Failed(e));
    }

    /// No answer within the driver's time budget: send again, or give up.
    pub fn timed_out(&mut self) {
        if let Step::Wait(expect) = self.step {
            if self.sends >= ATTEMPTS {
                self.fail(AgentError::NoAnswer);
            } else if expect == Expect::Attest {
                // The nonce may have been spent: a fresh challenge and quote, not a resend;
                // a server that answers challenges but never attestations ends it too.
                self.restarts += 1;
                if self.restarts >= ATTEMPTS {
                    self.fail(AgentError::NoAnswer);
                } else {
                    self.step = self.challenge();
                }
            } else {
                self.step = Step::Send(expect);
            }
        }
    }

    /// Bytes from the link. Noise and frames that are not our answer are skipped.
    pub fn received(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let Step::Wait(expect) = self.step else {
                return;
            };
            let Some(Ok(frame)) = self.rx.push(b) else {
                continue;
            };
            let Ok(answer) = postcard::from_bytes::<LinkResponse>(frame) else {
                continue;
            };
            if answer.seq != self.seq {
                continue;
            }
            self.answer(expect, answer.body);
        }
    }

    fn answer(&mut self, expect: Expect, body: LinkResponseBody) {
        let result = match (expect, body) {
            (_, LinkResponseBody::Error { status, body }) => {
                self.refused(expect, status, &body.error)
            }
            (Expect::Register, LinkResponseBody::Register(r)) => self.registered(r),
            (Expect::Challenge, LinkResponseBody::Challenge(c)) => self.challenged(c),
            (Expect::Attest, LinkResponseBody::Attest(a)) => {
                let context = binding::answer_context(
                    &a,
                    &self.fingerprint,
                    &self.sent_nonce_id,
                    &self.sent_digest,
                );
                self.check_signed(&self.agent_nonce, &context, Some(&a.signature))
                    .map(|()| {
                        Step::Done(Outcome::Attested {
                            machine_id: a.machine_id,
                            status: a.status,
                            action: a.action,
                            config_url: a.config_url,
                            config_sha384: a.config_sha384.map(|h| h.0),
                            seconds_to_next_attestation: a.seconds_to_next_attestation,
                        })
                    })
            }
            (Expect::Receipt, LinkResponseBody::ReceiptSaved) => {
                Ok(Step::Done(Outcome::ReceiptSaved))
            }
            _ => Err(AgentError::BadAnswer),
        };
        match result {
            Ok(step) => self.step = step,
            Err(e) => self.fail(e),
        }
    }

    /// The server key's signature (domain `action`) over `nonce` and `context`. One
    /// out-of-line copy of the P-384 verification for every answer (the image's budget).
    #[inline(never)]
    fn check_signed(
        &self,
        nonce: &[u8],
        context: &[u8; 48],
        signature: Option<&NonceSignature>,
    ) -> Result<(), AgentError> {
        let key = self.server_key.as_ref().ok_or(AgentError::NoServerKey)?;
        let signature = signature.ok_or(AgentError::BadSignature)?;
        verify(key, Domain::Action, nonce, context, signature).map_err(|_| AgentError::BadSignature)
    }

    fn refused(&mut self, expect: Expect, status: u16, code: &str) -> Result<Step, AgentError> {
        // Attested, locked and revoked machines are not re-registered (409); their TPM
        // proved its AK before, so they attest without a proof, and a revoked one learns
        // of its wipe that way.
        if expect == Expect::Register && self.mode == Mode::Attest && status == 409 {
            return Ok(self.challenge());
        }
        Ok(Step::Done(Outcome::Refused {
            status,
            code: String::try_from(code).unwrap_or_default(),
        }))
    }

    fn registered(&mut self, r: attest_common::wire::RegisterResponse) -> Result<Step, AgentError> {
        // Signed over the digest of the request we sent: a credential, machine id or ISO
        // URL meant for another request is refused.
        let context = binding::register_answer_context(&r, &self.sent_digest);
        self.check_signed(&self.sent_digest, &context, r.signature.as_ref())?;
        match self.mode {
            Mode::Register => Ok(Step::Done(Outcome::Registered {
                machine_id: r.machine_id,
                status: r.status,
                iso_url: r.iso_url,
            })),
            _ => match r.credential {
                Some(c) => Ok(Step::Activate(c)),
                None => Ok(self.challenge()),
            },
        }
    }

    /// Queues a challenge request; the step that waits to send it.
    fn challenge(&mut self) -> Step {
        let body = LinkRequestBody::Challenge(ChallengeRequest {
            ek_fingerprint: Some(self.fingerprint),
        });
        match self.queue(&body) {
            Ok(()) => Step::Send(Expect::Challenge),
            Err(e) => Step::Done(Outcome::Failed(e)),
        }
    }

    fn challenged(&mut self, c: ChallengeResponse) -> Result<Step, AgentError> {
        let mut banks = Vec::new();
        for b in &c.pcr_selection {
            let mask = b
                .pcrs
                .iter()
                .filter(|&&i| i < 24)
                .fold(0u32, |m, &i| m | 1 << i);
            banks
                .push(PcrBank {
                    hash_alg: tpm_alg(b.hash_alg),
                    mask,
                })
                .map_err(|_| AgentError::TooLarge)?;
        }
        // The TPM quotes over the challenge nonce, our nonce and what our request claims:
        // the answer, signed over our nonce, is then for this TPM's request alone.
        let claims = binding::claims(&self.fingerprint, &c.nonce_id, None, false);
        let qualifying = binding::qualifying_data(&c.nonce.0, &self.agent_nonce, &claims);
        Ok(Step::Quote {
            nonce_id: c.nonce_id,
            nonce: c.nonce.0,
            qualifying,
            banks,
        })
    }

    /// The TPM's answer to [`Poll::Activate`]: the recovered secret.
    pub fn activated(&mut self, result: Result<&[u8], TpmError>) {
        if !matches!(self.step, Step::Activate(_)) {
            return;
        }
        match result {
            Ok(secret) => match Vec::from_slice(secret) {
                Ok(s) => {
                    self.secret = Some(s);
                    self.step = self.challenge();
                }
                Err(_) => self.fail(AgentError::TooLarge),
            },
            Err(e) => self.fail(AgentError::Tpm(e)),
        }
    }

    /// The TPM's answer to [`Poll::Quote`].
    pub fn quoted(&mut self, result: Result<Evidence<'_>, TpmError>) {
        let Step::Quote {
            nonce_id, nonce, ..
        } = &self.step
        else {
            return;
        };
        let (nonce_id, nonce) = (nonce_id.clone(), *nonce);
        let evidence = match result {
            Ok(e) => e,
            Err(e) => return self.fail(AgentError::Tpm(e)),
        };
        match self.attest_request(nonce_id, &nonce, &evidence) {
            Ok(req) => match self.queue_variant(ATTEST, &req) {
                Ok(()) => {
                    self.sent_nonce_id = req.nonce_id.clone();
                    self.sent_digest = req.digest();
                    self.step = Step::Send(Expect::Attest)
                }
                Err(e) => self.fail(e),
            },
            Err(e) => self.fail(e),
        }
    }

    fn attest_request(
        &self,
        nonce_id: String<NONCE_ID_LEN>,
        nonce: &[u8; NONCE_LEN],
        e: &Evidence<'_>,
    ) -> Result<AttestRequest, AgentError> {
        let mut pcr_values = Vec::new();
        for p in e.pcrs {
            let hash_alg = wire_alg(p.hash_alg).ok_or(AgentError::BadAnswer)?;
            let value = HexVec(Vec::from_slice(&p.value).map_err(|_| AgentError::TooLarge)?);
            pcr_values
                .push(PcrValue {
                    hash_alg,
                    index: p.index,
                    value,
                })
                .map_err(|_| AgentError::TooLarge)?;
        }
        let activation_proof = match &self.secret {
            Some(secret) => {
                let mac =
                    hmac(TpmHash::Sha384, secret, &[nonce]).map_err(|_| AgentError::TooLarge)?;
                Some(Hex(mac
                    .as_slice()
                    .try_into()
                    .map_err(|_| AgentError::TooLarge)?))
            }
            None => None,
        };
        Ok(AttestRequest {
            ek_fingerprint: self.fingerprint,
            nonce_id,
            agent_nonce: Hex(self.agent_nonce),
            quote: Blob::from_slice(e.attest).ok_or(AgentError::TooLarge)?,
            signature: Blob::from_slice(e.signature).ok_or(AgentError::TooLarge)?,
            pcr_values,
            activation_proof,
            ak_public: Some(Blob::from_slice(e.ak_public).ok_or(AgentError::TooLarge)?),
            config_applied: None,
            // The firmware reports its outcome to the platform, which wipes (or not).
            wipe_done: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_common::wire::{AttestRequest, LinkRequest};

    #[test]
    fn unanswered_attestations_end_the_boot() {
        let mut agent = Agent::idle();
        for round in 1..=ATTEMPTS {
            // As after a challenge answered and a quote sent.
            agent.step = Step::Wait(Expect::Attest);
            agent.timed_out();
            if round < ATTEMPTS {
                assert!(
                    matches!(agent.step, Step::Send(Expect::Challenge)),
                    "round {round}"
                );
            }
        }
        assert!(matches!(
            agent.outcome(),
            Some(Outcome::Failed(AgentError::NoAnswer))
        ));
    }

    #[test]
    fn borrowed_registration_is_the_owned_request() {
        let owned = attest_common::wire::RegisterRequest {
            ek_fingerprint: Fingerprint([4; 48]),
            ek_cert_pem: Some(attest_common::wire::CertificateDer(
                Blob::from_slice(&[0x30; 300]).unwrap(),
            )),
            ek_public: None,
            ek_source: EkSource::Cert,
            hw_uuid: Some(String::try_from("uuid").unwrap()),
            hw_mac: None,
            hw_serial: Some(String::try_from("serial").unwrap()),
            hw_product: None,
            desired_role: None,
            cluster_id: String::try_from("default").unwrap(),
            ak_public: Some(Blob::from_slice(&[7; 90]).unwrap()),
            agent_nonce: Some(Hex([6; NONCE_LEN])),
        };
        let fields = RegisterFields {
            ek_fingerprint: &Fingerprint([4; 48]),
            ek_cert_pem: Some(Bytes(&[0x30; 300])),
            ek_public: None,
            ek_source: EkSource::Cert,
            hw_uuid: Some("uuid"),
            hw_mac: None,
            hw_serial: Some("serial"),
            hw_product: None,
            desired_role: None,
            cluster_id: "default",
            ak_public: Some(Bytes(&[7; 90])),
            agent_nonce: Some(Hex([6; NONCE_LEN])),
        };
        assert_eq!(
            postcard::to_allocvec(&owned).unwrap(),
            postcard::to_allocvec(&fields).unwrap()
        );
    }

    #[test]
    fn borrowed_encoding_is_the_link_request_encoding() {
        let req = AttestRequest {
            ek_fingerprint: Fingerprint([3; 48]),
            nonce_id: String::try_from("n-1").unwrap(),
            agent_nonce: Hex([9; NONCE_LEN]),
            quote: Blob::from_slice(&[1, 2, 3]).unwrap(),
            signature: Blob::from_slice(&[4, 5]).unwrap(),
            pcr_values: Vec::new(),
            activation_proof: Some(Hex([7; 48])),
            ak_public: None,
            config_applied: None,
            wipe_done: false,
        };
        let body = LinkRequestBody::Attest(req.clone());
        let owned = postcard::to_allocvec(&LinkRequest {
            seq: 300,
            body: body.clone(),
        })
        .unwrap();
        let borrowed = postcard::to_allocvec(&(300u32, ATTEST, &req)).unwrap();
        assert_eq!(owned, borrowed);
        let generic = postcard::to_allocvec(&(300u32, variant(&body), &Body(&body))).unwrap();
        assert_eq!(owned, generic);
        let receipt = TpmReceipt {
            format: TpmReceipt::FORMAT,
            identity: attest_common::wire::RegisterRequest {
                ek_fingerprint: Fingerprint([1; 48]),
                ek_cert_pem: None,
                ek_public: Some(Blob::from_slice(&[5; 10]).unwrap()),
                ek_source: EkSource::Pub,
                hw_uuid: Some(String::try_from("u").unwrap()),
                hw_mac: None,
                hw_serial: None,
                hw_product: None,
                desired_role: None,
                cluster_id: String::try_from("default").unwrap(),
                ak_public: None,
                agent_nonce: None,
            },
            agent_version: String::try_from("v").unwrap(),
            created_at: Timestamp(42),
        };
        let tuple = (
            TpmReceipt::FORMAT,
            &receipt.identity,
            &receipt.agent_version,
            receipt.created_at,
        );
        assert_eq!(
            postcard::to_allocvec(&LinkRequest {
                seq: 2,
                body: LinkRequestBody::Receipt(receipt.clone())
            })
            .unwrap(),
            postcard::to_allocvec(&(2u32, RECEIPT, &tuple)).unwrap()
        );
        let ch = LinkRequestBody::Challenge(ChallengeRequest {
            ek_fingerprint: None,
        });
        assert_eq!(
            postcard::to_allocvec(&LinkRequest {
                seq: 1,
                body: ch.clone()
            })
            .unwrap(),
            postcard::to_allocvec(&(1u32, variant(&ch), &Body(&ch))).unwrap()
        );
    }
}
