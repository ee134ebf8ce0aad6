//! `audit list | verify`.

use crate::AuditCommand;
use crate::api::Api;
use crate::failure::{Failure, Outcome};
use crate::output::{self, Cell, Format, text};
use crate::settings::Settings;

pub fn run(settings: &Settings, command: AuditCommand, format: Format) -> Outcome {
    let mut api = Api::new(settings);
    match command {
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
            let entries = a.body["entries"].as_array().cloned().unwrap_or_default();
            let rows = entries
                .iter()
                .map(|e| {
                    let at = e["timestamp"].as_u64().unwrap_or(0);
                    let transition = match (e["prev_state"].as_str(), e["new_state"].as_str()) {
                        (Some(a), Some(b)) if a != b => format!("{a} → {b}"),
                        (_, Some(b)) => b.to_owned(),
                        _ => "-".into(),
                    };
                    vec![
                        Cell::from(text(&e["seq"])),
                        output::relative_secs(at, crate::session::now()).into(),
                        text(&e["operator_cn"]).into(),
                        text(&e["action"]).into(),
                        text(&e["machine_id"]).into(),
                        transition.into(),
                        text(&e["detail"]).into(),
                    ]
                })
                .collect();
            output::table(
                &["SEQ", "WHEN", "WHO", "ACTION", "MACHINE", "STATE", "DETAIL"],
                rows,
            );
            let total = a.body["total"].as_u64().unwrap_or(0);
            let pages = total.div_ceil(per_page.max(1) as u64).max(1);
            println!("page {page} of {pages} ({total} entries)");
            Ok(())
        }
        AuditCommand::Verify => {
            let a = api.call("GET", "/api/v1/audit/verify", None)?;
            let v = &a.body;
            if format == Format::Json {
                output::json(v);
            }
            if v["valid"] == true {
                if format == Format::Table {
                    println!(
                        "valid: {} entries, chain head {}",
                        text(&v["entries"]),
                        text(&v["root_hash"])
                    );
                }
                Ok(())
            } else {
                Err(Failure::AuditInvalid(format!(
                    "first bad entry {}: {}",
                    text(&v["first_invalid_id"]),
                    text(&v["error"])
                )))
            }
        }
    }
}
