//! The advisory mirror of the Kafka source's progress: every interval, the offsets the source has
//! read are committed to the consumer group (`enable.auto.commit=false`: crowdpulse's own
//! progress is authoritative, DESIGN §5; the group only lets standard lag tools see it), and each
//! partition's lag behind its high watermark is measured for `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::source::SourceCounters;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::error::{ConnectorError, Result};
use crate::kafka_source::KafkaSourceOptions;
use crate::live_input::wall_clock_ms;

/// One partition's position against the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition's high watermark (offset of its next message) as the broker reports it.
    pub high_watermark: i64,
    /// Messages between what the source has read and the high watermark (never negative).
    pub lag: i64,
}

/// The last measured lag of every partition read, by (topic, partition).
#[derive(Debug, Default)]
pub struct KafkaLag {
    partitions: Mutex<BTreeMap<(String, u32), PartitionLag>>,
    /// Wall-clock time (epoch ms) the broker last answered every watermark lookup of a round.
    answered_at: AtomicU64,
}

impl KafkaLag {
    /// When the broker last answered a whole round of lookups (None: not yet).
    pub fn answered_at(&self) -> Option<Millis> {
        Some(self.answered_at.load(Ordering::Relaxed)).filter(|at| *at > 0)
    }

    /// A snapshot.
    pub fn snapshot(&self) -> BTreeMap<(String, u32), PartitionLag> {
        self.partitions().clone()
    }

    /// The high watermark last measured for `topic`/`partition`.
    pub fn high_watermark(&self, partition: &(String, u32)) -> Option<i64> {
        self.partitions()
            .get(partition)
            .map(|lag| lag.high_watermark)
    }

    /// Takes a round of lookups: `measured` are the partitions answered, `complete` whether
    /// every lookup was.
    pub(crate) fn record_round(
        &self,
        measured: BTreeMap<(String, u32), PartitionLag>,
        complete: bool,
    ) {
        self.partitions().extend(measured);
        if complete {
            self.answered_at.store(wall_clock_ms(), Ordering::Relaxed);
        }
    }

    fn partitions(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u32), PartitionLag>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long one watermark lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The running mirror; stops when dropped.
pub struct ProgressMirror {
    /// Measured lags.
    pub lag: Arc<KafkaLag>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long stopping waits for the mirror's thread: its lookup in progress, then its client's
/// close, which with a broker that stopped answering waits out librdkafka's socket timeout (60 s).
const STOP_WAIT: Duration = Duration::from_millis(2_500);

impl Drop for ProgressMirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return;
        };
        // The mirror is advisory: a shutdown must stay bounded, so a thread still closing its
        // client after the wait is left to finish (or to end with the process).
        let deadline = Instant::now() + STOP_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            warn!(waited = ?STOP_WAIT, "the kafka progress client is still closing; not waiting for it");
        }
    }
}

/// Starts mirroring the progress `counters` report for the topics of `options`.
pub fn mirror_progress(
    options: &KafkaSourceOptions,
    counters: Arc<SourceCounters>,
    interval: Duration,
) -> Result<ProgressMirror> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .set("group.id", &options.group_id)
        // Only explicit commits of what the source has read; this consumer reads nothing.
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| ConnectorError::Kafka(format!("creating the progress consumer: {e}")))?;
    let topics: Vec<String> = options.topics.iter().map(|t| t.name.clone()).collect();
    let lag = Arc::new(KafkaLag::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (lag_out, stop_in) = (Arc::clone(&lag), Arc::clone(&stop));
    let thread = std::thread::Builder::new()
        .name("kafka-progress".into())
        .spawn(move || {
            let mut next_round = Instant::now();
            while !stop_in.load(Ordering::Relaxed) {
                // Serves commit results and client errors.
                if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
                    debug!(%error, "progress consumer");
                }
                if Instant::now() < next_round {
                    continue;
                }
                next_round = Instant::now() + interval;
                mirror_once(&consumer, &topics, &counters, &lag_out, &stop_in);
            }
        })
        .map_err(|e| ConnectorError::Kafka(format!("starting the progress thread: {e}")))?;
    Ok(ProgressMirror {
        lag,
        stop,
        thread: Some(thread),
    })
}

fn mirror_once(
    consumer: &BaseConsumer,
    topics: &[String],
    counters: &SourceCounters,
    lag: &KafkaLag,
    stop: &AtomicBool,
) {
    let mut commits = TopicPartitionList::new();
    let mut measured = BTreeMap::new();
    let mut answered = true;
    for ((topic, partition), progress) in counters.partition_progress() {
        // Each lookup may take its timeout: a stop does not wait for the others.
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if !topics.contains(&topic) {
            continue;
        }
        if let Some(next) = progress.next_offset {
            let _ =
                commits.add_partition_offset(&topic, partition as i32, Offset::Offset(next as i64));
        }
        match consumer.fetch_watermarks(&topic, partition as i32, LOOKUP_TIMEOUT) {
            Ok((low, high)) => {
                let read_to = progress.next_offset.map_or(low, |n| n as i64);
                let lag = PartitionLag {
                    high_watermark: high,
                    lag: (high - read_to).max(0),
                };
                measured.insert((topic, partition), lag);
            }
            Err(error) => {
                answered = false;
                warn!(%topic, partition, %error, "watermark lookup failed");
            }
        }
    }
    lag.record_round(measured, answered);
    if commits.count() > 0 {
        if let Err(error) = consumer.commit(&commits, CommitMode::Async) {
            warn!(%error, "committing offsets to the group failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use crowdpulse_dataflow::codec::{DecodeContext, Format};
    use crowdpulse_dataflow::source::PartitionProgress;

    use super::*;
    use crate::kafka_source::TopicSource;
    use crate::position::Position;

    /// A broker that stops answering holds each watermark lookup for its timeout: stopping the
    /// mirror (a run's shutdown) must not wait for every partition's lookup in turn.
    #[test]
    fn stopping_waits_for_one_lookup_at_most() {
        // Accepts connections (the kernel's backlog) and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let options = KafkaSourceOptions {
            brokers: silent.local_addr().unwrap().to_string(),
            group_id: "crowdpulse-test".into(),
            topics: vec![TopicSource {
                name: "events".into(),
                format: (Format::Json, DecodeContext::default()),
            }],
            start: Position::Earliest,
            end: None,
            fetch_wait_max_ms: 10,
            liveness: None,
        };
        let counters = Arc::new(SourceCounters::default());
        for partition in 0..8 {
            counters.partitions.lock().unwrap().insert(
                ("events".into(), partition),
                PartitionProgress {
                    next_offset: Some(1),
                    ..PartitionProgress::default()
                },
            );
        }
        let mirror = mirror_progress(&options, counters, Duration::from_millis(10)).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let stopping = Instant::now();
        drop(mirror);
        let waited = stopping.elapsed();
        // At most the bounded wait, not eight lookups and the client's close (over a minute).
        assert!(waited < STOP_WAIT * 2, "stopping took {waited:?}");
    }
}
