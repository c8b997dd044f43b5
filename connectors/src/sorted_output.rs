//! The output of bounded runs: sinks that gather the final rows (as rows, or rendered as NDJSON
//! lines in byte order, so a bounded run's output is identical whatever the worker count).
//!
//! [`SortedNdjson`] renders each flush's final rows as they arrive, on a thread of its own and
//! straight from the shared flush (no row is cloned or kept), into chunks of bounded size whose
//! lines are sorted when the chunk is full; the output is the merge of the chunks. A run's rows
//! (chat history included) are then held once, as their bytes, a chunk's buffer is not copied
//! to grow (but for a line that crosses its end), and the worker that gathers the rows does not
//! also render them.

use std::cmp::Reverse;
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::io::Write;
use std::ops::Range;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::rows_json::RowJson;

use crate::error::{ConnectorError, Result};
use crate::sink::{Flush, Sink};

/// What a bounded run's final rows must satisfy: a final row is never changed or retracted, and
/// live rows (early results) cancel out by the end of the input.
#[derive(Debug, Default)]
struct FinalCheck {
    /// Net count of live rows.
    live: isize,
    /// The first final row that changed after it was final.
    changed_final: Option<String>,
}

impl FinalCheck {
    /// Whether the change is a final row to keep; counts and notes the others.
    fn keep(&mut self, row: &Row, diff: isize) -> bool {
        match (row.is_final(), diff) {
            (true, 1) => true,
            (true, _) => {
                if self.changed_final.is_none() {
                    self.changed_final = Some(format!("{row:?} x{diff}"));
                }
                false
            }
            (false, _) => {
                self.live += diff;
                false
            }
        }
    }

    /// Why the run's output is inconsistent, if it is.
    fn verdict(&self) -> Result<()> {
        if let Some(row) = &self.changed_final {
            return Err(ConnectorError::Inconsistent(format!(
                "final row changed after it was final: {row}"
            )));
        }
        if self.live != 0 {
            return Err(ConnectorError::Inconsistent(format!(
                "{} live rows left at the end of the input",
                self.live
            )));
        }
        Ok(())
    }
}

/// What [`FinalRows`] has gathered.
#[derive(Debug, Default)]
struct Gathered {
    finals: Vec<Row>,
    check: FinalCheck,
}

/// Gathers a bounded run's final rows. Final rows are never retracted, so they are simply kept;
/// live rows are only counted.
#[derive(Debug, Default)]
pub struct FinalRows(Mutex<Gathered>);

impl Sink for FinalRows {
    fn flush(&self, flush: &Arc<Flush>) {
        let gathered = &mut *self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (row, _, diff) in &flush.updates {
            if gathered.check.keep(row, *diff) {
                gathered.finals.push(row.clone());
            }
        }
    }
}

impl FinalRows {
    /// The final rows in no particular order, or why the run's output is inconsistent.
    pub fn take(&self) -> Result<Vec<Row>> {
        let gathered = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        gathered.check.verdict()?;
        Ok(gathered.finals)
    }
}

/// Bytes a chunk of rendered lines holds before its lines are sorted and a new one begins:
/// large enough that the final merge has few chunks to choose from, small enough that filling
/// one never copies much.
const CHUNK_BYTES: usize = 8 << 20;

/// Lines rendered back to back into one buffer (no string per line), and where each is.
#[derive(Default)]
struct RenderedChunk {
    bytes: Vec<u8>,
    lines: Vec<Range<usize>>,
}

impl RenderedChunk {
    fn push(&mut self, row: &Row) {
        if self.bytes.capacity() == 0 {
            self.bytes.reserve(CHUNK_BYTES + CHUNK_BYTES / 8);
        }
        let start = self.bytes.len();
        serde_json::to_writer(&mut self.bytes, &RowJson(row)).expect("rows serialize to memory");
        self.lines.push(start..self.bytes.len());
    }

    fn is_full(&self) -> bool {
        self.bytes.len() >= CHUNK_BYTES
    }

    /// Puts the lines in byte order.
    fn sort(&mut self) {
        let bytes = &self.bytes;
        self.lines
            .sort_unstable_by(|a, b| bytes[a.clone()].cmp(&bytes[b.clone()]));
    }

    fn line(&self, index: usize) -> Option<&[u8]> {
        self.lines
            .get(index)
            .map(|range| &self.bytes[range.clone()])
    }
}

/// What [`SortedNdjson`] has rendered so far.
#[derive(Default)]
struct Rendering {
    /// Full chunks, their lines sorted.
    sorted: Vec<RenderedChunk>,
    /// The chunk being filled.
    open: RenderedChunk,
    check: FinalCheck,
}

impl Rendering {
    fn render(&mut self, flush: &Flush) {
        for (row, _, diff) in &flush.updates {
            if !self.check.keep(row, *diff) {
                continue;
            }
            self.open.push(row);
            if self.open.is_full() {
                let mut full = std::mem::take(&mut self.open);
                full.sort();
                self.sorted.push(full);
            }
        }
    }
}

/// Flushes waiting for the renderer at most: should it fall behind, the sink stage waits for it
/// rather than queueing flush after flush (a flush holds what the frontier passed at once, which
/// at the end of a run can be much of it).
const QUEUED_FLUSHES: usize = 16;

/// Renders a bounded run's final rows as NDJSON lines on its own thread, written in byte order
/// by [`SortedNdjson::write_to`] once the run has ended; live rows are only counted.
pub struct SortedNdjson {
    queue: Mutex<Option<SyncSender<Arc<Flush>>>>,
    renderer: Mutex<Option<JoinHandle<Rendering>>>,
}

impl SortedNdjson {
    /// Starts the renderer thread.
    pub fn start() -> Result<Self> {
        let (queue, flushes) = sync_channel::<Arc<Flush>>(QUEUED_FLUSHES);
        let renderer = std::thread::Builder::new()
            .name("ndjson-renderer".into())
            .spawn(move || {
                let mut rendering = Rendering::default();
                for flush in flushes {
                    rendering.render(&flush);
                }
                rendering
            })
            .map_err(|e| ConnectorError::io("ndjson renderer thread", e))?;
        Ok(Self {
            queue: Mutex::new(Some(queue)),
            renderer: Mutex::new(Some(renderer)),
        })
    }

    /// Writes every line rendered, in byte order, to `out` (`path` names it in errors); returns
    /// the number of lines, or why the run's output is inconsistent (then nothing is written).
    /// Call once, after the last flush.
    pub fn write_to(&self, mut out: impl Write, path: &std::path::Path) -> Result<usize> {
        // Closing the queue ends the renderer once it has rendered every flush.
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        let renderer = self
            .renderer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut rendering = renderer
            .ok_or_else(|| ConnectorError::NdjsonOutput("the rows were written already".into()))?
            .join()
            .map_err(|panic| {
                let reason = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                ConnectorError::NdjsonOutput(format!("the renderer panicked: {reason}"))
            })?;
        rendering.check.verdict()?;
        let mut chunks = rendering.sorted;
        rendering.open.sort();
        chunks.push(rendering.open);
        merge_lines(&chunks, &mut out).map_err(|e| ConnectorError::io(path, e))
    }
}

impl Sink for SortedNdjson {
    fn flush(&self, flush: &Arc<Flush>) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queue.as_ref() {
            // Fails only when the renderer is gone (it panicked). The run goes on to its end
            // (bounded runs do not stop on a sink's failure), and write_to reports it there.
            let _ = queue.send(Arc::clone(flush));
        }
    }
}

/// Bytes of merged lines handed to the writing thread at once.
const WRITE_BLOCK_BYTES: usize = 256 << 10;

/// Merged blocks waiting for the writing thread at most: the merge never runs far ahead.
const QUEUED_BLOCKS: usize = 2;

/// Writes the lines of `chunks` (each sorted) merged in byte order, one per line.
///
/// The merge and the writing each take a good part of the time after the dataflow ends (writing
/// a 221 MB output spent most of its time in the kernel's copy into the page cache, the merge
/// comparing lines), so they run on two threads: this one writes whole blocks while the other
/// merges the next ones. The blocks are handed back to be filled again.
fn merge_lines(chunks: &[RenderedChunk], out: &mut impl Write) -> std::io::Result<usize> {
    let (merged, to_write) = sync_channel::<Vec<u8>>(QUEUED_BLOCKS);
    let (written_back, to_refill) = channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let merger = std::thread::Builder::new()
            .name("ndjson-merger".into())
            .spawn_scoped(scope, move || {
                merge_into_blocks(chunks, &merged, &to_refill)
            })?;
        let mut writing = Ok(());
        for mut block in to_write {
            if let Err(error) = out.write_all(&block) {
                // Dropping the queue (by leaving the loop) stops the merger.
                writing = Err(error);
                break;
            }
            block.clear();
            // The merger may have finished already: the block is then simply freed.
            let _ = written_back.send(block);
        }
        let lines = merger
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        writing?;
        out.flush()?;
        Ok(lines)
    })
}

/// Merges the lines of `chunks` into blocks of about [`WRITE_BLOCK_BYTES`], each line ended by a
/// newline, sent to `merged` (reusing the blocks that come back on `to_refill`); returns the
/// number of lines, or stops early once the writer has gone.
fn merge_into_blocks(
    chunks: &[RenderedChunk],
    merged: &SyncSender<Vec<u8>>,
    to_refill: &Receiver<Vec<u8>>,
) -> usize {
    let mut heads: BinaryHeap<Reverse<(&[u8], usize, usize)>> = chunks
        .iter()
        .enumerate()
        .filter_map(|(c, chunk)| chunk.line(0).map(|line| Reverse((line, c, 0))))
        .collect();
    let fresh_block = || Vec::with_capacity(WRITE_BLOCK_BYTES + WRITE_BLOCK_BYTES / 8);
    let mut block = fresh_block();
    let mut lines = 0;
    // The chunk's next line replaces its head in place: a chunk holds a span of event time, so
    // its next line usually follows its last one in the output too, and the head stays on top
    // after two comparisons, where popping and pushing it made about log2(chunks) + 3.
    while let Some(mut head) = heads.peek_mut() {
        let Reverse((line, c, index)) = *head;
        block.extend_from_slice(line);
        block.push(b'\n');
        lines += 1;
        match chunks[c].line(index + 1) {
            Some(next) => *head = Reverse((next, c, index + 1)),
            None => drop(PeekMut::pop(head)),
        }
        if block.len() >= WRITE_BLOCK_BYTES {
            let next = to_refill.try_recv().unwrap_or_else(|_| fresh_block());
            if merged.send(std::mem::replace(&mut block, next)).is_err() {
                return lines;
            }
        }
    }
    if !block.is_empty() {
        let _ = merged.send(block);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowdpulse_dataflow::rows::{DeadLetter, DeadLetterReason};

    fn dead_letter(i: u64, error_bytes: usize) -> Row {
        Row::DeadLetter(DeadLetter::new(
            "f",
            (i % 7) as u32,
            (i * 37) % 5_000,
            DeadLetterReason::Invalid,
            format!("e{i} {}", "x".repeat(error_bytes)),
            b"x",
        ))
    }

    /// Lines come out in byte order, each once, whether they fit one chunk or spread over many
    /// and however the flushes cut them.
    #[test]
    fn output_is_sorted_whatever_the_chunks_and_flushes() {
        for (rows, error_bytes, per_flush) in [(50, 10, 50), (50, 10, 3), (5_000, 4_000, 333)] {
            let rows: Vec<Row> = (0..rows).map(|i| dead_letter(i, error_bytes)).collect();
            let sink = SortedNdjson::start().unwrap();
            for part in rows.chunks(per_flush) {
                sink.flush(&Arc::new(Flush {
                    updates: part.iter().map(|row| (row.clone(), 0, 1)).collect(),
                    ..Flush::default()
                }));
            }
            let mut out = Vec::new();
            let path = std::path::Path::new("out");
            assert_eq!(sink.write_to(&mut out, path).unwrap(), rows.len());
            let mut expected: Vec<Vec<u8>> = rows
                .iter()
                .map(|row| serde_json::to_vec(&RowJson(row)).unwrap())
                .collect();
            expected.sort();
            let lines: Vec<&[u8]> = out
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            assert_eq!(
                lines,
                expected.iter().map(Vec::as_slice).collect::<Vec<_>>()
            );
        }
    }

    /// A writer that takes `left` bytes, then fails.
    struct FailingAfter {
        left: usize,
    }

    impl Write for FailingAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::other("disk full"));
            }
            let taken = buf.len().min(self.left);
            self.left -= taken;
            Ok(taken)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A write that fails mid-output is the run's error, and the merge stops with it (it used to
    /// be one thread; now a merger waiting on a writer that has gone must not hang).
    #[test]
    fn a_failed_write_is_an_error_and_stops_the_merge() {
        let sink = SortedNdjson::start().unwrap();
        let rows: Vec<Row> = (0..5_000).map(|i| dead_letter(i, 4_000)).collect();
        sink.flush(&Arc::new(Flush {
            updates: rows.iter().map(|row| (row.clone(), 0, 1)).collect(),
            ..Flush::default()
        }));
        let error = sink
            .write_to(
                FailingAfter { left: 3 << 20 },
                std::path::Path::new("out.ndjson"),
            )
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("disk full") && message.contains("out.ndjson"),
            "{message}"
        );
    }

    #[test]
    fn a_final_row_changed_is_an_error() {
        let sink = SortedNdjson::start().unwrap();
        sink.flush(&Arc::new(Flush {
            updates: vec![(dead_letter(1, 0), 0, 1), (dead_letter(1, 0), 1, -1)],
            ..Flush::default()
        }));
        let error = sink
            .write_to(Vec::new(), std::path::Path::new("out"))
            .unwrap_err();
        assert!(
            error.to_string().contains("changed after it was final"),
            "{error}"
        );
    }
}
