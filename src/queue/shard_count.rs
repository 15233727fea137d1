//! Keeps the broker's shard queues in step with `amqp.shards`.
//!
//! The consistent-hash exchange spreads events over every shard queue bound
//! to it, whatever a process's settings say. A replica started with fewer
//! shards than the broker holds would leave the events hashed to the others
//! waiting for a consumer that never comes; one started with more would bind
//! new queues and move conversations to them while their earlier events
//! still wait in the old ones, so they could be handled out of order. So
//! every process that declares the topology first counts the shard queues
//! (`<prefix>.0`, `<prefix>.1`, … up to the first missing one):
//!
//! - none yet (a fresh broker) or exactly `amqp.shards`: nothing to do;
//! - another count, while every shard queue is empty and unconsumed (every
//!   replica stopped, nothing waiting): the change is safe, so the queues
//!   beyond the new count are unbound, looked at again and deleted (an
//!   event that arrived meanwhile keeps its queue), and the declaration that
//!   follows adds any new ones;
//! - another count while events wait or a replica consumes: refused, with
//!   an error that names both counts and what to do.

use lapin::Connection;
use lapin::options::QueueDeleteOptions;
use lapin::types::FieldTable;

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

/// Counts the shard queues and, when their number differs from
/// `amqp.shards`, makes the change if it is safe (see the module docs).
/// Returns how many shard queues the broker held.
pub async fn match_shard_count(
    connection: &Connection,
    settings: &AmqpSettings,
) -> Result<u16, ShardCountError> {
    let mut found: u16 = 0;
    let mut waiting: u64 = 0;
    let mut consumers: u64 = 0;
    while found < u16::MAX {
        let Some(state) = queue_state(connection, &shard_queue(settings, found)).await? else {
            break;
        };
        waiting += u64::from(state.messages);
        consumers += u64::from(state.consumers);
        found += 1;
    }
    if found == 0 || found == settings.shards {
        return Ok(found);
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
        retire(connection, settings, index).await?;
    }
    tracing::info!(
        from = found,
        to = settings.shards,
        "the shard count changed while nothing waited"
    );
    Ok(found)
}

/// Deletes surplus shard queue `index`, which was empty and unconsumed.
/// Quorum queues refuse a conditional delete (`if-empty`), so the queue is
/// first unbound from the shard exchange (nothing new reaches it) and looked
/// at again: an event that arrived in between keeps it, and the refusal
/// names it; the next start with the broker's count binds it again.
async fn retire(
    connection: &Connection,
    settings: &AmqpSettings,
    index: u16,
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
            found: index + 1,
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
