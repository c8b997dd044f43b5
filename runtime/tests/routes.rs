//! Every endpoint through `warp::test`, and the real server for timeouts and caps, against a real
//! live dataflow (2 workers, no generator): access by token, scope and origin, limits,
//! ingest, results, push, statistics, metrics, OpenAPI, and each error status.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdpulse_api::filters::routes;
use crowdpulse_api::metrics::{report_allocator, AllocatorStats, Refusal};
use crowdpulse_connectors::config::ApiConfig;
use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_connectors::summarizer::{SummarizerConfig, SummaryTexts};
use crowdpulse_dataflow::config::{PipelineConfig, Span, WindowConfig};
use crowdpulse_dataflow::kinds::config::KindConfig;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::rows::{Moment, Row, Score};
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::live::{Feed, LiveApp, LiveOptions};
use serde_json::{json, Value};
use support::completions::{serve as serve_completions, Answer};
use support::{chat_texts, chat_texts_where};
use warp::http::StatusCode;
use warp::{Filter, Reply};

mod support;

fn start(api: ApiConfig) -> LiveApp {
    start_with(
        api,
        PipelineConfig {
            max_out_of_orderness: Span(0),
            idle_timeout: Span(300),
            ..PipelineConfig::default()
        },
    )
}

fn start_with(api: ApiConfig, pipeline: PipelineConfig) -> LiveApp {
    start_summarizing(api, pipeline, None)
}

fn start_summarizing(
    api: ApiConfig,
    pipeline: PipelineConfig,
    summarizer: Option<Arc<SummaryTexts>>,
) -> LiveApp {
    LiveApp::start(&LiveOptions {
        cluster: Cluster::local(2),
        feed: Feed::Generated {
            rate: 0.0,
            streams: 1,
            seed: 1,
        },
        sinks: Vec::new(),
        lead: None,
        checkpoints: None,
        postgres: None,
        history: None,
        summarizer,
        plan: Plan::new(pipeline).unwrap(),
        api,
        analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
    })
    .expect("live app starts")
}

/// `promtool check metrics` (Debian's prometheus package, installed by scripts/setup.sh) finds
/// nothing to complain about.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (bash scripts/setup.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && report.trim().is_empty(), "{report}");
}

fn small_body_limit() -> ApiConfig {
    ApiConfig {
        max_body_bytes: 4_096,
        ..ApiConfig::default()
    }
}

async fn call(
    filter: &(impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible>
          + Clone
          + 'static),
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (StatusCode, Value, warp::http::HeaderMap) {
    let mut request = warp::test::request().method(method).path(path);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.body(body).reply(filter).await;
    let value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (response.status(), value, response.headers().clone())
}

async fn get(
    filter: &(impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible>
          + Clone
          + 'static),
    path: &str,
) -> (StatusCode, Value) {
    let (status, value, _) = call(filter, "GET", path, None, b"").await;
    (status, value)
}

/// Follows `stream` over WebSocket with warp's test client; returns it and the snapshot it got.
async fn follow_over_websocket(
    filter: &(impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible>
          + Clone
          + Send
          + Sync
          + 'static),
    stream: &str,
) -> (warp::test::WsClient, Value) {
    let mut client = warp::test::ws()
        .path(&format!("/v1/streams/{stream}/live"))
        .handshake(filter.clone())
        .await
        .expect("handshake");
    let snapshot = client.recv().await.expect("a snapshot");
    let snapshot = serde_json::from_str(snapshot.to_str().unwrap()).unwrap();
    (client, snapshot)
}

/// Posts one reaction to `stream` (a path segment) and expects it accepted.
async fn react(
    filter: &(impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible>
          + Clone
          + 'static),
    stream: &str,
    body: &str,
) {
    let path = format!("/v1/streams/{stream}/reactions");
    let json = Some("application/json");
    let (status, answer, _) = call(filter, "POST", &path, json, body.as_bytes()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}

/// The users of a stream summary's recent reactions, newest first.
fn recent_users(body: &Value) -> Vec<&str> {
    body["recent_reactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_str().unwrap())
        .collect()
}

/// Polls until `check` holds (the dataflow needs a tick or two to pass the frontier).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_results_and_read_endpoints() {
    let app = start(small_body_limit());
    let api = routes(app.state.clone());
    let now = wall_clock_ms();
    let events = json!([
        {"type": "chat", "stream_id": "s1", "user_id": "ann", "text": "this is great PogChamp", "ts": now},
        {"type": "chat", "stream_id": "s1", "user_id": "bob", "text": "awful", "ts": now},
        {"type": "reaction", "stream_id": "s1", "user_id": "ann", "emoji": "🔥", "ts": now},
        {"type": "viewer", "stream_id": "s1", "user_id": "ann", "action": "join", "ts": now},
        {"type": "viewer", "stream_id": "s1", "user_id": "bob", "action": "join", "ts": now},
        {"type": "chat", "stream_id": "s1", "ts": now},
        {"type": "stream_meta", "stream_id": "s1", "title": "Finals", "status": "live", "ts": now}
    ]);
    let (status, body, _) = call(
        &api,
        "POST",
        "/v1/events",
        Some("application/json"),
        events.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 6);
    assert_eq!(body["rejected"].as_array().unwrap().len(), 1);
    assert_eq!(body["rejected"][0]["index"], 5);
    assert!(body["rejected"][0]["error"]
        .as_str()
        .unwrap()
        .contains("user_id"));

    let ndjson = format!(
        "{}\n\n{}\n",
        json!({"type": "reaction", "stream_id": "s1", "user_id": "cy", "emoji": "🔥"}),
        json!({"type": "reaction", "stream_id": "s1", "user_id": "dee", "emoji": "😂"})
    );
    let (status, body, _) = call(
        &api,
        "POST",
        "/v1/events",
        Some("application/x-ndjson"),
        ndjson.as_bytes(),
    )
    .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (StatusCode::ACCEPTED, json!(2)),
        "{body}"
    );

    let (status, body, _) = call(
        &api,
        "POST",
        "/v1/streams/s1/reactions",
        Some("application/json"),
        r#"{"emoji":"😂","user_id":"eve"}"#.as_bytes(),
    )
    .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (StatusCode::ACCEPTED, json!(1)),
        "{body}"
    );

    eventually("the reactions in the session top emojis", || async {
        let (_, body) = get(&api, "/v1/streams/s1/emojis/top").await;
        body["top"] == json!([{"emoji": "🔥", "count": 2}, {"emoji": "😂", "count": 2}])
    })
    .await;
    let (status, body) = get(&api, "/v1/streams/s1/emojis/top?window=10s").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["table"], "window_top_emojis");
    let windowed: u64 = body["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert!((1..=4).contains(&windowed), "{body}");

    let (status, body) = get(&api, "/v1/streams").await;
    assert_eq!(status, StatusCode::OK);
    let streams = body["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "{body}");
    assert_eq!(streams[0]["stream_id"], "s1");

    eventually("stream totals", || async {
        let (_, body) = get(&api, "/v1/streams/s1").await;
        body["chat_messages"] == 2 && body["reactions"] == 4 && body["title"] == "Finals"
    })
    .await;
    let (_, body) = get(&api, "/v1/streams/s1").await;
    assert_eq!(body["status"], "live");
    assert_eq!(body["current_viewers"], 2, "{body}");
    assert_eq!(recent_users(&body), vec!["eve", "dee", "cy", "ann"]);

    let (status, body) = get(
        &api,
        &format!(
            "/v1/streams/s1/metrics?window=10s&from={}&limit=5",
            now - now % 10_000
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{body}");
    assert_eq!(rows[0]["chat_messages"], 2);
    assert_eq!(rows[0]["unique_chatters"], 2);
    let (_, body) = get(
        &api,
        &format!("/v1/streams/s1/metrics?window=1m&to={}", now - now % 60_000),
    )
    .await;
    assert_eq!(body["rows"], json!([]), "windows starting before `to` only");

    let (status, body) = get(&api, "/v1/streams/s1/viewers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            body["current"].clone(),
            body["series"][0]["viewer_joins"].clone()
        ),
        (json!(2), json!(2)),
        "{body}"
    );
    let (status, body) = get(&api, "/v1/streams/s1/sentiment?window=1m").await;
    assert_eq!(status, StatusCode::OK);
    let point = &body["series"][0];
    assert_eq!(
        (point["positive"].clone(), point["negative"].clone()),
        (json!(1), json!(1)),
        "{body}"
    );
    // "this is great PogChamp" is praise, "awful" toxic (dataflow/lexicon/categories.txt).
    let (status, body) = get(&api, "/v1/streams/s1/categories?window=1m").await;
    assert_eq!(status, StatusCode::OK);
    let point = &body["series"][0];
    assert_eq!(
        [
            &point["praise"],
            &point["toxic"],
            &point["humor"],
            &point["question"],
            &point["other"]
        ],
        [&json!(1), &json!(1), &json!(0), &json!(0), &json!(0)],
        "{body}"
    );

    // Moments are rare in a few events; the endpoint serves whatever the store holds.
    let moment = Moment {
        stream_id: "s1".into(),
        metric: "reaction_rate".into(),
        start: now - 20_000,
        end: now - 10_000,
        peak_window_start: now - 20_000,
        peak_value: Score(40.0),
        baseline_mean: Score(2.0),
        baseline_std: Score(1.0),
        zscore: Score(38.0),
    };
    app.state.store.apply(
        Some(now),
        &[(
            Row::Moment {
                moment: Box::new(moment),
                is_final: true,
            },
            now,
            1,
        )],
    );
    let (status, body) = get(&api, "/v1/streams/s1/moments").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["moments"][0]["metric"], "reaction_rate", "{body}");

    eventually("the refused record in the dead letters", || async {
        let (_, body) = get(&api, "/v1/statistics").await;
        body["dead_letters"] == 1
    })
    .await;
    let (status, body) = get(&api, "/v1/statistics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total_emojis"], 4);
    assert_eq!(
        body["top_emojis"],
        json!([{"emoji": "🔥", "count": 2}, {"emoji": "😂", "count": 2}])
    );
    assert_eq!(body["last_reactions"].as_array().unwrap().len(), 4);
    assert!(
        body["session_duration_ms"].as_u64().is_some()
            && body["rate_per_minute"].as_f64().unwrap() > 0.0
    );

    eventually("readiness", || async {
        get(&api, "/ready").await.0 == StatusCode::OK
    })
    .await;
    let (status, body) = get(&api, "/health").await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );

    // What the binary registers (its allocator's figures) goes through promtool too.
    report_allocator(|| {
        Some(AllocatorStats {
            allocated: 50 << 20,
            active: 60 << 20,
            metadata: 5 << 20,
            resident: 80 << 20,
        })
    });
    let response = warp::test::request().path("/metrics").reply(&api).await;
    let text = std::str::from_utf8(response.body()).unwrap();
    assert!(
        text.contains("crowdpulse_allocator_allocated_bytes 52428800"),
        "{text}"
    );
    assert!(
        text.contains("crowdpulse_events_total{type=\"reaction\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("crowdpulse_dead_letters_total{reason=\"invalid\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("crowdpulse_http_requests_total{route=\"/v1/events\",status=\"202\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("crowdpulse_frontier_delay_seconds "),
        "{text}"
    );
    assert!(text.contains("crowdpulse_live_clients 0"), "{text}");
    // s1's windows are open for a minute yet: its analytics are active, and the API holds it.
    for line in [
        "crowdpulse_streams{state=\"active\"} 1",
        "crowdpulse_streams{state=\"quiet\"} 0",
        "crowdpulse_view_store_streams 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    promtool_accepts(text);

    // A failing process (a worker panicked, a sink failed) is not ready, however its frontier
    // moves: a load balancer takes it out while it stops.
    app.state.failed.set("worker 1 panicked".into()).unwrap();
    let (status, body) = get(&api, "/ready").await;
    assert_eq!(
        (status, body["failing"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("worker 1 panicked"))
    );
    let (status, body) = get(&api, "/health").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "failing", "reason": "worker 1 panicked"})
        )
    );
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_history_pages_filters_and_refuses_bad_queries() {
    let app = start(ApiConfig::default());
    let api = routes(app.state.clone());
    let now = wall_clock_ms();
    let texts: Vec<String> = (0..25)
        .map(|i| match i % 4 {
            0 => format!("what a goal number {i}"),
            1 => format!("when is the next match {i}?"),
            2 => format!("you are trash idiot {i}"),
            _ => format!("lol that was funny {i}"),
        })
        .collect();
    let mut events: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"type": "chat", "stream_id": "chatty", "user_id": format!("u{i}"), "text": text, "ts": now + i as u64}))
        .collect();
    events.push(json!({"type": "chat", "stream_id": "another", "user_id": "x", "text": "what a goal", "ts": now}));
    let body = serde_json::to_vec(&events).unwrap();
    let (status, answer, _) =
        call(&api, "POST", "/v1/events", Some("application/json"), &body).await;
    assert_eq!(
        (status, answer["accepted"].clone()),
        (StatusCode::ACCEPTED, json!(26))
    );

    eventually("every chat message in the history", || async {
        let (_, body) = get(&api, "/v1/streams/chatty/chat?limit=1000").await;
        body["messages"].as_array().is_some_and(|m| m.len() == 25)
    })
    .await;
    // The stream list puts the more active stream first (its id sorts after the other's), once
    // their windows are in.
    eventually("the streams ordered by activity", || async {
        let (_, list) = get(&api, "/v1/streams").await;
        let order: Vec<(&str, u64)> = list["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["stream_id"].as_str().unwrap(),
                    s["activity"].as_u64().unwrap(),
                )
            })
            .collect();
        order == [("chatty", 25), ("another", 1)]
    })
    .await;
    // The list is bounded: the most active `limit`, and how many there are.
    let (status, list) = get(&api, "/v1/streams?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 2, "{list}");
    let ids: Vec<&str> = list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chatty"]);
    for query in ["limit=0", "limit=10001", "limit=x", "top=1"] {
        let (status, body) = get(&api, &format!("/v1/streams?{query}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    }
    let (_, all) = get(&api, "/v1/streams/chatty/chat?limit=1000").await;
    let newest_first: Vec<String> = texts.iter().rev().cloned().collect();
    assert_eq!(chat_texts(&all), newest_first);
    assert_eq!(all["next"], Value::Null);
    let first = &all["messages"][24];
    assert_eq!(
        (
            &first["table"],
            &first["user_id"],
            &first["ts"],
            &first["stream_id"]
        ),
        (
            &json!("chat_messages"),
            &json!("u0"),
            &json!(now),
            &json!("chatty")
        )
    );
    assert!(first["sentiment"]
        .as_f64()
        .is_some_and(|s| (-1.0..=1.0).contains(&s)));

    // Pages of 10 follow each other through the cursor: every message once, in order.
    let (mut paged, mut path) = (Vec::new(), "/v1/streams/chatty/chat?limit=10".to_owned());
    let mut pages = 0;
    loop {
        let (status, page) = get(&api, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        paged.extend(chat_texts(&page));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/streams/chatty/chat?limit=10&before={next}"),
            None => break,
        }
    }
    assert_eq!((paged, pages), (newest_first.clone(), 3));

    // Filters, against what the test computes from the texts and the unfiltered answer.
    let (_, goals) = get(&api, "/v1/streams/chatty/chat?q=GOAL").await;
    let expected: Vec<&String> = newest_first.iter().filter(|t| t.contains("goal")).collect();
    assert_eq!(chat_texts(&goals).iter().collect::<Vec<_>>(), expected);
    let questions = chat_texts_where(&all, |m| m["category"] == "question");
    assert!(!questions.is_empty() && questions.len() < 25, "{all}");
    let (_, answer) = get(&api, "/v1/streams/chatty/chat?category=question").await;
    assert_eq!(chat_texts(&answer), questions);
    let range = format!("/v1/streams/chatty/chat?from={}&to={}", now + 5, now + 8);
    let (_, answer) = get(&api, &range).await;
    assert_eq!(
        chat_texts(&answer),
        [&texts[7], &texts[6], &texts[5]].map(String::clone)
    );

    for bad in [
        "category=rude",
        "limit=0",
        "limit=1001",
        "before=garbage",
        "q=%21%21",
        "from=yesterday",
        "colour=red",
    ] {
        let (status, body) = get(&api, &format!("/v1/streams/chatty/chat?{bad}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    }
    let (status, body) = get(&api, "/v1/streams/nobody/chat").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    app.shutdown();
}

/// 45 messages make two summaries (after the 20th and the 40th, in event order), served newest
/// first; a short lateness lets their panes become final within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_summaries_come_every_20_messages_and_are_served() {
    let completions = serve_completions(Answer::Text);
    let summarizer = SummaryTexts::start(
        &SummarizerConfig {
            url: completions.url.clone(),
            ..SummarizerConfig::default()
        },
        None,
    )
    .unwrap();
    let app = start_summarizing(
        ApiConfig::default(),
        PipelineConfig {
            max_out_of_orderness: Span(0),
            allowed_lateness: Span(2_000),
            idle_timeout: Span(300),
            ..PipelineConfig::default()
        },
        Some(Arc::new(summarizer)),
    );
    let api = routes(app.state.clone());
    let start = wall_clock_ms() - 1_000;
    // Posted newest first: the order that counts is event time.
    let events: Vec<Value> = (0..45u64)
        .rev()
        .map(|i| json!({"type": "chat", "stream_id": "talky", "user_id": format!("u{}", i % 7), "text": format!("what a goal {i} PogChamp"), "ts": start + i * 10}))
        .collect();
    let body = serde_json::to_vec(&events).unwrap();
    let (status, _, _) = call(&api, "POST", "/v1/events", Some("application/json"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("two summaries", || async {
        let (_, body) = get(&api, "/v1/streams/talky/summary?limit=5").await;
        body["summaries"].as_array().is_some_and(|s| s.len() == 2)
    })
    .await;
    let (_, body) = get(&api, "/v1/streams/talky/summary?limit=5").await;
    let summaries = body["summaries"].as_array().unwrap();
    let shape: Vec<(u64, u64, u64, u64)> = summaries
        .iter()
        .map(|s| {
            let n = |k: &str| s[k].as_u64().unwrap();
            (n("seq"), n("messages"), n("first_ts"), n("last_ts"))
        })
        .collect();
    assert_eq!(
        shape,
        [(2, 40, start, start + 390), (1, 20, start, start + 190)]
    );
    let latest = &summaries[0];
    assert_eq!(latest["table"], "chat_summaries");
    assert_eq!(
        latest["key_phrases"][0],
        json!({"messages": 40, "phrase": "goal pogchamp"})
    );
    assert_eq!(
        latest["top_emotes"][0],
        json!({"count": 40, "emote": "PogChamp"})
    );
    assert_eq!(
        latest["categories"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        40
    );
    let (_, one) = get(&api, "/v1/streams/talky/summary").await;
    assert_eq!(one["summaries"].as_array().unwrap().len(), 1);
    assert_eq!(one["summaries"][0]["seq"], 2);
    // The endpoint's text joins each summary; a client connecting now sees it in its snapshot.
    eventually("both texts", || async {
        let (_, body) = get(&api, "/v1/streams/talky/summary?limit=5").await;
        body["summaries"].as_array().is_some_and(|s| {
            s.iter()
                .all(|s| s["text"] == "talky talks about goal pogchamp")
        })
    })
    .await;
    assert_eq!(completions.requests().len(), 2);
    let snapshot: Value = serde_json::from_str(&app.state.store.snapshot("talky")).unwrap();
    let texts: Vec<&Value> = snapshot["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["table"] == "chat_summaries")
        .map(|r| &r["text"])
        .collect();
    assert_eq!(texts, [&json!("talky talks about goal pogchamp")]);
    let response = warp::test::request().path("/metrics").reply(&api).await;
    let metrics = String::from_utf8(response.body().to_vec()).unwrap();
    assert!(
        metrics.contains("crowdpulse_summary_texts_total{outcome=\"made\"} 2"),
        "{metrics}"
    );
    for bad in ["limit=0", "limit=101", "window=10s"] {
        let (status, body) = get(&api, &format!("/v1/streams/talky/summary?{bad}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    }
    let (status, body) = get(&api, "/v1/streams/nobody/summary").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    app.shutdown();
}

/// Records of a configured kind posted over HTTP (the in-process input of the demo) become the
/// kind's windows; records that are no objects or have an unreadable time are refused by index;
/// an unknown kind is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_records_posted_over_http_become_windows() {
    let downloads = KindConfig {
        preset: Some("content_downloads".into()),
        windows: Some(vec!["1s".into()]),
        ..KindConfig::default()
    };
    let app = start_with(
        ApiConfig::default(),
        PipelineConfig {
            max_out_of_orderness: Span(0),
            idle_timeout: Span(300),
            kinds: std::collections::BTreeMap::from([("dl".to_owned(), downloads)]),
            ..PipelineConfig::default()
        },
    );
    let api = routes(app.state.clone());
    let ts = wall_clock_ms();
    let download = |status: &str| json!({"ts": ts, "region": "eu", "device": "tv", "status": status, "duration_ms": 1000, "bytes": 10, "speed_kbps": 80});
    let body = json!([download("ok"), download("ok"), download("error"), download("ok"), "not an object", {"ts": "yesterday"}]).to_string();
    let json_type = Some("application/json");
    let (status, answer, _) = call(
        &api,
        "POST",
        "/v1/kinds/dl/records",
        json_type,
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["accepted"], 4, "{answer}");
    let refused: Vec<u64> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(refused, [4, 5], "{answer}");
    eventually("the kind's window", || async {
        let (_, body) = get(&api, "/v1/kinds/dl/metrics").await;
        body["rows"][0]["records"] == 4
    })
    .await;
    let (_, body) = get(&api, "/v1/kinds/dl/metrics").await;
    let row = &body["rows"][0];
    assert_eq!(row["dims"], json!({"region": "eu", "device": "tv"}));
    assert_eq!(
        (
            row["values"]["errors"].as_f64(),
            row["values"]["success_rate"].as_f64()
        ),
        (Some(1.0), Some(0.75))
    );
    let (status, body, _) = call(&api, "POST", "/v1/kinds/nope/records", json_type, b"[{}]").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    // No record's dimension holds a NUL, and a query for one would fail in Postgres.
    let (status, body, _) = call(&api, "GET", "/v1/kinds/dl/metrics?region=e%00u", None, b"").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    app.shutdown();
}

/// A client that retries a request whose answer it did not get (same `event_id`s) has every
/// event counted once; the repeats are counted as duplicate dead letters and shown once among
/// the recent reactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_requests_count_once() {
    let app = start(ApiConfig::default());
    let api = routes(app.state.clone());
    let now = wall_clock_ms();
    let batch = json!([
        {"type": "reaction", "stream_id": "retry", "user_id": "ann", "emoji": "🔥", "ts": now, "event_id": "a"},
        {"type": "reaction", "stream_id": "retry", "user_id": "bob", "emoji": "🔥", "ts": now, "event_id": "b"},
        {"type": "chat", "stream_id": "retry", "user_id": "bob", "text": "hi", "ts": now, "event_id": "c"},
        {"type": "reaction", "stream_id": "retry", "user_id": "cy", "emoji": "😂", "ts": now}
    ])
    .to_string();
    for _ in 0..2 {
        let json = Some("application/json");
        let (status, body, _) = call(&api, "POST", "/v1/events", json, batch.as_bytes()).await;
        assert_eq!(
            (status, body["accepted"].clone()),
            (StatusCode::ACCEPTED, json!(4))
        );
    }
    eventually("the stream totals", || async {
        let (_, body) = get(&api, "/v1/streams/retry").await;
        body["reactions"] == 4 && body["chat_messages"] == 1
    })
    .await;
    let (_, body) = get(&api, "/v1/streams/retry/emojis/top").await;
    // Without ids, cy's reaction was counted twice; the others once.
    assert_eq!(
        body["top"],
        json!([{"emoji": "🔥", "count": 2}, {"emoji": "😂", "count": 2}])
    );
    let (_, body) = get(&api, "/v1/streams/retry").await;
    assert_eq!(recent_users(&body), vec!["cy", "cy", "bob", "ann"]);
    let response = warp::test::request().path("/metrics").reply(&api).await;
    let text = std::str::from_utf8(response.body()).unwrap();
    assert!(
        text.contains("crowdpulse_dead_letters_total{reason=\"duplicate\"} 3"),
        "{text}"
    );
    app.shutdown();
}

/// Stream ids in paths are percent-decoded: a reaction posted to `/v1/streams/caf%C3%A9%20live/`
/// lands in the stream `café live` (the one events name in their body), readable by the same
/// encoded path; an encoding that is not UTF-8 is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ids_in_paths_are_percent_decoded() {
    let app = start(small_body_limit());
    let api = routes(app.state.clone());
    let now = wall_clock_ms();
    let event = json!([{"type": "reaction", "stream_id": "café live", "user_id": "ann", "emoji": "🔥", "ts": now}]);
    let (status, body, _) = call(
        &api,
        "POST",
        "/v1/events",
        Some("application/json"),
        event.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body, _) = call(
        &api,
        "POST",
        "/v1/streams/caf%C3%A9%20live/reactions",
        Some("application/json"),
        json!({"emoji": "🔥", "user_id": "bob"})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    eventually("both reactions in one stream", || {
        let api = api.clone();
        async move {
            let (status, body) =
                get(&api, "/v1/streams/caf%C3%A9%20live/emojis/top?window=10s").await;
            status == StatusCode::OK && body.to_string().contains("\"count\":2")
        }
    })
    .await;
    let (status, body) = get(&api, "/v1/streams").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !body.to_string().contains("%C3"),
        "no stream named by its encoding: {body}"
    );
    let (status, body) = get(&api, "/v1/streams/caf%FF/emojis/top?window=10s").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_json_body_with_its_status() {
    let app = start(small_body_limit());
    let api = routes(app.state.clone());
    let (s, b) = get(&api, "/nope").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    for path in [
        "/v1/streams/ghost",
        "/v1/streams/ghost/metrics",
        "/v1/streams/ghost/emojis/top",
        "/v1/streams/ghost/viewers",
        "/v1/streams/ghost/sentiment",
        "/v1/streams/ghost/moments",
    ] {
        let (s, b) = get(&api, path).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    }
    let too_large = vec![b' '; 5_000];
    let not_allowed = (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let unsupported = (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let bad = (StatusCode::BAD_REQUEST, "bad_request");
    let large = (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let json = Some("application/json");
    let reactions = "/v1/streams/s1/reactions";
    // (method, path, content type, body, expected status and code)
    let cases: [(&str, &str, Option<&str>, &[u8], _); 10] = [
        ("GET", "/v1/events", None, b"", not_allowed),
        ("DELETE", "/v1/streams", None, b"", not_allowed),
        ("POST", "/v1/events", Some("text/plain"), b"[]", unsupported),
        ("POST", "/v1/events", None, b"[]", unsupported),
        ("POST", "/v1/events", json, b"{\"type\":", bad),
        ("POST", "/v1/events", json, b"[]", bad),
        ("POST", "/v1/events", json, &too_large, large),
        ("POST", reactions, json, br#"{"user_id":"x"}"#, bad),
        ("POST", reactions, json, br#"{"emoji":""}"#, bad),
        (
            "POST",
            reactions,
            Some("text/plain"),
            br#"{"emoji":"x"}"#,
            unsupported,
        ),
    ];
    for (method, path, content_type, body, (status, code)) in cases {
        let (s, b, _) = call(&api, method, path, content_type, body).await;
        assert_error(s, &b, status, code);
    }
    // Every JSON error answer so far, counted by its code for `/metrics`.
    let http = &app.state.http;
    for (code, answers) in [
        ("not_found", 7),
        ("method_not_allowed", 2),
        ("unsupported_media_type", 3),
        ("bad_request", 4),
        ("payload_too_large", 1),
    ] {
        assert_eq!(http.errors(code), answers, "{code}");
    }

    // Query errors need a stream with results.
    react(&api, "s1", r#"{"emoji":"x"}"#).await;
    eventually("stream s1", || async {
        get(&api, "/v1/streams/s1").await.0 == StatusCode::OK
    })
    .await;
    for path in [
        "/v1/streams/s1/metrics?window=5s",
        "/v1/streams/s1/metrics?from=yesterday",
        "/v1/streams/s1/metrics?limit=0",
        "/v1/streams/s1/metrics?limit=many",
        "/v1/streams/s1/metrics?colour=red",
        "/v1/streams/s1/emojis/top?window=2h",
    ] {
        let (s, b) = get(&api, path).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    }
    let response = warp::test::request().path("/metrics").reply(&api).await;
    let text = std::str::from_utf8(response.body()).unwrap();
    assert!(
        text.contains("crowdpulse_http_errors_total{code=\"method_not_allowed\"} 2"),
        "{text}"
    );
    promtool_accepts(text);
    app.shutdown();
}

/// All-tied emojis beyond `pipeline.top_max_entries` are cut and marked on every answer that
/// lists them: the latest window's top, the session ranking and the statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tied_top_emojis_are_cut_and_marked_on_every_answer() {
    let pipeline = PipelineConfig {
        top_max_entries: 3,
        ..PipelineConfig::default()
    };
    let app = start_with(ApiConfig::default(), pipeline);
    let api = routes(app.state.clone());
    for emoji in ["a", "b", "c", "d", "e"] {
        react(&api, "t1", &format!(r#"{{"emoji":"{emoji}"}}"#)).await;
    }
    let window = "/v1/streams/t1/emojis/top?window=10s";
    // All five counted (one tick may have taken only some) and in the latest window.
    eventually("all five reactions counted", || async {
        get(&api, "/v1/statistics").await.1["total_emojis"] == 5
            && get(&api, window).await.1["truncated"] == true
    })
    .await;
    let (_, latest) = get(&api, window).await;
    let (_, session) = get(&api, "/v1/streams/t1/emojis/top").await;
    let (_, statistics) = get(&api, "/v1/statistics").await;
    for (what, top, truncated) in [
        ("window", &latest["top"], &latest["truncated"]),
        ("session", &session["top"], &session["truncated"]),
        (
            "statistics",
            &statistics["top_emojis"],
            &statistics["top_emojis_truncated"],
        ),
    ] {
        assert_eq!(top.as_array().map(Vec::len), Some(3), "{what}: {top}");
        assert_eq!(truncated, &json!(true), "{what}");
    }
    app.shutdown();
}

/// Error messages quote only an excerpt of what the client sent, however long, and ids in paths
/// are held to the limit of ids in events: a follower of a longer one would hold a view for an
/// id no event can carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_do_not_echo_long_input_and_long_ids_in_paths_are_refused() {
    let app = start(ApiConfig::default());
    let api = routes(app.state.clone());
    react(&api, "s1", r#"{"emoji":"x"}"#).await;
    eventually("stream s1", || async {
        get(&api, "/v1/streams/s1").await.0 == StatusCode::OK
    })
    .await;
    let long = "y".repeat(10_000);
    let id_of_100 = "i".repeat(100);
    let not_found = (StatusCode::NOT_FOUND, "not_found");
    let bad = (StatusCode::BAD_REQUEST, "bad_request");
    let json = Some("application/json");
    let field = format!(r#"{{"{long}":1}}"#);
    let event =
        format!(r#"[{{"type":"reaction","stream_id":"s1","user_id":"u","emoji":"x","{long}":1}}]"#);
    let cases: Vec<(&str, String, &[u8], _)> = vec![
        ("GET", format!("/v1/streams/{id_of_100}"), b"", not_found),
        (
            "GET",
            format!("/v1/streams/{id_of_100}/metrics"),
            b"",
            not_found,
        ),
        (
            "GET",
            format!("/v1/streams/s1/metrics?window={long}"),
            b"",
            bad,
        ),
        (
            "GET",
            format!("/v1/streams/s1/metrics?from={long}"),
            b"",
            bad,
        ),
        (
            "GET",
            format!("/v1/streams/s1/chat?before={long}"),
            b"",
            bad,
        ),
        (
            "GET",
            format!("/v1/streams/s1/chat?category={long}"),
            b"",
            bad,
        ),
        ("GET", format!("/v1/streams/s1/metrics?{long}=1"), b"", bad),
        (
            "GET",
            format!("/v1/kinds/{id_of_100}/metrics"),
            b"",
            not_found,
        ),
        (
            "POST",
            "/v1/streams/s1/reactions".into(),
            field.as_bytes(),
            bad,
        ),
        (
            "POST",
            "/v1/events".into(),
            event.as_bytes(),
            (StatusCode::ACCEPTED, ""),
        ),
        // Longer than any event's id (128 bytes): refused, after the method is checked.
        ("GET", format!("/v1/streams/{long}"), b"", bad),
        (
            "POST",
            format!("/v1/streams/{long}"),
            b"",
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ),
        (
            "POST",
            format!("/v1/streams/{long}/reactions"),
            br#"{"emoji":"x"}"#,
            bad,
        ),
    ];
    for (method, path, body, (status, code)) in cases {
        let (s, b, _) = call(&api, method, &path, json, body).await;
        let what = format!("{method} {}", &path[..path.len().min(60)]);
        let text = b.to_string();
        assert!(
            text.len() < 400,
            "{what}: an answer of {} bytes: {text:.400}",
            text.len()
        );
        if code.is_empty() {
            assert_eq!(s, status, "{what}: {text:.400}");
        } else {
            assert_error(s, &b, status, code);
        }
    }
    // Following such an id is refused before a view is made for it (the SSE answer would never
    // end: only its status is read).
    let events = warp::test::request().path(&format!("/v1/streams/{long}/events"));
    assert_eq!(status_of(&api, events).await.0, StatusCode::BAD_REQUEST);
    let handshake = warp::test::ws()
        .path(&format!("/v1/streams/{long}/live"))
        .handshake(api.clone())
        .await;
    assert!(
        handshake.is_err(),
        "a websocket for an id no event can carry"
    );
    let id_of_128 = "i".repeat(128);
    let _follower = warp::test::ws()
        .path(&format!("/v1/streams/{id_of_128}/live"))
        .handshake(api.clone())
        .await
        .expect("an id of the longest length an event may carry is followed");
    // The server subscribes once it has upgraded the connection, which may come after the
    // client's handshake returned (a fresh-clone run failed on asserting it at once).
    eventually("a view for a followed id of 128 bytes", || async {
        app.state
            .store
            .read()
            .streams
            .contains_key(id_of_128.as_str())
    })
    .await;
    assert!(
        !app.state.store.read().streams.contains_key(long.as_str()),
        "no view for an id no event can carry"
    );
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_input_answers_503_with_retry_after() {
    let app = start(ApiConfig {
        input_capacity: 2,
        ..ApiConfig::default()
    });
    let api = routes(app.state.clone());
    let events: Vec<Value> = (0..3).map(|i| json!({"type": "reaction", "stream_id": "s", "user_id": format!("u{i}"), "emoji": "x"})).collect();
    let (s, b, headers) = call(
        &api,
        "POST",
        "/v1/events",
        Some("application/json"),
        json!(events).to_string().as_bytes(),
    )
    .await;
    assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "busy");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_pushes_a_snapshot_then_changes_and_is_listed_as_a_client() {
    let app = start(ApiConfig::default());
    let api = routes(app.state.clone());
    let (mut client, snapshot) = follow_over_websocket(&api, "w1").await;
    assert_eq!(
        (snapshot["type"].clone(), snapshot["stream_id"].clone()),
        (json!("snapshot"), json!("w1"))
    );

    let (_, body) = get(&api, "/v1/clients").await;
    assert_eq!(body["clients"][0]["transport"], "websocket", "{body}");
    assert_eq!(body["clients"][0]["stream_id"], "w1");

    react(&api, "w1", r#"{"emoji":"🎉","user_id":"zed"}"#).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "no update carried the reaction");
        let message = tokio::time::timeout(Duration::from_secs(15), client.recv())
            .await
            .unwrap()
            .unwrap();
        let update: Value = serde_json::from_str(message.to_str().unwrap()).unwrap();
        assert_eq!(update["type"], "update");
        let carried = update["rows"].as_array().unwrap().iter().any(|row| {
            row["table"] == "window_emojis" && row["emoji"] == "🎉" && row["count"] == 1
        });
        if carried {
            break;
        }
    }
    drop(client);
    eventually("the client to leave the list", || async {
        get(&api, "/v1/clients").await.1["clients"] == json!([])
    })
    .await;

    // A client message beyond `api.limits.max_websocket_message_bytes` (4096) ends the
    // connection, counted; one within it changes nothing.
    let (mut client, _) = follow_over_websocket(&api, "w1").await;
    client.send_text("x".repeat(4_000)).await;
    client.send_text("x".repeat(5_000)).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while client.recv().await.is_ok() {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "an oversized message did not end the connection"
    );
    eventually("the oversized message counted", || async {
        app.state.http.refusals(Refusal::WebSocketMessage) == 1
    })
    .await;
    app.shutdown();
}

/// A WebSocket follower whose network went away without closing the connection is dropped
/// after `api.limits.websocket_silence`, though the stream pushes nothing that could stall on
/// it (before, it held its live-client slot for ever); one that answers the server's pings stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_follower_of_a_quiet_stream_is_dropped() {
    use tokio::io::AsyncWriteExt;
    let mut config = ApiConfig::default();
    config.limits.websocket_silence = Span(600);
    let app = start(config);
    let api = routes(app.state.clone());
    let (address, stop, server) = listen(&app).await;
    // warp's test client reads all the time, and so answers pings.
    let (mut answering, _) = follow_over_websocket(&api, "quiet-a").await;
    // A raw connection that upgrades and then sends nothing, as a vanished peer would.
    let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
    let upgrade = "GET /v1/streams/quiet-b/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    silent.write_all(upgrade.as_bytes()).await.unwrap();
    let upgraded = Instant::now();
    let seen = closed_within(&mut silent, Duration::from_secs(10)).await;
    assert!(seen.starts_with("HTTP/1.1 101"), "{seen}");
    assert!(upgraded.elapsed() >= Duration::from_millis(600));
    assert_eq!(app.state.http.refusals(Refusal::WebSocketSilence), 1);
    let mut pings = 0;
    while let Ok(Ok(message)) =
        tokio::time::timeout(Duration::from_millis(50), answering.recv()).await
    {
        pings += usize::from(message.is_ping());
    }
    assert!(pings >= 2, "{pings} pings");
    let (_, body) = get(&api, "/v1/clients").await;
    let followed: Vec<&Value> = body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["stream_id"])
        .collect();
    assert_eq!(followed, [&json!("quiet-a")], "{body}");
    let _ = stop.send(());
    server.await.unwrap();
    app.shutdown();
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = start(ApiConfig::default());
    let api = routes(app.state.clone());
    let (status, spec) = get(&api, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/streams", "get"),
        ("/v1/streams/{id}", "get"),
        ("/v1/streams/{id}/metrics", "get"),
        ("/v1/streams/{id}/emojis/top", "get"),
        ("/v1/streams/{id}/viewers", "get"),
        ("/v1/streams/{id}/sentiment", "get"),
        ("/v1/streams/{id}/categories", "get"),
        ("/v1/streams/{id}/chat", "get"),
        ("/v1/streams/{id}/summary", "get"),
        ("/v1/streams/{id}/moments", "get"),
        ("/v1/statistics", "get"),
        ("/v1/clients", "get"),
        ("/v1/kinds", "get"),
        ("/v1/kinds/{kind}/metrics", "get"),
        ("/v1/kinds/{kind}/alerts", "get"),
        ("/v1/events", "post"),
        ("/v1/kinds/{kind}/records", "post"),
        ("/v1/streams/{id}/reactions", "post"),
        ("/v1/streams/{id}/live", "get"),
        ("/v1/streams/{id}/events", "get"),
        ("/", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    assert_eq!(paths.len(), 25, "every described path exists");
    app.shutdown();
}

const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn with_tokens() -> ApiConfig {
    ApiConfig {
        tokens: Some(format!("read:{READ}; write:{WRITE}")),
        tokens_file: Some({
            let path =
                std::env::temp_dir().join(format!("crowdpulse-tokens-{}", std::process::id()));
            std::fs::write(&path, format!("# operators\nadmin:{ADMIN}\n")).unwrap();
            path
        }),
        cors_origins: vec!["https://dash.example.com".into()],
        ..ApiConfig::default()
    }
}

/// Status of one request; the answer's body is not read (live push never ends).
async fn status_of<F, R>(
    filter: &F,
    request: warp::test::RequestBuilder,
) -> (StatusCode, warp::http::HeaderMap)
where
    F: Filter<Extract = (R,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
    R: warp::Reply + Send + 'static,
{
    let response = request.filter(filter).await.unwrap().into_response();
    (response.status(), response.headers().clone())
}

/// Every route the OpenAPI document describes (and the dashboard's assets), with the scope its
/// operation declares: without a token, with a token of another scope, and with the right one
/// (DESIGN §6): 401 with a Bearer challenge, 403, then anything but those. Driven by the
/// document, so a route added there is in the matrix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_by_token_and_scope() {
    let app = start(with_tokens());
    let api = routes(app.state.clone());
    let event = br#"[{"type":"reaction","stream_id":"s1","user_id":"u","emoji":"x"}]"#;
    let reaction = br#"{"emoji":"x"}"#;
    let spec: Value = serde_json::from_str(crowdpulse_api::OPENAPI).unwrap();
    // (method, path, body, the token that may and one that may not); None: open to everyone.
    let mut routes_and_scopes = vec![(
        "GET".to_owned(),
        "/assets/app.js".to_owned(),
        &b""[..],
        None,
    )];
    for (template, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let path = template.replace("{id}", "s1").replace("{kind}", "k1");
            let scope = operation["security"][0]["bearer"][0].as_str();
            let tokens = match scope {
                None => None,
                Some("read") => Some((READ, WRITE)),
                Some("write") => Some((WRITE, READ)),
                Some("admin") => Some((ADMIN, READ)),
                Some(other) => panic!("{method} {template}: unknown scope {other}"),
            };
            let body: &[u8] = match (method.as_str(), template.as_str()) {
                ("post", "/v1/streams/{id}/reactions") => reaction,
                ("post", _) => event,
                _ => b"",
            };
            routes_and_scopes.push((method.to_uppercase(), path, body, tokens));
        }
    }
    assert_eq!(routes_and_scopes.len(), 26, "{routes_and_scopes:?}");
    let request = |method: &str, path: &str, body: &[u8], token: Option<&str>| {
        let mut request = warp::test::request()
            .method(method)
            .path(path)
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request
    };
    for (method, path, body, scopes) in &routes_and_scopes {
        let (method, path, body) = (method.as_str(), path.as_str(), *body);
        let what = format!("{method} {path}");
        let (status, _) = status_of(&api, request(method, path, body, None)).await;
        let Some((may, may_not)) = *scopes else {
            // (`/ready` may answer 503: this test's dataflow has no input to move it.)
            assert!(
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                "{what}: {status}"
            );
            continue;
        };
        let (status, headers) = status_of(&api, request(method, path, body, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let wrong = request(method, path, body, Some("not-a-configured-token-at-all"));
        assert_eq!(
            status_of(&api, wrong).await.0,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
        let other = request(method, path, body, Some(may_not));
        assert_eq!(
            status_of(&api, other).await.0,
            StatusCode::FORBIDDEN,
            "{what}"
        );
        for token in [may, ADMIN] {
            let (status, _) = status_of(&api, request(method, path, body, Some(token))).await;
            assert!(
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                "{what} with the right token: {status}"
            );
        }
    }
    // The token is checked before the path's id: a request without one learns nothing else.
    let long = format!("/v1/streams/{}/metrics", "y".repeat(1_000));
    let (status, _) = status_of(&api, request("GET", &long, b"", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = status_of(&api, request("GET", &long, b"", Some(READ))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Browsers cannot set headers on WebSocket and EventSource requests: the query carries it.
    let by_query = |token: &str| {
        warp::test::request().path(&format!("/v1/streams/s1/events?access_token={token}"))
    };
    assert_eq!(status_of(&api, by_query(READ)).await.0, StatusCode::OK);
    assert_eq!(
        status_of(&api, by_query(WRITE)).await.0,
        StatusCode::FORBIDDEN
    );
    let mut client = warp::test::ws()
        .path(&format!("/v1/streams/s1/live?access_token={READ}"))
        .handshake(api.clone())
        .await
        .expect("a read token opens a websocket");
    assert!(client.recv().await.unwrap().is_text());
    let (_, body, _) = call(&api, "GET", "/v1/streams", None, b"").await;
    assert_error(
        StatusCode::UNAUTHORIZED,
        &body,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    app.shutdown();
}

/// Cross-site browsers (DESIGN §6): the server's own origin and listed ones may write and open
/// WebSockets, others are refused before anything happens; listed origins get CORS answers;
/// writes need a JSON content type, so no form or text/plain post slips through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_of_other_sites_cannot_write_or_follow() {
    let app = start(with_tokens());
    let api = routes(app.state.clone());
    let post = |origin: Option<&str>, content_type: Option<&str>| {
        let mut request = warp::test::request()
            .method("POST")
            .path("/v1/streams/s1/reactions")
            .header("host", "127.0.0.1:8080")
            .header("authorization", format!("Bearer {WRITE}"))
            .body(br#"{"emoji":"x"}"#);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request
    };
    let json = Some("application/json");
    assert_eq!(
        status_of(&api, post(None, json)).await.0,
        StatusCode::ACCEPTED
    );
    let own = post(Some("http://127.0.0.1:8080"), json);
    assert_eq!(status_of(&api, own).await.0, StatusCode::ACCEPTED);
    let (status, headers) = status_of(&api, post(Some("https://dash.example.com"), json)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://dash.example.com"
    );
    let evil = post(Some("https://evil.example"), json);
    let (status, headers) = status_of(&api, evil).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!headers.contains_key("access-control-allow-origin"));
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (status, _) = status_of(&api, post(None, content_type)).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
    }
    let preflight = |origin: &str| {
        warp::test::request()
            .method("OPTIONS")
            .path("/v1/events")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
    };
    let (status, headers) = status_of(&api, preflight("https://dash.example.com")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    assert_eq!(
        status_of(&api, preflight("https://evil.example")).await.0,
        StatusCode::FORBIDDEN
    );
    let socket = |origin: &str| {
        warp::test::ws()
            .path(&format!("/v1/streams/s1/live?access_token={READ}"))
            .header("host", "127.0.0.1:8080")
            .header("origin", origin)
    };
    assert!(socket("https://evil.example")
        .handshake(api.clone())
        .await
        .is_err());
    assert!(socket("http://127.0.0.1:8080")
        .handshake(api.clone())
        .await
        .is_ok());
    app.shutdown();
}

/// Answers stay small whatever a body holds: at most `max_events_per_request` records (413
/// beyond), refusals listed up to `max_rejections_listed` and counted in `rejected_total`.
/// 1 MB of junk lines used to get a ~30 MB answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_are_bounded() {
    let app = start(ApiConfig::default());
    let api = routes(app.state.clone());
    let ndjson = Some("application/x-ndjson");
    let junk = "{\"type\":\"chat\",\"x\":\"".to_owned() + &"y".repeat(90) + "\"}\n";
    let body = junk.repeat(9_000);
    assert!(body.len() < 1 << 20);
    let (status, answer, _) = call(&api, "POST", "/v1/events", ndjson, body.as_bytes()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["rejected_total"], 9_000);
    assert_eq!(answer["rejected"].as_array().unwrap().len(), 100);
    assert!(
        answer.to_string().len() < 16_384,
        "{} bytes",
        answer.to_string().len()
    );
    let lines = "{}\n".repeat(10_001);
    let (status, answer, _) = call(&api, "POST", "/v1/events", ndjson, lines.as_bytes()).await;
    assert_error(
        status,
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_events",
    );
    app.shutdown();
}

/// Serves `app` on a free loopback port with the real server; returns its address and a
/// trigger that stops it, and the server task.
async fn listen(
    app: &LiveApp,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crowdpulse_api::server::serve(
        app.state.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    (address, stop, server)
}

/// Sends the request that follows `stream` over SSE on a raw connection.
async fn follow_over_sse(connection: &mut tokio::net::TcpStream, stream: &str) {
    use tokio::io::AsyncWriteExt;
    let request = format!("GET /v1/streams/{stream}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    connection.write_all(request.as_bytes()).await.unwrap();
}

/// Reads until the server closes the connection (or `within` passes: then panics); returns
/// what was read.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection stayed open: {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

fn tight_limits() -> ApiConfig {
    let mut api = ApiConfig::default();
    api.limits.header_timeout = Span(500);
    api.limits.body_timeout = Span(500);
    api.limits.send_timeout = Span(500);
    api.limits.shutdown_grace = Span(500);
    api.limits.max_connections = 3;
    api.limits.max_live_clients = 1;
    api
}

/// Slow or silent clients cannot hold connections (DESIGN §6): unfinished headers and idle
/// keep-alive connections are closed after `header_timeout`, and an unfinished body gets 408
/// after `body_timeout`. Each used to be held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let app = start(tight_limits());
    let (address, stop, server) = listen(&app).await;
    let connect = || tokio::net::TcpStream::connect(address);

    // Not a byte sent: the protocol is never even detected.
    let mut silent = connect().await.unwrap();
    closed_within(&mut silent, Duration::from_secs(3)).await;

    let mut unfinished = connect().await.unwrap();
    unfinished
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    closed_within(&mut unfinished, Duration::from_secs(3)).await;

    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answered = closed_within(&mut idle, Duration::from_secs(3)).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    let mut slow_body = connect().await.unwrap();
    slow_body
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[")
        .await
        .unwrap();
    let answered = closed_within(&mut slow_body, Duration::from_secs(3)).await;
    assert!(answered.starts_with("HTTP/1.1 408"), "{answered}");

    let metrics = app.state.http.as_ref();
    assert!(metrics.refusals(Refusal::HeaderTimeout) >= 3);
    assert_eq!(metrics.refusals(Refusal::BodyTimeout), 1);
    assert_eq!(metrics.refusals(Refusal::Connections), 0);
    let _ = stop.send(());
    server.await.unwrap();
    app.shutdown();
}

/// Connections beyond `max_connections` are closed as soon as they are accepted, and counted.
/// The held connections send nothing, so the header timeout is long here: with the tight one
/// they were closed before the surplus one arrived whenever the machine was busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed() {
    use tokio::io::AsyncWriteExt;
    let mut api = tight_limits();
    api.limits.header_timeout = Span(60_000);
    let app = start(api);
    let (address, stop, server) = listen(&app).await;
    let connect = || tokio::net::TcpStream::connect(address);

    let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| connect()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut over = connect().await.unwrap();
    over.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok();
    let answered = closed_within(&mut over, Duration::from_secs(10)).await;
    assert!(answered.is_empty(), "{answered}");
    assert_eq!(app.state.http.refusals(Refusal::Connections), 1);
    assert_eq!(app.state.http.refusals(Refusal::HeaderTimeout), 0);

    // Places come back once the server has seen the held connections close, which it does
    // on its own time: the first tries may still be refused.
    drop(held);
    let mut answered = String::new();
    for _ in 0..100 {
        let mut again = connect().await.unwrap();
        again
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok();
        answered = closed_within(&mut again, Duration::from_secs(10)).await;
        if !answered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let _ = stop.send(());
    server.await.unwrap();
    app.shutdown();
}

/// Clients beyond `max_live_clients` get 503, and a live client that reads nothing does not
/// hold up the stop beyond `shutdown_grace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surplus_live_clients_are_refused_and_silent_ones_do_not_hold_the_stop() {
    let app = start(tight_limits());
    let (address, stop, server) = listen(&app).await;
    let mut follower = tokio::net::TcpStream::connect(address).await.unwrap();
    follow_over_sse(&mut follower, "big").await;
    eventually("the follower to be registered", || async {
        app.state.clients.count() == 1
    })
    .await;
    let mut surplus = tokio::net::TcpStream::connect(address).await.unwrap();
    follow_over_sse(&mut surplus, "big").await;
    let answered = closed_within(&mut surplus, Duration::from_secs(3)).await;
    assert!(answered.starts_with("HTTP/1.1 503"), "{answered}");
    assert!(answered.contains("too_many_clients"), "{answered}");
    assert_eq!(app.state.http.refusals(Refusal::LiveClients), 1);
    let began = Instant::now();
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("the server stops within its grace")
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    app.shutdown();
}

/// An SSE follower whose socket takes nothing is disconnected after `send_timeout`, over a real
/// socket: its receive buffer is made small (before connecting, so the window it announces stays
/// small and the server's send buffer does not grow), and chat messages of 3 kB fill both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let app = start(tight_limits());
    let api = routes(app.state.clone());
    let (address, stop, server) = listen(&app).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4_096).unwrap();
    let mut follower = socket.connect(address).await.unwrap();
    follow_over_sse(&mut follower, "stalled").await;
    eventually("the follower to be registered", || async {
        app.state.clients.count() == 1
    })
    .await;
    let text = "x".repeat(3_000);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut posted = 0;
    while app.state.http.refusals(Refusal::SendStall) == 0 {
        assert!(
            Instant::now() < deadline,
            "still connected after {posted} chat messages of 3 kB"
        );
        let chats: Vec<Value> = (0..20)
            .map(|i| json!({"type": "chat", "stream_id": "stalled", "user_id": format!("u{i}"), "text": text}))
            .collect();
        let body = serde_json::to_vec(&chats).unwrap();
        let (status, answer, _) =
            call(&api, "POST", "/v1/events", Some("application/json"), &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        posted += chats.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("the follower to be dropped", || async {
        app.state.clients.count() == 0
    })
    .await;
    drop(follower);
    let _ = stop.send(());
    server.await.unwrap();
    app.shutdown();
}

/// Following any stream id used to create a view with its push channel that was never freed
/// (20,000 ids: +200-300 MB); views without results and without followers now retire, and so
/// do streams quiet for longer than the retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_views_retire_with_their_followers_and_the_retention() {
    // One short window, so a quiet stream's last window leaves the retention within seconds.
    let mut pipeline = PipelineConfig {
        max_out_of_orderness: Span(0),
        idle_timeout: Span(300),
        allowed_lateness: Span(0),
        windows: vec![WindowConfig {
            label: Some("1s".into()),
            size: Span(1_000),
            slide: None,
        }],
        ..PipelineConfig::default()
    };
    pipeline.moments.window = "1s".into();
    let app = start_with(
        ApiConfig {
            retention: Span(1_000),
            ..ApiConfig::default()
        },
        pipeline,
    );
    let api = routes(app.state.clone());
    let mut following = Vec::new();
    for i in 0..300 {
        let response = warp::test::request()
            .path(&format!("/v1/streams/ghost-{i}/events"))
            .filter(&api)
            .await
            .unwrap()
            .into_response();
        assert_eq!(response.status(), StatusCode::OK);
        following.push(response);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        app.state.store.read().streams.len() >= 300,
        "followed streams stay"
    );
    drop(following);
    react(&api, "real", r#"{"emoji":"x"}"#).await;
    eventually("the ghosts to retire", || async {
        let streams = app.state.store.read().streams.len();
        streams <= 1
    })
    .await;
    eventually("the quiet stream to retire after the retention", || async {
        app.state.store.read().streams.is_empty()
    })
    .await;
    app.shutdown();
}

/// DNS rebinding: a page of any site that points a name it controls at an open (tokenless)
/// server would be "the server's own origin" to the browser; such a server answers only to IP
/// addresses, `localhost` and `api.allowed_hosts`. With tokens, any host will do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_server_answers_only_to_its_own_host_names() {
    let app = start(ApiConfig {
        allowed_hosts: vec!["crowdpulse.internal".into()],
        ..ApiConfig::default()
    });
    let api = routes(app.state.clone());
    let get_by = |host: &str| {
        warp::test::request()
            .path("/v1/streams")
            .header("host", host)
    };
    for host in [
        "127.0.0.1:8080",
        "localhost:8080",
        "crowdpulse.internal:8080",
    ] {
        assert_eq!(
            status_of(&api, get_by(host)).await.0,
            StatusCode::OK,
            "{host}"
        );
    }
    let (status, body, _) = {
        let response = get_by("rebound.evil.example:8080").reply(&api).await;
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        (response.status(), body, ())
    };
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden_host");
    app.shutdown();
    let guarded = start(with_tokens());
    let api = routes(guarded.state.clone());
    let request = warp::test::request()
        .path("/v1/streams")
        .header("host", "rebound.evil.example:8080")
        .header("authorization", format!("Bearer {READ}"));
    assert_eq!(status_of(&api, request).await.0, StatusCode::OK);
    guarded.shutdown();
}
