//! `crowdpulse process` and the bounded runs that write sorted NDJSON (`replay` too): the final
//! rows of every table, gathered by the sink stage and written in byte order.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdpulse_connectors::config::Config;
use crowdpulse_connectors::error::ConnectorError;
use crowdpulse_connectors::file_source::FileReader;
use crowdpulse_connectors::sink::Sink;
use crowdpulse_connectors::sorted_output::{FinalRows, SortedNdjson};
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::sentiment::Analyzer;
use crowdpulse_dataflow::source::SourceCounters;

use crate::cluster::Cluster;
use crate::error::{Result, RuntimeError};
use crate::execute::{start, Checkpoints, Job};
use crate::sources::Sources;

/// What to process.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Input files; file i is partition i, read by worker i % workers.
    pub inputs: Vec<PathBuf>,
    /// Where the NDJSON rows go.
    pub output: PathBuf,
    /// Where the workers run.
    pub cluster: Cluster,
    /// Lexicons and the rest of the configuration.
    pub config: Config,
    /// The resolved pipeline.
    pub plan: Plan,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSummary {
    /// Records read (valid or not).
    pub records: u64,
    /// Records that entered the analytics.
    pub events: u64,
    /// Records dropped as late.
    pub late: u64,
    /// Records dated too far ahead of their reference time.
    pub future: u64,
    /// Records repeating an admitted event id.
    pub duplicates: u64,
    /// Failed partition reads.
    pub read_errors: u64,
    /// All dead-lettered records (decode, invalid, late, future, duplicate).
    pub dead_lettered: u64,
    /// Rows written.
    pub rows: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl ProcessSummary {
    /// The summary of a run whose sources kept `counters` and that wrote `rows` rows.
    pub fn of(counters: &SourceCounters, rows: usize, elapsed: Duration) -> Self {
        Self {
            records: counters.records.load(Ordering::Relaxed),
            events: counters.events(),
            late: counters.late.load(Ordering::Relaxed),
            future: counters.future.load(Ordering::Relaxed),
            duplicates: counters.duplicates.load(Ordering::Relaxed),
            read_errors: counters.read_errors.load(Ordering::Relaxed),
            dead_lettered: counters.dead_lettered(),
            rows,
            elapsed,
        }
    }

    /// Records per second of wall time.
    pub fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The one-line report commands print: "{records} events with {workers} workers: ...".
    pub fn report(&self, workers: usize) -> String {
        format!(
            "{} events with {workers} workers: {} valid, {} late, {} future, {} duplicate, {} dead-lettered; {} rows written; {:.3} s, {:.0} events/s{}",
            self.records,
            self.events,
            self.late,
            self.future,
            self.duplicates,
            self.dead_lettered,
            self.rows,
            self.elapsed.as_secs_f64(),
            self.records_per_second(),
            match self.read_errors {
                0 => String::new(),
                n => format!("; {n} failed reads"),
            }
        )
    }
}

/// Runs the dataflow over the files and writes the rows.
pub fn process_files(options: &ProcessOptions) -> Result<ProcessSummary> {
    if options.inputs.is_empty() {
        return Err(ConnectorError::Config("at least one --input is required".into()).into());
    }
    for (partition, path) in options.inputs.iter().enumerate() {
        FileReader::open(path, partition as u32)?;
    }
    run_to_file(
        BoundedRun {
            analyzer: options.config.sentiment.analyzer()?,
            plan: options.plan.clone(),
            cluster: options.cluster.clone(),
            counters: Arc::default(),
            sources: Sources::files(options.inputs.clone()),
        },
        &options.output,
    )
}

/// A bounded run of the dataflow.
pub struct BoundedRun {
    /// Sentiment scorer.
    pub analyzer: Arc<Analyzer>,
    /// The resolved pipeline.
    pub plan: Plan,
    /// Where the workers run.
    pub cluster: Cluster,
    /// The sources' counters, for the summary and progress lines.
    pub counters: Arc<SourceCounters>,
    /// Bounded partitions.
    pub sources: Sources,
}

/// Runs the dataflow over bounded partitions and writes every table's final rows to the file
/// `path` as sorted NDJSON. The rows are written aside (a temporary file in the same directory)
/// and renamed over `path` only when the run has finished: a run that fails leaves a previous
/// output as it was, and a reader never sees half of one.
pub fn run_to_file(run: BoundedRun, path: &std::path::Path) -> Result<ProcessSummary> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    let mut aside = tempfile::Builder::new();
    aside.prefix(".crowdpulse-").suffix(".partial");
    // A temporary file is private (0600); the output is an ordinary file.
    #[cfg(unix)]
    aside.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let aside = aside
        .tempfile_in(directory)
        .map_err(|e| ConnectorError::io(path, e))?;
    let summary = run_to_ndjson(run, (aside.as_file(), path))?;
    aside
        .persist(path)
        .map_err(|e| ConnectorError::io(path, e.error))?;
    Ok(summary)
}

/// Runs this process's share of the dataflow in a cluster where another process gathers and
/// writes the rows.
pub fn run_share(mut run: BoundedRun) -> Result<ProcessSummary> {
    let started = Instant::now();
    let counters = Arc::clone(&run.counters);
    run.plan = run.plan.with_live_rows(false);
    run_into(run, Vec::new(), None, None)?;
    Ok(ProcessSummary::of(&counters, 0, started.elapsed()))
}

/// Runs the dataflow over bounded partitions and writes every table's final rows to `out` as
/// sorted NDJSON (`path` names it in errors).
pub fn run_to_ndjson(
    mut run: BoundedRun,
    (out, path): (impl std::io::Write, &std::path::Path),
) -> Result<ProcessSummary> {
    let started = Instant::now();
    let counters = Arc::clone(&run.counters);
    // Only final rows are written, so live rows (early results) would be built for nothing.
    run.plan = run.plan.with_live_rows(false);
    let rendered = Arc::new(SortedNdjson::start()?);
    run_into(
        run,
        vec![Arc::clone(&rendered) as Arc<dyn Sink>],
        None,
        None,
    )?;
    // Unbuffered: the rows are written in blocks of 256 KiB.
    let written = rendered.write_to(out, path)?;
    Ok(ProcessSummary::of(&counters, written, started.elapsed()))
}

/// Runs the dataflow over bounded partitions and returns every table's final rows, in no
/// particular order.
pub fn run_to_final_rows(run: BoundedRun) -> Result<Vec<Row>> {
    let final_rows = Arc::new(FinalRows::default());
    run_into(
        run,
        vec![Arc::clone(&final_rows) as Arc<dyn Sink>],
        None,
        None,
    )?;
    Ok(final_rows.take()?)
}

/// Runs the dataflow over bounded partitions into `sinks` (paced by `lead`, when a sink makes
/// rows durable at its own pace; checkpointed when a sink keeps `checkpoints`) and returns once the sinks are done.
pub fn run_into(
    run: BoundedRun,
    sinks: Vec<Arc<dyn Sink>>,
    lead: Option<Millis>,
    checkpoints: Option<Checkpoints>,
) -> Result<()> {
    let counters = Arc::clone(&run.counters);
    start(Job {
        cluster: run.cluster,
        plan: run.plan,
        analyzer: run.analyzer,
        counters: run.counters,
        sources: run.sources,
        sinks,
        lead,
        checkpoints,
    })?
    .join()?;
    // A partition that could not be read to its end leaves the output incomplete.
    match counters.read_errors.load(Ordering::Relaxed) {
        0 => Ok(()),
        errors => Err(RuntimeError::Incomplete { errors }),
    }
}
