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
use memchr::{memchr, memchr_iter};

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

/// Key prefixes of the snapshots above, in the same order (`""` is the event's own channel):
/// the first entries of the AMI list (Spyer/Spyee are not followed).
const PREFIXES: &[&str] = {
    let (followed, _) = crate::ami::SNAPSHOT_PREFIXES.split_at(SNAPSHOTS);
    followed
};

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
    Context,
    Exten,
    ChanVariable,
}

const SNAP_FIELDS: [(&str, SnapField); 10] = [
    ("Channel", SnapField::Channel),
    ("Uniqueid", SnapField::Uniqueid),
    ("Linkedid", SnapField::Linkedid),
    ("ChannelState", SnapField::State),
    ("CallerIDNum", SnapField::CallerNum),
    ("CallerIDName", SnapField::CallerName),
    ("ConnectedLineNum", SnapField::ConnectedNum),
    ("Context", SnapField::Context),
    ("Exten", SnapField::Exten),
    ("ChanVariable", SnapField::ChanVariable),
];

const NO_SNAP: Snap<'static> = Snap {
    channel: None,
    uniqueid: None,
    linkedid: None,
    state: None,
    caller_num: None,
    caller_name: None,
    connected_num: None,
    context: None,
    exten: None,
    sip_call_id: None,
    request_id: None,
};

/// Everything the correlator reads from one AMI event.
///
/// The event's own and the `Dest` snapshot are inline; the transfer and Local snapshots, rare,
/// are boxed on first use, so that the common case stays small (no 2 KiB struct to zero and
/// move per event).
#[derive(Debug, Default)]
pub(super) struct Fields<'a> {
    base: Snap<'a>,
    dest: Snap<'a>,
    more: Option<Box<[Snap<'a>; SNAPSHOTS - 2]>>,
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

impl<'a> Fields<'a> {
    /// Snapshot `i` ([`BASE`], [`DEST`], …); empty when the event has none.
    pub fn snap(&self, i: usize) -> &Snap<'a> {
        match i {
            BASE => &self.base,
            DEST => &self.dest,
            _ => self
                .more
                .as_ref()
                .and_then(|m| m.get(i - 2))
                .unwrap_or(&NO_SNAP),
        }
    }

    fn snap_mut(&mut self, i: usize) -> &mut Snap<'a> {
        match i {
            BASE => &mut self.base,
            DEST => &mut self.dest,
            _ => {
                let more = self
                    .more
                    .get_or_insert_with(|| Box::new([NO_SNAP; SNAPSHOTS - 2]));
                &mut more[(i - 2).min(SNAPSHOTS - 3)]
            }
        }
    }
}

fn set<'a>(slot: &mut Option<&'a str>, value: &'a str) {
    if slot.is_none() && !value.is_empty() {
        *slot = Some(value);
    }
}

/// Splits a line into key and value the way the AMI codec does: the key ends at the first
/// `": "`; a line without `": "` but with a `:` has its key end at the first `:`.
fn split_line(line: &str) -> Option<(&str, &str)> {
    let b = line.as_bytes();
    let first = memchr(b':', b)?;
    let mut colon = first;
    loop {
        if b.get(colon + 1) == Some(&b' ') {
            return Some((&line[..colon], &line[colon + 2..]));
        }
        match memchr(b':', &b[colon + 1..]) {
            Some(next) => colon += 1 + next,
            None => return Some((&line[..first], &line[first + 1..])),
        }
    }
}

/// The lines of `raw` without their `\n` / `\r\n` terminators.
fn lines(raw: &str) -> impl Iterator<Item = &str> {
    let b = raw.as_bytes();
    let mut start = 0;
    memchr_iter(b'\n', b)
        .chain(std::iter::once(b.len()))
        .filter_map(move |nl| {
            let begin = start;
            start = nl + 1;
            let end = if nl > begin && b[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            raw.get(begin..end)
        })
}

/// The fields of an event in wire order, read straight from its raw text: one UTF-8 check for
/// the whole message instead of one per key and value. Same result as [`AmiMessage::iter`]
/// for events (checked by a test); anything odd falls back to `iter`.
fn for_each_field<'a>(msg: &'a AmiMessage, mut f: impl FnMut(&'a str, &'a str)) {
    let raw = msg.raw_str();
    if raw.is_empty() {
        msg.iter().for_each(|(k, v)| f(k, v));
        return;
    }
    for line in lines(raw) {
        if let Some((k, v)) = split_line(line) {
            f(k, v);
        }
    }
}

/// The event name (`Event:` header), read from the first line when, as always on the wire, it
/// is the first field.
pub(super) fn event_name(msg: &AmiMessage) -> Option<&str> {
    match lines(msg.raw_str()).next().and_then(split_line) {
        Some((k, v)) if k.eq_ignore_ascii_case("Event") => Some(v),
        _ => msg.event_name(),
    }
}

/// Extracts the fields of `msg` in one pass.
pub(super) fn parse(msg: &AmiMessage) -> Fields<'_> {
    let mut f = Fields::default();
    for_each_field(msg, |key, value| {
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
                Plain::Ignore => return,
            };
            set(slot, value);
            return;
        }
        let Some((i, field)) = snapshot_key(k) else {
            return;
        };
        let snap = f.snap_mut(i);
        match field {
            SnapField::Channel => set(&mut snap.channel, value),
            SnapField::Uniqueid => set(&mut snap.uniqueid, value),
            SnapField::Linkedid => set(&mut snap.linkedid, value),
            SnapField::State => set(&mut snap.state, value),
            SnapField::CallerNum => set(&mut snap.caller_num, value),
            SnapField::CallerName => set(&mut snap.caller_name, value),
            SnapField::ConnectedNum => set(&mut snap.connected_num, value),
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
    });
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
        assert_eq!(f.snap(BASE).channel, Some("PJSIP/101-00000000"));
        assert_eq!(f.snap(BASE).uniqueid, Some("1.0"));
        assert_eq!(f.snap(BASE).state, Some("4"));
        assert_eq!(f.snap(BASE).sip_call_id, Some("abc@x"));
        assert_eq!(f.snap(DEST).uniqueid, Some("1.1"));
        assert_eq!(f.snap(DEST).sip_call_id, None, "empty means not known yet");
        assert_eq!(f.snap(DEST).request_id, Some("req-1"));
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
        assert_eq!(f.snap(BASE).exten, Some("*78"));
        assert!((0..SNAPSHOTS).all(|i| f.snap(i).uniqueid.is_none()));
    }

    #[test]
    fn raw_reading_equals_the_message_api() {
        let mut checked = 0;
        for scenario in crate::sim::fixtures::embedded_scenarios() {
            for m in &scenario.messages {
                let mut mine = Vec::new();
                for_each_field(&m.msg, |k, v| mine.push((k, v)));
                let api: Vec<(&str, &str)> = m.msg.iter().collect();
                assert_eq!(mine, api);
                assert_eq!(event_name(&m.msg), m.msg.event_name());
                checked += 1;
            }
        }
        assert!(checked > 1000);
        for raw in [
            "Event: X\nA: b: c\nEmpty: \nNoSpace:v\nK:a:b\n\n",
            "Event: Y\r\nValue: a:b\r\nURL: http://x: y\r\n\r\n",
        ] {
            let msg = crate::ami::parse_message(raw.as_bytes(), 4096).unwrap();
            let mut mine = Vec::new();
            for_each_field(&msg, |k, v| mine.push((k, v)));
            assert_eq!(mine, msg.iter().collect::<Vec<_>>(), "{raw:?}");
        }
    }
}
