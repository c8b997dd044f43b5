//! Pre-aggregation where records are read: one source batch's events become one [`PaneDelta`]
//! per (stream, pane), so decoding, sentiment and counting happen on the reading worker and only
//! small deltas cross to the worker that owns the stream.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::pane::Pane;
use super::text_cache::TextCache;
use crate::event::{Event, EventBody, Millis, PresenceAction, StreamStatus};
use crate::hashing::FastMap;
use crate::kinds::windows::KindDelta;
use crate::rows::ChatMessage;
use crate::sentiment::Analyzer;
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
    /// The chat messages with their text's features, for the summaries (empty without them).
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

/// Groups a batch of events into pane deltas, each timed at the latest time of its members.
///
/// Why that time is safe: all members lie in the same pane, so the latest member time is at most
/// the pane's end, which is at most the end of any window containing the pane; the delta is
/// therefore still applied before any of its windows can be final.
pub struct PaneAggregator {
    pane: u64,
    texts: TextCache,
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
            texts: TextCache::new(analyzer, false),
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
        // Summary lines are made from the features the cache reads, so it reads them exactly
        // when the summaries are on.
        self.texts = TextCache::new(self.texts.analyzer(), summaries);
        self
    }

    /// Adds one event with its timely time; a chat message, given where it was read and with
    /// the chat history on, comes back as a `chat_messages` row.
    pub fn add(
        &mut self,
        event: Event,
        time: Millis,
        origin: Option<Origin<'_>>,
    ) -> Option<Arc<ChatMessage>> {
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
                let analysis = self.texts.analyse(&text);
                m.add_chat(analysis.compound, analysis.category);
                let wanted = self.chat_history || self.summaries;
                let message = origin.filter(|_| wanted).map(|origin| {
                    Arc::new(ChatMessage {
                        stream_id: delta.stream_id.clone(),
                        ts: event.ts,
                        source: Arc::clone(origin.source),
                        partition: origin.partition,
                        offset: origin.offset,
                        user_id: user_id.clone(),
                        text,
                        sentiment: analysis.compound,
                        category: analysis.category,
                    })
                });
                delta.chatters.push(user_id);
                if let (Some(message), Some(features)) = (&message, analysis.features) {
                    delta
                        .chat
                        .push(ChatLine::with_features(Arc::clone(message), features));
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
