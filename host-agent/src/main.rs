//! `attest-agent`: the Linux side of a machine's TPM identity.
//!
//! Thin binary over the library: settings from flags, `ATTEST_AGENT_*` variables and a TOML
//! file; results as `key=value` lines on stdout so scripts can read them; diagnostics on
//! stderr. Exit status: 0 success, 1 failure, 2 bad usage or configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};

use attest_host_agent::agent::{Agent, Fatal, read_server_key};
use attest_host_agent::config::{DEFAULT_CONFIG, HookLayer, Layer, Settings};
use attest_host_agent::tpm::{AkType, EkType, Tpm};

#[derive(Parser)]
#[command(
    name = "attest-agent",
    version,
    about = "TPM attestation agent for bare-metal Talos machines"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// TOML config file [default: /etc/attest-agent/agent.toml when it exists].
    #[arg(long, global = true, env = "ATTEST_AGENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Base URL of the attestation server.
    #[arg(long, global = true, env = "ATTEST_AGENT_SERVER", value_name = "URL")]
    server: Option<String>,
    /// The TPM: device:/dev/tpmrm0 (default), swtpm:host=127.0.0.1,port=2321, ...
    #[arg(long, global = true, env = "TPM2TOOLS_TCTI", value_name = "TCTI")]
    tcti: Option<String>,
    /// Where the AK blobs, activation secret and enrollment are kept (0700)
    /// [default: /var/lib/attest-agent].
    #[arg(
        long,
        global = true,
        env = "ATTEST_AGENT_STATE_DIR",
        value_name = "DIR"
    )]
    state_dir: Option<PathBuf>,
    /// The server's response public key (PEM or DER) to verify its answers with
    /// [default: the key pinned at registration].
    #[arg(
        long,
        global = true,
        env = "ATTEST_AGENT_SERVER_KEY",
        value_name = "FILE"
    )]
    server_key: Option<PathBuf>,
    /// CA certificates (PEM) for an https server [default: the web roots].
    #[arg(long, global = true, env = "ATTEST_AGENT_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Accept a plain http:// server URL (warned about at every start): attestations and
    /// machine configs, with their secrets, then travel unencrypted. Without it only
    /// https:// is used.
    #[arg(
        long,
        global = true,
        env = "ATTEST_AGENT_ALLOW_PLAIN_HTTP",
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    allow_plain_http: Option<bool>,
    /// Which EK to use [default: P-384 if it has a certificate, else RSA-2048 if it has
    /// one, else the P-384 public key].
    #[arg(long, global = true, env = "ATTEST_AGENT_EK_TYPE", value_parser = ek_type_parser())]
    ek_type: Option<EkType>,
    /// AK key type; a server takes ecc-p384 unless its ITL_AK_ALGORITHMS allows more
    /// [default: ecc-p384].
    #[arg(long, global = true, value_enum, env = "ATTEST_AGENT_AK_TYPE")]
    ak_type: Option<AkType>,
    /// Timeout of one HTTP request, seconds [default: 30].
    #[arg(
        long,
        global = true,
        env = "ATTEST_AGENT_TIMEOUT_SECONDS",
        value_name = "S"
    )]
    timeout_seconds: Option<u64>,
    /// Longest wait between two attestations, whatever the server advises, seconds
    /// [default: 3600; at least 2].
    #[arg(
        long,
        global = true,
        env = "ATTEST_AGENT_MAX_INTERVAL_SECONDS",
        value_name = "S"
    )]
    max_interval_seconds: Option<u64>,
}

#[derive(Args)]
struct HookArgs {
    /// Command run (sh -c) with the machine config on stdin when the server says
    /// apply-config, e.g. "talosctl apply-config --insecure --nodes 127.0.0.1 --file /dev/stdin".
    #[arg(long, env = "ATTEST_AGENT_ON_APPLY_CONFIG", value_name = "COMMAND")]
    on_apply_config: Option<String>,
    /// Command run when the server says lock.
    #[arg(long, env = "ATTEST_AGENT_ON_LOCK", value_name = "COMMAND")]
    on_lock: Option<String>,
    /// Command run when the server says wipe.
    #[arg(long, env = "ATTEST_AGENT_ON_WIPE", value_name = "COMMAND")]
    on_wipe: Option<String>,
    /// Longest a hook may run, seconds [default: 600].
    #[arg(long, env = "ATTEST_AGENT_HOOK_TIMEOUT_SECONDS", value_name = "S")]
    hook_timeout_seconds: Option<u64>,
}

#[derive(Args)]
struct RegisterArgs {
    /// The role this machine asks for (controlplane, worker-infra, worker-app).
    #[arg(long, env = "ATTEST_AGENT_ROLE")]
    role: Option<String>,
    /// Cluster the machine joins [default: default].
    #[arg(long, env = "ATTEST_AGENT_CLUSTER_ID")]
    cluster_id: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the EK fingerprint (hex SHA-384 of the EK certificate DER, or of the EK public
    /// key's SubjectPublicKeyInfo when there is no certificate) and its source.
    Fingerprint {
        /// An EK certificate or EK public key, PEM or DER.
        #[arg(required_unless_present = "tpm", conflicts_with = "tpm")]
        file: Option<PathBuf>,
        /// Read the EK from this TPM instead (TCTI).
        #[arg(long, value_name = "TCTI")]
        tpm: Option<String>,
    },
    /// Pre-register this machine (USB registration stick): EK, hardware identity, a new AK.
    Register(RegisterArgs),
    /// Register this machine zero-touch; it waits for an operator's approval.
    SelfRegister(RegisterArgs),
    /// Push an attestation and act on the server's signed answer.
    Attest {
        /// Attest once and exit.
        #[arg(long, conflicts_with = "repeat", required_unless_present = "repeat")]
        once: bool,
        /// Attest at the server's interval until a wipe, backing off on errors.
        #[arg(long = "loop", id = "repeat")]
        repeat: bool,
        /// Self-register first when this machine has no enrollment yet.
        #[arg(long)]
        self_register: bool,
        #[command(flatten)]
        hooks: HookArgs,
        #[command(flatten)]
        register: RegisterArgs,
    },
    /// Prove an offline bundle's enrollment certificate to the server (air-gapped path):
    /// sign a fresh server nonce with the enrollment key (audited; the machine's state is
    /// unchanged: only a TPM quote attests).
    Enroll {
        /// The enrollment certificate (PEM or DER).
        #[arg(long, value_name = "FILE", default_value = attest_host_agent::enroll::DEFAULT_CERT)]
        cert: PathBuf,
        /// Its PKCS#8 private key (PEM or DER).
        #[arg(long, value_name = "FILE", default_value = attest_host_agent::enroll::DEFAULT_KEY)]
        key: PathBuf,
    },
    /// Bridge a boot-time agent's serial line to the server's /api/v1/link until the line
    /// closes.
    Relay {
        /// The line: tcp:HOST:PORT (QEMU -serial tcp:...,server=on) or a device path.
        #[arg(long, value_name = "LINE")]
        serial: String,
        /// Write an offline receipt from the firmware (receipt mode) to this file, as JSON
        /// for `POST /api/v1/machines/import`. Without --server, only receipts are answered.
        #[arg(long, value_name = "FILE")]
        receipt_out: Option<PathBuf>,
    },
    /// Write a TPM receipt (identity for `POST /machines/import`) without any network.
    Receipt {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

fn settings(
    global: &Global,
    hooks: Option<&HookArgs>,
    reg: Option<&RegisterArgs>,
) -> Result<Settings> {
    let file = match &global.config {
        Some(path) => Layer::from_file(path, true)?,
        None => Layer::from_file(std::path::Path::new(DEFAULT_CONFIG), false)?,
    };
    let flags = Layer {
        server: global.server.clone(),
        tcti: global.tcti.clone(),
        state_dir: global.state_dir.clone(),
        server_key: global.server_key.clone(),
        ca_file: global.ca_file.clone(),
        allow_plain_http: global.allow_plain_http,
        ek_type: global.ek_type.map(|t| t.name().to_owned()),
        ak_type: global.ak_type.map(|t| t.name().to_owned()),
        desired_role: reg.and_then(|r| r.role.clone()),
        cluster_id: reg.and_then(|r| r.cluster_id.clone()),
        timeout_seconds: global.timeout_seconds,
        max_interval_seconds: global.max_interval_seconds,
        hooks: HookLayer {
            apply_config: hooks.and_then(|h| h.on_apply_config.clone()),
            lock: hooks.and_then(|h| h.on_lock.clone()),
            wipe: hooks.and_then(|h| h.on_wipe.clone()),
            timeout_seconds: hooks.and_then(|h| h.hook_timeout_seconds),
        },
    };
    Settings::resolve(flags.over(file)).map_err(|e| Fatal(format!("{e:#}")).into())
}

/// `--ek-type`: the names of [`EkType`], listed in the help.
fn ek_type_parser() -> impl clap::builder::TypedValueParser<Value = EkType> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(EkType::PREFERENCE.map(EkType::name))
        .map(|name| name.parse().expect("one of EkType's names"))
}

fn fingerprint(file: Option<PathBuf>, tcti: Option<String>, ek_type: Option<EkType>) -> Result<()> {
    if let Some(tcti) = tcti {
        let mut tpm = Tpm::open(&tcti)?;
        let types = match ek_type {
            Some(t) => vec![t],
            None => EkType::PREFERENCE.to_vec(),
        };
        let ek = tpm.ek_identity(&types)?;
        let fp = attest_common::ek_fingerprint(&ek.der)
            .context("the TPM's EK material is not a valid certificate or public key")?;
        println!("ek_fingerprint={}", fp.fingerprint);
        println!("ek_source={}", ek.source);
        println!("ek_type={}", ek.ek_type.name());
        if let Some(index) = ek.nv_index {
            println!("nv_index={index:#010x}");
        }
        return Ok(());
    }
    let path = file.expect("clap requires FILE without --tpm");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let fp = attest_common::ek_fingerprint(&bytes)
        .with_context(|| format!("{} is not an EK certificate or public key", path.display()))?;
    println!("ek_fingerprint={}", fp.fingerprint);
    println!("ek_source={}", fp.source);
    Ok(())
}

fn register(agent: &Agent, self_register: bool) -> Result<()> {
    let r = agent.register(self_register)?;
    if r.machine_id.is_empty() {
        // A known EK's answer names no machine (anyone may send a public EK certificate).
        eprintln!(
            "attest-agent: this TPM was registered before: its machine id comes with the \
             first attestation"
        );
    }
    println!("machine_id={}", r.machine_id);
    println!("status={}", r.status);
    if let Some(role) = r.role {
        println!("role={role}");
    }
    if let Some(url) = &r.iso_url {
        println!("iso_url={url}");
    }
    if let Some(url) = &r.config_url {
        println!("config_url={}", attest_host_agent::client::shown(url));
    }
    Ok(())
}

fn print_attested(a: &attest_host_agent::agent::Attested) {
    let r = &a.response;
    println!("machine_id={}", r.machine_id);
    println!("status={}", r.status);
    println!("action={}", r.action);
    println!(
        "seconds_to_next_attestation={}",
        r.seconds_to_next_attestation
    );
    if let Some(url) = &r.config_url {
        // The URL is a single-use bearer link to the config with its secrets: not printed
        // where logs would keep it.
        println!("config_url={}", attest_host_agent::client::shown(url));
    }
    if let Some(digest) = &r.config_sha384 {
        let mut hex = [0u8; 96];
        println!(
            "config_sha384={}",
            attest_common::hex::encode(&digest.0, &mut hex)
        );
    }
    println!("hooks_run={}", a.hooks_run.join(","));
    for w in &a.warnings {
        eprintln!("attest-agent: warning: {w}");
    }
}

fn attest(agent: &Agent, once: bool, self_register: bool) -> Result<()> {
    if self_register && agent.state().enrollment()?.is_none() {
        register(agent, true)?;
    }
    if once {
        if agent.resume_pending_wipe()? {
            println!("action=wipe");
            println!("hooks_run=wipe");
            return Ok(());
        }
        let a = agent.attest_once()?;
        print_attested(&a);
        return Ok(());
    }
    agent.run(
        |result, next| {
            let next = next.map_or("-".to_owned(), |d: Duration| format!("{}s", d.as_secs()));
            match result {
                Ok(a) => {
                    let r = &a.response;
                    println!(
                        "attested machine_id={} status={} action={} hooks_run={} next={next}",
                        r.machine_id,
                        r.status,
                        r.action,
                        a.hooks_run.join(","),
                    );
                    for w in &a.warnings {
                        eprintln!("attest-agent: warning: {w}");
                    }
                }
                Err(e) => {
                    eprintln!("attest-agent: attestation failed: {e:#}; next attempt in {next}")
                }
            }
        },
        std::thread::sleep,
    )
}

fn receipt(agent: &Agent, out: &std::path::Path) -> Result<()> {
    let r = agent.receipt()?;
    let mut json = serde_json::to_vec_pretty(&r)?;
    json.push(b'\n');
    attest_host_agent::state::write_private(out, &json)?;
    println!("ek_fingerprint={}", r.identity.ek_fingerprint);
    println!("receipt={}", out.display());
    Ok(())
}

fn enroll(settings: &Settings, cert: &std::path::Path, key: &std::path::Path) -> Result<()> {
    let credential = attest_host_agent::enroll::Credential::read(cert, key)
        .map_err(|e| Fatal(format!("{e:#}")))?;
    let server = settings.server().map_err(|e| Fatal(format!("{e:#}")))?;
    let client = attest_host_agent::client::Client::for_server(settings, server)?;
    // The answer is checked against the configured server key, else the one pinned in the
    // state directory, else the one the server publishes (authenticated by TLS; over plain
    // HTTP, said loudly: anyone could answer).
    let pinned = match (&settings.server_key, settings.state_dir.is_dir()) {
        (Some(path), _) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read the server key {}", path.display()))
                .and_then(|b| read_server_key(&b).with_context(|| format!("{}", path.display())))
                .map_err(|e| Fatal(format!("{e:#}")))?,
        ),
        (None, true) => Agent::new(settings.clone())?
            .pinned_key()
            .map_err(|e| Fatal(format!("{e:#}")))?,
        (None, false) => None,
    };
    let key = match pinned {
        Some(key) => key,
        None => {
            if server.starts_with("http://") {
                eprintln!(
                    "attest-agent: warning: checking the answer with the server key fetched \
                     over plain HTTP from {server}: anyone on the path could have answered; \
                     give the key with --server-key"
                );
            }
            read_server_key(&client.server_key()?).context("the server's published key")?
        }
    };
    let r = credential.enroll(&client, &key)?;
    println!("machine_id={}", r.machine_id);
    println!("status={}", r.status);
    Ok(())
}

fn relay(settings: &Settings, serial: &str, receipt_out: Option<&std::path::Path>) -> Result<()> {
    use attest_host_agent::relay;
    let client = match (settings.server(), receipt_out) {
        (Ok(server), _) => Some(attest_host_agent::client::Client::for_server(
            settings, server,
        )?),
        // Receipt mode needs no server.
        (Err(_), Some(_)) => None,
        (Err(e), None) => return Err(Fatal(format!("{e:#}")).into()),
    };
    let (line_in, line_out) = relay::open(serial)?;
    let targets = relay::Targets {
        server: client.as_ref(),
        receipt_out,
    };
    let stats = relay::run(&targets, line_in, line_out, |m| {
        eprintln!("attest-agent: relay: {m}")
    })?;
    println!("frames={}", stats.frames);
    println!("dropped={}", stats.dropped);
    if receipt_out.is_some() {
        println!("receipts={}", stats.receipts);
    }
    if let Some(ms) = stats.first_frame_ms {
        println!("first_frame_ms={ms}");
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Fingerprint { file, tpm } => fingerprint(file, tpm, g.ek_type),
        Command::Register(ref r) => register(&Agent::new(settings(g, None, Some(r))?)?, false),
        Command::SelfRegister(ref r) => register(&Agent::new(settings(g, None, Some(r))?)?, true),
        Command::Attest {
            once,
            self_register,
            ref hooks,
            ref register,
            ..
        } => attest(
            &Agent::new(settings(g, Some(hooks), Some(register))?)?,
            once,
            self_register,
        ),
        Command::Enroll { ref cert, ref key } => enroll(&settings(g, None, None)?, cert, key),
        Command::Relay {
            ref serial,
            ref receipt_out,
        } => relay(&settings(g, None, None)?, serial, receipt_out.as_deref()),
        Command::Receipt { ref out } => receipt(&Agent::new(settings(g, None, None)?)?, out),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("attest-agent: {e:#}");
            if e.is::<Fatal>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
