//! The Kafka source's partition assignment: partition p of each topic is read by global worker
//! `p % workers`, through one manually assigned consumer per worker (never group rebalancing,
//! so the assignment, and with it every result, is deterministic).

use std::sync::Arc;
use std::time::Duration;

use crowdpulse_dataflow::codec::{DecodeContext, Format};
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::source::PartitionReader;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use crate::error::{ConnectorError, Result};
use crate::kafka_reader::{
    close_in_background, KafkaPartitionReader, Liveness, ReadBound, SkipBefore, SourceConsumer,
    SourceContext,
};
use crate::position::Position;

/// How long metadata and offset lookups may take before the start fails.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A worker's metadata lookups, in all (see [`worker_partition_count`]).
const WORKER_LOOKUP_ATTEMPTS: u32 = 3;

/// One topic to read.
#[derive(Debug, Clone)]
pub struct TopicSource {
    /// Topic name.
    pub name: String,
    /// Record encoding and decode defaults (e.g. the kind of a single-kind topic).
    pub format: (Format, DecodeContext),
}

/// What the Kafka source reads.
#[derive(Debug, Clone)]
pub struct KafkaSourceOptions {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// Consumer group the offsets are mirrored to (advisory: nothing is committed automatically).
    pub group_id: String,
    /// The topics.
    pub topics: Vec<TopicSource>,
    /// Where reading starts.
    pub start: Position,
    /// Where a bounded read ends; None reads live.
    pub end: Option<Position>,
    /// librdkafka's `fetch.wait.max.ms`: how long the broker may hold a fetch.
    pub fetch_wait_max_ms: u64,
    /// Live reads: whether the brokers answer (a caught-up partition of an unreachable broker
    /// is not idle).
    pub liveness: Option<Liveness>,
}

fn kafka_error(what: &str, error: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Kafka(format!("{what}: {error}"))
}

/// What every client of the source is configured with.
fn client_config(options: &KafkaSourceOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &options.brokers);
    config
}

/// A consumer for metadata lookups. Without a group, its drop does not wait 100 ms for a group
/// close (rdkafka's `BaseConsumer::drop`), which every run paid at its start.
fn lookup_consumer(options: &KafkaSourceOptions) -> Result<SourceConsumer> {
    client_config(options)
        .create_with_context(SourceContext)
        .map_err(|e| kafka_error("creating the consumer", e))
}

/// A worker's reading consumer.
fn consumer(options: &KafkaSourceOptions) -> Result<SourceConsumer> {
    client_config(options)
        // Manual assignment needs a group (librdkafka); nothing joins it.
        .set("group.id", &options.group_id)
        // Offsets are crowdpulse's to manage (DESIGN §5); the group only mirrors them.
        .set("enable.auto.commit", "false")
        // The EOF signal is what makes `--until latest` exact on brokers whose reported latest
        // offset is stale, and what tells a live partition is caught up.
        .set("enable.partition.eof", "true")
        // An offset out of range (retention overtook the reader) is an error the readers
        // report, never a silent jump to an end of the partition.
        .set("auto.offset.reset", "error")
        // Some brokers (tansu) hold every fetch this long even when data is there; Kafka returns
        // at once when data is there. Short, so backfills are not throttled (measured with
        // scripts/bench-kafka: 500 ms, the librdkafka default, caps reading at ~220k msg/s on
        // tansu; 10 ms reaches ~1M msg/s) and live events are not held back.
        .set("fetch.wait.max.ms", options.fetch_wait_max_ms.to_string())
        // A partition whose local queue is full (queued.min.messages) is not fetched again for
        // this long; librdkafka's 1 s default left the workers idle most of a backfill, since the
        // dataflow drains a full queue in a fraction of that (scripts/bench-kafka, 1M events,
        // 2 workers: 354-537k -> about 900k events/s).
        .set("fetch.queue.backoff.ms", "10")
        // librdkafka prefetches this many messages per partition (default 100,000); 20,000
        // keeps the dataflow fed with less memory (bench-kafka: peak RSS 270-300 -> 220-230
        // MiB at the same rate; a 16 MiB queued.max.messages.kbytes instead changed nothing).
        .set("queued.min.messages", "20000")
        .create_with_context(SourceContext)
        .map_err(|e| kafka_error("creating the consumer", e))
}

/// The number of partitions of `topic`; an error when it has none (or does not exist).
fn partition_count(consumer: &SourceConsumer, topic: &str) -> Result<i32> {
    partitions_in(topic, consumer.fetch_metadata(Some(topic), LOOKUP_TIMEOUT))
}

/// [`partition_count`] as a worker looks it up with its reading consumer `current`. The run
/// found every topic when it started ([`check_topics`]), so a lookup left unanswered now is most
/// likely a broker slow to answer: under parallel tests tansu once left a worker's lookup
/// unanswered for 10 s, which failed the run. The worker then replaces its consumer (so it does
/// not go on reading through the silent connection) and asks again, up to
/// [`WORKER_LOOKUP_ATTEMPTS`] in all; a broker that went away since costs 30 s to report
/// instead of 10.
fn worker_partition_count(
    options: &KafkaSourceOptions,
    current: &mut SourceConsumer,
    topic: &str,
) -> Result<i32> {
    let mut answer = current.fetch_metadata(Some(topic), LOOKUP_TIMEOUT);
    for attempt in 2..=WORKER_LOOKUP_ATTEMPTS {
        // Silence shows as the lookup's timeout, or as no usable broker when the connection
        // never completed its handshake (librdkafka gives up on that after 10 s too).
        let error = match &answer {
            Err(
                error @ KafkaError::MetadataFetch(
                    RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::BrokerTransportFailure,
                ),
            ) => error.to_string(),
            _ => break,
        };
        warn!(
            topic,
            attempt,
            %error,
            "metadata lookup unanswered, trying again with a fresh consumer"
        );
        close_in_background(std::mem::replace(current, consumer(options)?));
        answer = current.fetch_metadata(Some(topic), LOOKUP_TIMEOUT);
    }
    partitions_in(topic, answer)
}

/// The partition count in a metadata answer about `topic`.
fn partitions_in(topic: &str, answer: KafkaResult<Metadata>) -> Result<i32> {
    let metadata = answer.map_err(|e| kafka_error(&format!("metadata of {topic}"), e))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    if partitions == 0 {
        return Err(ConnectorError::Kafka(format!(
            "topic {topic} has no partitions (does it exist?)"
        )));
    }
    Ok(partitions)
}

/// Checks that the brokers answer and every topic exists; returns each topic's partition count.
pub fn check_topics(options: &KafkaSourceOptions) -> Result<Vec<(String, i32)>> {
    let consumer = lookup_consumer(options)?;
    options
        .topics
        .iter()
        .map(|t| partition_count(&consumer, &t.name).map(|n| (t.name.clone(), n)))
        .collect()
}

/// The readers of worker `index` of `workers`: its partitions of every topic, assigned to one
/// consumer and positioned at `options.start` (a relative time counted from `clock`).
pub fn worker_readers(
    options: &KafkaSourceOptions,
    index: usize,
    workers: usize,
    clock: Millis,
) -> Result<Vec<Box<dyn PartitionReader>>> {
    // Times relative to now count from the run's clock, one for every process of a cluster.
    let (start, end) = (
        options.start.resolved(clock),
        options.end.as_ref().map(|end| end.resolved(clock)),
    );
    if start == Position::Latest && end == Some(Position::Latest) {
        // Nothing present at start is after the start. (librdkafka signals no partition EOF
        // for a partition started at its end until a message arrives, so this cannot be left
        // to the readers.)
        return Ok(Vec::new());
    }
    let mut consumer = consumer(options)?;
    let mut mine = Vec::new();
    for topic in &options.topics {
        let partitions = worker_partition_count(options, &mut consumer, &topic.name)?;
        mine.extend(
            (0..partitions)
                .filter(|p| *p as usize % workers.max(1) == index)
                .map(|p| (topic, p)),
        );
    }
    if mine.is_empty() {
        // More workers than partitions: nothing to read, and no reader to close the consumer.
        close_in_background(consumer);
        return Ok(Vec::new());
    }
    let mut assignment = TopicPartitionList::new();
    for (topic, partition) in &mine {
        // Explicit offsets are enforced by the readers (SkipBefore::Offset); times are looked
        // up below.
        let offset = match &start {
            Position::Latest => Offset::End,
            // (A relative time is resolved above.)
            Position::Earliest
            | Position::Timestamp(_)
            | Position::Ago(_)
            | Position::Offsets(_) => Offset::Beginning,
        };
        assignment
            .add_partition_offset(&topic.name, *partition, offset)
            .map_err(|e| kafka_error("assignment", e))?;
    }
    if let Position::Timestamp(start) = start {
        // Seek by time; the readers also skip earlier messages, since some brokers answer this
        // lookup imprecisely.
        assignment
            .set_all_offsets(Offset::Offset(start as i64))
            .map_err(|e| kafka_error("assignment", e))?;
        assignment = consumer
            .offsets_for_times(assignment, LOOKUP_TIMEOUT)
            .map_err(|e| kafka_error("offsets by time", e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| kafka_error("assign", e))?;
    let consumer = Arc::new(consumer);
    mine.into_iter()
        .map(|(topic, partition)| {
            let skip_before = match (&start, start.offset_of(&topic.name, partition)) {
                (Position::Timestamp(start), _) => SkipBefore::Time(*start),
                (_, Some(offset)) => SkipBefore::Offset(offset),
                _ => SkipBefore::Nothing,
            };
            let bound = match &end {
                None => ReadBound::Unbounded,
                Some(Position::Timestamp(end)) => ReadBound::BeforeTimestamp(*end),
                Some(end) => end
                    .offset_of(&topic.name, partition)
                    .map_or(ReadBound::EndOfPartition, ReadBound::BeforeOffset),
            };
            // Started at the end: caught up until a message comes (librdkafka signals no EOF
            // for a partition started there).
            let at_end = start == Position::Latest;
            KafkaPartitionReader::new(
                &consumer,
                &topic.name,
                partition,
                topic.format,
                skip_before,
                (bound, at_end, options.liveness.clone()),
            )
            .map(|reader| Box::new(reader) as Box<dyn PartitionReader>)
            .ok_or_else(|| {
                ConnectorError::Kafka(format!("no queue for {}:{partition}", topic.name))
            })
        })
        .collect()
}
