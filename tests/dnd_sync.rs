//! DND over real sockets, in every direction: the API sets the phone (Active URI to the phone
//! simulator) and the PBX (AMI actions to the in-test AMI server, one exact action per mode);
//! a phone's own `dnd_on` goes to the PBX; a PBX change (`UserEvent CtiDnd`, a
//! `DeviceStateChange` of `Custom:DND<ext>`) goes to the phone. Each side reports the change
//! back (the phone fires its callback, the simulated Asterisk emits the device state as a real
//! one does after `Setvar DEVICE_STATE`), and the loop guard must swallow those echoes: after
//! the guard window has passed, each side has received exactly one request per change.

use ctibridge::ami::AmiMessage;
use ctibridge::config::{self, PhoneVendor};
use ctibridge::service::Service;
use ctibridge::sim::ami_server::{response_to, AmiServer};
use ctibridge::sim::phone::{PhoneSim, PhoneSimConfig};
use serde_json::{json, Value};
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(10);
/// `[dnd] loop_guard` in these tests; counts are checked after it has passed.
const GUARD: Duration = Duration::from_secs(1);

struct Rig {
    service: Service,
    ami: AmiServer,
    phone: PhoneSim,
    _dir: tempfile::TempDir,
}

/// Phone 101 (Yealink), and an Asterisk that accepts DBPut/DBDel/Setvar and, like a real one,
/// emits `DeviceStateChange` after a `Setvar DEVICE_STATE(...)`.
async fn start(mode: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let ami = common::ami_server("s3cret", true).await;
    ami.set_action_handler(Box::new(|action| {
        let name = action.get("Action")?.to_ascii_lowercase();
        if !matches!(name.as_str(), "dbput" | "dbdel" | "setvar") {
            return None;
        }
        let mut out = vec![response_to(action, "Success")
            .field("Message", "Done")
            .build()
            .unwrap()];
        let device = action
            .get("Variable")
            .and_then(|v| v.strip_prefix("DEVICE_STATE("))
            .and_then(|v| v.strip_suffix(')'));
        if let (Some(device), Some(state)) = (device, action.get("Value")) {
            out.push(
                AmiMessage::event("DeviceStateChange")
                    .field("Privilege", "call,all")
                    .field("Device", device)
                    .field("State", state)
                    .build()
                    .unwrap(),
            );
        }
        Some(out)
    }));
    let phone = PhoneSim::start(
        "127.0.0.1:0".parse().unwrap(),
        PhoneSimConfig::for_vendor(PhoneVendor::Yealink, "101"),
    )
    .await
    .unwrap();
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"
[storage]
url = "sqlite::memory:"
[journal]
dir = {journal:?}
fsync_interval = "5ms"
[dnd]
pbx_mode = "{mode}"
loop_guard = "{guard}ms"
[[pbx]]
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "s3cret"
reconnect_initial = "50ms"
[[phones]]
extension = "101"
address = "{addr}"
vendor = "yealink"
username = "admin"
password = "admin"
mac = "{mac}"
[[api.tokens]]
token = "dialer"
scopes = ["dial", "read"]
"#,
        journal = dir.path().join("journal").display().to_string(),
        port = ami.local_addr().port(),
        guard = GUARD.as_millis(),
        addr = phone.local_addr(),
        mac = phone.config().mac,
    );
    let settings = config::load_from_str(&text, &[]).expect("test config");
    let service = Service::start(&settings).await.expect("service starts");
    assert!(service.ami[0].wait_up(WAIT).await, "AMI link up");
    phone.set_callback_base(Some(format!("http://{}/action-url", service.http_addr)));
    Rig {
        service,
        ami,
        phone,
        _dir: dir,
    }
}

impl Rig {
    /// The DND actions Asterisk received, without their ActionIDs.
    fn pbx_actions(&self) -> Vec<Vec<(String, String)>> {
        self.ami
            .received_actions()
            .into_iter()
            .filter(|a| {
                let n = a.get("Action").unwrap_or("").to_ascii_lowercase();
                matches!(n.as_str(), "dbput" | "dbdel" | "setvar")
            })
            .map(|a| {
                a.to_pairs()
                    .into_iter()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("ActionID"))
                    .collect()
            })
            .collect()
    }

    fn phone_targets(&self) -> Vec<String> {
        self.phone
            .requests()
            .into_iter()
            .map(|r| r.target)
            .collect()
    }

    async fn put_dnd(&self, enabled: bool) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .put(format!(
                "http://{}/api/v1/phones/101/dnd",
                self.service.http_addr
            ))
            .bearer_auth("dialer")
            .json(&json!({ "enabled": enabled }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn phone_state(&self) -> Value {
        reqwest::Client::new()
            .get(format!(
                "http://{}/api/v1/phones/101",
                self.service.http_addr
            ))
            .bearer_auth("dialer")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["state"]
            .clone()
    }

    /// Waits until the phone has delivered `n` callbacks to the bridge, then for the loop
    /// guard window to pass, so that any echo the bridge wrongly pushed has happened.
    async fn settle(&self, n: usize) {
        let log = self.phone.wait_for_callbacks(n, WAIT).await;
        assert!(log.len() >= n, "phone callbacks: {log:?}");
        assert!(
            log.iter().all(|c| c.status == Some(200)),
            "callbacks delivered: {log:?}"
        );
        tokio::time::sleep(GUARD + Duration::from_millis(500)).await;
    }

    async fn stop(self) {
        self.phone.shutdown();
        self.service.stop().await.unwrap();
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_sets_phone_and_astdb_once_each_way() {
    let rig = start("astdb").await;
    let (status, body) = rig.put_dnd(true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phone"]["applied"], true, "{body}");
    assert_eq!(body["pbx"]["applied"], true, "{body}");
    assert_eq!(body["pbx_mode"], "astdb");
    // The phone reports dnd_on back (its echo), which must not go to the PBX again.
    rig.settle(1).await;
    assert_eq!(rig.phone_targets(), ["/servlet?key=DNDOn"]);
    assert_eq!(
        rig.pbx_actions(),
        [pairs(&[
            ("Action", "DBPut"),
            ("Family", "DND"),
            ("Key", "101"),
            ("Val", "YES")
        ])]
    );
    let state = rig.phone_state().await;
    assert_eq!(
        (&state["dnd"], &state["pbx"]["dnd"]),
        (&json!(true), &json!(true))
    );

    let (status, body) = rig.put_dnd(false).await;
    assert_eq!(status, 200, "{body}");
    rig.settle(2).await;
    assert_eq!(
        rig.phone_targets(),
        ["/servlet?key=DNDOn", "/servlet?key=DNDOff"]
    );
    let actions = rig.pbx_actions();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(
        actions[1],
        pairs(&[("Action", "DBDel"), ("Family", "DND"), ("Key", "101")])
    );
    let state = rig.phone_state().await;
    assert_eq!(
        (&state["dnd"], &state["pbx"]["dnd"]),
        (&json!(false), &json!(false))
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_sets_phone_and_devstate_and_both_echoes_are_ignored() {
    let rig = start("devstate").await;
    let (status, body) = rig.put_dnd(true).await;
    assert_eq!(status, 200, "{body}");
    // Echoes: the phone's dnd_on callback and Asterisk's DeviceStateChange Custom:DND101 BUSY.
    rig.settle(1).await;
    assert_eq!(rig.phone_targets(), ["/servlet?key=DNDOn"]);
    assert_eq!(
        rig.pbx_actions(),
        [pairs(&[
            ("Action", "Setvar"),
            ("Variable", "DEVICE_STATE(Custom:DND101)"),
            ("Value", "BUSY")
        ])]
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_in_mode_none_sets_only_the_phone() {
    let rig = start("none").await;
    let (status, body) = rig.put_dnd(true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pbx"]["applied"], false);
    assert!(
        body["pbx"]["skipped"].as_str().unwrap().contains("none"),
        "{body}"
    );
    rig.settle(1).await;
    assert_eq!(rig.phone_targets(), ["/servlet?key=DNDOn"]);
    assert!(rig.pbx_actions().is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_dnd_goes_to_the_pbx_once() {
    for (mode, on_action) in [
        (
            "astdb",
            pairs(&[
                ("Action", "DBPut"),
                ("Family", "DND"),
                ("Key", "101"),
                ("Val", "YES"),
            ]),
        ),
        (
            "devstate",
            pairs(&[
                ("Action", "Setvar"),
                ("Variable", "DEVICE_STATE(Custom:DND101)"),
                ("Value", "BUSY"),
            ]),
        ),
    ] {
        let rig = start(mode).await;
        // The user presses DND on the phone.
        rig.phone.set_dnd_local(true).await;
        assert!(
            common::eventually(WAIT, || !rig.pbx_actions().is_empty()).await,
            "{mode}: nothing reached the PBX"
        );
        rig.settle(1).await;
        assert_eq!(rig.pbx_actions(), [on_action], "{mode}");
        // In devstate mode Asterisk echoed the device state; it did not go back to the phone.
        assert!(
            rig.phone_targets().is_empty(),
            "{mode}: {:?}",
            rig.phone_targets()
        );
        let state = rig.phone_state().await;
        assert_eq!(state["pbx"]["dnd"], true, "{mode}: {state}");
        rig.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_dnd_goes_to_the_phone_once() {
    // astdb: the dialplan's UserEvent CtiDnd (Phone, State), as deploy/asterisk sends it.
    let rig = start("astdb").await;
    rig.ami.send_event(
        &AmiMessage::event("UserEvent")
            .field("Privilege", "user,all")
            .field("Channel", "PJSIP/101-00000013")
            .field("Exten", "*78")
            .field("Uniqueid", "1795350015.19")
            .field("Linkedid", "1795350015.19")
            .field("UserEvent", "CtiDnd")
            .field("Phone", "101")
            .field("State", "on")
            .build()
            .unwrap(),
    );
    assert!(
        common::eventually(WAIT, || !rig.phone_targets().is_empty()).await,
        "the phone was not told"
    );
    // The phone's dnd_on is the echo: no DBPut from the bridge (the dialplan set astdb).
    rig.settle(1).await;
    assert_eq!(rig.phone_targets(), ["/servlet?key=DNDOn"]);
    assert!(rig.pbx_actions().is_empty(), "{:?}", rig.pbx_actions());
    let state = rig.phone_state().await;
    assert_eq!(
        (&state["dnd"], &state["pbx"]["dnd"]),
        (&json!(true), &json!(true))
    );
    rig.stop().await;

    // devstate: someone sets Custom:DND101 (a BLF key, FreePBX's *76): the phone follows, and
    // a repeat of the same state is not sent again.
    let rig = start("devstate").await;
    let dsc = AmiMessage::event("DeviceStateChange")
        .field("Privilege", "call,all")
        .field("Device", "Custom:DND101")
        .field("State", "BUSY")
        .build()
        .unwrap();
    rig.ami.send_event(&dsc);
    rig.ami.send_event(&dsc);
    assert!(common::eventually(WAIT, || !rig.phone_targets().is_empty()).await);
    rig.settle(1).await;
    assert_eq!(rig.phone_targets(), ["/servlet?key=DNDOn"]);
    assert!(rig.pbx_actions().is_empty(), "{:?}", rig.pbx_actions());
    rig.stop().await;
}
