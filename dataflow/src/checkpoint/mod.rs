//! Consistent checkpoints (DESIGN §5): what each worker's source and analytics hold at a
//! checkpoint time T and how a run restores from them (the sources agree on T by
//! [`crate::pacing`]).
//!
//! Why the cut is consistent: a source keeps every pane delta whose time its capability has not
//! yet passed, and emits one only when its capability moves past the delta's time. A source
//! whose capability passes T therefore emits every delta before T, records its state (each
//! partition's next offset and clock, and the deltas at T or later it still holds), and only
//! then emits deltas at T or later. The analytics, once their frontier reaches T, have applied
//! exactly the deltas before T: their state at T plus the sources' states at T is the state of
//! the dataflow after reading exactly the recorded offsets.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use lz4_flex::frame::{FrameDecoder, FrameEncoder, FrameInfo};
use serde::{Deserialize, Serialize};

use crate::analytics::{stream_hash, Delta, QuietState, StreamState};
use crate::event::Millis;
use crate::hashing::FastMap;
use crate::kinds::windows::KindWindows;
use crate::plan::Plan;
use crate::progress::SourcePosition;
use crate::seen_ids::SeenId;

/// Bumped whenever the encoding of any checkpointed state changes: a checkpoint written by
/// another format is refused, never half-read.
pub const FORMAT_VERSION: u32 = 9;

/// The formats this build reads. 8 differs from 9 only in that its quiet streams keep their
/// moment baselines of zeros, which [`FORMAT_VERSION`] 9 leaves out and rebuilds on waking (a
/// baseline that is there is used as it is); a build of format 8 must refuse 9, whose quiet
/// streams it would wake without a baseline.
const READABLE_FORMATS: std::ops::RangeInclusive<u32> = 8..=FORMAT_VERSION;

/// Which operator a part of a checkpoint comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// A worker's partitioned source.
    Source,
    /// A worker's window analytics.
    Analytics,
}

impl Role {
    /// The name stored with the part.
    pub fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Analytics => "analytics",
        }
    }

    /// The role a stored name denotes.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "source" => Some(Role::Source),
            "analytics" => Some(Role::Analytics),
            _ => None,
        }
    }
}

/// One worker's share of the checkpoint at `time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPart {
    /// The checkpoint time T.
    pub time: Millis,
    /// Index of the worker that wrote it.
    pub worker: usize,
    /// Number of workers of the run.
    pub workers: usize,
    /// The operator.
    pub role: Role,
    /// The partitions' positions at T (source parts only), readable without decoding `state`.
    pub positions: Vec<SourcePosition>,
    /// The state, as [`encode`] writes it.
    pub state: Vec<u8>,
    /// A source part written when the source's input ended, at its last time: the state of that
    /// worker's source at every later checkpoint time (its held deltas then all emitted, the
    /// restore keeps those at the checkpoint's time or later).
    pub finished: bool,
}

/// A source's state at a checkpoint time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceState {
    /// Per partition: (source, partition, next offset, largest event time seen).
    pub partitions: Vec<PartitionState>,
    /// Deltas read before T whose times are at T or later: not yet in the analytics' state.
    pub pending: Vec<(Millis, Delta)>,
}

/// One partition at a checkpoint time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Topic or file.
    pub source: String,
    /// Partition number.
    pub partition: u32,
    /// The offset to read next (None: nothing read yet).
    pub next_offset: Option<u64>,
    /// The largest event time accepted so far (the partition clock).
    pub max_seen: Option<Millis>,
    /// The event ids within the lateness horizon.
    pub event_ids: Vec<SeenId>,
}

/// Why a stored checkpoint cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Written by a build with another state format.
    #[error(
        "checkpoint state format {found} cannot be read by this build (format {FORMAT_VERSION})"
    )]
    Format {
        /// The version found.
        found: u32,
    },
    /// The bytes do not decode.
    #[error("checkpoint state does not decode: {0}")]
    Corrupt(String),
    /// Taken with other `[pipeline]` settings (windows, lateness, ...): its state means
    /// something else under the current ones.
    #[error("checkpoint was taken with other [pipeline] settings: {taken}")]
    Pipeline {
        /// The settings it was taken with.
        taken: String,
    },
    /// Parts are missing.
    #[error("checkpoint at {time} is incomplete: {found} parts for {workers} workers")]
    Incomplete {
        /// Checkpoint time.
        time: Millis,
        /// Parts found.
        found: usize,
        /// Workers the checkpoint was written by.
        workers: usize,
    },
}

/// The pipeline settings a checkpoint's analytics state is only valid under, as text (live rows,
/// the idle timeout and the field limits aside: they change what is emitted and when, or what is
/// admitted from now on, not the meaning of what is kept).
pub(crate) fn pipeline_identity(plan: &Plan) -> String {
    let defaults = crate::config::PipelineConfig::default();
    let mut config = plan.clone().with_live_rows(true).config().clone();
    config.idle_timeout = defaults.idle_timeout;
    config.limits = defaults.limits;
    serde_json::to_string(&config).expect("settings serialize")
}

/// Encodes a state: [`FORMAT_VERSION`] (4 bytes, little-endian), then the state's bincode in an
/// LZ4 frame with a content checksum. Compressed as it is serialized, so the whole bincode is
/// never in memory: a live run's state (tens of MB of chat summaries whose texts repeat) is held
/// by the sink until written, and each worker's is encoded every checkpoint interval.
pub fn encode<T: Serialize + ?Sized>(state: &T) -> Vec<u8> {
    let info = FrameInfo::new().content_checksum(true);
    let mut frame = FrameEncoder::with_frame_info(info, FORMAT_VERSION.to_le_bytes().to_vec());
    bincode::serialize_into(&mut frame, state).expect("state serializes to memory");
    let mut bytes = frame.finish().expect("a frame finishes in memory");
    // Grown by doubling: up to half of it would be held, unused, until the part is written.
    bytes.shrink_to_fit();
    bytes
}

/// Decodes a state written by [`encode`], refusing other format versions and corrupt frames.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CheckpointError> {
    let corrupt = |e: &dyn std::fmt::Display| CheckpointError::Corrupt(e.to_string());
    let (version, frame) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| CheckpointError::Corrupt("shorter than its format version".to_string()))?;
    let version = u32::from_le_bytes(*version);
    if !READABLE_FORMATS.contains(&version) {
        return Err(CheckpointError::Format { found: version });
    }
    // Decompressed whole first: bincode reads a slice several times faster than a reader, and
    // this runs once, at a restart.
    let mut state = Vec::new();
    FrameDecoder::new(frame)
        .read_to_end(&mut state)
        .map_err(|e| corrupt(&e))?;
    bincode::deserialize(&state).map_err(|e| corrupt(&e))
}

/// A complete checkpoint: every worker's source and analytics parts at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The checkpoint time T.
    pub time: Millis,
    /// Number of workers that wrote it.
    pub workers: usize,
    /// Two parts per worker, ordered by (role, worker).
    pub parts: Vec<CheckpointPart>,
}

impl Checkpoint {
    /// Assembles the parts of time `time`, a worker's source part standing in from `finished`
    /// when its input ended before T; None unless every worker's two parts are there.
    pub fn assemble(
        time: Millis,
        mut parts: Vec<CheckpointPart>,
        finished: &BTreeMap<usize, CheckpointPart>,
    ) -> Option<Self> {
        let workers = parts.first()?.workers;
        for (worker, part) in finished {
            let missing = !parts
                .iter()
                .any(|p| p.role == Role::Source && p.worker == *worker);
            if missing && part.time <= time {
                parts.push(CheckpointPart {
                    time,
                    ..part.clone()
                });
            }
        }
        parts.sort_by_key(|p| (p.role, p.worker));
        parts.dedup_by_key(|p| (p.role, p.worker));
        let complete = parts.len() == 2 * workers
            && parts
                .iter()
                .all(|p| p.time == time && p.workers == workers && p.worker < workers);
        complete.then_some(Self {
            time,
            workers,
            parts,
        })
    }

    /// Every partition's position at T.
    pub fn positions(&self) -> impl Iterator<Item = &SourcePosition> {
        self.parts.iter().flat_map(|p| &p.positions)
    }

    /// Total size of the encoded state.
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.state.len()).sum()
    }
}

/// A decoded checkpoint, ready to resume from: what each worker's source and analytics start
/// with. Works for any number of workers: partitions and streams go to the workers that own them
/// in the new run.
#[derive(Debug, Default)]
pub struct Restore {
    /// The checkpoint time: sources start there.
    pub time: Millis,
    /// Every partition's state at T.
    pub partitions: BTreeMap<(String, u32), PartitionState>,
    /// Deltas at T or later that were read before T, per writing worker.
    pending: Mutex<Vec<Vec<(Millis, Delta)>>>,
    /// Every stream's analytics state, taken by the worker that owns the stream: active streams
    /// and quiet ones (encoded).
    streams: Mutex<(FastMap<String, StreamState>, FastMap<String, QuietState>)>,
    /// Every configured kind's windows, taken by the workers that own their combinations.
    kinds: Mutex<KindWindows>,
}

impl Restore {
    /// Decodes every part, so a bad checkpoint fails before any worker starts; refuses one taken
    /// under other pipeline settings than `plan`'s.
    pub fn decode(checkpoint: &Checkpoint, plan: &Plan) -> Result<Self, CheckpointError> {
        let mut partitions = BTreeMap::new();
        let mut pending = Vec::new();
        let mut streams = FastMap::default();
        let mut quiet = FastMap::default();
        let mut kinds = KindWindows::default();
        for part in &checkpoint.parts {
            match part.role {
                Role::Source => {
                    let state: SourceState = decode(&part.state)?;
                    for partition in state.partitions {
                        let key = (partition.source.clone(), partition.partition);
                        partitions.insert(key, partition);
                    }
                    // A finished source's part also lists what it emitted before T.
                    let mut held = state.pending;
                    held.retain(|(time, _)| *time >= checkpoint.time);
                    pending.push(held);
                }
                Role::Analytics => {
                    type Part = (
                        String,
                        FastMap<String, StreamState>,
                        FastMap<String, QuietState>,
                        KindWindows,
                    );
                    let (taken, active, quieted, kind_windows): Part = decode(&part.state)?;
                    if taken != pipeline_identity(plan) {
                        return Err(CheckpointError::Pipeline { taken });
                    }
                    for bytes in quieted.values() {
                        crate::analytics::decode_quiet(bytes)
                            .map_err(|e| CheckpointError::Corrupt(e.to_string()))?;
                    }
                    streams.extend(active);
                    quiet.extend(quieted);
                    kinds.extend(kind_windows);
                }
            }
        }
        Ok(Restore {
            time: checkpoint.time,
            partitions,
            pending: Mutex::new(pending),
            streams: Mutex::new((streams, quiet)),
            kinds: Mutex::new(kinds),
        })
    }

    /// Takes the held-back deltas worker `index` of `peers` re-emits.
    pub fn take_pending(&self, index: usize, peers: usize) -> Vec<(Millis, Delta)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .iter_mut()
            .enumerate()
            .filter(|(writer, _)| writer % peers == index)
            .flat_map(|(_, deltas)| std::mem::take(deltas))
            .collect()
    }

    /// Takes the kinds' combinations worker `index` of `peers` owns.
    pub(crate) fn take_kinds(&self, index: usize, peers: usize) -> KindWindows {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        kinds.take_owned(index, peers)
    }

    /// Takes the streams worker `index` of `peers` owns: active and quiet ones.
    pub(crate) fn take_streams(
        &self,
        index: usize,
        peers: usize,
    ) -> (FastMap<String, StreamState>, FastMap<String, QuietState>) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let (active, quiet) = &mut *streams;
        (
            take_owned(active, index, peers),
            take_owned(quiet, index, peers),
        )
    }
}

/// Removes and returns the entries of `streams` that worker `index` of `peers` owns.
fn take_owned<V>(
    streams: &mut FastMap<String, V>,
    index: usize,
    peers: usize,
) -> FastMap<String, V> {
    let owned: Vec<String> = streams
        .keys()
        .filter(|id| stream_hash(id) as usize % peers == index)
        .cloned()
        .collect();
    owned
        .into_iter()
        .filter_map(|id| streams.remove_entry(&id))
        .collect()
}

/// What a run with checkpoints hands its dataflow.
#[derive(Debug, Clone, Default)]
pub struct Checkpointing {
    /// The checkpoint the run resumes from.
    pub restore: Option<Arc<Restore>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_of_another_format_are_refused() {
        let bytes = bincode::serialize(&(FORMAT_VERSION + 1, 7u64)).unwrap();
        assert_eq!(
            decode::<u64>(&bytes),
            Err(CheckpointError::Format {
                found: FORMAT_VERSION + 1
            })
        );
        assert_eq!(decode::<u64>(&encode(&7u64)), Ok(7));
        let written_by = |format: u32| {
            let mut bytes = encode(&7u64);
            bytes[..4].copy_from_slice(&format.to_le_bytes());
            decode::<u64>(&bytes)
        };
        assert_eq!(written_by(8), Ok(7));
        assert_eq!(written_by(7), Err(CheckpointError::Format { found: 7 }));
        assert!(matches!(
            decode::<u64>(&[1]),
            Err(CheckpointError::Corrupt(_))
        ));
    }

    /// A state is compressed (chat texts repeat), reads back equal, and a damaged or cut frame
    /// is refused as corrupt rather than read as another state.
    #[test]
    fn states_are_compressed_and_damage_is_refused() {
        let texts = ["what a play!", "LUL LUL LUL", "is this live?", "gg wp"];
        let state: Vec<(u64, String)> = (0..20_000u64)
            .map(|i| (i * 7, texts[(i % 4) as usize].repeat(1 + (i % 3) as usize)))
            .collect();
        let plain = bincode::serialize(&state).unwrap().len();
        let bytes = encode(&state);
        assert!(
            bytes.len() * 4 < plain,
            "{} bytes encoded from {plain} of bincode",
            bytes.len()
        );
        assert_eq!(decode::<Vec<(u64, String)>>(&bytes), Ok(state));
        assert!(matches!(
            decode::<Vec<(u64, String)>>(&bytes[..bytes.len() / 2]),
            Err(CheckpointError::Corrupt(_))
        ));

        // Bytes that do not compress are stored as literals: a flipped one still decompresses,
        // to another state of the same shape, and only the frame's content checksum tells.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut damaged = encode(&noise);
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x55;
        assert!(matches!(
            decode::<Vec<u8>>(&damaged),
            Err(CheckpointError::Corrupt(_))
        ));
    }
}
