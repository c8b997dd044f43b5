//! Deterministic synthetic live-stream traffic: Zipf stream popularity, chat with emotes and
//! emoji, reaction bursts (the ground-truth moments), viewers joining and leaving, transactions,
//! some disorder, a few late and malformed records. The same seed gives the same bytes.

use crowdpulse_dataflow::codec::encode_json;
use crowdpulse_dataflow::event::{
    Event, EventBody, EventKind, Millis, PresenceAction, StreamStatus, AMOUNT_SCALE,
};
use crowdpulse_dataflow::timestamp::format_rfc3339;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// How many records.
    pub events: u64,
    /// Seed of the random sequence.
    pub seed: u64,
    /// Number of streams.
    pub streams: usize,
    /// Records per second of event time.
    pub rate: f64,
    /// Event time of the first record, epoch ms.
    pub start: Millis,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            events: 10_000,
            seed: 1,
            streams: 20,
            rate: 1_000.0,
            start: 1_767_225_600_000,
        }
    }
}

/// SplitMix64: tiny, fast and fully determined by its seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Samples ranks 0..n with probability proportional to 1/(rank+1)^s.
#[derive(Debug, Clone)]
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n.max(1))
            .map(|i| {
                total += 1.0 / ((i + 1) as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.into_iter().map(|c| c / total).collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cumulative
            .partition_point(|c| *c < u)
            .min(self.cumulative.len() - 1)
    }
}

const PHRASES: &[&str] = &[
    "what a play",
    "this is amazing",
    "so good",
    "lets go",
    "gg",
    "no way",
    "that was terrible",
    "this is boring",
    "I love this stream",
    "worst call ever",
    "hahaha",
    "clip it",
    "hello chat",
    "first time here",
    "is this live?",
    "insane!!",
    "not bad at all",
    "that's so sad",
    "huge",
    "ez",
    "unbelievable",
    "bad luck",
    "nice one",
    "why would you do that",
    "W",
    "L",
];
const EMOTES: &[&str] = &[
    "PogChamp",
    "LUL",
    "KEKW",
    "Kappa",
    "ResidentSleeper",
    "BibleThump",
    "Kreygasm",
    "NotLikeThis",
    "SeemsGood",
    "monkaS",
    "Sadge",
    "POGGERS",
];
const EMOJI: &[&str] = &[
    "😂", "🔥", "❤️", "👏", "😮", "😢", "👍", "🎉", "💀", "😡", "🙌", "💯",
];
const CATEGORIES: &[&str] = &[
    "Just Chatting",
    "Valorant",
    "Chess",
    "Music",
    "League of Legends",
    "Speedrun",
];
const MALFORMED: &[&str] = &[
    r#"{"type":"chat","stream_id":"#,
    r#"{"type":"poll","stream_id":"stream-0","ts":0}"#,
    r#"{"type":"reaction","stream_id":"stream-0","user_id":"user-1","ts":0}"#,
    r#"{"type":"chat","stream_id":42,"user_id":"u","ts":0,"text":"x"}"#,
    "not json",
];

/// Per-stream state of the simulation.
#[derive(Debug, Clone, Default)]
struct StreamSim {
    started: bool,
    present: Vec<u64>,
    next_viewer: u64,
    /// A reaction burst runs until this event time, with this emoji.
    burst_until: Millis,
    burst_emoji: usize,
}

/// An iterator over generated NDJSON records (without newlines), with the stream each belongs to.
#[derive(Debug, Clone)]
pub struct Generator {
    config: GeneratorConfig,
    rng: Rng,
    streams: Vec<StreamSim>,
    popularity: Zipf,
    users: Zipf,
    emoji: Zipf,
    emitted: u64,
    clock: f64,
}

impl Generator {
    /// A generator for `config`.
    pub fn new(config: GeneratorConfig) -> Self {
        let streams = vec![StreamSim::default(); config.streams.max(1)];
        Self {
            rng: Rng(config.seed ^ 0x5eed_c0ff_ee00_0000),
            popularity: Zipf::new(streams.len(), 1.1),
            users: Zipf::new(50_000, 0.9),
            emoji: Zipf::new(EMOJI.len(), 1.0),
            streams,
            emitted: 0,
            clock: config.start as f64,
            config,
        }
    }

    fn chat_text(&mut self) -> String {
        let mut text = String::new();
        for _ in 0..=self.rng.below(2) {
            if !text.is_empty() {
                text.push(' ');
            }
            match self.rng.below(10) {
                0..=5 => text.push_str(self.rng.pick::<&str>(PHRASES)),
                6..=8 => text.push_str(self.rng.pick::<&str>(EMOTES)),
                _ => text.push_str(EMOJI[self.emoji.sample(&mut self.rng)]),
            }
        }
        if self.rng.below(8) == 0 {
            text = text.to_uppercase();
        }
        text
    }

    fn body(&mut self, index: usize, now: Millis) -> EventBody {
        let user = format!("user-{}", self.users.sample(&mut self.rng));
        let sim = &mut self.streams[index];
        if !sim.started {
            sim.started = true;
            return EventBody::StreamMeta {
                title: Some(format!("Stream {index} live")),
                category: Some((*self.rng.pick(CATEGORIES)).to_owned()),
                status: Some(StreamStatus::Live),
            };
        }
        // Bursts: now and then a stream's audience floods one emoji for ~20 s.
        if sim.burst_until <= now && self.rng.below(4_000) == 0 {
            sim.burst_until = now + 20_000;
            sim.burst_emoji = self.rng.below(EMOJI.len() as u64) as usize;
        }
        if sim.burst_until > now && self.rng.below(10) < 7 {
            return EventBody::Reaction {
                user_id: user,
                emoji: EMOJI[sim.burst_emoji].to_owned(),
            };
        }
        match self.rng.below(100) {
            0..=44 => EventBody::Chat {
                user_id: user,
                text: self.chat_text(),
            },
            45..=74 => EventBody::Reaction {
                user_id: user,
                emoji: EMOJI[self.emoji.sample(&mut self.rng)].to_owned(),
            },
            75..=96 => {
                let sim = &mut self.streams[index];
                let roll = self.rng.below(10);
                if sim.present.is_empty() || roll < 4 {
                    sim.next_viewer += 1;
                    sim.present.push(sim.next_viewer);
                    EventBody::Presence {
                        user_id: format!("viewer-{index}-{}", sim.next_viewer),
                        action: PresenceAction::Join,
                    }
                } else {
                    let at = self.rng.below(sim.present.len() as u64) as usize;
                    let id = sim.present[at];
                    let action = if roll < 7 {
                        sim.present.swap_remove(at);
                        PresenceAction::Leave
                    } else {
                        PresenceAction::Heartbeat
                    };
                    EventBody::Presence {
                        user_id: format!("viewer-{index}-{id}"),
                        action,
                    }
                }
            }
            97..=98 => {
                let (kind, amount, currency) = match self.rng.below(3) {
                    0 => ("subscription", 4.99, "USD"),
                    1 => ("bits", (self.rng.below(50) + 1) as f64, "BITS"),
                    _ => (
                        "donation",
                        (self.rng.below(5_000) + 100) as f64 / 100.0,
                        *self.rng.pick(&["USD", "EUR"]),
                    ),
                };
                EventBody::Transaction {
                    user_id: user,
                    kind: kind.to_owned(),
                    amount: (amount * AMOUNT_SCALE as f64).round() as i64,
                    currency: currency.to_owned(),
                }
            }
            _ => EventBody::StreamMeta {
                title: Some(format!("Stream {index}: {}", self.rng.pick(PHRASES))),
                category: None,
                status: None,
            },
        }
    }

    /// Shifts some records back in time: most within the out-of-orderness bound, a few within
    /// the allowed lateness, a very few beyond it (they become late dead letters).
    fn disorder(&mut self, now: Millis) -> Millis {
        let roll = self.rng.below(1_000);
        let back = match roll {
            0..=49 => self.rng.below(1_500),
            50..=54 => 2_000 + self.rng.below(48_000),
            55 if now > self.config.start + 200_000 => 70_000 + self.rng.below(130_000),
            _ => 0,
        };
        now.saturating_sub(back).max(self.config.start)
    }
}

/// Writes `config.events` records as NDJSON. With `partitions` > 1 the records are split by
/// stream with Kafka's default partitioner (as a keyed producer would) into `<stem>-<p>.<ext>` files; returns the paths.
pub fn write_files(
    config: GeneratorConfig,
    output: &std::path::Path,
    partitions: usize,
) -> crate::error::Result<Vec<std::path::PathBuf>> {
    use std::io::Write;
    let partitions = partitions.max(1);
    let paths: Vec<std::path::PathBuf> = if partitions == 1 {
        vec![output.to_owned()]
    } else {
        let stem = output
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("events");
        let ext = output
            .extension()
            .and_then(|s| s.to_str())
            .unwrap_or("ndjson");
        (0..partitions)
            .map(|p| output.with_file_name(format!("{stem}-{p}.{ext}")))
            .collect()
    };
    let mut writers = paths
        .iter()
        .map(|p| {
            std::fs::File::create(p)
                .map(|f| std::io::BufWriter::with_capacity(1 << 20, f))
                .map_err(|e| crate::error::ConnectorError::io(p, e))
        })
        .collect::<crate::error::Result<Vec<_>>>()?;
    for record in Generator::new(config) {
        let p = crate::partitioner::partition_for_key(record.stream_id.as_bytes(), partitions);
        writeln!(writers[p], "{}", record.line)
            .map_err(|e| crate::error::ConnectorError::io(&paths[p], e))?;
    }
    for (writer, path) in writers.iter_mut().zip(&paths) {
        writer
            .flush()
            .map_err(|e| crate::error::ConnectorError::io(path, e))?;
    }
    Ok(paths)
}

/// One generated record.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The stream it belongs to (the Kafka key / partitioning key).
    pub stream_id: String,
    /// The NDJSON line (without newline).
    pub line: String,
    /// The event's kind (None for the deliberately malformed lines).
    pub kind: Option<EventKind>,
}

impl Iterator for Generator {
    type Item = Generated;

    fn next(&mut self) -> Option<Generated> {
        if self.emitted >= self.config.events {
            return None;
        }
        self.emitted += 1;
        self.clock += 1_000.0 / self.config.rate.max(0.001);
        let now = self.clock as Millis;
        let index = self.popularity.sample(&mut self.rng);
        let stream_id = format!("stream-{index}");
        if self.rng.below(1_000) == 0 {
            let line = (*self.rng.pick(MALFORMED)).to_owned();
            return Some(Generated {
                stream_id,
                line,
                kind: None,
            });
        }
        let body = self.body(index, now);
        let ts = self.disorder(now);
        let event = Event {
            stream_id: stream_id.clone(),
            ts,
            body,
            event_id: None,
        };
        let mut line = encode_json(&event);
        if self.rng.below(10) == 0 {
            // Some producers send RFC 3339 text; both forms must work.
            line = line.replacen(
                &format!("\"ts\":{ts}"),
                &format!("\"ts\":\"{}\"", format_rfc3339(ts)),
                1,
            );
        }
        Some(Generated {
            stream_id,
            line,
            kind: Some(event.kind()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowdpulse_dataflow::codec::{decode_json, DecodeContext};

    #[test]
    fn same_seed_same_records_and_mostly_valid() {
        let config = GeneratorConfig {
            events: 20_000,
            seed: 7,
            ..GeneratorConfig::default()
        };
        let a: Vec<_> = Generator::new(config.clone()).collect();
        let b: Vec<_> = Generator::new(config.clone()).collect();
        assert_eq!(a, b);
        let other: Vec<_> = Generator::new(GeneratorConfig { seed: 8, ..config }).collect();
        assert_ne!(a, other);
        let valid = a
            .iter()
            .filter(|g| decode_json(g.line.as_bytes(), &DecodeContext::default()).is_ok())
            .count();
        assert!(
            valid < a.len() && valid > a.len() * 99 / 100,
            "{valid} of {}",
            a.len()
        );
        let popular = a.iter().filter(|g| g.stream_id == "stream-0").count();
        let rare = a.iter().filter(|g| g.stream_id == "stream-19").count();
        assert!(popular > 5 * rare, "zipf popularity: {popular} vs {rare}");
        assert!(a.iter().any(|g| g.line.contains("\"ts\":\"2026-")));
    }
}
