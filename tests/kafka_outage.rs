//! Live results equal a replay however the broker behaves: a broker of the test's own (tansu on a
//! free port, `scripts/kafka.sh` installs it) is paused with SIGSTOP for longer than the allowed
//! lateness plus the out-of-orderness, once while `crowdpulse run` catches up on a backlog and
//! once after it caught up while a producer keeps producing. Partitions that are behind, or
//! whose broker does not answer, never go idle, so the outage makes no record late: the final
//! rows `run` writes equal `replay`'s; HTTP ingest answers 503 within its produce timeout while
//! the broker is paused and recovers after. Alone in its test binary: it pauses brokers for
//! seconds.

#[path = "../connectors/tests/support/mod.rs"]
mod kafka_support;

mod support;

use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use kafka_support::{spawn_broker, tansu};
use serde_json::Value;
use support::Demo;

/// A broker of this test's own, killed when dropped.
struct Broker {
    child: Child,
    address: String,
}

impl Broker {
    /// `crowdpulse run` with 2 workers from the earliest offsets of this broker, with `env`.
    fn run(&self, env: &[(&str, &str)]) -> (Demo, Receiver<String>) {
        Demo::run(
            &[
                "--from",
                "earliest",
                "--brokers",
                &self.address,
                "--workers",
                "2",
            ],
            env,
        )
    }

    /// A broker with a 4-partition topic `topic`.
    fn with_topic(topic: &str) -> Self {
        let broker = Self::start();
        let created = Command::new(tansu())
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://{}", broker.address),
            ])
            .args(["--partitions", "4", topic])
            .status()
            .unwrap();
        assert!(created.success());
        broker
    }

    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let child = spawn_broker(&address);
        Self { child, address }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Short lateness so the outage is longer than it; the same for run and replay.
const PIPELINE: [(&str, &str); 3] = [
    ("CROWDPULSE__PIPELINE__ALLOWED_LATENESS", "2s"),
    ("CROWDPULSE__PIPELINE__MAX_OUT_OF_ORDERNESS", "1s"),
    ("CROWDPULSE__PIPELINE__IDLE_TIMEOUT", "500ms"),
];

#[test]
fn a_broker_paused_during_catch_up_makes_nothing_late() {
    let topic = "outage";
    let broker = Broker::with_topic(topic);
    let produced = Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
        .args([
            "generate", "--events", "300000", "--seed", "3", "--rate", "1000",
        ])
        .args([
            "--streams",
            "10",
            "--kafka",
            &broker.address,
            "--topic",
            topic,
        ])
        .output()
        .unwrap();
    assert!(produced.status.success());
    let topics = format!("[{{name = \"{topic}\"}}]");
    let mut env: Vec<(&str, &str)> = PIPELINE.to_vec();
    env.push(("CROWDPULSE__KAFKA__TOPICS", &topics));
    env.push(("CROWDPULSE__KAFKA__DEAD_LETTER_TOPIC", ""));

    let expected = replay_rows(&broker, &env);

    let (run, rows) = broker.run(&env);
    // Paused while catching up: some records read, far from all.
    let read = || support::offsets_read(&run.address);
    let started = Instant::now();
    while read() < 10_000 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run does not read"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    broker.signal("-STOP");
    let at_stop = read();
    assert!(
        at_stop < 250_000,
        "caught up already ({at_stop}): nothing was tested"
    );
    // Longer than the lateness plus the out-of-orderness, and than the idle timeout.
    std::thread::sleep(Duration::from_secs(6));
    broker.signal("-CONT");
    let got = run_rows(run, rows, expected.len(), Duration::from_secs(120));
    assert_same_rows(&got, &expected);
    let parsed: Vec<Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(parsed.iter().all(|r| r["final"] == true));
}

/// `replay`'s final rows of the whole topic, but the stream totals (a live run never ends its
/// input, so its totals stay live and are not printed), sorted.
fn replay_rows(broker: &Broker, env: &[(&str, &str)]) -> Vec<String> {
    let replayed = Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
        .args([
            "replay",
            "--from",
            "earliest",
            "--quiet",
            "--brokers",
            &broker.address,
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(replayed.status.success());
    let mut rows: Vec<String> = String::from_utf8(replayed.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"table\":\"stream_totals\""))
        .map(str::to_owned)
        .collect();
    rows.sort();
    rows
}

#[test]
fn a_broker_paused_after_catch_up_while_producers_wait_makes_nothing_late() {
    let topic = "paused-live";
    let broker = Broker::with_topic(topic);
    let topics = format!("[{{name = \"{topic}\"}}]");
    let mut env: Vec<(&str, &str)> = PIPELINE.to_vec();
    env.push(("CROWDPULSE__KAFKA__TOPICS", &topics));
    env.push(("CROWDPULSE__KAFKA__DEAD_LETTER_TOPIC", ""));
    // Lag lookups every 250 ms: a silent broker is noticed within about 1.75 s.
    env.push(("CROWDPULSE__KAFKA__PROGRESS_INTERVAL", "250ms"));
    env.push(("CROWDPULSE__PIPELINE__ALLOWED_LATENESS", "4s"));
    // 10 s windows only: the last ones are final seconds after the producer stops (a live run
    // makes a window final when wall-clock time passes it, a replay at the end of its input).
    env.push(("CROWDPULSE__PIPELINE__WINDOWS", "[{size = \"10s\"}]"));
    let (run, rows) = broker.run(&env);
    // 8 reactions per second for 14 s, stamped with the time they are made; the client queues
    // what it cannot deliver while the broker is paused, as a real producer does. Sparse, so
    // that every partition has been read to its end when the broker stops answering.
    let address = broker.address.clone();
    let producer = std::thread::spawn(move || {
        use rdkafka::config::ClientConfig;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &address)
            .set("message.timeout.ms", "60000")
            .create()
            .unwrap();
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < Duration::from_secs(14) {
            let now = crowdpulse_connectors::live_input::wall_clock_ms();
            let payload = format!(
                r#"{{"type":"reaction","stream_id":"s{}","user_id":"u{sent}","emoji":"🔥","ts":{now}}}"#,
                sent % 6
            );
            let key = format!("s{}", sent % 6);
            let record = BaseRecord::to("paused-live").key(&key).payload(&payload);
            producer.send(record).map_err(|(e, _)| e).unwrap();
            producer.poll(Duration::ZERO);
            sent += 1;
            std::thread::sleep(Duration::from_millis(125));
        }
        producer.flush(Duration::from_secs(60)).unwrap();
        sent
    });
    // Caught up by now (the run follows the producer), then six seconds without a broker.
    std::thread::sleep(Duration::from_secs(4));
    broker.signal("-STOP");
    std::thread::sleep(Duration::from_secs(6));
    broker.signal("-CONT");
    let sent = producer.join().unwrap();
    assert!(sent > 100, "{sent} sent");
    let expected = replay_rows(&broker, &env);
    let got = run_rows(run, rows, expected.len(), Duration::from_secs(60));
    assert!(got.len() > 20, "{} rows", got.len());
    assert_same_rows(&got, &expected);
}

/// The rows `run` prints until `wanted` came or `wait` passed, sorted; stops the run.
fn run_rows(run: Demo, rows: Receiver<String>, wanted: usize, wait: Duration) -> Vec<String> {
    let mut got: Vec<String> = Vec::new();
    let deadline = Instant::now() + wait;
    while got.len() < wanted && Instant::now() < deadline {
        if let Ok(line) = rows.recv_timeout(Duration::from_millis(200)) {
            got.push(line);
        }
    }
    drop(run);
    got.sort();
    got
}

/// The live run's final rows equal the replay's, late dead letters first (the generator makes a
/// few records late on purpose; an outage must add none).
fn assert_same_rows(got: &[String], expected: &[String]) {
    let late = |rows: &[String]| {
        rows.iter()
            .filter(|l| l.contains("\"reason\":\"late\""))
            .count()
    };
    assert_eq!(late(got), late(expected), "the outage made records late");
    if got != expected {
        let missing: Vec<_> = expected
            .iter()
            .filter(|l| !got.contains(l))
            .take(3)
            .collect();
        let extra: Vec<_> = got
            .iter()
            .filter(|l| !expected.contains(l))
            .take(3)
            .collect();
        panic!(
            "{} rows from run, {} from replay\nmissing: {missing:#?}\nextra: {extra:#?}",
            got.len(),
            expected.len()
        );
    }
}

/// HTTP ingest with the broker down answers 503 within `kafka.produce_timeout`, not after
/// librdkafka's default 5 minutes of retrying, and works again once the broker is back.
#[test]
fn http_ingest_answers_503_within_the_produce_timeout_while_the_broker_is_paused() {
    let topic = "ingest-outage";
    let broker = Broker::with_topic(topic);
    let topics = format!("[{{name = \"{topic}\"}}]");
    let mut env: Vec<(&str, &str)> = PIPELINE.to_vec();
    env.push(("CROWDPULSE__KAFKA__TOPICS", &topics));
    env.push(("CROWDPULSE__KAFKA__DEAD_LETTER_TOPIC", ""));
    env.push(("CROWDPULSE__KAFKA__PRODUCE_TIMEOUT", "1s"));
    let (run, _rows) = broker.run(&env);
    let post = || {
        support::http(
            &run.address,
            "POST",
            "/v1/events",
            Some((
                "application/x-ndjson",
                br#"{"type":"reaction","stream_id":"s","user_id":"u","emoji":"x"}"#,
            )),
        )
    };
    // The producer's first message waits for metadata and its producer id: on a loaded machine
    // that can take longer than the 1 s timeout, so the first 202 is awaited.
    support::eventually("ingest to work", || post().0 == 202);
    broker.signal("-STOP");
    let began = Instant::now();
    let (status, answer) = post();
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("kafka_unavailable"), "{answer}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    broker.signal("-CONT");
    // An idempotent producer whose messages timed out may be fenced by the broker: without a
    // new producer, ingest stayed at 503 after the broker was back.
    support::eventually("ingest to work again", || post().0 == 202);
}
