//! Open-loop HTTP load against a running `crowdpulse demo` (run by `scripts/bench-demo`):
//! batches of chat and reaction events are posted to `POST /v1/events` on a fixed schedule,
//! whatever the answers' latency; probe reactions with unique emojis are posted to one stream
//! whose WebSocket is watched, timing each probe from its POST to the first push that carries
//! it; and `GET /v1/streams/{id}/metrics` is queried alongside. Prints percentiles.

#[path = "../tests/support/http.rs"]
mod http;

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use http::HttpConnection;
use serde_json::Value;

#[derive(Parser)]
struct Options {
    /// The demo's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    address: String,
    /// Events per second posted to /v1/events.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Events per POST.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Connections sharing the ingest schedule.
    #[arg(long, default_value_t = 4)]
    connections: u64,
    /// Streams the load is spread over.
    #[arg(long, default_value_t = 20)]
    streams: u64,
    /// Probe reactions per second.
    #[arg(long, default_value_t = 20)]
    probes: u64,
    /// Metric queries per second.
    #[arg(long, default_value_t = 100)]
    queries: u64,
    /// What the queries ask for (a stream of the load).
    #[arg(long, default_value = "/v1/streams/load-0/metrics?window=10s")]
    query: String,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds to wait for the last probes after the load stops: more than the idle timeout
    /// (5 s), after which wall-clock time moves the watermark past them.
    #[arg(long, default_value_t = 7)]
    drain: u64,
}

const PROBE_STREAM: &str = "probe";

/// Latencies in microseconds, recorded only inside the measured interval.
#[derive(Default)]
struct Samples(Mutex<Vec<u64>>);

impl Samples {
    fn record(&self, started: Instant, measuring: &AtomicBool) {
        if measuring.load(Ordering::Relaxed) {
            self.0
                .lock()
                .unwrap()
                .push(started.elapsed().as_micros() as u64);
        }
    }

    fn report(&self, what: &str) {
        let mut samples = self.0.lock().unwrap().clone();
        samples.sort_unstable();
        let at = |q: f64| {
            let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[index] as f64 / 1000.0
        };
        if samples.is_empty() {
            println!("{what:<34} no samples");
            return;
        }
        println!(
            "{what:<34} n={:<7} p50={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms",
            samples.len(),
            at(0.50),
            at(0.99),
            at(1.0)
        );
    }
}

struct Shared {
    options: Options,
    start: Instant,
    measuring: AtomicBool,
    /// Set when the measured interval ends: senders stop, the push watcher drains.
    sending_stopped: AtomicBool,
    done: AtomicBool,
    posted_events: AtomicU64,
    busy_answers: AtomicU64,
    ingest: Samples,
    push: Samples,
    query: Samples,
    /// Probe emoji → when its POST was sent.
    probes_in_flight: Mutex<HashMap<String, Instant>>,
}

/// The events of batch `index`: mostly chat, a third reactions, over the load streams.
fn batch_body(shared: &Shared, index: u64) -> String {
    let options = &shared.options;
    let mut body = String::with_capacity(options.batch as usize * 90);
    for i in 0..options.batch {
        let n = index * options.batch + i;
        let stream = n % options.streams;
        let user = n % 5_000;
        if n.is_multiple_of(3) {
            let emoji = ["🔥", "😂", "❤️", "👏", "🎉"][(n / 3 % 5) as usize];
            body.push_str(&format!(
                r#"{{"type":"reaction","stream_id":"load-{stream}","user_id":"u{user}","emoji":"{emoji}"}}"#
            ));
        } else {
            body.push_str(&format!(
                r#"{{"type":"chat","stream_id":"load-{stream}","user_id":"u{user}","text":"what a great play {n}"}}"#
            ));
        }
        body.push('\n');
    }
    body
}

/// Connection `lane` posts batches lane, lane + connections, ... at their scheduled times;
/// latency counts from the scheduled time, so a slow answer is not hidden by a late send.
fn post_batches(shared: Arc<Shared>, lane: u64) {
    let options = &shared.options;
    let mut connection = HttpConnection::open(&options.address);
    let batch_interval = Duration::from_secs_f64(options.batch as f64 / options.rate as f64);
    let mut index = lane;
    while !shared.sending_stopped.load(Ordering::Relaxed) {
        let scheduled = shared.start + batch_interval * index as u32;
        if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let body = batch_body(&shared, index);
        let (status, answer) = connection.request(
            "POST",
            "/v1/events",
            Some(("application/x-ndjson", body.as_bytes())),
        );
        match status {
            202 => {
                shared
                    .posted_events
                    .fetch_add(options.batch, Ordering::Relaxed);
            }
            503 => {
                shared.busy_answers.fetch_add(1, Ordering::Relaxed);
            }
            other => panic!("ingest answered {other}: {answer}"),
        }
        shared.ingest.record(scheduled, &shared.measuring);
        index += options.connections;
    }
}

fn post_probes(shared: Arc<Shared>) {
    let mut connection = HttpConnection::open(&shared.options.address);
    let interval = Duration::from_secs_f64(1.0 / shared.options.probes as f64);
    let path = format!("/v1/streams/{PROBE_STREAM}/reactions");
    let mut index = 0u32;
    while !shared.sending_stopped.load(Ordering::Relaxed) {
        let scheduled = shared.start + interval * index;
        if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let emoji = format!("probe-{index}");
        let body = serde_json::json!({"emoji": emoji, "user_id": "prober"}).to_string();
        shared
            .probes_in_flight
            .lock()
            .unwrap()
            .insert(emoji, Instant::now());
        let (status, answer) =
            connection.request("POST", &path, Some(("application/json", body.as_bytes())));
        assert_eq!(status, 202, "{answer}");
        index += 1;
    }
}

/// Times each probe from its POST to the first WebSocket update with a row of its emoji.
fn watch_pushes(shared: Arc<Shared>) {
    let address = &shared.options.address;
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut socket, _) = tungstenite::client(
        format!("ws://{address}/v1/streams/{PROBE_STREAM}/live"),
        stream,
    )
    .expect("websocket");
    while !shared.done.load(Ordering::Relaxed) {
        let text = match socket.read() {
            Ok(tungstenite::Message::Text(text)) => text,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => panic!("websocket: {e}"),
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        let Some(rows) = message["rows"].as_array() else {
            continue;
        };
        let mut in_flight = shared.probes_in_flight.lock().unwrap();
        for row in rows.iter().filter(|r| r["table"] == "window_emojis") {
            if let Some(sent) = row["emoji"]
                .as_str()
                .and_then(|emoji| in_flight.remove(emoji))
            {
                shared.push.record(sent, &shared.measuring);
            }
        }
    }
}

fn query_metrics(shared: Arc<Shared>) {
    let mut connection = HttpConnection::open(&shared.options.address);
    let interval = Duration::from_secs_f64(1.0 / shared.options.queries as f64);
    let mut index = 0u32;
    while !shared.sending_stopped.load(Ordering::Relaxed) {
        let scheduled = shared.start + interval * index;
        if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let sent = Instant::now();
        let (status, answer) = connection.request("GET", &shared.options.query, None);
        // Until the first window of load-0 closes the stream may have no rows yet.
        assert!(status == 200 || status == 404, "{status}: {answer}");
        if status == 200 {
            shared.query.record(sent, &shared.measuring);
        }
        index += 1;
    }
}

/// Cumulative request-duration buckets by route, `(upper bound in seconds, count)`, scraped
/// from the server's `/metrics`.
fn duration_buckets(address: &str) -> HashMap<String, Vec<(f64, u64)>> {
    let (_, text) = HttpConnection::open(address).request("GET", "/metrics", None);
    let mut buckets: HashMap<String, Vec<(f64, u64)>> = HashMap::new();
    for line in text.lines() {
        let Some(rest) =
            line.strip_prefix("crowdpulse_http_request_duration_seconds_bucket{route=\"")
        else {
            continue;
        };
        let Some((route, rest)) = rest.split_once("\",le=\"") else {
            continue;
        };
        let Some((le, count)) = rest.split_once("\"} ") else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        buckets
            .entry(route.to_owned())
            .or_default()
            .push((le, count.parse().unwrap_or(0)));
    }
    buckets
}

/// The server-side view of the measured interval: for `route`, the bucket bounds within which
/// 50% and 99% of its requests were answered.
fn report_server_side(
    before: &HashMap<String, Vec<(f64, u64)>>,
    after: &HashMap<String, Vec<(f64, u64)>>,
    route: &str,
) {
    let Some(after) = after.get(route) else {
        return;
    };
    let before = before.get(route);
    let counts: Vec<(f64, u64)> = after
        .iter()
        .enumerate()
        .map(|(i, (le, n))| {
            (
                *le,
                n - before.and_then(|b| b.get(i)).map_or(0, |(_, m)| *m),
            )
        })
        .collect();
    let total = counts.last().map_or(0, |(_, n)| *n);
    let within = |q: f64| {
        let wanted = (total as f64 * q).ceil() as u64;
        counts
            .iter()
            .find(|(_, n)| *n >= wanted)
            .map_or(f64::INFINITY, |(le, _)| le * 1000.0)
    };
    println!(
        "{:<34} n={total:<7} p50<={:>6} ms  p99<={:>6} ms  (server side, histogram buckets)",
        format!("  {route}"),
        within(0.50),
        within(0.99)
    );
}

fn main() {
    let options = Options::parse();
    let (warmup, seconds) = (options.warmup, options.seconds);
    let shared = Arc::new(Shared {
        options,
        start: Instant::now(),
        measuring: AtomicBool::new(false),
        sending_stopped: AtomicBool::new(false),
        done: AtomicBool::new(false),
        posted_events: AtomicU64::new(0),
        busy_answers: AtomicU64::new(0),
        ingest: Samples::default(),
        push: Samples::default(),
        query: Samples::default(),
        probes_in_flight: Mutex::new(HashMap::new()),
    });
    let mut threads = Vec::new();
    for lane in 0..shared.options.connections {
        let shared = shared.clone();
        threads.push(thread::spawn(move || post_batches(shared, lane)));
    }
    for task in [post_probes, watch_pushes, query_metrics] {
        let shared = shared.clone();
        threads.push(thread::spawn(move || task(shared)));
    }
    thread::sleep(Duration::from_secs(warmup));
    let events_before = shared.posted_events.load(Ordering::Relaxed);
    let buckets_before = duration_buckets(&shared.options.address);
    shared.measuring.store(true, Ordering::Relaxed);
    let measured_from = Instant::now();
    thread::sleep(Duration::from_secs(seconds));
    shared.measuring.store(false, Ordering::Relaxed);
    let buckets_after = duration_buckets(&shared.options.address);
    shared.sending_stopped.store(true, Ordering::Relaxed);
    let measured = measured_from.elapsed().as_secs_f64();
    let events = shared.posted_events.load(Ordering::Relaxed) - events_before;
    // Let the last probes' pushes arrive before stopping the watcher; what is still in flight
    // then never arrived.
    thread::sleep(Duration::from_secs(shared.options.drain));
    let lost = shared.probes_in_flight.lock().unwrap().len();
    shared.done.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("load thread");
    }
    println!(
        "ingest: {:.0} events/s accepted over {measured:.1} s (target {} events/s), {} answers 503",
        events as f64 / measured,
        shared.options.rate,
        shared.busy_answers.load(Ordering::Relaxed)
    );
    shared.ingest.report("POST /v1/events (from schedule)");
    report_server_side(&buckets_before, &buckets_after, "/v1/events");
    shared.push.report("POST -> WebSocket push");
    shared
        .query
        .report(&format!("GET {}", shared.options.query));
    report_server_side(&buckets_before, &buckets_after, "/v1/streams/{id}/metrics");
    println!("probes without a push: {lost}");
}
