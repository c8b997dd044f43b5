//! HTTP ingest into Kafka: each accepted event is produced to its kind's topic, keyed by
//! `stream_id` (one stream stays ordered in one partition), and the caller waits for the
//! broker's confirmation before answering.

use crowdpulse_dataflow::codec::{encode_bincode, Format};
use crowdpulse_dataflow::event::{Event, EventKind, Millis};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::error::{ConnectorError, Result};
use crate::kafka_config::KafkaConfig;
use crate::kafka_delivery::producer_config;

/// Why an event was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueError {
    /// The producer holds `producer_queue_messages` unconfirmed messages: try again later.
    Full,
    /// No configured topic takes this kind.
    NoTopic(EventKind),
    /// librdkafka refused the message.
    Kafka(String),
}

/// Produces HTTP-ingested events.
pub struct IngestProducer {
    producer: FutureProducer,
    kafka: KafkaConfig,
}

impl IngestProducer {
    /// A producer for the `[kafka]` section's brokers and topics.
    pub fn new(kafka: &KafkaConfig) -> Result<Self> {
        let capacity = kafka.producer_queue_messages.to_string();
        let producer = producer_config(&kafka.brokers)
            // The bound behind 503: a full queue refuses instead of growing.
            .set("queue.buffering.max.messages", &capacity)
            .create()
            .map_err(|e| ConnectorError::Kafka(format!("creating the ingest producer: {e}")))?;
        Ok(Self {
            producer,
            kafka: kafka.clone(),
        })
    }

    /// Whether `records` more messages fit in the queue now.
    pub fn has_room(&self, records: usize) -> bool {
        self.in_flight() + records <= self.kafka.producer_queue_messages as usize
    }

    /// Messages queued or awaiting confirmation.
    pub fn in_flight(&self) -> usize {
        self.producer.in_flight_count().max(0) as usize
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
        self.producer
            .send_result(record)
            .map_err(|(error, _)| match error {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => EnqueueError::Full,
                other => EnqueueError::Kafka(other.to_string()),
            })
    }
}
