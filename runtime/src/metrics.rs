//! What a running app counts, for Prometheus (`metrics.listen`, off by
//! default): records read, events per module and kind, what each handler
//! was given and failed on, each instance's calls, call time, failures,
//! restarts, memory and state, the listener's connections and losses, the
//! courier's deliveries and the age of the last checkpoint.
//!
//! The counters are atomics in one process-wide registry (as Prometheus
//! clients keep a default registry): the thread that counts adds to its own
//! counters, and a scrape renders them in the text exposition format. No
//! label takes a value from input: instance names come from the app file,
//! kinds from what modules declare, and addresses are never labels.

use crate::delivery::DeliveryCounters;
use crate::listen::NetworkCounters;
use crate::record::ParseCounts;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

/// The registry every counter of the process is in.
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);
    &REGISTRY
}

/// Every counter of the process.
#[derive(Default)]
pub struct Registry {
    /// What the input was: `network` or `file` (set once a run starts).
    input: OnceLock<&'static str>,
    parsed: AtomicU64,
    unparsable: AtomicU64,
    not_utf8: AtomicU64,
    network: OnceLock<Arc<NetworkCounters>>,
    delivery: OnceLock<Arc<DeliveryCounters>>,
    instances: Mutex<Vec<Arc<InstanceMetrics>>>,
    events: Mutex<Vec<Arc<EventCount>>>,
    handlers: Mutex<Vec<Arc<HandlerMetrics>>>,
    /// Wall-clock seconds since the epoch of the last checkpoint (0: none).
    checkpoint_at: AtomicU64,
    checkpoint_position: AtomicU64,
}

/// What one module or handler instance did.
pub struct InstanceMetrics {
    instance: Arc<str>,
    role: &'static str,
    /// Calls into the instance (every export).
    pub calls: AtomicU64,
    /// Their time, nanoseconds.
    pub call_nanos: AtomicU64,
    /// Calls that failed (trapped, timed out, broke a limit).
    pub failures: AtomicU64,
    /// Fresh instances made after a failure.
    pub restarts: AtomicU64,
    /// Its linear memories' size after its last call, bytes.
    pub memory_bytes: AtomicU64,
    /// What its durable state counts against `limits.state_mib`, bytes.
    pub state_bytes: AtomicU64,
    /// The largest its linear memories were after a call, bytes.
    pub peak_memory_bytes: AtomicU64,
    /// WebAssembly instructions its calls ran, when they are counted
    /// (`system.usage_report`), else 0.
    pub instructions: AtomicU64,
}

/// Events one module dispatched of one kind.
pub struct EventCount {
    module: Arc<str>,
    kind: Arc<str>,
    /// How many.
    pub count: AtomicU64,
}

impl EventCount {
    /// Whether this counts `module`'s events of `kind`.
    pub fn is(&self, module: &str, kind: &str) -> bool {
        &*self.module == module && &*self.kind == kind
    }
}

/// What one handler's route counted.
pub struct HandlerMetrics {
    handler: Arc<str>,
    /// Events its filter selected, handed to it (or its notifier).
    pub events: AtomicU64,
    /// Events it reported as failed, or lost to its trap.
    pub failures: AtomicU64,
    /// Filter evaluations that failed (counted as not selected).
    pub filter_errors: AtomicU64,
}

impl Registry {
    /// Say what the run reads (`network` or `file`); the first call wins.
    pub fn set_input(&self, input: &'static str) {
        let _ = self.input.set(input);
    }

    /// The parser's counts so far (absolute, not added).
    pub fn parsed(&self, counts: &ParseCounts) {
        self.parsed.store(counts.records, Ordering::Relaxed);
        self.unparsable.store(counts.unparsable, Ordering::Relaxed);
        self.not_utf8.store(counts.not_utf8, Ordering::Relaxed);
    }

    /// The listener's counters, rendered at each scrape.
    pub fn set_network(&self, counters: Arc<NetworkCounters>) {
        let _ = self.network.set(counters);
    }

    /// The courier's counters, rendered at each scrape.
    pub fn set_delivery(&self, counters: Arc<DeliveryCounters>) {
        let _ = self.delivery.set(counters);
    }

    /// A checkpoint was committed after record `position`.
    pub fn checkpoint(&self, position: u64, written_at: u64) {
        self.checkpoint_position.store(position, Ordering::Relaxed);
        self.checkpoint_at.store(written_at, Ordering::Relaxed);
    }

    /// The counters of a new instance (`role`: `module` or `handler`).
    pub fn instance(&self, instance: &str, role: &'static str) -> Arc<InstanceMetrics> {
        let metrics = Arc::new(InstanceMetrics {
            instance: Arc::from(instance),
            role,
            calls: AtomicU64::new(0),
            call_nanos: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            peak_memory_bytes: AtomicU64::new(0),
            instructions: AtomicU64::new(0),
        });
        lock(&self.instances).push(Arc::clone(&metrics));
        metrics
    }

    /// What each instance used, for `system.usage_report`: its calls,
    /// instructions (0 unless counted), peak memory, and how many of
    /// `what` (records, or events) the run read, from which tests take
    /// per-record budgets.
    pub fn usage_report(&self, what: &str, read: u64) -> serde_json::Value {
        let instances: serde_json::Map<String, serde_json::Value> = lock(&self.instances)
            .iter()
            .map(|metrics| {
                let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                (
                    metrics.instance.to_string(),
                    serde_json::json!({
                        "role": metrics.role,
                        "calls": get(&metrics.calls),
                        "failures": get(&metrics.failures),
                        "instructions": get(&metrics.instructions),
                        "peak_memory_bytes": get(&metrics.peak_memory_bytes),
                    }),
                )
            })
            .collect();
        let mut report = serde_json::Map::new();
        report.insert(what.to_owned(), read.into());
        report.insert("instances".to_owned(), instances.into());
        report.into()
    }

    /// The counter of `module`'s events of `kind`.
    pub fn events(&self, module: &str, kind: &str) -> Arc<EventCount> {
        let mut events = lock(&self.events);
        if let Some(found) = events.iter().find(|e| e.is(module, kind)) {
            return Arc::clone(found);
        }
        let count = Arc::new(EventCount {
            module: Arc::from(module),
            kind: Arc::from(kind),
            count: AtomicU64::new(0),
        });
        events.push(Arc::clone(&count));
        count
    }

    /// The counters of a handler's route.
    pub fn handler(&self, handler: &str) -> Arc<HandlerMetrics> {
        let metrics = Arc::new(HandlerMetrics {
            handler: Arc::from(handler),
            events: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            filter_errors: AtomicU64::new(0),
        });
        lock(&self.handlers).push(Arc::clone(&metrics));
        metrics
    }

    /// Every counter in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        out.family(
            "correlator_build_info",
            "gauge",
            "The release, and the component contract modules and handlers are built against.",
        );
        out.sample(
            "correlator_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("contract", "correlator:plugin@0.1.0"),
            ],
            1,
        );
        let input = self.input.get().copied().unwrap_or("none");
        out.family(
            "correlator_records_total",
            "counter",
            "Messages read from the input, by whether they parsed as syslog records.",
        );
        out.sample(
            "correlator_records_total",
            &[("input", input), ("result", "parsed")],
            get(&self.parsed),
        );
        out.sample(
            "correlator_records_total",
            &[("input", input), ("result", "unparsable")],
            get(&self.unparsable),
        );
        out.family(
            "correlator_records_not_utf8_total",
            "counter",
            "Messages with bytes that are not UTF-8 (replaced by U+FFFD).",
        );
        out.sample(
            "correlator_records_not_utf8_total",
            &[("input", input)],
            get(&self.not_utf8),
        );

        out.family(
            "correlator_events_total",
            "counter",
            "Events modules dispatched (and the host accepted), by module and kind.",
        );
        for event in lock(&self.events).iter() {
            out.sample(
                "correlator_events_total",
                &[("module", &event.module), ("kind", &event.kind)],
                get(&event.count),
            );
        }

        let handlers = lock(&self.handlers).clone();
        for (name, help, value) in [
            (
                "correlator_handler_events_total",
                "Events a handler's filter selected and it was handed.",
                (|h: &HandlerMetrics| &h.events) as fn(&HandlerMetrics) -> &AtomicU64,
            ),
            (
                "correlator_handler_failures_total",
                "Events a handler reported as failed, or lost to its failure.",
                |h| &h.failures,
            ),
            (
                "correlator_filter_errors_total",
                "Filter evaluations that failed (the event counted as not selected).",
                |h| &h.filter_errors,
            ),
        ] {
            out.family(name, "counter", help);
            for handler in &handlers {
                out.sample(name, &[("handler", &handler.handler)], get(value(handler)));
            }
        }

        let instances = lock(&self.instances).clone();
        for (name, kind, help, value) in [
            (
                "correlator_instance_calls_total",
                "counter",
                "Calls into an instance, every export.",
                (|i: &InstanceMetrics| i.calls.load(Ordering::Relaxed) as f64)
                    as fn(&InstanceMetrics) -> f64,
            ),
            (
                "correlator_instance_call_seconds_total",
                "counter",
                "Time spent in calls into an instance.",
                |i| i.call_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            ),
            (
                "correlator_instance_failures_total",
                "counter",
                "Calls into an instance that failed: trapped, timed out or broke a limit.",
                |i| i.failures.load(Ordering::Relaxed) as f64,
            ),
            (
                "correlator_instance_restarts_total",
                "counter",
                "Fresh instances made after a failure.",
                |i| i.restarts.load(Ordering::Relaxed) as f64,
            ),
            (
                "correlator_instance_memory_bytes",
                "gauge",
                "An instance's linear memory after its last call.",
                |i| i.memory_bytes.load(Ordering::Relaxed) as f64,
            ),
            (
                "correlator_instance_state_bytes",
                "gauge",
                "What a module's durable state counts against limits.state_mib.",
                |i| i.state_bytes.load(Ordering::Relaxed) as f64,
            ),
        ] {
            out.family(name, kind, help);
            // Only modules keep durable state.
            let modules_only = name == "correlator_instance_state_bytes";
            for instance in instances
                .iter()
                .filter(|i| !modules_only || i.role == "module")
            {
                out.sample_f64(
                    name,
                    &[("instance", &instance.instance), ("role", instance.role)],
                    value(instance),
                );
            }
        }

        if let Some(network) = self.network.get() {
            let n = network.snapshot();
            out.family(
                "correlator_connections_total",
                "counter",
                "TCP and TLS connections accepted.",
            );
            out.sample("correlator_connections_total", &[], n.connections);
            out.family(
                "correlator_connections_open",
                "gauge",
                "Connections open now.",
            );
            out.sample("correlator_connections_open", &[], n.open_connections);
            out.family(
                "correlator_connections_closed_total",
                "counter",
                "Connections the listener closed, by why.",
            );
            for (reason, count) in [
                ("refused_full", n.refused_connections),
                ("idle", n.idle_closed),
                ("silent", n.silent_closed),
                ("evicted_silent", n.evicted_silent),
                ("tls_failed", n.tls_failures),
            ] {
                out.sample(
                    "correlator_connections_closed_total",
                    &[("reason", reason)],
                    count,
                );
            }
            out.family(
                "correlator_messages_received_total",
                "counter",
                "Messages cut from streams and datagrams and passed on.",
            );
            out.sample("correlator_messages_received_total", &[], n.messages);
            out.family(
                "correlator_messages_lost_total",
                "counter",
                "Messages dropped or cut by the listener, by why.",
            );
            for (reason, count) in [
                ("udp_pipeline_full", n.dropped_udp),
                ("oversize_dropped", n.dropped_oversize),
                ("oversize_truncated", n.truncated),
                ("incomplete", n.incomplete),
            ] {
                out.sample(
                    "correlator_messages_lost_total",
                    &[("reason", reason)],
                    count,
                );
            }
            out.family(
                "correlator_accept_errors_total",
                "counter",
                "Errors accepting connections (such as running out of file descriptors).",
            );
            out.sample("correlator_accept_errors_total", &[], n.accept_errors);
        }

        if let Some(delivery) = self.delivery.get() {
            out.family(
                "correlator_deliveries_total",
                "counter",
                "Deliveries of handlers that act on events (webhook, sms, email), by outcome.",
            );
            for (result, counter) in [
                ("submitted", &delivery.submitted),
                ("delivered", &delivery.delivered),
                ("retried", &delivery.retries),
                ("dead", &delivery.dead),
            ] {
                out.sample(
                    "correlator_deliveries_total",
                    &[("result", result)],
                    get(counter),
                );
            }
        }

        let committed = get(&self.checkpoint_at);
        if committed > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            out.family(
                "correlator_checkpoint_age_seconds",
                "gauge",
                "Seconds since the state's last checkpoint was committed.",
            );
            out.sample(
                "correlator_checkpoint_age_seconds",
                &[],
                now.saturating_sub(committed),
            );
            out.family(
                "correlator_checkpoint_position",
                "gauge",
                "The input position (record) the last checkpoint covers.",
            );
            out.sample(
                "correlator_checkpoint_position",
                &[],
                get(&self.checkpoint_position),
            );
        }
        out.text
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A counter list is never left half-changed: go on after a panic.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The text being rendered.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.text.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.text.push('{');
        for (n, (label, value)) in labels.iter().enumerate() {
            if n > 0 {
                self.text.push(',');
            }
            let _ = write!(self.text, "{label}=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.text.push_str("\\\\"),
                    '"' => self.text.push_str("\\\""),
                    '\n' => self.text.push_str("\\n"),
                    c => self.text.push(c),
                }
            }
            self.text.push('"');
        }
        self.text.push('}');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.labels(name, labels);
        let _ = writeln!(self.text, " {value}");
    }

    fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.labels(name, labels);
        let _ = writeln!(self.text, " {value}");
    }
}

/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The most a request head may have.
const REQUEST_BYTES: usize = 8 << 10;

/// Serve `GET /metrics` on `address` from a thread of its own, for the
/// rest of the process. Binding is done here, so that a busy or bad address
/// stops start-up with the reason.
pub fn serve(address: SocketAddr) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(address)
        .with_context(|| format!("metrics.listen: cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(error) = answer(stream) {
                            tracing::debug!("metrics request not answered: {error}");
                        }
                    }
                    Err(error) => {
                        tracing::warn!("metrics endpoint cannot accept: {error}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .context("cannot start the metrics thread")?;
    tracing::info!("metrics on http://{bound}/metrics");
    Ok(bound)
}

/// Read one request and answer it: the metrics for `GET /metrics`, else
/// 404 or 405. One request per connection.
fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_BYTES {
        let count = stream.read(&mut buffer)?;
        if count == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..count]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next().unwrap_or_default(), words.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, body) = match (method, path) {
        (b"GET", Some(b"/metrics")) => ("200 OK", registry().render()),
        (b"GET", _) => ("404 Not Found", "metrics are at /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "only GET\n".to_owned()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_families_come_with_help_and_type() {
        let mut out = Exposition::default();
        out.family("x_total", "counter", "Things.");
        out.sample("x_total", &[("a", "q\"b\\c\nd"), ("b", "e")], 3);
        out.sample("x_total", &[], 4);
        assert_eq!(
            out.text,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"q\\\"b\\\\c\\nd\",b=\"e\"} 3\nx_total 4\n"
        );
    }
}
