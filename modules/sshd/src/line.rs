//! Recognising the sshd messages that matter, OpenSSH 7.x to 9.x.
//!
//! Parsing works from the right where it can: user names are chosen by the
//! client and may contain spaces or the words `from` and `port`.

/// What one sshd message says about a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `Accepted METHOD for USER from ADDR port PORT ssh2[: KEYTYPE FP]`.
    Accepted {
        method: &'a str,
        user: &'a str,
        addr: &'a str,
        port: u16,
        key: &'a str,
    },
    /// `Failed password for [invalid user] USER from ADDR port PORT ssh2`,
    /// and the same for `keyboard-interactive/pam`.
    FailedPassword {
        user: &'a str,
        addr: &'a str,
        port: u16,
    },
    /// `Invalid user USER from ADDR [port PORT]`.
    InvalidUser {
        user: &'a str,
        addr: &'a str,
        port: u16,
    },
    /// `pam_unix(sshd:auth): authentication failure; ... rhost=ADDR user=USER`.
    PamAuthFailure { user: &'a str, addr: &'a str },
    /// `pam_unix(sshd:session): session opened for user USER[(uid=N)] by ...`.
    SessionOpened,
    /// `pam_unix(sshd:session): session closed for user USER`.
    SessionClosed,
    /// Any of the ways a connection ends.
    End(End<'a>),
}

/// How a connection-ending line names the user.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum UserKind {
    /// No user named.
    None,
    /// `authenticating user U` or `invalid user U`: before authentication.
    Unauthenticated,
    /// `user U`: after authentication.
    Authenticated,
}

/// A line that ends a connection.
#[derive(Debug, PartialEq, Eq)]
pub struct End<'a> {
    pub user_kind: UserKind,
    pub user: &'a str,
    pub addr: &'a str,
    pub port: u16,
}

/// Classify an sshd message; `None` for messages that do not matter.
///
/// The first byte picks the one kind of line that can start with it, so
/// that a line is compared with one or two prefixes, not a dozen (in
/// WebAssembly a comparison is a call and a loop).
pub fn parse(message: &str) -> Option<Line<'_>> {
    let message = message.trim_end();
    let message = message.strip_suffix(" [preauth]").unwrap_or(message);
    match message.as_bytes().first()? {
        b'A' => parse_accepted(message),
        b'F' => parse_failed(message),
        b'I' => parse_invalid_user(message),
        b'p' => parse_pam(message),
        _ => parse_end(message).map(Line::End),
    }
}

fn parse_accepted(message: &str) -> Option<Line<'_>> {
    let rest = message.strip_prefix("Accepted ")?;
    let (method, rest) = split_once(rest, " for ")?;
    let (user, addr, port, tail) = user_from_addr_port(rest)?;
    let key = tail
        .strip_prefix("ssh2")
        .unwrap_or(tail)
        .trim_start_matches(':')
        .trim();
    Some(Line::Accepted {
        method,
        user,
        addr,
        port,
        key,
    })
}

fn parse_failed(message: &str) -> Option<Line<'_>> {
    let rest = message.strip_prefix("Failed ")?;
    let rest = rest
        .strip_prefix("password for ")
        .or_else(|| rest.strip_prefix("keyboard-interactive/pam for "))?;
    let rest = rest.strip_prefix("invalid user ").unwrap_or(rest);
    // Not the last ` from `: the user name (and the info after `: `) are
    // the client's to choose, and could name another address.
    let (user, addr, port) = crate::attempt::user_from(rest)?;
    Some(Line::FailedPassword { user, addr, port })
}

fn parse_invalid_user(message: &str) -> Option<Line<'_>> {
    let rest = message.strip_prefix("Invalid user ")?;
    Some(match user_from_addr_port(rest) {
        Some((user, addr, port, _)) => Line::InvalidUser { user, addr, port },
        None => {
            // OpenSSH 7.x before 7.5 logs no port.
            let (user, addr) = rsplit_once(rest, " from ")?;
            Line::InvalidUser {
                user,
                addr: addr.trim(),
                port: 0,
            }
        }
    })
}

fn parse_pam(message: &str) -> Option<Line<'_>> {
    let rest = message.strip_prefix("pam_unix(sshd:")?;
    if let Some(rest) = rest.strip_prefix("session): session ") {
        if rest.starts_with("opened for user ") {
            return Some(Line::SessionOpened);
        }
        if rest.starts_with("closed for user ") {
            return Some(Line::SessionClosed);
        }
        return None;
    }
    if let Some(rest) = rest.strip_prefix("auth): authentication failure;") {
        let mut user = "";
        let mut addr = "";
        for pair in rest.split_ascii_whitespace() {
            if let Some(value) = pair.strip_prefix("rhost=") {
                addr = value;
            } else if let Some(value) = pair.strip_prefix("user=") {
                user = value;
            }
        }
        if user.is_empty() {
            return None;
        }
        return Some(Line::PamAuthFailure { user, addr });
    }
    None
}

/// The prefixes of connection-ending lines, each followed by
/// `[authenticating |invalid ]user U ADDR port P` or `ADDR port P`.
const END_PREFIXES: [&str; 7] = [
    "Connection closed by ",
    "Connection reset by ",
    "Disconnected from ",
    "Disconnecting ",
    "Received disconnect from ",
    "Timeout, client not responding from ",
    "Timeout before authentication for ",
];

fn parse_end(message: &str) -> Option<End<'_>> {
    if let Some(rest) = message.strip_prefix("error: maximum authentication attempts exceeded for ")
    {
        let rest = rest.strip_prefix("invalid user ").unwrap_or(rest);
        let (user, addr, port, _) = user_from_addr_port(rest)?;
        return Some(End {
            user_kind: UserKind::Unauthenticated,
            user,
            addr,
            port,
        });
    }
    let message = message.strip_prefix("fatal: ").unwrap_or(message);
    let first = message.as_bytes().first()?;
    let rest = END_PREFIXES
        .iter()
        .filter(|prefix| prefix.as_bytes().first() == Some(first))
        .find_map(|prefix| message.strip_prefix(prefix))?;
    let (user_kind, rest) = if let Some(rest) = rest
        .strip_prefix("authenticating user ")
        .or_else(|| rest.strip_prefix("invalid user "))
    {
        (UserKind::Unauthenticated, rest)
    } else if let Some(rest) = rest.strip_prefix("user ") {
        (UserKind::Authenticated, rest)
    } else {
        (UserKind::None, rest)
    };
    let (before_port, after_port) = rsplit_once(rest, " port ")?;
    let port = leading_port(after_port)?;
    let (user, addr) = match user_kind {
        UserKind::None => ("", before_port),
        _ => before_port.rsplit_once(' ')?,
    };
    Some(End {
        user_kind,
        user,
        addr,
        port,
    })
}

/// Split `USER from ADDR port PORT[ TAIL]` into its parts.
fn user_from_addr_port(text: &str) -> Option<(&str, &str, u16, &str)> {
    let (user, rest) = rsplit_once(text, " from ")?;
    let (addr, rest) = split_once(rest, " port ")?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let port = rest[..digits].parse().ok()?;
    Some((user, addr, port, rest[digits..].trim_start()))
}

/// Where `pattern` (ASCII, a space then a word) starts in `text`, the
/// first or the last occurrence. Jumps between occurrences of the word's
/// first letter with `find`/`rfind`, which scan a word of memory at a time:
/// in WebAssembly every loop iteration also checks the call's deadline, so
/// short loops matter.
fn position_of(text: &str, pattern: &str, last: bool) -> Option<usize> {
    let bytes = text.as_bytes();
    let key = char::from(*pattern.as_bytes().get(1)?);
    let mut window = 0..text.len();
    loop {
        let slice = text.get(window.clone())?;
        let found = if last {
            slice.rfind(key)
        } else {
            slice.find(key)
        }? + window.start;
        if found >= 1 && bytes.get(found - 1..found - 1 + pattern.len()) == Some(pattern.as_bytes())
        {
            return Some(found - 1);
        }
        if last {
            window.end = found;
        } else {
            window.start = found + 1;
        }
    }
}

/// `text.split_once(pattern)` for the short ASCII patterns of sshd lines.
/// Patterns start and end with ASCII, so the split points are character
/// boundaries.
pub(crate) fn split_once<'a>(text: &'a str, pattern: &str) -> Option<(&'a str, &'a str)> {
    let index = position_of(text, pattern, false)?;
    Some((text.get(..index)?, text.get(index + pattern.len()..)?))
}

/// `text.rsplit_once(pattern)`, as [`split_once`].
pub(crate) fn rsplit_once<'a>(text: &'a str, pattern: &str) -> Option<(&'a str, &'a str)> {
    let index = position_of(text, pattern, true)?;
    Some((text.get(..index)?, text.get(index + pattern.len()..)?))
}

pub(crate) fn leading_port(text: &str) -> Option<u16> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(
        user_kind: UserKind,
        user: &'static str,
        addr: &'static str,
        port: u16,
    ) -> Option<Line<'static>> {
        Some(Line::End(End {
            user_kind,
            user,
            addr,
            port,
        }))
    }

    #[test]
    fn recognises_every_accepted_method_and_key_type() {
        assert_eq!(
            parse(
                "Accepted publickey for timp from 192.168.1.85 port 60116 ssh2: RSA SHA256:QaxveQJbYmX1Wmx/p2A7q+CJEZEySEl3Cnk79PVUY2A"
            ),
            Some(Line::Accepted {
                method: "publickey",
                user: "timp",
                addr: "192.168.1.85",
                port: 60116,
                key: "RSA SHA256:QaxveQJbYmX1Wmx/p2A7q+CJEZEySEl3Cnk79PVUY2A"
            })
        );
        for key in [
            "ED25519 SHA256:abc",
            "ECDSA SHA256:def",
            "DSA SHA256:ghi",
            "RSA-CERT SHA256:jkl ID x (serial 1) CA RSA SHA256:mno",
        ] {
            assert_eq!(
                parse(&format!(
                    "Accepted publickey for u from 2001:db8::7 port 22 ssh2: {key}"
                )),
                Some(Line::Accepted {
                    method: "publickey",
                    user: "u",
                    addr: "2001:db8::7",
                    port: 22,
                    key
                })
            );
        }
        assert_eq!(
            parse("Accepted keyboard-interactive/pam for bob from 10.0.0.1 port 5 ssh2"),
            Some(Line::Accepted {
                method: "keyboard-interactive/pam",
                user: "bob",
                addr: "10.0.0.1",
                port: 5,
                key: ""
            })
        );
        assert_eq!(
            parse("Accepted password for testguy from 192.168.1.85 port 60138 ssh2"),
            Some(Line::Accepted {
                method: "password",
                user: "testguy",
                addr: "192.168.1.85",
                port: 60138,
                key: ""
            })
        );
    }

    #[test]
    fn recognises_failures_and_invalid_users() {
        assert_eq!(
            parse("Failed password for invalid user admin from 203.0.113.9 port 4242 ssh2"),
            Some(Line::FailedPassword {
                user: "admin",
                addr: "203.0.113.9",
                port: 4242
            })
        );
        assert_eq!(
            parse("Failed keyboard-interactive/pam for root from ::1 port 9 ssh2"),
            Some(Line::FailedPassword {
                user: "root",
                addr: "::1",
                port: 9
            })
        );
        assert_eq!(
            parse("Invalid user oracle from 198.51.100.3 port 51000"),
            Some(Line::InvalidUser {
                user: "oracle",
                addr: "198.51.100.3",
                port: 51000
            })
        );
        assert_eq!(
            parse("Invalid user  from 198.51.100.3 port 1"),
            Some(Line::InvalidUser {
                user: "",
                addr: "198.51.100.3",
                port: 1
            })
        );
        assert_eq!(
            parse("Invalid user test from 198.51.100.3"),
            Some(Line::InvalidUser {
                user: "test",
                addr: "198.51.100.3",
                port: 0
            })
        );
        assert_eq!(
            parse("Failed password for invalid user from from from 1.2.3.4 port 7 ssh2"),
            Some(Line::FailedPassword {
                user: "from from",
                addr: "1.2.3.4",
                port: 7
            })
        );
        assert_eq!(
            parse(
                "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.168.1.85  user=testguy"
            ),
            Some(Line::PamAuthFailure {
                user: "testguy",
                addr: "192.168.1.85"
            })
        );
        assert_eq!(
            parse("Failed publickey for x from 1.2.3.4 port 7 ssh2"),
            None
        );
    }

    #[test]
    fn recognises_both_pam_session_formats() {
        assert_eq!(
            parse("pam_unix(sshd:session): session opened for user timp by (uid=0)"),
            Some(Line::SessionOpened)
        );
        assert_eq!(
            parse("pam_unix(sshd:session): session opened for user timp(uid=1000) by (uid=0)"),
            Some(Line::SessionOpened)
        );
        assert_eq!(
            parse("pam_unix(sshd:session): session closed for user timp"),
            Some(Line::SessionClosed)
        );
    }

    #[test]
    fn recognises_every_way_a_connection_ends() {
        use UserKind::*;
        let cases = [
            (
                "Connection closed by authenticating user testguy 192.168.1.85 port 60142 [preauth]",
                end(Unauthenticated, "testguy", "192.168.1.85", 60142),
            ),
            (
                "Connection closed by invalid user admin 2001:db8::1 port 33 [preauth]",
                end(Unauthenticated, "admin", "2001:db8::1", 33),
            ),
            (
                "Connection closed by 203.0.113.5 port 40000 [preauth]",
                end(None, "", "203.0.113.5", 40000),
            ),
            (
                "Connection reset by 203.0.113.5 port 40000 [preauth]",
                end(None, "", "203.0.113.5", 40000),
            ),
            (
                "Connection reset by invalid user x 203.0.113.5 port 40000 [preauth]",
                end(Unauthenticated, "x", "203.0.113.5", 40000),
            ),
            (
                "Disconnected from authenticating user root 203.0.113.5 port 1 [preauth]",
                end(Unauthenticated, "root", "203.0.113.5", 1),
            ),
            (
                "Disconnected from invalid user guest 203.0.113.5 port 2 [preauth]",
                end(Unauthenticated, "guest", "203.0.113.5", 2),
            ),
            (
                "Disconnected from user timp 192.168.1.85 port 60116",
                end(Authenticated, "timp", "192.168.1.85", 60116),
            ),
            (
                "Received disconnect from 203.0.113.5 port 3:11: Bye Bye [preauth]",
                end(None, "", "203.0.113.5", 3),
            ),
            (
                "Received disconnect from 192.168.1.85 port 60116:11: disconnected by user",
                end(None, "", "192.168.1.85", 60116),
            ),
            (
                "Disconnecting authenticating user root 203.0.113.5 port 4: Too many authentication failures [preauth]",
                end(Unauthenticated, "root", "203.0.113.5", 4),
            ),
            (
                "Disconnecting invalid user pi 203.0.113.5 port 5: Too many authentication failures [preauth]",
                end(Unauthenticated, "pi", "203.0.113.5", 5),
            ),
            (
                "error: maximum authentication attempts exceeded for root from 203.0.113.5 port 6 ssh2 [preauth]",
                end(Unauthenticated, "root", "203.0.113.5", 6),
            ),
            (
                "error: maximum authentication attempts exceeded for invalid user ftp from 203.0.113.5 port 7 ssh2 [preauth]",
                end(Unauthenticated, "ftp", "203.0.113.5", 7),
            ),
            (
                "Timeout, client not responding from user timp 192.168.1.85 port 8",
                end(Authenticated, "timp", "192.168.1.85", 8),
            ),
            (
                "Timeout, client not responding from 192.168.1.85 port 9",
                end(None, "", "192.168.1.85", 9),
            ),
            (
                "fatal: Timeout before authentication for 192.168.1.85 port 10",
                end(None, "", "192.168.1.85", 10),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(parse(message), expected, "{message}");
        }
    }

    #[test]
    fn splits_on_whole_patterns_only() {
        assert_eq!(split_once("a fro from b", " from "), Some(("a fro", "b")));
        assert_eq!(
            rsplit_once("x from y from z", " from "),
            Some(("x from y", "z"))
        );
        assert_eq!(rsplit_once("from z", " from "), None);
        assert_eq!(
            split_once("port 22 port 23", " port "),
            Some(("port 22", "23"))
        );
        assert_eq!(split_once("é port ü", " port "), Some(("é", "ü")));
        assert_eq!(split_once("", " port "), None);
    }

    #[test]
    fn ignores_other_messages() {
        assert_eq!(parse("Server listening on 0.0.0.0 port 22."), None);
        assert_eq!(parse("Connection closed by"), None);
        assert_eq!(parse("Accepted"), None);
        assert_eq!(parse(""), None);
    }
}
