//! The day partitions of `chat_messages`: created as rows need them, dropped once wholly older
//! than the retention.
//!
//! The retention runs on the sink's frontier (event time, as every decision of crowdpulse; at
//! the end of a bounded input, the latest message written), capped by the wall clock: the first day kept is the day of `min(frontier, now) - retention`,
//! and rows are kept or dropped by whole days. So a replay keeps the same history whenever its
//! frontier ends at the same time, a backfill of last year's topic keeps its last days rather
//! than nothing, one record dated far ahead cannot expire the history (the frontier is every
//! partition's watermark, and the wall clock caps it), and the partitions are bounded by the
//! retention in days.

use std::collections::BTreeSet;

use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::timestamp::format_rfc3339;
use tokio_postgres::Transaction;
use tracing::info;

use crate::error::Result;

/// One UTC day in ms.
const DAY: Millis = 86_400_000;

/// The first day kept and what has been dropped.
#[derive(Debug)]
pub struct ChatPartitions {
    retention: Millis,
    /// Rows of days before this one (epoch days) are not stored.
    first_day: u64,
    /// Partitions before this day have been dropped (in a committed transaction).
    pruned_before: u64,
}

/// The partition of epoch day `day`: `chat_messages_YYYYMMDD` (event times end in year 9999).
fn partition_name(day: u64) -> String {
    let date: String = format_rfc3339(day * DAY)
        .chars()
        .take(10)
        .filter(char::is_ascii_digit)
        .collect();
    format!("chat_messages_{date}")
}

/// The exclusive upper bound of a partition from its bound expression
/// (`FOR VALUES FROM ('0') TO ('86400000')`).
fn upper_bound(expression: &str) -> Option<Millis> {
    let to = &expression[expression.rfind("TO")?..];
    to.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// An identifier quoted for SQL.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl ChatPartitions {
    /// Nothing expired yet.
    pub fn new(retention: Millis) -> Self {
        Self {
            retention,
            first_day: 0,
            pruned_before: 0,
        }
    }

    /// Moves the horizon with the frontier of the batch about to be written (at the end of the
    /// input, its latest message; None: nothing moves).
    pub fn advance(&mut self, frontier: Option<Millis>, wall_clock: Millis) {
        if let Some(frontier) = frontier {
            let horizon = frontier.min(wall_clock).saturating_sub(self.retention);
            self.first_day = self.first_day.max(horizon / DAY);
        }
    }

    /// Whether a message dated `ts` is stored.
    pub fn keeps(&self, ts: Millis) -> bool {
        ts / DAY >= self.first_day
    }

    /// Creates the partitions of the days of `times`, within the transaction that writes them
    /// (a day's partition that exists is left as it is).
    pub async fn create(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        times: impl Iterator<Item = Millis>,
    ) -> Result<()> {
        let days: BTreeSet<u64> = times.map(|ts| ts / DAY).collect();
        for day in days {
            let statement = format!(
                "CREATE TABLE IF NOT EXISTS {schema}.{name} PARTITION OF {schema}.chat_messages \
                 FOR VALUES FROM ({from}) TO ({to})",
                schema = quoted(schema),
                name = quoted(&partition_name(day)),
                from = day * DAY,
                to = (day + 1) * DAY,
            );
            tx.batch_execute(&statement).await?;
        }
        Ok(())
    }

    /// Drops the partitions before the first day kept (once per day it moves).
    pub async fn prune(&mut self, tx: &Transaction<'_>, schema: &str) -> Result<()> {
        if self.first_day <= self.pruned_before {
            return Ok(());
        }
        let partitions = tx
            .query(
                "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class p ON p.oid = i.inhparent \
                 JOIN pg_namespace n ON n.oid = p.relnamespace \
                 WHERE n.nspname = $1 AND p.relname = 'chat_messages'",
                &[&schema],
            )
            .await?;
        let kept_from = self.first_day * DAY;
        for row in &partitions {
            let (name, bound): (String, String) = (row.get(0), row.get(1));
            if upper_bound(&bound).is_some_and(|end| end <= kept_from) {
                tx.batch_execute(&format!("DROP TABLE {}.{}", quoted(schema), quoted(&name)))
                    .await?;
                info!(partition = %name, "chat history partition dropped past the retention");
            }
        }
        self.pruned_before = self.first_day;
        Ok(())
    }

    /// A transaction failed: what it dropped is back.
    pub fn forget(&mut self) {
        self.pruned_before = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_by_utc_day_and_sort_by_it() {
        let day = 1_795_341_600_000 / DAY;
        assert_eq!(partition_name(day), "chat_messages_20261122");
        assert!(partition_name(day - 40) < partition_name(day));
        assert_eq!(partition_name(0), "chat_messages_19700101");
        assert_eq!(
            upper_bound("FOR VALUES FROM ('0') TO ('86400000')"),
            Some(86_400_000)
        );
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn whole_days_are_kept_from_the_frontier_capped_by_the_wall_clock() {
        let mut partitions = ChatPartitions::new(2 * DAY);
        partitions.advance(Some(10 * DAY + 5), 100 * DAY);
        assert!(partitions.keeps(8 * DAY) && !partitions.keeps(8 * DAY - 1));
        // The frontier never moves the horizon back; nothing moves nothing.
        partitions.advance(Some(DAY), 100 * DAY);
        partitions.advance(None, 100 * DAY);
        assert!(!partitions.keeps(8 * DAY - 1));
        // A frontier ahead of the wall clock (a partition dated far ahead) is capped by it.
        let mut partitions = ChatPartitions::new(2 * DAY);
        partitions.advance(Some(9_000 * DAY), 20 * DAY);
        assert!(partitions.keeps(18 * DAY) && !partitions.keeps(18 * DAY - 1));
    }
}
