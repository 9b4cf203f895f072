//! [`Ingest`]: the one funnel every source pushes its inputs through.
//!
//! An input is first appended to the [`Journal`], then forwarded to the consumer (later the
//! correlator) over a bounded channel, both under the journal's lock, so the consumer sees
//! inputs in exactly journal order and a replay of the journal reproduces what ran live.
//!
//! A source must never wait for a slow consumer: the AMI read loop that stalls for more than
//! Asterisk's `writetimeout` (100 ms) gets its session dropped. So forwarding uses `try_send`,
//! and when the channel is full the policy is explicit and counted:
//! - the input is already in the journal, so it is not lost — a replay or restart sees it;
//! - the live consumer misses it: [`IngestStats::dropped`] counts it, and before the next
//!   input that fits, the consumer receives a gap marker (`pbx = "*"`, reason
//!   `consumer overflow: N inputs not processed live`) covering the time it missed, so
//!   records built live can say they are incomplete instead of being silently wrong.
//!   This gap is live-only (not journaled), because the journal itself is complete.
//!
//! A consumer that checkpoints (the service's) takes its queue from [`Ingest::with_positions`]:
//! each input then arrives as a [`Journaled`], with the journal position just after it, which
//! is where a replay continues once that input is part of a saved state. The overflow gap has
//! no position (it is not in the journal): from it on, the live state lacks inputs the journal
//! has, so it must not be saved as a checkpoint (see [`Journaled::end`]).

use crate::journal::{Input, Journal, JournalEntry, Position};
use crate::phone::action_url::PhoneCallback;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// The pbx name a consumer-overflow gap carries: it covers every source.
pub const ALL_SOURCES: &str = "*";

/// Counters of what went through the funnel.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Inputs appended to the journal.
    pub journaled: AtomicU64,
    /// Inputs forwarded to the live consumer.
    pub forwarded: AtomicU64,
    /// Inputs the live consumer missed because its queue was full.
    pub dropped: AtomicU64,
    /// Overflow gap markers delivered.
    pub overflow_gaps: AtomicU64,
}

#[derive(Debug)]
struct Overflow {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    count: u64,
}

/// An input as a checkpointing consumer receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Journaled {
    pub entry: JournalEntry,
    /// Journal position just after the entry (see [`Journal::append_then`]). `None` for an
    /// input that is not in the journal: the live-only overflow gap (the live consumer missed
    /// inputs the journal has), or an input that arrived after the journal was closed.
    pub end: Option<Position>,
    /// A phone callback as the receiver parsed it from the entry's own target
    /// ([`crate::phone::action_url::parse_target`]), so the consumer need not parse it again
    /// ([`crate::correlator::Correlator::handle_parsed`]). `None` for other inputs.
    pub callback: Option<Arc<PhoneCallback>>,
}

/// Where forwarded inputs go: plain entries, or entries with their journal positions.
#[derive(Clone)]
enum Tx {
    Plain(mpsc::Sender<JournalEntry>),
    Positioned(mpsc::Sender<Journaled>),
}

impl Tx {
    fn try_send(
        &self,
        entry: JournalEntry,
        end: Option<Position>,
        callback: Option<Arc<PhoneCallback>>,
    ) -> Result<(), TrySendError<JournalEntry>> {
        match self {
            Tx::Plain(tx) => tx.try_send(entry),
            Tx::Positioned(tx) => tx
                .try_send(Journaled {
                    entry,
                    end,
                    callback,
                })
                .map_err(|e| match e {
                    TrySendError::Full(j) => TrySendError::Full(j.entry),
                    TrySendError::Closed(j) => TrySendError::Closed(j.entry),
                }),
        }
    }
}

/// Journal-then-forward funnel, cheap to clone (one per source).
#[derive(Clone)]
pub struct Ingest {
    journal: Journal,
    tx: Tx,
    overflow: Arc<Mutex<Option<Overflow>>>,
    stats: Arc<IngestStats>,
}

impl Ingest {
    /// A funnel into `journal` and a consumer queue holding at most `capacity` inputs.
    pub fn new(journal: Journal, capacity: usize) -> (Ingest, mpsc::Receiver<JournalEntry>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Ingest::with_tx(journal, Tx::Plain(tx)), rx)
    }

    /// Like [`Ingest::new`], the consumer receiving each input with its journal position.
    pub fn with_positions(
        journal: Journal,
        capacity: usize,
    ) -> (Ingest, mpsc::Receiver<Journaled>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Ingest::with_tx(journal, Tx::Positioned(tx)), rx)
    }

    fn with_tx(journal: Journal, tx: Tx) -> Ingest {
        Ingest {
            journal,
            tx,
            overflow: Arc::new(Mutex::new(None)),
            stats: Arc::new(IngestStats::default()),
        }
    }

    /// The journal inputs are appended to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Counters.
    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Journals `entry`, then forwards it to the consumer without waiting (see module docs).
    pub fn submit(&self, entry: JournalEntry) {
        self.submit_with(entry, None);
    }

    /// [`Ingest::submit`] for a phone callback the receiver has parsed from the entry's own
    /// target: the consumer gets the parse with it (see [`Journaled::callback`]).
    pub fn submit_callback(&self, entry: JournalEntry, callback: Arc<PhoneCallback>) {
        self.submit_with(entry, Some(callback));
    }

    fn submit_with(&self, entry: JournalEntry, callback: Option<Arc<PhoneCallback>>) {
        self.journal
            .append_then(entry, |entry, end| self.forward(entry, end, callback));
        self.stats.journaled.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs under the journal lock, so forwarding order is journal order.
    fn forward(
        &self,
        entry: JournalEntry,
        end: Option<Position>,
        callback: Option<Arc<PhoneCallback>>,
    ) {
        let mut overflow = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(missed) = overflow.as_ref() {
            let gap = JournalEntry {
                t: entry.t,
                input: Input::Gap {
                    pbx: Arc::from(ALL_SOURCES),
                    from: missed.since,
                    to: missed.until,
                    reason: format!(
                        "consumer overflow: {} inputs not processed live",
                        missed.count
                    ),
                },
            };
            match self.tx.try_send(gap, None, None) {
                Ok(()) => {
                    *overflow = None;
                    self.stats.overflow_gaps.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_)) => return self.missed(&mut overflow, entry.t),
                Err(TrySendError::Closed(_)) => return,
            }
        }
        match self.tx.try_send(entry, end, callback) {
            Ok(()) => {
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(entry)) => self.missed(&mut overflow, entry.t),
            // The consumer has stopped (shutdown): the journal still has the input.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    fn missed(&self, overflow: &mut Option<Overflow>, at: DateTime<Utc>) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        match overflow {
            Some(o) => {
                o.until = at;
                o.count += 1;
            }
            None => {
                tracing::warn!(
                    "ingest queue full: the live consumer falls behind; inputs stay in the journal"
                );
                *overflow = Some(Overflow {
                    since: at,
                    until: at,
                    count: 1,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::AmiMessage;
    use crate::journal::{JournalOptions, JournalReader};

    fn ami(i: u32) -> JournalEntry {
        JournalEntry {
            t: Utc::now(),
            input: Input::Ami {
                pbx: Arc::from("default"),
                msg: AmiMessage::event("Test")
                    .field("Seq", i.to_string())
                    .build()
                    .unwrap(),
            },
        }
    }

    #[tokio::test]
    async fn full_queue_drops_live_only_then_reports_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let (ingest, mut rx) = Ingest::new(journal.clone(), 2);
        for i in 0..5 {
            ingest.submit(ami(i));
        }
        assert_eq!(ingest.stats().dropped.load(Ordering::Relaxed), 3);
        // The consumer catches up; the next input is preceded by the gap marker.
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        ingest.submit(ami(5));
        let gap = rx.recv().await.unwrap();
        let after = rx.recv().await.unwrap();
        let seq = |e: &JournalEntry| match &e.input {
            Input::Ami { msg, .. } => msg.get("Seq").unwrap().to_string(),
            other => panic!("not ami: {other:?}"),
        };
        assert_eq!(
            (seq(&first), seq(&second), seq(&after)),
            ("0".into(), "1".into(), "5".into())
        );
        match gap.input {
            Input::Gap { pbx, reason, .. } => {
                assert_eq!(&*pbx, ALL_SOURCES);
                assert!(reason.contains("3 inputs"), "{reason}");
            }
            other => panic!("expected gap, got {other:?}"),
        }
        // Nothing was lost from the journal.
        journal.sync().await.unwrap();
        let read: Vec<_> = JournalReader::open(dir.path())
            .unwrap()
            .map(|r| seq(&r.unwrap().entry))
            .collect();
        assert_eq!(read, ["0", "1", "2", "3", "4", "5"]);
    }

    #[tokio::test]
    async fn positioned_inputs_carry_where_they_end_and_the_overflow_gap_none() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let (ingest, mut rx) = Ingest::with_positions(journal.clone(), 2);
        for i in 0..3 {
            ingest.submit(ami(i)); // the third does not fit
        }
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        ingest.submit(ami(3));
        let gap = rx.recv().await.unwrap();
        let after = rx.recv().await.unwrap();
        assert!(matches!(gap.entry.input, Input::Gap { .. }));
        assert_eq!(gap.end, None, "the overflow gap is not in the journal");
        journal.sync().await.unwrap();
        let mut reader = JournalReader::open(dir.path()).unwrap();
        let mut ends = Vec::new();
        while let Some(r) = reader.next() {
            r.unwrap();
            ends.push(reader.position());
        }
        assert_eq!(ends.len(), 4);
        assert_eq!(first.end, ends[0]);
        assert_eq!(second.end, ends[1]);
        assert_eq!(
            after.end, ends[3],
            "the dropped third input still moved the position"
        );
    }
}
