//! The partitioned source operator shared by every input (files, Kafka, in-memory): decoding,
//! per-partition watermarks and lateness, event-time timestamps and the dead-letter stream.
//! I/O stays behind [`PartitionReader`]; this module only decides what each record means.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use timely::dataflow::operators::core::OkErr;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::SyncActivator;

use tracing::error;

use crate::analytics::{Delta, Origin, PaneAggregator};
use crate::checkpoint::{self, CheckpointPart, Checkpointing, PartitionState, Role, SourceState};
use crate::clock::{Admission, PartitionClock};
use crate::codec::{DecodeContext, Format};
use crate::error::{excerpt, Error};
use crate::event::{Event, EventKind, Millis};
use crate::kinds::config::KindSpec;
use crate::kinds::panes::KindPanes;
use crate::kinds::record::{decode as decode_kind, KindEvent};
use crate::pacing::{steered_source, Reply, Steering};
use crate::pending::take_below;
use crate::plan::Plan;
use crate::progress::SourcePosition;
use crate::recent_reactions::RecentReactions;
use crate::rows::{DeadLetter, DeadLetterReason, Row};
use crate::seen_ids::SeenIds;
use crate::sentiment::Analyzer;

/// Records larger than this are cut and dead-lettered instead of being held whole, whichever
/// source read them.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// One record as read from a partition, borrowed from its [`RecordBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Offset in the partition (zero-based line number for files).
    pub offset: u64,
    /// The bytes (possibly cut short, see `oversized`).
    pub payload: &'a [u8],
    /// Broker timestamp, used when the record has no `ts`.
    pub timestamp: Option<Millis>,
    /// Set to the full size when the record exceeded the reader's limit and was cut.
    pub oversized: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    offset: u64,
    end: usize,
    timestamp: Option<Millis>,
    oversized: Option<usize>,
}

/// The records of one read, stored back to back in one reused buffer, so reading allocates
/// nothing per record.
#[derive(Debug, Default)]
pub struct RecordBatch {
    data: Vec<u8>,
    records: Vec<RecordMeta>,
}

impl RecordBatch {
    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> Option<u64> {
        self.records.last().map(|r| r.offset)
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends a record: whole, or beyond [`MAX_RECORD_BYTES`] its first bytes, marked
    /// oversized (a dead letter).
    pub fn push(&mut self, offset: u64, payload: &[u8], timestamp: Option<Millis>) {
        let oversized = (payload.len() > MAX_RECORD_BYTES).then_some(payload.len());
        self.data
            .extend_from_slice(&payload[..payload.len().min(MAX_RECORD_BYTES)]);
        self.finish_record(offset, timestamp, oversized);
    }

    /// The buffer a reader appends the bytes of its next record to, before [`Self::finish_record`].
    pub fn pending_bytes(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Length of the record being written through [`Self::pending_bytes`] so far.
    pub fn pending_len(&self) -> usize {
        self.data.len() - self.records.last().map_or(0, |r| r.end)
    }

    /// Drops the bytes written since the last finished record.
    pub fn discard_pending(&mut self) {
        let end = self.records.last().map_or(0, |r| r.end);
        self.data.truncate(end);
    }

    /// Ends the record whose bytes were appended through [`Self::pending_bytes`].
    pub fn finish_record(
        &mut self,
        offset: u64,
        timestamp: Option<Millis>,
        oversized: Option<usize>,
    ) {
        self.records.push(RecordMeta {
            offset,
            end: self.data.len(),
            timestamp,
            oversized,
        });
    }

    /// The records in order.
    pub fn iter(&self) -> impl Iterator<Item = RawRecord<'_>> {
        let mut start = 0;
        self.records.iter().map(move |meta| {
            let payload = &self.data[start..meta.end];
            start = meta.end;
            RawRecord {
                offset: meta.offset,
                payload,
                timestamp: meta.timestamp,
                oversized: meta.oversized,
            }
        })
    }
}

/// Whether a reader has more to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// More records may be available now.
    More,
    /// Nothing to give now, and not known to be at the end (live input): a fetch is in flight,
    /// the broker is slow or unreachable. Such a partition never goes idle: its records may be
    /// on their way. The reader wakes the source through the activator it was given by
    /// [`PartitionReader::attach`] when records arrive.
    Behind,
    /// Read to the end the input reports (the broker's end of the partition, an empty in-process
    /// queue); wakes the source like [`ReadStatus::Behind`]. Only a partition that stays caught
    /// up for its idle timeout goes idle.
    CaughtUp,
    /// The partition is exhausted (bounded input).
    Done,
}

/// A source of records for one partition, read in order. Implementations do the I/O.
pub trait PartitionReader {
    /// Topic or file name, for dead letters.
    fn source_name(&self) -> &str;
    /// Partition number.
    fn partition(&self) -> u32;
    /// Record encoding and decode defaults of this partition.
    fn format(&self) -> (Format, DecodeContext);
    /// Appends up to `max` records to `out`.
    fn read(
        &mut self,
        max: usize,
        out: &mut RecordBatch,
    ) -> std::result::Result<ReadStatus, String>;
    /// Receives the source's activator; a live reader keeps it to wake the source when records
    /// arrive after it answered [`ReadStatus::Behind`] or [`ReadStatus::CaughtUp`].
    fn attach(&mut self, _activator: SyncActivator) {}
    /// Wall-clock time, epoch ms, for live readers. Only then can a partition go idle (caught up
    /// for `idle_timeout`, it stops holding the watermark back) and, when every partition is idle,
    /// wall-clock time advance the watermark (DESIGN §3). Bounded readers answer None, so their
    /// results never depend on timing.
    fn wall_clock(&self) -> Option<Millis> {
        None
    }
    /// Where reading began, once known, for a partition that has read nothing yet: a checkpoint
    /// records it, so that a restart resumes there rather than at the earliest offset.
    fn start_offset(&self) -> Option<u64> {
        None
    }
    /// How long the partition must stay caught up to go idle, given the configured
    /// `idle_timeout`. An in-process queue answers zero: when it is empty nothing can be in
    /// flight.
    fn idle_timeout(&self, configured: Millis) -> Millis {
        configured
    }
}

/// Counters of what the sources saw, and gauges of the state the analytics hold, shared by all
/// workers of a process.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Records read.
    pub records: AtomicU64,
    /// Records that entered the analytics, by kind ([`EventKind::index`]).
    pub events_by_kind: [AtomicU64; EventKind::ALL.len()],
    /// Records of configured kinds that entered the analytics.
    pub kind_records: AtomicU64,
    /// Dead letters by reason.
    pub decode_errors: AtomicU64,
    /// Records that decoded but did not validate.
    pub invalid: AtomicU64,
    /// Records beyond the allowed lateness.
    pub late: AtomicU64,
    /// Records too far ahead of their reference time.
    pub future: AtomicU64,
    /// Records repeating an admitted `event_id` within the lateness horizon.
    pub duplicates: AtomicU64,
    /// Reads that failed (e.g. an offset retention has removed): a bounded run that saw one is
    /// incomplete; a live one waits for the partition.
    pub read_errors: AtomicU64,
    /// Where each partition is, by (source name, partition); updated once per read.
    pub partitions: Mutex<BTreeMap<(String, u32), PartitionProgress>>,
    /// Streams the workers' analytics visit at each advance (see
    /// [`crate::analytics::Engine`]), summed over the workers.
    pub streams_active: AtomicU64,
    /// Streams the analytics keep quiet (their totals only), summed over the workers.
    pub streams_quiet: AtomicU64,
}

/// How far one partition has been read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The offset after the last record read; before the first, where reading began if the
    /// reader knows ([`PartitionReader::start_offset`]), else None.
    pub next_offset: Option<u64>,
    /// The partition's event-time watermark (None before the first valid event).
    pub watermark: Option<Millis>,
    /// Whether the partition is exhausted (bounded input).
    pub done: bool,
}

impl SourceCounters {
    /// Records that entered the analytics.
    pub fn events(&self) -> u64 {
        self.events_by_kind
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// All dead-lettered records.
    pub fn dead_lettered(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
            + self.invalid.load(Ordering::Relaxed)
            + self.late.load(Ordering::Relaxed)
            + self.future.load(Ordering::Relaxed)
            + self.duplicates.load(Ordering::Relaxed)
    }

    /// A snapshot of every partition's progress.
    pub fn partition_progress(&self) -> BTreeMap<(String, u32), PartitionProgress> {
        self.partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn report(&self, key: &(String, u32), progress: PartitionProgress) {
        let mut partitions = self
            .partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Called once per partition per activation: the key is cloned only the first time.
        match partitions.get_mut(key) {
            Some(known) => *known = progress,
            None => {
                partitions.insert(key.clone(), progress);
            }
        }
    }

    fn count(&self, reason: DeadLetterReason) {
        let counter = match reason {
            DeadLetterReason::Decode => &self.decode_errors,
            DeadLetterReason::Invalid => &self.invalid,
            DeadLetterReason::Late => &self.late,
            DeadLetterReason::Future => &self.future,
            DeadLetterReason::Duplicate => &self.duplicates,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many records one activation reads from one partition: small enough that progress and
/// other operators keep running, large enough to amortize scheduling.
pub const READ_BATCH: usize = 8192;

struct Partition {
    reader: Box<dyn PartitionReader>,
    /// (source name, partition), for dead letters and progress reports.
    key: (String, u32),
    /// The source name shared by the partition's positions.
    source: Arc<str>,
    clock: PartitionClock,
    /// The event ids admitted within the lateness horizon.
    seen: SeenIds,
    done: bool,
    /// Wall-clock time since when the partition has been caught up with nothing read (live
    /// readers only).
    caught_up_since: Option<Millis>,
    /// How long it must stay caught up to go idle.
    idle_timeout: Millis,
    /// The read error the partition is stuck on (logged once).
    failing: Option<String>,
    /// The offset after the last record read.
    next_offset: Option<u64>,
}

impl Partition {
    /// The offset it reads next: after its last record or, before the first, where it began
    /// (when the reader knows).
    fn next_offset(&self) -> Option<u64> {
        self.next_offset.or_else(|| self.reader.start_offset())
    }

    /// Whether the partition has been caught up, reading nothing, for its idle timeout of
    /// wall-clock time (DESIGN §3). Behind or unreachable is never idle.
    fn is_idle(&self) -> bool {
        match (self.reader.wall_clock(), self.caught_up_since) {
            (Some(now), Some(since)) => now.saturating_sub(since) >= self.idle_timeout,
            _ => false,
        }
    }

    /// Notes what a read found.
    fn observe(&mut self, read_records: bool, status: ReadStatus) {
        self.caught_up_since = match status {
            ReadStatus::CaughtUp if !read_records => {
                self.caught_up_since.or_else(|| self.reader.wall_clock())
            }
            ReadStatus::CaughtUp => self.reader.wall_clock(),
            ReadStatus::More | ReadStatus::Behind | ReadStatus::Done => None,
        };
    }
}

fn ceil_to_tick(ts: Millis, tick: u64) -> Millis {
    ts.div_ceil(tick).saturating_mul(tick)
}

/// The dead-letter reason and message for a record that failed to decode or validate.
pub fn rejection(error: Error) -> (DeadLetterReason, String) {
    match error {
        Error::Decode(message) => (DeadLetterReason::Decode, message),
        Error::Invalid(message) => (DeadLetterReason::Invalid, message),
        other => (DeadLetterReason::Invalid, other.to_string()),
    }
}

/// The dead-letter message of a late record.
pub fn late_message(ts: Millis, watermark: Millis) -> String {
    format!("ts {ts} is older than watermark {watermark} minus the allowed lateness")
}

/// The dead-letter message of a record repeating an admitted event id.
pub fn duplicate_message(event_id: &str, first_offset: u64) -> String {
    format!(
        "event_id {} repeats the event at offset {first_offset}",
        excerpt(event_id)
    )
}

/// How a partition judges a record: its clock and ids, the source's current time, the bounds.
struct Judge<'a> {
    clock: &'a mut PartitionClock,
    seen: &'a mut SeenIds,
    capability: Millis,
    max_future: Millis,
}

/// Judges one raw record of a partition. A record more than `max_future` ahead of its reference
/// time (the broker timestamp, or the arrival time of in-process input; files have none) is
/// refused before it can move the watermark, so one absurd timestamp cannot make every later
/// honest record late; the reference travels with the record, so a replay decides the same.
/// `capability` is the source's current time: a record
/// that is more than the allowed lateness behind it is late even when its own partition's clock
/// would accept it, because its windows may already be final. That only happens after an idle
/// partition stopped holding the watermark back (live input); with bounded input the capability
/// never passes a partition's watermark, so the partition clock alone decides.
fn admit(
    record: &RawRecord<'_>,
    (format, context): (Format, DecodeContext),
    kinds: &[KindSpec],
    judge: Judge<'_>,
) -> Result<Admitted, (DeadLetterReason, String)> {
    if let Some(size) = record.oversized {
        return Err((
            DeadLetterReason::Decode,
            format!("record of {size} bytes exceeds the size limit"),
        ));
    }
    let mut context = context;
    context.fallback_ts = context.fallback_ts.or(record.timestamp);
    let admitted = match context.kind {
        Some(kind) => {
            let spec = kinds.get(kind).ok_or_else(|| {
                (
                    DeadLetterReason::Decode,
                    format!("no kind {kind} is configured"),
                )
            })?;
            let event = decode_kind(spec, record.payload).map_err(rejection)?;
            let ts = event.ts.or(context.fallback_ts).ok_or_else(|| {
                (
                    DeadLetterReason::Invalid,
                    format!("no event time: {} is absent", spec.time),
                )
            })?;
            Admitted::Kind { kind, ts, event }
        }
        None => Admitted::Event(format.decode(record.payload, &context).map_err(rejection)?),
    };
    let ts = admitted.ts();
    if let Some(reference) = record.timestamp {
        if ts > reference.saturating_add(judge.max_future) {
            return Err((
                DeadLetterReason::Future,
                format!(
                    "ts {ts} is more than {} ms ahead of its reference time {reference}",
                    judge.max_future
                ),
            ));
        }
    }
    // A duplicate moves no watermark: it is checked before the clock sees it.
    if let Admitted::Event(event) = &admitted {
        if let Some(first) = judge.seen.earlier(event, judge.clock.oldest_admissible()) {
            let id = event.event_id.as_deref().unwrap_or_default();
            return Err((DeadLetterReason::Duplicate, duplicate_message(id, first)));
        }
    }
    // The partition's own clock judges first, so bounded runs name the partition's watermark.
    match judge.clock.admit(ts, judge.capability) {
        Admission::Late { watermark } => Err((DeadLetterReason::Late, late_message(ts, watermark))),
        Admission::Accepted => {
            if let Admitted::Event(event) = &admitted {
                judge.seen.remember(event, record.offset);
            }
            Ok(admitted)
        }
    }
}

/// A record admitted: an event of the built-in model, or a record of a configured kind.
enum Admitted {
    Event(Event),
    Kind {
        kind: usize,
        ts: Millis,
        event: KindEvent,
    },
}

impl Admitted {
    fn ts(&self) -> Millis {
        match self {
            Admitted::Event(event) => event.ts,
            Admitted::Kind { ts, .. } => *ts,
        }
    }
}

/// The source's outputs.
pub struct SourceStreams<'scope> {
    /// Accepted events, pre-aggregated per (stream, pane) and kinds' records per (kind,
    /// combination, pane) where they are read.
    pub deltas: Stream<'scope, u64, Vec<Delta>>,
    /// Rows of facts, emitted as records are read: dead letters (records that did not enter the
    /// analytics) and, with the chat history on, accepted chat messages.
    pub facts: Stream<'scope, u64, Vec<Row>>,
    /// Each partition's position after every read that moved it (see [`SourcePosition`]).
    pub positions: Stream<'scope, u64, Vec<SourcePosition>>,
    /// This worker's source state at each checkpoint time.
    pub parts: Stream<'scope, u64, Vec<CheckpointPart>>,
    /// Replies to the sink stage's checkpoint proposals.
    pub replies: Stream<'scope, u64, Vec<Reply>>,
}

/// What the source operator emits before it is split into [`SourceStreams`].
type SourceItem = Result<Delta, Result<Row, Result<SourcePosition, Result<CheckpointPart, Reply>>>>;

/// Deltas read but held back until the source's capability passes their time, by time.
type Held = BTreeMap<Millis, Vec<Delta>>;

/// The source's state at checkpoint time `time`, once every delta before it has been emitted.
fn source_part(
    partitions: &[Partition],
    held: &Held,
    time: Millis,
    (worker, workers): (usize, usize),
) -> CheckpointPart {
    let mut positions = Vec::new();
    let mut states = Vec::with_capacity(partitions.len());
    for p in partitions {
        let next_offset = p.next_offset();
        if let Some(next_offset) = next_offset {
            positions.push(SourcePosition {
                source: Arc::clone(&p.source),
                partition: p.key.1,
                next_offset,
                watermark: p.clock.watermark(),
            });
        }
        states.push(PartitionState {
            source: p.key.0.clone(),
            partition: p.key.1,
            next_offset,
            max_seen: p.clock.max_seen(),
            event_ids: p.seen.entries(),
        });
    }
    let state = SourceState {
        partitions: states,
        pending: held
            .iter()
            .flat_map(|(time, deltas)| deltas.iter().map(|d| (*time, d.clone())))
            .collect(),
    };
    CheckpointPart {
        time,
        worker,
        workers,
        role: Role::Source,
        positions,
        state: checkpoint::encode(&state),
        finished: false,
    }
}

/// Builds the source: `readers` are this worker's partitions.
///
/// Invariant (what makes final results deterministic): a record's timely time is
/// `max(ceil_to_tick(ts), capability)` and the capability never passes the least watermark of the
/// worker's open partitions, so a record accepted for a window ending at `end` always carries a
/// time below `end + allowed_lateness`, before the window can be final.
///
/// Deltas are held until the capability passes their time (which is when the analytics could
/// first use them anyway), so that at a checkpoint time the source knows exactly which of what
/// it read is already downstream (see [`crate::checkpoint`]).
// The source's items are moved once into their output containers, never returned up a call
// chain: boxing the large variants would cost an allocation per record for nothing.
#[allow(clippy::result_large_err)]
pub fn partitioned_source<'scope>(
    scope: Scope<'scope, u64>,
    readers: Vec<Box<dyn PartitionReader>>,
    plan: &Plan,
    analyzer: Arc<Analyzer>,
    counters: Arc<SourceCounters>,
    steering: Option<Stream<'scope, u64, Vec<Steering>>>,
    checkpointing: Option<&Checkpointing>,
) -> SourceStreams<'scope> {
    let (worker, workers) = (scope.index(), scope.peers());
    let checkpoints = checkpointing.is_some();
    let restore = checkpointing.and_then(|c| c.restore.clone());
    let config = plan.config();
    let mut aggregator = PaneAggregator::new(plan.pane(), analyzer)
        .with_chat(config.chat_history, config.summary.every > 0);
    let kinds: Arc<[KindSpec]> = plan.kinds.clone();
    let mut kind_panes = KindPanes::new(Arc::clone(&kinds));
    let tick = config.tick.0.max(1);
    let (out_of_orderness, lateness) = (config.max_out_of_orderness.0, config.allowed_lateness.0);
    let max_future = config.max_future.0;
    let limits = config.limits;
    let reaction_rows = plan.reaction_rows();
    let mut partitions: Vec<Partition> = readers
        .into_iter()
        .map(|reader| {
            let key = (reader.source_name().to_owned(), reader.partition());
            let resumed = restore.as_ref().and_then(|r| r.partitions.get(&key));
            Partition {
                caught_up_since: None,
                failing: None,
                idle_timeout: reader.idle_timeout(config.idle_timeout.0),
                source: Arc::from(reader.source_name()),
                reader,
                clock: PartitionClock::new(out_of_orderness, lateness)
                    .restored(resumed.and_then(|r| r.max_seen)),
                seen: SeenIds::restored(
                    config.max_event_ids,
                    resumed.map(|r| r.event_ids.clone()).unwrap_or_default(),
                ),

                done: false,
                next_offset: resumed.and_then(|r| r.next_offset),
                key,
            }
        })
        .collect();
    let mut held: Held = BTreeMap::new();
    for (time, delta) in restore.iter().flat_map(|r| r.take_pending(worker, workers)) {
        held.entry(time).or_default().push(delta);
    }
    let start = restore.as_ref().map(|r| r.time);
    let records = steered_source::<SourceItem, _, _>(
        scope,
        "PartitionedSource",
        steering,
        move |capability, info| {
            for partition in &mut partitions {
                partition
                    .reader
                    .attach(scope.worker().sync_activator_for(info.address.to_vec()));
            }
            let activator = scope.activator_for(info.address);
            let mut capability = capability;
            if let Some(start) = start {
                capability.downgrade(&start);
            }
            let mut held_capability = Some(capability);
            let mut batch = RecordBatch::default();
            let mut facts: Vec<Row> = Vec::new();
            let mut reactions = RecentReactions::new(reaction_rows);
            let mut positions: Vec<SourcePosition> = Vec::new();
            move |output, gate| {
                let Some(capability) = held_capability.as_mut() else {
                    return;
                };
                let now = *capability.time();
                let replies = gate.replies(worker, now);
                if !replies.is_empty() {
                    let replies = replies.into_iter().map(|r| Err(Err(Err(Err(r)))));
                    output.session(&*capability).give_iterator(replies);
                }
                if gate.holds(now) {
                    // Waiting for a checkpoint decision, or for a sink to catch up: the steering
                    // input wakes the source when either comes.
                    return;
                }
                let mut more = false;
                for partition in partitions.iter_mut().filter(|p| !p.done) {
                    batch.clear();
                    let status = partition.reader.read(READ_BATCH, &mut batch);
                    let (format, mut context) = partition.reader.format();
                    context.limits = limits;
                    let decoding = (format, context);
                    let (source_name, index) = (&partition.key.0, partition.key.1);
                    for record in batch.iter() {
                        counters.records.fetch_add(1, Ordering::Relaxed);
                        let judge = Judge {
                            clock: &mut partition.clock,
                            seen: &mut partition.seen,
                            capability: now,
                            max_future,
                        };
                        match admit(&record, decoding, &kinds, judge) {
                            Ok(Admitted::Kind { kind, ts, event }) => {
                                counters.kind_records.fetch_add(1, Ordering::Relaxed);
                                let time = ceil_to_tick(ts, tick).max(now);
                                kind_panes.add(kind, ts, event, time);
                            }
                            Ok(Admitted::Event(event)) => {
                                counters.events_by_kind[event.kind().index()]
                                    .fetch_add(1, Ordering::Relaxed);
                                let time = ceil_to_tick(event.ts, tick).max(now);
                                reactions.note(&event);
                                let origin = Origin {
                                    source: &partition.source,
                                    partition: index,
                                    offset: record.offset,
                                };
                                facts.extend(
                                    aggregator
                                        .add(event, time, Some(origin))
                                        .map(Row::ChatMessage),
                                );
                            }
                            Err((reason, error)) => {
                                counters.count(reason);
                                let dead = DeadLetter::new(
                                    source_name,
                                    index,
                                    record.offset,
                                    reason,
                                    error,
                                    record.payload,
                                );
                                facts.push(Row::DeadLetter(dead));
                            }
                        }
                    }
                    if let Some(last) = batch.last_offset() {
                        partition
                            .seen
                            .forget_before(partition.clock.oldest_admissible());
                        partition.next_offset = Some(last + 1);
                        positions.push(SourcePosition {
                            source: Arc::clone(&partition.source),
                            partition: index,
                            next_offset: last + 1,
                            watermark: partition.clock.watermark(),
                        });
                    }
                    let read_records = !batch.is_empty();
                    match status {
                        Ok(status) => {
                            partition.failing = None;
                            more |= status == ReadStatus::More;
                            partition.done = status == ReadStatus::Done;
                            partition.observe(read_records, status);
                        }
                        Err(error) => {
                            // The partition keeps holding the watermark: its records are missing,
                            // so nothing after them may become final. A live run waits for it; a
                            // bounded run is stopped by the runtime, which sees the count.
                            counters.read_errors.fetch_add(1, Ordering::Relaxed);
                            if partition.failing.as_ref() != Some(&error) {
                                error!(source = %source_name, partition = index, %error, "partition unreadable; results wait for it");
                            }
                            partition.failing = Some(error);
                            partition.observe(false, ReadStatus::Behind);
                        }
                    }
                    let progress = PartitionProgress {
                        // Before its first record, where it began: a partition started at its
                        // end lags by nothing, not by everything the topic holds.
                        next_offset: partition.next_offset(),
                        watermark: partition.clock.watermark(),
                        done: partition.done,
                    };
                    counters.report(&partition.key, progress);
                }
                for (time, delta) in aggregator.drain() {
                    held.entry(time).or_default().push(Delta::Stream(delta));
                }
                for (time, delta) in kind_panes.drain() {
                    held.entry(time).or_default().push(Delta::Kind(delta));
                }
                facts.extend(reactions.drain());
                if !facts.is_empty() || !positions.is_empty() {
                    let facts = facts.drain(..).map(|fact| Err(Ok(fact)));
                    let moved = positions.drain(..).map(|position| Err(Err(Ok(position))));
                    output
                        .session(&*capability)
                        .give_iterator(facts.chain(moved));
                }
                // Emits held deltas, each at its own time.
                macro_rules! emit {
                    ($held:expr) => {
                        for (time, deltas) in $held {
                            output
                                .session(&capability.delayed(&time))
                                .give_iterator(deltas.into_iter().map(Ok));
                        }
                    };
                }
                let open = partitions.iter().filter(|p| !p.done);
                if open.clone().next().is_none() {
                    if checkpoints {
                        // Later checkpoints still need this worker's source state: its last one.
                        let mut part = source_part(&partitions, &held, now, (worker, workers));
                        part.finished = true;
                        output.session(&*capability).give(Err(Err(Err(Ok(part)))));
                    }
                    emit!(std::mem::take(&mut held));
                    held_capability = None;
                    return;
                }
                // The least watermark (rounded down to a tick) of the open partitions that are not
                // idle; a partition that has seen nothing yet and is not idle (behind, or caught up
                // for less than its idle timeout) holds the capability where it is. When
                // every partition is idle, wall-clock time minus the out-of-orderness bound stands in
                // for their watermark.
                let active_low = open
                    .clone()
                    .filter(|p| !p.is_idle())
                    .map(|p| p.clock.watermark().map_or(now, |w| w - w % tick))
                    .min();
                let low = active_low.unwrap_or_else(|| {
                    open.filter_map(|p| p.reader.wall_clock())
                        .map(|wall| wall.saturating_sub(out_of_orderness))
                        .map(|w| w - w % tick)
                        .min()
                        .unwrap_or(now)
                });
                if low > now {
                    if let Some(time) = gate.checkpoint_between(now, low) {
                        emit!(take_below(&mut held, Some(time)));
                        let part = source_part(&partitions, &held, time, (worker, workers));
                        output
                            .session(&capability.delayed(&time))
                            .give(Err(Err(Err(Ok(part)))));
                    }
                    emit!(take_below(&mut held, Some(low)));
                    capability.downgrade(&low);
                }
                if more {
                    activator.activate();
                } else {
                    // Live input with nothing to read: the readers wake the source when records
                    // arrive; the timer lets idleness and wall-clock time move the watermark.
                    activator.activate_after(Duration::from_millis(tick));
                }
            }
        },
    );
    type CheckpointItem = Result<CheckpointPart, Reply>;
    type Progress = Result<SourcePosition, CheckpointItem>;
    type Other = Result<Row, Progress>;
    let (deltas, other): (_, Stream<'scope, u64, Vec<Other>>) = records.ok_err(|item| item);
    let (facts, progress): (_, Stream<'scope, u64, Vec<Progress>>) = other.ok_err(|item| item);
    let (positions, checkpointing): (_, Stream<'scope, u64, Vec<CheckpointItem>>) =
        progress.ok_err(|item| item);
    let (parts, replies) = checkpointing.ok_err(|item| item);
    SourceStreams {
        deltas,
        facts,
        positions,
        parts,
        replies,
    }
}
