//! What each instance's store holds, and the contract's host interfaces
//! (configuration, stream clock, event dispatch, logging) implemented on it.

use super::bindings::module::correlator::plugin::{
    clock, config, events, exchange, secrets, state, timers, types,
};
use super::bindings::module::wasi::logging::logging::{self, Level};
use super::guest_log::GuestLog;
use crate::state_store::{PendingWrites, StateReads, entry_bytes};
use crate::types::{
    DispatchError, Dispatched, Event, EventDecl, FieldValues, TickKind, Timestamp, Value,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI16, AtomicI64, AtomicU32, Ordering};
use std::time::Duration;
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

/// The event types a module declared, by kind and by their index in its
/// descriptor (which `dispatch-values` and `dispatch-encoded` name them by).
#[derive(Debug, Default)]
pub struct EventCatalog {
    by_kind: HashMap<String, usize>,
    declared: Vec<Arc<EventDecl>>,
    /// Bytes of each type's kind and field names: what an event of it sent
    /// by index counts for them towards `limits.event_bytes`.
    name_bytes: Vec<usize>,
}

impl EventCatalog {
    /// The catalog of `events`, in declared order.
    pub fn new(events: &[EventDecl]) -> Self {
        EventCatalog {
            by_kind: events
                .iter()
                .enumerate()
                .map(|(index, event)| (event.kind.clone(), index))
                .collect(),
            declared: events.iter().cloned().map(Arc::new).collect(),
            name_bytes: events
                .iter()
                .map(|event| {
                    event.kind.len() + event.fields.iter().map(|f| f.name.len()).sum::<usize>()
                })
                .collect(),
        }
    }

    /// The event type `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<EventDecl>> {
        self.declared.get(*self.by_kind.get(kind)?)
    }

    /// Bytes of the kind and field names of the event type at `index` (0
    /// for no such type).
    pub fn name_bytes(&self, index: u32) -> usize {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.name_bytes.get(index))
            .copied()
            .unwrap_or(0)
    }

    /// The event type declared at `index`.
    pub fn at(&self, index: u32) -> Option<&Arc<EventDecl>> {
        self.declared.get(usize::try_from(index).ok()?)
    }

    /// The event type declared at `index`, or the refusal of an event that
    /// names an undeclared one (with the name the log gives it, `#index`).
    fn declared_at(&self, index: u32) -> Result<&Arc<EventDecl>, (DispatchError, String)> {
        self.at(index).ok_or_else(|| {
            let kind = format!("#{index}");
            (DispatchError::UndeclaredKind(kind.clone()), kind)
        })
    }
}

/// The limits the host interfaces enforce (memory and time are enforced by
/// wasmtime itself).
#[derive(Debug, Clone, Copy)]
pub struct InstanceLimits {
    /// Events one call may dispatch.
    pub events_per_call: usize,
    /// Bytes of strings one event may carry.
    pub event_bytes: usize,
    /// Bytes of strings all events of one call may carry together.
    pub event_bytes_per_call: usize,
    /// Guest log lines per second.
    pub log_lines_per_second: u64,
}

impl From<&crate::app::Limits> for InstanceLimits {
    fn from(limits: &crate::app::Limits) -> Self {
        InstanceLimits {
            events_per_call: usize::try_from(limits.events_per_call).unwrap_or(usize::MAX),
            event_bytes: usize::try_from(limits.event_bytes).unwrap_or(usize::MAX),
            event_bytes_per_call: usize::try_from(limits.event_bytes_per_call)
                .unwrap_or(usize::MAX),
            log_lines_per_second: limits.log_lines_per_second,
        }
    }
}

/// A limit a guest ran into inside a host call; the call traps with it, and
/// the failure policy takes over.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LimitExceeded(pub String);

/// The data of one instance's store.
pub struct InstanceState {
    /// The instance name from the app file.
    pub name: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and table limits the store enforces.
    pub store_limits: super::sandbox::MeteredLimits,
    /// The instance's own configuration values, keys without prefix.
    pub config: BTreeMap<String, Value>,
    clock: StreamClock,
    /// Declared event types (empty until `describe` returned, and for
    /// handlers).
    pub catalog: Arc<EventCatalog>,
    /// Events dispatched during the current call, validated.
    pub dispatched: Vec<Dispatched>,
    /// Bytes of the events dispatched (or tried) during the current call.
    pub dispatched_bytes: usize,
    /// The record of the batch that triggers the events dispatched now
    /// (`events.triggered-by`); reset before each call.
    pub triggered_by: u32,
    /// Events refused during the instance's life.
    pub rejected: u64,
    limits_of_calls: InstanceLimits,
    /// Its `wasi:logging` lines and standard streams go here.
    log: Arc<GuestLog>,
    /// The secrets granted to this instance, by name.
    pub secrets: Arc<BTreeMap<String, String>>,
    http: wasmtime_wasi_http::WasiHttpCtx,
    /// Checks every outgoing HTTP request against the network grants.
    pub http_hooks: HttpDestinations,
    /// The ticks the instance asked for.
    pub timers: TimerRequests,
    /// Its durable state.
    pub state: StateAccess,
    /// The quota of its granted directory, if it may write one.
    pub dir_quota: Option<Arc<super::files::DirQuota>>,
    /// Its outbox, if it is a handler granted network destinations.
    pub delivery: Option<crate::delivery::Outbox>,
    /// What it sent through `exchange` since the host last took it.
    pub exchange: ExchangeOut,
}

/// Bytes of keyed messages (keys and payloads) one call may send.
pub const EXCHANGE_BYTES_PER_CALL: usize = 4 << 20;

/// What an instance sent through `exchange`, for the host to route.
#[derive(Debug, Default)]
pub struct ExchangeOut {
    /// Whether the instance runs one partition of a stream (a worker):
    /// what `exchange.partitioned` answers.
    pub partitioned: bool,
    /// The messages sent, in order, until the host takes them.
    pub sent: Vec<SentMessage>,
    /// Messages sent during the current call.
    pub sent_this_call: usize,
    /// Bytes sent during the current call.
    pub bytes_this_call: usize,
    /// Messages past a call's budget, dropped.
    pub dropped: u64,
}

/// A keyed message as an instance sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The record of the batch it was sent for.
    pub record: u32,
    /// The key that says which instance gets it.
    pub key: String,
    /// What the module makes of it.
    pub payload: Vec<u8>,
}

/// A keyed message as `keyed.receive` takes it.
#[derive(
    Debug, Clone, PartialEq, wasmtime::component::ComponentType, wasmtime::component::Lower,
)]
#[component(record)]
pub struct KeyedMessage {
    /// The key.
    pub key: String,
    /// What the sender sent.
    pub payload: Vec<u8>,
    /// The time of the record that sent it.
    pub time: Timestamp,
}

/// Longest key of a module's durable state, bytes.
const STATE_KEY_MAX: usize = 1024;

/// One instance's view of the state store: the committed keys and values
/// with this run's writes since the last checkpoint laid over them.
#[derive(Clone)]
pub struct StateAccess {
    /// What is committed: the store (or, for `check`, a read-only view of
    /// it); `None` when persistence is off (`state.enabled = false`):
    /// writes then last for the run only.
    store: Option<Arc<dyn StateReads>>,
    instance: Arc<str>,
    /// Writes since the last commit.
    pub pending: PendingWrites,
    /// What the state counts against its limit ([`entry_bytes`] summed)
    /// once `pending` is applied.
    usage: u64,
    /// The same, of what is committed.
    committed: u64,
    limit: u64,
}

impl StateAccess {
    /// Access for `instance` to `store` (or to none), whose committed state
    /// takes `committed` bytes, with writes refused past `limit` bytes.
    pub fn new(
        store: Option<Arc<dyn StateReads>>,
        instance: Arc<str>,
        committed: u64,
        limit: u64,
    ) -> Self {
        StateAccess {
            store,
            instance,
            pending: PendingWrites::new(),
            usage: committed,
            committed,
            limit,
        }
    }

    /// The same access with this run's uncommitted writes dropped (for a
    /// fresh instance after a failure: it starts from the last checkpoint).
    pub fn from_checkpoint(&self) -> Self {
        StateAccess::new(
            self.store.clone(),
            Arc::clone(&self.instance),
            self.committed,
            self.limit,
        )
    }

    /// What the state counts against its limit now (with this run's
    /// writes), bytes.
    pub fn usage(&self) -> u64 {
        self.usage
    }

    /// Whether the store holds any of this instance's state.
    pub fn holds_committed(&self) -> bool {
        self.store.is_some() && self.committed > 0
    }

    /// The pending writes were committed; the store grew by `growth` bytes.
    pub fn committed(&mut self, growth: i64) {
        self.committed = self.committed.saturating_add_signed(growth);
        self.usage = self.committed;
        self.pending.clear();
    }

    /// Bytes `key` takes now (pending write, else committed value).
    fn size_of(&self, key: &str) -> wasmtime::Result<u64> {
        let value_len = match self.pending.get(key) {
            Some(Some(value)) => Some(value.len()),
            Some(None) => None,
            None => match &self.store {
                Some(store) => store
                    .value_len(&self.instance, key)
                    .map_err(wasmtime::Error::new)?,
                None => None,
            },
        };
        Ok(value_len.map_or(0, |len| entry_bytes(key.len(), len)))
    }
}

/// The timer ticks one module asked for (`timers.every`, `timers.daily-at`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerRequests {
    /// Periodic kinds, by [`TimerRequests::bit`].
    periodic: u8,
    /// Minutes of the day (in `timers.utc_offset`) of daily ticks.
    pub daily: std::collections::BTreeSet<u16>,
}

impl TimerRequests {
    fn bit(kind: TickKind) -> u8 {
        match kind {
            TickKind::Minute => 1,
            TickKind::FiveMinutes => 2,
            TickKind::TenMinutes => 4,
            TickKind::FifteenMinutes => 8,
            TickKind::ThirtyMinutes => 16,
            TickKind::Hour => 32,
            TickKind::Daily => 64,
        }
    }

    /// Ask for ticks of periodic `kind` (as `timers.every` does).
    pub fn ask(&mut self, kind: TickKind) {
        self.periodic |= Self::bit(kind);
    }

    /// Whether ticks of periodic `kind` were asked for.
    pub fn wants(&self, kind: TickKind) -> bool {
        self.periodic & Self::bit(kind) != 0
    }

    /// Whether any tick was asked for.
    pub fn any(&self) -> bool {
        self.periodic != 0 || !self.daily.is_empty()
    }
}

/// The `wasi:http` hooks of an instance: a request goes out only to a
/// destination its network grants allow; others fail with
/// `HTTP-request-denied`.
#[derive(Default)]
pub struct HttpDestinations {
    /// The granted destinations.
    pub patterns: Arc<Vec<crate::app::NetworkPattern>>,
    /// Whether `wasi:http` requests go out at all: not while deliveries
    /// are captured (`delivery.capture`), when nothing may reach the
    /// network.
    pub offline: bool,
}

impl wasmtime_wasi_http::WasiHttpHooks for HttpDestinations {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                )>,
            > + Send,
    > {
        let _ = fut;
        if self.offline {
            tracing::warn!(
                "outgoing HTTP request denied: deliveries are captured (delivery.capture), nothing reaches the network"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let uri = request.uri();
        let host = uri.host().unwrap_or("");
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTP) {
                80
            } else {
                443
            });
        if !self
            .patterns
            .iter()
            .any(|pattern| pattern.allows_http(host, port))
        {
            tracing::warn!(
                host,
                port,
                "outgoing HTTP request denied: no network grant allows it"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

impl wasmtime_wasi_http::WasiHttpView for InstanceState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl InstanceState {
    /// State for an instance called `name` with a prepared WASI context
    /// (whose standard streams, if not granted, write to `log` too).
    pub fn new(
        name: Arc<str>,
        wasi: WasiCtx,
        store_limits: super::sandbox::MeteredLimits,
        clock: StreamClock,
        limits: InstanceLimits,
        log: Arc<GuestLog>,
    ) -> Self {
        let name_for_state = Arc::clone(&name);
        InstanceState {
            name,
            wasi,
            table: ResourceTable::new(),
            store_limits,
            config: BTreeMap::new(),
            clock,
            catalog: Arc::default(),
            dispatched: Vec::new(),
            dispatched_bytes: 0,
            triggered_by: Dispatched::AFTER_BATCH,
            rejected: 0,
            log,
            secrets: Arc::default(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_hooks: HttpDestinations::default(),
            limits_of_calls: limits,
            timers: TimerRequests::default(),
            state: StateAccess::new(None, Arc::clone(&name_for_state), 0, u64::MAX),
            dir_quota: None,
            delivery: None,
            exchange: ExchangeOut::default(),
        }
    }

    /// The stream clock's time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
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
        check_time(event.time).map_err(|error| (error, event.kind.clone()))?;
        if let Some(field) = event
            .fields
            .iter()
            .find(|field| !value_is_valid(&field.value))
        {
            return Err((DispatchError::WrongType(field.name.clone()), event.kind));
        }
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
        let values = fields.into_iter().map(|field| field.value).collect();
        Ok(self.dispatched(decl, event.summary, FieldValues::Values(values), event.time))
    }

    /// A checked event of type `decl` from this instance, at `time` or else
    /// the stream clock's.
    fn dispatched(
        &self,
        decl: &Arc<EventDecl>,
        summary: String,
        values: FieldValues,
        time: Option<Timestamp>,
    ) -> Dispatched {
        Dispatched {
            module: Arc::clone(&self.name),
            decl: Arc::clone(decl),
            time: time.unwrap_or_else(|| self.clock.now()),
            summary,
            values,
            record: self.triggered_by,
        }
    }

    /// Check values given in declared order against event type `kind` (an
    /// index into the descriptor's event types); if they fit, the event,
    /// else the reason and what the event type is called.
    fn validate_values(
        &self,
        kind: u32,
        summary: String,
        values: Vec<Value>,
        time: Option<Timestamp>,
    ) -> Result<Dispatched, (DispatchError, String)> {
        let decl = declared_values(&self.catalog, kind, &values)?;
        check_time(time).map_err(|error| (error, decl.kind.clone()))?;
        if let Some((declared, _)) = decl
            .fields
            .iter()
            .zip(&values)
            .find(|(_, value)| !value_is_valid(value))
        {
            return Err((
                DispatchError::WrongType(declared.name.clone()),
                decl.kind.clone(),
            ));
        }
        Ok(self.dispatched(decl, summary, FieldValues::Values(values), time))
    }

    /// Whether one more event of `size` bytes may be dispatched in this
    /// call; if not, the limit it hits (the call then traps).
    fn check_event_limits(&mut self, size: usize) -> wasmtime::Result<()> {
        check_event_limits(
            self.limits_of_calls,
            self.dispatched.len(),
            &mut self.dispatched_bytes,
            size,
        )
    }

    /// Take a validated event, or count and log why it was refused.
    fn accept(
        &mut self,
        validated: Result<Dispatched, (DispatchError, String)>,
    ) -> Result<(), DispatchError> {
        match validated {
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

/// The event type `kind` (an index) of `catalog` if `values` are its
/// fields' values in declared order; else why not, and what the event type
/// is called.
fn declared_values<'c>(
    catalog: &'c EventCatalog,
    kind: u32,
    values: &[Value],
) -> Result<&'c Arc<EventDecl>, (DispatchError, String)> {
    let decl = catalog.declared_at(kind)?;
    let refuse = |error| Err((error, decl.kind.clone()));
    if let Some(missing) = decl.fields.get(values.len()) {
        return refuse(DispatchError::MissingField(missing.name.clone()));
    }
    if values.len() > decl.fields.len() {
        return refuse(DispatchError::UndeclaredField(format!(
            "#{}",
            decl.fields.len()
        )));
    }
    match decl
        .fields
        .iter()
        .zip(values)
        .find(|(declared, value)| value.value_type() != declared.value_type)
    {
        Some((declared, _)) => refuse(DispatchError::WrongType(declared.name.clone())),
        None => Ok(decl),
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

impl secrets::Host for InstanceState {
    fn get(&mut self, name: String) -> Option<String> {
        self.secrets.get(&name).cloned()
    }
}

impl InstanceState {
    /// Put `delivery`, going to `host:port`, in the instance's outbox if
    /// the grants allow it.
    fn deliver(
        &self,
        (host, port): (String, u16),
        delivery: crate::delivery::Delivery,
    ) -> Result<(), String> {
        let Some(outbox) = &self.delivery else {
            return Err(
                "this handler may not deliver: the app file grants it no network destination (grants = { network = [\"HOST:PORT\"] })"
                    .into(),
            );
        };
        if !self
            .http_hooks
            .patterns
            .iter()
            .any(|pattern| pattern.allows_http(&host, port))
        {
            return Err(format!(
                "{host}:{port} is not among the network destinations granted to this handler"
            ));
        }
        outbox.submit(delivery)
    }
}

impl super::bindings::handler::correlator::plugin::delivery::Host for InstanceState {
    fn send_http(
        &mut self,
        request: super::bindings::handler::correlator::plugin::delivery::HttpRequest,
    ) -> Result<(), String> {
        let request = crate::delivery::HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        };
        let destination = request.check()?;
        self.deliver(destination, crate::delivery::Delivery::Http(request))
    }

    fn send_mail(
        &mut self,
        request: super::bindings::handler::correlator::plugin::delivery::MailRequest,
    ) -> Result<(), String> {
        use super::bindings::handler::correlator::plugin::delivery::MailSecurity as Wit;
        let mail = crate::delivery::MailRequest {
            server: request.server,
            security: match request.security {
                Wit::None => crate::delivery::MailSecurity::None,
                Wit::Starttls => crate::delivery::MailSecurity::Starttls,
                Wit::Tls => crate::delivery::MailSecurity::Tls,
            },
            username: request.username,
            password_secret: request.password_secret,
            sender: request.sender,
            recipients: request.recipients,
            message: request.message,
        };
        let destination = mail.check()?;
        if !mail.username.is_empty() && !self.secrets.contains_key(&mail.password_secret) {
            return Err(format!(
                "the password secret \"{}\" is not granted to this handler",
                mail.password_secret.escape_debug()
            ));
        }
        self.deliver(destination, crate::delivery::Delivery::Mail(mail))
    }
}

impl timers::Host for InstanceState {
    fn every(&mut self, kind: TickKind) -> Result<(), String> {
        if kind == TickKind::Daily {
            return Err("daily ticks come at a time of day: use daily-at".into());
        }
        self.timers.ask(kind);
        Ok(())
    }

    fn daily_at(&mut self, hour: u8, minute: u8) -> Result<(), String> {
        if hour > 23 || minute > 59 {
            return Err(format!(
                "{hour:02}:{minute:02} is not a time of day (00:00 to 23:59)"
            ));
        }
        self.timers
            .daily
            .insert(u16::from(hour) * 60 + u16::from(minute));
        Ok(())
    }
}

impl state::Host for InstanceState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let access = &self.state;
        if let Some(pending) = access.pending.get(&key) {
            return Ok(pending.clone());
        }
        match &access.store {
            Some(store) => store
                .get(&access.instance, &key)
                .map_err(wasmtime::Error::new),
            None => Ok(None),
        }
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        if key.is_empty() || key.len() > STATE_KEY_MAX {
            return Ok(Err(format!(
                "a state key must have 1 to {STATE_KEY_MAX} bytes, not {}",
                key.len()
            )));
        }
        let access = &self.state;
        let before = access.size_of(&key)?;
        let usage = (access.usage - before.min(access.usage)) + entry_bytes(key.len(), value.len());
        if usage > access.limit {
            return Ok(Err(format!(
                "state would grow to {usage} bytes, past its limit of {} MiB (limits.state_mib)",
                access.limit >> 20
            )));
        }
        let access = &mut self.state;
        access.usage = usage;
        access.pending.insert(key, Some(value));
        Ok(Ok(()))
    }

    fn delete(&mut self, key: String) {
        // No key of that length can be stored.
        if key.is_empty() || key.len() > STATE_KEY_MAX {
            return;
        }
        // If the store cannot be read, only the usage count is unsure, and
        // it is exact again after the next commit.
        let before = self.state.size_of(&key).unwrap_or_default();
        let access = &mut self.state;
        access.usage -= before.min(access.usage);
        // Only a key the store holds needs a tombstone until the next
        // commit; deleting any other (never written, or written only in
        // this run) just drops this run's write. So pending deletes are
        // bounded by what is committed, and a flood of deletes of distinct
        // keys costs the host nothing.
        let stored = match &access.store {
            Some(store) => store
                .value_len(&access.instance, &key)
                .map_or(true, |len| len.is_some()),
            None => false,
        };
        if stored {
            access.pending.insert(key, None);
        } else {
            access.pending.remove(&key);
        }
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        let access = &self.state;
        let mut keys: std::collections::BTreeSet<String> = match &access.store {
            Some(store) => store
                .keys(&access.instance)
                .map_err(wasmtime::Error::new)?
                .into_iter()
                .map(|(key, _)| key)
                .collect(),
            None => Default::default(),
        };
        for (key, value) in &access.pending {
            if value.is_some() {
                keys.insert(key.clone());
            } else {
                keys.remove(key);
            }
        }
        Ok(keys.into_iter().collect())
    }
}

impl exchange::Host for InstanceState {
    fn partitioned(&mut self) -> bool {
        self.exchange.partitioned
    }

    fn send(&mut self, index: u32, key: String, payload: Vec<u8>) {
        let size = key.len() + payload.len();
        let out = &mut self.exchange;
        if out.sent_this_call >= self.limits_of_calls.events_per_call
            || out.bytes_this_call + size > EXCHANGE_BYTES_PER_CALL
        {
            if out.dropped == 0 {
                tracing::warn!(
                    instance = %self.name,
                    "keyed messages past the call's budget ({} messages, {} MiB) are dropped and counted",
                    self.limits_of_calls.events_per_call,
                    EXCHANGE_BYTES_PER_CALL >> 20
                );
            }
            out.dropped += 1;
            return;
        }
        out.sent_this_call += 1;
        out.bytes_this_call += size;
        out.sent.push(SentMessage {
            record: index,
            key,
            payload,
        });
    }
}

impl clock::Host for InstanceState {
    fn now(&mut self) -> Timestamp {
        self.clock.now()
    }
}

impl events::Host for InstanceState {
    fn triggered_by(&mut self, index: u32) {
        self.triggered_by = index;
    }

    fn dispatch(&mut self, event: Event) -> wasmtime::Result<Result<(), DispatchError>> {
        self.check_event_limits(event_size(&event))?;
        let validated = self.validate(event);
        Ok(self.accept(validated))
    }

    fn dispatch_values(
        &mut self,
        kind: u32,
        summary: String,
        values: Vec<Value>,
        time: Option<Timestamp>,
    ) -> wasmtime::Result<Result<(), DispatchError>> {
        // The same size as the event with its names would have.
        let size = self.catalog.name_bytes(kind)
            + summary.len()
            + values.iter().map(value_size).sum::<usize>();
        self.check_event_limits(size)?;
        let validated = self.validate_values(kind, summary, values, time);
        Ok(self.accept(validated))
    }

    fn dispatch_encoded(
        &mut self,
        kind: u32,
        summary: String,
        values: Vec<u8>,
        time: Option<Timestamp>,
    ) -> wasmtime::Result<Result<(), DispatchError>> {
        let checked = self.catalog.declared_at(kind).and_then(|decl| {
            super::encoded::check(decl, &values)
                .and_then(|size| check_time(time).map(|()| size))
                .map(|size| (decl, size))
                .map_err(|error| (error, decl.kind.clone()))
        });
        // The same size as the event with its names would have; bytes that
        // do not unpack count as they are.
        let value_bytes = checked.as_ref().map_or(values.len(), |&(_, size)| size);
        let size = self.catalog.name_bytes(kind) + summary.len() + value_bytes;
        check_event_limits(
            self.limits_of_calls,
            self.dispatched.len(),
            &mut self.dispatched_bytes,
            size,
        )?;
        let validated = checked
            .map(|(decl, _)| self.dispatched(decl, summary, FieldValues::Encoded(values), time));
        Ok(self.accept(validated))
    }
}

/// Whether one more event of `size` bytes may be dispatched in a call that
/// has dispatched `dispatched` events of `dispatched_bytes` so far (which
/// it counts on); if not, the limit it hits (the call then traps). Apart
/// from [`InstanceState`] so that a caller may hold a borrow of its
/// catalog meanwhile.
fn check_event_limits(
    limits: InstanceLimits,
    dispatched: usize,
    dispatched_bytes: &mut usize,
    size: usize,
) -> wasmtime::Result<()> {
    if dispatched >= limits.events_per_call {
        return Err(wasmtime::Error::new(LimitExceeded(format!(
            "dispatched more than {} events in one call",
            limits.events_per_call
        ))));
    }
    if size > limits.event_bytes {
        return Err(wasmtime::Error::new(LimitExceeded(format!(
            "dispatched an event of {size} bytes (limit {})",
            limits.event_bytes
        ))));
    }
    *dispatched_bytes += size;
    if *dispatched_bytes > limits.event_bytes_per_call {
        return Err(wasmtime::Error::new(LimitExceeded(format!(
            "dispatched more than {} bytes of events in one call",
            limits.event_bytes_per_call
        ))));
    }
    Ok(())
}

/// An event's own time, if the guest gave one, must be valid
/// ([`Timestamp::is_valid`]); it is refused as a `wrong-type` of `time`.
fn check_time(time: Option<Timestamp>) -> Result<(), DispatchError> {
    match time {
        Some(time) if !time.is_valid() => Err(DispatchError::WrongType("time".into())),
        _ => Ok(()),
    }
}

/// Whether a field's value is one handlers can show: a timestamp must be
/// valid; anything else is.
fn value_is_valid(value: &Value) -> bool {
    match value {
        Value::Timestamp(time) => time.is_valid(),
        _ => true,
    }
}

/// Bytes a value counts for in an event's size.
fn value_size(value: &Value) -> usize {
    match value {
        Value::Text(text) | Value::Email(text) => text.len(),
        _ => 8,
    }
}

/// Bytes of the strings an event carries.
fn event_size(event: &Event) -> usize {
    event.kind.len()
        + event.summary.len()
        + event
            .fields
            .iter()
            .map(|field| field.name.len() + value_size(&field.value))
            .sum::<usize>()
}

impl logging::Host for InstanceState {
    fn log(&mut self, level: Level, context: String, message: String) {
        self.log.line(level, &context, message.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Severity, ValueType};

    #[test]
    fn values_by_index_are_checked_against_the_declared_fields() {
        let field = crate::types::undescribed_field;
        let catalog = EventCatalog::new(&[EventDecl {
            kind: "Login".into(),
            severity: Severity::Info,
            description: String::new(),
            fields: vec![
                field("user", ValueType::Text),
                field("port", ValueType::Integer),
            ],
        }]);
        let error = |values: &[Value], kind| {
            declared_values(&catalog, kind, values)
                .err()
                .map(|(error, kind)| (format!("{error:?}"), kind))
        };
        let good = [Value::Text("alice".into()), Value::Integer(22)];
        assert_eq!(error(&good, 0), None);
        assert_eq!(
            error(&good, 1),
            Some(("DispatchError::UndeclaredKind(\"#1\")".into(), "#1".into()))
        );
        assert_eq!(
            error(&good[..1], 0),
            Some((
                "DispatchError::MissingField(\"port\")".into(),
                "Login".into()
            ))
        );
        let more = [good[0].clone(), good[1].clone(), Value::Boolean(true)];
        assert_eq!(
            error(&more, 0),
            Some((
                "DispatchError::UndeclaredField(\"#2\")".into(),
                "Login".into()
            ))
        );
        let mistyped = [Value::Text("alice".into()), Value::Text("22".into())];
        assert_eq!(
            error(&mistyped, 0),
            Some(("DispatchError::WrongType(\"port\")".into(), "Login".into()))
        );
    }
}
