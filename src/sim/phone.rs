//! [`PhoneSim`]: a simulated IP desk phone (Yealink, Fanvil, Snom, Grandstream, Htek) over real
//! HTTP.
//!
//! Why a simulator and why this one: the bridge controls phones with "Active URI" GETs and learns
//! what they do from "Action URL" GETs they send back. No real phone is available to tests or to
//! `ctibridge demo`, and the failures that matter in production are the vendors' quirks — a
//! command silently ignored because `key=` is not the first parameter, a `+` read as a space, a
//! phone that answers `200 OK` but waits for a user to press OK on "Allow remote control?", a
//! Digest challenge, a literal `$remote` in a callback, a Snom that redirects instead of
//! answering. So this phone serves real HTTP on a real socket, follows the vendor documents
//! (the product brief's `phones.md` and the two seed documents, Russian for Yealink and Chinese
//! for Fanvil), and keeps a record of every request (the target exactly as received, whether it was
//! authorized, whether it was *executed*) and of every callback it fired. The rules here are
//! derived from the documents, not from ctibridge's own client, so a test that drives the client
//! against this simulator checks the client against the documents.
//!
//! # Active URI endpoints (what the phone obeys)
//! - Yealink: `/servlet?key=K1;K2…`, `/servlet?key=number=N&outgoing_uri=U`,
//!   `/servlet?number=N&outgoing_uri=U` (what NethCTI sends), `/servlet?phonecfg=get[&accounts=1]
//!   [&dnd=1][&fw=1]`; the two old forms `/cgi-bin/ConfigManApp.com?…` and
//!   `/cgi-bin/cgiServer.exx?…` take the same commands. The T5 guide's in-query login
//!   `p=login&q=login&username=U&pwd=P&jumpto=URI&key=…` is accepted as credentials.
//! - Yealink legacy (V70) and Fanvil: `/cgi-bin/ConfigManApp.com?key=…` and
//!   `?number=N&outgoing_uri=U` (legacy Yealink also `/cgi-bin/cgiServer.exx`); `/servlet` is 404.
//! - Snom: `/command.htm?key=K[,ms[,pause]][;K…]` (200), `?number=N&outgoing_uri=U` (302 to
//!   `/index.htm`, which this phone also serves), `?key_dtmf=…`, `?RELEASE_ALL_CALLS`;
//!   `/advanced_update.htm?reboot=Reboot`.
//! - Grandstream: `/cgi-bin/api-make_call?passcode=P&phonenumber=N[&account=A]`,
//!   `api-phone_operation?passcode=P&cmd=acceptcall|rejectcall|endcall|holdcall|cancel`,
//!   `api-sys_operation?passcode=P&request=REBOOT`, `api-get_line_status`, `api-send_key?keys=`;
//!   JSON answers `{"response":"success","body":true}` / `{"response":"error","body":false}`. The
//!   passcode (= `password`) is the credential; HTTP auth is not used.
//! - Htek: `/Phone_ActionURL&Command=1&Number=N&Account=A` (dial) and `…&Command=C&key=K`.
//!
//! # Phone rules applied to every request, in order
//! 1. Behaviour fault injection: [`SimBehaviour::BlackHole`] reads the request and never answers;
//!    [`SimBehaviour::Status`] answers that status to everything.
//! 2. Allow-list: a peer outside `allow_list` gets 403; an empty list rejects everyone (a blank
//!    Yealink `features.action_uri_limit_ip` rejects every GET).
//! 3. HTTP auth: Basic or Digest (MD5, `qop=auth`, RFC 7616) → 401 with a challenge.
//! 4. "Allow remote control?": with `remote_control_prompt`, requests are answered 200 but not
//!    executed until [`PhoneSim::accept_prompt`].
//! 5. Query rules (Yealink gotchas, applied to the Yealink family, Fanvil and Snom): the command
//!    parameter (`key`, `number`, …) must be the first one and spelt in lower case, and a
//!    trailing `&` makes the phone ignore the command. Such requests get 200 and are recorded
//!    with `executed: false`.
//! 6. Decoding: the query is form-decoded, so `%2B` is `+` and a raw `+` is a space (and then
//!    does not dial what the client meant); `$` in a dialled string means `#`; `@N` selects line
//!    N; key names are case-insensitive and an `F_` prefix is optional (`Reboot` = `F_REBOOT`).
//!
//! # Action URL callbacks (what the phone reports)
//! On each state change the phone queues a GET to `{callback_base}/{event}?{query}`, where the
//! query is the administrator's template with the vendor's variables substituted (default:
//! [`PhoneSimConfig::default_query_template`]). One background task sends them in order with a
//! short timeout over a raw TCP connection, so the bytes on the wire are exactly what a phone
//! would send: `+` stays `+`, a variable the phone cannot fill stays literal (`remote=$remote` on
//! `dnd_on`), and a Grandstream puts raw spaces of display names into the request line. A failed
//! callback is recorded ([`PhoneSim::callback_log`]) and never delays an HTTP answer.

use crate::config::PhoneVendor;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use md5::{Digest, Md5};
use percent_encoding::percent_decode_str;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// How many Digest nonces the phone remembers; older ones are refused (the client gets a new
/// challenge).
const NONCE_MEMORY: usize = 64;

/// Largest callback answer read back before the connection is dropped.
const CALLBACK_READ_LIMIT: usize = 64 * 1024;

/// HTTP authentication the phone's web server asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SimAuth {
    /// Every request is authorized (a phone with web authentication off).
    None,
    /// HTTP Basic (`admin:admin` on a factory-default phone).
    #[default]
    Basic,
    /// HTTP Digest, MD5 with `qop=auth` (Snom with `http_scheme` on).
    Digest,
}

/// How the phone's web server behaves, for fault injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SimBehaviour {
    /// Serve requests by the rules of the vendor.
    #[default]
    Normal,
    /// Accept connections, read requests and never answer (a hung phone, a dropping firewall).
    BlackHole,
    /// Answer every request with this status and do nothing.
    Status(u16),
}

/// What the simulated phone is and how it is configured.
#[derive(Clone, Debug)]
pub struct PhoneSimConfig {
    pub vendor: PhoneVendor,
    /// SIP account (user part) on line 1.
    pub extension: String,
    /// As the phone reports it in `$mac` (Yealink: 12 lower-case hex digits).
    pub mac: String,
    pub model: String,
    pub firmware: String,
    /// Web interface user.
    pub username: String,
    /// Web interface password; for Grandstream, the API `passcode`.
    pub password: String,
    pub auth: SimAuth,
    /// Who may send Active URI commands. Empty = reject every request, as a real Yealink does.
    pub allow_list: Vec<IpNet>,
    /// Show "Allow remote control?" on the first command and execute nothing until the user
    /// presses OK ([`PhoneSim::accept_prompt`]).
    pub remote_control_prompt: bool,
    /// Where Action URL callbacks go, e.g. `http://127.0.0.1:8080/action-url`; `None` = the
    /// administrator configured no Action URLs.
    pub callback_base: Option<String>,
    /// After a dial, the far end answers after this delay (→ `call_established`); `None` = it
    /// keeps ringing until [`PhoneSim::far_end_answers`] or a hang-up.
    pub answer_after: Option<Duration>,
    pub behaviour: SimBehaviour,
    /// Display name of the account (`$display_local`); `None` = `Ext <extension>`.
    pub display_name: Option<String>,
    /// Host part of the account's SIP URI (`$active_host`).
    pub sip_host: String,
    /// Query part of every configured Action URL; `None` =
    /// [`PhoneSimConfig::default_query_template`] for the vendor.
    pub action_url_query: Option<String>,
    /// How long one callback may take before it is recorded as failed.
    pub callback_timeout: Duration,
    /// Realm of the HTTP challenges; `None` = the vendor's name.
    pub realm: Option<String>,
}

impl Default for PhoneSimConfig {
    fn default() -> Self {
        PhoneSimConfig {
            vendor: PhoneVendor::Yealink,
            extension: "101".into(),
            mac: "001565aabb01".into(),
            model: "SIP-T46S".into(),
            firmware: "66.86.0.15".into(),
            username: "admin".into(),
            password: "admin".into(),
            auth: SimAuth::Basic,
            allow_list: vec!["127.0.0.0/8".parse().expect("static network")],
            remote_control_prompt: false,
            callback_base: None,
            answer_after: None,
            behaviour: SimBehaviour::Normal,
            display_name: None,
            sip_host: "127.0.0.1".into(),
            action_url_query: None,
            callback_timeout: Duration::from_secs(2),
            realm: None,
        }
    }
}

impl PhoneSimConfig {
    /// A plausible phone of `vendor` for `extension`: model, firmware and a MAC address in the
    /// vendor's OUI whose last digits derive from the extension (so several simulated phones
    /// differ).
    pub fn for_vendor(vendor: PhoneVendor, extension: &str) -> Self {
        let (oui, model, firmware) = match vendor {
            PhoneVendor::Yealink => ("001565", "SIP-T46S", "66.86.0.15"),
            PhoneVendor::YealinkLegacy => ("001565", "SIP-T22P", "7.70.0.100"),
            PhoneVendor::Fanvil => ("0c383e", "X4", "2.4.1.5"),
            PhoneVendor::Snom => ("000413", "snomD735", "10.1.73.16"),
            PhoneVendor::Grandstream => ("000b82", "GXP2170", "1.0.11.3"),
            PhoneVendor::Htek => ("001fc1", "UC924", "2.0.4.4.33"),
        };
        let n: u32 = extension.bytes().fold(0u32, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(u32::from(b))
        });
        PhoneSimConfig {
            vendor,
            extension: extension.to_owned(),
            mac: format!("{oui}{:06x}", n & 0xff_ffff),
            model: model.into(),
            firmware: firmware.into(),
            ..PhoneSimConfig::default()
        }
    }

    /// The canonical Action URL query an administrator pastes for `vendor`: the same query keys
    /// for every vendor, each filled with the variable that vendor documents for it. Yealink,
    /// Fanvil and Htek: `$ip`, `$call_id` (a phone-side call handle). Snom: `$phone_ip`,
    /// `$call-id` (the SIP Call-ID); Snom documents no model or firmware variable, so those stay
    /// literal. Grandstream: `$phone_ip`, `$product`, `$program_version`, `$call-id`.
    pub fn default_query_template(vendor: PhoneVendor) -> &'static str {
        match vendor {
            PhoneVendor::Yealink
            | PhoneVendor::YealinkLegacy
            | PhoneVendor::Fanvil
            | PhoneVendor::Htek => {
                "mac=$mac&ip=$ip&model=$model&firmware=$firmware&local=$local&remote=$remote\
                 &display_local=$display_local&display_remote=$display_remote&call_id=$call_id\
                 &active_user=$active_user&active_host=$active_host"
            }
            PhoneVendor::Snom => {
                "mac=$mac&ip=$phone_ip&model=$model&firmware=$firmware&local=$local&remote=$remote\
                 &display_local=$display_local&display_remote=$display_remote&call-id=$call-id\
                 &active_user=$active_user&active_host=$active_host"
            }
            PhoneVendor::Grandstream => {
                "mac=$mac&ip=$phone_ip&model=$product&firmware=$program_version&local=$local\
                 &remote=$remote&display_local=$display_local&display_remote=$display_remote\
                 &call-id=$call-id&active_user=$active_user&active_host=$active_host"
            }
        }
    }

    fn display_local(&self) -> String {
        self.display_name
            .clone()
            .unwrap_or_else(|| format!("Ext {}", self.extension))
    }

    fn realm(&self) -> String {
        self.realm.clone().unwrap_or_else(|| {
            match self.vendor {
                PhoneVendor::Yealink | PhoneVendor::YealinkLegacy => "Yealink",
                PhoneVendor::Fanvil => "Fanvil",
                PhoneVendor::Snom => "snom",
                PhoneVendor::Grandstream => "Grandstream",
                PhoneVendor::Htek => "Htek",
            }
            .to_owned()
        })
    }
}

/// One HTTP request the phone received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRequest {
    pub method: String,
    /// The request target exactly as received (path and query, not decoded).
    pub target: String,
    pub peer: IpAddr,
    /// Passed the allow-list and the credentials check.
    pub authorized: bool,
    /// The phone carried the command out (it may still have had no effect, e.g. MUTE when idle).
    pub executed: bool,
    /// Status answered; `None` when the phone never answered (black hole).
    pub status: Option<u16>,
    /// Why it was not executed, or what it did.
    pub note: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The call on the phone (the simulator models one call at a time).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SimCallState {
    #[default]
    Idle,
    /// An outgoing call is ringing at the far end.
    Dialing {
        number: String,
        line: u8,
    },
    /// An incoming call is ringing here.
    Ringing {
        from: String,
    },
    Talking {
        remote: String,
    },
    Held {
        remote: String,
    },
}

/// What the phone's screen and memory hold.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SimPhoneState {
    pub dnd: bool,
    pub call: SimCallState,
    pub muted: bool,
    /// Digits typed before the call is sent (pre-dial screen), with `$` already turned into `#`.
    pub dial_input: Option<String>,
    /// Line chosen with `@N` (or `Account=`), 1 by default.
    pub selected_line: u8,
    /// Phone-side handle of the current call (Yealink `$call_id`, usable as `ASW:<id>`).
    pub call_handle: Option<u32>,
    /// SIP Call-ID of the current call.
    pub sip_call_id: Option<String>,
    /// `outgoing_uri` of the last dial command.
    pub outgoing_uri: Option<String>,
    /// Every key pressed through Active URI, as received (decoded), in order.
    pub keys: Vec<String>,
    /// DTMF digits sent during calls.
    pub dtmf: String,
    pub reboots: u32,
    /// `AutoP` (auto-provisioning) requests.
    pub autop: u32,
    /// "Allow remote control?" is on the screen.
    pub prompt_showing: bool,
    /// The user pressed OK on "Allow remote control?".
    pub remote_control_allowed: bool,
}

/// One Action URL callback the phone fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimCallback {
    /// The phone's event name (the last path segment).
    pub event: String,
    /// The full URL, exactly as sent in the request line.
    pub url: String,
    /// Status of the answer; `None` when none came.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// A call the phone placed: what a PBX would see arrive as an INVITE from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimDial {
    /// The phone's extension.
    pub extension: String,
    /// What was dialled (after `$` → `#` and `@N` handling).
    pub number: String,
    pub line: u8,
    /// The SIP Call-ID the phone chose for the INVITE (what Snom/Grandstream report).
    pub sip_call_id: String,
    /// The phone-side handle (Yealink `$call_id`).
    pub handle: u32,
}

/// A running simulated phone. Cloning gives another handle to the same phone.
#[derive(Clone)]
pub struct PhoneSim {
    shared: Arc<Shared>,
}

/// Semantic phone events; [`event_name`] maps them to each vendor's Action URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    Incoming,
    Outgoing,
    Established,
    Terminated,
    DndOn,
    DndOff,
    Hold,
    Unhold,
    Mute,
    Unmute,
    Missed,
    Setup,
}

#[derive(Clone, Debug)]
struct CallCtx {
    handle: u32,
    sip_call_id: String,
    incoming: bool,
    remote: String,
    line: u8,
    answered: Option<Instant>,
}

struct Inner {
    /// Where callbacks go; starts as `cfg.callback_base`, changed by `set_callback_base`.
    callback_base: Option<String>,
    behaviour: SimBehaviour,
    state: SimPhoneState,
    call: Option<CallCtx>,
    requests: Vec<SimRequest>,
    callbacks: Vec<SimCallback>,
    nonces: VecDeque<String>,
    next_handle: u32,
    last_dialed: Option<String>,
    /// Told about every call the phone places because of a command (Active URI, keys), so a
    /// simulated PBX can carry it on; see [`PhoneSim::set_dial_hook`].
    dial_hook: Option<mpsc::UnboundedSender<SimDial>>,
}

struct CallbackJob {
    event: String,
    url: String,
}

struct Shared {
    cfg: PhoneSimConfig,
    addr: SocketAddr,
    realm: String,
    opaque: String,
    inner: Mutex<Inner>,
    cb_tx: mpsc::UnboundedSender<CallbackJob>,
    cb_done: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
}

/// What the request handler decided.
struct Outcome {
    status: u16,
    headers: Vec<(&'static str, String)>,
    content_type: &'static str,
    body: String,
    authorized: bool,
    executed: bool,
    note: String,
}

impl Outcome {
    fn new(status: u16, body: &str) -> Self {
        Outcome {
            status,
            headers: Vec::new(),
            content_type: "text/html",
            body: body.to_owned(),
            authorized: false,
            executed: false,
            note: String::new(),
        }
    }

    fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    fn authorized(mut self) -> Self {
        self.authorized = true;
        self
    }

    fn executed(mut self) -> Self {
        self.executed = true;
        self
    }

    fn json(mut self) -> Self {
        self.content_type = "application/json";
        self
    }

    fn into_response(self) -> Response<Body> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut b = Response::builder()
            .status(status)
            .header("content-type", self.content_type)
            .header("server", "PhoneSim");
        for (k, v) in &self.headers {
            b = b.header(*k, v.as_str());
        }
        b.body(Body::from(self.body))
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }
}

/// The request as the rules need it.
struct RequestInfo<'a> {
    method: &'a str,
    target: &'a str,
    path: &'a str,
    query: &'a str,
    authorization: Option<&'a str>,
    peer: IpAddr,
}

enum Route {
    /// Yealink/Fanvil-style key command endpoint; `servlet` allows `phonecfg=get`.
    Keys {
        servlet: bool,
    },
    SnomCommand,
    SnomIndex,
    SnomReboot,
    Grandstream(String),
    Htek(String),
    NotFound,
}

const OK_BODY: &str = "<html><body>OK</body></html>";
const PROMPT_BODY: &str = "<html><body>Allow remote control?</body></html>";

impl PhoneSim {
    /// Starts the phone's web server on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr, cfg: PhoneSimConfig) -> io::Result<PhoneSim> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (cb_tx, cb_rx) = mpsc::unbounded_channel();
        let (shutdown, _) = watch::channel(false);
        let (cb_done, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            realm: cfg.realm(),
            opaque: random_hex(16),
            addr: local,
            inner: Mutex::new(Inner {
                callback_base: cfg.callback_base.clone(),
                behaviour: cfg.behaviour,
                state: SimPhoneState {
                    selected_line: 1,
                    ..SimPhoneState::default()
                },
                call: None,
                requests: Vec::new(),
                callbacks: Vec::new(),
                nonces: VecDeque::new(),
                next_handle: 1,
                last_dialed: None,
                dial_hook: None,
            }),
            cfg,
            cb_tx,
            cb_done,
            shutdown,
        });
        tokio::spawn(accept_loop(
            listener,
            Arc::downgrade(&shared),
            shared.shutdown.subscribe(),
        ));
        tokio::spawn(callback_loop(
            cb_rx,
            Arc::downgrade(&shared),
            shared.shutdown.subscribe(),
        ));
        tracing::debug!(addr = %local, vendor = ?shared.cfg.vendor, "phone simulator listening");
        Ok(PhoneSim { shared })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://<local_addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn config(&self) -> &PhoneSimConfig {
        &self.shared.cfg
    }

    /// Points the Action URL callbacks somewhere else (or nowhere), as an administrator
    /// re-provisioning the phone would; tests use it once the bridge's port is known.
    pub fn set_callback_base(&self, base: Option<String>) {
        self.shared.lock().callback_base = base;
    }

    /// Every HTTP request received, in arrival order.
    pub fn requests(&self) -> Vec<SimRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn state(&self) -> SimPhoneState {
        self.shared.lock().state.clone()
    }

    /// The user presses OK on "Allow remote control?": later commands are executed (the ones
    /// that raised the prompt are not replayed).
    pub fn accept_prompt(&self) {
        let mut inner = self.shared.lock();
        inner.state.remote_control_allowed = true;
        inner.state.prompt_showing = false;
    }

    pub fn set_behaviour(&self, b: SimBehaviour) {
        self.shared.lock().behaviour = b;
    }

    /// A call from `from` starts ringing (→ `incoming_call`). Under DND the phone rejects it
    /// without ringing and without a callback; while another call is up it is ignored.
    pub async fn incoming_call(&self, from: &str, sip_call_id: &str) {
        let sh = &self.shared;
        let mut inner = sh.lock();
        if inner.state.dnd || inner.call.is_some() {
            tracing::debug!(
                from,
                "simulated phone busy or in DND: incoming call rejected"
            );
            return;
        }
        let handle = inner.next_handle;
        inner.next_handle += 1;
        inner.state.dial_input = None;
        inner.call = Some(CallCtx {
            handle,
            sip_call_id: sip_call_id.to_owned(),
            incoming: true,
            remote: from.to_owned(),
            line: 1,
            answered: None,
        });
        sh.set_call(&mut inner, SimCallState::Ringing { from: from.into() });
        sh.emit(&mut inner, Ev::Incoming);
    }

    /// The user answers the ringing call (→ `call_established`).
    pub async fn answer(&self) {
        let mut inner = self.shared.lock();
        self.shared.answer(&mut inner, None);
    }

    /// The user hangs up, rejects a ringing call or cancels a dial (→ `call_terminated`;
    /// a Snom rejecting a ringing call sends nothing).
    pub async fn hang_up(&self) {
        let mut inner = self.shared.lock();
        self.shared.local_hangup(&mut inner, None);
    }

    /// The user switches DND on the phone itself (→ `dnd_on` / `dnd_off` when it changes).
    pub async fn set_dnd_local(&self, on: bool) {
        let mut inner = self.shared.lock();
        self.shared.set_dnd(&mut inner, on);
    }

    /// The far end answers the outgoing call (→ `call_established`).
    pub async fn far_end_answers(&self) {
        self.shared.far_end_answer(None);
    }

    /// The far end hangs up or cancels (→ `call_terminated`, after `missed_call` when the call
    /// was still ringing here).
    pub async fn far_end_hangs_up(&self) {
        let sh = &self.shared;
        let mut inner = sh.lock();
        let Some(ctx) = inner.call.clone() else {
            return;
        };
        if ctx.incoming && ctx.answered.is_none() {
            sh.emit(&mut inner, Ev::Missed);
        }
        sh.emit(&mut inner, Ev::Terminated);
        sh.clear_call(&mut inner);
    }

    /// The user dials `number` on the keypad (→ `outgoing_call`). Returns the call as the PBX
    /// would see it, or `None` when the phone is busy or the number empty. Not reported to the
    /// dial hook: the caller already knows.
    pub async fn dial(&self, number: &str) -> Option<SimDial> {
        let sh = &self.shared;
        let mut inner = sh.lock();
        let line = inner.state.selected_line;
        sh.start_dial(&mut inner, number, line).ok()
    }

    /// The user presses hold (`on`) or resume (→ `hold` / `unhold`); false when there is no
    /// call in the matching state.
    pub async fn set_hold(&self, on: bool) -> bool {
        let mut inner = self.shared.lock();
        self.shared.set_hold(&mut inner, on, None)
    }

    /// Reports every call the phone places because of a command it received (Active URI dial,
    /// keys, redial) to `hook`, so a simulated PBX can turn it into a call (`None`: nobody).
    pub fn set_dial_hook(&self, hook: Option<mpsc::UnboundedSender<SimDial>>) {
        self.shared.lock().dial_hook = hook;
    }

    /// Full URLs of the callbacks fired so far (completed or failed), in order.
    pub fn callbacks_sent(&self) -> Vec<String> {
        self.shared
            .lock()
            .callbacks
            .iter()
            .map(|c| c.url.clone())
            .collect()
    }

    /// The callbacks fired so far with their outcome.
    pub fn callback_log(&self) -> Vec<SimCallback> {
        self.shared.lock().callbacks.clone()
    }

    /// Waits until at least `n` callbacks have been fired (or `timeout`), then returns them all.
    pub async fn wait_for_callbacks(&self, n: usize, timeout: Duration) -> Vec<SimCallback> {
        let mut rx = self.shared.cb_done.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|done| *done >= n)).await;
        self.callback_log()
    }

    /// Stops the web server, drops every open connection (black-holed ones included) and stops
    /// sending callbacks.
    pub fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
    }
}

async fn accept_loop(listener: TcpListener, weak: Weak<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "phone simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        if *stop.borrow() {
            return;
        }
        let Some(sh) = weak.upgrade() else {
            return;
        };
        let mut stop_conn = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let sh = sh.clone();
                async move { Ok::<_, Infallible>(sh.handle(req, peer).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop_conn.changed() => {}
            }
        });
    }
}

async fn callback_loop(
    mut rx: mpsc::UnboundedReceiver<CallbackJob>,
    weak: Weak<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let tls_client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .ok();
    loop {
        let job = tokio::select! {
            j = rx.recv() => match j { Some(j) => j, None => return },
            _ = stop.changed() => return,
        };
        let Some(sh) = weak.upgrade() else {
            return;
        };
        let ua = sh.user_agent();
        let timeout = sh.cfg.callback_timeout;
        drop(sh);
        let result = send_callback(&job.url, &ua, timeout, tls_client.as_ref()).await;
        let Some(sh) = weak.upgrade() else {
            return;
        };
        if let Err(e) = &result {
            tracing::debug!(url = %job.url, error = %e, "simulated phone callback failed");
        }
        let (status, error) = match result {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        let n = {
            let mut inner = sh.lock();
            inner.callbacks.push(SimCallback {
                event: job.event,
                url: job.url,
                status,
                error,
            });
            inner.callbacks.len()
        };
        sh.cb_done.send_replace(n);
    }
}

/// Sends one Action URL GET. Plain HTTP goes over a raw TCP connection so the request line is
/// byte for byte what the phone built; HTTPS goes through reqwest (which may normalise it).
async fn send_callback(
    url: &str,
    user_agent: &str,
    timeout: Duration,
    tls_client: Option<&reqwest::Client>,
) -> Result<u16, String> {
    if let Some(rest) = url.strip_prefix("http://") {
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = authority.to_owned();
        let connect_to = if authority.contains(':') && !authority.ends_with(']') {
            authority.clone()
        } else {
            format!("{authority}:80")
        };
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {user_agent}\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        tokio::time::timeout(timeout, raw_get(&connect_to, request))
            .await
            .map_err(|_| format!("timed out after {timeout:?}"))?
    } else if url.starts_with("https://") {
        let client = tls_client.ok_or("no TLS client")?;
        let resp = client
            .get(url)
            .header("user-agent", user_agent)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    } else {
        Err(format!("unsupported callback URL {url}"))
    }
}

async fn raw_get(connect_to: &str, request: String) -> Result<u16, String> {
    let mut s = TcpStream::connect(connect_to)
        .await
        .map_err(|e| format!("connect {connect_to}: {e}"))?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > CALLBACK_READ_LIMIT || response_complete(&buf) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("no HTTP status line in answer: {status_line:?}")),
    }
}

/// True once `buf` holds the whole answer (headers and a body of known length or a finished
/// chunked body). Otherwise the reader waits for the server to close.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|len| body.len() >= len);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn user_agent(&self) -> String {
        let vendor = match self.cfg.vendor {
            PhoneVendor::Yealink | PhoneVendor::YealinkLegacy => "Yealink",
            PhoneVendor::Fanvil => "Fanvil",
            PhoneVendor::Snom => "snom",
            PhoneVendor::Grandstream => "Grandstream",
            PhoneVendor::Htek => "Htek",
        };
        format!(
            "{vendor} {} {} {}",
            self.cfg.model,
            self.cfg.firmware,
            colon_mac(&self.cfg.mac)
        )
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let method = req.method().as_str().to_owned();
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| req.uri().to_string());
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let authorization = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let peer_ip = peer.ip().to_canonical();
        let outcome = {
            let mut inner = self.lock();
            let outcome = match inner.behaviour {
                SimBehaviour::BlackHole => None,
                SimBehaviour::Status(code) => {
                    Some(Outcome::new(code, "").note("fault injection: fixed status"))
                }
                SimBehaviour::Normal => {
                    let info = RequestInfo {
                        method: &method,
                        target: &target,
                        path: &path,
                        query: &query,
                        authorization: authorization.as_deref(),
                        peer: peer_ip,
                    };
                    Some(self.process(&mut inner, &info))
                }
            };
            let (authorized, executed, status, note) = match &outcome {
                Some(o) => (o.authorized, o.executed, Some(o.status), o.note.clone()),
                None => (false, false, None, "fault injection: black hole".to_owned()),
            };
            tracing::debug!(%target, ?status, executed, %note, "simulated phone request");
            inner.requests.push(SimRequest {
                method,
                target,
                peer: peer_ip,
                authorized,
                executed,
                status,
                note,
                at: chrono::Utc::now(),
            });
            outcome
        };
        match outcome {
            Some(o) => o.into_response(),
            None => std::future::pending().await,
        }
    }

    fn process(self: &Arc<Self>, inner: &mut Inner, rq: &RequestInfo<'_>) -> Outcome {
        if !self.cfg.allow_list.iter().any(|n| n.contains(&rq.peer)) {
            return Outcome::new(403, "<html><body>403 Forbidden</body></html>")
                .note("peer not in the Action URI allow-list");
        }
        let route = self.route(rq.path);
        if let Route::Grandstream(op) = &route {
            return self.exec_grandstream(inner, op, rq.query);
        }
        let params = parse_query(rq.query);
        let (query_login, cmd_params) = self.query_login(&params);
        let authorized = query_login || self.check_http_auth(inner, rq);
        if !authorized {
            return self.challenge(inner);
        }
        if matches!(route, Route::NotFound) {
            return Outcome::new(404, "<html><body>404 Not Found</body></html>")
                .authorized()
                .note("no such endpoint on this phone");
        }
        if self.cfg.remote_control_prompt && !inner.state.remote_control_allowed {
            inner.state.prompt_showing = true;
            return Outcome::new(200, PROMPT_BODY)
                .authorized()
                .note("waiting for the user to allow remote control");
        }
        let out = match route {
            Route::Keys { servlet } => self.exec_keys(inner, rq.query, cmd_params, servlet),
            Route::SnomCommand => self.exec_snom(inner, rq.query, cmd_params),
            Route::SnomIndex => Outcome::new(200, &self.status_page(inner)).executed(),
            Route::SnomReboot => {
                if param(cmd_params, "reboot").is_some() {
                    self.reboot(inner);
                    Outcome::new(200, OK_BODY).executed().note("reboot")
                } else {
                    Outcome::new(200, OK_BODY).note("no command")
                }
            }
            Route::Htek(rest) => self.exec_htek(inner, &rest, cmd_params),
            Route::Grandstream(_) | Route::NotFound => unreachable!("handled above"),
        };
        out.authorized()
    }

    fn route(&self, path: &str) -> Route {
        let p = path.to_ascii_lowercase();
        match self.cfg.vendor {
            PhoneVendor::Yealink => match p.as_str() {
                "/servlet" => Route::Keys { servlet: true },
                "/cgi-bin/configmanapp.com" | "/cgi-bin/cgiserver.exx" => {
                    Route::Keys { servlet: false }
                }
                _ => Route::NotFound,
            },
            PhoneVendor::YealinkLegacy => match p.as_str() {
                "/cgi-bin/configmanapp.com" | "/cgi-bin/cgiserver.exx" => {
                    Route::Keys { servlet: false }
                }
                _ => Route::NotFound,
            },
            PhoneVendor::Fanvil => match p.as_str() {
                "/cgi-bin/configmanapp.com" => Route::Keys { servlet: false },
                _ => Route::NotFound,
            },
            PhoneVendor::Snom => match p.as_str() {
                "/command.htm" => Route::SnomCommand,
                "/" | "/index.htm" => Route::SnomIndex,
                "/advanced_update.htm" => Route::SnomReboot,
                _ => Route::NotFound,
            },
            PhoneVendor::Grandstream => match p.strip_prefix("/cgi-bin/api-") {
                Some(op) => Route::Grandstream(op.to_owned()),
                None => Route::NotFound,
            },
            PhoneVendor::Htek => match path.strip_prefix("/Phone_ActionURL") {
                Some(rest) => Route::Htek(rest.to_owned()),
                None => Route::NotFound,
            },
        }
    }

    /// The Yealink T5 guide's in-query login: `p=login&q=login&username=U&pwd=P&jumpto=URI&`
    /// before the command. Returns whether it carried the right credentials and the parameters
    /// that follow it.
    fn query_login<'p>(&self, params: &'p [(String, String)]) -> (bool, &'p [(String, String)]) {
        if self.cfg.vendor != PhoneVendor::Yealink || params.len() < 5 {
            return (false, params);
        }
        let names: Vec<&str> = params[..5].iter().map(|(k, _)| k.as_str()).collect();
        if names != ["p", "q", "username", "pwd", "jumpto"]
            || params[0].1 != "login"
            || params[1].1 != "login"
        {
            return (false, params);
        }
        let ok = params[2].1 == self.cfg.username && params[3].1 == self.cfg.password;
        (ok, &params[5..])
    }

    fn check_http_auth(&self, inner: &Inner, rq: &RequestInfo<'_>) -> bool {
        match self.cfg.auth {
            SimAuth::None => true,
            SimAuth::Basic => rq.authorization.is_some_and(|h| self.check_basic(h)),
            SimAuth::Digest => rq
                .authorization
                .is_some_and(|h| self.check_digest(inner, h, rq.method, rq.target)),
        }
    }

    fn check_basic(&self, header: &str) -> bool {
        let Some((scheme, cred)) = header.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Some(decoded) = base64_decode(cred.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        text.split_once(':')
            .is_some_and(|(u, p)| u == self.cfg.username && p == self.cfg.password)
    }

    /// RFC 7616 with MD5 and `qop=auth`: the client must echo our realm, a nonce we issued,
    /// our opaque and the exact request target, and send
    /// `MD5(MD5(user:realm:pass):nonce:nc:cnonce:auth:MD5(method:uri))`.
    fn check_digest(&self, inner: &Inner, header: &str, method: &str, target: &str) -> bool {
        let header = header.trim();
        let Some(rest) = header
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("digest "))
            .map(|_| &header[7..])
        else {
            return false;
        };
        let p = parse_auth_params(rest);
        let get = |k: &str| {
            p.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let (
            Some(username),
            Some(realm),
            Some(nonce),
            Some(uri),
            Some(response),
            Some(qop),
            Some(nc),
            Some(cnonce),
        ) = (
            get("username"),
            get("realm"),
            get("nonce"),
            get("uri"),
            get("response"),
            get("qop"),
            get("nc"),
            get("cnonce"),
        )
        else {
            return false;
        };
        if username != self.cfg.username
            || realm != self.realm
            || !inner.nonces.iter().any(|n| n == nonce)
            || uri != target
            || qop != "auth"
            || get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("MD5"))
            || get("opaque") != Some(self.opaque.as_str())
        {
            return false;
        }
        let ha1 = md5_hex(&format!("{username}:{realm}:{}", self.cfg.password));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let expected = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"));
        response.eq_ignore_ascii_case(&expected)
    }

    fn challenge(&self, inner: &mut Inner) -> Outcome {
        let mut o = Outcome::new(401, "<html><body>401 Unauthorized</body></html>")
            .note("missing or wrong credentials");
        let value = match self.cfg.auth {
            SimAuth::Digest => {
                let nonce = random_hex(32);
                inner.nonces.push_back(nonce.clone());
                while inner.nonces.len() > NONCE_MEMORY {
                    inner.nonces.pop_front();
                }
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5, \
                     opaque=\"{}\"",
                    self.realm, self.opaque
                )
            }
            _ => format!("Basic realm=\"{}\"", self.realm),
        };
        o.headers.push(("www-authenticate", value));
        o
    }

    /// Yealink family, Fanvil: `key=…`, `key=number=…`, `number=…`, `phonecfg=get`.
    fn exec_keys(
        self: &Arc<Self>,
        inner: &mut Inner,
        raw_query: &str,
        params: &[(String, String)],
        servlet: bool,
    ) -> Outcome {
        if let Some(o) = self.query_gotchas(raw_query, params, &["key", "number", "phonecfg"]) {
            return o;
        }
        let (name, value) = &params[0];
        match name.as_str() {
            "key" => {
                if let Some(number) = strip_prefix_ci(value, "number=") {
                    let uri = param(params, "outgoing_uri");
                    let note = self.dial_command(inner, number, uri);
                    Outcome::new(200, OK_BODY).executed().note(note)
                } else {
                    self.run_keys(inner, value);
                    Outcome::new(200, OK_BODY)
                        .executed()
                        .note(format!("keys {value}"))
                }
            }
            "number" => {
                let uri = param(params, "outgoing_uri");
                let note = self.dial_command(inner, value, uri);
                Outcome::new(200, OK_BODY).executed().note(note)
            }
            "phonecfg" if servlet && value == "get" => {
                let body = self.phonecfg(inner, params);
                let mut o = Outcome::new(200, &body).executed().note("phonecfg=get");
                o.content_type = "text/plain";
                o
            }
            _ => Outcome::new(200, OK_BODY).note("unknown command"),
        }
    }

    /// The rules that make a phone answer 200 and do nothing: no command, a trailing `&`, the
    /// command parameter not first or not spelt exactly (`Key=` is not `key=`).
    fn query_gotchas(
        &self,
        raw_query: &str,
        params: &[(String, String)],
        commands: &[&str],
    ) -> Option<Outcome> {
        let ignored = |note: String| Some(Outcome::new(200, OK_BODY).note(note));
        if params.is_empty() {
            return ignored("no command".into());
        }
        if raw_query.ends_with('&') {
            return ignored("trailing '&': the phone ignores the command".into());
        }
        let first = params[0].0.as_str();
        if commands.contains(&first) {
            return None;
        }
        if let Some(c) = commands.iter().find(|c| c.eq_ignore_ascii_case(first)) {
            return ignored(format!(
                "parameter {first}= is not spelt {c}=: the phone ignores the command"
            ));
        }
        if params.iter().any(|(k, _)| commands.contains(&k.as_str())) {
            return ignored(format!(
                "{first}= comes before the command parameter: the phone ignores the command"
            ));
        }
        ignored("no command".into())
    }

    /// Snom `/command.htm`.
    fn exec_snom(
        self: &Arc<Self>,
        inner: &mut Inner,
        raw_query: &str,
        params: &[(String, String)],
    ) -> Outcome {
        let commands = ["key", "number", "key_dtmf", "RELEASE_ALL_CALLS"];
        if let Some(o) = self.query_gotchas(raw_query, params, &commands) {
            return o;
        }
        let (name, value) = &params[0];
        match name.as_str() {
            "key" => {
                self.run_keys(inner, value);
                Outcome::new(200, OK_BODY)
                    .executed()
                    .note(format!("keys {value}"))
            }
            "number" => {
                let uri = param(params, "outgoing_uri");
                let note = self.dial_command(inner, value, uri);
                let mut o = Outcome::new(302, "").executed().note(note);
                o.headers.push(("location", "/index.htm".to_owned()));
                o
            }
            "key_dtmf" => {
                if inner.call.as_ref().is_some_and(|c| c.answered.is_some()) {
                    inner.state.dtmf.push_str(value);
                }
                Outcome::new(200, OK_BODY).executed().note("dtmf")
            }
            "RELEASE_ALL_CALLS" => {
                self.local_hangup(inner, None);
                Outcome::new(200, OK_BODY)
                    .executed()
                    .note("release all calls")
            }
            _ => Outcome::new(200, OK_BODY).note("unknown command"),
        }
    }

    /// Htek: `/Phone_ActionURL&Command=1&Number=N&Account=A` or `…&key=K`.
    fn exec_htek(
        self: &Arc<Self>,
        inner: &mut Inner,
        rest: &str,
        query: &[(String, String)],
    ) -> Outcome {
        let mut params = parse_query(rest.trim_start_matches('&'));
        params.extend_from_slice(query);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        if let (Some("1"), Some(number)) = (get("Command"), get("Number")) {
            let line = get("Account").and_then(|a| a.parse().ok());
            let (number, at_line) = split_line(number);
            let note = self.dial(inner, &number, at_line.or(line).unwrap_or(1));
            return Outcome::new(200, OK_BODY).executed().note(note);
        }
        if let Some(keys) = get("key") {
            let keys = keys.to_owned();
            self.run_keys(inner, &keys);
            return Outcome::new(200, OK_BODY)
                .executed()
                .note(format!("keys {keys}"));
        }
        Outcome::new(200, OK_BODY).note("unknown command")
    }

    /// Grandstream `cgi-bin/api-*`: passcode in the query, JSON answers.
    fn exec_grandstream(self: &Arc<Self>, inner: &mut Inner, op: &str, query: &str) -> Outcome {
        let params = parse_query(query);
        let success = || {
            Outcome::new(200, r#"{"response":"success","body":true}"#)
                .json()
                .authorized()
        };
        let failure = || Outcome::new(200, r#"{"response":"error","body":false}"#).json();
        let passcode = param(&params, "passcode").or_else(|| param(&params, "password"));
        if passcode != Some(self.cfg.password.as_str()) {
            return failure().note("wrong or missing passcode");
        }
        if self.cfg.remote_control_prompt && !inner.state.remote_control_allowed {
            inner.state.prompt_showing = true;
            return success().note("waiting for the user to allow remote control");
        }
        match op {
            "make_call" => {
                let Some(number) = param(&params, "phonenumber") else {
                    return failure().authorized().note("no phonenumber");
                };
                let line = param(&params, "account")
                    .and_then(|a| a.parse::<u8>().ok())
                    .map_or(1, |a| a.saturating_add(1));
                let (number, at_line) = split_line(number);
                if inner.call.is_some() {
                    return failure().authorized().note("busy");
                }
                let note = self.dial(inner, &number, at_line.unwrap_or(line));
                success().executed().note(note)
            }
            "phone_operation" => {
                let cmd = param(&params, "cmd")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let done = match cmd.as_str() {
                    "acceptcall" => self.answer(inner, None),
                    "rejectcall" | "endcall" | "cancel" => self.local_hangup(inner, None),
                    "holdcall" => self.toggle_hold(inner),
                    _ => false,
                };
                if done {
                    success().executed().note(cmd)
                } else {
                    failure()
                        .authorized()
                        .executed()
                        .note(format!("{cmd}: no effect"))
                }
            }
            "sys_operation" => {
                if param(&params, "request").is_some_and(|r| r.eq_ignore_ascii_case("REBOOT")) {
                    self.reboot(inner);
                    success().executed().note("reboot")
                } else {
                    failure().authorized().note("unknown request")
                }
            }
            "send_key" => {
                let keys = param(&params, "keys").unwrap_or_default().replace(':', ";");
                self.run_keys(inner, &keys);
                success().executed().note(format!("keys {keys}"))
            }
            "get_line_status" => {
                let (state, remote) = match &inner.state.call {
                    SimCallState::Idle => ("idle", String::new()),
                    SimCallState::Dialing { number, .. } => ("calling", number.clone()),
                    SimCallState::Ringing { from } => ("ringing", from.clone()),
                    SimCallState::Talking { remote } => ("connected", remote.clone()),
                    SimCallState::Held { remote } => ("onhold", remote.clone()),
                };
                let body = serde_json::json!({
                    "response": "success",
                    "body": [{
                        "line": inner.call.as_ref().map_or(1, |c| c.line),
                        "state": state,
                        "remotenumber": remote,
                        "remotename": remote,
                    }],
                });
                Outcome::new(200, &body.to_string())
                    .json()
                    .authorized()
                    .executed()
            }
            _ => Outcome::new(404, r#"{"response":"error","body":"unknown api"}"#)
                .json()
                .authorized(),
        }
    }

    /// `phonecfg=get[&accounts=1][&dnd=1][&fw=1]`: one `Account|label|register name|display
    /// name|status|outgoing uri` line per account (the layout click-to-dial tools parse), then
    /// `DND|0/1` and `Firmware|…` when asked.
    fn phonecfg(&self, inner: &Inner, params: &[(String, String)]) -> String {
        let mut out = String::new();
        let wants = |k: &str| param(params, k) == Some("1");
        if wants("accounts") {
            out.push_str(&format!(
                "Account|{ext}|{ext}|{}|1|{ext}@{}\n",
                self.cfg.display_local(),
                self.cfg.sip_host,
                ext = self.cfg.extension
            ));
        }
        if wants("dnd") {
            out.push_str(&format!("DND|{}\n", u8::from(inner.state.dnd)));
        }
        if wants("fw") {
            out.push_str(&format!("Firmware|{}\n", self.cfg.firmware));
        }
        out
    }

    fn status_page(&self, inner: &Inner) -> String {
        format!(
            "<html><body><h1>{} {}</h1><p>{:?}</p></body></html>",
            self.cfg.model, self.cfg.extension, inner.state.call
        )
    }

    // ---- the phone itself -------------------------------------------------------------------

    fn set_call(&self, inner: &mut Inner, call: SimCallState) {
        inner.state.call_handle = inner.call.as_ref().map(|c| c.handle);
        inner.state.sip_call_id = inner.call.as_ref().map(|c| c.sip_call_id.clone());
        inner.state.call = call;
    }

    fn clear_call(&self, inner: &mut Inner) {
        inner.call = None;
        inner.state.muted = false;
        self.set_call(inner, SimCallState::Idle);
    }

    /// A dial command (`number=`, `key=number=`): `$` → `#`, `@N` → line, spaces dropped.
    fn dial_command(
        self: &Arc<Self>,
        inner: &mut Inner,
        number: &str,
        uri: Option<&str>,
    ) -> String {
        inner.state.outgoing_uri = uri.map(str::to_owned);
        let (number, line) = split_line(number);
        self.dial(inner, &number, line.unwrap_or(1))
    }

    /// A dial the phone carries out because of a command: reported to the dial hook.
    fn dial(self: &Arc<Self>, inner: &mut Inner, number: &str, line: u8) -> String {
        match self.start_dial(inner, number, line) {
            Ok(dial) => {
                if let Some(hook) = &inner.dial_hook {
                    let _ = hook.send(dial);
                }
                format!("dial {number} on line {line}")
            }
            Err(why) => why.into(),
        }
    }

    fn start_dial(
        self: &Arc<Self>,
        inner: &mut Inner,
        number: &str,
        line: u8,
    ) -> Result<SimDial, &'static str> {
        if number.is_empty() {
            return Err("empty number: nothing dialled");
        }
        if inner.call.is_some() {
            return Err("busy: dial ignored");
        }
        let handle = inner.next_handle;
        inner.next_handle += 1;
        inner.state.dial_input = None;
        inner.state.selected_line = line;
        inner.last_dialed = Some(number.to_owned());
        let sip_call_id = format!("{}@{}", uuid_like(), self.addr.ip());
        inner.call = Some(CallCtx {
            handle,
            sip_call_id: sip_call_id.clone(),
            incoming: false,
            remote: number.to_owned(),
            line,
            answered: None,
        });
        self.set_call(
            inner,
            SimCallState::Dialing {
                number: number.to_owned(),
                line,
            },
        );
        self.emit(inner, Ev::Outgoing);
        if let Some(delay) = self.cfg.answer_after {
            let weak = Arc::downgrade(self);
            let mut stop = self.shutdown.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
                if let Some(sh) = weak.upgrade() {
                    sh.far_end_answer(Some(handle));
                }
            });
        }
        Ok(SimDial {
            extension: self.cfg.extension.clone(),
            number: number.to_owned(),
            line,
            sip_call_id,
            handle,
        })
    }

    fn far_end_answer(&self, handle: Option<u32>) {
        let mut inner = self.lock();
        let Some(ctx) = inner.call.as_mut() else {
            return;
        };
        if ctx.incoming || ctx.answered.is_some() || handle.is_some_and(|h| h != ctx.handle) {
            return;
        }
        ctx.answered = Some(Instant::now());
        let remote = ctx.remote.clone();
        self.set_call(&mut inner, SimCallState::Talking { remote });
        self.emit(&mut inner, Ev::Established);
    }

    /// Answers a ringing call; `id` is the `ASW:<id>` handle when given.
    fn answer(&self, inner: &mut Inner, id: Option<&str>) -> bool {
        let Some(ctx) = inner.call.as_mut() else {
            return false;
        };
        if !ctx.incoming || ctx.answered.is_some() || !handle_matches(ctx.handle, id) {
            return false;
        }
        ctx.answered = Some(Instant::now());
        let remote = ctx.remote.clone();
        self.set_call(inner, SimCallState::Talking { remote });
        self.emit(inner, Ev::Established);
        true
    }

    /// The user ends the call (or clears the pre-dial screen).
    fn local_hangup(&self, inner: &mut Inner, id: Option<&str>) -> bool {
        let Some(ctx) = inner.call.clone() else {
            return inner.state.dial_input.take().is_some();
        };
        if !handle_matches(ctx.handle, id) {
            return false;
        }
        let ringing_here = ctx.incoming && ctx.answered.is_none();
        // Snom sends no Action URL when an incoming call is rejected (phones.md §7).
        if !(ringing_here && self.cfg.vendor == PhoneVendor::Snom) {
            self.emit(inner, Ev::Terminated);
        }
        self.clear_call(inner);
        true
    }

    fn toggle_hold(&self, inner: &mut Inner) -> bool {
        match inner.state.call.clone() {
            SimCallState::Talking { remote } => {
                self.set_call(inner, SimCallState::Held { remote });
                self.emit(inner, Ev::Hold);
                true
            }
            SimCallState::Held { remote } => {
                self.set_call(inner, SimCallState::Talking { remote });
                self.emit(inner, Ev::Unhold);
                true
            }
            _ => false,
        }
    }

    fn set_hold(&self, inner: &mut Inner, on: bool, id: Option<&str>) -> bool {
        if !inner
            .call
            .as_ref()
            .is_some_and(|c| handle_matches(c.handle, id))
        {
            return false;
        }
        let held = matches!(inner.state.call, SimCallState::Held { .. });
        let talking = matches!(inner.state.call, SimCallState::Talking { .. });
        if (on && talking) || (!on && held) {
            self.toggle_hold(inner)
        } else {
            false
        }
    }

    fn set_dnd(&self, inner: &mut Inner, on: bool) {
        if inner.state.dnd != on {
            inner.state.dnd = on;
            self.emit(inner, if on { Ev::DndOn } else { Ev::DndOff });
        }
    }

    fn reboot(&self, inner: &mut Inner) {
        // A rebooting phone drops its call without reporting it; DND is configuration and
        // survives.
        inner.call = None;
        inner.state.muted = false;
        inner.state.dial_input = None;
        inner.state.reboots += 1;
        self.set_call(inner, SimCallState::Idle);
        self.emit(inner, Ev::Setup);
    }

    /// Presses a `;`-separated key sequence.
    fn run_keys(self: &Arc<Self>, inner: &mut Inner, keys: &str) {
        for key in keys.split(';').filter(|k| !k.is_empty()) {
            inner.state.keys.push(key.to_owned());
            self.press(inner, key);
        }
    }

    fn press(self: &Arc<Self>, inner: &mut Inner, raw: &str) {
        let vendor = self.cfg.vendor;
        let snom = vendor == PhoneVendor::Snom;
        let (name, arg) = match raw.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (raw, None),
        };
        // Snom: KEY[,press ms[,pause ms]].
        let name = if snom {
            name.split(',').next().unwrap_or(name)
        } else {
            name
        };
        if is_dial_string(name) {
            self.dial_chars(inner, name);
            return;
        }
        let upper = name.trim().to_ascii_uppercase();
        let key = match upper.strip_prefix("F_") {
            Some(rest) if !rest.is_empty() => rest,
            _ => upper.as_str(),
        };
        match key {
            "POUND" => self.dial_chars(inner, "#"),
            "OK" | "ENTER" | "SEND" => {
                if !self.answer(inner, None) {
                    self.send_input(inner);
                }
            }
            "SPEAKER" | "HANDFREE" | "HANDSFREE" | "OFFHOOK" | "HEADSET" => {
                if self.answer(inner, None) {
                    return;
                }
                if inner.call.is_none() {
                    if inner
                        .state
                        .dial_input
                        .as_ref()
                        .is_some_and(|d| !d.is_empty())
                    {
                        self.send_input(inner);
                    } else {
                        inner.state.dial_input = Some(String::new());
                    }
                }
            }
            "ASW" | "ANSWER" => {
                self.answer(inner, arg);
            }
            "X" | "CALLEND" | "CANCEL" | "ONHOOK" | "DISCONNECT" | "RELEASE" | "ENDCALL" => {
                self.local_hangup(inner, arg);
            }
            "HOLD" | "R" => {
                if arg.is_some() {
                    self.set_hold(inner, true, arg);
                } else {
                    self.toggle_hold(inner);
                }
            }
            "UNHOLD" => {
                self.set_hold(inner, false, arg);
            }
            "MUTE" => {
                if matches!(
                    inner.state.call,
                    SimCallState::Talking { .. } | SimCallState::Held { .. }
                ) {
                    inner.state.muted = !inner.state.muted;
                    let ev = if inner.state.muted {
                        Ev::Mute
                    } else {
                        Ev::Unmute
                    };
                    self.emit(inner, ev);
                }
            }
            "DNDON" if !snom => self.set_dnd(inner, true),
            "DNDOFF" if !snom => self.set_dnd(inner, false),
            "DND" if snom => {
                let on = !inner.state.dnd;
                self.set_dnd(inner, on);
            }
            "REBOOT" if !snom => self.reboot(inner),
            "AUTOP" if !snom => inner.state.autop += 1,
            "RD" | "REDIAL" => {
                if let Some(n) = inner.last_dialed.clone() {
                    if inner.call.is_none() {
                        let line = inner.state.selected_line;
                        self.dial(inner, &n, line);
                    }
                }
            }
            other => tracing::debug!(key = other, "simulated phone: key without effect"),
        }
    }

    /// Digits (and `@N`) typed: DTMF during a call, pre-dial input otherwise.
    fn dial_chars(&self, inner: &mut Inner, s: &str) {
        let (digits, line) = split_line(s);
        match &inner.call {
            Some(c) if c.answered.is_some() => inner.state.dtmf.push_str(&digits),
            Some(_) => {}
            None => {
                inner
                    .state
                    .dial_input
                    .get_or_insert_with(String::new)
                    .push_str(&digits);
                if let Some(l) = line {
                    inner.state.selected_line = l;
                }
            }
        }
    }

    fn send_input(self: &Arc<Self>, inner: &mut Inner) {
        if inner.call.is_some() {
            return;
        }
        let Some(number) = inner.state.dial_input.clone().filter(|d| !d.is_empty()) else {
            return;
        };
        let line = inner.state.selected_line;
        self.dial(inner, &number, line);
    }

    // ---- Action URL -------------------------------------------------------------------------

    /// Queues the callback for `ev` with the variables as they are now. Sending happens in the
    /// background, in queue order.
    fn emit(&self, inner: &mut Inner, ev: Ev) {
        let Some(base) = inner.callback_base.clone() else {
            return;
        };
        let Some(event) = event_name(self.cfg.vendor, ev) else {
            return;
        };
        let template = self
            .cfg
            .action_url_query
            .as_deref()
            .unwrap_or(PhoneSimConfig::default_query_template(self.cfg.vendor));
        let query = self.expand(template, inner);
        let url = format!("{}/{event}?{query}", base.trim_end_matches('/'));
        let _ = self.cb_tx.send(CallbackJob {
            event: event.to_owned(),
            url,
        });
    }

    /// Substitutes `$name` variables: the longest name this vendor knows wins; a known name the
    /// phone cannot fill now, and any unknown name, stays literal.
    fn expand(&self, template: &str, inner: &Inner) -> String {
        let raw_spaces = self.cfg.vendor == PhoneVendor::Grandstream;
        let mut out = String::with_capacity(template.len() * 2);
        let mut rest = template;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            let ident_len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
                .count();
            let mut consumed = 0;
            for len in (1..=ident_len).rev() {
                match self.var(&after[..len], inner) {
                    Var::Unknown => continue,
                    Var::Unfilled => {
                        out.push('$');
                        out.push_str(&after[..len]);
                    }
                    Var::Value(v) => out.push_str(&encode_value(&v, raw_spaces)),
                }
                consumed = len;
                break;
            }
            if consumed == 0 {
                out.push('$');
            }
            rest = &after[consumed..];
        }
        out.push_str(rest);
        out
    }

    /// One variable, by the vendor's documented table (phones.md §1.5, §2, §4; the seeds).
    fn var(&self, name: &str, inner: &Inner) -> Var {
        use PhoneVendor as V;
        let cfg = &self.cfg;
        let vendor = cfg.vendor;
        let ctx = inner.call.as_ref();
        let ip = self.addr.ip().to_string();
        let sip = |user: &str| format!("sip:{user}@{}", cfg.sip_host);
        let call = |f: &dyn Fn(&CallCtx) -> Option<String>| match ctx {
            Some(c) => f(c).map_or(Var::Unfilled, Var::Value),
            None => Var::Unfilled,
        };
        let direction =
            |c: &CallCtx| Some(if c.incoming { "incoming" } else { "outgoing" }.to_owned());
        let duration =
            |c: &CallCtx| Some(c.answered.map_or(0, |t| t.elapsed().as_secs()).to_string());
        match vendor {
            V::Yealink | V::YealinkLegacy | V::Fanvil | V::Htek => {
                let v84 = vendor == V::Yealink;
                // Fanvil: $remote and $display_remote "only on incoming calls".
                let remote_ok = |c: &CallCtx| vendor != V::Fanvil || c.incoming;
                match name {
                    "mac" => Var::Value(cfg.mac.clone()),
                    "ip" => Var::Value(ip),
                    "model" => Var::Value(cfg.model.clone()),
                    "firmware" => Var::Value(cfg.firmware.clone()),
                    "active_url" => call(&|_| Some(sip(&cfg.extension))),
                    "active_user" => call(&|_| Some(cfg.extension.clone())),
                    "active_host" => call(&|_| Some(cfg.sip_host.clone())),
                    "local" => call(&|_| Some(sip(&cfg.extension))),
                    "display_local" => call(&|_| Some(cfg.display_local())),
                    "remote" => call(&|c| remote_ok(c).then(|| sip(&c.remote))),
                    "display_remote" => call(&|c| remote_ok(c).then(|| c.remote.clone())),
                    "call_id" => call(&|c| Some(c.handle.to_string())),
                    "duration" if vendor != V::Fanvil => call(&duration),
                    "callDirection" if vendor != V::Fanvil => call(&direction),
                    "callerID" if v84 => call(&|c| c.incoming.then(|| c.remote.clone())),
                    "calledNumber" if v84 => call(&|c| (!c.incoming).then(|| c.remote.clone())),
                    _ => Var::Unknown,
                }
            }
            V::Snom => match name {
                "mac" => Var::Value(cfg.mac.clone()),
                "phone_ip" | "local_ip" => Var::Value(ip),
                "nr_ongoing_calls" => Var::Value(usize::from(ctx.is_some()).to_string()),
                "active_url" => call(&|_| Some(sip(&cfg.extension))),
                "active_user" => call(&|_| Some(cfg.extension.clone())),
                "active_host" => call(&|_| Some(cfg.sip_host.clone())),
                "local" => call(&|_| Some(sip(&cfg.extension))),
                "display_local" => call(&|_| Some(cfg.display_local())),
                "remote" => call(&|c| Some(sip(&c.remote))),
                "display_remote" => call(&|c| Some(c.remote.clone())),
                "call-id" => call(&|c| Some(c.sip_call_id.clone())),
                "csta_id" => call(&|c| Some(c.handle.to_string())),
                _ => Var::Unknown,
            },
            V::Grandstream => match name {
                "phone_ip" => Var::Value(ip),
                "mac" => Var::Value(cfg.mac.clone()),
                "product" => Var::Value(cfg.model.clone()),
                "program_version" => Var::Value(cfg.firmware.clone()),
                "hardware_version" => Var::Value("V1.0A".into()),
                "language" => Var::Value("English".into()),
                "local" => call(&|_| Some(cfg.extension.clone())),
                "display_local" => call(&|_| Some(cfg.display_local())),
                "remote" => call(&|c| Some(c.remote.clone())),
                "display_remote" => call(&|c| Some(c.remote.clone())),
                "call-id" => call(&|c| Some(c.sip_call_id.clone())),
                "active_user" => call(&|_| Some(cfg.extension.clone())),
                "active_host" => call(&|_| Some(cfg.sip_host.clone())),
                "duration" => call(&duration),
                "calldirection" => call(&direction),
                _ => Var::Unknown,
            },
        }
    }
}

enum Var {
    /// Not a variable of this vendor: the text stays as written.
    Unknown,
    /// A variable the phone cannot fill for this event: it stays literal (`$remote`).
    Unfilled,
    Value(String),
}

/// The Action URL event (path segment) each vendor uses; `None` = the vendor has no such event.
fn event_name(vendor: PhoneVendor, ev: Ev) -> Option<&'static str> {
    use PhoneVendor as V;
    Some(match vendor {
        V::Yealink | V::YealinkLegacy | V::Fanvil | V::Htek => match ev {
            Ev::Incoming => "incoming_call",
            Ev::Outgoing => "outgoing_call",
            Ev::Established => "call_established",
            Ev::Terminated => "call_terminated",
            Ev::DndOn => "dnd_on",
            Ev::DndOff => "dnd_off",
            Ev::Hold => "hold",
            Ev::Unhold => "unhold",
            Ev::Mute => "mute",
            Ev::Unmute => "unmute",
            Ev::Missed => "missed_call",
            Ev::Setup => "setup_completed",
        },
        V::Snom => match ev {
            Ev::Incoming => "incoming",
            Ev::Outgoing => "outgoing",
            Ev::Established => "connected",
            Ev::Terminated => "disconnected",
            Ev::DndOn => "dnd_on",
            Ev::DndOff => "dnd_off",
            Ev::Hold => "hold",
            Ev::Unhold => "unhold",
            Ev::Missed => "missed",
            Ev::Setup => "setup",
            Ev::Mute | Ev::Unmute => return None,
        },
        V::Grandstream => match ev {
            Ev::Incoming => "incoming_call",
            Ev::Outgoing => "outgoing_call",
            Ev::Established => "established_call",
            Ev::Terminated => "terminated_call",
            Ev::DndOn => "dnd_on",
            Ev::DndOff => "dnd_off",
            Ev::Hold => "hold_call",
            Ev::Unhold => "resume_call",
            Ev::Missed => "missed_call",
            Ev::Setup => "boot_completed",
            Ev::Mute | Ev::Unmute => return None,
        },
    })
}

// ---- helpers --------------------------------------------------------------------------------

/// `ASW:<id>`-style handle check: no id matches the current call.
fn handle_matches(handle: u32, id: Option<&str>) -> bool {
    id.map_or(true, |id| id.trim().parse::<u32>() == Ok(handle))
}

/// Form-decodes a query: `&`-separated, the name up to the first `=`, `+` = space, `%XX`.
fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}

/// A dialled string as the phone reads it: spaces dropped, `$` = `#`, a trailing `@N` (N
/// digits) selects line N. `1234@10.0.0.1` is a SIP URI and stays whole.
fn split_line(s: &str) -> (String, Option<u8>) {
    let s: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == '$' { '#' } else { c })
        .collect();
    if let Some((number, line)) = s.rsplit_once('@') {
        if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) {
            return (number.to_owned(), line.parse().ok());
        }
    }
    (s, None)
}

/// Digits, `*`, `#`, `$`, `+`, optionally followed by `@N`; or `@N` alone.
fn is_dial_string(s: &str) -> bool {
    let (digits, line) = match s.rsplit_once('@') {
        Some((d, l)) => (d, Some(l)),
        None => (s, None),
    };
    let digits_ok = digits
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | '$' | '+'));
    let line_ok = line.map_or(true, |l| {
        !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())
    });
    digits_ok && line_ok && (!digits.is_empty() || line.is_some())
}

/// Percent-encodes what cannot stand in a request line, keeping `+`, `@`, `:` and the like as
/// phones send them. With `raw_spaces` (Grandstream), spaces go out raw.
fn encode_value(v: &str, raw_spaces: bool) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        let plain = c.is_ascii_graphic()
            && !matches!(
                c,
                '"' | '#' | '%' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}'
            );
        if plain || (c == ' ' && raw_spaces) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Splits `k=v, k="v, with comma"` auth parameters (RFC 7235 quoted-strings with `\` escapes).
fn parse_auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() && chars.peek().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((name.trim().to_owned(), value.trim().to_owned()));
        if chars.peek().is_none() {
            break;
        }
    }
    out
}

/// Standard base64 (RFC 4648) with optional padding; `None` on anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn md5_hex(s: &str) -> String {
    let digest = Md5::digest(s.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(len: usize) -> String {
    (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rand::random::<usize>() % 16]))
        .collect()
}

fn uuid_like() -> String {
    let h = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `001565aabb01` → `00:15:65:aa:bb:01` (as in a Yealink User-Agent).
fn colon_mac(mac: &str) -> String {
    let hex: String = mac.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    if hex.len() != 12 {
        return mac.to_owned();
    }
    (0..6)
        .map(|i| &hex[i * 2..i * 2 + 2])
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    const FOUR: [PhoneVendor; 4] = [
        PhoneVendor::Yealink,
        PhoneVendor::YealinkLegacy,
        PhoneVendor::Fanvil,
        PhoneVendor::Snom,
    ];

    /// The documented command endpoint of each vendor.
    fn cmd_path(v: PhoneVendor) -> &'static str {
        match v {
            PhoneVendor::Yealink => "/servlet",
            PhoneVendor::YealinkLegacy | PhoneVendor::Fanvil => "/cgi-bin/ConfigManApp.com",
            PhoneVendor::Snom => "/command.htm",
            PhoneVendor::Grandstream => "/cgi-bin/api-make_call",
            PhoneVendor::Htek => "/Phone_ActionURL",
        }
    }

    /// The key that switches DND on: `DNDOn` on Yealink/Fanvil, the `DND` toggle on Snom.
    fn dnd_on_key(v: PhoneVendor) -> &'static str {
        if v == PhoneVendor::Snom {
            "DND"
        } else {
            "DNDOn"
        }
    }

    async fn start(cfg: PhoneSimConfig) -> PhoneSim {
        PhoneSim::start("127.0.0.1:0".parse().unwrap(), cfg)
            .await
            .unwrap()
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// GET with the factory credentials.
    async fn get(sim: &PhoneSim, target: &str) -> reqwest::Response {
        client()
            .get(format!("{}{target}", sim.base_url()))
            .basic_auth("admin", Some("admin"))
            .send()
            .await
            .unwrap()
    }

    fn last(sim: &PhoneSim) -> SimRequest {
        sim.requests().pop().expect("a recorded request")
    }

    /// A tiny Action URL receiver: records the request target of every GET.
    async fn receiver() -> (String, Arc<StdMutex<Vec<String>>>) {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let l2 = log.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let l = l2.clone();
            async move {
                l.lock().unwrap().push(req.uri().to_string());
                "ok"
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (format!("http://{addr}/action-url"), log)
    }

    fn hex_md5(s: &str) -> String {
        Md5::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// `name="value"` (or `name=value`) from a challenge, the simple way a test client would.
    fn challenge_param(header: &str, name: &str) -> Option<String> {
        let start = header.find(&format!("{name}="))? + name.len() + 1;
        let rest = &header[start..];
        Some(match rest.strip_prefix('"') {
            Some(q) => q[..q.find('"')?].to_owned(),
            None => rest.split(',').next()?.trim().to_owned(),
        })
    }

    #[tokio::test]
    async fn dial_with_plus_pound_and_line_on_each_vendor() {
        for v in FOUR {
            let sim = start(PhoneSimConfig::for_vendor(v, "101")).await;
            let path = cmd_path(v);
            // Key sequence: off hook, a whole number with %2B and $ (= #) on line 2, send.
            let target = format!("{path}?key=SPEAKER;%2B4930$12@2;ENTER");
            let resp = get(&sim, &target).await;
            assert_eq!(resp.status(), 200, "{v:?}");
            let r = last(&sim);
            assert_eq!(r.target, target, "{v:?}: target recorded as received");
            assert!(r.authorized && r.executed, "{v:?}: {r:?}");
            assert_eq!(
                sim.state().call,
                SimCallState::Dialing {
                    number: "+4930#12".into(),
                    line: 2
                },
                "{v:?}"
            );
            assert_eq!(get(&sim, &format!("{path}?key=CANCEL")).await.status(), 200);
            assert_eq!(sim.state().call, SimCallState::Idle, "{v:?}");

            // number=…&outgoing_uri=… (Snom answers 302 to index.htm).
            let target = format!("{path}?number=%2B15550100@2&outgoing_uri=101@127.0.0.1");
            let resp = get(&sim, &target).await;
            if v == PhoneVendor::Snom {
                assert_eq!(resp.status(), 302);
                assert_eq!(resp.headers()["location"], "/index.htm");
            } else {
                assert_eq!(resp.status(), 200, "{v:?}");
            }
            assert!(last(&sim).executed);
            let st = sim.state();
            assert_eq!(
                st.call,
                SimCallState::Dialing {
                    number: "+15550100".into(),
                    line: 2
                },
                "{v:?}"
            );
            assert_eq!(st.outgoing_uri.as_deref(), Some("101@127.0.0.1"));
            sim.hang_up().await;

            // An unescaped + is a space to the phone: the + is lost.
            get(
                &sim,
                &format!("{path}?number=+15550100&outgoing_uri=101@127.0.0.1"),
            )
            .await;
            assert_eq!(
                sim.state().call,
                SimCallState::Dialing {
                    number: "15550100".into(),
                    line: 1
                },
                "{v:?}"
            );
            sim.shutdown();
        }
    }

    #[tokio::test]
    async fn yealink_dials_with_key_number_form_and_seed_sequences() {
        let sim = start(PhoneSimConfig::default()).await;
        get(
            &sim,
            "/servlet?key=number=%2B4930123&outgoing_uri=101@127.0.0.1",
        )
        .await;
        assert_eq!(
            sim.state().call,
            SimCallState::Dialing {
                number: "+4930123".into(),
                line: 1
            }
        );
        get(&sim, "/servlet?key=X").await;
        // The two forms of the Russian seed document.
        get(&sim, "/servlet?key=F_HANDFREE;2;3;2;3;@1;ENTER").await;
        assert_eq!(
            sim.state().call,
            SimCallState::Dialing {
                number: "2323".into(),
                line: 1
            }
        );
        get(&sim, "/cgi-bin/ConfigManApp.com?key=X").await;
        get(&sim, "/cgi-bin/ConfigManApp.com?key=F_HANDFREE;2323@1;OK").await;
        assert_eq!(
            sim.state().call,
            SimCallState::Dialing {
                number: "2323".into(),
                line: 1
            }
        );
        // The old cgiServer.exx form is still accepted by current Yealink firmware.
        get(&sim, "/cgi-bin/cgiServer.exx?key=X").await;
        assert_eq!(sim.state().call, SimCallState::Idle);
        assert!(last(&sim).executed);
    }

    #[tokio::test]
    async fn dnd_on_and_off_via_keys() {
        for v in FOUR {
            let sim = start(PhoneSimConfig::for_vendor(v, "102")).await;
            let path = cmd_path(v);
            if v == PhoneVendor::Snom {
                // Snom has one DND key, a toggle; Yealink's DNDOn means nothing to it.
                get(&sim, "/command.htm?key=DNDOn").await;
                assert!(!sim.state().dnd);
                get(&sim, "/command.htm?key=DND").await;
                assert!(sim.state().dnd);
                get(&sim, "/command.htm?key=DND").await;
                assert!(!sim.state().dnd);
            } else {
                get(&sim, &format!("{path}?key=DNDOn")).await;
                assert!(sim.state().dnd, "{v:?}");
                get(&sim, &format!("{path}?key=F_DNDOFF")).await;
                assert!(!sim.state().dnd, "{v:?}: F_ upper-case variant");
                get(&sim, &format!("{path}?key=dndon")).await;
                assert!(sim.state().dnd, "{v:?}: key values are case-insensitive");
                get(&sim, &format!("{path}?key=DNDOff")).await;
                assert!(!sim.state().dnd, "{v:?}");
            }
            assert!(sim.requests().iter().all(|r| r.executed));
        }
    }

    #[tokio::test]
    async fn key_sequence_answers_mutes_holds_and_hangs_up() {
        let sim = start(PhoneSimConfig::default()).await;
        sim.incoming_call("+15550100", "abc@pbx").await;
        assert_eq!(
            sim.state().call,
            SimCallState::Ringing {
                from: "+15550100".into()
            }
        );
        assert_eq!(sim.state().call_handle, Some(1));
        get(&sim, "/servlet?key=ASW;MUTE").await;
        let st = sim.state();
        assert_eq!(
            st.call,
            SimCallState::Talking {
                remote: "+15550100".into()
            }
        );
        assert!(st.muted);
        assert_eq!(st.keys, ["ASW", "MUTE"]);
        get(&sim, "/servlet?key=F_HOLD").await;
        assert!(matches!(sim.state().call, SimCallState::Held { .. }));
        get(&sim, "/servlet?key=HOLD").await;
        assert!(matches!(sim.state().call, SimCallState::Talking { .. }));
        get(&sim, "/servlet?key=HOLD:1").await;
        assert!(matches!(sim.state().call, SimCallState::Held { .. }));
        get(&sim, "/servlet?key=UNHOLD:1").await;
        assert!(matches!(sim.state().call, SimCallState::Talking { .. }));
        // DTMF during the call.
        get(&sim, "/servlet?key=1;2;POUND").await;
        assert_eq!(sim.state().dtmf, "12#");
        // A handle of another call does nothing; the right one ends the call.
        get(&sim, "/servlet?key=CANCEL:999").await;
        assert!(matches!(sim.state().call, SimCallState::Talking { .. }));
        get(&sim, "/servlet?key=CALLEND").await;
        let st = sim.state();
        assert_eq!(st.call, SimCallState::Idle);
        assert!(!st.muted);
        // Reboot and AutoP are recorded.
        get(&sim, "/servlet?key=Reboot;AutoP;F_REBOOT").await;
        let st = sim.state();
        assert_eq!((st.reboots, st.autop), (2, 1));

        // Fanvil: SPEAKER; number; ENTER (as FanvilController does).
        let fanvil = start(PhoneSimConfig::for_vendor(PhoneVendor::Fanvil, "103")).await;
        get(&fanvil, "/cgi-bin/ConfigManApp.com?key=SPEAKER;8530;ENTER").await;
        assert_eq!(
            fanvil.state().call,
            SimCallState::Dialing {
                number: "8530".into(),
                line: 1
            }
        );
    }

    #[tokio::test]
    async fn basic_auth_is_required() {
        for v in FOUR {
            let sim = start(PhoneSimConfig::for_vendor(v, "101")).await;
            let url = format!("{}{}?key={}", sim.base_url(), cmd_path(v), dnd_on_key(v));
            let resp = client().get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 401, "{v:?}");
            let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Basic realm=\""), "{challenge}");
            let r = last(&sim);
            assert!(!r.authorized && !r.executed);
            let resp = client()
                .get(&url)
                .basic_auth("admin", Some("wrong"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{v:?}");
            assert!(!sim.state().dnd);
            let resp = client()
                .get(&url)
                .basic_auth("admin", Some("admin"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{v:?}");
            assert!(sim.state().dnd, "{v:?}");
            let r = last(&sim);
            assert!(r.authorized && r.executed);
        }
    }

    #[tokio::test]
    async fn digest_challenge_and_response_are_verified() {
        for v in FOUR {
            let sim = start(PhoneSimConfig {
                auth: SimAuth::Digest,
                password: "s3cret".into(),
                ..PhoneSimConfig::for_vendor(v, "101")
            })
            .await;
            let target = format!("{}?key={}", cmd_path(v), dnd_on_key(v));
            let url = format!("{}{target}", sim.base_url());
            let resp = client().get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 401, "{v:?}");
            let ch = resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(ch.starts_with("Digest "), "{ch}");
            assert!(
                ch.contains("qop=\"auth\"") && ch.contains("algorithm=MD5"),
                "{ch}"
            );
            let realm = challenge_param(&ch, "realm").unwrap();
            let nonce = challenge_param(&ch, "nonce").unwrap();
            let opaque = challenge_param(&ch, "opaque").unwrap();
            let authz = |password: &str, uri: &str| {
                let ha1 = hex_md5(&format!("admin:{realm}:{password}"));
                let ha2 = hex_md5(&format!("GET:{uri}"));
                let response = hex_md5(&format!("{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}"));
                format!(
                    "Digest username=\"admin\", realm=\"{realm}\", nonce=\"{nonce}\", \
                     uri=\"{uri}\", algorithm=MD5, response=\"{response}\", \
                     opaque=\"{opaque}\", qop=auth, nc=00000001, cnonce=\"0a4f113b\""
                )
            };
            // Wrong password, then a response computed for another URI: refused.
            for bad in [authz("admin", &target), authz("s3cret", "/other")] {
                let resp = client()
                    .get(&url)
                    .header("authorization", bad)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 401, "{v:?}");
            }
            assert!(!sim.state().dnd);
            let resp = client()
                .get(&url)
                .header("authorization", authz("s3cret", &target))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{v:?}");
            assert!(sim.state().dnd, "{v:?}");
            assert!(last(&sim).executed);
            // Basic is not accepted by a Digest phone.
            let resp = client()
                .get(&url)
                .basic_auth("admin", Some("s3cret"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{v:?}");
        }
    }

    #[tokio::test]
    async fn allow_list_rejects_other_peers() {
        for v in FOUR {
            for allow_list in [vec!["10.0.0.0/8".parse().unwrap()], Vec::new()] {
                let sim = start(PhoneSimConfig {
                    allow_list,
                    ..PhoneSimConfig::for_vendor(v, "101")
                })
                .await;
                let resp = get(&sim, &format!("{}?key={}", cmd_path(v), dnd_on_key(v))).await;
                assert_eq!(resp.status(), 403, "{v:?}");
                let r = last(&sim);
                assert!(!r.authorized && !r.executed);
                assert_eq!(r.peer, IpAddr::from([127, 0, 0, 1]));
                assert!(!sim.state().dnd);
            }
        }
    }

    #[tokio::test]
    async fn prompt_blocks_execution_until_accepted() {
        for v in FOUR {
            let sim = start(PhoneSimConfig {
                remote_control_prompt: true,
                ..PhoneSimConfig::for_vendor(v, "101")
            })
            .await;
            let target = format!("{}?key={}", cmd_path(v), dnd_on_key(v));
            assert_eq!(get(&sim, &target).await.status(), 200, "{v:?}");
            let r = last(&sim);
            assert!(r.authorized && !r.executed, "{v:?}: {r:?}");
            let st = sim.state();
            assert!(st.prompt_showing && !st.dnd, "{v:?}");
            sim.accept_prompt();
            assert_eq!(get(&sim, &target).await.status(), 200);
            assert!(last(&sim).executed);
            let st = sim.state();
            assert!(st.dnd && !st.prompt_showing && st.remote_control_allowed);
        }
    }

    #[tokio::test]
    async fn trailing_ampersand_or_key_not_first_is_not_executed() {
        for v in FOUR {
            let sim = start(PhoneSimConfig::for_vendor(v, "101")).await;
            let path = cmd_path(v);
            let key = dnd_on_key(v);
            for target in [
                format!("{path}?key={key}&"),
                format!("{path}?foo=1&key={key}"),
                format!("{path}?Key={key}"),
                format!("{path}?outgoing_uri=101@127.0.0.1&number=200"),
                format!("{path}?number=200&outgoing_uri=101@127.0.0.1&"),
            ] {
                let resp = get(&sim, &target).await;
                assert_eq!(resp.status(), 200, "{v:?} {target}");
                let r = last(&sim);
                assert_eq!(r.target, target);
                assert!(r.authorized && !r.executed, "{v:?} {target}: {r:?}");
            }
            let st = sim.state();
            assert!(!st.dnd && st.call == SimCallState::Idle, "{v:?}");
            get(&sim, &format!("{path}?key={key}")).await;
            assert!(last(&sim).executed && sim.state().dnd, "{v:?}");
        }
    }

    #[tokio::test]
    async fn black_hole_times_out_and_status_is_forced() {
        let sim = start(PhoneSimConfig {
            behaviour: SimBehaviour::BlackHole,
            ..PhoneSimConfig::default()
        })
        .await;
        let err = reqwest::Client::new()
            .get(format!("{}/servlet?key=DNDOn", sim.base_url()))
            .basic_auth("admin", Some("admin"))
            .timeout(Duration::from_millis(300))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        let r = last(&sim);
        assert_eq!(r.status, None);
        assert!(!r.executed && !sim.state().dnd);

        sim.set_behaviour(SimBehaviour::Status(503));
        let resp = get(&sim, "/servlet?key=DNDOn").await;
        assert_eq!(resp.status(), 503);
        assert!(!last(&sim).executed && !sim.state().dnd);

        sim.set_behaviour(SimBehaviour::Normal);
        assert_eq!(get(&sim, "/servlet?key=DNDOn").await.status(), 200);
        assert!(sim.state().dnd);
        sim.shutdown();
        let gone = reqwest::Client::new()
            .get(format!("{}/servlet?key=DNDOff", sim.base_url()))
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        assert!(gone.is_err(), "the server is shut down");
    }

    #[tokio::test]
    async fn vendor_endpoints_differ() {
        let legacy = start(PhoneSimConfig::for_vendor(PhoneVendor::YealinkLegacy, "1")).await;
        assert_eq!(get(&legacy, "/servlet?key=DNDOn").await.status(), 404);
        assert_eq!(
            get(&legacy, "/cgi-bin/cgiServer.exx?key=DNDOn")
                .await
                .status(),
            200
        );
        let fanvil = start(PhoneSimConfig::for_vendor(PhoneVendor::Fanvil, "2")).await;
        assert_eq!(get(&fanvil, "/servlet?key=DNDOn").await.status(), 404);
        let snom = start(PhoneSimConfig::for_vendor(PhoneVendor::Snom, "3")).await;
        assert_eq!(get(&snom, "/servlet?key=DND").await.status(), 404);
        assert_eq!(get(&snom, "/index.htm").await.status(), 200);
        get(&snom, "/command.htm?number=200&outgoing_uri=3@127.0.0.1").await;
        get(&snom, "/command.htm?RELEASE_ALL_CALLS").await;
        assert_eq!(snom.state().call, SimCallState::Idle);
        get(&snom, "/advanced_update.htm?reboot=Reboot").await;
        assert_eq!(snom.state().reboots, 1);
        // Snom key syntax KEY,press-ms,pause-ms.
        get(&snom, "/command.htm?key=DND,100,200").await;
        assert!(snom.state().dnd);
    }

    #[tokio::test]
    async fn yealink_phonecfg_and_query_login() {
        let sim = start(PhoneSimConfig::default()).await;
        let body = get(&sim, "/servlet?phonecfg=get&accounts=1&dnd=1&fw=1")
            .await
            .text()
            .await
            .unwrap();
        let account = body.lines().find(|l| l.starts_with("Account")).unwrap();
        let parts: Vec<&str> = account.split('|').collect();
        assert_eq!(parts[2], "101");
        assert_eq!(parts[5], "101@127.0.0.1");
        assert!(body.contains("DND|0") && body.contains("Firmware|66.86.0.15"));

        // T5 guide: credentials in the query, before key=.
        let url = format!(
            "{}/servlet?p=login&q=login&username=admin&pwd=admin&jumpto=/&key=DNDOn",
            sim.base_url()
        );
        assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
        assert!(sim.state().dnd);
        let bad = url.replace("pwd=admin", "pwd=nope");
        assert_eq!(client().get(&bad).send().await.unwrap().status(), 401);
    }

    #[tokio::test]
    async fn grandstream_and_htek_apis() {
        let gs = start(PhoneSimConfig::for_vendor(PhoneVendor::Grandstream, "104")).await;
        let body = get(
            &gs,
            "/cgi-bin/api-make_call?passcode=admin&phonenumber=%2B15550100",
        )
        .await
        .text()
        .await
        .unwrap();
        assert_eq!(body, r#"{"response":"success","body":true}"#);
        assert_eq!(
            gs.state().call,
            SimCallState::Dialing {
                number: "+15550100".into(),
                line: 1
            }
        );
        let status = get(&gs, "/cgi-bin/api-get_line_status?passcode=admin")
            .await
            .text()
            .await
            .unwrap();
        assert!(status.contains("\"calling\""), "{status}");
        let body = get(&gs, "/cgi-bin/api-phone_operation?passcode=bad&cmd=endcall")
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(body, r#"{"response":"error","body":false}"#);
        assert!(!last(&gs).authorized);
        get(
            &gs,
            "/cgi-bin/api-phone_operation?passcode=admin&cmd=endcall",
        )
        .await;
        assert_eq!(gs.state().call, SimCallState::Idle);

        let htek = start(PhoneSimConfig::for_vendor(PhoneVendor::Htek, "105")).await;
        get(&htek, "/Phone_ActionURL&Command=1&Number=206&Account=2").await;
        assert_eq!(
            htek.state().call,
            SimCallState::Dialing {
                number: "206".into(),
                line: 2
            }
        );
    }

    #[tokio::test]
    async fn yealink_callbacks_for_dial_answer_and_dnd() {
        let (base, log) = receiver().await;
        let sim = start(PhoneSimConfig {
            callback_base: Some(base),
            answer_after: Some(Duration::from_millis(50)),
            ..PhoneSimConfig::default()
        })
        .await;
        get(
            &sim,
            "/servlet?key=number=%2B15550100&outgoing_uri=101@127.0.0.1",
        )
        .await;
        let fired = sim.wait_for_callbacks(2, Duration::from_secs(5)).await;
        assert_eq!(fired.len(), 2);
        assert!(fired.iter().all(|c| c.status == Some(200)), "{fired:?}");
        assert!(matches!(sim.state().call, SimCallState::Talking { .. }));
        sim.hang_up().await;
        sim.incoming_call("2000", "x@pbx").await;
        sim.answer().await;
        sim.hang_up().await;
        get(&sim, "/servlet?key=DNDOn").await;
        let fired = sim.wait_for_callbacks(7, Duration::from_secs(5)).await;
        assert_eq!(fired.len(), 7);

        let dev = "mac=001565aabb01&ip=127.0.0.1&model=SIP-T46S&firmware=66.86.0.15";
        let out = "local=sip:101@127.0.0.1&remote=sip:+15550100@127.0.0.1\
                   &display_local=Ext%20101&display_remote=+15550100";
        let inc = "local=sip:101@127.0.0.1&remote=sip:2000@127.0.0.1\
                   &display_local=Ext%20101&display_remote=2000";
        let acct = "active_user=101&active_host=127.0.0.1";
        let expected = vec![
            format!("/action-url/outgoing_call?{dev}&{out}&call_id=1&{acct}"),
            format!("/action-url/call_established?{dev}&{out}&call_id=1&{acct}"),
            format!("/action-url/call_terminated?{dev}&{out}&call_id=1&{acct}"),
            format!("/action-url/incoming_call?{dev}&{inc}&call_id=2&{acct}"),
            format!("/action-url/call_established?{dev}&{inc}&call_id=2&{acct}"),
            format!("/action-url/call_terminated?{dev}&{inc}&call_id=2&{acct}"),
            format!(
                "/action-url/dnd_on?{dev}&local=$local&remote=$remote\
                 &display_local=$display_local&display_remote=$display_remote\
                 &call_id=$call_id&active_user=$active_user&active_host=$active_host"
            ),
        ];
        assert_eq!(*log.lock().unwrap(), expected);
        let sent = sim.callbacks_sent();
        assert_eq!(sent.len(), 7);
        assert!(sent[0].starts_with("http://127.0.0.1:") && sent[0].ends_with(&expected[0]));
    }

    #[tokio::test]
    async fn snom_callbacks_carry_the_sip_call_id() {
        let (base, log) = receiver().await;
        let sim = start(PhoneSimConfig {
            callback_base: Some(base),
            ..PhoneSimConfig::for_vendor(PhoneVendor::Snom, "201")
        })
        .await;
        let mac = sim.config().mac.clone();
        sim.incoming_call("+4930123", "a84b4c76e66710@pbx.example")
            .await;
        get(&sim, "/command.htm?key=ENTER").await;
        get(&sim, "/command.htm?key=ONHOOK").await;
        // Rejecting a ringing call: Snom sends nothing.
        sim.incoming_call("+4930999", "second@pbx.example").await;
        sim.hang_up().await;
        get(&sim, "/command.htm?key=DND").await;
        get(&sim, "/command.htm?number=300&outgoing_uri=201@127.0.0.1").await;
        let fired = sim.wait_for_callbacks(6, Duration::from_secs(5)).await;
        assert_eq!(fired.len(), 6, "{fired:?}");
        let got = log.lock().unwrap().clone();
        let call = "local=sip:201@127.0.0.1&remote=sip:+4930123@127.0.0.1\
                    &display_local=Ext%20201&display_remote=+4930123\
                    &call-id=a84b4c76e66710@pbx.example&active_user=201&active_host=127.0.0.1";
        let dev = format!("mac={mac}&ip=127.0.0.1&model=$model&firmware=$firmware");
        assert_eq!(got[0], format!("/action-url/incoming?{dev}&{call}"));
        assert_eq!(got[1], format!("/action-url/connected?{dev}&{call}"));
        assert_eq!(got[2], format!("/action-url/disconnected?{dev}&{call}"));
        assert_eq!(
            got[3],
            format!(
                "/action-url/incoming?{dev}&{}",
                call.replace("+4930123", "+4930999")
                    .replace("a84b4c76e66710@pbx.example", "second@pbx.example")
            )
        );
        assert!(got[4].starts_with("/action-url/dnd_on?") && got[4].contains("&call-id=$call-id&"));
        let dialled_id = got[5]
            .split('&')
            .find_map(|kv| kv.strip_prefix("call-id="))
            .unwrap();
        assert!(got[5].starts_with("/action-url/outgoing?"));
        assert!(
            dialled_id.ends_with("@127.0.0.1") && dialled_id.len() > 30,
            "{dialled_id}"
        );
        assert_eq!(sim.state().sip_call_id.as_deref(), Some(dialled_id));
    }

    #[tokio::test]
    async fn grandstream_callbacks_put_raw_spaces_in_the_request_line() {
        // A raw listener: hyper-based servers refuse such request lines.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sim = start(PhoneSimConfig {
            callback_base: Some(format!("http://{addr}/action-url")),
            ..PhoneSimConfig::for_vendor(PhoneVendor::Grandstream, "301")
        })
        .await;
        sim.incoming_call("+15550100", "gs-call@pbx").await;
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = sock.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let line = head.lines().next().unwrap();
        assert!(
            line.starts_with("GET /action-url/incoming_call?mac="),
            "{line}"
        );
        assert!(line.contains("&display_local=Ext 301&"), "{line}");
        assert!(line.contains("&remote=+15550100&"), "{line}");
        assert!(line.contains("&call-id=gs-call@pbx&"), "{line}");
        let fired = sim.wait_for_callbacks(1, Duration::from_secs(5)).await;
        assert_eq!(fired[0].status, Some(200));
    }

    #[tokio::test]
    async fn failing_callback_is_recorded_and_does_not_block_the_answer() {
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = dead.local_addr().unwrap();
        drop(dead);
        let sim = start(PhoneSimConfig {
            callback_base: Some(format!("http://{addr}/action-url")),
            ..PhoneSimConfig::default()
        })
        .await;
        let t = Instant::now();
        assert_eq!(get(&sim, "/servlet?key=DNDOn").await.status(), 200);
        assert!(t.elapsed() < Duration::from_secs(1));
        let fired = sim.wait_for_callbacks(1, Duration::from_secs(5)).await;
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].event, "dnd_on");
        assert_eq!(fired[0].status, None);
        assert!(fired[0].error.is_some());
    }

    #[tokio::test]
    async fn commanded_dials_reach_the_dial_hook_and_keypad_dials_do_not() {
        let sim = start(PhoneSimConfig::for_vendor(PhoneVendor::Yealink, "201")).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        sim.set_dial_hook(Some(tx));
        get(&sim, "/servlet?key=number=%2B15550100&outgoing_uri=201@pbx").await;
        let dial = rx.recv().await.expect("the commanded dial is reported");
        assert_eq!(dial.extension, "201");
        assert_eq!(dial.number, "+15550100");
        assert_eq!(
            sim.state().sip_call_id.as_deref(),
            Some(dial.sip_call_id.as_str())
        );
        assert_eq!(sim.state().call_handle, Some(dial.handle));
        // Busy: a second command places no call and reports nothing.
        get(&sim, "/servlet?key=number=300").await;
        sim.hang_up().await;
        // The user dials on the keypad: the caller gets the call, the hook hears nothing.
        let own = sim.dial("300").await.expect("idle phone dials");
        assert_eq!(own.number, "300");
        assert!(sim.dial("301").await.is_none(), "busy");
        assert!(
            !sim.set_hold(true).await,
            "nothing to hold before the answer"
        );
        assert!(matches!(sim.state().call, SimCallState::Dialing { .. }));
        sim.far_end_answers().await;
        assert!(sim.set_hold(true).await);
        assert!(matches!(sim.state().call, SimCallState::Held { .. }));
        assert!(sim.set_hold(false).await);
        assert!(!sim.set_hold(false).await, "not held");
        assert!(rx.try_recv().is_err(), "nothing else reported");
    }

    #[test]
    fn helpers() {
        assert_eq!(
            base64_decode("YWRtaW46YWRtaW4=").as_deref(),
            Some(&b"admin:admin"[..])
        );
        assert_eq!(base64_decode("YQ").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("!!"), None);
        assert_eq!(split_line("12$34@2"), ("12#34".into(), Some(2)));
        assert_eq!(split_line("1234@10.0.0.1"), ("1234@10.0.0.1".into(), None));
        assert!(is_dial_string("2323@1") && is_dial_string("@1") && is_dial_string("+49$1"));
        assert!(!is_dial_string("OK") && !is_dial_string("") && !is_dial_string("12@"));
        assert_eq!(encode_value("Ext 1 #\"é", false), "Ext%201%20%23%22%C3%A9");
        assert_eq!(encode_value("+1 a@b:c", true), "+1 a@b:c");
        let p = parse_auth_params(r#"username="a\"b", qop=auth, uri="/x?a=1,b", nc=00000001"#);
        assert_eq!(
            p,
            [
                ("username".to_owned(), "a\"b".to_owned()),
                ("qop".into(), "auth".into()),
                ("uri".into(), "/x?a=1,b".into()),
                ("nc".into(), "00000001".into()),
            ]
        );
        assert_eq!(colon_mac("001565aabb01"), "00:15:65:aa:bb:01");
    }
}
