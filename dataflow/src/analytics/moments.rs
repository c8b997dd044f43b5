//! Moment detection: the z-score of a window's metric against the previous K windows, with
//! consecutive anomalous windows merged into one moment.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::MomentsConfig;
use crate::event::Millis;
use crate::rows::{Moment, Score, WindowMetrics};

/// The metrics scored for moments, with their names in output rows.
pub const METRICS: [&str; 6] = [
    "chat_rate",
    "reaction_rate",
    "viewer_joins",
    "revenue",
    "negative_share",
    "toxic_share",
];

/// The per-window facts moment detection needs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MomentInputs {
    /// Chat messages.
    pub chat_messages: u64,
    /// Negative chat messages.
    pub negative: u64,
    /// Toxic chat messages.
    pub toxic: u64,
    /// Reactions.
    pub reactions: u64,
    /// Viewer joins.
    pub viewer_joins: u64,
    /// Total amount over all kinds and currencies, in currency units (nominal; no FX conversion).
    pub revenue: f64,
}

impl MomentInputs {
    /// Takes the inputs from a window's metrics and revenue total.
    pub fn new(metrics: &WindowMetrics, revenue: f64) -> Self {
        Self {
            chat_messages: metrics.chat_messages,
            negative: metrics.negative,
            toxic: metrics.toxic,
            reactions: metrics.reactions,
            viewer_joins: metrics.viewer_joins,
            revenue,
        }
    }

    /// `part` of the chat messages (0 without chat).
    fn share(&self, part: u64) -> f64 {
        if self.chat_messages == 0 {
            0.0
        } else {
            part as f64 / self.chat_messages as f64
        }
    }

    /// (value, enough volume to fire, floor of the baseline deviation) of metric `index`.
    /// The floor keeps a flat baseline (std 0) from turning any blip into an infinite z-score.
    pub fn metric(&self, index: usize, config: &MomentsConfig) -> (f64, bool, f64) {
        let chat_ok = self.chat_messages >= config.min_chat_messages;
        match index {
            0 => (self.chat_messages as f64, chat_ok, 1.0),
            1 => (
                self.reactions as f64,
                self.reactions >= config.min_reactions,
                1.0,
            ),
            2 => (
                self.viewer_joins as f64,
                self.viewer_joins >= config.min_viewer_joins,
                1.0,
            ),
            3 => (self.revenue, self.revenue >= config.min_revenue, 1.0),
            4 => (self.share(self.negative), chat_ok, 0.05),
            5 => (self.share(self.toxic), chat_ok, 0.05),
            // No such metric: a value that never fires.
            _ => (0.0, false, 1.0),
        }
    }
}

/// What one observation did to the series' moment.
#[derive(Debug, Clone, PartialEq)]
pub enum MomentChange {
    /// A moment started or grew: replace `previous` (if any) with the live `current`.
    Live {
        /// The live version to retract, if there was one.
        previous: Option<Moment>,
        /// The new live version.
        current: Moment,
    },
    /// The moment ended: retract the live version, emit it as final.
    Closed(Moment),
}

/// The history of one metric of one stream.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct MetricSeries {
    history: VecDeque<f64>,
    open: Option<Moment>,
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

impl MetricSeries {
    /// Scores the next window of the series (windows must come in order, empty ones included).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        stream_id: &str,
        metric: &str,
        start: Millis,
        end: Millis,
        (value, volume_ok, std_floor): (f64, bool, f64),
        config: &MomentsConfig,
    ) -> Option<MomentChange> {
        let k = config.baseline_windows;
        let mut scored = None;
        if self.history.len() == k {
            let mean = self.history.iter().sum::<f64>() / k as f64;
            let var = self
                .history
                .iter()
                .map(|x| (x - mean) * (x - mean))
                .sum::<f64>()
                / k as f64;
            let std = var.sqrt();
            let z = (value - mean) / std.max(std_floor);
            if volume_ok && z >= config.min_zscore {
                scored = Some((mean, std, z));
            }
        }
        self.history.push_back(value);
        if self.history.len() > k {
            self.history.pop_front();
        }
        match (scored, self.open.take()) {
            (Some((mean, std, z)), previous) => {
                let peak = |m: &mut Moment| {
                    m.peak_window_start = start;
                    m.peak_value = Score(round4(value));
                    m.baseline_mean = Score(round4(mean));
                    m.baseline_std = Score(round4(std));
                    m.zscore = Score(round4(z));
                };
                let mut current = previous.clone().unwrap_or_else(|| Moment {
                    stream_id: stream_id.to_owned(),
                    metric: metric.to_owned(),
                    start,
                    end,
                    peak_window_start: start,
                    peak_value: Score(0.0),
                    baseline_mean: Score(0.0),
                    baseline_std: Score(0.0),
                    zscore: Score(f64::NEG_INFINITY),
                });
                current.end = end;
                if round4(z) > current.zscore.0 {
                    peak(&mut current);
                }
                self.open = Some(current.clone());
                Some(MomentChange::Live { previous, current })
            }
            (None, Some(open)) => Some(MomentChange::Closed(open)),
            (None, None) => None,
        }
    }

    /// The moment in progress, if any.
    pub fn open(&self) -> Option<&Moment> {
        self.open.as_ref()
    }

    /// Ends the series (input exhausted): an open moment becomes final.
    pub fn close(&mut self) -> Option<Moment> {
        self.open.take()
    }

    /// Drops a baseline of nothing but zeros, which [`MetricSeries::restore_zeros`] brings
    /// back: a quiet stream's series hold K zeros each, most of what it would keep otherwise.
    pub fn elide_zeros(&mut self) {
        if self.open.is_none() && self.history.iter().all(|value| *value == 0.0) {
            self.history = VecDeque::new();
        }
    }

    /// Gives an elided baseline its `k` zeros back.
    pub fn restore_zeros(&mut self, k: usize) {
        if self.history.is_empty() {
            self.history.extend(std::iter::repeat_n(0.0, k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_after_a_full_baseline_fires_and_merges() {
        let config = MomentsConfig {
            baseline_windows: 4,
            ..MomentsConfig::default()
        };
        let mut series = MetricSeries::default();
        let mut changes = Vec::new();
        let values = [30.0, 31.0, 29.0, 30.0, 90.0, 400.0, 30.0];
        for (i, v) in values.into_iter().enumerate() {
            let start = i as u64 * 10;
            changes.push(series.observe(
                "s",
                "chat_rate",
                start,
                start + 10,
                (v, true, 1.0),
                &config,
            ));
        }
        assert!(changes[..4].iter().all(Option::is_none));
        assert!(
            matches!(&changes[4], Some(MomentChange::Live { previous: None, current }) if current.start == 40)
        );
        let Some(MomentChange::Closed(moment)) = &changes[6] else {
            panic!("{changes:?}")
        };
        assert_eq!(
            (moment.start, moment.end, moment.peak_window_start),
            (40, 60, 40)
        );
        // The peak is the window with the highest z (90 against a flat baseline), not the
        // largest value (400 against a baseline that already contains the spike).
        assert_eq!(moment.peak_value, Score(90.0));
        assert_eq!(moment.zscore, Score(60.0));
    }

    #[test]
    fn low_volume_never_fires() {
        let config = MomentsConfig {
            baseline_windows: 2,
            ..MomentsConfig::default()
        };
        let mut series = MetricSeries::default();
        for v in [0.0, 0.0, 15.0] {
            assert_eq!(
                series.observe("s", "chat_rate", 0, 10, (v, false, 1.0), &config),
                None
            );
        }
    }
}
