//! Config delivery (DESIGN.md §3.9): a machine's Talos MachineConfig by its token, with
//! secrets only once its TPM proof has been verified; the role's config without secrets for
//! machines still waiting; the config and ISO URLs handed to agents.

use attest_common::lifecycle::Status;
use attest_common::wire::Role;

use super::{Actor, Change, ErrorKind, Service, ServiceError};
use crate::audit_action::AuditAction;
use crate::machineconfig::BaseConfigs;
use crate::store::{Registry, RegistryTx};

/// A config served to a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFetch {
    pub machine_id: String,
    pub yaml: String,
    /// The first use of the token.
    pub first: bool,
}

impl<R: Registry> Service<R> {
    pub(super) fn configs(&self) -> Result<&BaseConfigs, ServiceError> {
        self.configs.as_ref().ok_or_else(|| {
            ServiceError::new(
                ErrorKind::Unavailable,
                "no_base_configs",
                "no role base configs are configured: set ITL_CONFIG_DIR to a directory with \
                 controlplane.yaml, worker-infra.yaml and worker-app.yaml",
            )
        })
    }

    /// The config URL of a token.
    pub fn config_url(&self, token: &str) -> Option<String> {
        self.service_url
            .as_ref()
            .map(|u| format!("{u}/api/v1/config/{token}"))
    }

    /// The ISO URL for a machine with config token `token`: `None` when no ISO source is
    /// configured, 503 when the factory cannot answer.
    pub(super) fn iso_url(&self, token: &str) -> Result<Option<String>, ServiceError> {
        let (Some(iso), Some(config_url)) = (&self.iso, self.config_url(token)) else {
            return Ok(None);
        };
        iso.iso_url(&config_url).map(Some).map_err(|e| {
            ServiceError::new(ErrorKind::Unavailable, "image_factory_unavailable", e.0)
        })
    }

    /// `GET /config/{token}`: the machine's config, with secrets only once its TPM proof has
    /// been verified (attested). Refused for locked, revoked and rejected machines; the first
    /// use is audited as consumed, later ones as re-fetches.
    pub fn fetch_config(&self, token: &str, actor: &Actor) -> Result<ConfigFetch, ServiceError> {
        let configs = self.configs()?;
        let now = self.platform.now();
        self.registry.write(|tx| {
            let mut record = tx.machine_by_token(token)?.ok_or_else(|| {
                ServiceError::new(
                    ErrorKind::NotFound,
                    "unknown_config_token",
                    "unknown config token",
                )
            })?;
            let status = record.state.status;
            if status.is_refused() {
                return Err(ServiceError::forbidden(
                    "machine_refused",
                    format!(
                        "machine {} is {status}: no configuration is served",
                        record.id
                    ),
                ));
            }
            let (Some(role), Some(hostname), Some(ip)) = (
                record.role,
                record.hostname.clone(),
                record.assigned_ip.clone(),
            ) else {
                return Err(ServiceError::forbidden(
                    "not_approved",
                    format!("machine {} is not approved", record.id),
                ));
            };
            // Secrets only after the TPM proof: an approved machine that has not attested
            // yet gets its config without them (DESIGN.md §3.2).
            let rendered = configs.render(role, &hostname, &ip);
            let yaml = BaseConfigs::to_yaml(&if status == Status::Attested {
                rendered
            } else {
                BaseConfigs::without_secrets(rendered)
            });
            let first = !record.config_fetched;
            let (action, what) = if first {
                (AuditAction::ConfigConsumed, "Config token consumed")
            } else {
                (AuditAction::ConfigRefetch, "Config re-fetch")
            };
            let detail = format!("{what}: id={} role={role} hostname={hostname}", record.id);
            record.config_fetched = true;
            tx.put_machine(&record)?;
            Change::about(action, &record, detail).record(tx, actor, now)?;
            Ok(ConfigFetch {
                machine_id: record.id,
                yaml,
                first,
            })
        })
    }

    /// `GET /config`: a role's config without any secret and without machine identity.
    pub fn pending_config(&self, role: Role) -> Result<String, ServiceError> {
        let configs = self.configs()?;
        let config = BaseConfigs::without_secrets(configs.base(role).clone());
        Ok(BaseConfigs::to_yaml(&config))
    }
}
