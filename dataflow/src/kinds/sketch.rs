//! A mergeable quantile sketch (DDSketch, relative error 1%): values go to logarithmic buckets
//! kept in a sorted map, so merging adds bucket counts and the result does not depend on the
//! order of values or merges (windows made of panes, records spread over workers). Written here
//! rather than taken from a crate: the crates keep dense stores that collapse buckets in an
//! order-dependent way, and the sketch must be serializable into checkpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Relative accuracy of the quantiles.
pub const RELATIVE_ERROR: f64 = 0.01;

/// Values at most this (in absolute value) count as zero.
const MIN_INDEXED: f64 = 1e-9;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)
}

/// The bucket of a positive value: ceil(log_γ(value)).
pub fn bucket(value: f64) -> i32 {
    (value.ln() / gamma().ln()).ceil() as i32
}

/// A bucket's representative value: within the relative error of every value in it.
pub fn bucket_value(index: i32) -> f64 {
    let gamma = gamma();
    2.0 * gamma.powi(index) / (gamma + 1.0)
}

/// Bucket counts of positive values, of negative values (by their magnitude), and of zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sketch {
    positive: BTreeMap<i32, u64>,
    negative: BTreeMap<i32, u64>,
    zeros: u64,
}

impl Sketch {
    /// Adds a finite value.
    pub fn add(&mut self, value: f64) {
        if value > MIN_INDEXED {
            *self.positive.entry(bucket(value)).or_default() += 1;
        } else if value < -MIN_INDEXED {
            *self.negative.entry(bucket(-value)).or_default() += 1;
        } else {
            self.zeros += 1;
        }
    }

    /// Adds another sketch's counts.
    pub fn merge(&mut self, other: &Sketch) {
        for (index, count) in &other.positive {
            *self.positive.entry(*index).or_default() += count;
        }
        for (index, count) in &other.negative {
            *self.negative.entry(*index).or_default() += count;
        }
        self.zeros += other.zeros;
    }

    /// Values added.
    pub fn count(&self) -> u64 {
        self.positive.values().sum::<u64>() + self.negative.values().sum::<u64>() + self.zeros
    }

    /// The `q` quantile (0..=1): the value of rank floor(q·(n−1)) in ascending order, within
    /// the relative error; None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (n - 1) as f64).floor() as u64;
        let mut seen = 0;
        // Ascending: the most negative first (the largest magnitude), then zeros, then positive.
        for (index, count) in self.negative.iter().rev() {
            seen += count;
            if seen > rank {
                return Some(-bucket_value(*index));
            }
        }
        seen += self.zeros;
        if seen > rank {
            return Some(0.0);
        }
        for (index, count) in &self.positive {
            seen += count;
            if seen > rank {
                return Some(bucket_value(*index));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        values[(q * (values.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_are_within_the_relative_error_and_merges_do_not_matter() {
        let mut values: Vec<f64> = (0..5_000u64)
            .map(|i| ((i * 7919) % 100_000) as f64 / 3.0 - 1_000.0)
            .collect();
        let mut whole = Sketch::default();
        let (mut left, mut right) = (Sketch::default(), Sketch::default());
        for (i, v) in values.iter().enumerate() {
            whole.add(*v);
            if i % 3 == 0 {
                left.add(*v)
            } else {
                right.add(*v)
            }
        }
        right.merge(&left);
        assert_eq!(right, whole, "merging in any split gives the same sketch");
        for q in [0.0, 0.01, 0.5, 0.95, 0.99, 1.0] {
            let truth = exact(&mut values, q);
            let estimate = whole.quantile(q).unwrap();
            assert!(
                (estimate - truth).abs() <= RELATIVE_ERROR * truth.abs() + 1e-9,
                "q {q}: {estimate} vs {truth}"
            );
        }
        assert_eq!(Sketch::default().quantile(0.5), None);
    }
}
