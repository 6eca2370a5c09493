//! What the tracker sends itself through the exchange, keyed by the
//! client's address: failed attempts and logins. Sessions are followed per
//! server (`process`), attempts counted per address (`receive`), so that
//! when workers split the servers between them, each address's attempts
//! still reach one counter, from every server.
//!
//! A message is one byte saying which, then for attempts the count (u32,
//! little-endian), the server's name (its length as u16, then the bytes)
//! and the user (the rest).

use std::cell::RefCell;

/// What one message says.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// The address logged in: its failed passwords are forgotten.
    Login,
    /// The address failed `times` times, as `user`, on `server`.
    Attempts {
        times: u32,
        server: &'a str,
        user: &'a str,
    },
}

const LOGIN: u8 = 0;
const ATTEMPTS: u8 = 1;

thread_local! {
    /// The message being written, reused.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<'a> Message<'a> {
    /// Append the message's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Login => out.push(LOGIN),
            Message::Attempts {
                times,
                server,
                user,
            } => {
                out.push(ATTEMPTS);
                out.extend_from_slice(&times.to_le_bytes());
                // A hostname is at most 255 bytes (RFC 5424).
                let server = &server[..server.len().min(usize::from(u16::MAX))];
                let len = u16::try_from(server.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(server.as_bytes());
                out.extend_from_slice(user.as_bytes());
            }
        }
    }

    /// The message `bytes` hold; `None` for bytes this module never sends.
    pub fn decode(bytes: &'a [u8]) -> Option<Message<'a>> {
        let (&kind, rest) = bytes.split_first()?;
        match kind {
            LOGIN if rest.is_empty() => Some(Message::Login),
            ATTEMPTS => {
                let (times, rest) = rest.split_first_chunk::<4>()?;
                let (len, rest) = rest.split_first_chunk::<2>()?;
                let (server, user) =
                    rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
                Some(Message::Attempts {
                    times: u32::from_le_bytes(*times),
                    server: std::str::from_utf8(server).ok()?,
                    user: std::str::from_utf8(user).ok()?,
                })
            }
            _ => None,
        }
    }

    /// Send the message for `addr`.
    fn send(&self, addr: &str) {
        BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            self.encode(&mut buffer);
            correlator_sdk::exchange::send(addr, &buffer);
        });
    }
}

/// `addr` logged in.
pub fn send_login(addr: &str) {
    Message::Login.send(addr);
}

/// `addr` failed `times` times as `user` on `server`.
pub fn send_attempts(addr: &str, user: &str, server: &str, times: u32) {
    Message::Attempts {
        times,
        server,
        user,
    }
    .send(addr);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_back_as_they_were_sent_and_others_are_refused() {
        for message in [
            Message::Login,
            Message::Attempts {
                times: 3,
                server: "node7",
                user: "rööt",
            },
            Message::Attempts {
                times: 1,
                server: "",
                user: "",
            },
        ] {
            let mut bytes = Vec::new();
            message.encode(&mut bytes);
            assert_eq!(Message::decode(&bytes), Some(message));
        }
        assert_eq!(Message::decode(&[]), None);
        assert_eq!(Message::decode(&[0, 1]), None);
        assert_eq!(Message::decode(&[1, 1, 0, 0, 0, 9, 0, b'a']), None);
        assert_eq!(Message::decode(&[7]), None);
    }
}
