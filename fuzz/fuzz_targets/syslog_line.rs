//! Any bytes as one received syslog line: RFC 5424 and RFC 3164 parsing
//! must return a record or a `ParseError`, never panic; a record's fields
//! are views into the line, its priority is in range, and its time is one
//! the host may hand to guests (`Timestamp::is_valid`).
#![no_main]

use correlator::record::{TraditionalDefaults, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let defaults = TraditionalDefaults {
        year: 2024,
        offset_minutes: 60,
    };
    if let Ok(parsed) = parse(&line, &defaults) {
        let start = line.as_ptr() as usize;
        let fields = parsed.text_fields();
        for field in fields.iter().filter(|field| !field.is_empty()) {
            let at = field.as_ptr() as usize;
            assert!(at >= start && at + field.len() <= start + line.len());
        }
        assert!(parsed.facility <= 23 && parsed.severity <= 7);
        assert!(
            parsed.timestamp.is_valid(),
            "{:?} from {line:?}",
            parsed.timestamp
        );
    }
});
