//! Configured kinds end to end: the content-download preset over generated downloads equals a
//! sequential oracle written here from the definitions (windows, measures, the percentile
//! sketch's buckets, alert rules), for 1 and 2 workers and uneven batches, in JSON and in Avro
//! (records of two schema versions, read into the newer).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use crowdpulse_dataflow::config::{PipelineConfig, Span};
use crowdpulse_dataflow::kinds::avro;
use crowdpulse_dataflow::kinds::config::{KindConfig, KindFormat};
use crowdpulse_dataflow::memory_reader::MemoryReader;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_dataflow::source::{PartitionReader, SourceCounters};
use serde_json::json;

const T0: u64 = 1_767_225_600_000;
const REGIONS: [&str; 4] = ["eu-west", "us-east", "ap-south", "sa-east"];
const DEVICES: [&str; 3] = ["tv", "phone", "web"];
const PARTITIONS: u32 = 3;

/// One generated download.
#[derive(Debug, Clone)]
struct Download {
    ts: u64,
    region: &'static str,
    device: &'static str,
    ok: bool,
    duration_ms: u64,
    bytes: u64,
    speed_kbps: u64,
}

/// 12,000 downloads over 20 minutes, up to 2 s out of order; in minute 7 the ap-south TVs fail
/// often and slowly (an error rate, a slow p95 and an error spike to find).
fn downloads() -> Vec<Download> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % n
    };
    (0..12_000u64)
        .map(|i| {
            let ts = T0 + i * 100 + next(2_000);
            let region = REGIONS[next(4) as usize];
            let device = DEVICES[next(3) as usize];
            let incident = (ts - T0) / 60_000 == 7 && region == "ap-south" && device == "tv";
            let ok = next(100) >= if incident { 60 } else { 3 };
            let duration_ms = match ok && !incident {
                true => 500 + next(7_500),
                false => 15_000 + next(30_000),
            };
            let speed_kbps = 200 + next(1_800);
            Download {
                ts,
                region,
                device,
                ok,
                duration_ms,
                bytes: duration_ms * speed_kbps / 8,
                speed_kbps,
            }
        })
        .collect()
}

fn payload(d: &Download) -> Vec<u8> {
    let status = if d.ok { "ok" } else { "error" };
    json!({"ts": d.ts, "region": d.region, "device": d.device, "status": status,
        "duration_ms": d.duration_ms, "bytes": d.bytes, "speed_kbps": d.speed_kbps})
    .to_string()
    .into_bytes()
}

fn pipeline() -> PipelineConfig {
    let downloads = KindConfig {
        preset: Some("content_downloads".into()),
        windows: Some(vec!["1m".into(), "5m/1m".into()]),
        ..KindConfig::default()
    };
    PipelineConfig {
        max_out_of_orderness: Span(2_000),
        allowed_lateness: Span(5_000),
        kinds: BTreeMap::from([("downloads".to_owned(), downloads)]),
        ..PipelineConfig::default()
    }
}

/// (window, start, [region, device]).
type WindowKey = (String, u64, Vec<String>);
/// (records, values by measure).
type Measured = (u64, Vec<Option<f64>>);
/// (rule, window start, [region, device], value, records).
type Fired = (String, u64, Vec<String>, f64, u64);

/// How the records are written.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Json,
    /// Avro in the Confluent wire format, alternately with schema 1 and its evolution 2.
    Avro,
}

/// The first schema producers wrote downloads with.
const SCHEMA_V1: &str = r#"{"type": "record", "name": "Download", "fields": [
    {"name": "ts", "type": "long"}, {"name": "region", "type": "string"},
    {"name": "device", "type": "string"}, {"name": "status", "type": "string"},
    {"name": "duration_ms", "type": "long"}, {"name": "bytes", "type": "long"},
    {"name": "speed_kbps", "type": "long"}]}"#;

/// Schema 1 and a field added with a default: the kind's reader schema.
const SCHEMA_V2: &str = r#"{"type": "record", "name": "Download", "fields": [
    {"name": "ts", "type": "long"}, {"name": "region", "type": "string"},
    {"name": "device", "type": "string"}, {"name": "status", "type": "string"},
    {"name": "duration_ms", "type": "long"}, {"name": "bytes", "type": "long"},
    {"name": "speed_kbps", "type": "long"},
    {"name": "cdn", "type": "string", "default": "edge"}]}"#;

fn avro_payload(i: usize, d: &Download) -> Vec<u8> {
    use apache_avro::types::Value;
    let long = |v: u64| Value::Long(v as i64);
    let mut fields = vec![
        ("ts".to_owned(), long(d.ts)),
        ("region".to_owned(), Value::String(d.region.into())),
        ("device".to_owned(), Value::String(d.device.into())),
        (
            "status".to_owned(),
            Value::String(if d.ok { "ok" } else { "error" }.into()),
        ),
        ("duration_ms".to_owned(), long(d.duration_ms)),
        ("bytes".to_owned(), long(d.bytes)),
        ("speed_kbps".to_owned(), long(d.speed_kbps)),
    ];
    let (id, text) = match i % 2 {
        0 => (1, SCHEMA_V1),
        _ => {
            fields.push(("cdn".to_owned(), Value::String("origin".into())));
            (2, SCHEMA_V2)
        }
    };
    let schema = apache_avro::Schema::parse_str(text).unwrap();
    avro::encode(&schema, id, Value::Record(fields)).unwrap()
}

/// The plan: the pipeline with, for Avro, the kind reading schema 2 and knowing both by id.
fn plan(encoding: Encoding) -> Plan {
    let mut config = pipeline();
    if let Encoding::Avro = encoding {
        let kind = config.kinds.get_mut("downloads").unwrap();
        kind.format = Some(KindFormat::Avro);
        kind.schema = Some("v2.avsc".into());
        kind.writer_schemas = BTreeMap::from([
            ("1".into(), "v1.avsc".into()),
            ("2".into(), "v2.avsc".into()),
        ]);
    }
    Plan::new(config)
        .unwrap()
        .with_avro_schemas(|path| match path.to_str() {
            Some("v1.avsc") => Ok(SCHEMA_V1.to_owned()),
            Some("v2.avsc") => Ok(SCHEMA_V2.to_owned()),
            other => Err(format!("no schema {other:?}")),
        })
        .unwrap()
}

fn engine_rows(
    workers: usize,
    encoding: Encoding,
    downloads: &[Download],
) -> (BTreeMap<WindowKey, Measured>, Vec<Fired>) {
    let mut partitions: Vec<Vec<Vec<u8>>> = vec![Vec::new(); PARTITIONS as usize];
    for (i, d) in downloads.iter().enumerate() {
        let bytes = match encoding {
            Encoding::Json => payload(d),
            Encoding::Avro => avro_payload(i, d),
        };
        partitions[i % PARTITIONS as usize].push(bytes);
    }
    let rows = support::run_plan_bounded(
        workers,
        plan(encoding),
        Arc::new(Analyzer::new(Lexicons::builtin())),
        Arc::new(SourceCounters::default()),
        move |worker, workers| {
            Ok((0..PARTITIONS)
                .filter(|p| *p as usize % workers == worker)
                .map(|p| {
                    let reader = MemoryReader::new("downloads", p, partitions[p as usize].clone())
                        .of_kind(0)
                        .with_batches(vec![7, 250, 33]);
                    Box::new(reader) as Box<dyn PartitionReader>
                })
                .collect())
        },
    )
    .unwrap();
    let mut windows = BTreeMap::new();
    let mut alerts = Vec::new();
    for row in rows {
        match row {
            Row::CustomMetrics {
                key,
                records,
                values,
                is_final: true,
            } => {
                let id = (key.window.to_string(), key.start, key.dims.to_vec());
                let values = values.iter().map(|v| v.map(|s| s.0)).collect();
                assert!(
                    windows.insert(id, (records, values)).is_none(),
                    "one final row per window"
                );
            }
            Row::Alert(alert) => alerts.push((
                alert.rule.clone(),
                alert.key.start,
                alert.key.dims.to_vec(),
                alert.value.0,
                alert.records,
            )),
            _ => {}
        }
    }
    alerts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (windows, alerts)
}

/// DDSketch with 1% relative error, from its definition: a value's bucket is
/// ceil(log_γ(value)) with γ = 1.01/0.99, a bucket stands for 2γ^i/(γ+1), and the q quantile is
/// the bucket of the value of rank floor(q·(n−1)).
fn sketch_quantile(values: &[f64], q: f64) -> Option<f64> {
    let gamma: f64 = (1.0 + 0.01) / (1.0 - 0.01);
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let value = *sorted.get((q * (sorted.len().max(1) - 1) as f64).floor() as usize)?;
    let bucket = (value.ln() / gamma.ln()).ceil() as i32;
    Some(2.0 * gamma.powi(bucket) / (gamma + 1.0))
}

/// The preset's measures of some downloads, in its order.
fn measures(window: &[&Download]) -> Vec<Option<f64>> {
    let n = window.len() as f64;
    let ok: Vec<&&Download> = window.iter().filter(|d| d.ok).collect();
    let durations: Vec<f64> = window.iter().map(|d| d.duration_ms as f64).collect();
    let speeds: Vec<u64> = ok.iter().map(|d| d.speed_kbps).collect();
    let mean = |values: &[u64]| {
        (!values.is_empty()).then(|| values.iter().sum::<u64>() as f64 / values.len() as f64)
    };
    vec![
        Some(n),
        Some((window.len() - ok.len()) as f64),
        Some(ok.len() as f64 / n),
        mean(&window.iter().map(|d| d.duration_ms).collect::<Vec<_>>()),
        sketch_quantile(&durations, 0.5),
        sketch_quantile(&durations, 0.95),
        sketch_quantile(&durations, 0.99),
        mean(&speeds),
        speeds.iter().min().map(|s| *s as f64),
        Some(window.iter().map(|d| d.bytes).sum::<u64>() as f64),
    ]
}

fn oracle(downloads: &[Download]) -> (BTreeMap<WindowKey, Measured>, Vec<Fired>) {
    let mut windows = BTreeMap::new();
    for (label, size, slide) in [("1m", 60_000u64, 60_000u64), ("5m/1m", 300_000, 60_000)] {
        let mut members: BTreeMap<(u64, Vec<String>), Vec<&Download>> = BTreeMap::new();
        for d in downloads {
            let dims = vec![d.region.to_owned(), d.device.to_owned()];
            let mut start = d.ts - d.ts % slide;
            loop {
                members.entry((start, dims.clone())).or_default().push(d);
                if start < slide || start - slide + size <= d.ts {
                    break;
                }
                start -= slide;
            }
        }
        for ((start, dims), window) in members {
            windows.insert(
                (label.to_owned(), start, dims),
                (window.len() as u64, measures(&window)),
            );
        }
    }
    // The rules judge the 1m windows of each combination in time order.
    let mut alerts = Vec::new();
    let mut history: BTreeMap<Vec<String>, Vec<(u64, f64)>> = BTreeMap::new();
    for ((label, start, dims), (records, values)) in &windows {
        if label != "1m" {
            continue;
        }
        let mut fire = |rule: &str, value: f64| {
            alerts.push((rule.to_owned(), *start, dims.clone(), value, *records));
        };
        let (success, p95, errors) = (values[2].unwrap(), values[5].unwrap(), values[1].unwrap());
        if *records >= 20 && success < 0.9 {
            fire("high_error_rate", success);
        }
        if *records >= 20 && p95 > 20_000.0 {
            fire("slow_downloads", p95);
        }
        let past = history.entry(dims.clone()).or_default();
        let recent: Vec<f64> = past
            .iter()
            .filter(|(s, _)| *s + 12 * 60_000 >= *start)
            .map(|(_, v)| *v)
            .collect();
        if recent.len() >= 2 {
            let mean = recent.iter().sum::<f64>() / recent.len() as f64;
            let std = (recent.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                / recent.len() as f64)
                .sqrt();
            if std > 0.0 && (errors - mean) / std >= 3.0 {
                fire("error_spike", errors);
            }
        }
        past.push((*start, errors));
    }
    alerts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (windows, alerts)
}

#[test]
fn the_download_preset_equals_the_oracle_for_one_and_two_workers_in_json_and_avro() {
    let downloads = downloads();
    let (expected_windows, expected_alerts) = oracle(&downloads);
    let rules: std::collections::BTreeSet<&str> =
        expected_alerts.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(
        rules.len(),
        3,
        "the data makes every rule fire: {expected_alerts:?}"
    );
    assert!(
        expected_windows.len() > 400,
        "{} windows",
        expected_windows.len()
    );
    for (workers, encoding) in [
        (1, Encoding::Json),
        (2, Encoding::Json),
        (1, Encoding::Avro),
        (2, Encoding::Avro),
    ] {
        let (windows, alerts) = engine_rows(workers, encoding, &downloads);
        let differing: Vec<_> = expected_windows
            .iter()
            .filter(|(key, measured)| windows.get(*key) != Some(measured))
            .take(3)
            .map(|(key, measured)| (key, measured, windows.get(key)))
            .collect();
        let run = format!("{workers} workers, {encoding:?}");
        assert!(differing.is_empty(), "{run}: {differing:#?}");
        assert_eq!(windows.len(), expected_windows.len(), "{run}");
        assert_eq!(alerts, expected_alerts, "{run}");
    }
}
