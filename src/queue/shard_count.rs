//! Keeps the broker's shard queues in step with `amqp.shards`.
//!
//! The consistent-hash exchange spreads events over every shard queue bound
//! to it, whatever a process's settings say. A replica started with fewer
//! shards than the broker holds would leave the events hashed to the others
//! waiting for a consumer that never comes. So every process that declares
//! the topology first looks for a shard queue beyond its count
//! (`<prefix>.<shards>`):
//!
//! - none: nothing to do (the usual case, answered without a channel error,
//!   see [`exists`]);
//! - some, while every shard queue is empty and unconsumed (every replica
//!   stopped, nothing waiting): the count was lowered, so the queues beyond
//!   it are unbound, looked at again and deleted (an event that arrived
//!   meanwhile keeps its queue);
//! - some while events wait or a replica consumes: refused, with an error
//!   that names both counts and what to do.
//!
//! Raising the count is not detected: the new queues join the ring and
//! conversations move to them, which keeps order only while nothing waits,
//! so docs/scaling.md asks for the queues to be drained first.

use lapin::Connection;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use super::inspect::queue_state;
use super::topology::{SHARD_WEIGHT, shard_queue};
use crate::config::AmqpSettings;

/// Why the shard queues could not be matched to `amqp.shards`.
#[derive(Debug, thiserror::Error)]
pub enum ShardCountError {
    /// The count differs while the shard queues are in use.
    #[error(
        "the broker has {found} shard queues ({prefix}.0 to {prefix}.{last}) and amqp.shards is {configured}; \
         changing the count moves conversations between shards, so it needs every shard queue empty \
         and every replica stopped, and now {waiting} events wait and {consumers} consumers are attached: \
         set amqp.shards = {found}, or change it as docs/scaling.md says",
        last = found.saturating_sub(1)
    )]
    InUse {
        /// Shard queues on the broker.
        found: u16,
        /// `amqp.shards`.
        configured: u16,
        /// The shard queue prefix.
        prefix: String,
        /// Events ready in the shard queues.
        waiting: u64,
        /// Consumers of the shard queues.
        consumers: u64,
    },
    /// The broker could not be asked, or refused a deletion.
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

/// Looks for shard queues beyond `amqp.shards` and, when there are some,
/// retires them if that is safe (see the module docs). Returns how many
/// shard queues the broker held when it had more than `amqp.shards`.
pub async fn match_shard_count(
    connection: &Connection,
    settings: &AmqpSettings,
) -> Result<Option<u16>, ShardCountError> {
    if !exists(connection, &shard_queue(settings, settings.shards)).await? {
        return Ok(None);
    }
    // The count was lowered: count every shard queue (the broker's
    // NOT_FOUND for the first missing one ends the count).
    let mut found: u16 = 0;
    let mut waiting: u64 = 0;
    let mut consumers: u64 = 0;
    while found < u16::MAX {
        let Some(state) = queue_state(connection, &shard_queue(settings, found)).await? else {
            if found < settings.shards {
                // A gap below the count: the declaration fills it.
                found += 1;
                continue;
            }
            break;
        };
        waiting += u64::from(state.messages);
        consumers += u64::from(state.consumers);
        found += 1;
    }
    if waiting > 0 || consumers > 0 {
        return Err(ShardCountError::InUse {
            found,
            configured: settings.shards,
            prefix: settings.shard_queue_prefix.clone(),
            waiting,
            consumers,
        });
    }
    for index in settings.shards..found {
        retire(connection, settings, index, found).await?;
    }
    tracing::info!(
        from = found,
        to = settings.shards,
        "the shard count was lowered while nothing waited"
    );
    Ok(Some(found))
}

/// Whether `queue` exists, asked without the channel error a passive
/// declare of a missing queue costs (which the AMQP client logs as an error,
/// at every start). An exclusive classic queue of that name can be declared
/// only where no queue of that name exists; the probe queue this creates is
/// deleted at once (and would go with the connection anyway). A shard queue
/// there (durable, quorum) makes the broker refuse the declare.
async fn exists(connection: &Connection, queue: &str) -> Result<bool, lapin::Error> {
    let channel = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("classic")),
    );
    let probe = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    match channel.queue_declare(queue.into(), probe, args).await {
        Ok(_) => {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
            let _ = channel.close(200, "looked".into()).await;
            Ok(false)
        }
        // Refused: a queue of that name exists. The channel is closed, not
        // the connection.
        Err(_) if connection.status().connected() => Ok(true),
        Err(error) => Err(error),
    }
}

/// Deletes surplus shard queue `index`, which was empty and unconsumed.
/// Quorum queues refuse a conditional delete (`if-empty`), so the queue is
/// first unbound from the shard exchange (nothing new reaches it) and looked
/// at again: an event that arrived in between keeps it, and the refusal
/// names it; the next start with the broker's count (`found`) binds it
/// again.
async fn retire(
    connection: &Connection,
    settings: &AmqpSettings,
    index: u16,
    found: u16,
) -> Result<(), ShardCountError> {
    let queue = shard_queue(settings, index);
    let channel = connection.create_channel().await?;
    channel
        .queue_unbind(
            queue.as_str().into(),
            settings.shard_exchange.as_str().into(),
            SHARD_WEIGHT.into(),
            FieldTable::default(),
        )
        .await?;
    if let Some(state) = queue_state(connection, &queue).await?
        && (state.messages > 0 || state.consumers > 0)
    {
        return Err(ShardCountError::InUse {
            found,
            configured: settings.shards,
            prefix: settings.shard_queue_prefix.clone(),
            waiting: u64::from(state.messages),
            consumers: u64::from(state.consumers),
        });
    }
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = channel.close(200, "shard retired".into()).await;
    Ok(())
}
