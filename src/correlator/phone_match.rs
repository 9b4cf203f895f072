//! Phone callbacks (Action URL) → the leg they describe.
//!
//! Two ways to tie a callback to a leg, tried in this order:
//! 1. **`sip_call_id`** (exact): the callback's `call_id` equals a live or in-grace leg's SIP
//!    Call-ID. Snom (`$call-id`) and Grandstream send the SIP Call-ID of the phone's own leg.
//! 2. **`account_party_time`** (heuristic): the phone (resolved from its MAC, `$active_user`
//!    or `$local`, through the configured [`super::PhoneIdentity`]s) is a leg's endpoint, the
//!    callback's `$remote` number is a party of that leg's call (its connected line, another
//!    leg's caller ID or endpoint, the dialled number), and the callback's time lies within
//!    `phone_match_window` of the leg's lifetime. Without a `$remote`, only an unambiguous
//!    candidate is accepted. The best candidate is the closest in time, then a live leg, then
//!    the most recently started. Yealink/Fanvil `$call_id` is a phone-side handle: it is kept
//!    as `leg.phone.call_handle`.
//!
//! A handle **sticks**: a leg that holds the callback's handle (from the same phone: MAC, else
//! `$ip`) is the best candidate, without the party check; a leg that holds another handle of
//! that phone is none (another of its calls). The tie lives in the leg's phone view, so it is
//! in snapshots and follows the leg through merges. **Call-start** callbacks
//! (`outgoing_call`, `incoming_call`) never match a leg that had ended before they came (the
//! previous call between the same phones, still in its grace period); they wait instead.
//!
//! Order independence: a callback that matches nothing yet is **pending** for
//! `phone_match_window` (its own time + window) and is retried whenever a call with that
//! phone's endpoint or that SIP Call-ID changes; after the window it gets one last try and
//! then becomes an [`OrphanCallback`] (kept, never dropped). A callback whose `call_id` looks
//! like a SIP Call-ID (not all digits) is not matched heuristically while its candidate leg
//! has no SIP Call-ID yet and is still up, so that the exact match wins when the `SIPCALLID`
//! variable arrives a moment later.
//!
//! Duplicates (same phone, event and leg) are recorded once; since a handle goes only to the
//! leg it is tied to, that is per handle as well.

use super::call::{Detail, RawCallback, Step, StepKind};
use super::channel::{Leg, LegRef};
use super::text::Text;
use super::HashMap;
use super::{Correlator, Output};
use crate::phone::action_url::{
    number_of, parse_callback, split_target, ActionUrlEvent, PhoneCallback,
};
use crate::record::{PhoneMatch, PhoneView};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// At most this many callbacks wait for their call at once (about 1,000 callbacks/s for the
/// whole match window); beyond that the oldest gets its last try early.
pub const MAX_PENDING_CALLBACKS: usize = 10_000;

/// The endpoint names of one callback: at most three numbers, each with its account and
/// extension, and usually one or two in all, so they fit inline.
type Endpoints<T> = smallvec::SmallVec<[T; 3]>;

/// A phone callback that matched no call.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OrphanCallback {
    /// When it was received.
    pub at: DateTime<Utc>,
    pub peer: String,
    /// The request target exactly as journaled.
    pub target: String,
    /// Our extension for the phone, when known.
    pub extension: Option<String>,
    /// Shared with the receiver that parsed it (and the pending entry it came from).
    #[schema(value_type = PhoneCallback)]
    pub callback: Arc<PhoneCallback>,
    pub reason: OrphanReason,
}

/// Why a callback is an orphan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OrphanReason {
    /// Nothing matched within the window.
    NoMatchingCall,
    /// Its SIP Call-ID belongs to a call that had already completed (record `id`).
    LateForCompletedCall { id: String },
    /// It matched channel activity that never became a call record (e.g. a feature code).
    CallWithoutRecord,
}

/// How a callback was matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    SipCallId,
    AccountPartyTime,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::SipCallId => "sip_call_id",
            Method::AccountPartyTime => "account_party_time",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Match {
    r: LegRef,
    method: Method,
}

/// A call callback waiting for its AMI events.
#[derive(Clone, Debug)]
pub(super) struct PendingCallback {
    at: DateTime<Utc>,
    deadline: DateTime<Utc>,
    peer: Text,
    target: Text,
    ext: Option<String>,
    cb: Arc<PhoneCallback>,
    /// The index keys it was filed under (call id; endpoints).
    call_id: Option<Text>,
    endpoints: Endpoints<Text>,
}

/// Pending callbacks in arrival order, indexed by SIP Call-ID and by endpoint.
#[derive(Clone, Debug, Default)]
pub(super) struct Pending {
    items: BTreeMap<u64, PendingCallback>,
    next: u64,
    /// Lookup only, never iterated.
    by_call_id: HashMap<Text, BTreeSet<u64>>,
    by_endpoint: HashMap<Text, BTreeSet<u64>>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn push(&mut self, p: PendingCallback) {
        let seq = self.next;
        self.next += 1;
        self.file(seq, p);
    }

    /// Stores `p` under `seq` and indexes it.
    fn file(&mut self, seq: u64, p: PendingCallback) {
        if let Some(c) = &p.call_id {
            self.by_call_id.entry(c.clone()).or_default().insert(seq);
        }
        for e in &p.endpoints {
            self.by_endpoint.entry(e.clone()).or_default().insert(seq);
        }
        self.items.insert(seq, p);
    }

    fn remove(&mut self, seq: u64) -> Option<PendingCallback> {
        let p = self.items.remove(&seq)?;
        fn unfile(map: &mut HashMap<Text, BTreeSet<u64>>, key: &str, seq: u64) {
            // A set, not a list: one phone flooding callbacks must not make each removal
            // scan all of its pending callbacks (that was quadratic under load).
            if let Some(list) = map.get_mut(key) {
                list.remove(&seq);
                if list.is_empty() {
                    map.remove(key);
                }
            }
        }
        if let Some(c) = &p.call_id {
            unfile(&mut self.by_call_id, c, seq);
        }
        for e in &p.endpoints {
            unfile(&mut self.by_endpoint, e, seq);
        }
        Some(p)
    }
}

/// SIP Call-IDs of recently completed calls, to recognise late callbacks.
#[derive(Clone, Debug, Default)]
pub(super) struct Recent {
    /// Lookup only, never iterated. The record id is shared by the call's legs.
    ids: HashMap<Text, (Arc<str>, DateTime<Utc>)>,
    queue: VecDeque<(DateTime<Utc>, Text)>,
}

impl Recent {
    /// Remembers `sip_call_id` (given twice, as the map's and the queue's copy: the caller
    /// moves strings it owns anyway) until `expiry`.
    pub fn insert(
        &mut self,
        sip_call_id: Text,
        queue_copy: Text,
        record_id: Arc<str>,
        expiry: DateTime<Utc>,
    ) {
        debug_assert_eq!(sip_call_id, queue_copy);
        self.ids.insert(sip_call_id, (record_id, expiry));
        self.queue.push_back((expiry, queue_copy));
    }

    fn get(&self, sip_call_id: &str) -> Option<&str> {
        self.ids.get(sip_call_id).map(|(id, _)| &**id)
    }

    pub fn expire(&mut self, now: DateTime<Utc>) {
        while let Some((expiry, _)) = self.queue.front() {
            if *expiry > now {
                break;
            }
            if let Some((expiry, key)) = self.queue.pop_front() {
                if self.ids.get(&key).map(|(_, e)| *e) == Some(expiry) {
                    self.ids.remove(&key);
                }
            }
        }
    }
}

// ----- snapshots -----

/// A pending callback as a snapshot stores it: what was received. The parsed callback, the
/// phone's extension and the index keys are worked out again on restore (from the settings
/// then in force).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct PendingSnap {
    seq: u64,
    at: DateTime<Utc>,
    deadline: DateTime<Utc>,
    peer: Text,
    target: Text,
}

/// An orphan as a snapshot stores it (the callback is parsed again from `target`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct OrphanSnap {
    at: DateTime<Utc>,
    peer: String,
    target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    extension: Option<String>,
    reason: OrphanReason,
}

/// One entry of [`Recent`]'s expiry queue; `record` is set on the entry the lookup map holds
/// (the latest for its SIP Call-ID), so that both are restored exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RecentSnap {
    expiry: DateTime<Utc>,
    sip_call_id: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record: Option<String>,
}

/// Pending callbacks, orphans and recent SIP Call-IDs of a snapshot.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct PhoneSnap {
    pending_next: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<PendingSnap>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    orphans: Vec<OrphanSnap>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    recent: Vec<RecentSnap>,
}

impl OrphanSnap {
    pub(super) fn of(o: &OrphanCallback) -> OrphanSnap {
        OrphanSnap {
            at: o.at,
            peer: o.peer.clone(),
            target: o.target.clone(),
            extension: o.extension.clone(),
            reason: o.reason.clone(),
        }
    }

    /// Back to the orphan, its callback parsed again from the target.
    pub(super) fn into_orphan(self) -> Result<OrphanCallback, NotACallback> {
        let (event, query) =
            split_target(&self.target).ok_or_else(|| NotACallback(self.target.clone()))?;
        let callback = Arc::new(parse_callback(&event, query.as_bytes()));
        Ok(OrphanCallback {
            at: self.at,
            peer: self.peer,
            target: self.target,
            extension: self.extension,
            callback,
            reason: self.reason,
        })
    }
}

/// A target in a snapshot that is not a phone callback (it was one when it was stored).
#[derive(Debug)]
pub(super) struct NotACallback(pub String);

impl Correlator {
    pub(super) fn phone_snapshot(&self) -> PhoneSnap {
        let pending = self
            .pending
            .items
            .iter()
            .map(|(&seq, p)| PendingSnap {
                seq,
                at: p.at,
                deadline: p.deadline,
                peer: p.peer.clone(),
                target: p.target.clone(),
            })
            .collect();
        let orphans = self.orphans.iter().map(OrphanSnap::of).collect();
        // The lookup map holds, per SIP Call-ID, the entry of the latest insert: the last
        // queue entry with that id and the map's expiry.
        let mut holder: HashMap<&str, usize> = HashMap::default();
        for (i, (expiry, sip)) in self.recent.queue.iter().enumerate() {
            if self
                .recent
                .ids
                .get(&**sip)
                .is_some_and(|(_, e)| e == expiry)
            {
                holder.insert(sip, i);
            }
        }
        let recent = self
            .recent
            .queue
            .iter()
            .enumerate()
            .map(|(i, (expiry, sip))| RecentSnap {
                expiry: *expiry,
                sip_call_id: sip.clone(),
                record: (holder.get(&**sip) == Some(&i))
                    .then(|| self.recent.ids.get(&**sip).map(|(id, _)| id.to_string()))
                    .flatten(),
            })
            .collect();
        PhoneSnap {
            pending_next: self.pending.next,
            pending,
            orphans,
            recent,
        }
    }

    pub(super) fn restore_phone(&mut self, snap: PhoneSnap) -> Result<(), NotACallback> {
        let parse = |target: &str| -> Result<Arc<PhoneCallback>, NotACallback> {
            let (event, query) =
                split_target(target).ok_or_else(|| NotACallback(target.to_string()))?;
            Ok(Arc::new(parse_callback(&event, query.as_bytes())))
        };
        for p in snap.pending {
            let cb = parse(&p.target)?;
            let ext = self.callback_extension(&cb);
            let endpoints = self.callback_endpoint_keys(&cb, ext.as_deref());
            let pending = PendingCallback {
                at: p.at,
                deadline: p.deadline,
                peer: p.peer,
                target: p.target,
                call_id: cb.call_id.as_deref().map(Into::into),
                ext,
                cb,
                endpoints,
            };
            self.pending.file(p.seq, pending);
        }
        self.pending.next = snap.pending_next;
        for o in snap.orphans {
            self.orphans.push(o.into_orphan()?);
        }
        for r in snap.recent {
            if let Some(id) = r.record {
                self.recent
                    .ids
                    .insert(r.sip_call_id.clone(), (Arc::from(id), r.expiry));
            }
            self.recent.queue.push_back((r.expiry, r.sip_call_id));
        }
        Ok(())
    }
}

/// A phone's `$call_id` that is not a plain number is taken for a SIP Call-ID (Yealink and
/// Fanvil handles are small integers such as `33093`).
fn looks_like_sip_call_id(id: &str) -> bool {
    !id.bytes().all(|b| b.is_ascii_digit())
}

/// Events about a call that starts as the phone sends them (it dials out, or an INVITE
/// reached it): such a callback is never about a leg that had already ended when it came.
fn starts_a_call(event: &ActionUrlEvent) -> bool {
    matches!(
        event,
        ActionUrlEvent::OutgoingCall | ActionUrlEvent::IncomingCall
    )
}

/// How a leg stands towards the call handle of a callback (the phone's own `$call_id`, kept
/// as the leg's `phone.call_handle` by the heuristic match that first tied it to the leg).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binding {
    /// This phone's handle is tied to the leg: the callback is about this leg.
    Same,
    /// The leg is tied to another handle of this phone: another of its calls.
    Other,
    /// No handle of this phone on the leg yet.
    Free,
}

/// The leg's [`Binding`] for `handle` sent by the phone of `cb`. The phone is the one the
/// leg's view came from when their MACs agree (else their `$ip`s; with neither known, the
/// endpoint the candidate was found by already says it).
fn binding(leg: &Leg, cb: &PhoneCallback, handle: &str) -> Binding {
    let Some(view) = leg.phone.as_deref() else {
        return Binding::Free;
    };
    let Some(bound) = view.call_handle.as_deref() else {
        return Binding::Free;
    };
    if !same_device(view, cb) {
        return Binding::Free;
    }
    if bound == handle {
        Binding::Same
    } else {
        Binding::Other
    }
}

fn same_device(view: &PhoneView, cb: &PhoneCallback) -> bool {
    if let (Some(a), Some(b)) = (&view.mac, &cb.mac) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (&view.ip, &cb.ip) {
        return a == b;
    }
    true
}

fn is_dial_char(b: &u8) -> bool {
    b.is_ascii_digit() || *b == b'*' || *b == b'#'
}

/// Two numbers are the same party: equal digits, or one ends with the other when both have at
/// least 7 digits (`+15550100` = `5550100`). Numbers without digits compare as names.
pub(super) fn same_number(a: &str, b: &str) -> bool {
    let na = a.as_bytes().iter().filter(|c| is_dial_char(c)).count();
    let nb = b.as_bytes().iter().filter(|c| is_dial_char(c)).count();
    if na == 0 || nb == 0 {
        return !a.trim().is_empty() && a.trim().eq_ignore_ascii_case(b.trim());
    }
    let matched = a
        .as_bytes()
        .iter()
        .rev()
        .filter(|c| is_dial_char(c))
        .zip(b.as_bytes().iter().rev().filter(|c| is_dial_char(c)))
        .take_while(|(x, y)| x == y)
        .count();
    if na == nb {
        matched == na
    } else {
        na.min(nb) >= 7 && matched == na.min(nb)
    }
}

impl Correlator {
    /// `parsed`: the callback as [`crate::phone::action_url::parse_target`] reads `target`,
    /// when the receiver already did (the live path); otherwise it is parsed here (replay).
    pub(super) fn on_phone(
        &mut self,
        t: DateTime<Utc>,
        peer: &str,
        target: &str,
        parsed: Option<Arc<PhoneCallback>>,
    ) {
        let cb = match parsed {
            Some(cb) => cb,
            None => {
                let Some((event, query)) = split_target(target) else {
                    return; // not a phone callback: ignored
                };
                Arc::new(parse_callback(&event, query.as_bytes()))
            }
        };
        let ext = self.callback_extension(&cb);
        if !cb.event.is_call_event() {
            self.emit(Output::PhoneEvent {
                at: t,
                peer: peer.to_string(),
                extension: ext,
                callback: cb,
            });
            return;
        }
        if let Some(m) = self.try_match(&cb, ext.as_deref(), t, false, None) {
            self.apply_match(m, &cb, ext, t, peer, target);
            return;
        }
        if let Some(id) = cb.call_id.as_deref().and_then(|c| self.recent.get(c)) {
            let reason = OrphanReason::LateForCompletedCall { id: id.to_string() };
            self.orphans.push(OrphanCallback {
                at: t,
                peer: peer.to_string(),
                target: target.to_string(),
                extension: ext,
                callback: cb,
                reason,
            });
            return;
        }
        // Bounded: a phone (or anything else allowed to call back) flooding callbacks that
        // match nothing must not grow memory without limit; the oldest gives up early.
        while self.pending.items.len() >= MAX_PENDING_CALLBACKS {
            let Some((&seq, _)) = self.pending.items.first_key_value() else {
                break;
            };
            if let Some(p) = self.pending.remove(seq) {
                self.settle_expired(p);
            }
        }
        let endpoints = self.callback_endpoint_keys(&cb, ext.as_deref());
        self.pending.push(PendingCallback {
            at: t,
            deadline: t + self.settings.window,
            peer: peer.into(),
            target: target.into(),
            call_id: cb.call_id.as_deref().map(Into::into),
            ext,
            cb,
            endpoints,
        });
    }

    /// Our extension for the phone that sent `cb`: by configured MAC, then by `$active_user`
    /// / `$local` as a configured account or extension, else that number as sent.
    fn callback_extension(&self, cb: &PhoneCallback) -> Option<String> {
        let s = &self.settings;
        if let Some(ext) = cb.mac.as_ref().and_then(|m| s.phone_mac.get(m)) {
            return Some(ext.clone());
        }
        let numbers = [cb.active_user.as_deref(), cb.local.as_deref()]
            .into_iter()
            .flatten()
            .map(number_of)
            .filter(|n| !n.is_empty());
        let mut first = None;
        for n in numbers {
            if let Some(ext) = s.phone_account.get(n) {
                return Some(ext.clone());
            }
            if s.phone_ext.contains(n) {
                return Some(n.to_string());
            }
            first.get_or_insert(n);
        }
        first.map(str::to_string)
    }

    /// Endpoint names the phone may appear under in AMI (sorted, unique). Borrowed from the
    /// callback and the settings: this runs for every call callback, often twice.
    fn callback_endpoints<'a>(
        &'a self,
        cb: &'a PhoneCallback,
        ext: Option<&'a str>,
    ) -> Endpoints<&'a str> {
        let s = &self.settings;
        let mut out: Endpoints<&'a str> = Endpoints::new();
        let mut add = |n: &'a str| {
            if !n.is_empty() && !out.contains(&n) {
                out.push(n);
            }
        };
        let numbers = [ext, cb.active_user.as_deref(), cb.local.as_deref()];
        for n in numbers.into_iter().flatten() {
            let n = number_of(n);
            add(n);
            if let Some(e) = s.phone_account.get(n) {
                add(e);
            }
            if let Some(a) = s.account_of.get(n) {
                add(a);
            }
        }
        out.sort_unstable();
        out
    }

    /// [`Self::callback_endpoints`] as owned index keys, for a callback that waits.
    fn callback_endpoint_keys(&self, cb: &PhoneCallback, ext: Option<&str>) -> Endpoints<Text> {
        self.callback_endpoints(cb, ext)
            .into_iter()
            .map(Text::from)
            .collect()
    }

    /// Finds the leg a callback belongs to (see the module docs). `final_try` lifts the
    /// wait-for-the-exact-match rule; `only` restricts the search to one conversation.
    fn try_match(
        &self,
        cb: &PhoneCallback,
        ext: Option<&str>,
        t: DateTime<Utc>,
        final_try: bool,
        only: Option<u64>,
    ) -> Option<Match> {
        if let Some(cid) = cb.call_id.as_deref() {
            if let Some(&key) = self.sip_index.get(cid) {
                if only.is_none() || only == Some(key) {
                    if let Some(conv) = self.convs.get(&key) {
                        if let Some(i) = conv
                            .legs
                            .iter()
                            .position(|l| l.sip_call_id.as_deref() == Some(cid))
                        {
                            return Some(Match {
                                r: LegRef {
                                    conv: key,
                                    idx: i as u32,
                                },
                                method: Method::SipCallId,
                            });
                        }
                    }
                }
            }
        }

        let w = self.settings.window;
        let remote = cb
            .remote
            .as_deref()
            .map(number_of)
            .filter(|n| !n.is_empty());
        let handle = cb.call_id.as_deref();
        let starts = starts_a_call(&cb.event);
        // Not tied to this handle (false first: a leg the handle is tied to wins), distance,
        // ended, latest start, then key and index for a total order.
        type Score = (bool, TimeDelta, bool, Reverse<DateTime<Utc>>, u64, u32);
        let mut best: Option<(Score, LegRef)> = None;
        let mut candidates = 0usize;
        for ep in self.callback_endpoints(cb, ext) {
            let Some(keys) = self.endpoint_index.get(ep) else {
                continue;
            };
            for &key in keys {
                if only.is_some_and(|o| o != key) {
                    continue;
                }
                let Some(conv) = self.convs.get(&key) else {
                    continue;
                };
                for (i, leg) in conv.legs.iter().enumerate() {
                    if leg.endpoint() != Some(ep) {
                        continue;
                    }
                    if t < leg.started_at - w || leg.ended_at.is_some_and(|e| t > e + w) {
                        continue;
                    }
                    // A call that starts now is not one that had already ended (the previous
                    // call between the same two phones, still in its grace period).
                    if starts && leg.ended_at.is_some_and(|e| e < t) {
                        continue;
                    }
                    let bound = handle.map_or(Binding::Free, |h| binding(leg, cb, h));
                    if bound == Binding::Other {
                        continue; // another call of this phone
                    }
                    let tied = bound == Binding::Same;
                    // The handle says which call it is; the remote party may have changed
                    // since (a transfer), so it is only checked for a leg not tied yet.
                    if let (Some(remote), false) = (remote, tied) {
                        if !record_party(conv, i, remote) {
                            continue;
                        }
                    }
                    candidates += 1;
                    let distance = if t < leg.started_at {
                        leg.started_at - t
                    } else {
                        match leg.ended_at {
                            Some(e) if t > e => t - e,
                            _ => TimeDelta::zero(),
                        }
                    };
                    let score = (
                        !tied,
                        distance,
                        leg.ended_at.is_some(),
                        Reverse(leg.started_at),
                        key,
                        i as u32,
                    );
                    if !matches!(&best, Some((b, _)) if *b <= score) {
                        best = Some((
                            score,
                            LegRef {
                                conv: key,
                                idx: i as u32,
                            },
                        ));
                    }
                }
            }
        }
        let ((untied, ..), r) = best?;
        if remote.is_none() && candidates > 1 && untied {
            return None;
        }
        if untied && !final_try && cb.call_id.as_deref().is_some_and(looks_like_sip_call_id) {
            let leg = self.leg(r)?;
            if leg.sip_call_id.is_none() && leg.ended_at.is_none() {
                return None; // the exact match may still come
            }
        }
        Some(Match {
            r,
            method: Method::AccountPartyTime,
        })
    }

    fn apply_match(
        &mut self,
        m: Match,
        cb: &PhoneCallback,
        ext: Option<String>,
        t: DateTime<Utc>,
        peer: &str,
        target: &str,
    ) {
        let Some(conv) = self.convs.get_mut(&m.r.conv) else {
            return;
        };
        let Some(leg) = conv.legs.get(m.r.idx as usize) else {
            return;
        };
        let phone = ext
            .or_else(|| leg.endpoint().map(str::to_string))
            .unwrap_or_else(|| peer.to_string());
        let event = cb.event.as_str();
        let duplicate = conv.extra().correlation.iter().any(|p| {
            p.phone == phone && p.event == event && p.uniqueid.as_deref() == Some(&leg.uniqueid)
        });
        if duplicate {
            return;
        }
        let Some(leg) = conv.legs.get_mut(m.r.idx as usize) else {
            return;
        };
        let view = leg.phone.get_or_insert_with(Default::default);
        if cb.mac.is_some() {
            view.mac.clone_from(&cb.mac);
        }
        if cb.ip.is_some() {
            view.ip.clone_from(&cb.ip);
        }
        if cb.model.is_some() {
            view.model.clone_from(&cb.model);
        }
        if m.method == Method::AccountPartyTime && cb.call_id.is_some() {
            view.call_handle.clone_from(&cb.call_id);
        }
        let uniqueid = String::from(&*leg.uniqueid);
        let started = conv.started;
        let x = conv.extra_mut();
        let idx = x.correlation.len() as u32;
        x.correlation.push(PhoneMatch {
            at: t,
            phone,
            event: event.to_string(),
            method: m.method.as_str().to_string(),
            uniqueid: Some(uniqueid),
        });
        if !started {
            x.unqualified_callbacks.push(RawCallback {
                at: t,
                peer: peer.into(),
                target: target.into(),
            });
        }
        conv.push_step(Step {
            at: t,
            kind: StepKind::Phone,
            leg: m.r.idx,
            detail: Detail::Phone(idx),
        });
        conv.dirty = true;
        self.touch(m.r.conv);
    }

    /// Retries the pending callbacks that could belong to the conversations the current
    /// input touched.
    pub(super) fn retry_pending_for_touched(&mut self, _t: DateTime<Utc>) {
        if self.pending.is_empty() {
            return;
        }
        let touched = self.touched.clone();
        for key in touched {
            self.retry_pending_for(key, false);
        }
    }

    /// Retries the pending callbacks filed under one of this conversation's SIP Call-IDs or
    /// endpoints, against this conversation only.
    pub(super) fn retry_pending_for(&mut self, key: u64, final_try: bool) {
        if self.pending.is_empty() {
            return;
        }
        let Some(conv) = self.convs.get(&key) else {
            return;
        };
        let mut seqs: Vec<u64> = Vec::new();
        for leg in &conv.legs {
            if let Some(s) = leg.sip_call_id.as_deref() {
                if let Some(list) = self.pending.by_call_id.get(s) {
                    seqs.extend(list);
                }
            }
            if let Some(e) = leg.endpoint() {
                if let Some(list) = self.pending.by_endpoint.get(e) {
                    seqs.extend(list);
                }
            }
        }
        seqs.sort_unstable();
        seqs.dedup();
        for seq in seqs {
            let Some(p) = self.pending.items.get(&seq) else {
                continue;
            };
            let Some(m) = self.try_match(&p.cb, p.ext.as_deref(), p.at, final_try, Some(key))
            else {
                continue;
            };
            if let Some(p) = self.pending.remove(seq) {
                self.apply_match(m, &p.cb, p.ext, p.at, &p.peer, &p.target);
            }
        }
    }

    /// Pending callbacks whose window ran out by `now` (all of them when `None`) get a last
    /// try against every call, then become orphans.
    pub(super) fn expire_pending(&mut self, now: Option<DateTime<Utc>>) {
        while let Some((&seq, p)) = self.pending.items.first_key_value() {
            if now.is_some_and(|now| p.deadline > now) {
                break;
            }
            let Some(p) = self.pending.remove(seq) else {
                break;
            };
            self.settle_expired(p);
        }
    }

    /// A pending callback's last try against every call; an orphan when nothing matches.
    fn settle_expired(&mut self, p: PendingCallback) {
        if let Some(m) = self.try_match(&p.cb, p.ext.as_deref(), p.at, true, None) {
            self.apply_match(m, &p.cb, p.ext, p.at, &p.peer, &p.target);
            return;
        }
        let reason = match p.cb.call_id.as_deref().and_then(|c| self.recent.get(c)) {
            Some(id) => OrphanReason::LateForCompletedCall { id: id.to_string() },
            None => OrphanReason::NoMatchingCall,
        };
        self.orphans.push(OrphanCallback {
            at: p.at,
            peer: p.peer.into(),
            target: p.target.into(),
            extension: p.ext,
            callback: p.cb,
            reason,
        });
    }

    /// Callbacks matched to channel activity that never became a call record.
    pub(super) fn orphan_unqualified(&mut self, raws: Vec<RawCallback>) {
        for raw in raws {
            let Some((event, query)) = split_target(&raw.target) else {
                continue;
            };
            let cb = Arc::new(parse_callback(&event, query.as_bytes()));
            let ext = self.callback_extension(&cb);
            self.orphans.push(OrphanCallback {
                at: raw.at,
                peer: raw.peer.into(),
                target: raw.target.into(),
                extension: ext,
                callback: cb,
                reason: OrphanReason::CallWithoutRecord,
            });
        }
    }
}

/// `remote` is a party of the call seen from leg `i`: its connected line, what it dialled,
/// another real leg's caller ID, endpoint or dialled number, the Originate's destination.
fn record_party(conv: &super::call::Conversation, i: usize, remote: &str) -> bool {
    let leg = &conv.legs[i];
    // What this leg itself dialled counts when it is the calling side.
    let own_exten = leg.exten.as_deref().filter(|_| !leg.dialled);
    let mut numbers = leg.connected_num.as_deref().into_iter().chain(own_exten);
    if numbers.any(|n| same_number(remote, n)) {
        return true;
    }
    for (j, other) in conv.legs.iter().enumerate() {
        if j == i || other.local {
            continue;
        }
        let mut nums = [
            other.caller_num.as_deref(),
            other.first_caller().0,
            other.endpoint(),
            other.exten.as_deref(),
        ]
        .into_iter()
        .flatten();
        if nums.any(|n| same_number(remote, n)) {
            return true;
        }
    }
    conv.extra()
        .originate
        .as_ref()
        .and_then(|o| o.exten.as_deref())
        .is_some_and(|e| same_number(remote, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            split_target("/action-url/incoming_call?call_id=1"),
            Some(("incoming_call".to_string(), "call_id=1"))
        );
        assert_eq!(
            split_target("/action-url/s3cret/call%20established?x"),
            Some(("call established".to_string(), "x"))
        );
        assert_eq!(
            split_target("/action-url/dnd_on"),
            Some(("dnd_on".to_string(), ""))
        );
        assert_eq!(split_target("/favicon.ico"), None);
        assert_eq!(split_target("/action-url/"), None);
        assert_eq!(split_target("/action-url/a/b/c"), None);
        assert_eq!(split_target(""), None);
    }

    #[test]
    fn numbers() {
        assert!(same_number("101", "101"));
        assert!(!same_number("101", "1101"));
        assert!(same_number("+1 555 0100", "5550100"));
        assert!(same_number("+15550100", "15550100"));
        assert!(!same_number("5550100", "5550101"));
        assert!(same_number("alice", "Alice"));
        assert!(!same_number("", ""));
        assert!(!same_number("101", "alice"));
    }

    #[test]
    fn call_id_kinds() {
        assert!(!looks_like_sip_call_id("33093"));
        assert!(looks_like_sip_call_id("1-22521@127.0.0.1"));
        assert!(looks_like_sip_call_id(
            "7bee591f-570f-4b8a-a3f4-b89db5319736"
        ));
    }
}
