//! Counters of what the worker did, logged periodically and at shutdown, so
//! operators see dead letters, retries and rejected values without reading
//! every log line.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The worker's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events committed (duplicates included).
    pub events_stored: Counter,
    /// Events sent to the dead-letter queue.
    pub dead_lettered: Counter,
    /// Batches retried after a transient error (Postgres, Redis).
    pub store_retries: Counter,
    /// Cache writes that failed after a commit.
    pub cache_errors: Counter,
    /// Model-stage messages dropped because their transaction rolled back
    /// (their events are delivered again).
    pub model_jobs_rolled_back: Counter,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts a proposed value that was not written, by reason.
    pub fn rejection(&self, reason: &'static str) {
        if let Ok(mut rejections) = self.rejections.lock() {
            *rejections.entry(reason).or_default() += 1;
        }
    }

    /// Rejections so far, by reason.
    pub fn rejections(&self) -> BTreeMap<&'static str, u64> {
        self.rejections
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Logs every counter at info level.
    pub fn log(&self) {
        tracing::info!(
            events_stored = self.events_stored.get(),
            dead_lettered = self.dead_lettered.get(),
            store_retries = self.store_retries.get(),
            cache_errors = self.cache_errors.get(),
            model_jobs_rolled_back = self.model_jobs_rolled_back.get(),
            rejections = ?self.rejections(),
            "worker counters"
        );
    }
}
