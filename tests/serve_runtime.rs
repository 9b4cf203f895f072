//! `[runtime] worker_threads`: `serve` reads its config before it starts the async runtime,
//! sizes the runtime from it, and refuses a bad value with a message naming the key.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn serve(workdir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctibridge"));
    cmd.args(["serve", "--log-format", "json"])
        .current_dir(workdir)
        .env_remove("RUST_LOG")
        // No PBX to follow and any free port: nothing outside the temp dir is touched.
        .env("CTIBRIDGE__PBX", "[]")
        .env("CTIBRIDGE__HTTP__LISTEN", "127.0.0.1:0")
        .env("CTIBRIDGE__JOURNAL__DIR", workdir.join("journal"))
        .env(
            "CTIBRIDGE__STORAGE__URL",
            format!("sqlite://{}", workdir.join("records.db").display()),
        );
    cmd
}

/// The names of the process's threads (Linux `/proc/<pid>/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's task list")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn serve_starts_the_configured_number_of_workers() {
    for workers in [1usize, 3] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = serve(dir.path())
            .env("CTIBRIDGE__RUNTIME__WORKER_THREADS", workers.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ctibridge serve");
        // The log line that says the config was loaded carries the worker count.
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut loaded = None;
        for line in stderr.lines() {
            let line = line.expect("a log line");
            if line.contains("configuration loaded") {
                loaded = Some(line);
                break;
            }
        }
        let loaded = loaded.expect("serve logs `configuration loaded`");
        let log: serde_json::Value = serde_json::from_str(&loaded).expect("a JSON log line");
        assert_eq!(
            log["worker_threads"].as_u64(),
            Some(workers as u64),
            "{loaded}"
        );
        // tokio starts its workers before `serve` runs; count them.
        let deadline = Instant::now() + Duration::from_secs(10);
        let count = loop {
            let count = thread_names(child.id())
                .iter()
                .filter(|n| n.as_str() == "tokio-rt-worker")
                .count();
            if count == workers || Instant::now() > deadline {
                break count;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            count, workers,
            "tokio workers with worker_threads = {workers}"
        );
    }
}

#[test]
fn serve_refuses_a_worker_count_out_of_range_before_starting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = serve(dir.path())
        .env("CTIBRIDGE__RUNTIME__WORKER_THREADS", "1000")
        .output()
        .expect("run ctibridge serve");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("runtime.worker_threads"), "{stderr}");
    assert!(stderr.contains("1000 is out of range"), "{stderr}");
    assert!(
        !dir.path().join("journal").exists(),
        "nothing was started: {stderr}"
    );
}
