//! [`Deriver`]: correlator outputs → live call events.
//!
//! The correlator emits whole records (`CallStarted`, `CallUpdated`, `CallCompleted`) and
//! merges; a CRM wants transitions ("102 is ringing", "answered by 102", "on hold"). The
//! deriver keeps, per live call, what it has already announced, and compares each new record
//! with it:
//!
//! - `call.started` when the call starts;
//! - `call.ringing` for each new `Newstate … Ringing` timeline entry of a real (non-Local) leg,
//!   once per channel;
//! - `call.answered` when the record's `answered_at` becomes set (who: `answered_by`), and
//!   again for a later leg (not the first one) that answers after that — a transfer target;
//! - `call.held` / `call.unheld` for each new `Hold` / counted `Unhold` timeline entry (an
//!   `Unhold` without an open hold, which every SIP REFER raises, is not announced);
//! - `call.transferred` for each new entry of `transfers`;
//! - `call.merged` when the correlator merges two calls (what was announced for the absorbed
//!   call counts as announced for the survivor, so nothing is repeated);
//! - `call.ended` with the final record.
//!
//! The transitions present in the first record seen of a call are announced right after its
//! `call.started`, in timeline order. A `CallUpdated` for a call the deriver has never seen
//! (only after a restart, for calls that were live across it) sets the baseline silently:
//! what happened before the restart was announced by the previous run.
//!
//! Pure and deterministic: the same outputs give the same events, in the same order.

use super::event::{CallSummary, EventData, EventType, LegRef, LiveEvent};
use crate::correlator::Output;
use crate::record::{CallRecord, Source, TimelineEntry};
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};

/// What has been announced for one live call.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// Timeline entries already examined.
    timeline: Vec<TimelineEntry>,
    transfers: usize,
    answered_at: Option<DateTime<Utc>>,
    /// Uniqueids of legs whose answer was examined.
    answered_legs: BTreeSet<String>,
    /// Channels announced as ringing.
    ringing: BTreeSet<String>,
    /// The extensions of the last record (for `call.merged`).
    extensions: Vec<String>,
}

/// Turns correlator outputs into live events. See the module docs.
#[derive(Debug, Default)]
pub struct Deriver {
    calls: HashMap<String, Seen>,
}

impl Deriver {
    pub fn new() -> Self {
        Deriver::default()
    }

    /// Calls being followed.
    pub fn live_calls(&self) -> usize {
        self.calls.len()
    }

    /// The events that `output` causes, appended to `out`.
    pub fn derive(&mut self, output: &Output, out: &mut Vec<LiveEvent>) {
        match output {
            Output::CallStarted(rec) => {
                let mut seen = self.calls.remove(&rec.id).unwrap_or_default();
                out.push(LiveEvent::call(
                    EventType::CallStarted,
                    rec.started_at,
                    rec,
                    EventData::Started {
                        call: CallSummary::of(rec),
                    },
                ));
                diff(&mut seen, rec, out);
                self.calls.insert(rec.id.clone(), seen);
            }
            Output::CallUpdated(rec) => match self.calls.get_mut(&rec.id) {
                Some(seen) => diff(seen, rec, out),
                None => {
                    let mut seen = Seen::default();
                    diff(&mut seen, rec, &mut Vec::new());
                    self.calls.insert(rec.id.clone(), seen);
                }
            },
            Output::CallCompleted(rec) => {
                let mut seen = self.calls.remove(&rec.id).unwrap_or_default();
                diff(&mut seen, rec, out);
                out.push(LiveEvent::call(
                    EventType::CallEnded,
                    rec.ended_at.unwrap_or(rec.started_at),
                    rec,
                    EventData::Ended {
                        call: CallSummary::of(rec),
                        record: Box::new(rec.clone()),
                    },
                ));
            }
            Output::CallMerged { id, into } => {
                let gone = self.calls.remove(id).unwrap_or_default();
                let at = gone
                    .timeline
                    .iter()
                    .map(|e| e.at)
                    .max()
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                let survivor = self.calls.entry(into.clone()).or_default();
                let mut extensions = gone.extensions.clone();
                for e in &survivor.extensions {
                    if let Err(pos) = extensions.binary_search(e) {
                        extensions.insert(pos, e.clone());
                    }
                }
                let at = survivor.timeline.iter().map(|e| e.at).max().unwrap_or(at);
                survivor.timeline.extend(gone.timeline);
                survivor.transfers += gone.transfers;
                survivor.answered_at = match (survivor.answered_at, gone.answered_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                survivor.answered_legs.extend(gone.answered_legs);
                survivor.ringing.extend(gone.ringing);
                out.push(LiveEvent {
                    kind: EventType::CallMerged,
                    at,
                    call_id: Some(id.clone()),
                    extensions,
                    data: EventData::Merged {
                        id: id.clone(),
                        into: into.clone(),
                    },
                });
            }
            Output::PhoneEvent { .. } => {}
        }
    }
}

/// Key of a timeline entry for the multiset comparison.
type EntryKey<'a> = (
    DateTime<Utc>,
    bool,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
);

fn key(e: &TimelineEntry) -> EntryKey<'_> {
    (
        e.at,
        e.source == Source::Ami,
        e.event.as_str(),
        e.subject.as_deref(),
        e.detail.as_deref(),
    )
}

/// The entries of `new` not in `old` (as multisets), in `new`'s order, and whether `old` was
/// a prefix of `new` — the usual case: timelines only grow, except after a merge.
fn new_entries<'a>(
    old: &[TimelineEntry],
    new: &'a [TimelineEntry],
) -> (Vec<&'a TimelineEntry>, bool) {
    if old.len() <= new.len() && new[..old.len()] == *old {
        return (new[old.len()..].iter().collect(), true);
    }
    let mut counts: HashMap<EntryKey<'_>, usize> = HashMap::new();
    for e in old {
        *counts.entry(key(e)).or_default() += 1;
    }
    let fresh = new
        .iter()
        .filter(|e| match counts.get_mut(&key(e)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect();
    (fresh, false)
}

/// Announces what `rec` adds to `seen`, then remembers it.
fn diff(seen: &mut Seen, rec: &CallRecord, out: &mut Vec<LiveEvent>) {
    // Most updates announce nothing: the summary is built only for an event.
    let summary = || CallSummary::of(rec);
    let leg_of_channel = |channel: &str| rec.legs.iter().find(|l| l.channel == channel);
    let leg_ref = |l: &crate::record::Leg| LegRef {
        channel: l.channel.clone(),
        uniqueid: Some(l.uniqueid.clone()),
        endpoint: l.endpoint.clone(),
    };

    // Timeline transitions, in time order.
    let (fresh, grew) = new_entries(&seen.timeline, &rec.timeline);
    let mut timed: Vec<(DateTime<Utc>, LiveEvent)> = Vec::new();
    for e in &fresh {
        if e.source != Source::Ami {
            continue;
        }
        let Some(channel) = e.subject.as_deref() else {
            continue;
        };
        // Local channels are not in the record's legs: they are plumbing, not parties.
        let Some(leg) = leg_of_channel(channel) else {
            continue;
        };
        let kind = match (e.event.as_str(), e.detail.as_deref()) {
            ("Newstate", Some("Ringing")) => {
                if !seen.ringing.insert(channel.to_string()) {
                    continue;
                }
                EventType::CallRinging
            }
            ("Hold", _) => EventType::CallHeld,
            ("Unhold", Some(d)) if d.starts_with("no hold open") => continue,
            ("Unhold", _) => EventType::CallUnheld,
            _ => continue,
        };
        timed.push((
            e.at,
            LiveEvent::call(
                kind,
                e.at,
                rec,
                EventData::Leg {
                    call: summary(),
                    leg: leg_ref(leg),
                },
            ),
        ));
    }
    if grew {
        seen.timeline.extend(fresh.into_iter().cloned());
    } else {
        seen.timeline = rec.timeline.clone();
    }

    // Answers.
    let first_answer = seen.answered_at.is_none() && rec.answered_at.is_some();
    let mut first_leg: Option<&str> = None;
    if first_answer {
        let at = rec.answered_at.unwrap_or(rec.started_at);
        let leg = rec
            .legs
            .iter()
            .find(|l| l.answered_at == Some(at) && l.endpoint == rec.answered_by)
            .or_else(|| rec.legs.iter().find(|l| l.answered_at == Some(at)));
        first_leg = leg.map(|l| l.uniqueid.as_str());
        timed.push((
            at,
            LiveEvent::call(
                EventType::CallAnswered,
                at,
                rec,
                EventData::Answered {
                    call: summary(),
                    answered_by: rec.answered_by.clone(),
                    leg: leg.map(leg_ref),
                },
            ),
        ));
        seen.answered_at = rec.answered_at;
    }
    for (i, leg) in rec.legs.iter().enumerate() {
        let Some(at) = leg.answered_at else {
            continue;
        };
        if !seen.answered_legs.insert(leg.uniqueid.clone()) {
            continue;
        }
        let later_party = i > 0
            && first_leg != Some(leg.uniqueid.as_str())
            && rec.answered_at.is_some_and(|first| at > first);
        if later_party {
            timed.push((
                at,
                LiveEvent::call(
                    EventType::CallAnswered,
                    at,
                    rec,
                    EventData::Answered {
                        call: summary(),
                        answered_by: leg.endpoint.clone(),
                        leg: Some(leg_ref(leg)),
                    },
                ),
            ));
        }
    }

    // Transfers.
    for t in rec.transfers.iter().skip(seen.transfers) {
        let at = t.at.unwrap_or(rec.started_at);
        timed.push((
            at,
            LiveEvent::call(
                EventType::CallTransferred,
                at,
                rec,
                EventData::Transferred {
                    call: summary(),
                    transfer: t.clone(),
                },
            ),
        ));
    }
    seen.transfers = seen.transfers.max(rec.transfers.len());
    seen.extensions = super::event::call_extensions(rec);

    // One input rarely yields more than one transition; when the first record of a call
    // already holds several, they go out in the order they happened (stable for ties).
    timed.sort_by_key(|(at, _)| *at);
    out.extend(timed.into_iter().map(|(_, e)| e));
}
