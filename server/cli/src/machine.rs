//! `machine …`: the operator API's machine endpoints, one command each.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use attest_api::{
    Approval, ApprovalList, ApprovePending, Machine, MachineDetail, MachineList, OfflineBundle,
};
use serde_json::{Value, json};

use crate::MachineCommand;
use crate::api::{Answer, Api};
use crate::failure::{Failure, Outcome};
use crate::output::{self, Cell, Format, relative, status_cell, text};
use crate::settings::Settings;

/// Machine ids go into URL paths: refuse anything that could change the path.
fn checked(id: &str) -> Outcome<&str> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        || id == "."
        || id == ".."
    {
        return Err(Failure::Usage(format!(
            "'{id}' is not a machine id (letters, digits, '-', '_', '.')"
        )));
    }
    Ok(id)
}

fn show_machine(m: &Machine) {
    let mut pairs = vec![
        ("machine", text(Some(&m.machine_id))),
        (
            "status",
            format!(
                "{}{}{}",
                m.status,
                if m.stale { " (stale)" } else { "" },
                if m.wipe_pending { ", wipe pending" } else { "" }
            ),
        ),
        ("role", text(m.role)),
        ("hostname", text(m.hostname.as_ref())),
        ("assigned ip", text(m.assigned_ip.as_ref())),
        ("desired role", text(m.desired_role)),
        ("ek fingerprint", text(Some(&m.ek_fingerprint))),
        ("ek source", text(Some(m.ek_source))),
        (
            "ek chain",
            match &m.ek_chain {
                attest_api::EkChain::Verified { by } => format!("verified (by {})", text(Some(by))),
                attest_api::EkChain::Unverified { reason } => {
                    format!("UNVERIFIED: {}", text(Some(reason)))
                }
                attest_api::EkChain::Unchecked => "not checked".into(),
            },
        ),
        (
            "tpm",
            if m.tpm_proven {
                "proven (credential activated)".into()
            } else {
                "NOT YET PROVEN: hardware fields and desired role are claims".into()
            },
        ),
        (
            "tpm clock",
            match &m.tpm_clock {
                Some(c) => format!(
                    "reset {} restart {} clock {} ms{} firmware {}",
                    c.reset_count,
                    c.restart_count,
                    c.clock_ms,
                    if c.safe { "" } else { " (not safe)" },
                    text(Some(&c.firmware_version))
                ),
                None => "no quote yet".into(),
            },
        ),
        ("hw serial", text(m.hw_serial.as_ref())),
        ("hw uuid", text(m.hw_uuid.as_ref())),
        (
            "created",
            format!("{} ({})", relative(Some(m.created_at)), m.created_at),
        ),
        (
            "updated",
            format!("{} ({})", relative(Some(m.updated_at)), m.updated_at),
        ),
        ("last attested", relative(m.last_attested_at)),
    ];
    if m.pcr_baseline_pinned {
        pairs.push(("pcr baseline", "pinned".into()));
    }
    output::fields(&pairs);
}

fn approvals_table(votes: &[Approval]) {
    let rows = votes
        .iter()
        .map(|v| {
            vec![
                Cell::from(text(Some(&v.operator))),
                text(Some(v.state)).into(),
                text(Some(v.role)).into(),
                text(Some(&v.hostname)).into(),
                text(Some(&v.assigned_ip)).into(),
                relative(Some(v.at)).into(),
            ]
        })
        .collect();
    output::table(
        &["OPERATOR", "VOTE", "ROLE", "HOSTNAME", "ADDRESS", "WHEN"],
        rows,
    );
}

/// Asks on stderr, reads the answer from stdin; only "y"/"yes" confirms (EOF does not).
fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Writes a secret file: created 0600, never over an existing file.
fn write_secret(path: &Path, content: &str) -> Outcome {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
    f.write_all(content.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Failure::Other(format!("{}: {e}", path.display())))
}

pub fn run(settings: &Settings, command: MachineCommand, format: Format) -> Outcome {
    let mut api = Api::new(settings);
    // A command that answers the machine: its new status, or the server's JSON.
    let done = |a: &Answer, verb: &str| {
        match format {
            Format::Json => output::json(&a.body),
            Format::Table => {
                let m: Machine = a.view()?;
                println!("machine {} {verb}: status {}", m.machine_id, m.status)
            }
        };
        Ok(())
    };
    match command {
        MachineCommand::List { status } => {
            let path = match &status {
                Some(s) => format!("/api/v1/machines?status={}", crate::login::pct(s)),
                None => "/api/v1/machines".into(),
            };
            let a = api.call("GET", &path, None)?;
            if format == Format::Json {
                output::json(&a.body);
                return Ok(());
            }
            let machines = a.view::<MachineList>()?;
            if machines.is_empty() {
                println!(
                    "no machines{}",
                    status
                        .map(|s| format!(" with status {s}"))
                        .unwrap_or_default()
                );
                return Ok(());
            }
            let rows = machines
                .iter()
                .map(|m| {
                    vec![
                        Cell::from(text(Some(&m.machine_id))),
                        status_cell(m.status, m.stale),
                        text(m.role).into(),
                        text(m.hostname.as_ref()).into(),
                        text(m.assigned_ip.as_ref()).into(),
                        m.ek_chain.word().into(),
                        relative(m.last_attested_at).into(),
                        relative(Some(m.created_at)).into(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "MACHINE", "STATUS", "ROLE", "HOSTNAME", "ADDRESS", "EK CHAIN", "ATTESTED",
                    "CREATED",
                ],
                rows,
            );
            println!("{} machine(s)", machines.len());
            Ok(())
        }
        MachineCommand::Get { id } => {
            let a = api.call("GET", &format!("/api/v1/machines/{}", checked(&id)?), None)?;
            if format == Format::Json {
                output::json(&a.body);
                return Ok(());
            }
            let detail: MachineDetail = a.view()?;
            show_machine(&detail.machine);
            if !detail.approvals.is_empty() {
                println!();
                approvals_table(&detail.approvals);
            }
            Ok(())
        }
        MachineCommand::Approve {
            id,
            role,
            hostname,
            assigned_ip,
        } => {
            let body = json!({ "role": role, "hostname": hostname, "assigned_ip": assigned_ip });
            let path = format!("/api/v1/machines/{}/approve", checked(&id)?);
            let a = api.call("POST", &path, Some(&body))?;
            match (format, a.status) {
                (Format::Json, _) => output::json(&a.body),
                (Format::Table, 202) => {
                    let p: ApprovePending = a.view()?;
                    let (received, required) = (p.approvals_received, p.approvals_required);
                    let more = required.saturating_sub(received);
                    println!(
                        "approval recorded for {id}: {received} of {required}; {more} more approval{} \
                         from another operator needed before {}",
                        if more == 1 { "" } else { "s" },
                        p.expires_at
                    );
                }
                (Format::Table, _) => {
                    let m: Machine = a.view()?;
                    println!(
                        "machine {id} approved as {} {} {}: status {}",
                        text(m.role),
                        text(m.hostname.as_ref()),
                        text(m.assigned_ip.as_ref()),
                        m.status
                    )
                }
            }
            Ok(())
        }
        MachineCommand::Reject { id, reason } => {
            let path = format!("/api/v1/machines/{}/reject", checked(&id)?);
            done(
                &api.call("POST", &path, Some(&json!({ "reason": reason })))?,
                "rejected",
            )
        }
        MachineCommand::Lock { id, reason } => {
            let path = format!("/api/v1/machines/{}/lock", checked(&id)?);
            done(
                &api.call("POST", &path, Some(&json!({ "reason": reason })))?,
                "locked",
            )
        }
        MachineCommand::Unlock { id, reason } => {
            let path = format!("/api/v1/machines/{}/unlock", checked(&id)?);
            done(
                &api.call("POST", &path, Some(&json!({ "reason": reason })))?,
                "unlocked",
            )
        }
        MachineCommand::Revoke {
            id,
            reason,
            wipe,
            yes,
        } => {
            let path = format!("/api/v1/machines/{}/revoke", checked(&id)?);
            if reason.trim().is_empty() {
                return Err(Failure::Usage("--reason must say why".into()));
            }
            let question = format!(
                "Revoke machine {id}{}? This cannot be undone.",
                if wipe {
                    " and have its agent WIPE the disk"
                } else {
                    " (its disk is NOT wiped: add --wipe for that)"
                }
            );
            if !yes && !confirm(&question) {
                return Err(Failure::NotConfirmed);
            }
            let a = api.call(
                "POST",
                &path,
                Some(&json!({ "reason": reason, "wipe": wipe })),
            )?;
            done(
                &a,
                if wipe {
                    "revoked (wipe pending)"
                } else {
                    "revoked"
                },
            )
        }
        MachineCommand::Delete { id, yes } => {
            let path = format!("/api/v1/machines/{}", checked(&id)?);
            let question = format!(
                "Delete machine {id}'s record? Only revoked and rejected machines can be deleted; \
                 its audit entries stay, and its TPM may register again as a new machine."
            );
            if !yes && !confirm(&question) {
                return Err(Failure::NotConfirmed);
            }
            api.call("DELETE", &path, None)?;
            match format {
                Format::Json => output::json(&json!({ "machine_id": id, "deleted": true })),
                Format::Table => println!("machine {id} deleted"),
            }
            Ok(())
        }
        MachineCommand::Approvals { id } => {
            let path = format!("/api/v1/machines/{}/approvals", checked(&id)?);
            let a = api.call("GET", &path, None)?;
            if format == Format::Json {
                output::json(&a.body);
                return Ok(());
            }
            let votes = a.view::<ApprovalList>()?.approvals;
            if votes.is_empty() {
                println!("no approvals recorded for {id}");
            } else {
                approvals_table(&votes);
            }
            Ok(())
        }
        MachineCommand::OfflineBundle {
            id,
            machineconfig_out,
        } => {
            if let Some(p) = &machineconfig_out
                && p.exists()
            {
                return Err(Failure::Usage(format!(
                    "{} exists: choose a new file",
                    p.display()
                )));
            }
            let path = format!("/api/v1/machines/{}/offline-bundle", checked(&id)?);
            let a = api.call("GET", &path, None)?;
            let b: OfflineBundle = a.view()?;
            if let Some(p) = &machineconfig_out {
                write_secret(p, &b.machineconfig)?;
            }
            match format {
                Format::Json => output::json(&a.body),
                Format::Table => {
                    output::fields(&[
                        ("machine", text(Some(&b.machine_id))),
                        ("role", text(Some(b.role))),
                        ("hostname", text(Some(&b.hostname))),
                        ("iso url", text(b.iso_url.as_ref())),
                        ("certificate", text(Some(&b.enrollment_cert_serial))),
                        ("valid until", text(Some(b.enrollment_cert_not_after))),
                        (
                            "machineconfig",
                            match &machineconfig_out {
                                Some(p) => format!("written to {} (0600)", p.display()),
                                None => "not written (it holds secrets): use --machineconfig-out FILE, or --output json".into(),
                            },
                        ),
                    ]);
                }
            }
            Ok(())
        }
        MachineCommand::Import { file } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Failure::Other(format!("{}: {e}", file.display())))?;
            let receipt: Value = serde_json::from_slice(&bytes).map_err(|e| {
                Failure::Usage(format!("{} is not a JSON receipt: {e}", file.display()))
            })?;
            let a = api.call("POST", "/api/v1/machines/import", Some(&receipt))?;
            done(
                &a,
                if a.status == 201 {
                    "imported (new)"
                } else {
                    "already known"
                },
            )
        }
    }
}
