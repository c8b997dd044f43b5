//! The `[kafka]` section of `workers.toml`: brokers, consumer group, the topics read (one per
//! event kind, or one mixed topic) with their formats, the dead-letter topic and the producer's
//! limits.

use crowdpulse_dataflow::codec::{DecodeContext, Format};
use crowdpulse_dataflow::config::Span;
use crowdpulse_dataflow::event::EventKind;
use crowdpulse_dataflow::kinds::config::KindSpec;
use serde::{Deserialize, Serialize};

use crate::error::{ConnectorError, Result};
use crate::kafka_source::{KafkaSourceOptions, TopicSource};
use crate::position::Position;

/// One topic crowdpulse reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTopicConfig {
    /// Topic name.
    pub name: String,
    /// Record encoding.
    #[serde(default)]
    pub format: Format,
    /// The kind every record of a single-kind topic has, so `type` may be omitted; absent for a
    /// mixed topic. HTTP ingest produces each event to the topic of its kind, or to the first
    /// mixed topic when no topic names the kind.
    #[serde(default)]
    pub kind: Option<EventKind>,
}

impl KafkaTopicConfig {
    fn of_kind(name: &str, kind: EventKind) -> Self {
        Self {
            name: name.into(),
            format: Format::Json,
            kind: Some(kind),
        }
    }
}

/// Kafka in and out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`; empty means no Kafka (HTTP ingest feeds the dataflow directly).
    pub brokers: String,
    /// Consumer group the read offsets are mirrored to (advisory, for lag tools).
    pub group_id: String,
    /// Topics read; by default the five per-kind topics of DESIGN §2.
    pub topics: Vec<KafkaTopicConfig>,
    /// Where malformed and late records are produced (raw bytes plus headers); empty: none.
    pub dead_letter_topic: String,
    /// Where `crowdpulse run` starts reading (`earliest`, `latest`, offsets, a timestamp).
    pub start: String,
    /// Messages the producer may hold unconfirmed before HTTP ingest answers 503.
    pub producer_queue_messages: u32,
    /// How long HTTP ingest waits for the broker to confirm its events before answering 503
    /// (librdkafka `message.timeout.ms`, whose own default is 5 minutes).
    pub produce_timeout: Span,
    /// How long HTTP ingest's producer lets a partition's events gather into one request
    /// (librdkafka `linger.ms`, whose own default is 5 ms; why longer: `IngestProducer::create`).
    pub ingest_linger: Span,
    /// How often read offsets are committed to the group and lag is measured.
    pub progress_interval: Span,
    /// How long the broker may hold a fetch for more data (librdkafka `fetch.wait.max.ms`).
    pub fetch_wait_max: Span,
}

/// The longest `linger.ms` librdkafka accepts.
const MAX_LINGER_MS: u64 = 900_000;
/// The longest `fetch.wait.max.ms` librdkafka accepts.
const MAX_FETCH_WAIT_MS: u64 = 300_000;

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            group_id: "crowdpulse".into(),
            topics: vec![
                KafkaTopicConfig::of_kind("chat", EventKind::Chat),
                KafkaTopicConfig::of_kind("reactions", EventKind::Reaction),
                KafkaTopicConfig::of_kind("viewers", EventKind::Viewer),
                KafkaTopicConfig::of_kind("transactions", EventKind::Transaction),
                KafkaTopicConfig::of_kind("stream_meta", EventKind::StreamMeta),
            ],
            dead_letter_topic: "dead_letters".into(),
            start: "earliest".into(),
            producer_queue_messages: 100_000,
            produce_timeout: Span(10_000),
            ingest_linger: Span(20),
            progress_interval: Span(1_000),
            fetch_wait_max: Span(10),
        }
    }
}

impl KafkaConfig {
    /// Whether a broker is configured.
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    /// Checks what serde cannot: topic names present and unique, and the producer settings
    /// librdkafka would refuse when `run` starts.
    pub fn validate(&self) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        if self.topics.is_empty() {
            return Err(ConnectorError::Config(
                "kafka.topics is empty: name at least one topic".into(),
            ));
        }
        if self.produce_timeout.0 == 0 {
            // librdkafka reads 0 as "retry forever".
            return Err(ConnectorError::Config(
                "kafka.produce_timeout must be > 0".into(),
            ));
        }
        if self.ingest_linger.0 > MAX_LINGER_MS {
            return Err(ConnectorError::Config(format!(
                "kafka.ingest_linger must be <= {} s (librdkafka's linger.ms)",
                MAX_LINGER_MS / 1000
            )));
        }
        if self.ingest_linger.0 >= self.produce_timeout.0 {
            // librdkafka refuses a producer whose messages would time out while lingering.
            return Err(ConnectorError::Config(
                "kafka.ingest_linger must be shorter than kafka.produce_timeout".into(),
            ));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            if topic.name.trim().is_empty() {
                return Err(ConnectorError::Config(format!(
                    "kafka.topics[{i}].name is empty"
                )));
            }
            if self.topics[..i].iter().any(|t| t.name == topic.name) {
                return Err(ConnectorError::Config(format!(
                    "kafka.topics names {} twice",
                    topic.name
                )));
            }
        }
        if self.producer_queue_messages == 0 {
            return Err(ConnectorError::Config(
                "kafka.producer_queue_messages must be >= 1".into(),
            ));
        }
        // librdkafka's own ranges, refused here by the name the user wrote rather than by
        // librdkafka's name when a client is created.
        let limits = [
            ("fetch_wait_max", self.fetch_wait_max.0, MAX_FETCH_WAIT_MS),
            ("produce_timeout", self.produce_timeout.0, i32::MAX as u64),
            (
                "producer_queue_messages",
                u64::from(self.producer_queue_messages),
                i32::MAX as u64,
            ),
        ];
        if let Some((name, _, limit)) = limits.iter().find(|(_, value, limit)| value > limit) {
            return Err(ConnectorError::Config(format!(
                "kafka.{name} must be at most {limit} (librdkafka's limit)"
            )));
        }
        Ok(())
    }

    /// The topic HTTP ingest produces an event of `kind` to: the topic of that kind, else the
    /// first mixed topic.
    pub fn topic_for(&self, kind: EventKind) -> Option<&KafkaTopicConfig> {
        self.topics
            .iter()
            .find(|t| t.kind == Some(kind))
            .or_else(|| self.topics.iter().find(|t| t.kind.is_none()))
    }

    /// The source settings for reading from `start` to `end`: the event topics, and the topic of
    /// each configured kind (`kinds`, the plan's).
    pub fn source_options(
        &self,
        start: Position,
        end: Option<Position>,
        kinds: &[KindSpec],
    ) -> KafkaSourceOptions {
        let events = self.topics.iter().map(|t| TopicSource {
            name: t.name.clone(),
            format: (
                t.format,
                DecodeContext {
                    default_kind: t.kind,
                    // The source sets the pipeline's limits.
                    ..DecodeContext::default()
                },
            ),
        });
        let kinds = kinds.iter().enumerate().map(|(index, kind)| TopicSource {
            name: kind.topic.clone(),
            // The kind's own format decodes the records.
            format: (
                Format::Json,
                DecodeContext {
                    kind: Some(index),
                    ..DecodeContext::default()
                },
            ),
        });
        KafkaSourceOptions {
            brokers: self.brokers.clone(),
            group_id: self.group_id.clone(),
            topics: events.chain(kinds).collect(),
            start,
            end,
            fetch_wait_max_ms: self.fetch_wait_max.0,
            liveness: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_routes_by_kind_then_to_the_mixed_topic() {
        let mut config = KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            ..KafkaConfig::default()
        };
        assert_eq!(config.topic_for(EventKind::Viewer).unwrap().name, "viewers");
        config.topics.retain(|t| t.kind != Some(EventKind::Viewer));
        assert!(config.topic_for(EventKind::Viewer).is_none());
        config.topics.push(KafkaTopicConfig {
            name: "events".into(),
            format: Format::Bincode,
            kind: None,
        });
        assert_eq!(config.topic_for(EventKind::Viewer).unwrap().name, "events");
        assert_eq!(config.topic_for(EventKind::Chat).unwrap().name, "chat");
        config.validate().unwrap();
    }

    #[test]
    fn empty_and_repeated_topic_names_are_refused() {
        let mut config = KafkaConfig {
            brokers: "b:9092".into(),
            ..KafkaConfig::default()
        };
        config.topics[1].name = "chat".into();
        assert!(config.validate().unwrap_err().to_string().contains("twice"));
        config.topics[1].name = " ".into();
        assert!(config.validate().unwrap_err().to_string().contains("empty"));
        config.topics.clear();
        assert!(config.validate().is_err());
        assert!(KafkaConfig {
            topics: Vec::new(),
            ..KafkaConfig::default()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn an_ingest_linger_librdkafka_would_refuse_is_refused_at_load() {
        let mut config = KafkaConfig {
            brokers: "b:9092".into(),
            produce_timeout: Span(1_000_000),
            ingest_linger: Span(900_001),
            ..KafkaConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("kafka.ingest_linger must be <="), "{error}");
        config.ingest_linger = Span(900_000);
        config.validate().unwrap();
        config.produce_timeout = Span(900_000);
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("shorter than kafka.produce_timeout"),
            "{error}"
        );
        config.ingest_linger = Span(0);
        config.validate().unwrap();
    }

    /// Values past librdkafka's ranges are refused by the setting's own name, at load.
    #[test]
    fn values_librdkafka_would_refuse_are_refused_at_load() {
        let valid = KafkaConfig {
            brokers: "b:9092".into(),
            ..KafkaConfig::default()
        };
        let refused = [
            (
                "fetch_wait_max",
                KafkaConfig {
                    fetch_wait_max: Span(300_001),
                    ..valid.clone()
                },
            ),
            (
                "produce_timeout",
                KafkaConfig {
                    produce_timeout: Span(1 << 31),
                    ..valid.clone()
                },
            ),
            (
                "producer_queue_messages",
                KafkaConfig {
                    producer_queue_messages: 1 << 31,
                    ..valid.clone()
                },
            ),
        ];
        for (name, config) in refused {
            let error = config.validate().unwrap_err().to_string();
            assert!(
                error.contains(&format!("kafka.{name} must be at most")),
                "{error}"
            );
        }
    }
}
