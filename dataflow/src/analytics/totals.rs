//! Per-stream totals and metadata (`stream_totals`), independent of arrival order.

use std::collections::BTreeSet;

use crate::event::{Event, EventBody, Millis, StreamStatus};
use crate::rows::StreamTotals;

/// Running totals of one stream.
#[derive(Debug, Default)]
pub(crate) struct TotalsState {
    id: String,
    /// Latest (ts, value); ties go to the larger value so the result is order-independent.
    title: Option<(Millis, String)>,
    category: Option<(Millis, String)>,
    /// Latest offline status as (ts, rank): at the same millisecond offline outranks live.
    last_offline: Option<(Millis, u8)>,
    /// Times of live statuses after the latest offline one: the current session.
    lives_after_offline: BTreeSet<Millis>,
    chat_messages: u64,
    reactions: u64,
    transactions: u64,
}

const LIVE_RANK: u8 = 0;
const OFFLINE_RANK: u8 = 1;

fn keep_latest(slot: &mut Option<(Millis, String)>, ts: Millis, value: &Option<String>) {
    if let Some(value) = value {
        let candidate = (ts, value.clone());
        if slot.as_ref().is_none_or(|current| candidate > *current) {
            *slot = Some(candidate);
        }
    }
}

impl TotalsState {
    pub(crate) fn new(id: String) -> Self {
        Self {
            id,
            ..Self::default()
        }
    }

    pub(crate) fn observe(&mut self, event: &Event) {
        match &event.body {
            EventBody::Chat { .. } => self.chat_messages += 1,
            EventBody::Reaction { .. } => self.reactions += 1,
            EventBody::Transaction { .. } => self.transactions += 1,
            EventBody::StreamMeta {
                title,
                category,
                status,
            } => {
                keep_latest(&mut self.title, event.ts, title);
                keep_latest(&mut self.category, event.ts, category);
                match status {
                    Some(StreamStatus::Live)
                        if self.last_offline.is_none_or(|o| (event.ts, LIVE_RANK) > o) =>
                    {
                        self.lives_after_offline.insert(event.ts);
                    }
                    Some(StreamStatus::Offline) => {
                        let key = (event.ts, OFFLINE_RANK);
                        if self.last_offline.is_none_or(|o| key > o) {
                            self.last_offline = Some(key);
                            self.lives_after_offline
                                .retain(|live| (*live, LIVE_RANK) > key);
                        }
                    }
                    _ => {}
                }
            }
            EventBody::Presence { .. } | EventBody::ViewerCount { .. } => {}
        }
    }

    pub(crate) fn row(&self, peak_viewers: u64) -> StreamTotals {
        let status = match (self.lives_after_offline.is_empty(), self.last_offline) {
            (false, _) => Some(StreamStatus::Live),
            (true, Some(_)) => Some(StreamStatus::Offline),
            (true, None) => None,
        };
        StreamTotals {
            stream_id: self.id.clone(),
            title: self.title.as_ref().map(|(_, t)| t.clone()),
            category: self.category.as_ref().map(|(_, c)| c.clone()),
            status: status.map(|s| s.name().to_owned()),
            live_since: self.lives_after_offline.first().copied(),
            chat_messages: self.chat_messages,
            reactions: self.reactions,
            transactions: self.transactions,
            peak_viewers,
        }
    }
}
