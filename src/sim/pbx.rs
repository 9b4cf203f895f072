//! A small simulated telephone system for `ctibridge demo`: desk phones, a carrier trunk and
//! an Asterisk that tells the bridge about every call over AMI.
//!
//! Why a generator next to the recorded fixtures: the recordings ([`super::fixtures`]) are
//! real, but they are six calls between three extensions with no phone behind them. A demo (and
//! a browser test) needs calls that never end, between many phones of different vendors, that
//! react to what the bridge asks (click-to-call, DND), and whose phones report the same calls
//! through their Action URLs — so that the records the bridge builds show both views matched.
//!
//! The module has two halves:
//! - [`PbxModel`] is pure and deterministic (a seeded RNG, time passed in): it turns "101 calls
//!   102, 102 answers after 3 s, holds for 4 s, 101 hangs up" into a [`Plan`] — the AMI events
//!   an Asterisk 20/22 with PJSIP sends for that call, in the shapes and order of the recorded
//!   fixtures (`Newchannel`, `VarSet SIPCALLID`, `Newexten`, `DialBegin`/`DialState`/`DialEnd`,
//!   `Newstate`, `BridgeCreate`/`BridgeEnter`/`BridgeLeave`/`BridgeDestroy`, `Hold`/`Unhold`
//!   with music on hold, `BlindTransfer`, `HangupRequest`/`Hangup` with causes,
//!   `DeviceStateChange`, `OriginateResponse`, `UserEvent CtiDnd`), interleaved with what the
//!   phones' users do at the same moments (ring, answer, hold, hang up). Every channel carries
//!   `ChanVariable: SIPCALLID=…` and `ChanVariable: CTIBRIDGE_REQUEST_ID=…` as with
//!   `channelvars = SIPCALLID,CTIBRIDGE_REQUEST_ID` (`deploy/asterisk/manager.conf`); the
//!   SIP Call-ID the dialplan copies into `SIPCALLID` (`deploy/asterisk/extensions_ctibridge.conf`)
//!   is the one the phone of that leg reports, so Snom and Grandstream callbacks match exactly.
//! - [`PbxWorld`] runs plans in real time against a real [`AmiServer`] and real [`PhoneSim`]s:
//!   it makes calls continuously (answered, missed, busy, held, transferred, inbound from and
//!   outbound to the trunk), answers the bridge's AMI `Originate` (click-to-call through the
//!   PBX), turns a dial the bridge commanded on a phone (Active URI) into a call, lets users
//!   switch DND on their phones or with the `*78`/`*79` feature codes (`UserEvent CtiDnd`), and
//!   now and then replays a recorded call. A phone in DND or already in a call answers an
//!   incoming call with 486 Busy Here.

use super::ami_server::{response_to, AmiServer};
use super::fixtures::{embedded_scenarios, Scenario};
use super::phone::{PhoneSim, SimCallState, SimDial};
use crate::ami::{AmiMessage, AmiMessageBuilder};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The dialplan context the phones' calls start in (FreePBX's name; also the bridge's default
/// Originate context).
pub const PHONE_CONTEXT: &str = "from-internal";
/// The context calls from the carrier start in.
pub const TRUNK_CONTEXT: &str = "from-provider";
/// The pre-dial handler that copies a dialled leg's SIP Call-ID into `SIPCALLID`.
pub const CALLEE_HANDLER: &str = "ctibridge-callee-handler";
/// How long a phone rings before Asterisk's `Dial` gives up (its timeout argument).
pub const DIAL_TIMEOUT_S: u32 = 30;
/// Where the carrier's SIP traffic comes from (a documentation address, RFC 5737).
const CARRIER_HOST: &str = "203.0.113.5";

// Channel states as `ChannelState` numbers (`include/asterisk/channelstate.h`).
const DOWN: u8 = 0;
const RING: u8 = 4;
const RINGING: u8 = 5;
const UP: u8 = 6;
const BUSY: u8 = 7;

fn state_desc(state: u8) -> &'static str {
    match state {
        DOWN => "Down",
        RING => "Ring",
        RINGING => "Ringing",
        UP => "Up",
        BUSY => "Busy",
        _ => "Unknown",
    }
}

/// `Cause-txt` as Asterisk's cause table spells it.
fn cause_txt(cause: u16) -> &'static str {
    match cause {
        16 => "Normal Clearing",
        17 => "User busy",
        19 => "User alerting, no answer",
        127 => "Interworking, unspecified",
        _ => "Unknown",
    }
}

/// One desk phone's line: its extension and the caller name the PBX gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    pub number: String,
    pub name: String,
}

impl Extension {
    pub fn new(number: &str, name: &str) -> Extension {
        Extension {
            number: number.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// Someone outside, reached through the carrier trunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outside {
    pub number: String,
    pub name: String,
}

/// One end of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Party {
    Phone(Extension),
    Outside(Outside),
}

impl Party {
    fn number(&self) -> &str {
        match self {
            Party::Phone(e) => &e.number,
            Party::Outside(o) => &o.number,
        }
    }

    fn name(&self) -> &str {
        match self {
            Party::Phone(e) => &e.name,
            Party::Outside(o) => &o.name,
        }
    }

    fn ext(&self) -> Option<&str> {
        match self {
            Party::Phone(e) => Some(&e.number),
            Party::Outside(_) => None,
        }
    }
}

/// What a phone's user does (or what happens to the phone) at a moment of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhoneOp {
    /// An INVITE reaches the phone: it rings (`incoming_call`), showing `from`; the phone's
    /// leg has this SIP Call-ID.
    Ring { from: String, sip_call_id: String },
    /// The user answers the ringing phone.
    Answer,
    /// The user hangs up, cancels the call the phone placed, or transfers it away.
    HangUp,
    /// The party this phone called answered.
    FarEndAnswered,
    /// The PBX ended the call: the other party hung up or cancelled, or the call was refused.
    FarEndHungUp,
    /// The user presses hold (`true`) or resume (`false`).
    Hold(bool),
}

/// One thing that happens in a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Asterisk sends this event.
    Ami(AmiMessage),
    /// The phone of extension `ext` does `op`.
    Phone { ext: String, op: PhoneOp },
}

/// An action at its time since the plan started (at speed 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

/// A call (or feature-code call, or registration burst) as it will happen.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// One line for the log: `internal 101 → 102: answered, held`.
    pub label: String,
    /// In time order.
    pub steps: Vec<Step>,
    /// The extensions this plan keeps busy while it runs.
    pub involved: Vec<String>,
}

impl Plan {
    /// The AMI events of the plan, in order.
    pub fn events(&self) -> impl Iterator<Item = &AmiMessage> {
        self.steps.iter().filter_map(|s| match &s.action {
            Action::Ami(m) => Some(m),
            Action::Phone { .. } => None,
        })
    }

    /// For each phone whose part in the plan ends with it hanging up (or being hung up):
    /// the index of that step.
    pub fn phones_done_at(&self) -> HashMap<&str, usize> {
        let mut last: HashMap<&str, (usize, bool)> = HashMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            if let Action::Phone { ext, op } = &step.action {
                let ends = matches!(op, PhoneOp::HangUp | PhoneOp::FarEndHungUp);
                last.insert(ext.as_str(), (i, ends));
            }
        }
        last.into_iter()
            .filter(|(_, (_, ends))| *ends)
            .map(|(ext, (i, _))| (ext, i))
            .collect()
    }

    /// How long the plan runs (at speed 1).
    pub fn duration(&self) -> Duration {
        self.steps.last().map_or(Duration::ZERO, |s| s.at)
    }
}

/// What becomes of a call once the dialled party is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It rings for `ring_ms`, is answered and lasts `talk_ms` of conversation (hold and a
    /// transfer's own ringing and talk come on top).
    Answered {
        ring_ms: u64,
        talk_ms: u64,
        /// The callee (when a phone) holds after `after_ms` of talk, for `for_ms`.
        hold: Option<HoldSpec>,
        /// The callee blind-transfers the caller after its talk.
        transfer: Option<TransferSpec>,
        /// Who ends the call: the caller, else the callee (or transfer target).
        caller_hangs_up: bool,
    },
    /// It rings for `ring_ms` and the caller gives up (a missed call).
    Cancelled { ring_ms: u64 },
    /// The callee is busy (in a call, or DND): 486 Busy Here.
    Busy,
}

/// A hold period in an answered call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldSpec {
    pub after_ms: u64,
    pub for_ms: u64,
}

/// A blind transfer by the callee to `to` after the first conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferSpec {
    pub to: Extension,
    pub ring_ms: u64,
    pub talk_ms: u64,
}

/// A call from a phone or from the trunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSpec {
    pub from: Party,
    /// What the caller dialled (the caller channel's `Exten`): an extension, an outside
    /// number, or a DID for calls from the trunk.
    pub dialled: String,
    /// Who is rung: a phone, or an outside number through the trunk.
    pub to: Party,
    /// The SIP Call-ID of the caller's INVITE: the calling phone's own (what it reports), or
    /// the carrier's.
    pub caller_call_id: String,
    pub outcome: Outcome,
}

/// What a `Originate` action asked for, as far as the simulated Asterisk cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginateRequest {
    pub action_id: Option<String>,
    /// `PJSIP/101`.
    pub channel: String,
    pub exten: String,
    pub context: String,
    pub caller_id_num: String,
    pub caller_id_name: String,
    /// The preset `Uniqueid` of the new channel.
    pub channel_id: Option<String>,
    /// `Variable:` entries, names as sent (`__CTIBRIDGE_REQUEST_ID`).
    pub variables: Vec<(String, String)>,
}

impl OriginateRequest {
    /// Reads an `Originate` action; `Err` is the `Message` of Asterisk's error response.
    pub fn parse(action: &AmiMessage) -> Result<OriginateRequest, &'static str> {
        let channel = action
            .get("Channel")
            .filter(|c| !c.is_empty())
            .ok_or("Channel not specified")?;
        if !channel.contains('/') {
            return Err("Invalid channel");
        }
        let exten = action
            .get("Exten")
            .filter(|e| !e.is_empty())
            .ok_or("Exten not specified")?;
        let context = action.get("Context").unwrap_or("default");
        let (caller_id_name, caller_id_num) = parse_caller_id(action.get("CallerID").unwrap_or(""));
        let variables = action
            .get_all("Variable")
            .flat_map(|v| v.split(','))
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.trim().to_owned(), v.trim().to_owned()))
            })
            .collect();
        Ok(OriginateRequest {
            action_id: action.action_id().map(str::to_owned),
            channel: channel.to_owned(),
            exten: exten.to_owned(),
            context: context.to_owned(),
            caller_id_num,
            caller_id_name,
            channel_id: action
                .get("ChannelId")
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            variables,
        })
    }

    /// The endpoint of `Channel` (`PJSIP/101` → `101`).
    pub fn endpoint(&self) -> &str {
        self.channel.split_once('/').map_or("", |(_, e)| e)
    }
}

/// `"Name" <num>` / `Name <num>` / `num` → (name, num), with Asterisk's `<unknown>` for a
/// missing part.
fn parse_caller_id(raw: &str) -> (String, String) {
    let raw = raw.trim();
    let unknown = || "<unknown>".to_owned();
    match (raw.rfind('<'), raw.rfind('>')) {
        (Some(lt), Some(gt)) if lt < gt => {
            let num = raw[lt + 1..gt].trim();
            let name = raw[..lt].trim().trim_matches('"').trim();
            (
                if name.is_empty() {
                    unknown()
                } else {
                    name.to_owned()
                },
                if num.is_empty() {
                    unknown()
                } else {
                    num.to_owned()
                },
            )
        }
        _ if raw.is_empty() => (unknown(), unknown()),
        _ => (unknown(), raw.trim_matches('"').to_owned()),
    }
}

/// How the from-phone of an Originate behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginateOutcome {
    /// The phone rings for `ring_ms`, its user answers, then the number is dialled with this
    /// outcome.
    Connects { ring_ms: u64, then: Outcome },
    /// The phone is busy or in DND: 486, `OriginateResponse` Failure, Reason 5.
    Busy,
    /// No such endpoint: `OriginateResponse` Failure, Reason 0, no channel.
    NoChannel,
}

/// The simulated PBX's numbering and randomness: everything a plan needs besides its
/// parameters. Deterministic for a given seed and `now`.
#[derive(Debug)]
pub struct PbxModel {
    rng: StdRng,
    /// Unix seconds of "now" when a plan is built (`Uniqueid`s start with it).
    epoch: i64,
    /// Asterisk's global channel sequence (the part after the dot of a `Uniqueid`).
    seq: u64,
    /// Asterisk's channel name counter (`PJSIP/101-0000000a`).
    chan_counter: u32,
    bridge_counter: u64,
    /// The carrier trunk's PJSIP endpoint.
    pub trunk: String,
}

impl PbxModel {
    pub fn new(seed: u64, epoch: i64) -> PbxModel {
        PbxModel {
            rng: StdRng::seed_from_u64(seed),
            epoch,
            seq: 1000,
            // Far above the channel numbers of replayed captures (see `fixtures`), so names
            // do not collide.
            chan_counter: 0x00a0_0000,
            bridge_counter: 0,
            trunk: "provider".to_owned(),
        }
    }

    /// Moves "now" (Unix seconds) forward; `Uniqueid`s of later channels start with it.
    pub fn set_epoch(&mut self, epoch: i64) {
        self.epoch = self.epoch.max(epoch);
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// A UUID as Asterisk's PJSIP puts into the Call-ID of an INVITE it sends.
    pub fn uuid(&mut self) -> String {
        let b: [u8; 16] = self.rng.gen();
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }

    /// A Call-ID as the carrier's SBC writes it.
    pub fn carrier_call_id(&mut self) -> String {
        let n: u64 = self.rng.gen();
        format!("{n:016x}@{CARRIER_HOST}")
    }

    /// The AMI events of phones coming online: `PeerStatus`, `DeviceStateChange`,
    /// `ContactStatus` per phone, as in the recorded `register` capture.
    pub fn registration(&mut self, phones: &[(Extension, String)]) -> Plan {
        let mut c = CallBuilder::new(self);
        for (ext, contact) in phones {
            c.emit(
                AmiMessage::event("PeerStatus")
                    .field("Privilege", "system,all")
                    .field("ChannelType", "PJSIP")
                    .field("Peer", format!("PJSIP/{}", ext.number))
                    .field("PeerStatus", "Reachable"),
            );
            c.device_state(&ext.number, "NOT_INUSE");
            c.emit(
                AmiMessage::event("ContactStatus")
                    .field("Privilege", "system,all")
                    .field("URI", format!("sip:{}@{contact}", ext.number))
                    .field("ContactStatus", "Reachable")
                    .field("AOR", &ext.number)
                    .field("EndpointName", &ext.number)
                    .field("RoundtripUsec", "1843"),
            );
            c.after(50);
        }
        c.finish("phones register".into(), Vec::new())
    }

    /// The plan of a call described by `spec`.
    pub fn call(&mut self, spec: &CallSpec) -> Plan {
        let mut c = CallBuilder::new(self);
        let caller = match &spec.from {
            Party::Phone(e) => c.phone_caller(e, &spec.dialled),
            Party::Outside(o) => c.trunk_caller(o, &spec.dialled),
        };
        c.sip_call_id(caller, &spec.caller_call_id);
        c.after(20);
        let mut involved: Vec<String> = spec.from.ext().into_iter().map(str::to_owned).collect();
        involved.extend(spec.to.ext().map(str::to_owned));
        if let Outcome::Answered {
            transfer: Some(t), ..
        } = &spec.outcome
        {
            involved.push(t.to.number.clone());
        }
        let caller_phone = spec.from.ext().map(str::to_owned);
        c.connect(
            caller,
            caller_phone.as_deref(),
            true,
            &spec.to,
            &spec.outcome,
        );
        let label = format!(
            "{} {} → {}: {}",
            kind_of(&spec.from, &spec.to),
            spec.from.number(),
            spec.dialled,
            describe(&spec.outcome)
        );
        c.finish(label, involved)
    }

    /// The plan of an `Originate`: the from-phone is rung first; when its user answers, the
    /// dialplan dials `req.exten`, reaching `to`.
    pub fn originate(
        &mut self,
        req: &OriginateRequest,
        from: Option<&Extension>,
        to: &Party,
        outcome: &OriginateOutcome,
    ) -> Plan {
        let mut c = CallBuilder::new(self);
        let fail = |c: &mut CallBuilder<'_>, reason: u32, uid: &str| {
            c.emit(
                AmiMessage::event("OriginateResponse")
                    .field("Privilege", "call,all")
                    .field_opt("ActionID", req.action_id.clone())
                    .field("Response", "Failure")
                    .field("Channel", &req.channel)
                    .field("Context", &req.context)
                    .field("Exten", &req.exten)
                    .field("Reason", reason.to_string())
                    .field("Uniqueid", uid)
                    .field("CallerIDNum", &req.caller_id_num)
                    .field("CallerIDName", &req.caller_id_name),
            );
        };
        let (Some(from), false) = (from, *outcome == OriginateOutcome::NoChannel) else {
            let uid = req.channel_id.clone().unwrap_or_else(|| "<null>".into());
            c.after(10);
            fail(&mut c, 0, &uid);
            return c.finish(
                format!("originate {} → {}: no such channel", req.channel, req.exten),
                Vec::new(),
            );
        };
        let chan = c.new_chan(
            &from.number,
            DOWN,
            None,
            req.channel_id.as_deref(),
            &req.context,
        );
        {
            let d = c.cm(chan);
            d.cid_num = from.number.clone();
            d.cid_name = from.name.clone();
        }
        c.emit(c.chan_event("Newchannel", chan));
        for (name, value) in &req.variables {
            c.varset(chan, name, value);
        }
        {
            let d = c.cm(chan);
            d.cid_num = req.caller_id_num.clone();
            d.cid_name = req.caller_id_name.clone();
        }
        c.emit(c.chan_event("NewCallerid", chan));
        c.connected_line(chan, &req.caller_id_num, &req.caller_id_name);
        let b = c.snap(
            AmiMessage::event("DialBegin").field("Privilege", "call,all"),
            "Dest",
            chan,
        );
        c.emit(b.field("DialString", &from.number));
        c.after(40);
        let mut involved = vec![from.number.clone()];
        match outcome {
            OriginateOutcome::Busy | OriginateOutcome::NoChannel => {
                c.hangup_request(chan, 17, Some(486));
                let b = c.snap(
                    AmiMessage::event("DialEnd").field("Privilege", "call,all"),
                    "Dest",
                    chan,
                );
                c.emit(b.field("DialStatus", "BUSY"));
                let uid = c.c(chan).uniqueid.clone();
                fail(&mut c, 5, &uid);
                c.hangup(chan, 17, Some(486));
                c.finish(
                    format!(
                        "click-to-call {} → {}: {} busy",
                        from.number, req.exten, from.number
                    ),
                    involved,
                )
            }
            OriginateOutcome::Connects { ring_ms, then } => {
                // The INVITE to the from-phone: Asterisk's Call-ID, reported by the phone.
                let leg_call_id = c.m.uuid();
                c.newstate(chan, RINGING);
                let b = c.snap(
                    AmiMessage::event("DialState").field("Privilege", "call,all"),
                    "Dest",
                    chan,
                );
                c.emit(b.field("DialStatus", "RINGING"));
                c.device_state(&from.number, "RINGING");
                c.phone(
                    &from.number,
                    PhoneOp::Ring {
                        from: req.caller_id_num.clone(),
                        sip_call_id: leg_call_id.clone(),
                    },
                );
                c.after(*ring_ms);
                c.phone(&from.number, PhoneOp::Answer);
                c.newstate(chan, UP);
                let b = c.snap(
                    AmiMessage::event("DialEnd").field("Privilege", "call,all"),
                    "Dest",
                    chan,
                );
                c.emit(b.field("DialStatus", "ANSWER"));
                let uid = c.c(chan).uniqueid.clone();
                c.emit(
                    AmiMessage::event("OriginateResponse")
                        .field("Privilege", "call,all")
                        .field_opt("ActionID", req.action_id.clone())
                        .field("Response", "Success")
                        .field("Channel", c.c(chan).name.clone())
                        .field("Context", &req.context)
                        .field("Exten", &req.exten)
                        .field("Reason", "4")
                        .field("Uniqueid", uid)
                        .field("CallerIDNum", &req.caller_id_num)
                        .field("CallerIDName", &req.caller_id_name),
                );
                c.device_state(&from.number, "INUSE");
                c.after(30);
                // The dialplan runs at the Originate's extension.
                {
                    let d = c.cm(chan);
                    d.exten = req.exten.clone();
                    d.context = req.context.clone();
                    d.priority = 1;
                }
                c.newexten(chan, "Set", &format!("SIPCALLID={leg_call_id}"));
                c.sip_call_id(chan, &leg_call_id);
                involved.extend(to.ext().map(str::to_owned));
                if let Outcome::Answered {
                    transfer: Some(t), ..
                } = then
                {
                    involved.push(t.to.number.clone());
                }
                c.connect(chan, Some(&from.number), false, to, then);
                c.finish(
                    format!(
                        "click-to-call {} → {}: {}",
                        from.number,
                        req.exten,
                        describe(then)
                    ),
                    involved,
                )
            }
        }
    }

    /// The plan of a DND feature code dialled on `ext`'s phone (`*78` on, `*79` off): the
    /// dialplan sends `UserEvent(CtiDnd,Phone: <ext>,State: on|off)` and hangs up.
    pub fn dnd_feature_code(&mut self, ext: &Extension, on: bool, phone_call_id: &str) -> Plan {
        let code = if on { "*78" } else { "*79" };
        let mut c = CallBuilder::new(self);
        let chan = c.phone_caller(ext, code);
        c.sip_call_id(chan, phone_call_id);
        c.newexten(
            chan,
            "UserEvent",
            &format!(
                "CtiDnd,Phone: {},State: {}",
                ext.number,
                if on { "on" } else { "off" }
            ),
        );
        let b = c
            .snap(
                AmiMessage::event("UserEvent").field("Privilege", "user,all"),
                "",
                chan,
            )
            .field("UserEvent", "CtiDnd")
            .field("Phone", &ext.number)
            .field("State", if on { "on" } else { "off" });
        c.emit(b);
        c.after(300);
        c.soft_hangup_request(chan, 16);
        c.hangup(chan, 16, None);
        c.phone(&ext.number, PhoneOp::FarEndHungUp);
        c.finish(
            format!(
                "{} dials {code} (DND {})",
                ext.number,
                if on { "on" } else { "off" }
            ),
            vec![ext.number.clone()],
        )
    }
}

fn kind_of(from: &Party, to: &Party) -> &'static str {
    match (from, to) {
        (Party::Outside(_), _) => "inbound",
        (_, Party::Outside(_)) => "outbound",
        _ => "internal",
    }
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Answered { hold, transfer, .. } => {
            let mut s = "answered".to_owned();
            if hold.is_some() {
                s.push_str(", held");
            }
            if let Some(t) = transfer {
                s.push_str(&format!(", transferred to {}", t.to.number));
            }
            s
        }
        Outcome::Cancelled { .. } => "missed".into(),
        Outcome::Busy => "busy".into(),
    }
}

/// A channel of the plan being built (an index into [`CallBuilder::chans`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chan(usize);

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
    sipcallid: String,
    request_id: String,
    /// The phone's extension for a phone channel (its device state is reported).
    phone: Option<String>,
    hung_up: bool,
}

#[derive(Clone, Debug)]
struct BridgeData {
    uniqueid: String,
    members: Vec<Chan>,
}

/// Builds one plan: channels, bridges and the steps in time order.
struct CallBuilder<'m> {
    m: &'m mut PbxModel,
    /// Milliseconds since the plan's start.
    now: u64,
    chans: Vec<ChanData>,
    bridges: Vec<BridgeData>,
    steps: Vec<Step>,
}

impl<'m> CallBuilder<'m> {
    fn new(m: &'m mut PbxModel) -> Self {
        CallBuilder {
            m,
            now: 0,
            chans: Vec::new(),
            bridges: Vec::new(),
            steps: Vec::new(),
        }
    }

    fn finish(self, label: String, involved: Vec<String>) -> Plan {
        Plan {
            label,
            steps: self.steps,
            involved,
        }
    }

    fn after(&mut self, ms: u64) {
        self.now += ms;
    }

    fn push(&mut self, action: Action) {
        self.steps.push(Step {
            at: Duration::from_millis(self.now),
            action,
        });
    }

    fn emit(&mut self, b: AmiMessageBuilder) {
        // Every value here is generated by this module and has no line breaks.
        match b.build() {
            Ok(m) => self.push(Action::Ami(m)),
            Err(e) => tracing::warn!(error = %e, "simulated PBX: unframeable event dropped"),
        }
    }

    fn phone(&mut self, ext: &str, op: PhoneOp) {
        self.push(Action::Phone {
            ext: ext.to_owned(),
            op,
        });
    }

    fn c(&self, c: Chan) -> &ChanData {
        &self.chans[c.0]
    }

    fn cm(&mut self, c: Chan) -> &mut ChanData {
        &mut self.chans[c.0]
    }

    /// The channel snapshot block with `prefix`, in the order Asterisk writes it
    /// (`main/manager_channels.c`), with both `channelvars`.
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
            .field(
                format!("{prefix}ChanVariable"),
                format!("CTIBRIDGE_REQUEST_ID={}", d.request_id),
            )
    }

    fn chan_event(&self, event: &str, c: Chan) -> AmiMessageBuilder {
        self.snap(
            AmiMessage::event(event).field("Privilege", "call,all"),
            "",
            c,
        )
    }

    /// A new channel of `endpoint` (a phone's extension or the trunk), in the call of
    /// `linked` (or a call of its own), with a preset `Uniqueid` if given.
    fn new_chan(
        &mut self,
        endpoint: &str,
        state: u8,
        linked: Option<Chan>,
        uniqueid: Option<&str>,
        context: &str,
    ) -> Chan {
        let seq = self.m.seq;
        self.m.seq += 1;
        let counter = self.m.chan_counter;
        self.m.chan_counter = self.m.chan_counter.wrapping_add(1);
        let epoch = self.m.epoch + (self.now / 1000) as i64;
        let uniqueid = uniqueid.map_or_else(|| format!("{epoch}.{seq}"), str::to_owned);
        let (linkedid, request_id) = match linked {
            // Dialled channels inherit `__` variables, so the request id too.
            Some(l) => (self.c(l).linkedid.clone(), self.c(l).request_id.clone()),
            None => (uniqueid.clone(), String::new()),
        };
        let phone = (endpoint != self.m.trunk).then(|| endpoint.to_owned());
        self.chans.push(ChanData {
            name: format!("PJSIP/{endpoint}-{counter:08x}"),
            uniqueid,
            linkedid,
            state,
            cid_num: "<unknown>".into(),
            cid_name: "<unknown>".into(),
            conn_num: "<unknown>".into(),
            conn_name: "<unknown>".into(),
            context: context.to_owned(),
            exten: "s".into(),
            priority: 1,
            sipcallid: String::new(),
            request_id,
            phone,
            hung_up: false,
        });
        Chan(self.chans.len() - 1)
    }

    /// A phone starts a call: `Newchannel` in state Ring, dialling `exten`.
    fn phone_caller(&mut self, e: &Extension, exten: &str) -> Chan {
        let c = self.new_chan(&e.number, RING, None, None, PHONE_CONTEXT);
        {
            let d = self.cm(c);
            d.cid_num = e.number.clone();
            d.cid_name = e.name.clone();
            d.exten = exten.to_owned();
        }
        self.emit(self.chan_event("Newchannel", c));
        self.device_state(&e.number, "INUSE");
        c
    }

    /// The carrier delivers a call to DID `did`.
    fn trunk_caller(&mut self, o: &Outside, did: &str) -> Chan {
        let trunk = self.m.trunk.clone();
        let c = self.new_chan(&trunk, RING, None, None, TRUNK_CONTEXT);
        {
            let d = self.cm(c);
            d.cid_num = o.number.clone();
            d.cid_name = o.name.clone();
            d.exten = did.to_owned();
        }
        self.emit(self.chan_event("Newchannel", c));
        c
    }

    fn varset(&mut self, c: Chan, variable: &str, value: &str) {
        let name = variable.trim_start_matches('_');
        if name.eq_ignore_ascii_case("SIPCALLID") {
            self.cm(c).sipcallid = value.to_owned();
        } else if name.eq_ignore_ascii_case(crate::control::dial::REQUEST_ID_VAR) {
            self.cm(c).request_id = value.to_owned();
        }
        let b = self.snap(
            AmiMessage::event("VarSet").field("Privilege", "dialplan,all"),
            "",
            c,
        );
        self.emit(b.field("Variable", variable).field("Value", value));
    }

    /// The dialplan copies the leg's SIP Call-ID into `SIPCALLID`.
    fn sip_call_id(&mut self, c: Chan, call_id: &str) {
        self.varset(c, "SIPCALLID", call_id);
    }

    /// `Newexten`: the dialplan runs `app(data)` on the channel.
    fn newexten(&mut self, c: Chan, app: &str, data: &str) {
        let exten = self.c(c).exten.clone();
        let b = self.chan_event("Newexten", c);
        self.emit(
            b.field("Extension", exten)
                .field("Application", app)
                .field("AppData", data),
        );
        self.cm(c).priority += 1;
    }

    fn newstate(&mut self, c: Chan, state: u8) {
        self.cm(c).state = state;
        self.emit(self.chan_event("Newstate", c));
    }

    fn connected_line(&mut self, c: Chan, num: &str, name: &str) {
        {
            let d = self.cm(c);
            d.conn_num = num.to_owned();
            d.conn_name = name.to_owned();
        }
        self.emit(self.chan_event("NewConnectedLine", c));
    }

    fn device_state(&mut self, ext: &str, state: &str) {
        self.emit(
            AmiMessage::event("DeviceStateChange")
                .field("Privilege", "call,all")
                .field("Device", format!("PJSIP/{ext}"))
                .field("State", state),
        );
    }

    fn dial_event(&self, event: &str, from: Chan, to: Chan) -> AmiMessageBuilder {
        let b = self.chan_event(event, from);
        self.snap(b, "Dest", to)
    }

    fn bridge_fields(&self, b: AmiMessageBuilder, br: usize) -> AmiMessageBuilder {
        let d = &self.bridges[br];
        b.field("BridgeUniqueid", &d.uniqueid)
            .field("BridgeType", "basic")
            .field("BridgeTechnology", "simple_bridge")
            .field("BridgeCreator", "<unknown>")
            .field("BridgeName", "<unknown>")
            .field("BridgeNumChannels", d.members.len().to_string())
            .field("BridgeVideoSourceMode", "none")
    }

    /// `BridgeCreate` and a `BridgeEnter` for each of `members`.
    fn bridge(&mut self, members: &[Chan]) -> usize {
        self.m.bridge_counter += 1;
        let n = self.m.bridge_counter;
        let uuid = self.m.uuid();
        let uniqueid = format!("{}-{n:012x}", &uuid[..23]);
        self.bridges.push(BridgeData {
            uniqueid,
            members: Vec::new(),
        });
        let br = self.bridges.len() - 1;
        let b = AmiMessage::event("BridgeCreate").field("Privilege", "call,all");
        self.emit(self.bridge_fields(b, br));
        for &c in members {
            self.bridges[br].members.push(c);
            let b = AmiMessage::event("BridgeEnter").field("Privilege", "call,all");
            let b = self.snap(self.bridge_fields(b, br), "", c);
            self.emit(b);
        }
        br
    }

    fn bridge_of(&self, c: Chan) -> Option<usize> {
        self.bridges.iter().position(|b| b.members.contains(&c))
    }

    /// `BridgeLeave`; the last one out also destroys the bridge.
    fn leave_bridge(&mut self, c: Chan) {
        let Some(br) = self.bridge_of(c) else {
            return;
        };
        self.bridges[br].members.retain(|m| *m != c);
        let b = AmiMessage::event("BridgeLeave").field("Privilege", "call,all");
        let b = self.snap(self.bridge_fields(b, br), "", c);
        self.emit(b);
        if self.bridges[br].members.is_empty() {
            let b = AmiMessage::event("BridgeDestroy").field("Privilege", "call,all");
            self.emit(self.bridge_fields(b, br));
        }
    }

    fn hangup_request(&mut self, c: Chan, cause: u16, tech: Option<u16>) {
        let b = self.chan_event("HangupRequest", c);
        self.emit(
            b.field("Cause", cause.to_string())
                .field_opt("TechCause", tech.map(|t| t.to_string())),
        );
    }

    fn soft_hangup_request(&mut self, c: Chan, cause: u16) {
        let b = self.chan_event("SoftHangupRequest", c);
        self.emit(b.field("Cause", cause.to_string()));
    }

    /// The channel ends: `BridgeLeave` first when bridged, `Hangup` with `Cause` and
    /// `Cause-txt`, then the phone's device is free again.
    fn hangup(&mut self, c: Chan, cause: u16, tech: Option<u16>) {
        if self.c(c).hung_up {
            return;
        }
        self.leave_bridge(c);
        let b = self.chan_event("Hangup", c);
        self.emit(
            b.field("Cause", cause.to_string())
                .field("Cause-txt", cause_txt(cause))
                .field_opt("TechCause", tech.map(|t| t.to_string())),
        );
        self.cm(c).hung_up = true;
        if let Some(ext) = self.c(c).phone.clone() {
            self.device_state(&ext, "NOT_INUSE");
        }
    }

    /// `Dial` creates the outgoing channel to `to` for the call of `by`: `Newchannel` (Down,
    /// `Exten: s`), `NewConnectedLine` with the caller, then the pre-dial handler sets
    /// `SIPCALLID` to the Call-ID of the INVITE Asterisk is about to send.
    fn callee(&mut self, to: &Party, by: Chan) -> (Chan, String) {
        let (endpoint, context) = match to {
            Party::Phone(e) => (e.number.clone(), PHONE_CONTEXT),
            Party::Outside(_) => (self.m.trunk.clone(), TRUNK_CONTEXT),
        };
        let c = self.new_chan(&endpoint, DOWN, Some(by), None, context);
        {
            let d = self.cm(c);
            match to {
                Party::Phone(e) => {
                    d.cid_num = e.number.clone();
                    d.cid_name = e.name.clone();
                }
                Party::Outside(o) => {
                    d.cid_num = o.number.clone();
                    d.cid_name = "<unknown>".into();
                }
            }
        }
        self.emit(self.chan_event("Newchannel", c));
        let (exten, cnum, cname) = {
            let b = self.c(by);
            (b.exten.clone(), b.cid_num.clone(), b.cid_name.clone())
        };
        self.cm(c).exten = exten;
        self.connected_line(c, &cnum, &cname);
        let call_id = self.m.uuid();
        {
            let d = self.cm(c);
            d.context = CALLEE_HANDLER.into();
            d.exten = "s".into();
        }
        self.newexten(c, "Set", &format!("SIPCALLID={call_id}"));
        self.sip_call_id(c, &call_id);
        let exten = self.c(by).exten.clone();
        {
            let d = self.cm(c);
            d.context = context.into();
            d.exten = exten;
            d.priority = 1;
        }
        (c, call_id)
    }

    /// From the caller channel `caller` (whose phone, if any, is `caller_phone`; it waits for
    /// an answer when `caller_waits`), dials `to` and plays `outcome` to its end.
    fn connect(
        &mut self,
        caller: Chan,
        caller_phone: Option<&str>,
        caller_waits: bool,
        to: &Party,
        outcome: &Outcome,
    ) {
        let dial_string = match to {
            Party::Phone(e) => e.number.clone(),
            Party::Outside(o) => format!("{}@{}", o.number, self.m.trunk),
        };
        let dial_data = format!("PJSIP/{dial_string},{DIAL_TIMEOUT_S},b({CALLEE_HANDLER}^s^1)");
        self.newexten(caller, "Dial", &dial_data);
        let (callee, callee_call_id) = self.callee(to, caller);
        let b = self.dial_event("DialBegin", caller, callee);
        self.emit(b.field("DialString", &dial_string));
        let (num, name) = (to.number().to_owned(), to.name().to_owned());
        self.connected_line(caller, &num, &name);
        self.after(60);
        let callee_phone = to.ext().map(str::to_owned);
        let caller_num = self.c(caller).cid_num.clone();
        let end_caller_phone = |b: &mut Self, op: PhoneOp| {
            if let Some(p) = caller_phone {
                b.phone(p, op);
            }
        };
        match outcome {
            Outcome::Busy => {
                self.hangup_request(callee, 17, Some(486));
                let b = self.dial_event("DialEnd", caller, callee);
                self.emit(b.field("DialStatus", "BUSY"));
                self.varset(caller, "DIALSTATUS", "BUSY");
                self.hangup(callee, 17, Some(486));
                self.after(20);
                self.newexten(caller, "Busy", "2");
                self.newstate(caller, BUSY);
                if let Some(p) = caller_phone {
                    self.device_state(p, "BUSY");
                }
                self.after(2000);
                self.hangup_request(caller, 17, Some(486));
                self.soft_hangup_request(caller, 16);
                self.hangup(caller, 17, Some(486));
                end_caller_phone(self, PhoneOp::FarEndHungUp);
            }
            Outcome::Cancelled { ring_ms } => {
                self.ring(
                    caller,
                    callee,
                    callee_phone.as_deref(),
                    &caller_num,
                    &callee_call_id,
                );
                self.after(*ring_ms);
                end_caller_phone(self, PhoneOp::HangUp);
                self.hangup_request(caller, 127, Some(487));
                let b = self.dial_event("DialEnd", caller, callee);
                self.emit(b.field("DialStatus", "CANCEL"));
                self.varset(caller, "DIALSTATUS", "CANCEL");
                self.soft_hangup_request(caller, 16);
                self.hangup(caller, 127, Some(487));
                self.hangup(callee, 127, Some(500));
                if let Some(p) = &callee_phone {
                    self.phone(p, PhoneOp::FarEndHungUp);
                }
            }
            Outcome::Answered {
                ring_ms,
                talk_ms,
                hold,
                transfer,
                caller_hangs_up,
            } => {
                self.ring(
                    caller,
                    callee,
                    callee_phone.as_deref(),
                    &caller_num,
                    &callee_call_id,
                );
                self.after(*ring_ms);
                if let Some(p) = &callee_phone {
                    self.phone(p, PhoneOp::Answer);
                }
                self.answer(caller, callee, caller_phone, caller_waits);
                self.bridge(&[callee, caller]);
                let mut talk = *talk_ms;
                if let (Some(h), Some(p)) = (hold, &callee_phone) {
                    let first = h.after_ms.min(talk);
                    self.after(first);
                    talk -= first;
                    self.phone(p, PhoneOp::Hold(true));
                    let b = self.chan_event("Hold", callee);
                    self.emit(b.field("MusicClass", "default"));
                    let b = self.chan_event("MusicOnHoldStart", caller);
                    self.emit(b.field("Class", "default"));
                    if let Some(cp) = caller_phone {
                        self.device_state(cp, "ONHOLD");
                    }
                    self.after(h.for_ms);
                    self.phone(p, PhoneOp::Hold(false));
                    self.emit(self.chan_event("Unhold", callee));
                    self.emit(self.chan_event("MusicOnHoldStop", caller));
                    if let Some(cp) = caller_phone {
                        self.device_state(cp, "INUSE");
                    }
                }
                self.after(talk);
                match (transfer, &callee_phone) {
                    (Some(t), Some(p)) => {
                        self.blind_transfer(caller, callee, p, t);
                        let target = Party::Phone(t.to.clone());
                        let (tc, tcall) = self.callee(&target, caller);
                        let b = self.dial_event("DialBegin", caller, tc);
                        self.emit(b.field("DialString", &t.to.number));
                        self.connected_line(caller, &t.to.number, &t.to.name);
                        self.ring(caller, tc, Some(&t.to.number), &caller_num, &tcall);
                        self.after(t.ring_ms);
                        self.phone(&t.to.number, PhoneOp::Answer);
                        self.answer(caller, tc, None, false);
                        self.bridge(&[tc, caller]);
                        self.after(t.talk_ms);
                        self.end_answered(
                            caller,
                            caller_phone,
                            tc,
                            Some(&t.to.number),
                            *caller_hangs_up,
                        );
                    }
                    _ => self.end_answered(
                        caller,
                        caller_phone,
                        callee,
                        callee_phone.as_deref(),
                        *caller_hangs_up,
                    ),
                }
            }
        }
    }

    /// The dialled channel rings: `Newstate` Ringing, `DialState` RINGING, the phone rings.
    fn ring(&mut self, from: Chan, to: Chan, phone: Option<&str>, caller_num: &str, call_id: &str) {
        self.newstate(to, RINGING);
        let b = self.dial_event("DialState", from, to);
        self.emit(b.field("DialStatus", "RINGING"));
        if let Some(p) = phone {
            self.device_state(p, "RINGING");
            self.phone(
                p,
                PhoneOp::Ring {
                    from: caller_num.to_owned(),
                    sip_call_id: call_id.to_owned(),
                },
            );
        }
    }

    /// The dialled channel answers: `Newstate` Up, the caller's connected line, `DialEnd
    /// ANSWER`, `Newstate` Up of the caller (unless it already is).
    fn answer(&mut self, from: Chan, to: Chan, caller_phone: Option<&str>, caller_waits: bool) {
        self.newstate(to, UP);
        let (num, name) = (self.c(to).cid_num.clone(), self.c(to).cid_name.clone());
        self.connected_line(from, &num, &name);
        let b = self.dial_event("DialEnd", from, to);
        self.emit(b.field("DialStatus", "ANSWER"));
        self.varset(from, "DIALSTATUS", "ANSWER");
        if self.c(from).state != UP {
            self.newstate(from, UP);
        }
        if let Some(p) = self.c(to).phone.clone() {
            self.device_state(&p, "INUSE");
        }
        if let (Some(p), true) = (caller_phone, caller_waits) {
            self.phone(p, PhoneOp::FarEndAnswered);
        }
    }

    /// The callee's phone sends REFER to `t.to`: `Unhold` (every REFER raises one), both leave
    /// the bridge, `BlindTransfer`, the transferer hangs up; the caller's `Exten` becomes the
    /// target.
    fn blind_transfer(&mut self, caller: Chan, callee: Chan, callee_phone: &str, t: &TransferSpec) {
        self.emit(self.chan_event("Unhold", callee));
        let br = self.bridge_of(callee);
        let mut b = AmiMessage::event("BlindTransfer")
            .field("Privilege", "call,all")
            .field("Result", "Success");
        b = self.snap(b, "Transferer", callee);
        b = self.snap(b, "Transferee", caller);
        if let Some(br) = br {
            b = self.bridge_fields(b, br);
        }
        {
            let d = self.cm(caller);
            d.exten = t.to.number.clone();
            d.priority = 4;
        }
        self.leave_bridge(caller);
        self.leave_bridge(callee);
        self.emit(
            b.field("IsExternal", "Yes")
                .field("Context", PHONE_CONTEXT)
                .field("Extension", &t.to.number),
        );
        self.phone(callee_phone, PhoneOp::HangUp);
        self.hangup(callee, 16, None);
        self.after(200);
    }

    /// An answered call ends: one side hangs up, the other is hung up by Asterisk.
    fn end_answered(
        &mut self,
        caller: Chan,
        caller_phone: Option<&str>,
        callee: Chan,
        callee_phone: Option<&str>,
        caller_hangs_up: bool,
    ) {
        let (first, first_phone, second, second_phone) = if caller_hangs_up {
            (caller, caller_phone, callee, callee_phone)
        } else {
            (callee, callee_phone, caller, caller_phone)
        };
        if let Some(p) = first_phone {
            self.phone(p, PhoneOp::HangUp);
        }
        self.hangup_request(first, 16, None);
        self.leave_bridge(first);
        self.leave_bridge(second);
        self.hangup(first, 16, None);
        self.after(15);
        self.soft_hangup_request(second, 16);
        self.hangup(second, 16, None);
        if let Some(p) = second_phone {
            self.phone(p, PhoneOp::FarEndHungUp);
        }
    }
}

// ----- the running world -----

/// Settings of a [`PbxWorld`].
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// 1 = real time, 4 = everything four times faster.
    pub speed: f64,
    /// Seeds every random choice (which call, whom, how long).
    pub seed: u64,
    /// Start no more calls after this many (`None`: until stopped).
    pub max_calls: Option<u64>,
    /// Mean time between new calls, at speed 1.
    pub mean_gap: Duration,
    /// Calls at the same time, at most (click-to-call and commanded dials not counted).
    pub max_concurrent: usize,
    /// Now and then replay a recorded call (they involve 101, 102 and 103).
    pub replay_fixtures: bool,
    /// Users switch DND on and off now and then, and a CRM places click-to-calls.
    pub ambient: bool,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            speed: 1.0,
            seed: 1,
            max_calls: None,
            mean_gap: Duration::from_secs(6),
            max_concurrent: 3,
            replay_fixtures: true,
            ambient: true,
        }
    }
}

/// Something the world's people ask of the bridge's API (the demo sends it over HTTP, as a
/// CRM would).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiRequest {
    /// `PUT /api/v1/phones/{ext}/dnd`.
    Dnd { ext: String, on: bool },
    /// `POST /api/v1/dial`.
    Dial {
        from: String,
        to: String,
        via: &'static str,
    },
}

/// Carries out an [`ApiRequest`].
pub type ApiHook = Arc<dyn Fn(ApiRequest) -> BoxFuture<'static, ()> + Send + Sync>;

/// A phone's line and its phone.
struct Line {
    ext: Extension,
    phone: PhoneSim,
    /// The bridge can switch this phone's DND by command (not every vendor has one), so the
    /// CRM and the feature codes are used on it; other phones are switched by hand.
    dnd_by_command: bool,
}

/// Whether the bridge has an Active URI command for DND on phones of `vendor`.
fn dnd_by_command(vendor: crate::config::PhoneVendor) -> bool {
    use crate::phone::command::{KeyStyle, PhoneCommand};
    use crate::phone::vendor::{profile, CommandContext};
    let ctx = CommandContext {
        extension: "100".into(),
        account: None,
        line: 1,
        pbx_host: "pbx".into(),
        password: String::new(),
        key_style: KeyStyle::default(),
    };
    profile(vendor)
        .http_requests(&PhoneCommand::DndOn, &ctx)
        .is_ok()
}

/// The simulated telephone system at work; cloning gives another handle.
#[derive(Clone)]
pub struct PbxWorld {
    inner: Arc<WorldInner>,
}

struct WorldInner {
    server: AmiServer,
    cfg: WorldConfig,
    lines: Vec<Line>,
    model: Mutex<PbxModel>,
    state: Mutex<WorldState>,
    api: Option<ApiHook>,
    stop: CancellationToken,
    fixtures: Vec<Scenario>,
    outside: Vec<Outside>,
}

#[derive(Default)]
struct WorldState {
    /// Extension → plans that keep it busy.
    reserved: HashMap<String, u32>,
    /// Plans running now (feature codes and registrations not counted).
    running: usize,
    /// Calls started so far.
    calls: u64,
    last_fixture_gen: u64,
    /// A recorded call is due: new calls leave its extensions alone until they are free.
    fixture_due: bool,
    /// Last DND state seen per extension, and when it last changed (or was first seen).
    dnd_seen: HashMap<String, (bool, tokio::time::Instant)>,
    /// Phones the world itself put into DND, and when their "meeting" ends.
    auto_dnd: BTreeMap<String, tokio::time::Instant>,
}

/// How long after any DND change of a phone (and after the start) the world leaves that
/// phone's DND alone (at speed 1): an operator who just switched it should see it stay.
const DND_QUIET: Duration = Duration::from_secs(45);

/// Recorded calls worth replaying (the registration burst and the click-to-call, which
/// would answer an Originate nobody sent, are left out).
const REPLAYED: [&str; 7] = [
    "answered_caller_hangup",
    "busy_486",
    "missed_caller_cancel",
    "hold_unhold",
    "blind_transfer",
    "ring_group",
    "trunk_inbound",
];
/// The extensions the recorded calls involve.
const FIXTURE_EXTS: [&str; 3] = ["101", "102", "103"];

impl PbxWorld {
    /// Wires the world to `server` and `phones`: answers `Originate` actions and follows the
    /// phones' commanded dials from now on. Nothing else happens until [`PbxWorld::run`].
    pub fn start(
        server: AmiServer,
        phones: Vec<(Extension, PhoneSim)>,
        cfg: WorldConfig,
        api: Option<ApiHook>,
    ) -> PbxWorld {
        let epoch = chrono::Utc::now().timestamp();
        let fixtures = if cfg.replay_fixtures
            && FIXTURE_EXTS
                .iter()
                .all(|e| phones.iter().any(|(x, _)| x.number == *e))
        {
            embedded_scenarios()
                .into_iter()
                .filter(|s| REPLAYED.contains(&s.name.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        let inner = Arc::new(WorldInner {
            model: Mutex::new(PbxModel::new(cfg.seed, epoch)),
            server: server.clone(),
            cfg,
            lines: phones
                .into_iter()
                .map(|(ext, phone)| Line {
                    dnd_by_command: dnd_by_command(phone.config().vendor),
                    ext,
                    phone,
                })
                .collect(),
            state: Mutex::new(WorldState::default()),
            api,
            stop: CancellationToken::new(),
            fixtures,
            outside: outside_people(),
        });
        let (orig_tx, orig_rx) = mpsc::unbounded_channel();
        server.set_action_handler(Box::new(move |action| {
            let name = action.get("Action")?;
            if !name.eq_ignore_ascii_case("Originate") {
                return None;
            }
            let reply = match OriginateRequest::parse(action) {
                Ok(req) => {
                    let _ = orig_tx.send(req);
                    response_to(action, "Success").field("Message", "Originate successfully queued")
                }
                Err(why) => response_to(action, "Error").field("Message", why),
            };
            reply.build().ok().map(|m| vec![m])
        }));
        let (dial_tx, dial_rx) = mpsc::unbounded_channel();
        for line in &inner.lines {
            line.phone.set_dial_hook(Some(dial_tx.clone()));
        }
        tokio::spawn(inputs(Arc::downgrade(&inner), orig_rx, dial_rx));
        PbxWorld { inner }
    }

    /// The phones come online (`PeerStatus`, `ContactStatus`, `DeviceStateChange`); `contact`
    /// is where each phone's SIP would be (shown as its registered contact).
    pub async fn register_phones(&self) {
        let phones: Vec<(Extension, String)> = self
            .inner
            .lines
            .iter()
            .map(|l| (l.ext.clone(), format!("{}:5060", l.phone.local_addr().ip())))
            .collect();
        let plan = self.inner.model().registration(&phones);
        self.inner
            .clone()
            .execute(plan, Duration::ZERO, false)
            .await;
    }

    /// Makes calls until [`PbxWorld::stop`] or until `max_calls` calls have started and
    /// ended. Returns the number of calls started.
    pub async fn run(&self) -> u64 {
        let inner = &self.inner;
        let ambient = inner
            .cfg
            .ambient
            .then(|| tokio::spawn(ambient(Arc::downgrade(inner))));
        let observer = tokio::spawn(observe_dnd(Arc::downgrade(inner)));
        loop {
            if inner.stop.is_cancelled() || inner.limit_reached() {
                break;
            }
            let gap = {
                let mean = inner.cfg.mean_gap.as_millis().max(2) as u64;
                inner.model().rng().gen_range(mean / 2..=mean * 3 / 2)
            };
            if !inner.sleep(Duration::from_millis(gap)).await {
                break;
            }
            if inner.state().running < inner.cfg.max_concurrent.max(1) {
                inner.clone().start_random_call().await;
            }
        }
        if let Some(a) = ambient {
            a.abort();
        }
        observer.abort();
        // Let the calls in progress end.
        while !inner.stop.is_cancelled() && inner.state().running > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        inner.state().calls
    }

    /// Stops making calls and ends the plans in progress where they are.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// Calls started so far.
    pub fn calls_started(&self) -> u64 {
        self.inner.state().calls
    }
}

/// Names and numbers of people outside, for calls from and to the trunk.
fn outside_people() -> Vec<Outside> {
    [
        ("+15550100", "ACME Corp"),
        ("+15550117", "Globex Sales"),
        ("+15550123", "Initech"),
        ("+15550142", "Jane Roe"),
        ("+15550158", "Umbrella Ltd"),
        ("+15550166", "John Doe"),
        ("+15550171", "Stark Supplies"),
        ("+15550189", "Wayne Travel"),
    ]
    .into_iter()
    .map(|(n, name)| Outside {
        number: n.to_owned(),
        name: name.to_owned(),
    })
    .collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Originate actions and commanded phone dials, as they come.
async fn inputs(
    weak: std::sync::Weak<WorldInner>,
    mut originates: mpsc::UnboundedReceiver<OriginateRequest>,
    mut dials: mpsc::UnboundedReceiver<SimDial>,
) {
    loop {
        tokio::select! {
            Some(req) = originates.recv() => {
                let Some(inner) = weak.upgrade() else { return };
                inner.on_originate(req);
            }
            Some(dial) = dials.recv() => {
                let Some(inner) = weak.upgrade() else { return };
                inner.on_phone_dial(dial);
            }
            else => return,
        }
    }
}

/// Notes every phone's DND changes, so the world leaves a phone alone after someone else
/// switched it (see [`DND_QUIET`]).
async fn observe_dnd(weak: std::sync::Weak<WorldInner>) {
    loop {
        {
            let Some(inner) = weak.upgrade() else { return };
            let now = tokio::time::Instant::now();
            let seen: Vec<(String, bool)> = inner
                .lines
                .iter()
                .map(|l| (l.ext.number.clone(), l.phone.state().dnd))
                .collect();
            let mut st = inner.state();
            for (ext, dnd) in seen {
                match st.dnd_seen.get(&ext) {
                    Some((d, _)) if *d == dnd => {}
                    _ => {
                        st.dnd_seen.insert(ext, (dnd, now));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The people's own doings: DND for meetings (on the phone, with a feature code, or from the
/// CRM) and click-to-calls from the CRM.
async fn ambient(weak: std::sync::Weak<WorldInner>) {
    loop {
        let (gap, action) = {
            let Some(inner) = weak.upgrade() else { return };
            let mut m = inner.model();
            let r = m.rng();
            (r.gen_range(8_000..20_000u64), r.gen_range(0..100u32))
        };
        {
            let Some(inner) = weak.upgrade() else { return };
            if !inner.sleep(Duration::from_millis(gap)).await {
                return;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        if action < 65 {
            inner.ambient_dnd().await;
        } else {
            inner.ambient_dial().await;
        }
    }
}

impl WorldInner {
    fn model(&self) -> MutexGuard<'_, PbxModel> {
        let mut m = lock(&self.model);
        m.set_epoch(chrono::Utc::now().timestamp());
        m
    }

    fn state(&self) -> MutexGuard<'_, WorldState> {
        lock(&self.state)
    }

    fn limit_reached(&self) -> bool {
        self.cfg
            .max_calls
            .is_some_and(|max| self.state().calls >= max)
    }

    /// A scenario duration in real time.
    fn real(&self, d: Duration) -> Duration {
        let speed = self.cfg.speed;
        if speed.is_finite() && speed > 0.0 {
            Duration::try_from_secs_f64(d.as_secs_f64() / speed).unwrap_or(Duration::MAX)
        } else {
            Duration::ZERO
        }
    }

    /// Sleeps `d` of scenario time; false when the world was stopped meanwhile.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.real(d)) => true,
            _ = self.stop.cancelled() => false,
        }
    }

    fn line(&self, ext: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.ext.number == ext)
    }

    /// Free for a call: no plan holds it and its phone has no call.
    fn available(&self, st: &WorldState, ext: &str) -> bool {
        !st.reserved.get(ext).is_some_and(|n| *n > 0)
            && self
                .line(ext)
                .is_some_and(|l| l.phone.state().call == SimCallState::Idle)
    }

    /// Would take a call now: available and not in DND.
    fn reachable(&self, st: &WorldState, ext: &str) -> bool {
        self.available(st, ext) && self.line(ext).is_some_and(|l| !l.phone.state().dnd)
    }

    fn reserve(st: &mut WorldState, exts: &[String]) {
        for e in exts {
            *st.reserved.entry(e.clone()).or_default() += 1;
        }
    }

    fn release(&self, exts: &[String]) {
        let mut st = self.state();
        for e in exts {
            if let Some(n) = st.reserved.get_mut(e) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Runs `plan` in its own task after `delay`; `counted` plans are calls (they count
    /// towards `max_calls` and `max_concurrent`). The plan's extensions must be reserved.
    fn spawn(self: &Arc<Self>, plan: Plan, delay: Duration, counted: bool) {
        if counted {
            let mut st = self.state();
            st.calls += 1;
            st.running += 1;
        }
        tokio::spawn(self.clone().execute(plan, delay, counted));
    }

    async fn execute(self: Arc<Self>, plan: Plan, delay: Duration, counted: bool) {
        tracing::info!(call = %plan.label, "simulated PBX");
        let done_at = plan.phones_done_at();
        let mut held = plan.involved.clone();
        // Phones that turned out busy when rung (something else reached them first): the rest
        // of this plan leaves them alone, so their other call goes on undisturbed.
        let mut refused: Vec<&str> = Vec::new();
        let start = tokio::time::Instant::now() + delay;
        for (i, step) in plan.steps.iter().enumerate() {
            let at = start + self.real(step.at);
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = self.stop.cancelled() => break,
            }
            match &step.action {
                Action::Ami(m) => self.server.send_event(m),
                Action::Phone { ext, op } => {
                    if !refused.contains(&ext.as_str()) && !self.phone_op(ext, op).await {
                        tracing::debug!(ext, "simulated phone was busy when rung");
                        refused.push(ext);
                    }
                    // A phone whose part is over (a transferer) is free for other calls.
                    if done_at.get(ext.as_str()) == Some(&i) {
                        if let Some(pos) = held.iter().position(|h| h == ext) {
                            self.release(&[held.remove(pos)]);
                        }
                    }
                }
            }
        }
        self.release(&held);
        if counted {
            let mut st = self.state();
            st.running = st.running.saturating_sub(1);
        }
    }

    /// Does `op` on the phone; false when the phone refused to ring.
    async fn phone_op(&self, ext: &str, op: &PhoneOp) -> bool {
        let Some(line) = self.line(ext) else {
            return true;
        };
        let p = &line.phone;
        match op {
            PhoneOp::Ring { from, sip_call_id } => {
                p.incoming_call(from, sip_call_id).await;
                return p.state().sip_call_id.as_deref() == Some(sip_call_id.as_str());
            }
            PhoneOp::Answer => p.answer().await,
            PhoneOp::HangUp => p.hang_up().await,
            PhoneOp::FarEndAnswered => p.far_end_answers().await,
            PhoneOp::FarEndHungUp => p.far_end_hangs_up().await,
            PhoneOp::Hold(on) => {
                p.set_hold(*on).await;
            }
        }
        true
    }

    /// The party `number` is: one of our lines, else someone outside.
    fn party(&self, number: &str) -> Party {
        match self.line(number) {
            Some(l) => Party::Phone(l.ext.clone()),
            None => {
                let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
                let name = self
                    .outside
                    .iter()
                    .find(|o| digits(&o.number).ends_with(&digits(number)) && !number.is_empty())
                    .map_or_else(|| "<unknown>".to_owned(), |o| o.name.clone());
                Party::Outside(Outside {
                    number: number.to_owned(),
                    name,
                })
            }
        }
    }

    /// What becomes of a call to `to` from `from`: busy when it cannot take the call,
    /// otherwise answered (sometimes held or transferred) or missed.
    fn outcome_for(&self, st: &WorldState, m: &mut PbxModel, from: &Party, to: &Party) -> Outcome {
        let r = m.rng();
        match to {
            Party::Phone(e) => {
                if !self.reachable(st, &e.number) || from.ext() == Some(e.number.as_str()) {
                    return Outcome::Busy;
                }
                let roll = r.gen_range(0..100u32);
                if roll < 20 {
                    return Outcome::Cancelled {
                        ring_ms: r.gen_range(4_000..12_000),
                    };
                }
                let hold = (roll < 40).then(|| HoldSpec {
                    after_ms: r.gen_range(2_000..6_000),
                    for_ms: r.gen_range(3_000..9_000),
                });
                let ring_ms = r.gen_range(1_500..6_000);
                let talk_ms = r.gen_range(6_000..35_000);
                let caller_hangs_up = r.gen_bool(0.5);
                let transfer = if (40..52).contains(&roll) {
                    let others: Vec<&Line> = self
                        .lines
                        .iter()
                        .filter(|l| {
                            Some(l.ext.number.as_str()) != from.ext()
                                && l.ext.number != e.number
                                && self.reachable(st, &l.ext.number)
                        })
                        .collect();
                    (!others.is_empty()).then(|| {
                        let r = m.rng();
                        let t = others[r.gen_range(0..others.len())];
                        TransferSpec {
                            to: t.ext.clone(),
                            ring_ms: r.gen_range(1_500..5_000),
                            talk_ms: r.gen_range(5_000..20_000),
                        }
                    })
                } else {
                    None
                };
                Outcome::Answered {
                    ring_ms,
                    talk_ms,
                    hold,
                    transfer,
                    caller_hangs_up,
                }
            }
            Party::Outside(_) => {
                let roll = r.gen_range(0..100u32);
                if roll < 10 {
                    Outcome::Busy
                } else if roll < 20 {
                    Outcome::Cancelled {
                        ring_ms: r.gen_range(5_000..15_000),
                    }
                } else {
                    Outcome::Answered {
                        ring_ms: r.gen_range(3_000..9_000),
                        talk_ms: r.gen_range(8_000..40_000),
                        hold: None,
                        transfer: None,
                        caller_hangs_up: r.gen_bool(0.5),
                    }
                }
            }
        }
    }

    /// A call the world starts by itself.
    async fn start_random_call(self: Arc<Self>) {
        let (kind, pick_caller, pick_callee, loose) = {
            let mut m = self.model();
            let r = m.rng();
            (
                r.gen_range(0..100u32),
                r.gen_range(0..1000usize),
                r.gen_range(0..1000usize),
                r.gen_bool(0.15),
            )
        };
        if !self.fixtures.is_empty() && (kind < 8 || self.state().fixture_due) {
            if self.replay_fixture() {
                return;
            }
            self.state().fixture_due = true;
        }
        let free: Vec<Extension> = {
            let st = self.state();
            self.lines
                .iter()
                .filter(|l| self.available(&st, &l.ext.number) && !Self::kept(&st, &l.ext.number))
                .map(|l| l.ext.clone())
                .collect()
        };
        if kind < 40 {
            // Inbound from the trunk to a DID of a line: mostly one whose phone can answer;
            // sometimes any (busy when it cannot).
            let candidates: Vec<&Extension> = {
                let st = self.state();
                self.lines
                    .iter()
                    .map(|l| &l.ext)
                    .filter(|e| loose || self.reachable(&st, &e.number))
                    .filter(|e| !Self::kept(&st, &e.number))
                    .collect()
            };
            if candidates.is_empty() {
                return;
            }
            let to = candidates[pick_callee % candidates.len()];
            let caller = {
                let mut m = self.model();
                let o = &self.outside;
                o[m.rng().gen_range(0..o.len())].clone()
            };
            let mut m = self.model();
            let mut st = self.state();
            let from = Party::Outside(caller);
            let to = Party::Phone(to.clone());
            let outcome = self.outcome_for(&st, &mut m, &from, &to);
            let spec = CallSpec {
                dialled: format!("5551{}", to.number()),
                caller_call_id: m.carrier_call_id(),
                from,
                to,
                outcome,
            };
            let plan = m.call(&spec);
            Self::reserve(&mut st, &plan.involved);
            drop((m, st));
            self.spawn(plan, Duration::ZERO, true);
            return;
        }
        // From a free phone: to another line, or outside.
        if free.is_empty() {
            return;
        }
        let caller = free[pick_caller % free.len()].clone();
        let number = if kind < 82 {
            // Mostly someone who can answer; sometimes anyone (then maybe busy).
            let candidates: Vec<&Extension> = {
                let st = self.state();
                self.lines
                    .iter()
                    .map(|l| &l.ext)
                    .filter(|e| e.number != caller.number)
                    .filter(|e| loose || self.reachable(&st, &e.number))
                    .filter(|e| !Self::kept(&st, &e.number))
                    .collect()
            };
            if candidates.is_empty() {
                return;
            }
            candidates[pick_callee % candidates.len()].number.clone()
        } else {
            let o = &self.outside[pick_callee % self.outside.len()];
            // People type numbers without the country code as often as with it.
            if pick_caller % 2 == 0 {
                o.number.clone()
            } else {
                o.number.trim_start_matches("+1").to_owned()
            }
        };
        let Some(line) = self.line(&caller.number) else {
            return;
        };
        // Reserve the caller before its phone dials, so nothing else rings it meanwhile.
        Self::reserve(&mut self.state(), std::slice::from_ref(&caller.number));
        let dial = line.phone.dial(&number).await;
        match dial {
            Some(dial) => self.phone_call(dial, true),
            None => self.release(std::slice::from_ref(&caller.number)),
        }
    }

    /// A call placed by a phone (`dial`): to a line, a feature code, or outside. When
    /// `caller_reserved`, the caller's extension was reserved already (the reservation moves
    /// to the plan).
    fn phone_call(self: &Arc<Self>, dial: SimDial, caller_reserved: bool) {
        let Some(line) = self.line(&dial.extension) else {
            return;
        };
        let ext = line.ext.clone();
        let mut m = self.model();
        let mut st = self.state();
        if caller_reserved {
            if let Some(n) = st.reserved.get_mut(&ext.number) {
                *n = n.saturating_sub(1);
            }
        }
        let (plan, counted) = match dial.number.as_str() {
            "*78" | "*79" => (
                m.dnd_feature_code(&ext, dial.number == "*78", &dial.sip_call_id),
                false,
            ),
            number => {
                let from = Party::Phone(ext.clone());
                let to = self.party(number);
                let outcome = self.outcome_for(&st, &mut m, &from, &to);
                let spec = CallSpec {
                    from,
                    dialled: number.to_owned(),
                    to,
                    caller_call_id: dial.sip_call_id.clone(),
                    outcome,
                };
                (m.call(&spec), true)
            }
        };
        Self::reserve(&mut st, &plan.involved);
        drop((m, st));
        self.spawn(plan, Duration::ZERO, counted);
    }

    /// The bridge commanded a phone to dial (Active URI): the phone placed the call.
    fn on_phone_dial(self: &Arc<Self>, dial: SimDial) {
        tracing::debug!(ext = %dial.extension, number = %dial.number, "simulated phone dials on command");
        self.phone_call(dial, false);
    }

    /// The bridge sent `Originate`.
    fn on_originate(self: &Arc<Self>, req: OriginateRequest) {
        let mut m = self.model();
        let mut st = self.state();
        let from = self.line(req.endpoint()).map(|l| l.ext.clone());
        let to = self.party(&req.exten);
        let outcome = match &from {
            None => OriginateOutcome::NoChannel,
            Some(f) if !self.reachable(&st, &f.number) => OriginateOutcome::Busy,
            Some(f) => {
                let then = self.outcome_for(&st, &mut m, &Party::Phone(f.clone()), &to);
                // A click-to-call is placed by someone at the desk: they answer their phone
                // and do not give up; the far end may still be busy or not answer.
                let then = match then {
                    Outcome::Answered {
                        ring_ms,
                        talk_ms,
                        transfer,
                        caller_hangs_up,
                        ..
                    } => Outcome::Answered {
                        ring_ms,
                        talk_ms,
                        hold: None,
                        transfer,
                        caller_hangs_up,
                    },
                    other => other,
                };
                OriginateOutcome::Connects {
                    ring_ms: m.rng().gen_range(1_200..3_500),
                    then,
                }
            }
        };
        let plan = m.originate(&req, from.as_ref(), &to, &outcome);
        Self::reserve(&mut st, &plan.involved);
        drop((m, st));
        // After the action's response has gone out.
        self.spawn(plan, Duration::from_millis(20), true);
    }

    /// Replays one recorded call with fresh identifiers while 101–103 are free.
    fn replay_fixture(self: &Arc<Self>) -> bool {
        let exts: Vec<String> = FIXTURE_EXTS.iter().map(|e| (*e).to_owned()).collect();
        let (scenario, generation) = {
            let mut m = self.model();
            let mut st = self.state();
            if !exts.iter().all(|e| self.reachable(&st, e)) {
                return false;
            }
            st.fixture_due = false;
            Self::reserve(&mut st, &exts);
            st.calls += 1;
            st.running += 1;
            // Unix seconds make the replay's identifiers new across demo runs too.
            let generation =
                (chrono::Utc::now().timestamp().max(1) as u64).max(st.last_fixture_gen + 1);
            st.last_fixture_gen = generation;
            let i = m.rng().gen_range(0..self.fixtures.len());
            (self.fixtures[i].clone(), generation)
        };
        let me = self.clone();
        tokio::spawn(async move {
            tracing::info!(scenario = %scenario.name, "simulated PBX replays a recorded call");
            let messages = scenario.instantiate(generation);
            tokio::select! {
                _ = me.server.play(&messages, me.cfg.speed) => {}
                _ = me.stop.cancelled() => {}
            }
            me.release(&exts);
            let mut st = me.state();
            st.running = st.running.saturating_sub(1);
        });
        true
    }

    /// Kept free for a recorded call that is due.
    fn kept(st: &WorldState, ext: &str) -> bool {
        st.fixture_due && FIXTURE_EXTS.contains(&ext)
    }

    /// Someone goes into a meeting (DND on), or comes back from the one the world started.
    async fn ambient_dnd(self: &Arc<Self>) {
        let now = tokio::time::Instant::now();
        let quiet = self.real(DND_QUIET);
        let (ext, on, path) = {
            let mut m = self.model();
            let mut st = self.state();
            let back = st
                .auto_dnd
                .iter()
                .find(|(_, until)| **until <= now)
                .map(|(e, _)| e.clone());
            let path = m.rng().gen_range(0..100u32);
            if let Some(ext) = back {
                // Back at the desk; a phone in a call switches later.
                if !self.available(&st, &ext) {
                    return;
                }
                st.auto_dnd.remove(&ext);
                // Only if nobody switched it off meanwhile.
                let still_on = self.line(&ext).is_some_and(|l| l.phone.state().dnd);
                if !still_on {
                    return;
                }
                (ext, false, path)
            } else {
                let in_dnd = self.lines.iter().filter(|l| l.phone.state().dnd).count();
                if in_dnd >= 2 {
                    return;
                }
                let candidates: Vec<String> = self
                    .lines
                    .iter()
                    .filter(|l| {
                        let e = &l.ext.number;
                        self.reachable(&st, e)
                            && st
                                .dnd_seen
                                .get(e)
                                .is_some_and(|(_, since)| now.duration_since(*since) >= quiet)
                    })
                    .map(|l| l.ext.number.clone())
                    .collect();
                if candidates.is_empty() {
                    return;
                }
                let ext = candidates[m.rng().gen_range(0..candidates.len())].clone();
                let meeting = Duration::from_millis(m.rng().gen_range(40_000..120_000));
                st.auto_dnd.insert(ext.clone(), now + self.real(meeting));
                (ext, true, path)
            }
        };
        let Some(line) = self.line(&ext) else {
            return;
        };
        let api = self.api.as_ref().filter(|_| line.dnd_by_command);
        let path = if line.dnd_by_command { path } else { 0 };
        match (path, api) {
            (0..=39, _) | (70.., None) => {
                tracing::info!(ext, on, "simulated user switches DND on the phone");
                line.phone.set_dnd_local(on).await;
            }
            (40..=69, _) => {
                tracing::info!(ext, on, "simulated user dials the DND feature code");
                Self::reserve(&mut self.state(), std::slice::from_ref(&ext));
                match line.phone.dial(if on { "*78" } else { "*79" }).await {
                    Some(dial) => self.phone_call(dial, true),
                    None => self.release(std::slice::from_ref(&ext)),
                }
            }
            (70.., Some(api)) => {
                tracing::info!(ext, on, "simulated CRM switches DND through the API");
                api(ApiRequest::Dnd { ext, on }).await;
            }
        }
    }

    /// The CRM places a click-to-call for someone at a free phone.
    async fn ambient_dial(self: &Arc<Self>) {
        let Some(api) = &self.api else {
            return;
        };
        let request = {
            let mut m = self.model();
            let st = self.state();
            let free: Vec<&Extension> = self
                .lines
                .iter()
                .filter(|l| self.reachable(&st, &l.ext.number))
                .map(|l| &l.ext)
                .collect();
            if free.len() < 2 {
                return;
            }
            let r = m.rng();
            let from = free[r.gen_range(0..free.len())].number.clone();
            let to = if r.gen_bool(0.5) {
                let others: Vec<&&Extension> = free.iter().filter(|e| e.number != from).collect();
                others[r.gen_range(0..others.len())].number.clone()
            } else {
                self.outside[r.gen_range(0..self.outside.len())]
                    .number
                    .clone()
            };
            let via = ["pbx", "pbx", "phone", "auto"][r.gen_range(0..4)];
            ApiRequest::Dial { from, to, via }
        };
        tracing::info!(?request, "simulated CRM places a click-to-call");
        api(request).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlator::{Correlator, CorrelatorConfig, Output, PhoneIdentity};
    use crate::journal::{Input, JournalEntry};
    use crate::record::{CallRecord, Direction, Disposition};
    use chrono::{DateTime, TimeDelta, Utc};
    use std::collections::HashSet;

    const EPOCH: i64 = 1_795_400_000;

    fn ext(n: &str) -> Extension {
        let name = match n {
            "101" => "Alice 101",
            "102" => "Bob 102",
            "103" => "Carol 103",
            _ => "Dave 104",
        };
        Extension::new(n, name)
    }

    fn phone(n: &str) -> Party {
        Party::Phone(ext(n))
    }

    fn outside(n: &str) -> Party {
        Party::Outside(Outside {
            number: n.into(),
            name: "ACME Corp".into(),
        })
    }

    fn answered(hold: bool, transfer: Option<&str>, caller_hangs_up: bool) -> Outcome {
        Outcome::Answered {
            ring_ms: 3_000,
            talk_ms: 12_000,
            hold: hold.then_some(HoldSpec {
                after_ms: 2_000,
                for_ms: 4_000,
            }),
            transfer: transfer.map(|t| TransferSpec {
                to: ext(t),
                ring_ms: 2_000,
                talk_ms: 5_000,
            }),
            caller_hangs_up,
        }
    }

    fn spec(from: Party, dialled: &str, to: Party, outcome: Outcome) -> CallSpec {
        CallSpec {
            from,
            dialled: dialled.into(),
            to,
            caller_call_id: "caller-leg@10.0.0.9".into(),
            outcome,
        }
    }

    fn originate_req(from: &str, exten: &str) -> OriginateRequest {
        let action = AmiMessage::action("Originate")
            .field("ActionID", "7")
            .field("Channel", format!("PJSIP/{from}"))
            .field("Exten", exten)
            .field("Context", "from-internal")
            .field("Priority", "1")
            .field("CallerID", format!("\"{exten}\" <{from}>"))
            .field("Timeout", "30000")
            .field("Async", "true")
            .field("ChannelId", "dr_0123456789abcdef01234567")
            .field(
                "Variable",
                "__CTIBRIDGE_REQUEST_ID=dr_0123456789abcdef01234567",
            )
            .build()
            .unwrap();
        OriginateRequest::parse(&action).unwrap()
    }

    /// Every kind of plan the world makes, with the extensions whose phones placed the call
    /// (they start out dialling).
    fn all_plans(m: &mut PbxModel) -> Vec<(Plan, Vec<&'static str>)> {
        let mut plans = vec![
            (
                m.call(&spec(
                    phone("101"),
                    "102",
                    phone("102"),
                    answered(false, None, true),
                )),
                vec!["101"],
            ),
            (
                m.call(&spec(
                    phone("101"),
                    "102",
                    phone("102"),
                    answered(true, None, false),
                )),
                vec!["101"],
            ),
            (
                m.call(&spec(
                    phone("101"),
                    "102",
                    phone("102"),
                    answered(false, Some("103"), false),
                )),
                vec!["101"],
            ),
            (
                m.call(&spec(
                    phone("101"),
                    "103",
                    phone("103"),
                    Outcome::Cancelled { ring_ms: 6_000 },
                )),
                vec!["101"],
            ),
            (
                m.call(&spec(phone("101"), "102", phone("102"), Outcome::Busy)),
                vec!["101"],
            ),
            (
                m.call(&spec(
                    outside("+15550100"),
                    "5551104",
                    phone("104"),
                    answered(true, None, true),
                )),
                vec![],
            ),
            (
                m.call(&spec(
                    outside("+15550100"),
                    "5551104",
                    phone("104"),
                    Outcome::Cancelled { ring_ms: 8_000 },
                )),
                vec![],
            ),
            (
                m.call(&spec(
                    phone("103"),
                    "5550142",
                    outside("5550142"),
                    answered(false, None, false),
                )),
                vec!["103"],
            ),
            (
                m.call(&spec(
                    phone("103"),
                    "5550142",
                    outside("5550142"),
                    Outcome::Busy,
                )),
                vec!["103"],
            ),
        ];
        let req = originate_req("101", "+15550100");
        let to = outside("+15550100");
        plans.push((
            m.originate(
                &req,
                Some(&ext("101")),
                &to,
                &OriginateOutcome::Connects {
                    ring_ms: 2_000,
                    then: answered(false, None, true),
                },
            ),
            vec![],
        ));
        let req = originate_req("102", "104");
        plans.push((
            m.originate(
                &req,
                Some(&ext("102")),
                &phone("104"),
                &OriginateOutcome::Connects {
                    ring_ms: 2_000,
                    then: Outcome::Busy,
                },
            ),
            vec![],
        ));
        plans.push((
            m.originate(
                &req,
                Some(&ext("102")),
                &phone("104"),
                &OriginateOutcome::Busy,
            ),
            vec![],
        ));
        plans.push((
            m.dnd_feature_code(&ext("104"), true, "fc@10.0.0.4"),
            vec!["104"],
        ));
        plans
    }

    /// What a phone is doing, as far as the plan's operations go.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum P {
        Idle,
        Dialling,
        Ringing,
        Talking,
        Held,
    }

    #[test]
    fn plans_are_well_formed() {
        let mut m = PbxModel::new(7, EPOCH);
        for (plan, dialling) in all_plans(&mut m) {
            let label = &plan.label;
            // Time only moves forward.
            assert!(
                plan.steps.windows(2).all(|w| w[0].at <= w[1].at),
                "{label}: steps out of order"
            );
            // Channels: Newchannel first, Hangup last, one call id (Linkedid = the first
            // channel's Uniqueid), SIPCALLID as set by VarSet.
            let mut alive: HashSet<String> = HashSet::new();
            let mut ended: HashSet<String> = HashSet::new();
            let mut first_uid: Option<String> = None;
            let mut call_ids: HashMap<String, String> = HashMap::new();
            let mut dials: Vec<(String, String)> = Vec::new();
            let mut bridged: HashSet<(String, String)> = HashSet::new();
            let mut bridges: HashSet<String> = HashSet::new();
            for msg in plan.events() {
                let ev = msg.event_name().unwrap();
                let uid = msg.get("Uniqueid").unwrap_or("").to_owned();
                if ev == "OriginateResponse" {
                    continue;
                }
                if !uid.is_empty() {
                    assert!(
                        !ended.contains(&uid),
                        "{label}: {ev} after the Hangup of {uid}"
                    );
                    if ev == "Newchannel" {
                        assert!(alive.insert(uid.clone()), "{label}: second Newchannel");
                        first_uid.get_or_insert(uid.clone());
                    } else {
                        assert!(
                            alive.contains(&uid),
                            "{label}: {ev} before Newchannel of {uid}"
                        );
                    }
                    assert_eq!(
                        msg.get("Linkedid"),
                        first_uid.as_deref(),
                        "{label}: {ev} of {uid} in another call"
                    );
                    let chan_var = msg
                        .get_all("ChanVariable")
                        .find_map(|v| v.strip_prefix("SIPCALLID="))
                        .unwrap()
                        .to_owned();
                    if ev == "VarSet" && msg.get("Variable") == Some("SIPCALLID") {
                        assert_eq!(Some(chan_var.as_str()), msg.get("Value"));
                        call_ids.insert(msg.get("Channel").unwrap().to_owned(), chan_var);
                    } else if let Some(known) = call_ids.get(msg.get("Channel").unwrap()) {
                        assert_eq!(&chan_var, known, "{label}: {ev} lost SIPCALLID");
                    }
                }
                let dest = msg.get("DestUniqueid").unwrap_or("").to_owned();
                match ev {
                    "Hangup" => {
                        assert!(alive.remove(&uid));
                        ended.insert(uid);
                    }
                    "DialBegin" => dials.push((uid, dest)),
                    "DialEnd" => {
                        let pos = dials.iter().position(|d| *d == (uid.clone(), dest.clone()));
                        assert!(pos.is_some(), "{label}: DialEnd without DialBegin");
                        dials.remove(pos.unwrap());
                    }
                    "BridgeCreate" => {
                        bridges.insert(msg.get("BridgeUniqueid").unwrap().to_owned());
                    }
                    "BridgeEnter" => {
                        let b = msg.get("BridgeUniqueid").unwrap().to_owned();
                        assert!(bridges.contains(&b), "{label}: enter before create");
                        assert!(bridged.insert((b, uid)));
                    }
                    "BridgeLeave" => {
                        let b = msg.get("BridgeUniqueid").unwrap().to_owned();
                        assert!(bridged.remove(&(b, uid)), "{label}: leave without enter");
                    }
                    "BridgeDestroy" => {
                        let b = msg.get("BridgeUniqueid").unwrap();
                        assert!(
                            !bridged.iter().any(|(x, _)| x == b),
                            "{label}: destroyed with members"
                        );
                        assert!(bridges.remove(b));
                    }
                    _ => {}
                }
            }
            assert!(alive.is_empty(), "{label}: channels left up: {alive:?}");
            assert!(dials.is_empty(), "{label}: dials without end: {dials:?}");
            assert!(
                bridged.is_empty() && bridges.is_empty(),
                "{label}: bridges left"
            );
            // Phones: every operation fits the phone's state, and all are idle at the end.
            let mut phones: HashMap<String, P> = dialling
                .iter()
                .map(|e| ((*e).to_owned(), P::Dialling))
                .collect();
            for step in &plan.steps {
                let Action::Phone { ext, op } = &step.action else {
                    continue;
                };
                let p = phones.entry(ext.clone()).or_insert(P::Idle);
                *p = match (*p, op) {
                    (P::Idle, PhoneOp::Ring { sip_call_id, .. }) => {
                        // The phone reports the Call-ID its leg carries in SIPCALLID.
                        assert!(
                            call_ids
                                .iter()
                                .any(|(chan, id)| chan.starts_with(&format!("PJSIP/{ext}-"))
                                    && id == sip_call_id),
                            "{label}: {ext} rings with a Call-ID no leg of it has"
                        );
                        P::Ringing
                    }
                    (P::Ringing, PhoneOp::Answer) => P::Talking,
                    (P::Dialling, PhoneOp::FarEndAnswered) => P::Talking,
                    (P::Talking, PhoneOp::Hold(true)) => P::Held,
                    (P::Held, PhoneOp::Hold(false)) => P::Talking,
                    (P::Dialling | P::Ringing | P::Talking, PhoneOp::HangUp) => P::Idle,
                    (P::Dialling | P::Ringing | P::Talking, PhoneOp::FarEndHungUp) => P::Idle,
                    (state, op) => panic!("{label}: {op:?} on {ext} while {state:?}"),
                };
            }
            assert!(
                phones.values().all(|p| *p == P::Idle),
                "{label}: phones left in a call: {phones:?}"
            );
            // The extensions involved are exactly the phones the plan touches.
            let touched: HashSet<&str> = plan
                .steps
                .iter()
                .filter_map(|s| match &s.action {
                    Action::Phone { ext, .. } => Some(ext.as_str()),
                    _ => None,
                })
                .collect();
            for t in touched {
                assert!(
                    plan.involved.iter().any(|i| i == t),
                    "{label}: {t} not reserved"
                );
            }
        }
    }

    /// The plans through the real correlator: the records are what the calls were.
    fn records(plan: &Plan) -> Vec<CallRecord> {
        let cfg = CorrelatorConfig {
            phones: ["101", "102", "103", "104"]
                .iter()
                .map(|e| PhoneIdentity {
                    extension: (*e).to_owned(),
                    ..PhoneIdentity::default()
                })
                .collect(),
            ..CorrelatorConfig::default()
        };
        let mut c = Correlator::new(cfg);
        let t0: DateTime<Utc> = DateTime::from_timestamp(EPOCH, 0).unwrap();
        let mut out = Vec::new();
        for step in &plan.steps {
            if let Action::Ami(msg) = &step.action {
                let t = t0 + TimeDelta::from_std(step.at).unwrap();
                out.extend(c.handle(&JournalEntry {
                    t,
                    input: Input::Ami {
                        pbx: Arc::from("default"),
                        msg: msg.clone(),
                    },
                }));
            }
        }
        out.extend(c.tick(t0 + TimeDelta::hours(1)));
        out.into_iter()
            .filter_map(|o| match o {
                Output::CallCompleted(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn one_record(plan: &Plan) -> CallRecord {
        let mut r = records(plan);
        assert_eq!(r.len(), 1, "{}: {r:#?}", plan.label);
        r.remove(0)
    }

    #[test]
    fn plans_make_the_records_of_the_calls_they_are() {
        let mut m = PbxModel::new(7, EPOCH);
        let plans = all_plans(&mut m);
        let rec = |i: usize| one_record(&plans[i].0);

        let r = rec(0);
        assert_eq!(r.direction, Direction::Internal);
        assert_eq!(r.disposition, Disposition::Answered);
        assert_eq!(r.answered_by.as_deref(), Some("102"));
        assert_eq!(r.from.extension.as_deref(), Some("101"));
        assert_eq!(r.to.number.as_deref(), Some("102"));
        assert!(
            (r.ring_s - 3.0).abs() < 0.5 && (r.talk_s - 12.0).abs() < 0.5,
            "{r:?}"
        );
        let sip: Vec<_> = r
            .legs
            .iter()
            .filter_map(|l| l.sip_call_id.clone())
            .collect();
        assert_eq!(sip.len(), 2);
        assert!(sip.contains(&"caller-leg@10.0.0.9".to_owned()));

        let r = rec(1);
        assert!((r.hold_s - 4.0).abs() < 0.5, "hold {}", r.hold_s);
        assert!(
            (r.talk_s - 16.0).abs() < 0.5,
            "talk includes hold: {}",
            r.talk_s
        );

        let r = rec(2);
        assert_eq!(r.transfers.len(), 1, "{r:?}");
        let t = &r.transfers[0];
        assert_eq!(
            (t.kind.as_str(), t.by.as_deref(), t.to.as_deref()),
            ("blind", Some("102"), Some("103"))
        );
        assert_eq!(r.disposition, Disposition::Answered);

        let r = rec(3);
        assert_eq!(r.disposition, Disposition::NoAnswer);
        assert!(r.missed);

        let r = rec(4);
        assert_eq!(r.disposition, Disposition::Busy);
        assert!(!r.missed);

        let r = rec(5);
        assert_eq!(r.direction, Direction::Inbound);
        assert_eq!(r.from.number.as_deref(), Some("+15550100"));
        assert_eq!(r.to.number.as_deref(), Some("5551104"));
        assert_eq!(r.answered_by.as_deref(), Some("104"));
        assert!(r.hold_s > 3.0);

        let r = rec(6);
        assert_eq!(
            (r.direction, r.disposition),
            (Direction::Inbound, Disposition::NoAnswer)
        );
        assert!(r.missed);

        let r = rec(7);
        assert_eq!(
            (r.direction, r.disposition),
            (Direction::Outbound, Disposition::Answered)
        );
        assert_eq!(r.answered_by.as_deref(), Some("5550142"));

        let r = rec(8);
        assert_eq!(
            (r.direction, r.disposition),
            (Direction::Outbound, Disposition::Busy)
        );

        let r = rec(9);
        assert_eq!(
            r.dial_request_id.as_deref(),
            Some("dr_0123456789abcdef01234567")
        );
        assert_eq!(r.from.extension.as_deref(), Some("101"));
        assert_eq!(r.to.number.as_deref(), Some("+15550100"));
        assert_eq!(
            (r.direction, r.disposition),
            (Direction::Outbound, Disposition::Answered)
        );

        let r = rec(10);
        assert_eq!(
            r.dial_request_id.as_deref(),
            Some("dr_0123456789abcdef01234567")
        );
        assert_eq!(r.disposition, Disposition::Busy);

        // The from-phone was busy: the click-to-call failed, nobody missed a call.
        let r = rec(11);
        assert_eq!(
            r.dial_request_id.as_deref(),
            Some("dr_0123456789abcdef01234567")
        );
        assert_eq!(r.disposition, Disposition::Failed);
        assert!(!r.missed);

        // A feature code is no conversation.
        assert!(records(&plans[12].0).is_empty());
    }

    #[test]
    fn a_transferer_is_free_before_the_call_ends() {
        let mut m = PbxModel::new(7, EPOCH);
        let plan = m.call(&spec(
            phone("101"),
            "102",
            phone("102"),
            answered(false, Some("103"), true),
        ));
        let done = plan.phones_done_at();
        let last = plan.steps.len() - 1;
        assert!(
            done["102"] < done["101"],
            "the transferer leaves first: {done:?}"
        );
        assert!(done["101"] <= last && done["103"] <= last);
        assert_eq!(
            plan.steps[done["102"]].action,
            Action::Phone {
                ext: "102".into(),
                op: PhoneOp::HangUp,
            }
        );
    }

    #[test]
    fn originate_events_carry_the_request() {
        let mut m = PbxModel::new(1, EPOCH);
        let req = originate_req("101", "102");
        let plan = m.originate(
            &req,
            Some(&ext("101")),
            &phone("102"),
            &OriginateOutcome::Connects {
                ring_ms: 1_000,
                then: answered(false, None, true),
            },
        );
        let events: Vec<&AmiMessage> = plan.events().collect();
        let first = events[0];
        assert_eq!(first.event_name(), Some("Newchannel"));
        assert_eq!(first.get("Uniqueid"), Some("dr_0123456789abcdef01234567"));
        assert_eq!(events[1].get("Variable"), Some("__CTIBRIDGE_REQUEST_ID"));
        let resp = events
            .iter()
            .find(|m| m.event_name() == Some("OriginateResponse"))
            .unwrap();
        assert_eq!(resp.get("ActionID"), Some("7"));
        assert_eq!(resp.get("Response"), Some("Success"));
        assert_eq!(resp.get("Reason"), Some("4"));
        // The dialled leg inherits the request id.
        let callee_new = events
            .iter()
            .find(|m| {
                m.event_name() == Some("Newchannel")
                    && m.get("Channel")
                        .is_some_and(|c| c.starts_with("PJSIP/102-"))
            })
            .unwrap();
        assert!(callee_new
            .get_all("ChanVariable")
            .any(|v| v == "CTIBRIDGE_REQUEST_ID=dr_0123456789abcdef01234567"));
        // The from-phone rings with the Originate's caller ID, then its user answers.
        let ops: Vec<&PhoneOp> = plan
            .steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Phone { ext, op } if ext == "101" => Some(op),
                _ => None,
            })
            .collect();
        assert!(matches!(ops[0], PhoneOp::Ring { from, .. } if from == "101"));
        assert_eq!(ops[1], &PhoneOp::Answer);
        assert_eq!(ops.last(), Some(&&PhoneOp::HangUp));

        let refused = m.originate(&req, None, &phone("102"), &OriginateOutcome::NoChannel);
        let only: Vec<_> = refused.events().collect();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].get("Response"), Some("Failure"));
        assert_eq!(only[0].get("Reason"), Some("0"));
    }

    #[test]
    fn same_seed_same_plans() {
        let raw = |seed| {
            let mut m = PbxModel::new(seed, EPOCH);
            all_plans(&mut m)
                .into_iter()
                .flat_map(|(p, _)| {
                    p.events()
                        .map(|e| e.raw_str().to_owned())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(raw(3), raw(3));
        assert_ne!(raw(3), raw(4), "Call-IDs and bridge ids come from the seed");
    }

    #[test]
    fn ids_are_unique_across_plans() {
        let mut m = PbxModel::new(9, EPOCH);
        let mut uids = HashSet::new();
        let mut names = HashSet::new();
        for (plan, _) in all_plans(&mut m) {
            for e in plan
                .events()
                .filter(|e| e.event_name() == Some("Newchannel"))
            {
                assert!(
                    uids.insert(e.get("Uniqueid").unwrap().to_owned())
                        || e.get("Uniqueid").unwrap().starts_with("dr_")
                );
                assert!(names.insert(e.get("Channel").unwrap().to_owned()));
            }
        }
    }

    #[test]
    fn originate_parsing() {
        let req = originate_req("101", "+15550100");
        assert_eq!(req.endpoint(), "101");
        assert_eq!(req.caller_id_name, "+15550100");
        assert_eq!(req.caller_id_num, "101");
        assert_eq!(req.action_id.as_deref(), Some("7"));
        assert_eq!(
            req.variables,
            [(
                "__CTIBRIDGE_REQUEST_ID".to_owned(),
                "dr_0123456789abcdef01234567".to_owned()
            )]
        );
        let bad = AmiMessage::action("Originate")
            .field("Exten", "1")
            .build()
            .unwrap();
        assert_eq!(OriginateRequest::parse(&bad), Err("Channel not specified"));
        assert_eq!(parse_caller_id("102"), ("<unknown>".into(), "102".into()));
        assert_eq!(parse_caller_id("Bob <102>"), ("Bob".into(), "102".into()));
        assert_eq!(
            parse_caller_id(""),
            ("<unknown>".into(), "<unknown>".into())
        );
    }
}
