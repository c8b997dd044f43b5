//! The one frontier-gated sink stage: gathers every worker's row changes, source positions and
//! checkpoint parts on one worker and, each time the frontier moves, hands the sinks one [`Flush`]
//! of everything complete below it, with the positions those changes reflect and the latest
//! checkpoint completed. When the run is paced, it also steers the sources (see
//! [`crowdpulse_dataflow::pacing`]): it holds its output capability at the frontier the sinks
//! have made durable and proposes the checkpoint rounds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crowdpulse_connectors::sink::{Flush, Sink};
use crowdpulse_dataflow::checkpoint::{Checkpoint, CheckpointPart};
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::pacing::{Pacing, Reply, Rounds, Steering};
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
    Reply(Reply),
}

/// How often a sink stage whose sinks lag looks whether they have caught up.
const DURABILITY_POLL: Duration = Duration::from_millis(10);

/// What the sink stage holds until the frontier passes it.
#[derive(Default)]
struct Gatherer {
    changes: BTreeMap<Millis, Vec<(Row, Millis, isize)>>,
    positions: BTreeMap<Millis, Vec<SourcePosition>>,
    parts: BTreeMap<Millis, Vec<CheckpointPart>>,
    /// The last source part of each worker whose input ended, by worker.
    finished: BTreeMap<usize, CheckpointPart>,
    /// The latest positions flushed.
    flushed: Positions,
}

impl Gatherer {
    /// Takes one batch of items, all at `time`.
    fn take(&mut self, time: Millis, items: &mut Vec<Gathered>, rounds: &mut Rounds) {
        // Nearly every item is a change: their vector is looked up once per batch, not per item
        // (an entry left empty is dropped with the others at the next flush).
        let changes = self.changes.entry(time).or_default();
        for item in items.drain(..) {
            match item {
                Gathered::Change(row, diff) => changes.push((row, time, diff)),
                Gathered::Position(position) => {
                    self.positions.entry(time).or_default().push(position)
                }
                Gathered::Part(part) if part.finished => {
                    self.finished.insert(part.worker, part);
                }
                Gathered::Part(part) => self.parts.entry(part.time).or_default().push(part),
                Gathered::Reply(reply) => rounds.reply(reply),
            }
        }
    }

    /// Everything complete below `frontier`.
    fn flush(&mut self, frontier: Option<Millis>) -> Flush {
        let ready = take_below(&mut self.changes, frontier);
        let ready_positions = take_below(&mut self.positions, frontier);
        let checkpoint = take_below(&mut self.parts, frontier)
            .into_iter()
            .filter_map(|(time, parts)| {
                let complete = Checkpoint::assemble(time, parts, &self.finished);
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
            self.flushed.advance(position);
        }
        let mut times = ready.into_values();
        let mut updates = times.next().unwrap_or_default();
        for mut more in times {
            updates.append(&mut more);
        }
        // Rows read from a source (chat messages, dead letters: most rows) are each inserted once
        // and never retracted, so they have nothing to consolidate; sorting them with the others
        // by whole row was the largest part of a flush. They are ordered by where they were read,
        // which keeps a flush deterministic whichever worker read them.
        let mut read: Vec<_> = updates
            .extract_if(.., |(row, _, _)| row.origin().is_some())
            .collect();
        read.sort_unstable_by(|(a, a_time, _), (b, b_time, _)| {
            (a_time, read_order(a)).cmp(&(b_time, read_order(b)))
        });
        consolidate_updates(&mut updates);
        updates.append(&mut read);
        // Time order, and within a time retractions first: a replaced row is -old +new.
        updates.sort_by_key(|(_, time, diff)| (*time, *diff));
        Flush {
            frontier,
            updates,
            positions: self.flushed.clone(),
            checkpoint,
        }
    }
}

/// A row read from a source by partition and offset first: integers decide nearly every
/// comparison.
fn read_order(row: &Row) -> Option<(u32, u64, &str)> {
    row.origin()
        .map(|(source, partition, offset)| (partition, offset, source))
}

/// Output of the analytics into sinks.
pub trait SinkStage<'scope> {
    /// Feeds `sinks` from worker `gather_on` (the other workers' copies stay unused). Changes are
    /// held until the frontier passes their time, then consolidated and flushed together with
    /// every position emitted below that frontier. A checkpoint is complete once the frontier
    /// has passed its time: every worker's parts are in by then, or never. Returns the steering
    /// of the sources, at times the sinks have made durable (empty unless `pacing`).
    fn sink_stage(
        self,
        positions: Stream<'scope, u64, Vec<SourcePosition>>,
        checkpoints: Stream<'scope, u64, Vec<CheckpointPart>>,
        replies: Stream<'scope, u64, Vec<Reply>>,
        sinks: Vec<Arc<dyn Sink>>,
        gather_on: usize,
        pacing: Option<Pacing>,
    ) -> Stream<'scope, u64, Vec<Steering>>;
}

impl<'scope> SinkStage<'scope> for VecCollection<'scope, u64, Row, isize> {
    fn sink_stage(
        self,
        positions: Stream<'scope, u64, Vec<SourcePosition>>,
        checkpoints: Stream<'scope, u64, Vec<CheckpointPart>>,
        replies: Stream<'scope, u64, Vec<Reply>>,
        sinks: Vec<Arc<dyn Sink>>,
        gather_on: usize,
        pacing: Option<Pacing>,
    ) -> Stream<'scope, u64, Vec<Steering>> {
        let scope = self.inner.scope();
        let gathering = scope.index() == gather_on;
        let sinks = if gathering { sinks } else { Vec::new() };
        let mut rounds = Rounds::new(pacing.and_then(|p| p.checkpoint_interval), scope.peers());
        let changes = self
            .inner
            .map(|(row, _time, diff)| Gathered::Change(row, diff));
        let positions = positions.map(Gathered::Position);
        let parts = checkpoints.map(Gathered::Part);
        let replies = replies.map(Gathered::Reply);
        // One place sees everything, so one flush can be one transaction with its positions.
        let to_gathering_worker = Exchange::new(move |_: &Gathered| gather_on as u64);
        let mut gatherer = Gatherer::default();
        let mut published: Option<Option<Millis>> = None;
        let gathered = changes.concat(positions).concat(parts).concat(replies);
        gathered.unary_frontier(to_gathering_worker, "SinkStage", move |capability, info| {
            let activator = scope.activator_for(info.address);
            // Only the gathering worker's copy steers, holding its capability at the durable frontier.
            let mut held = (gathering && pacing.is_some()).then_some(capability);
            move |(input, frontier), output| {
                input.for_each(|capability, data| {
                    if let Some(&time) = capability.least() {
                        gatherer.take(time, data, &mut rounds);
                    }
                });
                let now = frontier.frontier().first().copied();
                if published != Some(now) {
                    published = Some(now);
                    let flush = Arc::new(gatherer.flush(now));
                    for sink in &sinks {
                        sink.flush(&flush);
                    }
                }
                let Some(capability) = held.as_mut() else {
                    return;
                };
                let flushed_to = now.unwrap_or(Millis::MAX);
                let durable = sinks
                    .iter()
                    .filter_map(|sink| sink.durable_frontier())
                    .fold(flushed_to, Millis::min);
                if durable == Millis::MAX {
                    held = None;
                    return;
                }
                if durable > *capability.time() {
                    capability.downgrade(&durable);
                }
                let finished = |worker| gatherer.finished.contains_key(&worker);
                if let Some(steering) = rounds.next(now, finished) {
                    output.session(&*capability).give(steering);
                }
                if durable < flushed_to {
                    activator.activate_after(DURABILITY_POLL);
                } else if let Some(due) = rounds.due_in() {
                    activator.activate_after(due.max(DURABILITY_POLL));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowdpulse_dataflow::category::Category;
    use crowdpulse_dataflow::rows::{ChatMessage, DeadLetter, DeadLetterReason, WindowKey};

    fn chat(partition: u32, offset: u64) -> Row {
        Row::ChatMessage(Arc::new(ChatMessage {
            // Stream names in the opposite order of the offsets: a flush orders read rows by where
            // they were read, not as whole rows.
            stream_id: format!("s{}", 100 - offset),
            ts: 1,
            source: Arc::from("chat"),
            partition,
            offset,
            user_id: "u".into(),
            text: "gg".into(),
            sentiment: 0,
            category: Category::Other,
        }))
    }

    fn dead(partition: u32, offset: u64) -> Row {
        let reason = DeadLetterReason::Decode;
        Row::DeadLetter(DeadLetter::new(
            "chat",
            partition,
            offset,
            reason,
            "bad".into(),
            b"x",
        ))
    }

    fn emoji(count: u64) -> Row {
        let key = WindowKey {
            stream_id: Arc::from("s"),
            window: Arc::from("10s"),
            start: 0,
            end: 10,
        };
        Row::WindowEmoji {
            key,
            emoji: "🎉".into(),
            count,
            is_final: false,
        }
    }

    #[test]
    fn a_flush_consolidates_computed_rows_and_orders_read_rows_by_where_they_were_read() {
        let mut gatherer = Gatherer::default();
        gatherer.changes.insert(
            5,
            vec![
                (chat(1, 3), 5, 1),
                (emoji(3), 5, 1),
                (emoji(1), 5, -1),
                (dead(0, 9), 5, 1),
                (emoji(3), 5, -1),
                (emoji(2), 5, 1),
            ],
        );
        gatherer.changes.insert(
            3,
            vec![(chat(0, 7), 3, 1), (chat(0, 2), 3, 1), (emoji(1), 3, 1)],
        );
        gatherer.changes.insert(12, vec![(chat(0, 8), 12, 1)]);
        let flush = gatherer.flush(Some(10));
        let expected = vec![
            (emoji(1), 3, 1),
            (chat(0, 2), 3, 1),
            (chat(0, 7), 3, 1),
            (emoji(1), 5, -1),
            (emoji(2), 5, 1),
            (dead(0, 9), 5, 1),
            (chat(1, 3), 5, 1),
        ];
        assert_eq!(flush.updates, expected);
        assert_eq!(gatherer.changes.keys().collect::<Vec<_>>(), [&12]);
    }
}
