//! `run` for an app with `stream.role` set: a front-end publishing into
//! the stream (`stream/publish.rs`), or a worker consuming it
//! (`stream/worker.rs`).

use super::RunArgs;
use crate::app::App;
use crate::config_store::ConfigStore;
use crate::listen::{self, ListenSettings};
use crate::loader;
use crate::replay;
use crate::stream::publish::Publisher;
use crate::stream::{Nats, StreamSettings};
use anyhow::{Context as _, bail};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a run waits for the NATS server at start-up.
const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// `stream.role = "publish"`: publish a capture (`--read-file`) or what
/// the listener receives into the stream, loading no component.
pub(super) fn front_end(
    args: &RunArgs,
    app: &App,
    store: &ConfigStore,
    stream: &StreamSettings,
) -> anyhow::Result<()> {
    if !args.follow.is_empty() || args.journal || args.events.is_some() {
        bail!(
            "stream.role = \"publish\" publishes a capture (--read-file) or what the listener receives; --follow, --journal and --events are not for a front-end"
        );
    }
    if args.continue_replay || args.keep_state {
        bail!(
            "a front-end keeps no state: --continue and --keep-state are for workers and plain runs"
        );
    }
    if !app.modules.is_empty() || !app.handlers.is_empty() {
        tracing::warn!(
            "{}: stream.role = \"publish\": the app's modules and handlers are not loaded here; the workers run them",
            app.path.display()
        );
    }
    let settings = loader::replay_settings(store)?;
    let nats = Arc::new(Nats::connect(stream, CONNECT_WAIT)?);
    nats.records_stream(stream)?;
    let mut publisher = Publisher::new(Arc::clone(&nats), stream);
    let started = Instant::now();
    let Some(read_file) = &args.read_file else {
        let listen = ListenSettings::from_store(store)?;
        let capture = super::capture_writer(args, store)?;
        let (stats, _) = listen::serve_into(
            &listen,
            settings.defaults,
            settings.batch_size,
            capture,
            &mut publisher,
        )?;
        stats.network.log("listener stopped");
        let published = publisher.finish()?;
        tracing::info!(
            messages = stats.messages,
            records = published.records,
            unparsable = stats.parsed.unparsable,
            stream_messages = published.messages,
            retries = published.retries,
            too_large = published.too_large,
            "every received record published to stream {}",
            stream.name
        );
        return Ok(());
    };
    let stop = replay::stop_on_signals()?;
    let input = replay::open_input(read_file, &stop)?;
    let stats = replay::read_into(input, &mut publisher, &settings, &stop)
        .with_context(|| format!("cannot publish capture {}", read_file.display()))?;
    let published = publisher.finish()?;
    tracing::info!(
        records = published.records,
        unparsable = stats.parsed.unparsable,
        not_utf8 = stats.parsed.not_utf8,
        stream_messages = published.messages,
        bytes = published.bytes,
        retries = published.retries,
        too_large = published.too_large,
        seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
        "{} published to stream {}",
        read_file.display(),
        stream.name
    );
    if let Some(line) = stats.stopped_after {
        tracing::warn!(
            "publishing was stopped after line {line} of {}; the rest of the file was not read",
            read_file.display()
        );
    }
    Ok(())
}

/// `stream.role = "work"`: run the app on a share of the stream's
/// partitions until SIGINT or SIGTERM.
pub(super) fn worker(
    args: &RunArgs,
    app: &App,
    store: &ConfigStore,
    stream: &StreamSettings,
) -> anyhow::Result<()> {
    if args.read_file.is_some()
        || args.write_file.is_some()
        || !args.follow.is_empty()
        || args.journal
        || args.events.is_some()
        || args.continue_replay
        || args.keep_state
        || args.discard_all_state
        || !args.discard_state.is_empty()
    {
        bail!(
            "stream.role = \"work\" reads the stream and keeps its partitions' state in JetStream: --read-file, --write-file, --follow, --journal, --events and the state options are not for a worker"
        );
    }
    if let Some(address) = loader::metrics_address(store)? {
        crate::metrics::serve(address)?;
    }
    let run_dir = std::path::PathBuf::from(store.text("system.run_dir").unwrap_or("."));
    let nats = Arc::new(Nats::connect(stream, CONNECT_WAIT)?);
    let context = crate::stream::worker::WorkerContext {
        app,
        options: &args.app.options,
        settings: stream,
        run_dir,
        finish: super::finish_run,
    };
    crate::stream::worker::run(&context, nats)
}

/// `correlator check` of an app with `stream.role` set: the connection,
/// the stream (its partitions), and for a worker who holds what.
pub(super) fn check(app: &App, store: &ConfigStore) -> anyhow::Result<()> {
    let stream = StreamSettings::from_store(store)?;
    if stream.role == crate::stream::Role::Off {
        return Ok(());
    }
    let nats = Nats::connect(&stream, Duration::from_secs(5))
        .context("stream.nats_url: the stream cannot be checked")?;
    for line in crate::stream::worker::describe(&nats, &stream, &app.name)? {
        println!("{line}");
    }
    Ok(())
}
