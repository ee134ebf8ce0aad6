//! The boot-time attestation agent: `no_std`, no allocator.
//!
//! It runs before any operating system (a USB registration stick, QEMU with a software TPM,
//! a microcontroller), so everything it does must fit in fixed buffers and be driven from
//! outside: a sans-IO state machine fed with bytes and events, a TPM client over a transport
//! trait (TIS MMIO, TIS over SPI), and a framed serial link to `attest-agent relay`.
//!
//! The TPM client ([`tpm`]) speaks TPM 2.0 through `tpm2-protocol` over any
//! [`tpm::TpmTransport`]; host tests run it against swtpm's TCP port.
#![no_std]
#![forbid(unsafe_code)]

pub mod agent;
pub mod bootargs;
pub mod run;
pub mod smbios;
pub mod tpm;

pub use attest_common as common;
