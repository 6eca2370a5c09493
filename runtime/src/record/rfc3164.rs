//! Traditional syslog (RFC 3164) and `auth.log` lines:
//! `Mmm dd hh:mm:ss HOST TAG[PID]: MSG`. Also the high-precision variant
//! rsyslog writes (`2023-02-20T15:12:47.757250-05:00 HOST TAG[PID]: MSG`).

use super::time::{LocalTime, days_in_month, parse_rfc3339};
use super::{ParseError, Parsed, TraditionalDefaults};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

pub fn parse<'a>(
    text: &'a str,
    facility: u8,
    severity: u8,
    defaults: &TraditionalDefaults,
) -> Result<Parsed<'a>, ParseError> {
    let bytes = text.as_bytes();
    let year_first =
        bytes.len() > 5 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b' ';
    let (timestamp, rest) = if bytes.first().is_some_and(u8::is_ascii_digit) && !year_first {
        // RFC 3339, as rsyslog's high-precision format and journalctl's
        // short-iso write it.
        let (stamp, rest) = text
            .split_once(' ')
            .ok_or(ParseError::Truncated("the timestamp"))?;
        let timestamp = parse_rfc3339(stamp).ok_or_else(|| rfc3339_error(stamp))?;
        (timestamp, rest)
    } else {
        traditional_time(text, defaults)?
    };
    let (hostname, (app_name, proc_id, message)) = match bracketed_tag(rest) {
        // No hostname, the program in brackets: `[sshd]: MSG`, `[sshd] MSG`.
        Some(tag) => ("", tag),
        None if starts_with_tag(rest) => ("", split_tag(rest)),
        None => {
            let (hostname, rest) = rest
                .split_once(' ')
                .ok_or(ParseError::Truncated("the hostname"))?;
            (hostname, split_tag(rest))
        }
    };
    Ok(Parsed {
        timestamp,
        facility,
        severity,
        hostname,
        app_name,
        proc_id,
        msg_id: "",
        structured_data: "",
        message,
    })
}

/// Why an RFC 3339 timestamp did not parse: a day the month does not have,
/// or anything else.
pub fn rfc3339_error(stamp: &str) -> ParseError {
    let b = stamp.as_bytes();
    let field = |at: usize, len: usize| -> Option<u32> { stamp.get(at..at + len)?.parse().ok() };
    if b.len() >= 10
        && b[4] == b'-'
        && b[7] == b'-'
        && let (Some(year), Some(month), Some(day)) = (field(0, 4), field(5, 2), field(8, 2))
        && let Some(impossible) = impossible_date(i64::from(year), month, day)
    {
        return impossible;
    }
    ParseError::BadTimestamp(stamp.to_owned())
}

/// `ImpossibleDate` when `month` (1-12) of `year` has no `day`.
fn impossible_date(year: i64, month: u32, day: u32) -> Option<ParseError> {
    let name = MONTHS.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
    let days = days_in_month(year, month);
    (day > days).then(|| ParseError::ImpossibleDate {
        date: format!("{name} {day}"),
        year,
        days,
    })
}

/// A traditional timestamp at the start of `text` and what follows it:
/// `Mmm dd hh:mm:ss` with the day padded by a space or a zero, or not
/// padded at all (`Feb 7 16:01:07`, as many senders write it), optionally
/// after a year (`2026 Nov 29 10:00:01`, where senders add it); without a
/// year, the configured one.
fn traditional_time<'a>(
    text: &'a str,
    defaults: &TraditionalDefaults,
) -> Result<(crate::types::Timestamp, &'a str), ParseError> {
    let malformed = || {
        let shown: String = text.chars().take(20).collect();
        ParseError::BadTraditionalTimestamp(shown.trim_end().to_owned())
    };
    let number = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (year, rest) = match text.get(..5) {
        Some(head)
            if head.as_bytes()[4] == b' ' && head[..4].bytes().all(|c| c.is_ascii_digit()) =>
        {
            (
                i64::from(number(&head[..4]).ok_or_else(malformed)?),
                &text[5..],
            )
        }
        _ => (defaults.year, text),
    };
    let month = MONTHS
        .iter()
        .position(|m| rest.get(..3) == Some(*m))
        .ok_or_else(malformed)?;
    let rest = rest
        .get(3..)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(malformed)?;
    // The day: "dd", " d", "0d" or "d", then a space.
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let (day_text, rest) = rest.split_once(' ').ok_or_else(malformed)?;
    let day = number(day_text)
        .filter(|_| day_text.len() <= 2)
        .ok_or_else(malformed)?;
    let clock = rest.get(..8).ok_or_else(malformed)?;
    let c = clock.as_bytes();
    if c[2] != b':' || c[5] != b':' {
        return Err(malformed());
    }
    let month = u32::try_from(month).map_err(|_| malformed())? + 1;
    let timestamp = LocalTime {
        year,
        month,
        day,
        hour: number(&clock[..2]).ok_or_else(malformed)?,
        minute: number(&clock[3..5]).ok_or_else(malformed)?,
        second: number(&clock[6..8]).ok_or_else(malformed)?,
        nanosecond: 0,
        offset_minutes: defaults.offset_minutes,
    }
    .to_timestamp()
    .ok_or_else(|| impossible_date(year, month, day).unwrap_or_else(malformed))?;
    let rest = rest[8..]
        .strip_prefix(' ')
        .ok_or(ParseError::Truncated("the timestamp"))?;
    Ok((timestamp, rest))
}

/// Split `TAG[PID]: MSG` or `TAG: MSG`; a line without a tag is all message.
/// Whether `text` starts with a tag rather than a hostname: senders that
/// leave the hostname out (as some `auth.log` writers do) start with
/// `sshd[PID]:` or `sshd:`, which no hostname is (a hostname has no `[`,
/// and does not end in a colon).
fn starts_with_tag(text: &str) -> bool {
    let token = text.split(' ').next().unwrap_or(text);
    token.ends_with("]:")
        || (token.ends_with(':') && token.len() > 1 && !token[..token.len() - 1].contains(':'))
}

/// `[PROGRAM]: MSG` or `[PROGRAM] MSG` in place of hostname and tag (as
/// some BSD and Solaris syslogs write): the program, no PID, the message.
fn bracketed_tag(text: &str) -> Option<(&str, &str, &str)> {
    let (name, rest) = text.strip_prefix('[')?.split_once(']')?;
    if name.is_empty() || name.contains(' ') {
        return None;
    }
    let message = rest.strip_prefix(':').unwrap_or(rest);
    Some((name, "", message.strip_prefix(' ').unwrap_or(message)))
}

fn split_tag(text: &str) -> (&str, &str, &str) {
    let tag_end = text.find(['[', ':', ' ']).unwrap_or(text.len());
    let tag = &text[..tag_end];
    let rest = &text[tag_end..];
    if let Some(after) = rest.strip_prefix('[')
        && let Some((pid, after)) = after.split_once(']')
        && let Some(message) = after.strip_prefix(':')
    {
        return (tag, pid, message.strip_prefix(' ').unwrap_or(message));
    }
    if let Some(message) = rest.strip_prefix(':') {
        return (tag, "", message.strip_prefix(' ').unwrap_or(message));
    }
    ("", "", text)
}
