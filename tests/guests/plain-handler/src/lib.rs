//! An event handler built without the SDK, straight from the WIT's
//! `event-handler` world, as a handler written in another language would
//! be: it exports `handle` only, not `packed-handler`, so the host hands it
//! its events the plain way. It prints `module kind: summary` and then
//! `  name = value` per field.

#![allow(missing_docs, reason = "a test guest")]
#![allow(unsafe_code, reason = "the export glue wit-bindgen generates")]

wit_bindgen::generate!({
    world: "event-handler",
    path: "../../../wit",
    generate_all,
});

use correlator::plugin::types::{DeliveredEvent, Descriptor, Value};
use exports::correlator::plugin::handler::Guest;

struct PlainHandler;

fn show(value: &Value) -> String {
    match value {
        Value::Integer(integer) => integer.to_string(),
        Value::Float(float) => float.to_string(),
        Value::Text(text) | Value::Email(text) => format!("{text:?}"),
        Value::Boolean(boolean) => boolean.to_string(),
        Value::Timestamp(time) => format!("{}.{:09}", time.seconds, time.nanoseconds),
    }
}

impl Guest for PlainHandler {
    fn describe() -> Descriptor {
        Descriptor {
            name: "plain-handler".into(),
            description: "prints events; built without the SDK".into(),
            config: Vec::new(),
            events: Vec::new(),
        }
    }

    fn init() -> Result<(), String> {
        Ok(())
    }

    fn handle(events: Vec<DeliveredEvent>) -> Vec<Result<(), String>> {
        let mut out = String::new();
        for event in &events {
            out.push_str(&format!(
                "{} {}: {}\n",
                event.module, event.kind, event.summary
            ));
            for field in &event.fields {
                out.push_str(&format!("  {} = {}\n", field.name, show(&field.value)));
            }
        }
        print!("{out}");
        events.iter().map(|_| Ok(())).collect()
    }
}

export!(PlainHandler);
