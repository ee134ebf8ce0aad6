//! Offline bundles: everything a machine that cannot reach the server at install time
//! needs, on a stick; each call issues a new enrollment certificate.

use serde_json::{Value, json};

use attest_common::lifecycle::Status;
use attest_common::wire::Timestamp;

use super::{FILES_DIR, OfflineBundle};
use crate::audit_action::AuditAction;
use crate::machineconfig::BaseConfigs;
use crate::record::MachineRecord;
use crate::service::{Actor, Change, ErrorKind, Service, ServiceError, not_found};
use crate::store::{Registry, RegistryTx, token_key};

fn file(path: &str, mode: u32, content: &str) -> Value {
    json!({ "op": "create", "path": format!("{FILES_DIR}/{path}"), "permissions": mode, "content": content })
}

impl<R: Registry> Service<R> {
    /// `GET /machines/{id}/offline-bundle`: for approved machines (registered or attested)
    /// only. Each call issues a new certificate and key (audited with the serial); the
    /// MachineConfig carries them, the CA and the server key as `machine.files`.
    pub fn offline_bundle(&self, id: &str, actor: &Actor) -> Result<OfflineBundle, ServiceError> {
        let enrollment = self.enrollment()?;
        let server_key_pem = &self.response_key()?.pem();
        let configs = self.configs()?;
        let check = |record: &MachineRecord| -> Result<(), ServiceError> {
            match record.state.status {
                Status::Registered | Status::Attested => Ok(()),
                s if s.is_refused() => Err(ServiceError::new(
                    ErrorKind::Forbidden,
                    "machine_refused",
                    format!("machine {id} is {s}: no offline bundle"),
                )),
                s => Err(ServiceError::new(
                    ErrorKind::Conflict,
                    "not_approved",
                    format!("machine {id} is {s}: approve it first"),
                )),
            }
        };
        // Outside the transaction: the factory call (I/O) and the certificate.
        let record = self.machine(id)?;
        check(&record)?;
        let (Some(role), Some(hostname), Some(ip)) = (
            record.role,
            record.hostname.clone(),
            record.assigned_ip.clone(),
        ) else {
            return Err(ServiceError::new(
                ErrorKind::Conflict,
                "not_approved",
                format!("machine {id} has no role, hostname or address yet: approve it first"),
            ));
        };
        // A new long-lived token for the bundle's ISO (the registry keeps only hashes, so
        // an earlier one cannot be handed out again); it replaces the machine's previous one.
        let token = self.platform.token();
        let iso_url = self.iso_url(&token)?;
        let now = self.platform.now();
        let issued = enrollment
            .ca
            .issue(
                id,
                role.as_str(),
                &record.ek_fingerprint,
                now,
                enrollment.cert_days,
                self.platform.random.as_ref(),
            )
            .map_err(|e| ServiceError::new(ErrorKind::Internal, "certificate_failed", e))?;
        let mut config = configs.render(role, &hostname, &ip);
        let files = [
            file("enrollment.pem", 0o444, &issued.cert_pem),
            file("enrollment.key", 0o400, &issued.key_pem),
            file("enrollment-ca.pem", 0o444, enrollment.ca.cert_pem()),
            file("server-key.pem", 0o444, server_key_pem),
        ];
        match config["machine"]["files"].as_array_mut() {
            Some(existing) => existing.extend(files),
            None => config["machine"]["files"] = Value::Array(files.to_vec()),
        }
        let machineconfig = BaseConfigs::to_yaml(&config);
        self.registry.write(|tx| {
            // Re-checked: the machine may have been locked or revoked meanwhile.
            let mut current = tx.machine(id)?.ok_or_else(|| not_found(id))?;
            check(&current)?;
            current.config_token_hash = Some(token_key(&token));
            tx.put_machine(&current)?;
            let detail = format!(
                "Enrollment cert issued: machine_id={id} role={role} serial={} valid_days={}",
                issued.serial, enrollment.cert_days
            );
            Change::about(AuditAction::OfflineBundle, &current, detail).record(tx, actor, now)?;
            Ok::<_, ServiceError>(())
        })?;
        Ok(OfflineBundle {
            machine_id: id.to_owned(),
            role,
            hostname,
            iso_url,
            config_url: self.config_url(&token),
            config_token: token,
            machineconfig,
            enrollment_cert_pem: issued.cert_pem.clone(),
            enrollment_cert_serial: issued.serial.clone(),
            enrollment_cert_not_after: Timestamp(issued.not_after),
            enrollment_ca_pem: enrollment.ca.cert_pem().to_owned(),
            server_key_pem: server_key_pem.clone(),
        })
    }
}
