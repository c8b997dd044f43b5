//! PostgreSQL stopped (`pg_ctlcluster ... stop`) for several seconds while `crowdpulse run`
//! catches up on a large topic: reading pauses within `postgres.max_lead` of what was committed,
//! memory stays bounded, `/ready` and `/metrics` say so, and once the database is back the tables
//! equal a replay. Alone in its test binary, since it stops the server every test uses.

#[path = "../connectors/tests/support/mod.rs"]
mod kafka_support;
#[path = "../runtime/tests/support/postgres.rs"]
mod postgres_support;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use kafka_support::{fresh_topic, BROKER};
use postgres_support::{assert_no_differences, fresh_config, Db};
use support::{get_json, http, Demo};

/// The local cluster's version, when this process may stop and start it.
fn cluster_version() -> Option<String> {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max()?;
    let can = Command::new("pg_ctlcluster")
        .args([&version, "main", "status"])
        .output()
        .is_ok_and(|out| out.status.success());
    can.then_some(version)
}

fn pg_ctl(version: &str, action: &str) {
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, "main", action])
        .status()
        .or_else(|_| {
            Command::new("pg_ctlcluster")
                .args([version, "main", action])
                .status()
        })
        .unwrap();
    assert!(status.success(), "pg_ctlcluster {action}");
}

/// Starts the database again however the test ends.
struct Restart(String);

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.0, "main", "start"])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && !Command::new("pg_isready")
                .args(["-h", "127.0.0.1", "-q"])
                .status()
                .is_ok_and(|s| s.success())
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_database_outage_pauses_reading_and_loses_nothing() {
    let Some(version) = cluster_version() else {
        eprintln!("skipped: this process cannot stop and start the local PostgreSQL cluster");
        return;
    };
    let topic = fresh_topic("pg-outage", 4);
    let events = 300_000;
    let produced = Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
        .args([
            "generate",
            "--events",
            &events.to_string(),
            "--seed",
            "5",
            "--rate",
            "200",
        ])
        .args(["--streams", "8", "--kafka", BROKER, "--topic", &topic])
        .output()
        .unwrap();
    assert!(produced.status.success());
    let dir = std::env::temp_dir().join(format!("crowdpulse-outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let topics = format!("[{{name = \"{topic}\"}}]");
    let replayed = Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
        .args([
            "replay",
            "--from",
            "earliest",
            "--quiet",
            "--brokers",
            BROKER,
            "--output",
        ])
        .arg(dir.join("replay.ndjson"))
        .env("CROWDPULSE__KAFKA__TOPICS", &topics)
        .output()
        .unwrap();
    assert!(replayed.status.success());
    // A live run never ends its input, so its stream totals stay live.
    let expected: Vec<String> = std::fs::read_to_string(dir.join("replay.ndjson"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.contains("\"table\":\"stream_totals\"") {
                l.replace("\"final\":true", "\"final\":false")
            } else {
                l.to_owned()
            }
        })
        .collect();
    let schema = fresh_config("outage").schema;
    let url = postgres_support::url();
    let (run, _rows) = Demo::run(
        &["--from", "earliest", "--brokers", BROKER, "--workers", "2"],
        &[
            ("CROWDPULSE__KAFKA__TOPICS", &topics),
            ("CROWDPULSE__KAFKA__DEAD_LETTER_TOPIC", ""),
            ("CROWDPULSE__POSTGRES__URL", &url),
            ("CROWDPULSE__POSTGRES__SCHEMA", &schema),
            ("CROWDPULSE__POSTGRES__FLUSH_INTERVAL", "100ms"),
            // 60 s of event time at 200 events/s: at most ~12,000 records beyond the commit.
            ("CROWDPULSE__POSTGRES__MAX_LEAD", "60s"),
            ("CROWDPULSE__PIPELINE__IDLE_TIMEOUT", "500ms"),
            // The events are dated last January and the idle live frontier follows the wall
            // clock: the chat history must outlive that to equal the replay's rows.
            ("CROWDPULSE__POSTGRES__CHAT_RETENTION", "36500d"),
        ],
    );
    let address = run.address.clone();
    let started = Instant::now();
    while support::offsets_read(&address) < 20_000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run does not read"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let restart = Restart(version.clone());
    pg_ctl(&version, "stop");
    let rss_at_stop = rss_kib(run.pid());
    std::thread::sleep(Duration::from_millis(1_500));
    let read_early = support::offsets_read(&address);
    let mut rss_peak = rss_at_stop;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(5) {
        rss_peak = rss_peak.max(rss_kib(run.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let read_late = support::offsets_read(&address);
    let (ready_status, ready) = get_json(&address, "/ready");
    let (_, metrics) = http(&address, "GET", "/metrics", None);
    drop(restart);
    eprintln!(
        "outage: read {read_early} -> {read_late} of {events}; RSS {} -> {} MiB",
        rss_at_stop / 1024,
        rss_peak / 1024
    );
    assert!(
        read_late < events,
        "reading went on to the end during the outage"
    );
    assert!(
        read_late - read_early < 1_000,
        "reading did not pause: {read_early} -> {read_late}"
    );
    assert!(
        rss_peak < rss_at_stop + 100 * 1024,
        "memory grew from {rss_at_stop} to {rss_peak} KiB"
    );
    assert_eq!(ready_status, 503, "{ready}");
    assert_eq!(ready["postgres_reachable"], false, "{ready}");
    assert!(metrics.contains("crowdpulse_postgres_up 0"), "{metrics}");
    let db = Db::connect();
    let differences = db.differences_within(&schema, &expected, Duration::from_secs(120));
    drop(run);
    assert_no_differences(&differences, "tables after the outage");
    db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}
