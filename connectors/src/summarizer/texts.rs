//! `chat_summary_texts`: the texts already made, so a replay reuses them.

use std::sync::Arc;

use crowdpulse_dataflow::summary::ChatSummary;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};
use tracing::debug;

use crate::error::Result;
use crate::postgres::tables::to_i64;
use crate::postgres::PostgresConfig;

/// The table, reached over one connection opened on first use and again after it breaks.
pub struct StoredTexts {
    config: tokio_postgres::Config,
    table: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

const KEY: &str =
    "stream_id = $1 AND last_ts = $2 AND last_source = $3 AND last_partition = $4 AND last_offset = $5";

impl StoredTexts {
    /// The table of `config`'s schema (migrated by the run).
    pub fn new(config: &PostgresConfig) -> Result<Self> {
        Ok(Self {
            config: config.client_config()?,
            table: format!("\"{}\".chat_summary_texts", config.schema),
            client: tokio::sync::Mutex::new(None),
        })
    }

    async fn client(&self) -> Result<Arc<Client>> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|client| !client.is_closed()) {
            return Ok(Arc::clone(client));
        }
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "summary texts connection closed");
            }
        });
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// The text stored for `summary`.
    pub async fn find(&self, summary: &ChatSummary) -> Result<Option<String>> {
        let sql = format!("SELECT text FROM {} WHERE {KEY}", self.table);
        let key = Key::of(summary);
        let row = self.client().await?.query_opt(&sql, &key.params()).await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Stores `text` for `summary` (a text stored meanwhile by another run stays).
    pub async fn save(&self, summary: &ChatSummary, text: &str, model: &str) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} (stream_id, last_ts, last_source, last_partition, last_offset, text, model) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            self.table
        );
        let key = Key::of(summary);
        let mut params = key.params().to_vec();
        params.extend([&text as &(dyn ToSql + Sync), &model]);
        self.client().await?.execute(&sql, &params).await?;
        Ok(())
    }
}

/// A summary's key columns, as the sink stores them.
struct Key<'a> {
    stream_id: &'a str,
    ts: i64,
    source: &'a str,
    partition: i32,
    offset: i64,
}

impl<'a> Key<'a> {
    fn of(summary: &'a ChatSummary) -> Self {
        Self {
            stream_id: &summary.stream_id,
            ts: to_i64(summary.last_ts),
            source: &summary.last_source,
            partition: i32::try_from(summary.last_partition).unwrap_or(i32::MAX),
            offset: to_i64(summary.last_offset),
        }
    }

    /// $1..$5 of [`KEY`].
    fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        [
            &self.stream_id,
            &self.ts,
            &self.source,
            &self.partition,
            &self.offset,
        ]
    }
}
