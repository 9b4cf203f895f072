//! The PBX's view of each known phone, from AMI: registration (`ContactStatus`,
//! `PeerStatus`), device state (`DeviceStateChange`) and the current call (the endpoint's
//! channels). Shown next to the phone's own view in `GET /api/v1/phones`.

use super::dial::endpoint_of;
use crate::ami::AmiMessage;
use crate::phone::registry::{PbxCall, PhoneRegistry};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Follows the phones' endpoints on the PBX.
#[derive(Debug, Default)]
pub(crate) struct PbxPhones {
    /// Endpoint (SIP account) → extension, for configured phones whose account differs.
    accounts: HashMap<String, String>,
    /// Live channels of known phones: `Uniqueid` → (extension, the call).
    live: HashMap<String, (String, PbxCall)>,
}

impl PbxPhones {
    pub(crate) fn new(registry: &PhoneRegistry) -> PbxPhones {
        let accounts = registry
            .list()
            .into_iter()
            .filter_map(|p| {
                let account = p.account?;
                let user = account.split('@').next().unwrap_or("").to_owned();
                (!user.is_empty() && user != p.extension).then_some((user, p.extension))
            })
            .collect();
        PbxPhones {
            accounts,
            live: HashMap::new(),
        }
    }

    /// The extension of a known phone with this endpoint.
    fn extension(&self, registry: &PhoneRegistry, endpoint: &str) -> Option<String> {
        if let Some(ext) = self.accounts.get(endpoint) {
            return Some(ext.clone());
        }
        registry.contains(endpoint).then(|| endpoint.to_owned())
    }

    pub(crate) fn on_ami(
        &mut self,
        registry: &PhoneRegistry,
        at: DateTime<Utc>,
        event: &str,
        msg: &AmiMessage,
    ) {
        match event {
            "Newchannel" => {
                let (Some(channel), Some(uid)) = (msg.get("Channel"), msg.get("Uniqueid")) else {
                    return;
                };
                let Some(ext) = endpoint_of(channel).and_then(|e| self.extension(registry, e))
                else {
                    return;
                };
                let call = PbxCall {
                    channel: channel.to_owned(),
                    uniqueid: uid.to_owned(),
                    state: msg.get("ChannelStateDesc").unwrap_or("").to_owned(),
                    remote: remote_of(msg),
                    since: at,
                };
                registry.update_pbx(&ext, at, |v| v.call = Some(call.clone()));
                self.live.insert(uid.to_owned(), (ext, call));
            }
            "Newstate" | "NewConnectedLine" => {
                let Some(uid) = msg.get("Uniqueid") else {
                    return;
                };
                let Some((ext, call)) = self.live.get_mut(uid) else {
                    return;
                };
                if let Some(state) = msg.get("ChannelStateDesc") {
                    call.state = state.to_owned();
                }
                if let Some(remote) = remote_of(msg) {
                    call.remote = Some(remote);
                }
                let call = call.clone();
                registry.update_pbx(ext, at, |v| {
                    if v.call.as_ref().is_some_and(|c| c.uniqueid == call.uniqueid) {
                        v.call = Some(call);
                    }
                });
            }
            "Hangup" => {
                let Some(uid) = msg.get("Uniqueid") else {
                    return;
                };
                let Some((ext, _)) = self.live.remove(uid) else {
                    return;
                };
                let newest = self
                    .live
                    .values()
                    .filter(|(e, _)| *e == ext)
                    .max_by_key(|(_, c)| c.since)
                    .map(|(_, c)| c.clone());
                registry.update_pbx(&ext, at, |v| {
                    if v.call.as_ref().is_some_and(|c| c.uniqueid == uid) {
                        v.call = newest;
                    }
                });
            }
            "ContactStatus" => {
                let endpoint = msg.get("EndpointName").or(msg.get("AOR")).unwrap_or("");
                let Some(ext) = self.extension(registry, endpoint) else {
                    return;
                };
                let status = msg.get("ContactStatus").unwrap_or("");
                let removed = status.eq_ignore_ascii_case("Removed");
                let uri = msg.get("URI").map(str::to_owned);
                registry.update_pbx(&ext, at, |v| {
                    v.registered = Some(!removed);
                    v.contact = if removed { None } else { uri };
                });
            }
            "PeerStatus" => {
                let Some(ext) = msg
                    .get("Peer")
                    .and_then(|p| p.split_once('/'))
                    .and_then(|(_, e)| self.extension(registry, e))
                else {
                    return;
                };
                let registered = match msg.get("PeerStatus").unwrap_or("") {
                    s if s.eq_ignore_ascii_case("Reachable")
                        || s.eq_ignore_ascii_case("Registered") =>
                    {
                        true
                    }
                    s if s.eq_ignore_ascii_case("Unreachable")
                        || s.eq_ignore_ascii_case("Unregistered") =>
                    {
                        false
                    }
                    _ => return,
                };
                registry.update_pbx(&ext, at, |v| v.registered = Some(registered));
            }
            "DeviceStateChange" => {
                let Some((tech, endpoint)) = msg.get("Device").and_then(|d| d.split_once('/'))
                else {
                    return;
                };
                if tech.eq_ignore_ascii_case("Custom") {
                    return;
                }
                let Some(ext) = self.extension(registry, endpoint) else {
                    return;
                };
                let state = msg.get("State").map(str::to_owned);
                registry.update_pbx(&ext, at, |v| v.device_state = state);
            }
            _ => {}
        }
    }

    /// Events were missed (AMI gap): the calls the PBX view shows may be over.
    pub(crate) fn on_gap(&mut self, registry: &PhoneRegistry, at: DateTime<Utc>) {
        for (_, (ext, call)) in self.live.drain() {
            registry.update_pbx(&ext, at, |v| {
                if v.call.as_ref().is_some_and(|c| c.uniqueid == call.uniqueid) {
                    v.call = None;
                }
            });
        }
    }
}

/// The other party: the connected line, else the dialled extension.
fn remote_of(msg: &AmiMessage) -> Option<String> {
    let usable = |v: &&str| !v.is_empty() && *v != "<unknown>" && *v != "s";
    msg.get("ConnectedLineNum")
        .filter(usable)
        .or_else(|| msg.get("Exten").filter(usable))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PhoneSettings;

    fn ev(name: &str, fields: &[(&str, &str)]) -> AmiMessage {
        let mut b = AmiMessage::event(name);
        for (k, v) in fields {
            b = b.field(*k, *v);
        }
        b.build().unwrap()
    }

    #[test]
    fn registration_device_state_and_calls() {
        let registry = PhoneRegistry::from_settings(&[
            PhoneSettings {
                extension: "101".into(),
                address: "127.0.0.1:1".into(),
                ..PhoneSettings::default()
            },
            PhoneSettings {
                extension: "102".into(),
                address: "127.0.0.1:2".into(),
                account: Some("acct102@pbx".into()),
                ..PhoneSettings::default()
            },
        ]);
        let mut v = PbxPhones::new(&registry);
        let at = Utc::now();
        let feed = |v: &mut PbxPhones, m: AmiMessage| {
            let name = m.event_name().unwrap().to_owned();
            v.on_ami(&registry, at, &name, &m);
        };
        feed(
            &mut v,
            ev(
                "ContactStatus",
                &[
                    ("URI", "sip:acct102@10.0.0.2:5060"),
                    ("ContactStatus", "Reachable"),
                    ("EndpointName", "acct102"),
                ],
            ),
        );
        feed(
            &mut v,
            ev(
                "PeerStatus",
                &[("Peer", "PJSIP/101"), ("PeerStatus", "Unreachable")],
            ),
        );
        feed(
            &mut v,
            ev(
                "DeviceStateChange",
                &[("Device", "PJSIP/101"), ("State", "INUSE")],
            ),
        );
        feed(
            &mut v,
            ev(
                "Newchannel",
                &[
                    ("Channel", "PJSIP/101-00000001"),
                    ("ChannelStateDesc", "Ring"),
                    ("ConnectedLineNum", "<unknown>"),
                    ("Exten", "+15550100"),
                    ("Uniqueid", "1.1"),
                ],
            ),
        );
        feed(
            &mut v,
            ev(
                "Newstate",
                &[("Uniqueid", "1.1"), ("ChannelStateDesc", "Up")],
            ),
        );
        let p101 = registry.get("101").unwrap().state.pbx;
        let p102 = registry.get("102").unwrap().state.pbx;
        assert_eq!(p102.registered, Some(true));
        assert_eq!(p102.contact.as_deref(), Some("sip:acct102@10.0.0.2:5060"));
        assert_eq!(p101.registered, Some(false));
        assert_eq!(p101.device_state.as_deref(), Some("INUSE"));
        let call = p101.call.unwrap();
        assert_eq!(
            (call.state.as_str(), call.remote.as_deref()),
            ("Up", Some("+15550100"))
        );
        feed(&mut v, ev("Hangup", &[("Uniqueid", "1.1")]));
        assert_eq!(registry.get("101").unwrap().state.pbx.call, None);
        // Unknown endpoints are ignored.
        feed(
            &mut v,
            ev(
                "Newchannel",
                &[("Channel", "PJSIP/trunk-00000002"), ("Uniqueid", "1.2")],
            ),
        );
        assert!(v.live.is_empty());
    }
}
