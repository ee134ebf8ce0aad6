//! Response bodies written by a blocking producer while the client reads them: the
//! machine listing, and files (a backup copy).
//!
//! `GET /api/v1/machines` lists the whole registry. Built as one value, 100,000 machines
//! took ≈ 900 MB at the peak and left the process at 740 MB (*measured*, `ci/bench.sh`);
//! an edge appliance does not have that. So the listing is written by a scan on the
//! blocking pool into a channel of a few chunks and sent as it is made: the scan waits
//! when the client reads slowly (the connection's idle timeout ends a client that stops),
//! and stops when the client goes away.
//!
//! The producer's first chunk is awaited before the status line is chosen, so an error
//! before anything was written (the registry unreadable) is still a proper JSON error;
//! an error later can only cut the body short, which the client sees as a broken response.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::Stream;
use smol::channel::{Receiver, Sender};

/// Chunks the producer may be ahead of the client.
const CHUNKS_AHEAD: usize = 4;

/// Bytes gathered before a chunk is handed over.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The producer's end: chunks in order, then an error or the end (drop).
pub struct Producer {
    tx: Sender<io::Result<Vec<u8>>>,
}

impl Producer {
    /// Hands over a chunk; `false` once the client has gone (stop producing).
    pub fn send(&self, chunk: Vec<u8>) -> bool {
        self.tx.send_blocking(Ok(chunk)).is_ok()
    }

    /// Ends the body with an error.
    pub fn fail(self, e: io::Error) {
        let _ = self.tx.send_blocking(Err(e));
    }
}

/// Runs `produce` on the blocking pool; answers its first chunk (or its first error, or
/// `None` if it sent nothing) and a reader of the whole body from that chunk on.
pub async fn start(
    produce: impl FnOnce(Producer) + Send + 'static,
) -> (Option<io::Result<Vec<u8>>>, Body) {
    let (tx, rx) = smol::channel::bounded(CHUNKS_AHEAD);
    smol::unblock(move || produce(Producer { tx })).detach();
    let mut rx = Box::pin(rx);
    let first = futures_lite::StreamExt::next(&mut rx).await;
    let body = Body { rx, first: None };
    (first, body)
}

/// The body after the first chunk: the chunks in order, then the producer's error if any.
pub struct Body {
    rx: Pin<Box<Receiver<io::Result<Vec<u8>>>>>,
    first: Option<Vec<u8>>,
}

impl Body {
    /// The whole body: `first`, then the rest.
    pub fn after(mut self, first: Vec<u8>) -> Body {
        self.first = Some(first);
        self
    }
}

impl Stream for Body {
    type Item = io::Result<Vec<u8>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        this.rx.as_mut().poll_next(cx)
    }
}

/// A file's contents in chunks, read on the blocking pool as the client takes them.
pub fn file_chunks(mut file: std::fs::File) -> Body {
    use std::io::Read as _;
    let (tx, rx) = smol::channel::bounded(CHUNKS_AHEAD);
    smol::unblock(move || {
        loop {
            let mut chunk = vec![0u8; CHUNK_BYTES];
            match file.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    if tx.send_blocking(Ok(chunk)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send_blocking(Err(e));
                    return;
                }
            }
        }
    })
    .detach();
    Body {
        rx: Box::pin(rx),
        first: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::StreamExt as _;

    async fn read_to_end(body: Body, all: &mut Vec<u8>) -> io::Result<()> {
        let mut body = body;
        while let Some(chunk) = body.next().await {
            all.extend(chunk?);
        }
        Ok(())
    }

    #[test]
    fn the_body_is_every_chunk_in_order_then_the_error() {
        smol::block_on(async {
            let (first, body) = start(|p| {
                for i in 0..10u8 {
                    assert!(p.send(vec![i; 1000]));
                }
            })
            .await;
            let mut all = Vec::new();
            read_to_end(body.after(first.unwrap().unwrap()), &mut all)
                .await
                .unwrap();
            let want: Vec<u8> = (0..10u8).flat_map(|i| vec![i; 1000]).collect();
            assert_eq!(all, want);

            let (first, body) = start(|p| {
                assert!(p.send(b"ab".to_vec()));
                p.fail(io::Error::other("the disk went away"));
            })
            .await;
            let mut all = Vec::new();
            let e = read_to_end(body.after(first.unwrap().unwrap()), &mut all)
                .await
                .unwrap_err();
            assert_eq!(e.to_string(), "the disk went away");
            assert_eq!(all, b"ab");
        });
    }

    #[test]
    fn the_producer_stops_when_the_client_goes() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        smol::block_on(async {
            let (first, body) = start(move |p| {
                let mut sent = 0;
                while p.send(vec![0; 10]) {
                    sent += 1;
                    assert!(sent < 1_000_000, "never told to stop");
                }
                done_tx.send(sent).unwrap();
            })
            .await;
            assert!(first.is_some());
            drop(body);
        });
        let sent = done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the producer stopped");
        assert!(sent <= CHUNKS_AHEAD + 1, "{sent}");
    }
}
