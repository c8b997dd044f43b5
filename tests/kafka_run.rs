//! `crowdpulse run` against the real broker (`scripts/kafka.sh`): HTTP ingest is produced to
//! Kafka and comes back as results; empty (idle) partitions do not stall the others; read
//! offsets are mirrored to the consumer group and lag is exported; malformed and late records
//! reach the dead-letter topic with their origin in headers.

#[path = "../connectors/tests/support/mod.rs"]
mod kafka_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crowdpulse_connectors::live_input::wall_clock_ms;
use kafka_support::{fresh_topic, BROKER};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use support::{eventually, get_json, http, Demo};

/// A fresh input topic of `partitions`, a fresh dead-letter topic and a consumer group for a run.
fn run_topics(name: &str, partitions: usize) -> (String, String, String) {
    let topic = fresh_topic(name, partitions);
    let dead = fresh_topic(&format!("{name}-dead"), 1);
    let group = format!("{topic}-group");
    (topic, dead, group)
}

/// Environment for a run reading the mixed `topic`, dead letters to `dead`, with 1 s windows,
/// 1 s idleness and a 1 s lateness allowance so the test is quick.
fn run_env<'a>(topic: &'a str, dead: &'a str, group: &'a str) -> Vec<(&'a str, String)> {
    vec![
        ("CROWDPULSE__KAFKA__BROKERS", BROKER.to_owned()),
        (
            "CROWDPULSE__KAFKA__TOPICS",
            format!("[{{name = \"{topic}\"}}]"),
        ),
        ("CROWDPULSE__KAFKA__DEAD_LETTER_TOPIC", dead.to_owned()),
        ("CROWDPULSE__KAFKA__GROUP_ID", group.to_owned()),
        ("CROWDPULSE__KAFKA__PROGRESS_INTERVAL", "200ms".to_owned()),
        (
            "CROWDPULSE__PIPELINE__WINDOWS",
            "[{size = \"1s\"}]".to_owned(),
        ),
        ("CROWDPULSE__PIPELINE__MOMENTS__WINDOW", "1s".to_owned()),
        ("CROWDPULSE__PIPELINE__TICK", "10ms".to_owned()),
        (
            "CROWDPULSE__PIPELINE__MAX_OUT_OF_ORDERNESS",
            "100ms".to_owned(),
        ),
        ("CROWDPULSE__PIPELINE__ALLOWED_LATENESS", "1s".to_owned()),
        ("CROWDPULSE__PIPELINE__IDLE_TIMEOUT", "1s".to_owned()),
    ]
}

fn start_run(
    topic: &str,
    dead: &str,
    group: &str,
    extra: &[(&str, &str)],
) -> (Demo, Receiver<String>) {
    let env = run_env(topic, dead, group);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(extra);
    Demo::run(&["--from", "earliest", "--workers", "2"], &env)
}

/// Waits up to `within` for a stdout row satisfying `wanted`.
fn await_row(rows: &Receiver<String>, within: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(line) = rows.recv_timeout(left) else {
            break;
        };
        let row: Value = serde_json::from_str(&line).expect("stdout carries NDJSON rows");
        if wanted(&row) {
            return row;
        }
    }
    panic!("no matching row on stdout within {within:?}");
}

fn post(address: &str, body: &str) -> (u16, Value) {
    let (status, answer) = http(
        address,
        "POST",
        "/v1/events",
        Some(("application/x-ndjson", body.as_bytes())),
    );
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

#[test]
fn http_ingest_goes_through_kafka_and_idle_partitions_do_not_stall() {
    let (topic, dead, group) = run_topics("run-ingest", 4);
    let (run, rows) = start_run(&topic, &dead, &group, &[]);
    let address = run.address.clone();

    // One stream, so one partition gets everything and the other three stay empty. Without
    // idleness they would hold the watermark at zero and no window would ever become final.
    let started = Instant::now();
    let mut posted = 0;
    let mut final_row = None;
    while started.elapsed() < Duration::from_secs(20) && final_row.is_none() {
        let body = "{\"type\":\"reaction\",\"stream_id\":\"kafka-e2e\",\"user_id\":\"u1\",\"emoji\":\"🔥\"}\n"
            .repeat(2);
        let (status, answer) = post(&address, &body);
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], 2, "{answer}");
        posted += 2;
        // Posting goes on while waiting: the busy partition's watermark keeps moving.
        final_row = rows
            .recv_timeout(Duration::from_millis(100))
            .ok()
            .map(|line| serde_json::from_str::<Value>(&line).unwrap())
            .filter(|row| {
                row["table"] == "window_emojis"
                    && row["stream_id"] == "kafka-e2e"
                    && row["final"] == true
            });
    }
    let row = final_row.expect("a final window while three partitions stay empty");
    assert_eq!(row["emoji"], "🔥");
    assert!(row["count"].as_u64().unwrap() >= 1, "{row}");

    // The same events, through Kafka, in the live API.
    eventually("the posted reactions in the REST totals", || {
        let (status, body) = get_json(&address, "/v1/streams/kafka-e2e/emojis/top");
        status == 200 && body.to_string().contains("🔥")
    });

    // Reactions produced to Kafka by another producer (not posted to this process) are the
    // last reactions too: the latest ten, newest first, per stream and overall.
    // Dated 5 s ahead: with every partition idle the frontier follows the wall clock, and a
    // record read more than the 1 s allowance after its time would be late (a loaded machine
    // took that long).
    let producer = producer();
    let ahead = wall_clock_ms() + 5_000;
    for i in 0..12u64 {
        let payload = format!(
            "{{\"type\":\"reaction\",\"stream_id\":\"kafka-e2e\",\"user_id\":\"k{i}\",\"emoji\":\"👏\",\"ts\":{}}}",
            ahead + i
        );
        let record = BaseRecord::<(), str>::to(&topic)
            .partition(3)
            .payload(&payload);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let newest: Vec<String> = (2..12).rev().map(|i| format!("k{i}")).collect();
    let users = |reactions: &Value| -> Vec<String> {
        reactions
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|r| r["user_id"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    eventually("the produced reactions among the last reactions", || {
        let (_, stream) = get_json(&address, "/v1/streams/kafka-e2e");
        users(&stream["recent_reactions"]) == newest
    });
    let (_, statistics) = get_json(&address, "/v1/statistics");
    assert_eq!(users(&statistics["last_reactions"]), newest, "{statistics}");

    // Offsets mirrored to the group, lag and watermarks exported.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut asked = TopicPartitionList::new();
    for partition in 0..4 {
        asked.add_partition(&topic, partition);
    }
    eventually("offsets committed to the group", || {
        let committed = consumer
            .committed_offsets(asked.clone(), Duration::from_secs(5))
            .unwrap();
        let total: i64 = committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .sum();
        total > 0 && total <= posted + 12
    });
    let (status, ready) = get_json(&address, "/ready");
    assert_eq!(ready["kafka_reachable"], true, "{ready}");
    assert_eq!(status, 200, "{ready}");
    let (status, metrics) = http(&address, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let lag_line = format!("crowdpulse_kafka_partition_lag{{topic=\"{topic}\",partition=");
    assert!(metrics.contains(&lag_line), "{metrics}");
    let watermark_line =
        format!("crowdpulse_partition_watermark_timestamp_seconds{{source=\"{topic}\",partition=");
    assert!(metrics.contains(&watermark_line), "{metrics}");
    run.stop();
}

/// Every message of `topic` with its headers, by offset order per partition.
/// A message's payload and headers.
type Produced = (Vec<u8>, BTreeMap<String, String>);

fn read_all(topic: &str, at_least: usize) -> Vec<Produced> {
    read_until(topic, |messages| messages.len() >= at_least)
}

/// The topic's messages from its start, read until `enough` holds of them (or for 30 s).
fn read_until(topic: &str, enough: impl Fn(&[Produced]) -> bool) -> Vec<Produced> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !enough(&messages) && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_owned(), value.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            messages.push((message.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    messages
}

fn producer() -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        .create()
        .unwrap()
}

#[test]
fn malformed_and_late_records_reach_the_dead_letter_topic_with_their_origin() {
    let (topic, dead, group) = run_topics("run-dlq", 2);
    let producer = producer();
    let now = wall_clock_ms();
    let event = |ts: u64| {
        format!("{{\"type\":\"chat\",\"stream_id\":\"s\",\"user_id\":\"u\",\"text\":\"hi\",\"ts\":{ts}}}")
    };
    // Partition 0: a valid event, then one ten minutes older (late: the allowance is 60 s
    // here), then bytes that are not JSON.
    let (fresh, old) = (event(now), event(now - 600_000));
    for payload in [fresh.as_bytes(), old.as_bytes(), b"\xff{not json"] {
        let record = BaseRecord::<(), [u8]>::to(&topic)
            .partition(0)
            .payload(payload);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    // A producer that may hold 2 unconfirmed messages (a request as large as the queue: a
    // larger one, which could never fit, is refused at load), each held for 2 s before it goes.
    // The posted events wait out the linger before the run reads them, stamped when they
    // arrived: with the 1 s allowance and every partition idle they could be late.
    let tiny_queue = [
        ("CROWDPULSE__KAFKA__PRODUCER_QUEUE_MESSAGES", "2"),
        ("CROWDPULSE__API__LIMITS__MAX_EVENTS_PER_REQUEST", "2"),
        ("CROWDPULSE__KAFKA__INGEST_LINGER", "2s"),
        ("CROWDPULSE__PIPELINE__ALLOWED_LATENESS", "60s"),
    ];
    let (run, rows) = start_run(&topic, &dead, &group, &tiny_queue);
    // While one request's events wait in the producer queue, the next finds no room: 503 busy
    // (Retry-After, as for the in-process input).
    let two =
        "{\"type\":\"chat\",\"stream_id\":\"s\",\"user_id\":\"u\",\"text\":\"x\"}\n".repeat(2);
    let first = {
        let (address, two) = (run.address.clone(), two.clone());
        std::thread::spawn(move || post(&address, &two))
    };
    std::thread::sleep(Duration::from_millis(500));
    let (status, answer) = post(&run.address, &two);
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("busy")),
        "{answer}"
    );
    let (status, answer) = first.join().unwrap();
    assert_eq!(status, 202, "{answer}");
    // Records refused at HTTP ingest go to the dead-letter topic too, with the dataflow's
    // reasons (a line that is no JSON object is `decode`: it was `invalid` like the rest).
    let refused = "{\"type\":\"chat\",\"stream_id\":\"\"}\nnot json\n";
    let (status, answer) = post(&run.address, refused);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["rejected"][1]["index"], 1, "{answer}");
    // The source's dead letters are also rows on stdout.
    let row = await_row(&rows, Duration::from_secs(20), |row| {
        row["table"] == "dead_letters" && row["reason"] == "decode"
    });
    assert_eq!(row["source"], topic.as_str());

    let mut messages = read_all(&dead, 4);
    messages.sort_by_key(|(_, h)| (h.get("reason").cloned(), h.get("source_topic").cloned()));
    let summary: Vec<(String, String, String, String)> = messages
        .iter()
        .map(|(_, h)| {
            let get = |key: &str| h.get(key).cloned().unwrap_or_default();
            (
                get("reason"),
                get("source_topic"),
                get("source_partition"),
                get("source_offset"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("decode".into(), "http".into(), "0".into(), "1".into()),
            ("decode".into(), topic.clone(), "0".into(), "2".into()),
            ("invalid".into(), "http".into(), "0".into(), "0".into()),
            ("late".into(), topic.clone(), "0".into(), "1".into()),
        ]
    );
    let (_, metrics) = http(&run.address, "GET", "/metrics", None);
    assert!(
        metrics.contains("crowdpulse_dead_letter_topic_messages_total{outcome=\"delivered\"} 4"),
        "{metrics}"
    );
    // Raw bytes, as they were produced (not valid UTF-8 here), and a readable cause.
    assert_eq!(messages[1].0, b"\xff{not json");
    assert_eq!(messages[3].0, old.as_bytes());
    assert!(
        messages[3].1["error"].contains("watermark"),
        "{:?}",
        messages[3].1
    );
    run.stop();
}

/// SIGTERM, as systemd and Kubernetes stop a service, takes the graceful path: dead letters the
/// run has made but its producer has not yet had confirmed still reach the dead-letter topic,
/// every one of them, before the run exits 0.
#[test]
fn dead_letters_in_flight_survive_sigterm() {
    let (topic, dead, group) = run_topics("run-term", 1);
    let producer = producer();
    const BAD: usize = 2_000;
    for i in 0..BAD {
        let payload = format!("not json {i}");
        let record = BaseRecord::<(), _>::to(&topic)
            .partition(0)
            .payload(&payload);
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let (run, rows) = start_run(&topic, &dead, &group, &[]);
    await_row(&rows, Duration::from_secs(20), |row| {
        row["table"] == "dead_letters"
    });
    run.stop_with("TERM");
    // What the run wrote out as dead letters, up to its exit (the rows end with its stdout)...
    let written: BTreeSet<u64> = rows
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .filter(|row| row["table"] == "dead_letters")
        .map(|row| row["offset"].as_u64().unwrap())
        .collect();
    // ...is all in the topic (the records it had not read yet are the next run's).
    let offsets = |messages: &[Produced]| -> BTreeSet<u64> {
        messages
            .iter()
            .map(|(_, headers)| headers["source_offset"].parse().unwrap())
            .collect()
    };
    let delivered = offsets(&read_until(&dead, |messages| {
        offsets(messages).is_superset(&written)
    }));
    assert!(!written.is_empty());
    let missing: Vec<_> = written.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "{} of {} dead letters lost, e.g. {:?}",
        missing.len(),
        written.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Where final rows cannot be written (stdout closed by its reader), `run` fails instead of
/// dropping them: a backfill exits non-zero, a live run stops promptly and exits non-zero.
#[test]
fn rows_that_cannot_be_written_stop_the_run() {
    let topic = fresh_topic("run-broken-stdout", 2);
    let generated = std::process::Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
        .args([
            "generate", "--events", "2000", "--seed", "3", "--kafka", BROKER,
        ])
        .args(["--topic", &topic])
        .output()
        .unwrap();
    assert!(generated.status.success());
    let env = run_env(&topic, "", "broken-stdout");
    for bounded in [true, false] {
        let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_crowdpulse"));
        run.args(["run", "--from", "earliest", "--bind", "127.0.0.1:0"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if bounded {
            run.args(["--until", "latest"]);
        }
        let mut child = run.spawn().unwrap();
        drop(child.stdout.take()); // the reader goes away
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("bounded {bounded}: still running 30 s after its output broke");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(
            !status.success(),
            "bounded {bounded}: exited with {status}: {stderr}"
        );
        assert!(
            stderr.contains("final rows output"),
            "bounded {bounded}: {stderr}"
        );
    }
}

/// A record Kafka can never take (here: larger than the producer's `message.max.bytes`, with field
/// limits raised to let it through validation) is refused in the answer, by index, while the rest
/// of the request is produced: it used to fail the whole request with 503, so clients retried
/// forever and duplicated the records before it.
#[test]
fn a_record_kafka_cannot_take_is_refused_alone() {
    let (topic, dead, group) = run_topics("run-too-large", 1);
    let (run, _rows) = start_run(
        &topic,
        &dead,
        &group,
        &[
            ("CROWDPULSE__PIPELINE__LIMITS__TEXT_BYTES", "4000000"),
            ("CROWDPULSE__API__MAX_BODY_BYTES", "4000000"),
        ],
    );
    let huge = format!(
        r#"{{"type":"chat","stream_id":"big","user_id":"u","text":"{}"}}"#,
        "x".repeat(1_100_000)
    );
    let small = r#"{"type":"reaction","stream_id":"big","user_id":"u","emoji":"x"}"#;
    let (status, answer) = post(&run.address, &format!("{small}\n{huge}\n{small}\n"));
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 1, "{answer}");
    assert!(
        answer["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("kafka"),
        "{answer}"
    );
}
