//! Helpers shared by the scenario tests (each test file includes this with `mod common;`).
#![allow(dead_code)]

use ctibridge::ami::AmiClientOptions;
use ctibridge::config::AmiAuth;
use ctibridge::sim::ami_server::{AmiServer, AmiServerConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The brief's recorded AMI traffic, checked out beside the repository. Tests fail (not skip)
/// when it is missing, saying where they looked.
pub fn fixtures_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/brief/fixtures"
    ));
    assert!(
        dir.is_dir(),
        "recorded AMI fixtures not found at {} (the brief must be checked out beside the repo)",
        dir.display()
    );
    dir
}

/// One fixture file by name.
pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// Polls `f` every 20 ms until it holds or `limit` passes; returns its last answer.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// A simulated Asterisk on a free loopback port, AMI user `bridge`.
pub async fn ami_server(secret: &str, require_md5: bool) -> AmiServer {
    AmiServer::start(
        "127.0.0.1:0".parse().unwrap(),
        AmiServerConfig {
            username: "bridge".into(),
            secret: secret.into(),
            require_md5,
            banner: "Asterisk Call Manager/11.0.0".into(),
        },
    )
    .await
    .expect("simulated AMI server starts")
}

/// AMI client options for a test against [`ami_server`] (`bridge` / `s3cret`, MD5): short
/// timeouts and back-off, Ping rare enough not to interfere.
pub fn ami_options(addr: std::net::SocketAddr) -> AmiClientOptions {
    AmiClientOptions {
        pbx: Arc::from("test"),
        address: addr.to_string(),
        username: "bridge".into(),
        secret: "s3cret".into(),
        auth: AmiAuth::Md5,
        events: "on".into(),
        connect_timeout: Duration::from_secs(2),
        login_timeout: Duration::from_secs(2),
        ping_interval: Duration::from_secs(30),
        ping_timeout: Duration::from_secs(2),
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        max_message_bytes: 1 << 20,
        unseen_since: None,
    }
}

/// Settings for a service under test against the simulated Asterisk `ami`, with its store
/// and journal in `dir`: short grace and reconnect times, and three API tokens — `reader`
/// (`read`), `dialer` (`dial`) and `admin` (`admin`). `extra` is TOML appended as is (a
/// `[live]` table, `[[webhooks]]`, …).
pub fn service_settings(
    ami: &AmiServer,
    dir: &std::path::Path,
    extra: &str,
) -> ctibridge::config::Settings {
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"
[storage]
url = "sqlite://{db}"
[journal]
dir = {journal:?}
fsync_interval = "5ms"
[correlation]
grace = "200ms"
[[pbx]]
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "s3cret"
reconnect_initial = "50ms"
[[api.tokens]]
token = "reader"
scopes = ["read"]
[[api.tokens]]
token = "dialer"
scopes = ["dial"]
[[api.tokens]]
token = "admin"
scopes = ["admin"]
{extra}
"#,
        db = dir.join("calls.db").display(),
        journal = dir.join("journal").display().to_string(),
        port = ami.local_addr().port(),
    );
    ctibridge::config::load_from_str(&text, &[]).expect("test config")
}
