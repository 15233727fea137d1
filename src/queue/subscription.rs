//! The worker's link to the broker, kept consuming through broker trouble.
//!
//! The link consumes every shard queue (see [`topology`]) on one channel.
//! Each shard queue has a single active consumer: the broker delivers a
//! shard to one replica at a time and keeps the others' consumers as
//! standbys, so when a replica's connection closes (it stopped, crashed or
//! lost the network) the broker returns its unacked events to the queue and
//! activates a standby at once.
//!
//! lapin's automatic recovery reconnects after a broker restart and replays
//! channels, topology and consumers, but the replay can fail (a queue that is
//! not available yet right after the broker boots leaves the connection
//! errored for good), a connection lost at the wrong moment can stay
//! "reconnecting" with no reconnect under way, and a consumer the broker
//! cancels (its queue deleted) simply ends. A worker that stopped consuming
//! would sit idle while events pile up, so [`Subscription::next_delivery`]
//! watches for all three: it keeps polling while lapin recovers, and when the
//! consumer ends, the connection is beyond recovery or recovery takes longer
//! than [`RECOVERY_PATIENCE`], it opens a new connection, declares the
//! topology, moves the [`Publisher`] there and subscribes again, backing off
//! between attempts, until it succeeds or the caller stops asking.

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::{self, SelectAll, Stream};
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::time::{Interval, MissedTickBehavior};

use super::{connect, publisher::Publisher, topology};
use crate::config::AmqpSettings;

/// How often the link is checked for a connection lapin gave up on.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long lapin may spend recovering a connection before the link is
/// replaced. A broker that is back answers a reconnect within seconds; one
/// that is still down makes the replacement wait for it just the same.
pub const RECOVERY_PATIENCE: Duration = Duration::from_secs(30);
/// Backoff between attempts to replace a broken link.
const RESUBSCRIBE_MIN_DELAY: Duration = Duration::from_millis(200);
const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(5);
/// How long closing a connection may take before the worker goes on
/// without it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the merged consumers of the shard queues yield.
enum ShardItem {
    Delivery(Box<Result<Delivery, lapin::Error>>),
    /// One shard's consumer ended (the broker cancelled it).
    Ended(String),
}

/// One shard's consumer. `Sync` because the subscription is shared by
/// reference across awaits.
type ShardStream = Pin<Box<dyn Stream<Item = ShardItem> + Send + Sync>>;

/// The consumers of every shard queue, merged into one stream.
type ShardConsumers = SelectAll<ShardStream>;

/// A connection with the topology declared, a confirming publisher and,
/// once [`Subscription::start`] ran, a consumer on every shard queue.
pub struct Subscription {
    settings: AmqpSettings,
    name: String,
    connection: Connection,
    channel: Channel,
    publisher: Publisher,
    consumers: Option<ShardConsumers>,
    health_check: Interval,
    /// When the link was first seen recovering, while it still is.
    recovering_since: Option<Instant>,
}

impl Subscription {
    /// Connects, declares the topology and opens the publisher; consuming
    /// starts with [`Subscription::start`].
    pub async fn open(settings: &AmqpSettings, name: &str) -> Result<Subscription, lapin::Error> {
        let (connection, channel) = open_link(settings, name).await?;
        let publisher = Publisher::open(&connection, settings).await?;
        let mut health_check = tokio::time::interval(HEALTH_CHECK_EVERY);
        health_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Subscription {
            settings: settings.clone(),
            name: name.to_owned(),
            connection,
            channel,
            publisher,
            consumers: None,
            health_check,
            recovering_since: None,
        })
    }

    /// The publisher on this link; its clones follow the link when it is
    /// replaced.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Starts consuming every shard queue.
    pub async fn start(&mut self) -> Result<(), lapin::Error> {
        self.consumers = Some(consume(&self.channel, &self.settings).await?);
        Ok(())
    }

    /// The next delivery from any shard queue. Never gives up: a broken
    /// link is replaced, as often as it takes. Cancel-safe, so callers can
    /// race it against a shutdown signal.
    pub async fn next_delivery(&mut self) -> Delivery {
        loop {
            let Some(consumers) = self.consumers.as_mut() else {
                self.resubscribe().await;
                continue;
            };
            tokio::select! {
                next = consumers.next() => match next {
                    Some(ShardItem::Delivery(next)) => match *next {
                        Ok(delivery) => return delivery,
                        // lapin recovers the channel and its consumers by
                        // itself; the health check catches it if it cannot.
                        Err(error) => {
                            tracing::warn!(error = %error, "broker connection lost; waiting for recovery")
                        }
                    },
                    Some(ShardItem::Ended(queue)) => {
                        tracing::warn!(queue, "the broker ended the subscription of a shard; subscribing again");
                        self.resubscribe().await;
                    }
                    None => {
                        tracing::warn!("the broker ended the subscription; subscribing again");
                        self.resubscribe().await;
                    }
                },
                _ = self.health_check.tick() => {
                    if let Some(reason) = self.broken_link() {
                        tracing::warn!(reason, "replacing the broker connection");
                        self.resubscribe().await;
                    }
                }
            }
        }
    }

    /// Why the link needs replacing, if it does.
    fn broken_link(&mut self) -> Option<&'static str> {
        match link_state(&self.connection, &self.channel) {
            LinkState::Up => {
                self.recovering_since = None;
                None
            }
            LinkState::Recovering => {
                let since = *self.recovering_since.get_or_insert_with(Instant::now);
                (since.elapsed() >= RECOVERY_PATIENCE).then_some("recovery is taking too long")
            }
            LinkState::Broken => Some("lapin could not recover the connection"),
        }
    }

    /// Replaces the connection, topology, publisher channel and consumer,
    /// retrying with backoff until all of them are back.
    async fn resubscribe(&mut self) {
        let mut delay = RESUBSCRIBE_MIN_DELAY;
        let mut attempt: u32 = 1;
        loop {
            match self.replace_link().await {
                Ok(()) => {
                    tracing::info!(attempt, "subscribed to the shard queues again");
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = %error, attempt, retry_in = ?delay, "could not subscribe again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    async fn replace_link(&mut self) -> Result<(), lapin::Error> {
        let (connection, channel) = open_link(&self.settings, &self.name).await?;
        let consumers = consume(&channel, &self.settings).await?;
        self.publisher.reopen(&connection).await?;
        let replaced = std::mem::replace(&mut self.connection, connection);
        self.channel = channel;
        self.consumers = Some(consumers);
        self.recovering_since = None;
        // Deliveries still held from the old connection cannot be acked
        // any more; the broker redelivers them and dedupe absorbs the repeat.
        close_quietly(&replaced, "replaced").await;
        Ok(())
    }

    /// Closes the connection: the broker returns what this replica has not
    /// acked to the shard queues and hands each shard to a standby consumer.
    /// The consumers are deliberately not cancelled before the in-flight
    /// events are acked: a cancelled active consumer makes the broker
    /// activate a standby while this replica may still be writing the same
    /// conversations.
    pub async fn close(&self) {
        close_quietly(&self.connection, "shutdown").await;
    }
}

/// A connection whose consuming channel has the topology declared and the
/// prefetch limit of each consumer set.
async fn open_link(
    settings: &AmqpSettings,
    name: &str,
) -> Result<(Connection, Channel), lapin::Error> {
    let connection = connect(settings, name).await?;
    let channel = connection.create_channel().await?;
    topology::declare(&channel, settings).await?;
    // Not global: each shard's consumer gets its share of the prefetch, so
    // a replica active on every shard holds about `prefetch` in all.
    channel
        .basic_qos(prefetch_per_shard(settings), BasicQosOptions::default())
        .await?;
    Ok((connection, channel))
}

/// Each shard consumer's share of `amqp.prefetch`, rounded up.
pub fn prefetch_per_shard(settings: &AmqpSettings) -> u16 {
    settings.prefetch.div_ceil(settings.shards.max(1)).max(1)
}

/// Consumes every shard queue on `channel`; a consumer that ends yields
/// [`ShardItem::Ended`].
async fn consume(
    channel: &Channel,
    settings: &AmqpSettings,
) -> Result<ShardConsumers, lapin::Error> {
    let mut merged = SelectAll::new();
    for queue in topology::shard_queues(settings) {
        let tag = format!("enricher-{}-{}", std::process::id(), uuid::Uuid::new_v4());
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let deliveries = consumer
            .map(|next| ShardItem::Delivery(Box::new(next)))
            .chain(stream::once(async move { ShardItem::Ended(queue) }));
        let deliveries: ShardStream = Box::pin(deliveries);
        merged.push(deliveries);
    }
    Ok(merged)
}

enum LinkState {
    /// The connection and the consuming channel are open.
    Up,
    /// lapin is (or says it is) reconnecting.
    Recovering,
    /// lapin gave up: the connection or the consuming channel is closed or
    /// errored.
    Broken,
}

fn link_state(connection: &Connection, channel: &Channel) -> LinkState {
    let link = connection.status();
    let channel = channel.status();
    if link.errored() || link.closed() {
        LinkState::Broken
    } else if !link.connected() {
        LinkState::Recovering
    } else if channel.connected() {
        LinkState::Up
    } else if channel.reconnecting() || channel.initializing() || channel.closing() {
        LinkState::Recovering
    } else {
        LinkState::Broken
    }
}

async fn close_quietly(connection: &Connection, reason: &str) {
    let status = connection.status();
    if status.closed() || status.errored() {
        return;
    }
    match tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(error = %error, "connection close failed"),
        Err(_) => tracing::debug!("connection close timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn the_prefetch_is_shared_out_over_the_shards() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut settings = Settings::load_from(&dir).expect("defaults load").amqp;
        settings.prefetch = 2048;
        settings.shards = 8;
        assert_eq!(prefetch_per_shard(&settings), 256);
        settings.shards = 3;
        assert_eq!(prefetch_per_shard(&settings), 683, "rounded up");
        settings.prefetch = 2;
        settings.shards = 8;
        assert_eq!(prefetch_per_shard(&settings), 1, "never zero");
    }
}
