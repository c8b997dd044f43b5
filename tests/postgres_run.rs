//! `crowdpulse run` into a real PostgreSQL from a real broker (`scripts/postgres.sh`,
//! `scripts/kafka.sh`): a bounded backfill's tables equal `replay`'s NDJSON of the same topic
//! (compared in SQL, every table) for 1 and 2 workers; a live run fed at a steady rate, killed
//! with SIGKILL at six points (before its first checkpoint, inside a flush, inside a checkpoint
//! write, mid-run, after the input ended) and restarted each time without `--from`, resumes
//! from its latest checkpoint (re-reading about one checkpoint interval, asserted on the
//! offsets read) and ends with the same tables as a replay, with no duplicated dead letter.
//! Two processes of one worker backfill the tables of a replay; when one of a live pair is
//! killed the other stops with a non-zero exit naming it, and restarting both resumes from
//! their common checkpoint to the tables of a replay.

#[path = "../connectors/tests/support/mod.rs"]
mod kafka_support;
#[path = "../runtime/tests/support/postgres.rs"]
mod postgres_support;

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_support::{fresh_topic, BROKER};
use postgres_support::{assert_no_differences, fresh_config, Db};
use support::proxy::Proxy;
use support::{cluster_env, offsets_read, spawn_cluster, wait_cluster, Demo, Killed};

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

/// `generate` producing `rate` events a wall-clock second for `duration` into `topic`, event
/// times from now.
fn producer(topic: &str, rate: u64, duration: &str, seed: &str) -> Child {
    bin()
        .args([
            "generate",
            "--rate",
            &rate.to_string(),
            "--duration",
            duration,
        ])
        .args(["--seed", seed, "--streams", "6", "--kafka", BROKER])
        .args(["--topic", topic])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// The environment of a crowdpulse command reading `topic` and writing to `schema`.
fn environment(topic: &str, schema: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "CROWDPULSE__KAFKA__TOPICS",
            format!("[{{name = \"{topic}\"}}]"),
        ),
        ("CROWDPULSE__KAFKA__BROKERS", BROKER.to_owned()),
        ("CROWDPULSE__KAFKA__DEAD_LETTER_TOPIC", String::new()),
        ("CROWDPULSE__POSTGRES__URL", postgres_support::url()),
        ("CROWDPULSE__POSTGRES__SCHEMA", schema.to_owned()),
        ("CROWDPULSE__POSTGRES__FLUSH_INTERVAL", "100ms".into()),
        ("CROWDPULSE__POSTGRES__CHECKPOINT_INTERVAL", "1s".into()),
        // The events are dated last January and an idle live frontier follows the wall clock:
        // the chat history must outlive that to equal the replay's rows.
        ("CROWDPULSE__POSTGRES__CHAT_RETENTION", "36500d".into()),
        ("CROWDPULSE__PIPELINE__IDLE_TIMEOUT", "500ms".into()),
        // Windows of a live run become final sooner.
        ("CROWDPULSE__PIPELINE__ALLOWED_LATENESS", "5s".into()),
    ]
}

/// A crowdpulse command reading `topic` and writing to `schema`.
fn command(topic: &str, schema: &str) -> Command {
    let mut cmd = bin();
    cmd.envs(environment(topic, schema)).env("RUST_LOG", "warn");
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

/// `replay`'s rows of the whole topic as a live run leaves them: it never ends its input, so its
/// stream totals stay live; the windows all become final once the caught-up partitions go idle
/// and wall-clock time passes them.
fn live_replay_lines(topic: &str, dir: &Path) -> Vec<String> {
    replay_lines(topic, dir)
        .into_iter()
        .map(|line| {
            if line.contains("\"table\":\"stream_totals\"") {
                line.replace("\"final\":true", "\"final\":false")
            } else {
                line
            }
        })
        .collect()
}

fn assert_same(db: &Db, schema: &str, expected: &[String], what: &str) {
    assert_no_differences(&db.differences(schema, expected), what);
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

#[test]
fn two_processes_backfill_into_postgres_like_a_replay() {
    let dir = scratch("cluster-backfill");
    let topic = topic_with("pg-cluster", 20_000);
    let expected = replay_lines(&topic, &dir);
    let db = Db::connect();
    let schema = fresh_config("cluster").schema;
    let cluster = cluster_env(2);
    let children = spawn_cluster(2, || {
        let mut cmd = command(&topic, &schema);
        cmd.args(["run", "--from", "earliest", "--until", "latest"])
            .envs(cluster.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(Stdio::piped());
        cmd
    });
    let summaries = wait_cluster(children);
    // Process 0 hosts the sink; process 1 only reads its partitions.
    assert!(summaries[0].contains("postgres: "), "{}", summaries[0]);
    assert!(!summaries[1].contains("postgres: "), "{}", summaries[1]);
    assert_same(&db, &schema, &expected, "two processes");
    db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Processes of a cluster that keep checkpoints in different schemas refuse each other: each
/// would resume from its own checkpoint (they were accepted together on a first run, and every
/// restart then failed as having read the checkpoint at different moments).
#[test]
fn processes_keeping_checkpoints_in_different_schemas_refuse_each_other() {
    let topic = topic_with("pg-cluster-schemas", 100);
    let schemas = [
        fresh_config("schemas0").schema,
        fresh_config("schemas1").schema,
    ];
    let cluster = cluster_env(2);
    let mut process = 0;
    let children = spawn_cluster(2, || {
        let mut cmd = command(&topic, &schemas[process]);
        process += 1;
        cmd.args(["run", "--from", "earliest", "--until", "latest"])
            .envs(cluster.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CROWDPULSE__CLUSTER__STARTUP_TIMEOUT", "10s")
            .stderr(Stdio::piped());
        cmd
    });
    for (process, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "process {process} ran");
        let peer = 1 - process;
        assert!(
            stderr.contains(&format!("process {peer} runs another job")),
            "process {process}: {stderr}"
        );
    }
    let db = Db::connect();
    for schema in &schemas {
        db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
    }
}

#[test]
fn a_lost_or_stopped_process_stops_the_cluster_and_restarting_both_resumes_to_the_tables_of_a_replay(
) {
    let dir = scratch("cluster-kill");
    let topic = fresh_topic("pg-cluster-kill", 4);
    let schema = fresh_config("clusterkill").schema;
    let db = Db::connect();
    let mut env = environment(&topic, &schema);
    env.extend(cluster_env(2));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut producer = bin()
        .args(["generate", "--rate", "2000", "--duration", "8s"])
        .args([
            "--seed",
            "23",
            "--streams",
            "6",
            "--kafka",
            BROKER,
            "--topic",
        ])
        .arg(&topic)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = || {
        let peer = bin()
            .args(["run", "--process", "1"])
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let (run, _) = Demo::run(&["--process", "0"], &env);
        (run, Killed(peer))
    };
    let (mut run, peer) = start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint_offsets(&db, &schema).is_none() {
        assert!(Instant::now() < deadline, "no checkpoint of the pair");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every worker of both processes is in the checkpoint.
    assert_eq!(
        db.value(&format!("SELECT workers FROM \"{schema}\".checkpoints")),
        "2"
    );
    std::thread::sleep(Duration::from_millis(1_000));
    drop(peer); // SIGKILL
    let lost = Instant::now();
    let status = run
        .exit_within(Duration::from_secs(10))
        .expect("process 0 stops once process 1 is lost");
    eprintln!(
        "process 0 exited {:?} after losing process 1",
        lost.elapsed()
    );
    assert!(!status.success(), "{status}");
    let log = run.stderr();
    assert!(log.contains("lost the connection to process 1"), "{log}");
    drop(run);

    // A process its peers never join (here a stray started with another job, --from) clears
    // nothing: the checkpoint and the live rows stay for the pair's restart.
    let live_rows = || {
        db.value(&format!(
            "SELECT count(*) FROM \"{schema}\".stream_totals WHERE NOT final"
        ))
    };
    // A live row of the test's own: the pair's may all be final by now (a partition idle for
    // 500 ms moves the frontier to the wall clock, past these January events). The restart
    // below removes it with the rest, or the comparison with the replay finds it.
    db.execute(&format!(
        "INSERT INTO \"{schema}\".stream_totals \
         (stream_id, chat_messages, reactions, transactions, peak_viewers, final) \
         VALUES ('stray-check', 0, 0, 0, 0, false)"
    ));
    let (checkpoint, live) = (checkpoint_offsets(&db, &schema), live_rows());
    assert_ne!(live, "0");
    let stray = bin()
        .args(["run", "--process", "1", "--from", "earliest"])
        .envs(env.iter().copied())
        .env("CROWDPULSE__CLUSTER__STARTUP_TIMEOUT", "1s")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!stray.status.success(), "a lone process ran");
    assert_eq!(
        checkpoint_offsets(&db, &schema),
        checkpoint,
        "checkpoint removed"
    );
    assert_eq!(live_rows(), live, "live rows removed");

    assert!(producer.wait().unwrap().success());
    let expected = live_replay_lines(&topic, &dir);
    let (mut run, mut peer) = start();
    let differences = db.differences_within(&schema, &expected, Duration::from_secs(120));
    let log = run.stderr();
    assert!(
        log.contains("resuming from the latest checkpoint"),
        "the restart did not resume: {log}"
    );
    assert_no_differences(&differences, "tables after the restarts");

    // Stopping one process on purpose (systemd, Kubernetes) stops it at once, and the other
    // with it, naming it: neither waits for the other for ever.
    let status = peer
        .terminate_within(Duration::from_secs(10))
        .expect("process 1 stops on SIGTERM");
    assert!(status.success(), "process 1 exited {status}");
    let status = run
        .exit_within(Duration::from_secs(10))
        .expect("process 0 stops once process 1 left");
    assert!(!status.success(), "{status}");
    let log = run.stderr();
    assert!(log.contains("lost the connection to process 1"), "{log}");
    drop((run, peer));
    db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Records the checkpoint the schema holds reflects (None: no checkpoint yet).
fn checkpoint_offsets(db: &Db, schema: &str) -> Option<u64> {
    let sum = db.value(&format!(
        "SELECT coalesce(sum(next_offset), -1) FROM \"{schema}\".checkpoint_positions \
         WHERE time = (SELECT max(time) FROM \"{schema}\".checkpoints)"
    ));
    sum.parse::<i64>().ok().and_then(|s| u64::try_from(s).ok())
}

/// Holds an exclusive lock on `table` until dropped, so the sink's next transaction that writes
/// it waits (it is then killed inside that transaction).
struct TableLock(Db);

impl TableLock {
    fn take(schema: &str, table: &str) -> Self {
        let db = Db::connect();
        db.execute(&format!(
            "BEGIN; LOCK TABLE \"{schema}\".{table} IN ACCESS EXCLUSIVE MODE"
        ));
        Self(db)
    }

    /// Waits until a statement of the run is blocked on the lock (only the run writes `schema`;
    /// a checkpoint write first deletes the previous checkpoint, which cascades to its parts), as
    /// `observer` (another session: inside the lock's transaction the activity view stays as it
    /// first was) sees.
    fn wait_for_writer(&self, observer: &Db, schema: &str, table: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let waiting = observer.value(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE '%{schema}%'"
            ));
            if waiting != "0" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no write to {table} waited for the lock"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        self.0.execute("ROLLBACK");
    }
}

#[test]
fn a_live_run_killed_at_any_point_resumes_from_its_checkpoint_and_ends_with_the_tables_of_a_replay()
{
    let dir = scratch("kill");
    let topic = fresh_topic("pg-kill", 4);
    let schema = fresh_config("kill").schema;
    let db = Db::connect();
    let env = environment(&topic, &schema);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Events keep arriving at a steady rate, event times from now, while the run is killed.
    const RATE: u64 = 2_000;
    let mut producer = producer(&topic, RATE, "16s", "21");
    // No --from: each start resumes from the latest checkpoint (the first from kafka.start).
    let start = || Demo::run(&["--workers", "2"], &env).0;
    let mut restarts_checked = 0;
    // The checkpoint seen at the last kill, when, and how many records it was allowed to lag.
    let mut last_seen: Option<(u64, Instant, u64)> = None;
    let mut checkpoints_seen = std::collections::BTreeSet::new();
    let records_in = |span: Duration| span.as_millis() as u64 * RATE / 1_000;
    // `held`: how long the test itself held the run's writes back before the kill (None: not
    // at all), which the checkpoint is then allowed to lag by too.
    let mut kill = |run: Demo, point: &str, held: Option<Duration>| {
        let read = offsets_read(&run.address);
        drop(run); // SIGKILL
        let resumed = checkpoint_offsets(&db, &schema);
        eprintln!("killed {point}: {read} records read, checkpoint at {resumed:?}");
        if let Some(resumed) = resumed {
            // The restart re-reads what came after the checkpoint: about one interval's worth
            // (1 s at RATE/s; allowance for a loaded machine), never the history. A run killed
            // before its first checkpoint is in (on a loaded machine its start can take
            // seconds: CI saw one at 2.5 s) leaves the previous one, which then lags by what
            // arrived since too.
            let allowed = match last_seen {
                Some((previous, seen_at, allowed)) if previous == resumed => {
                    allowed + records_in(seen_at.elapsed())
                }
                _ => 4 * RATE + held.map_or(0, records_in),
            };
            let reread = read.saturating_sub(resumed);
            assert!(
                reread <= allowed,
                "{point}: a restart would re-read {reread} records (allowed {allowed})"
            );
            last_seen = Some((resumed, Instant::now(), allowed));
            checkpoints_seen.insert(resumed);
            restarts_checked += 1;
        }
    };
    let run = start();
    std::thread::sleep(Duration::from_millis(300));
    kill(run, "before its first checkpoint", None);
    for table in ["window_metrics", "checkpoint_parts"] {
        let started = Instant::now();
        let run = start();
        std::thread::sleep(Duration::from_millis(1_500));
        let lock = TableLock::take(&schema, table);
        lock.wait_for_writer(&db, &schema, table);
        // Writes wait for the lock from when the run started at the latest (on a loaded
        // machine its first checkpoint may not be in before the lock is taken), and the run
        // reads the backlog meanwhile (CI once saw 9,147 records re-read here, 4.6 s' worth).
        kill(
            run,
            &format!("inside a transaction writing {table}"),
            Some(started.elapsed()),
        );
        drop(lock);
    }
    for delay_ms in [2_500, 3_300] {
        let run = start();
        std::thread::sleep(Duration::from_millis(delay_ms));
        kill(run, &format!("after {delay_ms} ms"), None);
    }
    assert!(producer.wait().unwrap().success());
    let run = start();
    std::thread::sleep(Duration::from_millis(2_000));
    kill(run, "after the input ended", None);
    assert!(
        restarts_checked >= 4,
        "checkpoints were taken before most kills"
    );
    assert!(
        checkpoints_seen.len() >= 2,
        "the checkpoint moved on across the restarts: {checkpoints_seen:?}"
    );
    let expected = live_replay_lines(&topic, &dir);
    assert!(expected
        .iter()
        .any(|l| l.contains("\"table\":\"dead_letters\"")));
    let run = start();
    let differences = db.differences_within(&schema, &expected, Duration::from_secs(120));
    drop(run);
    assert_no_differences(&differences, "tables after the restarts");
    db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}

/// A live run fed `generate --rate 500` into a fresh topic, writing `schema` through `url`.
fn live_run_with_input(name: &str, schema: &str, url: &str) -> (Demo, Killed) {
    let topic = fresh_topic(name, 2);
    let mut env = environment(&topic, schema);
    env.retain(|(key, _)| *key != "CROWDPULSE__POSTGRES__URL");
    env.push(("CROWDPULSE__POSTGRES__URL", url.to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let producer = producer(&topic, 500, "120s", "3");
    let (run, _rows) = Demo::run(&[], &env);
    (run, Killed(producer))
}

/// A live run stopped while Postgres is unreachable waits 30 s for it, then exits non-zero
/// naming the sink: what it had not written is not in the tables (a restart reads it again from
/// Kafka), and a supervisor must learn that.
#[test]
fn a_run_stopped_while_postgres_is_unreachable_exits_non_zero() {
    let proxy = Proxy::start("127.0.0.1:0", &postgres_support::url());
    let schema = fresh_config("stopunreachable").schema;
    let db = Db::connect();
    let (mut run, _producer) = live_run_with_input("pg-stop-unreachable", &schema, &proxy.url);
    db.wait_for_rows(&schema);
    proxy.cut();
    // Rows keep coming while the sink retries, so some wait to be written at the stop.
    std::thread::sleep(Duration::from_secs(2));
    let status = run
        .terminate_within(Duration::from_secs(60))
        .expect("the run gives up on the database within its 30 s grace");
    let log = run.stderr();
    assert!(
        !status.success(),
        "exited {status} after losing rows: {log}"
    );
    assert!(log.contains("postgres still failing"), "{log}");
    db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}

/// A live run stopped while its commit waits on a lock someone else holds gives up after the
/// same 30 s grace and exits non-zero, rather than waiting as long as the lock is held.
#[test]
fn a_run_stopped_while_its_commit_is_blocked_exits_within_the_grace() {
    let schema = fresh_config("stopblocked").schema;
    let db = Db::connect();
    let (mut run, _producer) =
        live_run_with_input("pg-stop-blocked", &schema, &postgres_support::url());
    db.wait_for_rows(&schema);
    let lock = TableLock::take(&schema, "window_metrics");
    lock.wait_for_writer(&db, &schema, "window_metrics");
    let status = run.terminate_within(Duration::from_secs(60));
    let log = run.stderr();
    drop(lock);
    let status = status.unwrap_or_else(|| panic!("still running 60 s after SIGTERM: {log}"));
    assert!(
        !status.success(),
        "exited {status} after losing rows: {log}"
    );
    assert!(
        log.contains("postgres still failing") && log.contains("lock timeout"),
        "{log}"
    );
    db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}
