//! Checkpoints in Postgres: written in the transaction of the flush that completes them (older
//! ones pruned there), read back by a starting `run`.

use bytes::{BufMut, Bytes, BytesMut};
use crowdpulse_dataflow::checkpoint::{
    Checkpoint, CheckpointError, CheckpointPart, Role, FORMAT_VERSION,
};
use crowdpulse_dataflow::event::Millis;
use futures_util::SinkExt;
use tokio_postgres::{GenericClient, IsolationLevel, NoTls, Transaction};

use super::config::PostgresConfig;
use super::sink::{block_on, LOCK_TIMEOUT};
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
    copy_parts(tx, schema, time, &checkpoint.parts).await?;
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

/// How much of a state goes to the server at a time.
const COPY_SLICE: usize = 1 << 20;

/// The longest state PostgreSQL can store in one value: a bytea is at most 1 GiB - 1 bytes
/// (its allocation limit) including its 4-byte length header.
const MAX_STATE_BYTES: usize = (1 << 30) - 1 - 4;

/// Writes the parts with a binary COPY that sends each state in slices: as a bound parameter, or
/// a row of tokio-postgres' `BinaryCopyInWriter`, a state (tens of MB in a long run) is encoded
/// whole into one buffer and copied whole into the connection's write buffer, which keeps that
/// capacity for good; so every checkpoint briefly held two more copies of itself and the sink
/// kept one.
async fn copy_parts(
    tx: &Transaction<'_>,
    schema: &str,
    time: i64,
    parts: &[CheckpointPart],
) -> Result<()> {
    // Refused before anything is sent: the server would take the whole state and then fail.
    if let Some(part) = parts.iter().find(|p| p.state.len() > MAX_STATE_BYTES) {
        return Err(ConnectorError::CheckpointPartTooLarge {
            worker: part.worker,
            role: part.role.name(),
            bytes: part.state.len(),
        });
    }
    let sink = tx
        .copy_in(&format!(
            "COPY \"{schema}\".checkpoint_parts (time, worker, role, state) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let mut sink = std::pin::pin!(sink);
    // PostgreSQL's binary COPY: a signature, flags and header extension length, then per row a
    // field count and each field as a length and its bytes, and -1 as the trailer.
    let mut framing = BytesMut::new();
    framing.put_slice(b"PGCOPY\n\xff\r\n\0");
    framing.put_i32(0);
    framing.put_i32(0);
    for part in parts {
        let role = part.role.name().as_bytes();
        framing.put_i16(4);
        framing.put_i32(8);
        framing.put_i64(time);
        framing.put_i32(4);
        framing.put_i32(int(part.worker));
        framing.put_i32(int(role.len()));
        framing.put_slice(role);
        framing.put_i32(int(part.state.len()));
        sink.send(framing.split().freeze()).await?;
        for slice in part.state.chunks(COPY_SLICE) {
            sink.send(Bytes::copy_from_slice(slice)).await?;
        }
    }
    framing.put_i16(-1);
    sink.send(framing.freeze()).await?;
    sink.finish().await?;
    Ok(())
}

/// Reads the latest checkpoint and hands it to `decode`. None: no checkpoint yet (the run starts
/// where `kafka.start` says). Nothing is removed here: every process of a cluster reads before
/// the processes agree on the job, and only the one hosting the sinks then clears
/// ([`start_afresh`], when the Postgres sink opens).
pub fn read_latest<T>(
    config: &PostgresConfig,
    decode: impl FnOnce(&Checkpoint) -> std::result::Result<T, CheckpointError>,
) -> Result<Option<(Millis, T)>> {
    let client_config = config.client_config()?;
    block_on(async {
        let (mut client, connection) = client_config.connect(NoTls).await?;
        let connection = tokio::spawn(connection);
        let latest = async {
            // One snapshot: the header and its parts read in two statements of their own could
            // straddle a commit of the next checkpoint (which replaces both) and find no parts.
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            latest_checkpoint(&tx, &config.schema).await
        }
        .await;
        drop(client);
        let _ = connection.await;
        match latest? {
            Some(checkpoint) => Ok(Some((checkpoint.time, decode(&checkpoint)?))),
            None => Ok(None),
        }
    })
}

/// Removes the stored checkpoint, with `forget_checkpoint`, and every live row (see
/// [`delete_live_rows`]); a run without checkpoints (`forget_checkpoint` false) keeps any stored
/// one. Returns how many checkpoints were removed.
pub fn start_afresh(config: &PostgresConfig, forget_checkpoint: bool) -> Result<u64> {
    let client_config = config.client_config()?;
    block_on(async {
        let (mut client, connection) = client_config.connect(NoTls).await?;
        let connection = tokio::spawn(connection);
        let removed = async {
            // One transaction, so that an attempt cut short is undone whole and its retry
            // reports what it removed.
            let tx = client.transaction().await?;
            // A lock another session holds fails this after LOCK_TIMEOUT (opening then retries
            // within its grace) instead of holding the start for as long as the lock is held.
            tx.batch_execute(&format!(
                "SET LOCAL lock_timeout = {}",
                LOCK_TIMEOUT.as_millis()
            ))
            .await?;
            let mut removed = 0;
            if forget_checkpoint {
                let delete = format!("DELETE FROM \"{}\".checkpoints", config.schema);
                removed = tx.execute(&delete, &[]).await?;
            }
            delete_live_rows(&tx, &config.schema).await?;
            tx.commit().await?;
            Ok::<_, ConnectorError>(removed)
        }
        .await;
        drop(client);
        let _ = connection.await;
        removed
    })
}

/// The latest checkpoint, if any (only complete ones are ever written).
pub async fn latest_checkpoint(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Option<Checkpoint>> {
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
async fn delete_live_rows(tx: &Transaction<'_>, schema: &str) -> Result<u64> {
    let mut deleted = 0;
    for table in TABLES.iter().filter(|t| t.has_final) {
        deleted += tx
            .execute(
                &format!("DELETE FROM \"{schema}\".{} WHERE NOT final", table.name),
                &[],
            )
            .await?;
    }
    Ok(deleted)
}
