//! Pre-aggregation where records are read: one source batch's events become one [`PaneDelta`]
//! per (stream, pane), so decoding, sentiment and counting happen on the reading worker and only
//! small deltas cross to the worker that owns the stream.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::pane::Pane;
use crate::category::Category;
use crate::event::{Event, EventBody, Millis, PresenceAction, StreamStatus};
use crate::hashing::FastMap;
use crate::kinds::windows::KindDelta;
use crate::rows::ChatMessage;
use crate::sentiment::{Analyzer, COMPOUND_SCALE};
use crate::summary::ChatLine;

/// A stream_meta record's fields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MetaUpdate {
    /// Event time.
    pub ts: Millis,
    /// New title, if given.
    pub title: Option<String>,
    /// New category, if given.
    pub category: Option<String>,
    /// New status, if given.
    pub status: Option<StreamStatus>,
}

/// What one batch of records adds to one pane of one stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PaneDelta {
    /// The stream.
    pub stream_id: String,
    /// Start of the pane.
    pub pane: Millis,
    /// Additive aggregates (counts, sums, emojis, revenue).
    pub(crate) additive: Pane,
    /// Distinct chat authors.
    pub(crate) chatters: Vec<String>,
    /// Presence actions, as they are order-sensitive per user.
    pub(crate) presence: Vec<(String, Millis, PresenceAction)>,
    /// Viewer-count gauge readings.
    pub(crate) gauges: Vec<(Millis, u64)>,
    /// Metadata updates.
    pub(crate) meta: Vec<MetaUpdate>,
    /// The chat messages with their emotes, for the summaries (empty without them).
    pub(crate) chat: Vec<ChatLine>,
}

/// What sources send to the analytics: a stream's pane delta, or a configured kind's.
// Stream deltas are nearly all of them: boxing them would allocate once per delta for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Delta {
    /// A stream's.
    Stream(PaneDelta),
    /// A configured kind's dimension combination's.
    Kind(KindDelta),
}

impl Delta {
    /// Where it is owned: streams by their id, kinds' combinations by theirs.
    pub fn owner_hash(&self) -> u64 {
        match self {
            Delta::Stream(delta) => super::stream_hash(&delta.stream_id),
            Delta::Kind(delta) => delta.owner_hash(),
        }
    }
}

/// Where a record was read: the identity its chat message keeps.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Topic or file.
    pub source: &'a Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
}

/// Distinct chat texts remembered per worker with their score and category; chat repeats a lot
/// (emote spam), and scoring is the most expensive step per message. Cleared when full, which
/// keeps results identical.
const SENTIMENT_CACHE_LIMIT: usize = 100_000;

/// The cached texts' bytes are bounded too: distinct long messages would otherwise grow the
/// cache by their size, not their number.
const SENTIMENT_CACHE_BYTES: usize = 4 << 20;

/// Groups a batch of events into pane deltas, each timed at the latest time of its members.
///
/// Why that time is safe: all members lie in the same pane, so the latest member time is at most
/// the pane's end, which is at most the end of any window containing the pane; the delta is
/// therefore still applied before any of its windows can be final.
pub struct PaneAggregator {
    pane: u64,
    analyzer: Arc<Analyzer>,
    sentiment_cache: FastMap<String, (i64, Category)>,
    /// Bytes of the texts in `sentiment_cache`.
    sentiment_cache_bytes: usize,
    groups: FastMap<(String, Millis), (Millis, PaneDelta)>,
    /// Whether [`Self::add`] returns chat messages.
    chat_history: bool,
    /// Whether chat messages go into the deltas, for the summaries.
    summaries: bool,
}

impl PaneAggregator {
    /// An aggregator for panes of `pane` ms.
    pub fn new(pane: u64, analyzer: Arc<Analyzer>) -> Self {
        Self {
            pane,
            analyzer,
            sentiment_cache: FastMap::default(),
            sentiment_cache_bytes: 0,
            groups: FastMap::default(),
            chat_history: false,
            summaries: false,
        }
    }

    /// Returns each chat message added with an origin, analysed, for the chat history
    /// (`chat_history`), and keeps it in its delta for the summaries (`summaries`).
    pub fn with_chat(mut self, chat_history: bool, summaries: bool) -> Self {
        self.chat_history = chat_history;
        self.summaries = summaries;
        self
    }

    /// A chat text's compound score (in `COMPOUND_SCALE` units) and category.
    fn analysis(&mut self, text: &str) -> (i64, Category) {
        if let Some(analysis) = self.sentiment_cache.get(text) {
            return *analysis;
        }
        let compound = self.analyzer.polarity_scores(text).compound;
        let analysis = (
            (compound * COMPOUND_SCALE as f64).round() as i64,
            self.analyzer.category(text),
        );
        if self.sentiment_cache.len() >= SENTIMENT_CACHE_LIMIT
            || self.sentiment_cache_bytes + text.len() > SENTIMENT_CACHE_BYTES
        {
            self.sentiment_cache.clear();
            self.sentiment_cache_bytes = 0;
        }
        // A text larger than the whole budget is scored every time rather than cached.
        if text.len() <= SENTIMENT_CACHE_BYTES {
            self.sentiment_cache_bytes += text.len();
            self.sentiment_cache.insert(text.to_owned(), analysis);
        }
        analysis
    }

    /// Adds one event with its timely time; a chat message, given where it was read and with
    /// the chat history on, comes back as a `chat_messages` row.
    pub fn add(
        &mut self,
        event: Event,
        time: Millis,
        origin: Option<Origin<'_>>,
    ) -> Option<ChatMessage> {
        let (compound, category) = match &event.body {
            EventBody::Chat { text, .. } => self.analysis(text),
            _ => (0, Category::Other),
        };
        let pane = event.ts - event.ts % self.pane;
        let key = (event.stream_id, pane);
        let (group_time, delta) = match self.groups.get_mut(&key) {
            Some(group) => group,
            None => self.groups.entry(key.clone()).or_insert_with(|| {
                (
                    time,
                    PaneDelta {
                        stream_id: key.0,
                        pane,
                        ..PaneDelta::default()
                    },
                )
            }),
        };
        *group_time = (*group_time).max(time);
        let additive = &mut delta.additive;
        additive.events += 1;
        let m = &mut additive.metrics;
        match event.body {
            EventBody::Chat { user_id, text } => {
                m.add_chat(compound, category);
                let wanted = self.chat_history || self.summaries;
                let message = origin.filter(|_| wanted).map(|origin| ChatMessage {
                    stream_id: delta.stream_id.clone(),
                    ts: event.ts,
                    source: Arc::clone(origin.source),
                    partition: origin.partition,
                    offset: origin.offset,
                    user_id: user_id.clone(),
                    text,
                    sentiment: compound,
                    category,
                });
                delta.chatters.push(user_id);
                if let (Some(message), true) = (&message, self.summaries) {
                    let emotes = self.analyzer.emotes(&message.text);
                    delta.chat.push(ChatLine::new(message.clone(), emotes));
                }
                return message.filter(|_| self.chat_history);
            }
            EventBody::Reaction { emoji, .. } => {
                m.reactions += 1;
                match additive.emojis.get_mut(emoji.as_str()) {
                    Some(count) => *count += 1,
                    None => {
                        additive.emojis.insert(emoji, 1);
                    }
                }
            }
            EventBody::Presence { user_id, action } => {
                match action {
                    PresenceAction::Join => m.viewer_joins += 1,
                    PresenceAction::Leave => m.viewer_leaves += 1,
                    PresenceAction::Heartbeat => {}
                }
                delta.presence.push((user_id, event.ts, action));
            }
            EventBody::ViewerCount { viewer_count } => delta.gauges.push((event.ts, viewer_count)),
            EventBody::Transaction {
                kind,
                amount,
                currency,
                ..
            } => {
                m.transactions += 1;
                let entry = additive.revenue.entry((kind, currency)).or_default();
                entry.0 += 1;
                entry.1 += i128::from(amount);
            }
            EventBody::StreamMeta {
                title,
                category,
                status,
            } => {
                delta.meta.push(MetaUpdate {
                    ts: event.ts,
                    title,
                    category,
                    status,
                });
            }
        }
        None
    }

    /// Takes the deltas gathered so far, each with its time.
    pub fn drain(&mut self) -> impl Iterator<Item = (Millis, PaneDelta)> + '_ {
        self.groups.drain().map(|(_, (time, mut delta))| {
            delta.chatters.sort_unstable();
            delta.chatters.dedup();
            (time, delta)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentiment::{Analyzer, Lexicons};

    /// Long distinct chat texts (a flood of unique 10 kB messages) cannot grow the sentiment
    /// cache past its byte budget, however many there are.
    #[test]
    fn the_sentiment_cache_is_bounded_in_bytes() {
        let mut aggregator =
            PaneAggregator::new(1_000, Arc::new(Analyzer::new(Lexicons::builtin())));
        let filler = "word ".repeat(2_000);
        for i in 0..600u64 {
            let event = Event {
                stream_id: "s".into(),
                ts: i,
                body: EventBody::Chat {
                    user_id: "u".into(),
                    text: format!("{i} {filler}"),
                },
                event_id: None,
            };
            aggregator.add(event, i, None);
            let cached: usize = aggregator.sentiment_cache.keys().map(String::len).sum();
            assert!(
                cached <= SENTIMENT_CACHE_BYTES,
                "{cached} bytes of cached text after {i} messages"
            );
        }
        assert_eq!(aggregator.drain().count(), 1);
    }
}
