//! Settings: typed, validated configuration from a TOML file plus environment overrides.
//!
//! Precedence, lowest first: built-in defaults, the TOML file, `CTIBRIDGE__…` environment
//! variables. Loading reports every problem at once, each naming its key (`pbx[0].auth`), so an
//! administrator fixes a file in one pass instead of one restart per typo.
//!
//! `config/ctibridge.toml` in the repository documents every key with its default.

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, File, FileFormat, Map, Source, Value, ValueKind};
use humantime_serde::re::humantime::format_duration;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override settings; `__` separates the levels.
const ENV_PREFIX: &str = "CTIBRIDGE__";
/// Sections that are lists of tables, where an override without an index means element 0.
const ARRAY_SECTIONS: [&str; 3] = ["pbx", "phones", "webhooks"];
/// Where `load(None)` looks for a file, first match wins.
const SEARCH_PATHS: [&str; 2] = ["./ctibridge.toml", "/etc/ctibridge/ctibridge.toml"];
/// Key used for problems that belong to the file as a whole rather than to one setting.
const FILE_KEY: &str = "(file)";
/// What `masked_toml` shows instead of a secret.
const MASK: &str = "********";
/// Keys whose values `masked_toml` hides, wherever they appear.
const SECRET_KEYS: [&str; 4] = ["secret", "password", "token", "path_secret"];

/// All settings of the service; every section may be left out of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Log output format and filter.
    pub log: LogSettings,
    /// The HTTP server (REST API and phone Action URL endpoint).
    pub http: HttpSettings,
    /// The database holding call records.
    pub storage: StorageSettings,
    /// The durable input journal every source writes to first.
    pub journal: JournalSettings,
    /// The queue between sources and consumers.
    pub ingest: IngestSettings,
    /// Call correlation.
    pub correlation: CorrelationSettings,
    /// Asterisk servers to follow over AMI; one local Asterisk when the file has no `[[pbx]]`.
    pub pbx: Vec<PbxSettings>,
    /// Desk phones whose Action URL events are joined with the PBX's view.
    pub phones: Vec<PhoneSettings>,
    /// Access to the REST API.
    pub api: ApiSettings,
    /// Which phones may post Action URL events to the bridge.
    pub action_url: ActionUrlSettings,
    /// Commands the bridge sends to phones (Active URI).
    pub active_uri: ActiveUriSettings,
    /// Click-to-call (`POST /api/v1/dial`, AMI `UserEvent: CtiDial`).
    pub dial: DialSettings,
    /// Do Not Disturb control and its two-way sync between phones and the PBX.
    pub dnd: DndSettings,
    /// Live event streams (SSE, WebSocket) and the webhook delivery log.
    pub live: LiveSettings,
    /// Webhook targets: live events POSTed to CRMs, durable and signed.
    pub webhooks: Vec<WebhookSettings>,
    /// The async runtime `serve` runs on.
    pub runtime: RuntimeSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            log: LogSettings::default(),
            http: HttpSettings::default(),
            storage: StorageSettings::default(),
            journal: JournalSettings::default(),
            ingest: IngestSettings::default(),
            correlation: CorrelationSettings::default(),
            pbx: vec![PbxSettings::default()],
            phones: Vec::new(),
            api: ApiSettings::default(),
            action_url: ActionUrlSettings::default(),
            active_uri: ActiveUriSettings::default(),
            dial: DialSettings::default(),
            dnd: DndSettings::default(),
            live: LiveSettings::default(),
            webhooks: Vec::new(),
            runtime: RuntimeSettings::default(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Human-readable lines or one JSON object per line.
    pub format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directives, e.g. `info,ctibridge::ami=debug`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address and port the HTTP server binds to.
    pub listen: SocketAddr,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Database URL: `sqlite://<file>` (or `sqlite::memory:` for trials); PostgreSQL is planned.
    pub url: String,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://ctibridge.db".into(),
        }
    }
}

/// `[journal]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSettings {
    /// Directory holding the journal segment files, relative to the working directory.
    pub dir: PathBuf,
    /// How often appended inputs are fsync'ed; a power loss can lose at most this much.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// Size in bytes at which the journal starts a new segment file.
    pub segment_max_bytes: u64,
    /// How often `serve` saves a checkpoint (the correlator's state and the journal position,
    /// in the store), so that a restart reads only the journal since then. Also saved on a
    /// clean stop.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("journal"),
            fsync_interval: Duration::from_millis(20),
            segment_max_bytes: 64 * 1024 * 1024,
            checkpoint_interval: Duration::from_secs(10),
        }
    }
}

/// `[ingest]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// Inputs that may wait for the live consumer. Sources never wait: beyond this, inputs stay
    /// in the journal only and the consumer is told about the gap (see `src/ingest.rs`).
    pub queue_capacity: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            queue_capacity: 65536,
        }
    }
}

/// `[runtime]`: the threads `serve` runs its async tasks on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Async worker threads; 0 picks [`RuntimeSettings::workers`]' automatic count.
    pub worker_threads: usize,
}

/// The most worker threads accepted.
const MAX_WORKER_THREADS: usize = 256;

impl RuntimeSettings {
    /// The worker threads to start: as configured, or with 0 one per CPU core but one,
    /// at least one. Why one less: ctibridge runs beside Asterisk, whose SIP and media
    /// threads should keep a core; and the blocking work (journal fsync, SQLite) has its own
    /// threads anyway. On a 2-core machine under Action URL load, one worker served as many
    /// callbacks per second as two, on two thirds of the CPU (two workers woke each other
    /// about 19,000 times a second to share the work); figures in `docs/OPERATIONS.md`, "Threads".
    pub fn workers(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.saturating_sub(1).max(1)
    }
}

/// `[correlation]`: how AMI events and phone callbacks become call records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelationSettings {
    /// How long a call stays open after its last hangup, for late phone callbacks.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How far apart in time a phone callback and the AMI events of its call may be.
    #[serde(with = "humantime_serde")]
    pub phone_match_window: Duration,
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(3),
            phone_match_window: Duration::from_secs(10),
        }
    }
}

/// One `[[pbx]]`: an Asterisk server reached over AMI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PbxSettings {
    /// Unique name used in logs and call records (letters, digits, `_`, `.`, `-`).
    pub name: String,
    /// Host name or IP address of the Asterisk server.
    pub host: String,
    /// AMI TCP port (`port` in Asterisk's manager.conf).
    pub port: u16,
    /// AMI user (a `[section]` of manager.conf).
    pub username: String,
    /// That user's `secret` in manager.conf.
    pub secret: String,
    /// How the secret is sent at login.
    pub auth: AmiAuth,
    /// Event mask sent at login: `on`, `off` or a list such as `call,agent`.
    pub events: String,
    /// Limit for establishing the TCP connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Limit for the login exchange once connected.
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// How often an idle connection is checked with an AMI `Ping`.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long a `Ping` may go unanswered before the connection is dropped.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Delay before the first reconnect attempt; later attempts wait longer.
    #[serde(with = "humantime_serde")]
    pub reconnect_initial: Duration,
    /// Upper bound of the reconnect delay.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Largest AMI message accepted, in bytes; guards memory against a broken peer.
    pub max_message_bytes: usize,
    /// PJSIP endpoints that are trunks (carrier connections). Endpoints that are not listed in
    /// `[[phones]]` count as trunks too when phones are configured.
    pub trunks: Vec<String>,
}

impl Default for PbxSettings {
    fn default() -> Self {
        Self {
            name: "default".into(),
            host: "127.0.0.1".into(),
            port: 5038,
            username: "bridge".into(),
            secret: "bridge-secret".into(),
            auth: AmiAuth::Md5,
            events: "on".into(),
            connect_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(5),
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            max_message_bytes: 1024 * 1024,
            trunks: Vec::new(),
        }
    }
}

/// How the AMI secret is sent at login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmiAuth {
    /// Challenge/response: the secret never crosses the network.
    #[default]
    Md5,
    /// The secret is sent as is; only for servers that refuse challenges.
    Plain,
}

/// One `[[phones]]`: a desk phone that reports calls over Action URL.
///
/// `extension` and `address` have no meaningful default; they deserialize as empty so that one
/// missing key does not hide the other problems, and validation then reports them as required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhoneSettings {
    /// The extension registered on the phone's line; unique, required.
    pub extension: String,
    /// The phone's web interface as `host:port`; required.
    pub address: String,
    /// Phone make, which decides the Action URL and Active URI dialects.
    pub vendor: PhoneVendor,
    /// Web interface user for Active URI commands.
    pub username: String,
    /// Web interface password for Active URI commands.
    pub password: String,
    /// Line (account slot) on the phone carrying `extension`, from 1.
    pub line: u8,
    /// SIP account name when it differs from `extension`.
    pub account: Option<String>,
    /// How the bridge delivers commands to the phone.
    pub transport: PhoneTransport,
    /// Reach the web interface over HTTPS.
    pub tls: bool,
    /// Accept any TLS certificate (phones usually have self-signed ones).
    pub tls_insecure: bool,
    /// MAC address, to recognise the phone when its IP address changes.
    pub mac: Option<String>,
}

impl Default for PhoneSettings {
    fn default() -> Self {
        Self {
            extension: String::new(),
            address: String::new(),
            vendor: PhoneVendor::Yealink,
            username: "admin".into(),
            password: "admin".into(),
            line: 1,
            account: None,
            transport: PhoneTransport::Http,
            tls: false,
            tls_insecure: false,
            mac: None,
        }
    }
}

/// Phone makes whose Action URL / Active URI dialects the bridge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhoneVendor {
    /// Yealink T4x/T5x and later.
    #[default]
    Yealink,
    /// Yealink phones on older firmware, which need the legacy dialect.
    YealinkLegacy,
    /// Fanvil.
    Fanvil,
    /// Snom.
    Snom,
    /// Grandstream.
    Grandstream,
    /// Htek.
    Htek,
}

/// How commands reach a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhoneTransport {
    /// HTTP request to the phone's web interface.
    #[default]
    Http,
    /// SIP NOTIFY through the PBX, for phones the bridge cannot reach directly.
    Notify,
    /// HTTP, falling back to SIP NOTIFY.
    Auto,
}

/// `[api]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Bearer tokens accepted by the REST API; none means the API refuses every request.
    pub tokens: Vec<ApiToken>,
}

/// One `[[api.tokens]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiToken {
    /// The bearer token itself; unique, required.
    pub token: String,
    /// What the token allows; at least one.
    pub scopes: Vec<Scope>,
}

/// Permissions an API token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read calls and status.
    Read,
    /// Place and control calls.
    Dial,
    /// Change the running service.
    Admin,
}

/// `[action_url]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActionUrlSettings {
    /// Source networks allowed to post Action URL events (phones cannot authenticate).
    pub allowed_networks: Vec<IpNet>,
    /// Extra URL path segment the phones must use, as a shared secret.
    pub path_secret: Option<String>,
}

impl Default for ActionUrlSettings {
    fn default() -> Self {
        Self {
            allowed_networks: vec![net("127.0.0.1/32"), net("::1/128")],
            path_secret: None,
        }
    }
}

/// `[active_uri]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActiveUriSettings {
    /// Networks a phone's address must be in before the bridge sends it commands.
    pub allowed_networks: Vec<IpNet>,
    /// Limit for one command request to a phone.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ActiveUriSettings {
    fn default() -> Self {
        Self {
            allowed_networks: vec![net("127.0.0.0/8"), net("::1/128")],
            timeout: Duration::from_secs(5),
        }
    }
}

/// How a click-to-call request is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialVia {
    /// The phone when it is configured, not known to be unreachable and able to dial;
    /// otherwise (or when the phone does not answer) the PBX.
    #[default]
    Auto,
    /// The from-extension's phone dials (Active URI over HTTP or SIP NOTIFY).
    Phone,
    /// AMI `Originate`: the PBX rings the from-extension, then connects it to the number.
    Pbx,
}

/// `[dial]`: click-to-call through the API or the PBX (`UserEvent: CtiDial`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialSettings {
    /// The path used when a request names none.
    pub default_via: DialVia,
    /// The `[[pbx]]` (by name) that originates calls; `None` = the first one.
    pub pbx: Option<String>,
    /// Originate `Channel`: `{ext}` is the from-extension, `{endpoint}` its PJSIP endpoint
    /// (the phone's `account` when set, else the extension).
    pub channel: String,
    /// Originate `Context` the number is dialled in.
    pub context: String,
    /// Originate `Priority`.
    pub priority: u32,
    /// Originate `CallerID` shown on the from-phone while it rings: `{to}` (the number),
    /// `{from}` (the extension).
    pub caller_id: String,
    /// How long the PBX rings the from-phone before giving up (Originate `Timeout`).
    #[serde(with = "humantime_serde")]
    pub originate_timeout: Duration,
    /// How soon after a phone dial the call must appear on the PBX to be tied to the request.
    #[serde(with = "humantime_serde")]
    pub match_window: Duration,
    /// How long an `Idempotency-Key` is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// Dial requests per API token within `rate_window`; 0 = unlimited.
    pub rate_limit_per_token: u32,
    /// Dial requests per from-extension within `rate_window`; 0 = unlimited.
    pub rate_limit_per_phone: u32,
    /// The period the rate limits count over.
    #[serde(with = "humantime_serde")]
    pub rate_window: Duration,
}

impl Default for DialSettings {
    fn default() -> Self {
        Self {
            default_via: DialVia::Auto,
            pbx: None,
            channel: "PJSIP/{endpoint}".into(),
            context: "from-internal".into(),
            priority: 1,
            caller_id: "\"{to}\" <{from}>".into(),
            originate_timeout: Duration::from_secs(30),
            match_window: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(600),
            rate_limit_per_token: 30,
            rate_limit_per_phone: 6,
            rate_window: Duration::from_secs(60),
        }
    }
}

/// Where the bridge mirrors DND on the PBX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DndPbxMode {
    /// Phones only; the PBX is neither written nor followed (`CtiDnd` user events still are).
    #[default]
    None,
    /// Asterisk's database: `DBPut` on, `DBDel` off (FreePBX: family `DND`, key `<ext>`,
    /// value `YES`).
    Astdb,
    /// A custom device state, `Setvar DEVICE_STATE(Custom:DND<ext>)`, which BLF keys and
    /// FreePBX follow; its `DeviceStateChange` events are followed back to the phone.
    Devstate,
}

/// `[dnd]`: Do Not Disturb on phones and PBX, kept in step both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DndSettings {
    /// How DND is mirrored on the PBX.
    pub pbx_mode: DndPbxMode,
    /// The `[[pbx]]` (by name) written and followed; `None` = the first one.
    pub pbx: Option<String>,
    /// astdb family (`{ext}` = extension).
    pub astdb_family: String,
    /// astdb key (`{ext}` = extension).
    pub astdb_key: String,
    /// astdb value written for "on" (off deletes the key).
    pub astdb_value: String,
    /// Device whose state carries DND in mode `devstate`; must contain `{ext}`.
    pub devstate_device: String,
    /// Device state meaning "DND on".
    pub devstate_on: String,
    /// Device state meaning "DND off".
    pub devstate_off: String,
    /// After the bridge changes DND on one side, the same change reported back by that side
    /// within this window is its echo and is not pushed again (no ping-pong).
    #[serde(with = "humantime_serde")]
    pub loop_guard: Duration,
}

impl Default for DndSettings {
    fn default() -> Self {
        Self {
            pbx_mode: DndPbxMode::None,
            pbx: None,
            astdb_family: "DND".into(),
            astdb_key: "{ext}".into(),
            astdb_value: "YES".into(),
            devstate_device: "Custom:DND{ext}".into(),
            devstate_on: "BUSY".into(),
            devstate_off: "NOT_INUSE".into(),
            loop_guard: Duration::from_secs(10),
        }
    }
}

/// `[live]`: the event streams (`GET /api/v1/events`, `GET /api/v1/ws`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveSettings {
    /// Latest events kept in memory so a client can resume with `Last-Event-ID`.
    pub buffer_events: usize,
    /// Events that may wait for one client; a client that falls further behind is cut off.
    pub client_buffer: usize,
    /// Idle streams get a keep-alive (SSE comment, WebSocket ping) this often.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// How long a cut-off client has to read the reason before its connection is closed.
    #[serde(with = "humantime_serde")]
    pub cut_grace: Duration,
    /// Finished webhook deliveries (and their attempts) are kept in the delivery log this long.
    #[serde(with = "humantime_serde")]
    pub webhook_log_retention: Duration,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            buffer_events: 10_000,
            client_buffer: 1024,
            keepalive: Duration::from_secs(15),
            cut_grace: Duration::from_secs(5),
            webhook_log_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// One `[[webhooks]]` target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Unique name, used in the delivery log and the outbox; empty = the URL.
    pub name: String,
    /// Where events are POSTed: `http://` or `https://`.
    pub url: String,
    /// Event types to send, exact (`call.ended`) or prefix patterns (`call.*`); empty = all.
    pub events: Vec<String>,
    /// Only events concerning these extensions (gaps always pass); empty = all.
    pub extensions: Vec<String>,
    /// Key of the HMAC-SHA256 signature (`X-Ctibridge-Signature`); unset = unsigned.
    pub secret: Option<String>,
    /// Attempts per event before it is given up (marked `failed` in the delivery log).
    pub max_attempts: u32,
    /// Limit for one attempt (connect, send, response headers).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Delay before the first retry; it doubles per attempt (with jitter) up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest delay between attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Deliveries to this target in flight at once (events of one call are always one at a
    /// time, in order).
    pub concurrency: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            events: Vec::new(),
            extensions: Vec::new(),
            secret: None,
            max_attempts: 12,
            timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            concurrency: 4,
        }
    }
}

impl WebhookSettings {
    /// The name the outbox and the delivery log use: `name`, else the URL.
    pub fn effective_name(&self) -> &str {
        if self.name.is_empty() {
            &self.url
        } else {
            &self.name
        }
    }

    fn validate(&self, at: &str, problems: &mut Problems) {
        match reqwest::Url::parse(&self.url) {
            Err(e) => problems.add(
                format!("{at}.url"),
                format!(
                    "{:?} is not a URL ({e}); expected e.g. \"https://crm.example.net/hooks/ctibridge\"",
                    self.url
                ),
            ),
            Ok(u) if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() => {
                problems.add(
                    format!("{at}.url"),
                    format!("{:?} must be an http:// or https:// URL with a host", self.url),
                )
            }
            Ok(_) => {}
        }
        if let Err(e) = crate::live::Filter::parse(Some(&self.events.join(",")), None) {
            problems.add(format!("{at}.events"), e.to_string());
        }
        if self.secret.as_deref().is_some_and(str::is_empty) {
            problems.add(
                format!("{at}.secret"),
                "must not be empty; remove the key to send unsigned requests",
            );
        }
        problems.in_range(&format!("{at}.max_attempts"), self.max_attempts, 1, 1000);
        problems.in_range(&format!("{at}.concurrency"), self.concurrency, 1, 64);
        for (key, value) in [
            ("timeout", self.timeout),
            ("retry_initial", self.retry_initial),
            ("retry_max", self.retry_max),
        ] {
            problems.positive(&format!("{at}.{key}"), value);
        }
        if self.retry_max < self.retry_initial {
            problems.add(
                format!("{at}.retry_max"),
                format!(
                    "{} is shorter than retry_initial ({}); it is the upper bound of the delay",
                    format_duration(self.retry_max),
                    format_duration(self.retry_initial)
                ),
            );
        }
    }
}

impl Settings {
    /// `[live]` and `[[webhooks]]`.
    fn validate_live(&self, problems: &mut Problems) {
        problems.in_range("live.buffer_events", self.live.buffer_events, 1, 10_000_000);
        problems.in_range("live.client_buffer", self.live.client_buffer, 1, 1_000_000);
        problems.positive("live.keepalive", self.live.keepalive);
        problems.positive("live.cut_grace", self.live.cut_grace);
        problems.positive(
            "live.webhook_log_retention",
            self.live.webhook_log_retention,
        );
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (index, hook) in self.webhooks.iter().enumerate() {
            let at = format!("webhooks[{index}]");
            hook.validate(&at, problems);
            if let Some(first) = names.insert(hook.effective_name(), index) {
                problems.add(
                    format!("{at}.name"),
                    format!(
                        "{:?} is already the name of webhooks[{first}]; give each target its own name",
                        hook.effective_name()
                    ),
                );
            }
        }
    }
}

/// Parses a network literal of a built-in default.
fn net(literal: &str) -> IpNet {
    literal
        .parse()
        .expect("built-in network literals are valid")
}

/// Settings together with where they came from, for the startup log.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective settings.
    pub settings: Settings,
    /// The file they were read from, if any.
    pub source: ConfigSource,
}

/// Where the settings were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// This TOML file (plus environment overrides).
    File(PathBuf),
    /// No file was found: built-in defaults (plus environment overrides).
    Defaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Defaults => f.write_str("built-in defaults"),
        }
    }
}

/// Everything wrong with a configuration; `Display` prints one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_problems(.problems))]
pub struct ConfigError {
    /// The problems, at least one.
    pub problems: Vec<ConfigProblem>,
}

/// One problem, tied to the key an administrator has to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Path of the setting, like `pbx[0].auth`, or `(file)` for the file as a whole.
    pub key: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl ConfigProblem {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl From<ConfigProblem> for ConfigError {
    fn from(problem: ConfigProblem) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

/// One problem per line, for `ConfigError`'s `Display`.
fn render_problems(problems: &[ConfigProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Loads the settings from `path`, or when `None` from `./ctibridge.toml`, else
/// `/etc/ctibridge/ctibridge.toml`, else the built-in defaults; then applies `CTIBRIDGE__…`
/// environment variables and validates.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let source = match path {
        Some(path) => ConfigSource::File(path.to_path_buf()),
        None => find_file(&SEARCH_PATHS.map(Path::new))
            .map_or(ConfigSource::Defaults, ConfigSource::File),
    };
    let (text, file) = match &source {
        ConfigSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|err| {
                ConfigProblem::new(FILE_KEY, format!("cannot read {}: {err}", path.display()))
            })?;
            (text, Some(path.as_path()))
        }
        ConfigSource::Defaults => (String::new(), None),
    };
    // Values that are not valid UTF-8 still reach validation, shown with replacement characters.
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.to_string_lossy().into()))
        })
        .collect();
    let settings = build(&text, file, &env)?;
    Ok(Loaded { settings, source })
}

/// Like [`load`] but from a TOML text, with the environment given explicitly (for tests).
pub fn load_from_str(toml_text: &str, env: &[(String, String)]) -> Result<Settings, ConfigError> {
    build(toml_text, None, env)
}

/// The first of `candidates` that is an existing file.
fn find_file(candidates: &[&Path]) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|path| path.is_file())
        .map(|path| path.to_path_buf())
}

/// Merges file and environment, deserializes and validates; `file` only labels syntax errors.
fn build(
    text: &str,
    file: Option<&Path>,
    env: &[(String, String)],
) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    // Parsing here first (config parses again) gives a one-line message with line and column.
    if let Err(err) = text.parse::<toml::Table>() {
        problems.push(syntax_problem(text, file, &err));
    }
    let overrides = env_overrides(env, &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }

    let tree = merge(text, &overrides).map_err(|err| {
        let text = err.to_string();
        let (key, message) = split_key(&text);
        ConfigProblem::new(key.unwrap_or(FILE_KEY), message)
    })?;
    let problems = match tree.clone().try_deserialize::<Settings>() {
        Ok(settings) => {
            let problems = settings.validate();
            if problems.is_empty() {
                return Ok(settings);
            }
            problems
        }
        Err(_) => deserialization_problems(&tree),
    };
    Err(ConfigError {
        problems: blame_env(problems, &overrides),
    })
}

/// A TOML syntax error as one line with its position, since problems are listed one per line.
fn syntax_problem(text: &str, file: Option<&Path>, err: &toml::de::Error) -> ConfigProblem {
    let message = err.message().trim().replace('\n', "; ");
    let position = err.span().map(|span| {
        let before = &text[..span.start];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
        format!("line {line}, column {column}")
    });
    let location = match (file, position) {
        (Some(file), Some(position)) => format!("{}, {position}: ", file.display()),
        (Some(file), None) => format!("{}: ", file.display()),
        (None, Some(position)) => format!("{position}: "),
        (None, None) => String::new(),
    };
    ConfigProblem::new(FILE_KEY, format!("{location}invalid TOML: {message}"))
}

/// One step of a settings path: a table key or an array index.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Renders a path in config's syntax, which is also how problems name keys: `pbx[0].host`.
fn render_path(path: &[Segment]) -> String {
    let mut rendered = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !rendered.is_empty() {
                    rendered.push('.');
                }
                rendered.push_str(key);
            }
            Segment::Index(index) => {
                let _ = write!(rendered, "[{index}]");
            }
        }
    }
    rendered
}

/// A setting taken from an environment variable.
struct EnvOverride {
    /// The variable, for messages.
    var: String,
    /// The setting's path in config's syntax.
    key: String,
    /// Number of path segments; shallower overrides are applied first.
    depth: usize,
    value: Value,
}

/// Turns the `CTIBRIDGE__…` variables into overrides, reporting malformed names.
fn env_overrides(env: &[(String, String)], problems: &mut Vec<ConfigProblem>) -> Vec<EnvOverride> {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(name, _)| {
            name.get(..ENV_PREFIX.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
        })
        .collect();
    vars.sort();

    let mut overrides: Vec<EnvOverride> = Vec::new();
    for (var, raw) in vars {
        let path = match env_path(&var[ENV_PREFIX.len()..]) {
            Ok(path) => path,
            Err(reason) => {
                problems.push(ConfigProblem::new(
                    FILE_KEY,
                    format!("environment variable {var}: {reason}"),
                ));
                continue;
            }
        };
        let key = render_path(&path);
        if let Some(first) = overrides.iter().find(|other| other.key == key) {
            problems.push(ConfigProblem::new(
                &key,
                format!("set by both {} and {var}; keep one", first.var),
            ));
            continue;
        }
        overrides.push(EnvOverride {
            var: var.clone(),
            key,
            depth: path.len(),
            value: env_value(raw),
        });
    }
    overrides
}

/// `PBX__0__HOST` → `pbx[0].host`; `PBX__HOST` → `pbx[0].host` for the list sections.
fn env_path(name: &str) -> Result<Vec<Segment>, String> {
    let mut path = Vec::new();
    for part in name.split("__") {
        if part.is_empty() || !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{part:?} is not a key name; write CTIBRIDGE__SECTION__KEY with letters, digits \
                 and single underscores, levels separated by double underscores"
            ));
        }
        match part.parse::<usize>() {
            Ok(_) if path.is_empty() => {
                return Err("must start with a section name, not an index".into())
            }
            Ok(index) => path.push(Segment::Index(index)),
            Err(_) => path.push(Segment::Key(part.to_ascii_lowercase())),
        }
    }
    if let [Segment::Key(section), Segment::Key(_), ..] = path.as_slice() {
        if ARRAY_SECTIONS.contains(&section.as_str()) {
            path.insert(1, Segment::Index(0));
        }
    }
    Ok(path)
}

/// A value starting with `[` is a TOML inline array, anything else is text that deserialization
/// converts (`"5038"` into a port). A `[` value that is not a valid array stays text, so
/// `[fe80::1]:80` still works as a phone address.
fn env_value(raw: &str) -> Value {
    if raw.starts_with('[') {
        if let Ok(mut table) = format!("value = {raw}").parse::<toml::Table>() {
            if let Some(array) = table.remove("value") {
                return from_toml(array);
            }
        }
    }
    Value::from(raw)
}

/// Converts an inline array from an environment variable into config's value type.
fn from_toml(value: toml::Value) -> Value {
    let kind = match value {
        toml::Value::String(text) => ValueKind::String(text),
        toml::Value::Integer(number) => ValueKind::I64(number),
        toml::Value::Float(number) => ValueKind::Float(number),
        toml::Value::Boolean(flag) => ValueKind::Boolean(flag),
        toml::Value::Datetime(datetime) => ValueKind::String(datetime.to_string()),
        toml::Value::Array(items) => ValueKind::Array(items.into_iter().map(from_toml).collect()),
        toml::Value::Table(table) => ValueKind::Table(
            table
                .into_iter()
                .map(|(key, value)| (key, from_toml(value)))
                .collect(),
        ),
    };
    Value::new(None, kind)
}

/// Merges the file and the overrides into one tree with the config crate.
///
/// A builder applies its overrides in hash order, so `CTIBRIDGE__PBX=[…]` could wipe out
/// `CTIBRIDGE__PBX__0__SECRET`; one builder per depth applies whole lists before their elements.
/// An override of `pbx[0].host` when the file has no `[[pbx]]` creates the element.
fn merge(text: &str, overrides: &[EnvOverride]) -> Result<Value, config::ConfigError> {
    let mut merged = Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .build()?;
    let depths: BTreeSet<usize> = overrides.iter().map(|o| o.depth).collect();
    for depth in depths {
        let mut builder = Config::builder().add_source(merged);
        for o in overrides.iter().filter(|o| o.depth == depth) {
            builder = builder.set_override(o.key.as_str(), o.value.clone())?;
        }
        merged = builder.build()?;
    }
    Ok(Value::new(None, ValueKind::Table(merged.collect()?)))
}

/// Serde stops at the first bad value and, for most errors (unknown keys, unknown enum values,
/// unparsable durations), does not say where it was. To name every bad key, each branch of the
/// tree is deserialized alone — with its ancestors, without its siblings, which then take their
/// defaults — and failing branches are narrowed down the same way.
fn deserialization_problems(tree: &Value) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    narrow(&mut Vec::new(), tree, &mut problems);
    problems
}

/// Reports the deepest failing branches under `node`, which sits at `path`.
fn narrow(path: &mut Vec<Segment>, node: &Value, problems: &mut Vec<ConfigProblem>) {
    let Err(message) = deserialize_branch(path, node.clone()) else {
        return;
    };
    let mut children: Vec<(Segment, &Value)> = match &node.kind {
        ValueKind::Table(table) => table
            .iter()
            .map(|(key, child)| (Segment::Key(key.clone()), child))
            .collect(),
        ValueKind::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, child)| (Segment::Index(index), child))
            .collect(),
        _ => Vec::new(),
    };
    children.sort_by(|a, b| a.0.cmp(&b.0));

    let found_before = problems.len();
    // When even the empty table or list is refused, the key itself is the problem (unknown, or
    // a table where a list belongs): report it here rather than at every key below it.
    if !children.is_empty() && deserialize_branch(path, emptied(node)).is_ok() {
        for (segment, child) in children {
            path.push(segment);
            narrow(path, child, problems);
            path.pop();
        }
    }
    if problems.len() == found_before {
        let key = if path.is_empty() {
            FILE_KEY.to_owned()
        } else {
            render_path(path)
        };
        problems.push(ConfigProblem::new(key, explain(&message)));
    }
}

/// Deserializes `Settings` from a tree holding only `leaf` at `path`; the error as text.
fn deserialize_branch(path: &[Segment], leaf: Value) -> Result<(), String> {
    let tree = path.iter().rev().fold(leaf, |child, segment| {
        let kind = match segment {
            Segment::Key(key) => ValueKind::Table(Map::from([(key.clone(), child)])),
            // Elements are independent, so the element can stand at index 0.
            Segment::Index(_) => ValueKind::Array(vec![child]),
        };
        Value::new(None, kind)
    });
    let Err(err) = tree.clone().try_deserialize::<Settings>() else {
        return Ok(());
    };
    // config's message for an unknown enum value omits the accepted values; serde's derived
    // one lists them, so ask serde again through serde_json.
    if err
        .to_string()
        .contains("does not have variant constructor")
    {
        let serde_error = tree
            .try_deserialize::<serde_json::Value>()
            .ok()
            .and_then(|json| serde_json::from_value::<Settings>(json).err());
        if let Some(serde_error) = serde_error {
            return Err(serde_error.to_string());
        }
    }
    Err(err.to_string())
}

/// An empty container of the same kind as `node` (a table or an array).
fn emptied(node: &Value) -> Value {
    let kind = match node.kind {
        ValueKind::Table(_) => ValueKind::Table(Map::new()),
        _ => ValueKind::Array(Vec::new()),
    };
    Value::new(None, kind)
}

/// config ends some messages with "for key `pbx[0].port` in <origin>": returns that key, if any,
/// and the message before it.
fn split_key(message: &str) -> (Option<&str>, &str) {
    match message.split_once(" for key `") {
        Some((before, after)) => (after.split_once('`').map(|(key, _)| key), before),
        None => (None, message),
    }
}

/// Rewords serde's and config's messages for someone editing a TOML file.
fn explain(raw: &str) -> String {
    let message = split_key(raw).1;
    for (serde_words, ours) in [
        ("unknown field ", "unknown key"),
        ("unknown variant ", "unknown value"),
    ] {
        let found = message
            .strip_prefix(serde_words)
            .and_then(|rest| rest.split_once(", expected "));
        if let Some((name, expected)) = found {
            let accepted = expected
                .trim_start_matches("one of ")
                .replace(" or ", ", ")
                .replace('`', "");
            return format!(
                "{ours} {:?}, expected one of: {accepted}",
                name.trim_matches('`')
            );
        }
    }
    // TOML has no null, so a missing value can only be a gap left by an environment variable
    // that set a later element of a list.
    if message.starts_with("invalid type: unit value") {
        return "is missing: a later element of this list was set (by an environment variable) \
                but not this one; number elements from 0 without gaps"
            .into();
    }
    let hint = if message.contains("expected a duration") {
        "; write a number with a unit, e.g. \"500ms\", \"20s\", \"5m\""
    } else if message.contains("invalid IP address syntax") {
        "; write networks as address/prefix, e.g. \"10.0.0.0/8\" or \"192.168.1.20/32\""
    } else if message.contains("invalid socket address syntax") {
        "; write an IP address and port, e.g. \"127.0.0.1:8080\" or \"[::]:8080\""
    } else if message.ends_with("expected a sequence") {
        "; a list is written [\"a\", \"b\"], a list of tables as [[section]] blocks"
    } else {
        ""
    };
    let message = message
        .replace("an unsigned 8 bit integer", "a whole number from 0 to 255")
        .replace(
            "an unsigned 16 bit integer",
            "a whole number from 0 to 65535",
        )
        .replace(
            "an unsigned 64 bit or less integer",
            "a whole number, 0 or more",
        );
    format!("{message}{hint}")
}

/// Points at the environment variable when a bad value came from one; otherwise an
/// administrator looks for it in the file and does not find it.
fn blame_env(mut problems: Vec<ConfigProblem>, overrides: &[EnvOverride]) -> Vec<ConfigProblem> {
    for problem in &mut problems {
        let from_env = overrides.iter().find(|o| {
            problem.key == o.key
                || problem
                    .key
                    .strip_prefix(&o.key)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        });
        if let Some(o) = from_env {
            let _ = write!(problem.message, " (set by environment variable {})", o.var);
        }
    }
    problems
}

// The upper bounds are far beyond sensible values: they catch typos (an extra digit or two)
// and keep every integer representable in TOML for `masked_toml`.
/// Smallest journal segment, one page; smaller segments would only churn files.
const MIN_SEGMENT_BYTES: u64 = 4096;
/// Largest journal segment, 1 TiB.
const MAX_SEGMENT_BYTES: u64 = 1 << 40;
/// Smallest ingest queue; a tinier one stalls the sources on every burst.
const MIN_QUEUE: usize = 16;
/// Largest ingest queue, 16 Mi inputs; the queue lives in memory.
const MAX_QUEUE: usize = 1 << 24;
/// Smallest AMI message limit; ordinary events would be rejected below it.
const MIN_MESSAGE_BYTES: usize = 1024;
/// Largest AMI message limit, 64 MiB; the limit exists so a broken peer cannot exhaust memory.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

impl Settings {
    /// The effective settings as TOML with every secret, password and token replaced by
    /// `********`, safe to print at startup or attach to a support ticket.
    pub fn masked_toml(&self) -> String {
        let rendered = toml::Value::try_from(self).and_then(|mut value| {
            mask_secrets(&mut value);
            toml::to_string_pretty(&value)
        });
        rendered.unwrap_or_else(|err| format!("# the settings cannot be shown as TOML: {err}\n"))
    }

    /// Checks what types cannot express: ranges, formats, uniqueness, relations between keys.
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Problems::default();
        self.validate_sections(&mut problems);
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (index, pbx) in self.pbx.iter().enumerate() {
            let at = format!("pbx[{index}]");
            pbx.validate(&at, &mut problems);
            if let Some(first) = names.insert(&pbx.name, index) {
                problems.add(
                    format!("{at}.name"),
                    format!(
                        "{:?} is already the name of pbx[{first}]; names must be unique",
                        pbx.name
                    ),
                );
            }
        }
        let mut extensions: HashMap<&str, usize> = HashMap::new();
        for (index, phone) in self.phones.iter().enumerate() {
            let at = format!("phones[{index}]");
            phone.validate(&at, &mut problems);
            if phone.extension.is_empty() {
                continue;
            }
            if let Some(first) = extensions.insert(&phone.extension, index) {
                problems.add(
                    format!("{at}.extension"),
                    format!(
                        "{:?} is already the extension of phones[{first}]; each phone needs its own",
                        phone.extension
                    ),
                );
            }
        }
        let mut tokens: HashMap<&str, usize> = HashMap::new();
        for (index, token) in self.api.tokens.iter().enumerate() {
            let at = format!("api.tokens[{index}]");
            token.validate(&at, &mut problems);
            // The message must not repeat the token: errors end up in logs.
            if !token.token.is_empty() {
                if let Some(first) = tokens.insert(&token.token, index) {
                    problems.add(
                        format!("{at}.token"),
                        format!("same token as api.tokens[{first}]; tokens must be unique"),
                    );
                }
            }
        }
        self.validate_live(&mut problems);
        problems.0
    }

    /// The single-table sections.
    fn validate_sections(&self, problems: &mut Problems) {
        if self.log.level.trim().is_empty() {
            problems.add(
                "log.level",
                "must not be empty; \"info\" is the usual level",
            );
        } else if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.add(
                "log.level",
                format!("{err}; e.g. \"info\", or per module \"info,ctibridge::ami=debug\""),
            );
        }

        let url = &self.storage.url;
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // The schema is written to be portable, but the PostgreSQL store is not built yet.
            problems.add(
                "storage.url",
                format!(
                    "{url:?}: PostgreSQL storage is not available in this version; \
                     use sqlite://PATH"
                ),
            );
        } else if url == "sqlite::memory:" {
            // An in-memory store (records are lost at exit): for tests and trials.
        } else {
            match url.strip_prefix("sqlite://") {
                None => problems.add(
                    "storage.url",
                    format!(
                        "{url:?} is not supported; expected sqlite://PATH (or sqlite::memory:)"
                    ),
                ),
                Some("") => problems.add(
                    "storage.url",
                    format!("{url:?} names no database, e.g. \"sqlite://ctibridge.db\""),
                ),
                Some(_) => {}
            }
        }

        if self.journal.dir.as_os_str().is_empty() {
            problems.add("journal.dir", "must not be empty, e.g. \"journal\"");
        }
        problems.positive("journal.fsync_interval", self.journal.fsync_interval);
        problems.positive(
            "journal.checkpoint_interval",
            self.journal.checkpoint_interval,
        );
        problems.in_range(
            "journal.segment_max_bytes",
            self.journal.segment_max_bytes,
            MIN_SEGMENT_BYTES,
            MAX_SEGMENT_BYTES,
        );
        problems.in_range(
            "ingest.queue_capacity",
            self.ingest.queue_capacity,
            MIN_QUEUE,
            MAX_QUEUE,
        );
        problems.in_range(
            "runtime.worker_threads",
            self.runtime.worker_threads,
            0,
            MAX_WORKER_THREADS,
        );

        if let Some(secret) = &self.action_url.path_secret {
            let url_safe = |c: char| c.is_ascii_alphanumeric() || "-_.~".contains(c);
            if secret.is_empty() || !secret.chars().all(url_safe) {
                problems.add(
                    "action_url.path_secret",
                    "must be letters, digits, '-', '_', '.' or '~' (it is part of a URL); \
                     remove the key to use no secret",
                );
            }
        }
        problems.positive("active_uri.timeout", self.active_uri.timeout);
        self.validate_control(problems);
    }

    /// `[dial]` and `[dnd]`: templates end up in AMI actions, so they are checked here.
    fn validate_control(&self, problems: &mut Problems) {
        let pbx_known = |name: &Option<String>| match name {
            None => true,
            Some(n) => self.pbx.iter().any(|p| &p.name == n),
        };
        for (key, name) in [("dial.pbx", &self.dial.pbx), ("dnd.pbx", &self.dnd.pbx)] {
            if !pbx_known(name) {
                problems.add(
                    key,
                    format!(
                        "{:?} is not the name of any [[pbx]]; remove the key to use the first",
                        name.as_deref().unwrap_or("")
                    ),
                );
            }
        }
        let d = &self.dial;
        template(
            problems,
            "dial.channel",
            &d.channel,
            &["ext", "endpoint"],
            true,
        );
        if !d.channel.contains("{ext}") && !d.channel.contains("{endpoint}") {
            problems.add(
                "dial.channel",
                "must contain {ext} or {endpoint}, e.g. \"PJSIP/{endpoint}\"",
            );
        }
        template(problems, "dial.context", &d.context, &[], true);
        template(
            problems,
            "dial.caller_id",
            &d.caller_id,
            &["from", "to"],
            false,
        );
        if d.priority == 0 {
            problems.add("dial.priority", "must be 1 or more");
        }
        problems.positive("dial.originate_timeout", d.originate_timeout);
        problems.positive("dial.match_window", d.match_window);
        problems.positive("dial.idempotency_ttl", d.idempotency_ttl);
        problems.positive("dial.rate_window", d.rate_window);
        let n = &self.dnd;
        template(
            problems,
            "dnd.astdb_family",
            &n.astdb_family,
            &["ext"],
            true,
        );
        template(problems, "dnd.astdb_key", &n.astdb_key, &["ext"], true);
        template(problems, "dnd.astdb_value", &n.astdb_value, &["ext"], true);
        template(
            problems,
            "dnd.devstate_device",
            &n.devstate_device,
            &["ext"],
            true,
        );
        if !n.devstate_device.contains("{ext}") {
            problems.add(
                "dnd.devstate_device",
                "must contain {ext}, e.g. \"Custom:DND{ext}\" (state changes are mapped back to the phone by it)",
            );
        }
        template(problems, "dnd.devstate_on", &n.devstate_on, &[], true);
        template(problems, "dnd.devstate_off", &n.devstate_off, &[], true);
        if n.devstate_on.eq_ignore_ascii_case(&n.devstate_off) {
            problems.add("dnd.devstate_off", "must differ from dnd.devstate_on");
        }
        problems.positive("dnd.loop_guard", n.loop_guard);
    }
}

impl PbxSettings {
    fn validate(&self, at: &str, problems: &mut Problems) {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !name_ok {
            problems.add(
                format!("{at}.name"),
                format!(
                    "{:?} is not a valid name; use letters, digits, '_', '.' or '-', e.g. \"main\"",
                    self.name
                ),
            );
        }
        if let Err(reason) = check_host(&self.host) {
            problems.add(
                format!("{at}.host"),
                format!("{reason}; set the port with {at}.port"),
            );
        }
        if self.port == 0 {
            problems.add(
                format!("{at}.port"),
                "must be 1-65535; Asterisk's default is 5038",
            );
        }
        for (key, value, example) in [
            (
                "username",
                &self.username,
                "the [section] name of the user in manager.conf",
            ),
            ("secret", &self.secret, "the user's secret= in manager.conf"),
            (
                "events",
                &self.events,
                "\"on\", \"off\" or a list like \"call,agent\"",
            ),
        ] {
            if value.trim().is_empty() {
                problems.add(
                    format!("{at}.{key}"),
                    format!("must not be empty; expected {example}"),
                );
            }
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("login_timeout", self.login_timeout),
            ("ping_interval", self.ping_interval),
            ("ping_timeout", self.ping_timeout),
            ("reconnect_initial", self.reconnect_initial),
            ("reconnect_max", self.reconnect_max),
        ] {
            problems.positive(&format!("{at}.{key}"), value);
        }
        if self.ping_timeout >= self.ping_interval {
            problems.add(
                format!("{at}.ping_timeout"),
                format!(
                    "{} must be shorter than ping_interval ({}), or pings overlap",
                    format_duration(self.ping_timeout),
                    format_duration(self.ping_interval)
                ),
            );
        }
        if self.reconnect_max < self.reconnect_initial {
            problems.add(
                format!("{at}.reconnect_max"),
                format!(
                    "{} is shorter than reconnect_initial ({}); it is the upper bound of the delay",
                    format_duration(self.reconnect_max),
                    format_duration(self.reconnect_initial)
                ),
            );
        }
        problems.in_range(
            &format!("{at}.max_message_bytes"),
            self.max_message_bytes,
            MIN_MESSAGE_BYTES,
            MAX_MESSAGE_BYTES,
        );
    }
}

impl PhoneSettings {
    fn validate(&self, at: &str, problems: &mut Problems) {
        if self.extension.trim().is_empty() {
            problems.add(
                format!("{at}.extension"),
                "is required: the extension registered on the phone, e.g. \"201\"",
            );
        }
        if self.address.is_empty() {
            problems.add(
                format!("{at}.address"),
                "is required: the phone's web interface as host:port, e.g. \"192.168.1.50:80\"",
            );
        } else if let Err(reason) = check_address(&self.address) {
            problems.add(format!("{at}.address"), reason);
        }
        if self.line == 0 {
            problems.add(
                format!("{at}.line"),
                "must be 1 or more; phones number lines from 1",
            );
        }
        if self
            .account
            .as_deref()
            .is_some_and(|account| account.trim().is_empty())
        {
            problems.add(
                format!("{at}.account"),
                "must not be empty; remove the key when the account is the extension",
            );
        }
        if let Some(mac) = &self.mac {
            let digits: String = mac.chars().filter(|c| !":-.".contains(*c)).collect();
            if digits.len() != 12 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                problems.add(
                    format!("{at}.mac"),
                    format!(
                        "{mac:?} is not a MAC address; expected 12 hex digits, \
                         e.g. \"80:5e:c0:12:34:56\""
                    ),
                );
            }
        }
    }
}

impl ApiToken {
    fn validate(&self, at: &str, problems: &mut Problems) {
        if self.token.is_empty() {
            problems.add(
                format!("{at}.token"),
                "is required: the bearer token clients send",
            );
        }
        if self.scopes.is_empty() {
            problems.add(
                format!("{at}.scopes"),
                "must list at least one of: read, dial, admin",
            );
        }
    }
}

/// Accepts an IP address or a DNS name, and catches a port or URL written in its place.
fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let is_dns_name = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if is_dns_name {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a host; expected an IP address or host name such as \"10.0.0.5\" \
             or \"pbx.example.net\", without port or http://"
        ))
    }
}

/// Accepts `host:port`, with IPv6 addresses in brackets.
fn check_address(address: &str) -> Result<(), String> {
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
        check_host(host).is_ok() && port.parse::<u16>().is_ok_and(|port| port != 0)
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{address:?} is not host:port; expected e.g. \"192.168.1.50:80\" or \
             \"phone-201.example.net:443\", without http://"
        ))
    }
}

/// Checks a template that ends up in an AMI header: only the `{name}` placeholders in
/// `allowed`, no line breaks (they would end the header), and not empty when `required`.
fn template(problems: &mut Problems, key: &str, value: &str, allowed: &[&str], required: bool) {
    if required && value.trim().is_empty() {
        problems.add(key, "must not be empty");
        return;
    }
    if value.contains(['\r', '\n']) {
        problems.add(key, "must be one line (it is sent as an AMI header value)");
    }
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            problems.add(key, "has a '{' without a closing '}'");
            return;
        };
        let name = &after[..close];
        if !allowed.contains(&name) {
            let known = if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed
                    .iter()
                    .map(|a| format!("{{{a}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            problems.add(
                key,
                format!("unknown placeholder {{{name}}}; allowed here: {known}"),
            );
        }
        rest = &after[close + 1..];
    }
}

/// Collects validation problems.
#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(key, message));
    }

    /// Zero durations would spin timers or time out at once.
    fn positive(&mut self, key: &str, value: Duration) {
        if value.is_zero() {
            self.add(key, "must be greater than 0, e.g. \"5s\"");
        }
    }

    /// `min..=max`, both shown in the message.
    fn in_range<T: PartialOrd + fmt::Display>(&mut self, key: &str, value: T, min: T, max: T) {
        if value < min || value > max {
            self.add(
                key,
                format!("{value} is out of range; expected {min} to {max}"),
            );
        }
    }
}

/// Replaces the values of [`SECRET_KEYS`] anywhere in `value`.
fn mask_secrets(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, child) in table.iter_mut() {
                if SECRET_KEYS.contains(&key.as_str()) {
                    *child = toml::Value::String(MASK.into());
                } else {
                    mask_secrets(child);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn load_ok(text: &str, vars: &[(&str, &str)]) -> Settings {
        load_from_str(text, &env(vars)).unwrap_or_else(|err| panic!("unexpected problems:\n{err}"))
    }

    fn problems(text: &str, vars: &[(&str, &str)]) -> Vec<ConfigProblem> {
        match load_from_str(text, &env(vars)) {
            Ok(settings) => panic!("expected problems, got {settings:?}"),
            Err(err) => err.problems,
        }
    }

    fn keys(problems: &[ConfigProblem]) -> Vec<&str> {
        let mut keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        keys.sort_unstable();
        keys
    }

    fn find<'a>(problems: &'a [ConfigProblem], key: &str) -> &'a ConfigProblem {
        problems
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("no problem for {key} in {problems:#?}"))
    }

    const FULL: &str = r#"
        [log]
        format = "json"
        level = "debug,ctibridge::ami=trace"
        [http]
        listen = "0.0.0.0:9090"
        [storage]
        url = "sqlite:///var/lib/ctibridge/calls.db"
        [journal]
        dir = "/var/lib/ctibridge/journal"
        fsync_interval = "100ms"
        segment_max_bytes = 1048576
        [ingest]
        queue_capacity = 1024
        [[pbx]]
        name = "main"
        host = "pbx1.example.net"
        port = 5039
        username = "cti"
        secret = "s3cret-main"
        auth = "plain"
        events = "call,agent"
        connect_timeout = "3s"
        login_timeout = "4s"
        ping_interval = "30s"
        ping_timeout = "2s"
        reconnect_initial = "1s"
        reconnect_max = "1m"
        max_message_bytes = 65536
        [[pbx]]
        name = "backup"
        host = "10.0.0.2"
        secret = "s3cret-backup"
        [[phones]]
        extension = "201"
        address = "192.168.1.50:80"
        vendor = "yealink-legacy"
        username = "user"
        password = "phone-pass"
        line = 2
        account = "201-acct"
        transport = "auto"
        tls = true
        tls_insecure = true
        mac = "80:5e:c0:12:34:56"
        [[phones]]
        extension = "202"
        address = "[fe80::1]:443"
        vendor = "snom"
        [api]
        tokens = [{ token = "tok-admin", scopes = ["read", "dial", "admin"] }]
        [action_url]
        allowed_networks = ["192.168.1.0/24", "fd00::/8"]
        path_secret = "path-s3cret"
        [active_uri]
        allowed_networks = ["192.168.1.0/24"]
        timeout = "2s"
    "#;

    #[test]
    fn empty_input_gives_the_defaults() {
        let settings = load_ok("", &[]);
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.log.format, LogFormat::Text);
        assert_eq!(settings.log.level, "info");
        assert_eq!(settings.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.storage.url, "sqlite://ctibridge.db");
        assert_eq!(settings.journal.dir, PathBuf::from("journal"));
        assert_eq!(settings.journal.fsync_interval, Duration::from_millis(20));
        assert_eq!(settings.journal.segment_max_bytes, 67_108_864);
        assert_eq!(settings.ingest.queue_capacity, 65536);
        assert_eq!(settings.pbx.len(), 1);
        let pbx = &settings.pbx[0];
        assert_eq!(
            (pbx.name.as_str(), pbx.host.as_str(), pbx.port),
            ("default", "127.0.0.1", 5038)
        );
        assert_eq!(
            (pbx.username.as_str(), pbx.secret.as_str()),
            ("bridge", "bridge-secret")
        );
        assert_eq!((pbx.auth, pbx.events.as_str()), (AmiAuth::Md5, "on"));
        assert_eq!(pbx.ping_interval, Duration::from_secs(20));
        assert_eq!(pbx.reconnect_initial, Duration::from_millis(500));
        assert_eq!(pbx.reconnect_max, Duration::from_secs(30));
        assert_eq!(pbx.max_message_bytes, 1_048_576);
        assert!(settings.phones.is_empty());
        assert!(settings.api.tokens.is_empty());
        let networks = |list: &[IpNet]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            networks(&settings.action_url.allowed_networks),
            ["127.0.0.1/32", "::1/128"]
        );
        assert_eq!(settings.action_url.path_secret, None);
        assert_eq!(
            networks(&settings.active_uri.allowed_networks),
            ["127.0.0.0/8", "::1/128"]
        );
        assert_eq!(settings.active_uri.timeout, Duration::from_secs(5));
    }

    #[test]
    fn full_file_is_read_and_survives_a_round_trip() {
        let settings = load_ok(FULL, &[]);
        assert_eq!(settings.log.format, LogFormat::Json);
        assert_eq!(settings.http.listen.to_string(), "0.0.0.0:9090");
        assert_eq!(settings.journal.fsync_interval, Duration::from_millis(100));
        assert_eq!(settings.ingest.queue_capacity, 1024);
        assert_eq!(settings.pbx.len(), 2);
        assert_eq!(settings.pbx[0].auth, AmiAuth::Plain);
        assert_eq!(settings.pbx[0].reconnect_max, Duration::from_secs(60));
        assert_eq!(settings.pbx[0].max_message_bytes, 65536);
        assert_eq!(settings.pbx[1].name, "backup");
        assert_eq!(
            settings.pbx[1].port, 5038,
            "unset keys of an element take defaults"
        );
        let phone = &settings.phones[0];
        assert_eq!(phone.vendor, PhoneVendor::YealinkLegacy);
        assert_eq!(phone.transport, PhoneTransport::Auto);
        assert_eq!((phone.line, phone.tls, phone.tls_insecure), (2, true, true));
        assert_eq!(phone.account.as_deref(), Some("201-acct"));
        assert_eq!(phone.mac.as_deref(), Some("80:5e:c0:12:34:56"));
        assert_eq!(settings.phones[1].vendor, PhoneVendor::Snom);
        assert_eq!(
            settings.api.tokens,
            [ApiToken {
                token: "tok-admin".into(),
                scopes: vec![Scope::Read, Scope::Dial, Scope::Admin],
            }]
        );
        assert_eq!(
            settings.action_url.path_secret.as_deref(),
            Some("path-s3cret")
        );
        assert_eq!(settings.active_uri.allowed_networks.len(), 1);

        let written = toml::to_string(&settings).expect("settings serialize");
        assert_eq!(load_ok(&written, &[]), settings);
    }

    #[test]
    fn env_overrides_a_nested_key_with_any_case() {
        let settings = load_ok(
            "[log]\nlevel = \"warn\"\n",
            &[
                ("CTIBRIDGE__LOG__LEVEL", "debug"),
                ("ctibridge__journal__fsync_interval", "5ms"),
                ("Ctibridge__Http__Listen", "0.0.0.0:81"),
                ("CTIBRIDGE_LOG__FORMAT", "json"),
                ("PATH", "/usr/bin"),
            ],
        );
        assert_eq!(settings.log.level, "debug");
        assert_eq!(settings.journal.fsync_interval, Duration::from_millis(5));
        assert_eq!(settings.http.listen.to_string(), "0.0.0.0:81");
        assert_eq!(
            settings.log.format,
            LogFormat::Text,
            "single _ after the prefix is ignored"
        );
    }

    #[test]
    fn env_overrides_an_array_element_by_index() {
        let file = "[[pbx]]\nname = \"a\"\n[[pbx]]\nname = \"b\"\nhost = \"10.0.0.2\"\n";
        let settings = load_ok(file, &[("CTIBRIDGE__PBX__1__HOST", "10.9.9.9")]);
        assert_eq!(settings.pbx[0].host, "127.0.0.1");
        assert_eq!(
            (settings.pbx[1].name.as_str(), settings.pbx[1].host.as_str()),
            ("b", "10.9.9.9")
        );
    }

    #[test]
    fn env_overrides_pbx_0_host_with_and_without_a_pbx_in_the_file() {
        for var in ["CTIBRIDGE__PBX__0__HOST", "CTIBRIDGE__PBX__HOST"] {
            let vars = [(var, "10.0.0.5")];
            let with_file = load_ok("[[pbx]]\nname = \"main\"\nhost = \"10.0.0.1\"\n", &vars);
            assert_eq!(with_file.pbx.len(), 1, "{var}");
            assert_eq!(with_file.pbx[0].name, "main", "{var}");
            assert_eq!(with_file.pbx[0].host, "10.0.0.5", "{var}");

            let without = load_ok("[log]\nlevel = \"info\"\n", &vars);
            let expected = PbxSettings {
                host: "10.0.0.5".into(),
                ..PbxSettings::default()
            };
            assert_eq!(without.pbx, [expected], "{var}");
        }
    }

    #[test]
    fn env_creates_a_phone_without_an_index() {
        let settings = load_ok(
            "",
            &[
                ("CTIBRIDGE__PHONES__EXTENSION", "201"),
                ("CTIBRIDGE__PHONES__ADDRESS", "[fe80::1]:80"),
            ],
        );
        assert_eq!(settings.phones.len(), 1);
        assert_eq!(settings.phones[0].extension, "201");
        assert_eq!(
            settings.phones[0].address, "[fe80::1]:80",
            "a [ value that is no array stays text"
        );
    }

    #[test]
    fn env_sets_lists_as_toml_inline_arrays() {
        let settings = load_ok(
            "[[api.tokens]]\ntoken = \"from-file\"\nscopes = [\"read\"]\n",
            &[
                (
                    "CTIBRIDGE__ACTION_URL__ALLOWED_NETWORKS",
                    r#"["127.0.0.1/32","10.0.0.0/8"]"#,
                ),
                ("CTIBRIDGE__API__TOKENS__0__SCOPES", r#"["read", "admin"]"#),
            ],
        );
        let networks: Vec<String> = settings
            .action_url
            .allowed_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(networks, ["127.0.0.1/32", "10.0.0.0/8"]);
        assert_eq!(settings.api.tokens[0].token, "from-file");
        assert_eq!(settings.api.tokens[0].scopes, [Scope::Read, Scope::Admin]);
    }

    #[test]
    fn env_list_of_tables_is_applied_before_its_elements() {
        let settings = load_ok(
            "",
            &[
                (
                    "CTIBRIDGE__PBX",
                    r#"[{ name = "a" }, { name = "b", host = "10.0.0.2" }]"#,
                ),
                ("CTIBRIDGE__PBX__1__PORT", "6000"),
                ("CTIBRIDGE__API__TOKENS__0__TOKEN", "env-token"),
                (
                    "CTIBRIDGE__API__TOKENS",
                    r#"[{ token = "x", scopes = ["dial"] }]"#,
                ),
                (
                    "CTIBRIDGE__PHONES",
                    r#"[{ extension = "201", address = "10.0.0.1:80" }]"#,
                ),
                ("CTIBRIDGE__PHONES__0__LINE", "2"),
            ],
        );
        let names: Vec<&str> = settings.pbx.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            (settings.pbx[1].host.as_str(), settings.pbx[1].port),
            ("10.0.0.2", 6000)
        );
        assert_eq!(settings.api.tokens[0].token, "env-token");
        assert_eq!(settings.api.tokens[0].scopes, [Scope::Dial]);
        assert_eq!(
            (
                settings.phones[0].extension.as_str(),
                settings.phones[0].line
            ),
            ("201", 2)
        );
    }

    #[test]
    fn env_numbers_and_flags_fill_typed_fields() {
        let settings = load_ok(
            "[[phones]]\nextension = \"201\"\naddress = \"10.0.0.9:80\"\n",
            &[
                ("CTIBRIDGE__PBX__PORT", "5039"),
                ("CTIBRIDGE__PBX__MAX_MESSAGE_BYTES", "4096"),
                ("CTIBRIDGE__INGEST__QUEUE_CAPACITY", "1024"),
                ("CTIBRIDGE__JOURNAL__SEGMENT_MAX_BYTES", "8192"),
                ("CTIBRIDGE__PHONES__0__LINE", "3"),
                ("CTIBRIDGE__PHONES__0__TLS", "true"),
            ],
        );
        assert_eq!(settings.pbx[0].port, 5039);
        assert_eq!(settings.pbx[0].max_message_bytes, 4096);
        assert_eq!(settings.ingest.queue_capacity, 1024);
        assert_eq!(settings.journal.segment_max_bytes, 8192);
        assert_eq!((settings.phones[0].line, settings.phones[0].tls), (3, true));
    }

    #[test]
    fn env_problems_name_the_variable() {
        let found = problems("", &[("CTIBRIDGE__PBX__PORT", "abc")]);
        let port = find(&found, "pbx[0].port");
        assert!(port.message.contains("CTIBRIDGE__PBX__PORT"), "{port}");

        let found = problems(
            "",
            &[
                ("CTIBRIDGE__PBX____HOST", "x"),
                ("CTIBRIDGE__PBX__HOST", "a"),
                ("CTIBRIDGE__PBX__0__HOST", "b"),
            ],
        );
        assert_eq!(keys(&found), ["(file)", "pbx[0].host"]);
        let malformed = find(&found, "(file)");
        assert!(
            malformed.message.contains("CTIBRIDGE__PBX____HOST"),
            "{malformed}"
        );
        let duplicate = find(&found, "pbx[0].host");
        assert!(
            duplicate.message.contains("CTIBRIDGE__PBX__0__HOST"),
            "{duplicate}"
        );
        assert!(
            duplicate.message.contains("CTIBRIDGE__PBX__HOST"),
            "{duplicate}"
        );

        let found = problems("", &[("CTIBRIDGE__PBX__1__HOST", "10.0.0.2")]);
        assert_eq!(
            keys(&found),
            ["pbx[0]"],
            "pbx[1] alone leaves a gap: {found:?}"
        );
        assert!(found[0].message.contains("without gaps"), "{}", found[0]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let found = problems("[journl]\ndir = \"x\"\n[[pbx]]\nhots = \"10.0.0.1\"\n", &[]);
        assert_eq!(keys(&found), ["journl", "pbx[0].hots"]);
        let hots = find(&found, "pbx[0].hots");
        assert!(hots.message.starts_with("unknown key \"hots\""), "{hots}");
        assert!(
            hots.message.contains("host, port"),
            "accepted keys are listed: {hots}"
        );

        let found = problems("", &[("CTIBRIDGE__LOG__LEVLE", "debug")]);
        assert_eq!(keys(&found), ["log.levle"]);
    }

    #[test]
    fn unknown_enum_value_lists_the_accepted_ones() {
        let err = load_from_str("[[pbx]]\nauth = \"sha\"\n", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pbx[0].auth: unknown value \"sha\", expected one of: md5, plain"
        );
    }

    #[test]
    fn every_deserialization_problem_is_reported() {
        let found = problems(
            r#"
            [http]
            listen = "localhost"
            [pbx]
            host = "10.0.0.1"
            [[phones]]
            vendor = "cisco"
            line = 300
            [action_url]
            allowed_networks = ["10.0.0.0/33"]
            [active_uri]
            timeout = "5 parsecs"
            "#,
            &[],
        );
        assert_eq!(
            keys(&found),
            [
                "action_url.allowed_networks[0]",
                "active_uri.timeout",
                "http.listen",
                "pbx",
                "phones[0].line",
                "phones[0].vendor",
            ]
        );
        let vendor = find(&found, "phones[0].vendor");
        assert!(
            vendor.message.contains("yealink, yealink-legacy, fanvil"),
            "{vendor}"
        );
        let pbx = find(&found, "pbx");
        assert!(pbx.message.contains("[[section]]"), "{pbx}");
        assert!(find(&found, "active_uri.timeout")
            .message
            .contains("\"20s\""));
    }

    #[test]
    fn every_validation_problem_is_reported() {
        let err = load_from_str(
            r#"
            [log]
            level = "ctibridge=loud"
            [storage]
            url = "mysql://db/cti"
            [journal]
            segment_max_bytes = 100
            [ingest]
            queue_capacity = 1
            [[pbx]]
            name = "main"
            host = "10.0.0.1:5038"
            username = ""
            ping_interval = "5s"
            ping_timeout = "5s"
            reconnect_initial = "10s"
            reconnect_max = "1s"
            [[pbx]]
            name = "main"
            login_timeout = "0s"
            [[phones]]
            extension = "201"
            address = "http://10.0.0.1"
            mac = "xx"
            [[phones]]
            extension = "201"
            address = "10.0.0.2:80"
            [[phones]]
            address = "10.0.0.3:80"
            line = 0
            [[api.tokens]]
            token = "dup-tok"
            scopes = ["read"]
            [[api.tokens]]
            token = "dup-tok"
            [action_url]
            path_secret = "a/b"
            "#,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            keys(&err.problems),
            [
                "action_url.path_secret",
                "api.tokens[1].scopes",
                "api.tokens[1].token",
                "ingest.queue_capacity",
                "journal.segment_max_bytes",
                "log.level",
                "pbx[0].host",
                "pbx[0].ping_timeout",
                "pbx[0].reconnect_max",
                "pbx[0].username",
                "pbx[1].login_timeout",
                "pbx[1].name",
                "phones[0].address",
                "phones[0].mac",
                "phones[1].extension",
                "phones[2].extension",
                "phones[2].line",
                "storage.url",
            ]
        );
        assert_eq!(err.to_string().lines().count(), err.problems.len());
        let duplicate = find(&err.problems, "api.tokens[1].token");
        assert!(
            !duplicate.message.contains("dup-tok"),
            "tokens stay out of messages: {duplicate}"
        );
        let reconnect = find(&err.problems, "pbx[0].reconnect_max");
        assert!(reconnect.message.contains("10s"), "{reconnect}");
    }

    #[test]
    fn masked_toml_hides_every_secret() {
        let settings = load_ok(FULL, &[]);
        let masked = settings.masked_toml();
        for secret in [
            "s3cret-main",
            "s3cret-backup",
            "phone-pass",
            "tok-admin",
            "path-s3cret",
        ] {
            assert!(!masked.contains(secret), "{secret} leaked:\n{masked}");
        }
        assert!(
            masked.contains("pbx1.example.net"),
            "other values stay:\n{masked}"
        );
        let parsed: toml::Value = toml::from_str(&masked).expect("masked output is TOML");
        assert_eq!(parsed["pbx"][0]["secret"].as_str(), Some(MASK));
        assert_eq!(parsed["api"]["tokens"][0]["token"].as_str(), Some(MASK));
    }

    #[test]
    fn webhooks_are_validated_and_overridable_from_the_environment() {
        let text = "[[webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nevents = [\"call.*\"]\n";
        let settings = load_ok(
            text,
            &[
                ("CTIBRIDGE__WEBHOOKS__0__SECRET", "s3cret"),
                ("CTIBRIDGE__WEBHOOKS__MAX_ATTEMPTS", "3"),
                ("CTIBRIDGE__LIVE__CLIENT_BUFFER", "64"),
            ],
        );
        let hook = &settings.webhooks[0];
        assert_eq!(hook.secret.as_deref(), Some("s3cret"));
        assert_eq!(hook.max_attempts, 3);
        assert_eq!(hook.effective_name(), "http://127.0.0.1:9/hook");
        assert_eq!(settings.live.client_buffer, 64);
        assert!(settings.masked_toml().contains(MASK));
        assert!(!settings.masked_toml().contains("s3cret"));

        let bad = "[[webhooks]]\nurl = \"ftp://x\"\nevents = [\"calls.*\"]\nmax_attempts = 0\n\
                   retry_initial = \"1m\"\nretry_max = \"1s\"\n\
                   [[webhooks]]\nurl = \"ftp://x\"\n[live]\nclient_buffer = 0\n";
        assert_eq!(
            keys(&problems(bad, &[])),
            [
                "live.client_buffer",
                "webhooks[0].events",
                "webhooks[0].max_attempts",
                "webhooks[0].retry_max",
                "webhooks[0].url",
                "webhooks[1].name",
                "webhooks[1].url",
            ]
        );
    }

    #[test]
    fn shipped_config_file_loads_as_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/ctibridge.toml"
        ));
        let loaded = load(Some(path)).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(loaded.source, ConfigSource::File(path.to_path_buf()));
        assert_eq!(loaded.settings, Settings::default());
    }

    #[test]
    fn shipped_config_file_examples_are_valid_when_uncommented() {
        let shipped = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/ctibridge.toml"
        ));
        let is_setting = |line: &str| {
            line.starts_with("[[")
                || line.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
        };
        let uncommented: Vec<&str> = shipped
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(setting) if is_setting(setting) => setting,
                _ => line,
            })
            .collect();
        let settings = load_ok(&uncommented.join("\n"), &[]);
        assert_eq!(settings.phones.len(), 1);
        assert_eq!(settings.phones[0].mac.as_deref(), Some("80:5e:c0:12:34:56"));
        assert_eq!(settings.api.tokens.len(), 1);
        assert!(settings.action_url.path_secret.is_some());
    }

    #[test]
    fn worker_threads_as_configured_or_one_per_core_but_one() {
        let set = load_ok("[runtime]\nworker_threads = 3\n", &[]);
        assert_eq!(set.runtime.workers(), 3);
        let env_set = load_ok("", &[("CTIBRIDGE__RUNTIME__WORKER_THREADS", "2")]);
        assert_eq!(env_set.runtime.workers(), 2);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let auto = Settings::default().runtime.workers();
        assert_eq!(auto, cores.saturating_sub(1).max(1), "{cores} cores");
        let err = problems("[runtime]\nworker_threads = 257\n", &[]);
        assert_eq!(keys(&err), ["runtime.worker_threads"]);
    }

    #[test]
    fn missing_or_broken_file_is_named() {
        let missing = Path::new("/nonexistent/ctibridge-test.toml");
        let err = load(Some(missing)).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(
            err.to_string().contains("/nonexistent/ctibridge-test.toml"),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let broken = dir.path().join("broken.toml");
        std::fs::write(&broken, "[log]\nlevel = \"info\n").expect("write");
        let err = load(Some(&broken)).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("(file): "), "{message}");
        assert!(message.contains(&broken.display().to_string()), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");
    }

    #[test]
    fn search_takes_the_first_existing_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = dir.path().join("first.toml");
        let second = dir.path().join("second.toml");
        std::fs::write(&second, "").expect("write");
        assert_eq!(find_file(&[&first, &second]), Some(second.clone()));
        std::fs::write(&first, "").expect("write");
        assert_eq!(find_file(&[&first, &second]), Some(first));
        assert_eq!(find_file(&[&dir.path().join("none.toml")]), None);
    }

    #[test]
    fn dial_and_dnd_settings_are_checked() {
        let settings = load_ok(
            "[dial]\ndefault_via = \"pbx\"\nchannel = \"Local/{ext}@from-internal\"\n\
             [dnd]\npbx_mode = \"devstate\"\nloop_guard = \"2s\"\n",
            &[],
        );
        assert_eq!(settings.dial.default_via, DialVia::Pbx);
        assert_eq!(settings.dnd.pbx_mode, DndPbxMode::Devstate);
        assert_eq!(settings.dnd.loop_guard, Duration::from_secs(2));
        let found = problems(
            "[dial]\npbx = \"nope\"\nchannel = \"PJSIP/101\"\ncaller_id = \"{who}\"\npriority = 0\n\
             rate_window = \"0s\"\n[dnd]\ndevstate_device = \"Custom:DND\"\n\
             devstate_off = \"busy\"\nastdb_key = \"{ext\"\n",
            &[],
        );
        let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "dial.pbx",
            "dial.channel",
            "dial.caller_id",
            "dial.priority",
            "dial.rate_window",
            "dnd.devstate_device",
            "dnd.devstate_off",
            "dnd.astdb_key",
        ] {
            assert!(keys.contains(&key), "{key} not in {found:?}");
        }
        let placeholder = found.iter().find(|p| p.key == "dial.caller_id").unwrap();
        assert!(
            placeholder.message.contains("{who}") && placeholder.message.contains("{to}"),
            "{placeholder:?}"
        );
        let env = env(&[("CTIBRIDGE__DND__PBX_MODE", "astdb")]);
        assert_eq!(
            load_from_str("", &env).unwrap().dnd.pbx_mode,
            DndPbxMode::Astdb
        );
    }
}
