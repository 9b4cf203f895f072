//! Control: the effect side. A CRM (through the API) or the PBX itself (through AMI user
//! events) asks for a call or a DND change; [`Control`] makes the right phone do it through
//! Active URI, falls back to the PBX (AMI `Originate`) when the phone cannot, keeps DND in
//! step between phones and the PBX, and lets the asker follow what happened.
//!
//! The decisions are plain synchronous code with their own tests: the path of a dial and the
//! request state machine ([`dial`]), the DND loop guard and PBX actions ([`dnd`]), rate limits
//! and idempotency keys ([`limits`]). This module does the effects around them: HTTP to
//! phones (through [`ActiveUriClient`]), AMI actions, the store.
//!
//! Inputs arrive in two ways:
//! - API calls ([`Control::dial`], [`Control::set_dnd`], [`Control::dial_status`]);
//! - the service's single consumer task hands every journal entry ([`Control::on_input`])
//!   and the correlator's outputs ([`Control::on_outputs`]) over. Those calls only update
//!   in-memory state under short locks and *spawn* any network effect (a `CtiDial` dial, a
//!   DND push), so the consumer never waits for a phone or for Asterisk.
//!
//! Entries older than [`STALE_INPUT`] never trigger effects: a journal replayed through the
//! live path must not dial again or re-push old DND changes.
//!
//! Dial status changes are written to the store (`dial_requests`, one writer task, in order)
//! and published on a broadcast channel ([`Control::subscribe`]) for live event streams.
//! Rules and examples: `docs/CONTROL.md`.

pub mod dial;
pub mod dnd;
pub mod limits;
mod pbx_view;

pub use dial::{DialOrigin, DialState, DialStatus, DialStep, DialTracker};

use crate::ami::{AmiHandle, AmiMessage};
use crate::config::{
    DialSettings, DialVia, DndPbxMode, DndSettings, PhoneTransport, PhoneVendor, Settings,
};
use crate::correlator::Output;
use crate::journal::{Input, JournalEntry};
use crate::phone::action_url::{parse_callback, ActionUrlEvent, PhoneCallback};
use crate::phone::client::{ActiveUriClient, CommandError, PhoneCommand};
use crate::phone::number::{normalize_number, NumberError};
use crate::phone::registry::{PhoneInfo, PhoneRegistry};
use crate::phone::vendor::{profile, CommandContext};
use crate::store::{Store, StoreError};
use chrono::{DateTime, TimeDelta, Utc};
use dial::{choose, NoPath, PhoneFacts, Plan};
use dnd::{LoopGuard, Side, Verdict};
use limits::{Begin, IdempotencyCache, Limit, RateLimiter};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Journal entries older than this (by their receive time) update state but trigger no
/// effects.
pub const STALE_INPUT: TimeDelta = TimeDelta::seconds(60);
/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Dial status updates a slow subscriber may fall behind before it misses some.
const UPDATES_CAPACITY: usize = 1024;

/// A click-to-call request as given.
#[derive(Clone, Debug)]
pub struct DialRequest {
    pub from: String,
    pub to: String,
    /// `None`: `[dial] default_via`.
    pub via: Option<DialVia>,
    pub origin: DialOrigin,
    /// The API token (its rate limit and its idempotency keys); `None` for PBX requests.
    pub token: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Why a dial request was refused or could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(
        "invalid \"from\" {0:?}: an extension is 1 to 64 letters, digits, '-', '_', '.' or '+'"
    )]
    InvalidFrom(String),
    #[error("invalid \"to\": {0}")]
    InvalidNumber(#[from] NumberError),
    #[error(
        "invalid Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters, no spaces"
    )]
    InvalidIdempotencyKey,
    #[error(
        "Idempotency-Key {0:?} was already used for a different request (other from, to or via); \
         use a new key for a new call"
    )]
    IdempotencyKeyReused(String),
    #[error(
        "no phone with extension {0:?} is known to the bridge; list it under [[phones]] (or let it \
         send an Action URL callback)"
    )]
    UnknownExtension(String),
    #[error(
        "too many dial requests for this {scope}: at most {} per {:?}; retry in {} s",
        .limit.limit, .limit.window, .retry_after.as_secs().max(1)
    )]
    RateLimited {
        scope: &'static str,
        limit: Limit,
        retry_after: Duration,
    },
    #[error("{0}")]
    NoPath(#[from] NoPath),
    /// Delivery to the phone (and the fallback, if any) failed; the request exists in state
    /// `failed`.
    #[error("the call could not be placed: {}", .0.message.as_deref().unwrap_or("failed"))]
    Failed(Box<DialStatus>),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl DialError {
    /// Machine-readable code for API error bodies.
    pub fn code(&self) -> &str {
        match self {
            DialError::InvalidFrom(_) => "invalid_from",
            DialError::InvalidNumber(_) => "invalid_number",
            DialError::InvalidIdempotencyKey => "invalid_idempotency_key",
            DialError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            DialError::UnknownExtension(_) => "unknown_extension",
            DialError::RateLimited { .. } => "rate_limited",
            DialError::NoPath(e) => e.code(),
            DialError::Failed(s) => s.reason.as_deref().unwrap_or("failed"),
            DialError::Store(_) | DialError::Internal(_) => "internal",
        }
    }

    /// The HTTP status it maps to.
    pub fn http_status(&self) -> u16 {
        match self {
            DialError::InvalidFrom(_)
            | DialError::InvalidNumber(_)
            | DialError::InvalidIdempotencyKey
            | DialError::IdempotencyKeyReused(_) => 422,
            DialError::UnknownExtension(_) => 404,
            DialError::RateLimited { .. } => 429,
            DialError::NoPath(_) | DialError::Failed(_) => 503,
            DialError::Store(_) | DialError::Internal(_) => 500,
        }
    }
}

/// What one side of a DND change did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TargetOutcome {
    /// The side now has the requested state (set now, or already so).
    pub applied: bool,
    /// Why the side was not attempted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Machine-readable code of a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was done or what went wrong, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl TargetOutcome {
    fn applied(message: String) -> Self {
        TargetOutcome {
            applied: true,
            message: Some(message),
            ..Self::default()
        }
    }

    fn skipped(why: String) -> Self {
        TargetOutcome {
            skipped: Some(why),
            ..Self::default()
        }
    }

    fn failed(code: &str, message: String) -> Self {
        TargetOutcome {
            error: Some(code.to_owned()),
            message: Some(message),
            ..Self::default()
        }
    }

    fn is_failure(&self) -> bool {
        self.error.is_some()
    }
}

/// The result of `PUT /api/v1/phones/{ext}/dnd`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DndOutcome {
    pub extension: String,
    pub enabled: bool,
    pub phone: TargetOutcome,
    /// `mode` is `[dnd] pbx_mode`.
    pub pbx: TargetOutcome,
    pub pbx_mode: &'static str,
}

/// Why a DND change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DndError {
    #[error("no phone with extension {0:?} is known to the bridge")]
    UnknownExtension(String),
    #[error(
        "DND cannot be set anywhere: the phone is skipped ({phone}) and the PBX is skipped ({pbx})"
    )]
    NothingToSet { phone: String, pbx: String },
    #[error("DND was not set everywhere: {}", describe_failure(.0))]
    Failed(Box<DndOutcome>),
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe_failure(o: &DndOutcome) -> String {
    let mut parts = Vec::new();
    for (side, t) in [("phone", &o.phone), ("PBX", &o.pbx)] {
        if t.is_failure() {
            parts.push(format!(
                "{side}: {}",
                t.message.as_deref().unwrap_or("failed")
            ));
        }
    }
    parts.join("; ")
}

impl DndError {
    pub fn code(&self) -> &'static str {
        match self {
            DndError::UnknownExtension(_) => "unknown_extension",
            DndError::NothingToSet { .. } => "no_target",
            DndError::Failed(_) => "dnd_failed",
            DndError::Internal(_) => "internal",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            DndError::UnknownExtension(_) => 404,
            DndError::NothingToSet { .. } | DndError::Failed(_) => 503,
            DndError::Internal(_) => 500,
        }
    }
}

/// Work for the store writer, in order.
enum Persist {
    Status {
        status: Box<DialStatus>,
        /// `(scope, key)` of the request's `Idempotency-Key`, on its first write.
        idempotency: Option<(String, String)>,
    },
    Flush(oneshot::Sender<()>),
}

/// The control handle; cheap to clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

struct Inner {
    dial: DialSettings,
    dnd: DndSettings,
    phones: PhoneRegistry,
    active_uri: ActiveUriClient,
    /// Whether phone commands can go as SIP NOTIFY (an AMI link exists).
    notify: bool,
    dial_ami: Option<AmiHandle>,
    dnd_ami: Option<AmiHandle>,
    store: Store,
    tracker: Mutex<DialTracker>,
    guard: Mutex<LoopGuard>,
    limits: Mutex<RateLimiter>,
    idempotency: Mutex<IdempotencyCache>,
    pbx_view: Mutex<pbx_view::PbxPhones>,
    updates: broadcast::Sender<DialStatus>,
    persist: mpsc::UnboundedSender<Persist>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The AMI handle of the `[[pbx]]` named `name` (the first when `None`).
fn pick_ami(ami: &[AmiHandle], name: Option<&str>) -> Option<AmiHandle> {
    match name {
        None => ami.first().cloned(),
        Some(n) => ami.iter().find(|h| &**h.pbx() == n).cloned(),
    }
}

impl Control {
    /// Starts the store writer; must run inside a Tokio runtime.
    pub fn new(
        settings: &Settings,
        phones: PhoneRegistry,
        active_uri: ActiveUriClient,
        ami: &[AmiHandle],
        store: Store,
    ) -> Control {
        let (persist, rx) = mpsc::unbounded_channel();
        tokio::spawn(persist_loop(store.clone(), rx));
        let (updates, _) = broadcast::channel(UPDATES_CAPACITY);
        let inner = Inner {
            dial: settings.dial.clone(),
            dnd: settings.dnd.clone(),
            pbx_view: Mutex::new(pbx_view::PbxPhones::new(&phones)),
            phones,
            active_uri,
            notify: !ami.is_empty(),
            dial_ami: pick_ami(ami, settings.dial.pbx.as_deref()),
            dnd_ami: pick_ami(ami, settings.dnd.pbx.as_deref()),
            store,
            tracker: Mutex::new(DialTracker::new(settings.dial.match_window)),
            guard: Mutex::new(LoopGuard::new(settings.dnd.loop_guard)),
            limits: Mutex::new(RateLimiter::default()),
            idempotency: Mutex::new(IdempotencyCache::new(settings.dial.idempotency_ttl)),
            updates,
            persist,
        };
        Control {
            inner: Arc::new(inner),
        }
    }

    /// Dial status changes as they happen (every change of every request). A subscriber that
    /// falls more than 1024 changes behind gets `Lagged` and misses some; the store and
    /// `GET /api/v1/dial/{id}` always have the latest.
    pub fn subscribe(&self) -> broadcast::Receiver<DialStatus> {
        self.inner.updates.subscribe()
    }

    /// Waits until every dial status change so far is in the store.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.persist.send(Persist::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// A request by id: in memory while recent, else from the store.
    pub async fn dial_status(&self, id: &str) -> Result<Option<DialStatus>, StoreError> {
        if let Some(s) = lock(&self.inner.tracker).get(id) {
            return Ok(Some(s));
        }
        self.inner.store.get_dial_request(id).await
    }

    fn publish(&self, changes: Vec<DialStatus>) {
        for status in changes {
            let _ = self.inner.updates.send(status.clone());
            let _ = self.inner.persist.send(Persist::Status {
                status: Box::new(status),
                idempotency: None,
            });
        }
    }

    // ----- the consumer's side: never waits on the network -----

    /// One journal entry, in journal order (called by the service's consumer task).
    pub fn on_input(&self, entry: &JournalEntry) {
        match &entry.input {
            Input::Ami { pbx, msg } => self.on_ami(entry.t, pbx, msg),
            Input::Phone { peer, target } => self.on_phone_input(entry.t, peer, target),
            Input::Gap { .. } => lock(&self.inner.pbx_view).on_gap(&self.inner.phones, entry.t),
        }
    }

    /// The correlator's outputs for the last input, before they are stored: records of
    /// click-to-call requests get their `dial_request_id`, DND callbacks are synced.
    pub fn on_outputs(&self, outputs: &mut [Output]) {
        for output in outputs.iter_mut() {
            match output {
                Output::CallStarted(r) | Output::CallUpdated(r) | Output::CallCompleted(r) => {
                    let changes = lock(&self.inner.tracker).annotate(r);
                    self.publish(changes);
                }
                Output::CallMerged { id, into } => {
                    let changes = lock(&self.inner.tracker).merged(id, into);
                    self.publish(changes);
                }
                Output::PhoneEvent {
                    at,
                    peer,
                    extension,
                    callback,
                } => {
                    let on = match callback.event {
                        ActionUrlEvent::DndOn => true,
                        ActionUrlEvent::DndOff => false,
                        _ => continue,
                    };
                    let ext = extension.clone().or_else(|| {
                        let ip = peer.parse::<IpAddr>().ok()?;
                        self.inner.phones.identify(ip, callback)
                    });
                    match ext {
                        Some(ext) => self.phone_reported_dnd(*at, &ext, on),
                        None => {
                            tracing::debug!(%peer, "DND callback from an unknown phone: not synced")
                        }
                    }
                }
            }
        }
    }

    fn on_ami(&self, t: DateTime<Utc>, pbx: &str, msg: &AmiMessage) {
        let Some(event) = msg.event_name() else {
            return;
        };
        let changes = {
            let mut tracker = lock(&self.inner.tracker);
            tracker.prune(t);
            tracker.on_ami(t, pbx, msg)
        };
        self.publish(changes);
        lock(&self.inner.pbx_view).on_ami(&self.inner.phones, t, event, msg);
        if event != "UserEvent" && event != "DeviceStateChange" {
            return;
        }
        if let Some((from, to, via)) = dial::cti_dial(msg) {
            self.cti_dial(t, pbx, from, to, via);
            return;
        }
        let dnd_pbx = self.inner.dnd_ami.as_ref().map(|h| h.pbx().to_string());
        if dnd_pbx.as_deref().is_some_and(|p| p != pbx) {
            return;
        }
        match dnd::pbx_dnd(msg, &self.inner.dnd) {
            Some(Ok(change)) => self.pbx_reported_dnd(t, &change),
            Some(Err(e)) => tracing::warn!(%pbx, "{e}"),
            None => {}
        }
    }

    fn on_phone_input(&self, t: DateTime<Utc>, peer: &str, target: &str) {
        if !lock(&self.inner.tracker).follows_phone_dials() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let Some(event) = path.rsplit('/').find(|s| !s.is_empty()) else {
            return;
        };
        let cb: PhoneCallback = parse_callback(event, query.as_bytes());
        if !cb.event.is_call_event() {
            return;
        }
        let Some(ext) = peer
            .parse::<IpAddr>()
            .ok()
            .and_then(|ip| self.inner.phones.identify(ip, &cb))
        else {
            return;
        };
        let changes = lock(&self.inner.tracker).on_phone(t, &ext, &cb);
        self.publish(changes);
    }

    fn cti_dial(&self, t: DateTime<Utc>, pbx: &str, from: String, to: String, via: Option<String>) {
        if Utc::now() - t > STALE_INPUT {
            tracing::info!(%pbx, %from, %to, "old CtiDial user event (journal replay): not dialled");
            return;
        }
        let via = match via.as_deref() {
            None | Some("") => None,
            Some("auto") => Some(DialVia::Auto),
            Some("phone") => Some(DialVia::Phone),
            Some("pbx") => Some(DialVia::Pbx),
            Some(other) => {
                tracing::warn!(%pbx, %from, via = other, "CtiDial with an unknown Via (auto, phone or pbx): not dialled");
                return;
            }
        };
        tracing::info!(%pbx, %from, %to, "click-to-call from the PBX (UserEvent CtiDial)");
        let me = self.clone();
        tokio::spawn(async move {
            let req = DialRequest {
                from: from.clone(),
                to,
                via,
                origin: DialOrigin::Pbx,
                token: None,
                idempotency_key: None,
            };
            match me.dial(req).await {
                Ok(s) => {
                    tracing::info!(request_id = %s.request_id, via = dial::via_name(s.via), "CtiDial request placed")
                }
                Err(e) => {
                    tracing::warn!(%from, code = e.code(), error = %e, "CtiDial request refused")
                }
            }
        });
    }

    // ----- click-to-call -----

    /// Places a click-to-call request and waits until the phone or Asterisk accepted it (or
    /// refused). Runs detached: a caller that goes away does not leave a call half-placed.
    pub async fn dial(&self, req: DialRequest) -> Result<DialStatus, DialError> {
        let me = self.clone();
        tokio::spawn(async move { me.dial_detached(req).await })
            .await
            .unwrap_or_else(|e| Err(DialError::Internal(e.to_string())))
    }

    async fn dial_detached(&self, req: DialRequest) -> Result<DialStatus, DialError> {
        let from = req.from.trim().to_owned();
        if !valid_extension(&from) {
            return Err(DialError::InvalidFrom(req.from.clone()));
        }
        let number = normalize_number(&req.to)?;
        let via = req.via.unwrap_or(self.inner.dial.default_via);
        let fingerprint = format!("{from}\n{number}\n{}", dial::via_name(via));
        let mut reservation = None;
        if let Some(key) = req.idempotency_key.as_deref() {
            if key.is_empty()
                || key.len() > MAX_IDEMPOTENCY_KEY
                || !key.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(DialError::InvalidIdempotencyKey);
            }
            let scope = req.token.clone().unwrap_or_else(|| "pbx".into());
            loop {
                let begin =
                    lock(&self.inner.idempotency).begin(&scope, key, &fingerprint, Instant::now());
                match begin {
                    Begin::New => break,
                    Begin::Wait(mut rx) => {
                        let _ = rx.changed().await;
                    }
                    Begin::Replay {
                        request_id,
                        accepted,
                    } => return self.replay(&request_id, accepted).await,
                    Begin::Mismatch => return Err(DialError::IdempotencyKeyReused(key.to_owned())),
                }
            }
            let r = Reservation {
                control: self.clone(),
                scope: scope.clone(),
                key: key.to_owned(),
                fingerprint: fingerprint.clone(),
                done: false,
            };
            // After a restart the store still knows the key.
            let since = Utc::now()
                - TimeDelta::from_std(self.inner.dial.idempotency_ttl).unwrap_or(TimeDelta::MAX);
            if let Some(old) = self
                .inner
                .store
                .find_dial_by_idempotency(&scope_id(&scope), key, since)
                .await?
            {
                let same = old.from == from && old.number == number && old.via_requested == via;
                if !same {
                    return Err(DialError::IdempotencyKeyReused(key.to_owned()));
                }
                r.finish(&old.request_id, old.delivered);
                return self.replay(&old.request_id, old.delivered).await;
            }
            reservation = Some(r);
        }

        let info = self
            .inner
            .phones
            .get(&from)
            .ok_or_else(|| DialError::UnknownExtension(from.clone()))?;
        let command = PhoneCommand::Dial {
            number: req.to.clone(),
            line: None,
        };
        let facts = PhoneFacts {
            commandable: self.commandable(&info, &command),
            reachable: info.state.reachable,
        };
        let plan = choose(via, &facts, &self.pbx_available())?;
        self.check_limits(req.token.as_deref(), &from)?;

        let id = new_request_id();
        let first = match plan {
            Plan::Phone { .. } => DialVia::Phone,
            Plan::Pbx => DialVia::Pbx,
        };
        let status = DialStatus::new(
            id.clone(),
            from.clone(),
            req.to.clone(),
            number,
            via,
            first,
            req.origin,
            Utc::now(),
        );
        let status = lock(&self.inner.tracker).insert(status, endpoint_of_phone(&info));
        let _ = self.inner.updates.send(status.clone());
        let _ = self.inner.persist.send(Persist::Status {
            status: Box::new(status),
            idempotency: reservation
                .as_ref()
                .map(|r| (scope_id(&r.scope), r.key.clone())),
        });
        tracing::info!(request_id = %id, %from, via = dial::via_name(first), "dial request");

        let delivered = match plan {
            Plan::Phone { fallback } => match self.phone_dial(&id, &from, command).await {
                Ok(()) => Ok(()),
                Err(e) if fallback && !e.is_caller_error() => {
                    let why = format!("{}: {e}", e.code());
                    let changes = lock(&self.inner.tracker).attempt(
                        &id,
                        Utc::now(),
                        DialVia::Pbx,
                        None,
                        Some(why),
                    );
                    self.publish(changes);
                    self.originate(&id, &info).await
                }
                Err(e) => Err((e.code().to_owned(), e.to_string())),
            },
            Plan::Pbx => self.originate(&id, &info).await,
        };
        let accepted = delivered.is_ok();
        if let Err((code, message)) = delivered {
            let changes = lock(&self.inner.tracker).fail(
                &id,
                Utc::now(),
                &code,
                format!("not delivered: {message}"),
            );
            self.publish(changes);
        }
        if let Some(r) = reservation {
            r.finish(&id, accepted);
        }
        let status = lock(&self.inner.tracker)
            .get(&id)
            .ok_or_else(|| DialError::Internal("request vanished".into()))?;
        if accepted {
            Ok(status)
        } else {
            Err(DialError::Failed(Box::new(status)))
        }
    }

    /// The answer to a repeated `Idempotency-Key`: the first request as it is now.
    async fn replay(&self, request_id: &str, accepted: bool) -> Result<DialStatus, DialError> {
        let status = self
            .dial_status(request_id)
            .await?
            .ok_or_else(|| DialError::Internal(format!("request {request_id} is not stored")))?;
        if accepted {
            Ok(status)
        } else {
            Err(DialError::Failed(Box::new(status)))
        }
    }

    /// Whether `cmd` can be sent to the phone at all (configured, vendor supports it, not
    /// locked after an authentication failure, NOTIFY available when needed).
    fn commandable(&self, info: &PhoneInfo, cmd: &PhoneCommand) -> Result<(), String> {
        let vendor = match (info.configured, info.vendor) {
            (true, Some(v)) => v,
            _ => {
                return Err(format!(
                    "phone {} is known only from its Action URL callbacks; add it under [[phones]] to command it",
                    info.extension
                ))
            }
        };
        if let Some(reason) = &info.state.auth_failed {
            return Err(format!(
                "commands to phone {} are paused after an authentication failure ({reason})",
                info.extension
            ));
        }
        let ctx = CommandContext {
            extension: info.extension.clone(),
            account: info.account.clone(),
            line: info.line,
            pbx_host: "pbx".into(),
            password: info.password.clone(),
            key_style: Default::default(),
        };
        let p = profile(vendor);
        let checked = match info.transport {
            PhoneTransport::Http | PhoneTransport::Auto => p.http_requests(cmd, &ctx).map(|_| ()),
            PhoneTransport::Notify if !self.inner.notify => Err(CommandError::NoNotifyTransport),
            PhoneTransport::Notify => p.notify_body(cmd, &ctx).map(|_| ()),
        };
        checked.map_err(|e| e.to_string())
    }

    fn pbx_available(&self) -> Result<(), String> {
        match &self.inner.dial_ami {
            None => Err("no [[pbx]] is configured".into()),
            Some(h) => {
                let status = h.status();
                if status.up {
                    Ok(())
                } else {
                    Err(format!(
                        "the AMI link to {} is down{}",
                        h.pbx(),
                        status
                            .last_error
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    ))
                }
            }
        }
    }

    fn check_limits(&self, token: Option<&str>, from: &str) -> Result<(), DialError> {
        let d = &self.inner.dial;
        let mut checks = vec![(
            "phone",
            from,
            Limit {
                limit: d.rate_limit_per_phone,
                window: d.rate_window,
            },
        )];
        if let Some(token) = token {
            checks.insert(
                0,
                (
                    "token",
                    token,
                    Limit {
                        limit: d.rate_limit_per_token,
                        window: d.rate_window,
                    },
                ),
            );
        }
        lock(&self.inner.limits)
            .take(&checks, Instant::now())
            .map_err(|l| DialError::RateLimited {
                scope: l.scope,
                limit: l.limit,
                retry_after: l.retry_after,
            })
    }

    async fn phone_dial(
        &self,
        id: &str,
        from: &str,
        cmd: PhoneCommand,
    ) -> Result<(), CommandError> {
        let outcome = self.inner.active_uri.execute(from, cmd).await?;
        let how = match outcome.status {
            Some(code) => format!("HTTP {code}"),
            None => "SIP NOTIFY".into(),
        };
        let changes = lock(&self.inner.tracker).sent(
            id,
            Utc::now(),
            format!("the phone accepted the dial ({how})"),
        );
        self.publish(changes);
        Ok(())
    }

    /// AMI `Originate` for request `id`. Err is `(code, message)`.
    async fn originate(&self, id: &str, info: &PhoneInfo) -> Result<(), (String, String)> {
        let ami = match (&self.inner.dial_ami, self.pbx_available()) {
            (Some(ami), Ok(())) => ami.clone(),
            (_, Err(why)) => return Err(("pbx_unavailable".into(), why)),
            (None, Ok(())) => return Err(("pbx_unavailable".into(), "no [[pbx]]".into())),
        };
        let d = &self.inner.dial;
        let (from, number) = {
            let tracker = lock(&self.inner.tracker);
            let s = tracker
                .get(id)
                .ok_or_else(|| ("internal".to_owned(), "request vanished".to_owned()))?;
            (s.from, s.number)
        };
        let endpoint = endpoint_of_phone(info);
        let channel = d
            .channel
            .replace("{ext}", &from)
            .replace("{endpoint}", &endpoint);
        let caller_id = d
            .caller_id
            .replace("{to}", &number)
            .replace("{from}", &from);
        let action = AmiMessage::action("Originate")
            .field("Channel", channel.clone())
            .field("Exten", number.clone())
            .field("Context", d.context.clone())
            .field("Priority", d.priority.to_string())
            .field("CallerID", caller_id)
            .field("Timeout", d.originate_timeout.as_millis().to_string())
            .field("Async", "true")
            .field("ChannelId", id)
            .field("Variable", format!("__{}={id}", dial::REQUEST_ID_VAR));
        {
            let mut tracker = lock(&self.inner.tracker);
            let changes = tracker.attempt(
                id,
                Utc::now(),
                DialVia::Pbx,
                Some(ami.pbx().to_string()),
                None,
            );
            tracker.bind_channel(id, id, ami.pbx());
            drop(tracker);
            self.publish(changes);
        }
        match ami.send_action(action).await {
            Ok(resp) if resp.is_success() => {
                let mut changes = Vec::new();
                {
                    let mut tracker = lock(&self.inner.tracker);
                    if let Some(action_id) = resp.response.action_id() {
                        changes.extend(tracker.bind_action(id, action_id));
                    }
                    changes.extend(tracker.sent(
                        id,
                        Utc::now(),
                        format!("Asterisk queued the Originate ({channel} → {number})"),
                    ));
                }
                self.publish(changes);
                Ok(())
            }
            Ok(resp) => Err((
                "originate_refused".into(),
                format!(
                    "Asterisk refused the Originate: {}",
                    resp.response.get("Message").unwrap_or("no message")
                ),
            )),
            Err(e) => Err(("pbx_unavailable".into(), e.to_string())),
        }
    }

    // ----- DND -----

    /// Sets DND of `ext` on its phone and, in the configured mode, on the PBX. Runs detached.
    pub async fn set_dnd(&self, ext: &str, enabled: bool) -> Result<DndOutcome, DndError> {
        let me = self.clone();
        let ext = ext.to_owned();
        tokio::spawn(async move { me.set_dnd_detached(&ext, enabled).await })
            .await
            .unwrap_or_else(|e| Err(DndError::Internal(e.to_string())))
    }

    async fn set_dnd_detached(&self, ext: &str, enabled: bool) -> Result<DndOutcome, DndError> {
        let info = self
            .inner
            .phones
            .get(ext)
            .ok_or_else(|| DndError::UnknownExtension(ext.to_owned()))?;
        let cmd = if enabled {
            PhoneCommand::DndOn
        } else {
            PhoneCommand::DndOff
        };
        let phone_ok = self.commandable(&info, &cmd);
        let pbx_ok = self.dnd_pbx_available();
        if let (Err(phone), Err(pbx)) = (&phone_ok, &pbx_ok) {
            return Err(DndError::NothingToSet {
                phone: phone.clone(),
                pbx: pbx.clone(),
            });
        }
        let phone = async {
            match &phone_ok {
                Ok(()) => self.push_phone_dnd(&info, enabled).await,
                Err(why) => TargetOutcome::skipped(why.clone()),
            }
        };
        let pbx = async {
            match &pbx_ok {
                Ok(()) => self.push_pbx_dnd(ext, enabled).await,
                Err(why) => TargetOutcome::skipped(why.clone()),
            }
        };
        let (phone, pbx) = tokio::join!(phone, pbx);
        let outcome = DndOutcome {
            extension: ext.to_owned(),
            enabled,
            phone,
            pbx,
            pbx_mode: dnd::mode_name(self.inner.dnd.pbx_mode),
        };
        tracing::info!(extension = ext, enabled, phone = ?outcome.phone, pbx = ?outcome.pbx, "DND set through the API");
        if outcome.phone.is_failure() || outcome.pbx.is_failure() {
            Err(DndError::Failed(Box::new(outcome)))
        } else {
            Ok(outcome)
        }
    }

    fn dnd_pbx_available(&self) -> Result<(), String> {
        if self.inner.dnd.pbx_mode == DndPbxMode::None {
            return Err("[dnd] pbx_mode is \"none\"".into());
        }
        match &self.inner.dnd_ami {
            None => Err("no [[pbx]] is configured".into()),
            Some(h) if h.status().up => Ok(()),
            Some(h) => Err(format!("the AMI link to {} is down", h.pbx())),
        }
    }

    /// Sends DND to the phone, expecting its echo.
    async fn push_phone_dnd(&self, info: &PhoneInfo, on: bool) -> TargetOutcome {
        let ext = info.extension.as_str();
        // Snom has only a DND toggle: pressing it when the phone is already there would
        // switch DND the wrong way.
        if info.vendor == Some(PhoneVendor::Snom) && info.state.dnd == Some(on) {
            return TargetOutcome::applied(
                "the phone already reports this state (Snom has only a toggle)".into(),
            );
        }
        lock(&self.inner.guard).writing(ext, Side::Phone, on, Utc::now());
        let cmd = if on {
            PhoneCommand::DndOn
        } else {
            PhoneCommand::DndOff
        };
        match self.inner.active_uri.execute(ext, cmd).await {
            Ok(outcome) => {
                self.inner.phones.set_dnd(ext, on);
                TargetOutcome::applied(match outcome.status {
                    Some(code) => format!("the phone answered HTTP {code}"),
                    None => "sent as SIP NOTIFY".into(),
                })
            }
            Err(e) => TargetOutcome::failed(e.code(), e.to_string()),
        }
    }

    /// Writes DND to the PBX in the configured mode, expecting its echo.
    async fn push_pbx_dnd(&self, ext: &str, on: bool) -> TargetOutcome {
        let (Some(ami), Some(action)) = (
            self.inner.dnd_ami.clone(),
            dnd::pbx_action(&self.inner.dnd, ext, on),
        ) else {
            return TargetOutcome::skipped("[dnd] pbx_mode is \"none\"".into());
        };
        lock(&self.inner.guard).writing(ext, Side::Pbx, on, Utc::now());
        match ami.send_action(action).await {
            Ok(resp) if resp.is_success() => {
                self.inner
                    .phones
                    .update_pbx(ext, Utc::now(), |v| v.dnd = Some(on));
                TargetOutcome::applied(format!(
                    "{} on {}",
                    dnd::mode_name(self.inner.dnd.pbx_mode),
                    ami.pbx()
                ))
            }
            Ok(resp) => TargetOutcome::failed(
                "pbx_refused",
                format!(
                    "Asterisk refused: {}",
                    resp.response.get("Message").unwrap_or("no message")
                ),
            ),
            Err(e) => TargetOutcome::failed("pbx_unavailable", e.to_string()),
        }
    }

    /// A phone's own DND callback: pushed to the PBX unless it is our echo.
    fn phone_reported_dnd(&self, t: DateTime<Utc>, ext: &str, on: bool) {
        let verdict = lock(&self.inner.guard).report(ext, Side::Phone, on, t);
        if verdict != Verdict::New {
            tracing::debug!(
                extension = ext,
                on,
                ?verdict,
                "phone DND report not pushed to the PBX"
            );
            return;
        }
        if Utc::now() - t > STALE_INPUT || self.dnd_pbx_available().is_err() {
            return;
        }
        tracing::info!(extension = ext, on, "phone changed DND: pushing to the PBX");
        let me = self.clone();
        let ext = ext.to_owned();
        tokio::spawn(async move {
            let outcome = me.push_pbx_dnd(&ext, on).await;
            if outcome.is_failure() {
                tracing::warn!(extension = %ext, on, ?outcome, "DND push to the PBX failed");
            }
        });
    }

    /// A PBX-side DND change: shown, and pushed to the phone unless it is our echo.
    fn pbx_reported_dnd(&self, t: DateTime<Utc>, change: &dnd::PbxDnd) {
        let ext = change.extension.as_str();
        let on = change.on;
        self.inner.phones.update_pbx(ext, t, |v| v.dnd = Some(on));
        let verdict = lock(&self.inner.guard).report(ext, Side::Pbx, on, t);
        if verdict != Verdict::New {
            tracing::debug!(
                extension = ext,
                on,
                source = change.source,
                ?verdict,
                "PBX DND report not pushed to the phone"
            );
            return;
        }
        if Utc::now() - t > STALE_INPUT {
            return;
        }
        let Some(info) = self.inner.phones.get(ext) else {
            tracing::info!(
                extension = ext,
                source = change.source,
                "DND change on the PBX for an unknown phone"
            );
            return;
        };
        let cmd = if on {
            PhoneCommand::DndOn
        } else {
            PhoneCommand::DndOff
        };
        if let Err(why) = self.commandable(&info, &cmd) {
            tracing::info!(extension = ext, on, source = change.source, %why, "PBX changed DND; the phone cannot follow");
            return;
        }
        tracing::info!(
            extension = ext,
            on,
            source = change.source,
            "PBX changed DND: pushing to the phone"
        );
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = me.push_phone_dnd(&info, on).await;
            if outcome.is_failure() {
                tracing::warn!(extension = %info.extension, on, ?outcome, "DND push to the phone failed");
            }
        });
    }
}

/// An `Idempotency-Key` in flight; released (the key stays free) unless finished.
struct Reservation {
    control: Control,
    scope: String,
    key: String,
    fingerprint: String,
    done: bool,
}

impl Reservation {
    fn finish(mut self, request_id: &str, accepted: bool) {
        self.done = true;
        lock(&self.control.inner.idempotency).finish(
            &self.scope,
            &self.key,
            &self.fingerprint,
            request_id,
            accepted,
            Instant::now(),
        );
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.control.inner.idempotency).abandon(&self.scope, &self.key);
        }
    }
}

/// The store keeps a digest of the token, never the token, as an idempotency scope.
fn scope_id(scope: &str) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(b"ctibridge-idempotency:");
    h.update(scope.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `dr_` + 24 random hex digits. Also the `Uniqueid` of an originated channel (`ChannelId`),
/// so only characters every Asterisk accepts there.
fn new_request_id() -> String {
    format!(
        "dr_{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

fn valid_extension(ext: &str) -> bool {
    !ext.is_empty()
        && ext.len() <= 64
        && ext
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

/// The phone's PJSIP endpoint: its account's user part when set, else the extension.
fn endpoint_of_phone(info: &PhoneInfo) -> String {
    info.account
        .as_deref()
        .map(|a| a.split('@').next().unwrap_or(a))
        .filter(|a| !a.is_empty())
        .unwrap_or(&info.extension)
        .to_owned()
}

/// The store writer: dial status rows in the order of the changes.
async fn persist_loop(store: Store, mut rx: mpsc::UnboundedReceiver<Persist>) {
    while let Some(job) = rx.recv().await {
        match job {
            Persist::Status {
                status,
                idempotency,
            } => {
                let idem = idempotency.as_ref().map(|(s, k)| (s.as_str(), k.as_str()));
                if let Err(e) = store.upsert_dial_request(&status, idem).await {
                    tracing::error!(request_id = %status.request_id, error = %e, "storing a dial request failed");
                }
            }
            Persist::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_extensions() {
        let a = new_request_id();
        assert_eq!(a.len(), 27);
        assert!(a.starts_with("dr_") && a[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_request_id());
        assert!(valid_extension("101") && valid_extension("sales-1"));
        assert!(!valid_extension("") && !valid_extension("1 01") && !valid_extension("1/2"));
        assert_eq!(scope_id("tok").len(), 32);
        assert_ne!(scope_id("tok"), scope_id("tok2"));
    }

    #[test]
    fn errors_map_to_statuses_and_codes() {
        let e = DialError::InvalidNumber(NumberError::Empty);
        assert_eq!((e.http_status(), e.code()), (422, "invalid_number"));
        let e = DialError::UnknownExtension("9".into());
        assert_eq!((e.http_status(), e.code()), (404, "unknown_extension"));
        let e = DialError::RateLimited {
            scope: "phone",
            limit: Limit {
                limit: 2,
                window: Duration::from_secs(60),
            },
            retry_after: Duration::from_secs(30),
        };
        assert_eq!((e.http_status(), e.code()), (429, "rate_limited"));
        assert!(e.to_string().contains("at most 2 per 60s"), "{e}");
        let e = DialError::NoPath(NoPath::Phone("x".into()));
        assert_eq!((e.http_status(), e.code()), (503, "phone_unavailable"));
    }
}
