//! A real software TPM per test: provisioned fresh by `swtpm/provision.sh` (EK certificates
//! from a local test manufacturer CA), started by `swtpm/start.sh` on free 127.0.0.1 ports,
//! stopped and deleted on drop.
//!
//! Tests never skip when swtpm is missing: [`Swtpm::start`] panics with the packages to
//! install, so the run fails and says why.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// NV index of the RSA-2048 EK certificate (TCG EK Credential Profile).
pub const NV_EK_CERT_RSA2048: u32 = 0x01c0_0002;
/// NV index of the ECC P-384 EK certificate.
pub const NV_EK_CERT_ECC_P384: u32 = 0x01c0_0016;

/// A running swtpm with its own state directory.
pub struct Swtpm {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Panics with installation advice when a tool is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "'{tool}' is not installed: install the Debian package {package} (./ci/setup.sh installs \
         everything the tests need)"
    );
}

/// Runs `openssl` with `args` (the cross-checking tool of the test bed); panics with its
/// stderr on failure, returns its stdout.
pub fn openssl(args: &[&str]) -> String {
    require_tool("openssl", "openssl");
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("openssl printed UTF-8")
}

/// Two consecutive free ports on 127.0.0.1 (the swtpm TCTI uses PORT and PORT+1).
fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = first.local_addr().expect("local addr").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports on 127.0.0.1");
}

impl Swtpm {
    /// Provisions a fresh TPM state and starts swtpm on it.
    pub fn start() -> Swtpm {
        require_tool("swtpm", "swtpm");
        require_tool("swtpm_setup", "swtpm-tools");
        let dir = tempfile::Builder::new()
            .prefix("itl-swtpm-")
            .tempdir()
            .expect("temp dir");
        let out = Command::new(scripts_dir().join("provision.sh"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--ca")
            .arg(dir.path().join("manufacturer-ca"))
            .output()
            .expect("run swtpm/provision.sh");
        assert!(
            out.status.success(),
            "swtpm/provision.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::run(dir)
    }

    fn run(dir: tempfile::TempDir) -> Swtpm {
        // A port found free can be taken before swtpm binds it: retry on early exit.
        for _ in 0..5 {
            let port = free_port_pair();
            if let Some(child) = spawn(&dir.path().join("state"), port) {
                return Swtpm { child, port, dir };
            }
        }
        panic!("swtpm did not start on 127.0.0.1 after 5 attempts");
    }

    /// A power loss and power on: swtpm killed (no orderly shutdown) and started again on
    /// the same state and ports, so the TPM goes through a TPM Reset (resetCount goes up).
    pub fn power_cycle(&mut self) {
        self.stop();
        self.restart();
    }

    /// Copies the TPM's state to `to` (a directory made for it), as a hypervisor snapshots a
    /// vTPM: the TPM is stopped meanwhile (a power cycle).
    pub fn save_state(&mut self, to: &Path) {
        self.stop();
        copy_dir(&self.state_dir(), to);
        self.restart();
    }

    /// Replaces the TPM's state with one saved earlier (`save_state`) and starts it: a
    /// vTPM rolled back to a snapshot, its counters and clock back with it.
    pub fn restore_state(&mut self, from: &Path) {
        self.stop();
        let state = self.state_dir();
        std::fs::remove_dir_all(&state).expect("remove the TPM state");
        copy_dir(from, &state);
        self.restart();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until the TPM answers a command (its TPM2_Startup done and recorded): a power
    /// cycle right after a start must not kill it before the reset was counted.
    fn wait_started(&self) {
        require_tool("tpm2_readclock", "tpm2-tools");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let answered = Command::new("tpm2_readclock")
                .env("TPM2TOOLS_TCTI", self.tcti())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answered {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("swtpm on port {} does not answer TPM commands", self.port);
    }

    /// Starts swtpm again on the same ports (they were just released).
    fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = spawn(&self.state_dir(), self.port) {
                self.child = child;
                self.wait_started();
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("swtpm did not start again on port {}", self.port);
    }

    /// The command port; the control port is `port() + 1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// TCTI string for tss-esapi and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The TPM state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The manufacturer CA directory (`swtpm-localca-rootca-cert.pem`, `issuercert.pem`).
    pub fn manufacturer_ca_dir(&self) -> PathBuf {
        self.dir.path().join("manufacturer-ca")
    }

    /// A scratch directory that is deleted with this TPM.
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a tpm2-tools command against this TPM; panics with its stderr on failure.
    pub fn tpm2(&self, tool: &str, args: &[&str]) -> Vec<u8> {
        require_tool(tool, "tpm2-tools");
        let out = Command::new(tool)
            .args(args)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The contents of an NV index, read with `tpm2_nvread`.
    pub fn nv_read(&self, index: u32) -> Vec<u8> {
        let file = self.dir.path().join(format!("nv-{index:08x}.bin"));
        let file_arg = file.to_str().expect("utf-8 temp path");
        self.tpm2("tpm2_nvread", &[&format!("0x{index:08x}"), "-o", file_arg]);
        std::fs::read(&file).expect("read tpm2_nvread output")
    }

    /// The EK certificate DER stored at `index`, without the NV index's padding.
    pub fn ek_cert_der(&self, index: u32) -> Vec<u8> {
        let mut nv = self.nv_read(index);
        let len = der_len(&nv).expect("NV index does not start with a DER object");
        nv.truncate(len);
        nv
    }
}

/// Length of the DER object at the front of `bytes` (definite lengths up to 4 bytes).
fn der_len(bytes: &[u8]) -> Option<usize> {
    let first = *bytes.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        let len = bytes
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + n)
    };
    (header + len <= bytes.len()).then_some(header + len)
}

/// swtpm on `state` and ports `port`, `port + 1`, once it answers; `None` when it exited
/// first (a port taken meanwhile) or did not answer within 10 s.
fn spawn(state: &Path, port: u16) -> Option<Child> {
    let mut child = Command::new(scripts_dir().join("start.sh"))
        .arg("--state")
        .arg(state)
        .arg("--port")
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run swtpm/start.sh");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && TcpStream::connect(("127.0.0.1", port + 1)).is_ok()
        {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Copies the files of directory `from` into `to` (created), one level: a TPM state.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the TPM state") {
        let entry = entry.expect("read the TPM state");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy the TPM state");
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        // start.sh execs swtpm, so the child is swtpm itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
