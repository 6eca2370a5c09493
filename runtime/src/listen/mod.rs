//! Listening for syslog on the network: TCP (RFC 6587 framing), UDP
//! (RFC 5426) and TLS (RFC 5425).
//!
//! The sockets are served by tokio on one thread ("network"). Connections
//! cut their stream into messages ([`framing`]) and send them, a read's
//! worth at a time, over a bounded queue to the parser, which numbers,
//! parses and batches them for the modules (and writes them to a capture).
//! When the modules or handlers fall behind, the queue fills, connections
//! wait on it and stop reading their sockets: TCP senders are held back by
//! their own queues, UDP datagrams that find the queue full are counted as
//! dropped. Memory stays bounded by the queue, the batches in flight and the
//! per-connection buffers, whatever the load.
//!
//! SIGINT or SIGTERM stops accepting and reading, passes on every message
//! already read, and lets the pipeline finish; a second signal exits at
//! once.

pub mod framing;
pub mod relp;
mod reorder;
mod server;
mod slots;

use crate::capture::CaptureWriter;
use crate::config_store::ConfigStore;
use crate::pipeline::{
    BatchSink, Counters, Destination, HandlerStage, ModuleStage, Processing, TickTime,
};
use crate::receipts::ReceiptSink;
use crate::record::{Origin, ParseCounts, TraditionalDefaults};
use crate::types::{Value, ValueType};
use anyhow::{anyhow, bail};
use framing::{FramingRules, Oversize, Trailer};
use reorder::{REORDER_MAX_BYTES, Reorder, SenderId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The listener's configuration items, with their defaults and what they
/// are for; declared in the configuration store by the loader.
pub fn config_items() -> [(&'static str, ValueType, Value, &'static str); 18] {
    let text = |default: &str| Value::Text(default.to_owned());
    [
        (
            "listen.tcp",
            ValueType::Text,
            text("127.0.0.1:5140"),
            "IP:PORT for syslog over TCP (octet counting or trailer framing, detected per message); empty turns it off",
        ),
        (
            "listen.udp",
            ValueType::Text,
            text(""),
            "IP:PORT for syslog over UDP (one message per datagram); empty turns it off",
        ),
        (
            "listen.udp_queue_mib",
            ValueType::Integer,
            Value::Integer(64),
            "MiB of UDP datagrams that may wait while the pipeline is busy; past it they are dropped and counted",
        ),
        (
            "listen.tls",
            ValueType::Text,
            text(""),
            "IP:PORT for syslog over TLS (RFC 5425); needs listen.tls_certificate and listen.tls_key; empty turns it off",
        ),
        (
            "listen.relp",
            ValueType::Text,
            text(""),
            "IP:PORT for RELP (rsyslog's omrelp): a message is acknowledged once a state checkpoint covers it (without state: once its events are handled), so that the sender resends what a crash lost; empty turns it off",
        ),
        (
            "listen.relp_tls",
            ValueType::Text,
            text(""),
            "IP:PORT for RELP over TLS; needs listen.tls_certificate and listen.tls_key (as listen.tls); empty turns it off",
        ),
        (
            "listen.tls_certificate",
            ValueType::Text,
            text(""),
            "PEM file of the server's certificate chain, for listen.tls",
        ),
        (
            "listen.tls_key",
            ValueType::Text,
            text(""),
            "PEM file of the server's private key, for listen.tls",
        ),
        (
            "listen.tls_client_ca",
            ValueType::Text,
            text(""),
            "PEM file of CA certificates; when set, TLS clients must present a certificate they signed",
        ),
        (
            "listen.max_message_bytes",
            ValueType::Integer,
            Value::Integer(65_536),
            "longest message kept; longer ones are truncated or dropped (listen.oversize) and counted",
        ),
        (
            "listen.oversize",
            ValueType::Text,
            text("truncate"),
            "what happens to a message longer than listen.max_message_bytes: \"truncate\" or \"drop\"",
        ),
        (
            "listen.trailer",
            ValueType::Text,
            text("lf"),
            "end of a non-octet-counted TCP message: \"lf\" (a CR before it is removed too) or \"nul\"",
        ),
        (
            "listen.idle_timeout_s",
            ValueType::Integer,
            Value::Integer(600),
            "close a TCP or TLS connection that sends nothing for this many seconds; 0 never does",
        ),
        (
            "listen.max_connections",
            ValueType::Integer,
            Value::Integer(1024),
            "open TCP and TLS connections at most; further ones are closed at once and counted",
        ),
        (
            "listen.first_byte_timeout_s",
            ValueType::Integer,
            Value::Integer(10),
            "close a TCP or TLS connection that sends nothing this many seconds after it opens; 0 waits listen.idle_timeout_s",
        ),
        (
            "listen.max_connections_per_address",
            ValueType::Integer,
            Value::Integer(256),
            "open TCP and TLS connections from one IP address at most",
        ),
        (
            "listen.reorder_ms",
            ValueType::Integer,
            Value::Integer(1000),
            "records of several senders are put in record-time order, each waiting at most this long for the others to catch up; 0 takes them as they come",
        ),
        (
            "listen.report_interval_s",
            ValueType::Integer,
            Value::Integer(60),
            "log the listener's counts (messages, connections, truncations, drops) this often while they change; 0 only at the end",
        ),
    ]
}

/// How and where to listen, checked.
#[derive(Clone)]
pub struct ListenSettings {
    /// TCP address, if TCP is on.
    pub tcp: Option<SocketAddr>,
    /// UDP address, if UDP is on.
    pub udp: Option<SocketAddr>,
    /// Bytes of datagrams that may wait while the pipeline is busy.
    pub udp_queue_bytes: usize,
    /// TLS address and server configuration, if TLS is on.
    pub tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// RELP address, if RELP is on.
    pub relp: Option<SocketAddr>,
    /// RELP-over-TLS address and server configuration, if it is on.
    pub relp_tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// How TCP and TLS streams are cut into messages (and the size limit
    /// for UDP).
    pub framing: FramingRules,
    /// Closes silent connections; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// Closes connections that send nothing after they open; `None`
    /// leaves them to `idle_timeout`.
    pub first_byte_timeout: Option<Duration>,
    /// Open TCP and TLS connections at most (silent ones give their slot to
    /// a newcomer when all are taken).
    pub max_connections: usize,
    /// Open TCP and TLS connections from one address at most.
    pub max_connections_per_address: usize,
    /// How often the counts are logged; zero only at the end.
    pub report_interval: Duration,
    /// How long a record may wait for other senders to catch up (see
    /// `reorder.rs`); `None` takes records as they come.
    pub reorder: Option<Duration>,
}

impl std::fmt::Debug for ListenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenSettings")
            .field("tcp", &self.tcp)
            .field("udp", &self.udp)
            .field("udp_queue_bytes", &self.udp_queue_bytes)
            .field("tls", &self.tls.as_ref().map(|(address, _)| address))
            .field("relp", &self.relp)
            .field(
                "relp_tls",
                &self.relp_tls.as_ref().map(|(address, _)| address),
            )
            .field("framing", &self.framing)
            .field("idle_timeout", &self.idle_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_address",
                &self.max_connections_per_address,
            )
            .field("report_interval", &self.report_interval)
            .field("reorder", &self.reorder)
            .finish()
    }
}

impl ListenSettings {
    /// Read and check the `listen.*` items; TLS files are read here, so
    /// that `correlator check` finds a bad certificate too.
    pub fn from_store(store: &ConfigStore) -> anyhow::Result<Self> {
        let text = |key: &str| store.text(key).unwrap_or("").trim().to_owned();
        let address = |key: &str| -> anyhow::Result<Option<SocketAddr>> {
            let value = text(key);
            if value.is_empty() {
                return Ok(None);
            }
            value.parse().map(Some).map_err(|_| {
                anyhow!("{key}: \"{value}\" is not IP:PORT (e.g. 127.0.0.1:5140 or [::1]:5140)")
            })
        };
        let max_message_bytes = store.integer("listen.max_message_bytes").unwrap_or(0);
        let max_message_bytes = usize::try_from(max_message_bytes)
            .ok()
            .filter(|bytes| (480..=16 << 20).contains(bytes))
            .ok_or_else(|| {
                anyhow!(
                    "listen.max_message_bytes must be between 480 (RFC 5426's minimum) and 16777216, not {max_message_bytes}"
                )
            })?;
        let oversize = match text("listen.oversize").as_str() {
            "truncate" => Oversize::Truncate,
            "drop" => Oversize::Drop,
            other => bail!("listen.oversize must be \"truncate\" or \"drop\", not \"{other}\""),
        };
        let trailer = match text("listen.trailer").to_ascii_lowercase().as_str() {
            "lf" => Trailer::Lf,
            "nul" => Trailer::Nul,
            other => bail!("listen.trailer must be \"lf\" or \"nul\", not \"{other}\""),
        };
        let idle_timeout = match store.integer("listen.idle_timeout_s").unwrap_or(0) {
            0 => None,
            seconds @ 1..=86_400 => Some(Duration::from_secs(seconds.unsigned_abs())),
            other => bail!(
                "listen.idle_timeout_s must be between 0 (never) and 86400 seconds, not {other}"
            ),
        };
        let max_connections = store.integer("listen.max_connections").unwrap_or(0);
        let max_connections = usize::try_from(max_connections)
            .ok()
            .filter(|count| (1..=1_000_000).contains(count))
            .ok_or_else(|| {
                anyhow!(
                    "listen.max_connections must be between 1 and 1000000, not {max_connections}"
                )
            })?;
        let first_byte_timeout = match store.integer("listen.first_byte_timeout_s").unwrap_or(0) {
            0 => None,
            seconds @ 1..=86_400 => Some(Duration::from_secs(seconds.unsigned_abs())),
            other => bail!(
                "listen.first_byte_timeout_s must be between 0 (as listen.idle_timeout_s) and 86400 seconds, not {other}"
            ),
        };
        let per_address = store
            .integer("listen.max_connections_per_address")
            .unwrap_or(0);
        let max_connections_per_address = usize::try_from(per_address)
            .ok()
            .filter(|count| (1..=1_000_000).contains(count))
            .ok_or_else(|| {
                anyhow!(
                    "listen.max_connections_per_address must be between 1 and 1000000, not {per_address}"
                )
            })?;
        let udp_queue_mib = store.integer("listen.udp_queue_mib").unwrap_or(0);
        let udp_queue_bytes = usize::try_from(udp_queue_mib)
            .ok()
            .filter(|mib| (1..=4096).contains(mib))
            .ok_or_else(|| {
                anyhow!("listen.udp_queue_mib must be between 1 and 4096, not {udp_queue_mib}")
            })?
            << 20;
        let report_interval = match store.integer("listen.report_interval_s").unwrap_or(0) {
            seconds @ 0..=86_400 => Duration::from_secs(seconds.unsigned_abs()),
            other => bail!(
                "listen.report_interval_s must be between 0 (only at the end) and 86400 seconds, not {other}"
            ),
        };
        let reorder = match store.integer("listen.reorder_ms").unwrap_or(0) {
            0 => None,
            millis @ 1..=600_000 => Some(Duration::from_millis(millis.unsigned_abs())),
            other => bail!(
                "listen.reorder_ms must be between 0 (off) and 600000 (ten minutes), not {other}"
            ),
        };
        let tls_address = address("listen.tls")?;
        let relp_tls_address = address("listen.relp_tls")?;
        // One server configuration for both TLS listeners.
        let tls_config = if tls_address.is_some() || relp_tls_address.is_some() {
            Some(server::tls_config(
                &text("listen.tls_certificate"),
                &text("listen.tls_key"),
                &text("listen.tls_client_ca"),
            )?)
        } else {
            None
        };
        let with_config =
            |address: Option<SocketAddr>| address.zip(tls_config.as_ref().map(Arc::clone));
        let tls = with_config(tls_address);
        let relp_tls = with_config(relp_tls_address);
        Ok(ListenSettings {
            tcp: address("listen.tcp")?,
            udp: address("listen.udp")?,
            udp_queue_bytes,
            tls,
            relp: address("listen.relp")?,
            relp_tls,
            framing: FramingRules {
                trailer,
                max_message_bytes,
                oversize,
            },
            idle_timeout,
            first_byte_timeout,
            max_connections,
            max_connections_per_address,
            report_interval,
            reorder,
        })
    }
}

/// What the network side counted: shared by every connection task, read by
/// the periodic log line and at the end.
#[derive(Debug, Default)]
pub struct NetworkCounters {
    /// Messages cut from streams and datagrams and passed on.
    pub messages: AtomicU64,
    /// TCP and TLS connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open_connections: AtomicU64,
    /// Connections closed at once because `listen.max_connections` were open.
    pub refused_connections: AtomicU64,
    /// Errors from `accept` (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failures: AtomicU64,
    /// Connections closed for sending nothing for `listen.idle_timeout_s`.
    pub idle_closed: AtomicU64,
    /// Connections closed for sending nothing in their first
    /// `listen.first_byte_timeout_s`.
    pub silent_closed: AtomicU64,
    /// Connections that had sent nothing, closed to make room for a new one.
    pub evicted_silent: AtomicU64,
    /// Messages truncated to `listen.max_message_bytes`.
    pub truncated: AtomicU64,
    /// Messages dropped for their size (`listen.oversize = "drop"`).
    pub dropped_oversize: AtomicU64,
    /// UDP datagrams dropped because the pipeline was full.
    pub dropped_udp: AtomicU64,
    /// Messages cut off by their connection's end (an octet-counted frame
    /// short of its length) or by shutdown (a frame half read).
    pub incomplete: AtomicU64,
    /// Times a connection was left unread for a while because its sender
    /// was far ahead of the others in record time (`reorder.rs`).
    pub paused_reads: AtomicU64,
}

impl NetworkCounters {
    /// A copy of every count, for a log line.
    pub fn snapshot(&self) -> NetworkSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NetworkSnapshot {
            messages: get(&self.messages),
            connections: get(&self.connections),
            open_connections: get(&self.open_connections),
            refused_connections: get(&self.refused_connections),
            accept_errors: get(&self.accept_errors),
            tls_failures: get(&self.tls_failures),
            idle_closed: get(&self.idle_closed),
            silent_closed: get(&self.silent_closed),
            evicted_silent: get(&self.evicted_silent),
            truncated: get(&self.truncated),
            dropped_oversize: get(&self.dropped_oversize),
            dropped_udp: get(&self.dropped_udp),
            incomplete: get(&self.incomplete),
            paused_reads: get(&self.paused_reads),
        }
    }
}

/// The counts of [`NetworkCounters`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NetworkSnapshot {
    pub messages: u64,
    pub connections: u64,
    pub open_connections: u64,
    pub refused_connections: u64,
    pub accept_errors: u64,
    pub tls_failures: u64,
    pub idle_closed: u64,
    pub silent_closed: u64,
    pub evicted_silent: u64,
    pub truncated: u64,
    pub dropped_oversize: u64,
    pub dropped_udp: u64,
    pub incomplete: u64,
    pub paused_reads: u64,
}

impl NetworkSnapshot {
    /// Log the counts, as a warning when something was lost or cut.
    pub fn log(&self, what: &str) {
        let lost = self.truncated
            + self.dropped_oversize
            + self.dropped_udp
            + self.incomplete
            + self.refused_connections;
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    messages = self.messages,
                    connections = self.connections,
                    open = self.open_connections,
                    truncated = self.truncated,
                    dropped_oversize = self.dropped_oversize,
                    dropped_udp = self.dropped_udp,
                    incomplete = self.incomplete,
                    refused_connections = self.refused_connections,
                    accept_errors = self.accept_errors,
                    tls_failures = self.tls_failures,
                    idle_closed = self.idle_closed,
                    silent_closed = self.silent_closed,
                    evicted_silent = self.evicted_silent,
                    paused_reads = self.paused_reads,
                    "{what}"
                )
            };
        }
        if lost > 0 {
            line!(warn);
        } else {
            line!(info);
        }
    }
}

/// How long the run waits, after the pipeline has finished, for RELP
/// connections to send their last answers (a connection waits for the
/// pipeline at most this long too).
const RELP_FINISH_WAIT: Duration = Duration::from_secs(70);

/// What the parser side saw while listening.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ListenStats {
    /// Messages taken from the network.
    pub messages: u64,
    /// Records taken of them, and what could not be.
    pub parsed: ParseCounts,
    /// What the network side counted, at the end.
    pub network: NetworkSnapshot,
}

/// Listen until SIGINT or SIGTERM, feeding every message through the
/// modules and their events through the handlers; then dispatch every
/// module's statistics and return once the handlers are done.
pub fn serve(
    settings: &ListenSettings,
    defaults: TraditionalDefaults,
    batch_size: usize,
    capture: Option<CaptureWriter>,
    modules: &mut ModuleStage,
    handlers: HandlerStage,
) -> anyhow::Result<(ListenStats, Counters)> {
    modules.set_tick_time(TickTime::WallClock);
    modules.keep_backlogs();
    serve_into(
        settings,
        defaults,
        batch_size,
        capture,
        Processing { modules, handlers },
    )
}

/// Listen until SIGINT or SIGTERM, handing every message to
/// `destination`; return once it has finished with them (and RELP
/// senders are answered).
pub fn serve_into(
    settings: &ListenSettings,
    defaults: TraditionalDefaults,
    batch_size: usize,
    capture: Option<CaptureWriter>,
    destination: impl Destination,
) -> anyhow::Result<(ListenStats, Counters)> {
    let counters = Arc::new(NetworkCounters::default());
    crate::metrics::registry().set_network(Arc::clone(&counters));
    let network = server::Network::bind(settings, Arc::clone(&counters))?;
    let (queue, listening) = network.start()?;
    crate::service::tell("READY=1\nSTATUS=listening");
    let stop = listening.stopper();
    let reorder = settings.reorder;
    let result = destination.run(
        batch_size,
        move |sink| parse_messages(queue, &sink, defaults, capture, reorder),
        // An instance aborted the run: close the sockets, so that the
        // parser's queue ends.
        move || stop.cancel(),
    );
    // RELP connections answer what the pipeline finished, then close.
    listening.wait_until_finished(RELP_FINISH_WAIT);
    let (stats, pipeline_counters) = match result {
        Ok(((stats, capture_error), counters_of_pipeline)) => {
            if let Some(error) = capture_error {
                return Err(error);
            }
            (stats, counters_of_pipeline)
        }
        Err(aborted) => return Err(aborted),
    };
    Ok((
        ListenStats {
            network: counters.snapshot(),
            ..stats
        },
        pipeline_counters,
    ))
}

/// What the parser's queue gave.
enum Next {
    Chunk(server::Chunk),
    /// Nothing came before the deadline.
    Timeout,
    /// Every connection has ended after shutdown.
    Closed,
}

/// The next chunk, or nothing by `deadline`.
fn wait_for_chunk(queue: &mut server::Queue, deadline: std::time::Instant) -> Next {
    match queue.recv_until(deadline) {
        Ok(Some(chunk)) => Next::Chunk(chunk),
        Ok(None) => Next::Timeout,
        Err(()) => Next::Closed,
    }
}

/// One message from the network.
struct Message<'a> {
    /// Its number.
    position: u64,
    text: &'a str,
    /// Who sent it.
    peer: &'a str,
    /// Where to say that it is safe, and its number there (RELP).
    receipt: Option<(&'a Arc<ReceiptSink>, u64)>,
}

impl Message<'_> {
    /// Its receipt travels with `builder`.
    fn add_receipt(&self, builder: &mut crate::record::BatchBuilder) {
        if let Some((sink, number)) = self.receipt {
            builder.receipts_mut().add(sink, number);
        }
    }
}

/// Take a message while records are put in order (`reorder.rs`): parsed
/// once, then into `builder` when it may go on at once, else to wait.
fn take_in_order(
    counts: &mut ParseCounts,
    builder: &mut crate::record::BatchBuilder,
    reorder: &mut Reorder,
    sender: SenderId,
    message: &Message<'_>,
    arrived: std::time::Instant,
    defaults: &TraditionalDefaults,
) {
    let Message {
        position,
        text,
        peer,
        receipt,
    } = *message;
    let Ok(parsed) = crate::record::parse(text, defaults) else {
        // Counted and logged as unparsable.
        counts.take(builder, position, text, Origin::Network { peer }, defaults);
        message.add_receipt(builder);
        return;
    };
    let time = (parsed.timestamp.seconds, parsed.timestamp.nanoseconds);
    let record = (position, text, &parsed, peer);
    if !reorder.admit(sender, time, arrived) && reorder.wait(sender, arrived, receipt, record) {
        // Counted now: it leaves for the modules later, whatever happens.
        counts.records += 1;
    } else {
        // It may go on at once (or, never so, its sender is unknown).
        counts.take_parsed(builder, position, text, &parsed, peer);
        message.add_receipt(builder);
    }
}

/// The parser (the source thread): number every message from the network,
/// write it to the capture if there is one, parse it and batch it; with
/// `reorder`, put the records of several senders in record-time order
/// first (`reorder.rs`). Runs until every connection has ended (after a
/// signal). Returns the counts and the capture's error, if writing it
/// failed (received messages still go through the modules).
fn parse_messages(
    mut queue: server::Queue,
    sink: &BatchSink,
    defaults: TraditionalDefaults,
    mut capture: Option<CaptureWriter>,
    reorder: Option<Duration>,
) -> (ListenStats, Option<anyhow::Error>) {
    let mut stats = ListenStats::default();
    let mut capture_error = None;
    let mut builder = sink.empty_builder();
    let mut reorder = reorder.map(|hold| Reorder::new(hold, REORDER_MAX_BYTES));
    loop {
        // While records wait to be put in order, wake when the oldest has
        // waited long enough.
        let next = match reorder.as_ref().and_then(Reorder::deadline) {
            None => match queue.blocking_recv() {
                Some(chunk) => Next::Chunk(chunk),
                None => Next::Closed,
            },
            Some(deadline) => wait_for_chunk(&mut queue, deadline),
        };
        let closed = matches!(next, Next::Closed);
        if let Next::Chunk(chunk) = &next {
            // One arrival time for the chunk's records, one sender.
            let arrived = std::time::Instant::now();
            let sender = reorder
                .as_mut()
                .filter(|_| chunk.kind == server::ChunkKind::Messages)
                .map(|reorder| reorder.sender(&chunk.peer, arrived));
            for (index, message) in chunk.frames.iter().enumerate() {
                stats.messages += 1;
                let position = stats.messages;
                if let Some(writer) = &mut capture
                    && let Err(error) = writer.write(message)
                {
                    capture_error = Some(capture_failed(writer, error));
                    capture = None;
                }
                let text = stats.parsed.decode(message);
                let text = text.trim_end_matches(['\n', '\r', '\0']);
                let message = Message {
                    position,
                    text,
                    peer: &chunk.peer,
                    receipt: chunk
                        .receipts
                        .as_ref()
                        .and_then(|(sink, numbers)| Some((sink, *numbers.get(index)?))),
                };
                match reorder.as_mut().zip(sender) {
                    Some((reorder, sender)) => take_in_order(
                        &mut stats.parsed,
                        &mut builder,
                        reorder,
                        sender,
                        &message,
                        arrived,
                        &defaults,
                    ),
                    None => {
                        stats.parsed.take(
                            &mut builder,
                            position,
                            text,
                            Origin::Network { peer: &chunk.peer },
                            &defaults,
                        );
                        message.add_receipt(&mut builder);
                    }
                }
                if builder.is_full()
                    && !pass_on(
                        sink,
                        &mut builder,
                        &stats.parsed,
                        &mut capture,
                        &mut capture_error,
                    )
                {
                    return (stats, capture_error);
                }
            }
            if let Some(reorder) = &mut reorder {
                match chunk.kind {
                    server::ChunkKind::Messages => {}
                    server::ChunkKind::Opened => {
                        let gate = chunk.gate.clone();
                        reorder.opened(&chunk.peer, std::time::Instant::now(), gate);
                    }
                    server::ChunkKind::Ended => reorder.ended(&chunk.peer),
                }
            }
        }
        if let Some(reorder) = &mut reorder {
            while reorder.release(std::time::Instant::now(), closed, &mut builder) {
                if !pass_on(
                    sink,
                    &mut builder,
                    &stats.parsed,
                    &mut capture,
                    &mut capture_error,
                ) {
                    return (stats, capture_error);
                }
            }
        }
        if closed {
            break;
        }
        // Nothing more waiting: pass on what there is rather than wait for
        // a full batch, so that a quiet network sees its events at once.
        if queue.is_empty() {
            if !pass_on(
                sink,
                &mut builder,
                &stats.parsed,
                &mut capture,
                &mut capture_error,
            ) {
                return (stats, capture_error);
            }
            if let Some(writer) = &mut capture
                && let Err(error) = writer.flush()
            {
                capture_error = Some(capture_failed(writer, error));
                capture = None;
            }
        }
    }
    pass_on(
        sink,
        &mut builder,
        &stats.parsed,
        &mut capture,
        &mut capture_error,
    );
    if let Some(mut writer) = capture {
        match writer.flush() {
            Ok(()) => tracing::info!(
                messages = writer.written(),
                "capture {} written",
                writer.path().display()
            ),
            Err(error) => capture_error = Some(capture_failed(&writer, error)),
        }
    }
    (stats, capture_error)
}

/// Hand on what `builder` holds ([`BatchSink::pass_on`]), and the parse
/// counts to the metrics. When it carries receipts, the capture is flushed
/// first: a message is acknowledged only once it is in the capture too.
fn pass_on(
    sink: &BatchSink,
    builder: &mut crate::record::BatchBuilder,
    counts: &ParseCounts,
    capture: &mut Option<CaptureWriter>,
    capture_error: &mut Option<anyhow::Error>,
) -> bool {
    crate::metrics::registry().parsed(counts);
    if !builder.receipts_mut().is_empty()
        && let Some(writer) = capture
        && let Err(error) = writer.flush()
    {
        *capture_error = Some(capture_failed(writer, error));
        *capture = None;
    }
    sink.pass_on(builder)
}

/// Say at once that the capture failed (listening goes on without it); the
/// error is returned again at the end so that the exit status shows it.
fn capture_failed(writer: &CaptureWriter, error: std::io::Error) -> anyhow::Error {
    let error = anyhow::Error::new(error).context(format!(
        "cannot write capture {}; messages from here on are not captured",
        writer.path().display()
    ));
    tracing::error!("{error:#}");
    error
}
