//! Avro records in the Confluent wire format (byte 0, a 4-byte big-endian schema id, the datum),
//! resolved from the schema they were written with to the kind's reader schema, so producers
//! may evolve their schema (a field added with a default, a field dropped) without breaking the
//! kind.

use std::collections::BTreeMap;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;

use crate::kinds::record::{Fields, Scalar};

/// The most one decoded value may allocate: a record's size limit (1 MiB) with room for
/// decoding overhead.
const MAX_DATUM_BYTES: usize = 4 << 20;

/// Decodes a kind's Avro records.
#[derive(Debug)]
pub struct AvroDecoder {
    reader: Schema,
    /// Writer schemas by id; empty: every record is written with the reader schema.
    writers: BTreeMap<u32, Schema>,
}

/// Parses a schema's JSON text (`what` names it in errors).
pub fn parse_schema(what: &str, text: &str) -> Result<Schema, String> {
    Schema::parse_str(text).map_err(|e| format!("{what}: not an Avro schema: {e}"))
}

impl AvroDecoder {
    /// A decoder reading into `reader`, knowing `writers` by id.
    pub fn new(reader: Schema, writers: BTreeMap<u32, Schema>) -> Self {
        // A record's declared lengths are trusted up to this (the crate's default is 512 MiB,
        // which one small malformed record could make it allocate); records are at most 1 MiB.
        apache_avro::util::max_allocation_bytes(MAX_DATUM_BYTES);
        Self { reader, writers }
    }

    /// The record in `bytes`, in the reader schema's shape.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let (header, mut datum) = bytes
            .split_at_checked(5)
            .filter(|(header, _)| header[0] == 0)
            .ok_or("not in the Confluent wire format (byte 0, a 4-byte schema id, the datum)")?;
        let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let writer = match self.writers.is_empty() {
            true => &self.reader,
            false => self
                .writers
                .get(&id)
                .ok_or_else(|| format!("unknown schema id {id}"))?,
        };
        let value = GenericDatumReader::builder(writer)
            .reader_schema(&self.reader)
            .build()
            .and_then(|reader| reader.read_value(&mut datum))
            .map_err(|e| format!("schema id {id}: {e}"))?;
        if !datum.is_empty() {
            return Err(format!(
                "schema id {id}: {} bytes after the datum",
                datum.len()
            ));
        }
        Ok(value)
    }
}

impl AvroDecoder {
    /// A JSON record in the wire format, written with the reader schema under the id it is
    /// listed with (any id when no writer schemas are listed): what a producer using the
    /// kind's current schema sends.
    pub fn encode_json(&self, record: &serde_json::Value) -> Result<Vec<u8>, String> {
        let id =
            match self.writers.is_empty() {
                true => 1,
                false => *self
                    .writers
                    .iter()
                    .find(|(_, schema)| schema.canonical_form() == self.reader.canonical_form())
                    .ok_or(
                        "the reader schema is not among the writer schemas: no id to write with",
                    )?
                    .0,
            };
        let value = Value::try_from(record.clone())
            .and_then(|value| value.resolve(&self.reader))
            .map_err(|e| format!("record does not fit the schema: {e}"))?;
        encode(&self.reader, id, value)
    }
}

/// `value` written with `schema` under `id`, in the Confluent wire format.
pub fn encode(schema: &Schema, id: u32, value: Value) -> Result<Vec<u8>, String> {
    let datum = GenericDatumWriter::builder(schema)
        .build()
        .and_then(|writer| writer.write_value_to_vec(value))
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(5 + datum.len());
    bytes.push(0);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&datum);
    Ok(bytes)
}

/// The value inside a union.
fn unwrapped(value: &Value) -> &Value {
    match value {
        Value::Union(_, inner) => unwrapped(inner),
        other => other,
    }
}

impl Fields for Value {
    fn get(&self, path: &str) -> Option<Scalar<'_>> {
        let mut value = unwrapped(self);
        for segment in path.split('.') {
            value = match value {
                Value::Record(fields) => &fields.iter().find(|(name, _)| name == segment)?.1,
                Value::Map(entries) => entries.get(segment)?,
                _ => return None,
            };
            value = unwrapped(value);
        }
        match value {
            Value::Null => Some(Scalar::Null),
            Value::Boolean(b) => Some(Scalar::Bool(*b)),
            Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => {
                Some(Scalar::Number(f64::from(*i)))
            }
            Value::Long(l) | Value::TimestampMillis(l) | Value::LocalTimestampMillis(l) => {
                Some(Scalar::Number(*l as f64))
            }
            // Microsecond and nanosecond times are read in milliseconds, as every time is: an
            // instant down to its millisecond (an event time is whole milliseconds; a fraction
            // made the record invalid), a time of day with its fraction (a measure).
            Value::TimestampMicros(l) | Value::LocalTimestampMicros(l) => {
                Some(Scalar::Number(l.div_euclid(1_000) as f64))
            }
            Value::TimestampNanos(l) | Value::LocalTimestampNanos(l) => {
                Some(Scalar::Number(l.div_euclid(1_000_000) as f64))
            }
            Value::TimeMicros(l) => Some(Scalar::Number(*l as f64 / 1e3)),
            Value::Float(f) => Some(Scalar::Number(f64::from(*f))),
            Value::Double(d) => Some(Scalar::Number(*d)),
            Value::String(s) | Value::Enum(_, s) => Some(Scalar::Text(s)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type": "record", "name": "Download", "fields": [
        {"name": "ts", "type": "long"},
        {"name": "region", "type": "string"},
        {"name": "duration_ms", "type": "long"}]}"#;
    /// V1 plus a field with a default, and an optional nested record.
    const V2: &str = r#"{"type": "record", "name": "Download", "fields": [
        {"name": "ts", "type": "long"},
        {"name": "region", "type": "string"},
        {"name": "duration_ms", "type": "long"},
        {"name": "device", "type": "string", "default": "unknown-device"},
        {"name": "net", "type": ["null", {"type": "record", "name": "Net", "fields": [
            {"name": "cached", "type": "boolean"}]}], "default": null}]}"#;

    fn v1_record(ts: i64) -> Value {
        Value::Record(vec![
            ("ts".into(), Value::Long(ts)),
            ("region".into(), Value::String("eu".into())),
            ("duration_ms".into(), Value::Long(1_500)),
        ])
    }

    #[test]
    fn records_of_an_older_schema_decode_into_the_newer_one() {
        let (v1, v2) = (
            parse_schema("v1", V1).unwrap(),
            parse_schema("v2", V2).unwrap(),
        );
        let decoder = AvroDecoder::new(
            v2.clone(),
            BTreeMap::from([(1, v1.clone()), (2, v2.clone())]),
        );
        let old = encode(&v1, 1, v1_record(7)).unwrap();
        let value = decoder.decode(&old).unwrap();
        assert_eq!(value.get("ts"), Some(Scalar::Number(7.0)));
        assert_eq!(
            value.get("device"),
            Some(Scalar::Text("unknown-device")),
            "the default"
        );
        assert_eq!(value.get("net.cached"), None, "a null union has no field");

        let new = Value::Record(vec![
            ("ts".into(), Value::Long(8)),
            ("region".into(), Value::String("us".into())),
            ("duration_ms".into(), Value::Long(900)),
            ("device".into(), Value::String("tv".into())),
            (
                "net".into(),
                Value::Union(
                    1,
                    Box::new(Value::Record(vec![("cached".into(), Value::Boolean(true))])),
                ),
            ),
        ]);
        let value = decoder.decode(&encode(&v2, 2, new).unwrap()).unwrap();
        assert_eq!(value.get("device"), Some(Scalar::Text("tv")));
        assert_eq!(value.get("net.cached"), Some(Scalar::Bool(true)));
    }

    #[test]
    fn times_of_every_unit_read_in_milliseconds() {
        let record = Value::Record(vec![
            ("ms".into(), Value::TimestampMillis(1_500)),
            ("us".into(), Value::TimestampMicros(1_500_999)),
            ("ns".into(), Value::TimestampNanos(1_500_999_999)),
            ("local_us".into(), Value::LocalTimestampMicros(1_500_001)),
        ]);
        // Instants to their millisecond: with a fraction, an event time was refused.
        for field in ["ms", "us", "ns", "local_us"] {
            assert_eq!(record.get(field), Some(Scalar::Number(1_500.0)), "{field}");
        }
        let time_of_day = Value::Record(vec![("t".into(), Value::TimeMicros(1_500))]);
        assert_eq!(time_of_day.get("t"), Some(Scalar::Number(1.5)));
    }

    #[test]
    fn bad_records_say_why() {
        let v1 = parse_schema("v1", V1).unwrap();
        let decoder = AvroDecoder::new(v1.clone(), BTreeMap::from([(1, v1.clone())]));
        let good = encode(&v1, 1, v1_record(7)).unwrap();
        let unknown_id = encode(&v1, 9, v1_record(7)).unwrap();
        let mut trailing = good.clone();
        trailing.push(0);
        for (bytes, why) in [
            (&b"{\"ts\": 1}"[..], "wire format"),
            (&good[..3], "wire format"),
            (&unknown_id[..], "unknown schema id 9"),
            (&good[..good.len() - 1], "schema id 1"),
            (&trailing[..], "1 bytes after the datum"),
        ] {
            let error = decoder.decode(bytes).unwrap_err();
            assert!(error.contains(why), "{why}: {error}");
        }
        assert!(parse_schema("broken.avsc", "{\"type\": \"recrd\"}")
            .unwrap_err()
            .contains("broken.avsc"));
        let single = AvroDecoder::new(v1.clone(), BTreeMap::new());
        assert!(single.decode(&unknown_id).is_ok(), "one schema: any id");
    }
}
