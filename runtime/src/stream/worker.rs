//! A worker's side of the stream: it takes a share of the partitions and
//! runs the app on each, as a run would on a capture, reading the
//! partition's records from a durable pull consumer.
//!
//! **Who processes what.** Workers announce themselves in the app's lease
//! bucket (`w.ID`, renewed every third of `stream.lease_s`; the bucket's
//! entries expire after `stream.lease_s`). Each takes
//! `ceil(partitions / workers)` partitions: a partition is taken by
//! creating its key (`p.N`), which succeeds for one worker only, and held
//! by renewing it. A worker with more than its share lets the extra
//! partitions go (a last checkpoint, then the key deleted); a worker that
//! dies stops renewing, its keys expire, and the others take its
//! partitions.
//!
//! **State.** Each partition is processed through the ordinary pipeline
//! with a state store of its own (a local file, the worker's working
//! copy). After each commit the store is exported
//! ([`StateStore::export`]) into the app's object store, and the
//! partition's entry in the state bucket (`p.N`) is set to name it, by
//! compare-and-set on the entry's revision: a worker that takes a
//! partition over first rewrites the entry, so the old owner, if it is
//! still alive somewhere, can never commit for it again. Only then are
//! the checkpoint's records acknowledged (the consumer acknowledges all
//! before the highest, `AckPolicy::All`). A run also stops publishing and
//! committing by itself once its lease could have run out
//! ([`LeaseFence`]), so that a worker woken from a stall acts for no
//! partition it no longer holds.
//!
//! **Taking over.** The new owner imports the last snapshot and makes the
//! partition's consumer afresh to start right after the checkpoint's
//! message (rather than waiting for the old consumer's acknowledgements
//! to time out). What the old owner processed after its last checkpoint
//! is processed again: its events come twice, at most one checkpoint
//! interval's worth (`state.checkpoint_interval`) plus the batches in
//! flight. Nothing is lost.

use super::codec::{self, Decoded};
use super::exchange::{self, Key, Merge, Parcel};
use super::{Nats, StreamSettings};
use crate::app::App;
use crate::delivery::Courier;
use crate::loader::{self, Purpose};
use crate::pipeline::{BatchSink, ModuleStage, Replica, ReplicaError, run_stages};
use crate::receipts::ReceiptSink;
use crate::state_store::{Checkpoint, StateStore};
use anyhow::{Context as _, anyhow};
use async_nats::jetstream::{consumer, kv, object_store};
use futures_util::StreamExt as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Messages fetched from a partition's consumer at a time.
const FETCH_MESSAGES: usize = 64;

/// How long a fetch waits for messages when the partition has none.
const FETCH_WAIT: Duration = Duration::from_millis(100);

/// What a partition's run is given: the app, and where its state goes.
pub struct WorkerContext<'a> {
    /// The app each partition runs.
    pub app: &'a App,
    /// `--option` overrides.
    pub options: &'a [String],
    /// The stream.
    pub settings: &'a StreamSettings,
    /// The run directory (`system.run_dir`).
    pub run_dir: PathBuf,
    /// What a run does at its end (courier, outbox, instance reports).
    pub finish: fn(&mut ModuleStage, Option<&Courier>),
}

/// The app's buckets in JetStream, named after the stream and the app.
#[derive(Clone)]
struct Buckets {
    /// Workers' heartbeats (`w.ID`) and partitions' leases (`p.N`).
    leases: kv::Store,
    /// Each partition's latest snapshot (`p.N`).
    states: kv::Store,
    /// The snapshots.
    snapshots: object_store::ObjectStore,
    /// The app's exchange stream of keyed messages between partitions.
    exchange_stream: String,
    /// Its subjects, without the partition: `NAME.exchange.APP`.
    exchange_subject: String,
}

/// A name fit for a bucket, consumer or key: `text` with anything but
/// letters, digits, `-` and `_` made `_`.
fn token(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Buckets {
    /// The buckets of `app` on `settings`'s stream, made if missing.
    fn open(nats: &Nats, settings: &StreamSettings, app: &str) -> anyhow::Result<Buckets> {
        let prefix = bucket_prefix(settings, app);
        let lease = settings.lease;
        nats.block_on(async {
            let jetstream = &nats.jetstream;
            let leases = key_value(
                jetstream,
                &format!("{prefix}-leases"),
                "correlator workers and who holds which partition",
                lease,
            )
            .await
            .with_context(|| {
                format!(
                    "cannot open or make the key-value bucket {prefix}-leases (is stream.lease_s the same on every worker?)"
                )
            })?;
            let states = key_value(
                jetstream,
                &format!("{prefix}-state"),
                "the latest state snapshot of each partition",
                Duration::ZERO,
            )
            .await
            .with_context(|| format!("cannot open or make the key-value bucket {prefix}-state"))?;
            let snapshots = jetstream
                .create_object_store(object_store::Config {
                    bucket: format!("{prefix}-snapshots"),
                    description: Some("partitions' state snapshots".into()),
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot open or make the object store {prefix}-snapshots"))?;
            let exchange_stream = format!("{prefix}-exchange");
            let exchange_subject = format!("{}.exchange.{}", settings.name, token(app));
            jetstream
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: exchange_stream.clone(),
                    description: Some("correlator: keyed messages between partitions".into()),
                    subjects: vec![format!("{exchange_subject}.*")],
                    max_age: settings.max_age,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot open or make the stream {exchange_stream}"))?;
            Ok(Buckets {
                leases,
                states,
                snapshots,
                exchange_stream,
                exchange_subject,
            })
        })
    }
}

/// The key-value bucket `bucket`, made if missing, its entries expiring
/// after `max_age` (zero: never). The stream is made here as a key-value
/// bucket's is, rather than by `create_key_value`, which first reads
/// account information in a form nats-server 2.9 (Debian's) does not
/// give.
async fn key_value(
    jetstream: &async_nats::jetstream::Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> anyhow::Result<kv::Store> {
    use async_nats::jetstream::stream;
    jetstream
        .get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.to_owned()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .context("cannot make its stream")?;
    jetstream
        .get_key_value(bucket)
        .await
        .context("cannot open it")
}

/// What the names of `app`'s buckets on `settings`'s stream start with.
fn bucket_prefix(settings: &StreamSettings, app: &str) -> String {
    format!("{}-{}", settings.name, token(app))
}

/// For `correlator check`: the stream, and for a worker's app who holds
/// each partition and where its state stands; nothing is made or changed.
pub fn describe(nats: &Nats, settings: &StreamSettings, app: &str) -> anyhow::Result<Vec<String>> {
    let prefix = bucket_prefix(settings, app);
    nats.block_on(async {
        let mut lines = Vec::new();
        let mut stream = match nats.jetstream.get_stream(&settings.name).await {
            Ok(stream) => stream,
            Err(error) => {
                lines.push(format!(
                    "stream {}: not there yet ({error}); the first front-end or worker makes it with {} partitions",
                    settings.name, settings.partitions
                ));
                return Ok(lines);
            }
        };
        let info = stream
            .info()
            .await
            .with_context(|| format!("cannot read stream {}", settings.name))?;
        let described = info.config.description.clone().unwrap_or_default();
        if described != settings.description() {
            anyhow::bail!(
                "stream {} says \"{described}\", and this app expects \"{}\": every front-end and worker must have the same stream.partitions",
                settings.name,
                settings.description()
            );
        }
        lines.push(format!(
            "stream {}: {} partitions, {} messages ({} bytes), sequences {} to {}",
            settings.name,
            settings.partitions,
            info.state.messages,
            info.state.bytes,
            info.state.first_sequence,
            info.state.last_sequence
        ));
        if settings.role != super::Role::Work {
            return Ok(lines);
        }
        let leases = nats.jetstream.get_key_value(format!("{prefix}-leases")).await.ok();
        let states = nats.jetstream.get_key_value(format!("{prefix}-state")).await.ok();
        let (Some(leases), Some(states)) = (leases, states) else {
            lines.push(format!("workers of app {app}: none has started yet"));
            return Ok(lines);
        };
        let workers = count_workers(&nats.jetstream, &leases).await?;
        lines.push(format!("workers of app {app}: {workers} alive"));
        for partition in 0..settings.partitions {
            let key = format!("p.{partition}");
            let holder = match leases.get(key.as_str()).await {
                Ok(Some(holder)) => String::from_utf8_lossy(&holder).into_owned(),
                _ => "no one".to_owned(),
            };
            let state = match states.get(key.as_str()).await {
                Ok(Some(value)) => match serde_json::from_slice::<Pointer>(&value) {
                    Ok(Pointer {
                        snapshot: Some(_),
                        bytes,
                        position,
                        ..
                    }) => format!("state after message {position} ({bytes} bytes)"),
                    Ok(_) => "no state yet".to_owned(),
                    Err(error) => format!("state entry damaged ({error})"),
                },
                _ => "no state yet".to_owned(),
            };
            lines.push(format!("partition {partition}: held by {holder}, {state}"));
        }
        Ok(lines)
    })
}

/// A partition this worker holds.
struct Held<'scope> {
    /// The lease entry's revision, for the next renewal.
    revision: u64,
    /// Tells its run to stop (a last checkpoint, then the end).
    stop: Arc<AtomicBool>,
    /// Whether its run may still act for it, renewed with the lease.
    fence: Arc<LeaseFence>,
    /// Its run.
    run: std::thread::ScopedJoinHandle<'scope, anyhow::Result<()>>,
    /// It is being let go: its lease is deleted once the run has ended.
    releasing: bool,
}

/// Whether this worker may still act for a partition: until its lease,
/// as last renewed, could have run out on the server (the time the
/// renewal was sent plus `stream.lease_s`: the server counts from when it
/// wrote it, later), or until a commit finds the partition taken over.
/// Once lapsed it stays lapsed, whatever renewal comes late: the run that
/// saw it has dropped what it would have published, and must end without
/// committing again. Monotonic time goes on while the process is stopped,
/// so a worker paused past its lease knows on waking, before it publishes
/// or commits anything.
struct LeaseFence {
    /// `None` once lapsed.
    valid_until: Mutex<Option<Instant>>,
    /// Set when the partition goes to another worker, let go or lost: its
    /// run ends without statistics (the next owner's give them). Shared
    /// with the run's modules.
    handing_over: Arc<AtomicBool>,
}

impl LeaseFence {
    /// A fence for a lease written (created) at `sent`.
    fn new(sent: Instant, lease: Duration) -> LeaseFence {
        LeaseFence {
            valid_until: Mutex::new(Some(sent + lease)),
            handing_over: Arc::default(),
        }
    }

    /// The partition is being let go: its run still makes a last
    /// checkpoint under the lease, but ends as a hand-over.
    fn hand_over(&self) {
        self.handing_over.store(true, Ordering::Relaxed);
    }

    /// The lease was renewed by a request sent at `sent`.
    fn renewed(&self, sent: Instant, lease: Duration) {
        if let Ok(mut valid_until) = self.valid_until.lock()
            && let Some(until) = valid_until.as_mut()
        {
            *until = (*until).max(sent + lease);
        }
    }

    /// Whether the partition is still surely this worker's.
    fn holds(&self) -> bool {
        let Ok(mut valid_until) = self.valid_until.lock() else {
            return false;
        };
        match *valid_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *valid_until = None;
                self.handing_over.store(true, Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    /// Another worker has the partition (a commit found its state entry
    /// rewritten).
    fn lose(&self) {
        if let Ok(mut valid_until) = self.valid_until.lock() {
            *valid_until = None;
        }
        self.handing_over.store(true, Ordering::Relaxed);
    }
}

/// Work on the stream until SIGINT or SIGTERM: take a share of the
/// partitions, run the app on each, hand them over when other workers
/// come, take over those of workers that go.
pub fn run(context: &WorkerContext<'_>, nats: Arc<Nats>) -> anyhow::Result<()> {
    let settings = context.settings;
    nats.records_stream(settings)?;
    let buckets = Buckets::open(&nats, settings, &context.app.name)?;
    let state_dir = context.run_dir.join(state_dir(&context.app.name));
    std::fs::create_dir_all(&state_dir).with_context(|| {
        format!(
            "cannot create {}, where partitions' state is kept while worked on",
            state_dir.display()
        )
    })?;
    let id = worker_id();
    let stop = crate::replay::stop_on_signals()?;
    tracing::info!(
        worker = %id,
        partitions = settings.partitions,
        "working on stream {} for app {}",
        settings.name,
        context.app.name
    );
    crate::service::tell("READY=1\nSTATUS=working");
    let renew_every = settings.lease / 3;
    std::thread::scope(|scope| {
        let mut held: BTreeMap<u32, Held<'_>> = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            if let Err(error) = manage(context, &nats, &buckets, &id, &mut held, scope) {
                tracing::warn!("cannot manage partitions ({error:#}); trying again");
            }
            while started.elapsed() < renew_every && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                // A partition let go is free for others at once.
                end_finished(&nats, &buckets, &mut held);
            }
        }
        tracing::info!("stopping: every partition's run ends with a checkpoint");
        for partition in held.values() {
            partition.stop.store(true, Ordering::Relaxed);
        }
        let mut failed = None;
        for (partition, held) in std::mem::take(&mut held) {
            // Keep the lease while the last checkpoint is made.
            let keep_alive =
                renew_until_done(&nats, &buckets, partition, &id, settings.lease, &held);
            if let Err(error) = join_run(partition, held.run) {
                failed = Some(error);
            }
            release(&nats, &buckets, partition, keep_alive);
        }
        let _ = nats.block_on(buckets.leases.delete(format!("w.{id}")));
        failed.map_or(Ok(()), Err)
    })
}

/// Where a worker keeps its partitions' working copies of their state,
/// within the run directory.
fn state_dir(app: &str) -> PathBuf {
    PathBuf::from(format!("{}.partitions", token(app)))
}

/// This worker's name: host, process and a random part, so that a worker
/// restarted at once with the same process number is still another.
fn worker_id() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let random = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    token(&format!("{host}-{}-{random:08x}", std::process::id()))
}

/// The workers alive: heartbeat entries (`w.ID`) not deleted or expired.
/// Read from the bucket stream's subjects and each entry, in a few
/// requests, rather than by listing the keys through a consumer, which
/// under the workers' steady writes may see an entry twice or never end.
async fn count_workers(
    jetstream: &async_nats::jetstream::Context,
    leases: &kv::Store,
) -> anyhow::Result<u32> {
    let stream = jetstream.get_stream(&leases.stream_name).await?;
    let mut subjects = stream
        .info_with_subjects(format!("{}w.>", leases.prefix))
        .await?;
    let mut keys = std::collections::BTreeSet::new();
    while let Some(subject) = subjects.next().await {
        let (subject, _) = subject?;
        if let Some(key) = subject.strip_prefix(leases.prefix.as_str()) {
            keys.insert(key.to_owned());
        }
    }
    let mut alive = 0;
    for key in keys {
        if let Some(entry) = leases.entry(key).await?
            && entry.operation == kv::Operation::Put
        {
            alive += 1;
        }
    }
    Ok(alive)
}

/// One round: announce this worker, renew its leases, end what was let
/// go, and take or let go of partitions toward this worker's share.
fn manage<'scope>(
    context: &'scope WorkerContext<'_>,
    nats: &Arc<Nats>,
    buckets: &Buckets,
    id: &str,
    held: &mut BTreeMap<u32, Held<'scope>>,
    scope: &'scope std::thread::Scope<'scope, '_>,
) -> anyhow::Result<()> {
    let settings = context.settings;
    nats.block_on(buckets.leases.put(format!("w.{id}"), id.to_owned().into()))
        .context("cannot announce this worker")?;
    end_finished(nats, buckets, held);
    for (partition, partition_held) in held.iter_mut() {
        if !partition_held.fence.holds() {
            // Lost or lapsed (and said so once): its run is ending.
            partition_held.stop.store(true, Ordering::Relaxed);
            continue;
        }
        let sent = Instant::now();
        let renewed = nats.block_on(buckets.leases.update(
            format!("p.{partition}"),
            id.to_owned().into(),
            partition_held.revision,
        ));
        match renewed {
            Ok(revision) => {
                partition_held.revision = revision;
                partition_held.fence.renewed(sent, settings.lease);
            }
            // Someone else wrote the lease: it is theirs.
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::error!(
                    "lost the lease of partition {partition} to another worker; stopping its run"
                );
                partition_held.fence.lose();
                partition_held.stop.store(true, Ordering::Relaxed);
            }
            // The server did not answer: the lease holds until it could
            // have expired.
            Err(error) if partition_held.fence.holds() => {
                tracing::warn!(
                    "cannot renew the lease of partition {partition} ({error}); trying again"
                );
            }
            Err(error) => {
                tracing::error!(
                    "the lease of partition {partition} ran out unrenewed ({error}); stopping its run (another worker may have it)"
                );
                partition_held.fence.lose();
                partition_held.stop.store(true, Ordering::Relaxed);
            }
        }
    }
    let workers = nats
        .block_on(count_workers(&nats.jetstream, &buckets.leases))
        .context("cannot count the workers")?
        .max(1);
    let share = settings.partitions.div_ceil(workers) as usize;
    let working = held.values().filter(|held| !held.releasing).count();
    if working > share {
        // Let go of the last partitions, one a round, so that the others
        // take them over as they come free.
        if let Some((partition, extra)) = held.iter_mut().rev().find(|(_, held)| !held.releasing) {
            tracing::info!(
                "{workers} workers share {} partitions: letting partition {partition} go",
                settings.partitions
            );
            extra.releasing = true;
            extra.fence.hand_over();
            extra.stop.store(true, Ordering::Relaxed);
        }
        return Ok(());
    }
    let mut wanted = share.saturating_sub(working);
    // Start looking at a place of this worker's own, so that workers
    // starting together do not all race for partition 0.
    let first = super::partition_of(id, settings.partitions);
    for step in 0..settings.partitions {
        if wanted == 0 {
            break;
        }
        let partition = (first + step) % settings.partitions;
        if held.contains_key(&partition) {
            continue;
        }
        let sent = Instant::now();
        let created = nats.block_on(
            buckets
                .leases
                .create(format!("p.{partition}"), id.to_owned().into()),
        );
        let revision = match created {
            Ok(revision) => revision,
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => continue,
            Err(error) => {
                tracing::warn!("cannot take partition {partition}: {error}");
                continue;
            }
        };
        tracing::info!("took partition {partition}");
        let stop = Arc::new(AtomicBool::new(false));
        let fence = Arc::new(LeaseFence::new(sent, settings.lease));
        let run = {
            let stop = Arc::clone(&stop);
            let fence = Arc::clone(&fence);
            let nats = Arc::clone(nats);
            let buckets = buckets.clone();
            let id = id.to_owned();
            std::thread::Builder::new()
                .name(format!("partition-{partition}"))
                .spawn_scoped(scope, move || {
                    run_partition(context, &nats, &buckets, &id, partition, &stop, fence)
                })
                .context("cannot start a partition's thread")?
        };
        held.insert(
            partition,
            Held {
                revision,
                stop,
                fence,
                run,
                releasing: false,
            },
        );
        wanted -= 1;
    }
    Ok(())
}

/// Runs that ended (a partition let go, or one whose run failed): their
/// errors logged, their leases deleted.
fn end_finished(nats: &Nats, buckets: &Buckets, held: &mut BTreeMap<u32, Held<'_>>) {
    let ended: Vec<u32> = held
        .iter()
        .filter(|(_, held)| held.run.is_finished())
        .map(|(&partition, _)| partition)
        .collect();
    for partition in ended {
        if let Some(done) = held.remove(&partition) {
            if let Err(error) = join_run(partition, done.run) {
                tracing::error!("{error:#}");
            }
            // A lease lost or lapsed is not this worker's to delete.
            let revision = done.fence.holds().then_some(done.revision);
            release(nats, buckets, partition, revision);
        }
    }
}

/// While `held`'s run makes its last checkpoint, keep renewing
/// `partition`'s lease; returns its last revision (`None` if it was lost).
fn renew_until_done(
    nats: &Nats,
    buckets: &Buckets,
    partition: u32,
    id: &str,
    lease: Duration,
    held: &Held<'_>,
) -> Option<u64> {
    let (mut revision, fence) = (held.revision, &held.fence);
    let mut last = Instant::now();
    while !held.run.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            match nats.block_on(buckets.leases.update(
                format!("p.{partition}"),
                id.to_owned().into(),
                revision,
            )) {
                Ok(next) => {
                    revision = next;
                    fence.renewed(last, lease);
                }
                Err(_) => {
                    fence.lose();
                    return None;
                }
            }
        }
    }
    Some(revision)
}

/// The end of a partition's run: its error, named.
fn join_run(
    partition: u32,
    run: std::thread::ScopedJoinHandle<'_, anyhow::Result<()>>,
) -> anyhow::Result<()> {
    match run.join() {
        Ok(result) => result.with_context(|| format!("partition {partition}")),
        Err(_) => Err(anyhow!("partition {partition}: its run panicked")),
    }
}

/// Give `partition` back: delete its lease, if still this worker's.
fn release(nats: &Nats, buckets: &Buckets, partition: u32, revision: Option<u64>) {
    let Some(revision) = revision else {
        return;
    };
    let key = format!("p.{partition}");
    match nats.block_on(buckets.leases.delete_expect_revision(&key, Some(revision))) {
        Ok(()) => tracing::info!("let partition {partition} go"),
        Err(error) => {
            tracing::warn!("could not delete partition {partition}'s lease ({error}); it expires")
        }
    }
}

/// Where a partition's snapshot is, as its state entry says.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Pointer {
    /// The object holding the latest snapshot; `None` before the first.
    snapshot: Option<String>,
    /// Its size.
    bytes: u64,
    /// The checkpoint's position (stream sequence of its last message).
    position: u64,
    /// The worker that wrote it.
    worker: String,
}

/// Run the app on `partition` until `stop`: restore its state, fence off
/// any earlier owner, make its consumer afresh after the checkpoint, and
/// process its records, committing each checkpoint into JetStream before
/// acknowledging what it covers.
fn run_partition(
    context: &WorkerContext<'_>,
    nats: &Arc<Nats>,
    buckets: &Buckets,
    worker: &str,
    partition: u32,
    stop: &Arc<AtomicBool>,
    lease: Arc<LeaseFence>,
) -> anyhow::Result<()> {
    let settings = context.settings;
    let key = format!("p.{partition}");
    let (pointer, revision) = fence(nats, buckets, &key, worker)?;
    // Relative to the run directory, as `state.file` is.
    let file = state_dir(&context.app.name).join(format!("partition-{partition}.redb"));
    restore(
        nats,
        buckets,
        &pointer,
        &context.run_dir.join(&file),
        &context.app.name,
    )?;
    let mut options = context.options.to_vec();
    options.push("state.enabled=true".into());
    options.push(format!("state.file={}", file.display()));
    let loader::Loaded {
        mut modules,
        mut handlers,
        replay: replay_settings,
        startup_events,
        courier,
        ..
    } = loader::load(
        context.app,
        &options,
        Purpose::Run,
        &loader::Discard {
            instances: Vec::new(),
            all: false,
            modules: false,
        },
    )?;
    handlers.route(startup_events)?;
    let source = format!("stream {} partition {partition}", settings.name);
    modules.set_source(&source);
    let start = match modules.restored() {
        Some(checkpoint) if checkpoint.source == source => checkpoint.position + 1,
        _ => 1,
    };
    modules.replicate_to(Box::new(SnapshotReplica {
        nats: Arc::clone(nats),
        buckets: buckets.clone(),
        key: key.clone(),
        revision,
        worker: worker.to_owned(),
        written: pointer.snapshot,
        commits: 0,
        fence: Arc::clone(&lease),
    }));
    let app = &context.app.name;
    let records = PullReader::new(
        nats,
        &settings.name,
        consumer::pull::Config {
            durable_name: Some(format!("{}-p{partition}-{worker}", token(app))),
            description: Some(format!("correlator app {app}, partition {partition}")),
            filter_subject: settings.records_subject(partition),
            ack_policy: consumer::AckPolicy::All,
            // Acknowledgements come with checkpoints; redelivery is not
            // how a partition goes on (its owner reads on, a new owner
            // starts after the checkpoint).
            ack_wait: Duration::from_secs(3600),
            max_ack_pending: 1_000_000,
            inactive_threshold: ABANDONED_AFTER,
            ..Default::default()
        },
        start,
        Some(FETCH_WAIT),
        format!("partition {partition}'s records"),
    )?;
    tracing::info!(
        "partition {partition}: reading from message {start} of {}",
        settings.records_subject(partition)
    );
    let merge = Merge::new(
        settings.partitions,
        modules
            .restored()
            .and_then(|checkpoint| checkpoint.exchange.as_ref()),
    );
    let exchange = PullReader::new(
        nats,
        &buckets.exchange_stream,
        consumer::pull::Config {
            durable_name: Some(format!("{}-x{partition}-{worker}", token(app))),
            description: Some(format!(
                "correlator app {app}: keyed messages for partition {partition}"
            )),
            filter_subject: format!("{}.{partition}", buckets.exchange_subject),
            // Where to read again is in the checkpoint.
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: ABANDONED_AFTER,
            ..Default::default()
        },
        merge.start_sequence(),
        None,
        format!("partition {partition}'s keyed messages"),
    )?;
    modules.no_statistics_once(Arc::clone(&lease.handing_over));
    modules.route_keyed_to(Box::new(ExchangePublisher {
        nats: Arc::clone(nats),
        subject: buckets.exchange_subject.clone(),
        partitions: settings.partitions,
        partition,
        progress: Key::default(),
        sent_progress: None,
        max_parcel_bytes: nats.max_message_bytes(),
        too_large: 0,
        fence: Arc::clone(&lease),
    }));
    let (receipts, numbers) = ReceiptSink::new();
    let ackers: Arc<Mutex<BTreeMap<u64, async_nats::jetstream::message::Acker>>> = Arc::default();
    let acknowledging = nats.spawn(acknowledge(numbers, Arc::clone(&ackers)));
    let reading = PartitionReader {
        records,
        receipts,
        ackers,
        stop,
        exchange,
        merge,
        partition,
        fence: &lease,
    };
    let result = run_stages(
        &mut modules,
        handlers,
        replay_settings.batch_size,
        move |sink| reading.read(&sink),
        || stop.store(true, Ordering::Relaxed),
    );
    let records = match result {
        Ok((records, _)) => records,
        Err(error) if !lease.holds() => {
            // Not this run's failure: the partition is another worker's
            // now, and that worker processes again what came after the
            // last checkpoint made here.
            let why = match &error {
                crate::pipeline::StageError::Aborted(aborted) => aborted.reason.clone(),
                other => other.to_string(),
            };
            tracing::warn!(
                "partition {partition}: handed over without a last checkpoint ({why}); its next owner processes again what came after the last one"
            );
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    (context.finish)(&mut modules, courier.as_ref());
    drop(modules);
    // Every receipt is delivered or dropped now: the acknowledgements end.
    let _ = nats.block_on(acknowledging);
    tracing::info!("partition {partition}: stopped after {records} records");
    Ok(())
}

/// Read `key`'s state entry and rewrite it, so that whoever held the
/// partition before can no longer commit for it. Returns the entry and
/// the revision this worker's commits must follow.
fn fence(
    nats: &Nats,
    buckets: &Buckets,
    key: &str,
    worker: &str,
) -> anyhow::Result<(Pointer, u64)> {
    nats.block_on(async {
        let entry = buckets
            .states
            .entry(key)
            .await
            .with_context(|| format!("cannot read state entry {key}"))?;
        let (pointer, revision) = match entry {
            Some(entry) if entry.operation == kv::Operation::Put => (
                serde_json::from_slice::<Pointer>(&entry.value)
                    .with_context(|| format!("state entry {key} is damaged"))?,
                Some(entry.revision),
            ),
            Some(entry) => (Pointer::default(), Some(entry.revision)),
            None => (Pointer::default(), None),
        };
        let fenced = Pointer {
            snapshot: pointer.snapshot.clone(),
            bytes: pointer.bytes,
            position: pointer.position,
            worker: worker.to_owned(),
        };
        let value: bytes::Bytes = serde_json::to_vec(&fenced)?.into();
        let revision = match revision {
            Some(revision) => {
                buckets
                    .states
                    .update(key, value, revision)
                    .await
                    .map_err(|error| {
                        anyhow!("another worker wrote state entry {key} first ({error})")
                    })?
            }
            None => buckets.states.create(key, value).await.map_err(|error| {
                anyhow!("another worker made state entry {key} first ({error})")
            })?,
        };
        Ok((pointer, revision))
    })
}

/// Make `local` the partition's state as `pointer` names it (nothing:
/// empty).
fn restore(
    nats: &Nats,
    buckets: &Buckets,
    pointer: &Pointer,
    local: &Path,
    app: &str,
) -> anyhow::Result<()> {
    let Some(name) = &pointer.snapshot else {
        match std::fs::remove_file(local) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| format!("cannot remove {}", local.display()));
            }
        }
        return Ok(());
    };
    let snapshot = nats.block_on(async {
        use tokio::io::AsyncReadExt as _;
        let mut object = buckets
            .snapshots
            .get(name)
            .await
            .map_err(|error| anyhow!("cannot read state snapshot {name}: {error}"))?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .with_context(|| format!("cannot read state snapshot {name}"))?;
        anyhow::Ok(bytes)
    })?;
    StateStore::import(local, app, &snapshot)?;
    tracing::info!(
        "restored state snapshot {name} ({} bytes, written by {} after message {})",
        snapshot.len(),
        pointer.worker,
        pointer.position
    );
    Ok(())
}

/// How long an abandoned consumer (its owner died, or let the partition
/// go) stays on the server: one whose owner reads is never idle that long.
const ABANDONED_AFTER: Duration = Duration::from_secs(300);

/// One of a partition's durable pull consumers (of its records, or of its
/// keyed messages), read in stream order, each message once.
///
/// Each owner reads through a consumer of its own (named after the
/// worker), so that an owner that lost its lease without knowing it (it
/// was paused past it) and makes its consumer afresh can never move the
/// new owner's. The first owner to make one deletes every earlier
/// owner's.
///
/// A pull consumer's deliveries can be lost on the way (the connection
/// drops after the server sent them): the server counts them delivered
/// and would send them again only after `ack_wait`. The reader notices
/// (the consumer's delivery numbers jump, or a pull fails or is not
/// answered) and makes its consumer afresh from the first message it has
/// not read, so that none is passed over and none read twice.
struct PullReader<'a> {
    nats: &'a Nats,
    /// The stream read.
    stream: String,
    /// The consumer's configuration, but for where it starts.
    config: consumer::pull::Config,
    /// `None` while it must be made afresh.
    consumer: Option<consumer::PullConsumer>,
    /// The first stream sequence not yet read.
    next: u64,
    /// The consumer's delivery number of the last message taken.
    delivered: u64,
    /// How long a pull waits when there is nothing to read (`None`: it
    /// takes what is there).
    wait: Option<Duration>,
    /// What is read, for warnings: "partition 3's records".
    what: String,
    warned_at: Option<Instant>,
}

impl<'a> PullReader<'a> {
    /// A reader of `config`'s messages of stream `stream` from message
    /// `start` on, through a consumer made now, earlier owners' (those
    /// with the same description) deleted.
    fn new(
        nats: &'a Nats,
        stream: &str,
        config: consumer::pull::Config,
        start: u64,
        wait: Option<Duration>,
        what: String,
    ) -> anyhow::Result<PullReader<'a>> {
        let description = config.description.clone();
        nats.block_on(async {
            let stream_handle = nats
                .jetstream
                .get_stream(stream)
                .await
                .with_context(|| format!("cannot open stream {stream}"))?;
            let mut consumers = stream_handle.consumers();
            let mut earlier = Vec::new();
            while let Some(info) = consumers.next().await {
                let info = info.with_context(|| format!("cannot list consumers of {stream}"))?;
                if info.config.description == description {
                    earlier.push(info.name);
                }
            }
            for name in earlier {
                let _ = stream_handle.delete_consumer(&name).await;
            }
            anyhow::Ok(())
        })?;
        let mut reader = PullReader {
            nats,
            stream: stream.to_owned(),
            config,
            consumer: None,
            next: start,
            delivered: 0,
            wait,
            what,
            warned_at: None,
        };
        reader.consumer = Some(reader.make()?);
        Ok(reader)
    }

    /// The consumer made afresh (its earlier self deleted: it waits for
    /// acknowledgements that will never come) to deliver from `next` on.
    fn make(&self) -> anyhow::Result<consumer::PullConsumer> {
        let name = self.config.durable_name.clone().unwrap_or_default();
        let config = consumer::pull::Config {
            deliver_policy: if self.next <= 1 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: self.next,
                }
            },
            ..self.config.clone()
        };
        self.nats.block_on(async {
            let stream_handle = self
                .nats
                .jetstream
                .get_stream(&self.stream)
                .await
                .with_context(|| format!("cannot open stream {}", self.stream))?;
            let _ = stream_handle.delete_consumer(&name).await;
            stream_handle
                .create_consumer(config)
                .await
                .with_context(|| format!("cannot make consumer {name}"))
        })
    }

    /// Warn, at most every 10 s while trouble lasts.
    fn warn(&mut self, warning: std::fmt::Arguments<'_>) {
        if self
            .warned_at
            .is_none_or(|at| at.elapsed() > Duration::from_secs(10))
        {
            self.warned_at = Some(Instant::now());
            tracing::warn!("{}: {warning}", self.what);
        }
    }

    /// The messages there are now (or within the reader's wait), each
    /// with its stream sequence, in order, none read before. Empty when
    /// the consumer had to be made afresh.
    fn pull(&mut self) -> Vec<(u64, async_nats::jetstream::Message)> {
        let Some(consumer) = &self.consumer else {
            match self.make() {
                Ok(consumer) => {
                    self.consumer = Some(consumer);
                    self.delivered = 0;
                }
                Err(error) => {
                    self.warn(format_args!(
                        "cannot make its consumer again ({error:#}); trying again"
                    ));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            return Vec::new();
        };
        let fetched = match self.wait {
            Some(wait) => self.nats.block_on(gather(
                consumer
                    .batch()
                    .max_messages(FETCH_MESSAGES)
                    .expires(wait)
                    .messages(),
            )),
            None => self.nats.block_on(gather(
                consumer.fetch().max_messages(FETCH_MESSAGES).messages(),
            )),
        };
        let messages = match fetched {
            Ok(messages) => messages,
            Err(error) => {
                let next = self.next;
                self.warn(format_args!(
                    "cannot fetch ({error}); reading again from message {next}"
                ));
                // What was sent meanwhile may be lost on the way.
                self.consumer = None;
                std::thread::sleep(Duration::from_millis(200));
                return Vec::new();
            }
        };
        let mut fresh = Vec::with_capacity(messages.len());
        for message in messages {
            let Ok((sequence, delivered)) = message
                .info()
                .map(|info| (info.stream_sequence, info.consumer_sequence))
            else {
                continue;
            };
            if delivered != self.delivered + 1 {
                tracing::warn!(
                    "{}: deliveries {} to {} did not arrive; reading again from message {}",
                    self.what,
                    self.delivered + 1,
                    delivered.saturating_sub(1),
                    self.next
                );
                self.consumer = None;
                break;
            }
            self.delivered = delivered;
            // Delivered again (an acknowledgement that timed out): read.
            if sequence < self.next {
                continue;
            }
            self.next = sequence + 1;
            fresh.push((sequence, message));
        }
        fresh
    }
}

/// Reads a partition's records into batches: each message's records with
/// the message's stream sequence as their position, and its receipt,
/// which acknowledges it once a checkpoint covers it; and after each
/// pull, what the exchange releases.
struct PartitionReader<'a> {
    records: PullReader<'a>,
    receipts: Arc<ReceiptSink>,
    ackers: Arc<Mutex<BTreeMap<u64, async_nats::jetstream::message::Acker>>>,
    stop: &'a AtomicBool,
    /// The keyed messages of other partitions for this one (its consumer
    /// unacknowledged: where to read again is in the checkpoint).
    exchange: PullReader<'a>,
    merge: Merge,
    partition: u32,
    /// Reading ends once the partition may be another worker's.
    fence: &'a LeaseFence,
}

impl PartitionReader<'_> {
    /// Read until told to stop or the modules stop; returns how many
    /// records were read.
    fn read(mut self, sink: &BatchSink) -> u64 {
        let mut builder = sink.empty_builder();
        let mut scratch = String::new();
        let mut records = 0;
        while !self.stop.load(Ordering::Relaxed) && self.fence.holds() {
            for (sequence, message) in self.records.pull() {
                let (message, acker) = message.split();
                match codec::decode_records(&message.payload, sequence, &mut builder, &mut scratch)
                {
                    Ok(Decoded::Records(count)) => records += count as u64,
                    Ok(Decoded::Marker(key)) => {
                        let marker = &mut builder.stream_parts_mut().marker;
                        *marker = Some(marker.map_or(key, |earlier| earlier.max(key)));
                    }
                    Err(error) => tracing::error!(
                        "message {sequence} of {}: {error}; its records are passed over",
                        message.subject
                    ),
                }
                builder.receipts_mut().add(&self.receipts, sequence);
                if let Ok(mut ackers) = self.ackers.lock() {
                    ackers.insert(sequence, acker);
                }
                if builder.is_full() && !sink.pass_on(&mut builder) {
                    return records;
                }
            }
            // Woken after a stall past the lease, stop before waiting on a
            // consumer the new owner may have deleted.
            if !self.fence.holds() {
                break;
            }
            self.read_exchange(&mut builder);
            if !sink.pass_on(&mut builder) {
                return records;
            }
        }
        sink.pass_on(&mut builder);
        records
    }

    /// Take what the exchange holds for this partition now, and release
    /// into `builder` what every partition's progress has passed, with
    /// where the checkpoint after it stands.
    fn read_exchange(&mut self, builder: &mut crate::record::BatchBuilder) {
        for (sequence, message) in self.exchange.pull() {
            let parcel = Parcel::decode(&message.payload).unwrap_or_else(|| {
                // Passed over: moving on past it.
                tracing::error!(
                    "partition {}: exchange message {sequence} is not one this correlator reads; passed over",
                    self.partition
                );
                Parcel {
                    from: 0,
                    progress: Key::default(),
                    messages: Vec::new(),
                }
            });
            self.merge.take(sequence, parcel);
        }
        self.merge.release(builder);
        builder.set_marks(crate::state_store::InputMarks {
            exchange: Some(self.merge.mark()),
            ..Default::default()
        });
    }
}

/// How long a pull request may take, whatever the server says: a request
/// the server lost (it restarted) is never answered, and the reader would
/// wait for it for ever.
const PULL_DEADLINE: Duration = Duration::from_secs(3);

/// Every message of a pull request (`request`: a batch or a fetch), or an
/// error if it fails or takes longer than [`PULL_DEADLINE`].
async fn gather<B, E1, E2>(
    request: impl std::future::Future<Output = Result<B, E1>>,
) -> Result<Vec<async_nats::jetstream::Message>, Box<dyn std::error::Error + Send + Sync>>
where
    B: futures_util::Stream<Item = Result<async_nats::jetstream::Message, E2>> + Unpin,
    E1: Into<Box<dyn std::error::Error + Send + Sync>>,
    E2: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let pulled = async {
        let mut batch = request.await.map_err(Into::into)?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(Into::into)?);
        }
        Ok(messages)
    };
    match tokio::time::timeout(PULL_DEADLINE, pulled).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer to a pull request within {} s",
            PULL_DEADLINE.as_secs()
        )
        .into()),
    }
}

/// A partition's keyed messages, published after each batch into the
/// exchange, one parcel per destination partition with this partition's
/// progress; returns once JetStream has every parcel, so that parcels
/// from one partition to another arrive in order and a checkpoint never
/// covers records whose messages are not safe.
struct ExchangePublisher {
    nats: Arc<Nats>,
    subject: String,
    partitions: u32,
    partition: u32,
    /// Every record up to this one is processed.
    progress: Key,
    /// The progress last published.
    sent_progress: Option<Key>,
    /// The largest parcel the NATS server takes.
    max_parcel_bytes: usize,
    /// Keyed messages dropped as larger than that.
    too_large: u64,
    /// Nothing is published once the partition may be another worker's:
    /// that worker sends the same messages again.
    fence: Arc<LeaseFence>,
}

impl crate::pipeline::KeyedRouter for ExchangePublisher {
    fn route(
        &mut self,
        sent: Vec<(String, crate::host::SentMessage)>,
        batch: &crate::types::RecordBatch,
        parts: &crate::record::StreamParts,
    ) {
        if !self.fence.holds() {
            return;
        }
        if let Some(last) = batch.seconds.len().checked_sub(1) {
            let time = codec::record_time(batch, last);
            let origin = parts.origins.get(last).copied().unwrap_or(0);
            self.progress = self.progress.max(Key::record(time, origin, self.partition));
        }
        if let Some(marker) = parts.marker {
            self.progress = self.progress.max(Key {
                partition: self.partition,
                ..marker
            });
        }
        let mut messages = exchange::in_flight(sent, batch, &parts.origins, self.partition);
        if batch.seconds.is_empty() {
            // Sent outside any record (a tick, a keyed message): at the
            // progress, in order.
            for (index, message) in messages.iter_mut().enumerate() {
                message.key = Key {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    ..self.progress
                };
            }
        }
        if messages.is_empty() && self.sent_progress == Some(self.progress) {
            return;
        }
        let mut parcels: Vec<Parcel> = (0..self.partitions)
            .map(|_| Parcel {
                from: self.partition,
                progress: self.progress,
                messages: Vec::new(),
            })
            .collect();
        for message in messages {
            let to = super::partition_of(&message.message.key, self.partitions) as usize;
            parcels[to].messages.push(message);
        }
        // A destination's pieces go one round after another, so that they
        // arrive in order whatever is published again.
        let earlier_progress = self.sent_progress.unwrap_or_default();
        let mut rounds: Vec<Vec<(String, bytes::Bytes)>> = Vec::new();
        for (to, parcel) in parcels.into_iter().enumerate() {
            let (pieces, too_large) = parcel.split(self.max_parcel_bytes, earlier_progress);
            if too_large > 0 {
                self.too_large += too_large as u64;
                tracing::error!(
                    "partition {}: {too_large} keyed messages are larger than the NATS server takes ({} bytes); they are dropped ({} so far)",
                    self.partition,
                    self.max_parcel_bytes,
                    self.too_large
                );
            }
            for (round, piece) in pieces.into_iter().enumerate() {
                if rounds.len() <= round {
                    rounds.push(Vec::new());
                }
                rounds[round].push((format!("{}.{to}", self.subject), piece.encode().into()));
            }
        }
        for payloads in &rounds {
            self.publish_all(payloads);
        }
        self.sent_progress = Some(self.progress);
    }
}

impl ExchangePublisher {
    /// Publish every one of `payloads` (subject, bytes) and wait until
    /// JetStream has each, publishing again what it did not take, for as
    /// long as the partition is this worker's (the run then ends without
    /// committing what these would have covered).
    fn publish_all(&self, payloads: &[(String, bytes::Bytes)]) {
        let jetstream = &self.nats.jetstream;
        let mut backoff = Duration::from_millis(100);
        let mut waiting: Vec<usize> = (0..payloads.len()).collect();
        while !waiting.is_empty() && self.fence.holds() {
            let failed: Vec<usize> = self.nats.block_on(async {
                let mut acks = Vec::new();
                for &to in &waiting {
                    let (subject, payload) = &payloads[to];
                    acks.push((
                        to,
                        jetstream.publish(subject.clone(), payload.clone()).await,
                    ));
                }
                let mut failed = Vec::new();
                for (to, ack) in acks {
                    let acknowledged = match ack {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    if !acknowledged {
                        failed.push(to);
                    }
                }
                failed
            });
            if !failed.is_empty() {
                tracing::warn!(
                    "partition {}: JetStream did not take {} keyed-message parcels; publishing them again in {} ms",
                    self.partition,
                    failed.len(),
                    backoff.as_millis()
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            waiting = failed;
        }
    }
}

/// Acknowledge what checkpoints covered: for each delivery of receipts,
/// the highest message (which, with `AckPolicy::All`, acknowledges every
/// one before it).
async fn acknowledge(
    mut numbers: tokio::sync::mpsc::UnboundedReceiver<Vec<u64>>,
    ackers: Arc<Mutex<BTreeMap<u64, async_nats::jetstream::message::Acker>>>,
) {
    while let Some(numbers) = numbers.recv().await {
        let Some(&highest) = numbers.iter().max() else {
            continue;
        };
        let acker = match ackers.lock() {
            Ok(mut ackers) => {
                let newer = ackers.split_off(&(highest + 1));
                let covered = std::mem::replace(&mut *ackers, newer);
                covered.into_iter().next_back().map(|(_, acker)| acker)
            }
            Err(_) => None,
        };
        if let Some(acker) = acker
            && let Err(error) = acker.ack().await
        {
            tracing::warn!("cannot acknowledge message {highest}: {error}");
        }
    }
}

/// A partition's commits, copied into the app's object store with the
/// state entry naming the latest.
struct SnapshotReplica {
    nats: Arc<Nats>,
    buckets: Buckets,
    /// The partition's state entry.
    key: String,
    /// Its revision as this worker last wrote it.
    revision: u64,
    worker: String,
    /// The snapshot the entry names now, deleted once replaced.
    written: Option<String>,
    commits: u64,
    /// No commit once the partition may be another worker's.
    fence: Arc<LeaseFence>,
}

impl Replica for SnapshotReplica {
    fn replicate(
        &mut self,
        store: &StateStore,
        checkpoint: &Checkpoint,
    ) -> Result<(), ReplicaError> {
        if !self.fence.holds() {
            return Err(ReplicaError::Lost(format!(
                "the lease of {} lapsed: another worker may have taken it over",
                self.key
            )));
        }
        let snapshot = store
            .export()
            .map_err(|error| ReplicaError::Retry(error.to_string()))?;
        self.commits += 1;
        let name = format!("{}-{}-{}", self.key, self.worker, self.commits);
        let pointer = Pointer {
            snapshot: Some(name.clone()),
            bytes: snapshot.len() as u64,
            position: checkpoint.position,
            worker: self.worker.clone(),
        };
        let value: bytes::Bytes = serde_json::to_vec(&pointer)
            .map_err(|error| ReplicaError::Retry(error.to_string()))?
            .into();
        let buckets = &self.buckets;
        let key = &self.key;
        let revision = self.revision;
        let written = self.nats.block_on(async {
            buckets
                .snapshots
                .put(name.as_str(), &mut snapshot.as_slice())
                .await
                .map_err(|error| {
                    ReplicaError::Retry(format!("cannot store snapshot {name}: {error}"))
                })?;
            match buckets.states.update(key, value, revision).await {
                Ok(revision) => Ok(revision),
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    self.fence.lose();
                    let _ = buckets.snapshots.delete(&name).await;
                    Err(ReplicaError::Lost(format!(
                        "another worker has taken over {key}: this worker's state for it is stale"
                    )))
                }
                Err(error) => {
                    let _ = buckets.snapshots.delete(&name).await;
                    Err(ReplicaError::Retry(format!(
                        "cannot update state entry {key}: {error}"
                    )))
                }
            }
        })?;
        self.revision = written;
        if let Some(old) = self.written.replace(name) {
            let _ = self.nats.block_on(self.buckets.snapshots.delete(&old));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn fence_sent(ago: Duration) -> LeaseFence {
        let sent = Instant::now()
            .checked_sub(ago)
            .expect("the machine has been up longer than a lease");
        LeaseFence::new(sent, LEASE)
    }

    fn handing_over(fence: &LeaseFence) -> bool {
        fence.handing_over.load(Ordering::Relaxed)
    }

    #[test]
    fn a_lease_holds_until_its_last_renewal_was_sent_plus_its_length() {
        let fence = fence_sent(Duration::from_secs(8));
        assert!(fence.holds());
        // Renewed by a request sent now: ten more seconds from now.
        fence.renewed(Instant::now(), LEASE);
        assert!(fence.holds());
        // A renewal answered late, sent before the last one, moves nothing.
        fence.renewed(Instant::now() - Duration::from_secs(9), LEASE);
        assert!(fence.holds());
        assert!(!handing_over(&fence));
    }

    #[test]
    fn a_lapsed_lease_stays_lapsed_whatever_renewal_comes_late() {
        // As a worker woken after a stall longer than its lease finds it.
        let fence = fence_sent(Duration::from_secs(11));
        assert!(!fence.holds());
        assert!(handing_over(&fence));
        fence.renewed(Instant::now(), LEASE);
        assert!(!fence.holds());
    }

    #[test]
    fn a_lease_found_taken_is_lost_at_once() {
        let fence = fence_sent(Duration::ZERO);
        fence.lose();
        assert!(!fence.holds());
        assert!(handing_over(&fence));
        fence.renewed(Instant::now(), LEASE);
        assert!(!fence.holds());
    }
}
