//! [`Journal`]: the group-commit writer.
//!
//! Why group commit: inputs arrive by the thousand per second and an `fsync` costs
//! milliseconds, so fsyncing each entry is out of the question, and no source may ever stall on
//! the disk. So [`Journal::append`] only serializes the entry into an in-memory buffer under a
//! mutex, and a dedicated OS thread (not a tokio task: `write` and `fsync` block, and must not
//! occupy a runtime worker) takes the whole buffer every [`JournalOptions::fsync_interval`],
//! writes it to the current segment and fsyncs once for all of it. [`Journal::sync`] asks for
//! such a commit right away and resolves when it is durable.
//!
//! What is durable when:
//! - an appended entry reaches the file (the OS page cache) within one interval, so after that
//!   it survives the process being killed (`kill -9`, panic, OOM);
//! - it survives power loss or a kernel crash only once the commit's `fsync` has returned —
//!   at most one interval plus the fsync time after `append`, or when `sync().await` returns.
//!
//! Failure handling: a write or fsync error is logged, counted in [`JournalStats`], and the
//! unwritten data is kept and retried at the next interval (at most [`MAX_RETAINED_BYTES`];
//! beyond that the oldest entries are dropped, logged and counted). Appends never fail: losing
//! the journal must not take the bridge down with it.
//!
//! Positions: [`Journal::append_then`] tells its callback where the entry will end on disk
//! (segment number and byte offset just after its line), so that a consumer can checkpoint
//! "state up to here" without waiting for the write. That works because the layout is decided
//! under the lock at append time: which segment a line goes to (rotation by size happens
//! there, between lines) and at what offset. The writer thread then follows that plan: it
//! creates exactly the planned segment numbers, and after a write that failed halfway it cuts
//! the partial line off again (the file is opened for appending, so the retry lands where the
//! line belongs). If it ever cannot follow the plan (a planned file exists already, the partial
//! line cannot be cut off, retained data had to be dropped) it carries on as before, logs it,
//! and [`Journal::positions_reliable`] turns false for the rest of the run: positions handed
//! out after that must not be used as checkpoints.

use super::{list_segments, segment_file_name, JournalEntry, JournalError, Position};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Data kept for retry while the disk fails, at most; beyond this the oldest entries go.
pub const MAX_RETAINED_BYTES: usize = 256 * 1024 * 1024;

/// The shortest accepted `fsync_interval`: a zero interval would make the writer thread spin.
const MIN_FSYNC_INTERVAL: Duration = Duration::from_millis(1);

/// How often a persisting write error is logged again (every failure is counted).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Buffers larger than this are not kept for reuse after a burst.
const KEEP_BUFFER_CAPACITY: usize = 4 * 1024 * 1024;

/// Tuning of a [`Journal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalOptions {
    /// How often buffered entries are written and fsynced: the bound on how much a power loss
    /// can take (default 20 ms). Values under 1 ms are treated as 1 ms.
    pub fsync_interval: Duration,
    /// A segment is closed and the next one started once it would grow past this size
    /// (default 64 MiB). Rotation happens between lines only, so a single line larger than
    /// this gets a segment of its own.
    pub segment_max_bytes: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            fsync_interval: Duration::from_millis(20),
            segment_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Counters of a [`Journal`] since it was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Entries accepted by `append` (not counting those refused after `close`).
    pub appended_entries: u64,
    /// Bytes of JSON lines accepted by `append`.
    pub appended_bytes: u64,
    /// Entries written and fsynced.
    pub synced_entries: u64,
    /// Bytes written and fsynced.
    pub synced_bytes: u64,
    /// Failed write, fsync or segment-creation attempts.
    pub write_errors: u64,
    /// Entries lost: dropped because retained data exceeded [`MAX_RETAINED_BYTES`], appended
    /// after `close`, or still unwritten when the final flush at close failed.
    pub dropped_entries: u64,
    /// The segment file currently written.
    pub segment: PathBuf,
    /// Bytes appended but not yet durable (buffered, or kept for retry after an error).
    pub pending_bytes: u64,
}

/// The journal writer. Cheap to clone (all clones share one writer); the writer thread stops
/// and everything is flushed when [`Journal::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Journal {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.handle.shared.dir)
            .finish_non_exhaustive()
    }
}

/// Owned by the `Journal` clones only (the thread holds just [`Shared`]), so that dropping the
/// last clone runs [`Handle::drop`] and stops the thread.
struct Handle {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<Result<(), JournalError>>>>,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    /// Wakes the writer thread early (sync requested, closing).
    wake: Condvar,
    synced_entries: AtomicU64,
    synced_bytes: AtomicU64,
    write_errors: AtomicU64,
    dropped_entries: AtomicU64,
    /// Bytes the writer thread has taken from `State::buf` but not yet made durable.
    retained_bytes: AtomicU64,
    segment: Mutex<PathBuf>,
    /// The writer could not follow the planned layout: positions handed out may be wrong.
    layout_broken: AtomicBool,
}

/// What appenders and the writer thread share under one mutex.
struct State {
    /// Serialized lines waiting for the next commit.
    buf: Vec<u8>,
    /// Number of lines in `buf`.
    buf_entries: u64,
    /// Rotations planned inside `buf`: from byte offset `.0` on, lines go to segment `.1`.
    buf_cuts: Vec<(usize, u64)>,
    /// The planned layout: the segment the next line goes to, and its size so far.
    plan_segment: u64,
    plan_size: u64,
    /// `JournalOptions::segment_max_bytes` (at least 1).
    max_bytes: u64,
    appended_entries: u64,
    appended_bytes: u64,
    /// `sync()` calls waiting for the next commit.
    waiters: Vec<oneshot::Sender<Result<(), JournalError>>>,
    /// The writer thread holds data not yet durable (kept for retry, or being written).
    writer_dirty: bool,
    /// `close()` was called: the writer does its final commit and exits.
    closing: bool,
    /// The final commit has taken the buffer: later appends cannot be written.
    closed: bool,
}

thread_local! {
    /// Per-thread serialization buffer, so that `append` serializes outside the mutex (less
    /// contention between sources) without allocating each time.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One entry as a JSON line, in this thread's recycled buffer (outside the journal lock).
fn serialize(entry: &JournalEntry) -> Vec<u8> {
    let mut line = SCRATCH
        .try_with(|s| std::mem::take(&mut *s.borrow_mut()))
        .unwrap_or_default();
    line.clear();
    entry.write_json_line(&mut line);
    line
}

/// Lock ignoring poisoning: a panic in an `append_then` callback must not make the journal
/// unusable (the buffer is consistent: it is only extended by whole lines before `then` runs).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    /// Opens the journal in `dir` (created if needed) and starts its writer thread.
    ///
    /// Always starts a *new* segment, numbered one past the highest `NNNNNNNN.jsonl` in `dir`:
    /// a previous run may have died mid-line, and its torn last line must stay at the end of
    /// its own file rather than be glued to our first entry.
    pub fn open(dir: &Path, opts: JournalOptions) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| JournalError::io(dir, e))?;
        let next = list_segments(dir)?
            .segments
            .last()
            .map_or(1, |(n, _)| n + 1);
        let segment = Segment::create(dir, next)?;
        tracing::info!(segment = %segment.path.display(), "journal: opened new segment");

        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                buf: Vec::with_capacity(64 * 1024),
                buf_entries: 0,
                buf_cuts: Vec::new(),
                plan_segment: segment.number,
                plan_size: 0,
                max_bytes: opts.segment_max_bytes.max(1),
                appended_entries: 0,
                appended_bytes: 0,
                waiters: Vec::new(),
                writer_dirty: false,
                closing: false,
                closed: false,
            }),
            wake: Condvar::new(),
            synced_entries: AtomicU64::new(0),
            synced_bytes: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            dropped_entries: AtomicU64::new(0),
            retained_bytes: AtomicU64::new(0),
            segment: Mutex::new(segment.path.clone()),
            layout_broken: AtomicBool::new(false),
        });
        let interval = opts.fsync_interval.max(MIN_FSYNC_INTERVAL);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || Writer::new(thread_shared, segment, interval).run())
            .map_err(|e| JournalError::io(dir, e))?;
        Ok(Journal {
            handle: Arc::new(Handle {
                shared,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.handle.shared.dir
    }

    /// Queues `entry` for the next commit. Never waits for the disk.
    pub fn append(&self, entry: &JournalEntry) {
        self.push_then(serialize(entry), |_| ());
    }

    /// Queues `entry` and runs `then` while still holding the journal's lock.
    ///
    /// This is how a source forwards an input to its consumer *in journal order*: when two
    /// threads append concurrently, the one whose entry comes first in the journal also runs
    /// its `then` first, so e.g. pushing into a channel inside `then` gives the consumer the
    /// entries in exactly the order a replay of the journal will. Keep `then` short (it
    /// blocks every other appender) and never append to the same journal from inside it
    /// (that deadlocks).
    ///
    /// `then` receives the entry itself (it was serialised before the lock was taken), so a
    /// caller can forward it without a copy, and the position just after the entry's line (see
    /// the module docs): where a replay that has handled this entry continues. It is durable
    /// once a later [`Journal::sync`] returns, and only meaningful while
    /// [`Journal::positions_reliable`] holds.
    ///
    /// After [`Journal::close`] the entry is dropped (logged, counted) but `then` still runs,
    /// with `None`.
    pub fn append_then<R>(
        &self,
        entry: JournalEntry,
        then: impl FnOnce(JournalEntry, Option<Position>) -> R,
    ) -> R {
        let line = serialize(&entry);
        self.push_then(line, move |end| then(entry, end))
    }

    /// Appends one serialised line under the lock (planning where it lands), runs `then` with
    /// that position, and recycles the buffer.
    fn push_then<R>(&self, line: Vec<u8>, then: impl FnOnce(Option<Position>) -> R) -> R {
        let shared = &self.handle.shared;
        let result = {
            let mut st = lock(&shared.state);
            let end = if st.closed {
                let first = shared.dropped_entries.fetch_add(1, Ordering::Relaxed) == 0;
                if first {
                    tracing::error!("journal: append after close; entry dropped");
                }
                None
            } else if line.is_empty() {
                None
            } else {
                let len = line.len() as u64;
                // Rotation between lines: a line that would take the segment past its size
                // starts the next one (a line larger than a whole segment gets one of its own).
                if st.plan_size > 0 && st.plan_size + len > st.max_bytes {
                    st.plan_segment += 1;
                    st.plan_size = 0;
                    let (at, segment) = (st.buf.len(), st.plan_segment);
                    st.buf_cuts.push((at, segment));
                }
                st.plan_size += len;
                st.buf.extend_from_slice(&line);
                st.buf_entries += 1;
                st.appended_entries += 1;
                st.appended_bytes += len;
                Some(Position {
                    segment: st.plan_segment,
                    offset: st.plan_size,
                })
            };
            then(end)
        };

        if line.capacity() <= KEEP_BUFFER_CAPACITY {
            let _ = SCRATCH.try_with(|s| *s.borrow_mut() = line);
        }
        result
    }

    /// False once the writer could not lay the journal out as planned (see the module docs):
    /// positions from [`Journal::append_then`] may then be wrong and must not be stored as
    /// checkpoints. Stays false for the rest of the run.
    pub fn positions_reliable(&self) -> bool {
        !self.handle.shared.layout_broken.load(Ordering::Relaxed)
    }

    /// Resolves once everything appended before the call is written and fsynced; asks the
    /// writer thread to commit now instead of at the end of its interval.
    ///
    /// Does not block the calling runtime thread: the writer thread answers through a oneshot
    /// channel. Fails with the I/O error if that commit failed (the data is kept and retried),
    /// or with [`JournalError::Closed`] after [`Journal::close`].
    pub async fn sync(&self) -> Result<(), JournalError> {
        let shared = &self.handle.shared;
        let rx = {
            let mut st = lock(&shared.state);
            if st.closing || st.closed {
                return Err(JournalError::Closed);
            }
            if st.buf.is_empty() && !st.writer_dirty {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push(tx);
            rx
        };
        shared.wake.notify_all();
        rx.await.unwrap_or(Err(JournalError::Closed))
    }

    /// Writes and fsyncs everything appended so far, then stops the writer thread.
    ///
    /// Idempotent: later calls return `Ok(())`. Blocks the calling thread for the final commit
    /// (one write and fsync), so call it from shutdown code, or via `spawn_blocking` on a busy
    /// runtime. Also run (best effort, errors logged) when the last clone is dropped.
    pub fn close(&self) -> Result<(), JournalError> {
        self.handle.close()
    }

    /// Counters and the current segment.
    pub fn stats(&self) -> JournalStats {
        let shared = &self.handle.shared;
        let (appended_entries, appended_bytes, buffered) = {
            let st = lock(&shared.state);
            (st.appended_entries, st.appended_bytes, st.buf.len() as u64)
        };
        JournalStats {
            appended_entries,
            appended_bytes,
            synced_entries: shared.synced_entries.load(Ordering::Relaxed),
            synced_bytes: shared.synced_bytes.load(Ordering::Relaxed),
            write_errors: shared.write_errors.load(Ordering::Relaxed),
            dropped_entries: shared.dropped_entries.load(Ordering::Relaxed),
            segment: lock(&shared.segment).clone(),
            pending_bytes: buffered + shared.retained_bytes.load(Ordering::Relaxed),
        }
    }
}

impl Handle {
    fn close(&self) -> Result<(), JournalError> {
        let Some(thread) = lock(&self.thread).take() else {
            return Ok(());
        };
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_all();
        match thread.join() {
            Ok(result) => result,
            Err(_) => {
                tracing::error!("journal: writer thread panicked");
                Err(JournalError::Closed)
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "journal: final flush on drop failed");
        }
    }
}

/// The segment file being written.
struct Segment {
    dir: PathBuf,
    number: u64,
    path: PathBuf,
    /// `None` after a failed rotation: the next write creates the planned segment first.
    file: Option<File>,
    /// Bytes in the file, all of them whole lines (a partial line is cut off again at once).
    size: u64,
    /// Bytes were written since the last successful fsync.
    needs_fsync: bool,
}

/// Why [`Segment::open`] gave another number than asked for, or failed.
enum OpenOutcome {
    /// The asked-for number.
    Planned,
    /// That file existed already (another process, or leftovers): the next free number.
    Elsewhere,
}

impl Segment {
    /// Creates segment `number` (or the next free number if another process raced us),
    /// never opening an existing file.
    fn create(dir: &Path, number: u64) -> Result<Segment, JournalError> {
        let mut segment = Segment {
            dir: dir.to_path_buf(),
            number: 0,
            path: PathBuf::new(),
            file: None,
            size: 0,
            needs_fsync: false,
        };
        segment.open(number)?;
        Ok(segment)
    }

    /// Fsyncs and leaves the current file, and creates segment `number`, or the next free
    /// number after it when that file exists. Files are opened for appending: after a write
    /// that failed halfway and was cut back, the retry lands right after the last whole line.
    fn open(&mut self, number: u64) -> Result<OpenOutcome, JournalError> {
        self.fsync()?;
        let mut n = number;
        let (file, path) = loop {
            let path = self.dir.join(segment_file_name(n));
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < number + 1000 => {
                    n += 1;
                }
                Err(e) => return Err(JournalError::io(path, e)),
            }
        };
        // Make the new directory entry durable too, or a power loss could lose the whole file.
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "journal: could not fsync directory");
        }
        self.file = Some(file);
        self.number = n;
        self.path = path;
        self.size = 0;
        self.needs_fsync = false;
        Ok(if n == number {
            OpenOutcome::Planned
        } else {
            OpenOutcome::Elsewhere
        })
    }

    fn fsync(&mut self) -> Result<(), JournalError> {
        if let (Some(file), true) = (&self.file, self.needs_fsync) {
            file.sync_data()
                .map_err(|e| JournalError::io(&self.path, e))?;
            self.needs_fsync = false;
        }
        Ok(())
    }

    /// Writes `data` (whole lines) to the open file. Returns how many bytes are done with
    /// (always a line boundary), and the error that stopped it. When a write fails after part
    /// of a line, that part is cut off the file again (`set_len`), so that the file still ends
    /// with a whole line and the retry goes exactly where it was planned; `Err(true)` in the
    /// second place means that cut failed too (the file now ends with a torn line).
    fn write_whole(&mut self, data: &[u8]) -> (usize, Result<(), (JournalError, bool)>) {
        let Some(file) = self.file.as_mut() else {
            let e = io::Error::new(io::ErrorKind::NotFound, "segment not open");
            return (0, Err((JournalError::io(&self.path, e), false)));
        };
        let mut written = 0;
        let mut error = None;
        while written < data.len() {
            match file.write(&data[written..]) {
                Ok(0) => {
                    error = Some(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes"));
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if written > 0 {
            self.needs_fsync = true;
        }
        let Some(e) = error else {
            self.size += written as u64;
            return (written, Ok(()));
        };
        // Done up to the last complete line; a partial line is cut off again.
        let complete = memchr::memrchr(b'\n', &data[..written]).map_or(0, |i| i + 1);
        self.size += complete as u64;
        let torn = complete < written && file.set_len(self.size).is_err();
        (complete, Err((JournalError::io(&self.path, e), torn)))
    }
}

/// The writer thread's own state.
struct Writer {
    shared: Arc<Shared>,
    segment: Segment,
    interval: Duration,
    /// Lines taken from the shared buffer and not yet made durable.
    pending: Vec<u8>,
    pending_entries: u64,
    /// How much of `pending` is written (but perhaps not fsynced); whole lines only.
    written: usize,
    /// Planned rotations in `pending` (offset, segment), in order; see `State::buf_cuts`.
    cuts: VecDeque<(usize, u64)>,
    /// The segment the next unwritten byte of `pending` is planned for.
    target: u64,
    /// A planned rotation was reached and no new file is open for it yet.
    rotate_due: bool,
    spare: Vec<u8>,
    failing_since: Option<Instant>,
    last_error_log: Option<Instant>,
}

impl Writer {
    fn new(shared: Arc<Shared>, segment: Segment, interval: Duration) -> Self {
        Writer {
            shared,
            target: segment.number,
            rotate_due: false,
            segment,
            interval,
            pending: Vec::new(),
            pending_entries: 0,
            written: 0,
            cuts: VecDeque::new(),
            spare: Vec::with_capacity(64 * 1024),
            failing_since: None,
            last_error_log: None,
        }
    }

    fn run(mut self) -> Result<(), JournalError> {
        let mut deadline = Instant::now() + self.interval;
        loop {
            let (closing, waiters, entries, cuts) = {
                let mut st = lock(&self.shared.state);
                while !st.closing && st.waiters.is_empty() {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    st = self
                        .shared
                        .wake
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                std::mem::swap(&mut st.buf, &mut self.spare);
                let entries = std::mem::take(&mut st.buf_entries);
                let cuts = std::mem::take(&mut st.buf_cuts);
                if !self.spare.is_empty() {
                    st.writer_dirty = true;
                }
                if st.closing {
                    st.closed = true;
                }
                (st.closing, std::mem::take(&mut st.waiters), entries, cuts)
            };
            deadline = Instant::now() + self.interval;

            self.take_spare(entries, cuts);
            let result = self.commit();

            lock(&self.shared.state).writer_dirty =
                !self.pending.is_empty() || self.segment.needs_fsync;
            for waiter in waiters {
                let answer = match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(copy_error(e)),
                };
                let _ = waiter.send(answer);
            }

            if closing {
                if self.pending_entries > 0 {
                    tracing::error!(
                        entries = self.pending_entries,
                        bytes = self.pending.len(),
                        "journal: closing with unwritten entries; they are lost"
                    );
                    self.shared
                        .dropped_entries
                        .fetch_add(self.pending_entries, Ordering::Relaxed);
                    self.shared.retained_bytes.store(0, Ordering::Relaxed);
                }
                if result.is_ok() {
                    tracing::info!(segment = %self.segment.path.display(), "journal: closed");
                }
                return result;
            }
        }
    }

    /// Moves what was just swapped out of the shared buffer (now in `spare`) to `pending`,
    /// with its planned rotations, dropping the oldest lines if too much piles up while the
    /// disk fails.
    fn take_spare(&mut self, entries: u64, cuts: Vec<(usize, u64)>) {
        let base = self.pending.len();
        self.cuts
            .extend(cuts.into_iter().map(|(at, segment)| (base + at, segment)));
        if self.pending.is_empty() {
            std::mem::swap(&mut self.pending, &mut self.spare);
        } else {
            self.pending.extend_from_slice(&self.spare);
            self.spare.clear();
        }
        if self.spare.capacity() > KEEP_BUFFER_CAPACITY {
            self.spare = Vec::with_capacity(64 * 1024);
        }
        self.pending_entries += entries;

        let written_before = self.written;
        let (bytes, lines) = drop_oldest(&mut self.pending, &mut self.written, MAX_RETAINED_BYTES);
        if lines > 0 {
            // Rotations planned inside the dropped part: the rest continues in the last one.
            while let Some(&(at, segment)) = self.cuts.front() {
                if at > bytes {
                    break;
                }
                self.target = segment;
                self.rotate_due = true;
                self.cuts.pop_front();
            }
            for cut in self.cuts.iter_mut() {
                cut.0 -= bytes;
            }
            if bytes > written_before {
                self.layout_broken("unwritten entries were dropped");
            }
            self.pending_entries = self.pending_entries.saturating_sub(lines);
            self.shared
                .dropped_entries
                .fetch_add(lines, Ordering::Relaxed);
            tracing::error!(
                entries = lines,
                bytes,
                limit = MAX_RETAINED_BYTES,
                "journal: too much unwritten data; dropped the oldest entries"
            );
        }
        self.shared
            .retained_bytes
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }

    /// The layout no longer follows the plan: positions handed out from now on may be wrong.
    fn layout_broken(&self, why: &str) {
        if !self.shared.layout_broken.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "journal: {why}; entry positions are no longer exact, so no checkpoint will be \
                 taken until the next start"
            );
        }
    }

    /// Writes the unwritten part of `pending` into the planned segments, opening each planned
    /// segment where its first line starts. On error, the rest is kept for the next try.
    fn write_pending(&mut self) -> Result<(), JournalError> {
        while self.written < self.pending.len() {
            while let Some(&(at, segment)) = self.cuts.front() {
                if at > self.written {
                    break;
                }
                self.target = segment;
                self.rotate_due = true;
                self.cuts.pop_front();
            }
            let end = self.cuts.front().map_or(self.pending.len(), |c| c.0);
            if self.segment.file.is_none() || self.segment.number != self.target || self.rotate_due
            {
                let broken = self.shared.layout_broken.load(Ordering::Relaxed);
                // Off plan, numbers must still only grow, or readers would reorder the files.
                let want = if broken {
                    self.target.max(self.segment.number + 1)
                } else {
                    self.target
                };
                let outcome = self.segment.open(want)?;
                if let OpenOutcome::Elsewhere = outcome {
                    self.layout_broken(&format!(
                        "segment {want} existed already, so this run wrote {} instead",
                        self.segment.number
                    ));
                }
                self.target = self.segment.number;
                self.rotate_due = false;
                tracing::info!(segment = %self.segment.path.display(), "journal: started next segment");
            }
            let (done, result) = self.segment.write_whole(&self.pending[self.written..end]);
            self.written += done;
            if let Err((e, torn)) = result {
                if torn {
                    // The file ends with part of a line: the rest goes to a new file, and the
                    // torn tail stays harmless (readers skip it with a warning).
                    self.layout_broken("a partial line could not be cut off after a failed write");
                    self.segment.file = None;
                    self.target = self.segment.number + 1;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes the unwritten part of `pending` and fsyncs. On success `pending` is emptied.
    fn commit(&mut self) -> Result<(), JournalError> {
        let result = self.write_pending();
        let result = result.and_then(|()| self.segment.fsync());
        {
            let mut current = lock(&self.shared.segment);
            if *current != self.segment.path {
                current.clone_from(&self.segment.path);
            }
        }
        match &result {
            Ok(()) => {
                self.shared
                    .synced_entries
                    .fetch_add(self.pending_entries, Ordering::Relaxed);
                self.shared
                    .synced_bytes
                    .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
                self.pending.clear();
                self.pending_entries = 0;
                self.written = 0;
                if self.pending.capacity() > KEEP_BUFFER_CAPACITY {
                    self.pending = Vec::new();
                }
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        after = ?since.elapsed(),
                        "journal: writing works again"
                    );
                }
            }
            Err(e) => {
                self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                self.failing_since.get_or_insert(now);
                let log_now = self
                    .last_error_log
                    .map_or(true, |at| now.duration_since(at) >= ERROR_LOG_EVERY);
                if log_now {
                    self.last_error_log = Some(now);
                    tracing::error!(
                        error = %e,
                        retained_bytes = self.pending.len(),
                        "journal: write failed; keeping the data to retry"
                    );
                }
            }
        }
        self.shared
            .retained_bytes
            .store(self.pending.len() as u64, Ordering::Relaxed);
        result
    }
}

impl Drop for Writer {
    /// Runs on a normal exit and if the thread panics: either way nothing will write again, so
    /// refuse further appends and release pending `sync()` calls (they get `Closed`) rather
    /// than leave them waiting forever.
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        st.closing = true;
        st.closed = true;
        st.waiters.clear();
    }
}

/// Drops whole lines from the front of `pending` until it holds at most `cap` bytes; adjusts
/// `written` (the already-written prefix). Returns the bytes and lines dropped.
fn drop_oldest(pending: &mut Vec<u8>, written: &mut usize, cap: usize) -> (usize, u64) {
    if pending.len() <= cap {
        return (0, 0);
    }
    let excess = pending.len() - cap;
    let cut = memchr::memchr(b'\n', &pending[excess - 1..]).map_or(pending.len(), |i| excess + i);
    let lines = memchr::memchr_iter(b'\n', &pending[..cut]).count() as u64;
    pending.drain(..cut);
    *written = written.saturating_sub(cut);
    (cut, lines)
}

/// The writer's error, re-created for each `sync()` waiter (`io::Error` is not `Clone`).
fn copy_error(e: &JournalError) -> JournalError {
    match e {
        JournalError::Io { path, source } => JournalError::Io {
            path: path.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        JournalError::BadLine { reason } => JournalError::BadLine {
            reason: reason.clone(),
        },
        JournalError::Closed => JournalError::Closed,
        JournalError::MissingSegment { dir, segment } => JournalError::MissingSegment {
            dir: dir.clone(),
            segment: *segment,
        },
        JournalError::NotALineStart { path, offset } => JournalError::NotALineStart {
            path: path.clone(),
            offset: *offset,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::AmiMessage;
    use crate::journal::{Input, JournalReader};
    use chrono::{DateTime, Utc};

    fn phone(i: usize) -> JournalEntry {
        JournalEntry::new(
            DateTime::<Utc>::from_timestamp_micros(1_795_000_000_000_000 + i as i64).unwrap(),
            Input::Phone {
                peer: "127.0.0.1".into(),
                target: format!("/action-url/incoming_call?call_id={i}"),
            },
        )
    }

    fn ami(i: usize) -> JournalEntry {
        JournalEntry::new(
            DateTime::<Utc>::from_timestamp_micros(1_795_000_000_000_000 + i as i64).unwrap(),
            Input::Ami {
                pbx: "default".into(),
                msg: AmiMessage::event("Newchannel")
                    .field("Uniqueid", format!("1700000000.{i}"))
                    .field("CallerIDName", "Zoë \"Q\" \\ Müller")
                    .build()
                    .unwrap(),
            },
        )
    }

    fn read_all(path: &Path) -> (Vec<crate::journal::JournalRecord>, Vec<String>) {
        let mut reader = JournalReader::open(path).unwrap();
        let records = reader.by_ref().map(|r| r.unwrap()).collect();
        (records, reader.warnings().to_vec())
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn handles_and_sync_futures_cross_threads() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        send_sync(&journal);
        send(journal.sync()); // can be awaited inside tokio::spawn
    }

    #[tokio::test]
    async fn append_sync_read_back_then_second_open_starts_segment_two() {
        let dir = tempfile::tempdir().unwrap();
        let opts = JournalOptions {
            // Long enough that only sync() can have written the data.
            fsync_interval: Duration::from_secs(3600),
            ..JournalOptions::default()
        };
        let first: Vec<JournalEntry> = (0..100)
            .map(|i| if i % 2 == 0 { ami(i) } else { phone(i) })
            .collect();
        let journal = Journal::open(dir.path(), opts.clone()).unwrap();
        for e in &first {
            journal.append(e);
        }
        assert!(journal.stats().pending_bytes > 0);
        journal.sync().await.unwrap();
        let stats = journal.stats();
        assert_eq!(stats.appended_entries, 100);
        assert_eq!(stats.synced_entries, 100);
        assert_eq!(stats.synced_bytes, stats.appended_bytes);
        assert_eq!(stats.pending_bytes, 0);
        assert_eq!(stats.segment, dir.path().join("00000001.jsonl"));
        // Read while the journal is still open: sync() alone made it visible.
        let (records, warnings) = read_all(dir.path());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            records.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
            first
        );
        assert!(records.iter().all(|r| r.position.segment == 1));
        assert_eq!(records[0].position.offset, 0);
        assert!(records.windows(2).all(|w| w[0].position < w[1].position));
        journal.close().unwrap();
        journal.close().unwrap(); // idempotent
        assert!(matches!(journal.sync().await, Err(JournalError::Closed)));

        let second: Vec<JournalEntry> = (100..150).map(phone).collect();
        let journal = Journal::open(dir.path(), opts).unwrap();
        assert_eq!(journal.stats().segment, dir.path().join("00000002.jsonl"));
        for e in &second {
            journal.append(e);
        }
        drop(journal); // close on drop of the last handle
        assert_eq!(files(dir.path()), ["00000001.jsonl", "00000002.jsonl"]);

        let (records, warnings) = read_all(dir.path());
        assert!(warnings.is_empty(), "{warnings:?}");
        let expected: Vec<JournalEntry> = first.iter().chain(&second).cloned().collect();
        assert_eq!(
            records.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
            expected
        );
        assert_eq!(
            records[100].position,
            crate::journal::Position {
                segment: 2,
                offset: 0
            }
        );
    }

    #[test]
    fn interval_commit_writes_without_sync() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(
            dir.path(),
            JournalOptions {
                fsync_interval: Duration::from_millis(5),
                ..JournalOptions::default()
            },
        )
        .unwrap();
        journal.append(&phone(1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while journal.stats().synced_entries < 1 {
            assert!(Instant::now() < deadline, "entry never committed");
            std::thread::sleep(Duration::from_millis(5));
        }
        let (records, _) = read_all(dir.path());
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].entry, phone(1));
    }

    #[test]
    fn rotation_loses_and_duplicates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let line_len = ami(0).to_json_line().len() as u64;
        let journal = Journal::open(
            dir.path(),
            JournalOptions {
                fsync_interval: Duration::from_millis(1),
                segment_max_bytes: line_len * 3 + 5,
            },
        )
        .unwrap();
        let entries: Vec<JournalEntry> = (0..40).map(ami).collect();
        for (i, e) in entries.iter().enumerate() {
            journal.append(e);
            if i % 7 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        journal.close().unwrap();
        let names = files(dir.path());
        assert!(names.len() >= 10, "expected rotation, got {names:?}");
        for name in &names {
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= line_len * 3 + 5, "{name} is {len} bytes");
            let text = std::fs::read(dir.path().join(name)).unwrap();
            assert_eq!(text.last(), Some(&b'\n'), "{name} ends between lines");
        }
        let (records, warnings) = read_all(dir.path());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            records.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
            entries
        );
        assert!(records.windows(2).all(|w| w[0].position < w[1].position));
    }

    #[test]
    fn oversized_line_gets_its_own_segment() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(
            dir.path(),
            JournalOptions {
                fsync_interval: Duration::from_secs(3600),
                segment_max_bytes: 10,
            },
        )
        .unwrap();
        for i in 0..3 {
            journal.append(&phone(i));
        }
        journal.close().unwrap();
        assert_eq!(files(dir.path()).len(), 3);
        let (records, _) = read_all(dir.path());
        assert_eq!(records.len(), 3);
    }

    #[test]
    fn append_then_order_is_journal_order() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(
            dir.path(),
            JournalOptions {
                fsync_interval: Duration::from_millis(1),
                // Rotations while eight threads append: positions must still be exact.
                segment_max_bytes: 16 * 1024,
            },
        )
        .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let start = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let journal = journal.clone();
                let seen = Arc::clone(&seen);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..500 {
                        let e = phone(t * 1000 + i);
                        let r = journal.append_then(e, |forwarded, end| {
                            // A consumer hand-off that takes a moment: gives other threads
                            // every chance to overtake if `then` ran outside the lock.
                            std::thread::yield_now();
                            seen.lock().unwrap().push((forwarded, end.unwrap()));
                            i
                        });
                        assert_eq!(r, i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(journal.positions_reliable());
        journal.close().unwrap();
        // Each entry was handed over with exactly where the reader finds its end.
        let mut reader = JournalReader::open(dir.path()).unwrap();
        let mut read = Vec::new();
        while let Some(r) = reader.next() {
            read.push((r.unwrap().entry, reader.position().unwrap()));
        }
        let seen = seen.lock().unwrap();
        assert_eq!(read.len(), 4000);
        assert!(read.last().unwrap().1.segment > 5, "rotated");
        assert!(
            *seen == read,
            "consumer order or positions differ from the journal"
        );
    }

    #[tokio::test]
    async fn positions_follow_rotation_and_oversized_lines() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(
            dir.path(),
            JournalOptions {
                fsync_interval: Duration::from_secs(3600),
                segment_max_bytes: 400,
            },
        )
        .unwrap();
        let big = JournalEntry::new(
            phone(0).t,
            Input::Phone {
                peer: "127.0.0.1".into(),
                target: format!("/action-url/x?{}", "y".repeat(1000)),
            },
        );
        let mut ends = Vec::new();
        for e in [phone(1), phone(2), big, phone(3), ami(4), phone(5)] {
            ends.push(journal.append_then(e, |_, end| end.unwrap()));
        }
        journal.sync().await.unwrap();
        journal.close().unwrap();
        let mut reader = JournalReader::open(dir.path()).unwrap();
        let mut read = Vec::new();
        while let Some(r) = reader.next() {
            r.unwrap();
            read.push(reader.position().unwrap());
        }
        assert_eq!(read, ends);
        // The oversized line has a segment of its own, ending past the size limit.
        assert!(ends[2].offset > 400 && ends[1].segment < ends[2].segment);
        assert!(ends[3].segment > ends[2].segment);
        assert!(ends.iter().all(|p| p.offset > 0));
    }

    #[tokio::test]
    async fn a_planned_segment_that_exists_already_makes_positions_unreliable() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(
            dir.path(),
            JournalOptions {
                fsync_interval: Duration::from_secs(3600),
                segment_max_bytes: 1,
            },
        )
        .unwrap();
        journal.append(&phone(1));
        journal.sync().await.unwrap();
        assert!(journal.positions_reliable());
        // Someone else's file where our next segment was planned.
        std::fs::write(dir.path().join(segment_file_name(2)), b"").unwrap();
        journal.append(&phone(2));
        journal.append(&phone(3));
        journal.sync().await.unwrap();
        assert!(!journal.positions_reliable());
        journal.close().unwrap();
        // Nothing is lost, nothing reordered: the rest went to the next free numbers.
        let (records, _) = read_all(dir.path());
        let entries: Vec<JournalEntry> = records.iter().map(|r| r.entry.clone()).collect();
        assert_eq!(entries, [phone(1), phone(2), phone(3)]);
        assert_eq!(files(dir.path()).len(), 4);
    }

    #[test]
    fn append_after_close_is_dropped_but_then_runs() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        journal.append(&phone(1));
        journal.close().unwrap();
        assert_eq!(
            journal.append_then(phone(2), |_, end| end.map_or(7, |_| 0)),
            7
        );
        let stats = journal.stats();
        assert_eq!(stats.appended_entries, 1);
        assert_eq!(stats.synced_entries, 1);
        assert_eq!(stats.dropped_entries, 1);
        let (records, _) = read_all(dir.path());
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn open_skips_past_the_highest_segment_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00000007.jsonl"), b"").unwrap();
        std::fs::write(dir.path().join("capture.jsonl"), b"").unwrap();
        std::fs::write(dir.path().join("00000009.txt"), b"").unwrap();
        let journal = Journal::open(&dir.path().join("."), JournalOptions::default()).unwrap();
        assert!(journal.stats().segment.ends_with("00000008.jsonl"));
        journal.close().unwrap();
        // Created if missing, nested.
        let nested = dir.path().join("a/b");
        let journal = Journal::open(&nested, JournalOptions::default()).unwrap();
        assert_eq!(journal.stats().segment, nested.join("00000001.jsonl"));
    }

    #[tokio::test]
    async fn failed_rotation_is_counted_reported_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("journal");
        // Every line needs a segment of its own, so each commit must create a file.
        let journal = Journal::open(
            &jdir,
            JournalOptions {
                fsync_interval: Duration::from_secs(3600),
                segment_max_bytes: 1,
            },
        )
        .unwrap();
        journal.append(&phone(1));
        journal.sync().await.unwrap();
        // The directory vanishes: creating the next segment fails.
        std::fs::remove_dir_all(&jdir).unwrap();
        journal.append(&phone(2));
        let err = journal.sync().await.unwrap_err();
        assert!(
            matches!(&err, JournalError::Io { path, .. } if path.starts_with(&jdir)),
            "{err}"
        );
        let stats = journal.stats();
        assert_eq!(stats.write_errors, 1);
        assert_eq!(stats.synced_entries, 1);
        assert!(stats.pending_bytes > 0);
        // It comes back: the kept entry is written, once.
        std::fs::create_dir(&jdir).unwrap();
        journal.sync().await.unwrap();
        let stats = journal.stats();
        assert_eq!((stats.synced_entries, stats.pending_bytes), (2, 0));
        journal.close().unwrap();
        let (records, _) = read_all(&jdir);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].entry, phone(2));
        assert_eq!(records[0].position.segment, 2);
    }

    #[test]
    fn failed_write_keeps_the_data_for_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        // A segment whose file is read-only: every write fails until it is replaced.
        let path = dir.path().join(segment_file_name(1));
        let mut segment = Segment {
            dir: dir.path().to_path_buf(),
            number: 1,
            path: path.clone(),
            file: Some(File::create(&path).and_then(|_| File::open(&path)).unwrap()),
            size: 0,
            needs_fsync: false,
        };
        let data = [phone(1).to_json_line(), phone(2).to_json_line()].concat();
        let (done, result) = segment.write_whole(&data);
        assert_eq!(done, 0);
        assert!(
            matches!(result, Err((JournalError::Io { .. }, false))),
            "{result:?}"
        );
        // Retry after the file becomes writable: everything arrives, once.
        segment.file = Some(OpenOptions::new().append(true).open(&path).unwrap());
        let (done, result) = segment.write_whole(&data);
        result.unwrap();
        assert_eq!(done, data.len());
        assert_eq!(segment.size, data.len() as u64);
        segment.fsync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn drop_oldest_keeps_whole_newest_lines() {
        let mut pending = b"aaaa\nbb\ncccccc\nd\n".to_vec();
        let mut written = 8;
        assert_eq!(drop_oldest(&mut pending, &mut written, 100), (0, 0));
        // 17 bytes, cap 10: must drop >= 7 bytes, at a line boundary: "aaaa\nbb\n".
        assert_eq!(drop_oldest(&mut pending, &mut written, 10), (8, 2));
        assert_eq!(pending, b"cccccc\nd\n");
        assert_eq!(written, 0);
        // Cut exactly at a boundary.
        let mut pending = b"ab\ncd\n".to_vec();
        let mut written = 0;
        assert_eq!(drop_oldest(&mut pending, &mut written, 3), (3, 1));
        assert_eq!(pending, b"cd\n");
        // Everything.
        assert_eq!(drop_oldest(&mut pending, &mut written, 0), (3, 1));
        assert!(pending.is_empty());
    }
}
