//! The analytics of all streams owned by one worker: pane deltas in, row changes out. Pure and
//! deterministic; the timely operator only feeds it deltas and frontiers.

use tracing::debug;

use super::delta::PaneDelta;
use super::stream_state::{RowChanges, StreamState};
use crate::hashing::FastMap;
use crate::plan::Plan;

/// Window analytics over the streams of one worker.
pub struct Engine {
    plan: Plan,
    streams: FastMap<String, StreamState>,
}

impl Engine {
    /// An engine for a plan.
    pub fn new(plan: &Plan) -> Self {
        Self {
            plan: plan.clone(),
            streams: FastMap::default(),
        }
    }

    /// An engine resuming with the streams of a checkpoint.
    pub(crate) fn restored(plan: &Plan, streams: FastMap<String, StreamState>) -> Self {
        Self {
            plan: plan.clone(),
            streams,
        }
    }

    /// The state of every stream, encoded for a checkpoint with the settings it is valid under.
    pub fn snapshot(&self) -> Vec<u8> {
        let pipeline = crate::checkpoint::pipeline_identity(&self.plan);
        crate::checkpoint::encode(&(pipeline, &self.streams))
    }

    /// Emits every live row the streams hold as an insertion: after a restore, the sinks and the
    /// API learn the live rows of the checkpoint again.
    pub fn live_rows(&self, out: &mut RowChanges) {
        for state in self.streams.values() {
            state.live_rows(&self.plan, out);
        }
    }

    /// Adds one pane delta.
    pub fn apply(&mut self, delta: &PaneDelta) {
        let state = match self.streams.get_mut(&delta.stream_id) {
            Some(state) => state,
            None => self
                .streams
                .entry(delta.stream_id.clone())
                .or_insert_with(|| StreamState::new(delta.stream_id.clone(), &self.plan)),
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
        for state in self.streams.values_mut() {
            state.advance(frontier, &self.plan, out);
        }
    }
}
