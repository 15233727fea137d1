//! A lane handles the events of the conversations hashed to it, strictly in
//! arrival order. Whatever has queued up while the previous batch was being
//! written goes into the next transaction together, so under load one commit
//! covers many events; acks follow the commit. Messages for the model go to
//! the model stage just before the commit, with a signal of its outcome.
//!
//! A transient failure (Postgres or Redis unavailable, a serialization
//! failure, a lock timeout) holds the lane: the batch is tried again with
//! capped exponential backoff for as long as the fault lasts, and the events
//! behind it wait in the lane and in the broker (the prefetch bounds how
//! many), so no later event of a conversation overtakes an earlier one.
//! Only an event that is itself unusable is dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::effects::{AfterCommit, Effects};
use super::error::HandleError;
use super::handlers;
use super::hot_profile::BatchView;
use super::metrics::{DeadLetterKind, Metrics};
use super::model_job::{CommitNotice, CommitSignal};
use super::model_stage::ModelStage;
use super::workspace_rows::WorkspaceRows;
use crate::config::WorkerSettings;
use crate::event::{Event, EventBody, Sender};
use crate::queue::acks;
use crate::queue::legacy::InFlightGuard;
use crate::queue::publisher::Publisher;
use crate::retry::{Backoff, retry};
use crate::workspaces::Workspaces;

/// One decoded event and the delivery to acknowledge once it is stored.
pub struct Job {
    /// The event.
    pub event: Event,
    /// The broker's delivery.
    pub delivery: Delivery,
    /// When the worker received it.
    pub received_at: DateTime<Utc>,
    /// Tells the drain of the old work queue when the delivery is settled
    /// (dropped with the job).
    pub in_flight: Option<InFlightGuard>,
}

/// Everything a lane needs, shared by all lanes.
pub struct LaneContext {
    /// Postgres.
    pub pool: PgPool,
    /// Applies each batch's effects after its commit.
    pub after_commit: AfterCommit,
    /// Confirming publisher.
    pub publisher: Publisher,
    /// Workspace settings.
    pub workspaces: Arc<Workspaces>,
    /// Batching and retry settings.
    pub worker: Arc<WorkerSettings>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The model stage, when a model is configured.
    pub model_stage: Option<Arc<ModelStage>>,
    /// Workspace rows created ahead of the batches that name them.
    pub workspace_rows: WorkspaceRows,
}

/// Starts `count` lanes, each with a queue of `capacity` jobs: the senders,
/// indexed by lane, and the tasks, which end once their sender is dropped
/// and their queue is drained.
pub fn spawn(
    context: &Arc<LaneContext>,
    count: usize,
    capacity: usize,
) -> (Vec<mpsc::Sender<Job>>, JoinSet<()>) {
    let mut senders = Vec::with_capacity(count);
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let (sender, receiver) = mpsc::channel(capacity);
        senders.push(sender);
        tasks.spawn(run(Arc::clone(context), receiver));
    }
    (senders, tasks)
}

/// How a lane task ended while the worker still had its sender: it
/// panicked (its deliveries are neither acked nor nacked; they return to
/// the broker when the worker's connection closes).
#[derive(Debug, thiserror::Error)]
#[error("a lane {0}")]
pub struct LaneFailed(&'static str);

/// Waits until one of the lanes ends. Lanes end only once their sender is
/// dropped, so while the worker runs any lane that ends has failed.
pub async fn first_failure(tasks: &mut JoinSet<()>) -> LaneFailed {
    match tasks.join_next().await {
        Some(Err(ended)) if ended.is_panic() => LaneFailed("panicked"),
        Some(Err(_)) => LaneFailed("was cancelled"),
        Some(Ok(())) => LaneFailed("stopped"),
        None => {
            // No lanes at all: nothing can fail.
            std::future::pending::<()>().await;
            LaneFailed("stopped")
        }
    }
}

/// Runs a lane until its sender is dropped and its queue is drained.
pub async fn run(context: Arc<LaneContext>, mut jobs: mpsc::Receiver<Job>) {
    let linger = Duration::from_millis(context.worker.batch_linger_ms);
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        // Wait a moment for more events so one commit covers many; under
        // load the queue is already full and this returns at once.
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < context.worker.batch_max {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) if linger.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, jobs.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        context.process(batch).await;
    }
}

/// How held work is tried again: waits from `worker.store_backoff_ms`
/// doubling up to `worker.store_max_backoff_ms`, lengthened by up to a fifth
/// at random so lanes that failed together do not retry together, for as
/// long as the fault lasts.
pub fn hold_backoff(settings: &WorkerSettings) -> Backoff {
    Backoff {
        first: Duration::from_millis(settings.store_backoff_ms),
        factor: 2.0,
        cap: Duration::from_millis(settings.store_max_backoff_ms),
        attempts: u32::MAX,
        jitter: 0.2,
    }
}

/// Whether the `attempt`th retry of held work is worth a warning: the
/// first, then every tenth, so a long outage does not flood the log.
fn worth_a_warning(attempt: u32) -> bool {
    attempt == 1 || attempt.is_multiple_of(10)
}

impl LaneContext {
    async fn process(&self, batch: Vec<Job>) {
        // The fault suite makes a lane panic here (`FAILPOINTS=lane-batch=…`).
        fail::fail_point!("lane-batch");
        self.workspace_rows
            .ensure(
                &self.pool,
                &self.workspaces,
                batch
                    .iter()
                    .map(|job| job.event.envelope.workspace_id.as_str()),
            )
            .await;
        let view = self.read_hot_profile(&batch).await;
        match self.commit_holding(&batch, &view).await {
            Ok(effects) => self.finish(batch, effects).await,
            Err(_) if batch.len() > 1 => {
                // Isolate the event that fails so the others are not held back.
                for job in batch {
                    Box::pin(self.process(vec![job])).await;
                }
            }
            Err(error) => {
                if let Some(job) = batch.into_iter().next() {
                    self.dead_letter(job, error).await;
                }
            }
        }
    }

    /// Reads the hot profile of every conversation with a customer message
    /// in the batch, in one Redis round trip.
    async fn read_hot_profile(&self, batch: &[Job]) -> BatchView {
        let mut wanted: Vec<(&str, &str)> = Vec::new();
        for job in batch {
            if let EventBody::ChatMessage(message) = &job.event.body
                && message.sender == Sender::Customer
            {
                let key = (
                    job.event.envelope.workspace_id.as_str(),
                    message.conversation_id.as_str(),
                );
                if !wanted.contains(&key) {
                    wanted.push(key);
                }
            }
        }
        // The decision core reads the turns before a message, offline too.
        BatchView::prefetch(&self.after_commit.cache, &wanted, true).await
    }

    /// Commits the batch, trying again after each transient failure for as
    /// long as the failures last; returns only a permanent failure.
    async fn commit_holding(
        &self,
        batch: &[Job],
        view: &BatchView,
    ) -> Result<Vec<Effects>, HandleError> {
        let mut held = 0u32;
        let committed = retry(
            &hold_backoff(&self.worker),
            || self.commit_once(batch, view),
            |error, attempt| {
                held = attempt;
                self.metrics.store_retry();
                if worth_a_warning(attempt) {
                    tracing::warn!(retries = attempt, events = batch.len(), error = %error,
                        "transient store error; holding the batch and trying again");
                }
            },
        )
        .await;
        if held > 0 && committed.is_ok() {
            tracing::info!(retries = held, events = batch.len(), "held batch committed");
        }
        committed
    }

    async fn commit_once(
        &self,
        batch: &[Job],
        view: &BatchView,
    ) -> Result<Vec<Effects>, HandleError> {
        // What the batch learns stays with this attempt: a rolled-back
        // transaction's state must not reach the next.
        let mut view = view.clone();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(crate::store::StoreError::from)?;
        let events: Vec<&Event> = batch.iter().map(|job| &job.event).collect();
        let mut all = handlers::handle_all(&mut tx, &self.workspaces, &events, &mut view).await?;
        if let Some(last) = all.last_mut() {
            view.read_back_changed(&mut tx, &self.workspaces, last)
                .await?;
        }
        let notices = self.hand_to_model_stage(batch, &mut all);
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        for notice in notices {
            notice.committed();
        }
        Ok(all)
    }

    /// Hands the batch's model-path messages to the stage before the commit,
    /// so their prompts are built and their calls started while the commit
    /// is flushed. The stage writes nothing about a message until its
    /// notice arrives, and drops it if the notice is dropped instead (the
    /// commit failed; the broker redelivers the event).
    fn hand_to_model_stage(&self, batch: &[Job], effects: &mut [Effects]) -> Vec<CommitNotice> {
        let Some(stage) = &self.model_stage else {
            return Vec::new();
        };
        let mut notices = Vec::new();
        for (effect, job) in effects.iter_mut().zip(batch) {
            for mut message in effect.model_jobs.drain(..) {
                let (notice, signal) = CommitSignal::pair();
                message.received_at = Some(job.received_at);
                message.committed = signal;
                notices.push(notice);
                stage.submit(message);
            }
        }
        notices
    }

    async fn finish(&self, batch: Vec<Job>, effects: Vec<Effects>) {
        self.after_commit
            .apply_holding(effects, &hold_backoff(&self.worker))
            .await;
        self.metrics
            .batch_committed(batch.iter().map(|job| job.event.envelope.occurred_at));
        futures::future::join_all(batch.iter().map(|job| acks::ack(&job.delivery))).await;
    }

    /// Sends an event that cannot be handled to the dead-letter exchange
    /// with the reason, then acks it. A failed publish is tried again while
    /// the delivery can still be acked; once its channel is gone the broker
    /// delivers it again anyway.
    async fn dead_letter(&self, job: Job, error: HandleError) {
        let Job {
            event, delivery, ..
        } = job;
        let reason = error.to_string();
        tracing::error!(event_id = %event.envelope.id, kind = event.type_name(), reason = %reason,
            "event dead-lettered");
        self.metrics.dead_letter(DeadLetterKind::of(false, &error));
        let backoff = hold_backoff(&self.worker);
        let mut retries: u32 = 0;
        loop {
            let published = self
                .publisher
                .dead_letter(
                    &delivery.data,
                    &delivery.properties,
                    delivery.routing_key.as_str(),
                    &reason,
                )
                .await;
            match published {
                Ok(()) => return acks::ack(&delivery).await,
                Err(publish_error) if !delivery.acker.usable() => {
                    tracing::warn!(error = %publish_error,
                        "could not dead-letter an event and its channel is gone; the broker delivers it again");
                    return;
                }
                Err(publish_error) => {
                    retries = retries.saturating_add(1);
                    let delay = backoff.delay_after(retries).unwrap_or(backoff.cap);
                    if worth_a_warning(retries) {
                        tracing::warn!(retries, retry_in = ?delay, error = %publish_error,
                            "could not dead-letter an event; trying again");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(first_ms: u64, max_ms: u64) -> WorkerSettings {
        WorkerSettings {
            lanes: 1,
            batch_max: 1,
            batch_linger_ms: 0,
            store_backoff_ms: first_ms,
            store_max_backoff_ms: max_ms,
            shutdown_grace_secs: 1,
            max_text_bytes: 1,
        }
    }

    #[test]
    fn held_work_waits_double_up_to_the_cap_and_never_give_up() {
        let backoff = hold_backoff(&settings(50, 300));
        let delays: Vec<u64> = (1..=6)
            .filter_map(|failed| backoff.delay_after(failed))
            .map(|delay| delay.as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![50, 100, 200, 300, 300, 300]);
        assert!(backoff.delay_after(1_000_000).is_some());
    }

    #[tokio::test]
    async fn a_lane_that_panics_is_reported_as_failed() {
        let mut tasks = JoinSet::new();
        tasks.spawn(std::future::pending::<()>());
        tasks.spawn(async { panic!("injected by the test") });
        let failed = tokio::time::timeout(Duration::from_secs(5), first_failure(&mut tasks))
            .await
            .expect("the panic is noticed");
        assert_eq!(failed.to_string(), "a lane panicked");
    }

    #[test]
    fn a_long_outage_warns_only_now_and_then() {
        let warned: Vec<u32> = (1..=30).filter(|a| worth_a_warning(*a)).collect();
        assert_eq!(warned, vec![1, 10, 20, 30]);
    }
}
