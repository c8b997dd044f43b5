//! The Postgres sink against a real PostgreSQL (`scripts/postgres.sh`): a bounded run's tables
//! equal the NDJSON rows of the same run (compared in SQL, every table) for 1 and 2 workers; a
//! second run over the same input leaves them identical and adds no dead letter; final rows are
//! never replaced by live ones or deleted; migrations are idempotent; checkpoint states of any
//! length read back as written.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdpulse_connectors::generator::{write_files, GeneratorConfig};
use crowdpulse_connectors::postgres::checkpoints::{self, latest_checkpoint, write_checkpoint};
use crowdpulse_connectors::postgres::migrate::MIGRATIONS;
use crowdpulse_connectors::postgres::{
    apply_migrations, PostgresConfig, PostgresSink, PostgresSinkMetrics,
};
use crowdpulse_connectors::sink::{Flush, Sink};
use crowdpulse_connectors::ConnectorError;
use crowdpulse_dataflow::checkpoint::{Checkpoint, CheckpointPart, Role};
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::event::MAX_AMOUNT_UNITS;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::rows::{DeadLetter, DeadLetterReason, Row, StreamTotals, WindowKey};
use crowdpulse_dataflow::rows_json::RowJson;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::process::{run_into, run_to_final_rows, BoundedRun};
use crowdpulse_runtime::sources::Sources;
use support::postgres::{assert_no_differences, fresh_config, Db};
use tokio_postgres::NoTls;

mod support;

/// How often the sinks under test commit.
const INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

fn events(name: &str, events: u64) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("postgres-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = GeneratorConfig {
        events,
        seed: 11,
        streams: 6,
        rate: 100.0,
        start: 1_795_000_000_000,
    };
    write_files(config, &dir.join("events.ndjson"), 3).unwrap()
}

fn bounded(files: &[PathBuf], workers: usize, live_rows: bool) -> BoundedRun {
    BoundedRun {
        analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
        plan: Plan::new(PipelineConfig::default())
            .unwrap()
            .with_live_rows(live_rows),
        cluster: Cluster::local(workers),
        counters: Arc::default(),
        sources: Sources::files(files.to_vec()),
    }
}

fn ndjson(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .map(|row| serde_json::to_string(&RowJson(row)).unwrap())
        .collect()
}

fn into_postgres(
    files: &[PathBuf],
    workers: usize,
    config: &PostgresConfig,
) -> Arc<PostgresSinkMetrics> {
    let sink = Arc::new(PostgresSink::start(config, INTERVAL).unwrap());
    let metrics = sink.metrics();
    // Live rows on, as `run` writes them: early results are replaced as windows change.
    run_into(
        bounded(files, workers, true),
        vec![Arc::clone(&sink) as Arc<dyn Sink>],
        Some(sink.lead()),
        None,
    )
    .unwrap();
    metrics
}

#[test]
fn bounded_runs_write_exactly_the_ndjson_rows_and_a_rerun_changes_nothing() {
    let files = events("backfill", 30_000);
    let expected = ndjson(&run_to_final_rows(bounded(&files, 2, false)).unwrap());
    assert!(expected.iter().any(|l| l.contains("\"dead_letters\"")));
    assert!(expected.iter().any(|l| l.contains("\"moments\"")));
    let db = Db::connect();
    for workers in [1, 2] {
        let config = fresh_config(&format!("backfill{workers}"));
        apply_migrations(&config).unwrap();
        into_postgres(&files, workers, &config);
        let differences = db.differences(&config.schema, &expected);
        assert_no_differences(&differences, &format!("{workers} workers"));
        // The comparison itself sees a changed value and a missing row.
        let mut altered = expected.clone();
        let last = altered.pop().unwrap();
        altered.push(last.replacen("\"final\":true", "\"final\":false", 1));
        altered.remove(0);
        assert_eq!(db.differences(&config.schema, &altered).len(), 3);
        let progress = db.value(&format!(
            "SELECT sum(next_offset) FROM \"{}\".source_progress",
            config.schema
        ));
        assert_eq!(progress, "30000", "every input line is reflected");
        assert_eq!(
            db.value(&format!(
                "SELECT frontier FROM \"{}\".sink_frontier",
                config.schema
            )),
            "",
            "a finished bounded run leaves no frontier (everything written)"
        );
        if workers == 2 {
            let dead = format!("SELECT count(*) FROM \"{}\".dead_letters", config.schema);
            let before = db.value(&dead);
            into_postgres(&files, workers, &config);
            assert_eq!(db.value(&dead), before, "a rerun adds no dead letter");
            assert!(db.differences(&config.schema, &expected).is_empty());
        }
        db.execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema));
    }
}

#[test]
fn connections_killed_during_a_run_lose_nothing_and_write_nothing_twice() {
    let files = events("outage", 150_000);
    let expected = ndjson(&run_to_final_rows(bounded(&files, 2, false)).unwrap());
    let mut config = fresh_config("outage");
    // Its own application name, so that only this test's connections are killed.
    config
        .url
        .push_str("?application_name=crowdpulse_outage_test");
    apply_migrations(&config).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let killer = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let db = Db::connect();
            let mut killed = 0;
            // Six outages, each ending when the sink reconnects (its backoff starts at 100 ms).
            for _ in 0..6 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                killed += db
                    .column(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = 'crowdpulse_outage_test'",
                    )
                    .len();
                std::thread::sleep(Duration::from_millis(300));
            }
            killed
        })
    };
    let metrics = into_postgres(&files, 2, &config);
    done.store(true, Ordering::Relaxed);
    let killed = killer.join().unwrap();
    let failures = metrics.failures.load(Ordering::Relaxed);
    assert!(
        killed > 0 && failures > 0,
        "killed {killed}, failures {failures}"
    );
    let db = Db::connect();
    let differences = db.differences(&config.schema, &expected);
    assert!(
        differences.is_empty(),
        "{} differences after {failures} failed writes, e.g. {:#?}",
        differences.len(),
        &differences[..differences.len().min(6)]
    );
    db.execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema));
}

fn totals(chat_messages: u64, is_final: bool) -> Row {
    Row::StreamTotals {
        totals: Box::new(StreamTotals {
            stream_id: "s".into(),
            chat_messages,
            ..StreamTotals::default()
        }),
        is_final,
    }
}

/// A fresh schema named after `name`, migrated, and a connection to check it with.
fn migrated_schema(name: &str) -> (PostgresConfig, Db) {
    let config = fresh_config(name);
    apply_migrations(&config).unwrap();
    (config, Db::connect())
}

#[test]
fn final_rows_are_never_replaced_by_live_rows_nor_deleted() {
    let (config, db) = migrated_schema("final");
    let read = || {
        db.value(&format!(
            "SELECT chat_messages || ' ' || final FROM \"{}\".stream_totals",
            config.schema
        ))
    };
    let write = |updates: Vec<(Row, u64, isize)>, frontier| {
        let sink = PostgresSink::start(&config, INTERVAL).unwrap();
        sink.flush(&Arc::new(Flush {
            frontier,
            updates,
            ..Flush::default()
        }));
        sink.finish().unwrap();
    };
    write(vec![(totals(5, false), 1, 1)], Some(2));
    assert_eq!(read(), "5 false");
    write(
        vec![(totals(5, false), 3, -1), (totals(7, false), 3, 1)],
        Some(4),
    );
    assert_eq!(
        read(),
        "7 false",
        "a live row is replaced by its next version"
    );
    write(vec![(totals(9, true), 5, 1)], None);
    assert_eq!(read(), "9 true");
    // A restart recomputes from the start: its early live rows must leave final rows alone.
    write(vec![(totals(1, false), 1, 1)], Some(2));
    assert_eq!(read(), "9 true", "a live row never replaces a final one");
    write(vec![(totals(1, false), 3, -1)], Some(4));
    assert_eq!(read(), "9 true", "a retraction never deletes a final row");
    // A restart from a later position computes the window from less input.
    write(vec![(totals(4, true), 5, 1)], None);
    assert_eq!(read(), "9 true", "a final row is never replaced");
    db.execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema));
}

/// Every run into Postgres starts by removing live rows, when its sink opens, not only one
/// resuming from a checkpoint: after a run started at an explicit position (`--from`), one
/// without checkpoints or one whose predecessor was killed before its first checkpoint, an
/// earlier run's live rows of windows the new run does not recompute stayed live
/// (`final = false`) for ever. Reading the checkpoint removes nothing: every process of a
/// cluster reads it before the processes agree on the job.
#[test]
fn live_rows_go_whenever_a_run_opens_its_sink() {
    let (config, db) = migrated_schema("afresh");
    let live_and_final = || {
        let sink = PostgresSink::start(&config, INTERVAL).unwrap();
        let mut final_totals = totals(3, true);
        if let Row::StreamTotals { totals, .. } = &mut final_totals {
            totals.stream_id = "done".into();
        }
        sink.flush(&Arc::new(Flush {
            frontier: Some(2),
            updates: vec![(totals(5, false), 1, 1), (final_totals, 1, 1)],
            ..Flush::default()
        }));
        sink.finish().unwrap();
    };
    let rows = || {
        db.value(&format!(
            "SELECT string_agg(stream_id || ' ' || final, ', ' ORDER BY stream_id) FROM \"{}\".stream_totals",
            config.schema
        ))
    };
    live_and_final();
    assert_eq!(rows(), "done true, s false");
    let read = checkpoints::read_latest(&config, |_| Ok(())).unwrap();
    assert!(read.is_none());
    assert_eq!(rows(), "done true, s false", "reading removed rows");
    db.execute(&format!(
        "INSERT INTO \"{}\".checkpoints (time, workers, format_version, state_bytes) VALUES (1, 1, 1, 0)",
        config.schema
    ));
    let checkpoints = || {
        db.value(&format!(
            "SELECT count(*) FROM \"{}\".checkpoints",
            config.schema
        ))
    };
    for (forget_checkpoint, kept) in [(false, "1"), (true, "0")] {
        let sink = PostgresSink::start(&config, INTERVAL).unwrap();
        let sink = match forget_checkpoint {
            true => sink.forgetting_checkpoint(),
            false => sink,
        };
        sink.open().unwrap();
        assert_eq!(rows(), "done true");
        assert_eq!(checkpoints(), kept);
        sink.finish().unwrap();
        live_and_final();
        assert_eq!(rows(), "done true, s false");
    }
    db.execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema));
}

/// Opening survives its connection being killed, as writes do: the run starts instead of failing
/// on a database that was only briefly away.
#[test]
fn a_connection_lost_while_the_sink_opens_is_retried() {
    let (mut config, db) = migrated_schema("reopen");
    config
        .url
        .push_str("?application_name=crowdpulse_reopen_test");
    let sink = PostgresSink::start(&config, INTERVAL).unwrap();
    sink.flush(&Arc::new(Flush {
        frontier: Some(2),
        updates: vec![(totals(5, false), 1, 1)],
        ..Flush::default()
    }));
    sink.finish().unwrap();
    let live = format!("SELECT count(*) FROM \"{}\".stream_totals", config.schema);
    assert_eq!(db.value(&live), "1");
    // A lock held elsewhere keeps the opening sink waiting, so that its connection is killed
    // while it works.
    let holder = Db::connect();
    holder.execute(&format!(
        "BEGIN; LOCK TABLE \"{}\".stream_totals",
        config.schema
    ));
    let opening = std::thread::spawn({
        let config = config.clone();
        move || {
            let sink = PostgresSink::start(&config, INTERVAL).unwrap();
            let opened = sink.open();
            sink.finish().unwrap();
            opened
        }
    });
    let ours = "FROM pg_stat_activity WHERE application_name = 'crowdpulse_reopen_test'";
    let waiting = Instant::now();
    while db
        .column(&format!("SELECT pid {ours} AND wait_event_type = 'Lock'"))
        .is_empty()
    {
        assert!(waiting.elapsed() < Duration::from_secs(20), "never waited");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        db.column(&format!(
            "SELECT pg_terminate_backend(pid) {ours} AND wait_event_type = 'Lock'"
        )),
        ["true"]
    );
    holder.execute("ROLLBACK");
    opening.join().unwrap().unwrap();
    assert_eq!(db.value(&live), "0", "the live row was removed");
    db.execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema));
}

fn dead_letter(offset: u64) -> Row {
    Row::DeadLetter(DeadLetter::new(
        "t",
        0,
        offset,
        DeadLetterReason::Decode,
        "not json".into(),
        b"x",
    ))
}

/// New rows go into a table with one COPY, rows already there are upserted, and in one flush
/// a table of either kind leaves the other's writes in place, in either order (`stream_totals`
/// is written before `dead_letters`).
#[test]
fn a_flush_mixing_new_rows_and_rows_already_written_keeps_both() {
    let (config, db) = migrated_schema("mixed");
    let write = |updates: Vec<(Row, u64, isize)>| {
        let sink = PostgresSink::start(&config, INTERVAL).unwrap();
        sink.flush(&Arc::new(Flush {
            frontier: None,
            updates,
            ..Flush::default()
        }));
        sink.finish().unwrap();
    };
    let read = |sql: &str| db.value(&sql.replace("{schema}", &config.schema));
    let streams = "SELECT string_agg(stream_id || ' ' || chat_messages, ',' ORDER BY stream_id) \
                   FROM \"{schema}\".stream_totals";
    let dead = "SELECT string_agg(\"offset\"::text, ',' ORDER BY \"offset\") \
                FROM \"{schema}\".dead_letters";
    write(vec![(totals(5, false), 1, 1)]);
    // stream_totals meets its row (upserted), then dead_letters takes a new one (copied).
    write(vec![(totals(6, false), 1, 1), (dead_letter(1), 1, 1)]);
    assert_eq!(read(streams), "s 6");
    assert_eq!(read(dead), "1");
    // stream_totals takes a new stream (copied), then dead_letters meets its row.
    let other = Row::StreamTotals {
        totals: Box::new(StreamTotals {
            stream_id: "t".into(),
            chat_messages: 2,
            ..StreamTotals::default()
        }),
        is_final: false,
    };
    write(vec![
        (other, 1, 1),
        (dead_letter(1), 1, 1),
        (dead_letter(2), 1, 1),
    ]);
    assert_eq!(read(streams), "s 6,t 2");
    assert_eq!(read(dead), "1,2");
    db.execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema));
}

/// A window sum beyond 64 bits (a thousand of the largest accepted amount and a little) is stored
/// to the last unit.
#[test]
fn money_sums_beyond_64_bits_are_stored_exactly() {
    let config = fresh_config("money");
    apply_migrations(&config).unwrap();
    let sink = PostgresSink::start(&config, INTERVAL).unwrap();
    let revenue = Row::WindowRevenue {
        key: WindowKey {
            stream_id: "s".into(),
            window: "10s".into(),
            start: 0,
            end: 10_000,
        },
        kind: "donation".into(),
        currency: "USD".into(),
        transactions: 1000,
        amount: 1000 * i128::from(MAX_AMOUNT_UNITS) + 7,
        is_final: true,
    };
    sink.flush(&Arc::new(Flush {
        frontier: None,
        updates: vec![(revenue, 1, 1)],
        ..Flush::default()
    }));
    sink.finish().unwrap();
    let db = Db::connect();
    assert_eq!(
        db.value(&format!(
            "SELECT amount_units || ' ' || amount FROM \"{}\".window_revenue",
            config.schema
        )),
        "10000000000000000007 1000000000000000.0007"
    );
    db.execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema));
}

#[test]
fn a_write_the_server_refuses_ends_the_sink_loudly_instead_of_stalling_the_run() {
    // Never migrated: every write fails with "relation does not exist", which no retry mends.
    let config = fresh_config("refused");
    let sink = PostgresSink::start(&config, INTERVAL).unwrap();
    sink.flush(&Arc::new(Flush {
        frontier: Some(10),
        updates: vec![(totals(1, false), 5, 1)],
        ..Flush::default()
    }));
    let error = sink.finish().unwrap_err().to_string();
    assert!(error.contains("does not exist"), "{error}");
    assert_eq!(
        sink.durable_frontier(),
        Some(u64::MAX),
        "the sources are no longer held back"
    );
    assert_eq!(sink.metrics().commits.load(Ordering::Relaxed), 0);
}

#[test]
fn migrations_apply_once() {
    let config = fresh_config("migrate");
    assert_eq!(
        apply_migrations(&config).unwrap(),
        [1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    assert!(apply_migrations(&config).unwrap().is_empty());
    let db = Db::connect();
    assert_eq!(
        db.value(&format!(
            "SELECT count(*) FROM \"{}\".schema_migrations",
            config.schema
        )),
        "9"
    );
    db.execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema));
}

/// Version 9 re-keys `chat_messages` (stream and time first) on a schema that already holds
/// chat in a day partition: the messages stay, and the partition's only B-tree is the new key.
#[test]
fn the_chat_key_migration_keeps_stored_messages() {
    let config = fresh_config("rekey");
    let schema = &config.schema;
    let mut sql = format!(
        "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\";
         CREATE TABLE schema_migrations (
             version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());"
    );
    for migration in MIGRATIONS.iter().filter(|m| m.version < 9) {
        sql += migration.sql;
        sql += &format!(
            ";\nINSERT INTO schema_migrations (version, name) VALUES ({}, '{}');\n",
            migration.version, migration.name
        );
    }
    sql += "CREATE TABLE chat_messages_20261201 PARTITION OF chat_messages
                FOR VALUES FROM (1796083200000) TO (1796169600000);
            INSERT INTO chat_messages
                (source, partition, \"offset\", ts, stream_id, user_id, text, sentiment, category)
            SELECT 'chat', g % 2, g, 1796083200000 + g, 's' || (g % 3), 'u', 'hi ' || g, 0, 'other'
            FROM generate_series(1, 100) g;";
    let db = Db::connect();
    db.execute(&sql);
    assert_eq!(apply_migrations(&config).unwrap(), [9]);
    assert_eq!(
        db.value(&format!(
            "SELECT count(DISTINCT (source, partition, \"offset\", ts, stream_id, text)) \
             FROM \"{schema}\".chat_messages_20261201"
        )),
        "100"
    );
    assert_eq!(
        db.column(&format!(
            "SELECT regexp_replace(indexdef, '^.* USING ', '') FROM pg_indexes \
             WHERE schemaname = '{schema}' AND tablename = 'chat_messages_20261201' \
             AND indexdef NOT LIKE '% USING gin %'"
        )),
        ["btree (stream_id, ts, source, partition, \"offset\")"]
    );
    db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}

/// `postgres.chat_retention` in event time: five days of chat, one message every six hours,
/// kept for two days. Exactly the messages of the days from the one two days before the latest
/// are stored, in their day partitions, and a rerun changes nothing.
#[test]
fn chat_history_keeps_the_retention_in_day_partitions() {
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;
    let start = 1_795_000_000_000 / DAY * DAY + 3 * HOUR;
    let times: Vec<u64> = (0..20).map(|i| start + i * 6 * HOUR).collect();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("chat-retention-{}.ndjson", std::process::id()));
    let lines: String = times
        .iter()
        .map(|ts| {
            format!("{{\"type\":\"chat\",\"stream_id\":\"s\",\"user_id\":\"u\",\"ts\":{ts},\"text\":\"hi {ts}\"}}\n")
        })
        .collect();
    std::fs::write(&file, lines).unwrap();
    let config = PostgresConfig {
        chat_retention: crowdpulse_dataflow::config::Span(2 * DAY),
        ..fresh_config("chatretention")
    };
    apply_migrations(&config).unwrap();
    let db = Db::connect();
    let horizon = times.last().unwrap() - 2 * DAY;
    for run in 0..2 {
        into_postgres(std::slice::from_ref(&file), 2, &config);
        let stored: Vec<u64> = db
            .column(&format!(
                "SELECT ts FROM \"{}\".chat_messages ORDER BY ts",
                config.schema
            ))
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        // Whole days from the horizon's, in every run.
        let kept: Vec<u64> = times
            .iter()
            .copied()
            .filter(|t| t / DAY >= horizon / DAY)
            .collect();
        assert_eq!(stored, kept, "run {run}");
        let partitions = db.column(&format!(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE n.nspname = '{}' AND p.relname = 'chat_messages' ORDER BY 1",
            config.schema
        ));
        let first_day = horizon / DAY;
        let expected: Vec<String> = (first_day..=times.last().unwrap() / DAY)
            .map(|day| {
                let date = crowdpulse_dataflow::timestamp::format_rfc3339(day * DAY);
                format!("chat_messages_{}", date[..10].replace('-', ""))
            })
            .collect();
        assert_eq!(partitions, expected, "run {run}");
    }
    db.execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema));
}

/// A checkpoint of three workers whose six states have lengths around the slices the sink
/// sends them in (none, one byte, a slice less one, one, one more, several), each of bytes of
/// its own.
fn checkpoint_of_every_length(time: u64) -> Checkpoint {
    let slice = 1 << 20; // the sink's slice
    let lengths = [0, 1, slice - 1, slice, slice + 1, 3 * slice + 12_345];
    let parts = lengths
        .iter()
        .enumerate()
        .map(|(i, &len)| CheckpointPart {
            time,
            worker: i % 3,
            workers: 3,
            role: if i < 3 { Role::Source } else { Role::Analytics },
            positions: Vec::new(),
            state: (0..len)
                .map(|n| (n as u64 * 31 + n as u64 / 251 + i as u64 * 97 + time) as u8)
                .collect(),
            finished: false,
        })
        .collect();
    Checkpoint::assemble(time, parts, &Default::default()).expect("every part is there")
}

#[test]
fn checkpoint_states_of_any_length_read_back_as_written() {
    let config = fresh_config("checkpoint_parts");
    apply_migrations(&config).unwrap();
    let schema = &config.schema;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stored = runtime.block_on(async {
        let (mut client, connection) = tokio_postgres::connect(&support::postgres::url(), NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        // The second replaces the first.
        for time in [5, 6] {
            let tx = client.transaction().await.unwrap();
            write_checkpoint(&tx, schema, &checkpoint_of_every_length(time))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        // A state longer than a value PostgreSQL can hold is refused by name, before it is sent
        // (the zeroed gibibyte is never touched, so it costs address space, not memory).
        let mut too_large = checkpoint_of_every_length(7);
        let part = too_large
            .parts
            .iter_mut()
            .find(|p| p.worker == 1 && p.role == Role::Analytics)
            .unwrap();
        part.state = vec![0; 1 << 30];
        let tx = client.transaction().await.unwrap();
        let refused = write_checkpoint(&tx, schema, &too_large).await;
        assert!(
            matches!(
                refused,
                Err(ConnectorError::CheckpointPartTooLarge {
                    worker: 1,
                    role: "analytics",
                    bytes: 1_073_741_824
                })
            ),
            "{refused:?}"
        );
        drop(tx);
        latest_checkpoint(&client, schema).await.unwrap()
    });
    assert!(stored == Some(checkpoint_of_every_length(6)));
    // The server's own view: the lengths written and each state's last byte (computed by hand).
    let db = Db::connect();
    assert_eq!(
        db.column(&format!(
            "SELECT format('%s %s %s %s %s', time, role, worker, octet_length(state), \
             get_byte(state, octet_length(state) - 1)) FROM \"{schema}\".checkpoint_parts \
             WHERE octet_length(state) > 0 ORDER BY role DESC, worker"
        )),
        [
            "6 source 1 1 103",
            "6 source 2 1048575 219",
            "6 analytics 0 1048576 91",
            "6 analytics 1 1048577 219",
            "6 analytics 2 3158073 216"
        ]
    );
    db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}
