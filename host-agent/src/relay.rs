//! The bridge between a boot-time agent's serial line and the server: frames from the line
//! (COBS + CRC, `attest_common::frame`) are posted as they are to `/api/v1/link`, and the
//! server's postcard answer goes back down the line as a frame.
//!
//! The relay understands nothing of the requests: it cannot change what the firmware
//! asked or what the server answered (the server's answers are signed over the firmware's
//! nonce anyway). A damaged frame is reported and dropped; the firmware times out and
//! asks again.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{Context as _, Result, anyhow};
use attest_common::frame::{Deframer, encode, max_encoded_len};

use crate::client::Client;

/// Largest frame payload accepted from the line (a registration with an RSA EK
/// certificate and an AK is about 2.5 KB in postcard).
pub const MAX_FRAME: usize = 8192;

/// Counts of what the relay did, for its exit line and for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    pub frames: u64,
    pub dropped: u64,
}

/// Opens the serial side: `tcp:HOST:PORT` (QEMU `-serial tcp:...,server=on`) or a
/// device/file path (`/dev/ttyUSB0`, already configured with `stty`).
pub fn open(serial: &str) -> Result<(Box<dyn Read + Send>, Box<dyn Write + Send>)> {
    if let Some(addr) = serial.strip_prefix("tcp:") {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("cannot connect to {serial}"))?;
        stream.set_nodelay(true)?;
        let write = stream.try_clone()?;
        return Ok((Box::new(stream), Box::new(write)));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(serial)
        .with_context(|| format!("cannot open {serial}"))?;
    let write = file.try_clone()?;
    Ok((Box::new(file), Box::new(write)))
}

/// Relays until the line closes. `log` gets one line per dropped frame or failed post.
pub fn run(
    client: &Client,
    mut line_in: impl Read,
    mut line_out: impl Write,
    mut log: impl FnMut(&str),
) -> Result<RelayStats> {
    let mut stats = RelayStats::default();
    let mut deframer = Box::new(Deframer::<MAX_FRAME>::new());
    let mut buf = [0u8; 4096];
    loop {
        let n = match line_in.read(&mut buf) {
            Ok(0) => return Ok(stats),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow!("reading the serial line: {e}")),
        };
        for &b in &buf[..n] {
            let Some(frame) = deframer.push(b) else {
                continue;
            };
            let payload = match frame {
                Ok(p) => p.to_vec(),
                Err(e) => {
                    stats.dropped += 1;
                    log(&format!("dropped a frame from the line: {e}"));
                    continue;
                }
            };
            let answer = match client.link(&payload) {
                Ok(a) => a,
                Err(e) => {
                    stats.dropped += 1;
                    log(&format!("the server did not answer a link request: {e:#}"));
                    continue;
                }
            };
            let mut out = vec![0u8; max_encoded_len(answer.len())];
            let len = encode(&answer, &mut out).map_err(|e| anyhow!("{e}"))?;
            line_out
                .write_all(&out[..len])
                .and_then(|()| line_out.flush())
                .context("writing to the serial line")?;
            stats.frames += 1;
        }
    }
}
