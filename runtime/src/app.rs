//! The app file (`--app app.toml`): which modules and handlers run, with
//! their configuration, filters and grants.
//!
//! Parsed in two steps: strict raw types (unknown keys are errors with line
//! and column), then [`App`], where names are checked, component sources and
//! paths resolved, and every value keeps its location for later messages.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFileRaw {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    config: toml::Table,
    #[serde(default)]
    modules: BTreeMap<String, InstanceRaw>,
    #[serde(default)]
    handlers: BTreeMap<String, InstanceRaw>,
}

/// `[modules.NAME]` and `[handlers.NAME]` alike; `filter` is for handlers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceRaw {
    component: Spanned<String>,
    sha256: Option<Spanned<String>>,
    filter: Option<Spanned<String>>,
    #[serde(default)]
    config: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    grants: GrantsRaw,
    #[serde(default)]
    limits: LimitsRaw,
    #[serde(default)]
    on_failure: OnFailure,
    notify: Option<Spanned<crate::notify::PolicyRaw>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsRaw {
    dir: Option<Spanned<String>>,
    #[serde(default)]
    dir_mode: DirMode,
    dir_quota_mib: Option<u64>,
    #[serde(default)]
    network: Vec<Spanned<String>>,
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
    stdout: Option<bool>,
}

/// An outbound destination a component may reach: `HOST:PORT`, with `*`
/// for any host or any port. HOST is an IP address (`127.0.0.1:5140`,
/// `[::1]:443`), which sockets and HTTP both honour, or a DNS name, possibly
/// with a leading `*.` (`hooks.example.com:443`, `*.example.com:*`), which
/// only HTTP can check, since a socket sees addresses, not names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPattern {
    /// The host.
    pub host: HostPattern,
    /// The port, or `None` for any.
    pub port: Option<u16>,
}

/// The host part of a [`NetworkPattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Any host.
    Any,
    /// One IP address.
    Ip(std::net::IpAddr),
    /// A DNS name, lower case; `*.example.com` matches its subdomains.
    Name(String),
}

impl fmt::Display for NetworkPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Any => write!(f, "*")?,
            HostPattern::Ip(std::net::IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
            HostPattern::Name(name) => write!(f, "{name}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => write!(f, ":*"),
        }
    }
}

impl InstanceSpec {
    /// What the app file gives the instance besides its configuration
    /// items, one `name: value` line each, for `correlator config`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some((filter, _)) = &self.filter {
            lines.push(format!("filter: {filter}"));
        }
        let grants = &self.grants;
        let mut granted = Vec::new();
        if let Some((dir, _)) = &grants.dir {
            let mode = match grants.dir_mode {
                DirMode::ReadWrite => "read-write",
                DirMode::ReadOnly => "read-only",
            };
            granted.push(format!(
                "dir \"{dir}\" ({mode}, at most {} MiB)",
                grants.dir_quota_mib
            ));
        }
        if !grants.network.is_empty() {
            let network: Vec<String> = grants.network.iter().map(ToString::to_string).collect();
            granted.push(format!("network {}", network.join(", ")));
        }
        if !grants.secrets.is_empty() {
            let secrets: Vec<&str> = grants
                .secrets
                .iter()
                .map(|(name, _)| name.as_str())
                .collect();
            granted.push(format!("secrets {}", secrets.join(", ")));
        }
        if grants.stdout {
            granted.push("standard output".into());
        }
        lines.push(format!(
            "grants: {}",
            if granted.is_empty() {
                "nothing".to_owned()
            } else {
                granted.join("; ")
            }
        ));
        let limits = &self.limits;
        lines.push(format!(
            "limits: memory {} MiB, {} ms per call, {} events and {} bytes of events per call, {} bytes per event, {} log lines/s, stack {} KiB, state {} MiB, backlog {} KiB",
            limits.memory_mib,
            limits.call_timeout_ms,
            limits.events_per_call,
            limits.event_bytes_per_call,
            limits.event_bytes,
            limits.log_lines_per_second,
            limits.stack_kib,
            limits.state_mib,
            limits.backlog_kib
        ));
        let on_failure = match self.on_failure {
            OnFailure::Restart => "restart",
            OnFailure::Disable => "disable",
            OnFailure::Abort => "abort",
        };
        lines.push(format!("on_failure: {on_failure}"));
        if let Some(notify) = self.notify.describe() {
            lines.push(format!("notify: {notify}"));
        }
        if let Some((digest, _)) = &self.sha256 {
            lines.push(format!("sha256: {digest}"));
        }
        lines
    }
}

impl NetworkPattern {
    /// Parse `HOST:PORT`.
    pub fn parse(text: &str) -> Result<NetworkPattern, String> {
        let (host, port) = text
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .ok_or_else(|| format!("network grant \"{text}\" is not HOST:PORT"))?;
        let port = match port {
            "*" => None,
            port => Some(
                port.parse()
                    .map_err(|_| format!("network grant \"{text}\": \"{port}\" is not a port"))?,
            ),
        };
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = if host == "*" {
            HostPattern::Any
        } else if let Ok(ip) = bare.parse() {
            HostPattern::Ip(ip)
        } else {
            let name = host.to_ascii_lowercase();
            let plain = name.strip_prefix("*.").unwrap_or(&name);
            let valid = !plain.is_empty()
                && plain.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                return Err(format!(
                    "network grant \"{text}\": \"{host}\" is neither an IP address nor a host name"
                ));
            }
            HostPattern::Name(name)
        };
        Ok(NetworkPattern { host, port })
    }

    /// Whether a socket may use `address`: IP patterns and `*` only.
    pub fn allows(&self, address: &std::net::SocketAddr) -> bool {
        let host = match &self.host {
            HostPattern::Any => true,
            HostPattern::Ip(ip) => *ip == address.ip(),
            HostPattern::Name(_) => false,
        };
        host && self.port.is_none_or(|port| port == address.port())
    }

    /// Whether an HTTP request may go to `host` (a name or an IP literal,
    /// without brackets) port `port`.
    pub fn allows_http(&self, host: &str, port: u16) -> bool {
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Ip(ip) => {
                host.trim_start_matches('[').trim_end_matches(']').parse() == Ok(*ip)
            }
            HostPattern::Name(name) => {
                let host = host.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(domain) => host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                    None => host == *name,
                }
            }
        };
        host_ok && self.port.is_none_or(|allowed| allowed == port)
    }
}

#[cfg(test)]
mod network_tests {
    use super::*;

    #[test]
    fn patterns_match_hosts_and_ports() {
        let parse = |text| NetworkPattern::parse(text).expect("valid pattern");
        let local = parse("127.0.0.1:5140");
        assert!(local.allows(&"127.0.0.1:5140".parse().expect("address")));
        assert!(!local.allows(&"127.0.0.1:5141".parse().expect("address")));
        assert!(local.allows_http("127.0.0.1", 5140));
        assert!(parse("[::1]:*").allows(&"[::1]:9".parse().expect("address")));
        let name = parse("Hooks.Example.com:443");
        assert!(name.allows_http("hooks.example.COM", 443));
        assert!(!name.allows_http("evil.example.com", 443));
        assert!(!name.allows(&"93.184.216.34:443".parse().expect("address")));
        let wildcard = parse("*.example.com:*");
        assert!(wildcard.allows_http("a.b.example.com", 8080));
        assert!(!wildcard.allows_http("example.com", 80));
        assert!(!wildcard.allows_http("badexample.com", 80));
        assert!(parse("*:443").allows_http("anything.test", 443));
    }

    #[test]
    fn refuses_what_is_not_host_and_port() {
        assert_eq!(
            NetworkPattern::parse("example.com"),
            Err("network grant \"example.com\" is not HOST:PORT".into())
        );
        assert_eq!(
            NetworkPattern::parse("exa mple.com:1"),
            Err("network grant \"exa mple.com:1\": \"exa mple.com\" is neither an IP address nor a host name".into())
        );
        assert_eq!(
            NetworkPattern::parse("host:http"),
            Err("network grant \"host:http\": \"http\" is not a port".into())
        );
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsRaw {
    memory_mib: Option<u64>,
    call_timeout_ms: Option<u64>,
    events_per_call: Option<u64>,
    event_bytes: Option<u64>,
    event_bytes_per_call: Option<u64>,
    log_lines_per_second: Option<u64>,
    stack_kib: Option<u64>,
    state_mib: Option<u64>,
    backlog_kib: Option<u64>,
}

/// Whether a granted directory may be written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirMode {
    /// Read and write (the default: what the csv handler needs).
    #[default]
    ReadWrite,
    /// Read only.
    ReadOnly,
}

/// What happens when an instance traps or hits a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Log it, make a fresh instance, retry the batch record by record;
    /// back off on repeated failures and disable the instance after too many
    /// within a window.
    #[default]
    Restart,
    /// Log it and stop the instance for the rest of the run.
    Disable,
    /// Stop the whole runtime with a non-zero exit.
    Abort,
}

/// Per-instance limits, from `limits = { ... }` with these defaults. They
/// keep a well-behaved module at full speed (the bundled sshd module uses a
/// few MiB and well under a millisecond per batch) while a runaway one is
/// stopped within a second and cannot take more than its share of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, MiB (default 64).
    pub memory_mib: u64,
    /// Longest time one call may run, ms (default 1000: a batch takes about
    /// one millisecond).
    pub call_timeout_ms: u64,
    /// Events one call may dispatch (default 100,000: about 100 per record
    /// of a full batch).
    pub events_per_call: u64,
    /// Size of one event's strings together, bytes (default 1 MiB).
    pub event_bytes: u64,
    /// Size of the strings of all events of one call together, bytes
    /// (default 16 MiB): what one call can make the host hold, however its
    /// events are cut.
    pub event_bytes_per_call: u64,
    /// Guest log lines per second; the rest are counted and dropped
    /// (default 100).
    pub log_lines_per_second: u64,
    /// WebAssembly stack a call may use, KiB (default 512, 64 to
    /// [`MAX_STACK_KIB`]); deeper recursion traps.
    pub stack_kib: u64,
    /// Durable state a module may keep in the state store, MiB (default
    /// 64); a write past it is refused.
    pub state_mib: u64,
    /// Records a module instance that backs off while listening keeps for
    /// when it resumes, KiB of their text plus 80 bytes each (default
    /// 16384); past it the newest are dropped and counted. A replay waits
    /// the back-off out instead.
    pub backlog_kib: u64,
}

/// The largest WebAssembly stack an instance may have: guests run on the
/// host's threads, whose stacks (8 MiB) must hold it with room to spare.
pub const MAX_STACK_KIB: u64 = 4096;

impl Limits {
    /// The stack limit in bytes.
    pub fn stack_bytes(&self) -> usize {
        usize::try_from(self.stack_kib.saturating_mul(1024)).unwrap_or(usize::MAX)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 64,
            call_timeout_ms: 1000,
            events_per_call: 100_000,
            event_bytes: 1 << 20,
            event_bytes_per_call: 16 << 20,
            log_lines_per_second: 100,
            stack_kib: 512,
            state_mib: 64,
            backlog_kib: 16 << 10,
        }
    }
}

impl LimitsRaw {
    fn resolve(&self) -> Limits {
        let default = Limits::default();
        Limits {
            memory_mib: self.memory_mib.unwrap_or(default.memory_mib),
            call_timeout_ms: self.call_timeout_ms.unwrap_or(default.call_timeout_ms),
            events_per_call: self.events_per_call.unwrap_or(default.events_per_call),
            event_bytes: self.event_bytes.unwrap_or(default.event_bytes),
            event_bytes_per_call: self
                .event_bytes_per_call
                .unwrap_or(default.event_bytes_per_call),
            log_lines_per_second: self
                .log_lines_per_second
                .unwrap_or(default.log_lines_per_second),
            stack_kib: self.stack_kib.unwrap_or(default.stack_kib),
            state_mib: self.state_mib.unwrap_or(default.state_mib),
            backlog_kib: self.backlog_kib.unwrap_or(default.backlog_kib),
        }
    }
}

/// A place in the app file, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The app file.
    pub file: PathBuf,
    /// Line, from 1; 0 when the place is only known to be in the file.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}", self.file.display());
        }
        write!(
            f,
            "{} line {} column {}",
            self.file.display(),
            self.line,
            self.column
        )
    }
}

/// Why an app file was refused.
#[derive(Debug, Error)]
pub enum AppError {
    /// The file could not be read.
    #[error("cannot read app file {path}")]
    Read {
        /// The app file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or a key the app file does not have (with line and column).
    #[error("{path}: {message}")]
    Syntax {
        /// The app file.
        path: PathBuf,
        /// The TOML parser's message, which names line and column.
        message: String,
    },
    /// No module or no handler.
    #[error(
        "{0}: an app needs at least one module ([modules.NAME]) and one handler ([handlers.NAME]), unless it is a front-end (stream.role = \"publish\")"
    )]
    Empty(PathBuf),
    /// An instance name that cannot be part of configuration keys and file
    /// names.
    #[error("{location}: instance name \"{name}\" may only hold letters, digits, '_' and '-'")]
    BadName {
        /// The name as written.
        name: String,
        /// Where its component is named.
        location: Location,
    },
    /// A module and a handler with one name.
    #[error(
        "{location}: \"{name}\" is used for a module and a handler; instance names must be unique"
    )]
    DuplicateName {
        /// The name used twice.
        name: String,
        /// Where the handler's component is named.
        location: Location,
    },
    /// A `filter` on a module: only handlers take one.
    #[error(
        "{location}: module \"{name}\" has a filter; filters select the events a handler receives"
    )]
    FilterOnModule {
        /// The module's name.
        name: String,
        /// Where the filter is written.
        location: Location,
    },
    /// A `notify` on a module: only handlers are notified.
    #[error("{location}: module \"{name}\" has notify; it sets how a handler is told of events")]
    NotifyOnModule {
        /// The module's name.
        name: String,
        /// Where `notify` is written.
        location: Location,
    },
    /// A `notify` policy that will not do.
    #[error("{location}: handler \"{name}\": {message}")]
    BadNotify {
        /// The handler's name.
        name: String,
        /// What is wrong with it.
        message: String,
        /// Where `notify` is written.
        location: Location,
    },
    /// A `sha256` that is not 64 hexadecimal digits.
    #[error("{location}: sha256 \"{digest}\" is not 64 hexadecimal digits")]
    BadDigest {
        /// The value as written.
        digest: String,
        /// Where it is written.
        location: Location,
    },
    /// A grant that does not parse.
    #[error("{location}: {message}")]
    BadGrant {
        /// What is wrong with it.
        message: String,
        /// Where it is written.
        location: Location,
    },
    /// A limit of zero, which would stop every call.
    #[error("{location}: every limit of \"{name}\" must be above zero")]
    ZeroLimit {
        /// The instance's name.
        name: String,
        /// Where its component is named.
        location: Location,
    },
    /// A `component` that is neither `builtin:NAME` nor a `.wasm` path.
    #[error(
        "{location}: component \"{component}\" is neither builtin:NAME nor a path to a .wasm file"
    )]
    BadComponent {
        /// The value as written.
        component: String,
        /// Where it is written.
        location: Location,
    },
}

/// Where a component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ComponentSource {
    /// One of the components built into the binary (`builtin:sshd`).
    Builtin(String),
    /// A `.wasm` file, relative paths resolved against the app file.
    File(PathBuf),
}

impl fmt::Display for ComponentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentSource::Builtin(name) => write!(f, "builtin:{name}"),
            ComponentSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One configuration value from the app file, with where it was written.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The full configuration key (`module.OpenSSH.login_failure_limit`).
    pub key: String,
    /// The value as written, converted by the configuration store.
    pub value: toml::Value,
    /// Where it is written, for messages.
    pub location: Location,
}

/// What a component instance may touch beyond its own memory.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// A directory (relative to `system.run_dir`) and where it is granted.
    pub dir: Option<(String, Location)>,
    /// Whether the directory may be written.
    pub dir_mode: DirMode,
    /// Disk the instance may use in the directory, MiB (default
    /// [`DEFAULT_DIR_QUOTA_MIB`]).
    pub dir_quota_mib: u64,
    /// Outbound destinations it may connect or send to.
    pub network: Vec<NetworkPattern>,
    /// Names of the secrets it may read, and where each is granted.
    pub secrets: Vec<(String, Location)>,
    /// Whether it writes straight to the runtime's standard output. Only
    /// the bundled console handler (`builtin:log`) does unless granted
    /// (`stdout = true`); what any other component prints becomes its log
    /// lines, so that it cannot print lines that pass for another's.
    pub stdout: bool,
}

/// Disk an instance may use in its granted directory unless its grant says
/// (`dir_quota_mib`): enough for a long run of CSV files, small enough that
/// a runaway component cannot fill the disk the runtime needs.
pub const DEFAULT_DIR_QUOTA_MIB: u64 = 1024;

/// Whether an instance is a logic module or an event handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A logic module (`[modules.NAME]`).
    Module,
    /// An event handler (`[handlers.NAME]`).
    Handler,
}

impl Role {
    /// `module` or `handler`, for messages.
    pub fn noun(self) -> &'static str {
        self.prefix()
    }

    /// `module` or `handler`: the configuration key prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Role::Module => "module",
            Role::Handler => "handler",
        }
    }
}

/// One `[modules.NAME]` or `[handlers.NAME]`.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// The instance name (the `NAME` of `[modules.NAME]`).
    pub name: String,
    /// Module or handler.
    pub role: Role,
    /// Where its component comes from.
    pub source: ComponentSource,
    /// Where the component is named, for messages.
    pub source_location: Location,
    /// Values for `module.NAME.KEY` / `handler.NAME.KEY`, keys already full.
    pub config: Vec<Setting>,
    /// The CEL filter (handlers only) and where it is written.
    pub filter: Option<(String, Location)>,
    /// What the instance may touch.
    pub grants: Grants,
    /// The component's SHA-256 it must have, if pinned.
    pub sha256: Option<(String, Location)>,
    /// Its limits.
    pub limits: Limits,
    /// What happens when it fails.
    pub on_failure: OnFailure,
    /// How events are grouped, deduplicated and rate-limited before the
    /// handler gets them (`notify = { ... }`; handlers only).
    pub notify: crate::notify::Policy,
}

/// A loaded, checked app file.
#[derive(Debug, Clone)]
pub struct App {
    /// The app file.
    pub path: PathBuf,
    /// The app's name: `name = "..."` in the file, else the file's name
    /// without `.toml`. Its durable state belongs to this name.
    pub name: String,
    /// What the app is for, shown to operators.
    pub description: String,
    /// System-level values from `[config]`, keys flattened (`system.run_dir`).
    pub config: Vec<Setting>,
    /// The logic modules, ordered by name.
    pub modules: Vec<InstanceSpec>,
    /// The event handlers, ordered by name.
    pub handlers: Vec<InstanceSpec>,
}

impl App {
    /// Read and check an app file.
    pub fn load(path: &Path) -> Result<App, AppError> {
        let text = std::fs::read_to_string(path).map_err(|source| AppError::Read {
            path: path.to_owned(),
            source,
        })?;
        App::parse(path, &text)
    }

    /// Check an app file's text; `path` names it in messages and anchors
    /// relative component paths.
    pub fn parse(path: &Path, text: &str) -> Result<App, AppError> {
        let raw: AppFileRaw = toml::from_str(text).map_err(|error| AppError::Syntax {
            path: path.to_owned(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        let locate = |span: std::ops::Range<usize>| location(path, text, span.start);
        let base = path.parent().unwrap_or(Path::new("."));

        let mut config = Vec::new();
        flatten_table("", &raw.config, &mut config);
        let offsets = config_offsets(text);
        let config: Vec<Setting> = config
            .into_iter()
            .map(|(key, value)| {
                let location = match offsets.get(&key) {
                    Some(&offset) => location(path, text, offset),
                    None => Location {
                        file: path.to_owned(),
                        line: 0,
                        column: 0,
                    },
                };
                Setting {
                    key,
                    value,
                    location,
                }
            })
            .collect();

        let instance = |name: &str, role: Role, raw: &InstanceRaw| {
            let source_location = locate(raw.component.span());
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(AppError::BadName {
                    name: name.to_owned(),
                    location: source_location,
                });
            }
            let source = resolve_source(raw.component.get_ref(), base).ok_or_else(|| {
                AppError::BadComponent {
                    component: raw.component.get_ref().clone(),
                    location: source_location.clone(),
                }
            })?;
            let config = raw
                .config
                .iter()
                .map(|(key, value)| Setting {
                    key: format!("{}.{name}.{key}", role.prefix()),
                    value: value.get_ref().clone(),
                    location: locate(value.span()),
                })
                .collect();
            let filter = raw
                .filter
                .as_ref()
                .map(|filter| (filter.get_ref().clone(), locate(filter.span())));
            if let (Role::Module, Some((_, location))) = (role, &filter) {
                return Err(AppError::FilterOnModule {
                    name: name.to_owned(),
                    location: location.clone(),
                });
            }
            let notify =
                match &raw.notify {
                    Some(notify) if role == Role::Module => {
                        return Err(AppError::NotifyOnModule {
                            name: name.to_owned(),
                            location: locate(notify.span()),
                        });
                    }
                    Some(notify) => notify.get_ref().clone().resolve().map_err(|message| {
                        AppError::BadNotify {
                            name: name.to_owned(),
                            message,
                            location: locate(notify.span()),
                        }
                    })?,
                    None => crate::notify::Policy::default(),
                };
            let sha256 = match &raw.sha256 {
                Some(digest) => {
                    let text = digest.get_ref().to_ascii_lowercase();
                    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(AppError::BadDigest {
                            digest: digest.get_ref().clone(),
                            location: locate(digest.span()),
                        });
                    }
                    Some((text, locate(digest.span())))
                }
                None => None,
            };
            let limits = raw.limits.resolve();
            let console = role == Role::Handler && source == ComponentSource::Builtin("log".into());
            if [
                limits.memory_mib,
                limits.call_timeout_ms,
                limits.events_per_call,
                limits.event_bytes,
                limits.event_bytes_per_call,
                limits.log_lines_per_second,
                limits.state_mib,
            ]
            .contains(&0)
            {
                return Err(AppError::ZeroLimit {
                    name: name.to_owned(),
                    location: source_location,
                });
            }
            if !(64..=MAX_STACK_KIB).contains(&limits.stack_kib) {
                return Err(AppError::BadGrant {
                    message: format!(
                        "limits.stack_kib of \"{name}\" must be between 64 and {MAX_STACK_KIB}, not {}",
                        limits.stack_kib
                    ),
                    location: source_location,
                });
            }
            Ok(InstanceSpec {
                name: name.to_owned(),
                role,
                source,
                source_location,
                config,
                filter,
                grants: Grants {
                    dir: raw
                        .grants
                        .dir
                        .as_ref()
                        .map(|dir| (dir.get_ref().clone(), locate(dir.span()))),
                    dir_mode: raw.grants.dir_mode,
                    dir_quota_mib: raw.grants.dir_quota_mib.unwrap_or(DEFAULT_DIR_QUOTA_MIB),
                    stdout: raw.grants.stdout.unwrap_or(console),
                    network: raw
                        .grants
                        .network
                        .iter()
                        .map(|pattern| {
                            NetworkPattern::parse(pattern.get_ref()).map_err(|message| {
                                AppError::BadGrant {
                                    message,
                                    location: locate(pattern.span()),
                                }
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    secrets: raw
                        .grants
                        .secrets
                        .iter()
                        .map(|name| {
                            let valid = !name.get_ref().is_empty()
                                && name
                                    .get_ref()
                                    .chars()
                                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                            if valid {
                                Ok((name.get_ref().clone(), locate(name.span())))
                            } else {
                                Err(AppError::BadGrant {
                                    message: format!(
                                        "secret name \"{}\" may only hold letters, digits, '_', '-' and '.'",
                                        name.get_ref()
                                    ),
                                    location: locate(name.span()),
                                })
                            }
                        })
                        .collect::<Result<_, _>>()?,
                },
                sha256,
                limits,
                on_failure: raw.on_failure,
                notify,
            })
        };

        let modules = raw
            .modules
            .iter()
            .map(|(name, module)| instance(name, Role::Module, module))
            .collect::<Result<Vec<_>, _>>()?;
        let mut handlers = Vec::new();
        for (name, handler) in &raw.handlers {
            let spec = instance(name, Role::Handler, handler)?;
            if raw.modules.contains_key(name) {
                return Err(AppError::DuplicateName {
                    name: name.clone(),
                    location: spec.source_location,
                });
            }
            handlers.push(spec);
        }
        // A front-end only publishes records (`stream.role`): it needs
        // neither.
        let front_end = config.iter().any(|setting: &Setting| {
            setting.key == "stream.role" && setting.value.as_str() == Some("publish")
        });
        if (modules.is_empty() || handlers.is_empty()) && !front_end {
            return Err(AppError::Empty(path.to_owned()));
        }
        let mut modules = modules;
        let config = move_instance_settings(config, &mut modules, &mut handlers)?;
        let name = raw
            .name
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| {
                path.file_stem()
                    .map_or_else(|| "app".into(), |stem| stem.to_string_lossy().into_owned())
            });
        Ok(App {
            path: path.to_owned(),
            name,
            description: raw.description.unwrap_or_default(),
            config,
            modules,
            handlers,
        })
    }

    /// Modules, then handlers.
    pub fn instances(&self) -> impl Iterator<Item = &InstanceSpec> {
        self.modules.iter().chain(&self.handlers)
    }
}

fn resolve_source(component: &str, base: &Path) -> Option<ComponentSource> {
    if let Some(name) = component.strip_prefix("builtin:") {
        return (!name.is_empty()).then(|| ComponentSource::Builtin(name.to_owned()));
    }
    if component.ends_with(".wasm") {
        return Some(ComponentSource::File(base.join(component)));
    }
    None
}

/// `[config]` may be written with nested tables or dotted keys; both become
/// dotted keys (`system.run_dir`).
fn flatten_table(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten_table(&key, inner, out),
            other => out.push((key, other.clone())),
        }
    }
}

/// Give `[config.module.NAME]` and `[config.handler.NAME]` values to their
/// instance, as if written in its `config = { ... }`; the rest of
/// `[config]` is returned. A value set in both places, or for an instance
/// the app does not have, is an error naming where.
fn move_instance_settings(
    config: Vec<Setting>,
    modules: &mut [InstanceSpec],
    handlers: &mut [InstanceSpec],
) -> Result<Vec<Setting>, AppError> {
    let mut system = Vec::new();
    for setting in config {
        let mut parts = setting.key.splitn(3, '.');
        let (Some(role), Some(name)) = (parts.next(), parts.next()) else {
            system.push(setting);
            continue;
        };
        let instances = match role {
            "module" => &mut *modules,
            "handler" => &mut *handlers,
            _ => {
                system.push(setting);
                continue;
            }
        };
        let known = instances
            .iter()
            .map(|spec| spec.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let Some(spec) = instances.iter_mut().find(|spec| spec.name == name) else {
            return Err(AppError::BadGrant {
                message: format!(
                    "[config.{role}.{name}]: the app has no {role} \"{name}\" (its {role}s: {known})"
                ),
                location: setting.location,
            });
        };
        if let Some(earlier) = spec.config.iter().find(|own| own.key == setting.key) {
            return Err(AppError::BadGrant {
                message: format!(
                    "{} is set twice: here and at {}",
                    setting.key, earlier.location
                ),
                location: setting.location,
            });
        }
        spec.config.push(setting);
    }
    Ok(system)
}

/// Where each value of the `[config]` table is written (byte offsets, by
/// flattened key), for messages about it: the typed parse keeps no spans
/// inside a free-form table, so the text is read again, spanned.
fn config_offsets(text: &str) -> std::collections::HashMap<String, usize> {
    fn walk(
        prefix: &str,
        table: &toml::de::DeTable<'_>,
        out: &mut std::collections::HashMap<String, usize>,
    ) {
        for (key, value) in table {
            let key = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            match value.get_ref() {
                toml::de::DeValue::Table(inner) => walk(&key, inner, out),
                _ => {
                    out.insert(key, value.span().start);
                }
            }
        }
    }
    let mut out = std::collections::HashMap::new();
    if let Ok(document) = toml::de::DeTable::parse(text)
        && let Some(config) = document
            .get_ref()
            .iter()
            .find(|(key, _)| key.get_ref() == "config")
            .map(|(_, value)| value)
        && let toml::de::DeValue::Table(table) = config.get_ref()
    {
        walk("", table, &mut out);
    }
    out
}

/// Line and column (both from 1) of a byte offset.
fn location(path: &Path, text: &str, offset: usize) -> Location {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |newline| before.len() - newline - 1)
        + 1;
    Location {
        file: path.to_owned(),
        line,
        column,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"description = "OpenSSH logins to the log and to CSV"
[modules.OpenSSH]
component = "builtin:sshd"          # or a path to a .wasm file
config = { login_failure_limit = 6 }
[handlers.console]
component = "builtin:log"
[handlers.audit]
component = "builtin:csv"
filter = 'event.severity == "error"'
grants = { dir = "csv" }
"#;

    #[test]
    fn loads_the_example_app() {
        let app = App::parse(Path::new("apps/app.toml"), EXAMPLE).expect("valid app");
        assert_eq!(app.description, "OpenSSH logins to the log and to CSV");
        assert_eq!(app.modules.len(), 1);
        let module = &app.modules[0];
        assert_eq!(module.source, ComponentSource::Builtin("sshd".into()));
        assert_eq!(module.config[0].key, "module.OpenSSH.login_failure_limit");
        assert_eq!(
            module.config[0].location.to_string(),
            "apps/app.toml line 4 column 34"
        );
        let names: Vec<&str> = app.handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["audit", "console"]);
        let audit = &app.handlers[0];
        assert_eq!(
            audit.filter.as_ref().map(|f| f.0.as_str()),
            Some("event.severity == \"error\"")
        );
        assert_eq!(audit.grants.dir.as_ref().map(|d| d.0.as_str()), Some("csv"));
    }

    #[test]
    fn refuses_unknown_keys_with_line_and_column() {
        let text = EXAMPLE.replace("grants = ", "grant = ");
        let error = App::parse(Path::new("app.toml"), &text).expect_err("unknown key");
        let message = error.to_string();
        assert!(
            message.starts_with("app.toml: TOML parse error at line 10, column 1"),
            "{message}"
        );
        assert!(message.contains("unknown field `grant`"), "{message}");
    }

    #[test]
    fn refuses_apps_without_modules_or_handlers() {
        let error = App::parse(
            Path::new("a.toml"),
            "[modules.x]\ncomponent = \"builtin:sshd\"\n",
        )
        .expect_err("no handler");
        assert_eq!(
            error.to_string(),
            "a.toml: an app needs at least one module ([modules.NAME]) and one handler ([handlers.NAME]), unless it is a front-end (stream.role = \"publish\")"
        );
    }

    #[test]
    fn refuses_bad_component_sources_and_names() {
        let text = "[modules.x]\ncomponent = \"sshd\"\n[handlers.y]\ncomponent = \"builtin:log\"\n";
        let error = App::parse(Path::new("a.toml"), text).expect_err("bad source");
        assert_eq!(
            error.to_string(),
            "a.toml line 2 column 13: component \"sshd\" is neither builtin:NAME nor a path to a .wasm file"
        );
        let text = "[modules.\"a b\"]\ncomponent = \"builtin:sshd\"\n[handlers.y]\ncomponent = \"builtin:log\"\n";
        let error = App::parse(Path::new("a.toml"), text).expect_err("bad name");
        assert_eq!(
            error.to_string(),
            "a.toml line 2 column 13: instance name \"a b\" may only hold letters, digits, '_' and '-'"
        );
    }

    #[test]
    fn flattens_system_config_and_resolves_paths_against_the_app_file() {
        let text = "[config.system]\nrun_dir = \"/tmp/x\"\n[config]\n\"parser.rfc3164_year\" = 2020\n[modules.m]\ncomponent = \"mods/m.wasm\"\n[handlers.h]\ncomponent = \"builtin:log\"\n";
        let app = App::parse(Path::new("/etc/correlator/app.toml"), text).expect("valid");
        let keys: Vec<&str> = app.config.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["parser.rfc3164_year", "system.run_dir"]);
        assert_eq!(
            app.modules[0].source,
            ComponentSource::File(PathBuf::from("/etc/correlator/mods/m.wasm"))
        );
    }
}
