//! The deriver on the recorded calls (embedded fixtures), and the hub's numbering, resume,
//! filters and slow-client policy.

use super::*;
use crate::correlator::{Correlator, CorrelatorConfig};
use crate::journal::{Input, JournalEntry};
use crate::sim::fixtures::embedded_scenario;
use chrono::{DateTime, TimeDelta, Utc};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).unwrap()
}

/// The events a recorded scenario yields: correlator (grace included) → deriver.
fn derive_scenario(name: &str) -> Vec<LiveEvent> {
    let scenario = embedded_scenario(name).expect("embedded scenario");
    let mut correlator = Correlator::new(CorrelatorConfig::default());
    let mut deriver = Deriver::new();
    let mut events = Vec::new();
    let mut last = t0();
    for m in &scenario.messages {
        last = t0() + TimeDelta::from_std(m.at).unwrap();
        let entry = JournalEntry {
            t: last,
            input: Input::Ami {
                pbx: "default".into(),
                msg: m.msg.clone(),
            },
        };
        for output in correlator.handle(&entry) {
            deriver.derive(&output, &mut events);
        }
    }
    for output in correlator.tick(last + TimeDelta::seconds(60)) {
        deriver.derive(&output, &mut events);
    }
    assert_eq!(deriver.live_calls(), 0, "every call ended");
    events
}

/// `type` plus the leg's endpoint / who answered / the transfer, for compact assertions.
fn summary(events: &[LiveEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.data {
            EventData::Leg { leg, .. } => {
                format!("{} {}", e.kind, leg.endpoint.as_deref().unwrap_or("?"))
            }
            EventData::Answered { answered_by, .. } => {
                format!("{} {}", e.kind, answered_by.as_deref().unwrap_or("?"))
            }
            EventData::Transferred { transfer, .. } => format!(
                "{} {} {}->{}",
                e.kind,
                transfer.kind,
                transfer.by.as_deref().unwrap_or("?"),
                transfer.to.as_deref().unwrap_or("?")
            ),
            _ => e.kind.to_string(),
        })
        .collect()
}

#[test]
fn answered_call_rings_answers_and_ends() {
    let events = derive_scenario("answered_caller_hangup");
    assert_eq!(
        summary(&events),
        [
            "call.started",
            "call.ringing 102",
            "call.answered 102",
            "call.ended"
        ]
    );
    let ended = events.last().unwrap();
    let EventData::Ended { record, .. } = &ended.data else {
        panic!("call.ended carries the record");
    };
    assert!(record.complete);
    assert_eq!(record.answered_by.as_deref(), Some("102"));
    assert_eq!(ended.extensions, ["101", "102"]);
    assert!(events
        .iter()
        .all(|e| e.call_id.as_deref() == Some(&record.id[..])));
    assert!(
        events.windows(2).all(|w| w[0].at <= w[1].at),
        "times in order"
    );
}

#[test]
fn hold_and_resume_are_announced_for_the_phone_that_held() {
    let events = derive_scenario("hold_unhold");
    assert_eq!(
        summary(&events),
        [
            "call.started",
            "call.ringing 102",
            "call.answered 102",
            "call.held 102",
            "call.unheld 102",
            "call.ended"
        ]
    );
}

#[test]
fn blind_transfer_announces_the_transfer_and_the_new_party() {
    let events = derive_scenario("blind_transfer");
    assert_eq!(
        summary(&events),
        [
            "call.started",
            "call.ringing 102",
            "call.answered 102",
            "call.transferred blind 102->103",
            "call.ringing 103",
            "call.answered 103",
            "call.ended"
        ]
    );
}

#[test]
fn ring_group_rings_both_and_one_answers() {
    let events = derive_scenario("ring_group");
    assert_eq!(
        summary(&events),
        [
            "call.started",
            "call.ringing 102",
            "call.ringing 103",
            "call.answered 103",
            "call.ended"
        ]
    );
}

#[test]
fn missed_and_busy_calls_never_answer() {
    assert_eq!(
        summary(&derive_scenario("missed_caller_cancel")),
        ["call.started", "call.ringing 103", "call.ended"]
    );
    let busy = summary(&derive_scenario("busy_486"));
    assert_eq!(busy.first().map(String::as_str), Some("call.started"));
    assert_eq!(busy.last().map(String::as_str), Some("call.ended"));
    assert!(!busy.iter().any(|s| s.starts_with("call.answered")));
}

#[test]
fn click_to_call_answers_once_by_the_dialled_party() {
    let events = derive_scenario("originate_click2call");
    let s = summary(&events);
    assert_eq!(s.first().map(String::as_str), Some("call.started"));
    assert_eq!(
        s.iter()
            .filter(|x| x.starts_with("call.answered"))
            .collect::<Vec<_>>(),
        ["call.answered 102"]
    );
    assert_eq!(s.last().map(String::as_str), Some("call.ended"));
}

#[test]
fn deriving_is_deterministic() {
    for name in ["blind_transfer", "ring_group", "hold_unhold"] {
        assert_eq!(derive_scenario(name), derive_scenario(name), "{name}");
    }
}

#[test]
fn a_merge_does_not_repeat_what_was_announced() {
    use crate::record::{CallRecord, Direction, Disposition, Leg, Party, Transfer};
    let at = |s| t0() + TimeDelta::seconds(s);
    let entry =
        |s: i64, event: &str, subject: &str, detail: Option<&str>| crate::record::TimelineEntry {
            at: at(s),
            source: crate::record::Source::Ami,
            event: event.into(),
            subject: Some(subject.into()),
            detail: detail.map(Into::into),
        };
    let leg = |ch: &str, uid: &str, ep: &str, answered: Option<i64>| Leg {
        channel: ch.into(),
        uniqueid: uid.into(),
        endpoint: Some(ep.into()),
        answered_at: answered.map(at),
        ..Leg::default()
    };
    let record = |id: &str, legs: Vec<Leg>, timeline, transfers| CallRecord {
        id: id.into(),
        pbx: "default".into(),
        linkedid: id.into(),
        direction: Direction::Internal,
        from: Party::default(),
        to: Party::default(),
        started_at: at(0),
        answered_at: legs.get(1).and_then(|l: &Leg| l.answered_at),
        ended_at: None,
        ring_s: 0.0,
        talk_s: 0.0,
        hold_s: 0.0,
        disposition: Disposition::Answered,
        missed: false,
        answered_by: legs.get(1).and_then(|l| l.endpoint.clone()),
        legs,
        transfers,
        timeline,
        correlation: Vec::new(),
        gaps: Vec::new(),
        dial_request_id: None,
        complete: false,
    };
    let a_legs = vec![
        leg("PJSIP/101-1", "a1", "101", Some(2)),
        leg("PJSIP/102-2", "a2", "102", Some(2)),
    ];
    let a_tl = vec![
        entry(1, "Newstate", "PJSIP/102-2", Some("Ringing")),
        entry(2, "Newstate", "PJSIP/102-2", Some("Up")),
    ];
    let b_legs = vec![
        leg("PJSIP/102-3", "b1", "102", Some(6)),
        leg("PJSIP/103-4", "b2", "103", Some(6)),
    ];
    let b_tl = vec![
        entry(5, "Newstate", "PJSIP/103-4", Some("Ringing")),
        entry(6, "Newstate", "PJSIP/103-4", Some("Up")),
    ];
    let mut d = Deriver::new();
    let mut out = Vec::new();
    d.derive(
        &Output::CallStarted(record("A", a_legs.clone(), a_tl.clone(), vec![])),
        &mut out,
    );
    d.derive(
        &Output::CallStarted(record("B", b_legs.clone(), b_tl.clone(), vec![])),
        &mut out,
    );
    assert_eq!(
        summary(&out),
        [
            "call.started",
            "call.ringing 102",
            "call.answered 102",
            "call.started",
            "call.ringing 103",
            "call.answered 103"
        ]
    );
    out.clear();
    // The attended transfer merges B into A: A's record now holds both, sorted, plus the transfer.
    let mut legs = a_legs;
    legs.extend(b_legs);
    let mut tl = a_tl;
    tl.extend(b_tl);
    tl.push(entry(8, "AttendedTransfer", "PJSIP/102-2", None));
    tl.sort_by_key(|e| e.at);
    let transfer = Transfer {
        at: Some(at(8)),
        kind: "attended".into(),
        by: Some("102".into()),
        to: Some("103".into()),
        result: Some("Success".into()),
    };
    d.derive(
        &Output::CallMerged {
            id: "B".into(),
            into: "A".into(),
        },
        &mut out,
    );
    d.derive(
        &Output::CallUpdated(record("A", legs, tl, vec![transfer])),
        &mut out,
    );
    assert_eq!(
        summary(&out),
        ["call.merged", "call.transferred attended 102->103"]
    );
    assert_eq!(out[0].call_id.as_deref(), Some("B"));
    assert_eq!(
        out[0].extensions,
        ["101", "102", "103"],
        "both calls' parties"
    );
}

// ----- hub -----

fn gap_event(n: i64) -> LiveEvent {
    LiveEvent::gap(t0(), &format!("pbx{n}"), t0(), t0(), "test")
}

fn phone_event(ext: &str) -> LiveEvent {
    LiveEvent::phone_state(t0(), ext, serde_json::json!({"extension": ext}), "dnd_on")
}

fn hub(buffer: usize, client: usize) -> Hub {
    Hub::new(HubOptions {
        buffer_events: buffer,
        client_buffer: client,
        first_id: 100,
    })
}

async fn ids(sub: &mut Subscription, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        match sub.next().await {
            hub::Next::Event(p) => out.push(p.id),
            hub::Next::Closed(r) => panic!("closed: {r:?}"),
        }
    }
    out
}

#[tokio::test]
async fn ids_are_monotonic_and_the_json_carries_them() {
    let h = hub(10, 10);
    let mut sub = h.subscribe(Filter::all(), None).unwrap();
    assert_eq!(h.publish(&gap_event(1)), 100);
    assert_eq!(h.publish(&gap_event(2)), 101);
    let hub::Next::Event(p) = sub.next().await else {
        panic!()
    };
    let v: serde_json::Value = serde_json::from_slice(&p.json).unwrap();
    assert_eq!(v["id"], 100);
    assert_eq!(v["type"], "gap");
    assert_eq!(v["data"]["pbx"], "pbx1");
    let sse = std::str::from_utf8(&p.sse).unwrap();
    assert!(
        sse.starts_with("id: 100\nevent: gap\ndata: {\"id\":100,"),
        "{sse}"
    );
    assert!(sse.ends_with("}\n\n"));
    assert_eq!(sse.matches('\n').count(), 4, "one data line");
}

#[tokio::test]
async fn resume_gets_exactly_the_missed_events() {
    let h = hub(10, 100);
    for n in 0..5 {
        h.publish(&gap_event(n));
    }
    let mut sub = h.subscribe(Filter::all(), Some(102)).unwrap();
    assert!(sub.reset.is_none());
    h.publish(&gap_event(5));
    assert_eq!(ids(&mut sub, 3).await, [103, 104, 105]);
    assert!(sub.try_next().is_none());
    // Up to date: nothing to replay.
    let mut sub = h.subscribe(Filter::all(), Some(105)).unwrap();
    assert!(sub.reset.is_none() && sub.try_next().is_none());
}

#[tokio::test]
async fn resume_beyond_the_buffer_says_so_first() {
    let h = hub(3, 100);
    for n in 0..6 {
        h.publish(&gap_event(n)); // ids 100..=105, buffer keeps 103..=105
    }
    let mut sub = h.subscribe(Filter::all(), Some(101)).unwrap();
    assert_eq!(
        sub.reset,
        Some(hub::Reset {
            last_event_id: 101,
            oldest_id: Some(103),
            next_id: 106
        })
    );
    assert_eq!(ids(&mut sub, 3).await, [103, 104, 105]);
    // 102 was the last one evicted: resuming right after it is still exact.
    assert!(h
        .subscribe(Filter::all(), Some(102))
        .unwrap()
        .reset
        .is_none());
    // An id from the future (another run) resets and replays nothing.
    let mut sub = h.subscribe(Filter::all(), Some(5000)).unwrap();
    assert!(sub.reset.is_some());
    assert!(sub.try_next().is_none());
}

#[tokio::test]
async fn filters_by_type_pattern_and_extension() {
    let h = hub(10, 100);
    let f = Filter::parse(Some("phone.*, gap"), Some("101")).unwrap();
    let mut sub = h.subscribe(f, None).unwrap();
    h.publish(&phone_event("102"));
    h.publish(&phone_event("101"));
    h.publish(&gap_event(1)); // a gap concerns every extension
    assert_eq!(ids(&mut sub, 2).await, [101, 102]);
    assert!(sub.try_next().is_none());
    assert!(Filter::parse(Some("calls.*"), None).is_err());
    assert!(Filter::parse(Some("call.exploded"), None).is_err());
    assert!(Filter::parse(Some("*"), None)
        .unwrap()
        .matches_type(EventType::Gap));
    // Resume applies the filter to the backlog too.
    let f = Filter::parse(Some("phone.state"), None).unwrap();
    let mut sub = h.subscribe(f, Some(99)).unwrap();
    assert_eq!(ids(&mut sub, 2).await, [100, 101]);
    assert!(sub.try_next().is_none());
}

#[tokio::test]
async fn a_stalled_client_is_cut_and_others_keep_receiving() {
    let h = hub(100, 4);
    let mut stalled = h.subscribe(Filter::all(), None).unwrap();
    let mut healthy = h.subscribe(Filter::all(), None).unwrap();
    let cut = stalled.cut();
    for n in 0..10 {
        h.publish(&gap_event(n));
        assert_eq!(ids(&mut healthy, 1).await, [100 + n as u64]);
    }
    assert_eq!(h.subscribers(), 1);
    assert_eq!(
        h.stats()
            .slow_clients_cut
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    cut.cancelled().await;
    // What was queued before the cut is still readable, then the reason.
    assert_eq!(ids(&mut stalled, 4).await, [100, 101, 102, 103]);
    match stalled.next().await {
        hub::Next::Closed(r) => {
            assert_eq!(r, hub::CloseReason::SlowConsumer { queued: 4 });
            assert!(r.json().contains("\"reason\":\"slow_consumer\""));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn close_ends_streams_and_sinks() {
    let h = hub(10, 10);
    let mut sub = h.subscribe(Filter::all(), None).unwrap();
    let mut sink = h.add_sink("test", 10);
    h.publish(&gap_event(0));
    h.close();
    assert_eq!(h.publish(&gap_event(1)), 0);
    assert_eq!(ids(&mut sub, 1).await, [100]);
    assert!(matches!(
        sub.next().await,
        hub::Next::Closed(hub::CloseReason::Shutdown)
    ));
    assert_eq!(sink.recv().await.unwrap().id, 100);
    assert!(sink.recv().await.is_none());
    assert!(h.subscribe(Filter::all(), None).is_err());
}
