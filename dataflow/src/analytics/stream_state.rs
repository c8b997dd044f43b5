//! Everything the analytics keep for one stream, and how it turns into row changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::delta::PaneDelta;
use super::moments::{MetricSeries, MomentChange, MomentInputs, METRICS};
use super::pane::{top_with_ties, Pane};
use super::summaries::SummaryState;
use super::totals::TotalsState;
use super::viewers::{Timeline, Viewers};
use crate::event::{Millis, AMOUNT_SCALE};
use crate::hashing::FastMap;
use crate::plan::Plan;
use crate::rows::{Moment, Row, WindowKey};

/// Row changes produced by an advance, with +1/-1 multiplicities.
pub type RowChanges = Vec<(Row, isize)>;

/// Moment detection progress over the moment window's series.
#[derive(Debug, Default, Serialize, Deserialize)]
struct MomentCursor {
    /// Next window start to score; None before the stream's first active window.
    next: Option<Millis>,
    /// Consecutive windows without events just scored.
    quiet_run: usize,
    series: [MetricSeries; METRICS.len()],
}

impl MomentCursor {
    /// Scoring waits for the stream's next event: not started, or K empty windows scored (the
    /// baseline is all zeros and stays so), and no moment open.
    fn is_paused(&self, baseline_windows: usize) -> bool {
        (self.next.is_none() || self.quiet_run >= baseline_windows)
            && self.series.iter().all(|series| series.open().is_none())
    }

    /// After K empty windows every baseline is K zeros: nothing to keep while paused.
    fn paused_on_zeros(&self, baseline_windows: usize) -> bool {
        self.next.is_some() && self.quiet_run >= baseline_windows
    }
}

/// State of one stream on the worker that owns it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StreamState {
    id: Arc<str>,
    panes: BTreeMap<Millis, Pane>,
    dirty_panes: BTreeSet<Millis>,
    /// user -> sorted pane starts in which they chatted (only panes of open windows).
    chatter_panes: FastMap<String, Vec<Millis>>,
    /// (spec, window start) -> distinct chatters.
    unique: FastMap<(usize, Millis), u64>,
    viewers: Viewers,
    viewers_dirty_from: Option<Millis>,
    totals: TotalsState,
    /// Per spec, the first window start not yet final.
    open_from: Vec<Millis>,
    /// Rows last emitted, live, per (spec, window start).
    live: FastMap<(usize, Millis), Vec<Row>>,
    live_totals: Option<Row>,
    /// Highest viewers_peak among final windows.
    final_peak: u64,
    moments: MomentCursor,
    /// Horizon of the last sweep of per-user state.
    swept_to: Millis,
    /// Something that feeds `stream_totals` changed since the last advance.
    totals_stale: bool,
    /// Chat summaries.
    summaries: SummaryState,
}

/// Per-user state (chatter panes, presence history) is swept at most once per this much event
/// time: a sweep costs a pass over the users, and stale entries below the horizon are harmless
/// in between (they belong to final windows only).
const SWEEP_PERIOD: Millis = 60_000;

/// Gives back a map's room once most of it emptied. A stream keeps the size of its busiest
/// minutes otherwise (~50 kB for 700 chatters) until it goes quiet, which its chat summaries'
/// horizon (10 min) puts off long after its windows closed.
fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut FastMap<K, V>) {
    if map.capacity() > 4 * map.len().max(8) {
        map.shrink_to_fit();
    }
}

/// Emits the changes from `previous` to `current` rows of one window: a merge of the two sorted
/// lists, with a fast path when nothing changed.
fn diff_rows(previous: Option<Vec<Row>>, current: &[Row], out: &mut RowChanges) {
    let previous = previous.unwrap_or_default();
    if previous == current {
        return;
    }
    let mut old: Vec<&Row> = previous.iter().collect();
    let mut new: Vec<&Row> = current.iter().collect();
    old.sort_unstable();
    new.sort_unstable();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) if o == n => {
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o < n => {
                out.push(((*o).clone(), -1));
                i += 1;
            }
            (Some(o), None) => {
                out.push(((*o).clone(), -1));
                i += 1;
            }
            (_, Some(n)) => {
                out.push(((*n).clone(), 1));
                j += 1;
            }
            (None, None) => break,
        }
    }
}

/// Emits a moment's final row, replacing its live row when live rows are on.
fn finalize_moment(moment: Moment, live_rows: bool, out: &mut RowChanges) {
    if live_rows {
        out.push((
            Row::Moment {
                moment: Box::new(moment.clone()),
                is_final: false,
            },
            -1,
        ));
    }
    out.push((
        Row::Moment {
            moment: Box::new(moment),
            is_final: true,
        },
        1,
    ));
}

impl StreamState {
    pub(crate) fn new(id: String, plan: &Plan) -> Self {
        Self {
            totals: TotalsState::new(id.clone()),
            id: Arc::from(id),
            open_from: vec![0; plan.specs.len()],
            ..Self::default()
        }
    }

    /// Emits the live rows last emitted (window rows, totals, open moments) as insertions.
    pub(crate) fn live_rows(&self, plan: &Plan, out: &mut RowChanges) {
        let windows = self.live.values().flatten().cloned();
        let totals = self.live_totals.iter().cloned();
        let moments = self
            .moments
            .series
            .iter()
            .filter(|_| plan.live_rows)
            .filter_map(MetricSeries::open)
            .map(|moment| Row::Moment {
                moment: Box::new(moment.clone()),
                is_final: false,
            });
        out.extend(windows.chain(totals).chain(moments).map(|row| (row, 1)));
    }

    /// Earliest event time that can still change a window; older state is retired.
    fn horizon(&self) -> Millis {
        self.open_from.iter().copied().min().unwrap_or(0)
    }

    /// The stream's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Adds one pane delta. Returns false when its pane is below the horizon (only possible when
    /// an idle partition let the frontier run ahead of the lateness bound) and it was ignored.
    pub(crate) fn apply(&mut self, delta: PaneDelta, plan: &Plan) -> bool {
        if delta.pane < self.horizon() {
            return false;
        }
        let m = &delta.additive.metrics;
        self.totals_stale = true;
        self.totals
            .count(m.chat_messages, m.reactions, m.transactions);
        for update in &delta.meta {
            self.totals.meta(update);
        }
        self.panes
            .entry(delta.pane)
            .or_default()
            .merge(&delta.additive);
        self.dirty_panes.insert(delta.pane);
        for user_id in &delta.chatters {
            self.chatted(user_id, delta.pane, plan);
        }
        for (user_id, ts, action) in &delta.presence {
            self.viewers
                .presence(user_id, *ts, *action, plan.viewer_timeout());
            self.viewers_changed(*ts);
        }
        for (ts, count) in &delta.gauges {
            self.viewers.gauge(*ts, *count);
            self.viewers_changed(*ts);
        }
        self.summaries.add(delta.chat);
        true
    }

    fn viewers_changed(&mut self, ts: Millis) {
        self.viewers_dirty_from = Some(self.viewers_dirty_from.map_or(ts, |d| d.min(ts)));
    }

    /// Counts a chatter once per window: a user's first message in a pane raises the distinct
    /// count of each window containing that pane unless another of their panes is already in it.
    fn chatted(&mut self, user_id: &str, pane_start: Millis, plan: &Plan) {
        let panes = match self.chatter_panes.get_mut(user_id) {
            Some(p) => p,
            None => self.chatter_panes.entry(user_id.to_owned()).or_default(),
        };
        let Err(position) = panes.binary_search(&pane_start) else {
            return;
        };
        for (index, spec) in plan.specs.iter().enumerate() {
            for start in spec
                .starts_containing(pane_start)
                .filter(|s| *s >= self.open_from[index])
            {
                let first = panes.partition_point(|p| *p < start);
                let seen = panes.get(first).is_some_and(|p| *p < start + spec.size);
                if !seen {
                    *self.unique.entry((index, start)).or_default() += 1;
                }
            }
        }
        panes.insert(position, pane_start);
    }

    /// The pane aggregates of one window summed, or None when no event fell in it.
    fn window_pane(&self, start: Millis, size: u64) -> Option<Pane> {
        let mut sum = Pane::default();
        for pane in self.panes.range(start..start + size).map(|(_, p)| p) {
            sum.merge(pane);
        }
        (sum.events > 0).then_some(sum)
    }

    /// Every row of one window.
    fn window_rows(
        &self,
        index: usize,
        start: Millis,
        plan: &Plan,
        timeline: &Timeline,
        is_final: bool,
    ) -> Vec<Row> {
        let spec = &plan.specs[index];
        let Some(pane) = self.window_pane(start, spec.size) else {
            return Vec::new();
        };
        let key = WindowKey {
            stream_id: Arc::clone(&self.id),
            window: Arc::clone(&plan.labels[index]),
            start,
            end: start + spec.size,
        };
        let mut metrics = pane.metrics;
        metrics.unique_chatters = self.unique.get(&(index, start)).copied().unwrap_or(0);
        (metrics.viewers_peak, metrics.viewers_end) = timeline.peak_and_end(start, key.end);
        let mut rows = Vec::with_capacity(2 + pane.emojis.len() + pane.revenue.len());
        if !pane.emojis.is_empty() {
            let top = top_with_ties(&pane.emojis, plan.top_k, plan.config().top_max_entries);
            rows.push(Row::WindowTopEmojis {
                key: key.clone(),
                top: top.entries,
                truncated: top.truncated,
                is_final,
            });
        }
        for (emoji, count) in pane.emojis {
            rows.push(Row::WindowEmoji {
                key: key.clone(),
                emoji,
                count,
                is_final,
            });
        }
        for ((kind, currency), (transactions, amount)) in pane.revenue {
            rows.push(Row::WindowRevenue {
                key: key.clone(),
                kind,
                currency,
                transactions,
                amount,
                is_final,
            });
        }
        rows.push(Row::WindowMetrics {
            key,
            metrics: Box::new(metrics),
            is_final,
        });
        rows
    }

    /// Window starts of spec `index` that contain an active pane in `[from, to)`.
    fn active_starts(
        &self,
        index: usize,
        from: Millis,
        to: Millis,
        plan: &Plan,
    ) -> BTreeSet<Millis> {
        let spec = &plan.specs[index];
        let mut starts = BTreeSet::new();
        for pane in self
            .panes
            .range(from.saturating_sub(spec.size - 1)..to.saturating_add(spec.size))
            .map(|(p, _)| *p)
        {
            starts.extend(
                spec.starts_containing(pane)
                    .filter(|s| (from..to).contains(s)),
            );
        }
        starts
    }

    /// Whether an advance could change nothing until the next delta and little state is left:
    /// no pane, no live row, no viewer present or pending, moment detection paused with no moment
    /// open, and (with live rows) the totals emitted.
    pub(crate) fn is_quiet(&self, plan: &Plan) -> bool {
        self.panes.is_empty()
            && self.dirty_panes.is_empty()
            && self.live.is_empty()
            && self.unique.is_empty()
            && self.chatter_panes.is_empty()
            && self.viewers_dirty_from.is_none()
            && self.viewers.is_settled()
            && !(self.totals_stale && plan.live_rows)
            && self.moments.is_paused(plan.moments.baseline_windows)
            && self.summaries.is_empty()
    }

    /// Sheds what a quiet stream can rebuild when it wakes ([`StreamState::woken`]): its moment
    /// baselines, K zeros each (about 600 of its 900 encoded bytes).
    pub(crate) fn quieted(mut self, plan: &Plan) -> Self {
        if self.moments.paused_on_zeros(plan.moments.baseline_windows) {
            for series in &mut self.moments.series {
                series.elide_zeros();
            }
        }
        self
    }

    /// Rebuilds what [`StreamState::quieted`] shed. A checkpoint's quiet states from before
    /// the shedding still hold their baselines, which this leaves as they are.
    pub(crate) fn woken(mut self, plan: &Plan) -> Self {
        let k = plan.moments.baseline_windows;
        if self.moments.paused_on_zeros(k) {
            for series in &mut self.moments.series {
                series.restore_zeros(k);
            }
        }
        self
    }

    /// Moves a quiet stream's horizon to `frontier`: everything else an advance would have done
    /// while it was quiet is nothing (see [`StreamState::is_quiet`]).
    pub(crate) fn catch_up(&mut self, frontier: Millis, plan: &Plan) {
        self.open_from = plan.open_from(Some(frontier));
    }

    /// Brings the stream's rows up to date with an advanced frontier (None = input exhausted).
    pub(crate) fn advance(&mut self, frontier: Option<Millis>, plan: &Plan, out: &mut RowChanges) {
        let open_from = plan.open_from(frontier);
        // Windows with new events are rebuilt; windows only after a viewer change are rebuilt
        // when their viewer numbers actually moved.
        let mut changed = BTreeSet::new();
        let mut viewers_only = BTreeSet::new();
        // Without live rows, windows are only built when they become final.
        if plan.live_rows {
            for (index, spec) in plan.specs.iter().enumerate() {
                for pane in &self.dirty_panes {
                    changed.extend(spec.starts_containing(*pane).map(|s| (index, s)));
                }
                if let Some(from) = self.viewers_dirty_from {
                    let lo = from.saturating_sub(spec.size - 1);
                    viewers_only.extend(
                        self.active_starts(index, lo, u64::MAX, plan)
                            .into_iter()
                            .map(|s| (index, s))
                            .filter(|w| !changed.contains(w)),
                    );
                }
            }
        }
        self.dirty_panes.clear();
        self.viewers_dirty_from = None;
        let closing: Vec<BTreeSet<Millis>> = (0..plan.specs.len())
            .map(|index| self.active_starts(index, self.open_from[index], open_from[index], plan))
            .collect();
        let idle = changed.is_empty() && viewers_only.is_empty();
        let timeline = if idle && closing.iter().all(BTreeSet::is_empty) {
            Timeline::default()
        } else {
            self.viewers.timeline()
        };
        for (index, start) in viewers_only {
            if start < open_from[index] {
                continue;
            }
            let spec = &plan.specs[index];
            let viewers = timeline.peak_and_end(start, start + spec.size);
            let unchanged = self.live.get(&(index, start)).and_then(|rows| rows.last()).is_some_and(|row| {
                matches!(row, Row::WindowMetrics { metrics, .. } if (metrics.viewers_peak, metrics.viewers_end) == viewers)
            });
            if !unchanged {
                changed.insert((index, start));
            }
        }
        for (index, start) in changed {
            if start >= open_from[index] {
                let rows = self.window_rows(index, start, plan, &timeline, false);
                self.totals_stale = true;
                diff_rows(self.live.remove(&(index, start)), &rows, out);
                self.live.insert((index, start), rows);
            }
        }
        for (index, starts) in closing.into_iter().enumerate() {
            for start in starts {
                let rows = self.window_rows(index, start, plan, &timeline, true);
                // The metrics row is the last of a window's rows.
                if let Some(Row::WindowMetrics { metrics, .. }) = rows.last() {
                    self.final_peak = self.final_peak.max(metrics.viewers_peak);
                }
                self.unique.remove(&(index, start));
                self.totals_stale = true;
                diff_rows(self.live.remove(&(index, start)), &rows, out);
            }
        }
        self.score_moments(open_from[plan.moment_spec], plan, out);
        if plan.config().summary.every > 0 {
            self.summaries.settle(
                &self.id,
                plan.settled_below(frontier),
                &plan.config().summary,
                out,
            );
        }
        self.open_from = open_from;
        self.retire(plan);
        if plan.live_rows || frontier.is_none() {
            self.emit_totals(frontier.is_none(), out);
        }
    }

    /// Scores every moment-window that became final, in order, empty ones included; after K
    /// empty windows the baseline is all zeros and stays so, so scoring skips to the next event.
    fn score_moments(&mut self, until: Millis, plan: &Plan, out: &mut RowChanges) {
        let spec = &plan.specs[plan.moment_spec];
        let config = &plan.moments;
        loop {
            let next = match self.moments.next {
                Some(next) if self.moments.quiet_run < config.baseline_windows => next,
                paused => {
                    // Not started, or paused after K empty windows: resume at the next active
                    // window, but only once it is final, since earlier events may still arrive.
                    let from = paused.unwrap_or(0);
                    let Some((&pane, _)) = self.panes.range(from..).next() else {
                        break;
                    };
                    let first = spec
                        .starts_containing(pane)
                        .next()
                        .unwrap_or(pane)
                        .max(from);
                    if first >= until {
                        break;
                    }
                    self.moments.quiet_run = 0;
                    first
                }
            };
            if next >= until {
                break;
            }
            let inputs = match self.window_pane(next, spec.size) {
                Some(pane) => {
                    self.moments.quiet_run = 0;
                    let revenue: i128 = pane.revenue.values().map(|(_, a)| a).sum();
                    MomentInputs::new(&pane.metrics, revenue as f64 / AMOUNT_SCALE as f64)
                }
                None => {
                    self.moments.quiet_run += 1;
                    MomentInputs::default()
                }
            };
            for (index, metric) in METRICS.iter().enumerate() {
                let value = inputs.metric(index, config);
                let change = self.moments.series[index].observe(
                    &self.id,
                    metric,
                    next,
                    next + spec.size,
                    value,
                    config,
                );
                match change {
                    Some(MomentChange::Live { previous, current }) if plan.live_rows => {
                        if let Some(previous) = previous {
                            out.push((
                                Row::Moment {
                                    moment: Box::new(previous),
                                    is_final: false,
                                },
                                -1,
                            ));
                        }
                        out.push((
                            Row::Moment {
                                moment: Box::new(current),
                                is_final: false,
                            },
                            1,
                        ));
                    }
                    Some(MomentChange::Closed(moment)) => {
                        finalize_moment(moment, plan.live_rows, out)
                    }
                    Some(MomentChange::Live { .. }) | None => {}
                }
            }
            self.moments.next = Some(next + spec.slide);
        }
        if until == u64::MAX {
            for series in &mut self.moments.series {
                if let Some(moment) = series.close() {
                    finalize_moment(moment, plan.live_rows, out);
                }
            }
        }
    }

    /// Drops state that no open window needs. Internal only: nothing is emitted for it.
    fn retire(&mut self, plan: &Plan) {
        let horizon = self.horizon();
        self.totals.retire(horizon);
        let pane_horizon = horizon - horizon % plan.pane;
        if self
            .panes
            .first_key_value()
            .is_some_and(|(p, _)| *p < pane_horizon)
        {
            self.panes = self.panes.split_off(&pane_horizon);
        }
        if pane_horizon >= self.swept_to.saturating_add(SWEEP_PERIOD) {
            self.swept_to = pane_horizon;
            self.chatter_panes.retain(|_, panes| {
                panes.retain(|p| *p >= pane_horizon);
                !panes.is_empty()
            });
            shrink_if_sparse(&mut self.chatter_panes);
            shrink_if_sparse(&mut self.unique);
            shrink_if_sparse(&mut self.live);
            self.viewers.compact(pane_horizon, plan.viewer_timeout());
        }
    }

    fn emit_totals(&mut self, is_final: bool, out: &mut RowChanges) {
        if !std::mem::take(&mut self.totals_stale) && !is_final {
            return;
        }
        // Each live window's metrics row is the last of its rows.
        let live_peak = self
            .live
            .values()
            .filter_map(|rows| rows.last())
            .filter_map(|row| match row {
                Row::WindowMetrics { metrics, .. } => Some(metrics.viewers_peak),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let totals = self.totals.row(self.final_peak.max(live_peak));
        let row = Row::StreamTotals {
            totals: Box::new(totals),
            is_final,
        };
        if self.live_totals.as_ref() != Some(&row) {
            if let Some(previous) = self.live_totals.take() {
                out.push((previous, -1));
            }
            out.push((row.clone(), 1));
            self.live_totals = Some(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PipelineConfig;
    use crate::event::PresenceAction;

    /// An hour of traffic with fresh chatters and viewers every pane: whatever is retained must
    /// stay proportional to the open windows, not to the hour.
    #[test]
    fn state_is_retired_behind_the_frontier() {
        let plan = Plan::new(PipelineConfig::default()).unwrap();
        let mut state = StreamState::new("s".into(), &plan);
        let mut out = Vec::new();
        for pane in 0..360u64 {
            let ts = pane * 10_000;
            let mut delta = PaneDelta {
                stream_id: "s".into(),
                pane: ts,
                ..PaneDelta::default()
            };
            delta.additive.events = 3;
            delta.additive.metrics.chat_messages = 1;
            delta.chatters = vec![format!("chatter-{pane}")];
            delta.presence = vec![
                (format!("viewer-{pane}"), ts, PresenceAction::Join),
                (format!("viewer-{pane}"), ts + 5_000, PresenceAction::Leave),
            ];
            assert!(state.apply(delta, &plan));
            state.advance(Some(ts + 10_000), &plan, &mut out);
        }
        // Open windows reach back allowed_lateness (60 s) plus a window (60 s) from the frontier,
        // and sweeps of per-user state run once per minute of event time.
        assert!(state.panes.len() <= 14, "{} panes", state.panes.len());
        assert!(
            state.chatter_panes.len() <= 20,
            "{} chatters",
            state.chatter_panes.len()
        );
        assert!(
            state.viewers.tracked_users() <= 20,
            "{} viewers",
            state.viewers.tracked_users()
        );
        assert!(state.live.len() <= 30, "{} live windows", state.live.len());
        assert!(
            state.unique.len() <= 30,
            "{} distinct counts",
            state.unique.len()
        );
        let finals = out
            .iter()
            .filter(|(row, diff)| row.is_final() && *diff == 1)
            .count();
        assert!(finals > 700, "windows became final along the way: {finals}");
        assert!(
            out.iter().all(|(row, diff)| *diff == 1 || !row.is_final()),
            "final rows are never retracted"
        );
    }

    /// A burst of chatters, then one chatter a pane for ten minutes: the per-user map gives its
    /// room back once the burst's windows closed, not when the stream goes quiet.
    #[test]
    fn a_burst_of_chatters_leaves_no_room_behind() {
        let plan = Plan::new(PipelineConfig::default()).unwrap();
        let mut state = StreamState::new("s".into(), &plan);
        let mut out = Vec::new();
        for pane in 0..60u64 {
            let ts = pane * 10_000;
            let chatters = if pane == 0 { 2_000 } else { 1 };
            let delta = PaneDelta {
                stream_id: "s".into(),
                pane: ts,
                chatters: (0..chatters).map(|c| format!("chatter-{c}")).collect(),
                ..PaneDelta::default()
            };
            assert!(state.apply(delta, &plan));
            state.advance(Some(ts + 10_000), &plan, &mut out);
        }
        assert!(
            state.chatter_panes.capacity() < 200,
            "room for {} chatters kept for {}",
            state.chatter_panes.capacity(),
            state.chatter_panes.len()
        );
    }
}
