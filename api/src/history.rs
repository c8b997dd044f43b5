//! History from Postgres: what the view store no longer holds (older than its retention, or from
//! before this process started) is read from the tables the Postgres sink writes, through a
//! connection pool, in the same JSON shape as the store's rows.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use crowdpulse_connectors::postgres::PostgresConfig;
use crowdpulse_dataflow::event::Millis;

use crate::chat::ChatFilter;
use crate::error::{ApiError, Result};
use crate::kinds::KindFilter;

/// The most moments one answer carries from Postgres.
const MAX_MOMENTS: i64 = 1_000;
/// How long a history query may take, waiting for a connection included: a database that does
/// not answer must not hold requests.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Read access to the Postgres tables.
#[derive(Clone)]
pub struct History {
    pool: Pool,
    schema: String,
}

impl History {
    /// A pool of `pool_size` connections, opened on demand.
    pub fn new(config: &PostgresConfig) -> Result<Self> {
        let mut client_config = config.client_config()?;
        client_config
            .connect_timeout(QUERY_TIMEOUT)
            .options(format!(
                "-c statement_timeout={}",
                QUERY_TIMEOUT.as_millis()
            ));
        let manager = Manager::from_config(
            client_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(QUERY_TIMEOUT))
            .create_timeout(Some(QUERY_TIMEOUT))
            .build()
            .map_err(|e| ApiError::Server(format!("postgres pool: {e}")))?;
        Ok(Self {
            pool,
            schema: config.schema.clone(),
        })
    }

    async fn values(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Value>> {
        let client = self.pool.get().await?;
        let rows = client.query(sql, params).await?;
        Ok(rows.iter().map(|row| row.get::<_, Value>(0)).collect())
    }

    /// The latest `limit` `window_metrics` rows of a stream and window label whose start is in
    /// `[from, before)`, oldest first.
    pub async fn window_metrics(
        &self,
        stream_id: &str,
        window: &str,
        (from, before): (Millis, Millis),
        limit: usize,
    ) -> Result<Vec<Value>> {
        let sql = format!(
            "SELECT to_jsonb(t) - 'updated_at' \
                    || jsonb_build_object('table', 'window_metrics') \
             FROM \"{}\".window_metrics t \
             WHERE stream_id = $1 AND \"window\" = $2 AND window_start >= $3 AND window_start < $4 \
             ORDER BY window_start DESC LIMIT $5",
            self.schema
        );
        let mut rows = self
            .values(
                &sql,
                &[
                    &stream_id,
                    &window,
                    &clamp(from),
                    &clamp(before),
                    &(limit as i64),
                ],
            )
            .await?;
        rows.reverse();
        Ok(rows)
    }

    /// A stream's moments that started before `before`, oldest first (at most 1,000, the
    /// latest).
    pub async fn moments(&self, stream_id: &str, before: Millis) -> Result<Vec<Value>> {
        let sql = format!(
            "SELECT to_jsonb(t) - 'updated_at' || jsonb_build_object('table', 'moments') \
             FROM \"{}\".moments t WHERE stream_id = $1 AND start < $2 \
             ORDER BY start DESC, metric LIMIT $3",
            self.schema
        );
        let mut rows = self
            .values(&sql, &[&stream_id, &clamp(before), &MAX_MOMENTS])
            .await?;
        rows.reverse();
        Ok(rows)
    }
}

impl History {
    /// A page of a stream's chat messages selected by `filter`, newest first; sources compare
    /// byte by byte (`COLLATE "C"`), as the cursor's keys do in Rust.
    pub async fn chat(&self, stream_id: &str, filter: &ChatFilter) -> Result<Vec<Value>> {
        let (from, to) = (clamp(filter.from), clamp(filter.to));
        let limit = filter.limit as i64;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&stream_id, &from, &to, &limit];
        let mut conditions = String::new();
        let category = filter.category.map(|c| c.name());
        if let Some(category) = &category {
            params.push(category);
            conditions += &format!(" AND category = ${}", params.len());
        }
        if let Some(q) = &filter.q {
            params.push(q);
            conditions += &format!(
                " AND to_tsvector('simple', text) @@ websearch_to_tsquery('simple', ${})",
                params.len()
            );
        }
        let before = filter
            .before
            .as_ref()
            .map(|(ts, source, partition, offset)| {
                (
                    clamp(*ts),
                    source.to_string(),
                    i32::try_from(*partition).unwrap_or(i32::MAX),
                    clamp(*offset),
                )
            });
        if let Some((ts, source, partition, offset)) = &before {
            params.extend([ts as &(dyn ToSql + Sync), source, partition, offset]);
            let n = params.len();
            conditions += &format!(
                " AND (ts, source COLLATE \"C\", partition, \"offset\") < (${}, ${}, ${}, ${n})",
                n - 3,
                n - 2,
                n - 1
            );
        }
        let sql = format!(
            "SELECT to_jsonb(t) - 'created_at' \
                    || jsonb_build_object('table', 'chat_messages', 'final', true) \
             FROM \"{}\".chat_messages t \
             WHERE stream_id = $1 AND ts >= $2 AND ts < $3{conditions} \
             ORDER BY ts DESC, source COLLATE \"C\" DESC, partition DESC, \"offset\" DESC LIMIT $4",
            self.schema
        );
        self.values(&sql, &params).await
    }

    /// A stream's latest `limit` chat summaries with their texts, newest first.
    pub async fn summaries(&self, stream_id: &str, limit: usize) -> Result<Vec<Value>> {
        let sql = format!(
            "SELECT to_jsonb(t) - 'created_at' \
                    || jsonb_build_object('table', 'chat_summaries', 'final', true, 'text', x.text) \
             FROM \"{schema}\".chat_summaries t \
             LEFT JOIN \"{schema}\".chat_summary_texts x \
                  USING (stream_id, last_ts, last_source, last_partition, last_offset) \
             WHERE t.stream_id = $1 \
             ORDER BY t.last_ts DESC, t.last_source COLLATE \"C\" DESC, t.last_partition DESC, \
                      t.last_offset DESC LIMIT $2",
            schema = self.schema
        );
        self.values(&sql, &[&stream_id, &(limit as i64)]).await
    }

    /// Runs a kind's query with its parameters: kind, window ('' for any), from, to, dimension
    /// values (an object the row's must contain), limit.
    async fn kind_values(&self, sql: &str, kind: &str, filter: &KindFilter) -> Result<Vec<Value>> {
        let window = filter.window.clone().unwrap_or_default();
        let dims = serde_json::to_value(&filter.dims).unwrap_or_default();
        let (from, to) = (clamp(filter.from), clamp(filter.to));
        let limit = filter.limit as i64;
        self.values(sql, &[&kind, &window, &from, &to, &dims, &limit])
            .await
    }

    /// The newest `filter.limit` `custom_metrics` rows of a kind passing `filter`.
    pub async fn custom_metrics(&self, kind: &str, filter: &KindFilter) -> Result<Vec<Value>> {
        let sql = format!(
            "SELECT jsonb_build_object('table', 'custom_metrics', 'kind', kind, 'window', \"window\", \
                    'window_start', window_start, 'window_end', window_end, 'dims', dims, \
                    'records', records, 'values', measures, 'final', final) \
             FROM \"{}\".custom_metrics \
             WHERE kind = $1 AND \"window\" = $2 AND window_start >= $3 AND window_start < $4 \
                   AND dims @> $5 \
             ORDER BY window_start DESC, dims::text COLLATE \"C\" DESC LIMIT $6",
            self.schema
        );
        self.kind_values(&sql, kind, filter).await
    }

    /// The newest `filter.limit` alerts of a kind passing `filter`.
    pub async fn alerts(&self, kind: &str, filter: &KindFilter) -> Result<Vec<Value>> {
        let sql = format!(
            "SELECT to_jsonb(t) - 'created_at' || jsonb_build_object('table', 'alerts', 'final', true) \
             FROM \"{}\".alerts t \
             WHERE kind = $1 AND ($2 = '' OR \"window\" = $2) AND window_start >= $3 \
                   AND window_start < $4 AND dims @> $5 \
             ORDER BY window_start DESC, rule COLLATE \"C\" DESC, dims::text COLLATE \"C\" DESC \
             LIMIT $6",
            self.schema
        );
        self.kind_values(&sql, kind, filter).await
    }

    /// Whether Postgres holds any chat message of the stream.
    pub async fn has_chat(&self, stream_id: &str) -> Result<bool> {
        let sql = format!(
            "SELECT to_jsonb(EXISTS (SELECT 1 FROM \"{}\".chat_messages WHERE stream_id = $1))",
            self.schema
        );
        let found = self.values(&sql, &[&stream_id]).await?;
        Ok(found.first().and_then(Value::as_bool).unwrap_or(false))
    }
}

fn clamp(ms: Millis) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}
