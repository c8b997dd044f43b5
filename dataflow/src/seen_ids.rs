//! A partition's memory of the event ids it admitted, so that a retried event counts once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Event, Millis};

/// One remembered id: the first admitted occurrence of `event_id` for its stream and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenId {
    /// The type, a NUL, `stream_id`, a NUL, then `event_id` (validation refuses NUL).
    pub key: String,
    /// Event time of the first occurrence.
    pub ts: Millis,
    /// Offset of the first occurrence.
    pub offset: u64,
}

/// The event ids a partition admitted that are within the lateness horizon.
///
/// An id is remembered while a record at its first occurrence's time would still be admitted:
/// until the partition's oldest admissible time (watermark minus allowed lateness) passes it.
/// Partitions are read in offset order and judged by their own clock, so which occurrence
/// counts is deterministic: the first by offset; every later one within the horizon is a
/// duplicate. At most `capacity` ids are kept: beyond, the oldest by (ts, offset) is forgotten,
/// which is deterministic too, so a producer that never moves its timestamps cannot grow memory.
#[derive(Debug)]
pub struct SeenIds {
    /// Key (see [`SeenId::key`]) → (first ts, first offset).
    first: HashMap<Arc<str>, (Millis, u64)>,
    /// The same keys by first ts, in offset order within a ts. An entry whose id was replaced
    /// since (its ts no longer matches `first`) is stale and skipped.
    by_time: BTreeMap<Millis, VecDeque<Arc<str>>>,
    capacity: usize,
    /// Reused to build lookup keys without allocating per record.
    scratch: String,
}

impl SeenIds {
    /// No ids yet; at most `capacity` remembered.
    pub fn new(capacity: usize) -> Self {
        Self {
            first: HashMap::new(),
            by_time: BTreeMap::new(),
            capacity: capacity.max(1),
            scratch: String::new(),
        }
    }

    /// Ids restored from a checkpoint.
    pub fn restored(capacity: usize, ids: Vec<SeenId>) -> Self {
        let mut seen = Self::new(capacity);
        for id in ids {
            seen.insert(id.key.into(), id.ts, id.offset);
        }
        seen
    }

    /// The offset of the earlier occurrence when `event` repeats an id admitted at or after
    /// `oldest_admissible`; None for a first occurrence or an event without an id.
    pub fn earlier(&mut self, event: &Event, oldest_admissible: Millis) -> Option<u64> {
        if !key_of(event, &mut self.scratch) {
            return None;
        }
        match self.first.get(self.scratch.as_str()) {
            Some(&(ts, offset)) if ts >= oldest_admissible => Some(offset),
            _ => None,
        }
    }

    /// Remembers an admitted event's id, replacing an occurrence that left the horizon.
    pub fn remember(&mut self, event: &Event, offset: u64) {
        if key_of(event, &mut self.scratch) {
            let key: Arc<str> = self.scratch.as_str().into();
            self.insert(key, event.ts, offset);
        }
    }

    /// Forgets the ids whose first occurrence is older than `oldest_admissible`.
    pub fn forget_before(&mut self, oldest_admissible: Millis) {
        while self
            .by_time
            .first_key_value()
            .is_some_and(|(ts, _)| *ts < oldest_admissible)
        {
            self.forget_oldest();
        }
    }

    /// Every remembered id, for a checkpoint.
    pub fn entries(&self) -> Vec<SeenId> {
        let mut ids: Vec<SeenId> = self
            .first
            .iter()
            .map(|(key, &(ts, offset))| SeenId {
                key: key.to_string(),
                ts,
                offset,
            })
            .collect();
        ids.sort_by_key(|id| id.offset);
        ids
    }

    fn insert(&mut self, key: Arc<str>, ts: Millis, offset: u64) {
        self.by_time
            .entry(ts)
            .or_default()
            .push_back(Arc::clone(&key));
        self.first.insert(key, (ts, offset));
        while self.first.len() > self.capacity {
            self.forget_oldest();
        }
    }

    /// Drops the earliest entry of `by_time`, and its id unless it was replaced since.
    fn forget_oldest(&mut self) {
        let Some(mut entry) = self.by_time.first_entry() else {
            return;
        };
        let ts = *entry.key();
        let keys = entry.get_mut();
        let Some(key) = keys.pop_front() else {
            entry.remove();
            return;
        };
        if keys.is_empty() {
            entry.remove();
        }
        if self.first.get(&key).is_some_and(|(first, _)| *first == ts) {
            self.first.remove(&key);
        }
    }
}

/// Writes the event's key into `key`; false when it has no id.
fn key_of(event: &Event, key: &mut String) -> bool {
    let Some(id) = event.event_id.as_deref() else {
        return false;
    };
    key.clear();
    key.push_str(event.kind().name());
    key.push('\0');
    key.push_str(&event.stream_id);
    key.push('\0');
    key.push_str(id);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventBody;

    fn event(stream: &str, id: Option<&str>, ts: Millis) -> Event {
        Event {
            stream_id: stream.into(),
            ts,
            body: EventBody::ViewerCount { viewer_count: 1 },
            event_id: id.map(Into::into),
        }
    }

    fn first_time(seen: &mut SeenIds, e: &Event, offset: u64, oldest: Millis) -> bool {
        let new = seen.earlier(e, oldest).is_none();
        if new {
            seen.remember(e, offset);
        }
        new
    }

    #[test]
    fn ids_repeat_within_the_horizon_per_stream_and_are_forgotten_after() {
        let mut seen = SeenIds::new(100);
        let first = event("s", Some("a"), 1_000);
        assert!(first_time(&mut seen, &first, 7, 0));
        assert_eq!(seen.earlier(&event("s", Some("a"), 5_000), 1_000), Some(7));
        // The same id in another stream, and events without an id, are not duplicates.
        assert_eq!(seen.earlier(&event("t", Some("a"), 1_000), 0), None);
        assert_eq!(seen.earlier(&event("s", None, 1_000), 0), None);
        // Once a record at the first occurrence's time would be late, the id is free again.
        let again = event("s", Some("a"), 9_000);
        assert!(first_time(&mut seen, &again, 12, 1_001));
        assert_eq!(seen.first.len(), 1);
        assert_eq!(seen.earlier(&event("s", Some("a"), 9_000), 2_000), Some(12));
        seen.forget_before(9_001);
        assert!(seen.first.is_empty() && seen.by_time.is_empty());
    }

    /// A producer that never moves its timestamps cannot make a partition remember more than
    /// its capacity: the oldest by (ts, offset) goes first, and a repeat of it then counts.
    #[test]
    fn the_capacity_forgets_the_oldest_first() {
        let mut seen = SeenIds::new(3);
        for (offset, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert!(first_time(
                &mut seen,
                &event("s", Some(id), 5),
                offset as u64,
                0
            ));
        }
        assert_eq!(seen.first.len(), 3);
        assert!(first_time(&mut seen, &event("s", Some("a"), 5), 4, 0));
        assert_eq!(seen.earlier(&event("s", Some("c"), 5), 0), Some(2));
        assert_eq!(seen.earlier(&event("s", Some("b"), 5), 0), None);
    }

    #[test]
    fn a_checkpoint_restores_every_id() {
        let mut seen = SeenIds::new(100);
        for (i, id) in ["x", "y", "z"].into_iter().enumerate() {
            assert!(first_time(
                &mut seen,
                &event("s", Some(id), 100 * i as u64),
                i as u64,
                0
            ));
        }
        let mut restored = SeenIds::restored(100, seen.entries());
        assert_eq!(restored.entries(), seen.entries());
        assert_eq!(restored.earlier(&event("s", Some("y"), 0), 100), Some(1));
        restored.forget_before(150);
        assert_eq!(restored.first.len(), 1);
    }
}
