//! `attestation-server`: runs the control plane with configuration from `ITL_*` variables
//! (`run`), copies its registry (`backup`), or replaces a key on purpose (`rotate`).

mod backup;
mod keys;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use attest_server::config::{Config, ConfigError};
use attest_server::log;
use clap::{Parser, Subcommand};

/// `ITL_SHUTDOWN_TIMEOUT_SECONDS` unless set.
const DEFAULT_SHUTDOWN_SECONDS: u64 = 10;

#[derive(Parser)]
#[command(
    name = "attestation-server",
    version,
    about = "TPM attestation control plane for Talos Linux fleets.",
    long_about = "TPM attestation control plane for Talos Linux fleets. Without a command, runs the \
                  service until SIGTERM or SIGINT (graceful shutdown).",
    after_help = "Configuration comes from ITL_* environment variables (ITL_LISTEN, ITL_DATA_DIR, \
                  ITL_ADMIN_TOKEN, ...); logging from RUST_LOG and ITL_LOG_FORMAT. See \
                  README.md, \"Running the server\".",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Replace the response key, the activation key or the Enrollment CA on purpose, with the
    /// service stopped (the old files kept beside; audited `key-rotated`)
    Rotate {
        #[arg(value_enum)]
        what: keys::Rotated,
    },
    /// Consistent copy of the registry (audit chain verified), also while the service runs
    Backup {
        /// The new file to write (it must not exist)
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
}

fn main() -> ExitCode {
    // Bad usage: clap exits 2; --help and --version exit 0.
    let cli = Cli::parse();
    // HTTP parsing and JSON run on smol's global executor: one thread per core unless the
    // operator says otherwise (smol's own default is a single thread).
    if std::env::var_os("SMOL_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: nothing else runs yet; no thread reads the environment concurrently.
        unsafe { std::env::set_var("SMOL_THREADS", cores.to_string()) };
    }
    if let Err(e) = log::init_from_env() {
        eprintln!("attestation-server: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("attestation-server: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Backup { to }) => backup::backup(&config, &to),
        Some(Command::Rotate { what }) => keys::rotate(&config, what),
        None => match shutdown_timeout(std::env::var("ITL_SHUTDOWN_TIMEOUT_SECONDS").ok()) {
            Ok(grace) => run::run(config, grace),
            Err(e) => {
                eprintln!("attestation-server: invalid configuration: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// `ITL_SHUTDOWN_TIMEOUT_SECONDS`: how long a shutdown lets requests in progress finish.
fn shutdown_timeout(value: Option<String>) -> Result<Duration, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(Duration::from_secs(DEFAULT_SHUTDOWN_SECONDS)),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|&s| s <= 3600)
            .map(Duration::from_secs)
            .ok_or_else(|| ConfigError {
                variable: "ITL_SHUTDOWN_TIMEOUT_SECONDS",
                message: format!(
                    "{:?} is not a number of seconds from 0 to 3600",
                    log::escape(v)
                ),
            }),
    }
}
