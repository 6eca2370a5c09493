//! Timestamps: comparison and RFC 3339 text.

use crate::Timestamp;
use std::fmt;

impl Timestamp {
    /// Seconds since the Unix epoch as a float, for durations and windows.
    pub fn as_secs_f64(&self) -> f64 {
        self.seconds as f64 + f64::from(self.nanoseconds) / 1e9
    }

    /// Nanoseconds since the Unix epoch; saturates far outside the years
    /// 1678-2262.
    pub fn as_nanos(&self) -> i64 {
        self.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(self.nanoseconds))
    }

    /// Seconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn seconds_since(&self, earlier: &Timestamp) -> f64 {
        (self.seconds - earlier.seconds) as f64
            + (f64::from(self.nanoseconds) - f64::from(earlier.nanoseconds)) / 1e9
    }
}

/// RFC 3339 in the offset the time was written with, with as many fraction
/// digits as it needs (none, 3, 6 or 9).
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset_seconds = i64::from(self.offset_minutes) * 60;
        let local = self.seconds + offset_seconds;
        let days = local.div_euclid(86_400);
        let second_of_day = local.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60
        )?;
        let nanos = self.nanoseconds;
        if nanos != 0 {
            if nanos.is_multiple_of(1_000_000) {
                write!(f, ".{:03}", nanos / 1_000_000)?;
            } else if nanos.is_multiple_of(1_000) {
                write!(f, ".{:06}", nanos / 1_000)?;
            } else {
                write!(f, ".{nanos:09}")?;
            }
        }
        if self.offset_minutes == 0 {
            f.write_str("Z")
        } else {
            let sign = if self.offset_minutes < 0 { '-' } else { '+' };
            let offset = self.offset_minutes.unsigned_abs();
            write!(f, "{sign}{:02}:{:02}", offset / 60, offset % 60)
        }
    }
}

/// Proleptic Gregorian date of a day number (days since 1970-01-01), after
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanoseconds: u32, offset_minutes: i16) -> String {
        Timestamp {
            seconds,
            nanoseconds,
            offset_minutes,
        }
        .to_string()
    }

    #[test]
    fn formats_rfc3339_in_the_written_offset() {
        assert_eq!(
            at(1_676_923_967, 771_632_000, -300),
            "2023-02-20T15:12:47.771632-05:00"
        );
        assert_eq!(at(0, 0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            at(951_782_400, 5_000_000, 90),
            "2000-02-29T01:30:00.005+01:30"
        );
        assert_eq!(at(-1, 1, 0), "1969-12-31T23:59:59.000000001Z");
    }
}
