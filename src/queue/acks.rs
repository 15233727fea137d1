//! Acks and nacks of deliveries, each bounded in time: one sent on a
//! connection that died without lapin noticing never completes, and the
//! broker redelivers whatever it did not get once the link is replaced.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};

/// How long an ack or nack may take. One sent on a connection that died
/// without lapin noticing never completes; the broker redelivers what it
/// did not get, once the worker's link is replaced.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Acks a delivery. After a broker restart the delivery tag is void and the
/// broker redelivers the event, which dedupe turns into a no-op.
pub async fn ack(delivery: &Delivery) {
    send_bounded(
        delivery,
        "ack",
        delivery.acker.ack(BasicAckOptions::default()),
    )
    .await;
}

pub async fn requeue(delivery: &Delivery) {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    send_bounded(delivery, "nack", delivery.acker.nack(options)).await;
}

async fn send_bounded(
    delivery: &Delivery,
    what: &'static str,
    settling: impl std::future::Future<Output = Result<bool, lapin::Error>>,
) {
    if !delivery.acker.usable() {
        tracing::debug!(
            what,
            "channel gone; the broker will redeliver and dedupe absorbs it"
        );
        return;
    }
    match tokio::time::timeout(ACK_TIMEOUT, settling).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::debug!(what, error = %error, "failed; the broker will redeliver and dedupe absorbs it")
        }
        Err(_) => tracing::warn!(
            what,
            timeout_secs = ACK_TIMEOUT.as_secs(),
            "no answer from the broker; it will redeliver and dedupe absorbs it"
        ),
    }
}
