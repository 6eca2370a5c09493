//! A front-end's side of the stream: the records it reads or receives go,
//! parsed once ([`super::codec`]), into their partition's subject, many
//! records to a message.
//!
//! Publishing does not wait for JetStream: each message's acknowledgement
//! is awaited, in order, by a task on the NATS thread, which publishes a
//! message again (with the same `Nats-Msg-Id`, so that JetStream drops it
//! if the first did arrive) when its acknowledgement fails or does not
//! come. Receipts (RELP) travel behind the messages that hold their
//! records, and are delivered once every message before them is
//! acknowledged: a sender is answered only when its records are in
//! JetStream. At most [`IN_FLIGHT`] messages wait for their
//! acknowledgement; past that, the source waits, and with it the network.
//!
//! A partition has at most one message in flight: its next one is
//! published once the one before is acknowledged. Otherwise a message
//! whose first publishing was lost (the server restarted) would, published
//! again, land behind later ones of its partition, and a worker would
//! read a host's records out of order (a session's last line before its
//! first). Partitions' messages are in flight together.

use super::codec;
use super::{Nats, StreamSettings, partition_of};
use crate::receipts::Receipts;
use crate::record::BatchBuilder;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Messages published and not yet acknowledged, at most.
pub const IN_FLIGHT: usize = 512;

/// A partition's message is published once it holds this many bytes (a
/// fraction of NATS's default `max_payload`, 1 MiB), or when the input
/// pauses.
pub const MESSAGE_BYTES: usize = 128 << 10;

/// Records between markers (`codec::marker`) while the input does not
/// pause: every partition's message is published, then a marker into
/// every partition, so that keyed messages between partitions are
/// released at least this often (`exchange.rs`).
pub const MARKER_RECORDS: u64 = 16_384;

/// What a front-end published.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PublishStats {
    /// Records published.
    pub records: u64,
    /// Messages they made.
    pub messages: u64,
    /// Bytes of those messages.
    pub bytes: u64,
    /// Messages published again after their acknowledgement failed.
    pub retries: u64,
    /// Records larger than the server's `max_payload`, not published.
    pub too_large: u64,
}

/// What the acknowledging task is handed, in publishing order.
enum InFlight {
    /// A message published: its acknowledgement, and what it takes to
    /// publish it again.
    Message {
        ack: async_nats::jetstream::context::PublishAckFuture,
        subject: String,
        id: String,
        payload: Bytes,
        /// Told once JetStream has it.
        acknowledged: tokio::sync::oneshot::Sender<()>,
    },
    /// Receipts of the records published before them.
    Receipts(Receipts),
}

/// Publishes batches of records into the stream.
pub struct Publisher {
    nats: Arc<Nats>,
    settings: StreamSettings,
    /// Per partition, the message being filled.
    messages: Vec<Vec<u8>>,
    /// Per partition, the acknowledgement of its message in flight.
    in_flight_of: Vec<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// The largest message of ours the server takes
    /// ([`Nats::max_message_bytes`]).
    max_message_bytes: usize,
    /// Prefix of this run's message ids: a front-end's messages never
    /// share an id with another's.
    id_prefix: String,
    next_id: u64,
    in_flight: Option<tokio::sync::mpsc::Sender<InFlight>>,
    acknowledging: Option<tokio::task::JoinHandle<u64>>,
    stats: PublishStats,
    /// The number the next record gets: its place, after its time, in
    /// the order keyed messages are received in.
    next_origin: u64,
    /// The time and number of the last record published, for markers.
    last_record: Option<(crate::types::Timestamp, u64)>,
    /// Records published since the last marker.
    since_marker: u64,
}

impl Publisher {
    /// A publisher into the stream of `settings` (which must exist:
    /// [`Nats::records_stream`]).
    pub fn new(nats: Arc<Nats>, settings: &StreamSettings) -> Publisher {
        let (sender, receiver) = tokio::sync::mpsc::channel(IN_FLIGHT);
        let acknowledging = nats.spawn(acknowledge(nats.jetstream.clone(), receiver));
        let max_message_bytes = nats.max_message_bytes();
        let partitions = settings.partitions as usize;
        Publisher {
            messages: (0..partitions).map(|_| Vec::new()).collect(),
            in_flight_of: (0..partitions).map(|_| None).collect(),
            max_message_bytes,
            id_prefix: format!(
                "{}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_nanos()),
                settings.name
            ),
            next_id: 0,
            nats,
            settings: settings.clone(),
            in_flight: Some(sender),
            acknowledging: Some(acknowledging),
            stats: PublishStats::default(),
            next_origin: 1,
            last_record: None,
            since_marker: 0,
        }
    }

    /// Publish the records of `builder`, and hand its receipts on behind
    /// them. `quiet` says that the input paused (the batch is not full):
    /// every partition's message goes out now rather than when full.
    pub fn take(&mut self, builder: &mut BatchBuilder, quiet: bool) -> anyhow::Result<()> {
        let batch = builder.batch();
        for index in 0..batch.seconds.len() {
            let partition = partition_of(codec::hostname(batch, index), self.settings.partitions);
            let message = &mut self.messages[partition as usize];
            if message.is_empty() {
                codec::start_message(message);
            }
            let before = message.len();
            let origin = self.next_origin;
            self.next_origin += 1;
            codec::encode_record(batch, index, origin, message);
            if message.len() - before + 1 > self.max_message_bytes {
                message.truncate(before);
                self.stats.too_large += 1;
                tracing::warn!(
                    "record {} is {} bytes encoded, more than the NATS server's max_payload ({} bytes) takes: not published",
                    batch.positions.get(index).copied().unwrap_or(0),
                    message.len() - before,
                    self.max_message_bytes + 1024
                );
                continue;
            }
            self.stats.records += 1;
            self.since_marker += 1;
            self.last_record = Some((codec::record_time(batch, index), origin));
            if message.len() >= MESSAGE_BYTES.min(self.max_message_bytes) {
                self.publish(partition)?;
            }
        }
        let receipts = builder.take_receipts();
        if quiet || !receipts.is_empty() || self.since_marker >= MARKER_RECORDS {
            self.flush()?;
            self.mark()?;
        }
        if !receipts.is_empty() {
            self.send(InFlight::Receipts(receipts))?;
        }
        Ok(())
    }

    /// Publish every partition's message that holds records.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        for partition in 0..self.settings.partitions {
            if self.messages[partition as usize].len() > 1 {
                self.publish(partition)?;
            }
        }
        Ok(())
    }

    /// Tell every partition, by a marker, that every record up to the last
    /// one is published (after [`Publisher::flush`]).
    fn mark(&mut self) -> anyhow::Result<()> {
        let Some((time, origin)) = self.last_record else {
            return Ok(());
        };
        if self.since_marker == 0 {
            return Ok(());
        }
        self.since_marker = 0;
        let marker = Bytes::from(codec::marker(time, origin));
        for partition in 0..self.settings.partitions {
            self.publish_bytes(partition, marker.clone())?;
        }
        Ok(())
    }

    /// Publish partition `partition`'s message.
    fn publish(&mut self, partition: u32) -> anyhow::Result<()> {
        let payload = Bytes::copy_from_slice(&self.messages[partition as usize]);
        self.messages[partition as usize].clear();
        self.publish_bytes(partition, payload)
    }

    /// Publish `payload` into partition `partition`'s subject, once its
    /// message before is acknowledged.
    fn publish_bytes(&mut self, partition: u32, payload: Bytes) -> anyhow::Result<()> {
        if let Some(before) = self.in_flight_of[partition as usize].take() {
            self.nats
                .block_on(before)
                .map_err(|_| anyhow::anyhow!("the NATS thread stopped acknowledging"))?;
        }
        let subject = self.settings.records_subject(partition);
        self.next_id += 1;
        let id = format!("{}-{}", self.id_prefix, self.next_id);
        self.stats.messages += 1;
        self.stats.bytes += payload.len() as u64;
        let ack =
            self.nats
                .block_on(publish_once(&self.nats.jetstream, &subject, &id, &payload))?;
        let (acknowledged, awaited) = tokio::sync::oneshot::channel();
        self.in_flight_of[partition as usize] = Some(awaited);
        self.send(InFlight::Message {
            ack,
            subject,
            id,
            payload,
            acknowledged,
        })
    }

    /// Hand `item` to the acknowledging task, waiting while it has
    /// [`IN_FLIGHT`] items.
    fn send(&mut self, item: InFlight) -> anyhow::Result<()> {
        let Some(sender) = &self.in_flight else {
            anyhow::bail!("the publisher was finished");
        };
        sender
            .blocking_send(item)
            .map_err(|_| anyhow::anyhow!("the NATS thread stopped acknowledging"))
    }

    /// Publish what is left and wait until JetStream has acknowledged every
    /// message (delivering the last receipts).
    pub fn finish(&mut self) -> anyhow::Result<PublishStats> {
        self.flush()?;
        self.mark()?;
        drop(self.in_flight.take());
        if let Some(acknowledging) = self.acknowledging.take() {
            self.stats.retries = self
                .nats
                .block_on(acknowledging)
                .map_err(|error| anyhow::anyhow!("the acknowledging task failed: {error}"))?;
        }
        Ok(self.stats)
    }
}

/// Publish `payload` to `subject` with message id `id`; retried while the
/// connection is down.
async fn publish_once(
    jetstream: &async_nats::jetstream::Context,
    subject: &str,
    id: &str,
    payload: &Bytes,
) -> anyhow::Result<async_nats::jetstream::context::PublishAckFuture> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    jetstream
        .publish_with_headers(subject.to_owned(), headers, payload.clone())
        .await
        .map_err(|error| anyhow::anyhow!("cannot publish to {subject}: {error}"))
}

/// Await each message's acknowledgement in order, publishing it again
/// until JetStream has it, and deliver receipts once everything before
/// them is acknowledged. Returns how many messages were published again.
async fn acknowledge(
    jetstream: async_nats::jetstream::Context,
    mut in_flight: tokio::sync::mpsc::Receiver<InFlight>,
) -> u64 {
    let mut retries = 0;
    while let Some(item) = in_flight.recv().await {
        match item {
            InFlight::Receipts(receipts) => receipts.deliver(),
            InFlight::Message {
                ack,
                subject,
                id,
                payload,
                acknowledged,
            } => {
                let mut ack = Some(ack);
                let mut backoff = Duration::from_millis(100);
                loop {
                    let result = match ack.take() {
                        Some(ack) => ack.await.map_err(|error| error.to_string()),
                        None => match publish_once(&jetstream, &subject, &id, &payload).await {
                            Ok(ack) => ack.await.map_err(|error| error.to_string()),
                            Err(error) => Err(error.to_string()),
                        },
                    };
                    match result {
                        Ok(_) => {
                            // The publisher may not wait for it.
                            let _ = acknowledged.send(());
                            break;
                        }
                        Err(error) => {
                            retries += 1;
                            tracing::warn!(
                                "JetStream did not acknowledge a message to {subject} ({error}); publishing it again in {} ms",
                                backoff.as_millis()
                            );
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
        }
    }
    retries
}

impl crate::pipeline::Destination for &mut Publisher {
    fn run<S: Send>(
        self,
        batch_size: usize,
        source: impl FnOnce(crate::pipeline::BatchSink) -> S + Send,
        stop_source: impl FnOnce(),
    ) -> anyhow::Result<(S, crate::pipeline::Counters)> {
        let result =
            crate::pipeline::run_source(batch_size, source, stop_source, |builder, quiet| {
                self.take(builder, quiet)
            })?;
        self.finish()?;
        Ok((result, crate::pipeline::Counters::default()))
    }
}
