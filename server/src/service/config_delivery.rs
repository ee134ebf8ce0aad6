//! Config delivery (DESIGN.md §3.9): config secrets reach only the TPM holder. The full
//! config is served through a URL minted by a verified attestation (`attest::grant`): single
//! use, short lived, bound to that machine and to the digest its signed answer names. The
//! long-lived token of the USB path and the role's pending config carry only non-secret
//! fields (an allowlist, `machineconfig`).

use attest_common::lifecycle::Status;
use attest_common::wire::Role;

use attest_common::wire::Timestamp;

use super::attest::sha384;
use super::refusals::Refusal;
use super::{Actor, Change, ErrorKind, Service, ServiceError, not_found};
use crate::audit_action::AuditAction;
use crate::machineconfig::BaseConfigs;
use crate::record::MachineRecord;
use crate::store::{ConfigGrant, Registry, RegistryTx, token_key};

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
            // The seed's operators alert on this line (its text names the factory, never
            // the config URL).
            crate::log::error(&format!("Talos Image Factory unreachable: {}", e.0));
            ServiceError::new(ErrorKind::Unavailable, "image_factory_unavailable", e.0)
        })
    }

    /// The machine's full config (with secrets), when it is approved and configs exist.
    pub(super) fn full_config(&self, record: &MachineRecord) -> Option<String> {
        let configs = self.configs.as_ref()?;
        let (Some(role), Some(hostname), Some(ip)) =
            (record.role, &record.hostname, &record.assigned_ip)
        else {
            return None;
        };
        Some(BaseConfigs::to_yaml(&configs.render(role, hostname, ip)))
    }

    /// `GET /config/{token}`. A single-use URL from a verified attestation's answer serves
    /// the full config, exactly the one whose digest that answer named, once, before it
    /// expires, to an attested machine. The long-lived token (ISO kernel argument, USB path)
    /// serves only the config's non-secret fields. Refused for locked, revoked and rejected
    /// machines.
    pub fn fetch_config(&self, token: &str, actor: &Actor) -> Result<ConfigFetch, ServiceError> {
        let configs = self.configs()?;
        let now = self.platform.now();
        let hash = token_key(token);
        if let Some(record) = self.registry.machine_by_token_hash(&hash)?
            && record.config_fetched
        {
            return self.refetch(configs, record, now);
        }
        self.registry.write(|tx| {
            if let Some(grant) = tx.take_grant(&hash)? {
                // Used up whatever follows: committed even when refused below.
                return Ok::<_, ServiceError>(self.deliver(tx, grant, actor, now));
            }
            let mut record = tx.machine_by_token_hash(&hash)?.ok_or_else(|| {
                ServiceError::new(
                    ErrorKind::NotFound,
                    "unknown_config_token",
                    "unknown config token (single-use config URLs work once)",
                )
            })?;
            let yaml = public_config(configs, &record)?;
            if record.config_fetched {
                // Consumed meanwhile by a concurrent fetch: a re-fetch, which writes nothing.
                return Ok(Ok(ConfigFetch {
                    machine_id: record.id,
                    yaml,
                    first: false,
                }));
            }
            let detail = format!(
                "Config token consumed for machine {} (role={} hostname={}; no secrets)",
                record.id,
                record.role.map_or("none", |r| r.as_str()),
                record.hostname.as_deref().unwrap_or("")
            );
            record.config_fetched = true;
            tx.put_machine(&record)?;
            Change::about(AuditAction::ConfigConsumed, &record, detail).record(tx, actor, now)?;
            Ok(Ok(ConfigFetch {
                machine_id: record.id,
                yaml,
                first: true,
            }))
        })?
    }

    /// A long-lived token used again: its secret-free config, served from a read. Whoever
    /// holds the token (it is in the ISO's kernel arguments) may ask as often as they like,
    /// so nothing durable is written: counted and logged at a bounded rate (`refusals`).
    fn refetch(
        &self,
        configs: &BaseConfigs,
        record: MachineRecord,
        now: u64,
    ) -> Result<ConfigFetch, ServiceError> {
        let yaml = public_config(configs, &record)?;
        self.refusals.note(Refusal::ConfigRefetch, now, || {
            format!(
                "Config re-fetch for machine {} (token already consumed; no secrets)",
                record.id
            )
        });
        Ok(ConfigFetch {
            machine_id: record.id,
            yaml,
            first: false,
        })
    }

    /// Serves a single-use grant (already taken out of the registry in `tx`).
    fn deliver(
        &self,
        tx: &R::Tx<'_>,
        grant: ConfigGrant,
        actor: &Actor,
        now: u64,
    ) -> Result<ConfigFetch, ServiceError> {
        if now > grant.expires_at {
            return Err(ServiceError::new(
                ErrorKind::Gone,
                "config_url_expired",
                format!(
                    "this config URL expired at {}: attest again for a new one",
                    Timestamp(grant.expires_at)
                ),
            ));
        }
        let Some(mut record) = tx.machine(&grant.machine_id)? else {
            return Err(not_found(&grant.machine_id));
        };
        refuse_state(&record)?;
        let yaml = match self.full_config(&record) {
            Some(yaml) if record.state.status == Status::Attested => yaml,
            _ => {
                return Err(ServiceError::forbidden(
                    "not_attested",
                    format!("machine {} is not attested and approved", record.id),
                ));
            }
        };
        if sha384(yaml.as_bytes())[..] != grant.sha384[..] {
            return Err(ServiceError::conflict(
                "config_changed",
                format!(
                    "machine {}'s config changed since this URL was issued: attest again",
                    record.id
                ),
            ));
        }
        // Applied is what the agent reports in a later attestation (`attest`): a body changed
        // on the way is refused by the agent, and the config is then offered again.
        record.config_fetched = true;
        tx.put_machine(&record)?;
        let detail = format!(
            "Config delivered to machine {} (role={} hostname={}; single-use URL of a verified attestation)",
            record.id,
            record.role.map_or("none", |r| r.as_str()),
            record.hostname.as_deref().unwrap_or("")
        );
        Change::about(AuditAction::ConfigConsumed, &record, detail).record(tx, actor, now)?;
        Ok(ConfigFetch {
            machine_id: record.id,
            yaml,
            first: true,
        })
    }

    /// A single-use URL to the machine's full config when it has not received it since its
    /// approval: the token and the config's digest, kept as a grant in `tx`.
    pub(super) fn grant(
        &self,
        tx: &R::Tx<'_>,
        record: &MachineRecord,
        now: u64,
    ) -> Result<Option<(String, [u8; 48])>, ServiceError> {
        if record.config_delivered_at.is_some() || self.configs.is_none() {
            return Ok(None);
        }
        let Some(yaml) = self.full_config(record) else {
            return Ok(None);
        };
        let token = self.platform.token();
        let sha384 = sha384(yaml.as_bytes());
        // One live URL per machine: the one this answer carries.
        tx.purge_grants(now, &record.id)?;
        tx.put_grant(
            &token_key(&token),
            &ConfigGrant {
                machine_id: record.id.clone(),
                expires_at: now + self.config_url_seconds,
                sha384: sha384.to_vec(),
            },
        )?;
        Ok(Some((token, sha384)))
    }

    /// `GET /config`: a role's config without any secret and without machine identity.
    pub fn pending_config(&self, role: Role) -> Result<String, ServiceError> {
        let configs = self.configs()?;
        Ok(BaseConfigs::to_yaml(&BaseConfigs::public(
            configs.base(role),
        )))
    }
}

/// The secret-free config of an approved machine that is not refused.
fn public_config(configs: &BaseConfigs, record: &MachineRecord) -> Result<String, ServiceError> {
    refuse_state(record)?;
    let (Some(role), Some(hostname), Some(ip)) =
        (record.role, &record.hostname, &record.assigned_ip)
    else {
        return Err(ServiceError::forbidden(
            "not_approved",
            format!("machine {} is not approved", record.id),
        ));
    };
    Ok(BaseConfigs::to_yaml(&BaseConfigs::public(
        &configs.render(role, hostname, ip),
    )))
}

/// Locked, revoked and rejected machines get no configuration at all.
fn refuse_state(record: &MachineRecord) -> Result<(), ServiceError> {
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
    Ok(())
}
