//! What the bridge can ask a desk phone to do ([`PhoneCommand`]), the keys it can press
//! ([`Key`]), and every way such a request can fail ([`CommandError`]).
//!
//! Commands are vendor-neutral; [`super::vendor`] turns them into each vendor's exact request.
//! Keys are validated here, once, against the documented key list (the Yealink/Fanvil seed
//! documents plus the Yealink admin guide, see `phones.md` §1.1), so that nothing a caller sends
//! can smuggle a `;` (another key), `&` (another parameter) or `=` into a request: a [`Key`] can
//! only be built by [`Key::parse`] and only renders to `[A-Za-z0-9_*]` plus, for call-handle
//! keys, `:` and a handle of `[A-Za-z0-9._-]`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::number::NumberError;
use super::vendor::vendor_name;
use crate::config::PhoneVendor;

/// Most keys one command may press. Long sequences are almost certainly a mistake (or an
/// attempt to drive the phone's menus blindly), and every key is a request on some vendors.
pub const MAX_KEYS: usize = 32;

/// Longest call handle accepted in `ASW:<handle>` style keys; Yealink's are 5-digit numbers.
pub const MAX_HANDLE_LEN: usize = 64;

/// A command for one phone. Vendor profiles decide the exact request(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneCommand {
    /// Press these keys, in order.
    Keys(Vec<Key>),
    /// Dial `number` (as the caller gave it; each profile normalises it with
    /// [`super::number::normalize_number`]) on `line`, or on the phone's configured line.
    Dial {
        /// The number as given, e.g. `"+1 555 0100"`.
        number: String,
        /// Line (account slot) from 1; `None` uses the phone's configured line.
        line: Option<u8>,
    },
    /// Switch Do Not Disturb on.
    DndOn,
    /// Switch Do Not Disturb off.
    DndOff,
    /// Answer the ringing call.
    Answer,
    /// End the current call.
    Hangup,
    /// Put the current call on hold.
    Hold,
    /// Resume the held call.
    Unhold,
    /// Restart the phone.
    Reboot,
    /// Make the phone fetch its provisioning files now.
    AutoProvision,
}

impl PhoneCommand {
    /// Whether sending the command twice has the same effect as sending it once, so that a
    /// request whose answer was lost (timeout, connection reset) may be repeated.
    ///
    /// DND on/off set a state, and auto-provisioning only re-reads the configuration. Keys and
    /// dialling would act twice (two calls!), answer/hangup/hold may hit a *different* call the
    /// second time, and a second reboot could interrupt the first one.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self,
            PhoneCommand::DndOn | PhoneCommand::DndOff | PhoneCommand::AutoProvision
        )
    }

    /// A short name for logs and error messages (`dial`, `dnd_on`, …).
    pub fn name(&self) -> &'static str {
        match self {
            PhoneCommand::Keys(_) => "keys",
            PhoneCommand::Dial { .. } => "dial",
            PhoneCommand::DndOn => "dnd_on",
            PhoneCommand::DndOff => "dnd_off",
            PhoneCommand::Answer => "answer",
            PhoneCommand::Hangup => "hangup",
            PhoneCommand::Hold => "hold",
            PhoneCommand::Unhold => "unhold",
            PhoneCommand::Reboot => "reboot",
            PhoneCommand::AutoProvision => "auto_provision",
        }
    }

    /// Parses and checks a key sequence from user input (`["F1", "DOWN", "ok"]`).
    pub fn keys<S: AsRef<str>>(keys: &[S]) -> Result<PhoneCommand, CommandError> {
        if keys.is_empty() {
            return Err(CommandError::InvalidKey("no keys given".into()));
        }
        if keys.len() > MAX_KEYS {
            return Err(CommandError::InvalidKey(format!(
                "{} keys given; at most {MAX_KEYS} can be pressed in one command",
                keys.len()
            )));
        }
        keys.iter()
            .map(|k| Key::parse(k.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(PhoneCommand::Keys)
    }
}

/// How key names are spelled on the wire.
///
/// The Russian seed document: "on some firmware versions the keys differ; if the commands are
/// not carried out, use upper case and the `F_` prefix, e.g. `Reboot` = `F_REBOOT`". Only the
/// mixed-case *function* keys have such a variant (`Reboot`, `AutoP`, `DNDOn`, `DNDOff`); the
/// keys that are already upper case (`OK`, `F_HOLD`, `L1`, digits …) are the same in both
/// styles, since the rule is about spelling, not about renaming keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyStyle {
    /// As documented by Yealink and Fanvil: `Reboot`, `AutoP`, `DNDOn`, `DNDOff`.
    #[default]
    Plain,
    /// `F_REBOOT`, `F_AUTOP`, `F_DNDON`, `F_DNDOFF`, for the firmware the seed mentions.
    FPrefixUpper,
}

/// Keys with a fixed name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamedKey {
    /// `OK` (also answers a ringing call).
    Ok,
    /// `ENTER`.
    Enter,
    /// `SPEAKER` (speakerphone).
    Speaker,
    /// `F_HANDFREE`, hands-free, used by the seed's whole-number dialling example.
    Handfree,
    /// `F_TRANSFER`.
    Transfer,
    /// `VOLUME_UP`.
    VolumeUp,
    /// `VOLUME_DOWN`.
    VolumeDown,
    /// `MUTE`.
    Mute,
    /// `F_HOLD` (toggles hold on most firmware).
    FHold,
    /// `X` (end call / back to idle).
    X,
    /// `F_CONFERENCE`.
    Conference,
    /// `MSG` (voice mail).
    Msg,
    /// `HEADSET`.
    Headset,
    /// `RD` (redial).
    Redial,
    /// `UP`.
    Up,
    /// `DOWN`.
    Down,
    /// `LEFT`.
    Left,
    /// `RIGHT`.
    Right,
    /// `Reboot`.
    Reboot,
    /// `AutoP` (fetch provisioning now).
    AutoP,
    /// `DNDOn`.
    DndOn,
    /// `DNDOff`.
    DndOff,
    /// `CALLEND` (end the call).
    CallEnd,
}

/// `(key, documented spelling, F_-prefix spelling, other accepted spellings)`; matching is
/// case-insensitive, so aliases only list what differs by more than case.
const NAMED_KEYS: &[(NamedKey, &str, &str, &[&str])] = &[
    (NamedKey::Ok, "OK", "OK", &[]),
    (NamedKey::Enter, "ENTER", "ENTER", &[]),
    (NamedKey::Speaker, "SPEAKER", "SPEAKER", &[]),
    (NamedKey::Handfree, "F_HANDFREE", "F_HANDFREE", &[]),
    (NamedKey::Transfer, "F_TRANSFER", "F_TRANSFER", &[]),
    (NamedKey::VolumeUp, "VOLUME_UP", "VOLUME_UP", &[]),
    (NamedKey::VolumeDown, "VOLUME_DOWN", "VOLUME_DOWN", &[]),
    (NamedKey::Mute, "MUTE", "MUTE", &[]),
    (NamedKey::FHold, "F_HOLD", "F_HOLD", &[]),
    (NamedKey::X, "X", "X", &[]),
    (NamedKey::Conference, "F_CONFERENCE", "F_CONFERENCE", &[]),
    (NamedKey::Msg, "MSG", "MSG", &[]),
    (NamedKey::Headset, "HEADSET", "HEADSET", &[]),
    (NamedKey::Redial, "RD", "RD", &[]),
    (NamedKey::Up, "UP", "UP", &[]),
    (NamedKey::Down, "DOWN", "DOWN", &[]),
    (NamedKey::Left, "LEFT", "LEFT", &[]),
    (NamedKey::Right, "RIGHT", "RIGHT", &[]),
    (NamedKey::Reboot, "Reboot", "F_REBOOT", &[]),
    (NamedKey::AutoP, "AutoP", "F_AUTOP", &[]),
    (NamedKey::DndOn, "DNDOn", "F_DNDON", &[]),
    (NamedKey::DndOff, "DNDOff", "F_DNDOFF", &[]),
    (NamedKey::CallEnd, "CALLEND", "CALLEND", &[]),
];

impl NamedKey {
    fn spelling(self, style: KeyStyle) -> &'static str {
        let (_, plain, prefixed, _) = NAMED_KEYS
            .iter()
            .find(|(k, ..)| *k == self)
            .expect("every NamedKey is in NAMED_KEYS");
        match style {
            KeyStyle::Plain => plain,
            KeyStyle::FPrefixUpper => prefixed,
        }
    }
}

/// Yealink's call-control keys that may name a call: `ASW`, `CANCEL`, `HOLD`, `UNHOLD`, alone
/// (the current call) or as `ASW:<call handle>` with the handle the phone sent as `$call_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallAction {
    /// `ASW`: answer.
    Answer,
    /// `CANCEL`: end / reject.
    Cancel,
    /// `HOLD`.
    Hold,
    /// `UNHOLD`.
    Unhold,
}

impl CallAction {
    fn name(self) -> &'static str {
        match self {
            CallAction::Answer => "ASW",
            CallAction::Cancel => "CANCEL",
            CallAction::Hold => "HOLD",
            CallAction::Unhold => "UNHOLD",
        }
    }
}

/// What a [`Key`] is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A key with a fixed name.
    Named(NamedKey),
    /// `0`–`9`.
    Digit(u8),
    /// `*`.
    Star,
    /// `#`, documented as `POUND`.
    Pound,
    /// Line key `L1`–`L29` (T48G/S have 29; smaller models fewer, the phone ignores the rest).
    Line(u8),
    /// DSS key `D1`–`D10`.
    Dss(u8),
    /// Soft key `F1`–`F4`.
    Soft(u8),
    /// `ASW`/`CANCEL`/`HOLD`/`UNHOLD`, optionally with a call handle.
    Call {
        /// Which action.
        action: CallAction,
        /// The phone's call handle (`[A-Za-z0-9._-]`, at most [`MAX_HANDLE_LEN`]).
        handle: Option<String>,
    },
}

/// Highest line key accepted (`L29`, T48G/S).
pub const MAX_LINE_KEY: u8 = 29;
/// Highest DSS key accepted (`D10`).
pub const MAX_DSS_KEY: u8 = 10;
/// Highest soft key accepted (`F4`).
pub const MAX_SOFT_KEY: u8 = 4;

/// One key of the documented key list, validated. Build with [`Key::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    kind: KeyKind,
}

impl Key {
    /// Parses a key name, case-insensitively: `ok`, `Reboot`, `F_REBOOT`, `l12`, `#`, `POUND`,
    /// `$` (the seed's stand-in for `#`), `asw:33093`, …
    pub fn parse(input: &str) -> Result<Key, CommandError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(CommandError::InvalidKey("empty key name".into()));
        }
        let upper = s.to_ascii_uppercase();
        let kind = if let Some((action, handle)) = s.split_once(':') {
            let action = call_action(&action.to_ascii_uppercase()).ok_or_else(|| {
                invalid_key(
                    input,
                    "only ASW, CANCEL, HOLD and UNHOLD take a call handle (KEY:<handle>)",
                )
            })?;
            // The handle keeps the caller's case: it is the phone's own identifier.
            validate_handle(input, handle)?;
            KeyKind::Call {
                action,
                handle: Some(handle.to_owned()),
            }
        } else if let Some(action) = call_action(&upper) {
            KeyKind::Call {
                action,
                handle: None,
            }
        } else if let Some(named) = named_key(&upper) {
            KeyKind::Named(named)
        } else {
            match upper.as_str() {
                "*" => KeyKind::Star,
                "#" | "$" | "POUND" => KeyKind::Pound,
                d if d.len() == 1 && d.as_bytes()[0].is_ascii_digit() => {
                    KeyKind::Digit(d.as_bytes()[0] - b'0')
                }
                _ => numbered_key(&upper).ok_or_else(|| invalid_key(input, KEY_HELP))??,
            }
        };
        Ok(Key { kind })
    }

    /// A key with a fixed name; always valid.
    pub fn named(key: NamedKey) -> Key {
        Key {
            kind: KeyKind::Named(key),
        }
    }

    /// What this key is.
    pub fn kind(&self) -> &KeyKind {
        &self.kind
    }

    /// The key's name on the wire in the Yealink/Fanvil dialect. `#` renders as `POUND`, the
    /// name every document lists; the seed's `$` stand-in is used inside dialled strings only
    /// (see [`super::vendor`]).
    pub fn render(&self, style: KeyStyle) -> String {
        match &self.kind {
            KeyKind::Named(k) => k.spelling(style).to_owned(),
            KeyKind::Digit(d) => char::from(b'0' + d).to_string(),
            KeyKind::Star => "*".into(),
            KeyKind::Pound => "POUND".into(),
            KeyKind::Line(n) => format!("L{n}"),
            KeyKind::Dss(n) => format!("D{n}"),
            KeyKind::Soft(n) => format!("F{n}"),
            KeyKind::Call {
                action,
                handle: None,
            } => action.name().to_owned(),
            KeyKind::Call {
                action,
                handle: Some(h),
            } => format!("{}:{h}", action.name()),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(KeyStyle::Plain))
    }
}

impl std::str::FromStr for Key {
    type Err = CommandError;
    fn from_str(s: &str) -> Result<Key, CommandError> {
        Key::parse(s)
    }
}

const KEY_HELP: &str = "expected OK, ENTER, SPEAKER, F_HANDFREE, F_TRANSFER, VOLUME_UP, \
     VOLUME_DOWN, MUTE, F_HOLD, HOLD, UNHOLD, X, 0-9, *, # (POUND), L1-L29, D1-D10, \
     F_CONFERENCE, F1-F4, MSG, HEADSET, RD, UP, DOWN, LEFT, RIGHT, Reboot, AutoP, DNDOn, \
     DNDOff, CALLEND, ASW, CANCEL, or ASW/CANCEL/HOLD/UNHOLD:<call handle>";

fn invalid_key(input: &str, why: &str) -> CommandError {
    // Quote at most a bounded, debug-escaped prefix: the input is untrusted.
    let shown: String = input.chars().take(40).collect();
    CommandError::InvalidKey(format!("{shown:?}: {why}"))
}

fn call_action(upper: &str) -> Option<CallAction> {
    match upper {
        "ASW" => Some(CallAction::Answer),
        "CANCEL" => Some(CallAction::Cancel),
        "HOLD" => Some(CallAction::Hold),
        "UNHOLD" => Some(CallAction::Unhold),
        _ => None,
    }
}

fn named_key(upper: &str) -> Option<NamedKey> {
    NAMED_KEYS.iter().find_map(|(k, plain, prefixed, aliases)| {
        (plain.eq_ignore_ascii_case(upper)
            || prefixed.eq_ignore_ascii_case(upper)
            || aliases.iter().any(|a| a.eq_ignore_ascii_case(upper)))
        .then_some(*k)
    })
}

/// `L<n>`, `D<n>`, `F<n>`: `None` when the shape does not match, `Some(Err)` when the number
/// is out of range.
fn numbered_key(upper: &str) -> Option<Result<KeyKind, CommandError>> {
    let mut chars = upper.chars();
    let prefix = chars.next()?;
    let digits = chars.as_str();
    if digits.is_empty() || digits.len() > 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = digits.parse().ok()?;
    let (max, make): (u8, fn(u8) -> KeyKind) = match prefix {
        'L' => (MAX_LINE_KEY, KeyKind::Line),
        'D' => (MAX_DSS_KEY, KeyKind::Dss),
        'F' => (MAX_SOFT_KEY, KeyKind::Soft),
        _ => return None,
    };
    Some(if (1..=max).contains(&n) && !digits.starts_with('0') {
        Ok(make(n))
    } else {
        Err(invalid_key(
            upper,
            &format!("{prefix} keys are numbered {prefix}1 to {prefix}{max}"),
        ))
    })
}

fn validate_handle(input: &str, handle: &str) -> Result<(), CommandError> {
    if handle.is_empty() || handle.len() > MAX_HANDLE_LEN {
        return Err(invalid_key(
            input,
            &format!("a call handle must have 1 to {MAX_HANDLE_LEN} characters"),
        ));
    }
    if let Some(bad) = handle
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid_key(
            input,
            &format!("{bad:?} is not allowed in a call handle (letters, digits, . _ - only)"),
        ));
    }
    Ok(())
}

/// Every way a phone command can fail. The messages are meant for the developer calling the
/// bridge's API: they say what happened and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The extension is not in the phone registry.
    #[error("no phone with extension {0:?} is known to the bridge; add it under [[phones]]")]
    UnknownPhone(String),
    /// The phone is only known from its Action URL callbacks: no vendor, no credentials.
    #[error(
        "phone {0:?} is known only from its Action URL callbacks; add it under [[phones]] \
         (vendor, address, username, password) before sending it commands"
    )]
    NotConfigured(String),
    /// The phone's address (or one it resolves to) is outside `[active_uri] allowed_networks`.
    #[error(
        "phone {extension} is at {address} ({ip}), which is outside [active_uri] \
         allowed_networks; the bridge sends commands only to addresses inside those networks"
    )]
    AddressNotAllowed {
        /// The phone.
        extension: String,
        /// Its address as registered.
        address: String,
        /// The (first) resolved IP that is not allowed.
        ip: IpAddr,
    },
    /// The number to dial was refused.
    #[error("invalid number: {0}")]
    InvalidNumber(#[from] NumberError),
    /// A key name was refused.
    #[error("invalid key {0}")]
    InvalidKey(String),
    /// A line number out of range.
    #[error("invalid line {line}: lines are numbered from 1 to {max}")]
    InvalidLine {
        /// The line asked for.
        line: u8,
        /// Highest line accepted.
        max: u8,
    },
    /// The phone's vendor (or the chosen transport) has no documented way to do this.
    #[error("{} phones cannot {op} through the bridge", vendor_name(*.vendor))]
    Unsupported {
        /// The phone's vendor.
        vendor: PhoneVendor,
        /// What was asked, e.g. `"switch DND"`, `"press key MSG"`.
        op: String,
    },
    /// The phone refused the credentials (401/403 after the Digest answer, if it asked for one).
    #[error(
        "phone {extension} refused the bridge's credentials (HTTP {status}); check username and \
         password of this phone in [[phones]] (and that the bridge's IP is in the phone's remote \
         control allow-list). Further commands to it are refused until the bridge is restarted \
         or the phone is re-registered, because phones lock out after repeated failures"
    )]
    AuthFailed {
        /// The phone.
        extension: String,
        /// 401 or 403.
        status: u16,
    },
    /// An earlier request to this phone failed authentication; nothing was sent.
    #[error(
        "commands to phone {extension} are paused because an earlier request failed \
         authentication ({reason}); nothing was sent. Fix the phone's credentials in [[phones]]"
    )]
    PhoneLocked {
        /// The phone.
        extension: String,
        /// What the registry recorded.
        reason: String,
    },
    /// The phone did not answer in time.
    #[error("the phone did not answer within {after:?} ([active_uri] timeout)")]
    Timeout {
        /// The per-request limit.
        after: Duration,
    },
    /// The phone's address could not be resolved or connected to.
    #[error("the phone cannot be reached: {0}")]
    Unreachable(String),
    /// The phone answered with an error status.
    #[error(
        "the phone answered HTTP {0}; it did not accept the command (check the phone's vendor \
         setting, firmware, and that remote control / Action URI is enabled on it)"
    )]
    HttpStatus(u16),
    /// Asterisk did not send the SIP NOTIFY.
    #[error("sending the command as SIP NOTIFY through Asterisk failed: {0}")]
    NotifyFailed(String),
    /// The phone wants SIP NOTIFY but the bridge has no AMI link to send it through.
    #[error(
        "this phone is set to transport \"notify\", but the bridge has no AMI connection to \
         send the SIP NOTIFY through"
    )]
    NoNotifyTransport,
}

impl CommandError {
    /// A stable, machine-readable code for API responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::UnknownPhone(_) => "unknown_phone",
            CommandError::NotConfigured(_) => "not_configured",
            CommandError::AddressNotAllowed { .. } => "address_not_allowed",
            CommandError::InvalidNumber(_) => "invalid_number",
            CommandError::InvalidKey(_) => "invalid_key",
            CommandError::InvalidLine { .. } => "invalid_line",
            CommandError::Unsupported { .. } => "unsupported",
            CommandError::AuthFailed { .. } => "auth_failed",
            CommandError::PhoneLocked { .. } => "phone_locked",
            CommandError::Timeout { .. } => "timeout",
            CommandError::Unreachable(_) => "unreachable",
            CommandError::HttpStatus(_) => "http_status",
            CommandError::NotifyFailed(_) => "notify_failed",
            CommandError::NoNotifyTransport => "no_notify_transport",
        }
    }

    /// True when the caller's input was at fault (bad number/key/line, unsupported op), as
    /// opposed to the phone, the network or the configuration.
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            CommandError::InvalidNumber(_)
                | CommandError::InvalidKey(_)
                | CommandError::InvalidLine { .. }
                | CommandError::Unsupported { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Key {
        Key::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn every_seed_key_parses_and_renders_canonically() {
        for (input, want) in [
            ("OK", "OK"),
            ("ok", "OK"),
            ("Enter", "ENTER"),
            ("speaker", "SPEAKER"),
            ("F_TRANSFER", "F_TRANSFER"),
            ("volume_up", "VOLUME_UP"),
            ("VOLUME_DOWN", "VOLUME_DOWN"),
            ("MUTE", "MUTE"),
            ("F_HOLD", "F_HOLD"),
            ("HOLD", "HOLD"),
            ("x", "X"),
            ("0", "0"),
            ("9", "9"),
            ("*", "*"),
            ("#", "POUND"),
            ("$", "POUND"),
            ("pound", "POUND"),
            ("L1", "L1"),
            ("l8", "L8"),
            ("L29", "L29"),
            ("D1", "D1"),
            ("d10", "D10"),
            ("F_CONFERENCE", "F_CONFERENCE"),
            ("F1", "F1"),
            ("f4", "F4"),
            ("MSG", "MSG"),
            ("HEADSET", "HEADSET"),
            ("RD", "RD"),
            ("UP", "UP"),
            ("down", "DOWN"),
            ("LEFT", "LEFT"),
            ("RIGHT", "RIGHT"),
            ("reboot", "Reboot"),
            ("F_REBOOT", "Reboot"),
            ("AUTOP", "AutoP"),
            ("dndon", "DNDOn"),
            ("DNDOff", "DNDOff"),
            ("CallEnd", "CALLEND"),
            ("ASW", "ASW"),
            ("cancel", "CANCEL"),
            ("unhold", "UNHOLD"),
            ("asw:33093", "ASW:33093"),
            ("Hold:ab-1", "HOLD:ab-1"),
            (" F_HANDFREE ", "F_HANDFREE"),
        ] {
            assert_eq!(k(input).render(KeyStyle::Plain), want, "{input}");
        }
    }

    #[test]
    fn f_prefix_style_only_changes_the_mixed_case_function_keys() {
        for (input, want) in [
            ("Reboot", "F_REBOOT"),
            ("AutoP", "F_AUTOP"),
            ("DNDOn", "F_DNDON"),
            ("DNDOff", "F_DNDOFF"),
            ("OK", "OK"),
            ("F_HOLD", "F_HOLD"),
            ("L3", "L3"),
            ("#", "POUND"),
            ("ASW:1", "ASW:1"),
        ] {
            assert_eq!(k(input).render(KeyStyle::FPrefixUpper), want, "{input}");
        }
    }

    #[test]
    fn bad_keys_are_refused() {
        for input in [
            "",
            "é",
            "Ж1",
            "L0",
            "L30",
            "L01",
            "D11",
            "F5",
            "F0",
            "FOO",
            "OK;Reboot",
            "OK&x=1",
            "ASW:",
            "ASW:1;2",
            "ASW:a b",
            "OK:1",
            "number=1",
            "10",
            "%23",
            "ASW:1&key=Reboot",
        ] {
            assert!(
                matches!(Key::parse(input), Err(CommandError::InvalidKey(_))),
                "{input:?} should be refused"
            );
        }
        let long = format!("ASW:{}", "1".repeat(MAX_HANDLE_LEN + 1));
        assert!(Key::parse(&long).is_err());
    }

    #[test]
    fn rendered_keys_never_contain_separators() {
        let all = [
            "OK",
            "ASW:Ab.c_d-1",
            "L29",
            "#",
            "*",
            "Reboot",
            "F_CONFERENCE",
        ];
        for style in [KeyStyle::Plain, KeyStyle::FPrefixUpper] {
            for s in all {
                let r = k(s).render(style);
                assert!(
                    r.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_*:.-".contains(c)),
                    "{r}"
                );
            }
        }
    }

    #[test]
    fn idempotency() {
        assert!(PhoneCommand::DndOn.is_idempotent());
        assert!(PhoneCommand::DndOff.is_idempotent());
        assert!(PhoneCommand::AutoProvision.is_idempotent());
        for c in [
            PhoneCommand::Keys(vec![k("OK")]),
            PhoneCommand::Dial {
                number: "1".into(),
                line: None,
            },
            PhoneCommand::Answer,
            PhoneCommand::Hangup,
            PhoneCommand::Hold,
            PhoneCommand::Unhold,
            PhoneCommand::Reboot,
        ] {
            assert!(!c.is_idempotent(), "{c:?}");
        }
    }

    #[test]
    fn key_lists_are_bounded() {
        assert!(PhoneCommand::keys::<&str>(&[]).is_err());
        assert!(PhoneCommand::keys(&["1"; MAX_KEYS]).is_ok());
        assert!(PhoneCommand::keys(&["1"; MAX_KEYS + 1]).is_err());
        assert!(PhoneCommand::keys(&["1", "bogus"]).is_err());
    }

    #[test]
    fn messages_are_readable() {
        let e = Key::parse("FOO").unwrap_err().to_string();
        assert!(e.contains("FOO") && e.contains("expected OK"), "{e}");
        let e = CommandError::Unsupported {
            vendor: PhoneVendor::Grandstream,
            op: "switch DND".into(),
        }
        .to_string();
        assert_eq!(e, "grandstream phones cannot switch DND through the bridge");
    }
}
