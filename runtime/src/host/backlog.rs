//! What a module instance that backs off while listening has not taken yet.
//!
//! A replay waits a back-off out: nothing is lost, the file waits. The
//! network does not wait: holding every module back for one instance's
//! back-off would cost the well-behaved ones their senders' patience (and
//! UDP datagrams). So while listening, the records (and ticks) that come
//! during an instance's back-off are kept for it, in order, up to its
//! `limits.backlog_kib`, and handed to it when the back-off is over; what
//! does not fit is dropped and counted for that instance alone.

use crate::record::{SPANS_PER_RECORD, records};
use crate::types::{RecordBatch, TimerTick, Timestamp};
use std::collections::VecDeque;

/// What one record costs in a backlog besides its text: its spans, time,
/// priority and position.
pub const RECORD_OVERHEAD_BYTES: u64 = 80;

/// Work an instance was not given when it came, with the stream clock of
/// that moment.
pub struct Deferred {
    /// The stream clock when the work came.
    pub clock: Timestamp,
    /// The records or the tick.
    pub work: Work,
}

/// A deferred call.
pub enum Work {
    /// Records for `process`.
    Records(RecordBatch),
    /// A timer tick.
    Tick(TimerTick),
}

/// Deferred work of one instance, oldest first, within a byte budget.
#[derive(Default)]
pub struct Backlog {
    waiting: VecDeque<Deferred>,
    bytes: u64,
    limit: u64,
    /// Records dropped because the backlog was full, over the run.
    dropped: u64,
    /// Whether records were dropped since the backlog was last empty (so
    /// that a full backlog is logged once, not per batch).
    dropping: bool,
}

/// What [`Backlog::keep`] did with a batch.
#[derive(Debug, PartialEq, Eq)]
pub struct Kept {
    /// Records kept (the batch's first ones).
    pub kept: usize,
    /// Records dropped for want of room (the rest).
    pub dropped: usize,
    /// Whether this is the first drop since the backlog was last empty.
    pub first_drop: bool,
}

impl Backlog {
    /// An empty backlog that holds at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Backlog {
            limit,
            ..Backlog::default()
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Records dropped over the run.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Keep as many of `batch`'s records as fit, oldest first; the rest
    /// are dropped and counted.
    pub fn keep(&mut self, batch: &RecordBatch, clock: Timestamp) -> Kept {
        let count = batch.positions.len();
        let mut fit = 0;
        let mut bytes = 0;
        for record in 0..count {
            let cost = record_cost(batch, record);
            if self.bytes + bytes + cost > self.limit {
                break;
            }
            bytes += cost;
            fit += 1;
        }
        if fit > 0 {
            let work = if fit == count {
                batch.clone()
            } else {
                records(batch, 0..fit)
            };
            self.waiting.push_back(Deferred {
                clock,
                work: Work::Records(work),
            });
            self.bytes += bytes;
        }
        let dropped = count - fit;
        let first_drop = dropped > 0 && !self.dropping;
        if dropped > 0 {
            self.dropped += dropped as u64;
            self.dropping = true;
        }
        Kept {
            kept: fit,
            dropped,
            first_drop,
        }
    }

    /// Keep a tick (a tick costs nothing worth counting, and ticks come at
    /// most once a minute).
    pub fn keep_tick(&mut self, tick: TimerTick, clock: Timestamp) {
        self.waiting.push_back(Deferred {
            clock,
            work: Work::Tick(tick),
        });
    }

    /// The oldest deferred work.
    pub fn next(&mut self) -> Option<Deferred> {
        let deferred = self.waiting.pop_front()?;
        if let Work::Records(batch) = &deferred.work {
            let bytes: u64 = (0..batch.positions.len())
                .map(|record| record_cost(batch, record))
                .sum();
            self.bytes = self.bytes.saturating_sub(bytes);
        }
        if self.waiting.is_empty() {
            self.bytes = 0;
            self.dropping = false;
        }
        Some(deferred)
    }

    /// Records waiting, to count them as skipped when the instance is
    /// disabled; the backlog is emptied.
    pub fn discard(&mut self) -> u64 {
        let records = self
            .waiting
            .drain(..)
            .map(|deferred| match deferred.work {
                Work::Records(batch) => batch.positions.len() as u64,
                Work::Tick(_) => 0,
            })
            .sum();
        self.bytes = 0;
        self.dropping = false;
        records
    }
}

/// What record `index` of `batch` costs in a backlog: its fields' text and
/// [`RECORD_OVERHEAD_BYTES`].
fn record_cost(batch: &RecordBatch, index: usize) -> u64 {
    let spans = batch
        .spans
        .get(index * SPANS_PER_RECORD * 2..(index + 1) * SPANS_PER_RECORD * 2)
        .unwrap_or(&[]);
    let text: u64 = spans.chunks_exact(2).map(|pair| u64::from(pair[1])).sum();
    text + RECORD_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::BatchBuilder;

    fn batch(lines: &[&str]) -> BatchBuilder {
        let mut builder = BatchBuilder::new(lines.len());
        let defaults = crate::record::TraditionalDefaults {
            year: 2023,
            offset_minutes: 0,
        };
        for (position, line) in lines.iter().enumerate() {
            let parsed = crate::record::parse(line, &defaults).expect("a valid line");
            builder.push(position as u64 + 1, line, &parsed, "");
        }
        builder
    }

    #[test]
    fn keeps_what_fits_oldest_first_and_counts_the_rest_once() {
        let line = "<13>1 2023-02-20T15:12:47Z host app 1 - - message";
        let lines = [line; 3];
        let builder = batch(&lines);
        let one = record_cost(builder.batch(), 0);
        // "host" "app" "1" "message": 15 bytes of text.
        assert_eq!(one, 15 + RECORD_OVERHEAD_BYTES);
        let mut backlog = Backlog::new(4 * one);
        let clock = Timestamp::EPOCH;
        assert_eq!(
            backlog.keep(builder.batch(), clock),
            Kept {
                kept: 3,
                dropped: 0,
                first_drop: false
            }
        );
        assert_eq!(
            backlog.keep(builder.batch(), clock),
            Kept {
                kept: 1,
                dropped: 2,
                first_drop: true
            }
        );
        assert_eq!(
            backlog.keep(builder.batch(), clock),
            Kept {
                kept: 0,
                dropped: 3,
                first_drop: false
            }
        );
        assert_eq!(backlog.dropped(), 5);
        let Some(Deferred {
            work: Work::Records(first),
            ..
        }) = backlog.next()
        else {
            panic!("the first batch");
        };
        assert_eq!(first.positions, [1, 2, 3]);
        let Some(Deferred {
            work: Work::Records(second),
            ..
        }) = backlog.next()
        else {
            panic!("the part of the second batch that fitted");
        };
        assert_eq!(second.positions, [1]);
        assert!(backlog.is_empty());
        // Emptied, it takes a full batch again, and a drop is news again.
        assert_eq!(backlog.keep(builder.batch(), clock).kept, 3);
        assert!(backlog.keep(builder.batch(), clock).first_drop);
        assert_eq!(backlog.discard(), 4);
        assert!(backlog.is_empty());
    }
}
