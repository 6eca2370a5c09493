//! What a fresh instance costs: the restart policy replaces a failed
//! instance by instantiating its component again from the linked
//! `InstancePre` and calling `init`. Prints microseconds per restart of the
//! bundled sshd module.
//!
//! `cargo bench -p correlator --bench fresh_instance`

use correlator::app::App;
use correlator::host::{Host, HostOptions, ResolvedGrants, StreamClock};
use std::path::Path;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let app = App::parse(
        Path::new("bench.toml"),
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n[handlers.h]\ncomponent = \"builtin:log\"\n",
    )?;
    let spec = &app.modules[0];
    let mut host = Host::new(StreamClock::default(), &HostOptions::default())?;
    let loaded = host.load(&spec.source, spec.limits.stack_bytes())?;
    let mut module = host.instantiate_module(spec, &loaded, &ResolvedGrants::default())?;
    let config = [
        ("login_failure_window", 300),
        ("login_failure_limit", 5),
        ("max_transaction_age", 2880),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), correlator::types::Value::Integer(value)))
    .collect();
    let _ = module.init(config)?;
    let rounds = 2000;
    for round in 1..=3 {
        let started = Instant::now();
        for _ in 0..rounds {
            module.restart().map_err(anyhow::Error::msg)?;
        }
        let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        println!(
            "round {round}: {micros:.1} µs per fresh sshd instance (instantiate + init), {rounds} restarts"
        );
    }
    Ok(())
}
