//! Do Not Disturb: what the PBX says about it, what to write to the PBX, and the loop guard
//! that keeps the two-way sync from ping-ponging. Plain synchronous code; the effects are in
//! [`super::Control`].
//!
//! The sync has two sides, the phone and the PBX. A change that starts on one side is pushed
//! to the other: a phone's own `dnd_on`/`dnd_off` callback goes to the PBX (in the configured
//! mode), a PBX change (`UserEvent: CtiDnd`, or a `DeviceStateChange` of the DND custom
//! device) goes to the phone; the API sets both. Each push makes the receiving side report
//! the change back (the phone fires its callback, Asterisk emits the device state), and that
//! report must not be pushed again. [`LoopGuard`] remembers, per extension and side, the value
//! the bridge just wrote and until when; a report of that value from that side inside the
//! window is an echo. It also drops a report repeating the last accepted one from the same
//! side inside the window (the dialplan's `CtiDnd` and the device state it sets report one
//! change twice).

use crate::ami::{AmiMessage, AmiMessageBuilder};
use crate::config::{DndPbxMode, DndSettings};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::time::Duration;

/// A side of the sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Phone,
    Pbx,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Phone => "phone",
            Side::Pbx => "pbx",
        }
    }
}

/// What a reported change is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A real change: push it to the other side.
    New,
    /// The side reporting back what the bridge just wrote to it.
    Echo,
    /// The same report again from the same side.
    Duplicate,
}

/// Suppresses echoes and repeats for a window after each write or accepted report.
#[derive(Debug)]
pub struct LoopGuard {
    window: TimeDelta,
    /// What the bridge wrote to a side, and until when its echo is expected.
    written: HashMap<(String, Side), (bool, DateTime<Utc>)>,
    /// The last report accepted from a side, and until when a repeat is a duplicate.
    reported: HashMap<(String, Side), (bool, DateTime<Utc>)>,
}

impl LoopGuard {
    pub fn new(window: Duration) -> LoopGuard {
        LoopGuard {
            window: TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX),
            written: HashMap::new(),
            reported: HashMap::new(),
        }
    }

    /// The bridge is about to set `on` on `side` of `ext`.
    pub fn writing(&mut self, ext: &str, side: Side, on: bool, now: DateTime<Utc>) {
        self.prune(now);
        self.written
            .insert((ext.to_owned(), side), (on, now + self.window));
    }

    /// `side` reports that DND of `ext` is now `on`.
    pub fn report(&mut self, ext: &str, side: Side, on: bool, now: DateTime<Utc>) -> Verdict {
        self.prune(now);
        let key = (ext.to_owned(), side);
        if let Some(&(value, until)) = self.written.get(&key) {
            if value == on && now <= until {
                return Verdict::Echo;
            }
        }
        if let Some(&(value, until)) = self.reported.get(&key) {
            if value == on && now <= until {
                return Verdict::Duplicate;
            }
        }
        self.reported.insert(key, (on, now + self.window));
        Verdict::New
    }

    /// Drops expired entries (the maps stay as small as the number of recent changes).
    fn prune(&mut self, now: DateTime<Utc>) {
        if self.written.len() + self.reported.len() > 64 {
            self.written.retain(|_, (_, until)| *until >= now);
            self.reported.retain(|_, (_, until)| *until >= now);
        }
    }
}

/// A DND change the PBX reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PbxDnd {
    pub extension: String,
    pub on: bool,
    /// `CtiDnd` or `DeviceStateChange`.
    pub source: &'static str,
}

/// Why a `CtiDnd` user event was not understood (logged, so the dialplan author can fix it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CtiDndError {
    #[error(
        "UserEvent CtiDnd without a Phone key; send UserEvent(CtiDnd,Phone: <ext>,State: on|off) \
         (not Exten: the event already carries the channel's own Exten)"
    )]
    NoPhone,
    #[error("UserEvent CtiDnd with State {0:?}; expected on or off")]
    BadState(String),
}

/// `on`/`off` and the usual spellings of a flag.
pub fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "yes" | "enabled" => Some(true),
        "off" | "0" | "false" | "no" | "disabled" => Some(false),
        _ => None,
    }
}

/// A PBX-side DND change in `msg`, if it is one: `UserEvent: CtiDnd` (`Phone`, `State`),
/// always; a `DeviceStateChange` of the configured custom device, in modes `astdb` (FreePBX
/// keeps both) and `devstate`.
pub fn pbx_dnd(msg: &AmiMessage, cfg: &DndSettings) -> Option<Result<PbxDnd, CtiDndError>> {
    match msg.event_name()? {
        "UserEvent" => {
            if !msg.get("UserEvent")?.eq_ignore_ascii_case("CtiDnd") {
                return None;
            }
            let Some(phone) = msg.get("Phone").map(str::trim).filter(|p| !p.is_empty()) else {
                return Some(Err(CtiDndError::NoPhone));
            };
            let state = msg.get("State").unwrap_or("");
            Some(match parse_flag(state) {
                Some(on) => Ok(PbxDnd {
                    extension: phone.to_owned(),
                    on,
                    source: "CtiDnd",
                }),
                None => Err(CtiDndError::BadState(state.to_owned())),
            })
        }
        "DeviceStateChange" if cfg.pbx_mode != DndPbxMode::None => {
            let ext = device_extension(&cfg.devstate_device, msg.get("Device")?)?;
            let state = msg.get("State")?.trim();
            let on = if state.eq_ignore_ascii_case(&cfg.devstate_on) {
                true
            } else if state.eq_ignore_ascii_case(&cfg.devstate_off) {
                false
            } else {
                return None;
            };
            Some(Ok(PbxDnd {
                extension: ext.to_owned(),
                on,
                source: "DeviceStateChange",
            }))
        }
        _ => None,
    }
}

/// The extension in `device` for a template like `Custom:DND{ext}` (the prefix compared
/// without case, as Asterisk does for device names).
pub fn device_extension<'a>(template: &str, device: &'a str) -> Option<&'a str> {
    let (prefix, suffix) = template.split_once("{ext}")?;
    let head = device.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) || !device[prefix.len()..].ends_with(suffix) {
        return None;
    }
    let ext = &device[prefix.len()..device.len() - suffix.len()];
    (!ext.is_empty()).then_some(ext)
}

/// Fills `{ext}` in a `[dnd]` template.
pub fn render(template: &str, ext: &str) -> String {
    template.replace("{ext}", ext)
}

/// The AMI action that sets DND of `ext` on the PBX in the configured mode; `None` for mode
/// `none`. astdb: `DBPut` (on) / `DBDel` (off); devstate: `Setvar DEVICE_STATE(<device>)`.
pub fn pbx_action(cfg: &DndSettings, ext: &str, on: bool) -> Option<AmiMessageBuilder> {
    match cfg.pbx_mode {
        DndPbxMode::None => None,
        DndPbxMode::Astdb => {
            let family = render(&cfg.astdb_family, ext);
            let key = render(&cfg.astdb_key, ext);
            Some(if on {
                AmiMessage::action("DBPut")
                    .field("Family", family)
                    .field("Key", key)
                    .field("Val", render(&cfg.astdb_value, ext))
            } else {
                AmiMessage::action("DBDel")
                    .field("Family", family)
                    .field("Key", key)
            })
        }
        DndPbxMode::Devstate => Some(
            AmiMessage::action("Setvar")
                .field(
                    "Variable",
                    format!("DEVICE_STATE({})", render(&cfg.devstate_device, ext)),
                )
                .field(
                    "Value",
                    if on {
                        cfg.devstate_on.clone()
                    } else {
                        cfg.devstate_off.clone()
                    },
                ),
        ),
    }
}

/// `none`, `astdb`, `devstate`.
pub fn mode_name(mode: DndPbxMode) -> &'static str {
    match mode {
        DndPbxMode::None => "none",
        DndPbxMode::Astdb => "astdb",
        DndPbxMode::Devstate => "devstate",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn ev(name: &str, fields: &[(&str, &str)]) -> AmiMessage {
        let mut b = AmiMessage::event(name);
        for (k, v) in fields {
            b = b.field(*k, *v);
        }
        b.build().unwrap()
    }

    fn pairs(b: AmiMessageBuilder) -> Vec<(String, String)> {
        b.build().unwrap().to_pairs()
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn echoes_and_duplicates_are_suppressed_inside_the_window_only() {
        let mut g = LoopGuard::new(Duration::from_secs(10));
        // We write "on" to the phone; the phone reports "on" back: echo.
        g.writing("101", Side::Phone, true, t(0));
        assert_eq!(g.report("101", Side::Phone, true, t(1)), Verdict::Echo);
        assert_eq!(g.report("101", Side::Phone, true, t(2)), Verdict::Echo);
        // The user switches it off on the phone: a real change, pushed once.
        assert_eq!(g.report("101", Side::Phone, false, t(3)), Verdict::New);
        assert_eq!(
            g.report("101", Side::Phone, false, t(4)),
            Verdict::Duplicate
        );
        // Other sides and extensions are independent.
        assert_eq!(g.report("101", Side::Pbx, true, t(4)), Verdict::New);
        assert_eq!(g.report("102", Side::Phone, true, t(4)), Verdict::New);
        // After the window the same value is news again.
        assert_eq!(g.report("101", Side::Phone, false, t(20)), Verdict::New);
        g.writing("101", Side::Pbx, true, t(30));
        assert_eq!(g.report("101", Side::Pbx, true, t(41)), Verdict::New);
    }

    #[test]
    fn pbx_events_are_read_by_mode() {
        let mut cfg = DndSettings::default();
        let cti = ev(
            "UserEvent",
            &[
                ("Exten", "*78"),
                ("UserEvent", "CtiDnd"),
                ("Phone", "101"),
                ("State", "on"),
            ],
        );
        let dsc = ev(
            "DeviceStateChange",
            &[("Device", "Custom:DND101"), ("State", "NOT_INUSE")],
        );
        assert_eq!(
            pbx_dnd(&cti, &cfg),
            Some(Ok(PbxDnd {
                extension: "101".into(),
                on: true,
                source: "CtiDnd"
            }))
        );
        assert_eq!(
            pbx_dnd(&dsc, &cfg),
            None,
            "mode none follows no device state"
        );
        cfg.pbx_mode = DndPbxMode::Devstate;
        assert!(!pbx_dnd(&dsc, &cfg).unwrap().unwrap().on);
        let other = ev(
            "DeviceStateChange",
            &[("Device", "PJSIP/101"), ("State", "BUSY")],
        );
        assert_eq!(pbx_dnd(&other, &cfg), None);
        let odd = ev(
            "DeviceStateChange",
            &[("Device", "custom:dnd7"), ("State", "INUSE")],
        );
        assert_eq!(
            pbx_dnd(&odd, &cfg),
            None,
            "a state that is neither on nor off"
        );
        // The fixture's dialplan used Exten (twice, colliding): refused with a hint.
        let bad = ev(
            "UserEvent",
            &[("UserEvent", "CtiDnd"), ("Exten", "101"), ("State", "on")],
        );
        assert_eq!(pbx_dnd(&bad, &cfg), Some(Err(CtiDndError::NoPhone)));
        let bad = ev(
            "UserEvent",
            &[
                ("UserEvent", "CtiDnd"),
                ("Phone", "101"),
                ("State", "maybe"),
            ],
        );
        assert!(matches!(
            pbx_dnd(&bad, &cfg),
            Some(Err(CtiDndError::BadState(_)))
        ));
    }

    #[test]
    fn device_templates() {
        assert_eq!(
            device_extension("Custom:DND{ext}", "Custom:DND101"),
            Some("101")
        );
        assert_eq!(
            device_extension("Custom:DND{ext}", "custom:dnd101"),
            Some("101")
        );
        assert_eq!(
            device_extension("Custom:{ext}-dnd", "Custom:7-dnd"),
            Some("7")
        );
        assert_eq!(device_extension("Custom:DND{ext}", "Custom:DND"), None);
        assert_eq!(device_extension("Custom:DND{ext}", "PJSIP/101"), None);
    }

    #[test]
    fn actions_per_mode() {
        let mut cfg = DndSettings::default();
        assert!(pbx_action(&cfg, "101", true).is_none());
        cfg.pbx_mode = DndPbxMode::Astdb;
        assert_eq!(
            pairs(pbx_action(&cfg, "101", true).unwrap()),
            [
                p("Action", "DBPut"),
                p("Family", "DND"),
                p("Key", "101"),
                p("Val", "YES")
            ]
        );
        assert_eq!(
            pairs(pbx_action(&cfg, "101", false).unwrap()),
            [p("Action", "DBDel"), p("Family", "DND"), p("Key", "101")]
        );
        cfg.pbx_mode = DndPbxMode::Devstate;
        assert_eq!(
            pairs(pbx_action(&cfg, "101", true).unwrap()),
            [
                p("Action", "Setvar"),
                p("Variable", "DEVICE_STATE(Custom:DND101)"),
                p("Value", "BUSY")
            ]
        );
        assert_eq!(
            pairs(pbx_action(&cfg, "101", false).unwrap())[2],
            p("Value", "NOT_INUSE")
        );
    }

    #[test]
    fn flags() {
        for on in ["on", "ON", "1", "true", "yes"] {
            assert_eq!(parse_flag(on), Some(true), "{on}");
        }
        for off in ["off", "0", "False", "no"] {
            assert_eq!(parse_flag(off), Some(false), "{off}");
        }
        assert_eq!(parse_flag("toggle"), None);
    }
}
