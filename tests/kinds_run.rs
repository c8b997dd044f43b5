//! A configured kind through the real broker and PostgreSQL: `generate --kind` produces
//! content-download records to the kind's topic, a bounded `run` writes `custom_metrics` (and
//! any `alerts`) equal to its NDJSON output, every download counted once; a live `run` serves
//! the kind under `/v1/kinds` and the dashboard shows it (headless Chromium, screenshots).

#[path = "../connectors/tests/support/mod.rs"]
mod kafka_support;
#[path = "../runtime/tests/support/postgres.rs"]
mod postgres_support;
mod support;

use std::process::Command;

use kafka_support::{fresh_topic, BROKER};
use postgres_support::{assert_no_differences, fresh_config, Db};
use serde_json::{json, Value};
use support::browser::{chromium_or_skip, Browser};
use support::{eventually, get_json, Demo};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    stderr
}

const DOWNLOADS: u64 = 4_000;

#[test]
fn generated_downloads_reach_postgres_and_the_api() {
    let events = fresh_topic("kinds-events", 1);
    let downloads = fresh_topic("kinds-downloads", 2);
    let postgres = fresh_config("kinds_run");
    let env: Vec<(&str, String)> = vec![
        ("CROWDPULSE__KAFKA__BROKERS", BROKER.to_owned()),
        (
            "CROWDPULSE__KAFKA__TOPICS",
            format!("[{{name = \"{events}\"}}]"),
        ),
        ("CROWDPULSE__KAFKA__DEAD_LETTER_TOPIC", String::new()),
        (
            "CROWDPULSE__PIPELINE__KINDS__DL__PRESET",
            "content_downloads".into(),
        ),
        ("CROWDPULSE__PIPELINE__KINDS__DL__TOPIC", downloads.clone()),
        (
            "CROWDPULSE__PIPELINE__KINDS__DL__WINDOWS",
            "[\"10s\"]".into(),
        ),
        ("CROWDPULSE__PIPELINE__IDLE_TIMEOUT", "1s".into()),
        ("CROWDPULSE__POSTGRES__URL", postgres.url.clone()),
        ("CROWDPULSE__POSTGRES__SCHEMA", postgres.schema.clone()),
    ];
    let env = || env.iter().map(|(k, v)| (*k, v.as_str()));
    let produced = run_ok(bin().envs(env()).args([
        "generate", "--kind", "dl", "--kafka", BROKER, "--events", "4000", "--rate", "100",
    ]));
    assert!(
        produced.contains(&format!("produced {DOWNLOADS} dl records to {downloads}")),
        "{produced}"
    );

    // A bounded run: the tables equal the NDJSON rows, and the windows count every download.
    let output =
        std::env::temp_dir().join(format!("crowdpulse-kinds-{}.ndjson", std::process::id()));
    run_ok(
        bin()
            .envs(env())
            .args(["run", "--until", "latest", "--workers", "2", "--output"])
            .arg(&output),
    );
    let lines: Vec<String> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let rows: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let windows: Vec<&Value> = rows
        .iter()
        .filter(|r| r["table"] == "custom_metrics")
        .collect();
    // 40 s of downloads over 5 regions and 4 devices: 4 or 5 windows of 10 s per combination.
    assert!(windows.len() >= 80, "{} windows", windows.len());
    let counted: u64 = windows.iter().map(|r| r["records"].as_u64().unwrap()).sum();
    assert_eq!(counted, DOWNLOADS);
    let downloads_measure: u64 = windows
        .iter()
        .map(|r| r["values"]["downloads"].as_f64().unwrap() as u64)
        .sum();
    assert_eq!(downloads_measure, DOWNLOADS);
    let db = Db::connect();
    assert_no_differences(
        &db.differences(&postgres.schema, &lines),
        "the bounded run's tables",
    );

    // A live run serves the kind: its settings, windows filtered by dimension, its alerts.
    let (run, _rows) = Demo::run(
        &["--from", "earliest", "--workers", "2"],
        &env().collect::<Vec<_>>(),
    );
    let address = run.address.clone();
    let (status, kinds) = get_json(&address, "/v1/kinds");
    assert_eq!(status, 200, "{kinds}");
    assert_eq!(kinds["kinds"][0]["name"], "dl");
    assert_eq!(kinds["kinds"][0]["windows"], serde_json::json!(["10s"]));
    eventually("three windows", || {
        let (_, body) = get_json(&address, "/v1/kinds/dl/metrics?limit=3");
        body["rows"].as_array().is_some_and(|rows| rows.len() == 3)
    });
    let (status, body) = get_json(
        &address,
        "/v1/kinds/dl/metrics?region=eu-west&device=tv&limit=1000",
    );
    assert_eq!(status, 200);
    let rows = body["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["dims"] == serde_json::json!({"region": "eu-west", "device": "tv"})),
        "{body}"
    );
    let starts: Vec<u64> = rows
        .iter()
        .map(|r| r["window_start"].as_u64().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {starts:?}"
    );
    let (status, body) = get_json(&address, "/v1/kinds/dl/alerts");
    assert_eq!(status, 200);
    assert!(body["alerts"].is_array(), "{body}");
    for (path, status) in [
        ("/v1/kinds/dl/metrics?colour=red", 400),
        ("/v1/kinds/dl/metrics?window=1h", 400),
        ("/v1/kinds/dl/metrics?limit=0", 400),
        ("/v1/kinds/dl/metrics?from=yesterday", 400),
        ("/v1/kinds/nope/metrics", 404),
    ] {
        let (got, body) = get_json(&address, path);
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }

    // The dashboard's kinds view: the kind picked, a measure per window of one combination,
    // each combination's latest window, at phone and desktop sizes.
    if chromium_or_skip() {
        let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let profile = scratch.join(format!("chromium-kinds-{}", std::process::id()));
        let mut browser = Browser::open(&format!("http://{address}/"), &profile);
        browser.wait_for(
            "document.getElementById('kinds').hidden",
            json!(false),
            "the kinds view",
        );
        browser.wait_for(
            "document.getElementById('k-kind').value",
            json!("dl"),
            "the kind",
        );
        browser.wait_for(
            "document.querySelectorAll('#k-table tr').length > 10 && charts['c-kind'].data[0].length > 1 \
             && kindState.series.every((r) => JSON.stringify(r.dims) === document.getElementById('k-combo').value)",
            json!(true),
            "combinations and a series",
        );
        for (name, width, height) in [("phone", 390, 844), ("desktop", 1400, 1000)] {
            browser.call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700}),
            );
            // Nothing of the view past the right edge (the first offender named otherwise).
            let layout = "(() => { const w = window.innerWidth; \
                const out = [...document.querySelectorAll('body *')].find((e) => e.getBoundingClientRect().right > w + 0.5); \
                return `${document.documentElement.scrollWidth <= w} ${out ? out.tagName + '#' + out.id + '.' + out.className + ' ' + out.getBoundingClientRect().right : 'none'}`; })()";
            browser.wait_for(
                layout,
                json!("true none"),
                &format!("the kinds view at {name} size"),
            );
            browser.screenshot(&scratch.join(format!("kinds-{name}.png")));
        }
        drop(browser);
        let _ = std::fs::remove_dir_all(&profile);
    }
    run.stop();
}
