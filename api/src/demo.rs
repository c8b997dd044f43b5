//! Assembly of a live server: view store, live input, dataflow workers, optional generator,
//! warp server. `crowdpulse demo` runs it until Ctrl-C; tests run it on a free port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crowdpulse_connectors::config::ApiConfig;
use crowdpulse_connectors::live_input::{wall_clock_ms, LiveInput};
use crowdpulse_connectors::row_output::RowOutput;
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::sentiment::Analyzer;
use crowdpulse_dataflow::source::SourceCounters;
use tokio::net::TcpListener;
use tracing::info;

use crate::error::{ApiError, Result};
use crate::filters::routes;
use crate::ingest::Ingest;
use crate::live::{spawn_generator, LiveRuntime};
use crate::metrics::HttpCounters;
use crate::push::Clients;
use crate::state::{ApiSettings, AppState};
use crate::store::{StoreSettings, ViewStore};

/// What to run.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Worker threads (and input partitions).
    pub workers: usize,
    /// Generated records per second (0: only HTTP ingest).
    pub rate: f64,
    /// Generated streams.
    pub streams: usize,
    /// Generator seed.
    pub seed: u64,
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
        let workers = options.workers.max(1);
        let input = LiveInput::new(workers, options.api.input_capacity);
        let counters = Arc::new(SourceCounters::default());
        let runtime = LiveRuntime::over_input(
            workers,
            pipeline,
            Arc::clone(&options.analyzer),
            Arc::clone(&counters),
            input.clone(),
            vec![Arc::clone(&store) as Arc<dyn RowOutput>],
        )?;
        let ingest = Arc::new(Ingest::new(input, Arc::clone(&store)));
        let stop = Arc::new(AtomicBool::new(false));
        let generator = if options.rate > 0.0 {
            let handle = spawn_generator(
                Arc::clone(&ingest),
                options.streams,
                options.rate,
                options.seed,
                Arc::clone(&stop),
            )
            .map_err(|e| ApiError::Server(format!("starting the generator: {e}")))?;
            Some(handle)
        } else {
            None
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
            settings: Arc::new(settings),
        };
        Ok(Self {
            state,
            runtime,
            generator,
            stop,
        })
    }

    /// Stops the generator, closes the input and waits for the dataflow to finish.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(generator) = self.generator {
            let _ = generator.join();
        }
        self.runtime.shutdown();
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
