//! Running the service: start-up, serving, and the graceful shutdown on SIGTERM or SIGINT.
//!
//! The shutdown, in order: log `shutting down (SIGTERM)`; `/readyz` answers 503; the
//! listener closes (new connections are refused); each connection finishes the request it is
//! serving and closes, idle keep-alive connections at once; connections still open after
//! `ITL_SHUTDOWN_TIMEOUT_SECONDS` are dropped; the liveness sweeper stops (a sweep in
//! progress completes); registry calls still running on the blocking pool (those of dropped
//! connections) are waited for, at most as long again; the registry is dropped, which makes
//! every commit durable and closes the file cleanly (the next start does not repair it);
//! log `stopped`; exit 0. A second signal during all this exits at once with status 1 (the
//! next start then repairs the registry, losing nothing that was acknowledged).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_signal::{Signal, Signals};
use futures_lite::StreamExt as _;

use attest_server::ekchain::{EkChain, EkChainPolicy};
use attest_server::enrollment::EnrollmentCa;
use attest_server::listener::{self, Shutdown};
use attest_server::machineconfig::BaseConfigs;
use attest_server::policy::PcrPolicies;
use attest_server::service::{Enrollment, ResponseKey, Service};
use attest_server::store::Registry as _;
use attest_server::store::redb::RedbRegistry;
use attest_server::{config::Config, http, log, outbound, responsekey, tls};

type State = Arc<http::AppState<RedbRegistry>>;

/// How often the wait for the registry calls still running looks again.
const POLL: Duration = Duration::from_millis(10);

/// Runs the service until a signal stops it (exit 0) or the listener breaks (exit 1).
/// `grace`: `ITL_SHUTDOWN_TIMEOUT_SECONDS`.
pub fn run(config: Config, grace: Duration) -> ExitCode {
    // TLS first: a certificate that cannot be served stops start-up before anything opens.
    let tls = match &config.tls {
        None => None,
        Some(settings) => match tls::server_config(settings) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("attestation-server: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if let Some(path) = &config.ca_file
        && let Err(e) = outbound::add_roots_from(path)
    {
        eprintln!("attestation-server: invalid configuration: ITL_CA_FILE: {e}");
        return ExitCode::from(2);
    }
    let service = match service(&config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    smol::block_on(serve(config, service, tls, grace))
}

/// The service over the registry, with everything the configuration asks for.
fn service(config: &Config) -> Result<Service<RedbRegistry>, ExitCode> {
    if let Err(e) = RedbRegistry::check_file(&config.database_path()) {
        eprintln!("attestation-server: refusing to start: {e}");
        return Err(ExitCode::FAILURE);
    }
    // A registry that cannot be read without repair (not closed cleanly) counts as one with
    // machines: a refused start must not repair it first.
    let machines = crate::keys::machines_before_open(config).unwrap_or(u64::MAX);
    crate::keys::refuse_missing(config, machines)?;
    let store = match RedbRegistry::open(&config.database_path()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "attestation-server: cannot open {} (ITL_DATA_DIR): {e} (nothing was written \
                 to it; a damaged registry is restored from a backup)",
                config.database_path().display()
            );
            return Err(ExitCode::FAILURE);
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
            return Err(ExitCode::FAILURE);
        }
    };
    let response_key_parts = match ResponseKey::new(&response_key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("attestation-server: response key: {e}");
            return Err(ExitCode::FAILURE);
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
    let activation_key = server_secret(&config.data_dir, "activation-key", "Activation key")?;
    let challenge_key = server_secret(&config.data_dir, "challenge-key", "Challenge key")?;
    let mut service = Service::new(store)
        .with_activation_key(activation_key)
        .with_challenge_key(challenge_key)
        .with_dual_control(config.dual_control.clone())
        .with_challenges(config.challenges.clone())
        .with_config_url_seconds(config.config_url_seconds)
        .with_unverified_pending_limit(Some(config.max_unverified_pending))
        .with_audit_checkpoints(config.audit_checkpoints)
        .with_ak_policy(config.ak_policy.clone())
        .with_response_key(response_key_parts);
    log::info(&format!(
        "AK algorithms accepted: {} (ITL_AK_ALGORITHMS)",
        config.ak_policy.names()
    ));
    match &config.config_dir {
        Some(dir) => match BaseConfigs::load(dir) {
            Ok(configs) => service = service.with_configs(configs),
            Err(e) => {
                eprintln!("attestation-server: invalid configuration: ITL_CONFIG_DIR: {e}");
                return Err(ExitCode::from(2));
            }
        },
        None => log::warn("no role base configs (ITL_CONFIG_DIR); config endpoints answer 503"),
    }
    let (ca, generated) = match EnrollmentCa::load_or_generate(&config.enrollment_ca_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("attestation-server: Enrollment CA (ITL_ENROLLMENT_CA_DIR): {e}");
            return Err(ExitCode::FAILURE);
        }
    };
    // The seed's two lines, word for word.
    if generated {
        log::info(&format!("Enrollment CA generated (serial={})", ca.serial()));
    } else {
        log::info(&format!(
            "Enrollment CA loaded from {} (serial={})",
            config.enrollment_ca_dir.display(),
            ca.serial()
        ));
    }
    service = service.with_enrollment(Enrollment {
        ca,
        cert_days: config.enrollment_cert_days,
    });
    match &config.iso {
        Some(iso) => service = service.with_iso(iso.clone()),
        None => log::warn(
            "no ISO source (ITL_FACTORY_URL set empty, no ITL_ISO_URL); /register answers \
             without iso_url",
        ),
    }
    if let Some(path) = &config.pcr_policy_file {
        match PcrPolicies::load(path) {
            Ok(p) => service = service.with_policies(p),
            Err(e) => {
                eprintln!("attestation-server: invalid configuration: ITL_PCR_POLICY_FILE: {e}");
                return Err(ExitCode::from(2));
            }
        }
    }
    if config.ek_chain.policy != EkChainPolicy::Off {
        let mut ek_config = config.ek_chain.clone();
        if ek_config.aia_fetch && ek_config.aia_cache_dir.is_none() {
            ek_config.aia_cache_dir = Some(config.data_dir.join("ek-aia-cache"));
        }
        match EkChain::from_config(&ek_config) {
            Ok(chain) => {
                log::info(&format!(
                    "EK chain check: ITL_EK_CHAIN={} with {} trusted CA certificates{}",
                    ek_config.policy.as_str(),
                    chain.store().len(),
                    if chain.fetches_aia() {
                        " (AIA fetching on)"
                    } else {
                        ""
                    }
                ));
                service = service.with_ek_chain(chain, ek_config.policy);
            }
            Err(e) => {
                eprintln!("attestation-server: invalid configuration: {e}");
                return Err(ExitCode::from(2));
            }
        }
    } else {
        log::warn("EK chain check off (ITL_EK_CHAIN=off): EK certificates are not checked");
    }
    // One pass over the records before serving (≈ 0.5 s for 100,000): a damaged record is
    // reported now (logged, `/readyz`, `/metrics`), not at the first listing that meets it.
    if let Err(e) = service
        .registry()
        .each_machine(|_, _| std::ops::ControlFlow::Continue(()))
    {
        eprintln!("attestation-server: cannot read the registry: {e}");
        return Err(ExitCode::FAILURE);
    }
    let damaged = service.registry().damaged_records().len();
    if damaged > 0 {
        log::warn(&format!(
            "{damaged} damaged machine record(s) skipped (GET /readyz names them): restore the \
             registry from a backup"
        ));
    }
    Ok(service)
}

async fn serve(
    config: Config,
    service: Service<RedbRegistry>,
    tls: Option<tls::ServerTls>,
    grace: Duration,
) -> ExitCode {
    let mut signals = match Signals::new([Signal::Term, Signal::Int]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("attestation-server: cannot handle SIGTERM and SIGINT: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tcp = match smol::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "attestation-server: cannot listen on {} (ITL_LISTEN): {e}",
                config.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let bound = match tcp.local_addr() {
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
    let scheme = if tls.is_some() { "https" } else { "http" };
    match &tls {
        Some(t) => log::info(&t.summary),
        None => log::warn(
            "serving plain HTTP: terminate TLS in front of the server (ITL_TRUSTED_PROXIES) or \
             set ITL_TLS_CERT/ITL_TLS_KEY",
        ),
    }
    if !config.trusted_proxies.is_empty() {
        log::info(&format!(
            "X-Forwarded-For believed from {} (ITL_TRUSTED_PROXIES)",
            config.trusted_proxies.describe()
        ));
    }
    let service_url = config
        .service_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    if tls.is_some() && service_url.starts_with("http://") {
        log::warn(&format!(
            "ITL_SERVICE_URL is {service_url} but this server serves HTTPS only: the config \
             URLs it hands agents point at plain HTTP (agents refuse them unless \
             allow_plain_http)"
        ));
    }
    let service = service.with_service_url(&service_url);
    let state = http::AppState::new(
        service,
        config.oidc.clone().map(attest_server::oidc::Oidc::new),
        config.clone(),
    );
    let sweeper = Sweeper::spawn(state.clone());
    let open_files = listener::raise_open_files_limit();
    let max_connections = listener::connection_cap(config.max_connections, open_files);
    if max_connections < config.max_connections {
        log::warn(&format!(
            "serving at most {max_connections} connections at once, not {} \
             (ITL_MAX_CONNECTIONS): the open-files limit is {open_files} and {} are kept \
             for the server's own files; raise LimitNOFILE / ulimit -n",
            config.max_connections,
            listener::RESERVED_FILES
        ));
    }
    let (drain_trigger, drain) = listener::signal();
    let mut serving = smol::spawn(http::serve(
        tcp,
        state.clone(),
        listener::Limits {
            max: max_connections,
            per_peer: config.max_connections_per_peer,
            exempt: config.trusted_proxies.clone(),
        },
        config.idle_timeout,
        tls.as_ref().map(|t| t.config.clone()),
        Shutdown { drain, grace },
    ));
    let self_client = match (&tls, &config.tls) {
        (Some(t), Some(settings)) => Some(tls::self_client(&settings.policy, t.chain[0].clone())),
        _ => None,
    };
    if let Err(e) = listener::warm_up(bound, self_client).await {
        log::warn(&format!("the server's request to itself failed: {e}"));
    }
    log::info(&format!(
        "attestation-server {} listening on {scheme}://{addr} (data {})",
        env!("CARGO_PKG_VERSION"),
        config.database_path().display()
    ));

    // Until the listener breaks or a signal comes.
    let stop = futures_lite::future::or(
        async {
            match (&mut serving).await {
                // The accept loop ends by itself only when the listener breaks.
                Ok(_) => Err("accept failed: the accept loop ended".to_owned()),
                Err(e) => Err(format!("accept failed: {e}")),
            }
        },
        async {
            match signals.next().await {
                Some(Ok(signal)) => Ok(signal),
                Some(Err(e)) => Err(format!("signal handling failed: {e}")),
                None => Err("signal handling ended".to_owned()),
            }
        },
    )
    .await;
    match stop {
        Ok(signal) => {
            let draining = Draining {
                state,
                serving,
                drain: drain_trigger,
                sweeper,
                grace,
            };
            draining.shut_down(signal, signals).await
        }
        Err(e) => {
            eprintln!("attestation-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the shutdown stops.
struct Draining {
    state: State,
    serving: smol::Task<std::io::Result<listener::Drained>>,
    drain: listener::Trigger,
    sweeper: Sweeper,
    grace: Duration,
}

impl Draining {
    /// The graceful shutdown (this module's documentation) after `signal`; a second one
    /// from `signals` exits at once.
    async fn shut_down(self, signal: Signal, mut signals: Signals) -> ExitCode {
        let Draining {
            state,
            serving,
            drain,
            sweeper,
            grace,
        } = self;
        let started = Instant::now();
        log::info(&format!("shutting down ({})", name(signal)));
        state.begin_shutdown();
        drain.fire();
        smol::spawn(async move {
            if let Some(Ok(again)) = signals.next().await {
                log::warn(&format!(
                    "{} during shutdown: exiting at once (status 1); the next start repairs \
                     the registry",
                    name(again)
                ));
                std::process::exit(1);
            }
        })
        .detach();
        match serving.await {
            Ok(drained) if drained.dropped > 0 => log::warn(&format!(
                "{} of {} connections still open after {} s (ITL_SHUTDOWN_TIMEOUT_SECONDS): \
                 dropped",
                drained.dropped,
                drained.open,
                grace.as_secs()
            )),
            Ok(_) => {}
            Err(e) => log::warn(&format!("accept failed while shutting down: {e}")),
        }
        sweeper.stop();
        // The registry calls of dropped connections finish on the blocking pool: the
        // registry is closed once the last of them has given back its reference.
        let deadline = Instant::now() + grace.max(Duration::from_secs(1));
        let mut state = state;
        loop {
            match Arc::try_unwrap(state) {
                Ok(alone) => {
                    // Closes the registry: redb makes the last commits durable and records
                    // its allocator state, so the next open needs no repair.
                    drop(alone);
                    break;
                }
                Err(shared) if Instant::now() >= deadline => {
                    log::warn(&format!(
                        "{} registry calls still running after {} s; exiting without closing \
                         the registry (the next start repairs it)",
                        Arc::strong_count(&shared) - 1,
                        started.elapsed().as_secs()
                    ));
                    return ExitCode::FAILURE;
                }
                Err(shared) => {
                    state = shared;
                    smol::Timer::after(POLL).await;
                }
            }
        }
        log::info("stopped");
        ExitCode::SUCCESS
    }
}

fn name(signal: Signal) -> &'static str {
    match signal {
        Signal::Term => "SIGTERM",
        Signal::Int => "SIGINT",
        _ => "signal",
    }
}

/// The liveness sweeper: audits machines that turn stale, checking every
/// `min(interval, 60 s)`, and signs the audit checkpoint that time calls for
/// (`ITL_AUDIT_CHECKPOINT_MINUTES`), on its own thread until stopped.
struct Sweeper {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Sweeper {
    fn spawn(state: State) -> Sweeper {
        let period = state.service.sweep_period();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("liveness".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    if let Err(e) = state.service.sweep_stale() {
                        log::warn(&format!("liveness sweep failed: {e}"));
                    }
                    // At least every ITL_AUDIT_CHECKPOINT_MINUTES while entries are added.
                    if let Err(e) = state.service.checkpoint_if_due() {
                        log::warn(&format!("audit checkpoint failed: {e}"));
                    }
                }
            })
            .expect("cannot start the liveness thread");
        Sweeper { stop, thread }
    }

    /// Stops the thread, after the sweep in progress if there is one.
    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// A 48-byte key kept in `ITL_DATA_DIR/<file>` (0600, beside the registry and never in it or
/// its backups): loaded, or made on first start.
fn server_secret(
    data_dir: &std::path::Path,
    file: &str,
    what: &str,
) -> Result<attest_server::challenge::ChallengeKey, ExitCode> {
    let path = data_dir.join(file);
    match attest_server::secret_file::load_or_create(
        &path,
        48,
        &what.to_lowercase(),
        |b| getrandom::fill(b).expect("the operating system's random number generator failed"),
        |_| true,
    ) {
        Ok((key, created)) => {
            let done = if created {
                "generated in"
            } else {
                "loaded from"
            };
            log::info(&format!("{what} {done} {}", path.display()));
            Ok(attest_server::challenge::ChallengeKey::new(&key))
        }
        Err(e) => {
            eprintln!(
                "attestation-server: {} (ITL_DATA_DIR): {e}",
                what.to_lowercase()
            );
            Err(ExitCode::FAILURE)
        }
    }
}
