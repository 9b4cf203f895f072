//! `GET /api/v1/phones`, `GET /api/v1/phones/{ext}` (scope `read`).

use super::error::{ApiError, ErrorBody as ApiErrorBody};
use super::AppState;
use crate::config::Scope;
use crate::phone::registry::PhoneInfo;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use std::sync::Arc;

/// Every phone, configured and discovered, ordered by extension.
#[utoipa::path(
    get,
    path = "/api/v1/phones",
    tag = "phones",
    operation_id = "listPhones",
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "Every phone, configured and discovered, ordered by extension",
            body = Vec<PhoneInfo>),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<PhoneInfo>>, ApiError> {
    state.tokens.require(&headers, Scope::Read)?;
    Ok(Json(state.phones.list()))
}

/// One phone.
#[utoipa::path(
    get,
    path = "/api/v1/phones/{ext}",
    tag = "phones",
    operation_id = "getPhone",
    params(("ext" = String, Path, description = "The phone's extension")),
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "The phone: configuration, what was learned, and state", body = PhoneInfo),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, description = "No phone with this extension", body = ApiErrorBody),
    )
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(ext): Path<String>,
) -> Result<Json<PhoneInfo>, ApiError> {
    state.tokens.require(&headers, Scope::Read)?;
    state
        .phones
        .get(&ext)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no phone with extension {ext:?}")))
}
