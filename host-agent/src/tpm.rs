//! The agent's view of its TPM, through tss-esapi (TCTI: `/dev/tpmrm0`, swtpm, ...).
//!
//! An EK is identified by its certificate when the manufacturer stored one (TCG EK
//! Credential Profile NV indices), else by its public key, recreated from the TCG template
//! (the TPM derives the same key from its endorsement seed every time): the server gets its
//! public area (TPM2B_PUBLIC, checked against the template) and the fingerprint is that of
//! its key's SubjectPublicKeyInfo.

use std::str::FromStr;

use anyhow::{Context as _, Result, anyhow, bail};
use attest_common::EkSource;
use attest_common::wire::{HashAlg, HexVec, PcrBank, PcrValue};
use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ak, ek, nv, pcr};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, DigestList, EncryptedSecret, IdObject, PcrSelectionListBuilder, PcrSlot, Public,
    SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;

pub use attest_common::tpm::ek::EkType;
use attest_common::tpm::ek::{POLICY_A_SHA384, POLICY_C_SHA384};
use attest_common::tpm::ek_template::check_ek_public;

/// The EK's key type as tss-esapi's EK helpers select it.
fn selection(ek_type: EkType) -> AsymmetricAlgorithmSelection {
    match ek_type {
        EkType::EccP384 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
        EkType::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
    }
}

/// The AK key types, as the server names them (`ITL_AK_ALGORITHMS`, DESIGN.md §3.2): P-384
/// with ECDSA-SHA384 (the default, CNSA; the only one a server takes unless configured),
/// P-256 with ECDSA-SHA256, RSA-2048 with RSASSA-SHA384. Each is named with its signing
/// hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AkType {
    #[value(name = "ecc-p384")]
    EccP384,
    #[value(name = "ecc-p256")]
    EccP256,
    #[value(name = "rsa-2048")]
    Rsa2048,
}

impl AkType {
    /// The name the server's `ITL_AK_ALGORITHMS` uses.
    pub fn name(self) -> &'static str {
        match self {
            AkType::EccP384 => "ecc-p384",
            AkType::EccP256 => "ecc-p256",
            AkType::Rsa2048 => "rsa-2048",
        }
    }
}

/// A loaded attestation key.
#[derive(Debug)]
pub struct Ak {
    pub handle: KeyHandle,
    /// TPM2B_PUBLIC, as sent to the server.
    pub public_tpm2b: Vec<u8>,
    /// TPM2B_PRIVATE: the key wrapped by the EK, only usable in this TPM; kept so that the
    /// same AK can be loaded again (its credential activation stays valid).
    pub private_tpm2b: Vec<u8>,
    /// The TPM's Name of the AK.
    pub name: Vec<u8>,
}

/// Removes a TPM2B size prefix, checking it.
fn tpm2b_body(bytes: &[u8]) -> Result<&[u8]> {
    match bytes {
        [hi, lo, body @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == body.len() => {
            Ok(body)
        }
        _ => bail!("not a TPM2B structure (size prefix does not match)"),
    }
}

/// TPM2B form of a marshalled structure.
fn tpm2b(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn tss_hash(alg: HashAlg) -> Result<HashingAlgorithm> {
    Ok(match alg {
        HashAlg::Sha1 => bail!("SHA-1 PCR banks are not used"),
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
    })
}

/// The EK material that names this TPM.
#[derive(Debug, Clone)]
pub struct EkIdentity {
    pub ek_type: EkType,
    pub source: EkSource,
    /// Certificate DER (source `cert`) or SubjectPublicKeyInfo DER (source `pub`): what the
    /// fingerprint is computed over.
    pub der: Vec<u8>,
    /// The EK's TPM2B_PUBLIC (source `pub`): what the server is sent as `ek_public`.
    pub public: Option<Vec<u8>>,
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
        let mut nv = ek::retrieve_ek_pubcert(&mut self.ctx, selection(ek_type))
            .with_context(|| format!("reading the EK certificate at NV {index:#010x}"))?;
        let len = attest_common::der::object_len(&nv)
            .map_err(|e| anyhow!("NV {index:#010x} does not hold a DER certificate ({e})"))?;
        nv.truncate(len);
        Ok(Some(nv))
    }

    /// The EK of `ek_type`, made from its TCG template: its public area (TPM2B_PUBLIC,
    /// checked against the template as the server checks it) and its key's DER
    /// SubjectPublicKeyInfo.
    pub fn ek_public(&mut self, ek_type: EkType) -> Result<(Vec<u8>, Vec<u8>)> {
        let handle = self.ek(ek_type)?;
        let area = self.public_area(handle);
        self.ctx
            .flush_context(handle.into())
            .context("flushing the EK")?;
        let public = tpm2b(&area.context("reading the EK public area")?.0);
        let ek = check_ek_public(&public)
            .map_err(|e| anyhow!("the TPM's {ek_type} EK is not the TCG template's: {e}"))?;
        if ek.ek_type != ek_type {
            bail!("the TPM made a {} EK for {ek_type}", ek.ek_type);
        }
        Ok((public, ek.spki().to_vec()))
    }

    /// Creates the EK of `ek_type` from its TCG template and returns its handle.
    pub fn ek(&mut self, ek_type: EkType) -> Result<KeyHandle> {
        ek::create_ek_object_2(&mut self.ctx, selection(ek_type), None)
            .with_context(|| format!("creating the {} EK from its template", ek_type.name()))
    }

    /// The TPMT_PUBLIC of a loaded object, marshalled, and the TPM's Name for it.
    pub fn public_area(&mut self, handle: KeyHandle) -> Result<(Vec<u8>, Vec<u8>)> {
        let (public, name, _) = self
            .ctx
            .read_public(handle)
            .context("reading a public area")?;
        Ok((public.marshall()?, name.value().to_vec()))
    }

    /// Creates an AK under the EK (restricted signing key, with the EK's policy session)
    /// and loads it.
    pub fn create_ak(&mut self, ek: KeyHandle, ak_type: AkType) -> Result<Ak> {
        let (hash, key, scheme) = match ak_type {
            AkType::EccP384 => (
                HashingAlgorithm::Sha384,
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
                SignatureSchemeAlgorithm::EcDsa,
            ),
            AkType::EccP256 => (
                HashingAlgorithm::Sha256,
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                SignatureSchemeAlgorithm::EcDsa,
            ),
            AkType::Rsa2048 => (
                HashingAlgorithm::Sha384,
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                SignatureSchemeAlgorithm::RsaSsa,
            ),
        };
        let created = ak::create_ak_2(&mut self.ctx, ek, hash, key, scheme, None, None)
            .context("creating the AK under the EK")?;
        let private_tpm2b = tpm2b(created.out_private.value());
        self.load_ak_parts(ek, created.out_private, created.out_public, private_tpm2b)
    }

    /// Loads an AK made by [`Tpm::create_ak`] under the same EK from its saved blobs.
    pub fn load_ak(
        &mut self,
        ek: KeyHandle,
        public_tpm2b: &[u8],
        private_tpm2b: &[u8],
    ) -> Result<Ak> {
        use tss_esapi::traits::UnMarshall;
        let public = Public::unmarshall(tpm2b_body(public_tpm2b).context("AK public")?)
            .context("the saved AK public area does not parse")?;
        let private = tss_esapi::structures::Private::try_from(
            tpm2b_body(private_tpm2b).context("AK private")?.to_vec(),
        )
        .context("the saved AK private blob is too large")?;
        self.load_ak_parts(ek, private, public, private_tpm2b.to_vec())
    }

    fn load_ak_parts(
        &mut self,
        ek: KeyHandle,
        private: tss_esapi::structures::Private,
        public: Public,
        private_tpm2b: Vec<u8>,
    ) -> Result<Ak> {
        let handle = ak::load_ak(&mut self.ctx, ek, None, private, public)
            .context("loading the AK under the EK (was it made by this TPM?)")?;
        let (public, name) = self.public_area(handle)?;
        Ok(Ak {
            handle,
            public_tpm2b: tpm2b(&public),
            private_tpm2b,
            name,
        })
    }

    /// A policy session that satisfies the EK's authPolicy: PolicySecret(endorsement), and
    /// for the P-384 EK then PolicyOR(PolicyA, PolicyC).
    fn ek_policy_session(&mut self, ek_type: EkType) -> Result<AuthSession> {
        let (hash, symmetric) = match ek_type {
            EkType::Rsa2048 => (HashingAlgorithm::Sha256, SymmetricDefinition::AES_128_CFB),
            EkType::EccP384 => (HashingAlgorithm::Sha384, SymmetricDefinition::AES_256_CFB),
        };
        let session = self
            .ctx
            .start_auth_session(None, None, None, SessionType::Policy, symmetric, hash)
            .context("starting the EK policy session")?
            .ok_or_else(|| anyhow!("the TPM returned no session"))?;
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .build();
        self.ctx.tr_sess_set_attributes(session, attributes, mask)?;
        let policy = PolicySession::try_from(session)?;
        self.ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })
            .context("PolicySecret(endorsement)")?;
        if ek_type == EkType::EccP384 {
            let mut digests = DigestList::new();
            digests.add(Digest::try_from(POLICY_A_SHA384.as_slice())?)?;
            digests.add(Digest::try_from(POLICY_C_SHA384.as_slice())?)?;
            self.ctx
                .policy_or(policy, digests)
                .context("PolicyOR(PolicyA, PolicyC)")?;
        }
        Ok(session)
    }

    /// TPM2_ActivateCredential: recovers the secret of a credential made for (EK, AK name).
    /// `credential_blob` and `encrypted_secret` are TPM2B_ID_OBJECT and
    /// TPM2B_ENCRYPTED_SECRET with their size prefixes.
    pub fn activate_credential(
        &mut self,
        ak: KeyHandle,
        ek: KeyHandle,
        ek_type: EkType,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>> {
        let id_object = IdObject::try_from(tpm2b_body(credential_blob)?.to_vec())?;
        let secret = EncryptedSecret::try_from(tpm2b_body(encrypted_secret)?.to_vec())?;
        let session = self.ek_policy_session(ek_type)?;
        let result = self
            .ctx
            .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
                ctx.activate_credential(ak, ek, id_object, secret)
            });
        let _ = self
            .ctx
            .flush_context(tss_esapi::handles::SessionHandle::from(session).into());
        Ok(result.context("TPM2_ActivateCredential")?.value().to_vec())
    }

    fn selection_list(banks: &[PcrBank]) -> Result<tss_esapi::structures::PcrSelectionList> {
        let mut builder = PcrSelectionListBuilder::new();
        for bank in banks {
            let slots = bank
                .pcrs
                .iter()
                .map(|&i| pcr_slot(i))
                .collect::<Result<Vec<_>>>()?;
            builder = builder.with_selection(tss_hash(bank.hash_alg)?, &slots);
        }
        Ok(builder.build()?)
    }

    /// TPM2_Quote over `banks` with `nonce` as qualifying data: (TPMS_ATTEST, TPMT_SIGNATURE).
    pub fn quote(
        &mut self,
        ak: KeyHandle,
        nonce: &[u8],
        banks: &[PcrBank],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let selection = Self::selection_list(banks)?;
        let (attest, signature) = self
            .ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.quote(
                    ak,
                    Data::try_from(nonce.to_vec())?,
                    SignatureScheme::Null,
                    selection,
                )
            })
            .context("TPM2_Quote")?;
        Ok((attest.marshall()?, signature.marshall()?))
    }

    /// The current values of the PCRs in `banks`.
    pub fn pcr_values(&mut self, banks: &[PcrBank]) -> Result<Vec<PcrValue>> {
        let selection = Self::selection_list(banks)?;
        let data = self
            .ctx
            .execute_without_session(|ctx| pcr::read_all(ctx, selection))
            .context("TPM2_PCR_Read")?;
        let mut out = Vec::new();
        for bank in banks {
            let tss_bank = data
                .pcr_bank(tss_hash(bank.hash_alg)?)
                .ok_or_else(|| anyhow!("the TPM has no {:?} PCR bank", bank.hash_alg))?;
            for &index in &bank.pcrs {
                let digest = tss_bank
                    .get_digest(pcr_slot(index)?)
                    .ok_or_else(|| anyhow!("PCR {index} was not read"))?;
                out.push(PcrValue {
                    hash_alg: bank.hash_alg,
                    index,
                    value: HexVec(
                        heapless::Vec::from_slice(digest.value())
                            .map_err(|_| anyhow!("PCR digest longer than 64 bytes"))?,
                    ),
                });
            }
        }
        Ok(out)
    }

    /// Extends PCR `index` with `data` hashed in every bank of `banks` (for measuring agent
    /// events, and for tests that need PCRs to change).
    pub fn pcr_extend(&mut self, index: u8, data: &[u8], banks: &[HashAlg]) -> Result<()> {
        use tss_esapi::handles::{ObjectHandle, PcrHandle};
        use tss_esapi::structures::DigestValues;
        let handle = PcrHandle::try_from(ObjectHandle::from(u32::from(index)))
            .map_err(|_| anyhow!("PCR {index} out of range"))?;
        let mut digests = DigestValues::new();
        for &bank in banks {
            let d = attest_common::tpm::hash::digest(bank, &[data])
                .map_err(|_| anyhow!("unsupported bank {bank:?}"))?;
            digests.set(tss_hash(bank)?, Digest::try_from(d.to_vec())?);
        }
        self.ctx
            .execute_with_nullauth_session(|ctx| ctx.pcr_extend(handle, digests))
            .with_context(|| format!("TPM2_PCR_Extend({index})"))
    }

    /// Flushes a transient object.
    pub fn flush(&mut self, handle: KeyHandle) -> Result<()> {
        Ok(self.ctx.flush_context(handle.into())?)
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
                    public: None,
                    nv_index: Some(ek_type.cert_nv_index()),
                });
            }
        }
        let ek_type = *types.first().ok_or_else(|| anyhow!("no EK type given"))?;
        let (public, spki) = self.ek_public(ek_type)?;
        Ok(EkIdentity {
            ek_type,
            source: EkSource::Pub,
            der: spki,
            public: Some(public),
            nv_index: None,
        })
    }
}

/// The slot of PCR `index`: 0–23 only (a TPM 2.0 PC client has 24). A challenge naming
/// another is refused with a clear error, never shifted into some other PCR.
fn pcr_slot(index: u8) -> Result<PcrSlot> {
    if index > 23 {
        bail!("the challenge asks for PCR {index}; a TPM has PCRs 0 to 23: refused");
    }
    PcrSlot::try_from(1u32 << index).map_err(|_| anyhow!("PCR {index} out of range"))
}

#[cfg(test)]
mod pcr_tests {
    #[test]
    fn pcr_indices_outside_0_to_23_are_refused() {
        assert!(super::pcr_slot(0).is_ok() && super::pcr_slot(23).is_ok());
        for i in [24u8, 31, 32, 40, 255] {
            let err = super::pcr_slot(i).unwrap_err().to_string();
            assert!(err.contains(&format!("PCR {i}")), "{err}");
        }
    }
}
