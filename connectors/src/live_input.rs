//! The in-process live input (`crowdpulse demo`): records pushed by the generator and by HTTP
//! ingest are queued per partition, split by stream with Kafka's key partitioner so one stream
//! stays ordered in one partition, and read by the dataflow's source like any other partition.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crowdpulse_dataflow::codec::{DecodeContext, Format};
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::source::{PartitionReader, ReadStatus, RecordBatch};
use timely::scheduling::SyncActivator;

use crate::partitioner::partition_for_key;

/// Source name of live records in dead letters.
pub const LIVE_SOURCE: &str = "live";

/// Wall-clock time in epoch milliseconds.
pub fn wall_clock_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// How much one partition's queue holds unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputCapacity {
    /// Records.
    pub records: usize,
    /// Bytes of those records: a count of records alone let a request's padded records queue
    /// gigabytes.
    pub bytes: usize,
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The partition's queue holds its limit of unread records or bytes; retry later.
    Full,
    /// The input was closed (shutting down).
    Closed,
}

#[derive(Debug, Default)]
struct Queue {
    records: VecDeque<(Vec<u8>, Millis)>,
    /// Their payloads' bytes.
    bytes: usize,
    next_offset: u64,
    activator: Option<SyncActivator>,
    closed: bool,
}

#[derive(Debug)]
struct Partition {
    queue: Mutex<Queue>,
}

impl Partition {
    /// The queue; a poisoned lock still holds consistent data (every critical section is a
    /// few infallible collection operations), so it is used as is.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The producer side, cloned freely.
#[derive(Debug, Clone)]
pub struct LiveInput {
    partitions: Arc<Vec<Partition>>,
    capacity: InputCapacity,
    /// Its source name in dead letters and positions.
    name: Arc<str>,
    /// The configured kind its records are (None: events).
    kind: Option<usize>,
}

impl LiveInput {
    /// An input of `partitions` partitions, each holding at most `capacity` unread.
    pub fn new(partitions: usize, capacity: InputCapacity) -> Self {
        let partitions = (0..partitions.max(1))
            .map(|_| Partition {
                queue: Mutex::new(Queue::default()),
            })
            .collect();
        Self {
            partitions: Arc::new(partitions),
            capacity: InputCapacity {
                records: capacity.records.max(1),
                bytes: capacity.bytes.max(1),
            },
            name: Arc::from(LIVE_SOURCE),
            kind: None,
        }
    }

    /// An input of records of the configured kind `kind` (its index in the plan), encoded in
    /// the kind's format, named `live-NAME`.
    pub fn for_kind(kind: usize, name: &str, partitions: usize, capacity: InputCapacity) -> Self {
        Self {
            name: Arc::from(format!("{LIVE_SOURCE}-{name}")),
            kind: Some(kind),
            ..Self::new(partitions, capacity)
        }
    }

    /// Number of partitions.
    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }

    /// Queues records, each with its stream key (which picks the partition), all with the
    /// arrival time `arrival`, which stands in for a missing `ts` as a Kafka message timestamp
    /// would. All or none are queued.
    pub fn push<'k>(
        &self,
        records: impl IntoIterator<Item = (&'k [u8], Vec<u8>)>,
        arrival: Millis,
    ) -> Result<(), PushError> {
        let mut by_partition: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.partitions.len()];
        for (key, payload) in records {
            by_partition[partition_for_key(key, self.partitions.len())].push(payload);
        }
        // Locks are taken in partition order, so concurrent pushes cannot deadlock.
        let mut locked: Vec<(MutexGuard<'_, Queue>, Vec<Vec<u8>>, usize)> = self
            .partitions
            .iter()
            .zip(by_partition)
            .filter(|(_, payloads)| !payloads.is_empty())
            .map(|(partition, payloads)| {
                let bytes = payloads.iter().map(Vec::len).sum();
                (partition.lock(), payloads, bytes)
            })
            .collect();
        for (queue, payloads, bytes) in &locked {
            if queue.closed {
                return Err(PushError::Closed);
            }
            // An empty queue takes a request of any size (the body limit bounds it): one larger
            // than the byte budget would otherwise be answered "busy, retry" for ever. (Records
            // are held to their count: the configuration holds it to the largest request.)
            let too_many = queue.records.len() + payloads.len() > self.capacity.records;
            let too_large = !queue.records.is_empty() && queue.bytes + bytes > self.capacity.bytes;
            if too_many || too_large {
                return Err(PushError::Full);
            }
        }
        for (queue, payloads, bytes) in &mut locked {
            let was_empty = queue.records.is_empty();
            queue.bytes += *bytes;
            queue
                .records
                .extend(payloads.drain(..).map(|payload| (payload, arrival)));
            // Waking only on the empty → non-empty edge: the source drains what is queued and
            // asks again before it goes idle, so one wake-up per burst is enough.
            if was_empty {
                if let Some(activator) = &queue.activator {
                    // An error means the dataflow is gone; then `close` follows.
                    let _ = activator.activate();
                }
            }
        }
        Ok(())
    }

    /// Records waiting to be read, over all partitions.
    pub fn queued(&self) -> usize {
        self.partitions.iter().map(|p| p.lock().records.len()).sum()
    }

    /// Ends the input: readers finish what is queued, then report their partitions done.
    pub fn close(&self) {
        for partition in self.partitions.iter() {
            let mut queue = partition.lock();
            queue.closed = true;
            if let Some(activator) = &queue.activator {
                let _ = activator.activate();
            }
        }
    }

    /// The reader of partition `index` (`index < partitions()`).
    pub fn reader(&self, index: usize) -> LiveReader {
        LiveReader {
            input: self.clone(),
            index,
        }
    }
}

/// One partition of a [`LiveInput`], read by the dataflow source.
#[derive(Debug)]
pub struct LiveReader {
    input: LiveInput,
    index: usize,
}

impl PartitionReader for LiveReader {
    fn source_name(&self) -> &str {
        &self.input.name
    }

    fn partition(&self) -> u32 {
        self.index as u32
    }

    fn format(&self) -> (Format, DecodeContext) {
        let context = DecodeContext {
            kind: self.input.kind,
            ..DecodeContext::default()
        };
        (Format::Json, context)
    }

    fn read(&mut self, max: usize, out: &mut RecordBatch) -> Result<ReadStatus, String> {
        let mut queue = self.input.partitions[self.index].lock();
        let take = max.min(queue.records.len());
        let first = queue.next_offset;
        let mut taken_bytes = 0;
        for (i, (payload, arrival)) in queue.records.drain(..take).enumerate() {
            taken_bytes += payload.len();
            out.push(first + i as u64, &payload, Some(arrival));
        }
        queue.bytes -= taken_bytes;
        queue.next_offset += take as u64;
        Ok(if !queue.records.is_empty() {
            ReadStatus::More
        } else if queue.closed {
            ReadStatus::Done
        } else {
            ReadStatus::CaughtUp
        })
    }

    fn attach(&mut self, activator: SyncActivator) {
        self.input.partitions[self.index].lock().activator = Some(activator);
    }

    fn wall_clock(&self) -> Option<Millis> {
        Some(wall_clock_ms())
    }

    fn idle_timeout(&self, _configured: Millis) -> Millis {
        // Pushes are in the queue before the source is woken: empty means nothing in flight.
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_stream_order_and_offsets_and_the_queue_is_bounded() {
        let input = LiveInput::new(
            2,
            InputCapacity {
                records: 3,
                bytes: 1 << 20,
            },
        );
        let key = b"stream-1";
        let p = partition_for_key(key, 2);
        let records = |payloads: &[&[u8]]| {
            payloads
                .iter()
                .map(|p| (&key[..], p.to_vec()))
                .collect::<Vec<_>>()
        };
        input.push(records(&[b"a", b"b"]), 5).unwrap();
        assert_eq!(input.push(records(&[b"c", b"d"]), 6), Err(PushError::Full));
        let mut reader = input.reader(p);
        let mut batch = RecordBatch::default();
        assert_eq!(reader.read(1, &mut batch), Ok(ReadStatus::More));
        assert_eq!(reader.read(10, &mut batch), Ok(ReadStatus::CaughtUp));
        let got: Vec<_> = batch
            .iter()
            .map(|r| (r.offset, r.payload.to_vec(), r.timestamp))
            .collect();
        assert_eq!(
            got,
            vec![(0, b"a".to_vec(), Some(5)), (1, b"b".to_vec(), Some(5))]
        );
        input.close();
        assert_eq!(reader.read(10, &mut batch), Ok(ReadStatus::Done));
        assert_eq!(input.push(records(&[b"e"]), 7), Err(PushError::Closed));
    }

    /// The queue is bounded in bytes as well: a few large records fill it (they could queue
    /// gigabytes within the record count), while an empty queue takes even a request larger
    /// than the bound.
    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let input = LiveInput::new(
            1,
            InputCapacity {
                records: 1_000,
                bytes: 100,
            },
        );
        let large = |n: usize| vec![(&b"s"[..], vec![b'x'; n])];
        input.push(large(150), 1).unwrap();
        assert_eq!(input.push(large(1), 2), Err(PushError::Full));
        let mut reader = input.reader(0);
        let mut batch = RecordBatch::default();
        reader.read(10, &mut batch).unwrap();
        input.push(large(60), 3).unwrap();
        assert_eq!(input.push(large(41), 4), Err(PushError::Full));
        input.push(large(40), 5).unwrap();
    }
}
