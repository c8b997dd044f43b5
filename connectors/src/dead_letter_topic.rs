//! The dead-letter topic: each malformed or late record is produced with its raw bytes as the
//! value and where it came from and why in headers (`source_topic`, `source_partition`,
//! `source_offset`, `reason`, `error`), so it can be inspected and replayed with standard tools.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::rows::{DeadLetter, Row};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tracing::warn;

use crate::error::{ConnectorError, Result};
use crate::row_output::RowOutput;

/// What happened to produced dead letters.
#[derive(Debug, Default)]
pub struct DeadLetterTopicCounters {
    /// Dead letters the broker confirmed.
    pub delivered: AtomicU64,
    /// Dead letters the broker refused after librdkafka's retries (logged).
    pub failed: AtomicU64,
}

/// Counts deliveries; librdkafka calls it from the producer's polling thread.
struct DeliveryCounter(Arc<DeadLetterTopicCounters>);

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((error, _)) => {
                warn!(%error, "dead letter not delivered");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Produces dead letters to one topic.
pub struct DeadLetterTopic {
    topic: String,
    producer: ThreadedProducer<DeliveryCounter>,
    /// Delivery counters.
    pub counters: Arc<DeadLetterTopicCounters>,
}

/// How long a dead letter waits for room in a full producer queue before trying again.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(10);

impl DeadLetterTopic {
    /// A producer for `topic` on `brokers`.
    pub fn new(brokers: &str, topic: &str) -> Result<Self> {
        let counters = Arc::new(DeadLetterTopicCounters::default());
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Retries must not reorder or duplicate a partition's dead letters.
            .set("enable.idempotence", "true")
            .create_with_context(DeliveryCounter(Arc::clone(&counters)))
            .map_err(|e| ConnectorError::Kafka(format!("dead-letter producer: {e}")))?;
        Ok(Self {
            topic: topic.to_owned(),
            producer,
            counters,
        })
    }

    /// Queues one dead letter, waiting while the producer's queue is full (dead letters are
    /// never dropped; a full queue slows the dataflow down instead).
    pub fn send(&self, dead: &DeadLetter) {
        let (partition, offset) = (dead.partition.to_string(), dead.offset.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "source_topic",
                value: Some(&dead.source),
            })
            .insert(Header {
                key: "source_partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "source_offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "reason",
                value: Some(dead.reason.name()),
            })
            .insert(Header {
                key: "error",
                value: Some(&dead.error),
            });
        // Keyed by source partition so one partition's dead letters stay in order.
        let key = format!("{}:{}", dead.source, dead.partition);
        let mut record = BaseRecord::<String, Vec<u8>>::to(&self.topic)
            .key(&key)
            .payload(&dead.payload)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(QUEUE_FULL_BACKOFF);
                }
                Err((error, _)) => {
                    warn!(%error, topic = %self.topic, "dead letter not queued");
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Waits until every queued dead letter is delivered or failed.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer
            .flush(timeout)
            .map_err(|e| ConnectorError::Kafka(format!("flushing dead letters: {e}")))
    }
}

impl RowOutput for DeadLetterTopic {
    fn publish(&self, _frontier: Option<Millis>, updates: &mut [(Row, Millis, isize)]) {
        for (row, _, diff) in updates.iter() {
            if let (Row::DeadLetter(dead), 1..) = (row, diff) {
                self.send(dead);
            }
        }
    }
}
