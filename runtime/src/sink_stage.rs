//! The one frontier-gated sink stage: gathers every worker's row changes, source positions and
//! checkpoint parts on worker 0 and, each time the frontier moves, hands the sinks one [`Flush`]
//! of everything complete below it, with the positions those changes reflect and the latest
//! checkpoint completed.

use std::collections::BTreeMap;
use std::sync::Arc;

use crowdpulse_connectors::sink::{Flush, Sink};
use crowdpulse_dataflow::checkpoint::{Checkpoint, CheckpointPart};
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::pending::take_below;
use crowdpulse_dataflow::progress::{Positions, SourcePosition};
use crowdpulse_dataflow::rows::Row;
use differential_dataflow::consolidation::consolidate_updates;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;
use tracing::warn;

/// One item reaching the sink stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Gathered {
    Change(Row, isize),
    Position(SourcePosition),
    Part(CheckpointPart),
}

/// Output of the analytics into sinks.
pub trait SinkStage<'scope> {
    /// Feeds `sinks` from worker 0 (the other workers' copies stay unused). Changes are
    /// held until the frontier passes their time, then consolidated and flushed together with
    /// every position emitted below that frontier. A checkpoint is complete once the frontier
    /// has passed its time: every worker's parts are in by then, or never.
    fn sink_stage(
        self,
        positions: Stream<'scope, u64, Vec<SourcePosition>>,
        checkpoints: Stream<'scope, u64, Vec<CheckpointPart>>,
        sinks: Vec<Arc<dyn Sink>>,
    );
}

impl<'scope> SinkStage<'scope> for VecCollection<'scope, u64, Row, isize> {
    fn sink_stage(
        self,
        positions: Stream<'scope, u64, Vec<SourcePosition>>,
        checkpoints: Stream<'scope, u64, Vec<CheckpointPart>>,
        sinks: Vec<Arc<dyn Sink>>,
    ) {
        let sinks = if self.inner.scope().index() == 0 {
            sinks
        } else {
            Vec::new()
        };
        let changes = self
            .inner
            .map(|(row, _time, diff)| Gathered::Change(row, diff));
        let positions = positions.map(Gathered::Position);
        let parts = checkpoints.map(Gathered::Part);
        // One place sees everything, so one flush can be one transaction with its positions.
        let to_first_worker = Exchange::new(|_: &Gathered| 0);
        let mut pending: BTreeMap<Millis, Vec<(Row, Millis, isize)>> = BTreeMap::new();
        let mut pending_positions: BTreeMap<Millis, Vec<SourcePosition>> = BTreeMap::new();
        let mut pending_parts: BTreeMap<Millis, Vec<CheckpointPart>> = BTreeMap::new();
        // The last source part of each worker whose input ended, by worker.
        let mut finished: BTreeMap<usize, CheckpointPart> = BTreeMap::new();
        let mut flushed = Positions::default();
        let mut published: Option<Option<Millis>> = None;
        changes.concat(positions).concat(parts).sink(
            to_first_worker,
            "SinkStage",
            move |(input, frontier)| {
                input.for_each(|capability, data| {
                    let Some(&time) = capability.least() else {
                        return;
                    };
                    for item in data.drain(..) {
                        match item {
                            Gathered::Change(row, diff) => {
                                pending.entry(time).or_default().push((row, time, diff))
                            }
                            Gathered::Position(position) => {
                                pending_positions.entry(time).or_default().push(position)
                            }
                            Gathered::Part(part) if part.finished => {
                                finished.insert(part.worker, part);
                            }
                            Gathered::Part(part) => {
                                pending_parts.entry(part.time).or_default().push(part)
                            }
                        }
                    }
                });
                let now = frontier.frontier().first().copied();
                if published == Some(now) {
                    return;
                }
                published = Some(now);
                let ready = take_below(&mut pending, now);
                let ready_positions = take_below(&mut pending_positions, now);
                let checkpoint = take_below(&mut pending_parts, now)
                    .into_iter()
                    .filter_map(|(time, parts)| {
                        let complete = Checkpoint::assemble(time, parts, &finished);
                        if complete.is_none() {
                            warn!(
                                time,
                                "checkpoint incomplete (a worker's part is missing); skipped"
                            );
                        }
                        complete
                    })
                    .next_back()
                    .map(Arc::new);
                for position in ready_positions.values().flatten() {
                    flushed.advance(position);
                }
                let mut updates: Vec<_> = ready.into_values().flatten().collect();
                consolidate_updates(&mut updates);
                // Time order, and within a time retractions first: a replaced row is -old +new.
                updates.sort_by_key(|(_, time, diff)| (*time, *diff));
                let flush = Flush {
                    frontier: now,
                    updates,
                    positions: flushed.clone(),
                    checkpoint,
                };
                for sink in &sinks {
                    sink.flush(&flush);
                }
            },
        );
    }
}
