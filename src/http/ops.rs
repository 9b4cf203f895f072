//! Operations endpoints: `GET /metrics`, `GET /healthz`, `GET /readyz`, and the middleware
//! that times every request for the latency histograms.
//!
//! None of them asks for a token: probes (systemd, Kubernetes, load balancers) and
//! Prometheus scrapes come without one, and nothing here reveals call data — only counts,
//! configured PBX names and route templates. Keep `http.listen` on a network you trust, as
//! for the Action URL receiver.

use super::AppState;
use crate::metrics::exposition::CONTENT_TYPE;
use crate::metrics::readiness::readiness;
use crate::metrics::Metrics;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use std::time::Instant;

/// `GET /metrics`: the Prometheus text exposition (format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    description = "Prometheus text exposition (format 0.0.4). No token: keep `http.listen` on \
        a trusted network. Every metric is described in docs/OPERATIONS.md.",
    responses((status = 200, description = "The metrics", body = String,
        content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = state
        .ops
        .render(&state.ingest, &state.callback_stats, &state.store)
        .await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// `GET /healthz`: the process is up and serving HTTP. Checks nothing else, on purpose: a
/// liveness probe that failed on a PBX outage would restart a healthy bridge.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    description = "Liveness: the process is up and serving HTTP; checks nothing else.",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain"))
)]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when every check passes, else 503; the JSON body lists every check
/// and what it found (see [`crate::metrics::readiness`]).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    description = "Readiness: every configured PBX's AMI link is logged in, the store takes a \
        write, the journal fsyncs.",
    responses(
        (status = 200, description = "Ready; every check passed",
            body = super::openapi::ReadinessDoc),
        (status = 503, description = "Not ready; `checks` says which check failed and why",
            body = super::openapi::ReadinessDoc),
    )
)]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let report = readiness(state.ops.ami(), &state.store, state.ingest.journal()).await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(report)).into_response()
}

/// Middleware: records each request's time to the response head under its route template
/// ([`MatchedPath`], never the raw path: bounded label values) and status class. Installed
/// with `Router::layer`, which wraps every route, so the matched path is known here.
pub async fn track_latency(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    metrics.http.observe(
        route.as_ref().map(|r| r.as_str()),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
