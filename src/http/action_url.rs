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
use crate::phone::action_url::{parse_callback, parse_target, ActionUrlEvent};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::Utc;
use ipnet::IpNet;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// Counters of the receiver: totals, and the same per event (for metrics).
#[derive(Debug)]
pub struct CallbackStats {
    pub accepted: AtomicU64,
    pub forbidden_network: AtomicU64,
    pub forbidden_secret: AtomicU64,
    /// Accepted callbacks whose query had problems (bad escapes, invalid UTF-8, …).
    pub with_problems: AtomicU64,
    /// Per event slot ([`CallbackStats::slot`]): the [`CallbackResult`] counts, then
    /// `with_problems`. A fixed array, so counting costs no allocation and no lock.
    by_event: [[AtomicU64; CallbackResult::ALL.len() + 1]; EVENT_SLOTS],
}

/// How a phone callback was answered, as counted per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackResult {
    /// Journaled and answered 200.
    Accepted,
    /// 403: the peer is outside `action_url.allowed_networks`.
    ForbiddenNetwork,
    /// 403: the path secret is missing or wrong.
    ForbiddenSecret,
}

impl CallbackResult {
    /// Every result, in a fixed order.
    pub const ALL: [CallbackResult; 3] = [
        CallbackResult::Accepted,
        CallbackResult::ForbiddenNetwork,
        CallbackResult::ForbiddenSecret,
    ];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackResult::Accepted => "accepted",
            CallbackResult::ForbiddenNetwork => "forbidden_network",
            CallbackResult::ForbiddenSecret => "forbidden_secret",
        }
    }
}

/// Typed events ([`ActionUrlEvent::known`]); a unit test keeps this equal to its length.
const KNOWN_EVENTS: usize = 54;
/// One slot per typed event, in [`ActionUrlEvent::known`] order, then one for every other
/// name (`Other`): a bounded label set whatever names phones send.
pub const EVENT_SLOTS: usize = KNOWN_EVENTS + 1;
/// The metrics label of the `Other` slot.
pub const OTHER_EVENT_LABEL: &str = "other";

/// One event's counts, from [`CallbackStats::per_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventCounts {
    /// The canonical event name, or [`OTHER_EVENT_LABEL`].
    pub event: &'static str,
    /// Indexed like [`CallbackResult::ALL`].
    pub results: [u64; CallbackResult::ALL.len()],
    /// Accepted callbacks of this event whose query had problems (also in `Accepted`).
    pub with_problems: u64,
}

impl Default for CallbackStats {
    fn default() -> Self {
        CallbackStats {
            accepted: AtomicU64::new(0),
            forbidden_network: AtomicU64::new(0),
            forbidden_secret: AtomicU64::new(0),
            with_problems: AtomicU64::new(0),
            by_event: [const { [const { AtomicU64::new(0) }; CallbackResult::ALL.len() + 1] };
                EVENT_SLOTS],
        }
    }
}

impl CallbackStats {
    /// The slot of `event`: its place in [`ActionUrlEvent::known`], or the last slot for
    /// `Other`. A scan of a short static list comparing enum tags: no allocation.
    pub fn slot(event: &ActionUrlEvent) -> usize {
        ActionUrlEvent::known()
            .iter()
            .take(KNOWN_EVENTS)
            .position(|e| e == event)
            .unwrap_or(KNOWN_EVENTS)
    }

    /// Counts one callback of `event` answered with `result` (total and per event).
    pub fn record(&self, event: &ActionUrlEvent, result: CallbackResult) {
        let total = match result {
            CallbackResult::Accepted => &self.accepted,
            CallbackResult::ForbiddenNetwork => &self.forbidden_network,
            CallbackResult::ForbiddenSecret => &self.forbidden_secret,
        };
        total.fetch_add(1, Ordering::Relaxed);
        self.by_event[Self::slot(event)][result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an accepted callback of `event` whose query had problems.
    pub fn record_problems(&self, event: &ActionUrlEvent) {
        self.with_problems.fetch_add(1, Ordering::Relaxed);
        self.by_event[Self::slot(event)][CallbackResult::ALL.len()].fetch_add(1, Ordering::Relaxed);
    }

    /// Every slot's counts, zeros included, typed events first and `other` last.
    pub fn per_event(&self) -> Vec<EventCounts> {
        self.by_event
            .iter()
            .enumerate()
            .map(|(slot, row)| EventCounts {
                event: match ActionUrlEvent::known().get(slot) {
                    Some(e) if slot < KNOWN_EVENTS => e.as_str(),
                    _ => OTHER_EVENT_LABEL,
                },
                results: std::array::from_fn(|i| row[i].load(Ordering::Relaxed)),
                with_problems: row[CallbackResult::ALL.len()].load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// `/action-url/{event}` (no secret configured).
pub async fn without_secret(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(event): Path<String>,
    request: Request,
) -> impl IntoResponse {
    if state.callbacks.path_secret.is_some() {
        state.callback_stats.record(
            &ActionUrlEvent::from_name(&event),
            CallbackResult::ForbiddenSecret,
        );
        tracing::warn!(%peer, "phone callback without the path secret refused");
        return (StatusCode::FORBIDDEN, "forbidden\n");
    }
    receive(&state, peer, &event, request).await
}

/// `/action-url/{secret}/{event}`.
pub async fn with_secret(
    State(state): State<Arc<AppState>>,
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
        state.callback_stats.record(
            &ActionUrlEvent::from_name(&event),
            CallbackResult::ForbiddenSecret,
        );
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
        state.callback_stats.record(
            &ActionUrlEvent::from_name(event),
            CallbackResult::ForbiddenNetwork,
        );
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
    // Parsed from the very string that is journaled, as a replay reads it, so the consumer
    // takes this parse instead of repeating it (`Correlator::handle_parsed`). Not forwarded
    // (the consumer parses the journaled text itself) when the target is not UTF-8 — the
    // registry and the problem counters then get the raw bytes, so the invalid UTF-8 is
    // reported — or when a replay would not read it as a callback at all.
    let text = String::from_utf8_lossy(&target);
    let parsed = match &text {
        Cow::Borrowed(text) => parse_target(text),
        Cow::Owned(_) => None,
    };
    let text = text.into_owned();
    let (callback, forwarded) = match parsed {
        Some(cb) => {
            let cb = Arc::new(cb);
            (cb.clone(), Some(cb))
        }
        None => {
            let query = target
                .iter()
                .position(|&b| b == b'?')
                .map_or(&[][..], |q| &target[q + 1..]);
            (Arc::new(parse_callback(event, query)), None)
        }
    };
    let entry = JournalEntry {
        t,
        input: Input::Phone {
            peer: peer.ip().to_string(),
            target: text,
        },
    };
    match forwarded {
        Some(cb) => state.ingest.submit_callback(entry, cb),
        None => state.ingest.submit(entry),
    }

    state
        .callback_stats
        .record(&callback.event, CallbackResult::Accepted);
    if !callback.problems.is_empty() {
        state.callback_stats.record_problems(&callback.event);
        tracing::info!(%peer, event, problems = ?callback.problems, "phone callback with problems (kept)");
    }
    let extension = state.phones.apply_callback(peer.ip(), &callback, t);
    tracing::debug!(%peer, event = callback.event.as_str(), %extension, "phone callback");
    (StatusCode::OK, "OK\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_typed_event_has_its_own_slot_and_other_names_share_the_last() {
        assert_eq!(ActionUrlEvent::known().len(), KNOWN_EVENTS);
        for (i, e) in ActionUrlEvent::known().iter().enumerate() {
            assert_eq!(CallbackStats::slot(e), i, "{e}");
        }
        let other = ActionUrlEvent::from_name("no_such_event");
        assert_eq!(CallbackStats::slot(&other), EVENT_SLOTS - 1);
    }

    #[test]
    fn counts_go_to_the_total_and_to_the_event() {
        let stats = CallbackStats::default();
        let incoming = ActionUrlEvent::from_name("incoming_call");
        stats.record(&incoming, CallbackResult::Accepted);
        stats.record(&incoming, CallbackResult::Accepted);
        stats.record_problems(&incoming);
        stats.record(
            &ActionUrlEvent::from_name("dnd_on"),
            CallbackResult::ForbiddenSecret,
        );
        stats.record(
            &ActionUrlEvent::from_name("x"),
            CallbackResult::ForbiddenNetwork,
        );
        assert_eq!(stats.accepted.load(Ordering::Relaxed), 2);
        assert_eq!(stats.with_problems.load(Ordering::Relaxed), 1);
        assert_eq!(stats.forbidden_secret.load(Ordering::Relaxed), 1);
        assert_eq!(stats.forbidden_network.load(Ordering::Relaxed), 1);
        let per = stats.per_event();
        assert_eq!(per.len(), EVENT_SLOTS);
        let find = |name: &str| per.iter().find(|c| c.event == name).unwrap().clone();
        assert_eq!(find("incoming_call").results, [2, 0, 0]);
        assert_eq!(find("incoming_call").with_problems, 1);
        assert_eq!(find("dnd_on").results, [0, 0, 1]);
        assert_eq!(find(OTHER_EVENT_LABEL).results, [0, 1, 0]);
        assert_eq!(per.last().unwrap().event, OTHER_EVENT_LABEL);
    }
}
