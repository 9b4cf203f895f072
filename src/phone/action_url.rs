//! Phone → bridge callbacks ("Action URL"), parsed into typed events. Pure code, no I/O.
//!
//! A desk phone does `GET http://bridge/action-url/<event>?<query>` whenever something happens
//! on it. The administrator typed both the event part of the path and the query into the
//! phone, and the phone substituted its variables (`$mac`, `$remote`, `$call_id`, …) into the
//! query before sending it. [`parse_callback`] turns that into a [`PhoneCallback`].
//!
//! # Why it is lenient
//! A phone does not retry and does not read our answer, so a callback we reject is an event
//! lost for good. The raw request target is already in the journal; this parser therefore
//! never fails. It keeps what it can, and writes what was wrong into
//! [`PhoneCallback::problems`] so that it can be counted and logged. What phones actually send
//! (the product brief's vendor research, `phones.md` §7):
//!
//! - **Not form-urlencoding.** Phones substitute E.164 numbers verbatim, so `+` is a plus,
//!   never a space. `%2B` is a plus too, `%20` a space. An invalid escape (`%zz`, a trailing
//!   `%`) is kept literally.
//! - **Raw spaces.** Grandstream puts display names into the request line unencoded
//!   (`display_remote=John Doe`); the HTTP layer repairs the line and hands us the bytes, and a
//!   space is simply part of the value.
//! - **Bytes that are not UTF-8** after decoding are replaced (U+FFFD).
//! - **Unfilled variables.** A variable the phone could not fill for this event arrives
//!   literally: `remote=$remote`, `call_id=$call-id`, `x=$sip_header(X-Foo)`. A value that is
//!   exactly `$` + a variable name (known or not) is treated as absent, like an empty value.
//!   This is normal, not a problem.
//! - **Duplicate parameters** (the same field twice, under any of its spellings): the first
//!   *filled* value wins; every repetition is noted as a problem.
//! - **MAC addresses** come as `00:15:65:AA:BB:CC`, `00-15-65-aa-bb-cc`, `0015.65aa.bbcc` or
//!   `001565AABBCC`; [`normalize_mac`] makes them `001565aabbcc`. An unrecognisable MAC is a
//!   problem, and its raw value is kept in `extra`.
//! - Work is linear in the size of the query (a 64 KiB query is fine), and the problem list is
//!   capped at [`MAX_PROBLEMS`] entries plus one line counting the rest.
//!
//! # Event names
//! [`ActionUrlEvent::from_name`] accepts every vendor's spelling, case-insensitively, ignoring
//! `_`, `-`, spaces and punctuation: Yealink configuration keys (`incoming_call`,
//! `action_url.incoming_call`, older `open_dnd`, `log_on`), Yealink Web-UI names
//! (`AUIncomingCall`), Snom settings (`action_incoming_url`, `incoming`, `connected`,
//! `log_on`), Fanvil and the seed documents' labels (`Activate DND`, `Established`), Grandstream
//! `ons.actionUrl.*` aliases, slugs and P-codes (`P8310`), Gigaset `System.Events.*` names. A
//! trailing `.xml`/`.php`/`.htm`… is ignored, because the vendor examples use
//! `http://server/incoming.xml?...` as the URL. A name we do not know is never an error: it
//! becomes [`ActionUrlEvent::Other`] with the name as received.
//!
//! Decisions where the documents disagree:
//! - **Log On / Log Off** are registration: the Russian seed says "account registered /
//!   unregistered", Yealink firmware stores `action_url.registered` under the Web-UI key
//!   `LogOn`, and Snom's `action_log_on_url` fires when an identity logs on (registers). They
//!   map to [`Registered`](ActionUrlEvent::Registered) /
//!   [`Unregistered`](ActionUrlEvent::Unregistered), not to variants of their own.
//! - **Blind / attended transfer**: the Russian seed's descriptions are swapped ("Blind
//!   transfer call: перевод с сопровождением"). The English event name wins.
//! - **Off-hook / On-hook**: the Chinese seed's descriptions are swapped ("Off-hook: 放下手柄",
//!   put the handset down). The English event name wins: off-hook is the handset lifted.
//! - **Forwarding without a mode**: Snom's `redirection_on/off` and Grandstream's
//!   `openForward/closedForward` do not say which forward (always, busy, no answer) changed, so
//!   they are [`ForwardOn`](ActionUrlEvent::ForwardOn) /
//!   [`ForwardOff`](ActionUrlEvent::ForwardOff) rather than a guess.
//! - **Fanvil "New Call"** is the outgoing-call event: the Chinese seed configures it with
//!   `outgoing.xml` and describes it as "a new outgoing call".
//! - **Yealink `held` / `unheld`** (Web UI `AURemoteHold` / `AURemoteUnHold`) are the remote
//!   party holding us, distinct from our own `hold` / `unhold`.
//! - Yealink's `AURemoteIP` (`action_url.report_server`) and `AUUCServer`
//!   (`action_url.ume_server`) are server settings, not events; they stay `Other`.
//!
//! # Query parameter names
//! The parameter *names* are what the administrator typed into the phone. The provisioning we
//! generate uses the canonical names below; administrators and vendor examples vary, so every
//! spelling in the table is accepted, case-insensitively and ignoring `_` and `-`
//! (`call_id` = `call-id` = `callid` = `callID`).
//!
//! | field            | accepted names                                 | vendor variables            |
//! |------------------|------------------------------------------------|-----------------------------|
//! | `mac`            | `mac`, `mac_address`                           | `$mac`                      |
//! | `ip`             | `ip`, `phone_ip`, `local_ip`, `ip_address`     | `$ip`, `$phone_ip`, `$local_ip` |
//! | `model`          | `model`, `product`                             | `$model`, `$product`        |
//! | `firmware`       | `firmware`, `program_version`, `fw`, `firmware_version` | `$firmware`, `$program_version` |
//! | `active_url`     | `active_url`                                   | `$active_url`               |
//! | `active_user`    | `active_user`                                  | `$active_user`              |
//! | `active_host`    | `active_host`                                  | `$active_host`              |
//! | `local`          | `local`                                        | `$local`                    |
//! | `remote`         | `remote`                                       | `$remote`                   |
//! | `display_local`  | `display_local`                                | `$display_local`            |
//! | `display_remote` | `display_remote`                               | `$display_remote`           |
//! | `call_id`        | `call_id`, `call-id`, `callid`, `callID`       | `$call_id`, `$call-id`      |
//! | `caller_id`      | `callerID`, `caller_id`                        | `$callerID` (Yealink V84)   |
//! | `called_number`  | `calledNumber`, `called_number`                | `$calledNumber` (Yealink V84) |
//! | `duration`       | `duration`                                     | `$duration`                 |
//! | `call_direction` | `call_direction`, `callDirection`, `calldirection` | `$callDirection`, `$calldirection` |
//!
//! Everything else lands in [`PhoneCallback::extra`], in order, by design: these are rarer or
//! vendor-specific and nothing correlates on them yet. Among them: Grandstream
//! `$hardware_version`, `$language`; Snom `$csta_id`, `$active_key`, `$nr_ongoing_calls`,
//! `$context_url`, `$cancel_reason`, `$longpress_key`, `$expansion_module`,
//! `$sip_header(NAME)` and any setting name (`$user_name1`); Yealink V84 `$exp_number`,
//! `$ehs_number`, `$udisk_number`, `$usbheadset_number`, `$wifi_number`, `$bluetooth_number`,
//! `$vpn_ip`, `$cfg_all`, `$cfg_local`.
//!
//! What the `call_id` field means depends on the vendor, not on the parameter name: Yealink
//! and Fanvil send a phone-side call handle (`33093`, usable as `key=ASW:33093`), Snom and
//! Grandstream the SIP Call-ID. Correlation has to know the phone's vendor to use it.
//! `local` and `remote` are kept as sent (a number or a SIP URI; `+` kept);
//! [`number_of`] extracts the user part for matching.

use serde::Serialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

/// At most this many problems are listed per callback; one more line counts the rest.
pub const MAX_PROBLEMS: usize = 32;

/// Longest piece of input quoted in a problem message, in characters.
const SNIPPET_CHARS: usize = 40;

/// A phone event, typed. Never a rejection: unknown names become [`Other`](Self::Other).
///
/// Serialises as its canonical snake_case name ([`as_str`](Self::as_str)); `Other` as the
/// name it was received under.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionUrlEvent {
    /// The phone finished booting (Yealink `setup_completed`, Snom `setup`, Grandstream
    /// "Booting Completed").
    SetupCompleted,
    /// An account registered (also "Log On").
    Registered,
    /// An account unregistered (also "Log Off", Grandstream "Sign Off").
    Unregistered,
    RegisterFailed,
    /// Handset lifted.
    OffHook,
    /// Handset put down.
    OnHook,
    IncomingCall,
    OutgoingCall,
    /// Call answered, media flowing (Snom `connected`).
    CallEstablished,
    /// Call ended (Snom `disconnected`).
    CallTerminated,
    DndOn,
    DndOff,
    AlwaysForwardOn,
    AlwaysForwardOff,
    BusyForwardOn,
    BusyForwardOff,
    NoAnswerForwardOn,
    NoAnswerForwardOff,
    /// Call forwarding switched on, mode not said (Snom `redirection_on`, Grandstream
    /// `openForward`).
    ForwardOn,
    /// Call forwarding switched off, mode not said.
    ForwardOff,
    /// A transfer, kind not said (Yealink `transfer_call`, Snom `transfer`).
    Transfer,
    BlindTransfer,
    AttendedTransfer,
    /// This phone received an attended transfer (Snom `received_attended_transfer`).
    ReceivedAttendedTransfer,
    TransferFinished,
    TransferFailed,
    /// We put the call on hold.
    Hold,
    /// We resumed the call (Grandstream "Resume Call").
    Unhold,
    /// The remote party put us on hold (Yealink `held`, Web UI `AURemoteHold`).
    Held,
    /// The remote party resumed (Yealink `unheld`).
    Unheld,
    Mute,
    Unmute,
    MissedCall,
    IpChange,
    /// Yealink `vpn_ip` (the VPN address is known or changed).
    VpnIp,
    IdleToBusy,
    BusyToIdle,
    RejectIncomingCall,
    /// A second incoming call was answered (Yealink `answer_new_incoming_call`).
    AnswerNewIncomingCall,
    ForwardIncomingCall,
    /// Auto-provisioning finished (Yealink `setup_autop_finish`).
    AutoProvisionFinished,
    CallWaitingOn,
    CallWaitingOff,
    /// Switched to the headset.
    Headset,
    /// Switched to hands-free (Yealink `handfree`).
    Handsfree,
    /// The user cancelled an outgoing call while it was ringing.
    CancelCallout,
    /// The outgoing call was rejected (busy).
    RemoteBusy,
    /// The remote side cancelled an incoming call while it was ringing.
    CallRemoteCanceled,
    /// A peripheral was plugged or unplugged (Yealink V84+).
    PeripheralInformation,
    /// Call information changed (Yealink `custom.action_url.call_info_update`).
    CallInfoUpdate,
    /// The call was replaced, e.g. by an attended transfer (Yealink
    /// `custom.action_url.call_by_replaced`).
    CallReplaced,
    /// The remote party transferred the call (Yealink
    /// `custom.action_url.call_transfered_by_remote`).
    TransferredByRemote,
    /// Grandstream `openSyslog`.
    SyslogOn,
    /// Grandstream `closedSyslog`.
    SyslogOff,
    /// Any other name, exactly as received.
    #[serde(untagged)]
    Other(String),
}

impl Default for ActionUrlEvent {
    fn default() -> Self {
        ActionUrlEvent::Other(String::new())
    }
}

impl fmt::Display for ActionUrlEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every typed variant (everything but `Other`), in declaration order.
static KNOWN: [ActionUrlEvent; 54] = {
    use ActionUrlEvent::*;
    [
        SetupCompleted,
        Registered,
        Unregistered,
        RegisterFailed,
        OffHook,
        OnHook,
        IncomingCall,
        OutgoingCall,
        CallEstablished,
        CallTerminated,
        DndOn,
        DndOff,
        AlwaysForwardOn,
        AlwaysForwardOff,
        BusyForwardOn,
        BusyForwardOff,
        NoAnswerForwardOn,
        NoAnswerForwardOff,
        ForwardOn,
        ForwardOff,
        Transfer,
        BlindTransfer,
        AttendedTransfer,
        ReceivedAttendedTransfer,
        TransferFinished,
        TransferFailed,
        Hold,
        Unhold,
        Held,
        Unheld,
        Mute,
        Unmute,
        MissedCall,
        IpChange,
        VpnIp,
        IdleToBusy,
        BusyToIdle,
        RejectIncomingCall,
        AnswerNewIncomingCall,
        ForwardIncomingCall,
        AutoProvisionFinished,
        CallWaitingOn,
        CallWaitingOff,
        Headset,
        Handsfree,
        CancelCallout,
        RemoteBusy,
        CallRemoteCanceled,
        PeripheralInformation,
        CallInfoUpdate,
        CallReplaced,
        TransferredByRemote,
        SyslogOn,
        SyslogOff,
    ]
};

impl ActionUrlEvent {
    /// Every typed event (not `Other`), e.g. to generate provisioning for all of them.
    pub fn known() -> &'static [ActionUrlEvent] {
        &KNOWN
    }

    /// The event for a name in any vendor's spelling; case-insensitive; never fails.
    ///
    /// Ignores case, `_`, `-`, spaces and punctuation; takes the last `/`- and `.`-separated
    /// segment (`action_url.incoming_call`, `ons.actionUrl.incomingCall`,
    /// `System.Events.IncomingCall`); drops a trailing `?…` and a file extension (`.xml`,
    /// `.php`, `.htm`, …); then tries the name as is, without a Yealink Web-UI `AU` prefix,
    /// and without Snom's `action_` … `_url` wrapping. Unknown names become `Other(name)`.
    pub fn from_name(name: &str) -> ActionUrlEvent {
        match lookup_event(name) {
            Some(e) => e.clone(),
            None => ActionUrlEvent::Other(name.to_string()),
        }
    }

    /// The canonical snake_case name; `Other` keeps the name it was received under.
    pub fn as_str(&self) -> &str {
        use ActionUrlEvent::*;
        match self {
            SetupCompleted => "setup_completed",
            Registered => "registered",
            Unregistered => "unregistered",
            RegisterFailed => "register_failed",
            OffHook => "off_hook",
            OnHook => "on_hook",
            IncomingCall => "incoming_call",
            OutgoingCall => "outgoing_call",
            CallEstablished => "call_established",
            CallTerminated => "call_terminated",
            DndOn => "dnd_on",
            DndOff => "dnd_off",
            AlwaysForwardOn => "always_forward_on",
            AlwaysForwardOff => "always_forward_off",
            BusyForwardOn => "busy_forward_on",
            BusyForwardOff => "busy_forward_off",
            NoAnswerForwardOn => "no_answer_forward_on",
            NoAnswerForwardOff => "no_answer_forward_off",
            ForwardOn => "forward_on",
            ForwardOff => "forward_off",
            Transfer => "transfer",
            BlindTransfer => "blind_transfer",
            AttendedTransfer => "attended_transfer",
            ReceivedAttendedTransfer => "received_attended_transfer",
            TransferFinished => "transfer_finished",
            TransferFailed => "transfer_failed",
            Hold => "hold",
            Unhold => "unhold",
            Held => "held",
            Unheld => "unheld",
            Mute => "mute",
            Unmute => "unmute",
            MissedCall => "missed_call",
            IpChange => "ip_change",
            VpnIp => "vpn_ip",
            IdleToBusy => "idle_to_busy",
            BusyToIdle => "busy_to_idle",
            RejectIncomingCall => "reject_incoming_call",
            AnswerNewIncomingCall => "answer_new_incoming_call",
            ForwardIncomingCall => "forward_incoming_call",
            AutoProvisionFinished => "auto_provision_finished",
            CallWaitingOn => "call_waiting_on",
            CallWaitingOff => "call_waiting_off",
            Headset => "headset",
            Handsfree => "handsfree",
            CancelCallout => "cancel_callout",
            RemoteBusy => "remote_busy",
            CallRemoteCanceled => "call_remote_canceled",
            PeripheralInformation => "peripheral_information",
            CallInfoUpdate => "call_info_update",
            CallReplaced => "call_replaced",
            TransferredByRemote => "transferred_by_remote",
            SyslogOn => "syslog_on",
            SyslogOff => "syslog_off",
            Other(name) => name,
        }
    }

    /// Events about one call: the ones worth correlating with the PBX's view of calls.
    ///
    /// Call lifecycle, transfers, hold, mute (only possible during a call) and the idle/busy
    /// transitions that bracket a call. Not: hook and audio-device changes (a handset can be
    /// lifted without a call), settings toggles (DND, forwards, call waiting), registration,
    /// device events, and `Other`.
    pub fn is_call_event(&self) -> bool {
        use ActionUrlEvent::*;
        match self {
            IncomingCall
            | OutgoingCall
            | CallEstablished
            | CallTerminated
            | Transfer
            | BlindTransfer
            | AttendedTransfer
            | ReceivedAttendedTransfer
            | TransferFinished
            | TransferFailed
            | Hold
            | Unhold
            | Held
            | Unheld
            | Mute
            | Unmute
            | MissedCall
            | IdleToBusy
            | BusyToIdle
            | RejectIncomingCall
            | AnswerNewIncomingCall
            | ForwardIncomingCall
            | CancelCallout
            | RemoteBusy
            | CallRemoteCanceled
            | CallInfoUpdate
            | CallReplaced
            | TransferredByRemote => true,
            SetupCompleted
            | Registered
            | Unregistered
            | RegisterFailed
            | OffHook
            | OnHook
            | DndOn
            | DndOff
            | AlwaysForwardOn
            | AlwaysForwardOff
            | BusyForwardOn
            | BusyForwardOff
            | NoAnswerForwardOn
            | NoAnswerForwardOff
            | ForwardOn
            | ForwardOff
            | IpChange
            | VpnIp
            | AutoProvisionFinished
            | CallWaitingOn
            | CallWaitingOff
            | Headset
            | Handsfree
            | PeripheralInformation
            | SyslogOn
            | SyslogOff
            | Other(_) => false,
        }
    }

    /// Other spellings of this event, already squashed (lowercase alphanumerics only). The
    /// squashed canonical name is always accepted too. Sources in the comments.
    fn aliases(&self) -> &'static [&'static str] {
        use ActionUrlEvent::*;
        // Y = Yealink config keys / Web UI (phones.md §1.4, firmware config header),
        // R = Russian seed, C = Chinese (Fanvil) seed, S = Snom (phones.md §2),
        // G = Grandstream (phones.md §4: guide names, slugs, v2 aliases, P-codes),
        // Gi = Gigaset (phones.md §5), A = Akuvox/OEM Web-UI labels.
        match self {
            // Y setup_completed, S setup, G boot_completed / "Booting Completed" / P8304
            SetupCompleted => &[
                "setupcompleted",
                "setupcomplete",
                "setup",
                "setupdone",
                "bootcompleted",
                "bootingcompleted",
                "p8304",
            ],
            // R "Log On", Y AULogOn, S log_on, G "Registration" / P8305,
            // Gi RegistrationSuccessed
            Registered => &[
                "logon",
                "registration",
                "registrationsuccessed",
                "registrationsucceeded",
                "registrationsuccess",
                "p8305",
            ],
            // R "Log Off", Y AULogOff, S log_off, G "Sign Off" / P8306
            Unregistered => &["logoff", "signoff", "p8306"],
            // C "Registration Failed", S reg_failed, Gi RegistrationFailed
            RegisterFailed => &["registrationfailed", "regfailed", "registerfail"],
            OffHook => &["offhook", "hookoff", "p8308"],
            OnHook => &["onhook", "hookon", "p8309"],
            // S incoming, R example incoming.xml, G P8310
            IncomingCall => &["incoming", "callincoming", "p8310"],
            // S outgoing, Y AUCallOut, C "New Call" (configured with outgoing.xml), G P8311
            OutgoingCall => &["outgoing", "callout", "newcall", "calloutgoing", "p8311"],
            // C/Y Web UI "Established", S connected, G establishedCall / "Establish Call" /
            // P8313, Gi ConnectionEstablished
            CallEstablished => &[
                "established",
                "establishedcall",
                "establishcall",
                "connected",
                "callconnected",
                "connectionestablished",
                "p8313",
            ],
            // C "Terminated", S disconnected, G terminatedCall / P8314,
            // Gi ConnectionTerminated
            CallTerminated => &[
                "terminated",
                "terminatedcall",
                "terminatecall",
                "disconnected",
                "calldisconnected",
                "connectionterminated",
                "p8314",
            ],
            // R "Open DND", C "Activate DND", G openDnd / "DND On" / P8316
            DndOn => &[
                "opendnd",
                "activatednd",
                "dndenabled",
                "enablednd",
                "dndactivated",
                "p8316",
            ],
            // R "Close DND", C "De-activate DND", G closedDnd / P8317
            DndOff => &[
                "closednd",
                "closeddnd",
                "deactivatednd",
                "dnddisabled",
                "disablednd",
                "dnddeactivated",
                "p8317",
            ],
            // Y always_fwd_on, R "Open Always Forward", C "Activate Always Forward",
            // A "Open Always FWD"
            AlwaysForwardOn => &[
                "alwaysfwdon",
                "openalwaysforward",
                "openalwaysfwd",
                "activatealwaysforward",
            ],
            AlwaysForwardOff => &[
                "alwaysfwdoff",
                "closealwaysforward",
                "closealwaysfwd",
                "deactivatealwaysforward",
            ],
            BusyForwardOn => &[
                "busyfwdon",
                "openbusyforward",
                "openbusyfwd",
                "activatebusyforward",
            ],
            BusyForwardOff => &[
                "busyfwdoff",
                "closebusyforward",
                "closebusyfwd",
                "deactivatebusyforward",
            ],
            NoAnswerForwardOn => &[
                "noanswerfwdon",
                "opennoanswerforward",
                "opennoanswerfwd",
                "activatenoanswerforward",
            ],
            NoAnswerForwardOff => &[
                "noanswerfwdoff",
                "closenoanswerforward",
                "closenoanswerfwd",
                "deactivatenoanswerforward",
            ],
            // S redirection_on, G forward_on / openForward / "Call Forwarding On" / P8318
            ForwardOn => &[
                "redirectionon",
                "openforward",
                "callforwardingon",
                "callforwardon",
                "fwdon",
                "p8318",
            ],
            ForwardOff => &[
                "redirectionoff",
                "closeforward",
                "closedforward",
                "callforwardingoff",
                "callforwardoff",
                "fwdoff",
                "p8319",
            ],
            // Y transfer_call, S transfer
            Transfer => &["transfercall", "calltransfer"],
            // Y blind_transfer_call, G "Blind Transferring" / P8320
            BlindTransfer => &["blindtransfercall", "blindtransferring", "p8320"],
            AttendedTransfer => &["attendedtransfercall", "attendedtransferring", "p8321"],
            ReceivedAttendedTransfer => &[],
            TransferFinished => &["transfercompleted"],
            // Y firmware AUBlindTransferFailed / AUAttendedTransferFailed
            TransferFailed => &["blindtransferfailed", "attendedtransferfailed"],
            // G holdCall / P8324
            Hold => &["holdcall", "callhold", "p8324"],
            // G resume_call / unholdCall / P8325
            Unhold => &["unholdcall", "callunhold", "resumecall", "resume", "p8325"],
            // Y Web UI AURemoteHold / AURemoteUnHold
            Held => &["remotehold"],
            Unheld => &["remoteunhold"],
            Mute => &["muted"],
            Unmute => &["unmuted"],
            MissedCall => &["missed", "misscall", "p8312"],
            // Y Web UI AUIpChanged, C "IP Changed"
            IpChange => &["ipchanged"],
            VpnIp => &[],
            IdleToBusy => &[],
            BusyToIdle => &[],
            // Y priv.gui AURejectNewInCall
            RejectIncomingCall => &["rejectnewincall", "rejectcall"],
            // Y Web UI AUAnswerNewInCall, A "Answer New Call"
            AnswerNewIncomingCall => &["answernewincall", "answernewcall"],
            // A "FWD Incoming Call"
            ForwardIncomingCall => &["fwdincomingcall"],
            // Y setup_autop_finish, Web UI AUAutopFinish
            AutoProvisionFinished => &[
                "setupautopfinish",
                "autopfinish",
                "autopfinished",
                "autoprovisionfinish",
            ],
            // Y Web UI AUOpenCallWait / AUCloseCallWait
            CallWaitingOn => &["opencallwait", "opencallwaiting"],
            CallWaitingOff => &["closecallwait", "closecallwaiting"],
            Headset => &[],
            // Y handfree
            Handsfree => &["handfree"],
            CancelCallout => &[],
            RemoteBusy => &[],
            CallRemoteCanceled => &["callremotecancelled", "remotecanceled"],
            PeripheralInformation => &[],
            CallInfoUpdate => &[],
            // Y custom.action_url.call_by_replaced
            CallReplaced => &["callbyreplaced"],
            // Y custom.action_url.call_transfered_by_remote (sic)
            TransferredByRemote => &["calltransferedbyremote", "calltransferredbyremote"],
            // G openSyslog / closedSyslog / P8330 / P8331
            SyslogOn => &["opensyslog", "p8330"],
            SyslogOff => &["closesyslog", "closedsyslog", "p8331"],
            Other(_) => &[],
        }
    }
}

/// Lowercase alphanumerics only: `Open DND`, `open_dnd`, `OpenDnd` all become `opendnd`.
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// [`squash`] without allocating, for the usual case: event and parameter names are short
/// ASCII. Writes into `buf` and returns the squashed text, or `None` when `s` is not ASCII or
/// its squashed form does not fit (the caller then uses [`squash`]). Both give the same
/// result wherever this one answers: for ASCII, `is_alphanumeric` and `to_lowercase` are
/// their ASCII versions. This runs twice per phone callback (receiver and correlator), so it
/// is on the ingest hot path.
fn squash_ascii<'b>(s: &str, buf: &'b mut [u8]) -> Option<&'b str> {
    let mut n = 0;
    for &b in s.as_bytes() {
        if !b.is_ascii() {
            return None;
        }
        if b.is_ascii_alphanumeric() {
            *buf.get_mut(n)? = b.to_ascii_lowercase();
            n += 1;
        }
    }
    // Only ASCII alphanumerics were written.
    std::str::from_utf8(&buf[..n]).ok()
}

/// Squashes `s` into `buf` when it can, else into `spill`; returns the squashed text.
fn squash_with<'a>(s: &str, buf: &'a mut [u8; 64], spill: &'a mut String) -> &'a str {
    match squash_ascii(s, buf) {
        Some(k) => k,
        None => {
            *spill = squash(s);
            spill.as_str()
        }
    }
}

/// Squashed alias → event, built once.
fn event_aliases() -> &'static HashMap<String, &'static ActionUrlEvent> {
    static MAP: OnceLock<HashMap<String, &'static ActionUrlEvent>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::new();
        for event in ActionUrlEvent::known() {
            map.insert(squash(event.as_str()), event);
            for alias in event.aliases() {
                map.insert((*alias).to_string(), event);
            }
        }
        map
    })
}

/// File extensions dropped from an event name (`incoming.xml` → `incoming`).
const EXTENSIONS: &[&str] = &[
    ".xml", ".php", ".htm", ".html", ".asp", ".aspx", ".jsp", ".cgi", ".json", ".txt",
];

fn lookup_event(name: &str) -> Option<&'static ActionUrlEvent> {
    let mut s = name.trim();
    if let Some(q) = s.find('?') {
        s = &s[..q];
    }
    s = s.trim_end_matches('/');
    if let Some(slash) = s.rfind('/') {
        s = &s[slash + 1..];
    }
    for ext in EXTENSIONS {
        let n = s.len();
        if n > ext.len() && s.as_bytes()[n - ext.len()..].eq_ignore_ascii_case(ext.as_bytes()) {
            // `ext` is ASCII, so `n - ext.len()` is a char boundary.
            s = &s[..n - ext.len()];
            break;
        }
    }
    if let Some(dot) = s.rfind('.') {
        s = &s[dot + 1..];
    }
    let (mut buf, mut spill) = ([0u8; 64], String::new());
    let key = squash_with(s, &mut buf, &mut spill);
    if key.is_empty() {
        return None;
    }
    let map = event_aliases();
    let unwrapped_snom = key
        .strip_prefix("action")
        .map(|k| k.strip_suffix("url").unwrap_or(k));
    let candidates = [
        Some(key),
        // Yealink Web-UI names: AUIncomingCall
        key.strip_prefix("au"),
        // action_url_incoming_call
        key.strip_prefix("actionurl"),
        // Snom: action_incoming_url, action_hold
        unwrapped_snom,
        // Fanvil: DNDOnUrl
        key.strip_suffix("url"),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .filter(|k| !k.is_empty())
        .find_map(|k| map.get(k).copied());
    found
}

/// One parsed callback. Every field optional: phones leave variables unfilled.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PhoneCallback {
    pub event: ActionUrlEvent,
    /// Normalised: 12 lowercase hex digits, no separators.
    pub mac: Option<String>,
    /// `$ip` / `$phone_ip` / `$local_ip`: what the phone says its address is.
    pub ip: Option<String>,
    /// `$model` / `$product`.
    pub model: Option<String>,
    /// `$firmware` / `$program_version`.
    pub firmware: Option<String>,
    pub active_url: Option<String>,
    pub active_user: Option<String>,
    pub active_host: Option<String>,
    /// Number or URI as sent; `+` kept. For an incoming call, our side.
    pub local: Option<String>,
    /// Number or URI as sent; `+` kept. For an incoming call, the caller.
    pub remote: Option<String>,
    pub display_local: Option<String>,
    pub display_remote: Option<String>,
    /// `$call_id` (Yealink/Fanvil: phone-side handle) or `$call-id` (Snom/Grandstream: SIP
    /// Call-ID).
    pub call_id: Option<String>,
    /// `$callerID` (Yealink V84): the caller's display name on an incoming call.
    pub caller_id: Option<String>,
    /// `$calledNumber` (Yealink V84): the callee's number on an outgoing call.
    pub called_number: Option<String>,
    pub duration: Option<String>,
    pub call_direction: Option<String>,
    /// Every other variable, in order, decoded (names as sent).
    pub extra: Vec<(String, String)>,
    /// What was wrong with the input (bad %-escape, invalid UTF-8, duplicated key…).
    pub problems: Vec<String>,
}

/// The typed fields of [`PhoneCallback`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Mac,
    Ip,
    Model,
    Firmware,
    ActiveUrl,
    ActiveUser,
    ActiveHost,
    Local,
    Remote,
    DisplayLocal,
    DisplayRemote,
    CallId,
    CallerId,
    CalledNumber,
    Duration,
    CallDirection,
}

impl Field {
    /// The field a query parameter name belongs to (see the table in the module docs).
    fn of(key: &str) -> Option<Field> {
        let (mut buf, mut spill) = ([0u8; 64], String::new());
        Some(match squash_with(key, &mut buf, &mut spill) {
            "mac" | "macaddress" => Field::Mac,
            "ip" | "phoneip" | "localip" | "ipaddress" => Field::Ip,
            "model" | "product" => Field::Model,
            "firmware" | "programversion" | "fw" | "firmwareversion" => Field::Firmware,
            "activeurl" => Field::ActiveUrl,
            "activeuser" => Field::ActiveUser,
            "activehost" => Field::ActiveHost,
            "local" => Field::Local,
            "remote" => Field::Remote,
            "displaylocal" => Field::DisplayLocal,
            "displayremote" => Field::DisplayRemote,
            "callid" => Field::CallId,
            "callerid" => Field::CallerId,
            "callednumber" => Field::CalledNumber,
            "duration" => Field::Duration,
            "calldirection" => Field::CallDirection,
            _ => return None,
        })
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }

    fn slot(self, cb: &mut PhoneCallback) -> &mut Option<String> {
        match self {
            Field::Mac => &mut cb.mac,
            Field::Ip => &mut cb.ip,
            Field::Model => &mut cb.model,
            Field::Firmware => &mut cb.firmware,
            Field::ActiveUrl => &mut cb.active_url,
            Field::ActiveUser => &mut cb.active_user,
            Field::ActiveHost => &mut cb.active_host,
            Field::Local => &mut cb.local,
            Field::Remote => &mut cb.remote,
            Field::DisplayLocal => &mut cb.display_local,
            Field::DisplayRemote => &mut cb.display_remote,
            Field::CallId => &mut cb.call_id,
            Field::CallerId => &mut cb.caller_id,
            Field::CalledNumber => &mut cb.called_number,
            Field::Duration => &mut cb.duration,
            Field::CallDirection => &mut cb.call_direction,
        }
    }
}

/// Collects problems, capped at [`MAX_PROBLEMS`].
#[derive(Default)]
struct Problems {
    list: Vec<String>,
    more: usize,
}

impl Problems {
    fn push(&mut self, message: impl FnOnce() -> String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(message());
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.list
                .push(format!("{} more problems not listed", self.more));
        }
        self.list
    }
}

/// A short, quoted, escaped excerpt of input for a problem message.
fn snippet(s: &str) -> String {
    match s.char_indices().nth(SNIPPET_CHARS) {
        Some((end, _)) => format!("{:?}…", &s[..end]),
        None => format!("{s:?}"),
    }
}

/// Percent-decodes without form semantics (`+` stays `+`). Returns the text, whether an
/// invalid escape was kept literally, and whether invalid UTF-8 was replaced. Borrows when
/// there is nothing to decode (most names and many values), so nothing is allocated for a
/// parameter that is not kept.
fn decode(raw: &[u8]) -> (Cow<'_, str>, bool, bool) {
    if !raw.contains(&b'%') {
        if let Ok(s) = std::str::from_utf8(raw) {
            return (Cow::Borrowed(s), false, false);
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut bad_escape = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex_value);
            let lo = raw.get(i + 2).copied().and_then(hex_value);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi << 4) | lo);
                i += 3;
                continue;
            }
            bad_escape = true;
        }
        out.push(b);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => (Cow::Owned(s), bad_escape, false),
        Err(e) => (
            Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
            bad_escape,
            true,
        ),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A value the phone left unfilled: `$` + a variable name and nothing else (`$remote`,
/// `$call-id`, `$sip_header(X-Foo)`), whether the name is known or not.
fn is_unfilled(value: &str) -> bool {
    let Some(rest) = value.trim().strip_prefix('$') else {
        return false;
    };
    if !rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return false;
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    let tail = &rest[end..];
    tail.is_empty()
        || (tail.len() >= 2
            && tail.starts_with('(')
            && tail.ends_with(')')
            && !tail[1..tail.len() - 1].contains(['(', ')', '$']))
}

/// Parses one callback: `event` as received in the path, `raw_query` the bytes after `?`.
/// Never fails, never panics; see the module docs for the rules.
/// `/action-url/[secret/]{event}?query` → (event, query). Anything else is not a callback.
pub fn split_target(target: &str) -> Option<(String, &str)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let at = segments
        .iter()
        .position(|s| s.eq_ignore_ascii_case("action-url"))?;
    let rest = &segments[at + 1..];
    if rest.is_empty() || rest.len() > 2 {
        return None;
    }
    let event = percent_encoding::percent_decode_str(rest[rest.len() - 1])
        .decode_utf8_lossy()
        .into_owned();
    Some((event, query))
}

/// A journaled callback target (`/action-url/[secret/]{event}?query`) parsed, exactly as the
/// correlator reads it on replay; `None` when the target is not a callback. The receiver
/// parses with this, from the very string it journals, so that what the live correlator is
/// handed equals what a replay of the journal computes.
pub fn parse_target(target: &str) -> Option<PhoneCallback> {
    let (event, query) = split_target(target)?;
    Some(parse_callback(&event, query.as_bytes()))
}

pub fn parse_callback(event: &str, raw_query: &[u8]) -> PhoneCallback {
    let mut cb = PhoneCallback {
        event: ActionUrlEvent::from_name(event),
        ..PhoneCallback::default()
    };
    let mut problems = Problems::default();
    let mut seen_fields = 0u32;
    let mut seen_extra: HashMap<String, bool> = HashMap::new();

    // An administrator who pasted `…/incoming.xml?` and then appended `?mac=$mac` sends `??`.
    let start = raw_query
        .iter()
        .position(|&b| b != b'?')
        .unwrap_or(raw_query.len());
    for segment in raw_query[start..].split(|&b| b == b'&') {
        if segment.iter().all(u8::is_ascii_whitespace) {
            continue; // `a=1&&b=2`, a trailing `&`
        }
        let (raw_key, raw_value) = match segment.iter().position(|&b| b == b'=') {
            Some(eq) => (&segment[..eq], Some(&segment[eq + 1..])),
            None => (segment, None),
        };
        let (key, key_escape, key_utf8) = decode(raw_key);
        let key = key.trim();
        if key_escape {
            problems.push(|| format!("invalid percent-escape in parameter name {}", snippet(key)));
        }
        if key_utf8 {
            problems.push(|| format!("invalid UTF-8 in parameter name {}", snippet(key)));
        }
        let Some(raw_value) = raw_value else {
            problems.push(|| format!("parameter without '=': {}", snippet(key)));
            continue;
        };
        let (value, value_escape, value_utf8) = decode(raw_value);
        if value_escape {
            problems.push(|| format!("invalid percent-escape in the value of {}", snippet(key)));
        }
        if value_utf8 {
            problems.push(|| format!("invalid UTF-8 in the value of {}", snippet(key)));
        }
        if key.is_empty() {
            problems.push(|| format!("value without a parameter name: {}", snippet(&value)));
            continue;
        }
        let filled = !value.trim().is_empty() && !is_unfilled(&value);

        match Field::of(key) {
            Some(field) => {
                if seen_fields & field.bit() != 0 {
                    problems.push(|| format!("duplicate parameter {}", snippet(key)));
                }
                seen_fields |= field.bit();
                if !filled || field.slot(&mut cb).is_some() {
                    continue;
                }
                if field == Field::Mac {
                    match normalize_mac(&value) {
                        Some(mac) => cb.mac = Some(mac),
                        None => {
                            problems.push(|| format!("not a MAC address: {}", snippet(&value)));
                            cb.extra.push((key.to_string(), value.into_owned()));
                        }
                    }
                } else {
                    *field.slot(&mut cb) = Some(value.into_owned());
                }
            }
            None => {
                // Case-insensitive, like the typed fields; the flag says "has a value".
                let folded = key.to_lowercase();
                if seen_extra.contains_key(&folded) {
                    problems.push(|| format!("duplicate parameter {}", snippet(key)));
                }
                let has_value = seen_extra.entry(folded).or_insert(false);
                if filled && !*has_value {
                    *has_value = true;
                    cb.extra.push((key.to_string(), value.into_owned()));
                }
            }
        }
    }
    cb.problems = problems.finish();
    cb
}

/// `00:15:65:AA:BB:CC`, `00-15-65-aa-bb-cc`, `0015.65aa.bbcc`, `001565AABBCC` →
/// `001565aabbcc`. Anything else (wrong length, mixed separators, non-hex) → `None`.
pub fn normalize_mac(s: &str) -> Option<String> {
    let s = s.trim().as_bytes();
    let hex: Vec<u8> = match s.len() {
        12 => s.to_vec(),
        // six groups of two: 00:15:65:aa:bb:cc
        17 => grouped(s, 2)?,
        // three groups of four: 0015.65aa.bbcc
        14 => grouped(s, 4)?,
        _ => return None,
    };
    if hex.len() != 12 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    Some(hex.iter().map(|b| b.to_ascii_lowercase() as char).collect())
}

/// The hex digits of `s` if it is groups of `width` separated by one consistent separator.
fn grouped(s: &[u8], width: usize) -> Option<Vec<u8>> {
    let sep = *s.get(width)?;
    if !matches!(sep, b':' | b'-' | b'.') {
        return None;
    }
    let mut hex = Vec::with_capacity(12);
    for (i, &b) in s.iter().enumerate() {
        if (i + 1) % (width + 1) == 0 {
            if b != sep {
                return None;
            }
        } else {
            hex.push(b);
        }
    }
    Some(hex)
}

/// The user part of a SIP address, for matching numbers: `sip:101@pbx` → `101`,
/// `101@pbx` → `101`, `<sip:+1555@x>` and `"Alice" <sip:+1555@x;transport=tcp>` → `+1555`,
/// `tel:+15550100;phone-context=x` → `+15550100`, `sip:101:secret@pbx` → `101`, a bare
/// `101` → `101`. Without an `@`, what follows the scheme is taken as the user (phones send
/// bare numbers far more often than host-only URIs). Whitespace around it is dropped.
pub fn number_of(uri: &str) -> &str {
    let mut s = uri.trim();
    if let Some(open) = s.find('<') {
        let inner = &s[open + 1..];
        s = match inner.find('>') {
            Some(close) => &inner[..close],
            None => inner,
        };
        s = s.trim();
    }
    for scheme in ["sips:", "sip:", "tel:"] {
        if s.len() >= scheme.len()
            && s.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        {
            s = &s[scheme.len()..];
            break;
        }
    }
    if let Some(at) = s.find('@') {
        s = &s[..at];
        // user:password@host
        if let Some(colon) = s.find(':') {
            s = &s[..colon];
        }
    }
    // user parameters (`;user=phone`, `;phone-context=`) and URI headers (`?…`)
    if let Some(end) = s.find([';', '?']) {
        s = &s[..end];
    }
    s.trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use ActionUrlEvent as E;

    fn event(name: &str) -> ActionUrlEvent {
        ActionUrlEvent::from_name(name)
    }

    #[test]
    fn every_documented_event_name_maps_to_its_variant() {
        let table: &[(&str, ActionUrlEvent)] = &[
            // --- Russian seed (000_…, Yealink/OEM "Action URL configuration" labels) ---
            ("Setup Completed", E::SetupCompleted),
            ("Log On", E::Registered),
            ("Log Off", E::Unregistered),
            ("Register Failed", E::RegisterFailed),
            ("Off hook", E::OffHook),
            ("On hook", E::OnHook),
            ("Incoming call", E::IncomingCall),
            ("Outgoing call", E::OutgoingCall),
            ("Call established", E::CallEstablished),
            ("Call terminated：", E::CallTerminated), // full-width colon, as in the seed
            ("Call terminated", E::CallTerminated),
            ("Open DND", E::DndOn),
            ("Close DND", E::DndOff),
            ("Open Busy Forward", E::BusyForwardOn),
            ("Close Busy Forward", E::BusyForwardOff),
            ("Open No Answer Forward", E::NoAnswerForwardOn),
            ("Close No Answer Forward", E::NoAnswerForwardOff),
            ("Transfer call", E::Transfer),
            // The seed's Russian descriptions of these two are swapped; the name wins.
            ("Blind transfer call", E::BlindTransfer),
            ("Attended transfer call", E::AttendedTransfer),
            ("Hold", E::Hold),
            ("Unhold", E::Unhold),
            ("Mute", E::Mute),
            ("Unmute", E::Unmute),
            ("Missed call", E::MissedCall),
            ("Open Always Forward", E::AlwaysForwardOn),
            ("Close Always Forward", E::AlwaysForwardOff),
            // the seed's example URL http://10.10.10.1/incoming.xml?call_id=$call_id
            ("incoming.xml", E::IncomingCall),
            ("/incoming.xml", E::IncomingCall),
            // --- Chinese seed (001_…, Fanvil "2.4 事件列表") ---
            // The seed's descriptions of Off-hook/On-hook are swapped; the name wins.
            ("Off-hook", E::OffHook),
            ("On-hook", E::OnHook),
            ("Outgoing Call", E::OutgoingCall),
            ("Incoming Call", E::IncomingCall),
            ("Established", E::CallEstablished),
            ("Terminated", E::CallTerminated),
            ("Missed Call", E::MissedCall),
            ("Activate DND", E::DndOn),
            ("De-activate DND", E::DndOff),
            ("Activate Always Forward", E::AlwaysForwardOn),
            ("De-activate Always Forward", E::AlwaysForwardOff),
            ("Activate Busy Forward", E::BusyForwardOn),
            ("De-activate Busy Forward", E::BusyForwardOff),
            ("Activate No Answer Forward", E::NoAnswerForwardOn),
            ("De-activate No Answer Forward", E::NoAnswerForwardOff),
            ("De-activate No Answer \nForward", E::NoAnswerForwardOff), // as wrapped in the seed
            ("Hold", E::Hold),
            ("Unhold", E::Unhold),
            ("Registered", E::Registered),
            ("Registration Failed", E::RegisterFailed),
            ("Unregistered", E::Unregistered),
            ("Transfer Call", E::Transfer),
            ("Blind Transfer", E::BlindTransfer),
            ("Attended Transfer", E::AttendedTransfer),
            ("Idle to Busy", E::IdleToBusy),
            ("Busy to Idle", E::BusyToIdle),
            ("Setup Completed", E::SetupCompleted),
            ("IP Changed", E::IpChange),
            // §2.3: "New Call" configured as http://192.168.20.76/outgoing.xml?ip=$ip
            ("New Call", E::OutgoingCall),
            ("outgoing.xml", E::OutgoingCall),
            // --- phones.md §1.4: Yealink configuration keys (action_url.<name>) ---
            ("setup_completed", E::SetupCompleted),
            ("registered", E::Registered),
            ("unregistered", E::Unregistered),
            ("register_failed", E::RegisterFailed),
            ("off_hook", E::OffHook),
            ("on_hook", E::OnHook),
            ("incoming_call", E::IncomingCall),
            ("outgoing_call", E::OutgoingCall),
            ("call_established", E::CallEstablished),
            ("call_terminated", E::CallTerminated),
            ("dnd_on", E::DndOn),
            ("dnd_off", E::DndOff),
            ("always_fwd_on", E::AlwaysForwardOn),
            ("always_fwd_off", E::AlwaysForwardOff),
            ("busy_fwd_on", E::BusyForwardOn),
            ("busy_fwd_off", E::BusyForwardOff),
            ("no_answer_fwd_on", E::NoAnswerForwardOn),
            ("no_answer_fwd_off", E::NoAnswerForwardOff),
            ("transfer_call", E::Transfer),
            ("blind_transfer_call", E::BlindTransfer),
            ("attended_transfer_call", E::AttendedTransfer),
            ("hold", E::Hold),
            ("unhold", E::Unhold),
            ("held", E::Held),
            ("unheld", E::Unheld),
            ("mute", E::Mute),
            ("unmute", E::Unmute),
            ("missed_call", E::MissedCall),
            ("ip_change", E::IpChange),
            ("idle_to_busy", E::IdleToBusy),
            ("busy_to_idle", E::BusyToIdle),
            ("reject_incoming_call", E::RejectIncomingCall),
            ("answer_new_incoming_call", E::AnswerNewIncomingCall),
            ("transfer_finished", E::TransferFinished),
            ("transfer_failed", E::TransferFailed),
            ("forward_incoming_call", E::ForwardIncomingCall),
            ("setup_autop_finish", E::AutoProvisionFinished),
            ("call_waiting_on", E::CallWaitingOn),
            ("call_waiting_off", E::CallWaitingOff),
            ("headset", E::Headset),
            ("handfree", E::Handsfree),
            ("cancel_callout", E::CancelCallout),
            ("remote_busy", E::RemoteBusy),
            ("call_remote_canceled", E::CallRemoteCanceled),
            ("peripheral_information", E::PeripheralInformation),
            ("vpn_ip", E::VpnIp),
            ("action_url.incoming_call", E::IncomingCall),
            ("action_url.always_fwd_on", E::AlwaysForwardOn),
            ("custom.action_url.call_info_update", E::CallInfoUpdate),
            ("custom.action_url.call_by_replaced", E::CallReplaced),
            (
                "custom.action_url.call_transfered_by_remote",
                E::TransferredByRemote,
            ),
            // older Yealink key spellings, same labels as the Russian seed
            ("open_dnd", E::DndOn),
            ("close_dnd", E::DndOff),
            ("log_on", E::Registered),
            ("log_off", E::Unregistered),
            // --- phones.md §1.4: Yealink Web-UI names (UrielCh/yealink YealinkEvents.ts) ---
            ("AUSetupCompleted", E::SetupCompleted),
            ("AULogOn", E::Registered),
            ("AULogOff", E::Unregistered),
            ("AURegisterFailed", E::RegisterFailed),
            ("AUOffHook", E::OffHook),
            ("AUOnHook", E::OnHook),
            ("AUIncomingCall", E::IncomingCall),
            ("AUCallOut", E::OutgoingCall),
            ("AUEstablished", E::CallEstablished),
            ("AUTerminated", E::CallTerminated),
            ("AUOpenDnd", E::DndOn),
            ("AUCloseDnd", E::DndOff),
            ("AUOpenAlwaysForward", E::AlwaysForwardOn),
            ("AUCloseAlwaysForward", E::AlwaysForwardOff),
            ("AUOpenBusyForward", E::BusyForwardOn),
            ("AUCloseBusyForward", E::BusyForwardOff),
            ("AUOpenNoAnswerForward", E::NoAnswerForwardOn),
            ("AUCloseNoAnswerForward", E::NoAnswerForwardOff),
            ("AUTransferCall", E::Transfer),
            ("AUBlindTransfer", E::BlindTransfer),
            ("AUAttendedTransfer", E::AttendedTransfer),
            ("AUHold", E::Hold),
            ("AUUnHold", E::Unhold),
            ("AURemoteHold", E::Held),
            ("AURemoteUnHold", E::Unheld),
            ("AUMute", E::Mute),
            ("AUUnMute", E::Unmute),
            ("AUMissedCall", E::MissedCall),
            ("AUIpChanged", E::IpChange),
            ("AUBusyToIdle", E::BusyToIdle),
            ("AUIdleToBusy", E::IdleToBusy),
            ("AURejectIncomingCall", E::RejectIncomingCall),
            ("AUAnswerNewInCall", E::AnswerNewIncomingCall),
            ("AUTransferFailed", E::TransferFailed),
            ("AUTransferFinished", E::TransferFinished),
            ("AUForwardIncomingCall", E::ForwardIncomingCall),
            ("AUAutopFinish", E::AutoProvisionFinished),
            ("AUOpenCallWait", E::CallWaitingOn),
            ("AUCloseCallWait", E::CallWaitingOff),
            ("AUHeadSet", E::Headset),
            ("AUHandFree", E::Handsfree),
            ("AUCancelCallOut", E::CancelCallout),
            ("AURemoteBusy", E::RemoteBusy),
            ("AUCallRemoteCanceled", E::CallRemoteCanceled),
            ("AUPeripheralInformation", E::PeripheralInformation),
            ("AUCallInfoUpdate", E::CallInfoUpdate),
            ("AUCallByReplaced", E::CallReplaced),
            ("AUCallTransferedByRemote", E::TransferredByRemote),
            // --- phones.md §2: Snom setting names and their bare forms ---
            ("action_setup_url", E::SetupCompleted),
            ("action_incoming_url", E::IncomingCall),
            ("action_outgoing_url", E::OutgoingCall),
            ("action_connected_url", E::CallEstablished),
            ("action_disconnected_url", E::CallTerminated),
            ("action_missed_url", E::MissedCall),
            ("action_offhook_url", E::OffHook),
            ("action_onhook_url", E::OnHook),
            ("action_dnd_on_url", E::DndOn),
            ("action_dnd_off_url", E::DndOff),
            ("action_redirection_on_url", E::ForwardOn),
            ("action_redirection_off_url", E::ForwardOff),
            ("action_log_on_url", E::Registered),
            ("action_log_off_url", E::Unregistered),
            ("action_reg_failed", E::RegisterFailed),
            ("action_hold", E::Hold),
            ("action_unhold", E::Unhold),
            ("action_transfer", E::Transfer),
            ("action_blind_transfer", E::BlindTransfer),
            ("action_attended_transfer", E::AttendedTransfer),
            (
                "action_received_attended_transfer",
                E::ReceivedAttendedTransfer,
            ),
            ("setup", E::SetupCompleted),
            ("incoming", E::IncomingCall),
            ("outgoing", E::OutgoingCall),
            ("connected", E::CallEstablished),
            ("disconnected", E::CallTerminated),
            ("missed", E::MissedCall),
            ("offhook", E::OffHook),
            ("onhook", E::OnHook),
            ("redirection_on", E::ForwardOn),
            ("redirection_off", E::ForwardOff),
            ("reg_failed", E::RegisterFailed),
            ("transfer", E::Transfer),
            ("blind_transfer", E::BlindTransfer),
            ("attended_transfer", E::AttendedTransfer),
            ("received_attended_transfer", E::ReceivedAttendedTransfer),
            // --- phones.md §4: Grandstream v2 aliases, slugs, guide names, P-codes
            //     (shambles07/grandstream-actionurl-server internal/actionurl/catalog.go) ---
            ("ons.actionUrl.incomingCall", E::IncomingCall),
            ("ons.actionUrl.outgoingCall", E::OutgoingCall),
            ("ons.actionUrl.establishedCall", E::CallEstablished),
            ("ons.actionUrl.terminatedCall", E::CallTerminated),
            ("ons.actionUrl.offHook", E::OffHook),
            ("ons.actionUrl.onHook", E::OnHook),
            ("ons.actionUrl.missedCall", E::MissedCall),
            ("ons.actionUrl.openDnd", E::DndOn),
            ("ons.actionUrl.closedDnd", E::DndOff),
            ("ons.actionUrl.openForward", E::ForwardOn),
            ("ons.actionUrl.closedForward", E::ForwardOff),
            ("ons.actionUrl.holdCall", E::Hold),
            ("ons.actionUrl.unholdCall", E::Unhold),
            ("ons.actionUrl.openSyslog", E::SyslogOn),
            ("ons.actionUrl.closedSyslog", E::SyslogOff),
            ("ons.actionUrl.setupCompleted", E::SetupCompleted),
            ("ons.actionUrl.blindTransfer", E::BlindTransfer),
            ("ons.actionUrl.attendedTransfer", E::AttendedTransfer),
            ("ons.actionUrl.registered", E::Registered),
            ("ons.actionUrl.unregistered", E::Unregistered),
            ("established_call", E::CallEstablished),
            ("terminated_call", E::CallTerminated),
            ("forward_on", E::ForwardOn),
            ("forward_off", E::ForwardOff),
            ("hold_call", E::Hold),
            ("resume_call", E::Unhold),
            ("syslog_on", E::SyslogOn),
            ("syslog_off", E::SyslogOff),
            ("boot_completed", E::SetupCompleted),
            ("Establish Call", E::CallEstablished),
            ("Terminate Call", E::CallTerminated),
            ("DND On", E::DndOn),
            ("DND Off", E::DndOff),
            ("Call Forwarding On", E::ForwardOn),
            ("Call Forwarding Off", E::ForwardOff),
            ("Resume Call", E::Unhold),
            ("UnHold Call", E::Unhold),
            ("Booting Completed", E::SetupCompleted),
            ("Blind Transferring", E::BlindTransfer),
            ("Attended Transferring", E::AttendedTransfer),
            ("Registration", E::Registered),
            ("Sign Off", E::Unregistered),
            ("P8304", E::SetupCompleted),
            ("P8305", E::Registered),
            ("P8306", E::Unregistered),
            ("P8308", E::OffHook),
            ("P8309", E::OnHook),
            ("P8310", E::IncomingCall),
            ("P8311", E::OutgoingCall),
            ("P8312", E::MissedCall),
            ("P8313", E::CallEstablished),
            ("P8314", E::CallTerminated),
            ("P8316", E::DndOn),
            ("P8317", E::DndOff),
            ("P8318", E::ForwardOn),
            ("P8319", E::ForwardOff),
            ("P8320", E::BlindTransfer),
            ("P8321", E::AttendedTransfer),
            ("P8324", E::Hold),
            ("P8325", E::Unhold),
            ("P8330", E::SyslogOn),
            ("P8331", E::SyslogOff),
            // --- phones.md §5: Gigaset Maxwell (System.Events.*) ---
            ("System.Events.RegistrationSuccessed", E::Registered),
            ("System.Events.RegistrationFailed", E::RegisterFailed),
            ("System.Events.ConnectionEstablished", E::CallEstablished),
            ("System.Events.ConnectionTerminated", E::CallTerminated),
            ("System.Events.OffHook", E::OffHook),
            ("System.Events.OnHook", E::OnHook),
            ("System.Events.IncomingCall", E::IncomingCall),
            ("System.Events.OutgoingCall", E::OutgoingCall),
            ("RegistrationSuccessed", E::Registered),
            ("ConnectionEstablished", E::CallEstablished),
            ("IncomingCall", E::IncomingCall),
            // --- phones.md §3: Fanvil <cti> provisioning keys ---
            ("DNDOnUrl", E::DndOn),
            ("DNDOffUrl", E::DndOff),
            // --- OEM Web-UI labels (Akuvox/VoIPon, same family as the seeds) ---
            ("Open Always FWD", E::AlwaysForwardOn),
            ("Close No Answer FWD", E::NoAnswerForwardOff),
            ("FWD Incoming Call", E::ForwardIncomingCall),
            ("Answer New Call", E::AnswerNewIncomingCall),
            ("Answer New-In Call", E::AnswerNewIncomingCall),
            // --- spelling variants the parser must tolerate ---
            ("INCOMING_CALL", E::IncomingCall),
            ("incoming-call", E::IncomingCall),
            ("incoming_call.php", E::IncomingCall),
            ("Incoming.HTM", E::IncomingCall),
            ("FileName.xml?", E::Other("FileName.xml?".into())),
            ("incoming.xml?", E::IncomingCall),
            ("  dnd_on  ", E::DndOn),
        ];
        let mut wrong = Vec::new();
        for (name, expected) in table {
            let got = event(name);
            if &got != expected {
                wrong.push(format!("{name:?} → {got:?}, expected {expected:?}"));
            }
        }
        assert!(wrong.is_empty(), "wrong mappings:\n{}", wrong.join("\n"));
    }

    #[test]
    fn yealink_server_settings_are_not_events() {
        // AURemoteIP is action_url.report_server, AUUCServer is action_url.ume_server.
        assert_eq!(event("AURemoteIP"), E::Other("AURemoteIP".into()));
        assert_eq!(event("AUUCServer"), E::Other("AUUCServer".into()));
    }

    #[test]
    fn canonical_names_round_trip_and_serialize_as_themselves() {
        assert_eq!(ActionUrlEvent::known().len(), 54);
        let mut names = HashSet::new();
        for e in ActionUrlEvent::known() {
            assert!(!matches!(e, E::Other(_)));
            assert!(names.insert(e.as_str()), "duplicate name {}", e.as_str());
            assert_eq!(&event(e.as_str()), e, "{} does not round-trip", e.as_str());
            assert_eq!(
                serde_json::to_string(e).unwrap(),
                format!("\"{}\"", e.as_str())
            );
            assert_eq!(e.to_string(), e.as_str());
        }
        assert_eq!(
            serde_json::to_string(&E::Other("fancy".into())).unwrap(),
            "\"fancy\""
        );
    }

    #[test]
    fn no_alias_is_claimed_by_two_events() {
        let mut owner: HashMap<String, &ActionUrlEvent> = HashMap::new();
        for e in ActionUrlEvent::known() {
            let own = squash(e.as_str());
            for alias in e.aliases().iter().map(|a| a.to_string()).chain([own]) {
                assert_eq!(alias, squash(&alias), "alias {alias:?} is not squashed");
                if let Some(other) = owner.insert(alias.clone(), e) {
                    assert_eq!(other, e, "{alias:?} claimed by {other:?} and {e:?}");
                }
            }
        }
    }

    #[test]
    fn unknown_event_becomes_other_with_the_original_name() {
        assert_eq!(event("Fancy_Event.xml"), E::Other("Fancy_Event.xml".into()));
        assert_eq!(event("Fancy_Event.xml").as_str(), "Fancy_Event.xml");
        assert_eq!(event(""), E::Other(String::new()));
        assert_eq!(event("..."), E::Other("...".into()));
        assert_eq!(event("来电"), E::Other("来电".into()));
        assert_eq!(event("au"), E::Other("au".into()));
        assert_eq!(event("action_url"), E::Other("action_url".into()));
        assert_eq!(ActionUrlEvent::default(), E::Other(String::new()));
    }

    #[test]
    fn call_events() {
        for e in [
            E::IncomingCall,
            E::OutgoingCall,
            E::CallEstablished,
            E::CallTerminated,
            E::Hold,
            E::Held,
            E::BlindTransfer,
            E::MissedCall,
            E::CallRemoteCanceled,
            E::ReceivedAttendedTransfer,
        ] {
            assert!(e.is_call_event(), "{e:?}");
        }
        for e in [
            E::Registered,
            E::DndOn,
            E::OffHook,
            E::SetupCompleted,
            E::ForwardOn,
            E::Headset,
            E::Other("incoming".into()),
        ] {
            assert!(!e.is_call_event(), "{e:?}");
        }
    }

    /// The value of a typed field by its name, or `None` for "extra".
    fn field<'a>(cb: &'a PhoneCallback, name: &str) -> Option<&'a str> {
        match name {
            "mac" => cb.mac.as_deref(),
            "ip" => cb.ip.as_deref(),
            "model" => cb.model.as_deref(),
            "firmware" => cb.firmware.as_deref(),
            "active_url" => cb.active_url.as_deref(),
            "active_user" => cb.active_user.as_deref(),
            "active_host" => cb.active_host.as_deref(),
            "local" => cb.local.as_deref(),
            "remote" => cb.remote.as_deref(),
            "display_local" => cb.display_local.as_deref(),
            "display_remote" => cb.display_remote.as_deref(),
            "call_id" => cb.call_id.as_deref(),
            "caller_id" => cb.caller_id.as_deref(),
            "called_number" => cb.called_number.as_deref(),
            "duration" => cb.duration.as_deref(),
            "call_direction" => cb.call_direction.as_deref(),
            other => panic!("no field {other}"),
        }
    }

    const FIELDS: &[&str] = &[
        "mac",
        "ip",
        "model",
        "firmware",
        "active_url",
        "active_user",
        "active_host",
        "local",
        "remote",
        "display_local",
        "display_remote",
        "call_id",
        "caller_id",
        "called_number",
        "duration",
        "call_direction",
    ];

    #[test]
    fn every_documented_variable_lands_in_its_field() {
        // (parameter name as an administrator would type it, field or "extra")
        let table: &[(&str, &str)] = &[
            // Russian seed and Chinese seed (same twelve variables) and phones.md §1.5
            ("mac", "mac"),
            ("ip", "ip"),
            ("model", "model"),
            ("firmware", "firmware"),
            ("active_url", "active_url"),
            ("active_user", "active_user"),
            ("active_host", "active_host"),
            ("local", "local"),
            ("remote", "remote"),
            ("display_local", "display_local"),
            ("display_remote", "display_remote"),
            ("call_id", "call_id"),
            // phones.md §1.5, Yealink V84 and OEM docs
            ("callerID", "caller_id"),
            ("calledNumber", "called_number"),
            ("duration", "duration"),
            ("callDirection", "call_direction"),
            ("exp_number", "extra"),
            ("ehs_number", "extra"),
            ("udisk_number", "extra"),
            ("usbheadset_number", "extra"),
            ("wifi_number", "extra"),
            ("bluetooth_number", "extra"),
            ("vpn_ip", "extra"),
            ("cfg_all", "extra"),
            ("cfg_local", "extra"),
            // phones.md §2, Snom runtime variables
            ("csta_id", "extra"),
            ("call-id", "call_id"),
            ("active_key", "extra"),
            ("phone_ip", "ip"),
            ("nr_ongoing_calls", "extra"),
            ("context_url", "extra"),
            ("cancel_reason", "extra"),
            ("longpress_key", "extra"),
            ("sip_header(X-Linkedid)", "extra"),
            ("local_ip", "ip"),
            ("user_name1", "extra"),
            ("expansion_module", "extra"),
            // phones.md §4, Grandstream
            ("product", "model"),
            ("program_version", "firmware"),
            ("hardware_version", "extra"),
            ("language", "extra"),
            ("calldirection", "call_direction"),
            // spellings administrators use
            ("callid", "call_id"),
            ("callID", "call_id"),
            ("CALL_ID", "call_id"),
            ("caller_id", "caller_id"),
            ("called_number", "called_number"),
            ("call_direction", "call_direction"),
            ("fw", "firmware"),
            ("IP", "ip"),
            ("MAC", "mac"),
        ];
        for (key, expected) in table {
            let value = if *expected == "mac" {
                "00:15:65:AA:BB:CC"
            } else {
                "v+1 x"
            };
            let query = format!("{key}={value}");
            let cb = parse_callback("incoming_call", query.as_bytes());
            assert!(cb.problems.is_empty(), "{key}: {:?}", cb.problems);
            if *expected == "extra" {
                assert_eq!(
                    cb.extra,
                    vec![(key.to_string(), value.to_string())],
                    "{key}"
                );
                for f in FIELDS {
                    assert_eq!(field(&cb, f), None, "{key} leaked into {f}");
                }
            } else {
                let want = if *expected == "mac" {
                    "001565aabbcc"
                } else {
                    value
                };
                assert_eq!(field(&cb, expected), Some(want), "{key}");
                assert!(cb.extra.is_empty(), "{key}: {:?}", cb.extra);
                for f in FIELDS.iter().filter(|f| *f != expected) {
                    assert_eq!(field(&cb, f), None, "{key} leaked into {f}");
                }
            }
        }
    }

    #[test]
    fn the_provisioned_template_fills_every_field() {
        let query = "mac=00:15:65:12:34:56&ip=10.0.0.7&model=SIP-T46S&firmware=66.86.0.15\
            &local=101&remote=%2B15550100&display_local=Desk%20101&display_remote=Alice Smith\
            &call_id=33093&active_user=101&active_host=pbx.example&active_url=sip:101@pbx.example";
        let cb = parse_callback("/action-url/incoming_call", query.as_bytes());
        assert_eq!(
            cb,
            PhoneCallback {
                event: E::IncomingCall,
                mac: Some("001565123456".into()),
                ip: Some("10.0.0.7".into()),
                model: Some("SIP-T46S".into()),
                firmware: Some("66.86.0.15".into()),
                active_url: Some("sip:101@pbx.example".into()),
                active_user: Some("101".into()),
                active_host: Some("pbx.example".into()),
                local: Some("101".into()),
                remote: Some("+15550100".into()),
                display_local: Some("Desk 101".into()),
                display_remote: Some("Alice Smith".into()),
                call_id: Some("33093".into()),
                ..PhoneCallback::default()
            }
        );
    }

    #[test]
    fn plus_stays_plus() {
        let cb = parse_callback("incoming_call", b"remote=+15550100&local=sip:+4930123@pbx");
        assert_eq!(cb.remote.as_deref(), Some("+15550100"));
        assert_eq!(cb.local.as_deref(), Some("sip:+4930123@pbx"));
        assert!(cb.problems.is_empty());
    }

    #[test]
    fn percent_escapes_decode() {
        let cb = parse_callback(
            "incoming_call",
            b"remote=%2B15550100&display_remote=Jos%C3%A9%20Mar%c3%ada",
        );
        assert_eq!(cb.remote.as_deref(), Some("+15550100"));
        assert_eq!(cb.display_remote.as_deref(), Some("José María"));
        assert!(cb.problems.is_empty());
        // encoded parameter names too
        let cb = parse_callback("x", b"call%2Did=abc%40host");
        assert_eq!(cb.call_id.as_deref(), Some("abc@host"));
    }

    #[test]
    fn unfilled_variables_are_absent_not_errors() {
        let cb = parse_callback(
            "call_established",
            b"remote=$remote&call_id=$call_id&callid=$call-id&mac=$mac&x=$sip_header(X-Foo)\
              &caller=$callerID&y=$whatever_2&display_remote=%24display_remote&local=",
        );
        assert_eq!(cb.remote, None);
        assert_eq!(cb.call_id, None);
        assert_eq!(cb.mac, None);
        assert_eq!(cb.display_remote, None);
        assert_eq!(cb.local, None);
        assert!(cb.extra.is_empty(), "{:?}", cb.extra);
        // `call_id` then `callid`: the same field twice.
        assert_eq!(
            cb.problems,
            vec!["duplicate parameter \"callid\"".to_string()]
        );

        // Not unfilled: digits after `$`, a `$` inside, text after the name.
        let cb = parse_callback(
            "x",
            b"remote=$123&local=12$34&display_remote=$remote and more&active_user=$",
        );
        assert_eq!(cb.remote.as_deref(), Some("$123"));
        assert_eq!(cb.local.as_deref(), Some("12$34"));
        assert_eq!(cb.display_remote.as_deref(), Some("$remote and more"));
        assert_eq!(cb.active_user.as_deref(), Some("$"));
    }

    #[test]
    fn invalid_escapes_are_kept_and_noted() {
        let cb = parse_callback(
            "incoming_call",
            b"remote=10%zz1&display_remote=50%&local=%4",
        );
        assert_eq!(cb.remote.as_deref(), Some("10%zz1"));
        assert_eq!(cb.display_remote.as_deref(), Some("50%"));
        assert_eq!(cb.local.as_deref(), Some("%4"));
        assert_eq!(cb.problems.len(), 3, "{:?}", cb.problems);
        assert!(
            cb.problems[0].contains("percent-escape"),
            "{:?}",
            cb.problems
        );
        assert!(cb.problems[0].contains("remote"), "{:?}", cb.problems);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_noted() {
        let cb = parse_callback("incoming_call", b"display_remote=Jos%E9&remote=10\xff1");
        assert_eq!(cb.display_remote.as_deref(), Some("Jos\u{FFFD}"));
        assert_eq!(cb.remote.as_deref(), Some("10\u{FFFD}1"));
        assert_eq!(cb.problems.len(), 2, "{:?}", cb.problems);
        assert!(
            cb.problems.iter().all(|p| p.contains("UTF-8")),
            "{:?}",
            cb.problems
        );
    }

    #[test]
    fn raw_spaces_are_part_of_values() {
        let cb = parse_callback(
            "incoming_call",
            b"display_remote=John Doe&remote=101&display_local=Front Desk ",
        );
        assert_eq!(cb.display_remote.as_deref(), Some("John Doe"));
        assert_eq!(cb.display_local.as_deref(), Some("Front Desk "));
        assert_eq!(cb.remote.as_deref(), Some("101"));
        assert!(cb.problems.is_empty());
    }

    #[test]
    fn duplicates_first_filled_wins_and_is_noted() {
        let cb = parse_callback("x", b"remote=101&REMOTE=102&foo=1&Foo=2");
        assert_eq!(cb.remote.as_deref(), Some("101"));
        assert_eq!(cb.extra, vec![("foo".to_string(), "1".to_string())]);
        assert_eq!(cb.problems.len(), 2, "{:?}", cb.problems);
        assert!(cb.problems.iter().all(|p| p.starts_with("duplicate")));

        // An unfilled first occurrence does not hide a filled second one.
        let cb = parse_callback("x", b"call_id=$call_id&call-id=abc@pbx&foo=&foo=2");
        assert_eq!(cb.call_id.as_deref(), Some("abc@pbx"));
        assert_eq!(cb.extra, vec![("foo".to_string(), "2".to_string())]);
        assert_eq!(cb.problems.len(), 2, "{:?}", cb.problems);
    }

    #[test]
    fn odd_shapes_do_not_lose_the_rest() {
        let cb = parse_callback("x", b"??mac=001565aabbcc&&novalue&=orphan&remote=1&");
        assert_eq!(cb.mac.as_deref(), Some("001565aabbcc"));
        assert_eq!(cb.remote.as_deref(), Some("1"));
        assert_eq!(cb.problems.len(), 2, "{:?}", cb.problems);
        assert!(cb.problems[0].contains("without '='"));
        assert!(cb.problems[1].contains("without a parameter name"));
        // a value may contain '='
        let cb = parse_callback("x", b"active_url=sip:101@pbx;a=b");
        assert_eq!(cb.active_url.as_deref(), Some("sip:101@pbx;a=b"));
    }

    #[test]
    fn empty_query() {
        let cb = parse_callback("dnd_on", b"");
        assert_eq!(
            cb,
            PhoneCallback {
                event: E::DndOn,
                ..PhoneCallback::default()
            }
        );
        assert_eq!(parse_callback("dnd_on", b"?"), cb);
    }

    #[test]
    fn mac_formats() {
        for s in [
            "00:15:65:AA:BB:CC",
            "00-15-65-aa-bb-cc",
            "0015.65aa.bbcc",
            "001565AABBCC",
            "001565aabbcc",
            " 00:15:65:aa:bb:cc ",
        ] {
            assert_eq!(normalize_mac(s).as_deref(), Some("001565aabbcc"), "{s:?}");
        }
        for s in [
            "",
            "00:15:65:AA:BB",
            "00:15:65:AA:BB:CC:DD",
            "00:15-65:AA:BB:CC",
            "0015:65aa.bbcc",
            "00155:5AA:BBCC",
            "001565AABBCG",
            "00:15:65:AA:BB:C",
            "0:15:65:AA:BB:CCC",
            "001565aabbc",
            "$mac",
            "00 15 65 aa bb cc",
            "ＡＡ:15:65:AA:BB", // non-ASCII must not panic or pass
        ] {
            assert_eq!(normalize_mac(s), None, "{s:?}");
        }
        let cb = parse_callback("x", b"mac=00-15-65-AA-BB-CC");
        assert_eq!(cb.mac.as_deref(), Some("001565aabbcc"));
        let cb = parse_callback("x", b"mac=not-a-mac");
        assert_eq!(cb.mac, None);
        assert_eq!(cb.extra, vec![("mac".to_string(), "not-a-mac".to_string())]);
        assert_eq!(cb.problems.len(), 1, "{:?}", cb.problems);
    }

    #[test]
    fn number_of_extracts_the_user_part() {
        for (uri, number) in [
            ("sip:101@pbx", "101"),
            ("101@pbx", "101"),
            ("<sip:+1555@x>", "+1555"),
            (
                "\"Alice\" <sip:+15550100@pbx.example;transport=tcp>",
                "+15550100",
            ),
            ("Alice <sips:102@pbx:5061>", "102"),
            ("SIP:103@pbx", "103"),
            ("sip:104@pbx;user=phone", "104"),
            ("sip:105;npdi@pbx", "105"),
            ("sip:106:secret@pbx", "106"),
            ("tel:+15550100;phone-context=example.com", "+15550100"),
            ("sip:107", "107"),
            ("101", "101"),
            ("+15550100", "+15550100"),
            (" 108 ", "108"),
            ("<sip:109@pbx", "109"),
            ("sip:110@pbx?subject=x", "110"),
            ("", ""),
            ("sip:", ""),
        ] {
            assert_eq!(number_of(uri), number, "{uri:?}");
        }
    }

    #[test]
    fn a_64_kib_query_parses_in_linear_time() {
        // 64 KiB of distinct extras, one long value, and many bad escapes.
        let mut query = String::new();
        let mut i = 0;
        while query.len() < 48 * 1024 {
            query.push_str(&format!("k{i}=v%zz{i}&"));
            i += 1;
        }
        query.push_str("remote=+1&display_remote=");
        query.push_str(&"A".repeat(64 * 1024 - query.len()));
        assert_eq!(query.len(), 64 * 1024);
        let started = std::time::Instant::now();
        let cb = parse_callback("incoming_call", query.as_bytes());
        let elapsed = started.elapsed();
        assert_eq!(cb.extra.len(), i);
        assert_eq!(
            cb.extra[i - 1],
            (format!("k{}", i - 1), format!("v%zz{}", i - 1))
        );
        assert_eq!(cb.remote.as_deref(), Some("+1"));
        assert!(cb.display_remote.as_deref().unwrap().len() > 10_000);
        // capped: MAX_PROBLEMS listed, one line counting the rest
        assert_eq!(cb.problems.len(), MAX_PROBLEMS + 1);
        assert_eq!(
            cb.problems[MAX_PROBLEMS],
            format!("{} more problems not listed", i - MAX_PROBLEMS)
        );
        // Generous: catches quadratic behaviour (seconds), not noise (milliseconds).
        assert!(elapsed.as_secs_f64() < 2.0, "took {elapsed:?}");

        // The same key 8000 times: duplicates are found without rescanning.
        let query = "foo=1&".repeat(64 * 1024 / 6);
        let started = std::time::Instant::now();
        let cb = parse_callback("x", query.as_bytes());
        assert!(started.elapsed().as_secs_f64() < 2.0);
        assert_eq!(cb.extra.len(), 1);
        assert_eq!(cb.problems.len(), MAX_PROBLEMS + 1);
    }

    #[test]
    fn problem_messages_quote_only_a_snippet() {
        let long_key = "k".repeat(1000);
        let cb = parse_callback("x", long_key.as_bytes());
        assert_eq!(cb.problems.len(), 1);
        assert!(cb.problems[0].len() < 100, "{}", cb.problems[0]);
    }

    mod prop {
        use super::super::*;
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_input_never_panics(
                name in any::<String>(),
                raw_name in proptest::collection::vec(any::<u8>(), 0..64),
                query in proptest::collection::vec(any::<u8>(), 0..512),
            ) {
                let raw_name = String::from_utf8_lossy(&raw_name);
                let cb = parse_callback(&name, &query);
                prop_assert!(cb.problems.len() <= MAX_PROBLEMS + 1);
                let _ = parse_callback(&raw_name, &query);
                let _ = ActionUrlEvent::from_name(&name).is_call_event();
                let _ = number_of(&name);
                let _ = normalize_mac(&name);
            }

            #[test]
            fn query_like_input_never_panics(
                query in "[a-z_%$&=+ 0-9A-F:.\\-@<>;?\u{e9}]{0,200}",
            ) {
                let cb = parse_callback("incoming_call", query.as_bytes());
                if let Some(mac) = &cb.mac {
                    prop_assert_eq!(mac.len(), 12);
                }
            }

            #[test]
            fn encoded_values_come_back_exactly(value in "\\PC{1,40}") {
                prop_assume!(!value.trim().is_empty() && !is_unfilled(&value));
                let encoded = utf8_percent_encode(&value, NON_ALPHANUMERIC).to_string();
                let query = format!("remote={encoded}&note={encoded}");
                let cb = parse_callback("x", query.as_bytes());
                prop_assert_eq!(cb.remote.as_deref(), Some(value.as_str()));
                prop_assert_eq!(&cb.extra, &vec![("note".to_string(), value.clone())]);
                prop_assert!(cb.problems.is_empty());
            }

            #[test]
            fn squash_ascii_agrees_with_squash(s in "[ -~]{0,100}|\\PC{0,20}") {
                let mut buf = [0u8; 64];
                if let Some(fast) = squash_ascii(&s, &mut buf) {
                    prop_assert_eq!(fast, squash(&s));
                } else {
                    prop_assert!(!s.is_ascii() || squash(&s).len() > 64);
                }
            }

            #[test]
            fn event_names_ignore_case_and_separators(idx in 0usize..54, upper in any::<bool>()) {
                let e = &ActionUrlEvent::known()[idx];
                let name = e.as_str().replace('_', "-");
                let name = if upper { name.to_uppercase() } else { name };
                prop_assert_eq!(&ActionUrlEvent::from_name(&name), e);
            }
        }
    }
}
