//! Click-to-call decisions and bookkeeping, as plain synchronous code (time is passed in):
//! which path a request takes ([`choose`]), and what became of it ([`DialTracker`]).
//!
//! A request's life: `pending` (being delivered) → `sent` (the phone or Asterisk accepted it)
//! → `ringing` → `answered`, or `failed` with a reason at any point before `answered`. An
//! answered request gets `ended_at` when its call is over. States only move forward.
//!
//! How the tracker knows which call is the request's:
//! - **PBX dials** (AMI `Originate`): the Originate presets the new channel's `Uniqueid` to the
//!   request id (`ChannelId`) and sets the channel variable `CTIBRIDGE_REQUEST_ID`; either one
//!   (the id, a `VarSet`, a `ChanVariable`) binds the channel, and its `Linkedid` binds the
//!   rest of the call. The `OriginateResponse` is matched by the channel id, else by the
//!   action's `ActionID` (kept a while if it arrives before the action's reply did).
//! - **Phone dials**: the phone places the call itself, so there is no variable. The first
//!   channel of the phone's PJSIP endpoint whose `Exten` is the dialled number, seen within
//!   `[dial] match_window` after the request, is the request's call. The phone's own
//!   callbacks (`outgoing_call`, `call_established`, …) move the state too.
//!
//! The call record of a bound call gets the request id as `dial_request_id`
//! ([`DialTracker::annotate`]), so a phone dial's record carries it like an Originate's.

use crate::ami::AmiMessage;
use crate::config::DialVia;
use crate::phone::action_url::{number_of, ActionUrlEvent, PhoneCallback};
use crate::record::CallRecord;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

/// The channel variable carrying the request id (the correlator reads it too).
pub const REQUEST_ID_VAR: &str = "CTIBRIDGE_REQUEST_ID";
/// Steps kept per request; later ones are dropped (the state is still updated).
const MAX_HISTORY: usize = 32;
/// How long an `OriginateResponse` that nobody claimed yet is kept for a late [`DialTracker::bind_action`].
const EARLY_TTL: TimeDelta = TimeDelta::seconds(60);
/// Unclaimed `OriginateResponse`s kept at most.
const EARLY_MAX: usize = 256;
/// A phone's call may show up this much *before* the request time (clock granularity between
/// the API task and the AMI receive time).
const MATCH_SKEW: TimeDelta = TimeDelta::seconds(2);
/// Requests are forgotten (in memory; the store keeps them) this long after their last change.
pub const RETENTION: TimeDelta = TimeDelta::hours(1);

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum DialState {
    /// Being delivered to the phone or to Asterisk.
    Pending,
    /// The phone (HTTP 2xx / NOTIFY sent) or Asterisk (`Originate successfully queued`)
    /// accepted it.
    Sent,
    /// The from-phone (PBX dial) or the destination is ringing.
    Ringing,
    /// The destination answered.
    Answered,
    /// It did not happen; `reason` says why.
    Failed,
}

impl DialState {
    pub fn as_str(self) -> &'static str {
        match self {
            DialState::Pending => "pending",
            DialState::Sent => "sent",
            DialState::Ringing => "ringing",
            DialState::Answered => "answered",
            DialState::Failed => "failed",
        }
    }
}

/// Who asked for the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DialOrigin {
    /// `POST /api/v1/dial`.
    Api,
    /// AMI `UserEvent: CtiDial` (dialplan or another AMI client).
    Pbx,
}

/// One step in a request's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DialStep {
    pub at: DateTime<Utc>,
    /// The state after this step.
    pub state: DialState,
    pub detail: String,
}

/// A click-to-call request as the API shows it (`GET /api/v1/dial/{request_id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DialStatus {
    pub request_id: String,
    pub state: DialState,
    /// Machine-readable reason when `failed` (`from_no_answer`, `busy`, `unreachable`, …).
    pub reason: Option<String>,
    /// What happened, in words, when `failed`.
    pub message: Option<String>,
    /// The extension that calls.
    pub from: String,
    /// The number as given.
    pub to: String,
    /// The number as dialled (separators removed).
    pub number: String,
    pub via_requested: DialVia,
    /// The path taken: `phone` or `pbx`.
    pub via: DialVia,
    /// The phone or Asterisk accepted the command (what the `202` of the POST means).
    pub delivered: bool,
    /// Why `auto` left the phone for the PBX, when it did.
    pub fallback: Option<String>,
    pub origin: DialOrigin,
    /// The PBX the call is on, once known.
    pub pbx: Option<String>,
    /// `Linkedid` of the call on the PBX, once known.
    pub linkedid: Option<String>,
    /// Id of the call record (`GET /api/v1/calls/{id}`), once the call has one.
    pub record_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    /// When the answered call ended.
    pub ended_at: Option<DateTime<Utc>>,
    pub history: Vec<DialStep>,
}

impl DialStatus {
    /// A new request in state `pending`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        request_id: String,
        from: String,
        to: String,
        number: String,
        via_requested: DialVia,
        via: DialVia,
        origin: DialOrigin,
        at: DateTime<Utc>,
    ) -> DialStatus {
        DialStatus {
            request_id,
            state: DialState::Pending,
            reason: None,
            message: None,
            from,
            to,
            number,
            via_requested,
            via,
            delivered: false,
            fallback: None,
            origin,
            pbx: None,
            linkedid: None,
            record_id: None,
            created_at: at,
            updated_at: at,
            answered_at: None,
            ended_at: None,
            history: vec![DialStep {
                at,
                state: DialState::Pending,
                detail: format!("requested via {}", via_name(via_requested)),
            }],
        }
    }

    /// Nothing more will happen to it.
    pub fn is_over(&self) -> bool {
        self.state == DialState::Failed || self.ended_at.is_some()
    }

    fn step(&mut self, at: DateTime<Utc>, detail: String) {
        self.updated_at = self.updated_at.max(at);
        if self.history.len() < MAX_HISTORY {
            self.history.push(DialStep {
                at,
                state: self.state,
                detail,
            });
        }
    }

    /// Moves forward to `state`; false when it is not forward or the request is over.
    fn advance(&mut self, at: DateTime<Utc>, state: DialState, detail: String) -> bool {
        if self.is_over() || state <= self.state || state == DialState::Failed {
            return false;
        }
        self.state = state;
        if state == DialState::Answered {
            self.answered_at = Some(at);
        }
        self.step(at, detail);
        true
    }

    /// Fails the request unless it was already answered or over.
    fn fail(&mut self, at: DateTime<Utc>, reason: &str, message: String) -> bool {
        if self.is_over() || self.state == DialState::Answered {
            return false;
        }
        self.state = DialState::Failed;
        self.reason = Some(reason.to_owned());
        self.message = Some(message.clone());
        self.step(at, message);
        true
    }

    /// The answered call is over.
    fn end(&mut self, at: DateTime<Utc>, detail: String) -> bool {
        if self.state != DialState::Answered || self.ended_at.is_some() {
            return false;
        }
        self.ended_at = Some(at);
        self.step(at, detail);
        true
    }
}

/// `auto`, `phone`, `pbx`.
pub fn via_name(via: DialVia) -> &'static str {
    match via {
        DialVia::Auto => "auto",
        DialVia::Phone => "phone",
        DialVia::Pbx => "pbx",
    }
}

/// What the bridge knows about the from-extension's phone, for [`choose`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneFacts {
    /// `Ok` when a dial command can be sent to it; else why not.
    pub commandable: Result<(), String>,
    /// The last command's outcome (`None`: never tried).
    pub reachable: Option<bool>,
}

/// The path for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Send the dial to the phone; on failure, originate on the PBX when `fallback`.
    Phone { fallback: bool },
    /// Originate on the PBX.
    Pbx,
}

/// Why no path is available.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoPath {
    #[error("the phone cannot dial: {0}")]
    Phone(String),
    #[error("the PBX cannot originate: {0}")]
    Pbx(String),
    #[error("the phone cannot dial ({phone}) and the PBX cannot originate ({pbx})")]
    Neither { phone: String, pbx: String },
}

impl NoPath {
    /// Machine-readable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            NoPath::Phone(_) => "phone_unavailable",
            NoPath::Pbx(_) => "pbx_unavailable",
            NoPath::Neither { .. } => "no_path",
        }
    }
}

/// Chooses the path. `auto` takes the phone when it can dial and is not known to be
/// unreachable (or when the PBX cannot originate either, as a last try), with the PBX as
/// fallback; else the PBX.
pub fn choose(via: DialVia, phone: &PhoneFacts, pbx: &Result<(), String>) -> Result<Plan, NoPath> {
    match via {
        DialVia::Phone => match &phone.commandable {
            Ok(()) => Ok(Plan::Phone { fallback: false }),
            Err(why) => Err(NoPath::Phone(why.clone())),
        },
        DialVia::Pbx => match pbx {
            Ok(()) => Ok(Plan::Pbx),
            Err(why) => Err(NoPath::Pbx(why.clone())),
        },
        DialVia::Auto => match (&phone.commandable, pbx) {
            (Ok(()), Ok(())) if phone.reachable == Some(false) => Ok(Plan::Pbx),
            (Ok(()), Ok(())) => Ok(Plan::Phone { fallback: true }),
            (Ok(()), Err(_)) => Ok(Plan::Phone { fallback: false }),
            (Err(_), Ok(())) => Ok(Plan::Pbx),
            (Err(p), Err(b)) => Err(NoPath::Neither {
                phone: p.clone(),
                pbx: b.clone(),
            }),
        },
    }
}

/// `UserEvent: CtiDial` with `From` and `To` (and optionally `Via`): a click-to-call request
/// from the PBX. Returns `(from, to, via)`.
pub fn cti_dial(msg: &AmiMessage) -> Option<(String, String, Option<String>)> {
    if !msg.event_name()?.eq_ignore_ascii_case("UserEvent")
        || !msg.get("UserEvent")?.eq_ignore_ascii_case("CtiDial")
    {
        return None;
    }
    let from = msg.get("From")?.trim().to_owned();
    let to = msg.get("To")?.trim().to_owned();
    let via = msg.get("Via").map(|v| v.trim().to_ascii_lowercase());
    Some((from, to, via))
}

/// The PJSIP endpoint of a channel name: `PJSIP/101-0000000a` → `101`.
pub fn endpoint_of(channel: &str) -> Option<&str> {
    let (_, rest) = channel.split_once('/')?;
    let name = match rest.rsplit_once('-') {
        Some((name, suffix))
            if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            name
        }
        _ => rest,
    };
    (!name.is_empty()).then_some(name)
}

/// Whether an AMI `Exten` (or a phone's remote party) is the dialled number: the same
/// dialable characters, a leading `+` optional on either side.
pub fn same_number(seen: &str, dialled: &str) -> bool {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_digit() || matches!(c, '*' | '#'))
            .collect()
    };
    let seen = clean(number_of(seen));
    !seen.is_empty() && seen == clean(dialled)
}

/// One tracked request and what binds calls to it.
#[derive(Debug)]
struct Tracked {
    status: DialStatus,
    /// The from-phone's PJSIP endpoint (a phone dial's channel is recognised by it).
    endpoint: String,
    /// The request's first channel on the PBX (the Originate's, or the phone's outgoing one).
    origin_uid: Option<String>,
    /// Channels of the call not hung up yet.
    live: BTreeSet<String>,
    /// The last `DialStatus` of a dial from the call that did not answer.
    last_dial_status: Option<String>,
}

/// An `OriginateResponse` nobody claimed yet.
#[derive(Clone, Debug)]
struct EarlyOriginate {
    at: DateTime<Utc>,
    action_id: String,
    success: bool,
    reason: Option<u32>,
}

/// Tracks click-to-call requests from AMI events, phone callbacks and call records. Every
/// method returns the requests it changed, as they are now.
#[derive(Debug)]
pub struct DialTracker {
    requests: HashMap<String, Tracked>,
    by_uid: HashMap<String, String>,
    by_linkedid: HashMap<String, String>,
    by_action: HashMap<String, String>,
    early: VecDeque<EarlyOriginate>,
    /// Phone dials whose call has not been seen yet, oldest first.
    awaiting_call: Vec<String>,
    match_window: TimeDelta,
    last_prune: Option<DateTime<Utc>>,
}

impl DialTracker {
    /// `match_window`: how soon after a phone dial its call must appear (`[dial] match_window`).
    pub fn new(match_window: Duration) -> DialTracker {
        DialTracker {
            requests: HashMap::new(),
            by_uid: HashMap::new(),
            by_linkedid: HashMap::new(),
            by_action: HashMap::new(),
            early: VecDeque::new(),
            awaiting_call: Vec::new(),
            match_window: TimeDelta::from_std(match_window).unwrap_or(TimeDelta::MAX),
            last_prune: None,
        }
    }

    /// Requests held in memory.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Whether a phone dial is still going on (only then do phone call callbacks matter).
    pub fn follows_phone_dials(&self) -> bool {
        self.requests
            .values()
            .any(|t| t.status.via == DialVia::Phone && !t.status.is_over())
    }

    /// A request by id.
    pub fn get(&self, id: &str) -> Option<DialStatus> {
        self.requests.get(id).map(|t| t.status.clone())
    }

    /// Starts tracking a request. `endpoint` is the from-phone's PJSIP endpoint.
    pub fn insert(&mut self, status: DialStatus, endpoint: String) -> DialStatus {
        let id = status.request_id.clone();
        if status.via == DialVia::Phone {
            self.awaiting_call.push(id.clone());
        }
        self.requests.insert(
            id,
            Tracked {
                status: status.clone(),
                endpoint,
                origin_uid: None,
                live: BTreeSet::new(),
                last_dial_status: None,
            },
        );
        status
    }

    /// The request is now attempted on `via` (a fallback from the phone to the PBX says why).
    pub fn attempt(
        &mut self,
        id: &str,
        at: DateTime<Utc>,
        via: DialVia,
        pbx: Option<String>,
        fallback: Option<String>,
    ) -> Vec<DialStatus> {
        let Some(t) = self.requests.get_mut(id) else {
            return Vec::new();
        };
        let changed = t.status.via != via;
        t.status.via = via;
        if pbx.is_some() {
            t.status.pbx = pbx;
        }
        if let Some(why) = fallback {
            t.status
                .step(at, format!("phone failed ({why}); trying the PBX"));
            t.status.fallback = Some(why);
        } else if !changed {
            return Vec::new();
        }
        if via != DialVia::Phone {
            self.awaiting_call.retain(|r| r != id);
        } else if !self.awaiting_call.iter().any(|r| r == id) {
            self.awaiting_call.push(id.to_owned());
        }
        vec![t.status.clone()]
    }

    /// The phone or Asterisk accepted the request.
    pub fn sent(&mut self, id: &str, at: DateTime<Utc>, detail: String) -> Vec<DialStatus> {
        self.update(id, |s| {
            let first = !s.delivered;
            s.delivered = true;
            if s.advance(at, DialState::Sent, detail.clone()) {
                return true;
            }
            // Events may have moved it on (or failed it) before the reply came.
            if first {
                s.step(at, detail);
            }
            first
        })
    }

    /// Delivery failed for good.
    pub fn fail(
        &mut self,
        id: &str,
        at: DateTime<Utc>,
        reason: &str,
        message: String,
    ) -> Vec<DialStatus> {
        self.awaiting_call.retain(|r| r != id);
        self.update(id, |s| s.fail(at, reason, message))
    }

    /// The Originate presets the new channel's `Uniqueid` (`ChannelId`) to `uid`.
    pub fn bind_channel(&mut self, id: &str, uid: &str, pbx: &str) {
        if let Some(t) = self.requests.get_mut(id) {
            t.origin_uid = Some(uid.to_owned());
            t.status.pbx = Some(pbx.to_owned());
            self.by_uid.insert(uid.to_owned(), id.to_owned());
            // A fresh originated channel starts its own call: its Linkedid is its Uniqueid.
            self.by_linkedid.insert(uid.to_owned(), id.to_owned());
        }
    }

    /// The Originate's reply carried `action_id`; an `OriginateResponse` with it that
    /// arrived first is applied now.
    pub fn bind_action(&mut self, id: &str, action_id: &str) -> Vec<DialStatus> {
        if !self.requests.contains_key(id) {
            return Vec::new();
        }
        self.by_action.insert(action_id.to_owned(), id.to_owned());
        match self.early.iter().position(|e| e.action_id == action_id) {
            Some(pos) => {
                let e = self.early.remove(pos).expect("position is in range");
                self.apply_originate(id, e.at, e.success, e.reason)
            }
            None => Vec::new(),
        }
    }

    /// One AMI message.
    pub fn on_ami(&mut self, at: DateTime<Utc>, pbx: &str, msg: &AmiMessage) -> Vec<DialStatus> {
        if self.requests.is_empty() {
            return Vec::new();
        }
        let Some(event) = msg.event_name() else {
            return Vec::new();
        };
        match event {
            "OriginateResponse" => self.on_originate_response(at, msg),
            "VarSet" => {
                let var = msg.get("Variable").unwrap_or("").trim_start_matches('_');
                if var.eq_ignore_ascii_case(REQUEST_ID_VAR) {
                    if let Some(value) = msg.get("Value") {
                        self.bind_by_variable(value, pbx, msg);
                    }
                }
                Vec::new()
            }
            "Newchannel" | "Newstate" | "DialBegin" | "DialEnd" | "Hangup" | "BridgeEnter" => {
                self.on_channel_event(at, pbx, event, msg)
            }
            _ => Vec::new(),
        }
    }

    /// One phone callback from the phone with extension `ext`.
    pub fn on_phone(
        &mut self,
        at: DateTime<Utc>,
        ext: &str,
        cb: &PhoneCallback,
    ) -> Vec<DialStatus> {
        use ActionUrlEvent as E;
        if !matches!(
            cb.event,
            E::OutgoingCall
                | E::CallEstablished
                | E::CallTerminated
                | E::CancelCallout
                | E::RemoteBusy
        ) {
            return Vec::new();
        }
        let remote = cb.remote.as_deref().or(cb.called_number.as_deref());
        let window = self.match_window;
        // The newest phone dial of this phone that is still going on.
        let Some(id) = self
            .requests
            .values()
            .filter(|t| {
                let s = &t.status;
                s.via == DialVia::Phone
                    && s.from == ext
                    && !s.is_over()
                    && (s.state >= DialState::Ringing || at <= s.created_at + window)
                    && at + MATCH_SKEW >= s.created_at
                    && remote.is_none_or_matches(&s.number)
            })
            .max_by_key(|t| t.status.created_at)
            .map(|t| t.status.request_id.clone())
        else {
            return Vec::new();
        };
        let name = cb.event.as_str().to_owned();
        self.update(&id, |s| match cb.event {
            E::OutgoingCall => s.advance(at, DialState::Ringing, format!("phone: {name}")),
            E::CallEstablished if s.state >= DialState::Ringing => {
                s.advance(at, DialState::Answered, format!("phone: {name}"))
            }
            E::CallEstablished => false,
            _ if s.state == DialState::Answered => s.end(at, format!("phone: {name}")),
            E::RemoteBusy => s.fail(
                at,
                "busy",
                format!("the phone reports {name}: the number is busy"),
            ),
            E::CancelCallout => s.fail(
                at,
                "cancelled",
                format!("the phone reports {name}: the call was cancelled"),
            ),
            _ => s.fail(
                at,
                "ended_before_answer",
                format!("the phone reports {name} before the call was answered"),
            ),
        })
    }

    /// Ties a call record to its request: sets `dial_request_id` on a record of a bound call
    /// (phone dials have no channel variable), and notes the record id on the request.
    pub fn annotate(&mut self, record: &mut CallRecord) -> Vec<DialStatus> {
        let id = match &record.dial_request_id {
            Some(id) => id.clone(),
            None => match self.by_linkedid.get(&record.linkedid) {
                Some(id)
                    if self.requests.get(id).is_some_and(|t| {
                        t.status.pbx.as_deref().map_or(true, |p| p == record.pbx)
                    }) =>
                {
                    record.dial_request_id = Some(id.clone());
                    id.clone()
                }
                _ => return Vec::new(),
            },
        };
        let record_id = record.id.clone();
        self.update(&id, |s| {
            if s.record_id.as_deref() == Some(record_id.as_str()) {
                return false;
            }
            s.record_id = Some(record_id.clone());
            s.linkedid.get_or_insert_with(|| record.linkedid.clone());
            true
        })
    }

    /// Record `id` continues as `into` (a transfer merged two calls).
    pub fn merged(&mut self, id: &str, into: &str) -> Vec<DialStatus> {
        let ids: Vec<String> = self
            .requests
            .values()
            .filter(|t| t.status.record_id.as_deref() == Some(id))
            .map(|t| t.status.request_id.clone())
            .collect();
        let mut out = Vec::new();
        for rid in ids {
            out.extend(self.update(&rid, |s| {
                s.record_id = Some(into.to_owned());
                true
            }));
        }
        out
    }

    /// Forgets requests untouched for [`RETENTION`] (at most once a minute) and unclaimed
    /// `OriginateResponse`s after a minute.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        while self.early.front().is_some_and(|e| e.at + EARLY_TTL < now) {
            self.early.pop_front();
        }
        if self
            .last_prune
            .is_some_and(|p| now - p < TimeDelta::seconds(60))
        {
            return;
        }
        self.last_prune = Some(now);
        let old: Vec<String> = self
            .requests
            .values()
            .filter(|t| t.status.updated_at + RETENTION < now)
            .map(|t| t.status.request_id.clone())
            .collect();
        if old.is_empty() {
            return;
        }
        for id in &old {
            self.requests.remove(id);
        }
        let gone = |v: &String| !self.requests.contains_key(v);
        self.by_uid.retain(|_, v| !gone(v));
        self.by_linkedid.retain(|_, v| !gone(v));
        self.by_action.retain(|_, v| !gone(v));
        self.awaiting_call.retain(|v| !gone(v));
    }

    // ----- internals -----

    fn update(&mut self, id: &str, f: impl FnOnce(&mut DialStatus) -> bool) -> Vec<DialStatus> {
        match self.requests.get_mut(id) {
            Some(t) => {
                if f(&mut t.status) {
                    vec![t.status.clone()]
                } else {
                    Vec::new()
                }
            }
            None => Vec::new(),
        }
    }

    fn bind_by_variable(&mut self, value: &str, pbx: &str, msg: &AmiMessage) {
        let id = value.trim();
        let Some(t) = self.requests.get_mut(id) else {
            return;
        };
        if let Some(uid) = msg.get("Uniqueid").filter(|u| !u.is_empty()) {
            if t.origin_uid.is_none() {
                t.origin_uid = Some(uid.to_owned());
            }
            self.by_uid.insert(uid.to_owned(), id.to_owned());
        }
        if let Some(linked) = msg.get("Linkedid").filter(|l| !l.is_empty()) {
            self.by_linkedid.insert(linked.to_owned(), id.to_owned());
            t.status.linkedid.get_or_insert_with(|| linked.to_owned());
        }
        t.status.pbx.get_or_insert_with(|| pbx.to_owned());
    }

    /// The request an event belongs to, binding what it newly learns.
    fn find(
        &mut self,
        at: DateTime<Utc>,
        pbx: &str,
        event: &str,
        msg: &AmiMessage,
    ) -> Option<String> {
        let uid = msg.get("Uniqueid").filter(|s| !s.is_empty());
        let linked = msg.get("Linkedid").filter(|s| !s.is_empty());
        let dest_uid = msg.get("DestUniqueid").filter(|s| !s.is_empty());
        let dest_linked = msg.get("DestLinkedid").filter(|s| !s.is_empty());
        let known = uid
            .and_then(|u| self.by_uid.get(u))
            .or_else(|| linked.and_then(|l| self.by_linkedid.get(l)))
            .or_else(|| dest_uid.and_then(|u| self.by_uid.get(u)))
            .or_else(|| dest_linked.and_then(|l| self.by_linkedid.get(l)))
            .cloned();
        let id = match known {
            Some(id) => id,
            None => {
                // A channel variable listed in manager.conf `channelvars`.
                let var = msg.get_all("ChanVariable").find_map(|v| {
                    let (name, value) = v.split_once('=')?;
                    name.trim_start_matches('_')
                        .eq_ignore_ascii_case(REQUEST_ID_VAR)
                        .then(|| value.trim().to_owned())
                        .filter(|v| self.requests.contains_key(v))
                });
                match var {
                    Some(id) => {
                        self.bind_by_variable(&id, pbx, msg);
                        id
                    }
                    None if matches!(event, "Newchannel" | "DialBegin") => {
                        self.match_phone_call(at, pbx, msg)?
                    }
                    None => return None,
                }
            }
        };
        let t = self.requests.get_mut(&id)?;
        if t.status.pbx.as_deref().is_some_and(|p| p != pbx) {
            return None;
        }
        // Every channel of the call belongs to the request.
        if let Some(l) = linked {
            if !self.by_linkedid.contains_key(l) {
                self.by_linkedid.insert(l.to_owned(), id.clone());
            }
            t.status.linkedid.get_or_insert_with(|| l.to_owned());
        }
        Some(id)
    }

    /// A new channel of a phone with a pending phone dial, dialling its number.
    fn match_phone_call(
        &mut self,
        at: DateTime<Utc>,
        pbx: &str,
        msg: &AmiMessage,
    ) -> Option<String> {
        if self.awaiting_call.is_empty() {
            return None;
        }
        let endpoint = endpoint_of(msg.get("Channel")?)?;
        let exten = msg.get("Exten")?;
        let uid = msg.get("Uniqueid").filter(|u| !u.is_empty())?;
        let window = self.match_window;
        let pos = self.awaiting_call.iter().position(|id| {
            self.requests.get(id).is_some_and(|t| {
                let s = &t.status;
                t.endpoint == endpoint
                    && !s.is_over()
                    && at + MATCH_SKEW >= s.created_at
                    && at <= s.created_at + window
                    && same_number(exten, &s.number)
            })
        })?;
        let id = self.awaiting_call.remove(pos);
        let t = self.requests.get_mut(&id)?;
        t.origin_uid = Some(uid.to_owned());
        t.status.pbx = Some(pbx.to_owned());
        t.status.step(
            at,
            format!(
                "call seen on the PBX ({})",
                msg.get("Channel").unwrap_or("")
            ),
        );
        self.by_uid.insert(uid.to_owned(), id.clone());
        Some(id)
    }

    fn on_channel_event(
        &mut self,
        at: DateTime<Utc>,
        pbx: &str,
        event: &str,
        msg: &AmiMessage,
    ) -> Vec<DialStatus> {
        let Some(id) = self.find(at, pbx, event, msg) else {
            return Vec::new();
        };
        let Some(t) = self.requests.get_mut(&id) else {
            return Vec::new();
        };
        let uid = msg.get("Uniqueid").filter(|s| !s.is_empty());
        let is_origin = uid.is_some() && uid == t.origin_uid.as_deref();
        if event != "Hangup" {
            for u in [uid, msg.get("DestUniqueid").filter(|s| !s.is_empty())]
                .into_iter()
                .flatten()
            {
                if !t.live.contains(u) {
                    t.live.insert(u.to_owned());
                }
            }
        }
        let from = t.status.from.clone();
        let caller = msg.get("Channel").filter(|c| !c.is_empty());
        let s = &mut t.status;
        let changed = match event {
            "Newstate" if is_origin && msg.get("ChannelStateDesc") == Some("Ringing") => s.advance(
                at,
                DialState::Ringing,
                format!("extension {from} is ringing"),
            ),
            "DialBegin" => {
                let dest = msg.get("DestChannel").unwrap_or("");
                match caller {
                    Some(_) => s.advance(at, DialState::Ringing, format!("calling {dest}")),
                    // The Originate's own dial: the from-phone is being rung.
                    None => s.advance(
                        at,
                        DialState::Ringing,
                        format!("ringing extension {from} ({dest})"),
                    ),
                }
            }
            "DialEnd" => {
                let status = msg.get("DialStatus").unwrap_or("").to_ascii_uppercase();
                let dest = msg.get("DestChannel").unwrap_or("");
                match (caller, status.as_str()) {
                    (Some(_), "ANSWER") => {
                        s.advance(at, DialState::Answered, format!("{dest} answered"))
                    }
                    (Some(_), _) => {
                        t.last_dial_status = Some(status);
                        false
                    }
                    (None, "ANSWER") => {
                        s.step(
                            at,
                            format!("extension {from} answered; dialling {}", s.number),
                        );
                        true
                    }
                    (None, other) => s.fail(
                        at,
                        &dial_status_reason(other, true),
                        format!("extension {from} was not reached ({other})"),
                    ),
                }
            }
            "Hangup" => {
                if let Some(u) = uid {
                    t.live.remove(u);
                }
                let cause = msg
                    .get("Cause-txt")
                    .or(msg.get("Cause"))
                    .unwrap_or("?")
                    .to_owned();
                if s.state == DialState::Answered {
                    if t.live.is_empty() {
                        s.end(at, "call ended".into())
                    } else {
                        false
                    }
                } else if is_origin || t.live.is_empty() {
                    match t.last_dial_status.as_deref() {
                        Some(st) => s.fail(
                            at,
                            &dial_status_reason(st, false),
                            format!("{} was not answered ({st})", s.number),
                        ),
                        None => s.fail(
                            at,
                            "ended_before_answer",
                            format!("the call ended before {} answered ({cause})", s.number),
                        ),
                    }
                } else {
                    false
                }
            }
            _ => false,
        };
        if changed {
            vec![s.clone()]
        } else {
            Vec::new()
        }
    }

    fn on_originate_response(&mut self, at: DateTime<Utc>, msg: &AmiMessage) -> Vec<DialStatus> {
        let success = msg
            .get("Response")
            .is_some_and(|r| r.eq_ignore_ascii_case("Success"));
        let reason = msg.get("Reason").and_then(|r| r.trim().parse::<u32>().ok());
        let by_uid = msg
            .get("Uniqueid")
            .and_then(|u| self.by_uid.get(u))
            .cloned();
        let action_id = msg.action_id().unwrap_or("");
        let id = by_uid.or_else(|| self.by_action.get(action_id).cloned());
        match id {
            Some(id) => self.apply_originate(&id, at, success, reason),
            None => {
                if !action_id.is_empty() {
                    if self.early.len() == EARLY_MAX {
                        self.early.pop_front();
                    }
                    self.early.push_back(EarlyOriginate {
                        at,
                        action_id: action_id.to_owned(),
                        success,
                        reason,
                    });
                }
                Vec::new()
            }
        }
    }

    fn apply_originate(
        &mut self,
        id: &str,
        at: DateTime<Utc>,
        success: bool,
        reason: Option<u32>,
    ) -> Vec<DialStatus> {
        self.update(id, |s| {
            let from = s.from.clone();
            if success {
                s.step(at, format!("OriginateResponse: extension {from} answered"));
                true
            } else {
                let (code, words) = originate_reason(reason);
                s.fail(
                    at,
                    code,
                    format!(
                        "extension {from} {words} (OriginateResponse Failure, Reason {})",
                        reason.map_or("-".into(), |r| r.to_string())
                    ),
                )
            }
        })
    }
}

/// `OriginateResponse` `Reason` (the last AST_CONTROL code, ami.md §4) as a code and words.
fn originate_reason(reason: Option<u32>) -> (&'static str, &'static str) {
    match reason {
        Some(1) => ("from_hangup", "hung up before answering"),
        Some(3) => ("from_no_answer", "rang but was not answered"),
        Some(5) => ("from_busy", "is busy"),
        Some(8) => ("congestion", "could not be reached (congestion)"),
        _ => (
            "from_unavailable",
            "could not be called (not registered or unreachable)",
        ),
    }
}

/// A Dial's `DialStatus` as a failure code; `from` for the Originate's dial of the from-phone.
fn dial_status_reason(status: &str, from: bool) -> String {
    let base = match status {
        "BUSY" => "busy",
        "NOANSWER" => "no_answer",
        "CANCEL" => "cancelled",
        "CONGESTION" => "congestion",
        "CHANUNAVAIL" => "unavailable",
        _ => "failed",
    };
    if from {
        format!("from_{base}")
    } else {
        base.to_owned()
    }
}

/// `Option<&str>` remote party compared with the dialled number; absent matches anything
/// (Fanvil sends no remote party on outgoing calls).
trait RemoteMatch {
    fn is_none_or_matches(&self, number: &str) -> bool;
}

impl RemoteMatch for Option<&str> {
    fn is_none_or_matches(&self, number: &str) -> bool {
        match self {
            None => true,
            Some(r) => same_number(r, number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::action_url::parse_callback;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + TimeDelta::milliseconds(ms)
    }

    fn ev(name: &str, fields: &[(&str, &str)]) -> AmiMessage {
        let mut b = AmiMessage::event(name);
        for (k, v) in fields {
            b = b.field(*k, *v);
        }
        b.build().unwrap()
    }

    fn request(tr: &mut DialTracker, id: &str, via: DialVia) {
        let s = DialStatus::new(
            id.into(),
            "101".into(),
            "+1 555 0100".into(),
            "+15550100".into(),
            DialVia::Auto,
            via,
            DialOrigin::Api,
            t(0),
        );
        tr.insert(s, "101".into());
    }

    fn state(tr: &DialTracker, id: &str) -> DialState {
        tr.get(id).unwrap().state
    }

    #[test]
    fn choose_follows_the_rules() {
        let ok = PhoneFacts {
            commandable: Ok(()),
            reachable: None,
        };
        let down = PhoneFacts {
            commandable: Ok(()),
            reachable: Some(false),
        };
        let no = PhoneFacts {
            commandable: Err("not configured".into()),
            reachable: None,
        };
        let pbx_ok: Result<(), String> = Ok(());
        let pbx_down: Result<(), String> = Err("AMI down".into());
        use DialVia::*;
        assert_eq!(
            choose(Auto, &ok, &pbx_ok),
            Ok(Plan::Phone { fallback: true })
        );
        assert_eq!(choose(Auto, &down, &pbx_ok), Ok(Plan::Pbx));
        assert_eq!(
            choose(Auto, &down, &pbx_down),
            Ok(Plan::Phone { fallback: false })
        );
        assert_eq!(choose(Auto, &no, &pbx_ok), Ok(Plan::Pbx));
        assert!(matches!(
            choose(Auto, &no, &pbx_down),
            Err(NoPath::Neither { .. })
        ));
        assert_eq!(
            choose(Phone, &down, &pbx_ok),
            Ok(Plan::Phone { fallback: false })
        );
        assert_eq!(
            choose(Phone, &no, &pbx_ok).unwrap_err().code(),
            "phone_unavailable"
        );
        assert_eq!(choose(Pbx, &ok, &pbx_ok), Ok(Plan::Pbx));
        assert_eq!(
            choose(Pbx, &ok, &pbx_down).unwrap_err().code(),
            "pbx_unavailable"
        );
    }

    #[test]
    fn endpoints_and_numbers() {
        assert_eq!(endpoint_of("PJSIP/101-0000000a"), Some("101"));
        assert_eq!(endpoint_of("PJSIP/my-phone-0000000a"), Some("my-phone"));
        assert_eq!(endpoint_of("SIP/trunk"), Some("trunk"));
        assert_eq!(endpoint_of("nochannel"), None);
        assert!(same_number("+15550100", "+15550100"));
        assert!(same_number("15550100", "+15550100"));
        assert!(same_number("sip:+15550100@pbx", "+15550100"));
        assert!(!same_number("5550100", "+15550100"));
        assert!(!same_number("", "+15550100"));
        assert!(same_number("*72#", "*72#"));
    }

    #[test]
    fn originate_flow_to_answered_and_ended() {
        let mut tr = DialTracker::new(Duration::from_secs(30));
        request(&mut tr, "r1", DialVia::Pbx);
        tr.bind_channel("r1", "r1", "default");
        assert_eq!(tr.sent("r1", t(10), "queued".into()).len(), 1);
        assert_eq!(state(&tr, "r1"), DialState::Sent);
        // The from-phone rings (Originate's DialBegin has no calling channel).
        let begin = ev(
            "DialBegin",
            &[
                ("DestChannel", "PJSIP/101-00000001"),
                ("DestUniqueid", "r1"),
                ("DestLinkedid", "r1"),
            ],
        );
        assert_eq!(tr.on_ami(t(20), "default", &begin).len(), 1);
        assert_eq!(state(&tr, "r1"), DialState::Ringing);
        let resp = AmiMessage::builder()
            .field("Event", "OriginateResponse")
            .field("ActionID", "a-1")
            .field("Response", "Success")
            .field("Uniqueid", "r1")
            .field("Reason", "4")
            .build()
            .unwrap();
        assert_eq!(
            tr.on_ami(t(30), "default", &resp).len(),
            1,
            "noted in history"
        );
        // The destination is dialled from the originated channel and answers.
        let dial = |name: &str, extra: &[(&str, &str)]| {
            let mut f = vec![
                ("Channel", "PJSIP/101-00000001"),
                ("Uniqueid", "r1"),
                ("Linkedid", "r1"),
                ("DestChannel", "PJSIP/102-00000002"),
                ("DestUniqueid", "9.2"),
                ("DestLinkedid", "r1"),
            ];
            f.extend_from_slice(extra);
            ev(name, &f)
        };
        assert!(
            tr.on_ami(t(40), "default", &dial("DialBegin", &[]))
                .is_empty(),
            "already ringing"
        );
        assert_eq!(
            tr.on_ami(
                t(50),
                "default",
                &dial("DialEnd", &[("DialStatus", "ANSWER")])
            )
            .len(),
            1
        );
        let s = tr.get("r1").unwrap();
        assert_eq!(s.state, DialState::Answered);
        assert_eq!(s.answered_at, Some(t(50)));
        assert_eq!(s.linkedid.as_deref(), Some("r1"));
        let hangup = |uid: &str| {
            ev(
                "Hangup",
                &[("Uniqueid", uid), ("Linkedid", "r1"), ("Cause", "16")],
            )
        };
        assert!(tr.on_ami(t(60), "default", &hangup("9.2")).is_empty());
        assert_eq!(tr.on_ami(t(70), "default", &hangup("r1")).len(), 1);
        let s = tr.get("r1").unwrap();
        assert_eq!(s.ended_at, Some(t(70)));
        assert!(s.is_over());
        // A later failure cannot undo it.
        assert!(tr.fail("r1", t(80), "x", "y".into()).is_empty());
    }

    #[test]
    fn originate_failure_by_action_id_even_when_it_comes_first() {
        let mut tr = DialTracker::new(Duration::from_secs(30));
        request(&mut tr, "r2", DialVia::Pbx);
        let resp = AmiMessage::builder()
            .field("Event", "OriginateResponse")
            .field("ActionID", "a-7")
            .field("Response", "Failure")
            .field("Uniqueid", "<null>")
            .field("Reason", "3")
            .build()
            .unwrap();
        assert!(
            tr.on_ami(t(5), "default", &resp).is_empty(),
            "not claimed yet"
        );
        let changed = tr.bind_action("r2", "a-7");
        assert_eq!(changed.len(), 1);
        let s = tr.get("r2").unwrap();
        assert_eq!(s.state, DialState::Failed);
        assert_eq!(s.reason.as_deref(), Some("from_no_answer"));
        assert!(s.message.unwrap().contains("not answered"));
    }

    #[test]
    fn busy_destination_fails_with_busy_when_the_caller_hangs_up() {
        let mut tr = DialTracker::new(Duration::from_secs(30));
        request(&mut tr, "r3", DialVia::Pbx);
        tr.bind_channel("r3", "r3", "default");
        let f = |name: &str, extra: &[(&str, &str)]| {
            let mut v = vec![
                ("Channel", "PJSIP/101-1"),
                ("Uniqueid", "r3"),
                ("Linkedid", "r3"),
            ];
            v.extend_from_slice(extra);
            ev(name, &v)
        };
        tr.on_ami(
            t(1),
            "default",
            &f(
                "DialBegin",
                &[("DestChannel", "PJSIP/102-2"), ("DestUniqueid", "x.2")],
            ),
        );
        tr.on_ami(
            t(2),
            "default",
            &f(
                "DialEnd",
                &[("DestChannel", "PJSIP/102-2"), ("DialStatus", "BUSY")],
            ),
        );
        assert_eq!(state(&tr, "r3"), DialState::Ringing);
        tr.on_ami(t(3), "default", &f("Hangup", &[("Cause", "17")]));
        let s = tr.get("r3").unwrap();
        assert_eq!(
            (s.state, s.reason.as_deref()),
            (DialState::Failed, Some("busy"))
        );
        // Events of another PBX with the same ids are not this request's.
        let mut tr = DialTracker::new(Duration::from_secs(30));
        request(&mut tr, "r4", DialVia::Pbx);
        tr.bind_channel("r4", "r4", "default");
        let other = ev("Hangup", &[("Uniqueid", "r4"), ("Linkedid", "r4")]);
        assert!(tr.on_ami(t(1), "other", &other).is_empty());
    }

    #[test]
    fn phone_dial_is_bound_by_endpoint_number_and_window_and_annotates_the_record() {
        let mut tr = DialTracker::new(Duration::from_secs(30));
        request(&mut tr, "p1", DialVia::Phone);
        tr.sent("p1", t(100), "phone accepted".into());
        let newchan = |at_uid: &str, exten: &str, chan: &str| {
            ev(
                "Newchannel",
                &[
                    ("Channel", chan),
                    ("Exten", exten),
                    ("Uniqueid", at_uid),
                    ("Linkedid", at_uid),
                ],
            )
        };
        // Another phone, another number: not it.
        assert!(tr
            .on_ami(
                t(200),
                "default",
                &newchan("5.1", "+15550100", "PJSIP/102-00000001")
            )
            .is_empty());
        assert!(tr
            .on_ami(
                t(200),
                "default",
                &newchan("5.2", "999", "PJSIP/101-00000002")
            )
            .is_empty());
        assert!(tr.get("p1").unwrap().linkedid.is_none());
        // Too late: outside the window.
        assert!(tr
            .on_ami(
                t(31_000),
                "default",
                &newchan("5.3", "+15550100", "PJSIP/101-00000003")
            )
            .is_empty());
        assert!(tr.get("p1").unwrap().linkedid.is_none());
        // In the window, the phone's endpoint dialling the number (the PBX may drop the '+').
        tr.on_ami(
            t(300),
            "default",
            &newchan("5.4", "15550100", "PJSIP/101-00000004"),
        );
        let s = tr.get("p1").unwrap();
        assert_eq!(s.linkedid.as_deref(), Some("5.4"));
        assert_eq!(s.pbx.as_deref(), Some("default"));
        let mut record = CallRecord {
            id: "default:5.4".into(),
            pbx: "default".into(),
            linkedid: "5.4".into(),
            direction: crate::record::Direction::Outbound,
            from: Default::default(),
            to: Default::default(),
            started_at: t(300),
            answered_at: None,
            ended_at: None,
            ring_s: 0.0,
            talk_s: 0.0,
            hold_s: 0.0,
            disposition: crate::record::Disposition::NoAnswer,
            missed: false,
            answered_by: None,
            legs: vec![],
            transfers: vec![],
            timeline: vec![],
            correlation: vec![],
            gaps: vec![],
            dial_request_id: None,
            complete: true,
        };
        assert_eq!(tr.annotate(&mut record).len(), 1);
        assert_eq!(record.dial_request_id.as_deref(), Some("p1"));
        assert_eq!(
            tr.get("p1").unwrap().record_id.as_deref(),
            Some("default:5.4")
        );
        // Annotating again changes nothing; another call's record is left alone.
        assert!(tr.annotate(&mut record).is_empty());
        let mut other = record.clone();
        other.linkedid = "5.3".into();
        other.dial_request_id = None;
        assert!(tr.annotate(&mut other).is_empty());
        assert_eq!(other.dial_request_id, None);
    }

    #[test]
    fn phone_callbacks_move_a_phone_dial() {
        let mut tr = DialTracker::new(Duration::from_secs(30));
        request(&mut tr, "p2", DialVia::Phone);
        tr.sent("p2", t(10), "ok".into());
        let cb = |event: &str, q: &str| parse_callback(event, q.as_bytes());
        // Another phone's callback, and one about another number, do nothing.
        assert!(tr
            .on_phone(t(20), "102", &cb("outgoing_call", "remote=%2B15550100"))
            .is_empty());
        assert!(tr
            .on_phone(t(20), "101", &cb("outgoing_call", "remote=sip:777@pbx"))
            .is_empty());
        assert_eq!(
            tr.on_phone(
                t(30),
                "101",
                &cb("outgoing_call", "remote=sip:+15550100@pbx")
            )
            .len(),
            1
        );
        assert_eq!(state(&tr, "p2"), DialState::Ringing);
        assert_eq!(
            tr.on_phone(t(40), "101", &cb("call_established", "")).len(),
            1
        );
        assert_eq!(state(&tr, "p2"), DialState::Answered);
        assert_eq!(
            tr.on_phone(t(50), "101", &cb("call_terminated", "")).len(),
            1
        );
        assert!(tr.get("p2").unwrap().ended_at.is_some());
        // A dial the phone gave up on fails with a reason.
        request(&mut tr, "p3", DialVia::Phone);
        tr.on_phone(t(60), "101", &cb("outgoing_call", ""));
        tr.on_phone(t(70), "101", &cb("remote_busy", ""));
        let s = tr.get("p3").unwrap();
        assert_eq!(
            (s.state, s.reason.as_deref()),
            (DialState::Failed, Some("busy"))
        );
    }

    #[test]
    fn states_only_move_forward_and_history_is_bounded() {
        let mut tr = DialTracker::new(Duration::from_secs(30));
        request(&mut tr, "r", DialVia::Pbx);
        tr.sent("r", t(1), "a".into());
        tr.bind_channel("r", "r", "default");
        let ringing = ev(
            "Newstate",
            &[
                ("Uniqueid", "r"),
                ("Linkedid", "r"),
                ("ChannelStateDesc", "Ringing"),
            ],
        );
        assert_eq!(tr.on_ami(t(2), "default", &ringing).len(), 1);
        assert!(tr.sent("r", t(3), "again".into()).is_empty());
        for i in 0..100 {
            tr.attempt("r", t(4 + i), DialVia::Pbx, None, Some(format!("x{i}")));
        }
        assert_eq!(tr.get("r").unwrap().history.len(), MAX_HISTORY);
        assert_eq!(state(&tr, "r"), DialState::Ringing);
    }

    #[test]
    fn prune_forgets_old_requests_and_their_bindings() {
        let mut tr = DialTracker::new(Duration::from_secs(30));
        request(&mut tr, "old", DialVia::Pbx);
        tr.bind_channel("old", "u1", "default");
        tr.prune(t(0) + RETENTION + TimeDelta::seconds(1));
        assert!(tr.is_empty());
        assert!(tr.by_uid.is_empty() && tr.by_linkedid.is_empty());
    }

    #[test]
    fn cti_dial_user_events() {
        let m = ev(
            "UserEvent",
            &[
                ("UserEvent", "CtiDial"),
                ("From", "101"),
                ("To", " 5550100 "),
            ],
        );
        assert_eq!(cti_dial(&m), Some(("101".into(), "5550100".into(), None)));
        let m = ev("UserEvent", &[("UserEvent", "CtiDnd"), ("Phone", "101")]);
        assert_eq!(cti_dial(&m), None);
    }
}
