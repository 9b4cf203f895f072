//! Unit tests of the correlator as a whole: order independence of phone callbacks,
//! duplicates, orphans, gaps and resync, transfers, Local channels, determinism, and restarts:
//! a snapshot taken after any input, written as JSON, read back and restored, continues exactly
//! like the original.
//! The recorded fixtures are checked in `tests/correlator_fixtures.rs`.

use super::*;
use crate::ami::AmiMessage;
use crate::record::{Direction, Disposition, Source};
use crate::sim::fixtures::embedded_scenario;
use proptest::prelude::*;

const PBX: &str = "default";

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap()
}

fn at(ms: i64) -> DateTime<Utc> {
    t0() + TimeDelta::milliseconds(ms)
}

fn ami(t: DateTime<Utc>, msg: AmiMessage) -> JournalEntry {
    JournalEntry {
        t,
        input: Input::Ami {
            pbx: PBX.into(),
            msg,
        },
    }
}

fn phone(t: DateTime<Utc>, target: &str) -> JournalEntry {
    JournalEntry {
        t,
        input: Input::Phone {
            peer: "10.0.0.2".into(),
            target: target.into(),
        },
    }
}

fn gap(t: DateTime<Utc>, pbx: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> JournalEntry {
    JournalEntry {
        t,
        input: Input::Gap {
            pbx: pbx.into(),
            from,
            to,
            reason: "connection closed by peer".into(),
        },
    }
}

/// A channel of a synthetic call.
#[derive(Clone, Copy)]
struct Ch {
    name: &'static str,
    uid: &'static str,
    lid: &'static str,
    num: &'static str,
    exten: &'static str,
}

const A: Ch = Ch {
    name: "PJSIP/101-00000001",
    uid: "100.1",
    lid: "100.1",
    num: "101",
    exten: "102",
};
const B: Ch = Ch {
    name: "PJSIP/102-00000002",
    uid: "100.2",
    lid: "100.1",
    num: "102",
    exten: "s",
};

fn snap(
    b: crate::ami::AmiMessageBuilder,
    prefix: &str,
    ch: &Ch,
    state: u8,
) -> crate::ami::AmiMessageBuilder {
    b.field(format!("{prefix}Channel"), ch.name)
        .field(format!("{prefix}ChannelState"), state.to_string())
        .field(format!("{prefix}CallerIDNum"), ch.num)
        .field(format!("{prefix}ConnectedLineNum"), "<unknown>")
        .field(format!("{prefix}Context"), "internal")
        .field(format!("{prefix}Exten"), ch.exten)
        .field(format!("{prefix}Uniqueid"), ch.uid)
        .field(format!("{prefix}Linkedid"), ch.lid)
}

fn ev(name: &str, ch: &Ch, state: u8, extra: &[(&str, &str)]) -> AmiMessage {
    let mut b = snap(AmiMessage::event(name), "", ch, state);
    for (k, v) in extra {
        b = b.field(*k, *v);
    }
    b.build().unwrap()
}

fn dial(name: &str, src: &Ch, dst: &Ch, status: Option<&str>) -> AmiMessage {
    let b = snap(AmiMessage::event(name), "", src, 4);
    snap(b, "Dest", dst, 5)
        .field_opt("DialStatus", status)
        .field("DialString", dst.num)
        .build()
        .unwrap()
}

/// An answered call A (101) → B (102): ringing from 0 to 2 s, talking until `end_ms` (no
/// hangups when `end_ms` is `None`).
fn call(a: Ch, b: Ch, end_ms: Option<i64>) -> Vec<JournalEntry> {
    let mut v = vec![
        ami(at(0), ev("Newchannel", &a, 4, &[])),
        ami(
            at(10),
            ev(
                "VarSet",
                &a,
                4,
                &[("Variable", "SIPCALLID"), ("Value", "a-leg@10.0.0.1")],
            ),
        ),
        ami(at(20), ev("Newchannel", &b, 0, &[])),
        ami(
            at(30),
            ev(
                "VarSet",
                &b,
                0,
                &[("Variable", "SIPCALLID"), ("Value", "b-leg-uuid")],
            ),
        ),
        ami(at(40), dial("DialBegin", &a, &b, None)),
        ami(
            at(50),
            ev("Newstate", &b, 5, &[("ConnectedLineNum", a.num)]),
        ),
        ami(at(2000), ev("Newstate", &b, 6, &[])),
        ami(at(2000), dial("DialEnd", &a, &b, Some("ANSWER"))),
        ami(at(2010), ev("Newstate", &a, 6, &[])),
        ami(at(2020), ev("BridgeEnter", &b, 6, &[])),
        ami(at(2020), ev("BridgeEnter", &a, 6, &[])),
    ];
    if let Some(end) = end_ms {
        v.extend([
            ami(at(end), ev("BridgeLeave", &a, 6, &[])),
            ami(
                at(end),
                ev(
                    "Hangup",
                    &a,
                    6,
                    &[("Cause", "16"), ("Cause-txt", "Normal Clearing")],
                ),
            ),
            ami(at(end + 5), ev("BridgeLeave", &b, 6, &[])),
            ami(
                at(end + 10),
                ev(
                    "Hangup",
                    &b,
                    6,
                    &[("Cause", "16"), ("Cause-txt", "Normal Clearing")],
                ),
            ),
        ]);
    }
    v
}

fn feed(c: &mut Correlator, input: &[JournalEntry]) -> Vec<Output> {
    input.iter().flat_map(|e| c.handle(e)).collect()
}

fn run(
    cfg: CorrelatorConfig,
    input: &[JournalEntry],
    end: DateTime<Utc>,
) -> (Vec<Output>, Correlator) {
    let mut c = Correlator::new(cfg);
    let mut out = feed(&mut c, input);
    out.extend(c.tick(end));
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

fn only_record(out: &[Output]) -> &CallRecord {
    let records = completed(out);
    assert_eq!(records.len(), 1, "{records:#?}");
    records[0]
}

/// Inserts entries by time (after entries with the same time).
fn with(mut input: Vec<JournalEntry>, extra: Vec<JournalEntry>) -> Vec<JournalEntry> {
    for e in extra {
        let pos = input.partition_point(|x| x.t <= e.t);
        input.insert(pos, e);
    }
    input
}

const YEALINK_ESTABLISHED: &str =
    "/action-url/call_established?mac=001565000102&active_user=102&remote=101&call_id=7";

#[test]
fn a_plain_call_completes_after_grace_only() {
    let input = call(A, B, Some(10_000));
    let mut c = Correlator::new(CorrelatorConfig::default());
    let out = feed(&mut c, &input);
    assert!(matches!(out.first(), Some(Output::CallStarted(_))));
    assert!(completed(&out).is_empty(), "grace not over yet");
    assert_eq!(c.live_calls(), 1);
    assert!(completed(&c.tick(at(12_000))).is_empty());
    let out = c.tick(at(13_010));
    let r = only_record(&out);
    assert_eq!(r.id, "default:100.1");
    assert_eq!(r.direction, Direction::Internal);
    assert_eq!(r.answered_by.as_deref(), Some("102"));
    assert_eq!(r.talk_s, 8.01);
    assert_eq!(r.ring_s, 2.0);
    assert_eq!(c.live_calls(), 0);
    // A late event for a completed channel does not start a phantom call.
    let late = c.handle(&ami(at(14_000), ev("Hangup", &B, 6, &[("Cause", "16")])));
    assert!(late.is_empty(), "{late:#?}");
    assert_eq!(c.live_calls(), 0);
}

#[test]
fn callback_before_its_ami_events_waits_and_matches() {
    let input = with(
        call(A, B, Some(10_000)),
        vec![phone(at(-1500), YEALINK_ESTABLISHED)],
    );
    let mut c = Correlator::new(CorrelatorConfig::default());
    let first = c.handle(&input[0]);
    assert!(
        first.is_empty(),
        "a waiting callback is no output: {first:#?}"
    );
    assert_eq!(c.pending_callbacks(), 1);
    assert!(c.orphans().is_empty(), "pending, not orphaned");
    let mut out = first;
    out.extend(feed(&mut c, &input[1..]));
    out.extend(c.tick(at(20_000)));
    assert_eq!(c.pending_callbacks(), 0);
    assert!(c.orphans().is_empty());
    let r = only_record(&out);
    assert_eq!(r.correlation.len(), 1);
    let m = &r.correlation[0];
    assert_eq!(m.method, "account_party_time");
    assert_eq!(m.phone, "102");
    assert_eq!(m.uniqueid.as_deref(), Some(B.uid));
    assert_eq!(m.at, at(-1500));
    let leg = r.legs.iter().find(|l| l.uniqueid == B.uid).unwrap();
    assert_eq!(
        leg.phone.as_ref().unwrap().call_handle.as_deref(),
        Some("7")
    );
    // The phone entry sits at its own time, first in the timeline.
    assert_eq!(r.timeline[0].source, Source::Phone);
    assert_eq!(r.timeline[0].event, "call_established");
}

#[test]
fn sip_call_id_callback_before_ami_waits_for_the_exact_match() {
    // Grandstream: SIP Call-ID plus account and remote. The heuristic could match as soon as
    // leg B exists; it must wait until B's SIPCALLID arrives and match exactly.
    let target = "/action-url/incoming_call?call-id=b-leg-uuid&active_user=102&remote=101";
    let input = with(call(A, B, Some(10_000)), vec![phone(at(-500), target)]);
    let (out, c) = run(CorrelatorConfig::default(), &input, at(20_000));
    assert!(c.orphans().is_empty());
    let r = only_record(&out);
    assert_eq!(r.correlation.len(), 1);
    assert_eq!(r.correlation[0].method, "sip_call_id");
    assert_eq!(r.correlation[0].uniqueid.as_deref(), Some(B.uid));
    let leg = r.legs.iter().find(|l| l.uniqueid == B.uid).unwrap();
    assert_eq!(leg.phone.as_ref().unwrap().call_handle, None);
}

#[test]
fn duplicate_callbacks_are_recorded_once() {
    let input = with(
        call(A, B, Some(10_000)),
        vec![
            phone(at(2100), YEALINK_ESTABLISHED),
            phone(at(2100), YEALINK_ESTABLISHED),
            phone(at(2300), YEALINK_ESTABLISHED),
            phone(
                at(2400),
                "/action-url/outgoing_call?call-id=a-leg@10.0.0.1&local=101&remote=102",
            ),
            phone(
                at(2500),
                "/action-url/outgoing_call?call-id=a-leg@10.0.0.1&local=101&remote=102",
            ),
        ],
    );
    let (out, c) = run(CorrelatorConfig::default(), &input, at(20_000));
    assert!(c.orphans().is_empty());
    let r = only_record(&out);
    let seen: Vec<(&str, &str, &str)> = r
        .correlation
        .iter()
        .map(|m| (m.phone.as_str(), m.event.as_str(), m.method.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("102", "call_established", "account_party_time"),
            ("101", "outgoing_call", "sip_call_id")
        ]
    );
    assert_eq!(
        r.timeline
            .iter()
            .filter(|e| e.source == Source::Phone)
            .count(),
        2
    );
}

#[test]
fn unmatched_callbacks_become_orphans_after_the_window() {
    let cfg = CorrelatorConfig::default();
    let mut c = Correlator::new(cfg);
    // A phone reports a call the PBX never shows.
    c.handle(&phone(
        at(0),
        "/action-url/incoming_call?active_user=103&remote=5559999&call_id=44",
    ));
    assert_eq!(c.pending_callbacks(), 1);
    assert!(c.tick(at(9_999)).is_empty());
    assert!(c.orphans().is_empty(), "still inside the window");
    c.tick(at(10_001));
    assert_eq!(c.pending_callbacks(), 0);
    assert_eq!(c.orphans().len(), 1);
    let o = &c.orphans()[0];
    assert_eq!(o.reason, OrphanReason::NoMatchingCall);
    assert_eq!(o.extension.as_deref(), Some("103"));
    assert_eq!(o.at, at(0));
    assert!(o.target.contains("incoming_call"));

    // A callback for a call that already completed is kept as late, with the record's id.
    let input = call(A, B, Some(10_000));
    feed(&mut c, &input);
    let done = c.tick(at(14_000));
    assert_eq!(completed(&done).len(), 1);
    let out = c.handle(&phone(
        at(14_500),
        "/action-url/call_terminated?call-id=b-leg-uuid&active_user=102&remote=101",
    ));
    assert!(out.is_empty());
    assert_eq!(
        c.orphans().last().unwrap().reason,
        OrphanReason::LateForCompletedCall {
            id: "default:100.1".into()
        }
    );
    // A callback from the wrong phone, or with the wrong remote party, does not match.
    let input = with(
        call(A, B, Some(10_000)),
        vec![
            phone(
                at(100_000 + 2100),
                "/action-url/call_established?active_user=103&remote=101",
            ),
            phone(
                at(100_000 + 2100),
                "/action-url/call_established?active_user=102&remote=999",
            ),
        ],
    );
    let shifted: Vec<JournalEntry> = input
        .into_iter()
        .map(|mut e| {
            if matches!(e.input, Input::Ami { .. }) {
                e.t += TimeDelta::seconds(100);
            }
            e
        })
        .collect();
    let out = feed(&mut c, &shifted);
    let mut out2 = c.tick(at(200_000));
    out2.extend(out);
    assert!(completed(&out2)[0].correlation.is_empty());
    assert_eq!(c.take_orphans().len(), 4);
    assert!(c.orphans().is_empty());
}

#[test]
fn non_call_callbacks_are_phone_events() {
    let mut c = Correlator::new(CorrelatorConfig {
        phones: vec![PhoneIdentity {
            extension: "102".into(),
            account: Some("bob".into()),
            mac: Some("00:15:65:00:01:02".into()),
        }],
        ..CorrelatorConfig::default()
    });
    let out = c.handle(&phone(at(0), "/action-url/s3cret/dnd_on?mac=001565000102"));
    match out.as_slice() {
        [Output::PhoneEvent {
            extension,
            callback,
            peer,
            at: t,
        }] => {
            assert_eq!(extension.as_deref(), Some("102"));
            assert_eq!(callback.event.as_str(), "dnd_on");
            assert_eq!(peer, "10.0.0.2");
            assert_eq!(*t, at(0));
        }
        other => panic!("{other:#?}"),
    }
    // Not a callback at all: ignored.
    assert!(c.handle(&phone(at(1), "/favicon.ico")).is_empty());
    assert_eq!(c.pending_callbacks(), 0);
}

#[test]
fn gap_mid_call_closes_channels_missing_from_the_resync() {
    // Two calls are up; the AMI link drops at 5 s and comes back at 30 s. The resync list
    // holds only the second call's channels: the first call ended during the gap.
    let c1 = call(A, B, None);
    let a2 = Ch {
        name: "PJSIP/103-00000003",
        uid: "100.3",
        lid: "100.3",
        num: "103",
        exten: "101",
    };
    let b2 = Ch {
        name: "PJSIP/101-00000004",
        uid: "100.4",
        lid: "100.3",
        num: "101",
        exten: "s",
    };
    let c2: Vec<JournalEntry> = call(a2, b2, None)
        .into_iter()
        .map(|mut e| {
            e.t += TimeDelta::milliseconds(500);
            e
        })
        .collect();
    let mut input = with(c1, c2);
    let (from, to) = (at(5_000), at(30_000));
    let list_item = |ch: &Ch| {
        AmiMessage::event("CoreShowChannel")
            .field("ActionID", "resync-1")
            .field("Channel", ch.name)
            .field("Uniqueid", ch.uid)
            .field("Linkedid", ch.lid)
            .field("ChannelState", "6")
            .field("Duration", "00:00:29")
            .build()
            .unwrap()
    };
    input.extend([
        ami(at(29_990), list_item(&a2)),
        ami(at(29_991), list_item(&b2)),
        ami(
            at(29_992),
            AmiMessage::event("CoreShowChannelsComplete")
                .field("EventList", "Complete")
                .field("ListItems", "2")
                .build()
                .unwrap(),
        ),
        gap(at(30_000), PBX, from, to),
    ]);
    let mut c = Correlator::new(CorrelatorConfig::default());
    let out = feed(&mut c, &input);
    let updated: Vec<&CallRecord> = out
        .iter()
        .filter_map(|o| match o {
            Output::CallUpdated(r) => Some(r),
            _ => None,
        })
        .collect();
    let first = updated
        .iter()
        .rev()
        .find(|r| r.id == "default:100.1")
        .expect("the first call was updated by the gap");
    assert_eq!(first.gaps.len(), 1);
    assert_eq!(first.gaps[0].from, from);
    assert!(first.legs.iter().all(|l| l.ended_at == Some(to)));
    assert!(first.legs.iter().all(|l| l.hangup_cause.is_none()));
    assert!(first.timeline.iter().any(|e| e.event == "ClosedByResync"));
    assert_eq!(first.ended_at, Some(to));

    // The first call completes `grace` after the gap's end; the second stays live.
    let out = c.tick(to + TimeDelta::seconds(3));
    let r = only_record(&out);
    assert_eq!(r.id, "default:100.1");
    assert_eq!(r.talk_s, 28.0, "answered at 2 s, closed at the gap's end");
    assert_eq!(c.live_calls(), 1);
    // The second call saw the gap too, and still completes normally.
    let out = c.handle(&ami(at(40_000), ev("Hangup", &a2, 6, &[("Cause", "16")])));
    assert!(completed(&out).is_empty());
    c.handle(&ami(at(40_010), ev("Hangup", &b2, 6, &[("Cause", "16")])));
    let out = c.tick(at(50_000));
    let r2 = only_record(&out);
    assert_eq!(r2.id, "default:100.3");
    assert_eq!(r2.gaps.len(), 1);
    assert!(r2.legs.iter().all(|l| l.hangup_cause == Some(16)));
}

#[test]
fn a_gap_for_all_pbxs_marks_calls_without_closing_them() {
    let mut input = call(A, B, None);
    input.push(gap(at(6_000), "*", at(3_000), at(5_000)));
    input.extend(call(A, B, Some(10_000)).into_iter().skip(11));
    let (out, c) = run(CorrelatorConfig::default(), &input, at(20_000));
    let r = only_record(&out);
    assert_eq!(r.gaps.len(), 1);
    assert!(r.legs.iter().all(|l| l.hangup_cause == Some(16)));
    assert_eq!(c.live_calls(), 0);
    // A gap of another PBX, or one before the call, does not touch it.
    let mut input = call(A, B, None);
    input.push(gap(at(6_000), "other", at(3_000), at(5_000)));
    input.push(gap(at(6_000), PBX, at(-9_000), at(-5_000)));
    input.extend(call(A, B, Some(10_000)).into_iter().skip(11));
    let (out, _) = run(CorrelatorConfig::default(), &input, at(20_000));
    assert!(only_record(&out).gaps.is_empty());
}

#[test]
fn attended_transfer_merges_the_two_calls() {
    // Call 1: A (101) → B (102). Call 2: B2 (102 again) → C (103). 102 completes an attended
    // transfer; C's Linkedid changes to call 1's and it is bridged with A.
    let b2 = Ch {
        name: "PJSIP/102-00000003",
        uid: "100.3",
        lid: "100.3",
        num: "102",
        exten: "103",
    };
    let c = Ch {
        name: "PJSIP/103-00000004",
        uid: "100.4",
        lid: "100.3",
        num: "103",
        exten: "s",
    };
    let c_moved = Ch { lid: "100.1", ..c };
    let mut input = call(A, B, None);
    let second: Vec<JournalEntry> = call(b2, c, None)
        .into_iter()
        .map(|mut e| {
            e.t += TimeDelta::seconds(5);
            e
        })
        .collect();
    input = with(input, second);
    let xfer = AmiMessage::event("AttendedTransfer")
        .field("Result", "Success")
        .field("OrigTransfererChannel", B.name)
        .field("OrigTransfererUniqueid", B.uid)
        .field("OrigTransfererLinkedid", B.lid)
        .field("SecondTransfererChannel", b2.name)
        .field("SecondTransfererUniqueid", b2.uid)
        .field("SecondTransfererLinkedid", b2.lid)
        .field("SecondTransfererConnectedLineNum", "103")
        .field("DestType", "Bridge")
        .build()
        .unwrap();
    input.extend([
        ami(at(9_000), ev("BridgeLeave", &c_moved, 6, &[])),
        ami(at(9_001), xfer),
        ami(at(9_002), ev("BridgeEnter", &c_moved, 6, &[])),
        ami(at(9_003), ev("Hangup", &B, 6, &[("Cause", "16")])),
        ami(at(9_004), ev("Hangup", &b2, 6, &[("Cause", "16")])),
        ami(at(15_000), ev("Hangup", &A, 6, &[("Cause", "16")])),
        ami(at(15_001), ev("Hangup", &c_moved, 6, &[("Cause", "16")])),
    ]);
    let (out, corr) = run(CorrelatorConfig::default(), &input, at(30_000));
    assert!(out.iter().any(|o| matches!(o,
        Output::CallMerged { id, into } if id == "default:100.3" && into == "default:100.1")));
    let r = only_record(&out);
    assert_eq!(r.id, "default:100.1");
    assert_eq!(r.legs.len(), 4);
    assert_eq!(r.transfers.len(), 1);
    assert_eq!(r.transfers[0].kind, "attended");
    assert_eq!(r.transfers[0].by.as_deref(), Some("102"));
    assert_eq!(r.transfers[0].to.as_deref(), Some("103"));
    assert_eq!(r.from.number.as_deref(), Some("101"));
    assert_eq!(r.to.number.as_deref(), Some("102"));
    assert_eq!(r.answered_by.as_deref(), Some("102"));
    assert_eq!(r.ended_at, Some(at(15_001)));
    assert!(r.timeline.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(corr.live_calls(), 0);
}

#[test]
fn local_channels_are_followed_through() {
    // 101 dials ring group 600 through a Local channel whose ;2 half dials 102 and 103.
    let caller = Ch { exten: "600", ..A };
    let l1 = Ch {
        name: "Local/600@ringgroups-00000001;1",
        uid: "100.2",
        lid: "100.1",
        num: "600",
        exten: "600",
    };
    let l2 = Ch {
        name: "Local/600@ringgroups-00000001;2",
        uid: "100.3",
        ..l1
    };
    let m1 = Ch {
        name: "PJSIP/102-00000004",
        uid: "100.4",
        lid: "100.1",
        num: "102",
        exten: "s",
    };
    let m2 = Ch {
        name: "PJSIP/103-00000005",
        uid: "100.5",
        num: "103",
        ..m1
    };
    let mut input = vec![
        ami(at(0), ev("Newchannel", &caller, 4, &[])),
        ami(at(10), ev("Newchannel", &l1, 0, &[])),
        ami(at(11), ev("Newchannel", &l2, 4, &[])),
        ami(
            at(12),
            AmiMessage::event("LocalBridge")
                .field("LocalOneChannel", l1.name)
                .field("LocalOneUniqueid", l1.uid)
                .field("LocalOneLinkedid", l1.lid)
                .field("LocalTwoChannel", l2.name)
                .field("LocalTwoUniqueid", l2.uid)
                .field("LocalTwoLinkedid", l2.lid)
                .field("LocalOptimization", "Yes")
                .build()
                .unwrap(),
        ),
        ami(at(13), dial("DialBegin", &caller, &l1, None)),
        ami(at(20), ev("Newchannel", &m1, 0, &[])),
        ami(at(21), ev("Newchannel", &m2, 0, &[])),
        ami(at(22), dial("DialBegin", &l2, &m1, None)),
        ami(at(23), dial("DialBegin", &l2, &m2, None)),
        ami(at(3000), ev("Newstate", &m2, 6, &[])),
        ami(at(3001), dial("DialEnd", &l2, &m2, Some("ANSWER"))),
        ami(at(3002), dial("DialEnd", &l2, &m1, Some("CANCEL"))),
        ami(
            at(3003),
            ev(
                "Hangup",
                &m1,
                5,
                &[("Cause", "26"), ("Cause-txt", "Answered elsewhere")],
            ),
        ),
        ami(at(3004), dial("DialEnd", &caller, &l1, Some("ANSWER"))),
    ];
    for (i, ch) in [caller, l1, l2, m2].iter().enumerate() {
        input.push(ami(
            at(9000 + i as i64),
            ev("Hangup", ch, 6, &[("Cause", "16")]),
        ));
    }
    let (out, _) = run(CorrelatorConfig::default(), &input, at(20_000));
    let r = only_record(&out);
    let channels: Vec<&str> = r.legs.iter().map(|l| l.channel.as_str()).collect();
    assert_eq!(channels, [caller.name, m1.name, m2.name], "no Local halves");
    assert_eq!(r.to.number.as_deref(), Some("600"));
    assert_eq!(r.answered_by.as_deref(), Some("103"));
    assert_eq!(r.direction, Direction::Internal);
    assert!(!r.legs[1].missed);
    assert!(r
        .timeline
        .iter()
        .all(|e| !e.subject.as_deref().unwrap_or("").starts_with("Local/")));
}

#[test]
fn request_id_and_joining_mid_call() {
    // We join mid-call: the first event we see of the call is a Newstate of the callee, and
    // the caller carries the click-to-call request id.
    let input = vec![
        ami(
            at(0),
            ev(
                "Newstate",
                &B,
                6,
                &[("ChanVariable", "CTIBRIDGE_REQUEST_ID=req-42")],
            ),
        ),
        ami(at(10), ev("Hangup", &B, 6, &[("Cause", "16")])),
        ami(at(20), ev("Hangup", &A, 6, &[("Cause", "16")])),
    ];
    let (out, _) = run(CorrelatorConfig::default(), &input, at(10_000));
    let r = only_record(&out);
    assert_eq!(r.dial_request_id.as_deref(), Some("req-42"));
    assert_eq!(r.legs.len(), 2);
    assert_eq!(r.id, "default:100.1");
    // The VarSet form works too.
    let input = with(
        call(A, B, Some(10_000)),
        vec![ami(
            at(15),
            ev(
                "VarSet",
                &A,
                4,
                &[("Variable", "__CTIBRIDGE_REQUEST_ID"), ("Value", "req-7")],
            ),
        )],
    );
    let (out, _) = run(CorrelatorConfig::default(), &input, at(20_000));
    assert_eq!(only_record(&out).dial_request_id.as_deref(), Some("req-7"));
}

#[test]
fn outbound_and_inbound_by_configuration() {
    let trunk = Ch {
        name: "PJSIP/sipline1-00000002",
        uid: "100.2",
        lid: "100.1",
        num: "5550100",
        exten: "s",
    };
    let input = call(
        Ch {
            exten: "5550100",
            ..A
        },
        trunk,
        Some(10_000),
    );
    let phones = |exts: &[&str]| CorrelatorConfig {
        phones: exts
            .iter()
            .map(|e| PhoneIdentity {
                extension: e.to_string(),
                ..PhoneIdentity::default()
            })
            .collect(),
        ..CorrelatorConfig::default()
    };
    let (out, _) = run(phones(&["101"]), &input, at(20_000));
    let r = only_record(&out);
    assert_eq!(r.direction, Direction::Outbound);
    assert_eq!(r.answered_by.as_deref(), Some("5550100"), "the far end");
    let listed = CorrelatorConfig {
        trunks: vec!["sipline1".into()],
        ..CorrelatorConfig::default()
    };
    let (out, _) = run(listed, &input, at(20_000));
    assert_eq!(only_record(&out).direction, Direction::Outbound);
    // Nothing configured and nothing in the names: an internal call.
    let (out, _) = run(CorrelatorConfig::default(), &input, at(20_000));
    assert_eq!(only_record(&out).direction, Direction::Internal);
}

#[test]
fn garbage_is_ignored() {
    let mut c = Correlator::new(CorrelatorConfig::default());
    let junk = [
        AmiMessage::builder()
            .field("Response", "Success")
            .build()
            .unwrap(),
        AmiMessage::event("Hangup").build().unwrap(),
        AmiMessage::event("DialBegin")
            .field("DestUniqueid", "")
            .build()
            .unwrap(),
        AmiMessage::event("OriginateResponse")
            .field("Uniqueid", "nope")
            .field("Response", "Failure")
            .build()
            .unwrap(),
        AmiMessage::event("Cdr")
            .field("UniqueID", "1.1")
            .field("LinkedID", "1.1")
            .build()
            .unwrap(),
        AmiMessage::event("CoreShowChannelsComplete")
            .build()
            .unwrap(),
    ];
    for m in junk {
        assert!(c.handle(&ami(at(0), m)).is_empty());
    }
    assert_eq!(c.live_calls(), 0);
    assert!(c.handle(&phone(at(0), "")).is_empty());
    assert!(c.handle(&gap(at(0), PBX, at(5), at(-5))).is_empty());
    assert!(c.finish().is_empty());
}

// ----- determinism and self-contained state -----

/// A rich input: a recorded blind transfer, a recorded answered call with phone callbacks
/// (one early, one duplicated, one orphan), and a gap with a resync in the middle.
fn rich_input() -> Vec<JournalEntry> {
    let mut input = Vec::new();
    for (i, name) in ["answered_caller_hangup", "blind_transfer", "ring_group"]
        .iter()
        .enumerate()
    {
        let s = embedded_scenario(name).unwrap();
        let base = at(i as i64 * 4_000);
        input = with(
            input,
            s.messages
                .iter()
                .map(|m| ami(base + TimeDelta::from_std(m.at).unwrap(), m.msg.clone()))
                .collect(),
        );
    }
    with(
        input,
        vec![
            phone(
                at(-800),
                "/action-url/call_established?active_user=102&remote=101&call_id=33093",
            ),
            phone(
                at(2_500),
                "/action-url/incoming_call?call-id=7bee591f-570f-4b8a-a3f4-b89db5319736",
            ),
            phone(
                at(2_600),
                "/action-url/incoming_call?call-id=7bee591f-570f-4b8a-a3f4-b89db5319736",
            ),
            phone(at(3_000), "/action-url/dnd_on?active_user=103"),
            phone(
                at(3_100),
                "/action-url/missed_call?active_user=103&remote=999",
            ),
            gap(at(6_000), PBX, at(5_500), at(5_900)),
        ],
    )
}

fn json(out: &[Output]) -> String {
    serde_json::to_string(out).unwrap()
}

#[test]
fn same_input_same_output() {
    let input = rich_input();
    let end = input.last().unwrap().t + TimeDelta::seconds(60);
    let (a, ca) = run(CorrelatorConfig::default(), &input, end);
    let (b, cb) = run(CorrelatorConfig::default(), &input, end);
    assert_eq!(json(&a), json(&b));
    assert_eq!(ca.orphans(), cb.orphans());
    assert_eq!(completed(&a).len(), 3);
    assert_eq!(ca.orphans().len(), 1);
    assert!(a.iter().any(|o| matches!(o, Output::PhoneEvent { .. })));
}

/// The live path hands the correlator the receiver's parse of each callback
/// (`handle_parsed`, from `parse_target` of the journaled target); a replay parses the
/// target itself (`handle`). Both give the very same outputs and state, including for
/// callbacks with problems, a secret path segment, unfilled variables and non-callbacks.
#[test]
fn a_callback_parsed_by_the_receiver_gives_what_a_replay_gives() {
    let mut input = rich_input();
    input = with(
        input,
        vec![
            phone(
                at(3_200),
                "/action-url/s3cret/call%20established?remote=$remote&mac=00:15:65:AA:BB:CC&x=%zz",
            ),
            phone(
                at(3_300),
                "/action-url/incoming_call?remote=%2B1555&remote=2&active_user=104",
            ),
            phone(at(3_400), "/favicon.ico"),
        ],
    );
    let end = input.last().unwrap().t + TimeDelta::seconds(60);
    let (replayed, r) = run(CorrelatorConfig::default(), &input, end);
    let mut live = Correlator::new(CorrelatorConfig::default());
    let mut out = Vec::new();
    let mut parsed = 0;
    for e in &input {
        let cb = match &e.input {
            Input::Phone { target, .. } => {
                crate::phone::action_url::parse_target(target).map(Arc::new)
            }
            _ => None,
        };
        parsed += usize::from(cb.is_some());
        out.extend(live.handle_parsed(e, cb));
    }
    out.extend(live.tick(end));
    assert_eq!(
        parsed, 7,
        "every callback but the favicon was parsed by the receiver"
    );
    assert_eq!(json(&out), json(&replayed));
    assert_eq!(live.orphans(), r.orphans());
    assert_eq!(live.snapshot().to_json(), r.snapshot().to_json());
}

/// What a restart does with `c`'s state: snapshot → JSON → read back → restore with `cfg`.
/// The restored correlator writes the very same snapshot again.
fn restarted(c: &Correlator, cfg: &CorrelatorConfig) -> Correlator {
    let json = c.snapshot().to_json();
    let back = CorrelatorSnapshot::from_json(&json).expect("snapshot reads back");
    let r = Correlator::restore(cfg.clone(), back).expect("snapshot restores");
    assert_eq!(r.snapshot().to_json(), json, "restore is exact");
    r
}

fn jsons(out: Vec<Output>) -> Vec<String> {
    out.iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect()
}

/// Feeds `input` once without interruption, and again with a restart (through a snapshot)
/// before each input index in `cuts`: every run's outputs (those before the cut, then the
/// restored correlator's), orphans and final state equal the uninterrupted run's.
fn check_restarts(cfg: &CorrelatorConfig, input: &[JournalEntry], cuts: &[usize]) {
    let end = input.last().map_or(t0(), |e| e.t) + TimeDelta::seconds(120);
    let mut whole = Correlator::new(cfg.clone());
    let mut expected = jsons(feed(&mut whole, input));
    expected.extend(jsons(whole.tick(end)));
    let state_before_finish = whole.snapshot().to_json();
    expected.extend(jsons(whole.finish()));

    let mut a = Correlator::new(cfg.clone());
    let mut done = 0; // outputs `a` has produced so far
    let mut fed = 0; // inputs `a` has seen
    for &cut in cuts {
        let cut = cut.min(input.len());
        for e in &input[fed..cut] {
            let out = jsons(a.handle(e));
            assert_eq!(out.as_slice(), &expected[done..done + out.len()], "input");
            done += out.len();
        }
        fed = cut;
        // `a` has seen input[..cut]; a restarted copy continues with the rest.
        let mut b = restarted(&a, cfg);
        let mut rest = jsons(feed(&mut b, &input[cut..]));
        rest.extend(jsons(b.tick(end)));
        assert_eq!(b.snapshot().to_json(), state_before_finish, "cut at {cut}");
        rest.extend(jsons(b.finish()));
        assert_eq!(rest.as_slice(), &expected[done..], "cut at {cut}");
        assert_eq!(b.orphans(), whole.orphans(), "cut at {cut}");
        assert_eq!(b.live_calls(), whole.live_calls(), "cut at {cut}");
    }
}

#[test]
fn a_snapshot_taken_anywhere_continues_like_the_original() {
    // Recorded calls, phone callbacks (early, duplicated, orphaned), a gap with a resync.
    let input = rich_input();
    let cuts: Vec<usize> = (0..=input.len()).collect();
    check_restarts(&CorrelatorConfig::default(), &input, &cuts);
}

/// Each recorded fixture as a journal of its own, with Yealink-style (phone handle) and
/// Grandstream-style (SIP Call-ID) callbacks for its calls, and with phones configured (so
/// settings really come from the config at restore); restarts at every tenth input.
#[test]
fn snapshots_of_every_recorded_fixture_continue_like_the_original() {
    let cfg = CorrelatorConfig {
        phones: ["101", "102", "103"]
            .iter()
            .map(|e| PhoneIdentity {
                extension: e.to_string(),
                account: None,
                mac: None,
            })
            .collect(),
        ..CorrelatorConfig::default()
    };
    for scenario in crate::sim::fixtures::embedded_scenarios() {
        let mut input: Vec<JournalEntry> = scenario
            .messages
            .iter()
            .map(|m| ami(at(0) + TimeDelta::from_std(m.at).unwrap(), m.msg.clone()))
            .collect();
        let sip_ids: Vec<String> = scenario
            .messages
            .iter()
            .filter(|m| m.msg.get("Variable") == Some("SIPCALLID"))
            .filter_map(|m| m.msg.get("Value").map(str::to_string))
            .filter(|v| !v.is_empty())
            .collect();
        let mid = input.len() / 2;
        let t_mid = input[mid].t;
        let mut callbacks = vec![phone(
            t_mid,
            "/action-url/call_established?active_user=102&remote=101&call_id=33093",
        )];
        if let Some(sip) = sip_ids.last() {
            callbacks.push(phone(
                t_mid + TimeDelta::milliseconds(5),
                &format!("/action-url/incoming_call?call-id={sip}&local=102"),
            ));
        }
        input = with(input, callbacks);
        let cuts: Vec<usize> = (0..=input.len()).step_by(10).chain([input.len()]).collect();
        check_restarts(&cfg, &input, &cuts);
    }
}

#[test]
fn a_snapshot_of_another_format_or_garbage_is_refused() {
    let mut c = Correlator::new(CorrelatorConfig::default());
    feed(&mut c, &call(A, B, None));
    let json = c.snapshot().to_json();
    assert_eq!(
        CorrelatorSnapshot::from_json(&json).unwrap().live_calls(),
        1
    );
    let future = json.replacen(
        &format!("\"version\":{SNAPSHOT_VERSION}"),
        "\"version\":999",
        1,
    );
    assert!(matches!(
        CorrelatorSnapshot::from_json(&future),
        Err(SnapshotError::UnknownVersion { found: 999, .. })
    ));
    let mut snap = c.snapshot();
    snap.version = SNAPSHOT_VERSION + 1;
    assert!(matches!(
        Correlator::restore(CorrelatorConfig::default(), snap),
        Err(SnapshotError::UnknownVersion { .. })
    ));
    assert!(matches!(
        CorrelatorSnapshot::from_json(&format!("{{\"version\":{SNAPSHOT_VERSION},\"state\":[]}}")),
        Err(SnapshotError::Decode(_))
    ));
    // A snapshot of the previous format (the one before `dial_result`) is refused as such,
    // so the service replays the whole journal instead of continuing from it.
    let old = json.replacen(
        &format!("\"version\":{SNAPSHOT_VERSION}"),
        "\"version\":1",
        1,
    );
    assert!(matches!(
        CorrelatorSnapshot::from_json(&old),
        Err(SnapshotError::UnknownVersion { found: 1, .. })
    ));
    assert!(matches!(
        CorrelatorSnapshot::from_json("not json"),
        Err(SnapshotError::Decode(_))
    ));
    // A conversation key the counter never handed out.
    let broken = json.replacen("\"next_key\":1", "\"next_key\":0", 1);
    assert_ne!(broken, json);
    assert!(matches!(
        Correlator::restore(
            CorrelatorConfig::default(),
            CorrelatorSnapshot::from_json(&broken).unwrap()
        ),
        Err(SnapshotError::Inconsistent(_))
    ));
}

#[test]
fn settings_are_not_in_the_snapshot() {
    // Taken with nothing configured (101 calling 102 is internal), restored with a
    // configuration that makes 102 a trunk: the completed record follows the new settings.
    let live = call(A, B, None);
    let mut c = Correlator::new(CorrelatorConfig::default());
    feed(&mut c, &live);
    let cfg = CorrelatorConfig {
        trunks: vec!["102".into()],
        ..CorrelatorConfig::default()
    };
    let mut r = restarted(&c, &cfg);
    let out = feed(&mut r, &call(A, B, Some(5_000))[live.len()..]);
    let out = [out, r.tick(at(60_000))].concat();
    assert_eq!(only_record(&out).direction, Direction::Outbound);
    // The same state continued under the old settings says internal.
    let out = feed(&mut c, &call(A, B, Some(5_000))[live.len()..]);
    let out = [out, c.tick(at(60_000))].concat();
    assert_eq!(only_record(&out).direction, Direction::Internal);
}

// ----- nothing panics -----

fn arb_event() -> impl Strategy<Value = AmiMessage> {
    let names = prop::sample::select(vec![
        "Newchannel",
        "Newstate",
        "DialBegin",
        "DialEnd",
        "BridgeEnter",
        "BridgeLeave",
        "Hold",
        "Unhold",
        "Hangup",
        "VarSet",
        "BlindTransfer",
        "AttendedTransfer",
        "LocalBridge",
        "OriginateResponse",
        "CoreShowChannel",
        "CoreShowChannelsComplete",
        "NewConnectedLine",
        "Cdr",
    ]);
    let keys = prop::sample::select(vec![
        "Channel",
        "Uniqueid",
        "Linkedid",
        "ChannelState",
        "CallerIDNum",
        "ConnectedLineNum",
        "Exten",
        "ChanVariable",
        "DestChannel",
        "DestUniqueid",
        "DestLinkedid",
        "DestChanVariable",
        "DialStatus",
        "Cause",
        "Variable",
        "Value",
        "TransfererUniqueid",
        "TransfereeUniqueid",
        "TransfereeLinkedid",
        "OrigTransfererUniqueid",
        "SecondTransfererUniqueid",
        "SecondTransfererLinkedid",
        "TransferTargetUniqueid",
        "LocalOneUniqueid",
        "LocalTwoUniqueid",
        "Response",
        "Reason",
        "Duration",
        "Extension",
    ]);
    let values = prop::sample::select(vec![
        "",
        "1",
        "2",
        "3",
        "4",
        "6",
        "16",
        "17",
        "26",
        "x",
        "s",
        "ANSWER",
        "BUSY",
        "CANCEL",
        "SIPCALLID=abc",
        "SIPCALLID=",
        "CTIBRIDGE_REQUEST_ID=r",
        "SIPCALLID",
        "DIALSTATUS",
        "CHANUNAVAIL",
        "PJSIP/101-00000001",
        "PJSIP/102-00000002",
        "Local/6@x-00000001;1",
        "Success",
        "00:00:05",
        "99:99",
        "<unknown>",
        "101",
        "5550100",
    ]);
    (names, prop::collection::vec((keys, values), 0..12)).prop_map(|(name, fields)| {
        fields
            .into_iter()
            .fold(AmiMessage::event(name), |b, (k, v)| b.field(k, v))
            .build()
            .unwrap()
    })
}

fn arb_entry() -> impl Strategy<Value = JournalEntry> {
    let target = prop::sample::select(vec![
        "/action-url/incoming_call?call-id=abc&active_user=101&remote=102",
        "/action-url/call_established?active_user=102&remote=101&call_id=5",
        "/action-url/call_terminated?local=103",
        "/action-url/outgoing_call?mac=001565000101&active_user=101&remote=102&call_id=1",
        "/action-url/incoming_call?mac=001565000102&active_user=102&remote=101&call_id=2",
        "/action-url/hold?mac=001565000102&active_user=102&call_id=2",
        "/action-url/dnd_on",
        "/action-url/x/y/z",
        "??",
    ]);
    prop_oneof![
        6 => (0i64..60_000, arb_event()).prop_map(|(ms, m)| ami(at(ms), m)),
        1 => (0i64..60_000, target).prop_map(|(ms, t)| phone(at(ms), t)),
        1 => (0i64..60_000, prop::sample::select(vec![PBX, "*", "other"]), -5_000i64..5_000)
            .prop_map(|(ms, pbx, len)| gap(at(ms), pbx, at(ms - 1_000), at(ms - 1_000 + len))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_input_sequence_panics_and_restarts_change_nothing(
        mut entries in prop::collection::vec(arb_entry(), 0..60),
        sorted in any::<bool>(),
        cut in any::<prop::sample::Index>(),
    ) {
        if sorted {
            entries.sort_by_key(|e| e.t);
        }
        let end = at(200_000);
        let mut whole = Correlator::new(CorrelatorConfig::default());
        let mut expected = feed(&mut whole, &entries);
        expected.extend(whole.tick(end));
        expected.extend(whole.finish());

        let i = if entries.is_empty() { 0 } else { cut.index(entries.len() + 1) };
        let mut a = Correlator::new(CorrelatorConfig::default());
        let mut out = feed(&mut a, &entries[..i]);
        let mut b = restarted(&a, &CorrelatorConfig::default());
        out.extend(feed(&mut b, &entries[i..]));
        out.extend(b.tick(end));
        out.extend(b.finish());
        prop_assert_eq!(json(&out), json(&expected));
        for o in &expected {
            if let Output::CallCompleted(r) = o {
                prop_assert!(r.complete);
                prop_assert!(r.ring_s >= 0.0 && r.talk_s >= 0.0 && r.hold_s >= 0.0);
            }
        }
        // Everything that hung up has completed; live calls have a live channel.
        prop_assert!(b.convs.values().all(|c| c.live > 0));
    }
}

#[test]
fn disposition_of_a_busy_ring_group_member_and_a_no_answer() {
    // One member busy, the other rang out: the caller experienced "no answer".
    let m2 = Ch {
        name: "PJSIP/103-00000003",
        uid: "100.3",
        lid: "100.1",
        num: "103",
        exten: "s",
    };
    let input = vec![
        ami(at(0), ev("Newchannel", &A, 4, &[])),
        ami(at(1), ev("Newchannel", &B, 0, &[])),
        ami(at(2), ev("Newchannel", &m2, 0, &[])),
        ami(at(3), dial("DialBegin", &A, &B, None)),
        ami(at(4), dial("DialBegin", &A, &m2, None)),
        ami(at(100), ev("Hangup", &B, 0, &[("Cause", "17")])),
        ami(at(101), dial("DialEnd", &A, &B, Some("BUSY"))),
        ami(at(20_000), dial("DialEnd", &A, &m2, Some("NOANSWER"))),
        ami(at(20_001), ev("Hangup", &m2, 5, &[("Cause", "19")])),
        ami(at(20_002), ev("Hangup", &A, 4, &[("Cause", "16")])),
    ];
    let (out, _) = run(CorrelatorConfig::default(), &input, at(30_000));
    let r = only_record(&out);
    assert_eq!(r.disposition, Disposition::NoAnswer);
    assert!(r.missed);
    let missed: Vec<bool> = r.legs.iter().map(|l| l.missed).collect();
    assert_eq!(
        missed,
        [false, false, true],
        "only the member that rang out missed it"
    );
}

#[test]
fn a_flood_of_unmatched_callbacks_stays_bounded() {
    let mut c = Correlator::new(CorrelatorConfig::default());
    let t0 = t0();
    let n = super::phone_match::MAX_PENDING_CALLBACKS + 5;
    for i in 0..n {
        let target = format!("/action-url/call_established?active_user=101&remote=102&call_id={i}");
        c.handle(&phone(t0, &target));
    }
    assert_eq!(
        c.pending_callbacks(),
        super::phone_match::MAX_PENDING_CALLBACKS
    );
    assert_eq!(c.orphans().len(), 5, "the oldest gave up early, as orphans");
}

// ----- phone call handles -----

/// Two concurrent calls 101 → 102 (the second starts 5 s later, on both phones' second
/// line). 102 is a Yealink: its callbacks carry its own call handle (7 for the first call, 8
/// for the second), so they can only be matched by account + remote party + time, and both
/// calls have the same parties. A handle stays on the leg it was first tied to.
fn two_calls_with_yealink_handles() -> Vec<JournalEntry> {
    const A2: Ch = Ch {
        name: "PJSIP/101-00000003",
        uid: "100.3",
        lid: "100.3",
        num: "101",
        exten: "102",
    };
    const B2: Ch = Ch {
        name: "PJSIP/102-00000004",
        uid: "100.4",
        lid: "100.3",
        num: "102",
        exten: "s",
    };
    let second: Vec<JournalEntry> = call(A2, B2, Some(20_000))
        .into_iter()
        .map(|mut e| {
            e.t += TimeDelta::seconds(5);
            e
        })
        .collect();
    let cb = |ms: i64, event: &str, remote: &str, handle: &str| {
        phone(
            at(ms),
            &format!(
                "/action-url/{event}?mac=001565000102&active_user=102&remote={remote}&call_id={handle}"
            ),
        )
    };
    with(
        with(call(A, B, Some(30_000)), second),
        vec![
            // Only the first call exists: handle 7 is tied to B.
            cb(60, "incoming_call", "101", "7"),
            // 102 holds the first call as the second one rings, before any callback of the
            // second call, without a remote (the phone left `$remote` unfilled): by party
            // and time B and B2 would do, by handle only B.
            cb(5_030, "hold", "$remote", "7"),
            // 8 is not 7, so not B.
            cb(5_060, "incoming_call", "101", "8"),
            // A remote that is no party of either call (it changed on the phone): the
            // handle still says which call it is.
            cb(9_000, "call_established", "5550199", "8"),
            // The first callback again: a duplicate of handle 7's, on B.
            cb(9_500, "incoming_call", "101", "7"),
            // A third call of the phone that AMI never shows: both legs belong to other
            // handles of this phone, so it waits and becomes an orphan.
            cb(10_000, "incoming_call", "101", "9"),
        ],
    )
}

#[test]
fn a_phone_handle_stays_on_the_leg_it_was_first_tied_to() {
    let input = two_calls_with_yealink_handles();
    let (out, c) = run(CorrelatorConfig::default(), &input, at(60_000));
    let records = completed(&out);
    assert_eq!(records.len(), 2, "{records:#?}");
    let seen = |id: &str| -> Vec<(String, Option<String>)> {
        let r = records.iter().find(|r| r.id == id).expect(id);
        r.correlation
            .iter()
            .map(|m| (m.event.clone(), m.uniqueid.clone()))
            .collect()
    };
    let m = |e: &str, u: &str| (e.to_string(), Some(u.to_string()));
    assert_eq!(
        seen("default:100.1"),
        [m("incoming_call", "100.2"), m("hold", "100.2")]
    );
    assert_eq!(
        seen("default:100.3"),
        [m("incoming_call", "100.4"), m("call_established", "100.4")]
    );
    let orphans: Vec<_> = c
        .orphans()
        .iter()
        .map(|o| (o.callback.call_id.as_deref(), &o.reason))
        .collect();
    assert_eq!(orphans, [(Some("9"), &OrphanReason::NoMatchingCall)]);
}

#[test]
fn handle_ties_survive_a_restart_anywhere() {
    let input = two_calls_with_yealink_handles();
    let cuts: Vec<usize> = (0..=input.len()).collect();
    check_restarts(&CorrelatorConfig::default(), &input, &cuts);
}
