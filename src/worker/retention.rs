//! The periodic sweep that enforces the retention of anonymous profiles.
//! Safe with several workers: each sweep deletes rows it locked itself.

use std::time::Duration;

use sqlx::PgPool;

use crate::config::RetentionSettings;
use crate::store::retention::remove_inactive_anonymous;

const BATCH: i64 = 1000;

/// Sweeps every `sweep_interval_secs` until the task is aborted.
pub async fn sweep(pool: PgPool, settings: RetentionSettings) {
    let mut tick = tokio::time::interval(Duration::from_secs(settings.sweep_interval_secs.max(1)));
    loop {
        tick.tick().await;
        let mut total = 0;
        loop {
            match remove_inactive_anonymous(&pool, settings.anonymous_days, BATCH).await {
                Ok(removed) => {
                    total += removed;
                    if removed < BATCH as u64 {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "retention sweep failed; will retry");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                removed = total,
                days = settings.anonymous_days,
                "removed inactive anonymous profiles"
            );
        }
    }
}
