//! The live runtime: timely workers run the analytics dataflow over a [`LiveInput`] and a sink
//! operator feeds the view store each time the output frontier moves; an optional generator
//! thread feeds the input at a wall-clock rate (the demo).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crowdpulse_connectors::generator::{Generator, GeneratorConfig};
use crowdpulse_connectors::live_input::{wall_clock_ms, LiveInput, PushError};
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::pipeline::analytics_dataflow;
use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::sentiment::Analyzer;
use crowdpulse_dataflow::source::{PartitionReader, SourceCounters};
use differential_dataflow::consolidation::consolidate_updates;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use tracing::{info, warn};

use crate::error::{ApiError, Result};
use crate::ingest::Ingest;
use crate::store::ViewStore;

/// The running dataflow; [`LiveRuntime::shutdown`] closes the input and waits for the workers.
pub struct LiveRuntime {
    input: LiveInput,
    workers: Option<JoinHandle<()>>,
}

impl LiveRuntime {
    /// Starts `workers` worker threads, worker w reading the input partitions p with
    /// `p % workers == w`.
    pub fn start(
        workers: usize,
        config: &PipelineConfig,
        analyzer: Arc<Analyzer>,
        counters: Arc<SourceCounters>,
        input: LiveInput,
        store: Arc<ViewStore>,
    ) -> Result<Self> {
        config.window_specs()?;
        let config = config.clone();
        let worker_input = input.clone();
        let guards = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let readers: Vec<Box<dyn PartitionReader>> = (index..worker_input.partitions())
                .step_by(peers)
                .map(|p| Box::new(worker_input.reader(p)) as Box<dyn PartitionReader>)
                .collect();
            let store = Arc::clone(&store);
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
                    .sink(Pipeline, "ViewStoreSink", move |(input, frontier)| {
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
                        store.apply(now, &mut ready);
                    });
                Ok::<(), crowdpulse_dataflow::Error>(())
            });
            if let Err(error) = built {
                warn!(%error, "live dataflow not built");
                return;
            }
            while worker.has_dataflows() {
                worker.step_or_park(None);
            }
        })
        .map_err(ApiError::Server)?;
        let handle = std::thread::Builder::new()
            .name("timely-guards".into())
            .spawn(move || drop(guards.join()))
            .map_err(|e| ApiError::Server(e.to_string()))?;
        Ok(Self {
            input,
            workers: Some(handle),
        })
    }

    /// Closes the input; the workers read what is queued, make every window final, and stop.
    pub fn shutdown(mut self) {
        self.input.close();
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
