//! Recorded AMI traffic of real calls as replayable, timed scenarios.
//!
//! The captures in `assets/demo/` (copied unchanged from the research fixtures) are the exact
//! bytes one AMI session received from a real Asterisk 22 while SIP phones made a call, plus a
//! `.timing` file listing every socket read. [`Scenario::from_capture`] turns such a pair into
//! the list of events with their receive times, so the simulated server
//! ([`super::ami_server::AmiServer::play`]) can replay a real call at its real pace — real
//! field order, duplicated keys, `VarSet` noise and all — instead of a hand-written idea of one.
//!
//! Replaying the same capture twice would make ctibridge see the *same* call twice (same
//! `Uniqueid`/`Linkedid`, same channel names). [`Scenario::instantiate`] therefore renames the
//! call's identifiers deterministically per "generation", so every replay looks like a new call
//! while the relations between legs (which `DestUniqueid` belongs to which `Linkedid`, …) are
//! kept intact. The renaming rules are public ([`instantiate_id`],
//! [`instantiate_channel_names`], [`instantiate_call_id`]) so that other simulators (e.g. a
//! phone simulator reporting the same calls) can produce matching identifiers.
//!
//! What is kept of a capture: every *event*, in wire order. Dropped: the responses (the
//! capture session's own login and actions, which a replay has not sent), the capture
//! session's `FullyBooted` (the simulated server sends its own after each login; a replayed one
//! would look like a second boot) and security events with `Service: AMI` (the capture
//! session's own login). Security events of other services (PJSIP digest `ChallengeSent` /
//! `SuccessfulAuth`) are kept: they are part of what the PBX reported while the call happened.
//! `OriginateResponse` is an event (it merely carries `Response:`) and is kept.

use crate::ami::{AmiCodec, AmiFrame, AmiMessage, MessageKind};
use bytes::BytesMut;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::codec::Decoder;

/// Seconds added to a `Uniqueid`'s epoch part per generation (see [`instantiate_id`]).
pub const EPOCH_STEP_PER_GENERATION: u64 = 1000;

/// Added to a channel name's 8-hex-digit counter per generation (see
/// [`instantiate_channel_names`]). Asterisk numbers channels from 0 per run and a capture holds
/// a handful, so generations do not overlap as long as a capture has fewer than 4096 channels.
pub const CHANNEL_STEP_PER_GENERATION: u64 = 0x1000;

/// Spacing used when a capture has no timing file.
pub const UNTIMED_SPACING: Duration = Duration::from_millis(10);

/// The channel variable that the recorded PBX filled with each leg's SIP Call-ID (see the
/// fixtures README); its values are renamed per generation like the other identifiers.
pub const CALL_ID_VARIABLE: &str = "SIPCALLID";

/// Why a capture could not be turned into a [`Scenario`].
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timing file line {line}: {reason}")]
    Timing { line: usize, reason: String },
    #[error("byte {offset} of the capture is not covered by any read of the timing file")]
    Uncovered { offset: usize },
    #[error("decoding the capture failed: {0}")]
    Decode(#[source] std::io::Error),
}

/// One event of a scenario and when it arrived, relative to the scenario's first event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedMessage {
    /// Time since the scenario's first event.
    pub at: Duration,
    pub msg: AmiMessage,
}

/// The events of one recorded call (or registration burst), in wire order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    pub name: String,
    pub messages: Vec<TimedMessage>,
}

/// One `rx` line of a timing file.
#[derive(Clone, Copy, Debug)]
struct Read {
    secs: f64,
    offset: usize,
    len: usize,
}

impl Scenario {
    /// Builds a scenario from a capture (`NAME.ami`, starting with the banner) and its timing
    /// file (`NAME.ami.timing`). Each kept message is timed by the read that delivered its first
    /// byte; `at` is relative to the first kept message (see the module docs for what is kept).
    pub fn from_capture(name: &str, ami: &[u8], timing: &str) -> Result<Scenario, FixtureError> {
        Self::build(name, ami, Some(timing))
    }

    /// Like [`Scenario::from_capture`] without a timing file: events are
    /// [`UNTIMED_SPACING`] apart.
    pub fn from_untimed_capture(name: &str, ami: &[u8]) -> Result<Scenario, FixtureError> {
        Self::build(name, ami, None)
    }

    fn build(name: &str, ami: &[u8], timing: Option<&str>) -> Result<Scenario, FixtureError> {
        let reads = timing.map(parse_timing).transpose()?;
        let kept = decode_events(ami)?;
        let mut messages = Vec::with_capacity(kept.len());
        let mut base: Option<f64> = None;
        for (i, (offset, msg)) in kept.into_iter().enumerate() {
            let at = match &reads {
                Some(reads) => {
                    let secs =
                        receive_time(reads, offset).ok_or(FixtureError::Uncovered { offset })?;
                    let base = *base.get_or_insert(secs);
                    // Reads are listed in stream order, so this is never negative for a
                    // well-formed file; clamp rather than panic on a hand-edited one.
                    Duration::from_secs_f64((secs - base).max(0.0))
                }
                None => UNTIMED_SPACING * i as u32,
            };
            messages.push(TimedMessage { at, msg });
        }
        Ok(Scenario {
            name: name.to_owned(),
            messages,
        })
    }

    /// Time of the last event.
    pub fn duration(&self) -> Duration {
        self.messages.last().map(|m| m.at).unwrap_or_default()
    }

    /// A copy in which the call's identifiers are renamed for `generation`, so that each replay
    /// looks like a new call to ctibridge. Renamed, in keys and values alike:
    /// - every value of a `*Uniqueid` / `*Linkedid` key (`Uniqueid`, `DestLinkedid`,
    ///   `TransfererUniqueid`, `BridgeUniqueid`, CEL's `UniqueID`, …), wherever that value
    ///   occurs as a whole token (e.g. inside CEL `Extra` JSON), by [`instantiate_id`];
    /// - the SIP Call-IDs found in `SIPCALLID` channel variables and `VarSet`s, wherever they
    ///   occur, by [`instantiate_call_id`];
    /// - the `-%08x` counter of channel names (`PJSIP/101-0000000a`,
    ///   `Local/102@internal-00000001;1`), by [`instantiate_channel_names`].
    ///
    /// The same source identifier always maps to the same new one, so the pairing of legs is
    /// kept; generation 0 is the capture unchanged. Use a generation that is unique per replay
    /// across *all* scenarios (e.g. one global counter): scenarios recorded in different
    /// Asterisk runs reuse channel counters, which only differing generations tell apart.
    pub fn instantiate(&self, generation: u64) -> Vec<TimedMessage> {
        if generation == 0 {
            return self.messages.clone();
        }
        let renamer = Renamer::new(&self.messages, generation);
        self.messages
            .iter()
            .map(|t| TimedMessage {
                at: t.at,
                msg: renamer.apply(&t.msg),
            })
            .collect()
    }
}

/// Decodes a capture and returns the kept events with the offset of their first byte.
fn decode_events(ami: &[u8]) -> Result<Vec<(usize, AmiMessage)>, FixtureError> {
    let total = ami.len();
    let mut codec = AmiCodec::new();
    let mut buf = BytesMut::from(ami);
    let mut kept = Vec::new();
    loop {
        let frame = match codec.decode(&mut buf).map_err(FixtureError::Decode)? {
            Some(frame) => frame,
            None => match codec.decode_eof(&mut buf).map_err(FixtureError::Decode)? {
                Some(frame) => frame,
                None => break,
            },
        };
        let end = total - buf.len();
        match frame {
            AmiFrame::Message(msg) => {
                // The decoder drops stray blank lines before a message, so the message's raw
                // bytes are exactly the ones before `end`.
                let start = end.saturating_sub(msg.raw().len());
                if is_replayable(&msg) {
                    kept.push((start, msg));
                }
            }
            AmiFrame::Banner(_) => {}
            AmiFrame::Malformed(e) => {
                tracing::debug!(error = %e, "capture: malformed frame skipped")
            }
        }
    }
    Ok(kept)
}

/// Whether a captured message belongs in a replay (module docs explain the choice).
fn is_replayable(msg: &AmiMessage) -> bool {
    if msg.kind() != MessageKind::Event {
        return false;
    }
    let event = msg.event_name().unwrap_or("");
    if event.eq_ignore_ascii_case("FullyBooted") {
        return false;
    }
    let security = msg.get("Privilege").is_some_and(|p| {
        p.split(',')
            .any(|c| c.trim().eq_ignore_ascii_case("security"))
    });
    !(security
        && msg
            .get("Service")
            .is_some_and(|s| s.eq_ignore_ascii_case("AMI")))
}

/// Parses the `rx` lines of a timing file (`seconds rx|tx bytes offset`; `#` lines are comments).
fn parse_timing(text: &str) -> Result<Vec<Read>, FixtureError> {
    let mut reads = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| FixtureError::Timing {
            line: i + 1,
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [secs, dir, len, offset] = parts[..] else {
            return Err(bad("expected `seconds rx|tx bytes offset`"));
        };
        if dir != "rx" {
            continue; // what the capture session sent, not what it received
        }
        let secs: f64 = secs.parse().map_err(|_| bad("bad seconds"))?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(bad("seconds must be finite and not negative"));
        }
        let len = len.parse().map_err(|_| bad("bad byte count"))?;
        let offset = offset.parse().map_err(|_| bad("bad offset"))?;
        reads.push(Read { secs, offset, len });
    }
    reads.sort_by_key(|r| r.offset);
    Ok(reads)
}

/// Time of the read that delivered byte `offset`.
fn receive_time(reads: &[Read], offset: usize) -> Option<f64> {
    let idx = reads.partition_point(|r| r.offset <= offset);
    let read = reads.get(idx.checked_sub(1)?)?;
    (offset < read.offset + read.len).then_some(read.secs)
}

/// Renames one `Uniqueid`/`Linkedid`-like identifier for `generation`.
///
/// Asterisk's form `epoch.seq` (or `systemname-epoch.seq`) becomes
/// `<epoch + generation × EPOCH_STEP_PER_GENERATION>.seq`, so it still looks like an Asterisk
/// id and still sorts by time. Anything else (an Originate `ChannelId` such as
/// `c2c-101-102-a`, a bridge UUID) gets the suffix `-g<generation>`. Generation 0 leaves the
/// id unchanged.
pub fn instantiate_id(id: &str, generation: u64) -> String {
    if generation == 0 || id.is_empty() {
        return id.to_owned();
    }
    let (prefix, tail) = match id.rfind('-') {
        Some(dash) => id.split_at(dash + 1),
        None => ("", id),
    };
    if let Some((epoch, seq)) = tail.split_once('.') {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(epoch) && digits(seq) {
            if let Ok(epoch) = epoch.parse::<u64>() {
                let shifted =
                    epoch.saturating_add(generation.saturating_mul(EPOCH_STEP_PER_GENERATION));
                return format!("{prefix}{shifted}.{seq}");
            }
        }
    }
    format!("{id}-g{generation}")
}

/// Renames one SIP Call-ID for `generation`: `g<generation>-<call-id>` (the `@host` part, if
/// any, stays at the end). Generation 0 leaves it unchanged.
pub fn instantiate_call_id(call_id: &str, generation: u64) -> String {
    if generation == 0 || call_id.is_empty() {
        return call_id.to_owned();
    }
    format!("g{generation}-{call_id}")
}

/// Renames the counters of channel names found anywhere in `text`: a `-` plus exactly 8 hex
/// digits, not followed by a letter or digit, in a token containing `/` (`PJSIP/101-0000000a`,
/// `Local/102@internal-00000001;1`, `ChanVariable(PJSIP/101-0000000a)`). The counter becomes
/// `counter + generation × CHANNEL_STEP_PER_GENERATION` (mod 2³², lowercase hex as Asterisk
/// writes it). UUIDs (groups of 4 and 12 digits after their dashes) do not match.
pub fn instantiate_channel_names(text: &str, generation: u64) -> Cow<'_, str> {
    if generation == 0 || !text.contains('/') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut token_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_token_delimiter(b) {
            token_start = i + 1;
        } else if b == b'-'
            && i + 9 <= bytes.len()
            && bytes[i + 1..i + 9].iter().all(u8::is_ascii_hexdigit)
            && bytes
                .get(i + 9)
                .map_or(true, |c| !c.is_ascii_alphanumeric())
            && bytes[token_start..i].contains(&b'/')
        {
            // All bytes involved are ASCII, so these slices are on char boundaries.
            let counter = u32::from_str_radix(&text[i + 1..i + 9], 16).unwrap_or(0);
            let renamed = (u64::from(counter)
                + generation.wrapping_mul(CHANNEL_STEP_PER_GENERATION))
                & 0xffff_ffff;
            out.push_str(&text[copied..i + 1]);
            out.push_str(&format!("{renamed:08x}"));
            copied = i + 9;
            i += 9;
            continue;
        }
        i += 1;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Bytes that end a token when looking for channel names inside a value.
fn is_token_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'"' | b'\'' | b',' | b'&' | b'=' | b'(' | b'<' | b'>' | b'[' | b'{'
        )
}

/// Characters that may continue an identifier: a match must not be glued to one of them
/// (so `1795349909.2` is not found inside `1795349909.20`).
fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@')
}

/// The renaming of one scenario for one generation.
struct Renamer {
    generation: u64,
    /// Source token → new token, longest source first (so a longer id wins over a prefix).
    tokens: Vec<(String, String)>,
}

impl Renamer {
    fn new(messages: &[TimedMessage], generation: u64) -> Renamer {
        let mut ids = BTreeSet::new();
        let mut call_ids = BTreeSet::new();
        for t in messages {
            let msg = &t.msg;
            for (key, value) in msg.iter() {
                if value.is_empty() {
                    continue;
                }
                let key = key.to_ascii_lowercase();
                if key.ends_with("uniqueid") || key.ends_with("linkedid") {
                    ids.insert(value.to_owned());
                } else if key.contains("chanvariable") {
                    if let Some((name, call_id)) = value.split_once('=') {
                        if name.eq_ignore_ascii_case(CALL_ID_VARIABLE) && !call_id.is_empty() {
                            call_ids.insert(call_id.to_owned());
                        }
                    }
                }
            }
            let is_varset = msg
                .event_name()
                .is_some_and(|e| e.eq_ignore_ascii_case("VarSet"));
            if is_varset
                && msg
                    .get("Variable")
                    .is_some_and(|v| v.eq_ignore_ascii_case(CALL_ID_VARIABLE))
            {
                if let Some(call_id) = msg.get("Value").filter(|v| !v.is_empty()) {
                    call_ids.insert(call_id.to_owned());
                }
            }
        }
        let mut tokens: Vec<(String, String)> = ids
            .into_iter()
            .map(|id| {
                let new = instantiate_id(&id, generation);
                (id, new)
            })
            .chain(call_ids.into_iter().map(|c| {
                let new = instantiate_call_id(&c, generation);
                (c, new)
            }))
            .collect();
        tokens.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        tokens.dedup_by(|a, b| a.0 == b.0);
        Renamer { generation, tokens }
    }

    /// The message with every identifier renamed; the original (byte-exact) when nothing is.
    fn apply(&self, msg: &AmiMessage) -> AmiMessage {
        let mut changed = false;
        let mut builder = AmiMessage::builder();
        for (key, value) in msg.iter() {
            let new_key = self.rename(key);
            let new_value = self.rename(value);
            changed |= matches!(new_key, Cow::Owned(_)) || matches!(new_value, Cow::Owned(_));
            builder = builder.field(new_key, new_value);
        }
        if !changed {
            return msg.clone();
        }
        // Renaming never introduces CR, LF or ": ", so building cannot fail; fall back to the
        // original rather than panic if it ever did.
        builder.build().unwrap_or_else(|_| msg.clone())
    }

    fn rename<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let replaced = self.replace_tokens(text);
        match instantiate_channel_names(&replaced, self.generation) {
            Cow::Borrowed(_) => replaced,
            Cow::Owned(s) => Cow::Owned(s),
        }
    }

    /// Replaces every whole-token occurrence of a known identifier.
    fn replace_tokens<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self
            .tokens
            .iter()
            .any(|(from, _)| text.contains(from.as_str()))
        {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 16);
        let mut rest = text;
        let mut prev: Option<char> = None;
        'scan: while let Some(c) = rest.chars().next() {
            if prev.map_or(true, |p| !is_id_char(p)) {
                for (from, to) in &self.tokens {
                    if let Some(after) = rest.strip_prefix(from.as_str()) {
                        if after.chars().next().map_or(true, |n| !is_id_char(n)) {
                            out.push_str(to);
                            prev = from.chars().last();
                            rest = after;
                            continue 'scan;
                        }
                    }
                }
            }
            out.push(c);
            prev = Some(c);
            rest = &rest[c.len_utf8()..];
        }
        if out == text {
            Cow::Borrowed(text)
        } else {
            Cow::Owned(out)
        }
    }
}

macro_rules! embedded {
    ($($name:literal),* $(,)?) => {
        &[$((
            $name,
            include_bytes!(concat!("../../assets/demo/", $name, ".ami")),
            include_str!(concat!("../../assets/demo/", $name, ".ami.timing")),
        )),*]
    };
}

/// The captures compiled into the binary: (name, `.ami` bytes, `.ami.timing` text).
const EMBEDDED: &[(&str, &[u8], &str)] = embedded!(
    "answered_caller_hangup",
    "busy_486",
    "missed_caller_cancel",
    "hold_unhold",
    "blind_transfer",
    "ring_group",
    "trunk_inbound",
    "originate_click2call",
    "register",
);

/// Names of the embedded scenarios, in the order [`embedded_scenarios`] returns them.
pub fn embedded_scenario_names() -> impl Iterator<Item = &'static str> {
    EMBEDDED.iter().map(|(name, _, _)| *name)
}

/// All scenarios embedded from `assets/demo/`, so `ctibridge demo` needs no files on disk.
/// (Tests check that every one decodes; one that did not would be logged and left out rather
/// than take the demo down.)
pub fn embedded_scenarios() -> Vec<Scenario> {
    EMBEDDED
        .iter()
        .filter_map(|(name, ami, timing)| match Scenario::from_capture(name, ami, timing) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(scenario = name, error = %e, "embedded capture does not decode");
                None
            }
        })
        .collect()
}

/// One embedded scenario by name.
pub fn embedded_scenario(name: &str) -> Option<Scenario> {
    let (name, ami, timing) = EMBEDDED.iter().find(|(n, _, _)| *n == name)?;
    Scenario::from_capture(name, ami, timing).ok()
}

/// Loads a capture from disk: `path` is the `NAME.ami` file; `NAME.ami.timing` beside it is
/// used when it exists (otherwise events are [`UNTIMED_SPACING`] apart). The scenario is named
/// after the file without its `.ami` extension.
pub fn load_capture_file(path: &Path) -> Result<Scenario, FixtureError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| FixtureError::Io { path, source }
    };
    let ami = std::fs::read(path).map_err(io(path))?;
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = file_name.strip_suffix(".ami").unwrap_or(&file_name);
    let timing_path = path.with_file_name(format!("{file_name}.timing"));
    match std::fs::read_to_string(&timing_path) {
        Ok(timing) => Scenario::from_capture(name, &ami, &timing),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Scenario::from_untimed_capture(name, &ami)
        }
        Err(e) => Err(io(&timing_path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    fn id_values(messages: &[TimedMessage]) -> Vec<String> {
        messages
            .iter()
            .flat_map(|t| {
                t.msg
                    .iter()
                    .filter(|(k, v)| {
                        let k = k.to_ascii_lowercase();
                        !v.is_empty() && (k.ends_with("uniqueid") || k.ends_with("linkedid"))
                    })
                    .map(|(_, v)| v.to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn every_embedded_scenario_loads() {
        let scenarios = embedded_scenarios();
        assert_eq!(scenarios.len(), EMBEDDED.len());
        for s in &scenarios {
            assert!(!s.messages.is_empty(), "{} has no events", s.name);
            assert_eq!(s.messages[0].at, Duration::ZERO, "{}", s.name);
            assert!(
                s.messages.windows(2).all(|w| w[0].at <= w[1].at),
                "{}: times go backwards",
                s.name
            );
            for t in &s.messages {
                assert_eq!(t.msg.kind(), MessageKind::Event, "{}", s.name);
                assert_ne!(t.msg.event_name(), Some("FullyBooted"));
                assert_ne!(t.msg.get("Service"), Some("AMI"));
            }
        }
        let register = embedded_scenario("register").unwrap();
        let names: Vec<_> = register
            .messages
            .iter()
            .filter_map(|t| t.msg.event_name())
            .collect();
        assert_eq!(names.iter().filter(|n| **n == "PeerStatus").count(), 3);
        // PJSIP digest authentication is part of the scenario and is kept.
        assert!(names.contains(&"ChallengeSent"));
    }

    #[test]
    fn answered_call_has_the_call_events_in_order_and_real_timing() {
        let s = embedded_scenario("answered_caller_hangup").unwrap();
        let names: Vec<&str> = s
            .messages
            .iter()
            .filter_map(|t| t.msg.event_name())
            .collect();
        let pos = |name: &str| names.iter().position(|n| *n == name).unwrap();
        let last = |name: &str| names.iter().rposition(|n| *n == name).unwrap();
        assert!(pos("Newchannel") < pos("DialBegin"));
        assert!(pos("DialBegin") < pos("BridgeEnter"));
        assert!(last("BridgeEnter") < pos("Hangup"));
        assert_eq!(names.iter().filter(|n| **n == "Hangup").count(), 2);
        // The call lasted ~10 s (ring ~2 s, talk ~8 s): the capture's pace is kept.
        let hangup = &s.messages[pos("Hangup")];
        assert!(hangup.at > Duration::from_secs(8), "{:?}", hangup.at);
        assert!(s.duration() < Duration::from_secs(30));
        // The replay keeps the capture's exact bytes.
        assert!(s.messages[0]
            .msg
            .raw_str()
            .starts_with("Event: ChallengeSent\r\n"));
    }

    #[test]
    fn timing_uses_the_read_that_delivered_the_first_byte() {
        let ami = b"Asterisk Call Manager/11.0.0\r\nEvent: A\r\n\r\nEvent: B\r\nX: 1\r\n\r\nEvent: C\r\n\r\n";
        // Banner (30 bytes) + A (12) in the first read; B (18) is split across reads 2 and 3.
        let timing = "# t0 wall clock 1\n0.1\trx\t42\t0\n0.5\trx\t10\t42\n0.9\trx\t20\t52\n";
        let s = Scenario::from_capture("t", ami, timing).unwrap();
        let at: Vec<_> = s.messages.iter().map(|t| t.at).collect();
        assert_eq!(at[0], Duration::ZERO);
        assert!((at[1].as_secs_f64() - 0.4).abs() < 1e-9);
        assert!((at[2].as_secs_f64() - 0.8).abs() < 1e-9);
        let bad = Scenario::from_capture("t", ami, "0.1 rx 42 0\n");
        assert!(matches!(bad, Err(FixtureError::Uncovered { offset: 42 })));
        let bad = Scenario::from_capture("t", ami, "0.1 rx x 0\n");
        assert!(matches!(bad, Err(FixtureError::Timing { line: 1, .. })));
    }

    #[test]
    fn instantiate_renames_ids_consistently() {
        for s in embedded_scenarios() {
            let g0 = s.instantiate(0);
            let g1 = s.instantiate(1);
            assert_eq!(g0, s.messages, "{}: generation 0 is the capture", s.name);
            assert_eq!(g1.len(), s.messages.len());
            let before = id_values(&s.messages);
            let after = id_values(&g1);
            assert_eq!(before.len(), after.len(), "{}", s.name);
            let mut mapping = BTreeMap::new();
            for (b, a) in before.iter().zip(&after) {
                assert_ne!(b, a, "{}: {b} kept", s.name);
                // Same source id → same new id, and distinct ids stay distinct.
                assert_eq!(mapping.entry(b.clone()).or_insert_with(|| a.clone()), a);
            }
            let targets: HashSet<_> = mapping.values().collect();
            assert_eq!(targets.len(), mapping.len(), "{}", s.name);
            if !before.is_empty() {
                assert_ne!(g0, g1, "{}", s.name);
            }
            // No old id survives anywhere in the text, and times are unchanged.
            for (old, new) in s.messages.iter().zip(&g1) {
                assert_eq!(old.at, new.at);
                for id in mapping.keys() {
                    let text = new.msg.raw_str();
                    // Occurrences may only be parts of longer (new) ids.
                    let only_parts = text.match_indices(id.as_str()).all(|(i, _)| {
                        let after = &text[i + id.len()..];
                        after.starts_with(|c: char| c.is_ascii_digit()) || after.starts_with("-g")
                    });
                    assert!(only_parts, "{}: {id} left in {text}", s.name);
                }
            }
        }
    }

    #[test]
    fn instantiate_renames_channels_and_call_ids() {
        let s = embedded_scenario("answered_caller_hangup").unwrap();
        let g2 = s.instantiate(2);
        let all: String = g2.iter().map(|t| t.msg.raw_str()).collect();
        assert!(!all.contains("PJSIP/101-00000000"));
        assert!(all.contains("PJSIP/101-00002000"));
        assert!(all.contains("PJSIP/102-00002001"));
        assert!(all.contains("Uniqueid: 1795349643.0\r\n"));
        assert!(all.contains("DestLinkedid: 1795349643.0\r\n"));
        assert!(all.contains("ChanVariable: SIPCALLID=g2-"));
        assert!(!all.contains("SIPCALLID=1-"));
        let c2c = embedded_scenario("originate_click2call")
            .unwrap()
            .instantiate(1);
        let all: String = c2c.iter().map(|t| t.msg.raw_str()).collect();
        assert!(all.contains("Uniqueid: c2c-101-102-a-g1\r\n"));
        assert!(!all.contains("c2c-101-102-a\r\n"));
        assert!(!all.contains("ChanVariable(PJSIP/101-0000000a)"));
    }

    #[test]
    fn generations_of_different_scenarios_do_not_collide() {
        // With one global generation counter, no two replays share an identifier.
        let scenarios = embedded_scenarios();
        let mut seen: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        let mut generation = 0;
        for _round in 0..6 {
            for (i, s) in scenarios.iter().enumerate() {
                generation += 1;
                let msgs = s.instantiate(generation);
                let mut ids: BTreeSet<String> = id_values(&msgs).into_iter().collect();
                for t in &msgs {
                    for key in ["Channel", "DestChannel"] {
                        if let Some(c) = t.msg.get(key).filter(|c| !c.is_empty()) {
                            ids.insert(c.to_owned());
                        }
                    }
                }
                for id in ids {
                    if let Some(prev) = seen.insert(id.clone(), (i, generation)) {
                        panic!("{id} of {} also in {prev:?}", s.name);
                    }
                }
            }
        }
    }

    #[test]
    fn renaming_rules() {
        assert_eq!(instantiate_id("1795347642.12", 3), "1795350642.12");
        assert_eq!(
            instantiate_id("pbx-a-1795347642.12", 1),
            "pbx-a-1795348642.12"
        );
        assert_eq!(instantiate_id("c2c-101-102-a", 1), "c2c-101-102-a-g1");
        assert_eq!(instantiate_id("1795347642.12", 0), "1795347642.12");
        assert_eq!(
            instantiate_call_id("1-22521@127.0.0.1", 4),
            "g4-1-22521@127.0.0.1"
        );
        assert_eq!(
            instantiate_channel_names("Local/102@internal-00000001;1 PJSIP/101-0000000a", 1),
            "Local/102@internal-00001001;1 PJSIP/101-0000100a"
        );
        let uuid = "2f73c8a9-fdd1-4a5c-aa0a-fd3d77eddd0c";
        assert_eq!(instantiate_channel_names(uuid, 1), uuid);
        assert_eq!(
            instantiate_channel_names("a/b-0000000az", 1),
            "a/b-0000000az"
        );
        assert_eq!(
            instantiate_channel_names("Dial-00000001", 1),
            "Dial-00000001"
        );
    }

    #[test]
    fn load_capture_file_with_and_without_timing() {
        let dir = tempfile::tempdir().unwrap();
        let (_, ami, timing) = EMBEDDED[1];
        let path = dir.path().join("busy.ami");
        std::fs::write(&path, ami).unwrap();
        let untimed = load_capture_file(&path).unwrap();
        assert_eq!(untimed.name, "busy");
        assert_eq!(untimed.messages[1].at, UNTIMED_SPACING);
        std::fs::write(dir.path().join("busy.ami.timing"), timing).unwrap();
        let timed = load_capture_file(&path).unwrap();
        assert_eq!(timed.messages.len(), untimed.messages.len());
        assert_eq!(
            timed,
            embedded_scenario("busy_486")
                .map(|s| Scenario {
                    name: "busy".into(),
                    ..s
                })
                .unwrap()
        );
        assert!(matches!(
            load_capture_file(&dir.path().join("missing.ami")),
            Err(FixtureError::Io { .. })
        ));
    }
}
