//! The webhook outbox (`webhook_outbox`, `webhook_attempts`; migration 0004): live events
//! waiting for, or done with, delivery to a `[[webhooks]]` target, and the log of every
//! attempt. The delivery logic is in `crate::webhook`; this is its durable state.

use super::{ctx, format_timestamp, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, Row};

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; will be tried (again) at `next_attempt_at`.
    Pending,
    /// The target answered 2xx.
    Delivered,
    /// Given up after `max_attempts` (or the target was removed from the config).
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<DeliveryState, StoreError> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(StoreError::Invalid(format!(
                "webhook outbox: unknown state {other:?}"
            ))),
        }
    }
}

/// An event to deliver to one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    pub target: String,
    pub event_id: u64,
    pub event_type: String,
    pub order_key: Option<String>,
    /// The event JSON (the request body).
    pub body: String,
}

/// A pending delivery as a target's worker needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingDelivery {
    pub event_id: u64,
    pub event_type: String,
    pub order_key: Option<String>,
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
}

/// The result of one HTTP attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptResult {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub duration_ms: u64,
    /// The HTTP status, when the target answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// What the delivery becomes: `Pending` with the next time, `Delivered` or `Failed`.
    pub outcome: DeliveryState,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// One attempt in the delivery log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub at: String,
    pub duration_ms: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// One delivery (an event to a target) in the delivery log, with its attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    pub target: String,
    pub event_id: u64,
    pub event_type: String,
    pub order_key: Option<String>,
    pub state: DeliveryState,
    pub attempts: u32,
    pub created_at: String,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub finished_at: Option<String>,
    pub attempt_log: Vec<AttemptRecord>,
}

/// Filters of the delivery log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub target: Option<String>,
    pub state: Option<DeliveryState>,
    pub event_id: Option<u64>,
    /// Only deliveries of events older than this id (paging backwards).
    pub before: Option<u64>,
    pub limit: u32,
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} is beyond i64")))
}

impl Store {
    /// Writes deliveries as `pending`, due now, in one transaction. A delivery already in the
    /// outbox (same target and event) is left as it is.
    pub async fn outbox_enqueue(
        &self,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let now = format_timestamp(&now);
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(ctx("getting a connection"))?;
        let mut tx = conn.begin().await.map_err(ctx("beginning a transaction"))?;
        for d in deliveries {
            sqlx::query(
                "INSERT INTO webhook_outbox (target, event_id, event_type, order_key, body, \
                 created_at, state, attempts, next_attempt_at) \
                 VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?) \
                 ON CONFLICT (target, event_id) DO NOTHING",
            )
            .bind(&d.target)
            .bind(to_i64(d.event_id, "event id")?)
            .bind(&d.event_type)
            .bind(&d.order_key)
            .bind(&d.body)
            .bind(&now)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(ctx("writing to the webhook outbox"))?;
        }
        tx.commit()
            .await
            .map_err(ctx("committing to the webhook outbox"))?;
        Ok(())
    }

    /// Pending deliveries of `target` with an event id above `after`, oldest first, at most
    /// `limit`.
    pub async fn outbox_pending(
        &self,
        target: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, event_type, order_key, body, attempts, next_attempt_at \
             FROM webhook_outbox WHERE target = ? AND state = 'pending' AND event_id > ? \
             ORDER BY event_id LIMIT ?",
        )
        .bind(target)
        .bind(to_i64(after, "event id")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("reading the webhook outbox"))?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get(0).map_err(ctx("reading the webhook outbox"))?;
                let attempts: i64 = row.try_get(4).map_err(ctx("reading the webhook outbox"))?;
                let next: String = row.try_get(5).map_err(ctx("reading the webhook outbox"))?;
                Ok(PendingDelivery {
                    event_id: id as u64,
                    event_type: row.try_get(1).map_err(ctx("reading the webhook outbox"))?,
                    order_key: row.try_get(2).map_err(ctx("reading the webhook outbox"))?,
                    body: row.try_get(3).map_err(ctx("reading the webhook outbox"))?,
                    attempts: attempts.clamp(0, u32::MAX as i64) as u32,
                    next_attempt_at: parse_time(&next)?,
                })
            })
            .collect()
    }

    /// Logs one attempt and moves the delivery to its outcome, in one transaction.
    pub async fn outbox_record_attempt(
        &self,
        target: &str,
        event_id: u64,
        r: &AttemptResult,
    ) -> Result<(), StoreError> {
        let id = to_i64(event_id, "event id")?;
        let at = format_timestamp(&r.at);
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(ctx("getting a connection"))?;
        let mut tx = conn.begin().await.map_err(ctx("beginning a transaction"))?;
        sqlx::query(
            "INSERT INTO webhook_attempts (target, event_id, attempt, at, duration_ms, status, error) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (target, event_id, attempt) DO NOTHING",
        )
        .bind(target)
        .bind(id)
        .bind(i64::from(r.attempt))
        .bind(&at)
        .bind(to_i64(r.duration_ms, "duration")?)
        .bind(r.status.map(i64::from))
        .bind(&r.error)
        .execute(&mut *tx)
        .await
        .map_err(ctx("logging a webhook attempt"))?;
        let finished = (r.outcome != DeliveryState::Pending).then(|| at.clone());
        let next = r
            .next_attempt_at
            .map(|t| format_timestamp(&t))
            .unwrap_or_else(|| at.clone());
        sqlx::query(
            "UPDATE webhook_outbox SET state = ?, attempts = ?, next_attempt_at = ?, \
             last_attempt_at = ?, last_status = ?, last_error = ?, finished_at = ? \
             WHERE target = ? AND event_id = ? AND state = 'pending'",
        )
        .bind(r.outcome.as_str())
        .bind(i64::from(r.attempt))
        .bind(&next)
        .bind(&at)
        .bind(r.status.map(i64::from))
        .bind(&r.error)
        .bind(finished)
        .bind(target)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(ctx("updating the webhook outbox"))?;
        tx.commit()
            .await
            .map_err(ctx("committing a webhook attempt"))?;
        Ok(())
    }

    /// Gives up the pending deliveries of targets that are no longer configured (they would
    /// otherwise wait forever). Returns how many.
    pub async fn outbox_abandon_other_targets(
        &self,
        configured: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let now = format_timestamp(&now);
        let mut sql = sqlx::QueryBuilder::new(
            "UPDATE webhook_outbox SET state = 'failed', last_error = 'target removed from the configuration', finished_at = ",
        );
        sql.push_bind(now);
        sql.push(" WHERE state = 'pending'");
        if !configured.is_empty() {
            sql.push(" AND target NOT IN (");
            let mut list = sql.separated(", ");
            for t in configured {
                list.push_bind(t.clone());
            }
            sql.push(")");
        }
        let done = sql
            .build()
            .execute(&self.pool)
            .await
            .map_err(ctx("abandoning deliveries of removed webhook targets"))?;
        Ok(done.rows_affected())
    }

    /// Deletes delivered and failed deliveries (and their attempts) finished before `before`.
    pub async fn outbox_prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let before = format_timestamp(&before);
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(ctx("getting a connection"))?;
        let mut tx = conn.begin().await.map_err(ctx("beginning a transaction"))?;
        // Attempts first: the foreign key cascade needs foreign_keys=ON, which a reporting
        // tool's own connection may not set, so the store does not rely on it.
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE (target, event_id) IN \
             (SELECT target, event_id FROM webhook_outbox \
              WHERE state IN ('delivered', 'failed') AND finished_at < ?)",
        )
        .bind(&before)
        .execute(&mut *tx)
        .await
        .map_err(ctx("pruning webhook attempts"))?;
        let done = sqlx::query(
            "DELETE FROM webhook_outbox WHERE state IN ('delivered', 'failed') AND finished_at < ?",
        )
        .bind(&before)
        .execute(&mut *tx)
        .await
        .map_err(ctx("pruning the webhook outbox"))?;
        tx.commit()
            .await
            .map_err(ctx("committing the outbox pruning"))?;
        Ok(done.rows_affected())
    }

    /// The highest event id in the outbox: live event ids of a new run start above it.
    pub async fn outbox_max_event_id(&self) -> Result<Option<u64>, StoreError> {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(event_id) FROM webhook_outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(ctx("reading the webhook outbox"))?;
        Ok(max.map(|m| m.max(0) as u64))
    }

    /// The delivery log, newest event first, with every attempt.
    pub async fn outbox_list(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut sql = sqlx::QueryBuilder::new(
            "SELECT target, event_id, event_type, order_key, state, attempts, created_at, \
             next_attempt_at, last_attempt_at, last_status, last_error, finished_at \
             FROM webhook_outbox WHERE 1 = 1",
        );
        if let Some(t) = &q.target {
            sql.push(" AND target = ").push_bind(t.clone());
        }
        if let Some(s) = q.state {
            sql.push(" AND state = ").push_bind(s.as_str());
        }
        if let Some(id) = q.event_id {
            sql.push(" AND event_id = ")
                .push_bind(to_i64(id, "event id")?);
        }
        if let Some(id) = q.before {
            sql.push(" AND event_id < ")
                .push_bind(to_i64(id, "event id")?);
        }
        sql.push(" ORDER BY event_id DESC, target LIMIT ")
            .push_bind(i64::from(q.limit.max(1)));
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("listing webhook deliveries"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let state: String = row.try_get(4).map_err(ctx("reading webhook deliveries"))?;
            let state = DeliveryState::parse(&state)?;
            let event_id: i64 = row.try_get(1).map_err(ctx("reading webhook deliveries"))?;
            let attempts: i64 = row.try_get(5).map_err(ctx("reading webhook deliveries"))?;
            let status: Option<i64> = row.try_get(9).map_err(ctx("reading webhook deliveries"))?;
            let next: String = row.try_get(7).map_err(ctx("reading webhook deliveries"))?;
            out.push(DeliveryRecord {
                target: row.try_get(0).map_err(ctx("reading webhook deliveries"))?,
                event_id: event_id.max(0) as u64,
                event_type: row.try_get(2).map_err(ctx("reading webhook deliveries"))?,
                order_key: row.try_get(3).map_err(ctx("reading webhook deliveries"))?,
                state,
                attempts: attempts.clamp(0, u32::MAX as i64) as u32,
                created_at: row.try_get(6).map_err(ctx("reading webhook deliveries"))?,
                next_attempt_at: (state == DeliveryState::Pending).then_some(next),
                last_attempt_at: row.try_get(8).map_err(ctx("reading webhook deliveries"))?,
                last_status: status.and_then(|s| u16::try_from(s).ok()),
                last_error: row.try_get(10).map_err(ctx("reading webhook deliveries"))?,
                finished_at: row.try_get(11).map_err(ctx("reading webhook deliveries"))?,
                attempt_log: Vec::new(),
            });
        }
        for d in &mut out {
            let rows = sqlx::query(
                "SELECT attempt, at, duration_ms, status, error FROM webhook_attempts \
                 WHERE target = ? AND event_id = ? ORDER BY attempt",
            )
            .bind(&d.target)
            .bind(to_i64(d.event_id, "event id")?)
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("reading webhook attempts"))?;
            for row in rows {
                let attempt: i64 = row.try_get(0).map_err(ctx("reading webhook attempts"))?;
                let ms: i64 = row.try_get(2).map_err(ctx("reading webhook attempts"))?;
                let status: Option<i64> =
                    row.try_get(3).map_err(ctx("reading webhook attempts"))?;
                d.attempt_log.push(AttemptRecord {
                    attempt: attempt.clamp(0, u32::MAX as i64) as u32,
                    at: row.try_get(1).map_err(ctx("reading webhook attempts"))?,
                    duration_ms: ms.max(0) as u64,
                    status: status.and_then(|s| u16::try_from(s).ok()),
                    error: row.try_get(4).map_err(ctx("reading webhook attempts"))?,
                });
            }
        }
        Ok(out)
    }
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Invalid(format!("webhook outbox: bad time {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000 + s, 0).unwrap()
    }

    fn delivery(target: &str, id: u64, key: Option<&str>) -> NewDelivery {
        NewDelivery {
            target: target.into(),
            event_id: id,
            event_type: "call.started".into(),
            order_key: key.map(Into::into),
            body: format!("{{\"id\":{id}}}"),
        }
    }

    fn result(attempt: u32, status: Option<u16>, outcome: DeliveryState) -> AttemptResult {
        AttemptResult {
            attempt,
            at: t(i64::from(attempt)),
            duration_ms: 12,
            status,
            error: status.filter(|s| *s >= 300).map(|s| format!("HTTP {s}")),
            outcome,
            next_attempt_at: (outcome == DeliveryState::Pending)
                .then(|| t(i64::from(attempt)) + TimeDelta::seconds(30)),
        }
    }

    #[tokio::test]
    async fn enqueue_deliver_retry_give_up_and_list() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        assert_eq!(store.outbox_max_event_id().await.unwrap(), None);
        let rows = [
            delivery("crm", 10, Some("call-a")),
            delivery("crm", 11, None),
            delivery("audit", 10, Some("call-a")),
        ];
        store.outbox_enqueue(&rows, t(0)).await.unwrap();
        store.outbox_enqueue(&rows[..1], t(5)).await.unwrap(); // already there: unchanged
        assert_eq!(store.outbox_max_event_id().await.unwrap(), Some(11));

        let pending = store.outbox_pending("crm", 0, 10).await.unwrap();
        assert_eq!(
            pending.iter().map(|p| p.event_id).collect::<Vec<_>>(),
            [10, 11]
        );
        assert_eq!(pending[0].order_key.as_deref(), Some("call-a"));
        assert_eq!(pending[0].body, "{\"id\":10}");
        assert_eq!(pending[0].next_attempt_at, t(0));
        assert_eq!(store.outbox_pending("crm", 10, 10).await.unwrap().len(), 1);

        // crm/10: 500, then 200. crm/11: given up. audit/10: still pending.
        let retry = result(1, Some(500), DeliveryState::Pending);
        store
            .outbox_record_attempt("crm", 10, &retry)
            .await
            .unwrap();
        let p = store.outbox_pending("crm", 0, 10).await.unwrap();
        assert_eq!((p[0].attempts, p[0].next_attempt_at), (1, t(31)));
        let ok = result(2, Some(204), DeliveryState::Delivered);
        store.outbox_record_attempt("crm", 10, &ok).await.unwrap();
        // A late duplicate outcome changes nothing once delivered.
        store
            .outbox_record_attempt("crm", 10, &retry)
            .await
            .unwrap();
        let dead = result(1, None, DeliveryState::Failed);
        store.outbox_record_attempt("crm", 11, &dead).await.unwrap();
        assert!(store.outbox_pending("crm", 0, 10).await.unwrap().is_empty());

        let log = store
            .outbox_list(&DeliveryQuery {
                limit: 10,
                ..DeliveryQuery::default()
            })
            .await
            .unwrap();
        let summary: Vec<(&str, u64, DeliveryState, u32)> = log
            .iter()
            .map(|d| (d.target.as_str(), d.event_id, d.state, d.attempts))
            .collect();
        assert_eq!(
            summary,
            [
                ("crm", 11, DeliveryState::Failed, 1),
                ("audit", 10, DeliveryState::Pending, 0),
                ("crm", 10, DeliveryState::Delivered, 2),
            ]
        );
        let crm10 = &log[2];
        assert_eq!(crm10.last_status, Some(204));
        assert_eq!(crm10.last_error, None);
        assert_eq!(crm10.next_attempt_at, None);
        assert!(crm10.finished_at.is_some());
        let statuses: Vec<Option<u16>> = crm10.attempt_log.iter().map(|a| a.status).collect();
        assert_eq!(statuses, [Some(500), Some(204)]);
        assert_eq!(
            log[1].next_attempt_at.as_deref(),
            Some("2026-11-18T11:06:40.000000Z")
        );

        let only = store
            .outbox_list(&DeliveryQuery {
                target: Some("crm".into()),
                state: Some(DeliveryState::Delivered),
                limit: 10,
                ..DeliveryQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(only.len(), 1);

        // Removing "audit" from the configuration gives its pending deliveries up.
        assert_eq!(
            store
                .outbox_abandon_other_targets(&["crm".to_string()], t(50))
                .await
                .unwrap(),
            1
        );
        assert!(store
            .outbox_pending("audit", 0, 10)
            .await
            .unwrap()
            .is_empty());

        // Pruning drops finished deliveries with their attempts.
        assert_eq!(store.outbox_prune(t(1000)).await.unwrap(), 3);
        let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_attempts")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(attempts, 0);
    }
}
