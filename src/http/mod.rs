//! The HTTP side: phone callbacks (Action URL) and the API.
//!
//! Served by hyper directly (not `axum::serve`) so every connection can pass through
//! [`lenient::LenientIo`], which repairs the request lines some phones send (see there).

pub mod action_url;
pub mod auth;
pub mod calls;
pub mod control;
pub mod error;
pub mod events;
pub mod lenient;
pub mod openapi;
pub mod ops;
pub mod phones;
pub mod ui;
pub mod webhooks;

use crate::ingest::Ingest;
use crate::phone::registry::PhoneRegistry;
use action_url::{CallbackPolicy, CallbackStats};
use auth::TokenSet;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub ingest: Ingest,
    pub phones: PhoneRegistry,
    pub tokens: TokenSet,
    pub callbacks: Arc<CallbackPolicy>,
    pub callback_stats: Arc<CallbackStats>,
    pub store: crate::store::Store,
    pub orphans:
        Arc<std::sync::Mutex<std::collections::VecDeque<crate::correlator::OrphanCallback>>>,
    /// Click-to-call and DND.
    pub control: crate::control::Control,
    /// Live event streams (SSE, WebSocket).
    pub live: events::LiveHttp,
    /// Metrics and readiness (`/metrics`, `/readyz`) and the HTTP latency histograms.
    pub ops: Arc<crate::metrics::Metrics>,
}

/// Lets a handler close its own connection at once — for a live-event client that stopped
/// reading, whose response hyper would otherwise keep trying to write forever. Every request
/// carries one in its extensions.
#[derive(Clone, Debug)]
pub struct ConnectionClose(CancellationToken);

impl ConnectionClose {
    /// Drops the connection (the socket is closed; nothing more is written).
    pub fn close(&self) {
        self.0.cancel();
    }
}

/// The routes. The state is shared behind one `Arc`: axum hands every handler its own copy,
/// and copying the fields one by one (a dozen reference counts) was a visible cost per
/// phone callback.
pub fn router(state: AppState) -> Router {
    let metrics = state.ops.clone();
    let state = Arc::new(state);
    routes()
        // Keep this layer after every route: it wraps only the routes added before it.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            ops::track_latency,
        ))
        .with_state(state)
}

/// Every route, before the state and the layers. Each one is documented in the OpenAPI
/// document ([`openapi`]); `tests/openapi.rs` compares the two.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/action-url/{event}",
            get(action_url::without_secret).post(action_url::without_secret),
        )
        .route(
            "/action-url/{secret}/{event}",
            get(action_url::with_secret).post(action_url::with_secret),
        )
        .route("/api/v1/calls", get(calls::list))
        .route("/api/v1/calls.csv", get(calls::csv))
        .route("/api/v1/calls/{id}", get(calls::get))
        .route("/api/v1/orphans", get(calls::orphans))
        .route("/api/v1/phones", get(phones::list))
        .route("/api/v1/phones/{ext}", get(phones::get))
        .route(
            "/api/v1/phones/{ext}/dnd",
            axum::routing::put(control::put_dnd),
        )
        .route("/api/v1/dial", axum::routing::post(control::post_dial))
        .route("/api/v1/dial/{request_id}", get(control::get_dial))
        .route("/api/v1/events", get(events::sse))
        .route("/api/v1/ws", get(events::ws))
        .route("/api/v1/webhooks/deliveries", get(webhooks::deliveries))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index_slash))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/style.css", get(ui::style_css))
        .route("/openapi.json", get(openapi::openapi_json))
}

/// Serves `app` on `listener` until `shutdown`, then lets open requests finish (≤ 5 s).
///
/// Connections allow upgrades (WebSocket, `/api/v1/ws`); an upgraded connection leaves this
/// loop's bookkeeping and belongs to its handler. A handler may close its own connection
/// through the [`ConnectionClose`] in the request's extensions.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    // Every connection task holds a clone; when all are dropped, every connection is over.
    let (open_tx, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    // HTTP/1 only: phones and CRM hooks speak HTTP/1.1, and keep-alive is what matters.
    let builder = hyper::server::conn::http1::Builder::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, keep serving.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let close = CancellationToken::new();
        let handle = ConnectionClose(close.clone());
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(handle.clone());
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
        let io = TokioIo::new(lenient::LenientIo::new(stream));
        let conn = builder.serve_connection(io, service).with_upgrades();
        let (shutdown, open) = (shutdown.clone(), open_tx.clone());
        tokio::spawn(async move {
            let _open = open;
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = close.cancelled() => None,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        r = conn.as_mut() => Some(r),
                        _ = close.cancelled() => None,
                    }
                }
            };
            match ended {
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error")
                }
                None => tracing::debug!(%peer, "HTTP connection closed by its handler"),
                Some(Ok(())) => {}
            }
        });
    }
    drop(open_tx);
    if tokio::time::timeout(Duration::from_secs(5), all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after 5 s; closing them");
    }
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
