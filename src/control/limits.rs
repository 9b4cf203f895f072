//! Rate limits and idempotency keys for dial requests, as plain synchronous structures (the
//! clock is passed in).
//!
//! - [`RateLimiter`]: a token bucket per key (an API token, a from-extension): `limit`
//!   requests per `window`, refilled continuously, so a client that stays under the average
//!   is never refused and a burst of at most `limit` passes. A request is checked against all
//!   its buckets first and takes from them only when every one has room, so a request refused
//!   for the phone's limit does not use up the token's.
//! - [`IdempotencyCache`]: `Idempotency-Key` → the request it created, for `ttl`. A second
//!   request with the same key while the first is still being placed waits for it (no second
//!   call can start); one with the same key but a different body is refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Buckets kept before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 4096;

/// One limit: `limit` requests per `window`; 0 = unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub limit: u32,
    pub window: Duration,
}

/// A request over a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    /// Which limit: the label passed to [`RateLimiter::take`] (`token`, `phone`).
    pub scope: &'static str,
    pub limit: Limit,
    /// When one more request will fit.
    pub retry_after: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by `(scope, key)`.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<(&'static str, String), Bucket>,
}

impl RateLimiter {
    /// Takes one request from every `(scope, key, limit)` bucket, or from none of them when
    /// one is empty (then says which and for how long).
    pub fn take(
        &mut self,
        checks: &[(&'static str, &str, Limit)],
        now: Instant,
    ) -> Result<(), Limited> {
        if self.buckets.len() > MAX_BUCKETS {
            self.buckets
                .retain(|(_, _), b| b.at + Duration::from_secs(3600) > now);
        }
        let mut levels = Vec::with_capacity(checks.len());
        for &(scope, key, limit) in checks {
            if limit.limit == 0 || limit.window.is_zero() {
                levels.push(None);
                continue;
            }
            let capacity = f64::from(limit.limit);
            let rate = capacity / limit.window.as_secs_f64();
            let tokens = match self.buckets.get(&(scope, key.to_owned())) {
                Some(b) => (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate)
                    .min(capacity),
                None => capacity,
            };
            if tokens < 1.0 {
                let wait = (1.0 - tokens) / rate;
                return Err(Limited {
                    scope,
                    limit,
                    retry_after: Duration::from_secs_f64(wait.max(0.001)),
                });
            }
            levels.push(Some(tokens));
        }
        for (&(scope, key, _), level) in checks.iter().zip(levels) {
            if let Some(tokens) = level {
                self.buckets.insert(
                    (scope, key.to_owned()),
                    Bucket {
                        tokens: tokens - 1.0,
                        at: now,
                    },
                );
            }
        }
        Ok(())
    }
}

/// What to do with a request carrying an `Idempotency-Key`.
#[derive(Debug)]
pub enum Begin {
    /// First use: go ahead, then [`IdempotencyCache::finish`] or [`IdempotencyCache::abandon`].
    New,
    /// The first request with this key is still being placed: wait for the receiver to
    /// change or close, then ask again.
    Wait(watch::Receiver<()>),
    /// Already done: answer with this request.
    Replay { request_id: String, accepted: bool },
    /// The key was used for a different request.
    Mismatch,
}

#[derive(Debug)]
enum Entry {
    InFlight {
        fingerprint: String,
        /// Dropped when the first request finishes or gives up, which wakes the waiters.
        _done: watch::Sender<()>,
        rx: watch::Receiver<()>,
    },
    Done {
        fingerprint: String,
        request_id: String,
        accepted: bool,
        at: Instant,
    },
}

/// `(scope, key)` → request, for `ttl`.
#[derive(Debug)]
pub struct IdempotencyCache {
    ttl: Duration,
    entries: HashMap<(String, String), Entry>,
}

impl IdempotencyCache {
    pub fn new(ttl: Duration) -> IdempotencyCache {
        IdempotencyCache {
            ttl,
            entries: HashMap::new(),
        }
    }

    /// Looks `key` up in `scope` (the API token: keys of different clients never collide).
    /// `fingerprint` identifies the request's content.
    pub fn begin(&mut self, scope: &str, key: &str, fingerprint: &str, now: Instant) -> Begin {
        let ttl = self.ttl;
        if self.entries.len() > 1024 {
            self.entries.retain(|_, e| match e {
                Entry::Done { at, .. } => *at + ttl > now,
                Entry::InFlight { .. } => true,
            });
        }
        let id = (scope.to_owned(), key.to_owned());
        match self.entries.get(&id) {
            Some(Entry::InFlight {
                fingerprint: f, rx, ..
            }) => {
                if f == fingerprint {
                    Begin::Wait(rx.clone())
                } else {
                    Begin::Mismatch
                }
            }
            Some(Entry::Done {
                fingerprint: f,
                request_id,
                accepted,
                at,
            }) if *at + ttl > now => {
                if f == fingerprint {
                    Begin::Replay {
                        request_id: request_id.clone(),
                        accepted: *accepted,
                    }
                } else {
                    Begin::Mismatch
                }
            }
            _ => {
                let (tx, rx) = watch::channel(());
                self.entries.insert(
                    id,
                    Entry::InFlight {
                        fingerprint: fingerprint.to_owned(),
                        _done: tx,
                        rx,
                    },
                );
                Begin::New
            }
        }
    }

    /// The request for `key` was created (`accepted`: delivered to the phone or the PBX).
    pub fn finish(
        &mut self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        request_id: &str,
        accepted: bool,
        now: Instant,
    ) {
        self.entries.insert(
            (scope.to_owned(), key.to_owned()),
            Entry::Done {
                fingerprint: fingerprint.to_owned(),
                request_id: request_id.to_owned(),
                accepted,
                at: now,
            },
        );
    }

    /// The request for `key` was refused before anything was placed (bad input, rate
    /// limit): the key stays free, and waiters try again.
    pub fn abandon(&mut self, scope: &str, key: &str) {
        let id = (scope.to_owned(), key.to_owned());
        if matches!(self.entries.get(&id), Some(Entry::InFlight { .. })) {
            self.entries.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(limit: u32, secs: u64) -> Limit {
        Limit {
            limit,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn buckets_allow_the_limit_then_refill() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        let checks = [("token", "tok", lim(3, 60)), ("phone", "101", lim(2, 60))];
        assert!(r.take(&checks, t0).is_ok());
        assert!(r.take(&checks, t0).is_ok());
        let e = r.take(&checks, t0).unwrap_err();
        assert_eq!(e.scope, "phone");
        assert!(
            e.retry_after > Duration::from_secs(29) && e.retry_after <= Duration::from_secs(30)
        );
        // The refused request took nothing from the token's bucket: another phone still fits.
        assert!(r
            .take(
                &[("token", "tok", lim(3, 60)), ("phone", "102", lim(2, 60))],
                t0
            )
            .is_ok());
        assert_eq!(
            r.take(&[("token", "tok", lim(3, 60))], t0)
                .unwrap_err()
                .scope,
            "token"
        );
        // Half a window later one request per 20 s has come back for the token, one per 30 s
        // for the phone.
        let later = t0 + Duration::from_secs(30);
        assert!(r.take(&checks, later).is_ok());
        // Zero means unlimited.
        for _ in 0..100 {
            assert!(r.take(&[("token", "free", lim(0, 60))], t0).is_ok());
        }
    }

    #[test]
    fn idempotency_keys() {
        let mut c = IdempotencyCache::new(Duration::from_secs(600));
        let t0 = Instant::now();
        assert!(matches!(c.begin("tok", "k1", "A", t0), Begin::New));
        // While in flight: the same request waits, a different one is refused.
        let Begin::Wait(rx) = c.begin("tok", "k1", "A", t0) else {
            panic!("expected Wait")
        };
        assert!(matches!(c.begin("tok", "k1", "B", t0), Begin::Mismatch));
        // Another client's identical key is its own.
        assert!(matches!(c.begin("other", "k1", "B", t0), Begin::New));
        c.finish("tok", "k1", "A", "dr_1", true, t0);
        assert!(
            rx.has_changed().is_err(),
            "waiters are woken (sender dropped)"
        );
        match c.begin("tok", "k1", "A", t0 + Duration::from_secs(599)) {
            Begin::Replay {
                request_id,
                accepted,
            } => assert_eq!((request_id.as_str(), accepted), ("dr_1", true)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.begin("tok", "k1", "B", t0 + Duration::from_secs(1)),
            Begin::Mismatch
        ));
        // After the ttl the key is new again.
        assert!(matches!(
            c.begin("tok", "k1", "B", t0 + Duration::from_secs(601)),
            Begin::New
        ));
        // An abandoned key is free.
        assert!(matches!(c.begin("tok", "k2", "A", t0), Begin::New));
        c.abandon("tok", "k2");
        assert!(matches!(c.begin("tok", "k2", "B", t0), Begin::New));
    }
}
