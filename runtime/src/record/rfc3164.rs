//! Traditional syslog (RFC 3164) and `auth.log` lines:
//! `Mmm dd hh:mm:ss HOST TAG[PID]: MSG`. Also the high-precision variant
//! rsyslog writes (`2023-02-20T15:12:47.757250-05:00 HOST TAG[PID]: MSG`).

use super::time::{LocalTime, parse_rfc3339};
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
    let (timestamp, rest) = if text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        let (stamp, rest) = text
            .split_once(' ')
            .ok_or(ParseError::Truncated("the timestamp"))?;
        let timestamp =
            parse_rfc3339(stamp).ok_or_else(|| ParseError::BadTimestamp(stamp.to_owned()))?;
        (timestamp, rest)
    } else {
        let stamp = text
            .get(..15)
            .ok_or_else(|| ParseError::BadTraditionalTimestamp(text.chars().take(15).collect()))?;
        let timestamp = parse_traditional_time(stamp, defaults)
            .ok_or_else(|| ParseError::BadTraditionalTimestamp(stamp.to_owned()))?;
        let rest = text[15..]
            .strip_prefix(' ')
            .ok_or(ParseError::Truncated("the timestamp"))?;
        (timestamp, rest)
    };
    let (hostname, rest) = rest
        .split_once(' ')
        .ok_or(ParseError::Truncated("the hostname"))?;
    let (app_name, proc_id, message) = split_tag(rest);
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

/// `Mmm dd hh:mm:ss`, the day padded with a space or a zero.
fn parse_traditional_time(
    stamp: &str,
    defaults: &TraditionalDefaults,
) -> Option<crate::types::Timestamp> {
    let month = MONTHS.iter().position(|m| stamp.get(..3) == Some(*m))?;
    let b = stamp.as_bytes();
    if b[3] != b' ' || b[6] != b' ' || b[9] != b':' || b[12] != b':' {
        return None;
    }
    let day_text = stamp[4..6].trim_start();
    let number = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
    };
    LocalTime {
        year: defaults.year,
        month: u32::try_from(month).ok()? + 1,
        day: number(day_text)?,
        hour: number(&stamp[7..9])?,
        minute: number(&stamp[10..12])?,
        second: number(&stamp[13..15])?,
        nanosecond: 0,
        offset_minutes: defaults.offset_minutes,
    }
    .to_timestamp()
}

/// Split `TAG[PID]: MSG` or `TAG: MSG`; a line without a tag is all message.
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
