//! Action URL settings for phone provisioning: what an administrator pastes into the phones'
//! configuration so they call ctibridge back (`ctibridge phones provision`).
//!
//! Every URL is `BASE/action-url/[SECRET/]EVENT?QUERY`. The query names are ctibridge's
//! canonical variable names, filled with each vendor's own `$variables` (phones.md §1.5, §2,
//! §4): Yealink, Fanvil and Htek call the call handle `$call_id`; Snom and Grandstream send
//! the SIP Call-ID as `$call-id` and the phone address as `$phone_ip`. A Yealink Action URL
//! may be at most 511 characters, so the query keeps only what correlation needs.

use crate::config::PhoneVendor;
use std::fmt::Write;

const YEALINK_QUERY: &str = "mac=$mac&ip=$ip&model=$model&firmware=$firmware&active_user=$active_user&active_host=$active_host&local=$local&remote=$remote&display_local=$display_local&display_remote=$display_remote&call_id=$call_id";
const SNOM_QUERY: &str = "mac=$mac&ip=$phone_ip&active_user=$active_user&active_host=$active_host&local=$local&remote=$remote&display_local=$display_local&display_remote=$display_remote&call-id=$call-id";
const GRANDSTREAM_QUERY: &str = "mac=$mac&ip=$phone_ip&model=$product&firmware=$program_version&active_user=$active_user&active_host=$active_host&local=$local&remote=$remote&display_local=$display_local&display_remote=$display_remote&call-id=$call-id";

/// Yealink `action_url.<key>` names (phones.md §1.4); also used for Fanvil and Htek.
const YEALINK_EVENTS: &[&str] = &[
    "setup_completed",
    "registered",
    "unregistered",
    "register_failed",
    "off_hook",
    "on_hook",
    "incoming_call",
    "outgoing_call",
    "call_established",
    "call_terminated",
    "dnd_on",
    "dnd_off",
    "always_fwd_on",
    "always_fwd_off",
    "busy_fwd_on",
    "busy_fwd_off",
    "no_answer_fwd_on",
    "no_answer_fwd_off",
    "transfer_call",
    "blind_transfer_call",
    "attended_transfer_call",
    "transfer_finished",
    "transfer_failed",
    "hold",
    "unhold",
    "held",
    "unheld",
    "missed_call",
    "ip_change",
    "reject_incoming_call",
    "answer_new_incoming_call",
    "forward_incoming_call",
    "cancel_callout",
    "remote_busy",
    "call_remote_canceled",
];

/// Snom setting name → event name in our URL (phones.md §2).
const SNOM_EVENTS: &[(&str, &str)] = &[
    ("action_setup_url", "setup"),
    ("action_reg_failed", "reg_failed"),
    ("action_log_on_url", "log_on"),
    ("action_log_off_url", "log_off"),
    ("action_incoming_url", "incoming"),
    ("action_outgoing_url", "outgoing"),
    ("action_connected_url", "connected"),
    ("action_disconnected_url", "disconnected"),
    ("action_missed_url", "missed"),
    ("action_offhook_url", "offhook"),
    ("action_onhook_url", "onhook"),
    ("action_dnd_on_url", "dnd_on"),
    ("action_dnd_off_url", "dnd_off"),
    ("action_redirection_on_url", "redirection_on"),
    ("action_redirection_off_url", "redirection_off"),
    ("action_hold", "hold"),
    ("action_unhold", "unhold"),
    ("action_transfer", "transfer"),
    ("action_blind_transfer", "blind_transfer"),
    ("action_attended_transfer", "attended_transfer"),
];

/// The callback URL for one event.
pub fn callback_url(base: &str, secret: Option<&str>, event: &str, query: &str) -> String {
    let base = base.trim_end_matches('/');
    match secret {
        Some(s) => format!("{base}/action-url/{s}/{event}?{query}"),
        None => format!("{base}/action-url/{event}?{query}"),
    }
}

/// Provisioning text for `vendor`: a ready-to-paste config fragment where the vendor's format
/// is documented (Yealink `.cfg`, Snom XML settings), otherwise an event → URL list for the
/// phone's web interface. `bridge_ip` goes into Yealink's Active URI allow-list.
pub fn action_url_settings(
    vendor: PhoneVendor,
    base: &str,
    secret: Option<&str>,
    bridge_ip: &str,
) -> String {
    let mut out = String::new();
    match vendor {
        PhoneVendor::Yealink | PhoneVendor::YealinkLegacy => {
            let _ = writeln!(
                out,
                "## Yealink auto-provisioning (.cfg): Action URLs to ctibridge"
            );
            let _ = writeln!(
                out,
                "## and Active URI (remote control) allowed from the bridge only."
            );
            let _ = writeln!(out, "features.action_uri.enable = 1");
            let _ = writeln!(out, "features.action_uri_limit_ip = {bridge_ip}");
            let _ = writeln!(
                out,
                "## 0: no \"Allow remote control?\" prompt on the phone."
            );
            let _ = writeln!(out, "features.show_action_uri_option = 0");
            for event in YEALINK_EVENTS {
                let url = callback_url(base, secret, event, YEALINK_QUERY);
                let _ = writeln!(out, "action_url.{event} = {url}");
            }
        }
        PhoneVendor::Snom => {
            let _ = writeln!(out, "<!-- snom settings XML: Action URLs to ctibridge -->");
            for (setting, event) in SNOM_EVENTS {
                let url = callback_url(base, secret, event, SNOM_QUERY).replace('&', "&amp;");
                let _ = writeln!(out, "<{setting} perm=\"\">{url}</{setting}>");
            }
        }
        PhoneVendor::Fanvil | PhoneVendor::Htek => {
            let _ = writeln!(
                out,
                "# {vendor:?}: enter these in the phone's web interface (Action URL page);"
            );
            let _ = writeln!(
                out,
                "# also enable remote control (Fanvil <RemoteControl>1</RemoteControl>)."
            );
            for event in YEALINK_EVENTS {
                let url = callback_url(base, secret, event, YEALINK_QUERY);
                let _ = writeln!(out, "{event}: {url}");
            }
        }
        PhoneVendor::Grandstream => {
            let _ = writeln!(
                out,
                "# Grandstream: Action URL settings (web interface or P-values)."
            );
            for event in [
                "setup_completed",
                "registered",
                "unregistered",
                "incoming_call",
                "outgoing_call",
                "call_established",
                "call_terminated",
                "missed_call",
                "dnd_on",
                "dnd_off",
                "hold",
                "unhold",
                "blind_transfer",
                "attended_transfer",
            ] {
                let url = callback_url(base, secret, event, GRANDSTREAM_QUERY);
                let _ = writeln!(out, "{event}: {url}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::action_url::{parse_callback, ActionUrlEvent};

    /// What a phone would send once it has filled the variables.
    fn filled(url: &str) -> String {
        url.replace("$call_id", "33093")
            .replace("$call-id", "abc@10.0.0.1")
            .replace("$mac", "00:15:65:AA:BB:01")
            .replace("$remote", "+15550100")
            .replace('$', "")
    }

    #[test]
    fn every_generated_url_comes_back_as_a_known_event_with_its_variables() {
        for vendor in [
            PhoneVendor::Yealink,
            PhoneVendor::Snom,
            PhoneVendor::Fanvil,
            PhoneVendor::Grandstream,
        ] {
            let text = action_url_settings(vendor, "http://10.0.0.5:8080/", Some("s3"), "10.0.0.5");
            let urls: Vec<&str> = text
                .lines()
                .filter_map(|l| l.find("http://").map(|i| &l[i..]))
                .map(|u| u.split('<').next().unwrap())
                .collect();
            assert!(urls.len() >= 14, "{vendor:?}: {text}");
            for url in urls {
                let url = filled(&url.replace("&amp;", "&"));
                assert!(url.len() <= 511, "too long for a phone: {url}");
                let path = url.split('?').next().unwrap();
                let event = path.rsplit('/').next().unwrap();
                assert!(path.contains("/action-url/s3/"), "{url}");
                let cb = parse_callback(event, url.split_once('?').unwrap().1.as_bytes());
                assert!(
                    !matches!(cb.event, ActionUrlEvent::Other(_)),
                    "{vendor:?}: {event} is not a known event"
                );
                assert_eq!(cb.mac.as_deref(), Some("001565aabb01"), "{url}");
                assert_eq!(cb.remote.as_deref(), Some("+15550100"));
                assert!(cb.call_id.is_some(), "{url}");
            }
        }
    }

    #[test]
    fn yealink_allow_list_names_the_bridge() {
        let text = action_url_settings(PhoneVendor::Yealink, "http://b", None, "192.0.2.7");
        assert!(text.contains("features.action_uri_limit_ip = 192.0.2.7"));
        assert!(text.contains(
            "action_url.incoming_call = http://b/action-url/incoming_call?mac=$mac&ip=$ip"
        ));
    }
}
