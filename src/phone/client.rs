//! [`ActiveUriClient`]: sends [`PhoneCommand`]s to desk phones, over HTTP (Active URI) or as a
//! SIP NOTIFY through Asterisk.
//!
//! The rules, and why:
//! - **Only known phones, only allowed networks.** A command names an extension; the address
//!   comes from the [`PhoneRegistry`], never from the caller. Before any connection the address
//!   is resolved (an IP literal as is, a host name through DNS) and *every* resulting IP must be
//!   inside `[active_uri] allowed_networks`; the connection then goes to exactly those checked
//!   IPs (a pinning resolver, see [`PinnedResolver`]), so a DNS answer that changes between the
//!   check and the connect (rebinding) cannot redirect a request. Redirects are not followed and
//!   proxies from the environment are ignored for the same reason: either could send the
//!   request, with the phone's credentials, somewhere else.
//! - **Credentials per phone, never shown.** HTTP Basic is sent with the first request (every
//!   vendor documents `user:pass@phone`); a `401` with a `WWW-Authenticate: Digest` challenge is
//!   answered once with [`digest_auth`], and the challenge is remembered so that later requests
//!   to the same phone answer it up front instead of sending Basic again. Passwords appear in
//!   no log line and no [`CommandOutcome`]; a password in a query (Grandstream's `passcode=`)
//!   is masked ([`VendorProfile::redact`]), and `reqwest` errors are stripped of their URL.
//! - **Lock-out protection.** A `401`/`403` that survives the Digest answer marks the phone
//!   `auth_failed` in the registry and later commands are refused with
//!   [`CommandError::PhoneLocked`] without touching the network: phones block the client for
//!   minutes after repeated failures, and retrying with the same wrong password only extends it.
//! - **One request at a time per phone.** A per-extension async mutex serialises everything
//!   sent to one phone (Snom's web server breaks on concurrent requests; key sequences must not
//!   interleave), while different phones proceed in parallel: a phone that hangs delays only its
//!   own commands.
//! - **Timeouts and retries.** Each request is limited by `[active_uri] timeout`. Only commands
//!   that are safe to repeat ([`VendorProfile::retry_safe`]) are retried, at most twice, after a
//!   connect error or timeout; a lost answer to "dial" must not become two calls.
//! - **Transport.** `http` sends HTTP; `notify` sends AMI `PJSIPNotify` (`Event: ACTION-URI`,
//!   `Content-Type: message/sipfrag`, body `key=…`), which reaches phones behind NAT; `auto`
//!   tries HTTP and falls back to NOTIFY when the phone cannot be reached (connect error or
//!   timeout), recording that in [`CommandOutcome::fallback`].
//! - HTTPS only for phones with `tls = true`; a self-signed phone certificate is accepted only
//!   for phones with `tls_insecure = true` (a second HTTP client), never globally.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use reqwest::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use super::registry::{PhoneInfo, PhoneRegistry};
use super::vendor::{profile, vendor_name, CommandContext, VendorProfile, ALL_VENDORS};
use crate::ami::{AmiHandle, AmiMessage};
use crate::config::{ActiveUriSettings, PhoneTransport, PhoneVendor};

pub use super::command::{CommandError, Key, KeyStyle, PhoneCommand};

/// Retries after the first attempt, for commands that may be repeated.
const MAX_RETRIES: u32 = 2;
/// Pause before a retry (times the attempt number): long enough for a phone whose web server
/// was restarting to come back, short enough not to matter to a person waiting.
const RETRY_DELAY: Duration = Duration::from_millis(150);
/// Lower bound of the wait for Asterisk's `PJSIPNotify` response. The AMI link shares its
/// socket with the event stream of a busy PBX, so the phone timeout (tuned for a phone's web
/// server on the LAN) can be too tight for it.
const MIN_NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// Limit for resolving a phone's host name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a command reached the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP GET to the phone's web server.
    Http,
    /// SIP NOTIFY through Asterisk (AMI `PJSIPNotify`).
    Notify,
}

/// What a successful command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// The transport that delivered it.
    pub transport: Transport,
    /// What was sent, in order, secrets masked: the HTTP request targets (path + query), or for
    /// NOTIFY the body.
    pub requests: Vec<String>,
    /// The HTTP status of the last request; `None` for NOTIFY (Asterisk only confirms that
    /// the NOTIFY was sent, not what the phone answered).
    pub status: Option<u16>,
    /// With transport `auto`: why HTTP was given up for NOTIFY.
    pub fallback: Option<String>,
}

/// Result classes counted per vendor by [`ActiveUriClient::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestResult {
    /// HTTP 2xx/3xx.
    Ok,
    /// Another HTTP status (not 401/403).
    HttpError,
    /// No answer within the timeout.
    Timeout,
    /// Connect or transfer error.
    Unreachable,
    /// Refused before any request: address not allowed, or phone locked after auth failure.
    Refused,
    /// 401/403 after the Digest answer.
    AuthFailed,
    /// NOTIFY sent by Asterisk.
    NotifyOk,
    /// NOTIFY refused by Asterisk or AMI unavailable.
    NotifyFailed,
}

impl RequestResult {
    /// Every result class, in a fixed order.
    pub const ALL: [RequestResult; 8] = [
        RequestResult::Ok,
        RequestResult::HttpError,
        RequestResult::Timeout,
        RequestResult::Unreachable,
        RequestResult::Refused,
        RequestResult::AuthFailed,
        RequestResult::NotifyOk,
        RequestResult::NotifyFailed,
    ];

    /// The label for metrics (`ok`, `http_error`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RequestResult::Ok => "ok",
            RequestResult::HttpError => "http_error",
            RequestResult::Timeout => "timeout",
            RequestResult::Unreachable => "unreachable",
            RequestResult::Refused => "refused",
            RequestResult::AuthFailed => "auth_failed",
            RequestResult::NotifyOk => "notify_ok",
            RequestResult::NotifyFailed => "notify_failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A snapshot of the request counters: HTTP requests (each attempt and each Digest answer
/// counts), NOTIFYs, and commands refused before any request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveUriStats {
    /// `(vendor, result, count)` for every combination, zeros included (metrics want them).
    pub counts: Vec<(PhoneVendor, RequestResult, u64)>,
}

impl ActiveUriStats {
    /// The count for one vendor and result.
    pub fn get(&self, vendor: PhoneVendor, result: RequestResult) -> u64 {
        self.counts
            .iter()
            .find(|(v, r, _)| *v == vendor && *r == result)
            .map_or(0, |(.., n)| *n)
    }
}

#[derive(Default)]
struct Stats {
    counts: [[AtomicU64; RequestResult::ALL.len()]; ALL_VENDORS.len()],
}

impl Stats {
    fn add(&self, vendor: PhoneVendor, result: RequestResult) {
        let v = ALL_VENDORS.iter().position(|x| *x == vendor).unwrap_or(0);
        self.counts[v][result.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ActiveUriStats {
        let mut counts = Vec::with_capacity(ALL_VENDORS.len() * RequestResult::ALL.len());
        for (v, vendor) in ALL_VENDORS.iter().enumerate() {
            for result in RequestResult::ALL {
                counts.push((
                    *vendor,
                    result,
                    self.counts[v][result.index()].load(Ordering::Relaxed),
                ));
            }
        }
        ActiveUriStats { counts }
    }
}

/// Sends commands to phones. Cheap to clone; clones share connections, locks and counters.
#[derive(Clone)]
pub struct ActiveUriClient {
    inner: Arc<Inner>,
    ami: Option<AmiHandle>,
}

impl std::fmt::Debug for ActiveUriClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveUriClient")
            .field("allowed_networks", &self.inner.allowed)
            .field("timeout", &self.inner.timeout)
            .field("notify", &self.ami.is_some())
            .finish_non_exhaustive()
    }
}

struct Inner {
    registry: PhoneRegistry,
    allowed: Vec<IpNet>,
    timeout: Duration,
    pbx_host: String,
    /// Verifies certificates; used for plain HTTP too.
    http: reqwest::Client,
    /// Accepts any certificate; only for phones with `tls_insecure = true`.
    http_insecure: reqwest::Client,
    pins: Arc<PinnedResolver>,
    phones: StdMutex<HashMap<String, Arc<tokio::sync::Mutex<PhoneSlot>>>>,
    stats: Stats,
}

/// Per-phone state, guarded by the phone's lock.
#[derive(Default)]
struct PhoneSlot {
    /// The phone's last Digest challenge, answered up front on the next request.
    digest: Option<digest_auth::WwwAuthenticateHeader>,
}

/// The HTTP clients' only resolver: it answers with the addresses the client checked against
/// `allowed_networks` just before the request, and with an error for any other name. So no
/// connection can go to an address that was not checked, whatever DNS says in between.
#[derive(Default)]
pub struct PinnedResolver {
    pins: StdMutex<HashMap<String, Vec<SocketAddr>>>,
}

impl PinnedResolver {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<SocketAddr>>> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pin(&self, host: &str, addrs: Vec<SocketAddr>) {
        self.lock().insert(host.to_ascii_lowercase(), addrs);
    }
}

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs = self
            .lock()
            .get(&name.as_str().to_ascii_lowercase())
            .cloned();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            match addrs {
                Some(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                None => Err(format!("{name} was not checked against allowed_networks").into()),
            }
        })
    }
}

/// Where one command's HTTP requests go.
struct Destination {
    /// `http://1.2.3.4:80` or `https://phone.example:443`.
    base: String,
    /// For logs: the checked IPs.
    ips: Vec<IpAddr>,
}

/// Why one HTTP request failed.
enum Failure {
    Timeout,
    Connect(String),
    Transfer(String),
    Status(u16),
    Auth(u16),
}

impl ActiveUriClient {
    /// A client for the phones in `registry`, limited by `settings`; `pbx_host` is the host
    /// the phones register to (for `outgoing_uri=account@pbx_host`).
    ///
    /// # Panics
    /// If the TLS backend cannot be initialised (no usable crypto provider), which is a build
    /// problem rather than a runtime condition.
    pub fn new(registry: PhoneRegistry, settings: &ActiveUriSettings, pbx_host: String) -> Self {
        let pins = Arc::new(PinnedResolver::default());
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                // Phones' embedded web servers handle kept-alive connections badly (and a
                // pooled connection would outlive the address check): one connection per
                // request.
                .pool_max_idle_per_host(0)
                .dns_resolver(pins.clone())
                .connect_timeout(settings.timeout)
                .danger_accept_invalid_certs(insecure)
                .user_agent(concat!("ctibridge/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("HTTP client for phone commands")
        };
        let inner = Inner {
            registry,
            allowed: settings.allowed_networks.clone(),
            timeout: settings.timeout,
            pbx_host,
            http: build(false),
            http_insecure: build(true),
            pins,
            phones: StdMutex::new(HashMap::new()),
            stats: Stats::default(),
        };
        ActiveUriClient {
            inner: Arc::new(inner),
            ami: None,
        }
    }

    /// Enables transport `notify` and `auto` through this AMI link.
    pub fn with_notify(mut self, ami: AmiHandle) -> Self {
        self.ami = Some(ami);
        self
    }

    /// Request counters per vendor and result.
    pub fn stats(&self) -> ActiveUriStats {
        self.inner.stats.snapshot()
    }

    /// Sends `cmd` to the phone with `extension` and waits for the result.
    ///
    /// Input is validated (number, keys, vendor support) before anything is sent; commands to
    /// one phone run one after the other.
    pub async fn execute(
        &self,
        extension: &str,
        cmd: PhoneCommand,
    ) -> Result<CommandOutcome, CommandError> {
        let inner = &self.inner;
        let info = inner
            .registry
            .get(extension)
            .ok_or_else(|| CommandError::UnknownPhone(extension.to_owned()))?;
        let vendor = match (info.configured, info.vendor) {
            (true, Some(vendor)) => vendor,
            _ => return Err(CommandError::NotConfigured(extension.to_owned())),
        };
        let profile = profile(vendor);
        let ctx = self.context(&info);
        // Validate and render before taking the lock: a bad number never waits for a phone.
        let targets = match info.transport {
            PhoneTransport::Http | PhoneTransport::Auto => Some(profile.http_requests(&cmd, &ctx)?),
            PhoneTransport::Notify => None,
        };
        if info.transport == PhoneTransport::Notify {
            if self.ami.is_none() {
                return Err(CommandError::NoNotifyTransport);
            }
            profile.notify_body(&cmd, &ctx)?;
        }

        let slot = inner.slot(extension);
        let mut slot = slot.lock().await;
        // Read again under the lock: a command that just finished may have marked the phone
        // (auth failure) or the registry may have followed a new IP address.
        let info = inner
            .registry
            .get(extension)
            .ok_or_else(|| CommandError::UnknownPhone(extension.to_owned()))?;
        let result = match (info.transport, targets) {
            (PhoneTransport::Notify, _) | (_, None) => {
                self.notify(&info, profile, &cmd, &ctx, None).await
            }
            (transport, Some(targets)) => {
                let http = self.http(&info, profile, &cmd, &targets, &mut slot).await;
                match http {
                    Err(e @ (CommandError::Timeout { .. } | CommandError::Unreachable(_)))
                        if transport == PhoneTransport::Auto && self.ami.is_some() =>
                    {
                        match profile.notify_body(&cmd, &ctx) {
                            Ok(_) => {
                                tracing::info!(
                                    extension,
                                    error = %e,
                                    "phone not reachable over HTTP; sending the command as SIP NOTIFY"
                                );
                                self.notify(&info, profile, &cmd, &ctx, Some(e.to_string()))
                                    .await
                            }
                            // No NOTIFY form for this command: the HTTP error says more.
                            Err(_) => Err(e),
                        }
                    }
                    other => other,
                }
            }
        };
        match &result {
            Ok(outcome) => tracing::info!(
                extension,
                vendor = vendor_name(vendor),
                command = cmd.name(),
                transport = ?outcome.transport,
                status = outcome.status,
                "phone command sent"
            ),
            Err(e) => tracing::warn!(
                extension,
                vendor = vendor_name(vendor),
                command = cmd.name(),
                code = e.code(),
                error = %e,
                "phone command failed"
            ),
        }
        result
    }

    fn context(&self, info: &PhoneInfo) -> CommandContext {
        CommandContext {
            extension: info.extension.clone(),
            account: info.account.clone(),
            line: info.line,
            pbx_host: self.inner.pbx_host.clone(),
            password: info.password.clone(),
            key_style: KeyStyle::Plain,
        }
    }

    /// Sends `targets` in order over HTTP. Called with the phone's lock held.
    async fn http(
        &self,
        info: &PhoneInfo,
        profile: &dyn VendorProfile,
        cmd: &PhoneCommand,
        targets: &[String],
        slot: &mut PhoneSlot,
    ) -> Result<CommandOutcome, CommandError> {
        let inner = &self.inner;
        let ext = info.extension.as_str();
        let vendor = profile.vendor();
        if let Some(reason) = &info.state.auth_failed {
            inner.stats.add(vendor, RequestResult::Refused);
            return Err(CommandError::PhoneLocked {
                extension: ext.to_owned(),
                reason: reason.clone(),
            });
        }
        let dest = match inner.destination(info).await {
            Ok(d) => d,
            Err(e) => {
                if matches!(e, CommandError::AddressNotAllowed { .. }) {
                    inner.stats.add(vendor, RequestResult::Refused);
                } else {
                    inner.stats.add(vendor, RequestResult::Unreachable);
                    inner
                        .registry
                        .set_reachable(ext, false, Some(e.to_string()));
                }
                return Err(e);
            }
        };
        let client = if info.tls && info.tls_insecure {
            &inner.http_insecure
        } else {
            &inner.http
        };
        let attempts = if profile.retry_safe(cmd) {
            1 + MAX_RETRIES
        } else {
            1
        };
        let mut sent = Vec::with_capacity(targets.len());
        let mut status = None;
        for target in targets {
            let shown = profile.redact(target);
            let mut attempt = 1;
            let code = loop {
                tracing::debug!(extension = ext, target = %shown, ips = ?dest.ips, attempt, "phone request");
                let failure = match inner.send(client, &dest, target, info, slot, vendor).await {
                    Ok(code) => break code,
                    Err(f) => f,
                };
                let retryable = matches!(failure, Failure::Timeout | Failure::Connect(_));
                if retryable && attempt < attempts {
                    tokio::time::sleep(RETRY_DELAY * attempt).await;
                    attempt += 1;
                    continue;
                }
                return Err(inner.fail(info, &shown, failure));
            };
            sent.push(shown);
            status = Some(code);
        }
        inner.registry.set_reachable(ext, true, None);
        Ok(CommandOutcome {
            transport: Transport::Http,
            requests: sent,
            status,
            fallback: None,
        })
    }

    /// Sends the command as AMI `PJSIPNotify`. Called with the phone's lock held.
    async fn notify(
        &self,
        info: &PhoneInfo,
        profile: &dyn VendorProfile,
        cmd: &PhoneCommand,
        ctx: &CommandContext,
        fallback: Option<String>,
    ) -> Result<CommandOutcome, CommandError> {
        let stats = &self.inner.stats;
        let Some(ami) = &self.ami else {
            return Err(CommandError::NoNotifyTransport);
        };
        let body = profile.notify_body(cmd, ctx)?;
        // The PJSIP endpoint is named after the SIP account when one is configured
        // (`account = "acc7"` or `"acc7@pbx"`), otherwise after the extension.
        let endpoint = info
            .account
            .as_deref()
            .map(|a| a.split('@').next().unwrap_or(a))
            .filter(|a| !a.is_empty())
            .unwrap_or(&info.extension);
        // Field order as in the recorded fixture (pjsip_notify.ami).
        let action = AmiMessage::action("PJSIPNotify")
            .field("Endpoint", endpoint)
            .field("Variable", "Event=ACTION-URI")
            .field("Variable", "Content-Type=message/sipfrag")
            .field("Variable", format!("Content={body}"));
        let wait = self.inner.timeout.max(MIN_NOTIFY_TIMEOUT);
        let failed = |msg: String| {
            stats.add(profile.vendor(), RequestResult::NotifyFailed);
            let msg = match &fallback {
                Some(http) => format!("{msg} (HTTP before that: {http})"),
                None => msg,
            };
            CommandError::NotifyFailed(msg)
        };
        match ami.send_action_with_timeout(action, wait).await {
            Ok(resp) if resp.is_success() => {
                stats.add(profile.vendor(), RequestResult::NotifyOk);
                Ok(CommandOutcome {
                    transport: Transport::Notify,
                    requests: vec![body],
                    status: None,
                    fallback,
                })
            }
            Ok(resp) => Err(failed(format!(
                "Asterisk answered {}: {}",
                resp.response.response().unwrap_or("?"),
                resp.response.get("Message").unwrap_or("no message")
            ))),
            Err(e) => Err(failed(e.to_string())),
        }
    }
}

impl Inner {
    fn slot(&self, extension: &str) -> Arc<tokio::sync::Mutex<PhoneSlot>> {
        let mut phones = self.phones.lock().unwrap_or_else(|e| e.into_inner());
        phones.entry(extension.to_owned()).or_default().clone()
    }

    /// Resolves the phone's address and checks every IP against `allowed_networks`.
    async fn destination(&self, info: &PhoneInfo) -> Result<Destination, CommandError> {
        let default_port = if info.tls { 443 } else { 80 };
        let scheme = if info.tls { "https" } else { "http" };
        let unreachable = |why: String| {
            CommandError::Unreachable(format!("phone address {:?}: {why}", info.address))
        };
        let (host, addrs) = match parse_address(&info.address, default_port) {
            Some(Address::Ip(addr)) => (None, vec![addr]),
            Some(Address::Host(host, port)) => {
                let resolved = tokio::time::timeout(
                    RESOLVE_TIMEOUT,
                    tokio::net::lookup_host((host.as_str(), port)),
                )
                .await
                .map_err(|_| unreachable("name resolution timed out".into()))?
                .map_err(|e| unreachable(format!("cannot resolve: {e}")))?
                .collect::<Vec<_>>();
                if resolved.is_empty() {
                    return Err(unreachable("name resolves to no address".into()));
                }
                (Some((host, port)), resolved)
            }
            None => {
                return Err(unreachable(
                    "not a valid host:port (expected e.g. 192.0.2.10:80)".into(),
                ))
            }
        };
        for addr in &addrs {
            if !self.allowed(addr.ip()) {
                return Err(CommandError::AddressNotAllowed {
                    extension: info.extension.clone(),
                    address: info.address.clone(),
                    ip: addr.ip(),
                });
            }
        }
        let ips = addrs.iter().map(SocketAddr::ip).collect();
        let base = match host {
            None => format!("{scheme}://{}", addrs[0]),
            Some((host, port)) => {
                self.pins.pin(&host, addrs);
                format!("{scheme}://{host}:{port}")
            }
        };
        Ok(Destination { base, ips })
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        // 0.0.0.0 / :: reach the local host, multicast reaches many; never a phone.
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if let IpAddr::V4(v4) = ip {
            if v4.is_broadcast() {
                return false;
            }
        }
        self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// One request, answering a Digest challenge once. Returns the status on success.
    async fn send(
        &self,
        client: &reqwest::Client,
        dest: &Destination,
        target: &str,
        info: &PhoneInfo,
        slot: &mut PhoneSlot,
        vendor: PhoneVendor,
    ) -> Result<u16, Failure> {
        let url = format!("{}{target}", dest.base);
        let first = match slot.digest.as_mut() {
            Some(challenge) => digest_header(challenge, info, target).map(Auth::Digest),
            None => None,
        }
        .unwrap_or(Auth::Basic);
        let resp = self.get(client, &url, info, &first, vendor).await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .find_map(parse_digest_challenge);
            let Some(mut challenge) = challenge else {
                // Basic refused (or an unknown scheme): nothing else to try.
                slot.digest = None;
                return Err(Failure::Auth(401));
            };
            let Some(answer) = digest_header(&mut challenge, info, target) else {
                return Err(Failure::Auth(401));
            };
            slot.digest = Some(challenge);
            let resp = self
                .get(client, &url, info, &Auth::Digest(answer), vendor)
                .await?;
            return classify(resp.status(), slot);
        }
        classify(status, slot)
    }

    async fn get(
        &self,
        client: &reqwest::Client,
        url: &str,
        info: &PhoneInfo,
        auth: &Auth,
        vendor: PhoneVendor,
    ) -> Result<reqwest::Response, Failure> {
        let mut req = client.get(url).timeout(self.timeout);
        req = match auth {
            Auth::Basic if !info.username.is_empty() || !info.password.is_empty() => {
                req.basic_auth(&info.username, Some(&info.password))
            }
            Auth::Basic => req,
            Auth::Digest(value) => req.header(AUTHORIZATION, value.clone()),
        };
        let result = req.send().await;
        let stats = &self.stats;
        match result {
            Ok(resp) => {
                let code = resp.status();
                let class = if code.is_success() || code.is_redirection() {
                    RequestResult::Ok
                } else if code == StatusCode::UNAUTHORIZED || code == StatusCode::FORBIDDEN {
                    RequestResult::AuthFailed
                } else {
                    RequestResult::HttpError
                };
                stats.add(vendor, class);
                Ok(resp)
            }
            Err(e) => {
                let e = e.without_url();
                if e.is_timeout() {
                    stats.add(vendor, RequestResult::Timeout);
                    Err(Failure::Timeout)
                } else if e.is_connect() {
                    stats.add(vendor, RequestResult::Unreachable);
                    Err(Failure::Connect(error_chain(&e)))
                } else {
                    stats.add(vendor, RequestResult::Unreachable);
                    Err(Failure::Transfer(error_chain(&e)))
                }
            }
        }
    }

    /// Turns a final request failure into the command's error, updating the registry.
    fn fail(&self, info: &PhoneInfo, shown_target: &str, failure: Failure) -> CommandError {
        let ext = info.extension.as_str();
        match failure {
            Failure::Timeout => {
                let e = CommandError::Timeout {
                    after: self.timeout,
                };
                self.registry.set_reachable(ext, false, Some(e.to_string()));
                e
            }
            Failure::Connect(why) => {
                let e = CommandError::Unreachable(why);
                self.registry.set_reachable(ext, false, Some(e.to_string()));
                e
            }
            // The phone answered, just not completely: reachable, but the command failed.
            Failure::Transfer(why) => CommandError::Unreachable(why),
            Failure::Status(code) => CommandError::HttpStatus(code),
            Failure::Auth(status) => {
                let reason = format!("HTTP {status} for {shown_target}");
                tracing::warn!(
                    extension = ext,
                    status,
                    "phone refused the bridge's credentials; no further commands will be sent to it"
                );
                self.registry.mark_auth_failed(ext, reason);
                CommandError::AuthFailed {
                    extension: ext.to_owned(),
                    status,
                }
            }
        }
    }
}

enum Auth {
    Basic,
    /// A ready `Authorization: Digest …` value.
    Digest(HeaderValue),
}

fn classify(status: StatusCode, slot: &mut PhoneSlot) -> Result<u16, Failure> {
    let code = status.as_u16();
    if status.is_success() || status.is_redirection() {
        // Snom answers `number=` with 302 to its index page: that is success, and the
        // redirect is not followed.
        Ok(code)
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        slot.digest = None;
        Err(Failure::Auth(code))
    } else {
        Err(Failure::Status(code))
    }
}

/// The `Digest` challenge of a `WWW-Authenticate` value, if it is one.
fn parse_digest_challenge(value: &HeaderValue) -> Option<digest_auth::WwwAuthenticateHeader> {
    let value = value.to_str().ok()?.trim();
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    digest_auth::WwwAuthenticateHeader::parse(&value[6..]).ok()
}

/// The `Authorization` value answering `challenge` for a GET of `target`.
fn digest_header(
    challenge: &mut digest_auth::WwwAuthenticateHeader,
    info: &PhoneInfo,
    target: &str,
) -> Option<HeaderValue> {
    let context =
        digest_auth::AuthContext::new(info.username.as_str(), info.password.as_str(), target);
    let answer = challenge.respond(&context).ok()?;
    let mut value = HeaderValue::from_str(&answer.to_header_string()).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// `a: b: c` from an error and its sources, without repeating a message its source repeats.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        source = s.source();
    }
    parts.join(": ")
}

enum Address {
    Ip(SocketAddr),
    Host(String, u16),
}

/// `1.2.3.4[:port]`, `[v6][:port]`, `v6`, or `hostname[:port]` (letters, digits, `.`, `-`).
fn parse_address(address: &str, default_port: u16) -> Option<Address> {
    let address = address.trim();
    if let Ok(sa) = address.parse::<SocketAddr>() {
        return Some(Address::Ip(sa));
    }
    if let Ok(ip) = address
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Some(Address::Ip(SocketAddr::new(ip, default_port)));
    }
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok()?),
        None => (address, default_port),
    };
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !host.starts_with(['.', '-']);
    valid_host.then(|| Address::Host(host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_strictly() {
        let ip = |s: &str| match parse_address(s, 80) {
            Some(Address::Ip(a)) => Some(a.to_string()),
            _ => None,
        };
        let host = |s: &str| match parse_address(s, 80) {
            Some(Address::Host(h, p)) => Some(format!("{h}|{p}")),
            _ => None,
        };
        assert_eq!(ip("10.0.0.5:8080").as_deref(), Some("10.0.0.5:8080"));
        assert_eq!(ip("10.0.0.5").as_deref(), Some("10.0.0.5:80"));
        assert_eq!(ip("[::1]:81").as_deref(), Some("[::1]:81"));
        assert_eq!(ip("::1").as_deref(), Some("[::1]:80"));
        assert_eq!(
            host("phone-101.lan:8080").as_deref(),
            Some("phone-101.lan|8080")
        );
        assert_eq!(host("phone").as_deref(), Some("phone|80"));
        for bad in [
            "",
            "evil.com/x",
            "a@b",
            "host:99999",
            "host:",
            "user:pass@host",
            "-x",
            "a b",
            "h?x",
        ] {
            assert!(parse_address(bad, 80).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn digest_challenges_are_recognised_case_insensitively() {
        let v = HeaderValue::from_static(r#"digest realm="r", nonce="n", qop="auth""#);
        assert_eq!(parse_digest_challenge(&v).unwrap().realm, "r");
        let v = HeaderValue::from_static(r#"Basic realm="r""#);
        assert!(parse_digest_challenge(&v).is_none());
    }

    #[test]
    fn result_labels() {
        let labels: Vec<_> = RequestResult::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "ok",
                "http_error",
                "timeout",
                "unreachable",
                "refused",
                "auth_failed",
                "notify_ok",
                "notify_failed"
            ]
        );
        for (i, r) in RequestResult::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
