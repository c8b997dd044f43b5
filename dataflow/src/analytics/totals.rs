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

    /// Keeps, of the live statuses before `horizon`, only the earliest: no record lands below
    /// the horizon any more, so an offline status (the only thing that removes them) would
    /// remove all of them at once, and until then only the earliest (`live_since`) and that
    /// there is one count. A stream re-announced live every few seconds kept every one.
    pub(crate) fn retire(&mut self, horizon: Millis) {
        let mut below = self
            .lives_after_offline
            .iter()
            .take_while(|l| **l < horizon);
        if below.nth(1).is_none() {
            return; // nothing to drop (nearly always)
        }
        let mut kept = self.lives_after_offline.split_off(&horizon);
        if let Some(earliest) = self.lives_after_offline.first() {
            kept.insert(*earliest);
        }
        self.lives_after_offline = kept;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(ts: Millis, status: StreamStatus) -> MetaUpdate {
        MetaUpdate {
            ts,
            title: None,
            category: None,
            status: Some(status),
        }
    }

    /// Retiring keeps one live status below the horizon, and the rows stay those of the whole
    /// history: before and after an offline status at or past the horizon.
    #[test]
    fn retiring_keeps_the_earliest_live_below_the_horizon_and_the_same_rows() {
        let (mut kept, mut retired) = (TotalsState::new("s".into()), TotalsState::new("s".into()));
        for ts in (1_000..2_000).step_by(10) {
            kept.meta(&status(ts, StreamStatus::Live));
            retired.meta(&status(ts, StreamStatus::Live));
        }
        retired.retire(1_500);
        assert_eq!(retired.lives_after_offline.len(), 51);
        assert_eq!(retired.row(0), kept.row(0));
        for update in [
            status(1_600, StreamStatus::Live),
            status(1_700, StreamStatus::Offline),
        ] {
            kept.meta(&update);
            retired.meta(&update);
            assert_eq!(retired.row(0), kept.row(0));
        }
        assert_eq!(retired.row(0).status.as_deref(), Some("live"));
        assert_eq!(retired.row(0).live_since, Some(1_710));
        retired.meta(&status(2_000, StreamStatus::Offline));
        assert_eq!(retired.row(0).status.as_deref(), Some("offline"));
        assert!(retired.lives_after_offline.is_empty());
    }
}
