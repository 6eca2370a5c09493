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

/// Serialised as `(seconds, nanoseconds, offset_minutes)`, so that module
/// state holding times can be kept with [`crate::state::save`].
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.seconds, self.nanoseconds, self.offset_minutes).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (seconds, nanoseconds, offset_minutes) = <(i64, u32, i16)>::deserialize(deserializer)?;
        Ok(Timestamp {
            seconds,
            nanoseconds,
            offset_minutes,
        })
    }
}

impl Timestamp {
    /// Append the time as RFC 3339 in the offset it was written with, with
    /// as many fraction digits as it needs (none, 3, 6 or 9). Faster than
    /// `to_string()`, for handlers that write many events. The host hands
    /// guests only valid times (years 0 to 9999, offsets within a day); a
    /// time a guest made up past those is printed with its seconds
    /// saturated and its nanoseconds clamped, never wrapped around.
    pub fn write_rfc3339(&self, out: &mut String) {
        let offset_seconds = i64::from(self.offset_minutes) * 60;
        let local = self.seconds.saturating_add(offset_seconds);
        let days = local.div_euclid(86_400);
        let second_of_day = local.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        if (0..=9999).contains(&year) {
            push_digits(out, year as u64, 4);
        } else {
            out.push_str(&year.to_string());
        }
        out.push('-');
        push_digits(out, u64::from(month), 2);
        out.push('-');
        push_digits(out, u64::from(day), 2);
        out.push('T');
        push_digits(out, (second_of_day / 3600) as u64, 2);
        out.push(':');
        push_digits(out, (second_of_day / 60 % 60) as u64, 2);
        out.push(':');
        push_digits(out, (second_of_day % 60) as u64, 2);
        let nanos = self.nanoseconds.min(999_999_999);
        if nanos != 0 {
            out.push('.');
            if nanos.is_multiple_of(1_000_000) {
                push_digits(out, u64::from(nanos / 1_000_000), 3);
            } else if nanos.is_multiple_of(1_000) {
                push_digits(out, u64::from(nanos / 1_000), 6);
            } else {
                push_digits(out, u64::from(nanos), 9);
            }
        }
        if self.offset_minutes == 0 {
            out.push('Z');
        } else {
            out.push(if self.offset_minutes < 0 { '-' } else { '+' });
            let offset = u64::from(self.offset_minutes.unsigned_abs());
            if offset / 60 < 100 {
                push_digits(out, offset / 60, 2);
            } else {
                out.push_str(&(offset / 60).to_string());
            }
            out.push(':');
            push_digits(out, offset % 60, 2);
        }
    }
}

/// Append `value` as exactly `width` decimal digits (zero-padded; `value`
/// must fit).
fn push_digits(out: &mut String, value: u64, width: u32) {
    let mut divisor = 10u64.pow(width.saturating_sub(1));
    while divisor > 0 {
        out.push(char::from(b'0' + (value / divisor % 10) as u8));
        divisor /= 10;
    }
}

/// RFC 3339 in the offset the time was written with (see
/// [`Timestamp::write_rfc3339`]).
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(35);
        self.write_rfc3339(&mut text);
        f.write_str(&text)
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

    #[test]
    fn a_made_up_time_past_the_valid_range_is_printed_without_wrapping() {
        assert_eq!(
            at(i64::MIN, u32::MAX, i16::MIN),
            "-292277022657-01-27T08:29:52.999999999-546:08"
        );
        assert_eq!(
            at(i64::MAX, 0, i16::MAX),
            "292277026596-12-04T15:30:07+546:07"
        );
    }
}
