//! Any bytes as the values of `events.dispatch-encoded` for an event type
//! with a field of every type: the host's check must accept or refuse them
//! without panicking, and what it accepts must unpack to one value per
//! field and reach a handler (packed for `handle-packed`, unpacked by the
//! SDK) as exactly those values.
#![no_main]

use correlator::host::encoded::{check, decode, pack_events};
use correlator::types::{
    Dispatched, EventDecl, FieldDecl, FieldValues, Severity, Timestamp, ValueType,
};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

static DECL: LazyLock<Arc<EventDecl>> = LazyLock::new(|| {
    let field = |name: &str, value_type| FieldDecl {
        name: name.into(),
        value_type,
        description: String::new(),
    };
    Arc::new(EventDecl {
        kind: "Everything".into(),
        severity: Severity::Warning,
        description: String::new(),
        fields: vec![
            field("integer", ValueType::Integer),
            field("text", ValueType::Text),
            field("float", ValueType::Float),
            field("boolean", ValueType::Boolean),
            field("email", ValueType::Email),
            field("timestamp", ValueType::Timestamp),
        ],
    })
});

fuzz_target!(|data: &[u8]| {
    let decl = &*DECL;
    if check(decl, data).is_err() {
        return;
    }
    let values = decode(decl, data);
    assert_eq!(values.len(), decl.fields.len());
    let event = Dispatched {
        module: Arc::from("fuzz"),
        decl: Arc::clone(decl),
        time: Timestamp::EPOCH,
        summary: "s".into(),
        values: FieldValues::Encoded(data.to_vec()),
        record: 0,
    };
    let mut packed = Vec::new();
    pack_events(&[&event], &mut packed);
    let delivered = correlator_sdk::__unpack_events(&packed).expect("packed events unpack");
    assert_eq!(delivered.len(), 1);
    let unpacked: Vec<String> = delivered[0]
        .fields
        .iter()
        .map(|field| format!("{}={:?}", field.name, field.value))
        .collect();
    let expected: Vec<String> = decl
        .fields
        .iter()
        .zip(&values)
        .map(|(declared, value)| format!("{}={value:?}", declared.name))
        .collect();
    // Debug forms compare NaN floats by their bits' spelling too.
    assert_eq!(unpacked, expected);
});
