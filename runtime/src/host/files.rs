//! What an instance may do in the directory it was granted, beyond what
//! wasmtime-wasi's preopen already limits (paths stay inside it): no
//! special files, and no more than its quota of disk.
//!
//! Both are enforced by shadowing `wasi:filesystem` functions in the
//! linker with ones that check first and then do what wasmtime-wasi does.

use super::state::InstanceState;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView as _;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, ErrorCode, Filesize, HostDescriptor, OpenFlags,
    PathFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError};

/// The version of `wasi:filesystem` that wasmtime-wasi links (its WIT's
/// package version); guests built against any older 0.2 release import it
/// through wasmtime's semver matching.
const WASI_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// What a new file or directory counts against a quota, whatever it holds:
/// one block, so that a flood of empty files is bounded too.
const ENTRY_BYTES: u64 = 4096;

/// How often a quota about to be exceeded measures the directory again (a
/// file deleted since frees its space).
const REMEASURE_EVERY: Duration = Duration::from_millis(100);

/// The disk one instance may use in its granted directory: the space its
/// files take (allocated blocks, so a sparse file counts what it really
/// takes), plus what it writes, checked before each write. A write past it
/// fails with `insufficient-space`, as on a full disk.
pub struct DirQuota {
    root: PathBuf,
    limit: u64,
    usage: Mutex<Usage>,
}

struct Usage {
    /// Bytes taken: measured, plus what was written since.
    bytes: u64,
    /// When the directory was last measured (`None`: not yet).
    measured: Option<Instant>,
}

impl DirQuota {
    /// A quota of `limit` bytes for the directory `root`.
    pub fn new(root: PathBuf, limit: u64) -> Arc<Self> {
        Arc::new(DirQuota {
            root,
            limit,
            usage: Mutex::new(Usage {
                bytes: 0,
                measured: None,
            }),
        })
    }

    /// Take `bytes` of the quota for a write about to happen; false if that
    /// would pass it (measured again first, at most every
    /// [`REMEASURE_EVERY`]).
    pub fn reserve(&self, bytes: u64) -> bool {
        let Ok(mut usage) = self.usage.lock() else {
            return false;
        };
        let stale = usage
            .measured
            .is_none_or(|at| at.elapsed() >= REMEASURE_EVERY);
        if (usage.measured.is_none() || usage.bytes.saturating_add(bytes) > self.limit) && stale {
            usage.bytes = disk_usage(&self.root);
            usage.measured = Some(Instant::now());
        }
        if usage.bytes.saturating_add(bytes) > self.limit {
            return false;
        }
        usage.bytes += bytes;
        true
    }
}

/// Bytes the files under `root` take on disk (allocated blocks), not
/// following links.
fn disk_usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0u64;
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        total = total.saturating_add(metadata.blocks().saturating_mul(512));
        if metadata.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            pending.extend(entries.filter_map(Result::ok).map(|entry| entry.path()));
        }
    }
    total
}

/// `ENOSPC` on Linux: what a stream's write past the quota fails with, as
/// on a full disk (wasmtime-wasi turns a stream's `std::io::Error` into the
/// guest's `insufficient-space` by its OS error number).
const ENOSPC: i32 = 28;

/// The error a stream's write past the quota gets.
fn quota_error() -> StreamError {
    StreamError::LastOperationFailed(wasmtime::Error::new(std::io::Error::from_raw_os_error(
        ENOSPC,
    )))
}

/// A file's output stream that takes each write from the quota first.
struct QuotaStream {
    inner: DynOutputStream,
    quota: Arc<DirQuota>,
}

impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if !self.quota.reserve(bytes.len() as u64) {
            return Err(quota_error());
        }
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.inner.check_write()
    }

    fn write_zeroes(&mut self, nelem: usize) -> Result<(), StreamError> {
        if !self.quota.reserve(nelem as u64) {
            return Err(quota_error());
        }
        self.inner.write_zeroes(nelem)
    }
}

#[async_trait::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

/// The arguments of `descriptor.open-at`.
type OpenAt = (
    Resource<Descriptor>,
    PathFlags,
    String,
    OpenFlags,
    DescriptorFlags,
);

/// Shadow `wasi:filesystem`'s functions in `linker` with ones that keep a
/// granted directory to files and directories and to its quota:
///
/// - `open-at` refuses special files (FIFOs, devices, sockets: anything but
///   a regular file, a directory or a link) with `access`: opening a FIFO
///   for reading waits for a writer that may never come, on a thread of the
///   host's blocking pool that the call's time limit cannot give back, and
///   a device can be endless or reach hardware. Creating a file takes
///   [`ENTRY_BYTES`] of the quota.
/// - `write`, and the streams of `write-via-stream` and
///   `append-via-stream`, take what they write from the quota;
///   `create-directory-at` takes [`ENTRY_BYTES`].
pub fn guard_granted_directories(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(WASI_FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store, (dir, path_flags, path, open_flags, flags): OpenAt| {
            Box::new(async move {
                let quota = store.data().dir_quota.clone();
                let mut view = store.data_mut().filesystem();
                let stat = HostDescriptor::stat_at(
                    &mut view,
                    Resource::new_borrow(dir.rep()),
                    path_flags,
                    path.clone(),
                )
                .await;
                match stat {
                    // wasmtime-wasi reports a FIFO or a socket as unknown.
                    Ok(stat)
                        if !matches!(
                            stat.type_,
                            DescriptorType::RegularFile
                                | DescriptorType::Directory
                                | DescriptorType::SymbolicLink
                        ) =>
                    {
                        return Ok((Err(ErrorCode::Access),));
                    }
                    Ok(_) => {}
                    Err(_) if open_flags.contains(OpenFlags::CREATE) => {
                        if quota.is_some_and(|quota| !quota.reserve(ENTRY_BYTES)) {
                            return Ok((Err(ErrorCode::InsufficientSpace),));
                        }
                    }
                    Err(_) => {}
                }
                match HostDescriptor::open_at(&mut view, dir, path_flags, path, open_flags, flags)
                    .await
                {
                    Ok(opened) => Ok((Ok(opened),)),
                    Err(error) => Ok((Err(error.downcast()?),)),
                }
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (file, buffer, offset): (Resource<Descriptor>, Vec<u8>, Filesize)| {
            Box::new(async move {
                if let Some(quota) = &store.data().dir_quota
                    && !quota.reserve(buffer.len() as u64)
                {
                    return Ok((Err(ErrorCode::InsufficientSpace),));
                }
                let mut view = store.data_mut().filesystem();
                match HostDescriptor::write(&mut view, file, buffer, offset).await {
                    Ok(written) => Ok((Ok(written),)),
                    Err(error) => Ok((Err(error.downcast()?),)),
                }
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store, (dir, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                if let Some(quota) = &store.data().dir_quota
                    && !quota.reserve(ENTRY_BYTES)
                {
                    return Ok((Err(ErrorCode::InsufficientSpace),));
                }
                let mut view = store.data_mut().filesystem();
                match HostDescriptor::create_directory_at(&mut view, dir, path).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(error) => Ok((Err(error.downcast()?),)),
                }
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (file, offset): (Resource<Descriptor>, Filesize)| {
            let quota = store.data().dir_quota.clone();
            let mut view = store.data_mut().filesystem();
            let opened = HostDescriptor::write_via_stream(&mut view, file, offset);
            quota_stream(view.table, opened, quota)
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store, (file,): (Resource<Descriptor>,)| {
            let quota = store.data().dir_quota.clone();
            let mut view = store.data_mut().filesystem();
            let opened = HostDescriptor::append_via_stream(&mut view, file);
            quota_stream(view.table, opened, quota)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The result of opening a file's output stream, with the stream wrapped
/// in a [`QuotaStream`] when the instance has a quota.
fn quota_stream(
    table: &mut wasmtime::component::ResourceTable,
    opened: wasmtime_wasi::p2::FsResult<Resource<DynOutputStream>>,
    quota: Option<Arc<DirQuota>>,
) -> wasmtime::Result<(Result<Resource<DynOutputStream>, ErrorCode>,)> {
    let stream = match opened {
        Ok(stream) => stream,
        Err(error) => return Ok((Err(error.downcast()?),)),
    };
    let Some(quota) = quota else {
        return Ok((Ok(stream),));
    };
    let inner = table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(QuotaStream { inner, quota });
    Ok((Ok(table.push(wrapped)?),))
}
