//! Call records end to end: a simulated Asterisk plays recorded calls to the real service;
//! the records API serves what the correlator built (filters, pagination, CSV, auth); and a
//! restart in the middle of a call neither loses nor duplicates it.

use ctibridge::config;
use ctibridge::service::Service;
use ctibridge::sim::ami_server::AmiServer;
use ctibridge::sim::fixtures::load_capture_file;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

mod common;

fn settings(ami: &AmiServer, dir: &Path) -> config::Settings {
    common::service_settings(ami, dir, "")
}

async fn api(service: &Service, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("http://{}{path}", service.http_addr));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn json(service: &Service, path: &str) -> Value {
    let resp = api(service, path, Some("reader")).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// Waits until the API lists `n` records.
async fn wait_records(service: &Service, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let page = json(service, "/api/v1/calls?limit=100").await;
        let records = page["records"].as_array().unwrap().clone();
        if records.len() >= n {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("records did not appear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_calls_become_records_served_with_filters_pages_and_csv() {
    let ami = common::ami_server("s3cret", true).await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&settings(&ami, dir.path())).await.unwrap();
    assert!(service.ami[0].wait_up(Duration::from_secs(5)).await);
    for (generation, name) in ["answered_caller_hangup", "busy_486", "missed_caller_cancel"]
        .iter()
        .enumerate()
    {
        let scenario = load_capture_file(&common::fixture(&format!("{name}.ami"))).unwrap();
        ami.play(&scenario.instantiate(generation as u64 + 1), 0.0)
            .await;
    }
    let records = wait_records(&service, 3).await;
    assert_eq!(records.len(), 3);

    // Auth: 401 without a token, 403 without the read scope, both with a JSON body.
    let none = api(&service, "/api/v1/calls", None).await;
    assert_eq!(none.status(), 401);
    assert_eq!(none.json::<Value>().await.unwrap()["error"], "unauthorized");
    assert_eq!(
        api(&service, "/api/v1/calls", Some("dialer"))
            .await
            .status(),
        403
    );
    assert_eq!(
        api(&service, "/api/v1/calls.csv", Some("dialer"))
            .await
            .status(),
        403
    );

    // Filters.
    let busy = json(&service, "/api/v1/calls?disposition=busy").await;
    assert_eq!(busy["records"].as_array().unwrap().len(), 1);
    assert_eq!(busy["records"][0]["to"]["number"], "102");
    let to_103 = json(&service, "/api/v1/calls?ext=103").await;
    assert_eq!(to_103["records"].as_array().unwrap().len(), 1);
    assert_eq!(to_103["records"][0]["missed"], true);
    let answered = json(
        &service,
        "/api/v1/calls?disposition=answered&direction=internal",
    )
    .await;
    assert_eq!(answered["records"][0]["answered_by"], "102");
    let internal = json(&service, "/api/v1/calls?direction=internal").await;
    assert_eq!(internal["records"].as_array().unwrap().len(), 3);
    let future = json(&service, "/api/v1/calls?since=2099-01-01T00:00:00Z").await;
    assert!(future["records"].as_array().unwrap().is_empty());

    // Pagination: two pages of 2 and 1, no duplicates or holes.
    let first = json(&service, "/api/v1/calls?limit=2").await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let second = json(&service, &format!("/api/v1/calls?limit=2&cursor={cursor}")).await;
    assert!(second["next_cursor"].is_null());
    let mut ids: Vec<String> = first["records"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["records"].as_array().unwrap())
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    let bad = api(&service, "/api/v1/calls?cursor=zz", Some("reader")).await;
    assert_eq!(bad.status(), 422);
    let bad_filter = api(&service, "/api/v1/calls?direction=sideways", Some("reader")).await;
    assert_eq!(bad_filter.status(), 422);
    assert!(bad_filter.json::<Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("direction"));

    // One record by id; an unknown id is 404.
    let id = ids[0].clone();
    let one = json(&service, &format!("/api/v1/calls/{id}")).await;
    assert_eq!(one["id"], id.as_str());
    assert_eq!(
        api(&service, "/api/v1/calls/nope", Some("reader"))
            .await
            .status(),
        404
    );

    // CSV: header plus one row per call.
    let csv = api(&service, "/api/v1/calls.csv", Some("reader")).await;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let body = csv.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 4, "{body}");
    assert!(lines[0].starts_with("id,"));
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_call_loses_nothing_and_duplicates_nothing() {
    let ami = common::ami_server("s3cret", true).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&ami, dir.path());
    let scenario = load_capture_file(&common::fixture("answered_caller_hangup.ami")).unwrap();
    let msgs = scenario.instantiate(7);
    let half = msgs
        .iter()
        .position(|m| m.msg.event_name() == Some("BridgeEnter"))
        .unwrap()
        + 2;

    // Run 1: the call starts and is answered, then the bridge stops.
    let service = Service::start(&settings).await.unwrap();
    assert!(service.ami[0].wait_up(Duration::from_secs(5)).await);
    ami.play(&msgs[..half], 0.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let page = json(&service, "/api/v1/calls").await;
    assert!(
        page["records"].as_array().unwrap().is_empty(),
        "call still live"
    );
    service.stop().await.unwrap();

    // Run 2: state comes back from the journal; the call ends while we run.
    let service = Service::start(&settings).await.unwrap();
    assert!(service.ami[0].wait_up(Duration::from_secs(5)).await);
    ami.play(&msgs[half..], 0.0).await;
    let records = wait_records(&service, 1).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record["disposition"], "answered");
    assert_eq!(record["from"]["number"], "101");
    assert_eq!(record["answered_by"], "102");
    assert_eq!(record["legs"].as_array().unwrap().len(), 2);
    // The bridge's own downtime is on the record.
    assert_eq!(record["gaps"].as_array().unwrap().len(), 1, "{record}");
    service.stop().await.unwrap();

    // Run 3: replaying everything again adds no duplicate.
    let service = Service::start(&settings).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let page = json(&service, "/api/v1/calls").await;
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    service.stop().await.unwrap();
}
