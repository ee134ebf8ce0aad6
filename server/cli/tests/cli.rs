//! The operator CLI `attestation` against a real server and a real OpenID provider
//! (npm's oidc-provider, `server/tests/oidc/provider.mjs`, on 127.0.0.1). The test plays the
//! browser with an HTTP client: it follows the provider's redirects, keeps its cookies,
//! fills in its forms, and lands on the CLI's loopback redirect. The server binary comes
//! from the target directory (`cargo build -p attest-server`; `cargo test --workspace`
//! builds it).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use attest_swtpm::Swtpm;
use serde_json::{Value, json};
use support::{ADMIN, Server, agent_bin};

const EK_P384: &str = include_str!("../../../common/tests/fixtures/swtpm-ek-p384.pem");
const EK_RSA: &str = include_str!("../../../common/tests/fixtures/swtpm-ek-rsa2048.pem");

// ---------------------------------------------------------------------------------------
// The OpenID provider

struct Provider {
    child: Child,
    issuer: String,
    _log: tempfile::NamedTempFile,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Provider {
    fn start(access_token_ttl: u64) -> Provider {
        let dir = support::repo_dir().join("server/tests/oidc");
        assert!(
            Command::new("node").arg("--version").output().is_ok(),
            "node is missing: run ./ci/setup.sh (installs nodejs and npm)"
        );
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "oidc-provider is not installed in {}: run ./ci/setup.sh (npm ci there)",
            dir.display()
        );
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("ACCESS_TOKEN_TTL", access_token_ttl.to_string())
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("start node provider.mjs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(issuer) = line.strip_prefix("listening ") {
                    let _ = tx.send(issuer.to_owned());
                }
            }
        });
        let issuer = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "the OpenID provider did not start: {}",
                    std::fs::read_to_string(log.path()).unwrap_or_default()
                )
            });
        Provider {
            child,
            issuer,
            _log: log,
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_with_oidc(dir: &Path, issuer: &str) -> Server {
    let configs = support::config_dir(dir);
    Server::start_with(
        &dir.join("data"),
        &[
            ("ITL_OIDC_ENABLED", "true"),
            ("ITL_OIDC_ISSUER", issuer),
            ("ITL_OIDC_AUDIENCE", "attestation"),
            ("ITL_OIDC_OPERATOR_ROLE", "operator"),
            ("ITL_DUAL_CONTROL_ROLES", "controlplane"),
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_CONFIG_DIR", configs.to_str().unwrap()),
            (
                "ITL_ISO_URL",
                "https://mirror.example/talos/metal-amd64.iso",
            ),
        ],
    )
}

// ---------------------------------------------------------------------------------------
// The CLI

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not only JSON ({e}): {}", self.stdout))
    }
}

/// One operator's CLI: its own config dir (token cache), the server and the provider.
struct Cli {
    home: tempfile::TempDir,
    api: String,
    issuer: Option<String>,
    admin: Option<String>,
}

impl Cli {
    fn new(api: &str, issuer: Option<&str>) -> Cli {
        Cli {
            home: tempfile::tempdir().unwrap(),
            api: api.into(),
            issuer: issuer.map(str::to_owned),
            admin: None,
        }
    }

    fn break_glass(api: &str) -> Cli {
        let mut c = Cli::new(api, None);
        c.admin = Some(ADMIN.into());
        c
    }

    fn tokens(&self) -> PathBuf {
        self.home.path().join("attestation/tokens.json")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_attestation"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("ATTESTATION_API_URL", &self.api)
            .args(args);
        if let Some(i) = &self.issuer {
            cmd.env("ATTESTATION_OIDC_ISSUER", i);
        }
        if let Some(t) = &self.admin {
            cmd.env("ITL_ADMIN_TOKEN", t);
        }
        cmd
    }

    fn run_with(&self, args: &[&str], stdin: &str) -> Out {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run attestation");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, "")
    }

    fn ok(&self, args: &[&str]) -> Out {
        let out = self.run(args);
        assert_eq!(
            out.code, 0,
            "attestation {args:?}: {}\n{}",
            out.stderr, out.stdout
        );
        out
    }

    /// Starts `attestation <args>` and reads its stderr until `pick` finds what it wants
    /// in a line; returns the child, the rest of stderr, what was picked and what was read.
    /// The caller waits for the child.
    #[allow(clippy::zombie_processes)]
    fn start_until(
        &self,
        args: &[&str],
        pick: impl Fn(&str) -> Option<String>,
    ) -> (Child, BufReader<std::process::ChildStderr>, String, String) {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                let _ = child.wait();
                panic!("attestation {args:?} ended before the line the test waits for: {seen}");
            }
            seen.push_str(&line);
            if let Some(found) = pick(line.trim()) {
                return (child, stderr, found, seen);
            }
        }
    }

    /// Runs `attestation auth login` (PKCE), signs in through the test's browser.
    fn login_pkce(&self, user: &str, password: &str) -> Out {
        let (child, mut stderr, url, seen) = self.start_until(
            &["auth", "login", "--no-browser", "--timeout", "60"],
            |line| {
                (line.starts_with("http") && line.contains("code_challenge="))
                    .then(|| line.to_owned())
            },
        );
        assert!(url.contains("code_challenge_method=S256"), "{url}");
        assert!(
            url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
            "{url}"
        );
        let mut browser = Browser::new();
        let page = browser.go(&url);
        assert!(page.body.contains("Sign in"), "{}", page.body);
        let done = browser.submit(&page, &[("login", user), ("password", password)]);
        assert!(done.url.starts_with("http://127.0.0.1:"), "{}", done.url);
        assert!(done.body.contains("Signed in"), "{}", done.body);
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: seen + &rest,
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

// ---------------------------------------------------------------------------------------
// The browser

struct Page {
    url: String,
    status: u16,
    body: String,
}

struct Browser {
    http: ureq::Agent,
    cookies: HashMap<String, String>,
}

fn origin(url: &str) -> &str {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].replace("&amp;", "&"))
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .new_agent(),
            cookies: HashMap::new(),
        }
    }

    fn send(
        &mut self,
        url: &str,
        form: Option<&[(String, String)]>,
    ) -> (u16, Option<String>, String) {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut res = match form {
            None => self.http.get(url).header("cookie", &cookie).call(),
            Some(f) => self
                .http
                .post(url)
                .header("cookie", &cookie)
                .send_form(f.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        }
        .unwrap_or_else(|e| panic!("browser: {url}: {e}"));
        for h in res.headers().get_all("set-cookie") {
            let h = h.to_str().unwrap();
            let pair = h.split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || h.contains("1970") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let status = res.status().as_u16();
        (
            status,
            location,
            res.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    fn follow(&mut self, mut url: String, mut form: Option<Vec<(String, String)>>) -> Page {
        for _ in 0..20 {
            let (status, location, body) = self.send(&url, form.as_deref());
            form = None;
            match location {
                Some(next) if (300..400).contains(&status) => {
                    url = if next.starts_with('/') {
                        format!("{}{next}", origin(&url))
                    } else {
                        next
                    };
                }
                _ => return Page { url, status, body },
            }
        }
        panic!("too many redirects");
    }

    fn go(&mut self, url: &str) -> Page {
        self.follow(url.to_owned(), None)
    }

    /// Submits the page's first POST form: its hidden inputs plus `fields`.
    fn submit(&mut self, page: &Page, fields: &[(&str, &str)]) -> Page {
        let form_start = page
            .body
            .find("<form")
            .unwrap_or_else(|| panic!("no form on {}: {}", page.url, page.body));
        let form_tag =
            &page.body[form_start..page.body[form_start..].find('>').unwrap() + form_start];
        let action = attr(form_tag, "action").unwrap_or_else(|| page.url.clone());
        let action = if action.starts_with('/') {
            format!("{}{action}", origin(&page.url))
        } else {
            action
        };
        let mut values: Vec<(String, String)> = page
            .body
            .match_indices("<input")
            .map(|(i, _)| &page.body[i..i + page.body[i..].find('>').unwrap()])
            .filter(|tag| attr(tag, "type").as_deref() == Some("hidden"))
            .filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default())))
            .collect();
        values.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.follow(action, Some(values))
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn register(server: &Server, pem: &str) -> String {
    let fp = attest_common::ek_fingerprint(pem.as_bytes())
        .unwrap()
        .fingerprint
        .to_string();
    let body = json!({"ek_fingerprint": fp, "ek_cert_pem": base64ct::Base64::encode_string(pem.as_bytes())});
    let (s, reg) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&body.to_string()),
    );
    assert_eq!(s, 201, "{reg}");
    reg["machine_id"].as_str().unwrap().to_owned()
}

use base64ct::Encoding;

fn status_of(server: &Server, id: &str) -> String {
    let (_, m) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    m["status"].as_str().unwrap_or("?").to_owned()
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn pkce_and_device_logins_dual_control_whoami_logout() {
    let provider = Provider::start(300);
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_oidc(dir.path(), &provider.issuer);
    let alice = Cli::new(&server.url, Some(&provider.issuer));
    let bob = Cli::new(&server.url, Some(&provider.issuer));

    // Alice: PKCE through the loopback redirect.
    let out = alice.login_pkce("alice", "alice-password");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("logged in as alice (roles: operator)"),
        "{}",
        out.stdout
    );
    assert_eq!(mode(&alice.tokens()), 0o600);
    assert_eq!(mode(alice.tokens().parent().unwrap()), 0o700);
    let cache: Value = serde_json::from_slice(&std::fs::read(alice.tokens()).unwrap()).unwrap();
    assert!(cache["refresh_token"].is_string());
    // No token on the terminal.
    let token = cache["access_token"].as_str().unwrap();
    assert!(!out.stdout.contains(token) && !out.stderr.contains(token));

    // A wrong password is refused by the provider's page and the login can be retried there.
    let who = alice.ok(&["auth", "whoami"]).stdout;
    assert!(who.contains("identity") && who.contains("alice"), "{who}");
    assert!(
        who.contains("server    alice"),
        "the server validated the token: {who}"
    );
    let who = alice.ok(&["auth", "whoami", "--output", "json"]).json();
    assert_eq!(who["identity"], "alice");
    assert_eq!(who["server_identity"], "alice");
    assert_eq!(who["roles"], json!(["operator"]));

    // Bob: the device flow; the test signs in on the verification page.
    let (child, _stderr, complete, _) = bob
        .start_until(&["auth", "login", "--device", "--timeout", "120"], |line| {
            line.strip_prefix("or open ").map(str::to_owned)
        });
    let mut browser = Browser::new();
    let page = browser.go(&complete);
    let page = browser.submit(&page, &[]); // "Continue" with the code filled in
    let page = browser.submit(&page, &[]); // confirm
    let page = browser.submit(&page, &[("login", "bob"), ("password", "bob-password")]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.to_lowercase().contains("sign-in") || page.body.contains("success"),
        "{}",
        page.body
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("logged in as bob"));

    // Dual control: alice's vote is recorded (202), hers again is a duplicate, bob's completes.
    let id = register(&server, EK_P384);
    let approve = [
        "machine",
        "approve",
        &id,
        "--role",
        "controlplane",
        "--hostname",
        "cp-1",
        "--assigned-ip",
        "10.0.0.5/24",
    ];
    let first = alice.ok(&approve).stdout;
    assert!(
        first.contains("1 of 2; 1 more approval from another operator needed"),
        "{first}"
    );
    assert_eq!(status_of(&server, &id), "pending_approval");
    let again = alice.run(&approve);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(
        again.stderr.contains("409 duplicate_approval"),
        "{}",
        again.stderr
    );
    let second = bob.ok(&approve).stdout;
    assert!(
        second.contains(&format!(
            "machine {id} approved as controlplane cp-1 10.0.0.5/24: status registered"
        )),
        "{second}"
    );
    let detail = alice
        .ok(&["machine", "get", &id, "--output", "json"])
        .json();
    let voters: Vec<(&str, &str)> = detail["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["operator"].as_str().unwrap(),
                v["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(voters, [("alice", "approved"), ("bob", "approved")]);
    assert_eq!(
        server.audit_column(&id, "operator_cn"),
        ["agent", "alice", "bob"]
    );

    // Logout forgets the session and revokes the refresh token at the provider.
    let out = alice.ok(&["auth", "logout"]).stdout;
    assert!(out.contains("logged out (refresh token revoked"), "{out}");
    assert!(!alice.tokens().exists());
    let after = alice.run(&["machine", "list"]);
    assert_eq!(after.code, 3);
    assert!(
        after
            .stderr
            .contains("not logged in: run `attestation auth login`"),
        "{}",
        after.stderr
    );
    let revoked = serde_json::from_str::<Value>(&cache.to_string()).unwrap();
    let (s, body) = token_post(
        &provider.issuer,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "attestation-cli"),
            ("refresh_token", revoked["refresh_token"].as_str().unwrap()),
        ],
    );
    assert_eq!(
        (s, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert_eq!(alice.ok(&["auth", "logout"]).stdout.trim(), "not logged in");
}

fn token_post(issuer: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut res = agent
        .post(&format!("{issuer}/token"))
        .send_form(form.iter().copied())
        .unwrap();
    (res.status().as_u16(), res.body_mut().read_json().unwrap())
}

#[test]
fn expired_tokens_are_refreshed_and_a_dead_session_says_log_in() {
    // Access tokens live 2 s; the refresh token an hour.
    let provider = Provider::start(2);
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_oidc(dir.path(), &provider.issuer);
    let alice = Cli::new(&server.url, Some(&provider.issuer));
    assert_eq!(alice.login_pkce("alice", "alice-password").code, 0);
    let before: Value = serde_json::from_slice(&std::fs::read(alice.tokens()).unwrap()).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        before["expires_at"].as_u64().unwrap() < now,
        "really expired"
    );
    let out = alice.ok(&["machine", "list", "--output", "json"]);
    assert_eq!(out.json().as_array().map(Vec::len), Some(0));
    let after: Value = serde_json::from_slice(&std::fs::read(alice.tokens()).unwrap()).unwrap();
    assert_ne!(after["access_token"], before["access_token"], "refreshed");
    assert!(after["expires_at"].as_u64().unwrap() >= now);
    assert_eq!(mode(&alice.tokens()), 0o600, "still 0600 after the rewrite");

    // The server refuses a token the cache thinks is fresh (clock skew, a rotated key):
    // one refresh and the call is made again.
    let mut cache: Value = serde_json::from_slice(&std::fs::read(alice.tokens()).unwrap()).unwrap();
    cache["access_token"] = json!("not-a-jwt");
    cache["expires_at"] = json!(now + 3600);
    std::fs::write(alice.tokens(), cache.to_string()).unwrap();
    assert_eq!(
        alice
            .ok(&["machine", "list", "-o", "json"])
            .json()
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let retried: Value = serde_json::from_slice(&std::fs::read(alice.tokens()).unwrap()).unwrap();
    assert_ne!(
        retried["access_token"], "not-a-jwt",
        "refreshed after the 401"
    );

    // A session whose refresh token the provider no longer honours: one clear line, exit 3.
    let saved = std::fs::read(alice.tokens()).unwrap();
    alice.ok(&["auth", "logout"]);
    std::fs::create_dir_all(alice.tokens().parent().unwrap()).unwrap();
    std::fs::write(alice.tokens(), &saved).unwrap();
    std::fs::set_permissions(
        alice.tokens(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let out = alice.run(&["machine", "list"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("the session cannot be refreshed")
            && out.stderr.contains("invalid_grant")
            && out.stderr.contains("run `attestation auth login`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("was readable by others; its mode is now 0600")
    );
    assert_eq!(mode(&alice.tokens()), 0o600);
}

#[test]
fn missing_role_is_named_and_the_password_grant_is_explicit() {
    let provider = Provider::start(300);
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_oidc(dir.path(), &provider.issuer);
    let carol = Cli::new(&server.url, Some(&provider.issuer));

    let wrong = carol.run_with(
        &["auth", "login", "--password", "--username", "carol"],
        "not-her-password\n",
    );
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("invalid_grant"), "{}", wrong.stderr);
    assert!(!carol.tokens().exists(), "nothing cached on failure");

    let out = carol.run_with(
        &["auth", "login", "--password", "--username", "carol"],
        "carol-password\n",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("logged in as carol (roles: viewer)"));

    let list = carol.run(&["machine", "list"]);
    assert_eq!(list.code, 3);
    assert_eq!(
        list.stderr.trim(),
        "attestation: server answered 403 missing_role: carol does not have the operator role \
         'operator' (ITL_OIDC_OPERATOR_ROLE)"
    );
    let who = carol.run(&["auth", "whoami"]);
    assert_eq!(who.code, 3);
    assert!(who.stdout.contains("viewer"), "{}", who.stdout);
    assert!(
        who.stdout
            .contains("refused: server answered 403 missing_role"),
        "{}",
        who.stdout
    );

    // --password without --username is a usage error (clap: 2).
    assert_eq!(carol.run(&["auth", "login", "--password"]).code, 2);
}

#[test]
fn every_machine_and_audit_command_against_a_real_server() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let provider_less = server_with_oidc(dir.path(), "http://127.0.0.1:1");
    let server = &provider_less;
    let op = Cli::break_glass(&server.url);

    let who = op.ok(&["auth", "whoami"]).stdout;
    assert!(
        who.contains("SYSTEM") && who.contains("break-glass"),
        "{who}"
    );
    assert_eq!(op.ok(&["health"]).code, 0);

    // list: empty, then two machines; filters; JSON is JSON only.
    assert_eq!(op.ok(&["machine", "list"]).stdout.trim(), "no machines");
    let a = register(server, EK_P384);
    let b = register(server, EK_RSA);
    let table = op.ok(&["machine", "list"]).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("MACHINE") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");
    assert!(!table.contains("\x1b["), "no colours off a terminal");
    let status_col = lines[0].find("STATUS").unwrap();
    assert!(
        lines[1..3]
            .iter()
            .all(|l| l[status_col..].starts_with("pending_approval")),
        "aligned: {table}"
    );
    let listed = op
        .ok(&[
            "machine",
            "list",
            "--status",
            "pending_approval",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert_eq!(
        op.ok(&["machine", "list", "--status", "attested"])
            .stdout
            .trim(),
        "no machines with status attested"
    );
    let bad = op.run(&["machine", "list", "--status", "sleepy"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("400 invalid_status"), "{}", bad.stderr);

    // get: detail; unknown id; an id that would change the URL path.
    let detail = op.ok(&["machine", "get", &a]).stdout;
    assert!(
        detail.contains("status          pending_approval"),
        "{detail}"
    );
    let missing = op.run(&["machine", "get", "no-such-machine"]);
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr.trim(),
        "attestation: server answered 404 not_found: no machine with id 'no-such-machine'"
    );
    assert_eq!(op.run(&["machine", "get", "../audit"]).code, 2);

    // approve (single control for worker-app): 200 and the new status.
    let approved = op.ok(&[
        "machine",
        "approve",
        &a,
        "--role",
        "worker-app",
        "--hostname",
        "edge-1",
        "--assigned-ip",
        "10.0.1.1/24",
    ]);
    assert!(
        approved.stdout.contains("status registered"),
        "{}",
        approved.stdout
    );
    let bad_ip = op.run(&[
        "machine",
        "approve",
        &b,
        "--role",
        "worker-app",
        "--hostname",
        "edge-2",
        "--assigned-ip",
        "not-an-address",
    ]);
    assert_eq!(bad_ip.code, 1, "{}", bad_ip.stderr);
    assert!(bad_ip.stderr.contains("400"), "{}", bad_ip.stderr);
    assert_eq!(status_of(server, &b), "pending_approval", "unchanged");
    let approvals = op.ok(&["machine", "approvals", &a]).stdout;
    assert!(
        approvals.starts_with("OPERATOR") && approvals.contains("SYSTEM"),
        "{approvals}"
    );
    assert_eq!(
        op.ok(&["machine", "approvals", &a, "-o", "json"]).json()["approvals"][0]["hostname"],
        "edge-1"
    );
    assert_eq!(
        op.ok(&["machine", "approvals", &b]).stdout.trim(),
        format!("no approvals recorded for {b}")
    );
    let missing = op.run(&["machine", "approvals", "no-such-machine"]);
    assert_eq!(missing.code, 1, "{}", missing.stderr);

    // The wrong state: a registered machine cannot be locked or rejected.
    let early = op.run(&["machine", "lock", &a, "--reason", "too early"]);
    assert_eq!(early.code, 1);
    assert!(
        early.stderr.contains("409 invalid_transition"),
        "{}",
        early.stderr
    );
    let reject_registered = op.run(&["machine", "reject", &a]);
    assert_eq!(reject_registered.code, 1);
    assert!(
        reject_registered.stderr.contains("409"),
        "{}",
        reject_registered.stderr
    );

    // offline bundle: refuses an existing file; writes the MachineConfig 0600.
    let yaml = dir.path().join("edge-1.yaml");
    let bundle = op
        .ok(&[
            "machine",
            "offline-bundle",
            &a,
            "--machineconfig-out",
            yaml.to_str().unwrap(),
        ])
        .stdout;
    assert!(
        bundle.contains("written to") && bundle.contains("(0600)"),
        "{bundle}"
    );
    assert_eq!(mode(&yaml), 0o600);
    let config = std::fs::read_to_string(&yaml).unwrap();
    support::validate(&config);
    assert!(config.contains("enrollment.key"));
    let exists = op.run(&[
        "machine",
        "offline-bundle",
        &a,
        "--machineconfig-out",
        yaml.to_str().unwrap(),
    ]);
    assert_eq!(exists.code, 2);
    let json_bundle = op
        .ok(&["machine", "offline-bundle", &a, "-o", "json"])
        .json();
    assert!(
        json_bundle["enrollment_cert_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let not_approved = op.run(&["machine", "offline-bundle", &b]);
    assert_eq!(not_approved.code, 1);
    assert!(
        not_approved.stderr.contains("409 not_approved"),
        "{}",
        not_approved.stderr
    );

    // reject the other machine.
    let rejected = op
        .ok(&["machine", "reject", &b, "--reason", "unknown hardware"])
        .stdout;
    assert!(rejected.contains("status rejected"), "{rejected}");

    // import: a receipt from a real TPM; twice is "already known"; garbage is refused.
    let receipt = dir.path().join("receipt.json");
    let made = Command::new(agent_bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TPM2TOOLS_TCTI", swtpm.tcti())
        .env("ATTEST_AGENT_STATE_DIR", dir.path().join("agent"))
        .args(["receipt", "--out", receipt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let imported = op
        .ok(&["machine", "import", receipt.to_str().unwrap()])
        .stdout;
    assert!(
        imported.contains("imported (new): status registered"),
        "{imported}"
    );
    let t = op
        .ok(&["machine", "import", receipt.to_str().unwrap(), "-o", "json"])
        .json()["machine_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let twice = op
        .ok(&["machine", "import", receipt.to_str().unwrap()])
        .stdout;
    assert!(twice.contains("already known"), "{twice}");
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"format\": 1}").unwrap();
    let refused = op.run(&["machine", "import", junk.to_str().unwrap()]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("400"), "{}", refused.stderr);
    std::fs::write(&junk, "not json").unwrap();
    assert_eq!(
        op.run(&["machine", "import", junk.to_str().unwrap()]).code,
        2
    );
    assert_eq!(
        op.run(&["machine", "import", "/nonexistent/receipt.json"])
            .code,
        1
    );

    // The same TPM's agent: register, approved with the CLI, attests; then lock / unlock.
    let agent = |args: &[&str]| {
        let out = Command::new(agent_bin())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TPM2TOOLS_TCTI", swtpm.tcti())
            .env("ATTEST_AGENT_STATE_DIR", dir.path().join("agent"))
            .env("ATTEST_AGENT_SERVER", &server.url)
            .env("ATTEST_AGENT_ALLOW_PLAIN_HTTP", "true")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "attest-agent {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Known to the server already (imported): the answer names no machine.
    assert!(agent(&["register", "--role", "worker-app"]).contains("machine_id=\n"));
    op.ok(&[
        "machine",
        "approve",
        &t,
        "--role",
        "worker-app",
        "--hostname",
        "edge-9",
        "--assigned-ip",
        "10.0.9.9/24",
    ]);
    agent(&["attest", "--once"]);
    assert_eq!(status_of(server, &t), "attested");
    let locked = op.ok(&["machine", "lock", &t, "--reason", "stolen"]).stdout;
    assert_eq!(locked.trim(), format!("machine {t} locked: status locked"));
    let twice = op.run(&["machine", "lock", &t]);
    assert_eq!(twice.code, 1);
    assert!(twice.stderr.contains("409"), "{}", twice.stderr);
    op.ok(&["machine", "unlock", &t, "--reason", "found"]);
    assert_eq!(status_of(server, &t), "attested");
    let listed = op.ok(&["machine", "list"]).stdout;
    assert!(
        listed.contains("edge-9") && listed.contains("just now"),
        "{listed}"
    );

    // revoke: not confirmed (EOF, "n") changes nothing; "y" and --yes do.
    let no = op.run(&[
        "machine",
        "revoke",
        &a,
        "--reason",
        "decommissioned",
        "--wipe",
    ]);
    assert_eq!(no.code, 6, "{}", no.stderr);
    assert!(no.stderr.contains("WIPE the disk"), "{}", no.stderr);
    let no = op.run_with(
        &["machine", "revoke", &a, "--reason", "decommissioned"],
        "n\n",
    );
    assert_eq!(no.code, 6);
    assert!(no.stderr.contains("NOT wiped: add --wipe"), "{}", no.stderr);
    assert_eq!(status_of(server, &a), "registered");
    assert_eq!(
        op.run(&["machine", "revoke", &a, "--reason", " ", "--yes"])
            .code,
        2
    );
    let yes = op.run_with(
        &[
            "machine",
            "revoke",
            &a,
            "--reason",
            "decommissioned",
            "--wipe",
        ],
        "y\n",
    );
    assert_eq!(yes.code, 0, "{}", yes.stderr);
    assert!(
        yes.stdout.contains("revoked (wipe pending)"),
        "{}",
        yes.stdout
    );
    let (_, m) = server.call("GET", &format!("/api/v1/machines/{a}"), Some(ADMIN), None);
    assert_eq!(
        (m["status"].as_str(), m["wipe_pending"].as_bool()),
        (Some("revoked"), Some(true))
    );
    let again = op.run(&["machine", "revoke", &a, "--reason", "again", "--yes"]);
    assert_eq!(again.code, 1, "{}", again.stderr);

    // audit list: paging and the machine filter; verify.
    let page = op.ok(&["audit", "list", "--per-page", "3"]).stdout;
    let total = server.audit_total();
    assert!(
        page.contains(&format!(
            "page 1 of {} ({total} entries)",
            total.div_ceil(3)
        )),
        "{page}"
    );
    assert_eq!(page.lines().count(), 1 + 3 + 1, "{page}");
    let mine = op
        .ok(&["audit", "list", "--machine-id", &a, "-o", "json"])
        .json();
    let mine = mine.as_array().unwrap();
    assert!(mine.iter().all(|e| e["machine_id"] == a.as_str()));
    // Newest first: page 1 is the most recent (the seed's "most recent 50").
    assert!(
        mine.windows(2)
            .all(|w| w[0]["seq"].as_u64() > w[1]["seq"].as_u64()),
        "{mine:?}"
    );
    let actions: Vec<&str> = mine.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(
        actions.contains(&"approve") && actions.contains(&"revoke"),
        "{actions:?}"
    );
    assert_eq!(op.run(&["audit", "list", "--per-page", "500"]).code, 1);
    let ok = op.ok(&["audit", "verify"]).stdout;
    assert!(ok.starts_with(&format!("valid: {total} entries")), "{ok}");
    assert_eq!(
        op.ok(&["audit", "verify", "-o", "json"]).json()["valid"],
        true
    );

    // delete: a revoked machine's record goes, asked first; its audit entries stay.
    let no = op.run_with(&["machine", "delete", &a], "n\n");
    assert_eq!(no.code, 6);
    assert!(no.stderr.contains("audit entries stay"), "{}", no.stderr);
    let gone = op.ok(&["machine", "delete", &a, "--yes"]).stdout;
    assert!(gone.contains(&format!("machine {a} deleted")), "{gone}");
    assert_eq!(
        server
            .call("GET", &format!("/api/v1/machines/{a}"), Some(ADMIN), None)
            .0,
        404
    );
    assert!(
        !server.audit_column(&a, "action").is_empty(),
        "entries stay"
    );

    // A tampered chain: exit 5 naming the first bad entry.
    let data = dir.path().join("data");
    drop(provider_less);
    {
        const AUDIT: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
        let db = redb::Database::open(data.join("attestation.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(AUDIT).unwrap().remove(2).unwrap();
        txn.commit().unwrap();
    }
    let restarted = server_with_oidc(dir.path(), "http://127.0.0.1:1");
    let op = Cli::break_glass(&restarted.url);
    let bad = op.run(&["audit", "verify"]);
    assert_eq!(bad.code, 5, "{}", bad.stderr);
    assert!(
        bad.stderr
            .contains("the audit chain is NOT valid: first bad entry 3"),
        "{}",
        bad.stderr
    );

    // The server down: exit 4 and one line.
    let url = restarted.url.clone();
    drop(restarted);
    let down = Cli::break_glass(&url).run(&["machine", "list"]);
    assert_eq!(down.code, 4);
    assert!(
        down.stderr
            .starts_with(&format!("attestation: cannot reach the server at {url}")),
        "{}",
        down.stderr
    );
    assert_eq!(down.stderr.lines().count(), 1);
}

#[test]
fn settings_errors_and_an_unreachable_provider() {
    let home = Cli::new("http://127.0.0.1:9", Some("http://127.0.0.1:9"));
    // Not logged in.
    let out = home.run(&["machine", "list"]);
    assert_eq!(out.code, 3);
    // The provider cannot be reached.
    let out = home.run(&["auth", "login", "--no-browser", "--timeout", "5"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot reach the OpenID provider"),
        "{}",
        out.stderr
    );
    // No provider configured.
    let none = Cli::new("http://127.0.0.1:9", None);
    let out = none.run(&["auth", "login"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("ATTESTATION_OIDC_ISSUER"),
        "{}",
        out.stderr
    );
    // A config file with a typo; a bad API URL.
    let config = home.home.path().join("attestation/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "api_ulr = \"http://x\"\n").unwrap();
    let out = none
        .command(&["machine", "list"])
        .env("ATTESTATION_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api_ulr"));
    std::fs::write(
        &config,
        "api_url = \"http://127.0.0.1:9\"\noidc_issuer = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let out = none
        .command(&["auth", "login", "--timeout", "1"])
        .env("ATTESTATION_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "the file's issuer is used");
    assert_eq!(Cli::new("ftp://x", None).run(&["machine", "list"]).code, 2);
}
