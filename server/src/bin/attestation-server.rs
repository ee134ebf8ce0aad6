//! `attestation-server`: runs the control plane with configuration from `ITL_*` variables.

use std::process::ExitCode;

use std::sync::Arc;

use attest_server::machineconfig::BaseConfigs;
use attest_server::policy::PcrPolicies;
use attest_server::service::Service;
use attest_server::store::Store;
use attest_server::{config::Config, http, log, responsekey};

fn main() -> ExitCode {
    // HTTP parsing and JSON run on smol's global executor: one thread per core unless the
    // operator says otherwise (smol's own default is a single thread).
    if std::env::var_os("SMOL_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: nothing else runs yet; no thread reads the environment concurrently.
        unsafe { std::env::set_var("SMOL_THREADS", cores.to_string()) };
    }
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
    let store = match Store::open(&config.database_path()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "attestation-server: cannot open {} (ITL_DATA_DIR): {e}",
                config.database_path().display()
            );
            return ExitCode::FAILURE;
        }
    };
    if config.admin_token.is_none() && config.oidc.is_none() {
        log::warn(
            "no operator authentication configured (ITL_ADMIN_TOKEN or ITL_OIDC_ENABLED); \
             operator endpoints answer 503",
        );
    }
    let (response_key, created) = match responsekey::load_or_create(&config.data_dir) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("attestation-server: response key (ITL_DATA_DIR): {e}");
            return ExitCode::FAILURE;
        }
    };
    let response_signer = match responsekey::ResponseSigner::new(&response_key) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("attestation-server: response key: {e}");
            return ExitCode::FAILURE;
        }
    };
    let response_key_spki =
        attest_common::nonce::verifying_key_to_spki(response_key.verifying_key()).to_vec();
    log::info(&format!(
        "Response key {} {}",
        if created {
            "generated in"
        } else {
            "loaded from"
        },
        config.data_dir.join(responsekey::FILE_NAME).display()
    ));
    let mut service = Service::with_dual_control(store, config.dual_control.clone())
        .with_challenges(config.challenges.clone());
    match &config.config_dir {
        Some(dir) => match BaseConfigs::load(dir) {
            Ok(configs) => service = service.with_configs(configs),
            Err(e) => {
                eprintln!("attestation-server: invalid configuration: ITL_CONFIG_DIR: {e}");
                return ExitCode::from(2);
            }
        },
        None => log::warn("no role base configs (ITL_CONFIG_DIR); config endpoints answer 503"),
    }
    if let Some(path) = &config.pcr_policy_file {
        match PcrPolicies::load(path) {
            Ok(p) => service = service.with_policies(p),
            Err(e) => {
                eprintln!("attestation-server: invalid configuration: ITL_PCR_POLICY_FILE: {e}");
                return ExitCode::from(2);
            }
        }
    }
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
        log::info(&format!(
            "attestation-server {} listening on http://{addr} (data {})",
            env!("CARGO_PKG_VERSION"),
            config.database_path().display()
        ));
        let service_url = config
            .service_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let state = Arc::new(http::AppState {
            service,
            oidc: config.oidc.clone().map(attest_server::oidc::Oidc::new),
            config: config.clone(),
            service_url,
            response_key: response_key.clone(),
            response_signer,
            response_key_spki,
        });
        http::spawn_liveness_sweeper(state.clone());
        match http::serve(listener, http::app(state)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("attestation-server: accept failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
