//! Click-to-call end to end over real sockets: `POST /api/v1/dial` to the service, Active URI
//! to the phone simulator, AMI `Originate` to the in-test AMI server, recorded AMI calls back
//! from it, and the request followed through `GET /api/v1/dial/{id}` to the call record that
//! carries its `dial_request_id`. Also: `auto` falling back to the PBX when the phone
//! black-holes, `Idempotency-Key`, every error's status and JSON body, and `UserEvent CtiDial`.

use ctibridge::ami::AmiMessage;
use ctibridge::config::{self, PhoneVendor};
use ctibridge::control::{DialOrigin, DialStatus};
use ctibridge::service::Service;
use ctibridge::sim::ami_server::{response_to, AmiServer};
use ctibridge::sim::fixtures::{load_capture_file, TimedMessage};
use ctibridge::sim::phone::{PhoneSim, PhoneSimConfig, SimBehaviour};
use serde_json::{json, Value};
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(10);

struct Rig {
    service: Service,
    settings: config::Settings,
    ami: AmiServer,
    phones: Vec<PhoneSim>,
    _dir: tempfile::TempDir,
}

/// A phone of `vendor` per extension (`None`: an address nobody listens on), an AMI server
/// that queues every Originate, and the service between them.
async fn rig(phones: &[(&str, Option<PhoneVendor>)], extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let ami = common::ami_server("s3cret", true).await;
    ami.set_action_handler(Box::new(|action| {
        let name = action.get("Action")?;
        name.eq_ignore_ascii_case("Originate").then(|| {
            vec![response_to(action, "Success")
                .field("Message", "Originate successfully queued")
                .build()
                .unwrap()]
        })
    }));
    let mut sims = Vec::new();
    let mut phone_blocks = String::new();
    for (ext, vendor) in phones {
        let (address, vendor, mac) = match vendor {
            Some(v) => {
                let mut cfg = PhoneSimConfig::for_vendor(*v, ext);
                cfg.answer_after = Some(Duration::from_millis(100));
                let sim = PhoneSim::start("127.0.0.1:0".parse().unwrap(), cfg)
                    .await
                    .unwrap();
                let out = (sim.local_addr().to_string(), *v, sim.config().mac.clone());
                sims.push(sim);
                out
            }
            None => {
                // A port that was free a moment ago: connections are refused.
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = l.local_addr().unwrap().to_string();
                drop(l);
                (addr, PhoneVendor::Yealink, "001565ffffff".to_string())
            }
        };
        phone_blocks.push_str(&format!(
            "[[phones]]\nextension = \"{ext}\"\naddress = \"{address}\"\nvendor = {}\n\
             username = \"admin\"\npassword = \"admin\"\nmac = \"{mac}\"\n",
            serde_json::to_value(vendor).unwrap()
        ));
    }
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
[active_uri]
timeout = "500ms"
[dial]
context = "internal"
{extra}
[[pbx]]
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "s3cret"
reconnect_initial = "50ms"
{phone_blocks}
[[api.tokens]]
token = "dialer"
scopes = ["dial", "read"]
[[api.tokens]]
token = "dialer2"
scopes = ["dial"]
[[api.tokens]]
token = "reader"
scopes = ["read"]
"#,
        db = dir.path().join("calls.db").display(),
        journal = dir.path().join("journal").display().to_string(),
        port = ami.local_addr().port(),
    );
    let settings = config::load_from_str(&text, &[]).expect("test config");
    let service = Service::start(&settings).await.expect("service starts");
    assert!(service.ami[0].wait_up(WAIT).await, "AMI link up");
    for sim in &sims {
        sim.set_callback_base(Some(format!("http://{}/action-url", service.http_addr)));
    }
    Rig {
        service,
        settings,
        ami,
        phones: sims,
        _dir: dir,
    }
}

impl Rig {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.service.http_addr)
    }

    async fn post_dial(&self, body: Value, key: Option<&str>, token: &str) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(self.url("/api/v1/dial"))
            .bearer_auth(token)
            .json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth("dialer")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Polls the request until `done` holds (or fails the test with the last state).
    async fn wait_dial(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self.get(&format!("/api/v1/dial/{id}")).await;
            assert_eq!(status, 200, "{body}");
            if done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "request stuck: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the stored record that carries `dial_request_id = id`.
    async fn wait_record(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, page) = self.get("/api/v1/calls?limit=100").await;
            if let Some(r) = page["records"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["dial_request_id"] == id)
            {
                return r.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no record with dial_request_id {id}: {page:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn originates(&self) -> Vec<AmiMessage> {
        self.ami
            .received_actions()
            .into_iter()
            .filter(|a| a.get("Action") == Some("Originate"))
            .collect()
    }

    async fn stop(self) {
        for p in &self.phones {
            p.shutdown();
        }
        self.service.stop().await.unwrap();
    }
}

/// A recorded call with its identifiers replaced (`from` → `to` in every value), and an
/// optional message inserted right after the first `Newchannel` (where Asterisk sets an
/// Originate's variables).
fn recorded(name: &str, renames: &[(&str, &str)], insert: Option<AmiMessage>) -> Vec<TimedMessage> {
    let scenario = load_capture_file(&common::fixture(name)).unwrap();
    let mut out: Vec<TimedMessage> = scenario
        .messages
        .iter()
        .map(|t| {
            let mut b = AmiMessage::builder();
            for (k, v) in t.msg.iter() {
                let mut v = v.to_owned();
                for (from, to) in renames {
                    v = v.replace(from, to);
                }
                b = b.field(k, v);
            }
            TimedMessage {
                at: t.at,
                msg: b.build().unwrap(),
            }
        })
        .collect();
    if let Some(m) = insert {
        let pos = out
            .iter()
            .position(|t| t.msg.event_name() == Some("Newchannel"))
            .expect("a Newchannel");
        let at = out[pos].at;
        out.insert(pos + 1, TimedMessage { at, msg: m });
    }
    out
}

/// The Originate fixture (101 rings, answers, 102 is dialled and answers) replayed as the
/// answer to our Originate: its ChannelId and ActionID become ours.
async fn play_originate(rig: &Rig, originate: &AmiMessage, with_varset: bool) {
    let id = originate.get("ChannelId").expect("ChannelId");
    let action_id = originate.action_id().expect("ActionID");
    let varset = with_varset.then(|| {
        AmiMessage::event("VarSet")
            .field("Channel", "PJSIP/101-0000000a")
            .field("Uniqueid", id)
            .field("Linkedid", id)
            .field("Variable", "__CTIBRIDGE_REQUEST_ID")
            .field("Value", id)
            .build()
            .unwrap()
    });
    let messages = recorded(
        "originate_click2call.ami",
        &[("c2c-101-102-a", id), ("c2c-101-102", action_id)],
        varset,
    );
    rig.ami.play(&messages, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_via_pbx_originates_follows_the_call_and_links_the_record() {
    let rig = rig(&[("101", Some(PhoneVendor::Yealink))], "").await;
    let (status, body) = rig
        .post_dial(
            json!({"from": "101", "to": "102", "via": "pbx"}),
            None,
            "dialer",
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["request_id"].as_str().unwrap().to_owned();
    assert_eq!(body["via"], "pbx");
    assert_eq!(body["state"], "sent");
    assert!(
        rig.phones[0].requests().is_empty(),
        "the phone is not asked"
    );

    let originates = rig.originates();
    assert_eq!(originates.len(), 1);
    let o = &originates[0];
    assert_eq!(o.get("Channel"), Some("PJSIP/101"));
    assert_eq!(o.get("Exten"), Some("102"));
    assert_eq!(o.get("Context"), Some("internal"));
    assert_eq!(o.get("Priority"), Some("1"));
    assert_eq!(o.get("Async"), Some("true"));
    assert_eq!(o.get("CallerID"), Some("\"102\" <101>"));
    assert_eq!(o.get("ChannelId"), Some(id.as_str()));
    let variable = format!("__CTIBRIDGE_REQUEST_ID={id}");
    assert!(
        o.get_all("Variable").any(|v| v == variable),
        "request id variable: {:?}",
        o.to_pairs()
    );

    play_originate(&rig, o, true).await;
    let done = rig
        .wait_dial(&id, |b| {
            b["state"] == "answered" && b["ended_at"].is_string()
        })
        .await;
    let steps: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    for state in ["pending", "sent", "ringing", "answered"] {
        assert!(steps.contains(&state), "{state} in {steps:?}");
    }
    let record = rig.wait_record(&id).await;
    assert_eq!(record["answered_by"], "102");
    assert_eq!(record["from"]["extension"], "101");
    let done = rig.wait_dial(&id, |b| b["record_id"].is_string()).await;
    assert_eq!(done["record_id"], record["id"]);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_the_pbx_when_the_phone_black_holes() {
    let rig = rig(&[("101", Some(PhoneVendor::Yealink))], "").await;
    rig.phones[0].set_behaviour(SimBehaviour::BlackHole);
    let (status, body) = rig
        .post_dial(json!({"from": "101", "to": "102"}), None, "dialer")
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["via_requested"], "auto");
    assert_eq!(body["via"], "pbx", "{body:#}");
    assert!(
        body["fallback"].as_str().unwrap().starts_with("timeout"),
        "{body:#}"
    );
    let requests = rig.phones[0].requests();
    assert_eq!(requests.len(), 1, "the phone got one dial and no answer");
    assert_eq!(requests[0].status, None);
    let originates = rig.originates();
    assert_eq!(originates.len(), 1);
    // No VarSet this time: the request is tied to the call by the preset channel id alone.
    play_originate(&rig, &originates[0], false).await;
    let id = body["request_id"].as_str().unwrap();
    rig.wait_dial(id, |b| b["state"] == "answered").await;
    let record = rig.wait_record(id).await;
    assert_eq!(record["answered_by"], "102");
    rig.stop().await;
}

/// Dials from `vendor`'s phone; the AMI server then plays the recorded call 101 → 102.
async fn dial_via_phone(vendor: PhoneVendor, expected_target: &str) {
    let rig = rig(&[("101", Some(vendor))], "").await;
    let (status, body) = rig
        .post_dial(
            json!({"from": "101", "to": "102", "via": "phone"}),
            None,
            "dialer",
        )
        .await;
    assert_eq!(status, 202, "{vendor:?}: {body}");
    assert_eq!(body["via"], "phone");
    assert_eq!(body["delivered"], true);
    let id = body["request_id"].as_str().unwrap().to_owned();
    let requests = rig.phones[0].requests();
    let targets: Vec<&str> = requests.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, [expected_target], "{vendor:?}");
    assert!(
        requests[0].authorized && requests[0].executed,
        "{requests:?}"
    );
    assert!(rig.originates().is_empty());

    // The phone's call as Asterisk reports it.
    let call = load_capture_file(&common::fixture("answered_caller_hangup.ami")).unwrap();
    rig.ami.play(&call.instantiate(1), 0.0).await;
    let record = rig.wait_record(&id).await;
    assert_eq!(record["from"]["extension"], "101", "{vendor:?}");
    assert_eq!(record["to"]["number"], "102");
    let done = rig
        .wait_dial(&id, |b| {
            b["state"] == "answered" && b["record_id"].is_string()
        })
        .await;
    assert_eq!(done["record_id"], record["id"]);
    assert_eq!(done["linkedid"], record["linkedid"]);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_via_phone_yealink() {
    dial_via_phone(
        PhoneVendor::Yealink,
        "/servlet?key=number=102&outgoing_uri=101@127.0.0.1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_via_phone_fanvil() {
    dial_via_phone(
        PhoneVendor::Fanvil,
        "/cgi-bin/ConfigManApp.com?number=102&outgoing_uri=101@127.0.0.1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_via_phone_snom() {
    dial_via_phone(
        PhoneVendor::Snom,
        "/command.htm?number=102&outgoing_uri=101@127.0.0.1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_places_one_call() {
    let rig = rig(&[("101", Some(PhoneVendor::Yealink))], "").await;
    let body = json!({"from": "101", "to": "+1 555 0100", "via": "phone"});
    // Two identical requests at the same time: one waits for the other.
    let (a, b) = tokio::join!(
        rig.post_dial(body.clone(), Some("crm-42"), "dialer"),
        rig.post_dial(body.clone(), Some("crm-42"), "dialer"),
    );
    assert_eq!((a.0, b.0), (202, 202), "{a:?} {b:?}");
    assert_eq!(a.1["request_id"], b.1["request_id"]);
    // And again later.
    let (c, body_c) = rig.post_dial(body.clone(), Some("crm-42"), "dialer").await;
    assert_eq!(c, 202);
    assert_eq!(body_c["request_id"], a.1["request_id"]);
    assert_eq!(
        rig.phones[0].requests().len(),
        1,
        "exactly one phone request"
    );
    // The same key for another call is refused.
    let (d, body_d) = rig
        .post_dial(
            json!({"from": "101", "to": "999"}),
            Some("crm-42"),
            "dialer",
        )
        .await;
    assert_eq!(d, 422, "{body_d}");
    assert_eq!(body_d["error"], "idempotency_key_reused");
    // Another client's key of the same name is its own request.
    let (e, body_e) = rig.post_dial(body, Some("crm-42"), "dialer2").await;
    assert_eq!(e, 202, "{body_e}");
    assert_ne!(body_e["request_id"], a.1["request_id"]);
    assert_eq!(rig.phones[0].requests().len(), 2);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_status_and_a_json_body_naming_the_problem() {
    let rig = rig(
        &[
            ("101", Some(PhoneVendor::Yealink)),
            ("102", Some(PhoneVendor::Yealink)),
            ("103", None),
        ],
        "rate_limit_per_token = 3\nrate_limit_per_phone = 2\nrate_window = \"10m\"",
    )
    .await;
    let expect = |(status, body): (u16, Value), want: u16, code: &str, words: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["error"], code, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(words),
            "{message:?} should mention {words:?}"
        );
    };
    let dial = |from: &str, to: &str, via: &str| json!({"from": from, "to": to, "via": via});

    // Auth.
    let resp = reqwest::Client::new()
        .post(rig.url("/api/v1/dial"))
        .json(&dial("101", "1", "phone"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    expect(
        rig.post_dial(dial("101", "1", "phone"), None, "reader")
            .await,
        403,
        "forbidden",
        "dial",
    );
    // Bad input: 404 unknown extension, 422 number / body / key.
    expect(
        rig.post_dial(dial("999", "1", "auto"), None, "dialer")
            .await,
        404,
        "unknown_extension",
        "\"999\"",
    );
    expect(
        rig.post_dial(dial("101", "555;key=Reboot", "auto"), None, "dialer")
            .await,
        422,
        "invalid_number",
        "';' at position 4",
    );
    expect(
        rig.post_dial(dial("101", "", "auto"), None, "dialer").await,
        422,
        "invalid_number",
        "empty",
    );
    expect(
        rig.post_dial(dial("1 0/1", "1", "auto"), None, "dialer")
            .await,
        422,
        "invalid_from",
        "extension",
    );
    expect(
        rig.post_dial(dial("101", "1", "fax"), None, "dialer").await,
        422,
        "invalid_body",
        "unknown variant `fax`",
    );
    expect(
        rig.post_dial(json!({"to": "1"}), None, "dialer").await,
        422,
        "invalid_body",
        "missing field `from`",
    );
    expect(
        rig.post_dial(dial("101", "1", "phone"), Some("has space"), "dialer")
            .await,
        422,
        "invalid_idempotency_key",
        "Idempotency-Key",
    );
    // 503: the phone cannot be reached and there is no fallback with via=phone.
    let (status, body) = rig
        .post_dial(dial("103", "1", "phone"), None, "dialer")
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unreachable");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("cannot be reached"));
    assert_eq!(body["request"]["state"], "failed");
    let failed_id = body["request"]["request_id"].as_str().unwrap().to_owned();
    let (status, stored) = rig.get(&format!("/api/v1/dial/{failed_id}")).await;
    assert_eq!((status, &stored["reason"]), (200, &json!("unreachable")));
    // 404 for an unknown request id.
    expect(
        rig.get("/api/v1/dial/dr_nope").await,
        404,
        "unknown_request",
        "dr_nope",
    );

    // 429, per phone then per token (rate_limit_per_phone = 2, per token = 3, one of them
    // used by the 503 above). A refused request does not use up the token's allowance.
    assert_eq!(
        rig.post_dial(dial("101", "1", "phone"), None, "dialer")
            .await
            .0,
        202
    );
    let (status, body) = rig
        .post_dial(dial("101", "2", "phone"), None, "dialer")
        .await;
    assert_eq!(status, 202, "{body}");
    let resp = reqwest::Client::new()
        .post(rig.url("/api/v1/dial"))
        .bearer_auth("dialer2")
        .json(&dial("101", "3", "phone"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("phone"),
        "{body}"
    );
    assert!(body["retry_after_s"].as_u64().unwrap() >= 1);
    expect(
        rig.post_dial(dial("102", "4", "phone"), None, "dialer")
            .await,
        429,
        "rate_limited",
        "token",
    );
    // dialer2 has its own allowance.
    assert_eq!(
        rig.post_dial(dial("102", "5", "phone"), None, "dialer2")
            .await
            .0,
        202
    );

    // DND errors.
    let put = |ext: &str, body: Value| {
        reqwest::Client::new()
            .put(rig.url(&format!("/api/v1/phones/{ext}/dnd")))
            .bearer_auth("dialer")
            .json(&body)
            .send()
    };
    let resp = put("999", json!({"enabled": true})).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "unknown_extension"
    );
    let resp = put("101", json!({"enabled": "yes"})).await.unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_body");
    // The unreachable phone with [dnd] pbx_mode "none": nothing could be set.
    let resp = put("103", json!({"enabled": true})).await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "dnd_failed", "{body}");
    assert_eq!(body["outcome"]["phone"]["error"], "unreachable", "{body}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cti_dial_user_event_makes_the_phone_dial() {
    let rig = rig(&[("101", Some(PhoneVendor::Yealink))], "").await;
    let mut updates = rig.service.control.subscribe();
    let event = AmiMessage::event("UserEvent")
        .field("Privilege", "user,all")
        .field("Channel", "PJSIP/101-00000015")
        .field("Exten", "*555550100")
        .field("Uniqueid", "1795350019.21")
        .field("Linkedid", "1795350019.21")
        .field("UserEvent", "CtiDial")
        .field("From", "101")
        .field("To", "5550100")
        .build()
        .unwrap();
    rig.ami.send_event(&event);
    assert!(
        common::eventually(WAIT, || !rig.phones[0].requests().is_empty()).await,
        "the phone was not asked to dial"
    );
    let requests = rig.phones[0].requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].target,
        "/servlet?key=number=5550100&outgoing_uri=101@127.0.0.1"
    );
    // The request is visible like an API one, marked as coming from the PBX.
    let first: DialStatus = tokio::time::timeout(WAIT, updates.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.origin, DialOrigin::Pbx);
    assert_eq!(
        (first.from.as_str(), first.number.as_str()),
        ("101", "5550100")
    );
    let done = rig
        .wait_dial(&first.request_id, |b| b["state"] != "pending")
        .await;
    assert_eq!(done["via"], "phone");
    assert_eq!(done["origin"], "pbx");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_dial_keeps_its_request_and_record_link_across_a_restart() {
    let mut rig = rig(&[("101", Some(PhoneVendor::Yealink))], "").await;
    let (status, body) = rig
        .post_dial(
            json!({"from": "101", "to": "102", "via": "phone"}),
            None,
            "dialer",
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["request_id"].as_str().unwrap().to_owned();
    // The PBX also reports the phones' registrations: the phone's PBX view shows them.
    let register = load_capture_file(&common::fixture("register.ami")).unwrap();
    rig.ami.play(&register.instantiate(1), 0.0).await;
    let call = load_capture_file(&common::fixture("answered_caller_hangup.ami")).unwrap();
    rig.ami.play(&call.instantiate(2), 0.0).await;
    let record = rig.wait_record(&id).await;
    rig.wait_dial(&id, |b| {
        b["record_id"] == record["id"] && b["ended_at"].is_string()
    })
    .await;
    let (_, phone) = rig.get("/api/v1/phones/101").await;
    let pbx = &phone["state"]["pbx"];
    assert_eq!(pbx["registered"], true, "{phone:#}");
    assert!(
        pbx["contact"].as_str().unwrap().starts_with("sip:101@"),
        "{pbx}"
    );
    assert_eq!(pbx["call"], Value::Null, "the call is over: {pbx}");

    // Restart: the journal is replayed (the record is rebuilt without the phone dial's
    // link), the store puts the link back, and the request is served from the store.
    rig.service.stop().await.unwrap();
    rig.service = Service::start(&rig.settings).await.expect("restart");
    let (status, again) = rig.get(&format!("/api/v1/dial/{id}")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["state"], "answered");
    assert_eq!(again["record_id"], record["id"]);
    let (status, stored) = rig
        .get(&format!("/api/v1/calls/{}", record["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["dial_request_id"], id.as_str());
    rig.stop().await;
}
