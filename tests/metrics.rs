//! `GET /metrics` scraped over a real socket from a running service after real traffic: an
//! AMI session that carries a recorded call, phone callbacks (accepted, one with a bad
//! escape, one with a wrong path secret, one from outside the allowed network), Active URI
//! commands (one to a simulated phone, one refused by the address allow-list), and a webhook
//! target that refuses connections (its delivery stays pending).
//!
//! The text is parsed with `openmetrics-parser` (its Prometheus text grammar), which checks
//! the exposition's structure — one TYPE per family, consistent label sets, histograms with a
//! `+Inf` bucket, cumulative buckets, `_sum` with `_count` — and the values are compared with
//! what the test sent and what the simulated Asterisk wrote.

use ctibridge::config::{self, PhoneVendor};
use ctibridge::phone::command::PhoneCommand;
use ctibridge::service::Service;
use ctibridge::sim::ami_server::AmiServer;
use ctibridge::sim::fixtures::load_capture_file;
use ctibridge::sim::phone::{PhoneSim, PhoneSimConfig};
use ctibridge::store::CallQuery;
use openmetrics_parser::{HistogramValue, MetricsExposition, PrometheusType, PrometheusValue};
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "s3cr3t";

type Parsed = MetricsExposition<PrometheusType, PrometheusValue>;

struct Rig {
    service: Service,
    ami: AmiServer,
    _phone: PhoneSim,
    client: reqwest::Client,
    /// Scrapes done so far (each is one request on the `/metrics` route).
    scrapes: u64,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let ami = common::ami_server("s3cret", true).await;
    let phone = PhoneSim::start(
        "127.0.0.1:0".parse().unwrap(),
        PhoneSimConfig::for_vendor(PhoneVendor::Yealink, "101"),
    )
    .await
    .unwrap();
    // A port that was free a moment ago: the webhook target refuses connections.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
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
phone_match_window = "200ms"
[action_url]
allowed_networks = ["127.0.0.1/32"]
path_secret = "{SECRET}"
[active_uri]
allowed_networks = ["127.0.0.0/8"]
timeout = "2s"
[[pbx]]
name = "main"
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "s3cret"
reconnect_initial = "50ms"
# No keep-alive Ping during the test: the message counts are compared exactly.
ping_interval = "1h"
[[phones]]
extension = "101"
address = "{phone}"
vendor = "yealink"
username = "admin"
password = "admin"
[[phones]]
extension = "102"
address = "10.9.9.9:80"
vendor = "fanvil"
username = "admin"
password = "admin"
[[api.tokens]]
token = "reader"
scopes = ["read"]
[[webhooks]]
name = "crm"
url = "http://{closed}/hook"
events = ["call.ended"]
timeout = "1s"
retry_initial = "1h"
retry_max = "1h"
"#,
        db = dir.path().join("calls.db").display(),
        journal = dir.path().join("journal").display().to_string(),
        port = ami.local_addr().port(),
        phone = phone.local_addr(),
    );
    let settings = config::load_from_str(&text, &[]).expect("test config");
    let service = Service::start(&settings).await.expect("service starts");
    assert!(service.ami[0].wait_up(WAIT).await, "AMI link up");
    Rig {
        service,
        ami,
        _phone: phone,
        client: reqwest::Client::new(),
        scrapes: 0,
        _dir: dir,
    }
}

impl Rig {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.service.http_addr)
    }

    /// GET /metrics, checked for status and content type, parsed.
    async fn scrape(&mut self) -> Parsed {
        let resp = self.client.get(self.url("/metrics")).send().await.unwrap();
        self.scrapes += 1;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = resp.text().await.unwrap();
        openmetrics_parser::prometheus::parse_prometheus(&text)
            .unwrap_or_else(|e| panic!("the exposition does not parse: {e:?}\n{text}"))
    }

    /// A phone callback to `path` from `local` (a loopback address); returns the status.
    async fn callback(&self, local: &str, path: &str) -> u16 {
        let client = reqwest::Client::builder()
            .local_address(Some(local.parse().unwrap()))
            .build()
            .unwrap();
        client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// The samples of `family` whose labels are exactly `labels`.
fn find<'a>(
    m: &'a Parsed,
    family: &str,
    labels: &[(&str, &str)],
) -> Option<&'a openmetrics_parser::Sample<PrometheusValue>> {
    let fam = m
        .families
        .get(family)
        .unwrap_or_else(|| panic!("family {family} missing"));
    fam.iter_samples().find(|s| {
        let set = s.get_labelset().unwrap();
        set.iter().count() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
    })
}

/// A counter's or gauge's value.
fn value(m: &Parsed, family: &str, labels: &[(&str, &str)]) -> f64 {
    let s = find(m, family, labels).unwrap_or_else(|| panic!("{family}{labels:?} missing"));
    match &s.value {
        PrometheusValue::Counter(c) => c.value.as_f64(),
        PrometheusValue::Gauge(g) => g.as_f64(),
        other => panic!("{family} is not a counter or gauge: {other:?}"),
    }
}

/// The sum of a family over all its series.
fn total(m: &Parsed, family: &str) -> f64 {
    m.families[family]
        .iter_samples()
        .map(|s| match &s.value {
            PrometheusValue::Counter(c) => c.value.as_f64(),
            PrometheusValue::Gauge(g) => g.as_f64(),
            other => panic!("{family} is not a counter or gauge: {other:?}"),
        })
        .sum()
}

fn histogram<'a>(m: &'a Parsed, family: &str, labels: &[(&str, &str)]) -> &'a HistogramValue {
    match find(m, family, labels).map(|s| &s.value) {
        Some(PrometheusValue::Histogram(h)) => h,
        other => panic!("{family}{labels:?}: no histogram ({other:?})"),
    }
}

const LATENCY: &str = "ctibridge_http_request_duration_seconds";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_real_traffic_parse_and_hold_the_counts() {
    let mut rig = rig().await;
    let pbx = [("pbx", "main")];

    // Before any traffic: the link is up, one login, nothing else.
    let m = rig.scrape().await;
    assert_eq!(value(&m, "ctibridge_ami_connected", &pbx), 1.0);
    assert_eq!(value(&m, "ctibridge_ami_logins_total", &pbx), 1.0);
    assert_eq!(value(&m, "ctibridge_live_calls", &[]), 0.0);
    assert_eq!(
        m.families["ctibridge_http_request_duration_seconds"].family_type,
        PrometheusType::Histogram
    );

    // A recorded call over AMI, until its record is stored.
    let scenario =
        load_capture_file(&common::fixture("answered_caller_hangup.ami")).expect("fixture");
    rig.ami.play(&scenario.instantiate(1), 0.0).await;
    let store = rig.service.store.clone();
    let mut stored = false;
    for _ in 0..200 {
        if !store
            .list(&CallQuery::default())
            .await
            .unwrap()
            .records
            .is_empty()
        {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored, "the call was not stored");

    // Phone callbacks: three accepted (one with a bad percent escape), one with a wrong path
    // secret, one from an address outside action_url.allowed_networks.
    let ok = format!("/action-url/{SECRET}/incoming_call?mac=00156500aa01&remote=%2B15550100");
    assert_eq!(rig.callback("127.0.0.1", &ok).await, 200);
    assert_eq!(rig.callback("127.0.0.1", &ok).await, 200);
    let bad_escape = format!("/action-url/{SECRET}/incoming_call?mac=00156500aa01&remote=%ZZ");
    assert_eq!(rig.callback("127.0.0.1", &bad_escape).await, 200);
    assert_eq!(
        rig.callback("127.0.0.1", "/action-url/wrong/incoming_call?remote=1")
            .await,
        403
    );
    assert_eq!(rig.callback("127.0.0.2", &ok).await, 403);
    // A path no route matches.
    assert_eq!(rig.callback("127.0.0.1", "/no/such/path").await, 404);

    // Active URI: one command to the simulated Yealink, one refused before any request.
    rig.service
        .active_uri
        .execute("101", PhoneCommand::DndOn)
        .await
        .expect("the simulated phone takes the command");
    let refused = rig
        .service
        .active_uri
        .execute("102", PhoneCommand::DndOn)
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // Everything settles: the callbacks become orphans (no call matches them), the journal
    // is fsynced, every message the simulated Asterisk wrote is counted.
    rig.service.journal.sync().await.unwrap();
    let sent = rig.ami.sent_log().len() as f64;
    let mut settled = None;
    for _ in 0..200 {
        let m = rig.scrape().await;
        if value(&m, "ctibridge_orphan_phone_callbacks_total", &[]) == 3.0
            && value(&m, "ctibridge_pending_phone_callbacks", &[]) == 0.0
            && value(&m, "ctibridge_live_calls", &[]) == 0.0
            && value(&m, "ctibridge_consumer_backlog", &[]) == 0.0
            && value(&m, "ctibridge_ami_messages_total", &pbx) == sent
            && value(&m, "ctibridge_webhook_failed_attempts_total", &[]) == 1.0
        {
            settled = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = settled.expect("metrics did not settle");

    // AMI: one session, no reconnect, no gap; every message written by the server counted.
    assert_eq!(value(&m, "ctibridge_ami_connected", &pbx), 1.0);
    assert_eq!(value(&m, "ctibridge_ami_logins_total", &pbx), 1.0);
    assert_eq!(value(&m, "ctibridge_ami_reconnects_total", &pbx), 0.0);
    assert_eq!(value(&m, "ctibridge_ami_connect_failures_total", &pbx), 0.0);
    assert_eq!(value(&m, "ctibridge_ami_gaps_total", &pbx), 0.0);
    assert_eq!(value(&m, "ctibridge_ami_malformed_total", &pbx), 0.0);
    assert!(sent > scenario.messages.len() as f64, "{sent}");

    // Phone callbacks per event and result.
    let cb = "ctibridge_phone_callbacks_total";
    let incoming = |result| [("event", "incoming_call"), ("result", result)];
    assert_eq!(value(&m, cb, &incoming("accepted")), 3.0);
    assert_eq!(value(&m, cb, &incoming("forbidden_secret")), 1.0);
    assert_eq!(value(&m, cb, &incoming("forbidden_network")), 1.0);
    assert_eq!(total(&m, cb), 5.0);
    assert_eq!(
        value(
            &m,
            cb,
            &[("event", "call_established"), ("result", "accepted")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &m,
            "ctibridge_phone_callbacks_with_problems_total",
            &[("event", "incoming_call")]
        ),
        1.0
    );
    assert_eq!(
        total(&m, "ctibridge_phone_callbacks_with_problems_total"),
        1.0
    );

    // Correlator: the three accepted callbacks matched no call; the call is done.
    assert_eq!(
        value(&m, "ctibridge_orphan_phone_callbacks_total", &[]),
        3.0
    );

    // Journal: every AMI message and accepted callback appended, all of it fsynced, and the
    // correlator processed every entry.
    let appended = value(&m, "ctibridge_journal_appended_entries_total", &[]);
    assert_eq!(appended, sent + 3.0);
    assert_eq!(
        value(&m, "ctibridge_journal_synced_entries_total", &[]),
        appended
    );
    assert_eq!(
        value(&m, "ctibridge_journal_synced_bytes_total", &[]),
        value(&m, "ctibridge_journal_appended_bytes_total", &[])
    );
    assert_eq!(value(&m, "ctibridge_journal_unsynced_entries", &[]), 0.0);
    assert_eq!(value(&m, "ctibridge_journal_unsynced_bytes", &[]), 0.0);
    assert_eq!(value(&m, "ctibridge_journal_write_errors_total", &[]), 0.0);
    assert_eq!(value(&m, "ctibridge_consumer_inputs_total", &[]), appended);
    assert_eq!(value(&m, "ctibridge_ingest_dropped_total", &[]), 0.0);

    // Active URI per vendor and result.
    let au = "ctibridge_active_uri_requests_total";
    assert_eq!(
        value(&m, au, &[("vendor", "yealink"), ("result", "ok")]),
        1.0
    );
    assert_eq!(
        value(&m, au, &[("vendor", "fanvil"), ("result", "refused")]),
        1.0
    );
    assert_eq!(total(&m, au), 2.0);

    // Webhooks: the call's `call.ended` is in the outbox; the target refused it once and
    // the retry is an hour away, so it is pending and ageing.
    assert_eq!(value(&m, "ctibridge_webhook_enqueued_total", &[]), 1.0);
    assert_eq!(value(&m, "ctibridge_webhook_delivered_total", &[]), 0.0);
    assert_eq!(value(&m, "ctibridge_webhook_given_up_total", &[]), 0.0);
    let crm = [("target", "crm")];
    assert_eq!(value(&m, "ctibridge_webhook_pending", &crm), 1.0);
    let age = value(&m, "ctibridge_webhook_oldest_pending_age_seconds", &crm);
    assert!(age > 0.0 && age < 60.0, "{age}");

    // HTTP latency: per route template and status class; never the raw path (the secret
    // and the event name stay out of the labels).
    let route = "/action-url/{secret}/{event}";
    let h = histogram(&m, LATENCY, &[("route", route), ("status", "2xx")]);
    assert_eq!(h.count, Some(3));
    let h = histogram(&m, LATENCY, &[("route", route), ("status", "4xx")]);
    assert_eq!(h.count, Some(2));
    let h = histogram(&m, LATENCY, &[("route", "unmatched"), ("status", "4xx")]);
    assert_eq!(h.count, Some(1));
    // This scrape is recorded after its body was written: the earlier ones are in.
    let h = histogram(&m, LATENCY, &[("route", "/metrics"), ("status", "2xx")]);
    assert_eq!(h.count, Some(rig.scrapes - 1));
    let fam = &m.families[LATENCY];
    let mut series = 0;
    for s in fam.iter_samples() {
        let labels = s.get_labelset().unwrap();
        let route = labels.get_label_value("route").unwrap();
        assert!(
            !route.contains(SECRET) && !route.contains("incoming_call"),
            "raw path in a label: {route}"
        );
        let PrometheusValue::Histogram(h) = &s.value else {
            panic!("not a histogram")
        };
        let inf = h
            .buckets
            .iter()
            .find(|b| b.upper_bound == f64::INFINITY)
            .expect("+Inf bucket");
        assert_eq!(inf.count.as_f64(), h.count.unwrap() as f64, "{route}");
        assert_eq!(h.buckets.len(), 16, "{route}");
        assert_eq!(h.buckets[0].upper_bound, 0.0001);
        assert_eq!(h.buckets[14].upper_bound, 5.0);
        assert!(h.sum.unwrap().as_f64() >= 0.0);
        series += 1;
    }
    assert!(series >= 4, "{series}");

    rig.service.stop().await.unwrap();
}
