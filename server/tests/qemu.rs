//! The bare-metal firmware image booted in QEMU (q35, TIS TPM on swtpm) by `qemu/run.sh`,
//! its link relayed to a real server: register, attest after approval, wipe after a
//! revocation, and an offline receipt the server imports.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{ADMIN, Server, agent_bin};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs qemu/run.sh with the test's own binaries; the image is built by it (profile
/// `firmware`), the relay is this build's attest-agent.
fn run(args: &[&str]) -> (i32, String) {
    attest_swtpm::require_tool("qemu-system-x86_64", "qemu-system-x86");
    let out: Output = Command::new(root().join("qemu/run.sh"))
        .args(args)
        .env("ITL_AGENT_BIN", agent_bin())
        // The relay talks to the test server over plain HTTP on loopback.
        .env("ATTEST_AGENT_ALLOW_PLAIN_HTTP", "true")
        .output()
        .expect("run qemu/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    (out.status.code().unwrap_or(-1), stdout)
}

fn provision(state: &Path) {
    let ca = state.parent().unwrap().join("ca");
    let out = Command::new(root().join("swtpm/provision.sh"))
        .arg("--state")
        .arg(state)
        .arg("--ca")
        .arg(ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `attest-agent fingerprint` (tss-esapi) on the same TPM state, through swtpm's TCP port.
fn host_agent_fingerprint(state: &Path) -> String {
    let port = loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let mut swtpm = Command::new(root().join("swtpm/start.sh"))
        .arg("--state")
        .arg(state)
        .arg("--port")
        .arg(port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let mut out = None;
    for _ in 0..100 {
        let o = Command::new(agent_bin())
            .env_clear()
            .args(["fingerprint", "--tpm", &tcti])
            .output()
            .unwrap();
        if o.status.success() {
            out = Some(o);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = swtpm.kill();
    let _ = swtpm.wait();
    let out = out.expect("attest-agent fingerprint on swtpm");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("ek_fingerprint="))
        .unwrap_or_else(|| panic!("no fingerprint in {text}"))
        .to_owned()
}

fn line<'a>(console: &'a str, prefix: &str) -> &'a str {
    console
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' line in:\n{console}"))
}

#[test]
fn qemu_image_registers_attests_and_is_wiped() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tpm");
    provision(&state);
    let fp = host_agent_fingerprint(&state);
    let server = support::start_with_configs(dir.path(), &[]);
    let state_arg = state.to_str().unwrap();

    // Register mode: the USB stick's first boot.
    let (code, console) = run(&[
        "--mode",
        "register",
        "--server",
        &server.url,
        "--tpm-state",
        state_arg,
        "--serial",
        "SN-QEMU-7",
    ]);
    assert_eq!(code, 0, "{console}");
    let reg = line(&console, "itl-firmware: registered machine=");
    assert!(reg.contains("status=registered"), "{reg}");
    assert!(
        reg.contains("(signed answer)"),
        "checked with the server key: {reg}"
    );
    let id = reg
        .split_whitespace()
        .find_map(|w| w.strip_prefix("machine="))
        .unwrap()
        .to_owned();
    let (_, m) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert_eq!(
        m["ek_fingerprint"],
        fp.as_str(),
        "same EK as tss-esapi reads: {m}"
    );
    assert_eq!(m["hw_serial"], "SN-QEMU-7", "{m}");
    assert_eq!(m["status"], "registered", "{m}");

    // Approved, the next boot attests: a verified quote, then `attested`.
    server.admin(
        &id,
        "approve",
        r#"{"role":"worker-app","hostname":"qemu-7","assigned_ip":"10.0.7.7/24"}"#,
    );
    let (code, console) = run(&[
        "--mode",
        "attest",
        "--server",
        &server.url,
        "--tpm-state",
        state_arg,
    ]);
    assert_eq!(code, 0, "{console}");
    let att = line(&console, "itl-firmware: attested ");
    assert!(
        att.contains("action=apply-config") && att.contains("signature verified"),
        "{att}"
    );
    // The signed digest of the one config that may be installed.
    let digest = att
        .split_whitespace()
        .find_map(|w| w.strip_prefix("config_sha384="))
        .unwrap();
    assert_eq!(digest.len(), 96, "{att}");
    assert!(
        att.contains("/api/v1/config/<single use, not shown>"),
        "the console shows no config token: {att}"
    );
    let (_, m) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert_eq!(m["status"], "attested", "{m}");
    assert!(line(&console, "relay: first_frame_ms=").len() > 20);
    // The deepest mode (register, activate, quote, verify): its stack high-water, for the
    // record (ci/bench.sh reports the image's numbers).
    eprintln!("{}", line(&console, "itl-firmware: done "));

    // Revoked with wipe: the firmware gets `wipe` and exits with the wipe status.
    server.admin(&id, "revoke", r#"{"reason":"stolen","wipe":true}"#);
    let (code, console) = run(&[
        "--mode",
        "attest",
        "--server",
        &server.url,
        "--tpm-state",
        state_arg,
    ]);
    assert_eq!(code, 4, "{console}");
    assert!(
        line(&console, "itl-firmware: attested ").contains("action=wipe"),
        "{console}"
    );
}

#[test]
fn qemu_image_receipt_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let receipt = dir.path().join("receipt.json");
    let (code, console) = run(&[
        "--mode",
        "receipt",
        "--receipt-out",
        receipt.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{console}");
    assert!(
        console.contains("itl-firmware: receipt saved by the relay"),
        "{console}"
    );
    let server = Server::start();
    let body = std::fs::read_to_string(&receipt).unwrap();
    let (s, m) = server.call("POST", "/api/v1/machines/import", Some(ADMIN), Some(&body));
    assert!(s == 200 || s == 201, "{s} {m}");
    assert_eq!(m["status"], "registered", "{m}");
}
