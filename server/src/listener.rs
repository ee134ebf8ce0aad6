//! Accepting connections without letting them take the server down.
//!
//! Every machine of the fleet connects here, and so can anything else on the network. A
//! server that stops when `accept` fails for want of a file descriptor (EMFILE) is stopped
//! by a thousand idle connections; one that accepts without bound runs out of memory (an
//! idle keep-alive connection holds ≈ 15 KB here) or of the descriptors its registry, its
//! log and its outbound calls need. So:
//!
//! - at most `ITL_MAX_CONNECTIONS` connections are served at once; further ones wait in
//!   the kernel's backlog (then in their own SYN retries) until one closes;
//! - an accept that fails for want of resources is logged and retried after a pause, and
//!   only a listener that is itself broken ends the server;
//! - a connection on which nothing moves for `ITL_IDLE_TIMEOUT_SECONDS` is closed (this
//!   also ends idle keep-alive connections). hyper bounds only the time to a request's
//!   head; a body or a response that stalls would otherwise hold its connection, and its
//!   slot, for ever. A request whose body stalls is answered 408.
//!
//! With TLS (`crate::tls`), the handshake wraps the watched stream in the connection's own
//! task, so it never holds up the accept loop; it must finish within the idle timeout as a
//! whole (a client that trickles its handshake a byte at a time would otherwise keep its
//! slot for ever), and a connection whose handshake fails or runs out of time is closed
//! without a word in the log above debug level (scanners and clients that do not trust the
//! certificate are routine).
//!
//! On shutdown (`Shutdown`) the listener is closed at once, each connection ends after the
//! request it is serving (idle keep-alive connections at once), and connections still open
//! after the grace period (`ITL_SHUTDOWN_TIMEOUT_SECONDS`) are dropped.
//!
//! The soft limit on open files is raised to the hard one at start, as servers commonly do
//! (the soft default of 1,024 is for interactive shells), and the connection cap is kept
//! below it with room for the server's own files.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use smol::Timer;
use smol::lock::Semaphore;
use smol::net::{TcpListener, TcpStream};

/// File descriptors kept for the server's own use beyond its connections (registry, log,
/// the reactor, outbound calls to the OIDC provider and the Image Factory, blocking pool).
pub const RESERVED_FILES: u64 = 64;

/// At most one "connection limit reached" line per this.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Pause after an accept that failed for want of resources.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Raises the soft limit on open files to the hard one; answers the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    // An unlimited hard limit still has the kernel's nr_open above it.
    let want = limit.rlim_max.min(1 << 20);
    if want > limit.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return want;
        }
    }
    limit.rlim_cur
}

/// The connection cap: as configured, but below the open-files limit by [`RESERVED_FILES`].
pub fn connection_cap(configured: usize, open_files: u64) -> usize {
    let room = open_files.saturating_sub(RESERVED_FILES).max(1);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Whether an accept error says the listener itself is unusable (anything else is a
/// shortage or a connection that died in the backlog, and passes).
fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT)
    )
}

/// A signal that fires once and is seen by every holder, however many (a closed channel).
#[derive(Clone)]
pub struct Signal(smol::channel::Receiver<()>);

/// Fires its [`Signal`]; dropping it fires it too.
pub struct Trigger(smol::channel::Sender<()>);

/// A trigger and the signal it fires.
pub fn signal() -> (Trigger, Signal) {
    let (tx, rx) = smol::channel::bounded(1);
    (Trigger(tx), Signal(rx))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.close();
    }
}

impl Signal {
    /// Waits until the signal fires (at once if it has).
    pub async fn fired(&self) {
        // Nothing is ever sent: this returns when the channel closes.
        let _ = self.0.recv().await;
    }

    pub fn has_fired(&self) -> bool {
        self.0.is_closed()
    }
}

/// A connection as `serve` gets it: plain, or TLS around the watched stream. One lives in
/// each connection's task (on the heap already): the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Conn {
    Plain(Watched),
    Tls(futures_rustls::server::TlsStream<Watched>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_close(cx),
            Conn::Tls(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// The TLS handshake on `stream`, at most `deadline` long (and abandoned when `drain`
/// fires: no request has begun on the connection). `None`: the connection is to be closed.
async fn handshake(
    acceptor: &futures_rustls::TlsAcceptor,
    stream: Watched,
    deadline: Duration,
    drain: &Signal,
    peer: std::net::SocketAddr,
) -> Option<Conn> {
    let accept = async { Some(acceptor.accept(stream).await) };
    let out_of_time = async {
        Timer::after(deadline).await;
        None
    };
    let done = until(drain, futures_lite::future::or(accept, out_of_time)).await;
    match done {
        Some(Some(Ok(tls))) => Some(Conn::Tls(tls)),
        Some(Some(Err(e))) => {
            crate::log::debug(&format!("TLS handshake with {peer} failed: {e}"));
            None
        }
        Some(None) => {
            crate::log::debug(&format!(
                "TLS handshake with {peer} not done in {} s (ITL_IDLE_TIMEOUT_SECONDS): closed",
                deadline.as_secs()
            ));
            None
        }
        None => None,
    }
}

/// The answer to a connection over its peer's limit (plain HTTP; a TLS one is closed).
async fn refuse_crowded(mut stream: TcpStream) {
    use futures_lite::AsyncWriteExt as _;
    let body = r#"{"error":"too_many_connections","message":"too many connections from this address (ITL_MAX_CONNECTIONS_PER_PEER)"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // Written, the writing side shut, what the client sends read and dropped until it closes:
    // closing with its request unread would reset the connection before it reads the 503.
    let write = async {
        use futures_lite::AsyncReadExt as _;
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 4096];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    futures_lite::future::or(write, async {
        Timer::after(Duration::from_secs(2)).await;
    })
    .await;
}

/// How the accept loop ends: when `drain` fires it stops accepting and lets its connections
/// finish (the `serve` function sees the same signal and ends each connection after its
/// request in progress); connections still open `grace` later are dropped.
#[derive(Clone)]
pub struct Shutdown {
    pub drain: Signal,
    pub grace: Duration,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Connections open when the drain began.
    pub open: usize,
    /// Connections still open after the grace period, dropped.
    pub dropped: usize,
}

/// How many connections, and from whom (`crate::conn_table`).
pub struct Limits {
    /// Connections served at once (`ITL_MAX_CONNECTIONS`, within the open-files limit).
    pub max: usize,
    /// Open connections from one address (`ITL_MAX_CONNECTIONS_PER_PEER`).
    pub per_peer: usize,
    /// Addresses without a per-peer limit (trusted proxies).
    pub exempt: crate::proxies::TrustedProxies,
}

/// Accepts on `listener` until it breaks or `shutdown.drain` fires, at most `limits.max`
/// connections at once — with the cap full, a new connection takes the place of the one
/// that has waited longest without a request in progress (`crate::conn_table`) — and at
/// most `limits.per_peer` from one address; hands each to `serve` (with the drain signal
/// and its place, which it marks busy while a request is served), watched for `idle`,
/// after a TLS handshake when `tls` is given (at most `idle` long). After a drain
/// it returns once every connection has ended, or was dropped at the end of the grace
/// period; the listener is closed as soon as the drain begins, so new connections are
/// refused.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limits: Limits,
    idle: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: Shutdown,
    serve: F,
) -> io::Result<Drained>
where
    F: Fn(Conn, std::net::SocketAddr, Signal, Arc<crate::conn_table::Place>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let max = limits.max;
    let serve = Arc::new(serve);
    let tls = tls.map(futures_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(max));
    let table = crate::conn_table::ConnTable::new(limits.per_peer);
    let mut warned_peer: Option<Instant> = None;
    // Every connection task holds a sender: the receiver sees the channel close when the
    // last one has ended.
    let (open_tx, open_rx) = smol::channel::bounded::<()>(1);
    let (kill_trigger, kill) = signal();
    let drain = shutdown.drain.clone();
    let mut failing: Option<(Instant, u64)> = None;
    let mut warned_full: Option<Instant> = None;
    while !drain.has_fired() {
        // Accepted first: with the cap full, a place is made for it (below).
        let (stream, peer) = match until(&drain, listener.accept()).await {
            None => break,
            Some(Ok(accepted)) => accepted,
            Some(Err(e)) if is_fatal(&e) => return Err(e),
            Some(Err(e)) => {
                match &mut failing {
                    None => {
                        crate::log::warn(&format!(
                            "accept failed: {e}; retrying ({} connections open)",
                            (max - slots.available_permits()).saturating_sub(1)
                        ));
                        failing = Some((Instant::now(), 1));
                    }
                    Some((_, n)) => *n += 1,
                }
                Timer::after(ACCEPT_PAUSE).await;
                continue;
            }
        };
        if let Some((since, n)) = failing.take() {
            crate::log::info(&format!(
                "accepting again after {n} failed accepts over {:.1} s",
                since.elapsed().as_secs_f64()
            ));
        }
        if let Err(e) = stream.set_nodelay(true) {
            // The peer is gone already.
            drop(e);
            continue;
        }
        // Its peer's share first: one address at its limit must not make others give way.
        let ip = peer.ip();
        let Some(place) = table.admit(ip, limits.exempt.contains(ip)) else {
            if warned_peer.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                crate::log::warn(&format!(
                    "connections from {ip} over ITL_MAX_CONNECTIONS_PER_PEER ({}): refused \
                     with 503 (said at most once a minute)",
                    limits.per_peer
                ));
                warned_peer = Some(Instant::now());
            }
            if tls.is_none() {
                smol::spawn(refuse_crowded(stream)).detach();
            }
            continue;
        };
        // A place among the `max`: free, or made by the connection waiting longest without a
        // request in progress giving way; when every one is serving a request, the newcomer
        // waits for one to end or to start waiting.
        let slot = loop {
            if let Some(slot) = slots.try_acquire_arc() {
                break Some(slot);
            }
            if table.make_room(&place) {
                break until(&drain, slots.acquire_arc()).await;
            }
            if warned_full.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                crate::log::warn(&format!(
                    "connection limit reached ({max} open, every one serving a request, \
                     ITL_MAX_CONNECTIONS): new connections wait until one ends"
                ));
                warned_full = Some(Instant::now());
            }
            let freed =
                futures_lite::future::or(async { Some(slots.acquire_arc().await) }, async {
                    table.became_waiting().await;
                    None
                });
            match until(&drain, freed).await {
                None => break None,
                Some(Some(slot)) => break Some(slot),
                Some(None) => continue,
            }
        };
        let Some(slot) = slot else { break };
        let place = Arc::new(place);
        let closed = place.closed.clone();
        let stream = Watched::new(stream, idle);
        let (serve, tls, conn_drain) = (serve.clone(), tls.clone(), drain.clone());
        let work = async move {
            let conn = match &tls {
                None => Conn::Plain(stream),
                Some(acceptor) => {
                    match handshake(acceptor, stream, idle, &conn_drain, peer).await {
                        Some(conn) => conn,
                        None => return,
                    }
                }
            };
            serve(conn, peer, conn_drain, place).await
        };
        let (kill, open) = (kill.clone(), open_tx.clone());
        smol::spawn(async move {
            // Dropped unfinished when the grace period is over, or when it gives way to another
            // connection (the TLS handshake included).
            let given_way = async { closed.fired().await };
            futures_lite::future::or(futures_lite::future::or(work, kill.fired()), given_way).await;
            drop(slot);
            drop(open);
        })
        .detach();
    }
    drop(listener);
    drop(open_tx);
    let open = max - slots.available_permits();
    let ended = futures_lite::future::or(
        async {
            let _ = open_rx.recv().await;
            true
        },
        async {
            Timer::after(shutdown.grace).await;
            false
        },
    )
    .await;
    let mut dropped = 0;
    if !ended {
        dropped = max - slots.available_permits();
        kill_trigger.fire();
        let _ = open_rx.recv().await;
    }
    Ok(Drained { open, dropped })
}

/// `work`'s output, or `None` once `signal` has fired.
async fn until<T>(signal: &Signal, work: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(
        async {
            signal.fired().await;
            None
        },
        async { Some(work.await) },
    )
    .await
}

/// A TCP stream on which a read or a write that makes no progress for `idle` fails with
/// `TimedOut`. A read that timed out fails every later read at once, but the connection can
/// still be written: a request whose body stalled is answered (408) before it is closed.
pub struct Watched {
    stream: TcpStream,
    idle: Duration,
    read: Watch,
    write: Watch,
}

/// The watch over one direction.
#[derive(Default)]
struct Watch {
    timer: Option<Timer>,
    expired: bool,
}

impl Watch {
    /// Runs one I/O step: progress disarms the watch, waiting arms it.
    fn step<T>(
        &mut self,
        idle: Duration,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
        step: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.expired {
            return Poll::Ready(Err(timed_out(idle)));
        }
        if let Poll::Ready(r) = step(Pin::new(stream), cx) {
            self.timer = None;
            return Poll::Ready(r);
        }
        let timer = self.timer.get_or_insert_with(|| Timer::after(idle));
        ready!(Pin::new(timer).poll(cx));
        self.timer = None;
        self.expired = true;
        Poll::Ready(Err(timed_out(idle)))
    }
}

impl Watched {
    pub fn new(stream: TcpStream, idle: Duration) -> Watched {
        Watched {
            stream,
            idle,
            read: Watch::default(),
            write: Watch::default(),
        }
    }
}

fn timed_out(idle: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "nothing moved on the connection for {} s (ITL_IDLE_TIMEOUT_SECONDS)",
            idle.as_secs()
        ),
    )
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.read.step(this.idle, &mut this.stream, cx, |s, cx| {
            s.poll_read(cx, buf)
        })
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.write.step(this.idle, &mut this.stream, cx, |s, cx| {
            s.poll_write(cx, buf)
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.write
            .step(this.idle, &mut this.stream, cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

/// One request to ourselves before the server says it listens. It starts what the first
/// request would start (smol's executor threads and their process driver, the timer
/// reactor, the blocking pool), which open pipes and event descriptors when they start and
/// panic when they cannot: a flood that exhausts file descriptors right after start must
/// not catch them unstarted. With TLS (`tls`: a client that trusts the server's own
/// certificate, `crate::tls::self_client`) the request goes through a handshake too, which
/// also starts what a handshake needs (aws-lc's first use).
pub async fn warm_up(
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> io::Result<()> {
    let mut target = addr;
    if addr.ip().is_unspecified() {
        target.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let request = async {
        let stream = TcpStream::connect(target).await?;
        // Quiet at first, so that the connection waits for its request head with a timer
        // (whose reactor starts with the first timer).
        Timer::after(Duration::from_millis(50)).await;
        let answer = match tls {
            None => healthz(stream).await?,
            Some(config) => {
                let tls = futures_rustls::TlsConnector::from(config)
                    .connect(crate::tls::self_name(target), stream)
                    .await?;
                healthz(tls).await?
            }
        };
        if answer.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "GET /healthz answered {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(40)])
            )))
        }
    };
    futures_lite::future::or(request, async {
        Timer::after(Duration::from_secs(5)).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "GET /healthz: no answer in 5 s",
        ))
    })
    .await
}

/// `GET /healthz` on `stream`: the answer as read until the server closed (an end without
/// TLS close_notify still counts once something was read).
async fn healthz(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> io::Result<Vec<u8>> {
    use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer).await {
        Ok(_) => Ok(answer),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !answer.is_empty() => Ok(answer),
        Err(e) => Err(e),
    }
}

/// Whether a connection's error is the routine end of a connection (the peer left, or went
/// quiet) rather than something to log.
pub fn is_routine_end(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_servers_own_files() {
        assert_eq!(connection_cap(1024, 1_048_576), 1024);
        assert_eq!(connection_cap(1024, 1024), 960);
        assert_eq!(connection_cap(1024, 10), 1);
    }

    #[test]
    fn only_a_broken_listener_is_fatal() {
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::ECONNABORTED,
        ] {
            assert!(!is_fatal(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        for errno in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK] {
            assert!(is_fatal(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
    }
}
