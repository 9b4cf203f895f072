//! Latency histograms: lock-free to record, cumulated only when scraped.
//!
//! A [`Histogram`] is one atomic counter per bucket (non-cumulative: the one bucket a value
//! falls in) plus an atomic sum of nanoseconds, so recording is two relaxed atomic adds and
//! a binary search over 15 bounds. [`HttpLatency`] keeps one histogram per route template
//! and status class, created on a route's first request.

use super::exposition::{format_float, Exposition, Kind};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: from 100 µs (an Action URL callback
/// answered from memory) to 5 s (a slow store or a phone command timing out). Each step is
/// ×2–2.5, so any quantile is read within a factor of about two.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// [`LATENCY_BUCKETS`] in nanoseconds, for recording without floating point.
const BUCKET_NANOS: [u64; 15] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// One latency histogram.
#[derive(Debug)]
pub struct Histogram {
    /// Per bucket of [`LATENCY_BUCKETS`], then the overflow (`+Inf` only).
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// A histogram read at one moment: cumulative bucket counts, as exposed.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations ≤ bound)`, ending with `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations in all; equals the `+Inf` bucket by construction.
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // The first bound ≥ the value: Prometheus buckets are "less than or equal".
        let i = BUCKET_NANOS.partition_point(|&b| b < nanos);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The cumulative view. The count is the sum of the buckets read, so `_count` always
    /// equals the `+Inf` bucket even while requests are being recorded.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut cumulative = 0u64;
        for (i, bound) in LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
        {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            buckets.push((bound, cumulative));
        }
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Status classes, the `status` label: `1xx` … `5xx`.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The route label of requests that matched no route (404 from the router itself).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// HTTP request latency per route template and status class.
///
/// The route is the template the router matched (`/api/v1/calls/{id}`), never the raw path,
/// so the label set is bounded by the routes in the code. Lookups take a read lock on a
/// small map (no allocation); only a route's first request takes the write lock.
#[derive(Debug, Default)]
pub struct HttpLatency {
    routes: RwLock<HashMap<Box<str>, Box<[Histogram; STATUS_CLASSES.len()]>>>,
}

impl HttpLatency {
    /// Records one request: `route` is the matched template (`None`: no route matched),
    /// `status` the response status code, `took` the time to the response head.
    pub fn observe(&self, route: Option<&str>, status: u16, took: Duration) {
        let route = route.unwrap_or(UNMATCHED_ROUTE);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = routes.get(route) {
                h[class].observe(took);
                return;
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.entry(route.into()).or_default()[class].observe(took);
    }

    /// The histogram of one route and status class, if it has recorded anything.
    pub fn snapshot(&self, route: &str, status_class: &str) -> Option<HistogramSnapshot> {
        let class = STATUS_CLASSES.iter().position(|c| *c == status_class)?;
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let snap = routes.get(route)?[class].snapshot();
        (snap.count > 0).then_some(snap)
    }

    /// Writes the family `name`: one histogram per route and status class that has
    /// recorded a request (series appear with their first observation), sorted by route.
    pub fn write(&self, out: &mut Exposition, name: &'static str, help: &str) {
        let mut series: Vec<(String, usize, HistogramSnapshot)> = {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            routes
                .iter()
                .flat_map(|(route, hs)| {
                    hs.iter()
                        .enumerate()
                        .map(move |(class, h)| (route.to_string(), class, h.snapshot()))
                })
                .filter(|(.., s)| s.count > 0)
                .collect()
        };
        series.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut family = out.family(name, Kind::Histogram, help);
        for (route, class, snap) in &series {
            let status = STATUS_CLASSES[*class];
            for (bound, count) in &snap.buckets {
                let le = format_float(*bound);
                family.sample_suffixed(
                    "_bucket",
                    &[("route", route), ("status", status), ("le", &le)],
                    *count,
                );
            }
            let labels = [("route", route.as_str()), ("status", status)];
            family.sample_suffixed("_sum", &labels, snap.sum_seconds);
            family.sample_suffixed("_count", &labels, snap.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_nanos_match_the_seconds() {
        for (s, n) in LATENCY_BUCKETS.iter().zip(BUCKET_NANOS) {
            assert_eq!((s * 1e9).round() as u64, n);
        }
    }

    #[test]
    fn values_on_a_bound_fall_in_that_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100)); // le=0.0001
        h.observe(Duration::from_nanos(100_001)); // le=0.00025
        h.observe(Duration::from_secs(5)); // le=5
        h.observe(Duration::from_secs(60)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets[1], (0.00025, 2));
        assert_eq!(s.buckets[13].1, 2);
        assert_eq!(s.buckets[14], (5.0, 3));
        assert_eq!(s.buckets[15], (f64::INFINITY, 4));
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 65.000200001).abs() < 1e-9);
    }

    #[test]
    fn routes_and_classes_are_kept_apart() {
        let l = HttpLatency::default();
        l.observe(Some("/api/v1/calls/{id}"), 200, Duration::from_millis(1));
        l.observe(Some("/api/v1/calls/{id}"), 404, Duration::from_millis(1));
        l.observe(Some("/api/v1/calls/{id}"), 204, Duration::from_millis(1));
        l.observe(None, 404, Duration::from_millis(1));
        assert_eq!(l.snapshot("/api/v1/calls/{id}", "2xx").unwrap().count, 2);
        assert_eq!(l.snapshot("/api/v1/calls/{id}", "4xx").unwrap().count, 1);
        assert!(l.snapshot("/api/v1/calls/{id}", "5xx").is_none());
        assert_eq!(l.snapshot(UNMATCHED_ROUTE, "4xx").unwrap().count, 1);
        let mut e = Exposition::default();
        l.write(&mut e, "h_seconds", "H.");
        let text = e.finish();
        assert!(text.contains(
            "h_seconds_bucket{route=\"/api/v1/calls/{id}\",status=\"2xx\",le=\"0.001\"} 2\n"
        ));
        assert!(text.contains("h_seconds_count{route=\"unmatched\",status=\"4xx\"} 1\n"));
        assert_eq!(text.matches("# TYPE h_seconds histogram").count(), 1);
    }
}
