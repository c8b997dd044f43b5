//! Prometheus text exposition of `/metrics`: source counters, ingest, frontier delay, live
//! clients, and HTTP requests by route and status.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crowdpulse_connectors::kafka_delivery::DeliveryCounters;
use crowdpulse_connectors::kafka_progress::KafkaLag;
use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_connectors::postgres::PostgresSinkMetrics;
use crowdpulse_connectors::summarizer::SummarizerMetrics;
use crowdpulse_dataflow::event::EventKind;
use crowdpulse_dataflow::source::SourceCounters;

use crate::ingest::IngestCounters;

/// The route templates of the OpenAPI document, the one description of the routes (a test walks
/// every one of them against the served routes), split at `/`.
fn route_templates() -> &'static [(String, Vec<String>)] {
    static TEMPLATES: OnceLock<Vec<(String, Vec<String>)>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let document: serde_json::Value =
            serde_json::from_str(crate::OPENAPI).expect("the embedded OpenAPI document is JSON");
        document["paths"]
            .as_object()
            .into_iter()
            .flat_map(|paths| paths.keys())
            .map(|template| {
                let segments = template.split('/').map(str::to_owned).collect();
                (template.clone(), segments)
            })
            .collect()
    })
}

/// The route template of a request path (`/v1/streams/{id}/metrics`), so labels stay few
/// whatever clients request: `other` for paths no route serves.
pub fn route_of(path: &str) -> String {
    // The dashboard's assets are the one route the API document leaves out.
    if path.starts_with("/assets/") {
        return "/assets/{file}".to_owned();
    }
    let segments: Vec<&str> = path.split('/').collect();
    route_templates()
        .iter()
        .find(|(_, template)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(part, segment)| {
                    part == segment || (part.starts_with('{') && !segment.is_empty())
                })
        })
        .map_or_else(|| "other".to_owned(), |(template, _)| template.clone())
}

/// Upper bounds (seconds) of the request duration histogram's buckets: fine below 10 ms, where
/// the API's answers are expected.
const DURATION_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Request durations of one route, as a Prometheus histogram.
#[derive(Debug, Default)]
struct DurationHistogram {
    /// Requests per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    sum_seconds: f64,
}

impl DurationHistogram {
    fn observe(&mut self, seconds: f64) {
        let slot = DURATION_BUCKETS.partition_point(|bound| *bound < seconds);
        self.buckets[slot] += 1;
        self.sum_seconds += seconds;
    }
}

#[derive(Debug, Default)]
struct HttpTotals {
    requests: BTreeMap<(String, u16), u64>,
    durations: BTreeMap<String, DurationHistogram>,
    /// JSON error answers by their code (a fixed set, so the labels stay few).
    errors: BTreeMap<&'static str, u64>,
}

/// Why the server dropped a connection or refused a client before any route answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `api.limits.max_connections` were open.
    Connections,
    /// `api.limits.max_live_clients` were following streams.
    LiveClients,
    /// The request's headers did not arrive within `api.limits.header_timeout` (or an idle
    /// keep-alive connection sent nothing for that long).
    HeaderTimeout,
    /// The body did not arrive within `api.limits.body_timeout`.
    BodyTimeout,
    /// The peer read nothing of an answer or push for `api.limits.send_timeout`.
    SendStall,
    /// A WebSocket client sent a message beyond `api.limits.max_websocket_message_bytes`.
    WebSocketMessage,
    /// A WebSocket client sent nothing, not even a pong, for `api.limits.websocket_silence`.
    WebSocketSilence,
}

impl Refusal {
    const ALL: [Refusal; 7] = [
        Refusal::Connections,
        Refusal::LiveClients,
        Refusal::HeaderTimeout,
        Refusal::BodyTimeout,
        Refusal::SendStall,
        Refusal::WebSocketMessage,
        Refusal::WebSocketSilence,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::LiveClients => "live_clients",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::SendStall => "send_stall",
            Refusal::WebSocketMessage => "websocket_message",
            Refusal::WebSocketSilence => "websocket_silence",
        }
    }
}

/// HTTP request counters and durations.
#[derive(Debug, Default)]
pub struct HttpCounters {
    totals: Mutex<HttpTotals>,
    refusals: [AtomicU64; Refusal::ALL.len()],
}

impl HttpCounters {
    /// Counts one refusal.
    pub fn refuse(&self, refusal: Refusal) {
        self.refusals[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals of one kind so far.
    pub fn refusals(&self, refusal: Refusal) -> u64 {
        self.refusals[refusal as usize].load(Ordering::Relaxed)
    }

    /// Counts one JSON error answer by its code.
    pub fn record_error(&self, code: &'static str) {
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        *totals.errors.entry(code).or_default() += 1;
    }

    /// JSON error answers with `code` so far.
    pub fn errors(&self, code: &str) -> u64 {
        let totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.errors.get(code).copied().unwrap_or(0)
    }

    /// Counts one answered request and how long the server took to produce its answer.
    pub fn record(&self, path: &str, status: u16, elapsed: Duration) {
        let route = route_of(path);
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals
            .durations
            .entry(route.clone())
            .or_default()
            .observe(elapsed.as_secs_f64());
        *totals.requests.entry((route, status)).or_default() += 1;
    }
}

/// What `/metrics` reads.
pub struct MetricsSources<'a> {
    /// Source counters of the dataflow.
    pub source: &'a Arc<SourceCounters>,
    /// Ingest counters.
    pub ingest: &'a IngestCounters,
    /// Records queued for the dataflow.
    pub queued: usize,
    /// HTTP counters.
    pub http: &'a HttpCounters,
    /// Live clients connected.
    pub live_clients: usize,
    /// Streams the view store holds.
    pub view_streams: usize,
    /// The push interval in effect (`api.push_interval`, or wider past `api.push_budget`).
    pub push_interval: Duration,
    /// Output frontier (None once the input ended).
    pub frontier: Option<u64>,
    /// Kafka partitions' lag, when reading Kafka.
    pub kafka_lag: Option<&'a KafkaLag>,
    /// Deliveries to the dead-letter topic, when there is one.
    pub dead_letter_topic: Option<&'a DeliveryCounters>,
    /// The Postgres sink, when there is one.
    pub postgres: Option<&'a PostgresSinkMetrics>,
    /// The summarizer, when an endpoint is configured.
    pub summarizer: Option<&'a SummarizerMetrics>,
}

/// The process allocator's figures: what the program holds, and what the allocator keeps in
/// memory for it. Their difference is the allocator's own (free pages not yet given back, pages
/// part used): the figure that tells a leak from fragmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes allocated and not yet freed.
    pub allocated: u64,
    /// Bytes of the pages that hold allocations: `allocated` plus the free space inside those
    /// pages, so `active - allocated` is the fragmentation the allocator cannot give back.
    pub active: u64,
    /// Bytes of the allocator's own bookkeeping.
    pub metadata: u64,
    /// Bytes of the allocator's pages resident in memory, its metadata included.
    pub resident: u64,
}

/// How to read the process allocator's figures, once the binary has said.
static ALLOCATOR_STATS: OnceLock<fn() -> Option<AllocatorStats>> = OnceLock::new();

/// Lets `/metrics` report the allocator's figures. The allocator is the binary's choice (and a
/// process-wide one), so the binary registers how to read them, once; later calls change nothing.
pub fn report_allocator(stats: fn() -> Option<AllocatorStats>) {
    let _ = ALLOCATOR_STATS.set(stats);
}

fn partition_labels(label: &str, (source, partition): &(String, u32)) -> String {
    format!("{{{label}=\"{source}\",partition=\"{partition}\"}}")
}

/// Writes one metric family: its HELP and TYPE lines, then one sample per (labels, value);
/// labels are `""` or `{name="value",...}`.
fn family<V: std::fmt::Display>(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    samples: impl IntoIterator<Item = (String, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn unlabelled<V>(value: V) -> [(String, V); 1] {
    [(String::new(), value)]
}

fn labelled<'a>(
    label: &'a str,
    values: impl IntoIterator<Item = (&'a str, u64)> + 'a,
) -> impl Iterator<Item = (String, u64)> + 'a {
    values
        .into_iter()
        .map(move |(value, count)| (format!("{{{label}=\"{value}\"}}"), count))
}

/// Milliseconds as seconds.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1_000.0
}

fn postgres_families(out: &mut String, postgres: &PostgresSinkMetrics) {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let commits = load(&postgres.commits);
    family(
        out,
        (
            "crowdpulse_postgres_commits_total",
            "counter",
            "Transactions the Postgres sink committed.",
        ),
        unlabelled(commits),
    );
    family(
        out,
        (
            "crowdpulse_postgres_rows_written_total",
            "counter",
            "Table rows the Postgres sink inserted, updated or deleted.",
        ),
        unlabelled(load(&postgres.rows_written)),
    );
    family(
        out,
        (
            "crowdpulse_postgres_write_failures_total",
            "counter",
            "Failed Postgres writes (each retried).",
        ),
        unlabelled(load(&postgres.failures)),
    );
    let name = "crowdpulse_postgres_commit_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time to write and commit one flush.
# TYPE {name} summary
{name}_sum {}
{name}_count {commits}",
        load(&postgres.commit_micros_total) as f64 / 1e6
    );
    family(
        out,
        (
            "crowdpulse_postgres_up",
            "gauge",
            "1 when the last attempt to write to Postgres succeeded.",
        ),
        unlabelled(load(&postgres.connected)),
    );
    let (computed, written) = (
        load(&postgres.computed_frontier),
        load(&postgres.written_frontier),
    );
    // Before the first commit there is no committed frontier to measure from.
    let lag = (commits > 0).then(|| (String::new(), seconds(computed.saturating_sub(written))));
    family(
        out,
        (
            "crowdpulse_postgres_sink_lag_seconds",
            "gauge",
            "Event time between the frontier computed and the frontier committed to Postgres.",
        ),
        lag,
    );
    checkpoint_families(out, postgres, computed);
}

fn checkpoint_families(out: &mut String, postgres: &PostgresSinkMetrics, computed: u64) {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let checkpoints = load(&postgres.checkpoints);
    family(
        out,
        (
            "crowdpulse_checkpoints_total",
            "counter",
            "Checkpoints committed to Postgres.",
        ),
        unlabelled(checkpoints),
    );
    // The rest describes the latest checkpoint, so only once there is one.
    let latest = |value: f64| (checkpoints > 0).then(|| (String::new(), value));
    family(
        out,
        (
            "crowdpulse_checkpoint_size_bytes",
            "gauge",
            "Encoded operator state of the latest checkpoint.",
        ),
        latest(load(&postgres.checkpoint_bytes) as f64),
    );
    family(
        out,
        (
            "crowdpulse_checkpoint_write_seconds",
            "gauge",
            "Time the latest checkpoint took to write, inside its flush's transaction.",
        ),
        latest(load(&postgres.checkpoint_write_micros) as f64 / 1e6),
    );
    family(
        out,
        (
            "crowdpulse_checkpoint_lag_seconds",
            "gauge",
            "Event time between the frontier computed and the latest checkpoint: what a restart recomputes.",
        ),
        latest(seconds(computed.saturating_sub(load(&postgres.checkpoint_time)))),
    );
}

/// Renders the exposition text.
pub fn render(sources: &MetricsSources<'_>) -> String {
    let mut out = String::new();
    let (source, ingest) = (sources.source, sources.ingest);
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    family(
        &mut out,
        (
            "crowdpulse_records_read_total",
            "counter",
            "Records read by the sources.",
        ),
        unlabelled(load(&source.records)),
    );
    family(
        &mut out,
        (
            "crowdpulse_events_total",
            "counter",
            "Events accepted into the analytics, by type.",
        ),
        labelled(
            "type",
            EventKind::ALL.map(|kind| (kind.name(), load(&source.events_by_kind[kind.index()]))),
        ),
    );
    family(
        &mut out,
        (
            "crowdpulse_late_total",
            "counter",
            "Records dropped as late.",
        ),
        unlabelled(load(&source.late)),
    );
    family(
        &mut out,
        (
            "crowdpulse_dead_letters_total",
            "counter",
            "Records sent to the dead-letter path, by reason.",
        ),
        labelled(
            "reason",
            [
                ("decode", load(&source.decode_errors)),
                ("invalid", load(&source.invalid)),
                ("late", load(&source.late)),
                ("future", load(&source.future)),
                ("duplicate", load(&source.duplicates)),
            ],
        ),
    );
    family(
        &mut out,
        (
            "crowdpulse_partition_read_errors_total",
            "counter",
            "Failed partition reads (e.g. offsets removed by retention); the partition waits.",
        ),
        unlabelled(load(&source.read_errors)),
    );
    let delay = sources
        .frontier
        .map_or(0, |f| wall_clock_ms().saturating_sub(f));
    family(
        &mut out,
        (
            "crowdpulse_frontier_delay_seconds",
            "gauge",
            "Wall-clock time minus the output frontier.",
        ),
        unlabelled(seconds(delay)),
    );
    let partitions = source.partition_progress();
    family(
        &mut out,
        (
            "crowdpulse_partition_watermark_timestamp_seconds",
            "gauge",
            "Event-time watermark of each source partition (Unix time).",
        ),
        partitions.iter().filter_map(|(key, p)| {
            p.watermark
                .map(|w| (partition_labels("source", key), seconds(w)))
        }),
    );
    family(
        &mut out,
        (
            "crowdpulse_partition_next_offset",
            "gauge",
            "Offset after the last record read from each source partition.",
        ),
        partitions
            .iter()
            .filter_map(|(key, p)| p.next_offset.map(|o| (partition_labels("source", key), o))),
    );
    if let Some(topic) = sources.dead_letter_topic {
        family(
            &mut out,
            (
                "crowdpulse_dead_letter_topic_messages_total",
                "counter",
                "Dead letters produced to the dead-letter topic, by outcome.",
            ),
            labelled(
                "outcome",
                [
                    ("delivered", load(&topic.delivered)),
                    ("failed", load(&topic.failed)),
                ],
            ),
        );
    }
    if let Some(postgres) = sources.postgres {
        postgres_families(&mut out, postgres);
    }
    if let Some(summarizer) = sources.summarizer {
        family(
            &mut out,
            (
                "crowdpulse_summary_texts_total",
                "counter",
                "Chat summaries by what became of their abstractive text.",
            ),
            labelled(
                "outcome",
                [
                    ("made", load(&summarizer.made)),
                    ("reused", load(&summarizer.reused)),
                    ("timeout", load(&summarizer.timeouts)),
                    ("failed", load(&summarizer.failures)),
                    ("skipped", load(&summarizer.skipped)),
                    ("unsaved", load(&summarizer.unsaved)),
                ],
            ),
        );
        family(
            &mut out,
            (
                "crowdpulse_summary_text_retries_total",
                "counter",
                "Summary text requests repeated after the endpoint answered try again.",
            ),
            unlabelled(load(&summarizer.retries)),
        );
    }
    if let Some(lag) = sources.kafka_lag {
        family(
            &mut out,
            (
                "crowdpulse_kafka_partition_lag",
                "gauge",
                "Messages between the offset read and the partition's high watermark.",
            ),
            lag.snapshot()
                .iter()
                .map(|(key, l)| (partition_labels("topic", key), l.lag as u64)),
        );
    }
    family(
        &mut out,
        (
            "crowdpulse_ingest_records_total",
            "counter",
            "Records received over HTTP, by outcome.",
        ),
        labelled(
            "outcome",
            [
                ("accepted", load(&ingest.accepted)),
                ("rejected", load(&ingest.rejected)),
            ],
        ),
    );
    family(
        &mut out,
        (
            "crowdpulse_ingest_busy_total",
            "counter",
            "Ingest requests refused with 503 because the input was full.",
        ),
        unlabelled(load(&ingest.busy)),
    );
    family(
        &mut out,
        (
            "crowdpulse_input_queued",
            "gauge",
            "Records waiting for the dataflow.",
        ),
        unlabelled(sources.queued as u64),
    );
    family(
        &mut out,
        (
            "crowdpulse_live_clients",
            "gauge",
            "Connected WebSocket and SSE clients.",
        ),
        unlabelled(sources.live_clients as u64),
    );
    family(
        &mut out,
        (
            "crowdpulse_streams",
            "gauge",
            "Streams the analytics hold: active ones (visited at each advance) and quiet ones (their totals only).",
        ),
        labelled(
            "state",
            [
                ("active", load(&source.streams_active)),
                ("quiet", load(&source.streams_quiet)),
            ],
        ),
    );
    family(
        &mut out,
        (
            "crowdpulse_view_store_streams",
            "gauge",
            "Streams the API's view store holds (within api.retention).",
        ),
        unlabelled(sources.view_streams as u64),
    );
    family(
        &mut out,
        (
            "crowdpulse_push_interval_seconds",
            "gauge",
            "Shortest time between two pushed updates of a stream: api.push_interval, or wider past api.push_budget.",
        ),
        unlabelled(sources.push_interval.as_secs_f64()),
    );
    family(
        &mut out,
        (
            "crowdpulse_http_refusals_total",
            "counter",
            "Connections dropped, live clients refused or cut off by the server's limits, by reason.",
        ),
        labelled(
            "reason",
            Refusal::ALL.map(|r| (r.label(), sources.http.refusals(r))),
        ),
    );
    if let Some(stats) = ALLOCATOR_STATS.get().and_then(|read| read()) {
        family(
            &mut out,
            (
                "crowdpulse_allocator_allocated_bytes",
                "gauge",
                "Heap bytes the process holds (allocated, not yet freed).",
            ),
            unlabelled(stats.allocated),
        );
        family(
            &mut out,
            (
                "crowdpulse_allocator_active_bytes",
                "gauge",
                "Bytes of the pages holding the heap: the heap plus the free space inside those pages, which the allocator cannot give back.",
            ),
            unlabelled(stats.active),
        );
        family(
            &mut out,
            (
                "crowdpulse_allocator_metadata_bytes",
                "gauge",
                "Bytes of the allocator's own bookkeeping.",
            ),
            unlabelled(stats.metadata),
        );
        family(
            &mut out,
            (
                "crowdpulse_allocator_resident_bytes",
                "gauge",
                "Bytes of the allocator's pages in memory (an upper bound): the heap held plus what the allocator keeps.",
            ),
            unlabelled(stats.resident),
        );
    }
    let totals = sources
        .http
        .totals
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    family(
        &mut out,
        (
            "crowdpulse_http_requests_total",
            "counter",
            "HTTP requests by route and status.",
        ),
        totals.requests.iter().map(|((route, status), count)| {
            (format!("{{route=\"{route}\",status=\"{status}\"}}"), *count)
        }),
    );
    family(
        &mut out,
        (
            "crowdpulse_http_errors_total",
            "counter",
            "JSON error answers by their error code (unauthorized, forbidden_origin, too_many_events, ...).",
        ),
        labelled("code", totals.errors.iter().map(|(code, count)| (*code, *count))),
    );
    let name = "crowdpulse_http_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time to produce the answer, by route.\n# TYPE {name} histogram"
    );
    for (route, histogram) in &totals.durations {
        let bounds = DURATION_BUCKETS.iter().map(|b| b.to_string());
        let mut cumulative = 0;
        for (le, count) in bounds.chain(["+Inf".to_owned()]).zip(histogram.buckets) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{route=\"{route}\"}} {}",
            histogram.sum_seconds
        );
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {cumulative}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_map_to_few_route_labels() {
        assert_eq!(
            route_of("/v1/streams/abc/emojis/top"),
            "/v1/streams/{id}/emojis/top"
        );
        assert_eq!(route_of("/v1/streams/abc"), "/v1/streams/{id}");
        assert_eq!(route_of("/v1/streams/abc/nope"), "other");
        assert_eq!(route_of("/v1/statistics"), "/v1/statistics");
        assert_eq!(route_of("/wp-admin"), "other");
        assert_eq!(route_of("/v1/streams/"), "other");
        assert_eq!(route_of("/"), "/");
        assert_eq!(route_of("/assets/app.js"), "/assets/{file}");
        assert_eq!(
            route_of("/v1/kinds/downloads/records"),
            "/v1/kinds/{kind}/records"
        );
    }

    #[test]
    fn durations_fall_into_cumulative_buckets() {
        let http = HttpCounters::default();
        for micros in [50, 300, 300, 1_200, 2_000_000] {
            http.record("/health", 200, Duration::from_micros(micros));
        }
        let counters = Arc::new(SourceCounters::default());
        let text = render(&MetricsSources {
            source: &counters,
            ingest: &IngestCounters::default(),
            queued: 0,
            http: &http,
            live_clients: 0,
            view_streams: 0,
            push_interval: Duration::from_millis(250),
            frontier: None,
            kafka_lag: None,
            dead_letter_topic: None,
            postgres: None,
            summarizer: None,
        });
        let bucket = |le: &str| {
            let line = format!(
                "crowdpulse_http_request_duration_seconds_bucket{{route=\"/health\",le=\"{le}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&line))
                .unwrap_or_else(|| panic!("no bucket {le} in {text}"))
                .to_owned()
        };
        assert_eq!(bucket("0.0001"), "1");
        assert_eq!(bucket("0.00025"), "1");
        assert_eq!(bucket("0.0005"), "3");
        assert_eq!(bucket("0.0015"), "4");
        assert_eq!(bucket("1"), "4");
        assert_eq!(bucket("+Inf"), "5");
        assert!(
            text.contains("\ncrowdpulse_push_interval_seconds 0.25\n"),
            "{text}"
        );
        assert!(
            text.contains("crowdpulse_http_request_duration_seconds_count{route=\"/health\"} 5")
        );
    }

    /// What the binary registers is read at each scrape.
    #[test]
    fn the_allocators_figures_are_read_at_each_scrape() {
        static ALLOCATED: AtomicU64 = AtomicU64::new(0);
        report_allocator(|| {
            Some(AllocatorStats {
                allocated: ALLOCATED.load(Ordering::Relaxed),
                active: 280 << 20,
                metadata: 12 << 20,
                resident: 300 << 20,
            })
        });
        let counters = Arc::new(SourceCounters::default());
        let http = HttpCounters::default();
        let scrape = || {
            render(&MetricsSources {
                source: &counters,
                ingest: &IngestCounters::default(),
                queued: 0,
                http: &http,
                live_clients: 0,
                view_streams: 0,
                push_interval: Duration::from_millis(100),
                frontier: None,
                kafka_lag: None,
                dead_letter_topic: None,
                postgres: None,
                summarizer: None,
            })
        };
        ALLOCATED.store(1_000, Ordering::Relaxed);
        let first = scrape();
        ALLOCATED.store(2_500, Ordering::Relaxed);
        let second = scrape();
        assert!(
            first.contains("\ncrowdpulse_allocator_allocated_bytes 1000\n"),
            "{first}"
        );
        assert!(
            second.contains("\ncrowdpulse_allocator_allocated_bytes 2500\n"),
            "{second}"
        );
        for line in [
            "crowdpulse_allocator_active_bytes 293601280",
            "crowdpulse_allocator_metadata_bytes 12582912",
            "crowdpulse_allocator_resident_bytes 314572800",
        ] {
            assert!(second.contains(&format!("\n{line}\n")), "{second}");
        }
    }

    #[test]
    fn the_postgres_sink_reports_commits_and_its_lag_in_seconds() {
        let postgres = PostgresSinkMetrics::default();
        postgres.commits.store(4, Ordering::Relaxed);
        postgres
            .commit_micros_total
            .store(2_500_000, Ordering::Relaxed);
        postgres.computed_frontier.store(90_000, Ordering::Relaxed);
        postgres.written_frontier.store(87_500, Ordering::Relaxed);
        let text = render(&MetricsSources {
            source: &Arc::new(SourceCounters::default()),
            ingest: &IngestCounters::default(),
            queued: 0,
            http: &HttpCounters::default(),
            live_clients: 0,
            view_streams: 0,
            push_interval: Duration::from_millis(250),
            frontier: None,
            kafka_lag: None,
            dead_letter_topic: None,
            postgres: Some(&postgres),
            summarizer: None,
        });
        for line in [
            "crowdpulse_postgres_commits_total 4",
            "crowdpulse_postgres_commit_duration_seconds_sum 2.5",
            "crowdpulse_postgres_commit_duration_seconds_count 4",
            "crowdpulse_postgres_sink_lag_seconds 2.5",
            "crowdpulse_postgres_up 0",
            "crowdpulse_checkpoints_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from {text}"
            );
        }
    }
}
