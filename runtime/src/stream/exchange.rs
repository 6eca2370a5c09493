//! Keyed messages between partitions: how correlations whose key is not
//! the hostname stay whole on workers (see ARCHITECTURE.md, "More than one
//! machine").
//!
//! A module sends what it correlates on with `exchange.send(key, ...)`.
//! On a worker, after each batch, the partition's [`ExchangePublisher`]
//! publishes what its instances sent into the app's exchange stream, one
//! message per destination partition (`partition_of(key)`), each carrying
//! too the sender's **progress**: the [`Key`] up to which it has processed
//! every record. The destination's reader [`Merge`]s the messages of every
//! sending partition and releases them in key order, only once every
//! partition's progress has passed them, so that an instance receives its
//! keys' messages in the order one process would have (record time, then
//! the order the front-end read the records in). Front-ends publish
//! markers into every records subject when they pause and every
//! [`super::publish::MARKER_RECORDS`] records, so that a partition with no
//! records of its own still makes progress.
//!
//! A partition processed again after a take-over sends the same messages
//! again (the modules are deterministic): the receiver drops what it has
//! from that sender already (keys at or below what it took from it). The
//! receiver's checkpoint holds where to read the exchange again
//! ([`ExchangeMark`]): the first message with something not yet released,
//! and what was released from each sender.

use crate::host::{KeyedMessage, SentMessage};
use crate::record::BatchBuilder;
use crate::types::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Where a record stands in the order keyed messages are received in:
/// its time, then the number its front-end gave it, then the sending
/// partition and the message's place among its record's.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Key {
    /// The record's time, seconds.
    pub seconds: i64,
    /// And nanoseconds.
    pub nanoseconds: u32,
    /// Its number at its front-end.
    pub origin: u64,
    /// The partition that sent the message.
    pub partition: u32,
    /// The message's place among those its record sent.
    pub index: u32,
}

impl Key {
    /// The key of a record (its first possible message).
    pub fn record(time: Timestamp, origin: u64, partition: u32) -> Key {
        Key {
            seconds: time.seconds,
            nanoseconds: time.nanoseconds,
            origin,
            partition,
            index: 0,
        }
    }

    /// Whether this record key is at or before `progress`: every message
    /// its record sent is then in, whatever the partition.
    fn covered_by(&self, progress: &Key) -> bool {
        (self.seconds, self.nanoseconds, self.origin)
            <= (progress.seconds, progress.nanoseconds, progress.origin)
    }
}

/// A message's place among those of its sender, in the order it sent
/// them: the stream sequence of the records message its record came in,
/// and its number among the messages of that records message. Processing
/// is in that order, so a sender processing again after a take-over sends
/// the same serials again, whatever the records' times.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Serial {
    /// The records message's stream sequence.
    pub position: u64,
    /// The message's number among those sent for its records.
    pub ordinal: u32,
}

/// What a receiving partition's checkpoint keeps of the exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeMark {
    /// The first exchange message (stream sequence) with something not
    /// yet released: where reading starts again.
    pub restart_sequence: u64,
    /// Per sending partition, the last message released.
    pub released: BTreeMap<u32, Serial>,
    /// Per sending partition, how far it had processed.
    pub progress: BTreeMap<u32, Key>,
}

/// The first byte of an exchange message.
const FORMAT: u8 = 1;

/// One keyed message in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct InFlight {
    /// Its place in the order.
    pub key: Key,
    /// Its place among its sender's.
    pub serial: Serial,
    /// The instance that sent it (and, of the same name in the receiving
    /// partition, gets it).
    pub instance: String,
    /// What it says.
    pub message: KeyedMessage,
}

/// An exchange message: a sending partition's progress and its keyed
/// messages for one destination, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Parcel {
    /// The sending partition.
    pub from: u32,
    /// Every record up to this key is processed by the sender.
    pub progress: Key,
    /// The messages.
    pub messages: Vec<InFlight>,
}

fn put_str(out: &mut Vec<u8>, text: &[u8]) {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text);
}

/// Bytes of an encoded [`Key`].
const KEY_BYTES: usize = 8 + 4 + 8 + 4 + 4;

fn put_key(out: &mut Vec<u8>, key: &Key) {
    out.extend_from_slice(&key.seconds.to_le_bytes());
    out.extend_from_slice(&key.nanoseconds.to_le_bytes());
    out.extend_from_slice(&key.origin.to_le_bytes());
    out.extend_from_slice(&key.partition.to_le_bytes());
    out.extend_from_slice(&key.index.to_le_bytes());
}

/// Reads a parcel's fields in order.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (bytes, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*bytes)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.take::<4>()?) as usize;
        let (bytes, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(bytes)
    }

    fn text(&mut self) -> Option<String> {
        Some(std::str::from_utf8(self.bytes()?).ok()?.to_owned())
    }

    fn key(&mut self) -> Option<Key> {
        Some(Key {
            seconds: i64::from_le_bytes(self.take()?),
            nanoseconds: u32::from_le_bytes(self.take()?),
            origin: u64::from_le_bytes(self.take()?),
            partition: u32::from_le_bytes(self.take()?),
            index: u32::from_le_bytes(self.take()?),
        })
    }
}

impl Parcel {
    /// The parcel's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend_from_slice(&self.from.to_le_bytes());
        put_key(&mut out, &self.progress);
        out.extend_from_slice(
            &u32::try_from(self.messages.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for in_flight in &self.messages {
            put_key(&mut out, &in_flight.key);
            out.extend_from_slice(&in_flight.serial.position.to_le_bytes());
            out.extend_from_slice(&in_flight.serial.ordinal.to_le_bytes());
            put_str(&mut out, in_flight.instance.as_bytes());
            put_str(&mut out, in_flight.message.key.as_bytes());
            put_str(&mut out, &in_flight.message.payload);
            let time = in_flight.message.time;
            out.extend_from_slice(&time.seconds.to_le_bytes());
            out.extend_from_slice(&time.nanoseconds.to_le_bytes());
            out.extend_from_slice(&time.offset_minutes.to_le_bytes());
        }
        out
    }

    /// Bytes of an encoded parcel without messages.
    const HEADER_BYTES: usize = 1 + 4 + KEY_BYTES + 4;

    /// Bytes `in_flight` takes in an encoded parcel.
    fn message_bytes(in_flight: &InFlight) -> usize {
        KEY_BYTES
            + 8
            + 4
            + 3 * 4
            + in_flight.instance.len()
            + in_flight.message.key.len()
            + in_flight.message.payload.len()
            + 8
            + 4
            + 2
    }

    /// Bytes of [`Parcel::encode`]'s result.
    pub fn encoded_len(&self) -> usize {
        Self::HEADER_BYTES + self.messages.iter().map(Self::message_bytes).sum::<usize>()
    }

    /// This parcel as parcels of at most `max_bytes` each (a NATS server
    /// takes messages up to its `max_payload`), in order; and how many
    /// messages were left out because one alone is larger. Every parcel
    /// but the last carries `earlier_progress` (what the sender said
    /// before): a receiver must not release other senders' messages past
    /// this sender's before it has every one of them.
    pub fn split(self, max_bytes: usize, earlier_progress: Key) -> (Vec<Parcel>, usize) {
        let mut parcels = Vec::new();
        let mut too_large = 0;
        let mut current = Vec::new();
        let mut current_bytes = Self::HEADER_BYTES;
        for in_flight in self.messages {
            let bytes = Self::message_bytes(&in_flight);
            if Self::HEADER_BYTES + bytes > max_bytes {
                too_large += 1;
                continue;
            }
            if current_bytes + bytes > max_bytes {
                parcels.push(Parcel {
                    from: self.from,
                    progress: earlier_progress,
                    messages: std::mem::take(&mut current),
                });
                current_bytes = Self::HEADER_BYTES;
            }
            current_bytes += bytes;
            current.push(in_flight);
        }
        parcels.push(Parcel {
            from: self.from,
            progress: self.progress,
            messages: current,
        });
        (parcels, too_large)
    }

    /// The parcel `bytes` hold; `None` for bytes no correlator of this
    /// layout wrote.
    pub fn decode(bytes: &[u8]) -> Option<Parcel> {
        let (&format, rest) = bytes.split_first()?;
        if format != FORMAT {
            return None;
        }
        let mut reader = Reader { rest };
        let from = u32::from_le_bytes(reader.take()?);
        let progress = reader.key()?;
        let count = u32::from_le_bytes(reader.take()?);
        let mut messages = Vec::new();
        for _ in 0..count {
            let key = reader.key()?;
            let serial = Serial {
                position: u64::from_le_bytes(reader.take()?),
                ordinal: u32::from_le_bytes(reader.take()?),
            };
            let instance = reader.text()?;
            let message_key = reader.text()?;
            let payload = reader.bytes()?.to_vec();
            let time = Timestamp {
                seconds: i64::from_le_bytes(reader.take()?),
                nanoseconds: u32::from_le_bytes(reader.take()?),
                offset_minutes: i16::from_le_bytes(reader.take()?),
            };
            messages.push(InFlight {
                key,
                serial,
                instance,
                message: KeyedMessage {
                    key: message_key,
                    payload,
                    time,
                },
            });
        }
        reader.rest.is_empty().then_some(Parcel {
            from,
            progress,
            messages,
        })
    }
}

/// What each instance sent during a batch, made [`InFlight`] with their
/// keys: the key of the record each was sent for (by the batch's origins),
/// or of the batch's last record for those sent outside a record.
pub fn in_flight(
    sent: Vec<(String, SentMessage)>,
    batch: &crate::types::RecordBatch,
    origins: &[u64],
    partition: u32,
) -> Vec<InFlight> {
    let last = batch.seconds.len().saturating_sub(1);
    let mut per_record: BTreeMap<usize, u32> = BTreeMap::new();
    let mut sent = sent;
    // In record order (each instance's in its own order, instances in app
    // order): the order one process would have received them in.
    sent.sort_by_key(|(_, sent)| sent.record);
    let mut per_position: BTreeMap<u64, u32> = BTreeMap::new();
    let out: Vec<InFlight> = sent
        .into_iter()
        .map(|(instance, sent)| {
            let record = usize::try_from(sent.record).map_or(last, |record| record.min(last));
            let time = Timestamp {
                seconds: batch.seconds.get(record).copied().unwrap_or(0),
                nanoseconds: batch.nanoseconds.get(record).copied().unwrap_or(0),
                offset_minutes: batch.offset_minutes.get(record).copied().unwrap_or(0),
            };
            let index = per_record.entry(record).or_insert(0);
            let key = Key {
                index: *index,
                ..Key::record(time, origins.get(record).copied().unwrap_or(0), partition)
            };
            *index += 1;
            let position = batch.positions.get(record).copied().unwrap_or(0);
            let ordinal = per_position.entry(position).or_insert(0);
            let serial = Serial {
                position,
                ordinal: *ordinal,
            };
            *ordinal += 1;
            InFlight {
                key,
                serial,
                instance,
                message: KeyedMessage {
                    key: sent.key,
                    payload: sent.payload,
                    time,
                },
            }
        })
        .collect();
    out
}

/// A receiving partition's view of the exchange: messages waiting for
/// every sender's progress to pass them.
#[derive(Debug)]
pub struct Merge {
    /// Partitions of the stream: every one must report progress.
    partitions: u32,
    /// Per sender, messages not yet released, in key order, each with the
    /// stream sequence of the exchange message that carried it.
    waiting: BTreeMap<u32, VecDeque<(u64, InFlight)>>,
    /// Per sender, the last message taken (waiting or released).
    accepted: BTreeMap<u32, Serial>,
    /// Per sender, the last message released.
    released: BTreeMap<u32, Serial>,
    /// Per sender, its progress.
    progress: BTreeMap<u32, Key>,
    /// The sequence after the last exchange message read.
    next_sequence: u64,
    /// Messages dropped as already taken (a sender processed again).
    pub repeats: u64,
}

impl Merge {
    /// A merge over `partitions` senders, going on from `mark` (a
    /// checkpoint's) if any.
    pub fn new(partitions: u32, mark: Option<&ExchangeMark>) -> Merge {
        let mark = mark.cloned().unwrap_or_default();
        Merge {
            partitions,
            waiting: BTreeMap::new(),
            accepted: mark.released.clone(),
            released: mark.released,
            progress: mark.progress,
            next_sequence: mark.restart_sequence.max(1),
            repeats: 0,
        }
    }

    /// Where reading the exchange starts.
    pub fn start_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Take parcel `parcel`, exchange message `sequence`.
    pub fn take(&mut self, sequence: u64, parcel: Parcel) {
        self.next_sequence = self.next_sequence.max(sequence + 1);
        let from = parcel.from;
        let accepted = self.accepted.get(&from).copied();
        let waiting = self.waiting.entry(from).or_default();
        for in_flight in parcel.messages {
            if accepted.is_some_and(|accepted| in_flight.serial <= accepted) {
                self.repeats += 1;
                continue;
            }
            self.accepted.insert(from, in_flight.serial);
            waiting.push_back((sequence, in_flight));
        }
        let progress = self.progress.entry(from).or_insert(parcel.progress);
        *progress = (*progress).max(parcel.progress);
    }

    /// The progress every sender has passed: messages at or before it can
    /// be released. `None` while some sender has not reported.
    fn common_progress(&self) -> Option<Key> {
        if self.progress.len() < self.partitions as usize {
            return None;
        }
        self.progress.values().min().copied()
    }

    /// Release, in key order, every message all senders' progress has
    /// passed, into `builder`. Each sender's messages leave in the order
    /// it sent them: one that comes late (its record older than records
    /// its sender processed before) waits for those sent before it, then
    /// leaves at once.
    pub fn release(&mut self, builder: &mut BatchBuilder) {
        let Some(progress) = self.common_progress() else {
            return;
        };
        loop {
            // The sender whose next message comes first.
            let next = self
                .waiting
                .iter()
                .filter_map(|(&from, queue)| {
                    queue.front().map(|(_, in_flight)| (in_flight.key, from))
                })
                .min();
            let Some((key, from)) = next else {
                return;
            };
            if !key.covered_by(&progress) {
                return;
            }
            let Some((_, in_flight)) = self.waiting.get_mut(&from).and_then(VecDeque::pop_front)
            else {
                return;
            };
            self.released.insert(from, in_flight.serial);
            builder
                .keyed_mut()
                .push((in_flight.instance, in_flight.message));
        }
    }

    /// What a checkpoint after the messages released so far keeps.
    pub fn mark(&self) -> ExchangeMark {
        let restart_sequence = self
            .waiting
            .values()
            .filter_map(|queue| queue.front().map(|(sequence, _)| *sequence))
            .min()
            .unwrap_or(self.next_sequence);
        ExchangeMark {
            restart_sequence,
            released: self.released.clone(),
            progress: self.progress.clone(),
        }
    }

    /// Messages waiting for progress.
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Timestamp {
        Timestamp {
            seconds,
            nanoseconds: 0,
            offset_minutes: 0,
        }
    }

    fn message(from: u32, seconds: i64, origin: u64, text: &str) -> InFlight {
        InFlight {
            key: Key::record(time(seconds), origin, from),
            serial: Serial {
                position: origin,
                ordinal: 0,
            },
            instance: "OpenSSH".into(),
            message: KeyedMessage {
                key: "192.0.2.7".into(),
                payload: text.as_bytes().to_vec(),
                time: time(seconds),
            },
        }
    }

    fn parcel(from: u32, progress: (i64, u64), messages: Vec<InFlight>) -> Parcel {
        Parcel {
            from,
            progress: Key::record(time(progress.0), progress.1, from),
            messages,
        }
    }

    fn released(builder: &mut BatchBuilder) -> Vec<String> {
        builder
            .keyed_mut()
            .drain(..)
            .map(|(_, message)| String::from_utf8(message.payload).expect("UTF-8"))
            .collect()
    }

    #[test]
    fn a_parcel_comes_back_as_it_was_sent() {
        let sent = parcel(
            3,
            (100, 7),
            vec![message(3, 99, 6, "a"), message(3, 100, 7, "b")],
        );
        assert_eq!(Parcel::decode(&sent.encode()), Some(sent.clone()));
        let bytes = sent.encode();
        assert_eq!(Parcel::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Parcel::decode(&[2]), None);
    }

    #[test]
    fn a_parcel_larger_than_the_server_takes_goes_in_pieces_in_order() {
        let big = |origin: u64, size: usize| {
            let mut in_flight = message(3, 100, origin, "");
            in_flight.message.payload = vec![b'x'; size];
            in_flight
        };
        let whole = parcel(
            3,
            (100, 9),
            vec![
                big(1, 300),
                big(2, 300),
                big(3, 5000),
                big(4, 300),
                big(5, 300),
            ],
        );
        let earlier = Key::record(time(90), 0, 3);
        let (pieces, too_large) = whole.clone().split(1000, earlier);
        assert_eq!(too_large, 1, "the 5000-byte message fits no piece");
        let origins: Vec<Vec<u64>> = pieces
            .iter()
            .map(|piece| piece.messages.iter().map(|m| m.key.origin).collect())
            .collect();
        assert_eq!(origins, [vec![1, 2], vec![4, 5]]);
        assert!(pieces.iter().all(|piece| piece.encoded_len() <= 1000));
        assert!(
            pieces
                .iter()
                .all(|piece| piece.encoded_len() == piece.encode().len())
        );
        // Only the last says how far the sender is.
        assert_eq!(pieces[0].progress, earlier);
        assert_eq!(pieces[1].progress, whole.progress);
        // A parcel that fits stays whole.
        let (pieces, too_large) = whole.clone().split(1 << 20, earlier);
        assert_eq!((pieces, too_large), (vec![whole], 0));
    }

    #[test]
    fn messages_are_released_in_record_order_once_every_sender_has_passed_them() {
        let mut merge = Merge::new(2, None);
        let mut builder = BatchBuilder::new(4);
        // Partition 0 is at record 5 (time 10); partition 1 has said nothing.
        merge.take(1, parcel(0, (10, 5), vec![message(0, 10, 5, "p0 r5")]));
        merge.release(&mut builder);
        assert!(released(&mut builder).is_empty());
        // Partition 1 sent record 3 and record 6 (times 9 and 11), and is at 6.
        merge.take(
            2,
            parcel(
                1,
                (11, 6),
                vec![message(1, 9, 3, "p1 r3"), message(1, 11, 6, "p1 r6")],
            ),
        );
        merge.release(&mut builder);
        assert_eq!(released(&mut builder), ["p1 r3", "p0 r5"]);
        assert_eq!(merge.waiting(), 1);
        // Restart from here: the waiting message's exchange message again.
        let mark = merge.mark();
        assert_eq!(mark.restart_sequence, 2);
        // Partition 0 catches up.
        merge.take(3, parcel(0, (12, 9), Vec::new()));
        merge.release(&mut builder);
        assert_eq!(released(&mut builder), ["p1 r6"]);
        assert_eq!(merge.mark().restart_sequence, 4);

        // A merge restored from the mark reads message 2 again and drops
        // what was released from it.
        let mut again = Merge::new(2, Some(&mark));
        assert_eq!(again.start_sequence(), 2);
        again.take(
            2,
            parcel(
                1,
                (11, 6),
                vec![message(1, 9, 3, "p1 r3"), message(1, 11, 6, "p1 r6")],
            ),
        );
        again.take(3, parcel(0, (12, 9), Vec::new()));
        again.release(&mut builder);
        assert_eq!(released(&mut builder), ["p1 r6"]);
        assert_eq!(again.repeats, 1);
    }

    #[test]
    fn a_sender_processing_again_after_a_take_over_repeats_nothing() {
        let mut merge = Merge::new(1, None);
        let mut builder = BatchBuilder::new(4);
        merge.take(
            1,
            parcel(
                0,
                (2, 2),
                vec![message(0, 1, 1, "r1"), message(0, 2, 2, "r2")],
            ),
        );
        merge.release(&mut builder);
        assert_eq!(released(&mut builder), ["r1", "r2"]);
        // The new owner went back to its checkpoint, before record 2.
        merge.take(
            2,
            parcel(
                0,
                (3, 3),
                vec![message(0, 2, 2, "r2"), message(0, 3, 3, "r3")],
            ),
        );
        merge.release(&mut builder);
        assert_eq!(released(&mut builder), ["r3"]);
        assert_eq!(merge.repeats, 1);
    }

    #[test]
    fn messages_sent_take_their_records_keys_in_order() {
        let mut builder = BatchBuilder::new(4);
        let mut counts = crate::record::ParseCounts::default();
        let defaults = crate::record::TraditionalDefaults {
            year: 2024,
            offset_minutes: 0,
        };
        for (n, line) in [
            "<13>1 2024-01-01T00:00:05Z a b - - - one",
            "<13>1 2024-01-01T00:00:06Z a b - - - two",
        ]
        .iter()
        .enumerate()
        {
            counts.take(
                &mut builder,
                n as u64,
                line,
                crate::record::Origin::File,
                &defaults,
            );
        }
        let sent = |record: u32, text: &str| SentMessage {
            record,
            key: "k".into(),
            payload: text.as_bytes().to_vec(),
        };
        let keyed = in_flight(
            vec![
                ("A".into(), sent(1, "a1")),
                ("A".into(), sent(0, "a0")),
                ("B".into(), sent(1, "b1")),
                ("B".into(), sent(u32::MAX, "b-tick")),
            ],
            builder.batch(),
            &[40, 41],
            3,
        );
        let order: Vec<(i64, u64, u32, &str)> = keyed
            .iter()
            .map(|m| {
                (
                    m.key.seconds,
                    m.key.origin,
                    m.key.index,
                    std::str::from_utf8(&m.message.payload).expect("UTF-8"),
                )
            })
            .collect();
        assert_eq!(
            order,
            [
                (1_704_067_205, 40, 0, "a0"),
                (1_704_067_206, 41, 0, "a1"),
                (1_704_067_206, 41, 1, "b1"),
                (1_704_067_206, 41, 2, "b-tick")
            ]
        );
        assert!(keyed.iter().all(|m| m.key.partition == 3));
    }
}
