//! `GET /api/v1/webhooks/deliveries` (scope `admin`): the webhook delivery log, newest event
//! first, each delivery with its attempts.
//!
//! Filters: `target` (a `[[webhooks]]` name), `state` (`pending`, `delivered`, `failed`),
//! `event_id`; paging: `limit` (1–1000, default 100) and `before` (the `next_before` of the
//! previous page).

use super::error::{ApiError, ErrorBody as ApiErrorBody};
use super::AppState;
use crate::config::Scope;
use crate::store::{DeliveryQuery, DeliveryRecord, DeliveryState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// Query parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesParams {
    /// Only deliveries to this `[[webhooks]]` target (by name).
    pub target: Option<String>,
    /// Only deliveries in this state.
    #[param(value_type = Option<DeliveryState>)]
    pub state: Option<String>,
    /// Only deliveries of this event.
    pub event_id: Option<u64>,
    /// Only events older than this id: the `next_before` of the previous page.
    pub before: Option<u64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// One page of the delivery log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveriesPage {
    pub deliveries: Vec<DeliveryRecord>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    pub next_before: Option<u64>,
}

/// `GET /api/v1/webhooks/deliveries`.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/deliveries",
    tag = "webhooks",
    operation_id = "listWebhookDeliveries",
    description = "The webhook delivery log, newest event first, each delivery with its \
        attempts. Unknown query parameters are refused (422).",
    params(DeliveriesParams),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "One page of the delivery log", body = DeliveriesPage),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 422, description = "An unknown or malformed query parameter, or `limit` out \
            of range", body = ApiErrorBody),
        (status = 500, response = super::openapi::InternalError),
    )
)]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<DeliveriesParams>, QueryRejection>,
) -> Result<Json<DeliveriesPage>, ApiError> {
    state.tokens.require(&headers, Scope::Admin)?;
    let Query(p) =
        q.map_err(|e| ApiError::Unprocessable(format!("bad query: {}", e.body_text())))?;
    let delivery_state = match p.state.as_deref() {
        None | Some("") => None,
        Some("pending") => Some(DeliveryState::Pending),
        Some("delivered") => Some(DeliveryState::Delivered),
        Some("failed") => Some(DeliveryState::Failed),
        Some(other) => {
            return Err(ApiError::Unprocessable(format!(
                "state {other:?}: expected pending, delivered or failed"
            )))
        }
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit {limit}: expected 1 to {MAX_LIMIT}"
        )));
    }
    // Event ids are stored as SQL BIGINT: a larger number cannot name any event.
    for (name, value) in [("event_id", p.event_id), ("before", p.before)] {
        if value.is_some_and(|v| i64::try_from(v).is_err()) {
            return Err(ApiError::Unprocessable(format!(
                "{name}: expected an event id up to {}",
                i64::MAX
            )));
        }
    }
    let query = DeliveryQuery {
        target: p.target.filter(|t| !t.is_empty()),
        state: delivery_state,
        event_id: p.event_id,
        before: p.before,
        limit: limit + 1,
    };
    let mut deliveries = state
        .store
        .outbox_list(&query)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let more = deliveries.len() > limit as usize;
    deliveries.truncate(limit as usize);
    // Rows of one event (several targets) are not split across pages unless one event has
    // more rows than a page: the page ends with the last event it holds completely, and the
    // next page starts below it.
    let next_before = if more {
        if let Some(last) = deliveries.last().map(|d| d.event_id) {
            let first_of_last = deliveries.iter().position(|d| d.event_id == last);
            if let Some(i) = first_of_last.filter(|&i| i > 0) {
                deliveries.truncate(i);
            }
        }
        deliveries.last().map(|d| d.event_id)
    } else {
        None
    };
    Ok(Json(DeliveriesPage {
        deliveries,
        next_before,
    }))
}
