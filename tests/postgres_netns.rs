//! `crowdpulse run` on one "host" (a fresh network namespace) writing to PostgreSQL on another
//! (the root namespace, reached through a forwarder on its side of a veth pair), with a broker
//! of the test's own there too. When the link is cut (nothing is closed: a network partition, a
//! database host gone), the sink notices within seconds rather than after TCP's retransmission
//! timeout (about 15 minutes), and a run stopped meanwhile exits non-zero after its grace.
//! Needs root; skipped with a message saying so otherwise.

#[path = "../connectors/tests/support/mod.rs"]
mod kafka_support;
#[path = "../runtime/tests/support/postgres.rs"]
mod postgres_support;

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_support::{spawn_broker, tansu};
use postgres_support::{fresh_config, Db};
use support::netns::Namespace;
use support::proxy::Proxy;
use support::Killed;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
}

/// Waits up to `timeout` for `log` (a file) to hold `text`; how long it took.
fn logged_within(log: &std::path::Path, text: &str, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if std::fs::read_to_string(log).is_ok_and(|written| written.contains(text)) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_cut_link_to_postgres_is_noticed_and_a_stopped_run_still_exits() {
    let Some(namespace) = Namespace::create(0) else {
        return;
    };
    let broker_address = format!("{}:19092", namespace.root_address);
    let _broker = Killed(spawn_broker(&broker_address));
    let topic = "pg-cut";
    let created = Command::new(tansu())
        .args([
            "topic",
            "create",
            "--broker",
            &format!("tcp://{broker_address}"),
        ])
        .args(["--partitions", "2", topic])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let _producer = Killed(
        bin()
            .args(["generate", "--rate", "500", "--duration", "180s"])
            .args(["--seed", "4", "--streams", "4", "--kafka", &broker_address])
            .args(["--topic", topic])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let proxy = Proxy::start(
        &format!("{}:0", namespace.root_address),
        &postgres_support::url(),
    );
    let schema = fresh_config("pgcut").schema;
    let log = std::env::temp_dir().join(format!("crowdpulse-pgcut-{}.log", std::process::id()));
    let mut run = Command::new("ip");
    run.args(["netns", "exec", &namespace.name])
        .arg(env!("CARGO_BIN_EXE_crowdpulse"))
        .args(["run", "--bind", "127.0.0.1:0", "--brokers", &broker_address])
        .env(
            "CROWDPULSE__KAFKA__TOPICS",
            format!("[{{name = \"{topic}\"}}]"),
        )
        .env("CROWDPULSE__KAFKA__DEAD_LETTER_TOPIC", "")
        .env("CROWDPULSE__POSTGRES__URL", &proxy.url)
        .env("CROWDPULSE__POSTGRES__SCHEMA", &schema)
        .env("CROWDPULSE__POSTGRES__FLUSH_INTERVAL", "100ms")
        .env("CROWDPULSE__PIPELINE__IDLE_TIMEOUT", "500ms")
        .env("RUST_LOG", "warn,crowdpulse=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut run = Killed(run.spawn().expect("run starts"));
    let db = Db::connect();
    db.wait_for_rows(&schema);
    namespace.cut();
    let noticed = logged_within(&log, "postgres write failed", Duration::from_secs(60));
    let written = std::fs::read_to_string(&log).unwrap();
    let noticed = noticed.unwrap_or_else(|| panic!("the cut not noticed within 60 s: {written}"));
    eprintln!("the cut noticed {noticed:?} after it");
    let status = run
        .terminate_within(Duration::from_secs(60))
        .expect("the run exits within 60 s of SIGTERM");
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "exited {status}: {written}");
    assert!(written.contains("postgres still failing"), "{written}");
    proxy.cut();
    db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
    let _ = std::fs::remove_file(&log);
}
