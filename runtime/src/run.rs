//! `crowdpulse run`: Kafka in; Postgres (when `[postgres]` is configured), final-row NDJSON
//! and the live API out. With an end position it is a bounded backfill that exits when done.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdpulse_api::history::History;
use crowdpulse_connectors::config::Config;
use crowdpulse_connectors::error::ConnectorError;
use crowdpulse_connectors::position::{PartitionOffset, Position};
use crowdpulse_connectors::postgres::checkpoints::read_latest;
use crowdpulse_connectors::postgres::{apply_migrations, PostgresSink, PostgresSinkMetrics};
use crowdpulse_connectors::sink::{FinalRowsNdjson, Sink};
use crowdpulse_connectors::summarizer::SummaryTexts;
use crowdpulse_dataflow::checkpoint::Restore;
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::source::SourceCounters;
use tracing::info;

use crate::cluster::Cluster;
use crate::error::{Result, RuntimeError};
use crate::execute::Checkpoints;
use crate::live::{run_until_stopped, Feed, LiveOptions};
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

/// How often a backfill commits: often enough that writing overlaps computing, seldom enough
/// that each transaction's fixed cost is spread over many rows (scripts/bench-postgres).
const BACKFILL_COMMIT_INTERVAL: Duration = Duration::from_millis(250);

/// What to run.
pub struct RunOptions {
    /// The whole configuration (`[kafka]`, `[postgres]`, `[api]`, lexicons).
    pub config: Config,
    /// The resolved pipeline.
    pub plan: Plan,
    /// Where the workers run.
    pub cluster: Cluster,
    /// Where reading starts, unless the run resumes from a checkpoint.
    pub from: Position,
    /// Whether to resume from the latest checkpoint, when there is one (no explicit `--from`).
    pub resume: bool,
    /// Where it ends: a bounded backfill (no API).
    pub until: Option<Position>,
    /// Final rows as NDJSON.
    pub output: RowsOutput,
}

/// The sinks of a run: Postgres (migrated first) and NDJSON, and where reading starts.
struct RunSinks {
    sinks: Vec<Arc<dyn Sink>>,
    /// Set by Postgres.
    lead: Option<Millis>,
    postgres: Option<Arc<PostgresSinkMetrics>>,
    /// Set by Postgres unless its checkpoint interval is zero.
    checkpoints: Option<Checkpoints>,
    /// `--from`, or the checkpoint's offsets.
    from: Position,
    /// Writes chat summaries' text, when an endpoint is configured (after the other sinks).
    summarizer: Option<Arc<SummaryTexts>>,
}

/// The checkpoint a run resumes from: decoded (refused loudly when unusable), positions to seek
/// to (the live rows written after it go when the Postgres sink opens).
fn resume(options: &RunOptions) -> Result<Option<Arc<Restore>>> {
    let resumed = read_latest(&options.config.postgres, |checkpoint| {
        Restore::decode(checkpoint, &options.plan)
    })
    .map_err(|error| match error {
        ConnectorError::Checkpoint(error) => RuntimeError::Checkpoint(error),
        other => other.into(),
    })?;
    Ok(resumed.map(|(time, restore)| {
        info!(
            time,
            partitions = restore.partitions.len(),
            "resuming from the latest checkpoint"
        );
        Arc::new(restore)
    }))
}

/// Where a resumed run reads on: each partition from its offset at the checkpoint; the others
/// (none read by then, or added since) from the earliest.
fn resume_position(restore: &Restore) -> Position {
    Position::Offsets(
        restore
            .partitions
            .values()
            .filter_map(|p| {
                Some(PartitionOffset {
                    topic: p.source.clone(),
                    partition: i32::try_from(p.partition).ok()?,
                    offset: i64::try_from(p.next_offset?).ok()?,
                })
            })
            .collect(),
    )
}

fn sinks(options: &RunOptions) -> Result<RunSinks> {
    let mut run = RunSinks {
        sinks: Vec::new(),
        lead: None,
        postgres: None,
        checkpoints: None,
        from: options.from.clone(),
        summarizer: None,
    };
    if options.config.postgres.enabled() {
        let applied = apply_migrations(&options.config.postgres)?;
        info!(?applied, schema = %options.config.postgres.schema, "postgres schema ready");
        let interval = options.config.postgres.checkpoint_interval.0;
        if interval > 0 {
            // From an explicit position the stored checkpoint is dropped when the sink opens.
            let restore = match options.resume {
                true => resume(options)?,
                false => None,
            };
            if let Some(restore) = &restore {
                run.from = resume_position(restore);
            }
            run.checkpoints = Some(Checkpoints {
                store: options.config.postgres.checkpoint_store()?,
                interval: Duration::from_millis(interval),
                restore,
            });
        }
        // Every process paces its sources the same way (the dataflows must match); only the
        // process hosting the sinks writes.
        run.lead = Some(options.config.postgres.max_lead.0);
        if options.cluster.hosts_sinks() {
            // A live run commits every flush interval, a backfill as it goes.
            let interval = match options.until {
                Some(_) => BACKFILL_COMMIT_INTERVAL,
                None => options.config.postgres.flush_interval.duration(),
            };
            // Opened once the processes agree on the job: it removes every live row, and the
            // stored checkpoint of a run started from an explicit position.
            let mut postgres = PostgresSink::start(&options.config.postgres, interval)?;
            if run.checkpoints.is_some() && !options.resume {
                postgres = postgres.forgetting_checkpoint();
            }
            run.postgres = Some(postgres.metrics());
            run.sinks.push(Arc::new(postgres));
        }
    }
    if options.cluster.hosts_sinks() {
        if let Some(ndjson) = options.output.sink()? {
            run.sinks.push(ndjson);
        }
        if options.config.summarizer.enabled() {
            let postgres = options.config.postgres.enabled();
            run.summarizer = Some(Arc::new(SummaryTexts::start(
                &options.config.summarizer,
                postgres.then_some(&options.config.postgres),
            )?));
        }
    }
    Ok(run)
}

/// What a backfill did.
pub struct BackfillSummary {
    /// Records, events, dead letters, time; rows: the Postgres table rows written.
    pub summary: ProcessSummary,
    /// The Postgres sink's counters, when it wrote.
    pub postgres: Option<Arc<PostgresSinkMetrics>>,
}

impl BackfillSummary {
    /// The lines commands print.
    pub fn report(&self, workers: usize) -> String {
        let mut report = self.summary.report(workers);
        if let Some(postgres) = &self.postgres {
            let rows = postgres.rows_written.load(Ordering::Relaxed);
            let seconds = postgres.commit_micros_total.load(Ordering::Relaxed) as f64 / 1e6;
            report.push_str(&format!(
                "\npostgres: {rows} rows upserted in {} transactions, {seconds:.3} s writing ({:.0} rows/s)",
                postgres.commits.load(Ordering::Relaxed),
                rows as f64 / seconds.max(1e-9)
            ));
            let checkpoints = postgres.checkpoints.load(Ordering::Relaxed);
            if checkpoints > 0 {
                report.push_str(&format!(
                    "\ncheckpoints: {checkpoints} taken, the last {} bytes written in {:.1} ms",
                    postgres.checkpoint_bytes.load(Ordering::Relaxed),
                    postgres.checkpoint_write_micros.load(Ordering::Relaxed) as f64 / 1e3
                ));
            }
        }
        report
    }
}

/// A bounded backfill from `from` to `until` into the sinks; returns what it did.
pub fn backfill(options: &RunOptions) -> Result<BackfillSummary> {
    let started = Instant::now();
    let RunSinks {
        mut sinks,
        lead,
        postgres,
        checkpoints,
        from,
        summarizer,
    } = sinks(options)?;
    sinks.extend(summarizer.map(|s| s as Arc<dyn Sink>));
    let source =
        options
            .config
            .kafka
            .source_options(from, options.until.clone(), options.plan.kinds());
    crowdpulse_connectors::kafka_source::check_topics(&source)?;
    let counters = Arc::new(SourceCounters::default());
    run_into(
        BoundedRun {
            analyzer: options.config.sentiment.analyzer()?,
            // The range is declared complete: only final rows are written, each once.
            plan: options.plan.clone().with_live_rows(false),
            cluster: options.cluster.clone(),
            counters: Arc::clone(&counters),
            sources: Sources::kafka(source),
        },
        sinks,
        lead,
        checkpoints,
    )?;
    let rows = postgres
        .as_ref()
        .map_or(0, |m| m.rows_written.load(Ordering::Relaxed) as usize);
    Ok(BackfillSummary {
        summary: ProcessSummary::of(&counters, rows, started.elapsed()),
        postgres,
    })
}

/// A live run until Ctrl-C; `announce` learns the API's address.
pub fn live(options: RunOptions, announce: impl FnOnce(SocketAddr)) -> Result<()> {
    let RunSinks {
        sinks,
        lead,
        postgres,
        checkpoints,
        from,
        summarizer,
    } = sinks(&options)?;
    let live = LiveOptions {
        cluster: options.cluster,
        feed: Feed::Kafka {
            config: options.config.kafka.clone(),
            start: from,
        },
        sinks,
        lead,
        checkpoints,
        postgres,
        history: options
            .config
            .postgres
            .enabled()
            .then(|| History::new(&options.config.postgres))
            .transpose()?,
        summarizer,
        analyzer: options.config.sentiment.analyzer()?,
        plan: options.plan,
        api: options.config.api,
    };
    run_until_stopped(&live, announce)
}
