//! More than one machine: front-ends publish the records they receive into
//! a NATS JetStream stream, and workers consume it, each partition of the
//! stream processed by one worker at a time (see ARCHITECTURE.md, "More
//! than one machine").
//!
//! We do not run a cluster of our own: JetStream keeps the records (and
//! replicates them, when it runs as a cluster), remembers how far each
//! partition's consumer was acknowledged, and holds what must move
//! between machines when a worker dies: who owns which partition (a
//! key-value bucket whose entries expire) and each partition's state (an
//! object store, with a key-value entry naming the latest snapshot, which
//! a worker can only replace while it still owns the partition).
//!
//! A record's partition is a hash of its hostname, so every record of one
//! server is processed by one instance of each module, in order.

pub mod codec;
pub mod exchange;
pub mod publish;
pub mod worker;

use crate::config_store::ConfigStore;
use crate::types::{Value, ValueType};
use anyhow::{Context as _, anyhow, bail};
use std::time::Duration;

/// The stream's configuration items, with their defaults and what they are
/// for; declared in the configuration store by the loader.
pub fn config_items() -> [(&'static str, ValueType, Value, &'static str); 6] {
    let text = |default: &str| Value::Text(default.to_owned());
    [
        (
            "stream.role",
            ValueType::Text,
            text("off"),
            "\"publish\": this run is a front-end, publishing what it reads or receives into the stream instead of processing it (RELP senders are answered once JetStream has their records); \"work\": this run is a worker, its input is the stream; \"off\": neither",
        ),
        (
            "stream.nats_url",
            ValueType::Text,
            text("nats://127.0.0.1:4222"),
            "the NATS server (with JetStream) of the stream, or several separated by commas",
        ),
        (
            "stream.name",
            ValueType::Text,
            text("CORRELATOR"),
            "the JetStream stream of records (letters, digits, - and _); its subjects are NAME.records.PARTITION",
        ),
        (
            "stream.partitions",
            ValueType::Integer,
            Value::Integer(16),
            "partitions the records are split into by hostname, fixed when the stream is made: the most workers that can share the work (1-1024)",
        ),
        (
            "stream.max_age_h",
            ValueType::Integer,
            Value::Integer(168),
            "hours the stream keeps records, set when it is made (0: until removed by hand)",
        ),
        (
            "stream.lease_s",
            ValueType::Integer,
            Value::Integer(10),
            "seconds a worker holds a partition without renewing its lease: how long a dead worker's partitions wait before another takes them over",
        ),
    ]
}

/// What this run does with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Nothing.
    Off,
    /// Publish the records it reads or receives (a front-end).
    Publish,
    /// Consume the stream's records (a worker).
    Work,
}

/// The `stream.*` items, checked.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// What this run does with the stream.
    pub role: Role,
    /// The NATS servers.
    pub url: String,
    /// The stream's name.
    pub name: String,
    /// Partitions of the stream.
    pub partitions: u32,
    /// How long the stream keeps records (zero: unlimited).
    pub max_age: Duration,
    /// How long a partition's lease lasts without renewal.
    pub lease: Duration,
}

impl StreamSettings {
    /// The `stream.*` items of `store`; errors name the item.
    pub fn from_store(store: &ConfigStore) -> anyhow::Result<Self> {
        let text = |key: &str| store.text(key).unwrap_or("").trim().to_owned();
        let role = match text("stream.role").as_str() {
            "off" => Role::Off,
            "publish" => Role::Publish,
            "work" => Role::Work,
            other => {
                bail!("stream.role must be \"publish\", \"work\" or \"off\", not \"{other}\"")
            }
        };
        let url = text("stream.nats_url");
        if url.is_empty() {
            bail!("stream.nats_url is empty: name the NATS server, such as nats://127.0.0.1:4222");
        }
        let name = text("stream.name");
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            bail!(
                "stream.name must be 1 to 64 letters, digits, - or _ (it names JetStream streams, buckets and subjects), not \"{name}\""
            );
        }
        let partitions = store.integer("stream.partitions").unwrap_or(0);
        let partitions = u32::try_from(partitions)
            .ok()
            .filter(|count| (1..=1024).contains(count))
            .ok_or_else(|| {
                anyhow!("stream.partitions must be between 1 and 1024, not {partitions}")
            })?;
        let hours = store.integer("stream.max_age_h").unwrap_or(0);
        let max_age = u64::try_from(hours)
            .ok()
            .filter(|hours| *hours <= 24 * 365 * 10)
            .map(|hours| Duration::from_secs(hours * 3600))
            .ok_or_else(|| anyhow!("stream.max_age_h must be between 0 and 87600, not {hours}"))?;
        let lease = store.integer("stream.lease_s").unwrap_or(0);
        let lease = u64::try_from(lease)
            .ok()
            .filter(|seconds| (2..=3600).contains(seconds))
            .map(Duration::from_secs)
            .ok_or_else(|| anyhow!("stream.lease_s must be between 2 and 3600, not {lease}"))?;
        Ok(StreamSettings {
            role,
            url,
            name,
            partitions,
            max_age,
            lease,
        })
    }

    /// The subject of partition `partition`'s records.
    pub fn records_subject(&self, partition: u32) -> String {
        format!("{}.records.{partition}", self.name)
    }

    /// What the stream's description says, with the partition count that
    /// every front-end and worker must agree on.
    pub(crate) fn description(&self) -> String {
        format!(
            "correlator records, {} partitions by hostname",
            self.partitions
        )
    }
}

/// The partition of a record from `hostname`: FNV-1a of the name, so that
/// every front-end, whatever its version or platform, picks the same.
pub fn partition_of(hostname: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in hostname.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The remainder is below `partitions`, a u32.
    u32::try_from(hash % u64::from(partitions.max(1))).unwrap_or(0)
}

/// A connection to NATS and its JetStream context, with the tokio runtime
/// (one thread, "nats") that drives them; the pipeline's threads call in
/// with [`Nats::block_on`].
pub struct Nats {
    runtime: tokio::runtime::Runtime,
    /// The connection.
    pub client: async_nats::Client,
    /// JetStream over it.
    pub jetstream: async_nats::jetstream::Context,
}

/// How long a JetStream request (publish acknowledgement, bucket read,
/// consumer fetch set-up) may take before it fails and is retried.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Nats {
    /// Connect to `settings.url`, waiting for the server at most
    /// `wait` for the first connection; later losses are reconnected in
    /// the background, for as long as the run lasts.
    pub fn connect(settings: &StreamSettings, wait: Duration) -> anyhow::Result<Nats> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("nats")
            .enable_all()
            .build()
            .context("cannot start the NATS client's thread")?;
        let url = settings.url.clone();
        let (client, jetstream) = runtime.block_on(async move {
            let connecting = async_nats::ConnectOptions::new()
                .name(format!("correlator {}", std::process::id()))
                .connection_timeout(REQUEST_TIMEOUT)
                .request_timeout(Some(REQUEST_TIMEOUT))
                .retry_on_initial_connect()
                .event_callback(|event| async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!("disconnected from NATS; reconnecting")
                        }
                        async_nats::Event::Connected => tracing::info!("connected to NATS"),
                        other => tracing::debug!("NATS: {other}"),
                    }
                })
                .connect(url.as_str());
            // With `retry_on_initial_connect` the client comes at once and
            // connects in the background: wait until it has.
            let client = connecting
                .await
                .with_context(|| format!("cannot connect to NATS at {url}"))?;
            let started = std::time::Instant::now();
            while client.connection_state() != async_nats::connection::State::Connected {
                if started.elapsed() >= wait {
                    bail!(
                        "no NATS server answered at {url} within {} s",
                        wait.as_secs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let jetstream = async_nats::jetstream::new(client.clone());
            anyhow::Ok((client, jetstream))
        })?;
        Ok(Nats {
            runtime,
            client,
            jetstream,
        })
    }

    /// The most bytes a message of ours may hold: the server's
    /// `max_payload`, less room for headers and the subject's framing.
    pub fn max_message_bytes(&self) -> usize {
        self.client.server_info().max_payload.max(4096) - 1024
    }

    /// Run `future` to its end on the NATS thread's runtime, from a thread
    /// of the pipeline.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.handle().block_on(future)
    }

    /// Start `future` on the NATS thread.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }

    /// The stream of `settings`, made if there is none; refused when it
    /// exists with another partition count or other subjects (a front-end
    /// and a worker that disagree would put records where no one reads
    /// them).
    pub fn records_stream(
        &self,
        settings: &StreamSettings,
    ) -> anyhow::Result<async_nats::jetstream::stream::Stream> {
        use async_nats::jetstream::stream;
        let config = stream::Config {
            name: settings.name.clone(),
            subjects: vec![format!("{}.records.*", settings.name)],
            description: Some(settings.description()),
            max_age: settings.max_age,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            ..Default::default()
        };
        let name = settings.name.clone();
        self.block_on(async {
            let mut stream = self
                .jetstream
                .get_or_create_stream(config)
                .await
                .with_context(|| format!("cannot open or make JetStream stream {name}"))?;
            let info = stream
                .info()
                .await
                .with_context(|| format!("cannot read JetStream stream {name}"))?;
            let expected = settings.description();
            let described = info.config.description.clone().unwrap_or_default();
            if described != expected {
                bail!(
                    "JetStream stream {name} says \"{described}\", and this app expects \"{expected}\": every front-end and worker must have the same stream.partitions (or use another stream.name)"
                );
            }
            Ok(stream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostname_always_lands_in_the_same_partition_and_all_are_used() {
        assert_eq!(partition_of("web1", 16), partition_of("web1", 16));
        assert_eq!(partition_of("", 16), 0xcbf2_9ce4_8422_2325_u64 as u32 % 16);
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(
            partition_of("a", 1000),
            (0xaf63_dc4c_8601_ec8c_u64 % 1000) as u32
        );
        let mut used = [false; 8];
        for server in 0..64 {
            used[partition_of(&format!("server-{server}"), 8) as usize] = true;
        }
        assert_eq!(used, [true; 8]);
        assert_eq!(partition_of("anything", 1), 0);
    }

    #[test]
    fn settings_are_checked_with_the_item_named() {
        let mut store = ConfigStore::new();
        for (key, value_type, default, description) in config_items() {
            store
                .declare(key, value_type, default, description)
                .expect("declared");
        }
        let settings = StreamSettings::from_store(&store).expect("defaults are good");
        assert_eq!(settings.role, Role::Off);
        assert_eq!(settings.partitions, 16);
        assert_eq!(settings.records_subject(3), "CORRELATOR.records.3");
        let refused = |key: &str, value: &str| {
            let mut store = store.clone();
            store
                .set_text(key, value, crate::config_store::Source::CommandLine)
                .expect("set");
            StreamSettings::from_store(&store)
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            refused("stream.role", "both"),
            "stream.role must be \"publish\", \"work\" or \"off\", not \"both\""
        );
        assert_eq!(
            refused("stream.partitions", "0"),
            "stream.partitions must be between 1 and 1024, not 0"
        );
        assert_eq!(
            refused("stream.name", "a.b"),
            "stream.name must be 1 to 64 letters, digits, - or _ (it names JetStream streams, buckets and subjects), not \"a.b\""
        );
        assert_eq!(
            refused("stream.lease_s", "1"),
            "stream.lease_s must be between 2 and 3600, not 1"
        );
    }
}
