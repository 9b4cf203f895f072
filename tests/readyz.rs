//! `GET /readyz` and `GET /healthz` over real sockets: ready while the AMI link is logged
//! in; 503 naming the AMI check while the simulated Asterisk is gone; ready again once it is
//! back on the same port. With no PBX configured the AMI check passes and says so, and a
//! store or journal that cannot be written fails its own check.

use ctibridge::config;
use ctibridge::service::Service;
use ctibridge::sim::ami_server::{AmiServer, AmiServerConfig};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(10);

fn settings(dir: &Path, pbx: Option<SocketAddr>) -> config::Settings {
    // Top-level keys come before the first table. An empty `pbx` list means no PBX; a
    // missing one would mean one PBX on localhost.
    let (top, pbx_table) = match pbx {
        None => ("pbx = []".to_string(), String::new()),
        Some(a) => (
            String::new(),
            format!(
                "[[pbx]]\nname = \"main\"\nhost = \"127.0.0.1\"\nport = {}\n\
                 username = \"bridge\"\nsecret = \"s3cret\"\nreconnect_initial = \"50ms\"\n\
                 reconnect_max = \"200ms\"\n",
                a.port()
            ),
        ),
    };
    let text = format!(
        r#"
{top}
[http]
listen = "127.0.0.1:0"
[storage]
url = "sqlite://{db}"
[journal]
dir = {journal:?}
fsync_interval = "5ms"
{pbx_table}
"#,
        db = dir.join("calls.db").display(),
        journal = dir.join("journal").display().to_string(),
    );
    config::load_from_str(&text, &[]).expect("test config")
}

/// GET `path`: status and JSON body.
async fn get_json(service: &Service, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("http://{}{path}", service.http_addr))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Polls /readyz until it answers `status` (or gives up after [`WAIT`]); returns the last
/// answer.
async fn readyz_until(service: &Service, status: u16) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = get_json(service, "/readyz").await;
        if answer.0 == status || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a simulated Asterisk on `addr` (the port the service knows), retrying while the
/// previous server's socket is still being released.
async fn ami_server_at(addr: SocketAddr) -> AmiServer {
    let cfg = AmiServerConfig {
        username: "bridge".into(),
        secret: "s3cret".into(),
        require_md5: true,
        banner: "Asterisk Call Manager/11.0.0".into(),
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match AmiServer::start(addr, cfg.clone()).await {
            Ok(server) => return server,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "port not free yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot listen on {addr} again: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_with_ami_up_unready_naming_ami_while_it_is_down_ready_again_after() {
    let dir = tempfile::tempdir().unwrap();
    let ami = common::ami_server("s3cret", true).await;
    let addr = ami.local_addr();
    let service = Service::start(&settings(dir.path(), Some(addr)))
        .await
        .unwrap();
    assert!(service.ami[0].wait_up(WAIT).await);

    let health = reqwest::get(format!("http://{}/healthz", service.http_addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let (status, body) = readyz_until(&service, 200).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"]["ami"]["ok"], true);
    assert_eq!(body["checks"]["ami"]["pbx"][0]["name"], "main");
    assert_eq!(body["checks"]["ami"]["pbx"][0]["logged_in"], true);
    assert_eq!(body["checks"]["store"]["ok"], true);
    assert_eq!(body["checks"]["journal"]["ok"], true);

    // Asterisk goes away: not ready, and the body says it is the AMI link.
    ami.shutdown();
    let (status, body) = readyz_until(&service, 503).await;
    assert_eq!(status, 503, "{body:#}");
    assert_eq!(body["ready"], false);
    let ami_check = &body["checks"]["ami"];
    assert_eq!(ami_check["ok"], false, "{body:#}");
    assert_eq!(ami_check["pbx"][0]["logged_in"], false);
    let detail = ami_check["detail"].as_str().unwrap();
    assert!(
        detail.contains("not logged in") && detail.contains("main"),
        "{detail}"
    );
    assert!(ami_check["pbx"][0]["error"].is_string(), "{body:#}");
    // Only the AMI check fails.
    assert_eq!(body["checks"]["store"]["ok"], true, "{body:#}");
    assert_eq!(body["checks"]["journal"]["ok"], true, "{body:#}");
    // Liveness is not readiness: the process is still up.
    let health = reqwest::get(format!("http://{}/healthz", service.http_addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // It comes back on the same port: the client reconnects and the service is ready again.
    let ami = ami_server_at(addr).await;
    assert!(ami.wait_for_logins(1, WAIT).await, "no login after restart");
    let (status, body) = readyz_until(&service, 200).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["checks"]["ami"]["ok"], true);

    service.stop().await.unwrap();
    ami.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pbx_ami_passes_and_a_closed_store_or_journal_fails_its_check() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&settings(dir.path(), None)).await.unwrap();

    let (status, body) = get_json(&service, "/readyz").await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["checks"]["ami"]["ok"], true);
    assert_eq!(body["checks"]["ami"]["detail"], "no PBX configured");
    assert_eq!(body["checks"]["ami"]["pbx"], serde_json::json!([]));

    // The store can no longer be written: only the store check fails.
    service.store.close().await;
    let (status, body) = get_json(&service, "/readyz").await;
    assert_eq!(status, 503, "{body:#}");
    assert_eq!(body["checks"]["store"]["ok"], false, "{body:#}");
    assert!(body["checks"]["store"]["detail"]
        .as_str()
        .unwrap()
        .contains("readiness"));
    assert_eq!(body["checks"]["ami"]["ok"], true);
    assert_eq!(body["checks"]["journal"]["ok"], true);

    // The journal writer is gone: the journal check fails too.
    service.journal.close().unwrap();
    let (status, body) = get_json(&service, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["journal"]["ok"], false, "{body:#}");

    // Stopping cannot flush a closed journal; that is expected here.
    let _ = service.stop().await;
}
