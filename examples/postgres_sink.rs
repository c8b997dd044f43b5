//! The Postgres sink alone, for `scripts/bench-postgres`: computes the final rows of generated
//! events (from files, before any timing), then times the sink writing them into a fresh schema
//! as one flush, i.e. one transaction, first into empty tables and then again over the same rows
//! (the conflict path a restart takes). Nothing else competes for the cores meanwhile.
//! Usage: postgres_sink --url URL [--events 1000000] [--streams 100]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdpulse_connectors::generator::{write_files, GeneratorConfig};
use crowdpulse_connectors::postgres::{apply_migrations, PostgresConfig, PostgresSink};
use crowdpulse_connectors::sink::{Flush, Sink};
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::process::{run_to_final_rows, BoundedRun};
use crowdpulse_runtime::sources::Sources;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let url = arg("--url").ok_or_else(|| anyhow::anyhow!("--url is required"))?;
    let events: u64 = arg("--events").map_or(Ok(1_000_000), |v| v.parse())?;
    let streams: usize = arg("--streams").map_or(Ok(100), |v| v.parse())?;
    let dir = std::env::temp_dir().join(format!("crowdpulse-sink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let files = write_files(
        GeneratorConfig {
            events,
            seed: 1,
            streams,
            rate: 10_000.0,
            start: 1_795_000_000_000,
        },
        &dir.join("events.ndjson"),
        4,
    )?;
    let rows = run_to_final_rows(BoundedRun {
        analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
        plan: Plan::new(PipelineConfig::default())?.with_live_rows(false),
        cluster: Cluster::local(2),
        counters: Arc::default(),
        sources: Sources::files(files),
    })?;
    std::fs::remove_dir_all(&dir)?;
    let config = PostgresConfig {
        url,
        schema: format!("sink_bench_{}", std::process::id()),
        ..PostgresConfig::default()
    };
    apply_migrations(&config)?;
    let flush = Arc::new(Flush {
        frontier: None,
        updates: rows.into_iter().map(|row| (row, 0, 1)).collect(),
        ..Flush::default()
    });
    for pass in ["into empty tables", "over the same rows"] {
        let sink = PostgresSink::start(&config, Duration::ZERO)?;
        let started = Instant::now();
        sink.flush(&flush);
        sink.finish()?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "sink {pass}: {} rows in {seconds:.3} s, {:.0} rows/s (one transaction)",
            flush.updates.len(),
            flush.updates.len() as f64 / seconds
        );
    }
    println!("schema {}", config.schema);
    Ok(())
}
