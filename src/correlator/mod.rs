//! The correlator: journal entries in, merged call records out. A pure, synchronous state
//! machine — no I/O, no clock reads (time arrives with every input), no randomness.
//!
//! The full rules, with a worked example per recorded scenario, are in `docs/CORRELATION.md`.
//! In short:
//!
//! - **Channels** are followed by `Uniqueid`, **calls** by `Linkedid`. A channel's `Linkedid` is
//!   re-read from *every* channel event, because it changes after an attended transfer. A
//!   **conversation** is one or more calls merged because a channel moved between them (its
//!   `Linkedid` changed, or a transfer event names both); its record id is
//!   `<pbx>:<Linkedid of the first call>`. Events for unknown `Uniqueid`s (we joined mid-call,
//!   a `CoreShowChannel` snapshot, events after a gap) create the channel lazily.
//! - `Cdr` and `CEL` events are ignored: their order relative to channel events is not fixed,
//!   so their `LinkedID` may be stale, and everything they say is in the channel events too.
//! - A conversation **completes** `grace` after its last channel hung up (so late phone
//!   callbacks still land in it), checked against the time of each input and of [`Correlator::tick`].
//!   Only conversations that *qualify* get a record: someone was dialled or originated (or a
//!   `Dial` reported its outcome in `DIALSTATUS`, also without an outgoing channel), two
//!   real channels took part, or a real channel was answered. A feature code (`*78`) that
//!   hangs up unanswered is not a call.
//! - **Phone callbacks** are matched exactly by SIP Call-ID when the phone sends one (Snom,
//!   Grandstream), else by phone account + remote party + time window (Yealink's `$call_id` is
//!   a phone-side handle). A callback that arrives before its AMI events waits (pending) for
//!   `phone_match_window`, then becomes an orphan; nothing is dropped. Duplicates are recorded
//!   once. Non-call callbacks (DND, registration…) come out as [`Output::PhoneEvent`].
//! - **Gaps** (periods the bridge could not see AMI) are attached to the calls they overlap;
//!   channels missing from the `CoreShowChannels` resync that precedes the gap marker ended
//!   during the gap and are closed at its end.
//!
//! Determinism: outputs depend only on the inputs. Hash maps are used for lookups; where one
//! is iterated (conversations, on a gap or at the end of input) its keys are sorted first.
//! Everything else iterated is a `BTreeMap`/`BTreeSet`/`Vec`.
//! The whole state is self-contained: [`Correlator::snapshot`] saves it after any input and
//! [`Correlator::restore`] continues from it exactly like the original (`snapshot`).
//!
//! Modules: `fields` (one-pass AMI field extraction), `channel` / `call` (state), `text`
//! (inline short strings), `ami_events` (AMI events → state), `phone_match` (callbacks),
//! `record_build` (state → [`CallRecord`]), `snapshot` (save and restore the state).

mod ami_events;
mod call;
mod channel;
mod fields;
mod phone_match;
mod record_build;
mod snapshot;
#[cfg(test)]
mod tests;
mod text;

use crate::journal::{Input, JournalEntry};
use crate::phone::action_url::{normalize_mac, PhoneCallback};
use crate::record::CallRecord;
use call::Conversation;
use channel::LegRef;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use text::Text;

pub use phone_match::{OrphanCallback, OrphanReason};
pub use snapshot::{
    orphans_from_json, orphans_to_json, CorrelatorSnapshot, SnapshotError, SNAPSHOT_VERSION,
};

/// The hash maps of the correlator's indexes: foldhash, several times faster than the
/// standard SipHash on the short keys here (`Uniqueid`s, SIP Call-IDs). Why that is safe
/// enough: the maps are lookup-only indexes (never iterated into outputs, so the per-process
/// random seed cannot change any result), and their keys come from our own PBX (`Uniqueid`,
/// `Linkedid`, endpoint names) or are bounded by live calls (SIP Call-IDs, which an outside
/// SIP peer picks, and phone callbacks from allowed networks only). foldhash is seeded per
/// process, so colliding keys cannot be precomputed offline; it is not a cryptographic
/// defence, and does not need to be one for inputs this trusted and this bounded.
pub(crate) type HashMap<K, V> = foldhash::HashMap<K, V>;

/// How long a completed call's channels are remembered, so that stray late events for them
/// (e.g. a `Hangup` reordered after completion) are ignored instead of starting a phantom call.
const TOMBSTONE_TTL: TimeDelta = TimeDelta::seconds(60);

/// Settings of the correlator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorrelatorConfig {
    /// How long to wait after the last hangup for late phone callbacks before completing.
    pub grace: Duration,
    /// Endpoint names that are trunks.
    pub trunks: Vec<String>,
    /// Our phones. When non-empty, every other endpoint counts as a trunk.
    pub phones: Vec<PhoneIdentity>,
    /// How far apart (in time) a phone callback and the leg it belongs to may be.
    pub phone_match_window: Duration,
    /// Emit [`Output::CallUpdated`] after every input that changed a live call. Offline replay
    /// only needs completed records and may turn this off (each update builds a full record).
    pub emit_updates: bool,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            grace: Duration::from_secs(3),
            trunks: Vec::new(),
            phones: Vec::new(),
            phone_match_window: Duration::from_secs(10),
            emit_updates: true,
        }
    }
}

/// One of our phones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneIdentity {
    /// The extension (normally also the PJSIP endpoint name).
    pub extension: String,
    /// The SIP account / endpoint name when it differs from the extension.
    pub account: Option<String>,
    /// MAC address in any usual notation.
    pub mac: Option<String>,
}

/// What the correlator emits.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    /// A new conversation (first emitted when it qualifies as a call).
    CallStarted(CallRecord),
    /// A live conversation changed.
    CallUpdated(CallRecord),
    /// The conversation is over (`complete: true`); its record will not change.
    CallCompleted(CallRecord),
    /// A live conversation that had been announced was merged into another one (a transfer
    /// joined two calls): records with id `id` now continue as `into`.
    CallMerged { id: String, into: String },
    /// A phone callback that is not about a call (DND, registration, forwarding…).
    PhoneEvent {
        at: DateTime<Utc>,
        peer: String,
        /// Our extension for this phone, when known.
        extension: Option<String>,
        /// Shared with the receiver that parsed it.
        callback: Arc<PhoneCallback>,
    },
}

/// The configuration, prepared for lookups.
#[derive(Clone, Debug)]
struct Settings {
    grace: TimeDelta,
    window: TimeDelta,
    emit_updates: bool,
    trunks: BTreeSet<String>,
    /// Extensions; account → extension; MAC (normalised) → extension.
    phone_ext: BTreeSet<String>,
    phone_account: BTreeMap<String, String>,
    /// extension → account (when they differ).
    account_of: BTreeMap<String, String>,
    phone_mac: BTreeMap<String, String>,
}

impl Settings {
    fn new(cfg: &CorrelatorConfig) -> Settings {
        let mut phone_ext = BTreeSet::new();
        let mut phone_account = BTreeMap::new();
        let mut account_of = BTreeMap::new();
        let mut phone_mac = BTreeMap::new();
        for p in &cfg.phones {
            phone_ext.insert(p.extension.clone());
            if let Some(a) = p.account.as_ref().filter(|a| !a.is_empty()) {
                phone_account.insert(a.clone(), p.extension.clone());
                account_of.insert(p.extension.clone(), a.clone());
            }
            if let Some(m) = p.mac.as_deref().and_then(normalize_mac) {
                phone_mac.insert(m, p.extension.clone());
            }
        }
        Settings {
            grace: to_delta(cfg.grace),
            window: to_delta(cfg.phone_match_window),
            emit_updates: cfg.emit_updates,
            trunks: cfg.trunks.iter().cloned().collect(),
            phone_ext,
            phone_account,
            account_of,
            phone_mac,
        }
    }

    fn has_phones(&self) -> bool {
        !self.phone_ext.is_empty()
    }

    /// An endpoint that is one of our configured phones (by extension or account).
    fn is_phone(&self, endpoint: &str) -> bool {
        self.phone_ext.contains(endpoint) || self.phone_account.contains_key(endpoint)
    }
}

fn to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// A `CoreShowChannels` list: the channels live when it was taken.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Resync {
    /// Time of its first item (or of the `Complete` when empty).
    started: DateTime<Utc>,
    /// When `CoreShowChannelsComplete` arrived.
    done: DateTime<Utc>,
    uniqueids: BTreeSet<Text>,
}

/// Per-PBX indexes.
#[derive(Clone, Debug, Default)]
struct PbxState {
    /// `Uniqueid` → leg. Lookup only, never iterated.
    channels: HashMap<Text, LegRef>,
    /// `Linkedid` → conversation. Lookup only, never iterated.
    linkedids: HashMap<Text, u64>,
    /// Channels of completed conversations, ignored until they expire.
    tombstones: HashMap<Text, DateTime<Utc>>,
    tombstone_queue: VecDeque<(DateTime<Utc>, Text)>,
    /// A `CoreShowChannels` list being received.
    resync_building: Option<(DateTime<Utc>, BTreeSet<Text>)>,
    /// The last complete list, until a gap uses it.
    resync_done: Option<Resync>,
    /// A gap that arrived before its resync list: applied when the list completes.
    gap_awaiting_resync: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// The correlator. See the module docs.
#[derive(Clone, Debug)]
pub struct Correlator {
    settings: Arc<Settings>,
    pbxs: BTreeMap<Arc<str>, PbxState>,
    /// Conversations by key (keys count up from 0: creation order). Looked up several times
    /// per event, so a hash map; the few places that iterate it sort the keys first.
    convs: HashMap<u64, Conversation>,
    next_key: u64,
    /// `(completion time, conversation)` for conversations whose channels all hung up.
    deadlines: BTreeSet<(DateTime<Utc>, u64)>,
    /// SIP Call-ID → conversation (live and in-grace legs). Lookup only.
    sip_index: HashMap<Text, u64>,
    /// Endpoint → conversations with a leg of it. Lookup only; the values are sorted.
    endpoint_index: HashMap<Text, Vec<u64>>,
    pending: phone_match::Pending,
    orphans: Vec<OrphanCallback>,
    /// SIP Call-IDs of recently completed calls → record id (to tell late callbacks apart).
    recent: phone_match::Recent,
    /// Scratch: conversations touched by the current input (empty between calls).
    touched: Vec<u64>,
    /// Scratch: outputs of the current call (empty between calls).
    outbox: Vec<Output>,
}

impl Correlator {
    pub fn new(cfg: CorrelatorConfig) -> Self {
        Correlator {
            settings: Arc::new(Settings::new(&cfg)),
            pbxs: BTreeMap::new(),
            convs: HashMap::default(),
            next_key: 0,
            deadlines: BTreeSet::new(),
            sip_index: HashMap::default(),
            endpoint_index: HashMap::default(),
            pending: phone_match::Pending::default(),
            orphans: Vec::new(),
            recent: phone_match::Recent::default(),
            touched: Vec::new(),
            outbox: Vec::new(),
        }
    }

    /// Feeds one journal entry; returns what changed.
    pub fn handle(&mut self, entry: &JournalEntry) -> Vec<Output> {
        self.handle_parsed(entry, None)
    }

    /// [`Correlator::handle`] for a phone callback the receiver has parsed already, with
    /// [`crate::phone::action_url::parse_target`] from the entry's own target (so the result
    /// is what `handle` would compute): the live path parses each callback once. `callback`
    /// is ignored for other inputs.
    pub fn handle_parsed(
        &mut self,
        entry: &JournalEntry,
        callback: Option<Arc<crate::phone::action_url::PhoneCallback>>,
    ) -> Vec<Output> {
        let t = entry.t;
        self.advance(t);
        match &entry.input {
            Input::Ami { pbx, msg } => self.on_ami(t, pbx, msg),
            Input::Phone { peer, target } => self.on_phone(t, peer, target, callback),
            Input::Gap {
                pbx,
                from,
                to,
                reason,
            } => self.on_gap(t, pbx, *from, *to, reason),
        }
        self.retry_pending_for_touched(t);
        self.flush_touched();
        self.advance(t);
        std::mem::take(&mut self.outbox)
    }

    /// Time passes: completes the calls whose grace ran out and turns callbacks that waited
    /// too long into orphans.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Output> {
        self.advance(now);
        std::mem::take(&mut self.outbox)
    }

    /// End of input (offline replay): pending callbacks get a last chance to match and are
    /// otherwise orphaned; every conversation whose channels all hung up completes (grace or
    /// not). A conversation with a live channel stays live and is not emitted.
    pub fn finish(&mut self) -> Vec<Output> {
        self.expire_pending(None);
        self.flush_touched();
        let mut over: Vec<u64> = self
            .convs
            .iter()
            .filter(|(_, c)| c.live == 0)
            .map(|(k, _)| *k)
            .collect();
        over.sort_unstable();
        for key in over {
            self.complete(key);
        }
        std::mem::take(&mut self.outbox)
    }

    /// Turns [`Output::CallUpdated`] on or off from now on (the state does not depend on it).
    /// A restart replays the journal with updates off, since nobody listens to them then.
    pub fn set_emit_updates(&mut self, on: bool) {
        if self.settings.emit_updates != on {
            Arc::make_mut(&mut self.settings).emit_updates = on;
        }
    }

    /// Conversations held in memory (live, or waiting for their grace to run out).
    pub fn live_calls(&self) -> usize {
        self.convs.len()
    }

    /// Phone callbacks that matched no call (kept, never dropped), oldest first.
    pub fn orphans(&self) -> &[OrphanCallback] {
        &self.orphans
    }

    /// Takes the orphans collected so far (e.g. after logging or storing them).
    pub fn take_orphans(&mut self) -> Vec<OrphanCallback> {
        std::mem::take(&mut self.orphans)
    }

    /// Phone callbacks waiting for their call's AMI events.
    pub fn pending_callbacks(&self) -> usize {
        self.pending.len()
    }

    // ----- machinery shared by the submodules -----

    /// Queues an output. The returned `Vec` grows one element at a time: an `Output` is ~0.5
    /// KB, and a `Vec`'s first push would reserve four (a 2 KB block, which makes glibc's
    /// allocator consolidate its free lists on every input that has an output), while most
    /// inputs have none or one.
    fn emit(&mut self, output: Output) {
        if self.outbox.len() == self.outbox.capacity() {
            self.outbox.reserve_exact(1);
        }
        self.outbox.push(output);
    }

    fn touch(&mut self, key: u64) {
        if !self.touched.contains(&key) {
            self.touched.push(key);
        }
    }

    /// Emits `CallStarted` / `CallUpdated` for the conversations the input touched.
    fn flush_touched(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        for key in &touched {
            let Some(conv) = self.convs.get_mut(key) else {
                continue;
            };
            if !conv.started {
                if conv.qualifies() {
                    conv.started = true;
                    conv.dirty = false;
                    if let Some(x) = conv.extra.as_mut() {
                        x.unqualified_callbacks = Vec::new();
                    }
                    let rec = record_build::build(conv, &self.settings, false);
                    self.emit(Output::CallStarted(rec));
                }
            } else if conv.dirty {
                conv.dirty = false;
                if self.settings.emit_updates {
                    let rec = record_build::build(conv, &self.settings, false);
                    self.emit(Output::CallUpdated(rec));
                }
            }
        }
        self.touched = touched;
        self.touched.clear();
    }

    /// Everything that happens because time reached `now`.
    fn advance(&mut self, now: DateTime<Utc>) {
        self.expire_pending(Some(now));
        self.flush_touched();
        while let Some(&(deadline, key)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            self.complete(key);
        }
        for p in self.pbxs.values_mut() {
            while let Some((expiry, _)) = p.tombstone_queue.front() {
                if *expiry > now {
                    break;
                }
                if let Some((expiry, uid)) = p.tombstone_queue.pop_front() {
                    if p.tombstones.get(&uid) == Some(&expiry) {
                        p.tombstones.remove(&uid);
                    }
                }
            }
        }
        self.recent.expire(now);
    }

    /// Sets or clears the completion deadline of a conversation.
    fn set_deadline(&mut self, key: u64, deadline: Option<DateTime<Utc>>) {
        let Some(conv) = self.convs.get_mut(&key) else {
            return;
        };
        if conv.deadline == deadline {
            return;
        }
        if let Some(old) = conv.deadline.take() {
            self.deadlines.remove(&(old, key));
        }
        if let Some(d) = deadline {
            conv.deadline = Some(d);
            self.deadlines.insert((d, key));
        }
    }

    /// The conversation is over: drop its state and emit its record (when it qualifies).
    fn complete(&mut self, key: u64) {
        if !self.convs.contains_key(&key) {
            return;
        }
        // Last chance for callbacks that were waiting for exactly this call.
        self.retry_pending_for(key, true);
        self.touched.retain(|k| *k != key);
        let Some(mut conv) = self.convs.remove(&key) else {
            return;
        };
        if let Some(d) = conv.deadline {
            self.deadlines.remove(&(d, key));
        }
        let now = conv.deadline.unwrap_or(conv.last_event);
        // The record first: below, the conversation is taken apart (its strings move into
        // the tombstones and the recent SIP Call-IDs instead of being copied).
        let record = if conv.qualifies() {
            if !conv.started {
                // Consumers always see a call start before it completes.
                let rec = record_build::build(&conv, &self.settings, false);
                self.emit(Output::CallStarted(rec));
            }
            Some(record_build::build(&conv, &self.settings, true))
        } else {
            None
        };
        for leg in &conv.legs {
            if let Some(ep) = leg.endpoint() {
                self.unindex_endpoint(ep, key);
            }
        }
        let record_id: Option<Arc<str>> = record.as_ref().map(|r| Arc::from(r.id.as_str()));
        let recent_expiry = now + self.settings.window;
        for leg in &mut conv.legs {
            let Some(sip) = leg.sip_call_id.take() else {
                continue;
            };
            let indexed = match self.sip_index.get(&*sip) {
                Some(k) if *k == key => self.sip_index.remove_entry(&*sip).map(|(k, _)| k),
                _ => None,
            };
            if let Some(id) = &record_id {
                let key_copy = indexed.unwrap_or_else(|| sip.clone());
                self.recent.insert(key_copy, sip, id.clone(), recent_expiry);
            }
        }
        if let Some(p) = self.pbxs.get_mut(&conv.pbx) {
            let expiry = now + TOMBSTONE_TTL;
            for leg in &mut conv.legs {
                if p.channels.get(&leg.uniqueid).map(|r| r.conv) == Some(key) {
                    if let Some((uid, _)) = p.channels.remove_entry(&*leg.uniqueid) {
                        p.tombstones.insert(uid, expiry);
                        p.tombstone_queue
                            .push_back((expiry, std::mem::take(&mut leg.uniqueid)));
                    }
                }
            }
            for lid in conv.linkedids() {
                if p.linkedids.get(lid) == Some(&key) {
                    p.linkedids.remove(lid);
                }
            }
        }
        match record {
            Some(rec) => self.emit(Output::CallCompleted(rec)),
            None => {
                let raws = conv.extra.map(|x| x.unqualified_callbacks);
                self.orphan_unqualified(raws.unwrap_or_default());
            }
        }
    }

    fn index_endpoint(&mut self, endpoint: &str, key: u64) {
        let list = self.endpoint_index.entry(endpoint.into()).or_default();
        if let Err(pos) = list.binary_search(&key) {
            list.insert(pos, key);
        }
    }

    fn unindex_endpoint(&mut self, endpoint: &str, key: u64) {
        if let Some(list) = self.endpoint_index.get_mut(endpoint) {
            if let Ok(pos) = list.binary_search(&key) {
                list.remove(pos);
            }
            if list.is_empty() {
                self.endpoint_index.remove(endpoint);
            }
        }
    }

    /// Merges two conversations; the one whose first leg started first survives (ties: the
    /// older key). Returns the survivor.
    fn merge(&mut self, a: u64, b: u64) -> u64 {
        if a == b {
            return a;
        }
        let (Some(ca), Some(cb)) = (self.convs.get(&a), self.convs.get(&b)) else {
            return if self.convs.contains_key(&a) { a } else { b };
        };
        let (keep, gone) = if (ca.started_at(), a) <= (cb.started_at(), b) {
            (a, b)
        } else {
            (b, a)
        };
        self.set_deadline(gone, None);
        let Some(g) = self.convs.remove(&gone) else {
            return keep;
        };
        let gone_id = g.id();
        let Some(k) = self.convs.get_mut(&keep) else {
            return keep;
        };
        let leg_off = k.legs.len() as u32;
        let transfer_off = k.extra().transfers.len() as u32;
        let phone_off = k.extra().correlation.len() as u32;
        let pbx = self.pbxs.entry(g.pbx.clone()).or_default();
        for (i, leg) in g.legs.iter().enumerate() {
            let r = LegRef {
                conv: keep,
                idx: leg_off + i as u32,
            };
            pbx.channels.insert(leg.uniqueid.clone(), r);
            if let Some(sip) = &leg.sip_call_id {
                self.sip_index.insert(sip.clone(), keep);
            }
        }
        for lid in g.linkedids() {
            pbx.linkedids.insert(lid.clone(), keep);
            if !k.has_linkedid(lid) {
                k.more_linkedids.push(lid.clone());
            }
        }
        let endpoints: Vec<Text> = g
            .legs
            .iter()
            .filter_map(|l| l.endpoint().map(Into::into))
            .collect();
        k.legs.extend(g.legs);
        for mut step in g.timeline {
            if step.leg != call::NO_LEG {
                step.leg += leg_off;
            }
            step.detail = match step.detail {
                call::Detail::DialFrom(i) if i != call::NO_LEG => {
                    call::Detail::DialFrom(i + leg_off)
                }
                call::Detail::Transfer(i) => call::Detail::Transfer(i + transfer_off),
                call::Detail::Phone(i) => call::Detail::Phone(i + phone_off),
                other => other,
            };
            k.timeline.push(step);
        }
        k.timeline.sort_by_key(|s| s.at);
        if let Some(gx) = g.extra {
            let kx = k.extra_mut();
            kx.transfers.extend(gx.transfers);
            kx.correlation.extend(gx.correlation);
            for gap in gx.gaps {
                if !kx.gaps.contains(&gap) {
                    kx.gaps.push(gap);
                }
            }
            if kx.originate.is_none() {
                kx.originate = gx.originate;
            }
            if kx.dial_request_id.is_none() {
                kx.dial_request_id = gx.dial_request_id;
            }
            kx.unqualified_callbacks.extend(gx.unqualified_callbacks);
        }
        k.had_dial |= g.had_dial;
        k.live += g.live;
        k.last_hangup = k.last_hangup.max(g.last_hangup);
        k.last_event = k.last_event.max(g.last_event);
        k.dirty = true;
        let (live, last_hangup) = (k.live, k.last_hangup);
        let keep_id = k.id();
        for ep in endpoints {
            self.unindex_endpoint(&ep, gone);
            self.index_endpoint(&ep, keep);
        }
        let deadline = if live == 0 {
            last_hangup.map(|t| t + self.settings.grace)
        } else {
            None
        };
        self.set_deadline(keep, deadline);
        if g.started {
            self.emit(Output::CallMerged {
                id: gone_id,
                into: keep_id,
            });
        }
        self.touched.retain(|t| *t != gone);
        self.touch(keep);
        keep
    }
}
