//! `enricher bench --broker-only`: the broker's share of the spine, on its
//! own. The bench's synthetic events are published at `--rate` through a
//! copy of the worker's topology (topic exchange, consistent-hash exchange,
//! `amqp.shards` quorum shard queues with single active consumers), named
//! after the run so a running worker and its queues are not touched, and
//! consumed the way the worker consumes them (each shard on a channel of its
//! own with its share of `amqp.prefetch`, every delivery acked) with nothing
//! behind the consumer: no Postgres, no Redis, no decision core. The report
//! gives publish→delivery latency, the least the spine's publish→commit can
//! be on this broker. The run's queues and exchanges are deleted afterwards.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::bench::{BenchArgs, percentiles, print_published, publish_paced, rate_label};
use super::send::EventSender;
use crate::config::{AmqpSettings, Settings};
use crate::queue::{self, subscription::prefetch_per_shard, topology};

/// How long the consumers may take to receive the last event after the
/// last publish before the run is reported as failed.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(120);

/// The worker's topology under names of the run's own: every exchange and
/// queue name gets the run id as a prefix.
pub fn private_topology(settings: &AmqpSettings, run_id: &str) -> AmqpSettings {
    let private = |name: &str| format!("{run_id}.{name}");
    AmqpSettings {
        inbound_exchange: private(&settings.inbound_exchange),
        shard_exchange: private(&settings.shard_exchange),
        shard_queue_prefix: private(&settings.shard_queue_prefix),
        work_queue: private(&settings.work_queue),
        dead_letter_exchange: private(&settings.dead_letter_exchange),
        dead_letter_queue: private(&settings.dead_letter_queue),
        outbound_exchange: private(&settings.outbound_exchange),
        retry_queue_prefix: private(&settings.retry_queue_prefix),
        ..settings.clone()
    }
}

/// The part of an event the consumer reads.
#[derive(serde::Deserialize)]
struct Stamp {
    occurred_at: DateTime<Utc>,
}

/// Declares the private topology, consumes every shard queue (pushing each
/// consumer's channel to `consuming`, for the caller to close), publishes
/// at the requested rate and collects one latency (ms) per delivery until
/// all arrived or [`DELIVERY_DEADLINE`] passed after the last publish.
async fn measure(
    connection: &Connection,
    amqp: &AmqpSettings,
    run_id: &str,
    args: &BenchArgs,
    consuming: &mut Vec<Channel>,
) -> anyhow::Result<(Duration, Vec<f64>)> {
    let declaring = connection.create_channel().await?;
    topology::declare(&declaring, amqp).await?;
    let (latencies, mut received) = mpsc::unbounded_channel::<f64>();
    let mut consumers = JoinSet::new();
    for queue in topology::shard_queues(amqp) {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(prefetch_per_shard(amqp), BasicQosOptions::default())
            .await?;
        let deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                format!("{run_id}-{queue}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consuming.push(channel);
        consumers.spawn(time_deliveries(deliveries, latencies.clone()));
    }
    drop(latencies);

    let mut sender = EventSender::connect(amqp).await?;
    eprintln!(
        "publishing {} events over {} conversations through the broker alone...",
        args.events, args.conversations
    );
    let published_in =
        publish_paced(&mut sender, &format!("{run_id}-ws"), run_id, args, false).await?;
    sender.finish().await?;

    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let mut samples = Vec::with_capacity(args.events);
    while samples.len() < args.events {
        match tokio::time::timeout_at(deadline.into(), received.recv()).await {
            Ok(Some(latency)) => samples.push(latency),
            Ok(None) | Err(_) => break,
        }
    }
    consumers.abort_all();
    Ok((published_in, samples))
}

/// Acks every delivery of one shard queue and sends how long after its
/// `occurred_at` it arrived, in milliseconds.
async fn time_deliveries(mut deliveries: Consumer, latencies: mpsc::UnboundedSender<f64>) {
    while let Some(Ok(delivery)) = deliveries.next().await {
        let arrived = Utc::now();
        if let Ok(stamp) = serde_json::from_slice::<Stamp>(&delivery.data) {
            let waited = (arrived - stamp.occurred_at)
                .num_microseconds()
                .unwrap_or(0);
            if latencies.send(waited as f64 / 1000.0).is_err() {
                return;
            }
        }
        if delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Runs the broker-only benchmark and prints the report. The run's queues
/// and exchanges are deleted whether or not it succeeds.
pub async fn run(settings: &Settings, args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.events > 0 && args.conversations > 0,
        "--events and --conversations must be above zero"
    );
    let run_id = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let amqp = private_topology(&settings.amqp, &run_id);
    let connection = queue::connect(&amqp, "enricher-bench-broker").await?;
    let mut consuming = Vec::new();
    let measured = measure(&connection, &amqp, &run_id, args, &mut consuming).await;
    // Consumers go before their queues: a queue deleted under a consumer
    // cancels it from the broker's side while lapin may be cancelling too.
    for channel in consuming {
        let _ = channel.close(0, "bench done".into()).await;
    }
    let removed = match connection.create_channel().await {
        Ok(channel) => topology::delete(&channel, &amqp).await,
        Err(error) => Err(error),
    };
    let _ = connection.close(0, "bench done".into()).await;
    let (published_in, mut samples) = measured?;
    removed?;
    let delivered = samples.len();
    anyhow::ensure!(
        delivered == args.events,
        "the broker delivered only {delivered} of {} events within {} s of the last publish",
        args.events,
        DELIVERY_DEADLINE.as_secs()
    );

    println!(
        "enricher bench --broker-only: {} events, {} conversations, {} shard queues, rate {}",
        args.events,
        args.conversations,
        amqp.shards,
        rate_label(args.rate)
    );
    print_published(args.events, published_in);
    if let Some(p) = percentiles(&mut samples) {
        println!(
            "  publish→delivery      p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms",
            p.p50, p.p95, p.p99
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_topology_shares_no_name_with_the_workers() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
        let settings = Settings::load_from(&dir).expect("defaults load").amqp;
        let private = private_topology(&settings, "bench1234");
        let names = |s: &AmqpSettings| {
            let mut names = vec![
                s.inbound_exchange.clone(),
                s.shard_exchange.clone(),
                s.dead_letter_exchange.clone(),
                s.dead_letter_queue.clone(),
                s.outbound_exchange.clone(),
                s.work_queue.clone(),
            ];
            names.extend(topology::shard_queues(s));
            names
        };
        let workers = names(&settings);
        for name in names(&private) {
            assert!(name.starts_with("bench1234."), "{name}");
            assert!(!workers.contains(&name), "{name} is the worker's");
        }
        assert_eq!(private.shards, settings.shards);
        assert_eq!(private.prefetch, settings.prefetch);
    }
}
