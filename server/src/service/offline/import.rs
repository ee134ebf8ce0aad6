//! `POST /machines/import`: a TPM receipt made offline, brought in by an operator.

use attest_common::lifecycle::{Event, State, Status, transition};
use attest_common::wire::TpmReceipt;

use super::Admitted;
use crate::audit_action::AuditAction;
use crate::record::MachineRecord;
use crate::service::register::{check_identity, describe, refuse_known_key};
use crate::service::{Actor, Change, ErrorKind, Service, ServiceError};
use crate::store::{Registry, RegistryTx};

impl<R: Registry> Service<R> {
    /// `POST /machines/import` (operator): a TPM receipt made offline by `attest-agent
    /// receipt`. The fingerprint must match the EK material (422 otherwise); a known EK
    /// answers its machine unchanged; a new one is `registered`. An AK in the receipt is
    /// kept; its credential is made when the agent first registers online.
    pub fn import(&self, receipt: &TpmReceipt, actor: &Actor) -> Result<Admitted, ServiceError> {
        if receipt.format != TpmReceipt::FORMAT {
            return Err(ServiceError::new(
                ErrorKind::BadRequest,
                "unsupported_receipt",
                format!(
                    "receipt format {} (this server reads format {})",
                    receipt.format,
                    TpmReceipt::FORMAT
                ),
            ));
        }
        let req = &receipt.identity;
        let (ek, _) = check_identity(req, self.ak_policy())?;
        let fp = req.ek_fingerprint.to_string();
        let now = self.platform.now();
        let ek_chain = self.ek_chain_verdict(req, &ek, now)?;
        self.registry.write(|tx| {
            if let Some(existing) = tx.machine_by_ek(&fp)? {
                return Ok(Admitted {
                    machine: existing,
                    created: false,
                });
            }
            let t = transition(None, Event::Register)?;
            let mut record = MachineRecord::new(
                self.platform.machine_id(),
                fp.clone(),
                req.ek_source,
                t.to.unwrap_or(State::new(Status::Registered)),
                now,
            );
            ek.store(&mut record);
            record.ak_public = req.ak_public.as_ref().map(|p| p.to_vec());
            describe(&mut record, req);
            record.ek_chain = ek_chain;
            refuse_known_key(tx, &record, true)?;
            tx.put_machine(&record)?;
            let detail = format!(
                "New machine imported: id={} ek={fp} agent={} receipt_created_at={}",
                record.id, receipt.agent_version, receipt.created_at
            );
            Change::of(AuditAction::Import, &record, None, detail).record(tx, actor, now)?;
            Ok(Admitted {
                machine: record,
                created: true,
            })
        })
    }
}
