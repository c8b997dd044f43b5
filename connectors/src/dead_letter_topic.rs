//! The dead-letter topic: each malformed or late record is produced with its raw bytes as the
//! value and where it came from and why in headers (`source_topic`, `source_partition`,
//! `source_offset`, `reason`, `error`), so it can be inspected and replayed with standard tools.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdpulse_dataflow::rows::{DeadLetter, Row};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use tracing::warn;

use crate::error::{ConnectorError, Result};
use crate::kafka_delivery::{
    counted_producer, send_waiting, try_send, CountedProducer, DeliveryCounters, QUEUE_FULL_BACKOFF,
};
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
        self.with_record(dead, |record| {
            send_waiting(&self.producer, &self.counters, record)
        });
    }

    /// Queues one dead letter from an async task: while the producer's queue is full it waits
    /// without holding its thread, until `deadline`; then it gives up, logs and counts the
    /// letter as failed (false). For the copies of refusals whose sender is answered anyway.
    pub async fn send_before(&self, dead: &DeadLetter, deadline: Instant) -> bool {
        loop {
            let queued = self.with_record(dead, |record| {
                try_send(&self.producer, &self.counters, record).is_ok()
            });
            if queued {
                return true;
            }
            if Instant::now() >= deadline {
                warn!(
                    source = %dead.source,
                    offset = dead.offset,
                    "dead letter not queued: the producer's queue stayed full"
                );
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
        }
    }

    /// Calls `queue` with the Kafka record of `dead`.
    fn with_record<R>(
        &self,
        dead: &DeadLetter,
        queue: impl FnOnce(BaseRecord<'_, [u8], [u8]>) -> R,
    ) -> R {
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
        queue(record)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crowdpulse_dataflow::rows::DeadLetterReason;

    /// HTTP ingest sends its refusals' copies from the API's runtime: a full producer queue
    /// (an outage) must not hold that thread, nor the request for ever.
    #[tokio::test]
    async fn an_async_send_waits_for_room_without_holding_its_thread_and_gives_up() {
        // Nothing listens there: queued messages wait, as in an outage.
        let (producer, counters) =
            counted_producer("127.0.0.1:9", &[("queue.buffering.max.messages", "2")]).unwrap();
        let topic = DeadLetterTopic {
            topic: "dead".into(),
            producer,
            counters,
        };
        let dead = DeadLetter::new("http", 0, 0, DeadLetterReason::Invalid, "bad".into(), b"{}");
        let soon = Instant::now() + Duration::from_secs(5);
        assert!(topic.send_before(&dead, soon).await);
        assert!(topic.send_before(&dead, soon).await);
        let mut ticks = 0;
        let (queued, ()) = tokio::join!(
            topic.send_before(&dead, Instant::now() + Duration::from_millis(300)),
            async {
                let mut interval = tokio::time::interval(Duration::from_millis(10));
                for _ in 0..20 {
                    interval.tick().await;
                    ticks += 1;
                }
            }
        );
        assert!(!queued, "queued into a full queue");
        assert_eq!(ticks, 20, "the wait held the runtime's only thread");
        assert_eq!(topic.counters.failed.load(Ordering::Relaxed), 1);
    }
}
