//! TPMS_ATTEST of a quote: what the TPM says it measured, and for whom.

use heapless::Vec;
use tpm2_protocol::TpmUnmarshal;
use tpm2_protocol::data::{TpmSt, TpmsAttest, TpmuAttest};

use super::hash::{HashAlg, MAX_DIGEST};
use super::public::{MAX_NAME, Name};

/// Most PCR banks in one selection (TPML_PCR_SELECTION allows 8; we use at most 4).
pub const MAX_BANKS: usize = 4;
/// Largest qualifying data (a nonce): TPM2B_DATA holds up to a digest.
pub const MAX_EXTRA_DATA: usize = MAX_DIGEST;

/// PCRs selected in one bank, as a bit mask over indices 0–23.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BankSelection {
    pub hash: HashAlg,
    pub mask: u32,
}

impl BankSelection {
    /// Selected indices, ascending (the order the TPM hashes them in).
    pub fn indices(&self) -> impl Iterator<Item = u8> + '_ {
        (0u8..32).filter(|i| self.mask & (1 << i) != 0)
    }
}

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// A parsed quote (TPMS_ATTEST with type TPM_ST_ATTEST_QUOTE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    pub qualified_signer: Name,
    /// The qualifying data: our nonce.
    pub extra_data: Vec<u8, MAX_EXTRA_DATA>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    pub pcr_selection: Vec<BankSelection, MAX_BANKS>,
    pub pcr_digest: Vec<u8, MAX_DIGEST>,
}

/// Why a TPMS_ATTEST was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestError {
    /// Does not start with TPM_GENERATED_VALUE: not produced by a TPM.
    BadMagic,
    /// A TPMS_ATTEST of another type (certify, time, ...).
    NotAQuote,
    Malformed(tpm2_protocol::TpmError),
    TrailingBytes,
    /// A PCR bank with SHA-1 or an unknown hash, more banks than we accept, or a PCR
    /// index above 31.
    UnsupportedSelection,
}

impl core::fmt::Display for AttestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AttestError::BadMagic => {
                f.write_str("not TPM-generated (magic is not TPM_GENERATED_VALUE)")
            }
            AttestError::NotAQuote => f.write_str("attestation is not a quote"),
            AttestError::Malformed(e) => write!(f, "malformed TPMS_ATTEST: {e:?}"),
            AttestError::TrailingBytes => f.write_str("bytes after the TPMS_ATTEST"),
            AttestError::UnsupportedSelection => f.write_str("unsupported PCR selection"),
        }
    }
}

impl core::error::Error for AttestError {}

impl QuoteInfo {
    /// Parses a TPMS_ATTEST and requires it to be a quote.
    pub fn parse(bytes: &[u8]) -> Result<QuoteInfo, AttestError> {
        let (attest, rest) = TpmsAttest::unmarshal(bytes).map_err(|e| match e {
            tpm2_protocol::TpmError::InvalidMagicNumber { .. } => AttestError::BadMagic,
            e => AttestError::Malformed(e),
        })?;
        if !rest.is_empty() {
            return Err(AttestError::TrailingBytes);
        }
        if attest.attest_type != TpmSt::AttestQuote {
            return Err(AttestError::NotAQuote);
        }
        let TpmuAttest::Quote(quote) = &attest.attested else {
            return Err(AttestError::NotAQuote);
        };
        let mut pcr_selection = Vec::new();
        for sel in quote.pcr_select.iter() {
            let hash = match HashAlg::from_tpm(sel.hash.value()) {
                Some(HashAlg::Sha1) | None => return Err(AttestError::UnsupportedSelection),
                Some(h) => h,
            };
            let bytes: &[u8] = &sel.pcr_select;
            if bytes.len() > 4 {
                return Err(AttestError::UnsupportedSelection);
            }
            let mask = bytes
                .iter()
                .enumerate()
                .fold(0u32, |m, (i, b)| m | (u32::from(*b) << (8 * i)));
            pcr_selection
                .push(BankSelection { hash, mask })
                .map_err(|_| AttestError::UnsupportedSelection)?;
        }
        let too_long = |_| {
            AttestError::Malformed(tpm2_protocol::TpmError::BufferOverflow {
                offset: 0,
                needed: MAX_NAME,
                available: MAX_NAME,
            })
        };
        Ok(QuoteInfo {
            qualified_signer: Vec::from_slice(&attest.qualified_signer).map_err(too_long)?,
            extra_data: Vec::from_slice(&attest.extra_data).map_err(too_long)?,
            clock_info: ClockInfo {
                clock: attest.clock_info.clock.value(),
                reset_count: attest.clock_info.reset_count.value(),
                restart_count: attest.clock_info.restart_count.value(),
                safe: bool::from(attest.clock_info.safe),
            },
            firmware_version: attest.firmware_version.value(),
            pcr_selection,
            pcr_digest: Vec::from_slice(&quote.pcr_digest).map_err(too_long)?,
        })
    }
}
