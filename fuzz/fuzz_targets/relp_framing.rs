//! Any byte stream on a RELP connection, cut into reads at places the
//! input chooses: the frame reader must never panic, never hand on data
//! longer than the maximum, and cutting the same stream into reads
//! differently must give the same frames, and the same error where the
//! stream breaks RELP's framing.
#![no_main]

use correlator::listen::relp::{FrameError, FrameReader};
use libfuzzer_sys::fuzz_target;

const MAX_DATA: usize = 64;

/// What reading `stream` in pieces of the sizes `cuts` cycles through
/// (each 1 to 256 bytes) gives: (txnr, command, data, bytes cut) of every
/// frame, and the error that ended it, if any.
#[allow(clippy::type_complexity)]
fn frames(stream: &[u8], cuts: &[u8]) -> (Vec<(u64, String, Vec<u8>, usize)>, Option<FrameError>) {
    let mut reader = FrameReader::new(MAX_DATA);
    let mut taken = Vec::new();
    let mut rest = stream;
    let mut cut = cuts.iter().cycle();
    while !rest.is_empty() {
        let size = usize::from(cut.next().copied().unwrap_or(255)) + 1;
        let (read, after) = rest.split_at(size.min(rest.len()));
        reader.push(read);
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.data.len() <= MAX_DATA);
                    taken.push((
                        frame.txnr,
                        frame.command.into_owned(),
                        frame.data.into_owned(),
                        frame.cut,
                    ));
                }
                Ok(None) => break,
                Err(error) => return (taken, Some(error)),
            }
        }
        rest = after;
    }
    (taken, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (cuts, stream) = rest.split_at(rest.len().min(usize::from(control & 0x0f)));
    let in_pieces = frames(stream, cuts);
    let whole = frames(stream, &[255]);
    assert_eq!(in_pieces, whole, "the same stream read in other pieces");
});
