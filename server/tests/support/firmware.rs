//! The firmware agent (the code the image runs) on swtpm, through a real `attest-agent
//! relay` process: one boot at a time, for `link.rs` and the binding attacks.

#![allow(dead_code)]

#[path = "../../../firmware/tests/support/swtpm_tcp.rs"]
pub mod swtpm_tcp;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use attest_firmware::tpm::Tpm;
use attest_swtpm::Swtpm;
use base64ct::Encoding as _;
use swtpm_tcp::SwtpmTcp;

use crate::support::{Server, agent_bin};

/// The firmware's end of a relayed line, for `attest_firmware::run`: a socket that waits
/// 100 ms per read, as the image's UART loop does.
pub struct SocketLink(TcpStream);

impl attest_firmware::run::Link for SocketLink {
    fn send(&mut self, bytes: &[u8]) -> Result<(), attest_firmware::run::LinkError> {
        self.0
            .write_all(bytes)
            .map_err(|_| attest_firmware::run::LinkError)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, attest_firmware::run::LinkError> {
        match self.0.read(buf) {
            Ok(0) => Err(attest_firmware::run::LinkError),
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(0)
            }
            Err(_) => Err(attest_firmware::run::LinkError),
        }
    }
}

/// One boot of the firmware agent (the code the image runs) on `swtpm`, through a fresh
/// relay process: the outcome and the relay's stdout.
pub fn boot(
    swtpm: &Swtpm,
    relay_args: &[&str],
    mode: attest_firmware::agent::Mode,
    server_key: Option<&[u8]>,
) -> (attest_firmware::agent::Outcome, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let relay = Command::new(agent_bin())
        .env_clear()
        .env("ATTEST_AGENT_ALLOW_PLAIN_HTTP", "true")
        .arg("relay")
        .args(relay_args)
        .arg("--serial")
        .arg(format!("tcp:127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    let mut link = SocketLink(stream);
    let mut tpm = Tpm::new(SwtpmTcp::from_tcti(&swtpm.tcti()).unwrap());
    let platform = attest_firmware::run::Platform {
        hw_uuid: Some("4c4c4544-0000-1000-8000-000000000001"),
        hw_serial: Some("SN-FW-1"),
        hw_product: Some("Standard PC (Q35 + ICH9, 2009)"),
        now: None,
    };
    let mut agent = Box::new(attest_firmware::agent::Agent::idle());
    let outcome =
        attest_firmware::run::boot(&mut agent, &mut tpm, &mut link, mode, &platform, server_key);
    drop(link);
    let out = relay.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (outcome, String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn server_key(server: &Server) -> Vec<u8> {
    let (_, key) = server.call("GET", "/api/v1/server-key", None, None);
    base64ct::Base64::decode_vec(key["public_key_der"].as_str().unwrap()).unwrap()
}
