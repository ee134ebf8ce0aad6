//! Checking that an issuer's key signed a certificate.
//!
//! Through aws-lc-rs, the server's crypto on its hot path (DESIGN.md §10). Accepted: RSA
//! PKCS#1 v1.5 with SHA-256/384/512, RSA-PSS with SHA-256/384/512 (MGF1 with the same hash,
//! salt as long as the hash: the only parameters TPM vendors and aws-lc-rs use), ECDSA with
//! SHA-256/384 on P-256 and P-384 keys; RSA keys of 2048 to 8192 bits. Refused: SHA-1
//! (collisions are practical; the Infineon intermediates the IFX root signed with SHA-1 are
//! in the trust store themselves, so this costs no TPM issued under them), and everything
//! else, each with a reason naming the algorithm.

use attest_common::der::{self, INTEGER, OID, SEQUENCE, expect};
use aws_lc_rs::signature::{self, VerificationAlgorithm};

use super::asn1::{self, NULL};

/// Checks `signature` over `message` (a `tbsCertificate`) under `algorithm` (an
/// AlgorithmIdentifier TLV) with the key in `issuer_spki` (a SubjectPublicKeyInfo TLV).
pub(crate) fn check(
    message: &[u8],
    algorithm: &[u8],
    signature: &[u8],
    issuer_spki: &[u8],
) -> Result<(), String> {
    let alg = asn1::only(algorithm, SEQUENCE).map_err(|e| format!("signature algorithm: {e}"))?;
    let (oid, params) = expect(alg.value, OID).map_err(|e| format!("signature algorithm: {e}"))?;
    let key = der::parse_spki(issuer_spki).map_err(|e| format!("issuer key: {e}"))?;
    let rsa_key = asn1::is(key.algorithm, &asn1::RSA_ENCRYPTION);
    let ec_curve = if asn1::is(key.algorithm, &asn1::EC_PUBLIC_KEY) {
        key.parameters.filter(|p| p.tag == OID).map(|p| p.value)
    } else {
        None
    };
    let name = asn1::dotted(oid.value);
    let id = oid.value;
    let absent_or_null = params.is_empty() || params == [NULL, 0];
    let chosen: &'static dyn VerificationAlgorithm =
        if asn1::is(id, &asn1::SHA1_WITH_RSA) || asn1::is(id, &asn1::ECDSA_WITH_SHA1) {
            return Err(format!("SHA-1 signatures are not accepted ({name})"));
        } else if asn1::is(id, &asn1::SHA256_WITH_RSA) && rsa_key && absent_or_null {
            &signature::RSA_PKCS1_2048_8192_SHA256
        } else if asn1::is(id, &asn1::SHA384_WITH_RSA) && rsa_key && absent_or_null {
            &signature::RSA_PKCS1_2048_8192_SHA384
        } else if asn1::is(id, &asn1::SHA512_WITH_RSA) && rsa_key && absent_or_null {
            &signature::RSA_PKCS1_2048_8192_SHA512
        } else if asn1::is(id, &asn1::RSASSA_PSS) && rsa_key {
            pss(params)?
        } else if let (Some(curve), true) = (ec_curve, params.is_empty()) {
            let p256 = asn1::is(curve, &asn1::SECP256R1);
            let p384 = asn1::is(curve, &asn1::SECP384R1);
            match (
                asn1::is(id, &asn1::ECDSA_WITH_SHA256),
                asn1::is(id, &asn1::ECDSA_WITH_SHA384),
            ) {
                (true, _) if p256 => &signature::ECDSA_P256_SHA256_ASN1,
                (true, _) if p384 => &signature::ECDSA_P384_SHA256_ASN1,
                (_, true) if p256 => &signature::ECDSA_P256_SHA384_ASN1,
                (_, true) if p384 => &signature::ECDSA_P384_SHA384_ASN1,
                _ => {
                    return Err(format!(
                        "unsupported signature algorithm {name} with an EC key on curve {}",
                        asn1::dotted(curve)
                    ));
                }
            }
        } else {
            return Err(format!(
                "unsupported signature algorithm {name} for an issuer key of type {}",
                asn1::dotted(key.algorithm)
            ));
        };
    signature::UnparsedPublicKey::new(chosen, key.key)
        .verify(message, signature)
        .map_err(|_| "the signature does not verify".to_owned())
}

/// `RSASSA-PSS-params ::= SEQUENCE { [0] hashAlgorithm, [1] maskGenAlgorithm, [2] saltLength,
/// [3] trailerField }`: SHA-256/384/512, MGF1 with the same hash, salt = hash length.
fn pss(params: &[u8]) -> Result<&'static dyn VerificationAlgorithm, String> {
    let bad = || "unsupported RSA-PSS parameters".to_owned();
    let seq = asn1::only(params, SEQUENCE).map_err(|_| bad())?;
    let (mut hash, mut mgf_hash, mut salt) = (None, None, 20u32);
    for field in asn1::items(seq.value).map_err(|_| bad())? {
        let inner = asn1::only(field.value, field.value.first().copied().unwrap_or(0))
            .map_err(|_| bad())?;
        match field.tag {
            0xa0 => hash = Some(hash_of(inner.raw).ok_or_else(bad)?),
            0xa1 => {
                let (mgf, rest) = expect(inner.value, OID).map_err(|_| bad())?;
                if !asn1::is(mgf.value, &asn1::MGF1) {
                    return Err(bad());
                }
                mgf_hash = Some(hash_of(rest).ok_or_else(bad)?);
            }
            0xa2 if inner.tag == INTEGER => {
                salt = asn1::small_uint(inner.value).ok_or_else(bad)?;
            }
            0xa3 if inner.tag == INTEGER && inner.value == [1] => {}
            _ => return Err(bad()),
        }
    }
    // hashAlgorithm defaults to SHA-1, which is refused.
    match (hash, mgf_hash, salt) {
        (Some(256), Some(256), 32) => Ok(&signature::RSA_PSS_2048_8192_SHA256),
        (Some(384), Some(384), 48) => Ok(&signature::RSA_PSS_2048_8192_SHA384),
        (Some(512), Some(512), 64) => Ok(&signature::RSA_PSS_2048_8192_SHA512),
        _ => Err(bad()),
    }
}

/// SHA-2 size of a hash AlgorithmIdentifier TLV (parameters absent or NULL).
fn hash_of(alg: &[u8]) -> Option<u32> {
    let seq = asn1::only(alg, SEQUENCE).ok()?;
    let (oid, params) = expect(seq.value, OID).ok()?;
    if !(params.is_empty() || params == [NULL, 0]) {
        return None;
    }
    [
        (asn1::SHA256, 256),
        (asn1::SHA384, 384),
        (asn1::SHA512, 512),
    ]
    .iter()
    .find(|(o, _)| asn1::is(oid.value, o))
    .map(|(_, bits)| *bits)
}
