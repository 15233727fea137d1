//! Refreshes the gauges that are read rather than counted: each lane's
//! queue depth (every second) and, from Postgres, the outbox backlog, the
//! messages waiting for the model and the asks by outcome (every
//! [`DATABASE_EVERY`]).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc::WeakSender;

use crate::store;
use crate::worker::metrics::Metrics;

/// How often the database figures are read.
pub const DATABASE_EVERY: Duration = Duration::from_secs(15);

/// Samples until aborted. Holds only weak senders, so the lanes still end
/// when the dispatcher drops its senders.
pub async fn run<T: Send + 'static>(
    metrics: Arc<Metrics>,
    pool: PgPool,
    lanes: Vec<WeakSender<T>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_database: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        let depths: Vec<usize> = lanes
            .iter()
            .map(|lane| {
                lane.upgrade()
                    .map(|sender| sender.max_capacity() - sender.capacity())
                    .unwrap_or(0)
            })
            .collect();
        metrics.lane_depths(&depths);
        if last_database.is_some_and(|at| at.elapsed() < DATABASE_EVERY) {
            continue;
        }
        last_database = Some(tokio::time::Instant::now());
        match store::status::backlogs(&pool).await {
            Ok(backlogs) => metrics.sampled(&backlogs),
            Err(error) => {
                metrics.postgres_errors.inc();
                tracing::debug!(error = %error, "could not sample the database figures");
            }
        }
    }
}
