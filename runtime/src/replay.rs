//! `crowdpulse replay`: a bounded run over Kafka from `--from` to `--until`, writing every
//! table's final rows as sorted NDJSON (the same lines `crowdpulse process` writes), with a
//! progress line on stderr: offsets done of total, events/s and an ETA.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdpulse_connectors::config::Config;
use crowdpulse_connectors::error::ConnectorError;
use crowdpulse_connectors::kafka_source::{check_topics, KafkaSourceOptions};
use crowdpulse_connectors::position::Position;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::source::{PartitionProgress, SourceCounters};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::cluster::Cluster;
use crate::error::Result;
use crate::process::{run_share, run_to_file, run_to_ndjson, BoundedRun, ProcessSummary};
use crate::sources::Sources;

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// `[kafka]` (brokers, topics) and the lexicons.
    pub config: Config,
    /// The resolved pipeline.
    pub plan: Plan,
    /// Where the workers run.
    pub cluster: Cluster,
    /// Where reading starts.
    pub from: Position,
    /// Where it ends.
    pub until: Position,
    /// Output file; None writes to stdout.
    pub output: Option<PathBuf>,
    /// Whether to draw the progress line on stderr.
    pub progress: bool,
}

/// The offsets a replay covers in one partition: `[start, end)`, as far as the broker tells
/// (start times resolve to the low watermark, since lookups by time may be imprecise; a stale
/// high watermark makes `end` short, see [`offsets_done`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OffsetRange {
    start: u64,
    end: u64,
}

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

fn offset_ranges(
    options: &KafkaSourceOptions,
    partitions: &[(String, i32)],
) -> Result<BTreeMap<(String, u32), OffsetRange>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .create()
        .map_err(|e| ConnectorError::Kafka(format!("creating a consumer: {e}")))?;
    let explicit = |position: &Position, topic: &str, partition: i32| {
        position
            .offset_of(topic, partition)
            .map(|offset| offset.max(0) as u64)
    };
    let mut ranges = BTreeMap::new();
    for (topic, count) in partitions {
        for partition in 0..*count {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, LOOKUP_TIMEOUT)
                .map_err(|e| ConnectorError::Kafka(format!("watermarks of {topic}: {e}")))?;
            let (low, high) = (low.max(0) as u64, high.max(0) as u64);
            let start = match &options.start {
                Position::Latest => high,
                other => explicit(other, topic, partition).unwrap_or(low),
            };
            let end = options
                .end
                .as_ref()
                .and_then(|end| explicit(end, topic, partition))
                .unwrap_or(high)
                .max(start);
            ranges.insert(
                (topic.clone(), partition as u32),
                OffsetRange { start, end },
            );
        }
    }
    Ok(ranges)
}

/// Offsets done and in total. A partition read past the end the broker reported (a stale high
/// watermark) has its end moved up to what was read, so the total grows as the truth is learnt
/// instead of showing 100% early.
fn offsets_done(
    ranges: &BTreeMap<(String, u32), OffsetRange>,
    progress: &BTreeMap<(String, u32), PartitionProgress>,
) -> (u64, u64) {
    let mut done = 0;
    let mut total = 0;
    for (key, range) in ranges {
        let progress = progress.get(key);
        let read_to = progress.and_then(|p| p.next_offset).unwrap_or(range.start);
        let span = range.end.max(read_to) - range.start;
        total += span;
        done += match progress {
            Some(p) if p.done => span,
            _ => read_to.saturating_sub(range.start).min(span),
        };
    }
    (done, total)
}

fn progress_line(done: u64, total: u64, events: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let rate = events as f64 / seconds;
    let offsets_rate = done as f64 / seconds;
    let eta = if done >= total || offsets_rate <= 0.0 {
        "-".to_owned()
    } else {
        format!("{:.0}s", (total - done) as f64 / offsets_rate)
    };
    let percent = if total == 0 {
        100.0
    } else {
        100.0 * done as f64 / total as f64
    };
    format!("replay: {done}/{total} offsets ({percent:.1}%), {rate:.0} events/s, ETA {eta}")
}

/// Draws the progress line until `finished`: redrawn in place on a terminal, otherwise one line
/// every few seconds (so logs stay readable).
fn spawn_progress(
    ranges: BTreeMap<(String, u32), OffsetRange>,
    counters: Arc<SourceCounters>,
    finished: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let terminal = std::io::stderr().is_terminal();
        let every = if terminal {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        };
        let mut last = Instant::now();
        loop {
            let ending = finished.load(Ordering::Relaxed);
            if ending || last.elapsed() >= every {
                last = Instant::now();
                let (done, total) = offsets_done(&ranges, &counters.partition_progress());
                let done = if ending { total.max(done) } else { done };
                let line = progress_line(
                    done,
                    total,
                    counters.records.load(Ordering::Relaxed),
                    started.elapsed(),
                );
                let mut err = std::io::stderr().lock();
                let _ = if terminal {
                    write!(err, "\r{line}\x1b[K")
                } else {
                    writeln!(err, "{line}")
                };
                if ending {
                    if terminal {
                        let _ = writeln!(err);
                    }
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Replays and writes the rows; returns what the run did.
pub fn replay(options: &ReplayOptions) -> Result<ProcessSummary> {
    if options.until == Position::Earliest {
        return Err(ConnectorError::Config("--until earliest would read nothing".into()).into());
    }
    let kafka = &options.config.kafka;
    if !kafka.enabled() {
        return Err(ConnectorError::Config(
            "no Kafka brokers configured (kafka.brokers or --brokers)".into(),
        )
        .into());
    }
    let source = kafka.source_options(
        options.from.clone(),
        Some(options.until.clone()),
        options.plan.kinds(),
    );
    let partitions = check_topics(&source)?;
    let counters = Arc::new(SourceCounters::default());
    let finished = Arc::new(AtomicBool::new(false));
    let progress = if options.progress {
        let mut ranges = offset_ranges(&source, &partitions)?;
        // In a cluster, the progress of this process's partitions.
        let (total, local) = (
            options.cluster.total_workers(),
            options.cluster.local_workers(),
        );
        ranges.retain(|(_, partition), _| local.contains(&(*partition as usize % total)));
        Some(spawn_progress(
            ranges,
            Arc::clone(&counters),
            Arc::clone(&finished),
        ))
    } else {
        None
    };
    let run = BoundedRun {
        analyzer: options.config.sentiment.analyzer()?,
        plan: options.plan.clone(),
        cluster: options.cluster.clone(),
        counters: Arc::clone(&counters),
        sources: Sources::kafka(source),
    };
    let result = match &options.output {
        // In a cluster, the process hosting the sinks writes all the rows.
        _ if !options.cluster.hosts_sinks() => run_share(run),
        Some(path) => run_to_file(run, path),
        None => run_to_ndjson(
            run,
            (std::io::stdout().lock(), std::path::Path::new("stdout")),
        ),
    };
    finished.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.join();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_counts_offsets_read_and_totals_grow_past_stale_ends() {
        let key = |p: u32| ("t".to_owned(), p);
        let ranges = BTreeMap::from([
            (
                key(0),
                OffsetRange {
                    start: 10,
                    end: 110,
                },
            ),
            (key(1), OffsetRange { start: 0, end: 50 }),
            (key(2), OffsetRange { start: 0, end: 40 }),
        ]);
        let progress = BTreeMap::from([
            (
                key(0),
                PartitionProgress {
                    next_offset: Some(60),
                    ..PartitionProgress::default()
                },
            ),
            (
                key(1),
                PartitionProgress {
                    next_offset: Some(70),
                    ..PartitionProgress::default()
                },
            ),
        ]);
        // 50 of partition 0; partition 1 read past its reported end of 50, so its end moves to
        // 70; nothing of partition 2.
        assert_eq!(offsets_done(&ranges, &progress), (120, 210));
        let line = progress_line(100, 190, 1_000, Duration::from_secs(2));
        assert_eq!(
            line,
            "replay: 100/190 offsets (52.6%), 500 events/s, ETA 2s"
        );
        assert!(progress_line(5, 5, 5, Duration::from_secs(1)).ends_with("ETA -"));
    }
}
