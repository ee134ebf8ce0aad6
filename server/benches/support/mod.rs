//! What the benches that run the real server share: starting it, and reading /proc.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The keys a registry with machines must have beside it (a start refuses without them):
/// made before a bench writes its machines straight into the registry file.
pub fn make_keys(data: &Path) {
    std::fs::create_dir_all(data).expect("data dir");
    attest_server::responsekey::load_or_create(data).expect("response key");
    attest_server::secret_file::load_or_create(
        &data.join("activation-key"),
        48,
        "activation key",
        |b| getrandom::fill(b).expect("random"),
        |_| true,
    )
    .expect("activation key");
    attest_server::enrollment::EnrollmentCa::load_or_generate(&data.join("enrollment-ca"))
        .expect("Enrollment CA");
}

/// The `attestation-server` binary on 127.0.0.1 with only `ITL_DATA_DIR` = `data` and `env`
/// set; answers the process and its base URL once it listens.
pub fn start_server(data: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_attestation-server"))
        .env_clear()
        .env("ITL_LISTEN", "127.0.0.1:0")
        .env("ITL_DATA_DIR", data)
        // Never the public Image Factory (the default) from a bench.
        .env("ITL_FACTORY_URL", "")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start attestation-server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("server exited").expect("log line");
        if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            break u.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`); 0 when unreadable.
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
