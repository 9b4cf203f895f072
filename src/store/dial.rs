//! Click-to-call requests in the store (`dial_requests`, migration 0003): written by the
//! control module's writer task on every status change, read by `GET /api/v1/dial/{id}` once
//! the request has left memory (or after a restart), and by the idempotency check.
//!
//! Phone dials have no channel variable, so their call record gets `dial_request_id` from the
//! live tracker. A journal replay at start rebuilds such records without it;
//! [`Store::restore_dial_links`] puts it back from `dial_requests.record_id`.

use super::{ctx, format_timestamp, Store, StoreError};
use crate::control::DialStatus;
use crate::record::CallRecord;
use chrono::{DateTime, Utc};

impl Store {
    /// Inserts or replaces a request's row. `idempotency` (`(scope, key)`) is written only
    /// when the row is created.
    pub async fn upsert_dial_request(
        &self,
        s: &DialStatus,
        idempotency: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(s).map_err(|source| StoreError::Json {
            id: s.request_id.clone(),
            source,
        })?;
        sqlx::query(
            "INSERT INTO dial_requests (id, created_at, updated_at, origin, from_extension, \
             to_number, via, state, reason, pbx, linkedid, record_id, idempotency_scope, \
             idempotency_key, status_json) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at, \
             via = excluded.via, state = excluded.state, reason = excluded.reason, \
             pbx = excluded.pbx, linkedid = excluded.linkedid, record_id = excluded.record_id, \
             status_json = excluded.status_json",
        )
        .bind(&s.request_id)
        .bind(format_timestamp(&s.created_at))
        .bind(format_timestamp(&s.updated_at))
        .bind(match s.origin {
            crate::control::DialOrigin::Api => "api",
            crate::control::DialOrigin::Pbx => "pbx",
        })
        .bind(&s.from)
        .bind(&s.number)
        .bind(crate::control::dial::via_name(s.via))
        .bind(s.state.as_str())
        .bind(&s.reason)
        .bind(&s.pbx)
        .bind(&s.linkedid)
        .bind(&s.record_id)
        .bind(idempotency.map(|(scope, _)| scope))
        .bind(idempotency.map(|(_, key)| key))
        .bind(json)
        .execute(self.pool())
        .await
        .map_err(ctx("storing a dial request"))?;
        Ok(())
    }

    /// One request by id.
    pub async fn get_dial_request(&self, id: &str) -> Result<Option<DialStatus>, StoreError> {
        let json: Option<String> =
            sqlx::query_scalar("SELECT status_json FROM dial_requests WHERE id = ?")
                .bind(id)
                .fetch_optional(self.pool())
                .await
                .map_err(ctx("reading a dial request"))?;
        json.map(|j| parse_status(id, &j)).transpose()
    }

    /// The newest request created with `key` in `scope` since `since`.
    pub async fn find_dial_by_idempotency(
        &self,
        scope: &str,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<DialStatus>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT id, status_json FROM dial_requests \
             WHERE idempotency_scope = ? AND idempotency_key = ? AND created_at >= ? \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(scope)
        .bind(key)
        .bind(format_timestamp(&since))
        .fetch_optional(self.pool())
        .await
        .map_err(ctx("looking up an idempotency key"))?;
        row.map(|(id, j)| parse_status(&id, &j)).transpose()
    }

    /// Gives every stored record that a request is linked to (`dial_requests.record_id`)
    /// but that lacks `dial_request_id` its request id back. Returns how many were fixed.
    pub async fn restore_dial_links(&self) -> Result<usize, StoreError> {
        let links: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.id, d.record_id FROM dial_requests d JOIN calls c ON c.id = d.record_id \
             WHERE c.dial_request_id IS NULL ORDER BY d.created_at",
        )
        .fetch_all(self.pool())
        .await
        .map_err(ctx("finding unlinked dial requests"))?;
        let mut fixed: Vec<CallRecord> = Vec::new();
        for (request_id, record_id) in links {
            if fixed.iter().any(|r| r.id == record_id) {
                continue;
            }
            if let Some(mut record) = self.get(&record_id).await? {
                record.dial_request_id = Some(request_id);
                fixed.push(record);
            }
        }
        self.upsert_many(&fixed, None).await?;
        Ok(fixed.len())
    }
}

fn parse_status(id: &str, json: &str) -> Result<DialStatus, StoreError> {
    serde_json::from_str(json).map_err(|source| StoreError::Json {
        id: id.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DialVia;
    use crate::control::{DialOrigin, DialState};

    fn status(id: &str, at: DateTime<Utc>) -> DialStatus {
        DialStatus::new(
            id.into(),
            "101".into(),
            "+1 555 0100".into(),
            "+15550100".into(),
            DialVia::Auto,
            DialVia::Phone,
            DialOrigin::Api,
            at,
        )
    }

    #[tokio::test]
    async fn requests_round_trip_and_keys_are_found_within_their_time() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let t0 = Utc::now();
        let mut s = status("dr_1", t0);
        store
            .upsert_dial_request(&s, Some(("scope", "key-1")))
            .await
            .unwrap();
        s.state = DialState::Answered;
        s.record_id = Some("default:1.1".into());
        // A later write does not need (nor erase) the key.
        store.upsert_dial_request(&s, None).await.unwrap();
        assert_eq!(
            store.get_dial_request("dr_1").await.unwrap(),
            Some(s.clone())
        );
        assert_eq!(store.get_dial_request("dr_2").await.unwrap(), None);
        let found = store
            .find_dial_by_idempotency("scope", "key-1", t0 - chrono::TimeDelta::seconds(1))
            .await
            .unwrap();
        assert_eq!(found.map(|f| f.request_id).as_deref(), Some("dr_1"));
        for (scope, key, since) in [
            ("other", "key-1", t0 - chrono::TimeDelta::seconds(1)),
            ("scope", "key-2", t0 - chrono::TimeDelta::seconds(1)),
            ("scope", "key-1", t0 + chrono::TimeDelta::seconds(1)),
        ] {
            assert!(store
                .find_dial_by_idempotency(scope, key, since)
                .await
                .unwrap()
                .is_none());
        }
        let state: String = sqlx::query_scalar("SELECT state FROM dial_requests WHERE id = 'dr_1'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(state, "answered");
    }
}
