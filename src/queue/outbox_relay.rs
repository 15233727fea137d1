//! The outbox relay: outbound events are written to `enrich.outbox` in the
//! transaction that caused them and published after its commit; a row is
//! removed only once the broker confirmed it. What a crashed or failed
//! publish left behind is published again by [`relay`], so a crash delays
//! an outbound event but never loses it.
//!
//! The worker's lanes hand their committed events to an
//! [`OutboundQueue`], whose task publishes them in the order they were
//! handed over, so a lane goes on to its next batch instead of waiting for
//! the broker's confirms and the rows' removal.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::publisher::{OutboundMessage, Publisher};
use crate::store::outbox::{self, Pending};

/// Publishes outbound events, all at once, and drops from the outbox those
/// the broker confirmed; the others stay for [`relay`].
pub async fn publish_pending(publisher: &Publisher, pool: &PgPool, pending: Vec<Pending>) {
    if pending.is_empty() {
        return;
    }
    let bodies: Vec<Vec<u8>> = pending
        .iter()
        .map(|event| serde_json::to_vec(&event.body).unwrap_or_default())
        .collect();
    let ids: Vec<String> = pending.iter().map(|event| event.id.to_string()).collect();
    let messages: Vec<OutboundMessage<'_>> = pending
        .iter()
        .zip(&bodies)
        .zip(&ids)
        .map(|((event, body), id)| OutboundMessage {
            routing_key: &event.routing_key,
            body,
            message_id: id,
        })
        .collect();
    let outcomes = publisher.publish_outbound_all(&messages).await;
    let mut confirmed = Vec::with_capacity(pending.len());
    let mut failures = 0usize;
    for (event, outcome) in pending.iter().zip(outcomes) {
        match outcome {
            Ok(()) => confirmed.push(event.id),
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %error, "outbound publish failed; the outbox relay will retry");
                }
            }
        }
    }
    if failures > 1 {
        tracing::warn!(
            failures,
            "outbound publishes failed; the outbox relay will retry them"
        );
    }
    if let Err(error) = outbox::remove(pool, &confirmed).await {
        tracing::warn!(error = %error, "could not clear published outbox rows; they may be sent twice");
    }
}

/// Publishes outbound events whose publisher died between commit and confirm.
pub async fn relay(publisher: Publisher, pool: PgPool) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        match outbox::stranded(&pool, 10, 500).await {
            Ok(pending) if !pending.is_empty() => {
                tracing::info!(count = pending.len(), "publishing stranded outbound events");
                publish_pending(&publisher, &pool, pending).await;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "outbox relay could not read the outbox"),
        }
    }
}

/// How many handed-over batches of outbound events may wait for the
/// publishing task before a lane handing over more waits too.
const QUEUED_BATCHES: usize = 256;

/// How committed outbound events get published.
#[derive(Clone)]
pub enum OutboundQueue {
    /// In the caller's task, before it goes on: the API answers a request
    /// only once its events are published.
    Inline {
        /// Publishes them.
        publisher: Publisher,
        /// Where their rows are removed.
        pool: PgPool,
    },
    /// Handed to a task that publishes them in the order they came
    /// ([`OutboundQueue::start`]): the worker's lanes.
    Handed(mpsc::Sender<Vec<Pending>>),
}

/// The task behind an [`OutboundQueue`]; [`OutboundPublisher::finish`]
/// publishes what was handed over and ends it.
pub struct OutboundPublisher {
    finish: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl OutboundQueue {
    /// Starts the publishing task.
    pub fn start(publisher: Publisher, pool: PgPool) -> (OutboundQueue, OutboundPublisher) {
        let (batches, receiver) = mpsc::channel(QUEUED_BATCHES);
        let (finish, finishing) = oneshot::channel();
        let task = tokio::spawn(publish_handed_over(publisher, pool, receiver, finishing));
        (
            OutboundQueue::Handed(batches),
            OutboundPublisher { finish, task },
        )
    }

    /// Publishes, or hands over, the outbound events of a committed
    /// transaction. Once the publishing task has stopped they stay in the
    /// outbox, for the relay.
    pub async fn submit(&self, pending: Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        match self {
            OutboundQueue::Inline { publisher, pool } => {
                publish_pending(publisher, pool, pending).await;
            }
            OutboundQueue::Handed(batches) => {
                if batches.send(pending).await.is_err() {
                    tracing::warn!(
                        "the outbound publisher has stopped; the outbox relay will publish these events"
                    );
                }
            }
        }
    }
}

impl OutboundPublisher {
    /// Publishes everything handed over so far, waiting at most `grace`,
    /// and stops; what is left stays in the outbox for the relay.
    pub async fn finish(self, grace: Duration) {
        let OutboundPublisher { finish, mut task } = self;
        // The task has ended already if it cannot hear this.
        let _ = finish.send(());
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "outbound events still unpublished at shutdown stay in the outbox for the relay"
            );
            task.abort();
        }
    }
}

/// Publishes the handed-over batches in order, each time together with
/// whatever else is waiting, until told to finish and drained.
async fn publish_handed_over(
    publisher: Publisher,
    pool: PgPool,
    mut batches: mpsc::Receiver<Vec<Pending>>,
    mut finishing: oneshot::Receiver<()>,
) {
    let mut closed = false;
    loop {
        let next = if closed {
            batches.recv().await
        } else {
            tokio::select! {
                biased;
                _ = &mut finishing => {
                    // Take no more; publish what is already queued.
                    batches.close();
                    closed = true;
                    continue;
                }
                next = batches.recv() => next,
            }
        };
        let Some(mut pending) = next else {
            return;
        };
        while let Ok(more) = batches.try_recv() {
            pending.extend(more);
        }
        publish_pending(&publisher, &pool, pending).await;
    }
}
