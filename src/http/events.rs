//! Live event streams (scope `read`): `GET /api/v1/events` (Server-Sent Events) and
//! `GET /api/v1/ws` (WebSocket). The events and their JSON are in `docs/EVENTS.md`.
//!
//! Query parameters (both routes):
//! - `types`: comma-separated event types or prefix patterns (`call.*,phone.state`);
//! - `ext`: comma-separated extensions (an event passes when it concerns one of them);
//! - `last_event_id`: resume after this id (SSE clients send the `Last-Event-ID` header
//!   instead, which browsers do by themselves on reconnect);
//! - `access_token`: the bearer token, for clients that cannot set headers (browser
//!   `EventSource` and `WebSocket`); the `Authorization` header is preferred.
//!
//! A stream first says `stream.reset` when resuming could not be exact. A client that falls
//! `live.client_buffer` events behind is cut off: the stream ends with a `stream.closed`
//! event (SSE) or a close frame with code 1008 (WebSocket) naming the reason, and the
//! connection is closed — after `live.cut_grace` at the latest, even if the client does not
//! read at all. The hub never waits for a client (see `crate::live::hub`).

use super::error::{ApiError, ErrorBody as ApiErrorBody};
use super::{AppState, ConnectionClose};
use crate::config::Scope;
use crate::live::hub::{CloseReason, Next};
use crate::live::{Filter, Hub, Subscription};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest chunk of queued events written to an SSE stream at once.
const SSE_BATCH_BYTES: usize = 64 * 1024;

/// What the stream handlers share.
#[derive(Clone)]
pub struct LiveHttp {
    pub hub: Hub,
    /// Keep-alive period of idle streams.
    pub keepalive: Duration,
    /// How long a cut-off client has to read the reason before its connection is closed.
    pub cut_grace: Duration,
}

/// The query parameters of both stream routes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Comma-separated event types or prefix patterns (`call.*,phone.state`); all when absent.
    /// Also accepted as `type`.
    #[serde(alias = "type")]
    pub types: Option<String>,
    /// Comma-separated extensions: an event passes when it concerns one of them. Also accepted
    /// as `extension`.
    #[serde(alias = "extension")]
    pub ext: Option<String>,
    /// Resume after this event id (SSE clients may send the `Last-Event-ID` header instead).
    pub last_event_id: Option<String>,
    /// The bearer token, for clients that cannot set headers (browser `EventSource` and
    /// `WebSocket`); the `Authorization` header is preferred.
    pub access_token: Option<String>,
}

/// Authenticates, parses the filters and the resume id, and subscribes.
fn open(
    state: &AppState,
    headers: &HeaderMap,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Subscription, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::Unprocessable(format!("bad query: {}", e.body_text())))?;
    match params.access_token.as_deref() {
        Some(token) if !headers.contains_key(header::AUTHORIZATION) => {
            let mut with_token = HeaderMap::new();
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ApiError::Unauthorized)?;
            with_token.insert(header::AUTHORIZATION, value);
            state.tokens.require(&with_token, Scope::Read)?;
        }
        _ => state.tokens.require(headers, Scope::Read)?,
    }
    let filter = Filter::parse(params.types.as_deref(), params.ext.as_deref())
        .map_err(|e| ApiError::Unprocessable(format!("types: {e}")))?;
    let resume = params
        .last_event_id
        .as_deref()
        .or_else(|| headers.get("last-event-id").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                ApiError::Unprocessable(format!(
                    "last event id {s:?} is not an event id (a decimal number)"
                ))
            })
        })
        .transpose()?;
    state
        .live
        .hub
        .subscribe(filter, resume)
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// `GET /api/v1/events`: the live events as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    operation_id = "streamEvents",
    description = "The live events as Server-Sent Events. Each event is `id: <id>`, \
        `event: <type>` and one `data:` line holding the event's JSON (schema `Event`). A stream \
        resuming where exact resumption is impossible starts with `event: stream.reset` (schema \
        `StreamReset`); a client cut off for reading too slowly gets `event: stream.closed` \
        (schema `StreamClosed`) before the connection closes. Comment lines keep idle streams \
        alive. See docs/EVENTS.md.",
    params(
        StreamParams,
        ("Last-Event-ID" = Option<String>, Header,
            description = "Resume after this event id (browsers send it on reconnect)"),
    ),
    security(("bearer" = ["read"]), ("access_token" = ["read"])),
    responses(
        (status = 200, description = "The event stream; it ends only when the client is cut \
            off or the bridge stops", body = String, content_type = "text/event-stream"),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 422, description = "A malformed `types` filter or event id", body = ApiErrorBody),
        (status = 503, description = "The event hub is closed (the bridge is stopping)",
            body = ApiErrorBody),
        (status = 500, response = super::openapi::InternalError),
    )
)]
pub async fn sse(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, QueryRejection>,
    close: Option<axum::Extension<ConnectionClose>>,
) -> Result<Response, ApiError> {
    let mut sub = open(&state, &headers, params)?;
    let live = &state.live;
    // Closes the connection of a client that was cut off and does not read the reason.
    let done = CancellationToken::new();
    if let Some(axum::Extension(close)) = close {
        let (cut, done, grace) = (sub.cut(), done.clone(), live.cut_grace);
        tokio::spawn(async move {
            tokio::select! {
                _ = cut.cancelled() => tokio::select! {
                    _ = tokio::time::sleep(grace) => {
                        tracing::debug!("closing the connection of a cut-off SSE client");
                        close.close();
                    }
                    _ = done.cancelled() => {}
                },
                _ = done.cancelled() => {}
            }
        });
    }
    let mut hello = BytesMut::from(&b": ctibridge live events\nretry: 2000\n\n"[..]);
    if let Some(reset) = sub.reset.take() {
        hello.extend_from_slice(
            format!("event: stream.reset\ndata: {}\n\n", reset.json()).as_bytes(),
        );
    }
    let keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + live.keepalive, live.keepalive);
    let stream = SseStream {
        sub,
        keepalive,
        hello: Some(hello.freeze()),
        finished: false,
        _done: done.drop_guard(),
    };
    let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), s))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        // One stream per connection: when it ends (cut, shutdown), the connection ends too.
        .header(header::CONNECTION, "close")
        // Reverse proxies (nginx) must not buffer the stream.
        .header("x-accel-buffering", "no")
        .body(body)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

struct SseStream {
    sub: Subscription,
    keepalive: tokio::time::Interval,
    hello: Option<Bytes>,
    finished: bool,
    /// Dropped with the stream (client gone or stream over): stops the close watcher.
    _done: tokio_util::sync::DropGuard,
}

impl SseStream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(hello) = self.hello.take() {
            return Some(hello);
        }
        if self.finished {
            return None;
        }
        tokio::select! {
            next = self.sub.next() => match next {
                Next::Event(first) => {
                    let Some(second) = self.sub.try_next() else {
                        return Some(first.sse.clone());
                    };
                    // Several are queued: one write for all of them.
                    let mut buf = BytesMut::with_capacity(SSE_BATCH_BYTES);
                    buf.extend_from_slice(&first.sse);
                    buf.extend_from_slice(&second.sse);
                    while buf.len() < SSE_BATCH_BYTES {
                        match self.sub.try_next() {
                            Some(p) => buf.extend_from_slice(&p.sse),
                            None => break,
                        }
                    }
                    Some(buf.freeze())
                }
                Next::Closed(reason) => {
                    self.finished = true;
                    Some(Bytes::from(format!("event: stream.closed\ndata: {}\n\n", reason.json())))
                }
            },
            _ = self.keepalive.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
        }
    }
}

/// `GET /api/v1/ws`: the live events as WebSocket text messages, one event per message.
#[utoipa::path(
    get,
    path = "/api/v1/ws",
    tag = "events",
    operation_id = "streamEventsWebSocket",
    description = "The live events over a WebSocket: one text message per event, holding the \
        event's JSON (schema `Event`), after a `stream.reset` message (schema `StreamReset`) \
        when resuming could not be exact. A client cut off for reading too slowly gets a close \
        frame with code 1008 naming the reason; at shutdown, 1001. See docs/EVENTS.md.",
    params(StreamParams),
    security(("bearer" = ["read"]), ("access_token" = ["read"])),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a valid WebSocket upgrade request", body = String,
            content_type = "text/plain"),
        (status = 426, description = "The connection cannot be upgraded", body = String,
            content_type = "text/plain"),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 422, description = "A malformed `types` filter or event id", body = ApiErrorBody),
        (status = 503, description = "The event hub is closed (the bridge is stopping)",
            body = ApiErrorBody),
    )
)]
pub async fn ws(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let sub = open(&state, &headers, params)?;
    let (keepalive, grace) = (state.live.keepalive, state.live.cut_grace);
    Ok(upgrade.on_upgrade(move |socket| ws_session(socket, sub, keepalive, grace)))
}

/// Sends events until the client leaves or is cut off; then a close frame with the reason.
async fn ws_session(
    socket: WebSocket,
    mut sub: Subscription,
    keepalive: Duration,
    grace: Duration,
) {
    let (mut tx, mut rx) = socket.split();
    if let Some(reset) = sub.reset.take() {
        if tx.send(Message::Text(reset.json().into())).await.is_err() {
            return;
        }
    }
    let cut = sub.cut();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    let reason = loop {
        let msg = tokio::select! {
            next = sub.next() => match next {
                Next::Event(p) => match Utf8Bytes::try_from(p.json.clone()) {
                    Ok(text) => Message::Text(text),
                    Err(_) => continue, // serde_json writes UTF-8; never happens
                },
                Next::Closed(reason) => break reason,
            },
            incoming = rx.next() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue, // pings are answered by the library; the rest is ignored
            },
            _ = ping.tick() => Message::Ping(Bytes::new()),
        };
        // A client that does not read blocks this send: the hub cuts it meanwhile.
        tokio::select! {
            sent = tx.send(msg) => if sent.is_err() { return },
            _ = cut.cancelled() => break cut.reason().cloned().unwrap_or(CloseReason::Shutdown),
        }
    };
    let code = match reason {
        CloseReason::SlowConsumer { .. } => axum::extract::ws::close_code::POLICY,
        CloseReason::Shutdown => axum::extract::ws::close_code::AWAY,
    };
    // A close reason is at most 123 bytes.
    let mut text = format!("{}: {}", reason.code(), reason.message());
    while text.len() > 123 {
        text.pop();
    }
    let frame = CloseFrame {
        code,
        reason: text.into(),
    };
    let _ = tokio::time::timeout(grace, tx.send(Message::Close(Some(frame)))).await;
}
