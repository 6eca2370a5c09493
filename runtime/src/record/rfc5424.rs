//! RFC 5424: `VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
//! SP STRUCTURED-DATA [SP MSG]`, after PRI.

use super::{ParseError, Parsed, time};
use crate::types::Timestamp;

/// The UTF-8 byte order mark that may open MSG.
const BOM: &str = "\u{feff}";

/// Split off the next space-separated header field; `-` (nil) becomes "".
fn field<'a>(rest: &mut &'a str, name: &'static str) -> Result<&'a str, ParseError> {
    // A byte search: header fields are short, and `split_once(' ')` costs a
    // call to compare the space's encoding at every match.
    let at = rest
        .bytes()
        .position(|byte| byte == b' ')
        .ok_or(ParseError::Truncated(name))?;
    let (value, tail) = rest.split_at(at);
    *rest = tail.get(1..).unwrap_or("");
    Ok(if value == "-" { "" } else { value })
}

pub fn parse(after_pri: &str, facility: u8, severity: u8) -> Result<Parsed<'_>, ParseError> {
    let mut rest = after_pri;
    let _version = field(&mut rest, "the version")?;
    let timestamp_text = field(&mut rest, "the timestamp")?;
    let timestamp = if timestamp_text.is_empty() {
        Timestamp {
            seconds: 0,
            nanoseconds: 0,
            offset_minutes: 0,
        }
    } else {
        time::parse_rfc3339(timestamp_text)
            .ok_or_else(|| super::rfc3164::rfc3339_error(timestamp_text))?
    };
    let hostname = field(&mut rest, "the hostname")?;
    let app_name = field(&mut rest, "the app-name")?;
    let proc_id = field(&mut rest, "the procid")?;
    // MSGID may be the last field when SD and MSG are missing entirely.
    let msg_id = field(&mut rest, "the msgid")?;
    let (structured_data, message) = split_structured_data(rest)?;
    let message = message.strip_prefix(BOM).unwrap_or(message);
    Ok(Parsed {
        timestamp,
        facility,
        severity,
        hostname,
        app_name,
        proc_id,
        msg_id,
        structured_data,
        message,
    })
}

/// Split STRUCTURED-DATA from MSG. SD is `-` or one or more
/// `[SD-ID *(SP PARAM="VALUE")]` elements, where VALUE escapes `"`, `\` and
/// `]` with a backslash.
fn split_structured_data(text: &str) -> Result<(&str, &str), ParseError> {
    if text.is_empty() {
        return Err(ParseError::Truncated("the structured data"));
    }
    if let Some(message) = text.strip_prefix('-') {
        return match message.as_bytes().first() {
            None => Ok(("", "")),
            Some(b' ') => Ok(("", &message[1..])),
            Some(_) => Err(ParseError::BadStructuredData(1)),
        };
    }
    let bytes = text.as_bytes();
    let mut index = 0;
    while bytes.get(index) == Some(&b'[') {
        index = element_end(bytes, index)?;
    }
    if index == 0 {
        return Err(ParseError::BadStructuredData(0));
    }
    match bytes.get(index) {
        None => Ok((text, "")),
        Some(b' ') => Ok((&text[..index], &text[index + 1..])),
        Some(_) => Err(ParseError::BadStructuredData(index)),
    }
}

/// The index just past the `]` closing the element that opens at `start`.
fn element_end(bytes: &[u8], start: usize) -> Result<usize, ParseError> {
    let mut index = start + 1;
    let mut in_value = false;
    while let Some(&byte) = bytes.get(index) {
        match (in_value, byte) {
            (true, b'\\') => index += 1,
            (true, b'"') => in_value = false,
            (false, b'"') => in_value = true,
            (false, b']') => return Ok(index + 1),
            _ => {}
        }
        index += 1;
    }
    Err(ParseError::BadStructuredData(start))
}
