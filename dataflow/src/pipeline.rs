//! The analytics dataflow end to end (source → window analytics, plus dead letters), and a
//! runner for bounded inputs that returns the final rows. Live and bounded runs build the very
//! same dataflow; only the readers differ.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::{Scope, Stream};

use crate::analytics::WindowAnalytics;
use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::rows::{DeadLetter, Row};
use crate::sentiment::Analyzer;
use crate::source::{partitioned_source, PartitionReader, SourceCounters};

/// Dead letters as rows of the `dead_letters` table.
fn dead_letter_rows<'scope>(
    dead: Stream<'scope, u64, Vec<DeadLetter>>,
) -> VecCollection<'scope, u64, Row, isize> {
    dead.unary(Pipeline, "DeadLetterRows", |_, _| {
        |input, output| {
            input.for_each(|capability, data| {
                if let Some(&time) = capability.least() {
                    output
                        .session(&capability)
                        .give_iterator(data.drain(..).map(|dead| (Row::DeadLetter(dead), time, 1)));
                }
            });
        }
    })
    .as_collection()
}

/// Builds the analytics over this worker's partitions; returns every table's rows.
pub fn analytics_dataflow<'scope>(
    scope: Scope<'scope, u64>,
    readers: Vec<Box<dyn PartitionReader>>,
    config: &PipelineConfig,
    analyzer: Arc<Analyzer>,
    counters: Arc<SourceCounters>,
) -> Result<VecCollection<'scope, u64, Row, isize>> {
    let (deltas, dead) = partitioned_source(scope, readers, config, analyzer, counters)?;
    let rows = deltas.window_analytics(config)?;
    Ok(rows.concat(dead_letter_rows(dead)))
}

/// What one worker's sink gathers: final rows with their multiplicities, and the net count of
/// live rows.
type Collected = (Vec<(Row, isize)>, isize);

/// Runs the dataflow over bounded partitions with `workers` threads and returns the final rows,
/// in no particular order. `readers_for(worker, workers)` opens the partitions a worker reads;
/// when it fails for a worker, the run fails (after the other workers finish: a worker leaving
/// the dataflow out would stall them), so no partition is silently left out.
pub fn run_bounded<F>(
    workers: usize,
    config: &PipelineConfig,
    analyzer: Arc<Analyzer>,
    counters: Arc<SourceCounters>,
    readers_for: F,
) -> Result<Vec<Row>>
where
    F: Fn(usize, usize) -> std::result::Result<Vec<Box<dyn PartitionReader>>, String>
        + Send
        + Sync
        + 'static,
{
    config.window_specs()?;
    let config = config.clone();
    let guards = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        // Final rows are never retracted, so they are simply collected; live rows must cancel
        // out by the end of the input, which the net count checks without storing them.
        let collected: Rc<RefCell<Collected>> = Rc::default();
        let sink = Rc::clone(&collected);
        let (readers, unopened) = match readers_for(index, peers) {
            Ok(readers) => (readers, None),
            Err(error) => (Vec::new(), Some(error)),
        };
        let built = worker.dataflow::<u64, _, _>(|scope| {
            analytics_dataflow(
                scope,
                readers,
                &config,
                Arc::clone(&analyzer),
                Arc::clone(&counters),
            )
            .map(|rows| {
                rows.inspect_batch(move |_, updates| {
                    let (finals, live) = &mut *sink.borrow_mut();
                    for (row, _, diff) in updates {
                        if row.is_final() {
                            finals.push((row.clone(), *diff));
                        } else {
                            *live += diff;
                        }
                    }
                });
            })
        });
        if built.is_ok() {
            while worker.has_dataflows() {
                worker.step_or_park(None);
            }
        }
        match unopened {
            Some(error) => Err(Error::Runtime(format!(
                "worker {index} could not open its partitions: {error}"
            ))),
            None => built.map(|()| collected.take()),
        }
    })
    .map_err(Error::Runtime)?;
    let mut rows = Vec::new();
    for result in guards.join() {
        let (finals, live) = result.map_err(Error::Runtime)??;
        if live != 0 {
            return Err(Error::Runtime(format!(
                "{live} live rows left at the end of the input"
            )));
        }
        for (row, diff) in finals {
            if diff != 1 {
                return Err(Error::Runtime(format!(
                    "final row changed after it was final: {row:?} x{diff}"
                )));
            }
            rows.push(row);
        }
    }
    Ok(rows)
}
