//! One pass over an AMI event, keeping only the fields the correlator reads.
//!
//! Why a dedicated extractor instead of [`AmiMessage::get`]: `get` scans the field list once per
//! key, and a channel event has ~20 fields of which the correlator needs ~12, spread over up to
//! nine *channel snapshots* (`Channel`, `DestChannel`, `TransfererChannel`, …). Walking the
//! field offsets the decoder already found, once, and sorting each key into a slot through one
//! lookup in a table of every key we read ([`KeyTable`]) allocates nothing, borrows the values
//! from the message, and does not re-scan the text.
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
/// The variable `Dial` sets on the calling channel when it returns: the outcome of the dial
/// attempt, also when no outgoing channel could be created (`CHANUNAVAIL`).
pub(super) const DIALSTATUS_VAR: &str = "DIALSTATUS";

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

/// Snapshot field names: a snapshot key is one of [`PREFIXES`] followed by one of these.
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

/// Non-snapshot keys, matched exactly (ignoring case); every other key is skipped.
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
}

const PLAIN: [(&str, Plain); 13] = [
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
];

/// Where a key's value goes.
#[derive(Clone, Copy)]
enum Slot {
    Plain(Plain),
    /// Snapshot index ([`BASE`], [`DEST`], …) and field.
    Snap(u8, SnapField),
}

/// Slots of [`KeyTable`]: a power of two, about five times the number of keys, so that a
/// lookup usually inspects one slot.
const TABLE_SLOTS: usize = 512;

/// Every key the correlator reads (9 snapshot prefixes × 10 fields, plus the plain keys),
/// as an open-addressing hash table keyed by a case-folded fingerprint of the key.
///
/// Why not a `HashMap` of lowercased keys: a channel event has 20–40 fields, so this lookup
/// runs ~25 times per event. Lowercasing each key into a buffer and hashing all its bytes
/// cost ~200 instructions per field; the fingerprint (length, first and last 8 bytes, each
/// folded with `| 0x20`) is three loads and a multiply, and one case-insensitive comparison
/// confirms a hit. Keys that differ only in ASCII case have the same fingerprint; different
/// keys with the same fingerprint are told apart by that comparison.
struct KeyTable {
    slots: Vec<Option<(&'static str, Slot)>>,
}

/// Eight bytes of `b` as a word: the first eight, or for a shorter `b` its first and last
/// four (overlapping), or its bytes (under four). Only ever compared with itself, so any
/// fixed rule works; this one is two or three plain loads, no `memcpy` call.
#[inline]
fn word(b: &[u8]) -> u64 {
    let n = b.len();
    if let Some(w) = b.first_chunk::<8>() {
        u64::from_le_bytes(*w)
    } else if n >= 4 {
        let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let hi = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
        u64::from(lo) | (u64::from(hi) << 32)
    } else {
        b.iter().fold(0, |w, &c| (w << 8) | u64::from(c))
    }
}

/// Slot index of a key: its length and first and last eight bytes, ASCII letters folded to
/// lowercase (`| 0x20` also folds some non-letters together; the comparison on a hit sorts
/// that out).
#[inline]
fn fingerprint(key: &[u8]) -> usize {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    let first = word(key) | FOLD;
    let last = word(&key[key.len().saturating_sub(8)..]) | FOLD;
    let h = (first ^ last.rotate_left(29) ^ key.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - TABLE_SLOTS.trailing_zeros())) as usize
}

impl KeyTable {
    fn get() -> &'static KeyTable {
        static TABLE: std::sync::OnceLock<KeyTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(KeyTable::build)
    }

    fn build() -> KeyTable {
        let mut entries: Vec<(&'static str, Slot)> = Vec::new();
        for (i, prefix) in PREFIXES.iter().enumerate() {
            for (suffix, field) in SNAP_FIELDS {
                // Built once per process and kept for its lifetime (90 short names).
                let name: &'static str = Box::leak(format!("{prefix}{suffix}").into_boxed_str());
                entries.push((name, Slot::Snap(i as u8, field)));
            }
        }
        for (name, plain) in PLAIN {
            entries.push((name, Slot::Plain(plain)));
        }
        let mut slots = vec![None; TABLE_SLOTS];
        for (name, slot) in entries {
            let mut i = fingerprint(name.as_bytes());
            while slots[i].is_some() {
                i = (i + 1) % TABLE_SLOTS;
            }
            slots[i] = Some((name, slot));
        }
        KeyTable { slots }
    }

    /// The slot of `key` (ignoring ASCII case), if the correlator reads it.
    #[inline]
    fn find(&self, key: &[u8]) -> Option<Slot> {
        if key.is_empty() {
            return None;
        }
        let mut i = fingerprint(key);
        loop {
            let (name, slot) = self.slots[i]?;
            // Asterisk sends the canonical spelling: a plain comparison settles nearly every
            // hit; other spellings take the byte-by-byte case-insensitive one.
            if name.len() == key.len()
                && (name.as_bytes() == key || name.as_bytes().eq_ignore_ascii_case(key))
            {
                return Some(slot);
            }
            i = (i + 1) % TABLE_SLOTS;
        }
    }
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

/// The event name (`Event:` header): the first field, as always on the wire, else looked up.
pub(super) fn event_name(msg: &AmiMessage) -> Option<&str> {
    match msg.iter().next() {
        Some((k, v)) if k.eq_ignore_ascii_case("Event") => Some(v),
        _ => msg.event_name(),
    }
}

/// Extracts the fields of `msg` in one pass over the field offsets the decoder already found
/// (no re-scanning of the text, no UTF-8 re-validation: see [`AmiMessage`]).
pub(super) fn parse(msg: &AmiMessage) -> Fields<'_> {
    let table = KeyTable::get();
    let mut f = Fields::default();
    for (key, value) in msg.iter() {
        if value.is_empty() {
            continue; // an empty value counts as absent
        }
        match table.find(key.as_bytes()) {
            None => {}
            Some(Slot::Plain(p)) => {
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
                };
                set(slot, value);
            }
            Some(Slot::Snap(i, field)) => {
                let snap = f.snap_mut(i as usize);
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

    /// The table lookup reads exactly what the message API says, for every recorded event:
    /// the first non-empty value of each snapshot key and plain key.
    #[test]
    fn parse_agrees_with_the_message_api_on_every_fixture() {
        let first = |m: &AmiMessage, key: &str| -> Option<String> {
            m.iter()
                .filter(|(k, v)| k.eq_ignore_ascii_case(key) && !v.is_empty())
                .map(|(_, v)| v.to_string())
                .next()
        };
        let mut checked = 0;
        for scenario in crate::sim::fixtures::embedded_scenarios() {
            for m in &scenario.messages {
                let msg = &m.msg;
                let f = parse(msg);
                assert_eq!(event_name(msg), msg.event_name());
                for (i, prefix) in PREFIXES.iter().enumerate() {
                    let s = f.snap(i);
                    let get = |field: &str| first(msg, &format!("{prefix}{field}"));
                    let own = |v: Option<&str>| v.map(str::to_string);
                    assert_eq!(own(s.channel), get("Channel"), "{msg:?}");
                    assert_eq!(own(s.uniqueid), get("Uniqueid"));
                    assert_eq!(own(s.linkedid), get("Linkedid"));
                    assert_eq!(own(s.state), get("ChannelState"));
                    assert_eq!(own(s.caller_num), get("CallerIDNum"));
                    assert_eq!(own(s.caller_name), get("CallerIDName"));
                    assert_eq!(own(s.connected_num), get("ConnectedLineNum"));
                    assert_eq!(own(s.context), get("Context"));
                    assert_eq!(own(s.exten), get("Exten"));
                    let sip = msg
                        .get_all(&format!("{prefix}ChanVariable"))
                        .filter_map(|v| v.split_once('='))
                        .find(|(n, v)| {
                            n.trim_start_matches('_')
                                .eq_ignore_ascii_case(SIPCALLID_VAR)
                                && !v.is_empty()
                        })
                        .map(|(_, v)| v.to_string());
                    assert_eq!(own(s.sip_call_id), sip);
                }
                for (name, get) in [
                    ("DialStatus", f.dial_status),
                    ("DialString", f.dial_string),
                    ("Cause", f.cause),
                    ("Cause-txt", f.cause_txt),
                    ("Variable", f.variable),
                    ("Value", f.value),
                    ("Result", f.result),
                    ("Extension", f.extension),
                    ("Response", f.response),
                    ("Reason", f.reason),
                    ("ActionID", f.action_id),
                    ("Duration", f.duration),
                ] {
                    assert_eq!(get.map(str::to_string), first(msg, name), "{name}");
                }
                checked += 1;
            }
        }
        assert!(checked > 1000);
    }

    #[test]
    fn every_known_key_is_found_in_any_case_and_others_are_not() {
        let table = KeyTable::get();
        let known: Vec<&str> = table.slots.iter().flatten().map(|(n, _)| *n).collect();
        assert_eq!(
            known.len(),
            PREFIXES.len() * SNAP_FIELDS.len() + PLAIN.len()
        );
        for name in &known {
            for variant in [
                name.to_string(),
                name.to_ascii_lowercase(),
                name.to_ascii_uppercase(),
            ] {
                match table.find(variant.as_bytes()) {
                    Some(Slot::Snap(i, _)) => {
                        assert!(name.len() >= PREFIXES[i as usize].len(), "{variant}")
                    }
                    Some(Slot::Plain(_)) => assert!(PLAIN.iter().any(|(p, _)| p == name)),
                    None => panic!("{variant} not found"),
                }
            }
        }
        for other in [
            "",
            "Privilege",
            "ChannelStateDesc",
            "BridgeUniqueid",
            "SpyerChannel",
            "Channe",
            "Channel_",
            "XChannel",
            "Event",
            "DestChannelX",
            // Folds like `Cause-txt` (0x0d | 0x20 is `-`): only the comparison tells them apart.
            "Cause\rtxt",
        ] {
            assert!(table.find(other.as_bytes()).is_none(), "{other}");
        }
    }

    #[test]
    fn keys_ignore_case_and_unknown_or_long_keys_are_skipped() {
        let long = "X".repeat(100);
        let msg = AmiMessage::event("Newchannel")
            .field("DESTCALLERIDNUM", "102")
            .field("localtwouniqueid", "7.7")
            .field(long.as_str(), "v")
            .field("DestBridgeUniqueid", "b-1")
            .build()
            .unwrap();
        let f = parse(&msg);
        assert_eq!(f.snap(DEST).caller_num, Some("102"));
        assert_eq!(f.snap(LOCAL_TWO).uniqueid, Some("7.7"));
        assert_eq!(f.snap(BASE).uniqueid, None);
        assert_eq!(f.snap(DEST).uniqueid, None);
    }
}
