//! Webhooks against local receivers on loopback: the signature verifies (recomputed here with
//! HMAC-SHA256 over `timestamp.body`); a receiver that fails three times then succeeds gets
//! the event acknowledged exactly once, every attempt with the same idempotency key; a
//! black-hole target (accepts TCP, never answers) does not delay a healthy one; and events
//! still undelivered when the real binary is killed with SIGKILL are delivered after a
//! restart.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ctibridge::config;
use ctibridge::service::Service;
use ctibridge::sim::ami_server::AmiServer;
use ctibridge::sim::fixtures::load_capture_file;
use ctibridge::store::{DeliveryQuery, DeliveryState, Store};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(20);

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Hit {
    event_id: u64,
    idempotency_key: String,
    event_type: String,
    attempt: u32,
    timestamp: i64,
    signature: Option<String>,
    body: String,
    /// What the receiver answered.
    status: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// Decides the status of a request, given how many requests for the same event came before.
type Policy = Arc<dyn Fn(&Hit, usize) -> u16 + Send + Sync>;

#[derive(Clone)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    policy: Policy,
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Acknowledged (2xx) requests, in arrival order.
    fn acked(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| (200..300).contains(&h.status))
            .collect()
    }
}

async fn hook(State(rx): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let h = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    let mut hit = Hit {
        event_id: h("x-ctibridge-event-id").unwrap().parse().unwrap(),
        idempotency_key: h("idempotency-key").unwrap(),
        event_type: h("x-ctibridge-event-type").unwrap(),
        attempt: h("x-ctibridge-attempt").unwrap().parse().unwrap(),
        timestamp: h("x-ctibridge-timestamp").unwrap().parse().unwrap(),
        signature: h("x-ctibridge-signature"),
        body,
        status: 0,
    };
    let mut hits = rx.hits.lock().unwrap();
    let before = hits.iter().filter(|x| x.event_id == hit.event_id).count();
    hit.status = (rx.policy)(&hit, before);
    let status = StatusCode::from_u16(hit.status).unwrap();
    hits.push(hit);
    status
}

/// A webhook receiver on `listener`.
fn receiver(listener: tokio::net::TcpListener, policy: Policy) -> Receiver {
    let rx = Receiver {
        hits: Arc::default(),
        policy,
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(rx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    rx
}

async fn loopback() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Accepts connections and never reads or answers; returns how many it accepted so far.
fn black_hole(listener: tokio::net::TcpListener) -> Arc<Mutex<Vec<tokio::net::TcpStream>>> {
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            keep.lock().unwrap().push(stream);
        }
    });
    held
}

/// HMAC-SHA256 of `timestamp.body`, as receivers compute it (docs/EVENTS.md).
fn expected_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v1={hex}")
}

fn settings(ami: &AmiServer, dir: &Path, webhooks: &str) -> config::Settings {
    common::service_settings(ami, dir, webhooks)
}

async fn start(webhooks: &str) -> (AmiServer, Service, tempfile::TempDir) {
    let ami = common::ami_server("s3cret", true).await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&settings(&ami, dir.path(), webhooks))
        .await
        .unwrap();
    assert!(service.ami[0].wait_up(WAIT).await, "AMI link up");
    (ami, service, dir)
}

async fn play(ami: &AmiServer, name: &str, generation: u64) {
    let scenario = load_capture_file(&common::fixture(&format!("{name}.ami"))).unwrap();
    ami.play(&scenario.instantiate(generation), 0.0).await;
}

/// Polls (asynchronously) until `f` holds, failing after [`WAIT`].
async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    assert!(
        common::eventually(WAIT, &mut f).await,
        "timed out waiting: {what}"
    );
}

fn types(hits: &[Hit]) -> Vec<String> {
    hits.iter().map(|h| h.event_type.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_in_order_and_the_log_shows_them() {
    let listener = loopback().await;
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let rx = receiver(listener, Arc::new(|_, _| 204));
    let (ami, service, _dir) = start(&format!(
        r#"
[[webhooks]]
name = "crm"
url = "{url}"
events = ["call.*"]
secret = "whsec_test"
"#
    ))
    .await;
    play(&ami, "answered_caller_hangup", 1).await;
    wait_for("call.ended delivered", || {
        rx.acked().iter().any(|h| h.event_type == "call.ended")
    })
    .await;
    let hits = rx.hits();
    assert_eq!(
        types(&hits),
        [
            "call.started",
            "call.ringing",
            "call.answered",
            "call.ended"
        ]
    );
    for h in &hits {
        let sig = h.signature.as_deref().expect("signed");
        assert_eq!(sig, expected_signature("whsec_test", h.timestamp, &h.body));
        assert_ne!(sig, expected_signature("another", h.timestamp, &h.body));
        assert_ne!(
            sig,
            expected_signature("whsec_test", h.timestamp + 1, &h.body)
        );
        let body = h.json();
        assert_eq!(body["id"], h.event_id, "the body is the event");
        assert_eq!(body["type"], h.event_type.as_str());
        assert_eq!(h.idempotency_key, h.event_id.to_string());
        assert_eq!(h.attempt, 1);
    }
    let ids: Vec<u64> = hits.iter().map(|h| h.event_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in event order: {ids:?}"
    );
    assert_eq!(hits[3].json()["data"]["record"]["answered_by"], "102");

    // The same events on the live stream have the same ids and bodies.
    let sse = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/events?types=call.*&last_event_id={}",
            service.http_addr,
            ids[0] - 1
        ))
        .bearer_auth("reader")
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let mut sse = sse;
    while text.matches("\n\n").count() < 1 + hits.len() {
        let chunk = tokio::time::timeout(WAIT, sse.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    for h in &hits {
        assert!(
            text.contains(&format!("data: {}\n", h.body)),
            "{}",
            h.event_type
        );
    }
    drop(sse);

    // The delivery log: admin only; every delivery acknowledged on its first attempt.
    let log = |token: &'static str| {
        reqwest::Client::new()
            .get(format!(
                "http://{}/api/v1/webhooks/deliveries?target=crm",
                service.http_addr
            ))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(log("reader").await.unwrap().status(), 403);
    // The receiver answered before the bridge recorded the outcome: wait for the record.
    let mut page = Value::Null;
    for _ in 0..400 {
        page = log("admin").await.unwrap().json().await.unwrap();
        let all_done = page["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "delivered");
        if all_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deliveries = page["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 4);
    for d in deliveries {
        assert_eq!(d["state"], "delivered");
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["attempt_log"][0]["status"], 204);
    }
    assert_eq!(deliveries[0]["event_type"], "call.ended", "newest first");
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_three_times_acknowledges_the_event_exactly_once() {
    let listener = loopback().await;
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    // call.started fails three times, then succeeds; everything else succeeds.
    let rx = receiver(
        listener,
        Arc::new(|hit: &Hit, before: usize| {
            if hit.event_type == "call.started" && before < 3 {
                500
            } else {
                200
            }
        }),
    );
    let (ami, service, _dir) = start(&format!(
        r#"
[[webhooks]]
name = "flaky"
url = "{url}"
events = ["call.*"]
retry_initial = "20ms"
retry_max = "100ms"
max_attempts = 10
"#
    ))
    .await;
    play(&ami, "answered_caller_hangup", 1).await;
    wait_for("call.ended acknowledged", || {
        rx.acked().iter().any(|h| h.event_type == "call.ended")
    })
    .await;

    let hits = rx.hits();
    let started_id = hits[0].event_id;
    let started: Vec<&Hit> = hits.iter().filter(|h| h.event_id == started_id).collect();
    assert_eq!(
        started
            .iter()
            .map(|h| (h.attempt, h.status))
            .collect::<Vec<_>>(),
        [(1, 500), (2, 500), (3, 500), (4, 200)]
    );
    assert!(
        started
            .iter()
            .all(|h| h.idempotency_key == started_id.to_string() && h.body == started[0].body),
        "every attempt carries the same idempotency key and body"
    );
    // Exactly one acknowledgement per event, and the call's later events waited for it.
    let acked = rx.acked();
    let mut acked_ids: Vec<u64> = acked.iter().map(|h| h.event_id).collect();
    assert_eq!(
        types(&acked),
        [
            "call.started",
            "call.ringing",
            "call.answered",
            "call.ended"
        ]
    );
    acked_ids.dedup();
    assert_eq!(acked_ids.len(), 4);
    let success_at = hits
        .iter()
        .position(|h| h.event_id == started_id && h.status == 200)
        .unwrap();
    assert!(
        hits[..success_at].iter().all(|h| h.event_id == started_id),
        "nothing of the call went out before its first event was acknowledged"
    );

    // The delivery log agrees: delivered after four attempts, with each status.
    let page: Value = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/webhooks/deliveries?event_id={started_id}",
            service.http_addr
        ))
        .bearer_auth("admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let d = &page["deliveries"][0];
    assert_eq!(d["state"], "delivered");
    assert_eq!(d["attempts"], 4);
    let statuses: Vec<u64> = d["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
    // An id beyond what the store can hold names no event: a clear 422, not a 500.
    let too_big = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/webhooks/deliveries?event_id=9223372036854775808",
            service.http_addr
        ))
        .bearer_auth("admin")
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 422);
    let body: Value = too_big.json().await.unwrap();
    assert!(body.to_string().contains("event_id"), "{body}");
    service.stop().await.unwrap();
    // Delivered is final: nothing was sent again for it, before or during the stop.
    assert_eq!(
        rx.hits()
            .iter()
            .filter(|h| h.event_id == started_id)
            .count(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_target_does_not_delay_a_healthy_one() {
    let hole = loopback().await;
    let hole_url = format!("http://{}/hook", hole.local_addr().unwrap());
    let held = black_hole(hole);
    let listener = loopback().await;
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let rx = receiver(listener, Arc::new(|_, _| 200));
    // The black hole's timeout is longer than this test waits for anything: if it held up
    // the healthy target, the healthy one could not finish in time.
    let (ami, service, _dir) = start(&format!(
        r#"
[[webhooks]]
name = "black-hole"
url = "{hole_url}"
timeout = "120s"
concurrency = 2
[[webhooks]]
name = "healthy"
url = "{url}"
events = ["call.*"]
"#
    ))
    .await;
    for generation in 1..=3 {
        play(&ami, "missed_caller_cancel", generation).await;
    }
    wait_for("three calls delivered to the healthy target", || {
        rx.acked()
            .iter()
            .filter(|h| h.event_type == "call.ended")
            .count()
            == 3
    })
    .await;
    assert!(
        !held.lock().unwrap().is_empty(),
        "the black hole was tried too"
    );
    let stuck = service
        .store
        .outbox_list(&DeliveryQuery {
            target: Some("black-hole".into()),
            limit: 100,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert!(stuck.len() >= 9, "every event is in its outbox");
    assert!(
        stuck
            .iter()
            .all(|d| d.state == DeliveryState::Pending && d.attempts == 0),
        "none of them finished an attempt"
    );
    service.stop().await.unwrap();
}

fn spawn_serve(workdir: &Path, ami: std::net::SocketAddr, hook_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ctibridge"))
        .arg("serve")
        .current_dir(workdir)
        .env_remove("RUST_LOG")
        .env("CTIBRIDGE__HTTP__LISTEN", "127.0.0.1:0")
        .env("CTIBRIDGE__STORAGE__URL", "sqlite://calls.db")
        .env("CTIBRIDGE__PBX__0__HOST", ami.ip().to_string())
        .env("CTIBRIDGE__PBX__0__PORT", ami.port().to_string())
        .env("CTIBRIDGE__PBX__0__USERNAME", "bridge")
        .env("CTIBRIDGE__PBX__0__SECRET", "s3cret")
        .env("CTIBRIDGE__PBX__0__RECONNECT_INITIAL", "50ms")
        .env("CTIBRIDGE__JOURNAL__DIR", workdir.join("journal"))
        .env("CTIBRIDGE__JOURNAL__FSYNC_INTERVAL", "10ms")
        .env("CTIBRIDGE__CORRELATION__GRACE", "200ms")
        .env("CTIBRIDGE__WEBHOOKS__0__NAME", "crm")
        .env("CTIBRIDGE__WEBHOOKS__0__URL", hook_url)
        .env("CTIBRIDGE__WEBHOOKS__0__EVENTS", r#"["call.*"]"#)
        .env("CTIBRIDGE__WEBHOOKS__0__SECRET", "whsec_kill")
        .env("CTIBRIDGE__WEBHOOKS__0__RETRY_INITIAL", "50ms")
        .env("CTIBRIDGE__WEBHOOKS__0__RETRY_MAX", "200ms")
        .env("CTIBRIDGE__WEBHOOKS__0__MAX_ATTEMPTS", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ctibridge serve")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_events_survive_kill_9_and_are_delivered_after_a_restart() {
    let ami = common::ami_server("s3cret", true).await;
    let work = tempfile::tempdir().unwrap();
    // A port with nobody listening (yet): every attempt is refused.
    let port = loopback().await.local_addr().unwrap().port();
    let hook_url = format!("http://127.0.0.1:{port}/hook");

    let mut serve = spawn_serve(work.path(), ami.local_addr(), &hook_url);
    assert!(ami.wait_for_logins(1, WAIT).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    play(&ami, "answered_caller_hangup", 1).await;
    // Read the outbox from the side, as a reporting tool would.
    let store = Store::open(&format!(
        "sqlite://{}",
        work.path().join("calls.db").display()
    ))
    .await
    .unwrap();
    let query = DeliveryQuery {
        target: Some("crm".into()),
        limit: 100,
        ..DeliveryQuery::default()
    };
    // Wait until the whole call is in the outbox and its first event was tried (the later
    // ones wait behind it: one call, in order).
    let mut pending = Vec::new();
    for _ in 0..400 {
        pending = store.outbox_list(&query).await.unwrap();
        let ended = pending.iter().any(|d| d.event_type == "call.ended");
        let tried = pending
            .iter()
            .any(|d| d.event_type == "call.started" && d.attempts >= 2);
        if ended && tried {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        pending.iter().any(|d| d.event_type == "call.ended"),
        "the call's events reached the outbox: {pending:?}"
    );
    assert!(pending.iter().all(|d| d.state == DeliveryState::Pending));
    let tried_before: Vec<(u64, u32)> = pending.iter().map(|d| (d.event_id, d.attempts)).collect();
    serve.kill().unwrap(); // SIGKILL
    serve.wait().unwrap();
    let undelivered: Vec<u64> = {
        let mut ids: Vec<u64> = store
            .outbox_list(&query)
            .await
            .unwrap()
            .iter()
            .map(|d| d.event_id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(undelivered.len(), 4, "started, ringing, answered, ended");
    store.close().await;

    // The target comes up; the bridge restarts.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let rx = receiver(listener, Arc::new(|_, _| 200));
    let logins = ami.logins();
    let mut serve = spawn_serve(work.path(), ami.local_addr(), &hook_url);
    assert!(ami.wait_for_logins(logins + 1, WAIT).await);
    wait_for("the undelivered events are delivered", || {
        let got: std::collections::BTreeSet<u64> = rx.acked().iter().map(|h| h.event_id).collect();
        undelivered.iter().all(|id| got.contains(id))
    })
    .await;
    let acked = rx.acked();
    let delivered: Vec<&Hit> = acked
        .iter()
        .filter(|h| undelivered.contains(&h.event_id))
        .collect();
    assert_eq!(
        delivered.iter().map(|h| h.event_id).collect::<Vec<_>>(),
        undelivered,
        "each once, in order"
    );
    for h in &delivered {
        let before = tried_before
            .iter()
            .find(|(id, _)| *id == h.event_id)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        assert!(
            h.attempt > before,
            "attempt numbers continue across the restart ({} after {before})",
            h.attempt
        );
        assert_eq!(
            h.signature.as_deref(),
            Some(&expected_signature("whsec_kill", h.timestamp, &h.body)[..])
        );
    }
    let status = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(serve.wait().unwrap().success());
}
