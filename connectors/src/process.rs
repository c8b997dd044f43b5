//! `crowdpulse process`: a bounded run of the analytics dataflow over NDJSON files (one file per
//! partition), writing the final rows of every table as sorted NDJSON.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::pipeline::run_bounded;
use crowdpulse_dataflow::source::{PartitionReader, SourceCounters};
use tracing::warn;

use crate::config::Config;
use crate::error::{ConnectorError, Result};
use crate::file_source::FileReader;
use crate::sorted_output::write_sorted_ndjson;

/// What to process.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Input files; file i is partition i, read by worker i % workers.
    pub inputs: Vec<PathBuf>,
    /// Where the NDJSON rows go.
    pub output: PathBuf,
    /// Worker threads.
    pub workers: usize,
    /// Pipeline and sentiment settings.
    pub config: Config,
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
    /// All dead-lettered records (decode, invalid, late).
    pub dead_lettered: u64,
    /// Rows written.
    pub rows: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl ProcessSummary {
    /// Records per second of wall time.
    pub fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The one-line report commands print: "{records} events with {workers} workers: ...".
    pub fn report(&self, workers: usize) -> String {
        format!(
            "{} events with {workers} workers: {} valid, {} late, {} dead-lettered; {} rows written; {:.3} s, {:.0} events/s",
            self.records,
            self.events,
            self.late,
            self.dead_lettered,
            self.rows,
            self.elapsed.as_secs_f64(),
            self.records_per_second()
        )
    }
}

/// Runs the dataflow over the files and writes the rows.
pub fn process_files(options: &ProcessOptions) -> Result<ProcessSummary> {
    if options.inputs.is_empty() {
        return Err(ConnectorError::Config(
            "at least one --input is required".into(),
        ));
    }
    for (partition, path) in options.inputs.iter().enumerate() {
        FileReader::open(path, partition as u32)?;
    }
    let inputs = options.inputs.clone();
    let counters = Arc::new(SourceCounters::default());
    let out = std::fs::File::create(&options.output)
        .map_err(|e| ConnectorError::io(&options.output, e))?;
    run_to_ndjson(
        &options.config,
        options.workers,
        counters,
        move |index, peers| {
            Ok(inputs
                .iter()
                .enumerate()
                .filter(|(partition, _)| partition % peers == index)
                .filter_map(
                    |(partition, path)| match FileReader::open(path, partition as u32) {
                        Ok(reader) => Some(Box::new(reader) as Box<dyn PartitionReader>),
                        Err(error) => {
                            warn!(%error, "input vanished after the start check; skipping it");
                            None
                        }
                    },
                )
                .collect())
        },
        (out, &options.output),
    )
}

/// Runs the dataflow over bounded partitions (`readers_for(worker, workers)`) and writes every
/// table's final rows to `out` as sorted NDJSON (`path` names it in errors).
pub fn run_to_ndjson<F>(
    config: &Config,
    workers: usize,
    counters: Arc<SourceCounters>,
    readers_for: F,
    (out, path): (impl std::io::Write, &std::path::Path),
) -> Result<ProcessSummary>
where
    F: Fn(usize, usize) -> std::result::Result<Vec<Box<dyn PartitionReader>>, String>
        + Send
        + Sync
        + 'static,
{
    let started = Instant::now();
    let analyzer = config.sentiment.analyzer()?;
    // Only final rows are written, so live rows (early results) would be built for nothing.
    let pipeline = PipelineConfig {
        live_rows: false,
        ..config.pipeline.clone()
    };
    let rows = run_bounded(
        workers,
        &pipeline,
        analyzer,
        Arc::clone(&counters),
        readers_for,
    )?;
    let out = std::io::BufWriter::with_capacity(1 << 20, out);
    let written =
        write_sorted_ndjson(&rows, workers.max(1), out).map_err(|e| ConnectorError::io(path, e))?;
    Ok(ProcessSummary {
        records: counters.records.load(Ordering::Relaxed),
        events: counters.events(),
        late: counters.late.load(Ordering::Relaxed),
        dead_lettered: counters.dead_lettered(),
        rows: written,
        elapsed: started.elapsed(),
    })
}
