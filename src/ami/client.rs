//! [`AmiClient`]: one long-running AMI session per PBX, kept up for months.
//!
//! Life of a link:
//! 1. connect (timeout), read the banner, log in — plain, or MD5 via `Challenge`;
//! 2. `CoreShowChannels`, to learn which channels are live *now*;
//! 3. if the link had been lost before, journal a **gap** `(from, to, reason)`: `from` is the
//!    receive time of the last message of the lost session, `to` the time the channel list
//!    completed, so consumers know exactly which period they could not see and have a fresh
//!    snapshot right before the marker;
//! 4. read loop: every message goes to [`Ingest`] (journal first) before anything else looks
//!    at it, then responses and list events carrying one of our `ActionID`s are routed to the
//!    caller that sent the action; `Ping` every `ping_interval`, and a missing `Pong` after
//!    `ping_timeout` ends the session (authenticated AMI sessions have no idle timeout, so
//!    this is what finds a dead TCP path);
//! 5. on any failure: reconnect with capped exponential back-off and jitter, from 1.
//!
//! The read loop never waits for consumers (see [`Ingest`]) nor for writes: actions are
//! written by a separate writer task.

use super::backoff::Backoff;
use super::codec::{AmiCodec, AmiFrame};
use super::message::{AmiMessage, AmiMessageBuilder, FieldError, MessageKind};
use crate::config::{AmiAuth, PbxSettings};
use crate::ingest::Ingest;
use crate::journal::{truncate_to_micros, Input, JournalEntry};
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{timeout, Instant};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// How long an action waits for its response unless the caller says otherwise.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the client needs to know about one PBX.
#[derive(Clone, Debug)]
pub struct AmiClientOptions {
    /// The PBX name journal entries carry.
    pub pbx: Arc<str>,
    /// `host:port` of the AMI listener.
    pub address: String,
    pub username: String,
    pub secret: String,
    pub auth: AmiAuth,
    /// The `Events:` value sent at login (`on`, `off`, or a class list).
    pub events: String,
    pub connect_timeout: Duration,
    pub login_timeout: Duration,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub max_message_bytes: usize,
    /// When the bridge last saw this PBX (the journal's last entry for it, from a previous
    /// run). The first resync then journals a gap from there, so calls that ended while the
    /// bridge was down get closed instead of staying live forever.
    pub unseen_since: Option<DateTime<Utc>>,
}

impl AmiClientOptions {
    /// Options from one `[[pbx]]` config entry.
    pub fn from_settings(pbx: &PbxSettings) -> Self {
        AmiClientOptions {
            pbx: Arc::from(pbx.name.as_str()),
            // An IPv6 literal needs brackets in `host:port`.
            address: if pbx.host.contains(':') {
                format!("[{}]:{}", pbx.host, pbx.port)
            } else {
                format!("{}:{}", pbx.host, pbx.port)
            },
            username: pbx.username.clone(),
            secret: pbx.secret.clone(),
            auth: pbx.auth,
            events: pbx.events.clone(),
            connect_timeout: pbx.connect_timeout,
            login_timeout: pbx.login_timeout,
            ping_interval: pbx.ping_interval,
            ping_timeout: pbx.ping_timeout,
            reconnect_initial: pbx.reconnect_initial,
            reconnect_max: pbx.reconnect_max,
            max_message_bytes: pbx.max_message_bytes,
            unseen_since: None,
        }
    }
}

/// Why an action did not get its response.
#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    #[error("AMI link to {0} is not connected")]
    NotConnected(Arc<str>),
    #[error("AMI link lost before the response arrived")]
    Disconnected,
    #[error("no AMI response within {0:?}")]
    Timeout(Duration),
    #[error("AMI client has stopped")]
    Stopped,
    #[error("invalid AMI action: {0}")]
    InvalidAction(#[from] FieldError),
}

/// Why a connection attempt or a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect to {address} failed: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("no banner: connection closed before the AMI greeting")]
    NoBanner,
    #[error("login timed out")]
    LoginTimeout,
    #[error("login refused: {0}")]
    LoginRefused(String),
    #[error("connection closed by peer")]
    Closed,
    #[error("read error: {0}")]
    Read(std::io::Error),
    #[error("write error: {0}")]
    Write(std::io::Error),
    #[error("ping timeout: no Pong within {0:?}")]
    PingTimeout(Duration),
    #[error("shut down")]
    Shutdown,
}

/// A response, plus the events of an `EventList` (ending with the `…Complete` event).
#[derive(Clone, Debug)]
pub struct AmiResponse {
    pub response: AmiMessage,
    pub events: Vec<AmiMessage>,
}

impl AmiResponse {
    /// True for `Response: Success` (case-insensitive).
    pub fn is_success(&self) -> bool {
        self.response
            .response()
            .is_some_and(|r| r.eq_ignore_ascii_case("Success"))
    }
}

/// The state of the link, for status pages and readiness checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// Logged in and resynchronised.
    pub up: bool,
    /// When `up` last changed.
    pub since: DateTime<Utc>,
    /// Why the link went down last (or the last connect failure).
    pub last_error: Option<String>,
}

/// Counters of one link.
#[derive(Debug, Default)]
pub struct AmiStats {
    pub messages: AtomicU64,
    pub malformed: AtomicU64,
    pub sessions: AtomicU64,
    pub connect_failures: AtomicU64,
    pub gaps: AtomicU64,
}

struct Request {
    action: AmiMessageBuilder,
    timeout: Duration,
    reply: oneshot::Sender<Result<AmiResponse, AmiError>>,
}

/// Handle to a running client: send actions, read status and counters.
#[derive(Clone)]
pub struct AmiHandle {
    pbx: Arc<str>,
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<LinkStatus>,
    stats: Arc<AmiStats>,
}

impl AmiHandle {
    /// The PBX this handle talks to.
    pub fn pbx(&self) -> &Arc<str> {
        &self.pbx
    }

    /// Sends an action (the client adds the `ActionID`) and waits for its response.
    pub async fn send_action(&self, action: AmiMessageBuilder) -> Result<AmiResponse, AmiError> {
        self.send_action_with_timeout(action, DEFAULT_ACTION_TIMEOUT)
            .await
    }

    /// As [`AmiHandle::send_action`] with an explicit response timeout.
    pub async fn send_action_with_timeout(
        &self,
        action: AmiMessageBuilder,
        timeout: Duration,
    ) -> Result<AmiResponse, AmiError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request {
                action,
                timeout,
                reply,
            })
            .await
            .map_err(|_| AmiError::Stopped)?;
        rx.await.map_err(|_| AmiError::Stopped)?
    }

    /// The current link state.
    pub fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    /// Waits until the link is up (logged in and resynchronised) or `limit` passes.
    pub async fn wait_up(&self, limit: Duration) -> bool {
        let mut rx = self.status.clone();
        let up = timeout(limit, rx.wait_for(|s| s.up)).await;
        matches!(up, Ok(Ok(_)))
    }

    /// Counters.
    pub fn stats(&self) -> &AmiStats {
        &self.stats
    }
}

/// The client task for one PBX. Create with [`AmiClient::spawn`].
pub struct AmiClient {
    opts: AmiClientOptions,
    inlet: Inlet,
    requests: mpsc::Receiver<Request>,
    status: watch::Sender<LinkStatus>,
    shutdown: CancellationToken,
    action_prefix: String,
    next_action: u64,
    /// The period not seen yet: `(from, reason)` of the last lost session.
    unseen: Option<(DateTime<Utc>, String)>,
}

impl AmiClient {
    /// Starts the client task; it runs until `shutdown` is cancelled.
    pub fn spawn(
        opts: AmiClientOptions,
        ingest: Ingest,
        shutdown: CancellationToken,
    ) -> (AmiHandle, tokio::task::JoinHandle<()>) {
        let (req_tx, req_rx) = mpsc::channel(256);
        let (status_tx, status_rx) = watch::channel(LinkStatus {
            up: false,
            since: now_micros(),
            last_error: None,
        });
        let stats = Arc::new(AmiStats::default());
        let handle = AmiHandle {
            pbx: opts.pbx.clone(),
            requests: req_tx,
            status: status_rx,
            stats: stats.clone(),
        };
        // A per-process prefix keeps our ActionIDs apart from other AMI clients' (broadcast
        // events such as OriginateResponse reach every session).
        let action_prefix = format!("ctib-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let unseen = opts
            .unseen_since
            .map(|t| (t, "bridge was not running".to_string()));
        let client = AmiClient {
            inlet: Inlet {
                pbx: opts.pbx.clone(),
                ingest,
                stats,
            },
            opts,
            requests: req_rx,
            status: status_tx,
            shutdown,
            unseen,
            action_prefix,
            next_action: 0,
        };
        (handle, tokio::spawn(client.run()))
    }

    async fn run(mut self) {
        let mut backoff = Backoff::new(self.opts.reconnect_initial, self.opts.reconnect_max);
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let result = self.connect_and_run(&mut backoff).await;
            let reason = match result {
                Err(SessionError::Shutdown) => break,
                Err(e) => e.to_string(),
                Ok(()) => "session ended".to_string(),
            };
            let was_up = self.status.borrow().up;
            self.status.send_replace(LinkStatus {
                up: false,
                since: if was_up {
                    now_micros()
                } else {
                    self.status.borrow().since
                },
                last_error: Some(reason.clone()),
            });
            let delay = backoff.next_delay();
            if was_up {
                tracing::warn!(pbx = %self.opts.pbx, %reason, "AMI link lost; reconnecting in {delay:?}");
            } else {
                tracing::warn!(pbx = %self.opts.pbx, %reason, attempt = backoff.attempts(), "AMI connect failed; retrying in {delay:?}");
            }
            if !self.idle(delay).await {
                break;
            }
        }
        tracing::info!(pbx = %self.opts.pbx, "AMI client stopped");
    }

    /// Sleeps between attempts, failing requests fast meanwhile. False on shutdown.
    async fn idle(&mut self, delay: Duration) -> bool {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return true,
                _ = self.shutdown.cancelled() => return false,
                Some(req) = self.requests.recv() => {
                    let _ = req.reply.send(Err(AmiError::NotConnected(self.opts.pbx.clone())));
                }
            }
        }
    }

    fn new_action_id(&mut self) -> String {
        self.next_action += 1;
        format!("{}-{}", self.action_prefix, self.next_action)
    }

    async fn connect_and_run(&mut self, backoff: &mut Backoff) -> Result<(), SessionError> {
        let address = self.opts.address.clone();
        let stream = tokio::select! {
            _ = self.shutdown.cancelled() => return Err(SessionError::Shutdown),
            r = timeout(self.opts.connect_timeout, TcpStream::connect(&address)) => match r {
                Err(_) => return Err(self.connect_failed(SessionError::ConnectTimeout(address))),
                Ok(Err(source)) => return Err(self.connect_failed(SessionError::Connect { address, source })),
                Ok(Ok(s)) => s,
            }
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let mut reader = FramedRead::with_capacity(
            rd,
            AmiCodec::with_max_message_bytes(self.opts.max_message_bytes),
            64 * 1024,
        );
        let (out_tx, out_rx) = mpsc::unbounded_channel::<AmiMessage>();
        let writer = tokio::spawn(write_loop(FramedWrite::new(wr, AmiCodec::new()), out_rx));
        let mut session = Session {
            pending: HashMap::new(),
            out: out_tx,
            last_seen: now_micros(),
        };
        let result = async {
            let deadline = Instant::now() + self.opts.login_timeout;
            self.login(&mut reader, &mut session, deadline).await?;
            self.inlet.stats.sessions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(pbx = %self.opts.pbx, address = %self.opts.address, "AMI logged in");
            self.resync(&mut reader, &mut session, backoff).await?;
            self.read_loop(&mut reader, &mut session).await
        }
        .await;
        // Whatever happened, the period from the last message on is unseen until the
        // next resync (unless we never got past login: then the older mark stays).
        if self.status.borrow().up {
            let reason = match &result {
                Err(e) => e.to_string(),
                Ok(()) => "session ended".into(),
            };
            self.unseen = Some((session.last_seen, reason));
        }
        for (_, p) in session.pending.drain() {
            if let Some(reply) = p.reply {
                let _ = reply.send(Err(AmiError::Disconnected));
            }
        }
        drop(session.out);
        let _ = timeout(Duration::from_secs(1), writer).await;
        result
    }

    fn connect_failed(&self, e: SessionError) -> SessionError {
        self.inlet
            .stats
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        e
    }

    /// Banner, optional MD5 challenge, login. Messages read here are journaled too.
    async fn login(
        &mut self,
        reader: &mut FramedRead<OwnedReadHalf, AmiCodec>,
        session: &mut Session,
        deadline: Instant,
    ) -> Result<(), SessionError> {
        let banner = match tokio::time::timeout_at(deadline, reader.next()).await {
            Err(_) => return Err(SessionError::LoginTimeout),
            Ok(None) => return Err(self.connect_failed(SessionError::NoBanner)),
            Ok(Some(Err(e))) => return Err(SessionError::Read(e)),
            Ok(Some(Ok(AmiFrame::Banner(b)))) => b,
            Ok(Some(Ok(other))) => {
                tracing::warn!(pbx = %self.opts.pbx, ?other, "AMI server sent no banner");
                bytes::Bytes::new()
            }
        };
        tracing::debug!(pbx = %self.opts.pbx, banner = %String::from_utf8_lossy(&banner), "AMI banner");
        let mut login = AmiMessage::action("Login").field("Username", self.opts.username.clone());
        match self.opts.auth {
            AmiAuth::Plain => login = login.field("Secret", self.opts.secret.clone()),
            AmiAuth::Md5 => {
                let id = self.new_action_id();
                let challenge = AmiMessage::action("Challenge")
                    .field("ActionID", id.clone())
                    .field("AuthType", "MD5");
                let resp = self
                    .call_during_login(reader, session, challenge, &id, deadline)
                    .await?;
                let Some(challenge) = resp.get("Challenge").filter(|c| !c.is_empty()) else {
                    return Err(SessionError::LoginRefused(format!(
                        "MD5 challenge refused: {}",
                        resp.get("Message").unwrap_or("no Challenge in response")
                    )));
                };
                let key = md5_key(challenge, &self.opts.secret);
                login = login.field("AuthType", "MD5").field("Key", key);
            }
        }
        let id = self.new_action_id();
        login = login
            .field("ActionID", id.clone())
            .field("Events", self.opts.events.clone());
        let resp = self
            .call_during_login(reader, session, login, &id, deadline)
            .await?;
        if resp
            .response()
            .is_some_and(|r| r.eq_ignore_ascii_case("Success"))
        {
            Ok(())
        } else {
            Err(SessionError::LoginRefused(
                resp.get("Message").unwrap_or("no message").to_string(),
            ))
        }
    }

    /// Sends an action and reads until its response (no other traffic is expected yet).
    async fn call_during_login(
        &self,
        reader: &mut FramedRead<OwnedReadHalf, AmiCodec>,
        session: &mut Session,
        action: AmiMessageBuilder,
        id: &str,
        deadline: Instant,
    ) -> Result<AmiMessage, SessionError> {
        let msg = action
            .build()
            .map_err(|e| SessionError::LoginRefused(e.to_string()))?;
        session
            .out
            .send(msg)
            .map_err(|_| SessionError::Write(std::io::ErrorKind::BrokenPipe.into()))?;
        loop {
            let (msg, at) =
                match tokio::time::timeout_at(deadline, self.inlet.next_message(reader)).await {
                    Err(_) => return Err(SessionError::LoginTimeout),
                    Ok(r) => r?,
                };
            session.last_seen = at;
            if let Some(msg) =
                msg.filter(|m| m.kind() == MessageKind::Response && m.action_id() == Some(id))
            {
                return Ok(msg);
            }
        }
    }

    /// `CoreShowChannels`, then the gap marker for the period the link was down.
    async fn resync(
        &mut self,
        reader: &mut FramedRead<OwnedReadHalf, AmiCodec>,
        session: &mut Session,
        backoff: &mut Backoff,
    ) -> Result<(), SessionError> {
        let (tx, rx) = oneshot::channel();
        let id = self.new_action_id();
        let action = AmiMessage::action("CoreShowChannels").field("ActionID", id.clone());
        session.start(
            id,
            action.build(),
            Some(tx),
            self.opts.login_timeout.max(Duration::from_secs(5)),
            PendingKind::User,
        );
        // The reply is collected by the normal routing while events flow.
        let mut rx = rx;
        let outcome = loop {
            let deadline = session.next_deadline();
            tokio::select! {
                r = &mut rx => break r.unwrap_or(Err(AmiError::Disconnected)),
                m = self.inlet.next_message(reader) => {
                    let (msg, at) = m?;
                    session.last_seen = at;
                    if let Some(msg) = msg {
                        session.route(&msg);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    session.expire();
                }
                _ = self.shutdown.cancelled() => return Err(SessionError::Shutdown),
            }
        };
        let now = now_micros();
        let resync_note = match &outcome {
            Ok(r) if r.is_success() => {
                tracing::info!(pbx = %self.opts.pbx, live_channels = r.events.len().saturating_sub(1), "AMI resynchronised");
                None
            }
            Ok(r) => Some(format!(
                "; CoreShowChannels refused: {}",
                r.response.get("Message").unwrap_or("?")
            )),
            Err(e) => Some(format!("; CoreShowChannels failed: {e}")),
        };
        if let Some((from, reason)) = self.unseen.take() {
            let reason = format!("{reason}{}", resync_note.as_deref().unwrap_or(""));
            tracing::warn!(pbx = %self.opts.pbx, %from, to = %now, %reason, "AMI gap journaled");
            self.inlet.stats.gaps.fetch_add(1, Ordering::Relaxed);
            self.inlet.ingest.submit(JournalEntry {
                t: now,
                input: Input::Gap {
                    pbx: self.opts.pbx.clone(),
                    from,
                    to: now,
                    reason,
                },
            });
        }
        backoff.reset();
        self.status.send_replace(LinkStatus {
            up: true,
            since: now,
            last_error: None,
        });
        Ok(())
    }

    /// The steady state: read, route, ping, serve requests.
    async fn read_loop(
        &mut self,
        reader: &mut FramedRead<OwnedReadHalf, AmiCodec>,
        session: &mut Session,
    ) -> Result<(), SessionError> {
        let mut ping = tokio::time::interval(self.opts.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        // One timer and one cancellation waiter for the whole session, re-armed only when
        // the earliest action deadline changes: this loop turns once per AMI message, and a
        // fresh `sleep_until` / `cancelled()` each turn would register and remove a timer
        // and a waiter thousands of times a second.
        let shutdown = self.shutdown.clone();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let action_timeout = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(action_timeout);
        loop {
            let deadline = session.earliest_deadline();
            if let Some(deadline) = deadline {
                if action_timeout.deadline() != deadline {
                    action_timeout.as_mut().reset(deadline);
                }
            }
            tokio::select! {
                m = self.inlet.next_message(reader) => {
                    let (msg, at) = m?;
                    session.last_seen = at;
                    if let Some(msg) = msg {
                        session.route(&msg);
                    }
                }
                Some(req) = self.requests.recv() => {
                    let id = self.new_action_id();
                    let action = req.action.field("ActionID", id.clone()).build();
                    session.start(id, action, Some(req.reply), req.timeout, PendingKind::User);
                }
                _ = ping.tick() => {
                    let id = self.new_action_id();
                    let action = AmiMessage::action("Ping").field("ActionID", id.clone());
                    session.start(id, action.build(), None, self.opts.ping_timeout, PendingKind::Ping);
                }
                _ = &mut action_timeout, if deadline.is_some() => {
                    if session.expire() {
                        return Err(SessionError::PingTimeout(self.opts.ping_timeout));
                    }
                }
                _ = &mut cancelled => {
                    if let Ok(logoff) = AmiMessage::action("Logoff").build() {
                        let _ = session.out.send(logoff);
                    }
                    return Err(SessionError::Shutdown);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PendingKind {
    User,
    Ping,
}

struct Pending {
    kind: PendingKind,
    deadline: Instant,
    timeout: Duration,
    reply: Option<oneshot::Sender<Result<AmiResponse, AmiError>>>,
    /// Set once the response said `EventList: start`: events are collected until Complete.
    list: Option<AmiResponse>,
}

/// Per-connection state: actions waiting for a response.
struct Session {
    pending: HashMap<String, Pending>,
    out: mpsc::UnboundedSender<AmiMessage>,
    last_seen: DateTime<Utc>,
}

impl Session {
    fn start(
        &mut self,
        id: String,
        action: Result<AmiMessage, FieldError>,
        reply: Option<oneshot::Sender<Result<AmiResponse, AmiError>>>,
        timeout: Duration,
        kind: PendingKind,
    ) {
        let msg = match action {
            Ok(m) => m,
            Err(e) => {
                if let Some(r) = reply {
                    let _ = r.send(Err(AmiError::InvalidAction(e)));
                }
                return;
            }
        };
        if self.out.send(msg).is_err() {
            if let Some(r) = reply {
                let _ = r.send(Err(AmiError::Disconnected));
            }
            return;
        }
        self.pending.insert(
            id,
            Pending {
                kind,
                deadline: Instant::now() + timeout,
                timeout,
                reply,
                list: None,
            },
        );
    }

    /// Gives a message to the action waiting for it, if any.
    fn route(&mut self, msg: &AmiMessage) {
        let Some(id) = msg.action_id() else { return };
        let Some(p) = self.pending.get_mut(id) else {
            return;
        };
        match msg.kind() {
            MessageKind::Response if p.list.is_none() => {
                let is_list = msg
                    .get("EventList")
                    .is_some_and(|v| v.eq_ignore_ascii_case("start"));
                let response = AmiResponse {
                    response: msg.clone(),
                    events: Vec::new(),
                };
                if is_list {
                    p.list = Some(response);
                    p.deadline = Instant::now() + p.timeout;
                } else if let Some(p) = self.pending.remove(id) {
                    if let Some(reply) = p.reply {
                        let _ = reply.send(Ok(response));
                    }
                }
            }
            MessageKind::Event => {
                let Some(list) = p.list.as_mut() else { return };
                list.events.push(msg.clone());
                let done = msg.get("EventList").is_some_and(|v| {
                    v.eq_ignore_ascii_case("Complete") || v.eq_ignore_ascii_case("cancelled")
                });
                if done {
                    if let Some(p) = self.pending.remove(id) {
                        if let (Some(reply), Some(list)) = (p.reply, p.list) {
                            let _ = reply.send(Ok(list));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The earliest deadline of a pending action (far future when none).
    fn next_deadline(&self) -> Instant {
        self.earliest_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// The earliest deadline of an action waiting for its response, if any waits.
    fn earliest_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Fails every action past its deadline; true if a Ping was among them.
    fn expire(&mut self) -> bool {
        let now = Instant::now();
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut ping_lost = false;
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                ping_lost |= p.kind == PendingKind::Ping;
                if let Some(reply) = p.reply {
                    let _ = reply.send(Err(AmiError::Timeout(p.timeout)));
                }
            }
        }
        ping_lost
    }
}

/// Where received messages go: the journal (via [`Ingest`]) and the link's counters. Kept
/// apart from [`AmiClient`] so the read loop can borrow it while other fields are in use.
struct Inlet {
    pbx: Arc<str>,
    ingest: Ingest,
    stats: Arc<AmiStats>,
}

impl Inlet {
    /// Reads the next message and journals it before anyone looks at it; malformed frames
    /// are counted, logged and skipped. Returns the receive time, and the message itself only
    /// when it carries an `ActionID` (only those can answer one of our actions): most events
    /// go to the journal without a second copy. Cancel-safe: the only await is
    /// `FramedRead::next`.
    async fn next_message(
        &self,
        reader: &mut FramedRead<OwnedReadHalf, AmiCodec>,
    ) -> Result<(Option<AmiMessage>, DateTime<Utc>), SessionError> {
        loop {
            let frame = match reader.next().await {
                None => return Err(SessionError::Closed),
                Some(Err(e)) => return Err(SessionError::Read(e)),
                Some(Ok(frame)) => frame,
            };
            let now = now_micros();
            match frame {
                AmiFrame::Message(msg) => {
                    self.stats.messages.fetch_add(1, Ordering::Relaxed);
                    let routable = msg.action_id().is_some().then(|| msg.clone());
                    self.ingest.submit(JournalEntry {
                        t: now,
                        input: Input::Ami {
                            pbx: self.pbx.clone(),
                            msg,
                        },
                    });
                    return Ok((routable, now));
                }
                AmiFrame::Banner(b) => {
                    tracing::warn!(pbx = %self.pbx, banner = %String::from_utf8_lossy(&b), "unexpected second banner");
                }
                AmiFrame::Malformed(e) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(pbx = %self.pbx, error = %e, "malformed AMI message skipped");
                }
            }
        }
    }
}

/// Writes actions in order; ends when the session drops its sender or the socket fails.
async fn write_loop(
    mut sink: FramedWrite<tokio::net::tcp::OwnedWriteHalf, AmiCodec>,
    mut rx: mpsc::UnboundedReceiver<AmiMessage>,
) {
    while let Some(msg) = rx.recv().await {
        if let Err(e) = sink.send(&msg).await {
            tracing::debug!(error = %e, "AMI write failed");
            break;
        }
    }
}

/// Receive time at the journal's precision (microseconds), so a replay of the journal sees
/// exactly the timestamps the live consumer saw.
fn now_micros() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}

/// `Key` for an MD5 login: lowercase hex of md5(challenge + secret).
pub fn md5_key(challenge: &str, secret: &str) -> String {
    let mut h = Md5::new();
    h.update(challenge.as_bytes());
    h.update(secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_key_is_lowercase_hex_of_challenge_then_secret() {
        // Reference value from Python: hashlib.md5(b"1234567890bridge-secret").hexdigest()
        assert_eq!(
            md5_key("1234567890", "bridge-secret"),
            "9a4109165939e52dd8013bf24175f22c"
        );
        assert_eq!(md5_key("", ""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
