//! A man in the middle on the agents' HTTP path (host agent, or the firmware's relay), for
//! the binding attacks (`trust.rs`, `link.rs`): it rewrites answers or requests, or swaps
//! two machines' requests so that each gets the (genuine, signed) answer to the other's.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rewrites a body: (request path, body) → body.
pub type Rewrite = Arc<dyn Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync>;
/// Selects the requests to swap: (path, body).
pub type Pick = Arc<dyn Fn(&str, &[u8]) -> bool + Send + Sync>;

#[derive(Clone)]
pub enum Mitm {
    /// Every answer's body on its way back.
    Answers(Rewrite),
    /// Every request's body on its way in.
    Requests(Rewrite),
    /// Requests `Pick` selects are paired as they come: the second is sent first and its
    /// answer goes to the first machine, then the first's, whose answer goes to the second.
    Swap(Pick),
}

/// An answer as the proxy got it.
type Answer = (u16, Vec<u8>);
/// The first request of a pair, waiting for its partner: its body and where its answer goes.
type Parked = Arc<Mutex<Option<(Vec<u8>, Sender<Answer>)>>>;

/// Listens on a free loopback port; the base URL to give the agents.
pub fn start(upstream: String, how: Mitm) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let parked: Parked = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (upstream, how, parked) = (upstream.clone(), how.clone(), parked.clone());
            std::thread::spawn(move || one(stream, &upstream, &how, &parked));
        }
    });
    url
}

struct Request {
    method: String,
    path: String,
    content_type: String,
    body: Vec<u8>,
}

fn read_request(client: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let (mut head, mut length, mut content_type) = (String::new(), 0usize, String::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if let Some(v) = lower.strip_prefix("content-type:") {
            content_type = v.trim().to_owned();
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut parts = head.split_whitespace();
    Some(Request {
        method: parts.next()?.to_owned(),
        path: parts.next()?.to_owned(),
        content_type,
        body,
    })
}

fn forward(upstream: &str, req: &Request, body: &[u8]) -> Answer {
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = format!("{upstream}{}", req.path);
    let mut res = if req.method == "GET" {
        http.get(&url).call()
    } else {
        let content_type = match req.content_type.as_str() {
            "" => "application/json",
            t => t,
        };
        http.post(&url)
            .header("content-type", content_type)
            .send(body)
    }
    .unwrap();
    let status = res.status().as_u16();
    (status, res.body_mut().read_to_vec().unwrap())
}

fn answer(mut client: &TcpStream, (status, body): &Answer, content_type: &str) {
    let _ = write!(
        client,
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = client.write_all(body);
}

fn one(client: TcpStream, upstream: &str, how: &Mitm, parked: &Parked) {
    let Some(req) = read_request(&client) else {
        return;
    };
    let content_type = match req.path.as_str() {
        "/api/v1/link" => "application/octet-stream",
        _ => "application/json",
    };
    match how {
        Mitm::Answers(rewrite) => {
            let (status, body) = forward(upstream, &req, &req.body);
            answer(&client, &(status, rewrite(&req.path, body)), content_type);
        }
        Mitm::Requests(rewrite) => {
            let body = rewrite(&req.path, req.body.clone());
            answer(&client, &forward(upstream, &req, &body), content_type);
        }
        Mitm::Swap(pick) if pick(&req.path, &req.body) => {
            let mut slot = parked.lock().unwrap();
            match slot.take() {
                None => {
                    let (tx, rx) = channel();
                    *slot = Some((req.body.clone(), tx));
                    drop(slot);
                    let got = rx
                        .recv_timeout(Duration::from_secs(60))
                        .unwrap_or((504, b"{}".to_vec()));
                    answer(&client, &got, content_type);
                }
                Some((first, to_first)) => {
                    drop(slot);
                    let _ = to_first.send(forward(upstream, &req, &req.body));
                    answer(&client, &forward(upstream, &req, &first), content_type);
                }
            }
        }
        Mitm::Swap(_) => answer(&client, &forward(upstream, &req, &req.body), content_type),
    }
}
