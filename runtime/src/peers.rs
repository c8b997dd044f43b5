//! The processes of a cluster: connecting to every peer before timely starts (bounded, logged,
//! with a handshake that refuses a peer of another layout), and noticing when one is lost.
//!
//! Why not timely's own connection code: it retries forever, prints to stdout (where `replay`
//! may write its rows) and cannot tell a peer of another layout. The connected sockets are handed
//! to timely's networking unchanged.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tracing::{error, info, warn};

use crate::error::{Result, RuntimeError};

/// First word of the handshake: "crowdpulse cluster" in the high seven bytes, the protocol
/// version in the last.
const MAGIC: u64 = 0x6370_636c_7573_7400 | VERSION;
const VERSION: u64 = 3;
/// Handshake word for "no checkpoint".
const NO_CHECKPOINT: u64 = u64::MAX;
/// How long to sleep between tries.
const RETRY: Duration = Duration::from_millis(250);
/// How long either side waits for the other's handshake (the acceptor answers at once, on a
/// thread that does nothing else).
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// How long an acceptor waits for the dialer's confirmation: longer than [`ANSWER_WAIT`], as the
/// dialer confirms as soon as it has the answer.
const CONFIRM_WAIT: Duration = Duration::from_secs(10);
/// How often the wait is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// What every process of a cluster must agree on before the dataflow starts, besides the
/// addresses: a process that computes something else, or resumes from another checkpoint,
/// would make the results wrong without any error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// Worker threads per process.
    pub workers: usize,
    /// A digest of what it computes: pipeline settings, sources, pacing, where the sinks are.
    pub job: u64,
    /// The checkpoint it resumes from (its time), if any.
    pub checkpoint: Option<u64>,
    /// Its wall clock at start (epoch ms): process 0's becomes every process's run clock.
    pub clock: u64,
    /// How long a connection may go unanswered before its peer counts as lost.
    pub peer_timeout: Duration,
}

/// What a process tells each peer when connecting (each side tells the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handshake {
    process: u64,
    processes: u64,
    workers: u64,
    job: u64,
    checkpoint: u64,
    clock: u64,
}

impl Handshake {
    const BYTES: usize = 56;

    fn write(&self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(Self::BYTES);
        for word in [
            MAGIC,
            self.process,
            self.processes,
            self.workers,
            self.job,
            self.checkpoint,
            self.clock,
        ] {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        stream.write_all(&bytes)
    }

    /// The peer's handshake; Err(Some(version)) from a crowdpulse of another protocol version,
    /// Err(None) from anything else.
    fn read(stream: &mut TcpStream) -> std::io::Result<std::result::Result<Self, Option<u64>>> {
        let mut magic = [0u8; 8];
        stream.read_exact(&mut magic)?;
        let magic = u64::from_be_bytes(magic);
        if magic != MAGIC {
            return Ok(Err((magic >> 8 == MAGIC >> 8).then_some(magic & 0xff)));
        }
        let mut bytes = [0u8; Self::BYTES - 8];
        stream.read_exact(&mut bytes)?;
        let word = |i: usize| u64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
        Ok(Ok(Self {
            process: word(0),
            processes: word(1),
            workers: word(2),
            job: word(3),
            checkpoint: word(4),
            clock: word(5),
        }))
    }

    /// Why a cluster of `self` cannot include `theirs`.
    fn refusal(&self, theirs: &Self) -> Option<RuntimeError> {
        let process = theirs.process as usize;
        if theirs.processes != self.processes || theirs.workers != self.workers {
            return Some(RuntimeError::PeerMismatch {
                process,
                processes: theirs.processes,
                workers: theirs.workers,
                our_processes: self.processes,
                our_workers: self.workers,
            });
        }
        if theirs.job != self.job {
            return Some(RuntimeError::PeerJob { process });
        }
        if theirs.checkpoint != self.checkpoint {
            let time = |word: u64| (word != NO_CHECKPOINT).then_some(word);
            return Some(RuntimeError::PeerCheckpoint {
                process,
                theirs: time(theirs.checkpoint),
                ours: time(self.checkpoint),
            });
        }
        None
    }
}

/// Bytes this process sent to and received from its peers (the dataflow's exchanges and
/// progress messages).
static SENT: AtomicU64 = AtomicU64::new(0);
static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Bytes sent to and received from the other processes so far.
pub fn traffic() -> (u64, u64) {
    (
        SENT.load(Ordering::Relaxed),
        RECEIVED.load(Ordering::Relaxed),
    )
}

/// A connection to a peer that counts its bytes into [`traffic`].
#[derive(Debug)]
pub struct PeerStream(TcpStream);

impl Read for PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.0.read(buf)?;
        RECEIVED.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

impl Write for PeerStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.0.write(buf)?;
        SENT.fetch_add(written as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl timely::communication::allocator::zero_copy::stream::Stream for PeerStream {
    fn try_clone(&self) -> std::io::Result<Self> {
        self.0.try_clone().map(Self)
    }

    fn set_nonblocking(&self, nonblocking: bool) -> std::io::Result<()> {
        self.0.set_nonblocking(nonblocking)
    }

    fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        self.0.shutdown(how)
    }
}

/// A process joined to its cluster.
#[derive(Debug)]
pub struct Joined {
    /// A connection to every other process (None: this one), as timely's networking takes them.
    pub streams: Vec<Option<PeerStream>>,
    /// Process 0's clock ([`Terms::clock`]), the same in every process.
    pub clock: u64,
}

/// Connects process `me` of `addresses` (each `host:port`) to every other: it connects to the
/// processes before it and accepts the ones after it (on a thread of its own, so a slow peer on
/// one side never delays the other), within `timeout`, each pair exchanging handshakes that
/// must agree on `terms`.
pub fn connect(addresses: &[String], me: usize, terms: Terms, timeout: Duration) -> Result<Joined> {
    let deadline = Instant::now() + timeout;
    let ours = Handshake {
        process: me as u64,
        processes: addresses.len() as u64,
        workers: terms.workers as u64,
        job: terms.job,
        checkpoint: terms.checkpoint.unwrap_or(NO_CHECKPOINT),
        clock: terms.clock,
    };
    let listener = listen(&addresses[me], deadline)?;
    info!(
        process = me,
        processes = addresses.len(),
        "connecting to the other processes"
    );
    let done = Arc::new(AtomicBool::new(false));
    let (accepted, arrivals) = mpsc::channel();
    let acceptor = {
        let done = Arc::clone(&done);
        let processes = addresses.len();
        std::thread::Builder::new()
            .name("crowdpulse:accept".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    match accept(&listener, &ours, processes) {
                        Accepted::Peer(peer, stream) => {
                            if accepted.send(Ok((peer, stream))).is_err() {
                                return;
                            }
                        }
                        Accepted::Refused(refusal) => {
                            let _ = accepted.send(Err(refusal));
                            return;
                        }
                        Accepted::Dropped => {}
                        Accepted::Nothing => std::thread::sleep(RETRY),
                    }
                }
            })
            .map_err(|error| RuntimeError::ClusterListen {
                address: addresses[me].clone(),
                error,
            })?
    };
    let connected = gather(addresses, me, &ours, deadline, timeout, &arrivals);
    done.store(true, Ordering::Relaxed);
    let _ = acceptor.join();
    let (streams, clock) = connected?;
    // Watched only once all are there: a failed start leaves no socket behind.
    let streams = streams
        .into_iter()
        .enumerate()
        .map(|(process, stream)| {
            stream
                .map(|stream| watch_over(stream, terms.peer_timeout))
                .transpose()
                .map_err(|error| RuntimeError::PeerSocket { process, error })
        })
        .collect::<Result<_>>()?;
    Ok(Joined { streams, clock })
}

/// Dials the processes before `me` until each answered, and takes the ones after it from the
/// accepting thread's `arrivals`, until all are there or `deadline` passes. Returns them with
/// process 0's clock (from its answer, unless `me` is process 0).
fn gather(
    addresses: &[String],
    me: usize,
    ours: &Handshake,
    deadline: Instant,
    timeout: Duration,
    arrivals: &mpsc::Receiver<Result<(usize, TcpStream)>>,
) -> Result<(Vec<Option<TcpStream>>, u64)> {
    let mut streams: Vec<Option<TcpStream>> = (0..addresses.len()).map(|_| None).collect();
    let mut clock = ours.clock;
    let mut logged = Instant::now();
    loop {
        for (peer, address) in addresses.iter().enumerate().take(me) {
            if streams[peer].is_none() {
                if let Some((stream, theirs)) = dial(address, peer, ours)? {
                    if peer == 0 {
                        clock = theirs.clock;
                    }
                    streams[peer] = Some(stream);
                }
            }
        }
        while let Ok(arrival) = arrivals.try_recv() {
            let (peer, stream) = arrival?;
            if streams[peer].replace(stream).is_some() {
                warn!(
                    process = peer,
                    "a process connected again; its earlier connection is dropped"
                );
            }
        }
        let missing: Vec<usize> = (0..addresses.len())
            .filter(|&p| p != me && streams[p].is_none())
            .collect();
        if missing.is_empty() {
            info!(process = me, "every process is connected");
            return Ok((streams, clock));
        }
        if Instant::now() >= deadline {
            let peer = missing[0];
            return Err(RuntimeError::PeerUnreachable {
                process: peer,
                address: addresses[peer].clone(),
                waited: timeout,
            });
        }
        if logged.elapsed() >= LOG_EVERY {
            logged = Instant::now();
            let waiting: Vec<&str> = missing.iter().map(|&p| addresses[p].as_str()).collect();
            warn!(
                process = me,
                ?missing,
                ?waiting,
                "waiting for processes to start"
            );
        }
        std::thread::sleep(RETRY);
    }
}

/// Listens on this process's own address, retrying until `deadline`: its name may resolve only
/// once the process runs (a Kubernetes pod's DNS entry), and the port of a process that just
/// stopped may be free a moment later.
fn listen(address: &str, deadline: Instant) -> Result<TcpListener> {
    let mut logged: Option<Instant> = None;
    loop {
        let bound = TcpListener::bind(address).and_then(|listener| {
            listener.set_nonblocking(true)?;
            Ok(listener)
        });
        match bound {
            Ok(listener) => return Ok(listener),
            Err(error) if Instant::now() >= deadline => {
                return Err(RuntimeError::ClusterListen {
                    address: address.to_owned(),
                    error,
                })
            }
            Err(error) => {
                if logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    logged = Some(Instant::now());
                    warn!(%address, %error, "cannot listen on this process's address yet");
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// One try to connect to `peer` (before us): our handshake, its answer, our confirmation.
/// Nothing there yet is Ok(None); a peer that disagrees is an error.
fn dial(address: &str, peer: usize, ours: &Handshake) -> Result<Option<(TcpStream, Handshake)>> {
    let Some(target) = address.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return Ok(None);
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&target, RETRY) else {
        return Ok(None);
    };
    let answer = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(ANSWER_WAIT)))
        .and_then(|()| ours.write(&mut stream))
        .and_then(|()| Handshake::read(&mut stream));
    let theirs = match answer {
        Ok(Ok(theirs)) if theirs.process as usize == peer => theirs,
        Ok(Err(Some(version))) => {
            return Err(RuntimeError::PeerVersion {
                peer: format!("process {peer} ({address})"),
                version,
                ours: VERSION,
            })
        }
        // Not the crowdpulse process expected there, or one that went away: try again.
        _ => return Ok(None),
    };
    if let Some(refusal) = ours.refusal(&theirs) {
        return Err(refusal);
    }
    match stream
        .write_all(&[1])
        .and_then(|()| stream.set_read_timeout(None))
    {
        Ok(()) => Ok(Some((stream, theirs))),
        Err(_) => Ok(None),
    }
}

/// What one look at the listener found.
enum Accepted {
    /// A peer after us, handshake answered and confirmed.
    Peer(usize, TcpStream),
    /// A peer that disagrees (it was told why).
    Refused(RuntimeError),
    /// A connection that was not a confirmed peer (dropped; look again).
    Dropped,
    /// Nobody waiting.
    Nothing,
}

/// Takes one waiting connection from a peer after us, if any: its handshake, our answer, its
/// confirmation (a dialer that gave up before our answer leaves no half-open stream behind).
fn accept(listener: &TcpListener, ours: &Handshake, processes: usize) -> Accepted {
    let mut stream = match listener.accept() {
        Ok((stream, _)) => stream,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Accepted::Nothing,
        Err(error) => {
            warn!(%error, "accepting a connection failed");
            return Accepted::Nothing;
        }
    };
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_read_timeout(Some(ANSWER_WAIT)));
    let theirs = match setup.and_then(|()| Handshake::read(&mut stream)) {
        Ok(Ok(theirs))
            if (ours.process + 1..processes as u64).contains(&theirs.process)
                || theirs.processes != ours.processes =>
        {
            theirs
        }
        Ok(Err(Some(version))) => {
            // Answered, so that side names the difference too.
            let _ = ours.write(&mut stream);
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "a process".to_owned(), |a| format!("a process at {a}"));
            return Accepted::Refused(RuntimeError::PeerVersion {
                peer,
                version,
                ours: VERSION,
            });
        }
        // Not a crowdpulse process, one that gave up, or one that claims our place.
        Ok(_) | Err(_) => {
            warn!(peer = ?stream.peer_addr().ok(), "a connection without a valid cluster handshake was dropped");
            return Accepted::Dropped;
        }
    };
    // Our answer goes out even when we refuse, so both sides report the disagreement.
    let answered = ours.write(&mut stream);
    if let Some(refusal) = ours.refusal(&theirs) {
        return Accepted::Refused(refusal);
    }
    let mut confirmation = [0u8; 1];
    let confirmed = answered
        .and_then(|()| stream.set_read_timeout(Some(CONFIRM_WAIT)))
        .and_then(|()| stream.read_exact(&mut confirmation))
        .and_then(|()| stream.set_read_timeout(None));
    if confirmed.is_err() {
        warn!(
            process = theirs.process,
            "a process gave up connecting; waiting for it again"
        );
        return Accepted::Dropped;
    }
    Accepted::Peer(theirs.process as usize, stream)
}

/// Makes a silent peer (its host gone, the network cut) an error within about `timeout`:
/// keepalive probes while the connection is idle, and a bound on how long sent data may stay
/// unacknowledged. timely then fails the connection, which [`watch`] reports as lost.
/// Keeps a handle to the connection for [`leave`].
fn watch_over(stream: TcpStream, timeout: Duration) -> std::io::Result<PeerStream> {
    let socket = SockRef::from(&stream);
    let probes = 5;
    // Linux takes whole seconds, at least 1 (the configuration keeps `timeout` >= 2 s).
    let second = Duration::from_secs(1);
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time((timeout / 2).max(second))
            .with_interval((timeout / 2 / probes).max(second))
            .with_retries(probes),
    )?;
    socket.set_tcp_user_timeout(Some(timeout))?;
    CONNECTIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(stream.try_clone()?);
    Ok(PeerStream(stream))
}

/// The addresses of the running cluster, so a lost connection can be named.
static ADDRESSES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// This process's connections to its peers, closed by [`leave`].
static CONNECTIONS: Mutex<Vec<TcpStream>> = Mutex::new(Vec::new());
/// Set once a connection to a peer failed: which and why. A process takes part in one cluster
/// in its life (`run` and `replay` exit when theirs stops), so this is never reset.
static LOST: OnceLock<String> = OnceLock::new();
/// Set once this process leaves its cluster on purpose.
static LEAVING: AtomicBool = AtomicBool::new(false);

/// A connection to a peer failed (it stopped, crashed or became unreachable): the reason, once so.
pub fn lost() -> Option<&'static str> {
    LOST.get().map(String::as_str)
}

/// Whether this process is leaving its cluster (see [`leave`]).
pub fn leaving() -> bool {
    LEAVING.load(Ordering::SeqCst)
}

/// Leaves the cluster on purpose (this process was asked to stop): closes the connections to
/// every peer, so they see this process lost and stop at once. Without it they would wait for
/// its progress for ever, and its own network threads for theirs to end.
pub fn leave() {
    if LEAVING.swap(true, Ordering::SeqCst) {
        return;
    }
    let connections = CONNECTIONS.lock().unwrap_or_else(|p| p.into_inner());
    for connection in connections.iter() {
        let _ = connection.shutdown(Shutdown::Both);
    }
    // A process stopping because it lost a peer has said so already.
    if lost().is_none() {
        info!(
            peers = connections.len(),
            "leaving the cluster; the other processes stop as well"
        );
    }
}

/// Watches timely's communication threads: timely makes them panic when a connection fails,
/// "in an attempt to take down the computation", which alone would leave the workers waiting
/// for the peer forever. The panic is recorded as the peer lost (the runtime then stops) and
/// logged as one line naming the peer; so are the panics that joining those threads causes.
/// A process that [`leave`]s expects its connections to fail and says nothing.
pub fn watch(addresses: &[String]) {
    *ADDRESSES.lock().unwrap_or_else(|p| p.into_inner()) = addresses.to_vec();
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("");
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            let peer = name
                .strip_prefix("timely:recv-")
                .or_else(|| name.strip_prefix("timely:send-"))
                .and_then(|p| p.parse::<usize>().ok());
            if let Some(peer) = peer {
                if leaving() {
                    return;
                }
                let address = ADDRESSES
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(peer)
                    .cloned()
                    .unwrap_or_default();
                let reason =
                    format!("lost the connection to process {peer} ({address}): {message}");
                if LOST.set(reason.clone()).is_ok() {
                    error!(process = peer, %address, cause = message, "lost the connection to a process; the cluster stops");
                }
                return;
            }
            // Once a connection is gone, timely's own threads fail on it as well, with these
            // messages; anything else is a failure of its own and is reported.
            let consequence = (name.starts_with("timely:")
                && (message.starts_with("timely communication error")
                    || message.starts_with("MergeQueue poisoned")))
                || message.starts_with("Send thread panic")
                || message.starts_with("Recv thread panic");
            if !((LOST.get().is_some() || leaving()) && consequence) {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_addresses(n: usize) -> Vec<String> {
        let listeners: Vec<_> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect()
    }

    fn terms(workers: usize) -> Terms {
        Terms {
            workers,
            job: 7,
            checkpoint: Some(60_000),
            clock: 1_000,
            peer_timeout: Duration::from_secs(10),
        }
    }

    type Connected = Result<Joined>;

    /// Process 0 and 1 of `addresses` with their terms, connected concurrently: their results.
    fn pair(addresses: &[String], first: Terms, second: Terms) -> (Connected, Connected) {
        let zero = {
            let addresses = addresses.to_vec();
            std::thread::spawn(move || connect(&addresses, 0, first, Duration::from_secs(5)))
        };
        let one = connect(addresses, 1, second, Duration::from_secs(5));
        (zero.join().unwrap(), one)
    }

    #[test]
    fn three_processes_connect_whatever_order_they_start_in() {
        let addresses = free_addresses(3);
        let handles: Vec<_> = [2, 0, 1]
            .into_iter()
            .map(|me| {
                let addresses = addresses.clone();
                std::thread::sleep(Duration::from_millis(100));
                std::thread::spawn(move || {
                    let terms = Terms {
                        clock: 1_000 + me as u64,
                        ..terms(2)
                    };
                    let joined = connect(&addresses, me, terms, Duration::from_secs(10)).unwrap();
                    let connected = joined.streams.iter().map(Option::is_some);
                    (me, connected.collect::<Vec<_>>(), joined.clock)
                })
            })
            .collect();
        for handle in handles {
            let (me, connected, clock) = handle.join().unwrap();
            let expected: Vec<bool> = (0..3).map(|p| p != me).collect();
            assert_eq!(connected, expected, "process {me}");
            // Every process takes process 0's clock, so `now-15m` means one time everywhere.
            assert_eq!(clock, 1_000, "process {me}");
        }
    }

    #[test]
    fn a_missing_peer_is_named_after_the_timeout() {
        let addresses = free_addresses(2);
        let started = Instant::now();
        let error = connect(&addresses, 1, terms(1), Duration::from_millis(600)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = error.to_string();
        assert!(
            text.contains("process 0") && text.contains(&addresses[0]),
            "{text}"
        );
    }

    #[test]
    fn both_sides_refuse_a_peer_of_another_layout() {
        let addresses = free_addresses(2);
        // Process 1 believes in one worker per process.
        let (zero, one) = pair(&addresses, terms(2), terms(1));
        let zero = zero.expect_err("process 0 refuses").to_string();
        let one = one.expect_err("process 1 refuses").to_string();
        assert!(
            zero.contains("process 1 runs 2 processes of 1 worker"),
            "{zero}"
        );
        assert!(
            one.contains("process 0 runs 2 processes of 2 worker"),
            "{one}"
        );
    }

    #[test]
    fn both_sides_refuse_a_peer_of_another_pipeline() {
        let addresses = free_addresses(2);
        let other = Terms { job: 8, ..terms(1) };
        let (zero, one) = pair(&addresses, terms(1), other);
        for (connected, peer) in [(zero, 1), (one, 0)] {
            let text = connected.expect_err("refused").to_string();
            assert!(
                text.contains(&format!("process {peer} runs another job")),
                "{text}"
            );
        }
    }

    #[test]
    fn both_sides_refuse_a_peer_resuming_from_another_checkpoint() {
        let addresses = free_addresses(2);
        let fresh = Terms {
            checkpoint: None,
            ..terms(1)
        };
        let (zero, one) = pair(&addresses, terms(1), fresh);
        let zero = zero.expect_err("process 0 refuses").to_string();
        let one = one.expect_err("process 1 refuses").to_string();
        assert!(
            zero.contains(
                "process 1 resumes from no checkpoint, this one from the checkpoint at 60000"
            ),
            "{zero}"
        );
        assert!(
            one.contains(
                "process 0 resumes from the checkpoint at 60000, this one from no checkpoint"
            ),
            "{one}"
        );
    }

    /// Process 0 of `addresses` connecting (on a thread), and a raw connection to it.
    fn process_zero_and_a_stranger(
        addresses: &[String],
    ) -> (std::thread::JoinHandle<Connected>, TcpStream) {
        let zero = {
            let addresses = addresses.to_vec();
            std::thread::spawn(move || connect(&addresses, 0, terms(1), Duration::from_secs(10)))
        };
        loop {
            match TcpStream::connect(&addresses[0]) {
                Ok(stream) => return (zero, stream),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// A dialer that gave up after its handshake (its connection still in the listener's
    /// backlog) is not taken for the peer: the real one connects after it.
    #[test]
    fn a_connection_abandoned_after_its_handshake_is_not_taken_for_the_peer() {
        let addresses = free_addresses(2);
        let (zero, mut abandoned) = process_zero_and_a_stranger(&addresses);
        let handshake = Handshake {
            process: 1,
            processes: 2,
            workers: 1,
            job: 7,
            checkpoint: 60_000,
            clock: 1_000,
        };
        handshake.write(&mut abandoned).unwrap();
        drop(abandoned);
        std::thread::sleep(Duration::from_millis(600));
        let one = connect(&addresses, 1, terms(1), Duration::from_secs(10)).unwrap();
        let zero = zero.join().unwrap().unwrap();
        // The stream process 0 kept is the live one: bytes cross it.
        let mut from_zero = zero.streams.into_iter().nth(1).flatten().unwrap();
        let mut at_one = one.streams.into_iter().next().flatten().unwrap();
        from_zero.write_all(b"ping").unwrap();
        let mut received = [0u8; 4];
        at_one.read_exact(&mut received).unwrap();
        assert_eq!(&received, b"ping");
    }

    #[test]
    fn a_peer_of_another_protocol_version_is_named_as_such() {
        let addresses = free_addresses(2);
        let (zero, mut older) = process_zero_and_a_stranger(&addresses);
        let version_one = (MAGIC & !0xff) | 1;
        older.write_all(&version_one.to_be_bytes()).unwrap();
        let error = zero.join().unwrap().expect_err("refused").to_string();
        assert!(
            error.contains("speaks cluster protocol version 1, this one 3"),
            "{error}"
        );
    }
}
