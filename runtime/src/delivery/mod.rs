//! Delivery: what handlers hand the host to send (`delivery.send-http`),
//! sent beside the pipeline until the destination accepts it.
//!
//! A handler renders a request and puts it in its outbox; the **courier**
//! (a thread of its own, running tokio) sends each handler's requests in
//! order, one at a time, so that a slow or dead destination holds up only
//! its own handler's deliveries, never records or other handlers. A request
//! that fails for a reason that may pass (no connection, a timeout, 408,
//! 429, a 5xx) is tried again after an exponential backoff with jitter, or
//! after the `Retry-After` the destination asked for; one refused for good
//! (any other 4xx, a redirect) or older than `delivery.max_age_s` is set
//! aside as dead and logged. At the end of a run the courier goes on for at
//! most `delivery.shutdown_wait_s`; what is still waiting then is reported.
//!
//! With durable state, the outboxes are durable too: each delivery handed
//! over is written to the state store with the next checkpoint (which comes
//! only after the handlers have handled every event it covers), and removed
//! once done with ([`Journal`]); at start-up the courier takes up what the
//! store holds. So a delivery is lost neither to a crash nor to a restart:
//! one handed over after the last checkpoint comes again from its record
//! (which that checkpoint does not cover), and one done with after it is
//! sent again (a duplicate, within one checkpoint interval).
//!
//! Nothing of a request's headers is logged (they carry credentials).

mod http;
mod smtp;

use crate::config_store::ConfigStore;
use crate::state_store::OutboxChanges;
use crate::types::{Value, ValueType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Requests one handler may have waiting; past it `send-http` is refused
/// (the handler's failure policy then applies to the event).
pub const OUTBOX_ENTRIES: usize = 100_000;

/// Bytes of requests (URL, headers and body) one handler may have waiting,
/// so that the bound holds whatever the requests' size.
pub const OUTBOX_BYTES: u64 = 256 << 20;

/// Largest body a request may carry.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The delivery configuration items, with defaults and what they are for.
pub fn config_items() -> [(&'static str, ValueType, Value, &'static str); 6] {
    [
        (
            "delivery.retry_base_ms",
            ValueType::Integer,
            Value::Integer(1000),
            "first wait before a failed delivery is tried again; each further failure doubles it (with jitter)",
        ),
        (
            "delivery.retry_max_s",
            ValueType::Integer,
            Value::Integer(300),
            "longest wait between two tries of one delivery (a Retry-After asked for is honoured beyond it)",
        ),
        (
            "delivery.max_age_s",
            ValueType::Integer,
            Value::Integer(86_400),
            "a delivery not accepted this many seconds after it was handed over is set aside as dead",
        ),
        (
            "delivery.tls_ca_file",
            ValueType::Text,
            Value::Text(String::new()),
            "PEM file of CA certificates trusted for deliveries (HTTPS, SMTP over TLS) besides the web's roots, for private servers",
        ),
        (
            "delivery.shutdown_wait_s",
            ValueType::Integer,
            Value::Integer(10),
            "at the end of a run, how long deliveries still waiting are tried before the process exits",
        ),
        (
            "delivery.capture",
            ValueType::Text,
            Value::Text(String::new()),
            "write every delivery to this file as a JSON line (headers and all) instead of sending it, and let no component reach the network otherwise (sockets, wasi:http), to try handlers without reaching anything (correlator test uses it); empty: deliveries are sent",
        ),
    ]
}

/// How deliveries are retried, checked.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Wait after the first failure.
    pub base: Duration,
    /// Longest wait between tries (unless the destination asks for longer).
    pub max: Duration,
    /// Age at which a delivery is given up.
    pub max_age: Duration,
    /// How long the courier goes on at the end of a run.
    pub shutdown_wait: Duration,
}

impl RetryPolicy {
    /// Read and check the `delivery.*` items.
    pub fn from_store(store: &ConfigStore) -> anyhow::Result<Self> {
        let seconds_or_millis = |key: &str, range: std::ops::RangeInclusive<i64>| {
            let value = store.integer(key).unwrap_or(0);
            if range.contains(&value) {
                Ok(value.unsigned_abs())
            } else {
                Err(anyhow::anyhow!(
                    "{key} must be between {} and {}, not {value}",
                    range.start(),
                    range.end()
                ))
            }
        };
        Ok(RetryPolicy {
            base: Duration::from_millis(seconds_or_millis(
                "delivery.retry_base_ms",
                1..=3_600_000,
            )?),
            max: Duration::from_secs(seconds_or_millis("delivery.retry_max_s", 1..=86_400)?),
            max_age: Duration::from_secs(seconds_or_millis("delivery.max_age_s", 1..=30 * 86_400)?),
            shutdown_wait: Duration::from_secs(seconds_or_millis(
                "delivery.shutdown_wait_s",
                0..=3_600,
            )?),
        })
    }

    /// The wait after failure number `failures` (from 1): the base doubled
    /// for each earlier failure, at most `max`, then between half of that
    /// and all of it (`jitter` in [0, 1)), so that handlers that failed
    /// together do not all come back at once.
    fn backoff(&self, failures: u32, jitter: f64) -> Duration {
        let doubled = self
            .base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        doubled
            .min(self.max)
            .mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }
}

/// An HTTP request a handler handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `POST`, `PUT` or `PATCH`.
    pub method: String,
    /// Where to: its host and port were checked against the grants.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// What it weighs against [`OUTBOX_BYTES`].
    fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        (self.url.len() + headers + self.body.len()) as u64
    }

    /// Check what a guest handed over: a method we send, an `http` or
    /// `https` URL with a host, headers that HTTP can carry, a body within
    /// [`MAX_BODY_BYTES`]. Returns the URL's host and port, for the grant
    /// check.
    pub fn check(&self) -> Result<(String, u16), String> {
        if !matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            return Err(format!(
                "method \"{}\" is not POST, PUT or PATCH",
                self.method.escape_debug()
            ));
        }
        let uri: ::http::Uri = self
            .url
            .parse()
            .map_err(|error| format!("\"{}\" is not a URL: {error}", self.url.escape_debug()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "\"{}\" is not an http or https URL",
                    self.url.escape_debug()
                ));
            }
        };
        let host = uri
            .host()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| format!("\"{}\" names no host", self.url.escape_debug()))?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        for (name, value) in &self.headers {
            ::http::HeaderName::try_from(name.as_str())
                .map_err(|_| format!("\"{}\" is not a header name", name.escape_debug()))?;
            ::http::HeaderValue::try_from(value.as_str()).map_err(|_| {
                format!("the value of header \"{name}\" holds a line break or a control character")
            })?;
        }
        if self.body.len() > MAX_BODY_BYTES {
            return Err(format!(
                "a body of {} bytes is over the {MAX_BODY_BYTES} a delivery may carry",
                self.body.len()
            ));
        }
        Ok((host.trim_matches(['[', ']']).to_owned(), port))
    }
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailSecurity {
    /// Plain text (no password is sent over it).
    None,
    /// Upgraded with STARTTLS.
    Starttls,
    /// TLS from the first byte.
    Tls,
}

/// An e-mail a handler handed over: the message whole, and its envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailRequest {
    /// `HOST:PORT` of the SMTP server.
    pub server: String,
    /// How the connection is secured.
    pub security: MailSecurity,
    /// The user to authenticate as; empty: none.
    pub username: String,
    /// The granted secret holding the password (read when sending).
    pub password_secret: String,
    /// The envelope's sender.
    pub sender: String,
    /// The envelope's recipients.
    pub recipients: Vec<String>,
    /// Headers and body (RFC 5322).
    pub message: Vec<u8>,
}

impl MailRequest {
    /// Check what a guest handed over; returns the server's host and port,
    /// for the grant check.
    pub fn check(&self) -> Result<(String, u16), String> {
        let (host, port) = self
            .server
            .rsplit_once(':')
            .and_then(|(host, port)| {
                Some((host.trim_matches(['[', ']']), port.parse::<u16>().ok()?))
            })
            .filter(|(host, _)| !host.is_empty())
            .ok_or_else(|| format!("\"{}\" is not HOST:PORT", self.server.escape_debug()))?;
        let address_ok = |address: &str| {
            !address.is_empty()
                && address.contains('@')
                && !address
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '<' | '>' | ' '))
        };
        for address in std::iter::once(&self.sender).chain(&self.recipients) {
            if !address_ok(address) {
                return Err(format!(
                    "\"{}\" is not an e-mail address",
                    address.escape_debug()
                ));
            }
        }
        if self.recipients.is_empty() {
            return Err("an e-mail needs at least one recipient".into());
        }
        if self.username.chars().any(char::is_control) {
            return Err("the user name holds a control character".into());
        }
        if self.message.len() > MAX_BODY_BYTES {
            return Err(format!(
                "a message of {} bytes is over the {MAX_BODY_BYTES} a delivery may carry",
                self.message.len()
            ));
        }
        Ok((host.to_owned(), port))
    }
}

/// What a handler hands over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Delivery {
    /// An HTTP request.
    Http(HttpRequest),
    /// An e-mail.
    Mail(MailRequest),
}

impl Delivery {
    /// What it weighs against [`OUTBOX_BYTES`].
    fn weight(&self) -> u64 {
        match self {
            Delivery::Http(request) => request.weight(),
            Delivery::Mail(mail) => {
                (mail.message.len() + mail.recipients.iter().map(String::len).sum::<usize>()) as u64
            }
        }
    }

    /// Where it goes, for log lines and `correlator outbox` (never a
    /// header or a credential).
    fn target(&self) -> String {
        match self {
            Delivery::Http(request) => format!("{} {}", request.method, request.url),
            Delivery::Mail(mail) => {
                format!("mail via {} to {}", mail.server, mail.recipients.join(", "))
            }
        }
    }

    fn size(&self) -> usize {
        match self {
            Delivery::Http(request) => request.body.len(),
            Delivery::Mail(mail) => mail.message.len(),
        }
    }
}

/// A handler's granted secrets, by name (an SMTP password is read from
/// them when the mail is sent).
pub type Secrets = Arc<BTreeMap<String, String>>;

/// What every delivery task sends with: the trusted roots, or the file
/// deliveries are captured in instead.
struct Transport {
    tls: Arc<rustls::ClientConfig>,
    /// `delivery.capture`: each delivery becomes a JSON line here, and
    /// nothing is sent.
    capture: Option<std::sync::Mutex<std::fs::File>>,
}

impl Transport {
    async fn send(
        &self,
        handler: &str,
        delivery: &Delivery,
        secrets: &BTreeMap<String, String>,
    ) -> http::Outcome {
        if let Some(capture) = &self.capture {
            return capture_delivery(capture, handler, delivery);
        }
        match delivery {
            Delivery::Http(request) => http::send(request, &self.tls).await,
            Delivery::Mail(mail) => {
                let password = secrets.get(&mail.password_secret).map(String::as_str);
                smtp::send(mail, password, &self.tls).await
            }
        }
    }
}

/// Write `delivery` to the capture file as one JSON line (bodies and
/// messages as text, invalid UTF-8 replaced), as accepted.
fn capture_delivery(
    capture: &std::sync::Mutex<std::fs::File>,
    handler: &str,
    delivery: &Delivery,
) -> http::Outcome {
    use std::io::Write as _;
    let line = match delivery {
        Delivery::Http(request) => serde_json::json!({
            "handler": handler,
            "kind": "http",
            "method": request.method,
            "url": request.url,
            "headers": request.headers,
            "body": String::from_utf8_lossy(&request.body),
        }),
        Delivery::Mail(mail) => serde_json::json!({
            "handler": handler,
            "kind": "mail",
            "server": mail.server,
            "security": mail.security,
            "username": mail.username,
            "sender": mail.sender,
            "recipients": mail.recipients,
            "message": String::from_utf8_lossy(&mail.message),
        }),
    };
    let mut file = capture
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match writeln!(file, "{line}") {
        Ok(()) => http::Outcome::Accepted,
        Err(error) => http::Outcome::Failed {
            reason: format!("cannot write the capture of deliveries: {error}"),
            retry_after: None,
        },
    }
}

/// The TLS client configuration of deliveries: the web's roots, and the
/// CA certificates of `ca_file` (PEM) when given.
pub fn tls_config(ca_file: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let ca_file = ca_file.trim();
    if !ca_file.is_empty() {
        let certificates = CertificateDer::pem_file_iter(ca_file).map_err(|error| {
            anyhow::anyhow!("delivery.tls_ca_file: cannot read {ca_file}: {error}")
        })?;
        for certificate in certificates {
            let certificate = certificate
                .map_err(|error| anyhow::anyhow!("delivery.tls_ca_file: {ca_file}: {error}"))?;
            roots
                .add(certificate)
                .map_err(|error| anyhow::anyhow!("delivery.tls_ca_file: {ca_file}: {error}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| anyhow::anyhow!("cannot set up TLS for deliveries: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One request in an outbox.
#[derive(Debug, Clone)]
struct Parcel {
    /// Its number in its handler's outbox (and in the state store).
    number: u64,
    request: Delivery,
    /// When it was handed over.
    created: SystemTime,
    /// Failed tries so far.
    failures: u32,
}

/// What waits in each handler's outbox: requests and their bytes.
#[derive(Debug)]
struct Waiting {
    count: Vec<AtomicU64>,
    bytes: Vec<AtomicU64>,
}

impl Waiting {
    fn add(&self, handler: usize, weight: u64) {
        if let (Some(count), Some(bytes)) = (self.count.get(handler), self.bytes.get(handler)) {
            count.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(weight, Ordering::Relaxed);
        }
    }

    fn remove(&self, handler: usize, weight: u64) {
        if let (Some(count), Some(bytes)) = (self.count.get(handler), self.bytes.get(handler)) {
            count.fetch_sub(1, Ordering::Relaxed);
            bytes.fetch_sub(weight, Ordering::Relaxed);
        }
    }

    /// (requests, bytes) waiting for `handler`.
    fn of(&self, handler: usize) -> (u64, u64) {
        let get = |counters: &[AtomicU64]| {
            counters
                .get(handler)
                .map_or(0, |counter| counter.load(Ordering::Relaxed))
        };
        (get(&self.count), get(&self.bytes))
    }
}

/// A delivery as the state store keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    request: Delivery,
    /// When it was handed over, seconds since the epoch.
    created: u64,
}

/// A delivery given up, as the state store keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct DeadLetter {
    delivery: Stored,
    /// Why it was given up.
    reason: String,
    /// When, seconds since the epoch.
    given_up: u64,
}

fn seconds_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// `YYYY-MM-DD HH:MM:SS UTC` of seconds since the epoch.
fn utc(seconds: u64) -> String {
    crate::record::time::format_utc(i64::try_from(seconds).unwrap_or(i64::MAX))
}

/// One line for `correlator outbox list` of a delivery as stored, waiting
/// (`dead` false) or given up; never its headers (credentials).
pub fn describe(bytes: &[u8], dead: bool) -> String {
    let line = |stored: &Stored| {
        format!(
            "{}, {} bytes, handed over {}",
            stored.request.target(),
            stored.request.size(),
            utc(stored.created)
        )
    };
    if dead {
        match serde_json::from_slice::<DeadLetter>(bytes) {
            Ok(letter) => format!(
                "{}, given up {}: {}",
                line(&letter.delivery),
                utc(letter.given_up),
                letter.reason
            ),
            Err(error) => format!("cannot be read: {error}"),
        }
    } else {
        match serde_json::from_slice::<Stored>(bytes) {
            Ok(stored) => line(&stored),
            Err(error) => format!("cannot be read: {error}"),
        }
    }
}

/// A dead letter, as a delivery to send again, handed over now (its
/// maximum age counts from the retry); `None` if it cannot be read.
pub fn revive(bytes: &[u8]) -> Option<Vec<u8>> {
    let letter: DeadLetter = serde_json::from_slice(bytes).ok()?;
    serde_json::to_vec(&Stored {
        request: letter.delivery.request,
        created: seconds_since_epoch(SystemTime::now()),
    })
    .ok()
}

/// The outboxes' changes not committed yet, shared by the handlers (who
/// add) and the courier (who removes); the module thread takes them into
/// each checkpoint's commit.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<OutboxChanges>>);

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxChanges> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take the changes, to commit them.
    pub fn take(&self) -> OutboxChanges {
        std::mem::take(&mut *self.lock())
    }

    /// Record what `handler`'s notifier holds now (`notify.rs`), to commit
    /// with the next checkpoint in place of what it held before.
    pub fn note_notices(&self, handler: &str, stored: Vec<u8>) {
        let mut held = self.lock();
        held.notices.retain(|(name, _)| name != handler);
        held.notices.push((handler.to_owned(), stored));
    }

    /// Put back changes a commit failed to write (before what came since).
    pub fn put_back(&self, mut changes: OutboxChanges) {
        let mut held = self.lock();
        changes.merge(std::mem::take(&mut *held));
        *held = changes;
    }
}

/// What the courier counted.
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    /// Requests handed over.
    pub submitted: AtomicU64,
    /// Requests the destination accepted.
    pub delivered: AtomicU64,
    /// Tries that failed and were (or would be) tried again.
    pub retries: AtomicU64,
    /// Requests set aside as dead.
    pub dead: AtomicU64,
}

/// The courier: sends every handler's requests beside the pipeline.
/// Cheap to clone; every clone hands over to the same thread.
#[derive(Clone)]
pub struct Courier {
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<DeliveryCounters>,
    /// What waits, per handler (by the order handlers were added).
    waiting: Arc<Waiting>,
    handlers: Arc<Vec<Arc<str>>>,
    policy: RetryPolicy,
    /// The next delivery's number (numbers go on from those stored).
    next_number: Arc<AtomicU64>,
    /// With durable state: the changes to commit.
    journal: Option<Journal>,
}

enum Command {
    Send {
        handler: usize,
        parcel: Parcel,
    },
    /// Stop within the wait; answer with what is still waiting.
    Finish {
        wait: Duration,
        done: std::sync::mpsc::SyncSender<()>,
    },
}

/// What one handler may hand the courier: its own outbox.
#[derive(Clone)]
pub struct Outbox {
    courier: Courier,
    handler: usize,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("handler", &self.courier.handlers.get(self.handler))
            .finish()
    }
}

impl Outbox {
    /// Put `request` (checked and granted by the caller) in the outbox.
    pub fn submit(&self, request: Delivery) -> Result<(), String> {
        let waiting = &self.courier.waiting;
        let weight = request.weight();
        let (count, bytes) = waiting.of(self.handler);
        if count >= OUTBOX_ENTRIES as u64 || bytes + weight > OUTBOX_BYTES {
            return Err(format!(
                "the outbox is full ({OUTBOX_ENTRIES} deliveries or {} MiB wait for their destination)",
                OUTBOX_BYTES >> 20
            ));
        }
        let created = SystemTime::now();
        let number = self.courier.next_number.fetch_add(1, Ordering::Relaxed);
        if let Some(journal) = &self.courier.journal {
            let stored = Stored {
                request: request.clone(),
                created: created
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_secs()),
            };
            let bytes = serde_json::to_vec(&stored)
                .map_err(|error| format!("cannot keep the delivery: {error}"))?;
            journal.lock().added.push((
                self.courier.handlers[self.handler].to_string(),
                number,
                bytes,
            ));
        }
        waiting.add(self.handler, weight);
        self.courier
            .counters
            .submitted
            .fetch_add(1, Ordering::Relaxed);
        let parcel = Parcel {
            number,
            request,
            created,
            failures: 0,
        };
        self.courier
            .commands
            .send(Command::Send {
                handler: self.handler,
                parcel,
            })
            .map_err(|_| "the courier has stopped".to_owned())
    }
}

impl Courier {
    /// Start the courier for `handlers` (the names of the handlers that may
    /// deliver, with their granted secrets), with `policy`, trusting `tls`;
    /// with a `journal`, the outboxes are durable (then give it what the
    /// state store holds with [`Courier::resume`]); with a `capture` file,
    /// deliveries are written there instead of sent (`delivery.capture`).
    pub fn start(
        handlers: Vec<(Arc<str>, Secrets)>,
        policy: RetryPolicy,
        journal: Option<Journal>,
        tls: Arc<rustls::ClientConfig>,
        capture: Option<&std::path::Path>,
    ) -> anyhow::Result<Courier> {
        let capture = match capture {
            None => None,
            Some(path) => Some(std::sync::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| {
                        anyhow::anyhow!("delivery.capture: cannot open {}: {error}", path.display())
                    })?,
            )),
        };
        let (handlers, secrets): (Vec<_>, Vec<_>) = handlers.into_iter().unzip();
        let transport = Arc::new(Transport { tls, capture });
        let (commands, receiver) = mpsc::unbounded_channel();
        let counters = Arc::new(DeliveryCounters::default());
        crate::metrics::registry().set_delivery(Arc::clone(&counters));
        let waiting = Arc::new(Waiting {
            count: handlers.iter().map(|_| AtomicU64::new(0)).collect(),
            bytes: handlers.iter().map(|_| AtomicU64::new(0)).collect(),
        });
        let courier = Courier {
            commands,
            counters: Arc::clone(&counters),
            waiting: Arc::clone(&waiting),
            handlers: Arc::new(handlers),
            policy,
            next_number: Arc::new(AtomicU64::new(1)),
            journal: journal.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| anyhow::anyhow!("cannot start the courier's runtime: {error}"))?;
        let names = Arc::clone(&courier.handlers);
        std::thread::Builder::new()
            .name("courier".into())
            .spawn(move || {
                let each = Each {
                    waiting,
                    counters,
                    policy,
                    journal,
                    transport,
                    secrets,
                };
                runtime.block_on(run(receiver, names, each))
            })
            .map_err(|error| anyhow::anyhow!("cannot start the courier thread: {error}"))?;
        Ok(courier)
    }

    /// The durable outboxes' changes, for the checkpoints to commit.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Take up the deliveries an earlier run left in the state store
    /// (before any new one is handed over: numbers go on from theirs).
    pub fn resume(&self, stored: Vec<(String, u64, Vec<u8>)>) {
        if let Some(last) = stored.iter().map(|(_, number, _)| *number).max() {
            self.next_number.fetch_max(last + 1, Ordering::Relaxed);
        }
        let mut resumed = 0u64;
        for (handler, number, bytes) in stored {
            let Some(index) = self.handlers.iter().position(|name| **name == *handler) else {
                tracing::warn!(
                    handler,
                    "a delivery in the state store belongs to a handler that does not deliver in this app; it stays there"
                );
                continue;
            };
            let stored: Stored = match serde_json::from_slice(&bytes) {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::error!(
                        handler,
                        number,
                        "a stored delivery cannot be read ({error}); it is dropped"
                    );
                    if let Some(journal) = &self.journal {
                        journal.lock().removed.push((handler, number));
                    }
                    continue;
                }
            };
            let parcel = Parcel {
                number,
                request: stored.request,
                created: SystemTime::UNIX_EPOCH + Duration::from_secs(stored.created),
                failures: 0,
            };
            self.waiting.add(index, parcel.request.weight());
            let sent = self.commands.send(Command::Send {
                handler: index,
                parcel,
            });
            if sent.is_ok() {
                resumed += 1;
            }
        }
        if resumed > 0 {
            tracing::info!(
                resumed,
                "taking up the deliveries an earlier run left waiting"
            );
        }
    }

    /// The outbox of handler `name`, if it may deliver.
    pub fn outbox(&self, name: &str) -> Option<Outbox> {
        let handler = self.handlers.iter().position(|known| &**known == name)?;
        Some(Outbox {
            courier: self.clone(),
            handler,
        })
    }

    /// What was counted so far.
    pub fn counters(&self) -> &DeliveryCounters {
        &self.counters
    }

    /// At the end of a run: go on delivering for at most
    /// `delivery.shutdown_wait_s`, then stop; log what is still waiting.
    pub fn finish(&self) {
        let wait = self.policy.shutdown_wait;
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        if self.commands.send(Command::Finish { wait, done }).is_ok() {
            // The courier answers within the wait; a little more for the
            // answer itself.
            let _ = finished.recv_timeout(wait + Duration::from_secs(5));
        }
        let counters = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        for (index, name) in self.handlers.iter().enumerate() {
            let (waiting, _) = self.waiting.of(index);
            if waiting > 0 {
                tracing::warn!(
                    handler = %name,
                    waiting,
                    "deliveries not accepted by the end of the run are given up"
                );
            }
        }
        tracing::info!(
            submitted = get(&counters.submitted),
            delivered = get(&counters.delivered),
            retries = get(&counters.retries),
            dead = get(&counters.dead),
            "deliveries"
        );
    }
}

/// The courier thread: one task per handler, each sending its requests in
/// order.
/// What the courier thread hands each handler's task.
struct Each {
    waiting: Arc<Waiting>,
    counters: Arc<DeliveryCounters>,
    policy: RetryPolicy,
    journal: Option<Journal>,
    transport: Arc<Transport>,
    /// Each handler's granted secrets, by the order of the handlers.
    secrets: Vec<Secrets>,
}

async fn run(
    mut commands: mpsc::UnboundedReceiver<Command>,
    handlers: Arc<Vec<Arc<str>>>,
    each: Each,
) {
    let Each {
        waiting,
        counters,
        policy,
        journal,
        transport,
        secrets,
    } = each;
    let mut queues = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, name) in handlers.iter().enumerate() {
        let (sender, receiver) = mpsc::unbounded_channel();
        queues.push(sender);
        tasks.spawn(deliver_in_order(
            Handler {
                name: Arc::clone(name),
                index,
                waiting: Arc::clone(&waiting),
                counters: Arc::clone(&counters),
                journal: journal.clone(),
                transport: Arc::clone(&transport),
                secrets: secrets.get(index).cloned().unwrap_or_default(),
            },
            receiver,
            policy,
        ));
    }
    let finish = loop {
        match commands.recv().await {
            Some(Command::Send { handler, parcel }) => {
                if let Some(queue) = queues.get(handler) {
                    let _ = queue.send(parcel);
                }
            }
            Some(Command::Finish { wait, done }) => break Some((wait, done)),
            None => break None,
        }
    };
    // No more requests: each task ends once its queue is empty.
    drop(queues);
    let Some((wait, done)) = finish else {
        return;
    };
    let _ = tokio::time::timeout(wait, async { while tasks.join_next().await.is_some() {} }).await;
    let _ = done.send(());
}

/// One handler's delivery task: whose it is, and where it keeps count.
struct Handler {
    name: Arc<str>,
    index: usize,
    waiting: Arc<Waiting>,
    counters: Arc<DeliveryCounters>,
    journal: Option<Journal>,
    transport: Arc<Transport>,
    secrets: Secrets,
}

impl Handler {
    /// `parcel` is given up: logged, counted, and (with durable state)
    /// kept as a dead letter, which `correlator outbox` shows and can send
    /// again.
    fn dead(&self, parcel: &Parcel, reason: &str) {
        self.counters.dead.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            handler = %self.name,
            to = %parcel.request.target(),
            "delivery given up: {reason}"
        );
        if let Some(journal) = &self.journal {
            let letter = DeadLetter {
                delivery: Stored {
                    request: parcel.request.clone(),
                    created: seconds_since_epoch(parcel.created),
                },
                reason: reason.to_owned(),
                given_up: seconds_since_epoch(SystemTime::now()),
            };
            if let Ok(bytes) = serde_json::to_vec(&letter) {
                journal
                    .lock()
                    .dead
                    .push((self.name.to_string(), parcel.number, bytes));
            }
        }
    }

    /// `parcel` is done with (accepted or dead): out of the outbox.
    fn done(&self, parcel: &Parcel) {
        self.waiting.remove(self.index, parcel.request.weight());
        if let Some(journal) = &self.journal {
            journal
                .lock()
                .removed
                .push((self.name.to_string(), parcel.number));
        }
    }
}

/// Send a handler's requests in order, each until it is accepted or dead.
async fn deliver_in_order(
    handler: Handler,
    mut incoming: mpsc::UnboundedReceiver<Parcel>,
    policy: RetryPolicy,
) {
    let name = &handler.name;
    let counters = &handler.counters;
    let index = handler.index;
    let mut queue: VecDeque<Parcel> = VecDeque::new();
    let mut jitter = Jitter::seeded(index);
    let mut closed = false;
    loop {
        if queue.is_empty() {
            if closed {
                return;
            }
            match incoming.recv().await {
                Some(parcel) => queue.push_back(parcel),
                None => return,
            }
        }
        while let Ok(parcel) = incoming.try_recv() {
            queue.push_back(parcel);
        }
        let Some(parcel) = queue.front_mut() else {
            continue;
        };
        let outcome = handler
            .transport
            .send(name, &parcel.request, &handler.secrets)
            .await;
        let age = parcel.created.elapsed().unwrap_or_default();
        let next = match outcome {
            http::Outcome::Accepted => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                None
            }
            http::Outcome::Refused(reason) => {
                handler.dead(parcel, &reason);
                None
            }
            http::Outcome::Failed {
                reason,
                retry_after,
            } => {
                parcel.failures += 1;
                let wait =
                    retry_after.unwrap_or_else(|| policy.backoff(parcel.failures, jitter.next()));
                if age + wait > policy.max_age {
                    handler.dead(
                        parcel,
                        &format!("{reason}; not accepted within delivery.max_age_s"),
                    );
                    None
                } else {
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        handler = %name,
                        to = %parcel.request.target(),
                        failures = parcel.failures,
                        "delivery failed ({reason}); trying again in {} ms",
                        wait.as_millis()
                    );
                    Some(wait)
                }
            }
        };
        match next {
            None => {
                if let Some(parcel) = queue.pop_front() {
                    handler.done(&parcel);
                }
            }
            Some(wait) => {
                // New requests still come in while this one waits.
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        parcel = incoming.recv(), if !closed => match parcel {
                            Some(parcel) => queue.push_back(parcel),
                            None => closed = true,
                        },
                    }
                }
            }
        }
    }
}

/// A small generator for backoff jitter (no cryptography needed: it only
/// spreads retries apart).
struct Jitter(u64);

impl Jitter {
    fn seeded(index: usize) -> Self {
        let time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        Jitter((time ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    /// The next number in [0, 1).
    fn next(&mut self) -> f64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            max_age: Duration::from_secs(86_400),
            shutdown_wait: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_between_half_and_all() {
        let policy = policy();
        assert_eq!(policy.backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(
            policy.backoff(1, 0.999_999),
            Duration::from_micros(999_999) + Duration::from_nanos(500)
        );
        assert_eq!(policy.backoff(4, 0.0), Duration::from_secs(4));
        assert_eq!(policy.backoff(40, 0.0), Duration::from_secs(150));
        let mut jitter = Jitter::seeded(3);
        for _ in 0..1000 {
            let value = jitter.next();
            assert!((0.0..1.0).contains(&value), "{value}");
        }
    }

    #[test]
    fn requests_are_checked_before_they_are_taken() {
        let request = |method: &str, url: &str, header: (&str, &str)| HttpRequest {
            method: method.into(),
            url: url.into(),
            headers: vec![(header.0.into(), header.1.into())],
            body: b"{}".to_vec(),
        };
        let fine = ("Content-Type", "application/json");
        assert_eq!(
            request("POST", "http://127.0.0.1:8080/hook", fine).check(),
            Ok(("127.0.0.1".to_owned(), 8080))
        );
        assert_eq!(
            request("PUT", "https://hooks.example.com/x", fine).check(),
            Ok(("hooks.example.com".to_owned(), 443))
        );
        assert_eq!(
            request("POST", "http://[::1]/x", fine).check(),
            Ok(("::1".to_owned(), 80))
        );
        for (method, url, header, error) in [
            (
                "GET",
                "http://a/",
                fine,
                "method \"GET\" is not POST, PUT or PATCH",
            ),
            (
                "POST",
                "ftp://a/",
                fine,
                "\"ftp://a/\" is not an http or https URL",
            ),
            (
                "POST",
                "/relative",
                fine,
                "\"/relative\" is not an http or https URL",
            ),
            (
                "POST",
                "http://a/",
                ("X-Note", "a\r\nBcc: everyone"),
                "the value of header \"X-Note\" holds a line break or a control character",
            ),
            (
                "POST",
                "http://a/",
                ("Bad Name", "x"),
                "\"Bad Name\" is not a header name",
            ),
        ] {
            assert_eq!(
                request(method, url, header).check(),
                Err(error.to_owned()),
                "{url}"
            );
        }
    }
}
