//! Delivery accounting shared by crowdpulse's fire-and-forget producers (dead letters, the
//! generator): librdkafka reports each message's fate on the producer's polling thread; these
//! counters make failures visible instead of silent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tracing::warn;

use crate::error::{ConnectorError, Result};

/// What happened to produced messages.
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    /// Messages the broker confirmed.
    pub delivered: AtomicU64,
    /// Messages refused after librdkafka's retries, or not queued at all (logged).
    pub failed: AtomicU64,
}

/// Counts deliveries for a [`ThreadedProducer`].
pub struct DeliveryCounter(pub Arc<DeliveryCounters>);

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((error, _)) => {
                warn!(%error, "message not delivered");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// A producer whose deliveries are counted.
pub type CountedProducer = ThreadedProducer<DeliveryCounter>;

/// crowdpulse's producer settings for `brokers`, shared by every producer it runs.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // Retries must not reorder or duplicate a partition's messages.
        .set("enable.idempotence", "true")
        // The Java client's key hash: a keyed message lands where every other Kafka producer
        // puts that key, and a stream in the same partition as `generate --partitions` files.
        .set("partitioner", "murmur2_random");
    config
}

/// A counted producer for `brokers` with [`producer_config`] plus `extra`.
pub fn counted_producer(
    brokers: &str,
    extra: &[(&str, &str)],
) -> Result<(CountedProducer, Arc<DeliveryCounters>)> {
    let counters = Arc::new(DeliveryCounters::default());
    let mut config = producer_config(brokers);
    for (key, value) in extra {
        config.set(*key, *value);
    }
    let producer = config
        .create_with_context(DeliveryCounter(Arc::clone(&counters)))
        .map_err(|e| ConnectorError::Kafka(format!("creating a producer: {e}")))?;
    Ok((producer, counters))
}

/// How long a message waits for room in a full producer queue before trying again.
pub const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// Queues `record`, handing it back when the producer's queue is full; a message that cannot be
/// queued for another reason is logged and counted as failed.
pub fn try_send<'a>(
    producer: &CountedProducer,
    counters: &DeliveryCounters,
    record: BaseRecord<'a, [u8], [u8]>,
) -> std::result::Result<(), BaseRecord<'a, [u8], [u8]>> {
    match producer.send(record) {
        Ok(()) => Ok(()),
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => Err(back),
        Err((error, back)) => {
            warn!(%error, topic = back.topic, "message not queued");
            counters.failed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// Queues `record` as [`try_send`] does, waiting while the producer's queue is full.
pub fn send_waiting(
    producer: &CountedProducer,
    counters: &DeliveryCounters,
    mut record: BaseRecord<'_, [u8], [u8]>,
) {
    while let Err(back) = try_send(producer, counters, record) {
        record = back;
        std::thread::sleep(QUEUE_FULL_BACKOFF);
    }
}
