//! The summarizer as a sink: each new chat summary the dataflow emits is queued (bounded) for a
//! worker thread that reuses a stored text or asks the endpoint (bounded concurrency, timeout),
//! stores the answer and tells the listener (the view store). The dataflow never waits for it:
//! a summary whose request fails, times out or finds the queue full stays extractive.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::summary::ChatSummary;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::{ConnectorError, Result};
use crate::postgres::PostgresConfig;
use crate::sink::{Flush, Sink};
use crate::summarizer::client::CompletionsClient;
use crate::summarizer::config::SummarizerConfig;
use crate::summarizer::texts::StoredTexts;

/// Told of every text made or reused.
pub trait SummaryTextListener: Send + Sync {
    /// `summary` has `text`.
    fn summary_text(&self, summary: &ChatSummary, text: &str);
}

/// What became of the summaries (for /metrics).
#[derive(Debug, Default)]
pub struct SummarizerMetrics {
    /// Texts the endpoint made.
    pub made: AtomicU64,
    /// Texts found stored (a replay).
    pub reused: AtomicU64,
    /// Requests without an answer within the timeout.
    pub timeouts: AtomicU64,
    /// Requests that failed otherwise (error status, unusable answer, connection).
    pub failures: AtomicU64,
    /// Summaries left extractive because the queue was full or the run was ending.
    pub skipped: AtomicU64,
    /// Texts made but not stored (Postgres unreachable): a replay asks for them again.
    pub unsaved: AtomicU64,
    /// Requests repeated after a "try again" answer (each summary is counted once above).
    pub retries: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the worker's tasks share.
struct Worker {
    client: CompletionsClient,
    texts: Option<StoredTexts>,
    listener: OnceLock<Arc<dyn SummaryTextListener>>,
    metrics: Arc<SummarizerMetrics>,
    /// Set when the run ends: requests not started by then are skipped.
    deadline: OnceLock<Instant>,
    /// A request's timeout.
    timeout: Duration,
    /// Further requests after a "try again" answer.
    retries: u32,
}

impl Worker {
    fn ending(&self) -> bool {
        self.deadline.get().is_some_and(|d| Instant::now() >= *d)
    }

    /// `work` on the stored texts, within a request's timeout: Postgres' own connect timeout
    /// is 10 s, and lookups share one connection, so a cut network made a stopping run wait for
    /// every queued summary in turn.
    async fn stored<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or(Err(ConnectorError::StoredTextsTimeout))
    }

    async fn text_for(&self, summary: &ChatSummary) {
        if self.ending() {
            bump(&self.metrics.skipped);
            return;
        }
        if let Some(texts) = &self.texts {
            match self.stored(texts.find(summary)).await {
                Ok(Some(text)) => {
                    bump(&self.metrics.reused);
                    self.tell(summary, &text);
                    return;
                }
                Ok(None) => {}
                Err(error) => {
                    warn!(%error, stream_id = %summary.stream_id, "summary text lookup failed; asking the endpoint")
                }
            }
        }
        if self.ending() {
            bump(&self.metrics.skipped);
            return;
        }
        match self.ask(summary).await {
            Ok(text) => {
                bump(&self.metrics.made);
                if let Some(texts) = &self.texts {
                    let saving = texts.save(summary, &text, self.client.model());
                    if let Err(error) = self.stored(saving).await {
                        bump(&self.metrics.unsaved);
                        warn!(%error, stream_id = %summary.stream_id, "summary text not stored");
                    }
                }
                self.tell(summary, &text);
            }
            Err(error) => {
                bump(match error {
                    ConnectorError::SummaryTimeout => &self.metrics.timeouts,
                    _ => &self.metrics.failures,
                });
                warn!(%error, stream_id = %summary.stream_id, "summary text request failed; the summary stays extractive");
            }
        }
    }

    /// The endpoint's text, asked again (at most `retries` times) while it answers "try again"
    /// (408, 429, 500, 502, 503, 504: what rate limits and overloaded or restarting servers
    /// answer). The wait is the answer's `Retry-After` when it has one, else 0.5 s doubling; a
    /// wait longer than a request's timeout is not made (the summary would be stale; an endpoint
    /// asking that is not coming back soon), nor one that would start past the run's deadline.
    /// The request keeps its slot while it waits, so a rate-limited endpoint is asked less, not
    /// more.
    async fn ask(&self, summary: &ChatSummary) -> Result<String> {
        let mut backoff = Duration::from_millis(500);
        let mut retries = 0;
        loop {
            let answer = self.client.summarize(summary).await;
            let wait = match &answer {
                Err(ConnectorError::SummaryStatus {
                    status,
                    retry_after,
                }) if retries < self.retries && retryable(*status) => {
                    retry_after.unwrap_or(backoff)
                }
                _ => return answer,
            };
            if wait > self.timeout || !self.wait_to_retry(wait).await {
                return answer;
            }
            retries += 1;
            bump(&self.metrics.retries);
            debug!(stream_id = %summary.stream_id, retries, wait_ms = wait.as_millis() as u64, "summary text request answered try again; retried");
            backoff *= 2;
        }
    }

    /// Waits `wait`; false, at once, when the retry would start at or past the run's deadline
    /// (like a queued summary, a retry must start before it). A deadline set during the wait is
    /// later than its end: a wait is at most a timeout, and the deadline is a timeout after the
    /// run's end.
    async fn wait_to_retry(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        if self
            .deadline
            .get()
            .is_some_and(|deadline| until >= *deadline)
        {
            return false;
        }
        tokio::time::sleep_until(until).await;
        true
    }

    fn tell(&self, summary: &ChatSummary, text: &str) {
        if let Some(listener) = self.listener.get() {
            listener.summary_text(summary, text);
        }
    }
}

/// Whether an answer with `status` asks to be tried again.
fn retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Queues summaries for the worker thread (see the module doc).
pub struct SummaryTexts {
    queue: Mutex<Option<mpsc::Sender<Arc<ChatSummary>>>>,
    worker: Arc<Worker>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SummaryTexts {
    /// Starts the worker; texts are stored in `postgres`'s schema (migrated by the run) when
    /// given.
    pub fn start(config: &SummarizerConfig, postgres: Option<&PostgresConfig>) -> Result<Self> {
        let worker = Arc::new(Worker {
            client: CompletionsClient::new(config)?,
            texts: postgres.map(StoredTexts::new).transpose()?,
            listener: OnceLock::new(),
            metrics: Arc::default(),
            deadline: OnceLock::new(),
            timeout: Duration::from_millis(config.timeout.0),
            retries: config.retries,
        });
        let (queue, jobs) = mpsc::channel(config.queue);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ConnectorError::io("tokio runtime", e))?;
        let serving = Arc::clone(&worker);
        let slots = config.max_concurrency;
        let thread = std::thread::Builder::new()
            .name("summarizer".into())
            .spawn(move || runtime.block_on(serve(serving, jobs, slots)))
            .map_err(|e| ConnectorError::io("summarizer thread", e))?;
        Ok(Self {
            queue: Mutex::new(Some(queue)),
            worker,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Tells `listener` of every text from now on (the first listener given stays).
    pub fn listen(&self, listener: Arc<dyn SummaryTextListener>) {
        let _ = self.worker.listener.set(listener);
    }

    /// Counters for /metrics.
    pub fn metrics(&self) -> Arc<SummarizerMetrics> {
        Arc::clone(&self.worker.metrics)
    }
}

/// Takes summaries off the queue while fewer than `slots` requests are in flight; once the
/// queue is closed, gives those in flight one more timeout past the deadline (a lookup, the
/// request and a store each have one of their own).
async fn serve(worker: Arc<Worker>, mut jobs: mpsc::Receiver<Arc<ChatSummary>>, slots: usize) {
    let slots = Arc::new(Semaphore::new(slots));
    let mut running = JoinSet::new();
    while let Some(summary) = jobs.recv().await {
        let free_slot = Arc::clone(&slots).acquire_owned();
        // Once the run's deadline has passed, what is still queued is skipped at once rather
        // than waiting for a slot.
        let slot = match worker.deadline.get() {
            Some(deadline) => tokio::time::timeout_at(*deadline, free_slot).await,
            None => Ok(free_slot.await),
        };
        let slot = match slot {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => break,
            Err(_) => {
                bump(&worker.metrics.skipped);
                continue;
            }
        };
        let worker = Arc::clone(&worker);
        running.spawn(async move {
            worker.text_for(&summary).await;
            drop(slot);
        });
        while running.try_join_next().is_some() {}
    }
    let deadline = worker.deadline.get().copied().unwrap_or_else(Instant::now) + worker.timeout;
    let drained = tokio::time::timeout_at(deadline, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            abandoned = running.len(),
            "summary text requests abandoned at the end of the run"
        );
        worker
            .metrics
            .skipped
            .fetch_add(running.len() as u64, Ordering::Relaxed);
    }
}

impl Sink for SummaryTexts {
    fn flush(&self, flush: &Arc<Flush>) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = queue.as_ref() else {
            return;
        };
        for (row, _, diff) in &flush.updates {
            if let (Row::ChatSummary(summary), true) = (row, *diff > 0) {
                if queue
                    .try_send(Arc::new(ChatSummary::clone(summary)))
                    .is_err()
                {
                    bump(&self.worker.metrics.skipped);
                }
            }
        }
    }

    /// Lets what is queued start within one request timeout and finish within two, then stops.
    fn finish(&self) -> Result<()> {
        let _ = self
            .worker
            .deadline
            .set(Instant::now() + self.worker.timeout);
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                warn!("the summarizer thread panicked");
            }
        }
        Ok(())
    }
}
