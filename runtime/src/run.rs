//! `crowdpulse run`: Kafka in; Postgres (when `[postgres]` is configured), final-row NDJSON
//! and the live API out. With an end position it is a bounded backfill that exits when done.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crowdpulse_api::history::History;
use crowdpulse_connectors::config::Config;
use crowdpulse_connectors::error::ConnectorError;
use crowdpulse_connectors::position::Position;
use crowdpulse_connectors::postgres::{apply_migrations, PostgresSink, PostgresSinkMetrics};
use crowdpulse_connectors::sink::{FinalRowsNdjson, Sink};
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::progress::Throttle;
use crowdpulse_dataflow::source::SourceCounters;
use tracing::info;

use crate::cluster::Cluster;
use crate::error::Result;
use crate::live::{run_until_ctrl_c, Feed, LiveOptions};
use crate::process::{run_into, BoundedRun, ProcessSummary};
use crate::sources::Sources;

/// Where final rows go as NDJSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowsOutput {
    /// Standard output.
    Stdout,
    /// A file (created or truncated).
    File(PathBuf),
    /// Nowhere.
    None,
}

impl RowsOutput {
    /// `-` is stdout, anything else a file; absent: stdout unless Postgres keeps the rows.
    pub fn choose(output: Option<PathBuf>, postgres: bool) -> Self {
        match output {
            Some(path) if path.as_os_str() == "-" => Self::Stdout,
            Some(path) => Self::File(path),
            None if postgres => Self::None,
            None => Self::Stdout,
        }
    }

    fn sink(&self) -> Result<Option<Arc<dyn Sink>>> {
        Ok(match self {
            Self::Stdout => Some(Arc::new(FinalRowsNdjson::new(std::io::stdout()))),
            Self::File(path) => {
                let file = std::fs::File::create(path).map_err(|e| ConnectorError::io(path, e))?;
                let out: Box<dyn Write + Send> = Box::new(std::io::BufWriter::new(file));
                Some(Arc::new(FinalRowsNdjson::new(out)))
            }
            Self::None => None,
        })
    }
}

/// What to run.
pub struct RunOptions {
    /// The whole configuration (`[kafka]`, `[postgres]`, `[api]`, lexicons).
    pub config: Config,
    /// The resolved pipeline.
    pub plan: Plan,
    /// Where the workers run.
    pub cluster: Cluster,
    /// Where reading starts.
    pub from: Position,
    /// Where it ends: a bounded backfill (no API).
    pub until: Option<Position>,
    /// Final rows as NDJSON.
    pub output: RowsOutput,
}

/// The sinks of a run: Postgres (migrated first) and NDJSON.
struct RunSinks {
    sinks: Vec<Arc<dyn Sink>>,
    /// Set by Postgres.
    throttle: Option<Arc<Throttle>>,
    postgres: Option<Arc<PostgresSinkMetrics>>,
}

fn sinks(options: &RunOptions) -> Result<RunSinks> {
    let mut run = RunSinks {
        sinks: Vec::new(),
        throttle: None,
        postgres: None,
    };
    if options.config.postgres.enabled() {
        let applied = apply_migrations(&options.config.postgres)?;
        info!(?applied, schema = %options.config.postgres.schema, "postgres schema ready");
        let postgres = PostgresSink::start(&options.config.postgres)?;
        run.throttle = Some(postgres.throttle());
        run.postgres = Some(postgres.metrics());
        run.sinks.push(Arc::new(postgres));
    }
    if let Some(ndjson) = options.output.sink()? {
        run.sinks.push(ndjson);
    }
    Ok(run)
}

/// A bounded backfill from `from` to `until` into the sinks; returns what it did (rows: the
/// Postgres table rows written).
pub fn backfill(options: &RunOptions) -> Result<ProcessSummary> {
    let started = Instant::now();
    let RunSinks {
        sinks,
        throttle,
        postgres,
    } = sinks(options)?;
    let source = options
        .config
        .kafka
        .source_options(options.from.clone(), options.until.clone());
    crowdpulse_connectors::kafka_source::check_topics(&source)?;
    let counters = Arc::new(SourceCounters::default());
    run_into(
        BoundedRun {
            analyzer: options.config.sentiment.analyzer()?,
            plan: options.plan.clone(),
            cluster: options.cluster.clone(),
            counters: Arc::clone(&counters),
            sources: Sources::kafka(source),
        },
        sinks,
        throttle,
    )?;
    let rows = postgres.map_or(0, |m| m.rows_written.load(Ordering::Relaxed) as usize);
    Ok(ProcessSummary::of(&counters, rows, started.elapsed()))
}

/// A live run until Ctrl-C; `announce` learns the API's address.
pub fn live(options: RunOptions, announce: impl FnOnce(SocketAddr)) -> Result<()> {
    let RunSinks {
        sinks,
        throttle,
        postgres,
    } = sinks(&options)?;
    let live = LiveOptions {
        cluster: options.cluster,
        feed: Feed::Kafka {
            config: options.config.kafka.clone(),
            start: options.from,
        },
        sinks,
        throttle,
        postgres,
        history: options
            .config
            .postgres
            .enabled()
            .then(|| History::new(&options.config.postgres))
            .transpose()?,
        analyzer: options.config.sentiment.analyzer()?,
        plan: options.plan,
        api: options.config.api,
    };
    run_until_ctrl_c(&live, announce)
}
