//! The HTTP adapter: hyper 1 (HTTP/1.1) on smol, over our own accept loop.
//!
//! Connections are accepted by `crate::listener` (connection cap, TCP_NODELAY — without it
//! every keep-alive request waits ~44 ms for the peer's delayed ACK, DESIGN.md §10 — idle
//! timeout, accept-error backoff) and served by hyper with smol's timer. Requests are
//! routed through one table (`routes`); handlers only translate: read a bounded body,
//! decode it with the field-naming decoders of `attest-common`, call the service on a
//! blocking thread (registry commits are durable writes), encode the result. Everything a
//! second transport would need (answers, signatures, audit and metrics queries) is the
//! service's.

mod agent;
mod operator;
pub mod request;
pub mod response;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use smol::net::TcpListener;
use smol_hyper::rt::{FuturesIo, SmolTimer};

pub use operator::machine_json;

use crate::config::Config;
use crate::oidc::Oidc;
use crate::service::Service;
use crate::store::Registry;

/// Largest request head (request line and headers) hyper buffers: room for a large OIDC
/// token in `Authorization`.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Everything a handler needs.
pub struct AppState<R: Registry> {
    pub service: Service<R>,
    /// OIDC bearer-token verification, when enabled.
    pub oidc: Option<Oidc>,
    pub config: Config,
    routes: Vec<routes::Route<R>>,
    /// Set when the server begins to shut down (`/readyz` answers 503 from then on).
    stopping: AtomicBool,
}

impl<R: Registry> AppState<R> {
    pub fn new(service: Service<R>, oidc: Option<Oidc>, config: Config) -> Arc<AppState<R>> {
        Arc::new(AppState {
            service,
            oidc,
            config,
            routes: routes::table(),
            stopping: AtomicBool::new(false),
        })
    }

    /// Marks the server as shutting down: `/readyz` answers 503 `not_ready` from now on.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn shutting_down(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Answers one request: routed, handled, a refusal turned into its JSON error.
async fn respond<R: Registry>(
    state: Arc<AppState<R>>,
    request: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    place: Option<Arc<crate::conn_table::Place>>,
) -> response::Response {
    let path = request.uri().path().to_owned();
    let (handler, params) = match routes::find(&state.routes, request.method(), &path) {
        Ok((route, params)) => (route.handler, params),
        Err(miss) => return miss.response(request.method(), &path),
    };
    let req = request::Req::new(state.clone(), request, params, peer, place);
    handler(req)
        .await
        .unwrap_or_else(response::Refusal::into_response)
}

/// Serves `state`'s routes on `listener` until the listener breaks or `shutdown.drain`
/// fires, within `limits` (crate::listener::Limits), closing connections idle for `idle`
/// (crate::listener); over TLS only when `tls` is given (crate::tls). On a drain, each connection finishes the request it is serving and
/// closes (hyper's graceful shutdown; an idle keep-alive connection closes at once);
/// connections still open after `shutdown.grace` are dropped. Returns once every
/// connection has ended: the handlers' registry calls have then returned, except those of
/// dropped connections, which finish on the blocking pool (the caller waits for `state`
/// to be free of them).
pub async fn serve<R: Registry>(
    listener: TcpListener,
    state: Arc<AppState<R>>,
    limits: crate::listener::Limits,
    idle: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: crate::listener::Shutdown,
) -> std::io::Result<crate::listener::Drained> {
    let serve_one = move |stream,
                          peer,
                          drain: crate::listener::Signal,
                          place: Arc<crate::conn_table::Place>| {
        let state = state.clone();
        async move {
            // Busy while a request is served: only a connection waiting for one may be
            // closed to make room for another (crate::conn_table).
            let service = hyper::service::service_fn(move |request| {
                let (state, place) = (state.clone(), place.clone());
                async move {
                    // A request with a body is busy once its body is in (`Req::body`): a
                    // body trickled in can still give way.
                    let no_body = hyper::body::Body::is_end_stream(request.body());
                    if no_body {
                        place.busy();
                    }
                    let answer = respond(state, request, peer, Some(place.clone())).await;
                    // Waiting again once the answer's body is sent (or dropped): a streamed
                    // listing or backup is not given away while it is being read.
                    Ok::<_, std::convert::Infallible>(answer.map(|body| {
                        use http_body_util::BodyExt as _;
                        WaitingWhenSent { body, place }.boxed_unsync()
                    }))
                }
            });
            let connection = http1::Builder::new()
                .timer(SmolTimer::new())
                .header_read_timeout(idle)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(FuturesIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let served =
                futures_lite::future::or(async { Some(connection.as_mut().await) }, async {
                    drain.fired().await;
                    None
                })
                .await;
            let result = match served {
                Some(result) => result,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result
                && !routine_end(&e)
            {
                crate::log::warn(&format!("connection from {peer}: {e}"));
            }
        }
    };
    crate::listener::accept_loop(listener, limits, idle, tls, shutdown, serve_one).await
}

/// An answer's body that marks its connection waiting when it is dropped (sent, or the
/// connection gone); its size is the body's, so a whole body keeps its `content-length`.
struct WaitingWhenSent {
    body: response::Body,
    place: Arc<crate::conn_table::Place>,
}

impl hyper::body::Body for WaitingWhenSent {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for WaitingWhenSent {
    fn drop(&mut self) {
        self.place.waiting();
    }
}

/// Whether a connection ended the way connections end (the peer left or went quiet).
fn routine_end(e: &hyper::Error) -> bool {
    // Malformed requests are the client's; hyper has answered them (400, 431).
    if e.is_incomplete_message()
        || e.is_timeout()
        || e.is_canceled()
        || e.is_closed()
        || e.is_parse()
        || e.is_parse_too_large()
    {
        return true;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return crate::listener::is_routine_end(io);
        }
        cause = c.source();
    }
    false
}
