//! History past the view store comes from Postgres (`scripts/postgres.sh`): ten minutes of
//! windows written earlier (by a bounded run, as a previous process would have) and a fresh
//! window the live app computes now come back as one series, in the store's JSON, moments
//! included; an unknown stream is still 404.

use std::path::PathBuf;
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
use crowdpulse_runtime::process::{run_into, BoundedRun};
use crowdpulse_runtime::sources::Sources;
use serde_json::Value;
use support::postgres::{fresh_config, Db};
use support::{chat_texts, chat_texts_where};

mod support;

/// How often the sinks under test commit.
const INTERVAL: Duration = Duration::from_millis(50);

fn chat(ts: u64, user: u64) -> String {
    format!(
        "{{\"type\":\"chat\",\"stream_id\":\"old\",\"user_id\":\"u{user}\",\"ts\":{ts},\"text\":\"great play\"}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_past_the_retention_are_answered_from_postgres() {
    // Setting up and tearing down block; the test's runtime lets them.
    use tokio::task::block_in_place as blocking;
    let config = fresh_config("history");
    blocking(|| apply_migrations(&config)).unwrap();
    let mut pipeline = PipelineConfig {
        max_out_of_orderness: Span(0),
        idle_timeout: Span(200),
        ..PipelineConfig::default()
    };
    pipeline.moments.baseline_windows = 3;
    pipeline.moments.min_chat_messages = 2;
    pipeline.moments.min_zscore = 1.5;
    let plan = Plan::new(pipeline).unwrap();
    let analyzer = Arc::new(Analyzer::new(Lexicons::builtin()));

    // Earlier: ten minutes of chat ending 20 minutes ago, two messages per 10 s window and a
    // burst of 20 in the window starting 8 minutes in (a moment).
    let t0 = (wall_clock_ms() - 30 * 60_000) / 10_000 * 10_000;
    let mut earlier = String::new();
    for i in 0..120u64 {
        let copies = if i == 96 { 20 } else { 1 };
        for c in 0..copies {
            earlier.push_str(&chat(t0 + i * 5_000, c));
        }
    }
    // And another stream's talk after that, for the chat history.
    let t1 = t0 + 600_000;
    let talk: Vec<String> = (0..30u64)
        .map(|i| match i % 3 {
            0 => format!("GOAL goal {i}"),
            1 => format!("why so slow {i}?"),
            _ => format!("nice one {i}"),
        })
        .collect();
    for (i, text) in talk.iter().enumerate() {
        earlier.push_str(
            &serde_json::json!({"type": "chat", "stream_id": "talk", "user_id": "t", "ts": t1 + i as u64 * 1_000, "text": text})
                .to_string(),
        );
        earlier.push('\n');
    }
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("history-{}.ndjson", std::process::id()));
    std::fs::write(&file, earlier).unwrap();
    blocking(|| {
        let sink = Arc::new(PostgresSink::start(&config, INTERVAL).unwrap());
        run_into(
            BoundedRun {
                analyzer: Arc::clone(&analyzer),
                plan: plan.clone(),
                cluster: Cluster::local(2),
                counters: Arc::default(),
                sources: Sources::files(vec![file.clone()]),
            },
            vec![Arc::clone(&sink) as Arc<dyn Sink>],
            Some(sink.lead()),
            None,
        )
    })
    .unwrap();

    // Now: a live app with one minute of retention writing to the same tables.
    let sink = Arc::new(PostgresSink::start(&config, INTERVAL).unwrap());
    let app = blocking(|| {
        LiveApp::start(&LiveOptions {
            cluster: Cluster::local(2),
            feed: Feed::Generated {
                rate: 0.0,
                streams: 1,
                seed: 1,
            },
            sinks: vec![Arc::clone(&sink) as Arc<dyn Sink>],
            lead: Some(sink.lead()),
            checkpoints: None,
            postgres: Some(sink.metrics()),
            history: Some(History::new(&config).unwrap()),
            summarizer: None,
            plan: plan.clone(),
            api: ApiConfig {
                retention: Span(60_000),
                ..ApiConfig::default()
            },
            analyzer,
        })
    })
    .unwrap();
    let filter = routes(app.state.clone());
    let get = |path: String| {
        let filter = filter.clone();
        async move {
            let response = warp::test::request().path(&path).reply(&filter).await;
            let status = response.status().as_u16();
            let value: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
            (status, value)
        }
    };
    // Before the live app has seen the stream, its history is there.
    let (status, body) = get("/v1/streams/old/metrics?window=10s&limit=3".to_owned()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"].as_array().unwrap().len(), 3, "{body}");

    let now = wall_clock_ms();
    let fresh: String = (0..3).map(|u| chat(now - 1_000, 100 + u)).collect();
    let response = warp::test::request()
        .method("POST")
        .path("/v1/events")
        .header("content-type", "application/x-ndjson")
        .body(fresh)
        .reply(&filter)
        .await;
    assert_eq!(response.status(), 202);
    let path = format!("/v1/streams/old/metrics?window=10s&from={t0}&limit=1000");
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let (status, body) = get(path.clone()).await;
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        if status == 200 && rows.len() == 61 {
            break rows;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let in_memory = app
        .state
        .store
        .read()
        .streams
        .get("old")
        .map_or(0, |view| view.windows.len());
    assert!(in_memory < 10, "the store holds {in_memory} windows");
    let starts: Vec<u64> = rows
        .iter()
        .map(|r| r["window_start"].as_u64().unwrap())
        .collect();
    let mut expected: Vec<u64> = (0..60).map(|i| t0 + i * 10_000).collect();
    expected.push((now - 1_000) / 10_000 * 10_000);
    assert_eq!(starts, expected);
    let chats: u64 = rows[..60]
        .iter()
        .map(|r| r["chat_messages"].as_u64().unwrap())
        .sum();
    assert_eq!(chats, 139);
    assert!(rows[..60].iter().all(|r| r["final"] == true));
    assert_eq!(rows[60]["chat_messages"], 3);
    assert_eq!(rows[0]["table"], "window_metrics");
    assert_eq!(rows[0]["stream_id"], "old");
    // The latest 5, oldest first, as without a database.
    let (_, latest) = get("/v1/streams/old/sentiment?window=10s&limit=5".to_owned()).await;
    let series = latest["series"].as_array().unwrap();
    assert_eq!(series.len(), 5);
    assert_eq!(series[0]["window_start"].as_u64(), Some(t0 + 56 * 10_000));
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
    // A NUL is in no stream id or cursor (the dataflow refuses it), and Postgres fails a query
    // holding one: a client's mistake, 400, not the database down (503, as it was).
    for path in [
        "metrics",
        "viewers",
        "sentiment",
        "categories",
        "moments",
        "chat",
        "summary",
    ]
    .map(|route| format!("/v1/streams/o%00ld/{route}"))
    .into_iter()
    .chain(["/v1/streams/old/chat?before=1.0.0.6f00".to_owned()])
    {
        let (status, body) = get(path.clone()).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &Value::from("bad_request")),
            "{path}: {body}"
        );
    }

    // The chat history of a stream only Postgres knows: pages, search, filters.
    let newest_first: Vec<String> = talk.iter().rev().cloned().collect();
    let (mut paged, mut path) = (Vec::new(), "/v1/streams/talk/chat?limit=7".to_owned());
    loop {
        let (status, page) = get(path.clone()).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(chat_texts(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/streams/talk/chat?limit=7&before={next}"),
            None => break,
        }
    }
    assert_eq!(paged, newest_first);
    let only = |keep: &dyn Fn(&String) -> bool| -> Vec<String> {
        newest_first.iter().filter(|t| keep(t)).cloned().collect()
    };
    for (query, expected) in [
        ("q=goal", only(&|t| t.starts_with("GOAL"))),
        ("q=why%20slow", only(&|t| t.starts_with("why"))),
        ("q=%22so%20slow%22", only(&|t| t.starts_with("why"))),
        ("q=one%20or%20goal", only(&|t| !t.starts_with("why"))),
        ("q=nice%20-one", Vec::new()),
        ("from=0&to=1", Vec::new()),
    ] {
        let (status, body) = get(format!("/v1/streams/talk/chat?{query}")).await;
        assert_eq!((status, chat_texts(&body)), (200, expected), "{query}");
    }
    let (_, body) = get(format!(
        "/v1/streams/talk/chat?from={}&to={}",
        t1 + 5_000,
        t1 + 8_000
    ))
    .await;
    assert_eq!(chat_texts(&body), newest_first[22..25]);
    let (_, all) = get("/v1/streams/talk/chat?limit=1000".to_owned()).await;
    let questions = chat_texts_where(&all, |m| m["category"] == "question");
    assert!(!questions.is_empty() && questions.len() < 30, "{all}");
    let (_, body) = get("/v1/streams/talk/chat?category=question&limit=1000".to_owned()).await;
    assert_eq!(chat_texts(&body), questions);
    let (status, _) = get("/v1/streams/never-seen/chat".to_owned()).await;
    assert_eq!(status, 404);
    // The live stream's history holds what Postgres has and what the store has just seen.
    let (_, body) = get("/v1/streams/old/chat?limit=1000".to_owned()).await;
    assert_eq!(chat_texts(&body).len(), 142, "{body}");
    // Word search runs on an index of every partition.
    let indexed = blocking(|| {
        Db::connect().value(&format!(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = '{}' AND tablename LIKE 'chat_messages_%' \
         AND indexdef LIKE '%gin%to_tsvector%'",
        config.schema
    ))
    });
    assert_ne!(indexed, "0");
    // A stream's pages are read off the primary key, the only B-tree a message is written into.
    let btrees = blocking(|| {
        Db::connect().value(&format!(
            "SELECT string_agg(DISTINCT regexp_replace(indexdef, '^.* USING ', ''), '; ') \
             FROM pg_indexes WHERE schemaname = '{}' AND tablename LIKE 'chat_messages_%' \
             AND indexdef NOT LIKE '% USING gin %'",
            config.schema
        ))
    });
    assert_eq!(
        btrees,
        "btree (stream_id, ts, source, partition, \"offset\")"
    );
    blocking(|| {
        app.shutdown();
        Db::connect().execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema));
    });
}
