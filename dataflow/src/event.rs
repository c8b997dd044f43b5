//! The typed event model of DESIGN §2 and its validation rules.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Event time in milliseconds since the Unix epoch.
pub type Millis = u64;

/// Latest accepted event time, 9999-12-31T23:59:59.999Z: keeps window arithmetic far from
/// overflow whatever a producer sends.
pub const MAX_EVENT_TIME: Millis = 253_402_300_799_999;

/// Fixed-point scale for money amounts: 1 unit = 1/10_000 of the currency unit, so sums are exact
/// and independent of summation order.
pub const AMOUNT_SCALE: i64 = 10_000;

/// Largest accepted amount of one event, in units: 10^12 of the currency. Window sums are 128-bit,
/// so no count of such events can overflow them.
pub const MAX_AMOUNT_UNITS: i64 = 1_000_000_000_000 * AMOUNT_SCALE;

/// Longest accepted text fields, in bytes (DESIGN §6, `[pipeline.limits]`). Every decoder checks
/// them through [`Event::validate`], so no encoding can smuggle a longer field into state, rows or
/// tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldLimits {
    /// `stream_id`, `user_id` and `event_id`.
    pub id_bytes: usize,
    /// `emoji`.
    pub emoji_bytes: usize,
    /// A transaction's `kind` and `currency`.
    pub label_bytes: usize,
    /// Chat `text` and a stream's `title` and `category`.
    pub text_bytes: usize,
}

impl Default for FieldLimits {
    fn default() -> Self {
        Self {
            id_bytes: 128,
            emoji_bytes: 64,
            label_bytes: 32,
            text_bytes: 4096,
        }
    }
}

/// The five kinds of events, as named by the `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A chat message.
    Chat,
    /// An emoji reaction.
    Reaction,
    /// Viewer presence or a viewer-count gauge.
    Viewer,
    /// Money: subscriptions, donations, bits.
    Transaction,
    /// Stream title, category and live/offline status.
    StreamMeta,
}

impl EventKind {
    /// Every kind, in the order of [`EventKind::index`].
    pub const ALL: [EventKind; 5] = [
        Self::Chat,
        Self::Reaction,
        Self::Viewer,
        Self::Transaction,
        Self::StreamMeta,
    ];

    /// Position in [`EventKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses the `type` discriminator.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "chat" => Self::Chat,
            "reaction" => Self::Reaction,
            "viewer" => Self::Viewer,
            "transaction" => Self::Transaction,
            "stream_meta" => Self::StreamMeta,
            _ => return None,
        })
    }

    /// The `type` discriminator as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Reaction => "reaction",
            Self::Viewer => "viewer",
            Self::Transaction => "transaction",
            Self::StreamMeta => "stream_meta",
        }
    }
}

/// A viewer presence action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceAction {
    /// The viewer arrived.
    Join,
    /// The viewer is still there.
    Heartbeat,
    /// The viewer went away.
    Leave,
}

impl PresenceAction {
    /// Parses `join`, `leave` or `heartbeat`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "join" => Self::Join,
            "heartbeat" => Self::Heartbeat,
            "leave" => Self::Leave,
            _ => return None,
        })
    }

    /// Whether the viewer counts as present after this action.
    pub fn is_present(self) -> bool {
        !matches!(self, Self::Leave)
    }

    /// Name as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Heartbeat => "heartbeat",
            Self::Leave => "leave",
        }
    }
}

/// Live/offline status of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamStatus {
    /// Broadcasting.
    Live,
    /// Not broadcasting.
    Offline,
}

impl StreamStatus {
    /// Parses `live` or `offline`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "live" => Some(Self::Live),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }

    /// Name as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Offline => "offline",
        }
    }
}

/// What happened, by kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventBody {
    /// A chat message.
    Chat {
        /// Author.
        user_id: String,
        /// Message text.
        text: String,
    },
    /// An emoji reaction.
    Reaction {
        /// Who reacted.
        user_id: String,
        /// The emoji (non-empty).
        emoji: String,
    },
    /// A viewer joined, left or is still watching.
    Presence {
        /// The viewer.
        user_id: String,
        /// What they did.
        action: PresenceAction,
    },
    /// A reported concurrent-viewer gauge, taken as-is.
    ViewerCount {
        /// Number of viewers.
        viewer_count: u64,
    },
    /// Money.
    Transaction {
        /// Payer.
        user_id: String,
        /// subscription, donation, bits, ...
        kind: String,
        /// Amount in 1/[`AMOUNT_SCALE`] units of `currency`.
        amount: i64,
        /// Currency code.
        currency: String,
    },
    /// Stream metadata.
    StreamMeta {
        /// Stream title.
        title: Option<String>,
        /// Category or game.
        category: Option<String>,
        /// live or offline.
        status: Option<StreamStatus>,
    },
}

/// One validated event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// The stream it belongs to (non-empty).
    pub stream_id: String,
    /// Event time, epoch milliseconds.
    pub ts: Millis,
    /// The kind-specific part.
    pub body: EventBody,
    /// The producer's id of the event, unique within its stream: a record repeating the id of
    /// one its partition admitted within the lateness horizon is dropped as a duplicate, so
    /// clients can retry safely. Not part of bincode's fixed layout: [`crate::codec`] writes it
    /// as an optional trailer, so records encoded before it existed still decode.
    #[serde(skip)]
    pub event_id: Option<String>,
}

impl Event {
    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self.body {
            EventBody::Chat { .. } => EventKind::Chat,
            EventBody::Reaction { .. } => EventKind::Reaction,
            EventBody::Presence { .. } | EventBody::ViewerCount { .. } => EventKind::Viewer,
            EventBody::Transaction { .. } => EventKind::Transaction,
            EventBody::StreamMeta { .. } => EventKind::StreamMeta,
        }
    }

    /// Every text field with its name and byte limit (no allocation: every record passes here).
    fn text_fields<'a>(
        &'a self,
        limits: &FieldLimits,
    ) -> [(&'static str, Option<&'a str>, usize); 4] {
        let none = ("", None, 0);
        let id = limits.id_bytes;
        match &self.body {
            EventBody::Chat { user_id, text } => [
                ("user_id", Some(user_id), id),
                ("text", Some(text), limits.text_bytes),
                none,
                none,
            ],
            EventBody::Reaction { user_id, emoji } => [
                ("user_id", Some(user_id), id),
                ("emoji", Some(emoji), limits.emoji_bytes),
                none,
                none,
            ],
            EventBody::Presence { user_id, .. } => {
                [("user_id", Some(user_id), id), none, none, none]
            }
            EventBody::ViewerCount { .. } => [none; 4],
            EventBody::Transaction {
                user_id,
                kind,
                currency,
                ..
            } => [
                ("user_id", Some(user_id), id),
                ("kind", Some(kind), limits.label_bytes),
                ("currency", Some(currency), limits.label_bytes),
                none,
            ],
            EventBody::StreamMeta {
                title, category, ..
            } => [
                ("title", title.as_deref(), limits.text_bytes),
                ("category", category.as_deref(), limits.text_bytes),
                none,
                none,
            ],
        }
    }

    /// Checks the rules of DESIGN §2 and the field limits of §6 that the type system does not
    /// already enforce. Used after every decoder, so JSON and bincode accept exactly the same
    /// events.
    pub fn validate(&self, limits: &FieldLimits) -> Result<()> {
        if self.ts > MAX_EVENT_TIME {
            return Err(Error::Invalid(format!("ts {} is after year 9999", self.ts)));
        }
        if self.stream_id.is_empty() {
            return Err(Error::Invalid(
                "stream_id must be a non-empty string".into(),
            ));
        }
        if self.event_id.as_deref() == Some("") {
            return Err(Error::Invalid("event_id must be a non-empty string".into()));
        }
        let fields = [
            ("stream_id", Some(self.stream_id.as_str()), limits.id_bytes),
            ("event_id", self.event_id.as_deref(), limits.id_bytes),
        ]
        .into_iter()
        .chain(self.text_fields(limits));
        for (name, text, limit) in fields {
            let Some(text) = text else { continue };
            if text.len() > limit {
                return Err(Error::Invalid(format!(
                    "{name} has {} bytes, more than the limit of {limit}",
                    text.len()
                )));
            }
            // Text columns of databases (PostgreSQL's text and jsonb) cannot hold U+0000, so a
            // row carrying one could never be written: such a record is refused here, where it
            // is a counted dead letter, instead of stalling a sink.
            if text.contains('\0') {
                return Err(Error::Invalid(format!("{name} contains a NUL character")));
            }
        }
        match &self.body {
            EventBody::Reaction { emoji, .. } if emoji.is_empty() => {
                Err(Error::Invalid("emoji must be a non-empty string".into()))
            }
            EventBody::Transaction { kind, .. } if kind.is_empty() => {
                Err(Error::Invalid("kind must be a non-empty string".into()))
            }
            EventBody::Transaction { amount, .. } if !(0..=MAX_AMOUNT_UNITS).contains(amount) => {
                Err(Error::Invalid(format!(
                    "amount must be between 0 and {}",
                    MAX_AMOUNT_UNITS / AMOUNT_SCALE
                )))
            }
            _ => Ok(()),
        }
    }
}
