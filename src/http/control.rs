//! Click-to-call and DND over HTTP:
//! - `POST /api/v1/dial` `{"from","to","via"}` (scope `dial`, optional `Idempotency-Key`)
//!   → `202` with the request (`request_id`, `via` taken, `state`, …) and
//!   `Location: /api/v1/dial/{request_id}`;
//! - `GET /api/v1/dial/{request_id}` (scope `dial` or `read`) → the request as it is now;
//! - `PUT /api/v1/phones/{ext}/dnd` `{"enabled":bool}` (scope `dial`) → what the phone and
//!   the PBX did.
//!
//! Every error answers its status with `{"error": "<code>", "message": "<what was wrong>"}`
//! (the shape of [`super::error::ApiError`]), plus `request` when a request was created and
//! failed, and `retry_after_s` (and a `Retry-After` header) on 429. See `docs/CONTROL.md`.

use super::error::{ApiError, ErrorBody as ApiErrorBody};
use super::AppState;
use crate::config::{DialVia, Scope};
use crate::control::{DialError, DialOrigin, DialRequest, DialStatus, DndError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The `POST /api/v1/dial` body. `from` and `to` may be JSON strings or numbers.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = DialBody)]
struct DialBody {
    /// The calling extension: a `[[phones]]` entry, or (for `via: pbx`) a phone known from its
    /// callbacks.
    #[serde(deserialize_with = "text_or_number")]
    #[schema(schema_with = super::openapi::dial_from, example = "101")]
    from: String,
    /// Any dialable number; spaces, dashes, dots and brackets are dropped, one leading `+` is
    /// kept.
    #[serde(deserialize_with = "text_or_number")]
    #[schema(schema_with = super::openapi::dial_to, example = "+1 555 0100")]
    to: String,
    /// The path; `[dial] default_via` when absent.
    #[serde(default)]
    via: Option<DialVia>,
}

/// The `PUT /api/v1/phones/{ext}/dnd` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = DndBody)]
struct DndBody {
    enabled: bool,
}

fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        other => Err(de::Error::custom(format!(
            "expected a string (or a whole number), got {other}"
        ))),
    }
}

fn error_response(
    status: u16,
    code: &str,
    message: String,
    extra: Option<(&str, Value)>,
) -> Response {
    let mut body = json!({ "error": code, "message": message });
    if let Some((key, value)) = extra {
        body[key] = value;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

fn bad_body(what: &str, e: serde_json::Error) -> Response {
    error_response(
        422,
        "invalid_body",
        format!("the body is not a valid {what}: {e}"),
        None,
    )
}

impl IntoResponse for DialError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let code = self.code().to_owned();
        let message = self.to_string();
        match self {
            DialError::RateLimited { retry_after, .. } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                let mut r =
                    error_response(status, &code, message, Some(("retry_after_s", json!(secs))));
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            DialError::Failed(s) => {
                let request = serde_json::to_value(&*s).unwrap_or(Value::Null);
                error_response(status, &code, message, Some(("request", request)))
            }
            _ => error_response(status, &code, message, None),
        }
    }
}

impl IntoResponse for DndError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let code = self.code();
        let message = self.to_string();
        match self {
            DndError::Failed(o) => {
                let outcome = serde_json::to_value(&*o).unwrap_or(Value::Null);
                error_response(status, code, message, Some(("outcome", outcome)))
            }
            _ => error_response(status, code, message, None),
        }
    }
}

/// The bearer token of a request that passed [`super::auth::TokenSet::require`].
fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (_, token) = v.trim().split_once(' ')?;
    Some(token.trim().to_owned())
}

/// `POST /api/v1/dial`.
#[utoipa::path(
    post,
    path = "/api/v1/dial",
    tag = "control",
    operation_id = "dial",
    description = "Click-to-call: makes `from` call `to` through its phone (Active URI) or the \
        PBX (AMI `Originate`). Answers once the command was delivered; follow the request with \
        `GET /api/v1/dial/{request_id}` or the `dial.status` live event. See docs/CONTROL.md.",
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
        description = "1–255 visible ASCII characters. The same key with the same token within \
            `[dial] idempotency_ttl` returns the first request and places no second call")),
    request_body = DialBody,
    security(("bearer" = ["dial"])),
    responses(
        (status = 202, description = "Delivered (or an earlier request with the same \
            Idempotency-Key)", body = DialStatus,
            headers(("Location" = String, description = "`/api/v1/dial/{request_id}`"))),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, description = "`unknown_extension`: `from` is no known phone",
            body = ApiErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_from`, `invalid_number`, \
            `invalid_idempotency_key` or `idempotency_key_reused`", body = ApiErrorBody),
        (status = 429, description = "`rate_limited`: too many requests for this token or \
            this from-extension", body = super::openapi::RateLimitedError,
            headers(("Retry-After" = u64, description = "Seconds until a request may succeed"))),
        (status = 503, description = "`phone_unavailable`, `pbx_unavailable`, `no_path`, or the \
            delivery failure's reason (`timeout`, `unreachable`, `originate_refused`, …) with the \
            failed request", body = super::openapi::DialUnavailableError),
        (status = 500, response = super::openapi::InternalError),
    )
)]
pub async fn post_dial(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = state.tokens.require(&headers, Scope::Dial) {
        return e.into_response();
    }
    let body: DialBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad_body("dial request ({\"from\",\"to\",\"via\"})", e),
    };
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) => Some(k.to_owned()),
            Err(_) => return DialError::InvalidIdempotencyKey.into_response(),
        },
    };
    let req = DialRequest {
        from: body.from,
        to: body.to,
        via: body.via,
        origin: DialOrigin::Api,
        token: bearer(&headers),
        idempotency_key,
    };
    match state.control.dial(req).await {
        Ok(status) => {
            let location = format!("/api/v1/dial/{}", status.request_id);
            let mut r = (StatusCode::ACCEPTED, Json(status)).into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v1/dial/{request_id}`.
#[utoipa::path(
    get,
    path = "/api/v1/dial/{request_id}",
    tag = "control",
    operation_id = "getDialRequest",
    params(("request_id" = String, Path, description = "The `request_id` of `POST /api/v1/dial`")),
    security(("bearer" = ["dial"]), ("bearer" = ["read"])),
    responses(
        (status = 200, description = "The request as it is now", body = DialStatus),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, description = "`unknown_request`: no request with this id was issued",
            body = ApiErrorBody),
        (status = 500, response = super::openapi::InternalError),
    )
)]
pub async fn get_dial(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = state
        .tokens
        .require(&headers, Scope::Dial)
        .or_else(|_| state.tokens.require(&headers, Scope::Read))
    {
        return e.into_response();
    }
    match state.control.dial_status(&id).await {
        Ok(Some(status)) => Json(status).into_response(),
        Ok(None) => error_response(
            404,
            "unknown_request",
            format!("no dial request with id {id:?}"),
            None,
        ),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// `PUT /api/v1/phones/{ext}/dnd`.
#[utoipa::path(
    put,
    path = "/api/v1/phones/{ext}/dnd",
    tag = "control",
    operation_id = "setDnd",
    description = "Sets Do Not Disturb on the phone (Active URI) and on the PBX (`[dnd] \
        pbx_mode`) at the same time. See docs/CONTROL.md.",
    params(("ext" = String, Path, description = "The phone's extension")),
    request_body = DndBody,
    security(("bearer" = ["dial"])),
    responses(
        (status = 200, description = "Every side that could be attempted took it",
            body = super::openapi::DndOutcomeDoc),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, description = "`unknown_extension`: no phone with this extension",
            body = ApiErrorBody),
        (status = 422, description = "`invalid_body`", body = ApiErrorBody),
        (status = 503, description = "`dnd_failed` (with the `outcome`; the other side stays \
            set) or `no_target` (neither side can be set)",
            body = super::openapi::DndUnavailableError),
        (status = 500, response = super::openapi::InternalError),
    )
)]
pub async fn put_dnd(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(ext): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(e) = state.tokens.require(&headers, Scope::Dial) {
        return e.into_response();
    }
    let body: DndBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad_body("DND request ({\"enabled\": true|false})", e),
    };
    match state.control.set_dnd(&ext, body.enabled).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_bodies() {
        let b: DialBody = serde_json::from_str(r#"{"from":101,"to":"+1 555 0100"}"#).unwrap();
        assert_eq!(
            (b.from.as_str(), b.to.as_str(), b.via),
            ("101", "+1 555 0100", None)
        );
        let b: DialBody =
            serde_json::from_str(r#"{"from":"101","to":"5550100","via":"pbx"}"#).unwrap();
        assert_eq!(b.via, Some(DialVia::Pbx));
        let e = serde_json::from_str::<DialBody>(r#"{"from":"101","to":"1","via":"fax"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown variant `fax`") && e.contains("`pbx`"),
            "{e}"
        );
        assert!(serde_json::from_str::<DialBody>(r#"{"from":"101"}"#)
            .unwrap_err()
            .to_string()
            .contains("missing field `to`"));
        assert!(serde_json::from_str::<DialBody>(r#"{"from":1.5,"to":"1"}"#).is_err());
    }
}
