//! What keeps one record with a wild time from moving the stream clock.
//!
//! The stream clock follows the records: modules see it as "now", and
//! timer ticks come at the boundaries it crosses. One record dated 2999 (a
//! sender with a broken clock, a stray line) would move it ahead by
//! centuries: every other record would then look old, and the ticks of
//! every minute in between would be given (356,478 daily statistics for
//! 18 records). So a record further than `timers.max_gap_minutes` from the
//! clock does not move it, and is counted as out of range; unless the next
//! record is as far and near it, which confirms a real gap (a capture with
//! a quiet weekend, a restart after days): then the clock follows, and the
//! ticks of the gap come once per kind, not once per boundary.

/// Judges records' times against the stream clock.
#[derive(Debug)]
pub struct ClockGuard {
    /// Farthest a record may be from the clock and still move it.
    max_gap_seconds: u64,
    /// Whether the clock follows records yet: the first record of a run
    /// that does not continue a checkpoint sets it wherever it is.
    started: bool,
    /// A record far from the clock, waiting for the next to confirm it.
    pending: Option<i64>,
    /// Records that did not move the clock, over the run.
    out_of_range: u64,
}

/// Out-of-range records logged one by one; the rest are counted.
const LOGGED_OUT_OF_RANGE: u64 = 5;

impl ClockGuard {
    /// A guard for gaps up to `max_gap_minutes`.
    pub fn new(max_gap_minutes: u32) -> Self {
        ClockGuard {
            max_gap_seconds: u64::from(max_gap_minutes) * 60,
            started: false,
            pending: None,
            out_of_range: 0,
        }
    }

    /// The clock already shows a time worth guarding (a run continued from
    /// a checkpoint).
    pub fn start(&mut self) {
        self.started = true;
    }

    /// Records that did not move the clock so far.
    pub fn out_of_range(&self) -> u64 {
        self.out_of_range
    }

    /// The longest gap that is taken as it is, in minutes.
    pub fn max_gap_minutes(&self) -> i64 {
        i64::try_from(self.max_gap_seconds / 60).unwrap_or(i64::MAX)
    }

    /// For each record of a batch (`seconds`, at `positions`), whether it
    /// may move the clock, which shows `clock` seconds before the batch;
    /// `None` when all may (the common case, checked without allocating).
    pub fn judge(&mut self, seconds: &[i64], positions: &[u64], clock: i64) -> Option<Vec<bool>> {
        let near = |a: i64, b: i64| a.abs_diff(b) <= self.max_gap_seconds;
        if self.started && self.pending.is_none() && seconds.iter().all(|&s| near(s, clock)) {
            return None;
        }
        let mut clock = clock;
        let mut moves = Vec::with_capacity(seconds.len());
        for (index, &time) in seconds.iter().enumerate() {
            let position = positions.get(index).copied().unwrap_or(0);
            if !self.started || near(time, clock) {
                self.started = true;
                self.pending = None;
                clock = time;
                moves.push(true);
                continue;
            }
            if let Some(pending) = self.pending.take()
                && near(time, pending)
            {
                tracing::warn!(
                    record = position,
                    gap_minutes = time.abs_diff(clock) / 60,
                    "the stream clock jumps: two records in a row are further than timers.max_gap_minutes from it; ticks for the gap come once per kind"
                );
                clock = time;
                moves.push(true);
                continue;
            }
            self.pending = Some(time);
            self.out_of_range += 1;
            if self.out_of_range <= LOGGED_OUT_OF_RANGE {
                tracing::warn!(
                    record = position,
                    minutes_away = time.abs_diff(clock) / 60,
                    "record out of range: further than timers.max_gap_minutes from the stream clock, so it does not move the clock (modules still get it; unless the next record is as far, which confirms a jump)"
                );
            }
            moves.push(false);
        }
        Some(moves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn a_stray_record_does_not_move_the_clock_and_a_confirmed_jump_does() {
        let mut guard = ClockGuard::new(1440);
        let start = 1_676_900_000;
        // The first record sets the clock wherever it is.
        assert_eq!(
            guard.judge(&[start, start + 60], &[1, 2], 0),
            Some(vec![true, true])
        );
        // Within a day: nothing to say.
        assert_eq!(
            guard.judge(&[start + 120, start + DAY], &[3, 4], start + 60),
            None
        );
        // One record in 2999, then the stream goes on.
        let stray = 32_503_680_000;
        assert_eq!(
            guard.judge(&[start + 180, stray, start + 240], &[5, 6, 7], start + 120),
            Some(vec![true, false, true])
        );
        assert_eq!(guard.out_of_range(), 1);
        // A real gap of three days: the first record after it waits, the
        // second confirms it.
        let later = start + 3 * DAY;
        assert_eq!(
            guard.judge(&[later, later + 5, later + 9], &[8, 9, 10], start + 240),
            Some(vec![false, true, true])
        );
        assert_eq!(guard.out_of_range(), 2);
        // Two far records that disagree confirm nothing.
        assert_eq!(
            guard.judge(&[later - 10 * DAY, later + 10 * DAY], &[11, 12], later + 9),
            Some(vec![false, false])
        );
        assert_eq!(guard.out_of_range(), 4);
    }
}
