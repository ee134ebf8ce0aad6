//! HTTP adapter: tide routes served from a smol accept loop.
//!
//! tide's own listener leaves Nagle's algorithm on, and every keep-alive request then waits
//! for the peer's delayed ACK (~44 ms, DESIGN.md §10). Accepting connections ourselves lets us
//! set TCP_NODELAY on each one and hand it to async-h1.

use attest_common::wire::ErrorBody;
use smol::net::TcpListener;
use tide::{Request, Response, StatusCode};

/// A JSON error answer `{error, message}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let mut res = Response::new(status);
    res.set_body(
        tide::Body::from_json(&ErrorBody::new(code, message))
            .unwrap_or_else(|_| tide::Body::empty()),
    );
    res
}

/// The routes.
pub fn app() -> tide::Server<()> {
    let mut app = tide::new();
    app.at("/healthz").get(|_req: Request<()>| async {
        let mut res = Response::new(StatusCode::Ok);
        res.set_body(tide::Body::from_json(&serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
        }))?);
        Ok(res)
    });
    app.at("*").all(|req: Request<()>| async move {
        Ok(error_response(
            StatusCode::NotFound,
            "not_found",
            &format!("no such endpoint: {} {}", req.method(), req.url().path()),
        ))
    });
    app
}

/// Serves `app` on `listener` until the listener fails.
pub async fn serve(listener: TcpListener, app: tide::Server<()>) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let app = app.clone();
        smol::spawn(async move {
            let result = async_h1::accept(stream, |mut req| {
                req.set_peer_addr(Some(peer));
                let app = app.clone();
                async move { app.respond(req).await }
            })
            .await;
            if let Err(e) = result {
                // A client that goes away mid-request is routine; anything else is logged.
                if e.status() != tide::StatusCode::BadRequest {
                    eprintln!("connection from {peer}: {e}");
                }
            }
        })
        .detach();
    }
}
