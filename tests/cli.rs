//! The `crowdpulse` binary end to end: process (determinism across workers, bad input as dead
//! letters, unusable arguments), sentiment and generate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("crowdpulse-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn generate(dir: &Path, seed: u64, partitions: usize) -> Vec<PathBuf> {
    let output = dir.join("events.ndjson");
    run_ok(
        bin()
            .args([
                "generate",
                "--events",
                "30000",
                "--seed",
                &seed.to_string(),
                "--rate",
                "300",
                "--streams",
                "5",
            ])
            .arg("--output")
            .arg(&output)
            .args(["--partitions", &partitions.to_string()]),
    );
    if partitions == 1 {
        return vec![output];
    }
    (0..partitions)
        .map(|p| dir.join(format!("events-{p}.ndjson")))
        .collect()
}

fn process(inputs: &[PathBuf], output: &Path, workers: usize) -> String {
    let mut cmd = bin();
    cmd.arg("process");
    for input in inputs {
        cmd.arg("--input").arg(input);
    }
    run_ok(
        cmd.arg("--output")
            .arg(output)
            .args(["--workers", &workers.to_string()]),
    )
}

fn rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The chat summaries of an output against its own chat_messages rows, re-derived here: per
/// stream, messages in event order (time, source, partition, offset); summary `s` is made
/// after the `20 s`-th and covers the latest 100 of them within 10 minutes of it.
fn summaries_come_every_20_messages(ndjson: &str) {
    let rows: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut chat: std::collections::BTreeMap<&str, Vec<(u64, &str, u64, u64)>> =
        std::collections::BTreeMap::new();
    for row in rows.iter().filter(|r| r["table"] == "chat_messages") {
        chat.entry(row["stream_id"].as_str().unwrap())
            .or_default()
            .push((
                row["ts"].as_u64().unwrap(),
                row["source"].as_str().unwrap(),
                row["partition"].as_u64().unwrap(),
                row["offset"].as_u64().unwrap(),
            ));
    }
    let mut expected = Vec::new();
    for (stream, messages) in &mut chat {
        messages.sort();
        for seq in 1..=messages.len() as u64 / 20 {
            let last = (seq * 20 - 1) as usize;
            let first = (last + 1).saturating_sub(100);
            let covered: Vec<u64> = messages[first..=last]
                .iter()
                .map(|m| m.0)
                .filter(|ts| ts + 600_000 >= messages[last].0)
                .collect();
            expected.push(json!([
                stream,
                seq,
                covered.len(),
                covered[0],
                messages[last].0
            ]));
        }
    }
    let mut actual: Vec<Value> = rows
        .iter()
        .filter(|r| r["table"] == "chat_summaries")
        .map(|r| {
            json!([
                r["stream_id"],
                r["seq"],
                r["messages"],
                r["first_ts"],
                r["last_ts"]
            ])
        })
        .collect();
    actual.sort_by_key(|v| v.to_string());
    expected.sort_by_key(|v| v.to_string());
    assert!(expected.len() > 100, "{} summaries", expected.len());
    assert_eq!(actual, expected);
}

#[test]
fn output_is_byte_identical_for_1_2_and_4_workers() {
    let dir = scratch("workers");
    let inputs = generate(&dir, 11, 4);
    let outputs: Vec<Vec<u8>> = [1, 2, 4]
        .iter()
        .map(|w| {
            let out = dir.join(format!("out-{w}.ndjson"));
            let summary = process(&inputs, &out, *w);
            assert!(summary.contains("read 30000 events"), "{summary}");
            std::fs::read(out).unwrap()
        })
        .collect();
    assert!(outputs[0] == outputs[1] && outputs[1] == outputs[2]);
    // The bytes `process` writes for this input: FNV-1a 64 of the whole file, and its length.
    // Dead letters name their file, so the inputs are named relative to the directory. Pinned
    // before the runtime was rebuilt around one sink stage (commit a6672d5, 0x68c0_8c38_03cb_76bf,
    // 440,359 bytes); re-pinned when window_metrics gained the five category counts, after
    // checking that removing those fields and re-sorting the lines gives the old bytes exactly
    // (0x7053_d1db_3879_0434, 448,461 bytes); again for the 9,920 chat_messages rows of the
    // chat history, after checking that removing those lines gives those old bytes exactly
    // (0x2fad_f545_332a_f41b, 2,587,024 bytes); for the 487 chat_summaries rows, the same way
    // (0x7cb9_f3f8_9b9f_fae3, 2,994,809 bytes); and when summaries gained the identity of their
    // last message, after checking that removing those three fields gives those bytes exactly.
    let pinned = bin()
        .current_dir(&dir)
        .args(["process", "--workers", "2", "--output", "pinned.ndjson"])
        .args((0..4).flat_map(|p| ["--input".to_owned(), format!("events-{p}.ndjson")]))
        .output()
        .unwrap();
    assert!(pinned.status.success());
    let bytes = std::fs::read(dir.join("pinned.ndjson")).unwrap();
    let fnv = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    assert_eq!((fnv, bytes.len()), (0xc388_6528_20af_6466, 3_028_873));
    let text = String::from_utf8(outputs[0].clone()).unwrap();
    summaries_come_every_20_messages(&text);
    for table in [
        "window_metrics",
        "window_emojis",
        "window_top_emojis",
        "window_revenue",
        "stream_totals",
        "dead_letters",
    ] {
        assert!(
            text.contains(&format!("\"table\":\"{table}\"")),
            "no {table} rows"
        );
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "lines are written sorted");
    assert!(lines.iter().all(|l| l.contains("\"final\":true")));
}

#[test]
fn generate_is_deterministic_per_seed() {
    let (a, b, c) = (scratch("gen-a"), scratch("gen-b"), scratch("gen-c"));
    let read = |files: Vec<PathBuf>| std::fs::read(&files[0]).unwrap();
    let (fa, fb, fc) = (
        read(generate(&a, 5, 1)),
        read(generate(&b, 5, 1)),
        read(generate(&c, 6, 1)),
    );
    assert_eq!(fa, fb);
    assert_ne!(fa, fc);
}

#[test]
fn bad_records_become_dead_letters_and_the_run_completes() {
    let dir = scratch("bad");
    let input = dir.join("bad.ndjson");
    let mut f = std::fs::File::create(&input).unwrap();
    let good = r#"{"type":"chat","stream_id":"s","user_id":"u","ts":1767225600000,"text":"gg"}"#;
    writeln!(f, "{good}").unwrap();
    writeln!(
        f,
        r#"{{"type":"chat","stream_id":"s","user_id":"u","ts":17672"#
    )
    .unwrap(); // truncated
    writeln!(
        f,
        r#"{{"type":"chat","stream_id":"s","user_id":7,"ts":1767225600000,"text":"x"}}"#
    )
    .unwrap(); // wrong type
    writeln!(f, r#"{{"type":"poll","stream_id":"s","ts":1767225600000}}"#).unwrap(); // unknown type
    writeln!(
        f,
        r#"{{"type":"reaction","stream_id":"s","user_id":"u","ts":1767225600000}}"#
    )
    .unwrap(); // missing field
    writeln!(f, "{{\"text\":\"{}\"}}", "x".repeat(2 << 20)).unwrap(); // huge line
    f.write_all(b"{\"type\":\"chat\",\"stream_id\":\"s\xff\xfe\",\"user_id\":\"u\",\"ts\":1767225600000,\"text\":\"x\"}\n").unwrap();
    writeln!(
        f,
        r#"{{"type":"chat","stream_id":"s","user_id":"u","ts":1767225900000,"text":"later"}}"#
    )
    .unwrap();
    writeln!(f, "{good}").unwrap(); // 300 s behind the watermark: late
    drop(f);
    let out = dir.join("out.ndjson");
    let summary = process(std::slice::from_ref(&input), &out, 2);
    assert!(summary.contains("read 9 events"), "{summary}");
    assert!(
        summary.contains("1 late, 0 future, 0 duplicate, 7 dead-lettered"),
        "{summary}"
    );
    let all = rows(&out);
    let dead: Vec<&Value> = all
        .iter()
        .filter(|v| v["table"] == "dead_letters")
        .collect();
    let mut reasons: Vec<(u64, &str)> = dead
        .iter()
        .map(|d| (d["offset"].as_u64().unwrap(), d["reason"].as_str().unwrap()))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            (1, "decode"),
            (2, "invalid"),
            (3, "invalid"),
            (4, "invalid"),
            (5, "decode"),
            (6, "decode"),
            (8, "late")
        ]
    );
    let huge = dead.iter().find(|d| d["offset"] == 5).unwrap();
    assert!(
        huge["error"]
            .as_str()
            .unwrap()
            .contains("exceeds the size limit"),
        "{huge}"
    );
    assert_eq!(huge["payload"].as_str().unwrap().len(), 4096);
    assert!(dead
        .iter()
        .all(|d| d["source"] == input.display().to_string() && d["partition"] == 0));
    let chat: u64 = all
        .iter()
        .filter(|v| v["table"] == "window_metrics" && v["window"] == "10s")
        .map(|v| v["chat_messages"].as_u64().unwrap())
        .sum();
    assert_eq!(chat, 2, "the two valid, timely chat messages are counted");
}

/// A configured kind that cannot work stops the start, and the error names its key: from a
/// file and from an environment override.
#[test]
fn an_invalid_kind_is_refused_at_start_naming_its_key() {
    let dir = scratch("kinds");
    let input = dir.join("in.ndjson");
    std::fs::write(&input, "").unwrap();
    let config = dir.join("kinds.toml");
    std::fs::write(
        &config,
        "[pipeline.kinds.downloads]\npreset = \"content_downloads\"\nformat = \"avro\"\nschema = \"/nonexistent/download.avsc\"\n",
    )
    .unwrap();
    let process = |config: Option<&Path>, env: &[(&str, &str)]| {
        let mut cmd = bin();
        cmd.args(["process", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(dir.join("o"));
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let out = cmd.envs(env.iter().copied()).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = process(Some(&config), &[]);
    assert!(
        stderr.contains("pipeline.kinds.downloads.schema")
            && stderr.contains("/nonexistent/download.avsc"),
        "{stderr}"
    );
    let stderr = process(
        None,
        &[(
            "CROWDPULSE__PIPELINE__KINDS__DL__PRESET",
            "content_download",
        )],
    );
    assert!(stderr.contains("pipeline.kinds.dl.preset"), "{stderr}");
    let stderr = process(
        None,
        &[
            (
                "CROWDPULSE__PIPELINE__KINDS__DL__PRESET",
                "content_downloads",
            ),
            ("CROWDPULSE__PIPELINE__KINDS__DL__WINDOWS", "[\"1m/7s\"]"),
        ],
    );
    assert!(stderr.contains("pipeline.kinds.dl.windows[0]"), "{stderr}");
}

#[test]
fn unusable_arguments_and_unreadable_files_fail() {
    let dir = scratch("args");
    let out = bin()
        .args(["process", "--input"])
        .arg(dir.join("missing.ndjson"))
        .arg("--output")
        .arg(dir.join("o"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.ndjson"));
    assert!(!bin()
        .args(["process", "--output", "x"])
        .output()
        .unwrap()
        .status
        .success());
    let bad_config = dir.join("bad.toml");
    std::fs::write(&bad_config, "[pipeline]\nallowed_lateness = \"soon\"\n").unwrap();
    let input = dir.join("in.ndjson");
    std::fs::write(&input, "").unwrap();
    let out = bin()
        .args(["process", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.join("o"))
        .arg("--config")
        .arg(&bad_config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("allowed_lateness") || stderr.contains("soon"),
        "{stderr}"
    );
    // Flags of a Kafka `generate`, or overridden by --duration: refused (with --output they
    // were ignored, and --duration wrote events stamped now; --events and --start were ignored
    // by --duration).
    let output = dir.join("g.ndjson").display().to_string();
    let out = output.as_str();
    for args in [
        &["--output", out, "--duration", "1s"][..],
        &["--output", out, "--topic", "t"],
        &["--output", out, "--no-key"],
        &[
            "--kafka",
            "127.0.0.1:9",
            "--events",
            "5",
            "--duration",
            "1s",
        ],
        &[
            "--kafka",
            "127.0.0.1:9",
            "--start",
            "2026-01-01T00:00:00Z",
            "--duration",
            "1s",
        ],
    ] {
        let out = bin().arg("generate").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named = stderr.contains("--duration") || stderr.contains("--kafka");
        assert!(named, "{args:?}: {stderr}");
    }
}

/// Money sums stay exact however many of the largest accepted amount land in one window (they
/// used to wrap to a negative amount in a final row), and one unit above the cap is refused.
#[test]
fn money_sums_are_exact_at_the_largest_amount() {
    let dir = scratch("money");
    let input = dir.join("money.ndjson");
    let mut f = std::fs::File::create(&input).unwrap();
    for i in 0..1000 {
        writeln!(
            f,
            r#"{{"type":"transaction","stream_id":"s","user_id":"u{i}","ts":1767225600000,"kind":"donation","amount":1000000000000,"currency":"USD"}}"#
        )
        .unwrap();
    }
    writeln!(
        f,
        r#"{{"type":"transaction","stream_id":"s","user_id":"u","ts":1767225600000,"kind":"donation","amount":1000000000000.01,"currency":"USD"}}"#
    )
    .unwrap();
    drop(f);
    let out = dir.join("out.ndjson");
    let summary = process(std::slice::from_ref(&input), &out, 2);
    assert!(summary.contains("1 dead-lettered"), "{summary}");
    let text = std::fs::read_to_string(&out).unwrap();
    let revenue: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(r#""table":"window_revenue""#) && l.contains(r#""window":"10s""#))
        .collect();
    assert_eq!(revenue.len(), 1, "{revenue:?}");
    assert!(
        revenue[0].contains(r#""amount":1000000000000000.0,"#)
            && revenue[0].contains(r#""transactions":1000,"#),
        "{}",
        revenue[0]
    );
}

/// When every emoji ties, the top list used to hold every one of them (10,000 tied emojis: 280 kB
/// per row, pushed on every update); it is cut after `pipeline.top_max_entries` (100) in
/// count-then-emoji order and marked `truncated`.
#[test]
fn tied_top_emojis_are_capped_and_marked() {
    let dir = scratch("ties");
    let input = dir.join("ties.ndjson");
    let mut f = std::fs::File::create(&input).unwrap();
    for i in 0..150 {
        writeln!(
            f,
            r#"{{"type":"reaction","stream_id":"s","user_id":"u","ts":1767225600000,"emoji":"e{i:03}"}}"#
        )
        .unwrap();
    }
    drop(f);
    let out = dir.join("out.ndjson");
    process(std::slice::from_ref(&input), &out, 2);
    let top: Vec<Value> = rows(&out)
        .into_iter()
        .filter(|r| r["table"] == "window_top_emojis" && r["window"] == "10s")
        .collect();
    assert_eq!(top.len(), 1);
    let entries = top[0]["top"].as_array().unwrap();
    assert_eq!(entries.len(), 100);
    assert_eq!(entries[0]["emoji"], "e000");
    assert_eq!(entries[99]["emoji"], "e099");
    assert_eq!(top[0]["truncated"], true);
}

/// A viewer who joined and vanished without a `leave` used to count (and be kept) forever; after
/// `pipeline.viewer_timeout` (10 min) without a join or heartbeat they count no more.
#[test]
fn viewers_without_a_heartbeat_time_out() {
    let dir = scratch("viewers");
    let input = dir.join("viewers.ndjson");
    let t0: u64 = 1_767_225_600_000;
    let lines = [
        format!(
            r#"{{"type":"viewer","stream_id":"s","user_id":"gone","ts":{t0},"action":"join"}}"#
        ),
        format!(
            r#"{{"type":"viewer","stream_id":"s","user_id":"stays","ts":{t0},"action":"join"}}"#
        ),
        format!(
            r#"{{"type":"viewer","stream_id":"s","user_id":"stays","ts":{},"action":"heartbeat"}}"#,
            t0 + 300_000
        ),
        format!(
            r#"{{"type":"chat","stream_id":"s","user_id":"u","ts":{},"text":"still here?"}}"#,
            t0 + 620_000
        ),
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.join("out.ndjson");
    process(std::slice::from_ref(&input), &out, 2);
    let viewers_at = |start: u64| {
        rows(&out)
            .into_iter()
            .find(|r| {
                r["table"] == "window_metrics" && r["window"] == "10s" && r["window_start"] == start
            })
            .map(|r| {
                (
                    r["viewers_peak"].as_u64().unwrap(),
                    r["viewers_end"].as_u64().unwrap(),
                )
            })
    };
    assert_eq!(viewers_at(t0), Some((2, 2)));
    // 620 s in: "gone" timed out at 600 s, "stays" heartbeated at 300 s, so counts until 900 s.
    assert_eq!(viewers_at(t0 + 620_000), Some((1, 1)));
}

/// An event repeating the `event_id` its stream already had for its type in the partition counts
/// once while the first occurrence is within the lateness horizon (whatever the repeat's time);
/// repeats are dead letters naming the first occurrence; after the horizon the id counts again.
#[test]
fn retried_events_count_once() {
    let dir = scratch("retries");
    let input = dir.join("retries.ndjson");
    let t0: u64 = 1_767_225_600_000;
    let reaction = |stream: &str, user: &str, ts: u64, id: Option<&str>| {
        let mut event = serde_json::json!({"type": "reaction", "stream_id": stream, "user_id": user, "emoji": "🔥", "ts": t0 + ts});
        if let Some(id) = id {
            event["event_id"] = id.into();
        }
        event.to_string()
    };
    let lines = [
        reaction("s", "u1", 1_000, Some("r1")),
        reaction("s", "u1", 1_000, Some("r1")), // 1: duplicate of 0
        reaction("s", "u2", 2_000, None),
        reaction("s", "u2", 2_000, None),       // 3: no id, counts
        reaction("t", "u1", 1_000, Some("r1")), // 4: another stream, counts
        format!(
            r#"{{"type":"chat","stream_id":"s","user_id":"u3","ts":{},"text":"hi","event_id":"r1"}}"#,
            t0 + 3_000
        ), // 5: the same id for another type: counts
        format!(
            r#"{{"type":"transaction","stream_id":"s","user_id":"u4","ts":{},"kind":"donation","amount":5,"currency":"USD","event_id":"tx"}}"#,
            t0 + 4_000
        ),
        format!(
            r#"{{"type":"transaction","stream_id":"s","user_id":"u4","ts":{},"kind":"donation","amount":5,"currency":"USD","event_id":"tx"}}"#,
            t0 + 9_000
        ), // 7: duplicate of 6
        reaction("s", "u5", 38_000, Some("edge")),
        reaction("s", "u6", 37_999, Some("gone")),
        format!(
            r#"{{"type":"chat","stream_id":"s","user_id":"u3","ts":{},"text":"later"}}"#,
            t0 + 100_000
        ), // oldest admissible now t0+38 s
        reaction("s", "u1", 1_000, Some("r1")),    // 11: late
        reaction("s", "u1", 40_000, Some("r1")), // 12: r1's first occurrence left the horizon: counts
        reaction("s", "u1", 40_000, Some("r1")), // 13: duplicate of 12
        reaction("s", "u5", 50_000, Some("edge")), // 14: duplicate of 8, just within the horizon
        reaction("s", "u6", 50_000, Some("gone")), // 15: 9 is just beyond it: counts
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.join("out.ndjson");
    let summary = process(std::slice::from_ref(&input), &out, 2);
    assert!(
        summary.contains("1 late, 0 future, 4 duplicate, 5 dead-lettered"),
        "{summary}"
    );
    let rows = rows(&out);
    let metrics = |stream: &str, start: u64| {
        rows.iter()
            .find(|r| {
                r["table"] == "window_metrics"
                    && r["window"] == "10s"
                    && r["stream_id"] == stream
                    && r["window_start"] == t0 + start
            })
            .map(|r| {
                (
                    r["reactions"].as_u64().unwrap(),
                    r["chat_messages"].as_u64().unwrap(),
                    r["transactions"].as_u64().unwrap(),
                )
            })
    };
    assert_eq!(metrics("s", 0), Some((3, 1, 1)));
    assert_eq!(metrics("t", 0), Some((1, 0, 0)));
    assert_eq!(metrics("s", 30_000), Some((2, 0, 0)));
    assert_eq!(metrics("s", 40_000), Some((1, 0, 0)));
    assert_eq!(metrics("s", 50_000), Some((1, 0, 0)));
    let revenue: Vec<&Value> = rows
        .iter()
        .filter(|r| r["table"] == "window_revenue" && r["window"] == "1m" && r["stream_id"] == "s")
        .collect();
    assert_eq!(revenue.len(), 1);
    assert_eq!(revenue[0]["amount"], 5.0);
    let mut dead: Vec<(u64, &str, &str)> = rows
        .iter()
        .filter(|r| r["table"] == "dead_letters")
        .map(|r| {
            (
                r["offset"].as_u64().unwrap(),
                r["reason"].as_str().unwrap(),
                r["error"].as_str().unwrap(),
            )
        })
        .collect();
    dead.sort();
    let reasons: Vec<(u64, &str)> = dead.iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(
        reasons,
        [
            (1, "duplicate"),
            (7, "duplicate"),
            (11, "late"),
            (13, "duplicate"),
            (14, "duplicate")
        ]
    );
    assert!(
        dead[0].2.contains("r1") && dead[0].2.contains("offset 0"),
        "{}",
        dead[0].2
    );
    assert!(dead[1].2.contains("offset 6"), "{}", dead[1].2);
    assert!(dead[3].2.contains("offset 12"), "{}", dead[3].2);
    assert!(dead[4].2.contains("offset 8"), "{}", dead[4].2);
}

/// A run that cannot finish (here: an input that turns out unreadable) fails without touching
/// the previous output; a run that finishes replaces it whole.
#[test]
fn a_failed_run_leaves_the_previous_output_as_it_was() {
    let dir = scratch("aside");
    let output = dir.join("rows.ndjson");
    std::fs::write(&output, "previous rows\n").unwrap();
    let unreadable = dir.join("a-directory");
    std::fs::create_dir_all(&unreadable).unwrap();
    let out = bin()
        .args(["process", "--input"])
        .arg(&unreadable)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "previous rows\n");
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(
        leftovers.len(),
        2,
        "nothing but the output and the input: {leftovers:?}"
    );
    let input = dir.join("in.ndjson");
    std::fs::write(&input, "{broken\n").unwrap();
    process(&[input], &output, 1);
    let written = std::fs::read_to_string(&output).unwrap();
    assert!(
        written.contains("dead_letters") && !written.contains("previous"),
        "{written}"
    );
}

/// `crowdpulse sentiment` (with `config`, if given) over `text` on stdin.
fn sentiment(config: Option<&Path>, text: &str) -> std::process::Output {
    let mut cmd = bin();
    cmd.arg("sentiment");
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The JSON lines of a successful `sentiment`.
fn scored(out: std::process::Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn sentiment_scores_stdin_lines() {
    let lines = scored(sentiment(
        None,
        "VADER is smart, handsome, and funny.\nthis stream is boring ResidentSleeper\n",
    ));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["compound"], 0.8316);
    assert_eq!(lines[0]["label"], "positive");
    assert_eq!(lines[1]["label"], "negative");
    for key in [
        "text", "compound", "positive", "neutral", "negative", "label", "category",
    ] {
        assert!(lines[1].get(key).is_some(), "{key}");
    }
    assert_eq!(lines[1]["category"], "other");
}

/// `[sentiment] category_lexicon` replaces the shipped category rules; a bad line stops the
/// start naming it.
#[test]
fn a_replaced_category_lexicon_is_used_and_a_bad_one_refused() {
    let dir = scratch("categories");
    let lexicon = dir.join("categories.txt");
    let config = dir.join("workers.toml");
    std::fs::write(
        &config,
        format!(
            "[sentiment]\ncategory_lexicon = {:?}\n",
            lexicon.to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(&lexicon, "# house rules\nhumor\tword\tResidentSleeper\t3\n").unwrap();
    let lines = scored(sentiment(
        Some(&config),
        "this stream is boring ResidentSleeper\nyou are trash\n",
    ));
    assert_eq!(lines[0]["category"], "humor");
    assert_eq!(
        lines[1]["category"], "other",
        "the shipped rules are replaced"
    );
    std::fs::write(&lexicon, "humor\tword\tlol\nfunny\tword\tlmao\n").unwrap();
    let out = sentiment(Some(&config), "lol\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lexicon category line 2"), "{stderr}");
}

/// Twelve quiet 10 s windows of 20 greetings, then one where 15 of 20 messages insult: the
/// window counts its categories and a `toxic_share` moment fires on it (values by hand: share
/// 15/20 = 0.75 against a baseline of 0 with the 0.05 deviation floor, z = 15).
#[test]
fn a_burst_of_insults_is_counted_and_becomes_a_toxic_share_moment() {
    let dir = scratch("toxic");
    let input = dir.join("chat.ndjson");
    let mut lines = String::new();
    let base: u64 = 1_700_000_000_000;
    for window in 0..13u64 {
        for i in 0..20u64 {
            let text = if window == 12 && i < 15 {
                "you are trash, idiot"
            } else {
                "hello everyone"
            };
            lines.push_str(&format!(
                "{}\n",
                json!({"type": "chat", "stream_id": "s", "user_id": format!("u{i}"),
                       "text": text, "ts": base + window * 10_000 + i * 100})
            ));
        }
    }
    std::fs::write(&input, lines).unwrap();
    let output = dir.join("out.ndjson");
    process(&[input], &output, 2);
    let rows = rows(&output);
    let burst = rows
        .iter()
        .find(|r| {
            r["table"] == "window_metrics"
                && r["window"] == "10s"
                && r["window_start"] == base + 120_000
        })
        .expect("the burst's window");
    assert_eq!(
        (
            &burst["toxic"],
            &burst["other"],
            &burst["praise"],
            &burst["humor"],
            &burst["question"]
        ),
        (&json!(15), &json!(5), &json!(0), &json!(0), &json!(0)),
        "{burst}"
    );
    let moment = rows
        .iter()
        .find(|r| r["table"] == "moments" && r["metric"] == "toxic_share")
        .expect("a toxic_share moment");
    assert_eq!(moment["peak_window_start"], base + 120_000, "{moment}");
    assert_eq!(moment["peak_value"], 0.75, "{moment}");
    assert_eq!(moment["zscore"], 15.0, "{moment}");
}
