//! AMI events → conversation state.
//!
//! Every event that carries a channel snapshot (`Uniqueid`, …) updates that channel: its
//! `Linkedid` (merging conversations when it moved to another call), state (answer), caller and
//! connected line, context, first dialled `Exten`, and the `SIPCALLID` / `CTIBRIDGE_REQUEST_ID`
//! channel variables. Unknown channels are created lazily. On top of that, the call events
//! below have their own effect and, when they concern a real (non-Local) channel, a timeline
//! entry. `Cdr` and `CEL` are ignored (see the module docs of [`super`]).

use super::call::{dial_status_code, Conversation, Detail, Originate, Step, StepKind};
use super::call::{NO_LEG, NO_REASON};
use super::channel::{endpoint_of, meaningful, Leg, LegRef, STATE_UP};
use super::fields::TRANSFEREE;
use super::fields::{self, Fields, Snap, BASE, DEST, LOCAL_ONE, LOCAL_TWO, ORIG_TRANSFERER};
use super::fields::{DIALSTATUS_VAR, REQUEST_ID_VAR, SECOND_TRANSFERER, SIPCALLID_VAR};
use super::fields::{TRANSFERER, TRANSFER_TARGET};
use super::text::Text;
use super::{Correlator, PbxState, Resync};
use crate::ami::AmiMessage;
use crate::record::{Gap, Transfer};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Whether (and how) an unknown `Uniqueid` creates a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Create {
    /// `Newchannel`: a channel that starts now.
    Newchannel,
    /// Any other channel event: we joined mid-call; the start is `Some` when known
    /// (`CoreShowChannel`'s `Duration`), else the event's time.
    Lazy(Option<DateTime<Utc>>),
}

/// The events with an effect of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Newchannel,
    Newstate,
    DialBegin,
    DialEnd,
    BridgeEnter,
    BridgeLeave,
    Hold,
    Unhold,
    Hangup,
    VarSet,
    BlindTransfer,
    AttendedTransfer,
    LocalBridge,
    OriginateResponse,
    CoreShowChannel,
    CoreShowChannelsComplete,
    /// `Cdr`, `CEL`: not used at all.
    Skip,
    /// Anything else: only its snapshots are applied.
    Other,
}

const KINDS: [(&str, Kind); 18] = [
    ("VarSet", Kind::VarSet),
    ("Newexten", Kind::Other),
    ("CEL", Kind::Skip),
    ("Cdr", Kind::Skip),
    ("Newchannel", Kind::Newchannel),
    ("Newstate", Kind::Newstate),
    ("DialBegin", Kind::DialBegin),
    ("DialEnd", Kind::DialEnd),
    ("BridgeEnter", Kind::BridgeEnter),
    ("BridgeLeave", Kind::BridgeLeave),
    ("Hold", Kind::Hold),
    ("Unhold", Kind::Unhold),
    ("Hangup", Kind::Hangup),
    ("BlindTransfer", Kind::BlindTransfer),
    ("AttendedTransfer", Kind::AttendedTransfer),
    ("LocalBridge", Kind::LocalBridge),
    ("OriginateResponse", Kind::OriginateResponse),
    ("CoreShowChannel", Kind::CoreShowChannel),
];

impl Kind {
    fn of(name: &str) -> Kind {
        // Asterisk's own spelling first (a plain comparison), then any other case.
        let exact = KINDS
            .iter()
            .find(|(n, _)| n.len() == name.len() && *n == name);
        if let Some((_, k)) = exact {
            return *k;
        }
        if name.eq_ignore_ascii_case("CoreShowChannelsComplete") {
            return Kind::CoreShowChannelsComplete;
        }
        KINDS
            .iter()
            .find(|(n, _)| n.len() == name.len() && n.eq_ignore_ascii_case(name))
            .map(|(_, k)| *k)
            .unwrap_or(Kind::Other)
    }
}

/// `HH:MM:SS` (CoreShowChannel `Duration`) or plain seconds.
fn parse_duration(s: &str) -> Option<TimeDelta> {
    let mut secs: i64 = 0;
    let mut parts = 0;
    for part in s.trim().split(':') {
        let v: i64 = part.trim().parse().ok()?;
        if v < 0 {
            return None;
        }
        secs = secs.checked_mul(60)?.checked_add(v)?;
        parts += 1;
    }
    (parts <= 3).then(|| TimeDelta::try_seconds(secs)).flatten()
}

impl Correlator {
    pub(super) fn on_ami(&mut self, t: DateTime<Utc>, pbx: &Arc<str>, msg: &AmiMessage) {
        let Some(name) = fields::event_name(msg) else {
            return; // responses and anything that is not an event
        };
        let kind = Kind::of(name);
        if kind == Kind::Skip {
            return;
        }
        if !self.pbxs.contains_key(pbx) {
            self.pbxs.insert(pbx.clone(), PbxState::default());
        }
        let f = fields::parse(msg);
        let lazy = Create::Lazy(None);
        match kind {
            Kind::Newchannel => {
                if let Some(r) = self.apply_snapshot(t, pbx, f.snap(BASE), Create::Newchannel) {
                    let state = self.leg(r).map(|l| l.state).unwrap_or(0);
                    self.step(r, t, StepKind::Newchannel, Detail::State(state));
                }
            }
            Kind::Newstate => {
                if let Some(r) = self.apply_snapshot(t, pbx, f.snap(BASE), lazy) {
                    let state = self.leg(r).map(|l| l.state).unwrap_or(0);
                    self.step(r, t, StepKind::Newstate, Detail::State(state));
                }
            }
            Kind::DialBegin => self.on_dial_begin(t, pbx, &f),
            Kind::DialEnd => self.on_dial_end(t, pbx, &f),
            Kind::BridgeEnter | Kind::BridgeLeave => {
                if let Some(r) = self.apply_snapshot(t, pbx, f.snap(BASE), lazy) {
                    let k = if kind == Kind::BridgeEnter {
                        StepKind::BridgeEnter
                    } else {
                        StepKind::BridgeLeave
                    };
                    self.step(r, t, k, Detail::None);
                }
            }
            Kind::Hold => {
                if let Some(r) = self.apply_snapshot(t, pbx, f.snap(BASE), lazy) {
                    if let Some(leg) = self.leg_mut(r) {
                        leg.hold_since.get_or_insert(t);
                    }
                    self.step(r, t, StepKind::Hold, Detail::None);
                }
            }
            Kind::Unhold => {
                if let Some(r) = self.apply_snapshot(t, pbx, f.snap(BASE), lazy) {
                    // Every REFER raises Unhold without a Hold: only a real hold is counted.
                    let was_held = match self.leg_mut(r) {
                        Some(leg) if leg.hold_since.is_some() => {
                            leg.close_hold(t);
                            true
                        }
                        _ => false,
                    };
                    let detail = if was_held {
                        Detail::None
                    } else {
                        Detail::UnholdIgnored
                    };
                    self.step(r, t, StepKind::Unhold, detail);
                }
            }
            Kind::Hangup => {
                if let Some(r) = self.apply_snapshot(t, pbx, f.snap(BASE), lazy) {
                    let cause = f.cause.and_then(|c| c.trim().parse::<u16>().ok());
                    self.hang_up(t, r, cause, f.cause_txt, false);
                }
            }
            Kind::VarSet => {
                if let Some(r) = self.apply_snapshot(t, pbx, f.snap(BASE), lazy) {
                    let var = f.variable.unwrap_or("").trim_start_matches('_');
                    let value = f.value.unwrap_or("");
                    if var.eq_ignore_ascii_case(SIPCALLID_VAR) {
                        self.set_sip_call_id(r, value);
                    } else if var.eq_ignore_ascii_case(DIALSTATUS_VAR) && !value.is_empty() {
                        self.set_dial_result(r, value);
                    } else if var.eq_ignore_ascii_case(REQUEST_ID_VAR) && !value.is_empty() {
                        if let Some(conv) = self.convs.get_mut(&r.conv) {
                            if conv.extra().dial_request_id.is_none() {
                                conv.extra_mut().dial_request_id = Some(value.into());
                                conv.dirty = true;
                            }
                        }
                    }
                }
            }
            Kind::BlindTransfer => self.on_blind_transfer(t, pbx, &f),
            Kind::AttendedTransfer => self.on_attended_transfer(t, pbx, &f),
            Kind::LocalBridge => {
                let one = self.apply_snapshot(t, pbx, f.snap(LOCAL_ONE), lazy);
                let two = self.apply_snapshot(t, pbx, f.snap(LOCAL_TWO), lazy);
                if let (Some(a), Some(b)) = (one, two) {
                    self.merge(a.conv, b.conv);
                }
            }
            Kind::OriginateResponse => self.on_originate_response(t, pbx, &f),
            Kind::CoreShowChannel => {
                let started = f.duration.and_then(parse_duration).map(|d| t - d);
                let snap = f.snap(BASE);
                self.apply_snapshot(t, pbx, snap, Create::Lazy(started));
                if let (Some(uid), Some(p)) = (snap.uniqueid, self.pbxs.get_mut(pbx)) {
                    p.resync_building
                        .get_or_insert_with(|| (t, BTreeSet::new()))
                        .1
                        .insert(uid.into());
                }
            }
            Kind::CoreShowChannelsComplete => self.on_resync_complete(t, pbx),
            Kind::Other => {
                self.apply_snapshot(t, pbx, f.snap(BASE), lazy);
                self.apply_snapshot(t, pbx, f.snap(DEST), lazy);
            }
            Kind::Skip => {}
        }
    }

    // ----- channel snapshots -----

    pub(super) fn leg(&self, r: LegRef) -> Option<&Leg> {
        self.convs.get(&r.conv)?.legs.get(r.idx as usize)
    }

    pub(super) fn leg_mut(&mut self, r: LegRef) -> Option<&mut Leg> {
        self.convs.get_mut(&r.conv)?.legs.get_mut(r.idx as usize)
    }

    fn lookup(&self, pbx: &Arc<str>, uniqueid: &str) -> Option<LegRef> {
        self.pbxs.get(pbx)?.channels.get(uniqueid).copied()
    }

    /// Applies one channel snapshot: finds or creates the channel, follows its `Linkedid`,
    /// updates its fields. Returns where the channel is now.
    fn apply_snapshot(
        &mut self,
        t: DateTime<Utc>,
        pbx: &Arc<str>,
        snap: &Snap<'_>,
        create: Create,
    ) -> Option<LegRef> {
        let uid = snap.uniqueid?;
        let p = self.pbxs.get(pbx)?;
        let mut r = match p.channels.get(uid) {
            Some(r) => *r,
            None if p.tombstones.contains_key(uid) => return None,
            None => self.create_leg(t, pbx, uid, snap, create)?,
        };
        if let Some(lid) = snap.linkedid {
            r = self.follow_linkedid(pbx, r, lid);
        }
        self.update_leg(t, r, snap);
        self.touch(r.conv);
        Some(r)
    }

    fn create_leg(
        &mut self,
        t: DateTime<Utc>,
        pbx: &Arc<str>,
        uid: &str,
        snap: &Snap<'_>,
        create: Create,
    ) -> Option<LegRef> {
        let lid = snap.linkedid.unwrap_or(uid);
        let started = match create {
            Create::Lazy(Some(s)) => s.min(t),
            _ => t,
        };
        let p = self.pbxs.get_mut(pbx)?;
        let key = match p.linkedids.get(lid) {
            Some(k) if self.convs.contains_key(k) => *k,
            _ => {
                let k = self.next_key;
                self.next_key += 1;
                p.linkedids.insert(lid.into(), k);
                self.convs
                    .insert(k, Conversation::new(pbx.clone(), lid, started));
                k
            }
        };
        let conv = self.convs.get_mut(&key)?;
        let mut leg = Leg::new(uid, snap.channel.unwrap_or(""), lid, started);
        leg.joined_late = create != Create::Newchannel;
        let endpoint: Option<Text> = leg.endpoint().map(Into::into);
        let r = LegRef {
            conv: key,
            idx: conv.legs.len() as u32,
        };
        conv.legs.push(leg);
        conv.live += 1;
        conv.dirty = true;
        p.channels.insert(uid.into(), r);
        if let Some(ep) = endpoint {
            self.index_endpoint(&ep, key);
        }
        self.set_deadline(key, None);
        Some(r)
    }

    /// A channel's `Linkedid` changed (attended transfer): its new call joins its
    /// conversation.
    fn follow_linkedid(&mut self, pbx: &Arc<str>, r: LegRef, lid: &str) -> LegRef {
        let Some(conv) = self.convs.get_mut(&r.conv) else {
            return r;
        };
        let Some(leg) = conv.legs.get_mut(r.idx as usize) else {
            return r;
        };
        if *leg.linkedid == *lid {
            return r;
        }
        leg.linkedid = lid.into();
        let uid = leg.uniqueid.clone();
        conv.dirty = true;
        let Some(p) = self.pbxs.get_mut(pbx) else {
            return r;
        };
        match p.linkedids.get(lid).copied() {
            Some(k) if k == r.conv => r,
            Some(k) => {
                self.merge(k, r.conv);
                self.lookup(pbx, &uid).unwrap_or(r)
            }
            None => {
                p.linkedids.insert(lid.into(), r.conv);
                conv.more_linkedids.push(lid.into());
                r
            }
        }
    }

    fn update_leg(&mut self, t: DateTime<Utc>, r: LegRef, snap: &Snap<'_>) {
        let Some(conv) = self.convs.get_mut(&r.conv) else {
            return;
        };
        conv.last_event = conv.last_event.max(t);
        let Some(leg) = conv.legs.get_mut(r.idx as usize) else {
            return;
        };
        let mut changed = false;
        let mut new_endpoint = None;
        if leg.channel.is_empty() {
            if let Some(c) = snap.channel {
                leg.set_channel(c);
                new_endpoint = leg.endpoint().map(Text::from);
                changed = true;
            }
        }
        if let Some(state) = snap.state.and_then(|s| s.trim().parse::<u8>().ok()) {
            if state != leg.state {
                leg.state = state;
                changed = true;
            }
            if state == STATE_UP && leg.answered_at.is_none() && leg.ended_at.is_none() {
                leg.answered_at = Some(t);
                changed = true;
            }
        }
        changed |= leg.set_caller(snap.caller_num, snap.caller_name);
        changed |= update(&mut leg.connected_num, snap.connected_num);
        if leg.context.is_none() {
            leg.context = snap.context.filter(|c| !c.is_empty()).map(Into::into);
        }
        if leg.exten.is_none() {
            if let Some(e) = snap.exten.filter(|e| !e.is_empty() && *e != "s") {
                leg.exten = Some(e.into());
                changed = true;
            }
        }
        let mut new_sip = None;
        if let Some(sip) = snap.sip_call_id {
            if leg.sip_call_id.as_deref() != Some(sip) {
                leg.sip_call_id = Some(sip.into());
                new_sip = Some(sip);
                changed = true;
            }
        }
        if let Some(req) = snap.request_id {
            if conv.extra().dial_request_id.is_none() {
                conv.extra_mut().dial_request_id = Some(req.into());
                changed = true;
            }
        }
        if changed {
            conv.dirty = true;
        }
        if let Some(sip) = new_sip {
            self.sip_index.insert(sip.into(), r.conv);
        }
        if let Some(ep) = new_endpoint {
            self.index_endpoint(&ep, r.conv);
        }
    }

    fn set_sip_call_id(&mut self, r: LegRef, value: &str) {
        if value.is_empty() {
            return;
        }
        let Some(conv) = self.convs.get_mut(&r.conv) else {
            return;
        };
        let Some(leg) = conv.legs.get_mut(r.idx as usize) else {
            return;
        };
        if leg.sip_call_id.as_deref() != Some(value) {
            leg.sip_call_id = Some(value.into());
            conv.dirty = true;
            self.sip_index.insert(value.into(), r.conv);
        }
    }

    /// `Dial` returned on this channel with `status`: a dial was attempted (the call qualifies
    /// for a record even when no outgoing channel could be created), and its outcome is kept
    /// for the disposition of a call without dialled legs.
    fn set_dial_result(&mut self, r: LegRef, status: &str) {
        let code = dial_status_code(status);
        let Some(conv) = self.convs.get_mut(&r.conv) else {
            return;
        };
        let Some(leg) = conv.legs.get_mut(r.idx as usize) else {
            return;
        };
        if leg.dial_result != code || !conv.had_dial {
            leg.dial_result = code;
            conv.had_dial = true;
            conv.dirty = true;
        }
    }

    /// Adds a timeline entry for a real (non-Local) channel.
    fn step(&mut self, r: LegRef, at: DateTime<Utc>, kind: StepKind, detail: Detail) {
        let Some(conv) = self.convs.get_mut(&r.conv) else {
            return;
        };
        match conv.legs.get(r.idx as usize) {
            Some(leg) if !leg.local => {}
            _ => return,
        }
        conv.push_step(Step {
            at,
            kind,
            leg: r.idx,
            detail,
        });
        conv.dirty = true;
        self.touch(r.conv);
    }

    /// A channel ended (Hangup, or absent from a resync list).
    pub(super) fn hang_up(
        &mut self,
        t: DateTime<Utc>,
        r: LegRef,
        cause: Option<u16>,
        text: Option<&str>,
        by_resync: bool,
    ) {
        let grace = self.settings.grace;
        let Some(conv) = self.convs.get_mut(&r.conv) else {
            return;
        };
        let Some(leg) = conv.legs.get_mut(r.idx as usize) else {
            return;
        };
        if leg.ended_at.is_some() {
            return;
        }
        leg.ended_at = Some(t);
        leg.hangup_cause = cause;
        leg.hangup_text = text.filter(|s| !s.is_empty()).map(Into::into);
        leg.closed_by_resync = by_resync;
        leg.close_hold(t);
        conv.live = conv.live.saturating_sub(1);
        conv.last_hangup = conv.last_hangup.max(Some(t));
        conv.last_event = conv.last_event.max(t);
        conv.dirty = true;
        let (live, last) = (conv.live, conv.last_hangup);
        let (kind, detail) = if by_resync {
            (StepKind::ClosedByResync, Detail::None)
        } else {
            (StepKind::Hangup, Detail::Cause(cause))
        };
        self.step(r, t, kind, detail);
        self.touch(r.conv);
        if live == 0 {
            self.set_deadline(r.conv, last.map(|l| l + grace));
        }
    }

    // ----- dialling, originate, transfers -----

    /// Both channels in one conversation (merging if a dial crossed calls); returns where
    /// they are now.
    fn join(&mut self, pbx: &Arc<str>, a: LegRef, b: LegRef) -> Option<(LegRef, LegRef)> {
        if a.conv == b.conv {
            return Some((a, b));
        }
        let (ua, ub) = (self.leg(a)?.uniqueid.clone(), self.leg(b)?.uniqueid.clone());
        self.merge(a.conv, b.conv);
        Some((self.lookup(pbx, &ua)?, self.lookup(pbx, &ub)?))
    }

    fn on_dial_begin(&mut self, t: DateTime<Utc>, pbx: &Arc<str>, f: &Fields<'_>) {
        let lazy = Create::Lazy(None);
        let src = self.apply_snapshot(t, pbx, f.snap(BASE), lazy);
        let Some(mut dst) = self.apply_snapshot(t, pbx, f.snap(DEST), lazy) else {
            return;
        };
        let mut src_idx = None;
        if let Some(s) = src {
            let Some((s, d)) = self.join(pbx, s, dst) else {
                return;
            };
            dst = d;
            src_idx = Some(s.idx);
            if let Some(leg) = self.leg_mut(s) {
                leg.has_dialled = true;
            }
        }
        if let Some(conv) = self.convs.get_mut(&dst.conv) {
            conv.had_dial = true;
            conv.dirty = true;
            if let Some(leg) = conv.legs.get_mut(dst.idx as usize) {
                if src.is_some() {
                    leg.dialled = true;
                } else {
                    leg.originated = true;
                }
            }
        }
        self.step(
            dst,
            t,
            StepKind::DialBegin,
            Detail::DialFrom(src_idx.unwrap_or(NO_LEG)),
        );
    }

    fn on_dial_end(&mut self, t: DateTime<Utc>, pbx: &Arc<str>, f: &Fields<'_>) {
        let lazy = Create::Lazy(None);
        self.apply_snapshot(t, pbx, f.snap(BASE), lazy);
        let Some(dst) = self.apply_snapshot(t, pbx, f.snap(DEST), lazy) else {
            return;
        };
        let Some(status) = f.dial_status else {
            return;
        };
        let Some(leg) = self.leg_mut(dst) else {
            return;
        };
        // A queue repeats `DialEnd CANCEL` for the losing member: one timeline entry.
        let repeated = leg.dial_status.as_deref() == Some(status);
        leg.dial_status = Some(status.into());
        if status.eq_ignore_ascii_case("ANSWER")
            && leg.answered_at.is_none()
            && leg.ended_at.is_none()
        {
            leg.answered_at = Some(t);
        }
        if let Some(conv) = self.convs.get_mut(&dst.conv) {
            conv.dirty = true;
        }
        if !repeated {
            let code = dial_status_code(status);
            self.step(dst, t, StepKind::DialEnd, Detail::DialStatus(code));
        }
    }

    fn on_originate_response(&mut self, t: DateTime<Utc>, pbx: &Arc<str>, f: &Fields<'_>) {
        // Not a channel snapshot (no Linkedid; its Channel may be just `PJSIP/101`): only
        // find the originated channel.
        let Some(r) = f.snap(BASE).uniqueid.and_then(|u| self.lookup(pbx, u)) else {
            return;
        };
        let success = f
            .response
            .is_some_and(|r| r.eq_ignore_ascii_case("Success"));
        let reason = f
            .reason
            .and_then(|r| r.trim().parse::<u8>().ok())
            .unwrap_or(NO_REASON);
        let Some(conv) = self.convs.get_mut(&r.conv) else {
            return;
        };
        conv.extra_mut().originate = Some(Originate {
            success,
            exten: f
                .snap(BASE)
                .exten
                .filter(|e| !e.is_empty() && *e != "s")
                .map(Into::into),
            action_id: f.action_id.map(Into::into),
        });
        conv.last_event = conv.last_event.max(t);
        conv.dirty = true;
        if let Some(leg) = conv.legs.get_mut(r.idx as usize) {
            leg.originated = true;
        }
        self.touch(r.conv);
        self.step(
            r,
            t,
            StepKind::OriginateResponse,
            Detail::Originate { success, reason },
        );
    }

    /// Merges the conversations of the channels of snapshots `which` (looked up again after
    /// each merge, since a merge moves legs); returns the survivor's key.
    fn join_snapshots(&mut self, pbx: &Arc<str>, f: &Fields<'_>, which: &[usize]) -> Option<u64> {
        let mut key = None;
        for &i in which {
            let Some(r) = f.snap(i).uniqueid.and_then(|u| self.lookup(pbx, u)) else {
                continue;
            };
            key = Some(match key {
                None => r.conv,
                Some(k) => self.merge(k, r.conv),
            });
        }
        key
    }

    fn push_transfer(&mut self, key: u64, leg: Option<LegRef>, t: DateTime<Utc>, tr: Transfer) {
        let kind = if tr.kind == "blind" {
            StepKind::BlindTransfer
        } else {
            StepKind::AttendedTransfer
        };
        let Some(conv) = self.convs.get_mut(&key) else {
            return;
        };
        let transfers = &mut conv.extra_mut().transfers;
        let idx = transfers.len() as u32;
        transfers.push(tr);
        let leg_idx = leg
            .filter(|r| r.conv == key)
            .map(|r| r.idx)
            .unwrap_or(NO_LEG);
        conv.push_step(Step {
            at: t,
            kind,
            leg: leg_idx,
            detail: Detail::Transfer(idx),
        });
        conv.dirty = true;
        conv.last_event = conv.last_event.max(t);
        self.touch(key);
    }

    fn on_blind_transfer(&mut self, t: DateTime<Utc>, pbx: &Arc<str>, f: &Fields<'_>) {
        let lazy = Create::Lazy(None);
        self.apply_snapshot(t, pbx, f.snap(TRANSFERER), lazy);
        self.apply_snapshot(t, pbx, f.snap(TRANSFEREE), lazy);
        let Some(key) = self.join_snapshots(pbx, f, &[TRANSFERER, TRANSFEREE]) else {
            return;
        };
        let by_leg = f
            .snap(TRANSFERER)
            .uniqueid
            .and_then(|u| self.lookup(pbx, u));
        let tr = Transfer {
            at: Some(t),
            kind: "blind".into(),
            by: f
                .snap(TRANSFERER)
                .channel
                .and_then(endpoint_of)
                .map(Into::into),
            to: f.extension.map(Into::into),
            result: f.result.map(Into::into),
        };
        self.push_transfer(key, by_leg, t, tr);
    }

    fn on_attended_transfer(&mut self, t: DateTime<Utc>, pbx: &Arc<str>, f: &Fields<'_>) {
        let lazy = Create::Lazy(None);
        let all = [
            ORIG_TRANSFERER,
            SECOND_TRANSFERER,
            TRANSFEREE,
            TRANSFER_TARGET,
        ];
        for i in all {
            self.apply_snapshot(t, pbx, f.snap(i), lazy);
        }
        let key = self.join_snapshots(pbx, f, &all);
        let Some(key) = key else {
            return;
        };
        let by_leg = f
            .snap(ORIG_TRANSFERER)
            .uniqueid
            .and_then(|u| self.lookup(pbx, u));
        let endpoint = |i: usize| f.snap(i).channel.and_then(endpoint_of);
        let to = endpoint(TRANSFER_TARGET)
            .or(f
                .snap(SECOND_TRANSFERER)
                .connected_num
                .filter(|n| meaningful(n)))
            .map(Into::into);
        let tr = Transfer {
            at: Some(t),
            kind: "attended".into(),
            by: endpoint(ORIG_TRANSFERER)
                .or(endpoint(SECOND_TRANSFERER))
                .map(Into::into),
            to,
            result: f.result.map(Into::into),
        };
        self.push_transfer(key, by_leg, t, tr);
    }

    // ----- gaps and resync -----

    fn on_resync_complete(&mut self, t: DateTime<Utc>, pbx: &Arc<str>) {
        let Some(p) = self.pbxs.get_mut(pbx) else {
            return;
        };
        let (started, uniqueids) = p.resync_building.take().unwrap_or((t, BTreeSet::new()));
        let list = Resync {
            started,
            done: t,
            uniqueids,
        };
        match p.gap_awaiting_resync.take() {
            Some((from, to)) if list.started >= from => self.close_missing(pbx, &list, to),
            _ => p.resync_done = Some(list),
        }
    }

    pub(super) fn on_gap(
        &mut self,
        _t: DateTime<Utc>,
        pbx: &Arc<str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        reason: &str,
    ) {
        let all = &**pbx == crate::ingest::ALL_SOURCES;
        let gap = Gap {
            from,
            to,
            reason: reason.to_string(),
        };
        let mut hit: Vec<u64> = self
            .convs
            .iter()
            .filter(|(_, c)| all || c.pbx == *pbx)
            .filter(|(_, c)| {
                let ended_before = matches!(c.last_hangup, Some(h) if c.live == 0 && h < from);
                c.started_at() <= to && !ended_before
            })
            .map(|(k, _)| *k)
            .collect();
        hit.sort_unstable(); // `convs` is a hash map: its order is not an input's
        for key in hit {
            if let Some(conv) = self.convs.get_mut(&key) {
                if !conv.extra().gaps.contains(&gap) {
                    conv.extra_mut().gaps.push(gap.clone());
                    conv.dirty = true;
                    self.touch(key);
                }
            }
        }
        if all {
            // A live-only consumer overflow: no resync list belongs to it.
            return;
        }
        let Some(p) = self.pbxs.get_mut(pbx) else {
            return;
        };
        match p.resync_done.take() {
            Some(list) if list.done >= from => self.close_missing(pbx, &list, to),
            _ => p.gap_awaiting_resync = Some((from, to)),
        }
    }

    /// Channels of `pbx` we think live that the resync list does not hold ended during the
    /// gap: close them at its end so their calls complete instead of hanging forever.
    fn close_missing(&mut self, pbx: &Arc<str>, list: &Resync, to: DateTime<Utc>) {
        let mut missing: Vec<(LegRef, DateTime<Utc>)> = self
            .convs
            .iter()
            .filter(|(_, c)| c.pbx == *pbx)
            .flat_map(|(k, c)| {
                c.legs.iter().enumerate().filter_map(move |(i, l)| {
                    (l.ended_at.is_none()
                        && l.started_at < list.started
                        && !list.uniqueids.contains(&*l.uniqueid))
                    .then_some((
                        LegRef {
                            conv: *k,
                            idx: i as u32,
                        },
                        l.started_at,
                    ))
                })
            })
            .collect();
        missing.sort_unstable_by_key(|(r, _)| (r.conv, r.idx));
        for (r, started) in missing {
            self.hang_up(to.max(started), r, None, None, true);
        }
    }
}

/// Sets `slot` from a snapshot value that carries information; returns whether it changed.
fn update(slot: &mut Option<Text>, value: Option<&str>) -> bool {
    match value {
        Some(v) if meaningful(v) && slot.as_deref() != Some(v) => {
            *slot = Some(v.into());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("00:01:05"), Some(TimeDelta::seconds(65)));
        assert_eq!(parse_duration("42"), Some(TimeDelta::seconds(42)));
        assert_eq!(parse_duration("1:00:00"), Some(TimeDelta::seconds(3600)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("1:2:3:4"), None);
        assert_eq!(parse_duration("-1"), None);
    }
}
