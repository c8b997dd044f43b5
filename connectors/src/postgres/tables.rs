//! How rows map onto the Postgres tables: each table's columns, key and statements, and the
//! staging of one batch of changes through binary COPY.

use std::collections::BTreeMap;
use std::sync::Arc;

use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::progress::SourcePosition;
use crowdpulse_dataflow::rows::{CustomKey, Row, Score};
use crowdpulse_dataflow::rows_json::{score, RowJson};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;
use tracing::{debug, info};

use crate::error::Result;
use crate::postgres::chat_partitions::ChatPartitions;
use crate::postgres::numeric::Numeric;
use crate::sink::Flush;

/// One output table.
pub struct Table {
    /// Its name.
    pub name: &'static str,
    /// The natural key.
    key: &'static [&'static str],
    /// Every column the sink writes, in COPY order.
    columns: &'static [(&'static str, Type)],
    /// Whether rows carry `final` (every table but dead letters).
    pub has_final: bool,
}

/// The tables in `Row::table` order of [`table_index`].
pub const TABLES: [Table; 11] = [
    Table {
        name: "window_metrics",
        key: &["stream_id", "window", "window_start"],
        columns: &[
            ("stream_id", Type::TEXT),
            ("window", Type::TEXT),
            ("window_start", Type::INT8),
            ("window_end", Type::INT8),
            ("chat_messages", Type::INT8),
            ("unique_chatters", Type::INT8),
            ("sentiment_mean", Type::FLOAT8),
            ("positive", Type::INT8),
            ("neutral", Type::INT8),
            ("negative", Type::INT8),
            ("praise", Type::INT8),
            ("toxic", Type::INT8),
            ("humor", Type::INT8),
            ("question", Type::INT8),
            ("other", Type::INT8),
            ("reactions", Type::INT8),
            ("viewer_joins", Type::INT8),
            ("viewer_leaves", Type::INT8),
            ("viewers_peak", Type::INT8),
            ("viewers_end", Type::INT8),
            ("transactions", Type::INT8),
            ("final", Type::BOOL),
        ],
        has_final: true,
    },
    Table {
        name: "window_emojis",
        key: &["stream_id", "window", "window_start", "emoji"],
        columns: &[
            ("stream_id", Type::TEXT),
            ("window", Type::TEXT),
            ("window_start", Type::INT8),
            ("emoji", Type::TEXT),
            ("window_end", Type::INT8),
            ("count", Type::INT8),
            ("final", Type::BOOL),
        ],
        has_final: true,
    },
    Table {
        name: "window_top_emojis",
        key: &["stream_id", "window", "window_start"],
        columns: &[
            ("stream_id", Type::TEXT),
            ("window", Type::TEXT),
            ("window_start", Type::INT8),
            ("window_end", Type::INT8),
            ("top", Type::JSONB),
            ("truncated", Type::BOOL),
            ("final", Type::BOOL),
        ],
        has_final: true,
    },
    Table {
        name: "window_revenue",
        key: &["stream_id", "window", "window_start", "kind", "currency"],
        columns: &[
            ("stream_id", Type::TEXT),
            ("window", Type::TEXT),
            ("window_start", Type::INT8),
            ("kind", Type::TEXT),
            ("currency", Type::TEXT),
            ("window_end", Type::INT8),
            ("transactions", Type::INT8),
            ("amount_units", Type::NUMERIC),
            ("final", Type::BOOL),
        ],
        has_final: true,
    },
    Table {
        name: "moments",
        key: &["stream_id", "metric", "start"],
        columns: &[
            ("stream_id", Type::TEXT),
            ("metric", Type::TEXT),
            ("start", Type::INT8),
            ("end", Type::INT8),
            ("peak_window_start", Type::INT8),
            ("peak_value", Type::FLOAT8),
            ("baseline_mean", Type::FLOAT8),
            ("baseline_std", Type::FLOAT8),
            ("zscore", Type::FLOAT8),
            ("final", Type::BOOL),
        ],
        has_final: true,
    },
    Table {
        name: "stream_totals",
        key: &["stream_id"],
        columns: &[
            ("stream_id", Type::TEXT),
            ("title", Type::TEXT),
            ("category", Type::TEXT),
            ("status", Type::TEXT),
            ("live_since", Type::INT8),
            ("chat_messages", Type::INT8),
            ("reactions", Type::INT8),
            ("transactions", Type::INT8),
            ("peak_viewers", Type::INT8),
            ("final", Type::BOOL),
        ],
        has_final: true,
    },
    Table {
        name: "dead_letters",
        key: &["source", "partition", "offset"],
        columns: &[
            ("source", Type::TEXT),
            ("partition", Type::INT4),
            ("offset", Type::INT8),
            ("reason", Type::TEXT),
            ("error", Type::TEXT),
            ("payload", Type::BYTEA),
        ],
        has_final: false,
    },
    Table {
        name: "chat_messages",
        key: &["stream_id", "ts", "source", "partition", "offset"],
        columns: &[
            ("source", Type::TEXT),
            ("partition", Type::INT4),
            ("offset", Type::INT8),
            ("ts", Type::INT8),
            ("stream_id", Type::TEXT),
            ("user_id", Type::TEXT),
            ("text", Type::TEXT),
            ("sentiment", Type::FLOAT8),
            ("category", Type::TEXT),
        ],
        has_final: false,
    },
    Table {
        name: "chat_summaries",
        key: &[
            "stream_id",
            "last_ts",
            "last_source",
            "last_partition",
            "last_offset",
        ],
        columns: &[
            ("stream_id", Type::TEXT),
            ("last_ts", Type::INT8),
            ("last_source", Type::TEXT),
            ("last_partition", Type::INT4),
            ("last_offset", Type::INT8),
            ("seq", Type::INT8),
            ("first_ts", Type::INT8),
            ("messages", Type::INT8),
            ("key_phrases", Type::JSONB),
            ("representative", Type::JSONB),
            ("sentiment", Type::FLOAT8),
            ("sentiment_label", Type::TEXT),
            ("category", Type::TEXT),
            ("categories", Type::JSONB),
            ("top_emotes", Type::JSONB),
        ],
        has_final: false,
    },
    Table {
        name: "custom_metrics",
        key: &["kind", "window", "window_start", "dims"],
        columns: &[
            ("kind", Type::TEXT),
            ("window", Type::TEXT),
            ("window_start", Type::INT8),
            ("dims", Type::JSONB),
            ("window_end", Type::INT8),
            ("records", Type::INT8),
            ("measures", Type::JSONB),
            ("final", Type::BOOL),
        ],
        has_final: true,
    },
    Table {
        name: "alerts",
        key: &["kind", "rule", "window", "window_start", "dims"],
        columns: &[
            ("kind", Type::TEXT),
            ("rule", Type::TEXT),
            ("window", Type::TEXT),
            ("window_start", Type::INT8),
            ("dims", Type::JSONB),
            ("window_end", Type::INT8),
            ("measure", Type::TEXT),
            ("value", Type::FLOAT8),
            ("threshold", Type::FLOAT8),
            ("zscore", Type::FLOAT8),
            ("records", Type::INT8),
        ],
        has_final: false,
    },
];

/// Index in [`TABLES`] of `chat_messages`.
const CHAT_MESSAGES: usize = 7;
/// Index in [`TABLES`] of `chat_summaries`.
const CHAT_SUMMARIES: usize = 8;

/// Index in [`TABLES`] of a row's table (None: a live-only row no table keeps, `reactions`).
pub fn table_index(row: &Row) -> Option<usize> {
    Some(match row {
        Row::WindowMetrics { .. } => 0,
        Row::WindowEmoji { .. } => 1,
        Row::WindowTopEmojis { .. } => 2,
        Row::WindowRevenue { .. } => 3,
        Row::Moment { .. } => 4,
        Row::StreamTotals { .. } => 5,
        Row::DeadLetter(_) => 6,
        Row::ChatMessage(_) => CHAT_MESSAGES,
        Row::ChatSummary(_) => CHAT_SUMMARIES,
        Row::CustomMetrics { .. } => 9,
        Row::Alert(_) => 10,
        Row::Reaction(_) => return None,
    })
}

/// A row's natural key: rows with equal keys are versions of one table row. Its order is the
/// order of the table's primary key columns, except for `custom_metrics` and `alerts` (whose
/// keys start with the kind's dimensions): there, rows are copied in some order, just not the
/// B-tree's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowKey {
    /// window_metrics (0) and window_top_emojis (2).
    Window(usize, Arc<str>, Arc<str>, u64),
    /// window_emojis.
    Emoji(Arc<str>, Arc<str>, u64, String),
    /// window_revenue.
    Revenue(Arc<str>, Arc<str>, u64, String, String),
    /// moments.
    Moment(String, String, u64),
    /// stream_totals.
    Totals(String),
    /// dead_letters.
    Dead(String, u32, u64),
    /// chat_messages: the stream and time, then the message's identity (source, partition,
    /// offset), as the table's primary key orders them.
    Chat(String, Millis, Arc<str>, u32, u64),
    /// chat_summaries: the stream and the last message covered.
    Summary(String, Millis, String, u32, u64),
    /// custom_metrics: a window of a kind's dimension combination.
    Custom(CustomKey),
    /// alerts: a rule fired for a window.
    Alert(String, CustomKey),
}

impl RowKey {
    /// The key of `row` (None: no table keeps it).
    pub fn of(row: &Row) -> Option<Self> {
        Some(match row {
            Row::WindowMetrics { key, .. } | Row::WindowTopEmojis { key, .. } => Self::Window(
                table_index(row)?,
                Arc::clone(&key.stream_id),
                Arc::clone(&key.window),
                key.start,
            ),
            Row::WindowEmoji { key, emoji, .. } => Self::Emoji(
                Arc::clone(&key.stream_id),
                Arc::clone(&key.window),
                key.start,
                emoji.clone(),
            ),
            Row::WindowRevenue {
                key,
                kind,
                currency,
                ..
            } => Self::Revenue(
                Arc::clone(&key.stream_id),
                Arc::clone(&key.window),
                key.start,
                kind.clone(),
                currency.clone(),
            ),
            Row::Moment { moment, .. } => Self::Moment(
                moment.stream_id.clone(),
                moment.metric.clone(),
                moment.start,
            ),
            Row::StreamTotals { totals, .. } => Self::Totals(totals.stream_id.clone()),
            Row::DeadLetter(dead) => Self::Dead(dead.source.clone(), dead.partition, dead.offset),
            Row::ChatMessage(message) => Self::Chat(
                message.stream_id.clone(),
                message.ts,
                Arc::clone(&message.source),
                message.partition,
                message.offset,
            ),
            Row::ChatSummary(summary) => Self::Summary(
                summary.stream_id.clone(),
                summary.last_ts,
                summary.last_source.clone(),
                summary.last_partition,
                summary.last_offset,
            ),
            Row::CustomMetrics { key, .. } => Self::Custom(key.clone()),
            Row::Alert(alert) => Self::Alert(alert.rule.clone(), alert.key.clone()),
            Row::Reaction(_) => return None,
        })
    }
}

/// What a batch does to one table row: write this version, or delete it (the row is the
/// retracted version, carrying the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staged<'a> {
    /// The version written, or the one whose key is deleted.
    pub row: &'a Row,
    /// Whether the key is deleted.
    pub deleted: bool,
}

/// Net changes by key. Applying changes in time order, a time's retractions before its
/// insertions, leaves each key's last state: a row replaced within a batch is written once.
/// Kept in key order, which is the order the rows are copied in: inserted in primary-key order,
/// a table's B-tree grows at the right edge of each stream's keys instead of at pages all over it
/// (`chat_messages`' rows arrive in no order across partitions and streams: sorting them halved
/// the time its indexes took, measured under its first key).
///
/// The rows stay in the flushes they came in, shared with the other sinks, and the map holds
/// where each key's last change is: cloning every row into the batch and re-inserting the batch
/// into the pending one cost the worker that gathers the rows (the one every other stage waits
/// for) 2-3% of a backfill's CPU. A batch that cannot be written for a while (the database
/// down) would then hold every flush with every superseded version and every checkpoint, so
/// once those outweigh the current changes, the current ones are copied out and the flushes
/// let go (see [`Changes::compact`]).
#[derive(Debug, Default)]
pub struct Changes {
    flushes: Vec<Arc<Flush>>,
    /// Updates in `flushes`: current, superseded, or of rows no table keeps.
    shared_updates: usize,
    /// Flushes in `flushes` that carry a checkpoint.
    shared_checkpoints: usize,
    /// Changes copied out of flushes let go, current or superseded.
    owned: Vec<(Row, isize)>,
    last_change: BTreeMap<RowKey, Place>,
}

/// Where a key's last change is.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// `flushes[flush].updates[update]`.
    Shared { flush: usize, update: usize },
    /// `owned[index]`.
    Owned(usize),
}

/// Superseded changes a batch may hold besides as many as it has current ones (small in unit
/// tests, so they reach every path of [`Changes::compact`]).
const SUPERSEDED_SLACK: usize = if cfg!(test) { 1_000 } else { 100_000 };

impl Changes {
    /// Applies one flush's changes (in the (time, diff) order a [`Flush`] has) after those
    /// applied before. Rows no table keeps are left out.
    pub fn apply(&mut self, flush: &Arc<Flush>) {
        let index = self.flushes.len();
        let mut kept = false;
        for (update, (row, _, _)) in flush.updates.iter().enumerate() {
            if let Some(key) = RowKey::of(row) {
                let place = Place::Shared {
                    flush: index,
                    update,
                };
                self.last_change.insert(key, place);
                kept = true;
            }
        }
        if kept {
            self.flushes.push(Arc::clone(flush));
            self.shared_updates += flush.updates.len();
            self.shared_checkpoints += usize::from(flush.checkpoint.is_some());
            self.compact();
        }
    }

    /// Applies a later batch on top of this one.
    pub fn merge_later(&mut self, later: Changes) {
        let (flushes, owned) = (self.flushes.len(), self.owned.len());
        self.flushes.extend(later.flushes);
        self.owned.extend(later.owned);
        self.shared_updates += later.shared_updates;
        self.shared_checkpoints += later.shared_checkpoints;
        self.last_change
            .extend(later.last_change.into_iter().map(|(key, place)| {
                let place = match place {
                    Place::Shared { flush, update } => Place::Shared {
                        flush: flush + flushes,
                        update,
                    },
                    Place::Owned(index) => Place::Owned(index + owned),
                };
                (key, place)
            }));
        self.compact();
    }

    /// Once the flushes hold more than one checkpoint (the batch keeps the latest apart), or
    /// superseded changes beyond the slack, copies the current changes out and lets the flushes
    /// go; the copies already made are made again without the superseded ones once those are
    /// most of them. So a batch holds at most twice its current changes plus the slack, and two
    /// checkpoints, however long it waits; a batch written within a checkpoint interval whose
    /// keys change once (a backfill's final rows) is never copied.
    fn compact(&mut self) {
        let current = self.last_change.len();
        let superseded = (self.shared_updates + self.owned.len()).saturating_sub(current);
        if self.shared_checkpoints <= 1 && superseded <= current + SUPERSEDED_SLACK {
            return;
        }
        debug!(
            current,
            superseded,
            checkpoints = self.shared_checkpoints,
            "postgres batch copies its current changes out"
        );
        // Rebuilt when more than the current changes are owned, so that with the copies
        // appended below at most twice the current changes are.
        let mut rebuilt: Option<Vec<Option<(Row, isize)>>> =
            (self.owned.len() > current).then(|| {
                let owned = std::mem::replace(&mut self.owned, Vec::with_capacity(current));
                owned.into_iter().map(Some).collect()
            });
        for place in self.last_change.values_mut() {
            let change = match (*place, rebuilt.as_mut()) {
                (Place::Shared { flush, update }, _) => {
                    let (row, _, diff) = &self.flushes[flush].updates[update];
                    (row.clone(), *diff)
                }
                (Place::Owned(index), Some(old)) => old[index]
                    .take()
                    .expect("an owned change is one key's, taken once"),
                (Place::Owned(_), None) => continue,
            };
            *place = Place::Owned(self.owned.len());
            self.owned.push(change);
        }
        self.flushes.clear();
        self.shared_updates = 0;
        self.shared_checkpoints = 0;
    }

    fn staged(&self) -> impl Iterator<Item = Staged<'_>> {
        self.last_change.values().map(|place| {
            let (row, diff) = match *place {
                Place::Shared { flush, update } => {
                    let (row, _, diff) = &self.flushes[flush].updates[update];
                    (row, *diff)
                }
                Place::Owned(index) => {
                    let (row, diff) = &self.owned[index];
                    (row, *diff)
                }
            };
            Staged {
                row,
                deleted: diff < 0,
            }
        })
    }

    /// The time of the latest chat message staged.
    pub fn latest_chat_time(&self) -> Option<Millis> {
        self.staged()
            .filter_map(|staged| match staged.row {
                Row::ChatMessage(message) => Some(message.ts),
                _ => None,
            })
            .max()
    }

    /// The staged rows grouped by table index.
    fn by_table(&self) -> [Vec<Staged<'_>>; 11] {
        let mut tables: [Vec<Staged<'_>>; 11] = Default::default();
        for staged in self.staged() {
            if let Some(index) = table_index(staged.row) {
                tables[index].push(staged);
            }
        }
        tables
    }
}

fn quoted(columns: impl Iterator<Item = &'static str>) -> String {
    columns
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Table {
    fn stage(&self) -> String {
        format!("stage_{}", self.name)
    }

    fn column_list(&self) -> String {
        quoted(self.columns.iter().map(|(name, _)| *name))
    }

    /// Creates this session's staging table, emptied by every commit.
    fn create_stage(&self, schema: &str) -> String {
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS \
             SELECT {columns}, false AS deleted FROM \"{schema}\".{name} WITH NO DATA",
            stage = self.stage(),
            columns = self.column_list(),
            name = self.name,
        )
    }

    /// Moves the staged versions into the table. A final row is never replaced: after a restart
    /// the recomputed live rows of already final windows leave them as they are, and so does a
    /// window recomputed final from less input (a restart from a later position).
    fn upsert(&self, schema: &str) -> String {
        let columns = self.column_list();
        let conflict = if self.has_final {
            let set = self
                .columns
                .iter()
                .filter(|(name, _)| !self.key.contains(name))
                .map(|(name, _)| format!("\"{name}\" = EXCLUDED.\"{name}\""))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "DO UPDATE SET {set}, updated_at = now() WHERE NOT {name}.final",
                name = self.name
            )
        } else {
            // Dead letters and chat messages and summaries never change: a replay finds them
            // present.
            "DO NOTHING".to_owned()
        };
        format!(
            "INSERT INTO \"{schema}\".{name} AS {name} ({columns}) \
             SELECT {columns} FROM {stage} WHERE NOT deleted \
             ON CONFLICT ({key}) {conflict}",
            name = self.name,
            stage = self.stage(),
            key = quoted(self.key.iter().copied()),
        )
    }

    /// Deletes the keys whose rows disappeared, unless final.
    fn delete(&self, schema: &str) -> String {
        let matches = self
            .key
            .iter()
            .map(|k| format!("t.\"{k}\" = d.\"{k}\""))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "DELETE FROM \"{schema}\".{name} t USING {stage} d \
             WHERE d.deleted AND {matches} AND NOT t.final",
            name = self.name,
            stage = self.stage(),
        )
    }
}

/// Creates the session's staging tables (once per connection).
pub async fn create_stages(client: &tokio_postgres::Client, schema: &str) -> Result<()> {
    let statements: Vec<String> = TABLES.iter().map(|t| t.create_stage(schema)).collect();
    client.batch_execute(&statements.join(";\n")).await?;
    Ok(())
}

/// Partition positions as the columns of an `unnest($1::text[], $2::int4[], $3::int8[],
/// $4::int8[])` (source, partition, next offset, watermark).
pub type PositionColumns<'a> = (Vec<&'a str>, Vec<i32>, Vec<i64>, Vec<Option<i64>>);

/// The columns of `positions`.
pub fn position_columns<'a>(
    positions: impl Iterator<Item = &'a SourcePosition>,
) -> PositionColumns<'a> {
    let mut columns = PositionColumns::default();
    for position in positions {
        columns.0.push(&position.source);
        columns
            .1
            .push(i32::try_from(position.partition).unwrap_or(i32::MAX));
        columns.2.push(to_i64(position.next_offset));
        columns.3.push(position.watermark.map(to_i64));
    }
    columns
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn rounded(value: Score) -> f64 {
    score(value)
}

/// Where a COPY goes: a staging table takes each row's `deleted` flag as its last column, the
/// table itself (which only ever receives rows to insert) does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyTarget {
    Stage,
    Table,
}

/// Writes one row's values, `deleted` last, to a COPY into `target`.
async fn write_values(
    writer: std::pin::Pin<&mut BinaryCopyInWriter>,
    values: &[&(dyn ToSql + Sync)],
    target: CopyTarget,
) -> std::result::Result<(), tokio_postgres::Error> {
    let values = match target {
        CopyTarget::Stage => values,
        CopyTarget::Table => &values[..values.len() - 1],
    };
    writer.write(values).await
}

/// Writes one staged row to its table's COPY.
async fn copy_row(
    writer: std::pin::Pin<&mut BinaryCopyInWriter>,
    staged: Staged<'_>,
    target: CopyTarget,
) -> std::result::Result<(), tokio_postgres::Error> {
    let deleted = staged.deleted;
    match staged.row {
        Row::WindowMetrics {
            key,
            metrics: m,
            is_final,
        } => {
            let values: [&(dyn ToSql + Sync); 23] = [
                &&*key.stream_id,
                &&*key.window,
                &to_i64(key.start),
                &to_i64(key.end),
                &to_i64(m.chat_messages),
                &to_i64(m.unique_chatters),
                &m.sentiment_mean(),
                &to_i64(m.positive),
                &to_i64(m.neutral),
                &to_i64(m.negative),
                &to_i64(m.praise),
                &to_i64(m.toxic),
                &to_i64(m.humor),
                &to_i64(m.question),
                &to_i64(m.other),
                &to_i64(m.reactions),
                &to_i64(m.viewer_joins),
                &to_i64(m.viewer_leaves),
                &to_i64(m.viewers_peak),
                &to_i64(m.viewers_end),
                &to_i64(m.transactions),
                is_final,
                &deleted,
            ];
            write_values(writer, &values, target).await
        }
        Row::WindowEmoji {
            key,
            emoji,
            count,
            is_final,
        } => {
            write_values(
                writer,
                &[
                    &&*key.stream_id,
                    &&*key.window,
                    &to_i64(key.start),
                    emoji,
                    &to_i64(key.end),
                    &to_i64(*count),
                    is_final,
                    &deleted,
                ],
                target,
            )
            .await
        }
        Row::WindowTopEmojis {
            key,
            top,
            truncated,
            is_final,
        } => {
            let top: serde_json::Value = top
                .iter()
                .map(|(emoji, count)| serde_json::json!({"count": count, "emoji": emoji}))
                .collect();
            write_values(
                writer,
                &[
                    &&*key.stream_id,
                    &&*key.window,
                    &to_i64(key.start),
                    &to_i64(key.end),
                    &top,
                    truncated,
                    is_final,
                    &deleted,
                ],
                target,
            )
            .await
        }
        Row::WindowRevenue {
            key,
            kind,
            currency,
            transactions,
            amount,
            is_final,
        } => {
            write_values(
                writer,
                &[
                    &&*key.stream_id,
                    &&*key.window,
                    &to_i64(key.start),
                    kind,
                    currency,
                    &to_i64(key.end),
                    &to_i64(*transactions),
                    &Numeric(*amount),
                    is_final,
                    &deleted,
                ],
                target,
            )
            .await
        }
        Row::Moment { moment, is_final } => {
            write_values(
                writer,
                &[
                    &moment.stream_id,
                    &moment.metric,
                    &to_i64(moment.start),
                    &to_i64(moment.end),
                    &to_i64(moment.peak_window_start),
                    &rounded(moment.peak_value),
                    &rounded(moment.baseline_mean),
                    &rounded(moment.baseline_std),
                    &rounded(moment.zscore),
                    is_final,
                    &deleted,
                ],
                target,
            )
            .await
        }
        Row::StreamTotals { totals, is_final } => {
            write_values(
                writer,
                &[
                    &totals.stream_id,
                    &totals.title,
                    &totals.category,
                    &totals.status,
                    &totals.live_since.map(to_i64),
                    &to_i64(totals.chat_messages),
                    &to_i64(totals.reactions),
                    &to_i64(totals.transactions),
                    &to_i64(totals.peak_viewers),
                    is_final,
                    &deleted,
                ],
                target,
            )
            .await
        }
        Row::DeadLetter(dead) => {
            write_values(
                writer,
                &[
                    &dead.source,
                    &i32::try_from(dead.partition).unwrap_or(i32::MAX),
                    &to_i64(dead.offset),
                    &dead.reason.name(),
                    &dead.error,
                    &dead.payload,
                    &deleted,
                ],
                target,
            )
            .await
        }
        Row::ChatMessage(message) => {
            write_values(
                writer,
                &[
                    &&*message.source,
                    &i32::try_from(message.partition).unwrap_or(i32::MAX),
                    &to_i64(message.offset),
                    &to_i64(message.ts),
                    &message.stream_id,
                    &message.user_id,
                    &message.text,
                    &message.sentiment_score(),
                    &message.category.name(),
                    &deleted,
                ],
                target,
            )
            .await
        }
        Row::ChatSummary(summary) => {
            // The JSON columns hold what the NDJSON row holds.
            let json = serde_json::to_value(RowJson(staged.row)).expect("rows serialize");
            write_values(
                writer,
                &[
                    &summary.stream_id,
                    &to_i64(summary.last_ts),
                    &summary.last_source,
                    &i32::try_from(summary.last_partition).unwrap_or(i32::MAX),
                    &to_i64(summary.last_offset),
                    &to_i64(summary.seq),
                    &to_i64(summary.first_ts),
                    &to_i64(summary.messages),
                    &json["key_phrases"],
                    &json["representative"],
                    &json["sentiment"].as_f64().unwrap_or_default(),
                    &summary.sentiment_label().name(),
                    &summary.category().name(),
                    &json["categories"],
                    &json["top_emotes"],
                    &deleted,
                ],
                target,
            )
            .await
        }
        Row::CustomMetrics {
            key,
            records,
            is_final,
            ..
        } => {
            // The JSON columns hold what the NDJSON row holds.
            let json = serde_json::to_value(RowJson(staged.row)).expect("rows serialize");
            write_values(
                writer,
                &[
                    &key.kind.kind,
                    &&*key.window,
                    &to_i64(key.start),
                    &json["dims"],
                    &to_i64(key.end),
                    &to_i64(*records),
                    &json["values"],
                    is_final,
                    &deleted,
                ],
                target,
            )
            .await
        }
        Row::Alert(alert) => {
            let json = serde_json::to_value(RowJson(staged.row)).expect("rows serialize");
            write_values(
                writer,
                &[
                    &alert.key.kind.kind,
                    &alert.rule,
                    &&*alert.key.window,
                    &to_i64(alert.key.start),
                    &json["dims"],
                    &to_i64(alert.key.end),
                    &alert.measure,
                    &alert.value.0,
                    &alert.threshold.map(|s| s.0),
                    &alert.zscore.map(|s| s.0),
                    &to_i64(alert.records),
                    &deleted,
                ],
                target,
            )
            .await
        }
        // Never staged: `Changes::apply` leaves out rows no table keeps.
        Row::Reaction(_) => Ok(()),
    }
}

/// The chat messages among `staged` that the retention keeps, with their day partitions made.
async fn chat_to_write<'a>(
    tx: &Transaction<'_>,
    schema: &str,
    staged: Vec<Staged<'a>>,
    partitions: &ChatPartitions,
) -> Result<Vec<Staged<'a>>> {
    let time = |staged: &Staged| match staged.row {
        Row::ChatMessage(message) => message.ts,
        _ => 0,
    };
    let kept: Vec<Staged> = staged
        .into_iter()
        .filter(|s| partitions.keeps(time(s)))
        .collect();
    partitions.create(tx, schema, kept.iter().map(time)).await?;
    Ok(kept)
}

/// Per table, whether its new rows are upserted rather than copied straight into it. A backfill
/// into empty tables writes each key once, so its rows go in with one COPY each; upserting them
/// through a staging table costs the server about twice as much per row (the conflict check, a
/// second insert). A table is upserted for the rest of the sink's life once its COPY met an
/// existing key (a restart or a replay over written rows), or once it takes a live row, which
/// later versions replace (a live run: no failed COPY, and no error in the server's log, each
/// time it starts).
#[derive(Debug, Default)]
pub struct UpsertOnly([bool; TABLES.len()]);

/// Rolls a failed COPY into a table back without losing the flush's other writes.
const COPY_SAVEPOINT: &str = "copy_into_table";

/// Applies `changes` to the tables in `tx`: new rows by a binary COPY into the table unless it
/// is [`UpsertOnly`], everything else staged by binary COPY and upserted. Returns the number of
/// table rows written or deleted.
pub async fn write_changes(
    tx: &Transaction<'_>,
    schema: &str,
    changes: &Changes,
    chat_partitions: &mut ChatPartitions,
    upsert_only: &mut UpsertOnly,
) -> Result<u64> {
    let mut written = 0;
    for (index, (table, staged)) in TABLES.iter().zip(changes.by_table()).enumerate() {
        let staged = if index == CHAT_MESSAGES {
            chat_to_write(tx, schema, staged, chat_partitions).await?
        } else {
            staged
        };
        if staged.is_empty() {
            continue;
        }
        // Rows of tables without `final` never change, so nothing of them is ever deleted.
        let inserted: Vec<Staged> = staged.iter().filter(|s| !s.deleted).copied().collect();
        let deletes = table.has_final && inserted.len() < staged.len();
        if staged.iter().any(|s| !s.row.is_final()) {
            upsert_only.0[index] = true;
        }
        if !upsert_only.0[index] && !deletes {
            if inserted.is_empty() {
                continue;
            }
            tx.batch_execute(&format!("SAVEPOINT {COPY_SAVEPOINT}"))
                .await?;
            let copy = format!(
                "COPY \"{schema}\".{} ({}) FROM STDIN BINARY",
                table.name,
                table.column_list()
            );
            match copy_rows(tx, &copy, table, &inserted, CopyTarget::Table).await {
                Ok(rows) => {
                    tx.batch_execute(&format!("RELEASE SAVEPOINT {COPY_SAVEPOINT}"))
                        .await?;
                    written += rows;
                    continue;
                }
                Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    tx.batch_execute(&format!(
                        "ROLLBACK TO SAVEPOINT {COPY_SAVEPOINT}; RELEASE SAVEPOINT {COPY_SAVEPOINT}"
                    ))
                    .await?;
                    // The server logs this unique violation as an error: say here what it was.
                    info!(
                        table = table.name,
                        "rows already present; upserting from now on"
                    );
                    upsert_only.0[index] = true;
                }
                Err(error) => return Err(error.into()),
            }
        }
        let stage = format!(
            "COPY {} ({}, deleted) FROM STDIN BINARY",
            table.stage(),
            table.column_list()
        );
        copy_rows(tx, &stage, table, &staged, CopyTarget::Stage).await?;
        written += tx.execute(&table.upsert(schema), &[]).await?;
        if deletes {
            written += tx.execute(&table.delete(schema), &[]).await?;
        }
    }
    chat_partitions.prune(tx, schema).await?;
    Ok(written)
}

/// Runs `copy` (a binary COPY of `table`'s columns, `deleted` too into a stage) over `staged`;
/// returns the rows copied.
async fn copy_rows(
    tx: &Transaction<'_>,
    copy: &str,
    table: &Table,
    staged: &[Staged<'_>],
    target: CopyTarget,
) -> std::result::Result<u64, tokio_postgres::Error> {
    let mut types: Vec<Type> = table.columns.iter().map(|(_, t)| t.clone()).collect();
    if target == CopyTarget::Stage {
        types.push(Type::BOOL);
    }
    let writer = BinaryCopyInWriter::new(tx.copy_in(copy).await?, &types);
    pin_mut!(writer);
    for &row in staged {
        copy_row(writer.as_mut(), row, target).await?;
    }
    writer.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowdpulse_dataflow::rows::{DeadLetter, DeadLetterReason};

    #[test]
    fn the_last_change_of_a_key_wins_and_retractions_come_first() {
        let totals = |n: u64, is_final| Row::StreamTotals {
            totals: Box::new(crowdpulse_dataflow::rows::StreamTotals {
                stream_id: "s".into(),
                chat_messages: n,
                ..Default::default()
            }),
            is_final,
        };
        let flush = |updates: Vec<(Row, Millis, isize)>| {
            Arc::new(Flush {
                updates,
                ..Flush::default()
            })
        };
        let mut changes = Changes::default();
        changes.apply(&flush(vec![
            (totals(1, false), 5, -1),
            (totals(2, false), 5, 1),
        ]));
        let staged = |changes: &Changes| -> Vec<(Row, bool)> {
            let staged = changes.staged();
            staged.map(|s| (s.row.clone(), s.deleted)).collect()
        };
        assert_eq!(staged(&changes), [(totals(2, false), false)]);
        let mut later = Changes::default();
        later.apply(&flush(vec![(totals(2, false), 6, -1)]));
        // A flush whose rows no table keeps is not held.
        let reaction = Row::Reaction(Box::new(crowdpulse_dataflow::rows::Reaction {
            stream_id: "s".into(),
            ts: 6,
            user_id: "u".into(),
            emoji: "🔥".into(),
            event_id: None,
        }));
        later.apply(&flush(vec![(reaction, 6, 1)]));
        changes.merge_later(later);
        assert_eq!(changes.flushes.len(), 2);
        assert_eq!(staged(&changes), [(totals(2, false), true)]);
        let dead = Row::DeadLetter(DeadLetter::new(
            "t",
            1,
            7,
            DeadLetterReason::Late,
            "x".into(),
            b"{}",
        ));
        assert_eq!(RowKey::of(&dead), Some(RowKey::Dead("t".into(), 1, 7)));
    }

    /// A batch that waits (the database down) while flush after flush replaces rows and brings
    /// checkpoints holds about its current changes, not every flush: they are copied out once
    /// superseded ones outweigh them or a second checkpoint comes, and copied again without the
    /// superseded ones; the result, also of batches merged after their copies, is the last
    /// change of every key, as if every flush were held.
    #[test]
    fn a_waiting_batch_holds_its_current_changes_not_every_flush() {
        let totals = |stream: usize, n: u64| Row::StreamTotals {
            totals: Box::new(crowdpulse_dataflow::rows::StreamTotals {
                stream_id: format!("s{stream}"),
                chat_messages: n,
                ..Default::default()
            }),
            is_final: false,
        };
        let checkpoint = Arc::new(crowdpulse_dataflow::checkpoint::Checkpoint {
            time: 0,
            workers: 1,
            parts: Vec::new(),
        });
        let streams = 1_000;
        // Stream -> its last change (value, diff), kept by hand.
        let mut expected: BTreeMap<String, (u64, isize)> = BTreeMap::new();
        let mut value = vec![0u64; streams];
        let bounded = |changes: &Changes| {
            let held = changes.shared_updates + changes.owned.len();
            let current = changes.last_change.len();
            assert!(
                held <= 2 * current + SUPERSEDED_SLACK,
                "{held} changes held for {current} keys"
            );
            assert!(changes.shared_checkpoints <= 1);
        };
        let (mut first, mut second) = (Changes::default(), Changes::default());
        for n in 1..=300u64 {
            // The first flush writes every stream; later ones rewrite a tenth of them (so some
            // keys stay owned across copies), retracting the old value first; the last one
            // retracts a stream for good; every 25th flush carries a checkpoint.
            let mut updates = Vec::new();
            for s in (0..streams).filter(|s| n == 1 || (s + n as usize).is_multiple_of(10)) {
                if value[s] > 0 {
                    updates.push((totals(s, value[s]), n, -1));
                }
                if n < 300 {
                    value[s] = n;
                    updates.push((totals(s, n), n, 1));
                    expected.insert(format!("s{s}"), (n, 1));
                } else {
                    expected.insert(format!("s{s}"), (value[s], -1));
                }
            }
            let flush = Arc::new(Flush {
                updates,
                checkpoint: (n % 25 == 0).then(|| Arc::clone(&checkpoint)),
                ..Flush::default()
            });
            let batch = if n <= 150 { &mut first } else { &mut second };
            batch.apply(&flush);
            bounded(batch);
        }
        assert!(first.owned.len() > streams / 2 && !second.owned.is_empty());
        first.merge_later(second);
        bounded(&first);
        // The batch holds no flush that carries a checkpoint beyond one.
        assert!(Arc::strong_count(&checkpoint) <= 2);
        let staged: BTreeMap<String, (u64, isize)> = first
            .staged()
            .map(|staged| {
                let Row::StreamTotals { totals, .. } = staged.row else {
                    panic!("{:?}", staged.row)
                };
                let diff = if staged.deleted { -1 } else { 1 };
                (totals.stream_id.clone(), (totals.chat_messages, diff))
            })
            .collect();
        assert_eq!(staged, expected);
    }

    #[test]
    fn statements_keep_final_rows() {
        let upsert = TABLES[0].upsert("crowdpulse");
        assert!(
            upsert.ends_with("WHERE NOT window_metrics.final"),
            "{upsert}"
        );
        assert!(TABLES[6].upsert("crowdpulse").ends_with("DO NOTHING"));
        assert!(TABLES[0].delete("crowdpulse").ends_with("AND NOT t.final"));
    }
}
