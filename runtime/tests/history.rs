//! History past the view store's retention comes from Postgres (`scripts/postgres.sh`): a live
//! app writing to Postgres with one minute of retention answers a query over ten minutes of
//! windows with every window, the same JSON the store gives, moments included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdpulse_api::filters::routes;
use crowdpulse_api::history::History;
use crowdpulse_connectors::config::ApiConfig;
use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_connectors::postgres::{apply_migrations, PostgresSink};
use crowdpulse_connectors::sink::Sink;
use crowdpulse_dataflow::config::{PipelineConfig, Span};
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::live::{Feed, LiveApp, LiveOptions};
use serde_json::Value;
use support::postgres::{fresh_config, Db};

mod support;

/// How often the sinks under test commit.
const INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_past_the_retention_are_answered_from_postgres() {
    // Setting up and tearing down block; the test's runtime lets them.
    use tokio::task::block_in_place as blocking;
    let config = fresh_config("history");
    blocking(|| apply_migrations(&config)).unwrap();
    let sink = Arc::new(PostgresSink::start(&config, INTERVAL).unwrap());
    let mut plan = PipelineConfig {
        max_out_of_orderness: Span(0),
        idle_timeout: Span(200),
        ..PipelineConfig::default()
    };
    plan.moments.baseline_windows = 3;
    plan.moments.min_chat_messages = 2;
    plan.moments.min_zscore = 1.5;
    let app = blocking(|| {
        LiveApp::start(&LiveOptions {
            cluster: Cluster::local(2),
            feed: Feed::Generated {
                rate: 0.0,
                streams: 1,
                seed: 1,
            },
            sinks: vec![Arc::clone(&sink) as Arc<dyn Sink>],
            throttle: Some(sink.throttle()),
            postgres: Some(sink.metrics()),
            history: Some(History::new(&config).unwrap()),
            plan: Plan::new(plan).unwrap(),
            api: ApiConfig {
                retention: Span(60_000),
                ..ApiConfig::default()
            },
            analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
        })
    })
    .unwrap();
    let filter = routes(app.state.clone());
    // Ten minutes of chat ending 20 minutes ago: two messages per 10 s window, and a burst of
    // 20 in the window starting 8 minutes in (a moment).
    let t0 = (wall_clock_ms() - 30 * 60_000) / 10_000 * 10_000;
    let mut body = String::new();
    for i in 0..120u64 {
        let ts = t0 + i * 5_000;
        let copies = if i == 96 { 20 } else { 1 };
        for c in 0..copies {
            body.push_str(&format!(
                "{{\"type\":\"chat\",\"stream_id\":\"old\",\"user_id\":\"u{c}\",\"ts\":{ts},\"text\":\"great play\"}}\n"
            ));
        }
    }
    let response = warp::test::request()
        .method("POST")
        .path("/v1/events")
        .header("content-type", "application/x-ndjson")
        .body(body)
        .reply(&filter)
        .await;
    assert_eq!(response.status(), 202);
    let get = |path: String| {
        let filter = filter.clone();
        async move {
            let response = warp::test::request().path(&path).reply(&filter).await;
            let status = response.status().as_u16();
            let value: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
            (status, value)
        }
    };
    // Everything becomes final once the input is idle and wall-clock time passes it; the store
    // then keeps nothing older than a minute, Postgres keeps it all.
    let path = format!("/v1/streams/old/metrics?window=10s&from={t0}&limit=1000");
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let (status, body) = get(path.clone()).await;
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        let all_final = rows.iter().all(|r| r["final"] == true);
        if status == 200 && rows.len() == 60 && all_final {
            break rows;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let in_memory = app
        .state
        .store
        .read()
        .streams
        .get("old")
        .map_or(0, |view| view.windows.len());
    assert!(in_memory < 60, "the store still holds {in_memory} windows");
    let starts: Vec<u64> = rows
        .iter()
        .map(|r| r["window_start"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, (0..60).map(|i| t0 + i * 10_000).collect::<Vec<_>>());
    let chats: u64 = rows
        .iter()
        .map(|r| r["chat_messages"].as_u64().unwrap())
        .sum();
    assert_eq!(chats, 139);
    assert_eq!(rows[0]["table"], "window_metrics");
    assert_eq!(rows[0]["stream_id"], "old");
    // The latest 5, oldest first, as without a database.
    let (_, latest) = get("/v1/streams/old/sentiment?window=10s&limit=5".to_owned()).await;
    let series = latest["series"].as_array().unwrap();
    assert_eq!(series.len(), 5);
    assert_eq!(series[0]["window_start"].as_u64(), Some(t0 + 55 * 10_000));
    assert!(series[0]["sentiment_mean"].as_f64().unwrap() > 0.0);
    let (_, moments) = get("/v1/streams/old/moments".to_owned()).await;
    let moments = moments["moments"].as_array().unwrap();
    assert!(
        moments
            .iter()
            .any(|m| m["metric"] == "chat_rate" && m["start"].as_u64() == Some(t0 + 480_000)),
        "{moments:?}"
    );
    let (status, _) = get("/v1/streams/never-seen/metrics".to_owned()).await;
    assert_eq!(status, 404);
    blocking(|| {
        app.shutdown();
        Db::connect().execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema));
    });
}
