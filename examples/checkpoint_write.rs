//! Checkpoint writes alone, for `scripts/bench-checkpoint`: writes a checkpoint of `--workers`
//! source and analytics parts (`--part-mib` MiB of incompressible state each; the defaults make
//! the soak's 53 MB) `--writes` times into a fresh schema, each in a transaction of its own as
//! the sink does, and prints each write's time and this process's resident memory after it (now
//! and peak), so what a write keeps or briefly needs beyond the checkpoint itself shows.
//! Usage: checkpoint_write --url URL [--workers 2] [--part-mib 13] [--writes 10]

use std::time::Instant;

use crowdpulse_connectors::postgres::checkpoints::{latest_checkpoint, write_checkpoint};
use crowdpulse_connectors::postgres::{apply_migrations, PostgresConfig};
use crowdpulse_dataflow::checkpoint::{Checkpoint, CheckpointPart, Role};
use tokio_postgres::NoTls;

/// The binary's allocator: what a write keeps depends on how the allocator reuses its space.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A field of /proc/self/status in MiB (VmRSS: now, VmHWM: peak).
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Bytes Postgres cannot compress (its TOAST compression would flatter a repetitive state).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn checkpoint(time: u64, workers: usize, part_bytes: usize) -> Checkpoint {
    let parts = [Role::Source, Role::Analytics]
        .into_iter()
        .flat_map(|role| (0..workers).map(move |worker| (role, worker)))
        .map(|(role, worker)| CheckpointPart {
            time,
            worker,
            workers,
            role,
            positions: Vec::new(),
            state: noise(part_bytes, time * 31 + worker as u64 * 7 + role as u64 + 1),
            finished: false,
        })
        .collect();
    Checkpoint {
        time,
        workers,
        parts,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = arg("--url").ok_or_else(|| anyhow::anyhow!("--url is required"))?;
    let workers: usize = arg("--workers").map_or(Ok(2), |v| v.parse())?;
    let part_bytes = arg("--part-mib").map_or(Ok(13.0), |v| v.parse::<f64>())? * 1048576.0;
    let writes: u64 = arg("--writes").map_or(Ok(10), |v| v.parse())?;
    let config = PostgresConfig {
        url: url.clone(),
        schema: format!("checkpoint_bench_{}", std::process::id()),
        ..PostgresConfig::default()
    };
    let schema = config.schema.clone();
    tokio::task::spawn_blocking(move || apply_migrations(&config)).await??;
    let (mut client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    println!(
        "start: rss {:.0} MiB; {workers} workers, parts of {:.1} MiB",
        status_mib("VmRSS:"),
        part_bytes / 1048576.0
    );
    let mut last = None;
    for time in 1..=writes {
        // Built before the clock starts, dropped after the write: as the sink holds it.
        let checkpoint = checkpoint(time, workers, part_bytes as usize);
        let started = Instant::now();
        let tx = client.transaction().await?;
        write_checkpoint(&tx, &schema, &checkpoint).await?;
        tx.commit().await?;
        let millis = started.elapsed().as_secs_f64() * 1e3;
        println!(
            "write {time}: {millis:.0} ms, {:.0} MB/s; rss {:.0} MiB, peak {:.0} MiB",
            checkpoint.bytes() as f64 / 1e6 / (millis / 1e3),
            status_mib("VmRSS:"),
            status_mib("VmHWM:")
        );
        last = Some(checkpoint);
    }
    // The last write reads back as written.
    let stored = latest_checkpoint(&client, &schema).await?;
    anyhow::ensure!(
        stored == last,
        "the stored checkpoint differs from the written one"
    );
    drop(last);
    drop(stored);
    println!(
        "end: rss {:.0} MiB, peak {:.0} MiB",
        status_mib("VmRSS:"),
        status_mib("VmHWM:")
    );
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}
