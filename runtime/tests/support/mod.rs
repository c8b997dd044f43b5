//! Shared by the runtime's tests: a bounded run over arbitrary readers, the real broker, and
//! readers of chat history answers.

#![allow(dead_code)] // each test file uses its own subset

use std::sync::Arc;

use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::sentiment::Analyzer;
use crowdpulse_dataflow::source::{PartitionReader, SourceCounters};
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::process::{run_to_final_rows, BoundedRun};
use crowdpulse_runtime::sources::Sources;
use crowdpulse_runtime::Result;

pub mod completions;
pub mod postgres;

#[path = "../../../connectors/tests/support/mod.rs"]
mod kafka;
#[allow(unused_imports)] // the broker is only for the Kafka tests
pub use kafka::{fresh_topic, BROKER};

/// Runs the dataflow with `workers` threads over the partitions `readers_for(worker, workers)`
/// opens, to the end of the input; returns the final rows in no particular order.
pub fn run_bounded(
    workers: usize,
    config: &PipelineConfig,
    analyzer: Arc<Analyzer>,
    counters: Arc<SourceCounters>,
    readers_for: impl Fn(usize, usize) -> std::result::Result<Vec<Box<dyn PartitionReader>>, String>
        + Send
        + Sync
        + 'static,
) -> Result<Vec<Row>> {
    run_plan_bounded(
        workers,
        Plan::new(config.clone())?,
        analyzer,
        counters,
        readers_for,
    )
}

/// [`run_bounded`] with a plan built by the caller (e.g. with Avro schemas loaded).
pub fn run_plan_bounded(
    workers: usize,
    plan: Plan,
    analyzer: Arc<Analyzer>,
    counters: Arc<SourceCounters>,
    readers_for: impl Fn(usize, usize) -> std::result::Result<Vec<Box<dyn PartitionReader>>, String>
        + Send
        + Sync
        + 'static,
) -> Result<Vec<Row>> {
    run_to_final_rows(BoundedRun {
        analyzer,
        plan,
        cluster: Cluster::local(workers),
        counters,
        sources: Sources::bounded(
            Arc::new(move |index, workers, _| readers_for(index, workers)),
            "memory",
        ),
    })
}

/// The texts of a `GET /v1/streams/{id}/chat` answer, in its order.
pub fn chat_texts(body: &serde_json::Value) -> Vec<String> {
    chat_texts_where(body, |_| true)
}

/// The texts of the messages of a chat answer that `keep` selects, in its order.
pub fn chat_texts_where(
    body: &serde_json::Value,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .filter(|m| keep(m))
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}
