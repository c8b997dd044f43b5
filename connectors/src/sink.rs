//! Where rows go once the frontier has passed them: the sink interface every output implements
//! (view store, NDJSON, dead-letter topic, Postgres), and the final-row NDJSON writer of `run`.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crowdpulse_dataflow::checkpoint::Checkpoint;

use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::progress::Positions;
use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::rows_json::RowJson;

use crate::error::{ConnectorError, Result};

/// One flush of the runtime's sink stage: everything complete below `frontier`.
#[derive(Debug, Default)]
pub struct Flush {
    /// Every change at a time before this is included (None: the input is exhausted).
    pub frontier: Option<Millis>,
    /// The changes `(row, time, diff)` whose times the frontier has passed since the previous
    /// flush, consolidated, in time order and within a time retractions first (a replaced row
    /// is -old then +new); rows read from a source (chat messages, dead letters, each inserted
    /// once, +1) come after the computed rows of their time and diff, by where they were read.
    pub updates: Vec<(Row, Millis, isize)>,
    /// Every partition's latest position emitted below `frontier`: the input the changes up to
    /// now reflect.
    pub positions: Positions,
    /// The latest checkpoint completed below `frontier`: a sink that keeps it must make it
    /// durable together with these changes, never before them.
    pub checkpoint: Option<Arc<Checkpoint>>,
}

/// A consumer of the runtime's flushes. Flushes arrive in frontier order from one worker thread.
pub trait Sink: Send + Sync {
    /// Takes one flush; every sink sees the same one, shared, so a sink may keep it (to work
    /// on it on a thread of its own) without copying its rows.
    fn flush(&self, flush: &Arc<Flush>);

    /// Called once before the first flush, when the processes of the run have agreed on it (a
    /// process its peers refuse never opens its sinks): the place to clear what an earlier run
    /// left, which a refused or stray process must not touch.
    fn open(&self) -> Result<()> {
        Ok(())
    }

    /// Called once after the last flush, when the run ends; returns when what the sink took is
    /// durable, or why it is not.
    fn finish(&self) -> Result<()> {
        Ok(())
    }

    /// Why the sink can take nothing more, once that is so: a live run then stops instead of
    /// computing results that go nowhere.
    fn failure(&self) -> Option<String> {
        None
    }

    /// For a sink that makes what it took durable at its own pace: the frontier below which it
    /// is (`Millis::MAX`: all of it). None: durable once flushed. The sources run at most the
    /// run's lead ahead of it.
    fn durable_frontier(&self) -> Option<Millis> {
        None
    }
}

/// Final rows (each exactly once, when its window can no longer change) and dead letters as
/// NDJSON lines, the same lines `crowdpulse process` writes; live rows are left to the API.
pub struct FinalRowsNdjson<W: Write + Send> {
    /// The output, and the write error that ended it (nothing is written after one: the rows
    /// would have a gap).
    out: Mutex<(W, Option<std::io::Error>)>,
}

impl<W: Write + Send> FinalRowsNdjson<W> {
    /// Writes to `out` (flushed after every flush of changes, so a reader sees rows promptly).
    pub fn new(out: W) -> Self {
        Self {
            out: Mutex::new((out, None)),
        }
    }
}

impl<W: Write + Send> Sink for FinalRowsNdjson<W> {
    fn flush(&self, flush: &Arc<Flush>) {
        let mut lines = Vec::new();
        for (row, _, diff) in &flush.updates {
            // A final row appears once and is never retracted (DESIGN §3).
            if row.is_final() && *diff > 0 {
                serde_json::to_writer(&mut lines, &RowJson(row)).expect("rows serialize to memory");
                lines.push(b'\n');
            }
        }
        if lines.is_empty() {
            return;
        }
        let mut guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let (out, failed) = &mut *guard;
        if failed.is_some() {
            return;
        }
        if let Err(error) = out.write_all(&lines).and_then(|()| out.flush()) {
            tracing::error!(%error, "writing final rows failed; the run stops");
            *failed = Some(error);
        }
    }

    fn finish(&self) -> Result<()> {
        let mut guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let (out, failed) = &mut *guard;
        match failed.take() {
            Some(error) => Err(error),
            None => out.flush(),
        }
        .map_err(|e| ConnectorError::io(FINAL_ROWS_OUTPUT, e))
    }

    fn failure(&self) -> Option<String> {
        let guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .1
            .as_ref()
            .map(|error| format!("{FINAL_ROWS_OUTPUT}: {error}"))
    }
}

/// How errors name the final-row output.
const FINAL_ROWS_OUTPUT: &str = "final rows output";

#[cfg(test)]
mod tests {
    use crowdpulse_dataflow::rows::{DeadLetter, DeadLetterReason};

    use super::*;

    #[test]
    fn only_final_insertions_are_written() {
        let dead = |offset| {
            Row::DeadLetter(DeadLetter::new(
                "chat",
                0,
                offset,
                DeadLetterReason::Decode,
                "bad".into(),
                b"{",
            ))
        };
        let output = FinalRowsNdjson::new(Vec::new());
        output.flush(&Arc::new(Flush {
            frontier: Some(10),
            updates: vec![(dead(1), 5, 1), (dead(2), 5, -1)],
            ..Flush::default()
        }));
        let written = String::from_utf8(output.out.into_inner().unwrap().0).unwrap();
        assert_eq!(written.lines().count(), 1, "{written}");
        assert!(written.contains("\"offset\":1"), "{written}");
    }
}
