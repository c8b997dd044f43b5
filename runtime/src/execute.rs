//! The one place a dataflow runs: timely workers per [`Cluster`], each building the analytics
//! over its partitions and the sink stage, until the input ends or the run is stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crowdpulse_connectors::live_input::LiveInput;
use crowdpulse_connectors::sink::Sink;
use crowdpulse_dataflow::checkpoint::{Checkpointing, Restore};
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::hashing::fnv1a;
use crowdpulse_dataflow::pacing::{Pacing, Steering, UNLIMITED_LEAD};
use crowdpulse_dataflow::pipeline::analytics_dataflow;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::sentiment::Analyzer;
use crowdpulse_dataflow::source::SourceCounters;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{ConnectLoop, Feedback};
use tracing::{error, warn};

use crate::cluster::Cluster;
use crate::error::{Result, RuntimeError};
use crate::sink_stage::SinkStage;
use crate::sources::Sources;

/// Everything a run needs.
pub struct Job {
    /// Where the workers run.
    pub cluster: Cluster,
    /// The resolved pipeline.
    pub plan: Plan,
    /// Sentiment scorer.
    pub analyzer: Arc<Analyzer>,
    /// Counters the sources keep (for /metrics and progress lines).
    pub counters: Arc<SourceCounters>,
    /// What is read.
    pub sources: Sources,
    /// Where the rows go.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Set when a sink makes results durable at its own pace (Postgres): how far (event time)
    /// the sources may run ahead of it.
    pub lead: Option<Millis>,
    /// Set when a sink keeps checkpoints (Postgres).
    pub checkpoints: Option<Checkpoints>,
}

/// Checkpoints of a run.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    /// How often one is taken.
    pub interval: Duration,
    /// The checkpoint the run resumes from.
    pub restore: Option<Arc<Restore>>,
    /// Where they are kept (every process of a cluster must read the same ones).
    pub store: String,
}

/// How often a worker with nothing to do checks whether the run was stopped or cannot finish.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Marks the run failed and stops the other workers when the worker holding it unwinds from a
/// panic: they would otherwise wait for its progress forever. In a cluster it leaves first, so
/// the other processes stop too, and this one reports its panic rather than the connections its
/// network threads then fail on.
struct PanicAlarm {
    worker: usize,
    stop: Arc<AtomicBool>,
    failed: Arc<OnceLock<String>>,
    clustered: bool,
}

impl Drop for PanicAlarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A peer's connection that fails breaks the queues its network threads fill, and a
            // worker reading one then panics: a lost peer is the cause, and after this process
            // left its cluster on purpose there is no failure at all.
            let reason = match crate::peers::lost() {
                Some(lost) => Some(lost.to_owned()),
                None if crate::peers::leaving() => None,
                None => Some(format!("worker {} panicked", self.worker)),
            };
            if let Some(reason) = reason {
                let _ = self.failed.set(reason);
            }
            if self.clustered {
                crate::peers::leave();
            }
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// A started run. Dropping it stops it.
pub struct Running {
    sources: Sources,
    stop: Arc<AtomicBool>,
    failed: Arc<OnceLock<String>>,
    guards: Option<timely::communication::WorkerGuards<std::result::Result<(), RuntimeError>>>,
    sinks: Vec<Arc<dyn Sink>>,
    /// One process of several: stopping it stops the others.
    clustered: bool,
}

/// Starts the job's workers.
pub fn start(job: Job) -> Result<Running> {
    let Job {
        cluster,
        plan,
        analyzer,
        counters,
        sources,
        sinks,
        lead,
        checkpoints,
    } = job;
    let pacing = (lead.is_some() || checkpoints.is_some()).then(|| Pacing {
        lead: lead.unwrap_or(UNLIMITED_LEAD),
        checkpoint_interval: checkpoints.as_ref().map(|c| c.interval),
    });
    let checkpoint_store = checkpoints.as_ref().map(|c| c.store.clone());
    let checkpointing = checkpoints.map(|c| Checkpointing { restore: c.restore });
    let resumed_from = checkpointing
        .as_ref()
        .and_then(|c| c.restore.as_ref())
        .map(|restore| restore.time);
    // Processes that agree on this compute the same dataflow over the same input.
    let job_digest = fnv1a(
        format!(
            "{}|{pacing:?}|{checkpoint_store:?}|{}|{}|{}",
            serde_json::to_string(plan.config()).expect("settings serialize"),
            cluster.sink_worker(),
            sources.identity(),
            analyzer.digest()
        )
        .as_bytes(),
    );
    let communication = cluster.connect(job_digest, resumed_from)?;
    let clustered = cluster.is_clustered();
    // A process that fails from here on, before its workers run, must leave its cluster: its
    // connections would otherwise end cleanly, and the others wait for its progress for ever.
    let leaving = |error: RuntimeError| {
        if clustered {
            crate::peers::leave();
        }
        error
    };
    // Before any worker steps (so before any flush), and only now that the peers agree.
    for sink in &sinks {
        sink.open().map_err(|error| leaving(error.into()))?;
    }
    let sink_worker = cluster.sink_worker();
    let readers_for = sources.readers_for();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(OnceLock::new());
    let worker_stop = Arc::clone(&stop);
    let worker_failed = Arc::clone(&failed);
    let worker_sinks = sinks.clone();
    let bounded = matches!(sources, Sources::Bounded(_));
    let (builders, guard, clock) = (
        communication.builders,
        communication.guard,
        communication.clock,
    );
    let worker_config = timely::WorkerConfig::default();
    let guards = timely::execute::execute_from(builders, guard, worker_config, move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let _alarm = PanicAlarm {
            worker: index,
            stop: Arc::clone(&worker_stop),
            failed: Arc::clone(&worker_failed),
            clustered,
        };
        // A worker that cannot open its partitions still builds the dataflow (every worker
        // must), but stops the run before stepping it: its source, without partitions, would
        // end at once, and the frontier would then pass what its partitions hold (windows final
        // without them, and a live run going on without them). Never stepped, it holds the
        // frontier where it began.
        let (readers, unopened) = match readers_for(index, peers, clock) {
            Ok(readers) => (readers, None),
            Err(error) => {
                error!(%error, worker = index, "opening the partitions failed");
                let _ = worker_failed.set(format!(
                    "worker {index} could not open its partitions: {error}"
                ));
                // As `signal_stop`: the other processes must see this one lost, not ended.
                if clustered {
                    crate::peers::leave();
                }
                worker_stop.store(true, Ordering::Relaxed);
                (Vec::new(), Some(error))
            }
        };
        worker.dataflow::<u64, _, _>(|scope| {
            // The sink stage's steering reaches the sources a lead later: their frontier on it is
            // the durable frontier plus the lead.
            let (loop_handle, steering) = pacing
                .map(|p| scope.feedback::<Vec<Steering>>(p.lead))
                .unzip();
            let output = analytics_dataflow(
                scope,
                readers,
                &plan,
                Arc::clone(&analyzer),
                Arc::clone(&counters),
                steering,
                checkpointing.as_ref(),
            );
            let steering = output.rows.sink_stage(
                output.positions,
                output.checkpoints,
                output.replies,
                worker_sinks.clone(),
                sink_worker,
                pacing,
            );
            if let Some(handle) = loop_handle {
                steering.broadcast().connect_loop(handle);
            }
        });
        // The sinks run on one worker; it stops the run when one can take nothing more (a live
        // run's watcher then finds the reason in `failed`).
        let watches_sinks = index == sink_worker;
        let mut sinks_checked = Instant::now();
        while worker.has_dataflows() {
            // A bounded run that cannot read a partition to its end stops before the end of
            // input would make its windows final without that partition's records.
            let unreadable = bounded && counters.read_errors.load(Ordering::Relaxed) > 0;
            // A sink that can take nothing more stops the run at once: the rest of the input
            // would be read and computed for nothing.
            if watches_sinks && sinks_checked.elapsed() >= STOP_CHECK {
                sinks_checked = Instant::now();
                if let Some(reason) = worker_sinks.iter().find_map(|sink| sink.failure()) {
                    let _ = worker_failed.set(reason);
                    worker_stop.store(true, Ordering::Relaxed);
                }
            }
            let lost = crate::peers::lost();
            if let Some(reason) = lost {
                let _ = worker_failed.set(reason.to_owned());
            }
            if worker_stop.load(Ordering::Relaxed) || unreadable || lost.is_some() {
                // A run stopped here, not by the end of its input, must not end its connections
                // cleanly: the other processes would wait for its progress forever.
                if clustered {
                    crate::peers::leave();
                }
                for id in worker.installed_dataflows() {
                    worker.drop_dataflow(id);
                }
                break;
            }
            // Idle workers wake now and then to notice a stop or a failed read on another worker.
            worker.step_or_park(Some(STOP_CHECK));
        }
        match unopened {
            Some(error) => Err(RuntimeError::Unopened {
                worker: index,
                error,
            }),
            None => Ok(()),
        }
    })
    .map_err(|error| leaving(RuntimeError::Start(error)))?;
    Ok(Running {
        sources,
        stop,
        failed,
        guards: Some(guards),
        sinks,
        clustered,
    })
}

impl Running {
    /// Set with the reason once the run cannot go on (a worker panicked); a live run watches it.
    pub fn failed(&self) -> Arc<OnceLock<String>> {
        Arc::clone(&self.failed)
    }

    /// Waits until the input ends (bounded sources), then until the sinks are done; returns the
    /// first failure.
    pub fn join(mut self) -> Result<()> {
        let (dataflow, sinks) = self.wait();
        dataflow.and(sinks)
    }

    /// Stops the run: the in-process input is closed and drained (every window becomes final);
    /// other partitions are abandoned where they are; the other processes of a cluster are left
    /// (they stop too). Then waits for the sinks; an error when a worker failed or a sink did
    /// not write what it held (not for a peer stopped at the same time).
    pub fn stop(mut self) -> Result<()> {
        self.signal_stop();
        let (dataflow, sinks) = self.wait();
        match dataflow {
            // A peer stopped at the same time may be seen lost before this process leaves: no
            // failure of the stop.
            Err(error) if crate::peers::lost().is_some() => {
                warn!(%error, "a peer stopped while this process was stopping");
                sinks
            }
            dataflow => dataflow.and(sinks),
        }
    }

    fn signal_stop(&self) {
        match &self.sources {
            Sources::Input(inputs) => inputs.iter().for_each(LiveInput::close),
            Sources::Bounded(_) | Sources::Unbounded(_) => {
                // Before the workers stop: a worker that ends closes its connections cleanly,
                // which the others would not take for a loss.
                if self.clustered {
                    crate::peers::leave();
                }
                self.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Waits for the workers, then the sinks: how the dataflow ended, and whether the sinks
    /// wrote everything.
    fn wait(&mut self) -> (Result<()>, Result<()>) {
        let Some(guards) = self.guards.take() else {
            return (Ok(()), Ok(()));
        };
        let mut dataflow = Ok(());
        // After a peer was lost, joining timely's network threads re-raises their panics, which
        // take every worker's result with them.
        let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()));
        // A worker's own error comes first: one that could not open its partitions leaves the
        // cluster, which breaks the other workers' channels.
        let results = joined.unwrap_or_default();
        let panicked = results.iter().any(std::result::Result::is_err);
        if let Some(error) = results
            .into_iter()
            .find_map(|result| result.ok().and_then(std::result::Result::err))
        {
            dataflow = Err(error);
        }
        // A worker's panic: timely renders it as `Any { .. }`; its alarm recorded the reason
        // (none for a panic that this process leaving its cluster caused), else it panicked
        // outside the alarm's reach.
        if dataflow.is_ok() {
            match self.failed.get() {
                Some(reason) => dataflow = Err(RuntimeError::Failed(reason.clone())),
                None if panicked && !crate::peers::leaving() => {
                    dataflow = Err(RuntimeError::Failed("a worker panicked".into()));
                }
                None => {}
            }
        }
        if let Some(reason) = crate::peers::lost() {
            dataflow = Err(RuntimeError::Failed(reason.to_owned()));
        }
        let mut sinks = Ok(());
        for sink in &self.sinks {
            let finished = sink.finish().map_err(RuntimeError::from);
            if sinks.is_ok() {
                sinks = finished;
            }
        }
        (dataflow, sinks)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.guards.is_some() {
            self.signal_stop();
            let (dataflow, sinks) = self.wait();
            if let Err(error) = dataflow.and(sinks) {
                error!(%error, "the run ended with an error");
            }
        }
    }
}
