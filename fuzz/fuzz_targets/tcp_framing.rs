//! Any byte stream on a TCP connection, cut into reads at places the input
//! chooses: the RFC 6587 framer (octet counting and trailers) must never
//! panic, never hand on a message longer than the maximum, and cutting the
//! same stream into reads differently must give the same messages.
#![no_main]

use correlator::listen::framing::{Framer, Frames, FramingRules, Oversize, Trailer};
use libfuzzer_sys::fuzz_target;

/// The messages of `stream` read in pieces of the sizes `cuts` cycles
/// through (each 1 to 256 bytes).
fn frame(rules: FramingRules, stream: &[u8], cuts: &[u8]) -> Vec<Vec<u8>> {
    let mut framer = Framer::new(rules);
    let mut frames = Frames::default();
    let mut messages = Vec::new();
    let mut rest = stream;
    let mut cut = cuts.iter().cycle();
    while !rest.is_empty() {
        let size = usize::from(cut.next().copied().unwrap_or(255)) + 1;
        let (read, after) = rest.split_at(size.min(rest.len()));
        framer.push(read, &mut frames);
        messages.extend(frames.iter().map(<[u8]>::to_vec));
        frames = Frames::default();
        rest = after;
    }
    framer.finish_stream(&mut frames);
    messages.extend(frames.iter().map(<[u8]>::to_vec));
    messages
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (cuts, stream) = rest.split_at(rest.len().min(usize::from(control & 0x0f)));
    let rules = FramingRules {
        trailer: if control & 0x10 == 0 {
            Trailer::Lf
        } else {
            Trailer::Nul
        },
        max_message_bytes: 64,
        oversize: if control & 0x20 == 0 {
            Oversize::Truncate
        } else {
            Oversize::Drop
        },
    };
    let in_pieces = frame(rules, stream, cuts);
    for message in &in_pieces {
        assert!(message.len() <= rules.max_message_bytes);
    }
    let whole = frame(rules, stream, &[255]);
    assert_eq!(in_pieces, whole, "the same stream read in other pieces");
});
