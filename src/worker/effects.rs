//! Effects: what an event changes outside Postgres (cache updates, outbound
//! events, metrics, model jobs). Handlers collect them inside the
//! transaction instead of performing them, and the lane applies them only
//! after the commit, so nothing outside Postgres changes for a transaction
//! that rolls back.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::metrics::Metrics;
use super::model_job::ModelJob;
use crate::queue::outbox_relay::publish_pending;
use crate::queue::publisher::Publisher;
use crate::retry::Backoff;
use crate::state::{Cache, CacheError, CacheUpdate};
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
    /// Customers the event merged into another: (merged away, kept).
    pub merges: Vec<(Uuid, Uuid)>,
}

/// How long one cache write may take before it counts as failed.
const CACHE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

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
        let (cache_updates, pending) = self.gather(effects);
        if let Err(error) = self.cache.apply(&cache_updates).await {
            self.metrics.cache_errors.inc();
            tracing::error!(error = %error, "cache update failed after commit");
        }
        publish_pending(&self.publisher, &self.pool, pending).await;
    }

    /// The cache updates and outbound events of `effects`, counting what
    /// they rejected, deduplicated and announced.
    fn gather(
        &self,
        effects: impl IntoIterator<Item = Effects>,
    ) -> (Vec<CacheUpdate>, Vec<Pending>) {
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
        (cache_updates, pending)
    }

    /// Like [`AfterCommit::apply`], but a cache write that fails because
    /// Redis is unavailable is tried again, waiting as `backoff` says, until
    /// Redis takes it: the caller (a lane) holds
    /// its conversations meanwhile, so no later event of theirs is applied
    /// over a cache that missed an update. The retries only delete keys (a
    /// conversation's turns instead of appending to them), which is safe to
    /// repeat and leaves nothing stale: a missing key is rebuilt from
    /// Postgres. A write Redis refuses (it answered) is logged and dropped,
    /// as [`AfterCommit::apply`] does.
    pub async fn apply_holding(
        &self,
        effects: impl IntoIterator<Item = Effects>,
        backoff: &Backoff,
    ) {
        let (mut cache_updates, pending) = self.gather(effects);
        let mut failures: u32 = 0;
        loop {
            let written =
                tokio::time::timeout(CACHE_WRITE_TIMEOUT, self.cache.apply(&cache_updates)).await;
            let error = match written {
                Ok(Ok(())) => break,
                Ok(Err(error)) if !worth_holding(&error) => {
                    // Redis answered and refused (not an outage): holding
                    // would stop the worker for good; the keys expire.
                    self.metrics.cache_errors.inc();
                    tracing::error!(error = %error, "cache update refused after commit");
                    break;
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {} s", CACHE_WRITE_TIMEOUT.as_secs()),
            };
            self.metrics.cache_errors.inc();
            failures = failures.saturating_add(1);
            let delay = backoff.delay_after(failures).unwrap_or(backoff.cap);
            if failures == 1 || failures.is_multiple_of(10) {
                tracing::warn!(failures, retry_in = ?delay, error = %error,
                    "cache update failed after commit; holding the batch and trying again");
            }
            if failures == 1 {
                cache_updates = cache_updates.into_iter().map(as_invalidation).collect();
            }
            tokio::time::sleep(delay).await;
        }
        if failures > 0 {
            tracing::info!(failures, "held cache update written");
        }
        publish_pending(&self.publisher, &self.pool, pending).await;
    }
}

/// Whether a failed cache write is worth holding the lane for: Redis is
/// unreachable, restarting or busy, rather than refusing the command.
fn worth_holding(error: &CacheError) -> bool {
    match error {
        CacheError::Redis(error) => !matches!(error.retry_method(), redis::RetryMethod::NoRetry),
        CacheError::Store(_) => true,
    }
}

/// The update that drops what `update` would have changed, so applying it
/// again is harmless.
fn as_invalidation(update: CacheUpdate) -> CacheUpdate {
    match update {
        CacheUpdate::AppendTurn {
            workspace_id,
            conversation,
            ..
        } => CacheUpdate::InvalidateConversation {
            workspace_id,
            conversation,
        },
        other => other,
    }
}
