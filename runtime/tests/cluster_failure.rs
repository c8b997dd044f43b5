//! A process of a bounded cluster run that fails (one of its workers panics, or a partition it
//! reads cannot be read to its end) ends every process of the cluster promptly and with an
//! error, instead of leaving them waiting for its progress forever; a live run that loses a
//! process names that loss as its failure.
//!
//! A cluster's processes share statics (the connections, whether a peer was lost), so each is
//! a process of its own: this test binary started again with the process's part to play.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdpulse_dataflow::codec::{DecodeContext, Format};
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::memory_reader::MemoryReader;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_dataflow::source::{PartitionReader, ReadStatus, RecordBatch, SourceCounters};
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::execute::{start, Job};
use crowdpulse_runtime::process::{run_share, run_to_ndjson, BoundedRun};
use crowdpulse_runtime::sources::{Partitions, ReadersFor, Sources};

/// Set in a started copy: `<failure>,<process>,<address 0>,<address 1>`.
const PART: &str = "CROWDPULSE_TEST_CLUSTER_PART";
const TEST: &str = "a_failing_process_ends_every_process_of_a_bounded_cluster_run";
const LIVE_TEST: &str = "a_live_run_names_the_process_it_lost";
const PARTITIONS: u32 = 4;
const RECORDS: usize = 4_000;
/// The read of process 1's partitions that fails: well into the run, long before its end.
const FAILING_READ: u64 = 20;

/// A partition of reactions, 100 a second over two streams, read 50 records at a time.
fn partition(partition: u32, records: usize, batch: usize) -> MemoryReader {
    let payloads = (0..records)
        .map(|i| {
            serde_json::json!({
                "type": "reaction",
                "stream_id": format!("s{}", i % 2),
                "user_id": format!("u{partition}-{i}"),
                "emoji": "🎉",
                "ts": 1_700_000_000_000u64 + i as u64 * 10,
            })
            .to_string()
            .into_bytes()
        })
        .collect();
    MemoryReader::new("reactions", partition, payloads).with_batches(vec![batch])
}

/// A partition whose reads fail as `failure` says from the [`FAILING_READ`]th read of its
/// process on.
struct Failing {
    inner: MemoryReader,
    failure: String,
    reads: Arc<AtomicU64>,
}

impl PartitionReader for Failing {
    fn source_name(&self) -> &str {
        self.inner.source_name()
    }

    fn partition(&self) -> u32 {
        self.inner.partition()
    }

    fn format(&self) -> (Format, DecodeContext) {
        self.inner.format()
    }

    fn read(&mut self, max: usize, out: &mut RecordBatch) -> Result<ReadStatus, String> {
        if self.reads.fetch_add(1, Ordering::Relaxed) + 1 >= FAILING_READ {
            match self.failure.as_str() {
                "panic" => panic!("a reader bug"),
                // As if killed: no destructor runs, the kernel closes the connections.
                "vanish" => std::process::exit(9),
                _ => return Err("the partition went away".to_owned()),
            }
        }
        self.inner.read(max, out)
    }
}

/// Plays process `process` of a two-process `replay`, one worker each, over [`PARTITIONS`]
/// partitions (process 1's failing as `failure` says), and exits 0 or 1 with the error.
fn play(part: &str) -> ! {
    let fields: Vec<&str> = part.split(',').collect();
    let [failure, process, first, second] = fields[..] else {
        panic!("{PART}={part}")
    };
    let process: usize = process.parse().unwrap();
    let cluster = Cluster {
        workers: 1,
        processes: vec![first.to_owned(), second.to_owned()],
        process,
        startup_timeout: Duration::from_secs(30),
        peer_timeout: Duration::from_secs(5),
        sink_process: 0,
    };
    let live = failure == "vanish";
    // A live run's process 0 is still reading its partitions when process 1 vanishes.
    let (records, batch) = if live {
        (50 * RECORDS, 1000)
    } else {
        (RECORDS, 50)
    };
    let failure = failure.to_owned();
    let reads = Arc::new(AtomicU64::new(0));
    let open: ReadersFor = Arc::new(move |index, workers, _| {
        Ok((0..PARTITIONS)
            .filter(|p| *p as usize % workers == index)
            .map(|p| match process {
                1 => Box::new(Failing {
                    inner: partition(p, records, batch),
                    failure: failure.clone(),
                    reads: Arc::clone(&reads),
                }) as Box<dyn PartitionReader>,
                _ => Box::new(partition(p, records, batch)) as Box<dyn PartitionReader>,
            })
            .collect())
    });
    if live {
        watch_live(cluster, open);
    }
    let run = BoundedRun {
        analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
        plan: Plan::new(PipelineConfig::default()).unwrap(),
        cluster,
        counters: Arc::new(SourceCounters::default()),
        sources: Sources::bounded(open, "four partitions of reactions"),
    };
    let outcome = match process {
        0 => run_to_ndjson(run, (std::io::sink(), Path::new("rows.ndjson"))).map(drop),
        _ => run_share(run).map(drop),
    };
    match outcome {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("the run failed: {error}");
            std::process::exit(1)
        }
    }
}

/// Runs the partitions live (they never end) and prints why the run failed, as a live run's
/// watcher (`/health`, the exit) learns it; exits 1.
fn watch_live(cluster: Cluster, open: ReadersFor) -> ! {
    let running = start(Job {
        cluster,
        plan: Plan::new(PipelineConfig::default()).unwrap(),
        analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
        counters: Arc::new(SourceCounters::default()),
        sources: Sources::Unbounded(Partitions {
            open,
            identity: "four partitions of reactions".into(),
        }),
        sinks: Vec::new(),
        lead: None,
        checkpoints: None,
    })
    .unwrap();
    let failed = running.failed();
    let deadline = Instant::now() + Duration::from_secs(20);
    while failed.get().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "the run failed: {}",
        failed.get().map_or("nothing failed", String::as_str)
    );
    let _ = running.stop();
    std::process::exit(1)
}

fn free_addresses(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// Starts this test binary again to run `test` as process `process`.
fn start_part(test: &str, failure: &str, process: usize, addresses: &[String]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(PART, format!("{failure},{process},{}", addresses.join(",")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` until `deadline`; kills it past that. Its exit success and stderr, or None
/// when it had to be killed.
fn outcome(mut child: Child, deadline: Instant) -> Option<(bool, String)> {
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    Some((status?.success(), stderr))
}

/// The error a played process ended with, as [`play`] prints it.
fn error(stderr: &str) -> &str {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("the run failed: "))
        .unwrap_or_default()
}

#[test]
fn a_failing_process_ends_every_process_of_a_bounded_cluster_run() {
    if let Ok(part) = std::env::var(PART) {
        play(&part);
    }
    for (failure, cause) in [
        ("read-error", "failed reads"),
        ("panic", "worker 1 panicked"),
    ] {
        let addresses = free_addresses(2);
        let first = start_part(TEST, failure, 0, &addresses);
        let second = start_part(TEST, failure, 1, &addresses);
        // Both end within seconds of the failure (a debug build on a loaded machine); the
        // bound fails a process that waits for its lost peer until it is killed.
        let deadline = Instant::now() + Duration::from_secs(30);
        let failed = outcome(second, deadline);
        let other = outcome(first, deadline);
        let (success, stderr) = failed.unwrap_or_else(|| {
            panic!("{failure}: the failing process 1 was still running after 30 s")
        });
        assert!(!success, "{failure}: process 1 ended well: {stderr}");
        assert!(error(&stderr).contains(cause), "{failure}: {stderr}");
        let (success, stderr) = other.unwrap_or_else(|| {
            panic!("{failure}: process 0 was still running 30 s after process 1 failed")
        });
        assert!(!success, "{failure}: process 0 ended well: {stderr}");
        assert!(
            error(&stderr).contains("lost the connection to process 1"),
            "{failure}: {stderr}"
        );
    }
}

/// A live run learns the cause of a process's loss: the panics its workers may hit on the
/// connection's broken queues are consequences, not the cause.
#[test]
fn a_live_run_names_the_process_it_lost() {
    if let Ok(part) = std::env::var(PART) {
        play(&part);
    }
    for _ in 0..3 {
        let addresses = free_addresses(2);
        let first = start_part(LIVE_TEST, "vanish", 0, &addresses);
        let second = start_part(LIVE_TEST, "vanish", 1, &addresses);
        let deadline = Instant::now() + Duration::from_secs(30);
        outcome(second, deadline).expect("process 1 vanished");
        let (_, stderr) = outcome(first, deadline).expect("process 0 ended");
        assert!(
            error(&stderr).contains("lost the connection to process 1"),
            "{stderr}"
        );
    }
}
