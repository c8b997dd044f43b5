//! Soak load for a running `crowdpulse run` (driven by `scripts/soak`): `--rate` events/s
//! posted to `/v1/events` over streams that churn (a new stream id every second, each
//! speaking for `--lifetime` seconds, then going quiet for good), while `--clients` WebSocket
//! clients follow random live streams and leave after a few seconds. Every `--sample` seconds it
//! reads the server's RSS (`--pid`) and the heap, active pages and resident pages its allocator
//! reports (`/metrics`). Prints the series and their slopes after `--warmup`, the push lag (a
//! client's receipt time minus the update's frontier: the out-of-orderness bound, the tick and
//! the push delay), and what it sent, per table column, for the final check.

#[path = "support/frontier.rs"]
mod frontier;
#[path = "../tests/support/http.rs"]
mod http;
#[path = "support/proc_status.rs"]
mod proc_status;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use frontier::frontier_of;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http::HttpConnection;
use proc_status::status_mib;

#[derive(Parser)]
struct Options {
    /// The server's address.
    #[arg(long)]
    address: String,
    /// The server's process id (for its RSS).
    #[arg(long)]
    pid: u32,
    /// The broker's process id, when it runs here: each sample then says what share of a core
    /// it used since the previous one (a broker falling behind delays the load and the input).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Events per second posted.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 1_800)]
    seconds: u64,
    /// Seconds each stream speaks before going quiet.
    #[arg(long, default_value_t = 60)]
    lifetime: u64,
    /// WebSocket clients (each follows a live stream for 2 to 20 s, then another).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Seconds between RSS and heap samples.
    #[arg(long, default_value_t = 10)]
    sample: u64,
    /// Seconds before the RSS and heap slopes are measured (the state fills first: the view store's
    /// retention, and each stream's state until its chat summaries' horizon has passed).
    #[arg(long, default_value_t = 900)]
    warmup: u64,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// CPU seconds (user + system) process `pid` has used. /proc counts in USER_HZ, which Linux
/// fixes at 100 for user space whatever the kernel's tick.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// The allocator's figures on `/metrics` (none without jemalloc), in MiB, in the order of
/// [`ALLOCATOR_SERIES`]: beside RSS they tell what the program holds (the heap) from the
/// fragmentation of the pages holding it (active) and the freed pages the allocator keeps
/// (resident, with its metadata).
const ALLOCATOR_SERIES: [(&str, &str); 3] = [
    ("heap", "crowdpulse_allocator_allocated_bytes "),
    ("active", "crowdpulse_allocator_active_bytes "),
    ("resident", "crowdpulse_allocator_resident_bytes "),
];

/// The streams each part holds, from `/metrics`: whether the state that grows is more streams
/// or more per stream.
const STREAM_SERIES: [(&str, &str); 3] = [
    ("active streams", "crowdpulse_streams{state=\"active\"} "),
    ("quiet streams", "crowdpulse_streams{state=\"quiet\"} "),
    ("stream views", "crowdpulse_view_store_streams "),
];

/// One scrape of `/metrics`: the allocator's figures in MiB and the stream counts.
fn scrape(address: &str) -> Option<([f64; 3], [f64; 3])> {
    let (status, body) = HttpConnection::open(address).request("GET", "/metrics", None);
    if status != 200 {
        return None;
    }
    let gauge = |prefix: &str| -> Option<f64> {
        body.lines()
            .find_map(|line| line.strip_prefix(prefix))?
            .parse()
            .ok()
    };
    let [heap, active, resident] =
        ALLOCATOR_SERIES.map(|(_, prefix)| gauge(prefix).map(|b| b / f64::from(1 << 20)));
    let [streams, quiet, views] = STREAM_SERIES.map(|(_, prefix)| gauge(prefix));
    Some(([heap?, active?, resident?], [streams?, quiet?, views?]))
}

/// Least-squares slope of `(seconds, MiB)` samples, in MiB per 10 minutes.
fn slope_per_10_min(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    let (mt, mv) = (
        samples.iter().map(|s| s.0).sum::<f64>() / n,
        samples.iter().map(|s| s.1).sum::<f64>() / n,
    );
    let cov: f64 = samples.iter().map(|s| (s.0 - mt) * (s.1 - mv)).sum();
    let var: f64 = samples.iter().map(|s| (s.0 - mt).powi(2)).sum();
    600.0 * cov / var
}

/// The streams speaking at second `second` of the run.
fn live_streams(second: u64, lifetime: u64) -> std::ops::RangeInclusive<u64> {
    second.saturating_sub(lifetime.max(1) - 1)..=second
}

/// Stream `n`'s id. Ids (and event ids) are of one length all run long: ids growing a digit
/// (`soak-999` to `soak-1000` at 1,000 s) moved every id the engine holds to the allocator's next
/// size class, a step of the heap in the middle of the span the slopes are fitted over.
fn stream_id(n: u64) -> String {
    format!("soak-{n:06}")
}

/// Connections posting the load, each waiting for its answers (ingest into Kafka answers once
/// the broker confirmed).
const POSTERS: u64 = 8;

/// Sends poster `poster`'s share of the load: every 20 ms a batch of reactions and chats,
/// round-robin over the live streams, each with a unique `event_id`; batch `index` goes to
/// poster `index % POSTERS`. Returns (reactions, chats) sent and the most any of its batches left late;
/// `lateness_ms` takes the largest lateness since the sampler last took it.
fn post_load(
    options: Arc<Options>,
    began: Instant,
    poster: u64,
    lateness_ms: Arc<AtomicU64>,
) -> (u64, u64, Duration) {
    let mut connection = HttpConnection::open(&options.address);
    let batches_per_second = 50;
    let batch = (options.rate / batches_per_second).max(1);
    let interval = Duration::from_secs(1) / batches_per_second as u32;
    let (mut reactions, mut chats, mut behind) = (0u64, 0u64, Duration::ZERO);
    for index in (poster..).step_by(POSTERS as usize) {
        let scheduled = began + interval * index as u32;
        if scheduled.duration_since(began) >= Duration::from_secs(options.seconds) {
            break;
        }
        match scheduled.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None => {
                let late = Instant::now() - scheduled;
                behind = behind.max(late);
                lateness_ms.fetch_max(late.as_millis() as u64, Ordering::Relaxed);
            }
        }
        let second = scheduled.duration_since(began).as_secs();
        let streams = live_streams(second, options.lifetime);
        let count = streams.end() - streams.start() + 1;
        let mut body = String::with_capacity(batch as usize * 120);
        for n in index * batch..(index + 1) * batch {
            let stream = stream_id(streams.start() + n % count);
            let user = n % 997;
            if n % 4 == 0 {
                chats += 1;
                body.push_str(&format!(
                    "{{\"type\":\"chat\",\"stream_id\":\"{stream}\",\"user_id\":\"u{user}\",\"text\":\"gg PogChamp\",\"event_id\":\"e{n:09}\"}}\n"
                ));
            } else {
                reactions += 1;
                body.push_str(&format!(
                    "{{\"type\":\"reaction\",\"stream_id\":\"{stream}\",\"user_id\":\"u{user}\",\"emoji\":\"🔥\",\"event_id\":\"e{n:09}\"}}\n"
                ));
            }
        }
        let (status, answer) = connection.request(
            "POST",
            "/v1/events",
            Some(("application/x-ndjson", body.as_bytes())),
        );
        assert_eq!(status, 202, "ingest refused a batch: {answer}");
    }
    (reactions, chats, behind)
}

/// One client: follows a live stream for 2 to 20 s, then another, until `stop`.
async fn follow(
    options: Arc<Options>,
    index: usize,
    began: Instant,
    lag: Arc<Mutex<Histogram<u64>>>,
    sessions: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut pick = index as u64 * 7919 + 1;
    while !stop.load(Ordering::Relaxed) {
        pick = pick
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let second = began.elapsed().as_secs();
        let streams = live_streams(second, options.lifetime);
        let stream = streams.start() + (pick >> 33) % (streams.end() - streams.start() + 1);
        let stay = Duration::from_secs(2 + (pick >> 40) % 19);
        let url = format!(
            "ws://{}/v1/streams/{}/live",
            options.address,
            stream_id(stream)
        );
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        sessions.fetch_add(1, Ordering::Relaxed);
        let leave = Instant::now() + stay;
        while Instant::now() < leave && !stop.load(Ordering::Relaxed) {
            let Ok(Some(Ok(message))) = tokio::time::timeout_at(leave.into(), socket.next()).await
            else {
                break;
            };
            let Ok(text) = message.to_text() else {
                continue;
            };
            if !text.contains("\"type\":\"update\"") {
                continue;
            }
            if let Some(frontier) = frontier_of(text) {
                let late = wall_ms().saturating_sub(frontier);
                lag.lock().unwrap().saturating_record(late.max(1));
            }
        }
        drop(socket);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = Arc::new(Options::parse());
    let began = Instant::now();
    let lag = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("bounds"),
    ));
    let sessions = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..options.clients)
        .map(|index| {
            tokio::spawn(follow(
                Arc::clone(&options),
                index,
                began,
                Arc::clone(&lag),
                Arc::clone(&sessions),
                Arc::clone(&stop),
            ))
        })
        .collect();
    // Read with each RSS sample, so that a step in memory can be matched to the load (or the
    // broker confirming it) falling behind.
    let lateness_ms = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..POSTERS)
        .map(|poster| {
            let options = Arc::clone(&options);
            let lateness_ms = Arc::clone(&lateness_ms);
            std::thread::spawn(move || post_load(options, began, poster, lateness_ms))
        })
        .collect();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut allocator: [Vec<(f64, f64)>; 3] = Default::default();
    let mut broker_cpu = options
        .broker_pid
        .and_then(cpu_seconds)
        .map(|cpu| (cpu, began.elapsed().as_secs_f64()));
    while !load.iter().all(|poster| poster.is_finished()) {
        if let Some(rss) = status_mib(&options.pid.to_string(), "VmRSS") {
            let at = began.elapsed().as_secs_f64();
            let late = lateness_ms.swap(0, Ordering::Relaxed);
            let broker = match (broker_cpu, options.broker_pid.and_then(cpu_seconds)) {
                (Some((cpu_then, then)), Some(cpu_now)) if at >= then + 1.0 => {
                    broker_cpu = Some((cpu_now, at));
                    format!(
                        ", broker {:.0}% of a core",
                        100.0 * (cpu_now - cpu_then) / (at - then)
                    )
                }
                _ => String::new(),
            };
            let address = options.address.clone();
            let scraped = tokio::task::spawn_blocking(move || scrape(&address))
                .await
                .ok()
                .flatten();
            let figures = scraped.map(|(mib, _)| mib);
            let held = scraped.map_or(String::new(), |(mib, streams)| {
                let mib = ALLOCATOR_SERIES
                    .iter()
                    .zip(mib)
                    .map(|((name, _), mib)| format!(", {name} {mib:.1} MiB"));
                let streams = STREAM_SERIES
                    .iter()
                    .zip(streams)
                    .map(|((name, _), count)| format!(", {name} {count}"));
                mib.chain(streams).collect()
            });
            // The binary's pages count in RSS as its code is first run: not the allocator's.
            let file = status_mib(&options.pid.to_string(), "RssFile").unwrap_or(f64::NAN);
            println!(
                "rss t={at:.0}s {rss:.1} MiB (file-backed {file:.1}){held} (load up to {late} ms behind its schedule{broker})"
            );
            samples.push((at, rss));
            for (series, mib) in allocator.iter_mut().zip(figures.into_iter().flatten()) {
                series.push((at, mib));
            }
        }
        tokio::time::sleep(Duration::from_secs(options.sample)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let (reactions, chats, behind) = load
        .into_iter()
        .map(|poster| poster.join().expect("load thread"))
        .fold((0, 0, Duration::ZERO), |(r, c, b), (pr, pc, pb)| {
            (r + pr, c + pc, b.max(pb))
        });
    println!(
        "the load's batches left at most {:.2} s after their schedule",
        behind.as_secs_f64()
    );
    let after_warmup = |series: &[(f64, f64)]| -> Vec<(f64, f64)> {
        series
            .iter()
            .copied()
            .filter(|(t, _)| *t >= options.warmup as f64)
            .collect()
    };
    let fitted = std::iter::once(("rss", &samples)).chain(
        ALLOCATOR_SERIES
            .iter()
            .map(|(name, _)| *name)
            .zip(&allocator),
    );
    for (what, series) in fitted {
        let series = after_warmup(series);
        if let [(_, first), .., (_, last)] = series[..] {
            println!(
                "{what} after {} s: {first:.1} -> {last:.1} MiB, slope {:.2} MiB per 10 min",
                options.warmup,
                slope_per_10_min(&series)
            );
        }
    }
    let lag = lag.lock().unwrap();
    println!(
        "push lag (receipt - frontier): p50 {} ms, p99 {} ms, max {} ms over {} updates; {} client sessions",
        lag.value_at_quantile(0.5),
        lag.value_at_quantile(0.99),
        lag.max(),
        lag.len(),
        sessions.load(Ordering::Relaxed)
    );
    let streams = options.seconds;
    println!("sent reactions={reactions} chats={chats} streams={streams}");
}
