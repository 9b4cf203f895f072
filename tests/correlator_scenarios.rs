//! Synthetic call scenarios through the correlator's public API (issue 4, "synthetic
//! scenarios"): the cases the recorded fixtures do not cover, or cover only thinly.
//!
//! Each test writes a journal the way the service would have written it — AMI events in
//! the shapes a real Asterisk 20/22 with PJSIP sends (field names and order of the channel
//! snapshot, `Uniqueid`/`Linkedid` as `epoch.seq` with every channel of a call carrying its
//! first channel's id, `DialBegin`/`DialEnd` with the `Dest*` block, `Hangup` with
//! `Cause`/`Cause-txt`, `Local/…;1`/`;2` halves, `ChanVariable: SIPCALLID=` from
//! `channelvars`, the AMI client's resync list before its gap marker) and phone callbacks as
//! the phones send them (Yealink call handles, Snom and Grandstream SIP Call-IDs) — and then
//! checks the merged record field by field.
//!
//! The small [`Script`] builder keeps every test readable as the call it describes:
//! `s.at(1_500); s.answer(alice, bob);`. Where the recorded fixtures already cover a scenario
//! well (ring group, blind transfer, busy, caller cancels), the test lives in
//! `tests/correlator_fixtures.rs` instead.

use chrono::{DateTime, TimeDelta, Utc};
use ctibridge::ami::{AmiMessage, AmiMessageBuilder};
use ctibridge::correlator::{Correlator, CorrelatorConfig, OrphanReason, Output, PhoneIdentity};
use ctibridge::journal::{Input, JournalEntry};
use ctibridge::record::{CallRecord, Direction, Disposition, Leg, Source};
use std::sync::Arc;

const PBX: &str = "default";

// ----- channel states, as `ChannelState` numbers -----

const DOWN: u8 = 0;
const RING: u8 = 4;
const RINGING: u8 = 5;
const UP: u8 = 6;

fn state_desc(state: u8) -> &'static str {
    match state {
        DOWN => "Down",
        RING => "Ring",
        RINGING => "Ringing",
        UP => "Up",
        7 => "Busy",
        _ => "Unknown",
    }
}

/// `Cause-txt` as Asterisk's cause table spells it.
fn cause_txt(cause: u16) -> &'static str {
    match cause {
        0 => "Unknown",
        3 => "No route to destination",
        16 => "Normal Clearing",
        17 => "User busy",
        19 => "User alerting, no answer",
        20 => "Subscriber absent",
        21 => "Call Rejected",
        26 => "Answered elsewhere",
        127 => "Interworking, unspecified",
        _ => "Unknown",
    }
}

// ----- the scenario builder -----

/// A channel of the script (an index into [`Script::chans`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chan(usize);

/// A bridge of the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bridge(usize);

/// What Asterisk's snapshot of a channel says right now.
#[derive(Clone, Debug)]
struct ChanData {
    name: String,
    uniqueid: String,
    linkedid: String,
    state: u8,
    cid_num: String,
    cid_name: String,
    conn_num: String,
    conn_name: String,
    context: String,
    exten: String,
    priority: u32,
    /// The `SIPCALLID` channel variable (empty until the dialplan sets it).
    sipcallid: String,
    created_ms: i64,
}

#[derive(Clone, Debug)]
struct BridgeData {
    uniqueid: String,
    members: Vec<Chan>,
}

/// A journal being written in time order: AMI events of PBX `default`, phone callbacks and
/// gap markers, each stamped with the script's current time.
struct Script {
    t0: DateTime<Utc>,
    now: i64,
    /// Asterisk's global channel counter (the part after the dot of a `Uniqueid`).
    next_seq: u32,
    chans: Vec<ChanData>,
    bridges: Vec<BridgeData>,
    journal: Vec<JournalEntry>,
}

impl Script {
    fn new() -> Script {
        Script {
            t0: DateTime::from_timestamp(1_795_400_000, 0).unwrap(),
            now: 0,
            next_seq: 20,
            chans: Vec::new(),
            bridges: Vec::new(),
            journal: Vec::new(),
        }
    }

    /// The absolute time of `ms` after the script's start.
    fn t(&self, ms: i64) -> DateTime<Utc> {
        self.t0 + TimeDelta::milliseconds(ms)
    }

    /// Moves the clock to `ms` (the journal is written in time order).
    fn at(&mut self, ms: i64) -> &mut Self {
        assert!(
            ms >= self.now,
            "the script goes back in time: {ms} < {}",
            self.now
        );
        self.now = ms;
        self
    }

    fn c(&self, c: Chan) -> &ChanData {
        &self.chans[c.0]
    }

    fn cm(&mut self, c: Chan) -> &mut ChanData {
        &mut self.chans[c.0]
    }

    fn name(&self, c: Chan) -> &str {
        &self.c(c).name
    }

    fn uid(&self, c: Chan) -> &str {
        &self.c(c).uniqueid
    }

    fn push(&mut self, input: Input) {
        let t = self.t(self.now);
        self.journal.push(JournalEntry { t, input });
    }

    fn emit(&mut self, msg: AmiMessageBuilder) {
        let msg = msg.build().expect("a well-formed AMI message");
        self.push(Input::Ami {
            pbx: Arc::from(PBX),
            msg,
        });
    }

    /// The channel snapshot block, with `prefix` (`""`, `Dest`, `Transferee`, …), in the
    /// field order Asterisk writes it (`main/manager_channels.c`).
    fn snap(&self, b: AmiMessageBuilder, prefix: &str, c: Chan) -> AmiMessageBuilder {
        let d = self.c(c);
        b.field(format!("{prefix}Channel"), &d.name)
            .field(format!("{prefix}ChannelState"), d.state.to_string())
            .field(format!("{prefix}ChannelStateDesc"), state_desc(d.state))
            .field(format!("{prefix}CallerIDNum"), &d.cid_num)
            .field(format!("{prefix}CallerIDName"), &d.cid_name)
            .field(format!("{prefix}ConnectedLineNum"), &d.conn_num)
            .field(format!("{prefix}ConnectedLineName"), &d.conn_name)
            .field(format!("{prefix}Language"), "en")
            .field(format!("{prefix}AccountCode"), "")
            .field(format!("{prefix}Context"), &d.context)
            .field(format!("{prefix}Exten"), &d.exten)
            .field(format!("{prefix}Priority"), d.priority.to_string())
            .field(format!("{prefix}Uniqueid"), &d.uniqueid)
            .field(format!("{prefix}Linkedid"), &d.linkedid)
            .field(
                format!("{prefix}ChanVariable"),
                format!("SIPCALLID={}", d.sipcallid),
            )
    }

    /// An event about one channel: `Event`, `Privilege`, the snapshot.
    fn chan_event(&self, event: &str, c: Chan) -> AmiMessageBuilder {
        let b = AmiMessage::event(event).field("Privilege", "call,all");
        self.snap(b, "", c)
    }

    fn new_chan(&mut self, name: &str, state: u8, linked: Option<Chan>) -> Chan {
        let seq = self.next_seq;
        self.next_seq += 1;
        let uniqueid = format!("{}.{seq}", self.t(self.now).timestamp());
        let linkedid = match linked {
            Some(l) => self.c(l).linkedid.clone(),
            None => uniqueid.clone(),
        };
        self.chans.push(ChanData {
            name: name.to_string(),
            uniqueid,
            linkedid,
            state,
            cid_num: "<unknown>".into(),
            cid_name: "<unknown>".into(),
            conn_num: "<unknown>".into(),
            conn_name: "<unknown>".into(),
            context: "internal".into(),
            exten: "s".into(),
            priority: 1,
            sipcallid: String::new(),
            created_ms: self.now,
        });
        Chan(self.chans.len() - 1)
    }

    /// A phone starts a call: `Newchannel` in state Ring, dialling `exten`, in a call of its
    /// own (`Linkedid` = its `Uniqueid`).
    fn caller(&mut self, name: &str, num: &str, cid_name: &str, exten: &str) -> Chan {
        let c = self.new_chan(name, RING, None);
        let d = self.cm(c);
        d.cid_num = num.into();
        d.cid_name = cid_name.into();
        d.exten = exten.into();
        self.emit(self.chan_event("Newchannel", c));
        c
    }

    /// `Dial` creates the outgoing channel for the call of `by`: `Newchannel` (Down, the
    /// endpoint's own caller ID and context, `Exten: s`), then `NewConnectedLine` once the
    /// dial copied the caller's `Exten` and connected line onto it.
    fn callee(&mut self, name: &str, num: &str, cid_name: &str, by: Chan) -> Chan {
        let c = self.new_chan(name, DOWN, Some(by));
        {
            let d = self.cm(c);
            d.cid_num = num.into();
            d.cid_name = cid_name.into();
        }
        self.emit(self.chan_event("Newchannel", c));
        let (exten, cnum, cname) = {
            let b = self.c(by);
            (b.exten.clone(), b.cid_num.clone(), b.cid_name.clone())
        };
        let d = self.cm(c);
        d.exten = exten;
        d.conn_num = cnum;
        d.conn_name = cname;
        self.emit(self.chan_event("NewConnectedLine", c));
        c
    }

    /// A `Local/exten@context-%08x` pair requested by `by`: `Newchannel` for `;1` (Down) and
    /// `;2` (Ring, carrying the caller's ID into the dialplan), both in `by`'s call.
    fn local(&mut self, base: &str, by: Chan) -> (Chan, Chan) {
        let (exten, context) = base
            .trim_start_matches("Local/")
            .rsplit_once('-')
            .and_then(|(ec, _)| ec.split_once('@'))
            .map(|(e, c)| (e.to_string(), c.to_string()))
            .expect("Local/exten@context-suffix");
        let one = self.new_chan(&format!("{base};1"), DOWN, Some(by));
        let two = self.new_chan(&format!("{base};2"), RING, Some(by));
        let (cnum, cname) = (self.c(by).cid_num.clone(), self.c(by).cid_name.clone());
        for c in [one, two] {
            let d = self.cm(c);
            d.context = context.clone();
            d.exten = exten.clone();
        }
        {
            let d = self.cm(one);
            d.conn_num = cnum.clone();
            d.conn_name = cname.clone();
        }
        {
            let d = self.cm(two);
            d.cid_num = cnum;
            d.cid_name = cname;
        }
        self.emit(self.chan_event("Newchannel", one));
        self.emit(self.chan_event("Newchannel", two));
        (one, two)
    }

    /// `LocalBridge`: the two halves are joined; `optimize` is false for `/n` interfaces.
    fn local_bridge(&mut self, one: Chan, two: Chan, optimize: bool) {
        let b = AmiMessage::event("LocalBridge").field("Privilege", "call,all");
        let b = self.snap(self.snap(b, "LocalOne", one), "LocalTwo", two);
        let (context, exten) = (self.c(one).context.clone(), self.c(one).exten.clone());
        self.emit(
            b.field("Context", context)
                .field("Exten", exten)
                .field("LocalOptimization", if optimize { "Yes" } else { "No" }),
        );
    }

    /// `LocalOptimizationBegin`: `source` (the real channel beyond `;2`) is about to replace
    /// `;1` in its bridge (`core_local.c`: LocalOne, LocalTwo, Source, DestUniqueId, Id).
    fn local_optimization_begin(&mut self, one: Chan, two: Chan, source: Chan, id: u32) {
        let b = AmiMessage::event("LocalOptimizationBegin").field("Privilege", "call,all");
        let b = self.snap(self.snap(b, "LocalOne", one), "LocalTwo", two);
        let b = self.snap(b, "Source", source);
        let dest = self.uid(one).to_string();
        self.emit(b.field("DestUniqueId", dest).field("Id", id.to_string()));
    }

    fn local_optimization_end(&mut self, one: Chan, two: Chan, id: u32) {
        let b = AmiMessage::event("LocalOptimizationEnd").field("Privilege", "call,all");
        let b = self.snap(self.snap(b, "LocalOne", one), "LocalTwo", two);
        self.emit(b.field("Success", "Yes").field("Id", id.to_string()));
    }

    /// `VarSet` on a channel (class dialplan).
    fn varset(&mut self, c: Chan, variable: &str, value: &str) {
        let b = AmiMessage::event("VarSet").field("Privilege", "dialplan,all");
        let b = self.snap(b, "", c);
        self.emit(b.field("Variable", variable).field("Value", value));
    }

    /// The dialplan copies the leg's SIP Call-ID into `SIPCALLID` (listed in `channelvars`,
    /// so every later snapshot of the channel carries it).
    fn sip_call_id(&mut self, c: Chan, call_id: &str) {
        self.cm(c).sipcallid = call_id.into();
        self.varset(c, "SIPCALLID", call_id);
    }

    fn newstate(&mut self, c: Chan, state: u8) {
        self.cm(c).state = state;
        self.emit(self.chan_event("Newstate", c));
    }

    fn connected_line(&mut self, c: Chan, num: &str, name: &str) {
        let d = self.cm(c);
        d.conn_num = num.into();
        d.conn_name = name.into();
        self.emit(self.chan_event("NewConnectedLine", c));
    }

    fn dial_event(&self, event: &str, from: Chan, to: Chan) -> AmiMessageBuilder {
        let b = self.chan_event(event, from);
        self.snap(b, "Dest", to)
    }

    fn dial_begin(&mut self, from: Chan, to: Chan, dial_string: &str) {
        self.cm(from).priority = 4;
        let b = self.dial_event("DialBegin", from, to);
        self.emit(b.field("DialString", dial_string));
    }

    fn dial_end(&mut self, from: Chan, to: Chan, status: &str) {
        let b = self.dial_event("DialEnd", from, to);
        self.emit(b.field("DialStatus", status));
    }

    /// The dialled channel rings: `Newstate` Ringing, `DialState` RINGING.
    fn ringing(&mut self, from: Chan, to: Chan) {
        self.newstate(to, RINGING);
        let b = self.dial_event("DialState", from, to);
        self.emit(b.field("DialStatus", "RINGING"));
    }

    /// The dialled phone answers, as in the recorded `answered_caller_hangup`: `Newstate` Up
    /// of the callee, the caller's connected line, `DialEnd ANSWER`, `Newstate` Up of the
    /// caller.
    fn answer(&mut self, from: Chan, to: Chan) {
        self.newstate(to, UP);
        let (num, name) = (self.c(to).cid_num.clone(), self.c(to).cid_name.clone());
        self.connected_line(from, &num, &name);
        self.dial_end(from, to, "ANSWER");
        self.newstate(from, UP);
    }

    fn bridge_fields(&self, b: AmiMessageBuilder, br: Bridge) -> AmiMessageBuilder {
        let d = &self.bridges[br.0];
        b.field("BridgeUniqueid", &d.uniqueid)
            .field("BridgeType", "basic")
            .field("BridgeTechnology", "simple_bridge")
            .field("BridgeCreator", "<unknown>")
            .field("BridgeName", "<unknown>")
            .field("BridgeNumChannels", d.members.len().to_string())
            .field("BridgeVideoSourceMode", "none")
    }

    fn bridge(&mut self) -> Bridge {
        let n = self.bridges.len() + 1;
        self.bridges.push(BridgeData {
            uniqueid: format!("5e1d2c3b-7a10-4c6e-9d0f-{n:012x}"),
            members: Vec::new(),
        });
        let br = Bridge(self.bridges.len() - 1);
        let b = AmiMessage::event("BridgeCreate").field("Privilege", "call,all");
        self.emit(self.bridge_fields(b, br));
        br
    }

    fn enter(&mut self, br: Bridge, c: Chan) {
        self.enter_swap(br, c, None);
    }

    /// `BridgeEnter`, with `SwapUniqueid` when `c` takes another channel's place.
    fn enter_swap(&mut self, br: Bridge, c: Chan, swap: Option<Chan>) {
        self.bridges[br.0].members.push(c);
        let b = AmiMessage::event("BridgeEnter").field("Privilege", "call,all");
        let b = self.snap(self.bridge_fields(b, br), "", c);
        let swap = swap.map(|s| self.uid(s).to_string());
        self.emit(b.field_opt("SwapUniqueid", swap));
    }

    fn leave(&mut self, br: Bridge, c: Chan) {
        self.bridges[br.0].members.retain(|m| *m != c);
        let b = AmiMessage::event("BridgeLeave").field("Privilege", "call,all");
        let b = self.snap(self.bridge_fields(b, br), "", c);
        self.emit(b);
    }

    fn destroy(&mut self, br: Bridge) {
        let b = AmiMessage::event("BridgeDestroy").field("Privilege", "call,all");
        self.emit(self.bridge_fields(b, br));
    }

    /// A bridge with `chans` in it (`BridgeCreate`, one `BridgeEnter` each).
    fn bridge_with(&mut self, chans: &[Chan]) -> Bridge {
        let br = self.bridge();
        for &c in chans {
            self.enter(br, c);
        }
        br
    }

    /// A bridge made while the bridge could not see AMI (no events for it).
    fn unseen_bridge(&mut self, chans: &[Chan]) -> Bridge {
        let n = self.bridges.len() + 1;
        self.bridges.push(BridgeData {
            uniqueid: format!("5e1d2c3b-7a10-4c6e-9d0f-{n:012x}"),
            members: chans.to_vec(),
        });
        Bridge(self.bridges.len() - 1)
    }

    /// The bridge `c` is in, if any.
    fn bridge_of(&self, c: Chan) -> Option<Bridge> {
        self.bridges
            .iter()
            .position(|b| b.members.contains(&c))
            .map(Bridge)
    }

    fn soft_hangup_request(&mut self, c: Chan, cause: u16) {
        let b = self.chan_event("SoftHangupRequest", c);
        self.emit(b.field("Cause", cause.to_string()));
    }

    /// The channel ends: `BridgeLeave` first when it is bridged, then `Hangup` with `Cause`
    /// and `Cause-txt`.
    fn hangup(&mut self, c: Chan, cause: u16) {
        if let Some(br) = self.bridge_of(c) {
            self.leave(br, c);
        }
        let b = self.chan_event("Hangup", c);
        self.emit(
            b.field("Cause", cause.to_string())
                .field("Cause-txt", cause_txt(cause)),
        );
    }

    /// `Hold` on the channel whose phone sent the sendonly re-INVITE.
    fn hold(&mut self, c: Chan) {
        let b = self.chan_event("Hold", c);
        self.emit(b.field("MusicClass", "default"));
    }

    fn unhold(&mut self, c: Chan) {
        self.emit(self.chan_event("Unhold", c));
    }

    /// `MusicOnHoldStart` on the party that hears the music (not used for hold time).
    fn moh_start(&mut self, c: Chan) {
        let b = self.chan_event("MusicOnHoldStart", c);
        self.emit(b.field("Class", "default"));
    }

    fn moh_stop(&mut self, c: Chan) {
        self.emit(self.chan_event("MusicOnHoldStop", c));
    }

    /// `AttendedTransfer` (`main/stasis_bridges.c`): the transferer's first channel and
    /// bridge, its second channel and bridge, the transferee and the target.
    fn attended_transfer(
        &mut self,
        (orig, orig_bridge): (Chan, Bridge),
        (second, second_bridge): (Chan, Bridge),
        transferee: Chan,
        target: Chan,
    ) {
        let mut b = AmiMessage::event("AttendedTransfer")
            .field("Privilege", "call,all")
            .field("Result", "Success");
        b = self.snap(b, "OrigTransferer", orig);
        b = self.prefixed_bridge(b, "Orig", orig_bridge);
        b = self.snap(b, "SecondTransferer", second);
        b = self.prefixed_bridge(b, "Second", second_bridge);
        b = self.snap(b, "Transferee", transferee);
        b = self.snap(b, "TransferTarget", target);
        let dest = self.bridges[second_bridge.0].uniqueid.clone();
        self.emit(
            b.field("IsExternal", "Yes")
                .field("DestType", "Bridge")
                .field("DestBridgeUniqueid", dest),
        );
    }

    fn prefixed_bridge(&self, b: AmiMessageBuilder, prefix: &str, br: Bridge) -> AmiMessageBuilder {
        let d = &self.bridges[br.0];
        b.field(format!("{prefix}BridgeUniqueid"), &d.uniqueid)
            .field(format!("{prefix}BridgeType"), "basic")
            .field(format!("{prefix}BridgeTechnology"), "simple_bridge")
            .field(format!("{prefix}BridgeCreator"), "<unknown>")
            .field(format!("{prefix}BridgeName"), "<unknown>")
            .field(
                format!("{prefix}BridgeNumChannels"),
                d.members.len().to_string(),
            )
            .field(format!("{prefix}BridgeVideoSourceMode"), "none")
    }

    /// A bridge merge moved `c` into a call whose first channel is older: from its next event
    /// on, its `Linkedid` is that call's.
    fn relink(&mut self, c: Chan, into: Chan) {
        let lid = self.c(into).linkedid.clone();
        self.cm(c).linkedid = lid;
    }

    // ----- app_queue -----

    fn queue_caller_join(&mut self, c: Chan, queue: &str) {
        let b = self.chan_event("QueueCallerJoin", c);
        self.emit(
            b.field("Queue", queue)
                .field("Position", "1")
                .field("Count", "1"),
        );
    }

    fn queue_caller_leave(&mut self, c: Chan, queue: &str) {
        let b = self.chan_event("QueueCallerLeave", c);
        self.emit(
            b.field("Queue", queue)
                .field("Count", "0")
                .field("Position", "1"),
        );
    }

    /// `AgentCalled` / `AgentConnect` / `AgentComplete`: the caller, then the member's
    /// channel as `Dest*`, then the queue fields.
    fn agent_event(&mut self, event: &str, caller: Chan, member: Chan, extra: &[(&str, &str)]) {
        let mut b = self.dial_event(event, caller, member);
        for (k, v) in extra {
            b = b.field(*k, *v);
        }
        self.emit(b);
    }

    // ----- the AMI client's resync and gap marker -----

    /// What the AMI client journals after a reconnect: the `CoreShowChannels` response, one
    /// `CoreShowChannel` per live channel, the `Complete` event.
    fn core_show_channels(&mut self, action_id: &str, live: &[Chan]) {
        self.emit(
            AmiMessage::builder()
                .field("Response", "Success")
                .field("ActionID", action_id)
                .field("EventList", "start")
                .field("Message", "Channels will follow"),
        );
        for &c in live {
            let secs = (self.now - self.c(c).created_ms) / 1000;
            let duration = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
            let b = AmiMessage::event("CoreShowChannel").field("ActionID", action_id);
            let b = self.snap(b, "", c);
            let bridge = self
                .bridge_of(c)
                .map(|br| self.bridges[br.0].uniqueid.clone())
                .unwrap_or_default();
            // The calling channel runs Dial; a dialled one is Dial's outgoing line.
            let d = self.c(c);
            let (app, data) = if d.uniqueid == d.linkedid {
                (
                    "Dial",
                    format!("PJSIP/{},20,b(callee-handler^s^1)", d.exten),
                )
            } else {
                ("AppDial", "(Outgoing Line)".to_string())
            };
            self.emit(
                b.field("BridgeId", bridge)
                    .field("Application", app)
                    .field("ApplicationData", data)
                    .field("Duration", duration),
            );
        }
        self.emit(
            AmiMessage::event("CoreShowChannelsComplete")
                .field("ActionID", action_id)
                .field("EventList", "Complete")
                .field("ListItems", live.len().to_string()),
        );
    }

    /// The answer to the AMI client's keep-alive `Ping` (a response, not an event).
    fn pong(&mut self, action_id: &str) {
        let stamp = format!("{}.000000", self.t(self.now).timestamp());
        self.emit(
            AmiMessage::builder()
                .field("Response", "Success")
                .field("ActionID", action_id)
                .field("Ping", "Pong")
                .field("Timestamp", stamp),
        );
    }

    /// The gap marker `{"src":"gap"}`: AMI was not seen from `from_ms` to `to_ms`.
    fn gap(&mut self, from_ms: i64, to_ms: i64, reason: &str) {
        let (from, to) = (self.t(from_ms), self.t(to_ms));
        self.push(Input::Gap {
            pbx: Arc::from(PBX),
            from,
            to,
            reason: reason.into(),
        });
    }

    // ----- phones -----

    /// A callback from `phone` for its own event name (`incoming_call` for Yealink,
    /// `connected` for Snom…), about the call with `remote`; `call_id` is what the phone puts
    /// in its call-id variable (Yealink: a handle; Snom, Grandstream: the SIP Call-ID).
    fn phone(&mut self, phone: &Phone, event: &str, remote: &str, call_id: &str) {
        let target = phone.target(event, remote, call_id);
        self.push(Input::Phone {
            peer: phone.ip.into(),
            target,
        });
    }
}

#[derive(Clone, Copy, Debug)]
enum Vendor {
    Yealink,
    Snom,
    Grandstream,
}

/// A desk phone that calls the bridge back (the query its provisioning sets up,
/// `src/phone/provisioning.rs`).
#[derive(Clone, Copy, Debug)]
struct Phone {
    vendor: Vendor,
    ext: &'static str,
    mac: &'static str,
    ip: &'static str,
}

const HOST: &str = "pbx.example.com";

impl Phone {
    fn target(&self, event: &str, remote: &str, call_id: &str) -> String {
        let (ext, mac, ip) = (self.ext, self.mac, self.ip);
        match self.vendor {
            Vendor::Yealink => format!(
                "/action-url/{event}?mac={mac}&ip={ip}&model=SIP-T46U&firmware=108.86.0.45\
                 &active_user={ext}&active_host={HOST}&local={ext}&remote={remote}\
                 &display_local={ext}&display_remote={remote}&call_id={call_id}"
            ),
            Vendor::Snom => format!(
                "/action-url/{event}?mac={mac}&ip={ip}&active_user={ext}&active_host={HOST}\
                 &local={ext}@{HOST}&remote={remote}@{HOST}&display_local={ext}\
                 &display_remote={remote}&call-id={call_id}"
            ),
            Vendor::Grandstream => format!(
                "/action-url/{event}?mac={mac}&ip={ip}&model=GXP2170&firmware=1.0.11.74\
                 &active_user={ext}&active_host={HOST}&local={ext}&remote={remote}\
                 &display_local={ext}&display_remote={remote}&call-id={call_id}"
            ),
        }
    }
}

const SNOM_101: Phone = Phone {
    vendor: Vendor::Snom,
    ext: "101",
    mac: "000413aabb01",
    ip: "10.0.0.101",
};
const YEALINK_101: Phone = Phone {
    vendor: Vendor::Yealink,
    ext: "101",
    mac: "001565aabb01",
    ip: "10.0.0.101",
};
const GRANDSTREAM_102: Phone = Phone {
    vendor: Vendor::Grandstream,
    ext: "102",
    mac: "000b82aabb02",
    ip: "10.0.0.102",
};
const YEALINK_102: Phone = Phone {
    vendor: Vendor::Yealink,
    ext: "102",
    mac: "001565aabb02",
    ip: "10.0.0.102",
};
const YEALINK_103: Phone = Phone {
    vendor: Vendor::Yealink,
    ext: "103",
    mac: "001565aabb03",
    ip: "10.0.0.103",
};
const GRANDSTREAM_103: Phone = Phone {
    vendor: Vendor::Grandstream,
    ext: "103",
    mac: "000b82aabb03",
    ip: "10.0.0.103",
};
const GRANDSTREAM_200: Phone = Phone {
    vendor: Vendor::Grandstream,
    ext: "200",
    mac: "000b82aabb20",
    ip: "10.0.0.120",
};
const YEALINK_201: Phone = Phone {
    vendor: Vendor::Yealink,
    ext: "201",
    mac: "001565aabb21",
    ip: "10.0.0.121",
};

// ----- running the correlator -----

/// Phones 101–103 (the fixtures' PBX) and queue agents 200, 201, each known by its MAC
/// (an extension with two phones in these tests has two identities).
fn phones_config() -> CorrelatorConfig {
    let phones = [
        SNOM_101,
        YEALINK_101,
        GRANDSTREAM_102,
        YEALINK_102,
        YEALINK_103,
        GRANDSTREAM_103,
        GRANDSTREAM_200,
        YEALINK_201,
    ]
    .iter()
    .map(|p| PhoneIdentity {
        extension: p.ext.into(),
        account: None,
        mac: Some(p.mac.into()),
    })
    .collect();
    CorrelatorConfig {
        phones,
        ..CorrelatorConfig::default()
    }
}

/// Both ways a PBX is set up: phones listed, and nothing configured at all.
fn configs() -> [(&'static str, CorrelatorConfig); 2] {
    [
        ("phones configured", phones_config()),
        ("nothing configured", CorrelatorConfig::default()),
    ]
}

struct Run {
    out: Vec<Output>,
    correlator: Correlator,
}

impl Run {
    fn completed(&self) -> Vec<&CallRecord> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::CallCompleted(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The one record the input yields.
    fn only(&self, label: &str) -> &CallRecord {
        let records = self.completed();
        assert_eq!(records.len(), 1, "{label}: {records:#?}");
        records[0]
    }

    fn started_ids(&self) -> Vec<&str> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::CallStarted(r) => Some(r.id.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Feeds the journal, then lets 30 s pass (grace 3 s, match window 10 s).
fn run(cfg: CorrelatorConfig, s: &Script) -> Run {
    let mut correlator = Correlator::new(cfg);
    let mut out = Vec::new();
    for e in &s.journal {
        out.extend(correlator.handle(e));
    }
    out.extend(correlator.tick(s.t(s.now + 30_000)));
    Run { out, correlator }
}

fn leg<'a>(r: &'a CallRecord, channel: &str) -> &'a Leg {
    r.legs
        .iter()
        .find(|l| l.channel == channel)
        .unwrap_or_else(|| panic!("no leg {channel} in {:#?}", r.legs))
}

fn channels(r: &CallRecord) -> Vec<&str> {
    r.legs.iter().map(|l| l.channel.as_str()).collect()
}

/// `(phone, event, method, uniqueid)` of every phone match, in record order.
fn matches(r: &CallRecord) -> Vec<(&str, &str, &str, &str)> {
    r.correlation
        .iter()
        .map(|m| {
            (
                m.phone.as_str(),
                m.event.as_str(),
                m.method.as_str(),
                m.uniqueid.as_deref().unwrap_or(""),
            )
        })
        .collect()
}

fn no_local_in_timeline(label: &str, r: &CallRecord) {
    for e in &r.timeline {
        let subject = e.subject.as_deref().unwrap_or("");
        assert!(!subject.starts_with("Local/"), "{label}: {e:?}");
    }
    assert!(
        r.timeline.windows(2).all(|w| w[0].at <= w[1].at),
        "{label}: timeline out of order"
    );
}

// ----- callee unreachable -----

/// `Dial(PJSIP/103)` while 103 has no registered contact: chan_pjsip cannot create the
/// channel (`request()` fails with `AST_CAUSE_NO_ROUTE_DESTINATION`), so there is no second
/// channel, no `DialBegin`/`DialEnd`; app_dial sets `DIALSTATUS=CHANUNAVAIL` and the caller's
/// hangup cause to 3, and the dialplan hangs the caller up. 101 tried to call 103 and it
/// failed: that is a call record (failed, not missed), not nothing.
#[test]

fn callee_unreachable_without_a_channel_is_a_failed_call() {
    let mut s = Script::new();
    let alice = s.caller("PJSIP/101-00000030", "101", "Alice 101", "103");
    s.at(4).sip_call_id(alice, "1-30111@10.0.0.101");
    s.at(5).varset(alice, "DIALSTATUS", "");
    // ast_request("PJSIP", "103") fails: "endpoint '103' has no contacts" → cause 3.
    s.at(9).varset(alice, "DIALSTATUS", "CHANUNAVAIL");
    s.at(12).soft_hangup_request(alice, 3);
    s.hangup(alice, 3);
    let uid = s.uid(alice).to_string();

    for (label, cfg) in configs() {
        let run = run(cfg, &s);
        let r = run.only(label);
        assert_eq!(r.id, format!("{PBX}:{uid}"), "{label}");
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_eq!(r.from.number.as_deref(), Some("101"), "{label}");
        assert_eq!(r.from.extension.as_deref(), Some("101"), "{label}");
        assert_eq!(r.to.number.as_deref(), Some("103"), "{label}");
        assert_eq!(r.to.extension.as_deref(), Some("103"), "{label}");
        assert_eq!(r.disposition, Disposition::Failed, "{label}");
        assert!(!r.missed, "{label}: nobody rang, nobody missed it");
        assert_eq!(r.answered_at, None);
        assert_eq!(r.answered_by, None);
        assert_eq!(r.ring_s, 0.012);
        assert_eq!(r.talk_s, 0.0);
        assert_eq!(channels(r), ["PJSIP/101-00000030"]);
        let l = &r.legs[0];
        assert_eq!(l.sip_call_id.as_deref(), Some("1-30111@10.0.0.101"));
        assert_eq!(l.hangup_cause, Some(3));
        assert_eq!(
            l.hangup_cause_text.as_deref(),
            Some("No route to destination")
        );
        assert!(!l.missed);
    }
}

/// The extension is dialled through a Local channel (`Dial(Local/103@from-internal)`, as
/// FreePBX-style dialplans do); inside it, `Dial(PJSIP/103)` finds nobody: the `;2` half
/// hangs up with the cause, `;1` follows, and the caller's `DialEnd` says `CHANUNAVAIL`.
/// Cause 3 (PJSIP: no contact) and 20 (Subscriber absent: chan_sip/IAX peers that are not
/// registered) are both "unreachable".
#[test]
fn callee_unreachable_through_a_local_channel_is_failed_not_missed() {
    for cause in [3u16, 20] {
        let mut s = Script::new();
        let alice = s.caller("PJSIP/101-00000031", "101", "Alice 101", "103");
        s.at(4).sip_call_id(alice, "1-30222@10.0.0.101");
        s.at(6);
        let (one, two) = s.local("Local/103@from-internal-00000004", alice);
        s.local_bridge(one, two, true);
        s.dial_begin(alice, one, "103@from-internal");
        s.at(15).varset(two, "DIALSTATUS", "CHANUNAVAIL");
        s.hangup(two, cause);
        s.at(16).dial_end(alice, one, "CHANUNAVAIL");
        s.hangup(one, cause);
        s.varset(alice, "DIALSTATUS", "CHANUNAVAIL");
        s.at(20).hangup(alice, cause);
        let uid = s.uid(alice).to_string();

        for (label, cfg) in configs() {
            let label = &format!("cause {cause}, {label}");
            let run = run(cfg, &s);
            let r = run.only(label);
            assert_eq!(r.id, format!("{PBX}:{uid}"), "{label}");
            assert_eq!(run.started_ids(), [r.id.as_str()], "{label}");
            assert_eq!(r.direction, Direction::Internal, "{label}");
            assert_eq!(r.from.number.as_deref(), Some("101"), "{label}");
            assert_eq!(r.from.name.as_deref(), Some("Alice 101"), "{label}");
            assert_eq!(r.to.number.as_deref(), Some("103"), "{label}");
            assert_eq!(r.to.extension.as_deref(), Some("103"), "{label}");
            assert_eq!(r.disposition, Disposition::Failed, "{label}");
            assert!(!r.missed, "{label}: unreachable is not a missed call");
            assert_eq!(r.answered_by, None, "{label}");
            assert_eq!(r.answered_at, None, "{label}");
            assert_eq!(r.ended_at, Some(s.t(20)), "{label}");
            assert_eq!(r.ring_s, 0.02, "{label}");
            assert_eq!(r.talk_s, 0.0, "{label}");
            assert_eq!(channels(r), ["PJSIP/101-00000031"], "{label}: no Local leg");
            let l = &r.legs[0];
            assert_eq!(l.hangup_cause, Some(cause), "{label}");
            assert_eq!(l.hangup_cause_text.as_deref(), Some(cause_txt(cause)));
            assert_eq!(l.sip_call_id.as_deref(), Some("1-30222@10.0.0.101"));
            assert!(!l.missed, "{label}");
            no_local_in_timeline(label, r);
        }
    }
}

/// `Dial(PJSIP/103)` finds no contact (`DIALSTATUS=CHANUNAVAIL`), and the dialplan goes on:
/// it plays an announcement without answering and hangs up with cause 16 "Normal Clearing".
/// The dial attempt's own outcome decides the disposition (failed), not the caller's
/// ordinary hangup cause (which alone would read "no answer").
#[test]
fn callee_unreachable_then_a_normal_hangup_is_still_failed() {
    let mut s = Script::new();
    let alice = s.caller("PJSIP/101-00000032", "101", "Alice 101", "103");
    s.at(4).sip_call_id(alice, "1-30333@10.0.0.101");
    s.at(5).varset(alice, "DIALSTATUS", "");
    s.at(9).varset(alice, "DIALSTATUS", "CHANUNAVAIL");
    s.at(3_000).hangup(alice, 16);
    for (label, cfg) in configs() {
        let run = run(cfg, &s);
        let r = run.only(label);
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_eq!(r.to.number.as_deref(), Some("103"), "{label}");
        assert_eq!(r.disposition, Disposition::Failed, "{label}");
        assert!(!r.missed, "{label}");
        assert_eq!(r.legs[0].hangup_cause, Some(16), "{label}");
    }
}

// ----- what counts as missed -----

/// `missed` is about calls to us that nobody answered: an inbound or internal call that rang
/// out. An outbound call the far end did not answer is `no_answer` but not missed — nobody
/// here missed anything — and the trunk leg is not a missed leg either. (101 dials
/// 5550100 through the trunk endpoint `provider`; it rings 8 s, 101 gives up.)
#[test]
fn an_unanswered_outbound_call_is_not_missed_an_unanswered_inbound_one_is() {
    // Outbound.
    let mut s = Script::new();
    let alice = s.caller("PJSIP/101-00000090", "101", "Alice 101", "5550100");
    s.at(5).sip_call_id(alice, "1-90001@10.0.0.101");
    let far = s
        .at(10)
        .callee("PJSIP/provider-00000091", "5550100", "", alice);
    s.cm(far).context = "from-provider".into();
    s.at(15).dial_begin(alice, far, "provider/5550100");
    s.at(300).ringing(alice, far);
    s.at(8_300).dial_end(alice, far, "CANCEL");
    s.hangup(far, 127);
    s.at(8_310).hangup(alice, 127);
    for (label, cfg) in configs() {
        let run = run(cfg, &s);
        let r = run.only(label);
        assert_eq!(r.direction, Direction::Outbound, "{label}");
        assert_eq!(r.to.number.as_deref(), Some("5550100"), "{label}");
        assert_eq!(r.disposition, Disposition::NoAnswer, "{label}");
        assert!(
            !r.missed,
            "{label}: an outbound call nobody answered is not missed"
        );
        assert!(r.legs.iter().all(|l| !l.missed), "{label}");
    }

    // Inbound: the carrier calls the DID, 101 rings 8 s, the caller gives up.
    let mut s = Script::new();
    let caller = s.caller("PJSIP/provider-00000092", "5550100", "", "5551000");
    s.cm(caller).context = "from-provider".into();
    let desk = s
        .at(10)
        .callee("PJSIP/101-00000093", "101", "Alice 101", caller);
    s.sip_call_id(desk, "4d3c2b1a-0f9e-4d8c-b7a6-958473625193");
    s.at(15).dial_begin(caller, desk, "101");
    s.at(300).ringing(caller, desk);
    s.at(8_300).dial_end(caller, desk, "CANCEL");
    s.hangup(desk, 127);
    s.at(8_310).hangup(caller, 127);
    for (label, cfg) in configs() {
        let run = run(cfg, &s);
        let r = run.only(label);
        assert_eq!(r.direction, Direction::Inbound, "{label}");
        assert_eq!(r.disposition, Disposition::NoAnswer, "{label}");
        assert!(r.missed, "{label}: nobody answered a call to us");
        assert!(leg(r, s.name(desk)).missed, "{label}: 101 missed it");
    }
}

// ----- two concurrent calls between the same two extensions -----

/// The two calls of [`two_calls_101_to_102`].
struct TwoCalls {
    s: Script,
    a: (Chan, Chan),
    b: (Chan, Chan),
}

/// 101 calls 102 (call A, answered at 1.5 s); 4 s later 101 calls 102 again on its second
/// line (call B). 102 puts A on hold at 6 s and answers B; 101 hangs up B at 12 s; 102
/// resumes A at 13 s and hangs up at 20 s. `callbacks` is called at each [`TwoCallsAt`]
/// moment so that a test can add the phones' callbacks in time order.
fn two_calls_101_to_102(mut callbacks: impl FnMut(&mut Script, &TwoCallsAt)) -> TwoCalls {
    let mut s = Script::new();
    let a1 = s.caller("PJSIP/101-0000000a", "101", "Alice 101", "102");
    callbacks(&mut s, &TwoCallsAt::ADialling);
    s.at(5).sip_call_id(a1, "7f3a9c1e20@10.0.0.101");
    let a2 = s.at(10).callee("PJSIP/102-0000000b", "102", "Bob 102", a1);
    s.at(12)
        .sip_call_id(a2, "c1a0e7c2-8f3e-4a57-9b41-0d6a2f4e9a01");
    s.at(15).dial_begin(a1, a2, "102");
    s.at(60).ringing(a1, a2);
    callbacks(&mut s, &TwoCallsAt::ARinging);
    s.at(1_500).answer(a1, a2);
    let bridge_a = s.bridge_with(&[a2, a1]);
    callbacks(&mut s, &TwoCallsAt::AAnswered);

    s.at(4_000);
    let b1 = s.caller("PJSIP/101-0000000c", "101", "Alice 101", "102");
    callbacks(&mut s, &TwoCallsAt::BDialling);
    s.at(4_005).sip_call_id(b1, "7f3a9c1e21@10.0.0.101");
    let b2 = s
        .at(4_010)
        .callee("PJSIP/102-0000000d", "102", "Bob 102", b1);
    s.at(4_012)
        .sip_call_id(b2, "5d2b7e90-1c44-4f0e-a3d2-6b9f8e7c5a02");
    s.at(4_015).dial_begin(b1, b2, "102");
    s.at(4_060).ringing(b1, b2);
    callbacks(&mut s, &TwoCallsAt::BRinging);

    // 102 holds A (sendonly re-INVITE on A's dialog), then picks up B.
    s.at(6_000).hold(a2);
    s.moh_start(a1);
    callbacks(&mut s, &TwoCallsAt::AHeld);
    s.at(6_100).answer(b1, b2);
    let bridge_b = s.bridge_with(&[b2, b1]);
    callbacks(&mut s, &TwoCallsAt::BAnswered);

    // 101 hangs up B.
    s.at(12_000).hangup(b1, 16);
    s.at(12_010).hangup(b2, 16);
    s.destroy(bridge_b);
    callbacks(&mut s, &TwoCallsAt::BEnded);

    // 102 resumes A, later hangs up.
    s.at(13_000).unhold(a2);
    s.moh_stop(a1);
    callbacks(&mut s, &TwoCallsAt::AResumed);
    s.at(20_000).hangup(a2, 16);
    s.at(20_010).hangup(a1, 16);
    s.destroy(bridge_a);
    callbacks(&mut s, &TwoCallsAt::AEnded);
    TwoCalls {
        s,
        a: (a1, a2),
        b: (b1, b2),
    }
}

/// The moments of [`two_calls_101_to_102`] at which phones call back.
#[derive(Debug, PartialEq, Eq)]
enum TwoCallsAt {
    ADialling,
    ARinging,
    AAnswered,
    BDialling,
    BRinging,
    AHeld,
    BAnswered,
    BEnded,
    AResumed,
    AEnded,
}

/// The records of calls A and B, with everything that tells them apart.
fn check_two_separate_records(label: &str, calls: &TwoCalls, run: &Run) -> [CallRecord; 2] {
    let s = &calls.s;
    let records = run.completed();
    assert_eq!(records.len(), 2, "{label}: {records:#?}");
    let (a1, a2) = calls.a;
    let (b1, b2) = calls.b;
    let find = |c: Chan| {
        let id = format!("{PBX}:{}", s.uid(c));
        records
            .iter()
            .find(|r| r.id == id)
            .map(|r| (*r).clone())
            .unwrap_or_else(|| panic!("{label}: no record {id} in {records:#?}"))
    };
    let (ra, rb) = (find(a1), find(b1));
    assert_eq!(run.started_ids().len(), 2, "{label}");
    assert!(
        !run.out
            .iter()
            .any(|o| matches!(o, Output::CallMerged { .. })),
        "{label}: the calls must not merge"
    );
    for (r, (x1, x2), sip) in [
        (
            &ra,
            (a1, a2),
            [
                "7f3a9c1e20@10.0.0.101",
                "c1a0e7c2-8f3e-4a57-9b41-0d6a2f4e9a01",
            ],
        ),
        (
            &rb,
            (b1, b2),
            [
                "7f3a9c1e21@10.0.0.101",
                "5d2b7e90-1c44-4f0e-a3d2-6b9f8e7c5a02",
            ],
        ),
    ] {
        assert_eq!(channels(r), [s.name(x1), s.name(x2)], "{label}");
        assert_eq!(r.linkedid, s.uid(x1), "{label}");
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_eq!(r.from.number.as_deref(), Some("101"), "{label}");
        assert_eq!(r.to.number.as_deref(), Some("102"), "{label}");
        assert_eq!(r.to.extension.as_deref(), Some("102"), "{label}");
        assert_eq!(r.disposition, Disposition::Answered, "{label}");
        assert_eq!(r.answered_by.as_deref(), Some("102"), "{label}");
        assert!(!r.missed, "{label}");
        let caller = leg(r, s.name(x1));
        let callee = leg(r, s.name(x2));
        assert_eq!(caller.sip_call_id.as_deref(), Some(sip[0]), "{label}");
        assert_eq!(callee.sip_call_id.as_deref(), Some(sip[1]), "{label}");
        assert_eq!(callee.dial_status.as_deref(), Some("ANSWER"), "{label}");
        assert_eq!(caller.hangup_cause, Some(16), "{label}");
        assert_eq!(callee.hangup_cause, Some(16), "{label}");
        assert!(r.transfers.is_empty() && r.gaps.is_empty(), "{label}");
    }
    // A: answered at 1.5 s, held 6 s → 13 s, over at 20.01 s.
    assert_eq!(ra.started_at, s.t(0), "{label}");
    assert_eq!(ra.answered_at, Some(s.t(1_500)), "{label}");
    assert_eq!(ra.ended_at, Some(s.t(20_010)), "{label}");
    assert_eq!(ra.ring_s, 1.5, "{label}");
    assert_eq!(ra.talk_s, 18.51, "{label}");
    assert_eq!(ra.hold_s, 7.0, "{label}");
    let held: Vec<(&str, Option<&str>)> = ra
        .timeline
        .iter()
        .filter(|e| e.event == "Hold" || e.event == "Unhold")
        .map(|e| (e.event.as_str(), e.subject.as_deref()))
        .collect();
    assert_eq!(
        held,
        [("Hold", Some(s.name(a2))), ("Unhold", Some(s.name(a2)))],
        "{label}"
    );
    // B: answered at 6.1 s, over at 12.01 s, never held.
    assert_eq!(rb.started_at, s.t(4_000), "{label}");
    assert_eq!(rb.answered_at, Some(s.t(6_100)), "{label}");
    assert_eq!(rb.ended_at, Some(s.t(12_010)), "{label}");
    assert_eq!(rb.ring_s, 2.1, "{label}");
    assert_eq!(rb.talk_s, 5.91, "{label}");
    assert_eq!(rb.hold_s, 0.0, "{label}");
    assert!(rb.timeline.iter().all(|e| e.event != "Hold"), "{label}");
    [ra, rb]
}

/// Two calls 101 → 102 at the same time are two records, each with its own legs and SIP
/// Call-IDs, and each phone callback lands on its own call. 101 is a Snom and 102 a
/// Grandstream: both send the SIP Call-ID of their own leg. Several callbacks arrive before
/// the AMI events that name their Call-ID (the phone is faster than the `VarSet`), and 102
/// repeats one.
#[test]
fn two_concurrent_calls_between_the_same_extensions_stay_apart() {
    const A101: &str = "7f3a9c1e20@10.0.0.101";
    const A102: &str = "c1a0e7c2-8f3e-4a57-9b41-0d6a2f4e9a01";
    const B101: &str = "7f3a9c1e21@10.0.0.101";
    const B102: &str = "5d2b7e90-1c44-4f0e-a3d2-6b9f8e7c5a02";
    let calls = two_calls_101_to_102(|s, moment| {
        use TwoCallsAt::*;
        let now = s.now;
        match moment {
            // Before the caller's SIPCALLID VarSet (at 5 ms).
            ADialling => s.at(now + 2).phone(&SNOM_101, "outgoing", "102", A101),
            ARinging => s.phone(&GRANDSTREAM_102, "incoming_call", "101", A102),
            AAnswered => {
                s.at(now + 5)
                    .phone(&GRANDSTREAM_102, "call_established", "101", A102);
                s.at(now + 8).phone(&SNOM_101, "connected", "102", A101);
            }
            // Before B's SIPCALLID VarSet (at 4,005 ms).
            BDialling => s.at(now + 3).phone(&SNOM_101, "outgoing", "102", B101),
            BRinging => s.phone(&GRANDSTREAM_102, "incoming_call", "101", B102),
            AHeld => s.phone(&GRANDSTREAM_102, "hold", "101", A102),
            BAnswered => {
                s.at(now + 10)
                    .phone(&GRANDSTREAM_102, "call_established", "101", B102);
                // The same callback twice.
                s.at(now + 50)
                    .phone(&GRANDSTREAM_102, "call_established", "101", B102);
                s.at(now + 60).phone(&SNOM_101, "connected", "102", B101);
            }
            BEnded => {
                s.at(now + 1).phone(&SNOM_101, "disconnected", "102", B101);
                s.at(now + 40)
                    .phone(&GRANDSTREAM_102, "call_terminated", "101", B102);
            }
            AResumed => s.phone(&GRANDSTREAM_102, "unhold", "101", A102),
            AEnded => {
                s.at(now + 2)
                    .phone(&GRANDSTREAM_102, "call_terminated", "101", A102);
                s.at(now + 3).phone(&SNOM_101, "disconnected", "102", A101);
            }
        }
    });
    let (a1, a2) = calls.a;
    let (b1, b2) = calls.b;
    let s = &calls.s;
    for (label, cfg) in configs() {
        let run = run(cfg, s);
        assert!(
            run.correlator.orphans().is_empty(),
            "{label}: {:#?}",
            run.correlator.orphans()
        );
        assert_eq!(run.correlator.live_calls(), 0, "{label}");
        let [ra, rb] = check_two_separate_records(label, &calls, &run);
        let sip = "sip_call_id";
        assert_eq!(
            matches(&ra),
            [
                ("101", "outgoing_call", sip, s.uid(a1)),
                ("102", "incoming_call", sip, s.uid(a2)),
                ("102", "call_established", sip, s.uid(a2)),
                ("101", "call_established", sip, s.uid(a1)),
                ("102", "hold", sip, s.uid(a2)),
                ("102", "unhold", sip, s.uid(a2)),
                ("102", "call_terminated", sip, s.uid(a2)),
                ("101", "call_terminated", sip, s.uid(a1)),
            ],
            "{label}"
        );
        assert_eq!(
            matches(&rb),
            [
                ("101", "outgoing_call", sip, s.uid(b1)),
                ("102", "incoming_call", sip, s.uid(b2)),
                ("102", "call_established", sip, s.uid(b2)),
                ("101", "call_established", sip, s.uid(b1)),
                ("101", "call_terminated", sip, s.uid(b1)),
                ("102", "call_terminated", sip, s.uid(b2)),
            ],
            "{label}: the repeated call_established is recorded once"
        );
        // The callback that came before its Call-ID was known keeps its own time.
        assert_eq!(ra.correlation[0].at, s.t(2), "{label}");
        assert_eq!(rb.correlation[0].at, s.t(4_003), "{label}");
        // The phones' own view on their legs.
        for (r, c, mac, ip) in [
            (&ra, a1, "000413aabb01", "10.0.0.101"),
            (&ra, a2, "000b82aabb02", "10.0.0.102"),
            (&rb, b1, "000413aabb01", "10.0.0.101"),
            (&rb, b2, "000b82aabb02", "10.0.0.102"),
        ] {
            let view = leg(r, s.name(c)).phone.clone().expect("phone view");
            assert_eq!(view.mac.as_deref(), Some(mac), "{label}");
            assert_eq!(view.ip.as_deref(), Some(ip), "{label}");
            assert_eq!(
                view.call_handle, None,
                "{label}: exact matches carry no handle"
            );
        }
        let phone_steps = |r: &CallRecord| {
            r.timeline
                .iter()
                .filter(|e| e.source == Source::Phone)
                .count()
        };
        assert_eq!(phone_steps(&ra), 8, "{label}");
        assert_eq!(phone_steps(&rb), 6, "{label}");
    }
}

/// The same two calls with 102 a Yealink: its `$call_id` is a phone-side handle (1 for A,
/// 2 for B), so its callbacks can only be matched by account + remote party + time, and
/// both calls have the same parties. Once a handle has been tied to a leg (A's ringing and
/// answer are unambiguous), the phone's later callbacks with that handle belong to that leg:
/// `hold` of handle 1 while B rings, `call_terminated` of handle 2 after B hung up while A
/// is still up.
#[test]

fn yealink_handles_keep_concurrent_callbacks_on_their_own_call() {
    let calls = two_calls_101_to_102(|s, moment| {
        use TwoCallsAt::*;
        let now = s.now;
        match moment {
            ARinging => s.phone(&YEALINK_102, "incoming_call", "101", "1"),
            AAnswered => s
                .at(now + 5)
                .phone(&YEALINK_102, "call_established", "101", "1"),
            BRinging => s.phone(&YEALINK_102, "incoming_call", "101", "2"),
            AHeld => s.phone(&YEALINK_102, "hold", "101", "1"),
            BAnswered => s
                .at(now + 10)
                .phone(&YEALINK_102, "call_established", "101", "2"),
            BEnded => s
                .at(now + 40)
                .phone(&YEALINK_102, "call_terminated", "101", "2"),
            AResumed => s.phone(&YEALINK_102, "unhold", "101", "1"),
            AEnded => s
                .at(now + 2)
                .phone(&YEALINK_102, "call_terminated", "101", "1"),
            ADialling | BDialling => {}
        }
    });
    let (_, a2) = calls.a;
    let (_, b2) = calls.b;
    let s = &calls.s;
    for (label, cfg) in configs() {
        let run = run(cfg, s);
        assert!(run.correlator.orphans().is_empty(), "{label}");
        let [ra, rb] = check_two_separate_records(label, &calls, &run);
        let apt = "account_party_time";
        assert_eq!(
            matches(&ra),
            [
                ("102", "incoming_call", apt, s.uid(a2)),
                ("102", "call_established", apt, s.uid(a2)),
                ("102", "hold", apt, s.uid(a2)),
                ("102", "unhold", apt, s.uid(a2)),
                ("102", "call_terminated", apt, s.uid(a2)),
            ],
            "{label}"
        );
        assert_eq!(
            matches(&rb),
            [
                ("102", "incoming_call", apt, s.uid(b2)),
                ("102", "call_established", apt, s.uid(b2)),
                ("102", "call_terminated", apt, s.uid(b2)),
            ],
            "{label}"
        );
        let handle = |r: &CallRecord, c: Chan| {
            leg(r, s.name(c))
                .phone
                .as_ref()
                .and_then(|p| p.call_handle.clone())
        };
        assert_eq!(handle(&ra, a2).as_deref(), Some("1"), "{label}");
        assert_eq!(handle(&rb, b2).as_deref(), Some("2"), "{label}");
    }
}

// ----- a call-start callback and the previous call between the same parties -----

/// 101 calls 102 (call A, answered, 101 hangs up at 5 s); one second later, while A is still
/// in its grace period, 101 calls 102 again (call B, answered, over at 10 s). Both phones are
/// Yealinks: their callbacks can only be matched by account + remote party + time, and both
/// calls have the same parties. B's call-start callbacks (101's `outgoing_call`, 102's
/// `incoming_call`) arrive before the AMI channel they belong to (`early`) or after it; the
/// phones give B new handles (2 and 8) or reuse A's (1 and 7).
fn redial_101_to_102(early: bool, reuse: bool) -> (Script, [Chan; 4]) {
    let (h101, h102) = if reuse { ("1", "7") } else { ("2", "8") };
    let mut s = Script::new();
    let a1 = s.caller("PJSIP/101-00000080", "101", "Alice 101", "102");
    s.at(2).phone(&YEALINK_101, "outgoing_call", "102", "1");
    s.at(5).sip_call_id(a1, "1-80001@10.0.0.101");
    let a2 = s.at(10).callee("PJSIP/102-00000081", "102", "Bob 102", a1);
    s.sip_call_id(a2, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c81");
    s.at(15).dial_begin(a1, a2, "102");
    s.at(60).ringing(a1, a2);
    s.at(70).phone(&YEALINK_102, "incoming_call", "101", "7");
    s.at(1_500).answer(a1, a2);
    s.bridge_with(&[a2, a1]);
    s.at(1_505)
        .phone(&YEALINK_102, "call_established", "101", "7");
    s.at(1_510)
        .phone(&YEALINK_101, "call_established", "102", "1");
    s.at(5_000).hangup(a1, 16);
    s.at(5_010).hangup(a2, 16);
    s.at(5_012)
        .phone(&YEALINK_101, "call_terminated", "102", "1");
    s.at(5_015)
        .phone(&YEALINK_102, "call_terminated", "101", "7");

    // B: A's legs are the only ones of 101 and 102 the correlator knows when an early
    // callback arrives; they ended a second ago.
    if early {
        s.at(6_000)
            .phone(&YEALINK_101, "outgoing_call", "102", h101);
    }
    let b1 = s
        .at(6_050)
        .caller("PJSIP/101-00000082", "101", "Alice 101", "102");
    if !early {
        s.at(6_052)
            .phone(&YEALINK_101, "outgoing_call", "102", h101);
    }
    s.at(6_055).sip_call_id(b1, "1-80002@10.0.0.101");
    if early {
        s.at(6_058)
            .phone(&YEALINK_102, "incoming_call", "101", h102);
    }
    let b2 = s
        .at(6_060)
        .callee("PJSIP/102-00000083", "102", "Bob 102", b1);
    s.sip_call_id(b2, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c83");
    s.at(6_065).dial_begin(b1, b2, "102");
    s.at(6_100).ringing(b1, b2);
    if !early {
        s.at(6_110)
            .phone(&YEALINK_102, "incoming_call", "101", h102);
    }
    s.at(8_000).answer(b1, b2);
    s.bridge_with(&[b2, b1]);
    s.at(8_005)
        .phone(&YEALINK_102, "call_established", "101", h102);
    s.at(8_010)
        .phone(&YEALINK_101, "call_established", "102", h101);
    s.at(10_000).hangup(b1, 16);
    s.at(10_010).hangup(b2, 16);
    s.at(10_012)
        .phone(&YEALINK_101, "call_terminated", "102", h101);
    s.at(10_015)
        .phone(&YEALINK_102, "call_terminated", "101", h102);
    (s, [a1, a2, b1, b2])
}

/// A call-start callback (`outgoing_call`, `incoming_call`) is about a call that starts: it
/// never belongs to a leg that had already ended when it arrived. Arriving before its call's
/// AMI channel, it waits for it instead of landing on the previous call between the same
/// two phones (which it used to, and was then dropped there as a duplicate); before or after
/// its AMI event, the records come out the same. A reused phone handle does not pull the new
/// call's callbacks onto the old call either.
#[test]
fn call_start_callback_before_its_channel_skips_the_previous_call() {
    let mut results = Vec::new();
    for early in [true, false] {
        for reuse in [false, true] {
            let (s, [a1, a2, b1, b2]) = redial_101_to_102(early, reuse);
            for (label, cfg) in configs() {
                let label = &format!("early {early}, reuse {reuse}, {label}");
                let run = run(cfg, &s);
                assert!(
                    run.correlator.orphans().is_empty(),
                    "{label}: {:#?}",
                    run.correlator.orphans()
                );
                assert_eq!(run.correlator.live_calls(), 0, "{label}");
                let records = run.completed();
                assert_eq!(records.len(), 2, "{label}: {records:#?}");
                let find = |c: Chan| {
                    let id = format!("{PBX}:{}", s.uid(c));
                    records
                        .iter()
                        .find(|r| r.id == id)
                        .copied()
                        .unwrap_or_else(|| panic!("{label}: no record {id}"))
                };
                let (ra, rb) = (find(a1), find(b1));
                assert_eq!(channels(ra), [s.name(a1), s.name(a2)], "{label}");
                assert_eq!(channels(rb), [s.name(b1), s.name(b2)], "{label}");
                let apt = "account_party_time";
                for (r, x1, x2) in [(ra, a1, a2), (rb, b1, b2)] {
                    let mut got = matches(r);
                    got.sort();
                    let mut want = vec![
                        ("101", "outgoing_call", apt, s.uid(x1)),
                        ("101", "call_established", apt, s.uid(x1)),
                        ("101", "call_terminated", apt, s.uid(x1)),
                        ("102", "incoming_call", apt, s.uid(x2)),
                        ("102", "call_established", apt, s.uid(x2)),
                        ("102", "call_terminated", apt, s.uid(x2)),
                    ];
                    want.sort();
                    assert_eq!(got, want, "{label}: {}", r.id);
                }
                // The early callbacks keep their own times.
                let start = |r: &CallRecord, event: &str| {
                    r.correlation
                        .iter()
                        .find(|m| m.event == event)
                        .map(|m| m.at)
                };
                let (out_at, in_at) = if early {
                    (s.t(6_000), s.t(6_058))
                } else {
                    (s.t(6_052), s.t(6_110))
                };
                assert_eq!(start(rb, "outgoing_call"), Some(out_at), "{label}");
                assert_eq!(start(rb, "incoming_call"), Some(in_at), "{label}");
                let handle = |r: &CallRecord, c: Chan| {
                    leg(r, s.name(c))
                        .phone
                        .as_ref()
                        .and_then(|p| p.call_handle.clone())
                };
                let (h101, h102) = if reuse { ("1", "7") } else { ("2", "8") };
                assert_eq!(handle(ra, a1).as_deref(), Some("1"), "{label}");
                assert_eq!(handle(ra, a2).as_deref(), Some("7"), "{label}");
                assert_eq!(handle(rb, b1).as_deref(), Some(h101), "{label}");
                assert_eq!(handle(rb, b2).as_deref(), Some(h102), "{label}");
                // Apart from the callbacks' own times, early or late gives the same records.
                let mut normalised = [ra.clone(), rb.clone()];
                for r in &mut normalised {
                    for m in &mut r.correlation {
                        m.at = s.t(0);
                    }
                    for e in &mut r.timeline {
                        if e.source == Source::Phone {
                            e.at = s.t(0);
                        }
                    }
                    r.timeline.sort_by(|x, y| {
                        (x.at, &x.event, &x.subject).cmp(&(y.at, &y.event, &y.subject))
                    });
                    r.correlation.sort_by(|x, y| {
                        (&x.phone, &x.event, &x.uniqueid).cmp(&(&y.phone, &y.event, &y.uniqueid))
                    });
                }
                results.push((
                    (reuse, label.split(", ").last().unwrap().to_string()),
                    early,
                    normalised,
                ));
            }
        }
    }
    for (key, early, recs) in &results {
        if !early {
            continue;
        }
        let late = results
            .iter()
            .find(|(k, e, _)| k == key && !e)
            .map(|(_, _, r)| r)
            .expect("the late run");
        assert_eq!(
            recs, late,
            "{key:?}: early and late callbacks give the same records"
        );
    }
}

// ----- queue-style Local channels -----

/// 101 calls queue 700, whose members are `Local/200@from-queue` and `Local/201@from-queue`
/// (`/n` when `optimize` is false). Both agents ring; 200 answers at 4 s; 101 hangs up at
/// 30 s. app_queue emits `AgentCalled` per member, a repeated `DialEnd CANCEL` for the
/// member that lost (whose legs end with cause 26 "Answered elsewhere"), `AgentConnect`,
/// `AgentComplete`, and keeps the caller in state Ring until the agent answers. With
/// optimisation the Local pair of the answering member is optimised away right after the
/// answer (`LocalOptimizationBegin`, PJSIP/200 swapped into the caller's bridge in place of
/// `;1`, `LocalOptimizationEnd`, both halves hang up); without it the halves stay to the end.
fn queue_call(optimize: bool, with_callbacks: bool) -> (Script, [Chan; 3]) {
    let iface = |m: &str| {
        if optimize {
            format!("Local/{m}@from-queue")
        } else {
            format!("Local/{m}@from-queue/n")
        }
    };
    let mut s = Script::new();
    let caller = s.caller("PJSIP/101-00000014", "101", "Alice 101", "700");
    s.at(5).sip_call_id(caller, "3c2b5a1e7f@10.0.0.101");
    s.at(20).queue_caller_join(caller, "700");

    // The queue rings both members through Local channels.
    s.at(30);
    let (l200a, l200b) = s.local("Local/200@from-queue-00000001", caller);
    s.local_bridge(l200a, l200b, optimize);
    s.dial_begin(caller, l200a, &iface("200"));
    s.agent_event(
        "AgentCalled",
        caller,
        l200a,
        &[
            ("Queue", "700"),
            ("Interface", &iface("200")),
            ("MemberName", "Agent 200"),
        ],
    );
    s.at(31);
    let (l201a, l201b) = s.local("Local/201@from-queue-00000002", caller);
    s.local_bridge(l201a, l201b, optimize);
    s.dial_begin(caller, l201a, &iface("201"));
    s.agent_event(
        "AgentCalled",
        caller,
        l201a,
        &[
            ("Queue", "700"),
            ("Interface", &iface("201")),
            ("MemberName", "Agent 201"),
        ],
    );

    // Each `;2` half runs `Dial(PJSIP/<member>,,b(callee-handler^s^1))`.
    let a200 = s
        .at(40)
        .callee("PJSIP/200-00000017", "200", "Agent 200", l200b);
    s.sip_call_id(a200, "9b0f6c1d-3e2a-4d7b-8c55-1f0e2d3c4b20");
    s.dial_begin(l200b, a200, "200");
    let a201 = s
        .at(45)
        .callee("PJSIP/201-00000018", "201", "Agent 201", l201b);
    s.sip_call_id(a201, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c21");
    s.dial_begin(l201b, a201, "201");
    s.at(100).ringing(l200b, a200);
    s.newstate(l200a, RINGING);
    if with_callbacks {
        s.at(105).phone(
            &GRANDSTREAM_200,
            "incoming_call",
            "101",
            "9b0f6c1d-3e2a-4d7b-8c55-1f0e2d3c4b20",
        );
    }
    s.at(110).ringing(l201b, a201);
    s.newstate(l201a, RINGING);
    if with_callbacks {
        s.at(115).phone(&YEALINK_201, "incoming_call", "101", "7");
    }

    // Agent 200 answers; the queue connects the caller to it.
    s.at(4_000).answer(l200b, a200);
    s.newstate(l200a, UP);
    let member_bridge = s.bridge_with(&[a200, l200b]);
    s.dial_end(caller, l200a, "ANSWER");
    // The losing member: its DialEnd CANCEL comes twice, its legs end "answered elsewhere".
    s.dial_end(caller, l201a, "CANCEL");
    s.hangup(l201a, 26);
    s.dial_end(l201b, a201, "CANCEL");
    s.hangup(a201, 26);
    s.hangup(l201b, 26);
    s.dial_end(caller, l201a, "CANCEL");
    if with_callbacks {
        s.at(4_005).phone(
            &GRANDSTREAM_200,
            "call_established",
            "101",
            "9b0f6c1d-3e2a-4d7b-8c55-1f0e2d3c4b20",
        );
        s.at(4_010)
            .phone(&YEALINK_201, "call_remote_canceled", "101", "7");
    }
    s.at(4_020).queue_caller_leave(caller, "700");
    s.newstate(caller, UP);
    s.agent_event(
        "AgentConnect",
        caller,
        l200a,
        &[
            ("Queue", "700"),
            ("Interface", &iface("200")),
            ("MemberName", "Agent 200"),
            ("HoldTime", "4"),
            ("RingTime", "4"),
        ],
    );
    let caller_bridge = s.bridge_with(&[caller, l200a]);

    let mut member = l200a;
    if optimize {
        // PJSIP/200 takes ;1's place in the caller's bridge; the Local pair goes away.
        s.at(4_100).local_optimization_begin(l200a, l200b, a200, 1);
        s.leave(member_bridge, a200);
        s.enter_swap(caller_bridge, a200, Some(l200a));
        s.leave(caller_bridge, l200a);
        s.local_optimization_end(l200a, l200b, 1);
        s.leave(member_bridge, l200b);
        s.destroy(member_bridge);
        s.hangup(l200a, 16);
        s.hangup(l200b, 16);
        member = a200;
    }

    // 101 hangs up at 30 s.
    s.at(30_000).agent_event(
        "AgentComplete",
        caller,
        member,
        &[
            ("Queue", "700"),
            ("Interface", &iface("200")),
            ("MemberName", "Agent 200"),
            ("HoldTime", "4"),
            ("TalkTime", "26"),
            ("Reason", "caller"),
        ],
    );
    s.hangup(caller, 16);
    if !optimize {
        s.hangup(l200a, 16);
    }
    s.at(30_010);
    if !optimize {
        s.leave(member_bridge, l200b);
    }
    s.hangup(a200, 16);
    if !optimize {
        s.hangup(l200b, 16);
        s.destroy(member_bridge);
    }
    s.destroy(caller_bridge);
    if with_callbacks {
        s.at(30_015).phone(
            &GRANDSTREAM_200,
            "call_terminated",
            "101",
            "9b0f6c1d-3e2a-4d7b-8c55-1f0e2d3c4b20",
        );
    }
    (s, [caller, a200, a201])
}

fn check_queue_record(label: &str, s: &Script, [caller, a200, a201]: [Chan; 3], r: &CallRecord) {
    assert_eq!(r.id, format!("{PBX}:{}", s.uid(caller)), "{label}");
    assert_eq!(
        channels(r),
        [s.name(caller), s.name(a200), s.name(a201)],
        "{label}: the real channels only, no Local half"
    );
    assert_eq!(r.direction, Direction::Internal, "{label}");
    assert_eq!(r.from.number.as_deref(), Some("101"), "{label}");
    assert_eq!(r.from.name.as_deref(), Some("Alice 101"), "{label}");
    assert_eq!(r.from.extension.as_deref(), Some("101"), "{label}");
    assert_eq!(r.to.number.as_deref(), Some("700"), "{label}: the queue");
    assert_eq!(r.to.extension.as_deref(), Some("200"), "{label}");
    assert_eq!(r.to.name.as_deref(), Some("Agent 200"), "{label}");
    assert_eq!(r.disposition, Disposition::Answered, "{label}");
    assert_eq!(r.answered_by.as_deref(), Some("200"), "{label}");
    assert!(!r.missed, "{label}");
    assert_eq!(r.started_at, s.t(0), "{label}");
    assert_eq!(r.answered_at, Some(s.t(4_000)), "{label}");
    assert_eq!(r.ended_at, Some(s.t(30_010)), "{label}");
    assert_eq!(r.ring_s, 4.0, "{label}");
    assert_eq!(r.talk_s, 26.01, "{label}");
    assert_eq!(r.hold_s, 0.0, "{label}");

    let c = leg(r, s.name(caller));
    assert_eq!(c.sip_call_id.as_deref(), Some("3c2b5a1e7f@10.0.0.101"));
    assert_eq!(c.hangup_cause, Some(16), "{label}");
    assert!(!c.missed, "{label}");
    let won = leg(r, s.name(a200));
    assert_eq!(
        won.sip_call_id.as_deref(),
        Some("9b0f6c1d-3e2a-4d7b-8c55-1f0e2d3c4b20"),
        "{label}"
    );
    assert_eq!(won.dial_status.as_deref(), Some("ANSWER"), "{label}");
    assert_eq!(won.answered_at, Some(s.t(4_000)), "{label}");
    assert_eq!(won.ended_at, Some(s.t(30_010)), "{label}");
    assert_eq!(won.hangup_cause, Some(16), "{label}");
    assert!(!won.missed, "{label}");
    let lost = leg(r, s.name(a201));
    assert_eq!(
        lost.sip_call_id.as_deref(),
        Some("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c21"),
        "{label}"
    );
    assert_eq!(lost.dial_status.as_deref(), Some("CANCEL"), "{label}");
    assert_eq!(lost.answered_at, None, "{label}");
    assert_eq!(lost.hangup_cause, Some(26), "{label}");
    assert_eq!(
        lost.hangup_cause_text.as_deref(),
        Some("Answered elsewhere"),
        "{label}"
    );
    assert!(
        !lost.missed,
        "{label}: answered by another agent, not missed by 201"
    );
    no_local_in_timeline(label, r);
    // The repeated DialEnd CANCEL is shown once.
    let cancels = r
        .timeline
        .iter()
        .filter(|e| e.event == "DialEnd" && e.subject.as_deref() == Some(s.name(a201)))
        .count();
    assert_eq!(cancels, 1, "{label}");
}

#[test]
fn queue_with_local_channel_optimisation() {
    let (s, chans) = queue_call(true, true);
    let [_, a200, a201] = chans;
    for (label, cfg) in configs() {
        let run = run(cfg, &s);
        assert_eq!(run.correlator.live_calls(), 0, "{label}");
        assert!(run.correlator.orphans().is_empty(), "{label}");
        let r = run.only(label);
        check_queue_record(label, &s, chans, r);
        assert_eq!(
            matches(r),
            [
                ("200", "incoming_call", "sip_call_id", s.uid(a200)),
                ("201", "incoming_call", "account_party_time", s.uid(a201)),
                ("200", "call_established", "sip_call_id", s.uid(a200)),
                (
                    "201",
                    "call_remote_canceled",
                    "account_party_time",
                    s.uid(a201)
                ),
                ("200", "call_terminated", "sip_call_id", s.uid(a200)),
            ],
            "{label}"
        );
        let view = leg(r, s.name(a201)).phone.clone().expect("201's view");
        assert_eq!(view.call_handle.as_deref(), Some("7"), "{label}");
        assert_eq!(view.mac.as_deref(), Some("001565aabb21"), "{label}");
        // PJSIP/200 entered the caller's bridge in place of ;1: shown on its own leg.
        let entered: Vec<&str> = r
            .timeline
            .iter()
            .filter(|e| e.event == "BridgeEnter")
            .filter_map(|e| e.subject.as_deref())
            .collect();
        assert_eq!(
            entered,
            [s.name(a200), "PJSIP/101-00000014", s.name(a200)],
            "{label}"
        );
    }
}

#[test]
fn queue_without_local_channel_optimisation() {
    let (s, chans) = queue_call(false, false);
    for (label, cfg) in configs() {
        let run = run(cfg, &s);
        assert_eq!(run.correlator.live_calls(), 0, "{label}");
        let r = run.only(label);
        check_queue_record(label, &s, chans, r);
        assert!(r.correlation.is_empty(), "{label}");
    }
}

/// A call is over only when its Local halves are gone too: with `/n` the `;2` half of the
/// answering member hangs up last, and the record waits for it.
#[test]
fn queue_call_completes_only_after_its_local_halves() {
    let (mut s, [caller, a200, _]) = queue_call(false, false);
    // Cut the journal just before the last Local half hangs up.
    let last = s
        .journal
        .iter()
        .rposition(|e| match &e.input {
            Input::Ami { msg, .. } => {
                msg.event_name() == Some("Hangup")
                    && msg.get("Channel") == Some("Local/200@from-queue-00000001;2")
            }
            _ => false,
        })
        .expect("the ;2 hangup");
    s.journal.truncate(last);
    let mut c = Correlator::new(CorrelatorConfig::default());
    let mut out = Vec::new();
    for e in &s.journal {
        out.extend(c.handle(e));
    }
    out.extend(c.tick(s.t(60_000)));
    assert!(
        !out.iter().any(|o| matches!(o, Output::CallCompleted(_))),
        "a Local half is still up"
    );
    assert_eq!(c.live_calls(), 1);
    let live = out
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::CallUpdated(r) => Some(r),
            _ => None,
        })
        .expect("updates of the live call");
    assert_eq!(live.id, format!("{PBX}:{}", s.uid(caller)));
    assert!(!live.complete);
    assert_eq!(live.ended_at, None, "not over while a channel is up");
    assert!(leg(live, s.name(a200)).ended_at.is_some());
}

// ----- attended transfer -----

/// 101 calls 102 (answered at 1.5 s). At 5 s 102 presses transfer: its phone holds the call
/// (`Hold` on 102's first channel) and calls 103 on a second line (a call of its own), 103
/// answers at 8 s; at 12 s 102 completes the transfer (REFER with Replaces): the REFER's
/// `Unhold`, 101 is moved into the 102–103 bridge, whose channels take 101's `Linkedid`,
/// `AttendedTransfer` (DestType Bridge), and both of 102's channels hang up. 101 and 103 talk
/// until 103 hangs up at 30 s.
#[test]
fn attended_transfer_is_one_conversation_with_the_consultation_hold() {
    let mut s = Script::new();
    let alice = s.caller("PJSIP/101-00000020", "101", "Alice 101", "102");
    s.at(5).sip_call_id(alice, "1-41001@10.0.0.101");
    let bob = s
        .at(10)
        .callee("PJSIP/102-00000021", "102", "Bob 102", alice);
    s.sip_call_id(bob, "2a7c1e44-0d1f-4b9e-8a63-5f2c1b0e9d21");
    s.at(15).dial_begin(alice, bob, "102");
    s.at(60).ringing(alice, bob);
    s.at(1_500).answer(alice, bob);
    let first = s.bridge_with(&[bob, alice]);

    // 102 holds 101 and calls 103.
    s.at(5_000).hold(bob);
    s.moh_start(alice);
    s.phone(&YEALINK_101, "held", "102", "5");
    let bob2 = s
        .at(5_500)
        .caller("PJSIP/102-00000022", "102", "Bob 102", "103");
    s.sip_call_id(bob2, "3-77120@10.0.0.102");
    let carol = s
        .at(5_510)
        .callee("PJSIP/103-00000023", "103", "Carol 103", bob2);
    s.sip_call_id(carol, "6e0b9a55-7c3d-4f21-9e08-2d4c6b8a0f23");
    s.at(5_520).dial_begin(bob2, carol, "103");
    s.at(5_570).ringing(bob2, carol);
    s.at(5_600).phone(
        &GRANDSTREAM_103,
        "incoming_call",
        "102",
        "6e0b9a55-7c3d-4f21-9e08-2d4c6b8a0f23",
    );
    s.at(8_000).answer(bob2, carol);
    let second = s.bridge_with(&[carol, bob2]);

    // 102 completes the transfer.
    s.at(12_000).unhold(bob);
    s.moh_stop(alice);
    s.leave(first, alice);
    s.enter(second, alice);
    s.relink(carol, alice);
    s.relink(bob2, alice);
    s.attended_transfer((bob, first), (bob2, second), alice, carol);
    s.leave(second, bob2);
    s.hangup(bob, 16);
    s.destroy(first);
    s.hangup(bob2, 16);
    s.at(12_050).phone(&YEALINK_101, "unheld", "103", "5");
    s.connected_line(alice, "103", "Carol 103");

    // 103 hangs up at 30 s.
    s.at(30_000).hangup(carol, 16);
    s.at(30_010).hangup(alice, 16);
    s.destroy(second);

    let first_id = format!("{PBX}:{}", s.uid(alice));
    let second_id = format!("{PBX}:{}", s.uid(bob2));
    for (label, cfg) in configs() {
        let run = run(cfg, &s);
        assert!(run.correlator.orphans().is_empty(), "{label}");
        assert_eq!(run.correlator.live_calls(), 0, "{label}");
        let r = run.only(label);
        assert_eq!(r.id, first_id, "{label}");
        assert!(
            run.out.iter().any(|o| matches!(o,
                Output::CallMerged { id, into } if *id == second_id && *into == first_id)),
            "{label}: the consultation call merged into the first"
        );
        assert_eq!(
            channels(r),
            [s.name(alice), s.name(bob), s.name(bob2), s.name(carol)],
            "{label}"
        );
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_eq!(r.from.number.as_deref(), Some("101"), "{label}");
        assert_eq!(r.to.number.as_deref(), Some("102"), "{label}: frozen");
        assert_eq!(r.disposition, Disposition::Answered, "{label}");
        assert_eq!(
            r.answered_by.as_deref(),
            Some("102"),
            "{label}: the first to answer"
        );
        assert!(!r.missed, "{label}");
        assert_eq!(r.answered_at, Some(s.t(1_500)), "{label}");
        assert_eq!(r.ended_at, Some(s.t(30_010)), "{label}");
        assert_eq!(r.ring_s, 1.5, "{label}");
        assert_eq!(r.talk_s, 28.51, "{label}");
        assert_eq!(
            r.hold_s, 7.0,
            "{label}: 101 waited on hold from 5 s to 12 s"
        );
        assert_eq!(r.transfers.len(), 1, "{label}");
        let t = &r.transfers[0];
        assert_eq!(t.kind, "attended", "{label}");
        assert_eq!(t.by.as_deref(), Some("102"), "{label}");
        assert_eq!(t.to.as_deref(), Some("103"), "{label}");
        assert_eq!(t.result.as_deref(), Some("Success"), "{label}");
        assert_eq!(t.at, Some(s.t(12_000)), "{label}");
        let sip = |c: Chan| leg(r, s.name(c)).sip_call_id.clone();
        assert_eq!(sip(alice).as_deref(), Some("1-41001@10.0.0.101"));
        assert_eq!(
            sip(bob).as_deref(),
            Some("2a7c1e44-0d1f-4b9e-8a63-5f2c1b0e9d21")
        );
        assert_eq!(sip(bob2).as_deref(), Some("3-77120@10.0.0.102"));
        assert_eq!(
            sip(carol).as_deref(),
            Some("6e0b9a55-7c3d-4f21-9e08-2d4c6b8a0f23")
        );
        let target = leg(r, s.name(carol));
        assert_eq!(target.answered_at, Some(s.t(8_000)), "{label}");
        assert_eq!(target.dial_status.as_deref(), Some("ANSWER"), "{label}");
        for c in [alice, bob, bob2, carol] {
            assert_eq!(leg(r, s.name(c)).hangup_cause, Some(16), "{label}");
        }
        // The phone events of both calls are in the merged record.
        assert_eq!(
            matches(r),
            [
                ("101", "held", "account_party_time", s.uid(alice)),
                ("103", "incoming_call", "sip_call_id", s.uid(carol)),
                ("101", "unheld", "account_party_time", s.uid(alice)),
            ],
            "{label}"
        );
        let events: Vec<&str> = r.timeline.iter().map(|e| e.event.as_str()).collect();
        let hold = events.iter().position(|e| *e == "Hold").unwrap();
        let xfer = events
            .iter()
            .position(|e| *e == "AttendedTransfer")
            .unwrap();
        assert!(hold < xfer, "{label}: {events:?}");
        assert!(r.timeline.windows(2).all(|w| w[0].at <= w[1].at));
    }
}

// ----- hold / unhold -----

/// 101 → 102, answered at 1 s. 102 holds twice (3–5 s, 7–7.5 s); then 101 holds at 9 s and
/// hangs up at 10.5 s while still holding: that hold ends with its leg. Each `Hold` is on the
/// channel of the phone that pressed hold; `MusicOnHoldStart` on the other side does not
/// count. hold_s = 2 + 0.5 + 1.5 = 4 s, included in talk_s.
#[test]
fn hold_periods_add_up_and_an_open_hold_ends_with_its_leg() {
    let mut s = Script::new();
    let alice = s.caller("PJSIP/101-00000040", "101", "Alice 101", "102");
    s.at(5).sip_call_id(alice, "1-50001@10.0.0.101");
    let bob = s
        .at(10)
        .callee("PJSIP/102-00000041", "102", "Bob 102", alice);
    s.sip_call_id(bob, "8d3e2f10-5a6b-4c7d-8e9f-0a1b2c3d4e41");
    s.at(15).dial_begin(alice, bob, "102");
    s.at(60).ringing(alice, bob);
    s.at(1_000).answer(alice, bob);
    let bridge = s.bridge_with(&[bob, alice]);
    for (hold, unhold) in [(3_000, 5_000), (7_000, 7_500)] {
        s.at(hold).hold(bob);
        s.moh_start(alice);
        s.at(unhold).unhold(bob);
        s.moh_stop(alice);
    }
    s.at(9_000).hold(alice);
    s.moh_start(bob);
    s.at(10_500).hangup(alice, 16);
    s.at(10_510).hangup(bob, 16);
    s.destroy(bridge);

    for (label, cfg) in configs() {
        let run = run(cfg, &s);
        let r = run.only(label);
        assert_eq!(r.disposition, Disposition::Answered, "{label}");
        assert_eq!(r.answered_by.as_deref(), Some("102"), "{label}");
        assert_eq!(r.answered_at, Some(s.t(1_000)), "{label}");
        assert_eq!(r.ended_at, Some(s.t(10_510)), "{label}");
        assert_eq!(r.ring_s, 1.0, "{label}");
        assert_eq!(r.talk_s, 9.51, "{label}: hold included");
        assert_eq!(r.hold_s, 4.0, "{label}");
        let holds: Vec<(&str, &str, DateTime<Utc>)> = r
            .timeline
            .iter()
            .filter(|e| e.event == "Hold" || e.event == "Unhold")
            .map(|e| (e.event.as_str(), e.subject.as_deref().unwrap_or(""), e.at))
            .collect();
        assert_eq!(
            holds,
            [
                ("Hold", s.name(bob), s.t(3_000)),
                ("Unhold", s.name(bob), s.t(5_000)),
                ("Hold", s.name(bob), s.t(7_000)),
                ("Unhold", s.name(bob), s.t(7_500)),
                ("Hold", s.name(alice), s.t(9_000)),
            ],
            "{label}"
        );
    }
}

// ----- phone callbacks with no AMI at all -----

/// `(at, extension, event, peer, reason)` of an orphan callback.
type OrphanSummary<'a> = (
    DateTime<Utc>,
    Option<&'a str>,
    &'a str,
    &'a str,
    &'a OrphanReason,
);

/// Callbacks about calls the PBX never showed are kept as orphans — after waiting
/// `phone_match_window` for their AMI events — never dropped, never attached to an unrelated
/// call of the same phone, never turned into a record. At the end of offline input
/// (`finish`), callbacks still waiting become orphans at once.
#[test]
fn callbacks_without_ami_become_orphans() {
    let mut s = Script::new();
    // A real call 101 → 102 is going on meanwhile.
    let alice = s.caller("PJSIP/101-00000050", "101", "Alice 101", "102");
    s.at(5).sip_call_id(alice, "1-60001@10.0.0.101");
    let bob = s
        .at(10)
        .callee("PJSIP/102-00000051", "102", "Bob 102", alice);
    s.sip_call_id(bob, "4f5e6d7c-8b9a-4c0d-9e1f-2a3b4c5d6e51");
    s.at(15).dial_begin(alice, bob, "102");
    s.at(60).ringing(alice, bob);
    s.at(1_000).answer(alice, bob);
    s.bridge_with(&[bob, alice]);
    // 103 reports a whole call from the PSTN that AMI never shows (a Yealink: handle 44).
    s.at(2_000)
        .phone(&YEALINK_103, "incoming_call", "+15550100", "44");
    s.at(3_000)
        .phone(&YEALINK_103, "call_established", "+15550100", "44");
    // 101 (a Snom) reports a call with another SIP Call-ID and another party: not this call.
    s.at(3_500)
        .phone(&SNOM_101, "outgoing", "5559999", "9e8d7c6b5a@10.0.0.101");
    s.at(9_000)
        .phone(&YEALINK_103, "call_terminated", "+15550100", "44");
    s.at(10_000).hangup(alice, 16);
    s.at(10_010).hangup(bob, 16);
    // Late: 103's phone reports again; the journal ends before its window runs out.
    s.at(14_000)
        .phone(&YEALINK_103, "missed_call", "+15550101", "45");
    let end = s.t(19_500);

    for (label, cfg) in configs() {
        let mut c = Correlator::new(cfg);
        let mut out = Vec::new();
        for e in &s.journal {
            out.extend(c.handle(e));
        }
        out.extend(c.tick(end));
        assert_eq!(
            c.pending_callbacks(),
            1,
            "{label}: the last one is still inside its window"
        );
        out.extend(c.finish());
        assert_eq!(c.pending_callbacks(), 0, "{label}");
        let records: Vec<&CallRecord> = out
            .iter()
            .filter_map(|o| match o {
                Output::CallCompleted(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(records.len(), 1, "{label}: only the real call");
        assert_eq!(records[0].id, format!("{PBX}:{}", s.uid(alice)));
        assert!(
            records[0].correlation.is_empty(),
            "{label}: {:#?}",
            records[0].correlation
        );
        let orphans: Vec<OrphanSummary> = c
            .orphans()
            .iter()
            .map(|o| {
                (
                    o.at,
                    o.extension.as_deref(),
                    o.callback.event.as_str(),
                    o.peer.as_str(),
                    &o.reason,
                )
            })
            .collect();
        let none = &OrphanReason::NoMatchingCall;
        assert_eq!(
            orphans,
            [
                (s.t(2_000), Some("103"), "incoming_call", "10.0.0.103", none),
                (
                    s.t(3_000),
                    Some("103"),
                    "call_established",
                    "10.0.0.103",
                    none
                ),
                (s.t(3_500), Some("101"), "outgoing_call", "10.0.0.101", none),
                (
                    s.t(9_000),
                    Some("103"),
                    "call_terminated",
                    "10.0.0.103",
                    none
                ),
                (s.t(14_000), Some("103"), "missed_call", "10.0.0.103", none),
            ],
            "{label}"
        );
        let first = &c.orphans()[0];
        assert_eq!(
            first.target,
            YEALINK_103.target("incoming_call", "+15550100", "44")
        );
        assert_eq!(
            first.callback.remote.as_deref(),
            Some("+15550100"),
            "'+' kept"
        );
        assert_eq!(first.callback.call_id.as_deref(), Some("44"));
        assert_eq!(c.take_orphans().len(), 5, "{label}");
        assert!(c.orphans().is_empty());
    }
}

/// A feature code (`*78`, DND on) is channel activity but not a call: the phone's
/// `outgoing_call` for it matches that channel, and when the channel ends without becoming a
/// record the callback is kept as an orphan `call_without_record`.
#[test]
fn callback_for_a_feature_code_is_an_orphan_without_record() {
    let mut s = Script::new();
    let dnd = s.caller("PJSIP/102-00000060", "102", "Bob 102", "*78");
    s.at(5).sip_call_id(dnd, "3-61001@10.0.0.102");
    s.at(8).phone(&YEALINK_102, "outgoing_call", "*78", "12");
    s.at(40).hangup(dnd, 16);
    for (label, cfg) in configs() {
        let run = run(cfg, &s);
        assert!(
            run.out
                .iter()
                .all(|o| !matches!(o, Output::CallStarted(_) | Output::CallCompleted(_))),
            "{label}: {:#?}",
            run.out
        );
        assert_eq!(run.correlator.live_calls(), 0, "{label}");
        let orphans = run.correlator.orphans();
        assert_eq!(orphans.len(), 1, "{label}: {orphans:#?}");
        assert_eq!(
            orphans[0].reason,
            OrphanReason::CallWithoutRecord,
            "{label}"
        );
        assert_eq!(orphans[0].extension.as_deref(), Some("102"), "{label}");
        assert_eq!(orphans[0].at, s.t(8), "{label}");
    }
}

// ----- an AMI gap in the middle of a call -----

/// 101 → 102 is ringing when the AMI link drops (last event at 2 s). 102 answers while the
/// bridge is blind. The client reconnects at 9 s, lists the live channels (both Up, bridged)
/// and journals the gap; the call goes on and 101 hangs up at 15 s. One record: answered by
/// 102, the gap on it, the legs ended by their real `Hangup`s (not closed by the resync), and
/// the answer dated no later than the resync that first showed it (the real moment is in the
/// gap, unknown).
#[test]
fn call_answered_during_an_ami_gap() {
    let mut s = Script::new();
    let alice = s.caller("PJSIP/101-00000070", "101", "Alice 101", "102");
    s.at(5).sip_call_id(alice, "1-70001@10.0.0.101");
    let bob = s
        .at(10)
        .callee("PJSIP/102-00000071", "102", "Bob 102", alice);
    s.sip_call_id(bob, "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e171");
    s.at(15).dial_begin(alice, bob, "102");
    s.at(60).ringing(alice, bob);
    // The last message before the link drops: the client's keep-alive answered at 2 s.
    s.at(2_000).pong("ctibridge-ping-7");
    // Unseen, during the gap: 102 answers at ~3 s and the two are bridged.
    s.cm(bob).state = UP;
    s.cm(alice).state = UP;
    s.cm(alice).conn_num = "102".into();
    s.cm(alice).conn_name = "Bob 102".into();
    let bridge = s.unseen_bridge(&[bob, alice]);
    // Reconnected: the resync list, then the gap marker.
    s.at(9_000)
        .core_show_channels("ctibridge-resync-2", &[alice, bob]);
    s.at(9_010).gap(2_000, 9_010, "connection closed by peer");
    s.phone(
        &GRANDSTREAM_102,
        "call_established",
        "101",
        "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e171",
    );
    s.at(15_000).hangup(alice, 16);
    s.at(15_010).hangup(bob, 16);
    s.destroy(bridge);

    for (label, cfg) in configs() {
        let run = run(cfg, &s);
        assert_eq!(run.correlator.live_calls(), 0, "{label}");
        let r = run.only(label);
        assert_eq!(r.id, format!("{PBX}:{}", s.uid(alice)), "{label}");
        assert_eq!(channels(r), [s.name(alice), s.name(bob)], "{label}");
        assert_eq!(r.gaps.len(), 1, "{label}");
        assert_eq!(r.gaps[0].from, s.t(2_000), "{label}");
        assert_eq!(r.gaps[0].to, s.t(9_010), "{label}");
        assert_eq!(r.gaps[0].reason, "connection closed by peer", "{label}");
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_eq!(r.disposition, Disposition::Answered, "{label}");
        assert_eq!(r.answered_by.as_deref(), Some("102"), "{label}");
        assert!(!r.missed, "{label}");
        let answered = r.answered_at.expect("answered");
        assert!(
            answered > s.t(2_000) && answered <= s.t(9_000),
            "{label}: answered at {answered}"
        );
        assert_eq!(r.started_at, s.t(0), "{label}");
        assert_eq!(r.ended_at, Some(s.t(15_010)), "{label}");
        let total = r.ring_s + r.talk_s;
        assert!((total - 15.01).abs() < 0.0015, "{label}: {total}");
        for l in &r.legs {
            assert_eq!(l.hangup_cause, Some(16), "{label}: {}", l.channel);
        }
        assert!(
            r.timeline.iter().all(|e| e.event != "ClosedByResync"),
            "{label}: both channels were in the resync list"
        );
        assert_eq!(
            matches(r),
            [("102", "call_established", "sip_call_id", s.uid(bob))],
            "{label}"
        );
    }
}
