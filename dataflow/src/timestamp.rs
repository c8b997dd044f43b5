//! Event-time parsing: epoch milliseconds or RFC 3339 text.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{excerpt, shown, Error, Result};
use crate::event::Millis;

/// Parses an RFC 3339 timestamp (`2026-11-22T10:00:00.250Z`, any offset) into epoch milliseconds.
/// Sub-millisecond digits are truncated; times before 1970 are rejected.
pub fn parse_rfc3339(text: &str) -> Result<Millis> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| Error::Invalid(format!("ts {} is not RFC 3339: {e}", excerpt(text))))?;
    let millis = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
    u64::try_from(millis)
        .map_err(|_| Error::Invalid(format!("ts {} is before 1970", excerpt(text))))
}

/// Checks a numeric timestamp: epoch milliseconds, a non-negative integer.
pub fn millis_from_number(value: f64) -> Result<Millis> {
    if !value.is_finite() || value < 0.0 || value.fract() != 0.0 || value > 9.0e15 {
        return Err(Error::Invalid(format!(
            "ts {} is not a non-negative integer of epoch milliseconds",
            shown(value)
        )));
    }
    Ok(value as Millis)
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_rfc3339(ts: Millis) -> String {
    let nanos = i128::from(ts) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ts.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_rfc3339("1970-01-01T01:00:01.25+01:00").unwrap(), 1250);
        assert_eq!(
            parse_rfc3339("2026-11-22T10:00:00.123456Z").unwrap(),
            1_795_341_600_123
        );
        assert!(parse_rfc3339("1969-12-31T23:59:59Z").is_err());
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn numbers_must_be_whole_non_negative_millis() {
        assert_eq!(millis_from_number(1.0e12).unwrap(), 1_000_000_000_000);
        assert!(millis_from_number(-1.0).is_err());
        assert!(millis_from_number(1.5).is_err());
        assert!(millis_from_number(f64::NAN).is_err());
    }

    #[test]
    fn format_round_trips() {
        let ts = 1_795_341_600_123;
        assert_eq!(parse_rfc3339(&format_rfc3339(ts)).unwrap(), ts);
    }
}
