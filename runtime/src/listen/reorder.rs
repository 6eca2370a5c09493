//! Records from several connections, put back in record-time order.
//!
//! Each sender's records come in its own order, but connections progress at
//! their own pace: a record of server A written at 10:00:05 may arrive
//! before one of server B written at 10:00:01. Modules count in windows of
//! record time as the records come, so the results of a live stream would
//! depend on which connection was read first, and differ from a replay of
//! the same records. So while listening, records wait here until every
//! sender that is still talking has sent something at least as new (the
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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes of records waiting; past it the oldest leave at once.
pub const REORDER_MAX_BYTES: usize = 64 << 20;

/// A record's time as an order key: seconds and nanoseconds since the
/// epoch, UTC.
pub type TimeKey = (i64, u32);

/// A record waiting to leave.
#[derive(Debug)]
pub struct Held {
    /// Its time.
    pub time: TimeKey,
    /// Arrival order, for ties.
    seq: u64,
    /// Its message number.
    pub position: u64,
    /// Who sent it.
    pub peer: Arc<str>,
    /// The message.
    pub text: String,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(other.time, other.seq))
    }
}

/// One sender's progress.
struct Sender {
    /// Time of its newest record.
    newest: TimeKey,
    /// When it last sent a record.
    heard: Instant,
}

/// Records waiting to leave in time order.
pub struct Reorder {
    hold: Duration,
    max_bytes: usize,
    waiting: BinaryHeap<Reverse<Held>>,
    /// Arrival times and record times, oldest arrival first: a record that
    /// has waited `hold` lets every record up to its time leave.
    arrivals: VecDeque<(Instant, TimeKey)>,
    bytes: usize,
    seq: u64,
    senders: HashMap<Arc<str>, Sender>,
}

impl Reorder {
    /// Records wait at most `hold`, and at most `max_bytes` of them.
    pub fn new(hold: Duration, max_bytes: usize) -> Self {
        Reorder {
            hold,
            max_bytes,
            waiting: BinaryHeap::new(),
            arrivals: VecDeque::new(),
            bytes: 0,
            seq: 0,
            senders: HashMap::new(),
        }
    }

    /// Whether no record waits.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// A record from `peer`, which arrived `now`.
    pub fn add(&mut self, time: TimeKey, position: u64, peer: &Arc<str>, text: &str, now: Instant) {
        match self.senders.get_mut(peer) {
            Some(sender) => {
                sender.newest = sender.newest.max(time);
                sender.heard = now;
            }
            None => {
                self.senders.insert(
                    Arc::clone(peer),
                    Sender {
                        newest: time,
                        heard: now,
                    },
                );
            }
        }
        self.seq += 1;
        self.bytes += text.len() + peer.len() + 64;
        self.arrivals.push_back((now, time));
        self.waiting.push(Reverse(Held {
            time,
            seq: self.seq,
            position,
            peer: Arc::clone(peer),
            text: text.to_owned(),
        }));
    }

    /// `peer` opened a connection at `now`: records newer than what it
    /// sends first wait for it (for at most the hold).
    pub fn opened(&mut self, peer: &Arc<str>, now: Instant) {
        self.senders.entry(Arc::clone(peer)).or_insert(Sender {
            newest: (i64::MIN, 0),
            heard: now,
        });
    }

    /// `peer` closed its connection: it holds no one back any more.
    pub fn ended(&mut self, peer: &str) {
        self.senders.remove(peer);
    }

    /// When the next record must leave for having waited `hold`, if any
    /// waits.
    pub fn deadline(&self) -> Option<Instant> {
        if self.waiting.is_empty() {
            return None;
        }
        self.arrivals
            .front()
            .map(|&(arrived, _)| arrived + self.hold)
    }

    /// Every record that may leave at `now`, oldest first: those no newer
    /// than the watermark, those that waited `hold` (with every older
    /// one), and the oldest while more than `max_bytes` wait.
    pub fn release(&mut self, now: Instant, mut leave: impl FnMut(Held)) {
        // A sender on a connection counts until the connection ends; one
        // without (UDP) until it has been silent for ten holds. Meanwhile a
        // silent sender holds the others back no longer than the hold.
        let forget = (self.hold * 10).max(Duration::from_secs(10));
        self.senders
            .retain(|_, sender| now.duration_since(sender.heard) < forget);
        let hold = self.hold;
        let watermark = self
            .senders
            .values()
            .map(|sender| sender.newest)
            .min()
            .unwrap_or((i64::MAX, u32::MAX));
        let mut forced = (i64::MIN, 0);
        while let Some(&(arrived, time)) = self.arrivals.front() {
            if now.duration_since(arrived) < hold {
                break;
            }
            forced = forced.max(time);
            self.arrivals.pop_front();
        }
        let limit = watermark.max(forced);
        while let Some(Reverse(next)) = self.waiting.peek() {
            if next.time > limit && self.bytes <= self.max_bytes {
                break;
            }
            let Some(Reverse(held)) = self.waiting.pop() else {
                break;
            };
            self.bytes = self
                .bytes
                .saturating_sub(held.text.len() + held.peer.len() + 64);
            leave(held);
        }
        if self.waiting.is_empty() {
            self.arrivals.clear();
            self.bytes = 0;
        }
    }

    /// Every record still waiting, oldest first (at the end).
    pub fn drain(&mut self, mut leave: impl FnMut(Held)) {
        while let Some(Reverse(held)) = self.waiting.pop() {
            leave(held);
        }
        self.arrivals.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(reorder: &mut Reorder, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        reorder.release(now, |held| out.push(held.position));
        out
    }

    #[test]
    fn records_leave_in_time_order_once_every_talking_sender_has_passed_them() {
        let start = Instant::now();
        let mut reorder = Reorder::new(Duration::from_secs(1), REORDER_MAX_BYTES);
        let a: Arc<str> = Arc::from("192.0.2.1:1");
        let b: Arc<str> = Arc::from("192.0.2.2:1");
        reorder.add((105, 0), 1, &a, "a105", start);
        reorder.add((106, 0), 2, &a, "a106", start);
        // Only a has spoken: its own records may go.
        assert_eq!(released(&mut reorder, start), [1, 2]);
        reorder.add((110, 0), 3, &a, "a110", start);
        reorder.add((101, 0), 4, &b, "b101", start);
        // b is at 101: only what is no newer waits no more.
        assert_eq!(released(&mut reorder, start), [4]);
        reorder.add((108, 0), 5, &b, "b108", start);
        assert_eq!(released(&mut reorder, start), [5]);
        reorder.add((112, 0), 6, &b, "b112", start);
        assert_eq!(released(&mut reorder, start), [3]);
        // b ends: a's newest (110) is the watermark; 112 waits for a ...
        reorder.ended(&b);
        assert!(released(&mut reorder, start).is_empty());
        // ... until it has waited a second.
        assert_eq!(reorder.deadline(), Some(start + Duration::from_secs(1)));
        assert_eq!(released(&mut reorder, start + Duration::from_secs(1)), [6]);
        assert!(reorder.is_empty());
    }

    #[test]
    fn an_open_connection_that_has_not_spoken_yet_is_waited_for() {
        let start = Instant::now();
        let mut reorder = Reorder::new(Duration::from_secs(1), REORDER_MAX_BYTES);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        reorder.opened(&a, start);
        reorder.opened(&b, start);
        reorder.add((105, 0), 1, &a, "a105", start);
        assert!(released(&mut reorder, start).is_empty());
        reorder.add((101, 0), 2, &b, "b101", start);
        assert_eq!(released(&mut reorder, start), [2]);
        // b says no more: after the hold, a's record goes.
        let later = start + Duration::from_secs(1);
        assert_eq!(released(&mut reorder, later), [1]);
    }

    #[test]
    fn ties_leave_in_arrival_order_and_too_much_leaves_at_once() {
        let start = Instant::now();
        let mut reorder = Reorder::new(Duration::from_secs(60), 200);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        reorder.add((100, 5), 1, &b, "b", start);
        reorder.add((200, 0), 2, &a, "a", start);
        reorder.add((100, 5), 3, &b, "b", start);
        assert_eq!(released(&mut reorder, start), [1, 3]);
        // Past the size bound the oldest go, watermark or not.
        reorder.add((300, 0), 4, &a, &"x".repeat(100), start);
        reorder.add((150, 0), 5, &b, "b", start);
        assert_eq!(released(&mut reorder, start), [5, 2]);
        let mut rest = Vec::new();
        reorder.drain(|held| rest.push(held.position));
        assert_eq!(rest, [4]);
    }
}
