//! The worker's link to the broker, kept consuming through broker trouble.
//!
//! The link consumes every shard queue (see [`topology`]) on one channel.
//! Each shard queue has a single active consumer: the broker delivers a
//! shard to one replica at a time and keeps the others' consumers as
//! standbys, so when a replica's connection closes (it stopped, crashed or
//! lost the network) the broker returns its unacked events to the queue and
//! activates a standby at once.
//!
//! Each shard is consumed on a channel of its own, so one shard can be handed
//! over without touching the others. The broker never takes a shard away
//! from a running consumer, so a replica started after the others would
//! only stand by: every `amqp.rebalance_secs` each replica counts the
//! running replicas (the consumers of the roster queue
//! `<shard_queue_prefix>.replicas`, which every replica consumes and nobody
//! publishes to) and, when it is active on more shards than its fair share
//! (shards / replicas, rounded up), *releases* the excess: it stops handing
//! that shard's deliveries to the lanes, waits until every delivery it did
//! hand over is acked, then closes the shard's channel, so the broker returns
//! the deliveries it held back to the head of the queue and activates the
//! next consumer in line (another replica's standby), and subscribes again
//! as a standby. A conversation is therefore never handled by two replicas
//! at once, and its events stay in queue order. A replica knows it is active
//! on a shard once the shard delivers to it.
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
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::time::{Interval, MissedTickBehavior};

use super::legacy::{InFlight, InFlightGuard};
use super::shard_count::{ShardCountError, match_shard_count};
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
/// How often a shard being released is checked for unsettled deliveries.
const RELEASE_CHECK_EVERY: Duration = Duration::from_millis(50);

/// What the merged consumers of the shard queues yield, with the shard's
/// index and the generation of its subscription.
enum ShardItem {
    Delivery(usize, u64, Box<Result<Delivery, lapin::Error>>),
    /// One shard's consumer ended (the broker cancelled it, or its channel
    /// was closed to release it).
    Ended(usize, u64),
}

/// One shard's consumer. `Sync` because the subscription is shared by
/// reference across awaits.
type ShardStream = Pin<Box<dyn Stream<Item = ShardItem> + Send + Sync>>;

/// The consumers of every shard queue, merged into one stream.
type ShardConsumers = SelectAll<ShardStream>;

/// This replica's subscription to one shard queue.
struct Shard {
    queue: String,
    channel: Channel,
    /// Tells this subscription's items from those of a released one.
    generation: u64,
    /// Deliveries handed to the lanes and not settled yet.
    in_flight: InFlight,
    /// The shard delivered to this subscription: it is the active consumer.
    active: bool,
    /// Being handed to another replica: deliveries are held back.
    releasing: bool,
    /// Deliveries held back while releasing; returned to the queue when
    /// the channel closes.
    held_back: Vec<Delivery>,
}

/// The shards to release so that `active` (the indexes of the shards this
/// replica is active on, ascending) is no more than the fair share of
/// `shards` over `replicas`: the last ones.
pub fn shards_to_release(active: &[usize], shards: usize, replicas: u32) -> Vec<usize> {
    let replicas = usize::try_from(replicas.max(1)).unwrap_or(usize::MAX);
    let fair = shards.div_ceil(replicas).max(1);
    active.iter().skip(fair).copied().collect()
}

/// The queue every replica consumes so each can count the others.
pub fn roster_queue(settings: &AmqpSettings) -> String {
    format!("{}.replicas", settings.shard_queue_prefix)
}

/// A connection with the topology declared, a confirming publisher and,
/// once [`Subscription::start`] ran, a consumer on every shard queue.
pub struct Subscription {
    settings: AmqpSettings,
    name: String,
    connection: Connection,
    channel: Channel,
    publisher: Publisher,
    shards: Vec<Shard>,
    consumers: Option<ShardConsumers>,
    /// Keeps this replica counted on the roster queue.
    roster: Option<Consumer>,
    generations: u64,
    health_check: Interval,
    rebalance: Option<Interval>,
    release_check: Interval,
    /// When the link was first seen recovering, while it still is.
    recovering_since: Option<Instant>,
}

impl Subscription {
    /// Connects, declares the topology and opens the publisher; consuming
    /// starts with [`Subscription::start`]. Refuses to start when the broker's shard queues do not match
    /// `amqp.shards` and cannot safely be made to (see
    /// [`super::shard_count`]).
    pub async fn open(
        settings: &AmqpSettings,
        name: &str,
    ) -> Result<Subscription, ShardCountError> {
        let connection = connect(settings, name).await?;
        match_shard_count(&connection, settings).await?;
        let channel = connection.create_channel().await?;
        topology::declare(&channel, settings).await?;
        let publisher = Publisher::open(&connection, settings).await?;
        let mut health_check = tokio::time::interval(HEALTH_CHECK_EVERY);
        health_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let rebalance = (settings.rebalance_secs > 0).then(|| {
            let every = Duration::from_secs(settings.rebalance_secs);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks
        });
        let mut release_check = tokio::time::interval(RELEASE_CHECK_EVERY);
        release_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Subscription {
            settings: settings.clone(),
            name: name.to_owned(),
            connection,
            channel,
            publisher,
            shards: Vec::new(),
            consumers: None,
            roster: None,
            generations: 0,
            health_check,
            rebalance,
            release_check,
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
        let (shards, consumers) =
            consume(&self.connection, &self.settings, &mut self.generations).await?;
        self.roster = Some(join_roster(&self.channel, &self.settings).await?);
        self.shards = shards;
        self.consumers = Some(consumers);
        Ok(())
    }

    /// The next delivery from any shard queue, with a guard to keep until
    /// it is settled (acked, nacked or abandoned). Never gives up: a broken
    /// link is replaced, as often as it takes. Cancel-safe between
    /// deliveries, so callers can race it against a shutdown signal.
    pub async fn next_delivery(&mut self) -> (Delivery, InFlightGuard) {
        loop {
            let Some(consumers) = self.consumers.as_mut() else {
                self.resubscribe().await;
                continue;
            };
            let releasing = self.shards.iter().any(|shard| shard.releasing);
            tokio::select! {
                next = consumers.next() => match next {
                    Some(ShardItem::Delivery(index, generation, next)) => match *next {
                        Ok(delivery) => {
                            let Some(shard) = self.shards.get_mut(index) else { continue };
                            if shard.generation != generation {
                                // From a released subscription: back in the queue already.
                                continue;
                            }
                            shard.active = true;
                            if shard.releasing {
                                shard.held_back.push(delivery);
                                continue;
                            }
                            return (delivery, shard.in_flight.track());
                        }
                        // lapin recovers the channel and its consumers by
                        // itself; the health check catches it if it cannot.
                        Err(error) => {
                            tracing::warn!(error = %error, "broker connection lost; waiting for recovery")
                        }
                    },
                    Some(ShardItem::Ended(index, generation)) => {
                        let current = self
                            .shards
                            .get(index)
                            .is_some_and(|shard| shard.generation == generation);
                        if current {
                            tracing::warn!(shard = index, "the broker ended the subscription of a shard; subscribing again");
                            self.resubscribe().await;
                        }
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
                _ = tick(&mut self.rebalance) => self.rebalance().await,
                _ = self.release_check.tick(), if releasing => {
                    if let Err(error) = self.release_settled().await {
                        tracing::warn!(error = %error, "could not hand a shard over; subscribing again");
                        self.resubscribe().await;
                    }
                }
            }
        }
    }

    /// Compares the shards this replica is active on with its fair share
    /// and starts releasing the excess.
    async fn rebalance(&mut self) {
        if self.consumers.is_none() || self.shards.iter().any(|shard| shard.releasing) {
            return;
        }
        let replicas = match count_replicas(&self.channel, &self.settings).await {
            Ok(replicas) => replicas,
            Err(error) => {
                tracing::debug!(error = %error, "could not count the replicas");
                return;
            }
        };
        let active: Vec<usize> = (0..self.shards.len())
            .filter(|index| self.shards[*index].active)
            .collect();
        let release = shards_to_release(&active, self.shards.len(), replicas);
        if release.is_empty() {
            return;
        }
        tracing::info!(
            replicas,
            active = active.len(),
            releasing = release.len(),
            "active on more than a fair share of the shards; handing the excess to other replicas"
        );
        for index in release {
            self.shards[index].releasing = true;
        }
    }

    /// Closes the channel of every shard being released whose deliveries
    /// are all settled (the broker then returns what was held back and
    /// activates the next consumer in line) and subscribes to it again as a
    /// standby.
    async fn release_settled(&mut self) -> Result<(), String> {
        for index in 0..self.shards.len() {
            let shard = &self.shards[index];
            if !shard.releasing || shard.in_flight.count() > 0 {
                continue;
            }
            let held_back = shard.held_back.len();
            match tokio::time::timeout(
                CLOSE_TIMEOUT,
                shard
                    .channel
                    .close(200, "handing the shard to another replica".into()),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err("closing the shard's channel timed out".to_owned()),
            }
            let (shard, stream) = consume_shard(
                &self.connection,
                &self.settings,
                index,
                &mut self.generations,
            )
            .await
            .map_err(|error| error.to_string())?;
            self.shards[index] = shard;
            if let Some(consumers) = self.consumers.as_mut() {
                consumers.push(stream);
            }
            tracing::info!(queue = %self.shards[index].queue, held_back, "shard handed over; standing by on it");
        }
        Ok(())
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
        let (shards, consumers) =
            consume(&connection, &self.settings, &mut self.generations).await?;
        let roster = join_roster(&channel, &self.settings).await?;
        self.publisher.reopen(&connection).await?;
        let replaced = std::mem::replace(&mut self.connection, connection);
        self.channel = channel;
        self.shards = shards;
        self.consumers = Some(consumers);
        self.roster = Some(roster);
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

/// A connection and a channel on which the topology is declared.
async fn open_link(
    settings: &AmqpSettings,
    name: &str,
) -> Result<(Connection, Channel), lapin::Error> {
    let connection = connect(settings, name).await?;
    let channel = connection.create_channel().await?;
    topology::declare(&channel, settings).await?;
    Ok((connection, channel))
}

/// Each shard consumer's share of `amqp.prefetch`, rounded up.
pub fn prefetch_per_shard(settings: &AmqpSettings) -> u16 {
    settings.prefetch.div_ceil(settings.shards.max(1)).max(1)
}

/// Consumes every shard queue, each on a channel of its own.
async fn consume(
    connection: &Connection,
    settings: &AmqpSettings,
    generations: &mut u64,
) -> Result<(Vec<Shard>, ShardConsumers), lapin::Error> {
    let mut shards = Vec::new();
    let mut merged = SelectAll::new();
    for index in 0..topology::shard_queues(settings).len() {
        let (shard, stream) = consume_shard(connection, settings, index, generations).await?;
        shards.push(shard);
        merged.push(stream);
    }
    Ok((shards, merged))
}

/// Consumes shard queue `index` on a new channel whose prefetch is the
/// shard's share; the stream ends with [`ShardItem::Ended`].
async fn consume_shard(
    connection: &Connection,
    settings: &AmqpSettings,
    index: usize,
    generations: &mut u64,
) -> Result<(Shard, ShardStream), lapin::Error> {
    let queue = topology::shard_queue(settings, u16::try_from(index).unwrap_or(u16::MAX));
    let channel = connection.create_channel().await?;
    // Declared on every consuming channel, not only once per connection:
    // lapin's recovery replays a channel's declarations before its
    // consumer, so a shard whose topology the broker now refuses (say the
    // outbound exchange recreated as another kind) stays unsubscribed
    // instead of consuming and publishing into the wrong exchange.
    topology::declare(&channel, settings).await?;
    // Each shard's consumer gets its share of the prefetch, so a replica
    // active on every shard holds about `prefetch` in all.
    channel
        .basic_qos(prefetch_per_shard(settings), BasicQosOptions::default())
        .await?;
    let tag = format!("enricher-{}-{}", std::process::id(), uuid::Uuid::new_v4());
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    *generations += 1;
    let generation = *generations;
    let deliveries = consumer
        .map(move |next| ShardItem::Delivery(index, generation, Box::new(next)))
        .chain(stream::once(
            async move { ShardItem::Ended(index, generation) },
        ));
    let stream: ShardStream = Box::pin(deliveries);
    let shard = Shard {
        queue,
        channel,
        generation,
        in_flight: InFlight::default(),
        active: false,
        releasing: false,
        held_back: Vec::new(),
    };
    Ok((shard, stream))
}

fn roster_options() -> QueueDeclareOptions {
    QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    }
}

/// Consumes the roster queue (nothing is published to it), so every other
/// replica counts this one.
async fn join_roster(channel: &Channel, settings: &AmqpSettings) -> Result<Consumer, lapin::Error> {
    let queue = roster_queue(settings);
    channel
        .queue_declare(
            queue.as_str().into(),
            roster_options(),
            FieldTable::default(),
        )
        .await?;
    let tag = format!(
        "enricher-roster-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    );
    channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// How many replicas consume the roster queue, this one included.
async fn count_replicas(channel: &Channel, settings: &AmqpSettings) -> Result<u32, lapin::Error> {
    let queue = roster_queue(settings);
    let declared = channel
        .queue_declare(
            queue.as_str().into(),
            roster_options(),
            FieldTable::default(),
        )
        .await?;
    Ok(declared.consumer_count().max(1))
}

/// The next tick of an optional interval; never, without one.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
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
    fn a_replica_keeps_its_fair_share_and_releases_the_rest() {
        let all: Vec<usize> = (0..8).collect();
        assert_eq!(shards_to_release(&all, 8, 1), Vec::<usize>::new());
        assert_eq!(shards_to_release(&all, 8, 2), vec![4, 5, 6, 7]);
        assert_eq!(shards_to_release(&all, 8, 3), vec![3, 4, 5, 6, 7]);
        assert_eq!(shards_to_release(&[0, 2, 5], 8, 3), Vec::<usize>::new());
        assert_eq!(
            shards_to_release(&[0, 1], 2, 5),
            vec![1],
            "one shard at least"
        );
        assert_eq!(shards_to_release(&all, 8, 0), Vec::<usize>::new());
    }

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
