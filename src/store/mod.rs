//! The call record store: merged [`CallRecord`]s in SQL, for the records API, the CSV
//! export, reporting tools that query the database directly, and restart recovery.
//!
//! # Shape
//! Each record is stored twice over, in one transaction:
//! - `calls.record_json`, the full record as JSON. This is what [`Store::get`] and
//!   [`Store::list`] return, so every field of the model (phone views, correlation, gaps, …)
//!   survives a round trip exactly, including fields added to the model later.
//! - a relational projection: one `calls` row with the scalar fields, plus `call_legs`,
//!   `call_transfers`, `call_timeline` and `call_parties` (every extension and number of the
//!   call, for the `ext`/`number` filters). It exists for filtering and for SQL users; it is
//!   never read back into a record.
//!
//! The schema is in `migrations/` (portable SQL; see the comments there), applied by
//! [`Store::open`].
//!
//! # Writes
//! [`Store::upsert`] is idempotent by record id and last-write-wins: writing a record whose
//! JSON equals the stored one changes nothing (not even a write to disk); a different version
//! replaces the `calls` row and all of the call's child rows in one transaction, so readers
//! never see legs of one version with the timeline of another. The records come from the
//! correlator in journal order, so the last write is the newest version. The store does not
//! compare versions itself: the model carries no version number, and a replay from an older
//! checkpoint must be able to rewrite what it produces.
//!
//! # Restart recovery
//! [`Store::set_checkpoint`] records the journal position up to which records are stored.
//! [`Store::save_restart_point`] does the same together with the correlator's state at that
//! position and the per-PBX times a restart needs, all in one transaction; after a restart the
//! service continues from [`Store::restart_point`] and replays only the journal after it.
//! Because upserts are idempotent, replaying a little too much is harmless, so a checkpoint
//! may lag the records (at-least-once). [`Store::upsert_many`] writes records and the
//! checkpoint in one transaction when the caller wants them exact.
//!
//! # Backend
//! SQLite today (`sqlite://path/file.db`, `sqlite::memory:`), opened in WAL mode so readers
//! (API) and the writer (correlator) do not block each other. PostgreSQL is planned for
//! several bridges sharing one store; the schema and SQL stay within what both accept
//! (`ON CONFLICT … DO UPDATE`, row-value comparison, no SQLite-only types).

mod checkpoint;
mod csv;
mod dial;
mod migrations;
mod outbox;
mod query;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::Row;

use crate::record::{CallRecord, Direction, Disposition, Source};

pub use checkpoint::RestartPoint;
pub use csv::{csv_header, csv_row, COLUMNS as CSV_COLUMNS};
pub use outbox::{
    AttemptRecord, AttemptResult, DeliveryQuery, DeliveryRecord, DeliveryState, NewDelivery,
    PendingDelivery,
};
pub use query::{CallPage, CallQuery, DEFAULT_LIMIT, MAX_LIMIT};

/// How long a connection waits for another writer's lock before failing with "database is
/// locked". Writes are short (one call's rows), so waiting is better than failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections to a file database: WAL lets readers run beside the single writer.
const FILE_POOL_SIZE: u32 = 8;

/// Length of [`format_timestamp`] output.
pub(crate) const TIMESTAMP_LEN: usize = 27;

/// Errors of the store, each saying what the store was doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error while {context}: {source}")]
    Sqlx {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("store schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A `cursor` that the store did not produce (the text, cut to 80 characters).
    #[error("invalid pagination cursor {0:?}")]
    BadCursor(String),
    #[error("call record {id:?}: JSON {source}")]
    Json {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    /// A value the store cannot represent faithfully (e.g. a NaN duration, a journal
    /// position beyond `i64::MAX`), or a URL it cannot open.
    #[error("store: {0}")]
    Invalid(String),
}

/// Attaches `context` to a sqlx error.
fn ctx(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Sqlx { context, source }
}

/// A journal position: everything before `offset` in segment `segment` has been turned into
/// stored records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub segment: u64,
    /// Byte offset inside the segment.
    pub offset: u64,
    /// When the checkpoint was taken (kept to the nanosecond).
    pub at: DateTime<Utc>,
}

/// Handle to the store; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating the file and its directory if missing) and migrates the store at `url`:
    /// `sqlite://path/to/ctibridge.db` (relative to the working directory), or
    /// `sqlite::memory:` for a private in-memory store (tests, demo).
    ///
    /// Connections use WAL journaling with `synchronous=NORMAL`: a commit is atomic and
    /// survives a process crash, and only an OS crash or power loss can roll back the last
    /// commits, which restart recovery replays from the journal anyway. Foreign keys are
    /// enforced (child rows go with their call) and a busy connection waits up to 5 s.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::Invalid(format!(
                "unsupported storage URL {url:?}: this build stores to SQLite only \
                 (sqlite://path/file.db or sqlite::memory:)"
            )));
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(ctx("parsing the storage URL"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool_options = if in_memory {
            // An in-memory database lives as long as a connection to it: keep exactly one,
            // forever, so the data does not vanish when the pool trims idle connections.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            let file = options.get_filename();
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.exists() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Invalid(format!(
                            "cannot create the directory of {}: {e}",
                            file.display()
                        ))
                    })?;
                }
            }
            SqlitePoolOptions::new().max_connections(FILE_POOL_SIZE)
        };
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(ctx("opening the database"))?;
        migrations::migrator().await?.run(&pool).await?;
        Ok(Store { pool })
    }

    /// The connection pool, for health checks and read-only SQL by other parts of the
    /// service. Writes should go through the store's methods, which keep the projection
    /// tables in step with `record_json`.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The readiness probe: rewrites the one row of the `readiness` table (migration 0005).
    /// A committed write proves what a read cannot: a connection can be had, and the
    /// database takes writes — not read-only, not locked by another process beyond the busy
    /// timeout, its disk not full. (`BEGIN IMMEDIATE` alone is not enough: SQLite grants it
    /// on a read-only database in WAL mode.) One autocommit statement, so a caller that
    /// gives up waiting leaves no transaction open.
    pub async fn probe_writable(&self) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO readiness (id, probed_at) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .bind(format_timestamp(&Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(ctx("writing the readiness row"))?;
        Ok(())
    }

    /// Closes all connections (and, for a file, lets SQLite fold the WAL back into the
    /// database). Further calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Stores `record`, replacing any stored version with the same id (see the module docs).
    pub async fn upsert(&self, record: &CallRecord) -> Result<(), StoreError> {
        self.upsert_many(std::slice::from_ref(record), None).await
    }

    /// A transaction that has upserted `records`, in order, for the caller to add to and
    /// commit (dropped uncommitted, it stores nothing). The records are serialised and
    /// validated before the database is touched.
    async fn begin_with_records(
        &self,
        records: &[CallRecord],
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        let prepared = records
            .iter()
            .map(|r| Ok((r, record_json(r)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(ctx("beginning a transaction"))?;
        for (record, json) in &prepared {
            write_record(&mut tx, record, json).await?;
        }
        Ok(tx)
    }

    /// Stores `records` in order and, if given, sets the checkpoint, all in one transaction:
    /// either all of it is stored or none of it. One transaction per batch is also much
    /// cheaper than one per record when replaying a journal.
    pub async fn upsert_many(
        &self,
        records: &[CallRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StoreError> {
        // Validate before touching the database.
        let checkpoint = checkpoint.map(CheckpointRow::try_from).transpose()?;
        let mut tx = self.begin_with_records(records).await?;
        if let Some(cp) = checkpoint {
            write_checkpoint(&mut tx, &cp).await?;
        }
        tx.commit().await.map_err(ctx("committing records"))?;
        Ok(())
    }

    /// The record with this id, if stored.
    pub async fn get(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let json: Option<String> = sqlx::query_scalar("SELECT record_json FROM calls WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("reading a call record"))?;
        json.map(|j| parse_record(id, &j)).transpose()
    }

    /// The newest record that a click-to-call request (`POST /api/v1/dial`) produced.
    pub async fn find_by_dial_request(
        &self,
        request_id: &str,
    ) -> Result<Option<CallRecord>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT id, record_json FROM calls WHERE dial_request_id = ? \
             ORDER BY started_at DESC, id DESC LIMIT 1",
        )
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(ctx("looking up a dial request"))?;
        row.map(|(id, j)| parse_record(&id, &j)).transpose()
    }

    /// One page of records matching `q`, newest first (`started_at` DESC, then `id` DESC).
    /// See [`CallQuery`] for the filters and the module `query` docs for the cursor.
    pub async fn list(&self, q: &CallQuery) -> Result<CallPage, StoreError> {
        let after = q.cursor.as_deref().map(query::decode_cursor).transpose()?;
        let limit = q.effective_limit();
        let rows: Vec<(String, String, String)> = query::build_list_sql("", q, after, limit)
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("listing call records"))?;
        let more = rows.len() > limit as usize;
        let mut records = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last = None;
        for (json, started_at, id) in rows.into_iter().take(limit as usize) {
            records.push(parse_record(&id, &json)?);
            last = Some(query::Position { started_at, id });
        }
        let next_cursor = match (more, last) {
            (true, Some(p)) => Some(query::encode_cursor(&p)),
            _ => None,
        };
        Ok(CallPage {
            records,
            next_cursor,
        })
    }

    /// SQLite's plan for the query [`Store::list`] would run for `q`: the `detail` column of
    /// `EXPLAIN QUERY PLAN`, one line per step. For diagnostics and for tests that guard
    /// against a filter falling back to a full scan.
    pub async fn explain_list(&self, q: &CallQuery) -> Result<Vec<String>, StoreError> {
        let after = q.cursor.as_deref().map(query::decode_cursor).transpose()?;
        let rows = query::build_list_sql("EXPLAIN QUERY PLAN ", q, after, q.effective_limit())
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("explaining a list query"))?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("detail"))
            .collect::<Result<_, _>>()
            .map_err(ctx("reading a query plan"))
    }

    /// The journal position up to which records are stored, if one was ever set.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT journal_segment, journal_offset, saved_at FROM checkpoint WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(ctx("reading the checkpoint"))?;
        let Some(row) = row else { return Ok(None) };
        let corrupt = |what: &str| StoreError::Invalid(format!("stored checkpoint: bad {what}"));
        let segment: i64 = row.try_get(0).map_err(ctx("reading the checkpoint"))?;
        let offset: i64 = row.try_get(1).map_err(ctx("reading the checkpoint"))?;
        let at: String = row.try_get(2).map_err(ctx("reading the checkpoint"))?;
        Ok(Some(Checkpoint {
            segment: u64::try_from(segment).map_err(|_| corrupt("segment"))?,
            offset: u64::try_from(offset).map_err(|_| corrupt("offset"))?,
            at: DateTime::parse_from_rfc3339(&at)
                .map_err(|_| corrupt("time"))?
                .with_timezone(&Utc),
        }))
    }

    /// Replaces the checkpoint. The store does not insist that it moves forward: after the
    /// journal directory is reset, a lower position is legitimate.
    pub async fn set_checkpoint(&self, cp: &Checkpoint) -> Result<(), StoreError> {
        let row = CheckpointRow::try_from(cp)?;
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(ctx("getting a connection"))?;
        write_checkpoint(&mut conn, &row).await
    }
}

/// Fixed-width UTC text of `t` with microseconds, e.g. `2026-11-22T10:00:00.123456Z`: the
/// format of every timestamp column and of the CSV export. Fixed width makes string order
/// equal time order, which is what lets range filters and keyset pagination run on TEXT
/// columns in any SQL engine. Microseconds match the precision of AMI and journal times; the
/// record JSON keeps whatever precision the record had.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Like [`format_timestamp`], to the nanosecond (the checkpoint's `at` round-trips exactly).
fn format_timestamp_nanos(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// A phone number as the `number` filter compares it: all whitespace removed.
pub fn normalize_number(n: &str) -> String {
    n.chars().filter(|c| !c.is_whitespace()).collect()
}

/// An extension as the `ext` filter compares it: trimmed.
pub fn normalize_extension(e: &str) -> String {
    e.trim().to_owned()
}

/// The stored text of a direction; equal to its JSON spelling.
pub(crate) fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Internal => "internal",
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
        Direction::Unknown => "unknown",
    }
}

/// The stored text of a disposition; equal to its JSON spelling.
pub(crate) fn disposition_str(d: Disposition) -> &'static str {
    match d {
        Disposition::Answered => "answered",
        Disposition::NoAnswer => "no_answer",
        Disposition::Busy => "busy",
        Disposition::Failed => "failed",
    }
}

fn source_str(s: Source) -> &'static str {
    match s {
        Source::Ami => "ami",
        Source::Phone => "phone",
    }
}

/// The JSON of `r`, refusing what JSON cannot carry: serde_json writes a NaN or infinite
/// duration as `null`, which would store fine and then fail every read of the record.
fn record_json(r: &CallRecord) -> Result<String, StoreError> {
    for (name, v) in [
        ("ring_s", r.ring_s),
        ("talk_s", r.talk_s),
        ("hold_s", r.hold_s),
    ] {
        if !v.is_finite() {
            return Err(StoreError::Invalid(format!(
                "call record {:?}: {name} is {v}",
                r.id
            )));
        }
    }
    serde_json::to_string(r).map_err(|source| StoreError::Json {
        id: r.id.clone(),
        source,
    })
}

fn parse_record(id: &str, json: &str) -> Result<CallRecord, StoreError> {
    serde_json::from_str(json).map_err(|source| StoreError::Json {
        id: id.to_owned(),
        source,
    })
}

/// Every `(kind, value)` of `call_parties` for `r` (see [`CallQuery::ext`] and
/// [`CallQuery::number`] for what counts), normalised, without duplicates or empty values.
fn parties(r: &CallRecord) -> BTreeSet<(&'static str, String)> {
    let mut out = BTreeSet::new();
    let mut ext = |v: Option<&str>| {
        if let Some(v) = v.map(normalize_extension).filter(|v| !v.is_empty()) {
            out.insert(("ext", v));
        }
    };
    ext(r.from.extension.as_deref());
    ext(r.to.extension.as_deref());
    for leg in &r.legs {
        ext(leg.endpoint.as_deref());
    }
    for t in &r.transfers {
        ext(t.by.as_deref());
        ext(t.to.as_deref());
    }
    let answered_by_is_number = r.direction == Direction::Outbound;
    if !answered_by_is_number {
        ext(r.answered_by.as_deref());
    }
    let mut number = |v: Option<&str>| {
        if let Some(v) = v.map(normalize_number).filter(|v| !v.is_empty()) {
            out.insert(("number", v));
        }
    };
    number(r.from.number.as_deref());
    number(r.to.number.as_deref());
    if answered_by_is_number {
        number(r.answered_by.as_deref());
    }
    out
}

/// Writes one record inside the caller's transaction. Does nothing when the stored JSON is
/// already identical: the conditional upsert reports no changed row, and the child rows are
/// then left alone.
async fn write_record(
    conn: &mut SqliteConnection,
    r: &CallRecord,
    json: &str,
) -> Result<(), StoreError> {
    let ts = |t: &Option<DateTime<Utc>>| t.as_ref().map(format_timestamp);
    let started_at = format_timestamp(&r.started_at);
    // Writing first (rather than reading the stored JSON and then deciding) takes the write
    // lock at once, which SQLite's busy timeout handles; a read-then-write transaction can
    // instead fail outright when another writer commits in between.
    let changed = sqlx::query(
        "INSERT INTO calls (id, pbx, linkedid, direction, from_number, from_name, \
         from_extension, to_number, to_name, to_extension, started_at, answered_at, ended_at, \
         ring_s, talk_s, hold_s, disposition, missed, answered_by, dial_request_id, complete, \
         record_json) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET pbx = excluded.pbx, linkedid = excluded.linkedid, \
         direction = excluded.direction, from_number = excluded.from_number, \
         from_name = excluded.from_name, from_extension = excluded.from_extension, \
         to_number = excluded.to_number, to_name = excluded.to_name, \
         to_extension = excluded.to_extension, started_at = excluded.started_at, \
         answered_at = excluded.answered_at, ended_at = excluded.ended_at, \
         ring_s = excluded.ring_s, talk_s = excluded.talk_s, hold_s = excluded.hold_s, \
         disposition = excluded.disposition, missed = excluded.missed, \
         answered_by = excluded.answered_by, dial_request_id = excluded.dial_request_id, \
         complete = excluded.complete, record_json = excluded.record_json \
         WHERE calls.record_json <> excluded.record_json",
    )
    .bind(&r.id)
    .bind(&r.pbx)
    .bind(&r.linkedid)
    .bind(direction_str(r.direction))
    .bind(&r.from.number)
    .bind(&r.from.name)
    .bind(&r.from.extension)
    .bind(&r.to.number)
    .bind(&r.to.name)
    .bind(&r.to.extension)
    .bind(&started_at)
    .bind(ts(&r.answered_at))
    .bind(ts(&r.ended_at))
    .bind(r.ring_s)
    .bind(r.talk_s)
    .bind(r.hold_s)
    .bind(disposition_str(r.disposition))
    .bind(i64::from(r.missed))
    .bind(&r.answered_by)
    .bind(&r.dial_request_id)
    .bind(i64::from(r.complete))
    .bind(json)
    .execute(&mut *conn)
    .await
    .map_err(ctx("writing a calls row"))?
    .rows_affected()
        > 0;
    if !changed {
        return Ok(());
    }

    for table in [
        "call_legs",
        "call_parties",
        "call_transfers",
        "call_timeline",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE call_id = ?"))
            .bind(&r.id)
            .execute(&mut *conn)
            .await
            .map_err(ctx("replacing a call's child rows"))?;
    }

    for (idx, leg) in r.legs.iter().enumerate() {
        let phone = leg.phone.as_ref();
        sqlx::query(
            "INSERT INTO call_legs (call_id, idx, channel, uniqueid, endpoint, sip_call_id, \
             started_at, answered_at, ended_at, hangup_cause, hangup_cause_text, dial_status, \
             missed, phone_mac, phone_ip, phone_model, phone_call_handle) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(idx as i64)
        .bind(&leg.channel)
        .bind(&leg.uniqueid)
        .bind(&leg.endpoint)
        .bind(&leg.sip_call_id)
        .bind(ts(&leg.started_at))
        .bind(ts(&leg.answered_at))
        .bind(ts(&leg.ended_at))
        .bind(leg.hangup_cause.map(i64::from))
        .bind(&leg.hangup_cause_text)
        .bind(&leg.dial_status)
        .bind(i64::from(leg.missed))
        .bind(phone.and_then(|p| p.mac.as_deref()))
        .bind(phone.and_then(|p| p.ip.as_deref()))
        .bind(phone.and_then(|p| p.model.as_deref()))
        .bind(phone.and_then(|p| p.call_handle.as_deref()))
        .execute(&mut *conn)
        .await
        .map_err(ctx("writing a call_legs row"))?;
    }

    for (kind, value) in parties(r) {
        sqlx::query(
            "INSERT INTO call_parties (call_id, kind, value, started_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(kind)
        .bind(value)
        .bind(&started_at)
        .execute(&mut *conn)
        .await
        .map_err(ctx("writing a call_parties row"))?;
    }

    for (idx, t) in r.transfers.iter().enumerate() {
        sqlx::query(
            "INSERT INTO call_transfers (call_id, idx, at, kind, by_ext, to_target, result) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(idx as i64)
        .bind(ts(&t.at))
        .bind(&t.kind)
        .bind(&t.by)
        .bind(&t.to)
        .bind(&t.result)
        .execute(&mut *conn)
        .await
        .map_err(ctx("writing a call_transfers row"))?;
    }

    for (idx, e) in r.timeline.iter().enumerate() {
        sqlx::query(
            "INSERT INTO call_timeline (call_id, idx, at, source, event, subject, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(idx as i64)
        .bind(format_timestamp(&e.at))
        .bind(source_str(e.source))
        .bind(&e.event)
        .bind(&e.subject)
        .bind(&e.detail)
        .execute(&mut *conn)
        .await
        .map_err(ctx("writing a call_timeline row"))?;
    }
    Ok(())
}

/// A [`Checkpoint`] in column types: SQL integers are signed 64-bit.
struct CheckpointRow {
    segment: i64,
    offset: i64,
    at: String,
}

impl TryFrom<&Checkpoint> for CheckpointRow {
    type Error = StoreError;

    fn try_from(cp: &Checkpoint) -> Result<Self, StoreError> {
        let too_big = |what: &str, v: u64| {
            StoreError::Invalid(format!("checkpoint {what} {v} does not fit a SQL BIGINT"))
        };
        Ok(CheckpointRow {
            segment: i64::try_from(cp.segment).map_err(|_| too_big("segment", cp.segment))?,
            offset: i64::try_from(cp.offset).map_err(|_| too_big("offset", cp.offset))?,
            at: format_timestamp_nanos(&cp.at),
        })
    }
}

async fn write_checkpoint(
    conn: &mut SqliteConnection,
    cp: &CheckpointRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO checkpoint (id, journal_segment, journal_offset, saved_at) \
         VALUES (1, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET journal_segment = excluded.journal_segment, \
         journal_offset = excluded.journal_offset, saved_at = excluded.saved_at",
    )
    .bind(cp.segment)
    .bind(cp.offset)
    .bind(&cp.at)
    .execute(&mut *conn)
    .await
    .map_err(ctx("writing the checkpoint"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored enum texts are the JSON spellings, so SQL users and API users see the
    /// same words.
    #[test]
    fn enum_texts_match_json() {
        let json = |v: serde_json::Value| v.as_str().unwrap().to_owned();
        for d in [
            Direction::Internal,
            Direction::Inbound,
            Direction::Outbound,
            Direction::Unknown,
        ] {
            assert_eq!(direction_str(d), json(serde_json::to_value(d).unwrap()));
        }
        for d in [
            Disposition::Answered,
            Disposition::NoAnswer,
            Disposition::Busy,
            Disposition::Failed,
        ] {
            assert_eq!(disposition_str(d), json(serde_json::to_value(d).unwrap()));
        }
        for s in [Source::Ami, Source::Phone] {
            assert_eq!(source_str(s), json(serde_json::to_value(s).unwrap()));
        }
    }

    #[test]
    fn timestamps_are_fixed_width_and_sort() {
        let a: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let b: DateTime<Utc> = "2026-11-22T10:00:00.5Z".parse().unwrap();
        let c: DateTime<Utc> = "2026-11-22T10:00:01.000001Z".parse().unwrap();
        let (fa, fb, fc) = (
            format_timestamp(&a),
            format_timestamp(&b),
            format_timestamp(&c),
        );
        assert_eq!(fa, "2026-11-22T10:00:00.000000Z");
        for f in [&fa, &fb, &fc] {
            assert_eq!(f.len(), TIMESTAMP_LEN);
        }
        assert!(fa < fb && fb < fc);
        assert_eq!(format_timestamp_nanos(&a), "2026-11-22T10:00:00.000000000Z");
    }

    #[test]
    fn numbers_lose_only_whitespace() {
        assert_eq!(normalize_number(" +1 555\t0100 "), "+15550100");
        assert_eq!(normalize_number("(555) 0100"), "(555)0100");
        assert_eq!(normalize_extension(" 101 "), "101");
    }
}
