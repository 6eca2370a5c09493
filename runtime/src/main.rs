//! The `correlator` binary: see [`correlator::cli`].

fn main() -> std::process::ExitCode {
    correlator::cli::main()
}
