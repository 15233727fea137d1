//! The sweeper every worker runs: it claims ended conversations (closed, or
//! idle for `insights.idle_minutes`) one at a time in Postgres with
//! `FOR UPDATE SKIP LOCKED`, so however many workers run, each conversation
//! is claimed by one of them and summarised by exactly one model call. A
//! claim carries a token and a time: a worker that died mid-claim is taken
//! over after `insights.reclaim_minutes`, and the token keeps the late writer
//! from writing too. A close wakes the sweepers at once through
//! `LISTEN enrich_conversation_closed`; otherwise they look every
//! `insights.sweep_interval_secs`.
//!
//! Idle is measured on both clocks: the last message's source time and the
//! time it was stored, so replayed or imported history with old timestamps
//! is not summarised while it is still arriving.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use super::call::{CallShape, Model};
use super::summary::{self, Claimed};
use super::{profile, retry};
use crate::config::{InsightsSettings, Settings};
use crate::llm::model_client::ModelClient;
use crate::llm::prompts::Prompts;
use crate::queue::outbox_relay::publish_pending;
use crate::queue::publisher::Publisher;
use crate::store::{self, StoreError, insights, summaries};
use crate::workspaces::Workspaces;

/// The channel a close is announced on (see migration 0008).
pub const CLOSED_CHANNEL: &str = "enrich_conversation_closed";

struct Shared {
    pool: PgPool,
    publisher: Publisher,
    workspaces: Arc<Workspaces>,
    model: Option<Model>,
    settings: InsightsSettings,
}

/// Why the sweeper could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The summary or insights templates are unusable.
    #[error("prompts: {0}")]
    Prompts(#[from] crate::llm::prompts::PromptError),
    /// The sweeper's own Postgres pool could not be opened.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
}

/// The running sweeper; [`Insights::stop`] ends it.
pub struct Insights {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    helpers: Vec<JoinHandle<()>>,
}

impl Insights {
    /// Loads the summary and insights templates (when a model is configured)
    /// and starts the sweeper.
    pub async fn start(
        settings: &Settings,
        pool: PgPool,
        publisher: Publisher,
        workspaces: Arc<Workspaces>,
        client: Option<ModelClient>,
    ) -> Result<Insights, StartError> {
        let config = settings.insights.clone();
        let concurrency = config.concurrency.max(1);
        let mut helpers = Vec::new();
        let (model, pool) = match client {
            Some(client) => {
                let dir = &settings.llm.prompts_dir;
                let summary_prompts =
                    Prompts::load_pair(dir, summary::TEMPLATES, summary::sample_context)?;
                let insights_prompts =
                    Prompts::load_pair(dir, profile::TEMPLATES, profile::sample_context)?;
                helpers.push(tokio::spawn(summary_prompts.clone().watch()));
                helpers.push(tokio::spawn(insights_prompts.clone().watch()));
                // An insights update holds a transaction (an advisory lock)
                // across its call: its own pool keeps that from the lanes.
                let size = u32::try_from(concurrency)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1);
                let own = store::connect_with_size(&settings.postgres, size, 0, None).await?;
                let model = Model {
                    client,
                    shape: CallShape::new(&settings.llm, config.max_completion_tokens),
                    summary_prompts,
                    insights_prompts,
                };
                (Some(model), own)
            }
            None => (None, pool),
        };
        let wake = Arc::new(Notify::new());
        helpers.push(tokio::spawn(listen(
            settings.postgres.url.expose_secret().to_owned(),
            Arc::clone(&wake),
        )));
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            pool,
            publisher,
            workspaces,
            model,
            settings: config,
        });
        let task = tokio::spawn(run(shared, wake, stopped));
        Ok(Insights {
            stop,
            task,
            helpers,
        })
    }

    /// Stops claiming, lets in-flight summaries finish within `grace`, then
    /// ends. A summary cut short is taken over after the reclaim time.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            tracing::warn!("summaries still running at shutdown; they will be taken over later");
            task.abort();
        }
        for helper in self.helpers {
            helper.abort();
        }
    }
}

async fn run(shared: Arc<Shared>, wake: Arc<Notify>, mut stopped: watch::Receiver<bool>) {
    let period = Duration::from_secs(shared.settings.sweep_interval_secs.max(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let concurrency = shared.settings.concurrency.max(1);
    let mut tasks: JoinSet<()> = JoinSet::new();
    tracing::info!(
        idle_secs = shared.settings.idle().as_secs(),
        with_model = shared.model.is_some(),
        "summary sweeper started"
    );
    loop {
        let mut swept = false;
        tokio::select! {
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    break;
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tick.tick() => swept = true,
            () = wake.notified() => {}
        }
        fill(&shared, &mut tasks, concurrency).await;
        if swept && shared.model.is_some() {
            recover_pending_insights(&shared, &mut tasks, concurrency).await;
        }
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!("summary sweeper stopped");
}

/// Claims due conversations while there is room.
async fn fill(shared: &Arc<Shared>, tasks: &mut JoinSet<()>, concurrency: usize) {
    while tasks.len() < concurrency {
        match claim(shared).await {
            Ok(Some(claimed)) => {
                tasks.spawn(process(Arc::clone(shared), claimed));
            }
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(error = %error, "could not claim conversations to summarise; will retry");
                return;
            }
        }
    }
}

async fn claim(shared: &Shared) -> Result<Option<Claimed>, StoreError> {
    let reclaim = Duration::from_secs(shared.settings.reclaim_minutes.max(1) * 60);
    summaries::claim(&shared.pool, shared.settings.idle(), reclaim).await
}

#[tracing::instrument(skip_all, fields(conversation = claimed.id))]
async fn process(shared: Arc<Shared>, claimed: Claimed) {
    let Some(model) = &shared.model else {
        // Offline: no AI text at all, but the conversation is done with.
        finish(&shared, &claimed, "offline").await;
        return;
    };
    let enrichment = shared
        .workspaces
        .get(&claimed.workspace_id)
        .is_some_and(|w| w.settings.enrichment);
    if !enrichment || claimed.customer_turns <= 0 {
        finish(&shared, &claimed, "skipped").await;
        return;
    }
    let pool = &shared.pool;
    let claimed = &claimed;
    let max_messages = shared.settings.max_transcript_messages;
    let transcript =
        retry(|| async move { summaries::transcript(pool, claimed.id, max_messages).await }).await;
    let (rows, omitted) = match transcript {
        Ok(loaded) => loaded,
        Err(error) => {
            // The claim stays; it is taken over after the reclaim time.
            tracing::error!(error = %error, "could not read the conversation to summarise");
            return;
        }
    };
    let (result, accounting) = summary::summarise(model, claimed, &rows, omitted).await;
    let accounting = &accounting;
    let customer_id = match &result {
        Ok(summary) => {
            let stored = retry(|| async move {
                let mut tx = pool.begin().await?;
                let stored = summary::store(&mut tx, claimed, summary, accounting).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(stored)
            })
            .await;
            match stored {
                Ok(Some(stored)) => {
                    tracing::info!(
                        attempts = accounting.attempts,
                        latency_ms = accounting.latency.as_millis() as u64,
                        "conversation summarised"
                    );
                    publish_pending(&shared.publisher, pool, vec![stored.pending]).await;
                    Some(stored.customer_id)
                }
                Ok(None) => {
                    tracing::warn!(
                        "summary claim was taken over by another worker; result dropped"
                    );
                    None
                }
                Err(error) => {
                    // The call is spent: mark it failed so no sweep calls again.
                    tracing::error!(error = %error, "could not store the summary");
                    let mut conn = pool.acquire().await.ok();
                    if let Some(conn) = conn.as_mut() {
                        let failed = Some(("store_error", accounting));
                        let marked =
                            summary::finish_without_summary(conn, claimed, "failed", failed);
                        if let Err(error) = marked.await {
                            tracing::error!(error = %error, "could not mark the summary failed");
                        }
                    }
                    None
                }
            }
        }
        Err(failure) => {
            tracing::warn!(
                outcome = failure.outcome(),
                attempts = accounting.attempts,
                "summary call failed; the conversation stays without a summary"
            );
            let failed = retry(|| async move {
                let mut tx = pool.begin().await?;
                let mine = summary::finish_without_summary(
                    &mut tx,
                    claimed,
                    "failed",
                    Some((failure.outcome(), accounting)),
                )
                .await?;
                tx.commit().await?;
                Ok::<_, StoreError>(mine)
            })
            .await;
            if let Err(error) = failed {
                tracing::error!(error = %error, "could not record the failed summary");
            }
            None
        }
    };
    if let Some(customer_id) = customer_id {
        update_insights(&shared, model, customer_id).await;
    }
}

async fn finish(shared: &Shared, claimed: &Claimed, status: &'static str) {
    let pool = &shared.pool;
    let result = retry(|| async move {
        let mut conn = pool.acquire().await?;
        summary::finish_without_summary(&mut conn, claimed, status, None).await
    })
    .await;
    if let Err(error) = result {
        tracing::error!(error = %error, status, "could not mark the conversation processed");
    }
}

async fn update_insights(shared: &Shared, model: &Model, customer_id: Uuid) {
    match profile::update_customer(&shared.pool, &shared.publisher, model, customer_id).await {
        Ok(0) => {}
        Ok(updates) => tracing::info!(updates, "customer insights updated"),
        Err(error) => {
            tracing::warn!(error = %error, "customer insights update failed; the next sweep retries")
        }
    }
}

/// Customers with summaries not yet folded into their insights (their
/// updater lost a race or died): handed to free slots, one task per customer.
async fn recover_pending_insights(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    concurrency: usize,
) {
    let room = concurrency.saturating_sub(tasks.len());
    if room == 0 {
        return;
    }
    match insights::customers_with_stale_pending(&shared.pool, room).await {
        Ok(customers) => {
            for customer_id in customers {
                let shared = Arc::clone(shared);
                tasks.spawn(async move {
                    if let Some(model) = &shared.model {
                        update_insights(&shared, model, customer_id).await;
                    }
                });
            }
        }
        Err(error) => tracing::warn!(error = %error, "could not look for pending insights"),
    }
}

/// Forwards close notifications to the sweeper; reconnects on loss. Without
/// it the sweeper still runs on its interval.
async fn listen(url: String, wake: Arc<Notify>) {
    loop {
        match PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen(CLOSED_CHANNEL).await {
                Ok(()) => loop {
                    match listener.recv().await {
                        Ok(_) => wake.notify_one(),
                        Err(error) => {
                            tracing::debug!(error = %error, "close notifications interrupted");
                            break;
                        }
                    }
                },
                Err(error) => tracing::debug!(error = %error, "LISTEN failed"),
            },
            Err(error) => tracing::debug!(error = %error, "close listener could not connect"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
