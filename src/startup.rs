//! Start-up in one place: [`Application::build`] connects to Postgres, Redis
//! and RabbitMQ, applies migrations, syncs workspaces and declares the
//! topology; [`Application::run_until_stopped`] starts the lanes, the model
//! stage, the summary sweeper, the outbox relay, the dead-letter sink, the
//! retention sweep and the metrics and health endpoint ([`crate::ops`]),
//! drains the single work queue of earlier versions if it still exists,
//! consumes the shard queues, and on a stop signal stops taking deliveries,
//! lets the lanes finish and ack what they hold, and closes the connections
//! (which hands this replica's shards to the others). What makes start-up
//! impossible (a missing API key, an unreadable prompt, an unreachable
//! dependency) is reported as one line naming what and where. Nothing that
//! it starts imports it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;

use crate::config::Settings;
use crate::event::Limits;
use crate::insights::Insights;
use crate::llm::model_client::ModelClient;
use crate::llm::prompts::Prompts;
use crate::ops::readiness::Readiness;
use crate::ops::{self, OpsListener};
use crate::queue::shard_count::ShardCountError;
use crate::queue::{dead_letter_sink, legacy, outbox_relay};
use crate::queue::{publisher::Publisher, subscription::Subscription};
use crate::state::Cache;
use crate::store;
use crate::store::chat::ModelHandoff;
use crate::store::warm_up::HotPath;
use crate::worker::effects::AfterCommit;
use crate::worker::lane::{self, LaneContext};
use crate::worker::metrics::Metrics;
use crate::worker::model_stage::ModelStage;
use crate::worker::workspace_rows::WorkspaceRows;
use crate::worker::{Dispatcher, retention};
use crate::workspaces::Workspaces;

/// Why enricher could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Settings are unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Postgres is unreachable or refused.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// A dependency could not be reached at start-up.
    #[error("{what} at {location}: {reason}")]
    Unreachable {
        /// `postgres`, `redis` or `rabbitmq`.
        what: &'static str,
        /// Host, port and database or vhost (never the password).
        location: String,
        /// The driver's reason.
        reason: String,
    },
    /// A model is configured but its API key variable is unset or empty.
    #[error(
        "llm: base_url is set but the API key variable `{0}` is unset or empty (export it, or set llm.api_key_env = \"\" for a server that takes no key)"
    )]
    MissingApiKey(String),
    /// The metrics and health endpoint could not start.
    #[error(transparent)]
    Http(#[from] crate::ops::HttpError),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Syncing workspaces failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Redis is unreachable.
    #[error(transparent)]
    Cache(#[from] crate::state::CacheError),
    /// RabbitMQ is unreachable or refused the topology at start-up (later
    /// broker trouble is handled by the subscription, never returned).
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker's shard queues do not match `amqp.shards` and cannot
    /// safely be made to.
    #[error("rabbitmq: {0}")]
    ShardCount(ShardCountError),
    /// The prompt templates are unusable.
    #[error("prompts: {0}")]
    Prompts(#[from] crate::llm::prompts::PromptError),
    /// The summary sweeper could not start.
    #[error("summaries: {0}")]
    Insights(#[from] crate::insights::sweeper::StartError),
    /// A lane or the model stage's pager failed while the worker ran. The
    /// worker stopped taking deliveries, let the other lanes finish, and
    /// exits non-zero so its supervisor restarts it; what the failed task
    /// held returns to the broker or stays pending in Postgres.
    #[error("{0}; the worker stopped (its supervisor restarts it)")]
    Failed(String),
    /// The model client could not be built.
    #[error("llm client: {0}")]
    Llm(String),
}

/// enricher with every connection open, ready to run.
pub struct Application {
    settings: Settings,
    pool: PgPool,
    cache: Cache,
    link: Subscription,
    publisher: Publisher,
    workspaces: Arc<Workspaces>,
    metrics: Arc<Metrics>,
    model: Option<(ModelClient, Prompts)>,
    readiness: Arc<Readiness>,
    http: Option<OpsListener>,
}

impl Application {
    /// Connects to every store, applies migrations, syncs workspaces and
    /// declares the topology.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let with_model = settings
            .llm
            .base_url
            .as_deref()
            .is_some_and(|url| !url.trim().is_empty());
        let model_handoff = if with_model {
            ModelHandoff::Pending {
                recent_turns: settings.redis.recent_turns,
            }
        } else {
            ModelHandoff::None
        };
        if with_model {
            check_api_key(&settings.llm.api_key_env)?;
        }
        let http = match ops::listen_address(&settings.http.listen)? {
            Some(address) => Some(OpsListener::bind(address).await?),
            None => None,
        };
        let workspaces = Arc::new(Workspaces::new(
            settings.workspaces.clone(),
            &settings.asks,
            model_handoff,
        )?);
        let started = std::time::Instant::now();
        workspaces.prime_decision_core();
        tracing::debug!(elapsed = ?started.elapsed(), "decision core primed");
        // Every lane holds a connection while it writes a batch.
        let lanes = u32::try_from(settings.worker.lanes).unwrap_or(u32::MAX);
        // The pools warm their connections with the current schema's statements.
        let prompts = Prompts::load(&settings.llm.prompts_dir)?;
        let postgres_at = || location(settings.postgres.url.expose_secret());
        store::migrate_before_pools(&settings.postgres)
            .await
            .map_err(|e| unreachable("postgres", postgres_at(), &e))?;
        let pool = store::connect_with_size(
            &settings.postgres,
            settings.postgres.max_connections,
            lanes,
            Some(HotPath::Lanes),
        )
        .await
        .map_err(|e| unreachable("postgres", postgres_at(), &e))?;
        store::workspaces::sync(&pool, &settings.workspaces).await?;
        let cache = Cache::connect(&settings.redis)
            .await
            .map_err(|e| unreachable("redis", location(settings.redis.url.expose_secret()), &e))?;
        let link = Subscription::open(&settings.amqp, "enricher-worker")
            .await
            .map_err(|e| match e {
                ShardCountError::Amqp(e) => {
                    unreachable("rabbitmq", location(settings.amqp.url.expose_secret()), &e)
                }
                refused => StartupError::ShardCount(refused),
            })?;
        let publisher = link.publisher().clone();
        let metrics = Arc::new(Metrics::default());
        let model = ModelClient::from_settings(&settings.llm, prompts.clone())
            .map_err(|e| StartupError::Llm(e.to_string()))?
            .map(|enricher| (enricher.observed_by(Arc::clone(&metrics) as _), prompts));
        match &model {
            Some((enricher, _)) => tracing::info!(model = enricher.model(), "model configured"),
            None => {
                tracing::info!("no model configured: offline mode (patterns and keyword triggers)")
            }
        }
        let readiness = Arc::new(Readiness::new(
            pool.clone(),
            cache.clone(),
            publisher.clone(),
        ));
        Ok(Application {
            settings,
            pool,
            cache,
            link,
            publisher,
            workspaces,
            metrics,
            model,
            readiness,
            http,
        })
    }

    /// The worker's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Where the metrics and health endpoint listens, when it is on.
    pub fn http_address(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().and_then(OpsListener::local_addr)
    }

    /// Consumes until `shutdown` resolves, then drains and exits.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartupError> {
        let lanes = self.settings.worker.lanes;
        // The model stage gets its own pool so hundreds of conversations
        // waiting on the model never starve the lanes of connections. As
        // many connections as there are lanes open (and warm) at start-up,
        // so the first model results do not wait for a password exchange;
        // the rest open as calls pile up.
        let model_pool = match &self.model {
            Some(_) => {
                let size = self.settings.postgres.model_stage_connections;
                Some(
                    store::connect_with_size(
                        &self.settings.postgres,
                        size,
                        u32::try_from(lanes).unwrap_or(u32::MAX),
                        Some(HotPath::ModelStage),
                    )
                    .await?,
                )
            }
            None => None,
        };
        let model_stage = self
            .model
            .as_ref()
            .zip(model_pool)
            .map(|((enricher, _), model_pool)| {
                let after_commit = AfterCommit {
                    cache: self.cache.clone(),
                    publisher: self.publisher.clone(),
                    pool: model_pool.clone(),
                    metrics: Arc::clone(&self.metrics),
                };
                ModelStage::new(
                    model_pool,
                    self.cache.clone(),
                    after_commit,
                    Arc::clone(&self.workspaces),
                    enricher.clone(),
                    self.settings.llm.clone(),
                    self.settings.redis.recent_turns,
                    Arc::clone(&self.metrics),
                )
            });
        let prompt_watcher = self
            .model
            .as_ref()
            .map(|(_, prompts)| tokio::spawn(prompts.clone().watch()));
        // Reads back what an earlier run left pending, then whatever does
        // not fit in the stage's memory, as room frees up.
        let mut pager = model_stage.as_ref().map(|stage| {
            let every = Duration::from_secs(self.settings.llm.resume_after_secs);
            tokio::spawn(Arc::clone(stage).run_pager(every))
        });
        // Summaries and insights of ended conversations (src/insights).
        let model_client = self.model.as_ref().map(|(enricher, _)| enricher.clone());
        let insights = Insights::start(
            &self.settings,
            self.pool.clone(),
            self.publisher.clone(),
            Arc::clone(&self.workspaces),
            model_client,
        )
        .await?;
        let context = Arc::new(LaneContext {
            pool: self.pool.clone(),
            after_commit: AfterCommit {
                cache: self.cache.clone(),
                publisher: self.publisher.clone(),
                pool: self.pool.clone(),
                metrics: Arc::clone(&self.metrics),
            },
            publisher: self.publisher.clone(),
            workspaces: Arc::clone(&self.workspaces),
            worker: Arc::new(self.settings.worker.clone()),
            metrics: Arc::clone(&self.metrics),
            model_stage,
            workspace_rows: WorkspaceRows::default(),
        });
        let lane_capacity = (usize::from(self.settings.amqp.prefetch) / lanes).max(1) * 2;
        let (senders, mut lane_tasks) = lane::spawn(&context, lanes, lane_capacity);
        let sampler = tokio::spawn(ops::sampler::run(
            Arc::clone(&self.metrics),
            self.pool.clone(),
            senders.iter().map(|lane| lane.downgrade()).collect(),
        ));
        let http = self.http.take().map(|listener| {
            if let Some(address) = listener.local_addr() {
                tracing::info!(%address, "serving /metrics, /healthz and /readyz");
            }
            tokio::spawn(ops::serve(
                listener,
                Arc::clone(&self.metrics),
                Arc::clone(&self.readiness),
            ))
        });
        let relay = tokio::spawn(outbox_relay::relay(
            self.publisher.clone(),
            self.pool.clone(),
        ));
        let retention_sweep = tokio::spawn(retention::sweep(
            self.pool.clone(),
            self.settings.retention.clone(),
        ));
        let counters = tokio::spawn(log_counters(Arc::clone(&self.metrics)));
        // What reaches the dead-letter queue moves into enrich.dead_letters.
        let dead_letter_sink = tokio::spawn(dead_letter_sink::run(
            self.settings.amqp.clone(),
            self.pool.clone(),
        ));

        let dispatcher = Dispatcher {
            workspaces: Arc::clone(&self.workspaces),
            publisher: self.publisher.clone(),
            metrics: Arc::clone(&self.metrics),
            limits: Limits {
                max_text_bytes: self.settings.worker.max_text_bytes,
            },
            lanes: senders,
        };
        tokio::pin!(shutdown);
        // Events still in the single work queue of earlier versions go
        // first (see crate::queue::legacy); every replica waits for them.
        let mut failure = None;
        let old_queues_gone = tokio::select! {
            () = &mut shutdown => false,
            () = legacy::drain(&self.settings.amqp, &dispatcher) => true,
        };
        if old_queues_gone {
            self.link.start().await?;
            self.readiness.set_consuming(true);
            tracing::info!(
                shards = self.settings.amqp.shards,
                exchange = %self.settings.amqp.shard_exchange,
                lanes,
                "consuming"
            );
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    failed = lane::first_failure(&mut lane_tasks) => {
                        tracing::error!(error = %failed, "a lane failed; stopping the worker");
                        failure = Some(failed.to_string());
                        break;
                    }
                    ended = pager_ended(&mut pager) => {
                        tracing::error!(reason = ended, "the model stage's pager failed; stopping the worker");
                        failure = Some(format!("the model stage's pager {ended}"));
                        break;
                    }
                    (delivery, in_flight) = self.link.next_delivery() => {
                        dispatcher.dispatch_tracked(delivery, Some(in_flight)).await;
                    }
                }
            }
        }
        self.readiness.set_consuming(false);
        tracing::info!("stopping: no new deliveries, finishing in-flight work");
        drop(dispatcher);
        let grace = Duration::from_secs(self.settings.worker.shutdown_grace_secs);
        let drained = tokio::time::timeout(grace, async {
            while lane_tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "grace period over; unacked events will be redelivered"
            );
        }
        insights.stop(grace).await;
        relay.abort();
        dead_letter_sink.abort();
        retention_sweep.abort();
        if let Some(pager) = pager {
            pager.abort();
        }
        counters.abort();
        sampler.abort();
        if let Some(http) = http {
            http.abort();
        }
        if let Some(watcher) = prompt_watcher {
            watcher.abort();
        }
        self.metrics.log();
        self.link.close().await;
        match failure {
            Some(failure) => Err(StartupError::Failed(failure)),
            None => Ok(()),
        }
    }
}

/// Resolves when the pager task ended (it never does unless it failed);
/// never, when there is none.
async fn pager_ended(pager: &mut Option<tokio::task::JoinHandle<()>>) -> &'static str {
    match pager {
        Some(task) => {
            let ended = task.await;
            *pager = None;
            match ended {
                Err(error) if error.is_panic() => "panicked",
                _ => "stopped",
            }
        }
        None => std::future::pending().await,
    }
}

/// Logs the counters every minute.
async fn log_counters(metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        metrics.log();
    }
}

/// Refuses to start a model whose API key variable is unset or empty; an
/// empty variable *name* means the server takes no key.
fn check_api_key(variable: &str) -> Result<(), StartupError> {
    if variable.trim().is_empty() {
        return Ok(());
    }
    match std::env::var(variable) {
        Ok(key) if !key.trim().is_empty() => Ok(()),
        _ => Err(StartupError::MissingApiKey(variable.to_owned())),
    }
}

fn unreachable(
    what: &'static str,
    location: String,
    error: &dyn std::fmt::Display,
) -> StartupError {
    StartupError::Unreachable {
        what,
        location,
        reason: error.to_string(),
    }
}

/// A connection URL without its scheme and credentials: `host:port/db`.
pub fn location(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split(['?', '#']).next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_never_show_credentials() {
        assert_eq!(
            location("postgres://enricher:secret@db.internal:5432/enricher?sslmode=require"),
            "db.internal:5432/enricher"
        );
        assert_eq!(location("redis://127.0.0.1:6379/0"), "127.0.0.1:6379/0");
        assert_eq!(location("amqp://guest:p@ss@host:5672/%2f"), "host:5672/%2f");
    }

    #[test]
    fn an_empty_key_variable_name_means_no_key() {
        assert!(check_api_key("").is_ok());
        let missing = check_api_key("ENRICHER_TEST_SURELY_UNSET_KEY").expect_err("unset");
        assert!(
            missing
                .to_string()
                .contains("ENRICHER_TEST_SURELY_UNSET_KEY"),
            "{missing}"
        );
    }
}
