//! The analytics of all streams owned by one worker: pane deltas in, row changes out. Pure and
//! deterministic; the timely operator only feeds it deltas and frontiers.

use serde::Serialize;
use tracing::debug;

use super::delta::PaneDelta;
use super::stream_state::{RowChanges, StreamState};
use crate::event::Millis;
use crate::hashing::FastMap;
use crate::plan::Plan;

/// Window analytics over the streams of one worker.
pub struct Engine {
    plan: Plan,
    /// Streams with something an advance could change: visited on every advance.
    streams: FastMap<String, StreamState>,
    /// Streams with nothing left to emit until their next event (no pane, no live row, moment
    /// detection paused): only their since-start totals and carried viewer state remain, with
    /// their collections released. Advances skip them, so an advance costs the active streams,
    /// not every stream ever seen.
    quiet: FastMap<String, StreamState>,
    /// The frontier of the last advance (None before the first).
    advanced_to: Option<Millis>,
}

impl Engine {
    /// An engine for a plan.
    pub fn new(plan: &Plan) -> Self {
        Self {
            plan: plan.clone(),
            streams: FastMap::default(),
            quiet: FastMap::default(),
            advanced_to: None,
        }
    }

    /// An engine resuming with the streams of a checkpoint.
    pub(crate) fn restored(plan: &Plan, streams: FastMap<String, StreamState>) -> Self {
        Self {
            plan: plan.clone(),
            streams,
            quiet: FastMap::default(),
            advanced_to: None,
        }
    }

    /// The state of every stream, encoded for a checkpoint with the settings it is valid under.
    pub fn snapshot(&self) -> Vec<u8> {
        let pipeline = crate::checkpoint::pipeline_identity(&self.plan);
        let all = AllStreams(&self.streams, &self.quiet);
        crate::checkpoint::encode(&(pipeline, all))
    }

    /// Emits every live row the streams hold as an insertion: after a restore, the sinks and the
    /// API learn the live rows of the checkpoint again.
    pub fn live_rows(&self, out: &mut RowChanges) {
        for state in self.streams.values().chain(self.quiet.values()) {
            state.live_rows(&self.plan, out);
        }
    }

    /// Adds one pane delta.
    pub fn apply(&mut self, delta: &PaneDelta) {
        let state = match self.streams.get_mut(&delta.stream_id) {
            Some(state) => state,
            None => {
                let state = match self.quiet.remove_entry(&delta.stream_id) {
                    Some((id, mut state)) => {
                        // A quiet stream's advances were no-ops but for its horizon.
                        if let Some(frontier) = self.advanced_to {
                            state.catch_up(frontier, &self.plan);
                        }
                        (id, state)
                    }
                    None => (
                        delta.stream_id.clone(),
                        StreamState::new(delta.stream_id.clone(), &self.plan),
                    ),
                };
                self.streams.entry(state.0).or_insert(state.1)
            }
        };
        if !state.apply(delta, &self.plan) {
            // Only possible when idle partitions moved the frontier past the lateness bound: the
            // delta's windows are final already and cannot change.
            debug!(stream = %delta.stream_id, pane = delta.pane, "delta below the horizon ignored");
        }
    }

    /// Emits the row changes that bring every stream up to `frontier` (None: input exhausted,
    /// every window final).
    pub fn advance(&mut self, frontier: Option<u64>, out: &mut RowChanges) {
        if frontier.is_none() {
            // Every stream's totals become final.
            self.streams.extend(self.quiet.drain());
        }
        let mut quieted = Vec::new();
        for (id, state) in &mut self.streams {
            state.advance(frontier, &self.plan, out);
            if frontier.is_some() && state.is_quiet(&self.plan) {
                quieted.push(id.clone());
            }
        }
        for id in quieted {
            if let Some((id, mut state)) = self.streams.remove_entry(&id) {
                state.release_memory();
                self.quiet.insert(id, state);
            }
        }
        self.advanced_to = frontier;
    }

    /// Streams an advance visits, and quiet streams.
    #[cfg(test)]
    fn stream_counts(&self) -> (usize, usize) {
        (self.streams.len(), self.quiet.len())
    }
}

/// Both stream maps, serialized as one map (what [`crate::checkpoint::Restore`] reads).
struct AllStreams<'a>(
    &'a FastMap<String, StreamState>,
    &'a FastMap<String, StreamState>,
);

impl Serialize for AllStreams<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().chain(self.1.iter()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::analytics::PaneAggregator;
    use crate::codec::{decode_json, DecodeContext};
    use crate::config::PipelineConfig;
    use crate::rows::Row;
    use crate::sentiment::{Analyzer, Lexicons};

    const T0: Millis = 1_767_225_600_000;

    fn feed(engine: &mut Engine, aggregator: &mut PaneAggregator, events: &[(&str, Millis)]) {
        for (stream, ts) in events {
            let line = format!(
                r#"{{"type":"reaction","stream_id":"{stream}","user_id":"u","emoji":"🔥","ts":{ts}}}"#
            );
            let event = decode_json(line.as_bytes(), &DecodeContext::default()).unwrap();
            aggregator.add(event, *ts);
        }
        for (_, delta) in aggregator.drain() {
            engine.apply(&delta);
        }
    }

    fn reactions_total(changes: &RowChanges, stream: &str) -> Option<u64> {
        changes.iter().rev().find_map(|(row, diff)| match row {
            Row::StreamTotals { totals, .. } if *diff > 0 && totals.stream_id == stream => {
                Some(totals.reactions)
            }
            _ => None,
        })
    }

    /// Streams without anything left to change stop being visited, keep their totals, and
    /// resume exactly when they return; the end of input makes every stream's totals final.
    #[test]
    fn idle_streams_go_quiet_and_resume_with_their_totals() {
        let plan = Plan::new(PipelineConfig::default()).unwrap();
        let mut engine = Engine::new(&plan);
        let analyzer = Arc::new(Analyzer::new(Lexicons::builtin()));
        let aggregator = &mut PaneAggregator::new(plan.pane(), analyzer);
        let mut out = RowChanges::new();
        feed(
            &mut engine,
            aggregator,
            &[("a", T0), ("a", T0 + 1), ("b", T0 + 2)],
        );
        engine.advance(Some(T0 + 1_000), &mut out);
        assert_eq!(engine.stream_counts(), (2, 0));
        // Only "b" goes on; "a" has nothing left once its windows are final and retired and
        // its moment baseline has seen K empty windows.
        let mut t = T0;
        while t < T0 + 3_600_000 {
            t += 10_000;
            feed(&mut engine, aggregator, &[("b", t)]);
            engine.advance(Some(t), &mut out);
        }
        assert_eq!(engine.stream_counts(), (1, 1));
        // Quiet only after every window of "a" went out final.
        let final_windows_of_a = out
            .iter()
            .filter(|(row, diff)| {
                *diff > 0
                    && matches!(row, Row::WindowMetrics { key, is_final: true, .. } if &*key.stream_id == "a")
            })
            .count();
        assert_eq!(
            final_windows_of_a,
            plan.windows().iter().map(|w| w.size / w.slide).sum::<u64>() as usize
        );
        out.clear();
        feed(&mut engine, aggregator, &[("a", t + 5)]);
        engine.advance(Some(t + 10_000), &mut out);
        assert_eq!(engine.stream_counts(), (2, 0));
        assert_eq!(reactions_total(&out, "a"), Some(3));
        // Both quiet, then the end of input: both final totals are emitted.
        engine.advance(Some(t + 7_200_000), &mut out);
        assert_eq!(engine.stream_counts(), (0, 2));
        out.clear();
        engine.advance(None, &mut out);
        let finals: Vec<&Row> = out
            .iter()
            .filter(|(row, diff)| {
                *diff > 0 && matches!(row, Row::StreamTotals { is_final: true, .. })
            })
            .map(|(row, _)| row)
            .collect();
        assert_eq!(finals.len(), 2);
        assert_eq!(reactions_total(&out, "a"), Some(3));
    }
}
