//! `/metrics` in Prometheus' text format, through the `prometheus-client` crate (the Prometheus
//! project's own Rust client): request counts by endpoint, status and route, histograms of time to
//! first token, per-token latency and request duration, token counters, and gauges of the queue
//! and slots read from the scheduler at scrape time.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::scheduler::SchedulerStats;

/// Labels of a served request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `chat`, `completion`, `models`, ...
    pub endpoint: String,
    /// The HTTP status.
    pub status: u16,
    /// `local`, `upstream`, `cache` or `none` (refused before routing).
    pub route: String,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    ttft: Histogram,
    token_latency: Histogram,
    duration: Histogram,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    queue_depth: Gauge,
    slots_busy: Gauge,
    slot_cache_bytes: Gauge,
    cancelled: Gauge,
    timed_out: Gauge,
    reused_tokens: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new(slots: usize) -> Metrics {
        let mut r = Registry::with_prefix("shuku");
        let requests = Family::<RequestLabels, Counter>::default();
        r.register("requests", "Requests answered", requests.clone());
        let ttft = Histogram::new(exponential_buckets(0.002, 2.0, 14));
        r.register(
            "time_to_first_token_seconds",
            "Time from arrival to the first generated token",
            ttft.clone(),
        );
        let token_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        r.register(
            "token_latency_seconds",
            "Mean time between tokens of each request",
            token_latency.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        r.register(
            "request_duration_seconds",
            "Time from arrival to the last byte of the answer",
            duration.clone(),
        );
        let prompt_tokens = Counter::default();
        r.register(
            "prompt_tokens",
            "Prompt tokens of answered requests",
            prompt_tokens.clone(),
        );
        let completion_tokens = Counter::default();
        r.register(
            "completion_tokens",
            "Tokens generated",
            completion_tokens.clone(),
        );
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let queue_depth = gauge(&mut r, "queue_depth", "Requests waiting for a slot");
        let slots_busy = gauge(&mut r, "slots_busy", "Slots decoding a request");
        // Fixed at start: registered and set once, never updated.
        gauge(&mut r, "slots", "Slots (requests decoded together at most)").set(slots as i64);
        let slot_cache_bytes = gauge(&mut r, "slot_kv_cache_bytes", "KV cache bytes of one slot");
        let cancelled = gauge(
            &mut r,
            "requests_cancelled",
            "Requests ended because the client went away",
        );
        let timed_out = gauge(
            &mut r,
            "requests_timed_out",
            "Requests ended by their deadline",
        );
        let reused_tokens = gauge(
            &mut r,
            "prompt_tokens_reused",
            "Prompt tokens taken from a slot's cached prefix instead of evaluated",
        );
        Metrics {
            registry: Mutex::new(r),
            requests,
            ttft,
            token_latency,
            duration,
            prompt_tokens,
            completion_tokens,
            queue_depth,
            slots_busy,
            slot_cache_bytes,
            cancelled,
            timed_out,
            reused_tokens,
        }
    }

    /// Counts an answered (or refused) request.
    pub fn request(&self, endpoint: &str, status: u16, route: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.into(),
                status,
                route: route.into(),
            })
            .inc();
    }

    /// Records a generation's timings and counts.
    pub fn generation(
        &self,
        ttft: Option<f64>,
        token_latency: Option<f64>,
        duration: f64,
        prompt_tokens: usize,
        completion_tokens: usize,
    ) {
        if let Some(t) = ttft {
            self.ttft.observe(t);
        }
        if let Some(t) = token_latency {
            self.token_latency.observe(t);
        }
        self.duration.observe(duration);
        self.prompt_tokens.inc_by(prompt_tokens as u64);
        self.completion_tokens.inc_by(completion_tokens as u64);
    }

    /// The text exposition, with the scheduler's gauges read now.
    pub fn render(&self, stats: &SchedulerStats) -> String {
        self.queue_depth
            .set(stats.queued.load(Ordering::Relaxed) as i64);
        self.slots_busy
            .set(stats.busy.load(Ordering::Relaxed) as i64);
        self.slot_cache_bytes
            .set(stats.slot_cache_bytes.load(Ordering::Relaxed) as i64);
        self.cancelled
            .set(stats.cancelled.load(Ordering::Relaxed) as i64);
        self.timed_out
            .set(stats.timed_out.load(Ordering::Relaxed) as i64);
        self.reused_tokens
            .set(stats.reused_tokens.load(Ordering::Relaxed) as i64);
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            out = format!("# encoding failed: {e}\n");
        }
        out
    }
}
