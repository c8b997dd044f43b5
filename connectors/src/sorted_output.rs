//! The output of bounded runs: a sink that gathers the final rows, and their NDJSON in byte order,
//! so a bounded run's output is identical whatever the worker count: rendered and sorted in
//! parallel chunks (one buffer per chunk, no string per line), then merged while writing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::ops::Range;
use std::sync::Mutex;

use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::rows_json::RowJson;

use crate::error::{ConnectorError, Result};
use crate::sink::{Flush, Sink};

/// What [`FinalRows`] has gathered.
#[derive(Debug, Default)]
struct Gathered {
    finals: Vec<Row>,
    /// Net count of live rows: they must cancel out by the end of a bounded input.
    live: isize,
    /// The first final row that changed after it was final.
    changed_final: Option<String>,
}

/// Gathers a bounded run's final rows. Final rows are never retracted, so they are simply kept;
/// live rows are only counted.
#[derive(Debug, Default)]
pub struct FinalRows(Mutex<Gathered>);

impl Sink for FinalRows {
    fn flush(&self, flush: &Flush) {
        let mut gathered = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (row, _, diff) in &flush.updates {
            match (row.is_final(), *diff) {
                (true, 1) => gathered.finals.push(row.clone()),
                (true, _) => {
                    if gathered.changed_final.is_none() {
                        gathered.changed_final = Some(format!("{row:?} x{diff}"));
                    }
                }
                (false, _) => gathered.live += diff,
            }
        }
    }
}

impl FinalRows {
    /// The final rows in no particular order, or why the run's output is inconsistent.
    pub fn take(&self) -> Result<Vec<Row>> {
        let gathered = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(row) = gathered.changed_final {
            return Err(ConnectorError::Inconsistent(format!(
                "final row changed after it was final: {row}"
            )));
        }
        if gathered.live != 0 {
            return Err(ConnectorError::Inconsistent(format!(
                "{} live rows left at the end of the input",
                gathered.live
            )));
        }
        Ok(gathered.finals)
    }
}

/// One chunk of rows rendered back to back, with its lines in sorted order.
struct RenderedChunk {
    bytes: Vec<u8>,
    lines: Vec<Range<usize>>,
}

impl RenderedChunk {
    fn render(rows: &[Row]) -> Self {
        let mut bytes = Vec::with_capacity(rows.len() * 200);
        let mut lines = Vec::with_capacity(rows.len());
        for row in rows {
            let start = bytes.len();
            serde_json::to_writer(&mut bytes, &RowJson(row)).expect("rows serialize to memory");
            lines.push(start..bytes.len());
        }
        lines.sort_unstable_by(|a, b| bytes[a.clone()].cmp(&bytes[b.clone()]));
        Self { bytes, lines }
    }

    fn line(&self, index: usize) -> Option<&[u8]> {
        self.lines
            .get(index)
            .map(|range| &self.bytes[range.clone()])
    }
}

/// Writes `rows` as sorted NDJSON lines using `threads` threads; returns the number of lines.
pub fn write_sorted_ndjson(
    rows: &[Row],
    threads: usize,
    mut out: impl Write,
) -> std::io::Result<usize> {
    let size = rows.len().div_ceil(threads.max(1)).max(1);
    let chunks: Vec<RenderedChunk> = std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .chunks(size)
            .map(|part| scope.spawn(move || RenderedChunk::render(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rendering rows does not panic"))
            .collect()
    });
    let mut heads: BinaryHeap<Reverse<(&[u8], usize, usize)>> = chunks
        .iter()
        .enumerate()
        .filter_map(|(c, chunk)| chunk.line(0).map(|line| Reverse((line, c, 0))))
        .collect();
    let mut written = 0;
    while let Some(Reverse((line, c, index))) = heads.pop() {
        out.write_all(line)?;
        out.write_all(b"\n")?;
        written += 1;
        if let Some(next) = chunks[c].line(index + 1) {
            heads.push(Reverse((next, c, index + 1)));
        }
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowdpulse_dataflow::rows::{DeadLetter, DeadLetterReason};

    #[test]
    fn output_is_sorted_and_independent_of_chunking() {
        let rows: Vec<Row> = (0..50u64)
            .map(|i| {
                Row::DeadLetter(DeadLetter::new(
                    "f",
                    (i % 7) as u32,
                    (i * 37) % 50,
                    DeadLetterReason::Invalid,
                    format!("e{i}"),
                    b"x",
                ))
            })
            .collect();
        let render = |threads| {
            let mut out = Vec::new();
            assert_eq!(write_sorted_ndjson(&rows, threads, &mut out).unwrap(), 50);
            out
        };
        let one = render(1);
        assert_eq!(one, render(3));
        assert_eq!(one, render(64));
        let lines: Vec<&[u8]> = one
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert!(lines.windows(2).all(|w| w[0] < w[1]));
    }
}
