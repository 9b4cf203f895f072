//! Correlator throughput and memory on a synthetic load of 10,000 concurrent calls.
//!
//! Each call is an internal A→B call in 12 AMI events (Newchannel ×2, DialBegin, Newstate
//! Ringing, DialEnd ANSWER, Newstate Up, BridgeEnter ×2, BridgeLeave ×2, Hangup ×2), with the
//! snapshot fields a real Asterisk sends. Events are interleaved phase by phase, so all 10,000
//! calls are live at once before the hangups start.
//!
//! - `correlator/10k_concurrent_calls`: events/s for the whole load (a fresh correlator per
//!   iteration; building the inputs is not timed).
//! - memory: a counting allocator measures the heap the correlator holds with 10,000 live,
//!   answered calls, printed as bytes per live call (run: `cargo bench --bench correlator`).

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ctibridge::ami::AmiMessage;
use ctibridge::correlator::{Correlator, CorrelatorConfig};
use ctibridge::journal::{Input, JournalEntry};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

/// Counts live heap bytes, to measure what the correlator keeps per call.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const CALLS: usize = 10_000;

/// Who a channel is: the fixed part of its snapshot.
struct Chan<'a> {
    name: &'a str,
    cid: (&'a str, &'a str),
    exten: &'a str,
    uniqueid: &'a str,
    linkedid: &'a str,
}

/// The snapshot fields of one channel, as Asterisk sends them (prefix `""` or `Dest`).
fn snapshot(
    b: ctibridge::ami::AmiMessageBuilder,
    prefix: &str,
    chan: &Chan,
    state: (&str, &str),
) -> ctibridge::ami::AmiMessageBuilder {
    b.field(format!("{prefix}Channel"), chan.name)
        .field(format!("{prefix}ChannelState"), state.0)
        .field(format!("{prefix}ChannelStateDesc"), state.1)
        .field(format!("{prefix}CallerIDNum"), chan.cid.0)
        .field(format!("{prefix}CallerIDName"), chan.cid.1)
        .field(format!("{prefix}ConnectedLineNum"), "<unknown>")
        .field(format!("{prefix}ConnectedLineName"), "<unknown>")
        .field(format!("{prefix}Language"), "en")
        .field(format!("{prefix}AccountCode"), "")
        .field(format!("{prefix}Context"), "internal")
        .field(format!("{prefix}Exten"), chan.exten)
        .field(format!("{prefix}Priority"), "1")
        .field(format!("{prefix}Uniqueid"), chan.uniqueid)
        .field(format!("{prefix}Linkedid"), chan.linkedid)
        .field(
            format!("{prefix}ChanVariable"),
            format!("SIPCALLID={}@bench", chan.uniqueid),
        )
}

/// The 12 events of call `i`, grouped by phase: `phases[p]` is the p-th event.
fn call_events(i: usize) -> Vec<AmiMessage> {
    let a = format!("PJSIP/{}-{:08x}", 1000 + i % 500, 2 * i);
    let b = format!("PJSIP/{}-{:08x}", 2000 + i % 500, 2 * i + 1);
    let (ua, ub) = (
        format!("1795000000.{}", 2 * i),
        format!("1795000000.{}", 2 * i + 1),
    );
    let (na, nb) = (format!("{}", 1000 + i % 500), format!("{}", 2000 + i % 500));
    let bridge = format!("bridge-{i}");
    let ring = ("4", "Ring");
    let ringing = ("5", "Ringing");
    let up = ("6", "Up");
    let down = ("0", "Down");
    let ev = |name: &str| AmiMessage::event(name).field("Privilege", "call,all");
    let caller = Chan {
        name: &a,
        cid: (&na, "Caller"),
        exten: &nb,
        uniqueid: &ua,
        linkedid: &ua,
    };
    let callee = Chan {
        name: &b,
        cid: (&nb, "Callee"),
        exten: "s",
        uniqueid: &ub,
        linkedid: &ua,
    };
    let a_snap = |bld, st| snapshot(bld, "", &caller, st);
    let b_snap = |bld, prefix: &str, st| snapshot(bld, prefix, &callee, st);
    let build = |m: ctibridge::ami::AmiMessageBuilder| m.build().expect("bench event");
    vec![
        build(a_snap(ev("Newchannel"), ring)),
        build(b_snap(ev("Newchannel"), "", down)),
        build(b_snap(a_snap(ev("DialBegin"), ring), "Dest", down).field("DialString", nb.clone())),
        build(b_snap(ev("Newstate"), "", ringing)),
        build(b_snap(a_snap(ev("DialEnd"), ring), "Dest", up).field("DialStatus", "ANSWER")),
        build(a_snap(ev("Newstate"), up)),
        build(b_snap(ev("BridgeEnter"), "", up).field("BridgeUniqueid", bridge.clone())),
        build(a_snap(ev("BridgeEnter"), up).field("BridgeUniqueid", bridge.clone())),
        build(a_snap(ev("BridgeLeave"), up).field("BridgeUniqueid", bridge.clone())),
        build(b_snap(ev("BridgeLeave"), "", up).field("BridgeUniqueid", bridge)),
        build(
            a_snap(ev("Hangup"), up)
                .field("Cause", "16")
                .field("Cause-txt", "Normal Clearing"),
        ),
        build(
            b_snap(ev("Hangup"), "", up)
                .field("Cause", "16")
                .field("Cause-txt", "Normal Clearing"),
        ),
    ]
}

/// All events of all calls, phase by phase, with times 100 µs apart.
fn load() -> Vec<JournalEntry> {
    let calls: Vec<Vec<AmiMessage>> = (0..CALLS).map(call_events).collect();
    let t0: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let pbx: Arc<str> = Arc::from("default");
    let mut out = Vec::with_capacity(CALLS * 12);
    for phase in 0..12 {
        for call in &calls {
            let n = out.len() as i64;
            out.push(JournalEntry {
                t: t0 + Duration::microseconds(100 * n),
                input: Input::Ami {
                    pbx: pbx.clone(),
                    msg: call[phase].clone(),
                },
            });
        }
    }
    out
}

fn config() -> CorrelatorConfig {
    CorrelatorConfig {
        emit_updates: false,
        ..CorrelatorConfig::default()
    }
}

fn bench(c: &mut Criterion) {
    let events = load();

    // Memory: the heap the correlator holds with every call live and answered (phases 0–7).
    let live_phase_end = CALLS * 8;
    let before = LIVE.load(Ordering::Relaxed);
    let mut correlator = Correlator::new(config());
    for e in &events[..live_phase_end] {
        drop(correlator.handle(e));
    }
    let held = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "correlator: {} live calls hold {} bytes: {} bytes per live call",
        correlator.live_calls(),
        held,
        held / correlator.live_calls().max(1) as isize
    );
    drop(correlator);

    let mut group = c.benchmark_group("correlator");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("10k_concurrent_calls", |b| {
        b.iter_batched(
            || Correlator::new(config()),
            |mut correlator| {
                let mut completed = 0usize;
                for e in &events {
                    completed += correlator.handle(e).len();
                }
                completed += correlator
                    .tick(events.last().unwrap().t + Duration::seconds(10))
                    .len();
                assert!(completed >= CALLS, "every call completes: {completed}");
                correlator
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
