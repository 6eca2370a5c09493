//! What each instance's store holds, and the contract's host interfaces
//! (configuration, stream clock, event dispatch, logging) implemented on it.

use super::bindings::module::correlator::plugin::{clock, config, events, types};
use super::bindings::module::wasi::logging::logging::{self, Level};
use crate::types::{DispatchError, Dispatched, Event, EventDecl, Timestamp, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI16, AtomicI64, AtomicU32, Ordering};
use std::time::Duration;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The stream's clock: the time of the latest record handed to modules.
/// Shared by every instance; it is also what WASI's wall and monotonic
/// clocks report, so a component cannot see the real time unless granted.
#[derive(Clone, Default)]
pub struct StreamClock {
    inner: Arc<ClockInner>,
}

#[derive(Default)]
struct ClockInner {
    seconds: AtomicI64,
    nanoseconds: AtomicU32,
    offset_minutes: AtomicI16,
}

impl StreamClock {
    /// Move the clock to `time`.
    pub fn set(&self, time: Timestamp) {
        self.inner.seconds.store(time.seconds, Ordering::Relaxed);
        self.inner
            .nanoseconds
            .store(time.nanoseconds, Ordering::Relaxed);
        self.inner
            .offset_minutes
            .store(time.offset_minutes, Ordering::Relaxed);
    }

    /// The clock's time.
    pub fn now(&self) -> Timestamp {
        Timestamp {
            seconds: self.inner.seconds.load(Ordering::Relaxed),
            nanoseconds: self.inner.nanoseconds.load(Ordering::Relaxed),
            offset_minutes: self.inner.offset_minutes.load(Ordering::Relaxed),
        }
    }

    fn since_epoch(&self) -> Duration {
        let now = self.now();
        u64::try_from(now.seconds)
            .map(|seconds| Duration::new(seconds, now.nanoseconds))
            .unwrap_or_default()
    }
}

impl wasmtime_wasi::HostWallClock for StreamClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.since_epoch()
    }
}

impl wasmtime_wasi::HostMonotonicClock for StreamClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.since_epoch().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The event types a module declared, by kind.
pub type EventCatalog = HashMap<String, EventDecl>;

/// The data of one instance's store.
pub struct InstanceState {
    /// The instance name from the app file.
    pub name: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and table limits the store enforces.
    pub limits: StoreLimits,
    /// The instance's own configuration values, keys without prefix.
    pub config: BTreeMap<String, Value>,
    clock: StreamClock,
    /// Declared event types (empty until `describe` returned, and for
    /// handlers).
    pub catalog: Arc<EventCatalog>,
    /// Events dispatched during the current call, validated.
    pub dispatched: Vec<Dispatched>,
    /// Events refused during the instance's life.
    pub rejected: u64,
}

impl InstanceState {
    /// State for an instance called `name` with a prepared WASI context.
    pub fn new(name: Arc<str>, wasi: WasiCtx, limits: StoreLimits, clock: StreamClock) -> Self {
        InstanceState {
            name,
            wasi,
            table: ResourceTable::new(),
            limits,
            config: BTreeMap::new(),
            clock,
            catalog: Arc::default(),
            dispatched: Vec::new(),
            rejected: 0,
        }
    }

    /// Check `event` against its declared type; if it fits, the event with
    /// its fields in declared order, else the reason and the event's kind.
    fn validate(&self, event: Event) -> Result<Dispatched, (DispatchError, String)> {
        let Some(decl) = self.catalog.get(&event.kind) else {
            return Err((
                DispatchError::UndeclaredKind(event.kind.clone()),
                event.kind,
            ));
        };
        // The SDK's builder sets fields in declared order: check that
        // without moving anything, and sort only when it does not hold.
        let in_order = event.fields.len() == decl.fields.len()
            && event
                .fields
                .iter()
                .zip(&decl.fields)
                .all(|(field, declared)| {
                    field.name == declared.name && field.value.value_type() == declared.value_type
                });
        let fields = if in_order {
            event.fields
        } else {
            in_declared_order(decl, event.fields).map_err(|error| (error, event.kind.clone()))?
        };
        Ok(Dispatched {
            module: Arc::clone(&self.name),
            kind: event.kind,
            severity: decl.severity,
            time: event.time.unwrap_or_else(|| self.clock.now()),
            summary: event.summary,
            fields,
        })
    }
}

/// `fields` sorted into the order `decl` declares, or why they do not fit.
fn in_declared_order(
    decl: &EventDecl,
    fields: Vec<types::Field>,
) -> Result<Vec<types::Field>, DispatchError> {
    let mut slots: Vec<Option<types::Field>> = std::iter::repeat_with(|| None)
        .take(decl.fields.len())
        .collect();
    for field in fields {
        let index = decl
            .fields
            .iter()
            .position(|declared| declared.name == field.name)
            .ok_or_else(|| DispatchError::UndeclaredField(field.name.clone()))?;
        if field.value.value_type() != decl.fields[index].value_type {
            return Err(DispatchError::WrongType(field.name));
        }
        if slots[index].is_some() {
            return Err(DispatchError::DuplicateField(field.name));
        }
        slots[index] = Some(field);
    }
    decl.fields
        .iter()
        .zip(slots)
        .map(|(declared, slot)| {
            slot.ok_or_else(|| DispatchError::MissingField(declared.name.clone()))
        })
        .collect()
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for InstanceState {}

impl config::Host for InstanceState {
    fn get(&mut self, key: String) -> Option<Value> {
        self.config.get(&key).cloned()
    }
}

impl clock::Host for InstanceState {
    fn now(&mut self) -> Timestamp {
        self.clock.now()
    }
}

impl events::Host for InstanceState {
    fn dispatch(&mut self, event: Event) -> Result<(), DispatchError> {
        match self.validate(event) {
            Ok(dispatched) => {
                self.dispatched.push(dispatched);
                Ok(())
            }
            Err((error, kind)) => {
                self.rejected += 1;
                let (problem, field) = match &error {
                    DispatchError::UndeclaredKind(_) => ("event type is not declared", ""),
                    DispatchError::MissingField(field) => {
                        ("declared field is missing", field.as_str())
                    }
                    DispatchError::UndeclaredField(field) => {
                        ("field is not declared", field.as_str())
                    }
                    DispatchError::WrongType(field) => {
                        ("field has another type than declared", field.as_str())
                    }
                    DispatchError::DuplicateField(field) => ("field is set twice", field.as_str()),
                };
                tracing::warn!(instance = %self.name, event = %kind, field, "event rejected: {problem}");
                Err(error)
            }
        }
    }
}

impl logging::Host for InstanceState {
    fn log(&mut self, level: Level, context: String, message: String) {
        let instance = &*self.name;
        match level {
            Level::Trace => tracing::trace!(target: "guest", instance, context, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", instance, context, "{message}"),
            Level::Info => tracing::info!(target: "guest", instance, context, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", instance, context, "{message}"),
            Level::Error | Level::Critical => {
                tracing::error!(target: "guest", instance, context, "{message}");
            }
        }
    }
}
