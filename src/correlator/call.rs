//! The state kept per conversation: its legs, a compact timeline, transfers, phone matches.
//!
//! A *call* is the set of channels sharing a `Linkedid`; a *conversation* is one or more calls
//! merged because a channel moved between them (transfers). The correlator keeps one
//! [`Conversation`] per conversation; the `Linkedid`s of all its calls point to it.
//!
//! The timeline is stored compactly ([`Step`]: a time, a kind, a leg index and a small detail)
//! and only expanded into [`crate::record::TimelineEntry`] strings when a record is built.
//!
//! Everything here is serialisable for [`super::CorrelatorSnapshot`]; a step is written as a
//! short array `[time in µs, kind, leg, detail]`, since a snapshot holds many of them.

use super::channel::{Leg, STATE_UP};
use super::text::Text;
use crate::record::{Gap, PhoneMatch, Transfer};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// "No leg" in [`Step::leg`].
pub(super) const NO_LEG: u32 = u32::MAX;

/// The kinds of timeline entries (the "interesting" events; see the module docs of
/// [`super`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(into = "StepRepr", try_from = "StepRepr")]
pub(super) struct Step {
    pub at: DateTime<Utc>,
    pub kind: StepKind,
    /// Index into `legs`, or [`NO_LEG`].
    pub leg: u32,
    pub detail: Detail,
}

/// A [`Step`] as stored in a snapshot: `[µs since the epoch, kind, leg, detail]`.
#[derive(Serialize, Deserialize)]
struct StepRepr(i64, StepKind, u32, Detail);

impl From<Step> for StepRepr {
    fn from(s: Step) -> StepRepr {
        StepRepr(s.at.timestamp_micros(), s.kind, s.leg, s.detail)
    }
}

impl TryFrom<StepRepr> for Step {
    type Error = String;
    fn try_from(r: StepRepr) -> Result<Step, String> {
        let at = DateTime::from_timestamp_micros(r.0)
            .ok_or_else(|| format!("timeline step time {} out of range", r.0))?;
        Ok(Step {
            at,
            kind: r.1,
            leg: r.2,
            detail: r.3,
        })
    }
}

/// The outcome of an Originate (`OriginateResponse`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Originate {
    pub success: bool,
    /// `Exten` of the Originate (what the originated channel is connected to).
    pub exten: Option<Text>,
    pub action_id: Option<Text>,
}

/// A phone callback matched to a conversation that has not (yet) qualified for a record; kept
/// raw so it can become an orphan if the conversation never does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RawCallback {
    pub at: DateTime<Utc>,
    pub peer: Text,
    pub target: Text,
}

/// One conversation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Conversation {
    /// (A snapshot stores the name; the restored conversations share one `Arc` per PBX.)
    #[serde(with = "arc_str")]
    pub pbx: Arc<str>,
    /// `Linkedid` of the first call: the record's `linkedid` and id.
    pub linkedid: Text,
    /// The other `Linkedid`s merged into this conversation (transfers), besides `linkedid`;
    /// empty for most calls. All of them: [`Conversation::linkedids`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_linkedids: Vec<Text>,
    pub legs: Vec<Leg>,
    pub timeline: Vec<Step>,
    /// What most calls never have (boxed to keep a live call small); see [`Conversation::extra`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Box<Extra>>,
    /// A dial was attempted: a `DialBegin` was seen, or `Dial` reported its outcome in a
    /// non-empty `DIALSTATUS` (also when it could not create the outgoing channel at all).
    pub had_dial: bool,
    /// Legs not hung up yet.
    pub live: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hangup: Option<DateTime<Utc>>,
    /// When the conversation completes (set while `live == 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Time of the last input that touched the conversation.
    pub last_event: DateTime<Utc>,
    /// `CallStarted` was emitted.
    pub started: bool,
    /// The record changed since the last output.
    pub dirty: bool,
}

/// The parts of a conversation that most calls do not have.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct Extra {
    pub transfers: Vec<Transfer>,
    pub correlation: Vec<PhoneMatch>,
    pub gaps: Vec<Gap>,
    pub originate: Option<Originate>,
    pub dial_request_id: Option<Text>,
    /// Callbacks matched while the conversation did not qualify for a record yet.
    pub unqualified_callbacks: Vec<RawCallback>,
}

/// `Arc<str>` as a plain string (serde's own support needs its `rc` feature, and a restore
/// shares one `Arc` per PBX anyway).
mod arc_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
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
            more_linkedids: Vec::new(),
            legs: Vec::with_capacity(2),
            // A two-party call has ~12 steps: start there instead of growing 4 → 8 → 16.
            timeline: Vec::with_capacity(12),
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

    /// Every `Linkedid` of the conversation, the first call's first.
    pub fn linkedids(&self) -> impl Iterator<Item = &Text> {
        std::iter::once(&self.linkedid).chain(&self.more_linkedids)
    }

    pub fn has_linkedid(&self, lid: &str) -> bool {
        *self.linkedid == *lid || self.more_linkedids.iter().any(|l| **l == *lid)
    }

    /// `<pbx>:<linkedid of the first call>`.
    pub fn id(&self) -> String {
        let mut id = String::with_capacity(self.pbx.len() + 1 + self.linkedid.len());
        id.push_str(&self.pbx);
        id.push(':');
        id.push_str(&self.linkedid);
        id
    }

    /// When the first leg started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.legs
            .iter()
            .map(|l| l.started_at)
            .min()
            .unwrap_or(self.last_event)
    }

    /// Whether this is a conversation worth a record: someone was dialled (or a dial was
    /// attempted: `DIALSTATUS`) or originated, two real (non-Local) channels took part, or a
    /// real channel was answered. A channel that runs a feature code and hangs up unanswered
    /// (`*78`) is not a call record.
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
