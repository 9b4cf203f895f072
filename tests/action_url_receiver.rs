//! The Action URL receiver of the real service, over raw TCP: lenient parsing (an unencoded
//! space in the request line, unfilled `$vars`, a 64 KiB query, bad escapes, non-UTF-8),
//! who may call back (networks, path secret), journaling, and the phones API.

use ctibridge::config;
use ctibridge::journal::{Input, JournalReader};
use ctibridge::service::Service;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const CONFIG: &str = r#"
pbx = []
[http]
listen = "127.0.0.1:0"
[storage]
url = "sqlite::memory:"
[[phones]]
extension = "101"
address = "127.0.0.1:9"
vendor = "yealink"
mac = "00:15:65:aa:bb:01"
[[phones]]
extension = "102"
address = "127.0.0.1:9"
vendor = "grandstream"
[[api.tokens]]
token = "reader"
scopes = ["read"]
[[api.tokens]]
token = "dialer"
scopes = ["dial"]
"#;

async fn start(extra: &str, dir: &std::path::Path) -> Service {
    let text = format!(
        "{CONFIG}\n[journal]\ndir = {:?}\nfsync_interval = \"5ms\"\n{extra}",
        dir.join("journal").display().to_string()
    );
    let settings = config::load_from_str(&text, &[]).expect("test config");
    Service::start(&settings).await.expect("service starts")
}

/// Sends raw bytes from `from` (a loopback address) and returns the whole response.
async fn raw(from: &str, to: SocketAddr, request: &[u8]) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

fn get(target: &[u8]) -> Vec<u8> {
    let mut r = b"GET ".to_vec();
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n");
    r
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

fn phone_targets(dir: &std::path::Path) -> Vec<(String, String)> {
    JournalReader::open(&dir.join("journal"))
        .unwrap()
        .filter_map(|r| match r.unwrap().entry.input {
            Input::Phone { peer, target } => Some((peer, target)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn lenient_callbacks_all_answer_200_and_are_journaled_as_received() {
    let dir = tempfile::tempdir().unwrap();
    let service = start("", dir.path()).await;
    let addr = service.http_addr;
    let big = format!(
        "/action-url/incoming_call?mac=001565aabb01&x={}",
        "a".repeat(64 * 1024)
    );
    let cases: Vec<Vec<u8>> = vec![
        // Grandstream: display name with raw spaces in the request line.
        b"/action-url/incoming_call?call-id=abc@10.0.0.1&remote=+15550100&display_remote=John Q Public".to_vec(),
        // Unfilled variables arrive literally.
        b"/action-url/dnd_on?mac=00:15:65:AA:BB:01&remote=$remote&call_id=$call_id".to_vec(),
        big.clone().into_bytes(),
        b"/action-url/call_established?remote=%zz%2&mac=001565aabb01".to_vec(),
        b"/action-url/call_terminated?display_remote=Jos\xe9&remote=%ff".to_vec(),
        b"/action-url/some_future_event?foo=bar".to_vec(),
        b"/action-url/outgoing_call".to_vec(),
    ];
    for target in &cases {
        let response = raw("127.0.0.1", addr, &get(target)).await;
        assert_eq!(
            status(&response),
            200,
            "for {:?}: {response}",
            String::from_utf8_lossy(&target[..target.len().min(80)])
        );
    }
    service.journal.sync().await.unwrap();
    let journaled = phone_targets(dir.path());
    assert_eq!(journaled.len(), cases.len());
    assert_eq!(journaled[0].0, "127.0.0.1");
    assert_eq!(
        journaled[0].1,
        "/action-url/incoming_call?call-id=abc@10.0.0.1&remote=+15550100&display_remote=John Q Public",
        "target journaled exactly as received"
    );
    assert_eq!(journaled[2].1, big);
    assert_eq!(
        journaled[4].1,
        "/action-url/call_terminated?display_remote=Jos\u{fffd}&remote=%ff"
    );
    // The MAC in any format found phone 101; its DND state came from the callback.
    let phone = service.phones.get("101").unwrap();
    assert_eq!(phone.state.dnd, Some(true));
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_line_beyond_repair_gets_a_clean_4xx_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let service = start("", dir.path()).await;
    let addr = service.http_addr;
    for garbage in [
        &b"\x00\x01\x02 nonsense\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /a HTTP/9.9 extra\r\n\r\n",
    ] {
        let response = raw("127.0.0.1", addr, garbage).await;
        if !response.is_empty() {
            let code = status(&response);
            assert!((400..500).contains(&code), "{response}");
        }
    }
    let response = raw("127.0.0.1", addr, &get(b"/healthz")).await;
    assert_eq!(status(&response), 200);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn callbacks_from_outside_the_allowed_networks_are_refused_and_not_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(
        "[action_url]\nallowed_networks = [\"127.0.0.2/32\"]\n",
        dir.path(),
    )
    .await;
    let addr = service.http_addr;
    let refused = raw(
        "127.0.0.1",
        addr,
        &get(b"/action-url/dnd_on?mac=001565aabb01"),
    )
    .await;
    assert_eq!(status(&refused), 403);
    let accepted = raw(
        "127.0.0.2",
        addr,
        &get(b"/action-url/dnd_off?mac=001565aabb01"),
    )
    .await;
    assert_eq!(status(&accepted), 200);
    service.journal.sync().await.unwrap();
    let journaled = phone_targets(dir.path());
    assert_eq!(
        journaled,
        [(
            "127.0.0.2".to_string(),
            "/action-url/dnd_off?mac=001565aabb01".to_string()
        )]
    );
    assert_eq!(
        service
            .callback_stats
            .forbidden_network
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn the_path_secret_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let service = start("[action_url]\npath_secret = \"s3cr3t\"\n", dir.path()).await;
    let addr = service.http_addr;
    assert_eq!(
        status(&raw("127.0.0.1", addr, &get(b"/action-url/dnd_on")).await),
        403
    );
    assert_eq!(
        status(&raw("127.0.0.1", addr, &get(b"/action-url/wrong/dnd_on")).await),
        403
    );
    assert_eq!(
        status(
            &raw(
                "127.0.0.1",
                addr,
                &get(b"/action-url/s3cr3t/dnd_on?mac=001565aabb01")
            )
            .await
        ),
        200
    );
    service.journal.sync().await.unwrap();
    assert_eq!(phone_targets(dir.path()).len(), 1);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn phones_api_needs_a_read_token() {
    let dir = tempfile::tempdir().unwrap();
    let service = start("", dir.path()).await;
    let base = format!("http://{}", service.http_addr);
    let client = reqwest::Client::new();
    let none = client
        .get(format!("{base}/api/v1/phones"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let body: serde_json::Value = none.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let wrong_scope = client
        .get(format!("{base}/api/v1/phones"))
        .bearer_auth("dialer")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_scope.status(), 403);
    let list: serde_json::Value = client
        .get(format!("{base}/api/v1/phones"))
        .bearer_auth("reader")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let extensions: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["extension"].as_str().unwrap())
        .collect();
    assert_eq!(extensions, ["101", "102"]);
    assert!(list[0].get("password").is_none(), "credentials never leave");
    let missing = client
        .get(format!("{base}/api/v1/phones/999"))
        .bearer_auth("reader")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn post_callbacks_are_accepted_with_the_body_as_query() {
    let dir = tempfile::tempdir().unwrap();
    let service = start("", dir.path()).await;
    let body = b"mac=001565aabb01&remote=+15550100";
    let mut request = b"POST /action-url/incoming_call HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n".to_vec();
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    let response = raw("127.0.0.1", service.http_addr, &request).await;
    assert_eq!(status(&response), 200, "{response}");
    service.journal.sync().await.unwrap();
    assert_eq!(
        phone_targets(dir.path())[0].1,
        "/action-url/incoming_call?mac=001565aabb01&remote=+15550100"
    );
    assert!(matches!(
        service.phones.get("101").unwrap().state.call,
        Some(ctibridge::phone::registry::PhoneCall::Ringing { remote: Some(ref r), .. }) if r == "+15550100"
    ));
    service.stop().await.unwrap();
}
