//! A lane handles the events of the conversations hashed to it, strictly in
//! arrival order. Whatever has queued up while the previous batch was being
//! written goes into the next transaction together, so under load one commit
//! covers many events; acks follow the commit. Messages for the model go to
//! the model stage just before the commit, with a signal of its outcome.

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
use crate::config::{AmqpSettings, WorkerSettings};
use crate::event::{Event, EventBody, Sender};
use crate::queue::acks;
use crate::queue::publisher::{self, Publisher};
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
    /// Retry queue names and delays.
    pub amqp: Arc<AmqpSettings>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The model stage, when a model is configured.
    pub model_stage: Option<Arc<ModelStage>>,
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

/// How a batch's commit is retried on a transient store error:
/// `worker.store_attempts` attempts, waits from `worker.store_backoff_ms`
/// doubling up to a second, lengthened by up to a fifth at random so lanes
/// that failed together do not retry together.
fn commit_backoff(settings: &WorkerSettings) -> Backoff {
    Backoff {
        first: Duration::from_millis(settings.store_backoff_ms),
        factor: 2.0,
        cap: Duration::from_secs(1),
        attempts: settings.store_attempts,
        jitter: 0.2,
    }
}

impl LaneContext {
    async fn process(&self, batch: Vec<Job>) {
        let view = self.read_hot_profile(&batch).await;
        match self.commit_with_retries(&batch, &view).await {
            Ok(effects) => self.finish(batch, effects).await,
            Err(_) if batch.len() > 1 => {
                // Isolate the event that fails so the others are not held back.
                for job in batch {
                    Box::pin(self.process(vec![job])).await;
                }
            }
            Err(error) => {
                if let Some(job) = batch.into_iter().next() {
                    self.give_up(job, error).await;
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

    async fn commit_with_retries(
        &self,
        batch: &[Job],
        view: &BatchView,
    ) -> Result<Vec<Effects>, HandleError> {
        retry(
            &commit_backoff(&self.worker),
            || self.commit_once(batch, view),
            |error, attempt| {
                tracing::warn!(attempt, error = %error, "transient store error; retrying the batch");
                self.metrics.store_retry();
            },
        )
        .await
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
        let mut all = Vec::with_capacity(batch.len());
        for job in batch {
            all.push(handlers::handle(&mut tx, &self.workspaces, &job.event, &mut view).await?);
        }
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
        self.after_commit.apply(effects).await;
        self.metrics
            .batch_committed(batch.iter().map(|job| job.event.envelope.occurred_at));
        futures::future::join_all(batch.iter().map(|job| acks::ack(&job.delivery))).await;
    }

    async fn give_up(&self, job: Job, error: HandleError) {
        let Job {
            event, delivery, ..
        } = job;
        let retriable = matches!(&error, HandleError::Store(e) if e.is_transient());
        let attempts = publisher::attempts_so_far(&delivery.properties);
        let next_delay = self.amqp.retry_delays_ms.get(attempts as usize).copied();
        let parked = match (retriable, next_delay) {
            (true, Some(delay)) => {
                tracing::warn!(event_id = %event.envelope.id, attempt = attempts + 1, delay_ms = delay, error = %error,
                    "event failed; retrying later");
                self.metrics.delayed_retries.inc();
                self.publisher
                    .retry_later(
                        &self.amqp,
                        &delivery.data,
                        &delivery.properties,
                        attempts + 1,
                        delay,
                    )
                    .await
            }
            _ => {
                let reason = if retriable {
                    format!("gave up after {} delayed retries: {error}", attempts)
                } else {
                    error.to_string()
                };
                tracing::error!(event_id = %event.envelope.id, kind = event.type_name(), reason = %reason,
                    "event dead-lettered");
                self.metrics
                    .dead_letter(DeadLetterKind::of(retriable, &error));
                self.publisher
                    .dead_letter(
                        &delivery.data,
                        &delivery.properties,
                        delivery.routing_key.as_str(),
                        &reason,
                    )
                    .await
            }
        };
        match parked {
            Ok(()) => acks::ack(&delivery).await,
            Err(publish_error) => {
                tracing::error!(error = %publish_error, "could not park a failed event; returning it to the queue");
                acks::requeue(&delivery).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_retries_follow_the_worker_settings() {
        let settings = WorkerSettings {
            lanes: 1,
            batch_max: 1,
            batch_linger_ms: 0,
            store_attempts: 6,
            store_backoff_ms: 200,
            shutdown_grace_secs: 1,
            max_text_bytes: 1,
        };
        let policy = commit_backoff(&settings);
        let waits: Vec<u128> = policy.delays().map(|wait| wait.as_millis()).collect();
        // Doubling from the configured first wait, capped at a second.
        assert_eq!(waits, vec![200, 400, 800, 1000, 1000]);
    }
}
