//! Concurrent viewers per stream: presence (join/heartbeat/leave) as a step function of event
//! time, overridden by reported viewer-count gauges, with state compacted below a horizon.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

use serde::{Deserialize, Serialize};

use crate::event::{Millis, PresenceAction};
use crate::hashing::FastMap;

/// Orders same-millisecond actions of one user deterministically: a leave wins over a heartbeat,
/// which wins over a join, whatever order the records arrived in.
pub(crate) fn action_rank(action: PresenceAction) -> u8 {
    match action {
        PresenceAction::Join => 0,
        PresenceAction::Heartbeat => 1,
        PresenceAction::Leave => 2,
    }
}

/// Viewers of one stream.
///
/// Invariant: `base + sum(deltas <= t)` is the number of users present at `t` for every `t` at or
/// after the last compaction horizon; records older than that horizon never arrive (they would
/// be late), so compaction loses nothing observable.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Viewers {
    /// Per user: (ts, rank) -> present after that action. Below the horizon only the latest entry
    /// is kept, as the state carried into the horizon.
    users: FastMap<String, BTreeMap<(Millis, u8), bool>>,
    /// Change of the present count at each time.
    deltas: BTreeMap<Millis, i64>,
    /// Present count contributed by deltas folded in by compaction.
    base: i64,
    /// Gauge readings; the largest value wins among readings at the same millisecond.
    gauge: BTreeMap<Millis, u64>,
}

impl Viewers {
    /// Users with presence history kept.
    #[cfg(test)]
    pub(crate) fn tracked_users(&self) -> usize {
        self.users.len()
    }

    fn add_delta(&mut self, at: Millis, delta: i64) {
        let entry = self.deltas.entry(at).or_insert(0);
        *entry += delta;
        if *entry == 0 {
            self.deltas.remove(&at);
        }
    }

    /// Records a presence action.
    pub(crate) fn presence(&mut self, user_id: &str, ts: Millis, action: PresenceAction) {
        let key = (ts, action_rank(action));
        let present = action.is_present();
        let history = match self.users.get_mut(user_id) {
            Some(h) => h,
            None => self.users.entry(user_id.to_owned()).or_default(),
        };
        if history.contains_key(&key) {
            return;
        }
        let later = history
            .range((Excluded(key), Unbounded))
            .next()
            .map(|(k, _)| k.0);
        let before = history.range(..key).next_back().is_some_and(|(_, p)| *p);
        history.insert(key, present);
        if later == Some(ts) || before == present {
            return; // dominated by a higher-ranked action at the same ms, or no change
        }
        let delta = if present { 1 } else { -1 };
        self.add_delta(ts, delta);
        if let Some(later) = later {
            self.add_delta(later, -delta);
        }
    }

    /// Records a gauge reading.
    pub(crate) fn gauge(&mut self, ts: Millis, count: u64) {
        let entry = self.gauge.entry(ts).or_insert(count);
        *entry = (*entry).max(count);
    }

    /// A read-only step-function view for answering many window queries at once: building it
    /// is one pass over the changes, each query then costs a binary search plus the changes
    /// inside the window.
    pub(crate) fn timeline(&self) -> Timeline {
        let mut count = self.base;
        let presence = self
            .deltas
            .iter()
            .map(|(t, d)| {
                count += d;
                (*t, count)
            })
            .collect();
        let gauge = self.gauge.iter().map(|(t, v)| (*t, *v)).collect();
        Timeline {
            base: self.base,
            presence,
            gauge,
        }
    }

    /// Folds everything before `horizon` into carried state.
    pub(crate) fn compact(&mut self, horizon: Millis) {
        self.users.retain(|_, history| {
            let mut below = history.range(..(horizon, 0));
            let (first, second) = (below.next(), below.next());
            if second.is_none() {
                // At most the carried entry lies below the horizon: only a lone "absent" can go.
                return !(history.len() == 1 && first.is_some_and(|(_, present)| !present));
            }
            let keep = history.split_off(&(horizon, 0));
            let carried = history.pop_last();
            *history = keep;
            if let Some((key, present)) = carried {
                if present || !history.is_empty() {
                    history.insert(key, present);
                }
            }
            !history.is_empty()
        });
        let kept = self.deltas.split_off(&horizon);
        self.base += self.deltas.values().sum::<i64>();
        self.deltas = kept;
        let kept = self.gauge.split_off(&horizon);
        if let Some((ts, v)) = self.gauge.pop_last() {
            self.gauge = kept;
            self.gauge.insert(ts, v);
        } else {
            self.gauge = kept;
        }
    }
}

/// Viewers over time, as sorted change points.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    base: i64,
    /// (time, present count from that time on).
    presence: Vec<(Millis, i64)>,
    /// (time, gauge reading from that time on).
    gauge: Vec<(Millis, u64)>,
}

impl Timeline {
    fn viewers_at(&self, t: Millis) -> u64 {
        let at = self.gauge.partition_point(|(ts, _)| *ts <= t);
        if at > 0 {
            return self.gauge[at - 1].1;
        }
        let at = self.presence.partition_point(|(ts, _)| *ts <= t);
        let present = if at == 0 {
            self.base
        } else {
            self.presence[at - 1].1
        };
        present.max(0) as u64
    }

    /// (peak, end): the most viewers at any instant of `[start, end)` and the viewers at
    /// `end - 1`. A gauge reading at or before an instant takes precedence over presence.
    pub(crate) fn peak_and_end(&self, start: Millis, end: Millis) -> (u64, u64) {
        let inside = |points: &[(Millis, u64)]| -> Vec<Millis> {
            let from = points.partition_point(|(t, _)| *t <= start);
            let to = points.partition_point(|(t, _)| *t < end);
            points[from..to].iter().map(|(t, _)| *t).collect()
        };
        let from = self.presence.partition_point(|(t, _)| *t <= start);
        let to = self.presence.partition_point(|(t, _)| *t < end);
        if self.gauge.is_empty() {
            // Presence only: the counts after each change are stored, no lookups needed.
            let peak = self.presence[from..to]
                .iter()
                .map(|(_, c)| (*c).max(0) as u64);
            return (
                peak.fold(self.viewers_at(start), u64::max),
                self.viewers_at(end - 1),
            );
        }
        let peak = self.presence[from..to]
            .iter()
            .map(|(t, _)| *t)
            .chain(inside(&self.gauge))
            .map(|t| self.viewers_at(t))
            .fold(self.viewers_at(start), u64::max);
        (peak, self.viewers_at(end - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PresenceAction::*;

    #[test]
    fn out_of_order_presence_gives_the_same_timeline() {
        let actions = [
            ("a", 10, Join),
            ("b", 20, Join),
            ("a", 30, Leave),
            ("b", 30, Heartbeat),
            ("a", 40, Join),
            ("b", 50, Leave),
        ];
        let mut forward = Viewers::default();
        let mut backward = Viewers::default();
        for (u, t, a) in actions {
            forward.presence(u, t, a);
        }
        for (u, t, a) in actions.iter().rev() {
            backward.presence(u, *t, *a);
        }
        for (s, e) in [(0, 15), (10, 35), (30, 45), (45, 100), (0, 100)] {
            assert_eq!(
                forward.timeline().peak_and_end(s, e),
                backward.timeline().peak_and_end(s, e),
                "{s}..{e}"
            );
        }
        assert_eq!(forward.timeline().peak_and_end(0, 100), (2, 1));
        assert_eq!(forward.timeline().peak_and_end(30, 40), (1, 1));
    }

    #[test]
    fn leave_wins_a_tie_and_gauges_override_presence() {
        let mut v = Viewers::default();
        v.presence("a", 10, Leave);
        v.presence("a", 10, Join);
        assert_eq!(v.timeline().peak_and_end(0, 20), (0, 0));
        v.presence("b", 5, Join);
        v.gauge(15, 100);
        v.gauge(15, 90);
        assert_eq!(v.timeline().peak_and_end(0, 20), (100, 100));
        assert_eq!(v.timeline().peak_and_end(0, 15), (1, 1));
    }

    #[test]
    fn compaction_preserves_counts_after_the_horizon() {
        let mut v = Viewers::default();
        for (i, u) in ["a", "b", "c"].iter().enumerate() {
            v.presence(u, i as u64 * 10, Join);
        }
        v.presence("b", 25, Leave);
        v.presence("c", 35, Heartbeat);
        let before = v.timeline().peak_and_end(30, 60);
        v.compact(30);
        assert_eq!(v.timeline().peak_and_end(30, 60), before);
        assert!(
            !v.users.contains_key("b"),
            "users who left before the horizon are dropped"
        );
        v.presence("b", 40, Join);
        assert_eq!(v.timeline().peak_and_end(30, 60), (3, 3));
    }
}
