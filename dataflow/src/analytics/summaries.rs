//! A stream's chat summaries: its messages are put in event order once their panes are final
//! (no earlier message can arrive any more), and after every `summary.every`-th one the latest
//! messages are summarized. The order, and so every summary, is the same however the input was
//! split into partitions, batches and workers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::stream_state::RowChanges;
use crate::config::SummaryConfig;
use crate::event::Millis;
use crate::rows::Row;
use crate::summary::{ChatLine, SummaryWindow};

/// A message's place in its stream's event order: time, then where it was read.
type Order = (Millis, Arc<str>, u32, u64);

/// What a stream keeps for its summaries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SummaryState {
    /// Messages whose place in the order is not settled yet.
    pending: BTreeMap<Order, ChatLine>,
    /// Messages settled so far.
    settled: u64,
    /// The latest settled messages a later summary can still cover (at most `window`, within
    /// `horizon` of the latest), oldest first.
    recent: SummaryWindow,
    /// Every message before this time is settled.
    settled_below: Millis,
}

impl SummaryState {
    /// Adds a delta's messages. The source admits no message more than the allowed lateness
    /// behind its capability, so none arrives behind the settled order; should one, it is left
    /// out rather than break the order.
    pub(crate) fn add(&mut self, lines: Vec<ChatLine>) {
        for line in lines {
            let m = &line.message;
            if m.ts >= self.settled_below {
                let order = (m.ts, Arc::clone(&m.source), m.partition, m.offset);
                self.pending.insert(order, line);
            }
        }
    }

    /// Settles the messages before `below` (None: every one) in event order, emitting a summary
    /// after every `every`-th.
    pub(crate) fn settle(
        &mut self,
        stream_id: &str,
        below: Option<Millis>,
        config: &SummaryConfig,
        out: &mut RowChanges,
    ) {
        let later = match below {
            Some(below) => self.pending.split_off(&(below, Arc::from(""), 0, 0)),
            None => BTreeMap::new(),
        };
        let horizon = config.horizon.0;
        for (_, line) in std::mem::replace(&mut self.pending, later) {
            let ts = line.message.ts;
            self.recent.push_back(line);
            while self.recent.len() > config.window
                || self
                    .recent
                    .front()
                    .is_some_and(|l| l.message.ts.saturating_add(horizon) < ts)
            {
                self.recent.pop_front();
            }
            self.settled += 1;
            if self.settled.is_multiple_of(config.every) {
                let summary = self
                    .recent
                    .summarize(stream_id, self.settled / config.every);
                out.push((Row::ChatSummary(Box::new(summary)), 1));
            }
        }
        if let Some(below) = below {
            self.settled_below = self.settled_below.max(below);
            // Every later message is at `below` or after: these are beyond its horizon.
            while self
                .recent
                .front()
                .is_some_and(|l| l.message.ts.saturating_add(horizon) < below)
            {
                self.recent.pop_front();
            }
        }
    }

    /// Whether nothing is kept (a quiet stream keeps no message).
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.recent.is_empty()
    }
}
