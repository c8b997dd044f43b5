//! The analytics dataflow end to end: source → window analytics, plus dead letters and chat
//! messages as rows and the source positions next to them. Every command builds this very same dataflow; only the
//! readers and the sinks (in the runtime) differ.

use std::sync::Arc;

use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concat;
use timely::dataflow::{Scope, Stream};

use crate::analytics::WindowAnalytics;
use crate::checkpoint::{CheckpointPart, Checkpointing};
use crate::fact_rows::FactRows;
use crate::pacing::{Reply, Steering};
use crate::plan::Plan;
use crate::progress::SourcePosition;
use crate::rows::Row;
use crate::sentiment::Analyzer;
use crate::source::{partitioned_source, PartitionReader, SourceCounters};

/// What the analytics dataflow hands to the sinks.
pub struct AnalyticsOutput<'scope> {
    /// Every table's rows.
    pub rows: VecCollection<'scope, u64, Row, isize>,
    /// This worker's partitions' positions, as data next to the rows.
    pub positions: Stream<'scope, u64, Vec<SourcePosition>>,
    /// This worker's parts of each checkpoint, at the checkpoint's time.
    pub checkpoints: Stream<'scope, u64, Vec<CheckpointPart>>,
    /// This worker's source's replies to checkpoint proposals.
    pub replies: Stream<'scope, u64, Vec<Reply>>,
}

/// Builds the analytics over this worker's partitions; `steering` (the sink stage's, fed back)
/// paces the source; `checkpointing` takes checkpoints and, maybe, resumes from one.
pub fn analytics_dataflow<'scope>(
    scope: Scope<'scope, u64>,
    readers: Vec<Box<dyn PartitionReader>>,
    plan: &Plan,
    analyzer: Arc<Analyzer>,
    counters: Arc<SourceCounters>,
    steering: Option<Stream<'scope, u64, Vec<Steering>>>,
    checkpointing: Option<&Checkpointing>,
) -> AnalyticsOutput<'scope> {
    let source = partitioned_source(
        scope,
        readers,
        plan,
        analyzer,
        Arc::clone(&counters),
        steering,
        checkpointing,
    );
    let times = source
        .parts
        .clone()
        .flat_map(|part| (!part.finished).then_some(part.time));
    let restore = checkpointing.and_then(|c| c.restore.clone());
    let (rows, parts) = source
        .deltas
        .window_analytics(plan, times, restore, counters);
    AnalyticsOutput {
        rows: rows.concat(source.facts.fact_rows()),
        positions: source.positions,
        checkpoints: source.parts.concat(parts),
        replies: source.replies,
    }
}
