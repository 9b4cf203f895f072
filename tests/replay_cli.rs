//! `ctibridge replay JOURNAL` through the real binary: recorded calls written as a journal
//! come out as completed records, in completion order, identically on every run.

use chrono::{TimeZone, Utc};
use ctibridge::journal::{Input, JournalEntry};
use ctibridge::sim::fixtures::load_capture_file;
use std::process::Command;
use std::sync::Arc;

mod common;

fn replay(dir: &std::path::Path) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ctibridge"))
        .args(["replay", "journal"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run ctibridge replay");
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_journal_of_recorded_calls_replays_to_their_records() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("journal")).unwrap();
    let mut lines = Vec::new();
    let base = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    for (i, name) in ["answered_caller_hangup", "busy_486"].iter().enumerate() {
        let scenario = load_capture_file(&common::fixture(&format!("{name}.ami"))).unwrap();
        let start = base + chrono::Duration::minutes(i as i64);
        for m in scenario.instantiate(i as u64 + 1) {
            let entry = JournalEntry {
                t: start + chrono::Duration::from_std(m.at).unwrap(),
                input: Input::Ami {
                    pbx: Arc::from("default"),
                    msg: m.msg,
                },
            };
            entry.write_json_line(&mut lines);
        }
    }
    std::fs::write(dir.path().join("journal/00000001.jsonl"), &lines).unwrap();

    let (stdout, stderr) = replay(dir.path());
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{stdout}\n{stderr}");
    assert_eq!(records[0]["disposition"], "answered");
    assert_eq!(records[0]["answered_by"], "102");
    assert_eq!(records[1]["disposition"], "busy");
    assert!(stderr.contains("2 completed records"), "{stderr}");
    // Deterministic: the same journal gives the same bytes.
    assert_eq!(replay(dir.path()).0, stdout);
}
