//! `crowdpulse run` into a real PostgreSQL from a real broker (`scripts/postgres.sh`,
//! `scripts/kafka.sh`): a bounded backfill's tables equal `replay`'s NDJSON of the same topic
//! (compared in SQL, every table) for 1 and 2 workers; a live run killed with SIGKILL at several
//! points and restarted each time ends with the same tables as a replay, with no duplicated
//! dead letter.

#[path = "../connectors/tests/support/mod.rs"]
mod kafka_support;
#[path = "../runtime/tests/support/postgres.rs"]
mod postgres_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_support::{fresh_topic, BROKER};
use postgres_support::{fresh_config, Db};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("crowdpulse-pg-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    stderr
}

/// A topic holding `events` generated events.
fn topic_with(name: &str, events: u64) -> String {
    let topic = fresh_topic(name, 4);
    run_ok(bin().args([
        "generate",
        "--events",
        &events.to_string(),
        "--seed",
        "21",
        "--rate",
        "300",
        "--streams",
        "6",
        "--kafka",
        BROKER,
        "--topic",
        &topic,
    ]));
    topic
}

/// A crowdpulse command reading `topic` and writing to `schema`.
fn command(topic: &str, schema: &str) -> Command {
    let mut cmd = bin();
    cmd.env(
        "CROWDPULSE__KAFKA__TOPICS",
        format!("[{{name = \"{topic}\"}}]"),
    )
    .env("CROWDPULSE__KAFKA__BROKERS", BROKER)
    .env("CROWDPULSE__KAFKA__DEAD_LETTER_TOPIC", "")
    .env("CROWDPULSE__POSTGRES__URL", postgres_support::url())
    .env("CROWDPULSE__POSTGRES__SCHEMA", schema)
    .env("CROWDPULSE__POSTGRES__FLUSH_INTERVAL", "100ms")
    .env("CROWDPULSE__PIPELINE__IDLE_TIMEOUT", "500ms")
    .env("RUST_LOG", "warn");
    cmd
}

/// `replay`'s rows of the whole topic.
fn replay_lines(topic: &str, dir: &Path) -> Vec<String> {
    let output = dir.join("replay.ndjson");
    run_ok(
        command(topic, "unused")
            .args(["replay", "--from", "earliest", "--quiet", "--output"])
            .arg(&output),
    );
    std::fs::read_to_string(output)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_same(db: &Db, schema: &str, expected: &[String], what: &str) {
    let differences = db.differences(schema, expected);
    assert!(
        differences.is_empty(),
        "{what}: {} differences, e.g. {:#?}",
        differences.len(),
        &differences[..differences.len().min(6)]
    );
}

#[test]
fn a_backfill_into_postgres_equals_replay() {
    let dir = scratch("backfill");
    let topic = topic_with("pg-backfill", 20_000);
    let expected = replay_lines(&topic, &dir);
    assert!(expected
        .iter()
        .any(|l| l.contains("\"table\":\"dead_letters\"")));
    let db = Db::connect();
    for workers in ["1", "2"] {
        let schema = fresh_config(&format!("backfill{workers}")).schema;
        // NDJSON too: every sink gets every row, whichever comes first.
        let output = dir.join(format!("run-{workers}.ndjson"));
        let summary = run_ok(
            command(&topic, &schema)
                .args(["run", "--from", "earliest", "--until", "latest"])
                .args(["--workers", workers, "--output"])
                .arg(&output),
        );
        assert!(summary.contains("backfilled 20000 events"), "{summary}");
        assert_same(&db, &schema, &expected, &format!("{workers} workers"));
        let mut written: Vec<String> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        written.sort();
        assert!(
            written == expected,
            "{workers} workers: NDJSON differs from replay"
        );
        db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
    }
}

fn start_live(topic: &str, schema: &str) -> Child {
    command(topic, schema)
        .args([
            "run",
            "--from",
            "earliest",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run starts")
}

#[test]
fn a_live_run_killed_and_restarted_ends_with_the_tables_of_a_replay() {
    let dir = scratch("kill");
    let topic = topic_with("pg-kill", 150_000);
    // A live run never ends its input, so its stream totals stay live; the windows all become
    // final once the caught-up partitions go idle and wall-clock time passes them.
    let expected: Vec<String> = replay_lines(&topic, &dir)
        .into_iter()
        .map(|line| {
            if line.contains("\"table\":\"stream_totals\"") {
                line.replace("\"final\":true", "\"final\":false")
            } else {
                line
            }
        })
        .collect();
    let schema = fresh_config("kill").schema;
    let db = Db::connect();
    let written = format!("SELECT count(*) FROM \"{schema}\".window_metrics");
    // Killed before the schema exists, while migrating or starting, and mid-run at several
    // amounts of progress.
    for delay_ms in [50, 400, 900, 1_500, 2_500] {
        let mut child = start_live(&topic, &schema);
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let offsets = db.value(&format!(
            "SELECT CASE WHEN to_regclass('\"{schema}\".source_progress') IS NULL THEN 'none' \
             ELSE (xpath('/row/s/text()', query_to_xml('SELECT coalesce(sum(next_offset), 0) AS s \
             FROM \"{schema}\".source_progress', false, true, '')))[1]::text END"
        ));
        eprintln!("killed after {delay_ms} ms: offsets written {offsets}");
    }
    let progressed = db.column(&format!(
        "SELECT to_regclass('\"{schema}\".window_metrics') IS NOT NULL"
    ));
    assert_eq!(progressed, ["true"], "the runs got as far as the schema");
    let mut child = start_live(&topic, &schema);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut differences;
    loop {
        differences = db.differences(&schema, &expected);
        if differences.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        differences.is_empty(),
        "{} differences ({} window rows written), e.g. {:#?}",
        differences.len(),
        db.value(&written),
        &differences[..differences.len().min(6)]
    );
    db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}
