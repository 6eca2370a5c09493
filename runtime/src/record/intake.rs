//! Turning the messages of a stream (a capture's entries, the network's
//! messages) into batched records, counting what could not be taken. One
//! step for replays and the listener, so that both treat bad input alike.

use super::{BatchBuilder, TraditionalDefaults};
use std::borrow::Cow;

/// Unparsable messages logged one by one before the rest are only counted.
const LOGGED_PARSE_ERRORS: u64 = 20;

/// Where a message came from, for the log line about a bad one.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A capture or log file: positions are line numbers.
    File,
    /// The network: positions are message numbers; the sender's address.
    Network {
        /// `IP:PORT` of the sender.
        peer: &'a str,
    },
}

/// What taking a stream's messages gave.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ParseCounts {
    /// Records parsed and batched.
    pub records: u64,
    /// Messages that were not syslog records (each counted, the first ones
    /// logged).
    pub unparsable: u64,
    /// Messages with bytes that are not UTF-8 (replaced by U+FFFD).
    pub not_utf8: u64,
}

impl ParseCounts {
    /// The text of a message: as it is when it is UTF-8, else with the bad
    /// bytes replaced (and counted).
    pub fn decode<'a>(&mut self, bytes: &'a [u8]) -> Cow<'a, str> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => {
                self.not_utf8 += 1;
                String::from_utf8_lossy(bytes)
            }
        }
    }

    /// Count a record parsed elsewhere and put it into `builder`.
    pub fn take_parsed(
        &mut self,
        builder: &mut BatchBuilder,
        position: u64,
        text: &str,
        parsed: &super::Parsed<'_>,
        peer: &str,
    ) {
        builder.push(position, text, parsed, peer);
        self.records += 1;
    }

    /// Parse `text` into `builder` as the record at `position`, or count it
    /// as unparsable and say so (the first ones at warning level).
    pub fn take(
        &mut self,
        builder: &mut BatchBuilder,
        position: u64,
        text: &str,
        origin: Origin<'_>,
        defaults: &TraditionalDefaults,
    ) {
        let error = match super::parse(text, defaults) {
            Ok(parsed) => {
                let peer = match origin {
                    Origin::File => "",
                    Origin::Network { peer } => peer,
                };
                builder.push(position, text, &parsed, peer);
                self.records += 1;
                return;
            }
            Err(error) => error,
        };
        self.unparsable += 1;
        let first_ones = self.unparsable <= LOGGED_PARSE_ERRORS;
        match (origin, first_ones) {
            (Origin::File, true) => {
                tracing::warn!(line = position, "not a syslog record, skipped: {error}");
            }
            (Origin::File, false) => {
                tracing::debug!(line = position, "not a syslog record, skipped: {error}");
            }
            (Origin::Network { peer }, true) => {
                tracing::warn!(
                    message = position,
                    peer,
                    "not a syslog record, skipped: {error}"
                );
            }
            (Origin::Network { peer }, false) => {
                tracing::debug!(
                    message = position,
                    peer,
                    "not a syslog record, skipped: {error}"
                );
            }
        }
    }
}
