//! `crowdpulse demo` as a child process: HTTP ingest, the results over REST, the same change
//! pushed over WebSocket and SSE, and a clean stop on Ctrl-C.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{eventually, get_json, http, post_reaction, Demo};

/// Reads WebSocket text messages until one satisfies `wanted`.
fn await_message(
    socket: &mut tungstenite::WebSocket<TcpStream>,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match socket.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                if wanted(&message) {
                    return message;
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("websocket: {e}"),
        }
    }
    panic!("no matching websocket message");
}

fn carries_emoji(message: &Value, emoji: &str, count: u64) -> bool {
    message["rows"].as_array().is_some_and(|rows| {
        rows.iter().any(|r| {
            r["table"] == "window_emojis"
                && r["window"] == "10s"
                && r["emoji"] == emoji
                && r["count"] == count
        })
    })
}

#[test]
fn reactions_posted_over_http_reach_rest_websocket_and_sse() {
    let demo = Demo::start(&["--rate", "0", "--workers", "2"]);
    let address = demo.address.clone();

    let stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (mut socket, _) =
        tungstenite::client(format!("ws://{address}/v1/streams/e2e/live"), stream)
            .expect("websocket handshake");
    let snapshot = await_message(&mut socket, |m| m["type"] == "snapshot");
    assert_eq!(snapshot["stream_id"], "e2e");

    let mut sse = TcpStream::connect(&address).unwrap();
    write!(sse, "GET /v1/streams/e2e/events HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    sse.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let (_, clients) = get_json(&address, "/v1/clients");
    let transports: Vec<&str> = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["transport"].as_str().unwrap())
        .collect();
    assert!(transports.contains(&"websocket"), "{clients}");

    post_reaction(&address, "e2e", "🦄", "ann");
    post_reaction(&address, "e2e", "🦄", "bob");
    post_reaction(&address, "e2e", "🍕", "cy");

    let update = await_message(&mut socket, |m| {
        m["type"] == "update" && carries_emoji(m, "🦄", 2)
    });
    assert!(update["frontier"].as_u64().is_some());

    eventually("the reactions in the top emojis", || {
        let (status, body) = get_json(&address, "/v1/streams/e2e/emojis/top?window=10s");
        status == 200
            && body["top"]
                == serde_json::json!([{"emoji": "🦄", "count": 2}, {"emoji": "🍕", "count": 1}])
    });

    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The SSE format allows a space after the colon or none (warp writes none).
    let has_event = |seen: &str, name: &str| {
        seen.contains(&format!("event:{name}")) || seen.contains(&format!("event: {name}"))
    };
    while !(has_event(&seen, "snapshot") && has_event(&seen, "update") && seen.contains("🦄")) {
        assert!(Instant::now() < deadline, "sse carried: {seen}");
        let mut buffer = [0u8; 8192];
        match sse.read(&mut buffer) {
            Ok(0) => panic!("sse closed: {seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            Err(_) => {}
        }
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));

    let (status, body) = http(&address, "GET", "/v1/streams/e2e/nothing", None);
    assert_eq!(status, 404, "{body}");
    drop(socket);
    drop(sse);
    demo.stop();
}

/// With no other traffic, a posted reaction reaches a WebSocket client within the watermark
/// delay plus 200 ms: the in-process input knows it is caught up, so it holds the watermark back
/// no longer than `max_out_of_orderness` (500 ms in the demo), not `idle_timeout` (5 s).
#[test]
fn a_lone_posted_reaction_is_pushed_within_the_watermark_delay() {
    let demo = Demo::start(&["--rate", "0", "--workers", "2"]);
    let address = demo.address.clone();
    let stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let (mut socket, _) =
        tungstenite::client(format!("ws://{address}/v1/streams/lone/live"), stream)
            .expect("websocket handshake");
    await_message(&mut socket, |m| m["type"] == "snapshot");
    let mut latencies = Vec::new();
    for (i, emoji) in ["🦄", "🍕", "🎉"].iter().enumerate() {
        // Apart by more than the delay, so each reaction is alone.
        std::thread::sleep(Duration::from_millis(700));
        let posted = Instant::now();
        post_reaction(&address, "lone", emoji, &format!("u{i}"));
        await_message(&mut socket, |m| {
            m["type"] == "update" && carries_emoji(m, emoji, 1)
        });
        latencies.push(posted.elapsed());
    }
    // The median, so that one scheduling hiccup of a busy machine does not decide.
    let mut sorted = latencies.clone();
    sorted.sort();
    assert!(
        sorted[1] < Duration::from_millis(700),
        "pushed after {latencies:?}"
    );
    drop(socket);
    demo.stop();
}

/// One event dated in year 9999 is a `future` dead letter and moves no watermark: honest events
/// posted after it keep counting.
#[test]
fn a_far_future_event_is_a_dead_letter_and_honest_events_keep_counting() {
    let demo = Demo::start(&["--rate", "0", "--workers", "2"]);
    let address = demo.address.clone();
    let far = r#"{"type":"reaction","stream_id":"fut","user_id":"x","emoji":"🚀","ts":"9999-01-01T00:00:00Z"}"#;
    let (status, body) = http(
        &address,
        "POST",
        "/v1/events",
        Some(("application/x-ndjson", far.as_bytes())),
    );
    assert_eq!(status, 202, "{body}");
    eventually("the future dead letter", || {
        let (_, metrics) = http(&address, "GET", "/metrics", None);
        metrics.contains("crowdpulse_dead_letters_total{reason=\"future\"} 1")
    });
    post_reaction(&address, "fut", "🦄", "ann");
    post_reaction(&address, "fut", "🦄", "bob");
    eventually("the honest reactions counted", || {
        let (status, body) = get_json(&address, "/v1/streams/fut/emojis/top?window=10s");
        status == 200 && body["top"] == serde_json::json!([{"emoji": "🦄", "count": 2}])
    });
    let (_, metrics) = http(&address, "GET", "/metrics", None);
    assert!(
        metrics.contains("crowdpulse_dead_letters_total{reason=\"late\"} 0"),
        "{metrics}"
    );
    demo.stop();
}

/// The binary registers its allocator's figures: `/metrics` reports the heap it holds, within
/// what the allocator keeps resident.
#[cfg(feature = "jemalloc")]
#[test]
fn metrics_report_the_allocators_figures() {
    let demo = Demo::start(&["--rate", "0"]);
    let (_, metrics) = http(&demo.address, "GET", "/metrics", None);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let allocated = value("crowdpulse_allocator_allocated_bytes");
    let resident = value("crowdpulse_allocator_resident_bytes");
    assert!(
        allocated > 1e6 && resident >= allocated,
        "allocated {allocated}, resident {resident}"
    );
    demo.stop();
}

/// SIGTERM (what systemd and Kubernetes send) takes the same graceful path as Ctrl-C: the run
/// drains and exits 0 instead of dying with the signal.
#[test]
fn sigterm_stops_like_ctrl_c() {
    let demo = Demo::start(&["--rate", "0", "--workers", "2"]);
    post_reaction(&demo.address, "term", "👋", "u");
    eventually("the stream", || {
        get_json(&demo.address, "/v1/streams/term").0 == 200
    });
    demo.stop_with("TERM");
}

/// A kind of the download preset gets generated downloads in the demo: its windows appear under
/// `/v1/kinds`, with every combination's records counted.
#[test]
fn the_demo_generates_downloads_for_a_download_kind() {
    let demo = Demo::start_with_env(
        &["--rate", "400", "--workers", "2"],
        &[
            (
                "CROWDPULSE__PIPELINE__KINDS__DOWNLOADS__PRESET",
                "content_downloads",
            ),
            (
                "CROWDPULSE__PIPELINE__KINDS__DOWNLOADS__WINDOWS",
                "[\"1s\"]",
            ),
        ],
    );
    eventually("generated downloads in the kind's windows", || {
        let (status, body) = get_json(&demo.address, "/v1/kinds/downloads/metrics?limit=1000");
        status == 200
            && body["rows"].as_array().is_some_and(|rows| {
                rows.iter()
                    .map(|r| r["records"].as_u64().unwrap_or(0))
                    .sum::<u64>()
                    >= 20
            })
    });
    let (_, body) = get_json(&demo.address, "/v1/kinds/downloads/metrics?limit=1000");
    for row in body["rows"].as_array().unwrap() {
        assert_eq!(
            row["values"]["downloads"].as_f64(),
            row["records"].as_u64().map(|n| n as f64),
            "{row}"
        );
        assert!(
            row["dims"]["region"].is_string() && row["dims"]["device"].is_string(),
            "{row}"
        );
    }
    demo.stop();
}
