//! Where a Kafka read starts (`--from`) and where a bounded one ends (`--until`), parsed from
//! their text forms: `earliest`, `latest`, `topic:partition:offset[,...]`, an RFC 3339 time,
//! or a time relative to now (`now`, `now-15m`).

use crowdpulse_dataflow::config::Span;
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::timestamp::parse_rfc3339;

use crate::error::{ConnectorError, Result};
use crate::live_input::wall_clock_ms;

/// One partition's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Offset: where reading starts (`--from`), or the first offset not read (`--until`).
    pub offset: i64,
}

/// A position in every assigned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The oldest retained message (start only).
    Earliest,
    /// Start: only messages produced from now on. End: every message present at start, however
    /// stale the broker's reported latest offset is.
    Latest,
    /// Explicit offsets. Start: listed partitions from their offset, the others from the
    /// earliest (Flink's specific offsets with an earliest fallback). End: listed partitions up
    /// to their offset (exclusive), the others up to what was present at start.
    Offsets(Vec<PartitionOffset>),
    /// A message timestamp, epoch ms. Start: the first message at or after it
    /// (messages before it are skipped even where the broker's offset lookup is imprecise).
    /// End: messages before it.
    Timestamp(Millis),
    /// A time this long (ms) before the run's clock (`now`, `now-15m`): a [`Position::Timestamp`]
    /// once [resolved](Position::resolved). Kept relative until the run starts, so that every
    /// process of a cluster takes the same clock (process 0's) instead of its own.
    Ago(Millis),
}

impl Position {
    /// Parses a `--from` value.
    pub fn parse_start(text: &str) -> Result<Self> {
        parse(text)
    }

    /// Parses an `--until` value; `earliest` is refused since it would read nothing.
    pub fn parse_end(text: &str) -> Result<Self> {
        match parse(text)? {
            Position::Earliest => Err(ConnectorError::Config(
                "--until earliest would read nothing; use latest, offsets or a time".into(),
            )),
            position => Ok(position),
        }
    }

    /// This position with a time relative to the run's clock `now` made absolute (one before
    /// 1970, against a clock far behind the one it was parsed with, is the epoch).
    pub fn resolved(&self, now: Millis) -> Self {
        match self {
            Position::Ago(ago) => Position::Timestamp(now.saturating_sub(*ago)),
            other => other.clone(),
        }
    }

    /// The explicit offset this position names for `topic`/`partition` (None for other kinds of
    /// position and for partitions an offset list leaves out).
    pub fn offset_of(&self, topic: &str, partition: i32) -> Option<i64> {
        match self {
            Position::Offsets(offsets) => offsets
                .iter()
                .find(|o| o.topic == topic && o.partition == partition)
                .map(|o| o.offset),
            _ => None,
        }
    }
}

fn invalid(text: &str, why: &str) -> ConnectorError {
    ConnectorError::Config(format!(
        "position {text:?}: {why} (expected earliest, latest, topic:partition:offset[,...], an RFC 3339 time, now or now-15m)"
    ))
}

fn parse(text: &str) -> Result<Position> {
    let text = text.trim();
    match text {
        "earliest" => return Ok(Position::Earliest),
        "latest" => return Ok(Position::Latest),
        "now" => return Ok(Position::Ago(0)),
        _ => {}
    }
    if let Some(ago) = text.strip_prefix("now-") {
        let span = Span::parse(ago).map_err(|e| invalid(text, &e.to_string()))?;
        if span.0 > wall_clock_ms() {
            return Err(invalid(text, "before 1970"));
        }
        return Ok(Position::Ago(span.0));
    }
    // RFC 3339 times contain ':' too, but always start with a four-digit year and a '-'.
    if text.len() > 4
        && text.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && text.as_bytes()[4] == b'-'
    {
        return parse_rfc3339(text)
            .map(Position::Timestamp)
            .map_err(|e| invalid(text, &e.to_string()));
    }
    text.split(',')
        .map(|item| parse_offset(text, item.trim()))
        .collect::<Result<Vec<_>>>()
        .map(Position::Offsets)
}

fn parse_offset(text: &str, item: &str) -> Result<PartitionOffset> {
    // Kafka topic names cannot contain ':', so the last two fields are partition and offset.
    let mut fields = item.rsplitn(3, ':');
    let (Some(offset), Some(partition), Some(topic)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(invalid(
            text,
            &format!("{item:?} is not topic:partition:offset"),
        ));
    };
    let partition: i32 = partition.parse().ok().filter(|p| *p >= 0).ok_or_else(|| {
        invalid(
            text,
            &format!("partition {partition:?} is not a number >= 0"),
        )
    })?;
    let offset: i64 = offset
        .parse()
        .ok()
        .filter(|o| *o >= 0)
        .ok_or_else(|| invalid(text, &format!("offset {offset:?} is not a number >= 0")))?;
    if topic.is_empty() {
        return Err(invalid(text, "empty topic"));
    }
    Ok(PartitionOffset {
        topic: topic.to_owned(),
        partition,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_795_000_000_000;

    #[test]
    fn named_positions() {
        assert_eq!(
            Position::parse_start("earliest").unwrap(),
            Position::Earliest
        );
        assert_eq!(Position::parse_start(" latest ").unwrap(), Position::Latest);
        assert_eq!(Position::parse_end("latest").unwrap(), Position::Latest);
        assert!(Position::parse_end("earliest").is_err());
    }

    #[test]
    fn times_absolute_and_relative() {
        assert_eq!(
            Position::parse_start("2026-11-22T10:00:00Z").unwrap(),
            Position::Timestamp(1_795_341_600_000)
        );
        assert_eq!(
            Position::parse_start("2026-11-22T11:00:00.5+01:00").unwrap(),
            Position::Timestamp(1_795_341_600_500)
        );
        // Relative until the run's clock is known, then absolute.
        let resolved = |text| Position::parse_start(text).unwrap().resolved(NOW);
        assert_eq!(Position::parse_start("now").unwrap(), Position::Ago(0));
        assert_eq!(resolved("now"), Position::Timestamp(NOW));
        assert_eq!(resolved("now-15m"), Position::Timestamp(NOW - 15 * 60_000));
        assert_eq!(
            Position::parse_end("now-2h").unwrap().resolved(NOW),
            Position::Timestamp(NOW - 2 * 3_600_000)
        );
        let ago = Position::parse_start("now-1000d").unwrap();
        assert_eq!(ago.resolved(1_000), Position::Timestamp(0));
        assert_eq!(
            resolved("2026-11-22T10:00:00Z"),
            Position::Timestamp(1_795_341_600_000)
        );
    }

    #[test]
    fn explicit_offsets() {
        assert_eq!(
            Position::parse_start("chat:0:100, my.topic-2:3:0").unwrap(),
            Position::Offsets(vec![
                PartitionOffset {
                    topic: "chat".into(),
                    partition: 0,
                    offset: 100
                },
                PartitionOffset {
                    topic: "my.topic-2".into(),
                    partition: 3,
                    offset: 0
                },
            ])
        );
    }

    #[test]
    fn unusable_positions_are_clear_errors() {
        for text in [
            "",
            "begin",
            "chat:0",
            "chat:x:1",
            "chat:-1:1",
            "chat:0:-5",
            ":0:1",
            "now-",
            "now-5 parsecs",
            "2026-13-01T00:00:00Z",
            "now-100000d",
        ] {
            let error = Position::parse_start(text).unwrap_err().to_string();
            assert!(error.contains("position"), "{text:?}: {error}");
        }
    }
}
