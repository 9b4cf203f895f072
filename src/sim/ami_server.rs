//! [`AmiServer`]: a simulated Asterisk Manager Interface server over real TCP.
//!
//! Why a simulator that speaks the real wire format rather than a mock of the client's
//! internals: the failures that matter in production — a torn message when the PBX restarts,
//! a refused login, events interleaved with responses, reconnect loops — live in the bytes and
//! in the socket, so the client must be tested against bytes and sockets. `ctibridge demo` uses
//! the same server to replay recorded calls ([`super::fixtures`]).
//!
//! Behaviour follows Asterisk's `main/manager.c` (ami.md §1):
//! - the banner `cfg.banner + "\r\n"` right after accept, no blank line after it;
//! - before login only `Login`, `Challenge` and `Logoff` are served; anything else gets
//!   `Permission denied`;
//! - `Challenge` (`AuthType: MD5`) and `Login` plain or MD5 (`Key` = md5 hex of challenge +
//!   secret); a failed login gets `Authentication failed` and the session is closed (without
//!   Asterisk's 1 s sleep: tests should not wait for it);
//! - after login `Authentication accepted`, then `FullyBooted` if the session has events on
//!   (Asterisk sends it only when the session receives `system` events);
//! - `Events`, `Ping`, `Logoff`, `CoreShowChannels` (from a live-channel table that follows
//!   the events this server sent), `Command` (the 14+ reply with one `Output:` per line);
//! - other actions: first the scriptable handler ([`AmiServer::set_action_handler`]), then
//!   `Invalid/unknown command`;
//! - every response carries the action's `ActionID` right after `Response:` when one was sent.
//!
//! Each session has one writer task fed by an unbounded queue, so responses and events reach
//! the socket in the order they were queued, as with Asterisk's per-session output. Fault
//! injection ([`AmiServer::reject_next_connections`], [`AmiServer::cut_current_session_after`])
//! works on that writer, and [`AmiServer::sent_log`] records exactly the messages that were
//! written completely, so a test can compare them with what its client decoded.

use crate::ami::{AmiCodec, AmiFrame, AmiMessage, AmiMessageBuilder};
use futures::StreamExt;
use md5::{Digest, Md5};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;

/// How long a closing session keeps reading (and discarding) what the client still sends
/// before the socket is dropped. Dropping a socket with unread input makes Linux send RST,
/// and an RST can make the client lose bytes that were sent before it; waiting for the
/// client's own close avoids that.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the simulated Asterisk accepts and how it greets.
#[derive(Clone, Debug)]
pub struct AmiServerConfig {
    pub username: String,
    pub secret: String,
    /// Refuse plain-text (`Secret:`) logins; only the MD5 challenge login is accepted.
    pub require_md5: bool,
    /// The greeting line without its line end, e.g. `Asterisk Call Manager/11.0.0` (Asterisk 22).
    pub banner: String,
}

impl Default for AmiServerConfig {
    fn default() -> Self {
        AmiServerConfig {
            username: "bridge".into(),
            secret: "secret".into(),
            require_md5: false,
            banner: "Asterisk Call Manager/11.0.0".into(),
        }
    }
}

/// One message written completely to a client socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMessage {
    /// Session number, from 1 in accept order (refused connections get none).
    pub session: u64,
    pub msg: AmiMessage,
}

/// A scripted action handler: returns the messages to send to the requesting session
/// (responses, and events if the script wants them there), or `None` to let the built-in
/// handling (and finally `Invalid/unknown command`) answer.
pub type ActionHandler = dyn Fn(&AmiMessage) -> Option<Vec<AmiMessage>> + Send + Sync;

/// A running simulated AMI server. Clones share the server; call [`AmiServer::shutdown`] to
/// stop it (dropping every handle and session also stops the accept loop).
#[derive(Clone)]
pub struct AmiServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AmiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmiServer")
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: AmiServerConfig,
    local_addr: SocketAddr,
    started: Instant,
    state: Mutex<State>,
    handler: RwLock<Option<Arc<ActionHandler>>>,
    /// Number of successful logins so far (for [`AmiServer::wait_for_logins`]).
    logins: watch::Sender<u64>,
    /// Set to true by [`AmiServer::shutdown`]; dropped with `Inner`, which also ends the loop.
    shutdown: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    sessions: BTreeMap<u64, SessionEntry>,
    channels: Vec<LiveChannel>,
    received: Vec<AmiMessage>,
    sent: Vec<SentMessage>,
    /// Whether `sent` grows (see [`AmiServer::keep_sent_log`]).
    sent_log_off: bool,
    reject: usize,
    accepted: u64,
    next_session: u64,
    shut_down: bool,
}

/// What the rest of the server knows about a session.
struct SessionEntry {
    tx: mpsc::UnboundedSender<Out>,
    authenticated: bool,
    events: bool,
}

/// Instructions for a session's writer task, in queue order.
enum Out {
    Msg(AmiMessage),
    /// Write at most this many more bytes (of messages queued after this), then close.
    CutAfter(usize),
    /// Flush what is queued before this and close.
    Close,
}

impl AmiServer {
    /// Binds `addr` (port 0 picks a free port) and starts accepting sessions.
    pub async fn start(addr: SocketAddr, cfg: AmiServerConfig) -> std::io::Result<AmiServer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            cfg,
            local_addr,
            started: Instant::now(),
            state: Mutex::new(State {
                next_session: 1,
                ..State::default()
            }),
            handler: RwLock::new(None),
            logins: watch::channel(0).0,
            shutdown,
        });
        tokio::spawn(accept_loop(listener, Arc::downgrade(&inner), shutdown_rx));
        tracing::debug!(%local_addr, "simulated AMI server listening");
        Ok(AmiServer { inner })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Sends an event to every logged-in session that has events on, and updates the
    /// live-channel table that `CoreShowChannels` reports (Newchannel adds a channel, any
    /// event naming its `Uniqueid` updates it, Hangup removes it).
    pub fn send_event(&self, msg: &AmiMessage) {
        let mut st = self.inner.lock();
        track_channels(&mut st.channels, msg);
        for session in st.sessions.values() {
            if session.authenticated && session.events {
                let _ = session.tx.send(Out::Msg(msg.clone()));
            }
        }
    }

    /// Sends `messages` with [`AmiServer::send_event`], each at its `at` divided by `speed`
    /// after the call (speed 2 = twice as fast). A speed of 0, a negative one, NaN or infinity
    /// means no delay at all.
    pub async fn play(&self, messages: &[super::fixtures::TimedMessage], speed: f64) {
        let start = tokio::time::Instant::now();
        let paced = speed.is_finite() && speed > 0.0;
        for (i, t) in messages.iter().enumerate() {
            if paced {
                // Clamp absurd delays (tiny speeds) instead of overflowing the clock.
                let secs = (t.at.as_secs_f64() / speed).min(365.0 * 24.0 * 3600.0);
                let delay = Duration::try_from_secs_f64(secs).unwrap_or_default();
                tokio::time::sleep_until(start + delay).await;
            } else if i % 64 == 63 {
                // An unpaced replay of a long scenario should not hog the executor thread.
                tokio::task::yield_now().await;
            }
            self.send_event(&t.msg);
        }
    }

    /// Accepts and immediately closes the next `n` connections, before the banner, so the
    /// client sees a refused session. They count in [`AmiServer::sessions_accepted`].
    pub fn reject_next_connections(&self, n: usize) {
        self.inner.lock().reject += n;
    }

    /// Fault injection for the sessions logged in now: of the messages queued for them after
    /// this call, write `bytes` more bytes — stopping mid-message if that is where the count
    /// ends — then close the session (FIN, after which the server drains the client's input;
    /// see [`DRAIN_TIMEOUT`]). `bytes == 0` closes right after what is already queued. The
    /// partial message is not in [`AmiServer::sent_log`].
    pub fn cut_current_session_after(&self, bytes: usize) {
        let st = self.inner.lock();
        for session in st.sessions.values().filter(|s| s.authenticated) {
            let _ = session.tx.send(Out::CutAfter(bytes));
        }
    }

    /// Installs the handler consulted before the built-in actions (see [`ActionHandler`]).
    /// It runs for authenticated sessions, and for `Login`/`Challenge`/`Logoff` before login
    /// too; whatever it answers replaces the built-in behaviour (a scripted `Login` reply does
    /// not log the session in). Use [`response_to`] to echo the `ActionID`.
    pub fn set_action_handler(&self, handler: Box<ActionHandler>) {
        let mut slot = self
            .inner
            .handler
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *slot = Some(Arc::from(handler));
    }

    /// Every message any session sent, in arrival order: the actions (`Login` included), and
    /// also well-framed messages without `Action:` (answered `Missing action in request`).
    /// Malformed input is not recorded.
    pub fn received_actions(&self) -> Vec<AmiMessage> {
        self.inner.lock().received.clone()
    }

    /// Turns the [`AmiServer::sent_log`] on (the default, for tests) or off. A long run (the
    /// demo, a load benchmark) turns it off: it keeps every message ever written, so it would
    /// grow without end, and copying it as it grows stalls the writer.
    pub fn keep_sent_log(&self, on: bool) {
        let mut st = self.inner.lock();
        st.sent_log_off = !on;
        if !on {
            st.sent = Vec::new();
        }
    }

    /// Every message written completely to a client socket, in write order (empty while
    /// [`AmiServer::keep_sent_log`] is off).
    pub fn sent_log(&self) -> Vec<SentMessage> {
        self.inner.lock().sent.clone()
    }

    /// TCP connections accepted, refused ones included.
    pub fn sessions_accepted(&self) -> u64 {
        self.inner.lock().accepted
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        *self.inner.logins.borrow()
    }

    /// Waits until at least `n` logins have succeeded; false on timeout.
    pub async fn wait_for_logins(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.logins.subscribe();
        let reached = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|l| *l >= n)).await,
            Ok(Ok(_))
        );
        reached
    }

    /// Stops accepting and closes every session (after what is already queued for it).
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let mut st = self.inner.lock();
        st.shut_down = true;
        for session in st.sessions.values() {
            let _ = session.tx.send(Out::Close);
        }
    }
}

impl Inner {
    /// The state lock. A panic while it was held cannot leave it inconsistent in a way that
    /// matters for a simulator, so poisoning is ignored rather than spread.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove_session(&self, id: u64) {
        self.lock().sessions.remove(&id);
    }
}

/// Starts a response to `action`: `Response: <status>`, then its `ActionID` if it had one.
pub fn response_to(action: &AmiMessage, status: &str) -> AmiMessageBuilder {
    AmiMessage::builder()
        .field("Response", status)
        .field_opt("ActionID", action.action_id())
}

/// Builds a message from fields the server itself chose; they are always frameable, and a
/// value that is not (e.g. a CR in a scripted value) is dropped rather than panicking.
fn build(builder: AmiMessageBuilder) -> Option<AmiMessage> {
    match builder.build() {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "simulated AMI server: unframeable message dropped");
            None
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    inner: Weak<Inner>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            // Ends on shutdown, and when `Inner` (holding the sender) is gone.
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // E.g. EMFILE: back off briefly instead of spinning.
                tracing::debug!(error = %e, "simulated AMI server: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        let reject = {
            let mut st = inner.lock();
            if st.shut_down {
                return;
            }
            st.accepted += 1;
            let reject = st.reject > 0;
            st.reject = st.reject.saturating_sub(1);
            reject
        };
        if reject {
            tracing::debug!("simulated AMI server: refusing a connection");
            drop(stream);
            continue;
        }
        tokio::spawn(run_session(inner, stream));
    }
}

/// One client session: registers it, starts its writer, and runs the action reader.
async fn run_session(inner: Arc<Inner>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let (closed_tx, closed_rx) = watch::channel(false);
    let id = {
        let mut st = inner.lock();
        let id = st.next_session;
        st.next_session += 1;
        st.sessions.insert(
            id,
            SessionEntry {
                tx: tx.clone(),
                authenticated: false,
                events: true,
            },
        );
        if st.shut_down {
            // Accepted just before `shutdown()`: greet and close like the others.
            let _ = tx.send(Out::Close);
        }
        id
    };
    tokio::spawn(write_session(inner.clone(), id, wr, rx, closed_tx));
    let mut session = Session {
        inner,
        id,
        tx,
        challenge: None,
        authenticated: false,
    };
    session.read(rd, closed_rx).await;
}

/// The writer task: banner, then queued messages, honouring cuts; then FIN.
async fn write_session(
    inner: Arc<Inner>,
    id: u64,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    closed: watch::Sender<bool>,
) {
    let result: std::io::Result<()> = async {
        wr.write_all(format!("{}\r\n", inner.cfg.banner).as_bytes())
            .await?;
        let mut budget: Option<usize> = None;
        while let Some(out) = rx.recv().await {
            match out {
                Out::Msg(msg) => {
                    let len = msg.raw().len();
                    if let Some(left) = budget {
                        if len > left {
                            wr.write_all(&msg.raw()[..left]).await?;
                            tracing::debug!(session = id, bytes = left, "session cut mid-message");
                            return Ok(());
                        }
                    }
                    wr.write_all(msg.raw()).await?;
                    {
                        let mut st = inner.lock();
                        if !st.sent_log_off {
                            st.sent.push(SentMessage { session: id, msg });
                        }
                    }
                    if let Some(left) = budget.as_mut() {
                        *left -= len;
                        if *left == 0 {
                            tracing::debug!(session = id, "session cut on a message boundary");
                            return Ok(());
                        }
                    }
                }
                Out::CutAfter(0) => return Ok(()),
                Out::CutAfter(n) => budget = Some(n),
                Out::Close => return Ok(()),
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(session = id, error = %e, "session write failed");
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
    inner.remove_session(id);
    closed.send_replace(true);
    // `wr` is dropped here; the socket closes once the reader has drained and dropped its half.
}

/// Per-session protocol state, owned by the reader.
struct Session {
    inner: Arc<Inner>,
    id: u64,
    tx: mpsc::UnboundedSender<Out>,
    challenge: Option<String>,
    authenticated: bool,
}

/// What the reader does after an action.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

impl Session {
    async fn read(&mut self, rd: OwnedReadHalf, mut closed: watch::Receiver<bool>) {
        let mut framed = FramedRead::new(rd, AmiCodec::new().without_banner());
        let mut peer_closed = false;
        loop {
            tokio::select! {
                _ = closed.wait_for(|c| *c) => break,
                frame = framed.next() => match frame {
                    None => { peer_closed = true; break; }
                    Some(Err(e)) => {
                        tracing::debug!(session = self.id, error = %e, "session read failed");
                        peer_closed = true;
                        break;
                    }
                    Some(Ok(AmiFrame::Message(msg))) => {
                        if self.handle(msg) == Flow::Close {
                            let _ = self.tx.send(Out::Close);
                            break;
                        }
                    }
                    Some(Ok(AmiFrame::Malformed(e))) => {
                        tracing::debug!(session = self.id, error = %e, "malformed client input ignored");
                    }
                    Some(Ok(AmiFrame::Banner(_))) => {}
                }
            }
        }
        // No more events for this session; the writer finishes what is queued.
        self.inner.remove_session(self.id);
        if !peer_closed {
            let mut rd = framed.into_inner();
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
                while let Ok(n) = rd.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
    }

    fn send(&self, msg: Option<AmiMessage>) {
        if let Some(msg) = msg {
            let _ = self.tx.send(Out::Msg(msg));
        }
    }

    fn error(&self, action: &AmiMessage, message: &str) {
        self.send(build(
            response_to(action, "Error").field("Message", message),
        ));
    }

    fn handle(&mut self, msg: AmiMessage) -> Flow {
        self.inner.lock().received.push(msg.clone());
        let Some(action) = msg.get("Action").map(str::to_ascii_lowercase) else {
            self.error(&msg, "Missing action in request");
            return Flow::Continue;
        };
        let pre_login = matches!(action.as_str(), "login" | "challenge" | "logoff");
        if !self.authenticated && !pre_login {
            self.error(&msg, "Permission denied");
            return Flow::Continue;
        }
        let handler = self
            .inner
            .handler
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(replies) = handler.and_then(|h| h(&msg)) {
            for reply in replies {
                self.send(Some(reply));
            }
            return Flow::Continue;
        }
        match action.as_str() {
            "challenge" => self.challenge(&msg),
            "login" => return self.login(&msg),
            "logoff" => {
                self.send(build(
                    response_to(&msg, "Goodbye").field("Message", "Thanks for all the fish."),
                ));
                return Flow::Close;
            }
            "ping" => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                self.send(build(
                    response_to(&msg, "Success").field("Ping", "Pong").field(
                        "Timestamp",
                        format!("{}.{:06}", now.as_secs(), now.subsec_micros()),
                    ),
                ));
            }
            "events" => self.events(&msg),
            "coreshowchannels" => self.core_show_channels(&msg),
            "command" => self.command(&msg),
            _ => self.error(&msg, "Invalid/unknown command"),
        }
        Flow::Continue
    }

    fn challenge(&mut self, msg: &AmiMessage) {
        if !msg
            .get("AuthType")
            .is_some_and(|a| a.eq_ignore_ascii_case("MD5"))
        {
            return self.error(msg, "Must specify AuthType");
        }
        // Like Asterisk, one challenge per session, reused if asked again.
        let challenge = self
            .challenge
            .get_or_insert_with(|| (rand::random::<u32>() >> 1).to_string())
            .clone();
        self.send(build(
            response_to(msg, "Success").field("Challenge", challenge),
        ));
    }

    fn login(&mut self, msg: &AmiMessage) -> Flow {
        if self.authenticated {
            self.send(build(
                response_to(msg, "Success").field("Message", "Already authenticated"),
            ));
            return Flow::Continue;
        }
        let cfg = &self.inner.cfg;
        let user_ok = msg
            .get("Username")
            .is_some_and(|u| u.eq_ignore_ascii_case(&cfg.username));
        let md5 = msg
            .get("AuthType")
            .is_some_and(|a| a.eq_ignore_ascii_case("MD5"));
        let secret_ok = if md5 {
            match (&self.challenge, msg.get("Key")) {
                (Some(challenge), Some(key)) => {
                    let digest = Md5::digest(format!("{challenge}{}", cfg.secret).as_bytes());
                    let expected: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                    key.eq_ignore_ascii_case(&expected)
                }
                _ => false,
            }
        } else {
            !cfg.require_md5 && msg.get("Secret") == Some(cfg.secret.as_str())
        };
        if !(user_ok && secret_ok) {
            tracing::debug!(session = self.id, "simulated AMI login refused");
            self.error(msg, "Authentication failed");
            return Flow::Close;
        }
        let events = !msg
            .get("Events")
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("off"));
        self.authenticated = true;
        let uptime = self.inner.started.elapsed().as_secs().to_string();
        let accepted =
            build(response_to(msg, "Success").field("Message", "Authentication accepted"));
        let booted = build(
            AmiMessage::event("FullyBooted")
                .field("Privilege", "system,all")
                .field("Uptime", uptime.as_str())
                .field("LastReload", uptime.as_str())
                .field("Status", "Fully Booted"),
        );
        {
            // Under the state lock, so no event can come between the response and FullyBooted.
            let mut st = self.inner.lock();
            if let Some(entry) = st.sessions.get_mut(&self.id) {
                entry.authenticated = true;
                entry.events = events;
            }
            self.send(accepted);
            if events {
                self.send(booted);
            }
        }
        self.inner.logins.send_modify(|n| *n += 1);
        Flow::Continue
    }

    fn events(&mut self, msg: &AmiMessage) {
        let Some(mask) = msg
            .get("EventMask")
            .map(str::trim)
            .filter(|m| !m.is_empty())
        else {
            return self.error(msg, "Invalid event mask");
        };
        let on = !mask.eq_ignore_ascii_case("off") && mask != "0";
        let mut st = self.inner.lock();
        if let Some(entry) = st.sessions.get_mut(&self.id) {
            entry.events = on;
        }
        self.send(build(
            response_to(msg, "Success").field("Events", if on { "On" } else { "Off" }),
        ));
    }

    fn core_show_channels(&mut self, msg: &AmiMessage) {
        // Under the state lock, so the list is consistent with the events sent around it.
        let st = self.inner.lock();
        self.send(build(
            response_to(msg, "Success")
                .field("EventList", "start")
                .field("Message", "Channels will follow"),
        ));
        for channel in &st.channels {
            self.send(build(channel.to_event(msg.action_id())));
        }
        self.send(build(
            AmiMessage::event("CoreShowChannelsComplete")
                .field_opt("ActionID", msg.action_id())
                .field("EventList", "Complete")
                .field("ListItems", st.channels.len().to_string()),
        ));
    }

    fn command(&mut self, msg: &AmiMessage) {
        let command = msg.get("Command").unwrap_or("").trim();
        let words: Vec<String> = command
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let uptime = self.inner.started.elapsed().as_secs();
        let output: Option<Vec<String>> = match words.as_slice() {
            ["core", "show", "version"] => Some(vec![format!(
                "Asterisk 22.10.1 built by ctibridge-sim @ simulator on a {} running {} (simulated)",
                std::env::consts::ARCH,
                std::env::consts::OS
            )]),
            ["core", "show", "uptime", ..] => Some(vec![
                format!("System uptime: {uptime} seconds"),
                format!("Last reload: {uptime} seconds"),
            ]),
            ["core", "show", "channels", "count"] => {
                let n = self.inner.lock().channels.len();
                Some(vec![
                    format!("{n} active channel{}", if n == 1 { "" } else { "s" }),
                    "0 active calls".to_owned(),
                    "0 calls processed".to_owned(),
                ])
            }
            _ => None,
        };
        let builder = match output {
            Some(lines) => lines.into_iter().fold(
                response_to(msg, "Success").field("Message", "Command output follows"),
                |b, line| b.field("Output", line),
            ),
            None => response_to(msg, "Error")
                .field("Message", "Command output follows")
                .field(
                    "Output",
                    format!(
                        "No such command '{command}' (type 'core show help {command}' for other possible commands)"
                    ),
                ),
        };
        self.send(build(builder));
    }
}

/// The channel snapshot fields, in Asterisk's order (`ast_manager_build_channel_state_string`).
const SNAPSHOT_KEYS: [&str; 15] = [
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
    "Tenantid",
];

/// One live channel as `CoreShowChannels` reports it.
struct LiveChannel {
    uniqueid: String,
    /// Values of [`SNAPSHOT_KEYS`]; `None` for a key never seen (Tenantid is then omitted).
    snapshot: [Option<String>; SNAPSHOT_KEYS.len()],
    chan_vars: Vec<String>,
    application: String,
    app_data: String,
    bridge_id: String,
    created: Instant,
}

impl LiveChannel {
    fn update(&mut self, msg: &AmiMessage, prefix: &str) {
        for (slot, key) in self.snapshot.iter_mut().zip(SNAPSHOT_KEYS) {
            if let Some(v) = msg.get(&format!("{prefix}{key}")) {
                *slot = Some(v.to_owned());
            }
        }
        let var_key = format!("{prefix}ChanVariable");
        let vars: Vec<String> = msg.get_all(&var_key).map(str::to_owned).collect();
        if !vars.is_empty() {
            self.chan_vars = vars;
        }
    }

    fn to_event(&self, action_id: Option<&str>) -> AmiMessageBuilder {
        let mut b = AmiMessage::event("CoreShowChannel").field_opt("ActionID", action_id);
        for (key, value) in SNAPSHOT_KEYS.iter().zip(&self.snapshot) {
            match value {
                Some(v) => b = b.field(*key, v.as_str()),
                None if *key == "Tenantid" => {}
                None if *key == "Uniqueid" => b = b.field(*key, self.uniqueid.as_str()),
                None => b = b.field(*key, ""),
            }
        }
        for var in &self.chan_vars {
            b = b.field("ChanVariable", var.as_str());
        }
        let secs = self.created.elapsed().as_secs();
        b.field("Application", self.application.as_str())
            .field("ApplicationData", self.app_data.as_str())
            .field(
                "Duration",
                format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
            )
            .field("BridgeId", self.bridge_id.as_str())
    }
}

/// Follows the channels through the events the server sends.
fn track_channels(channels: &mut Vec<LiveChannel>, msg: &AmiMessage) {
    let Some(event) = msg.event_name() else {
        return;
    };
    let is = |name: &str| event.eq_ignore_ascii_case(name);
    let uniqueid = msg.get("Uniqueid").filter(|u| !u.is_empty());
    if is("Hangup") {
        if let Some(uid) = uniqueid {
            channels.retain(|c| c.uniqueid != uid);
        }
        return;
    }
    if is("Newchannel") {
        if let Some(uid) = uniqueid {
            if !channels.iter().any(|c| c.uniqueid == uid) {
                channels.push(LiveChannel {
                    uniqueid: uid.to_owned(),
                    snapshot: Default::default(),
                    chan_vars: Vec::new(),
                    application: String::new(),
                    app_data: String::new(),
                    bridge_id: String::new(),
                    created: Instant::now(),
                });
            }
        }
    }
    for prefix in crate::ami::SNAPSHOT_PREFIXES {
        let Some(uid) = msg.get(&format!("{prefix}Uniqueid")) else {
            continue;
        };
        if let Some(channel) = channels.iter_mut().find(|c| c.uniqueid == uid) {
            channel.update(msg, prefix);
        }
    }
    let Some(channel) = uniqueid.and_then(|uid| channels.iter_mut().find(|c| c.uniqueid == uid))
    else {
        return;
    };
    if is("Newexten") {
        channel.application = msg.get("Application").unwrap_or("").to_owned();
        channel.app_data = msg.get("AppData").unwrap_or("").to_owned();
    } else if is("BridgeEnter") {
        channel.bridge_id = msg.get("BridgeUniqueid").unwrap_or("").to_owned();
    } else if is("BridgeLeave") {
        channel.bridge_id.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::AmiDecodeError;
    use crate::sim::fixtures::embedded_scenario;
    use futures::SinkExt;
    use tokio_util::codec::Framed;

    const T: Duration = Duration::from_secs(5);

    fn cfg(require_md5: bool) -> AmiServerConfig {
        AmiServerConfig {
            username: "bridge".into(),
            secret: "s3cret".into(),
            require_md5,
            banner: "Asterisk Call Manager/11.0.0".into(),
        }
    }

    async fn server(require_md5: bool) -> AmiServer {
        AmiServer::start("127.0.0.1:0".parse().unwrap(), cfg(require_md5))
            .await
            .unwrap()
    }

    struct Client {
        framed: Framed<TcpStream, AmiCodec>,
    }

    impl Client {
        /// Connects and reads the banner.
        async fn connect(server: &AmiServer) -> Client {
            let mut c = Client::connect_raw(server).await;
            match c.next_frame().await {
                Some(AmiFrame::Banner(b)) => assert_eq!(b, "Asterisk Call Manager/11.0.0"),
                other => panic!("expected banner, got {other:?}"),
            }
            c
        }

        async fn connect_raw(server: &AmiServer) -> Client {
            let stream = TcpStream::connect(server.local_addr()).await.unwrap();
            Client {
                framed: Framed::new(stream, AmiCodec::new()),
            }
        }

        async fn next_frame(&mut self) -> Option<AmiFrame> {
            tokio::time::timeout(T, self.framed.next())
                .await
                .expect("timed out waiting for the server")
                .map(|r| r.unwrap())
        }

        async fn recv(&mut self) -> AmiMessage {
            match self.next_frame().await {
                Some(AmiFrame::Message(m)) => m,
                other => panic!("expected a message, got {other:?}"),
            }
        }

        async fn send(&mut self, msg: AmiMessage) {
            self.framed.send(&msg).await.unwrap();
        }

        async fn action(&mut self, builder: AmiMessageBuilder) -> AmiMessage {
            self.send(builder.build().unwrap()).await;
            self.recv().await
        }

        async fn login_md5(&mut self, secret: &str) -> AmiMessage {
            let challenge = self
                .action(
                    AmiMessage::action("Challenge")
                        .field("ActionID", "c1")
                        .field("AuthType", "MD5"),
                )
                .await;
            assert_eq!(challenge.get("Response"), Some("Success"));
            assert_eq!(challenge.get("ActionID"), Some("c1"));
            let challenge = challenge.get("Challenge").unwrap().to_owned();
            assert!(challenge.bytes().all(|b| b.is_ascii_digit()));
            let key: String = Md5::digest(format!("{challenge}{secret}").as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            self.action(
                AmiMessage::action("Login")
                    .field("ActionID", "l1")
                    .field("AuthType", "MD5")
                    .field("Username", "bridge")
                    .field("Key", key),
            )
            .await
        }

        async fn login_plain(&mut self, events: Option<&str>) -> AmiMessage {
            self.action(
                AmiMessage::action("Login")
                    .field("Username", "bridge")
                    .field("Secret", "s3cret")
                    .field_opt("Events", events),
            )
            .await
        }

        /// Reads everything up to the end of the stream.
        async fn read_to_end(&mut self) -> Vec<AmiFrame> {
            let mut out = Vec::new();
            while let Some(f) = self.next_frame().await {
                out.push(f);
            }
            out
        }
    }

    fn event(fields: &[(&str, &str)]) -> AmiMessage {
        fields
            .iter()
            .fold(AmiMessage::builder(), |b, (k, v)| b.field(*k, *v))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn banner_then_md5_login_and_fully_booted() {
        let server = server(true).await;
        let mut c = Client::connect(&server).await;
        let r = c.login_md5("s3cret").await;
        assert_eq!(
            r.to_pairs(),
            [
                ("Response", "Success"),
                ("ActionID", "l1"),
                ("Message", "Authentication accepted")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let booted = c.recv().await;
        assert_eq!(booted.get("Event"), Some("FullyBooted"));
        assert_eq!(booted.get("Privilege"), Some("system,all"));
        assert_eq!(booted.get("Status"), Some("Fully Booted"));
        assert!(booted.get("Uptime").is_some() && booted.get("LastReload").is_some());
        assert!(server.wait_for_logins(1, T).await);
        assert_eq!(server.logins(), 1);
        let ping = c
            .action(AmiMessage::action("Ping").field("ActionID", "p1"))
            .await;
        assert_eq!(ping.iter().next(), Some(("Response", "Success")));
        assert_eq!(ping.iter().nth(1), Some(("ActionID", "p1")));
        assert_eq!(ping.get("Ping"), Some("Pong"));
        let ts = ping.get("Timestamp").unwrap();
        let (secs, micros) = ts.split_once('.').unwrap();
        assert!(secs.parse::<u64>().unwrap() > 1_600_000_000 && micros.len() == 6);
        let again = c.login_md5("s3cret").await;
        assert_eq!(again.get("Message"), Some("Already authenticated"));
        let bye = c.action(AmiMessage::action("Logoff")).await;
        assert_eq!(bye.get("Response"), Some("Goodbye"));
        assert_eq!(bye.get("Message"), Some("Thanks for all the fish."));
        assert!(
            c.next_frame().await.is_none(),
            "session closed after Logoff"
        );
        let actions: Vec<_> = server
            .received_actions()
            .iter()
            .map(|a| a.get("Action").unwrap().to_owned())
            .collect();
        assert_eq!(
            actions,
            ["Challenge", "Login", "Ping", "Challenge", "Login", "Logoff"]
        );
    }

    #[tokio::test]
    async fn wrong_md5_key_fails_and_closes() {
        let server = server(false).await;
        let mut c = Client::connect(&server).await;
        let r = c.login_md5("wrong").await;
        assert_eq!(r.get("Response"), Some("Error"));
        assert_eq!(r.get("ActionID"), Some("l1"));
        assert_eq!(r.get("Message"), Some("Authentication failed"));
        assert!(c.next_frame().await.is_none());
        assert!(!server.wait_for_logins(1, Duration::from_millis(50)).await);
    }

    #[tokio::test]
    async fn plain_login_refused_when_md5_required_and_accepted_otherwise() {
        let server = server(true).await;
        let mut c = Client::connect(&server).await;
        let r = c.login_plain(None).await;
        assert_eq!(r.get("Message"), Some("Authentication failed"));
        assert!(c.next_frame().await.is_none());

        let server = self::server(false).await;
        let mut c = Client::connect(&server).await;
        let r = c.login_plain(None).await;
        assert_eq!(r.get("Message"), Some("Authentication accepted"));
        assert_eq!(c.recv().await.get("Event"), Some("FullyBooted"));
    }

    #[tokio::test]
    async fn permission_denied_before_login() {
        let server = server(false).await;
        let mut c = Client::connect(&server).await;
        for action in ["Ping", "CoreShowChannels", "Originate"] {
            let r = c
                .action(AmiMessage::action(action).field("ActionID", "x"))
                .await;
            assert_eq!(r.get("Response"), Some("Error"), "{action}");
            assert_eq!(r.get("ActionID"), Some("x"));
            assert_eq!(r.get("Message"), Some("Permission denied"));
        }
        let r = c.action(AmiMessage::builder().field("Foo", "bar")).await;
        assert_eq!(r.get("Message"), Some("Missing action in request"));
        // Garbage does not hurt the session: a line without a colon is skipped, and a
        // message without `Action` gets an error.
        c.framed
            .get_mut()
            .write_all(b"no colon here\r\n\r\n\xff\xfe: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            c.recv().await.get("Message"),
            Some("Missing action in request")
        );
        let r = c.login_plain(None).await;
        assert_eq!(r.get("Message"), Some("Authentication accepted"));
    }

    #[tokio::test]
    async fn events_off_and_events_action() {
        let server = server(false).await;
        let mut quiet = Client::connect(&server).await;
        assert_eq!(
            quiet.login_plain(Some("off")).await.get("Response"),
            Some("Success")
        );
        let mut loud = Client::connect(&server).await;
        loud.login_plain(Some("on")).await;
        assert_eq!(loud.recv().await.get("Event"), Some("FullyBooted"));
        server.send_event(&event(&[("Event", "UserEvent"), ("UserEvent", "A")]));
        assert_eq!(loud.recv().await.get("UserEvent"), Some("A"));
        // The quiet session gets no FullyBooted and no event: its next message is the Ping reply.
        let r = quiet.action(AmiMessage::action("Ping")).await;
        assert_eq!(r.get("Ping"), Some("Pong"));
        let r = quiet
            .action(AmiMessage::action("Events").field("EventMask", "on"))
            .await;
        assert_eq!(r.get("Events"), Some("On"));
        server.send_event(&event(&[("Event", "UserEvent"), ("UserEvent", "B")]));
        assert_eq!(quiet.recv().await.get("UserEvent"), Some("B"));
        assert_eq!(loud.recv().await.get("UserEvent"), Some("B"));
        let r = loud
            .action(AmiMessage::action("Events").field("EventMask", "off"))
            .await;
        assert_eq!(r.get("Events"), Some("Off"));
        let r = loud.action(AmiMessage::action("Events")).await;
        assert_eq!(r.get("Message"), Some("Invalid event mask"));
    }

    #[tokio::test]
    async fn command_and_unknown_action_and_handler() {
        let server = server(false).await;
        let mut c = Client::connect(&server).await;
        c.login_plain(Some("off")).await;
        let r = c
            .action(
                AmiMessage::action("Command")
                    .field("ActionID", "v")
                    .field("Command", "core show version"),
            )
            .await;
        assert_eq!(r.get("Response"), Some("Success"));
        assert_eq!(r.get("Message"), Some("Command output follows"));
        assert!(r.get("Output").unwrap().starts_with("Asterisk 22."));
        let r = c
            .action(AmiMessage::action("Command").field("Command", "core show uptime"))
            .await;
        assert_eq!(r.get_all("Output").count(), 2);
        let r = c
            .action(AmiMessage::action("Command").field("Command", "bogus"))
            .await;
        assert_eq!(r.get("Response"), Some("Error"));
        assert!(r
            .get("Output")
            .unwrap()
            .starts_with("No such command 'bogus'"));
        let r = c
            .action(AmiMessage::action("Originate").field("ActionID", "o1"))
            .await;
        assert_eq!(r.get("Message"), Some("Invalid/unknown command"));
        assert_eq!(r.get("ActionID"), Some("o1"));

        server.set_action_handler(Box::new(|action| {
            action
                .get("Action")
                .is_some_and(|a| a.eq_ignore_ascii_case("Originate"))
                .then(|| {
                    vec![response_to(action, "Success")
                        .field("Message", "Originate successfully queued")
                        .build()
                        .unwrap()]
                })
        }));
        let r = c
            .action(AmiMessage::action("Originate").field("ActionID", "o2"))
            .await;
        assert_eq!(r.get("ActionID"), Some("o2"));
        assert_eq!(r.get("Message"), Some("Originate successfully queued"));
        // Actions the handler declines still get the built-in answer.
        let r = c.action(AmiMessage::action("Ping")).await;
        assert_eq!(r.get("Ping"), Some("Pong"));
    }

    /// Sends CoreShowChannels and returns the listed channels, checking the list framing.
    async fn list_channels(c: &mut Client) -> Vec<AmiMessage> {
        c.send(
            AmiMessage::action("CoreShowChannels")
                .field("ActionID", "csc")
                .build()
                .unwrap(),
        )
        .await;
        let r = c.recv().await;
        assert_eq!(r.get("Response"), Some("Success"));
        assert_eq!(r.get("ActionID"), Some("csc"));
        assert_eq!(r.get("EventList"), Some("start"));
        assert_eq!(r.get("Message"), Some("Channels will follow"));
        let mut items = Vec::new();
        loop {
            let m = c.recv().await;
            assert_eq!(m.get("ActionID"), Some("csc"));
            if m.get("Event") == Some("CoreShowChannelsComplete") {
                assert_eq!(m.get("EventList"), Some("Complete"));
                assert_eq!(m.get("ListItems"), Some(items.len().to_string().as_str()));
                return items;
            }
            assert_eq!(m.get("Event"), Some("CoreShowChannel"));
            items.push(m);
        }
    }

    #[tokio::test]
    async fn core_show_channels_follows_played_events() {
        let scenario = embedded_scenario("answered_caller_hangup").unwrap();
        let find = |name: &str| {
            scenario
                .messages
                .iter()
                .find(|t| t.msg.event_name() == Some(name))
                .unwrap()
                .clone()
        };
        let newchannel = find("Newchannel");
        let uid = newchannel.msg.get("Uniqueid").unwrap().to_owned();
        let hangup = scenario
            .messages
            .iter()
            .find(|t| t.msg.event_name() == Some("Hangup") && t.msg.get("Uniqueid") == Some(&uid))
            .unwrap()
            .clone();

        let server = server(false).await;
        let mut c = Client::connect(&server).await;
        c.login_plain(Some("off")).await;
        server.play(std::slice::from_ref(&newchannel), 0.0).await;
        let items = list_channels(&mut c).await;
        assert_eq!(items.len(), 1);
        let ch = &items[0];
        assert_eq!(ch.get("Uniqueid"), Some(uid.as_str()));
        assert_eq!(ch.get("Channel"), newchannel.msg.get("Channel"));
        assert_eq!(ch.get("ChannelStateDesc"), Some("Ring"));
        assert_eq!(ch.get("CallerIDNum"), Some("101"));
        assert_eq!(ch.get("Linkedid"), Some(uid.as_str()));
        assert_eq!(ch.get("Duration"), Some("00:00:00"));
        for key in [
            "Application",
            "ApplicationData",
            "BridgeId",
            "Exten",
            "Context",
        ] {
            assert!(ch.get(key).is_some(), "{key}");
        }
        // A later event updates the state.
        server.send_event(&event(&[
            ("Event", "Newstate"),
            ("Uniqueid", &uid),
            ("ChannelState", "6"),
            ("ChannelStateDesc", "Up"),
        ]));
        assert_eq!(
            list_channels(&mut c).await[0].get("ChannelStateDesc"),
            Some("Up")
        );
        server.play(&[hangup], 0.0).await;
        assert!(list_channels(&mut c).await.is_empty());
    }

    #[tokio::test]
    async fn play_delivers_a_scenario_in_order_and_sent_log_matches() {
        let scenario = embedded_scenario("busy_486").unwrap();
        let messages = scenario.instantiate(3);
        let server = server(false).await;
        let mut c = Client::connect(&server).await;
        c.login_plain(None).await;
        c.recv().await; // FullyBooted
        let started = Instant::now();
        // Speed 50: the ~5 s capture takes ~0.1 s, and is paced.
        server.play(&messages, 50.0).await;
        assert!(started.elapsed() >= scenario.duration().div_f64(50.0));
        let mut got = Vec::new();
        for _ in 0..messages.len() {
            got.push(c.recv().await);
        }
        let expected: Vec<AmiMessage> = messages.iter().map(|t| t.msg.clone()).collect();
        assert_eq!(got, expected);
        assert_eq!(got[0].raw(), expected[0].raw(), "replayed byte for byte");
        let log: Vec<AmiMessage> = server.sent_log().into_iter().map(|s| s.msg).collect();
        assert_eq!(log.len(), messages.len() + 2);
        assert_eq!(log[0].get("Message"), Some("Authentication accepted"));
        assert_eq!(log[1].get("Event"), Some("FullyBooted"));
        assert_eq!(&log[2..], &expected[..]);
    }

    /// With the log off, messages are still delivered but no longer kept; on again, kept.
    #[tokio::test]
    async fn the_sent_log_can_be_turned_off_for_long_runs() {
        let messages = embedded_scenario("busy_486").unwrap().instantiate(4);
        let server = server(false).await;
        let mut c = Client::connect(&server).await;
        c.login_plain(None).await;
        c.recv().await; // FullyBooted
        server.keep_sent_log(false);
        assert!(server.sent_log().is_empty(), "turning it off empties it");
        server.play(&messages[..3], 0.0).await;
        for m in &messages[..3] {
            assert_eq!(&c.recv().await, &m.msg, "still delivered");
        }
        assert!(server.sent_log().is_empty());
        server.keep_sent_log(true);
        server.play(&messages[3..4], 0.0).await;
        assert_eq!(&c.recv().await, &messages[3].msg);
        let log: Vec<AmiMessage> = server.sent_log().into_iter().map(|s| s.msg).collect();
        assert_eq!(log, vec![messages[3].msg.clone()]);
    }

    #[tokio::test]
    async fn rejected_connections_then_a_working_one() {
        let server = server(false).await;
        server.reject_next_connections(2);
        for _ in 0..2 {
            let mut c = Client::connect_raw(&server).await;
            assert!(c.next_frame().await.is_none(), "refused before the banner");
        }
        let mut c = Client::connect(&server).await;
        assert_eq!(
            c.login_plain(None).await.get("Message"),
            Some("Authentication accepted")
        );
        assert_eq!(server.sessions_accepted(), 3);
        assert!(server.wait_for_logins(1, T).await);
    }

    /// Cuts after `bytes` and checks that the client got exactly the logged messages plus, when
    /// the cut fell inside a message, a torn tail.
    async fn cut_case(bytes: impl Fn(&[AmiMessage]) -> usize, expect_torn: bool) {
        let server = server(false).await;
        let mut c = Client::connect(&server).await;
        c.login_plain(None).await;
        c.recv().await; // FullyBooted
        let events: Vec<AmiMessage> = (0..5)
            .map(|i| {
                event(&[
                    ("Event", "UserEvent"),
                    ("UserEvent", "Cut"),
                    ("N", &i.to_string()),
                    ("Padding", "x".repeat(40).as_str()),
                ])
            })
            .collect();
        server.send_event(&events[0]);
        server.cut_current_session_after(bytes(&events));
        for e in &events[1..] {
            server.send_event(e);
        }
        let frames = c.read_to_end().await;
        let mut decoded = Vec::new();
        let mut torn = None;
        for f in frames {
            match f {
                AmiFrame::Message(m) => decoded.push(m),
                AmiFrame::Malformed(AmiDecodeError::Truncated { bytes }) => torn = Some(bytes),
                other => panic!("unexpected {other:?}"),
            }
        }
        let log: Vec<AmiMessage> = server.sent_log().into_iter().map(|s| s.msg).collect();
        // The log holds the login response and FullyBooted (read above), then exactly what
        // the client decoded after them.
        assert_eq!(decoded, log[2..].to_vec());
        assert_eq!(torn.is_some(), expect_torn, "torn tail: {torn:?}");
        // The server closed the session: further events go nowhere and are not logged.
        server.send_event(&events[0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(server.sent_log().len(), log.len());
    }

    #[tokio::test]
    async fn cut_mid_message_leaves_a_torn_tail() {
        // All of event 0 (queued before the cut), then events 1 and 2, then 10 bytes of 3.
        cut_case(|e| e[1].raw().len() + e[2].raw().len() + 10, true).await;
    }

    #[tokio::test]
    async fn cut_on_a_boundary_leaves_no_tail() {
        cut_case(|e| e[1].raw().len(), false).await;
    }

    #[tokio::test]
    async fn cut_zero_closes_after_what_is_queued() {
        cut_case(|_| 0, false).await;
    }

    /// A cut in the middle of a fast replay while the client keeps sending actions: the
    /// client must still get every logged byte (no RST losing data), then the torn tail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cut_during_a_replay_with_client_traffic_loses_nothing() {
        let scenario = embedded_scenario("blind_transfer").unwrap();
        let server = server(false).await;
        let mut c = Client::connect(&server).await;
        c.login_plain(None).await;
        c.recv().await; // FullyBooted
        let parts = c.framed.into_parts();
        let (rd, mut wr) = parts.io.into_split();
        let mut stream = FramedRead::new(rd, AmiCodec::new().without_banner());
        stream.read_buffer_mut().extend_from_slice(&parts.read_buf);
        let pinger = tokio::spawn(async move {
            for i in 0.. {
                let ping = AmiMessage::action("Ping")
                    .field("ActionID", format!("p{i}"))
                    .build()
                    .unwrap();
                if wr.write_all(ping.raw()).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let half = scenario
            .messages
            .iter()
            .map(|t| t.msg.raw().len())
            .sum::<usize>()
            / 2;
        server.cut_current_session_after(half + 7);
        server.play(&scenario.instantiate(1), 0.0).await;
        let mut decoded = Vec::new();
        let mut torn = None;
        while let Some(frame) = tokio::time::timeout(T, stream.next()).await.unwrap() {
            match frame.unwrap() {
                AmiFrame::Message(m) => decoded.push(m),
                AmiFrame::Malformed(AmiDecodeError::Truncated { bytes }) => torn = Some(bytes),
                other => panic!("unexpected {other:?}"),
            }
        }
        pinger.abort();
        let log: Vec<AmiMessage> = server.sent_log().into_iter().map(|s| s.msg).collect();
        assert_eq!(decoded, log[2..].to_vec());
        assert!(decoded.iter().any(|m| m.get("Ping") == Some("Pong")));
        assert!(torn.is_some());
    }

    #[tokio::test]
    async fn shutdown_closes_sessions_and_stops_accepting() {
        let server = server(false).await;
        let mut c = Client::connect(&server).await;
        c.login_plain(Some("off")).await;
        server.shutdown();
        assert!(c.next_frame().await.is_none());
        // The listener is gone (connect fails) or the connection is closed at once.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(stream) = TcpStream::connect(server.local_addr()).await {
            let mut c = Client {
                framed: Framed::new(stream, AmiCodec::new()),
            };
            assert!(c.next_frame().await.is_none());
        }
    }
}
