//! A kind's record as the analytics read it: fields looked up by path in any of the formats,
//! and what each measure observes of the record.

use serde::{Deserialize, Serialize};

use crate::event::Millis;
use bincode::Options;

use crate::error::Error;
use crate::kinds::config::{KindFormat, KindSpec, MeasureOp};
use crate::timestamp::{millis_from_number, parse_rfc3339};

/// A field's value, as conditions, dimensions and measures read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// Null (or absent).
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string.
    Text(&'a str),
}

/// Field lookup by dotted path (`a.b.c`); None: absent or not a scalar.
pub trait Fields {
    /// The value at `path`.
    fn get(&self, path: &str) -> Option<Scalar<'_>>;
}

impl Fields for serde_json::Value {
    fn get(&self, path: &str) -> Option<Scalar<'_>> {
        let mut value = self;
        for segment in path.split('.') {
            value = value.as_object()?.get(segment)?;
        }
        match value {
            serde_json::Value::Null => Some(Scalar::Null),
            serde_json::Value::Bool(b) => Some(Scalar::Bool(*b)),
            serde_json::Value::Number(n) => n.as_f64().map(Scalar::Number),
            serde_json::Value::String(s) => Some(Scalar::Text(s)),
            _ => None,
        }
    }
}

/// A value of the bincode format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FieldValue {
    /// Null.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Text(String),
}

/// The bincode format's record: (field path, value) pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlatRecord(pub Vec<(String, FieldValue)>);

impl Fields for FlatRecord {
    fn get(&self, path: &str) -> Option<Scalar<'_>> {
        let (_, value) = self.0.iter().find(|(p, _)| p == path)?;
        Some(match value {
            FieldValue::Null => Scalar::Null,
            FieldValue::Bool(b) => Scalar::Bool(*b),
            FieldValue::Int(i) => Scalar::Number(*i as f64),
            FieldValue::Float(f) => Scalar::Number(*f),
            FieldValue::Text(s) => Scalar::Text(s),
        })
    }
}

/// The largest magnitude a sum or mean takes; larger numbers are skipped for them as non-numbers
/// are. Sums are kept in millionths in an i128: below this no sum of any realistic number of
/// values can overflow it, while saturating at its bounds made a sum depend on the order of its
/// values. (Min, max and percentiles take any finite number.)
pub const MAX_SUMMED_VALUE: f64 = 1e15;

fn summable(op: MeasureOp, value: f64) -> bool {
    !matches!(op, MeasureOp::Sum | MeasureOp::Avg) || value.abs() <= MAX_SUMMED_VALUE
}

/// What one measure observes of one record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Observation {
    /// Nothing (the condition fails, or the field is not a number).
    Skip,
    /// Counted; for a rate, a match.
    Hit,
    /// For a rate: a record that does not match.
    Miss,
    /// A number read.
    Value(f64),
}

/// A decoded record of a kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindEvent {
    /// Event time (None: the record has none; the broker's or the arrival time is used).
    pub ts: Option<Millis>,
    /// The dimensions' values, in the kind's order (`unknown` when absent or null).
    pub dims: Vec<String>,
    /// Each measure's observation, in the kind's order.
    pub observations: Vec<Observation>,
}

/// The value of an absent or null dimension.
pub const UNKNOWN: &str = "unknown";

/// Longest dimension value kept (bytes, cut at a character boundary): rows stay small.
const MAX_DIMENSION_BYTES: usize = 256;

fn dimension(value: Option<Scalar<'_>>) -> String {
    let text = match value {
        None | Some(Scalar::Null) => return UNKNOWN.to_owned(),
        Some(Scalar::Bool(b)) => return b.to_string(),
        Some(Scalar::Number(n)) => return n.to_string(),
        Some(Scalar::Text(t)) => t,
    };
    let mut end = text.len().min(MAX_DIMENSION_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Reads a record of `spec`'s kind; errors say what is wrong with its time.
pub fn read(spec: &KindSpec, record: &impl Fields) -> Result<KindEvent, String> {
    let ts = match record.get(&spec.time) {
        None | Some(Scalar::Null) => None,
        Some(Scalar::Number(n)) => {
            Some(millis_from_number(n).map_err(|e| format!("{}: {e}", spec.time))?)
        }
        Some(Scalar::Text(t)) => Some(parse_rfc3339(t).map_err(|e| format!("{}: {e}", spec.time))?),
        Some(Scalar::Bool(_)) => return Err(format!("{}: a boolean is no time", spec.time)),
    };
    let dims = spec
        .dimensions
        .iter()
        .map(|path| dimension(record.get(path)))
        .collect();
    let observations = spec
        .measures
        .iter()
        .map(|(measure, condition)| {
            let holds = condition.as_ref().is_none_or(|c| c.holds(record));
            match (measure.op, holds) {
                (MeasureOp::Rate, true) | (MeasureOp::Count, true) => Observation::Hit,
                (MeasureOp::Rate, false) => Observation::Miss,
                (_, false) => Observation::Skip,
                (_, true) => match measure.field.as_deref().and_then(|f| record.get(f)) {
                    // + 0.0 makes -0.0 a 0.0: min and max then cannot depend on merge order.
                    Some(Scalar::Number(n)) if n.is_finite() && summable(measure.op, n) => {
                        Observation::Value(n + 0.0)
                    }
                    _ => Observation::Skip,
                },
            }
        })
        .collect();
    Ok(KindEvent {
        ts,
        dims,
        observations,
    })
}

/// Decodes a record of `spec`'s kind: undecodable bytes are `Error::Decode`, a bad time
/// `Error::Invalid`.
pub fn decode(spec: &KindSpec, bytes: &[u8]) -> Result<KindEvent, Error> {
    match spec.format {
        KindFormat::Json => {
            let value: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| Error::Decode(format!("not JSON: {e}")))?;
            if !value.is_object() {
                return Err(Error::Decode("not a JSON object".into()));
            }
            read(spec, &value).map_err(Error::Invalid)
        }
        KindFormat::Bincode => {
            let record: FlatRecord = bincode::DefaultOptions::new()
                .with_fixint_encoding()
                .with_limit(bytes.len() as u64 * 2 + 64)
                .deserialize(bytes)
                .map_err(|e| Error::Decode(format!("bincode: {e}")))?;
            read(spec, &record).map_err(Error::Invalid)
        }
        KindFormat::Avro => {
            let decoder = spec
                .avro
                .as_ref()
                .ok_or_else(|| Error::Decode("the kind's Avro schemas are not loaded".into()))?;
            let value = decoder.decode(bytes).map_err(Error::Decode)?;
            read(spec, &value).map_err(Error::Invalid)
        }
    }
}

/// Adds `value`'s scalar fields to `out` under their dotted paths (`a.b`), as [`Fields`] reads
/// a JSON record: a nested object's fields are where a bincode record of the kind keeps them.
fn flatten(path: &str, value: &serde_json::Value, out: &mut Vec<(String, FieldValue)>) {
    let scalar = match value {
        serde_json::Value::Object(fields) => {
            for (name, value) in fields {
                match path {
                    "" => flatten(name, value, out),
                    _ => flatten(&format!("{path}.{name}"), value, out),
                }
            }
            return;
        }
        serde_json::Value::Null => FieldValue::Null,
        serde_json::Value::Bool(b) => FieldValue::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => FieldValue::Int(i),
            (None, Some(f)) => FieldValue::Float(f),
            (None, None) => return,
        },
        serde_json::Value::String(s) => FieldValue::Text(s.clone()),
        serde_json::Value::Array(_) => return,
    };
    out.push((path.to_owned(), scalar));
}

/// Encodes a JSON record in `spec`'s format (the generator's and HTTP ingest's; bincode keeps the
/// scalar fields under their dotted paths, so it reads as the JSON record does).
pub fn encode(spec: &KindSpec, record: &serde_json::Value) -> Result<Vec<u8>, String> {
    match spec.format {
        KindFormat::Json => serde_json::to_vec(record).map_err(|e| e.to_string()),
        KindFormat::Bincode => {
            if !record.is_object() {
                return Err("not a JSON object".into());
            }
            let mut fields = Vec::new();
            flatten("", record, &mut fields);
            let flat = FlatRecord(fields);
            bincode::DefaultOptions::new()
                .with_fixint_encoding()
                .serialize(&flat)
                .map_err(|e| e.to_string())
        }
        KindFormat::Avro => spec
            .avro
            .as_ref()
            .ok_or("the kind's Avro schemas are not loaded")?
            .encode_json(record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::config::content_downloads;
    use serde_json::json;

    #[test]
    fn the_preset_reads_a_download() {
        let spec = content_downloads().resolve("downloads").unwrap();
        let record = json!({"ts": "2026-01-05T10:00:00Z", "region": "eu-west", "status": "error",
            "duration_ms": 31000, "bytes": 1000, "speed_kbps": "fast"});
        let event = read(&spec, &record).unwrap();
        assert_eq!(event.ts, Some(1_767_607_200_000));
        assert_eq!(event.dims, ["eu-west", UNKNOWN]);
        use Observation::*;
        assert_eq!(
            event.observations,
            [
                Hit,
                Hit,
                Miss,
                Value(31000.0),
                Value(31000.0),
                Value(31000.0),
                Value(31000.0),
                Skip,
                Skip,
                Value(1000.0)
            ]
        );
        let flat = FlatRecord(vec![
            ("ts".into(), FieldValue::Int(1_000)),
            ("status".into(), FieldValue::Text("ok".into())),
            ("speed_kbps".into(), FieldValue::Float(12.5)),
        ]);
        let event = read(&spec, &flat).unwrap();
        assert_eq!(event.ts, Some(1_000));
        assert_eq!(event.observations[1..3], [Skip, Hit]);
        assert_eq!(event.observations[7], Value(12.5));
        // -0.0 is read as 0.0: a min or max of both would otherwise depend on merge order.
        let negative_zero = read(&spec, &json!({"ts": 1, "duration_ms": -0.0})).unwrap();
        let Value(zero) = negative_zero.observations[3] else {
            panic!("{negative_zero:?}");
        };
        assert!(zero == 0.0 && zero.is_sign_positive(), "{zero}");
        // Beyond 1e15 a number is skipped by sums and means: saturated sums of 1e33, 1e33 and
        // -1e33 came out as -0.000001 or 1.7e32 by their order. Other measures take it.
        let sums = |event: &KindEvent| -> Vec<Observation> {
            spec.measures
                .iter()
                .zip(&event.observations)
                .filter(|((m, _), _)| matches!(m.op, MeasureOp::Sum | MeasureOp::Avg))
                .filter(|((m, _), _)| matches!(m.field.as_deref(), Some("duration_ms" | "bytes")))
                .map(|(_, o)| *o)
                .collect()
        };
        for huge in [1e33, -2e15] {
            let event = read(&spec, &json!({"ts": 1, "duration_ms": huge, "bytes": huge})).unwrap();
            assert!(sums(&event).iter().all(|o| *o == Skip), "{huge}: {event:?}");
            assert!(
                event.observations.contains(&Value(huge)),
                "{huge}: {event:?}"
            );
        }
        let event = read(&spec, &json!({"ts": 1, "duration_ms": 1e15, "bytes": 1e15})).unwrap();
        assert_eq!(
            sums(&event).len(),
            2,
            "the preset sums bytes and averages the duration"
        );
        assert!(sums(&event).iter().all(|o| *o == Value(1e15)), "{event:?}");
        assert!(read(&spec, &json!({"ts": true})).is_err());
        assert!(read(&spec, &json!({"ts": "yesterday"})).is_err());
    }

    /// A record HTTP ingest checked as JSON reads the same once encoded for a bincode kind,
    /// nested fields included (they were dropped: the posted time and dimension were lost).
    #[test]
    fn a_bincode_kind_reads_an_encoded_record_as_its_json() {
        let mut config = content_downloads();
        config.format = Some(KindFormat::Bincode);
        config.time = Some("meta.ts".into());
        config.dimensions = Some(vec!["geo.region".into(), "device".into()]);
        let spec = config.resolve("downloads").unwrap();
        let record = json!({"meta": {"ts": 1_767_225_600_000u64}, "geo": {"region": "eu"},
            "device": "tv", "status": "ok", "duration_ms": 2.5, "tags": ["a"]});
        let as_json = read(&spec, &record).unwrap();
        assert_eq!(as_json.ts, Some(1_767_225_600_000));
        assert_eq!(as_json.dims, ["eu", "tv"]);
        let bytes = encode(&spec, &record).unwrap();
        assert_eq!(decode(&spec, &bytes).unwrap(), as_json);
    }
}
