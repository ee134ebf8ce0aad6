//! `machine …`: the operator API's machine endpoints, one command each.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde_json::{Value, json};

use crate::MachineCommand;
use crate::api::Api;
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

fn show_machine(m: &Value) {
    let mut pairs = vec![
        ("machine", text(&m["machine_id"])),
        (
            "status",
            format!(
                "{}{}{}",
                text(&m["status"]),
                if m["stale"] == true { " (stale)" } else { "" },
                if m["wipe_pending"] == true {
                    ", wipe pending"
                } else {
                    ""
                }
            ),
        ),
        ("role", text(&m["role"])),
        ("hostname", text(&m["hostname"])),
        ("assigned ip", text(&m["assigned_ip"])),
        ("desired role", text(&m["desired_role"])),
        ("ek fingerprint", text(&m["ek_fingerprint"])),
        ("ek source", text(&m["ek_source"])),
        ("hw serial", text(&m["hw_serial"])),
        ("hw uuid", text(&m["hw_uuid"])),
        (
            "created",
            format!(
                "{} ({})",
                relative(&m["created_at"]),
                text(&m["created_at"])
            ),
        ),
        (
            "updated",
            format!(
                "{} ({})",
                relative(&m["updated_at"]),
                text(&m["updated_at"])
            ),
        ),
        ("last attested", relative(&m["last_attested_at"])),
    ];
    if m["pcr_baseline_pinned"] == true {
        pairs.push(("pcr baseline", "pinned".into()));
    }
    output::fields(&pairs);
}

fn approvals_table(votes: &Value) {
    let rows = votes
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            vec![
                Cell::from(text(&v["operator"])),
                text(&v["state"]).into(),
                text(&v["role"]).into(),
                text(&v["hostname"]).into(),
                text(&v["assigned_ip"]).into(),
                relative(&v["at"]).into(),
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
    let done = |a: &Value, verb: &str| {
        match format {
            Format::Json => output::json(a),
            Format::Table => println!(
                "machine {} {verb}: status {}",
                text(&a["machine_id"]),
                text(&a["status"])
            ),
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
            let machines = a.body["machines"].as_array().cloned().unwrap_or_default();
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
                        Cell::from(text(&m["machine_id"])),
                        status_cell(m["status"].as_str().unwrap_or("?"), m["stale"] == true),
                        text(&m["role"]).into(),
                        text(&m["hostname"]).into(),
                        text(&m["assigned_ip"]).into(),
                        relative(&m["last_attested_at"]).into(),
                        relative(&m["created_at"]).into(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "MACHINE", "STATUS", "ROLE", "HOSTNAME", "ADDRESS", "ATTESTED", "CREATED",
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
            show_machine(&a.body);
            let votes = &a.body["approvals"];
            if votes.as_array().is_some_and(|v| !v.is_empty()) {
                println!();
                approvals_table(votes);
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
                    let received = a.body["approvals_received"].as_u64().unwrap_or(0);
                    let required = a.body["approvals_required"].as_u64().unwrap_or(0);
                    let more = required.saturating_sub(received);
                    println!(
                        "approval recorded for {id}: {received} of {required}; {more} more approval{} \
                         from another operator needed before {}",
                        if more == 1 { "" } else { "s" },
                        text(&a.body["expires_at"])
                    );
                }
                (Format::Table, _) => println!(
                    "machine {id} approved as {} {} {}: status {}",
                    text(&a.body["role"]),
                    text(&a.body["hostname"]),
                    text(&a.body["assigned_ip"]),
                    text(&a.body["status"])
                ),
            }
            Ok(())
        }
        MachineCommand::Reject { id, reason } => {
            let path = format!("/api/v1/machines/{}/reject", checked(&id)?);
            done(
                &api.call("POST", &path, Some(&json!({ "reason": reason })))?
                    .body,
                "rejected",
            )
        }
        MachineCommand::Lock { id, reason } => {
            let path = format!("/api/v1/machines/{}/lock", checked(&id)?);
            done(
                &api.call("POST", &path, Some(&json!({ "reason": reason })))?
                    .body,
                "locked",
            )
        }
        MachineCommand::Unlock { id, reason } => {
            let path = format!("/api/v1/machines/{}/unlock", checked(&id)?);
            done(
                &api.call("POST", &path, Some(&json!({ "reason": reason })))?
                    .body,
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
                    ""
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
                &a.body,
                if wipe {
                    "revoked (wipe pending)"
                } else {
                    "revoked"
                },
            )
        }
        MachineCommand::Approvals { id } => {
            let path = format!("/api/v1/machines/{}/approvals", checked(&id)?);
            let a = api.call("GET", &path, None)?;
            if format == Format::Json {
                output::json(&a.body);
            } else if a.body["approvals"].as_array().is_none_or(|v| v.is_empty()) {
                println!("no approvals recorded for {id}");
            } else {
                approvals_table(&a.body["approvals"]);
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
            let b = &a.body;
            if let Some(p) = &machineconfig_out {
                let yaml = b["machineconfig"]
                    .as_str()
                    .ok_or_else(|| Failure::Other("the bundle has no machineconfig".into()))?;
                write_secret(p, yaml)?;
            }
            match format {
                Format::Json => output::json(b),
                Format::Table => {
                    output::fields(&[
                        ("machine", text(&b["machine_id"])),
                        ("role", text(&b["role"])),
                        ("hostname", text(&b["hostname"])),
                        ("iso url", text(&b["iso_url"])),
                        ("certificate", text(&b["enrollment_cert_serial"])),
                        ("valid until", text(&b["enrollment_cert_not_after"])),
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
                &a.body,
                if a.status == 201 {
                    "imported (new)"
                } else {
                    "already known"
                },
            )
        }
    }
}
