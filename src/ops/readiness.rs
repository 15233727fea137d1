//! Readiness: is this worker doing its job? Broker link up and consuming,
//! Postgres and Redis answering. The three checks run at once, each bounded
//! by [`CHECK_TIMEOUT`], so a dependency that hangs (a black-holed port)
//! makes the answer "not ready" well within a second instead of hanging
//! the orchestrator's probe.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;

use crate::queue::publisher::Publisher;
use crate::state::Cache;
use crate::store;

/// Longest wait of one dependency check.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(300);

/// What readiness looks at.
pub struct Readiness {
    pool: PgPool,
    cache: Cache,
    publisher: Publisher,
    consuming: AtomicBool,
}

/// The state of one dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// It answered.
    Ok,
    /// It failed or did not answer in time; the reason names no data.
    Failed(String),
}

/// The answer to one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// RabbitMQ link and consumer.
    pub broker: Check,
    /// Postgres.
    pub postgres: Check,
    /// Redis.
    pub redis: Check,
}

impl Report {
    /// Every check passed.
    pub fn ready(&self) -> bool {
        [&self.broker, &self.postgres, &self.redis]
            .iter()
            .all(|check| **check == Check::Ok)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", if self.ready() { "ready" } else { "not ready" })?;
        for (name, check) in [
            ("broker", &self.broker),
            ("postgres", &self.postgres),
            ("redis", &self.redis),
        ] {
            match check {
                Check::Ok => writeln!(f, "{name}: ok")?,
                Check::Failed(reason) => writeln!(f, "{name}: {reason}")?,
            }
        }
        Ok(())
    }
}

impl Readiness {
    /// Readiness over the worker's own connections; not consuming yet.
    pub fn new(pool: PgPool, cache: Cache, publisher: Publisher) -> Readiness {
        Readiness {
            pool,
            cache,
            publisher,
            consuming: AtomicBool::new(false),
        }
    }

    /// Marks the worker as consuming (true) or stopping (false).
    pub fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
    }

    /// Runs the checks at once, each bounded by [`CHECK_TIMEOUT`].
    pub async fn check(&self) -> Report {
        let postgres = bounded(async {
            store::status::ping(&self.pool)
                .await
                .map_err(|e| kind_of_store_error(&e))
        });
        let redis = bounded(async {
            self.cache
                .ping()
                .await
                .map_err(|_| "redis refused or unreachable".to_owned())
        });
        let (postgres, redis) = tokio::join!(postgres, redis);
        let broker = if !self.consuming.load(Ordering::Relaxed) {
            Check::Failed("not consuming".to_owned())
        } else if !self.publisher.connected() {
            Check::Failed("broker connection down".to_owned())
        } else {
            Check::Ok
        };
        Report {
            broker,
            postgres,
            redis,
        }
    }
}

fn kind_of_store_error(error: &store::StoreError) -> String {
    if error.is_transient() {
        "postgres unreachable or unavailable".to_owned()
    } else {
        "postgres refused the query".to_owned()
    }
}

async fn bounded(check: impl Future<Output = Result<(), String>>) -> Check {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => Check::Ok,
        Ok(Err(reason)) => Check::Failed(reason),
        Err(_) => Check::Failed(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
    }
}
