//! The `WindowAnalytics` timely operator: exchanges events by stream, applies them once the
//! frontier passes their time, and emits row changes as a differential collection.

use std::collections::BTreeMap;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::delta::PaneDelta;
use super::engine::Engine;
use crate::plan::Plan;
use crate::rows::Row;

/// FNV-1a of the stream id: a fixed hash, so a stream lands on the same worker in every run.
pub fn stream_hash(stream_id: &str) -> u64 {
    stream_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Window analytics over a stream of pane deltas.
pub trait WindowAnalytics<'scope> {
    /// Every output table's rows (except dead letters) as a collection: live rows replaced as
    /// their windows change, final rows never retracted, retired state never shown as deletions.
    fn window_analytics(self, plan: &Plan) -> VecCollection<'scope, u64, Row, isize>;
}

impl<'scope> WindowAnalytics<'scope> for Stream<'scope, u64, Vec<PaneDelta>> {
    fn window_analytics(self, plan: &Plan) -> VecCollection<'scope, u64, Row, isize> {
        let mut engine = Engine::new(plan);
        let by_stream = Exchange::new(|delta: &PaneDelta| stream_hash(&delta.stream_id));
        let changes =
            self.unary_frontier(by_stream, "WindowAnalytics", move |capability, _info| {
                // Invariant: the held capability tracks the input frontier, so row changes can be
                // emitted as soon as the frontier moves and downstream frontiers follow the input's.
                let mut held = Some(capability);
                let mut stash: BTreeMap<u64, Vec<PaneDelta>> = BTreeMap::new();
                let mut changes = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|time, data| {
                        if let Some(time) = time.least() {
                            stash.entry(*time).or_default().append(data);
                        }
                    });
                    let Some(capability) = held.as_mut() else {
                        return;
                    };
                    let now = frontier.frontier().iter().min().copied();
                    if now == Some(*capability.time()) {
                        return;
                    }
                    let ready = match now {
                        Some(f) => {
                            let later = stash.split_off(&f);
                            std::mem::replace(&mut stash, later)
                        }
                        None => std::mem::take(&mut stash),
                    };
                    for delta in ready.values().flatten() {
                        engine.apply(delta);
                    }
                    engine.advance(now, &mut changes);
                    if let Some(f) = now {
                        capability.downgrade(&f);
                    }
                    let time = *capability.time();
                    output
                        .session(&*capability)
                        .give_iterator(changes.drain(..).map(|(row, diff)| (row, time, diff)));
                    if now.is_none() {
                        held = None;
                    }
                }
            });
        changes.as_collection()
    }
}
