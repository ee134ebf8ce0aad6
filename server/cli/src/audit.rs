//! `audit list | verify | actions`.

use attest_api::{AuditPage, AuditVerification};

use crate::AuditCommand;
use crate::api::Api;
use crate::failure::{Failure, Outcome};
use crate::output::{self, Cell, Format, text};
use crate::settings::Settings;

pub fn run(settings: &Settings, command: AuditCommand, format: Format) -> Outcome {
    if let AuditCommand::Actions = command {
        return actions(format);
    }
    let mut api = Api::new(settings);
    match command {
        AuditCommand::Actions => actions(format),
        AuditCommand::List {
            page,
            per_page,
            machine_id,
        } => {
            let mut path = format!("/api/v1/audit?page={page}&per_page={per_page}");
            if let Some(m) = &machine_id {
                path.push_str(&format!("&machine_id={}", crate::login::pct(m)));
            }
            let a = api.call("GET", &path, None)?;
            if format == Format::Json {
                output::json(&a.body);
                return Ok(());
            }
            let audit: AuditPage = a.view()?;
            let rows = audit
                .entries
                .iter()
                .map(|e| {
                    let transition = match (e.prev_state.as_deref(), e.new_state.as_deref()) {
                        (Some(a), Some(b)) if a != b => format!("{a} → {b}"),
                        (_, Some(b)) => b.to_owned(),
                        _ => "-".into(),
                    };
                    vec![
                        Cell::from(e.seq.to_string()),
                        output::relative_secs(e.timestamp, crate::session::now()).into(),
                        text(Some(&e.operator_cn)).into(),
                        text(Some(&e.action)).into(),
                        text(e.machine_id.as_ref()).into(),
                        transition.into(),
                        text(Some(&e.detail)).into(),
                    ]
                })
                .collect();
            output::table(
                &["SEQ", "WHEN", "WHO", "ACTION", "MACHINE", "STATE", "DETAIL"],
                rows,
            );
            let total = audit.total;
            let pages = total.div_ceil(per_page.max(1) as u64).max(1);
            println!("page {page} of {pages} ({total} entries)");
            Ok(())
        }
        AuditCommand::Verify => {
            let a = api.call("GET", "/api/v1/audit/verify", None)?;
            let v: AuditVerification = a.view()?;
            if format == Format::Json {
                output::json(&a.body);
            }
            if v.valid {
                if format == Format::Table {
                    println!(
                        "valid: {} entries, chain head {}",
                        v.entries,
                        text(Some(&v.root_hash))
                    );
                }
                Ok(())
            } else {
                Err(Failure::AuditInvalid(format!(
                    "first bad entry {}: {}",
                    text(v.first_invalid_id),
                    text(v.error.as_ref())
                )))
            }
        }
    }
}

/// The actions the audit log records (no server needed).
fn actions(format: Format) -> Outcome {
    use attest_api::AuditAction;
    if format == Format::Json {
        let list: Vec<_> = AuditAction::ALL
            .iter()
            .map(|a| serde_json::json!({ "action": a.as_str(), "description": a.description() }))
            .collect();
        output::json(&serde_json::Value::Array(list));
        return Ok(());
    }
    let rows = AuditAction::ALL
        .iter()
        .map(|a| vec![Cell::from(a.as_str().to_owned()), a.description().into()])
        .collect();
    output::table(&["ACTION", "MEANING"], rows);
    Ok(())
}
