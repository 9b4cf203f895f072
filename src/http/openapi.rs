//! The OpenAPI 3.1 document of the HTTP interface, served at `GET /openapi.json`.
//!
//! It is generated from the code: the handlers carry `#[utoipa::path]` attributes (route,
//! parameters, bodies, every response they can give, the scope they need) and the types they
//! send and take derive `utoipa::ToSchema`, which reads the same serde attributes the JSON is
//! made with. This module adds what those cannot say by themselves:
//!
//! - the root ([`ApiDoc`]): info, tags, the security schemes (`bearer` with the scopes
//!   `read`, `dial`, `admin` as role names, which OpenAPI 3.1 allows for non-OAuth schemes,
//!   and `access_token` in the query for the event streams);
//! - reusable responses for 401, 403 and 500 ([`Unauthorized`], [`Forbidden`],
//!   [`InternalError`]) and the error bodies of the dial and DND routes, which add fields to
//!   `ApiError`;
//! - schemas of types defined outside the HTTP layer without a derive: configuration enums
//!   ([`PhoneVendor`], [`PhoneTransport`], [`DialVia`]), [`EventType`], the phone callback, the
//!   DND outcome and the readiness report. Enum values are taken from serde, so they cannot
//!   drift; the mirrored structs have compile-time guards (an exhaustive destructuring of the
//!   real type) and tests that validate real values against the schema;
//! - the live events as a union discriminated by `type` (`Event`), built from the derived
//!   schemas of `LiveEvent` and `EventData`, the `stream.reset` / `stream.closed` messages, and
//!   the outgoing webhook (OpenAPI 3.1 `webhooks`), which utoipa 5 cannot express;
//! - doc-only operations for the Action URL routes: one handler serves GET and POST there,
//!   and each method needs its own operation id.
//!
//! `tests/openapi.rs` checks that every route of [`super::routes`] is in the document and
//! that real responses match their schemas.

use crate::config::{DialVia, PhoneTransport, PhoneVendor};
use crate::control::{DialStatus, DndOutcome, TargetOutcome};
use crate::live::{EventData, EventType, LiveEvent};
use crate::metrics::readiness::{Check, Checks, PbxLink, Readiness};
use crate::phone::action_url::{ActionUrlEvent, PhoneCallback};
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::sync::OnceLock;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

/// The security scheme of `Authorization: Bearer <token>`.
pub const BEARER: &str = "bearer";
/// The security scheme of `?access_token=<token>` (event streams only).
pub const ACCESS_TOKEN: &str = "access_token";

/// The document root; [`document`] is the full document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ctibridge",
        description = "Joins Asterisk AMI and desk-phone Action URL views of every call into \
            merged call records; click-to-call and DND; live call events.\n\n\
            API routes (`/api/v1/…`) need `Authorization: Bearer <token>` with the scope the \
            operation names (`read`, `dial` or `admin`; tokens are `[[api.tokens]]` in the \
            configuration): 401 without a known token, 403 without the scope. The event \
            streams also take the token as `?access_token=`. Errors are JSON \
            `{\"error\": \"<code>\", \"message\": \"…\"}` (`ApiError`). Phone callbacks, \
            health, metrics and the dashboard need no token."
    ),
    paths(
        phone_callback,
        phone_callback_post,
        phone_callback_with_secret,
        phone_callback_with_secret_post,
        super::calls::list,
        super::calls::csv,
        super::calls::get,
        super::calls::orphans,
        super::phones::list,
        super::phones::get,
        super::control::put_dnd,
        super::control::post_dial,
        super::control::get_dial,
        super::events::sse,
        super::events::ws,
        super::webhooks::deliveries,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::ui::index,
        super::ui::index_slash,
        super::ui::app_js,
        super::ui::style_css,
        openapi_json,
    ),
    components(
        schemas(EventType),
        responses(Unauthorized, Forbidden, InternalError)
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "phone callbacks", description = "Action URL requests from desk phones"),
        (name = "calls", description = "Merged call records (scope `read`)"),
        (name = "phones", description = "Configured and discovered phones (scope `read`)"),
        (name = "control", description = "Click-to-call and DND (scope `dial`)"),
        (name = "events", description = "Live events: SSE and WebSocket (scope `read`); the \
            same events go to webhooks (see `webhooks`)"),
        (name = "webhooks", description = "The webhook delivery log (scope `admin`)"),
        (name = "operations", description = "Health, readiness and metrics (no token)"),
        (name = "dashboard", description = "The operator dashboard, served from the binary"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// Why the document could not be built. Never at run time in a tested build: building is
/// deterministic and `tests/openapi.rs` builds it.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("serialising the generated document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the generated document lacks {0}")]
    Missing(String),
}

/// The full document: what utoipa generates, plus the live event union and the webhook.
pub fn document() -> Result<Value, OpenApiError> {
    let mut doc = serde_json::to_value(ApiDoc::openapi())?;
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| OpenApiError::Missing("components.schemas".into()))?;
    for (name, schema) in live_schemas()? {
        schemas.insert(name, schema);
    }
    let root = doc
        .as_object_mut()
        .ok_or_else(|| OpenApiError::Missing("a root object".into()))?;
    root.insert("webhooks".into(), webhooks());
    Ok(doc)
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object,
        content_type = "application/json"))
)]
pub async fn openapi_json() -> Response {
    // Built once: it depends only on the code.
    static DOC: OnceLock<Result<Bytes, String>> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        document()
            .and_then(|d| Ok(serde_json::to_vec(&d)?))
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    });
    match doc {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the OpenAPI document");
            super::error::ApiError::Internal(e.clone()).into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Security and reusable responses.

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token of `[[api.tokens]]`. The role names in an operation's \
                         requirement are the scopes the token needs (`read`, `dial`, `admin`).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ACCESS_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "The bearer token in the query, for clients that cannot set headers (browser \
                 `EventSource` and `WebSocket`); only the event streams accept it.",
            ))),
        );
    }
}

fn error_response(description: &str, www_authenticate: bool) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ApiError")))
            .build(),
    );
    if www_authenticate {
        response = response.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some("`Bearer`"))
                .build(),
        );
    }
    response.build().into()
}

/// 401 of every bearer-token route.
pub struct Unauthorized;

impl<'s> ToResponse<'s> for Unauthorized {
    fn response() -> (&'s str, RefOr<utoipa::openapi::Response>) {
        (
            "Unauthorized",
            error_response(
                "`unauthorized`: no `Authorization: Bearer` token, or an unknown one",
                true,
            ),
        )
    }
}

/// 403 of every bearer-token route.
pub struct Forbidden;

impl<'s> ToResponse<'s> for Forbidden {
    fn response() -> (&'s str, RefOr<utoipa::openapi::Response>) {
        (
            "Forbidden",
            error_response(
                "`forbidden`: the token lacks the scope the operation needs",
                false,
            ),
        )
    }
}

/// 500 of the routes that read the store.
pub struct InternalError;

impl<'s> ToResponse<'s> for InternalError {
    fn response() -> (&'s str, RefOr<utoipa::openapi::Response>) {
        (
            "InternalError",
            error_response("`internal`: the store (or another part) failed", false),
        )
    }
}

/// 429 of `POST /api/v1/dial`: `ApiError` plus the wait.
#[derive(ToSchema)]
#[schema(as = RateLimitedError)]
#[allow(dead_code)] // a schema only
pub struct RateLimitedError {
    /// `rate_limited`.
    pub error: String,
    pub message: String,
    /// Seconds until a request may succeed (also the `Retry-After` header).
    pub retry_after_s: u64,
}

/// 503 of `POST /api/v1/dial`: `ApiError`, plus the failed request when one was created.
#[derive(ToSchema)]
#[schema(as = DialUnavailableError)]
#[allow(dead_code)] // a schema only
pub struct DialUnavailableError {
    /// `phone_unavailable`, `pbx_unavailable`, `no_path`, or the delivery failure's reason
    /// (`timeout`, `unreachable`, `http_status`, `auth_failed`, `phone_locked`,
    /// `notify_failed`, `originate_refused`, …).
    pub error: String,
    pub message: String,
    /// The request, in state `failed`, when its delivery failed (absent when no path was
    /// available and nothing was created).
    #[schema(nullable = false)]
    pub request: Option<DialStatus>,
}

/// 503 of `PUT /api/v1/phones/{ext}/dnd`: `ApiError`, plus what each side did on
/// `dnd_failed`.
#[derive(ToSchema)]
#[schema(as = DndUnavailableError)]
#[allow(dead_code)] // a schema only
pub struct DndUnavailableError {
    /// `dnd_failed` or `no_target`.
    pub error: String,
    pub message: String,
    /// What the phone and the PBX did (`dnd_failed` only).
    #[schema(nullable = false)]
    pub outcome: Option<DndOutcomeDoc>,
}

/// A string matching `pattern`, or a whole number (`from` and `to` of the dial body).
fn text_or_number(pattern: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Integer]))
        .pattern(Some(pattern))
        .minimum(Some(0))
        .build()
        .into()
}

/// `from` of the dial body: an extension (`DialError::InvalidFrom` says what is accepted;
/// surrounding spaces are trimmed).
pub fn dial_from() -> Schema {
    text_or_number(r"^\s*[A-Za-z0-9._+-]{1,64}\s*$")
}

/// `to` of the dial body: digits, `*`, `#`, one leading `+`, and the separators
/// `crate::phone::number::normalize_number` drops (space, tab, `-`, `.`, brackets).
pub fn dial_to() -> Schema {
    text_or_number(r"^[\t .()\[\]-]*\+?[\t .()\[\]0-9*#-]*[0-9*#][\t .()\[\]0-9*#-]*$")
}

// ---------------------------------------------------------------------------------------
// Types defined elsewhere without a derive.

/// A string enum whose values are the serde names of `values`.
fn string_enum<T: Serialize>(values: &[T], description: &str) -> RefOr<Schema> {
    let names = values
        .iter()
        .filter_map(|v| serde_json::to_value(v).ok())
        .collect::<Vec<_>>();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .description(Some(description))
        .build()
        .into()
}

/// Every vendor. The match makes a new variant a compile error here until it is listed.
fn all_vendors() -> [PhoneVendor; 6] {
    use PhoneVendor::*;
    match Yealink {
        Yealink | YealinkLegacy | Fanvil | Snom | Grandstream | Htek => {}
    }
    [Yealink, YealinkLegacy, Fanvil, Snom, Grandstream, Htek]
}

fn all_transports() -> [PhoneTransport; 3] {
    use PhoneTransport::*;
    match Http {
        Http | Notify | Auto => {}
    }
    [Http, Notify, Auto]
}

fn all_vias() -> [DialVia; 3] {
    use DialVia::*;
    match Auto {
        Auto | Phone | Pbx => {}
    }
    [Auto, Phone, Pbx]
}

fn all_event_types() -> [EventType; 11] {
    use EventType::*;
    match CallStarted {
        CallStarted | CallRinging | CallAnswered | CallHeld | CallUnheld | CallTransferred
        | CallMerged | CallEnded | PhoneState | DialStatus | Gap => {}
    }
    EventType::ALL
}

impl PartialSchema for PhoneVendor {
    fn schema() -> RefOr<Schema> {
        string_enum(
            &all_vendors(),
            "The phone's make: which Active URI dialect it speaks",
        )
    }
}

impl ToSchema for PhoneVendor {
    fn name() -> Cow<'static, str> {
        "PhoneVendor".into()
    }
}

impl PartialSchema for PhoneTransport {
    fn schema() -> RefOr<Schema> {
        string_enum(
            &all_transports(),
            "How commands reach the phone: HTTP, SIP NOTIFY through the PBX, or HTTP then NOTIFY",
        )
    }
}

impl ToSchema for PhoneTransport {
    fn name() -> Cow<'static, str> {
        "PhoneTransport".into()
    }
}

impl PartialSchema for DialVia {
    fn schema() -> RefOr<Schema> {
        string_enum(
            &all_vias(),
            "The click-to-call path: `phone` (Active URI), `pbx` (AMI Originate), or `auto` \
             (the phone when it can, else the PBX)",
        )
    }
}

impl ToSchema for DialVia {
    fn name() -> Cow<'static, str> {
        "DialVia".into()
    }
}

impl PartialSchema for EventType {
    fn schema() -> RefOr<Schema> {
        string_enum(&all_event_types(), "The type of a live event")
    }
}

impl ToSchema for EventType {
    fn name() -> Cow<'static, str> {
        "EventType".into()
    }
}

/// A phone event name: the canonical snake_case name of a typed event, or the name as
/// received. A string with the typed names as examples (any name is accepted).
pub struct ActionUrlEventDoc;

impl PartialSchema for ActionUrlEventDoc {
    fn schema() -> RefOr<Schema> {
        let known = ActionUrlEvent::known()
            .iter()
            .map(|e| Value::from(e.as_str()))
            .collect::<Vec<_>>();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The phone event: the canonical snake_case name of an event the bridge types \
                 (see `examples`), or any other name as the phone sent it",
            ))
            .examples(known)
            .build()
            .into()
    }
}

impl ToSchema for ActionUrlEventDoc {
    fn name() -> Cow<'static, str> {
        "ActionUrlEvent".into()
    }
}

/// The schema of [`PhoneCallback`] (defined in `crate::phone::action_url` without a derive).
#[derive(ToSchema)]
#[schema(as = PhoneCallback)]
#[allow(dead_code)] // a schema only
pub struct PhoneCallbackDoc {
    event: ActionUrlEventDoc,
    /// Normalised: 12 lowercase hex digits, no separators.
    mac: Option<String>,
    /// What the phone says its address is.
    ip: Option<String>,
    model: Option<String>,
    firmware: Option<String>,
    active_url: Option<String>,
    active_user: Option<String>,
    active_host: Option<String>,
    /// Number or URI as sent; `+` kept. For an incoming call, our side.
    local: Option<String>,
    /// Number or URI as sent; `+` kept. For an incoming call, the caller.
    remote: Option<String>,
    display_local: Option<String>,
    display_remote: Option<String>,
    /// `$call_id` (Yealink/Fanvil: phone-side handle) or `$call-id` (Snom/Grandstream: SIP
    /// Call-ID).
    call_id: Option<String>,
    /// `$callerID` (Yealink V84): the caller's display name on an incoming call.
    caller_id: Option<String>,
    /// `$calledNumber` (Yealink V84): the callee's number on an outgoing call.
    called_number: Option<String>,
    duration: Option<String>,
    call_direction: Option<String>,
    /// Every other variable, in order, decoded: `[name, value]` pairs.
    extra: Vec<(String, String)>,
    /// What was wrong with the input (bad %-escape, invalid UTF-8, duplicated key…).
    problems: Vec<String>,
}

/// Compile-time guard: a field added to [`PhoneCallback`] fails here until the schema above
/// has it.
#[allow(dead_code)]
fn phone_callback_fields(c: PhoneCallback) {
    let PhoneCallback {
        event: _,
        mac: _,
        ip: _,
        model: _,
        firmware: _,
        active_url: _,
        active_user: _,
        active_host: _,
        local: _,
        remote: _,
        display_local: _,
        display_remote: _,
        call_id: _,
        caller_id: _,
        called_number: _,
        duration: _,
        call_direction: _,
        extra: _,
        problems: _,
    } = c;
}

impl PartialSchema for PhoneCallback {
    fn schema() -> RefOr<Schema> {
        PhoneCallbackDoc::schema()
    }
}

impl ToSchema for PhoneCallback {
    fn name() -> Cow<'static, str> {
        PhoneCallbackDoc::name()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        PhoneCallbackDoc::schemas(schemas)
    }
}

/// The schema of [`DndOutcome`]: the result of `PUT /api/v1/phones/{ext}/dnd`.
#[derive(ToSchema)]
#[schema(as = DndOutcome)]
#[allow(dead_code)] // a schema only
pub struct DndOutcomeDoc {
    extension: String,
    enabled: bool,
    phone: TargetOutcomeDoc,
    pbx: TargetOutcomeDoc,
    /// `[dnd] pbx_mode`: `none`, `astdb` or `devstate`.
    pbx_mode: String,
}

/// The schema of [`TargetOutcome`]: what one side of a DND change did.
#[derive(ToSchema)]
#[schema(as = DndTargetOutcome)]
#[allow(dead_code)] // a schema only
pub struct TargetOutcomeDoc {
    /// The side now has the requested state (set now, or already so).
    applied: bool,
    /// Why the side was not attempted.
    #[schema(nullable = false)]
    skipped: Option<String>,
    /// Machine-readable code of a failure.
    #[schema(nullable = false)]
    error: Option<String>,
    /// What was done or what went wrong, in words.
    #[schema(nullable = false)]
    message: Option<String>,
}

/// Compile-time guard for [`DndOutcomeDoc`] and [`TargetOutcomeDoc`].
#[allow(dead_code)]
fn dnd_outcome_fields(o: DndOutcome) {
    let DndOutcome {
        extension: _,
        enabled: _,
        phone,
        pbx: _,
        pbx_mode: _,
    } = o;
    let TargetOutcome {
        applied: _,
        skipped: _,
        error: _,
        message: _,
    } = phone;
}

/// The schema of [`Readiness`]: the `/readyz` body.
#[derive(ToSchema)]
#[schema(as = Readiness)]
#[allow(dead_code)] // a schema only
pub struct ReadinessDoc {
    /// All checks passed.
    ready: bool,
    checks: ReadinessChecksDoc,
}

/// Each readiness check by name.
#[derive(ToSchema)]
#[schema(as = ReadinessChecks)]
#[allow(dead_code)] // a schema only
pub struct ReadinessChecksDoc {
    /// Every configured PBX's AMI link is logged in and resynchronised.
    ami: ReadinessCheckDoc,
    /// The store takes a write transaction (rolled back).
    store: ReadinessCheckDoc,
    /// The journal writes and fsyncs what was appended.
    journal: ReadinessCheckDoc,
}

/// One readiness check: whether it passed and, either way, what was found.
#[derive(ToSchema)]
#[schema(as = ReadinessCheck)]
#[allow(dead_code)] // a schema only
pub struct ReadinessCheckDoc {
    ok: bool,
    detail: String,
    /// The AMI check's links, one per configured PBX.
    #[schema(nullable = false)]
    pbx: Option<Vec<PbxLinkDoc>>,
}

/// One AMI link in the `ami` check.
#[derive(ToSchema)]
#[schema(as = PbxLink)]
#[allow(dead_code)] // a schema only
pub struct PbxLinkDoc {
    name: String,
    logged_in: bool,
    /// Since when it has been in this state.
    since: DateTime<Utc>,
    /// Why the link went down last, or the last connect failure.
    #[schema(nullable = false)]
    error: Option<String>,
}

/// Compile-time guard for the readiness schemas.
#[allow(dead_code)]
fn readiness_fields(r: Readiness) {
    let Readiness { ready: _, checks } = r;
    let Checks {
        ami,
        store: _,
        journal: _,
    } = checks;
    let Check {
        ok: _,
        detail: _,
        pbx,
    } = ami;
    for link in pbx.into_iter().flatten() {
        let PbxLink {
            name: _,
            logged_in: _,
            since: _,
            error: _,
        } = link;
    }
}

// ---------------------------------------------------------------------------------------
// Phone callbacks: doc-only operations (one handler serves GET and POST; each method needs
// its own operation id).

/// A phone callback's variables (`$mac`, `$ip`, `$remote`, `$call_id`, … in any vendor's
/// names; see docs/PHONES.md).
const CALLBACK_VARIABLES: &str = "The phone's variables (`mac`, `ip`, `model`, `local`, \
    `remote`, `display_remote`, `call_id`, … in any vendor's spelling; see docs/PHONES.md). \
    Nothing is required and nothing is refused: unfilled `$variables`, bad escapes and \
    unknown names are kept and reported.";

#[utoipa::path(
    get,
    path = "/action-url/{event}",
    tag = "phone callbacks",
    operation_id = "phoneCallback",
    description = "A desk phone reports an event (Action URL). Journaled first, then \
        correlated with the PBX's view of the call. Accepted only from \
        `action_url.allowed_networks`, and only when no `action_url.path_secret` is set.",
    params(
        ("event" = String, Path, description = "The phone's event name in any vendor's \
            spelling (`incoming_call`, `call_established`, `dnd_on`, …)"),
        ("variables" = Option<Object>, Query,
            style = Form, explode, description = CALLBACK_VARIABLES),
    ),
    responses(
        (status = 200, description = "`OK`: received, whatever the query holds", body = String,
            content_type = "text/plain"),
        (status = 403, description = "`forbidden`: the peer is outside \
            `action_url.allowed_networks`, or a path secret is configured", body = String,
            content_type = "text/plain"),
    )
)]
#[allow(dead_code)] // documents `super::action_url::without_secret`
fn phone_callback() {}

#[utoipa::path(
    post,
    path = "/action-url/{event}",
    tag = "phone callbacks",
    operation_id = "phoneCallbackPost",
    description = "The same as the GET, for phones configured to POST; the body is ignored.",
    params(
        ("event" = String, Path, description = "The phone's event name"),
        ("variables" = Option<Object>, Query,
            style = Form, explode, description = CALLBACK_VARIABLES),
    ),
    responses(
        (status = 200, description = "`OK`: received", body = String, content_type = "text/plain"),
        (status = 403, description = "`forbidden`: the peer is outside \
            `action_url.allowed_networks`, or a path secret is configured", body = String,
            content_type = "text/plain"),
    )
)]
#[allow(dead_code)] // documents `super::action_url::without_secret`
fn phone_callback_post() {}

#[utoipa::path(
    get,
    path = "/action-url/{secret}/{event}",
    tag = "phone callbacks",
    operation_id = "phoneCallbackWithSecret",
    description = "A phone callback carrying `action_url.path_secret` in the path.",
    params(
        ("secret" = String, Path, description = "`action_url.path_secret`"),
        ("event" = String, Path, description = "The phone's event name"),
        ("variables" = Option<Object>, Query,
            style = Form, explode, description = CALLBACK_VARIABLES),
    ),
    responses(
        (status = 200, description = "`OK`: received", body = String, content_type = "text/plain"),
        (status = 403, description = "`forbidden`: a wrong or unset secret, or the peer is \
            outside `action_url.allowed_networks`", body = String, content_type = "text/plain"),
    )
)]
#[allow(dead_code)] // documents `super::action_url::with_secret`
fn phone_callback_with_secret() {}

#[utoipa::path(
    post,
    path = "/action-url/{secret}/{event}",
    tag = "phone callbacks",
    operation_id = "phoneCallbackWithSecretPost",
    description = "The same as the GET, for phones configured to POST; the body is ignored.",
    params(
        ("secret" = String, Path, description = "`action_url.path_secret`"),
        ("event" = String, Path, description = "The phone's event name"),
        ("variables" = Option<Object>, Query,
            style = Form, explode, description = CALLBACK_VARIABLES),
    ),
    responses(
        (status = 200, description = "`OK`: received", body = String, content_type = "text/plain"),
        (status = 403, description = "`forbidden`: a wrong or unset secret, or the peer is \
            outside `action_url.allowed_networks`", body = String, content_type = "text/plain"),
    )
)]
#[allow(dead_code)] // documents `super::action_url::with_secret`
fn phone_callback_with_secret_post() {}

// ---------------------------------------------------------------------------------------
// Live events.

/// The component name of the event schema of `t`: `call.started` → `CallStartedEvent`.
pub fn event_schema_name(t: EventType) -> String {
    let mut name = String::new();
    for part in t.as_str().split('.') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name.push_str("Event");
    name
}

/// The property names of the `data` of `t` (as `EventData` serialises them), or `None` for
/// `dial.status`, whose data is the `DialStatus` itself.
fn data_properties(t: EventType) -> Option<&'static [&'static str]> {
    use EventType::*;
    Some(match t {
        CallStarted => &["call"],
        CallRinging | CallHeld | CallUnheld => &["call", "leg"],
        CallAnswered => &["answered_by", "call", "leg"],
        CallTransferred => &["call", "transfer"],
        CallMerged => &["id", "into"],
        CallEnded => &["call", "record"],
        PhoneState => &["cause", "phone"],
        DialStatus => return None,
        Gap => &["from", "pbx", "reason", "to"],
    })
}

fn schema_json<T: ToSchema>() -> Result<Value, OpenApiError> {
    Ok(serde_json::to_value(T::schema())?)
}

/// The schema of the `data` of `t`: the matching variant of the derived `EventData` schema.
fn data_schema(variants: &[Value], t: EventType) -> Result<Value, OpenApiError> {
    let found = match data_properties(t) {
        Some(names) => variants.iter().find(|v| {
            v.get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.len() == names.len() && names.iter().all(|n| p.contains_key(*n)))
        }),
        None => {
            let dial = format!("#/components/schemas/{}", DialStatus::name());
            variants
                .iter()
                .find(|v| v.get("$ref").and_then(Value::as_str) == Some(dial.as_str()))
        }
    };
    found
        .cloned()
        .ok_or_else(|| OpenApiError::Missing(format!("the EventData variant of {t}")))
}

/// The `Event` union, one schema per type, the stream messages and every schema they refer to.
fn live_schemas() -> Result<Vec<(String, Value)>, OpenApiError> {
    let mut out = Vec::new();
    let mut deps = Vec::new();
    EventData::schemas(&mut deps);
    LiveEvent::schemas(&mut deps);
    for (name, schema) in deps {
        // `EventData` alone is an untagged union whose variants overlap; the per-type event
        // schemas below say which data goes with which type.
        if name != "EventData" {
            out.push((name, serde_json::to_value(schema)?));
        }
    }
    let data = schema_json::<EventData>()?;
    let variants = data
        .get("oneOf")
        .and_then(Value::as_array)
        .ok_or_else(|| OpenApiError::Missing("the EventData variants".into()))?;
    let envelope = schema_json::<LiveEvent>()?;
    let envelope = envelope
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| OpenApiError::Missing("the LiveEvent properties".into()))?;
    let property = |name: &str| {
        envelope
            .get(name)
            .cloned()
            .ok_or_else(|| OpenApiError::Missing(format!("LiveEvent.{name}")))
    };
    let mut one_of = Vec::new();
    let mut mapping = Map::new();
    for t in all_event_types() {
        let name = event_schema_name(t);
        let reference = format!("#/components/schemas/{name}");
        out.push((
            name,
            json!({
                "type": "object",
                "title": t.as_str(),
                "required": ["id", "type", "at", "call_id", "extensions", "data"],
                "properties": {
                    "id": {
                        "type": "integer", "format": "int64", "minimum": 0,
                        "description": "Strictly increasing, also across restarts: the SSE id, \
                            the resume position (`Last-Event-ID`) and the webhook idempotency key"
                    },
                    "type": {"type": "string", "enum": [t.as_str()]},
                    "at": property("at")?,
                    "call_id": property("call_id")?,
                    "extensions": property("extensions")?,
                    "data": data_schema(variants, t)?,
                },
            }),
        ));
        one_of.push(json!({ "$ref": reference }));
        mapping.insert(t.as_str().into(), Value::String(reference));
    }
    out.push((
        "Event".into(),
        json!({
            "description": "A live event (SSE `data`, WebSocket message, webhook body). The \
                `type` says which `data` it carries. See docs/EVENTS.md.",
            "oneOf": one_of,
            "discriminator": {"propertyName": "type", "mapping": mapping},
        }),
    ));
    out.push((
        "StreamReset".into(),
        json!({
            "type": "object",
            "description": "First message of a stream whose resume position is no longer \
                buffered (or not from this run): it continues from the oldest buffered event \
                matching the filters; re-read state from the API.",
            "required": ["type", "last_event_id", "oldest_id", "next_id", "message"],
            "properties": {
                "type": {"type": "string", "enum": ["stream.reset"]},
                "last_event_id": {"type": "integer", "format": "int64", "minimum": 0,
                    "description": "The id the client resumed from"},
                "oldest_id": {"type": ["integer", "null"], "format": "int64", "minimum": 0,
                    "description": "The oldest id still buffered (null: nothing buffered yet)"},
                "next_id": {"type": "integer", "format": "int64", "minimum": 0,
                    "description": "The id the next new event will get"},
                "message": {"type": "string"},
            },
        }),
    ));
    out.push((
        "StreamClosed".into(),
        json!({
            "type": "object",
            "description": "Last message of an SSE stream the bridge ends (WebSocket: the \
                close frame's reason holds `<reason>: <message>`).",
            "required": ["type", "reason", "message"],
            "properties": {
                "type": {"type": "string", "enum": ["stream.closed"]},
                "reason": {"type": "string", "enum": ["slow_consumer", "shutdown"],
                    "description": "`slow_consumer`: the client fell too far behind (reconnect \
                        with Last-Event-ID); `shutdown`: the bridge is stopping"},
                "message": {"type": "string"},
            },
        }),
    ));
    Ok(out)
}

/// The outgoing webhook: what a `[[webhooks]]` target receives.
fn webhooks() -> Value {
    use crate::webhook::sign;
    let header = |name: &str, required: bool, schema: Value, description: &str| {
        json!({
            "name": name, "in": "header", "required": required,
            "schema": schema, "description": description,
        })
    };
    let string = json!({"type": "string"});
    let integer = json!({"type": "integer", "minimum": 0});
    json!({
        "event": {
            "post": {
                "operationId": "webhookEvent",
                "tags": ["webhooks"],
                "summary": "A live event delivered to a `[[webhooks]]` target",
                "description": "One POST per event and target, in event order per call. \
                    Retried with exponential back-off and jitter until a 2xx or `max_attempts`; \
                    the delivery survives restarts. Check the signature: HMAC-SHA256, keyed \
                    with the target's `secret`, of `<timestamp>.<body>` (the \
                    `X-Ctibridge-Timestamp` value, a full stop, the raw body), as lowercase \
                    hex after `v1=`. See docs/EVENTS.md.",
                "parameters": [
                    header(sign::HEADER_ID, true, integer.clone(),
                        "The event id; the same for every attempt of one event to one target"),
                    header(sign::HEADER_IDEMPOTENCY_KEY, true, integer.clone(),
                        "The event id again, under the name idempotency-aware receivers read"),
                    header(sign::HEADER_TYPE, true, json!({"$ref": "#/components/schemas/EventType"}),
                        "The event type"),
                    header(sign::HEADER_ATTEMPT, true, json!({"type": "integer", "minimum": 1}),
                        "1 for the first attempt, 2 for the first retry, …"),
                    header(sign::HEADER_TIMESTAMP, true, integer,
                        "Unix time (seconds) at which this attempt was signed"),
                    header(sign::HEADER_SIGNATURE, false, string,
                        "`v1=<hex>`; several comma-separated values during a secret rotation; \
                         absent when the target has no secret"),
                ],
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}},
                },
                "responses": {
                    "2XX": {"description": "Acknowledged: the delivery is done"},
                    "default": {"description": "Anything else (or no answer within the \
                        timeout) is retried; a `Retry-After` header is honoured"},
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        document().expect("the document builds")
    }

    /// `schema` with `additionalProperties: false` on every object schema listing properties.
    fn strict(schema: &Value) -> Value {
        match schema {
            Value::Object(map) => {
                let mut out: Map<String, Value> =
                    map.iter().map(|(k, v)| (k.clone(), strict(v))).collect();
                if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                    out.insert("additionalProperties".into(), Value::Bool(false));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(strict).collect()),
            other => other.clone(),
        }
    }

    /// Validates `value` against the component schema `name` of `doc`, allowing no field the
    /// schema does not describe (so a mirror that lacks a field of the real type fails).
    fn check(doc: &Value, name: &str, value: &Value) -> Result<(), String> {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("#/components/schemas/{name}"),
            "components": strict(&doc["components"]),
        });
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        let errors = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect::<Vec<_>>();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    #[test]
    fn enum_schemas_hold_every_serde_name() {
        let doc = doc();
        for (name, values) in [
            (
                "PhoneVendor",
                all_vendors()
                    .iter()
                    .map(|v| serde_json::to_value(v).unwrap())
                    .collect::<Vec<_>>(),
            ),
            (
                "DialVia",
                all_vias()
                    .iter()
                    .map(|v| serde_json::to_value(v).unwrap())
                    .collect(),
            ),
            (
                "EventType",
                all_event_types()
                    .iter()
                    .map(|v| serde_json::to_value(v).unwrap())
                    .collect(),
            ),
        ] {
            assert_eq!(
                doc["components"]["schemas"][name]["enum"],
                Value::Array(values)
            );
        }
        assert!(check(&doc, "PhoneVendor", &json!("yealink-legacy")).is_ok());
        assert!(check(&doc, "PhoneVendor", &json!("nokia")).is_err());
    }

    #[test]
    fn every_event_type_has_its_schema_and_a_real_event_of_each_type_matches_it() {
        let doc = doc();
        let record: crate::record::CallRecord = serde_json::from_value(json!({
            "id": "default:1.1", "pbx": "default", "linkedid": "1.1", "direction": "internal",
            "from": {"number": "101", "name": null, "extension": "101"},
            "to": {"number": "102", "name": null, "extension": "102"},
            "started_at": "2026-11-22T10:00:00Z", "answered_at": null, "ended_at": null,
            "ring_s": 0.0, "talk_s": 0.0, "hold_s": 0.0, "disposition": "no_answer",
            "missed": false, "answered_by": null, "legs": [], "transfers": [], "timeline": [],
            "correlation": [], "gaps": [], "dial_request_id": null, "complete": false
        }))
        .unwrap();
        let at = record.started_at;
        let call = crate::live::event::CallSummary::of(&record);
        let leg = crate::live::event::LegRef {
            channel: "PJSIP/101-00000001".into(),
            uniqueid: Some("1.1".into()),
            endpoint: Some("101".into()),
        };
        let phone = serde_json::to_value(
            crate::phone::registry::PhoneRegistry::from_settings(&[Default::default()]).list()[0]
                .clone(),
        )
        .unwrap();
        let status = DialStatus::new(
            "dr_1".into(),
            "101".into(),
            "5550100".into(),
            "5550100".into(),
            DialVia::Auto,
            DialVia::Pbx,
            crate::control::DialOrigin::Api,
            at,
        );
        let mut seen = std::collections::BTreeSet::new();
        for t in all_event_types() {
            let event = match t {
                EventType::CallStarted => {
                    LiveEvent::call(t, at, &record, EventData::Started { call: call.clone() })
                }
                EventType::CallRinging | EventType::CallHeld | EventType::CallUnheld => {
                    LiveEvent::call(
                        t,
                        at,
                        &record,
                        EventData::Leg {
                            call: call.clone(),
                            leg: leg.clone(),
                        },
                    )
                }
                EventType::CallAnswered => LiveEvent::call(
                    t,
                    at,
                    &record,
                    EventData::Answered {
                        call: call.clone(),
                        answered_by: Some("102".into()),
                        leg: None,
                    },
                ),
                EventType::CallTransferred => LiveEvent::call(
                    t,
                    at,
                    &record,
                    EventData::Transferred {
                        call: call.clone(),
                        transfer: Default::default(),
                    },
                ),
                EventType::CallMerged => LiveEvent::call(
                    t,
                    at,
                    &record,
                    EventData::Merged {
                        id: "default:1.2".into(),
                        into: "default:1.1".into(),
                    },
                ),
                EventType::CallEnded => LiveEvent::call(
                    t,
                    at,
                    &record,
                    EventData::Ended {
                        call: call.clone(),
                        record: Box::new(record.clone()),
                    },
                ),
                EventType::PhoneState => LiveEvent::phone_state(at, "101", phone.clone(), "dnd_on"),
                EventType::DialStatus => LiveEvent::dial_status(
                    at,
                    Some("101"),
                    None,
                    serde_json::to_value(&status).unwrap(),
                ),
                EventType::Gap => LiveEvent::gap(at, "default", at, at, "AMI link down"),
            };
            let mut value = serde_json::to_value(&event).unwrap();
            value["id"] = json!(1_795_347_642_194_691u64);
            check(&doc, &event_schema_name(t), &value)
                .unwrap_or_else(|e| panic!("{t}: {e}\n{value:#}"));
            check(&doc, "Event", &value).unwrap_or_else(|e| panic!("{t} as Event: {e}"));
            // The discriminator holds: the same event under another type is refused.
            let mut wrong = value.clone();
            wrong["type"] = json!(if t == EventType::Gap {
                "call.merged"
            } else {
                "gap"
            });
            assert!(
                check(&doc, "Event", &wrong).is_err(),
                "{t} accepted as {}",
                wrong["type"]
            );
            seen.insert(event_schema_name(t));
        }
        assert_eq!(seen.len(), EventType::ALL.len());
    }

    #[test]
    fn the_dial_body_schema_accepts_what_the_dial_api_accepts() {
        let doc = doc();
        for to in [
            "+1 555 0100",
            "+1 (555) 010-0100",
            "(+49) 30 1234",
            "*72 12#",
            "[030] 1234-5678",
            "8.800.555.35.35",
            "",
            "+",
            "555;key=Reboot",
            "1+2",
            "abc",
            " - ",
        ] {
            let accepted = crate::phone::number::normalize_number(to).is_ok();
            let valid = check(&doc, "DialBody", &json!({"from": "101", "to": to})).is_ok();
            assert_eq!(valid, accepted, "{to:?}");
        }
        // `from` as `DialError::InvalidFrom` describes it (checked after trimming).
        let long = "1".repeat(65);
        for (from, accepted) in [
            ("101", true),
            (" 101 ", true),
            ("alice.b-2_x+", true),
            ("", false),
            ("10 1", false),
            ("a;b", false),
            (long.as_str(), false),
        ] {
            let valid = check(&doc, "DialBody", &json!({"from": from, "to": "1"})).is_ok();
            assert_eq!(valid, accepted, "{from:?}");
        }
        assert!(check(&doc, "DialBody", &json!({"from": 101, "to": 5550100})).is_ok());
        assert!(check(
            &doc,
            "DialBody",
            &json!({"from": "101", "to": "1", "via": "fax"})
        )
        .is_err());
    }

    #[test]
    fn stream_messages_match_their_schemas() {
        use crate::live::hub::{CloseReason, Reset};
        let doc = doc();
        let reset = Reset {
            last_event_id: 5,
            oldest_id: None,
            next_id: 9,
        };
        let value: Value = serde_json::from_str(&reset.json()).unwrap();
        check(&doc, "StreamReset", &value).unwrap();
        for reason in [
            CloseReason::SlowConsumer { queued: 3 },
            CloseReason::Shutdown,
        ] {
            let value: Value = serde_json::from_str(&reason.json()).unwrap();
            check(&doc, "StreamClosed", &value).unwrap();
        }
    }

    #[test]
    fn mirrored_schemas_match_real_values() {
        let doc = doc();
        let side = |applied: bool| TargetOutcome {
            applied,
            skipped: Some("why".into()),
            error: Some("code".into()),
            message: Some("words".into()),
        };
        let outcome = DndOutcome {
            extension: "101".into(),
            enabled: true,
            phone: side(true),
            pbx: TargetOutcome::default(),
            pbx_mode: "astdb",
        };
        check(&doc, "DndOutcome", &serde_json::to_value(&outcome).unwrap()).unwrap();
        let _ = side(false);

        let callback = crate::phone::action_url::parse_callback(
            "incoming_call",
            b"mac=00:15:65:aa:bb:cc&ip=10.0.0.5&model=T46U&firmware=1&active_url=u&active_user=101\
              &active_host=h&local=101&remote=%2B15550100&display_local=a&display_remote=b\
              &call_id=7&callerID=c&calledNumber=d&duration=5&call_direction=in&x=y&bad=%zz",
        );
        let value = serde_json::to_value(&callback).unwrap();
        assert!(
            !callback.extra.is_empty() && !callback.problems.is_empty(),
            "{value}"
        );
        check(&doc, "PhoneCallback", &value).unwrap();
        let other = crate::phone::action_url::parse_callback("fancy_thing", b"");
        check(
            &doc,
            "PhoneCallback",
            &serde_json::to_value(&other).unwrap(),
        )
        .unwrap();

        let readiness = Readiness {
            ready: false,
            checks: Checks {
                ami: Check {
                    ok: false,
                    detail: "1 of 1 down".into(),
                    pbx: Some(vec![PbxLink {
                        name: "default".into(),
                        logged_in: false,
                        since: Utc::now(),
                        error: Some("refused".into()),
                    }]),
                },
                store: Check {
                    ok: true,
                    detail: "ok".into(),
                    pbx: None,
                },
                journal: Check {
                    ok: true,
                    detail: "ok".into(),
                    pbx: None,
                },
            },
        };
        check(
            &doc,
            "Readiness",
            &serde_json::to_value(&readiness).unwrap(),
        )
        .unwrap();
        // A wrong type and an undescribed field are both caught.
        let mut wrong = serde_json::to_value(&readiness).unwrap();
        wrong["checks"]["ami"]["ok"] = json!("no");
        assert!(check(&doc, "Readiness", &wrong).is_err());
        let mut extra = serde_json::to_value(&readiness).unwrap();
        extra["checks"]["store"]["latency_ms"] = json!(3);
        assert!(check(&doc, "Readiness", &extra).is_err());
    }
}
