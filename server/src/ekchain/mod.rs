//! EK certificate chain validation (DESIGN.md §3 item 1).
//!
//! An EK certificate is public: presenting one proves nothing, and credential activation
//! (§3 item 2) proves only that the machine holds the key *in that certificate*. Whether the
//! key lives in a real TPM is what the certificate's chain says: a TPM vendor's CA signed it
//! at manufacture. This module checks that chain against the vendors' CA certificates
//! (compiled in from `server/ek-roots/`, Keylime's `tpm_cert_store/`), an operator's own
//! (`ITL_EK_CA_DIR`), and, when allowed, issuers fetched from the certificate's Authority
//! Information Access URL (`ITL_EK_AIA_FETCH`). `ITL_EK_CHAIN` says what a failure means.
//!
//! What is checked: every signature of the path (RSA PKCS#1 v1.5 and PSS with SHA-2, ECDSA
//! P-256/P-384 with SHA-256/384; never SHA-1), that every issuer is a CA (basicConstraints
//! cA, keyUsage keyCertSign when present, no critical extension left unprocessed), path
//! length constraints, issuer/subject names (RFC 5280 comparison) and key identifiers.
//! What is not, as in the TPM ecosystem (Keylime, go-attestation): validity periods (vendor
//! intermediates expire while their TPMs stay in service, EK certificates say notAfter 9999)
//! and revocation. The verdict lists what was not checked, naming expired certificates.
//! Nothing about the EK certificate itself is judged beyond its signature and issuer: its
//! critical extensions (EK certificates mark their SAN critical), key usage and validity are
//! the registration's business.
//!
//! Certificates are read by a lenient walker (`cert.rs` says exactly what it tolerates:
//! negative and non-minimal serials and integers; lengths must be DER); signatures are always
//! over the exact bytes received.
//!
//! - `store.rs`: the trust store (bundled + `ITL_EK_CA_DIR`); `bundled.rs`: its file list
//! - `verify.rs`: [`EkChain`]; `path.rs`: path building; `verdict.rs`: [`ChainVerdict`]
//! - `aia.rs`: fetching and caching issuers named by caIssuers URLs
//! - `policy.rs`: [`EkChainPolicy`] and [`EkChainConfig`] (the `ITL_EK_*` variables)
//! - `cert.rs`, `name.rs`, `signature.rs`, `asn1.rs`: reading certificates and checking
//!   signatures

mod aia;
mod asn1;
mod bundled;
mod cert;
mod name;
mod path;
mod policy;
mod signature;
mod store;
mod verdict;
mod verify;

#[cfg(test)]
mod tests;

pub use aia::{MAX_AIA_BYTES, RETRY_AFTER_SECONDS};
pub use policy::{DEFAULT_AIA_TIMEOUT, EkChainConfig, EkChainPolicy};
pub use store::{CA_FILE_EXTENSIONS, StoreEntry, TrustStore};
pub use verdict::ChainVerdict;
pub use verify::EkChain;

/// Most certificates in a path, EK certificate and trust anchor included.
pub const MAX_PATH_LEN: usize = 6;
/// Most issuer candidates tried for one certificate.
pub const MAX_CANDIDATES: usize = 8;
/// Most signature checks for one verification.
pub const MAX_SIGNATURE_CHECKS: usize = 24;
/// Most AIA fetches (or cache look-ups) for one verification.
pub const MAX_AIA_FETCHES: usize = 3;
/// Largest EK or intermediate certificate read.
pub const MAX_CERT_BYTES: usize = 64 * 1024;
/// Most caller-supplied intermediates used.
pub const MAX_INTERMEDIATES: usize = 8;
