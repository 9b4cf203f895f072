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

use super::error::ApiError;
use super::AppState;
use crate::config::{DialVia, Scope};
use crate::control::{DialError, DialOrigin, DialRequest, DndError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{json, Value};

/// The `POST /api/v1/dial` body. `from` and `to` may be JSON strings or numbers.
#[derive(Debug, Deserialize)]
struct DialBody {
    #[serde(deserialize_with = "text_or_number")]
    from: String,
    #[serde(deserialize_with = "text_or_number")]
    to: String,
    #[serde(default)]
    via: Option<DialVia>,
}

/// The `PUT /api/v1/phones/{ext}/dnd` body.
#[derive(Debug, Deserialize)]
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
pub async fn post_dial(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
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
pub async fn get_dial(
    State(state): State<AppState>,
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
pub async fn put_dnd(
    State(state): State<AppState>,
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
