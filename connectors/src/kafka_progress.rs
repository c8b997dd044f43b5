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
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

impl Drop for ProgressMirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
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
                mirror_once(&consumer, &topics, &counters, &lag_out);
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
) {
    let mut commits = TopicPartitionList::new();
    let mut measured = BTreeMap::new();
    let mut answered = true;
    for ((topic, partition), progress) in counters.partition_progress() {
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
    lag.partitions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(measured);
    if answered {
        lag.answered_at.store(wall_clock_ms(), Ordering::Relaxed);
    }
    if commits.count() > 0 {
        if let Err(error) = consumer.commit(&commits, CommitMode::Async) {
            warn!(%error, "committing offsets to the group failed");
        }
    }
}
