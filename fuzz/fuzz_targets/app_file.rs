//! Any text as an app file: loading must give an `App` or an error that
//! names what is wrong, never panic.
#![no_main]

use correlator::app::App;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = App::parse(Path::new("fuzz.toml"), text) {
        assert!(!error.to_string().is_empty());
    }
});
