//! Operations: `GET /metrics` (Prometheus) and `GET /readyz` ([`readiness`]).
//!
//! # Why a hand-written exposition writer
//! The metrics endpoint speaks the Prometheus text format 0.0.4, which every Prometheus
//! version and most agents read. The maintained official Rust client, `prometheus-client`,
//! encodes OpenMetrics text only (`# EOF`, counters declared without their `_total`), which
//! is a different content type. More to the point, almost every number here already lives as
//! an atomic counter in the module that owns it (the AMI client, the journal, ingest, the
//! Action URL receiver, the Active URI client, the webhook workers); a registry crate would
//! need a custom collector copying them at scrape time anyway, i.e. this module plus a
//! dependency. What is left — escaping, family grouping, float formatting, one histogram —
//! is small and tested in [`exposition`] and [`histogram`].
//!
//! # Cost
//! Nothing is computed per event for metrics beyond those existing atomic adds. The consumer
//! task publishes its correlator's sizes through [`ConsumerGauges`] (a few relaxed stores
//! per input). HTTP latency is one [`histogram::HttpLatency::observe`] per request. A scrape
//! reads the atomics, asks the store for each webhook target's backlog (two index lookups per
//! target), and writes ~35 KB of text.
//!
//! # Labels
//! Every label set is bounded by the configuration or the code: `pbx` (configured PBXs),
//! `event` (the typed Action URL events plus `other`), `result`, `vendor`, `route` (route
//! templates, never raw paths), `status` (class: `2xx`, …) and `target` (configured webhook
//! targets).

pub mod exposition;
pub mod histogram;
pub mod readiness;

use crate::ami::AmiHandle;
use crate::correlator::Correlator;
use crate::http::action_url::{CallbackResult, CallbackStats};
use crate::ingest::Ingest;
use crate::phone::client::ActiveUriClient;
use crate::phone::vendor::vendor_name;
use crate::store::Store;
use crate::webhook::WebhookStats;
use chrono::{DateTime, Utc};
use exposition::{Exposition, Kind};
use histogram::HttpLatency;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a scrape waits for the webhook backlog from the store before leaving it out.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads one counter of an AMI link.
type AmiCounter = fn(&crate::ami::client::AmiStats) -> u64;

/// What the consumer task (the one that owns the correlator) publishes after each input or
/// tick, so that scrapes never touch the correlator itself.
#[derive(Debug, Default)]
pub struct ConsumerGauges {
    inputs: AtomicU64,
    live_calls: AtomicU64,
    pending_callbacks: AtomicU64,
    orphans: AtomicU64,
}

impl ConsumerGauges {
    /// One journal entry (or live-only gap) was handed to the correlator.
    pub fn input_done(&self) {
        self.inputs.fetch_add(1, Ordering::Relaxed);
    }

    /// The correlator's sizes after an input or tick.
    pub fn observe(&self, correlator: &Correlator) {
        self.live_calls
            .store(correlator.live_calls() as u64, Ordering::Relaxed);
        self.pending_callbacks
            .store(correlator.pending_callbacks() as u64, Ordering::Relaxed);
    }

    /// `n` phone callbacks matched no call.
    pub fn add_orphans(&self, n: usize) {
        self.orphans.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The webhook machinery, as metrics see it.
pub struct WebhookSources {
    pub stats: Arc<WebhookStats>,
    /// The configured targets' names (as in the outbox), for the backlog per target.
    pub targets: Vec<String>,
}

/// The metrics registry of a running service: the sources not otherwise reachable from the
/// HTTP state, and the HTTP latency histograms. The Ingest (with its journal) and the
/// callback counters are passed to [`Metrics::render`] from the HTTP state, so this holds no
/// clone of the ingest channel (which would keep the consumer from ever ending).
pub struct Metrics {
    ami: Vec<AmiHandle>,
    active_uri: ActiveUriClient,
    consumer: Arc<ConsumerGauges>,
    webhooks: Option<WebhookSources>,
    /// HTTP request latency, recorded by `http::ops::track_latency`.
    pub http: HttpLatency,
    started_at: DateTime<Utc>,
}

impl Metrics {
    /// A registry over these sources; `webhooks` is `None` when no webhook machinery runs.
    pub fn new(
        ami: Vec<AmiHandle>,
        active_uri: ActiveUriClient,
        consumer: Arc<ConsumerGauges>,
        webhooks: Option<WebhookSources>,
    ) -> Metrics {
        Metrics {
            ami,
            active_uri,
            consumer,
            webhooks,
            http: HttpLatency::default(),
            started_at: Utc::now(),
        }
    }

    /// The AMI links (for the readiness check).
    pub fn ami(&self) -> &[AmiHandle] {
        &self.ami
    }

    /// The whole exposition. The webhook backlog is read from `store`; if that fails or
    /// takes longer than a second, its two families are left out (and the failure logged).
    pub async fn render(
        &self,
        ingest: &Ingest,
        callbacks: &CallbackStats,
        store: &Store,
    ) -> String {
        let backlog = match &self.webhooks {
            Some(w) if !w.targets.is_empty() => {
                match tokio::time::timeout(BACKLOG_TIMEOUT, webhook_backlog(store, &w.targets))
                    .await
                {
                    Ok(Ok(backlog)) => Some(backlog),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "metrics: cannot read the webhook backlog");
                        None
                    }
                    Err(_) => {
                        tracing::warn!("metrics: the webhook backlog query took over 1 s");
                        None
                    }
                }
            }
            _ => None,
        };
        let mut out = Exposition::with_capacity(48 * 1024);
        self.process(&mut out);
        self.ami_links(&mut out);
        journal_and_ingest(&mut out, ingest);
        self.correlator(&mut out, ingest);
        phone_callbacks(&mut out, callbacks);
        self.active_uri_requests(&mut out);
        self.webhook_deliveries(&mut out, backlog.as_deref());
        self.http.write(
            &mut out,
            "ctibridge_http_request_duration_seconds",
            "HTTP request latency to the response head, by route template and status class.",
        );
        out.finish()
    }

    fn process(&self, out: &mut Exposition) {
        out.family(
            "ctibridge_build_info",
            Kind::Gauge,
            "Always 1; the version of the running binary.",
        )
        .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1u64);
        out.family(
            "ctibridge_start_time_seconds",
            Kind::Gauge,
            "When the service started, in seconds since the Unix epoch.",
        )
        .sample(&[], unix_seconds(self.started_at));
    }

    fn ami_links(&self, out: &mut Exposition) {
        let links: Vec<_> = self
            .ami
            .iter()
            .map(|h| (h.pbx().clone(), h.status(), h.stats()))
            .collect();
        let mut f = out.family(
            "ctibridge_ami_connected",
            Kind::Gauge,
            "1 while the AMI link to the PBX is logged in and resynchronised, else 0.",
        );
        for (pbx, status, _) in &links {
            f.sample(&[("pbx", pbx)], status.up);
        }
        let mut f = out.family(
            "ctibridge_ami_state_since_timestamp_seconds",
            Kind::Gauge,
            "When the AMI link last went up or down, in seconds since the Unix epoch.",
        );
        for (pbx, status, _) in &links {
            f.sample(&[("pbx", pbx)], unix_seconds(status.since));
        }
        let counters: [(&'static str, &str, AmiCounter); 6] = [
            (
                "ctibridge_ami_messages_total",
                "AMI messages received (rate() gives messages per second).",
                |s| s.messages.load(Ordering::Relaxed),
            ),
            (
                "ctibridge_ami_malformed_total",
                "AMI frames skipped as malformed or oversized.",
                |s| s.malformed.load(Ordering::Relaxed),
            ),
            (
                "ctibridge_ami_logins_total",
                "Successful AMI logins (sessions).",
                |s| s.sessions.load(Ordering::Relaxed),
            ),
            (
                "ctibridge_ami_reconnects_total",
                "Successful AMI logins after the first: reconnects after a lost link.",
                |s| s.sessions.load(Ordering::Relaxed).saturating_sub(1),
            ),
            (
                "ctibridge_ami_connect_failures_total",
                "AMI connection attempts that failed before login (refused, timed out, no banner).",
                |s| s.connect_failures.load(Ordering::Relaxed),
            ),
            (
                "ctibridge_ami_gaps_total",
                "Periods the bridge could not see, journaled as gap markers after a resync.",
                |s| s.gaps.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, get) in counters {
            let mut f = out.family(name, Kind::Counter, help);
            for (pbx, _, stats) in &links {
                f.sample(&[("pbx", pbx)], get(stats));
            }
        }
    }

    fn correlator(&self, out: &mut Exposition, ingest: &Ingest) {
        let c = &self.consumer;
        let inputs = c.inputs.load(Ordering::Relaxed);
        let stats = ingest.stats();
        let sent =
            stats.forwarded.load(Ordering::Relaxed) + stats.overflow_gaps.load(Ordering::Relaxed);
        out.family(
            "ctibridge_consumer_inputs_total",
            Kind::Counter,
            "Inputs the correlator has processed.",
        )
        .sample(&[], inputs);
        out.family(
            "ctibridge_consumer_backlog",
            Kind::Gauge,
            "Inputs forwarded to the correlator and not yet processed.",
        )
        .sample(&[], sent.saturating_sub(inputs));
        out.family(
            "ctibridge_live_calls",
            Kind::Gauge,
            "Conversations the correlator holds: live, or ended and waiting for the grace period.",
        )
        .sample(&[], c.live_calls.load(Ordering::Relaxed));
        out.family(
            "ctibridge_pending_phone_callbacks",
            Kind::Gauge,
            "Phone callbacks waiting for their call's AMI events.",
        )
        .sample(&[], c.pending_callbacks.load(Ordering::Relaxed));
        out.family(
            "ctibridge_orphan_phone_callbacks_total",
            Kind::Counter,
            "Phone callbacks that matched no call (listed at /api/v1/orphans).",
        )
        .sample(&[], c.orphans.load(Ordering::Relaxed));
    }

    fn active_uri_requests(&self, out: &mut Exposition) {
        let stats = self.active_uri.stats();
        let mut f = out.family(
            "ctibridge_active_uri_requests_total",
            Kind::Counter,
            "Commands to phones: HTTP requests (each attempt and Digest answer), SIP NOTIFYs, \
             and commands refused before any request, by vendor and result.",
        );
        for (vendor, result, n) in &stats.counts {
            f.sample(
                &[
                    ("vendor", vendor_name(*vendor)),
                    ("result", result.as_str()),
                ],
                *n,
            );
        }
    }

    fn webhook_deliveries(&self, out: &mut Exposition, backlog: Option<&[Backlog]>) {
        let Some(sources) = &self.webhooks else {
            return;
        };
        let w = &sources.stats;
        let counters: [(&'static str, &str, &AtomicU64); 5] = [
            (
                "ctibridge_webhook_enqueued_total",
                "Webhook deliveries written to the outbox (one per event and matching target).",
                &w.enqueued,
            ),
            (
                "ctibridge_webhook_delivered_total",
                "Webhook deliveries acknowledged with a 2xx.",
                &w.delivered,
            ),
            (
                "ctibridge_webhook_failed_attempts_total",
                "Webhook delivery attempts that failed (non-2xx, refused, timed out).",
                &w.failed_attempts,
            ),
            (
                "ctibridge_webhook_given_up_total",
                "Webhook deliveries given up after max_attempts.",
                &w.given_up,
            ),
            (
                "ctibridge_webhook_outbox_write_failures_total",
                "Events that could not be written to the webhook outbox (store failing).",
                &w.write_failures,
            ),
        ];
        for (name, help, counter) in counters {
            out.family(name, Kind::Counter, help)
                .sample(&[], counter.load(Ordering::Relaxed));
        }
        let Some(backlog) = backlog else { return };
        let mut f = out.family(
            "ctibridge_webhook_pending",
            Kind::Gauge,
            "Webhook lag: deliveries in the outbox not yet acknowledged or given up, per target.",
        );
        for b in backlog {
            f.sample(&[("target", &b.target)], b.pending);
        }
        let now = Utc::now();
        let mut f = out.family(
            "ctibridge_webhook_oldest_pending_age_seconds",
            Kind::Gauge,
            "Webhook lag: age of the oldest pending delivery per target (0 when none is pending).",
        );
        for b in backlog {
            let age = b.oldest.map_or(0.0, |t| {
                ((now - t).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0)
            });
            f.sample(&[("target", &b.target)], age);
        }
    }
}

/// One webhook target's pending deliveries.
struct Backlog {
    target: String,
    pending: u64,
    /// When the oldest pending delivery was written to the outbox.
    oldest: Option<DateTime<Utc>>,
}

/// Each target's pending deliveries, read through the store's pool (read-only SQL, as
/// [`Store::pool`] allows). Both lookups use the outbox's `(target, state, event_id)` index:
/// a count over the target's pending range, and its first row (the lowest event id, written
/// first) — so a large backlog costs an index range count, not a row read per delivery.
async fn webhook_backlog(store: &Store, targets: &[String]) -> Result<Vec<Backlog>, sqlx::Error> {
    let mut out = Vec::with_capacity(targets.len());
    for target in targets {
        let row: (i64, Option<String>) = sqlx::query_as(
            "SELECT COUNT(*), \
                    (SELECT created_at FROM webhook_outbox \
                     WHERE target = ?1 AND state = 'pending' ORDER BY event_id LIMIT 1) \
             FROM webhook_outbox WHERE target = ?1 AND state = 'pending'",
        )
        .bind(target)
        .fetch_one(store.pool())
        .await?;
        out.push(Backlog {
            target: target.clone(),
            pending: u64::try_from(row.0).unwrap_or(0),
            oldest: row
                .1
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc)),
        });
    }
    Ok(out)
}

fn journal_and_ingest(out: &mut Exposition, ingest: &Ingest) {
    let j = ingest.journal().stats();
    let counters: [(&'static str, &str, u64); 6] = [
        (
            "ctibridge_journal_appended_entries_total",
            "Journal entries appended (buffered for the next group commit).",
            j.appended_entries,
        ),
        (
            "ctibridge_journal_appended_bytes_total",
            "Journal bytes appended.",
            j.appended_bytes,
        ),
        (
            "ctibridge_journal_synced_entries_total",
            "Journal entries written and fsynced.",
            j.synced_entries,
        ),
        (
            "ctibridge_journal_synced_bytes_total",
            "Journal bytes written and fsynced.",
            j.synced_bytes,
        ),
        (
            "ctibridge_journal_write_errors_total",
            "Failed journal write, fsync or segment-creation attempts (the data is retried).",
            j.write_errors,
        ),
        (
            "ctibridge_journal_dropped_entries_total",
            "Journal entries lost (retry buffer over its limit, or appended after close).",
            j.dropped_entries,
        ),
    ];
    for (name, help, v) in counters {
        out.family(name, Kind::Counter, help).sample(&[], v);
    }
    out.family(
        "ctibridge_journal_unsynced_entries",
        Kind::Gauge,
        "Journal lag: entries appended but not yet fsynced.",
    )
    .sample(
        &[],
        j.appended_entries
            .saturating_sub(j.synced_entries + j.dropped_entries),
    );
    out.family(
        "ctibridge_journal_unsynced_bytes",
        Kind::Gauge,
        "Journal lag: bytes appended but not yet durable (buffered, or kept for retry).",
    )
    .sample(&[], j.pending_bytes);

    let s = ingest.stats();
    let counters: [(&'static str, &str, &AtomicU64); 3] = [
        (
            "ctibridge_ingest_forwarded_total",
            "Inputs forwarded to the correlator after journaling.",
            &s.forwarded,
        ),
        (
            "ctibridge_ingest_dropped_total",
            "Inputs the correlator missed live because its queue was full (they stay journaled).",
            &s.dropped,
        ),
        (
            "ctibridge_ingest_overflow_gaps_total",
            "Live-only gap markers sent to the correlator after queue overflows.",
            &s.overflow_gaps,
        ),
    ];
    for (name, help, counter) in counters {
        out.family(name, Kind::Counter, help)
            .sample(&[], counter.load(Ordering::Relaxed));
    }
}

fn phone_callbacks(out: &mut Exposition, callbacks: &CallbackStats) {
    let per_event = callbacks.per_event();
    let mut f = out.family(
        "ctibridge_phone_callbacks_total",
        Kind::Counter,
        "Phone callbacks (Action URL requests) by event and result: accepted (journaled, 200), \
         forbidden_network or forbidden_secret (403). Unknown event names count as \"other\".",
    );
    for counts in &per_event {
        for (i, result) in CallbackResult::ALL.iter().enumerate() {
            f.sample(
                &[("event", counts.event), ("result", result.as_str())],
                counts.results[i],
            );
        }
    }
    let mut f = out.family(
        "ctibridge_phone_callbacks_with_problems_total",
        Kind::Counter,
        "Accepted phone callbacks whose query had problems (bad escapes, invalid UTF-8, …); \
         also counted as accepted.",
    );
    for counts in &per_event {
        f.sample(&[("event", counts.event)], counts.with_problems);
    }
}

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}
