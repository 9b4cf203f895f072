//! The store side of the consumer: completed call records and restart points, written by
//! their own task so that the consumer (and with it every live event) never waits on SQLite.
//!
//! The consumer hands [`WriteOp`]s to the [`StoreWriter`] task through a bounded queue, in the
//! order it produced them. The writer keeps that order, which is what makes a restart point
//! safe: a checkpoint at journal position P is written only after every record completed
//! before P was stored (or kept to be stored in the checkpoint's own transaction), so a
//! restart from P finds them all. Records that arrive together are stored in one transaction
//! (one commit instead of one per record), which also keeps the writer ahead under load. The
//! queue is bounded: if the database falls far behind, the consumer waits rather than memory
//! growing without end.
//!
//! The consumer decides *when* to checkpoint and takes the correlator's snapshot (the state
//! at P); the writer does the slow parts: the journal `sync` that puts P on disk, encoding
//! the snapshot, and the transaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::correlator::{orphans_to_json, CorrelatorSnapshot, OrphanCallback, SNAPSHOT_VERSION};
use crate::journal::{Journal, Position};
use crate::record::CallRecord;
use crate::store::{Checkpoint, RestartPoint, Store};

/// Records stored in one transaction at most.
const MAX_BATCH: usize = 256;
/// Operations queued for the writer before the consumer waits.
pub const QUEUE: usize = 4096;

/// One thing for the writer to do, in consumer order.
pub enum WriteOp {
    /// A completed call record.
    Record(Box<CallRecord>),
    /// A restart point: the correlator's state after the input that ended at `position`.
    Checkpoint(Box<PendingCheckpoint>),
    /// Answers once everything queued before it is done (tests wait with it).
    #[cfg_attr(not(test), allow(dead_code))]
    Flush(oneshot::Sender<()>),
}

/// A checkpoint as the consumer takes it; the writer encodes and stores it.
pub struct PendingCheckpoint {
    pub position: Position,
    pub snapshot: CorrelatorSnapshot,
    pub orphans: Vec<OrphanCallback>,
    pub last_seen: BTreeMap<String, DateTime<Utc>>,
}

/// Flags the writer shares with the consumer.
#[derive(Debug, Default)]
pub struct WriterFlags {
    /// No more checkpoints this run: the journal's positions stopped being exact (set by
    /// the writer) or the live consumer missed inputs (set by the consumer).
    pub suspended: AtomicBool,
    /// The last checkpoint was not saved: the consumer takes another one at the next
    /// interval even if nothing changed since.
    pub retry: AtomicBool,
}

impl WriterFlags {
    /// Suspends checkpoints for the rest of the run, logging why once.
    pub fn suspend(&self, why: &str) {
        if !self.suspended.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                "no more checkpoints until restart: {why}; the next start replays the journal \
                 from the last checkpoint"
            );
        }
    }

    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }
}

/// The writer task's state.
pub struct StoreWriter {
    store: Store,
    journal: Journal,
    flags: Arc<WriterFlags>,
    /// Completed records whose own upsert failed; stored with the next checkpoint.
    unstored: Vec<CallRecord>,
}

impl StoreWriter {
    pub fn new(store: Store, journal: Journal, flags: Arc<WriterFlags>) -> StoreWriter {
        StoreWriter {
            store,
            journal,
            flags,
            unstored: Vec::new(),
        }
    }

    /// Runs until the consumer drops its sender and everything queued is written.
    pub async fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        let mut batch: Vec<CallRecord> = Vec::new();
        while let Some(op) = rx.recv().await {
            let mut next = Some(op);
            // Take what else is queued: records go into one transaction; a checkpoint or a
            // flush ends the batch (the records before it are written first).
            while let Some(op) = next.take() {
                match op {
                    WriteOp::Record(record) => {
                        batch.push(*record);
                        if batch.len() < MAX_BATCH {
                            next = rx.try_recv().ok();
                        }
                    }
                    WriteOp::Checkpoint(point) => {
                        self.store_records(std::mem::take(&mut batch)).await;
                        self.save(*point).await;
                    }
                    WriteOp::Flush(done) => {
                        self.store_records(std::mem::take(&mut batch)).await;
                        let _ = done.send(());
                    }
                }
            }
            self.store_records(std::mem::take(&mut batch)).await;
        }
    }

    /// Stores `records` in one transaction; if that fails, one by one, so one bad record
    /// cannot hold back the others. What still fails is kept for the next checkpoint.
    async fn store_records(&mut self, records: Vec<CallRecord>) {
        if records.is_empty() {
            return;
        }
        if self.store.upsert_many(&records, None).await.is_ok() {
            return;
        }
        for record in records {
            if let Err(e) = self.store.upsert(&record).await {
                // The journal still holds its inputs; the checkpoint stores it in its own
                // transaction (and a checkpoint that fails keeps it here).
                tracing::error!(id = %record.id, error = %e, "storing a call record failed");
                self.unstored.push(record);
            }
        }
    }

    async fn save(&mut self, pending: PendingCheckpoint) {
        if self.flags.is_suspended() {
            return;
        }
        // The position must be on disk before a checkpoint may point at it.
        if let Err(e) = self.journal.sync().await {
            tracing::warn!(error = %e, "checkpoint skipped: journal sync failed");
            self.flags.retry.store(true, Ordering::SeqCst);
            return;
        }
        // Checked after the sync: the commit that wrote the position may have been the one
        // that could not follow the planned layout.
        if !self.journal.positions_reliable() {
            self.flags.suspend("journal positions are no longer exact");
            return;
        }
        let PendingCheckpoint {
            position,
            snapshot,
            orphans,
            last_seen,
        } = pending;
        let live_calls = snapshot.live_calls();
        let encoded =
            tokio::task::spawn_blocking(move || (snapshot.to_json(), orphans_to_json(&orphans)))
                .await;
        let Ok((snapshot, orphans)) = encoded else {
            tracing::error!("checkpoint skipped: encoding the snapshot failed");
            self.flags.retry.store(true, Ordering::SeqCst);
            return;
        };
        let point = RestartPoint {
            checkpoint: Checkpoint {
                segment: position.segment,
                offset: position.offset,
                at: Utc::now(),
            },
            snapshot_version: SNAPSHOT_VERSION,
            snapshot,
            orphans,
            last_seen,
        };
        match self.store.save_restart_point(&self.unstored, &point).await {
            Ok(()) => {
                self.unstored.clear();
                tracing::debug!(
                    segment = position.segment,
                    offset = position.offset,
                    live_calls,
                    bytes = point.snapshot.len(),
                    "checkpoint saved"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "saving a checkpoint failed");
                self.flags.retry.store(true, Ordering::SeqCst);
            }
        }
    }
}
