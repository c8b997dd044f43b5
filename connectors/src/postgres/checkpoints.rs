//! Checkpoints in Postgres: written in the transaction of the flush that completes them (older
//! ones pruned there), read back by a starting `run`.

use crowdpulse_dataflow::checkpoint::{
    Checkpoint, CheckpointError, CheckpointPart, Role, FORMAT_VERSION,
};
use crowdpulse_dataflow::event::Millis;
use tokio_postgres::{Client, NoTls, Transaction};

use super::config::PostgresConfig;
use super::sink::block_on;
use super::tables::{position_columns, TABLES};
use crate::error::{ConnectorError, Result};

fn int(value: usize) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Writes `checkpoint` and removes every older one.
pub async fn write_checkpoint(
    tx: &Transaction<'_>,
    schema: &str,
    checkpoint: &Checkpoint,
) -> Result<()> {
    let time = checkpoint.time as i64;
    // Only the latest is kept; one at the same time (a restart that has not moved yet, maybe
    // with another number of workers) is replaced whole, never merged.
    tx.execute(&format!("DELETE FROM \"{schema}\".checkpoints"), &[])
        .await?;
    tx.execute(
        &format!(
            "INSERT INTO \"{schema}\".checkpoints (time, workers, format_version, state_bytes) \
             VALUES ($1, $2, $3, $4)"
        ),
        &[
            &time,
            &int(checkpoint.workers),
            &(FORMAT_VERSION as i32),
            &(checkpoint.bytes() as i64),
        ],
    )
    .await?;
    let (workers, roles, states): (Vec<i32>, Vec<&str>, Vec<&[u8]>) = checkpoint
        .parts
        .iter()
        .map(|p| (int(p.worker), p.role.name(), &p.state[..]))
        .fold(Default::default(), |(mut w, mut r, mut s), (a, b, c)| {
            w.push(a);
            r.push(b);
            s.push(c);
            (w, r, s)
        });
    tx.execute(
        &format!(
            "INSERT INTO \"{schema}\".checkpoint_parts (time, worker, role, state) \
             SELECT $1, * FROM unnest($2::int4[], $3::text[], $4::bytea[])"
        ),
        &[&time, &workers, &roles, &states],
    )
    .await?;
    let (sources, partitions, offsets, watermarks) = position_columns(checkpoint.positions());
    tx.execute(
        &format!(
            "INSERT INTO \"{schema}\".checkpoint_positions (time, source, partition, next_offset, watermark) \
             SELECT $1, * FROM unnest($2::text[], $3::int4[], $4::int8[], $5::int8[])"
        ),
        &[&time, &sources, &partitions, &offsets, &watermarks],
    )
    .await?;
    Ok(())
}

/// Prepares a run that resumes: reads the latest checkpoint, hands it to `decode` and, when that
/// succeeds, removes every live row (see [`delete_live_rows`]). None: no checkpoint yet.
pub fn resume<T>(
    config: &PostgresConfig,
    decode: impl FnOnce(&Checkpoint) -> std::result::Result<T, CheckpointError>,
) -> Result<Option<(Millis, T)>> {
    let client_config = config.client_config()?;
    block_on(async {
        let (mut client, connection) = client_config.connect(NoTls).await?;
        let connection = tokio::spawn(connection);
        let resumed = match latest_checkpoint(&client, &config.schema).await? {
            Some(checkpoint) => {
                let decoded = decode(&checkpoint)?;
                delete_live_rows(&mut client, &config.schema).await?;
                Some((checkpoint.time, decoded))
            }
            None => None,
        };
        drop(client);
        let _ = connection.await;
        Ok(resumed)
    })
}

/// Removes the stored checkpoint: a run started from an explicit position must never be resumed
/// from an earlier run's. Returns how many were removed.
pub fn forget(config: &PostgresConfig) -> Result<u64> {
    let client_config = config.client_config()?;
    block_on(async {
        let (client, connection) = client_config.connect(NoTls).await?;
        let connection = tokio::spawn(connection);
        let removed = client
            .execute(
                &format!("DELETE FROM \"{}\".checkpoints", config.schema),
                &[],
            )
            .await;
        drop(client);
        let _ = connection.await;
        Ok(removed?)
    })
}

/// The latest checkpoint, if any (only complete ones are ever written).
pub async fn latest_checkpoint(client: &Client, schema: &str) -> Result<Option<Checkpoint>> {
    let Some(header) = client
        .query_opt(
            &format!(
                "SELECT time, workers FROM \"{schema}\".checkpoints ORDER BY time DESC LIMIT 1"
            ),
            &[],
        )
        .await?
    else {
        return Ok(None);
    };
    let (time, workers): (i64, i32) = (header.get(0), header.get(1));
    let mut parts = Vec::new();
    for row in client
        .query(
            &format!(
                "SELECT worker, role, state FROM \"{schema}\".checkpoint_parts WHERE time = $1"
            ),
            &[&time],
        )
        .await?
    {
        let role: &str = row.get(1);
        let role = Role::parse(role).ok_or_else(|| {
            ConnectorError::Inconsistent(format!("checkpoint part of unknown role {role:?}"))
        })?;
        parts.push(CheckpointPart {
            time: time as Millis,
            worker: row.get::<_, i32>(0) as usize,
            workers: workers as usize,
            role,
            positions: Vec::new(),
            state: row.get(2),
            finished: false,
        });
    }
    let found = parts.len();
    Checkpoint::assemble(time as Millis, parts, &Default::default())
        .map(Some)
        .ok_or_else(|| {
            ConnectorError::Checkpoint(CheckpointError::Incomplete {
                time: time as Millis,
                found,
                workers: workers as usize,
            })
        })
}

/// Removes every live (not final) row: a run resuming from a checkpoint emits the live rows it
/// held there again, and live rows written after the checkpoint may never be recomputed.
pub async fn delete_live_rows(client: &mut Client, schema: &str) -> Result<u64> {
    let tx = client.transaction().await?;
    let mut deleted = 0;
    for table in TABLES.iter().filter(|t| t.has_final) {
        deleted += tx
            .execute(
                &format!("DELETE FROM \"{schema}\".{} WHERE NOT final", table.name),
                &[],
            )
            .await?;
    }
    tx.commit().await?;
    Ok(deleted)
}
