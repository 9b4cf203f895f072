//! [`Hub`]: numbers live events, keeps the latest in a ring for resuming, and fans them out to
//! stream clients (SSE, WebSocket) and durable sinks (the webhook outbox).
//!
//! The publisher never waits for anyone. Each event is serialised once; every client gets an
//! `Arc` of it through its own bounded queue (`try_send`). A client whose queue is full is
//! *cut*: it is removed at once, its queue ends, and its stream handler says why
//! (`stream.closed`, reason `slow_consumer`) and closes the connection. A full durable sink
//! (the webhook writer stalled on its database) loses the event for that sink, counted and
//! logged; its queue is large enough that this means the database is broken, not busy.
//!
//! Resuming: [`Hub::subscribe`] with the last id a client saw returns the buffered events after
//! it (filtered), atomically with the registration, so nothing is missed or repeated between
//! the backlog and the live queue. When the events after that id are no longer all buffered
//! (or the id is not from this run), the subscription carries a [`Reset`] that the stream
//! sends first.

use super::event::{EventType, LiveEvent, UnknownEventType};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

/// Sizes of the hub's buffers.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// Events kept for resuming with `Last-Event-ID`.
    pub buffer_events: usize,
    /// Events queued for one client before it is cut off.
    pub client_buffer: usize,
    /// The id of the first event (see [`first_id_now`]).
    pub first_id: u64,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            buffer_events: 10_000,
            client_buffer: 1024,
            first_id: first_id_now(),
        }
    }
}

/// A first event id that is above every id of earlier runs: the current time in microseconds
/// since the Unix epoch. Ids advance by one per event, so they stay below the clock unless a
/// run averaged more than a million events a second; ids stay exact in JavaScript (< 2^53)
/// until the year 2255.
pub fn first_id_now() -> u64 {
    chrono::Utc::now().timestamp_micros().max(1) as u64
}

/// One published event, serialised once and shared by every client.
#[derive(Debug)]
pub struct Published {
    pub id: u64,
    pub kind: EventType,
    pub call_id: Option<String>,
    pub extensions: Vec<String>,
    /// The event as JSON (`{"id":…,"type":…,…}`): the WebSocket message and webhook body.
    pub json: Bytes,
    /// The SSE frame: `id: …\nevent: …\ndata: <json>\n\n`.
    pub sse: Bytes,
}

/// One pattern of a `type` filter: an exact type, or a prefix (`call.*`, `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum TypePattern {
    Exact(EventType),
    Prefix(String),
}

/// What a client wants to see. Empty lists mean "everything".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    types: Vec<TypePattern>,
    extensions: Vec<String>,
}

impl Filter {
    /// Everything.
    pub fn all() -> Filter {
        Filter::default()
    }

    /// From comma-separated lists: `types` of exact names or prefix patterns (`call.*`),
    /// `extensions` of extensions.
    pub fn parse(
        types: Option<&str>,
        extensions: Option<&str>,
    ) -> Result<Filter, UnknownEventType> {
        let mut filter = Filter::default();
        for t in types.unwrap_or("").split(',').map(str::trim) {
            if t.is_empty() {
                continue;
            }
            if let Some(prefix) = t.strip_suffix('*') {
                if !EventType::ALL
                    .iter()
                    .any(|k| k.as_str().starts_with(prefix))
                {
                    return Err(UnknownEventType(t.to_string()));
                }
                filter.types.push(TypePattern::Prefix(prefix.to_string()));
            } else {
                filter.types.push(TypePattern::Exact(t.parse()?));
            }
        }
        filter.extensions = extensions
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        Ok(filter)
    }

    /// Whether the event passes the type filter.
    pub fn matches_type(&self, kind: EventType) -> bool {
        self.types.is_empty()
            || self.types.iter().any(|p| match p {
                TypePattern::Exact(t) => *t == kind,
                TypePattern::Prefix(prefix) => kind.as_str().starts_with(prefix.as_str()),
            })
    }

    /// Whether the event passes both filters. A `gap` concerns every extension, so it passes
    /// any extension filter.
    pub fn matches(&self, kind: EventType, extensions: &[String]) -> bool {
        self.matches_type(kind)
            && (self.extensions.is_empty()
                || kind == EventType::Gap
                || extensions.iter().any(|e| self.extensions.contains(e)))
    }

    fn matches_published(&self, p: &Published) -> bool {
        self.matches(p.kind, &p.extensions)
    }
}

/// Why a subscription ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client's queue was full: it did not read fast enough.
    SlowConsumer { queued: usize },
    /// The service is stopping.
    Shutdown,
}

impl CloseReason {
    /// The machine-readable reason (`slow_consumer`, `shutdown`).
    pub fn code(&self) -> &'static str {
        match self {
            CloseReason::SlowConsumer { .. } => "slow_consumer",
            CloseReason::Shutdown => "shutdown",
        }
    }

    /// A human explanation.
    pub fn message(&self) -> String {
        match self {
            CloseReason::SlowConsumer { queued } => format!(
                "client too slow: {queued} events were waiting; reconnect with Last-Event-ID to resume"
            ),
            CloseReason::Shutdown => "the bridge is shutting down".to_string(),
        }
    }

    /// The `stream.closed` message.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Closed<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            reason: &'a str,
            message: String,
        }
        serde_json::to_string(&Closed {
            kind: "stream.closed",
            reason: self.code(),
            message: self.message(),
        })
        .unwrap_or_default()
    }
}

/// Signals that a subscription was cut, and why.
#[derive(Debug, Default)]
pub struct Cut {
    token: CancellationToken,
    reason: OnceLock<CloseReason>,
}

impl Cut {
    fn trigger(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Resolves when the hub cut the subscription (not when the client left by itself).
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    pub fn reason(&self) -> Option<&CloseReason> {
        self.reason.get()
    }
}

/// The events after a resume position are not all available any more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reset {
    /// The id the client resumed from.
    pub last_event_id: u64,
    /// The oldest id still buffered (`None`: nothing buffered yet).
    pub oldest_id: Option<u64>,
    /// The id the next new event will get.
    pub next_id: u64,
}

impl Reset {
    /// The `stream.reset` message.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Msg<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(flatten)]
            reset: &'a Reset,
            message: &'a str,
        }
        serde_json::to_string(&Msg {
            kind: "stream.reset",
            reset: self,
            message: "events after last_event_id are no longer buffered (or the id is not from this run); \
                      the stream continues from the oldest buffered event matching the filters — \
                      re-read state from the API",
        })
        .unwrap_or_default()
    }
}

/// What the next read of a subscription gives.
#[derive(Debug)]
pub enum Next {
    Event(Arc<Published>),
    Closed(CloseReason),
}

/// One client's view of the hub: a reset notice (maybe), the backlog, then live events.
#[derive(Debug)]
pub struct Subscription {
    /// Set when resuming could not be exact; send it before anything else.
    pub reset: Option<Reset>,
    backlog: VecDeque<Arc<Published>>,
    rx: mpsc::Receiver<Arc<Published>>,
    cut: Arc<Cut>,
}

impl Subscription {
    /// The next event, or why the stream ends.
    pub async fn next(&mut self) -> Next {
        if let Some(p) = self.backlog.pop_front() {
            return Next::Event(p);
        }
        match self.rx.recv().await {
            Some(p) => Next::Event(p),
            None => Next::Closed(self.close_reason()),
        }
    }

    /// The next event if one is ready (for batching writes).
    pub fn try_next(&mut self) -> Option<Arc<Published>> {
        self.backlog.pop_front().or_else(|| self.rx.try_recv().ok())
    }

    /// The cut signal, for handlers that must act while not reading (see `http::events`).
    pub fn cut(&self) -> Arc<Cut> {
        self.cut.clone()
    }

    fn close_reason(&self) -> CloseReason {
        self.cut.reason().cloned().unwrap_or(CloseReason::Shutdown)
    }
}

struct Subscriber {
    filter: Filter,
    tx: mpsc::Sender<Arc<Published>>,
    cut: Arc<Cut>,
}

struct Sink {
    name: &'static str,
    tx: mpsc::Sender<Arc<Published>>,
}

struct State {
    next_id: u64,
    ring: VecDeque<Arc<Published>>,
    subscribers: Vec<Subscriber>,
    sinks: Vec<Sink>,
    /// No new subscriptions (the service is stopping).
    streams_ended: bool,
    /// Nothing is published any more.
    closed: bool,
}

/// Counters of the hub.
#[derive(Debug, Default)]
pub struct HubStats {
    pub published: AtomicU64,
    /// Clients cut off because their queue was full.
    pub slow_clients_cut: AtomicU64,
    /// Events a durable sink could not take (its queue was full).
    pub sink_dropped: AtomicU64,
}

struct Inner {
    state: Mutex<State>,
    opts: HubOptions,
    stats: HubStats,
}

/// The event hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// The hub was closed (the service is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the event hub is closed (the service is stopping)")]
pub struct HubClosed;

impl Hub {
    pub fn new(opts: HubOptions) -> Hub {
        let opts = HubOptions {
            buffer_events: opts.buffer_events.max(1),
            client_buffer: opts.client_buffer.max(1),
            first_id: opts.first_id.max(1),
        };
        Hub {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    next_id: opts.first_id,
                    ring: VecDeque::new(),
                    subscribers: Vec::new(),
                    sinks: Vec::new(),
                    streams_ended: false,
                    closed: false,
                }),
                opts,
                stats: HubStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> &HubStats {
        &self.inner.stats
    }

    /// Clients currently subscribed.
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.lock().next_id
    }

    /// Numbers `event`, buffers it and hands it to every matching client and sink, without
    /// waiting for any of them. Returns its id (0 after [`Hub::close`]: nothing is published).
    pub fn publish(&self, event: &LiveEvent) -> u64 {
        // Serialise outside the lock; the id is spliced in front under it.
        let body = match serde_json::to_vec(event) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(kind = %event.kind, error = %e, "live event cannot be serialised");
                return 0;
            }
        };
        let mut st = self.lock();
        if st.closed {
            return 0;
        }
        let id = st.next_id;
        st.next_id += 1;
        let published = Arc::new(frame(id, event, &body));
        self.inner.stats.published.fetch_add(1, Ordering::Relaxed);

        let stats = &self.inner.stats;
        let queued = self.inner.opts.client_buffer;
        st.subscribers.retain(|sub| {
            if !sub.filter.matches_published(&published) {
                return !sub.tx.is_closed();
            }
            match sub.tx.try_send(published.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    stats.slow_clients_cut.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(queued, "live client too slow: cut off");
                    sub.cut.trigger(CloseReason::SlowConsumer { queued });
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
        for sink in &st.sinks {
            if let Err(TrySendError::Full(_)) = sink.tx.try_send(published.clone()) {
                stats.sink_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    sink = sink.name,
                    id,
                    "live event sink full: event not taken"
                );
            }
        }
        st.ring.push_back(published);
        while st.ring.len() > self.inner.opts.buffer_events {
            st.ring.pop_front();
        }
        id
    }

    /// Registers a client. With `resume` (the last id it saw), the buffered events after it
    /// that match `filter` come first; see the module docs for when a [`Reset`] comes first.
    pub fn subscribe(
        &self,
        filter: Filter,
        resume: Option<u64>,
    ) -> Result<Subscription, HubClosed> {
        let mut st = self.lock();
        if st.streams_ended {
            return Err(HubClosed);
        }
        let mut reset = None;
        let mut backlog = VecDeque::new();
        if let Some(last) = resume {
            let oldest = st.ring.front().map(|p| p.id);
            let first_available = oldest.unwrap_or(st.next_id);
            if last >= st.next_id || last.saturating_add(1) < first_available {
                reset = Some(Reset {
                    last_event_id: last,
                    oldest_id: oldest,
                    next_id: st.next_id,
                });
            }
            // After a reset the client gets what is still buffered (it is all newer than
            // what it saw, unless the id came from a later run, in which case nothing is).
            let from = if last >= st.next_id {
                st.next_id
            } else {
                last + 1
            };
            let start = st.ring.partition_point(|p| p.id < from);
            backlog.extend(
                st.ring
                    .range(start..)
                    .filter(|p| filter.matches_published(p))
                    .cloned(),
            );
        }
        let (tx, rx) = mpsc::channel(self.inner.opts.client_buffer);
        let cut = Arc::new(Cut::default());
        st.subscribers.push(Subscriber {
            filter,
            tx,
            cut: cut.clone(),
        });
        Ok(Subscription {
            reset,
            backlog,
            rx,
            cut,
        })
    }

    /// A durable consumer of every event (the webhook outbox writer) with a queue of
    /// `capacity`. It is never cut off; when its queue is full the event is lost for it
    /// (counted in [`HubStats::sink_dropped`] and logged).
    pub fn add_sink(&self, name: &'static str, capacity: usize) -> mpsc::Receiver<Arc<Published>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut st = self.lock();
        if !st.closed {
            st.sinks.push(Sink { name, tx });
        }
        rx
    }

    /// Ends every client's stream (reason `shutdown`) and refuses new ones, while events are
    /// still published to the sinks: the first step of stopping, so that open streams do not
    /// hold the HTTP server's shutdown while the last inputs are processed.
    pub fn end_streams(&self) {
        let mut st = self.lock();
        st.streams_ended = true;
        for sub in st.subscribers.drain(..) {
            sub.cut.trigger(CloseReason::Shutdown);
        }
    }

    /// Stops publishing: streams end as with [`Hub::end_streams`], and sinks see the end of
    /// their queue after the events already in it.
    pub fn close(&self) {
        self.end_streams();
        let mut st = self.lock();
        st.closed = true;
        st.sinks.clear();
    }
}

/// Builds the shared JSON and SSE bytes of event `id`: `{"id":<id>,` + the rest of `body`.
fn frame(id: u64, event: &LiveEvent, body: &[u8]) -> Published {
    let rest = body.strip_prefix(b"{").unwrap_or(body);
    let mut json = BytesMut::with_capacity(body.len() + 24);
    json.put_slice(b"{\"id\":");
    json.put_slice(id.to_string().as_bytes());
    if rest != b"}" {
        json.put_u8(b',');
    }
    json.put_slice(rest);
    let json = json.freeze();
    let kind = event.kind.as_str();
    let mut sse = BytesMut::with_capacity(json.len() + kind.len() + 40);
    sse.put_slice(b"id: ");
    sse.put_slice(id.to_string().as_bytes());
    sse.put_slice(b"\nevent: ");
    sse.put_slice(kind.as_bytes());
    sse.put_slice(b"\ndata: ");
    // serde_json never writes a raw newline (they are escaped inside strings), so the JSON
    // is one SSE data line.
    sse.put_slice(&json);
    sse.put_slice(b"\n\n");
    Published {
        id,
        kind: event.kind,
        call_id: event.call_id.clone(),
        extensions: event.extensions.clone(),
        json,
        sse: sse.freeze(),
    }
}
