//! [`JournalReader`]: reads a segment, or a whole journal directory, entry by entry.
//!
//! Why it is tolerant: the journal is most needed after something went wrong, so reading it
//! must not fail on what a crash leaves behind. A last line without its `'\n'` is a write torn
//! by a crash (the writer only ever writes whole lines, so nothing else can leave one) and is
//! skipped; a complete line that does not parse is skipped too. Both leave a warning (logged
//! and kept in [`JournalReader::warnings`]) naming the file and byte offset. Only I/O errors
//! are errors.
//!
//! Memory stays flat: files are streamed line by line through a `BufReader`.

use super::{list_segments, segment_number, JournalEntry, JournalError};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A place in the journal: segment number, then byte offset in that segment. Ordered like the
/// journal itself. [`JournalRecord::position`] is where an entry's line starts;
/// [`crate::journal::Journal::append_then`] and [`JournalReader::position`] give where it ends,
/// i.e. where a replay continues after it (what a checkpoint stores).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Segment number (`00000003.jsonl` is 3); 0 for a file not named like a segment.
    pub segment: u64,
    /// Byte offset of the first byte of the entry's line.
    pub offset: u64,
}

/// One entry read back, with where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalRecord {
    pub position: Position,
    pub entry: JournalEntry,
}

/// Reads journal entries from one file, or from every segment of a directory in number order.
/// Iterating yields entries in journal order; `Err` items are I/O errors (reading goes on with
/// the next segment after one).
#[derive(Debug)]
pub struct JournalReader {
    /// Files still to read, with their segment numbers.
    files: VecDeque<(u64, PathBuf)>,
    /// Where to start in the first file (reading from a position).
    first_offset: u64,
    current: Option<OpenFile>,
    line: Vec<u8>,
    warnings: Vec<String>,
    /// Just after the last entry returned.
    position: Option<Position>,
}

#[derive(Debug)]
struct OpenFile {
    segment: u64,
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
}

impl JournalReader {
    /// A reader over `path`: a single journal file (any name; segment number 0 unless named
    /// `NNNNNNNN.jsonl`), or a directory, whose `NNNNNNNN.jsonl` segments are read in number
    /// order (other `*.jsonl` files there are not segments: skipped with a warning).
    pub fn open(path: &Path) -> Result<JournalReader, JournalError> {
        let meta = std::fs::metadata(path).map_err(|e| JournalError::io(path, e))?;
        let mut warnings = Vec::new();
        let files = if meta.is_dir() {
            let super::SegmentList { segments, others } = list_segments(path)?;
            for other in others {
                warn(
                    &mut warnings,
                    format!(
                        "{}: not a numbered journal segment (NNNNNNNN.jsonl); skipped",
                        other.display()
                    ),
                );
            }
            segments.into_iter().collect()
        } else {
            VecDeque::from([(segment_number(path).unwrap_or(0), path.to_path_buf())])
        };
        Ok(JournalReader {
            files,
            first_offset: 0,
            current: None,
            line: Vec::with_capacity(4096),
            warnings,
            position: None,
        })
    }

    /// A reader over journal directory `dir` from `from` on: segment `from.segment` from byte
    /// `from.offset`, then every later segment, as a restart after a checkpoint reads it.
    /// Earlier segments need not exist any more. Fails when that segment is missing
    /// ([`JournalError::MissingSegment`]) or `from` is not the start of one of its lines
    /// ([`JournalError::NotALineStart`]: past its end, or not right after a `'\n'`), i.e. not
    /// a position this journal handed out.
    pub fn open_from(dir: &Path, from: Position) -> Result<JournalReader, JournalError> {
        let super::SegmentList { segments, .. } = list_segments(dir)?;
        let Some(first) = segments.iter().position(|(n, _)| *n == from.segment) else {
            return Err(JournalError::MissingSegment {
                dir: dir.to_path_buf(),
                segment: from.segment,
            });
        };
        let path = &segments[first].1;
        let len = std::fs::metadata(path)
            .map_err(|e| JournalError::io(path, e))?
            .len();
        let after_newline = from.offset == 0 || {
            let mut file = File::open(path).map_err(|e| JournalError::io(path, e))?;
            let mut byte = [0u8; 1];
            file.seek(SeekFrom::Start(from.offset - 1))
                .and_then(|_| file.read_exact(&mut byte))
                .map(|()| byte[0] == b'\n')
                .unwrap_or(false)
        };
        if from.offset > len || !after_newline {
            return Err(JournalError::NotALineStart {
                path: path.clone(),
                offset: from.offset,
            });
        }
        Ok(JournalReader {
            files: segments.into_iter().skip(first).collect(),
            first_offset: from.offset,
            current: None,
            line: Vec::with_capacity(4096),
            warnings: Vec::new(),
            position: Some(from),
        })
    }

    /// Just after the last entry returned (where reading on would continue; skipped lines
    /// after it do not count), or where reading started before any.
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// What was skipped so far (torn last lines, unparsable lines, foreign files), each naming
    /// the file and, for lines, the byte offset.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

impl Iterator for JournalReader {
    type Item = Result<JournalRecord, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let cur = match &mut self.current {
                Some(cur) => cur,
                None => {
                    let (segment, path) = self.files.pop_front()?;
                    let offset = std::mem::take(&mut self.first_offset);
                    let opened = File::open(&path).and_then(|mut file| {
                        if offset > 0 {
                            file.seek(SeekFrom::Start(offset))?;
                        }
                        Ok(file)
                    });
                    match opened {
                        Ok(file) => self.current.insert(OpenFile {
                            segment,
                            path,
                            reader: BufReader::with_capacity(64 * 1024, file),
                            offset,
                        }),
                        Err(e) => return Some(Err(JournalError::io(path, e))),
                    }
                }
            };

            self.line.clear();
            let n = match cur.reader.read_until(b'\n', &mut self.line) {
                Ok(0) => {
                    self.current = None;
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let path = cur.path.clone();
                    self.current = None;
                    return Some(Err(JournalError::io(path, e)));
                }
            };
            let position = Position {
                segment: cur.segment,
                offset: cur.offset,
            };
            cur.offset += n as u64;

            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if self.line.last() != Some(&b'\n') {
                let text = format!(
                    "{}: offset {}: torn last line ({n} bytes without a final newline, \
                     left by a crash mid-write); skipped",
                    cur.path.display(),
                    position.offset
                );
                warn(&mut self.warnings, text);
                continue;
            }
            match JournalEntry::from_json_line(&self.line) {
                Ok(entry) => {
                    self.position = Some(Position {
                        segment: cur.segment,
                        offset: cur.offset,
                    });
                    return Some(Ok(JournalRecord { position, entry }));
                }
                Err(e) => {
                    let text = format!(
                        "{}: offset {}: line skipped: {e}",
                        cur.path.display(),
                        position.offset
                    );
                    warn(&mut self.warnings, text);
                }
            }
        }
    }
}

fn warn(warnings: &mut Vec<String>, text: String) {
    tracing::warn!("journal: {text}");
    warnings.push(text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::AmiMessage;
    use crate::journal::Input;
    use chrono::{DateTime, Utc};
    use std::io::Write;

    fn entry(i: i64) -> JournalEntry {
        JournalEntry::new(
            DateTime::<Utc>::from_timestamp_micros(1_795_000_000_000_000 + i).unwrap(),
            Input::Ami {
                pbx: "default".into(),
                msg: AmiMessage::event("Hangup")
                    .field("Uniqueid", i.to_string())
                    .build()
                    .unwrap(),
            },
        )
    }

    fn write_file(path: &Path, parts: &[&[u8]]) {
        let mut f = File::create(path).unwrap();
        for p in parts {
            f.write_all(p).unwrap();
        }
    }

    fn collect(reader: &mut JournalReader) -> Vec<JournalRecord> {
        reader.by_ref().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn torn_last_line_and_garbage_middle_line_are_skipped_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let seg1 = dir.path().join("00000001.jsonl");
        let (a, b, c) = (
            entry(1).to_json_line(),
            entry(2).to_json_line(),
            entry(3).to_json_line(),
        );
        let torn = &c[..c.len() / 2];
        let garbage = b"{\"t\":\"2026-11-22T10:00:00Z\",\"src\":\"ami\",\"pbx\":\"x\",\"raw\":\"no colon\\r\\n\\r\\n\"}\n";
        write_file(&seg1, &[&a, b"\n", garbage, b"not json at all\n", &b, torn]);
        // The next run's segment follows the torn one and reads normally.
        let seg2 = dir.path().join("00000002.jsonl");
        write_file(&seg2, &[&c]);

        let mut reader = JournalReader::open(dir.path()).unwrap();
        let records = collect(&mut reader);
        let entries: Vec<_> = records.iter().map(|r| r.entry.clone()).collect();
        assert_eq!(entries, [entry(1), entry(2), entry(3)]);

        let garbage_at = (a.len() + 1) as u64;
        let b_at = garbage_at + garbage.len() as u64 + "not json at all\n".len() as u64;
        let torn_at = b_at + b.len() as u64;
        assert_eq!(
            records.iter().map(|r| r.position).collect::<Vec<_>>(),
            [
                Position {
                    segment: 1,
                    offset: 0
                },
                Position {
                    segment: 1,
                    offset: b_at
                },
                Position {
                    segment: 2,
                    offset: 0
                },
            ]
        );
        let w = reader.warnings();
        assert_eq!(w.len(), 3, "{w:#?}");
        let name = seg1.display().to_string();
        assert!(w[0].contains(&name) && w[0].contains(&format!("offset {garbage_at}")));
        assert!(w[0].contains("bad AMI raw"), "{}", w[0]);
        assert!(
            w[1].contains(&name) && w[1].contains("line skipped"),
            "{}",
            w[1]
        );
        assert!(
            w[2].contains(&name)
                && w[2].contains(&format!("offset {torn_at}"))
                && w[2].contains("torn"),
            "{}",
            w[2]
        );
    }

    #[test]
    fn single_file_of_any_name_and_empty_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capture.jsonl");
        let a = entry(1).to_json_line();
        let b = entry(2).to_json_line();
        write_file(&path, &[b"\n\r\n", &a, b"   \n", &b]);
        let mut reader = JournalReader::open(&path).unwrap();
        let records = collect(&mut reader);
        assert!(reader.warnings().is_empty(), "{:?}", reader.warnings());
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].position,
            Position {
                segment: 0,
                offset: 3
            }
        );
        assert_eq!(records[1].entry, entry(2));

        // A segment file opened on its own keeps its number.
        let seg = dir.path().join("00000012.jsonl");
        write_file(&seg, &[&a]);
        let records = collect(&mut JournalReader::open(&seg).unwrap());
        assert_eq!(
            records[0].position,
            Position {
                segment: 12,
                offset: 0
            }
        );
    }

    #[test]
    fn directory_reads_segments_in_number_order_and_flags_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        // Name order and number order differ once numbers outgrow eight digits.
        write_file(
            &dir.path().join("100000000.jsonl"),
            &[&entry(3).to_json_line()],
        );
        write_file(
            &dir.path().join("00000002.jsonl"),
            &[&entry(2).to_json_line()],
        );
        write_file(
            &dir.path().join("00000001.jsonl"),
            &[&entry(1).to_json_line()],
        );
        write_file(&dir.path().join("notes.jsonl"), &[&entry(9).to_json_line()]);
        write_file(&dir.path().join("00000003.txt"), &[b"ignored"]);
        let mut reader = JournalReader::open(dir.path()).unwrap();
        let records = collect(&mut reader);
        assert_eq!(
            records.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
            [entry(1), entry(2), entry(3)]
        );
        assert_eq!(records[2].position.segment, 100_000_000);
        assert_eq!(reader.warnings().len(), 1);
        assert!(reader.warnings()[0].contains("notes.jsonl"));
    }

    #[test]
    fn missing_path_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        match JournalReader::open(&missing) {
            Err(e @ JournalError::Io { .. }) => assert!(e.to_string().contains("nope"), "{e}"),
            other => panic!("expected Io error, got {other:?}"),
        }
        // An empty directory is an empty journal.
        assert_eq!(JournalReader::open(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn reading_from_a_position_continues_after_it_even_without_earlier_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c, d) = (
            entry(1).to_json_line(),
            entry(2).to_json_line(),
            entry(3).to_json_line(),
            entry(4).to_json_line(),
        );
        write_file(&dir.path().join("00000001.jsonl"), &[&a]);
        write_file(&dir.path().join("00000002.jsonl"), &[&b, &c]);
        write_file(&dir.path().join("00000003.jsonl"), &[&d]);
        let p = |segment, offset| Position { segment, offset };
        let read_from = |from| -> Vec<JournalEntry> {
            JournalReader::open_from(dir.path(), from)
                .unwrap()
                .map(|r| r.unwrap().entry)
                .collect()
        };
        assert_eq!(read_from(p(1, 0)), [entry(1), entry(2), entry(3), entry(4)]);
        assert_eq!(read_from(p(2, b.len() as u64)), [entry(3), entry(4)]);
        // The end of a segment: the next one follows.
        assert_eq!(
            read_from(p(1, a.len() as u64)),
            [entry(2), entry(3), entry(4)]
        );
        // The position after the last entry read, as a checkpoint would store it.
        let mut reader = JournalReader::open_from(dir.path(), p(2, 0)).unwrap();
        assert_eq!(reader.position(), Some(p(2, 0)));
        reader.next().unwrap().unwrap();
        assert_eq!(reader.position(), Some(p(2, b.len() as u64)));
        assert_eq!(reader.by_ref().count(), 2);
        assert_eq!(reader.position(), Some(p(3, d.len() as u64)));

        // Earlier segments are gone (archived): reading from a later one still works.
        std::fs::remove_file(dir.path().join("00000001.jsonl")).unwrap();
        assert_eq!(read_from(p(2, b.len() as u64)), [entry(3), entry(4)]);
        match JournalReader::open_from(dir.path(), p(1, a.len() as u64)) {
            Err(JournalError::MissingSegment { segment: 1, .. }) => {}
            other => panic!("expected MissingSegment, got {other:?}"),
        }
        // Not the start of a line: inside one, or past the end.
        for bad in [p(2, 5), p(2, (b.len() + c.len() + 1) as u64)] {
            match JournalReader::open_from(dir.path(), bad) {
                Err(e @ JournalError::NotALineStart { .. }) => {
                    assert!(e.to_string().contains("00000002.jsonl"), "{e}")
                }
                other => panic!("expected NotALineStart for {bad:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn positions_order_like_the_journal() {
        let p = |segment, offset| Position { segment, offset };
        assert!(p(1, 900) < p(2, 0));
        assert!(p(2, 0) < p(2, 1));
        assert_eq!(p(3, 4).max(p(3, 5)), p(3, 5));
    }
}
