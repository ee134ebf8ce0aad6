//! The attestation control plane.
//!
//! The HTTP layer (`http`) is a thin hyper adapter served from our own smol accept loop; the
//! logic it calls lives in framework-free modules (`service` above all). Configuration comes from `ITL_*` environment variables (`config`).

pub mod audit;
/// The closed list of audit actions (defined with the API's types, `attest-api`).
pub mod audit_action {
    pub use attest_api::AuditAction;
}
pub mod challenge;
pub mod config;
pub mod conn_table;
pub mod ekchain;
pub mod enrollment;
pub mod factory;
pub mod http;
pub mod listener;
pub mod log;
pub mod machineconfig;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod outbound;
pub mod policy;
pub mod proxies;
pub mod record;
pub mod responsekey;
pub mod secret_file;
pub mod service;
pub mod store;
pub mod streamed;
pub mod tls;
pub mod views;
