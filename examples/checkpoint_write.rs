//! Checkpoint writes alone, for `scripts/bench-checkpoint`: writes a checkpoint of `--workers`
//! source and analytics parts (`--part-mib` MiB of incompressible state each; the defaults make
//! 54.5 MB, the size of the soak's checkpoints before they were compressed) `--writes` times
//! into a fresh schema, each in a transaction of its own as the sink does, and prints each
//! write's time and this process's resident memory after it (now and peak) while it holds that
//! checkpoint alone, so what a write keeps or briefly needs beyond the checkpoint itself shows.

#[path = "support/proc_status.rs"]
mod proc_status;

use std::time::Instant;

use clap::Parser;
use crowdpulse_connectors::postgres::checkpoints::{latest_checkpoint, write_checkpoint};
use crowdpulse_connectors::postgres::{apply_migrations, PostgresConfig};
use crowdpulse_dataflow::checkpoint::{Checkpoint, CheckpointPart, Role};
use proc_status::status_mib;
use tokio_postgres::NoTls;

/// The binary's allocator: what a write keeps depends on how the allocator reuses its space.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
struct Options {
    /// The PostgreSQL server (a schema of its own is created and dropped).
    #[arg(long)]
    url: String,
    /// Workers, each writing a source and an analytics part.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// MiB of state per part.
    #[arg(long, default_value_t = 13.0)]
    part_mib: f64,
    /// Checkpoints written.
    #[arg(long, default_value_t = 10)]
    writes: u64,
}

/// This process's memory field of /proc in MiB, NaN where it cannot be read.
fn own_mib(field: &str) -> f64 {
    status_mib("self", field).unwrap_or(f64::NAN)
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
    let Options {
        url,
        workers,
        part_mib,
        writes,
    } = Options::parse();
    let part_bytes = (part_mib * 1048576.0) as usize;
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
        "start: rss {:.0} MiB; {workers} workers, parts of {part_mib:.1} MiB",
        own_mib("VmRSS")
    );
    let writes_and_check = async {
        for time in 1..=writes {
            // Built before the clock starts and dropped after the write, as the sink does.
            let checkpoint = checkpoint(time, workers, part_bytes);
            let started = Instant::now();
            let tx = client.transaction().await?;
            write_checkpoint(&tx, &schema, &checkpoint).await?;
            tx.commit().await?;
            let millis = started.elapsed().as_secs_f64() * 1e3;
            println!(
                "write {time}: {millis:.0} ms, {:.0} MB/s; rss {:.0} MiB, peak {:.0} MiB",
                checkpoint.bytes() as f64 / 1e6 / (millis / 1e3),
                own_mib("VmRSS"),
                own_mib("VmHWM")
            );
        }
        // The last write reads back as written (the bytes are a function of time and part).
        let stored = latest_checkpoint(&client, &schema).await?;
        anyhow::ensure!(
            stored == Some(checkpoint(writes, workers, part_bytes)),
            "the stored checkpoint differs from the written one"
        );
        anyhow::Ok(())
    };
    let outcome = writes_and_check.await;
    // The schema holds hundreds of MB: it goes whether or not the writes succeeded.
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    outcome?;
    println!(
        "end: rss {:.0} MiB, peak {:.0} MiB",
        own_mib("VmRSS"),
        own_mib("VmHWM")
    );
    Ok(())
}
