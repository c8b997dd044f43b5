//! Record codecs: JSON (with the `type` discriminator) and compact bincode, both ending in
//! [`Event::validate`], so a record is accepted or rejected the same way whatever its encoding.

use std::borrow::Cow;
use std::fmt;

use bincode::Options;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::{excerpt, shown, Error, Result};
use crate::event::{
    Event, EventBody, EventKind, FieldLimits, Millis, PresenceAction, StreamStatus, AMOUNT_SCALE,
};
use crate::flat_json::{self, FlatValue};
use crate::timestamp::{millis_from_number, parse_rfc3339};

/// Per-source facts a decoder needs besides the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeContext {
    /// The kind to assume when `type` is absent (a topic that carries one kind).
    pub default_kind: Option<EventKind>,
    /// Event time to use when `ts` is absent (the Kafka message timestamp); files have none.
    pub fallback_ts: Option<Millis>,
    /// The longest accepted fields.
    pub limits: FieldLimits,
    /// Set when the partition carries a configured kind: its index in the plan's kinds.
    pub kind: Option<usize>,
}

/// Record encoding on a source or sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per record.
    #[default]
    Json,
    /// bincode of [`Event`].
    Bincode,
}

impl Format {
    /// Decodes one record in this format.
    pub fn decode(self, bytes: &[u8], ctx: &DecodeContext) -> Result<Event> {
        match self {
            Format::Json => decode_json(bytes, ctx),
            Format::Bincode => decode_bincode(bytes, ctx),
        }
    }
}

/// A JSON value seen loosely: fields that do not matter for an event's kind are ignored whatever
/// their type, and fields that do matter get a precise validation message.
#[derive(Debug)]
enum Loose<'a> {
    Str(Cow<'a, str>),
    Int(Integer),
    Float(f64),
    Other(&'static str),
}

/// A JSON integer in the range serde_json reads (i64 and u64), kept in 16 bytes rather than an
/// `i128`'s 16-aligned ones: that makes [`Loose`] 24 bytes instead of 32, and the decoder's
/// record of fifteen of them a quarter smaller to initialize.
#[derive(Debug, Clone, Copy)]
struct Integer {
    magnitude: u64,
    negative: bool,
}

impl Integer {
    fn value(self) -> i128 {
        let magnitude = i128::from(self.magnitude);
        if self.negative {
            -magnitude
        } else {
            magnitude
        }
    }
}

impl fmt::Display for Integer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.value().fmt(f)
    }
}

impl From<u64> for Integer {
    fn from(magnitude: u64) -> Self {
        Integer {
            magnitude,
            negative: false,
        }
    }
}

impl From<i64> for Integer {
    fn from(value: i64) -> Self {
        Integer {
            magnitude: value.unsigned_abs(),
            negative: value < 0,
        }
    }
}

impl Loose<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Loose::Str(_) => "a string",
            Loose::Int(_) | Loose::Float(_) => "a number",
            Loose::Other(name) => name,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct LooseVisitor;
        impl<'de> Visitor<'de> for LooseVisitor {
            type Value = Loose<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Owned(v)))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E> {
                Ok(Loose::Int(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E> {
                Ok(Loose::Int(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Self::Value, E> {
                Ok(Loose::Float(v))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
                Ok(Loose::Other("a boolean"))
            }
            fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
                Ok(Loose::Other("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other("an object"))
            }
        }
        deserializer.deserialize_any(LooseVisitor)
    }
}

/// The fields of every kind; unknown fields are skipped by serde.
#[derive(Debug, Default, Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Loose<'a>>,
    #[serde(borrow)]
    stream_id: Option<Loose<'a>>,
    #[serde(borrow)]
    user_id: Option<Loose<'a>>,
    #[serde(borrow)]
    ts: Option<Loose<'a>>,
    #[serde(borrow)]
    text: Option<Loose<'a>>,
    #[serde(borrow)]
    emoji: Option<Loose<'a>>,
    #[serde(borrow)]
    action: Option<Loose<'a>>,
    #[serde(borrow)]
    viewer_count: Option<Loose<'a>>,
    #[serde(rename = "kind", borrow)]
    transaction_kind: Option<Loose<'a>>,
    #[serde(borrow)]
    amount: Option<Loose<'a>>,
    #[serde(borrow)]
    currency: Option<Loose<'a>>,
    #[serde(borrow)]
    title: Option<Loose<'a>>,
    #[serde(borrow)]
    category: Option<Loose<'a>>,
    #[serde(borrow)]
    status: Option<Loose<'a>>,
    #[serde(borrow)]
    event_id: Option<Loose<'a>>,
}

impl<'a> RawEvent<'a> {
    /// Reads the record's fields in place, by [`flat_json`] when the record is of its shape (most
    /// are), else by serde_json, whose answer (the fields, or the error) this always is. In place
    /// because the record is hundreds of bytes: returning it cost two copies a record.
    fn read(&mut self, text: &'a str) -> serde_json::Result<()> {
        if self.read_flat(text).is_none() {
            *self = serde_json::from_str(text)?;
        }
        Ok(())
    }

    fn read_flat(&mut self, text: &'a str) -> Option<()> {
        let raw = self;
        // serde refuses a field given twice, even when the first was null (which it reads as
        // absent): such a record goes to serde_json for its error.
        let mut seen = 0u16;
        flat_json::for_each_field(text, |key, value| {
            let (bit, slot) = match key {
                "type" => (0, &mut raw.kind),
                "stream_id" => (1, &mut raw.stream_id),
                "user_id" => (2, &mut raw.user_id),
                "ts" => (3, &mut raw.ts),
                "text" => (4, &mut raw.text),
                "emoji" => (5, &mut raw.emoji),
                "action" => (6, &mut raw.action),
                "viewer_count" => (7, &mut raw.viewer_count),
                "kind" => (8, &mut raw.transaction_kind),
                "amount" => (9, &mut raw.amount),
                "currency" => (10, &mut raw.currency),
                "title" => (11, &mut raw.title),
                "category" => (12, &mut raw.category),
                "status" => (13, &mut raw.status),
                "event_id" => (14, &mut raw.event_id),
                _ => return true,
            };
            if seen & (1 << bit) != 0 {
                return false;
            }
            seen |= 1 << bit;
            *slot = match value {
                FlatValue::Str(s) => Some(Loose::Str(Cow::Borrowed(s))),
                FlatValue::Int(n) => Some(Loose::Int(n.into())),
                FlatValue::Bool => Some(Loose::Other("a boolean")),
                // serde reads null as an absent `Option`.
                FlatValue::Null => None,
            };
            true
        })
    }
}

/// Treats JSON `null` like an absent field.
fn present<'a>(field: Option<Loose<'a>>) -> Option<Loose<'a>> {
    field.filter(|v| !matches!(v, Loose::Other("null")))
}

fn string(field: Option<Loose<'_>>, name: &str) -> Result<String> {
    match present(field) {
        Some(Loose::Str(s)) => Ok(s.into_owned()),
        Some(other) => Err(Error::Invalid(format!(
            "{name} must be a string, got {}",
            other.type_name()
        ))),
        None => Err(Error::Invalid(format!("missing field {name}"))),
    }
}

fn optional_string(field: Option<Loose<'_>>, name: &str) -> Result<Option<String>> {
    match present(field) {
        None => Ok(None),
        some => string(some, name).map(Some),
    }
}

/// `event_id`: a non-empty string, or an integer (kept as its decimal text, so producers with
/// numeric ids need no change).
fn event_id(field: Option<Loose<'_>>) -> Result<Option<String>> {
    match present(field) {
        Some(Loose::Int(n)) => Ok(Some(n.to_string())),
        some => optional_string(some, "event_id"),
    }
}

fn non_empty(field: Option<Loose<'_>>, name: &str) -> Result<String> {
    let value = string(field, name)?;
    if value.is_empty() {
        return Err(Error::Invalid(format!("{name} must be a non-empty string")));
    }
    Ok(value)
}

fn timestamp(field: Option<Loose<'_>>, fallback: Option<Millis>) -> Result<Millis> {
    match present(field) {
        Some(Loose::Str(text)) => parse_rfc3339(&text),
        Some(Loose::Int(n)) => u64::try_from(n.value())
            .map_err(|_| Error::Invalid(format!("ts {n} is not a non-negative epoch millisecond"))),
        Some(Loose::Float(f)) => millis_from_number(f),
        Some(other) => Err(Error::Invalid(format!(
            "ts must be epoch milliseconds or RFC 3339 text, got {}",
            other.type_name()
        ))),
        None => fallback.ok_or_else(|| Error::Invalid("missing field ts".into())),
    }
}

fn amount(field: Option<Loose<'_>>) -> Result<i64> {
    let value = match present(field) {
        Some(Loose::Int(n)) => n.value() as f64,
        Some(Loose::Float(f)) => f,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "amount must be a number, got {}",
                other.type_name()
            )))
        }
        None => return Err(Error::Invalid("missing field amount".into())),
    };
    // Refused before scaling: -0.00004 would round to an accepted 0.
    if value < 0.0 {
        return Err(Error::Invalid("amount must be >= 0".into()));
    }
    // Values beyond the cap saturate, and [`Event::validate`] refuses them with the same rule
    // as bincode's units.
    Ok((value * AMOUNT_SCALE as f64).round() as i64)
}

fn viewer_body<'a>(
    viewer_count: Option<Loose<'a>>,
    user_id: Option<Loose<'a>>,
    action: Option<Loose<'a>>,
) -> Result<EventBody> {
    if let Some(count) = present(viewer_count) {
        return match count {
            Loose::Int(n) => u64::try_from(n.value())
                .map(|viewer_count| EventBody::ViewerCount { viewer_count })
                .map_err(|_| Error::Invalid(format!("viewer_count {n} must be >= 0"))),
            other => Err(Error::Invalid(format!(
                "viewer_count must be a non-negative integer, got {}",
                match other {
                    Loose::Float(f) => shown(f),
                    other => other.type_name().to_owned(),
                }
            ))),
        };
    }
    let user_id = string(user_id, "user_id")?;
    let action = string(action, "action")?;
    let action = PresenceAction::parse(&action).ok_or_else(|| {
        Error::Invalid(format!(
            "action {} must be join, leave or heartbeat",
            excerpt(&action)
        ))
    })?;
    Ok(EventBody::Presence { user_id, action })
}

/// Decodes and validates one JSON record.
pub fn decode_json(bytes: &[u8], ctx: &DecodeContext) -> Result<Event> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(Error::Decode("record is not a JSON object".into()));
    }
    // One vectorized UTF-8 check of the whole record is cheaper than serde_json's per-string
    // checks on a byte slice.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::Decode(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let mut raw = RawEvent::default();
    raw.read(text).map_err(|e| {
        if e.is_data() {
            Error::Invalid(e.to_string())
        } else {
            Error::Decode(e.to_string())
        }
    })?;
    let kind = match present(raw.kind) {
        Some(Loose::Str(name)) => EventKind::parse(&name)
            .ok_or_else(|| Error::Invalid(format!("unknown type {}", excerpt(&name))))?,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "type must be a string, got {}",
                other.type_name()
            )))
        }
        None => ctx
            .default_kind
            .ok_or_else(|| Error::Invalid("missing field type".into()))?,
    };
    let stream_id = non_empty(raw.stream_id, "stream_id")?;
    let ts = timestamp(raw.ts, ctx.fallback_ts)?;
    let body = match kind {
        EventKind::Chat => EventBody::Chat {
            user_id: string(raw.user_id, "user_id")?,
            text: string(raw.text, "text")?,
        },
        EventKind::Reaction => EventBody::Reaction {
            user_id: string(raw.user_id, "user_id")?,
            emoji: non_empty(raw.emoji, "emoji")?,
        },
        EventKind::Viewer => viewer_body(raw.viewer_count, raw.user_id, raw.action)?,
        EventKind::Transaction => EventBody::Transaction {
            user_id: string(raw.user_id, "user_id")?,
            kind: non_empty(raw.transaction_kind, "kind")?,
            amount: amount(raw.amount)?,
            currency: string(raw.currency, "currency")?,
        },
        EventKind::StreamMeta => {
            let status = optional_string(raw.status, "status")?
                .map(|s| {
                    StreamStatus::parse(&s).ok_or_else(|| {
                        Error::Invalid(format!("status {} must be live or offline", excerpt(&s)))
                    })
                })
                .transpose()?;
            EventBody::StreamMeta {
                title: optional_string(raw.title, "title")?,
                category: optional_string(raw.category, "category")?,
                status,
            }
        }
    };
    let event = Event {
        stream_id,
        ts,
        body,
        event_id: event_id(raw.event_id)?,
    };
    event.validate(&ctx.limits)?;
    Ok(event)
}

/// Encodes an event as the JSON object of DESIGN §2 (`ts` as epoch milliseconds).
pub fn encode_json(event: &Event) -> String {
    use serde_json::json;
    let mut value = json!({
        "type": event.kind().name(),
        "stream_id": event.stream_id,
        "ts": event.ts,
    });
    let fields = value.as_object_mut().expect("json! object");
    let mut put = |name: &str, v: serde_json::Value| {
        fields.insert(name.to_owned(), v);
    };
    if let Some(id) = &event.event_id {
        put("event_id", json!(id));
    }
    match &event.body {
        EventBody::Chat { user_id, text } => {
            put("user_id", json!(user_id));
            put("text", json!(text));
        }
        EventBody::Reaction { user_id, emoji } => {
            put("user_id", json!(user_id));
            put("emoji", json!(emoji));
        }
        EventBody::Presence { user_id, action } => {
            put("user_id", json!(user_id));
            put("action", json!(action.name()));
        }
        EventBody::ViewerCount { viewer_count } => put("viewer_count", json!(viewer_count)),
        EventBody::Transaction {
            user_id,
            kind,
            amount,
            currency,
        } => {
            put("user_id", json!(user_id));
            put("kind", json!(kind));
            put("amount", json!(*amount as f64 / AMOUNT_SCALE as f64));
            put("currency", json!(currency));
        }
        EventBody::StreamMeta {
            title,
            category,
            status,
        } => {
            if let Some(title) = title {
                put("title", json!(title));
            }
            if let Some(category) = category {
                put("category", json!(category));
            }
            if let Some(status) = status {
                put("status", json!(status.name()));
            }
        }
    }
    value.to_string()
}

/// bincode settings shared by encoder and decoder: varint integers, no trailing bytes, and a size
/// limit so a corrupt length prefix cannot make the decoder allocate without bound.
fn bincode_options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(limit)
        .reject_trailing_bytes()
}

/// Encodes an event as bincode: the event, then its `event_id` (if any) as a trailing string.
pub fn encode_bincode(event: &Event) -> Vec<u8> {
    let mut bytes = bincode_options(u64::MAX)
        .serialize(event)
        .expect("events always serialize");
    if let Some(id) = &event.event_id {
        bincode_options(u64::MAX)
            .serialize_into(&mut bytes, id)
            .expect("strings always serialize");
    }
    bytes
}

/// Decodes and validates one bincode record (an event, optionally followed by its `event_id`).
pub fn decode_bincode(bytes: &[u8], ctx: &DecodeContext) -> Result<Event> {
    let limit = bytes.len() as u64 * 2 + 64;
    let decode_error = |e: bincode::Error| Error::Decode(format!("bincode: {e}"));
    let mut rest = bytes;
    let mut event: Event = bincode::DefaultOptions::new()
        .with_limit(limit)
        .allow_trailing_bytes()
        .deserialize_from(&mut rest)
        .map_err(decode_error)?;
    if !rest.is_empty() {
        let id: String = bincode_options(limit)
            .deserialize(rest)
            .map_err(decode_error)?;
        event.event_id = Some(id);
    }
    event.validate(&ctx.limits)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A JSON object of known and unknown keys with values of every shape (some the fast path
    /// reads, some it leaves to serde_json), sometimes given twice, sometimes mangled.
    fn record() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "type",
            "stream_id",
            "user_id",
            "ts",
            "text",
            "emoji",
            "action",
            "viewer_count",
            "kind",
            "amount",
            "currency",
            "title",
            "category",
            "status",
            "event_id",
            "extra",
            "t\\u0079pe",
        ]);
        let value = prop::sample::select(vec![
            r#""chat""#,
            r#""s1""#,
            r#""é 🎉""#,
            r#""""#,
            r#""a\"b""#,
            r#""\u00e9""#,
            "0",
            "-0",
            "7",
            "-12",
            "01",
            "1.5",
            "-2.5e3",
            "1E2",
            "123456789012345678",
            "1234567890123456789",
            "18446744073709551616",
            "true",
            "false",
            "null",
            "[1,2]",
            r#"{"a":1}"#,
            "nul",
            "-",
        ]);
        let space = prop::sample::select(vec!["", " ", "\n\t", "\u{c}"]);
        let field = (key, space.clone(), value, space.clone())
            .prop_map(|(k, s1, v, s2)| format!("\"{k}\"{s1}:{s2}{v}"));
        (
            prop::collection::vec(field, 0..8),
            space,
            prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        )
            .prop_map(|(fields, space, mangle)| {
                let mut text = format!("{space}{{{}}}{space}", fields.join(","));
                if let Some((at, byte)) = mangle {
                    let at = at.index(text.len() + 1);
                    if text.is_char_boundary(at) {
                        text.insert(at, char::from(byte % 128));
                    }
                }
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3_000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the fast path reads, serde_json reads the same way.
        #[test]
        fn the_flat_path_agrees_with_serde_json(text in record()) {
            let mut flat = RawEvent::default();
            if flat.read_flat(&text).is_some() {
                let serde: serde_json::Result<RawEvent> = serde_json::from_str(&text);
                prop_assert_eq!(format!("Ok({flat:?})"), format!("{:?}", serde.map_err(|e| e.to_string())));
            }
        }
    }

    #[test]
    fn the_flat_path_reads_what_producers_write() {
        for text in [
            r#"{"type":"chat","stream_id":"s1","user_id":"u","ts":1767225600000,"text":"gg 🎉 PogChamp"}"#,
            r#"{"emoji":"😢","stream_id":"stream-2","ts":1767225600000,"type":"reaction","user_id":"user-35"}"#,
            r#"{"action":"join","stream_id":"s","ts":5,"type":"viewer","user_id":"u","event_id":42}"#,
            r#"{"type":"viewer","stream_id":"s","ts":"2026-01-01T00:00:01Z","viewer_count":7}"#,
            r#"{"category":"Speedrun","status":"live","stream_id":"stream-4","title":"Stream 4 live","ts":1767225600011,"type":"stream_meta"}"#,
        ] {
            assert!(RawEvent::default().read_flat(text).is_some(), "{text}");
        }
    }

    fn json(text: &str) -> Result<Event> {
        decode_json(text.as_bytes(), &DecodeContext::default())
    }

    fn bincode(bytes: &[u8]) -> Result<Event> {
        decode_bincode(bytes, &DecodeContext::default())
    }

    #[test]
    fn decodes_every_kind() {
        let chat = json(r#"{"type":"chat","stream_id":"s1","user_id":"u","ts":5,"text":"hi","extra":[1,{"a":2}]}"#).unwrap();
        assert_eq!(
            chat.body,
            EventBody::Chat {
                user_id: "u".into(),
                text: "hi".into()
            }
        );
        let gauge = json(
            r#"{"type":"viewer","stream_id":"s","ts":"1970-01-01T00:00:01Z","viewer_count":7}"#,
        )
        .unwrap();
        assert_eq!(
            (gauge.ts, gauge.body),
            (1000, EventBody::ViewerCount { viewer_count: 7 })
        );
        let tx = json(r#"{"type":"transaction","stream_id":"s","user_id":"u","ts":1,"kind":"donation","amount":4.99,"currency":"USD"}"#).unwrap();
        assert!(matches!(
            tx.body,
            EventBody::Transaction { amount: 49_900, .. }
        ));
        let meta =
            json(r#"{"type":"stream_meta","stream_id":"s","ts":1,"status":"live","title":null}"#)
                .unwrap();
        assert_eq!(
            meta.body,
            EventBody::StreamMeta {
                title: None,
                category: None,
                status: Some(StreamStatus::Live)
            }
        );
    }

    #[test]
    fn type_defaults_and_ts_fallback_come_from_the_context() {
        let ctx = DecodeContext {
            default_kind: Some(EventKind::Reaction),
            fallback_ts: Some(42),
            ..DecodeContext::default()
        };
        let event = decode_json(br#"{"stream_id":"s","user_id":"u","emoji":"x"}"#, &ctx).unwrap();
        assert_eq!((event.kind(), event.ts), (EventKind::Reaction, 42));
        assert!(json(r#"{"stream_id":"s","user_id":"u","emoji":"x","ts":1}"#).is_err());
    }

    #[test]
    fn classifies_bad_records() {
        let decode = |t: &str| matches!(json(t), Err(Error::Decode(_)));
        let invalid = |t: &str| matches!(json(t), Err(Error::Invalid(_)));
        assert!(decode(r#"{"type":"chat","stream_id":"#));
        assert!(decode("[1,2]"));
        assert!(decode(""));
        assert!(decode(r#"{"type":"chat"} trailing"#));
        assert!(invalid(r#"{"type":"poll","stream_id":"s","ts":1}"#));
        // U+0000 cannot be stored in a database's text: refused in every text field.
        assert!(invalid(
            r#"{"type":"chat","stream_id":"a\u0000","user_id":"u","ts":1,"text":"x"}"#
        ));
        assert!(invalid(
            r#"{"type":"stream_meta","stream_id":"s","ts":1,"title":"x\u0000y"}"#
        ));
        let bincode = encode_bincode(&Event {
            stream_id: "s".into(),
            ts: 1,
            body: EventBody::Reaction {
                user_id: "u".into(),
                emoji: "\0".into(),
            },
            event_id: None,
        });
        assert!(matches!(
            decode_bincode(&bincode, &DecodeContext::default()),
            Err(Error::Invalid(_))
        ));
        assert!(invalid(
            r#"{"type":"chat","stream_id":"","user_id":"u","ts":1,"text":"x"}"#
        ));
        assert!(invalid(
            r#"{"type":"chat","stream_id":"s","user_id":5,"ts":1,"text":"x"}"#
        ));
        assert!(invalid(
            r#"{"type":"chat","stream_id":"s","user_id":"u","ts":1}"#
        ));
        assert!(invalid(
            r#"{"type":"reaction","stream_id":"s","user_id":"u","ts":1,"emoji":""}"#
        ));
        assert!(invalid(
            r#"{"type":"viewer","stream_id":"s","user_id":"u","ts":1,"action":"wave"}"#
        ));
        assert!(invalid(
            r#"{"type":"viewer","stream_id":"s","ts":1,"viewer_count":-3}"#
        ));
        assert!(invalid(
            r#"{"type":"viewer","stream_id":"s","ts":1,"viewer_count":2.5}"#
        ));
        assert!(invalid(
            r#"{"type":"transaction","stream_id":"s","user_id":"u","ts":1,"kind":"bits","amount":-1,"currency":"USD"}"#
        ));
        assert!(invalid(
            r#"{"type":"transaction","stream_id":"s","user_id":"u","ts":1,"kind":"bits","amount":"1","currency":"USD"}"#
        ));
        assert!(invalid(
            r#"{"type":"stream_meta","stream_id":"s","ts":1,"status":"paused"}"#
        ));
        assert!(invalid(
            r#"{"type":"chat","stream_id":"s","user_id":"u","ts":-1,"text":"x"}"#
        ));
        assert!(invalid(
            r#"{"type":"chat","stream_id":"s","user_id":"u","ts":18446744073709551615,"text":"x"}"#
        ));
        assert!(json(r#"{"type":"chat","stream_id":"s","user_id":"u","ts":"9999-12-31T23:59:59.999Z","text":"x"}"#).is_ok());
        assert!(invalid(
            r#"{"type":"chat","stream_id":"s","user_id":"u","ts":true,"text":"x"}"#
        ));
        assert!(invalid(
            r#"{"type":"chat","type":"chat","stream_id":"s","user_id":"u","ts":1,"text":"x"}"#
        ));
        let bad_utf8 = b"{\"type\":\"chat\",\"stream_id\":\"s\xff\",\"user_id\":\"u\",\"ts\":1,\"text\":\"x\"}";
        assert!(matches!(
            decode_json(bad_utf8, &DecodeContext::default()),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn json_and_bincode_round_trip() {
        let events = [
            r#"{"type":"chat","stream_id":"s1","user_id":"u","ts":5,"text":"hi \"there\" 😀"}"#,
            r#"{"type":"transaction","stream_id":"s","user_id":"u","ts":1,"kind":"bits","amount":100,"currency":"BITS"}"#,
            r#"{"type":"viewer","stream_id":"s","user_id":"u","ts":9,"action":"leave"}"#,
            r#"{"type":"stream_meta","stream_id":"s","ts":1,"title":"t","category":"c","status":"offline"}"#,
            r#"{"type":"reaction","stream_id":"s","user_id":"u","ts":2,"emoji":"🔥","event_id":"r-1"}"#,
        ];
        for text in events {
            let event = json(text).unwrap();
            assert_eq!(json(&encode_json(&event)).unwrap(), event);
            assert_eq!(bincode(&encode_bincode(&event)).unwrap(), event);
        }
        assert!(matches!(bincode(&[0xff; 3]), Err(Error::Decode(_))));
        let mut empty_stream = json(events[0]).unwrap();
        empty_stream.stream_id.clear();
        assert!(matches!(
            bincode(&encode_bincode(&empty_stream)),
            Err(Error::Invalid(_))
        ));
    }

    /// `event_id` is an optional non-empty string within the id limit; bincode carries it as a
    /// trailer, so a record encoded without one (as before the field existed) still decodes.
    #[test]
    fn event_ids_are_optional_strings_in_both_encodings() {
        let with_id = json(
            r#"{"type":"chat","stream_id":"s","user_id":"u","ts":1,"text":"x","event_id":"abc"}"#,
        )
        .unwrap();
        assert_eq!(with_id.event_id.as_deref(), Some("abc"));
        let without = json(
            r#"{"type":"chat","stream_id":"s","user_id":"u","ts":1,"text":"x","event_id":null}"#,
        )
        .unwrap();
        assert_eq!(without.event_id, None);
        let bytes = encode_bincode(&without);
        assert_eq!(bytes.len() + 4, encode_bincode(&with_id).len());
        assert_eq!(bincode(&encode_bincode(&with_id)).unwrap(), with_id);
        let mut garbage = encode_bincode(&without);
        garbage.push(0xfe);
        assert!(matches!(bincode(&garbage), Err(Error::Decode(_))));
        let numeric = json(
            r#"{"type":"chat","stream_id":"s","user_id":"u","ts":1,"text":"x","event_id":42}"#,
        )
        .unwrap();
        assert_eq!(numeric.event_id.as_deref(), Some("42"));
        for refused in [r#""event_id":7.5"#, r#""event_id":"""#, r#""event_id":[1]"#] {
            let record = format!(
                r#"{{"type":"chat","stream_id":"s","user_id":"u","ts":1,"text":"x",{refused}}}"#
            );
            assert!(matches!(json(&record), Err(Error::Invalid(_))), "{record}");
        }
        let mut long = with_id.clone();
        long.event_id = Some("i".repeat(129));
        assert!(matches!(
            bincode(&encode_bincode(&long)),
            Err(Error::Invalid(_))
        ));
    }

    /// JSON refuses amounts above the cap; bincode, which carries the units directly, must too.
    #[test]
    fn bincode_refuses_what_json_refuses() {
        let at_cap = r#"{"type":"transaction","stream_id":"s","user_id":"u","ts":1,"kind":"bits","amount":1000000000000,"currency":"USD"}"#;
        let mut event = json(at_cap).unwrap();
        assert!(bincode(&encode_bincode(&event)).is_ok());
        let EventBody::Transaction { amount, .. } = &mut event.body else {
            unreachable!()
        };
        *amount += 1;
        assert!(matches!(
            bincode(&encode_bincode(&event)),
            Err(Error::Invalid(_))
        ));
        let mut long_id = json(at_cap).unwrap();
        long_id.stream_id = "s".repeat(129);
        assert!(matches!(
            bincode(&encode_bincode(&long_id)),
            Err(Error::Invalid(_))
        ));
    }

    /// DESIGN §6's default field limits, in bytes, and error messages that do not echo them.
    #[test]
    fn fields_beyond_their_limits_are_refused_with_short_messages() {
        let event = |field: &str, value: &str| {
            let mut record = serde_json::json!({"type":"transaction","stream_id":"s","user_id":"u","ts":1,"kind":"bits","amount":1,"currency":"USD"});
            record[field] = value.into();
            json(&record.to_string())
        };
        for (field, limit) in [
            ("stream_id", 128),
            ("user_id", 128),
            ("kind", 32),
            ("currency", 32),
        ] {
            assert!(event(field, &"é".repeat(limit / 2)).is_ok(), "{field}");
            let refused = event(field, &"é".repeat(limit / 2 + 1))
                .unwrap_err()
                .to_string();
            assert!(refused.contains(field) && refused.len() < 200, "{refused}");
        }
        let chat = |text: &str| {
            json(&serde_json::json!({"type":"chat","stream_id":"s","user_id":"u","ts":1,"text":text}).to_string())
        };
        assert!(chat(&"x".repeat(4096)).is_ok());
        assert!(chat(&"x".repeat(4097)).is_err());
        let reaction = |emoji: &str| {
            json(&serde_json::json!({"type":"reaction","stream_id":"s","user_id":"u","ts":1,"emoji":emoji}).to_string())
        };
        assert!(json(r#"{"type":"transaction","stream_id":"s","user_id":"u","ts":1,"kind":"bits","amount":-0.00004,"currency":"USD"}"#).is_err());
        assert!(reaction(&"x".repeat(64)).is_ok());
        assert!(reaction(&"x".repeat(65)).is_err());
        let huge = "y".repeat(100_000);
        for record in [
            serde_json::json!({"type": huge, "stream_id": "s", "ts": 1}),
            serde_json::json!({"type": "stream_meta", "stream_id": "s", "ts": 1, "status": huge}),
            serde_json::json!({"type": "chat", "stream_id": "s", "user_id": "u", "ts": huge, "text": "x"}),
            serde_json::json!({"type": "chat", "stream_id": huge, "user_id": "u", "ts": 1, "text": "x"}),
            serde_json::json!({"type": "chat", "stream_id": "s", "user_id": "u", "ts": 1e308, "text": "x"}),
            serde_json::json!({"type": "viewer", "stream_id": "s", "ts": 1, "viewer_count": 1e308}),
        ] {
            let message = json(&record.to_string()).unwrap_err().to_string();
            assert!(
                message.len() < 300,
                "{} bytes: {}",
                message.len(),
                &message[..300]
            );
        }
    }
}
