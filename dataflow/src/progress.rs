//! Source progress as data: where each partition stands, emitted by the source next to the rows
//! so that a sink learns from the dataflow itself which input its rows reflect.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Millis;

/// The position of one partition after a read.
///
/// The source emits it at the timely time of the activation that read up to `next_offset`
/// (its capability then); every record before `next_offset` was emitted at that time or later.
/// So once a sink's frontier has passed the position's time, the changes it has seen below that
/// frontier include every effect, below the frontier, of the records before `next_offset`.
/// Effects at later times (open windows) are not covered: resuming from a position also needs
/// the operators' state as of that frontier (a checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Topic or file.
    pub source: Arc<str>,
    /// Partition (file index for files).
    pub partition: u32,
    /// The offset after the last record read.
    pub next_offset: u64,
    /// The partition's event-time watermark (None before its first valid event).
    pub watermark: Option<Millis>,
}

/// The latest position of every partition: positions are folded in order of time, and for one
/// partition a later read never has a smaller offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions(BTreeMap<(Arc<str>, u32), SourcePosition>);

impl Positions {
    /// Takes `position` unless a position further ahead is already known.
    pub fn advance(&mut self, position: &SourcePosition) {
        let key = (Arc::clone(&position.source), position.partition);
        match self.0.get_mut(&key) {
            Some(known) if known.next_offset >= position.next_offset => {}
            Some(known) => *known = position.clone(),
            None => {
                self.0.insert(key, position.clone());
            }
        }
    }

    /// Every partition's latest position, ordered by (source, partition).
    pub fn iter(&self) -> impl Iterator<Item = &SourcePosition> {
        self.0.values()
    }

    /// Whether no position is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: u32, next_offset: u64) -> SourcePosition {
        SourcePosition {
            source: Arc::from("chat"),
            partition,
            next_offset,
            watermark: Some(next_offset * 10),
        }
    }

    #[test]
    fn keeps_the_furthest_position_per_partition() {
        let mut positions = Positions::default();
        for p in [at(0, 5), at(1, 3), at(0, 9), at(0, 7)] {
            positions.advance(&p);
        }
        let got: Vec<_> = positions.iter().cloned().collect();
        assert_eq!(got, [at(0, 9), at(1, 3)]);
    }
}
