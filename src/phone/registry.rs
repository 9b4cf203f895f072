//! [`PhoneRegistry`]: the phones ctibridge knows and what it knows about them.
//!
//! Phones come from `[[phones]]` in the config (with the address and credentials needed to
//! command them), and are *learned* from their Action URL callbacks: MAC, IP, model, firmware,
//! and their state (registration, DND, forwards, current call). A callback finds its phone by
//! MAC first, then by account (`$active_user`, `$local`), then by IP. When a configured phone
//! reports a new IP, commands follow it (same port), so a DHCP change does not break
//! click-to-call. A callback that matches no configured phone is kept as a *discovered*
//! phone (listed, not commandable), never dropped.

use crate::config::{PhoneSettings, PhoneTransport, PhoneVendor};
use crate::phone::action_url::{number_of, ActionUrlEvent, PhoneCallback};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use utoipa::ToSchema;

/// Call-forwarding flags as the phone reported them (None: never reported).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Forwards {
    pub always: Option<bool>,
    pub busy: Option<bool>,
    pub no_answer: Option<bool>,
}

/// What the phone is doing with a call, as its own callbacks tell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PhoneCall {
    Ringing {
        remote: Option<String>,
        since: DateTime<Utc>,
    },
    Dialing {
        remote: Option<String>,
        since: DateTime<Utc>,
    },
    Talking {
        remote: Option<String>,
        since: DateTime<Utc>,
    },
    Held {
        remote: Option<String>,
        since: DateTime<Utc>,
    },
}

impl PhoneCall {
    fn remote(&self) -> Option<String> {
        match self {
            PhoneCall::Ringing { remote, .. }
            | PhoneCall::Dialing { remote, .. }
            | PhoneCall::Talking { remote, .. }
            | PhoneCall::Held { remote, .. } => remote.clone(),
        }
    }
}

/// A call of the phone as the PBX sees it (its endpoint's channel).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct PbxCall {
    pub channel: String,
    pub uniqueid: String,
    /// Asterisk's `ChannelStateDesc`: `Ring`, `Ringing`, `Up`, …
    pub state: String,
    /// The other party's number (connected line, else the dialled extension).
    pub remote: Option<String>,
    pub since: DateTime<Utc>,
}

/// The phone as the PBX sees it (AMI), next to what the phone reports itself. `None` means
/// "not seen yet". Filled by `crate::control`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct PbxView {
    /// A contact is registered for the endpoint (`ContactStatus`, `PeerStatus`).
    pub registered: Option<bool>,
    /// The registered contact URI.
    pub contact: Option<String>,
    /// The endpoint's device state (`DeviceStateChange`: `NOT_INUSE`, `INUSE`, `RINGING`, …).
    pub device_state: Option<String>,
    /// DND as the PBX holds it (the configured `[dnd] pbx_mode`, `CtiDnd` user events).
    pub dnd: Option<bool>,
    /// The endpoint's newest live channel.
    pub call: Option<PbxCall>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Live state of one phone. `None` means "not reported yet".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct PhoneState {
    pub registered: Option<bool>,
    pub dnd: Option<bool>,
    pub forwards: Forwards,
    pub call: Option<PhoneCall>,
    /// The same phone as the PBX sees it.
    pub pbx: PbxView,
    pub last_seen: Option<DateTime<Utc>>,
    pub last_event: Option<String>,
    /// Set after the phone refused our credentials; commands are not sent until it is cleared
    /// (phones lock the web UI after repeated failures).
    pub auth_failed: Option<String>,
    /// Whether the last command reached the phone over HTTP.
    pub reachable: Option<bool>,
    pub last_error: Option<String>,
}

/// A snapshot of one phone: configuration, what was learned, and state.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct PhoneInfo {
    pub extension: String,
    /// True for `[[phones]]` entries; false for phones only seen through callbacks.
    pub configured: bool,
    pub vendor: Option<PhoneVendor>,
    /// Where commands go: the configured address, or the learned IP with its port.
    pub address: String,
    pub configured_address: String,
    #[serde(skip)]
    pub username: String,
    #[serde(skip)]
    pub password: String,
    pub line: u8,
    pub account: Option<String>,
    pub transport: PhoneTransport,
    pub tls: bool,
    pub tls_insecure: bool,
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub state: PhoneState,
}

/// Shared, cloneable registry.
#[derive(Clone, Default)]
pub struct PhoneRegistry {
    phones: Arc<RwLock<BTreeMap<String, PhoneInfo>>>,
    /// Bumped after every write (see [`PhoneRegistry::changes`]).
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

/// The write lock; dropping it tells [`PhoneRegistry::changes`] watchers.
struct WriteGuard<'a> {
    guard: std::sync::RwLockWriteGuard<'a, BTreeMap<String, PhoneInfo>>,
    changes: &'a tokio::sync::watch::Sender<u64>,
}

impl std::ops::Deref for WriteGuard<'_> {
    type Target = BTreeMap<String, PhoneInfo>;
    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl PhoneRegistry {
    /// The configured phones.
    pub fn from_settings(phones: &[PhoneSettings]) -> Self {
        let map = phones
            .iter()
            .map(|p| {
                let info = PhoneInfo {
                    extension: p.extension.clone(),
                    configured: true,
                    vendor: Some(p.vendor),
                    address: p.address.clone(),
                    configured_address: p.address.clone(),
                    username: p.username.clone(),
                    password: p.password.clone(),
                    line: p.line,
                    account: p.account.clone(),
                    transport: p.transport,
                    tls: p.tls,
                    tls_insecure: p.tls_insecure,
                    mac: p
                        .mac
                        .as_deref()
                        .and_then(crate::phone::action_url::normalize_mac),
                    ip: None,
                    model: None,
                    firmware: None,
                    state: PhoneState::default(),
                };
                (p.extension.clone(), info)
            })
            .collect();
        PhoneRegistry {
            phones: Arc::new(RwLock::new(map)),
            changes: Arc::default(),
        }
    }

    /// Signals every change to the registry (after the change is made): `phone.state` live
    /// events come from watching it (`crate::live::watch_phones`). A watcher compares
    /// snapshots, so a signal without a visible change is harmless.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, PhoneInfo>> {
        self.phones.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> WriteGuard<'_> {
        WriteGuard {
            guard: self.phones.write().unwrap_or_else(|p| p.into_inner()),
            changes: &self.changes,
        }
    }

    /// One phone by extension.
    pub fn get(&self, extension: &str) -> Option<PhoneInfo> {
        self.read().get(extension).cloned()
    }

    /// Every phone, ordered by extension.
    pub fn list(&self) -> Vec<PhoneInfo> {
        self.read().values().cloned().collect()
    }

    /// Marks a phone as refusing our credentials.
    pub fn mark_auth_failed(&self, extension: &str, reason: String) {
        if let Some(p) = self.write().get_mut(extension) {
            p.state.auth_failed = Some(reason);
        }
    }

    /// Lets commands go to the phone again (after its credentials were fixed).
    pub fn clear_auth_failed(&self, extension: &str) {
        if let Some(p) = self.write().get_mut(extension) {
            p.state.auth_failed = None;
        }
    }

    /// Records whether the phone answered our last HTTP request.
    pub fn set_reachable(&self, extension: &str, reachable: bool, error: Option<String>) {
        if let Some(p) = self.write().get_mut(extension) {
            p.state.reachable = Some(reachable);
            p.state.last_error = error;
        }
    }

    /// Whether a phone with this extension is known (configured or discovered).
    pub fn contains(&self, extension: &str) -> bool {
        self.read().contains_key(extension)
    }

    /// The phone a callback comes from (MAC, then account, then IP), without learning from
    /// it; `None` when it matches no known phone.
    pub fn identify(&self, peer: IpAddr, cb: &PhoneCallback) -> Option<String> {
        let ip = cb
            .ip
            .as_deref()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .unwrap_or(peer);
        find_phone(&self.read(), cb, ip)
    }

    /// Records the DND state the bridge just set on the phone (its own callback may follow).
    pub fn set_dnd(&self, extension: &str, on: bool) {
        if let Some(p) = self.write().get_mut(extension) {
            p.state.dnd = Some(on);
        }
    }

    /// Updates the PBX's view of a phone; false when the extension is unknown.
    pub fn update_pbx(
        &self,
        extension: &str,
        at: DateTime<Utc>,
        f: impl FnOnce(&mut PbxView),
    ) -> bool {
        match self.write().get_mut(extension) {
            Some(p) => {
                f(&mut p.state.pbx);
                p.state.pbx.updated_at = Some(at);
                true
            }
            None => false,
        }
    }

    /// Learns from one callback; returns the extension of the phone it was attributed to.
    pub fn apply_callback(&self, peer: IpAddr, cb: &PhoneCallback, at: DateTime<Utc>) -> String {
        let mut phones = self.write();
        let ip = cb
            .ip
            .as_deref()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .unwrap_or(peer);
        let extension = find_phone(&phones, cb, ip).unwrap_or_else(|| {
            // A phone we were not told about: keep what it says, under the best name we have.
            let ext = cb
                .active_user
                .as_deref()
                .or(cb.local.as_deref())
                .map(|u| number_of(u).to_string())
                .filter(|u| !u.is_empty())
                .or_else(|| cb.mac.as_ref().map(|m| format!("mac:{m}")))
                .unwrap_or_else(|| format!("ip:{ip}"));
            phones.entry(ext.clone()).or_insert_with(|| PhoneInfo {
                extension: ext.clone(),
                configured: false,
                vendor: None,
                address: String::new(),
                configured_address: String::new(),
                username: String::new(),
                password: String::new(),
                line: 1,
                account: None,
                transport: PhoneTransport::Http,
                tls: false,
                tls_insecure: false,
                mac: None,
                ip: None,
                model: None,
                firmware: None,
                state: PhoneState::default(),
            });
            ext
        });
        if let Some(phone) = phones.get_mut(&extension) {
            learn(phone, cb, ip, at);
        }
        extension
    }
}

/// MAC, then account, then IP.
fn find_phone(
    phones: &BTreeMap<String, PhoneInfo>,
    cb: &PhoneCallback,
    ip: IpAddr,
) -> Option<String> {
    if let Some(mac) = cb.mac.as_deref() {
        if let Some(p) = phones.values().find(|p| p.mac.as_deref() == Some(mac)) {
            return Some(p.extension.clone());
        }
    }
    let users = [cb.active_user.as_deref(), cb.local.as_deref()];
    for user in users.into_iter().flatten().map(number_of) {
        if let Some(p) = phones.values().find(|p| {
            p.configured
                && (p.extension == user || p.account.as_deref().map(number_of) == Some(user))
        }) {
            return Some(p.extension.clone());
        }
    }
    phones
        .values()
        .find(|p| {
            p.ip.as_deref() == Some(&ip.to_string())
                || address_ip(&p.configured_address) == Some(ip)
        })
        .map(|p| p.extension.clone())
}

fn address_ip(address: &str) -> Option<IpAddr> {
    address
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .ok()
        .or_else(|| address.parse::<IpAddr>().ok())
}

/// Updates identity, address and state from one callback.
/// Sets `field` to `value` when one is given and differs (no allocation otherwise).
fn learn_text(field: &mut Option<String>, value: Option<&str>) {
    if let Some(value) = value {
        if field.as_deref() != Some(value) {
            *field = Some(value.to_string());
        }
    }
}

fn learn(phone: &mut PhoneInfo, cb: &PhoneCallback, ip: IpAddr, at: DateTime<Utc>) {
    // Every callback passes here (the ingest hot path): fields are only rewritten when they
    // change, so a phone repeating itself costs no allocation.
    learn_text(&mut phone.mac, cb.mac.as_deref());
    learn_text(&mut phone.model, cb.model.as_deref());
    learn_text(&mut phone.firmware, cb.firmware.as_deref());
    if phone
        .ip
        .as_deref()
        .and_then(|known| known.parse::<IpAddr>().ok())
        != Some(ip)
    {
        phone.ip = Some(ip.to_string());
    }
    // Follow an IP change: same port, new address.
    if phone.configured && address_ip(&phone.configured_address) != Some(ip) {
        if let Ok(configured) = phone.configured_address.parse::<SocketAddr>() {
            let moved = SocketAddr::new(ip, configured.port());
            if phone.address.parse::<SocketAddr>().ok() != Some(moved) {
                phone.address = moved.to_string();
            }
        }
    } else if phone.address != phone.configured_address {
        phone.address = phone.configured_address.clone();
    }
    let s = &mut phone.state;
    s.last_seen = Some(at);
    learn_text(&mut s.last_event, Some(cb.event.as_str()));
    let remote = cb
        .remote
        .clone()
        .or_else(|| cb.called_number.clone())
        .or_else(|| s.call.as_ref().and_then(PhoneCall::remote));
    use ActionUrlEvent as E;
    match &cb.event {
        E::Registered | E::SetupCompleted => s.registered = Some(true),
        E::Unregistered | E::RegisterFailed => s.registered = Some(false),
        E::DndOn => s.dnd = Some(true),
        E::DndOff => s.dnd = Some(false),
        E::AlwaysForwardOn => s.forwards.always = Some(true),
        E::AlwaysForwardOff => s.forwards.always = Some(false),
        E::BusyForwardOn => s.forwards.busy = Some(true),
        E::BusyForwardOff => s.forwards.busy = Some(false),
        E::NoAnswerForwardOn => s.forwards.no_answer = Some(true),
        E::NoAnswerForwardOff => s.forwards.no_answer = Some(false),
        E::IncomingCall => s.call = Some(PhoneCall::Ringing { remote, since: at }),
        E::OutgoingCall => s.call = Some(PhoneCall::Dialing { remote, since: at }),
        E::CallEstablished | E::Unhold | E::Unheld => {
            s.call = Some(PhoneCall::Talking { remote, since: at })
        }
        E::Hold | E::Held => s.call = Some(PhoneCall::Held { remote, since: at }),
        E::CallTerminated
        | E::MissedCall
        | E::CallRemoteCanceled
        | E::CancelCallout
        | E::RemoteBusy
        | E::RejectIncomingCall => s.call = None,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::action_url::parse_callback;

    fn settings() -> Vec<PhoneSettings> {
        vec![
            PhoneSettings {
                extension: "101".into(),
                address: "127.0.0.1:18101".into(),
                mac: Some("00:15:65:AA:BB:01".into()),
                ..PhoneSettings::default()
            },
            PhoneSettings {
                extension: "102".into(),
                address: "127.0.0.2:18102".into(),
                account: Some("102".into()),
                ..PhoneSettings::default()
            },
        ]
    }

    #[test]
    fn callback_by_mac_follows_an_ip_change_and_updates_state() {
        let reg = PhoneRegistry::from_settings(&settings());
        let cb = parse_callback("dnd_on", b"mac=001565aabb01&ip=127.0.0.9&model=SIP-T46S");
        let ext = reg.apply_callback("127.0.0.9".parse().unwrap(), &cb, Utc::now());
        assert_eq!(ext, "101");
        let p = reg.get("101").unwrap();
        assert_eq!(p.address, "127.0.0.9:18101");
        assert_eq!(p.state.dnd, Some(true));
        assert_eq!(p.model.as_deref(), Some("SIP-T46S"));
    }

    #[test]
    fn callback_by_account_then_call_states() {
        let reg = PhoneRegistry::from_settings(&settings());
        let at = Utc::now();
        let cb = parse_callback("incoming_call", b"active_user=102&remote=%2B15550100");
        assert_eq!(
            reg.apply_callback("127.0.0.2".parse().unwrap(), &cb, at),
            "102"
        );
        assert!(matches!(
            reg.get("102").unwrap().state.call,
            Some(PhoneCall::Ringing { remote: Some(ref r), .. }) if r == "+15550100"
        ));
        let cb = parse_callback("call_established", b"active_user=102&remote=$remote");
        reg.apply_callback("127.0.0.2".parse().unwrap(), &cb, at);
        assert!(matches!(
            reg.get("102").unwrap().state.call,
            Some(PhoneCall::Talking { remote: Some(ref r), .. }) if r == "+15550100"
        ));
        let cb = parse_callback("call_terminated", b"active_user=102");
        reg.apply_callback("127.0.0.2".parse().unwrap(), &cb, at);
        assert_eq!(reg.get("102").unwrap().state.call, None);
        // The address did not change: same IP as configured.
        assert_eq!(reg.get("102").unwrap().address, "127.0.0.2:18102");
    }

    #[test]
    fn unknown_phone_is_kept_as_discovered() {
        let reg = PhoneRegistry::from_settings(&settings());
        let cb = parse_callback("registered", b"mac=00-15-65-00-00-99&active_user=555");
        let ext = reg.apply_callback("127.0.0.50".parse().unwrap(), &cb, Utc::now());
        assert_eq!(ext, "555");
        let p = reg.get("555").unwrap();
        assert!(!p.configured);
        assert_eq!(p.mac.as_deref(), Some("001565000099"));
        assert_eq!(p.state.registered, Some(true));
        assert_eq!(reg.list().len(), 3);
    }

    #[test]
    fn auth_failed_is_recorded_and_cleared() {
        let reg = PhoneRegistry::from_settings(&settings());
        reg.mark_auth_failed("101", "HTTP 401".into());
        assert_eq!(
            reg.get("101").unwrap().state.auth_failed.as_deref(),
            Some("HTTP 401")
        );
        reg.clear_auth_failed("101");
        assert_eq!(reg.get("101").unwrap().state.auth_failed, None);
    }
}
