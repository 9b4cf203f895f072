//! `ctibridge serve`: sources → [`Ingest`] (journal, then forward) → correlator → store.
//!
//! Sources: one AMI client per `[[pbx]]`, and the HTTP server's Action URL receiver. One
//! task owns the [`Correlator`] and reads inputs in journal order; completed call records
//! go to the [`Store`].
//!
//! On start, before any source runs, the state is recovered: from the last checkpoint (the
//! correlator's state saved in the store with the journal position it covers) when it is
//! usable, by replaying only the journal after that position; otherwise by replaying the
//! whole journal. Records completed in the replayed part are upserted (idempotent by id, so
//! nothing is duplicated), and calls still live at its end stay live in the correlator. Each
//! AMI client then journals a gap from the last time the journal saw its PBX, so the first
//! resync closes the calls that ended while the bridge was down. Nothing is lost across a
//! restart. While running, the consumer takes a checkpoint every `journal.checkpoint_interval`
//! and on a clean stop (see [`Checkpointer`] and `docs/ARCHITECTURE.md`, "Restart"); the
//! [`writer`] task stores them and the completed records, in order, so the consumer never
//! waits on the database.

use crate::ami::{AmiClient, AmiClientOptions, AmiHandle, AmiMessage};
use crate::config::Settings;
use crate::correlator::{
    orphans_from_json, Correlator, CorrelatorConfig, CorrelatorSnapshot, OrphanCallback, Output,
    SNAPSHOT_VERSION,
};
use crate::http::action_url::{CallbackPolicy, CallbackStats};
use crate::http::auth::TokenSet;
use crate::http::AppState;
use crate::ingest::{Ingest, Journaled};
use crate::journal::{
    truncate_to_micros, Input, Journal, JournalEntry, JournalOptions, JournalReader, Position,
};
use crate::phone::client::ActiveUriClient;
use crate::phone::registry::PhoneRegistry;
use crate::record::CallRecord;
use crate::store::{RestartPoint, Store};
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, VecDeque};

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use writer::{PendingCheckpoint, StoreWriter, WriteOp, WriterFlags};

mod writer;

/// The consumer lets the HTTP and AMI tasks on its worker run after this many inputs
/// (tokio's own budget is 128, about a millisecond of correlator work at full load).
const YIELD_EVERY: u32 = 16;

/// How many unmatched phone callbacks the API keeps (the newest).
pub const ORPHANS_KEPT: usize = 1000;

/// A running service: its AMI links, phones, HTTP address and journal, for status and tests.
pub struct Service {
    pub ami: Vec<AmiHandle>,
    pub journal: Journal,
    pub ingest: Ingest,
    pub phones: PhoneRegistry,
    /// Sends commands to phones (HTTP, or SIP NOTIFY through the first PBX).
    pub active_uri: ActiveUriClient,
    /// Where the HTTP server listens (the bound port when `http.listen` had port 0).
    pub http_addr: SocketAddr,
    pub callback_stats: Arc<CallbackStats>,
    /// Where merged call records are kept.
    pub store: Store,
    /// The latest phone callbacks that matched no call (at most [`ORPHANS_KEPT`]; all of them
    /// stay in the journal).
    pub orphans: Arc<Mutex<VecDeque<OrphanCallback>>>,
    /// Click-to-call and DND (API, PBX user events, two-way DND sync).
    pub control: crate::control::Control,
    /// Live events: numbered, buffered for resuming, fanned out to streams and webhooks.
    pub hub: crate::live::Hub,
    webhooks: crate::webhook::Webhooks,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    consumer: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Service {
    /// Rebuilds state from the journal, opens it for writing, binds the HTTP listener and
    /// starts one AMI client per `[[pbx]]`.
    pub async fn start(settings: &Settings) -> anyhow::Result<Service> {
        let store = Store::open(&settings.storage.url).await.with_context(|| {
            format!(
                "cannot open the store {} (storage.url)",
                settings.storage.url
            )
        })?;
        // Live events are derived from every record update (`live::deriver`), so the
        // service's correlator emits them (offline replay does not need them).
        let mut correlator_config = crate::replay::correlator_config(settings);
        correlator_config.emit_updates = true;
        let recovered = rebuild(correlator_config, &settings.journal.dir, &store).await?;
        let mut correlator = recovered.correlator;
        let last_seen = recovered.last_seen.clone();
        // Phone dials' records get their request id from the live tracker, not the journal.
        let relinked = store.restore_dial_links().await?;
        if relinked > 0 {
            tracing::info!(relinked, "request ids restored on rebuilt records");
        }
        let opts = JournalOptions {
            fsync_interval: settings.journal.fsync_interval,
            segment_max_bytes: settings.journal.segment_max_bytes,
        };
        let journal = Journal::open(&settings.journal.dir, opts).with_context(|| {
            format!(
                "cannot open the journal in {}",
                settings.journal.dir.display()
            )
        })?;
        let (ingest, rx) = Ingest::with_positions(journal.clone(), settings.ingest.queue_capacity);
        let shutdown = CancellationToken::new();
        let mut ami = Vec::new();
        let mut tasks = Vec::new();
        for pbx in &settings.pbx {
            let mut opts = AmiClientOptions::from_settings(pbx);
            opts.unseen_since = last_seen.get(&pbx.name).copied();
            tracing::info!(pbx = %opts.pbx, address = %opts.address, auth = ?opts.auth, "starting AMI client");
            let (handle, task) = AmiClient::spawn(opts, ingest.clone(), shutdown.child_token());
            ami.push(handle);
            tasks.push(task);
        }
        let phones = PhoneRegistry::from_settings(&settings.phones);
        // `outgoing_uri` names the account at the PBX the phones register with.
        let pbx_host = settings
            .pbx
            .first()
            .map(|p| p.host.clone())
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let mut active_uri = ActiveUriClient::new(phones.clone(), &settings.active_uri, pbx_host);
        if let Some(ami) = ami.first() {
            active_uri = active_uri.with_notify(ami.clone());
        }
        let control = crate::control::Control::new(
            settings,
            phones.clone(),
            active_uri.clone(),
            &ami,
            store.clone(),
        );
        // Live event ids continue above every id of earlier runs (webhook idempotency keys).
        let outbox_max = store.outbox_max_event_id().await?.unwrap_or(0);
        let hub = crate::live::Hub::new(crate::live::HubOptions {
            buffer_events: settings.live.buffer_events,
            client_buffer: settings.live.client_buffer,
            first_id: crate::live::hub::first_id_now().max(outbox_max + 1),
        });
        let webhooks = crate::webhook::Webhooks::start(
            &settings.webhooks,
            &hub,
            store.clone(),
            settings.live.webhook_log_retention,
        )
        .await;
        tasks.push(tokio::spawn(crate::live::watch_phones(
            phones.clone(),
            hub.clone(),
            shutdown.child_token(),
        )));
        tasks.push(tokio::spawn(crate::live::forward_dial_status(
            control.subscribe(),
            hub.clone(),
            shutdown.child_token(),
            |s: &crate::control::DialStatus| crate::live::DialMeta {
                at: Some(s.updated_at),
                extension: Some(s.from.clone()),
                call_id: s.record_id.clone(),
            },
        )));
        let callback_stats = Arc::new(CallbackStats::default());
        // The consumer publishes the correlator's sizes here; /metrics reads them.
        let consumer_gauges = Arc::new(crate::metrics::ConsumerGauges::default());
        let ops = Arc::new(crate::metrics::Metrics::new(
            ami.clone(),
            active_uri.clone(),
            consumer_gauges.clone(),
            Some(crate::metrics::WebhookSources {
                stats: webhooks.stats(),
                targets: settings
                    .webhooks
                    .iter()
                    .map(|w| w.effective_name().to_string())
                    .collect(),
            }),
        ));
        // The API's list as of the checkpoint, then what the replay after it found.
        let orphans = Arc::new(Mutex::new(VecDeque::from(recovered.orphans)));
        keep_orphans(&mut correlator, &orphans);
        let listener = crate::http::bind(settings.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (http.listen)", settings.http.listen))?;
        let http_addr = listener.local_addr()?;
        let app = crate::http::router(AppState {
            ingest: ingest.clone(),
            phones: phones.clone(),
            tokens: TokenSet::new(&settings.api.tokens),
            callbacks: Arc::new(CallbackPolicy {
                allowed_networks: settings.action_url.allowed_networks.clone(),
                path_secret: settings.action_url.path_secret.clone(),
            }),
            callback_stats: callback_stats.clone(),
            store: store.clone(),
            orphans: orphans.clone(),
            control: control.clone(),
            live: crate::http::events::LiveHttp {
                hub: hub.clone(),
                keepalive: settings.live.keepalive,
                cut_grace: settings.live.cut_grace,
            },
            ops,
        });
        tasks.push(tokio::spawn(crate::http::serve(
            listener,
            app,
            shutdown.child_token(),
        )));
        tracing::info!(%http_addr, "HTTP listening: Action URL at /action-url/{{event}}, API at /api/v1");
        let flags = Arc::new(WriterFlags::default());
        let (writes, write_queue) = mpsc::channel(writer::QUEUE);
        let writer = tokio::spawn(
            StoreWriter::new(store.clone(), journal.clone(), flags.clone()).run(write_queue),
        );
        let consumer = tokio::spawn(consume(
            rx,
            correlator,
            orphans.clone(),
            control.clone(),
            crate::live::Publisher::new(hub.clone()),
            consumer_gauges,
            Checkpointer {
                interval: settings.journal.checkpoint_interval,
                position: recovered.position,
                last_seen: recovered.last_seen,
                changed: false,
                writes,
                flags,
                writer,
            },
        ));
        Ok(Service {
            ami,
            journal,
            ingest,
            phones,
            active_uri,
            http_addr,
            callback_stats,
            store,
            orphans,
            control,
            hub,
            webhooks,
            tasks,
            consumer,
            shutdown,
        })
    }

    /// Stops the sources, lets the consumer drain, then flushes and fsyncs the journal.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        // Open event streams would hold the HTTP server's graceful shutdown.
        self.hub.end_streams();
        for task in self.tasks {
            let _ = task.await;
        }
        drop(self.ami);
        drop(self.ingest);
        let _ = self.consumer.await;
        // The last events are in the outbox before the store closes.
        self.hub.close();
        self.webhooks.stop().await;
        self.control.flush().await;
        self.journal.sync().await.context("final journal sync")?;
        self.journal.close().context("closing the journal")?;
        self.store.close().await;
        tracing::info!("journal flushed; bye");
        Ok(())
    }
}

/// Runs the service until SIGINT or SIGTERM.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let service = Service::start(&settings).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    service.stop().await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (systemd stop).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// State recovered at start.
struct Recovered {
    correlator: Correlator,
    /// Per PBX, the time of the last AMI input the journal saw: where this run's first gap
    /// starts.
    last_seen: BTreeMap<String, DateTime<Utc>>,
    /// The API's orphan list as of the checkpoint (empty after a full replay, whose orphans
    /// are still in the correlator).
    orphans: Vec<OrphanCallback>,
    /// Just after the last journal entry the state covers.
    position: Option<Position>,
}

/// Recovers the correlator's state from the journal written so far (before this run appends
/// to it): from the last checkpoint when it is usable — its snapshot restored, then only the
/// journal after its position replayed — else by replaying the whole journal, saying why in
/// the log (no checkpoint yet, a snapshot format this build does not read, its segment gone,
/// unreadable). Records completed in what is replayed are upserted. `ctibridge replay` always
/// reads the whole journal.
async fn rebuild(
    config: CorrelatorConfig,
    dir: &std::path::Path,
    store: &Store,
) -> anyhow::Result<Recovered> {
    let started = std::time::Instant::now();
    let emit_updates = config.emit_updates;
    let from_checkpoint = match store.restart_point().await {
        Ok(Some(point)) => match restore(&config, &point, dir) {
            Ok(restored) => Some(restored),
            Err(why) => {
                tracing::warn!(
                    segment = point.checkpoint.segment,
                    offset = point.checkpoint.offset,
                    "checkpoint not usable ({why}): replaying the whole journal"
                );
                None
            }
        },
        Ok(None) => {
            tracing::info!("no checkpoint yet: replaying the whole journal");
            None
        }
        Err(e) => {
            tracing::warn!("checkpoint unreadable ({e}): replaying the whole journal");
            None
        }
    };
    let (mut correlator, mut last_seen, orphans, reader) = match from_checkpoint {
        Some(r) => r,
        None => {
            let reader = if dir.exists() {
                Some(JournalReader::open(dir)?)
            } else {
                None
            };
            (Correlator::new(config), BTreeMap::new(), Vec::new(), reader)
        }
    };
    // Nobody listens to live updates during the replay: do not build them.
    correlator.set_emit_updates(false);
    let mut position = None;
    let mut entries = 0u64;
    if let Some(mut reader) = reader {
        position = reader.position();
        let mut completed = Vec::new();
        for record in reader.by_ref() {
            let entry = record?.entry;
            entries += 1;
            if let Input::Ami { pbx, .. } = &entry.input {
                last_seen.insert(pbx.to_string(), entry.t);
            }
            collect_completed(correlator.handle(&entry), &mut completed);
            if completed.len() >= 500 {
                store.upsert_many(&completed, None).await?;
                completed.clear();
            }
        }
        store.upsert_many(&completed, None).await?;
        for w in reader.warnings() {
            tracing::warn!("journal: {w}");
        }
        position = reader.position().or(position);
    }
    correlator.set_emit_updates(emit_updates);
    tracing::info!(
        entries,
        live_calls = correlator.live_calls(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "state rebuilt from the journal"
    );
    Ok(Recovered {
        correlator,
        last_seen,
        orphans,
        position,
    })
}

/// What a usable checkpoint gives: the restored correlator, PBX times and orphan list, and a
/// reader positioned right after the checkpoint.
type Restored = (
    Correlator,
    BTreeMap<String, DateTime<Utc>>,
    Vec<OrphanCallback>,
    Option<JournalReader>,
);

/// Restores the checkpoint's state, or says why it cannot be used.
fn restore(
    config: &CorrelatorConfig,
    point: &RestartPoint,
    dir: &std::path::Path,
) -> Result<Restored, String> {
    if point.snapshot_version != SNAPSHOT_VERSION {
        return Err(format!(
            "snapshot format {} is not this build's {SNAPSHOT_VERSION}",
            point.snapshot_version
        ));
    }
    let from = Position {
        segment: point.checkpoint.segment,
        offset: point.checkpoint.offset,
    };
    let reader = JournalReader::open_from(dir, from).map_err(|e| e.to_string())?;
    let snapshot = CorrelatorSnapshot::from_json(&point.snapshot).map_err(|e| e.to_string())?;
    let correlator = Correlator::restore(config.clone(), snapshot).map_err(|e| e.to_string())?;
    let orphans = orphans_from_json(&point.orphans).map_err(|e| e.to_string())?;
    tracing::info!(
        segment = from.segment,
        offset = from.offset,
        saved_at = %point.checkpoint.at,
        live_calls = correlator.live_calls(),
        "restarting from the checkpoint: replaying the journal after it"
    );
    Ok((correlator, point.last_seen.clone(), orphans, Some(reader)))
}

/// Decides when to save restart points and takes them: every `journal.checkpoint_interval`
/// and on a clean stop, the correlator's snapshot, the journal position just after the last
/// input it handled, the API's orphan list and the per-PBX last-seen times. The
/// [`StoreWriter`] stores each one, in one transaction with any completed record whose own
/// upsert had failed, after every record queued before it: so a restart from position P finds
/// every record completed before P stored and rebuilds the rest from the journal after P.
///
/// No checkpoint is saved while the journal cannot confirm the position on disk (`sync`
/// failing), and none for the rest of the run once the live consumer missed inputs (ingest
/// overflow) or the journal's positions became unreliable: the live state then lacks inputs
/// the journal has, and the next start must replay them from the last good checkpoint.
struct Checkpointer {
    interval: Duration,
    /// Just after the last journaled input handled.
    position: Option<Position>,
    last_seen: BTreeMap<String, DateTime<Utc>>,
    /// Something happened since the last checkpoint (an input, or outputs of a tick).
    changed: bool,
    /// To the store writer: completed records and checkpoints, in order.
    writes: mpsc::Sender<WriteOp>,
    flags: Arc<WriterFlags>,
    /// The store writer task (see [`writer`]).
    writer: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    fn input(&mut self, journaled: &Journaled) {
        self.changed = true;
        match journaled.end {
            Some(end) => self.position = Some(end),
            None => self
                .flags
                .suspend("the live consumer missed inputs (ingest queue overflow)"),
        }
        if let Input::Ami { pbx, .. } = &journaled.entry.input {
            self.last_seen.insert(pbx.to_string(), journaled.entry.t);
        }
    }

    /// Queues a completed record for the store. Waits only while the writer's queue is full.
    async fn record(&mut self, record: CallRecord) {
        tracing::info!(target: "ctibridge::calls", id = %record.id, direction = ?record.direction, disposition = ?record.disposition, "call completed");
        if self
            .writes
            .send(WriteOp::Record(Box::new(record)))
            .await
            .is_err()
        {
            tracing::error!("the store writer has stopped: a completed record is not stored");
        }
    }

    /// Takes a checkpoint now (if anything changed) and queues it for the writer.
    async fn save(&mut self, correlator: &Correlator, orphans: &Mutex<VecDeque<OrphanCallback>>) {
        let Some(position) = self.position else {
            return;
        };
        let retry = self.flags.retry.swap(false, Ordering::SeqCst);
        if self.flags.is_suspended() || !(self.changed || retry) {
            return;
        }
        let orphans = {
            let kept = orphans.lock().unwrap_or_else(|p| p.into_inner());
            kept.iter().cloned().collect::<Vec<_>>()
        };
        let point = PendingCheckpoint {
            position,
            snapshot: correlator.snapshot(),
            orphans,
            last_seen: self.last_seen.clone(),
        };
        self.changed = false;
        if self
            .writes
            .send(WriteOp::Checkpoint(Box::new(point)))
            .await
            .is_err()
        {
            tracing::error!("the store writer has stopped: checkpoint not saved");
        }
    }

    /// Lets the writer go and waits until it has written everything queued.
    async fn finish(self) {
        drop(self.writes);
        let _ = self.writer.await;
    }

    /// Waits until everything queued so far is written.
    #[cfg(test)]
    async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.writes.send(WriteOp::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

fn collect_completed(outputs: Vec<Output>, into: &mut Vec<crate::record::CallRecord>) {
    for output in outputs {
        if let Output::CallCompleted(record) = output {
            into.push(record);
        }
    }
}

/// The one task that owns the correlator: inputs in journal order, a tick every second for
/// completions, completed records and checkpoints to the store writer (which it waits for
/// at the end).
async fn consume(
    mut rx: mpsc::Receiver<Journaled>,
    mut correlator: Correlator,
    orphans: Arc<Mutex<VecDeque<OrphanCallback>>>,
    control: crate::control::Control,
    mut live: crate::live::Publisher,
    gauges: Arc<crate::metrics::ConsumerGauges>,
    mut checkpoints: Checkpointer,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checkpoint = tokio::time::interval_at(
        tokio::time::Instant::now() + checkpoints.interval,
        checkpoints.interval,
    );
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut handled = 0u32;
    loop {
        handled = handled.wrapping_add(1);
        if handled % YIELD_EVERY == 0 {
            tokio::task::yield_now().await;
        }
        let outputs = tokio::select! {
            entry = rx.recv() => match entry {
                None => break,
                Some(journaled) => {
                    checkpoints.input(&journaled);
                    let entry = journaled.entry;
                    log_input(&entry);
                    control.on_input(&entry);
                    live.input(&entry);
                    gauges.input_done();
                    // The receiver's parse, shared (the correlator keeps it as it is).
                    correlator.handle_parsed(&entry, journaled.callback)
                }
            },
            _ = tick.tick() => correlator.tick(truncate_to_micros(Utc::now())),
            _ = checkpoint.tick() => {
                checkpoints.save(&correlator, &orphans).await;
                continue;
            }
        };
        if !outputs.is_empty() {
            checkpoints.changed = true;
        }
        let mut outputs = outputs;
        control.on_outputs(&mut outputs);
        live.outputs(&outputs);
        let mut completed = Vec::new();
        collect_completed(outputs, &mut completed);
        for record in completed {
            checkpoints.record(record).await;
        }
        gauges.add_orphans(keep_orphans(&mut correlator, &orphans));
        gauges.observe(&correlator);
    }
    // Clean stop: the inputs are all handled; the next start continues from here. The
    // writer ends once it has written everything queued.
    checkpoints.save(&correlator, &orphans).await;
    checkpoints.finish().await;
}

/// Moves new orphan callbacks out of the correlator into the API's bounded list. Draining
/// (rather than copying the whole list) keeps a flood of unmatched callbacks linear.
/// Returns how many were moved.
fn keep_orphans(correlator: &mut Correlator, orphans: &Mutex<VecDeque<OrphanCallback>>) -> usize {
    let new = correlator.take_orphans();
    let n = new.len();
    if n == 0 {
        return 0;
    }
    let mut kept = orphans.lock().unwrap_or_else(|p| p.into_inner());
    for orphan in new {
        if kept.len() == ORPHANS_KEPT {
            kept.pop_front();
        }
        kept.push_back(orphan);
    }
    n
}

/// A debug line per call event, a warning per gap.
fn log_input(entry: &JournalEntry) {
    match &entry.input {
        Input::Ami { pbx, msg } => {
            if let Some(line) = call_event_summary(msg) {
                tracing::debug!(target: "ctibridge::calls", %pbx, "{line}");
            }
        }
        Input::Gap {
            pbx,
            from,
            to,
            reason,
        } => {
            tracing::warn!(target: "ctibridge::calls", %pbx, %from, %to, %reason, "gap: events in this period were not seen");
        }
        Input::Phone { .. } => {}
    }
}

/// The events that follow a call (ami.md §2), summarised on one line; `None` for the rest.
pub fn call_event_summary(msg: &AmiMessage) -> Option<String> {
    let event = msg.event_name()?;
    let get = |k| msg.get(k).unwrap_or("");
    let line = match event {
        "Newchannel" => format!(
            "Newchannel {} from {} to {} ({})",
            get("Channel"),
            get("CallerIDNum"),
            get("Exten"),
            get("Uniqueid")
        ),
        "Newstate" => format!("Newstate {} {}", get("Channel"), get("ChannelStateDesc")),
        "DialBegin" => format!(
            "DialBegin {} -> {} ({})",
            get("Channel"),
            get("DestChannel"),
            get("DialString")
        ),
        "DialEnd" => format!(
            "DialEnd {} -> {} {}",
            get("Channel"),
            get("DestChannel"),
            get("DialStatus")
        ),
        "BridgeEnter" | "BridgeLeave" => format!(
            "{event} {} bridge {}",
            get("Channel"),
            get("BridgeUniqueid")
        ),
        "Hold" | "Unhold" => format!("{event} {}", get("Channel")),
        "BlindTransfer" => format!(
            "BlindTransfer by {} of {} to {} ({})",
            get("TransfererChannel"),
            get("TransfereeChannel"),
            get("Extension"),
            get("Result")
        ),
        "AttendedTransfer" => format!(
            "AttendedTransfer by {} to {} ({})",
            get("OrigTransfererChannel"),
            get("SecondTransfererChannel"),
            get("Result")
        ),
        "Hangup" => format!(
            "Hangup {} cause {} ({})",
            get("Channel"),
            get("Cause"),
            get("Cause-txt")
        ),
        "OriginateResponse" => format!(
            "OriginateResponse {} {} reason {}",
            get("Channel"),
            get("Response"),
            get("Reason")
        ),
        "CoreShowChannel" => format!(
            "CoreShowChannel {} {} ({})",
            get("Channel"),
            get("ChannelStateDesc"),
            get("Uniqueid")
        ),
        _ => return None,
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_the_call_facts() {
        let m = AmiMessage::event("Hangup")
            .field("Channel", "PJSIP/101-00000001")
            .field("Cause", "16")
            .field("Cause-txt", "Normal Clearing")
            .build()
            .unwrap();
        assert_eq!(
            call_event_summary(&m).unwrap(),
            "Hangup PJSIP/101-00000001 cause 16 (Normal Clearing)"
        );
        let varset = AmiMessage::event("VarSet").build().unwrap();
        assert!(call_event_summary(&varset).is_none());
    }

    /// The checkpointer saves what the consumer handled, at the position after it, and stops
    /// for good once an input arrives that is not in the journal (an ingest overflow gap).
    #[tokio::test]
    async fn checkpoints_follow_the_inputs_and_stop_after_an_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let store = Store::open("sqlite::memory:").await.unwrap();
        let (ingest, mut rx) = Ingest::with_positions(journal.clone(), 16);
        let mut checkpoints = checkpointer(&store, &journal);
        let orphans = Mutex::new(VecDeque::new());
        let mut correlator = Correlator::new(CorrelatorConfig::default());
        let t = truncate_to_micros(Utc::now());
        let msg = AmiMessage::event("Newchannel")
            .field("Channel", "PJSIP/101-00000001")
            .field("Uniqueid", "1.1")
            .field("Linkedid", "1.1")
            .build()
            .unwrap();
        ingest.submit(JournalEntry::new(
            t,
            Input::Ami {
                pbx: "pbx-a".into(),
                msg,
            },
        ));
        let j = rx.recv().await.unwrap();
        checkpoints.input(&j);
        correlator.handle(&j.entry);
        checkpoints.save(&correlator, &orphans).await;
        checkpoints.flush().await;
        let point = store.restart_point().await.unwrap().expect("saved");
        let end = j.end.unwrap();
        assert_eq!(
            (point.checkpoint.segment, point.checkpoint.offset),
            (end.segment, end.offset)
        );
        assert_eq!(point.last_seen.get("pbx-a"), Some(&t));
        assert_eq!(
            CorrelatorSnapshot::from_json(&point.snapshot)
                .unwrap()
                .live_calls(),
            1
        );

        // A live-only input (what an overflow gap is): no more checkpoints this run.
        let gap = Journaled {
            entry: JournalEntry::new(
                t,
                Input::Gap {
                    pbx: crate::ingest::ALL_SOURCES.into(),
                    from: t,
                    to: t,
                    reason: "consumer overflow: 3 inputs not processed live".into(),
                },
            ),
            end: None,
            callback: None,
        };
        checkpoints.input(&gap);
        correlator.handle(&gap.entry);
        ingest.submit(JournalEntry::new(
            t,
            Input::Phone {
                peer: "127.0.0.1".into(),
                target: "/action-url/dnd_on".into(),
            },
        ));
        let j = rx.recv().await.unwrap();
        checkpoints.input(&j);
        checkpoints.save(&correlator, &orphans).await;
        checkpoints.flush().await;
        let still = store.restart_point().await.unwrap().unwrap();
        assert_eq!(still.checkpoint, point.checkpoint, "no checkpoint after it");
        checkpoints.finish().await;
        journal.close().unwrap();
    }

    /// A checkpointer and its running store writer, as the service wires them.
    fn checkpointer(store: &Store, journal: &Journal) -> Checkpointer {
        let flags = Arc::new(WriterFlags::default());
        let (writes, queue) = mpsc::channel(writer::QUEUE);
        let writer = tokio::spawn(
            StoreWriter::new(store.clone(), journal.clone(), flags.clone()).run(queue),
        );
        Checkpointer {
            interval: Duration::from_secs(10),
            position: None,
            last_seen: BTreeMap::new(),
            changed: false,
            writes,
            flags,
            writer,
        }
    }

    /// Records completed before a checkpoint are stored when the checkpoint is, many per
    /// transaction, and every one of them: the writer batches but drops nothing, and ends
    /// after writing what was queued once the consumer lets go.
    #[tokio::test]
    async fn the_writer_stores_every_record_before_the_checkpoint_that_follows_them() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let store = Store::open("sqlite::memory:").await.unwrap();
        let (ingest, mut rx) = Ingest::with_positions(journal.clone(), 16);
        let mut checkpoints = checkpointer(&store, &journal);
        let scenario = crate::sim::fixtures::embedded_scenario("answered_caller_hangup").unwrap();
        let mut correlator = Correlator::new(CorrelatorConfig::default());
        let t = truncate_to_micros(Utc::now());
        let mut ids = Vec::new();
        for g in 0..600u64 {
            for m in scenario.instantiate(g) {
                for out in correlator.handle(&JournalEntry::new(
                    t,
                    Input::Ami {
                        pbx: "pbx-a".into(),
                        msg: m.msg,
                    },
                )) {
                    if let Output::CallCompleted(record) = out {
                        ids.push(record.id.clone());
                        checkpoints.record(record).await;
                    }
                }
            }
        }
        for out in correlator.finish() {
            if let Output::CallCompleted(record) = out {
                ids.push(record.id.clone());
                checkpoints.record(record).await;
            }
        }
        assert_eq!(ids.len(), 600, "one record per call");
        // A journaled input gives the checkpoint its position; the checkpoint follows the
        // records in the queue, so once it is stored they all are.
        ingest.submit(JournalEntry::new(
            t,
            Input::Phone {
                peer: "127.0.0.1".into(),
                target: "/action-url/dnd_on".into(),
            },
        ));
        checkpoints.input(&rx.recv().await.unwrap());
        checkpoints
            .save(&correlator, &Mutex::new(VecDeque::new()))
            .await;
        checkpoints.finish().await;
        assert!(store.restart_point().await.unwrap().is_some());
        for id in &ids {
            assert!(store.get(id).await.unwrap().is_some(), "{id} stored");
        }
        journal.close().unwrap();
    }
}
