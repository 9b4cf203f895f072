//! Vendor profiles: the exact Active URI request target (path + query) each phone make
//! expects for a [`PhoneCommand`], and the SIP NOTIFY body for the makes that accept one.
//!
//! | vendor | key press / DND | dial |
//! |---|---|---|
//! | `yealink` | `/servlet?key=K1;K2` | `/servlet?key=number=N&outgoing_uri=U` |
//! | `yealink-legacy` | `/cgi-bin/ConfigManApp.com?key=K` | `/cgi-bin/ConfigManApp.com?number=N&outgoing_uri=U` |
//! | `fanvil` | `/cgi-bin/ConfigManApp.com?key=K` | `/cgi-bin/ConfigManApp.com?number=N&outgoing_uri=U` |
//! | `snom` | `/command.htm?key=K1;K2`, DND `key=DND` (a toggle) | `/command.htm?number=N&outgoing_uri=U` |
//! | `grandstream` | — (unsupported) | `/cgi-bin/api-make_call?passcode=P&phonenumber=N&account=A` |
//! | `htek` | `/Phone_ActionURL&Command=3&key=K` (one request per key) | `/Phone_ActionURL&Command=1&Number=N&Account=A` |
//!
//! Encoding rules, from `phones.md` §7 and the seed documents:
//! - `key=` comes first in the query (Yealink ignores the command otherwise) and no query ends
//!   with `&`; parameter names use the documented case (`key`, not `Key`).
//! - Every *value* is percent-encoded except RFC 3986 unreserved characters, so a value can
//!   never add a parameter. The characters a vendor needs literally are written by the profile
//!   itself, never taken from input: `;` between keys, `=` in `key=number=…`, `@` (and `:`) in
//!   `outgoing_uri=user@host[:port]`, `@` before the line in the seed's `2323@1` form, `:` in
//!   `ASW:<handle>` keys.
//! - A dialled `+` is sent as `%2B` (a literal `+` would be read as a space).
//! - A dialled `#`: Yealink firmware drops a `#` from the request, so the Yealink dialects use
//!   the seed's `$` stand-in (`12#34` → `12$34`). The other vendors parse a normal query, so
//!   `#` goes as `%23`. The single `#` *key* is `POUND` (the documented key name) on
//!   Yealink/Fanvil/Htek and `%23` on Snom, whose key name is `#`.
//! - `*` is kept literal: it is allowed in a query (RFC 3986 sub-delimiter) and every document
//!   writes `key=*`.
//! - Numbers are normalised first ([`normalize_number`]), so they only ever contain `+`,
//!   digits, `*` and `#`.

use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::command::{
    CallAction, CommandError, Key, KeyKind, KeyStyle, NamedKey, PhoneCommand, MAX_KEYS,
};
use super::number::normalize_number;
use crate::config::PhoneVendor;

/// Highest line (account slot) number accepted; Yealink T5x have 16 accounts.
pub const MAX_LINE: u8 = 16;

/// Everything except RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// For `user@host[:port]` values: `@` and `:` stay literal, as every document writes them
/// (`outgoing_uri=3@192.168.20.22`); both are allowed in a query and cannot start a parameter.
const SIP_URI: &AsciiSet = &COMPONENT.remove(b'@').remove(b':');

/// What a profile needs to know about the phone besides the command.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// The phone's extension.
    pub extension: String,
    /// SIP account when it differs from the extension: `user` or `user@host`.
    pub account: Option<String>,
    /// The configured line (account slot) from 1, used when a command names none.
    pub line: u8,
    /// The PBX host phones register to, for `outgoing_uri=user@pbx_host`.
    pub pbx_host: String,
    /// The web password; Grandstream sends it as `passcode=` in the query.
    pub password: String,
    /// Key spelling for firmware that wants `F_REBOOT` instead of `Reboot`.
    pub key_style: KeyStyle,
}

impl fmt::Debug for CommandContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandContext")
            .field("extension", &self.extension)
            .field("account", &self.account)
            .field("line", &self.line)
            .field("pbx_host", &self.pbx_host)
            .field("password", &"<redacted>")
            .field("key_style", &self.key_style)
            .finish()
    }
}

impl CommandContext {
    /// The account URI to dial from (not encoded): `account` when it holds an `@`, otherwise
    /// `{account or extension}@{pbx_host}`.
    pub fn outgoing_uri(&self) -> String {
        match self.account.as_deref().filter(|a| !a.is_empty()) {
            Some(a) if a.contains('@') => a.to_owned(),
            Some(a) => format!("{a}@{}", self.pbx_host),
            None => format!("{}@{}", self.extension, self.pbx_host),
        }
    }
}

/// One vendor's Active URI dialect.
pub trait VendorProfile: Send + Sync {
    /// The vendor this profile speaks for.
    fn vendor(&self) -> PhoneVendor;

    /// The request targets (path + query), in the order they must be sent.
    fn http_requests(
        &self,
        cmd: &PhoneCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<String>, CommandError>;

    /// The body of a SIP NOTIFY (`Event: ACTION-URI`, `Content-Type: message/sipfrag`) that
    /// carries the command, for the vendors that accept one.
    fn notify_body(&self, cmd: &PhoneCommand, ctx: &CommandContext)
        -> Result<String, CommandError>;

    /// Whether a request for `cmd` may be repeated after a lost answer. Normally
    /// [`PhoneCommand::is_idempotent`]; a profile that can only express a state change as a
    /// toggle (Snom's DND key) must say no, since a repeat would undo it.
    fn retry_safe(&self, cmd: &PhoneCommand) -> bool {
        cmd.is_idempotent()
    }

    /// `target` with secrets carried in the query (Grandstream's `passcode=`) masked, for
    /// logs and [`super::client::CommandOutcome::requests`].
    fn redact(&self, target: &str) -> String {
        target.to_owned()
    }
}

/// The profile for `vendor`.
pub fn profile(vendor: PhoneVendor) -> &'static dyn VendorProfile {
    match vendor {
        PhoneVendor::Yealink => &YEALINK,
        PhoneVendor::YealinkLegacy => &YEALINK_LEGACY,
        PhoneVendor::Fanvil => &FANVIL,
        PhoneVendor::Snom => &Snom,
        PhoneVendor::Grandstream => &Grandstream,
        PhoneVendor::Htek => &Htek,
    }
}

/// The vendor's name as written in the config file (`yealink-legacy`).
pub fn vendor_name(vendor: PhoneVendor) -> &'static str {
    match vendor {
        PhoneVendor::Yealink => "yealink",
        PhoneVendor::YealinkLegacy => "yealink-legacy",
        PhoneVendor::Fanvil => "fanvil",
        PhoneVendor::Snom => "snom",
        PhoneVendor::Grandstream => "grandstream",
        PhoneVendor::Htek => "htek",
    }
}

/// Every vendor, in a fixed order (for stats tables and tests).
pub const ALL_VENDORS: [PhoneVendor; 6] = [
    PhoneVendor::Yealink,
    PhoneVendor::YealinkLegacy,
    PhoneVendor::Fanvil,
    PhoneVendor::Snom,
    PhoneVendor::Grandstream,
    PhoneVendor::Htek,
];

fn enc(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

fn enc_uri(value: &str) -> String {
    utf8_percent_encode(value, SIP_URI).to_string()
}

/// A normalised number (`[+]{0-9*#}`) for a query: `+` → `%2B`, `#` → `pound`.
fn render_number(normalized: &str, pound: &str) -> String {
    let mut out = String::with_capacity(normalized.len() + 4);
    for c in normalized.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '#' => out.push_str(pound),
            '*' => out.push('*'),
            // normalize_number lets nothing else through; encode anyway rather than trust it.
            c => out.push_str(&enc(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out
}

fn unsupported(vendor: PhoneVendor, op: impl Into<String>) -> CommandError {
    CommandError::Unsupported {
        vendor,
        op: op.into(),
    }
}

fn check_line(line: u8) -> Result<u8, CommandError> {
    if (1..=MAX_LINE).contains(&line) {
        Ok(line)
    } else {
        Err(CommandError::InvalidLine {
            line,
            max: MAX_LINE,
        })
    }
}

fn check_key_count(keys: &[Key]) -> Result<(), CommandError> {
    if keys.is_empty() {
        return Err(CommandError::InvalidKey("no keys given".into()));
    }
    if keys.len() > MAX_KEYS {
        return Err(CommandError::InvalidKey(format!(
            "{} keys given; at most {MAX_KEYS} can be pressed in one command",
            keys.len()
        )));
    }
    Ok(())
}

/// Masks the values of the named query parameters.
fn redact_params(target: &str, names: &[&str]) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if names.iter().any(|n| n.eq_ignore_ascii_case(name)) => {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// How the Yealink-style dialects dial.
#[derive(Clone, Copy)]
enum DialForm {
    /// `key=number=N&outgoing_uri=U` (Yealink servlet).
    KeyNumber,
    /// `number=N&outgoing_uri=U` (ConfigManApp.com, both seed documents).
    Number,
}

/// Yealink, Yealink legacy and Fanvil: one path, `key=` commands, Yealink key names.
struct KeyFamily {
    vendor: PhoneVendor,
    path: &'static str,
    dial: DialForm,
    /// How `#` goes inside a dialled number.
    pound_in_number: &'static str,
    /// Whether the Russian seed's `key=F_HANDFREE;2323@1;OK` form (dial on a chosen line) is
    /// known to work. The seed is a Yealink document; Fanvil's says nothing about it.
    line_selection: bool,
    /// Keys for the call-control commands.
    answer: &'static str,
    hangup: &'static str,
    hold: &'static str,
    unhold: &'static str,
    /// Refuse Yealink-only keys (call handles, `CALLEND`, `HOLD`, `F_HANDFREE`), which are not
    /// in Fanvil's key list: a phone answers 200 to an unknown key and does nothing.
    yealink_keys_only: bool,
}

/// Current Yealink firmware. Call control uses the directional keys of the admin guide
/// (`ASW`, `CALLEND`, `HOLD`, `UNHOLD`), which do not depend on what is on screen.
static YEALINK: KeyFamily = KeyFamily {
    vendor: PhoneVendor::Yealink,
    path: "/servlet",
    dial: DialForm::KeyNumber,
    pound_in_number: "$",
    line_selection: true,
    answer: "ASW",
    hangup: "CALLEND",
    hold: "HOLD",
    unhold: "UNHOLD",
    yealink_keys_only: false,
};

/// Older Yealink firmware, as in the Russian seed: ConfigManApp.com, `number=` dialling and
/// the seed's key list, where `OK` answers, `X` ends the call and `F_HOLD` toggles hold.
static YEALINK_LEGACY: KeyFamily = KeyFamily {
    vendor: PhoneVendor::YealinkLegacy,
    path: "/cgi-bin/ConfigManApp.com",
    dial: DialForm::Number,
    pound_in_number: "$",
    line_selection: true,
    answer: "OK",
    hangup: "X",
    hold: "F_HOLD",
    unhold: "F_HOLD",
    yealink_keys_only: false,
};

/// Fanvil, as in the Chinese seed.
static FANVIL: KeyFamily = KeyFamily {
    vendor: PhoneVendor::Fanvil,
    path: "/cgi-bin/ConfigManApp.com",
    dial: DialForm::Number,
    pound_in_number: "%23",
    line_selection: false,
    answer: "OK",
    hangup: "X",
    hold: "F_HOLD",
    unhold: "F_HOLD",
    yealink_keys_only: true,
};

impl KeyFamily {
    fn key_name(&self, key: &Key, style: KeyStyle) -> Result<String, CommandError> {
        if self.yealink_keys_only {
            let yealink_only = matches!(
                key.kind(),
                KeyKind::Call { .. }
                    | KeyKind::Named(NamedKey::CallEnd)
                    | KeyKind::Named(NamedKey::Handfree)
            );
            if yealink_only {
                return Err(unsupported(self.vendor, format!("press key {key}")));
            }
        }
        Ok(key.render(style))
    }

    /// The queries (without path), in order.
    fn queries(
        &self,
        cmd: &PhoneCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<String>, CommandError> {
        let styled = |k: NamedKey| Key::named(k).render(ctx.key_style);
        let query = match cmd {
            PhoneCommand::Keys(keys) => {
                check_key_count(keys)?;
                let names = keys
                    .iter()
                    .map(|k| self.key_name(k, ctx.key_style))
                    .collect::<Result<Vec<_>, _>>()?;
                format!("key={}", names.join(";"))
            }
            PhoneCommand::Dial { number, line } => {
                let number = render_number(&normalize_number(number)?, self.pound_in_number);
                let line = line.map(check_line).transpose()?;
                match line {
                    Some(line) if line != ctx.line => {
                        if !self.line_selection {
                            return Err(unsupported(
                                self.vendor,
                                format!(
                                    "dial on line {line} (only on the configured line {})",
                                    ctx.line
                                ),
                            ));
                        }
                        // The seed's whole-number form: hands-free, the number with `@line`,
                        // then OK. outgoing_uri cannot be used: it names the account of the
                        // configured line only.
                        format!("key=F_HANDFREE;{number}@{line};OK")
                    }
                    _ => {
                        let uri = enc_uri(&ctx.outgoing_uri());
                        match self.dial {
                            DialForm::KeyNumber => {
                                format!("key=number={number}&outgoing_uri={uri}")
                            }
                            DialForm::Number => format!("number={number}&outgoing_uri={uri}"),
                        }
                    }
                }
            }
            PhoneCommand::DndOn => format!("key={}", styled(NamedKey::DndOn)),
            PhoneCommand::DndOff => format!("key={}", styled(NamedKey::DndOff)),
            PhoneCommand::Answer => format!("key={}", self.answer),
            PhoneCommand::Hangup => format!("key={}", self.hangup),
            PhoneCommand::Hold => format!("key={}", self.hold),
            PhoneCommand::Unhold => format!("key={}", self.unhold),
            PhoneCommand::Reboot => format!("key={}", styled(NamedKey::Reboot)),
            PhoneCommand::AutoProvision => format!("key={}", styled(NamedKey::AutoP)),
        };
        Ok(vec![query])
    }
}

impl VendorProfile for KeyFamily {
    fn vendor(&self) -> PhoneVendor {
        self.vendor
    }

    fn http_requests(
        &self,
        cmd: &PhoneCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<String>, CommandError> {
        Ok(self
            .queries(cmd, ctx)?
            .into_iter()
            .map(|q| format!("{}?{q}", self.path))
            .collect())
    }

    /// The same `key=…` text the HTTP request carries after `?` (the phone hands the NOTIFY
    /// body to the same parser: Yealink's guide shows `key=OK` as body, Wazo sends
    /// `key=DNDOn`). Only single `key=` commands qualify; `number=…` dialling (ConfigManApp
    /// dialects) has no documented NOTIFY form.
    fn notify_body(
        &self,
        cmd: &PhoneCommand,
        ctx: &CommandContext,
    ) -> Result<String, CommandError> {
        let mut queries = self.queries(cmd, ctx)?;
        match (queries.len(), queries.first()) {
            (1, Some(q)) if q.starts_with("key=") => Ok(queries.remove(0)),
            _ => Err(unsupported(
                self.vendor,
                format!(
                    "send \"{}\" as SIP NOTIFY (only key=… commands)",
                    cmd.name()
                ),
            )),
        }
    }
}

/// Snom D3xx/D7xx: `/command.htm` (D8xx dropped HTTP commands).
struct Snom;

impl Snom {
    /// Our key → Snom's key list (`phones.md` §2). Keys without an equivalent are refused
    /// rather than guessed: a wrong key could do something else on the phone.
    fn key_name(key: &Key) -> Result<String, CommandError> {
        let refuse = || unsupported(PhoneVendor::Snom, format!("press key {key}"));
        Ok(match key.kind() {
            KeyKind::Named(n) => match n {
                NamedKey::Ok | NamedKey::Enter => "ENTER",
                NamedKey::Speaker | NamedKey::Handfree => "SPEAKER",
                NamedKey::Transfer => "TRANSFER",
                NamedKey::VolumeUp => "VOLUME_UP",
                NamedKey::VolumeDown => "VOLUME_DOWN",
                NamedKey::Mute => "MUTE",
                NamedKey::FHold => "F_HOLD",
                NamedKey::X => "CANCEL",
                NamedKey::Headset => "HEADSET",
                NamedKey::Redial => "REDIAL",
                NamedKey::Up => "UP",
                NamedKey::Down => "DOWN",
                NamedKey::Left => "LEFT",
                NamedKey::Right => "RIGHT",
                NamedKey::CallEnd => "ONHOOK",
                NamedKey::Conference
                | NamedKey::Msg
                | NamedKey::Reboot
                | NamedKey::AutoP
                | NamedKey::DndOn
                | NamedKey::DndOff => return Err(refuse()),
            }
            .to_owned(),
            KeyKind::Digit(d) => d.to_string(),
            KeyKind::Star => "*".to_owned(),
            // Snom's key is `#`; encoded, or it would start a URL fragment.
            KeyKind::Pound => "%23".to_owned(),
            // Snom's P keys are its programmable (DSS) keys; it has no line keys by number.
            KeyKind::Dss(n) => format!("P{n}"),
            KeyKind::Soft(n) => format!("F{n}"),
            KeyKind::Line(_) => return Err(refuse()),
            KeyKind::Call {
                action,
                handle: None,
            } => match action {
                CallAction::Answer => "OFFHOOK",
                CallAction::Cancel => "CANCEL",
                // Snom has one hold key, which toggles.
                CallAction::Hold | CallAction::Unhold => "F_HOLD",
            }
            .to_owned(),
            // Call handles are Yealink's.
            KeyKind::Call {
                handle: Some(_), ..
            } => return Err(refuse()),
        })
    }
}

impl VendorProfile for Snom {
    fn vendor(&self) -> PhoneVendor {
        PhoneVendor::Snom
    }

    fn http_requests(
        &self,
        cmd: &PhoneCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<String>, CommandError> {
        let key = |k: &str| format!("/command.htm?key={k}");
        Ok(vec![match cmd {
            // Snom documents `key=K1;K2` sequences, so one request (under the per-phone lock)
            // rather than one per key.
            PhoneCommand::Keys(keys) => {
                check_key_count(keys)?;
                let names = keys
                    .iter()
                    .map(Snom::key_name)
                    .collect::<Result<Vec<_>, _>>()?;
                key(&names.join(";"))
            }
            PhoneCommand::Dial { number, line } => {
                let number = render_number(&normalize_number(number)?, "%23");
                if let Some(line) = line.map(check_line).transpose()? {
                    if line != ctx.line {
                        return Err(unsupported(
                            PhoneVendor::Snom,
                            format!(
                                "dial on line {line} (only on the configured line {})",
                                ctx.line
                            ),
                        ));
                    }
                }
                format!(
                    "/command.htm?number={number}&outgoing_uri={}",
                    enc_uri(&ctx.outgoing_uri())
                )
            }
            // Snom's only documented DND control is the DND key, a toggle: see retry_safe.
            PhoneCommand::DndOn | PhoneCommand::DndOff => key("DND"),
            PhoneCommand::Answer => key("OFFHOOK"),
            PhoneCommand::Hangup => key("ONHOOK"),
            PhoneCommand::Hold | PhoneCommand::Unhold => key("F_HOLD"),
            PhoneCommand::Reboot => "/advanced_update.htm?reboot=Reboot".to_owned(),
            PhoneCommand::AutoProvision => {
                return Err(unsupported(PhoneVendor::Snom, "trigger auto-provisioning"))
            }
        }])
    }

    fn notify_body(&self, _: &PhoneCommand, _: &CommandContext) -> Result<String, CommandError> {
        Err(unsupported(
            PhoneVendor::Snom,
            "receive commands as SIP NOTIFY (Event: ACTION-URI)",
        ))
    }

    fn retry_safe(&self, cmd: &PhoneCommand) -> bool {
        // DND on/off are a toggle on Snom: repeating one after a lost answer could undo it.
        cmd.is_idempotent() && !matches!(cmd, PhoneCommand::DndOn | PhoneCommand::DndOff)
    }
}

/// Grandstream GXP/GRP: the `cgi-bin/api-*` endpoints with the password as `passcode=`.
struct Grandstream;

impl VendorProfile for Grandstream {
    fn vendor(&self) -> PhoneVendor {
        PhoneVendor::Grandstream
    }

    fn http_requests(
        &self,
        cmd: &PhoneCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<String>, CommandError> {
        let passcode = enc(&ctx.password);
        let operation =
            |op: &str| format!("/cgi-bin/api-phone_operation?passcode={passcode}&cmd={op}");
        Ok(vec![match cmd {
            PhoneCommand::Dial { number, line } => {
                let number = render_number(&normalize_number(number)?, "%23");
                let line = check_line(line.unwrap_or(ctx.line))?;
                // `account` is the 0-based account index (community clients send 0 for the
                // first account).
                format!(
                    "/cgi-bin/api-make_call?passcode={passcode}&phonenumber={number}&account={}",
                    line - 1
                )
            }
            PhoneCommand::Answer => operation("acceptcall"),
            PhoneCommand::Hangup => operation("endcall"),
            PhoneCommand::Hold => operation("holdcall"),
            PhoneCommand::Reboot => {
                format!("/cgi-bin/api-sys_operation?passcode={passcode}&request=REBOOT")
            }
            PhoneCommand::Unhold => {
                return Err(unsupported(PhoneVendor::Grandstream, "resume a held call"))
            }
            PhoneCommand::DndOn | PhoneCommand::DndOff => {
                return Err(unsupported(PhoneVendor::Grandstream, "switch DND"))
            }
            PhoneCommand::Keys(_) => {
                return Err(unsupported(PhoneVendor::Grandstream, "press keys"))
            }
            PhoneCommand::AutoProvision => {
                return Err(unsupported(
                    PhoneVendor::Grandstream,
                    "trigger auto-provisioning",
                ))
            }
        }])
    }

    fn notify_body(&self, _: &PhoneCommand, _: &CommandContext) -> Result<String, CommandError> {
        Err(unsupported(
            PhoneVendor::Grandstream,
            "receive commands as SIP NOTIFY (Event: ACTION-URI)",
        ))
    }

    fn redact(&self, target: &str) -> String {
        redact_params(target, &["passcode"])
    }
}

/// Htek: `/Phone_ActionURL&…` — parameters joined to the path with `&` and no `?`, exactly as
/// Htek documents it. `Command=1` dials, `2` hangs up, `3` presses one key.
struct Htek;

impl Htek {
    /// Htek takes Yealink-style key names; the Yealink-only ones and the function "keys"
    /// (Reboot, AutoP, DND) are not known to exist there.
    fn key_name(key: &Key) -> Result<String, CommandError> {
        match key.kind() {
            KeyKind::Call { .. }
            | KeyKind::Named(
                NamedKey::CallEnd
                | NamedKey::Handfree
                | NamedKey::Reboot
                | NamedKey::AutoP
                | NamedKey::DndOn
                | NamedKey::DndOff,
            ) => Err(unsupported(PhoneVendor::Htek, format!("press key {key}"))),
            _ => Ok(key.render(KeyStyle::Plain)),
        }
    }
}

impl VendorProfile for Htek {
    fn vendor(&self) -> PhoneVendor {
        PhoneVendor::Htek
    }

    fn http_requests(
        &self,
        cmd: &PhoneCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<String>, CommandError> {
        let key = |k: &str| format!("/Phone_ActionURL&Command=3&key={k}");
        Ok(match cmd {
            // One key per request: Htek documents no sequence syntax. The client sends them
            // in order under the phone's lock.
            PhoneCommand::Keys(keys) => {
                check_key_count(keys)?;
                keys.iter()
                    .map(|k| Htek::key_name(k).map(|n| key(&n)))
                    .collect::<Result<Vec<_>, _>>()?
            }
            PhoneCommand::Dial { number, line } => {
                let number = render_number(&normalize_number(number)?, "%23");
                let line = check_line(line.unwrap_or(ctx.line))?;
                // `Account` is the 1-based account number.
                vec![format!(
                    "/Phone_ActionURL&Command=1&Number={number}&Account={line}"
                )]
            }
            PhoneCommand::Hangup => vec!["/Phone_ActionURL&Command=2".to_owned()],
            PhoneCommand::Answer => vec![key("OK")],
            PhoneCommand::DndOn | PhoneCommand::DndOff => {
                return Err(unsupported(PhoneVendor::Htek, "switch DND"))
            }
            PhoneCommand::Hold | PhoneCommand::Unhold => {
                return Err(unsupported(PhoneVendor::Htek, "hold or resume calls"))
            }
            PhoneCommand::Reboot => return Err(unsupported(PhoneVendor::Htek, "reboot")),
            PhoneCommand::AutoProvision => {
                return Err(unsupported(PhoneVendor::Htek, "trigger auto-provisioning"))
            }
        })
    }

    fn notify_body(&self, _: &PhoneCommand, _: &CommandContext) -> Result<String, CommandError> {
        Err(unsupported(
            PhoneVendor::Htek,
            "receive commands as SIP NOTIFY (Event: ACTION-URI)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::number::NumberError;

    fn ctx() -> CommandContext {
        CommandContext {
            extension: "101".into(),
            account: None,
            line: 1,
            pbx_host: "10.0.0.1".into(),
            password: "pa&ss word".into(),
            key_style: KeyStyle::Plain,
        }
    }

    fn keys(k: &[&str]) -> PhoneCommand {
        PhoneCommand::keys(k).unwrap()
    }

    fn dial(n: &str, line: Option<u8>) -> PhoneCommand {
        PhoneCommand::Dial {
            number: n.into(),
            line,
        }
    }

    fn targets(v: PhoneVendor, cmd: &PhoneCommand, ctx: &CommandContext) -> Vec<String> {
        profile(v)
            .http_requests(cmd, ctx)
            .unwrap_or_else(|e| panic!("{v:?} {cmd:?}: {e}"))
    }

    #[test]
    fn exact_targets_per_vendor() {
        use PhoneVendor::*;
        let c = ctx();
        let fprefix = CommandContext {
            key_style: KeyStyle::FPrefixUpper,
            ..ctx()
        };
        let with_account = CommandContext {
            account: Some("8532@192.168.1.199".into()),
            ..ctx()
        };
        let table: Vec<(PhoneVendor, PhoneCommand, &CommandContext, Vec<&str>)> = vec![
            // Yealink: key=number=, +, separators, # → $, line selection.
            (
                Yealink,
                dial("+1 (555) 010-0100", None),
                &c,
                vec!["/servlet?key=number=%2B15550100100&outgoing_uri=101@10.0.0.1"],
            ),
            (
                Yealink,
                dial("12#34", None),
                &c,
                vec!["/servlet?key=number=12$34&outgoing_uri=101@10.0.0.1"],
            ),
            (
                Yealink,
                dial("*78", Some(1)),
                &c,
                vec!["/servlet?key=number=*78&outgoing_uri=101@10.0.0.1"],
            ),
            (
                Yealink,
                dial("[23] 23", Some(2)),
                &c,
                vec!["/servlet?key=F_HANDFREE;2323@2;OK"],
            ),
            (
                Yealink,
                dial("+7 495 1#2", Some(3)),
                &c,
                vec!["/servlet?key=F_HANDFREE;%2B74951$2@3;OK"],
            ),
            (Yealink, PhoneCommand::DndOn, &c, vec!["/servlet?key=DNDOn"]),
            (Yealink, PhoneCommand::DndOff, &c, vec!["/servlet?key=DNDOff"]),
            (Yealink, PhoneCommand::DndOn, &fprefix, vec!["/servlet?key=F_DNDON"]),
            (Yealink, PhoneCommand::Reboot, &c, vec!["/servlet?key=Reboot"]),
            (Yealink, PhoneCommand::Reboot, &fprefix, vec!["/servlet?key=F_REBOOT"]),
            (
                Yealink,
                PhoneCommand::AutoProvision,
                &c,
                vec!["/servlet?key=AutoP"],
            ),
            (
                Yealink,
                keys(&["F1", "f3", "down", "OK"]),
                &c,
                vec!["/servlet?key=F1;F3;DOWN;OK"],
            ),
            (
                Yealink,
                keys(&["asw:33093", "MUTE"]),
                &c,
                vec!["/servlet?key=ASW:33093;MUTE"],
            ),
            (Yealink, keys(&["1", "#", "*"]), &c, vec!["/servlet?key=1;POUND;*"]),
            (Yealink, PhoneCommand::Answer, &c, vec!["/servlet?key=ASW"]),
            (Yealink, PhoneCommand::Hangup, &c, vec!["/servlet?key=CALLEND"]),
            (Yealink, PhoneCommand::Hold, &c, vec!["/servlet?key=HOLD"]),
            (Yealink, PhoneCommand::Unhold, &c, vec!["/servlet?key=UNHOLD"]),
            (
                Yealink,
                dial("2", None),
                &with_account,
                vec!["/servlet?key=number=2&outgoing_uri=8532@192.168.1.199"],
            ),
            // Yealink legacy: ConfigManApp.com, number= without key=, $ for #.
            (
                YealinkLegacy,
                dial("+7 (495) 123-45-67", None),
                &c,
                vec!["/cgi-bin/ConfigManApp.com?number=%2B74951234567&outgoing_uri=101@10.0.0.1"],
            ),
            (
                YealinkLegacy,
                dial("12#34", None),
                &c,
                vec!["/cgi-bin/ConfigManApp.com?number=12$34&outgoing_uri=101@10.0.0.1"],
            ),
            (
                YealinkLegacy,
                dial("2323", Some(2)),
                &c,
                vec!["/cgi-bin/ConfigManApp.com?key=F_HANDFREE;2323@2;OK"],
            ),
            (
                YealinkLegacy,
                PhoneCommand::DndOn,
                &c,
                vec!["/cgi-bin/ConfigManApp.com?key=DNDOn"],
            ),
            (
                YealinkLegacy,
                PhoneCommand::Reboot,
                &fprefix,
                vec!["/cgi-bin/ConfigManApp.com?key=F_REBOOT"],
            ),
            (
                YealinkLegacy,
                PhoneCommand::Hangup,
                &c,
                vec!["/cgi-bin/ConfigManApp.com?key=X"],
            ),
            // Fanvil: the Chinese seed's example, literally.
            (
                Fanvil,
                dial("8530", None),
                &with_account,
                vec!["/cgi-bin/ConfigManApp.com?number=8530&outgoing_uri=8532@192.168.1.199"],
            ),
            (
                Fanvil,
                dial("12#34", None),
                &c,
                vec!["/cgi-bin/ConfigManApp.com?number=12%2334&outgoing_uri=101@10.0.0.1"],
            ),
            (
                Fanvil,
                PhoneCommand::DndOff,
                &c,
                vec!["/cgi-bin/ConfigManApp.com?key=DNDOff"],
            ),
            (
                Fanvil,
                keys(&["speaker", "5", "enter"]),
                &c,
                vec!["/cgi-bin/ConfigManApp.com?key=SPEAKER;5;ENTER"],
            ),
            (
                Fanvil,
                PhoneCommand::Answer,
                &c,
                vec!["/cgi-bin/ConfigManApp.com?key=OK"],
            ),
            // Snom.
            (
                Snom,
                dial("+1 555-0100", None),
                &c,
                vec!["/command.htm?number=%2B15550100&outgoing_uri=101@10.0.0.1"],
            ),
            (
                Snom,
                dial("*7#", Some(1)),
                &c,
                vec!["/command.htm?number=*7%23&outgoing_uri=101@10.0.0.1"],
            ),
            (Snom, PhoneCommand::DndOn, &c, vec!["/command.htm?key=DND"]),
            (Snom, PhoneCommand::DndOff, &c, vec!["/command.htm?key=DND"]),
            (
                Snom,
                keys(&["OK", "#", "D3", "rd", "X"]),
                &c,
                vec!["/command.htm?key=ENTER;%23;P3;REDIAL;CANCEL"],
            ),
            (Snom, PhoneCommand::Hangup, &c, vec!["/command.htm?key=ONHOOK"]),
            (
                Snom,
                PhoneCommand::Reboot,
                &c,
                vec!["/advanced_update.htm?reboot=Reboot"],
            ),
            // Grandstream: passcode encoded, account 0-based.
            (
                Grandstream,
                dial("+1 555 0100", None),
                &c,
                vec!["/cgi-bin/api-make_call?passcode=pa%26ss%20word&phonenumber=%2B15550100&account=0"],
            ),
            (
                Grandstream,
                dial("12#", Some(2)),
                &c,
                vec!["/cgi-bin/api-make_call?passcode=pa%26ss%20word&phonenumber=12%23&account=1"],
            ),
            (
                Grandstream,
                PhoneCommand::Hangup,
                &c,
                vec!["/cgi-bin/api-phone_operation?passcode=pa%26ss%20word&cmd=endcall"],
            ),
            (
                Grandstream,
                PhoneCommand::Answer,
                &c,
                vec!["/cgi-bin/api-phone_operation?passcode=pa%26ss%20word&cmd=acceptcall"],
            ),
            (
                Grandstream,
                PhoneCommand::Hold,
                &c,
                vec!["/cgi-bin/api-phone_operation?passcode=pa%26ss%20word&cmd=holdcall"],
            ),
            (
                Grandstream,
                PhoneCommand::Reboot,
                &c,
                vec!["/cgi-bin/api-sys_operation?passcode=pa%26ss%20word&request=REBOOT"],
            ),
            // Htek.
            (
                Htek,
                dial("206", None),
                &c,
                vec!["/Phone_ActionURL&Command=1&Number=206&Account=1"],
            ),
            (
                Htek,
                dial("+49 (30) 1#", Some(2)),
                &c,
                vec!["/Phone_ActionURL&Command=1&Number=%2B49301%23&Account=2"],
            ),
            (Htek, PhoneCommand::Hangup, &c, vec!["/Phone_ActionURL&Command=2"]),
            (
                Htek,
                keys(&["l1", "2", "ok"]),
                &c,
                vec![
                    "/Phone_ActionURL&Command=3&key=L1",
                    "/Phone_ActionURL&Command=3&key=2",
                    "/Phone_ActionURL&Command=3&key=OK",
                ],
            ),
        ];
        for (vendor, cmd, ctx, want) in table {
            assert_eq!(targets(vendor, &cmd, ctx), want, "{vendor:?} {cmd:?}");
        }
    }

    #[test]
    fn refusals() {
        use PhoneVendor::*;
        let c = ctx();
        let cases: Vec<(PhoneVendor, PhoneCommand, &str)> = vec![
            (Yealink, dial("555-CALL", None), "invalid_number"),
            (Yealink, dial("1;Reboot", None), "invalid_number"),
            (
                Yealink,
                dial("1&outgoing_uri=666@evil", None),
                "invalid_number",
            ),
            (Snom, dial("1 2+3", None), "invalid_number"),
            (Grandstream, dial("", None), "invalid_number"),
            (Yealink, dial("1", Some(0)), "invalid_line"),
            (Yealink, dial("1", Some(17)), "invalid_line"),
            (Yealink, PhoneCommand::Keys(vec![]), "invalid_key"),
            (Fanvil, dial("1", Some(2)), "unsupported"),
            (Snom, dial("1", Some(2)), "unsupported"),
            (Fanvil, keys(&["ASW:1"]), "unsupported"),
            (Fanvil, keys(&["CALLEND"]), "unsupported"),
            (Grandstream, PhoneCommand::DndOn, "unsupported"),
            (Grandstream, PhoneCommand::Unhold, "unsupported"),
            (Grandstream, keys(&["1"]), "unsupported"),
            (Grandstream, PhoneCommand::AutoProvision, "unsupported"),
            (Snom, keys(&["L1"]), "unsupported"),
            (Snom, keys(&["MSG"]), "unsupported"),
            (Snom, keys(&["DNDOn"]), "unsupported"),
            (Snom, keys(&["ASW:12"]), "unsupported"),
            (Snom, PhoneCommand::AutoProvision, "unsupported"),
            (Htek, PhoneCommand::DndOff, "unsupported"),
            (Htek, keys(&["Reboot"]), "unsupported"),
            (Htek, PhoneCommand::Hold, "unsupported"),
        ];
        for (vendor, cmd, code) in cases {
            let err = profile(vendor).http_requests(&cmd, &c).unwrap_err();
            assert_eq!(err.code(), code, "{vendor:?} {cmd:?}: {err}");
        }
        assert_eq!(
            profile(Yealink).http_requests(&dial("555a", None), &c),
            Err(CommandError::InvalidNumber(NumberError::InvalidChar {
                ch: 'a',
                position: 4
            }))
        );
    }

    #[test]
    fn hostile_config_values_are_encoded_not_spliced() {
        let c = CommandContext {
            account: Some("10&key=Reboot;x".into()),
            pbx_host: "pbx example#".into(),
            ..ctx()
        };
        assert_eq!(
            targets(PhoneVendor::Yealink, &dial("1", None), &c),
            vec!["/servlet?key=number=1&outgoing_uri=10%26key%3DReboot%3Bx@pbx%20example%23"]
        );
    }

    #[test]
    fn notify_bodies() {
        let c = ctx();
        let body = |v: PhoneVendor, cmd: PhoneCommand| profile(v).notify_body(&cmd, &c);
        assert_eq!(
            body(PhoneVendor::Yealink, PhoneCommand::DndOn).unwrap(),
            "key=DNDOn"
        );
        assert_eq!(
            body(PhoneVendor::Fanvil, PhoneCommand::DndOff).unwrap(),
            "key=DNDOff"
        );
        assert_eq!(
            body(PhoneVendor::Fanvil, PhoneCommand::Hold).unwrap(),
            "key=F_HOLD"
        );
        assert_eq!(
            body(PhoneVendor::YealinkLegacy, keys(&["OK"])).unwrap(),
            "key=OK"
        );
        assert_eq!(
            body(PhoneVendor::Yealink, dial("+1 555", None)).unwrap(),
            "key=number=%2B1555&outgoing_uri=101@10.0.0.1"
        );
        for (v, cmd) in [
            (PhoneVendor::Fanvil, dial("1", None)),
            (PhoneVendor::YealinkLegacy, dial("1", None)),
            (PhoneVendor::Snom, PhoneCommand::DndOn),
            (PhoneVendor::Grandstream, PhoneCommand::Hangup),
            (PhoneVendor::Htek, PhoneCommand::Hangup),
        ] {
            assert_eq!(
                body(v, cmd.clone()).unwrap_err().code(),
                "unsupported",
                "{v:?} {cmd:?}"
            );
        }
    }

    #[test]
    fn structural_rules_hold_for_every_target() {
        let c = ctx();
        let cmds = [
            dial("+1 555#", None),
            dial("1", Some(2)),
            PhoneCommand::DndOn,
            PhoneCommand::DndOff,
            PhoneCommand::Answer,
            PhoneCommand::Hangup,
            PhoneCommand::Hold,
            PhoneCommand::Unhold,
            PhoneCommand::Reboot,
            PhoneCommand::AutoProvision,
            keys(&["1", "OK"]),
        ];
        for v in ALL_VENDORS {
            for cmd in &cmds {
                let Ok(targets) = profile(v).http_requests(cmd, &c) else {
                    continue;
                };
                for t in targets {
                    assert!(t.starts_with('/'), "{t}");
                    assert!(!t.ends_with('&') && !t.ends_with('?'), "{t}");
                    assert!(
                        !t.contains('+') && !t.contains('#') && !t.contains(' '),
                        "{t}"
                    );
                    if let Some((_, q)) = t.split_once('?') {
                        if q.contains("key=") && matches!(v, PhoneVendor::Yealink) {
                            assert!(q.starts_with("key="), "key= must come first: {t}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn retry_safety_and_redaction() {
        assert!(profile(PhoneVendor::Yealink).retry_safe(&PhoneCommand::DndOn));
        assert!(!profile(PhoneVendor::Snom).retry_safe(&PhoneCommand::DndOn));
        assert!(!profile(PhoneVendor::Yealink).retry_safe(&PhoneCommand::Reboot));
        assert_eq!(
            profile(PhoneVendor::Grandstream)
                .redact("/cgi-bin/api-make_call?passcode=pa%26ss&phonenumber=1&account=0"),
            "/cgi-bin/api-make_call?passcode=***&phonenumber=1&account=0"
        );
        let dbg = format!("{:?}", ctx());
        assert!(!dbg.contains("pa&ss"), "{dbg}");
    }

    #[test]
    fn outgoing_uri_rules() {
        let mut c = ctx();
        assert_eq!(c.outgoing_uri(), "101@10.0.0.1");
        c.account = Some("acc7".into());
        assert_eq!(c.outgoing_uri(), "acc7@10.0.0.1");
        c.account = Some("acc7@pbx.example".into());
        assert_eq!(c.outgoing_uri(), "acc7@pbx.example");
        c.account = Some(String::new());
        assert_eq!(c.outgoing_uri(), "101@10.0.0.1");
    }
}
