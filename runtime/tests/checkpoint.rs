//! Checkpoints in process, over generated input in memory (no services): a run that takes a
//! checkpoint at every chance gives the same final rows as one that takes none, and resuming
//! from any of its checkpoints, with 1, 2 or 3 workers, emits exactly the final rows the
//! uninterrupted run emitted after that checkpoint: together with the rows before it, every
//! final row once. A fifth partition holds records of a configured kind (the download preset,
//! with tumbling and hopping windows), so kinds' windows and alert history are restored too.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crowdpulse_connectors::download_generator::DownloadGenerator;
use crowdpulse_connectors::generator::{write_files, GeneratorConfig};
use crowdpulse_connectors::sink::{Flush, Sink};
use crowdpulse_dataflow::checkpoint::{Checkpoint, CheckpointError, Restore};
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::kinds::config::KindConfig;
use crowdpulse_dataflow::memory_reader::MemoryReader;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::rows_json::RowJson;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_dataflow::source::PartitionReader;
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::execute::{start, Checkpoints, Job};
use crowdpulse_runtime::sources::Sources;

/// Final rows with the time they were emitted at, and every checkpoint, as handed to sinks.
#[derive(Default)]
struct Capture {
    rows: Mutex<Vec<(String, u64)>>,
    checkpoints: Mutex<Vec<Arc<Checkpoint>>>,
}

impl Sink for Capture {
    fn flush(&self, flush: &Arc<Flush>) {
        let mut rows = self.rows.lock().unwrap();
        for (row, time, diff) in &flush.updates {
            if row.is_final() && *diff > 0 {
                rows.push((serde_json::to_string(&RowJson(row)).unwrap(), *time));
            }
        }
        self.checkpoints
            .lock()
            .unwrap()
            .extend(flush.checkpoint.clone());
    }
}

/// Four partitions of generated events (with malformed and late records, and retries: every
/// tenth event carries an `event_id` and is repeated 25 records later), one payload per line.
fn partitions() -> &'static [Vec<Vec<u8>>] {
    static PARTITIONS: OnceLock<Vec<Vec<Vec<u8>>>> = OnceLock::new();
    PARTITIONS.get_or_init(generate)
}

fn generate() -> Vec<Vec<Vec<u8>>> {
    let dir = std::env::temp_dir().join(format!("crowdpulse-checkpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = GeneratorConfig {
        events: 30_000,
        seed: 5,
        streams: 7,
        rate: 500.0,
        ..GeneratorConfig::default()
    };
    let paths = write_files(config, &dir.join("events.ndjson"), 4).unwrap();
    let parts = paths
        .iter()
        .map(|path| {
            let lines = std::fs::read(path)
                .unwrap()
                .split(|b| *b == b'\n')
                .filter(|line| !line.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            with_retries(lines)
        })
        .collect();
    let mut parts: Vec<Vec<Vec<u8>>> = parts;
    with_quiet_streams(&mut parts);
    std::fs::remove_dir_all(&dir).unwrap();
    let downloads = DownloadGenerator::new(6_000, 9, 100.0, GeneratorConfig::default().start);
    parts.push(
        downloads
            .map(|(_, record)| record.to_string().into_bytes())
            .collect(),
    );
    parts
}

/// The partition of [`partitions`] holding the kind's records.
const KIND_PARTITION: usize = 4;

/// Appends ten minutes in which only one stream per partition speaks (every second), so the
/// generated streams go quiet and checkpoints hold quiet streams, and then one event of each
/// generated stream, which wakes them (after a restore, too).
fn with_quiet_streams(parts: &mut [Vec<Vec<u8>>]) {
    let events: Vec<serde_json::Value> = parts
        .iter()
        .flatten()
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    let end = events
        .iter()
        .filter_map(|e| e["ts"].as_u64())
        .max()
        .unwrap()
        + 5_000;
    let streams: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["stream_id"].as_str())
        .collect();
    let reaction = |stream: &str, ts: u64| {
        serde_json::json!({"type": "reaction", "stream_id": stream, "user_id": "late-comer", "emoji": "🎉", "ts": ts})
            .to_string()
            .into_bytes()
    };
    let wake: Vec<Vec<u8>> = streams.iter().map(|s| reaction(s, end + 610_000)).collect();
    for (p, lines) in parts.iter_mut().enumerate() {
        let lone = format!("lone-{p}");
        lines.extend((1..=600).map(|k| reaction(&lone, end + k * 1_000)));
    }
    parts[0].extend(wake);
}

/// Gives every tenth JSON object an `event_id` and repeats it 25 records later, so duplicates
/// straddle checkpoints and the ids a partition remembers must be restored.
fn with_retries(lines: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(lines.len() + lines.len() / 10);
    let mut retries: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
    for (i, mut line) in lines.into_iter().enumerate() {
        if i % 10 == 0 {
            if let Ok(serde_json::Value::Object(mut event)) = serde_json::from_slice(&line) {
                event.insert("event_id".into(), format!("id{i}").into());
                line = serde_json::Value::Object(event).to_string().into_bytes();
                retries.push_back((i + 25, line.clone()));
            }
        }
        out.push(line);
        while retries.front().is_some_and(|(at, _)| *at == i) {
            out.extend(retries.pop_front().map(|(_, retry)| retry));
        }
    }
    out.extend(retries.into_iter().map(|(_, retry)| retry));
    out
}

fn plan() -> Plan {
    let downloads = KindConfig {
        preset: Some("content_downloads".into()),
        windows: Some(vec!["10s".into(), "30s/10s".into()]),
        ..KindConfig::default()
    };
    Plan::new(PipelineConfig {
        kinds: BTreeMap::from([("downloads".to_owned(), downloads)]),
        ..PipelineConfig::default()
    })
    .unwrap()
}

/// Runs over `parts` with `workers` threads, each partition from the checkpoint's offset when
/// resuming; checkpoints every `interval` (None: none).
fn run(
    parts: &[Vec<Vec<u8>>],
    workers: usize,
    interval: Option<Duration>,
    restore: Option<Arc<Restore>>,
) -> Arc<Capture> {
    let capture = Arc::new(Capture::default());
    let parts = parts.to_vec();
    let offsets = restore.as_ref().map(|r| {
        r.partitions
            .iter()
            .map(|(key, state)| (key.clone(), state.next_offset.unwrap_or(0)))
            .collect::<BTreeMap<(String, u32), u64>>()
    });
    let readers = move |index: usize, peers: usize, _clock: u64| {
        Ok(parts
            .iter()
            .enumerate()
            .filter(|(p, _)| p % peers == index)
            .map(|(p, payloads)| {
                let partition = p as u32;
                let source = if p == KIND_PARTITION {
                    "downloads"
                } else {
                    "events"
                };
                let from = offsets
                    .as_ref()
                    .and_then(|o| o.get(&(source.to_owned(), partition)).copied())
                    .unwrap_or(0);
                // Small reads, so that the capability moves (and checkpoints come) often.
                let reader = MemoryReader::new(source, partition, payloads.clone())
                    .starting_at(from)
                    .with_batches(vec![97, 13, 256]);
                let reader = match p == KIND_PARTITION {
                    true => reader.of_kind(0),
                    false => reader,
                };
                Box::new(reader) as Box<dyn PartitionReader>
            })
            .collect())
    };
    let checkpoints = interval.map(|interval| Checkpoints {
        interval,
        restore,
        store: "memory".into(),
    });
    start(Job {
        cluster: Cluster::local(workers),
        plan: plan(),
        analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
        counters: Arc::default(),
        sources: Sources::bounded(Arc::new(readers), "memory"),
        sinks: vec![Arc::clone(&capture) as Arc<dyn Sink>],
        lead: None,
        checkpoints,
    })
    .unwrap()
    .join()
    .unwrap();
    capture
}

fn sorted(rows: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut rows: Vec<String> = rows.into_iter().collect();
    rows.sort();
    rows
}

#[test]
fn resuming_from_any_checkpoint_with_any_worker_count_completes_the_uninterrupted_rows() {
    resume_everywhere(partitions(), 2);
}

/// One worker without partitions, another whose only partition ends early: checkpoints still
/// complete (the finished source's last state stands in for it) and resume exactly.
#[test]
fn workers_without_input_do_not_hold_checkpoints_back() {
    let parts = partitions();
    let short: Vec<Vec<u8>> = parts[0][..parts[0].len() / 10].to_vec();
    resume_everywhere(&[short, parts[1].clone()], 3);
}

/// Runs `parts` with `workers` workers, checkpointing at every chance, and resumes from several
/// of the checkpoints with 1, 2 and 3 workers: each resumed run completes the rows exactly.
fn resume_everywhere(parts: &[Vec<Vec<u8>>], workers: usize) {
    let plain = run(parts, workers, None, None);
    let expected = sorted(plain.rows.lock().unwrap().iter().map(|(r, _)| r.clone()));
    assert!(expected.len() > 500, "{} rows", expected.len());
    assert!(expected
        .iter()
        .any(|r| r.contains("\"table\":\"dead_letters\"")));
    if parts.len() > KIND_PARTITION {
        assert!(expected
            .iter()
            .any(|r| r.contains("\"table\":\"custom_metrics\"")));
    }

    let checkpointed = run(parts, workers, Some(Duration::ZERO), None);
    let rows = checkpointed.rows.lock().unwrap().clone();
    assert_eq!(
        sorted(rows.iter().map(|(r, _)| r.clone())),
        expected,
        "taking checkpoints changed the rows"
    );
    let checkpoints = checkpointed.checkpoints.lock().unwrap().clone();
    // How many rounds complete before the input ends depends on the scheduling: a loaded
    // machine gave 2 in a full test run.
    assert!(checkpoints.len() >= 2, "{} checkpoints", checkpoints.len());
    // Spread over the run, and the last one (in the tail, where streams are quiet).
    let step = checkpoints.len().div_ceil(4);
    let chosen = checkpoints.iter().step_by(step).chain(checkpoints.last());
    for (n, checkpoint) in chosen.enumerate() {
        assert_eq!(checkpoint.workers, workers);
        let restore = Arc::new(Restore::decode(checkpoint, &plan()).unwrap());
        let before: Vec<String> = rows
            .iter()
            .filter(|(_, time)| *time <= checkpoint.time)
            .map(|(r, _)| r.clone())
            .collect();
        let workers = 1 + n % 3;
        let resumed = run(
            parts,
            workers,
            Some(Duration::from_secs(3600)),
            Some(restore),
        );
        let after: Vec<String> = resumed
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|(r, _)| r.clone())
            .collect();
        if std::env::var("DEBUG_CP").is_ok() {
            let mut tables = std::collections::BTreeMap::<String, usize>::new();
            for r in &after {
                *tables.entry(r[..40.min(r.len())].to_string()).or_default() += 1;
            }
            eprintln!(
                "T={} after tables {:?}",
                checkpoint.time,
                tables.iter().take(5).collect::<Vec<_>>()
            );
            eprintln!(
                "partitions {:?}",
                checkpoint.positions().collect::<Vec<_>>()
            );
        }
        let mut together = before.clone();
        together.extend(after.iter().cloned());
        assert_eq!(
            together.len(),
            expected.len(),
            "checkpoint at {} resumed with {workers} workers: {} rows before, {} after",
            checkpoint.time,
            before.len(),
            after.len()
        );
        assert!(
            sorted(together) == expected,
            "checkpoint at {} resumed with {workers} workers: rows differ",
            checkpoint.time
        );
    }
}

#[test]
fn a_checkpoint_of_other_pipeline_settings_is_refused() {
    let parts = partitions();
    let checkpointed = run(&parts[..1], 1, Some(Duration::ZERO), None);
    let checkpoint = checkpointed.checkpoints.lock().unwrap()[0].clone();
    let mut config = PipelineConfig::default();
    config.allowed_lateness = crowdpulse_dataflow::config::Span(1_000);
    let other = Plan::new(config).unwrap();
    assert!(matches!(
        Restore::decode(&checkpoint, &other),
        Err(CheckpointError::Pipeline { .. })
    ));
    let mut corrupt = (*checkpoint).clone();
    corrupt.parts[0].state[0] ^= 0xff;
    assert!(matches!(
        Restore::decode(&corrupt, &plan()),
        Err(CheckpointError::Format { .. })
    ));
}
