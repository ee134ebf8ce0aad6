//! `audit list | verify | checkpoints | actions`.
//!
//! `verify` takes the server's verdict (the chain recomputed and checked against its signed
//! checkpoints) and checks the checkpoints itself: every one the server holds must be signed
//! by the server's key (pinned with `--server-key`, or fetched with a warning), and every one
//! kept elsewhere (`--checkpoints`) must still be in the server's log with the same entry
//! hash. That is what catches a server whose file, checkpoints table included, was rewritten.

use std::path::Path;

use attest_api::{AuditCheckpoint, AuditPage, AuditVerification, VerifyingKey};

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
            // Newest first, as the server sends it.
            let audit: AuditPage = a.view()?;
            let rows = audit
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
            let total = a.total.unwrap_or(audit.len() as u64);
            let pages = total.div_ceil(per_page.max(1) as u64).max(1);
            println!("page {page} of {pages} ({total} entries)");
            Ok(())
        }
        AuditCommand::Verify {
            server_key,
            checkpoints,
        } => verify(
            &mut api,
            server_key.as_deref(),
            checkpoints.as_deref(),
            format,
        ),
        AuditCommand::Checkpoints => {
            let a = api.call("GET", "/api/v1/audit/checkpoints", None)?;
            // Read as checkpoints first: what is printed is what `verify --checkpoints` reads.
            let _: Vec<AuditCheckpoint> = a.view()?;
            output::json(&a.body);
            Ok(())
        }
    }
}

/// At most this many problems are named; the rest are counted.
const NAMED: usize = 5;

fn verify(
    api: &mut Api,
    server_key: Option<&Path>,
    kept: Option<&Path>,
    format: Format,
) -> Outcome {
    // What is local first: a bad file is said before anything is asked of the server.
    let pinned = server_key.map(read_server_key).transpose()?;
    let kept = kept
        .map(|p| read_checkpoints(p).map(|c| (p, c)))
        .transpose()?;
    // The checkpoints before the verification (which may add one): every one listed must be
    // within the log the verification then reads.
    let held: Vec<AuditCheckpoint> = api.call("GET", "/api/v1/audit/checkpoints", None)?.view()?;
    let a = api.call("GET", "/api/v1/audit/verify", None)?;
    let v: AuditVerification = a.view()?;
    // Which key checks the checkpoints, named in what is said about them.
    let (key, which) = match (pinned, server_key) {
        (Some(key), Some(path)) => (key, format!("the pinned server key ({})", path.display())),
        _ => {
            eprintln!(
                "attestation: warning: the server's key was fetched from the server, not pinned: \
                 a server whose key and checkpoints were both replaced would pass; pin it with \
                 --server-key FILE (the PEM of GET /api/v1/server-key, kept from before)"
            );
            (
                fetch_server_key(api)?,
                "the server's key (fetched, not pinned)".to_owned(),
            )
        }
    };

    let mut problems = Vec::new();
    if !v.valid {
        problems.push(format!(
            "first bad entry {}: {}",
            text(v.first_invalid_id),
            text(v.error.as_ref())
        ));
    }
    if let Some((path, kept)) = &kept {
        problems.extend(check_kept(path, kept, &held, &key, &which));
    }
    problems.extend(check_held(&held, &key, &which));
    if let Some(c) = &v.latest_checkpoint
        && !held.contains(c)
        && c.verify(&key).is_err()
    {
        problems.push(format!(
            "the verification's checkpoint {}: its signature does not verify with {which}",
            c.seq
        ));
    }
    if v.valid
        && let Some(last) = held.last()
        && last.seq > v.entries
    {
        problems.push(format!(
            "the log ends at seq {} but the server's checkpoint signed seq {}",
            v.entries, last.seq
        ));
    }

    if format == Format::Json {
        output::json(&a.body);
    }
    if !problems.is_empty() {
        let more = problems.len().saturating_sub(NAMED);
        let mut said = problems[..problems.len().min(NAMED)].join("; ");
        if more > 0 {
            said.push_str(&format!("; and {more} more"));
        }
        return Err(Failure::AuditInvalid(said));
    }
    if format == Format::Table {
        println!(
            "valid: {} entries, chain head {}",
            v.entries,
            text(Some(&v.root_hash))
        );
        let latest = v.latest_checkpoint.as_ref().or(held.last());
        match latest {
            Some(c) => println!(
                "checkpoints: {} signed by {which}; latest seq {}",
                held.len().max(v.checkpoints as usize),
                c.seq
            ),
            None => println!("checkpoints: none yet"),
        }
        if let Some((path, kept)) = &kept {
            println!(
                "kept checkpoints: all {} in {} are still in the server's log",
                kept.len(),
                path.display()
            );
        }
    }
    Ok(())
}

/// The server's own checkpoints: each signed by `key` (those that are not, said in one
/// problem), in seq order, dated in that order.
fn check_held(held: &[AuditCheckpoint], key: &VerifyingKey, which: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let unsigned: Vec<u64> = held
        .iter()
        .filter(|c| c.verify(key).is_err())
        .map(|c| c.seq)
        .collect();
    if !unsigned.is_empty() {
        problems.push(format!(
            "{} of the server's {} checkpoints do not verify with {which} (seq {})",
            unsigned.len(),
            held.len(),
            seq_list(unsigned.iter().copied())
        ));
    }
    let mut before: Option<&AuditCheckpoint> = None;
    for c in held {
        if let Some(b) = before {
            if c.seq <= b.seq {
                problems.push(format!(
                    "the server's checkpoints are out of order ({} after {})",
                    c.seq, b.seq
                ));
            } else if c.timestamp < b.timestamp {
                problems.push(format!(
                    "the server's checkpoint {} is dated before checkpoint {}",
                    c.seq, b.seq
                ));
            }
        }
        before = Some(c);
    }
    problems
}

/// Checkpoints kept elsewhere: each signed by `key`, and still in the server's log with the
/// same entry hash.
fn check_kept(
    path: &Path,
    kept: &[AuditCheckpoint],
    held: &[AuditCheckpoint],
    key: &VerifyingKey,
    which: &str,
) -> Vec<String> {
    let file = path.display();
    let mut problems = Vec::new();
    let (signed, unsigned): (Vec<&AuditCheckpoint>, Vec<&AuditCheckpoint>) =
        kept.iter().partition(|c| c.verify(key).is_ok());
    if !unsigned.is_empty() {
        problems.push(format!(
            "{} of the {} checkpoints in {file} do not verify with {which} (seq {})",
            unsigned.len(),
            kept.len(),
            seq_list(unsigned.iter().map(|c| c.seq))
        ));
    }
    for c in signed {
        match held.iter().find(|h| h.seq == c.seq) {
            None => problems.push(format!(
                "checkpoint {} in {file} is gone from the server's log",
                c.seq
            )),
            Some(h) if h.entry_hash != c.entry_hash => problems.push(format!(
                "checkpoint {} in {file} signed entry hash {}, the server's checkpoint {} has {}",
                c.seq,
                short(&c.entry_hash.0),
                h.seq,
                short(&h.entry_hash.0)
            )),
            Some(_) => {}
        }
    }
    problems
}

/// `5, 10, 15, 20, 25, …`: the first few seqs.
fn seq_list(seqs: impl ExactSizeIterator<Item = u64>) -> String {
    let more = seqs.len() > NAMED;
    let mut named: Vec<String> = seqs.take(NAMED).map(|s| s.to_string()).collect();
    if more {
        named.push("…".into());
    }
    named.join(", ")
}

fn short(hash: &[u8; 48]) -> String {
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}…")
}

/// A P-384 public key from a PEM file (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo).
fn read_server_key(path: &Path) -> Outcome<VerifyingKey> {
    use base64ct::Encoding;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Other(format!("cannot read {}: {e}", path.display())))?;
    let not_key = |why: &str| {
        Failure::Other(format!(
            "{} is not the server's public key ({why}): expected the PEM of GET /api/v1/server-key",
            path.display()
        ))
    };
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return Err(not_key("no PUBLIC KEY block"));
    }
    let der = base64ct::Base64::decode_vec(&body).map_err(|_| not_key("bad base64"))?;
    attest_common::nonce::verifying_key_from_spki(&der).map_err(|e| not_key(&e.to_string()))
}

/// The response key as the server publishes it (`public_key_der`, base64).
fn fetch_server_key(api: &mut Api) -> Outcome<VerifyingKey> {
    use base64ct::Encoding;
    let a = api.call("GET", "/api/v1/server-key", None)?;
    let bad = |why: String| Failure::Other(format!("GET /api/v1/server-key: {why}"));
    let der = a.body["public_key_der"]
        .as_str()
        .ok_or_else(|| bad("no public_key_der".into()))?;
    let der = base64ct::Base64::decode_vec(der).map_err(|e| bad(e.to_string()))?;
    attest_common::nonce::verifying_key_from_spki(&der).map_err(|e| bad(e.to_string()))
}

/// A JSON array of checkpoints (what `attestation audit checkpoints` prints).
fn read_checkpoints(path: &Path) -> Outcome<Vec<AuditCheckpoint>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Other(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        Failure::Other(format!(
            "{} is not a list of checkpoints (from `attestation audit checkpoints`): {e}",
            path.display()
        ))
    })
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
