//! Correlator throughput and memory.
//!
//! **Synthetic load, 10,000 concurrent calls** (the benchmark). Each call is an
//! internal A→B call in 12 AMI events (Newchannel ×2, DialBegin, Newstate Ringing, DialEnd
//! ANSWER, Newstate Up, BridgeEnter ×2, BridgeLeave ×2, Hangup ×2), every one a channel event
//! with the full snapshot fields a real Asterisk sends (the heavy case: no cheap `VarSet`,
//! `CEL` or `Newexten`). Events are interleaved phase by phase, so all 10,000 calls are live
//! at once before the hangups start.
//!
//! - `correlator/10k_concurrent_calls`: events/s for the whole load (a fresh correlator per
//!   iteration; building the inputs is not timed). The messages lie in memory in the order
//!   they are processed, as they do live (each one decoded from the socket just before) and in
//!   a journal replay (read line by line).
//! - `correlator/10k_concurrent_calls_scattered_inputs`: the same events, with each call's 12
//!   messages allocated together, so that consecutive events are ~12 messages apart in memory
//!   (how this bench first laid them out; kept to compare with that figure: the difference is
//!   cache misses on 84 MB of cold input, not correlator work).
//! - memory: a counting allocator measures the heap the correlator holds with 10,000 live,
//!   answered calls, printed as bytes per live call, and the size of a snapshot of that state
//!   (`Correlator::snapshot`, JSON) per live call.
//! - allocator: the one the `ctibridge` binary uses (mimalloc); `CTIBRIDGE_BENCH_SYSTEM_ALLOC=1
//!   cargo bench --bench correlator` measures with glibc's malloc instead (see `Counting`).
//!
//! **Recorded mix** (`correlator_recorded_mix/…`): the recordings embedded in the binary
//! (`sim::fixtures`: answered, busy, cancelled, hold, blind transfer, ring group, inbound
//! trunk, click-to-call, registrations), 5,000 instances in turn, each with fresh ids, started
//! 200 µs apart so that they overlap: real Asterisk traffic, ~40 % `VarSet`, plus `CEL`,
//! `Newexten`, device state. Once with `emit_updates` off (replay, rebuild), once on (what
//! `serve` runs: a record for every input that changed a live call).
//!
//! Run: `cargo bench --bench correlator`. Outside criterion, `CTIBRIDGE_BENCH_PASSES=3
//! target/release/deps/correlator-…` runs each load three times and prints events/s by the
//! wall clock and by on-CPU time (`CTIBRIDGE_BENCH_LOAD=synthetic|scattered|mix|mix-updates`
//! picks one); that is also what to run under `perf` or `valgrind --tool=callgrind`.

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use ctibridge::ami::AmiMessage;
use ctibridge::correlator::{Correlator, CorrelatorConfig};
use ctibridge::journal::{Input, JournalEntry};
use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

/// Counts live heap bytes (what the correlator keeps per call) and allocations, around the
/// allocator the `ctibridge` binary uses, mimalloc (`src/main.rs`), so that events/s are those
/// of the service. Built with `CTIBRIDGE_BENCH_SYSTEM_ALLOC=1` in the environment, it wraps
/// the system allocator (glibc's malloc) instead, for comparison with figures taken before the
/// binary switched.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Allocations made (reallocations included), for allocations per event.
static ALLOCS: AtomicIsize = AtomicIsize::new(0);

/// Fixed at compile time, so that every pointer is freed by the allocator that made it.
const SYSTEM_ALLOC: bool = option_env!("CTIBRIDGE_BENCH_SYSTEM_ALLOC").is_some();

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        if SYSTEM_ALLOC {
            System.alloc(layout)
        } else {
            MiMalloc.alloc(layout)
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        if SYSTEM_ALLOC {
            System.dealloc(ptr, layout)
        } else {
            MiMalloc.dealloc(ptr, layout)
        }
    }
    /// Forwarded to the allocator's own `realloc` (which may grow in place), as without this
    /// wrapper; the default would allocate, copy and free every time a `Vec` grows.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        if SYSTEM_ALLOC {
            System.realloc(ptr, layout, new_size)
        } else {
            MiMalloc.realloc(ptr, layout, new_size)
        }
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

/// All events of all calls, phase by phase, with times 100 µs apart. `scattered`: each
/// call's messages allocated together (see the module docs); otherwise each message is
/// copied into a buffer of its own in processing order.
fn load(scattered: bool) -> Vec<JournalEntry> {
    let calls: Vec<Vec<AmiMessage>> = (0..CALLS).map(call_events).collect();
    let t0: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let pbx: Arc<str> = Arc::from("default");
    let mut out = Vec::with_capacity(CALLS * 12);
    for phase in 0..12 {
        for call in &calls {
            let n = out.len() as i64;
            let msg = if scattered {
                call[phase].clone()
            } else {
                ctibridge::ami::parse_message(call[phase].raw(), usize::MAX).expect("re-parse")
            };
            out.push(JournalEntry {
                t: t0 + Duration::microseconds(100 * n),
                input: Input::Ami {
                    pbx: pbx.clone(),
                    msg,
                },
            });
        }
    }
    out
}

/// Instances of each recorded scenario in the recorded mix.
const MIX_CALLS: usize = 5_000;

/// The recorded mix (see the module docs), merged in time order.
fn load_recorded_mix() -> Vec<JournalEntry> {
    let scenarios = ctibridge::sim::fixtures::embedded_scenarios();
    assert!(scenarios.len() >= 8, "the recorded fixtures are embedded");
    let t0: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let pbx: Arc<str> = Arc::from("default");
    let mut timed: Vec<(DateTime<Utc>, usize, AmiMessage)> = Vec::new();
    for i in 0..MIX_CALLS {
        let scenario = &scenarios[i % scenarios.len()];
        let start = t0 + Duration::microseconds(200 * i as i64);
        for m in scenario.instantiate(i as u64 + 1) {
            let at = start + Duration::from_std(m.at).expect("short scenario");
            timed.push((at, i, m.msg));
        }
    }
    timed.sort_by_key(|(at, i, _)| (*at, *i));
    timed
        .into_iter()
        .map(|(t, _, msg)| JournalEntry {
            t,
            input: Input::Ami {
                pbx: pbx.clone(),
                // A buffer of its own, in processing order (see `load`).
                msg: ctibridge::ami::parse_message(msg.raw(), usize::MAX).expect("re-parse"),
            },
        })
        .collect()
}

/// One pass: every event, then time runs out for the last calls. Returns the outputs count.
fn run(config: CorrelatorConfig, events: &[JournalEntry]) -> (Correlator, usize) {
    let mut correlator = Correlator::new(config);
    let mut outputs = 0usize;
    for e in events {
        outputs += correlator.handle(e).len();
    }
    outputs += correlator
        .tick(events.last().unwrap().t + Duration::seconds(60))
        .len();
    (correlator, outputs)
}

fn config() -> CorrelatorConfig {
    CorrelatorConfig {
        emit_updates: false,
        ..CorrelatorConfig::default()
    }
}

fn with_updates() -> CorrelatorConfig {
    CorrelatorConfig {
        emit_updates: true,
        ..CorrelatorConfig::default()
    }
}

fn bench(c: &mut Criterion) {
    let events = load(false);

    // Memory: the heap the correlator holds with every call live and answered (phases 0–7).
    let live_phase_end = CALLS * 8;
    let before = LIVE.load(Ordering::Relaxed);
    let mut correlator = Correlator::new(config());
    for e in &events[..live_phase_end] {
        drop(correlator.handle(e));
    }
    let held = LIVE.load(Ordering::Relaxed) - before;
    let live = correlator.live_calls().max(1);
    println!(
        "correlator: {} live calls hold {} bytes: {} bytes per live call",
        correlator.live_calls(),
        held,
        held / live as isize
    );
    let snapshot = correlator.snapshot().to_json();
    println!(
        "correlator: snapshot of {} live calls: {} bytes of JSON: {} bytes per live call",
        correlator.live_calls(),
        snapshot.len(),
        snapshot.len() / live
    );
    drop(correlator);

    let mut group = c.benchmark_group("correlator");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    let synthetic = |b: &mut criterion::Bencher, events: &[JournalEntry]| {
        b.iter_batched(
            || (),
            |()| {
                let (correlator, outputs) = run(config(), events);
                assert!(
                    outputs >= 2 * CALLS,
                    "every call starts and completes: {outputs}"
                );
                correlator
            },
            BatchSize::LargeInput,
        )
    };
    group.bench_function("10k_concurrent_calls", |b| synthetic(b, &events));
    drop(events);
    let scattered = load(true);
    group.bench_function("10k_concurrent_calls_scattered_inputs", |b| {
        synthetic(b, &scattered)
    });
    drop(scattered);
    group.finish();

    let mix = load_recorded_mix();
    let mut group = c.benchmark_group("correlator_recorded_mix");
    group.sample_size(10);
    group.throughput(Throughput::Elements(mix.len() as u64));
    for (name, cfg) in [
        ("5k_concurrent_calls", config as fn() -> CorrelatorConfig),
        ("5k_concurrent_calls_with_updates", with_updates),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(|| (), |()| run(cfg(), &mix).0, BatchSize::LargeInput)
        });
    }
    group.finish();
}

criterion_group!(benches, bench);

/// On-CPU time of the calling thread (`/proc/thread-self/schedstat`, Linux): the time it
/// actually ran, not the time it waited for a core that other processes were using.
fn thread_cpu_time() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(std::time::Duration::from_nanos(ns))
}

/// `CTIBRIDGE_BENCH_PASSES=N`: N passes over each load (or the one named by
/// `CTIBRIDGE_BENCH_LOAD`) outside criterion, each printed as events/s by the wall clock and by
/// this thread's on-CPU time (on a machine shared with other work, the second is closer to
/// what the code costs). Also what profilers should run: they then see the correlator, not
/// criterion.
fn passes(n: usize, only: Option<String>) {
    type Load = (
        &'static str,
        fn() -> Vec<JournalEntry>,
        fn() -> CorrelatorConfig,
    );
    let loads: [Load; 4] = [
        ("synthetic", || load(false), config),
        ("scattered", || load(true), config),
        ("mix", load_recorded_mix, config),
        ("mix-updates", load_recorded_mix, with_updates),
    ];
    for (name, load, cfg) in loads {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let events = load();
        for pass in 1..=n {
            let allocs = ALLOCS.load(Ordering::Relaxed);
            let (wall, cpu) = (std::time::Instant::now(), thread_cpu_time());
            let (correlator, outputs) = run(cfg(), &events);
            let wall = wall.elapsed().as_secs_f64();
            let allocs = ALLOCS.load(Ordering::Relaxed) - allocs;
            let cpu = cpu
                .zip(thread_cpu_time())
                .map(|(a, b)| (b - a).as_secs_f64());
            drop(correlator);
            let per_s = |secs: f64| events.len() as f64 / secs;
            println!(
                "{name} pass {pass}: {} events, {outputs} outputs, {:.1} allocations/event: \
                 {:.0} events/s wall, {}",
                events.len(),
                allocs as f64 / events.len() as f64,
                per_s(wall),
                cpu.map_or("no CPU time".to_string(), |c| format!(
                    "{:.0} events/s on-CPU",
                    per_s(c)
                ))
            );
        }
    }
}

fn main() {
    if let Some(n) = std::env::var_os("CTIBRIDGE_BENCH_PASSES") {
        let n = n.to_str().and_then(|n| n.parse().ok()).unwrap_or(1);
        passes(n, std::env::var("CTIBRIDGE_BENCH_LOAD").ok());
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
