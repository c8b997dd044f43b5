//! The `WindowAnalytics` timely operator: exchanges events by stream, applies them once the
//! frontier passes their time, emits row changes as a differential collection, and records its
//! state at every checkpoint time the sources announce.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::Stream;

use super::delta::Delta;
use super::engine::Engine;
use crate::checkpoint::{CheckpointPart, Restore, Role};
use crate::event::Millis;
use crate::pending::take_below;
use crate::plan::Plan;
use crate::rows::Row;
use crate::source::SourceCounters;

/// FNV-1a of the stream id: a fixed hash, so a stream lands on the same worker in every run.
pub fn stream_hash(stream_id: &str) -> u64 {
    crate::hashing::fnv1a(stream_id.as_bytes())
}

/// What the analytics emit before the split into rows and checkpoint parts.
type AnalyticsItem = Result<(Row, Millis, isize), CheckpointPart>;

/// Window analytics over a stream of pane deltas.
pub trait WindowAnalytics<'scope> {
    /// Every output table's rows (except dead letters) as a collection: live rows replaced as
    /// their windows change, final rows never retracted, retired state never shown as deletions.
    /// `checkpoints` carries the checkpoint times (from the sources' parts); at each the operator
    /// records its state, returned as the second stream. With `restore`, it resumes from a
    /// checkpoint and first re-emits the live rows it held there. The operator keeps the stream
    /// gauges of `counters` up to date with the streams it holds.
    fn window_analytics(
        self,
        plan: &Plan,
        checkpoints: Stream<'scope, u64, Vec<Millis>>,
        restore: Option<Arc<Restore>>,
        counters: Arc<SourceCounters>,
    ) -> (
        VecCollection<'scope, u64, Row, isize>,
        Stream<'scope, u64, Vec<CheckpointPart>>,
    );
}

impl<'scope> WindowAnalytics<'scope> for Stream<'scope, u64, Vec<Delta>> {
    fn window_analytics(
        self,
        plan: &Plan,
        checkpoints: Stream<'scope, u64, Vec<Millis>>,
        restore: Option<Arc<Restore>>,
        counters: Arc<SourceCounters>,
    ) -> (
        VecCollection<'scope, u64, Row, isize>,
        Stream<'scope, u64, Vec<CheckpointPart>>,
    ) {
        let (index, peers) = (self.scope().index(), self.scope().peers());
        let mut engine = match &restore {
            Some(restore) => Engine::restored(
                plan,
                restore.take_streams(index, peers),
                restore.take_kinds(index, peers),
                restore.time,
            ),
            None => Engine::new(plan),
        };
        let mut changes = Vec::new();
        if restore.is_some() {
            engine.live_rows(&mut changes);
        }
        let start = restore.as_ref().map(|r| r.time);
        let by_owner = Exchange::new(Delta::owner_hash);
        let items: Stream<'scope, u64, Vec<AnalyticsItem>> = self.binary_frontier(
            checkpoints.broadcast(),
            by_owner,
            Pipeline,
            "WindowAnalytics",
            move |mut capability, _info| {
                // Invariant: the held capability tracks the input frontier, so row changes can be
                // emitted as soon as the frontier moves and downstream frontiers follow the input's.
                // A restored engine has advanced to its checkpoint time already.
                if let Some(start) = start {
                    capability.downgrade(&start);
                }
                let mut held = Some(capability);
                let mut stash: BTreeMap<u64, Vec<Delta>> = BTreeMap::new();
                let mut due: BTreeSet<Millis> = BTreeSet::new();
                // The time of the last checkpoint recorded.
                let mut recorded_at: Option<Millis> = None;
                let mut gauges = StreamGauges::new(counters);
                move |(deltas, deltas_frontier), (times, times_frontier), output| {
                    deltas.for_each(|time, data| {
                        if let Some(time) = time.least() {
                            stash.entry(*time).or_default().append(data);
                        }
                    });
                    times.for_each(|_, data| due.extend(data.drain(..)));
                    let Some(capability) = held.as_mut() else {
                        return;
                    };
                    // Never behind the capability: a restored run starts at its checkpoint time.
                    let now = deltas_frontier
                        .frontier()
                        .iter()
                        .chain(times_frontier.frontier().iter())
                        .min()
                        .map(|f| (*f).max(*capability.time()));
                    if now == Some(*capability.time()) && changes.is_empty() {
                        return;
                    }
                    // Each checkpoint time the frontier passed is a stop: the state recorded
                    // there reflects exactly the deltas before it.
                    let stops = due
                        .iter()
                        .copied()
                        .filter(|t| now.is_none_or(|f| *t < f))
                        .map(Some)
                        .chain([now]);
                    let mut recorded = Vec::new();
                    for stop in stops.collect::<Vec<_>>() {
                        let ready = take_below(&mut stash, stop);
                        for delta in ready.into_values().flatten() {
                            engine.apply(delta);
                        }
                        engine.advance(stop, &mut changes);
                        match stop {
                            Some(f) => capability.downgrade(&f),
                            // The input ended right after a checkpoint at this time: what
                            // follows is not part of its state, so it goes out just after it.
                            None if recorded_at == Some(*capability.time()) => {
                                let after = *capability.time() + 1;
                                capability.downgrade(&after);
                            }
                            None => {}
                        }
                        let time = *capability.time();
                        let rows = changes
                            .drain(..)
                            .map(|(row, diff)| AnalyticsItem::Ok((row, time, diff)));
                        output.session(&*capability).give_iterator(rows);
                        if stop != now {
                            due.remove(&time);
                            recorded_at = Some(time);
                            recorded.push(Err(CheckpointPart {
                                time,
                                worker: index,
                                workers: peers,
                                role: Role::Analytics,
                                positions: Vec::new(),
                                state: engine.snapshot(),
                                finished: false,
                            }));
                            output
                                .session(&*capability)
                                .give_iterator(recorded.drain(..));
                        }
                    }
                    gauges.report(engine.stream_counts());
                    if now.is_none() {
                        held = None;
                    }
                }
            },
        );
        let (rows, parts) = items.ok_err(|item: AnalyticsItem| item);
        (rows.as_collection(), parts)
    }
}

/// One worker's share of the process's stream gauges: the workers add their changes, so the
/// gauges hold the sum without a slot per worker.
struct StreamGauges {
    counters: Arc<SourceCounters>,
    reported: (usize, usize),
}

impl StreamGauges {
    fn new(counters: Arc<SourceCounters>) -> Self {
        Self {
            counters,
            reported: (0, 0),
        }
    }

    /// Reports this worker's (active, quiet) stream counts.
    fn report(&mut self, (active, quiet): (usize, usize)) {
        let add = |gauge: &AtomicU64, now: usize, before: usize| {
            if now != before {
                // Wrapping: a decrease is added as its two's complement.
                gauge.fetch_add((now as u64).wrapping_sub(before as u64), Ordering::Relaxed);
            }
        };
        add(&self.counters.streams_active, active, self.reported.0);
        add(&self.counters.streams_quiet, quiet, self.reported.1);
        self.reported = (active, quiet);
    }
}

impl Drop for StreamGauges {
    /// A dataflow that ends (a bounded run, a cluster stopping) no longer holds its streams.
    fn drop(&mut self) {
        self.report((0, 0));
    }
}
