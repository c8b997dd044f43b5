//! NDJSON file partitions: each input file is one partition, read in order, one record per line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crowdpulse_dataflow::codec::{DecodeContext, Format};
use crowdpulse_dataflow::source::{PartitionReader, ReadStatus, RecordBatch, MAX_RECORD_BYTES};

use crate::error::{ConnectorError, Result};

/// One NDJSON file as a partition. Offsets are zero-based line numbers; blank lines are skipped.
pub struct FileReader {
    path: PathBuf,
    name: String,
    partition: u32,
    reader: BufReader<File>,
    line: u64,
    max_record: usize,
}

impl FileReader {
    /// Opens a file; fails if it cannot be read.
    pub fn open(path: &Path, partition: u32) -> Result<Self> {
        let file = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
        Ok(Self {
            path: path.to_owned(),
            name: path.display().to_string(),
            partition,
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
            max_record: MAX_RECORD_BYTES,
        })
    }

    /// Changes the record size limit (tests).
    pub fn with_max_record(mut self, bytes: usize) -> Self {
        self.max_record = bytes;
        self
    }

    /// Appends one line to `batch`'s pending bytes, keeping at most `max_record` bytes; returns
    /// the line's full length, or None at end of file.
    fn next_line(&mut self, batch: &mut RecordBatch) -> std::io::Result<Option<usize>> {
        let mut total = 0;
        let mut saw_any = false;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok(saw_any.then_some(total));
            }
            saw_any = true;
            let (chunk, consumed, ended) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            let room = self.max_record.saturating_sub(batch.pending_len());
            batch
                .pending_bytes()
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            total += chunk.len();
            self.reader.consume(consumed);
            if ended {
                return Ok(Some(total));
            }
        }
    }
}

impl PartitionReader for FileReader {
    fn source_name(&self) -> &str {
        &self.name
    }

    fn partition(&self) -> u32 {
        self.partition
    }

    fn format(&self) -> (Format, DecodeContext) {
        // A file has no broker timestamp: a record without `ts` is invalid.
        (Format::Json, DecodeContext::default())
    }

    fn read(
        &mut self,
        max: usize,
        out: &mut RecordBatch,
    ) -> std::result::Result<ReadStatus, String> {
        for _ in 0..max {
            let Some(mut total) = self
                .next_line(out)
                .map_err(|e| format!("{}: {e}", self.path.display()))?
            else {
                return Ok(ReadStatus::Done);
            };
            let offset = self.line;
            self.line += 1;
            let kept = out.pending_len();
            if kept > 0 && kept == total && out.pending_bytes().last() == Some(&b'\r') {
                out.pending_bytes().pop();
                total -= 1;
            }
            let blank = total == out.pending_len() && {
                let bytes = out.pending_bytes();
                bytes[bytes.len() - total..]
                    .iter()
                    .all(u8::is_ascii_whitespace)
            };
            if blank {
                out.discard_pending();
                continue;
            }
            out.finish_record(offset, None, (total > self.max_record).then_some(total));
        }
        Ok(ReadStatus::More)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_offsets_blank_lines_and_oversized_records() {
        let dir =
            std::env::temp_dir().join(format!("crowdpulse-file-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.ndjson");
        let mut f = File::create(&path).unwrap();
        write!(
            f,
            "{{\"a\":1}}\r\n\n{}\nlast-without-newline",
            "x".repeat(100)
        )
        .unwrap();
        drop(f);
        let mut reader = FileReader::open(&path, 3).unwrap().with_max_record(50);
        let mut out = RecordBatch::default();
        assert_eq!(reader.read(2, &mut out), Ok(ReadStatus::More));
        assert_eq!(reader.read(10, &mut out), Ok(ReadStatus::Done));
        let summary: Vec<_> = out
            .iter()
            .map(|r| (r.offset, r.payload.len(), r.oversized))
            .collect();
        assert_eq!(summary, [(0, 7, None), (2, 50, Some(100)), (3, 20, None)]);
        assert!(FileReader::open(&dir.join("missing"), 0).is_err());
    }
}
