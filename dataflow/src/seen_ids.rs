//! A partition's memory of the event ids it admitted, so that a retried event counts once.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::event::{Event, Millis};

/// One remembered id: the first admitted occurrence of `event_id` in `stream_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenId {
    /// `stream_id`, a NUL, then `event_id` (validation refuses NUL in both).
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
/// duplicate. Memory is bounded by what one partition admits within the horizon.
#[derive(Debug, Default)]
pub struct SeenIds {
    /// Key (see [`SeenId::key`]) → (first ts, first offset).
    first: HashMap<Box<str>, (Millis, u64)>,
    /// The same keys by first ts, so they are forgotten in time order.
    by_time: BTreeMap<Millis, Vec<Box<str>>>,
    /// Reused to build lookup keys without allocating per record.
    scratch: String,
}

impl SeenIds {
    /// Ids restored from a checkpoint.
    pub fn restored(ids: Vec<SeenId>) -> Self {
        let mut seen = Self::default();
        for id in ids {
            seen.insert(id.key.into_boxed_str(), id.ts, id.offset);
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
        if !key_of(event, &mut self.scratch) {
            return;
        }
        let key: Box<str> = self.scratch.as_str().into();
        if let Some((ts, _)) = self.first.remove(&key) {
            self.unindex(ts, &key);
        }
        self.insert(key, event.ts, offset);
    }

    /// Forgets the ids whose first occurrence is older than `oldest_admissible`.
    pub fn forget_before(&mut self, oldest_admissible: Millis) {
        while let Some(entry) = self.by_time.first_entry() {
            if *entry.key() >= oldest_admissible {
                break;
            }
            for key in entry.remove() {
                self.first.remove(&key);
            }
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

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    fn insert(&mut self, key: Box<str>, ts: Millis, offset: u64) {
        self.by_time.entry(ts).or_default().push(key.clone());
        self.first.insert(key, (ts, offset));
    }

    fn unindex(&mut self, ts: Millis, key: &str) {
        if let Some(keys) = self.by_time.get_mut(&ts) {
            keys.retain(|k| &**k != key);
            if keys.is_empty() {
                self.by_time.remove(&ts);
            }
        }
    }
}

/// Writes the event's key into `key`; false when it has no id.
fn key_of(event: &Event, key: &mut String) -> bool {
    let Some(id) = event.event_id.as_deref() else {
        return false;
    };
    key.clear();
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

    #[test]
    fn ids_repeat_within_the_horizon_per_stream_and_are_forgotten_after() {
        let mut seen = SeenIds::default();
        let first = event("s", Some("a"), 1_000);
        assert_eq!(seen.earlier(&first, 0), None);
        seen.remember(&first, 7);
        assert_eq!(seen.earlier(&event("s", Some("a"), 5_000), 1_000), Some(7));
        // The same id in another stream, and events without an id, are not duplicates.
        assert_eq!(seen.earlier(&event("t", Some("a"), 1_000), 0), None);
        assert_eq!(seen.earlier(&event("s", None, 1_000), 0), None);
        // Once a record at the first occurrence's time would be late, the id is free again.
        let again = event("s", Some("a"), 9_000);
        assert_eq!(seen.earlier(&again, 1_001), None);
        seen.remember(&again, 12);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen.earlier(&event("s", Some("a"), 9_000), 2_000), Some(12));
        seen.forget_before(9_001);
        assert!(seen.is_empty());
        assert!(seen.by_time.is_empty());
    }

    #[test]
    fn a_checkpoint_restores_every_id() {
        let mut seen = SeenIds::default();
        for (i, id) in ["x", "y", "z"].into_iter().enumerate() {
            let e = event("s", Some(id), 100 * i as u64);
            assert_eq!(seen.earlier(&e, 0), None);
            seen.remember(&e, i as u64);
        }
        let mut restored = SeenIds::restored(seen.entries());
        assert_eq!(restored.entries(), seen.entries());
        assert_eq!(restored.earlier(&event("s", Some("y"), 0), 100), Some(1));
        restored.forget_before(150);
        assert_eq!(restored.len(), 1);
    }
}
