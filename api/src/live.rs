//! The live runtime: timely workers run the analytics dataflow over a [`LiveInput`] or Kafka,
//! and a sink operator feeds the row outputs (view store, stdout, dead-letter topic) each time
//! the output frontier moves; an optional generator thread feeds the input at a wall-clock rate
//! (the demo).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crowdpulse_connectors::generator::{Generator, GeneratorConfig};
use crowdpulse_connectors::live_input::{wall_clock_ms, LiveInput, PushError};
use crowdpulse_connectors::row_output::RowOutput;
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::pipeline::analytics_dataflow;
use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::sentiment::Analyzer;
use crowdpulse_dataflow::source::{PartitionReader, SourceCounters};
use differential_dataflow::consolidation::consolidate_updates;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use tracing::{error, info, warn};

use crate::error::{ApiError, Result};
use crate::ingest::Ingest;

/// Opens the partitions worker `index` of `peers` reads.
pub type ReadersFor = Arc<
    dyn Fn(usize, usize) -> std::result::Result<Vec<Box<dyn PartitionReader>>, String>
        + Send
        + Sync,
>;

/// What the live dataflow reads.
pub enum LiveSource {
    /// The in-process input, worker w reading its partitions p with `p % workers == w`.
    /// Shutdown closes it: the workers read what is queued and every window becomes final.
    Input(LiveInput),
    /// Partitions that never end (Kafka). Shutdown abandons them: windows stay open, their
    /// data stays in Kafka for the next run.
    Readers(ReadersFor),
}

/// How a live run ends.
enum Ending {
    CloseInput(LiveInput),
    Abandon(Arc<AtomicBool>),
}

/// The running dataflow; [`LiveRuntime::shutdown`] ends it.
pub struct LiveRuntime {
    ending: Ending,
    workers: Option<JoinHandle<()>>,
}

/// How often a worker with nothing to do checks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(100);

impl LiveRuntime {
    /// Starts `workers` worker threads running the analytics over `source`; every flush of
    /// complete changes goes to each of `outputs`.
    pub fn start(
        workers: usize,
        config: &PipelineConfig,
        (analyzer, counters): (Arc<Analyzer>, Arc<SourceCounters>),
        source: LiveSource,
        outputs: Vec<Arc<dyn RowOutput>>,
    ) -> Result<Self> {
        let (readers_for, ending): (ReadersFor, Ending) = match source {
            LiveSource::Input(input) => {
                let worker_input = input.clone();
                let readers: ReadersFor = Arc::new(move |index, peers| {
                    Ok((index..worker_input.partitions())
                        .step_by(peers)
                        .map(|p| Box::new(worker_input.reader(p)) as Box<dyn PartitionReader>)
                        .collect())
                });
                (readers, Ending::CloseInput(input))
            }
            LiveSource::Readers(readers) => {
                (readers, Ending::Abandon(Arc::new(AtomicBool::new(false))))
            }
        };
        config.window_specs()?;
        let config = config.clone();
        let stop = match &ending {
            Ending::Abandon(stop) => Some(Arc::clone(stop)),
            Ending::CloseInput(_) => None,
        };
        let guards = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
            // A worker that cannot open its partitions still joins the dataflow (the others would
            // stall without it) and says so loudly; its partitions stay unread.
            let readers = readers_for(worker.index(), worker.peers()).unwrap_or_else(|error| {
                error!(%error, worker = worker.index(), "opening the partitions failed");
                Vec::new()
            });
            let outputs = outputs.clone();
            let built = worker.dataflow::<u64, _, _>(|scope| {
                let rows = analytics_dataflow(
                    scope,
                    readers,
                    &config,
                    Arc::clone(&analyzer),
                    Arc::clone(&counters),
                )?;
                let mut pending: Vec<(Row, Millis, isize)> = Vec::new();
                let mut published: Option<Option<Millis>> = None;
                rows.inner
                    .sink(Pipeline, "RowOutputsSink", move |(input, frontier)| {
                        input.for_each(|_, data| pending.append(data));
                        let now = frontier.frontier().first().copied();
                        if published == Some(now) {
                            return;
                        }
                        published = Some(now);
                        // Only changes the frontier has passed are complete; later ones wait.
                        let (mut ready, later): (Vec<_>, Vec<_>) = pending
                            .drain(..)
                            .partition(|(_, time, _)| now.is_none_or(|f| *time < f));
                        pending = later;
                        consolidate_updates(&mut ready);
                        for output in &outputs {
                            output.publish(now, &mut ready);
                        }
                    });
                Ok::<(), crowdpulse_dataflow::Error>(())
            });
            if let Err(error) = built {
                warn!(%error, "live dataflow not built");
                return;
            }
            while worker.has_dataflows() {
                if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                    for id in worker.installed_dataflows() {
                        worker.drop_dataflow(id);
                    }
                    break;
                }
                worker.step_or_park(Some(STOP_CHECK));
            }
        })
        .map_err(ApiError::Server)?;
        let handle = std::thread::Builder::new()
            .name("timely-guards".into())
            .spawn(move || drop(guards.join()))
            .map_err(|e| ApiError::Server(e.to_string()))?;
        Ok(Self {
            ending,
            workers: Some(handle),
        })
    }

    /// Ends the run: an in-process input is closed and drained (every window becomes final);
    /// Kafka partitions are abandoned where they are.
    pub fn shutdown(mut self) {
        match &self.ending {
            Ending::CloseInput(input) => input.close(),
            Ending::Abandon(stop) => stop.store(true, Ordering::Relaxed),
        }
        if let Some(handle) = self.workers.take() {
            let _ = handle.join();
        }
    }
}

/// A generator feeding the live input at `rate` records per wall-clock second, event times
/// starting now; stops when `stop` is set.
pub fn spawn_generator(
    ingest: Arc<Ingest>,
    streams: usize,
    rate: f64,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("generator".into())
        .spawn(move || {
            if rate <= 0.0 {
                return;
            }
            let start = wall_clock_ms();
            let mut generator = Generator::new(GeneratorConfig {
                events: u64::MAX,
                seed,
                streams,
                rate,
                start,
            });
            let began = Instant::now();
            let mut emitted: u64 = 0;
            let mut pending = Vec::new();
            info!(rate, streams, "generator started");
            while !stop.load(Ordering::Relaxed) {
                let due = (began.elapsed().as_secs_f64() * rate) as u64;
                pending.extend(
                    generator
                        .by_ref()
                        .take(due.saturating_sub(emitted) as usize),
                );
                emitted = due.max(emitted);
                match ingest.submit_generated(&pending) {
                    Ok(()) => pending.clear(),
                    // Back-pressure: keep the records and retry; the generator falls behind.
                    Err(PushError::Full) => {}
                    Err(PushError::Closed) => return,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
}
