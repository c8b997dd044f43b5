//! Every endpoint through `warp::test`, against a real live dataflow (2 workers, no generator):
//! ingest, results, push, statistics, metrics, OpenAPI, and each error status.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crowdpulse_api::filters::routes;
use crowdpulse_connectors::config::ApiConfig;
use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_dataflow::config::{PipelineConfig, Span};
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::rows::{Moment, Row, Score};
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::live::{Feed, LiveApp, LiveOptions};
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::Filter;

fn start(api: ApiConfig) -> LiveApp {
    LiveApp::start(&LiveOptions {
        cluster: Cluster::local(2),
        feed: Feed::Generated {
            rate: 0.0,
            streams: 1,
            seed: 1,
        },
        sinks: Vec::new(),
        throttle: None,
        checkpoints: None,
        postgres: None,
        history: None,
        plan: Plan::new(PipelineConfig {
            max_out_of_orderness: Span(0),
            idle_timeout: Span(300),
            ..PipelineConfig::default()
        })
        .unwrap(),
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
    let recent: Vec<&str> = body["recent_reactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(recent, vec!["eve", "dee", "cy", "ann"]);

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
                moment,
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

    let response = warp::test::request().path("/metrics").reply(&api).await;
    let text = std::str::from_utf8(response.body()).unwrap();
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
    promtool_accepts(text);
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

    // Query errors need a stream with results.
    let (s, _, _) = call(
        &api,
        "POST",
        "/v1/streams/s1/reactions",
        Some("application/json"),
        br#"{"emoji":"x"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
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
    let mut client = warp::test::ws()
        .path("/v1/streams/w1/live")
        .handshake(api.clone())
        .await
        .expect("handshake");
    let snapshot: Value =
        serde_json::from_str(client.recv().await.unwrap().to_str().unwrap()).unwrap();
    assert_eq!(
        (snapshot["type"].clone(), snapshot["stream_id"].clone()),
        (json!("snapshot"), json!("w1"))
    );

    let (_, body) = get(&api, "/v1/clients").await;
    assert_eq!(body["clients"][0]["transport"], "websocket", "{body}");
    assert_eq!(body["clients"][0]["stream_id"], "w1");

    let (s, _, _) = call(
        &api,
        "POST",
        "/v1/streams/w1/reactions",
        Some("application/json"),
        r#"{"emoji":"🎉","user_id":"zed"}"#.as_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
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
        ("/v1/streams/{id}/moments", "get"),
        ("/v1/statistics", "get"),
        ("/v1/clients", "get"),
        ("/v1/events", "post"),
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
    assert_eq!(paths.len(), 18, "every described path exists");
    app.shutdown();
}
