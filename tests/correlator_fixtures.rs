//! Every recorded scenario of the product brief (`fixtures/*.ami`, real Asterisk 22 traffic)
//! through the correlator, with the receive times of its `.timing` file, checked against the
//! record the fixtures README says it must yield.
//!
//! The fixtures are read from `$CTIBRIDGE_FIXTURES`, else `/work/shared/brief/fixtures`, else
//! `../shared/brief/fixtures` next to the crate. A missing fixture fails the test and says
//! where it looked.
//!
//! Each scenario runs twice: with phones 101–103 configured, and with no phones or trunks
//! configured at all (trunks then recognised by context/name) — both must give the record.
//! Expected durations are computed from the fixture's own event times, not hard-coded.

use chrono::{DateTime, Duration, TimeDelta, Utc};
use ctibridge::ami::AmiMessage;
use ctibridge::correlator::{Correlator, CorrelatorConfig, Output, PhoneIdentity};
use ctibridge::journal::{Input, JournalEntry};
use ctibridge::record::{CallRecord, Direction, Disposition, Source};
use ctibridge::sim::fixtures::{load_capture_file, Scenario};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

const PBX: &str = "default";

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(d) = std::env::var("CTIBRIDGE_FIXTURES") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from("/work/shared/brief/fixtures"));
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/brief/fixtures"));
    dirs
}

/// The capture `NAME.ami`, timed: (scenario, absolute time of its first event).
fn load(name: &str) -> (Scenario, DateTime<Utc>) {
    let dirs = candidate_dirs();
    let Some(dir) = dirs
        .iter()
        .find(|d| d.join(format!("{name}.ami")).is_file())
    else {
        panic!(
            "fixture {name}.ami not found; looked in: {} (set CTIBRIDGE_FIXTURES to the \
             brief's fixtures directory)",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let path = dir.join(format!("{name}.ami"));
    let scenario = load_capture_file(&path)
        .unwrap_or_else(|e| panic!("fixture {} does not load: {e}", path.display()));
    // `# t0 wall clock 1795347642.194691` on the timing file's first line.
    let t0 = std::fs::read_to_string(dir.join(format!("{name}.ami.timing")))
        .ok()
        .and_then(|text| {
            let line = text.lines().next()?.to_string();
            let secs: f64 = line.rsplit(' ').next()?.parse().ok()?;
            DateTime::from_timestamp_micros((secs * 1e6) as i64)
        })
        .unwrap_or_else(|| DateTime::from_timestamp(1_795_000_000, 0).unwrap());
    (scenario, t0)
}

fn entries(scenario: &Scenario, t0: DateTime<Utc>) -> Vec<JournalEntry> {
    let pbx: Arc<str> = PBX.into();
    scenario
        .messages
        .iter()
        .map(|m| JournalEntry {
            t: t0 + TimeDelta::from_std(m.at).unwrap(),
            input: Input::Ami {
                pbx: pbx.clone(),
                msg: m.msg.clone(),
            },
        })
        .collect()
}

/// The whole capture as a journal would hold it: every message (responses too, which
/// `load_capture_file` leaves out), timed by the read that delivered its first byte.
fn full_stream(name: &str) -> Vec<JournalEntry> {
    let dir = candidate_dirs()
        .into_iter()
        .find(|d| d.join(format!("{name}.ami")).is_file())
        .unwrap_or_else(|| panic!("fixture {name}.ami not found"));
    let raw = std::fs::read(dir.join(format!("{name}.ami"))).unwrap();
    let timing = std::fs::read_to_string(dir.join(format!("{name}.ami.timing"))).unwrap();
    let (_, t0) = load(name);
    let mut reads: Vec<(f64, usize, usize)> = Vec::new();
    for line in timing.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 4 && f[1] == "rx" {
            reads.push((
                f[0].parse().unwrap(),
                f[3].parse().unwrap(),
                f[2].parse().unwrap(),
            ));
        }
    }
    let at = |offset: usize| {
        reads
            .iter()
            .find(|(_, o, n)| (*o..o + n).contains(&offset))
            .map(|(s, _, _)| *s)
            .unwrap()
    };
    let banner_end = raw.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let base = at(banner_end);
    let pbx: Arc<str> = PBX.into();
    let mut out = Vec::new();
    let mut start = banner_end;
    while let Some(len) = raw[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        let end = start + len + 4;
        let msg = ctibridge::ami::parse_message(&raw[start..end], 1 << 20).unwrap();
        let secs = at(start) - base;
        out.push(JournalEntry {
            t: t0 + TimeDelta::microseconds((secs * 1e6) as i64),
            input: Input::Ami {
                pbx: pbx.clone(),
                msg,
            },
        });
        start = end;
    }
    assert_eq!(start, raw.len(), "{name}: trailing bytes");
    out
}

fn phones_config() -> CorrelatorConfig {
    CorrelatorConfig {
        phones: ["101", "102", "103"]
            .iter()
            .map(|e| PhoneIdentity {
                extension: e.to_string(),
                account: None,
                mac: None,
            })
            .collect(),
        ..CorrelatorConfig::default()
    }
}

fn configs() -> [(&'static str, CorrelatorConfig); 2] {
    [
        ("phones 101-103", phones_config()),
        ("nothing configured", CorrelatorConfig::default()),
    ]
}

/// Feeds everything, then `tick(last + 10 s)`; returns all outputs and the correlator.
fn run(cfg: CorrelatorConfig, input: &[JournalEntry]) -> (Vec<Output>, Correlator) {
    let mut c = Correlator::new(cfg);
    let mut out = Vec::new();
    for e in input {
        out.extend(c.handle(e));
    }
    let last = input.last().map(|e| e.t).unwrap();
    out.extend(c.tick(last + Duration::seconds(10)));
    (out, c)
}

fn completed(out: &[Output]) -> Vec<&CallRecord> {
    out.iter()
        .filter_map(|o| match o {
            Output::CallCompleted(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The single record a scenario yields (under each configuration), checked for the
/// properties every record has.
fn single_record(name: &str, check: impl Fn(&str, &CallRecord, &Timed)) {
    let (scenario, t0) = load(name);
    let events = entries(&scenario, t0);
    let full = full_stream(name);
    assert!(
        full.len() > events.len(),
        "{name}: responses are in the full stream"
    );
    let inputs = [("events", &events), ("full stream", &full)];
    for ((label, cfg), (kind, input)) in configs()
        .into_iter()
        .flat_map(|c| inputs.map(|i| (c.clone(), i)))
    {
        let label = &format!("{label}, {kind}");
        let timed = Timed::new(input);
        let (out, c) = run(cfg, input);
        let records = completed(&out);
        assert_eq!(records.len(), 1, "{name} ({label}): {records:#?}");
        let r = records[0];
        assert!(r.complete, "{name} ({label})");
        assert_eq!(r.id, format!("{PBX}:{}", r.linkedid), "{name} ({label})");
        assert_eq!(c.live_calls(), 0, "{name} ({label}): nothing left live");
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::CallStarted(s) if s.id == r.id)),
            "{name} ({label}): CallStarted first"
        );
        // Every leg that had a SIPCALLID in the fixture carries it.
        for leg in &r.legs {
            assert_eq!(
                leg.sip_call_id.as_deref(),
                timed.sip_call_ids.get(&leg.uniqueid).map(String::as_str),
                "{name} ({label}): SIP Call-ID of {}",
                leg.channel
            );
        }
        // The timeline is in time order and has only interesting AMI events.
        assert!(r.timeline.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(r
            .timeline
            .iter()
            .all(|e| !matches!(e.event.as_str(), "VarSet" | "Newexten" | "CEL" | "Cdr")));
        check(label, r, &timed);
    }
}

/// The fixture's own event times, to compute expectations from.
struct Timed {
    events: Vec<(DateTime<Utc>, AmiMessage)>,
    sip_call_ids: BTreeMap<String, String>,
}

impl Timed {
    fn new(input: &[JournalEntry]) -> Timed {
        let mut events = Vec::new();
        let mut sip_call_ids = BTreeMap::new();
        for e in input {
            if let Input::Ami { msg, .. } = &e.input {
                if msg.event_name() == Some("VarSet") && msg.get("Variable") == Some("SIPCALLID") {
                    if let (Some(u), Some(v)) = (msg.get("Uniqueid"), msg.get("Value")) {
                        if !v.is_empty() {
                            sip_call_ids.insert(u.to_string(), v.to_string());
                        }
                    }
                }
                events.push((e.t, msg.clone()));
            }
        }
        Timed {
            events,
            sip_call_ids,
        }
    }

    fn first(&self, event: &str) -> DateTime<Utc> {
        self.all(event)[0]
    }

    fn last(&self, event: &str) -> DateTime<Utc> {
        *self.all(event).last().unwrap()
    }

    fn all(&self, event: &str) -> Vec<DateTime<Utc>> {
        let v: Vec<_> = self
            .events
            .iter()
            .filter(|(_, m)| m.event_name() == Some(event))
            .map(|(t, _)| *t)
            .collect();
        assert!(!v.is_empty(), "fixture has no {event}");
        v
    }

    /// Talk time as the fixture shows it: first BridgeEnter to last Hangup.
    fn talk_s(&self) -> f64 {
        secs(self.last("Hangup") - self.first("BridgeEnter"))
    }
}

fn secs(d: TimeDelta) -> f64 {
    d.num_microseconds().unwrap() as f64 / 1e6
}

fn close(label: &str, what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{label}: {what} = {got}, expected {want} ± {tolerance}"
    );
}

fn leg<'a>(r: &'a CallRecord, endpoint: &str) -> &'a ctibridge::record::Leg {
    r.legs
        .iter()
        .find(|l| l.endpoint.as_deref() == Some(endpoint))
        .unwrap_or_else(|| panic!("no leg of {endpoint} in {:#?}", r.legs))
}

fn assert_parties(label: &str, r: &CallRecord, from: &str, to: &str) {
    assert_eq!(
        r.from.number.as_deref(),
        Some(from),
        "{label}: from {:?}",
        r.from
    );
    assert_eq!(r.to.number.as_deref(), Some(to), "{label}: to {:?}", r.to);
}

#[test]
fn answered_caller_hangup() {
    single_record("answered_caller_hangup", |label, r, timed| {
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_parties(label, r, "101", "102");
        assert_eq!(r.from.extension.as_deref(), Some("101"));
        assert_eq!(r.from.name.as_deref(), Some("Alice 101"));
        assert_eq!(r.to.extension.as_deref(), Some("102"));
        assert_eq!(r.disposition, Disposition::Answered, "{label}");
        assert!(!r.missed);
        assert_eq!(r.answered_by.as_deref(), Some("102"), "{label}");
        close(label, "talk_s", r.talk_s, timed.talk_s(), 1.0);
        close(label, "talk_s", r.talk_s, 8.0, 1.5);
        close(label, "hold_s", r.hold_s, 0.0, 0.0);
        assert_eq!(r.legs.len(), 2, "{label}");
        for l in &r.legs {
            assert_eq!(l.hangup_cause, Some(16), "{label}: {}", l.channel);
            assert!(l.sip_call_id.is_some(), "{label}: {}", l.channel);
            assert!(!l.missed);
        }
        assert_eq!(
            leg(r, "101").sip_call_id.as_deref(),
            Some("1-22521@127.0.0.1")
        );
        assert_eq!(leg(r, "102").dial_status.as_deref(), Some("ANSWER"));
        assert_eq!(r.started_at, timed.first("Newchannel"));
        assert_eq!(r.ended_at, Some(timed.last("Hangup")));
        close(
            label,
            "ring_s",
            r.ring_s,
            secs(r.answered_at.unwrap() - r.started_at),
            0.001,
        );
        let names: Vec<&str> = r.timeline.iter().map(|e| e.event.as_str()).collect();
        for want in [
            "Newchannel",
            "DialBegin",
            "DialEnd",
            "BridgeEnter",
            "Hangup",
        ] {
            assert!(
                names.contains(&want),
                "{label}: timeline lacks {want}: {names:?}"
            );
        }
    });
}

#[test]
fn busy_486() {
    single_record("busy_486", |label, r, _| {
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_parties(label, r, "101", "102");
        assert_eq!(r.disposition, Disposition::Busy, "{label}");
        assert_eq!(r.answered_at, None);
        assert_eq!(r.answered_by, None);
        assert_eq!(r.talk_s, 0.0);
        assert!(!r.missed, "{label}: busy is not a missed call");
        let callee = leg(r, "102");
        assert_eq!(callee.dial_status.as_deref(), Some("BUSY"));
        assert_eq!(callee.hangup_cause, Some(17));
        assert!(!callee.missed);
    });
}

#[test]
fn missed_caller_cancel() {
    single_record("missed_caller_cancel", |label, r, timed| {
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_parties(label, r, "101", "103");
        assert_eq!(r.disposition, Disposition::NoAnswer, "{label}");
        assert!(r.missed, "{label}");
        assert_eq!(r.answered_at, None);
        let callee = leg(r, "103");
        assert_eq!(callee.dial_status.as_deref(), Some("CANCEL"));
        assert_eq!(callee.hangup_cause, Some(127));
        assert!(callee.missed, "{label}: a missed call for 103");
        // Rang from the first Newchannel to the last Hangup (~6 s).
        close(
            label,
            "ring_s",
            r.ring_s,
            secs(timed.last("Hangup") - timed.first("Newchannel")),
            0.01,
        );
        close(label, "ring_s", r.ring_s, 6.0, 1.5);
    });
}

#[test]
fn originate_click2call() {
    single_record("originate_click2call", |label, r, timed| {
        assert_eq!(r.direction, Direction::Internal, "{label}");
        // The initiator is the phone that rang first (101), not the CDR's Source (102).
        assert_parties(label, r, "101", "102");
        assert_eq!(r.from.extension.as_deref(), Some("101"));
        assert_eq!(r.disposition, Disposition::Answered, "{label}");
        assert_eq!(r.answered_by.as_deref(), Some("102"), "{label}");
        assert_eq!(r.linkedid, "c2c-101-102-a");
        close(label, "talk_s", r.talk_s, timed.talk_s(), 1.0);
        let orig = r
            .timeline
            .iter()
            .find(|e| e.event == "OriginateResponse")
            .expect("OriginateResponse on the timeline");
        let detail = orig.detail.as_deref().unwrap_or("");
        assert!(
            detail.contains("Success") && detail.contains("reason 4"),
            "{detail}"
        );
        assert!(detail.contains("c2c-101-102"), "ActionID: {detail}");
        assert_eq!(r.legs.len(), 2);
    });
}

#[test]
fn originate_failed() {
    single_record("originate_failed", |label, r, _| {
        assert_parties(label, r, "101", "102");
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_eq!(
            r.disposition,
            Disposition::Failed,
            "{label}: Originate failed"
        );
        assert!(
            !r.missed,
            "{label}: the initiator's own phone not answering is not missed"
        );
        assert_eq!(r.answered_at, None);
        assert_eq!(r.answered_by, None);
        assert_eq!(r.legs.len(), 1);
        let l = leg(r, "101");
        assert_eq!(l.hangup_cause, Some(19));
        assert_eq!(
            l.sip_call_id, None,
            "SIPCALLID stays empty on an unanswered originate"
        );
        assert!(r.timeline.iter().all(|e| e.event != "DialEnd"));
        assert!(r.timeline.iter().any(|e| e.event == "OriginateResponse"
            && e.detail.as_deref().unwrap_or("").contains("Failure")));
    });
}

#[test]
fn hold_unhold() {
    single_record("hold_unhold", |label, r, timed| {
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_parties(label, r, "101", "102");
        assert_eq!(r.disposition, Disposition::Answered);
        assert_eq!(r.answered_by.as_deref(), Some("102"));
        let want = secs(timed.first("Unhold") - timed.first("Hold"));
        close(label, "hold_s", r.hold_s, want, 0.002);
        close(label, "hold_s", r.hold_s, 3.0, 1.0);
        close(label, "talk_s", r.talk_s, timed.talk_s(), 1.0);
        let hold = r.timeline.iter().find(|e| e.event == "Hold").unwrap();
        assert!(hold.subject.as_deref().unwrap().starts_with("PJSIP/102-"));
    });
}

#[test]
fn blind_transfer() {
    single_record("blind_transfer", |label, r, timed| {
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_parties(label, r, "101", "102");
        assert_eq!(r.disposition, Disposition::Answered);
        assert_eq!(
            r.answered_by.as_deref(),
            Some("102"),
            "{label}: first to answer"
        );
        assert_eq!(r.transfers.len(), 1, "{label}: {:?}", r.transfers);
        let t = &r.transfers[0];
        assert_eq!(t.kind, "blind");
        assert_eq!(t.by.as_deref(), Some("102"));
        assert_eq!(t.to.as_deref(), Some("103"));
        assert_eq!(t.result.as_deref(), Some("Success"));
        assert_eq!(t.at, Some(timed.first("BlindTransfer")));
        let endpoints: Vec<_> = r.legs.iter().map(|l| l.endpoint.as_deref()).collect();
        assert_eq!(endpoints, [Some("101"), Some("102"), Some("103")]);
        assert!(leg(r, "103").answered_at.is_some());
        close(label, "talk_s", r.talk_s, timed.talk_s(), 1.0);
        // The REFER's Unhold without a Hold is shown but not counted.
        assert_eq!(r.hold_s, 0.0);
        assert!(r.timeline.iter().any(|e| e.event == "BlindTransfer"));
    });
}

#[test]
fn ring_group() {
    single_record("ring_group", |label, r, timed| {
        assert_eq!(r.direction, Direction::Internal, "{label}");
        assert_parties(label, r, "101", "600");
        assert_eq!(r.disposition, Disposition::Answered);
        assert_eq!(r.answered_by.as_deref(), Some("103"), "{label}");
        assert_eq!(r.to.extension.as_deref(), Some("103"));
        assert!(!r.missed);
        let lost = leg(r, "102");
        assert_eq!(lost.dial_status.as_deref(), Some("CANCEL"));
        assert_eq!(lost.hangup_cause, Some(26));
        assert_eq!(
            lost.hangup_cause_text.as_deref(),
            Some("Answered elsewhere")
        );
        assert!(
            !lost.missed,
            "{label}: answered elsewhere is not missed for 102"
        );
        assert!(leg(r, "103").answered_at.is_some());
        close(label, "talk_s", r.talk_s, timed.talk_s(), 1.0);
    });
}

#[test]
fn trunk_inbound() {
    single_record("trunk_inbound", |label, r, timed| {
        assert_eq!(r.direction, Direction::Inbound, "{label}");
        assert_parties(label, r, "5550100", "5551000");
        assert_eq!(
            r.from.extension, None,
            "{label}: the carrier is no extension"
        );
        assert_eq!(r.to.extension.as_deref(), Some("101"));
        assert_eq!(r.answered_by.as_deref(), Some("101"));
        assert_eq!(r.disposition, Disposition::Answered);
        assert!(leg(r, "provider").channel.starts_with("PJSIP/provider-"));
        close(label, "talk_s", r.talk_s, timed.talk_s(), 1.0);
    });
}

fn no_record(name: &str) {
    let (scenario, t0) = load(name);
    let events = entries(&scenario, t0);
    let full = full_stream(name);
    for (label, cfg) in configs() {
        for input in [&events, &full] {
            if input.is_empty() {
                continue;
            }
            no_record_in(name, label, cfg.clone(), input);
        }
    }
}

fn no_record_in(name: &str, label: &str, cfg: CorrelatorConfig, input: &[JournalEntry]) {
    {
        let (out, c) = run(cfg, input);
        let calls: Vec<_> = out
            .iter()
            .filter(|o| !matches!(o, Output::PhoneEvent { .. }))
            .collect();
        assert!(calls.is_empty(), "{name} ({label}): {calls:#?}");
        assert_eq!(c.live_calls(), 0, "{name} ({label})");
        assert!(c.orphans().is_empty());
    }
}

#[test]
fn register_yields_no_record() {
    no_record("register");
}

#[test]
fn userevents_yield_no_record() {
    no_record("userevents");
}

#[test]
fn pjsip_notify_yields_no_record() {
    no_record("pjsip_notify");
}

// ----- synthetic phone callbacks on top of answered_caller_hangup -----

fn phone(t: DateTime<Utc>, target: String) -> JournalEntry {
    JournalEntry {
        t,
        input: Input::Phone {
            peer: "10.0.0.102".into(),
            target,
        },
    }
}

/// Inserts `extra` into `input` by time (after entries with the same time).
fn merged(input: &[JournalEntry], extra: Vec<JournalEntry>) -> Vec<JournalEntry> {
    let mut all: Vec<JournalEntry> = input.to_vec();
    for e in extra {
        let pos = all.partition_point(|x| x.t <= e.t);
        all.insert(pos, e);
    }
    all
}

#[test]
fn phone_callbacks_correlate_before_after_and_duplicated() {
    let (scenario, t0) = load("answered_caller_hangup");
    let input = entries(&scenario, t0);
    let timed = Timed::new(&input);
    // The callee leg (102) and its real SIP Call-ID from the fixture.
    let (callee_uid, callee_sip) = timed
        .sip_call_ids
        .iter()
        .find(|(u, _)| *u != "1795347643.0")
        .map(|(u, s)| (u.clone(), s.clone()))
        .expect("callee SIPCALLID in the fixture");
    let yealink = "/action-url/call_established?mac=00:15:65:aa:bb:02&ip=10.0.0.102&model=SIP-T46S\
                   &active_user=102&local=102&remote=101&call_id=33093"
        .to_string();
    let grandstream =
        format!("/action-url/incoming_call?call-id={callee_sip}&local=102&remote=101");

    let first = input.first().unwrap().t;
    let answer = timed.all("Newstate")[1]; // 102 goes Up
    let cases: [(&str, DateTime<Utc>, usize); 4] = [
        (
            "after the AMI events",
            answer + Duration::milliseconds(150),
            1,
        ),
        ("before the AMI events", first - Duration::seconds(1), 1),
        ("after, duplicated", answer + Duration::milliseconds(150), 2),
        ("before, duplicated", first - Duration::seconds(1), 2),
    ];
    for (case, at, copies) in cases {
        let mut extra = Vec::new();
        for i in 0..copies {
            let t = at + Duration::milliseconds(10 * i as i64);
            extra.push(phone(t, yealink.clone()));
            extra.push(phone(t, grandstream.clone()));
        }
        let all = merged(&input, extra);
        for (label, cfg) in configs() {
            let (out, c) = run(cfg, &all);
            let records = completed(&out);
            assert_eq!(records.len(), 1, "{case} ({label})");
            let r = records[0];
            assert!(
                c.orphans().is_empty(),
                "{case} ({label}): {:#?}",
                c.orphans()
            );
            assert_eq!(
                r.correlation.len(),
                2,
                "{case} ({label}): {:#?}",
                r.correlation
            );
            let by_event = |ev: &str| {
                r.correlation
                    .iter()
                    .find(|m| m.event == ev)
                    .unwrap_or_else(|| panic!("{case} ({label}): no {ev} in {:#?}", r.correlation))
            };
            let y = by_event("call_established");
            assert_eq!(y.method, "account_party_time", "{case} ({label})");
            assert_eq!(y.phone, "102");
            assert_eq!(y.uniqueid.as_deref(), Some(callee_uid.as_str()));
            let g = by_event("incoming_call");
            assert_eq!(g.method, "sip_call_id", "{case} ({label})");
            assert_eq!(g.uniqueid.as_deref(), Some(callee_uid.as_str()));
            let callee = leg(r, "102");
            let view = callee.phone.as_ref().expect("phone view on the 102 leg");
            assert_eq!(view.call_handle.as_deref(), Some("33093"));
            assert_eq!(view.mac.as_deref(), Some("001565aabb02"));
            assert_eq!(view.model.as_deref(), Some("SIP-T46S"));
            assert_eq!(view.ip.as_deref(), Some("10.0.0.102"));
            let phone_entries: Vec<_> = r
                .timeline
                .iter()
                .filter(|e| e.source == Source::Phone)
                .collect();
            assert_eq!(phone_entries.len(), 2, "{case} ({label})");
            assert!(r.timeline.windows(2).all(|w| w[0].at <= w[1].at));
            // Nothing else changed.
            assert_eq!(r.disposition, Disposition::Answered);
            assert_eq!(r.answered_by.as_deref(), Some("102"));
        }
    }
}

#[test]
fn every_fixture_replays_deterministically() {
    for name in [
        "answered_caller_hangup",
        "busy_486",
        "missed_caller_cancel",
        "originate_click2call",
        "originate_failed",
        "hold_unhold",
        "blind_transfer",
        "ring_group",
        "trunk_inbound",
        "userevents",
        "register",
        "pjsip_notify",
    ] {
        let input = full_stream(name);
        let a = serde_json::to_string(&run(phones_config(), &input).0).unwrap();
        let b = serde_json::to_string(&run(phones_config(), &input).0).unwrap();
        assert_eq!(a, b, "{name}");
    }
}
