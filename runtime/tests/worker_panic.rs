//! A worker that panics ends a live run promptly and with an error, instead of leaving the
//! other workers waiting for it forever behind a healthy-looking `/health`; a bounded run's
//! error names it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crowdpulse_api::filters::routes;
use crowdpulse_connectors::config::ApiConfig;
use crowdpulse_connectors::generator::{Generator, GeneratorConfig};
use crowdpulse_connectors::sink::{Flush, Sink};
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::memory_reader::MemoryReader;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_dataflow::source::PartitionReader;
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::live::{run_until_stopped, Feed, LiveApp, LiveOptions};
use crowdpulse_runtime::process::{run_into, BoundedRun};
use crowdpulse_runtime::sources::{ReadersFor, Sources};
use serde_json::{json, Value};
use warp::http::StatusCode;

/// Once armed, panics at its next flush with rows, inside the worker that runs the sink stage,
/// and notes when.
#[derive(Default)]
struct PanickingSink {
    armed: AtomicBool,
    panicked_at: Mutex<Option<Instant>>,
}

impl Sink for PanickingSink {
    fn flush(&self, flush: &Arc<Flush>) {
        if !flush.updates.is_empty() && self.armed.swap(false, Ordering::Relaxed) {
            *self.panicked_at.lock().unwrap() = Some(Instant::now());
            panic!("a sink bug");
        }
    }
}

/// Two workers over generated events (500 a second over 2 streams) into `sink`.
fn options(sink: &Arc<PanickingSink>) -> LiveOptions {
    LiveOptions {
        cluster: Cluster::local(2),
        feed: Feed::Generated {
            rate: 500.0,
            streams: 2,
            seed: 1,
        },
        sinks: vec![Arc::clone(sink) as Arc<dyn Sink>],
        lead: None,
        checkpoints: None,
        postgres: None,
        history: None,
        summarizer: None,
        plan: Plan::new(PipelineConfig::default()).unwrap(),
        api: ApiConfig {
            bind: "127.0.0.1:0".into(),
            ..ApiConfig::default()
        },
        analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
    }
}

#[test]
fn a_panicking_worker_ends_the_run_with_an_error_promptly() {
    let sink = Arc::new(PanickingSink::default());
    sink.armed.store(true, Ordering::Relaxed);
    let options = options(&sink);
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = run_until_stopped(&options, |_| {}).map_err(|e| e.to_string());
        let _ = done.send((outcome, Instant::now()));
    });
    let (outcome, ended) = outcome
        .recv_timeout(Duration::from_secs(20))
        .expect("the run ends after a worker panicked");
    let error = outcome.expect_err("a panicked worker is an error");
    assert!(
        error.contains("worker") && error.contains("panicked"),
        "{error}"
    );
    // 0.47 s in a debug build here; the bound leaves room for a loaded machine while still
    // failing a run that waits out a drain or a timeout.
    let panicked_at = sink.panicked_at.lock().unwrap().expect("the sink panicked");
    let took = ended.duration_since(panicked_at);
    assert!(
        took < Duration::from_secs(3),
        "the run ended {took:?} after the panic"
    );
}

/// A bounded run's error names the worker that panicked (timely's join renders a panic's
/// payload as `Any { .. }`).
#[test]
fn a_bounded_run_names_the_worker_that_panicked() {
    let sink = Arc::new(PanickingSink::default());
    sink.armed.store(true, Ordering::Relaxed);
    let events = Generator::new(GeneratorConfig {
        events: 5_000,
        streams: 2,
        ..GeneratorConfig::default()
    })
    .map(|generated| generated.line.into_bytes())
    .collect();
    let partition = MemoryReader::new("events", 0, events);
    let open: ReadersFor = Arc::new(move |index, _, _| {
        Ok(match index {
            0 => vec![Box::new(partition.clone()) as Box<dyn PartitionReader>],
            _ => Vec::new(),
        })
    });
    let run = BoundedRun {
        analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
        plan: Plan::new(PipelineConfig::default()).unwrap(),
        cluster: Cluster::local(2),
        counters: Arc::default(),
        sources: Sources::bounded(open, "generated events"),
    };
    let sinks = vec![Arc::clone(&sink) as Arc<dyn Sink>];
    let error = run_into(run, sinks, None, None)
        .expect_err("a panicked worker is an error")
        .to_string();
    assert_eq!(error, "the run stopped: worker 0 panicked");
}

async fn get(app: &LiveApp, path: &str) -> (StatusCode, Value) {
    let response = warp::test::request()
        .path(path)
        .reply(&routes(app.state.clone()))
        .await;
    let body = serde_json::from_slice(response.body()).expect("a json answer");
    (response.status(), body)
}

/// A real panic (not a failure set by hand) turns `/health` and `/ready` to 503 with the reason,
/// for as long as the process is still stopping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready_report_a_real_worker_panic() {
    let sink = Arc::new(PanickingSink::default());
    let app = LiveApp::start(&options(&sink)).expect("live app starts");
    let (status, body) = get(&app, "/health").await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("ok")),
        "{body}"
    );

    sink.armed.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = get(&app, "/health").await;
        if status != StatusCode::OK || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], json!("failing"), "{body}");
    let reason = body["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.starts_with("worker ") && reason.ends_with(" panicked"),
        "{body}"
    );
    let (status, body) = get(&app, "/ready").await;
    assert_eq!(
        (status, &body["failing"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!(reason)),
        "{body}"
    );
    app.shutdown();
}
