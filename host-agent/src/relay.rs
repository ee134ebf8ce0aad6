//! The bridge between a boot-time agent's serial line and the server: frames from the line
//! (COBS + CRC, `attest_common::frame`) are posted as they are to `/api/v1/link`, and the
//! server's postcard answer goes back down the line as a frame.
//!
//! The relay understands nothing of the requests: it cannot change what the firmware
//! asked or what the server answered (the server's answers are signed over the firmware's
//! nonce anyway). A damaged frame is reported and dropped; the firmware times out and
//! asks again.
//!
//! One request never leaves the machine: an offline receipt (firmware receipt mode) is
//! written to the file given with `--receipt-out`, as the same JSON `attest-agent receipt`
//! writes, for an operator to import. Without that option, or without a server for the
//! other requests, the firmware gets an error answer it can print.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow};
use attest_common::frame::{Deframer, encode, max_encoded_len};
use attest_common::wire::{
    ErrorBody, LinkRequest, LinkRequestBody, LinkResponse, LinkResponseBody, Timestamp,
};

use crate::client::Client;

/// Largest frame payload accepted from the line (a registration with an RSA EK
/// certificate and an AK is about 2.5 KB in postcard).
pub const MAX_FRAME: usize = 8192;

/// Counts of what the relay did, for its exit line and for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    pub frames: u64,
    pub dropped: u64,
    /// Receipts written to `--receipt-out`.
    pub receipts: u64,
    /// Milliseconds from the line opening to the first whole frame (the firmware's boot
    /// to evidence, when the line opens as the machine starts).
    pub first_frame_ms: Option<u64>,
}

/// Where the relay sends what it receives.
pub struct Targets<'a> {
    pub server: Option<&'a Client>,
    pub receipt_out: Option<&'a Path>,
}

/// Opens the serial side: `tcp:HOST:PORT` (QEMU `-serial tcp:...,server=on`) or a
/// device/file path (`/dev/ttyUSB0`, already configured with `stty`).
pub fn open(serial: &str) -> Result<(Box<dyn Read + Send>, Box<dyn Write + Send>)> {
    if let Some(addr) = serial.strip_prefix("tcp:") {
        // The machine's side may still be starting (QEMU opens its listening socket a
        // moment after it is launched): keep trying for ten seconds.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let stream = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e).with_context(|| format!("cannot connect to {serial}")),
            }
        };
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
    targets: &Targets<'_>,
    mut line_in: impl Read,
    mut line_out: impl Write,
    mut log: impl FnMut(&str),
) -> Result<RelayStats> {
    let started = Instant::now();
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
            if stats.first_frame_ms.is_none() {
                stats.first_frame_ms = Some(started.elapsed().as_millis() as u64);
            }
            let answer = match answer(targets, &payload, &mut stats, &mut log) {
                Some(a) => a,
                None => {
                    stats.dropped += 1;
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

/// The answer to one frame: a receipt handled here, everything else from the server.
/// `None` when nothing can be answered (the firmware times out and asks again).
fn answer(
    targets: &Targets<'_>,
    payload: &[u8],
    stats: &mut RelayStats,
    log: &mut impl FnMut(&str),
) -> Option<Vec<u8>> {
    let local =
        |seq: u32, body: LinkResponseBody| postcard::to_allocvec(&LinkResponse { seq, body }).ok();
    let refuse = |seq: u32, code: &str, message: &str| {
        local(
            seq,
            LinkResponseBody::Error {
                status: 400,
                body: ErrorBody::new(code, message),
            },
        )
    };
    if let Ok(LinkRequest {
        seq,
        body: LinkRequestBody::Receipt(mut receipt),
    }) = postcard::from_bytes::<LinkRequest>(payload)
    {
        let Some(out) = targets.receipt_out else {
            log("a receipt arrived but the relay has no --receipt-out: refused");
            return refuse(
                seq,
                "receipt_not_accepted",
                "start the relay with --receipt-out FILE",
            );
        };
        if receipt.created_at.0 == 0 {
            // The firmware has no clock: the receipt is dated when it reaches the relay.
            receipt.created_at = Timestamp(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
        }
        let written = serde_json::to_vec_pretty(&receipt)
            .map_err(anyhow::Error::from)
            .and_then(|json| write_atomically(out, &json));
        return match written {
            Ok(()) => {
                stats.receipts += 1;
                log(&format!("receipt written to {}", out.display()));
                local(seq, LinkResponseBody::ReceiptSaved)
            }
            Err(e) => {
                log(&format!("cannot write the receipt: {e:#}"));
                refuse(seq, "receipt_not_saved", &format!("{e:#}"))
            }
        };
    }
    let Some(client) = targets.server else {
        let seq = postcard::from_bytes::<LinkRequest>(payload).map_or(0, |r| r.seq);
        log("a request arrived but the relay has no --server: refused");
        return refuse(seq, "no_server", "the relay runs without --server");
    };
    match client.link(payload) {
        Ok(a) => Some(a),
        Err(e) => {
            log(&format!("the server did not answer a link request: {e:#}"));
            None
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory (random name,
/// `O_EXCL | O_NOFOLLOW`: `state::write_private`), so a reader never sees half a receipt
/// and a planted link redirects nothing.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    crate::state::write_private(path, bytes)?;
    if let Some(d) = dir {
        // Durable rename: sync the directory (best effort on filesystems that refuse it).
        let _ = std::fs::File::open(d).and_then(|f| f.sync_all());
    }
    Ok(())
}
