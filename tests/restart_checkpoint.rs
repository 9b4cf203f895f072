//! Restarts from a checkpoint, over real sockets: a simulated Asterisk plays recorded calls to
//! the service, which saves checkpoints (correlator snapshot + journal position) in its store.
//!
//! - After a clean stop with a call still live, the journal before the checkpoint is destroyed
//!   (earlier segments deleted, the checkpoint's own segment overwritten up to the position):
//!   the restarted service still completes the live call exactly as one uninterrupted run of the
//!   intact journal does, so its state came from the snapshot, not from a replay.
//! - `kill -9` of the binary after a periodic checkpoint, then again mid-call in a run that
//!   takes no checkpoint (so the journal runs on well past the last one), then a restart that
//!   finishes the call: the stored records are exactly those of one uninterrupted offline run
//!   of the journal (nothing lost, nothing twice), and each restart's log says it came from
//!   the checkpoint.

use ctibridge::config::{self, Settings};
use ctibridge::journal::{segment_number, Input, JournalReader, SEGMENT_EXTENSION};
use ctibridge::record::CallRecord;
use ctibridge::service::Service;
use ctibridge::sim::ami_server::AmiServer;
use ctibridge::sim::fixtures::{load_capture_file, TimedMessage};
use ctibridge::store::{CallQuery, RestartPoint, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(15);

/// Like `common::eventually`, for a check that has to await.
async fn eventually_async<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f().await
}

/// Plays `msgs` and waits until the server has written them all (`play` returns once they are
/// queued); returns how many messages the server has sent in all.
async fn play_all(ami: &AmiServer, msgs: &[TimedMessage]) -> usize {
    let before = ami.sent_log().len();
    ami.play(msgs, 0.0).await;
    let target = before + msgs.len();
    assert!(
        common::eventually(WAIT, || ami.sent_log().len() >= target).await,
        "the simulated PBX did not send everything"
    );
    ami.sent_log().len()
}

/// AMI messages in the journal directory (what a reader sees on disk).
fn journaled_ami(dir: &Path) -> usize {
    JournalReader::open(dir)
        .map(|r| {
            r.filter_map(Result::ok)
                .filter(|r| matches!(r.entry.input, Input::Ami { .. }))
                .count()
        })
        .unwrap_or(0)
}

fn config_text(ami: &AmiServer, dir: &Path, checkpoint_interval: &str) -> String {
    format!(
        r#"
[http]
listen = "127.0.0.1:0"
[storage]
url = "sqlite://{db}"
[journal]
dir = {journal:?}
fsync_interval = "5ms"
segment_max_bytes = 4096
checkpoint_interval = "{checkpoint_interval}"
[correlation]
grace = "200ms"
[[pbx]]
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "s3cret"
reconnect_initial = "50ms"
"#,
        db = dir.join("calls.db").display(),
        journal = dir.join("journal").display().to_string(),
        port = ami.local_addr().port(),
    )
}

fn settings(ami: &AmiServer, dir: &Path, checkpoint_interval: &str) -> Settings {
    config::load_from_str(&config_text(ami, dir, checkpoint_interval), &[]).expect("test config")
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("calls.db").display())
}

/// The stored records, by id.
async fn stored(store: &Store) -> BTreeMap<String, CallRecord> {
    let page = store
        .list(&CallQuery {
            limit: 1000,
            ..CallQuery::default()
        })
        .await
        .unwrap();
    page.records
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect()
}

async fn wait_stored(store: &Store, n: usize) -> BTreeMap<String, CallRecord> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let records = stored(store).await;
        if records.len() >= n {
            return records;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} records did not appear: {:?}",
            records.keys()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What one uninterrupted offline run over the journal in `dir` completes (`ctibridge
/// replay`), by id.
fn replayed(dir: &Path, settings: &Settings) -> BTreeMap<String, CallRecord> {
    let mut out = Vec::new();
    ctibridge::replay::replay(dir, settings, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<CallRecord>(l).unwrap())
        .map(|r| (r.id.clone(), r))
        .collect()
}

fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_EXTENSION))
        .filter_map(|p| segment_number(&p).map(|n| (n, p)))
        .collect();
    v.sort();
    v
}

fn copy_segments(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for (_, path) in segments(from) {
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// The first `BridgeEnter` and one more: the call is answered and still up.
fn halves(msgs: &[TimedMessage]) -> usize {
    msgs.iter()
        .position(|m| m.msg.event_name() == Some("BridgeEnter"))
        .unwrap()
        + 2
}

async fn restart_point(dir: &Path) -> Option<RestartPoint> {
    let store = Store::open(&db_url(dir)).await.unwrap();
    let point = store.restart_point().await.unwrap();
    store.close().await;
    point
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_continues_from_the_checkpoint_without_the_journal_before_it() {
    let ami = common::ami_server("s3cret", true).await;
    let work = tempfile::tempdir().unwrap();
    let journal = work.path().join("journal");
    let settings = settings(&ami, work.path(), "100ms");
    let done = load_capture_file(&common::fixture("answered_caller_hangup.ami"))
        .unwrap()
        .instantiate(1);
    let live = load_capture_file(&common::fixture("hold_unhold.ami"))
        .unwrap()
        .instantiate(2);
    let half = halves(&live);

    // Run 1: one call completes, another is answered and still up at a clean stop.
    let service = Service::start(&settings).await.unwrap();
    assert!(service.ami[0].wait_up(WAIT).await);
    play_all(&ami, &done).await;
    let sent = play_all(&ami, &live[..half]).await;
    let done_id = wait_stored(&service.store, 1)
        .await
        .into_keys()
        .next()
        .unwrap();
    // Everything played is journaled (so the stop's checkpoint covers it: the consumer
    // drains its queue before it takes the last one).
    let all_journaled = eventually_async(WAIT, || async {
        service.journal.sync().await.unwrap();
        journaled_ami(&journal) >= sent
    })
    .await;
    assert!(all_journaled, "run 1 did not journal what was played");
    service.stop().await.unwrap();
    let point = restart_point(work.path()).await.expect("a checkpoint");
    let run1 = segments(&journal);
    assert!(run1.len() > 3, "small segments: {run1:?}");
    let last = run1.last().unwrap();
    assert_eq!(point.checkpoint.segment, last.0, "the stop's checkpoint");
    assert_eq!(
        point.checkpoint.offset,
        std::fs::metadata(&last.1).unwrap().len(),
        "…covers all of run 1"
    );
    assert!(
        point.snapshot.contains("PJSIP/102"),
        "the live call is in it"
    );
    let intact = work.path().join("intact");
    copy_segments(&journal, &intact);

    // The journal before the checkpoint is gone: older segments deleted, the checkpoint's own
    // segment overwritten (line structure kept, contents garbage).
    for (n, path) in &run1 {
        if *n < point.checkpoint.segment {
            std::fs::remove_file(path).unwrap();
        }
    }
    let text = std::fs::read(&last.1).unwrap();
    let garbage: Vec<u8> = text
        .iter()
        .map(|b| if *b == b'\n' { b'\n' } else { b'x' })
        .collect();
    std::fs::write(&last.1, garbage).unwrap();

    // Run 2: the live call ends while we run.
    let service = Service::start(&settings).await.unwrap();
    assert!(service.ami[0].wait_up(WAIT).await);
    play_all(&ami, &live[half..]).await;
    let records = wait_stored(&service.store, 2).await;
    service.stop().await.unwrap();

    // The same records as one uninterrupted run over the intact journal.
    for (n, path) in segments(&journal) {
        if n > point.checkpoint.segment {
            // Run 2's segments beside run 1's originals.
            std::fs::copy(&path, intact.join(path.file_name().unwrap())).unwrap();
        }
    }
    let expected = replayed(&intact, &settings);
    assert_eq!(expected.len(), 2, "{:?}", expected.keys());
    assert_eq!(records, expected);
    let live_id = expected
        .keys()
        .find(|id| **id != done_id)
        .expect("the call that was live at the stop")
        .clone();
    assert_eq!(
        records[&live_id].gaps.len(),
        1,
        "the restart's gap is on it"
    );
    // What a replay of the damaged journal would have made of it: not that.
    let from_damaged = replayed(&journal, &settings);
    assert_ne!(from_damaged.get(&live_id), Some(&expected[&live_id]));
}

fn spawn_serve(workdir: &Path, ami: &AmiServer, checkpoint_interval: &str, log: &str) -> Child {
    std::fs::write(
        workdir.join("ctibridge.toml"),
        config_text(ami, workdir, checkpoint_interval),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_ctibridge"))
        .arg("serve")
        .current_dir(workdir)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(workdir.join(log)).unwrap())
        .spawn()
        .expect("start ctibridge serve")
}

fn kill_9(mut serve: Child) {
    serve.kill().unwrap(); // SIGKILL
    serve.wait().unwrap();
}

/// Inputs in the journal after the stored checkpoint.
async fn after_checkpoint(store: &Store, journal: &Path) -> usize {
    let point = store.restart_point().await.unwrap().expect("a checkpoint");
    let from = ctibridge::journal::Position {
        segment: point.checkpoint.segment,
        offset: point.checkpoint.offset,
    };
    JournalReader::open_from(journal, from).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_checkpoints_loses_and_duplicates_nothing() {
    let ami = common::ami_server("s3cret", true).await;
    let work = tempfile::tempdir().unwrap();
    let journal = work.path().join("journal");
    let scenario = |name: &str, generation| {
        load_capture_file(&common::fixture(name))
            .unwrap()
            .instantiate(generation)
    };
    let first = scenario("busy_486.ami", 1);
    let cut = scenario("blind_transfer.ami", 2);
    let after = scenario("ring_group.ami", 3);
    let half = halves(&cut);
    let log = |name: &str| std::fs::read_to_string(work.path().join(name)).unwrap();

    // Run 1: a call completes; a periodic checkpoint covers it; kill -9.
    let serve = spawn_serve(work.path(), &ami, "200ms", "run1.log");
    assert!(ami.wait_for_logins(1, WAIT).await);
    let sent = play_all(&ami, &first).await;
    let store = Store::open(&db_url(work.path())).await.unwrap();
    wait_stored(&store, 1).await;
    assert!(
        common::eventually(WAIT, || journaled_ami(&journal) >= sent).await,
        "run 1 did not journal what was played"
    );
    let journal_end = || {
        let mut reader = JournalReader::open(&journal).unwrap();
        reader.by_ref().count();
        reader.position().unwrap()
    };
    let end = journal_end();
    assert!(
        eventually_async(WAIT, || async {
            store.restart_point().await.unwrap().is_some_and(|p| {
                (p.checkpoint.segment, p.checkpoint.offset) >= (end.segment, end.offset)
            })
        })
        .await,
        "no periodic checkpoint covered the first call:\n{}",
        log("run1.log")
    );
    kill_9(serve);

    // Run 2 (checkpoints too rare to happen): restarted from run 1's checkpoint, it is in the
    // middle of a call when it is killed too.
    let logins = ami.logins();
    let serve = spawn_serve(work.path(), &ami, "1h", "run2.log");
    assert!(ami.wait_for_logins(logins + 1, WAIT).await);
    let sent = play_all(&ami, &cut[..half]).await;
    assert!(
        common::eventually(WAIT, || journaled_ami(&journal) >= sent).await,
        "run 2 did not journal what was played"
    );
    kill_9(serve);
    let tail = after_checkpoint(&store, &journal).await;
    assert!(
        tail > half,
        "the half call ({half} messages) is after the last checkpoint ({tail} inputs):\n{}",
        log("run2.log")
    );

    // Run 3: the cut call ends, another one runs; then a clean stop.
    let logins = ami.logins();
    let serve = spawn_serve(work.path(), &ami, "1h", "run3.log");
    assert!(ami.wait_for_logins(logins + 1, WAIT).await);
    play_all(&ami, &cut[half..]).await;
    play_all(&ami, &after).await;
    let records = wait_stored(&store, 3).await;
    let status = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut serve = serve;
    assert!(serve.wait().unwrap().success());
    let records_after_stop = stored(&store).await;
    // The clean stop's checkpoint covers everything.
    assert_eq!(after_checkpoint(&store, &journal).await, 0);
    store.close().await;

    for run in ["run2.log", "run3.log"] {
        assert!(
            log(run).contains("restarting from the checkpoint"),
            "{run} did not restart from the checkpoint:\n{}",
            log(run)
        );
    }
    // One uninterrupted offline run over the same journal.
    let settings = config::load_from_str(&config_text(&ami, work.path(), "1h"), &[]).unwrap();
    let expected = replayed(&journal, &settings);
    assert_eq!(expected.len(), 3, "{:?}", expected.keys());
    assert_eq!(records, expected);
    assert_eq!(records_after_stop, expected);
}
