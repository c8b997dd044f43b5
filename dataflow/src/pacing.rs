//! Pacing: what the sink stage tells every source through a feedback edge, so that it holds in
//! any number of processes. The edge's frontier is the durable frontier plus a lead: a source
//! reads only while its capability is within it, so a lagging sink holds reading back. Its data
//! are the rounds by which the sources agree on checkpoint times.
//!
//! Why a round gives a consistent checkpoint time: on a proposal each source replies with its
//! capability and holds it there; the decided time T is the largest reply, so no source has
//! passed T, and each records its state when its capability first moves past T.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{OperatorInfo, OutputBuilder, OutputBuilderSession};
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, Stream};
use timely::progress::operate::FrontierInterest;
use timely::progress::Antichain;

use crate::event::Millis;

/// The lead of a run whose sinks never lag (checkpoints without a database): far enough to never
/// hold a source, small enough that no time plus it overflows.
pub const UNLIMITED_LEAD: Millis = Millis::MAX / 4;

/// How a run with a sink that makes rows durable at its own pace, or with checkpoints, is paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// How far (event time) the sources may run ahead of the durable frontier.
    pub lead: Millis,
    /// How often a checkpoint is proposed (None: never).
    pub checkpoint_interval: Option<Duration>,
}

/// The sink stage's messages to every source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Steering {
    /// A checkpoint is due: reply with your capability and hold it until the decision.
    Propose {
        /// The round.
        round: u64,
    },
    /// The checkpoint time of a round: at least every reply.
    Decide {
        /// The round.
        round: u64,
        /// The checkpoint time T.
        time: Millis,
    },
}

/// A source's answer to a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The round.
    pub round: u64,
    /// The replying worker.
    pub worker: usize,
    /// Its capability, where it now holds.
    pub capability: Millis,
}

/// A source's view of the steering.
#[derive(Debug)]
pub struct Gate {
    /// The feedback's frontier: the source reads only while its capability is at most this.
    limit: Millis,
    /// Rounds proposed and not yet replied to.
    proposals: Vec<u64>,
    /// The round replied to and not yet decided: the capability must not move.
    holding: Option<u64>,
    /// The decided checkpoint time the capability has not passed yet.
    checkpoint: Option<Millis>,
}

impl Gate {
    /// A gate that never holds (a run without pacing).
    pub fn open() -> Self {
        Self {
            limit: Millis::MAX,
            proposals: Vec::new(),
            holding: None,
            checkpoint: None,
        }
    }

    fn receive(&mut self, steering: Steering) {
        match steering {
            Steering::Propose { round } => self.proposals.push(round),
            Steering::Decide { round, time } => {
                if self.holding == Some(round) {
                    self.holding = None;
                }
                self.checkpoint = Some(time);
            }
        }
    }

    /// The replies owed for proposals received, from a source at `capability`; after them the
    /// source holds.
    pub fn replies(&mut self, worker: usize, capability: Millis) -> Vec<Reply> {
        let replies: Vec<Reply> = self
            .proposals
            .drain(..)
            .map(|round| Reply {
                round,
                worker,
                capability,
            })
            .collect();
        if let Some(last) = replies.last() {
            self.holding = Some(last.round);
        }
        replies
    }

    /// Whether a source at `capability` must not read now: it waits for a decision, or a sink
    /// lags by more than the lead.
    pub fn holds(&self, capability: Millis) -> bool {
        self.holding.is_some() || capability > self.limit
    }

    /// The decided checkpoint time within `[from, to)`, taken: a source moving its capability
    /// from `from` to `to` records its state there first.
    pub fn checkpoint_between(&mut self, from: Millis, to: Millis) -> Option<Millis> {
        let time = self.checkpoint.filter(|t| (from..to).contains(t))?;
        self.checkpoint = None;
        Some(time)
    }
}

/// Builds a source operator (as timely's `source`) that also hears `steering`, when given: its
/// logic sees the [`Gate`] with every message received and the feedback's frontier.
pub fn steered_source<'scope, D, B, L>(
    scope: Scope<'scope, u64>,
    name: &str,
    steering: Option<Stream<'scope, u64, Vec<Steering>>>,
    constructor: B,
) -> Stream<'scope, u64, Vec<D>>
where
    D: Clone + 'static,
    B: FnOnce(Capability<u64>, OperatorInfo) -> L,
    L: FnMut(&mut OutputBuilderSession<'_, u64, CapacityContainerBuilder<Vec<D>>>, &mut Gate)
        + 'static,
{
    let mut builder = OperatorBuilder::new(name.to_owned(), scope);
    let info = builder.operator_info();
    // The output first, so that the steering input added next is connected to no output: what
    // the source emits is bounded by its own capability, never by the sink stage's.
    let (output, stream) = builder.new_output::<Vec<D>>();
    let mut output = OutputBuilder::<_, CapacityContainerBuilder<Vec<D>>>::from(output);
    let mut steering = steering.map(|steering| {
        let unconnected: [(usize, Antichain<u64>); 0] = [];
        builder.new_input_connection(steering, Pipeline, unconnected)
    });
    if steering.is_some() {
        builder.set_notify_for(0, FrontierInterest::Always);
    }
    builder.build(move |mut capabilities| {
        let capability = capabilities.pop().expect("one output, one capability");
        let mut logic = constructor(capability, info);
        let mut gate = Gate::open();
        move |frontiers| {
            if let Some(input) = steering.as_mut() {
                input.for_each(|_, messages| {
                    for message in messages.drain(..) {
                        gate.receive(message);
                    }
                });
                gate.limit = frontiers[0]
                    .frontier()
                    .first()
                    .copied()
                    .unwrap_or(Millis::MAX);
            }
            logic(&mut output.activate(), &mut gate);
        }
    });
    stream
}

/// The sink stage's side of the checkpoint rounds.
#[derive(Debug)]
pub struct Rounds {
    interval: Option<Duration>,
    workers: usize,
    /// When the last round was proposed.
    proposed: Instant,
    round: u64,
    /// The round being collected: each replying worker's capability.
    replies: Option<BTreeMap<usize, Millis>>,
    /// The last decided time, until the frontier has passed it.
    outstanding: Option<Millis>,
}

impl Rounds {
    /// Rounds every `interval` (None: never) among `workers` sources.
    pub fn new(interval: Option<Duration>, workers: usize) -> Self {
        Self {
            interval,
            workers,
            proposed: Instant::now(),
            round: 0,
            replies: None,
            outstanding: None,
        }
    }

    /// Takes a source's reply.
    pub fn reply(&mut self, reply: Reply) {
        if let Some(replies) = self.replies.as_mut().filter(|_| reply.round == self.round) {
            replies.insert(reply.worker, reply.capability);
        }
    }

    /// What to tell the sources now, given the frontier the sinks were flushed to and whether a
    /// worker's source has finished (it replies to nothing more).
    pub fn next(
        &mut self,
        frontier: Option<Millis>,
        finished: impl Fn(usize) -> bool,
    ) -> Option<Steering> {
        if self
            .outstanding
            .is_some_and(|t| frontier.is_none_or(|f| f > t))
        {
            self.outstanding = None;
        }
        if let Some(replies) = &self.replies {
            let answered = (0..self.workers).all(|w| replies.contains_key(&w) || finished(w));
            if !answered {
                return None;
            }
            let decided = replies.values().copied().max();
            self.replies = None;
            self.outstanding = decided;
            let round = self.round;
            return decided.map(|time| Steering::Decide { round, time });
        }
        let interval = self.interval?;
        let due = self.outstanding.is_none()
            && self.proposed.elapsed() >= interval
            && !(0..self.workers).all(&finished);
        if !due {
            return None;
        }
        self.round += 1;
        self.proposed = Instant::now();
        self.replies = Some(BTreeMap::new());
        Some(Steering::Propose { round: self.round })
    }

    /// How long until the next proposal may be due (None: no rounds).
    pub fn due_in(&self) -> Option<Duration> {
        self.interval
            .map(|interval| interval.saturating_sub(self.proposed.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_decides_the_largest_reply_and_waits_for_every_source() {
        let mut rounds = Rounds::new(Some(Duration::ZERO), 3);
        let none = |_| false;
        assert_eq!(
            rounds.next(Some(0), none),
            Some(Steering::Propose { round: 1 })
        );
        rounds.reply(Reply {
            round: 1,
            worker: 0,
            capability: 4_000,
        });
        rounds.reply(Reply {
            round: 1,
            worker: 2,
            capability: 9_000,
        });
        assert_eq!(
            rounds.next(Some(1_000), none),
            None,
            "worker 1 has not replied"
        );
        // Worker 1's source finished instead of replying.
        let decided = rounds.next(Some(1_000), |w| w == 1);
        assert_eq!(
            decided,
            Some(Steering::Decide {
                round: 1,
                time: 9_000
            })
        );
        // No new round before the frontier has passed the decided time.
        assert_eq!(rounds.next(Some(9_000), none), None);
        assert_eq!(
            rounds.next(Some(9_001), none),
            Some(Steering::Propose { round: 2 })
        );
        // A late reply to an old round is ignored.
        rounds.reply(Reply {
            round: 1,
            worker: 1,
            capability: 1,
        });
        assert_eq!(rounds.replies.as_ref().map(BTreeMap::len), Some(0));
    }

    #[test]
    fn no_round_when_every_source_finished_or_none_are_wanted() {
        let mut never = Rounds::new(None, 1);
        assert_eq!(never.next(Some(0), |_| false), None);
        let mut rounds = Rounds::new(Some(Duration::ZERO), 2);
        assert_eq!(rounds.next(None, |_| true), None);
    }

    #[test]
    fn a_source_holds_from_its_reply_to_the_decision_and_records_once() {
        let mut gate = Gate::open();
        assert!(!gate.holds(5));
        gate.receive(Steering::Propose { round: 1 });
        let replies = gate.replies(2, 5);
        assert_eq!(
            replies,
            [Reply {
                round: 1,
                worker: 2,
                capability: 5
            }]
        );
        assert!(gate.holds(5));
        gate.receive(Steering::Decide { round: 1, time: 8 });
        assert!(!gate.holds(5));
        assert_eq!(gate.checkpoint_between(5, 8), None, "8 is not passed yet");
        assert_eq!(gate.checkpoint_between(5, 9), Some(8));
        assert_eq!(gate.checkpoint_between(9, 12), None);
        gate.limit = 10;
        assert!(
            !gate.holds(10) && gate.holds(11),
            "the lead holds beyond the limit"
        );
    }
}
