//! The network thread: tokio accepting and reading sockets, and the signal
//! handling that ends a listening run.

use super::framing::{Framer, Frames, FramingCounts, FramingRules, Oversize};
use super::slots::{Admission, Limit, Slot, Slots};
use super::{ListenSettings, NetworkCounters, NetworkSnapshot};
use crate::receipts::ReceiptSink;
use crate::signals::Signals;
use anyhow::{Context as _, anyhow, bail};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Chunks of messages waiting for the parser. With [`READ_BYTES`] per read
/// this holds a few MiB at most; when it is full, connections stop reading.
const CHUNKS_IN_FLIGHT: usize = 64;

/// Bytes read from a connection at once.
const READ_BYTES: usize = 32 * 1024;

/// Datagrams gathered into one chunk when several are waiting.
const DATAGRAMS_PER_CHUNK: usize = 256;

/// How long a failing `accept` waits before trying again (the usual cause,
/// running out of file descriptors, does not go away at once).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accept errors are logged at most this often.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// At shutdown, a connection reads what is already waiting: each read
/// waits this long for data (long enough for the runtime to see the
/// socket's readiness) ...
const DRAIN_WAIT: Duration = Duration::from_millis(5);

/// ... and a TLS connection reads at most this many times (8 MiB), so
/// that a sender that keeps sending cannot hold shutdown up.
const DRAIN_READS: usize = 256;

/// A plain TCP connection looks at its kernel queue at most this many
/// times, [`DRAIN_WAIT`] apart, for it to stop growing (what the kernel
/// had promised the sender before the receive buffer shrank).
const DRAIN_CHECKS: usize = 100;

/// TLS handshakes that take longer are abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages cut from one read (or a few datagrams), with their sender.
pub struct Chunk {
    /// `IP:PORT` of the sender.
    pub peer: Arc<str>,
    /// The messages.
    pub frames: Frames,
    /// What the chunk says besides its messages.
    pub kind: ChunkKind,
    /// For messages whose sender waits to hear that they are safe (RELP):
    /// where to say so, and each message's number there.
    pub receipts: Option<(Arc<ReceiptSink>, Vec<u64>)>,
    /// With [`ChunkKind::Opened`]: what stops the connection's reading.
    pub gate: Option<Arc<ReadGate>>,
}

impl Chunk {
    /// A chunk that says a connection opened (with its `gate`) or ended.
    pub(super) fn mark(peer: &Arc<str>, kind: ChunkKind, gate: Option<Arc<ReadGate>>) -> Self {
        Chunk {
            peer: Arc::clone(peer),
            frames: Frames::default(),
            kind,
            receipts: None,
            gate,
        }
    }
}

/// Lets the parser stop reading one connection while its sender is far
/// ahead of the others (`reorder.rs`): what that sender sends meanwhile
/// waits in the kernel, whose flow control slows the sender down, rather
/// than in the runtime's memory; and the network thread reads the senders
/// that are behind, whose records let the waiting ones go on. Without it a
/// sender read faster than the others (the network thread reads whatever
/// is ready) had hundreds of thousands of records waiting, and the modules
/// waited with them.
#[derive(Debug, Default)]
pub struct ReadGate {
    paused: AtomicBool,
    resumed: tokio::sync::Notify,
}

impl ReadGate {
    /// Stop reading after the read under way.
    pub fn pause(&self) {
        // Called for every record while too many wait: a load, not a
        // write to the line the network thread reads, once paused.
        if !self.is_paused() {
            self.paused.store(true, Ordering::Release);
        }
    }

    /// Read again.
    pub fn resume(&self) {
        // Most calls find it open: a load, not a write, then.
        if self.is_paused() && self.paused.swap(false, Ordering::AcqRel) {
            self.resumed.notify_one();
        }
    }

    /// Whether reading is stopped.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Wait until reading may go on.
    pub async fn opened(&self) {
        while self.is_paused() {
            // A resume between the check and the wait leaves a permit.
            self.resumed.notified().await;
        }
    }
}

/// Chunks that mark a connection's start and end (holding no message), for
/// the parser to know which senders it waits for (`reorder.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// Messages.
    Messages,
    /// A connection opened: its sender's records are waited for.
    Opened,
    /// A connection ended: its sender holds no one back any more.
    Ended,
}

/// The parser's end of the queue.
pub struct Queue {
    receiver: mpsc::Receiver<Chunk>,
    /// Times [`Queue::recv_until`] out (the parser's thread is not tokio's).
    timer: tokio::runtime::Runtime,
}

impl Queue {
    /// The next chunk; `None` once every connection has ended after
    /// shutdown. Blocks: call from a plain thread.
    pub fn blocking_recv(&mut self) -> Option<Chunk> {
        self.receiver.blocking_recv()
    }

    /// The next chunk if one comes by `deadline`: `Ok(None)` when none
    /// does, `Err(())` once every connection has ended after shutdown.
    pub fn recv_until(&mut self, deadline: std::time::Instant) -> Result<Option<Chunk>, ()> {
        // A chunk already waiting (the parser is behind, the usual case
        // under load) is taken without entering the timer's runtime.
        match self.receiver.try_recv() {
            Ok(chunk) => return Ok(Some(chunk)),
            Err(mpsc::error::TryRecvError::Disconnected) => return Err(()),
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        let receiver = &mut self.receiver;
        // The timer is made inside the runtime, which drives it.
        let received = self.timer.block_on(async move {
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), receiver.recv()).await
        });
        match received {
            Ok(Some(chunk)) => Ok(Some(chunk)),
            Ok(None) => Err(()),
            Err(_) => Ok(None),
        }
    }

    /// Whether no chunk is waiting now.
    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }
}

/// The network thread, serving.
pub struct Listening {
    stop: CancellationToken,
    /// Hears once every connection has ended after shutdown.
    finished: std::sync::mpsc::Receiver<()>,
}

impl Listening {
    /// Cancelling it stops as a signal would (an instance aborted the
    /// run).
    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Wait, at most `limit`, until every connection has ended: RELP
    /// connections answer what the pipeline finished after the parser's
    /// queue has closed, and the process must not exit under them.
    pub fn wait_until_finished(&self, limit: Duration) {
        if self.finished.recv_timeout(limit).is_err() {
            tracing::warn!(
                "connections still open {} s after the pipeline finished; closing them unanswered (their senders send again)",
                limit.as_secs()
            );
        }
    }
}

/// Sockets bound and signals caught, ready to serve.
pub struct Network {
    runtime: tokio::runtime::Runtime,
    tcp: Option<std::net::TcpListener>,
    udp: Option<std::net::UdpSocket>,
    tls: Option<(std::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    relp: Option<std::net::TcpListener>,
    relp_tls: Option<(std::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    signals: Signals,
    settings: ListenSettings,
    counters: Arc<NetworkCounters>,
}

impl Network {
    /// Bind every configured socket and catch SIGINT and SIGTERM from now
    /// on; errors name the configuration item to change.
    pub fn bind(settings: &ListenSettings, counters: Arc<NetworkCounters>) -> anyhow::Result<Self> {
        if settings.tcp.is_none()
            && settings.udp.is_none()
            && settings.tls.is_none()
            && settings.relp.is_none()
            && settings.relp_tls.is_none()
        {
            bail!(
                "nothing to listen on: listen.tcp, listen.udp, listen.tls, listen.relp and listen.relp_tls are all empty (give --read-file to replay a capture instead)"
            );
        }
        raise_open_file_limit(settings.max_connections);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the network runtime")?;
        let tcp = settings
            .tcp
            .map(|address| bind_tcp("listen.tcp", address))
            .transpose()?;
        let udp = settings
            .udp
            .map(|address| {
                std::net::UdpSocket::bind(address)
                    .and_then(|socket| socket.set_nonblocking(true).map(|()| socket))
                    .with_context(|| format!("listen.udp: cannot listen on {address}"))
            })
            .transpose()?;
        if let Some(socket) = &udp {
            widen_receive_buffer(socket);
        }
        let bind_tls = |key: &str, tls: &Option<(SocketAddr, Arc<rustls::ServerConfig>)>| {
            tls.as_ref()
                .map(|(address, config)| {
                    bind_tcp(key, *address).map(|listener| {
                        (
                            listener,
                            tokio_rustls::TlsAcceptor::from(Arc::clone(config)),
                        )
                    })
                })
                .transpose()
        };
        let tls = bind_tls("listen.tls", &settings.tls)?;
        let relp = settings
            .relp
            .map(|address| bind_tcp("listen.relp", address))
            .transpose()?;
        let relp_tls = bind_tls("listen.relp_tls", &settings.relp_tls)?;
        let signals = {
            let _context = runtime.enter();
            Signals::catch()?
        };
        for (kind, address) in [
            ("TCP", tcp.as_ref().and_then(|l| l.local_addr().ok())),
            ("UDP", udp.as_ref().and_then(|s| s.local_addr().ok())),
            ("TLS", tls.as_ref().and_then(|(l, _)| l.local_addr().ok())),
            ("RELP", relp.as_ref().and_then(|l| l.local_addr().ok())),
            (
                "RELP over TLS",
                relp_tls.as_ref().and_then(|(l, _)| l.local_addr().ok()),
            ),
        ] {
            if let Some(address) = address {
                tracing::info!("listening for syslog over {kind} on {address}");
            }
        }
        Ok(Network {
            runtime,
            tcp,
            udp,
            tls,
            relp,
            relp_tls,
            signals,
            settings: settings.clone(),
            counters,
        })
    }

    /// Serve on a thread of its own until the first signal (or until
    /// [`Listening::stop`]), then wait there for a second signal, which
    /// exits the process at once. Returns the parser's end of the queue.
    pub fn start(self) -> anyhow::Result<(Queue, Listening)> {
        let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let Network {
            runtime,
            tcp,
            udp,
            tls,
            relp,
            relp_tls,
            signals,
            settings,
            counters,
        } = self;
        let (finished_tx, finished) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("network".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut signals = signals;
                    let mut tasks = tokio::task::JoinSet::new();
                    let context = Arc::new(ConnectionContext {
                        framing: settings.framing,
                        idle_timeout: settings.idle_timeout,
                        first_byte_timeout: settings.first_byte_timeout,
                        slots: Slots::new(
                            settings.max_connections,
                            settings.max_connections_per_address,
                        ),
                        udp_queue_bytes: settings.udp_queue_bytes,
                        queue: sender,
                        counters: Arc::clone(&counters),
                        shutdown: shutdown.clone(),
                    });
                    let streams = [
                        ("TCP", tcp.map(|listener| (listener, None)), Protocol::Syslog),
                        ("TLS", tls.map(|(l, acceptor)| (l, Some(acceptor))), Protocol::Syslog),
                        ("RELP", relp.map(|listener| (listener, None)), Protocol::Relp),
                        (
                            "RELP over TLS",
                            relp_tls.map(|(l, acceptor)| (l, Some(acceptor))),
                            Protocol::Relp,
                        ),
                    ];
                    for (kind, listener, protocol) in streams {
                        let Some((listener, acceptor)) = listener else {
                            continue;
                        };
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => {
                                tasks.spawn(accept_loop(
                                    listener,
                                    acceptor,
                                    protocol,
                                    Arc::clone(&context),
                                ));
                            }
                            Err(error) => tracing::error!("cannot serve {kind}: {error}"),
                        }
                    }
                    if let Some(socket) = udp {
                        match tokio::net::UdpSocket::from_std(socket) {
                            Ok(socket) => {
                                tasks.spawn(receive_datagrams(socket, Arc::clone(&context)));
                            }
                            Err(error) => tracing::error!("cannot serve UDP: {error}"),
                        }
                    }
                    drop(context);
                    let reporter = tokio::spawn(report_periodically(
                        Arc::clone(&counters),
                        settings.report_interval,
                    ));
                    let name = tokio::select! {
                        name = signals.next() => Some(name),
                        () = shutdown.cancelled() => None,
                    };
                    if let Some(name) = name {
                        crate::service::tell("STOPPING=1\nSTATUS=finishing what was received");
                        tracing::info!(
                            "{name}: no longer accepting; finishing what was received (a second signal exits at once)"
                        );
                    }
                    shutdown.cancel();
                    // The parser's queue closes when the last task (and its
                    // sender) is gone.
                    while tasks.join_next().await.is_some() {}
                    reporter.abort();
                    let _ = finished_tx.send(());
                    signals.exit_at_next().await
                });
            })
            .context("cannot start the network thread")?;
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .context("cannot start the parser's timer")?;
        Ok((Queue { receiver, timer }, Listening { stop, finished }))
    }
}

/// Raise the soft limit on open files to the hard one: every connection
/// takes a file descriptor, and the usual soft limit (1,024) is below what
/// `listen.max_connections` allows. Warn when even the hard limit cannot
/// hold `max_connections`.
fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut current = limit.current;
    if let (Some(soft), hard) = (limit.current, limit.maximum)
        && hard.is_none_or(|hard| hard > soft)
    {
        let raised = Rlimit {
            current: hard,
            maximum: hard,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => current = hard,
            Err(error) => tracing::debug!("cannot raise the open-file limit: {error}"),
        }
    }
    // Start-up, the store and the components take some descriptors too.
    if let Some(files) = current
        && files < max_connections as u64 + 64
    {
        tracing::warn!(
            "listen.max_connections is {max_connections} but this process may open only {files} files (ulimit -n): connections past that wait in the kernel until others close"
        );
    }
}

fn bind_tcp(key: &str, address: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(address)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .with_context(|| format!("{key}: cannot listen on {address}"))
}

/// Ask for a 4 MiB socket receive buffer, so that bursts of datagrams wait
/// in the kernel rather than being dropped there (where nobody counts them).
/// The kernel may grant less (net.core.rmem_max); that is not an error.
fn widen_receive_buffer(socket: &std::net::UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    if let Err(error) = socket.set_recv_buffer_size(4 << 20) {
        tracing::debug!("cannot widen the UDP receive buffer: {error}");
    }
}

/// What every connection task shares. The parser's queue closes once every
/// copy is gone.
pub(super) struct ConnectionContext {
    pub(super) framing: FramingRules,
    idle_timeout: Option<Duration>,
    first_byte_timeout: Option<Duration>,
    /// The connection slots TCP, TLS and RELP share.
    slots: Arc<Slots>,
    /// Bytes of datagrams that may wait for the pipeline.
    udp_queue_bytes: usize,
    pub(super) queue: mpsc::Sender<Chunk>,
    pub(super) counters: Arc<NetworkCounters>,
    pub(super) shutdown: CancellationToken,
}

impl ConnectionContext {
    /// How long a connection's next read may wait: until its first byte,
    /// at most `listen.first_byte_timeout_s`; then `listen.idle_timeout_s`.
    pub(super) fn read_timeout(&self, spoke: bool) -> Option<Duration> {
        if spoke {
            self.idle_timeout
        } else {
            [self.first_byte_timeout, self.idle_timeout]
                .into_iter()
                .flatten()
                .min()
        }
    }
}

/// What a stream listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Syslog messages (RFC 6587 framing), over TCP or TLS.
    Syslog,
    /// RELP, over TCP or TLS (`relp.rs`).
    Relp,
}

fn add(counter: &AtomicU64, count: u64) {
    counter.fetch_add(count, Ordering::Relaxed);
}

/// Accept connections until shutdown, each served by a task of its own.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    protocol: Protocol,
    context: Arc<ConnectionContext>,
) {
    let mut connections = tokio::task::JoinSet::new();
    let mut last_accept_error = tokio::time::Instant::now();
    loop {
        let accepted = tokio::select! {
            () = context.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections as we go, so that the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                let before = context
                    .counters
                    .accept_errors
                    .fetch_add(1, Ordering::Relaxed);
                // The usual cause lasts: say it once per burst, not every
                // retry (the count is in the periodic report).
                if before == 0 || last_accept_error.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL {
                    tracing::error!(
                        "cannot accept a connection: {error}; retrying every {} ms (accept_errors counts them)",
                        ACCEPT_BACKOFF.as_millis()
                    );
                    last_accept_error = tokio::time::Instant::now();
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = match context.slots.admit(peer.ip()) {
            Admission::Admitted { slot, evicted } => {
                if evicted {
                    let before = context
                        .counters
                        .evicted_silent
                        .fetch_add(1, Ordering::Relaxed);
                    if before == 0 {
                        tracing::warn!(
                            %peer,
                            "closing a connection that has sent nothing to make room for a new one: every slot was taken (further ones are counted as evicted_silent)"
                        );
                    }
                }
                slot
            }
            Admission::Refused(limit) => {
                let refused = context
                    .counters
                    .refused_connections
                    .fetch_add(1, Ordering::Relaxed);
                let item = match limit {
                    Limit::Total => "listen.max_connections",
                    Limit::PerAddress => "listen.max_connections_per_address",
                };
                if refused == 0 {
                    tracing::warn!(
                        %peer,
                        "closing a connection: {item} are open, all of them sending (further refusals are counted, and logged at debug level)"
                    );
                } else {
                    tracing::debug!(%peer, "closing a connection: {item} are open");
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        serve_connection(
            &mut connections,
            (stream, peer),
            (tls.clone(), protocol),
            Some(slot),
            &context,
        );
    }
    // Shutdown. Connections the kernel completed but we had not accepted
    // yet may hold data the senders think delivered: take them too (plain
    // TCP only: a TLS sender has had nothing acknowledged before its
    // handshake). Then the listening socket closes at once, so that a
    // connection made from now on is refused rather than acknowledged and
    // then reset. (A RELP sender sends again what was not answered.)
    if tls.is_none() && protocol == Protocol::Syslog {
        for (stream, peer) in queued_connections(listener) {
            // Taken whatever the slots say: its data was acknowledged.
            let slot = match context.slots.admit(peer.ip()) {
                Admission::Admitted { slot, .. } => Some(slot),
                Admission::Refused(_) => None,
            };
            serve_connection(
                &mut connections,
                (stream, peer),
                (None, protocol),
                slot,
                &context,
            );
        }
    } else {
        drop(listener);
    }
    // Every connection passes on what it has read, then ends (a RELP
    // connection lets go of the parser's queue first, and then waits for
    // the pipeline to finish what it passed on, to answer it).
    drop(context);
    while connections.join_next().await.is_some() {}
}

/// Every connection waiting in `listener`'s accept queue now; the listener
/// is closed once they are taken.
fn queued_connections(
    listener: tokio::net::TcpListener,
) -> Vec<(tokio::net::TcpStream, SocketAddr)> {
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(
                "shutdown: cannot take the connections waiting to be accepted: {error}"
            );
            return Vec::new();
        }
    };
    let mut taken = Vec::new();
    // Non-blocking (tokio set it so): `WouldBlock` once the queue is empty.
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(error) => {
                tracing::warn!("shutdown: cannot take a waiting connection: {error}");
                break;
            }
        };
        match stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(stream))
        {
            Ok(stream) => taken.push((stream, peer)),
            Err(error) => {
                tracing::warn!(%peer, "shutdown: cannot serve a waiting connection: {error}")
            }
        }
    }
    taken
}

/// Count a new connection and serve it on a task of its own (after a TLS
/// handshake when `tls` is given), until it ends.
fn serve_connection(
    connections: &mut tokio::task::JoinSet<()>,
    (stream, peer): (tokio::net::TcpStream, SocketAddr),
    (tls, protocol): (Option<tokio_rustls::TlsAcceptor>, Protocol),
    slot: Option<Slot>,
    context: &Arc<ConnectionContext>,
) {
    add(&context.counters.connections, 1);
    add(&context.counters.open_connections, 1);
    let context = Arc::clone(context);
    if protocol == Protocol::Relp {
        connections.spawn(async move {
            let counters = Arc::clone(&context.counters);
            let name: Arc<str> = Arc::from(peer.to_string());
            match tls {
                None => super::relp::serve(stream, name, slot, context).await,
                Some(acceptor) => {
                    if let Some(stream) = handshake(acceptor, stream, peer, &context).await {
                        super::relp::serve(stream, name, slot, context).await;
                    }
                }
            }
            counters.open_connections.fetch_sub(1, Ordering::Relaxed);
        });
        return;
    }
    connections.spawn(async move {
        let mut messages = Messages::new(Arc::from(peer.to_string()), &context);
        messages.mark(ChunkKind::Opened).await;
        let slot = slot.as_ref();
        match tls {
            None => {
                let mut stream = stream;
                if read_stream(&mut stream, &mut messages, slot).await == Ended::Shutdown {
                    drain_acknowledged(stream, &mut messages).await;
                }
            }
            Some(acceptor) => {
                if let Some(mut stream) = handshake(acceptor, stream, peer, &context).await {
                    let ended = read_stream(&mut stream, &mut messages, slot).await;
                    if ended == Ended::Shutdown {
                        drain_by_reading(&mut stream, &mut messages).await;
                    }
                }
            }
        }
        messages.mark(ChunkKind::Ended).await;
        context
            .counters
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    });
}

/// The TLS handshake of a new connection, within [`TLS_HANDSHAKE_TIMEOUT`];
/// `None` (counted and logged) when it fails, and at shutdown.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    context: &ConnectionContext,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let handshake = tokio::select! {
        () = context.shutdown.cancelled() => return None,
        handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => handshake,
    };
    match handshake {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            add(&context.counters.tls_failures, 1);
            tracing::warn!(%peer, "TLS handshake failed: {error}");
            None
        }
        Err(_) => {
            add(&context.counters.tls_failures, 1);
            tracing::warn!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// How a connection's reading ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The sender closed, went silent or idle, failed, or lost its slot.
    Closed,
    /// Shutdown: what the kernel has acknowledged is still to be read.
    Shutdown,
}

/// One connection's messages on their way to the parser: its framer and
/// what it has counted so far.
struct Messages<'a> {
    framer: Framer,
    reported: FramingCounts,
    peer: Arc<str>,
    context: &'a ConnectionContext,
    /// The parser stops the reading with it (the sender is far ahead).
    gate: Arc<ReadGate>,
}

impl<'a> Messages<'a> {
    fn new(peer: Arc<str>, context: &'a ConnectionContext) -> Self {
        let framer = Framer::new(context.framing);
        Messages {
            reported: framer.counts(),
            framer,
            peer,
            context,
            gate: Arc::default(),
        }
    }

    /// Cut `bytes` into messages and pass them on (waiting while the queue
    /// is full: the backpressure). `false` when the parser is gone.
    async fn push(&mut self, bytes: &[u8]) -> bool {
        let mut frames = Frames::for_read(bytes.len() + self.framer.partial_bytes());
        self.framer.push(bytes, &mut frames);
        self.pass_on(frames).await
    }

    /// The stream ended (`cut_short`: by shutdown rather than by the
    /// sender): pass on what the framer holds; a message half read is
    /// counted as incomplete.
    async fn finish(&mut self, cut_short: bool) -> bool {
        let mut frames = Frames::default();
        if cut_short {
            if self.framer.in_frame() {
                add(&self.context.counters.incomplete, 1);
                tracing::warn!(peer = %self.peer, "shutdown: a message half read from this connection is lost");
            }
        } else if self.framer.finish_stream(&mut frames) {
            add(&self.context.counters.incomplete, 1);
            tracing::warn!(peer = %self.peer, "connection ended inside an octet-counted message; its part is dropped");
        }
        self.pass_on(frames).await
    }

    async fn pass_on(&mut self, frames: Frames) -> bool {
        let counts = self.framer.counts();
        let counters = &self.context.counters;
        add(
            &counters.truncated,
            counts.truncated - self.reported.truncated,
        );
        add(
            &counters.dropped_oversize,
            counts.dropped_oversize - self.reported.dropped_oversize,
        );
        self.reported = counts;
        if frames.is_empty() {
            return true;
        }
        add(&counters.messages, frames.bounds.len() as u64);
        let chunk = Chunk {
            peer: Arc::clone(&self.peer),
            frames,
            kind: ChunkKind::Messages,
            receipts: None,
            gate: None,
        };
        self.context.queue.send(chunk).await.is_ok()
    }

    /// Tell the parser that the connection opened (handing it the gate)
    /// or ended.
    async fn mark(&self, kind: ChunkKind) {
        let gate = (kind == ChunkKind::Opened).then(|| Arc::clone(&self.gate));
        let chunk = Chunk::mark(&self.peer, kind, gate);
        let _ = self.context.queue.send(chunk).await;
    }
}

/// Wait while `gate` keeps a connection unread, counted.
pub(super) async fn pause(gate: &ReadGate, counters: &NetworkCounters) {
    add(&counters.paused_reads, 1);
    gate.opened().await;
}

/// Read one connection until it ends, goes silent or idle, loses its slot,
/// or shutdown; pass on every whole message read.
async fn read_stream(
    stream: &mut (impl AsyncRead + Unpin),
    messages: &mut Messages<'_>,
    slot: Option<&Slot>,
) -> Ended {
    let context = messages.context;
    let mut buffer = vec![0u8; READ_BYTES];
    let never = CancellationToken::new();
    let evicted = slot.map_or(&never, |slot| &slot.close);
    let mut spoke = false;
    let gate = Arc::clone(&messages.gate);
    loop {
        let timeout = context.read_timeout(spoke);
        let paused = gate.is_paused();
        let read = tokio::select! {
            biased;
            () = context.shutdown.cancelled() => return Ended::Shutdown,
            // Its slot went to a newcomer (it had sent nothing).
            () = evicted.cancelled() => return Ended::Closed,
            // The sender is far ahead of the others: no time limit runs.
            () = pause(&gate, &context.counters), if paused => continue,
            read = read_with_timeout(stream, &mut buffer, timeout), if !paused => read,
        };
        let peer = &messages.peer;
        match read {
            ReadOutcome::Data(count) => {
                if !spoke {
                    spoke = true;
                    if let Some(slot) = slot {
                        slot.spoke();
                    }
                }
                if !messages.push(&buffer[..count]).await {
                    return Ended::Closed;
                }
                continue;
            }
            ReadOutcome::End => {}
            ReadOutcome::Idle if !spoke => {
                add(&context.counters.silent_closed, 1);
                tracing::info!(%peer, "closing a connection that sent nothing for listen.first_byte_timeout_s");
            }
            ReadOutcome::Idle => {
                add(&context.counters.idle_closed, 1);
                tracing::info!(%peer, "closing a connection idle for listen.idle_timeout_s");
            }
            ReadOutcome::Failed(error) => {
                tracing::info!(%peer, "connection failed: {error}");
            }
        }
        messages.finish(false).await;
        return Ended::Closed;
    }
}

/// Shutdown of a plain TCP connection: take exactly what the kernel has
/// acknowledged to the sender, and no more, then close.
///
/// The kernel acknowledges what fits its receive buffer whether or not the
/// runtime reads it, so closing a socket with unread data would lose data
/// the sender counts as delivered, and reading until a busy sender stops
/// may never end. So: what comes is read until the sender pauses (a sender
/// that has finished delivers everything it wrote), within a budget; then
/// the receive buffer is shrunk to the minimum (so
/// the window the kernel advertises closes once what it already promised
/// has come), the queue is left alone until it stops growing, and then
/// *peeked* whole (peeking frees no room, so it opens no window) and the
/// socket closed. The sender's kernel resets the connection and keeps
/// everything past what was acknowledged, for the sender to send again.
async fn drain_acknowledged(mut stream: tokio::net::TcpStream, messages: &mut Messages<'_>) {
    // First what is waiting and what a sender that has finished still has
    // on its way: read until it pauses (within a budget, for a sender that
    // never does).
    if !read_until_pause(&mut stream, messages).await {
        return;
    }
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            tracing::info!(peer = %messages.peer, "connection failed at shutdown: {error}");
            messages.finish(true).await;
            return;
        }
    };
    let socket = socket2::SockRef::from(&stream);
    let capacity = socket.recv_buffer_size().unwrap_or(1 << 20);
    if let Err(error) = socket.set_recv_buffer_size(0) {
        tracing::debug!(peer = %messages.peer, "cannot shrink the receive buffer: {error}");
    }
    let mut queued = vec![0u8; capacity + (64 << 10)];
    let mut last = usize::MAX;
    let mut peeked = 0;
    for _ in 0..DRAIN_CHECKS {
        // The socket does not block (tokio set it so): an empty queue is
        // `WouldBlock`.
        peeked = match stream.peek(&mut queued) {
            Ok(count) => count,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(error) => {
                tracing::info!(peer = %messages.peer, "connection failed at shutdown: {error}");
                0
            }
        };
        if peeked == queued.len() {
            // More than the buffer held before it shrank: make room.
            queued.resize(queued.len() * 2, 0);
            continue;
        }
        if peeked == last {
            break;
        }
        last = peeked;
        tokio::time::sleep(DRAIN_WAIT).await;
    }
    // Closed right after the last look: nothing more is taken in between.
    drop(stream);
    if peeked > 0 && !messages.push(&queued[..peeked]).await {
        return;
    }
    messages.finish(true).await;
}

/// Shutdown of a TLS connection: the kernel's queue holds ciphertext, so it
/// cannot be peeked; read what arrives until the sender pauses.
async fn drain_by_reading(stream: &mut (impl AsyncRead + Unpin), messages: &mut Messages<'_>) {
    if read_until_pause(stream, messages).await {
        messages.finish(true).await;
    }
}

/// At shutdown, read what arrives until the sender pauses for
/// [`DRAIN_WAIT`], at most [`DRAIN_READS`] times. `false` when the stream
/// is done with (it ended, failed, or the parser is gone).
async fn read_until_pause(
    stream: &mut (impl AsyncRead + Unpin),
    messages: &mut Messages<'_>,
) -> bool {
    let mut buffer = vec![0u8; READ_BYTES];
    for _ in 0..DRAIN_READS {
        match read_with_timeout(stream, &mut buffer, Some(DRAIN_WAIT)).await {
            ReadOutcome::Data(count) => {
                if !messages.push(&buffer[..count]).await {
                    return false;
                }
            }
            ReadOutcome::End => {
                messages.finish(false).await;
                return false;
            }
            ReadOutcome::Idle => break,
            ReadOutcome::Failed(error) => {
                tracing::info!(peer = %messages.peer, "connection failed at shutdown: {error}");
                messages.finish(true).await;
                return false;
            }
        }
    }
    true
}

/// What one read of a stream gave.
pub(super) enum ReadOutcome {
    /// This many bytes.
    Data(usize),
    /// The stream ended.
    End,
    /// Nothing within the timeout.
    Idle,
    Failed(std::io::Error),
}

/// Read into `buffer`, waiting at most `idle_timeout`.
pub(super) async fn read_with_timeout(
    stream: &mut (impl AsyncRead + Unpin),
    buffer: &mut [u8],
    idle_timeout: Option<Duration>,
) -> ReadOutcome {
    let read = match idle_timeout {
        None => stream.read(buffer).await,
        Some(timeout) => match tokio::time::timeout(timeout, stream.read(buffer)).await {
            Ok(read) => read,
            Err(_) => return ReadOutcome::Idle,
        },
    };
    match read {
        Ok(0) => ReadOutcome::End,
        Ok(count) => ReadOutcome::Data(count),
        Err(error) => ReadOutcome::Failed(error),
    }
}

/// Receive datagrams until shutdown, one message each. UDP has no way to
/// hold the sender back, so datagrams are read as fast as they come (the
/// kernel drops what overflows its buffer, uncounted) into a queue of
/// their own, `listen.udp_queue_mib`, that holds a burst while the
/// pipeline is busy; a datagram that finds that full too is dropped and
/// counted.
async fn receive_datagrams(socket: tokio::net::UdpSocket, context: Arc<ConnectionContext>) {
    let rules = context.framing;
    // One byte more than the maximum, to tell a long datagram from one that
    // fits exactly; at most what UDP can carry.
    let mut buffer = vec![0u8; (rules.max_message_bytes + 1).min(65_536)];
    let mut waiting: VecDeque<Chunk> = VecDeque::new();
    let mut waiting_bytes = 0;
    loop {
        tokio::select! {
            biased;
            () = context.shutdown.cancelled() => break,
            // Hand the oldest waiting chunk on as soon as there is room.
            permit = context.queue.reserve(), if !waiting.is_empty() => {
                let Ok(permit) = permit else { return };
                if let Some(chunk) = waiting.pop_front() {
                    waiting_bytes -= chunk_bytes(&chunk);
                    permit.send(chunk);
                }
            }
            received = socket.recv_from(&mut buffer) => {
                for chunk in gather_datagrams(&socket, &mut buffer, received, &context) {
                    let bytes = chunk_bytes(&chunk);
                    let count = chunk.frames.bounds.len() as u64;
                    if waiting_bytes + bytes > context.udp_queue_bytes {
                        let before = context
                            .counters
                            .dropped_udp
                            .fetch_add(count, Ordering::Relaxed);
                        if before == 0 {
                            tracing::warn!(
                                "UDP datagrams dropped: the pipeline is behind and listen.udp_queue_mib is full (counted; see the periodic and final counts)"
                            );
                        }
                        continue;
                    }
                    add(&context.counters.messages, count);
                    waiting_bytes += bytes;
                    waiting.push_back(chunk);
                }
            }
        }
    }
    // Shutdown: what the kernel holds is taken too (within the queue's
    // budget, so that a sender that keeps sending cannot hold shutdown up),
    // and everything taken is processed.
    while waiting_bytes <= context.udp_queue_bytes
        && let Ok(received) = socket.try_recv_from(&mut buffer)
    {
        for chunk in gather_datagrams(&socket, &mut buffer, Ok(received), &context) {
            add(&context.counters.messages, chunk.frames.bounds.len() as u64);
            waiting_bytes += chunk_bytes(&chunk);
            waiting.push_back(chunk);
        }
    }
    for chunk in waiting {
        if context.queue.send(chunk).await.is_err() {
            return;
        }
    }
}

/// What a chunk holds, for the UDP queue's budget.
fn chunk_bytes(chunk: &Chunk) -> usize {
    chunk.frames.data.len() + chunk.frames.bounds.len() * 16 + chunk.peer.len()
}

/// The datagram `received`, and those already waiting behind it (up to
/// [`DATAGRAMS_PER_CHUNK`], without waiting), as chunks of consecutive
/// datagrams per sender.
fn gather_datagrams(
    socket: &tokio::net::UdpSocket,
    buffer: &mut [u8],
    received: std::io::Result<(usize, SocketAddr)>,
    context: &ConnectionContext,
) -> Vec<Chunk> {
    let rules = context.framing;
    let mut pending: Vec<(SocketAddr, Frames)> = Vec::new();
    let mut next = received;
    for gathered in 1..=DATAGRAMS_PER_CHUNK {
        match next {
            Ok((count, peer)) => {
                let datagram = trim_datagram(&buffer[..count]);
                if let Some(message) = fit(datagram, &rules, &context.counters) {
                    match pending.last_mut() {
                        Some((last_peer, frames)) if *last_peer == peer => {
                            frames.push_message(message);
                        }
                        _ => {
                            let mut frames = Frames::default();
                            frames.push_message(message);
                            pending.push((peer, frames));
                        }
                    }
                }
            }
            Err(error) => {
                tracing::debug!("UDP receive failed: {error}");
            }
        }
        if gathered == DATAGRAMS_PER_CHUNK {
            break;
        }
        next = match socket.try_recv_from(buffer) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
            other => other,
        };
    }
    pending
        .into_iter()
        .map(|(peer, frames)| Chunk {
            peer: Arc::from(peer.to_string()),
            frames,
            kind: ChunkKind::Messages,
            receipts: None,
            gate: None,
        })
        .collect()
}

/// A datagram without the line end some senders append.
fn trim_datagram(datagram: &[u8]) -> &[u8] {
    let mut end = datagram.len();
    while end > 0 && matches!(datagram[end - 1], b'\n' | b'\r' | 0) {
        end -= 1;
    }
    &datagram[..end]
}

/// A datagram cut to the maximum, or `None` when it is dropped for its
/// size; either is counted.
fn fit<'a>(
    datagram: &'a [u8],
    rules: &FramingRules,
    counters: &NetworkCounters,
) -> Option<&'a [u8]> {
    if datagram.is_empty() {
        return None;
    }
    if datagram.len() <= rules.max_message_bytes {
        return Some(datagram);
    }
    match rules.oversize {
        Oversize::Truncate => {
            add(&counters.truncated, 1);
            Some(&datagram[..rules.max_message_bytes])
        }
        Oversize::Drop => {
            add(&counters.dropped_oversize, 1);
            None
        }
    }
}

/// Log the counts every `interval` while anything changes.
async fn report_periodically(counters: Arc<NetworkCounters>, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    // Counted from zero, not from the first look: on a busy machine this
    // task may first run after every message has come, and then nothing
    // would ever change from that look.
    let mut last = NetworkSnapshot::default();
    loop {
        ticks.tick().await;
        let now = counters.snapshot();
        if now != last {
            now.log("listener counts so far");
            last = now;
        }
    }
}

/// The TLS server configuration from PEM files; `client_ca` empty means no
/// client certificates are asked for.
pub fn tls_config(
    certificate: &str,
    key: &str,
    client_ca: &str,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;
    if certificate.is_empty() || key.is_empty() {
        bail!(
            "listen.tls or listen.relp_tls is set: listen.tls_certificate and listen.tls_key must name PEM files"
        );
    }
    let chain = read_certificates("listen.tls_certificate", certificate)?;
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|error| {
        anyhow!("listen.tls_key: cannot read a private key from {key}: {error}")
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for authority in read_certificates("listen.tls_client_ca", client_ca)? {
            roots
                .add(authority)
                .with_context(|| format!("listen.tls_client_ca: a certificate in {client_ca}"))?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("listen.tls_client_ca: {client_ca}"))?;
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder
        .with_single_cert(chain, private_key)
        .context("listen.tls_certificate and listen.tls_key do not make a usable pair")?;
    Ok(Arc::new(config))
}

/// Every PEM certificate in `path` (at least one), named in errors by the
/// configuration item `key`.
fn read_certificates(
    key: &str,
    path: &str,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| anyhow!("{key}: cannot read certificates from {path}: {error}"))?;
    if certificates.is_empty() {
        bail!("{key}: {path} holds no PEM certificate");
    }
    Ok(certificates)
}
