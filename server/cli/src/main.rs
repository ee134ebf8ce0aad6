//! `attestation`: the operator CLI. Everything an operator does to the fleet, without curl:
//! OIDC login (PKCE with a loopback redirect, device flow), machines (list, detail, approve
//! with role, hostname and address, reject, lock, unlock, revoke with wipe, offline bundles,
//! receipt import) and the audit log. Exit statuses: see `failure.rs` and the README.
//!
//! Its own crate, apart from the server: it reads the server's answers into `attest-api`'s
//! views and never links the server, redb or aws-lc-rs (`tests/deps.rs`), so an operator
//! installs it with `cargo install --path server/cli`.

mod api;
mod audit;
mod auth;
mod failure;
mod login;
mod machine;
mod output;
mod session;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use failure::{Failure, Outcome};
use output::Format;
use settings::{Given, Settings};

#[derive(Parser)]
#[command(
    name = "attestation",
    version,
    about = "Operator CLI for the attestation server"
)]
struct Cli {
    /// Server base URL [default: http://127.0.0.1:8080, or api_url in the config file].
    #[arg(long, env = "ATTESTATION_API_URL", global = true)]
    api_url: Option<String>,
    /// OpenID provider (issuer URL).
    #[arg(long, env = "ATTESTATION_OIDC_ISSUER", global = true)]
    issuer: Option<String>,
    /// OAuth client id of this CLI at the provider [default: attestation-cli].
    #[arg(long, env = "ATTESTATION_CLIENT_ID", global = true)]
    client_id: Option<String>,
    /// CA certificates (PEM) to trust besides the roots (the Web PKI's, or SSL_CERT_FILE's
    /// when it is set), e.g. the private CA of the server's certificate.
    #[arg(long, env = "ATTESTATION_CA_FILE", global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Config file [default: $XDG_CONFIG_HOME/attestation/config.toml].
    #[arg(long, env = "ATTESTATION_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Output format; `json` prints only the server's JSON on stdout.
    #[arg(long, short, value_enum, default_value = "table", global = true)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the server answers /healthz; exit 0 only when healthy.
    Health,
    /// Log in to the OpenID provider, show who you are, log out.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Machines: list, inspect, approve, lock, revoke, offline bundles, receipts.
    #[command(subcommand)]
    Machine(MachineCommand),
    /// The audit log: list entries, verify the hash chain and its signed checkpoints.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Sign in (authorization code + PKCE through a loopback redirect on 127.0.0.1).
    Login(LoginArgs),
    /// Show the identity, roles and expiry of the session, and what the server sees.
    Whoami,
    /// Forget the session (and revoke its refresh token at the provider).
    Logout,
}

#[derive(Args)]
pub struct LoginArgs {
    /// Use the device-authorization flow (sign in on another device).
    #[arg(long, conflicts_with = "password")]
    pub device: bool,
    /// Use the password grant (only for providers that allow it); the password is read from
    /// stdin.
    #[arg(long, requires = "username")]
    pub password: bool,
    /// User name for --password.
    #[arg(long)]
    pub username: Option<String>,
    /// Do not try to open a browser (the URL is printed either way).
    #[arg(long)]
    pub no_browser: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Subcommand)]
pub enum MachineCommand {
    /// List machines.
    List {
        /// Only machines in this status (pending_approval, registered, attested, locked, revoked,
        /// rejected).
        #[arg(long)]
        status: Option<String>,
    },
    /// A machine's detail, with its approvals.
    Get { id: String },
    /// Approve a machine with its role, hostname and address (one vote under dual control).
    Approve {
        id: String,
        /// controlplane, worker-app or worker-data.
        #[arg(long)]
        role: String,
        #[arg(long)]
        hostname: String,
        /// Address with prefix, e.g. 10.0.0.5/24.
        #[arg(long)]
        assigned_ip: String,
    },
    /// Reject a pending machine.
    Reject {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lock a machine: its agent is told to lock; no config is served.
    Lock {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Unlock a locked machine.
    Unlock {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Revoke a machine for good (asks for confirmation unless --yes); its disk is wiped only
    /// with --wipe.
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
        /// Also tell its agent to wipe the disk (once).
        #[arg(long)]
        wipe: bool,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// Delete a revoked or rejected machine's record (its audit entries stay); its TPM may
    /// then register again as a new machine. Asks for confirmation unless --yes.
    Delete {
        id: String,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// The approval votes recorded for a machine.
    Approvals { id: String },
    /// Issue an offline bundle (enrollment certificate, MachineConfig) for an approved machine.
    OfflineBundle {
        id: String,
        /// Write the MachineConfig (YAML, with secrets) to this file, mode 0600.
        #[arg(long)]
        machineconfig_out: Option<PathBuf>,
    },
    /// Import a TPM receipt (from `attest-agent receipt` or `relay --receipt-out`).
    Import { file: PathBuf },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Audit entries, newest first: page 1 is the most recent.
    List {
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long, default_value_t = 50)]
        per_page: usize,
        #[arg(long)]
        machine_id: Option<String>,
    },
    /// Recompute the hash chain and check it against the server's signed checkpoints, whose
    /// signatures this CLI checks too; exit 0 only when all is valid.
    Verify {
        /// The server's public key (PEM, from `GET /api/v1/server-key` kept beforehand) to
        /// check the checkpoints with; without it the key is fetched from the server, which
        /// is not pinning it.
        #[arg(long, value_name = "FILE")]
        server_key: Option<PathBuf>,
        /// Checkpoints exported earlier (`attestation audit checkpoints > FILE`): each must
        /// still be in the server's log with the same entry hash.
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<PathBuf>,
    },
    /// Every signed checkpoint of the audit chain (JSON, oldest first), to keep where the
    /// server cannot rewrite it.
    Checkpoints,
    /// The actions audit entries record, and what each means.
    Actions,
}

fn health(settings: &Settings) -> Outcome {
    let url = format!("{}/healthz", settings.api_url);
    let mut res = api::http(std::time::Duration::from_secs(10))
        .get(&url)
        .call()
        .map_err(|e| Failure::Unreachable(format!("cannot reach {url}: {}", api::explain(&e))))?;
    let status = res.status().as_u16();
    let body: serde_json::Value = res
        .body_mut()
        .read_json()
        .map_err(|e| Failure::Other(format!("{url} answered {status} without JSON: {e}")))?;
    let health = api::view::<attest_api::Health>(&body)
        .ok()
        .filter(|h| status == 200 && h.status == "ok");
    let Some(health) = health else {
        return Err(Failure::Other(format!("{url} answered {status}: {body}")));
    };
    println!(
        "ok: {} (server version {})",
        settings.api_url, health.version
    );
    Ok(())
}

fn run(cli: Cli) -> Outcome {
    let settings = Settings::load(Given {
        api_url: cli.api_url,
        issuer: cli.issuer,
        client_id: cli.client_id,
        ca_file: cli.ca_file,
        config: cli.config,
    })?;
    api::set_trust(settings.ca_file.as_deref())?;
    match cli.command {
        Command::Health => health(&settings),
        Command::Auth(c) => auth::run(&settings, c, cli.output),
        Command::Machine(c) => machine::run(&settings, c, cli.output),
        Command::Audit(c) => audit::run(&settings, c, cli.output),
    }
}

fn main() -> ExitCode {
    // Output piped into `head` or `less` that closes early ends the process quietly, as
    // command-line tools do, instead of a panic on the next print.
    // SAFETY: nothing else runs yet; restoring a signal's default disposition has no
    // other effect.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message may carry the server's words, and through them a client's.
            eprintln!("attestation: {}", attest_api::escape(&e.to_string()));
            e.exit_code()
        }
    }
}
