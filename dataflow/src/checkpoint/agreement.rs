//! Where a process's sources agree on checkpoint times (see [`CheckpointControl`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::event::Millis;

#[derive(Debug)]
struct Agreement {
    /// When the last checkpoint was started.
    started: Instant,
    /// The checkpoint time the sources are working towards.
    next: Option<Millis>,
    /// Per source worker: its capability (None before it reported, or after its input ended).
    capabilities: Vec<Option<Millis>>,
    /// Per source worker: whether it has recorded its state at `next` (or will never).
    recorded: Vec<bool>,
}

/// Where a process's sources agree on checkpoint times: every `interval`, the first source
/// to move picks T = the largest capability of any source, so no source has emitted anything at
/// T or later yet; each then records its state when its capability passes T.
///
/// Process-local, like the throttle: a cluster of processes needs the agreement carried by the
/// dataflow instead (issue #12).
#[derive(Debug)]
pub struct CheckpointControl {
    interval: Duration,
    agreement: Mutex<Agreement>,
}

impl CheckpointControl {
    /// Checkpoints every `interval`, for `workers` source workers starting at `start`.
    pub fn new(interval: Duration, workers: usize, start: Millis) -> Arc<Self> {
        Arc::new(Self {
            interval,
            agreement: Mutex::new(Agreement {
                started: Instant::now(),
                next: None,
                capabilities: vec![Some(start); workers],
                recorded: vec![false; workers],
            }),
        })
    }

    /// Called by source `worker` about to move its capability from `from` to `to`: returns the
    /// checkpoint time it must record its state at first, if any (`from <= T < to`).
    pub fn crossing(&self, worker: usize, from: Millis, to: Millis) -> Option<Millis> {
        let mut agreement = self.agreement.lock().unwrap_or_else(|p| p.into_inner());
        if agreement.next.is_none() && agreement.started.elapsed() >= self.interval {
            let highest = agreement.capabilities.iter().flatten().copied().max();
            agreement.next = Some(highest.unwrap_or(from).max(from));
            agreement.started = Instant::now();
            // A source whose input ended records nothing.
            agreement.recorded = agreement.capabilities.iter().map(Option::is_none).collect();
        }
        agreement.capabilities[worker] = Some(to);
        let time = agreement.next.filter(|t| (from..to).contains(t))?;
        if agreement.recorded[worker] {
            return None;
        }
        agreement.recorded[worker] = true;
        if agreement.recorded.iter().all(|r| *r) {
            agreement.next = None;
        }
        Some(time)
    }

    /// Source `worker`'s input ended: it records nothing more.
    pub fn finished(&self, worker: usize) {
        let mut agreement = self.agreement.lock().unwrap_or_else(|p| p.into_inner());
        agreement.capabilities[worker] = None;
        agreement.recorded[worker] = true;
        if agreement.recorded.iter().all(|r| *r) {
            agreement.next = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_agree_on_a_time_none_of_them_has_passed() {
        // Before the interval is up, nothing; then worker 1 is ahead at 5_000 and worker 0
        // moves first, from 1_000 to 2_000: T = 5_000, which neither has passed.
        let control = CheckpointControl::new(Duration::from_millis(50), 2, 0);
        assert_eq!(control.crossing(1, 0, 5_000), None);
        assert_eq!(control.crossing(0, 0, 1_000), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(control.crossing(0, 1_000, 2_000), None);
        // T = 5_000: worker 0 records when it passes it, worker 1 when it moves on.
        assert_eq!(control.crossing(0, 2_000, 6_000), Some(5_000));
        assert_eq!(control.crossing(0, 6_000, 7_000), None);
        assert_eq!(control.crossing(1, 5_000, 5_100), Some(5_000));
    }

    #[test]
    fn a_finished_source_does_not_hold_the_next_checkpoint() {
        let control = CheckpointControl::new(Duration::ZERO, 2, 0);
        assert_eq!(control.crossing(0, 0, 100), Some(0));
        control.finished(1);
        // The checkpoint at 0 is settled; the next one can start.
        assert_eq!(control.crossing(0, 100, 200), Some(100));
    }
}
