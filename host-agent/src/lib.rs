//! The Linux agent's library: the TPM operations (tss-esapi) the `attest-agent` binary and
//! the integration tests share.

pub mod tpm;
