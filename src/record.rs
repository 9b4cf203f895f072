//! [`CallRecord`]: one merged record per conversation, as reporting tools read it.
//!
//! The shape is fixed by the product brief ("Call record"); more fields are welcome, renames
//! are not. Times are UTC (RFC 3339 in JSON). Durations are seconds with millisecond
//! precision. The record is built by the correlator from AMI events and phone callbacks,
//! stored by the store, and served by the records API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which way the call went, derived without hand-configured contexts (docs/CORRELATION.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Both ends are our endpoints (phones).
    Internal,
    /// The originating channel is a trunk.
    Inbound,
    /// The dialled leg is a trunk.
    Outbound,
    Unknown,
}

/// How the call ended for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    Answered,
    NoAnswer,
    Busy,
    Failed,
}

/// One end of the call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Party {
    /// The number as signalled (caller ID number, dialled number or DID).
    pub number: Option<String>,
    pub name: Option<String>,
    /// Our extension/endpoint when this party is one of our phones.
    pub extension: Option<String>,
}

/// What the phone itself reported for a leg (its Action URL callbacks).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PhoneView {
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub model: Option<String>,
    /// The phone's own call handle (Yealink/Fanvil `$call_id`, usable as `key=ASW:<id>`).
    pub call_handle: Option<String>,
}

/// One channel of the call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Leg {
    pub channel: String,
    pub uniqueid: String,
    /// PJSIP endpoint: the channel name without its `-%08x` suffix (e.g. `101`).
    pub endpoint: Option<String>,
    /// The SIP Call-ID of this leg (from the `SIPCALLID` channel variable).
    pub sip_call_id: Option<String>,
    pub phone: Option<PhoneView>,
    pub started_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Q.850 cause of the Hangup event.
    pub hangup_cause: Option<u16>,
    pub hangup_cause_text: Option<String>,
    /// `DialStatus` of the `DialEnd` that ended dialling this leg, if it was dialled.
    pub dial_status: Option<String>,
    /// A missed call *for this leg's phone*: the leg was dialled and rang out unanswered while
    /// nobody else answered the call (a ring-group member whose leg ended with cause 26
    /// "Answered elsewhere" did not miss it).
    #[serde(default)]
    pub missed: bool,
}

/// A transfer inside the conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    pub at: Option<DateTime<Utc>>,
    /// `blind` or `attended`.
    pub kind: String,
    /// Extension (endpoint) that transferred.
    pub by: Option<String>,
    /// Where the call was sent: the extension dialled (blind) or the target's endpoint.
    pub to: Option<String>,
    /// The `Result` of the AMI event (`Success`, `Fail`, …).
    pub result: Option<String>,
}

/// Where a timeline entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Ami,
    Phone,
}

/// One step of the call, AMI and phone events merged in time order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub source: Source,
    /// AMI event name (`DialBegin`, …) or phone event name (`call_established`, …).
    pub event: String,
    /// The channel (AMI) or the phone's extension (phone) it concerns.
    pub subject: Option<String>,
    /// A short human summary, e.g. `DialEnd ANSWER` or `cause 16`.
    pub detail: Option<String>,
}

/// How one phone callback was tied to this call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PhoneMatch {
    pub at: DateTime<Utc>,
    /// The phone's extension.
    pub phone: String,
    pub event: String,
    /// `sip_call_id` (exact) or `account_party_time` (heuristic).
    pub method: String,
    /// The leg it was attached to.
    pub uniqueid: Option<String>,
}

/// A period the bridge could not see (AMI link down, live consumer overflow).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Gap {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub reason: String,
}

/// The merged record of one conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CallRecord {
    /// Stable id: `<pbx>:<linkedid>` of the conversation's first call.
    pub id: String,
    pub pbx: String,
    pub linkedid: String,
    pub direction: Direction,
    pub from: Party,
    pub to: Party,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ring_s: f64,
    pub talk_s: f64,
    pub hold_s: f64,
    pub disposition: Disposition,
    /// True when nobody answered a call meant for a person (not for a leg cancelled because
    /// another member of a ring group answered).
    pub missed: bool,
    /// Extension that answered (for inbound/internal calls), or the far end for outbound.
    pub answered_by: Option<String>,
    pub legs: Vec<Leg>,
    pub transfers: Vec<Transfer>,
    pub timeline: Vec<TimelineEntry>,
    pub correlation: Vec<PhoneMatch>,
    pub gaps: Vec<Gap>,
    pub dial_request_id: Option<String>,
    /// False while the call is live (the record may still change).
    pub complete: bool,
}
