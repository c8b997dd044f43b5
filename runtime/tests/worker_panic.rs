//! A worker that panics ends a live run promptly and with an error, instead of leaving the
//! other workers waiting for it forever behind a healthy-looking `/health`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crowdpulse_connectors::config::ApiConfig;
use crowdpulse_connectors::sink::{Flush, Sink};
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::live::{run_until_stopped, Feed, LiveOptions};

/// Panics at its first flush with rows, inside the worker that runs the sink stage.
struct PanickingSink(AtomicBool);

impl Sink for PanickingSink {
    fn flush(&self, flush: &Arc<Flush>) {
        if !flush.updates.is_empty() && !self.0.swap(true, Ordering::Relaxed) {
            panic!("a sink bug");
        }
    }
}

#[test]
fn a_panicking_worker_ends_the_run_with_an_error() {
    let options = LiveOptions {
        cluster: Cluster::local(2),
        feed: Feed::Generated {
            rate: 500.0,
            streams: 2,
            seed: 1,
        },
        sinks: vec![Arc::new(PanickingSink(AtomicBool::new(false))) as Arc<dyn Sink>],
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
    };
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(run_until_stopped(&options, |_| {}).map_err(|e| e.to_string()));
    });
    let outcome = outcome
        .recv_timeout(Duration::from_secs(20))
        .expect("the run ends after a worker panicked");
    let error = outcome.expect_err("a panicked worker is an error");
    assert!(
        error.contains("worker") && error.contains("panicked"),
        "{error}"
    );
}
