//! The TPM client: the handful of TPM 2.0 commands a boot-time agent needs, marshalled by
//! `tpm2-protocol`, over any [`TpmTransport`].
//!
//! Everything lives in two fixed buffers owned by the client (no heap, no large stack
//! frames for I/O). Responses from the TPM are untrusted bytes: the fields the client uses
//! are read from the frame with every length checked ([`response`]), and each command has
//! its own typed error carrying the TPM's response code.

pub mod response;
pub mod spi;
pub mod template;
pub mod tis;
pub mod transport;

use heapless::Vec;
use tpm2_protocol::basic::{TpmHandle, TpmUint16, TpmUint32};
use tpm2_protocol::data::{
    Tpm2bData, Tpm2bDigest, Tpm2bEncryptedSecret, Tpm2bIdObject, Tpm2bNonce, Tpm2bPublic,
    Tpm2bSensitiveCreate, TpmAlgId, TpmCap, TpmCc, TpmSe, TpmSt, TpmSu, TpmlDigest,
    TpmlPcrSelection, TpmsAuthCommand, TpmtPublic, TpmtSigScheme, TpmtSymDefObject,
};
use tpm2_protocol::frame::{
    TpmActivateCredentialCommand, TpmCreatePrimaryCommand, TpmFlushContextCommand, TpmFrame,
    TpmGetCapabilityCommand, TpmGetRandomCommand, TpmNvReadCommand, TpmNvReadPublicCommand,
    TpmPcrReadCommand, TpmPolicyOrCommand, TpmPolicySecretCommand, TpmQuoteCommand,
    TpmStartAuthSessionCommand, TpmStartupCommand, tpm_marshal_command,
};
use tpm2_protocol::{TpmUnmarshal, TpmWriter};

use response::Reader;

pub use transport::{TpmTransport, TransportError};

/// Largest command or response this client exchanges (an RSA EK certificate chunk, a quote).
pub const BUFFER: usize = 2048;
/// NV_Read chunk: below every TPM's TPM_PT_NV_BUFFER_MAX (1024 is common; 512 is safe).
const NV_CHUNK: u16 = 512;
/// Largest EK certificate read (DER).
pub const MAX_EK_CERT: usize = attest_common::fingerprint::MAX_EK_DER;
/// TPM2B_PUBLIC of a key, marshalled.
pub const MAX_PUBLIC: usize = 400;
/// TPMS_ATTEST of a quote, marshalled.
pub const MAX_ATTEST: usize = 512;
/// TPMT_SIGNATURE, marshalled.
pub const MAX_SIGNATURE: usize = 300;

const TPM_RC_INITIALIZE: u32 = 0x100;
/// Sends of one command when the TPM keeps answering "retry".
const MAX_ATTEMPTS: u32 = 50;
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000b;
const TPM_RH_NULL: u32 = 0x4000_0007;
const TPM_RS_PW: u32 = 0x4000_0009;
const TPM_PT_MANUFACTURER: u32 = 0x105;
const TPM_CAP_TPM_PROPERTIES: u32 = 6;

pub use attest_common::tpm::ek::EkType;

/// The hash of an EK's policy sessions, as the TPM names it.
fn policy_hash(ek_type: EkType) -> TpmAlgId {
    match ek_type {
        EkType::EccP384 => TpmAlgId::Sha384,
        EkType::Rsa2048 => TpmAlgId::Sha256,
    }
}

/// What went wrong with a TPM command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TpmError {
    /// The command never got an answer.
    Transport(TransportError),
    /// The TPM answered with an error response code.
    Response { cc: u32, rc: u32 },
    /// The answer is not a well-formed response to this command.
    Malformed { cc: u32 },
    /// A value does not fit this client's fixed buffers.
    TooLarge,
}

impl core::fmt::Display for TpmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TpmError::Transport(e) => write!(f, "{e}"),
            TpmError::Response { cc, rc } => {
                write!(f, "TPM command {cc:#x} failed with response code {rc:#x}")
            }
            TpmError::Malformed { cc } => {
                write!(f, "the TPM's answer to command {cc:#x} is malformed")
            }
            TpmError::TooLarge => f.write_str("a TPM value does not fit the client's buffers"),
        }
    }
}

impl From<TransportError> for TpmError {
    fn from(e: TransportError) -> Self {
        TpmError::Transport(e)
    }
}

pub type Result<T> = core::result::Result<T, TpmError>;

/// A transient object the client created; flush it with [`Tpm::flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle(pub u32);

/// A key created from a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub handle: Handle,
    /// TPM2B_PUBLIC as the TPM returned it.
    pub public: Vec<u8, MAX_PUBLIC>,
    /// The TPM's Name for the key (nameAlg ‖ digest of the public area).
    pub name: Vec<u8, 66>,
}

/// A quote: TPMS_ATTEST and TPMT_SIGNATURE, marshalled, as the server expects them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub attest: Vec<u8, MAX_ATTEST>,
    pub signature: Vec<u8, MAX_SIGNATURE>,
}

/// PCRs of one bank to read or quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcrBank {
    /// TPM_ALG_ID of the bank's hash.
    pub hash_alg: u16,
    /// Bit i set: PCR i (0..24).
    pub mask: u32,
}

/// One PCR value read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrRead {
    pub hash_alg: u16,
    pub index: u8,
    pub value: Vec<u8, 64>,
}

fn malformed(cc: TpmCc) -> TpmError {
    TpmError::Malformed { cc: cc.value() }
}

/// Parses one value of a `tpm2-protocol` type from bytes this module wrote itself.
fn parse<T: TpmUnmarshal>(bytes: &[u8]) -> Result<T> {
    match T::unmarshal(bytes) {
        Ok((v, [])) => Ok(v),
        _ => Err(TpmError::TooLarge),
    }
}

fn password() -> TpmsAuthCommand {
    TpmsAuthCommand {
        session_handle: TpmHandle::new(TPM_RS_PW),
        ..Default::default()
    }
}

fn buffer<T: for<'a> TryFrom<&'a [u8]>>(bytes: &[u8]) -> Result<T> {
    T::try_from(bytes).map_err(|_| TpmError::TooLarge)
}

fn copy<const N: usize>(bytes: &[u8]) -> Result<Vec<u8, N>> {
    Vec::from_slice(bytes).map_err(|_| TpmError::TooLarge)
}

/// TPM2_Quote's response parameters (TPM2B_ATTEST's contents, TPMT_SIGNATURE).
fn quote_parameters(frame: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, mut p) = response::split(frame, 0)?;
    let attest = p.sized()?;
    let signature = p.rest();
    // TPMT_SIGNATURE: sigAlg, hash, then at least one sized buffer.
    (!attest.is_empty() && signature.len() >= 6).then_some((attest, signature))
}

/// TPML_PCR_SELECTION for the given banks.
fn pcr_selection(banks: &[PcrBank]) -> Result<TpmlPcrSelection> {
    let mut bytes: Vec<u8, 64> = Vec::new();
    let push =
        |b: &mut Vec<u8, 64>, s: &[u8]| b.extend_from_slice(s).map_err(|_| TpmError::TooLarge);
    push(&mut bytes, &(banks.len() as u32).to_be_bytes())?;
    for bank in banks {
        push(&mut bytes, &bank.hash_alg.to_be_bytes())?;
        push(&mut bytes, &[3])?;
        push(&mut bytes, &bank.mask.to_le_bytes()[..3])?;
    }
    parse(&bytes)
}

pub struct Tpm<T: TpmTransport> {
    transport: T,
    command: [u8; BUFFER],
    response: [u8; BUFFER],
}

impl<T: TpmTransport> Tpm<T> {
    pub fn new(transport: T) -> Tpm<T> {
        Tpm {
            transport,
            command: [0; BUFFER],
            response: [0; BUFFER],
        }
    }

    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Sends `command` and splits the successful answer into its `handles` handles and its
    /// parameters; `read` takes what the caller needs (`None`: malformed).
    fn call<C: TpmFrame, V>(
        &mut self,
        command: &C,
        sessions: &[TpmsAuthCommand],
        handles: usize,
        read: impl FnOnce(Reader<'_>, Reader<'_>) -> Option<V>,
    ) -> Result<V> {
        let cc = command.cc();
        let n = self.exchange(command, sessions)?;
        response::split(&self.response[..n], handles)
            .and_then(|(h, p)| read(h, p))
            .ok_or(malformed(cc))
    }

    /// Sends `command` (again while the TPM asks for it) and checks the response code;
    /// the response frame is left in `self.response`, its length returned.
    fn exchange<C: TpmFrame>(
        &mut self,
        command: &C,
        sessions: &[TpmsAuthCommand],
    ) -> Result<usize> {
        let cc = command.cc();
        let tag = if sessions.is_empty() {
            TpmSt::NoSessions
        } else {
            TpmSt::Sessions
        };
        let mut w = TpmWriter::new(&mut self.command);
        tpm_marshal_command(command, tag, sessions, &mut w).map_err(|_| TpmError::TooLarge)?;
        let len = w.len();
        let mut attempts = 0;
        let (n, rc) = loop {
            let n = self
                .transport
                .transmit(&self.command[..len], &mut self.response)?;
            let rc = response::check_header(&self.response[..n]).ok_or(malformed(cc))?;
            attempts += 1;
            // TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING: the TPM asks to send it again.
            if matches!(rc, 0x922 | 0x908 | 0x90a) && attempts < MAX_ATTEMPTS {
                continue;
            }
            break (n, rc);
        };
        if rc != 0 {
            return Err(TpmError::Response { cc: cc.value(), rc });
        }
        Ok(n)
    }

    /// Makes sure the TPM is started: firmware that ran before us usually sent
    /// TPM2_Startup; when it did not, the TPM answers TPM_RC_INITIALIZE and we send it.
    /// Returns whether this call started it.
    pub fn ensure_started(&mut self) -> Result<bool> {
        match self.manufacturer() {
            Ok(_) => Ok(false),
            Err(TpmError::Response { rc, .. }) if rc == TPM_RC_INITIALIZE => {
                self.exchange(
                    &TpmStartupCommand {
                        handles: [],
                        startup_type: TpmSu::Clear,
                    },
                    &[],
                )?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Fills `out` from the TPM's random number generator (the firmware has no other
    /// source of unpredictable bytes before the OS).
    pub fn get_random(&mut self, out: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < out.len() {
            let want = (out.len() - filled).min(32) as u16;
            let dest = &mut out[filled..];
            filled += self.call(
                &TpmGetRandomCommand {
                    handles: [],
                    bytes_requested: TpmUint16::new(want),
                },
                &[],
                0,
                |_, mut p| {
                    let got = p
                        .sized()
                        .filter(|g| !g.is_empty() && g.len() <= usize::from(want))?;
                    dest[..got.len()].copy_from_slice(got);
                    Some(got.len())
                },
            )?;
        }
        Ok(())
    }

    /// TPM_PT_MANUFACTURER (four ASCII characters, e.g. "IBM " for swtpm).
    pub fn manufacturer(&mut self) -> Result<u32> {
        self.call(
            &TpmGetCapabilityCommand {
                handles: [],
                cap: TpmCap::TpmProperties,
                property: TpmUint32::new(TPM_PT_MANUFACTURER),
                property_count: TpmUint32::new(1),
            },
            &[],
            0,
            |_, mut p| {
                // moreData, TPMS_CAPABILITY_DATA { TPM_CAP_TPM_PROPERTIES, TPML_TAGGED_TPM_PROPERTY }
                p.u8()?;
                (p.u32()? == TPM_CAP_TPM_PROPERTIES).then_some(())?;
                let count = p.u32()?;
                for _ in 0..count.min(64) {
                    let (property, value) = (p.u32()?, p.u32()?);
                    if property == TPM_PT_MANUFACTURER {
                        return Some(value);
                    }
                }
                None
            },
        )
    }

    /// The size of an NV index's data; `None` when the index is not defined.
    pub fn nv_size(&mut self, index: u32) -> Result<Option<u16>> {
        let r = self.call(
            &TpmNvReadPublicCommand {
                handles: [TpmHandle::new(index)],
            },
            &[],
            0,
            |_, mut p| {
                // TPM2B_NV_PUBLIC { nvIndex, nameAlg, attributes, authPolicy, dataSize }
                let mut public = Reader(p.sized()?);
                (public.u32()? == index).then_some(())?;
                public.u16()?;
                public.u32()?;
                public.sized()?;
                public.u16()
            },
        );
        match r {
            Ok(size) => Ok(Some(size)),
            // TPM_RC_HANDLE (for handle 1): the index is not defined.
            Err(TpmError::Response { rc, .. }) if rc & 0xbf == 0x8b => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads `out.len()` bytes of an NV index, in chunks, with the index's own (empty)
    /// authorization.
    pub fn nv_read(&mut self, index: u32, out: &mut [u8]) -> Result<()> {
        let mut at = 0;
        while at < out.len() {
            let size = (out.len() - at).min(usize::from(NV_CHUNK)) as u16;
            let dest = &mut out[at..];
            at += self.call(
                &TpmNvReadCommand {
                    handles: [TpmHandle::new(index), TpmHandle::new(index)],
                    size: TpmUint16::new(size),
                    offset: TpmUint16::new(at as u16),
                },
                &[password()],
                0,
                |_, mut p| {
                    let data = p
                        .sized()
                        .filter(|d| !d.is_empty() && d.len() <= usize::from(size))?;
                    dest[..data.len()].copy_from_slice(data);
                    Some(data.len())
                },
            )?;
        }
        Ok(())
    }

    /// The EK certificate (DER, without the NV index's padding) for `ek_type`, written to
    /// `out`; `None` when the TPM has none.
    pub fn ek_cert(
        &mut self,
        ek_type: EkType,
        out: &mut [u8; MAX_EK_CERT],
    ) -> Result<Option<usize>> {
        let index = ek_type.cert_nv_index();
        let Some(size) = self.nv_size(index)? else {
            return Ok(None);
        };
        let size = usize::from(size);
        if size > out.len() {
            return Err(TpmError::TooLarge);
        }
        self.nv_read(index, &mut out[..size])?;
        let len =
            attest_common::der::object_len(&out[..size]).map_err(|_| TpmError::Malformed {
                cc: TpmCc::NvRead.value(),
            })?;
        Ok(Some(len))
    }

    /// TPM2_CreatePrimary in the endorsement hierarchy (empty authorization) from a
    /// TPMT_PUBLIC template.
    pub fn create_primary(&mut self, template: &[u8]) -> Result<Key> {
        let public: TpmtPublic = parse(template)?;
        let (handle, public, name) = self.call(
            &TpmCreatePrimaryCommand {
                handles: [TpmHandle::new(TPM_RH_ENDORSEMENT)],
                in_sensitive: Tpm2bSensitiveCreate::default(),
                in_public: Tpm2bPublic { inner: public },
                outside_info: Tpm2bData::default(),
                creation_pcr: TpmlPcrSelection::default(),
            },
            &[password()],
            1,
            |mut h, mut p| {
                // outPublic, creationData, creationHash, creationTicket, name
                let public = p.sized_raw().filter(|b| b.len() > 2)?;
                p.sized()?;
                p.sized()?;
                p.u16()?;
                p.u32()?;
                p.sized()?;
                let name = p.sized().filter(|n| n.len() > 2)?;
                Some((h.u32()?, copy(public), copy(name)))
            },
        )?;
        Ok(Key {
            handle: Handle(handle),
            public: public?,
            name: name?,
        })
    }

    /// The EK of `ek_type`, recreated from its TCG template.
    pub fn create_ek(&mut self, ek_type: EkType) -> Result<Key> {
        self.create_primary(template::ek(ek_type))
    }

    /// The AK: a primary restricted P-384 signing key (the same key at every boot).
    pub fn create_ak(&mut self) -> Result<Key> {
        self.create_primary(&template::AK_P384)
    }

    pub fn flush(&mut self, handle: Handle) -> Result<()> {
        self.exchange(
            &TpmFlushContextCommand {
                handles: [],
                flush_handle: TpmHandle::new(handle.0),
            },
            &[],
        )?;
        Ok(())
    }

    /// A policy session that satisfies the EK's authPolicy: PolicySecret(endorsement), and
    /// for the P-384 EK PolicyOR(PolicyA, PolicyC).
    fn ek_policy_session(&mut self, ek_type: EkType) -> Result<Handle> {
        let hash = policy_hash(ek_type);
        let nonce_len = if hash == TpmAlgId::Sha384 { 48 } else { 32 };
        let session = Handle(self.call(
            &TpmStartAuthSessionCommand {
                handles: [TpmHandle::new(TPM_RH_NULL), TpmHandle::new(TPM_RH_NULL)],
                nonce_caller: buffer::<Tpm2bNonce>(&[0x5a; 48][..nonce_len])?,
                encrypted_salt: Tpm2bEncryptedSecret::default(),
                session_type: TpmSe::Policy,
                symmetric: parse::<TpmtSymDefObject>(&0x0010u16.to_be_bytes())?,
                auth_hash: hash,
            },
            &[],
            1,
            |mut h, _| h.u32(),
        )?);
        let result = self.satisfy_ek_policy(session, ek_type);
        if result.is_err() {
            let _ = self.flush(session);
        }
        result.map(|()| session)
    }

    fn satisfy_ek_policy(&mut self, session: Handle, ek_type: EkType) -> Result<()> {
        self.exchange(
            &TpmPolicySecretCommand {
                handles: [
                    TpmHandle::new(TPM_RH_ENDORSEMENT),
                    TpmHandle::new(session.0),
                ],
                nonce_tpm: Tpm2bNonce::default(),
                cp_hash_a: Tpm2bDigest::default(),
                policy_ref: Tpm2bNonce::default(),
                expiration: parse(&[0; 4])?,
            },
            &[password()],
        )?;
        if ek_type == EkType::EccP384 {
            let mut list: Vec<u8, 112> = Vec::new();
            let _ = list.extend_from_slice(&2u32.to_be_bytes());
            for d in [
                &attest_common::tpm::ek::POLICY_A_SHA384,
                &attest_common::tpm::ek::POLICY_C_SHA384,
            ] {
                let _ = list.extend_from_slice(&48u16.to_be_bytes());
                let _ = list.extend_from_slice(d);
            }
            self.exchange(
                &TpmPolicyOrCommand {
                    handles: [TpmHandle::new(session.0)],
                    p_hash_list: parse::<TpmlDigest>(&list)?,
                },
                &[],
            )?;
        }
        Ok(())
    }

    /// TPM2_ActivateCredential: recovers the secret the server's MakeCredential bound to
    /// `ak`'s Name and `ek`. `credential_blob` and `encrypted_secret` are the TPM2B forms
    /// the server sends.
    pub fn activate_credential(
        &mut self,
        ak: &Key,
        ek: &Key,
        ek_type: EkType,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8, 64>> {
        let blob: Tpm2bIdObject = parse(credential_blob)?;
        let secret: Tpm2bEncryptedSecret = parse(encrypted_secret)?;
        let session = self.ek_policy_session(ek_type)?;
        let policy = TpmsAuthCommand {
            session_handle: TpmHandle::new(session.0),
            ..Default::default()
        };
        let r = self.call(
            &TpmActivateCredentialCommand {
                handles: [TpmHandle::new(ak.handle.0), TpmHandle::new(ek.handle.0)],
                credential_blob: blob,
                secret,
            },
            &[password(), policy],
            0,
            |_, mut p| Some(copy(p.sized()?)),
        );
        // Without continueSession the TPM ends the session with the command; after a
        // failure it may still be loaded.
        if r.is_err() {
            let _ = self.flush(session);
        }
        r?
    }

    /// TPM2_PCR_Read of every selected PCR (the TPM answers at most 8 per call).
    pub fn pcr_read<const N: usize>(&mut self, banks: &[PcrBank]) -> Result<Vec<PcrRead, N>> {
        let mut out = Vec::new();
        for bank in banks {
            let mut remaining = bank.mask & 0x00ff_ffff;
            while remaining != 0 {
                let cc = TpmCc::PcrRead;
                let n = self.exchange(
                    &TpmPcrReadCommand {
                        handles: [],
                        pcr_selection_in: pcr_selection(&[PcrBank {
                            hash_alg: bank.hash_alg,
                            mask: remaining,
                        }])?,
                    },
                    &[],
                )?;
                let (_, mut p) = response::split(&self.response[..n], 0).ok_or(malformed(cc))?;
                // pcrUpdateCounter, TPML_PCR_SELECTION (the PCRs read), TPML_DIGEST (values)
                let mut returned = 0u32;
                let mut read_selection = || -> Option<()> {
                    p.u32()?;
                    for _ in 0..p.u32()? {
                        (p.u16()? == bank.hash_alg).then_some(())?;
                        let select = p.sized_u8()?;
                        for (i, byte) in select.iter().enumerate().take(3) {
                            returned |= u32::from(*byte) << (8 * i);
                        }
                    }
                    Some(())
                };
                read_selection().ok_or(malformed(cc))?;
                if returned == 0 || returned & !remaining != 0 {
                    return Err(malformed(cc));
                }
                let count = p.u32().ok_or(malformed(cc))?;
                if count != returned.count_ones() {
                    return Err(malformed(cc));
                }
                for index in 0..24u8 {
                    if returned & (1 << index) != 0 {
                        let value = p.sized().ok_or(malformed(cc))?;
                        out.push(PcrRead {
                            hash_alg: bank.hash_alg,
                            index,
                            value: copy(value)?,
                        })
                        .map_err(|_| TpmError::TooLarge)?;
                    }
                }
                remaining &= !returned;
            }
        }
        Ok(out)
    }

    /// TPM2_Quote with the AK's own scheme over `banks`, `nonce` as qualifying data.
    pub fn quote(&mut self, ak: &Key, nonce: &[u8], banks: &[PcrBank]) -> Result<Quote> {
        let n = self.exchange(
            &TpmQuoteCommand {
                handles: [TpmHandle::new(ak.handle.0)],
                qualifying_data: buffer::<Tpm2bData>(nonce)?,
                in_scheme: TpmtSigScheme::default(),
                pcr_select: pcr_selection(banks)?,
            },
            &[password()],
        )?;
        // The quote goes to the server as bytes, which parses and verifies it: cut the two
        // parameters out of the frame instead of unmarshalling TPMS_ATTEST's large union
        // (12 KiB of stack in tpm2-protocol's types).
        let (attest, signature) =
            quote_parameters(&self.response[..n]).ok_or(TpmError::Malformed {
                cc: TpmCc::Quote.value(),
            })?;
        Ok(Quote {
            attest: Vec::from_slice(attest).map_err(|_| TpmError::TooLarge)?,
            signature: Vec::from_slice(signature).map_err(|_| TpmError::TooLarge)?,
        })
    }
}
