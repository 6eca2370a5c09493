//! Routing: records go to every module ([`ModuleStage`]); each module's
//! events go to every handler whose filter selects them ([`HandlerStage`]).
//! The two stages run on their own threads (see `replay`), so modules and
//! handlers work in parallel; a bounded channel between them keeps memory
//! bounded when handlers fall behind.

use crate::filter::Filter;
use crate::host::{Aborted, HandlerInstance, ModuleInstance, StreamClock};
use crate::types::{DeliveredEvent, Dispatched, RecordBatch, Timestamp};

/// The logic modules of a running app.
pub struct ModuleStage {
    modules: Vec<ModuleInstance>,
    clock: StreamClock,
}

impl ModuleStage {
    /// The stage over initialised modules; `clock` is the one they were made
    /// with.
    pub fn new(modules: Vec<ModuleInstance>, clock: StreamClock) -> Self {
        ModuleStage { modules, clock }
    }

    /// Hand a batch to every module, in app order; returns their events in
    /// the order they were dispatched. `latest` is the batch's newest
    /// record's time: the stream clock moves there.
    pub fn process(
        &mut self,
        batch: &RecordBatch,
        latest: Timestamp,
    ) -> Result<Vec<Dispatched>, Aborted> {
        self.clock.set(latest);
        let mut events = Vec::new();
        for module in &mut self.modules {
            let dispatched = module.process(batch)?;
            if events.is_empty() {
                events = dispatched;
            } else {
                events.extend(dispatched);
            }
        }
        Ok(events)
    }

    /// Every module's statistics events.
    pub fn statistics(&mut self, reset: bool) -> Result<Vec<Dispatched>, Aborted> {
        let mut events = Vec::new();
        for module in &mut self.modules {
            events.extend(module.statistics(reset)?);
        }
        Ok(events)
    }

    /// Records each module did not see (it backed off, was disabled, or
    /// failed on them alone), per module instance.
    pub fn skipped_records(&self) -> impl Iterator<Item = (&str, u64)> {
        self.modules
            .iter()
            .map(|m| (m.name.as_str(), m.skipped_records()))
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
    /// Events handed to the handler.
    pub delivered: u64,
}

impl Route {
    /// A route with nothing counted yet.
    pub fn new(handler: HandlerInstance, filter: Option<Filter>) -> Self {
        Route {
            handler,
            filter,
            filter_errors: 0,
            delivered: 0,
        }
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
}

impl HandlerStage {
    /// The stage over initialised handlers.
    pub fn new(routes: Vec<Route>) -> Self {
        HandlerStage {
            routes,
            counters: Counters::default(),
        }
    }

    /// Totals so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Hand `events` to every handler whose filter selects them. A handler
    /// that gets disabled on the way sends its `ComponentDisabled` event to
    /// the others.
    pub fn route(&mut self, events: Vec<Dispatched>) -> Result<(), Aborted> {
        if events.is_empty() {
            return Ok(());
        }
        let events: Vec<DeliveredEvent> =
            events.into_iter().map(Dispatched::into_delivered).collect();
        self.counters.events += events.len() as u64;
        let mut disabled = Vec::new();
        for route in &mut self.routes {
            if !route.handler.is_running() {
                continue;
            }
            let handled = match &route.filter {
                None => {
                    route.delivered += events.len() as u64;
                    route.handler.handle(&events)?
                }
                Some(filter) => {
                    let mut selected = Vec::new();
                    for event in &events {
                        match filter.matches(event) {
                            Ok(true) => selected.push(event.clone()),
                            Ok(false) => {}
                            Err(message) => {
                                route.filter_errors += 1;
                                self.counters.filter_errors += 1;
                                if route.filter_errors == 1 {
                                    tracing::warn!(handler = %route.handler.name, event = %event.kind, "filter failed; counted as false (further failures are logged at debug level): {message}");
                                } else {
                                    tracing::debug!(handler = %route.handler.name, event = %event.kind, "filter failed: {message}");
                                }
                            }
                        }
                    }
                    route.delivered += selected.len() as u64;
                    route.handler.handle(&selected)?
                }
            };
            self.counters.handler_failures += handled.failures as u64;
            disabled.extend(handled.disabled);
        }
        self.counters.delivered = self.routes.iter().map(|r| r.delivered).sum();
        self.route(disabled)
    }
}
