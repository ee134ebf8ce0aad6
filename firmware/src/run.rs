//! The one loop that connects the [`Agent`] to a TPM and a link. The bare-metal image calls
//! it with TIS MMIO and a UART; host tests call it with swtpm's TCP port and a socket, so
//! what the tests exercise is what boots.

use attest_common::nonce::NONCE_LEN;
use attest_common::wire::{MAX_CREDENTIAL_BLOB, MAX_ENCRYPTED_SECRET};

use attest_common::frame::max_encoded_len;

use crate::agent::{Agent, AgentError, Evidence, Identity, MAX_RESPONSE, Mode, Outcome, Poll};
use crate::tpm::{EkType, Key, MAX_EK_CERT, PcrRead, Tpm, TpmError, TpmTransport};

/// The byte stream to the relay.
pub trait Link {
    fn send(&mut self, bytes: &[u8]) -> Result<(), LinkError>;
    /// Bytes that arrived, waiting at most the link's own patience; `Ok(0)` means none
    /// came in that time.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, LinkError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkError;

/// What the platform knows about itself (SMBIOS on a PC).
#[derive(Debug, Default, Clone, Copy)]
pub struct Platform<'a> {
    pub hw_uuid: Option<&'a str>,
    pub hw_serial: Option<&'a str>,
    pub hw_product: Option<&'a str>,
    /// Unix time, when the platform has a clock.
    pub now: Option<u64>,
}

/// Silent periods on the link, in all, while one answer is awaited, before the agent is told
/// of a timeout. With a link that waits ~100 ms per `recv`, 50 makes five seconds.
pub const QUIET_POLLS: u32 = 50;

/// Bytes the link may deliver while one answer is awaited (four of the largest answer's
/// frames) before the wait ends as a timeout: a chattering line or relay cannot keep the
/// agent waiting, however fast it talks.
pub const MAX_BYTES_PER_WAIT: usize = 4 * max_encoded_len(MAX_RESPONSE);

/// One boot: identity from the TPM, then the agent's flow to its end. The agent is the
/// caller's (static storage on small targets).
pub fn boot<T: TpmTransport, L: Link>(
    agent: &mut Agent,
    tpm: &mut Tpm<T>,
    link: &mut L,
    mode: Mode,
    platform: &Platform<'_>,
    server_key: Option<&[u8]>,
) -> Outcome {
    match boot_inner(agent, tpm, link, mode, platform, server_key) {
        Ok(o) => o,
        Err(e) => Outcome::Failed(e),
    }
}

fn boot_inner<T: TpmTransport, L: Link>(
    agent: &mut Agent,
    tpm: &mut Tpm<T>,
    link: &mut L,
    mode: Mode,
    platform: &Platform<'_>,
    server_key: Option<&[u8]>,
) -> Result<Outcome, AgentError> {
    let (ek_type, ak) = start(agent, tpm, mode, platform, server_key)?;
    let outcome = drive(agent, tpm, ek_type, &ak, link);
    // Transient objects must not outlive the boot (the TPM has three slots).
    let _ = tpm.flush(ak.handle);
    Ok(outcome)
}

/// Reads the identity and starts the agent. Not inlined: the certificate buffer is gone
/// from the stack before the flow (and its deepest TPM calls) begins.
#[inline(never)]
fn start<T: TpmTransport>(
    agent: &mut Agent,
    tpm: &mut Tpm<T>,
    mode: Mode,
    platform: &Platform<'_>,
    server_key: Option<&[u8]>,
) -> Result<(EkType, Key), AgentError> {
    let t = AgentError::Tpm;
    tpm.ensure_started().map_err(t)?;
    let mut cert = [0u8; MAX_EK_CERT];
    let mut found = None;
    for ek_type in EkType::PREFERENCE {
        if let Some(len) = tpm.ek_cert(ek_type, &mut cert).map_err(t)? {
            found = Some((ek_type, len));
            break;
        }
    }
    let (ek_type, len) = found.ok_or(AgentError::BadEkCertificate)?;
    let ak = tpm.create_ak().map_err(t)?;
    let mut nonce = [0u8; NONCE_LEN];
    tpm.get_random(&mut nonce).map_err(t)?;
    let identity = Identity {
        ek_cert: &cert[..len],
        ak_public: &ak.public,
        hw_uuid: platform.hw_uuid,
        hw_serial: platform.hw_serial,
        hw_product: platform.hw_product,
    };
    agent.begin(mode, &identity, server_key, nonce, platform.now);
    Ok((ek_type, ak))
}

/// Runs the agent until it is done. Every wait on the link is bounded: by silent polls
/// ([`QUIET_POLLS`]) and by bytes heard ([`MAX_BYTES_PER_WAIT`]), neither reset by what
/// arrives until the next request is sent.
pub fn drive<T: TpmTransport, L: Link>(
    agent: &mut Agent,
    tpm: &mut Tpm<T>,
    ek_type: EkType,
    ak: &Key,
    link: &mut L,
) -> Outcome {
    let mut buf = [0u8; 256];
    let (mut quiet, mut heard) = (0u32, 0usize);
    loop {
        match agent.poll() {
            Poll::Transmit(bytes) => {
                if link.send(bytes).is_err() {
                    return Outcome::Failed(AgentError::NoAnswer);
                }
                (quiet, heard) = (0, 0);
            }
            Poll::Receive => match link.recv(&mut buf) {
                Ok(n) => {
                    if n == 0 {
                        quiet += 1;
                    } else {
                        heard += n;
                        agent.received(&buf[..n.min(buf.len())]);
                    }
                    if quiet >= QUIET_POLLS || heard > MAX_BYTES_PER_WAIT {
                        (quiet, heard) = (0, 0);
                        agent.timed_out();
                    }
                }
                Err(_) => return Outcome::Failed(AgentError::NoAnswer),
            },
            Poll::Activate {
                credential_blob,
                encrypted_secret,
            } => {
                let blob = copy::<{ MAX_CREDENTIAL_BLOB }>(credential_blob);
                let secret = copy::<{ MAX_ENCRYPTED_SECRET }>(encrypted_secret);
                let result = activate(tpm, ek_type, ak, &blob, &secret);
                agent.activated(result.as_ref().map(|s| s.as_slice()).map_err(|e| *e));
            }
            Poll::Quote { nonce, banks } => {
                // The qualifying data (SHA-384): `attest_common::binding`.
                let nonce = copy::<48>(nonce);
                let banks = heapless::Vec::<_, 4>::from_slice(banks);
                let Ok(banks) = banks else {
                    agent.quoted(Err(TpmError::TooLarge));
                    continue;
                };
                let pcrs = tpm.pcr_read::<48>(&banks);
                let quote = pcrs.and_then(|pcrs| tpm.quote(ak, &nonce, &banks).map(|q| (pcrs, q)));
                match &quote {
                    Ok((pcrs, q)) => agent.quoted(Ok(Evidence {
                        attest: &q.attest,
                        signature: &q.signature,
                        pcrs: pcrs.as_slice() as &[PcrRead],
                        ak_public: &ak.public,
                    })),
                    Err(e) => agent.quoted(Err(*e)),
                }
            }
            Poll::Done(outcome) => return outcome.clone(),
        }
    }
}

/// The agent's buffers are borrowed while the TPM works: copy what it asked for (the
/// sizes are the wire fields' bounds, so nothing is cut).
fn copy<const N: usize>(bytes: &[u8]) -> heapless::Vec<u8, N> {
    heapless::Vec::from_slice(&bytes[..bytes.len().min(N)]).unwrap_or_default()
}

fn activate<T: TpmTransport>(
    tpm: &mut Tpm<T>,
    ek_type: EkType,
    ak: &Key,
    blob: &[u8],
    secret: &[u8],
) -> Result<heapless::Vec<u8, 64>, TpmError> {
    let ek = tpm.create_ek(ek_type)?;
    let result = tpm.activate_credential(ak, &ek, ek_type, blob, secret);
    let _ = tpm.flush(ek.handle);
    result
}
