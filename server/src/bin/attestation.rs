//! `attestation`: the operator CLI. It grows with the server's operator API; today it checks
//! that a server is up.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "attestation",
    version,
    about = "Operator CLI for the attestation server"
)]
struct Cli {
    /// Server base URL.
    #[arg(
        long,
        env = "ATTESTATION_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the server answers /healthz; prints its version. Exit 0 only when healthy.
    Health,
}

fn health(api_url: &str) -> Result<String, String> {
    let url = format!("{}/healthz", api_url.trim_end_matches('/'));
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut res = agent
        .get(&url)
        .call()
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = res.status();
    let body: serde_json::Value = res
        .body_mut()
        .read_json()
        .map_err(|e| format!("{url} answered {status} without JSON: {e}"))?;
    if status != 200 || body["status"] != "ok" {
        return Err(format!("{url} answered {status}: {body}"));
    }
    Ok(format!(
        "ok: {} (server version {})",
        api_url,
        body["version"].as_str().unwrap_or("unknown")
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Health => match health(&cli.api_url) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("attestation: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
