//! Versioned schema migrations, embedded in the binary and applied in order under an advisory
//! lock, each in the transaction that records it in `schema_migrations`.
//!
//! Written here rather than taken from refinery: crowdpulse needs its tables in a configurable
//! schema and concurrent starts (`run` on several hosts, `migrate` in a deploy job) serialized by
//! a Postgres advisory lock, which refinery's tokio-postgres runner does not take; the runner is
//! one transaction and a table of versions.

use tokio_postgres::Client;
use tracing::info;

use crate::error::Result;

/// One migration: version, name, SQL.
pub struct Migration {
    /// Applied in ascending order; never reused.
    pub version: i32,
    /// What it does.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "tables",
        sql: include_str!("../../migrations/V1__tables.sql"),
    },
    Migration {
        version: 2,
        name: "checkpoints",
        sql: include_str!("../../migrations/V2__checkpoints.sql"),
    },
    Migration {
        version: 3,
        name: "limits",
        sql: include_str!("../../migrations/V3__limits.sql"),
    },
    Migration {
        version: 4,
        name: "categories",
        sql: include_str!("../../migrations/V4__categories.sql"),
    },
    Migration {
        version: 5,
        name: "chat_messages",
        sql: include_str!("../../migrations/V5__chat_messages.sql"),
    },
    Migration {
        version: 6,
        name: "chat_summaries",
        sql: include_str!("../../migrations/V6__chat_summaries.sql"),
    },
    Migration {
        version: 7,
        name: "chat_summary_texts",
        sql: include_str!("../../migrations/V7__chat_summary_texts.sql"),
    },
    Migration {
        version: 8,
        name: "custom_kinds",
        sql: include_str!("../../migrations/V8__custom_kinds.sql"),
    },
    Migration {
        version: 9,
        name: "chat_messages_by_stream_key",
        sql: include_str!("../../migrations/V9__chat_messages_by_stream_key.sql"),
    },
];

/// Key of the advisory lock serializing migrations ("crowdpulse" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x6372_6f77_6470_756c;

/// Applies the migrations `schema` lacks; returns the versions applied now (empty when the
/// schema was up to date).
pub async fn migrate(client: &mut Client, schema: &str) -> Result<Vec<i32>> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning;
         CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         SET LOCAL search_path TO \"{schema}\";
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut now_applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
        info!(
            version = migration.version,
            name = migration.name,
            schema,
            "migration applied"
        );
        now_applied.push(migration.version);
    }
    tx.commit().await?;
    Ok(now_applied)
}
