//! `crowdpulse generate --kafka`: the synthetic events produced to Kafka, keyed by stream so one
//! stream stays ordered in one partition, either paced by the wall clock (live) or as fast as the
//! broker takes them (bulk, for backfill benchmarks).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crowdpulse_dataflow::codec::{decode_json, encode_bincode, DecodeContext, Format};
use crowdpulse_dataflow::kinds::config::KindSpec;
use crowdpulse_dataflow::kinds::record::encode as encode_kind_record;
use rdkafka::producer::{BaseRecord, Producer};
use tracing::info;

use crate::download_generator::DownloadGenerator;
use crate::error::{ConnectorError, Result};
use crate::generator::{Generated, Generator, GeneratorConfig};
use crate::kafka_config::{KafkaConfig, KafkaTopicConfig};
use crate::kafka_delivery::{counted_producer, send_waiting};

/// Where generated events go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Every event to one (mixed) topic, in this format.
    Topic(String, Format),
    /// Each event to its kind's topic per `[kafka]` (malformed lines to the first topic).
    ByKind(KafkaConfig),
}

impl Destination {
    fn route<'a>(&'a self, record: &Generated) -> Option<(&'a str, Format)> {
        match self {
            Destination::Topic(name, format) => Some((name, *format)),
            Destination::ByKind(config) => record
                .kind
                .and_then(|kind| config.topic_for(kind))
                .or(config.topics.first())
                .map(|t: &KafkaTopicConfig| (t.name.as_str(), t.format)),
        }
    }
}

/// What was produced.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateSummary {
    /// Messages the broker confirmed.
    pub delivered: u64,
    /// Wall time until the last confirmation.
    pub elapsed: Duration,
}

/// How long the final flush may wait for confirmations.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// One message to produce: topic, key (None: the partitioner chooses), payload.
type Message<'a> = (&'a str, Option<Vec<u8>>, std::borrow::Cow<'a, [u8]>);

/// Produces `messages` to `brokers`. With `paced`, they go out at `rate` per wall-clock second;
/// without, as fast as the producer takes them.
fn produce<'a>(
    brokers: &str,
    paced: bool,
    rate: f64,
    messages: impl Iterator<Item = Result<Message<'a>>>,
) -> Result<GenerateSummary> {
    let started = Instant::now();
    let (producer, counters) = counted_producer(
        brokers,
        &[
            // Live: events leave within 5 ms. Bulk: large record batches, which is also how
            // the data is read back (some brokers, tansu among them, answer a fetch with about
            // one batch, so small batches cap every later consumer).
            ("linger.ms", if paced { "5" } else { "100" }),
            ("batch.num.messages", "100000"),
            ("batch.size", "8000000"),
            ("queue.buffering.max.messages", "500000"),
            // Messages without a key go each to a random partition, not a whole batch to one
            // (librdkafka's sticky default), so every stream is spread over every partition.
            ("sticky.partitioning.linger.ms", "0"),
        ],
    )?;
    for (index, message) in messages.enumerate() {
        if paced {
            let due = Duration::from_secs_f64(index as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let (topic, key, payload) = message?;
        let mut record = BaseRecord::to(topic).payload(&payload[..]);
        if let Some(key) = &key {
            record = record.key(&key[..]);
        }
        send_waiting(&producer, &counters, record);
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .map_err(|e| ConnectorError::Kafka(format!("flushing generated records: {e}")))?;
    let failed = counters.failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(ConnectorError::Kafka(format!(
            "{failed} generated records were not delivered"
        )));
    }
    let summary = GenerateSummary {
        delivered: counters.delivered.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    };
    info!(delivered = summary.delivered, "generated records produced");
    Ok(summary)
}

/// Produces `config.events` generated records to `destination` on `brokers`, `keyed` by stream
/// or without keys. With `paced`, the records go out at `config.rate` per wall-clock second (event
/// times should then start now); without, as fast as the producer takes them.
pub fn produce_generated(
    brokers: &str,
    destination: &Destination,
    config: GeneratorConfig,
    paced: bool,
    keyed: bool,
) -> Result<GenerateSummary> {
    let rate = config.rate;
    let messages = Generator::new(config).map(|record| {
        let Some((topic, format)) = destination.route(&record) else {
            return Err(ConnectorError::Config("no topic to produce to".into()));
        };
        let payload = match format {
            Format::Json => record.line.into_bytes(),
            Format::Bincode => match decode_json(record.line.as_bytes(), &DecodeContext::default())
            {
                Ok(event) => encode_bincode(&event),
                // Malformed lines stay as they are: they must reach the dead-letter path.
                Err(_) => record.line.into_bytes(),
            },
        };
        let key = keyed.then(|| record.stream_id.into_bytes());
        Ok((topic, key, payload.into()))
    });
    produce(brokers, paced, rate, messages)
}

/// Produces generated download records to `kind`'s topic, in its format, keyed by region.
pub fn produce_downloads(
    brokers: &str,
    kind: &KindSpec,
    downloads: DownloadGenerator,
    rate: f64,
    paced: bool,
) -> Result<GenerateSummary> {
    let messages = downloads.map(|(key, record)| {
        let payload = encode_kind_record(kind, &record)
            .map_err(|e| ConnectorError::Config(format!("pipeline.kinds.{}: {e}", kind.name)))?;
        Ok((kind.topic.as_str(), Some(key.into_bytes()), payload.into()))
    });
    produce(brokers, paced, rate, messages)
}
