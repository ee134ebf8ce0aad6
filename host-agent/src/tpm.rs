//! The agent's view of its TPM, through tss-esapi (TCTI: `/dev/tpmrm0`, swtpm, ...).
//!
//! An EK is identified by its certificate when the manufacturer stored one (TCG EK
//! Credential Profile NV indices), else by its public key, recreated from the TCG template
//! (the TPM derives the same key from its endorsement seed every time).

use std::str::FromStr;

use anyhow::{Context as _, Result, anyhow, bail};
use attest_common::EkSource;
use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ek, nv};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::Public;
use tss_esapi::tcti_ldr::TctiNameConf;

/// The EK key types the system uses, preferred first (CNSA: P-384).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EkType {
    #[value(name = "ecc-p384")]
    EccP384,
    #[value(name = "rsa-2048")]
    Rsa2048,
}

impl EkType {
    pub const PREFERENCE: [EkType; 2] = [EkType::EccP384, EkType::Rsa2048];

    /// NV index of the EK certificate (TCG EK Credential Profile 2.5, §2.2.1.4–5).
    pub fn cert_nv_index(self) -> u32 {
        match self {
            EkType::EccP384 => 0x01c0_0016,
            EkType::Rsa2048 => 0x01c0_0002,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EkType::EccP384 => "ecc-p384",
            EkType::Rsa2048 => "rsa-2048",
        }
    }

    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            EkType::EccP384 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
            EkType::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        }
    }
}

/// The EK material that names this TPM.
#[derive(Debug, Clone)]
pub struct EkIdentity {
    pub ek_type: EkType,
    pub source: EkSource,
    /// Certificate DER (source `cert`) or SubjectPublicKeyInfo DER (source `pub`).
    pub der: Vec<u8>,
    /// Where the certificate was read from (source `cert`).
    pub nv_index: Option<u32>,
}

pub struct Tpm {
    ctx: Context,
}

impl Tpm {
    /// Opens the TPM named by a TCTI string (`device:/dev/tpmrm0`,
    /// `swtpm:host=127.0.0.1,port=2321`, ...).
    pub fn open(tcti: &str) -> Result<Tpm> {
        let conf = TctiNameConf::from_str(tcti)
            .with_context(|| format!("invalid TCTI '{tcti}' (e.g. device:/dev/tpmrm0)"))?;
        let ctx =
            Context::new(conf).with_context(|| format!("cannot open TPM via TCTI '{tcti}'"))?;
        Ok(Tpm { ctx })
    }

    /// Whether an NV index is defined.
    fn nv_defined(&mut self, index: u32) -> Result<bool> {
        let list = nv::list(&mut self.ctx).context("listing NV indices")?;
        Ok(list
            .iter()
            .any(|(public, _)| u32::from(public.nv_index()) == index))
    }

    /// The EK certificate DER for `ek_type`, without the NV index's padding; `None` when the
    /// TPM has no certificate for that key type.
    pub fn ek_cert(&mut self, ek_type: EkType) -> Result<Option<Vec<u8>>> {
        let index = ek_type.cert_nv_index();
        if !self.nv_defined(index)? {
            return Ok(None);
        }
        let mut nv = ek::retrieve_ek_pubcert(&mut self.ctx, ek_type.selection())
            .with_context(|| format!("reading the EK certificate at NV {index:#010x}"))?;
        let len = attest_common::der::object_len(&nv)
            .map_err(|e| anyhow!("NV {index:#010x} does not hold a DER certificate ({e})"))?;
        nv.truncate(len);
        Ok(Some(nv))
    }

    /// The EK public key for `ek_type` as DER SubjectPublicKeyInfo, from the TCG template.
    pub fn ek_public_spki(&mut self, ek_type: EkType) -> Result<Vec<u8>> {
        let handle = ek::create_ek_object_2(&mut self.ctx, ek_type.selection(), None)
            .with_context(|| format!("creating the {} EK from its template", ek_type.name()))?;
        let public = self.ctx.read_public(handle).map(|(public, _, _)| public);
        self.ctx
            .flush_context(handle.into())
            .context("flushing the EK")?;
        spki_der(&public.context("reading the EK public area")?)
    }

    /// The EK that names this TPM: the first of `types` with a certificate; else the public
    /// key of the first type.
    pub fn ek_identity(&mut self, types: &[EkType]) -> Result<EkIdentity> {
        for &ek_type in types {
            if let Some(der) = self.ek_cert(ek_type)? {
                return Ok(EkIdentity {
                    ek_type,
                    source: EkSource::Cert,
                    der,
                    nv_index: Some(ek_type.cert_nv_index()),
                });
            }
        }
        let ek_type = *types.first().ok_or_else(|| anyhow!("no EK type given"))?;
        Ok(EkIdentity {
            ek_type,
            source: EkSource::Pub,
            der: self.ek_public_spki(ek_type)?,
            nv_index: None,
        })
    }
}

/// DER SubjectPublicKeyInfo of an ECC P-384 or RSA TPM public area.
pub fn spki_der(public: &Public) -> Result<Vec<u8>> {
    match public {
        Public::Ecc { unique, .. } => {
            let mut sec1 = vec![0x04];
            sec1.extend_from_slice(unique.x().value());
            sec1.extend_from_slice(unique.y().value());
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| anyhow!("the EK is not a P-384 point"))?;
            Ok(attest_common::nonce::verifying_key_to_spki(&key).to_vec())
        }
        Public::Rsa {
            parameters, unique, ..
        } => {
            let exponent = match parameters.exponent().value() {
                0 => 65_537,
                e => e,
            };
            Ok(rsa_spki_der(unique.value(), exponent))
        }
        _ => bail!("the EK is neither an ECC nor an RSA key"),
    }
}

fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// A positive DER INTEGER from big-endian magnitude bytes.
fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len().saturating_sub(1));
    let mut v = Vec::new();
    if magnitude.get(start).is_some_and(|b| b & 0x80 != 0) {
        v.push(0);
    }
    v.extend_from_slice(&magnitude[start..]);
    der_tlv(attest_common::der::INTEGER, &v)
}

/// `SubjectPublicKeyInfo { rsaEncryption NULL, RSAPublicKey { n, e } }`.
pub fn rsa_spki_der(modulus: &[u8], exponent: u32) -> Vec<u8> {
    const RSA_ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut key = der_uint(modulus);
    key.extend(der_uint(&exponent.to_be_bytes()));
    let mut bits = vec![0u8];
    bits.extend(der_tlv(attest_common::der::SEQUENCE, &key));
    let mut body = RSA_ALGORITHM.to_vec();
    body.extend(der_tlv(attest_common::der::BIT_STRING, &bits));
    der_tlv(attest_common::der::SEQUENCE, &body)
}
