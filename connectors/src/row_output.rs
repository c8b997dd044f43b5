//! Where a live run's rows go once the frontier has passed them: the view store, stdout as
//! NDJSON, the dead-letter topic. Every output sees the same consolidated changes.

use std::io::Write;
use std::sync::Mutex;

use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::rows_json::RowJson;
use tracing::warn;

/// A consumer of complete changes `(row, time, diff)`: every change at a time before `frontier`
/// (None: the dataflow has ended), consolidated. Called from the dataflow's worker threads.
pub trait RowOutput: Send + Sync {
    /// Takes one flush of changes.
    fn publish(&self, frontier: Option<Millis>, updates: &mut [(Row, Millis, isize)]);
}

/// Final rows (each exactly once, when its window can no longer change) and dead letters as
/// NDJSON lines, the same lines `crowdpulse process` writes; live rows are left to the API.
pub struct FinalRowsNdjson<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> FinalRowsNdjson<W> {
    /// Writes to `out` (flushed after every flush of changes, so a reader sees rows promptly).
    pub fn new(out: W) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }
}

impl<W: Write + Send> RowOutput for FinalRowsNdjson<W> {
    fn publish(&self, _frontier: Option<Millis>, updates: &mut [(Row, Millis, isize)]) {
        let mut lines = Vec::new();
        for (row, _, diff) in updates.iter() {
            // A final row appears once and is never retracted (DESIGN §3).
            if row.is_final() && *diff > 0 {
                serde_json::to_writer(&mut lines, &RowJson(row)).expect("rows serialize to memory");
                lines.push(b'\n');
            }
        }
        if lines.is_empty() {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = out.write_all(&lines).and_then(|()| out.flush()) {
            warn!(%error, "writing rows failed");
        }
    }
}

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
        output.publish(Some(10), &mut [(dead(1), 5, 1), (dead(2), 5, -1)]);
        let written = String::from_utf8(output.out.into_inner().unwrap()).unwrap();
        assert_eq!(written.lines().count(), 1, "{written}");
        assert!(written.contains("\"offset\":1"), "{written}");
    }
}
