//! `attestation-server`: runs the control plane with configuration from `ITL_*` variables.

use std::process::ExitCode;

use attest_server::{config::Config, http};

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!(
            "usage: attestation-server (configuration comes from ITL_* environment variables; see README)"
        );
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("attestation-server: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    smol::block_on(async {
        let listener = match smol::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "attestation-server: cannot listen on {} (ITL_LISTEN): {e}",
                    config.listen
                );
                return ExitCode::FAILURE;
            }
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        eprintln!(
            "attestation-server {} listening on http://{addr}",
            env!("CARGO_PKG_VERSION")
        );
        match http::serve(listener, http::app()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("attestation-server: accept failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
