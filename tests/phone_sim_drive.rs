//! ctibridge's Active URI client drives the independent phone simulator over real HTTP, for
//! every vendor profile the simulator implements; the simulator's callbacks come back to the
//! bridge's Action URL receiver and update the phone registry. Also: a phone that refuses our
//! credentials is marked `auth_failed`, visible in the API, and gets no second request.

use ctibridge::config::{self, PhoneVendor};
use ctibridge::phone::client::{CommandError, PhoneCommand};
use ctibridge::phone::registry::PhoneCall;
use ctibridge::service::Service;
use ctibridge::sim::phone::{PhoneSim, PhoneSimConfig, SimAuth, SimCallState};
use std::time::Duration;

mod common;

struct Rig {
    service: Service,
    phone: PhoneSim,
    _dir: tempfile::TempDir,
}

/// A service with one phone `ext` of `vendor`, and that phone simulated.
async fn rig(vendor: PhoneVendor, ext: &str, phone_password: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    // The simulator must exist first: its port goes into the bridge's config.
    let mut cfg = PhoneSimConfig::for_vendor(vendor, ext);
    cfg.auth = SimAuth::Basic;
    cfg.password = phone_password.to_string();
    cfg.answer_after = Some(Duration::from_millis(50));
    let phone = PhoneSim::start("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let vendor_name = serde_json::to_value(vendor).unwrap();
    let text = format!(
        r#"
pbx = []
[http]
listen = "127.0.0.1:0"
[storage]
url = "sqlite::memory:"
[journal]
dir = {journal:?}
[[phones]]
extension = "{ext}"
address = "{addr}"
vendor = {vendor_name}
username = "admin"
password = "admin"
[[api.tokens]]
token = "reader"
scopes = ["read"]
"#,
        journal = dir.path().join("journal").display().to_string(),
        addr = phone.local_addr(),
    );
    let settings = config::load_from_str(&text, &[]).expect("config");
    let service = Service::start(&settings).await.expect("service");
    // Now that the bridge listens, tell the phone where to call back.
    phone.set_callback_base(Some(format!("http://{}/action-url", service.http_addr)));
    Rig {
        service,
        phone,
        _dir: dir,
    }
}

/// Dials, DND on/off and a key sequence; returns the request targets the phone recorded.
async fn drive(vendor: PhoneVendor, ext: &str) -> (Rig, Vec<String>) {
    let rig = rig(vendor, ext, "admin").await;
    let client = &rig.service.active_uri;
    let dial = PhoneCommand::Dial {
        number: "+1 (555) 010-0#1".into(),
        line: None,
    };
    client.execute(ext, dial).await.expect("dial");
    let state = rig.phone.state();
    match state.call {
        SimCallState::Dialing { ref number, .. } | SimCallState::Talking { remote: ref number } => {
            assert_eq!(
                number, "+15550100#1",
                "{vendor:?}: the phone dialled {state:?}"
            )
        }
        other => panic!("{vendor:?}: phone not dialling: {other:?}"),
    }
    client
        .execute(ext, PhoneCommand::DndOn)
        .await
        .expect("dnd on");
    assert!(rig.phone.state().dnd, "{vendor:?}: DND on");
    client
        .execute(ext, PhoneCommand::DndOff)
        .await
        .expect("dnd off");
    assert!(!rig.phone.state().dnd, "{vendor:?}: DND off");
    let keys = PhoneCommand::keys(&["VOLUME_UP", "VOLUME_DOWN"]).unwrap();
    client.execute(ext, keys).await.expect("keys");
    let pressed = rig.phone.state().keys;
    assert!(
        pressed.ends_with(&["VOLUME_UP".to_string(), "VOLUME_DOWN".to_string()]),
        "{vendor:?}: keys {pressed:?}"
    );
    let requests = rig.phone.requests();
    assert!(
        requests.iter().all(|r| r.authorized && r.executed),
        "{requests:?}"
    );
    let targets = requests.into_iter().map(|r| r.target).collect();
    (rig, targets)
}

#[tokio::test]
async fn yealink_gets_exactly_the_seed_requests_and_calls_back() {
    let (rig, targets) = drive(PhoneVendor::Yealink, "101").await;
    assert_eq!(
        targets,
        [
            "/servlet?key=number=%2B15550100$1&outgoing_uri=101@127.0.0.1",
            "/servlet?key=DNDOn",
            "/servlet?key=DNDOff",
            "/servlet?key=VOLUME_UP;VOLUME_DOWN",
        ]
    );
    // The phone's callbacks (outgoing_call, call_established, dnd_on, dnd_off) reached the
    // bridge: the registry knows the call and the DND state from the phone itself.
    assert!(
        common::eventually(Duration::from_secs(2), || matches!(
            rig.service.phones.get("101").unwrap().state.call,
            Some(PhoneCall::Talking { .. })
        ))
        .await,
        "registry: {:?}",
        rig.service.phones.get("101").unwrap().state
    );
    assert!(
        common::eventually(Duration::from_secs(2), || rig
            .service
            .phones
            .get("101")
            .unwrap()
            .state
            .dnd
            == Some(false))
        .await
    );
    let learned = rig.service.phones.get("101").unwrap();
    assert_eq!(
        learned.mac.as_deref(),
        Some(rig.phone.config().mac.as_str())
    );
    assert_eq!(
        learned.model.as_deref(),
        Some(rig.phone.config().model.as_str())
    );
    rig.service.stop().await.unwrap();
}

#[tokio::test]
async fn yealink_selects_another_line_with_at_n() {
    let rig = rig(PhoneVendor::Yealink, "101", "admin").await;
    let dial = PhoneCommand::Dial {
        number: "2323".into(),
        line: Some(2),
    };
    rig.service.active_uri.execute("101", dial).await.unwrap();
    assert_eq!(rig.phone.state().selected_line, 2);
    assert_eq!(
        rig.phone.requests()[0].target,
        "/servlet?key=F_HANDFREE;2323@2;OK"
    );
    rig.service.stop().await.unwrap();
}

#[tokio::test]
async fn yealink_legacy_uses_config_man_app() {
    let (rig, targets) = drive(PhoneVendor::YealinkLegacy, "102").await;
    assert_eq!(
        targets,
        [
            "/cgi-bin/ConfigManApp.com?number=%2B15550100$1&outgoing_uri=102@127.0.0.1",
            "/cgi-bin/ConfigManApp.com?key=DNDOn",
            "/cgi-bin/ConfigManApp.com?key=DNDOff",
            "/cgi-bin/ConfigManApp.com?key=VOLUME_UP;VOLUME_DOWN",
        ]
    );
    rig.service.stop().await.unwrap();
}

#[tokio::test]
async fn fanvil_uses_the_chinese_seed_forms() {
    let (rig, targets) = drive(PhoneVendor::Fanvil, "103").await;
    assert_eq!(
        targets,
        [
            "/cgi-bin/ConfigManApp.com?number=%2B15550100%231&outgoing_uri=103@127.0.0.1",
            "/cgi-bin/ConfigManApp.com?key=DNDOn",
            "/cgi-bin/ConfigManApp.com?key=DNDOff",
            "/cgi-bin/ConfigManApp.com?key=VOLUME_UP;VOLUME_DOWN",
        ]
    );
    rig.service.stop().await.unwrap();
}

#[tokio::test]
async fn snom_uses_command_htm() {
    let (rig, targets) = drive(PhoneVendor::Snom, "104").await;
    assert_eq!(
        targets,
        [
            "/command.htm?number=%2B15550100%231&outgoing_uri=104@127.0.0.1",
            "/command.htm?key=DND",
            "/command.htm?key=DND",
            // phones.md §2: `command.htm?key=KEY[,ms[,pauseMs]][;KEY…]`.
            "/command.htm?key=VOLUME_UP;VOLUME_DOWN",
        ]
    );
    rig.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_password_marks_the_phone_and_stops_further_requests() {
    let rig = rig(PhoneVendor::Yealink, "101", "not-admin").await;
    let err = rig
        .service
        .active_uri
        .execute("101", PhoneCommand::DndOn)
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::AuthFailed { .. }), "{err:?}");
    let again = rig
        .service
        .active_uri
        .execute("101", PhoneCommand::DndOn)
        .await
        .unwrap_err();
    assert!(
        matches!(again, CommandError::PhoneLocked { .. }),
        "{again:?}"
    );
    assert_eq!(rig.phone.requests().len(), 1, "no retry storm");

    let phone: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/phones/101",
            rig.service.http_addr
        ))
        .bearer_auth("reader")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        phone["state"]["auth_failed"].is_string(),
        "auth_failed not visible: {phone}"
    );
    rig.service.stop().await.unwrap();
}
