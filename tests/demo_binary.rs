//! `ctibridge demo` as a user runs it (the binary, a fresh data directory, a free port, fast
//! time, a fixed seed, `--calls`): it prints the dashboard link with the real port and the
//! token, stops by itself after the calls, and leaves records in its SQLite database in which
//! the simulated phones' own callbacks were matched to their legs.

use ctibridge::store::{CallQuery, Store};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PHONES: [&str; 6] = ["101", "102", "103", "104", "105", "106"];

#[tokio::test]
async fn demo_makes_calls_whose_records_carry_both_views_then_stops() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ctibridge"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--speed",
            "20",
            "--calls",
            "10",
        ])
        .args(["--seed", "5", "--data-dir"])
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ctibridge demo");
    // Generous: ten calls at speed 40 take a few seconds.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not stop by itself after --calls 10");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");

    let url = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("dashboard:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no dashboard line in:\n{stdout}"));
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|r| r.strip_suffix("/ui#token=demo-token"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("dashboard URL {url}"));
    assert_ne!(port, 0, "the printed link shows the port actually bound");
    assert!(stdout.contains("API token:  demo-token"), "{stdout}");
    let made: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ctibridge demo: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no closing line in:\n{stdout}"));
    assert!(made >= 10, "{made} calls");

    let db = data.path().join("ctibridge.db");
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let page = store
        .list(&CallQuery {
            limit: 500,
            ..CallQuery::default()
        })
        .await
        .unwrap();
    let records = page.records;
    assert!(
        records.len() >= 10,
        "{} records for {made} calls",
        records.len()
    );
    let mut legs_checked = 0;
    for r in &records {
        assert!(r.complete, "{} not complete", r.id);
        // Replayed captures carry no phone callbacks; their Call-IDs are renamed `g<n>-…`.
        if r.legs
            .iter()
            .any(|l| l.sip_call_id.as_deref().is_some_and(|c| c.starts_with('g')))
        {
            continue;
        }
        for leg in &r.legs {
            let Some(ep) = leg.endpoint.as_deref().filter(|e| PHONES.contains(e)) else {
                continue;
            };
            if leg.answered_at.is_none() {
                continue;
            }
            // Every phone that took part in a conversation told the bridge about it, and the
            // bridge matched what it said to this call.
            assert!(
                r.correlation.iter().any(|c| c.phone == ep),
                "{}: phone {ep} answered but none of its callbacks was matched: {:#?}",
                r.id,
                r.correlation
            );
            legs_checked += 1;
        }
    }
    assert!(legs_checked >= 5, "only {legs_checked} answered phone legs");
    // Snom (103) and Grandstream (104) report the SIP Call-ID, matched exactly; the others a
    // handle, matched by account, party and time.
    let methods: Vec<(&str, &str)> = records
        .iter()
        .flat_map(|r| r.correlation.iter())
        .map(|c| (c.phone.as_str(), c.method.as_str()))
        .collect();
    for (phone, method) in &methods {
        let exact = matches!(*phone, "103" | "104");
        assert_eq!(
            *method == "sip_call_id",
            exact,
            "phone {phone} matched by {method}"
        );
    }
    store.close().await;
}
