//! An in-memory partition: records handed over in batches of chosen sizes (tests, in-process
//! inputs).

use std::collections::VecDeque;

use crate::codec::{DecodeContext, Format};
use crate::source::{PartitionReader, ReadStatus, RecordBatch};

/// A partition held in memory.
#[derive(Debug, Clone)]
pub struct MemoryReader {
    source: String,
    partition: u32,
    records: VecDeque<(u64, Vec<u8>)>,
    /// Sizes of successive reads, cycled; lets tests split one partition into arbitrary batches.
    batch_sizes: Vec<usize>,
    reads: usize,
    /// The configured kind its records are, if any.
    kind: Option<usize>,
    /// Where reading began, when told ([`MemoryReader::starting_at`]).
    start: Option<u64>,
}

impl MemoryReader {
    /// A JSON partition whose offsets are the payloads' positions.
    pub fn new(source: &str, partition: u32, payloads: Vec<Vec<u8>>) -> Self {
        let records = payloads
            .into_iter()
            .enumerate()
            .map(|(offset, payload)| (offset as u64, payload))
            .collect();
        Self {
            source: source.to_owned(),
            partition,
            records,
            batch_sizes: Vec::new(),
            reads: 0,
            kind: None,
            start: None,
        }
    }

    /// Records of the configured kind `kind` (its index in the plan).
    pub fn of_kind(mut self, kind: usize) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Reads on from `offset` (a run resuming from a checkpoint).
    pub fn starting_at(mut self, offset: u64) -> Self {
        self.records.retain(|(o, _)| *o >= offset);
        self.start = Some(offset);
        self
    }

    /// Reads at most these many records at a time, cycling through the list.
    pub fn with_batches(mut self, sizes: Vec<usize>) -> Self {
        self.batch_sizes = sizes.into_iter().map(|s| s.max(1)).collect();
        self
    }
}

impl PartitionReader for MemoryReader {
    fn source_name(&self) -> &str {
        &self.source
    }

    fn partition(&self) -> u32 {
        self.partition
    }

    fn format(&self) -> (Format, DecodeContext) {
        let context = DecodeContext {
            kind: self.kind,
            ..DecodeContext::default()
        };
        (Format::Json, context)
    }

    fn start_offset(&self) -> Option<u64> {
        self.start
    }

    fn read(&mut self, max: usize, out: &mut RecordBatch) -> Result<ReadStatus, String> {
        let limit = match self.batch_sizes.len() {
            0 => max,
            n => self.batch_sizes[self.reads % n].min(max),
        };
        self.reads += 1;
        let take = limit.min(self.records.len());
        for (offset, payload) in self.records.drain(..take) {
            out.push(offset, &payload, None);
        }
        Ok(if self.records.is_empty() {
            ReadStatus::Done
        } else {
            ReadStatus::More
        })
    }
}
