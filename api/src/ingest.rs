//! HTTP ingest and the generator's feed: records are validated (the same decoder the dataflow
//! uses, arrival time standing in for a missing `ts`) and reactions are remembered for "last
//! reactions". In the demo everything, refused records included, enters the live input, so
//! refused records also reach the dead-letter path and its counters. With Kafka, accepted events
//! are produced to their topics (answered only once the broker confirmed them) and refused
//! records go to the dead-letter topic.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crowdpulse_connectors::dead_letter_topic::DeadLetterTopic;
use crowdpulse_connectors::generator::Generated;
use crowdpulse_connectors::ingest_producer::{is_permanent, EnqueueError, IngestProducer};
use crowdpulse_connectors::live_input::{wall_clock_ms, LiveInput, PushError};
use crowdpulse_dataflow::codec::{decode_json, DecodeContext};
use crowdpulse_dataflow::error::{excerpt, Error as DataflowError};
use crowdpulse_dataflow::event::{Event, EventBody, FieldLimits, Millis};
use crowdpulse_dataflow::kinds::config::KindSpec;
use crowdpulse_dataflow::kinds::record::{encode as encode_kind, read as read_kind};
use crowdpulse_dataflow::rows::{DeadLetter, DeadLetterReason};
use futures_util::future::join_all;

use crate::error::ApiError;
use crate::models::{IngestResult, Rejected};
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

/// Where accepted records go.
pub enum IngestTarget {
    /// The in-process inputs of the dataflow (the demo): events, and each configured kind's
    /// records (in the plan's order).
    Input {
        /// Events.
        events: LiveInput,
        /// Kinds' records.
        kinds: Vec<LiveInput>,
    },
    /// Kafka topics; refused records go to the dead-letter topic when one is configured.
    Kafka {
        /// Producer of accepted events.
        producer: IngestProducer,
        /// Producer of refused records.
        dead_letters: Option<Arc<DeadLetterTopic>>,
    },
}

/// The dead-letter `source` of records refused at HTTP ingest (their `offset` is the record's
/// index in its request).
pub const HTTP_SOURCE: &str = "http";

/// Entry point of records into the live dataflow.
pub struct Ingest {
    target: IngestTarget,
    store: Arc<ViewStore>,
    /// The pipeline's field limits: a record the dataflow would refuse is refused at the door.
    limits: FieldLimits,
    /// The configured kinds (the plan's).
    kinds: Arc<[KindSpec]>,
    /// Counters for `/metrics`.
    pub counters: IngestCounters,
}

impl Ingest {
    /// Ingest into `target`, noting reactions' streams in `store`; `kinds` are the plan's.
    pub fn new(
        target: IngestTarget,
        store: Arc<ViewStore>,
        limits: FieldLimits,
        kinds: Arc<[KindSpec]>,
    ) -> Self {
        Self {
            target,
            store,
            limits,
            kinds,
            counters: IngestCounters::default(),
        }
    }

    /// The pipeline's field limits, which ids in paths are held to as well.
    pub fn field_limits(&self) -> FieldLimits {
        self.limits
    }

    fn remember(&self, events: &[Event]) {
        for event in events {
            if let EventBody::Reaction { .. } = event.body {
                self.store
                    .note_ingested_reaction(&event.stream_id, event.ts);
            }
        }
    }

    /// Validates and queues records received over HTTP; answers what was accepted and refused.
    pub async fn submit(&self, records: &[&[u8]]) -> Result<IngestResult, ApiError> {
        let arrival: Millis = wall_clock_ms();
        let context = DecodeContext {
            fallback_ts: Some(arrival),
            limits: self.limits,
            ..DecodeContext::default()
        };
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        // Records that are no JSON object: `decode` dead letters, the other refusals `invalid`,
        // as the dataflow's source files them.
        let mut undecodable = BTreeSet::new();
        for (index, record) in records.iter().enumerate() {
            match decode_json(record, &context) {
                Ok(event) => accepted.push((index, event)),
                Err(error) => {
                    if matches!(error, DataflowError::Decode(_)) {
                        undecodable.insert(index);
                    }
                    rejected.push(Rejected {
                        index,
                        error: error.to_string(),
                    });
                }
            }
        }
        let queued = match &self.target {
            IngestTarget::Input { events, .. } => {
                queue_input(events, records, &accepted, &rejected, arrival)
            }
            IngestTarget::Kafka {
                producer,
                dead_letters,
            } => {
                let produced =
                    produce(producer, records, &mut accepted, &mut rejected, arrival).await;
                if let (Ok(()), Some(topic)) = (&produced, dead_letters) {
                    // The answer lists the refusals whatever happens to these copies: a queue
                    // that stays full (an outage) delays the answer as long as a produce may take.
                    let deadline = Instant::now() + producer.produce_timeout();
                    for refused in &rejected {
                        let reason = if undecodable.contains(&refused.index) {
                            DeadLetterReason::Decode
                        } else {
                            DeadLetterReason::Invalid
                        };
                        let dead = DeadLetter::new(
                            HTTP_SOURCE,
                            0,
                            refused.index as u64,
                            reason,
                            refused.error.clone(),
                            records[refused.index],
                        );
                        topic.send_before(&dead, deadline).await;
                    }
                }
                produced
            }
        };
        if let Err(ApiError::Busy { .. }) = &queued {
            self.counters.busy.fetch_add(1, Ordering::Relaxed);
        }
        queued?;
        let events: Vec<Event> = accepted.into_iter().map(|(_, event)| event).collect();
        self.remember(&events);
        Ok(self.counted(events.len(), rejected))
    }

    /// Queues generated records (the demo's traffic); only the in-process input takes them.
    pub fn submit_generated(&self, records: &[Generated]) -> Result<(), PushError> {
        let IngestTarget::Input { events: input, .. } = &self.target else {
            return Err(PushError::Closed);
        };
        if records.is_empty() {
            return Ok(());
        }
        let arrival = wall_clock_ms();
        input.push(
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

    /// Validates and queues records of the configured kind `name` received over HTTP: each must be a JSON object whose time (if any)
    /// reads; accepted ones are encoded in the kind's format. Only the in-process input takes
    /// them: with Kafka, a kind's records are read from its topic, where producers write them.
    pub fn submit_kind(&self, name: &str, records: &[&[u8]]) -> Result<IngestResult, ApiError> {
        let (kind, spec) = self
            .kinds
            .iter()
            .enumerate()
            .find(|(_, spec)| spec.name == name)
            .ok_or_else(|| ApiError::NotFound(format!("unknown kind {}", excerpt(name))))?;
        let IngestTarget::Input { kinds, .. } = &self.target else {
            return Err(ApiError::BadRequest(format!(
                "records of kind {} are read from Kafka topic {:?}: produce them there",
                spec.name, spec.topic
            )));
        };
        let input = kinds
            .get(kind)
            .ok_or_else(|| ApiError::NotFound(format!("unknown kind {:?}", spec.name)))?;
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let encoded = serde_json::from_slice::<serde_json::Value>(record)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|value| match value.is_object() {
                    true => read_kind(spec, &value).map(|event| (event, value)),
                    false => Err("not a JSON object".into()),
                })
                .and_then(|(event, value)| {
                    let key = event.dims.join("\u{0}").into_bytes();
                    encode_kind(spec, &value).map(|payload| (key, payload))
                });
            match encoded {
                Ok(message) => accepted.push(message),
                Err(error) => rejected.push(Rejected { index, error }),
            }
        }
        match push_keyed(input, &accepted) {
            Ok(()) => {}
            Err(PushError::Full) => {
                self.counters.busy.fetch_add(1, Ordering::Relaxed);
                return Err(busy());
            }
            Err(PushError::Closed) => return Err(ApiError::ShuttingDown),
        }
        Ok(self.counted(accepted.len(), rejected))
    }

    /// Counts an answered request's records and makes its answer.
    fn counted(&self, accepted: usize, rejected: Vec<Rejected>) -> IngestResult {
        self.counters
            .accepted
            .fetch_add(accepted as u64, Ordering::Relaxed);
        self.counters
            .rejected
            .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        IngestResult {
            accepted,
            rejected_total: rejected.len(),
            rejected,
        }
    }

    /// Queues generated records of the configured kind `kind` (the demo's traffic), already
    /// encoded, with their keys; only the in-process input takes them.
    pub fn submit_generated_kind(
        &self,
        kind: usize,
        records: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), PushError> {
        let IngestTarget::Input { kinds, .. } = &self.target else {
            return Err(PushError::Closed);
        };
        push_keyed(kinds.get(kind).ok_or(PushError::Closed)?, &records)
    }

    /// Records waiting for the dataflow (in-process input) or for the broker (Kafka).
    pub fn queued(&self) -> usize {
        match &self.target {
            IngestTarget::Input { events, kinds } => {
                events.queued() + kinds.iter().map(LiveInput::queued).sum::<usize>()
            }
            IngestTarget::Kafka { producer, .. } => producer.in_flight(),
        }
    }
}

/// Queues (key, payload) records, arriving now.
fn push_keyed(input: &LiveInput, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), PushError> {
    input.push(
        records
            .iter()
            .map(|(key, payload)| (&key[..], payload.clone())),
        wall_clock_ms(),
    )
}

/// Queues every record, refused ones too (with an empty key), in request order per stream.
fn queue_input(
    input: &LiveInput,
    records: &[&[u8]],
    accepted: &[(usize, Event)],
    rejected: &[Rejected],
    arrival: Millis,
) -> Result<(), ApiError> {
    let keys: Vec<&[u8]> = {
        let mut valid = accepted.iter();
        let mut refused = rejected.iter().peekable();
        (0..records.len())
            .map(|index| match refused.peek() {
                Some(r) if r.index == index => {
                    refused.next();
                    &b""[..]
                }
                _ => valid
                    .next()
                    .map_or(&b""[..], |(_, e)| e.stream_id.as_bytes()),
            })
            .collect()
    };
    let queued = keys.into_iter().zip(records.iter().map(|r| r.to_vec()));
    match input.push(queued, arrival) {
        Ok(()) => Ok(()),
        Err(PushError::Full) => Err(busy()),
        Err(PushError::Closed) => Err(ApiError::ShuttingDown),
    }
}

/// A full queue: 503 with Retry-After.
fn busy() -> ApiError {
    ApiError::Busy {
        retry_after: RETRY_AFTER_SECONDS,
    }
}

/// Produces the accepted events and waits for the broker: 503 (Retry-After) when the producer
/// queue has no room for the whole request, 503 when a delivery fails (the client retries; a
/// retry may duplicate the events that did get through). An event whose kind has no topic is
/// moved to the refused ones.
async fn produce(
    producer: &IngestProducer,
    records: &[&[u8]],
    accepted: &mut Vec<(usize, Event)>,
    rejected: &mut Vec<Rejected>,
    arrival: Millis,
) -> Result<(), ApiError> {
    // Checked up front so that a full queue refuses the request whole, not half-produced.
    let Some(admitted) = producer.admit(accepted.len()).await else {
        return Err(busy());
    };
    let mut deliveries = Vec::with_capacity(accepted.len());
    let mut routed = Vec::with_capacity(accepted.len());
    for (index, event) in accepted.drain(..) {
        match producer.enqueue(&event, records[index], arrival) {
            Ok(delivery) => {
                deliveries.push(delivery);
                routed.push((index, event));
            }
            Err(EnqueueError::NoTopic(kind)) => rejected.push(Rejected {
                index,
                error: format!("no Kafka topic takes {} events", kind.name()),
            }),
            Err(EnqueueError::TooLarge(error)) => rejected.push(Rejected {
                index,
                error: format!("kafka cannot take this record: {error}"),
            }),
            Err(EnqueueError::Full) => return Err(busy()),
            Err(EnqueueError::Kafka(error)) => {
                producer.renew_if_failed(&error);
                return Err(ApiError::Produce(error.to_string()));
            }
        }
    }
    // Queued: the next request may be admitted while this one waits for the broker.
    drop(admitted);
    let mut delivered = Vec::with_capacity(routed.len());
    for ((index, event), delivery) in routed.into_iter().zip(join_all(deliveries).await) {
        match delivery {
            Ok(Ok(_)) => delivered.push((index, event)),
            // The broker refused this record for what it is: listed, never worth a retry.
            Ok(Err((error, _))) if is_permanent(&error) => rejected.push(Rejected {
                index,
                error: format!("kafka refused this record: {error}"),
            }),
            Ok(Err((error, _))) => {
                producer.renew_if_failed(&error);
                return Err(ApiError::Produce(error.to_string()));
            }
            Err(_) => return Err(ApiError::Produce("producer closed".into())),
        }
    }
    rejected.sort_by_key(|r| r.index);
    *accepted = delivered;
    Ok(())
}
