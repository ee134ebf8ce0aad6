//! The air-gapped path's proof: a node installed from an offline bundle holds an
//! enrollment certificate and key (Talos `machine.files` under `/var/lib/itl`) and proves
//! it to the server by signing a fresh server nonce with that key.
//!
//! No TPM and no agent state are involved: the certificate names the machine (CN) and its
//! EK (SAN), the server checks both against its record. The signature's context is the
//! machine id, so a signature made for one machine cannot be replayed for another.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use attest_common::nonce::{Domain, VerifyingKey, sign, verify};
use attest_common::wire::{CertificateDer, ChallengeRequest, EnrollRequest, EnrollResponse};
use p384::ecdsa::SigningKey;
use p384::pkcs8::DecodePrivateKey as _;
use x509_cert::Certificate;
use x509_cert::der::{Decode as _, DecodePem as _, Encode as _};

use crate::agent::UnverifiedAnswer;
use crate::client::Client;

/// Where an offline bundle's MachineConfig puts the files on the node.
pub const DEFAULT_CERT: &str = "/var/lib/itl/enrollment.pem";
pub const DEFAULT_KEY: &str = "/var/lib/itl/enrollment.key";

/// An enrollment certificate with its key, checked to belong together.
pub struct Credential {
    cert_der: Vec<u8>,
    key: SigningKey,
    /// The certificate's CN.
    pub machine_id: String,
}

impl Credential {
    /// Reads the certificate (PEM or DER) and its PKCS#8 key (PEM or DER).
    pub fn read(cert: &Path, key: &Path) -> Result<Credential> {
        let cert_bytes =
            std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
        let key_bytes =
            std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
        Credential::from_bytes(&cert_bytes, &key_bytes)
            .with_context(|| format!("{} with {}", cert.display(), key.display()))
    }

    pub fn from_bytes(cert: &[u8], key: &[u8]) -> Result<Credential> {
        let parsed = Certificate::from_pem(cert)
            .or_else(|_| Certificate::from_der(cert))
            .map_err(|e| anyhow!("not an X.509 certificate: {e}"))?;
        let key = match std::str::from_utf8(key) {
            Ok(text) if text.contains("-----BEGIN") => SigningKey::from_pkcs8_pem(text),
            _ => SigningKey::from_pkcs8_der(key),
        }
        .map_err(|_| anyhow!("the key is not a PKCS#8 P-384 private key"))?;
        let cert_spki = parsed
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| anyhow!("the certificate's public key does not encode: {e}"))?;
        let key_spki = attest_common::nonce::verifying_key_to_spki(key.verifying_key());
        if cert_spki != key_spki.as_slice() {
            bail!("the key is not the certificate's key");
        }
        let machine_id = parsed
            .tbs_certificate()
            .subject()
            .common_name()
            .ok()
            .flatten()
            .map(String::from)
            .ok_or_else(|| anyhow!("the certificate has no CN (the machine id)"))?;
        let cert_der = parsed
            .to_der()
            .map_err(|e| anyhow!("the certificate does not encode: {e}"))?;
        Ok(Credential {
            cert_der,
            key,
            machine_id,
        })
    }

    /// Challenge, sign (domain `enroll`, context = machine id), `POST /api/v1/enroll`; the
    /// answer must be signed by `server_key` for this request (an answer to another
    /// request, or unsigned, is refused).
    pub fn enroll(&self, client: &Client, server_key: &VerifyingKey) -> Result<EnrollResponse> {
        let challenge = client.challenge(&ChallengeRequest {
            ek_fingerprint: None,
        })?;
        let nonce = challenge.nonce.0;
        let request = EnrollRequest {
            cert_pem: CertificateDer::from_der(&self.cert_der)
                .map_err(|_| anyhow!("the certificate is too large to send"))?,
            nonce_id: challenge.nonce_id,
            signature: sign(
                &self.key,
                Domain::Enroll,
                &nonce,
                self.machine_id.as_bytes(),
            ),
        };
        let answer = client.enroll(&request)?;
        let signed = answer.signature.as_ref().ok_or(UnverifiedAnswer)?;
        verify(
            server_key,
            Domain::Action,
            &request.digest(),
            &answer.signed_context_for(&request),
            signed,
        )
        .map_err(|_| UnverifiedAnswer)?;
        if answer.machine_id.as_str() != self.machine_id {
            bail!(UnverifiedAnswer);
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut buf = [0u8; 512];
        for len in [0usize, 1, 2, 16, 100, 511] {
            for _ in 0..50 {
                getrandom::fill(&mut buf[..len]).unwrap();
                let b = &buf[..len];
                assert!(Credential::from_bytes(b, b).is_err());
                let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
                pem.extend_from_slice(b);
                assert!(Credential::from_bytes(&pem, &pem).is_err());
            }
        }
        let e = Credential::from_bytes(b"not a cert", b"").err().unwrap();
        assert!(e.to_string().contains("not an X.509 certificate"), "{e}");
    }
}
