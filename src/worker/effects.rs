//! Effects: what an event changes outside Postgres (cache updates, outbound
//! events, metrics, model jobs). Handlers collect them inside the
//! transaction instead of performing them, and the lane applies them only
//! after the commit, so nothing outside Postgres changes for a transaction
//! that rolls back.

use std::sync::Arc;

use sqlx::PgPool;

use super::metrics::Metrics;
use super::model_job::ModelJob;
use crate::queue::outbox_relay::publish_pending;
use crate::queue::publisher::Publisher;
use crate::state::{Cache, CacheUpdate};
use crate::store::outbox::Pending;

/// Work that must follow the commit.
#[derive(Debug, Default)]
pub struct Effects {
    /// Cache changes.
    pub cache: Vec<CacheUpdate>,
    /// Outbound events stored in the outbox, to publish.
    pub outbox: Vec<Pending>,
    /// Values proposed but not written, by reason (for metrics).
    pub rejections: Vec<&'static str>,
    /// Customer messages for the model stage.
    pub model_jobs: Vec<ModelJob>,
    /// The event had been handled before (a redelivery or a resend).
    pub duplicate: bool,
}

/// Applies effects once their transaction has committed: the cache changes,
/// then the outbound events, counting what was rejected.
#[derive(Clone)]
pub struct AfterCommit {
    /// Redis.
    pub cache: Cache,
    /// Publishes the outbound events.
    pub publisher: Publisher,
    /// Where the outbox rows are removed once published.
    pub pool: PgPool,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl AfterCommit {
    /// Applies the effects of one committed transaction (any number of events).
    pub async fn apply(&self, effects: impl IntoIterator<Item = Effects>) {
        let mut cache_updates = Vec::new();
        let mut pending = Vec::new();
        let mut duplicates = 0;
        for effect in effects {
            for reason in &effect.rejections {
                self.metrics.rejection(reason);
            }
            duplicates += usize::from(effect.duplicate);
            cache_updates.extend(effect.cache);
            pending.extend(effect.outbox);
        }
        self.metrics.effects_committed(
            pending
                .iter()
                .map(|event: &Pending| event.routing_key.as_str()),
            duplicates,
        );
        if let Err(error) = self.cache.apply(&cache_updates).await {
            self.metrics.cache_errors.inc();
            tracing::error!(error = %error, "cache update failed after commit");
        }
        publish_pending(&self.publisher, &self.pool, pending).await;
    }
}
