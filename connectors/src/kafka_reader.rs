//! One Kafka partition as a [`PartitionReader`]: messages come from the partition's own
//! librdkafka queue (split off the worker's consumer), which wakes the source operator when it
//! becomes non-empty, so the source never busy-polls.

use std::cell::Cell;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crowdpulse_dataflow::codec::{DecodeContext, Format};
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::source::{PartitionReader, ReadStatus, RecordBatch};
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use timely::scheduling::SyncActivator;
use tracing::{debug, warn};

use crate::kafka_progress::KafkaLag;
use crate::live_input::wall_clock_ms;

/// Where reading a partition stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Never (live): the partition can go idle and wall-clock time moves its watermark.
    Unbounded,
    /// At the partition's end when reading began: the high watermark of the first fetch answer
    /// (exact, where some brokers' offset lookups are stale), or the partition-EOF signal if the
    /// partition is empty. Messages produced later are not read.
    EndOfPartition,
    /// Before this offset (exclusive), or at the partition's end if that comes first.
    BeforeOffset(i64),
    /// At the partition's end, keeping only messages with a timestamp before this (epoch ms).
    BeforeTimestamp(Millis),
}

/// The source consumers' client context. librdkafka also reports a partition's EOF, which the
/// readers expect and act on, as a global client error; rdkafka's default context would log it
/// at `error` level, so here it is debug and only real errors warn.
pub struct SourceContext;

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_)
            | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF) => {
                debug!(%reason, "partition end reached")
            }
            error => warn!(%error, %reason, "kafka client error"),
        }
    }
}

impl ConsumerContext for SourceContext {}

/// A consumer of the Kafka source.
pub type SourceConsumer = BaseConsumer<SourceContext>;

/// Drops `consumer` on a thread of its own. rdkafka (0.39) closes a consumer that has a group
/// when it is dropped and waits for the close in 100 ms polls that nothing wakes early: at the
/// end of every bounded run, after its last row was written, a worker would wait that long. The
/// close has nothing to finish for a manually assigned consumer that commits nothing, so nobody
/// needs to wait for it (a process that exits meanwhile just ends it). Without a thread, the
/// consumer is dropped here.
pub fn close_in_background<C: Send + 'static>(consumer: C) {
    let _ = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || drop(consumer));
}

/// A worker's consumer as its readers share it: the last one to go closes it in the background
/// ([`close_in_background`]).
struct SharedConsumer<C: Send + Sync + 'static = SourceConsumer>(Option<Arc<C>>);

impl<C: Send + Sync + 'static> Deref for SharedConsumer<C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.0.as_deref().expect("taken only when dropped")
    }
}

impl<C: Send + Sync + 'static> Drop for SharedConsumer<C> {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take().and_then(Arc::into_inner) {
            close_in_background(consumer);
        }
    }
}

/// Messages at the start of a partition that are fetched but not wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipBefore {
    /// None.
    Nothing,
    /// Messages with a timestamp before this (epoch ms): brokers may answer an offset lookup by
    /// time imprecisely (tansu answers offset 0), so the start time is enforced here.
    Time(Millis),
    /// Messages before this offset: some brokers (tansu) answer a fetch from inside a record
    /// batch with the next batch, losing the rest of the first one, or with nothing at all
    /// when it is the last; so an explicit start offset is fetched from the partition's start
    /// and enforced here.
    Offset(i64),
}

/// A Kafka partition read in order.
pub struct KafkaPartitionReader {
    topic: String,
    partition: i32,
    format: (Format, DecodeContext),
    /// Declared (so dropped) before `consumer`: the queue holds the consumer too.
    queue: PartitionQueue<SourceContext>,
    consumer: SharedConsumer,
    skip_before: SkipBefore,
    bound: ReadBound,
    done: bool,
    /// librdkafka reported the broker's end of the partition and no message came since (or the
    /// read started at the end).
    at_end: bool,
    /// When set, caught up also needs the broker to have answered recently: after the end was
    /// reached, an unreachable broker says nothing, and its held-back messages must not be late.
    liveness: Option<Liveness>,
    /// The error the partition is stuck on: librdkafka reports it once and stops fetching.
    failed: Option<String>,
    /// Reading began at the partition's end (`latest`).
    from_end: bool,
    /// An explicit start offset not yet checked against the partition's first message and
    /// first end (see [`missing_start`]); cells, as they are taken while a message borrows the
    /// queue.
    unchecked_start: Cell<Option<i64>>,
    unreached_start: Cell<Option<i64>>,
    /// The offset after the last message read or, when larger, the end the consumer's fetch
    /// answer gave at the last end of partition (None: neither yet).
    read_to: Option<i64>,
    /// (topic, partition), as the lag lookups key their measurements.
    lag_key: (String, u32),
}

/// Whether the brokers answer: the lag lookups' last complete round, and how old it may be.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// Lag lookups (`crowdpulse run`'s offset mirror).
    pub lag: Arc<KafkaLag>,
    /// How long without an answer still counts as reachable, ms.
    pub silence: Millis,
}

impl Liveness {
    /// Whether a reader at its partition's end, at `read_to`, is caught up: the brokers answer,
    /// and the partition's last measured end is not past `read_to`. A consumer's end of partition
    /// outlives an outage: after a broker restart its lookups may answer while the consumer has
    /// not fetched again, and what was produced meanwhile must not count as read.
    fn caught_up(&self, partition: &(String, u32), read_to: Option<i64>) -> bool {
        let answered = self
            .lag
            .answered_at()
            .is_some_and(|at| wall_clock_ms().saturating_sub(at) <= self.silence);
        answered
            && self
                .lag
                .high_watermark(partition)
                .is_none_or(|high| read_to.is_none_or(|read_to| high <= read_to))
    }
}

impl KafkaPartitionReader {
    /// A reader of `topic`/`partition`, which `consumer` must have assigned.
    pub fn new(
        consumer: &Arc<SourceConsumer>,
        topic: &str,
        partition: i32,
        format: (Format, DecodeContext),
        skip_before: SkipBefore,
        (bound, at_end, liveness): (ReadBound, bool, Option<Liveness>),
    ) -> Option<Self> {
        let queue = consumer.split_partition_queue(topic, partition)?;
        let explicit_start = match skip_before {
            SkipBefore::Offset(offset) => Some(offset),
            SkipBefore::Time(_) | SkipBefore::Nothing => None,
        };
        Some(Self {
            topic: topic.to_owned(),
            partition,
            format,
            queue,
            consumer: SharedConsumer(Some(Arc::clone(consumer))),
            skip_before,
            bound,
            done: false,
            at_end,
            liveness,
            failed: None,
            from_end: at_end,
            unchecked_start: Cell::new(explicit_start),
            unreached_start: Cell::new(explicit_start),
            read_to: None,
            lag_key: (topic.to_owned(), partition as u32),
        })
    }
}

/// What a reader has met of its partition when it checks an explicit start offset.
#[derive(Debug, Clone, Copy)]
enum Met {
    /// The first message, at this offset.
    First(i64),
    /// The partition's end, before any message.
    EndFirst,
    /// The partition's end, after messages.
    End,
}

/// Why the partition no longer holds `start`, an explicit start offset (a checkpoint's, when a
/// run resumes) that is read from the partition's beginning (see [`SkipBefore::Offset`]):
/// reading on would skip what is missing without a word, where librdkafka reports an offset out
/// of range when it is asked to fetch at one. The first message tells whether the log begins
/// after `start` (retention removed it; a log that begins at or before it but whose first
/// message comes later holds markers or compacted offsets there, not a loss), unless the end
/// comes first; the first end tells whether the partition ends before `start` (the topic was
/// deleted and made again). `watermarks` are the cached ones (low, high).
fn missing_start(start: i64, met: Met, watermarks: Option<(i64, i64)>) -> Option<String> {
    let way_out = "restart from a position that exists (e.g. --from earliest)";
    let begins = match (met, watermarks) {
        (Met::First(first), Some((low, _))) if first > start && low > start => Some(low),
        (Met::First(first), None) if first > start => Some(first),
        (Met::EndFirst, Some((low, _))) if low > start => Some(low),
        _ => None,
    };
    if let Some(begins) = begins {
        return Some(format!(
            "offset out of range: the partition begins at {begins}, after the position {start} \
             to read from (retention removed messages not read yet); {way_out}"
        ));
    }
    match (met, watermarks) {
        (Met::End | Met::EndFirst, Some((_, high))) if high < start => Some(format!(
            "offset out of range: the partition ends at {high}, before the position {start} to \
             read from (was the topic deleted and made again?); {way_out}"
        )),
        _ => None,
    }
}

/// Takes one message into `out` unless `bound` or the start excludes it; returns whether the
/// partition is finished.
fn take(
    (skip_before, bound): (SkipBefore, ReadBound),
    offset: i64,
    timestamp: Option<Millis>,
    payload: &[u8],
    out: &mut RecordBatch,
) -> bool {
    if let ReadBound::BeforeOffset(end) = bound {
        if offset >= end {
            return true;
        }
    }
    let before_start = match (skip_before, timestamp) {
        (SkipBefore::Time(start), Some(ts)) => ts < start,
        (SkipBefore::Offset(start), _) => offset < start,
        _ => false,
    };
    let after_end =
        matches!((bound, timestamp), (ReadBound::BeforeTimestamp(end), Some(ts)) if ts >= end);
    if !before_start && !after_end {
        out.push(offset as u64, payload, timestamp);
    }
    matches!(bound, ReadBound::BeforeOffset(end) if offset + 1 >= end)
}

impl KafkaPartitionReader {
    /// Turns "the end" into the offset it was when the first fetch answered: librdkafka keeps the
    /// high watermark each fetch answer carries. A ListOffsets request (`fetch_watermarks`)
    /// would be the usual way, but some brokers answer it with a stale offset (tansu: the start
    /// of the last batch), and rdkafka does not wrap librdkafka's cached lookup, hence the call.
    fn fix_end(&mut self) {
        if let Some((_, high)) = self.cached_watermarks() {
            self.bound = ReadBound::BeforeOffset(high);
        }
    }

    /// Why the partition no longer holds its explicit start offset ([`missing_start`]), judged
    /// once at the first message and once at the first end.
    fn start_missing(&self, first: Option<i64>) -> Option<String> {
        let (start, met) = match (first, self.unchecked_start.take()) {
            (Some(first), Some(start)) => (start, Met::First(first)),
            (Some(_), None) => return None,
            (None, Some(start)) => (start, Met::EndFirst),
            (None, None) => (self.unreached_start.get()?, Met::End),
        };
        if first.is_none() {
            self.unreached_start.set(None);
        }
        missing_start(start, met, self.cached_watermarks())
    }

    /// The partition's low and high watermarks as the last fetch answer gave them (None before
    /// the first answer).
    fn cached_watermarks(&self) -> Option<(i64, i64)> {
        let topic = std::ffi::CString::new(self.topic.as_str()).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer is valid while `self.consumer` lives; librdkafka only reads
        // the NUL-terminated topic and writes the two offsets, without making a request.
        let code = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                self.partition,
                &mut low,
                &mut high,
            )
        };
        let answered = code == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
        (answered && low >= 0 && high >= 0).then_some((low, high))
    }
}

impl PartitionReader for KafkaPartitionReader {
    fn source_name(&self) -> &str {
        &self.topic
    }

    fn partition(&self) -> u32 {
        self.partition as u32
    }

    fn format(&self) -> (Format, DecodeContext) {
        self.format
    }

    fn read(&mut self, max: usize, out: &mut RecordBatch) -> Result<ReadStatus, String> {
        // The consumer's own queue carries errors and statistics; librdkafka wants it served.
        if let Some(Err(error)) = self.consumer.poll(Duration::ZERO) {
            warn!(topic = %self.topic, partition = self.partition, %error, "kafka consumer error");
        }
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.bound == ReadBound::EndOfPartition {
            // Known once the first fetch has answered, before its messages are read.
            self.fix_end();
        }
        if self.from_end && self.read_to.is_none() {
            // Started at the end, which the first fetch answer tells: what is measured past it
            // later was produced since, and is not read yet.
            self.read_to = self.cached_watermarks().map(|(_, high)| high);
        }
        let mut taken = 0;
        while !self.done && taken < max {
            match self.queue.poll(Duration::ZERO) {
                None if self.at_end
                    && self
                        .liveness
                        .as_ref()
                        .is_none_or(|liveness| liveness.caught_up(&self.lag_key, self.read_to)) =>
                {
                    return Ok(ReadStatus::CaughtUp)
                }
                None => return Ok(ReadStatus::Behind),
                Some(Ok(message)) => {
                    if let Some(error) = self.start_missing(Some(message.offset())) {
                        self.failed = Some(error.clone());
                        return Err(error);
                    }
                    self.at_end = false;
                    self.read_to = Some(message.offset() + 1);
                    let timestamp = message
                        .timestamp()
                        .to_millis()
                        .and_then(|ms| u64::try_from(ms).ok());
                    let payload = message.payload().unwrap_or_default();
                    self.done = take(
                        (self.skip_before, self.bound),
                        message.offset(),
                        timestamp,
                        payload,
                        out,
                    );
                    taken += 1;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    if let Some(error) = self.start_missing(None) {
                        self.failed = Some(error.clone());
                        return Err(error);
                    }
                    // Read to the broker's end of the partition, until the next message.
                    self.at_end = true;
                    if let Some((_, high)) = self.cached_watermarks() {
                        self.read_to = self.read_to.max(Some(high));
                    }
                    self.done = self.bound != ReadBound::Unbounded
                }
                Some(Err(KafkaError::MessageConsumption(
                    code @ (RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset),
                ))) => {
                    // Retention removed offsets not read yet (auto.offset.reset=error): never a
                    // silent jump; the source reports it and the partition waits.
                    let error = format!(
                        "offset out of range ({code}): retention removed messages not read yet; \
                         restart from a position that exists (e.g. --from earliest)"
                    );
                    self.failed = Some(error.clone());
                    return Err(error);
                }
                Some(Err(error)) => {
                    // Fetch errors are retried by librdkafka; the partition stays open.
                    warn!(topic = %self.topic, partition = self.partition, %error, "kafka fetch error");
                }
            }
        }
        Ok(if self.done {
            ReadStatus::Done
        } else {
            ReadStatus::More
        })
    }

    fn start_offset(&self) -> Option<u64> {
        match self.skip_before {
            SkipBefore::Offset(offset) => u64::try_from(offset).ok(),
            // Resuming at an offset would drop the skip by time: the start position must apply.
            SkipBefore::Time(_) => None,
            // The end as the first fetch answer gave it: the cached one moves on with later
            // answers, past messages not read yet.
            SkipBefore::Nothing if self.from_end => {
                self.read_to.and_then(|o| u64::try_from(o).ok())
            }
            SkipBefore::Nothing => {
                let (low, _) = self.cached_watermarks()?;
                u64::try_from(low).ok()
            }
        }
    }

    fn attach(&mut self, activator: SyncActivator) {
        self.queue.set_nonempty_callback(move || {
            // The source is gone only when the dataflow is; nothing to wake then.
            let _ = activator.activate();
        });
    }

    fn wall_clock(&self) -> Option<Millis> {
        // Bounded reads never go idle, so their results do not depend on timing.
        (self.bound == ReadBound::Unbounded).then(wall_clock_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::Consumer;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{Offset, TopicPartitionList};

    use super::*;
    use crate::kafka_progress::PartitionLag;
    use crowdpulse_dataflow::source::MAX_RECORD_BYTES;

    const TOPIC: &str = "chat";

    /// A mock broker holding messages 0..10 in partition 0 with timestamps 1000, 1100, ...
    fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(TOPIC, 2, 1).unwrap();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        for i in 0..10i64 {
            let payload = format!("m{i}");
            let record = BaseRecord::<(), _>::to(TOPIC)
                .partition(0)
                .payload(&payload)
                .timestamp(1_000 + 100 * i);
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        cluster
    }

    /// Reads until the reader fails (never caught up meanwhile); returns the error and what it
    /// read.
    fn read_to_an_error(reader: &mut KafkaPartitionReader) -> (String, RecordBatch) {
        let mut batch = RecordBatch::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match reader.read(10, &mut batch) {
                Err(error) => return (error, batch),
                Ok(status) => assert_ne!(status, ReadStatus::CaughtUp, "caught up, no error"),
            }
            assert!(Instant::now() < deadline, "no error");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn reader(
        cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        skip_before: SkipBefore,
        bound: ReadBound,
    ) -> KafkaPartitionReader {
        reader_from(cluster, Offset::Beginning, skip_before, bound)
    }

    fn reader_from(
        cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        start: Offset,
        skip_before: SkipBefore,
        bound: ReadBound,
    ) -> KafkaPartitionReader {
        let consumer: SourceConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "crowdpulse-test")
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            // Small fetches and no prefetching ahead of the reader: reading a partition to its
            // end takes many fetches.
            .set("max.partition.fetch.bytes", "1000")
            .set("queued.min.messages", "1")
            // As the source's consumers (kafka_source.rs).
            .set("auto.offset.reset", "error")
            .create_with_context(SourceContext)
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(TOPIC, 0, start).unwrap();
        consumer.assign(&assignment).unwrap();
        let consumer = Arc::new(consumer);
        KafkaPartitionReader::new(
            &consumer,
            TOPIC,
            0,
            (Format::Json, DecodeContext::default()),
            skip_before,
            (bound, false, None),
        )
        .unwrap()
    }

    /// Reads until Done, or for unbounded reads until `wanted` records came and it is idle.
    fn drain(reader: &mut KafkaPartitionReader, wanted: usize) -> (Vec<(u64, String)>, ReadStatus) {
        let mut batch = RecordBatch::default();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            batch.clear();
            let status = reader.read(3, &mut batch).unwrap();
            got.extend(
                batch
                    .iter()
                    .map(|r| (r.offset, String::from_utf8_lossy(r.payload).into_owned())),
            );
            if status == ReadStatus::Done
                || (reader.wall_clock().is_some()
                    && status == ReadStatus::CaughtUp
                    && got.len() >= wanted)
            {
                return (got, status);
            }
            assert!(
                Instant::now() < deadline,
                "read {got:?}, last status {status:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Notes the name of the thread it is dropped on.
    struct DropProbe(Arc<std::sync::Mutex<Option<Option<String>>>>);

    impl Drop for DropProbe {
        fn drop(&mut self) {
            let thread = std::thread::current().name().map(str::to_owned);
            *self.0.lock().unwrap() = Some(thread);
        }
    }

    /// A consumer shared by readers is closed when the last of them goes, on a thread of its own
    /// (rdkafka's close of a group consumer waits in 100 ms polls).
    #[test]
    fn the_last_reader_of_a_consumer_closes_it_on_a_thread_of_its_own() {
        let dropped_on = Arc::new(std::sync::Mutex::new(None));
        let consumer = Arc::new(DropProbe(Arc::clone(&dropped_on)));
        let first = SharedConsumer(Some(Arc::clone(&consumer)));
        let last = SharedConsumer(Some(consumer));
        drop(first);
        assert_eq!(
            *dropped_on.lock().unwrap(),
            None,
            "closed while still shared"
        );
        drop(last);
        let deadline = Instant::now() + Duration::from_secs(20);
        let thread = loop {
            if let Some(thread) = dropped_on.lock().unwrap().clone() {
                break thread;
            }
            assert!(Instant::now() < deadline, "never closed");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(thread.as_deref(), Some("kafka-close"));
    }

    /// A record beyond the size limit is cut and marked, as a file's line is: a dead letter,
    /// not a record held whole (a producer may raise Kafka's own limit far beyond ours).
    #[test]
    fn an_oversized_record_is_cut_and_marked() {
        let mut batch = RecordBatch::default();
        let payload = vec![b' '; MAX_RECORD_BYTES + 10];
        let bounds = (SkipBefore::Nothing, ReadBound::Unbounded);
        take(bounds, 7, Some(1_000), &payload, &mut batch);
        take(bounds, 8, Some(1_000), b"{}", &mut batch);
        let records: Vec<_> = batch.iter().collect();
        assert_eq!(records[0].oversized, Some(MAX_RECORD_BYTES + 10));
        assert_eq!(records[0].payload.len(), MAX_RECORD_BYTES);
        assert_eq!(
            (records[1].oversized, records[1].payload),
            (None, &b"{}"[..])
        );
    }

    #[test]
    fn end_of_partition_reads_everything_present_then_finishes() {
        let cluster = cluster();
        let (got, status) = drain(
            &mut reader(&cluster, SkipBefore::Nothing, ReadBound::EndOfPartition),
            10,
        );
        assert_eq!(status, ReadStatus::Done);
        let expected: Vec<_> = (0..10u64).map(|i| (i, format!("m{i}"))).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn end_of_partition_is_the_end_present_when_reading_began() {
        let cluster = cluster();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        let produce = |offsets: std::ops::Range<i64>| {
            for i in offsets {
                let payload = format!("m{i}");
                let record = BaseRecord::<(), _>::to(TOPIC)
                    .partition(0)
                    .payload(&payload);
                producer.send(record).map_err(|(e, _)| e).unwrap();
            }
            producer.flush(Duration::from_secs(10)).unwrap();
        };
        produce(10..300);
        let mut reader = reader(&cluster, SkipBefore::Nothing, ReadBound::EndOfPartition);
        let mut batch = RecordBatch::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while batch.is_empty() {
            reader.read(3, &mut batch).unwrap();
            assert!(Instant::now() < deadline, "nothing read");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Produced while the reader is still far from the end (small fetches): not present
        // when reading began, so not read.
        produce(300..400);
        let (got, status) = drain(&mut reader, 0);
        assert_eq!(status, ReadStatus::Done);
        assert_eq!(batch.len() + got.len(), 300);
        assert_eq!(got.last().map(|r| r.0), Some(299));
    }

    #[test]
    fn bounds_by_offset_and_time_and_the_start_time_skip() {
        let cluster = cluster();
        let (got, status) = drain(
            &mut reader(&cluster, SkipBefore::Nothing, ReadBound::BeforeOffset(4)),
            4,
        );
        assert_eq!(status, ReadStatus::Done);
        assert_eq!(
            got.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );

        // Timestamps 1000 + 100 i: from 1250 until 1600 keeps offsets 3, 4, 5.
        let (got, status) = drain(
            &mut reader(
                &cluster,
                SkipBefore::Time(1_250),
                ReadBound::BeforeTimestamp(1_600),
            ),
            3,
        );
        assert_eq!(status, ReadStatus::Done);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3, 4, 5]);

        // An explicit start offset, enforced by the reader.
        let (got, status) = drain(
            &mut reader(&cluster, SkipBefore::Offset(7), ReadBound::EndOfPartition),
            3,
        );
        assert_eq!(status, ReadStatus::Done);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![7, 8, 9]);
    }

    #[test]
    fn an_offset_retention_removed_is_an_error_not_a_silent_jump() {
        let cluster = cluster();
        let mut reader = reader_from(
            &cluster,
            Offset::Offset(1_000),
            SkipBefore::Nothing,
            ReadBound::Unbounded,
        );
        let (error, batch) = read_to_an_error(&mut reader);
        assert!(error.contains("offset out of range"), "{error}");
        assert!(batch.is_empty());
    }

    /// A resumed partition's start offset that the partition no longer holds is an error, not
    /// a silent skip of everything before it (it used to read the 10 messages, skip them all and
    /// wait for offset 500).
    #[test]
    fn a_start_offset_the_partition_no_longer_holds_is_an_error() {
        let cluster = cluster();
        let mut gone = reader(&cluster, SkipBefore::Offset(500), ReadBound::Unbounded);
        let (error, mut batch) = read_to_an_error(&mut gone);
        assert!(
            error
                .contains("offset out of range: the partition ends at 10, before the position 500"),
            "{error}"
        );
        assert!(batch.is_empty());
        assert_eq!(
            gone.read(10, &mut batch),
            Err(error),
            "the partition stays failed"
        );
        // A position it holds reads on from there.
        let mut held = reader(&cluster, SkipBefore::Offset(7), ReadBound::EndOfPartition);
        let mut batch = RecordBatch::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while held.read(10, &mut batch).unwrap() != ReadStatus::Done {
            assert!(Instant::now() < deadline, "not done");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(batch.len(), 3);
    }

    #[test]
    fn missing_start_offsets_are_judged_by_the_first_message_and_the_first_end() {
        use Met::{End, EndFirst, First};
        // Retention moved the log's start past the position.
        let gone = missing_start(100, First(150), Some((150, 200))).unwrap();
        assert!(
            gone.contains("begins at 150, after the position 100"),
            "{gone}"
        );
        assert!(missing_start(100, EndFirst, Some((150, 150))).is_some());
        assert!(missing_start(100, First(150), None).is_some());
        // The partition ends before the position, seen at its end.
        let ended = missing_start(100, End, Some((0, 10))).unwrap();
        assert!(
            ended.contains("ends at 10, before the position 100"),
            "{ended}"
        );
        assert!(missing_start(100, EndFirst, Some((0, 10))).is_some());
        for (met, watermarks) in [
            // Within the partition.
            (First(40), Some((0, 200))),
            // At its end: nothing new yet.
            (EndFirst, Some((100, 100))),
            (End, Some((0, 100))),
            // A first message after the position in a log that begins before it: markers or
            // compacted offsets there, not a loss.
            (First(101), Some((100, 200))),
            // A first message before the position, whatever a later fetch moved the cached low
            // watermark to: what follows it comes in order.
            (First(40), Some((150, 200))),
            // A high watermark seen below the position before the end (a leader's change) is
            // not judged.
            (First(3), Some((0, 10))),
            (First(100), None),
            (End, None),
        ] {
            assert_eq!(
                missing_start(100, met, watermarks),
                None,
                "{met:?} {watermarks:?}"
            );
        }
    }

    #[test]
    fn a_reader_knows_where_it_began_before_reading_anything() {
        let cluster = cluster();
        let explicit = reader(&cluster, SkipBefore::Offset(7), ReadBound::Unbounded);
        assert_eq!(explicit.start_offset(), Some(7));
        let mut latest = reader_from(
            &cluster,
            Offset::End,
            SkipBefore::Nothing,
            ReadBound::Unbounded,
        );
        latest.from_end = true;
        let mut batch = RecordBatch::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while latest.start_offset().is_none() {
            latest.read(10, &mut batch).unwrap();
            assert!(Instant::now() < deadline, "no fetch answer");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(batch.is_empty());
        assert_eq!(latest.start_offset(), Some(10));
    }

    #[test]
    fn unbounded_reads_go_idle_with_a_wall_clock() {
        let cluster = cluster();
        let mut reader = reader(&cluster, SkipBefore::Nothing, ReadBound::Unbounded);
        assert!(reader.wall_clock().is_some());
        let (got, status) = drain(&mut reader, 10);
        assert_eq!((got.len(), status), (10, ReadStatus::CaughtUp));
    }

    /// A consumer's end of partition outlives a broker outage: when the lag lookups answer again
    /// first and measure a higher end (messages produced meanwhile), the partition is behind,
    /// not caught up (it went idle, and those messages came late).
    #[test]
    fn a_measured_end_past_what_was_read_is_not_caught_up() {
        let cluster = cluster();
        let mut reader = reader(&cluster, SkipBefore::Nothing, ReadBound::Unbounded);
        let (got, _) = drain(&mut reader, 10);
        assert_eq!(got.len(), 10);
        let lag = Arc::new(KafkaLag::default());
        reader.liveness = Some(Liveness {
            lag: Arc::clone(&lag),
            silence: 60_000,
        });
        let measured = |high_watermark| {
            let key = (TOPIC.to_owned(), 0);
            let lag = PartitionLag {
                high_watermark,
                lag: high_watermark - 10,
            };
            BTreeMap::from([(key, lag)])
        };
        let mut batch = RecordBatch::default();
        lag.record_round(measured(12), true);
        assert_eq!(reader.read(10, &mut batch), Ok(ReadStatus::Behind));
        lag.record_round(measured(10), true);
        assert_eq!(reader.read(10, &mut batch), Ok(ReadStatus::CaughtUp));
        assert!(batch.is_empty());

        // The same for a partition started at its end that has read nothing.
        let mut latest = reader_from(
            &cluster,
            Offset::End,
            SkipBefore::Nothing,
            ReadBound::Unbounded,
        );
        (latest.from_end, latest.at_end) = (true, true);
        let deadline = Instant::now() + Duration::from_secs(20);
        while latest.start_offset().is_none() {
            latest.read(10, &mut batch).unwrap();
            assert!(Instant::now() < deadline, "no fetch answer");
            std::thread::sleep(Duration::from_millis(10));
        }
        latest.liveness = Some(Liveness {
            lag: Arc::clone(&lag),
            silence: 60_000,
        });
        lag.record_round(measured(12), true);
        assert_eq!(latest.read(10, &mut batch), Ok(ReadStatus::Behind));
        lag.record_round(measured(10), true);
        assert_eq!(latest.read(10, &mut batch), Ok(ReadStatus::CaughtUp));
    }
}
