//! The server's response key (DESIGN.md §3.7): ECDSA P-384, made on first start, kept in the
//! data directory with mode 0600, published at `GET /api/v1/server-key` so agents can pin it.
//! Every agent-facing answer that carries an action is signed with it over the agent's nonce.
//!
//! File format: the 48-byte private scalar as 96 hex characters and a newline (no PEM
//! machinery needed to read it back).

use std::path::Path;

use p384::ecdsa::SigningKey;

pub const FILE_NAME: &str = "response-key";

/// Signs answers with the response key through aws-lc-rs: about ten times the rate of the
/// pure-Rust signer, and every attestation answer is signed. The signature is the same
/// r ‖ s over the same message `attest_common::nonce::verify` checks.
pub struct ResponseSigner {
    pair: aws_lc_rs::signature::EcdsaKeyPair,
    rng: aws_lc_rs::rand::SystemRandom,
}

impl ResponseSigner {
    pub fn new(key: &SigningKey) -> Result<ResponseSigner, String> {
        // The SubjectPublicKeyInfo ends with the uncompressed point (0x04 ‖ x ‖ y).
        let spki = attest_common::nonce::verifying_key_to_spki(key.verifying_key());
        let point = &spki[spki.len() - 97..];
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &key.to_bytes(),
            point,
        )
        .map_err(|e| format!("the response key is not usable by aws-lc-rs: {e}"))?;
        Ok(ResponseSigner {
            pair,
            rng: aws_lc_rs::rand::SystemRandom::new(),
        })
    }

    pub fn sign(
        &self,
        domain: attest_common::nonce::Domain,
        nonce: &[u8],
        context: &[u8],
    ) -> attest_common::nonce::NonceSignature {
        let mut message = Vec::with_capacity(64 + nonce.len() + context.len());
        attest_common::nonce::message_parts(domain, nonce, context, |p| {
            message.extend_from_slice(p)
        });
        let sig = self
            .pair
            .sign(&self.rng, &message)
            .expect("aws-lc-rs P-384 signing failed");
        let mut out = [0u8; 96];
        out.copy_from_slice(sig.as_ref());
        attest_common::nonce::NonceSignature(out)
    }
}

/// Loads the key from `dir`, or makes and stores one if there is none.
pub fn load_or_create(dir: &Path) -> Result<(SigningKey, bool), String> {
    let (scalar, created) = crate::secret_file::load_or_create(
        &dir.join(FILE_NAME),
        48,
        "response key (a P-384 private key)",
        |b| getrandom::fill(b).expect("the operating system's random number generator failed"),
        |b| SigningKey::from_slice(b).is_ok(),
    )?;
    let key = SigningKey::from_slice(&scalar).map_err(|e| e.to_string())?;
    Ok((key, created))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_fast_signer_signs_what_common_verifies() {
        use attest_common::nonce::{Domain, verify};
        let key = SigningKey::from_slice(&[7u8; 48]).unwrap();
        let signer = ResponseSigner::new(&key).unwrap();
        let sig = signer.sign(Domain::Action, b"agent nonce", b"context");
        verify(
            key.verifying_key(),
            Domain::Action,
            b"agent nonce",
            b"context",
            &sig,
        )
        .unwrap();
        assert!(
            verify(
                key.verifying_key(),
                Domain::Enroll,
                b"agent nonce",
                b"context",
                &sig
            )
            .is_err()
        );
        assert!(
            verify(
                key.verifying_key(),
                Domain::Action,
                b"agent nonce",
                b"other",
                &sig
            )
            .is_err()
        );
    }

    #[test]
    fn created_once_with_mode_0600_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        let mode = std::fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(first.to_bytes(), again.to_bytes());

        std::fs::set_permissions(
            dir.path().join(FILE_NAME),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(
            load_or_create(dir.path())
                .unwrap_err()
                .contains("chmod 600")
        );
        std::fs::set_permissions(
            dir.path().join(FILE_NAME),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "zz\n").unwrap();
        assert!(
            load_or_create(dir.path())
                .unwrap_err()
                .contains("not a response key")
        );
    }
}
