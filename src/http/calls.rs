//! The records API (scope `read`): `GET /api/v1/calls` with filters and keyset pagination,
//! `GET /api/v1/calls/{id}`, `GET /api/v1/calls.csv`, and `GET /api/v1/orphans` (phone
//! callbacks that matched no call — kept, never dropped).

use super::error::{ApiError, ErrorBody as ApiErrorBody};
use super::AppState;
use crate::config::Scope;
use crate::correlator::OrphanCallback;
use crate::record::CallRecord;
use crate::store::{csv_header, csv_row, CallPage, CallQuery, StoreError, MAX_LIMIT};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;
use std::sync::Arc;

fn query(q: Result<Query<CallQuery>, QueryRejection>) -> Result<CallQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::Unprocessable(format!("bad query: {}", e.body_text())))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor(_) => ApiError::Unprocessable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// One page of records, newest first; `next_cursor` fetches the next.
#[utoipa::path(
    get,
    path = "/api/v1/calls",
    tag = "calls",
    operation_id = "listCalls",
    params(CallQuery),
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "One page of records, newest first", body = CallPage),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 422, description = "A filter or the cursor is malformed", body = ApiErrorBody),
        (status = 500, response = super::openapi::InternalError),
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<CallQuery>, QueryRejection>,
) -> Result<Json<CallPage>, ApiError> {
    state.tokens.require(&headers, Scope::Read)?;
    Ok(Json(state.store.list(&query(q)?).await?))
}

/// One record.
#[utoipa::path(
    get,
    path = "/api/v1/calls/{id}",
    tag = "calls",
    operation_id = "getCall",
    params(("id" = String, Path, description = "The record id, `<pbx>:<linkedid>`")),
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "The record", body = CallRecord),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, description = "No record with this id", body = ApiErrorBody),
        (status = 500, response = super::openapi::InternalError),
    )
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CallRecord>, ApiError> {
    state.tokens.require(&headers, Scope::Read)?;
    state
        .store
        .get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no call record {id:?}")))
}

/// Every record matching the filters as CSV (one row per call, UTC times; columns in
/// `crate::store::CSV_COLUMNS`), walking the pages server-side.
#[utoipa::path(
    get,
    path = "/api/v1/calls.csv",
    tag = "calls",
    operation_id = "exportCallsCsv",
    params(CallQuery),
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "Every matching record, one row per call, with a header row \
            (`limit` and `cursor` are ignored: all pages are included)",
            body = String, content_type = "text/csv",
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"calls.csv\"`"))),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 422, description = "A filter is malformed", body = ApiErrorBody),
        (status = 500, response = super::openapi::InternalError),
    )
)]
pub async fn csv(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<CallQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    state.tokens.require(&headers, Scope::Read)?;
    let mut q = query(q)?;
    q.limit = MAX_LIMIT;
    let mut body = String::from(csv_header());
    loop {
        let page = state.store.list(&q).await?;
        for record in &page.records {
            body.push_str(&csv_row(record));
        }
        match page.next_cursor {
            Some(cursor) => q.cursor = Some(cursor),
            None => break,
        }
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"calls.csv\"",
            ),
        ],
        body,
    ))
}

/// The latest phone callbacks that matched no call (oldest first).
#[utoipa::path(
    get,
    path = "/api/v1/orphans",
    tag = "calls",
    operation_id = "listOrphanCallbacks",
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "The latest phone callbacks that matched no call, oldest first",
            body = Vec<OrphanCallback>),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
    )
)]
pub async fn orphans(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<OrphanCallback>>, ApiError> {
    state.tokens.require(&headers, Scope::Read)?;
    let kept = state.orphans.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Json(kept.iter().cloned().collect()))
}
