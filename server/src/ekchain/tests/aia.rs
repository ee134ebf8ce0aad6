//! AIA fetching against a stand-in HTTP server on 127.0.0.1 (never the internet): an issuer
//! reachable only through its caIssuers URL verifies with fetching on, not with it off;
//! oversized, garbage, wrong and unanchored answers are refused; answers are cached.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::super::{EkChain, MAX_AIA_BYTES, TrustStore};
use super::testca::{Made, NOW, Opts, issue, root};
use super::{chain_of, quickly, reason, verified};

/// Serves `answer` to every request until dropped (`None`: accepts, reads, never answers).
struct StandIn {
    port: u16,
    answer: Arc<Mutex<Option<Vec<u8>>>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(None));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, h, s) = (answer.clone(), hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut silent = Vec::new();
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                h.fetch_add(1, Ordering::SeqCst);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let Some(body) = a.lock().unwrap().clone() else {
                    silent.push(conn); // hold the connection open, say nothing
                    continue;
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-cert\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            }
        });
        StandIn {
            port,
            answer,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn answer(&self, body: Option<Vec<u8>>) {
        *self.answer.lock().unwrap() = body;
    }

    fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Root (to be trusted), an intermediate it issued (to be served), a leaf of that
/// intermediate whose AIA names `url`.
fn aia_chain(url: &str) -> (Made, Made, Made) {
    let r = root("CN=AIA Root,O=Test", &Opts::ca());
    let i = issue("CN=AIA Intermediate,O=Test", &r, &Opts::ca());
    let leaf = issue("", &i, &leaf_opts(url));
    (r, i, leaf)
}

fn leaf_opts(url: &str) -> Opts {
    Opts {
        aia: Some(url.to_owned()),
        ..Opts::leaf()
    }
}

fn fetching(chain: EkChain, cache: Option<&std::path::Path>) -> EkChain {
    chain.with_aia_fetching(Duration::from_secs(2), cache.map(ToOwned::to_owned))
}

#[test]
fn issuer_only_reachable_through_aia_verifies_with_fetching_on() {
    let server = StandIn::start();
    let url = server.url("ca/issuer.crt");
    let (r, i, leaf) = aia_chain(&url);
    server.answer(Some(i.der.clone()));

    let off = chain_of(&[&r]);
    let why = reason(&off.verify(&leaf.der, NOW)).to_owned();
    assert!(
        why.contains(&format!(
            "its caIssuers URL {url} was not fetched: ITL_EK_AIA_FETCH is off"
        )),
        "{why}"
    );
    assert_eq!(server.hits(), 0, "nothing fetched with fetching off");

    let cache = tempfile::tempdir().unwrap();
    let on = fetching(chain_of(&[&r]), Some(cache.path()));
    let v = on.verify(&leaf.der, NOW);
    assert_eq!(
        verified(&v),
        (
            "AIA Root",
            vec!["(empty name)", "AIA Intermediate", "AIA Root"]
        )
    );
    assert!(on.verify(&leaf.der, NOW).is_verified());
    assert_eq!(
        server.hits(),
        1,
        "the second verification used the memory cache"
    );
    drop(server);
    // A new verifier (a restart) finds the issuer in the disk cache; nothing listens now.
    let restarted = fetching(chain_of(&[&r]), Some(cache.path()));
    assert!(restarted.verify(&leaf.der, NOW).is_verified());
    // A fetched intermediate is no anchor: without the root nothing verifies.
    let no_root = fetching(EkChain::new(TrustStore::empty()), Some(cache.path()));
    let why = reason(&no_root.verify(&leaf.der, NOW)).to_owned();
    assert!(
        why.contains("the issuer 'AIA Root' of 'AIA Intermediate' is not in the EK trust store"),
        "{why}"
    );
}

#[test]
fn pem_answer_is_accepted() {
    let server = StandIn::start();
    let (r, i, leaf) = aia_chain(&server.url("issuer.pem"));
    server.answer(Some(i.pem().into_bytes()));
    let on = fetching(chain_of(&[&r]), None);
    assert!(on.verify(&leaf.der, NOW).is_verified());
}

#[test]
fn bad_answers_are_refused() {
    let r = root("CN=AIA Root,O=Test", &Opts::ca());
    let i = issue("CN=AIA Intermediate,O=Test", &r, &Opts::ca());
    let not_ca = issue("CN=AIA Intermediate,O=Test", &r, &Opts::leaf());
    let other = issue("CN=Someone Else,O=Test", &r, &Opts::ca());
    let unanchored = root("CN=AIA Intermediate,O=Test", &Opts::ca());
    let mut oversized = i.der.clone();
    oversized.resize(MAX_AIA_BYTES as usize + 1, 0);
    let cases: [(&str, Vec<u8>, Option<&Made>, &str); 6] = [
        ("big", oversized, None, "answer larger than 65536 bytes"),
        (
            "garbage",
            b"<html>hello</html>".to_vec(),
            None,
            "not one CA certificate",
        ),
        ("not-ca", not_ca.der.clone(), None, "not one CA certificate"),
        (
            "two",
            [i.pem(), i.pem()].concat().into_bytes(),
            None,
            "not one CA certificate",
        ),
        (
            "other",
            other.der.clone(),
            None,
            "('Someone Else') is not the issuer",
        ),
        // A self-signed CA of the right name that the store does not hold.
        (
            "unanchored",
            unanchored.der.clone(),
            Some(&unanchored),
            "self-issued",
        ),
    ];
    for (file, body, signer, expected) in cases {
        let server = StandIn::start();
        let url = server.url(file);
        let leaf = issue("CN=ek", signer.unwrap_or(&i), &leaf_opts(&url));
        server.answer(Some(body));
        let cache = tempfile::tempdir().unwrap();
        let on = fetching(chain_of(&[&r]), Some(cache.path()));
        let why = reason(&on.verify(&leaf.der, NOW)).to_owned();
        assert!(why.contains(expected), "{file}: {why}");
        // Nothing that led to no verified chain is kept on disk (the URL was the agent's).
        let kept = std::fs::read_dir(cache.path()).map_or(0, |d| d.count());
        assert_eq!(kept, 0, "{file}: written to the disk cache");
        // A failed URL is not tried again at once.
        let hits = server.hits();
        assert!(!on.verify(&leaf.der, NOW).is_verified());
        assert_eq!(server.hits(), hits, "{file}: fetched again");
    }
}

#[test]
fn silent_server_times_out() {
    let server = StandIn::start();
    let (r, _, leaf) = aia_chain(&server.url("slow.crt"));
    let on = chain_of(&[&r]).with_aia_fetching(Duration::from_millis(500), None);
    let v = quickly(Duration::from_secs(3), || on.verify(&leaf.der, NOW));
    assert!(reason(&v).contains("could not be fetched"), "{v:?}");
    // A closed port reads the same as a silent one (review F6: the reason reaches whoever
    // registered, and must not make the server their port scanner).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/ca.crt", l.local_addr().unwrap())
    };
    let (r2, _, leaf2) = aia_chain(&closed);
    let on = chain_of(&[&r2]).with_aia_fetching(Duration::from_millis(500), None);
    let refused = reason(&on.verify(&leaf2.der, NOW)).to_owned();
    let timed_out = reason(&v).to_owned();
    for why in [&refused, &timed_out] {
        let lower = why.to_lowercase();
        assert!(
            why.contains("could not be fetched (the server's log says why)")
                && !lower.contains("refused")
                && !lower.contains("timed out")
                && !lower.contains("timeout"),
            "{why}"
        );
    }
}
