//! The state kept per channel (one leg of a call), and what a channel name tells us.
//!
//! Only the handful of fields the record needs are kept, as [`Text`]s (short ones inline),
//! never the AMI message itself: a live call costs a few hundred bytes per leg.
//!
//! The state is serialisable for [`super::CorrelatorSnapshot`]: empty and default fields are
//! left out of the JSON to keep snapshots small.

use super::text::Text;
use crate::record::PhoneView;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Channel state numbers (`ChannelState`) the correlator cares about.
pub(super) const STATE_UP: u8 = 6;

/// A caller ID pair as it was at some point.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct CallerId {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Text>,
}

/// [`Leg::dial_result`] when no `DIALSTATUS` was seen (distinct from every status code).
pub(super) const NO_DIAL_RESULT: u8 = u8::MAX - 1;
const _: () = assert!(NO_DIAL_RESULT as usize >= super::call::DIAL_STATUSES.len());
const _: () = assert!(NO_DIAL_RESULT != super::call::OTHER_STATUS);

fn no_dial_result() -> u8 {
    NO_DIAL_RESULT
}

fn is_no_dial_result(v: &u8) -> bool {
    *v == NO_DIAL_RESULT
}

pub(super) fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Where a leg sits: conversation key and index in its `legs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LegRef {
    pub conv: u64,
    pub idx: u32,
}

/// One channel of a conversation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct Leg {
    pub uniqueid: Text,
    /// Name as first seen (`PJSIP/101-00000000`).
    pub channel: Text,
    /// The channel's current `Linkedid` (it changes after an attended transfer).
    pub linkedid: Text,
    /// A `Local/…;1` or `;2` half: followed through, never a party. (Like `endpoint_at`,
    /// worked out from `channel`, so not stored in snapshots.)
    #[serde(skip)]
    pub local: bool,
    /// Where [`Leg::endpoint`] lies in `channel` (start, end); empty when it has none. Kept
    /// because the endpoint is asked for many times per record and per phone callback.
    #[serde(skip)]
    endpoint_at: (u16, u16),
    /// The caller ID before it first changed (only kept once it changed: until then the
    /// current one is also the first one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_caller: Option<Box<CallerId>>,
    /// The caller ID as of the first `DialBegin` this leg made, kept once it changed since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dial_caller: Option<Box<CallerId>>,
    /// This leg called someone (`DialBegin` with it as the calling channel).
    #[serde(skip_serializing_if = "is_false")]
    pub has_dialled: bool,
    /// Current caller ID and connected line number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_num: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_name: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_num: Option<Text>,
    /// Context as first seen: the endpoint's own context for a dialled PJSIP channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Text>,
    /// First `Exten` that is not `s`: what the originating channel dialled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exten: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_call_id: Option<Text>,
    pub state: u8,
    pub started_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hangup_cause: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hangup_text: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dial_status: Option<Text>,
    /// The last non-empty `DIALSTATUS` the dialplan's `Dial` set on this channel (the outcome
    /// of a dial *it* made), as its index in [`super::call::DIAL_STATUSES`] (or
    /// [`super::call::OTHER_STATUS`]); [`NO_DIAL_RESULT`] when none. Decides the disposition
    /// of a call without any dialled leg (`Dial` could not create one). Internal: not the
    /// record's `dial_status`. (A plain `u8` with a sentinel: it fits in the padding after the
    /// flags, where an `Option<u8>` made every leg 8 bytes larger.)
    #[serde(default = "no_dial_result", skip_serializing_if = "is_no_dial_result")]
    pub dial_result: u8,
    /// The destination of a `DialBegin` that had a calling channel.
    #[serde(skip_serializing_if = "is_false")]
    pub dialled: bool,
    /// The destination of an Originate (`DialBegin` without a calling channel, or the
    /// `Uniqueid` of an `OriginateResponse`).
    #[serde(skip_serializing_if = "is_false")]
    pub originated: bool,
    /// Created from an event other than `Newchannel` (we joined mid-call).
    #[serde(skip_serializing_if = "is_false")]
    pub joined_late: bool,
    /// Closed by a resync after an AMI gap (no Hangup was seen).
    #[serde(skip_serializing_if = "is_false")]
    pub closed_by_resync: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "is_zero")]
    pub hold_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<Box<PhoneView>>,
}

// A live call's size matters (docs/CORRELATION.md §10): a field added here should not grow
// every leg by accident.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Leg>() <= 360);

impl Leg {
    pub fn new(uniqueid: &str, channel: &str, linkedid: &str, started_at: DateTime<Utc>) -> Leg {
        let mut leg = Leg {
            uniqueid: uniqueid.into(),
            channel: Text::default(),
            linkedid: linkedid.into(),
            local: false,
            endpoint_at: (0, 0),
            first_caller: None,
            dial_caller: None,
            has_dialled: false,
            caller_num: None,
            caller_name: None,
            connected_num: None,
            context: None,
            exten: None,
            sip_call_id: None,
            state: 0,
            started_at,
            answered_at: None,
            ended_at: None,
            hangup_cause: None,
            hangup_text: None,
            dial_status: None,
            dial_result: NO_DIAL_RESULT,
            dialled: false,
            originated: false,
            joined_late: false,
            closed_by_resync: false,
            hold_since: None,
            hold_ms: 0,
            phone: None,
        };
        leg.set_channel(channel);
        leg
    }

    /// Works out `local` and the endpoint again from the channel name (after a snapshot is
    /// read back: they are not stored).
    pub fn refresh_channel(&mut self) {
        let channel = std::mem::take(&mut self.channel);
        self.set_channel(&channel);
    }

    /// Sets the channel name (and with it whether it is Local, and its endpoint).
    pub fn set_channel(&mut self, channel: &str) {
        self.channel = channel.into();
        self.local = is_local(channel);
        self.endpoint_at = match endpoint_of(channel) {
            Some(ep) if !self.local => {
                let start = ep.as_ptr() as usize - channel.as_ptr() as usize;
                match (u16::try_from(start), u16::try_from(start + ep.len())) {
                    (Ok(s), Ok(e)) => (s, e),
                    _ => (0, 0), // a channel name over 64 KiB: no endpoint
                }
            }
            _ => (0, 0),
        };
    }

    /// `PJSIP/101-00000000` → `101`; `None` for Local channels and unparsable names.
    pub fn endpoint(&self) -> Option<&str> {
        let (start, end) = self.endpoint_at;
        if start == end {
            return None;
        }
        self.channel.get(start as usize..end as usize)
    }

    /// Updates the caller ID from a snapshot (values without information are skipped). The
    /// first time a known value changes, the previous pair is kept as the first caller ID
    /// (and as the caller ID at dial time, if the leg has dialled). Returns whether anything
    /// changed.
    pub fn set_caller(&mut self, num: Option<&str>, name: Option<&str>) -> bool {
        let num = num.filter(|v| meaningful(v));
        let name = name.filter(|v| meaningful(v));
        let differs = |new: Option<&str>, old: &Option<Text>| match (new, old.as_deref()) {
            (Some(n), Some(o)) => n != o,
            _ => false,
        };
        if differs(num, &self.caller_num) || differs(name, &self.caller_name) {
            let old = CallerId {
                num: self.caller_num.clone(),
                name: self.caller_name.clone(),
            };
            if self.has_dialled && self.dial_caller.is_none() {
                self.dial_caller = Some(Box::new(old.clone()));
            }
            if self.first_caller.is_none() {
                self.first_caller = Some(Box::new(old));
            }
        }
        let mut changed = false;
        for (slot, new) in [(&mut self.caller_num, num), (&mut self.caller_name, name)] {
            if let Some(v) = new {
                if slot.as_deref() != Some(v) {
                    *slot = Some(v.into());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Caller ID as first seen.
    pub fn first_caller(&self) -> (Option<&str>, Option<&str>) {
        match &self.first_caller {
            Some(c) => (c.num.as_deref(), c.name.as_deref()),
            None => (self.caller_num.as_deref(), self.caller_name.as_deref()),
        }
    }

    /// Caller ID as of this leg's first `DialBegin` (the current one if it never dialled).
    pub fn dial_caller(&self) -> (Option<&str>, Option<&str>) {
        match &self.dial_caller {
            Some(c) => (c.num.as_deref(), c.name.as_deref()),
            None => (self.caller_num.as_deref(), self.caller_name.as_deref()),
        }
    }

    /// Closes an open hold period at `t`.
    pub fn close_hold(&mut self, t: DateTime<Utc>) {
        if let Some(since) = self.hold_since.take() {
            self.hold_ms += (t - since).num_milliseconds().max(0);
        }
    }

    /// Hold time so far, counting an open hold until `now`.
    pub fn hold_ms_until(&self, now: DateTime<Utc>) -> i64 {
        self.hold_ms
            + self
                .hold_since
                .map(|s| (now - s).num_milliseconds().max(0))
                .unwrap_or(0)
    }
}

/// `Local/…` channels (either half).
pub(super) fn is_local(channel: &str) -> bool {
    channel
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("Local/"))
}

/// The endpoint of a channel name: the part after `TECH/`, without the `-%08x` sequence
/// suffix Asterisk appends (`PJSIP/101-0000000a` → `101`, `SIP/trunk-a-00000001` →
/// `trunk-a`, `PJSIP/101` → `101`). `None` for Local channels and names without a `/`.
pub(super) fn endpoint_of(channel: &str) -> Option<&str> {
    if is_local(channel) {
        return None;
    }
    let (_, rest) = channel.split_once('/')?;
    let rest = match rest.rsplit_once('-') {
        Some((ep, seq)) if !ep.is_empty() && !seq.is_empty() && is_hex(seq) => ep,
        _ => rest,
    };
    (!rest.is_empty()).then_some(rest)
}

fn is_hex(s: &str) -> bool {
    (8..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A caller-ID value that carries information (`<unknown>` and empty do not).
pub(super) fn meaningful(v: &str) -> bool {
    !v.is_empty() && !v.eq_ignore_ascii_case("<unknown>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_channel_names() {
        assert_eq!(endpoint_of("PJSIP/101-0000000a"), Some("101"));
        assert_eq!(endpoint_of("PJSIP/provider-0000000f"), Some("provider"));
        assert_eq!(endpoint_of("SIP/150010001-0000002c"), Some("150010001"));
        assert_eq!(endpoint_of("PJSIP/101"), Some("101"));
        assert_eq!(endpoint_of("PJSIP/my-trunk"), Some("my-trunk"));
        assert_eq!(endpoint_of("PJSIP/my-cafe"), Some("my-cafe"));
        assert_eq!(endpoint_of("Local/600@internal-00000019;1"), None);
        assert_eq!(endpoint_of("garbage"), None);
        assert_eq!(endpoint_of("PJSIP/"), None);
        assert!(is_local("local/x@y-1;2"));
        assert!(!is_local("Loc"));
    }
}
