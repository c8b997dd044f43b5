//! Mutation fuzzing of every parser that takes outside input, on the stable toolchain.
//!
//! No coverage-guided fuzzer builds on this stable toolchain without extra system packages
//! (cargo-fuzz needs nightly sanitizers; AFL++ needs its own LLVM build), so each target runs a
//! seeded, deterministic mutator over a corpus of valid inputs: bit flips, interesting bytes and
//! JSON tokens, insertions, deletions, duplications, splices and truncations. A target checks
//! more than "no panic": what a decoder accepts must survive its encoder, JSON and bincode must
//! accept the same events, a parsed time must print and parse back to itself.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crowdpulse_api::handlers::{split_records, BodyFormat};
use crowdpulse_connectors::config::Config;
use crowdpulse_connectors::position::Position;
use crowdpulse_dataflow::codec::{
    decode_bincode, decode_json, encode_bincode, encode_json, DecodeContext,
};
use crowdpulse_dataflow::timestamp::{format_rfc3339, parse_rfc3339};

/// One fuzz target: a name, its seed inputs, and the check of one input (Err: a finding).
pub struct Target {
    /// Name on the command line and in reports.
    pub name: &'static str,
    /// Valid inputs the mutations start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Runs one input; `Err` describes a broken invariant.
    pub check: fn(&[u8]) -> Result<(), String>,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs tried.
    pub executions: u64,
    /// Inputs that panicked or broke an invariant, with what happened.
    pub findings: Vec<(Vec<u8>, String)>,
}

/// Every target.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "json",
            seeds: json_seeds,
            check: check_json,
        },
        Target {
            name: "bincode",
            seeds: bincode_seeds,
            check: check_bincode,
        },
        Target {
            name: "timestamp",
            seeds: timestamp_seeds,
            check: check_timestamp,
        },
        Target {
            name: "position",
            seeds: position_seeds,
            check: check_position,
        },
        Target {
            name: "config",
            seeds: config_seeds,
            check: check_config,
        },
        Target {
            name: "ingest_body",
            seeds: body_seeds,
            check: check_body,
        },
    ]
}

/// Runs `target` for `duration` from `seed`; stops early after 10 findings.
pub fn run(target: &Target, duration: Duration, seed: u64) -> Report {
    let corpus = (target.seeds)();
    let mut rng = Rng(seed | 1);
    let mut report = Report::default();
    let began = Instant::now();
    // The default hook would print every caught panic.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while began.elapsed() < duration && report.findings.len() < 10 {
        for _ in 0..256 {
            let input = mutate(&corpus, &mut rng);
            report.executions += 1;
            let outcome = catch_unwind(AssertUnwindSafe(|| (target.check)(&input)))
                .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&panic))));
            if let Err(what) = outcome {
                report.findings.push((input, what));
            }
        }
    }
    std::panic::set_hook(hook);
    report
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".into())
}

/// xorshift64: deterministic per seed, so a finding can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes and tokens that tend to sit on parsers' edges.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"-",
    b"0",
    b"-0",
    b"1e999",
    b"-1e999",
    b"1e-999",
    b"18446744073709551616",
    b"9223372036854775808",
    b"1000000000000.0001",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\xff",
    b"\xc3",
    b"\xf0\x9f",
    b"\n",
    b"\r\n",
    b" ",
    b"\"type\"",
    b"\"ts\"",
    b"\"amount\"",
    b"9999-12-31T23:59:59.999Z",
    b"+99999-01-01T00:00:00Z",
    b"1970-01-01T00:00:00-23:59",
    b"now-",
    b"999999999999d",
    b"topic:0:",
    b"=",
    b"[[",
    b"\"\"\"",
];

fn mutate(corpus: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut input = corpus[rng.below(corpus.len())].clone();
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(8) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = rng.next() as u8;
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            3 if at < input.len() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at..end);
            }
            4 if at < input.len() => {
                let end = (at + 1 + rng.below(64)).min(input.len());
                let copy = input[at..end].to_vec();
                input.splice(at..at, copy);
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            6 => input.truncate(at),
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let end = (at + token.len()).min(input.len());
                input.splice(at..end, token.iter().copied());
            }
        }
    }
    input.truncate(1 << 16);
    input
}

fn json_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"type":"chat","stream_id":"s1","user_id":"u","ts":1767225600000,"text":"gg wp 😀 LUL"}"#,
        r#"{"type":"reaction","stream_id":"café live","user_id":"u","ts":"2026-01-01T00:00:00.250Z","emoji":"🔥"}"#,
        r#"{"type":"viewer","stream_id":"s","user_id":"v","ts":5,"action":"join"}"#,
        r#"{"type":"viewer","stream_id":"s","ts":5,"viewer_count":1200}"#,
        r#"{"type":"transaction","stream_id":"s","user_id":"u","ts":1,"kind":"donation","amount":4.99,"currency":"USD"}"#,
        r#"{"type":"stream_meta","stream_id":"s","ts":1,"title":"Finals","category":"Chess","status":"live"}"#,
        r#"{"stream_id":"s","user_id":"u","emoji":"x"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn bincode_seeds() -> Vec<Vec<u8>> {
    json_seeds()
        .iter()
        .filter_map(|json| decode_json(json, &DecodeContext::default()).ok())
        .map(|event| encode_bincode(&event))
        .collect()
}

fn check_json(input: &[u8]) -> Result<(), String> {
    let context = DecodeContext::default();
    let Ok(event) = decode_json(input, &context) else {
        return Ok(());
    };
    let again = decode_json(encode_json(&event).as_bytes(), &context);
    if again.as_ref() != Ok(&event) {
        return Err(format!("json re-encoding changed {event:?} into {again:?}"));
    }
    let binary = decode_bincode(&encode_bincode(&event), &context);
    if binary.as_ref() != Ok(&event) {
        return Err(format!(
            "bincode refused or changed a JSON-accepted {event:?}: {binary:?}"
        ));
    }
    Ok(())
}

fn check_bincode(input: &[u8]) -> Result<(), String> {
    let context = DecodeContext::default();
    let Ok(event) = decode_bincode(input, &context) else {
        return Ok(());
    };
    if decode_bincode(&encode_bincode(&event), &context).as_ref() != Ok(&event) {
        return Err(format!("bincode re-encoding changed {event:?}"));
    }
    // Amounts travel through a double in JSON: acceptance must agree, exact values only up to
    // its 53 bits.
    if let Err(error) = decode_json(encode_json(&event).as_bytes(), &context) {
        return Err(format!(
            "JSON refused a bincode-accepted {event:?}: {error}"
        ));
    }
    Ok(())
}

fn timestamp_seeds() -> Vec<Vec<u8>> {
    [
        "2026-11-22T10:00:00.250Z",
        "1970-01-01T00:00:00Z",
        "2026-01-01T01:00:00+01:00",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn check_timestamp(input: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(input) else {
        return Ok(());
    };
    let Ok(ms) = parse_rfc3339(text) else {
        return Ok(());
    };
    let printed = format_rfc3339(ms);
    match parse_rfc3339(&printed) {
        Ok(back) if back == ms => Ok(()),
        other => Err(format!("{text:?} -> {ms} -> {printed:?} -> {other:?}")),
    }
}

fn position_seeds() -> Vec<Vec<u8>> {
    [
        "earliest",
        "latest",
        "now-15m",
        "2026-11-22T10:00:00Z",
        "events:0:42,events:3:7",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn check_position(input: &[u8]) -> Result<(), String> {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = Position::parse_start(text).map(|p| p.resolved(1_767_225_600_000));
        let _ = Position::parse_end(text).map(|p| p.resolved(1_767_225_600_000));
    }
    Ok(())
}

fn config_seeds() -> Vec<Vec<u8>> {
    vec![include_bytes!("../../workers.toml").to_vec()]
}

fn check_config(input: &[u8]) -> Result<(), String> {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = Config::from_toml(text, "fuzz", std::iter::empty());
    }
    Ok(())
}

fn body_seeds() -> Vec<Vec<u8>> {
    let lines: Vec<Vec<u8>> = json_seeds();
    let ndjson = lines.join(&b"\n"[..]);
    let array = [b"[".to_vec(), lines.join(&b","[..]), b"]".to_vec()].concat();
    vec![ndjson, array]
}

fn check_body(input: &[u8]) -> Result<(), String> {
    let body = Bytes::copy_from_slice(input);
    for format in [BodyFormat::Ndjson, BodyFormat::JsonArray] {
        if let Ok(records) = split_records(&body, format) {
            if records.len() > input.len() + 1 {
                return Err(format!(
                    "{} records from {} bytes",
                    records.len(),
                    input.len()
                ));
            }
            for record in records {
                check_json(record)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness reports what a target gets wrong, panics included.
    #[test]
    fn panics_and_broken_invariants_are_findings() {
        let panicking = Target {
            name: "panicking",
            seeds: json_seeds,
            check: |input| {
                assert!(!input.contains(&b'\\'), "backslash");
                Ok(())
            },
        };
        let report = run(&panicking, Duration::from_millis(300), 1);
        assert!(!report.findings.is_empty());
        assert!(report
            .findings
            .iter()
            .all(|(_, what)| what == "panicked: backslash"));
        let strict = Target {
            name: "strict",
            seeds: json_seeds,
            check: |input| match input.len() > 300 {
                true => Err("too long".into()),
                false => Ok(()),
            },
        };
        let report = run(&strict, Duration::from_millis(300), 1);
        assert!(!report.findings.is_empty());
    }
}
