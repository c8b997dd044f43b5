//! Per-partition event-time clock: the watermark and the exact lateness rule of DESIGN §4a.

use crate::event::Millis;

/// Whether a record is admitted, judged against the watermark *before* it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the allowance: it enters the dataflow.
    Accepted,
    /// Older than watermark minus allowed lateness: dropped and dead-lettered.
    Late {
        /// The partition's watermark when the record was read.
        watermark: Millis,
    },
}

/// Tracks one partition, read in order.
#[derive(Debug, Clone)]
pub struct PartitionClock {
    max_seen: Option<Millis>,
    max_out_of_orderness: Millis,
    allowed_lateness: Millis,
}

impl PartitionClock {
    /// A clock that has seen nothing.
    pub fn new(max_out_of_orderness: Millis, allowed_lateness: Millis) -> Self {
        Self {
            max_seen: None,
            max_out_of_orderness,
            allowed_lateness,
        }
    }

    /// A clock resuming from a checkpoint, having seen events up to `max_seen`.
    pub fn restored(self, max_seen: Option<Millis>) -> Self {
        Self { max_seen, ..self }
    }

    /// The largest event time accepted so far.
    pub fn max_seen(&self) -> Option<Millis> {
        self.max_seen
    }

    /// The watermark: largest event time seen minus the out-of-orderness bound (None before any
    /// record, or while that would be negative).
    pub fn watermark(&self) -> Option<Millis> {
        self.max_seen
            .and_then(|m| m.checked_sub(self.max_out_of_orderness))
    }

    /// The oldest event time the partition still admits: records before it are late.
    pub fn oldest_admissible(&self) -> Millis {
        self.watermark()
            .map_or(0, |w| w.saturating_sub(self.allowed_lateness))
    }

    /// Judges a record against the partition's watermark, then against `floor` (a watermark
    /// the run as a whole has passed: its source's capability), and only when accepted advances
    /// the clock: a record refused as late moves no watermark.
    pub fn admit(&mut self, ts: Millis, floor: Millis) -> Admission {
        let admissible = |watermark: Millis| ts.saturating_add(self.allowed_lateness) >= watermark;
        if let Some(watermark) = self.watermark().filter(|w| !admissible(*w)) {
            return Admission::Late { watermark };
        }
        if !admissible(floor) {
            return Admission::Late { watermark: floor };
        }
        self.max_seen = Some(self.max_seen.map_or(ts, |m| m.max(ts)));
        Admission::Accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_judged_against_the_watermark_before_the_record() {
        let mut clock = PartitionClock::new(2_000, 60_000);
        assert_eq!(clock.admit(100_000, 0), Admission::Accepted);
        assert_eq!(clock.watermark(), Some(98_000));
        // watermark - lateness = 38_000: 38_000 is kept, 37_999 is late.
        assert_eq!(clock.admit(38_000, 0), Admission::Accepted);
        assert_eq!(
            clock.admit(37_999, 0),
            Admission::Late { watermark: 98_000 }
        );
        assert_eq!(clock.oldest_admissible(), 38_000);
        assert_eq!(clock.watermark(), Some(98_000));
    }

    /// A record late against the floor (the run's watermark, past this partition's) is refused
    /// and leaves the partition's watermark where it was.
    #[test]
    fn a_record_late_against_the_floor_moves_no_watermark() {
        let mut clock = PartitionClock::new(2_000, 60_000);
        assert_eq!(clock.admit(100_000, 0), Admission::Accepted);
        assert_eq!(
            clock.admit(150_000, 300_000),
            Admission::Late { watermark: 300_000 }
        );
        assert_eq!(clock.watermark(), Some(98_000));
        assert_eq!(clock.admit(240_000, 300_000), Admission::Accepted);
        assert_eq!(clock.watermark(), Some(238_000));
    }
}
