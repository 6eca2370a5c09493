//! The component host: compiles each distinct component once, links the
//! contract's host interfaces and a WASI that grants nothing by default, and
//! makes one sandboxed instance per module or handler of the app.

mod backlog;
pub mod bindings;
pub mod encoded;
mod files;
mod guest_log;
mod instance;
mod state;

mod sandbox;
mod supervisor;

pub(crate) use encoded::decode as decode_values;
pub use instance::{
    Aborted, DISABLED_KIND, Handled, HandlerInstance, ModuleInstance, disabled_decl,
};
pub use sandbox::{GrantedDir, ResolvedGrants};
pub use state::{
    InstanceState, KeyedMessage, SentMessage, StateAccess, StreamClock, TimerRequests,
};

use crate::app::{ComponentSource, InstanceSpec, Role};
use anyhow::{Context as _, anyhow, bail};
use sandbox::{EpochTicker, Sandbox};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}

/// A compiled component and its identity.
#[derive(Clone)]
pub struct LoadedComponent {
    /// The compiled component, shared by all its instances.
    pub component: Component,
    /// SHA-256 of the component file, hex.
    pub digest: String,
    /// The WebAssembly stack (bytes) of the engine it was compiled for.
    pub stack: usize,
}

/// The engine, the linker and the compiled components.
pub struct Host {
    options: HostOptions,
    /// One engine per WebAssembly stack size, by size in bytes: wasmtime
    /// limits the stack per engine.
    engines: HashMap<usize, EngineSet>,
    compiled: HashMap<(ComponentSource, usize), LoadedComponent>,
    clock: StreamClock,
}

/// An engine with its linker and epoch ticker.
struct EngineSet {
    engine: Engine,
    linker: Linker<InstanceState>,
    ticker: Option<Arc<EpochTicker>>,
}

/// The WebAssembly stack of an instance whose limits do not say.
pub const DEFAULT_STACK_BYTES: usize = 512 << 10;

/// How the host is set up, from the configuration store.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where compiled components are kept between runs, if anywhere.
    pub compile_cache: Option<PathBuf>,
    /// Whether calls are stopped at their time limit (epoch interruption).
    pub call_time_limits: bool,
    /// Whether every instance is metered with fuel, to count the
    /// WebAssembly instructions it runs (`system.usage_report`): exact and
    /// the same from run to run, but slower, so only for tests and budgets.
    pub count_instructions: bool,
    /// The seed of the random numbers instances get, for runs that must
    /// repeat exactly (`correlator test`); `None`: the operating system's.
    pub random_seed: Option<u64>,
    /// Whether deliveries are captured (`delivery.capture`): then no
    /// instance reaches the network, whatever it is granted.
    pub offline: bool,
    /// Whether modules run one partition of a stream (a worker): their
    /// keyed messages (`exchange`) then go through the host to the
    /// partitions that own the keys.
    pub partitioned: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            compile_cache: None,
            call_time_limits: true,
            count_instructions: false,
            random_seed: None,
            offline: false,
            partitioned: false,
        }
    }
}

impl Host {
    /// A host whose instances all read `clock`. Compiled components are
    /// kept in the options' compile cache (if any) so that the next start
    /// skips compiling them.
    pub fn new(clock: StreamClock, options: &HostOptions) -> anyhow::Result<Host> {
        if !options.call_time_limits {
            tracing::warn!(
                "call time limits are off: a component that loops forever stops the run"
            );
        }
        // wasmtime-wasi makes its tokio runtime on first use and panics if
        // that fails; made now, it cannot fail later when a busy listener
        // has used every file descriptor.
        wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| ());
        let mut host = Host {
            options: options.clone(),
            engines: HashMap::new(),
            compiled: HashMap::new(),
            clock,
        };
        host.engine_set(DEFAULT_STACK_BYTES)?;
        Ok(host)
    }

    /// The engine for instances with `stack` bytes of WebAssembly stack,
    /// made on first use.
    fn engine_set(&mut self, stack: usize) -> anyhow::Result<&EngineSet> {
        if !self.engines.contains_key(&stack) {
            let set = EngineSet::new(&self.options, stack)?;
            self.engines.insert(stack, set);
        }
        self.engines
            .get(&stack)
            .ok_or_else(|| anyhow!("no engine for a stack of {stack} bytes"))
    }

    /// The engine a loaded component was compiled for.
    fn engine_of(&self, loaded: &LoadedComponent) -> anyhow::Result<&EngineSet> {
        self.engines
            .get(&loaded.stack)
            .ok_or_else(|| anyhow!("no engine for a stack of {} bytes", loaded.stack))
    }

    /// Names of the components built into the binary.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        builtin::BUILTINS.iter().map(|(name, _)| *name)
    }

    /// Read and compile a component for instances with `stack` bytes of
    /// WebAssembly stack, once per source and stack size.
    pub fn load(
        &mut self,
        source: &ComponentSource,
        stack: usize,
    ) -> anyhow::Result<LoadedComponent> {
        if let Some(loaded) = self.compiled.get(&(source.clone(), stack)) {
            return Ok(loaded.clone());
        }
        let bytes: Vec<u8> = match source {
            ComponentSource::Builtin(name) => builtin::BUILTINS
                .iter()
                .find(|(builtin, _)| builtin == name)
                .map(|(_, bytes)| bytes.to_vec())
                .ok_or_else(|| {
                    anyhow!(
                        "there is no builtin component \"{name}\" (builtins: {})",
                        Host::builtin_names().collect::<Vec<_>>().join(", ")
                    )
                })?,
            ComponentSource::File(path) => read_component(path)?,
        };
        let digest = hex(&Sha256::digest(&bytes));
        if !bytes.starts_with(b"\0asm") {
            bail!("{source} is not a WebAssembly file");
        }
        let engine = &self.engine_set(stack)?.engine;
        let component = Component::from_binary(engine, &bytes)
            .into_anyhow()
            .with_context(|| format!("{source} is not a valid WebAssembly component"))?;
        let loaded = LoadedComponent {
            component,
            digest,
            stack,
        };
        self.compiled
            .insert((source.clone(), stack), loaded.clone());
        Ok(loaded)
    }

    /// Instantiate a logic module with its grants and ask it to describe
    /// itself.
    pub fn instantiate_module(
        &self,
        spec: &InstanceSpec,
        loaded: &LoadedComponent,
        grants: &ResolvedGrants,
    ) -> anyhow::Result<ModuleInstance> {
        self.check_imports(spec, loaded)?;
        self.module_instance(spec, loaded, grants)
    }

    fn module_instance(
        &self,
        spec: &InstanceSpec,
        loaded: &LoadedComponent,
        grants: &ResolvedGrants,
    ) -> anyhow::Result<ModuleInstance> {
        let pre = self.pre(spec, loaded)?;
        let pre = bindings::module::LogicModulePre::new(pre)
            .into_anyhow()
            .with_context(|| {
                format!(
                    "{} is not a logic module (module \"{}\")",
                    spec.source, spec.name
                )
            })?;
        let sandbox = self.sandbox(spec, loaded, grants)?;
        ModuleInstance::new(sandbox, pre, spec.on_failure)
    }

    /// Instantiate an event handler with its grants and ask it to describe
    /// itself.
    pub fn instantiate_handler(
        &self,
        spec: &InstanceSpec,
        loaded: &LoadedComponent,
        grants: &ResolvedGrants,
    ) -> anyhow::Result<HandlerInstance> {
        self.check_imports(spec, loaded)?;
        self.handler_instance(spec, loaded, grants)
    }

    fn handler_instance(
        &self,
        spec: &InstanceSpec,
        loaded: &LoadedComponent,
        grants: &ResolvedGrants,
    ) -> anyhow::Result<HandlerInstance> {
        let pre = self.pre(spec, loaded)?;
        let pre = bindings::handler::EventHandlerPre::new(pre)
            .into_anyhow()
            .with_context(|| {
                format!(
                    "{} is not an event handler (handler \"{}\")",
                    spec.source, spec.name
                )
            })?;
        let sandbox = self.sandbox(spec, loaded, grants)?;
        HandlerInstance::new(sandbox, pre, spec.on_failure)
    }

    /// Check the component's imports against the instance's grants, then
    /// link it once for all its instances.
    /// Refuse a component that imports what the instance's grants do not
    /// cover.
    fn check_imports(&self, spec: &InstanceSpec, loaded: &LoadedComponent) -> anyhow::Result<()> {
        let component_type = loaded.component.component_type();
        let engine = &self.engine_of(loaded)?.engine;
        let imports: Vec<&str> = component_type
            .imports(engine)
            .map(|(name, _)| name)
            .collect();
        for &import in &imports {
            check_import(
                import,
                spec.grants.dir.is_some(),
                !spec.grants.network.is_empty(),
            )
            .map_err(|needs| {
                anyhow::anyhow!(
                    "{} \"{}\" ({}) imports {import}, {needs}",
                    spec.role.noun(),
                    spec.name,
                    spec.source
                )
            })?;
        }
        // Only once it is not refused: then its grants are what it gets.
        for warning in grant_warnings(spec, &imports) {
            tracing::warn!(
                "{}: {} \"{}\" ({}) {warning}",
                spec.source_location,
                spec.role.noun(),
                spec.name,
                spec.source
            );
        }
        Ok(())
    }

    /// The sandbox of an instance: its engine's, with its grants and limits.
    fn sandbox(
        &self,
        spec: &InstanceSpec,
        loaded: &LoadedComponent,
        grants: &ResolvedGrants,
    ) -> anyhow::Result<Sandbox> {
        let set = self.engine_of(loaded)?;
        Ok(Sandbox::new(
            set.engine.clone(),
            set.ticker.clone(),
            self.clock.clone(),
            spec,
            grants.clone(),
        )
        .metered(self.options.count_instructions, self.options.random_seed)
        .offline(self.options.offline)
        .partitioned(self.options.partitioned))
    }

    /// Link a component once for all its instances.
    fn pre(
        &self,
        spec: &InstanceSpec,
        loaded: &LoadedComponent,
    ) -> anyhow::Result<wasmtime::component::InstancePre<InstanceState>> {
        self.engine_of(loaded)?
            .linker
            .instantiate_pre(&loaded.component)
            .into_anyhow()
            .with_context(|| format!("cannot link {} for \"{}\"", spec.source, spec.name))
    }
}

/// What is wrong, though allowed, with what an instance is granted: grants
/// its component cannot use (it does not import the interface they open),
/// and grants wider than any component needs (the whole file system, every
/// destination). An operator reviewing an untrusted component should see
/// both.
pub fn grant_warnings(spec: &InstanceSpec, imports: &[&str]) -> Vec<String> {
    let imports_any = |packages: &[&str]| {
        imports.iter().any(|import| {
            let interface = import.split('@').next().unwrap_or(import);
            packages.iter().any(|package| {
                interface == *package || interface.split('/').next() == Some(*package)
            })
        })
    };
    let mut warnings = Vec::new();
    let grants = &spec.grants;
    if let Some((dir, _)) = &grants.dir {
        if dir.trim_end_matches('/').is_empty() && dir.starts_with('/') {
            warnings.push(format!(
                "is granted dir = \"{dir}\": the whole file system; grant a directory of its own"
            ));
        }
        if !imports_any(&["wasi:filesystem"]) {
            warnings.push(format!(
                "is granted dir = \"{dir}\" but does not import wasi:filesystem: the grant gives it nothing"
            ));
        }
    }
    if grants
        .network
        .iter()
        .any(|pattern| pattern.host == crate::app::HostPattern::Any && pattern.port.is_none())
    {
        warnings.push(
            "is granted network \"*:*\": every destination; name the HOST:PORT it needs".into(),
        );
    }
    if !grants.network.is_empty()
        && !imports_any(&["wasi:sockets", "wasi:http", "correlator:plugin/delivery"])
    {
        warnings.push(
            "is granted network destinations but imports neither wasi:sockets, wasi:http nor correlator:plugin/delivery: the grant gives it nothing".into(),
        );
    }
    if !grants.secrets.is_empty() && !imports_any(&["correlator:plugin/secrets"]) {
        warnings.push(
            "is granted secrets but does not import correlator:plugin/secrets: the grant gives it nothing".into(),
        );
    }
    warnings
}

/// Whether a component may import `import` given whether it was granted a
/// directory and network destinations; if not, what it would need. Interfaces a component may always
/// import are sandboxed by the host: configuration, the stream clock, event
/// dispatch, logging, and WASI's I/O streams, CLI (empty environment and
/// arguments), clocks (the stream clock) and random numbers.
pub fn check_import(import: &str, has_dir: bool, has_network: bool) -> Result<(), String> {
    let interface = import.split('@').next().unwrap_or(import);
    let package = interface.split('/').next().unwrap_or(interface);
    if interface == "correlator:plugin/delivery" && !has_network {
        return Err(
            "which needs network destinations to deliver to: grants = { network = [\"HOST:PORT\"] }"
                .into(),
        );
    }
    match package {
        "correlator:plugin" | "wasi:logging" | "wasi:io" | "wasi:cli" | "wasi:clocks"
        | "wasi:random" => Ok(()),
        "wasi:filesystem" if has_dir => Ok(()),
        "wasi:filesystem" => Err("which needs a directory: grants = { dir = \"...\" }".into()),
        "wasi:sockets" if has_network => Ok(()),
        "wasi:sockets" => {
            Err("which needs network destinations: grants = { network = [\"HOST:PORT\"] }".into())
        }
        "wasi:http" if has_network => Ok(()),
        "wasi:http" => {
            Err("which needs network destinations: grants = { network = [\"HOST:PORT\"] }".into())
        }
        _ => Err("which correlator does not provide".into()),
    }
}

/// What `correlator inspect` shows of a component, so an operator can see
/// what it asks for before granting it anything.
pub struct Inspection {
    /// SHA-256 of the component file, hex (what `sha256 = ...` pins).
    pub digest: String,
    /// Logic module or event handler, from its exports; `None` for neither.
    pub role: Option<Role>,
    /// What it declared about itself (if it is a module or a handler).
    pub descriptor: Option<crate::types::Descriptor>,
    /// The interfaces it imports: what it could ask the host for.
    pub imports: Vec<String>,
    /// The interfaces it exports.
    pub exports: Vec<String>,
}

impl EngineSet {
    fn new(options: &HostOptions, stack: usize) -> anyhow::Result<EngineSet> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        // Calls are stopped when they run past their deadline (see Sandbox).
        config.epoch_interruption(options.call_time_limits);
        config.consume_fuel(options.count_instructions);
        config.max_wasm_stack(stack);
        // The host's own stack for a call must hold the guest's and leave
        // room for host frames.
        config.async_stack_size((stack + (1 << 20)).max(2 << 20));
        // For `perf report` over guest code: /tmp/perf-PID.map names it.
        if std::env::var_os("CORRELATOR_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(directory) = &options.compile_cache {
            match compile_cache_for(directory) {
                Ok(cache) => {
                    config.cache(Some(cache));
                }
                Err(error) => tracing::warn!(
                    directory = %directory.display(),
                    "compiled components will not be cached: {error:#}"
                ),
            }
        }
        let engine = Engine::new(&config)
            .into_anyhow()
            .context("cannot set up the WebAssembly engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .into_anyhow()
            .context("cannot link WASI")?;
        files::guard_granted_directories(&mut linker)
            .into_anyhow()
            .context("cannot link the guards of granted directories")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .into_anyhow()
            .context("cannot link wasi:http")?;
        // The module world's imports are a superset of the handler world's.
        bindings::module::LogicModule::add_to_linker::<InstanceState, HasSelf<InstanceState>>(
            &mut linker,
            |state| state,
        )
        .into_anyhow()
        .context("cannot link the correlator interfaces")?;
        // The one interface of the handler world that modules do not have.
        bindings::handler::correlator::plugin::delivery::add_to_linker::<
            InstanceState,
            HasSelf<InstanceState>,
        >(&mut linker, |state| state)
        .into_anyhow()
        .context("cannot link the delivery interface")?;
        let ticker = if options.call_time_limits {
            Some(Arc::new(EpochTicker::start(engine.clone())?))
        } else {
            None
        };
        Ok(EngineSet {
            engine,
            linker,
            ticker,
        })
    }
}

impl Host {
    /// Compile a component and describe it, without granting it anything.
    pub fn inspect(&mut self, source: &ComponentSource) -> anyhow::Result<Inspection> {
        let loaded = self.load(source, DEFAULT_STACK_BYTES)?;
        let engine = self.engine_of(&loaded)?.engine.clone();
        let component_type = loaded.component.component_type();
        let imports: Vec<String> = component_type
            .imports(&engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports: Vec<String> = component_type
            .exports(&engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports_interface = |interface: &str| {
            exports
                .iter()
                .any(|name| name.starts_with(&format!("correlator:plugin/{interface}@")))
        };
        let role = if exports_interface("logic") {
            Some(Role::Module)
        } else if exports_interface("handler") {
            Some(Role::Handler)
        } else {
            None
        };
        let location = crate::app::Location {
            file: PathBuf::new(),
            line: 0,
            column: 0,
        };
        let spec = |role| InstanceSpec {
            name: "inspect".into(),
            role,
            source: source.clone(),
            source_location: location.clone(),
            config: Vec::new(),
            filter: None,
            grants: crate::app::Grants::default(),
            sha256: None,
            limits: crate::app::Limits::default(),
            on_failure: crate::app::OnFailure::default(),
            notify: crate::notify::Policy::default(),
        };
        let descriptor = match role {
            Some(Role::Module) => Some(
                self.module_instance(&spec(Role::Module), &loaded, &ResolvedGrants::default())?
                    .descriptor,
            ),
            Some(Role::Handler) => Some(
                self.handler_instance(&spec(Role::Handler), &loaded, &ResolvedGrants::default())?
                    .descriptor,
            ),
            None => None,
        };
        Ok(Inspection {
            digest: loaded.digest,
            role,
            descriptor,
            imports,
            exports,
        })
    }
}

/// The largest component file the host reads: far above any real one (the
/// bundled components are a few hundred KiB), far below what would make
/// reading and compiling it a way to exhaust the host.
pub const MAX_COMPONENT_BYTES: u64 = 128 << 20;

/// The bytes of the component file at `path`, refused before reading when
/// it is not a regular file (a FIFO would block the start) or is larger
/// than [`MAX_COMPONENT_BYTES`].
fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read component {}", path.display()))?;
    let too_large = |size: u64| {
        anyhow!(
            "component {} has {} bytes, more than the {} MiB a component may have",
            path.display(),
            size,
            MAX_COMPONENT_BYTES >> 20
        )
    };
    if !metadata.is_file() {
        bail!("component {} is not a regular file", path.display());
    }
    if metadata.len() > MAX_COMPONENT_BYTES {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_COMPONENT_BYTES + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read component {}", path.display()))?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Why the compile cache in `directory` may not be trusted, if it may not:
/// wasmtime loads the native code it finds there without compiling or
/// checking it, so the directory and every file in it must be writable by
/// this process's user alone (as the secrets file must be readable by its
/// owner alone).
fn untrusted_cache(directory: &Path) -> Option<String> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    // The owner of /proc/self is this process's effective user.
    let me = std::fs::metadata("/proc/self").ok()?.uid();
    let mut pending = vec![directory.to_path_buf()];
    let mut looked_at = 0;
    while let Some(path) = pending.pop() {
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            // Gone since it was listed: another process's temporary file
            // (wasmtime writes `*.wip-*` files and renames them); what is
            // gone cannot be loaded.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && path != directory => {
                continue;
            }
            Err(error) => return Some(format!("cannot look at {}: {error}", path.display())),
        };
        let mode = metadata.permissions().mode() & 0o777;
        if metadata.uid() != me {
            return Some(format!(
                "{} belongs to user {}, not to this process's user {me}",
                path.display(),
                metadata.uid()
            ));
        }
        if mode & 0o022 != 0 {
            return Some(format!(
                "{} is writable by others (mode {mode:o})",
                path.display()
            ));
        }
        looked_at += 1;
        if looked_at > 100_000 {
            return Some(format!(
                "{} holds too many files to check",
                directory.display()
            ));
        }
        if metadata.is_dir() {
            match std::fs::read_dir(&path) {
                Ok(entries) => pending.extend(
                    entries
                        .filter_map(|entry| entry.ok())
                        .map(|entry| entry.path()),
                ),
                Err(error) => return Some(format!("cannot list {}: {error}", path.display())),
            }
        }
    }
    None
}

fn compile_cache_for(directory: &Path) -> anyhow::Result<wasmtime::Cache> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    if let Some(why) = untrusted_cache(directory) {
        bail!("{why}; anyone who can write there could make this process run their native code");
    }
    let directory = std::path::absolute(directory)
        .with_context(|| format!("cannot resolve {}", directory.display()))?;
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(directory);
    wasmtime::Cache::new(config).into_anyhow()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// wasmtime's error converts into anyhow's, but does not take anyhow's
/// `context`; this bridges the two.
pub(crate) trait IntoAnyhow<T> {
    fn into_anyhow(self) -> anyhow::Result<T>;
}

impl<T> IntoAnyhow<T> for Result<T, wasmtime::Error> {
    fn into_anyhow(self) -> anyhow::Result<T> {
        self.map_err(anyhow::Error::from)
    }
}
