//! `GET /api/v1/phones`, `GET /api/v1/phones/{ext}` (scope `read`).

use super::error::ApiError;
use super::AppState;
use crate::config::Scope;
use crate::phone::registry::PhoneInfo;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;

/// Every phone, configured and discovered, ordered by extension.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<PhoneInfo>>, ApiError> {
    state.tokens.require(&headers, Scope::Read)?;
    Ok(Json(state.phones.list()))
}

/// One phone.
pub async fn get(
    State(state): State<AppState>,
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
