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
//! leave at once. A sender's records are waited for from when its
//! connection opens; records that arrive from a sender the listener did
//! not know of yet may have been passed already by the others', and are
//! then processed late.
//!
//! A record is parsed once: waiting records sit parsed in their sender's
//! own batch, and leave by a merge of the senders' oldest records. A record
//! that may leave at once (nothing waits, and no other sender is behind
//! it: always so with one sender) never waits at all.

use crate::record::BatchBuilder;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes of records waiting; past it the oldest leave at once.
pub const REORDER_MAX_BYTES: usize = 64 << 20;

/// What one waiting record counts against [`REORDER_MAX_BYTES`] besides its
/// text.
const RECORD_OVERHEAD: usize = 96;

/// A record's time as an order key: seconds and nanoseconds since the
/// epoch, UTC.
pub type TimeKey = (i64, u32);

/// One sender's progress and waiting records.
struct Sender {
    /// Time of its newest record (`(i64::MIN, 0)` before its first).
    newest: TimeKey,
    /// When it last sent a record, or opened its connection.
    heard: Instant,
    /// Its connection ended: it waits for no record of its own any more.
    ended: bool,
    /// Its waiting records, parsed; `cursor` is the first still waiting.
    waiting: BatchBuilder,
    cursor: usize,
    /// When the waiting records came: (arrival, number of records pushed
    /// to `waiting` up to then), oldest first.
    arrivals: VecDeque<(Instant, usize)>,
    /// Arrival order of its oldest waiting record, for ties.
    seq: u64,
    /// Where the waiting records move when those that left make up most
    /// of `waiting` (so that a sender that is always ahead does not grow
    /// its batch for ever).
    spare: BatchBuilder,
}

impl Sender {
    fn new(now: Instant) -> Self {
        Sender {
            newest: (i64::MIN, 0),
            heard: now,
            ended: false,
            waiting: BatchBuilder::new(64),
            cursor: 0,
            arrivals: VecDeque::new(),
            seq: 0,
            spare: BatchBuilder::new(64),
        }
    }

    /// Drop the records that have left from the front of `waiting`, once
    /// they are most of it.
    fn compact(&mut self) {
        if self.cursor < 1024 || self.cursor * 2 < self.waiting.len() {
            return;
        }
        self.spare.clear();
        for index in self.cursor..self.waiting.len() {
            self.spare.push_copy(self.waiting.batch(), index);
        }
        std::mem::swap(&mut self.waiting, &mut self.spare);
        self.spare.clear();
        let left = self.cursor;
        for (_, count) in &mut self.arrivals {
            *count = count.saturating_sub(left);
        }
        self.cursor = 0;
    }

    fn has_waiting(&self) -> bool {
        self.cursor < self.waiting.len()
    }

    /// Time of waiting record `index`.
    fn time_of(&self, index: usize) -> TimeKey {
        let batch = self.waiting.batch();
        (
            batch.seconds.get(index).copied().unwrap_or(i64::MAX),
            batch.nanoseconds.get(index).copied().unwrap_or(0),
        )
    }

    /// Bytes record `index` counts.
    fn cost_of(&self, index: usize) -> usize {
        let batch = self.waiting.batch();
        let spans = batch
            .spans
            .get(
                index * crate::record::SPANS_PER_RECORD * 2
                    ..(index + 1) * crate::record::SPANS_PER_RECORD * 2,
            )
            .unwrap_or(&[]);
        spans
            .chunks_exact(2)
            .map(|pair| pair[1] as usize)
            .sum::<usize>()
            + RECORD_OVERHEAD
    }
}

/// Records waiting to leave in time order.
pub struct Reorder {
    hold: Duration,
    max_bytes: usize,
    senders: HashMap<Arc<str>, Sender>,
    /// Records waiting, over every sender.
    waiting: usize,
    bytes: usize,
    seq: u64,
}

impl Reorder {
    /// Records wait at most `hold`, and at most `max_bytes` of them.
    pub fn new(hold: Duration, max_bytes: usize) -> Self {
        Reorder {
            hold,
            max_bytes,
            senders: HashMap::new(),
            waiting: 0,
            bytes: 0,
            seq: 0,
        }
    }

    /// Whether no record waits.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    /// `peer` opened a connection at `now`: records newer than what it
    /// sends first wait for it (for at most the hold).
    pub fn opened(&mut self, peer: &Arc<str>, now: Instant) {
        self.senders
            .entry(Arc::clone(peer))
            .or_insert_with(|| Sender::new(now));
    }

    /// `peer` closed its connection: it holds no one back any more.
    pub fn ended(&mut self, peer: &str) {
        if let Some(sender) = self.senders.get_mut(peer) {
            sender.ended = true;
        }
        self.senders
            .retain(|_, sender| !sender.ended || sender.has_waiting());
    }

    /// A record of `peer` at `time`, arriving `now`: `true` when it may go
    /// on at once (nothing waits, and every other sender has already sent
    /// something at least as new), `false` when it must wait: then give it
    /// to [`Reorder::wait`].
    pub fn admit(&mut self, peer: &Arc<str>, time: TimeKey, now: Instant) -> bool {
        let sender = self
            .senders
            .entry(Arc::clone(peer))
            .or_insert_with(|| Sender::new(now));
        sender.newest = sender.newest.max(time);
        sender.heard = now;
        self.waiting == 0
            && self.senders.iter().all(|(other, sender)| {
                other == peer
                    || sender.ended
                    || sender.newest >= time
                    || self.is_forgotten(sender, now)
            })
    }

    /// Keep the record `admit` refused: `parse` pushes it to the sender's
    /// batch of waiting records.
    pub fn wait(&mut self, peer: &Arc<str>, now: Instant, parse: impl FnOnce(&mut BatchBuilder)) {
        let Some(sender) = self.senders.get_mut(peer) else {
            return;
        };
        if !sender.has_waiting() {
            self.seq += 1;
            sender.seq = self.seq;
        }
        let before = sender.waiting.len();
        parse(&mut sender.waiting);
        let after = sender.waiting.len();
        if after == before {
            return;
        }
        match sender.arrivals.back_mut() {
            Some((arrived, count)) if *arrived == now => *count = after,
            _ => sender.arrivals.push_back((now, after)),
        }
        self.waiting += after - before;
        self.bytes += sender.cost_of(before);
    }

    /// A sender without a connection (UDP) that has been silent for ten
    /// holds no longer counts.
    fn is_forgotten(&self, sender: &Sender, now: Instant) -> bool {
        now.duration_since(sender.heard) >= (self.hold * 10).max(Duration::from_secs(10))
    }

    /// When the oldest waiting record must leave for having waited the
    /// hold, if any waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.senders
            .values()
            .filter(|sender| sender.has_waiting())
            .filter_map(|sender| {
                sender
                    .arrivals
                    .iter()
                    .find(|&&(_, count)| count > sender.cursor)
                    .map(|&(arrived, _)| arrived + self.hold)
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
            return false;
        }
        let forget = (self.hold * 10).max(Duration::from_secs(10));
        let mut watermark = (i64::MAX, u32::MAX);
        let mut forced = (i64::MIN, 0);
        for sender in self.senders.values_mut() {
            if !sender.ended && now.duration_since(sender.heard) < forget {
                watermark = watermark.min(sender.newest);
            }
            // The newest of its records that have waited the hold.
            while let Some(&(arrived, count)) = sender.arrivals.front() {
                if now.duration_since(arrived) < self.hold {
                    break;
                }
                if count > sender.cursor {
                    forced = forced.max(sender.time_of(count - 1));
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
        let mut heads: BinaryHeap<Reverse<(TimeKey, u64, Arc<str>)>> = self
            .senders
            .iter()
            .filter(|(_, sender)| sender.has_waiting())
            .map(|(peer, sender)| {
                Reverse((sender.time_of(sender.cursor), sender.seq, Arc::clone(peer)))
            })
            .collect();
        let mut full = false;
        while let Some(Reverse((time, _, peer))) = heads.pop() {
            if time > limit && self.bytes <= self.max_bytes {
                break;
            }
            if out.is_full() {
                full = true;
                break;
            }
            let Some(sender) = self.senders.get_mut(&peer) else {
                continue;
            };
            let index = sender.cursor;
            out.push_copy(sender.waiting.batch(), index);
            self.bytes = self.bytes.saturating_sub(sender.cost_of(index));
            self.waiting -= 1;
            sender.cursor += 1;
            if sender.has_waiting() {
                self.seq += 1;
                sender.seq = self.seq;
                heads.push(Reverse((sender.time_of(sender.cursor), sender.seq, peer)));
            } else {
                sender.waiting.clear();
                sender.cursor = 0;
                sender.arrivals.clear();
            }
            // Arrivals whose records have all left tell nothing more.
            while sender
                .arrivals
                .front()
                .is_some_and(|&(_, count)| count <= sender.cursor)
            {
                sender.arrivals.pop_front();
            }
            sender.compact();
        }
        if self.waiting == 0 {
            self.bytes = 0;
            self.senders.retain(|_, sender| !sender.ended);
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
        let push = |builder: &mut BatchBuilder| {
            let mut parsed = crate::record::parse(&line, &defaults).expect("a record");
            parsed.timestamp.seconds = time;
            builder.push(position, &line, &parsed, peer);
        };
        if reorder.admit(peer, (time, 0), now) {
            push(out);
        } else {
            reorder.wait(peer, now, push);
        }
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
        reorder.opened(&a, start);
        reorder.opened(&b, start);
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
        let start = Instant::now();
        let mut out = BatchBuilder::new(100);
        let mut reorder = Reorder::new(Duration::from_secs(1), REORDER_MAX_BYTES);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        reorder.opened(&a, start);
        reorder.opened(&b, start);
        offer(&mut reorder, &a, 105, 1, start, &mut out);
        assert!(released(&mut reorder, start, &mut out).is_empty());
        offer(&mut reorder, &b, 101, 2, start, &mut out);
        assert_eq!(released(&mut reorder, start, &mut out), [2]);
        // b says no more: after the hold, a's record goes.
        let later = start + Duration::from_secs(1);
        assert_eq!(released(&mut reorder, later, &mut out), [1]);
    }

    #[test]
    fn ties_leave_in_arrival_order_and_too_much_leaves_at_once() {
        let start = Instant::now();
        let mut out = BatchBuilder::new(100);
        let mut reorder = Reorder::new(Duration::from_secs(60), usize::MAX);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let c: Arc<str> = Arc::from("c");
        reorder.opened(&c, start);
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
    fn a_full_batch_stops_the_release_until_it_is_passed_on() {
        let start = Instant::now();
        let mut out = BatchBuilder::new(2);
        let mut reorder = Reorder::new(Duration::from_secs(1), REORDER_MAX_BYTES);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        reorder.opened(&b, start);
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
