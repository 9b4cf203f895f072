//! Conversation state → [`CallRecord`]: roles, parties, direction, disposition, times.
//!
//! Roles of the legs (Local channels are never parties; they are followed through):
//! - the **originating leg**: the channel whose `Uniqueid` is the first call's `Linkedid`
//!   (else the first channel seen); when it is a Local half (an Originate through
//!   `Local/…`), the first real channel stands in for it. This is the `from` party — also for
//!   an Originate click-to-call, where it is the phone that rang first.
//! - **dialled legs**: destinations of a `DialBegin` that had a calling channel (directly or
//!   through Local halves), other than the originating leg.
//!
//! The rules themselves are listed, with examples, in `docs/CORRELATION.md`.

use super::call::{Conversation, Detail, StepKind, DIAL_STATUSES, NO_LEG, NO_REASON};
use super::channel::Leg;
use super::text::Text;
use super::Settings;
use crate::record::{self, CallRecord, Direction, Disposition, Party, Source, TimelineEntry};
use chrono::{DateTime, TimeDelta, Utc};
use smallvec::SmallVec;

/// How one dialled leg ended, for the disposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Rang and nobody answered, or the caller gave up.
    NoAnswer,
    Busy,
    Failed,
}

/// What a `DialStatus` / `DIALSTATUS` says about a leg that was not answered; `None` for
/// `ANSWER`, empty, and statuses that say nothing (`ABORT`, `CONTINUE`, `GOTO`…).
fn status_outcome(status: &str) -> Option<Outcome> {
    let is = |s: &str| status.eq_ignore_ascii_case(s);
    if is("BUSY") {
        Some(Outcome::Busy)
    } else if is("NOANSWER") || is("CANCEL") {
        Some(Outcome::NoAnswer)
    } else if is("CHANUNAVAIL")
        || is("CONGESTION")
        || is("DONTCALL")
        || is("TORTURE")
        || is("INVALIDARGS")
    {
        Some(Outcome::Failed)
    } else {
        None
    }
}

fn leg_outcome(l: &Leg) -> Outcome {
    let status = l.dial_status.as_deref().unwrap_or("");
    status_outcome(status).unwrap_or_else(|| cause_outcome(l.hangup_cause))
}

/// The outcome of a call without dialled legs, from its originating leg: the `DIALSTATUS` of
/// a `Dial` that could not create an outgoing channel (`CHANUNAVAIL`…), else its hangup cause
/// (a dialplan may well hang up with 16 "Normal Clearing" after a failed `Dial`).
fn origin_outcome(l: &Leg) -> Outcome {
    DIAL_STATUSES
        .get(l.dial_result as usize)
        .and_then(|s| status_outcome(s))
        .unwrap_or_else(|| cause_outcome(l.hangup_cause))
}

/// Q.850 causes seen on legs that were not answered: 17 busy; 16/18/19/21/26/31/127/0 and
/// none: nobody answered (or the caller gave up); anything else (unallocated number,
/// network out of order, congestion…): failed.
fn cause_outcome(cause: Option<u16>) -> Outcome {
    match cause {
        Some(17) => Outcome::Busy,
        None | Some(0 | 16 | 18 | 19 | 21 | 26 | 31 | 127) => Outcome::NoAnswer,
        Some(_) => Outcome::Failed,
    }
}

/// Context or endpoint names that give a trunk away when no phones are configured:
/// FreePBX-style `from-…` contexts other than `from-internal…` (`from-trunk`, `from-pstn`,
/// `from-provider`), names containing `trunk`, `pstn`, `provider`, `carrier`, `gateway`,
/// `external` or `inbound`, and endpoints named by a host name or IP address (`SIP/sip.carrier.net`).
pub(super) fn looks_like_trunk(context: Option<&str>, endpoint: &str) -> bool {
    const WORDS: [&str; 7] = [
        "trunk", "pstn", "provider", "carrier", "gateway", "external", "inbound",
    ];
    // Case-insensitive without allocating a lowercase copy (this runs for every leg of
    // every record built).
    let has_word = |s: &str| WORDS.iter().any(|w| contains_ignore_case(s, w));
    if let Some(c) = context {
        if starts_with_ignore_case(c, "from-") && !starts_with_ignore_case(c, "from-internal") {
            return true;
        }
        if has_word(c) {
            return true;
        }
    }
    has_word(endpoint) || endpoint.contains('.')
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// `needle` must be lowercase ASCII.
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let n = needle.as_bytes();
    hay.len() >= n.len()
        && hay
            .as_bytes()
            .windows(n.len())
            .any(|w| w.eq_ignore_ascii_case(n))
}

/// A leg whose endpoint is a trunk (see `docs/CORRELATION.md`, "Trunks").
pub(super) fn is_trunk(s: &Settings, leg: &Leg) -> bool {
    let Some(ep) = leg.endpoint() else {
        return false;
    };
    if s.trunks.contains(ep) {
        return true;
    }
    if s.has_phones() {
        return !s.is_phone(ep);
    }
    looks_like_trunk(leg.context.as_deref(), ep)
}

/// A dialled number that is one of our extensions although no leg was created for it: a
/// configured phone, or (with no phones configured) a short dial string of digits, `*`, `#`.
fn is_extension_number(s: &Settings, n: &str) -> bool {
    if s.has_phones() {
        return s.is_phone(n);
    }
    !n.is_empty()
        && n.len() <= 6
        && n.bytes()
            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
}

/// Seconds with millisecond precision, never negative.
fn secs(d: TimeDelta) -> f64 {
    let us = d.num_microseconds().unwrap_or(i64::MAX).max(0);
    ((us as f64) / 1000.0).round() / 1000.0
}

fn text(v: &Option<Text>) -> Option<String> {
    v.as_deref().map(str::to_string)
}

fn state_name(s: u8) -> &'static str {
    match s {
        0 => "Down",
        1 => "Rsrvd",
        2 => "OffHook",
        3 => "Dialing",
        4 => "Ring",
        5 => "Ringing",
        6 => "Up",
        7 => "Busy",
        8 => "Dialing Offhook",
        9 => "Pre-ring",
        _ => "Unknown",
    }
}

/// Builds the record of a conversation as it stands.
pub(super) fn build(conv: &Conversation, s: &Settings, complete: bool) -> CallRecord {
    let legs = &conv.legs;
    let now = conv.last_event;
    let origin = conv.origin_idx();
    let from_idx = origin.and_then(|o| {
        if legs[o].local {
            legs.iter().position(|l| !l.local)
        } else {
            Some(o)
        }
    });
    let originated = conv.extra().originate.is_some()
        || origin.is_some_and(|o| legs[o].originated)
        || from_idx.is_some_and(|f| legs[f].originated);
    // Small per-leg lists live on the stack (a record is built for every change of a live
    // call when updates are on; these used to be three heap allocations per record).
    let dialled: SmallVec<[usize; 8]> = legs
        .iter()
        .enumerate()
        .filter(|(i, l)| !l.local && l.dialled && Some(*i) != from_idx)
        .map(|(i, _)| i)
        .collect();
    // Whether each leg is a trunk, worked out once (the name rules scan strings).
    let trunk: SmallVec<[bool; 16]> = legs.iter().map(|l| is_trunk(s, l)).collect();

    // Who answered: the first dialled leg to answer. Without any dialled leg, a call (not an
    // Originate) whose own channel was answered was answered by the PBX (IVR, voicemail).
    let answered_leg = dialled
        .iter()
        .filter_map(|&i| legs[i].answered_at.map(|a| (a, i)))
        .min()
        .map(|(_, i)| i);
    let answered_at = match answered_leg {
        Some(i) => legs[i].answered_at,
        None if dialled.is_empty() && !originated => from_idx.and_then(|f| legs[f].answered_at),
        None => None,
    };

    // Parties.
    let from_leg = from_idx.map(|f| &legs[f]);
    let from = match from_leg {
        Some(l) => {
            let ext = if from_idx.is_some_and(|f| trunk[f]) {
                None
            } else {
                l.endpoint().map(str::to_string)
            };
            let (number, name) = if originated {
                // Click-to-call: the phone that rang first is the caller, whatever caller ID
                // the Originate presented to it.
                let (num, name) = l.first_caller();
                (ext.as_deref().or(num), name)
            } else {
                l.dial_caller()
            };
            Party {
                number: number.map(str::to_string).or_else(|| ext.clone()),
                name: name.map(str::to_string),
                extension: ext,
            }
        }
        None => Party::default(),
    };
    let to_number = conv
        .extra()
        .originate
        .as_ref()
        .filter(|_| originated)
        .and_then(|o| text(&o.exten))
        .or_else(|| origin.and_then(|o| text(&legs[o].exten)))
        .or_else(|| from_leg.and_then(|l| text(&l.exten)))
        .or_else(|| {
            dialled
                .first()
                .and_then(|&i| legs[i].endpoint().map(str::to_string))
        });

    let direction = match from_leg {
        None => Direction::Unknown,
        Some(_) if from_idx.is_some_and(|f| trunk[f]) => Direction::Inbound,
        Some(_) if dialled.iter().any(|&i| trunk[i]) => Direction::Outbound,
        Some(_) if !dialled.is_empty() => Direction::Internal,
        Some(_) => match to_number.as_deref() {
            Some(n) if is_extension_number(s, n) => Direction::Internal,
            _ => Direction::Unknown,
        },
    };

    // The one phone that was dialled (possibly several times), if there is exactly one.
    let mut phone_endpoints = dialled
        .iter()
        .filter(|&&i| !trunk[i])
        .filter_map(|&i| legs[i].endpoint());
    let only_phone = match phone_endpoints.next() {
        Some(first) if phone_endpoints.all(|e| e == first) => Some(first.to_string()),
        _ => None,
    };
    let to = Party {
        number: to_number.clone(),
        name: answered_leg
            .map(|i| text(&legs[i].caller_name))
            .unwrap_or_else(|| match dialled.as_slice() {
                [i] => text(&legs[*i].caller_name),
                _ => None,
            }),
        extension: answered_leg
            .filter(|&i| !trunk[i])
            .and_then(|i| legs[i].endpoint().map(str::to_string))
            .or(only_phone)
            .or_else(|| {
                to_number
                    .clone()
                    .filter(|n| direction == Direction::Internal && is_extension_number(s, n))
            }),
    };
    let answered_by = answered_leg.and_then(|i| {
        if direction == Direction::Outbound {
            to_number.clone()
        } else {
            legs[i].endpoint().map(str::to_string)
        }
    });

    // Disposition.
    let disposition = if answered_at.is_some() {
        Disposition::Answered
    } else if originated && conv.extra().originate.as_ref().is_some_and(|o| !o.success) {
        Disposition::Failed
    } else {
        let outcome = if dialled.is_empty() {
            from_leg.map_or(Outcome::NoAnswer, origin_outcome)
        } else {
            dialled
                .iter()
                .map(|&i| leg_outcome(&legs[i]))
                .min()
                .unwrap_or(Outcome::NoAnswer)
        };
        match outcome {
            Outcome::NoAnswer => Disposition::NoAnswer,
            Outcome::Busy => Disposition::Busy,
            Outcome::Failed => Disposition::Failed,
        }
    };
    // Missed is about calls to us: an outbound call the far end did not answer is nobody's
    // missed call here (a phone of ours that rang out in it still has its leg `missed`).
    let missed = disposition == Disposition::NoAnswer
        && !dialled.is_empty()
        && direction != Direction::Outbound;

    // Times.
    let started_at = conv.started_at();
    let ended_at = if conv.live == 0 {
        conv.last_hangup
    } else {
        None
    };
    let until = ended_at.unwrap_or(now);
    let ring_s = secs(answered_at.unwrap_or(until) - started_at);
    let talk_s = answered_at.map(|a| secs(until - a)).unwrap_or(0.0);
    let hold_ms: i64 = legs
        .iter()
        .map(|l| l.hold_ms_until(l.ended_at.unwrap_or(now)))
        .sum();
    let hold_s = secs(TimeDelta::milliseconds(hold_ms));

    let record_legs = legs
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.local)
        .map(|(i, l)| record::Leg {
            channel: String::from(&*l.channel),
            uniqueid: String::from(&*l.uniqueid),
            endpoint: l.endpoint().map(str::to_string),
            sip_call_id: text(&l.sip_call_id),
            phone: l.phone.as_deref().cloned(),
            started_at: Some(l.started_at),
            answered_at: l.answered_at,
            ended_at: l.ended_at,
            hangup_cause: l.hangup_cause,
            hangup_cause_text: text(&l.hangup_text),
            dial_status: text(&l.dial_status),
            missed: dialled.contains(&i) && !trunk[i] && leg_missed(l, answered_at),
        })
        .collect();

    CallRecord {
        id: conv.id(),
        pbx: String::from(&*conv.pbx),
        linkedid: String::from(&*conv.linkedid),
        direction,
        from,
        to,
        started_at,
        answered_at,
        ended_at,
        ring_s,
        talk_s,
        hold_s,
        disposition,
        missed,
        answered_by,
        legs: record_legs,
        transfers: conv.extra().transfers.clone(),
        timeline: timeline(conv),
        correlation: conv.extra().correlation.clone(),
        gaps: conv.extra().gaps.clone(),
        dial_request_id: text(&conv.extra().dial_request_id),
        complete,
    }
}

/// A dialled phone leg that rang out for that phone: it ended unanswered, nobody had answered
/// the call elsewhere by then (cause 26 "Answered elsewhere", or the call answered before the
/// leg ended), and it was not busy or failed.
fn leg_missed(l: &Leg, call_answered: Option<DateTime<Utc>>) -> bool {
    let Some(ended) = l.ended_at else {
        return false;
    };
    l.answered_at.is_none()
        && l.hangup_cause != Some(26)
        && !matches!(call_answered, Some(a) if a <= ended)
        && leg_outcome(l) == Outcome::NoAnswer
}

// Note: `Text`/`Arc<str>` fields are copied with `String::from(&*x)`, not `x.to_string()`:
// the latter goes through `Display` and the formatting machinery (no specialisation for boxed
// strings), several times slower on this hot path.

/// The parts joined into one `String` of exactly their length (what `format!` would give,
/// without its formatting machinery and incremental growth: records are built often).
fn concat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

/// The compact timeline as record entries.
fn timeline(conv: &Conversation) -> Vec<TimelineEntry> {
    let channel =
        |i: u32| -> Option<String> { conv.legs.get(i as usize).map(|l| String::from(&*l.channel)) };
    conv.timeline
        .iter()
        .map(|step| {
            if let (StepKind::Phone, Detail::Phone(i)) = (step.kind, &step.detail) {
                if let Some(p) = conv.extra().correlation.get(*i as usize) {
                    return TimelineEntry {
                        at: step.at,
                        source: Source::Phone,
                        event: p.event.clone(),
                        subject: Some(p.phone.clone()),
                        detail: Some(p.method.clone()),
                    };
                }
            }
            let detail = match &step.detail {
                Detail::None if step.kind == StepKind::ClosedByResync => {
                    Some("not listed by the resync after an AMI gap".to_string())
                }
                Detail::None | Detail::Phone(_) => None,
                Detail::State(st) => Some(state_name(*st).to_string()),
                Detail::DialFrom(NO_LEG) => Some("originate".to_string()),
                Detail::DialFrom(i) => conv
                    .legs
                    .get(*i as usize)
                    .map(|l| concat(&["from ", &l.channel])),
                Detail::DialStatus(code) => match DIAL_STATUSES.get(*code as usize) {
                    Some(st) => Some(st.to_string()),
                    None => conv
                        .legs
                        .get(step.leg as usize)
                        .and_then(|l| text(&l.dial_status)),
                },
                Detail::Cause(c) => {
                    let txt = conv
                        .legs
                        .get(step.leg as usize)
                        .and_then(|l| l.hangup_text.as_deref());
                    match (c, txt) {
                        (Some(c), Some(t)) => {
                            let mut s = c.to_string();
                            s.reserve(1 + t.len());
                            s.push(' ');
                            s.push_str(t);
                            Some(s)
                        }
                        (Some(c), None) => Some(c.to_string()),
                        (None, _) => None,
                    }
                }
                Detail::UnholdIgnored => Some("no hold open (not counted)".to_string()),
                Detail::Originate { success, reason } => Some(format!(
                    "{}{}{}",
                    if *success { "Success" } else { "Failure" },
                    if *reason == NO_REASON {
                        String::new()
                    } else {
                        format!(", reason {reason}")
                    },
                    conv.extra()
                        .originate
                        .as_ref()
                        .and_then(|o| o.action_id.as_deref())
                        .map(|a| format!(", ActionID {a}"))
                        .unwrap_or_default()
                )),
                Detail::Transfer(i) => conv.extra().transfers.get(*i as usize).map(|t| {
                    format!(
                        "{} by {} to {}{}",
                        t.kind,
                        t.by.as_deref().unwrap_or("?"),
                        t.to.as_deref().unwrap_or("?"),
                        t.result
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )
                }),
            };
            TimelineEntry {
                at: step.at,
                source: Source::Ami,
                event: step.kind.name().to_string(),
                subject: channel(step.leg),
                detail,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunk_names() {
        assert!(looks_like_trunk(Some("from-provider"), "provider"));
        assert!(looks_like_trunk(Some("from-pstn"), "x"));
        assert!(looks_like_trunk(Some("default"), "my-trunk"));
        assert!(!looks_like_trunk(Some("internal"), "101"));
        assert!(!looks_like_trunk(Some("from-internal"), "101"));
        assert!(!looks_like_trunk(None, "alice"));
        assert!(looks_like_trunk(Some("default"), "okon.ferry.sip.com"));
        assert!(looks_like_trunk(None, "203.0.113.7"));
    }

    #[test]
    fn rounding() {
        assert_eq!(secs(TimeDelta::microseconds(8_123_456)), 8.123);
        assert_eq!(secs(TimeDelta::microseconds(8_123_500)), 8.124);
        assert_eq!(secs(TimeDelta::seconds(-1)), 0.0);
    }

    #[test]
    fn causes() {
        assert_eq!(cause_outcome(Some(17)), Outcome::Busy);
        assert_eq!(cause_outcome(Some(19)), Outcome::NoAnswer);
        assert_eq!(cause_outcome(Some(127)), Outcome::NoAnswer);
        assert_eq!(cause_outcome(Some(34)), Outcome::Failed);
        assert_eq!(cause_outcome(None), Outcome::NoAnswer);
    }
}
