//! `kill -9` of `ctibridge serve` while a fixture streams, then a restart: the journal reader
//! reads every line that reached the file, ignores a torn last line with a warning, and the
//! restarted service journals into a new segment; SIGTERM then flushes everything it received.

use ctibridge::ami::AmiMessage;
use ctibridge::journal::{Input, JournalReader};
use ctibridge::sim::fixtures::load_capture_file;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

fn spawn_serve(workdir: &Path, ami: std::net::SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ctibridge"))
        .arg("serve")
        .current_dir(workdir)
        .env_remove("RUST_LOG")
        .env("CTIBRIDGE__PBX__0__HOST", ami.ip().to_string())
        .env("CTIBRIDGE__PBX__0__PORT", ami.port().to_string())
        .env("CTIBRIDGE__PBX__0__USERNAME", "bridge")
        .env("CTIBRIDGE__PBX__0__SECRET", "s3cret")
        .env("CTIBRIDGE__JOURNAL__DIR", workdir.join("journal"))
        .env("CTIBRIDGE__JOURNAL__FSYNC_INTERVAL", "10ms")
        .env("CTIBRIDGE__PBX__0__RECONNECT_INITIAL", "50ms")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ctibridge serve")
}

/// Complete lines currently in the journal files (what a reader can see on disk).
fn lines_on_disk(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .map(|bytes| bytes.iter().filter(|b| **b == b'\n').count())
        .sum()
}

fn read_ami(dir: &Path) -> (Vec<AmiMessage>, Vec<String>) {
    let mut reader = JournalReader::open(dir).unwrap();
    let msgs = reader
        .by_ref()
        .filter_map(|r| match r.unwrap().entry.input {
            Input::Ami { msg, .. } => Some(msg),
            _ => None,
        })
        .collect();
    (msgs, reader.warnings().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_loses_nothing_that_reached_the_file() {
    let server = common::ami_server("s3cret", true).await;
    let work = tempfile::tempdir().unwrap();
    let journal_dir = work.path().join("journal");
    let scenario = load_capture_file(&common::fixture("blind_transfer.ami")).unwrap();

    // Run 1: stream a call, kill -9 in the middle.
    let mut serve = spawn_serve(work.path(), server.local_addr());
    assert!(server.wait_for_logins(1, Duration::from_secs(20)).await);
    let player = {
        let server = server.clone();
        let msgs = scenario.instantiate(1);
        tokio::spawn(async move { server.play(&msgs, 8.0).await })
    };
    assert!(
        common::eventually(Duration::from_secs(20), || lines_on_disk(&journal_dir)
            >= 60)
        .await,
        "journal did not fill"
    );
    let seen_before_kill = lines_on_disk(&journal_dir);
    serve.kill().unwrap(); // SIGKILL
    serve.wait().unwrap();
    player.abort();
    let session1: Vec<AmiMessage> = server
        .sent_log()
        .into_iter()
        .filter(|s| s.session == server.sent_log()[0].session)
        .map(|s| s.msg)
        .collect();

    let (run1, warnings) = read_ami(&journal_dir);
    assert!(
        run1.len() >= seen_before_kill,
        "reader lost lines that were on disk: {} < {seen_before_kill}",
        run1.len()
    );
    assert!(warnings.len() <= 1, "{warnings:?}");
    assert_eq!(
        run1[..],
        session1[..run1.len()],
        "journal is an in-order prefix of what the server sent"
    );

    // A crash in the middle of a write leaves a torn line; simulate one at the end.
    let segment = std::fs::read_dir(&journal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    f.write_all(br#"{"t":"2026-11-22T10:00:00.123456Z","src":"ami","pbx":"def"#)
        .unwrap();
    drop(f);
    let (again, warnings) = read_ami(&journal_dir);
    assert_eq!(again, run1, "the torn line changes nothing else");
    assert!(
        warnings.iter().any(|w| w.contains("torn")),
        "torn line not reported: {warnings:?}"
    );

    // Run 2: restart, stream again, stop cleanly once everything is on disk.
    let logins = server.logins();
    let mut serve = spawn_serve(work.path(), server.local_addr());
    assert!(
        server
            .wait_for_logins(logins + 1, Duration::from_secs(20))
            .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.play(&scenario.instantiate(2), 0.0).await;
    // `play` returns once events are queued: wait until the server has written them all and
    // the journal on disk holds them (the count stays put for a few polls).
    let session2 = || -> Vec<AmiMessage> {
        let log = server.sent_log();
        let last_session = log.last().unwrap().session;
        log.into_iter()
            .filter(|s| s.session == last_session)
            .map(|s| s.msg)
            .collect()
    };
    let mut stable = 0;
    let mut last = 0;
    assert!(
        common::eventually(Duration::from_secs(20), || {
            let expected = run1.len() + session2().len();
            let on_disk = read_ami(&journal_dir).0.len();
            stable = if on_disk == expected && expected == last {
                stable + 1
            } else {
                0
            };
            last = expected;
            stable >= 3
        })
        .await,
        "run 2 did not journal everything"
    );
    let session2 = session2();
    let expected_total = run1.len() + session2.len();
    let status = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = serve.wait().unwrap();
    assert!(exit.success(), "serve exited with {exit:?} after SIGTERM");

    let (all, warnings) = read_ami(&journal_dir);
    assert_eq!(all.len(), expected_total, "nothing duplicated");
    assert_eq!(all[..run1.len()], run1[..]);
    assert_eq!(all[run1.len()..], session2[..]);
    assert_eq!(warnings.iter().filter(|w| w.contains("torn")).count(), 1);
    let segments = std::fs::read_dir(&journal_dir).unwrap().count();
    assert_eq!(segments, 2, "each start opens a new segment");
}
