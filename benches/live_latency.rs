//! Live event latency under load: AMI message in → SSE event out.
//!
//! Runs the real service (journal, correlator, store, hub, HTTP server) against the in-process
//! simulated Asterisk, on loopback, and drives it at a fixed AMI message rate:
//! - **load**: the recorded calls of the brief (answered, busy, missed, ring group, blind
//!   transfer, trunk inbound, hold), each replayed under fresh ids, interleaved so that many
//!   calls are live at once — every message goes through the journal and the correlator,
//!   calls complete and are stored;
//! - **probes**: `Hold` / `Unhold` messages, alternating, on long-lived answered calls set up
//!   before the measurement. Each probe's send time is taken just before the simulated
//!   Asterisk queues it for its socket; an SSE client (raw HTTP/1.1 over TCP) notes when the
//!   `call.held` / `call.unheld` event for that channel arrives.
//!
//! Reported: probe latency p50/p90/p99/p99.9/max
//! - **bridge read → SSE**: the event's `at`, stamped when the bridge read the probe from its
//!   AMI socket, → SSE client receive. This is "AMI message in → SSE event out", the figure
//!   the live-event latency target is about;
//! - **AMI send → SSE**: from just before the simulated Asterisk queues the probe for its
//!   socket. On top of the bridge, it holds the simulator's own send queue (its writer task
//!   runs after the driver's burst) and the loopback socket.
//!
//! The load messages are prepared before the clock starts, so the driver itself costs little
//! while measuring; the SSE client parses only the probe events, and the simulator's log of
//! sent messages (for tests) is off.
//!
//! `cargo bench --bench live_latency -- [--rate N] [--seconds S] [--probes P] [--warmup W]
//! [--store file|memory]` (defaults: 10000 messages/s, 10 s measured after 2 s of warm-up,
//! 200 probes/s, the store in a SQLite file as deployed).

use chrono::Utc;
use ctibridge::ami::AmiMessage;
use ctibridge::config;
use ctibridge::service::Service;
use ctibridge::sim::ami_server::{AmiServer, AmiServerConfig};
use ctibridge::sim::fixtures::{embedded_scenario, TimedMessage};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Long-lived answered calls that carry the probes.
const PROBE_CALLS: u64 = 200;
/// Recorded calls replayed at once, interleaved.
const CONCURRENT_CALLS: usize = 60;
const LOAD_SCENARIOS: [&str; 7] = [
    "answered_caller_hangup",
    "busy_486",
    "missed_caller_cancel",
    "ring_group",
    "blind_transfer",
    "trunk_inbound",
    "hold_unhold",
];

struct Args {
    /// `file` (SQLite file, as deployed) or `memory` (`sqlite::memory:`, for comparison).
    store: String,
    rate: u64,
    seconds: u64,
    probes: u64,
    warmup: u64,
}

fn args() -> Args {
    let mut a = Args {
        store: "file".into(),
        rate: 10_000,
        seconds: 10,
        probes: 200,
        warmup: 2,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it
    // (a debug build, in CI): then only a short smoke run, which still drives every part.
    if !argv.iter().any(|a| a == "--bench") {
        a.rate = 500;
        a.seconds = 1;
        a.probes = 20;
        a.warmup = 0;
    }
    let mut i = 0;
    while i < argv.len() {
        let value = || argv.get(i + 1).and_then(|v| v.parse().ok());
        match argv[i].as_str() {
            "--rate" => a.rate = value().expect("--rate N"),
            "--seconds" => a.seconds = value().expect("--seconds S"),
            "--probes" => a.probes = value().expect("--probes P"),
            "--warmup" => a.warmup = value().expect("--warmup W"),
            "--store" => a.store = argv.get(i + 1).cloned().expect("--store file|memory"),
            _ => {
                i += 1; // `--bench` from cargo, and anything else: ignored
                continue;
            }
        }
        i += 2;
    }
    a
}

/// Interleaves recorded calls: `CONCURRENT_CALLS` players, each replaying one scenario under a
/// fresh generation and starting the next when it is done.
struct Load {
    scenarios: Vec<ctibridge::sim::fixtures::Scenario>,
    players: Vec<VecDeque<TimedMessage>>,
    next_generation: u64,
    turn: usize,
}

impl Load {
    fn new(first_generation: u64) -> Load {
        let scenarios = LOAD_SCENARIOS
            .iter()
            .map(|n| embedded_scenario(n).expect("embedded scenario"))
            .collect();
        let mut load = Load {
            scenarios,
            players: Vec::new(),
            next_generation: first_generation,
            turn: 0,
        };
        for _ in 0..CONCURRENT_CALLS {
            let call = load.new_call();
            load.players.push(call);
        }
        load
    }

    fn new_call(&mut self) -> VecDeque<TimedMessage> {
        let g = self.next_generation;
        self.next_generation += 1;
        let s = &self.scenarios[(g as usize) % self.scenarios.len()];
        s.instantiate(g).into()
    }

    fn next(&mut self) -> AmiMessage {
        self.turn = (self.turn + 1) % self.players.len();
        if self.players[self.turn].is_empty() {
            self.players[self.turn] = self.new_call();
        }
        self.players[self.turn]
            .pop_front()
            .expect("a scenario has messages")
            .msg
    }
}

/// One probe call: its held channel and the `Hold` / `Unhold` messages for it.
struct ProbeCall {
    channel: String,
    hold: AmiMessage,
    unhold: AmiMessage,
    held: bool,
}

/// Sets up the probe calls (the hold fixture up to its `Hold`, under fresh ids).
fn probe_calls(ami: &AmiServer) -> Vec<ProbeCall> {
    let scenario = embedded_scenario("hold_unhold").expect("hold fixture");
    let mut calls = Vec::new();
    for g in 0..PROBE_CALLS {
        let msgs = scenario.instantiate(1_000_000 + g);
        let hold_at = msgs
            .iter()
            .position(|m| m.msg.event_name() == Some("Hold"))
            .expect("the fixture holds");
        let unhold = msgs
            .iter()
            .find(|m| m.msg.event_name() == Some("Unhold"))
            .expect("the fixture resumes")
            .msg
            .clone();
        for m in &msgs[..hold_at] {
            ami.send_event(&m.msg);
        }
        let hold = msgs[hold_at].msg.clone();
        calls.push(ProbeCall {
            channel: hold.get("Channel").unwrap_or_default().to_string(),
            hold,
            unhold,
            held: false,
        });
    }
    calls
}

type Pending = Arc<Mutex<HashMap<String, VecDeque<Instant>>>>;

#[derive(Default)]
struct Samples {
    probe: Vec<Duration>,
    internal: Vec<Duration>,
    events: u64,
}

/// Reads the SSE stream; matches probe events to their send times.
async fn sse_reader(
    addr: std::net::SocketAddr,
    pending: Pending,
    measuring: Arc<AtomicBool>,
    samples: Arc<Mutex<Samples>>,
) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(
        b"GET /api/v1/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer bench\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = Instant::now();
        let now_utc = Utc::now();
        buf.extend_from_slice(&chunk[..n]);
        // Events are `data: {json}` lines; chunked framing and headers are skipped.
        let mut consumed = 0;
        while let Some(pos) = memchr(&buf[consumed..], b'\n') {
            let line = &buf[consumed..consumed + pos];
            consumed += pos + 1;
            let Some(json) = line.strip_prefix(b"data: ") else {
                continue;
            };
            // Only probe events are parsed: the client should cost the machine little.
            if !contains(json, b"\"type\":\"call.held\"")
                && !contains(json, b"\"type\":\"call.unheld\"")
            {
                if measuring.load(Ordering::Relaxed) {
                    samples.lock().unwrap().events += 1;
                }
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
                continue;
            };
            if !measuring.load(Ordering::Relaxed) {
                // Warm-up: still match probes so the queues stay aligned.
                if let Some(ch) = v["data"]["leg"]["channel"].as_str() {
                    if v["type"] == "call.held" || v["type"] == "call.unheld" {
                        if let Some(q) = pending.lock().unwrap().get_mut(ch) {
                            q.pop_front();
                        }
                    }
                }
                continue;
            }
            let mut s = samples.lock().unwrap();
            s.events += 1;
            if v["type"] == "call.held" || v["type"] == "call.unheld" {
                if let Some(ch) = v["data"]["leg"]["channel"].as_str() {
                    if let Some(sent) = pending
                        .lock()
                        .unwrap()
                        .get_mut(ch)
                        .and_then(|q| q.pop_front())
                    {
                        s.probe.push(now - sent);
                        // The event's `at` is when the bridge read the probe from its socket.
                        let read_at = v["at"]
                            .as_str()
                            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok());
                        if let Some(at) = read_at {
                            if let Ok(d) = (now_utc - at.with_timezone(&Utc)).to_std() {
                                s.internal.push(d);
                            }
                        }
                    }
                }
            }
        }
        buf.drain(..consumed);
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn memchr(hay: &[u8], needle: u8) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<28} n={:<7} p50={:>8.1}µs p90={:>8.1}µs p99={:>8.1}µs p99.9={:>8.1}µs max={:>8.1}µs",
        v.len(),
        us(percentile(&v, 0.50)),
        us(percentile(&v, 0.90)),
        us(percentile(&v, 0.99)),
        us(percentile(&v, 0.999)),
        us(v.last().copied().unwrap_or_default()),
    );
}

/// The consumer's work per AMI message, without sockets: the correlator alone (records only
/// on completion), with a record per update (what the service runs), and with the deriver
/// and the hub (serialising every event) on top. Shows what live events cost the consumer.
fn offline(args: &Args) {
    use ctibridge::correlator::{Correlator, CorrelatorConfig};
    use ctibridge::journal::{Input, JournalEntry};
    use ctibridge::live::{Deriver, Hub, HubOptions};
    let n = (args.rate * args.seconds) as usize;
    let mut load = Load::new(1);
    let t0 = Utc::now();
    let entries: Vec<JournalEntry> = (0..n)
        .map(|i| JournalEntry {
            // 10 µs apart: calls complete (grace 1 s) while the load runs.
            t: t0 + chrono::TimeDelta::microseconds(10 * i as i64),
            input: Input::Ami {
                pbx: "default".into(),
                msg: load.next(),
            },
        })
        .collect();
    for (name, updates, derive) in [
        ("correlator, no updates", false, false),
        ("correlator, updates", true, false),
        ("correlator+deriver+hub", true, true),
    ] {
        let mut c = Correlator::new(CorrelatorConfig {
            emit_updates: updates,
            grace: Duration::from_secs(1),
            ..CorrelatorConfig::default()
        });
        let hub = Hub::new(HubOptions::default());
        let mut d = Deriver::new();
        let mut events = Vec::new();
        let mut published = 0u64;
        let start = Instant::now();
        for e in &entries {
            let out = c.handle(e);
            if derive {
                for o in &out {
                    d.derive(o, &mut events);
                }
                for ev in events.drain(..) {
                    hub.publish(&ev);
                    published += 1;
                }
            }
        }
        let el = start.elapsed();
        println!(
            "offline {name:<24} {n} messages in {:>7.1} ms: {:>6.2} µs/message, {:>9.0} messages/s ({published} events)",
            el.as_secs_f64() * 1e3,
            el.as_secs_f64() * 1e6 / n as f64,
            n as f64 / el.as_secs_f64()
        );
    }
}

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// The 1-minute load average, for context (the machine may be shared).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    let args = args();
    let load_before = load_average();
    if std::env::args().any(|a| a == "--offline") {
        offline(&args);
        return;
    }
    // One runtime with the workers `ctibridge serve` starts on this machine (`[runtime]`
    // default, or LIVE_LATENCY_WORKERS); the simulated Asterisk, the driver and the SSE client
    // share it (a second runtime for them was tried: no better, the cross-runtime wake-ups
    // cost as much as they saved).
    let workers = std::env::var("LIVE_LATENCY_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| ctibridge::config::RuntimeSettings::default().workers());
    println!("runtime: {workers} worker threads");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let store = args.store.clone();
    runtime.block_on(run(args, runtime.handle().clone()));
    println!(
        "store: {store}; load average (1 min) before {load_before}, after {}; {} CPUs",
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

async fn run(args: Args, bridge: tokio::runtime::Handle) {
    let ami = AmiServer::start(
        "127.0.0.1:0".parse().unwrap(),
        AmiServerConfig {
            username: "bridge".into(),
            secret: "s3cret".into(),
            require_md5: true,
            banner: "Asterisk Call Manager/11.0.0".into(),
        },
    )
    .await
    .unwrap();
    // 100,000+ messages: the test-only log of sent messages would grow and be copied.
    ami.keep_sent_log(false);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"
[storage]
url = "{db}"
[journal]
dir = {journal:?}
[correlation]
grace = "1s"
[[pbx]]
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "s3cret"
[[api.tokens]]
token = "bench"
scopes = ["read"]
"#,
        db = if args.store == "memory" {
            "sqlite::memory:".to_string()
        } else {
            format!("sqlite://{}", dir.path().join("calls.db").display())
        },
        journal = dir.path().join("journal").display().to_string(),
        port = ami.local_addr().port(),
    );
    let settings = config::load_from_str(&text, &[]).unwrap();
    let service = bridge
        .spawn(async move { Service::start(&settings).await.unwrap() })
        .await
        .unwrap();
    assert!(service.ami[0].wait_up(Duration::from_secs(10)).await);

    let pending: Pending = Arc::default();
    let measuring = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let reader = tokio::spawn(sse_reader(
        service.http_addr,
        pending.clone(),
        measuring.clone(),
        samples.clone(),
    ));
    let mut probes = probe_calls(&ami);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut load = Load::new(1);
    let total_msgs = args.rate * (args.warmup + args.seconds + 1);
    let prepared: Vec<AmiMessage> = (0..total_msgs).map(|_| load.next()).collect();
    let mut prepared = prepared.into_iter();
    let per_ms = args.rate as f64 / 1000.0;
    let probe_every = (args.rate / args.probes.max(1)).max(1);
    let total = Duration::from_secs(args.warmup + args.seconds);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent: u64 = 0;
    let mut sent_measured: u64 = 0;
    let mut probe_turn = 0usize;
    let mut measure_start = None;
    let journaled_before = service.ingest.stats().journaled.load(Ordering::Relaxed);
    let mut cpu_at_measure = Duration::ZERO;
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= total {
            break;
        }
        if measure_start.is_none() && elapsed >= Duration::from_secs(args.warmup) {
            measuring.store(true, Ordering::Relaxed);
            measure_start = Some(Instant::now());
            cpu_at_measure = cpu_time();
        }
        // Catch up to the schedule: `rate` messages per second since the start.
        let due = (elapsed.as_secs_f64() * 1000.0 * per_ms) as u64;
        while sent < due {
            sent += 1;
            if measure_start.is_some() {
                sent_measured += 1;
            }
            if sent % probe_every == 0 {
                let n = probes.len();
                let call = &mut probes[probe_turn % n];
                probe_turn += 1;
                let msg = if call.held { &call.unhold } else { &call.hold };
                call.held = !call.held;
                pending
                    .lock()
                    .unwrap()
                    .entry(call.channel.clone())
                    .or_default()
                    .push_back(Instant::now());
                ami.send_event(msg);
            } else {
                match prepared.next() {
                    Some(m) => ami.send_event(&m),
                    None => ami.send_event(&load.next()),
                }
            }
        }
    }
    let measured_for = measure_start.map(|s| s.elapsed()).unwrap_or_default();
    let cpu = cpu_time().saturating_sub(cpu_at_measure);
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(false, Ordering::Relaxed);
    let journaled = service.ingest.stats().journaled.load(Ordering::Relaxed) - journaled_before;
    let dropped = service.ingest.stats().dropped.load(Ordering::Relaxed);
    let cut = service.hub.stats().slow_clients_cut.load(Ordering::Relaxed);
    let s = std::mem::take(&mut *samples.lock().unwrap());
    let unmatched: usize = pending.lock().unwrap().values().map(|q| q.len()).sum();
    println!(
        "live_latency: {} AMI messages/s offered ({} sent in {:.1} s measured; {} journaled in the whole run), {} events received, {} probe events, {} probes unanswered at the end, ingest drops {}, slow clients cut {}",
        (sent_measured as f64 / measured_for.as_secs_f64()).round(),
        sent_measured,
        measured_for.as_secs_f64(),
        journaled,
        s.events,
        s.probe.len(),
        unmatched,
        dropped,
        cut,
    );
    println!(
        "CPU of the whole process (simulated Asterisk, bridge, SSE client) while measuring: {:.2} cores",
        cpu.as_secs_f64() / measured_for.as_secs_f64()
    );
    report("AMI send -> SSE (probes)", s.probe);
    report("bridge read -> SSE (probes)", s.internal);
    reader.abort();
    bridge
        .spawn(async move { service.stop().await.unwrap() })
        .await
        .unwrap();
}
