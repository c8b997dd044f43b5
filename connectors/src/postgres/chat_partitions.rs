//! The day partitions of `chat_messages`: created as rows need them, dropped once wholly older
//! than the retention.
//!
//! Retention runs in event time, like every other decision of crowdpulse: the horizon is the
//! latest message written minus `postgres.chat_retention`. A replay therefore keeps the same
//! history whenever it runs, and the number of partitions is bounded by the retention in days
//! (plus one), whatever times the input holds.

use std::collections::BTreeSet;

use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::timestamp::format_rfc3339;
use tokio_postgres::Transaction;
use tracing::info;

use crate::error::Result;

/// One UTC day in ms.
const DAY: Millis = 86_400_000;

/// The partitions known to exist and the retention horizon.
#[derive(Debug)]
pub struct ChatPartitions {
    retention: Millis,
    /// The latest message time written (or about to be).
    latest: Option<Millis>,
    /// Days (as epoch days) whose partition exists; cleared when a transaction fails, as the
    /// partitions it created are gone with it.
    known: BTreeSet<u64>,
    /// Every day before this one has been dropped.
    pruned_below: u64,
}

/// The partition of epoch day `day`: `chat_messages_YYYYMMDD` (`chat_messages_dN` beyond year
/// 9999, which RFC 3339 cannot write).
fn partition_name(day: u64) -> String {
    let formatted = format_rfc3339(day * DAY);
    match formatted.get(..10) {
        Some(date) if formatted.as_bytes().get(4) == Some(&b'-') => {
            format!("chat_messages_{}", date.replace('-', ""))
        }
        _ => format!("chat_messages_d{day}"),
    }
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

impl ChatPartitions {
    /// No partition known yet.
    pub fn new(retention: Millis) -> Self {
        Self {
            retention,
            latest: None,
            known: BTreeSet::new(),
            pruned_below: 0,
        }
    }

    /// Messages before this are not stored.
    fn horizon(&self) -> Millis {
        self.latest.unwrap_or(0).saturating_sub(self.retention)
    }

    /// Takes note of the times of a batch's messages; returns the earliest time stored.
    pub fn admit(&mut self, times: impl Iterator<Item = Millis>) -> Millis {
        self.latest = self.latest.max(times.max());
        self.horizon()
    }

    /// Creates the partitions of the days of `times` that are not known to exist, within the
    /// transaction that writes them.
    pub async fn create(
        &mut self,
        tx: &Transaction<'_>,
        schema: &str,
        times: impl Iterator<Item = Millis>,
    ) -> Result<()> {
        let days: BTreeSet<u64> = times.map(|ts| ts / DAY).collect();
        for day in days.difference(&self.known.clone()) {
            let statement = format!(
                "CREATE TABLE IF NOT EXISTS \"{schema}\".{name} PARTITION OF \"{schema}\".chat_messages \
                 FOR VALUES FROM ({from}) TO ({to})",
                name = partition_name(*day),
                from = day * DAY,
                to = (day + 1) * DAY,
            );
            tx.batch_execute(&statement).await?;
            self.known.insert(*day);
        }
        Ok(())
    }

    /// Drops the partitions wholly before the horizon (once per day the horizon moves).
    pub async fn prune(&mut self, tx: &Transaction<'_>, schema: &str) -> Result<()> {
        let below = self.horizon() / DAY;
        if below <= self.pruned_below {
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
        let horizon = self.horizon();
        for row in &partitions {
            let (name, bound): (String, String) = (row.get(0), row.get(1));
            if upper_bound(&bound).is_some_and(|end| end <= horizon) {
                tx.batch_execute(&format!("DROP TABLE \"{schema}\".\"{name}\""))
                    .await?;
                info!(partition = %name, "chat history partition dropped past the retention");
            }
        }
        self.known.retain(|day| *day >= below);
        self.pruned_below = below;
        Ok(())
    }

    /// A transaction failed: what it created or dropped is undone.
    pub fn forget(&mut self) {
        self.known.clear();
        self.pruned_below = 0;
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
        assert_eq!(partition_name(3_000_000), "chat_messages_d3000000");
        assert_eq!(
            upper_bound("FOR VALUES FROM ('0') TO ('86400000')"),
            Some(86_400_000)
        );
    }

    #[test]
    fn the_horizon_follows_the_latest_message() {
        let mut partitions = ChatPartitions::new(2 * DAY);
        assert_eq!(partitions.admit([10 * DAY, 3 * DAY].into_iter()), 8 * DAY);
        // An older batch moves nothing.
        assert_eq!(partitions.admit([DAY].into_iter()), 8 * DAY);
    }
}
