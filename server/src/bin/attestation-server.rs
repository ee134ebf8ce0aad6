//! `attestation-server`: runs the control plane with configuration from `ITL_*` variables.

use std::os::unix::fs::OpenOptionsExt as _;
use std::process::ExitCode;

use attest_server::enrollment::EnrollmentCa;
use attest_server::machineconfig::BaseConfigs;
use attest_server::policy::PcrPolicies;
use attest_server::service::{Enrollment, Service};
use attest_server::store::redb::RedbRegistry;
use attest_server::{config::Config, http, log, responsekey};

fn main() -> ExitCode {
    // HTTP parsing and JSON run on smol's global executor: one thread per core unless the
    // operator says otherwise (smol's own default is a single thread).
    if std::env::var_os("SMOL_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: nothing else runs yet; no thread reads the environment concurrently.
        unsafe { std::env::set_var("SMOL_THREADS", cores.to_string()) };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backup_to = match args.as_slice() {
        [] => None,
        [cmd, flag, to] if cmd == "backup" && flag == "--to" => Some(to.clone()),
        _ => {
            eprintln!(
                "usage: attestation-server                   run the service\n       \
                 attestation-server backup --to FILE  consistent copy of the registry, also while the service runs\n\
                 Configuration comes from ITL_* environment variables (README)."
            );
            return ExitCode::from(2);
        }
    };
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
    if let Some(to) = backup_to {
        return backup(&config, std::path::Path::new(&to));
    }
    let store = match RedbRegistry::open(&config.database_path()) {
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
    let response_key_parts = match attest_server::service::ResponseKey::new(&response_key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("attestation-server: response key: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::info(&format!(
        "Response key {} {}",
        if created {
            "generated in"
        } else {
            "loaded from"
        },
        config.data_dir.join(responsekey::FILE_NAME).display()
    ));
    let mut service = Service::new(store)
        .with_dual_control(config.dual_control.clone())
        .with_challenges(config.challenges.clone())
        .with_response_key(response_key_parts);
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
    let (ca, generated) = match EnrollmentCa::load_or_generate(&config.enrollment_ca_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("attestation-server: Enrollment CA (ITL_ENROLLMENT_CA_DIR): {e}");
            return ExitCode::FAILURE;
        }
    };
    if generated {
        log::info(&format!(
            "Enrollment CA generated (serial={}) in {}",
            ca.serial(),
            config.enrollment_ca_dir.display()
        ));
    } else {
        log::info(&format!(
            "Enrollment CA (serial={}) loaded from {}",
            ca.serial(),
            config.enrollment_ca_dir.display()
        ));
    }
    service = service.with_enrollment(Enrollment {
        ca,
        cert_days: config.enrollment_cert_days,
    });
    match &config.iso {
        Some(iso) => service = service.with_iso(iso.clone()),
        None => log::warn(
            "no ISO source (ITL_FACTORY_URL or ITL_ISO_URL); /register answers without iso_url",
        ),
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
        let bound = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!(
                    "attestation-server: cannot listen on {}: {e}",
                    config.listen
                );
                return ExitCode::FAILURE;
            }
        };
        let addr = bound.to_string();
        let service_url = config
            .service_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let service = service.with_service_url(&service_url);
        let state = http::AppState::new(
            service,
            config.oidc.clone().map(attest_server::oidc::Oidc::new),
            config.clone(),
        );
        spawn_liveness_sweeper(state.clone());
        let open_files = attest_server::listener::raise_open_files_limit();
        let max_connections =
            attest_server::listener::connection_cap(config.max_connections, open_files);
        if max_connections < config.max_connections {
            log::warn(&format!(
                "serving at most {max_connections} connections at once, not {} \
                 (ITL_MAX_CONNECTIONS): the open-files limit is {open_files} and {} are kept \
                 for the server's own files; raise LimitNOFILE / ulimit -n",
                config.max_connections,
                attest_server::listener::RESERVED_FILES
            ));
        }
        let serving = smol::spawn(http::serve(
            listener,
            state,
            max_connections,
            config.idle_timeout,
        ));
        if let Err(e) = attest_server::listener::warm_up(bound).await {
            log::warn(&format!("the server's request to itself failed: {e}"));
        }
        log::info(&format!(
            "attestation-server {} listening on http://{addr} (data {})",
            env!("CARGO_PKG_VERSION"),
            config.database_path().display()
        ));
        match serving.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("attestation-server: accept failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `attestation-server backup --to FILE`: a logical copy from one read transaction. With
/// the service stopped the file is read directly; while it runs (it holds the file) the
/// service makes the copy (`GET /api/v1/backup`, with `ITL_ADMIN_TOKEN`). Either way the
/// copy's audit chain is verified before it is put at FILE.
fn backup(config: &Config, to: &std::path::Path) -> ExitCode {
    let fail = |what: String| {
        eprintln!("attestation-server: backup: {what}");
        ExitCode::FAILURE
    };
    if to.exists() {
        return fail(format!("{} exists: choose a new file", to.display()));
    }
    let from = config.database_path();
    let partial = to.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let source = match RedbRegistry::backup_file(&from, &partial) {
        Ok(Some(_)) => from.display().to_string(),
        Ok(None) => match backup_from_service(config, &partial) {
            Ok(url) => url,
            Err(e) => return fail(e),
        },
        Err(e) => return fail(e.to_string()),
    };
    let verified = match RedbRegistry::audit_verify_file(&partial) {
        Ok(v) if v.valid => v,
        Ok(v) => {
            return fail(format!(
                "the copy's audit chain does not verify (first bad seq {:?}: {}); left at {}",
                v.first_invalid_id,
                v.error.unwrap_or_default(),
                partial.display()
            ));
        }
        Err(e) => return fail(format!("cannot read the copy {}: {e}", partial.display())),
    };
    let machines = match RedbRegistry::machines_in_file(&partial) {
        Ok(m) => m,
        Err(e) => return fail(format!("cannot read the copy {}: {e}", partial.display())),
    };
    if let Err(e) = std::fs::rename(&partial, to) {
        return fail(format!("cannot put the copy at {}: {e}", to.display()));
    }
    println!(
        "backup: {machines} machines, {} audit entries (chain valid, root {}) from {source} to {}",
        verified.entries,
        verified.root_hash,
        to.display()
    );
    ExitCode::SUCCESS
}

/// Asks the running service for a copy and writes it to `partial`; answers the URL used.
fn backup_from_service(config: &Config, partial: &std::path::Path) -> Result<String, String> {
    let base = match &config.service_url {
        Some(u) => u.clone(),
        None if config.listen.ip().is_unspecified() => {
            format!("http://127.0.0.1:{}", config.listen.port())
        }
        None => format!("http://{}", config.listen),
    };
    let Some(token) = &config.admin_token else {
        return Err(format!(
            "{} is held by the running service; set ITL_ADMIN_TOKEN so that the service makes the copy",
            config.database_path().display()
        ));
    };
    let url = format!("{base}/api/v1/backup");
    let mut res = attest_server::outbound::agent(std::time::Duration::from_secs(600))
        .get(&url)
        .header("authorization", format!("Bearer {token}"))
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    std::io::copy(&mut res.body_mut().as_reader(), &mut file)
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(url)
}

/// Audits machines that turn stale, checking every `min(interval, 60 s)`.
fn spawn_liveness_sweeper(state: std::sync::Arc<http::AppState<RedbRegistry>>) {
    let period = state.service.sweep_period();
    std::thread::Builder::new()
        .name("liveness".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                if let Err(e) = state.service.sweep_stale() {
                    log::warn(&format!("liveness sweep failed: {e}"));
                }
            }
        })
        .expect("cannot start the liveness thread");
}
