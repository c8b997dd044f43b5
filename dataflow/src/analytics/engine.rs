//! The analytics of all streams owned by one worker: events in, row changes out. Pure and
//! deterministic; the timely operator only feeds it records and frontiers.

use std::sync::Arc;

use super::plan::Plan;
use super::stream_state::{RowChanges, StreamState};
use crate::config::PipelineConfig;
use crate::error::Result;
use crate::event::{Event, EventBody};
use crate::hashing::FastMap;
use crate::sentiment::{Analyzer, COMPOUND_SCALE};

/// Distinct chat texts remembered per worker; chat repeats a lot (emote spam), and scoring is the
/// most expensive step per message. Cleared when full, which keeps results identical.
const SENTIMENT_CACHE_LIMIT: usize = 100_000;

/// Window analytics over the streams of one worker.
pub struct Engine {
    plan: Plan,
    streams: FastMap<String, StreamState>,
    analyzer: Arc<Analyzer>,
    sentiment_cache: FastMap<String, i64>,
    ignored_below_horizon: u64,
}

impl Engine {
    /// An engine for a validated configuration.
    pub fn new(config: &PipelineConfig, analyzer: Arc<Analyzer>) -> Result<Self> {
        Ok(Self {
            plan: Plan::new(config)?,
            streams: FastMap::default(),
            analyzer,
            sentiment_cache: FastMap::default(),
            ignored_below_horizon: 0,
        })
    }

    fn compound(&mut self, text: &str) -> i64 {
        if let Some(score) = self.sentiment_cache.get(text) {
            return *score;
        }
        if self.sentiment_cache.len() >= SENTIMENT_CACHE_LIMIT {
            self.sentiment_cache.clear();
        }
        let compound = self.analyzer.polarity_scores(text).compound;
        let scaled = (compound * COMPOUND_SCALE as f64).round() as i64;
        self.sentiment_cache.insert(text.to_owned(), scaled);
        scaled
    }

    /// Adds one event.
    pub fn apply(&mut self, event: &Event) {
        let compound = match &event.body {
            EventBody::Chat { text, .. } => Some(self.compound(text)),
            _ => None,
        };
        let state = match self.streams.get_mut(&event.stream_id) {
            Some(state) => state,
            None => self
                .streams
                .entry(event.stream_id.clone())
                .or_insert_with(|| StreamState::new(event.stream_id.clone(), &self.plan)),
        };
        if !state.apply(event, &self.plan, compound) {
            self.ignored_below_horizon += 1;
        }
    }

    /// Emits the row changes that bring every stream up to `frontier` (None: input exhausted,
    /// every window final).
    pub fn advance(&mut self, frontier: Option<u64>, out: &mut RowChanges) {
        for state in self.streams.values_mut() {
            state.advance(frontier, &self.plan, out);
        }
    }

    /// Events that arrived after every window they belong to was final (a frontier moved by idle
    /// partitions ahead of the lateness bound); they cannot change results and are not applied.
    pub fn ignored_below_horizon(&self) -> u64 {
        self.ignored_below_horizon
    }
}
