//! The journal: a durable, append-only log of every input the bridge receives, written
//! *before* anything else looks at the input (see `docs/JOURNAL.md`).
//!
//! Why it exists: call records are derived state. If the correlation logic has a bug, or the
//! process dies, the journal lets us replay exactly what Asterisk and the phones said, in the
//! order the bridge saw it, and rebuild or debug the records.
//!
//! - [`entry`]: one input ([`JournalEntry`]) and its JSON-lines encoding;
//! - [`writer`]: [`Journal`], the group-commit writer (appends never wait for the disk);
//! - [`reader`]: [`JournalReader`], which reads a segment or a whole directory (or a
//!   directory from a [`Position`] on) and survives what a crash leaves behind (a torn last
//!   line, garbage).
//!
//! On disk a journal is a directory of numbered segments `00000001.jsonl`, `00000002.jsonl`, …
//! Every [`Journal::open`] starts a new segment, so a run never appends to a file a previous
//! (possibly crashed) run left behind.

pub mod entry;
pub mod reader;
pub mod writer;

pub use entry::{truncate_to_micros, Input, JournalEntry};
pub use reader::{JournalReader, JournalRecord, Position};
pub use writer::{Journal, JournalOptions, JournalStats};

use std::path::{Path, PathBuf};

/// Extension of segment files.
pub const SEGMENT_EXTENSION: &str = "jsonl";

/// Everything that can go wrong reading or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file system operation failed; `path` says on what.
    #[error("journal I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line is not a journal entry (bad JSON, unknown `src`, bad timestamp, bad AMI text).
    #[error("bad journal line: {reason}")]
    BadLine { reason: String },
    /// The journal was closed (or its writer thread is gone) before the operation completed.
    #[error("journal is closed")]
    Closed,
    /// Reading from a position whose segment is not (or no longer) in the journal directory.
    #[error("journal segment {segment} is not in {}", dir.display())]
    MissingSegment { dir: PathBuf, segment: u64 },
    /// Reading from a position that is not the start of a line of its segment (beyond its end,
    /// or not right after a `'\n'`): not a position this journal handed out.
    #[error("{}: offset {offset} is not the start of a line", path.display())]
    NotALineStart { path: PathBuf, offset: u64 },
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad_line(reason: impl Into<String>) -> Self {
        JournalError::BadLine {
            reason: reason.into(),
        }
    }
}

/// File name of segment `number`: eight digits, zero padded, so that names sort like numbers
/// (wider numbers are still accepted and written, they just no longer sort by name).
pub fn segment_file_name(number: u64) -> String {
    format!("{number:08}.{SEGMENT_EXTENSION}")
}

/// The segment number of `path` if its file name is `<digits>.jsonl`, else `None`.
pub fn segment_number(path: &Path) -> Option<u64> {
    if path.extension()? != SEGMENT_EXTENSION {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The `*.jsonl` files of a directory.
pub(crate) struct SegmentList {
    /// Numbered segments, sorted by number.
    pub segments: Vec<(u64, PathBuf)>,
    /// Other `*.jsonl` files: not segments of this journal.
    pub others: Vec<PathBuf>,
}

/// All `*.jsonl` files of `dir`, split into numbered segments and others.
pub(crate) fn list_segments(dir: &Path) -> Result<SegmentList, JournalError> {
    let mut segments = Vec::new();
    let mut others = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        let path = entry.path();
        if !matches!(path.extension(), Some(ext) if ext == SEGMENT_EXTENSION) {
            continue;
        }
        let is_file = entry
            .file_type()
            .map_err(|e| JournalError::io(&path, e))?
            .is_file();
        if !is_file {
            continue;
        }
        match segment_number(&path) {
            Some(n) => segments.push((n, path)),
            None => others.push(path),
        }
    }
    segments.sort();
    others.sort();
    Ok(SegmentList { segments, others })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::testing::arb_message;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;
    use std::time::Duration;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn ami_messages_round_trip_through_the_journal(
            msgs in prop::collection::vec(arb_message(), 1..20),
            micros in 0i64..4_102_444_800_000_000,
            segment_max_bytes in prop_oneof![Just(1u64), 200u64..2_000, Just(1u64 << 26)],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let entries: Vec<JournalEntry> = msgs
                .into_iter()
                .enumerate()
                .map(|(i, msg)| {
                    JournalEntry::new(
                        DateTime::<Utc>::from_timestamp_micros(micros + i as i64).unwrap(),
                        Input::Ami { pbx: format!("pbx-{}", i % 3).into(), msg },
                    )
                })
                .collect();
            for e in &entries {
                prop_assert_eq!(&JournalEntry::from_json_line(&e.to_json_line()).unwrap(), e);
            }

            let journal = Journal::open(
                dir.path(),
                JournalOptions { fsync_interval: Duration::from_millis(1), segment_max_bytes },
            )
            .unwrap();
            for e in &entries {
                journal.append(e);
            }
            journal.close().unwrap();

            let mut reader = JournalReader::open(dir.path()).unwrap();
            let read: Vec<JournalEntry> = reader.by_ref().map(|r| r.unwrap().entry).collect();
            prop_assert!(reader.warnings().is_empty(), "{:?}", reader.warnings());
            prop_assert_eq!(read.len(), entries.len());
            for (got, want) in read.iter().zip(&entries) {
                prop_assert_eq!(got, want);
                prop_assert_eq!(got.t, want.t);
                match (&got.input, &want.input) {
                    (Input::Ami { msg: g, .. }, Input::Ami { msg: w, .. }) => {
                        prop_assert_eq!(g.raw_str(), w.raw_str());
                    }
                    _ => prop_assert!(false, "kind changed"),
                }
            }
        }
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(1), "00000001.jsonl");
        assert_eq!(segment_file_name(123_456_789), "123456789.jsonl");
        assert_eq!(segment_number(Path::new("/x/00000042.jsonl")), Some(42));
        assert_eq!(
            segment_number(Path::new("123456789.jsonl")),
            Some(123_456_789)
        );
        assert_eq!(segment_number(Path::new("capture.jsonl")), None);
        assert_eq!(segment_number(Path::new("00000001.json")), None);
        assert_eq!(segment_number(Path::new(".jsonl")), None);
        assert_eq!(segment_number(Path::new("+1.jsonl")), None);
    }
}
