//! A kind's windowed measures per dimension combination, from panes: each record adds to its
//! pane's accumulators; a window merges the accumulators of its panes. Every accumulator merges
//! exactly and in any order (counts, sums in micro-units, min/max, sketch buckets), so the rows do
//! not depend on how records were spread over workers or batches.

use serde::{Deserialize, Serialize};

use crate::kinds::config::MeasureOp;
use crate::kinds::record::Observation;
use crate::kinds::sketch::Sketch;

/// Sums are kept in millionths (exact, order-independent); sums and means are exact to 6
/// decimals.
const MICROS: f64 = 1e6;

/// One measure's accumulator over some records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Accumulator {
    /// Records counted.
    Count(u64),
    /// Matches among records.
    Rate {
        /// Records matching.
        hits: u64,
        /// Records.
        total: u64,
    },
    /// Values summed (sum, avg).
    Sum {
        /// Their sum in millionths.
        micros: i128,
        /// How many.
        values: u64,
    },
    /// The least value.
    Min(Option<f64>),
    /// The greatest value.
    Max(Option<f64>),
    /// The values' sketch (percentiles).
    Quantiles(Sketch),
}

impl Accumulator {
    /// An empty accumulator for `op`.
    pub fn new(op: MeasureOp) -> Self {
        match op {
            MeasureOp::Count => Self::Count(0),
            MeasureOp::Rate => Self::Rate { hits: 0, total: 0 },
            MeasureOp::Sum | MeasureOp::Avg => Self::Sum {
                micros: 0,
                values: 0,
            },
            MeasureOp::Min => Self::Min(None),
            MeasureOp::Max => Self::Max(None),
            MeasureOp::P50 | MeasureOp::P95 | MeasureOp::P99 => Self::Quantiles(Sketch::default()),
        }
    }

    /// Adds one record's observation.
    pub fn observe(&mut self, observation: Observation) {
        match (self, observation) {
            (Self::Count(n), Observation::Hit) => *n += 1,
            (Self::Rate { hits, total }, Observation::Hit) => {
                *hits += 1;
                *total += 1;
            }
            (Self::Rate { total, .. }, Observation::Miss) => *total += 1,
            (Self::Sum { micros, values }, Observation::Value(v)) => {
                // Values are at most 1e15 (`MAX_SUMMED_VALUE`): no realistic count of them
                // reaches the bound.
                *micros = micros.saturating_add((v * MICROS).round() as i128);
                *values += 1;
            }
            (Self::Min(least), Observation::Value(v)) => {
                *least = Some(least.map_or(v, |l| l.min(v)));
            }
            (Self::Max(most), Observation::Value(v)) => {
                *most = Some(most.map_or(v, |m| m.max(v)));
            }
            (Self::Quantiles(sketch), Observation::Value(v)) => sketch.add(v),
            _ => {}
        }
    }

    /// Adds another accumulator of the same measure.
    pub fn merge(&mut self, other: &Accumulator) {
        match (self, other) {
            (Self::Count(a), Self::Count(b)) => *a += b,
            (Self::Rate { hits, total }, Self::Rate { hits: h, total: t }) => {
                *hits += h;
                *total += t;
            }
            (
                Self::Sum { micros, values },
                Self::Sum {
                    micros: m,
                    values: v,
                },
            ) => {
                *micros = micros.saturating_add(*m);
                *values += v;
            }
            (Self::Min(a), Self::Min(b)) => *a = min_max(*a, *b, f64::min),
            (Self::Max(a), Self::Max(b)) => *a = min_max(*a, *b, f64::max),
            (Self::Quantiles(a), Self::Quantiles(b)) => a.merge(b),
            _ => {}
        }
    }

    /// The measure's value (None: no value to compute it from).
    pub fn value(&self, op: MeasureOp) -> Option<f64> {
        match self {
            Self::Count(n) => Some(*n as f64),
            Self::Rate { total: 0, .. } => None,
            Self::Rate { hits, total } => Some(*hits as f64 / *total as f64),
            Self::Sum { values: 0, .. } => None,
            Self::Sum { micros, values } => match op {
                MeasureOp::Avg => Some(*micros as f64 / MICROS / *values as f64),
                _ => Some(*micros as f64 / MICROS),
            },
            Self::Min(v) | Self::Max(v) => *v,
            Self::Quantiles(sketch) => sketch.quantile(op.quantile()?),
        }
    }
}

fn min_max(a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    }
}

/// The accumulators of one pane (or window) of one dimension combination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measures {
    /// Records.
    pub records: u64,
    /// One accumulator per measure, in the kind's order.
    pub accumulators: Vec<Accumulator>,
}

impl Measures {
    /// Empty accumulators for `ops`.
    pub fn new(ops: impl IntoIterator<Item = MeasureOp>) -> Self {
        Self {
            records: 0,
            accumulators: ops.into_iter().map(Accumulator::new).collect(),
        }
    }

    /// Adds one record's observations.
    pub fn observe(&mut self, observations: &[Observation]) {
        self.records += 1;
        for (accumulator, observation) in self.accumulators.iter_mut().zip(observations) {
            accumulator.observe(*observation);
        }
    }

    /// Adds another pane's accumulators.
    pub fn merge(&mut self, other: &Measures) {
        self.records += other.records;
        for (accumulator, other) in self.accumulators.iter_mut().zip(&other.accumulators) {
            accumulator.merge(other);
        }
    }

    /// Every measure's value.
    pub fn values(&self, ops: impl IntoIterator<Item = MeasureOp>) -> Vec<Option<f64>> {
        self.accumulators
            .iter()
            .zip(ops)
            .map(|(accumulator, op)| accumulator.value(op))
            .collect()
    }
}

/// Mean and population standard deviation of `history`; None with fewer than two values.
fn mean_std(history: &[f64]) -> Option<(f64, f64)> {
    if history.len() < 2 {
        return None;
    }
    let n = history.len() as f64;
    let mean = history.iter().sum::<f64>() / n;
    let variance = history.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    Some((mean, variance.sqrt()))
}

/// The z-score of `value` against `history` (None: too little history, or no spread).
pub fn zscore(value: f64, history: &[f64]) -> Option<f64> {
    let (mean, std) = mean_std(history)?;
    (std > 0.0).then(|| (value - mean) / std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Observation::*;

    #[test]
    fn accumulators_merge_in_any_order_to_the_same_values() {
        let ops = [
            MeasureOp::Count,
            MeasureOp::Rate,
            MeasureOp::Sum,
            MeasureOp::Avg,
            MeasureOp::Min,
            MeasureOp::Max,
            MeasureOp::P50,
        ];
        let records: Vec<[Observation; 7]> = (0..101)
            .map(|i| {
                let v = f64::from(i) * 0.1;
                let rate = if i % 4 == 0 { Hit } else { Miss };
                [Hit, rate, Value(v), Value(v), Value(v), Value(v), Value(v)]
            })
            .collect();
        let mut whole = Measures::new(ops);
        for r in &records {
            whole.observe(r);
        }
        let (mut a, mut b) = (Measures::new(ops), Measures::new(ops));
        for (i, r) in records.iter().enumerate().rev() {
            if i % 2 == 0 {
                a.observe(r)
            } else {
                b.observe(r)
            }
        }
        b.merge(&a);
        assert_eq!(b, whole);
        let values = whole.values(ops);
        // 0.0, 0.1, ... 10.0: 101 values summing to 505; a quarter (26) match.
        assert_eq!(values[0], Some(101.0));
        assert_eq!(values[1], Some(26.0 / 101.0));
        assert_eq!(values[2], Some(505.0));
        assert_eq!(values[3], Some(5.0));
        assert_eq!((values[4], values[5]), (Some(0.0), Some(10.0)));
        assert!((values[6].unwrap() - 5.0).abs() <= 0.05, "{values:?}");
        let empty = Measures::new(ops).values(ops);
        assert_eq!(empty, [Some(0.0), None, None, None, None, None, None]);
    }

    #[test]
    fn zscores_need_history_with_spread() {
        assert_eq!(zscore(10.0, &[1.0]), None);
        assert_eq!(zscore(10.0, &[2.0, 2.0, 2.0]), None);
        assert_eq!(zscore(4.0, &[1.0, 3.0]), Some(2.0));
    }
}
