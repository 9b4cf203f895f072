//! The dashboard in a real browser (issue 6, "a browser test in CI"): starts `ctibridge demo`
//! (the binary, on a free port, with a fresh data directory, time running fast), then runs
//! `tests/browser/ui.mjs`, which drives Debian's headless Chromium through playwright-core:
//! a live call appears, a DND toggle changes the simulated phone, a click-to-call through the
//! PBX is answered and its call shows with the request id. Screenshots, the browser console
//! and the demo's log are kept in `target/ui-artifacts/`.
//!
//! Chromium (`/usr/bin/chromium`, or `$CHROMIUM`), Node.js and `tests/browser/node_modules`
//! must be installed (`.ci/run` installs them); without them this test fails and says how to
//! install them rather than passing silently.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kills the demo when the test ends, however it ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `target/ui-artifacts` (beside `target/tmp`, so a custom target directory is respected).
fn artifact_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("ui-artifacts")
}

/// What is missing to run the browser, with how to install it.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        missing.push(format!(
            "Chromium not found at {chromium}: install it with `apt-get install -y chromium` \
             (or set CHROMIUM to its path)"
        ));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing
            .push("Node.js (`node`) not found: install it with `apt-get install -y nodejs`".into());
    }
    if !browser_dir().join("node_modules/playwright-core").is_dir() {
        missing.push(
            "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser`".into(),
        );
    }
    missing
}

/// Starts the demo and returns it with the dashboard URL it printed.
fn start_demo(data_dir: &Path, log: &Path) -> (Demo, String) {
    let stderr = std::fs::File::create(log).expect("demo log file");
    let child = Command::new(env!("CARGO_BIN_EXE_ctibridge"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--speed",
            "5",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start ctibridge demo");
    let mut demo = Demo(child);
    let stdout = demo.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(url) = line.trim().strip_prefix("dashboard:") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "the demo printed no `dashboard:` line within 30 s; its log: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    (demo, url)
}

#[test]
fn dashboard_in_headless_chromium_against_the_demo() {
    let missing = missing_prerequisites();
    assert!(
        missing.is_empty(),
        "the browser test cannot run:\n  - {}\n(.ci/run installs all of them)",
        missing.join("\n  - ")
    );
    let artifacts = artifact_dir();
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let data = tempfile::tempdir().expect("data dir");
    let demo_log = artifacts.join("demo.log");
    let (demo, url) = start_demo(data.path(), &demo_log);
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/ui#token=demo-token"),
        "dashboard URL: {url}"
    );
    assert!(!url.contains(":0/"), "the URL shows the real port: {url}");

    let started = Instant::now();
    let mut node = Command::new("node")
        .current_dir(browser_dir())
        .arg("ui.mjs")
        .arg(&url)
        .arg("demo-token")
        .arg(&artifacts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    // The script bounds each of its waits; this is the last resort against a hung browser.
    let deadline = started + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = node.try_wait().expect("wait for node") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = node.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = node.wait_with_output().expect("node output");
    drop(demo);
    let report = format!(
        "ui.mjs stdout:\n{}\nstderr:\n{}\nartifacts (screenshots, console.log, demo.log): {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        artifacts.display()
    );
    let status = status.unwrap_or_else(|| panic!("ui.mjs did not finish in 240 s\n{report}"));
    assert!(status.success(), "ui.mjs failed ({status})\n{report}");
    for shot in ["01-live-call.png", "02-dnd.png", "03-click-to-call.png"] {
        let len = std::fs::metadata(artifacts.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "screenshot {shot} missing or empty\n{report}");
    }
    println!("{report}");
}
