//! Routing: records go to every module ([`ModuleStage`]); each module's
//! events go to every handler whose filter selects them ([`HandlerStage`]).
//!
//! [`run_stages`] runs a source of records (a capture being replayed, or
//! the network), the modules and the handlers on three threads joined by
//! bounded channels: they work in parallel, and when a later stage falls
//! behind the earlier ones wait, so memory stays bounded by the channels'
//! capacity whatever the input.

use crate::clock_guard::ClockGuard;
use crate::filter::Filter;
use crate::host::{Aborted, Handled, HandlerInstance, ModuleInstance, StreamClock};
use crate::notify::{Notifier, NotifyClock};
use crate::receipts::Receipts;
use crate::record::BatchBuilder;
use crate::state_store::{Checkpoint, InstanceCommit, Ownership, StateStore};
use crate::types::{Dispatched, RecordBatch, TickKind, TimerTick, Timestamp};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Stack of the thread that runs handlers: twice the largest WebAssembly
/// stack an instance may have.
const THREAD_STACK_BYTES: usize = 2 * (crate::app::MAX_STACK_KIB as usize) * 1024;

/// Batches of records made ahead of the modules.
const BATCHES_IN_FLIGHT: usize = 4;

/// Batches of events waiting for the handlers.
const EVENT_BATCHES_IN_FLIGHT: usize = 4;

/// Where a source sends its batches of records, and gets emptied ones back
/// to fill again (so that batches' buffers are allocated once).
pub struct BatchSink {
    batches: mpsc::SyncSender<BatchBuilder>,
    recycled: mpsc::Receiver<BatchBuilder>,
    batch_size: usize,
}

impl BatchSink {
    /// A sink for batches of `batch_size` records, the receiving end of
    /// its batches (at most [`BATCHES_IN_FLIGHT`] waiting), and where
    /// emptied batches go back to it.
    fn new(
        batch_size: usize,
    ) -> (
        BatchSink,
        mpsc::Receiver<BatchBuilder>,
        mpsc::Sender<BatchBuilder>,
    ) {
        let (batches, batch_rx) = mpsc::sync_channel::<BatchBuilder>(BATCHES_IN_FLIGHT);
        let (recycle_tx, recycled) = mpsc::channel::<BatchBuilder>();
        let sink = BatchSink {
            batches,
            recycled,
            batch_size,
        };
        (sink, batch_rx, recycle_tx)
    }

    /// An empty batch: a returned one if there is one, else a new one.
    pub fn empty_builder(&self) -> BatchBuilder {
        match self.recycled.try_recv() {
            Ok(mut builder) => {
                builder.clear();
                builder
            }
            Err(_) => BatchBuilder::new(self.batch_size),
        }
    }

    /// Hand a batch to the modules, waiting while they are behind. `false`
    /// when they have stopped (an instance aborted the run): the source
    /// should stop too.
    pub fn send(&self, builder: BatchBuilder) -> bool {
        self.batches.send(builder).is_ok()
    }

    /// Hand on what `builder` holds (if anything) and leave an empty batch
    /// in its place; `false` as for [`BatchSink::send`].
    pub fn pass_on(&self, builder: &mut BatchBuilder) -> bool {
        if builder.is_empty() && builder.receipts_mut().is_empty() && !builder.has_stream_parts() {
            return true;
        }
        let full = std::mem::replace(builder, self.empty_builder());
        self.send(full)
    }
}

/// Why the stages stopped early.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// An instance with `on_failure = "abort"` failed.
    #[error(transparent)]
    Aborted(#[from] Aborted),
    /// A stage's thread could not start.
    #[error("cannot start the {0} thread")]
    Thread(&'static str, #[source] std::io::Error),
}

/// Run `source` on a thread of its own, every batch it sends through the
/// modules (on this thread) and their events through the handlers (on a
/// third), until the source returns; then every module's statistics.
/// Returns the source's result and the handlers' counts.
///
/// If an instance aborts the run, `stop_source` is called: a source that
/// may wait for input (the network) must then return soon; one that only
/// blocks on sending notices by itself.
pub fn run_stages<S: Send>(
    modules: &mut ModuleStage,
    handlers: HandlerStage,
    batch_size: usize,
    source: impl FnOnce(BatchSink) -> S + Send,
    stop_source: impl FnOnce(),
) -> Result<(S, Counters), StageError> {
    let (sink, batch_rx, recycle_tx) = BatchSink::new(batch_size);
    let (event_tx, event_rx) = mpsc::sync_channel::<ToHandlers>(EVENT_BATCHES_IN_FLIGHT);
    let mut handlers = handlers;
    handlers.clock = match modules.tick_time() {
        TickTime::WallClock => NotifyClock::Wall,
        TickTime::Records => NotifyClock::Records { latest_ms: None },
    };
    std::thread::scope(|scope| {
        // Owned here, to be dropped as soon as the modules stop taking
        // batches: a source waiting to hand one over then wakes and ends.
        let batch_rx = batch_rx;
        let reader = spawn_source(scope, source, sink)?;
        // Handlers run guests on this thread: its stack must hold their
        // WebAssembly stack (at most MAX_STACK_KIB) with room to spare.
        let handling = std::thread::Builder::new()
            .name("handlers".into())
            .stack_size(THREAD_STACK_BYTES)
            .spawn_scoped(scope, move || -> Result<Counters, Aborted> {
                let mut handlers = handlers;
                loop {
                    // Wake when a notifier's wait ends, even without events.
                    let message = match handlers.next_wake() {
                        Some(wait) => match event_rx.recv_timeout(wait) {
                            Ok(message) => message,
                            Err(mpsc::RecvTimeoutError::Timeout) => {
                                handlers.notify_due()?;
                                continue;
                            }
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        },
                        None => match event_rx.recv() {
                            Ok(message) => message,
                            Err(_) => break,
                        },
                    };
                    match message {
                        ToHandlers::Events(events) => handlers.route(events)?,
                        // Every earlier event is handled: say so, with what
                        // the notifiers hold now in the checkpoint's journal.
                        ToHandlers::Settled(done) => {
                            handlers.save_notices();
                            let _ = done.send(());
                        }
                        // The events of these messages are handled.
                        ToHandlers::Receipts(receipts) => receipts.deliver(),
                    }
                }
                // What notifiers hold goes out now; `commit_outbox`
                // records that it did.
                handlers.flush_notices()?;
                Ok(handlers.counters())
            })
            .map_err(|error| StageError::Thread("handlers", error))?;
        modules.outbox.connect(event_tx);
        let mut aborted = None;
        let wall_clock = modules.tick_time() == TickTime::WallClock;
        let mut until_tick = Duration::from_secs(60);
        if wall_clock {
            // Start the clock: the first ticks come at the next boundary.
            match modules.wall_clock_ticks(std::time::SystemTime::now()) {
                Ok(until_next) => until_tick = until_next,
                Err(abort) => aborted = Some(abort),
            }
        }
        // A batch taken early, to learn whether another was waiting.
        let mut ahead: Option<BatchBuilder> = None;
        while aborted.is_none() && !modules.outbox.closed {
            // Wake at each minute's boundary when following the wall clock,
            // when a checkpoint falls due and when a back-off that records
            // wait for ends, even when no records come.
            let wait = [
                wall_clock.then_some(until_tick),
                modules.checkpoint_due(),
                modules.backlog_wait(),
            ]
            .into_iter()
            .flatten()
            .min();
            let received = match (ahead.take(), wait) {
                (Some(builder), _) => Some(builder),
                (None, Some(wait)) => match batch_rx.recv_timeout(wait) {
                    Ok(builder) => Some(builder),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                (None, None) => match batch_rx.recv() {
                    Ok(builder) => Some(builder),
                    Err(_) => break,
                },
            };
            let mut received = received;
            let mut step = || -> Result<(), Aborted> {
                modules.catch_up()?;
                if wall_clock {
                    let until_next = modules.wall_clock_ticks(std::time::SystemTime::now())?;
                    until_tick = until_next.max(Duration::from_millis(10));
                }
                if let Some(builder) = &mut received {
                    if let Some(latest) = builder.latest_time() {
                        modules.process(builder.batch(), latest)?;
                    }
                    modules.exchange(builder)?;
                    modules.hold_receipts(builder.take_receipts());
                    if let Some(marks) = builder.take_marks() {
                        modules.mark_inputs(marks);
                    }
                }
                // Senders wait for receipts (a window of messages at a
                // time): commit as soon as no batch is waiting, rather than
                // at the interval, so that they never wait for it.
                let senders_wait = modules.receipts_wait_for_checkpoint()
                    && match batch_rx.try_recv() {
                        Ok(builder) => {
                            ahead = Some(builder);
                            false
                        }
                        Err(_) => true,
                    };
                if senders_wait || modules.checkpoint_due() == Some(Duration::ZERO) {
                    modules.checkpoint()?;
                }
                modules.release_receipts();
                modules.outbox.flush();
                Ok(())
            };
            if let Err(abort) = step() {
                aborted = Some(abort);
            }
            if let Some(builder) = received {
                // The source may have finished; then the batch is dropped.
                let _ = recycle_tx.send(builder);
            }
        }
        // No batch is taken from here on. A source blocked handing one over
        // (it reads ahead of the modules) must see that now, or the scope
        // would wait for it for ever: an instance aborting, or the
        // handlers gone, leave it blocked otherwise.
        drop(batch_rx);
        if aborted.is_none() {
            // What backed-off instances still hold first; statistics next:
            // a reset is part of the state committed last.
            let last = modules
                .drain()
                .and_then(|()| modules.final_ticks())
                .and_then(|()| {
                    if modules.statistics_at_end() {
                        modules.statistics(false)
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| modules.checkpoint());
            if let Err(abort) = last {
                aborted = Some(abort);
            }
            modules.release_receipts();
            modules.outbox.flush();
        }
        // Receipts not delivered by now never will be: their senders
        // resend the messages to the next run.
        drop(modules.take_receipts());
        modules.outbox.disconnect();
        drop(recycle_tx);
        let counters = join(handling);
        if aborted.is_some() || counters.is_err() {
            // The batch receiver is gone, so the source stops at its next
            // batch, or at once when told; the scope joins it.
            stop_source();
        }
        if let Some(abort) = aborted {
            return Err(abort.into());
        }
        Ok((join(reader), counters?))
    })
}

/// Where a source's batches go: through the modules and handlers
/// ([`Processing`]), or into the stream (`stream::publish::Publisher`, a
/// front-end). Sources (the listener, a replay) are written once against
/// it.
pub trait Destination {
    /// Run `source` on a thread of its own until it returns, taking its
    /// batches; `stop_source` is called if the destination stops first.
    /// Returns the source's result and the handlers' counts.
    fn run<S: Send>(
        self,
        batch_size: usize,
        source: impl FnOnce(BatchSink) -> S + Send,
        stop_source: impl FnOnce(),
    ) -> anyhow::Result<(S, Counters)>;
}

/// Batches through the modules and their events through the handlers
/// ([`run_stages`]).
pub struct Processing<'a> {
    /// The modules.
    pub modules: &'a mut ModuleStage,
    /// The handlers.
    pub handlers: HandlerStage,
}

impl Destination for Processing<'_> {
    fn run<S: Send>(
        self,
        batch_size: usize,
        source: impl FnOnce(BatchSink) -> S + Send,
        stop_source: impl FnOnce(),
    ) -> anyhow::Result<(S, Counters)> {
        Ok(run_stages(
            self.modules,
            self.handlers,
            batch_size,
            source,
            stop_source,
        )?)
    }
}

/// Run `source` on a thread of its own and hand every batch it sends to
/// `take` on this thread, with whether the source paused (the batch is
/// not full), until the source returns or `take` fails. What a front-end
/// does instead of [`run_stages`]: its batches go into the stream
/// (`stream::publish`), not through modules.
pub fn run_source<S: Send>(
    batch_size: usize,
    source: impl FnOnce(BatchSink) -> S + Send,
    stop_source: impl FnOnce(),
    mut take: impl FnMut(&mut BatchBuilder, bool) -> anyhow::Result<()>,
) -> anyhow::Result<S> {
    let (sink, batch_rx, recycle_tx) = BatchSink::new(batch_size);
    std::thread::scope(|scope| {
        let reader = spawn_source(scope, source, sink)?;
        let mut failed = None;
        for mut builder in batch_rx.iter() {
            let quiet = builder.len() < batch_size;
            if let Err(error) = take(&mut builder, quiet) {
                failed = Some(error);
                break;
            }
            // The source may have finished; then the batch is dropped.
            let _ = recycle_tx.send(builder);
        }
        if let Some(error) = failed {
            drop(batch_rx);
            stop_source();
            join(reader);
            return Err(error);
        }
        Ok(join(reader))
    })
}

/// Start `source` on the thread "source" of `scope`, feeding `sink`.
fn spawn_source<'scope, S: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    source: impl FnOnce(BatchSink) -> S + Send + 'scope,
    sink: BatchSink,
) -> Result<std::thread::ScopedJoinHandle<'scope, S>, StageError> {
    std::thread::Builder::new()
        .name("source".into())
        .spawn_scoped(scope, move || source(sink))
        .map_err(|error| StageError::Thread("source", error))
}

/// The result of a scoped thread; a panic there is a bug, passed on as one.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The logic modules of a running app.
pub struct ModuleStage {
    modules: Vec<ModuleInstance>,
    clock: StreamClock,
    ticker: Ticker,
    persistence: Option<Persistence>,
    outbox: Outbox,
    guard: ClockGuard,
    /// Receipts of processed messages, delivered once they are safe.
    receipts: Receipts,
    /// Where keyed messages go (a worker's partition); without one, each
    /// instance receives what it sent itself.
    router: Option<Box<dyn KeyedRouter>>,
    /// Set when the run's end is not the stream's: a worker's partition
    /// handed to another worker, whose run goes on counting. Its modules'
    /// statistics then wait for that run's end.
    handing_over: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Where the keyed messages (`exchange`) a partition's instances send go:
/// to the partitions owning their keys (`stream/exchange.rs`).
pub trait KeyedRouter: Send {
    /// After each batch: what the instances sent (instance, message) while
    /// processing `batch`, whose stream parts are `parts`. Returns once
    /// every message is safely on its way.
    fn route(
        &mut self,
        sent: Vec<(String, crate::host::SentMessage)>,
        batch: &crate::types::RecordBatch,
        parts: &crate::record::StreamParts,
    );
}

/// The events of one step are passed to the handler thread in parts of
/// about this many bytes (and at the end of the step): however many calls
/// a step makes (a batch split by many ticks, a backlog worked off), the
/// events between the two threads stay within
/// `EVENT_BATCHES_IN_FLIGHT + 2` parts, each at most this plus one call's
/// events (`limits.event_bytes_per_call`).
pub const EVENT_PART_BYTES: usize = 4 << 20;

/// What the module thread sends the handler thread.
enum ToHandlers {
    /// Events to route, in the order they were dispatched.
    Events(Vec<Dispatched>),
    /// Answer once every event sent before is handled (a checkpoint waits
    /// for that).
    Settled(mpsc::SyncSender<()>),
    /// Deliver these once every event sent before is handled: without
    /// state, that is when their messages are safe.
    Receipts(Receipts),
}

/// Where the module thread puts events for the handler thread.
#[derive(Default)]
struct Outbox {
    sender: Option<mpsc::SyncSender<ToHandlers>>,
    pending: Vec<Dispatched>,
    /// [`Dispatched::held_bytes`] of `pending`.
    bytes: usize,
    /// The handler thread stopped taking events.
    closed: bool,
}

impl Outbox {
    fn connect(&mut self, sender: mpsc::SyncSender<ToHandlers>) {
        self.sender = Some(sender);
        self.closed = false;
    }

    /// Drop the sender, so that the handler thread sees the end.
    fn disconnect(&mut self) {
        self.sender = None;
    }

    /// Add the events of one call, passing them on if they fill a part.
    fn add(&mut self, events: Vec<Dispatched>) {
        if events.is_empty() {
            return;
        }
        self.bytes += events.iter().map(Dispatched::held_bytes).sum::<usize>();
        if self.pending.is_empty() {
            self.pending = events;
        } else {
            self.pending.extend(events);
        }
        if self.bytes >= EVENT_PART_BYTES {
            self.flush();
        }
    }

    /// Pass what is pending to the handler thread, waiting while it is
    /// behind.
    fn flush(&mut self) {
        self.bytes = 0;
        if self.pending.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.pending);
        if let Some(sender) = &self.sender
            && sender.send(ToHandlers::Events(events)).is_err()
        {
            self.closed = true;
        }
    }

    /// Pass `receipts` on behind every event so far, for the handler
    /// thread to deliver once those are handled.
    fn add_receipts(&mut self, receipts: Receipts) {
        self.flush();
        if let Some(sender) = &self.sender
            && sender.send(ToHandlers::Receipts(receipts)).is_err()
        {
            self.closed = true;
        }
    }

    /// Pass on what is pending and wait until the handler thread has
    /// handled every event passed on so far (each handler took it, or
    /// failed on it and counted it by its policy): what a checkpoint
    /// covers must be handled first, or a crash right after the commit
    /// would lose the events still waiting. `false` when the handler
    /// thread has stopped (the run is aborting).
    fn settle(&mut self) -> bool {
        self.flush();
        let Some(sender) = &self.sender else {
            // No handler thread: nothing is in flight.
            return true;
        };
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if sender.send(ToHandlers::Settled(done_tx)).is_err() {
            self.closed = true;
            return false;
        }
        done_rx.recv().is_ok()
    }
}

/// Checkpoints of the modules' durable state: when the next is due, and
/// what it records.
pub struct Persistence {
    store: Arc<StateStore>,
    /// Who writes each module's state (by module index); `None` for a
    /// module without.
    owners: Vec<Option<Ownership>>,
    interval: Duration,
    last_commit: Instant,
    /// Whether records or ticks were processed since the last commit.
    changed: bool,
    /// The last commit failed: until one succeeds, commits wait for the
    /// interval even when senders wait for receipts.
    failing: bool,
    /// The handlers' durable outboxes' changes, committed with each
    /// checkpoint (`delivery/`).
    outbox: Option<crate::delivery::Journal>,
    /// What is being read (a capture's path, `network`).
    source: String,
    /// Position of the last record processed.
    position: u64,
    /// Records processed this run.
    records: u64,
    /// The checkpoint the run started from.
    restored: Option<Checkpoint>,
    /// How far followed files and the journal are read as of the last
    /// batch processed.
    inputs: crate::state_store::InputMarks,
    /// Whether the first record of the run was looked at.
    first_seen: bool,
    /// Where each commit must also be before it counts (a worker's
    /// partition state in JetStream), if anywhere.
    replica: Option<Box<dyn Replica>>,
}

/// Where a committed checkpoint must also be before it counts: a worker
/// keeps its partition's state in JetStream (`stream/worker.rs`), so that
/// another machine can take the partition over. Until the replica has a
/// commit, its receipts (acknowledgements) wait.
pub trait Replica: Send {
    /// Take the store as just committed at `checkpoint`.
    fn replicate(
        &mut self,
        store: &StateStore,
        checkpoint: &Checkpoint,
    ) -> Result<(), ReplicaError>;
}

/// Why a replica did not take a commit.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// It may at the next checkpoint (the server did not answer).
    #[error("{0}")]
    Retry(String),
    /// It never will: the state belongs to someone else now (another
    /// worker took the partition over). The run stops, without committing
    /// again.
    #[error("{0}")]
    Lost(String),
}

impl Persistence {
    /// Checkpoints into `store` every `interval`, of modules written by
    /// `owners`; `restored` is the store's last checkpoint; `outbox`, the
    /// handlers' outboxes' changes to commit with each.
    pub fn new(
        store: Arc<StateStore>,
        owners: Vec<Option<Ownership>>,
        interval: Duration,
        restored: Option<Checkpoint>,
        outbox: Option<crate::delivery::Journal>,
    ) -> Self {
        Persistence {
            store,
            owners,
            interval,
            last_commit: Instant::now(),
            changed: false,
            failing: false,
            outbox,
            source: String::new(),
            position: 0,
            records: 0,
            restored,
            inputs: crate::state_store::InputMarks::default(),
            first_seen: false,
            replica: None,
        }
    }

    /// Have every commit copied to `replica` before it counts.
    pub fn replicate_to(&mut self, replica: Box<dyn Replica>) {
        self.replica = Some(replica);
    }
}

/// Warn when a run that continues from a checkpoint starts with records
/// older than it: the modules' windows and ticks then see time go back
/// (an old capture replayed onto newer state, most likely by mistake).
fn warn_if_older(restored: Option<&Checkpoint>, batch: &RecordBatch) {
    let (Some(checkpoint), Some(&first)) = (restored, batch.seconds.first()) else {
        return;
    };
    if first < checkpoint.clock.seconds {
        let utc = crate::record::time::format_utc;
        tracing::warn!(
            "the first record ({}) is older than the state this run continues from ({}); modules see time go back, and ticks resume only after it (a replay without --keep-state starts empty; --discard-state empties one module)",
            utc(first),
            utc(checkpoint.clock.seconds)
        );
    }
}

/// What timer ticks follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickTime {
    /// The records' time: a replay runs the ticks its records' day would
    /// have had, exactly between the records before and after each.
    Records,
    /// The wall clock, while listening.
    WallClock,
}

/// The tick kinds that come every so many minutes, and how many.
const EVERY_MINUTES: [(TickKind, i64); 6] = [
    (TickKind::Minute, 1),
    (TickKind::FiveMinutes, 5),
    (TickKind::TenMinutes, 10),
    (TickKind::FifteenMinutes, 15),
    (TickKind::ThirtyMinutes, 30),
    (TickKind::Hour, 60),
];

/// When the next ticks are due.
#[derive(Debug)]
struct Ticker {
    time: TickTime,
    /// A replay's `replay.ticks_until` (seconds), given after its last
    /// record.
    until: Option<i64>,
    /// `timers.utc_offset`: where hours and days begin.
    offset_minutes: i16,
    /// The last minute (since the epoch, UTC) whose boundary has passed;
    /// `None` before the first record (or wall-clock reading).
    last_minute: Option<i64>,
}

impl ModuleStage {
    /// The stage over initialised modules; `clock` is the one they were made
    /// with; ticks follow the records' time until told otherwise, with
    /// hours and days beginning in `offset_minutes` east of UTC; records
    /// further than `max_gap_minutes` from the clock do not move it (see
    /// [`ClockGuard`]).
    pub fn new(
        modules: Vec<ModuleInstance>,
        clock: StreamClock,
        offset_minutes: i16,
        max_gap_minutes: u32,
    ) -> Self {
        ModuleStage {
            modules,
            clock,
            ticker: Ticker {
                until: None,
                time: TickTime::Records,
                offset_minutes,
                last_minute: None,
            },
            persistence: None,
            outbox: Outbox::default(),
            guard: ClockGuard::new(max_gap_minutes),
            receipts: Receipts::default(),
            router: None,
            handing_over: None,
        }
    }

    /// The run ends without the modules' statistics once `flag` is set (a
    /// partition handed over: the next owner's run goes on counting and
    /// gives them).
    pub fn no_statistics_once(&mut self, flag: Arc<std::sync::atomic::AtomicBool>) {
        self.handing_over = Some(flag);
    }

    /// Whether the run's end gives the modules' statistics.
    fn statistics_at_end(&self) -> bool {
        !self
            .handing_over
            .as_ref()
            .is_some_and(|flag| flag.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Send the instances' keyed messages through `router` (a worker's
    /// partition) rather than back to themselves.
    pub fn route_keyed_to(&mut self, router: Box<dyn KeyedRouter>) {
        self.router = Some(router);
    }

    /// After a batch: hand each instance the keyed messages the batch
    /// carries for it (released by the partition's merge), then route what
    /// the instances sent, to the partitions owning the keys, or, in one
    /// process, back to the instance that sent it (a module built without
    /// the SDK; the SDK delivers to itself).
    pub fn exchange(&mut self, builder: &mut BatchBuilder) -> Result<(), Aborted> {
        let keyed = std::mem::take(builder.keyed_mut());
        if !keyed.is_empty() {
            for module in &mut self.modules {
                let mine: Vec<crate::host::KeyedMessage> = keyed
                    .iter()
                    .filter(|(instance, _)| *instance == module.name)
                    .map(|(_, message)| message.clone())
                    .collect();
                if !mine.is_empty() {
                    self.outbox.add(module.receive(mine)?);
                }
            }
        }
        let Some(router) = &mut self.router else {
            for module in &mut self.modules {
                let sent = module.take_sent();
                if sent.is_empty() {
                    continue;
                }
                let batch = builder.batch();
                let messages = sent
                    .into_iter()
                    .map(|sent| {
                        let record = usize::try_from(sent.record).unwrap_or(usize::MAX);
                        let time = crate::types::Timestamp {
                            seconds: batch.seconds.get(record).copied().unwrap_or(0),
                            nanoseconds: batch.nanoseconds.get(record).copied().unwrap_or(0),
                            offset_minutes: batch.offset_minutes.get(record).copied().unwrap_or(0),
                        };
                        crate::host::KeyedMessage {
                            key: sent.key,
                            payload: sent.payload,
                            time,
                        }
                    })
                    .collect();
                self.outbox.add(module.receive(messages)?);
            }
            return Ok(());
        };
        let mut sent = Vec::new();
        for module in &mut self.modules {
            sent.extend(
                module
                    .take_sent()
                    .into_iter()
                    .map(|message| (module.name.clone(), message)),
            );
        }
        router.route(sent, builder.batch(), builder.stream_parts());
        Ok(())
    }

    /// The stream clock every instance reads (`run --events` moves it by
    /// the events' time, as records move it).
    pub fn clock(&self) -> &StreamClock {
        &self.clock
    }

    /// Every module instance's declared event types, with its name: what
    /// events read back from a log are typed by (`run --events`).
    pub fn declared_events(&self) -> impl Iterator<Item = (&str, &crate::types::EventDecl)> {
        self.modules.iter().flat_map(|module| {
            module
                .descriptor
                .events
                .iter()
                .map(|decl| (module.name.as_str(), decl))
        })
    }

    /// While listening: keep the records and ticks that come during an
    /// instance's back-off for it ([`ModuleInstance::keep_backlog`]).
    pub fn keep_backlogs(&mut self) {
        for module in &mut self.modules {
            module.keep_backlog();
        }
    }

    /// How long until some instance's backlog can be worked off.
    pub fn backlog_wait(&self) -> Option<Duration> {
        self.modules.iter().filter_map(|m| m.backlog_wait()).min()
    }

    /// Hand every instance that is no longer backing off what waits in
    /// its backlog.
    pub fn catch_up(&mut self) -> Result<(), Aborted> {
        for module in &mut self.modules {
            self.outbox.add(module.catch_up()?);
        }
        Ok(())
    }

    /// Work off every backlog, waiting out back-offs (the end of a run).
    pub fn drain(&mut self) -> Result<(), Aborted> {
        for module in &mut self.modules {
            self.outbox.add(module.drain()?);
        }
        Ok(())
    }

    /// Keep the modules' state with `persistence`, continuing from its
    /// last checkpoint: the stream clock and (following the records' time)
    /// the last tick boundary are where they were when it was committed, so
    /// a run that continues a replay gives the ticks between the two parts.
    pub fn persist(&mut self, persistence: Persistence) {
        if let Some(checkpoint) = &persistence.restored {
            // A run that stopped before any record (a worker's partition
            // let go at once) left the clock unset: nothing to guard.
            if checkpoint.clock.seconds != 0 || checkpoint.clock.nanoseconds != 0 {
                self.clock.set(checkpoint.clock);
                self.guard.start();
            }
            self.ticker.last_minute = checkpoint.last_record_minute;
            tracing::info!(
                source = %checkpoint.source,
                position = checkpoint.position,
                records = checkpoint.records,
                clock = %crate::record::time::format_utc(checkpoint.clock.seconds),
                "continuing from the state checkpoint after record {} of {}",
                checkpoint.position,
                checkpoint.source
            );
        }
        self.persistence = Some(persistence);
    }

    /// Have every checkpoint copied to `replica` before it counts (a
    /// worker's partition); nothing without state.
    pub fn replicate_to(&mut self, replica: Box<dyn Replica>) {
        if let Some(persistence) = &mut self.persistence {
            persistence.replicate_to(replica);
        }
    }

    /// Name what the records come from, for the checkpoints.
    /// A run that goes on reading the source its checkpoint names starts
    /// at the checkpoint's position: if it processes nothing (a worker's
    /// partition with no new records, a `--continue` with nothing left),
    /// its last checkpoint must not say that it is back at the start.
    pub fn set_source(&mut self, source: &str) {
        if let Some(persistence) = &mut self.persistence {
            source.clone_into(&mut persistence.source);
            if let Some(restored) = &persistence.restored
                && restored.source == source
            {
                persistence.position = restored.position;
            }
        }
    }

    /// The checkpoint this run continued from, if any.
    pub fn restored(&self) -> Option<&Checkpoint> {
        self.persistence.as_ref()?.restored.as_ref()
    }

    /// How long until a checkpoint is due; `None` when nothing changed
    /// since the last (or state is not kept).
    pub fn checkpoint_due(&self) -> Option<Duration> {
        let persistence = self.persistence.as_ref()?;
        let due = persistence.changed.then(|| {
            persistence
                .interval
                .saturating_sub(persistence.last_commit.elapsed())
        })?;
        // A checkpoint covers only records every instance has processed:
        // it waits for backlogs to be worked off.
        Some(self.backlog_wait().map_or(due, |wait| due.max(wait)))
    }

    /// Ask every module for its changes and commit them all at once, with
    /// the stream position. A commit that fails is logged and its writes
    /// kept for the next. Not while an instance's backlog holds records:
    /// the checkpoint waits until they are processed.
    pub fn checkpoint(&mut self) -> Result<(), Aborted> {
        if self.backlog_wait().is_some() {
            return Ok(());
        }
        let Some(persistence) = &mut self.persistence else {
            return Ok(());
        };
        for module in &mut self.modules {
            self.outbox.add(module.checkpoint()?);
        }
        if !self.outbox.settle() {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            clock: self.clock.now(),
            last_record_minute: match self.ticker.time {
                TickTime::Records => self.ticker.last_minute,
                TickTime::WallClock => None,
            },
            source: persistence.source.clone(),
            position: persistence.position,
            records: persistence.records,
            written_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
            files: persistence.inputs.files.clone(),
            journal_cursor: persistence.inputs.journal_cursor.clone(),
            exchange: persistence.inputs.exchange.clone(),
        };
        let commits: Vec<InstanceCommit<'_>> = self
            .modules
            .iter()
            .zip(&persistence.owners)
            .filter_map(|(module, owner)| {
                Some(InstanceCommit {
                    instance: &module.name,
                    owner: owner.as_ref()?,
                    writes: &module.state().pending,
                })
            })
            .collect();
        let started = Instant::now();
        // Taken after `settle`: every delivery the covered events made is in.
        let outbox = persistence
            .outbox
            .as_ref()
            .map(crate::delivery::Journal::take)
            .unwrap_or_default();
        let result = persistence.store.commit(&commits, &checkpoint, &outbox);
        drop(commits);
        persistence.last_commit = Instant::now();
        persistence.changed = false;
        let replicated = match (&result, &mut persistence.replica) {
            (Ok(_), Some(replica)) => replica.replicate(&persistence.store, &checkpoint),
            _ => Ok(()),
        };
        match result {
            Ok(growth) => {
                match replicated {
                    Ok(()) => {
                        persistence.failing = false;
                        // What the receipts stand for is on disk now (and
                        // in the replica).
                        std::mem::take(&mut self.receipts).deliver();
                    }
                    Err(ReplicaError::Retry(error)) => {
                        persistence.failing = true;
                        tracing::error!(
                            "state checkpoint committed here but not copied ({error}); what it covers is acknowledged after the next"
                        );
                    }
                    Err(ReplicaError::Lost(error)) => {
                        return Err(Aborted {
                            instance: persistence.source.clone(),
                            reason: error,
                        });
                    }
                }
                let mut growth = growth.into_iter();
                for (module, owner) in self.modules.iter_mut().zip(&persistence.owners) {
                    if owner.is_some() {
                        module.state_committed(growth.next().unwrap_or(0));
                    }
                }
                crate::metrics::registry().checkpoint(checkpoint.position, checkpoint.written_at);
                tracing::debug!(
                    position = checkpoint.position,
                    micros = started.elapsed().as_micros(),
                    "state checkpoint committed"
                );
            }
            Err(error) => {
                persistence.failing = true;
                if let Some(journal) = &persistence.outbox {
                    journal.put_back(outbox);
                }
                tracing::error!(
                    "state checkpoint failed (its changes are kept for the next): {error}"
                );
            }
        }
        Ok(())
    }

    /// Followed files and the journal are read this far once the batch
    /// just processed is: the next checkpoint says so.
    pub fn mark_inputs(&mut self, marks: crate::state_store::InputMarks) {
        if let Some(persistence) = &mut self.persistence {
            persistence.inputs = marks;
            persistence.changed = true;
        }
    }

    /// Keep the receipts of a processed batch until its messages are safe.
    pub fn hold_receipts(&mut self, mut receipts: Receipts) {
        if receipts.is_empty() {
            return;
        }
        self.receipts.append(&mut receipts);
        if let Some(persistence) = &mut self.persistence {
            // Even a batch of unparsable messages needs a commit to answer.
            persistence.changed = true;
        }
    }

    /// Whether receipts wait for the next checkpoint (state is kept).
    /// (Not while commits fail: they are tried again at the interval.)
    pub fn receipts_wait_for_checkpoint(&self) -> bool {
        self.persistence
            .as_ref()
            .is_some_and(|persistence| !persistence.failing)
            && !self.receipts.is_empty()
    }

    /// Without state, pass the receipts held on to the handler thread, to
    /// be delivered once the events before them are handled; not while an
    /// instance's backlog still holds records (their events are not even
    /// made yet). With state, a checkpoint delivers them.
    pub fn release_receipts(&mut self) {
        if self.persistence.is_none() && !self.receipts.is_empty() && self.backlog_wait().is_none()
        {
            let receipts = std::mem::take(&mut self.receipts);
            self.outbox.add_receipts(receipts);
        }
    }

    /// Commit what changed in the handlers' outboxes since the last
    /// checkpoint (after a run's end, for what the courier did since).
    pub fn commit_outbox(&mut self) {
        let Some(persistence) = &mut self.persistence else {
            return;
        };
        let Some(journal) = &persistence.outbox else {
            return;
        };
        let changes = journal.take();
        if changes.is_empty() {
            return;
        }
        if let Err(error) = persistence.store.commit_outbox(&changes) {
            tracing::error!(
                "cannot record the deliveries done since the last checkpoint ({error}); the next run sends them again"
            );
        }
    }

    /// Take the receipts held (at the end of a run, to drop them).
    pub fn take_receipts(&mut self) -> Receipts {
        std::mem::take(&mut self.receipts)
    }

    /// Make ticks follow `time`.
    pub fn set_tick_time(&mut self, time: TickTime) {
        self.ticker.time = time;
        self.ticker.last_minute = None;
    }

    /// What ticks follow.
    pub fn tick_time(&self) -> TickTime {
        self.ticker.time
    }

    /// Hand a batch to every module, in app order; their events go to the
    /// handlers in the order they were dispatched. `latest` is the batch's newest
    /// record's time: the stream clock moves there. Following the records'
    /// time, the ticks of every boundary the records cross are given
    /// between the records before and after it.
    pub fn process(&mut self, batch: &RecordBatch, latest: Timestamp) -> Result<(), Aborted> {
        if let Some(persistence) = &mut self.persistence {
            persistence.changed = true;
            persistence.records += batch.positions.len() as u64;
            if let Some(&last) = batch.positions.last() {
                persistence.position = last;
            }
            if !persistence.first_seen {
                persistence.first_seen = true;
                warn_if_older(persistence.restored.as_ref(), batch);
            }
        }
        let moves = self
            .guard
            .judge(&batch.seconds, &batch.positions, self.clock.now().seconds);
        let latest = match &moves {
            None => latest,
            Some(moves) => self.last_moving(batch, 0..moves.len(), moves),
        };
        if self.ticker.time == TickTime::Records && self.modules.iter().any(|m| m.timers().any()) {
            return self.process_between_ticks(batch, latest, moves.as_deref());
        }
        self.process_all(batch, latest)
    }

    /// The time of the last record in `range` that may move the clock
    /// (`moves`), or the clock's time if none may.
    fn last_moving(
        &self,
        batch: &RecordBatch,
        range: std::ops::Range<usize>,
        moves: &[bool],
    ) -> Timestamp {
        range
            .rev()
            .find(|&index| moves.get(index).copied().unwrap_or(true))
            .map_or_else(
                || self.clock.now(),
                |index| Timestamp {
                    seconds: batch.seconds[index],
                    nanoseconds: batch.nanoseconds[index],
                    offset_minutes: batch.offset_minutes[index],
                },
            )
    }

    /// Records that did not move the stream clock: further than
    /// `timers.max_gap_minutes` from it, and not confirmed by the next.
    pub fn out_of_range(&self) -> u64 {
        self.guard.out_of_range()
    }

    fn process_all(&mut self, batch: &RecordBatch, latest: Timestamp) -> Result<(), Aborted> {
        self.clock.set(latest);
        let mut events: Vec<Dispatched> = Vec::new();
        let mut modules_with_events = 0;
        for module in &mut self.modules {
            let dispatched = module.process(batch)?;
            if dispatched.is_empty() {
                continue;
            }
            modules_with_events += 1;
            if events.is_empty() {
                events = dispatched;
            } else {
                events.extend(dispatched);
            }
        }
        if modules_with_events > 1 {
            // Handlers see the events in record order across modules. Each
            // module's events come in record order already, so this stable
            // sort merges them (and keeps a module's events at one record
            // in their order, modules in app order).
            events.sort_by_key(|event| event.record);
        }
        self.outbox.add(events);
        Ok(())
    }

    /// Split `batch` where its records cross a minute boundary that some
    /// module has a tick for, and give the ticks in between.
    fn process_between_ticks(
        &mut self,
        batch: &RecordBatch,
        latest: Timestamp,
        moves: Option<&[bool]>,
    ) -> Result<(), Aborted> {
        let mut start = 0;
        for (index, &seconds) in batch.seconds.iter().enumerate() {
            if moves.is_some_and(|moves| !moves.get(index).copied().unwrap_or(true)) {
                continue;
            }
            let minute = seconds.div_euclid(60);
            let Some(last) = self.ticker.last_minute else {
                self.ticker.last_minute = Some(minute);
                continue;
            };
            if minute <= last {
                continue;
            }
            if self.any_due(last + 1, minute) {
                if index > start {
                    self.process_part(batch, start..index, latest, moves)?;
                }
                start = index;
                self.give_ticks(last + 1, minute)?;
            }
            self.ticker.last_minute = Some(minute);
        }
        if start < batch.seconds.len() {
            self.process_part(batch, start..batch.seconds.len(), latest, moves)?;
        }
        Ok(())
    }

    /// Hand the records in `range` of `batch` to every module; the stream
    /// clock moves to the last of them that may move it (`moves`).
    fn process_part(
        &mut self,
        batch: &RecordBatch,
        range: std::ops::Range<usize>,
        latest: Timestamp,
        moves: Option<&[bool]>,
    ) -> Result<(), Aborted> {
        if range.start == 0 && range.end == batch.seconds.len() {
            return self.process_all(batch, latest);
        }
        let latest = match moves {
            Some(moves) => self.last_moving(batch, range.clone(), moves),
            None => {
                let last = range.end - 1;
                Timestamp {
                    seconds: batch.seconds[last],
                    nanoseconds: batch.nanoseconds[last],
                    offset_minutes: batch.offset_minutes[last],
                }
            }
        };
        let part = crate::record::records(batch, range.clone());
        let sent_before: Vec<usize> = self.modules.iter().map(ModuleInstance::sent_len).collect();
        self.process_all(&part, latest)?;
        // Keyed messages name their records by the whole batch's numbers.
        let base = u32::try_from(range.start).unwrap_or(u32::MAX);
        for (module, from) in self.modules.iter_mut().zip(sent_before) {
            module.rebase_sent(from, base);
        }
        Ok(())
    }

    /// The tick kinds due at the boundary that starts `minute` (minutes
    /// since the epoch, UTC) for a module with `timers`.
    fn due_at(
        offset_minutes: i16,
        minute: i64,
        timers: &crate::host::TimerRequests,
    ) -> impl Iterator<Item = TickKind> + '_ {
        let local = minute + i64::from(offset_minutes);
        EVERY_MINUTES
            .into_iter()
            .filter(move |&(kind, every)| local.rem_euclid(every) == 0 && timers.wants(kind))
            .map(|(kind, _)| kind)
            .chain(
                u16::try_from(local.rem_euclid(1440))
                    .ok()
                    .filter(|minute_of_day| timers.daily.contains(minute_of_day))
                    .map(|_| TickKind::Daily),
            )
    }

    /// Whether any module has a tick at a boundary in `first..=last`.
    fn any_due(&self, first: i64, last: i64) -> bool {
        let offset = self.ticker.offset_minutes;
        (first..=last).any(|minute| {
            self.modules
                .iter()
                .any(|m| Self::due_at(offset, minute, m.timers()).next().is_some())
        })
    }

    /// Give every module its ticks at each boundary in `first..=last`, in
    /// order; the stream clock shows each tick's time.
    fn give_ticks(&mut self, first: i64, last: i64) -> Result<(), Aborted> {
        let offset = self.ticker.offset_minutes;
        if last - first >= self.guard.max_gap_minutes() {
            return self.give_ticks_once_per_kind(first, last);
        }
        for minute in first..=last {
            let time = Timestamp {
                seconds: minute * 60,
                nanoseconds: 0,
                offset_minutes: offset,
            };
            let mut clock_set = false;
            for module in &mut self.modules {
                let kinds: Vec<TickKind> = Self::due_at(offset, minute, module.timers()).collect();
                for kind in kinds {
                    if !clock_set && self.ticker.time == TickTime::Records {
                        self.clock.set(time);
                        clock_set = true;
                    }
                    self.outbox.add(module.tick(TimerTick { kind, time })?);
                }
            }
        }
        Ok(())
    }

    /// A gap longer than `timers.max_gap_minutes`: every module gets each
    /// kind of tick it asked for once, at the last boundary of that kind in
    /// `first..=last`, in time order, instead of one per boundary.
    fn give_ticks_once_per_kind(&mut self, first: i64, last: i64) -> Result<(), Aborted> {
        let offset = i64::from(self.ticker.offset_minutes);
        tracing::warn!(
            minutes = last - first + 1,
            "the stream clock crossed a gap longer than timers.max_gap_minutes: each kind of tick is given once for it, not once per boundary"
        );
        // The last boundary at or before `last` that is `rest` (mod
        // `every`) in local minutes.
        let latest = |every: i64, rest: i64| {
            let back = (last + offset - rest).rem_euclid(every);
            Some(last - back).filter(|&minute| minute >= first)
        };
        let mut due: Vec<(i64, usize, TickKind)> = Vec::new();
        for (index, module) in self.modules.iter().enumerate() {
            let timers = module.timers();
            due.extend(
                EVERY_MINUTES
                    .into_iter()
                    .filter(|&(kind, _)| timers.wants(kind))
                    .filter_map(|(kind, every)| Some((latest(every, 0)?, index, kind))),
            );
            if let Some(daily) = timers
                .daily
                .iter()
                .filter_map(|&minute_of_day| latest(1440, i64::from(minute_of_day)))
                .max()
            {
                due.push((daily, index, TickKind::Daily));
            }
        }
        // In time order; at one boundary, modules in app order.
        due.sort_by_key(|&(minute, index, _)| (minute, index));
        for (minute, index, kind) in due {
            let time = Timestamp {
                seconds: minute * 60,
                nanoseconds: 0,
                offset_minutes: self.ticker.offset_minutes,
            };
            if self.ticker.time == TickTime::Records {
                self.clock.set(time);
            }
            self.outbox
                .add(self.modules[index].tick(TimerTick { kind, time })?);
        }
        Ok(())
    }

    /// Following the wall clock: give the ticks of every boundary passed
    /// since the last call (none on the first call, which starts the
    /// clock). Returns how long until the next boundary.
    pub fn wall_clock_ticks(
        &mut self,
        now: std::time::SystemTime,
    ) -> Result<std::time::Duration, Aborted> {
        let since_epoch = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let seconds = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
        let minute = seconds.div_euclid(60);
        let until_next = std::time::Duration::from_secs(60)
            .saturating_sub(std::time::Duration::from_secs(
                seconds.rem_euclid(60).unsigned_abs(),
            ))
            .saturating_sub(std::time::Duration::from_nanos(u64::from(
                since_epoch.subsec_nanos(),
            )));
        if let Some(last) = self.ticker.last_minute
            && minute > last
        {
            if let Some(persistence) = &mut self.persistence {
                persistence.changed = true;
            }
            self.give_ticks(last + 1, minute)?;
        }
        if self.ticker.last_minute.is_none_or(|last| minute > last) {
            self.ticker.last_minute = Some(minute);
        }
        Ok(until_next)
    }

    /// After a replay's last record, run the timers on to `until` (seconds
    /// since the epoch), as if the stream had gone on quietly.
    pub fn set_ticks_until(&mut self, until: Option<i64>) {
        self.ticker.until = until;
    }

    /// The ticks [`ModuleStage::set_ticks_until`] asked for, once the
    /// records are done (the stream clock moves there).
    fn final_ticks(&mut self) -> Result<(), Aborted> {
        let Some(until) = self.ticker.until.take() else {
            return Ok(());
        };
        let minute = until.div_euclid(60);
        if self.ticker.time != TickTime::Records
            || self.ticker.last_minute.is_some_and(|last| minute <= last)
        {
            return Ok(());
        }
        if let Some(persistence) = &mut self.persistence {
            persistence.changed = true;
        }
        let first = self.ticker.last_minute.map_or(minute, |last| last + 1);
        self.give_ticks(first, minute)?;
        self.ticker.last_minute = Some(minute);
        self.clock.set(Timestamp {
            seconds: until,
            nanoseconds: 0,
            offset_minutes: self.ticker.offset_minutes,
        });
        Ok(())
    }

    /// Every module's statistics events.
    pub fn statistics(&mut self, reset: bool) -> Result<(), Aborted> {
        for module in &mut self.modules {
            self.outbox.add(module.statistics(reset)?);
        }
        Ok(())
    }

    /// Records each module did not see (it was disabled, or failed on them
    /// or on records of their batch alone), per module instance.
    pub fn skipped_records(&self) -> impl Iterator<Item = (&str, u64)> {
        self.modules
            .iter()
            .map(|m| (m.name.as_str(), m.skipped_records()))
    }

    /// Records each module did not see because its backlog was full while
    /// it backed off (listening), per module instance.
    pub fn dropped_records(&self) -> impl Iterator<Item = (&str, u64)> {
        self.modules
            .iter()
            .map(|m| (m.name.as_str(), m.dropped_records()))
    }

    /// Events refused by validation so far, per module instance.
    pub fn rejected_events(&self) -> impl Iterator<Item = (&str, u64)> {
        self.modules
            .iter()
            .map(|m| (m.name.as_str(), m.rejected_events()))
    }
}

/// A handler with its filter.
pub struct Route {
    /// The handler instance.
    pub handler: HandlerInstance,
    /// Its filter; none takes every event.
    pub filter: Option<Filter>,
    /// Events the filter failed on (counted as not selected).
    pub filter_errors: u64,
    /// Events handed to the handler (or to its notifier).
    pub delivered: u64,
    /// Groups, deduplicates and rate-limits its events (`notify = {...}`).
    pub notifier: Option<Notifier>,
    /// The same counts, for the metrics.
    metrics: Arc<crate::metrics::HandlerMetrics>,
}

impl Route {
    /// A route with nothing counted yet.
    pub fn new(handler: HandlerInstance, filter: Option<Filter>) -> Self {
        Route {
            metrics: crate::metrics::registry().handler(&handler.name),
            handler,
            filter,
            filter_errors: 0,
            delivered: 0,
            notifier: None,
        }
    }

    /// Whether the filter selects `event`; a filter that fails on it is
    /// counted (and logged the first time) as not selecting it.
    fn selects(&mut self, event: &Dispatched, counters: &mut Counters) -> bool {
        let Some(filter) = &self.filter else {
            return true;
        };
        match filter.matches(event) {
            Ok(selected) => selected,
            Err(message) => {
                self.filter_errors += 1;
                counters.filter_errors += 1;
                self.metrics.filter_errors.fetch_add(1, Ordering::Relaxed);
                if self.filter_errors == 1 {
                    tracing::warn!(handler = %self.handler.name, event = %event.decl.kind, "filter failed; counted as false (further failures are logged at debug level): {message}");
                } else {
                    tracing::debug!(handler = %self.handler.name, event = %event.decl.kind, "filter failed: {message}");
                }
                false
            }
        }
    }

    /// Give events (each with the time it came at) to the notifier, and
    /// the handler what falls due before each and by `now_ms`.
    fn notify(&mut self, events: &[(i64, &Dispatched)], now_ms: i64) -> Result<Handled, Aborted> {
        let Some(notifier) = &mut self.notifier else {
            return Ok(Handled::default());
        };
        let mut messages = Vec::new();
        for &(time, event) in events {
            messages.extend(notifier.due(time));
            notifier.take(&[event], time);
        }
        messages.extend(notifier.due(now_ms));
        self.send(&messages)
    }

    fn send(&mut self, messages: &[Dispatched]) -> Result<Handled, Aborted> {
        if messages.is_empty() {
            return Ok(Handled::default());
        }
        let messages: Vec<&Dispatched> = messages.iter().collect();
        self.handler.handle(&messages)
    }
}

/// Totals over a run, for the closing log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Events dispatched by modules (and accepted).
    pub events: u64,
    /// Event deliveries to handlers, summed over handlers.
    pub delivered: u64,
    /// Filter evaluations that failed (counted as not selected).
    pub filter_errors: u64,
    /// Events a handler reported as failed, or lost to a handler's trap.
    pub handler_failures: u64,
}

/// The event handlers of a running app, each behind its filter.
pub struct HandlerStage {
    routes: Vec<Route>,
    counters: Counters,
    /// What notifiers go by; set by [`run_stages`] from the tick time.
    clock: NotifyClock,
    /// With durable state: where notifiers' state goes for the next
    /// checkpoint.
    journal: Option<crate::delivery::Journal>,
    /// The metrics' count of events per module and kind, as met.
    event_counts: Vec<Arc<crate::metrics::EventCount>>,
}

impl HandlerStage {
    /// The stage over initialised handlers; `journal` takes what their
    /// notifiers hold into each checkpoint (with durable state).
    pub fn new(routes: Vec<Route>, journal: Option<crate::delivery::Journal>) -> Self {
        HandlerStage {
            routes,
            counters: Counters::default(),
            clock: NotifyClock::Records { latest_ms: None },
            journal,
            event_counts: Vec::new(),
        }
    }

    /// Totals so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// SIGHUP came: handlers granted a directory start afresh (see
    /// [`HandlerInstance::reopen`]); one that cannot goes on as it was.
    fn reopen(&mut self) {
        for route in &mut self.routes {
            let name = route.handler.name.clone();
            match route.handler.reopen() {
                Ok(true) => {
                    tracing::info!(handler = %name, "started afresh: its files are opened again")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(handler = %name, "cannot start afresh after SIGHUP, going on as it was: {error}")
                }
            }
        }
    }

    /// Hand `events` to every handler whose filter selects them. A handler
    /// that gets disabled on the way sends its `ComponentDisabled` event to
    /// the others.
    pub fn route(&mut self, events: Vec<Dispatched>) -> Result<(), Aborted> {
        if events.is_empty() {
            return Ok(());
        }
        if crate::signals::take_reopen() {
            self.reopen();
        }
        // Notifiers see time move event by event, so that a wait ends
        // between the events it ends between, whatever the batches.
        let times = if !self.routes.iter().any(|route| route.notifier.is_some()) {
            Vec::new()
        } else if self.clock == NotifyClock::Wall {
            // One reading of the wall clock for the whole part.
            vec![self.clock.now_ms().unwrap_or(0); events.len()]
        } else {
            events
                .iter()
                .map(|event| {
                    self.clock.observe(std::slice::from_ref(event));
                    self.clock.now_ms().unwrap_or(0)
                })
                .collect()
        };
        let events: Vec<&Dispatched> = events.iter().collect();
        self.counters.events += events.len() as u64;
        self.count_kinds(&events);
        let mut disabled = Vec::new();
        for route in &mut self.routes {
            if !route.handler.is_running() {
                continue;
            }
            let handled = if route.notifier.is_some() {
                let mut selected = Vec::new();
                for (&event, &time) in events.iter().zip(&times) {
                    if route.selects(event, &mut self.counters) {
                        selected.push((time, event));
                    }
                }
                route.delivered += selected.len() as u64;
                route.notify(&selected, times.last().copied().unwrap_or(0))?
            } else if route.filter.is_none() {
                route.delivered += events.len() as u64;
                route.handler.handle(&events)?
            } else {
                let mut selected = Vec::new();
                for &event in &events {
                    if route.selects(event, &mut self.counters) {
                        selected.push(event);
                    }
                }
                route.delivered += selected.len() as u64;
                route.handler.handle(&selected)?
            };
            self.counters.handler_failures += handled.failures as u64;
            route
                .metrics
                .events
                .store(route.delivered, Ordering::Relaxed);
            route
                .metrics
                .failures
                .fetch_add(handled.failures as u64, Ordering::Relaxed);
            disabled.extend(handled.disabled);
        }
        self.counters.delivered = self.routes.iter().map(|r| r.delivered).sum();
        self.route(disabled)
    }

    /// Count `events` per module and kind for the metrics. The kinds are
    /// few (those the modules declare): a short list, searched in order.
    fn count_kinds(&mut self, events: &[&Dispatched]) {
        for event in events {
            let known = self
                .event_counts
                .iter()
                .find(|count| count.is(&event.module, &event.decl.kind));
            let count = match known {
                Some(count) => count,
                None => {
                    let count = crate::metrics::registry().events(&event.module, &event.decl.kind);
                    self.event_counts.push(count);
                    &self.event_counts[self.event_counts.len() - 1]
                }
            };
            count.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How long until a notifier's wait ends, following the wall clock;
    /// `None` when nothing waits (or time follows the records, which only
    /// events move).
    pub fn next_wake(&self) -> Option<Duration> {
        if self.clock != NotifyClock::Wall {
            return None;
        }
        let due = self
            .routes
            .iter()
            .filter_map(|route| route.notifier.as_ref()?.next_due())
            .min()?;
        let now = self.clock.now_ms()?;
        let wait = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
        // Not sooner than every few milliseconds, however late it is.
        Some(Duration::from_millis(wait.max(5)))
    }

    /// Hand over what notifiers have due now.
    pub fn notify_due(&mut self) -> Result<(), Aborted> {
        let Some(now) = self.clock.now_ms() else {
            return Ok(());
        };
        self.each_notifier(|notifier| notifier.due(now))
    }

    /// Hand over everything notifiers hold (the run ends), and note their
    /// state for the last commit.
    pub fn flush_notices(&mut self) -> Result<(), Aborted> {
        let now = self.clock.now_ms().unwrap_or(0);
        self.each_notifier(|notifier| notifier.flush(now))?;
        self.save_notices();
        Ok(())
    }

    fn each_notifier(
        &mut self,
        mut messages: impl FnMut(&mut Notifier) -> Vec<Dispatched>,
    ) -> Result<(), Aborted> {
        let mut disabled = Vec::new();
        for route in &mut self.routes {
            let Some(notifier) = &mut route.notifier else {
                continue;
            };
            let messages = messages(notifier);
            if !route.handler.is_running() {
                continue;
            }
            let handled = route.send(&messages)?;
            self.counters.handler_failures += handled.failures as u64;
            disabled.extend(handled.disabled);
        }
        self.route(disabled)
    }

    /// Put what each notifier holds, where it changed, into the journal the
    /// next checkpoint commits.
    pub fn save_notices(&mut self) {
        let Some(journal) = &self.journal else {
            return;
        };
        for route in &mut self.routes {
            if let Some(stored) = route.notifier.as_mut().and_then(Notifier::save) {
                journal.note_notices(&route.handler.name, stored);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::TimerRequests;

    fn kinds(offset: i16, minute: i64, timers: &TimerRequests) -> Vec<TickKind> {
        ModuleStage::due_at(offset, minute, timers).collect()
    }

    #[test]
    fn ticks_fall_on_the_boundaries_of_the_configured_offset() {
        let mut timers = TimerRequests::default();
        for kind in [
            TickKind::Minute,
            TickKind::FiveMinutes,
            TickKind::TenMinutes,
            TickKind::FifteenMinutes,
            TickKind::ThirtyMinutes,
            TickKind::Hour,
        ] {
            timers.ask(kind);
        }
        timers.daily.insert(0);
        // 2023-02-21T00:00Z in minutes since the epoch.
        let midnight = 19_409 * 1440;
        assert_eq!(
            kinds(0, midnight, &timers),
            [
                TickKind::Minute,
                TickKind::FiveMinutes,
                TickKind::TenMinutes,
                TickKind::FifteenMinutes,
                TickKind::ThirtyMinutes,
                TickKind::Hour,
                TickKind::Daily
            ]
        );
        assert_eq!(
            kinds(0, midnight + 45, &timers),
            [
                TickKind::Minute,
                TickKind::FiveMinutes,
                TickKind::FifteenMinutes
            ]
        );
        // India: hours begin at :30 UTC, the day at 18:30Z.
        assert_eq!(
            kinds(330, midnight, &timers).last(),
            Some(&TickKind::ThirtyMinutes)
        );
        assert_eq!(
            kinds(330, midnight - 330, &timers).last(),
            Some(&TickKind::Daily)
        );
        // Only what was asked for.
        let mut hourly = TimerRequests::default();
        hourly.ask(TickKind::Hour);
        assert_eq!(kinds(0, midnight + 1, &hourly), []);
        assert_eq!(kinds(0, midnight + 60, &hourly), [TickKind::Hour]);
    }
}
