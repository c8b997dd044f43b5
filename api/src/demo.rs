//! Assembly of a live server: view store, dataflow workers over the in-process input (with an
//! optional generator) or over Kafka (with the dead-letter topic, the ingest producer and the
//! offset mirror), warp server. `crowdpulse demo` and `crowdpulse run` run it until Ctrl-C;
//! tests run it on a free port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crowdpulse_connectors::config::ApiConfig;
use crowdpulse_connectors::dead_letter_topic::DeadLetterTopic;
use crowdpulse_connectors::ingest_producer::IngestProducer;
use crowdpulse_connectors::kafka_config::KafkaConfig;
use crowdpulse_connectors::kafka_progress::{mirror_progress, ProgressMirror};
use crowdpulse_connectors::kafka_source::{check_topics, worker_readers};
use crowdpulse_connectors::live_input::{wall_clock_ms, LiveInput};
use crowdpulse_connectors::position::Position;
use crowdpulse_connectors::row_output::RowOutput;
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::sentiment::Analyzer;
use crowdpulse_dataflow::source::SourceCounters;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::error::{ApiError, Result};
use crate::filters::routes;
use crate::ingest::{Ingest, IngestTarget};
use crate::live::{spawn_generator, LiveRuntime, LiveSource, ReadersFor};
use crate::metrics::HttpCounters;
use crate::push::Clients;
use crate::state::{ApiSettings, AppState};
use crate::store::{StoreSettings, ViewStore};

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
    /// Worker threads (with the in-process input, also its partitions).
    pub workers: usize,
    /// Where events come from.
    pub feed: Feed,
    /// Outputs besides the view store (e.g. final rows to stdout).
    pub outputs: Vec<Arc<dyn RowOutput>>,
    /// Windows, lateness, moments.
    pub pipeline: PipelineConfig,
    /// Server settings.
    pub api: ApiConfig,
    /// Sentiment scorer.
    pub analyzer: Arc<Analyzer>,
}

/// A running live server's parts, before the HTTP side is attached.
pub struct LiveApp {
    /// State shared with the handlers.
    pub state: AppState,
    runtime: LiveRuntime,
    generator: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Kafka only: commits read offsets to the group and measures lag; stops when dropped.
    progress: Option<ProgressMirror>,
    /// Kafka only: flushed at shutdown.
    dead_letters: Option<Arc<DeadLetterTopic>>,
}

/// The parts that differ between the in-process and the Kafka feed.
struct Wiring {
    runtime: LiveRuntime,
    ingest: IngestTarget,
    progress: Option<ProgressMirror>,
    dead_letters: Option<Arc<DeadLetterTopic>>,
}

/// How long shutdown waits for dead letters to be confirmed.
const DEAD_LETTER_FLUSH: Duration = Duration::from_secs(10);

fn wire(
    options: &LiveOptions,
    counters: &Arc<SourceCounters>,
    mut outputs: Vec<Arc<dyn RowOutput>>,
) -> Result<Wiring> {
    let (workers, pipeline, analyzer) = (
        options.workers.max(1),
        &options.pipeline,
        Arc::clone(&options.analyzer),
    );
    match &options.feed {
        Feed::Generated { .. } => {
            let input = LiveInput::new(workers, options.api.input_capacity);
            let runtime = LiveRuntime::start(
                workers,
                pipeline,
                (analyzer, Arc::clone(counters)),
                LiveSource::Input(input.clone()),
                outputs,
            )?;
            Ok(Wiring {
                runtime,
                ingest: IngestTarget::Input(input),
                progress: None,
                dead_letters: None,
            })
        }
        Feed::Kafka { config, start } => {
            let source = config.source_options(start.clone(), None);
            check_topics(&source)?;
            let dead_letters = match config.dead_letter_topic.trim() {
                "" => None,
                topic => Some(Arc::new(DeadLetterTopic::new(&config.brokers, topic)?)),
            };
            if let Some(topic) = &dead_letters {
                outputs.push(Arc::clone(topic) as Arc<dyn RowOutput>);
            }
            let progress = mirror_progress(
                &source,
                Arc::clone(counters),
                Duration::from_millis(config.progress_interval.0.max(1)),
            )?;
            let readers: ReadersFor = Arc::new(move |index, peers| {
                worker_readers(&source, index, peers).map_err(|error| error.to_string())
            });
            let runtime = LiveRuntime::start(
                workers,
                pipeline,
                (analyzer, Arc::clone(counters)),
                LiveSource::Readers(readers),
                outputs,
            )?;
            Ok(Wiring {
                runtime,
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

/// The smallest tumbling window: session totals are summed from it.
fn base_window(pipeline: &PipelineConfig) -> Result<String> {
    pipeline
        .window_specs()?
        .into_iter()
        .filter(|spec| spec.size == spec.slide)
        .min_by_key(|spec| spec.size)
        .map(|spec| spec.label)
        .ok_or_else(|| {
            ApiError::Dataflow(crowdpulse_dataflow::Error::Config(
                "the live API needs at least one tumbling window".into(),
            ))
        })
}

impl LiveApp {
    /// Starts the dataflow (and the generator when `rate > 0`).
    pub fn start(options: &LiveOptions) -> Result<Self> {
        let pipeline = &options.pipeline;
        let store = Arc::new(ViewStore::new(StoreSettings {
            base_window: base_window(pipeline)?,
            retention: options.api.retention.0,
            top_k: pipeline.top_k,
        }));
        let counters = Arc::new(SourceCounters::default());
        let mut outputs = vec![Arc::clone(&store) as Arc<dyn RowOutput>];
        outputs.extend(options.outputs.iter().cloned());
        let wiring = wire(options, &counters, outputs)?;
        let ingest = Arc::new(Ingest::new(wiring.ingest, Arc::clone(&store)));
        let stop = Arc::new(AtomicBool::new(false));
        let generator = match options.feed {
            Feed::Generated {
                rate,
                streams,
                seed,
            } if rate > 0.0 => {
                let handle =
                    spawn_generator(Arc::clone(&ingest), streams, rate, seed, Arc::clone(&stop))
                        .map_err(|e| ApiError::Server(format!("starting the generator: {e}")))?;
                Some(handle)
            }
            _ => None,
        };
        let settings = ApiSettings {
            max_body_bytes: options.api.max_body_bytes,
            windows: pipeline
                .window_specs()?
                .into_iter()
                .map(|spec| spec.label)
                .collect(),
            started_at: wall_clock_ms(),
            ready_delay_ms: pipeline.max_out_of_orderness.0 + pipeline.idle_timeout.0 + 5_000,
        };
        let state = AppState {
            store,
            ingest,
            clients: Arc::new(Clients::default()),
            http: Arc::new(HttpCounters::default()),
            source_counters: counters,
            kafka_lag: wiring.progress.as_ref().map(|p| Arc::clone(&p.lag)),
            dead_letter_topic: wiring
                .dead_letters
                .as_ref()
                .map(|topic| Arc::clone(&topic.counters)),
            settings: Arc::new(settings),
        };
        Ok(Self {
            state,
            runtime: wiring.runtime,
            generator,
            stop,
            progress: wiring.progress,
            dead_letters: wiring.dead_letters,
        })
    }

    /// Stops the generator and the dataflow (the in-process input is drained; Kafka partitions
    /// are left where they are) and waits for pending dead letters.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(generator) = self.generator {
            let _ = generator.join();
        }
        self.runtime.shutdown();
        drop(self.progress);
        if let Some(topic) = self.dead_letters {
            if let Err(error) = topic.flush(DEAD_LETTER_FLUSH) {
                warn!(%error, "dead letters not all confirmed at shutdown");
            }
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(state))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

/// Runs the live server on `options.api.bind` until Ctrl-C; `on_listening` learns the address.
pub fn run_until_ctrl_c(
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
    let bind = options.api.bind.clone();
    let served = runtime.block_on(async move {
        let listener = TcpListener::bind(&bind)
            .await
            .map_err(|e| ApiError::Server(format!("binding {bind}: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| ApiError::Server(e.to_string()))?;
        on_listening(address);
        serve(state, listener, async {
            // An error here means no signal handler could be installed: then run until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await;
        info!("shutting down");
        Ok::<(), ApiError>(())
    });
    // Open WebSocket/SSE connections would keep the runtime's tasks alive; they end here.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    app.shutdown();
    served
}
