//! The dead-letter topic: each malformed or late record is produced with its raw bytes as the
//! value and where it came from and why in headers (`source_topic`, `source_partition`,
//! `source_offset`, `reason`, `error`), so it can be inspected and replayed with standard tools.

use std::sync::Arc;
use std::time::Duration;

use crowdpulse_dataflow::rows::{DeadLetter, Row};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};

use crate::error::{ConnectorError, Result};
use crate::kafka_delivery::{counted_producer, send_waiting, CountedProducer, DeliveryCounters};
use crate::sink::{Flush, Sink};

/// Produces dead letters to one topic.
pub struct DeadLetterTopic {
    topic: String,
    producer: CountedProducer,
    /// Delivery counters.
    pub counters: Arc<DeliveryCounters>,
}

impl DeadLetterTopic {
    /// A producer for `topic` on `brokers`.
    pub fn new(brokers: &str, topic: &str) -> Result<Self> {
        let (producer, counters) = counted_producer(brokers, &[])?;
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
        let record = BaseRecord::to(&self.topic)
            .key(key.as_bytes())
            .payload(&dead.payload[..])
            .headers(headers);
        send_waiting(&self.producer, &self.counters, record);
    }

    /// Waits until every queued dead letter is delivered or failed.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer
            .flush(timeout)
            .map_err(|e| ConnectorError::Kafka(format!("flushing dead letters: {e}")))
    }
}

impl Sink for DeadLetterTopic {
    fn flush(&self, flush: &Arc<Flush>) {
        for (row, _, diff) in &flush.updates {
            if let (Row::DeadLetter(dead), 1..) = (row, diff) {
                self.send(dead);
            }
        }
    }
}
