//! The live events: their types, their payloads, and the JSON every channel (SSE, WebSocket,
//! webhooks) carries. The catalogue with examples is `docs/EVENTS.md`.
//!
//! Every event has the same envelope:
//!
//! ```json
//! {"id":1795347642194691,"type":"call.answered","at":"2026-11-22T10:00:02.5Z",
//!  "call_id":"default:1763806800.1","extensions":["101","102"],"data":{…}}
//! ```
//!
//! - `id`: assigned by the [`super::Hub`] when the event is published, strictly increasing,
//!   also across restarts (the first id of a run is at least the start time in microseconds
//!   since the Unix epoch), so it serves as SSE id, resume position and webhook idempotency key.
//! - `call_id`: the call record id the event concerns (`null` for phone and gap events).
//! - `extensions`: every extension (PJSIP endpoint) the event concerns, sorted; what the `ext`
//!   filter matches.

use crate::record::{CallRecord, Direction, Party, Transfer};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// The types of live events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// A new conversation qualified as a call.
    CallStarted,
    /// A leg of the call started ringing (AMI `Newstate` Ringing).
    CallRinging,
    /// The call was answered (first answer), or a later party answered (transfer target).
    CallAnswered,
    /// A channel put the call on hold.
    CallHeld,
    /// A channel took the call off hold.
    CallUnheld,
    /// A transfer (blind or attended) happened in the call.
    CallTransferred,
    /// A call was merged into another one (an attended transfer joined two calls).
    CallMerged,
    /// The call is over; carries the final merged record.
    CallEnded,
    /// A phone's state (registration, DND, forwards, call, reachability) changed.
    PhoneState,
    /// A click-to-call request changed status.
    DialStatus,
    /// The bridge could not see a period of AMI traffic.
    Gap,
}

impl EventType {
    /// Every type, in catalogue order.
    pub const ALL: [EventType; 11] = [
        EventType::CallStarted,
        EventType::CallRinging,
        EventType::CallAnswered,
        EventType::CallHeld,
        EventType::CallUnheld,
        EventType::CallTransferred,
        EventType::CallMerged,
        EventType::CallEnded,
        EventType::PhoneState,
        EventType::DialStatus,
        EventType::Gap,
    ];

    /// The wire name (`call.started`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CallStarted => "call.started",
            EventType::CallRinging => "call.ringing",
            EventType::CallAnswered => "call.answered",
            EventType::CallHeld => "call.held",
            EventType::CallUnheld => "call.unheld",
            EventType::CallTransferred => "call.transferred",
            EventType::CallMerged => "call.merged",
            EventType::CallEnded => "call.ended",
            EventType::PhoneState => "phone.state",
            EventType::DialStatus => "dial.status",
            EventType::Gap => "gap",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An event type name that is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?}; known: call.started, call.ringing, call.answered, call.held, call.unheld, call.transferred, call.merged, call.ended, phone.state, dial.status, gap (or a prefix pattern such as call.*)")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_string()))
    }
}

/// The short view of a call that every call event carries (the full record comes with
/// `call.ended`, and from `GET /api/v1/calls/{id}` afterwards).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CallSummary {
    pub id: String,
    pub pbx: String,
    pub linkedid: String,
    pub direction: Direction,
    pub from: Party,
    pub to: Party,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub answered_by: Option<String>,
    pub dial_request_id: Option<String>,
}

impl CallSummary {
    pub fn of(r: &CallRecord) -> CallSummary {
        CallSummary {
            id: r.id.clone(),
            pbx: r.pbx.clone(),
            linkedid: r.linkedid.clone(),
            direction: r.direction,
            from: r.from.clone(),
            to: r.to.clone(),
            started_at: r.started_at,
            answered_at: r.answered_at,
            answered_by: r.answered_by.clone(),
            dial_request_id: r.dial_request_id.clone(),
        }
    }
}

/// The channel an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LegRef {
    pub channel: String,
    pub uniqueid: Option<String>,
    /// The PJSIP endpoint (our extension, or a trunk's name).
    pub endpoint: Option<String>,
}

/// What an event says beyond its envelope.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EventData {
    /// `call.started`.
    Started { call: CallSummary },
    /// `call.ringing`, `call.held`, `call.unheld`: the leg concerned.
    Leg { call: CallSummary, leg: LegRef },
    /// `call.answered`: who answered, and on which leg.
    Answered {
        call: CallSummary,
        answered_by: Option<String>,
        leg: Option<LegRef>,
    },
    /// `call.transferred`.
    Transferred {
        call: CallSummary,
        transfer: Transfer,
    },
    /// `call.merged`: the call `id` now continues as `into`.
    Merged { id: String, into: String },
    /// `call.ended`: the final merged record.
    Ended {
        call: CallSummary,
        record: Box<CallRecord>,
    },
    /// `phone.state`: the phone as `GET /api/v1/phones/{ext}` shows it, and what changed it.
    Phone {
        #[schema(value_type = crate::phone::registry::PhoneInfo)]
        phone: Box<serde_json::Value>,
        cause: String,
    },
    /// `dial.status`: the click-to-call request's status, as the dial API reports it.
    #[schema(value_type = crate::control::DialStatus)]
    Dial(Box<serde_json::Value>),
    /// `gap`.
    Gap {
        pbx: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        reason: String,
    },
}

/// One event before the hub numbers it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LiveEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When it happened (the time of the input that caused it).
    pub at: DateTime<Utc>,
    pub call_id: Option<String>,
    /// Extensions concerned, sorted and unique.
    pub extensions: Vec<String>,
    pub data: EventData,
}

impl LiveEvent {
    /// An event about a call: `call_id` and `extensions` come from the record.
    pub fn call(kind: EventType, at: DateTime<Utc>, record: &CallRecord, data: EventData) -> Self {
        LiveEvent {
            kind,
            at,
            call_id: Some(record.id.clone()),
            extensions: call_extensions(record),
            data,
        }
    }

    /// `phone.state` for `extension`; `phone` is the phone's API view.
    pub fn phone_state(
        at: DateTime<Utc>,
        extension: &str,
        phone: serde_json::Value,
        cause: impl Into<String>,
    ) -> Self {
        LiveEvent {
            kind: EventType::PhoneState,
            at,
            call_id: None,
            extensions: vec![extension.to_string()],
            data: EventData::Phone {
                phone: Box::new(phone),
                cause: cause.into(),
            },
        }
    }

    /// `dial.status`: `status` is the request's status object as the dial API serialises it;
    /// `extension` is the phone that dials, `call_id` the record once the call is known.
    pub fn dial_status(
        at: DateTime<Utc>,
        extension: Option<&str>,
        call_id: Option<String>,
        status: serde_json::Value,
    ) -> Self {
        LiveEvent {
            kind: EventType::DialStatus,
            at,
            call_id,
            extensions: extension.map(|e| vec![e.to_string()]).unwrap_or_default(),
            data: EventData::Dial(Box::new(status)),
        }
    }

    /// `gap`: AMI traffic of `pbx` (`*`: every source) between `from` and `to` was not seen.
    pub fn gap(
        at: DateTime<Utc>,
        pbx: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        reason: &str,
    ) -> Self {
        LiveEvent {
            kind: EventType::Gap,
            at,
            call_id: None,
            extensions: Vec::new(),
            data: EventData::Gap {
                pbx: pbx.to_string(),
                from,
                to,
                reason: reason.to_string(),
            },
        }
    }
}

/// Every extension a call involves: its parties, the endpoints of its legs, who answered,
/// and transfer parties. Sorted, unique.
pub fn call_extensions(r: &CallRecord) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: Option<&str>| {
        if let Some(s) = s.filter(|s| !s.is_empty()) {
            if let Err(pos) = out.binary_search_by(|x| x.as_str().cmp(s)) {
                out.insert(pos, s.to_string());
            }
        }
    };
    add(r.from.extension.as_deref());
    add(r.to.extension.as_deref());
    for leg in &r.legs {
        add(leg.endpoint.as_deref());
    }
    for t in &r.transfers {
        add(t.by.as_deref());
        add(t.to.as_deref());
    }
    if r.direction != Direction::Outbound {
        add(r.answered_by.as_deref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{t}\""));
        }
        assert!("call.exploded".parse::<EventType>().is_err());
    }

    #[test]
    fn gap_serialises_in_the_envelope() {
        let t = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        let e = LiveEvent::gap(t, "default", t, t, "AMI link down");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "gap");
        assert_eq!(v["call_id"], serde_json::Value::Null);
        assert_eq!(v["data"]["pbx"], "default");
        assert_eq!(v["data"]["reason"], "AMI link down");
    }
}
