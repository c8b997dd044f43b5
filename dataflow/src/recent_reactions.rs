//! The `reactions` rows a source emits when its plan asks for them: of each batch it reads,
//! every stream's latest admitted reactions, so a live view's "last reactions" come from the
//! dataflow (read from Kafka or posted over HTTP alike) at a cost bounded per stream and batch.

use crate::event::{Event, EventBody};
use crate::hashing::FastMap;
use crate::rows::{Reaction, Row, RECENT_REACTIONS};

/// The reactions of the batch being read.
#[derive(Debug, Default)]
pub struct RecentReactions {
    enabled: bool,
    read: Vec<Reaction>,
}

impl RecentReactions {
    /// Collects reactions only when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            read: Vec::new(),
        }
    }

    /// Notes an admitted event (before the analytics take it).
    pub fn note(&mut self, event: &Event) {
        if let (true, EventBody::Reaction { user_id, emoji }) = (self.enabled, &event.body) {
            self.read.push(Reaction {
                stream_id: event.stream_id.clone(),
                ts: event.ts,
                user_id: user_id.clone(),
                emoji: emoji.clone(),
                event_id: event.event_id.clone(),
            });
        }
    }

    /// The batch's rows: each stream's latest [`RECENT_REACTIONS`] in read order; the batch is
    /// forgotten.
    pub fn drain(&mut self) -> impl Iterator<Item = Row> + '_ {
        let mut later: FastMap<&str, usize> = FastMap::default();
        let keep: Vec<bool> = self
            .read
            .iter()
            .rev()
            .map(|reaction| {
                let count = later.entry(reaction.stream_id.as_str()).or_default();
                *count += 1;
                *count <= RECENT_REACTIONS
            })
            .collect();
        let mut keep = keep.into_iter().rev();
        self.read.retain(|_| keep.next().unwrap_or(false));
        self.read
            .drain(..)
            .map(|reaction| Row::Reaction(Box::new(reaction)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reaction(stream: &str, user: &str) -> Event {
        Event {
            stream_id: stream.into(),
            ts: 1_000,
            body: EventBody::Reaction {
                user_id: user.into(),
                emoji: "🔥".into(),
            },
            event_id: None,
        }
    }

    fn users(rows: impl Iterator<Item = Row>) -> Vec<String> {
        rows.map(|row| match row {
            Row::Reaction(r) => format!("{}/{}", r.stream_id, r.user_id),
            other => panic!("{other:?}"),
        })
        .collect()
    }

    #[test]
    fn each_stream_keeps_its_latest_in_read_order() {
        let mut recent = RecentReactions::new(true);
        for i in 0..15 {
            recent.note(&reaction("busy", &format!("u{i}")));
            if i == 3 {
                recent.note(&reaction("quiet", "q"));
            }
        }
        let expected: Vec<String> = std::iter::once("quiet/q".to_owned())
            .chain((5..15).map(|i| format!("busy/u{i}")))
            .collect();
        assert_eq!(users(recent.drain()), expected);
        assert_eq!(users(recent.drain()), Vec::<String>::new(), "drained");
    }

    #[test]
    fn off_it_keeps_nothing() {
        let mut recent = RecentReactions::new(false);
        recent.note(&reaction("s", "u"));
        assert_eq!(recent.drain().count(), 0);
    }
}
