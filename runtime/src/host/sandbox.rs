//! What one instance may do, made into stores: its WASI context (nothing
//! granted by default), its limits, and the epoch ticker that enforces the
//! time a call may take.

use super::IntoAnyhow as _;
use super::files::DirQuota;
use super::guest_log::{GuestLog, GuestOutput, WholeLines};
use super::state::{InstanceLimits, InstanceState, StreamClock};
use crate::app::{DirMode, InstanceSpec, Limits, NetworkPattern};
use crate::metrics::InstanceMetrics;
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// How often the engine's epoch advances: the granularity of call time
/// limits. Checking the epoch costs guests a few per cent; ticking costs
/// the host nothing measurable.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A directory granted to an instance, resolved to a host path.
#[derive(Debug, Clone)]
pub struct GrantedDir {
    /// Where it is.
    pub path: PathBuf,
    /// Whether it may be written.
    pub mode: DirMode,
    /// Disk the instance may use in it, bytes.
    pub quota_bytes: u64,
}

/// What an instance may touch beyond its own memory, resolved to host paths.
#[derive(Debug, Clone, Default)]
pub struct ResolvedGrants {
    /// A directory, seen by the guest as its current directory.
    pub dir: Option<GrantedDir>,
    /// Outbound destinations it may connect or send to.
    pub network: Vec<NetworkPattern>,
    /// The granted secrets with their values.
    pub secrets: Arc<BTreeMap<String, String>>,
    /// Whether it writes straight to the runtime's standard output.
    pub stdout: bool,
    /// Its outbox, for a handler granted network destinations.
    pub delivery: Option<crate::delivery::Outbox>,
}

/// A call waited in a host call (a WASI sleep or poll, a file, a socket, an
/// HTTP request) past its instance's time limit. Wasm code that runs too
/// long is interrupted by the epoch instead (`Trap::Interrupt`).
#[derive(Debug, thiserror::Error)]
#[error("ran longer than its call time limit ({0} ms), waiting in a host call")]
pub struct CallTimedOut(pub u64);

/// Makes stores for one instance: the first one and every fresh one after a
/// failure, all with the same grants and limits.
#[derive(Clone)]
pub struct Sandbox {
    /// Keeps the epoch ticking for as long as any instance lives; `None`
    /// when call time limits are off.
    ticker: Option<Arc<EpochTicker>>,
    engine: Engine,
    clock: StreamClock,
    name: Arc<str>,
    limits: Limits,
    grants: ResolvedGrants,
    /// The quota of its granted directory, shared by every store made for
    /// the instance (a fresh instance does not get a fresh quota).
    dir_quota: Option<Arc<DirQuota>>,
    /// What its calls cost and how it failed, for the metrics; shared by
    /// every fresh instance after a failure.
    metrics: Arc<InstanceMetrics>,
    /// Whether its engine meters fuel: every call's instructions are then
    /// counted in the metrics.
    count_instructions: bool,
    /// The seed of its random numbers, when runs must repeat exactly.
    random_seed: Option<u64>,
    /// Whether its network grants hold only for the delivery interface:
    /// no socket and no `wasi:http` request reaches the network (while
    /// deliveries are captured).
    offline: bool,
    /// Whether its instances run one partition of a stream (`exchange`).
    partitioned: bool,
}

/// Fuel a metered store starts with: more than any run spends, so that
/// metering counts and never stops a call (time limits do that).
const UNLIMITED_FUEL: u64 = u64::MAX >> 1;

impl Sandbox {
    /// Whether the instance was granted a directory.
    pub fn has_dir(&self) -> bool {
        self.grants.dir.is_some()
    }

    /// The sandbox of the instance `spec` with `grants`.
    pub fn new(
        engine: Engine,
        ticker: Option<Arc<EpochTicker>>,
        clock: StreamClock,
        spec: &InstanceSpec,
        grants: ResolvedGrants,
    ) -> Self {
        Sandbox {
            ticker,
            engine,
            clock,
            name: Arc::from(spec.name.as_str()),
            metrics: crate::metrics::registry().instance(&spec.name, spec.role.noun()),
            limits: spec.limits,
            dir_quota: grants
                .dir
                .as_ref()
                .filter(|dir| dir.mode == DirMode::ReadWrite)
                .map(|dir| DirQuota::new(dir.path.clone(), dir.quota_bytes)),
            grants,
            count_instructions: false,
            random_seed: None,
            offline: false,
            partitioned: false,
        }
    }

    /// This sandbox's instances running one partition of a stream: their
    /// keyed messages go through the host (`exchange.partitioned`).
    pub fn partitioned(mut self, partitioned: bool) -> Self {
        self.partitioned = partitioned;
        self
    }

    /// This sandbox with its network grants holding only for deliveries,
    /// which are captured (`delivery.capture`): nothing else reaches the
    /// network.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// This sandbox counting the instructions its instances run (its
    /// engine must consume fuel), and giving them random numbers from
    /// `random_seed` when one is given.
    pub fn metered(mut self, count_instructions: bool, random_seed: Option<u64>) -> Self {
        self.count_instructions = count_instructions;
        self.random_seed = random_seed;
        self
    }

    /// The instance's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream clock its instances see.
    pub fn clock(&self) -> &StreamClock {
        &self.clock
    }

    /// Its limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Its counters for the metrics.
    pub fn metrics(&self) -> &InstanceMetrics {
        &self.metrics
    }

    /// Epoch ticks one call may run.
    pub fn call_ticks(&self) -> u64 {
        let tick = u64::try_from(EPOCH_TICK.as_millis()).unwrap_or(10).max(1);
        self.limits.call_timeout_ms.div_ceil(tick).max(1)
    }

    /// Run one call into an instance of this sandbox to its end or to the
    /// instance's call time limit, whichever comes first, however the time
    /// is spent. Wasm code past the deadline is interrupted by the epoch;
    /// a call that waits in a host call (a sleep, a poll, a FIFO, a socket)
    /// is abandoned when the timeout fires, a little after the epoch would
    /// have, so that a guest's own loop is reported as such. Either way the
    /// call fails and the store must not be called again: the failure
    /// policy replaces the instance.
    pub fn bounded<R>(
        &self,
        store: &mut Store<InstanceState>,
        call: impl AsyncFnOnce(&mut Store<InstanceState>) -> wasmtime::Result<R>,
    ) -> wasmtime::Result<R> {
        store.set_epoch_deadline(self.call_ticks());
        store.data_mut().dispatched_bytes = 0;
        store.data_mut().triggered_by = crate::types::Dispatched::AFTER_BATCH;
        store.data_mut().exchange.sent_this_call = 0;
        store.data_mut().exchange.bytes_this_call = 0;
        let fuel_before = self.fuel(store);
        let started = std::time::Instant::now();
        let result = if self.ticker.is_none() {
            wasmtime_wasi::runtime::in_tokio(call(&mut *store))
        } else {
            let limit_ms = self.limits.call_timeout_ms;
            let limit = Duration::from_millis(limit_ms).saturating_add(2 * EPOCH_TICK);
            wasmtime_wasi::runtime::in_tokio(async {
                tokio::time::timeout(limit, call(&mut *store))
                    .await
                    .unwrap_or_else(|_| Err(wasmtime::Error::new(CallTimedOut(limit_ms))))
            })
        };
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let metrics = &self.metrics;
        metrics.calls.fetch_add(1, Ordering::Relaxed);
        metrics.call_nanos.fetch_add(nanos, Ordering::Relaxed);
        let data = store.data();
        let memory = data.store_limits.memory_bytes as u64;
        metrics.memory_bytes.store(memory, Ordering::Relaxed);
        metrics
            .peak_memory_bytes
            .fetch_max(memory, Ordering::Relaxed);
        if self.count_instructions {
            let spent = fuel_before.saturating_sub(self.fuel(store));
            metrics.instructions.fetch_add(spent, Ordering::Relaxed);
        }
        metrics
            .state_bytes
            .store(data.state.usage(), Ordering::Relaxed);
        result
    }

    /// The fuel `store` has left, when instructions are counted.
    fn fuel(&self, store: &Store<InstanceState>) -> u64 {
        if self.count_instructions {
            store.get_fuel().unwrap_or(0)
        } else {
            0
        }
    }

    /// A new store: no environment, no arguments, no network, the stream
    /// clock as its only clock, and a directory only if granted. What the
    /// guest writes to standard error, and to standard output unless it was
    /// granted the runtime's (`grants.stdout`: the console handler's job),
    /// becomes its log lines.
    pub fn store(&self) -> anyhow::Result<Store<InstanceState>> {
        let log = GuestLog::new(Arc::clone(&self.name), self.limits.log_lines_per_second);
        let mut wasi = WasiCtxBuilder::new();
        if let Some(seed) = self.random_seed {
            use rand::SeedableRng as _;
            wasi.secure_random(rand::rngs::StdRng::seed_from_u64(seed))
                .insecure_random(rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(1)))
                .insecure_random_seed(u128::from(seed));
        }
        wasi.wall_clock(self.clock.clone())
            .monotonic_clock(self.clock.clone())
            .stderr(GuestOutput::new(Arc::clone(&log), "stderr"));
        if self.grants.stdout {
            wasi.stdout(WholeLines::new());
        } else {
            wasi.stdout(GuestOutput::new(Arc::clone(&log), "stdout"));
        }
        if let Some(GrantedDir {
            path: dir, mode, ..
        }) = &self.grants.dir
        {
            if *mode == DirMode::ReadWrite {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!(
                        "cannot create the directory {} granted to \"{}\"",
                        dir.display(),
                        self.name
                    )
                })?;
            }
            let perms = match mode {
                DirMode::ReadWrite => FsPerms::ReadWrite,
                DirMode::ReadOnly => FsPerms::ReadOnly,
            };
            wasi.preopened_dir(dir, ".", perms)
                .into_anyhow()
                .with_context(|| {
                    format!(
                        "cannot open the directory {} granted to \"{}\"",
                        dir.display(),
                        self.name
                    )
                })?;
        }
        if !self.grants.network.is_empty() && !self.offline {
            let patterns = Arc::new(self.grants.network.clone());
            // TCP and UDP are off unless granted; every address is then
            // checked against the grant.
            wasi.allow_tcp(true)
                .allow_udp(true)
                .socket_addr_check(move |address, usage| {
                    let allowed = outbound_allowed(&patterns, &address, usage);
                    Box::pin(async move { allowed })
                });
        }
        let memory =
            usize::try_from(self.limits.memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(memory)
            .trap_on_grow_failure(true)
            .build();
        let mut state = InstanceState::new(
            Arc::clone(&self.name),
            wasi.build(),
            MeteredLimits::new(store_limits),
            self.clock.clone(),
            InstanceLimits::from(&self.limits),
            log,
        );
        state.secrets = Arc::clone(&self.grants.secrets);
        state.dir_quota = self.dir_quota.clone();
        state.exchange.partitioned = self.partitioned;
        state.http_hooks.patterns = Arc::new(self.grants.network.clone());
        state.http_hooks.offline = self.offline;
        state.delivery = self.grants.delivery.clone();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.store_limits);
        store.set_epoch_deadline(self.call_ticks());
        if self.count_instructions {
            store
                .set_fuel(UNLIMITED_FUEL)
                .into_anyhow()
                .context("cannot meter the instance")?;
        }
        Ok(store)
    }
}

/// An instance's store limits, which also keep the size of its linear
/// memories: every growth (the first allocation included) is asked of the
/// limiter, so its sum is the memory the instance holds, for the metrics.
pub struct MeteredLimits {
    limits: StoreLimits,
    /// Bytes of linear memory granted so far.
    pub memory_bytes: usize,
    /// The last growth granted, taken back if it then failed.
    last_growth: usize,
}

impl MeteredLimits {
    /// `limits`, metered.
    pub fn new(limits: StoreLimits) -> Self {
        MeteredLimits {
            limits,
            memory_bytes: 0,
            last_growth: 0,
        }
    }
}

impl ResourceLimiter for MeteredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.last_growth = desired.saturating_sub(current);
            self.memory_bytes = self.memory_bytes.saturating_add(self.last_growth);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_bytes = self.memory_bytes.saturating_sub(self.last_growth);
        self.last_growth = 0;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Whether a socket may use `address` for `usage` under outbound grants:
/// connecting and sending to a granted destination, and the implicit bind
/// to the wildcard address that connecting and sending do. Listening,
/// accepting and explicit binds are never granted.
fn outbound_allowed(
    patterns: &[NetworkPattern],
    address: &std::net::SocketAddr,
    usage: SocketAddrUse,
) -> bool {
    match usage {
        SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend => {
            patterns.iter().any(|pattern| pattern.allows(address))
        }
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
            address.ip().is_unspecified() && address.port() == 0
        }
        _ => false,
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Start ticking `engine`.
    pub fn start(engine: Engine) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("epoch".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .context("cannot start the epoch thread")?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
