//! Reading the contract's packed byte layouts: the values of
//! `events.dispatch-encoded` and the events of
//! `packed-handler.handle-packed` (the WIT describes both).

use crate::{DeliveredEvent, Field, Severity, Timestamp, Value, ValueType};

/// Reads packed values front to back; every read says what it was reading
/// when the bytes end or do not fit.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let (taken, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or_else(|| format!("the bytes end inside {what}"))?;
        self.bytes = rest;
        Ok(*taken)
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        self.take::<1>(what).map(|[byte]| byte)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.take(what).map(u32::from_le_bytes)
    }

    /// A u32 length and that many bytes of UTF-8.
    fn text(&mut self, what: &str) -> Result<&'a str, String> {
        let length = usize::try_from(self.u32(what)?).unwrap_or(usize::MAX);
        let (text, rest) = self
            .bytes
            .split_at_checked(length)
            .ok_or_else(|| format!("the bytes end inside {what}"))?;
        self.bytes = rest;
        std::str::from_utf8(text).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn timestamp(&mut self, what: &str) -> Result<Timestamp, String> {
        Ok(Timestamp {
            seconds: self.take(what).map(i64::from_le_bytes)?,
            nanoseconds: self.u32(what)?,
            offset_minutes: self.take(what).map(i16::from_le_bytes)?,
        })
    }

    /// [`Reader::value`] written over `slot`: a text or an e-mail address
    /// over one of the same type reuses its room.
    fn value_into(
        &mut self,
        value_type: ValueType,
        slot: &mut Value,
        what: &str,
    ) -> Result<(), String> {
        match (value_type, &mut *slot) {
            (ValueType::Text, Value::Text(text)) | (ValueType::Email, Value::Email(text)) => {
                overwrite(text, self.text(what)?);
            }
            _ => *slot = self.value(value_type, what)?,
        }
        Ok(())
    }

    /// A value of `value_type`, as `dispatch-encoded` lays it out.
    pub(crate) fn value(&mut self, value_type: ValueType, what: &str) -> Result<Value, String> {
        Ok(match value_type {
            ValueType::Integer => Value::Integer(self.take(what).map(i64::from_le_bytes)?),
            ValueType::Float => Value::Float(self.take(what).map(f64::from_le_bytes)?),
            ValueType::Boolean => match self.byte(what)? {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                other => return Err(format!("{what} is {other}, not a boolean (0 or 1)")),
            },
            ValueType::Text => Value::Text(self.text(what)?.to_owned()),
            ValueType::Email => Value::Email(self.text(what)?.to_owned()),
            ValueType::Timestamp => Value::Timestamp(self.timestamp(what)?),
        })
    }
}

/// The value type a packed event's field gives as `tag` (the order of
/// `value-type`'s cases).
fn value_type(tag: u8) -> Option<ValueType> {
    Some(match tag {
        0 => ValueType::Integer,
        1 => ValueType::Float,
        2 => ValueType::Text,
        3 => ValueType::Boolean,
        4 => ValueType::Email,
        5 => ValueType::Timestamp,
        _ => return None,
    })
}

/// The events `handle-packed` got, or why the bytes are not events.
#[doc(hidden)]
pub fn __unpack_events(bytes: &[u8]) -> Result<Vec<DeliveredEvent>, String> {
    let mut events = Vec::new();
    let count = __unpack_events_into(bytes, &mut events)?;
    events.truncate(count);
    Ok(events)
}

/// The events `handle-packed` got, written over the first of `events`
/// (which grows when it has fewer): returns how many. A handler's batches
/// then reuse the strings and field lists of the batches before, where
/// allocating them afresh for every event took a fifth of a JSON log
/// handler's time.
#[doc(hidden)]
pub fn __unpack_events_into(
    bytes: &[u8],
    events: &mut Vec<DeliveredEvent>,
) -> Result<usize, String> {
    let mut reader = Reader::new(bytes);
    let mut count = 0;
    while !reader.is_empty() {
        let number = count + 1;
        let at = |error: String| format!("event {number}: {error}");
        if events.len() == count {
            events.push(DeliveredEvent {
                module: String::new(),
                kind: String::new(),
                severity: Severity::Info,
                time: Timestamp {
                    seconds: 0,
                    nanoseconds: 0,
                    offset_minutes: 0,
                },
                summary: String::new(),
                fields: Vec::new(),
            });
        }
        let Some(event) = events.get_mut(count) else {
            break;
        };
        overwrite(&mut event.module, reader.text("its module").map_err(at)?);
        overwrite(&mut event.kind, reader.text("its kind").map_err(at)?);
        event.severity = match reader.byte("its severity").map_err(at)? {
            0 => Severity::Info,
            1 => Severity::Warning,
            2 => Severity::Error,
            other => return Err(at(format!("severity {other} is not a severity"))),
        };
        event.time = reader.timestamp("its time").map_err(at)?;
        overwrite(&mut event.summary, reader.text("its summary").map_err(at)?);
        let fields = reader.u32("its field count").map_err(at)? as usize;
        // Every field takes at least six bytes: no more room than that.
        if fields > bytes.len() / 6 {
            return Err(at(format!("{fields} fields do not fit in the bytes")));
        }
        event.fields.truncate(fields);
        for index in 0..fields {
            let name = reader.text("a field name").map_err(at)?;
            let in_field = |error: String| format!("event {number}, field {name}: {error}");
            let tag = reader.byte("its type").map_err(in_field)?;
            let value_type = value_type(tag)
                .ok_or_else(|| in_field(format!("type tag {tag} is not a value type")))?;
            match event.fields.get_mut(index) {
                Some(field) => {
                    overwrite(&mut field.name, name);
                    reader
                        .value_into(value_type, &mut field.value, "its value")
                        .map_err(in_field)?;
                }
                None => {
                    let value = reader.value(value_type, "its value").map_err(in_field)?;
                    event.fields.push(Field {
                        name: name.to_owned(),
                        value,
                    });
                }
            }
        }
        count += 1;
    }
    Ok(count)
}

/// `target` made `text`, in the room it has.
fn overwrite(target: &mut String, text: &str) {
    target.clear();
    target.push_str(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &mut Vec<u8>, text: &str) {
        bytes.extend_from_slice(&u32::try_from(text.len()).expect("short").to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
    }

    /// One `SSHDLoginFailed` event packed as the host packs it.
    fn packed_event(bytes: &mut Vec<u8>, user: &str) {
        text(bytes, "OpenSSH");
        text(bytes, "SSHDLoginFailed");
        bytes.push(2);
        bytes.extend_from_slice(&1_676_923_967i64.to_le_bytes());
        bytes.extend_from_slice(&5u32.to_le_bytes());
        bytes.extend_from_slice(&(-300i16).to_le_bytes());
        text(bytes, "a failed login");
        bytes.extend_from_slice(&2u32.to_le_bytes());
        text(bytes, "user");
        bytes.push(2);
        text(bytes, user);
        text(bytes, "failures");
        bytes.push(0);
        bytes.extend_from_slice(&3i64.to_le_bytes());
    }

    #[test]
    fn packed_events_unpack_with_every_part() {
        let mut bytes = Vec::new();
        packed_event(&mut bytes, "carol");
        packed_event(&mut bytes, "dave");
        let events = __unpack_events(&bytes).expect("unpacks");
        assert_eq!(events.len(), 2);
        let event = &events[1];
        assert_eq!(
            (
                event.module.as_str(),
                event.kind.as_str(),
                event.summary.as_str()
            ),
            ("OpenSSH", "SSHDLoginFailed", "a failed login")
        );
        assert!(matches!(event.severity, Severity::Error));
        assert_eq!(
            (
                event.time.seconds,
                event.time.nanoseconds,
                event.time.offset_minutes
            ),
            (1_676_923_967, 5, -300)
        );
        assert_eq!(
            format!("{:?}", event.fields),
            format!(
                "{:?}",
                [
                    Field {
                        name: "user".into(),
                        value: Value::Text("dave".into())
                    },
                    Field {
                        name: "failures".into(),
                        value: Value::Integer(3)
                    }
                ]
            )
        );
    }

    #[test]
    fn bytes_that_are_not_events_say_where() {
        let mut bytes = Vec::new();
        packed_event(&mut bytes, "carol");
        let whole = bytes.len();
        packed_event(&mut bytes, "dave");
        assert_eq!(
            __unpack_events(&bytes[..bytes.len() - 1]).map(|events| events.len()),
            Err("event 2, field failures: the bytes end inside its value".into())
        );
        assert_eq!(
            __unpack_events(&bytes[..whole + 3]).map(|events| events.len()),
            Err("event 2: the bytes end inside its module".into())
        );
        let mut bad_tag = Vec::new();
        packed_event(&mut bad_tag, "carol");
        let tag = bad_tag.len() - 9;
        bad_tag[tag] = 9;
        assert_eq!(
            __unpack_events(&bad_tag).map(|events| events.len()),
            Err("event 1, field failures: type tag 9 is not a value type".into())
        );
    }
}
