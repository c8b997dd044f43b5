//! HTTP ingest into Kafka: each accepted event is produced to its kind's topic, keyed by
//! `stream_id` (one stream stays ordered in one partition), and the caller waits for the
//! broker's confirmation before answering.

use crowdpulse_dataflow::codec::{encode_bincode, Format};
use crowdpulse_dataflow::event::{Event, EventKind, Millis};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::warn;

use crate::error::{ConnectorError, Result};
use crate::kafka_config::KafkaConfig;
use crate::kafka_delivery::producer_config;

/// Why an event was not queued.
#[derive(Debug, Clone)]
pub enum EnqueueError {
    /// The producer holds `producer_queue_messages` unconfirmed messages: try again later.
    Full,
    /// No configured topic takes this kind.
    NoTopic(EventKind),
    /// The message can never be produced (larger than the producer's `message.max.bytes`):
    /// the client must not retry it.
    TooLarge(String),
    /// librdkafka refused the message.
    Kafka(KafkaError),
}

/// Whether a produce error is the record's own fault, which no retry mends (as opposed to an
/// outage).
pub fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// Produces HTTP-ingested events.
pub struct IngestProducer {
    producer: RwLock<Arc<FutureProducer>>,
    kafka: KafkaConfig,
    /// Held by the request being admitted and queued ([`IngestProducer::admit`]).
    admission: tokio::sync::Mutex<()>,
}

impl IngestProducer {
    /// A producer for the `[kafka]` section's brokers and topics.
    pub fn new(kafka: &KafkaConfig) -> Result<Self> {
        Ok(Self {
            producer: RwLock::new(Arc::new(Self::create(kafka)?)),
            kafka: kafka.clone(),
            admission: tokio::sync::Mutex::new(()),
        })
    }

    fn create(kafka: &KafkaConfig) -> Result<FutureProducer> {
        let capacity = kafka.producer_queue_messages.to_string();
        let timeout = kafka.produce_timeout.0.to_string();
        let linger = kafka.ingest_linger.0.to_string();
        producer_config(&kafka.brokers)
            // The bound behind 503: a full queue refuses instead of growing.
            .set("queue.buffering.max.messages", &capacity)
            // A broker outage answers 503 within this, not after librdkafka's 5 minutes.
            .set("message.timeout.ms", &timeout)
            // An idempotent producer keeps at most 5 requests in flight per partition, and
            // librdkafka's broker thread spins without sleeping while a batch that waited out
            // its linger has no free slot: with the default 5 ms, a broker confirming in more
            // than ~25 ms (a loaded one) cost a core of busy waiting. Longer batches move that
            // point 4x further out for 15 ms more per event, well inside the out-of-orderness
            // wait (2 s by default) every result has anyway.
            .set("linger.ms", &linger)
            .create()
            .map_err(|e| ConnectorError::Kafka(format!("creating the ingest producer: {e}")))
    }

    fn current(&self) -> Arc<FutureProducer> {
        Arc::clone(&self.producer.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the producer after `error` when no later message of it could succeed: a fatal
    /// error, or an idempotent producer's identity refused by the broker (after messages timed
    /// out during an outage, brokers may fence it). Ingest would otherwise answer 503 forever
    /// after the broker is back.
    pub fn renew_if_failed(&self, error: &KafkaError) {
        let current = self.current();
        let refused_identity = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::InvalidProducerIdMapping
                    | RDKafkaErrorCode::Fatal
            )
        );
        let fatal = current.client().fatal_error();
        if !refused_identity && fatal.is_none() {
            return;
        }
        let mut slot = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&slot, &current) {
            return; // another request renewed it already
        }
        match Self::create(&self.kafka) {
            Ok(fresh) => {
                warn!(%error, ?fatal, "the ingest producer can produce no more; starting a new one");
                *slot = Arc::new(fresh);
            }
            Err(error) => warn!(%error, "the ingest producer failed and cannot be recreated"),
        }
    }

    /// Admits a request of `records` messages if the queue has room for all of them (None:
    /// busy). Until the guard is dropped no other request is admitted, so the caller queues
    /// its messages first: two requests that both found room could otherwise fill the queue
    /// together, and the one that then met it full halfway would be answered busy with part of
    /// it produced, which its retry would produce again.
    pub async fn admit(&self, records: usize) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let admission = self.admission.lock().await;
        let room = self.in_flight() + records <= self.kafka.producer_queue_messages as usize;
        room.then_some(admission)
    }

    /// How long a message may wait for the broker (`kafka.produce_timeout`).
    pub fn produce_timeout(&self) -> Duration {
        self.kafka.produce_timeout.duration()
    }

    /// Messages queued or awaiting confirmation.
    pub fn in_flight(&self) -> usize {
        self.current().in_flight_count().max(0) as usize
    }

    /// Queues `event` (`raw` is the JSON it was decoded from, produced as is to JSON topics) with
    /// the broker timestamp `arrival`, which stands in for a missing `ts` when it is read back.
    pub fn enqueue(
        &self,
        event: &Event,
        raw: &[u8],
        arrival: Millis,
    ) -> std::result::Result<DeliveryFuture, EnqueueError> {
        let topic = self
            .kafka
            .topic_for(event.kind())
            .ok_or(EnqueueError::NoTopic(event.kind()))?;
        let encoded;
        let payload = match topic.format {
            Format::Json => raw,
            Format::Bincode => {
                encoded = encode_bincode(event);
                &encoded[..]
            }
        };
        let record = FutureRecord::to(&topic.name)
            .key(event.stream_id.as_bytes())
            .payload(payload)
            .timestamp(arrival as i64);
        self.current()
            .send_result(record)
            .map_err(|(error, _)| match error {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => EnqueueError::Full,
                other if is_permanent(&other) => EnqueueError::TooLarge(other.to_string()),
                other => EnqueueError::Kafka(other),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowdpulse_dataflow::event::EventBody;

    fn reaction() -> Event {
        Event {
            stream_id: "s".into(),
            ts: 1_000,
            body: EventBody::Reaction {
                user_id: "u".into(),
                emoji: "x".into(),
            },
            event_id: None,
        }
    }

    /// Requests are admitted one at a time, each for the room it needs: a second request waits
    /// while the first queues its messages, and then finds the room they took (two found room
    /// together before, and one met the queue full halfway).
    #[tokio::test]
    async fn requests_are_admitted_one_at_a_time_for_the_room_they_need() {
        let kafka = KafkaConfig {
            // Nothing listens there: queued messages wait, as in an outage.
            brokers: "127.0.0.1:9".into(),
            producer_queue_messages: 100,
            ..KafkaConfig::default()
        };
        let producer = IngestProducer::new(&kafka).unwrap();
        let first = producer.admit(60).await.expect("room for the first");
        let second = tokio::time::timeout(Duration::from_millis(200), producer.admit(60));
        assert!(
            second.await.is_err(),
            "admitted while the first was queueing"
        );
        let deliveries: Vec<_> = (0..60)
            .map(|_| producer.enqueue(&reaction(), b"{}", 1_000).unwrap())
            .collect();
        drop(first);
        assert!(
            producer.admit(60).await.is_none(),
            "60 + 60 fit a queue of 100"
        );
        // Not 40: librdkafka's queue length also counts events not yet served, such as the
        // errors of connecting to the absent broker.
        assert!(producer.admit(20).await.is_some());
        drop(deliveries);
    }
}
