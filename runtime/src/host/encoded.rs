//! The contract's packed byte layouts (the WIT describes both): event
//! values as `events.dispatch-encoded` takes them (every declared field's
//! value in declared order, without names or type tags), and batches of
//! events as `packed-handler.handle-packed` takes them.
//!
//! The module thread only checks packed values ([`check`]), which
//! allocates nothing; the handler thread unpacks them ([`decode`]). The
//! module thread is the pipeline's bottleneck, so the strings are made
//! where there is room.

use crate::types::{
    DispatchError, Dispatched, EventDecl, FieldDecl, FieldValues, Severity, Timestamp, Value,
    ValueType,
};

/// One value read from the bytes, its text still borrowed (as bytes:
/// [`check`] validates them once, on the module thread).
enum Packed<'a> {
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Text(&'a [u8]),
    Timestamp(Timestamp),
}

impl<'a> Packed<'a> {
    fn of(value: &'a Value) -> Self {
        match value {
            Value::Integer(integer) => Packed::Integer(*integer),
            Value::Float(float) => Packed::Float(*float),
            Value::Boolean(boolean) => Packed::Boolean(*boolean),
            Value::Text(text) | Value::Email(text) => Packed::Text(text.as_bytes()),
            Value::Timestamp(time) => Packed::Timestamp(*time),
        }
    }
}

/// Read the value of every field `decl` declares from `bytes`, in order,
/// handing each to `each` (which may refuse it); or say why the bytes do
/// not hold them.
fn unpack<'b>(
    decl: &EventDecl,
    mut bytes: &'b [u8],
    mut each: impl FnMut(&FieldDecl, Packed<'b>) -> Result<(), DispatchError>,
) -> Result<(), DispatchError> {
    for declared in &decl.fields {
        let missing = || DispatchError::MissingField(declared.name.clone());
        let value = match declared.value_type {
            ValueType::Integer => {
                Packed::Integer(i64::from_le_bytes(take(&mut bytes).ok_or_else(missing)?))
            }
            ValueType::Float => {
                Packed::Float(f64::from_le_bytes(take(&mut bytes).ok_or_else(missing)?))
            }
            ValueType::Boolean => match take(&mut bytes).ok_or_else(missing)? {
                [0] => Packed::Boolean(false),
                [1] => Packed::Boolean(true),
                _ => return Err(DispatchError::WrongType(declared.name.clone())),
            },
            ValueType::Timestamp => {
                let [seconds @ .., n0, n1, n2, n3, o0, o1] =
                    take::<14>(&mut bytes).ok_or_else(missing)?;
                Packed::Timestamp(Timestamp {
                    seconds: i64::from_le_bytes(seconds),
                    nanoseconds: u32::from_le_bytes([n0, n1, n2, n3]),
                    offset_minutes: i16::from_le_bytes([o0, o1]),
                })
            }
            ValueType::Text | ValueType::Email => {
                let length = take(&mut bytes)
                    .map(u32::from_le_bytes)
                    .and_then(|length| usize::try_from(length).ok())
                    .ok_or_else(missing)?;
                let (text, rest) = bytes.split_at_checked(length).ok_or_else(missing)?;
                bytes = rest;
                Packed::Text(text)
            }
        };
        each(declared, value)?;
    }
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(DispatchError::UndeclaredField(format!(
            "#{}",
            decl.fields.len()
        )))
    }
}

/// The next `N` bytes, taken off `bytes`; `None` if fewer are left.
fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    let (taken, rest) = bytes.split_first_chunk::<N>()?;
    *bytes = rest;
    Some(*taken)
}

/// Whether `bytes` hold the values of `decl`'s fields; if so, what the
/// values count towards `limits.event_bytes` (a text its length, any other
/// value 8, as for events sent with their values).
pub fn check(decl: &EventDecl, bytes: &[u8]) -> Result<usize, DispatchError> {
    let mut size = 0;
    unpack(decl, bytes, |declared, value| {
        size += match value {
            Packed::Text(text) => {
                std::str::from_utf8(text)
                    .map_err(|_| DispatchError::WrongType(declared.name.clone()))?;
                text.len()
            }
            Packed::Timestamp(time) if !time.is_valid() => {
                return Err(DispatchError::WrongType(declared.name.clone()));
            }
            _ => 8,
        };
        Ok(())
    })?;
    Ok(size)
}

/// The values of `decl`'s fields from `bytes` that [`check`] accepted (any
/// that do not unpack are left out).
pub fn decode(decl: &EventDecl, bytes: &[u8]) -> Vec<Value> {
    let mut values = Vec::with_capacity(decl.fields.len());
    let _ = unpack(decl, bytes, |declared, value| {
        values.push(match value {
            Packed::Integer(integer) => Value::Integer(integer),
            Packed::Float(float) => Value::Float(float),
            Packed::Boolean(boolean) => Value::Boolean(boolean),
            Packed::Timestamp(time) => Value::Timestamp(time),
            // Checked UTF-8: nothing is replaced.
            Packed::Text(text) => {
                let text = String::from_utf8_lossy(text).into_owned();
                if declared.value_type == ValueType::Email {
                    Value::Email(text)
                } else {
                    Value::Text(text)
                }
            }
        });
        Ok(())
    });
    values
}

/// Append `events` to `out` as `handle-packed` takes them: names from the
/// shared declaration, values copied as they are (packed ones only walked,
/// as [`check`] has validated them), nothing allocated but `out`'s growth.
pub fn pack_events(events: &[&Dispatched], out: &mut Vec<u8>) {
    for event in events {
        let decl = &*event.decl;
        pack_text(&event.module, out);
        pack_text(&decl.kind, out);
        out.push(match decl.severity {
            Severity::Info => 0,
            Severity::Warning => 1,
            Severity::Error => 2,
        });
        pack_timestamp(&event.time, out);
        pack_text(&event.summary, out);
        pack_length(decl.fields.len(), out);
        let mut field = |declared: &FieldDecl, value: Packed<'_>| {
            pack_text(&declared.name, out);
            out.push(type_tag(declared.value_type));
            match value {
                Packed::Integer(integer) => out.extend_from_slice(&integer.to_le_bytes()),
                Packed::Float(float) => out.extend_from_slice(&float.to_le_bytes()),
                Packed::Boolean(boolean) => out.push(u8::from(boolean)),
                Packed::Text(text) => pack_bytes(text, out),
                Packed::Timestamp(time) => pack_timestamp(&time, out),
            }
            Ok(())
        };
        match &event.values {
            FieldValues::Values(values) => {
                for (declared, value) in decl.fields.iter().zip(values) {
                    let _ = field(declared, Packed::of(value));
                }
            }
            // Checked when it was dispatched: it unpacks.
            FieldValues::Encoded(bytes) => {
                let _ = unpack(decl, bytes, field);
            }
        }
    }
}

/// A value type as a packed event names it: its case's place in the WIT.
fn type_tag(value_type: ValueType) -> u8 {
    match value_type {
        ValueType::Integer => 0,
        ValueType::Float => 1,
        ValueType::Text => 2,
        ValueType::Boolean => 3,
        ValueType::Email => 4,
        ValueType::Timestamp => 5,
    }
}

/// A length as u32. Everything packed comes from a guest's 32-bit memory
/// or is the host's own, far shorter than 4 GiB.
fn pack_length(length: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&u32::try_from(length).unwrap_or(u32::MAX).to_le_bytes());
}

fn pack_text(text: &str, out: &mut Vec<u8>) {
    pack_bytes(text.as_bytes(), out);
}

/// A text's bytes (UTF-8, checked where they came in) with their length.
fn pack_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    pack_length(bytes.len(), out);
    out.extend_from_slice(bytes);
}

fn pack_timestamp(time: &Timestamp, out: &mut Vec<u8>) {
    out.extend_from_slice(&time.seconds.to_le_bytes());
    out.extend_from_slice(&time.nanoseconds.to_le_bytes());
    out.extend_from_slice(&time.offset_minutes.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Severity;

    fn decl() -> EventDecl {
        let field = crate::types::undescribed_field;
        EventDecl {
            kind: "Everything".into(),
            severity: Severity::Info,
            description: String::new(),
            fields: vec![
                field("count", ValueType::Integer),
                field("ratio", ValueType::Float),
                field("user", ValueType::Text),
                field("ok", ValueType::Boolean),
                field("mail", ValueType::Email),
                field("at", ValueType::Timestamp),
            ],
        }
    }

    fn text(bytes: &mut Vec<u8>, text: &[u8]) {
        let length = u32::try_from(text.len()).expect("short");
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(text);
    }

    /// The bytes of every field of [`decl`], with `user` as given.
    fn packed(user: &[u8], ok: u8) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(-3i64).to_le_bytes());
        bytes.extend_from_slice(&0.5f64.to_le_bytes());
        text(&mut bytes, user);
        bytes.push(ok);
        text(&mut bytes, b"root@example.org");
        bytes.extend_from_slice(&1_676_923_967i64.to_le_bytes());
        bytes.extend_from_slice(&250u32.to_le_bytes());
        bytes.extend_from_slice(&(-300i16).to_le_bytes());
        bytes
    }

    #[test]
    fn every_type_unpacks_and_counts_like_a_value_sent_by_value() {
        let bytes = packed("törst".as_bytes(), 1);
        assert_eq!(check(&decl(), &bytes), Ok(8 + 8 + 6 + 8 + 16 + 8));
        assert_eq!(
            decode(&decl(), &bytes),
            [
                Value::Integer(-3),
                Value::Float(0.5),
                Value::Text("törst".into()),
                Value::Boolean(true),
                Value::Email("root@example.org".into()),
                Value::Timestamp(Timestamp {
                    seconds: 1_676_923_967,
                    nanoseconds: 250,
                    offset_minutes: -300,
                }),
            ]
        );
    }

    #[test]
    fn bytes_that_end_early_go_on_or_lie_name_the_field() {
        let bytes = packed(b"carol", 0);
        for cut in [0, 7, 8, 16, 19, 24, 25, 26, 45, 46, bytes.len() - 1] {
            let expected = match cut {
                0..=7 => "count",
                8..=15 => "ratio",
                16..=24 => "user",
                25 => "ok",
                26..=45 => "mail",
                _ => "at",
            };
            assert_eq!(
                check(&decl(), &bytes[..cut]),
                Err(DispatchError::MissingField(expected.into())),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            check(&decl(), &longer),
            Err(DispatchError::UndeclaredField("#6".into()))
        );
        assert_eq!(
            check(&decl(), &packed(b"carol", 2)),
            Err(DispatchError::WrongType("ok".into()))
        );
        assert_eq!(
            check(&decl(), &packed(b"\xff\xfe", 1)),
            Err(DispatchError::WrongType("user".into()))
        );
        // A length past the end of the bytes.
        let mut lying = Vec::new();
        lying.extend_from_slice(&(-3i64).to_le_bytes());
        lying.extend_from_slice(&0.5f64.to_le_bytes());
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        lying.extend_from_slice(b"carol");
        assert_eq!(
            check(&decl(), &lying),
            Err(DispatchError::MissingField("user".into()))
        );
    }

    #[test]
    fn events_are_packed_field_by_field_with_names_and_type_tags() {
        let field = crate::types::undescribed_field;
        let decl = std::sync::Arc::new(EventDecl {
            kind: "K".into(),
            severity: Severity::Warning,
            description: String::new(),
            fields: vec![
                field("ok", ValueType::Boolean),
                field("user", ValueType::Text),
            ],
        });
        let lifted = Dispatched {
            module: "OpenSSH".into(),
            decl: std::sync::Arc::clone(&decl),
            time: Timestamp {
                seconds: 1,
                nanoseconds: 2,
                offset_minutes: -3,
            },
            summary: "s".into(),
            values: FieldValues::Values(vec![Value::Boolean(true), Value::Text("al".into())]),
            record: 0,
        };
        // The same event as dispatch-encoded brings it.
        let encoded = Dispatched {
            values: FieldValues::Encoded(b"\x01\x02\0\0\0al".to_vec()),
            ..lifted.clone()
        };
        let mut expected = Vec::new();
        for part in [&b"\x07\0\0\0OpenSSH"[..], b"\x01\0\0\0K", b"\x01"] {
            expected.extend_from_slice(part);
        }
        expected.extend_from_slice(&1i64.to_le_bytes());
        expected.extend_from_slice(&2u32.to_le_bytes());
        expected.extend_from_slice(&(-3i16).to_le_bytes());
        for part in [
            &b"\x01\0\0\0s"[..],
            b"\x02\0\0\0",
            b"\x02\0\0\0ok\x03\x01",
            b"\x04\0\0\0user\x02\x02\0\0\0al",
        ] {
            expected.extend_from_slice(part);
        }
        for event in [&lifted, &encoded] {
            let mut out = Vec::new();
            pack_events(&[event], &mut out);
            assert_eq!(out, expected, "{:?}", event.values);
        }
        let mut both = Vec::new();
        pack_events(&[&lifted, &encoded], &mut both);
        assert_eq!(both, [expected.clone(), expected].concat());
    }
}
