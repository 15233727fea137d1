//! Upgrading from the single work queue of earlier versions without losing
//! or reordering an event.
//!
//! Earlier versions consumed one queue (`amqp.work_queue`, `enrich.work`)
//! bound to the inbound exchange, and parked failed events in TTL retry
//! queues (`enrich.retry.<delay>ms`) that led back to it. The topology now
//! binds the shard exchange first, so no event published from then on is
//! lost; [`drain`] then, before the worker consumes any shard:
//!
//! 1. declares those queues as earlier versions did (a passive declare of a
//!    missing queue would cost a channel error), and unbinds the old work
//!    queue from the inbound exchange (an event that arrived in between is
//!    in both places: the copy handled second is a duplicate, which the
//!    event-id dedupe absorbs);
//! 2. if they hold no message and have no consumer (a fresh installation,
//!    or an upgrade already done), deletes them and is done;
//! 3. otherwise consumes every one of them with an exclusive consumer, so a single
//!    replica drains them in queue order, and hands each delivery to the
//!    lanes like any other; a replica that cannot get exclusive access
//!    (another replica drains, or a worker of the old version still runs)
//!    waits and looks again;
//! 4. once they are all empty and every delivery it took is settled, stops
//!    consuming and deletes them (`if-empty`, so nothing that arrived late
//!    is lost; if one is not empty the drain starts over).
//!
//! Every replica waits in [`drain`] until the old queues are gone, so no
//! shard event of a conversation is handled before its older events in the
//! old queues.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::SelectAll;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Connection, Consumer};
use tokio::sync::Notify;

use super::inspect::{QueueState, queue_state};
use super::{connect, topology};
use crate::config::AmqpSettings;

/// How often the drain checks whether the old queues are empty.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a replica waits before looking again while another process
/// consumes the old queues.
const BUSY_WAIT: Duration = Duration::from_secs(2);
/// Backoff after a broker error.
const ERROR_MIN_DELAY: Duration = Duration::from_millis(200);
const ERROR_MAX_DELAY: Duration = Duration::from_secs(5);
/// How long cancelling the consumers or closing the connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts deliveries handed out by the drain that are not settled yet.
#[derive(Clone, Default)]
pub struct InFlight(Arc<InFlightState>);

#[derive(Default)]
struct InFlightState {
    count: AtomicUsize,
    settled: Notify,
}

/// One unsettled delivery: dropped once its event is acked, dead-lettered
/// or abandoned.
pub struct InFlightGuard(Arc<InFlightState>);

impl InFlight {
    /// Counts one more delivery handed out, until the guard is dropped.
    pub fn track(&self) -> InFlightGuard {
        self.0.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(Arc::clone(&self.0))
    }

    /// Deliveries handed out and not settled yet.
    pub fn count(&self) -> usize {
        self.0.count.load(Ordering::SeqCst)
    }

    /// Waits until every delivery handed out is settled.
    async fn settled(&self) {
        loop {
            let notified = self.0.settled.notified();
            if self.count() == 0 {
                return;
            }
            // A missed wake-up costs at most the check interval.
            let _ = tokio::time::timeout(CHECK_EVERY, notified).await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

/// Takes the drained deliveries (the worker's dispatcher).
pub trait DrainTarget {
    /// Handles one delivery; `in_flight` is dropped once it is settled.
    fn take(
        &self,
        delivery: Delivery,
        in_flight: InFlightGuard,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// The queues of the single-queue version with the arguments it declared
/// them with: the work queue first, then the retry queues.
pub fn old_queues(settings: &AmqpSettings) -> Vec<(String, FieldTable)> {
    let text = |value: &str| AMQPValue::LongString(LongString::from(value));
    let mut work = FieldTable::default();
    work.insert(ShortString::from("x-queue-type"), text("quorum"));
    work.insert(
        ShortString::from("x-dead-letter-exchange"),
        text(&settings.dead_letter_exchange),
    );
    work.insert(
        ShortString::from("x-delivery-limit"),
        AMQPValue::LongLongInt(i64::from(settings.delivery_limit)),
    );
    let retries = settings.retry_delays_ms.iter().map(|delay| {
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-message-ttl"),
            AMQPValue::LongLongInt(i64::try_from(*delay).unwrap_or(i64::MAX)),
        );
        args.insert(ShortString::from("x-dead-letter-exchange"), text(""));
        args.insert(
            ShortString::from("x-dead-letter-routing-key"),
            text(&settings.work_queue),
        );
        (topology::retry_queue(settings, *delay), args)
    });
    std::iter::once((settings.work_queue.clone(), work))
        .chain(retries)
        .collect()
}

enum Outcome {
    /// The old queues are gone.
    Done,
    /// Another process consumes them; look again later.
    Busy,
    /// They were not empty when it came to deleting them; drain again.
    Again,
}

/// Drains the old queues into `target` (see the module doc) and returns
/// once they no longer exist. Retries broker errors forever; the caller
/// races it against its shutdown signal.
pub async fn drain(settings: &AmqpSettings, target: &impl DrainTarget) {
    let in_flight = InFlight::default();
    let mut error_delay = ERROR_MIN_DELAY;
    let mut told_busy = false;
    loop {
        match drain_once(settings, &in_flight, target).await {
            Ok(Outcome::Done) => return,
            Ok(Outcome::Busy) => {
                if !told_busy {
                    tracing::info!(
                        queue = %settings.work_queue,
                        "the old work queue is consumed by another process (a replica draining it, \
                         or a worker of the single-queue version); waiting until it is gone"
                    );
                    told_busy = true;
                }
                tokio::time::sleep(BUSY_WAIT).await;
            }
            Ok(Outcome::Again) => {}
            Err(error) => {
                tracing::warn!(error = %error, retry_in = ?error_delay, "draining the old work queue failed");
                tokio::time::sleep(error_delay).await;
                error_delay = (error_delay * 2).min(ERROR_MAX_DELAY);
            }
        }
    }
}

async fn drain_once(
    settings: &AmqpSettings,
    in_flight: &InFlight,
    target: &impl DrainTarget,
) -> Result<Outcome, lapin::Error> {
    let connection = connect(settings, "enricher-drain").await?;
    let outcome = drain_on(&connection, settings, in_flight, target).await;
    // The acks of what the lanes still hold travel on this connection.
    in_flight.settled().await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "drained".into())).await;
    outcome
}

async fn drain_on(
    connection: &Connection,
    settings: &AmqpSettings,
    in_flight: &InFlight,
    target: &impl DrainTarget,
) -> Result<Outcome, lapin::Error> {
    let mut present = Vec::new();
    let mut idle = true;
    for (queue, args) in old_queues(settings) {
        let state = declare_old(connection, &queue, args).await?;
        idle &= state.messages == 0 && state.consumers == 0;
        present.push(queue);
    }
    let channel = connection.create_channel().await?;
    channel
        .queue_unbind(
            settings.work_queue.as_str().into(),
            settings.inbound_exchange.as_str().into(),
            "#".into(),
            FieldTable::default(),
        )
        .await?;
    if idle {
        return delete_all(connection, &present).await;
    }
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumers: SelectAll<Consumer> = SelectAll::new();
    let mut tags = Vec::new();
    for queue in &present {
        let tag = format!("enricher-drain-{}", uuid::Uuid::new_v4());
        let consumed = channel
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions {
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match consumed {
            Ok(consumer) => {
                consumers.push(consumer);
                tags.push(tag);
            }
            // Refused: someone else consumes it (the channel is closed now).
            Err(error) if connection.status().connected() => {
                tracing::debug!(queue, error = %error, "no exclusive access to an old queue");
                return Ok(Outcome::Busy);
            }
            Err(error) => return Err(error),
        }
    }
    tracing::info!(queues = ?present, "draining the queues of the single-queue version before consuming the shards");

    let mut drained = 0_u64;
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            next = consumers.next() => match next {
                Some(Ok(delivery)) => {
                    drained += 1;
                    target.take(delivery, in_flight.track()).await;
                }
                Some(Err(error)) => return Err(error),
                // The broker cancelled a consumer (its queue was deleted).
                None => return Ok(Outcome::Again),
            },
            _ = check.tick() => {
                if in_flight.count() == 0 && all_empty(connection, &present).await? {
                    break;
                }
            }
        }
    }

    // Stop consuming; what the broker sent before the cancel still arrives
    // first and is handled like the rest.
    for tag in &tags {
        let _ = tokio::time::timeout(
            CLOSE_TIMEOUT,
            channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
        )
        .await;
    }
    while let Ok(Some(next)) = tokio::time::timeout(CLOSE_TIMEOUT, consumers.next()).await {
        match next {
            Ok(delivery) => {
                drained += 1;
                target.take(delivery, in_flight.track()).await;
            }
            Err(error) => return Err(error),
        }
    }
    in_flight.settled().await;
    if !all_empty(connection, &present).await? {
        return Ok(Outcome::Again);
    }
    let outcome = delete_all(connection, &present).await?;
    if let Outcome::Done = outcome {
        tracing::info!(
            events = drained,
            queues = ?present,
            "drained and deleted the queues of the single-queue version"
        );
    }
    Ok(outcome)
}

/// Deletes the old queues if they are empty: the retry queues first (with
/// the broker's `if-empty` check), as each leads to the work queue until it
/// is deleted; then the work queue, if it is still empty and unconsumed
/// (quorum queues do not support `if-empty`; nothing is bound to it any
/// more, so nothing can arrive between the look and the delete).
async fn delete_all(connection: &Connection, queues: &[String]) -> Result<Outcome, lapin::Error> {
    let Some((work_queue, retry_queues)) = queues.split_first() else {
        return Ok(Outcome::Done);
    };
    for queue in retry_queues.iter().rev() {
        let deleted = connection
            .create_channel()
            .await?
            .queue_delete(
                queue.as_str().into(),
                QueueDeleteOptions {
                    if_empty: true,
                    ..QueueDeleteOptions::default()
                },
            )
            .await;
        match deleted {
            Ok(_) => {}
            Err(error) if connection.status().connected() => {
                tracing::info!(queue, error = %error, "an old queue is not empty after all; draining again");
                return Ok(Outcome::Again);
            }
            Err(error) => return Err(error),
        }
    }
    match queue_state(connection, work_queue).await? {
        None => return Ok(Outcome::Done),
        Some(state) if state.messages > 0 || state.consumers > 0 => return Ok(Outcome::Again),
        Some(_) => {}
    }
    connection
        .create_channel()
        .await?
        .queue_delete(work_queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    Ok(Outcome::Done)
}

/// Declares an old queue as earlier versions did (creating it if it is
/// missing, which [`delete_all`] undoes). Declared with other arguments
/// (an older configuration), it is looked at passively instead.
async fn declare_old(
    connection: &Connection,
    queue: &str,
    args: FieldTable,
) -> Result<QueueState, lapin::Error> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let channel = connection.create_channel().await?;
    match channel.queue_declare(queue.into(), durable, args).await {
        Ok(found) => {
            let _ = channel.close(200, "declared".into()).await;
            Ok(QueueState {
                messages: found.message_count(),
                consumers: found.consumer_count(),
            })
        }
        Err(_) if connection.status().connected() => {
            let messages = queue_state(connection, queue)
                .await?
                .map_or(0, |state| state.messages);
            // Its consumers are unknown: take the careful path and drain it.
            Ok(QueueState {
                messages,
                consumers: 1,
            })
        }
        Err(error) => Err(error),
    }
}

async fn all_empty(connection: &Connection, queues: &[String]) -> Result<bool, lapin::Error> {
    for queue in queues {
        if queue_state(connection, queue)
            .await?
            .is_some_and(|state| state.messages > 0)
        {
            return Ok(false);
        }
    }
    Ok(true)
}
