//! Calendar arithmetic for record timestamps, without a time-zone database:
//! syslog timestamps carry their own offset (RFC 5424) or take one from
//! configuration (RFC 3164).

use crate::types::Timestamp;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date (year, month, day) of a day number, the
/// inverse of [`days_from_civil`] (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both fit: day is 1..=31 and month 1..=12 by construction.
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD hh:mm:ss` of a timestamp in the offset it was written with,
/// for summaries meant for people.
pub fn format_local(timestamp: &Timestamp) -> String {
    let local = timestamp.seconds + i64::from(timestamp.offset_minutes) * 60;
    let (year, month, day) = civil_from_days(local.div_euclid(86_400));
    let second = local.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        second / 3600,
        second / 60 % 60,
        second % 60
    )
}

/// `YYYY-MM-DD HH:MM:SS UTC` of seconds since the epoch: how log lines and
/// `check` show the stream clock and other instants, one way everywhere.
pub fn format_utc(seconds: i64) -> String {
    let time = Timestamp {
        seconds,
        nanoseconds: 0,
        offset_minutes: 0,
    };
    format!("{} UTC", format_local(&time))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Number of days in `month` of `year`.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// A local date and time at a UTC offset, checked field by field.
pub struct LocalTime {
    /// Proleptic Gregorian year.
    pub year: i64,
    /// 1-12.
    pub month: u32,
    /// 1-31, checked against the month.
    pub day: u32,
    /// 0-23.
    pub hour: u32,
    /// 0-59.
    pub minute: u32,
    /// 0-60 (60 for a leap second).
    pub second: u32,
    /// 0-999,999,999.
    pub nanosecond: u32,
    /// Minutes east of UTC.
    pub offset_minutes: i16,
}

impl LocalTime {
    /// The instant, or `None` if a field is out of range. A leap second
    /// (`:60`) is folded into the next second's start.
    pub fn to_timestamp(&self) -> Option<Timestamp> {
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
            || self.nanosecond >= 1_000_000_000
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let local = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        Some(Timestamp {
            seconds: local - i64::from(self.offset_minutes) * 60,
            nanoseconds: self.nanosecond,
            offset_minutes: self.offset_minutes,
        })
    }
}

/// Parse `n` ASCII digits at the start of `bytes`.
fn digits(bytes: &[u8], n: usize) -> Option<u32> {
    let slice = bytes.get(..n)?;
    slice.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Parse an RFC 3339 timestamp (`2023-02-20T15:12:47.757250-05:00`,
/// `...Z`); up to nine fraction digits; the offset is kept.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = i64::from(digits(b, 4)?);
    let month = digits(&b[5..], 2)?;
    let day = digits(&b[8..], 2)?;
    let hour = digits(&b[11..], 2)?;
    let minute = digits(&b[14..], 2)?;
    let second = digits(&b[17..], 2)?;
    let mut rest = &b[19..];
    let mut nanosecond = 0u32;
    if let Some((b'.', fraction)) = rest.split_first() {
        let count = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 {
            return None;
        }
        for (index, &digit) in fraction[..count].iter().enumerate() {
            if index < 9 {
                nanosecond = nanosecond * 10 + u32::from(digit - b'0');
            }
        }
        for _ in count..9 {
            nanosecond *= 10;
        }
        rest = &fraction[count..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        // With a colon (RFC 3339), or without (`+0000`, as journalctl's
        // short-iso and some senders write it).
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let hours = digits(&[*h1, *h2], 2)?;
            let minutes = digits(&[*m1, *m2], 2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = i16::try_from(hours * 60 + minutes).ok()?;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    LocalTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanosecond,
        offset_minutes,
    }
    .to_timestamp()
}

/// Parse a UTC offset as written in configuration: `Z`, `UTC`, `+02:00`,
/// `-0500`.
pub fn parse_utc_offset(text: &str) -> Option<i16> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("z") || text.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let rest = rest.replace(':', "");
    if rest.len() != 4 {
        return None;
    }
    let hours = digits(rest.as_bytes(), 2)?;
    let minutes = digits(&rest.as_bytes()[2..], 2)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * i16::try_from(hours * 60 + minutes).ok()?)
}

/// The current year in UTC, from the system clock.
pub fn current_year() -> i64 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    // 365.2425 days per Gregorian year; exact except within a day of New Year.
    let mut year = 1970 + seconds / 31_556_952;
    if days_from_civil(year, 1, 1) * 86_400 > seconds {
        year -= 1;
    } else if days_from_civil(year + 1, 1, 1) * 86_400 <= seconds {
        year += 1;
    }
    year
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_keeping_the_offset() {
        let ts = parse_rfc3339("2023-02-20T15:12:47.757250-05:00").expect("valid");
        assert_eq!(
            (ts.seconds, ts.nanoseconds, ts.offset_minutes),
            (1_676_923_967, 757_250_000, -300)
        );
        let ts = parse_rfc3339("1970-01-01T00:00:00Z").expect("valid");
        assert_eq!((ts.seconds, ts.nanoseconds, ts.offset_minutes), (0, 0, 0));
        let ts = parse_rfc3339("2000-02-29T23:59:59.123456789123+01:30").expect("valid");
        assert_eq!(
            (ts.seconds, ts.nanoseconds, ts.offset_minutes),
            (951_863_399, 123_456_789, 90)
        );
    }

    #[test]
    fn rejects_impossible_rfc3339_timestamps() {
        for text in [
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-02-20T24:00:00Z",
            "2023-02-20T15:12:47.Z",
            "2023-02-20T15:12:47",
            "2023-02-20 15:12:47Z",
            "2023-02-20T15:12:47+5:00",
            "",
        ] {
            assert!(parse_rfc3339(text).is_none(), "{text}");
        }
    }

    #[test]
    fn parses_configured_offsets() {
        assert_eq!(parse_utc_offset("UTC"), Some(0));
        assert_eq!(parse_utc_offset("+02:00"), Some(120));
        assert_eq!(parse_utc_offset("-0530"), Some(-330));
        assert_eq!(parse_utc_offset("02:00"), None);
        assert_eq!(parse_utc_offset("+24:00"), None);
    }
}
