//! The `crowdpulse` command line: wiring only; the work lives in the library crates.

use std::io::{stdin, stdout, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crowdpulse_connectors::config::{Config, MAX_WORKERS};
use crowdpulse_connectors::download_generator::DownloadGenerator;
use crowdpulse_connectors::generator::{write_files, GeneratorConfig};
use crowdpulse_connectors::kafka_generate::{produce_downloads, produce_generated, Destination};
use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_connectors::position::Position;
use crowdpulse_connectors::postgres::apply_migrations;
use crowdpulse_connectors::sentiment_lines::score_lines;
use crowdpulse_connectors::sink::Sink;
use crowdpulse_connectors::summarizer::SummaryTexts;
use crowdpulse_dataflow::codec::Format;
use crowdpulse_dataflow::config::Span;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::timestamp::parse_rfc3339;
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::live::{run_until_stopped, Feed, LiveOptions};
use crowdpulse_runtime::process::{process_files, ProcessOptions};
use crowdpulse_runtime::replay::{replay, ReplayOptions};
use crowdpulse_runtime::run::{self, backfill, RowsOutput, RunOptions};

mod allocator;

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
        #[arg(long, value_parser = parse_workers)]
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
        /// Number of records (with --duration: rate x duration).
        #[arg(long, required_unless_present = "duration")]
        events: Option<u64>,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (with --partitions P > 1: FILE-0..FILE-(P-1), split by stream).
        #[arg(long, required_unless_present = "kafka", conflicts_with = "kafka")]
        output: Option<PathBuf>,
        /// Produce to these Kafka brokers instead of writing files (keyed by stream_id).
        #[arg(long)]
        kafka: Option<String>,
        /// With --kafka: every event to this topic (default: each kind to its topic per the
        /// config's [kafka] topics).
        #[arg(long, requires = "kafka")]
        topic: Option<String>,
        /// With --kafka: produce for this long at --rate events per wall-clock second, event
        /// times starting now (e.g. 30s); without it, --events are produced as fast as possible.
        #[arg(long, requires = "kafka")]
        duration: Option<String>,
        /// Configuration file (for --kafka's topics).
        #[arg(long)]
        config: Option<PathBuf>,
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
        /// Content-download records (the `content_downloads` preset's fields) for this
        /// configured kind instead of events: to its topic in its format with --kafka, or as
        /// JSON lines to --output.
        #[arg(long, conflicts_with = "topic")]
        kind: Option<String>,
        /// With --kafka: produce without keys, each message to a random partition, so every
        /// stream is spread over every partition (as producers without keys write), instead of
        /// keeping each stream in one partition.
        #[arg(long, requires = "kafka", conflicts_with = "kind")]
        no_key: bool,
    },
    /// Live run over Kafka (`[kafka]` in the config): final rows to stdout as NDJSON, the HTTP
    /// API, live push and dashboard on api.bind, dead letters to the dead-letter topic; runs
    /// until Ctrl-C.
    Run {
        /// Configuration file (workers.toml format).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Kafka brokers (default: kafka.brokers from the config).
        #[arg(long)]
        brokers: Option<String>,
        /// Where to start: earliest, latest, topic:partition:offset[,...], RFC 3339, now-15m
        /// (default: with [postgres], the latest checkpoint when there is one; else kafka.start
        /// from the config). Given explicitly, any checkpoint is ignored and later replaced.
        #[arg(long)]
        from: Option<String>,
        /// Address of the API (default: api.bind from the config).
        #[arg(long)]
        bind: Option<String>,
        /// Worker threads (default: cluster.workers from the config).
        #[arg(long, value_parser = parse_workers)]
        workers: Option<usize>,
        /// Stop at this position (latest, topic:partition:offset[,...], RFC 3339, now-1m): a
        /// bounded backfill that exits when done, without the API.
        #[arg(long)]
        until: Option<String>,
        /// Final rows as NDJSON to this file ("-": stdout). Default: stdout, or nothing when
        /// [postgres] is configured.
        #[arg(long)]
        output: Option<PathBuf>,
        /// This process's index in cluster.processes (0-based); a StatefulSet pod name such as
        /// crowdpulse-2 gives its ordinal.
        #[arg(long, env = "CROWDPULSE_PROCESS", default_value = "0", value_parser = parse_process)]
        process: usize,
    },
    /// Applies the Postgres schema migrations ([postgres] in the config) and exits.
    Migrate {
        /// Configuration file (workers.toml format).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Bounded run over Kafka from --from to --until; writes every table's final rows as sorted
    /// NDJSON and shows progress on stderr.
    Replay {
        /// Where to start: earliest, latest, topic:partition:offset[,...], RFC 3339, now-15m.
        #[arg(long)]
        from: String,
        /// Where to stop: latest (everything present at start), topic:partition:offset[,...]
        /// (exclusive), RFC 3339 or now-1m (messages before it).
        #[arg(long, default_value = "latest")]
        until: String,
        /// Output NDJSON file (default: stdout).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Kafka brokers (default: kafka.brokers from the config).
        #[arg(long)]
        brokers: Option<String>,
        /// Worker threads (default: cluster.workers from the config).
        #[arg(long, value_parser = parse_workers)]
        workers: Option<usize>,
        /// No progress line.
        #[arg(long)]
        quiet: bool,
        /// Configuration file (workers.toml format).
        #[arg(long)]
        config: Option<PathBuf>,
        /// This process's index in cluster.processes (0-based); a StatefulSet pod name such as
        /// crowdpulse-2 gives its ordinal.
        #[arg(long, env = "CROWDPULSE_PROCESS", default_value = "0", value_parser = parse_process)]
        process: usize,
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
        #[arg(long, value_parser = parse_workers)]
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

/// `--process`: an index, or a name ending in `-<index>` (a StatefulSet pod's).
fn parse_process(value: &str) -> Result<usize, String> {
    let digits = match value.rsplit_once('-') {
        Some((name, digits)) if !name.is_empty() => digits,
        _ => value,
    };
    digits
        .parse()
        .map_err(|_| format!("{value:?} is neither a process index nor a name ending in -<index>"))
}

/// `--workers`: 1 to the configuration's limit (0 was taken for 1 in silence).
fn parse_workers(value: &str) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=MAX_WORKERS).contains(n))
        .ok_or_else(|| format!("{value:?} is not a number of workers from 1 to {MAX_WORKERS}"))
}

/// The single process `process`, `demo` and `sentiment` run in.
fn this_process(config: &Config, workers: Option<usize>) -> Cluster {
    Cluster::local(workers.unwrap_or(config.cluster.workers))
}

/// How a summary names this process's share of a cluster's work (nothing for one process).
fn share(cluster: &Cluster) -> String {
    match cluster.processes.len() {
        0 | 1 => String::new(),
        n => {
            let (sent, received) = crowdpulse_runtime::cluster::traffic();
            format!(
                "(process {} of {n}, its partitions; {sent} bytes sent to and {received} received from the other processes) ",
                cluster.process
            )
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Config::load(path.map(PathBuf::as_path), std::env::vars()).context("loading configuration")
}

/// The configuration with `--brokers` (when given) replacing `kafka.brokers`.
fn load_kafka_config(path: Option<&PathBuf>, brokers: Option<String>) -> anyhow::Result<Config> {
    let mut config = load_config(path)?;
    if let Some(brokers) = brokers {
        config.kafka.brokers = brokers;
    }
    Ok(config)
}

/// Writes `lines` to `path`, one per line.
fn write_lines(path: &Path, lines: impl Iterator<Item = String>) -> anyhow::Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path).with_context(|| path.display().to_string())?;
    let mut out = std::io::BufWriter::new(file);
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

/// The pipeline plan, resolved once from the configuration (after command-line overrides).
fn plan(config: &Config) -> anyhow::Result<Plan> {
    config.plan().context("pipeline settings")
}

/// Runs a live server over `feed` until Ctrl-C; `announce` learns its address.
fn serve_live(
    config: Config,
    workers: Option<usize>,
    (feed, sinks): (Feed, Vec<Arc<dyn Sink>>),
    announce: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    let options = LiveOptions {
        cluster: this_process(&config, workers),
        feed,
        sinks,
        lead: None,
        checkpoints: None,
        postgres: None,
        history: None,
        summarizer: config
            .summarizer
            .enabled()
            .then(|| SummaryTexts::start(&config.summarizer, None).map(Arc::new))
            .transpose()?,
        analyzer: config.sentiment.analyzer()?,
        plan: plan(&config)?,
        api: config.api,
    };
    run_until_stopped(&options, announce)?;
    Ok(())
}

/// Opts this process out of transparent huge pages. Where the kernel backs every anonymous mapping
/// with 2 MiB pages (`enabled = always`, as on Debian), each page the allocator touches afresh,
/// or again after returning it, is zeroed whole: a profile of `process` put 15-20% of its time
/// in the kernel's `clear_page`; with 4 KiB pages it ran faster in less memory (README,
/// Performance). The flag is inherited by child processes, and the binary starts none.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process's memory map; no pointer is
    // passed, and the variadic arguments are given as the `unsigned long` the kernel reads (it
    // refuses the call unless the unused ones are zero). Failure (an old kernel) leaves the
    // default, which is only slower.
    unsafe {
        let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused);
    }
}

fn main() -> anyhow::Result<()> {
    without_huge_pages();
    allocator::report_to_metrics();
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
            let cluster = this_process(&config, workers);
            let summary = process_files(&ProcessOptions {
                inputs,
                output,
                cluster: cluster.clone(),
                plan: plan(&config)?,
                config,
            })?;
            eprintln!("read {}", summary.report(cluster.total_workers()));
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
            kafka,
            topic,
            duration,
            config,
            streams,
            rate,
            partitions,
            start,
            kind,
            no_key,
        } => {
            anyhow::ensure!(
                rate > 0.0 && rate.is_finite(),
                "--rate must be a positive number"
            );
            anyhow::ensure!(streams > 0, "--streams must be >= 1");
            // (clap's `requires` is not enforced once --output, which conflicts with --kafka, is
            // given.)
            anyhow::ensure!(
                kafka.is_some() || (topic.is_none() && duration.is_none() && !no_key),
                "--topic, --duration and --no-key need --kafka"
            );
            anyhow::ensure!(
                duration.is_none() || (events.is_none() && start.is_none()),
                "--duration makes rate x duration events starting now: leave out --events and --start"
            );
            let mut generator = GeneratorConfig {
                events: events.unwrap_or(0),
                seed,
                streams,
                rate,
                ..GeneratorConfig::default()
            };
            if let Some(start) = start {
                generator.start = parse_rfc3339(&start).context("--start")?;
            }
            let paced = duration.is_some();
            if let Some(duration) = duration {
                let span = Span::parse(&duration).context("--duration")?;
                generator.events = (rate * span.0 as f64 / 1000.0).ceil() as u64;
                generator.start = wall_clock_ms();
            }
            if let Some(kind) = kind {
                let plan = plan(&load_config(config.as_ref())?)?;
                let spec = plan
                    .kinds()
                    .iter()
                    .find(|k| k.name == kind)
                    .with_context(|| format!("no kind {kind:?} in [pipeline.kinds]"))?;
                let downloads = || {
                    let g = &generator;
                    DownloadGenerator::new(g.events, g.seed, g.rate, g.start)
                };
                match (kafka, output) {
                    (Some(brokers), _) => {
                        let summary = produce_downloads(&brokers, spec, downloads(), rate, paced)?;
                        eprintln!(
                            "produced {} {kind} records to {} on {brokers} in {:.3} s",
                            summary.delivered,
                            spec.topic,
                            summary.elapsed.as_secs_f64()
                        );
                    }
                    (None, Some(output)) => {
                        write_lines(&output, downloads().map(|(_, record)| record.to_string()))?;
                        eprintln!("wrote {}", output.display());
                    }
                    (None, None) => anyhow::bail!("--output or --kafka is required"),
                }
                return Ok(());
            }
            match (kafka, output) {
                (Some(brokers), _) => {
                    let destination = match topic {
                        Some(topic) => Destination::Topic(topic, Format::Json),
                        None => Destination::ByKind(load_config(config.as_ref())?.kafka),
                    };
                    let summary =
                        produce_generated(&brokers, &destination, generator, paced, !no_key)?;
                    eprintln!(
                        "produced {} events to {brokers} in {:.3} s",
                        summary.delivered,
                        summary.elapsed.as_secs_f64()
                    );
                }
                (None, Some(output)) => {
                    for path in write_files(generator, &output, partitions)? {
                        eprintln!("wrote {}", path.display());
                    }
                }
                (None, None) => anyhow::bail!("--output or --kafka is required"),
            }
        }
        Command::Migrate { config } => {
            let config = load_config(config.as_ref())?;
            anyhow::ensure!(
                config.postgres.enabled(),
                "no Postgres configured: set postgres.url or CROWDPULSE__POSTGRES__URL"
            );
            let applied = apply_migrations(&config.postgres)?;
            eprintln!(
                "schema {} is up to date ({} migrations applied now: {applied:?})",
                config.postgres.schema,
                applied.len()
            );
        }
        Command::Run {
            config,
            brokers,
            from,
            bind,
            workers,
            until,
            output,
            process,
        } => {
            if until.is_none() {
                allocator::release_memory_as_it_goes();
            }
            let mut config = load_kafka_config(config.as_ref(), brokers)?;
            anyhow::ensure!(
                config.kafka.enabled(),
                "no Kafka brokers configured: set kafka.brokers, CROWDPULSE__KAFKA__BROKERS or --brokers"
            );
            if let Some(bind) = bind {
                config.api.bind = bind;
            }
            let start = Position::parse_start(from.as_deref().unwrap_or(&config.kafka.start))
                .context("--from (or kafka.start)")?;
            let cluster = Cluster::new(&config.cluster, workers, process)?
                .with_sinks_on(config.api.serve_on)?;
            let options = RunOptions {
                cluster,
                plan: plan(&config)?,
                from: start,
                resume: from.is_none(),
                until: until
                    .map(|until| Position::parse_end(&until))
                    .transpose()
                    .context("--until")?,
                output: RowsOutput::choose(output, config.postgres.enabled()),
                config,
            };
            if options.until.is_some() {
                let summary = backfill(&options)?;
                eprintln!(
                    "backfilled {}{}",
                    share(&options.cluster),
                    summary.report(options.cluster.workers)
                );
            } else {
                run::live(options, |address| {
                    // stdout may carry the rows; scripts and tests read the address here.
                    eprintln!("crowdpulse run: api at http://{address}/");
                })?;
            }
        }
        Command::Replay {
            from,
            until,
            output,
            brokers,
            workers,
            quiet,
            config,
            process,
        } => {
            let config = load_kafka_config(config.as_ref(), brokers)?;
            let options = ReplayOptions {
                cluster: Cluster::new(&config.cluster, workers, process)?,
                plan: plan(&config)?,
                from: Position::parse_start(&from).context("--from")?,
                until: Position::parse_end(&until).context("--until")?,
                output,
                progress: !quiet,
                config,
            };
            let summary = replay(&options)?;
            eprintln!(
                "replayed {}{}",
                share(&options.cluster),
                summary.report(options.cluster.workers)
            );
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
            allocator::release_memory_as_it_goes();
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
            let feed = Feed::Generated {
                rate,
                streams,
                seed,
            };
            serve_live(config, workers, (feed, Vec::new()), |address| {
                // Scripts and tests wait for this line to learn the port.
                println!("crowdpulse demo: dashboard at http://{address}/");
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_process;

    #[test]
    fn a_process_is_an_index_or_a_pod_name_ending_in_one() {
        assert_eq!(parse_process("2"), Ok(2));
        assert_eq!(parse_process("crowdpulse-1"), Ok(1));
        assert_eq!(parse_process("my-app-12"), Ok(12));
        for refused in ["-1", "crowdpulse", "crowdpulse-", "", "1.5"] {
            let error = parse_process(refused).unwrap_err();
            assert!(
                error.contains("neither a process index"),
                "{refused}: {error}"
            );
        }
    }
}
