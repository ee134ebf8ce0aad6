//! The Linux agent's library: the TPM operations (tss-esapi), the server client, the state
//! kept between runs, and the attest loop that the `attest-agent` binary drives.

pub mod agent;
pub mod backoff;
pub mod client;
pub mod config;
pub mod enroll;
pub mod hooks;
pub mod relay;
pub mod state;
pub mod tpm;
