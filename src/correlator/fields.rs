//! One pass over an AMI event, keeping only the fields the correlator reads.
//!
//! Why a dedicated extractor instead of [`AmiMessage::get`]: `get` scans the field list once per
//! key, and a channel event has ~20 fields of which the correlator needs ~12, spread over up to
//! nine *channel snapshots* (`Channel`, `DestChannel`, `TransfererChannel`, …). Walking the
//! fields once and sorting each key into a slot costs one suffix/prefix comparison per field,
//! allocates nothing, and borrows the values from the message.
//!
//! Rules (AMI semantics): keys are compared ignoring ASCII case; for a key that repeats, the
//! first value wins (as in Asterisk's own `astman_get_header`), except `ChanVariable`, which is
//! a list of `NAME=value` pairs. An empty value counts as absent.

use crate::ami::AmiMessage;

/// The channel snapshots an event can carry, by key prefix.
pub(super) const BASE: usize = 0;
pub(super) const DEST: usize = 1;
pub(super) const TRANSFERER: usize = 2;
pub(super) const TRANSFEREE: usize = 3;
pub(super) const ORIG_TRANSFERER: usize = 4;
pub(super) const SECOND_TRANSFERER: usize = 5;
pub(super) const TRANSFER_TARGET: usize = 6;
pub(super) const LOCAL_ONE: usize = 7;
pub(super) const LOCAL_TWO: usize = 8;
const SNAPSHOTS: usize = 9;

/// Key prefixes of the snapshots above, in the same order (`""` is the event's own channel).
const PREFIXES: [&str; SNAPSHOTS] = [
    "",
    "Dest",
    "Transferer",
    "Transferee",
    "OrigTransferer",
    "SecondTransferer",
    "TransferTarget",
    "LocalOne",
    "LocalTwo",
];

/// The channel variable the dialplan fills with the leg's SIP Call-ID (see the fixtures README).
pub(super) const SIPCALLID_VAR: &str = "SIPCALLID";
/// The channel variable a click-to-call request id travels in.
pub(super) const REQUEST_ID_VAR: &str = "CTIBRIDGE_REQUEST_ID";

/// The fields of one channel snapshot (all optional: events carry what they carry).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Snap<'a> {
    pub channel: Option<&'a str>,
    pub uniqueid: Option<&'a str>,
    pub linkedid: Option<&'a str>,
    pub state: Option<&'a str>,
    pub caller_num: Option<&'a str>,
    pub caller_name: Option<&'a str>,
    pub connected_num: Option<&'a str>,
    pub connected_name: Option<&'a str>,
    pub context: Option<&'a str>,
    pub exten: Option<&'a str>,
    /// `ChanVariable: SIPCALLID=<value>` with a non-empty value.
    pub sip_call_id: Option<&'a str>,
    /// `ChanVariable: CTIBRIDGE_REQUEST_ID=<value>` with a non-empty value.
    pub request_id: Option<&'a str>,
}

/// Snapshot field names, matched as key suffixes. Longer names that share a tail with a shorter
/// one never collide here (`ChannelState` does not end with `Channel`), so order is free.
#[derive(Clone, Copy)]
enum SnapField {
    Channel,
    Uniqueid,
    Linkedid,
    State,
    CallerNum,
    CallerName,
    ConnectedNum,
    ConnectedName,
    Context,
    Exten,
    ChanVariable,
}

const SNAP_FIELDS: [(&str, SnapField); 11] = [
    ("Channel", SnapField::Channel),
    ("Uniqueid", SnapField::Uniqueid),
    ("Linkedid", SnapField::Linkedid),
    ("ChannelState", SnapField::State),
    ("CallerIDNum", SnapField::CallerNum),
    ("CallerIDName", SnapField::CallerName),
    ("ConnectedLineNum", SnapField::ConnectedNum),
    ("ConnectedLineName", SnapField::ConnectedName),
    ("Context", SnapField::Context),
    ("Exten", SnapField::Exten),
    ("ChanVariable", SnapField::ChanVariable),
];

/// Everything the correlator reads from one AMI event.
#[derive(Debug, Default)]
pub(super) struct Fields<'a> {
    pub snaps: [Snap<'a>; SNAPSHOTS],
    pub dial_status: Option<&'a str>,
    pub dial_string: Option<&'a str>,
    pub cause: Option<&'a str>,
    pub cause_txt: Option<&'a str>,
    pub variable: Option<&'a str>,
    pub value: Option<&'a str>,
    pub result: Option<&'a str>,
    pub extension: Option<&'a str>,
    pub dest_type: Option<&'a str>,
    pub response: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub action_id: Option<&'a str>,
    pub duration: Option<&'a str>,
}

/// Non-snapshot keys, matched exactly (ignoring case).
#[derive(Clone, Copy)]
enum Plain {
    DialStatus,
    DialString,
    Cause,
    CauseTxt,
    Variable,
    Value,
    Result,
    Extension,
    DestType,
    Response,
    Reason,
    ActionId,
    Duration,
    /// Keys that look like snapshot fields but are not (`BridgeUniqueid`, …): skipped.
    Ignore,
}

const PLAIN: [(&str, Plain); 17] = [
    ("DialStatus", Plain::DialStatus),
    ("DialString", Plain::DialString),
    ("Cause", Plain::Cause),
    ("Cause-txt", Plain::CauseTxt),
    ("Variable", Plain::Variable),
    ("Value", Plain::Value),
    ("Result", Plain::Result),
    ("Extension", Plain::Extension),
    ("DestType", Plain::DestType),
    ("Response", Plain::Response),
    ("Reason", Plain::Reason),
    ("ActionID", Plain::ActionId),
    ("Duration", Plain::Duration),
    ("Event", Plain::Ignore),
    ("BridgeUniqueid", Plain::Ignore),
    ("DestBridgeUniqueid", Plain::Ignore),
    ("ChannelStateDesc", Plain::Ignore),
];

fn eq_ci(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Which snapshot and field a key like `DestCallerIDNum` names, if any.
fn snapshot_key(key: &[u8]) -> Option<(usize, SnapField)> {
    for (suffix, field) in SNAP_FIELDS {
        let s = suffix.as_bytes();
        if key.len() < s.len() || !key[key.len() - s.len()..].eq_ignore_ascii_case(s) {
            continue;
        }
        let prefix = &key[..key.len() - s.len()];
        return PREFIXES
            .iter()
            .position(|p| eq_ci(prefix, p))
            .map(|i| (i, field));
    }
    None
}

fn plain_key(key: &[u8]) -> Option<Plain> {
    PLAIN
        .iter()
        .find(|(name, _)| name.len() == key.len() && eq_ci(key, name))
        .map(|(_, p)| *p)
}

fn set<'a>(slot: &mut Option<&'a str>, value: &'a str) {
    if slot.is_none() && !value.is_empty() {
        *slot = Some(value);
    }
}

/// The event name (`Event:` header), read without walking the whole message when, as always
/// on the wire, it is the first field.
pub(super) fn event_name(msg: &AmiMessage) -> Option<&str> {
    match msg.iter().next() {
        Some((k, v)) if k.eq_ignore_ascii_case("Event") => Some(v),
        _ => msg.event_name(),
    }
}

/// Extracts the fields of `msg` in one pass.
pub(super) fn parse(msg: &AmiMessage) -> Fields<'_> {
    let mut f = Fields::default();
    for (key, value) in msg.iter() {
        let k = key.as_bytes();
        if let Some(p) = plain_key(k) {
            let slot = match p {
                Plain::DialStatus => &mut f.dial_status,
                Plain::DialString => &mut f.dial_string,
                Plain::Cause => &mut f.cause,
                Plain::CauseTxt => &mut f.cause_txt,
                Plain::Variable => &mut f.variable,
                Plain::Value => &mut f.value,
                Plain::Result => &mut f.result,
                Plain::Extension => &mut f.extension,
                Plain::DestType => &mut f.dest_type,
                Plain::Response => &mut f.response,
                Plain::Reason => &mut f.reason,
                Plain::ActionId => &mut f.action_id,
                Plain::Duration => &mut f.duration,
                Plain::Ignore => continue,
            };
            set(slot, value);
            continue;
        }
        let Some((i, field)) = snapshot_key(k) else {
            continue;
        };
        let snap = &mut f.snaps[i];
        match field {
            SnapField::Channel => set(&mut snap.channel, value),
            SnapField::Uniqueid => set(&mut snap.uniqueid, value),
            SnapField::Linkedid => set(&mut snap.linkedid, value),
            SnapField::State => set(&mut snap.state, value),
            SnapField::CallerNum => set(&mut snap.caller_num, value),
            SnapField::CallerName => set(&mut snap.caller_name, value),
            SnapField::ConnectedNum => set(&mut snap.connected_num, value),
            SnapField::ConnectedName => set(&mut snap.connected_name, value),
            SnapField::Context => set(&mut snap.context, value),
            SnapField::Exten => set(&mut snap.exten, value),
            SnapField::ChanVariable => {
                if let Some((name, v)) = value.split_once('=') {
                    let name = name.trim_start_matches('_');
                    if name.eq_ignore_ascii_case(SIPCALLID_VAR) {
                        set(&mut snap.sip_call_id, v);
                    } else if name.eq_ignore_ascii_case(REQUEST_ID_VAR) {
                        set(&mut snap.request_id, v);
                    }
                }
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_prefixed_snapshots_and_plain_keys() {
        let msg = AmiMessage::event("DialBegin")
            .field("Channel", "PJSIP/101-00000000")
            .field("uniqueid", "1.0")
            .field("Linkedid", "1.0")
            .field("ChanVariable", "SIPCALLID=abc@x")
            .field("DestChannel", "PJSIP/102-00000001")
            .field("DestUniqueid", "1.1")
            .field("DestChanVariable", "SIPCALLID=")
            .field("DestChanVariable", "CTIBRIDGE_REQUEST_ID=req-1")
            .field("DialString", "102")
            .field("BridgeUniqueid", "b-1")
            .field("ChannelStateDesc", "Ring")
            .field("ChannelState", "4")
            .build()
            .unwrap();
        let f = parse(&msg);
        assert_eq!(event_name(&msg), Some("DialBegin"));
        assert_eq!(f.snaps[BASE].channel, Some("PJSIP/101-00000000"));
        assert_eq!(f.snaps[BASE].uniqueid, Some("1.0"));
        assert_eq!(f.snaps[BASE].state, Some("4"));
        assert_eq!(f.snaps[BASE].sip_call_id, Some("abc@x"));
        assert_eq!(f.snaps[DEST].uniqueid, Some("1.1"));
        assert_eq!(f.snaps[DEST].sip_call_id, None, "empty means not known yet");
        assert_eq!(f.snaps[DEST].request_id, Some("req-1"));
        assert_eq!(f.dial_string, Some("102"));
    }

    #[test]
    fn first_value_wins_and_unknown_prefixes_are_ignored() {
        let msg = AmiMessage::event("UserEvent")
            .field("Exten", "*78")
            .field("Exten", "101")
            .field("SourceUniqueid", "9.9")
            .build()
            .unwrap();
        let f = parse(&msg);
        assert_eq!(f.snaps[BASE].exten, Some("*78"));
        assert!(f.snaps.iter().all(|s| s.uniqueid.is_none()));
    }
}
