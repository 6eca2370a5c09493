//! The command line: `run`, `config`, `check`, `inspect` and `capture`.
//! Parsing is clap's; each command resolves the app and calls into the
//! library.

mod capture_tools;
mod new_crate;
mod stream_roles;
mod test_runner;

use crate::app::{App, ComponentSource, Role};
use crate::capture::{self, CaptureWriter};
use crate::config_store::display_value;
use crate::host::{Host, HostOptions, StreamClock, check_import};
use crate::listen::{self, ListenSettings};
use crate::loader::{self, Purpose};
use crate::replay;
use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use std::fmt::Write as _;
use std::io::{BufReader, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// What `--version` says: the release, and the component contract (the WIT
/// package) a module or handler must be built against to load.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (component contract correlator:plugin@0.1.0, wasm32-wasip2)"
);

/// Log correlation with sandboxed WebAssembly modules and handlers.
///
/// An app file (TOML) chooses logic modules, which look for patterns across
/// log records and dispatch events, and event handlers, which act on the
/// events their filter selects. Diagnostics go to standard error; set
/// RUST_LOG (e.g. RUST_LOG=debug) to see more.
#[derive(Debug, Parser)]
#[command(
    name = "correlator",
    version = VERSION,
    propagate_version = true,
    after_long_help = "Examples:\n  \
        correlator run --app apps/ssh-report.toml --read-file data/sshd-1.cap\n  \
        correlator run --app apps/ssh-report.toml --write-file\n  \
        correlator run --app apps/ssh-report.toml -o listen.udp=0.0.0.0:514\n  \
        correlator run --app apps/report.toml --read-file - < /var/log/auth.log\n  \
        correlator config --app apps/ssh-report.toml\n  \
        correlator check --app apps/ssh-report.toml\n  \
        correlator inspect builtin:sshd\n  \
        correlator test modules/sshd/tests\n  \
        correlator new module my-module\n  \
        correlator capture summary 20261127.cap > list.txt\n  \
        correlator capture filter 20261127.cap --without list.txt --out trimmed.cap\n  \
        correlator outbox --app app.toml list"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an app: listen for syslog on the network, or replay a capture.
    ///
    /// Every record goes to every module; every event goes to every handler
    /// whose filter selects it. Without --read-file the app listens where
    /// the listen.* configuration items say (by default TCP on
    /// 127.0.0.1:5140) until SIGINT or SIGTERM; then, as at the end of a
    /// capture (or when a replay is stopped by a signal), every module's
    /// statistics are dispatched too.
    ///
    /// Modules' durable state (open sessions, counters) is kept in
    /// APP.state.redb in system.run_dir, committed every
    /// state.checkpoint_interval and at the end. A listening run goes on
    /// from the state the last run left; a replay starts empty unless
    /// given --continue or --keep-state. -o state.enabled=false runs
    /// without it.
    Run(RunArgs),
    /// Print every configuration item of an app (key, type, value, default,
    /// source, description) and exit.
    Config(AppArgs),
    /// Check an app without running it: components load, configuration
    /// values convert, filters compile, and the state store holds nothing
    /// a start would refuse (it says what a start would migrate, and after
    /// which record of which input its last checkpoint stands: what
    /// `run --continue` starts after).
    Check(AppArgs),
    /// Show what a component is and asks for before you grant it anything:
    /// its SHA-256, declared name, configuration items, event types,
    /// imports and exports.
    Inspect(InspectArgs),
    /// Look at and trim capture files.
    #[command(subcommand)]
    Capture(CaptureCommand),
    /// Run the test cases (`*.test.toml`) of modules and handlers, each
    /// against its component in isolation: a process of its own, a fresh
    /// sandbox, no durable state, only what the case grants, the records'
    /// (or events') time as the clock, random numbers from a fixed seed,
    /// deliveries captured and never sent.
    ///
    /// A module case names a component (builtin:NAME or a .wasm path
    /// relative to the test file), its `config`, records (`input = "FILE"`
    /// or `lines = [...]`; `year` for RFC 3164 ones) and the events
    /// expected (`[[case.expect]]`: `kind`, `fields` (a subset that must
    /// match), `summary`, `count`). `only_expected = true` fails on any
    /// other event; `golden = "FILE"` compares every event with a file of
    /// JSON lines, which --bless writes; `[case.restart]` with `input` or
    /// `lines` restarts the runtime on the state the module saved and
    /// hands it those records too; `ticks_until = 2023-02-21T00:00:00Z`
    /// runs the timers on past the last record.
    ///
    /// A handler case gives events instead: `events = "FILE"` (JSON lines
    /// as the log handler writes them) or inline tables, with `module =`
    /// the module whose declarations type them, or `events_from = "CASE"`,
    /// the events of a module case above it. It checks
    /// `[[case.expect_file]]` (`path` in the granted directory, `content`
    /// or `contains`), `[[case.expect_request]]` (`method`, `url`,
    /// `headers`, `body`, `body_contains`, `count`) and
    /// `[[case.expect_mail]]` (`server`, `sender`, `recipients`,
    /// `contains`, `count`); `grants` and `secrets = { NAME = "value" }`
    /// give it what it needs.
    ///
    /// Budgets, counted exactly with fuel: `max_instructions_per_record`
    /// (module) or `max_instructions_per_event` (handler), on average over
    /// the case, and `max_memory_mib`. `skip = "reason"` keeps a case from
    /// running (it counts as skipped).
    ///
    /// Prints a verdict per case, what differed for each failure, and `N
    /// passed, N failed` (`, N skipped` when some were). Exits 0 when every case passed, 1 when one
    /// failed, 2 when a test file or a component could not be loaded.
    Test(TestArgs),
    /// Make a new module or handler crate, outside this repository: it
    /// builds to a component with `cargo build --release` (the target is
    /// selected in its .cargo/config.toml), has unit tests that run
    /// natively (`cargo unit`) and, for a module, a test file `correlator
    /// test` runs against the built component. The guest SDK is copied
    /// into it (vendor/correlator-sdk): nothing is fetched from here.
    New {
        /// module or handler.
        #[arg(value_enum)]
        kind: NewKind,
        /// The crate's name (lowercase letters, digits, - and _).
        name: String,
        /// Where to make it (a new directory NAME there).
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Show and manage the deliveries of handlers that act on events
    /// (webhook, sms) kept in the state store: those waiting for their
    /// destination, and those given up (dead letters). Not while the app
    /// runs (the store is then in use).
    Outbox(OutboxArgs),
}

#[derive(Debug, Args)]
struct OutboxArgs {
    #[command(flatten)]
    app: AppArgs,
    #[command(subcommand)]
    action: OutboxAction,
}

#[derive(Debug, Subcommand)]
enum OutboxAction {
    /// List the deliveries waiting and the dead letters (never their
    /// headers, which carry credentials).
    List,
    /// Send dead letters again: they go back to their outbox, and the next
    /// run delivers them (their maximum age counts from now).
    Retry(OutboxSelection),
    /// Delete deliveries: dead letters with --dead, else waiting ones.
    Purge {
        #[command(flatten)]
        selection: OutboxSelection,
        /// Delete dead letters rather than waiting deliveries.
        #[arg(long)]
        dead: bool,
    },
}

#[derive(Debug, Args)]
struct OutboxSelection {
    /// Only this handler's.
    #[arg(long, value_name = "HANDLER")]
    handler: Option<String>,
    /// Only these numbers (as `list` shows them); none: all.
    #[arg(value_name = "NUMBER")]
    numbers: Vec<u64>,
}

#[derive(Debug, Subcommand)]
enum CaptureCommand {
    /// Print one line per record: its line number, time, host, program and
    /// the start of its message. Save it, mark records with a leading # and
    /// give it to `capture filter --without`.
    Summary {
        /// The capture file.
        #[arg(value_name = "CAPTURE")]
        capture: PathBuf,
    },
    /// Copy a capture without the records marked # in a list made by
    /// `capture summary`.
    Filter {
        /// The capture file to copy from.
        #[arg(value_name = "CAPTURE")]
        capture: PathBuf,
        /// The list: `capture summary`'s output, with the lines of records
        /// to leave out starting with #. (`--keep` is the old name.)
        #[arg(long = "without", alias = "keep", value_name = "LIST")]
        keep: PathBuf,
        /// The new capture (must not exist yet).
        #[arg(long, value_name = "NEW")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct TestArgs {
    /// Test files, or directories searched for *.test.toml (default:
    /// tests).
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Also write the results in this format: junit.
    #[arg(long, value_name = "FORMAT", requires = "output")]
    format: Option<TestReportFormat>,
    /// Where --format writes.
    #[arg(long, value_name = "FILE", requires = "format")]
    output: Option<PathBuf>,
    /// Write each case's golden file (`golden = "FILE"`) from the events it
    /// gives now, instead of comparing.
    #[arg(long)]
    bless: bool,
}

/// What `correlator new` makes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum NewKind {
    /// A logic module: looks at records, dispatches events.
    Module,
    /// An event handler: acts on events.
    Handler,
}

/// Formats `correlator test` writes results in.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TestReportFormat {
    /// JUnit XML, as CI systems read it.
    Junit,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// A component: builtin:NAME or a path to a .wasm file.
    #[arg(value_name = "COMPONENT")]
    component: String,
}

#[derive(Debug, Args)]
struct AppArgs {
    /// The app file (TOML).
    #[arg(long, value_name = "FILE")]
    app: PathBuf,
    /// Set a configuration item, overriding the app file
    /// (e.g. module.OpenSSH.login_failure_limit=3). Repeatable.
    #[arg(long = "option", short = 'o', value_name = "KEY=VALUE")]
    options: Vec<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Replay this capture file (one record per line, RFC 5424 or RFC 3164;
    /// "-" reads standard input) instead of listening.
    #[arg(long, value_name = "CAPTURE")]
    read_file: Option<PathBuf>,
    /// While listening, also write every received message to this capture
    /// file (default: YYYYMMDD.cap in system.run_dir); an existing file is
    /// moved aside to _1, _2, ...
    #[arg(
        long,
        value_name = "CAPTURE",
        num_args = 0..=1,
        conflicts_with = "read_file"
    )]
    write_file: Option<Option<PathBuf>>,
    /// Start module INSTANCE without the durable state the store holds for
    /// it (state written by another component, or a version it cannot
    /// read); that state is deleted. Repeatable.
    #[arg(long, value_name = "INSTANCE")]
    discard_state: Vec<String>,
    /// Delete everything in the state store before starting, even another
    /// app's state: every module starts empty.
    #[arg(long)]
    discard_all_state: bool,
    /// Continue the replay that the state's last checkpoint was taken in
    /// (after a stop, a crash or kill -9): the records of the capture it
    /// already covers are passed over, the rest processed. The capture must
    /// be the one the checkpoint names (`correlator check` shows it).
    #[arg(long = "continue", requires = "read_file", conflicts_with_all = ["discard_all_state", "keep_state"])]
    continue_replay: bool,
    /// Follow this log file as it grows, through rotations (rename or
    /// copytruncate), instead of listening; repeatable, and `*` or `?` in
    /// the file name follow every match (new ones too). Each file's
    /// position is kept in the state checkpoint: a restart resumes at the
    /// line after the last one the state covers.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["read_file", "write_file"])]
    follow: Vec<PathBuf>,
    /// Read the systemd journal as it grows (journalctl --follow, a child
    /// process), instead of listening: the journal.* items say which
    /// entries, from where, and where to start the first time. The cursor
    /// of the last entry processed is kept in the state checkpoint: a
    /// restart goes on after it.
    #[arg(long, conflicts_with_all = ["read_file", "write_file", "follow"])]
    journal: bool,
    /// Start the modules from the state the last run left instead of
    /// empty, and read the capture from its first record: for a capture
    /// that follows the one replayed before (auth.log after auth.log.1).
    /// Without it (or --continue) a replay starts every module empty, so
    /// that replaying a capture twice gives the same events.
    #[arg(long, requires = "read_file", conflicts_with_all = ["discard_all_state"])]
    keep_state: bool,
    /// Hand the events of this file (JSON lines, as the log handler writes
    /// them with format = "json"; "-" reads standard input) to the app's
    /// handlers, instead of reading records: to deliver again what a log
    /// recorded, or to try a handler on known events. Modules are loaded
    /// only to type the events they declare; they get no records. The
    /// stream clock follows the events' time.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["read_file", "write_file", "follow", "journal", "keep_state", "continue_replay"])]
    events: Option<PathBuf>,
}

/// Parse the command line, run the command, print the whole error chain on
/// failure.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    if let Command::Test(args) = &cli.command {
        let options = test_runner::TestOptions {
            paths: args.paths.clone(),
            junit: args.format.and(args.output.clone()),
            bless: args.bless,
        };
        return test_runner::run(&options).unwrap_or_else(|error| {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        });
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    // The compile cache is best effort: its worker's complaints (such as
    // another process having tidied a file away first) are not the
    // operator's concern unless asked for.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,wasmtime_internal_cache=error,async_nats=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run_app(&args),
        Command::Config(args) => print_config(&args),
        Command::Check(args) => check(&args),
        Command::Inspect(args) => inspect(&args),
        Command::Outbox(args) => outbox(&args),
        // Handled in `main`: it has exit codes of its own.
        Command::Test(_) => Ok(()),
        Command::New { kind, name, dir } => {
            let kind = match kind {
                NewKind::Module => new_crate::Kind::Module,
                NewKind::Handler => new_crate::Kind::Handler,
            };
            new_crate::create(kind, &name, &dir)
        }
        Command::Capture(CaptureCommand::Summary { capture }) => capture_tools::summary(&capture),
        Command::Capture(CaptureCommand::Filter { capture, keep, out }) => {
            capture_tools::filter(&capture, &keep, &out)
        }
    }
}

fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let source = match args.component.strip_prefix("builtin:") {
        Some(name) => ComponentSource::Builtin(name.to_owned()),
        None => ComponentSource::File(PathBuf::from(&args.component)),
    };
    let mut host = Host::new(StreamClock::default(), &HostOptions::default())?;
    let inspection = host.inspect(&source)?;
    let mut out = String::new();
    let role = match inspection.role {
        Some(Role::Module) => "logic module",
        Some(Role::Handler) => "event handler",
        None => "neither a logic module nor an event handler",
    };
    let _ = writeln!(
        out,
        "component: {source}\nsha256: {}\nrole: {role}",
        inspection.digest
    );
    if let Some(descriptor) = &inspection.descriptor {
        let _ = writeln!(
            out,
            "name: {}\ndescription: {}",
            descriptor.name, descriptor.description
        );
        let _ = writeln!(out, "configuration items:");
        for item in &descriptor.config {
            let _ = writeln!(
                out,
                "  {} ({}, default {}): {}",
                item.key,
                item.value_type.name(),
                display_value(&item.default),
                item.description
            );
        }
        if inspection.role == Some(Role::Module) {
            let _ = writeln!(out, "event types:");
            for event in &descriptor.events {
                let _ = writeln!(
                    out,
                    "  {} ({}): {}",
                    event.kind,
                    event.severity.name(),
                    event.description
                );
                for field in &event.fields {
                    let _ = writeln!(
                        out,
                        "    {} ({}): {}",
                        field.name,
                        field.value_type.name(),
                        field.description
                    );
                }
            }
        }
    }
    let _ = writeln!(out, "imports:");
    for import in &inspection.imports {
        match check_import(import, false, false) {
            Ok(()) => {
                let _ = writeln!(out, "  {import}");
            }
            Err(needs) => {
                let _ = writeln!(out, "  {import}  ({})", needs.trim_start_matches("which "));
            }
        }
    }
    let _ = writeln!(out, "exports:");
    for export in &inspection.exports {
        let _ = writeln!(out, "  {export}");
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

/// `correlator outbox`: what the state store keeps of handlers' deliveries.
fn outbox(args: &OutboxArgs) -> anyhow::Result<()> {
    use crate::state_store::Letters;
    let app = App::load(&args.app.app)?;
    let Some(store) = loader::existing_state_store(&app, &args.app.options)? else {
        println!(
            "no state store (state.enabled is false, or nothing ran yet): no delivery is kept"
        );
        return Ok(());
    };
    let picks = |selection: &OutboxSelection| {
        let handler = selection.handler.clone();
        let numbers = selection.numbers.clone();
        move |name: &str, number: u64| {
            handler.as_deref().is_none_or(|wanted| wanted == name)
                && (numbers.is_empty() || numbers.contains(&number))
        }
    };
    match &args.action {
        OutboxAction::List => {
            let mut out = String::new();
            let waiting = store.letters(Letters::Waiting)?;
            let dead = store.letters(Letters::Dead)?;
            for (which, letters, is_dead) in [("waiting", &waiting, false), ("dead", &dead, true)] {
                for (handler, number, bytes) in letters {
                    let _ = writeln!(
                        out,
                        "{which} {handler} #{number}: {}",
                        crate::delivery::describe(bytes, is_dead)
                    );
                }
            }
            for spec in &app.handlers {
                if let Some(held) = store
                    .notices(&spec.name)?
                    .and_then(|stored| crate::notify::describe(&stored))
                {
                    let _ = writeln!(
                        out,
                        "notifier {}: {held} (sent when their wait ends in the next run)",
                        spec.name
                    );
                }
            }
            let _ = writeln!(out, "{} waiting, {} dead", waiting.len(), dead.len());
            std::io::stdout().lock().write_all(out.as_bytes())?;
        }
        OutboxAction::Retry(selection) => {
            let revive: &crate::state_store::Revive = &crate::delivery::revive;
            let moved = store.take_letters(Letters::Dead, picks(selection), Some(revive))?;
            println!("{moved} dead letters back in their outbox: the next run delivers them");
        }
        OutboxAction::Purge { selection, dead } => {
            let which = if *dead {
                Letters::Dead
            } else {
                Letters::Waiting
            };
            let deleted = store.take_letters(which, picks(selection), None)?;
            let what = if *dead {
                "dead letters"
            } else {
                "waiting deliveries"
            };
            println!("{deleted} {what} deleted");
        }
    }
    Ok(())
}

fn run_app(args: &RunArgs) -> anyhow::Result<()> {
    let app = App::load(&args.app.app)?;
    // A capture that cannot be read is refused before anything starts.
    if let Some(capture) = &args.read_file
        && capture.as_os_str() != "-"
    {
        match std::fs::metadata(capture) {
            Ok(metadata) if metadata.is_dir() => bail!(
                "--read-file {}: is a directory; give a capture or log file (or - for standard input)",
                capture.display()
            ),
            Ok(_) => {}
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!("cannot open capture {}", capture.display())));
            }
        }
    }
    let system = loader::system_store(&app, &args.app.options)?;
    let stream = crate::stream::StreamSettings::from_store(&system)?;
    match stream.role {
        crate::stream::Role::Publish => {
            return stream_roles::front_end(args, &app, &system, &stream);
        }
        crate::stream::Role::Work => return stream_roles::worker(args, &app, &system, &stream),
        crate::stream::Role::Off => {}
    }
    let loader::Loaded {
        mut modules,
        mut handlers,
        replay: settings,
        startup_events,
        store,
        state_report: _,
        courier,
    } = loader::load(
        &app,
        &args.app.options,
        Purpose::Run,
        &loader::Discard {
            instances: args.discard_state.clone(),
            all: args.discard_all_state,
            // A listener is a service: it always goes on from its state.
            modules: args.read_file.is_some() && !args.continue_replay && !args.keep_state,
        },
    )?;
    crate::metrics::registry().set_input(if args.journal {
        "journal"
    } else if args.read_file.is_some() || !args.follow.is_empty() {
        "file"
    } else {
        "network"
    });
    if let Some(address) = loader::metrics_address(&store)? {
        crate::metrics::serve(address)?;
    }
    handlers.route(startup_events)?;
    let mut settings = settings;
    if let Some(read_file) = &args.read_file {
        settings.skip_through = continue_from(modules.restored(), read_file, args.continue_replay)?;
    }
    if let Some(events) = &args.events {
        return replay_events(events, &store, &mut modules, handlers, courier.as_ref());
    }
    let source = match &args.read_file {
        Some(path) => path.display().to_string(),
        None if !args.follow.is_empty() => "follow".to_owned(),
        None if args.journal => "journal".to_owned(),
        None => "network".to_owned(),
    };
    modules.set_source(&source);
    if !args.follow.is_empty() {
        return follow_files(args, settings, modules, handlers, courier.as_ref());
    }
    if args.journal {
        let journal = crate::journal::JournalSettings::from_store(
            &store,
            settings.batch_size,
            settings.defaults,
        );
        return read_journal(&journal, modules, handlers, courier.as_ref());
    }
    let Some(read_file) = &args.read_file else {
        let listen = ListenSettings::from_store(&store)?;
        let capture = capture_writer(args, &store)?;
        let (stats, counters) = listen::serve(
            &listen,
            settings.defaults,
            settings.batch_size,
            capture,
            &mut modules,
            handlers,
        )?;
        stats.network.log("listener stopped");
        tracing::info!(
            messages = stats.messages,
            records = stats.parsed.records,
            unparsable = stats.parsed.unparsable,
            not_utf8 = stats.parsed.not_utf8,
            events = counters.events,
            delivered = counters.delivered,
            filter_errors = counters.filter_errors,
            handler_failures = counters.handler_failures,
            peak_memory_mib = peak_memory_mib(),
            "every received message processed"
        );
        finish_run(&mut modules, courier.as_ref());
        return Ok(());
    };
    let stop = replay::stop_on_signals()?;
    let input = replay::open_input(read_file, &stop)?;
    modules.set_ticks_until(settings.ticks_until);
    let started = Instant::now();
    let (stats, counters) = match replay::replay(input, &mut modules, handlers, &settings, &stop) {
        Ok(result) => result,
        Err(replay::ReplayError::Read(error)) => {
            return Err(anyhow::Error::new(error)
                .context(format!("cannot read capture {}", read_file.display())));
        }
        Err(replay::ReplayError::Stages(error)) => return Err(error.into()),
    };
    let elapsed = started.elapsed().as_secs_f64();
    tracing::info!(
        records = stats.parsed.records,
        unparsable = stats.parsed.unparsable,
        not_utf8 = stats.parsed.not_utf8,
        events = counters.events,
        delivered = counters.delivered,
        filter_errors = counters.filter_errors,
        handler_failures = counters.handler_failures,
        seconds = format!("{elapsed:.3}"),
        peak_memory_mib = peak_memory_mib(),
        "replay of {} finished",
        read_file.display()
    );
    if stats.skipped > 0 {
        tracing::info!(
            "passed over the {} entries of {} that the checkpoint covered",
            stats.skipped,
            read_file.display()
        );
    }
    if let Some(line) = stats.stopped_after {
        tracing::warn!(
            "the replay was stopped after line {line} of {}; the rest of the file was not read",
            read_file.display()
        );
    }
    finish_run(&mut modules, courier.as_ref());
    write_usage_report(&store, "records", stats.parsed.records)?;
    if stats.parsed.records == 0 && stats.parsed.unparsable > 0 {
        bail!(
            "no line of {} is a syslog record ({} refused; the first are logged above with why): is it a capture, auth.log, RFC 5424 or journalctl short-iso output?",
            read_file.display(),
            stats.parsed.unparsable
        );
    }
    Ok(())
}

/// The capture `--write-file` asks for while listening, if it does.
fn capture_writer(
    args: &RunArgs,
    store: &crate::config_store::ConfigStore,
) -> anyhow::Result<Option<CaptureWriter>> {
    let Some(path) = &args.write_file else {
        return Ok(None);
    };
    let path = path.clone().unwrap_or_else(|| {
        capture::default_path(Path::new(store.text("system.run_dir").unwrap_or(".")))
    });
    let writer = CaptureWriter::create(&path)
        .with_context(|| format!("cannot create capture {}", path.display()))?;
    tracing::info!("writing every received message to {}", path.display());
    Ok(Some(writer))
}

/// `run --events`: the events of a file through the handlers.
fn replay_events(
    path: &Path,
    store: &crate::config_store::ConfigStore,
    modules: &mut crate::pipeline::ModuleStage,
    mut handlers: crate::pipeline::HandlerStage,
    courier: Option<&crate::delivery::Courier>,
) -> anyhow::Result<()> {
    let stop = replay::stop_on_signals()?;
    let input: Box<dyn std::io::BufRead> = if path.as_os_str() == "-" {
        let stdin = replay::stdin_until(std::sync::Arc::clone(&stop))
            .context("cannot start reading standard input")?;
        Box::new(BufReader::new(stdin))
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open events {}", path.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    let declarations = crate::events_file::Declarations::new(modules.declared_events());
    let clock = modules.clock().clone();
    let result = crate::events_file::replay(input, &declarations, &mut handlers, &clock, &stop);
    let (stats, counters) = match result {
        Ok(done) => done,
        Err(crate::events_file::EventsError::Read(error)) => {
            return Err(
                anyhow::Error::new(error).context(format!("cannot read events {}", path.display()))
            );
        }
        Err(crate::events_file::EventsError::Stages(error)) => return Err(error.into()),
    };
    tracing::info!(
        events = stats.events,
        refused = stats.refused,
        delivered = counters.delivered,
        filter_errors = counters.filter_errors,
        handler_failures = counters.handler_failures,
        "events of {} handed to the handlers",
        path.display()
    );
    finish_run(modules, courier);
    write_usage_report(store, "events", stats.events)?;
    if stats.events == 0 && stats.refused > 0 {
        bail!(
            "no line of {} is an event ({} refused; the first are logged above with why): give JSON lines as the log handler writes them with format = \"json\"",
            path.display(),
            stats.refused
        );
    }
    Ok(())
}

/// `run --follow`: follow the files until SIGINT or SIGTERM.
fn follow_files(
    args: &RunArgs,
    settings: replay::ReplaySettings,
    mut modules: crate::pipeline::ModuleStage,
    handlers: crate::pipeline::HandlerStage,
    courier: Option<&crate::delivery::Courier>,
) -> anyhow::Result<()> {
    let restored = modules
        .restored()
        .map(|checkpoint| checkpoint.files.clone())
        .unwrap_or_default();
    let stop = replay::stop_on_signals()?;
    let follow_settings = crate::follow::FollowSettings {
        paths: args.follow.clone(),
        batch_size: settings.batch_size,
        defaults: settings.defaults,
    };
    let (stats, counters) =
        crate::follow::follow(&follow_settings, &restored, &mut modules, handlers, &stop)?;
    tracing::info!(
        records = stats.parsed.records,
        unparsable = stats.parsed.unparsable,
        not_utf8 = stats.parsed.not_utf8,
        rotations = stats.rotations,
        cut_lines = stats.cut_lines,
        events = counters.events,
        delivered = counters.delivered,
        filter_errors = counters.filter_errors,
        handler_failures = counters.handler_failures,
        peak_memory_mib = peak_memory_mib(),
        "stopped following"
    );
    finish_run(&mut modules, courier);
    Ok(())
}

/// `run --journal`: read the journal until SIGINT or SIGTERM.
fn read_journal(
    journal: &crate::journal::JournalSettings,
    mut modules: crate::pipeline::ModuleStage,
    handlers: crate::pipeline::HandlerStage,
    courier: Option<&crate::delivery::Courier>,
) -> anyhow::Result<()> {
    // Entries are numbered on from the checkpoint that has the cursor.
    let (cursor, position) = modules
        .restored()
        .and_then(|checkpoint| Some((checkpoint.journal_cursor.clone()?, checkpoint.position)))
        .map_or((None, 0), |(cursor, position)| (Some(cursor), position));
    let stop = replay::stop_on_signals()?;
    let result = crate::journal::read(
        journal,
        (cursor.as_deref(), position),
        &mut modules,
        handlers,
        &stop,
    );
    let (stats, counters) = match result {
        Ok(done) => done,
        Err(error) => {
            // What was processed is kept: the checkpoint covers it.
            finish_run(&mut modules, courier);
            return Err(error.into());
        }
    };
    tracing::info!(
        records = stats.parsed.records,
        unparsable = stats.parsed.unparsable,
        unreadable = stats.unreadable,
        events = counters.events,
        delivered = counters.delivered,
        filter_errors = counters.filter_errors,
        handler_failures = counters.handler_failures,
        peak_memory_mib = peak_memory_mib(),
        "stopped reading the journal"
    );
    finish_run(&mut modules, courier);
    Ok(())
}

/// The end of every run: what instances skipped or broke, the last
/// deliveries, and what the courier and the notifiers did after the last
/// checkpoint.
fn finish_run(
    modules: &mut crate::pipeline::ModuleStage,
    courier: Option<&crate::delivery::Courier>,
) {
    report_instances(modules);
    if let Some(courier) = courier {
        courier.finish();
    }
    modules.commit_outbox();
}

/// `system.usage_report`, if asked for: what each instance used.
fn write_usage_report(
    store: &crate::config_store::ConfigStore,
    what: &str,
    read: u64,
) -> anyhow::Result<()> {
    let path = store.text("system.usage_report").unwrap_or("");
    if path.is_empty() {
        return Ok(());
    }
    let report = crate::metrics::registry().usage_report(what, read);
    std::fs::write(path, format!("{report:#}\n"))
        .with_context(|| format!("cannot write the usage report {path}"))
}

/// Where a replay of `capture` starts, given the checkpoint the state
/// continues from (there is none when the replay started empty): after its
/// position with `--continue` (which must name the checkpoint's capture),
/// else at the first record. A replay keeping the state of another run
/// says what it goes on from.
fn continue_from(
    restored: Option<&crate::state_store::Checkpoint>,
    capture: &Path,
    continuing: bool,
) -> anyhow::Result<u64> {
    let shown = capture.display().to_string();
    let Some(checkpoint) = restored else {
        if continuing {
            bail!(
                "--continue: the state store holds no checkpoint to continue from (is state.enabled on, and is this the run directory of the replay to continue?)"
            );
        }
        return Ok(0);
    };
    let same = checkpoint.source == shown
        || (checkpoint.source != "-"
            && shown != "-"
            && std::fs::canonicalize(&checkpoint.source)
                .ok()
                .zip(std::fs::canonicalize(capture).ok())
                .is_some_and(|(stored, given)| stored == given));
    match (continuing, same) {
        (true, true) => {
            tracing::info!(
                "continuing the replay of {shown}: its first {} records are covered by the checkpoint and passed over",
                checkpoint.position
            );
            Ok(checkpoint.position)
        }
        (true, false) => bail!(
            "--continue: the state's checkpoint is {}, not of {shown}; give that capture, start from that state with --keep-state, or start empty without either",
            checkpoint.describe()
        ),
        (false, true) if checkpoint.position > 0 => {
            tracing::warn!(
                "--keep-state: the state already covers records 1 to {} of {shown}; this replay starts again at its first record, so modules see them twice (--continue passes over them)",
                checkpoint.position
            );
            Ok(0)
        }
        (false, _) => {
            tracing::info!(
                "--keep-state: this replay of {shown} starts from the state of the checkpoint {}",
                checkpoint.describe()
            );
            Ok(0)
        }
    }
}

/// The most memory the process has held (its peak resident set, MiB), for
/// the summary line: what an operator sizes the machine by, and what the
/// sandbox tests hold the host to. 0 where the kernel does not say.
fn peak_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib / 1024)
}

/// Warn about modules that did not see every record or broke their
/// declared event types.
fn report_instances(modules: &crate::pipeline::ModuleStage) {
    for (instance, rejected) in modules.rejected_events() {
        if rejected > 0 {
            tracing::warn!(
                instance,
                rejected,
                "module dispatched events that broke their declared type"
            );
        }
    }
    for (instance, skipped) in modules.skipped_records() {
        if skipped > 0 {
            tracing::warn!(
                instance,
                skipped,
                "module did not process every record (it failed on them or was disabled)"
            );
        }
    }
    let out_of_range = modules.out_of_range();
    if out_of_range > 0 {
        tracing::warn!(
            out_of_range,
            "records out of range of the stream clock: they did not move it (timers.max_gap_minutes)"
        );
    }
    for (instance, dropped) in modules.dropped_records() {
        if dropped > 0 {
            tracing::warn!(
                instance,
                dropped,
                "records dropped while the module backed off: its backlog was full (limits.backlog_kib)"
            );
        }
    }
}

/// The app and its instances, described but not initialised (`config`,
/// `check`).
fn load_for_inspection(args: &AppArgs, purpose: Purpose) -> anyhow::Result<(App, loader::Loaded)> {
    let app = App::load(&args.app)?;
    let loaded = loader::load(&app, &args.options, purpose, &loader::Discard::default())?;
    Ok((app, loaded))
}

fn print_config(args: &AppArgs) -> anyhow::Result<()> {
    let (app, loaded) = load_for_inspection(args, Purpose::Inspect)?;
    let rows: Vec<[String; 6]> = loaded
        .store
        .items()
        .map(|item| {
            [
                item.key.clone(),
                item.value_type.name().to_owned(),
                display_value(&item.value),
                display_value(&item.default),
                item.source.to_string(),
                item.description.clone(),
            ]
        })
        .collect();
    let header = ["KEY", "TYPE", "VALUE", "DEFAULT", "SOURCE", "DESCRIPTION"].map(str::to_owned);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (width, cell) in widths.iter().zip(row) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        line.push_str(&row[5]);
        if !wrote(writeln!(out, "{line}"))? {
            return Ok(());
        }
    }
    // What each instance gets besides its items.
    for spec in app.instances() {
        let mut text = format!("\n{} {} ({})\n", spec.role.noun(), spec.name, spec.source);
        for line in spec.describe() {
            text.push_str(&format!("  {line}\n"));
        }
        if !wrote(write!(out, "{text}"))? {
            return Ok(());
        }
    }
    Ok(())
}

/// Whether a write to standard output went through: `false` once the
/// reader has gone (`correlator config | head`), which is no error.
fn wrote(result: std::io::Result<()>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(error.into()),
    }
}

fn check(args: &AppArgs) -> anyhow::Result<()> {
    let (app, loaded) = load_for_inspection(args, Purpose::Check)?;
    ListenSettings::from_store(&loaded.store)?;
    stream_roles::check(&app, &loaded.store)?;
    // Instances whose `init` failed and whose policy disables them: `run`
    // would go on without them.
    for event in &loaded.startup_events {
        tracing::warn!("{} (at run, the app would start without it)", event.summary);
    }
    for line in &loaded.state_report {
        println!("{line}");
    }
    println!(
        "{}: ok ({} modules, {} handlers)",
        args.app.display(),
        app.modules.len(),
        app.handlers.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_names_the_contract_the_wit_declares() {
        let worlds = include_str!("../../wit/worlds.wit");
        let package = worlds
            .lines()
            .find_map(|line| line.strip_prefix("package "))
            .and_then(|rest| rest.strip_suffix(';'))
            .expect("the WIT names its package");
        assert!(
            super::VERSION.contains(&format!("component contract {package},")),
            "{} does not name {package}",
            super::VERSION
        );
    }
}
