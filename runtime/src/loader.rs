//! Turning a checked [`App`] into running instances: compile components,
//! merge their declarations into the configuration store, apply the app
//! file's and the command line's values, compile filters, initialise.

use crate::app::{App, InstanceSpec, Role};
use crate::config_store::{ConfigStore, Source};
use crate::delivery::{Courier, Journal, RetryPolicy};
use crate::filter::Filter;
use crate::host::{
    GrantedDir, HandlerInstance, Host, HostOptions, ModuleInstance, ResolvedGrants, StateAccess,
    StreamClock,
};
use crate::notify::Notifier;
use crate::pipeline::{HandlerStage, ModuleStage, Persistence, Route};
use crate::record::TraditionalDefaults;
use crate::record::time::parse_utc_offset;
use crate::replay::ReplaySettings;
use crate::state_store::{Ownership, StateError, StateStore, StateView};
use crate::types::{Value, ValueType};
use anyhow::{Context as _, anyhow, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which instances start without the state the store holds for them
/// (`--discard-state`, `--discard-all-state`).
#[derive(Debug, Clone, Default)]
pub struct Discard {
    /// Module instances whose state is deleted before they start.
    pub instances: Vec<String>,
    /// Delete everything in the store, even another app's state.
    pub all: bool,
    /// Start every module empty and forget the checkpoint, keeping what
    /// handlers hold (deliveries waiting, dead letters): a replay that
    /// neither continues nor keeps the state of the run before it.
    pub modules: bool,
}

/// Whether the app is about to run, or only looked at (`config`, `check`):
/// looking neither creates granted directories nor initialises instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `correlator run`: grant directories, initialise every instance.
    Run,
    /// `correlator config`: describe only.
    Inspect,
    /// `correlator check`: describe, and look at the state store (without
    /// changing it) for what a start would refuse or migrate.
    Check,
}

/// An app with its configuration resolved and its instances made.
pub struct Loaded {
    /// Every configuration item with its resolved value.
    pub store: ConfigStore,
    /// The modules, ready for records.
    pub modules: ModuleStage,
    /// The handlers with their filters, ready for events.
    pub handlers: HandlerStage,
    /// How to read captures, from the store.
    pub replay: ReplaySettings,
    /// Events of start-up for the handlers (instances disabled in init).
    pub startup_events: Vec<crate::types::Dispatched>,
    /// For `check`: what a start would do with the state store, a line per
    /// module with state (or one line saying there is none to look at).
    pub state_report: Vec<String>,
    /// Sends what handlers deliver, when one may (`run` only).
    pub courier: Option<Courier>,
}

/// The runtime's own configuration items.
fn declare_system_items(store: &mut ConfigStore) -> anyhow::Result<()> {
    let items: [(&str, ValueType, Value, &str); 16] = [
        (
            "system.run_dir",
            ValueType::Text,
            Value::Text(".".into()),
            "directory where relative grants (e.g. the csv handler's dir) live",
        ),
        (
            "system.compile_cache",
            ValueType::Text,
            Value::Text("auto".into()),
            "where compiled components are kept between runs: a directory, \"auto\" ($XDG_CACHE_HOME/correlator or ~/.cache/correlator) or \"off\"",
        ),
        (
            "system.call_time_limits",
            ValueType::Boolean,
            Value::Boolean(true),
            "stop calls that run past their instance's limits.call_timeout_ms; off only to measure what the limit costs",
        ),
        (
            "system.usage_report",
            ValueType::Text,
            Value::Text(String::new()),
            "JSON file written at the end of a replay with what each instance used: calls, WebAssembly instructions (counted with fuel, which this turns on: exact, but slower) and peak memory; for tests and budgets (correlator test); empty: off",
        ),
        (
            "system.random_seed",
            ValueType::Integer,
            Value::Integer(0),
            "seed of the random numbers components get (wasi:random), so that a run repeats exactly (correlator test); 0: the operating system's",
        ),
        (
            "metrics.listen",
            ValueType::Text,
            Value::Text(String::new()),
            "IP:PORT to serve Prometheus metrics on (GET /metrics) while running, such as 127.0.0.1:9464; empty: off",
        ),
        (
            "system.secrets_file",
            ValueType::Text,
            Value::Text(String::new()),
            "TOML file of secret names and values (readable by its owner only); CORRELATOR_SECRET_<NAME> variables take precedence",
        ),
        (
            "parser.rfc3164_year",
            ValueType::Integer,
            Value::Integer(0),
            "year of RFC 3164 timestamps, which carry none; 0 means the current year",
        ),
        (
            "parser.rfc3164_utc_offset",
            ValueType::Text,
            Value::Text("+00:00".into()),
            "UTC offset of RFC 3164 timestamps, which carry none (Z, +01:00, -0500)",
        ),
        (
            "timers.utc_offset",
            ValueType::Text,
            Value::Text("+00:00".into()),
            "UTC offset in which hours and days begin for modules' timer ticks (Z, +01:00, -0500)",
        ),
        (
            "timers.max_gap_minutes",
            ValueType::Integer,
            Value::Integer(1440),
            "a record further than this from the stream clock does not move it (counted as out of range) unless the next record is as far; a gap this long gives each kind of tick once, not once per boundary",
        ),
        (
            "state.enabled",
            ValueType::Boolean,
            Value::Boolean(true),
            "keep modules' durable state in state.file, and continue from it at the next start",
        ),
        (
            "state.file",
            ValueType::Text,
            Value::Text(STATE_FILE_DEFAULT.into()),
            "the state store (a redb database), relative to system.run_dir; {app} is the app's name, so that apps sharing a run directory keep apart",
        ),
        (
            "state.checkpoint_interval",
            ValueType::Float,
            Value::Float(1.0),
            "seconds between commits of modules' state: at most this much is lost if the process is killed",
        ),
        (
            "replay.ticks_until",
            ValueType::Text,
            Value::Text(String::new()),
            "after a replay's last record, run the modules' timers on to this time (RFC 3339), as if the stream had gone on quietly; empty: stop at the last record",
        ),
        (
            "replay.batch_size",
            ValueType::Integer,
            Value::Integer(1024),
            "records handed to modules in one call",
        ),
    ];
    for (key, value_type, default, description) in items
        .into_iter()
        .chain(crate::listen::config_items())
        .chain(crate::delivery::config_items())
        .chain(crate::journal::config_items())
        .chain(crate::stream::config_items())
    {
        store.declare(key, value_type, default, description)?;
    }
    Ok(())
}

fn is_instance_key(key: &str) -> bool {
    key.starts_with("module.") || key.starts_with("handler.")
}

/// The runtime's own items (not the instances'), from their defaults, the
/// app file's `[config]` and the `--option KEY=VALUE` overrides: what a
/// run needs to know before it loads any component (a front-end loads
/// none).
pub fn system_store(app: &App, options: &[String]) -> anyhow::Result<ConfigStore> {
    let mut store = ConfigStore::new();
    declare_system_items(&mut store)?;
    for setting in &app.config {
        store
            .set_toml(&setting.key, &setting.value, Source::AppFile)
            .map_err(|error| anyhow!("{}: {error}", setting.location))?;
    }
    let key_of = |option: &String| {
        option
            .split_once('=')
            .map_or(option.clone(), |(key, _)| key.trim().to_owned())
    };
    for option in options.iter().filter(|o| !is_instance_key(&key_of(o))) {
        store.set_option(option).context("in --option")?;
    }
    Ok(store)
}

/// Load `app` with the `--option KEY=VALUE` overrides; when it is about to
/// run, open its state store, deleting what `discard` names.
pub fn load(
    app: &App,
    options: &[String],
    purpose: Purpose,
    discard: &Discard,
) -> anyhow::Result<Loaded> {
    let mut store = system_store(app, options)?;
    let key_of = |option: &String| {
        option
            .split_once('=')
            .map_or(option.clone(), |(key, _)| key.trim().to_owned())
    };
    let run_dir = PathBuf::from(store.text("system.run_dir").unwrap_or("."));
    if matches!(purpose, Purpose::Run | Purpose::Check) && !run_dir.is_dir() {
        bail!(
            "system.run_dir {} is not a directory; create it first (it is not created, so that a mistyped path does not scatter state and output in a new one)",
            run_dir.display()
        );
    }

    metrics_address(&store)?;
    let clock = StreamClock::default();
    let compile_cache = compile_cache_dir(store.text("system.compile_cache").unwrap_or("auto"));
    let host_options = HostOptions {
        compile_cache,
        call_time_limits: !matches!(
            store.get("system.call_time_limits"),
            Some(Value::Boolean(false))
        ),
        count_instructions: !store.text("system.usage_report").unwrap_or("").is_empty(),
        random_seed: match store.integer("system.random_seed").unwrap_or(0) {
            0 => None,
            seed => Some(seed.cast_unsigned()),
        },
        offline: !store.text("delivery.capture").unwrap_or("").is_empty(),
        // A worker runs one partition per pipeline: keyed messages go
        // through the stream to the partitions owning their keys.
        partitioned: store.text("stream.role").map(str::trim) == Some("work"),
    };
    let mut host = Host::new(clock.clone(), &host_options)?;
    let secrets = resolve_secrets(app, store.text("system.secrets_file").unwrap_or(""))?;
    // Handlers granted network destinations may deliver (`delivery/`), with
    // their granted secrets (an SMTP password is read when sending).
    let granted_secrets = |spec: &InstanceSpec| {
        std::sync::Arc::new(
            spec.grants
                .secrets
                .iter()
                .filter_map(|(name, _)| {
                    secrets.get(name).map(|value| (name.clone(), value.clone()))
                })
                .collect::<std::collections::BTreeMap<String, String>>(),
        )
    };
    let delivering: Vec<_> = app
        .handlers
        .iter()
        .filter(|spec| !spec.grants.network.is_empty())
        .map(|spec| {
            (
                std::sync::Arc::from(spec.name.as_str()),
                granted_secrets(spec),
            )
        })
        .collect();
    // With durable state, the outboxes and what notifiers hold are kept in
    // the store too, committed with each checkpoint.
    let journal = (purpose == Purpose::Run)
        .then(|| state_file(&store, &run_dir, &app.name))
        .flatten()
        .map(|_| Journal::default());
    let courier = if purpose == Purpose::Run && !delivering.is_empty() {
        Some(Courier::start(
            delivering,
            RetryPolicy::from_store(&store)?,
            journal.clone(),
            crate::delivery::tls_config(store.text("delivery.tls_ca_file").unwrap_or(""))?,
            Some(store.text("delivery.capture").unwrap_or(""))
                .filter(|path| !path.is_empty())
                .map(Path::new),
        )?)
    } else {
        None
    };
    // `check` starts every instance as `run` would, in a scratch directory
    // holding a copy of what its granted directory holds, so that nothing
    // the app uses is touched.
    let scratch = match purpose {
        Purpose::Check => Some(scratch_dirs(app, &run_dir)?),
        Purpose::Run | Purpose::Inspect => None,
    };
    let grants_of = |spec: &InstanceSpec| match purpose {
        Purpose::Check => ResolvedGrants {
            dir: spec
                .grants
                .dir
                .as_ref()
                .zip(scratch.as_ref())
                .map(|(_, scratch)| GrantedDir {
                    path: scratch.path().join(&spec.name),
                    mode: spec.grants.dir_mode,
                    quota_bytes: spec.grants.dir_quota_mib.saturating_mul(1 << 20),
                }),
            network: spec.grants.network.clone(),
            secrets: granted_secrets(spec),
            stdout: false,
            delivery: None,
        },
        Purpose::Run => ResolvedGrants {
            dir: spec.grants.dir.as_ref().map(|(dir, _)| GrantedDir {
                path: run_dir.join(dir),
                mode: spec.grants.dir_mode,
                quota_bytes: spec.grants.dir_quota_mib.saturating_mul(1 << 20),
            }),
            network: spec.grants.network.clone(),
            secrets: granted_secrets(spec),
            stdout: spec.grants.stdout,
            delivery: courier
                .as_ref()
                .and_then(|courier| courier.outbox(&spec.name)),
        },
        Purpose::Inspect => ResolvedGrants::default(),
    };
    let mut modules = Vec::new();
    let mut digests = Vec::new();
    for spec in &app.modules {
        let loaded = load_component(&mut host, spec)?;
        let instance = host.instantiate_module(spec, &loaded, &grants_of(spec))?;
        declare_instance_items(&mut store, spec, &instance.descriptor)?;
        modules.push(instance);
        digests.push(loaded.digest);
    }
    let mut handlers = Vec::new();
    for spec in &app.handlers {
        let loaded = load_component(&mut host, spec)?;
        let instance = host.instantiate_handler(spec, &loaded, &grants_of(spec))?;
        declare_instance_items(&mut store, spec, &instance.descriptor)?;
        handlers.push(instance);
    }

    for spec in app.instances() {
        for setting in &spec.config {
            store
                .set_toml(&setting.key, &setting.value, Source::AppFile)
                .map_err(|error| anyhow!("{}: {error}", setting.location))?;
        }
    }
    for option in options.iter().filter(|o| is_instance_key(&key_of(o))) {
        store.set_option(option).context("in --option")?;
    }

    let filters = app
        .handlers
        .iter()
        .map(|spec| {
            spec.filter
                .as_ref()
                .map(|(source, location)| {
                    Filter::compile(source).map_err(|error| {
                        anyhow!(
                            "handler \"{}\": the filter at {location} does not compile: {error}",
                            spec.name
                        )
                    })
                })
                .transpose()
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    check_filters(app, &filters, &modules)?;

    // Checked for `check` too: it refuses what `run` would.
    let interval = checkpoint_interval(&store)?;
    let mut stored_notices = std::collections::HashMap::new();
    let persistence = if purpose == Purpose::Run {
        let state = open_state(app, &store, &run_dir, discard)?;
        let mut owners = Vec::new();
        for ((spec, module), digest) in app.modules.iter().zip(&mut modules).zip(&digests) {
            owners.push(prepare_state(
                state.as_ref(),
                spec,
                module,
                digest,
                discard,
            )?);
        }
        state
            .map(|state| -> anyhow::Result<Persistence> {
                let checkpoint = state.checkpoint()?;
                if let Some(courier) = &courier {
                    courier.resume(state.outbox()?);
                }
                for spec in &app.handlers {
                    if let Some(stored) = state.notices(&spec.name)? {
                        stored_notices.insert(spec.name.clone(), stored);
                    }
                }
                Ok(Persistence::new(
                    state,
                    owners,
                    interval,
                    checkpoint,
                    journal.clone(),
                ))
            })
            .transpose()?
    } else {
        None
    };

    let state_report = if purpose == Purpose::Check {
        check_writable(app, &store, &run_dir)?;
        check_state(app, &store, &run_dir, &mut modules, &digests)?
    } else {
        Vec::new()
    };

    let mut startup_events = Vec::new();
    if matches!(purpose, Purpose::Run | Purpose::Check) {
        for (spec, module) in app.modules.iter().zip(&mut modules) {
            let restored = module.holds_state();
            let events = module
                .init(store.values_under(&format!("module.{}", spec.name)))
                .map_err(|error| {
                    // State it cannot read (a layout changed without a new
                    // state version) is one reason; say how to get past it.
                    let message = format!("{error:#}");
                    if restored && !message.contains("--discard-state") {
                        anyhow!(
                            "{message} (it started on stored state; if it cannot read that, {})",
                            discard_hint(spec)
                        )
                    } else {
                        error
                    }
                })?;
            startup_events.extend(events);
        }
        for (spec, handler) in app.handlers.iter().zip(&mut handlers) {
            startup_events
                .extend(handler.init(store.values_under(&format!("handler.{}", spec.name)))?);
        }
    }
    // The scratch directories go once every instance has started.
    drop(scratch);

    let replay = replay_settings(&store)?;
    let routes = handlers
        .into_iter()
        .zip(filters)
        .zip(&app.handlers)
        .map(
            |((handler, filter), spec): ((HandlerInstance, Option<Filter>), _)| {
                let mut route = Route::new(handler, filter);
                route.notifier = notifier(spec, stored_notices.remove(&spec.name))?;
                Ok(route)
            },
        )
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut module_stage = ModuleStage::new(
        modules,
        clock,
        timer_offset(&store)?,
        max_gap_minutes(&store)?,
    );
    if let Some(persistence) = persistence {
        module_stage.persist(persistence);
    }
    Ok(Loaded {
        modules: module_stage,
        handlers: HandlerStage::new(routes, journal),
        store,
        replay,
        startup_events,
        state_report,
        courier,
    })
}

/// The app's state store, if `state.enabled`; `None` otherwise.
fn open_state(
    app: &App,
    store: &ConfigStore,
    run_dir: &Path,
    discard: &Discard,
) -> anyhow::Result<Option<Arc<StateStore>>> {
    for name in &discard.instances {
        if !app.modules.iter().any(|spec| spec.name == *name) {
            bail!(
                "--discard-state {name}: the app has no module \"{name}\" (its modules: {})",
                app.modules
                    .iter()
                    .map(|spec| spec.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let Some(path) = state_file(store, run_dir, &app.name) else {
        if !discard.instances.is_empty() || discard.all {
            bail!("state.enabled is false: there is no state to discard");
        }
        return Ok(None);
    };
    // Before stores were named per app, every app's was `state.redb`.
    let shared = run_dir.join("state.redb");
    if store.text("state.file") == Some(STATE_FILE_DEFAULT) && !path.exists() && shared.is_file() {
        tracing::warn!(
            "{} starts empty, and {} is there: the store of an older correlator, which named every app's store so; set state.file = \"state.redb\" to go on with it",
            path.display(),
            shared.display()
        );
    }
    let state = StateStore::open(&path, &app.name, discard.all)?;
    if discard.all {
        tracing::warn!(store = %path.display(), "every instance starts without state (--discard-all-state)");
    } else if discard.modules {
        let replaced = state.checkpoint()?;
        state.forget_modules()?;
        if let Some(checkpoint) = replaced {
            tracing::info!(
                store = %path.display(),
                "this replay starts every module empty and replaces the state of the checkpoint {} (--keep-state starts from that state, --continue continues its replay)",
                checkpoint.describe()
            );
        }
    }
    Ok(Some(Arc::new(state)))
}

/// The app's state store, for `correlator outbox`: its file from the app
/// and `options` (nothing is loaded or run). `Ok(None)` when state is off
/// or the file does not exist yet.
pub fn existing_state_store(app: &App, options: &[String]) -> anyhow::Result<Option<StateStore>> {
    let store = system_store(app, options)?;
    let run_dir = PathBuf::from(store.text("system.run_dir").unwrap_or("."));
    let Some(path) = state_file(&store, &run_dir, &app.name) else {
        return Ok(None);
    };
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(StateStore::open(&path, &app.name, false)?))
}

/// Where an app keeps its state unless `state.file` says otherwise: a file
/// per app, so that two apps run in one directory do not meet.
const STATE_FILE_DEFAULT: &str = "{app}.state.redb";

/// The state store's file; `None` when `state.enabled` is false. `{app}`
/// in `state.file` stands for the app's name, made safe for a file name.
fn state_file(store: &ConfigStore, run_dir: &Path, app: &str) -> Option<PathBuf> {
    if matches!(store.get("state.enabled"), Some(Value::Boolean(false))) {
        return None;
    }
    let file_name: String = app
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let file = store
        .text("state.file")
        .unwrap_or(STATE_FILE_DEFAULT)
        .replace(
            "{app}",
            match file_name.trim_start_matches('.') {
                "" => "app",
                name => name,
            },
        );
    Some(run_dir.join(file))
}

/// Files of a granted directory copied for `check`'s scratch sandbox: at
/// most this many bytes each (templates and lists, not logs) ...
const SCRATCH_FILE_BYTES: u64 = 1 << 20;

/// ... this many bytes in all, and this many entries looked at.
const SCRATCH_TOTAL_BYTES: u64 = 16 << 20;
const SCRATCH_ENTRIES: usize = 1000;

/// A scratch directory with a directory per instance that is granted one,
/// holding a copy of the small files of the granted directory (which may
/// not exist yet): `check` starts the instances there, so that their
/// `init` sees what it would see at `run` and changes nothing.
fn scratch_dirs(app: &App, run_dir: &Path) -> anyhow::Result<tempfile::TempDir> {
    let scratch = tempfile::Builder::new()
        .prefix("correlator-check-")
        .tempdir()
        .context("cannot make a scratch directory to start the instances in")?;
    for spec in app.instances() {
        if let Some((dir, _)) = &spec.grants.dir {
            let copy = scratch.path().join(&spec.name);
            std::fs::create_dir_all(&copy)
                .with_context(|| format!("cannot make {}", copy.display()))?;
            let from = run_dir.join(dir);
            if let Ok(root) = std::fs::metadata(&from) {
                let mut budget = ScratchBudget {
                    bytes: SCRATCH_TOTAL_BYTES,
                    entries: SCRATCH_ENTRIES,
                    device: std::os::unix::fs::MetadataExt::dev(&root),
                };
                copy_small_files(&from, &copy, &mut budget, 4);
            }
        }
    }
    Ok(scratch)
}

/// What a copy into the scratch directory may still take.
struct ScratchBudget {
    bytes: u64,
    entries: usize,
    /// The granted directory's file system: others (`/proc` under a grant
    /// of `/`, mounts) are not entered.
    device: u64,
}

/// Copy the regular files of `from` (and of its directories, `depth`
/// deep, on the same file system) no larger than [`SCRATCH_FILE_BYTES`] to
/// `to`, within `budget`; symbolic links are not followed, and what cannot
/// be read is left out (an instance that needs it fails in `check` as it
/// would in `run`).
fn copy_small_files(from: &Path, to: &Path, budget: &mut ScratchBudget, depth: usize) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        if budget.entries == 0 {
            return;
        }
        budget.entries -= 1;
        let Ok(metadata) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if std::os::unix::fs::MetadataExt::dev(&metadata) != budget.device {
            continue;
        }
        let target = to.join(entry.file_name());
        if metadata.is_dir() && depth > 0 {
            if std::fs::create_dir(&target).is_ok() {
                copy_small_files(&entry.path(), &target, budget, depth - 1);
            }
        } else if metadata.is_file()
            && metadata.len() <= SCRATCH_FILE_BYTES.min(budget.bytes)
            && std::fs::copy(entry.path(), &target).is_ok()
        {
            budget.bytes -= metadata.len();
        }
    }
}

/// For `check`: every directory granted to be written, and the state
/// file's directory, can be written (a start would fail on them, or its
/// first commit would). Each is probed with a file created and removed; a
/// directory not there yet is probed where it would be created.
fn check_writable(app: &App, store: &ConfigStore, run_dir: &Path) -> anyhow::Result<()> {
    for spec in app.instances() {
        if let Some((dir, location)) = &spec.grants.dir
            && spec.grants.dir_mode == crate::app::DirMode::ReadWrite
        {
            let path = run_dir.join(dir);
            probe_writable(&path).with_context(|| {
                format!(
                    "{location}: {} \"{}\" is granted {} to write, and it cannot be written",
                    spec.role.noun(),
                    spec.name,
                    path.display()
                )
            })?;
        }
    }
    if let Some(path) = state_file(store, run_dir, &app.name) {
        let dir = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        probe_writable(dir).with_context(|| {
            format!(
                "the state store {} cannot be written (state.enabled = false runs without it)",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// Create and remove a file in `dir`, or in the nearest directory above it
/// that exists (where `dir` would be created).
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    let probe = existing.join(format!(".correlator-check-{}", std::process::id()));
    std::fs::File::create(&probe)?;
    std::fs::remove_file(&probe)
}

/// The notifier of a handler with a `notify` policy, or with events its
/// notifier held at the last checkpoint (sent at once if the policy is
/// gone).
fn notifier(spec: &InstanceSpec, stored: Option<Vec<u8>>) -> anyhow::Result<Option<Notifier>> {
    if !spec.notify.is_active() && stored.is_none() {
        return Ok(None);
    }
    let mut notifier = Notifier::new(spec.notify.clone());
    if let Some(stored) = stored {
        notifier
            .restore(&stored)
            .map_err(|error| anyhow::anyhow!("handler \"{}\": {error}", spec.name))?;
    }
    Ok(Some(notifier))
}

/// Who `module` (compiled from a file with SHA-256 `digest`) is, as the
/// store records the writer of an instance's state.
fn ownership_of(module: &mut ModuleInstance, digest: &str) -> anyhow::Result<Ownership> {
    Ok(Ownership {
        component: module.descriptor.name.clone(),
        digest: digest.to_owned(),
        version: module.state_version()?.unwrap_or(0),
    })
}

/// Check who wrote `module`'s state (its component and state version),
/// discard it if asked, let the module migrate an older version, and give
/// the module its state. Returns who writes it from now on; `None` without
/// a store.
fn prepare_state(
    state: Option<&Arc<StateStore>>,
    spec: &InstanceSpec,
    module: &mut ModuleInstance,
    digest: &str,
    discard: &Discard,
) -> anyhow::Result<Option<Ownership>> {
    let limit = spec.limits.state_mib.saturating_mul(1 << 20);
    let name: Arc<str> = Arc::from(spec.name.as_str());
    let current = ownership_of(module, digest)?;
    let Some(state) = state else {
        module.attach_state(StateAccess::new(None, name, 0, limit));
        return Ok(None);
    };
    let path = state.path().display();
    if discard.instances.contains(&spec.name) {
        state.discard(&spec.name)?;
        tracing::warn!(instance = %spec.name, store = %path, "starts without state (--discard-state)");
    }
    let keys = state.keys(&spec.name)?;
    let committed: u64 = keys
        .iter()
        .map(|(key, len)| crate::state_store::entry_bytes(key.len(), *len))
        .sum();
    module.attach_state(StateAccess::new(
        Some(Arc::clone(state) as Arc<dyn crate::state_store::StateReads>),
        name,
        committed,
        limit,
    ));
    let Some(owner) = state.owner(&spec.name)?.filter(|_| !keys.is_empty()) else {
        return Ok(Some(current));
    };
    let migrate_from = judge_owner(&path.to_string(), spec, &owner, &current)?;
    if let Some(stored_version) = migrate_from {
        module.migrate(stored_version).map_err(|error| {
            anyhow::anyhow!("{error:#} (state in {path}); or {}", discard_hint(spec))
        })?;
        tracing::info!(instance = %spec.name, from = stored_version, to = current.version, "state migrated");
    }
    tracing::info!(
        instance = %spec.name,
        keys = keys.len(),
        bytes = committed,
        "state restored from {path}"
    );
    Ok(Some(current))
}

/// How to get past state a start refuses.
fn discard_hint(spec: &InstanceSpec) -> String {
    format!(
        "start with --discard-state {} to delete that state and start the instance empty",
        spec.name
    )
}

/// Whether the module `spec` (now `current`) may take the state `owner`
/// wrote in the store at `path`: an error if another component wrote it or
/// a newer version did; else the version to migrate from, if older.
fn judge_owner(
    path: &str,
    spec: &InstanceSpec,
    owner: &Ownership,
    current: &Ownership,
) -> anyhow::Result<Option<u32>> {
    let hint = discard_hint(spec);
    if owner.component != current.component {
        bail!(
            "module \"{}\": {path} holds state written by component \"{}\" (sha256 {}), not by \"{}\" ({}); {hint}",
            spec.name,
            owner.component,
            owner.digest,
            current.component,
            spec.source
        );
    }
    if owner.version > current.version {
        bail!(
            "module \"{}\": {path} holds state of version {} (written by sha256 {}), newer than this component's version {} ({}); run the newer component, or {hint}",
            spec.name,
            owner.version,
            owner.digest,
            current.version,
            spec.source
        );
    }
    Ok((owner.version < current.version).then_some(owner.version))
}

/// For `correlator check`: what starting the app would do with its state
/// store, without changing it. A line per module that has state (how much,
/// at which version, and whether it would be migrated); an error for what a
/// start would refuse (another app's store, another component's state, a
/// newer version). A store another process has open is not looked at.
fn check_state(
    app: &App,
    store: &ConfigStore,
    run_dir: &Path,
    modules: &mut [ModuleInstance],
    digests: &[String],
) -> anyhow::Result<Vec<String>> {
    let Some(path) = state_file(store, run_dir, &app.name) else {
        return Ok(vec!["state: off (state.enabled is false)".into()]);
    };
    let shown = path.display().to_string();
    let mut repaired = false;
    let state = match StateView::open(&path, &app.name) {
        Ok(Some(state)) => Arc::new(state),
        Ok(None) => return Ok(vec![format!("state {shown}: none yet")]),
        // Held by a running instance, or left by a crash: a start would
        // still go on (once the other process ends, or after a repair).
        Err(StateError::InUse { .. }) => {
            return Ok(vec![format!(
                "state {shown}: not looked at: another correlator process has it open"
            )]);
        }
        // Left by a crash: repair it as a start would, to say where the
        // last checkpoint stands (what a continuation starts after).
        Err(StateError::NeedsRepair { .. }) => {
            drop(StateStore::open(&path, &app.name, false)?);
            repaired = true;
            match StateView::open(&path, &app.name)? {
                Some(state) => Arc::new(state),
                None => return Ok(vec![format!("state {shown}: none yet")]),
            }
        }
        Err(error) => return Err(error.into()),
    };
    let mut report = Vec::new();
    if repaired {
        report.push(format!(
            "state {shown}: it was not closed cleanly (a crash, or kill -9); repaired"
        ));
    }
    let checkpoint = state.checkpoint()?;
    report.push(match &checkpoint {
        Some(checkpoint) => format!("state {shown}: checkpoint {}", checkpoint.describe()),
        None => format!("state {shown}: no checkpoint yet"),
    });
    // Where `run --follow` resumes each file.
    for mark in checkpoint.iter().flat_map(|checkpoint| &checkpoint.files) {
        report.push(format!(
            "state {shown}: {} (inode {}) read through byte {}",
            mark.path, mark.inode, mark.offset
        ));
    }
    // Where `run --journal` goes on.
    if let Some(cursor) = checkpoint.as_ref().and_then(|c| c.journal_cursor.as_ref()) {
        report.push(format!(
            "state {shown}: journal read through cursor {cursor}"
        ));
    }
    let mut any_module_state = false;
    for ((spec, module), digest) in app.modules.iter().zip(modules).zip(digests) {
        let keys = state.keys(&spec.name)?;
        let Some(owner) = state.owner(&spec.name)?.filter(|_| !keys.is_empty()) else {
            continue;
        };
        let current = ownership_of(module, digest)?;
        // Counted as the run counts it (and as limits.state_mib does): keys,
        // values and 64 bytes an entry.
        let bytes: u64 = keys
            .iter()
            .map(|(key, len)| crate::state_store::entry_bytes(key.len(), *len))
            .sum();
        let plural = if keys.len() == 1 { "" } else { "s" };
        let what = format!(
            "state {shown}: module \"{}\" has {} key{plural} ({bytes} bytes) at version {}",
            spec.name,
            keys.len(),
            owner.version
        );
        any_module_state = true;
        let migrate_from = judge_owner(&shown, spec, &owner, &current)?;
        // The instance starts (migrate, then init) on the stored state as
        // at `run`, reading it through the view and writing nowhere: a
        // layout changed without a new state version fails here.
        module.attach_state(StateAccess::new(
            Some(Arc::clone(&state) as Arc<dyn crate::state_store::StateReads>),
            Arc::from(spec.name.as_str()),
            bytes,
            spec.limits.state_mib.saturating_mul(1 << 20),
        ));
        if let Some(stored_version) = migrate_from {
            module.migrate(stored_version).map_err(|error| {
                anyhow::anyhow!("{error:#} (state in {shown}); or {}", discard_hint(spec))
            })?;
        }
        report.push(match migrate_from {
            Some(_) => format!(
                "{what}, which the next start migrates to version {}",
                current.version
            ),
            None => what,
        });
    }
    if !any_module_state {
        report.push(format!("state {shown}: no module has state yet"));
    }
    let waiting = state.letters(crate::state_store::Letters::Waiting)?.len();
    let dead = state.letters(crate::state_store::Letters::Dead)?.len();
    if waiting + dead > 0 {
        report.push(format!(
            "state {shown}: {waiting} deliveries wait in outboxes, {dead} dead letters (correlator outbox --app {} list)",
            app.path.display()
        ));
    }
    Ok(report)
}

/// `metrics.listen`, checked: `None` when empty (metrics off).
pub fn metrics_address(store: &ConfigStore) -> anyhow::Result<Option<std::net::SocketAddr>> {
    match store.text("metrics.listen").unwrap_or("").trim() {
        "" => Ok(None),
        text => text.parse().map(Some).map_err(|_| {
            anyhow!("metrics.listen must be IP:PORT (such as 127.0.0.1:9464), not \"{text}\"")
        }),
    }
}

/// `timers.max_gap_minutes`, checked.
fn max_gap_minutes(store: &ConfigStore) -> anyhow::Result<u32> {
    let minutes = store.integer("timers.max_gap_minutes").unwrap_or(0);
    u32::try_from(minutes)
        .ok()
        .filter(|minutes| (1..=5_256_000).contains(minutes))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "timers.max_gap_minutes must be between 1 and 5256000 (ten years), not {minutes}"
            )
        })
}

/// Refuse a filter that can select nothing the app's modules dispatch (an
/// attribute, field or kind that no event has, a comparison across types),
/// naming its handler and where it is written.
fn check_filters(
    app: &App,
    filters: &[Option<Filter>],
    modules: &[crate::host::ModuleInstance],
) -> anyhow::Result<()> {
    let mut known = crate::filter::KnownEvents::default();
    for module in modules {
        known.declare(&module.descriptor.events);
    }
    known.declare([&crate::host::disabled_decl()]);
    for spec in app.instances() {
        known.instance(&spec.name);
    }
    for (spec, filter) in app.handlers.iter().zip(filters) {
        let (Some(filter), Some((_, location))) = (filter, &spec.filter) else {
            continue;
        };
        let problems = filter.problems(&known);
        if !problems.is_empty() {
            bail!(
                "handler \"{}\": the filter at {location} {}",
                spec.name,
                problems.join("; and it ")
            );
        }
    }
    Ok(())
}

/// `state.checkpoint_interval`, checked.
fn checkpoint_interval(store: &ConfigStore) -> anyhow::Result<std::time::Duration> {
    let seconds = match store.get("state.checkpoint_interval") {
        Some(Value::Float(seconds)) => *seconds,
        _ => 1.0,
    };
    if !(0.001..=3600.0).contains(&seconds) {
        bail!("state.checkpoint_interval must be between 0.001 and 3600 seconds, not {seconds}");
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// Compile an instance's component, and check its digest if the app file
/// pins one.
fn load_component(
    host: &mut Host,
    spec: &InstanceSpec,
) -> anyhow::Result<crate::host::LoadedComponent> {
    let loaded = host
        .load(&spec.source, spec.limits.stack_bytes())
        .with_context(|| {
            format!(
                "{} \"{}\" at {}",
                spec.role.noun(),
                spec.name,
                spec.source_location
            )
        })?;
    if let Some((pinned, location)) = &spec.sha256
        && *pinned != loaded.digest
    {
        bail!(
            "{location}: {} \"{}\": {} has sha256 {}, but the app file pins {pinned}; refusing to start",
            spec.role.noun(),
            spec.name,
            spec.source,
            loaded.digest
        );
    }
    Ok(loaded)
}

/// Merge what an instance declared into the store under its prefix.
fn declare_instance_items(
    store: &mut ConfigStore,
    spec: &InstanceSpec,
    descriptor: &crate::types::Descriptor,
) -> anyhow::Result<()> {
    let prefix = match spec.role {
        Role::Module => "module",
        Role::Handler => "handler",
    };
    for item in &descriptor.config {
        store
            .declare(
                &format!("{prefix}.{}.{}", spec.name, item.key),
                item.value_type,
                item.default.clone(),
                &item.description,
            )
            .with_context(|| {
                format!(
                    "component {} of \"{}\" declares a bad configuration item",
                    spec.source, spec.name
                )
            })?;
    }
    Ok(())
}

/// The environment variable that holds secret `name`.
pub fn secret_variable(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("CORRELATOR_SECRET_{name}")
}

/// The values of every secret the app grants, from the environment or the
/// secrets file; an error listing every one that is missing.
fn resolve_secrets(
    app: &App,
    secrets_file: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let granted: Vec<(&InstanceSpec, &String, &crate::app::Location)> = app
        .instances()
        .flat_map(|spec| {
            spec.grants
                .secrets
                .iter()
                .map(move |(name, location)| (spec, name, location))
        })
        .collect();
    if granted.is_empty() {
        return Ok(Default::default());
    }
    let file: toml::Table = if secrets_file.is_empty() {
        toml::Table::new()
    } else {
        read_secrets_file(Path::new(secrets_file))?
    };
    let mut values = std::collections::BTreeMap::new();
    let mut missing = Vec::new();
    for (spec, name, location) in granted {
        let variable = secret_variable(name);
        let value = std::env::var(&variable).ok().or_else(|| {
            file.get(name.as_str())
                .and_then(|value| value.as_str())
                .map(str::to_owned)
        });
        match value {
            Some(value) => {
                values.insert(name.clone(), value);
            }
            None => missing.push(format!(
                "{location}: {} \"{}\" is granted secret \"{name}\", but neither {variable} nor the secrets file holds it",
                spec.role.noun(),
                spec.name
            )),
        }
    }
    if !missing.is_empty() {
        bail!("missing secrets:\n  {}", missing.join("\n  "));
    }
    Ok(values)
}

/// A secrets file: a TOML table of names and string values, which must not
/// be readable by anyone but its owner.
fn read_secrets_file(path: &Path) -> anyhow::Result<toml::Table> {
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read secrets file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "secrets file {} is readable by others (mode {mode:o}); chmod 600 it",
                path.display()
            );
        }
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read secrets file {}", path.display()))?;
    toml::from_str(&text).map_err(|error| {
        anyhow!(
            "secrets file {}: {}",
            path.display(),
            error.to_string().trim_end()
        )
    })
}

/// The directory `system.compile_cache` names, if any.
fn compile_cache_dir(setting: &str) -> Option<PathBuf> {
    match setting {
        "off" | "" => None,
        "auto" => std::env::var_os("XDG_CACHE_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .map(|dir| dir.join("correlator")),
        directory => Some(PathBuf::from(directory)),
    }
}

/// `timers.utc_offset`, checked.
fn timer_offset(store: &ConfigStore) -> anyhow::Result<i16> {
    let text = store.text("timers.utc_offset").unwrap_or("+00:00");
    parse_utc_offset(text).ok_or_else(|| {
        anyhow!("timers.utc_offset: \"{text}\" is not a UTC offset (Z, +01:00, -0500)")
    })
}

/// How to read captures (batch size, RFC 3164 defaults, ticks after the
/// end), from `store`; a front-end needs it without loading components.
pub fn replay_settings(store: &ConfigStore) -> anyhow::Result<ReplaySettings> {
    let batch_size = store.integer("replay.batch_size").unwrap_or(1024);
    let batch_size = usize::try_from(batch_size)
        .ok()
        .filter(|size| (1..=1_000_000).contains(size))
        .ok_or_else(|| {
            anyhow!("replay.batch_size must be between 1 and 1000000, not {batch_size}")
        })?;
    let offset_text = store.text("parser.rfc3164_utc_offset").unwrap_or("+00:00");
    let Some(offset_minutes) = parse_utc_offset(offset_text) else {
        bail!(
            "parser.rfc3164_utc_offset: \"{offset_text}\" is not a UTC offset (Z, +01:00, -0500)"
        );
    };
    let year = match store.integer("parser.rfc3164_year").unwrap_or(0) {
        0 => crate::record::time::current_year(),
        year @ 1..=9999 => year,
        other => bail!(
            "parser.rfc3164_year must be between 1 and 9999 (or 0 for the current year), not {other}"
        ),
    };
    let ticks_until = match store.text("replay.ticks_until").unwrap_or("").trim() {
        "" => None,
        text => Some(
            crate::record::time::parse_rfc3339(text)
                .ok_or_else(|| {
                    anyhow!("replay.ticks_until: \"{text}\" is not an RFC 3339 time (2023-02-21T00:00:00Z)")
                })?
                .seconds,
        ),
    };
    Ok(ReplaySettings {
        skip_through: 0,
        ticks_until,
        batch_size,
        defaults: TraditionalDefaults {
            year,
            offset_minutes,
        },
    })
}
