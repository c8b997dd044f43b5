//! Per-stream totals and metadata (`stream_totals`), independent of arrival order.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::delta::MetaUpdate;
use crate::event::{Millis, StreamStatus};
use crate::rows::StreamTotals;

/// Running totals of one stream.
#[derive(Debug, Default, Serialize, Deserialize)]
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

    /// Counts events of a pane delta.
    pub(crate) fn count(&mut self, chat_messages: u64, reactions: u64, transactions: u64) {
        self.chat_messages += chat_messages;
        self.reactions += reactions;
        self.transactions += transactions;
    }

    /// Applies a stream_meta record.
    pub(crate) fn meta(&mut self, update: &MetaUpdate) {
        keep_latest(&mut self.title, update.ts, &update.title);
        keep_latest(&mut self.category, update.ts, &update.category);
        match update.status {
            Some(StreamStatus::Live)
                if self.last_offline.is_none_or(|o| (update.ts, LIVE_RANK) > o) =>
            {
                self.lives_after_offline.insert(update.ts);
            }
            Some(StreamStatus::Offline) => {
                let key = (update.ts, OFFLINE_RANK);
                if self.last_offline.is_none_or(|o| key > o) {
                    self.last_offline = Some(key);
                    self.lives_after_offline
                        .retain(|live| (*live, LIVE_RANK) > key);
                }
            }
            _ => {}
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
