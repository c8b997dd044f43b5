//! The HTTP server: hyper's HTTP/1 connections under the timeouts and caps of `[api.limits]`,
//! and a graceful stop bounded by `api.limits.shutdown_grace`.
//!
//! Served here rather than by `warp::serve`, which sets no header timeout (a client that never
//! finishes its headers held a connection forever), caps no connections and offers no way to
//! wrap a connection's socket.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{MissedTickBehavior, Sleep};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

use crate::filters::routes;
use crate::metrics::{HttpCounters, Refusal};
use crate::push::Clients;
use crate::state::AppState;
use crate::store::ViewStore;

/// Sends the updates a push interval held back once their interval has passed, for streams
/// whose flushes stopped coming (a flush sends those that are due itself), and measures the push
/// interval against the push budget for the clients connected.
async fn push_due_updates(store: Arc<ViewStore>, clients: Arc<Clients>) {
    let interval = store.settings.push_interval;
    if interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        store.publish_due(clients.count());
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then lets open requests finish for
/// at most the configured grace.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let limits = state.settings.limits.clone();
    let counters = Arc::clone(&state.http);
    let _pushing = AbortOnDropHandle::new(tokio::spawn(push_due_updates(
        Arc::clone(&state.store),
        Arc::clone(&state.clients),
    )));
    let filter = routes(state);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, usually: wait a little instead of spinning.
                warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Pushed updates are small writes that must leave at once, not wait (Nagle's algorithm)
        // for the acknowledgement of the previous one.
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, "setting TCP_NODELAY failed");
        }
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            counters.refuse(Refusal::Connections);
            drop(stream);
            continue;
        };
        let io = TokioIo::new(SocketGuard::new(
            stream,
            (
                limits.header_timeout.duration(),
                limits.send_timeout.duration(),
            ),
            Arc::clone(&counters),
        ));
        let service = TowerToHyperService::new(warp::service(filter.clone()));
        let mut builder = Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            // Also bounds how long an idle keep-alive connection waits for its next request.
            .header_read_timeout(limits.header_timeout.duration());
        let counters = Arc::clone(&counters);
        let graceful = &graceful;
        let connection = graceful.watch(
            builder
                .serve_connection_with_upgrades(io, service)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                let timed_out = error
                    .downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout);
                if timed_out {
                    counters.refuse(Refusal::HeaderTimeout);
                }
                debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let grace = limits.shutdown_grace.duration();
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            ?grace,
            "connections still open after the shutdown grace end with the process"
        );
    }
}

/// A socket whose writes fail once the peer has taken nothing for `limit`: a client that stops
/// reading an answer, an SSE stream or a WebSocket cannot hold its connection, its buffers or the
/// shutdown. Its reads fail if the peer has not begun a request within the header timeout of
/// connecting: hyper-util's builder first reads until the bytes cannot be HTTP/2's preface, with
/// no timer (hyper's own header timeout only starts after it), so a peer that sent nothing, or a
/// few bytes of that preface, held its place among `max_connections` for ever.
struct SocketGuard<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    /// Until the bytes read cannot be the preface (or the connection ends).
    undetected: Option<Pin<Box<Sleep>>>,
    /// How many bytes read so far are the preface's first ones.
    preface_read: usize,
    counters: Arc<HttpCounters>,
}

/// Pending until `timer` fires, then the `refusal`, counted, as a timed-out I/O error.
fn expire<R>(
    timer: &mut Pin<Box<Sleep>>,
    cx: &mut Context<'_>,
    counters: &HttpCounters,
    (refusal, message): (Refusal, &str),
) -> Poll<io::Result<R>> {
    match timer.as_mut().poll(cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(()) => {
            counters.refuse(refusal);
            Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)))
        }
    }
}

/// What an HTTP/2 connection begins with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<T> SocketGuard<T> {
    /// `limits`: the header timeout, then the send timeout.
    fn new(
        inner: T,
        (first_byte, limit): (Duration, Duration),
        counters: Arc<HttpCounters>,
    ) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
            undetected: Some(Box::pin(tokio::time::sleep(first_byte))),
            preface_read: 0,
            counters,
        }
    }

    /// Called when a write could not proceed: pending until the stall has lasted `limit`.
    fn stall<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        let refusal = (Refusal::SendStall, "the peer stopped reading");
        expire(timer, cx, &self.counters, refusal)
    }

    fn progressed<R>(
        &mut self,
        result: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match result {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SocketGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(undetected) = &mut this.undetected else {
            return result;
        };
        match result {
            Poll::Pending => {
                let refusal = (
                    Refusal::HeaderTimeout,
                    "no request within the header timeout",
                );
                expire(undetected, cx, &this.counters, refusal)
            }
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                let rest = &H2_PREFACE[this.preface_read..];
                let still_preface =
                    !read.is_empty() && rest.len() > read.len() && rest.starts_with(read);
                if still_preface {
                    this.preface_read += read.len();
                } else {
                    this.undetected = None;
                }
                Poll::Ready(Ok(()))
            }
            error => error,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SocketGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progressed(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.progressed(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progressed(result, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_to_a_peer_that_stopped_reading_fail_after_the_limit() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let counters = Arc::new(HttpCounters::default());
        let mut guarded = SocketGuard::new(
            ours,
            (Duration::from_secs(60), Duration::from_millis(200)),
            Arc::clone(&counters),
        );
        // A reading peer: any amount goes through, however slowly it is taken.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0; 4096];
            let mut total = 0;
            while total < 64 * 1024 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                total += theirs.read(&mut buf).await.unwrap();
            }
            theirs
        });
        guarded.write_all(&vec![1; 64 * 1024]).await.unwrap();
        let _theirs = reader.await.unwrap();
        // Now nobody reads: the buffer fills, and the write fails instead of waiting forever.
        let began = std::time::Instant::now();
        let error = guarded.write_all(&vec![1; 64 * 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(began.elapsed() >= Duration::from_millis(200));
        assert!(began.elapsed() < Duration::from_secs(2));
        assert_eq!(counters.refusals(Refusal::SendStall), 1);
    }

    /// A peer that sends nothing after connecting is cut off after the header timeout (hyper
    /// times only a request it has begun); once a byte came, reading may wait for ever.
    #[tokio::test]
    async fn a_peer_that_sends_nothing_is_cut_off_after_the_header_timeout() {
        let counters = Arc::new(HttpCounters::default());
        let limits = (Duration::from_millis(200), Duration::from_secs(60));
        let (ours, _silent) = tokio::io::duplex(1024);
        let mut guarded = SocketGuard::new(ours, limits, Arc::clone(&counters));
        let began = std::time::Instant::now();
        let error = guarded.read(&mut [0; 16]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(began.elapsed() >= Duration::from_millis(200));
        assert_eq!(counters.refusals(Refusal::HeaderTimeout), 1);

        // The start of HTTP/2's preface, sent a byte at a time, is still waited for with a
        // deadline: the server cannot tell the protocol yet.
        let (ours, mut preface) = tokio::io::duplex(1024);
        let mut guarded = SocketGuard::new(ours, limits, Arc::clone(&counters));
        for byte in b"PRI * HT" {
            preface.write_all(&[*byte]).await.unwrap();
            assert_eq!(guarded.read(&mut [0; 16]).await.unwrap(), 1);
        }
        let error = guarded.read(&mut [0; 16]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counters.refusals(Refusal::HeaderTimeout), 2);

        // A byte that is not the preface's is a request begun: hyper times it from there on.
        for start in [&b"G"[..], b"P", b"POST"] {
            let (ours, mut talking) = tokio::io::duplex(1024);
            let mut guarded = SocketGuard::new(ours, limits, Arc::clone(&counters));
            talking.write_all(start).await.unwrap();
            let mut buf = [0; 16];
            let mut read = 0;
            while read < start.len() {
                read += guarded.read(&mut buf).await.unwrap();
            }
            let waited = tokio::time::timeout(Duration::from_millis(400), guarded.read(&mut buf));
            let still_waiting = waited.await.is_err();
            assert_eq!(still_waiting, start != b"P", "{start:?}");
        }
        assert_eq!(
            counters.refusals(Refusal::HeaderTimeout),
            3,
            "P alone was refused"
        );
    }
}
