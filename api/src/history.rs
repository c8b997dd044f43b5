//! History from Postgres: what the view store no longer holds (older than its retention, or from
//! before this process started) is read from the tables the Postgres sink writes, through a
//! connection pool, in the same JSON shape as the store's rows.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::Value;
use tokio_postgres::NoTls;

use crowdpulse_connectors::postgres::PostgresConfig;
use crowdpulse_dataflow::event::Millis;

use crate::error::{ApiError, Result};

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

    async fn values(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Value>> {
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

fn clamp(ms: Millis) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}
