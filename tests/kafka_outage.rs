//! Live results equal a replay however the broker behaves: a broker of the test's own (tansu on a
//! free port, `scripts/kafka.sh` installs it) is paused with SIGSTOP for longer than the allowed
//! lateness plus the out-of-orderness while `crowdpulse run` catches up on a backlog. Partitions
//! that are behind never go idle, so the outage makes no record late: the final rows `run`
//! writes equal `replay`'s. Alone in its test binary: it pauses a broker for seconds.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Demo;

fn tansu() -> String {
    std::env::var("HOME")
        .map(|home| format!("{home}/.cargo/bin/tansu"))
        .ok()
        .filter(|path| std::path::Path::new(path).exists())
        .unwrap_or_else(|| "tansu".into())
}

/// A broker of this test's own, killed when dropped.
struct Broker {
    child: Child,
    address: String,
}

impl Broker {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let url = format!("tcp://{address}");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is installed (bash scripts/kafka.sh)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
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
    let broker = Broker::start();
    let topic = "outage";
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
    // A live run never ends its input: its stream totals stay live and are not printed.
    let mut expected: Vec<String> = String::from_utf8(replayed.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"table\":\"stream_totals\""))
        .map(str::to_owned)
        .collect();
    expected.sort();
    let late_in_replay = expected
        .iter()
        .filter(|l| l.contains("\"reason\":\"late\""))
        .count();

    let (run, rows) = Demo::run(
        &[
            "--from",
            "earliest",
            "--brokers",
            &broker.address,
            "--workers",
            "2",
        ],
        &env,
    );
    // Paused while catching up: some records read, far from all.
    let read = || {
        let (_, text) = support::http(&run.address, "GET", "/metrics", None);
        text.lines()
            .filter(|l| l.starts_with("crowdpulse_partition_next_offset{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
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
    let mut got: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < expected.len() && Instant::now() < deadline {
        if let Ok(line) = rows.recv_timeout(Duration::from_millis(200)) {
            got.push(line);
        }
    }
    drop(run);
    got.sort();
    let late = got
        .iter()
        .filter(|l| l.contains("\"reason\":\"late\""))
        .count();
    assert_eq!(late, late_in_replay, "the outage made records late");
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
    let parsed: Vec<Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(parsed.iter().all(|r| r["final"] == true));
}
