//! Push fan-out against a running `crowdpulse demo` (run by `scripts/bench-fanout`): `--clients`
//! WebSocket clients follow `--streams` load streams evenly while `--rate` events/s are posted
//! to those streams. Every update of one stream at one frontier reaches all of that stream's
//! clients; a client's latency is its receipt time minus the first receipt of that update by any
//! client, which on loopback is within microseconds of the server sending it: the fan-out delay.
//! Prints p50/p99/max of it; and of the push delay: receipt minus the update's `computed_at`
//! (when the server's store reached the update's frontier, epoch ms on the same clock: the
//! frontier's move). And how many updates and resyncs (snapshots after falling behind)
//! clients got. Every client reads everything the server sends, but only one in `--measure-every`
//! parses the WebSocket frames and measures; the others drain their socket's bytes unparsed, so
//! the load client's own CPU (on the same cores as the server) does not stand in for the
//! server's delay. Lists the seconds whose worst push delay passed `STALL_MS`, so that a stall
//! can be placed in the run (and told from a steady backlog). Reports the bytes the clients
//! received per second and an update's average size: on one host, the kernel copies each byte
//! on both sides of loopback.

#[path = "support/frontier.rs"]
mod frontier;
#[path = "../tests/support/http.rs"]
mod http;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use frontier::{computed_at_of, frontier_of};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http::HttpConnection;

#[derive(Parser)]
struct Options {
    /// The demo's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    address: String,
    /// WebSocket clients.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Streams the clients and the load are spread over.
    #[arg(long, default_value_t = 20)]
    streams: usize,
    /// Events per second posted.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Seconds measured (after every client connected).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// One client in this many parses and measures (1: all).
    #[arg(long, default_value_t = 10)]
    measure_every: usize,
}

/// First receipt of each (stream, frontier) update, per stream.
type FirstSeen = Vec<Mutex<HashMap<u64, Instant>>>;

/// A second whose worst push delay passes this is listed as a stall.
const STALL_MS: u64 = 250;

#[derive(Default)]
struct Counts {
    updates: AtomicU64,
    /// Bytes of the updates' JSON the measuring clients parsed (no snapshot, no frame header:
    /// beside the drained frames' bytes these differ by well under 1%).
    update_bytes: AtomicU64,
    /// Bytes the draining clients read (frames, headers included).
    drained_bytes: AtomicU64,
    snapshots: AtomicU64,
    /// The worst push delay (µs) in each second of the measurement.
    worst_by_second: Vec<AtomicU64>,
}

async fn follow(
    options: Arc<Options>,
    index: usize,
    first_seen: Arc<FirstSeen>,
    counts: Arc<Counts>,
    measuring: Arc<AtomicBool>,
    measuring_since: Arc<OnceLock<Instant>>,
    stop: Arc<AtomicBool>,
) -> [Histogram<u64>; 2] {
    let stream = index % options.streams;
    let url = format!("ws://{}/v1/streams/load-{stream}/live", options.address);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut pushed = histogram.clone();
    let (mut socket, _) = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok(connected) => break connected,
            Err(error) => {
                if index == 0 {
                    eprintln!("connecting: {error}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await
            }
        }
    };
    if !index.is_multiple_of(options.measure_every.max(1)) {
        drain(&mut socket, &counts, &stop).await;
        return [histogram, pushed];
    }
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(500), socket.next()).await
        else {
            continue;
        };
        let now = Instant::now();
        let Ok(text) = message.to_text() else {
            continue;
        };
        if text.contains("\"type\":\"snapshot\"") {
            counts.snapshots.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Some(frontier) = frontier_of(text) else {
            continue;
        };
        counts.updates.fetch_add(1, Ordering::Relaxed);
        counts
            .update_bytes
            .fetch_add(text.len() as u64, Ordering::Relaxed);
        let first = *first_seen[stream]
            .lock()
            .unwrap()
            .entry(frontier)
            .or_insert(now);
        if measuring.load(Ordering::Relaxed) {
            let micros = now.saturating_duration_since(first).as_micros() as u64;
            histogram.saturating_record(micros.max(1));
            if let Some(computed_at) = computed_at_of(text) {
                let received = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                let micros = received.saturating_sub(computed_at * 1_000);
                pushed.saturating_record(micros.max(1));
                let second = measuring_since
                    .get()
                    .map_or(0, |since| now.saturating_duration_since(*since).as_secs());
                if let Some(worst) = counts.worst_by_second.get(second as usize) {
                    worst.fetch_max(micros, Ordering::Relaxed);
                }
            }
        }
    }
    [histogram, pushed]
}

/// A client that does not measure: takes its snapshot as a frame (so `main` knows it is
/// connected), then reads and discards the socket's bytes until `stop`.
async fn drain(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    counts: &Counts,
    stop: &AtomicBool,
) {
    use tokio::io::AsyncReadExt;
    if let Some(Ok(_snapshot)) = socket.next().await {
        counts.snapshots.fetch_add(1, Ordering::Relaxed);
    }
    let raw = socket.get_mut();
    let mut buffer = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(500), raw.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(read)) => {
                counts
                    .drained_bytes
                    .fetch_add(read as u64, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
}

fn post_load(options: Arc<Options>, stop: Arc<AtomicBool>) {
    let mut connection = HttpConnection::open(&options.address);
    let batch = 100u64;
    let interval = Duration::from_secs_f64(batch as f64 / options.rate as f64);
    let start = Instant::now();
    let mut index = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let scheduled = start + interval * index as u32;
        if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let body: String = (0..batch)
            .map(|i| {
                let n = index * batch + i;
                let stream = n % options.streams as u64;
                format!(
                    "{{\"type\":\"reaction\",\"stream_id\":\"load-{stream}\",\"user_id\":\"u{}\",\"emoji\":\"🔥\"}}\n",
                    n % 5_000
                )
            })
            .collect();
        connection.request(
            "POST",
            "/v1/events",
            Some(("application/x-ndjson", body.as_bytes())),
        );
        index += 1;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = Arc::new(Options::parse());
    let first_seen: Arc<FirstSeen> =
        Arc::new((0..options.streams).map(|_| Mutex::default()).collect());
    let counts = Arc::new(Counts {
        worst_by_second: (0..=options.seconds).map(|_| AtomicU64::new(0)).collect(),
        ..Counts::default()
    });
    let (measuring, measuring_since, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(OnceLock::new()),
        Arc::new(AtomicBool::new(false)),
    );
    let began = Instant::now();
    let clients: Vec<_> = (0..options.clients)
        .map(|index| {
            tokio::spawn(follow(
                Arc::clone(&options),
                index,
                Arc::clone(&first_seen),
                Arc::clone(&counts),
                Arc::clone(&measuring),
                Arc::clone(&measuring_since),
                Arc::clone(&stop),
            ))
        })
        .collect();
    // Connected when every client had its snapshot.
    while counts.snapshots.load(Ordering::Relaxed) < options.clients as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            began.elapsed() < Duration::from_secs(300),
            "clients did not all connect"
        );
    }
    println!(
        "{} clients connected in {:.1} s",
        options.clients,
        began.elapsed().as_secs_f64()
    );
    let load_stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (options, load_stop) = (Arc::clone(&options), Arc::clone(&load_stop));
        std::thread::spawn(move || post_load(options, load_stop))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = |counts: &Counts| {
        counts.update_bytes.load(Ordering::Relaxed) + counts.drained_bytes.load(Ordering::Relaxed)
    };
    let (updates, snapshots, update_bytes, bytes) = (
        counts.updates.load(Ordering::Relaxed),
        counts.snapshots.load(Ordering::Relaxed),
        counts.update_bytes.load(Ordering::Relaxed),
        received(&counts),
    );
    measuring_since.get_or_init(Instant::now);
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let updates = counts.updates.load(Ordering::Relaxed) - updates;
    let resyncs = counts.snapshots.load(Ordering::Relaxed) - snapshots;
    let update_bytes = counts.update_bytes.load(Ordering::Relaxed) - update_bytes;
    let bytes = received(&counts) - bytes;
    load_stop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut pushed = total.clone();
    for client in clients {
        if let Ok([histogram, pushed_client]) = client.await {
            total.add(histogram).expect("same bounds");
            pushed.add(pushed_client).expect("same bounds");
        }
    }
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1_000.0;
    println!(
        "{} streams, {} events/s, {} s: {} measuring clients received {} updates ({:.0}/s), {} resyncs; fan-out delay p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        options.streams,
        options.rate,
        options.seconds,
        options.clients.div_ceil(options.measure_every.max(1)),
        updates,
        updates as f64 / options.seconds as f64,
        resyncs,
        ms(0.5),
        ms(0.99),
        total.max() as f64 / 1_000.0
    );
    println!(
        "bytes: an update's JSON averages {:.0} bytes; all clients received {:.0} MB/s",
        update_bytes as f64 / updates.max(1) as f64,
        bytes as f64 / options.seconds as f64 / 1e6
    );
    let ms = |q: f64| pushed.value_at_quantile(q) as f64 / 1_000.0;
    println!(
        "push delay from the frontier move (receipt - computed_at, ms clock): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(0.5),
        ms(0.99),
        pushed.max() as f64 / 1_000.0
    );
    let stalls: Vec<String> = counts
        .worst_by_second
        .iter()
        .enumerate()
        .filter_map(|(second, worst)| {
            let ms = worst.load(Ordering::Relaxed) / 1_000;
            (ms > STALL_MS).then(|| format!("{second} s: {ms} ms"))
        })
        .collect();
    println!(
        "seconds of the measurement whose worst push delay passed {STALL_MS} ms: {}",
        if stalls.is_empty() {
            "none".to_string()
        } else {
            stalls.join(", ")
        }
    );
}
