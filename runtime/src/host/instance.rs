//! Instances of modules and handlers, and the calls into them. A trap (the
//! guest must stop) is kept apart from an error the guest returns: a trapped
//! instance is logged once and takes no further calls.

use super::IntoAnyhow as _;
use super::bindings::handler::EventHandler;
use super::bindings::module::LogicModule;
use super::state::InstanceState;
use crate::types::{
    DeliveredEvent, Descriptor, Dispatched, EventDecl, RecordBatch, TimerTick, Value,
};
use anyhow::{Context as _, bail};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use wasmtime::Store;

/// Check what a component declared: unique event kinds and field names.
fn check_descriptor(name: &str, descriptor: &Descriptor) -> anyhow::Result<()> {
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

/// Log a trap once and remember that the instance is unusable.
fn trapped(name: &str, call: &str, failed: &mut bool, error: &wasmtime::Error) {
    tracing::error!(
        instance = name,
        call,
        "instance trapped and is stopped: {error:#}"
    );
    *failed = true;
}

/// A running logic module.
pub struct ModuleInstance {
    /// The instance name from the app file.
    pub name: String,
    /// What the component declared about itself.
    pub descriptor: Descriptor,
    store: Store<InstanceState>,
    bindings: LogicModule,
    failed: bool,
}

impl ModuleInstance {
    pub(super) fn new(
        name: String,
        mut store: Store<InstanceState>,
        bindings: LogicModule,
    ) -> anyhow::Result<Self> {
        let descriptor = bindings
            .correlator_plugin_logic()
            .call_describe(&mut store)
            .into_anyhow()
            .with_context(|| format!("module \"{name}\" failed in describe"))?;
        check_descriptor(&name, &descriptor)?;
        let catalog = descriptor
            .events
            .iter()
            .map(|event: &EventDecl| (event.kind.clone(), event.clone()))
            .collect();
        store.data_mut().catalog = Arc::new(catalog);
        Ok(ModuleInstance {
            name,
            descriptor,
            store,
            bindings,
            failed: false,
        })
    }

    /// Hand the instance its configuration and initialise it. An error
    /// (returned or trapped) stops start-up.
    pub fn init(&mut self, config: BTreeMap<String, Value>) -> anyhow::Result<()> {
        self.store.data_mut().config = config;
        let result = self
            .bindings
            .correlator_plugin_logic()
            .call_init(&mut self.store)
            .into_anyhow()
            .with_context(|| format!("module \"{}\" trapped in init", self.name))?;
        result.map_err(|message| {
            anyhow::anyhow!("module \"{}\" refused to start: {message}", self.name)
        })
    }

    /// Whether the instance still takes calls.
    pub fn is_running(&self) -> bool {
        !self.failed
    }

    /// Events the instance refused to dispatch so far.
    pub fn rejected_events(&self) -> u64 {
        self.store.data().rejected
    }

    fn take_dispatched(&mut self) -> Vec<Dispatched> {
        std::mem::take(&mut self.store.data_mut().dispatched)
    }

    /// Process a batch; returns the events dispatched meanwhile.
    pub fn process(&mut self, batch: &RecordBatch) -> Vec<Dispatched> {
        if self.failed {
            return Vec::new();
        }
        if let Err(error) = self
            .bindings
            .correlator_plugin_logic()
            .call_process(&mut self.store, batch)
        {
            trapped(&self.name, "process", &mut self.failed, &error);
        }
        self.take_dispatched()
    }

    /// Deliver a timer tick.
    pub fn tick(&mut self, tick: TimerTick) -> Vec<Dispatched> {
        if self.failed {
            return Vec::new();
        }
        if let Err(error) = self
            .bindings
            .correlator_plugin_logic()
            .call_tick(&mut self.store, tick)
        {
            trapped(&self.name, "tick", &mut self.failed, &error);
        }
        self.take_dispatched()
    }

    /// Ask for the statistics event.
    pub fn statistics(&mut self, reset: bool) -> Vec<Dispatched> {
        if self.failed {
            return Vec::new();
        }
        if let Err(error) = self
            .bindings
            .correlator_plugin_logic()
            .call_statistics(&mut self.store, reset)
        {
            trapped(&self.name, "statistics", &mut self.failed, &error);
        }
        self.take_dispatched()
    }
}

/// A running event handler.
pub struct HandlerInstance {
    /// The instance name from the app file.
    pub name: String,
    /// What the component declared about itself.
    pub descriptor: Descriptor,
    store: Store<InstanceState>,
    bindings: EventHandler,
    failed: bool,
}

impl HandlerInstance {
    pub(super) fn new(
        name: String,
        mut store: Store<InstanceState>,
        bindings: EventHandler,
    ) -> anyhow::Result<Self> {
        let descriptor = bindings
            .correlator_plugin_handler()
            .call_describe(&mut store)
            .into_anyhow()
            .with_context(|| format!("handler \"{name}\" failed in describe"))?;
        check_descriptor(&name, &descriptor)?;
        Ok(HandlerInstance {
            name,
            descriptor,
            store,
            bindings,
            failed: false,
        })
    }

    /// Hand the instance its configuration and initialise it.
    pub fn init(&mut self, config: BTreeMap<String, Value>) -> anyhow::Result<()> {
        self.store.data_mut().config = config;
        let result = self
            .bindings
            .correlator_plugin_handler()
            .call_init(&mut self.store)
            .into_anyhow()
            .with_context(|| format!("handler \"{}\" trapped in init", self.name))?;
        result.map_err(|message| {
            anyhow::anyhow!("handler \"{}\" refused to start: {message}", self.name)
        })
    }

    /// Whether the instance still takes calls.
    pub fn is_running(&self) -> bool {
        !self.failed
    }

    /// Hand over a batch of events; returns how many the handler reported
    /// as failed (each is logged).
    pub fn handle(&mut self, events: &[DeliveredEvent]) -> usize {
        if self.failed || events.is_empty() {
            return 0;
        }
        match self
            .bindings
            .correlator_plugin_handler()
            .call_handle(&mut self.store, events)
        {
            Ok(results) => {
                let mut failures = 0;
                for (event, result) in events.iter().zip(&results) {
                    if let Err(message) = result {
                        failures += 1;
                        tracing::warn!(handler = %self.name, module = %event.module, event = %event.kind, "handler failed on an event: {message}");
                    }
                }
                failures
            }
            Err(error) => {
                trapped(&self.name, "handle", &mut self.failed, &error);
                events.len()
            }
        }
    }
}
