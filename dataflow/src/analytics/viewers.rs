//! Concurrent viewers per stream: presence (join/heartbeat/leave) as a step function of event
//! time, overridden by reported viewer-count gauges, with state compacted below a horizon. A
//! viewer whose latest join or heartbeat is `viewer_timeout` old counts as gone (and is
//! forgotten once that is below the horizon), so a client that vanished without a `leave`
//! neither counts nor is kept forever.

use std::collections::BTreeMap;

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

    /// Records a presence action; `timeout` (None: never) is how long a join or heartbeat
    /// keeps its user present without another.
    pub(crate) fn presence(
        &mut self,
        user_id: &str,
        ts: Millis,
        action: PresenceAction,
        timeout: Option<Millis>,
    ) {
        let key = (ts, action_rank(action));
        let history = match self.users.get_mut(user_id) {
            Some(h) => h,
            None => self.users.entry(user_id.to_owned()).or_default(),
        };
        if history.contains_key(&key) {
            return;
        }
        let last = history
            .last_key_value()
            .map(|(&(ts, _), &present)| (ts, present));
        if last.is_none_or(|(last_ts, _)| last_ts < ts) {
            // The usual case, a user's actions in time order: only the end of the history moves.
            history.insert(key, action.is_present());
            for (at, delta) in appended_changes(last, ts, action.is_present(), timeout)
                .into_iter()
                .flatten()
            {
                self.add_delta(at, delta);
            }
            return;
        }
        // An action changes the presence intervals of its neighbours only, but expiries make
        // that bookkeeping intricate: the user's whole (horizon-bounded) history is re-derived
        // and only the difference applied.
        let before = presence_changes(history, timeout);
        history.insert(key, action.is_present());
        let after = presence_changes(history, timeout);
        for (at, delta) in before {
            self.add_delta(at, -delta);
        }
        for (at, delta) in after {
            self.add_delta(at, delta);
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

    /// Whether no viewer is present or can still change the count: only a gauge reading may be
    /// carried. Present viewers keep a stream active until they time out and are compacted away.
    pub(crate) fn is_settled(&self) -> bool {
        self.users.is_empty() && self.deltas.is_empty()
    }

    /// Folds everything before `horizon` into carried state: of a user's actions below it only
    /// the latest is kept, and only while it still makes the user present at the horizon.
    pub(crate) fn compact(&mut self, horizon: Millis, timeout: Option<Millis>) {
        let still_present = |(ts, _): (Millis, u8), present: bool| {
            present && timeout.map_or(Millis::MAX, |t| ts.saturating_add(t)) > horizon
        };
        self.users.retain(|_, history| {
            // In place: every advance visits every user, and nearly always only their latest
            // action lies below the horizon (splitting every map cost more than the rest).
            if let Some((&latest, &present)) = history.range(..(horizon, 0)).next_back() {
                while history
                    .first_key_value()
                    .is_some_and(|(first, _)| *first < latest)
                {
                    history.pop_first();
                }
                if !still_present(latest, present) {
                    history.remove(&latest);
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

/// The changes of the present count one user's actions make: +1 where they become present, -1
/// where they leave or their latest join or heartbeat times out. Of actions at the same
/// millisecond only the highest ranked counts.
fn presence_changes(
    history: &BTreeMap<(Millis, u8), bool>,
    timeout: Option<Millis>,
) -> Vec<(Millis, i64)> {
    let mut changes = Vec::new();
    let mut present_until: Option<Millis> = None;
    let mut actions = history.iter().peekable();
    while let Some((&(ts, _), &present)) = actions.next() {
        if actions.peek().is_some_and(|((next, _), _)| *next == ts) {
            continue;
        }
        if let Some(until) = present_until.filter(|until| *until <= ts) {
            changes.push((until, -1));
            present_until = None;
        }
        if present {
            if present_until.is_none() {
                changes.push((ts, 1));
            }
            present_until = Some(timeout.map_or(Millis::MAX, |t| ts.saturating_add(t)));
        } else if present_until.take().is_some() {
            changes.push((ts, -1));
        }
    }
    if let Some(until) = present_until.filter(|until| *until < Millis::MAX) {
        changes.push((until, -1));
    }
    changes
}

/// The difference in [`presence_changes`] that an action at `ts` makes when it comes after every
/// action of the user's history, whose last is `last` (time, present after it). That last action
/// alone decides how the history ends: present until its expiry, or gone. So the new action
/// only replaces that expiry: by its own (a join or heartbeat while present), by its time (a
/// leave while present), or starts a new presence (a join or heartbeat once gone).
fn appended_changes(
    last: Option<(Millis, bool)>,
    ts: Millis,
    present: bool,
    timeout: Option<Millis>,
) -> [Option<(Millis, i64)>; 3] {
    let expiry = |from: Millis| timeout.map_or(Millis::MAX, |t| from.saturating_add(t));
    let finite = |until: Millis| (until < Millis::MAX).then_some(until);
    let present_until = last
        .filter(|(_, was_present)| *was_present)
        .map(|(last_ts, _)| expiry(last_ts))
        .filter(|until| *until > ts);
    let new_expiry = present.then(|| finite(expiry(ts))).flatten();
    match present_until {
        Some(until) => [
            finite(until).map(|until| (until, 1)),
            (!present).then_some((ts, -1)),
            new_expiry.map(|until| (until, -1)),
        ],
        None => [
            present.then_some((ts, 1)),
            new_expiry.map(|until| (until, -1)),
            None,
        ],
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

    /// The change points kept equal those derived from each user's whole history, whatever
    /// the order of the actions (in order they take the appending path, out of order the
    /// re-deriving one) and the timeout.
    #[test]
    fn deltas_match_the_histories_whatever_the_order() {
        use proptest::prelude::*;
        let action = (0usize..3, 0u64..60, 0u8..3).prop_map(|(user, ts, rank)| {
            let action = [Join, Heartbeat, Leave][rank as usize];
            (["a", "b", "c"][user], ts, action)
        });
        let actions = prop::collection::vec(action, 0..40);
        let timeout = prop::option::of(1u64..30);
        proptest!(
            ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() },
            |(actions in actions, timeout in timeout, sorted in any::<bool>())| {
                let mut actions = actions;
                if sorted {
                    actions.sort_by_key(|(_, ts, _)| *ts);
                }
                let mut viewers = Viewers::default();
                for (user, ts, action) in actions {
                    viewers.presence(user, ts, action, timeout);
                }
                let mut expected: BTreeMap<Millis, i64> = BTreeMap::new();
                for history in viewers.users.values() {
                    for (at, delta) in presence_changes(history, timeout) {
                        *expected.entry(at).or_default() += delta;
                    }
                }
                expected.retain(|_, delta| *delta != 0);
                prop_assert_eq!(&viewers.deltas, &expected);
            }
        );
    }

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
            forward.presence(u, t, a, None);
        }
        for (u, t, a) in actions.iter().rev() {
            backward.presence(u, *t, *a, None);
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
        v.presence("a", 10, Leave, None);
        v.presence("a", 10, Join, None);
        assert_eq!(v.timeline().peak_and_end(0, 20), (0, 0));
        v.presence("b", 5, Join, None);
        v.gauge(15, 100);
        v.gauge(15, 90);
        assert_eq!(v.timeline().peak_and_end(0, 20), (100, 100));
        assert_eq!(v.timeline().peak_and_end(0, 15), (1, 1));
    }

    /// Compacting at any horizon changes no count at or after it, for actions before and after
    /// the compaction, and keeps at most one action per user below it.
    #[test]
    fn compaction_at_any_horizon_changes_no_later_count() {
        use proptest::prelude::*;
        let action = |from: u64| {
            (0usize..3, from..from + 60, 0u8..3).prop_map(|(user, ts, rank)| {
                (
                    ["a", "b", "c"][user],
                    ts,
                    [Join, Heartbeat, Leave][rank as usize],
                )
            })
        };
        proptest!(
            ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() },
            |(before in prop::collection::vec(action(0), 0..30),
              after in prop::collection::vec(action(40), 0..10),
              horizon in 0u64..70,
              timeout in prop::option::of(1u64..30))| {
                let mut compacted = Viewers::default();
                let mut whole = Viewers::default();
                for &(user, ts, action) in &before {
                    compacted.presence(user, ts, action, timeout);
                    whole.presence(user, ts, action, timeout);
                }
                compacted.compact(horizon, timeout);
                // What stays below the horizon is one action that still makes its user present:
                // the rest is forgotten, or memory would grow with every viewer ever seen.
                for history in compacted.users.values() {
                    let below: Vec<_> = history.range(..(horizon, 0)).collect();
                    prop_assert!(below.len() <= 1);
                    for (&(ts, _), &present) in below {
                        prop_assert!(present && timeout.is_none_or(|t| ts + t > horizon));
                    }
                }
                for &(user, ts, action) in after.iter().filter(|(_, ts, _)| *ts >= horizon) {
                    compacted.presence(user, ts, action, timeout);
                    whole.presence(user, ts, action, timeout);
                }
                for start in (horizon..horizon + 80).step_by(7) {
                    prop_assert_eq!(
                        compacted.timeline().peak_and_end(start, start + 9),
                        whole.timeline().peak_and_end(start, start + 9)
                    );
                }
            }
        );
    }

    #[test]
    fn compaction_preserves_counts_after_the_horizon() {
        let mut v = Viewers::default();
        for (i, u) in ["a", "b", "c"].iter().enumerate() {
            v.presence(u, i as u64 * 10, Join, None);
        }
        v.presence("b", 25, Leave, None);
        v.presence("c", 35, Heartbeat, None);
        let before = v.timeline().peak_and_end(30, 60);
        v.compact(30, None);
        assert_eq!(v.timeline().peak_and_end(30, 60), before);
        assert!(
            !v.users.contains_key("b"),
            "users who left before the horizon are dropped"
        );
        v.presence("b", 40, Join, None);
        assert_eq!(v.timeline().peak_and_end(30, 60), (3, 3));
    }

    #[test]
    fn a_viewer_without_a_heartbeat_times_out_and_is_forgotten() {
        let mut v = Viewers::default();
        let timeout = Some(100);
        v.presence("a", 10, Join, timeout);
        v.presence("b", 10, Join, timeout);
        v.presence("b", 90, Heartbeat, timeout);
        // a: present 10..110; b: 10..190.
        assert_eq!(v.timeline().peak_and_end(0, 110), (2, 2));
        assert_eq!(v.timeline().peak_and_end(110, 190), (1, 1));
        assert_eq!(v.timeline().peak_and_end(190, 300), (0, 0));
        // Out of order: a heartbeat inside a's interval extends it.
        v.presence("a", 100, Heartbeat, timeout);
        assert_eq!(v.timeline().peak_and_end(150, 200), (2, 1));
        let before = v.timeline().peak_and_end(200, 400);
        v.compact(250, timeout);
        assert_eq!(v.tracked_users(), 0, "both timed out before the horizon");
        assert_eq!(v.timeline().peak_and_end(250, 400), before);
        v.presence("a", 300, Join, timeout);
        assert_eq!(v.timeline().peak_and_end(250, 450), (1, 0));
    }
}
