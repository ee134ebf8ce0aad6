//! A real `attestation-server` process on 127.0.0.1 with its own data directory.
//! Shared by the server's tests and the operator CLI's (`server/cli/tests`, through
//! `#[path]`), so nothing here may assume which package's tests it is in.

#![allow(dead_code)]

pub mod agent;
pub mod mitm;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "test-break-glass-token";

/// A self-registration of the EK whose certificate is `cert` (DER), with an AK public area
/// (TPM2B_PUBLIC) and nothing else.
pub fn register_request(
    fingerprint: attest_common::Fingerprint,
    cert: &[u8],
    ak_public: &[u8],
) -> attest_common::wire::RegisterRequest {
    use attest_common::wire::{Blob, CertificateDer, RegisterRequest};
    RegisterRequest {
        ek_fingerprint: fingerprint,
        ek_cert_pem: Some(CertificateDer::from_der(cert).expect("an EK certificate")),
        ek_public: None,
        ek_source: attest_common::EkSource::Cert,
        hw_uuid: None,
        hw_mac: None,
        hw_serial: None,
        hw_product: None,
        desired_role: None,
        cluster_id: heapless::String::try_from("default").unwrap(),
        ak_public: Some(Blob::from_slice(ak_public).expect("an AK public area")),
        agent_nonce: None,
    }
}

/// A self-registration body for an EK without a certificate whose key is the P-384 point
/// `point` (SEC1, uncompressed): its public area exactly as the TCG EK template H-3 makes it
/// (what a TPM reports for its EK), fingerprinted by its key's SubjectPublicKeyInfo. A
/// software key can look exactly like this: without a certificate, only an operator's
/// approval (and `ITL_MAX_UNVERIFIED_PENDING`) stands between it and a machine.
pub fn pub_ek_body(point: &[u8]) -> Value {
    use attest_common::tpm::ek::EkType;
    use attest_common::tpm::ek_template::check_ek_public;
    use attest_common::tpm::public::{EccCurve, PublicKey};
    use base64ct::Encoding as _;
    let area = EkType::EccP384
        .template()
        .public_area(&PublicKey::Ecc {
            curve: EccCurve::P384,
            point: heapless::Vec::from_slice(point).expect("a SEC1 P-384 point"),
        })
        .expect("a P-384 point");
    let fingerprint = check_ek_public(&area).expect("the template").fingerprint();
    json!({
        "ek_fingerprint": fingerprint.to_string(),
        "ek_source": "pub",
        "ek_public": base64ct::Base64::encode_string(&area),
    })
}

/// A binary of another package, in the target directory next to this test's executable
/// (`target/<profile>/deps/<test>`); `cargo test --workspace` builds every member's binaries
/// before it runs a test.
fn beside_tests(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p {package}` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// The `attest-agent` binary (cargo test --workspace builds it).
pub fn agent_bin() -> PathBuf {
    beside_tests("attest-agent", "attest-host-agent")
}

/// The operator CLI `attestation` (cargo test --workspace builds it; alone:
/// `cargo build -p attest-cli`).
pub fn cli_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_attestation") {
        Some(bin) => PathBuf::from(bin),
        None => beside_tests("attestation", "attest-cli"),
    }
}

/// The `attestation-server` binary: cargo names it to the server's own tests; the CLI's
/// tests find it in the target directory.
pub fn server_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_attestation-server") {
        Some(bin) => PathBuf::from(bin),
        None => beside_tests("attestation-server", "attest-server"),
    }
}

/// The repository (the directory with `rust-toolchain.toml`), whichever package's tests run.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("rust-toolchain.toml").is_file())
        .expect("the repository holds the package")
        .to_owned()
}

pub struct Server {
    child: Child,
    pub url: String,
    /// Log lines written before the server listened.
    pub startup: Vec<String>,
    /// The line that says it listens.
    pub listening: String,
    pub data_dir: PathBuf,
    /// Log lines written after it listened, as they come.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with a fresh data directory and the break-glass token.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_owned();
        let mut s = Server::start_with(&data, &[("ITL_ADMIN_TOKEN", ADMIN)]);
        s._dir = Some(dir);
        s
    }

    /// Starts a server on `data_dir` with extra environment.
    pub fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(server_bin());
        cmd.env_clear()
            .env("ITL_LISTEN", "127.0.0.1:0")
            .env("ITL_DATA_DIR", data_dir)
            // Tests never reach the public Image Factory (its default): a test that wants ISO
            // URLs names its own stand-in.
            .env("ITL_FACTORY_URL", "")
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start attestation-server");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut startup = Vec::new();
        let (url, listening) = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("server exited before listening: {startup:#?}"))
                .expect("utf-8 log line");
            if line.contains(" listening on ")
                && let Some(url) = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            {
                break (url.to_owned(), line);
            }
            startup.push(line);
        };
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            url,
            startup,
            listening,
            data_dir: data_dir.to_owned(),
            log,
            _dir: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines written since it listened.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Sends `signal` (`libc::SIGTERM`, ...) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the process to exit, at most `within` (then kills it and panics).
    pub fn wait_exit(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("still running after {within:?}: {:#?}", self.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Waits until a log line contains `needle`, at most `within`; answers whether one did.
    pub fn wait_log(&self, needle: &str, within: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.log().iter().any(|l| l.contains(needle)) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// `host:port` it listens on.
    pub fn addr(&self) -> &str {
        self.url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .unwrap_or(&self.url)
    }

    /// Stops the process but keeps the data directory.
    pub fn stop(mut self) -> Option<tempfile::TempDir> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self._dir.take()
    }

    /// One field of every audit entry for a machine, oldest first.
    /// `POST /api/v1/machines/{id}/{action}` as the break-glass operator; must answer 200.
    pub fn admin(&self, id: &str, action: &str, body: &str) -> Value {
        let (status, m) = self.call(
            "POST",
            &format!("/api/v1/machines/{id}/{action}"),
            Some(ADMIN),
            Some(body),
        );
        assert_eq!(status, 200, "{action}: {m}");
        m
    }

    /// Audit entries in all (`X-Total-Count` of a page).
    pub fn audit_total(&self) -> u64 {
        let (status, headers, _) = self.get_full("/api/v1/audit?per_page=1", Some(ADMIN));
        assert_eq!(status, 200);
        headers["x-total-count"].parse().unwrap()
    }

    /// The machine listing (a bare array).
    pub fn machines(&self) -> Vec<serde_json::Value> {
        let (status, list) = self.call("GET", "/api/v1/machines", Some(ADMIN), None);
        assert_eq!(status, 200, "{list}");
        list.as_array().expect("a bare array").clone()
    }

    /// One field of a machine's audit entries, oldest first.
    pub fn audit_column(&self, machine_id: &str, field: &str) -> Vec<String> {
        let (status, audit) = self.call(
            "GET",
            &format!("/api/v1/audit?machine_id={machine_id}&per_page=200"),
            Some(ADMIN),
            None,
        );
        assert_eq!(status, 200, "{audit}");
        // The server answers newest first.
        audit
            .as_array()
            .expect("a bare array")
            .iter()
            .rev()
            .map(|e| e[field].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// A request, its status and body as text.
    /// GET `path` as the break-glass operator; the body as bytes (a backup file).
    pub fn get_bytes(&self, path: &str) -> Vec<u8> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut res = with_auth(agent.get(&format!("{}{path}", self.url)), Some(ADMIN))
            .call()
            .expect("HTTP request");
        assert_eq!(res.status().as_u16(), 200);
        res.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap()
    }

    /// GET `path`: the status, the headers (lower-case names) and the body.
    pub fn get_full(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (u16, std::collections::HashMap<String, String>, String) {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut res = with_auth(agent.get(&format!("{}{path}", self.url)), token)
            .call()
            .expect("HTTP request");
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let status = res.status().as_u16();
        (
            status,
            headers,
            res.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    pub fn call_text(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let url = format!("{}{path}", self.url);
        let mut res = match (method, body) {
            ("GET", _) => with_auth(agent.get(&url), token).call(),
            ("DELETE", _) => with_auth(agent.delete(&url), token).call(),
            (_, Some(b)) => with_auth(agent.post(&url), token)
                .header("content-type", "application/json")
                .send(b.as_bytes()),
            (_, None) => with_auth(agent.post(&url), token).send_empty(),
        }
        .expect("HTTP request");
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        (status, text)
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, text) = self.call_text(method, path, token, body);
        let value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, value)
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
    match token {
        Some(t) => req.header("authorization", format!("Bearer {t}")),
        None => req,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the server with `env` and expects it to refuse to start: exit status and stderr (a
/// server that starts instead is stopped after 20 s, and the test fails).
pub fn refused_start(data: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut child = Command::new(server_bin())
        .env_clear()
        .env("ITL_LISTEN", "127.0.0.1:0")
        .env("ITL_DATA_DIR", data)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            use std::io::Read as _;
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn talos_dir() -> PathBuf {
    let dir = repo_dir().join("../shared/talos");
    assert!(
        dir.join("config.schema.json").is_file(),
        "../shared/talos (the Talos schema and samples) must sit beside the repository"
    );
    dir
}

/// A config dir with the shared samples as role base configs.
/// A server on `dir/data` with the break-glass token and role base configs in `dir`, so
/// that approved machines are offered their config.
pub fn start_with_configs(dir: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    let cfg = config_dir(dir);
    let mut env = vec![
        ("ITL_ADMIN_TOKEN", ADMIN),
        ("ITL_CONFIG_DIR", cfg.to_str().unwrap()),
    ];
    env.extend_from_slice(extra);
    Server::start_with(&dir.join("data"), &env)
}

pub fn config_dir(base: &std::path::Path) -> PathBuf {
    let dir = base.join("base-configs");
    std::fs::create_dir_all(&dir).unwrap();
    let talos = talos_dir();
    std::fs::copy(
        talos.join("controlplane.yaml"),
        dir.join("controlplane.yaml"),
    )
    .unwrap();
    std::fs::copy(talos.join("worker.yaml"), dir.join("worker-infra.yaml")).unwrap();
    std::fs::copy(talos.join("worker.yaml"), dir.join("worker-app.yaml")).unwrap();
    dir
}

pub fn validate(yaml: &str) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(talos_dir().join("config.schema.json")).unwrap(),
    )
    .unwrap();
    let root = json!({"$ref": "#/$defs/v1alpha1.Config", "$defs": schema["$defs"]});
    let validator = jsonschema::validator_for(&root).unwrap();
    let instance: Value = serde_norway::from_str(yaml).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "config does not validate: {errors:#?}");
}
