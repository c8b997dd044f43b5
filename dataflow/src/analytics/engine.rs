//! The analytics of all streams owned by one worker: pane deltas in, row changes out. Pure and
//! deterministic; the timely operator only feeds it deltas and frontiers.

use bincode::Options;
use tracing::debug;

use super::delta::{Delta, PaneDelta};
use super::stream_state::{RowChanges, StreamState};
use crate::event::Millis;
use crate::hashing::FastMap;
use crate::kinds::windows::KindWindows;
use crate::plan::Plan;

/// A quiet stream's state, bincode-encoded without what it can rebuild: about 0.3 kB.
pub(crate) type QuietState = Box<[u8]>;

/// Window analytics over the streams of one worker.
pub struct Engine {
    plan: Plan,
    /// Streams with something an advance could change: visited on every advance.
    streams: FastMap<String, StreamState>,
    /// Streams with nothing to emit until their next event (see [`StreamState::is_quiet`]):
    /// only their since-start totals and carried viewer state remain. Advances skip them, so an
    /// advance costs the active streams, not every stream ever seen.
    quiet: FastMap<String, QuietState>,
    /// The frontier of the last advance (None before the first).
    advanced_to: Option<Millis>,
    /// The configured kinds' combinations this worker owns.
    kinds: KindWindows,
}

fn quiet_state(state: StreamState, plan: &Plan) -> QuietState {
    bincode::serialize(&state.quieted(plan))
        .expect("stream states always serialize")
        .into_boxed_slice()
}

/// Decodes a quiet state; for bytes not written by [`quiet_state`] (a checkpoint's, checked by
/// [`crate::checkpoint::Restore::decode`] first).
pub(crate) fn decode_quiet(bytes: &[u8]) -> bincode::Result<StreamState> {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(bytes.len() as u64 * 4 + 4096)
        .deserialize(bytes)
}

fn woken_state(bytes: &[u8], plan: &Plan) -> StreamState {
    // Written by `quiet_state` in this process, or checked when the checkpoint was loaded:
    // failing here is a bug, not bad input.
    decode_quiet(bytes)
        .expect("quiet stream states decode")
        .woken(plan)
}

impl Engine {
    /// An engine for a plan.
    pub fn new(plan: &Plan) -> Self {
        Self {
            plan: plan.clone(),
            streams: FastMap::default(),
            quiet: FastMap::default(),
            advanced_to: None,
            kinds: KindWindows::default(),
        }
    }

    /// An engine resuming with the streams and kinds' combinations of a checkpoint taken at
    /// `time`.
    pub(crate) fn restored(
        plan: &Plan,
        (streams, quiet): (FastMap<String, StreamState>, FastMap<String, QuietState>),
        kinds: KindWindows,
        time: Millis,
    ) -> Self {
        Self {
            plan: plan.clone(),
            streams,
            quiet,
            advanced_to: Some(time),
            kinds,
        }
    }

    /// The state of every stream, encoded for a checkpoint with the settings it is valid under.
    pub fn snapshot(&self) -> Vec<u8> {
        let pipeline = crate::checkpoint::pipeline_identity(&self.plan);
        crate::checkpoint::encode(&(pipeline, &self.streams, &self.quiet, &self.kinds))
    }

    /// Emits every live row the streams hold as an insertion: after a restore, the sinks and the
    /// API learn the live rows of the checkpoint again.
    pub fn live_rows(&self, out: &mut RowChanges) {
        for state in self.streams.values() {
            state.live_rows(&self.plan, out);
        }
        for bytes in self.quiet.values() {
            woken_state(bytes, &self.plan).live_rows(&self.plan, out);
        }
        self.kinds.live_rows(out);
    }

    /// Adds one delta of a stream or of a configured kind.
    pub fn apply(&mut self, delta: Delta) {
        match delta {
            Delta::Stream(delta) => self.apply_stream(delta),
            Delta::Kind(delta) => self.kinds.apply(self.plan.kinds(), &delta),
        }
    }

    fn apply_stream(&mut self, delta: PaneDelta) {
        let state = match self.streams.get_mut(&delta.stream_id) {
            Some(state) => state,
            None => {
                let (id, state) = match self.quiet.remove_entry(&delta.stream_id) {
                    Some((id, bytes)) => {
                        let mut state = woken_state(&bytes, &self.plan);
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
                self.streams.entry(id).or_insert(state)
            }
        };
        let pane = delta.pane;
        if !state.apply(delta, &self.plan) {
            // Only possible when idle partitions moved the frontier past the lateness bound: the
            // delta's windows are final already and cannot change.
            debug!(stream = state.id(), pane, "delta below the horizon ignored");
        }
    }

    /// Emits the row changes that bring every stream up to `frontier` (None: input exhausted,
    /// every window final).
    pub fn advance(&mut self, frontier: Option<u64>, out: &mut RowChanges) {
        if frontier.is_none() {
            // Every stream's totals become final; quiet streams one at a time, so their states
            // are never all decoded at once.
            for (_, bytes) in self.quiet.drain() {
                woken_state(&bytes, &self.plan).advance(None, &self.plan, out);
            }
        }
        let mut quieted = Vec::new();
        for (id, state) in &mut self.streams {
            state.advance(frontier, &self.plan, out);
            if frontier.is_some() && state.is_quiet(&self.plan) {
                quieted.push(id.clone());
            }
        }
        for id in &quieted {
            if let Some((id, state)) = self.streams.remove_entry(id) {
                self.quiet.insert(id, quiet_state(state, &self.plan));
            }
        }
        // A map keeps its capacity when emptied, and states are large inline: after a wave of
        // streams went quiet, give back what the active ones no longer need.
        if !quieted.is_empty() && self.streams.capacity() > 4 * self.streams.len() + 64 {
            self.streams.shrink_to_fit();
        }
        self.kinds.advance(
            self.plan.kinds(),
            frontier,
            self.plan.final_delay,
            self.plan.live_rows,
            out,
        );
        self.advanced_to = frontier;
    }

    /// Streams an advance visits, and quiet streams.
    pub fn stream_counts(&self) -> (usize, usize) {
        (self.streams.len(), self.quiet.len())
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

    /// An engine and a pane aggregator on the default pipeline.
    fn default_engine() -> (Plan, Engine, PaneAggregator) {
        let plan = Plan::new(PipelineConfig::default()).unwrap();
        let engine = Engine::new(&plan);
        let analyzer = Arc::new(Analyzer::new(Lexicons::builtin()));
        let aggregator = PaneAggregator::new(plan.pane(), analyzer);
        (plan, engine, aggregator)
    }

    fn feed(engine: &mut Engine, aggregator: &mut PaneAggregator, events: &[(&str, Millis)]) {
        for (stream, ts) in events {
            let line = format!(
                r#"{{"type":"reaction","stream_id":"{stream}","user_id":"u","emoji":"🔥","ts":{ts}}}"#
            );
            let event = decode_json(line.as_bytes(), &DecodeContext::default()).unwrap();
            aggregator.add(event, *ts, None);
        }
        for (_, delta) in aggregator.drain() {
            engine.apply(Delta::Stream(delta));
        }
    }

    /// A stream whose viewers are still present (not timed out) stays active, so their expiry
    /// is compacted away before the stream is encoded.
    #[test]
    fn present_viewers_keep_a_stream_active_until_they_time_out() {
        let (_, mut engine, mut aggregator) = default_engine();
        let line = format!(
            r#"{{"type":"viewer","stream_id":"v","user_id":"u","action":"join","ts":{T0}}}"#
        );
        let event = decode_json(line.as_bytes(), &DecodeContext::default()).unwrap();
        aggregator.add(event, T0, None);
        for (_, delta) in aggregator.drain() {
            engine.apply(Delta::Stream(delta));
        }
        let mut out = RowChanges::new();
        for minutes in 1..=20 {
            engine.advance(Some(T0 + minutes * 60_000), &mut out);
            // The viewer times out after 10 minutes; the windows and the moment baseline are
            // done after about 4.
            let expected = if minutes < 10 {
                (1, 0)
            } else {
                engine.stream_counts()
            };
            assert_eq!(engine.stream_counts(), expected, "after {minutes} min");
        }
        assert_eq!(engine.stream_counts(), (0, 1));
    }

    /// A quiet stream keeps little beyond its totals, and when it wakes it scores moments against
    /// the baseline its K empty windows left, all zeros: a burst after a long silence fires at
    /// once, its z-score the burst itself (mean 0, deviation 0 floored at 1).
    #[test]
    fn a_woken_stream_scores_its_burst_against_a_baseline_of_zeros() {
        let (_, mut engine, mut aggregator) = default_engine();
        let aggregator = &mut aggregator;
        let mut out = RowChanges::new();
        feed(&mut engine, aggregator, &[("a", T0)]);
        let mut t = T0;
        while t < T0 + 3_600_000 {
            t += 60_000;
            engine.advance(Some(t), &mut out);
        }
        assert_eq!(engine.stream_counts(), (0, 1));
        let quiet_bytes = engine.quiet["a"].len();
        assert!(
            quiet_bytes < 400,
            "a quiet stream holds {quiet_bytes} bytes"
        );
        out.clear();
        let burst: Vec<(&str, Millis)> = (0..25).map(|i| ("a", t + 10_000 + i)).collect();
        feed(&mut engine, aggregator, &burst);
        engine.advance(Some(t + 120_000), &mut out);
        let moment = out
            .iter()
            .find_map(|(row, diff)| match row {
                Row::Moment {
                    moment,
                    is_final: true,
                } if *diff > 0 => Some(moment),
                _ => None,
            })
            .expect("the burst is a moment");
        assert_eq!(moment.metric, "reaction_rate");
        assert_eq!(moment.peak_value.0, 25.0);
        assert_eq!(moment.baseline_mean.0, 0.0);
        assert_eq!(moment.baseline_std.0, 0.0);
        assert_eq!(moment.zscore.0, 25.0);
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
        let (plan, mut engine, mut aggregator) = default_engine();
        let aggregator = &mut aggregator;
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
