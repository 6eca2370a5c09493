//! Instances of modules and handlers, the calls into them, and what happens
//! when a call fails.
//!
//! A trap or a limit hit is not an error the guest returns: it means the
//! instance must stop. Its failure policy ([`Supervisor`]) then decides:
//! make a fresh instance (and retry the failed batch one record or event at
//! a time, so that one poisoned input does not cost the rest of its batch),
//! disable it, or abort the run.

use super::backlog::{Backlog, Work};
use super::bindings::handler::{EventHandler, EventHandlerPre};
use super::bindings::module::{LogicModule, LogicModulePre};
use super::guest_log::{GUEST_LOG_LINE_MAX, shown};
use super::sandbox::{CallTimedOut, Sandbox};
use super::state::{
    EventCatalog, InstanceState, KeyedMessage, LimitExceeded, SentMessage, StateAccess,
};
use super::supervisor::{FAILURE_WINDOW, FAILURES_BEFORE_DISABLE, Supervisor, Verdict};
use crate::app::OnFailure;
use crate::record::single_record;
use crate::types::{
    DeliveredEvent, Descriptor, Dispatched, EventDecl, FieldDecl, FieldValues, RecordBatch,
    Severity, TimerTick, Value, ValueType,
};
use anyhow::bail;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::Store;
use wasmtime::component::{Instance, TypedFunc};

/// The optional export of modules that keep durable state.
const DURABLE_INTERFACE: &str = "correlator:plugin/durable@0.1.0";

/// The optional export of handlers that take their events packed.
const PACKED_HANDLER_INTERFACE: &str = "correlator:plugin/packed-handler@0.1.0";

/// A packed batch buffer grown past this is let go after its call, so that
/// one burst does not keep its memory for the rest of the run.
const PACKED_BUFFER_KEPT: usize = 4 << 20;

/// `packed-handler.handle-packed` of one instance, if it exports it (a
/// component built with the SDK does; one built without may not).
fn packed_handle_of(
    store: &mut Store<InstanceState>,
    instance: &Instance,
) -> wasmtime::Result<Option<wasmtime::component::Func>> {
    let Some(interface) = instance.get_export_index(&mut *store, None, PACKED_HANDLER_INTERFACE)
    else {
        return Ok(None);
    };
    let index = instance
        .get_export_index(&mut *store, Some(&interface), "handle-packed")
        .ok_or_else(|| {
            wasmtime::format_err!("{PACKED_HANDLER_INTERFACE} has no function handle-packed")
        })?;
    let func = instance
        .get_func(&mut *store, index)
        .ok_or_else(|| wasmtime::format_err!("handle-packed is not a function"))?;
    // Check its type once here; every call checks it again (cheaply), as a
    // typed function with a borrowed parameter cannot be kept.
    func.typed::<(&[u8],), (Vec<Result<(), String>>,)>(&*store)?;
    Ok(Some(func))
}

/// Instantiate a handler: its world's bindings and its packed `handle`.
/// Instantiating runs guest code (start functions), so it is bounded like
/// any call.
fn instantiate_handler(
    sandbox: &Sandbox,
    pre: &EventHandlerPre<InstanceState>,
    store: &mut Store<InstanceState>,
) -> wasmtime::Result<(EventHandler, Option<wasmtime::component::Func>)> {
    let instance = sandbox.bounded(store, async |store| {
        pre.instance_pre().instantiate_async(store).await
    })?;
    let bindings = EventHandler::new(&mut *store, &instance)?;
    let packed = packed_handle_of(store, &instance)?;
    Ok((bindings, packed))
}

/// The optional export of modules that correlate by key (`exchange`).
const KEYED_INTERFACE: &str = "correlator:plugin/keyed@0.1.0";

/// An instance's `keyed.receive`.
type KeyedReceive = TypedFunc<(Vec<KeyedMessage>,), ()>;

/// The instance's `keyed.receive`; `None` if it does not export it.
fn keyed_receive_of(
    store: &mut Store<InstanceState>,
    instance: &Instance,
) -> wasmtime::Result<Option<KeyedReceive>> {
    let Some(interface) = instance.get_export_index(&mut *store, None, KEYED_INTERFACE) else {
        return Ok(None);
    };
    let index = instance
        .get_export_index(&mut *store, Some(&interface), "receive")
        .ok_or_else(|| wasmtime::format_err!("{KEYED_INTERFACE} has no function receive"))?;
    Ok(Some(instance.get_typed_func(&mut *store, index)?))
}

/// The functions of the `durable` export of one instance.
#[derive(Clone, Copy)]
struct DurableExports {
    state_version: TypedFunc<(), (u32,)>,
    migrate: TypedFunc<(u32,), (Result<(), String>,)>,
    checkpoint: TypedFunc<(), ()>,
}

impl DurableExports {
    /// The instance's `durable` functions; `None` if it does not export
    /// them (a component built before durable state, or without the SDK).
    fn of(
        store: &mut Store<InstanceState>,
        instance: &Instance,
    ) -> wasmtime::Result<Option<DurableExports>> {
        let Some(interface) = instance.get_export_index(&mut *store, None, DURABLE_INTERFACE)
        else {
            return Ok(None);
        };
        let mut index = |name: &str| {
            instance
                .get_export_index(&mut *store, Some(&interface), name)
                .ok_or_else(|| wasmtime::format_err!("{DURABLE_INTERFACE} has no function {name}"))
        };
        let (state_version, migrate, checkpoint) = (
            index("state-version")?,
            index("migrate")?,
            index("checkpoint")?,
        );
        Ok(Some(DurableExports {
            state_version: instance.get_typed_func(&mut *store, state_version)?,
            migrate: instance.get_typed_func(&mut *store, migrate)?,
            checkpoint: instance.get_typed_func(&mut *store, checkpoint)?,
        }))
    }
}

/// A module's optional exports.
struct OptionalExports {
    durable: Option<DurableExports>,
    keyed: Option<KeyedReceive>,
}

/// Instantiate a module: its world's bindings, its `durable` functions and
/// its `keyed.receive`.
fn instantiate_module(
    sandbox: &Sandbox,
    pre: &LogicModulePre<InstanceState>,
    store: &mut Store<InstanceState>,
) -> wasmtime::Result<(LogicModule, OptionalExports)> {
    let instance = sandbox.bounded(store, async |store| {
        pre.instance_pre().instantiate_async(store).await
    })?;
    let bindings = LogicModule::new(&mut *store, &instance)?;
    let durable = DurableExports::of(store, &instance)?;
    let keyed = keyed_receive_of(store, &instance)?;
    Ok((bindings, OptionalExports { durable, keyed }))
}

/// Records (or events) of one failed batch that may fail again, one by one,
/// before the rest of the batch is given up.
const RETRY_FAILURES_MAX: usize = 3;

/// The run must stop: an instance whose policy is `abort` failed.
#[derive(Debug, thiserror::Error)]
#[error("instance \"{instance}\" failed and its on_failure policy is abort: {reason}")]
pub struct Aborted {
    /// The instance that failed.
    pub instance: String,
    /// Why.
    pub reason: String,
}

/// Longest name a component may declare (its own, an event kind, a field,
/// a configuration key).
const DECLARED_NAME_MAX: usize = 64;

/// Whether `name` is one a component may declare: 1 to
/// [`DECLARED_NAME_MAX`] ASCII letters, digits, `_`, `-` and `.`, starting
/// with a letter or digit. Declared names go into output that people and
/// programs read (log lines, CSV file names and headers, JSON keys,
/// configuration keys), where nothing a component controls may pass for
/// something else.
fn is_safe_declared_name(name: &str) -> bool {
    (1..=DECLARED_NAME_MAX).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Refuse a declared name that is not [`is_safe_declared_name`], saying
/// what it names.
fn check_declared_name(instance: &str, what: &str, name: &str) -> anyhow::Result<()> {
    if is_safe_declared_name(name) {
        return Ok(());
    }
    bail!(
        "instance \"{instance}\" declares {what} \"{}\": declared names must have 1 to {DECLARED_NAME_MAX} \
         letters, digits, '_', '-' and '.', starting with a letter or digit",
        shown(name.as_bytes(), 80)
    )
}

/// Check what a component declared: safe names, unique event kinds, field
/// names and configuration keys.
fn check_descriptor(name: &str, descriptor: &Descriptor) -> anyhow::Result<()> {
    check_declared_name(name, "the component name", &descriptor.name)?;
    for event in &descriptor.events {
        check_declared_name(name, "event type", &event.kind)?;
        for field in &event.fields {
            check_declared_name(
                name,
                &format!("in event type {} the field", event.kind),
                &field.name,
            )?;
        }
    }
    for item in &descriptor.config {
        check_declared_name(name, "configuration item", &item.key)?;
    }
    let mut kinds = HashSet::new();
    for event in &descriptor.events {
        if !kinds.insert(event.kind.as_str()) {
            bail!(
                "instance \"{name}\" declares event type \"{}\" twice",
                event.kind
            );
        }
        let mut fields = HashSet::new();
        for field in &event.fields {
            if !fields.insert(field.name.as_str()) {
                bail!(
                    "instance \"{name}\" declares field \"{}\" of event type \"{}\" twice",
                    field.name,
                    event.kind
                );
            }
        }
    }
    let mut keys = HashSet::new();
    for item in &descriptor.config {
        if item.key.is_empty() || !keys.insert(item.key.as_str()) {
            bail!(
                "instance \"{name}\" declares configuration item \"{}\" twice or empty",
                item.key
            );
        }
    }
    Ok(())
}

/// Why a call failed, in words for the log.
fn failure_reason(error: &wasmtime::Error, sandbox: &Sandbox) -> String {
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return limit.0.clone();
    }
    if let Some(timed_out) = error.downcast_ref::<CallTimedOut>() {
        return timed_out.to_string();
    }
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return match trap {
            wasmtime::Trap::Interrupt => format!(
                "ran longer than its call time limit ({} ms)",
                sandbox.limits().call_timeout_ms
            ),
            wasmtime::Trap::StackOverflow => "overflowed its stack".into(),
            wasmtime::Trap::UnreachableCodeReached => {
                "trapped on unreachable code (a panic or an abort)".into()
            }
            other => format!("trapped: {other}"),
        };
    }
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory") {
        return format!(
            "grew its memory past its limit ({} MiB)",
            sandbox.limits().memory_mib
        );
    }
    text
}

/// The error of a call that failed at start-up: `what` failed, and why,
/// in words.
fn start_up_failed(
    sandbox: &Sandbox,
    what: String,
) -> impl FnOnce(wasmtime::Error) -> anyhow::Error {
    move |error| anyhow::anyhow!("{what}: {}", failure_reason(&error, sandbox))
}

/// The kind of [`disabled_decl`].
pub const DISABLED_KIND: &str = "ComponentDisabled";

/// The event the host dispatches when it disables an instance (see
/// [`disabled_event`]): declared here so that filters are checked against
/// it too.
pub fn disabled_decl() -> EventDecl {
    let field = |name: &str, value_type, description: &str| FieldDecl {
        name: name.into(),
        value_type,
        description: description.into(),
    };
    EventDecl {
        kind: DISABLED_KIND.into(),
        severity: Severity::Error,
        description: "an instance failed too often and was stopped".into(),
        fields: vec![
            field("instance", ValueType::Text, "the instance's name"),
            field("reason", ValueType::Text, "why it was disabled"),
            field("failures", ValueType::Integer, "its recent failures"),
        ],
    }
}

/// The event handlers receive when an instance is disabled.
fn disabled_event(
    sandbox: &Sandbox,
    reason: &str,
    failures: usize,
    time: crate::types::Timestamp,
) -> Dispatched {
    let decl = disabled_decl();
    Dispatched {
        module: Arc::from(sandbox.name()),
        decl: Arc::new(decl),
        time,
        summary: format!("Instance {} was disabled because {reason}", sandbox.name()),
        values: FieldValues::Values(vec![
            Value::Text(sandbox.name().into()),
            Value::Text(reason.into()),
            Value::Integer(i64::try_from(failures).unwrap_or(i64::MAX)),
        ]),
        record: Dispatched::AFTER_BATCH,
    }
}

/// Why `init` did not succeed.
enum InitFailure {
    /// The guest returned an error: its configuration will not do.
    Refused(String),
    /// The guest trapped or hit a limit: its failure policy applies.
    Trapped(String),
}

impl std::fmt::Display for InitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitFailure::Refused(message) => write!(f, "refused to start: {message}"),
            InitFailure::Trapped(reason) => write!(f, "failed in init: {reason}"),
        }
    }
}

/// What the supervisor decided, acted upon.
enum Outcome {
    /// A fresh instance is ready (possibly backing off).
    Restarted,
    /// The instance is stopped; handlers get this event.
    Disabled(Dispatched),
}

/// The host's wall-clock time, in UTC.
fn wall_clock_now() -> crate::types::Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::types::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanoseconds: since_epoch.subsec_nanos(),
        offset_minutes: 0,
    }
}

/// What the failure policy needs of an instance, module or handler alike.
trait Supervised {
    /// `module` or `handler`, for messages about starting.
    const ROLE: &'static str;
    /// `instance` or `handler`, for messages about failing.
    const NOUN: &'static str;
    fn name(&self) -> &str;
    fn supervisor(&mut self) -> &mut Supervisor;
    fn call_init(&mut self) -> Result<(), InitFailure>;
    /// Replace the store with a fresh instance, not yet initialised.
    fn fresh(&mut self) -> Result<(), String>;
    fn sandbox(&self) -> &Sandbox;
    fn now(&self) -> crate::types::Timestamp;
}

/// What a call to `init` came to: success, a refusal, or a trap.
fn init_outcome(
    result: wasmtime::Result<Result<(), String>>,
    sandbox: &Sandbox,
) -> Result<(), InitFailure> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(InitFailure::Refused(shown(
            message.as_bytes(),
            GUEST_LOG_LINE_MAX,
        ))),
        Err(error) => Err(InitFailure::Trapped(failure_reason(&error, sandbox))),
    }
}

/// Replace the instance with a fresh, initialised one.
fn restart<T: Supervised>(instance: &mut T) -> Result<(), String> {
    instance
        .sandbox()
        .metrics()
        .restarts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    instance.fresh()?;
    instance
        .call_init()
        .map_err(|failure| format!("a fresh instance {failure}"))
}

/// Replace the instance with a fresh, initialised one; if that cannot be
/// done, disable it and return the event for the handlers.
fn restart_or_disable<T: Supervised>(instance: &mut T) -> Result<(), Dispatched> {
    restart(instance).map_err(|why| {
        instance.supervisor().disable();
        disabled(instance, &why)
    })
}

/// Log that the instance is disabled; the event for the handlers.
fn disabled<T: Supervised>(instance: &mut T, reason: &str) -> Dispatched {
    tracing::error!(instance = %instance.name(), "{} disabled: {reason}", T::NOUN);
    let failures = instance.supervisor().recent_failures();
    // Before the first record the stream has no time yet: say when it
    // happened by the host's clock.
    let time = Some(instance.now())
        .filter(|time| *time != crate::types::Timestamp::EPOCH)
        .unwrap_or_else(wall_clock_now);
    disabled_event(instance.sandbox(), reason, failures, time)
}

/// A call failed (and was logged): apply the policy.
fn apply_policy<T: Supervised>(instance: &mut T, reason: &str) -> Result<Outcome, Aborted> {
    instance
        .sandbox()
        .metrics()
        .failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match instance.supervisor().failed(Instant::now()) {
        Verdict::Abort => Err(Aborted {
            instance: instance.name().to_owned(),
            reason: reason.to_owned(),
        }),
        Verdict::Disable(why) => Ok(Outcome::Disabled(disabled(
            instance,
            &format!("{why}; last failure: {reason}"),
        ))),
        Verdict::Restart { backoff } => match restart_or_disable(instance) {
            Ok(()) => {
                match backoff {
                    Some(backoff) => tracing::warn!(
                        instance = %instance.name(),
                        "restarted; its next call waits {} ms",
                        backoff.as_millis()
                    ),
                    None => tracing::warn!(instance = %instance.name(), "restarted"),
                }
                Ok(Outcome::Restarted)
            }
            Err(event) => Ok(Outcome::Disabled(event)),
        },
    }
}

/// Initialise an instance whose configuration is set. If it refuses
/// (returns an error), start-up stops with its message; if it traps, its
/// failure policy applies: the result is then the `ComponentDisabled` event
/// if it ended disabled.
fn init_with_policy<T: Supervised>(instance: &mut T) -> anyhow::Result<Option<Dispatched>> {
    loop {
        let reason = match instance.call_init() {
            Ok(()) => return Ok(None),
            Err(InitFailure::Refused(message)) => {
                bail!(
                    "{} \"{}\" refused to start: {message}",
                    T::ROLE,
                    instance.name()
                )
            }
            Err(InitFailure::Trapped(reason)) => reason,
        };
        tracing::error!(instance = %instance.name(), call = "init", "{} failed: {reason}", T::NOUN);
        match instance.supervisor().failed(Instant::now()) {
            Verdict::Abort => bail!(Aborted {
                instance: instance.name().to_owned(),
                reason: format!("failed in init: {reason}"),
            }),
            Verdict::Disable(why) => {
                return Ok(Some(disabled(
                    instance,
                    &format!("{why}; last failure: {reason}"),
                )));
            }
            Verdict::Restart { .. } => {
                if let Err(why) = instance.fresh() {
                    instance.supervisor().disable();
                    return Ok(Some(disabled(instance, &why)));
                }
            }
        }
    }
}

/// A running logic module.
pub struct ModuleInstance {
    /// The instance name from the app file.
    pub name: String,
    /// What the component declared about itself.
    pub descriptor: Descriptor,
    sandbox: Sandbox,
    pre: LogicModulePre<InstanceState>,
    store: Store<InstanceState>,
    bindings: LogicModule,
    durable: Option<DurableExports>,
    keyed: Option<KeyedReceive>,
    catalog: Arc<EventCatalog>,
    config: BTreeMap<String, Value>,
    supervisor: Supervisor,
    rejected_earlier: u64,
    skipped_records: u64,
    /// While listening, what comes during a back-off waits here (see
    /// [`ModuleInstance::keep_backlog`]); `None` when calls wait the
    /// back-off out (a replay).
    backlog: Option<Backlog>,
    /// Keyed messages came for it without `keyed.receive`, and it was said.
    warned_unkeyed: bool,
}

impl ModuleInstance {
    pub(super) fn new(
        sandbox: Sandbox,
        pre: LogicModulePre<InstanceState>,
        policy: OnFailure,
    ) -> anyhow::Result<Self> {
        let name = sandbox.name().to_owned();
        let mut store = sandbox.store()?;
        let (bindings, OptionalExports { durable, keyed }) =
            instantiate_module(&sandbox, &pre, &mut store).map_err(start_up_failed(
                &sandbox,
                format!("cannot instantiate module \"{name}\""),
            ))?;
        let descriptor = sandbox
            .bounded(&mut store, async |store| {
                bindings
                    .correlator_plugin_logic()
                    .call_describe(store)
                    .await
            })
            .map_err(start_up_failed(
                &sandbox,
                format!("module \"{name}\" failed in describe"),
            ))?;
        check_descriptor(&name, &descriptor)?;
        let catalog = Arc::new(EventCatalog::new(&descriptor.events));
        store.data_mut().catalog = Arc::clone(&catalog);
        Ok(ModuleInstance {
            name,
            descriptor,
            sandbox,
            pre,
            store,
            bindings,
            durable,
            keyed,
            catalog,
            config: BTreeMap::new(),
            supervisor: Supervisor::new(policy),
            rejected_earlier: 0,
            skipped_records: 0,
            backlog: None,
            warned_unkeyed: false,
        })
    }

    /// Keep the records and ticks that come while the instance backs off
    /// (up to its `limits.backlog_kib`; the newest past it are dropped and
    /// counted) for when the back-off is over, instead of waiting it out:
    /// what listening does, so that one instance's back-off does not hold
    /// the others back.
    pub fn keep_backlog(&mut self) {
        let limit = self.sandbox.limits().backlog_kib.saturating_mul(1024);
        self.backlog = Some(Backlog::new(limit));
    }

    /// Whether work must go to the backlog: the instance keeps one and is
    /// backing off, or older work waits there.
    fn defers(&self) -> bool {
        self.backlog.as_ref().is_some_and(|backlog| {
            !self.supervisor.is_disabled()
                && (!backlog.is_empty() || self.supervisor.backing_off(Instant::now()).is_some())
        })
    }

    /// How long until the backlog can be worked off; `None` when it is
    /// empty.
    pub fn backlog_wait(&self) -> Option<std::time::Duration> {
        if self.backlog.as_ref().is_none_or(Backlog::is_empty) {
            return None;
        }
        let now = Instant::now();
        Some(
            self.supervisor
                .backing_off(now)
                .map_or(std::time::Duration::ZERO, |resume| resume - now),
        )
    }

    /// Records dropped because the backlog was full.
    pub fn dropped_records(&self) -> u64 {
        self.backlog.as_ref().map_or(0, Backlog::dropped)
    }

    /// Hand the instance what waits in its backlog, oldest first, each at
    /// the stream clock it came with, unless it is (again) backing off. A
    /// disabled instance's backlog is counted as skipped.
    pub fn catch_up(&mut self) -> Result<Vec<Dispatched>, Aborted> {
        let mut events = Vec::new();
        while let Some(backlog) = &mut self.backlog
            && !backlog.is_empty()
        {
            if self.supervisor.is_disabled() {
                self.skipped_records += backlog.discard();
                break;
            }
            if self.supervisor.backing_off(Instant::now()).is_some() {
                break;
            }
            let Some(deferred) = backlog.next() else {
                break;
            };
            let clock = self.sandbox.clock().clone();
            let now = clock.now();
            clock.set(deferred.clock);
            let result = match &deferred.work {
                Work::Records(batch) => self.process_now(batch),
                Work::Tick(tick) => self.tick_now(*tick),
            };
            clock.set(now);
            events.extend(result?);
        }
        Ok(events)
    }

    /// Work the backlog off entirely, waiting out back-offs (at the end of
    /// a run).
    pub fn drain(&mut self) -> Result<Vec<Dispatched>, Aborted> {
        let mut events = Vec::new();
        while let Some(wait) = self.backlog_wait() {
            std::thread::sleep(wait);
            events.extend(self.catch_up()?);
        }
        Ok(events)
    }

    /// Hand the instance its configuration and initialise it (see
    /// [`init_with_policy`]): the `ComponentDisabled` event if it ended
    /// disabled.
    pub fn init(&mut self, config: BTreeMap<String, Value>) -> anyhow::Result<Option<Dispatched>> {
        self.config = config;
        self.store.data_mut().config = self.config.clone();
        init_with_policy(self)
    }

    /// Replace the instance with a fresh, initialised one, as the restart
    /// policy does (public for the benchmark of what that costs).
    pub fn restart(&mut self) -> Result<(), String> {
        restart(self)
    }

    /// Whether the instance still takes calls (it may be backing off).
    pub fn is_running(&self) -> bool {
        !self.supervisor.is_disabled()
    }

    /// Give the instance its durable state (before `migrate` and `init`).
    pub fn attach_state(&mut self, state: StateAccess) {
        self.store.data_mut().state = state;
    }

    /// Whether the instance starts on committed state (what a failing
    /// `init` may have choked on).
    pub fn holds_state(&self) -> bool {
        self.store.data().state.holds_committed()
    }

    /// The layout version of the module's state (its `durable`
    /// export's `state-version`); `None` for a module without durable state.
    pub fn state_version(&mut self) -> anyhow::Result<Option<u32>> {
        let Some(durable) = self.durable else {
            return Ok(None);
        };
        let (version,) = self
            .sandbox
            .bounded(&mut self.store, async |store| {
                durable.state_version.call_async(store, ()).await
            })
            .map_err(start_up_failed(
                &self.sandbox,
                format!("module \"{}\" failed in state-version", self.name),
            ))?;
        Ok(Some(version))
    }

    /// Ask the module to rewrite state of layout `stored_version` in its
    /// own; its writes are pending afterwards. An error names the instance
    /// and says why.
    pub fn migrate(&mut self, stored_version: u32) -> anyhow::Result<()> {
        let Some(durable) = self.durable else {
            bail!("module \"{}\" has no durable state to migrate", self.name);
        };
        match self.sandbox.bounded(&mut self.store, async |store| {
            durable.migrate.call_async(store, (stored_version,)).await
        }) {
            Ok((Ok(()),)) => Ok(()),
            Ok((Err(message),)) => bail!(
                "module \"{}\" cannot migrate its state from version {stored_version}: {}",
                self.name,
                shown(message.as_bytes(), GUEST_LOG_LINE_MAX)
            ),
            Err(error) => bail!(
                "module \"{}\" failed migrating its state from version {stored_version}: {}",
                self.name,
                failure_reason(&error, &self.sandbox)
            ),
        }
    }

    /// Ask the module to write what changed since the last checkpoint (if
    /// it keeps durable state and runs). A failure is handled by its
    /// policy; a fresh instance starts from the last commit.
    pub fn checkpoint(&mut self) -> Result<Vec<Dispatched>, Aborted> {
        let Some(durable) = self.durable else {
            return Ok(Vec::new());
        };
        self.simple_call("checkpoint", async |_, store| {
            durable.checkpoint.call_async(store, ()).await
        })
    }

    /// What the instance sent through `exchange` since last asked.
    pub fn take_sent(&mut self) -> Vec<SentMessage> {
        std::mem::take(&mut self.store.data_mut().exchange.sent)
    }

    /// How many messages wait to be taken.
    pub fn sent_len(&self) -> usize {
        self.store.data().exchange.sent.len()
    }

    /// The messages sent since the first `from` were sent for records of a
    /// part of the batch starting at record `base`: make their record
    /// numbers the batch's.
    pub fn rebase_sent(&mut self, from: usize, base: u32) {
        for sent in self.store.data_mut().exchange.sent.iter_mut().skip(from) {
            if sent.record != u32::MAX {
                sent.record = sent.record.saturating_add(base);
            }
        }
    }

    /// Hand the instance keyed messages for keys it owns (`keyed.receive`);
    /// a module that does not export it gets none (they are dropped, and
    /// said once). A failure is handled by its policy.
    pub fn receive(&mut self, messages: Vec<KeyedMessage>) -> Result<Vec<Dispatched>, Aborted> {
        let Some(receive) = self.keyed else {
            if !messages.is_empty() && !self.warned_unkeyed {
                self.warned_unkeyed = true;
                tracing::warn!(
                    instance = %self.name,
                    "keyed messages for a module that does not export keyed.receive are dropped"
                );
            }
            return Ok(Vec::new());
        };
        self.simple_call("receive", async |_, store| {
            receive.call_async(store, (messages,)).await
        })
    }

    /// The instance's durable state, with its writes since the last commit.
    pub fn state(&self) -> &StateAccess {
        &self.store.data().state
    }

    /// The pending writes were committed; the state grew by `growth` bytes.
    pub fn state_committed(&mut self, growth: i64) {
        self.store.data_mut().state.committed(growth);
    }

    /// Events the instance refused to dispatch so far.
    pub fn rejected_events(&self) -> u64 {
        self.rejected_earlier + self.store.data().rejected
    }

    /// The timer ticks the instance asked for.
    pub fn timers(&self) -> &super::TimerRequests {
        &self.store.data().timers
    }

    /// Records the instance did not see: skipped while it was disabled, or
    /// given up after records of their batch made it fail on their own.
    pub fn skipped_records(&self) -> u64 {
        self.skipped_records
    }

    /// One call into the guest, its events on success, why it failed
    /// otherwise (its events are then discarded).
    fn call(
        &mut self,
        call: impl AsyncFnOnce(&LogicModule, &mut Store<InstanceState>) -> wasmtime::Result<()>,
    ) -> Result<Vec<Dispatched>, String> {
        let bindings = &self.bindings;
        let result = self
            .sandbox
            .bounded(&mut self.store, async |store| call(bindings, store).await);
        let dispatched = std::mem::take(&mut self.store.data_mut().dispatched);
        match result {
            Ok(()) => Ok(dispatched),
            Err(error) => Err(failure_reason(&error, &self.sandbox)),
        }
    }

    /// A call failed: log it once and apply the policy.
    fn fail(
        &mut self,
        call: &str,
        reason: &str,
        position: Option<u64>,
    ) -> Result<Outcome, Aborted> {
        let position = position.map_or_else(String::new, |p| p.to_string());
        tracing::error!(instance = %self.name, call, first_record = %position, "instance failed: {reason}");
        apply_policy(self, reason)
    }

    /// Process a batch; returns the events dispatched meanwhile (with a
    /// `ComponentDisabled` event if the instance was disabled). While the
    /// instance backs off, the batch waits in its backlog if it keeps one.
    pub fn process(&mut self, batch: &RecordBatch) -> Result<Vec<Dispatched>, Aborted> {
        if self.defers() {
            let clock = self.sandbox.clock().now();
            if let Some(backlog) = &mut self.backlog
                && backlog.keep(batch, clock).first_drop
            {
                tracing::warn!(
                    instance = %self.name,
                    limit_kib = self.sandbox.limits().backlog_kib,
                    "records dropped: the instance is backing off and its backlog is full (limits.backlog_kib); they are counted"
                );
            }
            return Ok(Vec::new());
        }
        self.process_now(batch)
    }

    /// Process a batch now (waiting out a back-off, if any).
    fn process_now(&mut self, batch: &RecordBatch) -> Result<Vec<Dispatched>, Aborted> {
        if !self.supervisor.wait_until_ready() {
            self.skipped_records += batch.positions.len() as u64;
            return Ok(Vec::new());
        }
        let reason = match self.call(async |bindings, store| {
            bindings
                .correlator_plugin_logic()
                .call_process(store, batch)
                .await
        }) {
            Ok(events) => return Ok(events),
            Err(reason) => reason,
        };
        match self.fail("process", &reason, batch.positions.first().copied())? {
            Outcome::Disabled(event) => {
                self.skipped_records += batch.positions.len() as u64;
                Ok(vec![event])
            }
            Outcome::Restarted => Ok(self.retry_one_by_one(batch)),
        }
    }

    /// After a failed batch, feed its records one at a time to the fresh
    /// instance; a record that fails alone is skipped.
    fn retry_one_by_one(&mut self, batch: &RecordBatch) -> Vec<Dispatched> {
        let mut events = Vec::new();
        let mut failures = 0;
        for index in 0..batch.positions.len() {
            let single = single_record(batch, index);
            let sent_before = self.sent_len();
            match self.call(async |bindings, store| {
                bindings
                    .correlator_plugin_logic()
                    .call_process(store, &single)
                    .await
            }) {
                Ok(dispatched) => {
                    // Triggered by record `index` of the whole batch.
                    let record = u32::try_from(index).unwrap_or(Dispatched::AFTER_BATCH);
                    self.rebase_sent(sent_before, record);
                    events.extend(dispatched.into_iter().map(|mut event| {
                        event.record = record;
                        event
                    }));
                }
                Err(reason) => {
                    self.skipped_records += 1;
                    failures += 1;
                    let position = batch.positions[index];
                    tracing::warn!(instance = %self.name, record = position, "record skipped: it alone made the instance fail: {reason}");
                    let given_up = failures >= RETRY_FAILURES_MAX;
                    if given_up || restart(self).is_err() {
                        let rest = (batch.positions.len() - index - 1) as u64;
                        self.skipped_records += rest;
                        tracing::error!(instance = %self.name, skipped = rest, "gave up retrying the batch one record at a time");
                        // The policy is restart here, so this cannot abort.
                        if let Ok(Outcome::Disabled(event)) =
                            self.fail("process", &reason, Some(position))
                        {
                            events.push(event);
                        }
                        break;
                    }
                }
            }
        }
        events
    }

    /// Deliver a timer tick (or keep it in the backlog, as
    /// [`ModuleInstance::process`] does records).
    pub fn tick(&mut self, tick: TimerTick) -> Result<Vec<Dispatched>, Aborted> {
        if self.defers() {
            let clock = self.sandbox.clock().now();
            if let Some(backlog) = &mut self.backlog {
                backlog.keep_tick(tick, clock);
            }
            return Ok(Vec::new());
        }
        self.tick_now(tick)
    }

    fn tick_now(&mut self, tick: TimerTick) -> Result<Vec<Dispatched>, Aborted> {
        self.simple_call("tick", async |bindings, store| {
            bindings
                .correlator_plugin_logic()
                .call_tick(store, tick)
                .await
        })
    }

    /// Ask for the statistics event.
    pub fn statistics(&mut self, reset: bool) -> Result<Vec<Dispatched>, Aborted> {
        self.simple_call("statistics", async |bindings, store| {
            bindings
                .correlator_plugin_logic()
                .call_statistics(store, reset)
                .await
        })
    }

    fn simple_call(
        &mut self,
        name: &str,
        call: impl AsyncFnOnce(&LogicModule, &mut Store<InstanceState>) -> wasmtime::Result<()>,
    ) -> Result<Vec<Dispatched>, Aborted> {
        if !self.supervisor.wait_until_ready() {
            return Ok(Vec::new());
        }
        match self.call(call) {
            Ok(events) => Ok(events),
            Err(reason) => match self.fail(name, &reason, None)? {
                Outcome::Disabled(event) => Ok(vec![event]),
                Outcome::Restarted => Ok(Vec::new()),
            },
        }
    }
}

/// A running event handler.
pub struct HandlerInstance {
    /// The instance name from the app file.
    pub name: String,
    /// What the component declared about itself.
    pub descriptor: Descriptor,
    sandbox: Sandbox,
    pre: EventHandlerPre<InstanceState>,
    store: Store<InstanceState>,
    bindings: EventHandler,
    /// `handle-packed`, when the component exports it: used instead of
    /// `handle`.
    packed: Option<wasmtime::component::Func>,
    /// Where events are packed for `handle-packed`, kept between calls.
    packed_buffer: Vec<u8>,
    config: BTreeMap<String, Value>,
    supervisor: Supervisor,
    /// When events of each module made the handler fail on their own,
    /// within the last [`FAILURE_WINDOW`].
    poisoning: HashMap<Arc<str>, VecDeque<Instant>>,
    /// Modules whose events the handler takes no more: they made it fail
    /// on their own [`FAILURES_BEFORE_DISABLE`] times within the window.
    quarantined: HashSet<Arc<str>>,
}

/// What became of a batch of events at one handler.
#[derive(Debug, Default)]
pub struct Handled {
    /// Events the handler reported as failed, or did not get to.
    pub failures: usize,
    /// Set when the handler was disabled: the other handlers get it.
    pub disabled: Option<Dispatched>,
    /// Events that made the handler fail on their own (among `failures`).
    pub isolated: usize,
    /// Events a retry one at a time handed over without a failure.
    taken: usize,
    /// The module of each event that made the handler fail on its own
    /// under the restart policy, to be blamed if others passed.
    poisoners: Vec<Arc<str>>,
}

impl HandlerInstance {
    pub(super) fn new(
        sandbox: Sandbox,
        pre: EventHandlerPre<InstanceState>,
        policy: OnFailure,
    ) -> anyhow::Result<Self> {
        let name = sandbox.name().to_owned();
        let mut store = sandbox.store()?;
        let (bindings, packed) = instantiate_handler(&sandbox, &pre, &mut store).map_err(
            start_up_failed(&sandbox, format!("cannot instantiate handler \"{name}\"")),
        )?;
        let descriptor = sandbox
            .bounded(&mut store, async |store| {
                bindings
                    .correlator_plugin_handler()
                    .call_describe(store)
                    .await
            })
            .map_err(start_up_failed(
                &sandbox,
                format!("handler \"{name}\" failed in describe"),
            ))?;
        check_descriptor(&name, &descriptor)?;
        Ok(HandlerInstance {
            name,
            descriptor,
            sandbox,
            pre,
            store,
            bindings,
            packed,
            packed_buffer: Vec::new(),
            config: BTreeMap::new(),
            supervisor: Supervisor::new(policy),
            poisoning: HashMap::new(),
            quarantined: HashSet::new(),
        })
    }

    /// Hand the instance its configuration and initialise it, as
    /// [`ModuleInstance::init`].
    pub fn init(&mut self, config: BTreeMap<String, Value>) -> anyhow::Result<Option<Dispatched>> {
        self.config = config;
        self.store.data_mut().config = self.config.clone();
        init_with_policy(self)
    }

    /// Whether the instance still takes calls (it may be backing off).
    pub fn is_running(&self) -> bool {
        !self.supervisor.is_disabled()
    }

    /// SIGHUP: a handler granted a directory starts afresh (a new instance,
    /// initialised), so that the files it writes are opened again, as after
    /// a log rotation moved them; `false` for one without a directory.
    /// Handlers finish each batch with `flush`, so nothing written is lost.
    pub fn reopen(&mut self) -> Result<bool, String> {
        if !self.sandbox.has_dir() || !self.is_running() {
            return Ok(false);
        }
        restart(self).map(|()| true)
    }

    /// One `handle` call (`handle-packed` if the component has it): the
    /// per-event results, or why it failed.
    fn call(&mut self, events: &[&Dispatched]) -> Result<Vec<Result<(), String>>, String> {
        let result = match self.packed {
            Some(func) => {
                let mut packed = std::mem::take(&mut self.packed_buffer);
                packed.clear();
                super::encoded::pack_events(events, &mut packed);
                let bytes = packed.as_slice();
                let result = self
                    .sandbox
                    .bounded(&mut self.store, async |store| {
                        let handle = func.typed::<(&[u8],), (Vec<Result<(), String>>,)>(&*store)?;
                        handle.call_async(store, (bytes,)).await
                    })
                    .map(|(results,)| results);
                if packed.capacity() <= PACKED_BUFFER_KEPT {
                    self.packed_buffer = packed;
                }
                result
            }
            None => {
                let delivered: Vec<DeliveredEvent> =
                    events.iter().map(|event| event.to_delivered()).collect();
                let bindings = &self.bindings;
                self.sandbox.bounded(&mut self.store, async |store| {
                    bindings
                        .correlator_plugin_handler()
                        .call_handle(store, &delivered)
                        .await
                })
            }
        };
        result.map_err(|error| failure_reason(&error, &self.sandbox))
    }

    fn count_failures(&self, events: &[&Dispatched], results: &[Result<(), String>]) -> usize {
        let mut failures = events.len().saturating_sub(results.len());
        for (event, result) in events.iter().zip(results) {
            if let Err(message) = result {
                failures += 1;
                let message = shown(message.as_bytes(), GUEST_LOG_LINE_MAX);
                tracing::warn!(handler = %self.name, module = %event.module, event = %event.decl.kind, "handler failed on an event: {message}");
            }
        }
        failures
    }

    /// Hand over a batch of events.
    ///
    /// When the call fails, the handler is made fresh and takes the events
    /// one at a time ([`HandlerInstance::retry_one_by_one`]), so that an
    /// event that makes it fail costs only itself. Under the `restart`
    /// policy, such a failure is laid at the door of the module whose event
    /// it was, not of the handler: a handler shared by many modules is not
    /// disabled because one module sends what it cannot take; instead it
    /// stops taking that module's events ([`FAILURES_BEFORE_DISABLE`] such
    /// failures within [`FAILURE_WINDOW`]). A failure no single event
    /// repeats, or one where the events of every module in the batch fail
    /// on their own (of more than one module), counts against the handler,
    /// as any failure does under the other policies.
    pub fn handle(&mut self, events: &[&Dispatched]) -> Result<Handled, Aborted> {
        if events.is_empty() {
            return Ok(Handled::default());
        }
        if !self.supervisor.wait_until_ready() {
            return Ok(Handled {
                failures: events.len(),
                ..Handled::default()
            });
        }
        let taken: Vec<&Dispatched>;
        let (events, refused) = if self.quarantined.is_empty() {
            (events, 0)
        } else {
            taken = events
                .iter()
                .copied()
                .filter(|event| !self.quarantined.contains(&event.module))
                .collect();
            (taken.as_slice(), events.len() - taken.len())
        };
        let reason = match self.call(events) {
            Ok(results) => {
                return Ok(Handled {
                    failures: refused + self.count_failures(events, &results),
                    ..Handled::default()
                });
            }
            Err(reason) => reason,
        };
        if !self.supervisor.restarts() {
            return match self.fail(&reason)? {
                Outcome::Disabled(event) => Ok(Handled {
                    failures: refused + events.len(),
                    disabled: Some(event),
                    ..Handled::default()
                }),
                Outcome::Restarted => Ok(self.retry_one_by_one(events, refused)),
            };
        }
        tracing::error!(instance = %self.name, "handler failed: {reason}");
        if let Err(event) = restart_or_disable(self) {
            return Ok(Handled {
                failures: refused + events.len(),
                disabled: Some(event),
                ..Handled::default()
            });
        }
        let mut handled = self.retry_one_by_one(events, refused);
        if handled.disabled.is_some() {
            return Ok(handled);
        }
        let poisoners: HashSet<&str> = handled.poisoners.iter().map(|m| &**m).collect();
        let every_module_fails = handled.taken == 0 && poisoners.len() > 1;
        if handled.isolated > 0 && !every_module_fails {
            // Events fail it on their own, others pass (or all are of one
            // module): those events' modules are to blame, not the handler.
            for module in std::mem::take(&mut handled.poisoners) {
                self.poisoned_by(&module);
            }
        } else if let Outcome::Disabled(event) = apply_policy(self, &reason)? {
            // No event repeats the failure alone, or every module's events
            // fail it: it is the handler's.
            handled.disabled = Some(event);
        }
        Ok(handled)
    }

    /// After a failed batch, hand its events over one at a time to the
    /// fresh instance; an event that fails alone is skipped and counted
    /// against its module. Once [`RETRY_FAILURES_MAX`] events of one module
    /// failed alone, the rest of that module's events in the batch are
    /// given up, but the other modules' events are still handed over: one
    /// module's poisoned events cost no other module its events.
    fn retry_one_by_one(&mut self, events: &[&Dispatched], refused: usize) -> Handled {
        let mut handled = Handled {
            failures: refused,
            ..Handled::default()
        };
        let mut failed_alone: HashMap<&str, usize> = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            if failed_alone
                .get(&*event.module)
                .is_some_and(|&failures| failures >= RETRY_FAILURES_MAX)
                || self.quarantined.contains(&event.module)
            {
                handled.failures += 1;
                continue;
            }
            let reason = match self.call(std::slice::from_ref(event)) {
                Ok(results) => {
                    handled.taken += 1;
                    handled.failures += self.count_failures(std::slice::from_ref(event), &results);
                    continue;
                }
                Err(reason) => reason,
            };
            handled.failures += 1;
            handled.isolated += 1;
            tracing::warn!(handler = %self.name, module = %event.module, event = %event.decl.kind, "event skipped: it alone made the handler fail: {reason}");
            let failures = failed_alone.entry(&event.module).or_default();
            *failures += 1;
            if *failures == RETRY_FAILURES_MAX {
                tracing::error!(handler = %self.name, module = %event.module, "gave up the rest of this module's events in the batch; other modules' events are still handed over");
            }
            let outcome = if self.supervisor.restarts() {
                handled.poisoners.push(Arc::clone(&event.module));
                restart_or_disable(self)
            } else {
                match self.fail(&reason) {
                    Ok(Outcome::Restarted) => Ok(()),
                    Ok(Outcome::Disabled(event)) => Err(event),
                    // Only reached after a restart verdict: cannot abort.
                    Err(aborted) => Err(disabled(self, &aborted.reason)),
                }
            };
            if let Err(event) = outcome {
                handled.disabled = Some(event);
                handled.failures += events.len() - index - 1;
                break;
            }
        }
        handled
    }

    /// An event of `module` made the handler fail on its own: count it, and
    /// stop taking the module's events once it has done so too often.
    fn poisoned_by(&mut self, module: &Arc<str>) {
        let now = Instant::now();
        let times = self.poisoning.entry(Arc::clone(module)).or_default();
        times.push_back(now);
        while times
            .front()
            .is_some_and(|&at| now.duration_since(at) > FAILURE_WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= FAILURES_BEFORE_DISABLE {
            tracing::error!(handler = %self.name, module = %module, "handler takes no more events of this module: they made it fail on their own {} times within {} s; it still takes every other module's", times.len(), FAILURE_WINDOW.as_secs());
            self.quarantined.insert(Arc::clone(module));
            self.poisoning.remove(module);
        }
    }

    fn fail(&mut self, reason: &str) -> Result<Outcome, Aborted> {
        tracing::error!(instance = %self.name, "handler failed: {reason}");
        apply_policy(self, reason)
    }
}

impl Supervised for ModuleInstance {
    const ROLE: &'static str = "module";
    const NOUN: &'static str = "instance";

    fn name(&self) -> &str {
        &self.name
    }

    fn supervisor(&mut self) -> &mut Supervisor {
        &mut self.supervisor
    }

    fn call_init(&mut self) -> Result<(), InitFailure> {
        let bindings = &self.bindings;
        let result = self.sandbox.bounded(&mut self.store, async |store| {
            bindings.correlator_plugin_logic().call_init(store).await
        });
        init_outcome(result, &self.sandbox)
    }

    fn fresh(&mut self) -> Result<(), String> {
        self.rejected_earlier += self.store.data().rejected;
        let mut store = self.sandbox.store().map_err(|error| format!("{error:#}"))?;
        let (bindings, OptionalExports { durable, keyed }) =
            instantiate_module(&self.sandbox, &self.pre, &mut store)
                .map_err(|error| format!("a fresh instance cannot be made: {error:#}"))?;
        store.data_mut().catalog = Arc::clone(&self.catalog);
        store.data_mut().config = self.config.clone();
        // What the failed instance changed since the last checkpoint is
        // lost with it; the fresh one starts from the checkpoint.
        store.data_mut().state = self.store.data().state.from_checkpoint();
        self.store = store;
        self.bindings = bindings;
        self.durable = durable;
        self.keyed = keyed;
        Ok(())
    }

    fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    fn now(&self) -> crate::types::Timestamp {
        self.store.data().now()
    }
}

impl Supervised for HandlerInstance {
    const ROLE: &'static str = "handler";
    const NOUN: &'static str = "handler";

    fn name(&self) -> &str {
        &self.name
    }

    fn supervisor(&mut self) -> &mut Supervisor {
        &mut self.supervisor
    }

    fn call_init(&mut self) -> Result<(), InitFailure> {
        let bindings = &self.bindings;
        let result = self.sandbox.bounded(&mut self.store, async |store| {
            bindings.correlator_plugin_handler().call_init(store).await
        });
        init_outcome(result, &self.sandbox)
    }

    fn fresh(&mut self) -> Result<(), String> {
        let mut store = self.sandbox.store().map_err(|error| format!("{error:#}"))?;
        let (bindings, packed) = instantiate_handler(&self.sandbox, &self.pre, &mut store)
            .map_err(|error| format!("a fresh instance cannot be made: {error:#}"))?;
        store.data_mut().config = self.config.clone();
        self.store = store;
        self.bindings = bindings;
        self.packed = packed;
        Ok(())
    }

    fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    fn now(&self) -> crate::types::Timestamp {
        self.store.data().now()
    }
}
