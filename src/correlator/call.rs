//! The state kept per conversation: its legs, a compact timeline, transfers, phone matches.
//!
//! A *call* is the set of channels sharing a `Linkedid`; a *conversation* is one or more calls
//! merged because a channel moved between them (transfers). The correlator keeps one
//! [`Conversation`] per conversation; the `Linkedid`s of all its calls point to it.
//!
//! The timeline is stored compactly ([`Step`]: a time, a kind, a leg index and a small detail)
//! and only expanded into [`crate::record::TimelineEntry`] strings when a record is built.

use super::channel::{Leg, STATE_UP};
use crate::record::{Gap, PhoneMatch, Transfer};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// "No leg" in [`Step::leg`].
pub(super) const NO_LEG: u32 = u32::MAX;

/// The kinds of timeline entries (the "interesting" events; see the module docs of
/// [`super`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StepKind {
    Newchannel,
    Newstate,
    DialBegin,
    DialEnd,
    BridgeEnter,
    BridgeLeave,
    Hold,
    Unhold,
    BlindTransfer,
    AttendedTransfer,
    Hangup,
    OriginateResponse,
    /// A channel closed because the resync after an AMI gap did not list it.
    ClosedByResync,
    /// A phone callback (source `phone`).
    Phone,
}

impl StepKind {
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Newchannel => "Newchannel",
            StepKind::Newstate => "Newstate",
            StepKind::DialBegin => "DialBegin",
            StepKind::DialEnd => "DialEnd",
            StepKind::BridgeEnter => "BridgeEnter",
            StepKind::BridgeLeave => "BridgeLeave",
            StepKind::Hold => "Hold",
            StepKind::Unhold => "Unhold",
            StepKind::BlindTransfer => "BlindTransfer",
            StepKind::AttendedTransfer => "AttendedTransfer",
            StepKind::Hangup => "Hangup",
            StepKind::OriginateResponse => "OriginateResponse",
            StepKind::ClosedByResync => "ClosedByResync",
            StepKind::Phone => "phone",
        }
    }
}

/// What a timeline entry says beyond its kind and leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Detail {
    None,
    /// `ChannelState` number.
    State(u8),
    /// `DialBegin`: the calling leg ([`NO_LEG`] for an Originate).
    DialFrom(u32),
    /// `DialEnd`: the `DialStatus`, as an index into [`DIAL_STATUSES`] ([`OTHER_STATUS`]: the
    /// leg's own `dial_status` text).
    DialStatus(u8),
    /// `Hangup`: the cause (text on the leg).
    Cause(Option<u16>),
    /// `Unhold` without an open `Hold` (every REFER raises one): shown, not counted.
    UnholdIgnored,
    Originate {
        success: bool,
        /// [`NO_REASON`] when absent.
        reason: u8,
    },
    /// Index into `transfers`.
    Transfer(u32),
    /// Index into `correlation`.
    Phone(u32),
}

/// `DialStatus` values, coded as their index in timeline entries.
pub(super) const DIAL_STATUSES: [&str; 9] = [
    "ANSWER",
    "BUSY",
    "NOANSWER",
    "CANCEL",
    "CONGESTION",
    "CHANUNAVAIL",
    "DONTCALL",
    "TORTURE",
    "INVALIDARGS",
];
/// A `DialStatus` not in [`DIAL_STATUSES`].
pub(super) const OTHER_STATUS: u8 = u8::MAX;
/// No `Reason` in an `OriginateResponse`.
pub(super) const NO_REASON: u8 = u8::MAX;

/// The code of a `DialStatus` for [`Detail::DialStatus`].
pub(super) fn dial_status_code(status: &str) -> u8 {
    DIAL_STATUSES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(status))
        .map_or(OTHER_STATUS, |i| i as u8)
}

/// One compact timeline entry (28 bytes).
#[derive(Clone, Debug)]
pub(super) struct Step {
    pub at: DateTime<Utc>,
    pub kind: StepKind,
    /// Index into `legs`, or [`NO_LEG`].
    pub leg: u32,
    pub detail: Detail,
}

/// The outcome of an Originate (`OriginateResponse`).
#[derive(Clone, Debug)]
pub(super) struct Originate {
    pub success: bool,
    /// `Exten` of the Originate (what the originated channel is connected to).
    pub exten: Option<Box<str>>,
    pub action_id: Option<Box<str>>,
}

/// A phone callback matched to a conversation that has not (yet) qualified for a record; kept
/// raw so it can become an orphan if the conversation never does.
#[derive(Clone, Debug)]
pub(super) struct RawCallback {
    pub at: DateTime<Utc>,
    pub peer: Box<str>,
    pub target: Box<str>,
}

/// One conversation.
#[derive(Clone, Debug)]
pub(super) struct Conversation {
    pub pbx: Arc<str>,
    /// `Linkedid` of the first call: the record's `linkedid` and id.
    pub linkedid: Box<str>,
    /// Every `Linkedid` merged into this conversation (the first is `linkedid`).
    pub linkedids: Vec<Box<str>>,
    pub legs: Vec<Leg>,
    pub timeline: Vec<Step>,
    /// What most calls never have (boxed to keep a live call small); see [`Conversation::extra`].
    pub extra: Option<Box<Extra>>,
    /// A `DialBegin` was seen.
    pub had_dial: bool,
    /// Legs not hung up yet.
    pub live: u32,
    pub last_hangup: Option<DateTime<Utc>>,
    /// When the conversation completes (set while `live == 0`).
    pub deadline: Option<DateTime<Utc>>,
    /// Time of the last input that touched the conversation.
    pub last_event: DateTime<Utc>,
    /// `CallStarted` was emitted.
    pub started: bool,
    /// The record changed since the last output.
    pub dirty: bool,
}

/// The parts of a conversation that most calls do not have.
#[derive(Clone, Debug, Default)]
pub(super) struct Extra {
    pub transfers: Vec<Transfer>,
    pub correlation: Vec<PhoneMatch>,
    pub gaps: Vec<Gap>,
    pub originate: Option<Originate>,
    pub dial_request_id: Option<Box<str>>,
    /// Callbacks matched while the conversation did not qualify for a record yet.
    pub unqualified_callbacks: Vec<RawCallback>,
}

static NO_EXTRA: Extra = Extra {
    transfers: Vec::new(),
    correlation: Vec::new(),
    gaps: Vec::new(),
    originate: None,
    dial_request_id: None,
    unqualified_callbacks: Vec::new(),
};

impl Conversation {
    pub fn new(pbx: Arc<str>, linkedid: &str, t: DateTime<Utc>) -> Conversation {
        Conversation {
            pbx,
            linkedid: linkedid.into(),
            linkedids: vec![linkedid.into()],
            legs: Vec::with_capacity(2),
            timeline: Vec::new(),
            extra: None,
            had_dial: false,
            live: 0,
            last_hangup: None,
            deadline: None,
            last_event: t,
            started: false,
            dirty: true,
        }
    }

    /// Transfers, phone matches, gaps, Originate outcome, request id (empty when none).
    pub fn extra(&self) -> &Extra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// `<pbx>:<linkedid of the first call>`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.pbx, self.linkedid)
    }

    /// When the first leg started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.legs
            .iter()
            .map(|l| l.started_at)
            .min()
            .unwrap_or(self.last_event)
    }

    /// Whether this is a conversation worth a record: someone was dialled or originated, two
    /// real (non-Local) channels took part, or a real channel was answered. A channel that
    /// runs a feature code and hangs up unanswered (`*78`) is not a call record.
    pub fn qualifies(&self) -> bool {
        self.had_dial
            || self.extra().originate.is_some()
            || self
                .legs
                .iter()
                .filter(|l| !l.local)
                .any(|l| l.answered_at.is_some() || l.state == STATE_UP)
            || self.legs.iter().filter(|l| !l.local).count() >= 2
    }

    /// Appends a timeline entry, keeping the timeline sorted by time (stable: an entry goes
    /// after the entries with the same time).
    pub fn push_step(&mut self, step: Step) {
        match self.timeline.last() {
            Some(last) if last.at > step.at => {
                let pos = self.timeline.partition_point(|s| s.at <= step.at);
                self.timeline.insert(pos, step);
            }
            _ => self.timeline.push(step),
        }
    }

    /// The originating leg: the one whose `Uniqueid` is the first call's `Linkedid` (Asterisk
    /// gives the first channel of a call its own id as `Linkedid`), else the first leg seen.
    pub fn origin_idx(&self) -> Option<usize> {
        self.legs
            .iter()
            .position(|l| *l.uniqueid == *self.linkedid)
            .or(if self.legs.is_empty() { None } else { Some(0) })
    }
}
