//! Restart points: a checkpoint with the correlator's state (migration 0002).
//!
//! [`Store::save_restart_point`] writes, in one transaction, any call records the caller still
//! has to store, the schema-1 `checkpoint` row, the correlator snapshot with the same journal
//! position, and when the journal last saw each PBX. Either all of it is stored or none: a
//! restart never sees a snapshot whose records are missing, or a position without its state.
//! [`Store::restart_point`] reads it back. The store does not look inside the snapshot or the
//! orphan list (JSON text the service encodes); it keeps them with their format version.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{
    ctx, format_timestamp, format_timestamp_nanos, write_checkpoint, Checkpoint, CheckpointRow,
    Store, StoreError,
};
use crate::record::CallRecord;

/// Everything a restart needs to continue from a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPoint {
    /// The journal position the state covers (everything before it), and when it was taken.
    pub checkpoint: Checkpoint,
    /// Format version of `snapshot` (the correlator's `SNAPSHOT_VERSION` when it was written).
    pub snapshot_version: u32,
    /// The correlator's state, JSON.
    pub snapshot: String,
    /// The orphan callbacks the API listed, JSON.
    pub orphans: String,
    /// Per PBX, the time of the last AMI input the journal saw before the position.
    pub last_seen: BTreeMap<String, DateTime<Utc>>,
}

impl Store {
    /// Stores `records` (in order) and `point`, all in one transaction (see the module docs).
    pub async fn save_restart_point(
        &self,
        records: &[CallRecord],
        point: &RestartPoint,
    ) -> Result<(), StoreError> {
        // Validate before touching the database.
        let row = CheckpointRow::try_from(&point.checkpoint)?;
        let mut tx = self.begin_with_records(records).await?;
        write_checkpoint(&mut tx, &row).await?;
        sqlx::query(
            "INSERT INTO checkpoint_snapshot \
             (id, journal_segment, journal_offset, format_version, snapshot, orphans, saved_at) \
             VALUES (1, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET journal_segment = excluded.journal_segment, \
             journal_offset = excluded.journal_offset, format_version = excluded.format_version, \
             snapshot = excluded.snapshot, orphans = excluded.orphans, \
             saved_at = excluded.saved_at",
        )
        .bind(row.segment)
        .bind(row.offset)
        .bind(i64::from(point.snapshot_version))
        .bind(&point.snapshot)
        .bind(&point.orphans)
        .bind(format_timestamp_nanos(&point.checkpoint.at))
        .execute(&mut *tx)
        .await
        .map_err(ctx("writing the checkpoint snapshot"))?;
        sqlx::query("DELETE FROM checkpoint_pbx")
            .execute(&mut *tx)
            .await
            .map_err(ctx("writing the checkpoint's PBX times"))?;
        for (pbx, at) in &point.last_seen {
            sqlx::query("INSERT INTO checkpoint_pbx (pbx, last_seen) VALUES (?, ?)")
                .bind(pbx)
                .bind(format_timestamp(at))
                .execute(&mut *tx)
                .await
                .map_err(ctx("writing the checkpoint's PBX times"))?;
        }
        tx.commit()
            .await
            .map_err(ctx("committing the restart point"))?;
        Ok(())
    }

    /// The last restart point saved, if any. A row this build cannot read (a bad time, a
    /// negative position) is [`StoreError::Invalid`]; the caller then starts without it.
    pub async fn restart_point(&self) -> Result<Option<RestartPoint>, StoreError> {
        let row = sqlx::query(
            "SELECT journal_segment, journal_offset, format_version, snapshot, orphans, saved_at \
             FROM checkpoint_snapshot WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(ctx("reading the restart point"))?;
        let Some(row) = row else { return Ok(None) };
        let corrupt = |what: &str| StoreError::Invalid(format!("stored restart point: bad {what}"));
        let get = ctx("reading the restart point");
        let segment: i64 = row.try_get(0).map_err(get)?;
        let offset: i64 = row.try_get(1).map_err(ctx("reading the restart point"))?;
        let version: i64 = row.try_get(2).map_err(ctx("reading the restart point"))?;
        let snapshot: String = row.try_get(3).map_err(ctx("reading the restart point"))?;
        let orphans: String = row.try_get(4).map_err(ctx("reading the restart point"))?;
        let at: String = row.try_get(5).map_err(ctx("reading the restart point"))?;
        let time = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| corrupt("time"))
        };
        let pbx_rows = sqlx::query("SELECT pbx, last_seen FROM checkpoint_pbx ORDER BY pbx")
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("reading the checkpoint's PBX times"))?;
        let mut last_seen = BTreeMap::new();
        for r in pbx_rows {
            let pbx: String = r
                .try_get(0)
                .map_err(ctx("reading the checkpoint's PBX times"))?;
            let at: String = r
                .try_get(1)
                .map_err(ctx("reading the checkpoint's PBX times"))?;
            last_seen.insert(pbx, time(&at)?);
        }
        Ok(Some(RestartPoint {
            checkpoint: Checkpoint {
                segment: u64::try_from(segment).map_err(|_| corrupt("segment"))?,
                offset: u64::try_from(offset).map_err(|_| corrupt("offset"))?,
                at: time(&at)?,
            },
            snapshot_version: u32::try_from(version).map_err(|_| corrupt("format version"))?,
            snapshot,
            orphans,
            last_seen,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Direction, Disposition, Party};

    fn record(id: &str, at: DateTime<Utc>) -> CallRecord {
        CallRecord {
            id: id.into(),
            pbx: "default".into(),
            linkedid: id.into(),
            direction: Direction::Internal,
            from: Party::default(),
            to: Party::default(),
            started_at: at,
            answered_at: None,
            ended_at: Some(at),
            ring_s: 1.0,
            talk_s: 0.0,
            hold_s: 0.0,
            disposition: Disposition::NoAnswer,
            missed: true,
            answered_by: None,
            legs: vec![],
            transfers: vec![],
            timeline: vec![],
            correlation: vec![],
            gaps: vec![],
            dial_request_id: None,
            complete: true,
        }
    }

    fn point(segment: u64, offset: u64, pbxs: &[(&str, DateTime<Utc>)]) -> RestartPoint {
        RestartPoint {
            checkpoint: Checkpoint {
                segment,
                offset,
                at: "2026-11-22T10:00:00.123456789Z".parse().unwrap(),
            },
            snapshot_version: 7,
            snapshot: format!("{{\"at\":{offset}}}"),
            orphans: "[]".into(),
            last_seen: pbxs.iter().map(|(p, t)| (p.to_string(), *t)).collect(),
        }
    }

    #[tokio::test]
    async fn restart_points_round_trip_with_their_records_and_replace_each_other() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        assert_eq!(store.restart_point().await.unwrap(), None);
        let t: DateTime<Utc> = "2026-11-22T10:00:01.5Z".parse().unwrap();
        let first = point(3, 1200, &[("a", t), ("b", t)]);
        store
            .save_restart_point(&[record("default:1", t)], &first)
            .await
            .unwrap();
        assert_eq!(store.restart_point().await.unwrap(), Some(first.clone()));
        // The schema-1 checkpoint row says the same position.
        assert_eq!(store.checkpoint().await.unwrap(), Some(first.checkpoint));
        // The record that came with it is stored.
        assert!(store.get("default:1").await.unwrap().is_some());

        // A later one replaces everything, PBX times included.
        let second = point(4, 10, &[("b", t)]);
        store.save_restart_point(&[], &second).await.unwrap();
        assert_eq!(store.restart_point().await.unwrap(), Some(second));

        // A record the store refuses fails the whole save: the restart point stays as it was.
        let mut bad = record("default:2", t);
        bad.ring_s = f64::NAN;
        let third = point(5, 0, &[]);
        assert!(store.save_restart_point(&[bad], &third).await.is_err());
        assert_eq!(
            store
                .restart_point()
                .await
                .unwrap()
                .unwrap()
                .checkpoint
                .segment,
            4
        );
    }
}
