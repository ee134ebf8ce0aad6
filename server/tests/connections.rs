//! The real server binary under connection pressure: descriptors running out, more
//! connections than it serves at once, bodies that stall and connections that go quiet.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::Server;

fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.addr()).expect("connect")
}

/// Sends a request and reads one answer; `Err` with the io error when none comes in time.
fn ask(stream: &mut TcpStream, request: &[u8], wait: Duration) -> std::io::Result<String> {
    stream.write_all(request)?;
    read_answer(stream, wait)
}

/// Reads until an answer's head and its content-length body have arrived.
fn read_answer(stream: &mut TcpStream, wait: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(wait))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= head_end + 4 + length {
                return Ok(text);
            }
        }
        match stream.read(&mut buf)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            n => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the server closes `stream` within `wait`.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n";

#[test]
fn running_out_of_file_descriptors_does_not_stop_the_server() {
    // No request before the flood: what the first request starts must have been started
    // by the server itself (listener::warm_up).
    let server = Server::start();
    // Something else has used up the server's descriptors: leave it two more than it has
    // open now (fewer than a reactor starting late would need).
    let open = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .count() as libc::rlim_t;
    let limit = libc::rlimit {
        rlim_cur: open + 2,
        rlim_max: open + 2,
    };
    // SAFETY: prlimit reads `limit` and writes nothing (old limits not asked for).
    let rc = unsafe {
        libc::prlimit(
            server.pid() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let flood: Vec<TcpStream> = (0..40).map(|_| connect(&server)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().iter().any(|l| l.contains("accept failed")) {
        assert!(
            Instant::now() < deadline,
            "no accept failure logged: {:#?}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(flood);
    // The server is still there and serves once descriptors are free again.
    let mut stream = connect(&server);
    let answer = ask(&mut stream, HEALTHZ, Duration::from_secs(10)).expect("healthz answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let log = server.log();
    let failed = log.iter().find(|l| l.contains("accept failed")).unwrap();
    assert!(failed.contains("Too many open files"), "{failed}");
    assert!(
        log.iter().any(|l| l.contains("accepting again after")),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:#?}");
}

/// With the cap full, a new connection takes the place of the one that has waited longest
/// without a request in progress (crate::conn_table; `tests/slow_clients.rs` runs an agent
/// through a cap full of slow clients).
#[test]
fn a_connection_over_the_limit_takes_the_place_of_the_longest_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("ITL_MAX_CONNECTIONS", "3")]);
    // Three connections, the first with a request answered (waiting again since then): all
    // three slots taken, the second the longest waiting.
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(&server)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let answer = ask(&mut held[0], HEALTHZ, Duration::from_secs(5)).expect("served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A fourth is served at once...
    let mut fourth = connect(&server);
    let answer = ask(&mut fourth, HEALTHZ, Duration::from_secs(5)).expect("served at once");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ...in the place of the second, which is closed; the others still serve.
    assert!(closed_within(&mut held[1], Duration::from_secs(5)));
    let answer = ask(&mut held[0], HEALTHZ, Duration::from_secs(5)).expect("still served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn stalled_bodies_and_quiet_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("ITL_IDLE_TIMEOUT_SECONDS", "1")]);

    // A body that stops coming: 408 with the JSON error, then the connection is closed.
    let mut stalled = connect(&server);
    let started = Instant::now();
    let answer = ask(
        &mut stalled,
        b"POST /api/v1/attest HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"ek_fingerprint\":",
        Duration::from_secs(5),
    )
    .expect("answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(answer.contains("ITL_IDLE_TIMEOUT_SECONDS"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(closed_within(&mut stalled, Duration::from_secs(5)));

    // A connection that never asks anything is closed.
    let mut quiet = connect(&server);
    assert!(closed_within(&mut quiet, Duration::from_secs(5)));

    // One that keeps asking, more slowly than once a second in total but never idle for a
    // second, keeps being served on the same connection.
    let mut busy = connect(&server);
    for _ in 0..4 {
        let answer = ask(&mut busy, HEALTHZ, Duration::from_secs(5)).expect("kept open");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        std::thread::sleep(Duration::from_millis(600));
    }

    // None of this is an error worth a log line.
    let log = server.log();
    assert!(
        !log.iter().any(|l| l.contains("connection from")),
        "{log:#?}"
    );
}
