//! The boot-time attestation agent: `no_std`, no allocator.
//!
//! It runs before any operating system (a USB registration stick, QEMU with a software TPM,
//! a microcontroller), so everything it does must fit in fixed buffers and be driven from
//! outside: a sans-IO state machine fed with bytes and events, a TPM client over a transport
//! trait (TIS MMIO, TIS over SPI), and a framed serial link to `attest-agent relay`.
//!
//! Today the crate proves the foundation it stands on: `attest-common` builds for it without
//! `std` and without an allocator. The agent, the TPM client and the link arrive with the
//! firmware issue.
#![no_std]
#![forbid(unsafe_code)]

pub use attest_common as common;
