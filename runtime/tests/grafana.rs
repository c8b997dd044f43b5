//! The provisioned Grafana dashboards (`deploy/grafana`) cannot rot: every panel's and
//! variable's SQL runs against the migrated schema filled by a real run and returns rows, with
//! Grafana's macros expanded as Grafana would; every Prometheus query names metrics crowdpulse
//! exports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crowdpulse_connectors::generator::{write_files, GeneratorConfig};
use crowdpulse_connectors::postgres::{apply_migrations, PostgresSink};
use crowdpulse_connectors::sink::Sink;
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::process::{run_into, BoundedRun};
use crowdpulse_runtime::sources::Sources;
use serde_json::Value;
use support::postgres::{fresh_config, Db};

mod support;

/// How often the sinks under test commit.
const INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut found: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (
                path.display().to_string(),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(found.len(), 3, "one dashboard per audience");
    found
}

/// `$__timeGroupAlias(col, '1h')` as Grafana expands it: the column floored to the interval,
/// named time.
fn time_group_alias(sql: &str) -> String {
    let Some(at) = sql.find("$__timeGroupAlias(") else {
        return sql.to_owned();
    };
    let rest = &sql[at + "$__timeGroupAlias(".len()..];
    let close = rest.find(')').unwrap();
    let (column, interval) = rest[..close].split_once(',').unwrap();
    let interval = interval.trim().trim_matches('\'');
    let seconds = match interval.split_at(interval.len() - 1) {
        (n, "s") => n.parse::<u64>().unwrap(),
        (n, "m") => n.parse::<u64>().unwrap() * 60,
        (n, "h") => n.parse::<u64>().unwrap() * 3600,
        other => panic!("interval {other:?}"),
    };
    let expanded = format!(
        "to_timestamp(floor(extract(epoch from {column}) / {seconds}) * {seconds}) AS \"time\""
    );
    time_group_alias(&format!("{}{expanded}{}", &sql[..at], &rest[close + 1..]))
}

/// Grafana's macros and the dashboards' variables, expanded over all time.
fn expand(sql: &str, schema: &str, stream: &str) -> String {
    let mut sql = time_group_alias(sql);
    while let Some(at) = sql.find("$__timeFilter(") {
        let rest = &sql[at + "$__timeFilter(".len()..];
        let close = rest.find(')').unwrap();
        let column = rest[..close].to_owned();
        sql = format!(
            "{}{column} BETWEEN '1970-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z'{}",
            &sql[..at],
            &rest[close + 1..]
        );
    }
    sql.replace("$__unixEpochFrom()", "0")
        .replace("$__unixEpochTo()", "4102444800")
        .replace("crowdpulse.", &format!("\"{schema}\"."))
        .replace("$stream", stream)
        .replace("$window", "10s")
}

fn fill(schema_test: &str) -> (String, Db) {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("grafana-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = write_files(
        GeneratorConfig {
            events: 30_000,
            seed: 4,
            streams: 4,
            rate: 100.0,
            start: 1_795_000_000_000,
        },
        &dir.join("events.ndjson"),
        2,
    )
    .unwrap();
    let config = fresh_config(schema_test);
    apply_migrations(&config).unwrap();
    let sink = Arc::new(PostgresSink::start(&config, INTERVAL).unwrap());
    run_into(
        BoundedRun {
            analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
            plan: Plan::new(PipelineConfig::default()).unwrap(),
            cluster: Cluster::local(2),
            counters: Arc::default(),
            sources: Sources::files(files),
        },
        vec![Arc::clone(&sink) as Arc<dyn Sink>],
        Some(sink.lead()),
        None,
    )
    .unwrap();
    (config.schema, Db::connect())
}

#[test]
fn every_panel_query_runs_on_the_schema_and_finds_rows() {
    let (schema, db) = fill("grafana");
    // The busiest stream, as a user would pick it from the variable.
    let stream = db.value(&format!(
        "SELECT stream_id FROM \"{schema}\".stream_totals ORDER BY chat_messages DESC LIMIT 1"
    ));
    let mut checked = 0;
    for (file, dashboard) in dashboards() {
        let variables = dashboard["templating"]["list"].as_array().unwrap().iter();
        let queries = variables
            .filter_map(|v| v["query"].as_str().map(|q| (v["name"].to_string(), q)))
            .chain(
                dashboard["panels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|panel| {
                        let title = panel["title"].to_string();
                        panel["targets"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter_map(move |t| t["rawSql"].as_str().map(|q| (title.clone(), q)))
                    }),
            );
        for (name, sql) in queries {
            let sql = expand(sql, &schema, &stream);
            let rows = db.try_column(&format!("SELECT count(*) FROM ({sql}) AS panel"));
            match rows {
                Ok(count) => assert_ne!(count, ["0"], "{file} {name} finds no rows:\n{sql}"),
                Err(error) => panic!("{file} {name} fails: {error}\n{sql}"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} queries");
    db.execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}

#[test]
fn every_prometheus_query_names_exported_metrics() {
    let exporter = std::fs::read_to_string(repo().join("api/src/metrics.rs")).unwrap();
    let mut checked = 0;
    for (file, dashboard) in dashboards() {
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let names = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|word| word.starts_with("crowdpulse_"));
                for name in names {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| name.strip_suffix(suffix))
                        .unwrap_or(name);
                    assert!(
                        exporter.contains(&format!("\"{family}\"")),
                        "{file}: {name} is not exported"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 8, "{checked} metric names");
}
