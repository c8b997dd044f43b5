//! The Postgres sink: every flush's consolidated changes, merged by key, are committed by a
//! writer thread in ONE transaction together with the source positions they reflect and the
//! frontier they are complete below. Live runs commit every `flush_interval`; when the sources
//! are about to wait for it (a backfill), at once. While Postgres is down the writer retries
//! with backoff, keeps merging new flushes into the batch it could not write, and its durable
//! frontier (which the runtime feeds back to the sources) pauses reading so memory stays bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crowdpulse_dataflow::checkpoint::Checkpoint;
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::progress::Positions;
use tokio_postgres::{Client, NoTls};
use tracing::{debug, error, info, warn};

use super::chat_partitions::ChatPartitions;
use super::checkpoints::{start_afresh, write_checkpoint};
use super::config::PostgresConfig;
use super::migrate::migrate;
use super::tables::{create_stages, position_columns, write_changes, Changes, UpsertOnly};
use crate::error::{ConnectorError, Result};
use crate::live_input::wall_clock_ms;
use crate::sink::{Flush, Sink};

/// What the sink did, for /metrics.
#[derive(Debug, Default)]
pub struct PostgresSinkMetrics {
    /// Committed transactions.
    pub commits: AtomicU64,
    /// Table rows inserted, updated or deleted.
    pub rows_written: AtomicU64,
    /// Failed attempts (connection lost, statement failed).
    pub failures: AtomicU64,
    /// Duration of the last commit, µs.
    pub last_commit_micros: AtomicU64,
    /// Total time spent committing, µs.
    pub commit_micros_total: AtomicU64,
    /// Frontier of the last flush handed to the sink (computed), epoch ms; u64::MAX when done.
    pub computed_frontier: AtomicU64,
    /// Frontier of the last commit (written), epoch ms; u64::MAX when done.
    pub written_frontier: AtomicU64,
    /// 1 while the last attempt to reach the database succeeded.
    pub connected: AtomicU64,
    /// Checkpoints committed.
    pub checkpoints: AtomicU64,
    /// Time of the last checkpoint written, epoch ms.
    pub checkpoint_time: AtomicU64,
    /// Encoded size of the last checkpoint written, bytes.
    pub checkpoint_bytes: AtomicU64,
    /// Time the last checkpoint took to write (within its flush's transaction), µs.
    pub checkpoint_write_micros: AtomicU64,
}

impl PostgresSinkMetrics {
    fn note_checkpoint(&self, checkpoint: &Checkpoint) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.checkpoint_time
            .store(checkpoint.time, Ordering::Relaxed);
        self.checkpoint_bytes
            .store(checkpoint.bytes() as u64, Ordering::Relaxed);
    }
}

/// A batch waiting for the writer.
#[derive(Debug, Default)]
struct Batch {
    changes: Changes,
    positions: Positions,
    /// The latest checkpoint merged in.
    checkpoint: Option<Arc<Checkpoint>>,
    /// The frontier of the latest flush merged in (None inside: the input ended).
    frontier: Option<Option<Millis>>,
}

impl Batch {
    /// Takes a flush in after those before: its changes, and as the latest its positions,
    /// frontier and checkpoint (if it has one), as [`Batch::merge_later`] takes a batch.
    fn apply(&mut self, flush: &Arc<Flush>) {
        self.changes.apply(flush);
        if flush.checkpoint.is_some() {
            self.checkpoint.clone_from(&flush.checkpoint);
        }
        self.positions.clone_from(&flush.positions);
        self.frontier = Some(flush.frontier);
    }

    fn merge_later(&mut self, later: Batch) {
        self.changes.merge_later(later.changes);
        if later.checkpoint.is_some() {
            self.checkpoint = later.checkpoint;
        }
        if later.frontier.is_some() {
            self.positions = later.positions;
            self.frontier = later.frontier;
        }
    }
}

#[derive(Debug, Default)]
struct State {
    pending: Batch,
    /// No flush follows (since when): write what is pending and stop.
    finished: Option<Instant>,
    /// Why the writer gave up; later flushes are dropped and `finish` reports it.
    failed: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The frontier below which everything is committed (`Millis::MAX`: all).
    durable: AtomicU64,
    /// How far the sources may run ahead of `durable`.
    lead: Millis,
    metrics: Arc<PostgresSinkMetrics>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives up: what is pending is dropped, later flushes too, and the sources are no longer
    /// held back (the run goes on without the database and reports the failure when it ends).
    fn fail(&self, reason: String) {
        error!(%reason, "postgres sink stopped; the tables are behind until a run replays the input");
        let mut state = self.state();
        state.pending = Batch::default();
        state.failed.get_or_insert(reason);
        self.metrics.connected.store(0, Ordering::Relaxed);
        self.made_durable(None);
    }

    /// Everything before `frontier` is committed (None: everything).
    fn made_durable(&self, frontier: Option<Millis>) {
        self.durable
            .store(frontier.unwrap_or(Millis::MAX), Ordering::Release);
    }
}

/// Name of this sink in `sink_frontier`.
const SINK_NAME: &str = "postgres";
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a stopping run waits for an unreachable database before giving up on what it has
/// not written (a replay from Kafka restores it).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long opening the sink keeps retrying a database it cannot reach before the run fails.
const OPEN_GRACE: Duration = Duration::from_secs(30);

/// How long a write waits for a lock another session holds before it fails (and is retried).
pub(crate) const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a failed write may succeed when tried again: the connection or the server's state
/// (lost connection, shutdown, lack of resources, a serialization conflict, a lock another
/// session held past [`LOCK_TIMEOUT`]), as opposed to the statement or its data, which would
/// fail the same way forever.
fn retryable(error: &ConnectorError) -> bool {
    match error {
        ConnectorError::Postgres(error) => error.as_db_error().is_none_or(|db| {
            let code = db.code().code();
            matches!(&code[..2], "08" | "40" | "53" | "57" | "58") || code == "55P03"
        }),
        _ => false,
    }
}

/// Writes the tables of DESIGN §4a (see the module doc).
pub struct PostgresSink {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// What [`Sink::open`] clears.
    config: PostgresConfig,
    /// Whether opening removes the stored checkpoint too (a run from an explicit position).
    forget_checkpoint: bool,
}

fn frontier_value(frontier: Option<Millis>) -> u64 {
    frontier.unwrap_or(u64::MAX)
}

/// Connects and prepares the session (staging tables).
async fn connect(config: &tokio_postgres::Config, schema: &str) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!(%error, "postgres connection closed");
        }
    });
    // Every commit with chat makes sure its day partition exists (`CREATE TABLE IF NOT EXISTS`),
    // which the server answers with an "already exists" notice: logged, once a second in a live
    // run. Notices carry nothing the sink acts on; warnings and errors still come.
    // A write waiting on a lock another session holds (an administrator's `ALTER TABLE`, a
    // `LOCK TABLE`) fails after LOCK_TIMEOUT and is tried again like any retryable failure:
    // while running the sink keeps trying until the lock is free (out of the lock's queue in
    // between, so readers are not held behind it), but a stopped run gives up after its grace
    // instead of waiting as long as the lock is held.
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; SET lock_timeout = {}",
            LOCK_TIMEOUT.as_millis()
        ))
        .await?;
    create_stages(&client, schema).await?;
    Ok(client)
}

/// Runs `work` to completion on a runtime of its own, for the steps before a run starts.
pub(crate) fn block_on<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ConnectorError::io("tokio runtime", e))?
        .block_on(work)
}

/// Applies the migrations (under their advisory lock); returns the versions applied now.
pub fn apply_migrations(config: &PostgresConfig) -> Result<Vec<i32>> {
    let client_config = config.client_config()?;
    block_on(async {
        let (mut client, connection) = client_config.connect(NoTls).await?;
        let connection = tokio::spawn(connection);
        let applied = migrate(&mut client, &config.schema).await;
        drop(client);
        let _ = connection.await;
        applied
    })
}

impl PostgresSink {
    /// Starts the writer, committing every `flush_interval` (zero: as soon as the previous
    /// commit is done, as a backfill wants); the schema must be migrated. Fails when the
    /// settings are unusable (connection failures are retried by the writer, never fatal).
    pub fn start(config: &PostgresConfig, flush_interval: Duration) -> Result<Self> {
        let client_config = config.client_config()?;
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            durable: AtomicU64::new(0),
            lead: config.max_lead.0,
            metrics: Arc::default(),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            client_config,
            schema: config.schema.clone(),
            interval: flush_interval,
            chat_partitions: ChatPartitions::new(config.chat_retention.0),
            upsert_only: UpsertOnly::default(),
        };
        let handle = spawn_writer(&shared, move || writer.run())?;
        Ok(Self {
            shared,
            writer: Mutex::new(Some(handle)),
            config: config.clone(),
            forget_checkpoint: false,
        })
    }

    /// Makes [`Sink::open`] remove the stored checkpoint as well: a run started from an explicit
    /// position must never be resumed from an earlier run's checkpoint.
    pub fn forgetting_checkpoint(mut self) -> Self {
        self.forget_checkpoint = true;
        self
    }

    /// How far (event time) the sources may run ahead of what is committed.
    pub fn lead(&self) -> Millis {
        self.shared.lead
    }

    /// Counters for /metrics.
    pub fn metrics(&self) -> Arc<PostgresSinkMetrics> {
        Arc::clone(&self.shared.metrics)
    }
}

impl Sink for PostgresSink {
    /// Removes every live row (and the checkpoint, when forgetting it): a run emits the live
    /// rows of what it computes again, and an earlier run's live rows of windows it does not
    /// recompute would stay live for ever.
    ///
    /// A connection lost or a server restarting meanwhile is retried, as the writer retries, for
    /// at most [`OPEN_GRACE`]: the run has not started, so a database still away then fails it.
    fn open(&self) -> Result<()> {
        let began = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let removed = loop {
            match start_afresh(&self.config, self.forget_checkpoint) {
                Err(error) if retryable(&error) && began.elapsed() < OPEN_GRACE => {
                    warn!(%error, retry_in = ?backoff, "postgres unavailable while opening; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                removed => break removed?,
            }
        };
        if removed > 0 {
            info!("explicit start position: the stored checkpoint is dropped");
        }
        Ok(())
    }

    fn flush(&self, flush: &Arc<Flush>) {
        self.shared
            .metrics
            .computed_frontier
            .store(frontier_value(flush.frontier), Ordering::Relaxed);
        let mut state = self.shared.state();
        if state.failed.is_none() {
            // Applied straight into the pending batch (the writer holds the lock only to take
            // it): a batch of its own merged in would re-insert every key.
            state.pending.apply(flush);
            self.shared.wake.notify_one();
        }
    }

    fn finish(&self) -> Result<()> {
        self.shared.state().finished = Some(Instant::now());
        self.shared.wake.notify_one();
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            // A panic was recorded as the failure when it happened (`FailOnPanic`).
            let _ = handle.join();
        }
        match self.shared.state().failed.clone() {
            Some(reason) => Err(ConnectorError::PostgresWriter(reason)),
            None => Ok(()),
        }
    }

    fn failure(&self) -> Option<String> {
        self.shared
            .state()
            .failed
            .as_ref()
            .map(|reason| format!("postgres sink: {reason}"))
    }

    fn durable_frontier(&self) -> Option<Millis> {
        Some(self.shared.durable.load(Ordering::Acquire))
    }
}

/// Records a panic of the writer thread as the sink's failure as it unwinds, so that the run
/// stops with it at once (the sinks' worker watches [`Sink::failure`]) instead of reading on with
/// its sources held back by a durable frontier that no longer moves, until `finish` joins the
/// thread.
struct FailOnPanic(Arc<Shared>);

impl Drop for FailOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail("the writer thread panicked".into());
        }
    }
}

fn spawn_writer(
    shared: &Arc<Shared>,
    work: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>> {
    let guard = FailOnPanic(Arc::clone(shared));
    std::thread::Builder::new()
        .name("postgres-sink".into())
        .spawn(move || {
            let _guard = guard;
            work();
        })
        .map_err(|e| ConnectorError::io("postgres sink thread", e))
}

struct Writer {
    shared: Arc<Shared>,
    client_config: tokio_postgres::Config,
    schema: String,
    interval: Duration,
    chat_partitions: ChatPartitions,
    /// Which tables take new rows by upsert only.
    upsert_only: UpsertOnly,
}

impl Writer {
    /// Takes the next batch: `interval` after the previous commit began, at once when the
    /// sources are about to wait for it or no flush follows; None when finished and everything
    /// is written.
    fn next_batch(&self, last_commit_began: Instant) -> Option<Batch> {
        let mut state = self.shared.state();
        loop {
            let Some(frontier) = state.pending.frontier else {
                if state.finished.is_some() || state.failed.is_some() {
                    return None;
                }
                // Flushes and the end notify.
                state = self
                    .shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let durable = self.shared.durable.load(Ordering::Acquire);
            let sources_waiting =
                frontier_value(frontier) >= durable.saturating_add(self.shared.lead / 2);
            let due = self.interval.saturating_sub(last_commit_began.elapsed());
            if state.finished.is_some() || sources_waiting || due.is_zero() {
                return Some(std::mem::take(&mut state.pending));
            }
            state = self
                .shared
                .wake
                .wait_timeout(state, due)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn run(mut self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                self.shared
                    .fail(format!("cannot start the writer's runtime: {error}"));
                return;
            }
        };
        let metrics = Arc::clone(&self.shared.metrics);
        let mut client: Option<Client> = None;
        // The interval runs from one commit's start to the next's: a commit that took longer
        // than the interval is followed at once, instead of leaving the server idle for another
        // interval while rows queue (a backfill spent a quarter of its time in such gaps). After
        // retries it runs from the attempt that succeeded, which took in everything until then.
        let mut last_commit_began = Instant::now();
        while let Some(mut batch) = self.next_batch(last_commit_began) {
            let mut backoff = Duration::from_millis(100);
            let mut attempts = 0u32;
            loop {
                let started = Instant::now();
                attempts += 1;
                let attempt = runtime.block_on(async {
                    if client.as_ref().is_none_or(Client::is_closed) {
                        client = Some(connect(&self.client_config, &self.schema).await?);
                    }
                    let client = client.as_mut().expect("connected above");
                    self.commit(client, &batch).await
                });
                match attempt {
                    Ok(rows) => {
                        let micros = started.elapsed().as_micros() as u64;
                        debug!(
                            rows,
                            millis = micros / 1000,
                            attempts,
                            frontier = ?batch.frontier.flatten(),
                            "postgres commit"
                        );
                        last_commit_began = started;
                        metrics.connected.store(1, Ordering::Relaxed);
                        metrics.commits.fetch_add(1, Ordering::Relaxed);
                        metrics.rows_written.fetch_add(rows, Ordering::Relaxed);
                        metrics.last_commit_micros.store(micros, Ordering::Relaxed);
                        metrics
                            .commit_micros_total
                            .fetch_add(micros, Ordering::Relaxed);
                        if let Some(checkpoint) = &batch.checkpoint {
                            metrics.note_checkpoint(checkpoint);
                        }
                        break;
                    }
                    Err(error) => {
                        self.chat_partitions.forget();
                        metrics.connected.store(0, Ordering::Relaxed);
                        metrics.failures.fetch_add(1, Ordering::Relaxed);
                        client = None;
                        let stopping = self.shared.state().finished;
                        if !retryable(&error) {
                            self.shared
                                .fail(format!("postgres refused a write: {error}"));
                            return;
                        }
                        if stopping.is_some_and(|at| at.elapsed() >= SHUTDOWN_GRACE) {
                            self.shared.fail(format!(
                                "postgres still failing {SHUTDOWN_GRACE:?} after the run ended: {error}"
                            ));
                            return;
                        }
                        warn!(%error, retry_in = ?backoff, "postgres write failed; retrying");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        // What arrived meanwhile goes into the same transaction.
                        let later = std::mem::take(&mut self.shared.state().pending);
                        batch.merge_later(later);
                    }
                }
            }
            let frontier = batch.frontier.flatten();
            metrics
                .written_frontier
                .store(frontier_value(frontier), Ordering::Relaxed);
            self.shared.made_durable(frontier);
        }
        info!("postgres sink finished");
    }

    /// One transaction: the changes, the positions they reflect and the frontier.
    async fn commit(&mut self, client: &mut Client, batch: &Batch) -> Result<u64> {
        let schema = &self.schema;
        let tx = client.transaction().await?;
        // At the end of the input the frontier is gone: the latest message stands in for it.
        let reference = batch
            .frontier
            .flatten()
            .or_else(|| batch.changes.latest_chat_time());
        self.chat_partitions.advance(reference, wall_clock_ms());
        let written = write_changes(
            &tx,
            schema,
            &batch.changes,
            &mut self.chat_partitions,
            &mut self.upsert_only,
        )
        .await?;
        if !batch.positions.is_empty() {
            let (sources, partitions, offsets, watermarks) =
                position_columns(batch.positions.iter());
            tx.execute(
                &format!(
                    "INSERT INTO \"{schema}\".source_progress (source, partition, next_offset, watermark) \
                     SELECT * FROM unnest($1::text[], $2::int4[], $3::int8[], $4::int8[]) \
                     ON CONFLICT (source, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, \
                     watermark = EXCLUDED.watermark, updated_at = now()"
                ),
                &[&sources, &partitions, &offsets, &watermarks],
            )
            .await?;
        }
        if let Some(checkpoint) = &batch.checkpoint {
            let started = Instant::now();
            write_checkpoint(&tx, schema, checkpoint).await?;
            self.shared
                .metrics
                .checkpoint_write_micros
                .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        let frontier = batch.frontier.flatten().map(|f| f as i64);
        tx.execute(
            &format!(
                "INSERT INTO \"{schema}\".sink_frontier (sink, frontier) VALUES ($1, $2) \
                 ON CONFLICT (sink) DO UPDATE SET frontier = EXCLUDED.frontier, updated_at = now()"
            ),
            &[&SINK_NAME, &frontier],
        )
        .await?;
        tx.commit().await?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that panics mid-run is the sink's failure at once, not only when the run ends and
    /// `finish` joins it.
    #[test]
    fn a_panicking_writer_is_a_failure_before_finish() {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            durable: AtomicU64::new(0),
            lead: 0,
            metrics: Arc::default(),
        });
        let handle = spawn_writer(&shared, || panic!("a bug in the writer")).unwrap();
        let sink = PostgresSink {
            shared,
            writer: Mutex::new(Some(handle)),
            config: PostgresConfig::default(),
            forget_checkpoint: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.failure().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            sink.failure().as_deref(),
            Some("postgres sink: the writer thread panicked")
        );
        // Its sources are no longer held back, and the run's end reports the same failure.
        assert_eq!(sink.durable_frontier(), Some(Millis::MAX));
        assert!(sink.finish().is_err());
    }
}
