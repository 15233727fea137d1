//! What the worker did, recorded in one place: every count, histogram and
//! sampled gauge goes through [`Metrics`], which keeps a Prometheus registry
//! of its own (rendered by `GET /metrics`, see [`crate::ops`]) and logs a
//! summary line periodically and at shutdown. Labels carry only fixed codes
//! (reason kinds, purposes, outcomes, lane numbers), never ids or values.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::llm::model_client::CallObserver;
use crate::store::llm_calls::Accounting;
use crate::store::status::Backlogs;

/// A monotonically increasing count, kept in memory (for the log line and
/// tests) and exported.
pub struct Counter {
    count: AtomicU64,
    exported: metrics::Counter,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
        self.exported.increment(n);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Why an event went to the dead-letter queue, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterKind {
    /// The body could not be decoded or validated.
    InvalidEvent,
    /// The workspace is not accepted.
    UnknownWorkspace,
    /// Well-formed, but it refers to something that cannot be used.
    Unprocessable,
    /// A store error that is not worth retrying.
    StoreError,
    /// Every delayed retry failed.
    RetriesExhausted,
}

impl DeadLetterKind {
    /// Every kind, for pre-registering the series.
    pub const ALL: [DeadLetterKind; 5] = [
        DeadLetterKind::InvalidEvent,
        DeadLetterKind::UnknownWorkspace,
        DeadLetterKind::Unprocessable,
        DeadLetterKind::StoreError,
        DeadLetterKind::RetriesExhausted,
    ];

    /// The kind of a handling failure the lane gives up on (`retriable`:
    /// it was a transient store error whose delayed retries ran out).
    pub fn of(retriable: bool, error: &crate::worker::error::HandleError) -> DeadLetterKind {
        match error {
            _ if retriable => DeadLetterKind::RetriesExhausted,
            crate::worker::error::HandleError::Unprocessable(_) => DeadLetterKind::Unprocessable,
            crate::worker::error::HandleError::Store(_) => DeadLetterKind::StoreError,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::InvalidEvent => "invalid_event",
            DeadLetterKind::UnknownWorkspace => "unknown_workspace",
            DeadLetterKind::Unprocessable => "unprocessable",
            DeadLetterKind::StoreError => "store_error",
            DeadLetterKind::RetriesExhausted => "retries_exhausted",
        }
    }
}

const MODEL_PURPOSES: [&str; 3] = ["enrich", "summary", "insights"];
const ASK_OUTCOMES: [&str; 4] = ["pending", "answered", "declined", "ignored"];

/// The worker's counters and histograms.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Deliveries received from the work queue.
    pub events_consumed: Counter,
    /// Events committed (duplicates included).
    pub events_stored: Counter,
    /// Chat messages that were stored already (redeliveries, resends).
    pub events_deduplicated: Counter,
    /// Events sent to the dead-letter queue (all reasons).
    pub dead_lettered: Counter,
    /// Batches retried after a transient error (Postgres, Redis).
    pub store_retries: Counter,
    /// Cache (Redis) operations that failed.
    pub cache_errors: Counter,
    /// Postgres operations of the worker that failed.
    pub postgres_errors: Counter,
    /// Model-stage messages dropped because their transaction rolled back
    /// (their events are delivered again).
    pub model_jobs_rolled_back: Counter,
    /// Model jobs left in Postgres because the stage was full (read back
    /// in pages as room frees up).
    pub model_jobs_spilled: Counter,
    /// Model jobs that panicked (recorded as failed).
    pub model_jobs_panicked: Counter,
    /// `ask.requested` events committed.
    pub asks_made: Counter,
    /// Customers merged into another.
    pub merges: Counter,
    /// Conversation summaries written by the model.
    pub summaries: Counter,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
    model_calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("events_stored", &self.events_stored)
            .field("dead_lettered", &self.dead_lettered)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The `# HELP` line of each metric.
const HELP: [(&str, &str); 26] = [
    (
        "enricher_events_consumed_total",
        "Deliveries taken from the work queue.",
    ),
    (
        "enricher_events_stored_total",
        "Events committed, duplicates included.",
    ),
    (
        "enricher_events_deduplicated_total",
        "Chat messages that were stored already.",
    ),
    (
        "enricher_events_dead_lettered_total",
        "Events sent to the dead-letter queue, by reason kind.",
    ),
    (
        "enricher_events_retried_total",
        "Batches retried after a transient store error (store) and events parked for a delayed retry (delayed).",
    ),
    ("enricher_batch_size", "Events committed per transaction."),
    (
        "enricher_event_commit_latency_seconds",
        "From an event's occurred_at to its commit.",
    ),
    ("enricher_lane_queue_depth", "Events waiting in the lanes."),
    (
        "enricher_lane_queue_depth_by_lane",
        "Events waiting in each lane.",
    ),
    (
        "enricher_model_calls_total",
        "Model calls by purpose and outcome.",
    ),
    (
        "enricher_model_input_tokens_total",
        "Prompt tokens reported by the model server.",
    ),
    (
        "enricher_model_output_tokens_total",
        "Completion tokens reported by the model server.",
    ),
    (
        "enricher_model_call_duration_seconds",
        "Wall time of a model call, retries included.",
    ),
    (
        "enricher_model_call_retries_total",
        "HTTP attempts of model calls beyond the first.",
    ),
    (
        "enricher_model_jobs_rolled_back_total",
        "Model-stage messages dropped because their transaction rolled back.",
    ),
    (
        "enricher_model_jobs_spilled_total",
        "Model jobs left in Postgres because the model stage was full.",
    ),
    (
        "enricher_model_jobs_panicked_total",
        "Model jobs that panicked (recorded as failed).",
    ),
    (
        "enricher_rejections_total",
        "Proposed values not written and model skips, by reason.",
    ),
    (
        "enricher_asks_made_total",
        "ask.requested events committed.",
    ),
    (
        "enricher_asks",
        "Asks in Postgres by outcome (all workers, sampled).",
    ),
    ("enricher_merges_total", "Customers merged into another."),
    (
        "enricher_summaries_total",
        "Conversation summaries written by the model.",
    ),
    (
        "enricher_outbox_backlog",
        "Outbound events not yet confirmed by the broker (sampled).",
    ),
    (
        "enricher_model_stage_pending",
        "Messages waiting for the model (sampled).",
    ),
    (
        "enricher_redis_errors_total",
        "Redis operations that failed.",
    ),
    (
        "enricher_postgres_errors_total",
        "Postgres errors of the lanes (batch retries, events given up) and the sampler.",
    ),
];

/// Histogram buckets of batch sizes (events per commit).
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Histogram buckets of latencies, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// A registry of its own (several workers in one process never mix),
    /// with every series that has a fixed set of labels already at zero.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("enricher_batch_size".into()),
                    &BATCH_BUCKETS,
                )
            })
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        for (name, help) in HELP {
            recorder.describe_counter(metrics::KeyName::from(name), None, help.into());
        }
        let counter = |name: &'static str| Counter {
            count: AtomicU64::new(0),
            exported: recorder.register_counter(&Key::from_name(name), &METADATA),
        };
        let metrics = Metrics {
            events_consumed: counter("enricher_events_consumed_total"),
            events_stored: counter("enricher_events_stored_total"),
            events_deduplicated: counter("enricher_events_deduplicated_total"),
            dead_lettered: Counter {
                count: AtomicU64::new(0),
                exported: metrics::Counter::noop(),
            },
            store_retries: Counter {
                count: AtomicU64::new(0),
                exported: recorder.register_counter(
                    &Key::from_parts(
                        "enricher_events_retried_total",
                        vec![label("kind", "store")],
                    ),
                    &METADATA,
                ),
            },
            cache_errors: counter("enricher_redis_errors_total"),
            postgres_errors: counter("enricher_postgres_errors_total"),
            model_jobs_rolled_back: counter("enricher_model_jobs_rolled_back_total"),
            model_jobs_spilled: counter("enricher_model_jobs_spilled_total"),
            model_jobs_panicked: counter("enricher_model_jobs_panicked_total"),
            asks_made: counter("enricher_asks_made_total"),
            merges: counter("enricher_merges_total"),
            summaries: counter("enricher_summaries_total"),
            rejections: Mutex::new(BTreeMap::new()),
            model_calls: Mutex::new(BTreeMap::new()),
            recorder,
            handle,
        };
        for kind in DeadLetterKind::ALL {
            let _ = metrics.dead_letter_counter(kind);
        }
        for purpose in MODEL_PURPOSES {
            let _ = metrics.model_counter("enricher_model_calls_total", purpose, Some("ok"));
            let _ = metrics.model_counter("enricher_model_input_tokens_total", purpose, None);
            let _ = metrics.model_counter("enricher_model_output_tokens_total", purpose, None);
            let _ = metrics.model_counter("enricher_model_call_retries_total", purpose, None);
            let _ = metrics.histogram(
                "enricher_model_call_duration_seconds",
                &[("purpose", purpose)],
            );
        }
        for outcome in ASK_OUTCOMES {
            let _ = metrics.gauge("enricher_asks", &[("outcome", outcome)]);
        }
        // Rejection reasons are open-ended; the commonest start at zero.
        for reason in ["invalid_email", "invalid_phone", "budget_spent"] {
            let _ = metrics.rejection_counter(reason);
        }
        let _ = metrics.histogram("enricher_batch_size", &[]);
        let _ = metrics.histogram("enricher_event_commit_latency_seconds", &[]);
        let _ = metrics.gauge("enricher_outbox_backlog", &[]);
        let _ = metrics.gauge("enricher_model_stage_pending", &[]);
        let _ = metrics.gauge("enricher_lane_queue_depth", &[]);
        metrics
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    fn dead_letter_counter(&self, kind: DeadLetterKind) -> metrics::Counter {
        self.recorder.register_counter(
            &Key::from_parts(
                "enricher_events_dead_lettered_total",
                vec![label("reason", kind.as_str())],
            ),
            &METADATA,
        )
    }

    fn model_counter(
        &self,
        name: &'static str,
        purpose: &'static str,
        outcome: Option<&'static str>,
    ) -> metrics::Counter {
        let mut labels = vec![label("purpose", purpose)];
        if let Some(outcome) = outcome {
            labels.push(label("outcome", outcome));
        }
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> metrics::Histogram {
        let labels: Vec<Label> = labels.iter().map(|(k, v)| label(k, v)).collect();
        self.recorder
            .register_histogram(&Key::from_parts(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> metrics::Gauge {
        let labels: Vec<Label> = labels.iter().map(|(k, v)| label(k, v)).collect();
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
    }

    /// Counts a delivery taken from the work queue.
    pub fn consumed(&self) {
        self.events_consumed.inc();
    }

    /// Counts an event sent to the dead-letter queue.
    pub fn dead_letter(&self, kind: DeadLetterKind) {
        self.dead_lettered.inc();
        if matches!(
            kind,
            DeadLetterKind::StoreError | DeadLetterKind::RetriesExhausted
        ) {
            self.postgres_errors.inc();
        }
        self.dead_letter_counter(kind).increment(1);
    }

    /// Counts a batch retried after a transient Postgres error.
    pub fn store_retry(&self) {
        self.store_retries.inc();
        self.postgres_errors.inc();
    }

    /// Records a committed batch: its size, each event's latency from its
    /// `occurred_at` (the producer's clock, as `enricher bench` measures)
    /// to now, and the events stored.
    pub fn batch_committed(&self, occurred: impl ExactSizeIterator<Item = DateTime<Utc>>) {
        let size = occurred.len();
        self.histogram("enricher_batch_size", &[])
            .record(size as f64);
        let latency = self.histogram("enricher_event_commit_latency_seconds", &[]);
        let now = Utc::now();
        for at in occurred {
            let seconds = (now - at).to_std().unwrap_or(Duration::ZERO).as_secs_f64();
            latency.record(seconds);
        }
        self.events_stored.add(size as u64);
    }

    /// Counts what committed effects announce: asks made and merges (by the
    /// routing keys of their outbound events) and deduplicated messages.
    pub fn effects_committed<'a>(
        &self,
        routing_keys: impl IntoIterator<Item = &'a str>,
        duplicates: usize,
    ) {
        for key in routing_keys {
            match key {
                "ask.requested" => self.asks_made.inc(),
                "customer.merged" => self.merges.inc(),
                _ => {}
            }
        }
        if duplicates > 0 {
            self.events_deduplicated.add(duplicates as u64);
        }
    }

    /// Sets the depth of each lane's queue.
    pub fn lane_depths(&self, depths: &[usize]) {
        let total: usize = depths.iter().sum();
        self.gauge("enricher_lane_queue_depth", &[])
            .set(total as f64);
        for (lane, depth) in depths.iter().enumerate() {
            self.gauge(
                "enricher_lane_queue_depth_by_lane",
                &[("lane", &lane.to_string())],
            )
            .set(*depth as f64);
        }
    }

    /// Sets the database-wide figures.
    pub fn sampled(&self, totals: &Backlogs) {
        self.gauge("enricher_outbox_backlog", &[])
            .set(totals.outbox as f64);
        self.gauge("enricher_model_stage_pending", &[])
            .set(totals.model_pending as f64);
        for outcome in ASK_OUTCOMES {
            let count = totals.asks_by_outcome.get(outcome).copied().unwrap_or(0);
            self.gauge("enricher_asks", &[("outcome", outcome)])
                .set(count as f64);
        }
    }

    fn rejection_counter(&self, reason: &'static str) -> metrics::Counter {
        self.recorder.register_counter(
            &Key::from_parts("enricher_rejections_total", vec![label("reason", reason)]),
            &METADATA,
        )
    }

    /// Counts a proposed value that was not written, by reason.
    pub fn rejection(&self, reason: &'static str) {
        if let Ok(mut rejections) = self.rejections.lock() {
            *rejections.entry(reason).or_default() += 1;
        }
        self.rejection_counter(reason).increment(1);
    }

    /// Rejections so far, by reason.
    pub fn rejections(&self) -> BTreeMap<&'static str, u64> {
        self.rejections
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Model calls so far, by purpose and outcome.
    pub fn model_calls(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.model_calls
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Logs every counter at info level.
    pub fn log(&self) {
        tracing::info!(
            events_consumed = self.events_consumed.get(),
            events_stored = self.events_stored.get(),
            events_deduplicated = self.events_deduplicated.get(),
            dead_lettered = self.dead_lettered.get(),
            store_retries = self.store_retries.get(),
            cache_errors = self.cache_errors.get(),
            postgres_errors = self.postgres_errors.get(),
            model_jobs_rolled_back = self.model_jobs_rolled_back.get(),
            model_jobs_spilled = self.model_jobs_spilled.get(),
            model_jobs_panicked = self.model_jobs_panicked.get(),
            asks_made = self.asks_made.get(),
            merges = self.merges.get(),
            summaries = self.summaries.get(),
            rejections = ?self.rejections(),
            model_calls = ?self.model_calls(),
            "worker counters"
        );
    }
}

impl CallObserver for Metrics {
    fn model_call(&self, purpose: &'static str, outcome: &'static str, accounting: &Accounting) {
        if let Ok(mut calls) = self.model_calls.lock() {
            *calls.entry((purpose, outcome)).or_default() += 1;
        }
        self.model_counter("enricher_model_calls_total", purpose, Some(outcome))
            .increment(1);
        self.model_counter("enricher_model_input_tokens_total", purpose, None)
            .increment(u64::from(accounting.prompt_tokens));
        self.model_counter("enricher_model_output_tokens_total", purpose, None)
            .increment(u64::from(accounting.completion_tokens));
        self.model_counter("enricher_model_call_retries_total", purpose, None)
            .increment(u64::from(accounting.attempts.saturating_sub(1)));
        if accounting.attempts > 0 {
            self.histogram(
                "enricher_model_call_duration_seconds",
                &[("purpose", purpose)],
            )
            .record(accounting.latency.as_secs_f64());
        }
        if purpose == "summary" && outcome == "ok" {
            self.summaries.inc();
        }
    }
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

fn label(key: &'static str, value: &str) -> Label {
    Label::new(key, value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixed_series_is_exported_before_anything_happens() {
        let metrics = Metrics::new();
        let text = metrics.render();
        for name in [
            "enricher_events_consumed_total",
            "enricher_events_dead_lettered_total{reason=\"invalid_event\"}",
            "enricher_model_calls_total{purpose=\"enrich\",outcome=\"ok\"}",
            "enricher_batch_size_bucket",
            "enricher_outbox_backlog",
            "# HELP enricher_events_consumed_total Deliveries taken",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn counts_reach_the_exposition() {
        let metrics = Metrics::new();
        metrics.dead_letter(DeadLetterKind::InvalidEvent);
        metrics.dead_letter(DeadLetterKind::InvalidEvent);
        metrics.batch_committed([Utc::now(), Utc::now()].into_iter());
        metrics.rejection("ungrounded");
        let text = metrics.render();
        assert!(
            text.contains("enricher_events_dead_lettered_total{reason=\"invalid_event\"} 2"),
            "{text}"
        );
        assert!(text.contains("enricher_events_stored_total 2"), "{text}");
        assert!(text.contains("enricher_batch_size_count 1"), "{text}");
        assert!(
            text.contains("enricher_rejections_total{reason=\"ungrounded\"} 1"),
            "{text}"
        );
        assert_eq!(metrics.dead_lettered.get(), 2);
    }

    #[test]
    fn two_registries_never_mix() {
        let first = Metrics::new();
        let second = Metrics::new();
        first.consumed();
        assert!(first.render().contains("enricher_events_consumed_total 1"));
        assert!(second.render().contains("enricher_events_consumed_total 0"));
    }
}
