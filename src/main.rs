//! The `crowdpulse` command line: wiring only; the work lives in the library crates.

use std::io::{stdin, stdout, BufWriter};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crowdpulse_api::demo::{run_until_ctrl_c, LiveOptions};
use crowdpulse_connectors::config::Config;
use crowdpulse_connectors::generator::{write_files, GeneratorConfig};
use crowdpulse_connectors::process::{process_files, ProcessOptions};
use crowdpulse_connectors::sentiment_lines::score_lines;
use crowdpulse_dataflow::config::Span;
use crowdpulse_dataflow::timestamp::parse_rfc3339;

/// Records, deltas and rows are many small allocations; mimalloc's thread-local free lists
/// handle them markedly faster than glibc malloc (measured with scripts/bench-process).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "crowdpulse",
    version,
    about = "Real-time audience analytics for live streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bounded run over NDJSON files (one file = one partition); writes every table's final rows.
    Process {
        /// Input file; repeat for more partitions.
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        /// Output NDJSON file.
        #[arg(long)]
        output: PathBuf,
        /// Worker threads (default: cluster.workers from the config).
        #[arg(long)]
        workers: Option<usize>,
        /// Configuration file (workers.toml format).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Scores each stdin line; writes one JSON object per line.
    Sentiment {
        /// Configuration file (for lexicon overrides).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Writes deterministic synthetic events as NDJSON.
    Generate {
        /// Number of records.
        #[arg(long)]
        events: u64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (with --partitions P > 1: FILE-0..FILE-(P-1), split by stream).
        #[arg(long)]
        output: PathBuf,
        /// Number of streams.
        #[arg(long, default_value_t = 20)]
        streams: usize,
        /// Records per second of event time.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Number of output partitions.
        #[arg(long, default_value_t = 1)]
        partitions: usize,
        /// Event time of the first record (RFC 3339); default 2026-01-01T00:00:00Z.
        #[arg(long)]
        start: Option<String>,
    },
    /// Live demo: generated traffic plus HTTP ingest, REST, live push and the dashboard, in
    /// one process; runs until Ctrl-C.
    Demo {
        /// Address to listen on (default: api.bind from the config, 127.0.0.1:8080).
        #[arg(long)]
        bind: Option<String>,
        /// Generated records per second (0: HTTP ingest only).
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        /// Number of generated streams.
        #[arg(long, default_value_t = 20)]
        streams: usize,
        /// Worker threads (default: cluster.workers from the config).
        #[arg(long)]
        workers: Option<usize>,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Watermark delay of the demo's partitions. Demo events are stamped as they are
        /// generated or received, so a short bound keeps the dashboard close to real time.
        #[arg(long, default_value = "500ms")]
        max_out_of_orderness: String,
        /// Granularity of event time. An event shows on the dashboard once the watermark has
        /// passed its tick, so a fine tick keeps the push latency close to the watermark delay
        /// (measured with scripts/bench-demo: 10 ms ticks cut the p99 from ~790 to ~540 ms).
        #[arg(long, default_value = "10ms")]
        tick: String,
        /// Configuration file (workers.toml format).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Config::load(path.map(PathBuf::as_path), std::env::vars()).context("loading configuration")
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            // warp logs every client that hangs up mid-answer (a closed SSE tab) as an error
            // of its server; that is normal traffic, so it is off unless RUST_LOG asks for it.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,warp::server=off".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Process {
            inputs,
            output,
            workers,
            config,
        } => {
            let config = load_config(config.as_ref())?;
            let workers = workers.unwrap_or(config.cluster.workers);
            let summary = process_files(&ProcessOptions {
                inputs,
                output,
                workers,
                config,
            })?;
            eprintln!(
                "read {} events with {workers} workers: {} valid, {} late, {} dead-lettered; {} rows written; {:.3} s, {:.0} events/s",
                summary.records,
                summary.events,
                summary.late,
                summary.dead_lettered,
                summary.rows,
                summary.elapsed.as_secs_f64(),
                summary.records_per_second()
            );
        }
        Command::Sentiment { config } => {
            let analyzer = load_config(config.as_ref())?.sentiment.analyzer()?;
            score_lines(&analyzer, stdin().lock(), BufWriter::new(stdout().lock()))
                .context("scoring stdin")?;
        }
        Command::Generate {
            events,
            seed,
            output,
            streams,
            rate,
            partitions,
            start,
        } => {
            anyhow::ensure!(
                rate > 0.0 && rate.is_finite(),
                "--rate must be a positive number"
            );
            anyhow::ensure!(streams > 0, "--streams must be >= 1");
            let mut config = GeneratorConfig {
                events,
                seed,
                streams,
                rate,
                ..GeneratorConfig::default()
            };
            if let Some(start) = start {
                config.start = parse_rfc3339(&start).context("--start")?;
            }
            for path in write_files(config, &output, partitions)? {
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Demo {
            bind,
            rate,
            streams,
            workers,
            seed,
            max_out_of_orderness,
            tick,
            config,
        } => {
            anyhow::ensure!(
                rate >= 0.0 && rate.is_finite(),
                "--rate must be a number >= 0"
            );
            anyhow::ensure!(streams > 0, "--streams must be >= 1");
            let mut config = load_config(config.as_ref())?;
            config.pipeline.max_out_of_orderness =
                Span::parse(&max_out_of_orderness).context("--max-out-of-orderness")?;
            config.pipeline.tick = Span::parse(&tick).context("--tick")?;
            if let Some(bind) = bind {
                config.api.bind = bind;
            }
            let options = LiveOptions {
                workers: workers.unwrap_or(config.cluster.workers),
                rate,
                streams,
                seed,
                analyzer: config.sentiment.analyzer()?,
                pipeline: config.pipeline,
                api: config.api,
            };
            run_until_ctrl_c(&options, |address| {
                // Scripts and tests wait for this line to learn the port.
                println!("crowdpulse demo: dashboard at http://{address}/");
            })?;
        }
    }
    Ok(())
}
