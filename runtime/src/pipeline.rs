//! Routing: records go to every module, each module's events go to every
//! handler whose filter selects them.

use crate::filter::Filter;
use crate::host::{HandlerInstance, ModuleInstance, StreamClock};
use crate::types::{DeliveredEvent, RecordBatch, Timestamp};

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

/// The modules and handlers of a running app.
pub struct Pipeline {
    modules: Vec<ModuleInstance>,
    routes: Vec<Route>,
    clock: StreamClock,
    counters: Counters,
}

impl Pipeline {
    /// A pipeline over initialised instances; `clock` is the one the
    /// instances were made with.
    pub fn new(modules: Vec<ModuleInstance>, routes: Vec<Route>, clock: StreamClock) -> Self {
        Pipeline {
            modules,
            routes,
            clock,
            counters: Counters::default(),
        }
    }

    /// Totals so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Events refused by validation, per module instance.
    pub fn rejected_events(&self) -> impl Iterator<Item = (&str, u64)> {
        self.modules
            .iter()
            .map(|m| (m.name.as_str(), m.rejected_events()))
    }

    /// Hand a batch to every module; `latest` is its newest record's time.
    pub fn process(&mut self, batch: &RecordBatch, latest: Timestamp) {
        self.clock.set(latest);
        for index in 0..self.modules.len() {
            let events = self.modules[index].process(batch);
            self.route(&events);
        }
    }

    /// Ask every module for its statistics event and route them.
    pub fn statistics(&mut self, reset: bool) {
        for index in 0..self.modules.len() {
            let events = self.modules[index].statistics(reset);
            self.route(&events);
        }
    }

    fn route(&mut self, events: &[DeliveredEvent]) {
        if events.is_empty() {
            return;
        }
        self.counters.events += events.len() as u64;
        for route in &mut self.routes {
            let failures = match &route.filter {
                None => {
                    route.delivered += events.len() as u64;
                    route.handler.handle(events)
                }
                Some(filter) => {
                    let mut selected = Vec::new();
                    for event in events {
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
                    route.handler.handle(&selected)
                }
            };
            self.counters.handler_failures += failures as u64;
        }
        self.counters.delivered = self.routes.iter().map(|r| r.delivered).sum();
    }
}
