//! The component host: compiles each distinct component once, links the
//! contract's host interfaces and a WASI that grants nothing by default, and
//! makes one sandboxed instance per module or handler of the app.

pub mod bindings;
mod instance;
mod state;

pub use instance::{HandlerInstance, ModuleInstance};
pub use state::{InstanceState, StreamClock};

use crate::app::{ComponentSource, InstanceSpec, Role};
use anyhow::{Context as _, anyhow, bail};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}

/// Linear memory one instance may grow to. Generous for the bundled
/// modules (a few MiB), small enough that a runaway guest cannot hurt the
/// host.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;

/// A compiled component and its identity.
#[derive(Clone)]
pub struct LoadedComponent {
    /// The compiled component, shared by all its instances.
    pub component: Component,
    /// SHA-256 of the component file, hex.
    pub digest: String,
}

/// What an instance may touch beyond its own memory, resolved to host paths.
#[derive(Debug, Clone, Default)]
pub struct ResolvedGrants {
    /// A read-write directory, seen by the guest as its current directory.
    pub dir: Option<PathBuf>,
}

/// The engine, the linker and the compiled components.
pub struct Host {
    engine: Engine,
    linker: Linker<InstanceState>,
    compiled: HashMap<ComponentSource, LoadedComponent>,
    clock: StreamClock,
}

impl Host {
    /// A host whose instances all read `clock`. Compiled components are
    /// kept in `compile_cache` (if given) so that the next start skips
    /// compiling them.
    pub fn new(clock: StreamClock, compile_cache: Option<&Path>) -> anyhow::Result<Host> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        if let Some(directory) = compile_cache {
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
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .into_anyhow()
            .context("cannot link WASI")?;
        // The module world's imports are a superset of the handler world's.
        bindings::module::LogicModule::add_to_linker::<InstanceState, HasSelf<InstanceState>>(
            &mut linker,
            |state| state,
        )
        .into_anyhow()
        .context("cannot link the correlator interfaces")?;
        Ok(Host {
            engine,
            linker,
            compiled: HashMap::new(),
            clock,
        })
    }

    /// Names of the components built into the binary.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        builtin::BUILTINS.iter().map(|(name, _)| *name)
    }

    /// Read and compile a component, once per source.
    pub fn load(&mut self, source: &ComponentSource) -> anyhow::Result<LoadedComponent> {
        if let Some(loaded) = self.compiled.get(source) {
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
            ComponentSource::File(path) => std::fs::read(path)
                .with_context(|| format!("cannot read component {}", path.display()))?,
        };
        let digest = hex(&Sha256::digest(&bytes));
        if !bytes.starts_with(b"\0asm") {
            bail!("{source} is not a WebAssembly file");
        }
        let component = Component::from_binary(&self.engine, &bytes)
            .into_anyhow()
            .with_context(|| format!("{source} is not a valid WebAssembly component"))?;
        let loaded = LoadedComponent { component, digest };
        self.compiled.insert(source.clone(), loaded.clone());
        Ok(loaded)
    }

    /// A store for one instance, with its sandbox: no environment, no
    /// arguments, no network, the stream clock as its only clock, and a
    /// directory only if granted. Handlers may write to standard output
    /// (that is what the log handler is for); modules may not.
    fn store(
        &self,
        spec: &InstanceSpec,
        grants: &ResolvedGrants,
    ) -> anyhow::Result<Store<InstanceState>> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.wall_clock(self.clock.clone())
            .monotonic_clock(self.clock.clone())
            .inherit_stderr();
        if spec.role == Role::Handler {
            wasi.inherit_stdout();
        }
        if let Some(dir) = &grants.dir {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create the directory {} granted to \"{}\"",
                    dir.display(),
                    spec.name
                )
            })?;
            wasi.preopened_dir(dir, ".", FsPerms::ReadWrite)
                .into_anyhow()
                .with_context(|| {
                    format!(
                        "cannot open the directory {} granted to \"{}\"",
                        dir.display(),
                        spec.name
                    )
                })?;
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(DEFAULT_MEMORY_LIMIT)
            .build();
        let state = InstanceState::new(
            Arc::from(spec.name.as_str()),
            wasi.build(),
            limits,
            self.clock.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        Ok(store)
    }

    /// Instantiate a logic module and ask it to describe itself.
    pub fn instantiate_module(
        &self,
        spec: &InstanceSpec,
        loaded: &LoadedComponent,
    ) -> anyhow::Result<ModuleInstance> {
        let mut store = self.store(spec, &ResolvedGrants::default())?;
        let bindings =
            bindings::module::LogicModule::instantiate(&mut store, &loaded.component, &self.linker)
                .into_anyhow()
                .with_context(|| {
                    format!(
                        "cannot instantiate {} as module \"{}\"",
                        spec.source, spec.name
                    )
                })?;
        ModuleInstance::new(spec.name.clone(), store, bindings)
    }

    /// Instantiate an event handler with its grants and ask it to describe
    /// itself.
    pub fn instantiate_handler(
        &self,
        spec: &InstanceSpec,
        loaded: &LoadedComponent,
        grants: &ResolvedGrants,
    ) -> anyhow::Result<HandlerInstance> {
        let mut store = self.store(spec, grants)?;
        let bindings = bindings::handler::EventHandler::instantiate(
            &mut store,
            &loaded.component,
            &self.linker,
        )
        .into_anyhow()
        .with_context(|| {
            format!(
                "cannot instantiate {} as handler \"{}\"",
                spec.source, spec.name
            )
        })?;
        HandlerInstance::new(spec.name.clone(), store, bindings)
    }
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

fn compile_cache_for(directory: &Path) -> anyhow::Result<wasmtime::Cache> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    let directory = std::path::absolute(directory)
        .with_context(|| format!("cannot resolve {}", directory.display()))?;
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(directory);
    wasmtime::Cache::new(config).into_anyhow()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
