//! Configured kinds' windows: pane accumulators per dimension combination, merged into each
//! window; live rows replaced as windows change, a final row once the frontier passes a window's
//! end by the allowed lateness, and the alert rules judged on final windows (in window order,
//! so a z-score's history is the same whatever the batching).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Millis;
use crate::kinds::aggregate::{zscore, Measures};
use crate::kinds::config::KindSpec;
use crate::rows::{Alert, CustomKey, Row, Score};

/// One pane's accumulators of one dimension combination: what sources emit and the windows
/// merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindDelta {
    /// Index of the kind in the plan.
    pub kind: usize,
    /// The combination's values.
    pub dims: Arc<[String]>,
    /// The pane's start.
    pub pane: Millis,
    /// Its accumulators.
    pub measures: Measures,
}

/// Where a kind's combination is owned: the same worker in every run with the same kinds.
fn owner_hash(kind: usize, dims: &[String]) -> u64 {
    let mut bytes = (kind as u64).to_le_bytes().to_vec();
    for value in dims {
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
    }
    crate::hashing::fnv1a(&bytes)
}

impl KindDelta {
    /// Where its combination is owned.
    pub fn owner_hash(&self) -> u64 {
        owner_hash(self.kind, &self.dims)
    }
}

/// A window: (index of its spec in the kind, start).
type WindowId = (usize, Millis);

/// One dimension combination of one kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Group {
    panes: BTreeMap<Millis, Measures>,
    /// Windows with records, not final yet.
    open: BTreeSet<WindowId>,
    /// Open windows changed since the last advance.
    dirty: BTreeSet<WindowId>,
    /// The live row shown for each open window.
    live: BTreeMap<WindowId, Row>,
    /// Per z-score rule, (window start, value) of the final windows it watched within its
    /// history: the previous `history` window slots, by time, so what a window is compared
    /// with does not depend on when anything was forgotten.
    history: BTreeMap<usize, VecDeque<(Millis, f64)>>,
}

/// Every combination's windows of every kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KindWindows {
    groups: BTreeMap<(usize, Arc<[String]>), Group>,
}

impl Group {
    fn merge(&mut self, spec: &KindSpec, delta: &KindDelta) {
        match self.panes.get_mut(&delta.pane) {
            Some(pane) => pane.merge(&delta.measures),
            None => {
                self.panes.insert(delta.pane, delta.measures.clone());
            }
        }
        for (index, (_, size, slide)) in spec.windows.iter().enumerate() {
            let mut start = delta.pane - delta.pane % slide;
            loop {
                self.open.insert((index, start));
                self.dirty.insert((index, start));
                match start.checked_sub(*slide) {
                    Some(earlier) if earlier + size > delta.pane => start = earlier,
                    _ => break,
                }
            }
        }
    }

    fn row(
        &self,
        spec: &KindSpec,
        dims: &Arc<[String]>,
        (index, start): WindowId,
        is_final: bool,
    ) -> Row {
        let (label, size, _) = &spec.windows[index];
        let mut measures = Measures::new(spec.ops());
        for pane in self.panes.range(start..start + size).map(|(_, p)| p) {
            measures.merge(pane);
        }
        Row::CustomMetrics {
            key: CustomKey {
                kind: Arc::clone(&spec.names),
                dims: Arc::clone(dims),
                window: Arc::from(label.as_str()),
                start,
                end: start + size,
            },
            records: measures.records,
            values: measures
                .values(spec.ops())
                .into_iter()
                .map(|v| v.map(Score))
                .collect(),
            is_final,
        }
    }

    /// The alerts a final window fires, its values entering the z-scores' history.
    fn judge(&mut self, spec: &KindSpec, window: usize, row: &Row, out: &mut Vec<(Row, isize)>) {
        let Row::CustomMetrics {
            key,
            records,
            values,
            ..
        } = row
        else {
            return;
        };
        for (rule, (alert, measure, watched)) in spec.alerts.iter().enumerate() {
            let Some(value) = values[*measure].filter(|_| *watched == window).map(|s| s.0) else {
                continue;
            };
            let enough = *records >= alert.min_count;
            let (fired, threshold, score) = match (alert.above, alert.below, alert.zscore) {
                (Some(above), _, _) => (enough && value > above, Some(above), None),
                (_, Some(below), _) => (enough && value < below, Some(below), None),
                (_, _, Some(limit)) => {
                    let slide = spec.windows[window].2;
                    let since = key.start.saturating_sub(alert.history as u64 * slide);
                    let history = self.history.entry(rule).or_default();
                    history.retain(|(start, _)| *start >= since);
                    let values: Vec<f64> = history.iter().map(|(_, v)| *v).collect();
                    let score = zscore(value, &values);
                    history.push_back((key.start, value));
                    (enough && score.is_some_and(|z| z >= limit), None, score)
                }
                _ => (false, None, None),
            };
            if fired {
                let alert_row = Alert {
                    key: key.clone(),
                    rule: alert.name.clone(),
                    measure: spec.measures[*measure].0.name.clone(),
                    value: Score(value),
                    threshold: threshold.map(Score),
                    zscore: score.map(Score),
                    records: *records,
                };
                out.push((Row::Alert(Box::new(alert_row)), 1));
            }
        }
    }
}

impl KindWindows {
    /// Adds the combinations of another worker's checkpoint.
    pub(crate) fn extend(&mut self, other: KindWindows) {
        self.groups.extend(other.groups);
    }

    /// Removes and returns the combinations worker `index` of `peers` owns.
    pub(crate) fn take_owned(&mut self, index: usize, peers: usize) -> KindWindows {
        let (owned, rest) = std::mem::take(&mut self.groups)
            .into_iter()
            .partition(|((kind, dims), _)| owner_hash(*kind, dims) as usize % peers == index);
        self.groups = rest;
        KindWindows { groups: owned }
    }

    /// Emits every live row held as an insertion (after a restore).
    pub fn live_rows(&self, out: &mut Vec<(Row, isize)>) {
        for group in self.groups.values() {
            out.extend(group.live.values().map(|row| (row.clone(), 1)));
        }
    }

    /// Adds a pane's accumulators.
    pub fn apply(&mut self, kinds: &[KindSpec], delta: &KindDelta) {
        let Some(spec) = kinds.get(delta.kind) else {
            return;
        };
        self.groups
            .entry((delta.kind, Arc::clone(&delta.dims)))
            .or_default()
            .merge(spec, delta);
    }

    /// Emits the changes up to `frontier` (None: the input ended, every window is final): final
    /// rows and alerts of the windows whose end is `final_delay` or more behind it, and with
    /// `live_rows` the new versions of the open windows that changed. Forgets what no window
    /// still open or to come needs.
    pub fn advance(
        &mut self,
        kinds: &[KindSpec],
        frontier: Option<Millis>,
        final_delay: Millis,
        live_rows: bool,
        out: &mut Vec<(Row, isize)>,
    ) {
        for ((kind, dims), group) in self.groups.iter_mut() {
            let spec = &kinds[*kind];
            let ended = |(index, start): &WindowId| {
                frontier.is_none_or(|f| start + spec.windows[*index].1 + final_delay <= f)
            };
            let finals: Vec<WindowId> = group.open.iter().copied().filter(|w| ended(w)).collect();
            for window in finals {
                group.open.remove(&window);
                group.dirty.remove(&window);
                if let Some(live) = group.live.remove(&window) {
                    out.push((live, -1));
                }
                let row = group.row(spec, dims, window, true);
                group.judge(spec, window.0, &row, out);
                out.push((row, 1));
            }
            let dirty = std::mem::take(&mut group.dirty);
            for window in dirty.into_iter().filter(|_| live_rows) {
                let row = group.row(spec, dims, window, false);
                match group.live.insert(window, row.clone()) {
                    Some(old) if old == row => continue,
                    Some(old) => out.push((old, -1)),
                    None => {}
                }
                out.push((row, 1));
            }
            let longest = spec
                .windows
                .iter()
                .map(|(_, size, _)| *size)
                .max()
                .unwrap_or(0);
            match frontier {
                Some(f) => {
                    group
                        .panes
                        .retain(|pane, _| pane + longest + final_delay > f);
                    // A window still to be judged starts after f - final_delay - its size.
                    for (rule, history) in group.history.iter_mut() {
                        let (alert, _, window) = &spec.alerts[*rule];
                        let (_, size, slide) = spec.windows[*window];
                        let horizon = alert.history as u64 * slide + size + final_delay;
                        history.retain(|(start, _)| start + horizon > f);
                    }
                    group.history.retain(|_, history| !history.is_empty());
                }
                None => {
                    group.panes.clear();
                    group.history.clear();
                }
            }
        }
        // A combination with nothing kept has no window left to make or compare with.
        self.groups.retain(|_, group| {
            !group.panes.is_empty() || !group.open.is_empty() || !group.history.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::config::content_downloads;
    use crate::kinds::record::read;
    use serde_json::json;

    fn delta(spec: &KindSpec, record: serde_json::Value) -> KindDelta {
        let event = read(spec, &record).unwrap();
        let mut measures = Measures::new(spec.ops());
        measures.observe(&event.observations);
        let ts = event.ts.unwrap();
        KindDelta {
            kind: 0,
            dims: event.dims.into(),
            pane: ts - ts % spec.pane,
            measures,
        }
    }

    fn values(row: &Row) -> (Millis, u64, Vec<Option<f64>>, bool) {
        match row {
            Row::CustomMetrics {
                key,
                records,
                values,
                is_final,
            } => (
                key.start,
                *records,
                values.iter().map(|v| v.map(|s| s.0)).collect(),
                *is_final,
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn windows_go_live_then_final_and_alerts_fire_on_final_windows() {
        let spec = content_downloads().resolve("downloads").unwrap();
        let kinds = [spec];
        let mut windows = KindWindows::default();
        let mut out = Vec::new();
        // 25 downloads in the first minute, 5 of them failing and slow.
        for i in 0..25u64 {
            let failed = i % 5 == 0;
            let record = json!({"ts": 60_000 + i * 1_000, "region": "eu", "device": "tv",
                "status": if failed { "error" } else { "ok" },
                "duration_ms": if failed { 40_000 } else { 1_000 }, "bytes": 100, "speed_kbps": 800});
            windows.apply(&kinds, &delta(&kinds[0], record));
        }
        windows.advance(&kinds, Some(90_000), 1_000, true, &mut out);
        assert_eq!(out.len(), 1);
        let (start, records, _, is_final) = values(&out[0].0);
        assert_eq!((start, records, is_final, out[0].1), (60_000, 25, false, 1));
        out.clear();
        windows.advance(&kinds, Some(121_000), 1_000, true, &mut out);
        let rows: Vec<&Row> = out.iter().map(|(row, _)| row).collect();
        assert_eq!(out[0].1, -1, "the live row is retracted");
        let alerts: Vec<(&str, f64)> = rows
            .iter()
            .filter_map(|row| match row {
                Row::Alert(alert) => Some((alert.rule.as_str(), alert.value.0)),
                _ => None,
            })
            .collect();
        // success 20/25 = 0.8 < 0.9; p95 duration: the 23rd of 25 sorted values is 40 s.
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        assert_eq!(alerts[0], ("high_error_rate", 0.8));
        assert_eq!(alerts[1].0, "slow_downloads");
        assert!((alerts[1].1 - 40_000.0).abs() <= 400.0, "{alerts:?}");
        let (_, records, values, is_final) = values(rows.last().unwrap());
        assert!(is_final);
        assert_eq!(records, 25);
        assert_eq!(
            values[..4],
            [Some(25.0), Some(5.0), Some(0.8), Some(8_800.0)]
        );
        assert_eq!(values[7..], [Some(800.0), Some(800.0), Some(2_500.0)]);
        out.clear();
        windows.advance(&kinds, Some(200_000), 1_000, true, &mut out);
        assert!(out.is_empty());
        assert_eq!(
            windows.groups.len(),
            1,
            "the error spike rule's history stays"
        );
        // 12 slots of a minute, the window and the lateness after the window's start.
        windows.advance(&kinds, Some(60_000 + 781_000), 1_000, true, &mut out);
        assert!(
            windows.groups.is_empty(),
            "nothing kept past the history's horizon"
        );
    }
}
