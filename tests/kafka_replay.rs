//! `crowdpulse generate --kafka` and `crowdpulse replay` against the real broker
//! (`scripts/kafka.sh`): the same generated events, produced to a 4-partition topic and written
//! to 4 files split the same way, give the same rows from `replay` as from `process`, for 1 and
//! 2 workers; `--from`/`--until` offsets bound the replay; per-kind topics in JSON or bincode
//! give the same results; two processes of one worker give the bytes of one process of two, the
//! rows of `process` and the rows of the sequential reference.

#[path = "../connectors/tests/support/mod.rs"]
mod kafka_support;

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::reference::{reference_rows, ReferencePartition};
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use kafka_support::{fresh_topic, BROKER};
use serde_json::Value;
use support::{cluster_env, spawn_cluster, wait_cluster};

const EVENTS: &str = "20000";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("crowdpulse-replay-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the command; returns its stderr.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    stderr
}

fn generate_args(cmd: &mut Command) -> &mut Command {
    cmd.args([
        "generate",
        "--events",
        EVENTS,
        "--seed",
        "11",
        "--rate",
        "400",
        "--streams",
        "7",
    ])
}

fn replay(topic: &str, output: &Path, workers: usize, (from, until): (&str, &str)) -> String {
    run_ok(
        bin()
            .args([
                "replay",
                "--from",
                from,
                "--until",
                until,
                "--brokers",
                BROKER,
            ])
            .args(["--workers", &workers.to_string()])
            .arg("--output")
            .arg(output)
            .env(
                "CROWDPULSE__KAFKA__TOPICS",
                format!("[{{name = \"{topic}\"}}]"),
            ),
    )
}

/// `process` over the 4 files `generate --partitions 4` wrote into `dir`, into
/// `dir/process.ndjson`.
fn process_split(dir: &Path) {
    let mut process = bin();
    process.arg("process");
    for p in 0..4 {
        process
            .arg("--input")
            .arg(dir.join(format!("events-{p}.ndjson")));
    }
    run_ok(process.arg("--output").arg(dir.join("process.ndjson")));
}

/// Rows with the source (file path or topic) of dead letters, chat messages and chat summaries'
/// last messages blanked: the only field that names where the records were read from.
fn rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let mut row: Value = serde_json::from_str(line).unwrap();
            if row["table"] == "dead_letters" || row["table"] == "chat_messages" {
                row["source"] = Value::Null;
            }
            if row["table"] == "chat_summaries" {
                row["last_source"] = Value::Null;
            }
            row
        })
        .collect()
}

#[test]
fn replay_from_kafka_equals_process_on_the_same_split_and_until_bounds_it() {
    let dir = scratch("split");
    let topic = fresh_topic("replay", 4);
    let produced = run_ok(generate_args(&mut bin()).args(["--kafka", BROKER, "--topic", &topic]));
    assert!(
        produced.contains(&format!("produced {EVENTS} events")),
        "{produced}"
    );
    run_ok(
        generate_args(&mut bin())
            .arg("--output")
            .arg(dir.join("events.ndjson"))
            .args(["--partitions", "4"]),
    );
    process_split(&dir);
    let expected = rows(&dir.join("process.ndjson"));
    assert!(expected.iter().any(|r| r["table"] == "dead_letters"));

    let one = dir.join("replay-1.ndjson");
    let progress = replay(&topic, &one, 1, ("earliest", "latest"));
    assert!(
        progress.contains(&format!("replayed {EVENTS} events")),
        "{progress}"
    );
    assert!(progress.contains("offsets (100.0%)"), "{progress}");
    assert_eq!(
        rows(&one),
        expected,
        "replay from Kafka differs from process"
    );
    let two = dir.join("replay-2.ndjson");
    replay(&topic, &two, 2, ("earliest", "latest"));
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());

    // --until offsets: the first 100 messages of every partition, nothing after.
    let until: Vec<String> = (0..4).map(|p| format!("{topic}:{p}:100")).collect();
    let bounded = dir.join("replay-until.ndjson");
    let summary = replay(&topic, &bounded, 2, ("earliest", &until.join(",")));
    assert!(summary.contains("replayed 400 events"), "{summary}");

    // --from offsets inside record batches (the generator produces large ones), past the end
    // of a partition, and unlisted partitions from earliest: exactly the messages from there.
    let lines = |p: usize| {
        std::fs::read_to_string(dir.join(format!("events-{p}.ndjson")))
            .unwrap()
            .lines()
            .count()
    };
    let from = format!("{topic}:0:150,{topic}:1:{}", lines(1) - 7);
    let summary = replay(&topic, &bounded, 2, (&from, "latest"));
    let expected = lines(0) - 150 + 7 + lines(2) + lines(3);
    assert!(
        summary.contains(&format!("replayed {expected} events")),
        "{summary}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_processes_replay_the_bytes_of_one_and_the_rows_of_the_reference() {
    let dir = scratch("cluster");
    let topic = fresh_topic("replay-cluster", 4);
    run_ok(generate_args(&mut bin()).args(["--kafka", BROKER, "--topic", &topic]));
    run_ok(
        generate_args(&mut bin())
            .arg("--output")
            .arg(dir.join("events.ndjson"))
            .args(["--partitions", "4"]),
    );
    let one = dir.join("one-process.ndjson");
    replay(&topic, &one, 2, ("earliest", "latest"));

    let two = dir.join("two-processes.ndjson");
    let cluster = cluster_env(2);
    // `--until now` (every message was produced before it): relative to process 0's clock in
    // both processes, so they agree on the job (each took its own clock before, and refused the
    // other as running another job). The processes start 100 ms apart, as on two hosts: started
    // together they often read one millisecond.
    let children = spawn_cluster(2, || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut cmd = bin();
        cmd.args([
            "replay",
            "--from",
            "earliest",
            "--until",
            "now",
            "--brokers",
            BROKER,
            "--output",
        ])
        .arg(&two)
        .env(
            "CROWDPULSE__KAFKA__TOPICS",
            format!("[{{name = \"{topic}\"}}]"),
        )
        .envs(cluster.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(Stdio::piped());
        cmd
    });
    let summaries = wait_cluster(children);
    // Each process reads its own partitions (2 of 4) and says so; process 0 writes every row.
    assert!(summaries[0].contains("(process 0 of 2"), "{}", summaries[0]);
    assert!(summaries[1].contains("(process 1 of 2") && summaries[1].contains("0 rows written"));
    let read = |summary: &str| -> u64 {
        let after = summary
            .split("from the other processes) ")
            .nth(1)
            .expect("a summary line");
        after.split(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        read(&summaries[0]) + read(&summaries[1]),
        EVENTS.parse::<u64>().unwrap()
    );
    // The processes exchanged pane deltas by stream (and progress): both sent something real.
    for summary in &summaries {
        let sent = summary.split("its partitions; ").nth(1).unwrap();
        let sent: u64 = sent.split(' ').next().unwrap().parse().unwrap();
        assert!(sent > 10_000, "{summary}");
    }
    assert!(read(&summaries[0]) > 0 && read(&summaries[1]) > 0);
    assert_eq!(
        std::fs::read(&one).unwrap(),
        std::fs::read(&two).unwrap(),
        "two processes wrote other bytes than one"
    );
    // `process` over the files: the same rows (its dead letters and chat messages name the files,
    // not the topic).
    process_split(&dir);
    assert_eq!(rows(&two), rows(&dir.join("process.ndjson")));

    // The sequential reference over the same split (its partition p is the topic's partition p).
    let partitions: Vec<ReferencePartition> = (0..4)
        .map(|p| ReferencePartition {
            source: topic.clone(),
            partition: p,
            payloads: std::fs::read_to_string(dir.join(format!("events-{p}.ndjson")))
                .unwrap()
                .lines()
                .map(|l| l.as_bytes().to_vec())
                .collect(),
        })
        .collect();
    let analyzer = Analyzer::new(Lexicons::builtin());
    let config = PipelineConfig {
        live_rows: false,
        ..PipelineConfig::default()
    };
    let mut expected: Vec<String> = reference_rows(&partitions, &config, &analyzer)
        .unwrap()
        .iter()
        .map(|row| row.to_json_line())
        .collect();
    expected.sort();
    let written: Vec<String> = std::fs::read_to_string(&two)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(expected.len() > 1_000, "{} rows", expected.len());
    assert!(
        written == expected,
        "two processes differ from the reference"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A config reading five fresh per-kind topics named `{prefix}-{kind}`, chat and reactions in
/// `chat_format`.
fn per_kind_config(dir: &Path, prefix: &str, chat_format: &str) -> PathBuf {
    let mut text = format!("[kafka]\nbrokers = \"{BROKER}\"\n");
    for kind in ["chat", "reaction", "viewer", "transaction", "stream_meta"] {
        let topic = fresh_topic(&format!("{prefix}-{kind}"), 2);
        let format = if matches!(kind, "chat" | "reaction") {
            chat_format
        } else {
            "json"
        };
        text.push_str(&format!(
            "\n[[kafka.topics]]\nname = \"{topic}\"\nkind = \"{kind}\"\nformat = \"{format}\"\n"
        ));
    }
    let path = dir.join(format!("{prefix}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Generates the same events into the config's topics and replays them.
fn generate_and_replay(config: &Path, output: &Path) -> Vec<Value> {
    run_ok(
        bin()
            .args([
                "generate", "--events", "6000", "--seed", "3", "--rate", "200",
            ])
            .args(["--kafka", BROKER, "--config"])
            .arg(config),
    );
    run_ok(
        bin()
            .args(["replay", "--from", "earliest", "--workers", "2", "--config"])
            .arg(config)
            .arg("--output")
            .arg(output),
    );
    rows(output)
}

#[test]
fn per_kind_topics_in_json_and_bincode_give_the_same_results() {
    let dir = scratch("per-kind");
    let json = generate_and_replay(
        &per_kind_config(&dir, "kinds-json", "json"),
        &dir.join("json.ndjson"),
    );
    let bincode = generate_and_replay(
        &per_kind_config(&dir, "kinds-bin", "bincode"),
        &dir.join("bincode.ndjson"),
    );
    let (json_dead, json_rows): (Vec<_>, Vec<_>) =
        json.into_iter().partition(|r| r["table"] == "dead_letters");
    let (bincode_dead, bincode_rows): (Vec<_>, Vec<_>) = bincode
        .into_iter()
        .partition(|r| r["table"] == "dead_letters");
    assert_eq!(json_rows, bincode_rows);
    // Every kind arrived through its own topic.
    for table in [
        "window_emojis",
        "window_revenue",
        "window_metrics",
        "stream_totals",
    ] {
        assert!(
            json_rows.iter().any(|r| r["table"] == table),
            "no {table} rows"
        );
    }
    assert!(json_rows
        .iter()
        .any(|r| r["table"] == "window_metrics" && r["chat_messages"].as_u64() > Some(0)));
    // Malformed lines are dead letters either way (their errors name the format).
    assert!(!json_dead.is_empty());
    assert_eq!(json_dead.len(), bincode_dead.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn live_generation_paces_events_stamped_with_the_current_time() {
    let dir = scratch("live");
    let topic = fresh_topic("generate-live", 2);
    let before = crowdpulse_connectors::live_input::wall_clock_ms();
    let produced = run_ok(bin().args([
        "generate",
        "--kafka",
        BROKER,
        "--topic",
        &topic,
        "--rate",
        "300",
        "--duration",
        "1s",
    ]));
    let after = crowdpulse_connectors::live_input::wall_clock_ms();
    assert!(produced.contains("produced 300 events"), "{produced}");
    // Paced: 300 events at 300/s take about a second, not the milliseconds of a bulk run.
    assert!(after - before >= 900, "took {} ms", after - before);
    let output = dir.join("rows.ndjson");
    replay(&topic, &output, 1, ("earliest", "latest"));
    let starts: Vec<u64> = rows(&output)
        .iter()
        .filter_map(|r| r["window_start"].as_u64())
        .collect();
    assert!(!starts.is_empty());
    // Event times start now (windows of the last minute), not at the bulk default 2026-01-01.
    assert!(
        starts.iter().all(|s| *s + 70_000 >= before && *s <= after),
        "{starts:?} outside [{before}, {after}]"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A message dated far beyond its broker timestamp is a `future` dead letter in a replay, the
/// same for 1 and 2 workers, and the honest messages after it keep counting.
#[test]
fn a_far_future_message_is_a_future_dead_letter_in_every_replay() {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = scratch("future");
    let topic = fresh_topic("replay-future", 2);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .create()
        .unwrap();
    let now = crowdpulse_connectors::live_input::wall_clock_ms() as i64;
    let reaction = |ts: &str| {
        format!(r#"{{"type":"reaction","stream_id":"s","user_id":"u","emoji":"🦄","ts":{ts}}}"#)
    };
    let payloads = [
        reaction(&(now - 2_000).to_string()),
        reaction("\"9999-01-01T00:00:00Z\""),
        reaction(&(now - 1_000).to_string()),
    ];
    // The same three messages in each partition: one worker per partition with 2 workers.
    for partition in [0, 1] {
        for payload in &payloads {
            let record = BaseRecord::<(), str>::to(&topic)
                .partition(partition)
                .timestamp(now)
                .payload(payload.as_str());
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
    }
    producer.flush(std::time::Duration::from_secs(10)).unwrap();
    let outputs: Vec<Vec<Value>> = [1, 2]
        .iter()
        .map(|workers| {
            let out = dir.join(format!("future-{workers}.ndjson"));
            replay(&topic, &out, *workers, ("earliest", "latest"));
            rows(&out)
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    let dead: Vec<&Value> = outputs[0]
        .iter()
        .filter(|r| r["table"] == "dead_letters")
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (dead, partition) in dead.iter().zip([0, 1]) {
        assert_eq!(
            (
                dead["reason"].as_str(),
                dead["partition"].as_u64(),
                dead["offset"].as_u64()
            ),
            (Some("future"), Some(partition), Some(1))
        );
    }
    let counted: u64 = outputs[0]
        .iter()
        .filter(|r| r["table"] == "window_emojis" && r["window"] == "10s")
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 4, "the honest reactions count");
}

/// The streams of each partition of `topic` (4 partitions, read back to the end) that its
/// well-formed events name.
fn streams_by_partition(topic: &str) -> Vec<std::collections::BTreeSet<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..4 {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut streams = vec![std::collections::BTreeSet::new(); 4];
    let (mut ended, mut read) = (0, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ended < 4 && std::time::Instant::now() < deadline {
        match consumer.poll(std::time::Duration::from_millis(200)) {
            Some(Ok(message)) => {
                read += 1;
                let line: Value = serde_json::from_slice(message.payload().unwrap_or_default())
                    .unwrap_or(Value::Null);
                // The generator's malformed records (ts 0) are keyed apart from the stream
                // they name.
                let event = line["ts"].as_u64().is_some_and(|ts| ts > 0);
                if let (Some(stream), true) = (line["stream_id"].as_str(), event) {
                    streams[message.partition() as usize].insert(stream.to_owned());
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {}
        }
    }
    assert_eq!(
        read.to_string(),
        EVENTS,
        "every message of {topic} read back"
    );
    streams
}

/// `generate --kafka` keys each event by its stream (a stream lives in one partition);
/// `--no-key` lets the producer spread them, so every stream is in every partition, and a
/// replay of that topic reads every event.
#[test]
fn generate_without_keys_spreads_every_stream_over_the_partitions() {
    let keyed = fresh_topic("keyed", 4);
    run_ok(generate_args(&mut bin()).args(["--kafka", BROKER, "--topic", &keyed]));
    let by_partition = streams_by_partition(&keyed);
    let placements: usize = by_partition.iter().map(|s| s.len()).sum();
    assert_eq!(
        placements, 7,
        "each of 7 streams in one partition: {by_partition:?}"
    );

    let spread = fresh_topic("unkeyed", 4);
    run_ok(generate_args(&mut bin()).args(["--kafka", BROKER, "--topic", &spread, "--no-key"]));
    let by_partition = streams_by_partition(&spread);
    assert!(
        by_partition.iter().all(|p| p.len() == 7),
        "streams not spread over every partition: {by_partition:?}"
    );
    let dir = scratch("unkeyed");
    let summary = replay(&spread, &dir.join("rows.ndjson"), 2, ("earliest", "latest"));
    assert!(
        summary.contains(&format!("replayed {EVENTS} events")),
        "{summary}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
