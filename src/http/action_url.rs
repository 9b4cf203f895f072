//! `GET|POST /action-url/{event}?…`: the phones' callbacks.
//!
//! Phones fire these and move on; a slow or failing answer only loses the event. So the
//! handler answers 200 at once whatever the query holds (bad input is counted and logged,
//! never a 5xx). The order inside is fixed: who may call → journal → parse → registry.
//! - Only peers inside `action_url.allowed_networks` are accepted, and only under the secret
//!   path segment when `action_url.path_secret` is set. Anything else gets 403, is counted,
//!   and is not journaled as a phone event.
//! - The journal gets the peer and the request target exactly as received: the original
//!   bytes the lenient reader kept (see [`super::lenient`]), or the URI as is. A POST body
//!   (form variables) is appended to the target as its query.

use super::auth::constant_time_eq;
use super::lenient::RAW_TARGET_HEADER;
use super::AppState;
use crate::journal::{truncate_to_micros, Input, JournalEntry};
use crate::phone::action_url::parse_callback;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::Utc;
use ipnet::IpNet;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

/// The largest POST body (form variables) read from a phone; the rest is ignored.
const MAX_POST_BODY: usize = 1024 * 1024;

/// Who may send callbacks.
#[derive(Clone, Debug)]
pub struct CallbackPolicy {
    pub allowed_networks: Vec<IpNet>,
    pub path_secret: Option<String>,
}

impl CallbackPolicy {
    fn allows(&self, peer: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address on a dual-stack socket.
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.allowed_networks.iter().any(|n| n.contains(&peer))
    }
}

/// Counters of the receiver.
#[derive(Debug, Default)]
pub struct CallbackStats {
    pub accepted: AtomicU64,
    pub forbidden_network: AtomicU64,
    pub forbidden_secret: AtomicU64,
    /// Accepted callbacks whose query had problems (bad escapes, invalid UTF-8, …).
    pub with_problems: AtomicU64,
}

/// `/action-url/{event}` (no secret configured).
pub async fn without_secret(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(event): Path<String>,
    request: Request,
) -> impl IntoResponse {
    if state.callbacks.path_secret.is_some() {
        state
            .callback_stats
            .forbidden_secret
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, "phone callback without the path secret refused");
        return (StatusCode::FORBIDDEN, "forbidden\n");
    }
    receive(&state, peer, &event, request).await
}

/// `/action-url/{secret}/{event}`.
pub async fn with_secret(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((secret, event)): Path<(String, String)>,
    request: Request,
) -> impl IntoResponse {
    let ok = state
        .callbacks
        .path_secret
        .as_deref()
        .is_some_and(|s| constant_time_eq(s.as_bytes(), secret.as_bytes()));
    if !ok {
        state
            .callback_stats
            .forbidden_secret
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, "phone callback with a wrong path secret refused");
        return (StatusCode::FORBIDDEN, "forbidden\n");
    }
    receive(&state, peer, &event, request).await
}

async fn receive(
    state: &AppState,
    peer: SocketAddr,
    event: &str,
    request: Request,
) -> (StatusCode, &'static str) {
    if !state.callbacks.allows(peer.ip()) {
        state
            .callback_stats
            .forbidden_network
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, "phone callback from outside action_url.allowed_networks refused");
        return (StatusCode::FORBIDDEN, "forbidden\n");
    }
    // The request is taken whole (not through the `Uri`/`HeaderMap` extractors, which clone)
    // because this is the hot path of ingest.
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_POST_BODY).await {
        Ok(body) => body,
        Err(e) => {
            tracing::info!(%peer, error = %e, "phone callback body unreadable or over 1 MiB; ignored");
            Bytes::new()
        }
    };
    let raw_target: &[u8] = match parts.headers.get(RAW_TARGET_HEADER) {
        Some(raw) => raw.as_bytes(),
        None => parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .as_bytes(),
    };
    let target: Cow<'_, [u8]> = if body.is_empty() {
        Cow::Borrowed(raw_target)
    } else {
        let mut joined = Vec::with_capacity(raw_target.len() + 1 + body.len());
        joined.extend_from_slice(raw_target);
        joined.push(if raw_target.contains(&b'?') {
            b'&'
        } else {
            b'?'
        });
        joined.extend_from_slice(&body);
        Cow::Owned(joined)
    };
    let t = truncate_to_micros(Utc::now());
    state.ingest.submit(JournalEntry {
        t,
        input: Input::Phone {
            peer: peer.ip().to_string(),
            target: String::from_utf8_lossy(&target).into_owned(),
        },
    });
    state
        .callback_stats
        .accepted
        .fetch_add(1, Ordering::Relaxed);

    let query = target
        .iter()
        .position(|&b| b == b'?')
        .map(|q| &target[q + 1..])
        .unwrap_or(&[]);
    let callback = parse_callback(event, query);
    if !callback.problems.is_empty() {
        state
            .callback_stats
            .with_problems
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(%peer, event, problems = ?callback.problems, "phone callback with problems (kept)");
    }
    let extension = state.phones.apply_callback(peer.ip(), &callback, t);
    tracing::debug!(%peer, event = callback.event.as_str(), %extension, "phone callback");
    (StatusCode::OK, "OK\n")
}
