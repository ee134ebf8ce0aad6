//! The shared language of the attestation system.
//!
//! Firmware, host agent and server must agree byte for byte on what a fingerprint is, what a
//! signature covers, which lifecycle transitions exist and what a message looks like. Putting
//! all of that in one `no_std`, allocation-free crate means there is one implementation to
//! test, fuzz and cross-check against OpenSSL and the TPM, instead of three that drift.
//!
//! Features: `std` (default) adds field-naming decoders for JSON and postcard; `defmt` adds
//! `defmt::Format` derives for firmware logging; `verifier` adds RSA verification and software
//! MakeCredential (server side; needs an allocator); `aws-lc` adds the aws-lc-rs provider.
#![no_std]
#![forbid(unsafe_code)]

pub mod binding;
pub mod crypto;
pub mod der;
pub mod fingerprint;
pub mod frame;
pub mod hex;
pub mod lifecycle;
pub mod nonce;
pub mod text;
pub mod tpm;
pub mod wire;

pub use fingerprint::{EkFingerprint, EkSource, Fingerprint, ek_fingerprint, ek_fingerprint_der};
pub use lifecycle::{Action, Event, State, Status, transition};
