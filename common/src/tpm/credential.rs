//! Software TPM2_MakeCredential (TPM 2.0 Part 1 §24, Part 3 §12.6): the server binds a secret
//! to (EK, AK name) without a TPM of its own. Only the TPM holding that EK can recover the
//! secret, and it releases it only for an object with that AK's name on the same TPM; an
//! agent that returns the secret has proved its AK lives next to its EK.
//!
//! ```text
//! seed        = random (RSA EK: OAEP-encrypted, label "IDENTITY")
//!             | KDFe(nameAlg, ECDH(ephemeral, EK).x, "IDENTITY", Qe.x, Qek.x) (ECC EK)
//! symKey      = KDFa(nameAlg, seed, "STORAGE", akName, ∅, symBits)
//! encIdentity = AES-CFB(symKey, IV = 0, TPM2B_DIGEST(secret))
//! hmacKey     = KDFa(nameAlg, seed, "INTEGRITY", ∅, ∅, digestBits)
//! idObject    = TPM2B(TPM2B_DIGEST(HMAC(hmacKey, encIdentity ‖ akName)) ‖ encIdentity)
//! ```

extern crate alloc;

use alloc::vec::Vec;

use cfb_mode::cipher::KeyIvInit;

use super::hash::{self, HashAlg};
use super::kdf::{kdfa, kdfe};
use super::public::{AesCfb, EccCurve, PublicKey, TpmPublic};
use crate::der;

/// Where the randomness comes from (the OS on the server; fixed bytes in tests).
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]);
}

/// The operating system's random number generator.
#[derive(Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        // Without entropy no credential can be made safely; this is not recoverable.
        getrandom::fill(buf).expect("the operating system's random number generator failed");
    }
}

/// rand_core 0.6 adapter for the `rsa` crate's OAEP padding.
struct Rng<'a>(&'a mut dyn Entropy);

impl rand_core_06::RngCore for Rng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl rand_core_06::CryptoRng for Rng<'_> {}

/// What MakeCredential needs to know about an EK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkKey {
    pub key: PublicKey,
    pub name_alg: HashAlg,
    pub symmetric: AesCfb,
}

/// Why no credential could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    /// The EK is not a restricted decryption key with an AES-CFB symmetric definition.
    NotAnEk,
    /// The EK is not an RSA-2048 or NIST P-384 key.
    UnsupportedEk,
    /// The secret is empty or longer than the EK's name digest.
    BadSecretLength,
    /// The AK name is not `nameAlg ‖ digest`.
    BadAkName,
    /// RSA encryption failed (invalid modulus).
    Rsa,
}

impl core::fmt::Display for CredentialError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            CredentialError::NotAnEk => "the key is not a restricted decryption key with AES-CFB",
            CredentialError::UnsupportedEk => "the EK is not RSA-2048 or NIST P-384",
            CredentialError::BadSecretLength => "the secret must be 1 to nameAlg digest-size bytes",
            CredentialError::BadAkName => "the AK name is not a TPM name (algorithm ‖ digest)",
            CredentialError::Rsa => "RSA-OAEP encryption with the EK failed",
        })
    }
}

impl core::error::Error for CredentialError {}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

impl EkKey {
    /// From the EK's public area, as the TPM reports it.
    pub fn from_public(public: &TpmPublic) -> Result<EkKey, CredentialError> {
        match public.symmetric {
            Some(symmetric) if public.is_restricted_decryption() => Ok(EkKey {
                key: public.key.clone(),
                name_alg: public.name_alg,
                symmetric,
            }),
            _ => Err(CredentialError::NotAnEk),
        }
    }

    /// From the EK certificate's SubjectPublicKeyInfo, assuming the TCG default EK template
    /// for its key type (EK Credential Profile 2.5): RSA-2048 (L-1): SHA-256 and AES-128-CFB;
    /// P-384 (H-3): SHA-384 and AES-256-CFB.
    pub fn from_spki(spki: &[u8]) -> Result<EkKey, CredentialError> {
        let parsed = der::parse_spki(spki).map_err(|_| CredentialError::UnsupportedEk)?;
        let curve = parsed
            .parameters
            .filter(|p| p.tag == der::OID)
            .map(|p| p.value);
        match (parsed.algorithm, curve) {
            (OID_RSA, _) => {
                let (seq, _) = der::expect(parsed.key, der::SEQUENCE)
                    .map_err(|_| CredentialError::UnsupportedEk)?;
                let (n, rest) = der::expect(seq.value, der::INTEGER)
                    .map_err(|_| CredentialError::UnsupportedEk)?;
                let (e, _) =
                    der::expect(rest, der::INTEGER).map_err(|_| CredentialError::UnsupportedEk)?;
                let n = &n.value[n.value.iter().take_while(|b| **b == 0).count()..];
                if n.len() != 256 || e.value.len() > 4 {
                    return Err(CredentialError::UnsupportedEk);
                }
                let exponent = e
                    .value
                    .iter()
                    .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
                Ok(EkKey {
                    key: PublicKey::Rsa {
                        modulus: heapless::Vec::from_slice(n)
                            .map_err(|_| CredentialError::UnsupportedEk)?,
                        exponent,
                    },
                    name_alg: HashAlg::Sha256,
                    symmetric: AesCfb { key_bits: 128 },
                })
            }
            (OID_EC, Some(c)) => {
                let (curve, name_alg, key_bits) = match c {
                    OID_P384 => (EccCurve::P384, HashAlg::Sha384, 256),
                    _ => return Err(CredentialError::UnsupportedEk),
                };
                if parsed.key.len() != 1 + 2 * curve.coordinate_len() || parsed.key[0] != 4 {
                    return Err(CredentialError::UnsupportedEk);
                }
                Ok(EkKey {
                    key: PublicKey::Ecc {
                        curve,
                        point: heapless::Vec::from_slice(parsed.key)
                            .map_err(|_| CredentialError::UnsupportedEk)?,
                    },
                    name_alg,
                    symmetric: AesCfb { key_bits },
                })
            }
            _ => Err(CredentialError::UnsupportedEk),
        }
    }

    /// The key itself, whatever encoding carried it (DESIGN.md §3.1: one EK key is one
    /// machine): SHA-384 over a domain label, the key type and its numbers in a fixed form
    /// (RSA: the modulus without leading zeros and the exponent as four bytes; ECC: the
    /// curve and the uncompressed point). Two certificates of one key, or a certificate and
    /// the bare public key, give the same value.
    pub fn canonical_id(&self) -> [u8; 48] {
        use sha2::{Digest as _, Sha384};
        let mut h = Sha384::new();
        h.update(b"itl-ek-key/v1\0");
        match &self.key {
            PublicKey::Rsa { modulus, exponent } => {
                let start = modulus.iter().take_while(|b| **b == 0).count();
                h.update(b"rsa\0");
                h.update(((modulus.len() - start) as u32).to_be_bytes());
                h.update(&modulus[start..]);
                h.update(exponent.to_be_bytes());
            }
            PublicKey::Ecc { curve, point } => {
                h.update(match curve {
                    EccCurve::P256 => b"ecc-p256\0".as_slice(),
                    EccCurve::P384 => b"ecc-p384\0".as_slice(),
                });
                h.update(point);
            }
        }
        h.finalize().into()
    }
}

/// MakeCredential's output, both marshalled with their TPM2B size prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// TPM2B_ID_OBJECT.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET.
    pub encrypted_secret: Vec<u8>,
}

fn tpm2b(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Makes a credential for `secret` that only the TPM with `ek` releases, and only to the
/// object named `ak_name`.
pub fn make_credential(
    ek: &EkKey,
    ak_name: &[u8],
    secret: &[u8],
    entropy: &mut dyn Entropy,
) -> Result<Credential, CredentialError> {
    let alg = ek.name_alg;
    let digest_len = alg.digest_len();
    if secret.is_empty() || secret.len() > digest_len {
        return Err(CredentialError::BadSecretLength);
    }
    let name_ok = ak_name.len() >= 2
        && HashAlg::from_tpm(u16::from_be_bytes([ak_name[0], ak_name[1]]))
            .is_some_and(|h| h.digest_len() == ak_name.len() - 2);
    if !name_ok {
        return Err(CredentialError::BadAkName);
    }

    let mut seed = [0u8; 64];
    let seed = &mut seed[..digest_len];
    let encrypted_secret = match &ek.key {
        PublicKey::Rsa { modulus, exponent } => {
            entropy.fill(seed);
            let key = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(modulus),
                rsa::BigUint::from(*exponent),
            )
            .map_err(|_| CredentialError::Rsa)?;
            let padding = match alg {
                HashAlg::Sha256 => rsa::Oaep::new_with_label::<sha2_010::Sha256, _>("IDENTITY\0"),
                HashAlg::Sha384 => rsa::Oaep::new_with_label::<sha2_010::Sha384, _>("IDENTITY\0"),
                HashAlg::Sha512 => rsa::Oaep::new_with_label::<sha2_010::Sha512, _>("IDENTITY\0"),
                HashAlg::Sha1 => return Err(CredentialError::UnsupportedEk),
            };
            let ct = key
                .encrypt(&mut Rng(entropy), padding, seed)
                .map_err(|_| CredentialError::Rsa)?;
            tpm2b(&ct)
        }
        PublicKey::Ecc { curve, point } => {
            let (z, qe) = ecdh(*curve, point, entropy)?;
            let n = curve.coordinate_len();
            let (qe_x, qe_y) = (&qe[1..1 + n], &qe[1 + n..]);
            kdfe(alg, &z, "IDENTITY", qe_x, &point[1..1 + n], seed)
                .map_err(|_| CredentialError::UnsupportedEk)?;
            let mut ecc_point = tpm2b(qe_x);
            ecc_point.extend(tpm2b(qe_y));
            tpm2b(&ecc_point)
        }
    };

    let mut sym_key = [0u8; 32];
    let sym_key = &mut sym_key[..usize::from(ek.symmetric.key_bits / 8)];
    kdfa(alg, seed, "STORAGE", ak_name, &[], sym_key)
        .map_err(|_| CredentialError::UnsupportedEk)?;
    let mut enc_identity = tpm2b(secret);
    let iv = [0u8; 16];
    match sym_key.len() {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(sym_key, &iv)
            .map_err(|_| CredentialError::NotAnEk)?
            .encrypt(&mut enc_identity),
        _ => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(sym_key, &iv)
            .map_err(|_| CredentialError::NotAnEk)?
            .encrypt(&mut enc_identity),
    }

    let mut hmac_key = [0u8; 64];
    let hmac_key = &mut hmac_key[..digest_len];
    kdfa(alg, seed, "INTEGRITY", &[], &[], hmac_key).map_err(|_| CredentialError::UnsupportedEk)?;
    let integrity = hash::hmac(alg, hmac_key, &[&enc_identity, ak_name])
        .map_err(|_| CredentialError::UnsupportedEk)?;
    let mut id_object = tpm2b(&integrity);
    id_object.extend_from_slice(&enc_identity);
    Ok(Credential {
        credential_blob: tpm2b(&id_object),
        encrypted_secret,
    })
}

/// An ephemeral ECDH with the EK: the shared x coordinate and the ephemeral public point.
fn ecdh(
    curve: EccCurve,
    ek_point: &[u8],
    entropy: &mut dyn Entropy,
) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    let mut bytes = [0u8; 48];
    let bytes = &mut bytes[..curve.coordinate_len()];
    match curve {
        EccCurve::P384 => {
            let ek = p384::PublicKey::from_sec1_bytes(ek_point)
                .map_err(|_| CredentialError::UnsupportedEk)?;
            let secret = loop {
                entropy.fill(bytes);
                if let Ok(s) = p384::SecretKey::from_slice(bytes) {
                    break s;
                }
            };
            let shared = p384::ecdh::diffie_hellman(secret.to_nonzero_scalar(), ek.as_affine());
            use p384::elliptic_curve::sec1::ToSec1Point;
            let qe = secret.public_key().to_sec1_point(false);
            Ok((shared.raw_secret_bytes().to_vec(), qe.as_bytes().to_vec()))
        }
        EccCurve::P256 => Err(CredentialError::UnsupportedEk),
    }
}
