//! Live runs: the runtime over the in-process input (with an optional generator) or over Kafka
//! (with the dead-letter topic, the ingest producer and the offset mirror), the view store among
//! the sinks, and the warp server. `crowdpulse demo` and `crowdpulse run` run it until Ctrl-C;
//! tests run it on a free port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crowdpulse_api::access::Access;
use crowdpulse_api::history::History;
use crowdpulse_api::ingest::{Ingest, IngestTarget};
use crowdpulse_api::kinds::KindInfo;
use crowdpulse_api::metrics::HttpCounters;
use crowdpulse_api::origin::Origins;
use crowdpulse_api::push::Clients;
use crowdpulse_api::server::serve;
use crowdpulse_api::state::{ApiSettings, AppState};
use crowdpulse_api::store::{StoreSettings, ViewStore};
use crowdpulse_api::ApiError;
use crowdpulse_connectors::config::ApiConfig;
use crowdpulse_connectors::dead_letter_topic::DeadLetterTopic;
use crowdpulse_connectors::download_generator::DownloadGenerator;
use crowdpulse_connectors::generator::{Generator, GeneratorConfig};
use crowdpulse_connectors::ingest_producer::IngestProducer;
use crowdpulse_connectors::kafka_config::KafkaConfig;
use crowdpulse_connectors::kafka_progress::{mirror_progress, ProgressMirror};
use crowdpulse_connectors::kafka_reader::Liveness;
use crowdpulse_connectors::kafka_source::{check_topics, KafkaSourceOptions};
use crowdpulse_connectors::live_input::{wall_clock_ms, LiveInput, PushError};
use crowdpulse_connectors::position::Position;
use crowdpulse_connectors::postgres::PostgresSinkMetrics;
use crowdpulse_connectors::sink::Sink;
use crowdpulse_connectors::summarizer::{SummaryTextListener, SummaryTexts};
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::kinds::config::KindSpec;
use crowdpulse_dataflow::kinds::record::encode as encode_kind;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::sentiment::Analyzer;
use crowdpulse_dataflow::source::SourceCounters;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::cluster::Cluster;
use crate::error::{Result, RuntimeError};
use crate::execute::{start, Checkpoints, Job, Running};
use crate::sources::Sources;

/// Where a live server's events come from.
#[derive(Debug, Clone)]
pub enum Feed {
    /// The in-process input: HTTP ingest plus generated traffic (the demo).
    Generated {
        /// Generated records per second (0: only HTTP ingest).
        rate: f64,
        /// Generated streams.
        streams: usize,
        /// Generator seed.
        seed: u64,
    },
    /// Kafka per the `[kafka]` section, from `start`; HTTP ingest produces to it.
    Kafka {
        /// Brokers, topics, dead-letter topic, producer limits.
        config: KafkaConfig,
        /// Where reading starts.
        start: Position,
    },
}

/// What to run.
#[derive(Clone)]
pub struct LiveOptions {
    /// Where the workers run (with the in-process input, its workers are also its partitions).
    pub cluster: Cluster,
    /// Where events come from.
    pub feed: Feed,
    /// Sinks besides the view store (e.g. final rows to stdout, Postgres).
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Set when one of `sinks` paces the sources (Postgres).
    pub lead: Option<Millis>,
    /// Set when one of `sinks` keeps checkpoints (Postgres).
    pub checkpoints: Option<Checkpoints>,
    /// The Postgres sink's counters, for /metrics and /ready.
    pub postgres: Option<Arc<PostgresSinkMetrics>>,
    /// Where history past the store's retention is read.
    pub history: Option<History>,
    /// Writes chat summaries' text (`[summarizer]`), told to the view store.
    pub summarizer: Option<Arc<SummaryTexts>>,
    /// The resolved pipeline.
    pub plan: Plan,
    /// Server settings.
    pub api: ApiConfig,
    /// Sentiment scorer.
    pub analyzer: Arc<Analyzer>,
}

/// A running live server's parts, before the HTTP side is attached.
pub struct LiveApp {
    /// State shared with the handlers.
    pub state: AppState,
    running: Running,
    generator: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Kafka only: commits read offsets to the group and measures lag; stops when dropped.
    progress: Option<ProgressMirror>,
    /// Kafka only: flushed at shutdown.
    dead_letters: Option<Arc<DeadLetterTopic>>,
}

/// The parts that differ between the in-process and the Kafka feed.
struct Wiring {
    running: Running,
    ingest: IngestTarget,
    progress: Option<ProgressMirror>,
    dead_letters: Option<Arc<DeadLetterTopic>>,
}

/// How long shutdown waits for dead letters to be confirmed.
const DEAD_LETTER_FLUSH: Duration = Duration::from_secs(10);

fn wire(
    options: &LiveOptions,
    counters: &Arc<SourceCounters>,
    mut sinks: Vec<Arc<dyn Sink>>,
) -> Result<Wiring> {
    let job = |sources, sinks| Job {
        cluster: options.cluster.clone(),
        // The view store's "last reactions" come from the dataflow, whatever the feed.
        plan: options.plan.clone().with_reaction_rows(true),
        analyzer: Arc::clone(&options.analyzer),
        counters: Arc::clone(counters),
        sources,
        sinks,
        lead: options.lead,
        checkpoints: options.checkpoints.clone(),
    };
    match &options.feed {
        Feed::Generated { .. } => {
            let (partitions, capacity) = (
                options.cluster.total_workers(),
                options.api.input_capacity(),
            );
            let events = LiveInput::new(partitions, capacity);
            let kinds: Vec<LiveInput> = options
                .plan
                .kinds()
                .iter()
                .enumerate()
                .map(|(index, kind)| LiveInput::for_kind(index, &kind.name, partitions, capacity))
                .collect();
            let inputs = std::iter::once(events.clone()).chain(kinds.iter().cloned());
            let running = start(job(Sources::Input(inputs.collect()), sinks))?;
            Ok(Wiring {
                running,
                ingest: IngestTarget::Input { events, kinds },
                progress: None,
                dead_letters: None,
            })
        }
        Feed::Kafka {
            config,
            start: from,
        } => {
            let source = config.source_options(from.clone(), None, options.plan.kinds());
            check_topics(&source)?;
            let dead_letters = match config.dead_letter_topic.trim() {
                "" => None,
                topic => Some(Arc::new(DeadLetterTopic::new(&config.brokers, topic)?)),
            };
            if let Some(topic) = &dead_letters {
                sinks.push(Arc::clone(topic) as Arc<dyn Sink>);
            }
            let interval = config.progress_interval.0.max(1);
            let progress = mirror_progress(
                &source,
                Arc::clone(counters),
                Duration::from_millis(interval),
            )?;
            // A round of lag lookups every interval: three missed rounds mean unreachable.
            let source = KafkaSourceOptions {
                liveness: Some(Liveness {
                    lag: Arc::clone(&progress.lag),
                    silence: 3 * interval + 1_000,
                }),
                ..source
            };
            let running = start(job(Sources::kafka(source), sinks))?;
            Ok(Wiring {
                running,
                ingest: IngestTarget::Kafka {
                    producer: IngestProducer::new(config)?,
                    dead_letters: dead_letters.clone(),
                },
                progress: Some(progress),
                dead_letters,
            })
        }
    }
}

impl LiveApp {
    /// Starts the dataflow (and the generator when `rate > 0`).
    pub fn start(options: &LiveOptions) -> Result<Self> {
        let plan = &options.plan;
        // Unusable tokens or origins stop the start before anything runs.
        let access = Arc::new(Access::from_config(&options.api)?);
        let open_hosts = access.is_open().then_some(&options.api.allowed_hosts[..]);
        let origins = Arc::new(Origins::new(&options.api.cors_origins, open_hosts)?);
        let base_window = plan.base_window().ok_or_else(|| {
            crowdpulse_dataflow::Error::Config(
                "the live API needs at least one tumbling window".into(),
            )
        })?;
        let store = Arc::new(ViewStore::new(StoreSettings {
            base_window: base_window.label.clone(),
            retention: options.api.retention.0,
            top_k: plan.config().top_k,
            top_max_entries: plan.config().top_max_entries,
            push_interval: options.api.push_interval.duration(),
            push_budget: options.api.push_budget,
        }));
        let counters = Arc::new(SourceCounters::default());
        let mut sinks = vec![Arc::clone(&store) as Arc<dyn Sink>];
        sinks.extend(options.sinks.iter().cloned());
        // After the store: a summary is there before its text can be.
        if let Some(summarizer) = &options.summarizer {
            summarizer.listen(Arc::clone(&store) as Arc<dyn SummaryTextListener>);
            sinks.push(Arc::clone(summarizer) as Arc<dyn Sink>);
        }
        let wiring = wire(options, &counters, sinks)?;
        let ingest = Arc::new(Ingest::new(
            wiring.ingest,
            Arc::clone(&store),
            plan.config().limits,
            plan.kinds().into(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let generator = match options.feed {
            Feed::Generated {
                rate,
                streams,
                seed,
            } if rate > 0.0 => {
                let handle = spawn_generator(
                    Arc::clone(&ingest),
                    (streams, rate, seed),
                    plan.kinds(),
                    Arc::clone(&stop),
                )
                .map_err(|e| ApiError::Server(format!("starting the generator: {e}")))?;
                Some(handle)
            }
            _ => None,
        };
        let settings = ApiSettings {
            max_body_bytes: options.api.max_body_bytes,
            windows: plan
                .windows()
                .iter()
                .map(|spec| spec.label.clone())
                .collect(),
            started_at: wall_clock_ms(),
            ready_delay_ms: plan.config().max_out_of_orderness.0
                + plan.config().idle_timeout.0
                + 5_000,
            limits: options.api.limits.clone(),
            kinds: plan.kinds().iter().map(KindInfo::from).collect(),
        };
        let state = AppState {
            failed: wiring.running.failed(),
            access,
            origins,
            store,
            ingest,
            clients: Arc::new(Clients::default()),
            http: Arc::new(HttpCounters::default()),
            source_counters: counters,
            kafka_lag: wiring.progress.as_ref().map(|p| Arc::clone(&p.lag)),
            postgres: options.postgres.clone(),
            history: options.history.clone(),
            summarizer: options.summarizer.as_ref().map(|s| s.metrics()),
            dead_letter_topic: wiring
                .dead_letters
                .as_ref()
                .map(|topic| Arc::clone(&topic.counters)),
            settings: Arc::new(settings),
        };
        Ok(Self {
            state,
            running: wiring.running,
            generator,
            stop,
            progress: wiring.progress,
            dead_letters: wiring.dead_letters,
        })
    }

    /// Stops the generator and the dataflow (the in-process input is drained; Kafka partitions
    /// are left where they are) and waits for the sinks and pending dead letters; logs how the
    /// run ended when it failed.
    pub fn shutdown(self) {
        if let Err(error) = self.stop() {
            warn!(%error, "the run ended with an error");
        }
    }

    /// [`Self::shutdown`], returning how the run ended: a worker's failure, or a sink's failure
    /// to write what it held (a database unreachable through the grace); a peer stopped at the
    /// same time is no failure.
    pub fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(generator) = self.generator {
            let _ = generator.join();
        }
        let stopped = self.running.stop();
        drop(self.progress);
        if let Some(topic) = self.dead_letters {
            if let Err(error) = topic.flush(DEAD_LETTER_FLUSH) {
                warn!(%error, "dead letters not all confirmed at shutdown");
            }
        }
        stopped
    }
}

/// Resolves with the name of the first of SIGINT (Ctrl-C) and SIGTERM (systemd, Kubernetes)
/// received. A signal whose handler cannot be installed is never received: the process then runs
/// until killed, as it would without handlers.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let wait = |kind: SignalKind| async move {
        match signal(kind) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot handle a stop signal");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = wait(SignalKind::interrupt()) => "SIGINT",
        () = wait(SignalKind::terminate()) => "SIGTERM",
    }
}

/// Resolves with the reason once the run failed: a worker panicked, a peer was lost, or a sink
/// can take nothing more (the sinks' worker notes it), for `/health` as well.
async fn failure(failed: &OnceLock<String>) -> String {
    loop {
        if let Some(reason) = failed.get() {
            return reason.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the live server on `options.api.bind` until SIGINT or SIGTERM, or until a worker or a
/// sink fails (then an error); `on_listening` learns the address.
pub fn run_until_stopped(
    options: &LiveOptions,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<()> {
    let app = LiveApp::start(options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ApiError::Server(e.to_string()))?;
    let state = app.state.clone();
    let open = state.access.is_open();
    let failed = Arc::clone(&state.failed);
    let bind = options.api.bind.clone();
    let serves = options.cluster.hosts_sinks();
    let process = options.cluster.process;
    let served = runtime.block_on(async move {
        // Resolves with the failure that stopped the run, or None on a stop signal.
        let stopped = async move {
            tokio::select! {
                signal = stop_signal() => {
                    info!(signal, "stopping");
                    None
                }
                reason = failure(&failed) => {
                    error!(%reason, "stopping on a failure");
                    Some(reason)
                }
            }
        };
        if !serves {
            info!(
                process,
                "this process reads its partitions for the cluster; the api is served by process api.serve_on"
            );
            return match stopped.await {
                Some(reason) => Err(RuntimeError::Failed(reason)),
                None => Ok(()),
            };
        }
        let listener = TcpListener::bind(&bind)
            .await
            .map_err(|e| ApiError::Server(format!("binding {bind}: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| ApiError::Server(e.to_string()))?;
        if open && !address.ip().is_loopback() {
            warn!(
                %address,
                "no api tokens are configured and the server listens beyond loopback: anyone who reaches it may ingest and read"
            );
        }
        on_listening(address);
        let (stopped_with, stopped_by) = tokio::sync::oneshot::channel();
        serve(state, listener, async move {
            if let Some(reason) = stopped.await {
                let _ = stopped_with.send(reason);
            }
        })
        .await;
        info!("shutting down");
        match stopped_by.await {
            Ok(reason) => Err(RuntimeError::Failed(reason)),
            Err(_) => Ok(()),
        }
    });
    // Open WebSocket/SSE connections would keep the runtime's tasks alive; they end here.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    // A run stopped by a signal whose sinks could not write what they held has lost rows (for
    // the tables; Kafka keeps the input): its exit must say so.
    match served {
        Ok(()) => app.stop(),
        Err(error) => {
            // Stopping after the failure mostly repeats it; only another cause is worth a line.
            if let Err(also) = app.stop() {
                if also.to_string() != error.to_string() {
                    warn!(error = %also, "stopping after the failure");
                }
            }
            Err(error)
        }
    }
}

/// A generator feeding the live input at `rate` records per wall-clock second, event times
/// starting now; stops when `stop` is set.
pub fn spawn_generator(
    ingest: Arc<Ingest>,
    (streams, rate, seed): (usize, f64, u64),
    kinds: &[KindSpec],
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    // Kinds of the download preset get downloads, a tenth of the events' rate.
    let mut downloads: Vec<(usize, KindSpec, DownloadGenerator)> = kinds
        .iter()
        .enumerate()
        .filter(|(_, kind)| kind.preset.as_deref() == Some("content_downloads"))
        .map(|(index, kind)| {
            let generator = DownloadGenerator::new(u64::MAX, seed, rate / 10.0, wall_clock_ms());
            (index, kind.clone(), generator)
        })
        .collect();
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
                let due = (began.elapsed().as_secs_f64() * rate / 10.0) as u64;
                for (index, kind, generator) in &mut downloads {
                    let records = generator
                        .take_while_due(due)
                        .filter_map(|(key, record)| {
                            Some((key.into_bytes(), encode_kind(kind, &record).ok()?))
                        })
                        .collect();
                    // A full input drops generated downloads: they are samples, not data.
                    if let Err(PushError::Closed) = ingest.submit_generated_kind(*index, records) {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
}
