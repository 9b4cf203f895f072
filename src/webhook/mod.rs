//! Webhooks: live events POSTed to `[[webhooks]]` targets, durably, signed, in order per call.
//!
//! ```text
//!  Hub ──sink queue──▶ writer ──one transaction per batch──▶ outbox (store)
//!                        └──"new rows"──▶ worker per target ──POST──▶ target
//!                                            └──attempt log, outcome──▶ outbox (store)
//! ```
//!
//! - **Outbox first.** The writer takes events from the hub (a durable sink, never cut off),
//!   writes one row per matching target in one transaction, and only then tells the targets'
//!   workers. A row is delivered until a 2xx or `max_attempts`, across restarts: a worker
//!   starts by loading its target's pending rows. The only events that a `kill -9` can lose
//!   are those published but not yet committed (the writer batches what is queued, so this is
//!   the few milliseconds of one transaction).
//! - **At least once, idempotent.** Every attempt carries the event id (`X-Ctibridge-Event-Id`
//!   and `Idempotency-Key`) and its attempt number; a receiver that sees an id again (a retry
//!   after a lost response, a redelivery after a crash) acknowledges it without acting twice.
//! - **Back-off.** A failed attempt (non-2xx, refused, timed out) is retried after
//!   `retry_initial` doubling per attempt up to `retry_max`, with equal jitter (`[d/2, d]`),
//!   or after the target's `Retry-After` when that is longer (capped the same way).
//! - **Order.** Events with the same order key — the call id, or `ext:<extension>` for an
//!   event about one phone — reach a target in event order: a later one waits until the
//!   earlier one is delivered or given up ([`queue::Queue`]). Other calls do not wait.
//! - **Isolation.** One worker per target, each attempt bounded by the target's `timeout`, an
//!   HTTP client per target: a dead or black-hole target only ever holds its own deliveries.

pub mod queue;
pub mod sign;

use crate::config::WebhookSettings;
use crate::live::{Filter, Hub, Published};
use crate::store::{AttemptResult, DeliveryState, NewDelivery, Store};
use chrono::{DateTime, TimeDelta, Utc};
use queue::{Item, Queue};
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Pending deliveries a worker holds in memory (the rest waits in the outbox).
const WINDOW: usize = 2000;
/// Events the writer takes from the hub per transaction, at most.
const WRITE_BATCH: usize = 512;
/// Events waiting for the writer before the hub drops them for it (see `live::hub`).
const SINK_CAPACITY: usize = 65_536;
/// How often finished deliveries older than the retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Deliveries written to the outbox.
    pub enqueued: AtomicU64,
    /// Deliveries acknowledged (2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed (and will be retried, or were the last one).
    pub failed_attempts: AtomicU64,
    /// Deliveries given up after `max_attempts`.
    pub given_up: AtomicU64,
    /// Events the writer could not write to the outbox (store failing).
    pub write_failures: AtomicU64,
}

/// A configured target.
#[derive(Debug)]
struct Target {
    name: String,
    settings: WebhookSettings,
    filter: Filter,
}

/// The running webhook machinery.
pub struct Webhooks {
    writer: tokio::task::JoinHandle<()>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    pruner: tokio::task::JoinHandle<()>,
    stop_workers: CancellationToken,
    stats: Arc<WebhookStats>,
}

impl Webhooks {
    /// Starts the outbox writer (a sink of `hub`) and one worker per target. With no targets
    /// nothing is started and events are not written anywhere.
    pub async fn start(
        targets: &[WebhookSettings],
        hub: &Hub,
        store: Store,
        retention: Duration,
    ) -> Webhooks {
        let stats = Arc::new(WebhookStats::default());
        let stop_workers = CancellationToken::new();
        let targets: Vec<Arc<Target>> = targets
            .iter()
            .map(|s| {
                Arc::new(Target {
                    name: s.effective_name().to_string(),
                    filter: Filter::parse(Some(&s.events.join(",")), Some(&s.extensions.join(",")))
                        .unwrap_or_default(),
                    settings: s.clone(),
                })
            })
            .collect();
        let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        match store.outbox_abandon_other_targets(&names, Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                n,
                "webhook deliveries to targets no longer configured were given up"
            ),
            Err(e) => tracing::error!(error = %e, "cannot check the outbox for removed targets"),
        }
        let mut workers = Vec::new();
        let mut feeds = Vec::new();
        for target in &targets {
            let (tx, rx) = mpsc::unbounded_channel();
            feeds.push((target.clone(), tx));
            workers.push(tokio::spawn(worker(
                target.clone(),
                store.clone(),
                rx,
                stats.clone(),
                stop_workers.clone(),
            )));
        }
        let writer = if targets.is_empty() {
            tokio::spawn(async {})
        } else {
            let rx = hub.add_sink("webhooks", SINK_CAPACITY);
            tokio::spawn(writer(rx, store.clone(), feeds, stats.clone()))
        };
        let pruner = tokio::spawn(prune_loop(store, retention, stop_workers.clone()));
        if !targets.is_empty() {
            tracing::info!(targets = ?names, "webhooks: delivering live events");
        }
        Webhooks {
            writer,
            workers,
            pruner,
            stop_workers,
            stats,
        }
    }

    pub fn stats(&self) -> Arc<WebhookStats> {
        self.stats.clone()
    }

    /// Waits until the writer has written everything the hub gave it (call after
    /// [`Hub::close`]), then stops the workers; deliveries in flight are abandoned and
    /// retried at the next start (same event id, so receivers see a duplicate at worst).
    pub async fn stop(self) {
        let _ = self.writer.await;
        self.stop_workers.cancel();
        for w in self.workers {
            let _ = w.await;
        }
        let _ = self.pruner.await;
    }
}

/// The ordering key of an event: its call, else the one phone it concerns.
fn order_key(p: &Published) -> Option<String> {
    match (&p.call_id, p.extensions.as_slice()) {
        (Some(call), _) => Some(call.clone()),
        (None, [ext]) => Some(format!("ext:{ext}")),
        _ => None,
    }
}

/// Hub events → outbox rows → workers.
async fn writer(
    mut rx: mpsc::Receiver<Arc<Published>>,
    store: Store,
    targets: Vec<(Arc<Target>, mpsc::UnboundedSender<Vec<Item>>)>,
    stats: Arc<WebhookStats>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let now = crate::journal::truncate_to_micros(Utc::now());
        let mut rows = Vec::new();
        let mut per_target: Vec<Vec<Item>> = vec![Vec::new(); targets.len()];
        for p in batch.drain(..) {
            let body = String::from_utf8_lossy(&p.json).into_owned();
            let key = order_key(&p);
            for (i, (target, _)) in targets.iter().enumerate() {
                if !target.filter.matches(p.kind, &p.extensions) {
                    continue;
                }
                rows.push(NewDelivery {
                    target: target.name.clone(),
                    event_id: p.id,
                    event_type: p.kind.as_str().to_string(),
                    order_key: key.clone(),
                    body: body.clone(),
                });
                per_target[i].push(Item {
                    event_id: p.id,
                    event_type: p.kind.as_str().to_string(),
                    order_key: key.clone(),
                    body: body.clone(),
                    attempts: 0,
                    next_at: now,
                });
            }
        }
        if rows.is_empty() {
            continue;
        }
        let mut delay = Duration::from_millis(50);
        let mut written = false;
        for _ in 0..6 {
            match store.outbox_enqueue(&rows, now).await {
                Ok(()) => {
                    written = true;
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = rows.len(), "writing the webhook outbox failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        if !written {
            stats
                .write_failures
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            tracing::error!(
                rows = rows.len(),
                "webhook events lost: the outbox cannot be written"
            );
            continue;
        }
        stats
            .enqueued
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        for ((_, feed), items) in targets.iter().zip(per_target) {
            if !items.is_empty() {
                let _ = feed.send(items);
            }
        }
    }
}

/// What one attempt came to.
struct Attempted {
    item: Item,
    result: AttemptResult,
}

/// One target: loads pending deliveries, sends due heads, records outcomes.
async fn worker(
    target: Arc<Target>,
    store: Store,
    mut feed: mpsc::UnboundedReceiver<Vec<Item>>,
    stats: Arc<WebhookStats>,
    stop: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(target.settings.timeout)
        .connect_timeout(target.settings.timeout)
        .user_agent(concat!("ctibridge/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target = %target.name, error = %e, "webhook HTTP client cannot be built");
            return;
        }
    };
    let mut queue = Queue::new(WINDOW);
    let mut flying: JoinSet<Attempted> = JoinSet::new();
    let mut feed_open = true;
    loop {
        if let Some((after, room)) = queue.wants_load() {
            match store.outbox_pending(&target.name, after, room as u32).await {
                Ok(rows) => queue.loaded(
                    rows.into_iter()
                        .map(|r| Item {
                            event_id: r.event_id,
                            event_type: r.event_type,
                            order_key: r.order_key,
                            body: r.body,
                            attempts: r.attempts,
                            next_at: r.next_attempt_at,
                        })
                        .collect(),
                    room,
                ),
                Err(e) => {
                    tracing::error!(target = %target.name, error = %e, "reading the webhook outbox failed");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
        }
        let now = Utc::now();
        while flying.len() < target.settings.concurrency {
            let Some(item) = queue.take_due(now) else {
                break;
            };
            flying.spawn(attempt(client.clone(), target.clone(), item));
        }
        // With every slot busy, a due head waits for a slot, not for a timer.
        let slots_free = flying.len() < target.settings.concurrency;
        let wake = queue.next_due().filter(|_| slots_free).map(|at| {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            tokio::time::Instant::now() + wait
        });
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(done) = flying.join_next(), if !flying.is_empty() => {
                let Ok(Attempted { item, result }) = done else { continue };
                if let Err(e) = store.outbox_record_attempt(&target.name, item.event_id, &result).await {
                    tracing::error!(target = %target.name, id = item.event_id, error = %e, "recording a webhook attempt failed");
                }
                match result.outcome {
                    DeliveryState::Delivered => {
                        stats.delivered.fetch_add(1, Ordering::Relaxed);
                        queue.finish(item.event_id);
                    }
                    DeliveryState::Failed => {
                        stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                        stats.given_up.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(target = %target.name, id = item.event_id, attempts = result.attempt, error = ?result.error, status = ?result.status, "webhook delivery given up");
                        queue.finish(item.event_id);
                    }
                    DeliveryState::Pending => {
                        stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                        let next = result.next_attempt_at.unwrap_or(result.at);
                        queue.retry(item.event_id, result.attempt, next);
                    }
                }
            }
            items = feed.recv(), if feed_open => match items {
                Some(items) => for item in items { queue.offer(item) },
                None => feed_open = false,
            },
            _ = sleep_until(wake), if wake.is_some() => {}
        }
    }
    flying.abort_all();
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await
    }
}

/// One HTTP attempt of `item` to `target`.
async fn attempt(client: reqwest::Client, target: Arc<Target>, item: Item) -> Attempted {
    let number = item.attempts + 1;
    let at = crate::journal::truncate_to_micros(Utc::now());
    let timestamp = at.timestamp();
    let mut req = client
        .post(&target.settings.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(sign::HEADER_ID, item.event_id.to_string())
        .header(sign::HEADER_IDEMPOTENCY_KEY, item.event_id.to_string())
        .header(sign::HEADER_TYPE, item.event_type.as_str())
        .header(sign::HEADER_ATTEMPT, number.to_string())
        .header(sign::HEADER_TIMESTAMP, timestamp.to_string());
    if let Some(secret) = &target.settings.secret {
        req = req.header(
            sign::HEADER_SIGNATURE,
            sign::signature(secret, timestamp, item.body.as_bytes()),
        );
    }
    let started = Instant::now();
    let (status, error, retry_after) = match req.body(item.body.clone()).send().await {
        Ok(resp) => {
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let error = (!status.is_success()).then(|| format!("HTTP {status}"));
            (Some(status.as_u16()), error, retry_after)
        }
        Err(e) => (None, Some(describe(&e)), None),
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let (outcome, next_attempt_at) = if error.is_none() {
        (DeliveryState::Delivered, None)
    } else if number >= target.settings.max_attempts {
        (DeliveryState::Failed, None)
    } else {
        let delay = retry_delay(
            number,
            target.settings.retry_initial,
            target.settings.retry_max,
        );
        let delay = match retry_after {
            Some(ra) => delay.max(ra.min(target.settings.retry_max)),
            None => delay,
        };
        let next = TimeDelta::from_std(delay)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        (DeliveryState::Pending, Some(next))
    };
    if let Some(e) = &error {
        tracing::debug!(target = %target.name, id = item.event_id, attempt = number, error = %e, "webhook attempt failed");
    }
    Attempted {
        item,
        result: AttemptResult {
            attempt: number,
            at,
            duration_ms,
            status,
            error,
            outcome,
            next_attempt_at,
        },
    }
}

/// A transport error in a few words (reqwest's own text nests causes).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() || e.is_body() {
        "request failed"
    } else {
        "error"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The delay after failed attempt `n` (1-based): `initial · 2^(n-1)` capped at `max`, drawn
/// uniformly from its upper half (equal jitter, as `ami::backoff`), so retries of many events
/// failed together spread out instead of hitting the target in lock-step.
pub fn retry_delay(n: u32, initial: Duration, max: Duration) -> Duration {
    let initial = initial.max(Duration::from_millis(1));
    let max = max.max(initial);
    let base = initial
        .checked_mul(
            1u32.checked_shl(n.saturating_sub(1).min(31))
                .unwrap_or(u32::MAX),
        )
        .unwrap_or(max)
        .min(max);
    let half = base / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_micros() as u64);
    half + Duration::from_micros(jitter)
}

/// Deletes finished deliveries older than `retention`, hourly.
async fn prune_loop(store: Store, retention: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let before = TimeDelta::from_std(retention)
            .ok()
            .and_then(|r| Utc::now().checked_sub_signed(r))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        match store.outbox_prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "webhook delivery log pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning the webhook delivery log failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_jitter_and_cap() {
        let ms = Duration::from_millis;
        for (n, base) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..20 {
                let d = retry_delay(n, ms(100), ms(1000));
                assert!(
                    d >= ms(base / 2) && d <= ms(base),
                    "attempt {n}: {d:?} outside [{}, {base}] ms",
                    base / 2
                );
            }
        }
    }
}
