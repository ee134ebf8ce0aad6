//! The server's keys beside a registry (DESIGN.md §3.7, §5): the response key (agents pin
//! it), the activation key (credentials in flight are made with it) and the Enrollment CA
//! (outstanding enrollment certificates chain to it). A start never makes one anew beside a
//! registry that has machines: a missing file is a lost file, to restore from a backup;
//! replacing one on purpose is `attestation-server rotate`, audited.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use attest_server::config::Config;
use attest_server::enrollment::{EnrollmentCa, ca_files};
use attest_server::service::{Actor, Service};
use attest_server::store::redb::RedbRegistry;

/// What `attestation-server rotate` replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rotated {
    /// `ITL_DATA_DIR/response-key`: every agent must then be given the new public key.
    ResponseKey,
    /// `ITL_DATA_DIR/activation-key`: machines whose AK is not activated yet register again.
    ActivationKey,
    /// `ITL_ENROLLMENT_CA_DIR/ca.key` and `ca.pem`: outstanding enrollment certificates stop
    /// verifying; bundles issued from now on carry the new CA.
    EnrollmentCa,
}

impl Rotated {
    fn files(self, config: &Config) -> Vec<PathBuf> {
        match self {
            Rotated::ResponseKey => {
                vec![config.data_dir.join(attest_server::responsekey::FILE_NAME)]
            }
            Rotated::ActivationKey => vec![config.data_dir.join("activation-key")],
            Rotated::EnrollmentCa => {
                let (key, cert) = ca_files(&config.enrollment_ca_dir);
                vec![key, cert]
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Rotated::ResponseKey => "response key",
            Rotated::ActivationKey => "activation key",
            Rotated::EnrollmentCa => "Enrollment CA",
        }
    }

    fn command(self) -> &'static str {
        match self {
            Rotated::ResponseKey => "response-key",
            Rotated::ActivationKey => "activation-key",
            Rotated::EnrollmentCa => "enrollment-ca",
        }
    }

    /// What losing it breaks, for the refusal.
    fn breaks(self) -> &'static str {
        match self {
            Rotated::ResponseKey => {
                "every agent pinned its public half: a new key would make every answer \
                 unverifiable to them"
            }
            Rotated::ActivationKey => {
                "credentials already handed out were made with it: machines whose AK is not \
                 activated yet could never activate it"
            }
            Rotated::EnrollmentCa => {
                "outstanding enrollment certificates chain to it: every offline-installed \
                 node would be refused"
            }
        }
    }
}

/// The machines in the registry file, read read-only (nothing written): `Some(0)` when there
/// is no file, `None` when it cannot be read so (not closed cleanly, which redb repairs as it
/// opens; damaged, refused as it opens; or in use).
pub fn machines_before_open(config: &Config) -> Option<u64> {
    let path = config.database_path();
    match path.exists() {
        false => Some(0),
        true => RedbRegistry::machines_in_file(&path).ok(),
    }
}

/// Refuses to start when a key or the CA is missing beside a registry with `machines` (a
/// registry that could not be counted read-only counts as having some). Run before the
/// registry is opened for writing and before anything is made: a refused start writes
/// nothing.
pub fn refuse_missing(config: &Config, machines: u64) -> Result<(), ExitCode> {
    if machines == 0 {
        return Ok(());
    }
    for what in [
        Rotated::ResponseKey,
        Rotated::ActivationKey,
        Rotated::EnrollmentCa,
    ] {
        let missing: Vec<PathBuf> = what
            .files(config)
            .into_iter()
            .filter(|f| !f.exists())
            .collect();
        // A half-missing CA is refused by its loader, naming the file.
        let all_missing = missing.len() == what.files(config).len();
        if all_missing {
            eprintln!(
                "attestation-server: refusing to start: the {} ({}) is missing beside a \
                 registry that has machines; {}. Restore it from the backup of {} (the \
                 registry's own backups do not hold it); to replace it on purpose, stop here \
                 and run `attestation-server rotate {}`",
                what.name(),
                missing[0].display(),
                what.breaks(),
                missing[0].parent().unwrap_or(Path::new(".")).display(),
                what.command()
            );
            return Err(ExitCode::FAILURE);
        }
    }
    Ok(())
}

/// `attestation-server rotate WHAT`, with the service stopped: the current files are kept
/// beside, renamed `<name>.retired-<unix time>`; new ones are made; the registry's audit log
/// records it (`key-rotated`).
pub fn rotate(config: &Config, what: Rotated) -> ExitCode {
    let fail = |m: String| {
        eprintln!("attestation-server: rotate {}: {m}", what.command());
        ExitCode::FAILURE
    };
    let store = match RedbRegistry::open(&config.database_path()) {
        Ok(s) => s,
        Err(e) => {
            return fail(format!(
                "cannot open the registry {} (stop the service first): {e}",
                config.database_path().display()
            ));
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut kept = Vec::new();
    for file in what.files(config) {
        if file.exists() {
            let aside = file.with_file_name(format!(
                "{}.retired-{now}",
                file.file_name().and_then(|n| n.to_str()).unwrap_or("key")
            ));
            if let Err(e) = std::fs::rename(&file, &aside) {
                return fail(format!("cannot move {} aside: {e}", file.display()));
            }
            kept.push((file, aside));
        }
    }
    let made = match what {
        Rotated::ResponseKey => attest_server::responsekey::load_or_create(&config.data_dir)
            .and_then(|(key, _)| {
                attest_server::service::ResponseKey::new(&key)
                    .map(|k| format!("new public key:\n{}", k.pem()))
            }),
        Rotated::ActivationKey => attest_server::secret_file::load_or_create(
            &config.data_dir.join("activation-key"),
            48,
            "activation key",
            |b| getrandom::fill(b).expect("the operating system's random number generator failed"),
            |_| true,
        )
        .map(|_| "new activation key made".to_owned()),
        Rotated::EnrollmentCa => EnrollmentCa::load_or_generate(&config.enrollment_ca_dir)
            .map(|(ca, _)| format!("new Enrollment CA serial={}", ca.serial())),
    };
    let made = match made {
        Ok(m) => m,
        Err(e) => {
            // Nothing half-made stays: the old files go back.
            for file in what.files(config) {
                let _ = std::fs::remove_file(file);
            }
            for (file, aside) in &kept {
                let _ = std::fs::rename(aside, file);
            }
            return fail(format!("{e} (the old files are back in place)"));
        }
    };
    let kept = match kept.is_empty() {
        true => "none was there".to_owned(),
        false => format!(
            "the old one kept as {}",
            kept.iter()
                .map(|(_, aside)| aside.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let detail = format!("{} rotated: {kept}", capitalised(what.name()));
    let service = Service::new(store);
    if let Err(e) = service.audit_rotation(detail.clone(), &Actor::system()) {
        return fail(format!("{detail}, but the audit entry failed: {e}"));
    }
    println!("{detail}; {made}");
    ExitCode::SUCCESS
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
