//! Records from several connections, put back in record-time order.
//!
//! Each sender's records come in its own order, but connections progress at
//! their own pace: a record of server A written at 10:00:05 may arrive
//! before one of server B written at 10:00:01. Modules count in windows of
//! record time as the records come, so the results of a live stream would
//! depend on which connection was read first, and differ from a replay of
//! the same records. So while listening, records wait here until every
//! sender that may still send has sent something at least as new (the
//! watermark: the oldest of the senders' newest times, over every open
//! connection, and every UDP sender heard from lately), and leave in time
//! order, ties in arrival order. The wait is bounded: a record leaves at
//! the latest `listen.reorder_ms` after it came (with every older one), so
//! a sender that is quiet, or whose clock is behind, holds the others back
//! no longer than that; and when what waits passes a size bound the oldest
//! leave at once. And a sender far ahead of the others (more than
//! [`PAUSE_BYTES`] of its records wait) is not read until some of them
//! have left: what it sends meanwhile waits in the kernel, and TCP's flow
//! control slows it down. A sender's records are waited for from when its
//! connection opens; records that arrive from a sender the listener did
//! not know of yet may have been passed already by the others', and are
//! then processed late.
//!
//! A record is parsed once: waiting records sit parsed and packed in
//! their sender's own queue (`record/packed.rs`), and leave by a merge of
//! the senders' oldest records. A record that may leave at once (nothing
//! waits, and no other sender is behind it: always so with one sender)
//! never waits at all.

use super::server::ReadGate;
use crate::receipts::ReceiptSink;
use crate::record::{BatchBuilder, PackedRecords, Parsed};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes of records waiting; past it the oldest leave at once. Twice
/// what 64 senders at [`PAUSE_BYTES`] hold, so that busy forwarders never
/// reach it; UDP senders, which cannot be paused, may.
pub const REORDER_MAX_BYTES: usize = 128 << 20;

/// A connection whose records waiting pass this many bytes is not read
/// until they are back under [`RESUME_BYTES`].
pub const PAUSE_BYTES: usize = 1 << 20;

/// See [`PAUSE_BYTES`]. Near it, so that a paused sender is read again as
/// soon as some of its records have left: resuming only once most had left
/// (at 64 KiB of 256 KiB) left the parser short of records to merge, and
/// cost 8 busy connections an eighth of their rate on the network
/// benchmark (1 MiB and 768 KiB: none of it, and 64 connections did best
/// too).
const RESUME_BYTES: usize = 768 << 10;

/// A record's time as an order key: seconds and nanoseconds since the
/// epoch, UTC.
pub type TimeKey = (i64, u32);

/// Records of one sender are kept in blocks of about this many bytes of
/// text, taken from and given back to a pool shared by all senders, so
/// that waiting records cost no reallocation (growing one buffer per
/// sender, and freeing it, made the kernel zero fresh pages for most of
/// the parser's time).
const BLOCK_BYTES: usize = 16 << 10;

/// A sender's first block is this small, and is not pooled: a listener
/// that hears from many senders that each say little holds little.
const FIRST_BLOCK_BYTES: usize = 1 << 10;

/// One sender's progress and waiting records.
struct Sender {
    /// Time of its newest record (`(i64::MIN, 0)` before its first).
    newest: TimeKey,
    /// When it last sent a record, or opened its connection.
    heard: Instant,
    /// Its connection ended: it waits for no record of its own any more.
    ended: bool,
    /// Stops its connection's reading (none for UDP).
    gate: Option<Arc<ReadGate>>,
    /// Bytes of its records waiting, as counted in [`Reorder::bytes`].
    bytes: usize,
    /// Its waiting records, parsed and packed, in blocks (all full but
    /// the last; the first may have given some up).
    blocks: VecDeque<PackedRecords>,
    /// Records ever given to it to wait, and ever released.
    pushed: u64,
    released: u64,
    /// When the waiting records came: (arrival, `pushed` then, `newest`
    /// then), oldest first.
    arrivals: VecDeque<(Instant, u64, TimeKey)>,
    /// Arrival order of its waiting records, for ties: runs of records
    /// that came one after another, as (`pushed` number of the first, its
    /// arrival number), oldest first; each next record of a run came next.
    arrival_runs: VecDeque<(u64, u64)>,
    /// Receipts of its waiting records that have one (RELP), by the
    /// record's `pushed` number (from 0), oldest first: they leave with
    /// their records.
    receipts: VecDeque<(u64, Arc<ReceiptSink>, u64)>,
}

impl Sender {
    fn new(now: Instant) -> Self {
        Sender {
            newest: (i64::MIN, 0),
            heard: now,
            ended: false,
            gate: None,
            bytes: 0,
            blocks: VecDeque::new(),
            pushed: 0,
            released: 0,
            arrivals: VecDeque::new(),
            arrival_runs: VecDeque::new(),
            receipts: VecDeque::new(),
        }
    }

    fn has_waiting(&self) -> bool {
        self.released < self.pushed
    }

    /// The order key of its oldest waiting record: its time, then its
    /// arrival number.
    fn head_key(&self) -> (TimeKey, u64) {
        let arrival = self
            .arrival_runs
            .front()
            .map_or(u64::MAX, |&(pushed, arrival)| {
                arrival + (self.released - pushed)
            });
        let time = self
            .blocks
            .front()
            .and_then(PackedRecords::front_time)
            .unwrap_or((i64::MAX, 0));
        (time, arrival)
    }
}

/// A sender's number in a [`Reorder`], valid until the next
/// [`Reorder::ended`] or [`Reorder::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderId(usize);

/// Records waiting to leave in time order.
pub struct Reorder {
    hold: Duration,
    max_bytes: usize,
    /// The senders, by number; `None` for a number free to reuse.
    senders: Vec<Option<Sender>>,
    /// Numbers by address.
    numbers: HashMap<Arc<str>, usize>,
    free: Vec<usize>,
    /// Empty blocks of [`BLOCK_BYTES`] to reuse.
    pool: Vec<PackedRecords>,
    /// Records waiting, over every sender.
    waiting: usize,
    bytes: usize,
    seq: u64,
    /// How many senders were known after they were last looked over for
    /// ones to forget (looked over again once they have doubled).
    senders_seen_at_last_look: usize,
    /// The merge's heap of the senders' oldest records, kept between
    /// releases for its room: a release comes after every read, and with
    /// many senders building it afresh each time showed.
    heads: Vec<Reverse<((TimeKey, u64), usize)>>,
}

impl Reorder {
    /// Records wait at most `hold`, and at most `max_bytes` of them.
    pub fn new(hold: Duration, max_bytes: usize) -> Self {
        Reorder {
            hold,
            max_bytes,
            senders: Vec::new(),
            numbers: HashMap::new(),
            free: Vec::new(),
            pool: Vec::new(),
            waiting: 0,
            bytes: 0,
            seq: 0,
            senders_seen_at_last_look: 0,
            heads: Vec::new(),
        }
    }

    /// Whether no record waits.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    fn live(&self) -> impl Iterator<Item = &Sender> {
        self.senders.iter().flatten()
    }

    /// The number of `peer`, known from now on if it was not.
    pub fn sender(&mut self, peer: &Arc<str>, now: Instant) -> SenderId {
        if let Some(&number) = self.numbers.get(&**peer) {
            return SenderId(number);
        }
        let sender = Some(Sender::new(now));
        let number = match self.free.pop() {
            Some(number) => {
                self.senders[number] = sender;
                number
            }
            None => {
                self.senders.push(sender);
                self.senders.len() - 1
            }
        };
        self.numbers.insert(Arc::clone(peer), number);
        SenderId(number)
    }

    /// `peer` opened a connection at `now`: records newer than what it
    /// sends first wait for it (for at most the hold). `gate` stops its
    /// reading while it is far ahead.
    pub fn opened(&mut self, peer: &Arc<str>, now: Instant, gate: Option<Arc<ReadGate>>) {
        let id = self.sender(peer, now);
        if let Some(Some(sender)) = self.senders.get_mut(id.0) {
            sender.gate = gate;
        }
    }

    /// `peer` closed its connection: it holds no one back any more.
    pub fn ended(&mut self, peer: &str) {
        if let Some(&number) = self.numbers.get(peer)
            && let Some(Some(sender)) = self.senders.get_mut(number)
        {
            sender.ended = true;
            sender.gate = None;
        }
        self.forget_done(None);
    }

    /// Let go of senders whose records all left and that will send no
    /// more: their connection ended, or (at `now`, UDP senders) they have
    /// been silent long enough to be forgotten; so that a listener that
    /// hears from many short-lived senders does not remember them all.
    fn forget_done(&mut self, now: Option<Instant>) {
        let forget = (self.hold * 10).max(Duration::from_secs(10));
        let senders = &mut self.senders;
        let free = &mut self.free;
        self.numbers.retain(|_, number| {
            let done = senders
                .get(*number)
                .and_then(Option::as_ref)
                .is_none_or(|sender| {
                    !sender.has_waiting()
                        && (sender.ended
                            || now.is_some_and(|now| now.duration_since(sender.heard) >= forget))
                });
            if done {
                if let Some(slot) = senders.get_mut(*number) {
                    *slot = None;
                }
                free.push(*number);
            }
            !done
        });
    }

    /// A record of sender `id` at `time`, arriving `now`: `true` when it
    /// may go on at once (nothing waits, and every other sender has already
    /// sent something at least as new), `false` when it must wait: then give
    /// it to [`Reorder::wait`].
    pub fn admit(&mut self, id: SenderId, time: TimeKey, now: Instant) -> bool {
        if let Some(Some(sender)) = self.senders.get_mut(id.0) {
            sender.newest = sender.newest.max(time);
            sender.heard = now;
        }
        self.waiting == 0
            && self.senders.iter().enumerate().all(|(number, sender)| {
                sender.as_ref().is_none_or(|sender| {
                    number == id.0
                        || sender.ended
                        || sender.newest >= time
                        || self.is_forgotten(sender, now)
                })
            })
    }

    /// Keep the record `admit` refused (parsed from `line`, from `peer`,
    /// at `position`) with the sender's waiting records; its `receipt`, if
    /// it has one, leaves with it. `false` if it was not kept (the sender
    /// is unknown).
    pub fn wait(
        &mut self,
        id: SenderId,
        now: Instant,
        receipt: Option<(&Arc<ReceiptSink>, u64)>,
        record: (u64, &str, &Parsed<'_>, &str),
    ) -> bool {
        let (position, line, parsed, peer) = record;
        let Some(Some(sender)) = self.senders.get_mut(id.0) else {
            return false;
        };
        let text_bytes = line.len() + peer.len();
        let block = match sender.blocks.back_mut() {
            Some(block) if block.has_room(text_bytes) => block,
            _ => {
                let block = if sender.blocks.is_empty() && sender.pushed == 0 {
                    PackedRecords::with_capacity(FIRST_BLOCK_BYTES.max(text_bytes))
                } else if text_bytes <= BLOCK_BYTES {
                    self.pool
                        .pop()
                        .unwrap_or_else(|| PackedRecords::with_capacity(BLOCK_BYTES))
                } else {
                    PackedRecords::with_capacity(text_bytes)
                };
                sender.blocks.push_back(block);
                let Some(block) = sender.blocks.back_mut() else {
                    return false;
                };
                block
            }
        };
        let bytes = block.push(position, line, parsed, peer);
        self.bytes += bytes;
        sender.bytes += bytes;
        if sender.bytes > PAUSE_BYTES
            && let Some(gate) = &sender.gate
        {
            gate.pause();
        }
        if let Some((sink, number)) = receipt {
            sender
                .receipts
                .push_back((sender.pushed, Arc::clone(sink), number));
        }
        self.seq += 1;
        let continues_run = sender
            .arrival_runs
            .back()
            .is_some_and(|&(pushed, arrival)| arrival + (sender.pushed - pushed) == self.seq);
        if !continues_run {
            sender.arrival_runs.push_back((sender.pushed, self.seq));
        }
        sender.pushed += 1;
        match sender.arrivals.back_mut() {
            Some((arrived, pushed, newest)) if *arrived == now => {
                *pushed = sender.pushed;
                *newest = sender.newest;
            }
            _ => sender
                .arrivals
                .push_back((now, sender.pushed, sender.newest)),
        }
        self.waiting += 1;
        true
    }

    /// A sender without a connection (UDP) that has been silent for ten
    /// holds no longer counts.
    fn is_forgotten(&self, sender: &Sender, now: Instant) -> bool {
        now.duration_since(sender.heard) >= (self.hold * 10).max(Duration::from_secs(10))
    }

    /// When the oldest waiting record must leave for having waited the
    /// hold, if any waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.live()
            .filter_map(|sender| {
                sender
                    .arrivals
                    .iter()
                    .find(|&&(_, pushed, _)| pushed > sender.released)
                    .map(|&(arrived, _, _)| arrived + self.hold)
            })
            .min()
    }

    /// Move every record that may leave at `now` to `out`, oldest first:
    /// those no newer than the watermark, those that waited the hold (with
    /// every older one), and the oldest while more than `max_bytes` wait;
    /// with `all`, every one. Stops when `out` is full: returns whether it
    /// did (pass it on and call again).
    pub fn release(&mut self, now: Instant, all: bool, out: &mut BatchBuilder) -> bool {
        if self.waiting == 0 {
            if self.numbers.len() > self.senders_seen_at_last_look * 2 + 64 {
                self.forget_done(Some(now));
                self.senders_seen_at_last_look = self.numbers.len();
            }
            return false;
        }
        let forget = (self.hold * 10).max(Duration::from_secs(10));
        let mut watermark = (i64::MAX, u32::MAX);
        let mut forced = (i64::MIN, 0);
        for sender in self.senders.iter_mut().flatten() {
            if !sender.ended && now.duration_since(sender.heard) < forget {
                watermark = watermark.min(sender.newest);
            }
            // The newest time among its records that have waited the
            // hold (and those before them).
            while let Some(&(arrived, pushed, newest)) = sender.arrivals.front() {
                if now.duration_since(arrived) < self.hold {
                    break;
                }
                if pushed > sender.released {
                    forced = forced.max(newest);
                }
                sender.arrivals.pop_front();
            }
        }
        let limit = if all {
            (i64::MAX, u32::MAX)
        } else {
            watermark.max(forced)
        };
        // The senders' oldest waiting records, oldest first.
        let mut heads = std::mem::take(&mut self.heads);
        heads.clear();
        heads.extend(
            self.senders
                .iter()
                .enumerate()
                .filter_map(|(number, sender)| {
                    let sender = sender.as_ref().filter(|sender| sender.has_waiting())?;
                    Some(Reverse((sender.head_key(), number)))
                }),
        );
        let nothing_leaves = heads
            .iter()
            .map(|Reverse((key, _))| key.0)
            .min()
            .is_none_or(|oldest| oldest > limit)
            && self.bytes <= self.max_bytes;
        if nothing_leaves {
            self.heads = heads;
            return false;
        }
        let mut heads = BinaryHeap::from(heads);
        let mut full = false;
        'merge: while let Some(Reverse((key, number))) = heads.pop() {
            if key.0 > limit && self.bytes <= self.max_bytes {
                break;
            }
            // The next other sender's oldest: until then, this sender's
            // records leave one after another, without the heap.
            let next_other = heads.peek().map(|Reverse((key, _))| *key);
            let Some(Some(sender)) = self.senders.get_mut(number) else {
                continue;
            };
            loop {
                if out.is_full() {
                    full = true;
                    break 'merge;
                }
                if let Some(block) = sender.blocks.front_mut()
                    && let Some(bytes) = block.take_into(out)
                {
                    self.bytes = self.bytes.saturating_sub(bytes);
                    sender.bytes = sender.bytes.saturating_sub(bytes);
                }
                if sender
                    .receipts
                    .front()
                    .is_some_and(|&(pushed, _, _)| pushed == sender.released)
                    && let Some((_, sink, number)) = sender.receipts.pop_front()
                {
                    out.receipts_mut().add(&sink, number);
                }
                self.waiting -= 1;
                sender.released += 1;
                if sender.blocks.front().is_some_and(PackedRecords::is_drained)
                    && let Some(mut block) = sender.blocks.pop_front()
                    && (BLOCK_BYTES..=BLOCK_BYTES * 2).contains(&block.text_capacity())
                {
                    block.clear();
                    self.pool.push(block);
                }
                while sender
                    .arrivals
                    .front()
                    .is_some_and(|&(_, pushed, _)| pushed <= sender.released)
                {
                    sender.arrivals.pop_front();
                }
                while sender.arrival_runs.len() > 1
                    && sender
                        .arrival_runs
                        .get(1)
                        .is_some_and(|&(pushed, _)| pushed <= sender.released)
                {
                    sender.arrival_runs.pop_front();
                }
                if !sender.has_waiting() {
                    sender.arrival_runs.clear();
                    break;
                }
                let key = sender.head_key();
                let may_go_on = !(key.0 > limit && self.bytes <= self.max_bytes);
                if !may_go_on || next_other.is_some_and(|other| other < key) {
                    heads.push(Reverse((key, number)));
                    break;
                }
            }
        }
        self.heads = heads.into_vec();
        // Senders back under the mark are read again.
        for sender in self.senders.iter().flatten() {
            if sender.bytes < RESUME_BYTES
                && let Some(gate) = &sender.gate
            {
                gate.resume();
            }
        }
        if self.waiting == 0 {
            self.bytes = 0;
            self.forget_done(Some(now));
        }
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TraditionalDefaults;

    /// Offer a record of `peer` at second `time`: passed straight to `out`
    /// when it may go at once, else kept.
    fn offer(
        reorder: &mut Reorder,
        peer: &Arc<str>,
        time: i64,
        position: u64,
        now: Instant,
        out: &mut BatchBuilder,
    ) {
        let line = format!("<13>1 2023-02-20T15:00:00Z host app - - - {position}");
        let defaults = TraditionalDefaults {
            year: 2023,
            offset_minutes: 0,
        };
        let mut parsed = crate::record::parse(&line, &defaults).expect("a record");
        parsed.timestamp.seconds = time;
        let id = reorder.sender(peer, now);
        if reorder.admit(id, (time, 0), now) {
            out.push(position, &line, &parsed, peer);
        } else {
            assert!(reorder.wait(id, now, None, (position, &line, &parsed, peer)));
        }
    }

    /// A reorder holding for a second, its output batch, and two senders
    /// `a` and `b` whose connections opened at the start.
    fn two_open_senders() -> (Instant, BatchBuilder, Reorder, Arc<str>, Arc<str>) {
        let start = Instant::now();
        let mut reorder = Reorder::new(Duration::from_secs(1), REORDER_MAX_BYTES);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        reorder.opened(&a, start, None);
        reorder.opened(&b, start, None);
        (start, BatchBuilder::new(100), reorder, a, b)
    }

    fn released(reorder: &mut Reorder, now: Instant, out: &mut BatchBuilder) -> Vec<u64> {
        while reorder.release(now, false, out) {}
        let positions = out.batch().positions.clone();
        out.clear();
        positions
    }

    #[test]
    fn records_leave_in_time_order_once_every_open_sender_has_passed_them() {
        let start = Instant::now();
        let mut out = BatchBuilder::new(100);
        let mut reorder = Reorder::new(Duration::from_secs(1), REORDER_MAX_BYTES);
        let a: Arc<str> = Arc::from("192.0.2.1:1");
        let b: Arc<str> = Arc::from("192.0.2.2:1");
        reorder.opened(&a, start, None);
        reorder.opened(&b, start, None);
        offer(&mut reorder, &a, 105, 1, start, &mut out);
        offer(&mut reorder, &a, 106, 2, start, &mut out);
        // b has said nothing yet: a's records wait for it.
        assert!(released(&mut reorder, start, &mut out).is_empty());
        offer(&mut reorder, &b, 101, 3, start, &mut out);
        assert_eq!(released(&mut reorder, start, &mut out), [3]);
        offer(&mut reorder, &b, 108, 4, start, &mut out);
        assert_eq!(released(&mut reorder, start, &mut out), [1, 2]);
        offer(&mut reorder, &a, 110, 5, start, &mut out);
        assert_eq!(released(&mut reorder, start, &mut out), [4]);
        offer(&mut reorder, &b, 112, 6, start, &mut out);
        assert_eq!(released(&mut reorder, start, &mut out), [5]);
        // b ends: a's newest (110) is the watermark; 112 waits for a ...
        reorder.ended(&b);
        assert!(released(&mut reorder, start, &mut out).is_empty());
        // ... until it has waited a second.
        assert_eq!(reorder.deadline(), Some(start + Duration::from_secs(1)));
        assert_eq!(
            released(&mut reorder, start + Duration::from_secs(1), &mut out),
            [6]
        );
        assert!(reorder.is_empty());
        // With one sender, nothing waits at all.
        offer(&mut reorder, &a, 120, 7, start, &mut out);
        assert_eq!(out.batch().positions, [7]);
    }

    #[test]
    fn an_open_connection_that_has_not_spoken_yet_is_waited_for() {
        let (start, mut out, mut reorder, a, b) = two_open_senders();
        offer(&mut reorder, &a, 105, 1, start, &mut out);
        assert!(released(&mut reorder, start, &mut out).is_empty());
        offer(&mut reorder, &b, 101, 2, start, &mut out);
        assert_eq!(released(&mut reorder, start, &mut out), [2]);
        // b says no more: after the hold, a's record goes.
        let later = start + Duration::from_secs(1);
        assert_eq!(released(&mut reorder, later, &mut out), [1]);
    }

    #[test]
    fn records_that_waited_the_hold_leave_even_when_their_sender_went_back_in_time() {
        let (start, mut out, mut reorder, a, b) = two_open_senders();
        offer(&mut reorder, &b, 100, 1, start, &mut out);
        // a's clock steps back: 110, then 105. b stays silent.
        offer(&mut reorder, &a, 110, 2, start, &mut out);
        offer(&mut reorder, &a, 105, 3, start, &mut out);
        assert_eq!(released(&mut reorder, start, &mut out), [1]);
        // After the hold both leave, in a's own order (the newer first).
        let later = start + Duration::from_secs(1);
        assert_eq!(released(&mut reorder, later, &mut out), [2, 3]);
        assert!(reorder.is_empty());
    }

    #[test]
    fn a_sender_far_ahead_is_not_read_until_a_quarter_of_its_records_have_left() {
        let start = Instant::now();
        let mut out = BatchBuilder::new(1_000_000);
        let mut reorder = Reorder::new(Duration::from_secs(60), REORDER_MAX_BYTES);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let gate = Arc::new(ReadGate::default());
        reorder.opened(&a, start, Some(Arc::clone(&gate)));
        reorder.opened(&b, start, None);
        offer(&mut reorder, &b, 100, 0, start, &mut out);
        // a runs ahead of b: its records wait, and past PAUSE_BYTES its
        // connection is no longer read.
        let mut count = 0u64;
        while !gate.is_paused() {
            count += 1;
            offer(
                &mut reorder,
                &a,
                200 + i64::try_from(count).unwrap_or(0),
                count,
                start,
                &mut out,
            );
            assert!(count < 100_000, "never paused");
        }
        assert!(reorder.bytes > PAUSE_BYTES);
        assert!(released(&mut reorder, start, &mut out).len() <= 1);
        assert!(gate.is_paused());
        // b catches up with a's first ten records: they leave (and b's
        // own), but too many still wait.
        offer(&mut reorder, &b, 210, count + 1, start, &mut out);
        assert_eq!(released(&mut reorder, start, &mut out).len(), 11);
        assert!(gate.is_paused());
        // b passes almost all of them: a is read again.
        let almost = 200 + i64::try_from(count).unwrap_or(0) - 100;
        offer(&mut reorder, &b, almost, count + 2, start, &mut out);
        released(&mut reorder, start, &mut out);
        assert!(!gate.is_paused());
        assert!(reorder.bytes < RESUME_BYTES);
    }

    #[test]
    fn ties_leave_in_arrival_order_and_too_much_leaves_at_once() {
        let start = Instant::now();
        let mut out = BatchBuilder::new(100);
        let mut reorder = Reorder::new(Duration::from_secs(60), usize::MAX);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let c: Arc<str> = Arc::from("c");
        reorder.opened(&c, start, None);
        offer(&mut reorder, &b, 100, 1, start, &mut out);
        let one = reorder.bytes;
        offer(&mut reorder, &a, 100, 2, start, &mut out);
        offer(&mut reorder, &b, 100, 3, start, &mut out);
        // c has not spoken: nothing goes ...
        assert!(released(&mut reorder, start, &mut out).is_empty());
        // ... but past the size bound the oldest go (b's first: it came
        // first) until what waits fits.
        reorder.max_bytes = 3 * one;
        offer(&mut reorder, &a, 200, 4, start, &mut out);
        assert_eq!(released(&mut reorder, start, &mut out), [1]);
        while reorder.release(start, true, &mut out) {}
        assert_eq!(out.batch().positions, [2, 3, 4]);
    }

    #[test]
    fn senders_that_ended_or_fell_silent_are_forgotten() {
        let start = Instant::now();
        let mut out = BatchBuilder::new(100);
        let mut reorder = Reorder::new(Duration::from_secs(1), REORDER_MAX_BYTES);
        for n in 0..200u64 {
            let peer: Arc<str> = Arc::from(format!("192.0.2.1:{n}"));
            offer(
                &mut reorder,
                &peer,
                100 + i64::try_from(n).unwrap_or(0),
                n,
                start,
                &mut out,
            );
        }
        assert_eq!(reorder.numbers.len(), 200);
        // Ten holds (at least 10 s) of silence: their records leave, and
        // they are forgotten.
        let later = start + Duration::from_secs(10);
        while reorder.release(later, false, &mut out) {
            out.clear();
        }
        assert!(reorder.is_empty());
        assert!(reorder.numbers.is_empty());
        assert_eq!(reorder.free.len(), 200);
    }

    #[test]
    fn a_full_batch_stops_the_release_until_it_is_passed_on() {
        let start = Instant::now();
        let mut out = BatchBuilder::new(2);
        let mut reorder = Reorder::new(Duration::from_secs(1), REORDER_MAX_BYTES);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        reorder.opened(&b, start, None);
        for n in 1..=3 {
            offer(
                &mut reorder,
                &a,
                100 + i64::try_from(n).unwrap_or(0),
                n,
                start,
                &mut out,
            );
        }
        reorder.ended(&b);
        assert!(reorder.release(start, false, &mut out));
        assert_eq!(out.batch().positions, [1, 2]);
        out.clear();
        assert!(!reorder.release(start, false, &mut out));
        assert_eq!(out.batch().positions, [3]);
    }
}
