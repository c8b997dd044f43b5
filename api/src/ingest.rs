//! HTTP ingest and the generator's feed: records are validated (the same decoder the dataflow
//! uses, arrival time standing in for a missing `ts`), reactions are remembered for "last
//! reactions", and everything, refused records included, enters the live input, so refused
//! records also reach the dead-letter path and its counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crowdpulse_connectors::generator::Generated;
use crowdpulse_connectors::live_input::{wall_clock_ms, LiveInput, PushError};
use crowdpulse_dataflow::codec::{decode_json, DecodeContext};
use crowdpulse_dataflow::event::{Event, EventBody, Millis};

use crate::error::ApiError;
use crate::models::{IngestResult, RecentReaction, Rejected};
use crate::store::ViewStore;

/// Seconds a client is asked to wait when the input queue is full.
const RETRY_AFTER_SECONDS: u64 = 1;

/// Ingest counters.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Records accepted over HTTP.
    pub accepted: AtomicU64,
    /// Records refused over HTTP.
    pub rejected: AtomicU64,
    /// Requests answered 503 because the input was full.
    pub busy: AtomicU64,
}

/// Entry point of records into the live dataflow.
#[derive(Debug)]
pub struct Ingest {
    input: LiveInput,
    store: Arc<ViewStore>,
    /// Counters for `/metrics`.
    pub counters: IngestCounters,
}

fn reaction_of(event: &Event) -> Option<RecentReaction> {
    match &event.body {
        EventBody::Reaction { user_id, emoji } => Some(RecentReaction {
            stream_id: event.stream_id.clone(),
            user_id: user_id.clone(),
            emoji: emoji.clone(),
            ts: event.ts,
        }),
        _ => None,
    }
}

impl Ingest {
    /// Ingest into `input`, remembering reactions in `store`.
    pub fn new(input: LiveInput, store: Arc<ViewStore>) -> Self {
        Self {
            input,
            store,
            counters: IngestCounters::default(),
        }
    }

    fn remember(&self, events: &[Event]) {
        for reaction in events.iter().filter_map(reaction_of) {
            self.store.record_reaction(reaction);
        }
    }

    /// Validates and queues records received over HTTP; answers what was accepted and refused.
    pub fn submit(&self, records: &[&[u8]]) -> Result<IngestResult, ApiError> {
        let arrival: Millis = wall_clock_ms();
        let context = DecodeContext {
            fallback_ts: Some(arrival),
            ..DecodeContext::default()
        };
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match decode_json(record, &context) {
                Ok(event) => accepted.push(event),
                Err(error) => rejected.push(Rejected {
                    index,
                    error: error.to_string(),
                }),
            }
        }
        // Every record is queued with the stream key it decoded to (refused ones with an empty
        // key), in request order per stream.
        let keys: Vec<&[u8]> = {
            let mut valid = accepted.iter();
            let mut refused = rejected.iter().peekable();
            (0..records.len())
                .map(|index| match refused.peek() {
                    Some(r) if r.index == index => {
                        refused.next();
                        &b""[..]
                    }
                    _ => valid.next().map_or(&b""[..], |e| e.stream_id.as_bytes()),
                })
                .collect()
        };
        let queued = keys.into_iter().zip(records.iter().map(|r| r.to_vec()));
        match self.input.push(queued, arrival) {
            Ok(()) => {}
            Err(PushError::Full) => {
                self.counters.busy.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::Busy {
                    retry_after: RETRY_AFTER_SECONDS,
                });
            }
            Err(PushError::Closed) => return Err(ApiError::ShuttingDown),
        }
        self.remember(&accepted);
        self.counters
            .accepted
            .fetch_add(accepted.len() as u64, Ordering::Relaxed);
        self.counters
            .rejected
            .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        Ok(IngestResult {
            accepted: accepted.len(),
            rejected,
        })
    }

    /// Queues generated records (the demo's traffic).
    pub fn submit_generated(&self, records: &[Generated]) -> Result<(), PushError> {
        if records.is_empty() {
            return Ok(());
        }
        let arrival = wall_clock_ms();
        self.input.push(
            records
                .iter()
                .map(|r| (r.stream_id.as_bytes(), r.line.clone().into_bytes())),
            arrival,
        )?;
        let context = DecodeContext::default();
        let reactions: Vec<Event> = records
            .iter()
            .filter(|r| r.line.contains("\"reaction\""))
            .filter_map(|r| decode_json(r.line.as_bytes(), &context).ok())
            .collect();
        self.remember(&reactions);
        Ok(())
    }

    /// Records waiting for the dataflow.
    pub fn queued(&self) -> usize {
        self.input.queued()
    }
}
