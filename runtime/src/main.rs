//! The `correlator` binary: see [`correlator::cli`].

/// mimalloc: the event path allocates many small strings per event, and
/// glibc's allocator showed up in profiles of the replay.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    correlator::cli::main()
}
