//! What counts as an attempt when `attempts = "all"`: every way OpenSSH
//! says that an authentication, or a connection before it, failed, as
//! fail2ban's aggressive mode counts them (invalid users, PAM failures,
//! users not allowed, too many authentication failures, refused
//! connections, protocol and key-exchange failures, and connections closed
//! before authenticating).
//!
//! A line says one [`Sign`]; the tracker keeps, per connection, what a
//! sign needs from the lines around it (the address of a line that names
//! none, PAM failures waiting to be confirmed).

use crate::line::{leading_port, rsplit_once, split_once};

/// What one sshd line says, for the broad count.
#[derive(Debug, PartialEq, Eq)]
pub enum Sign<'a> {
    /// A failure from `addr` (`user` is empty when the line names none).
    Failure { addr: &'a str, user: &'a str },
    /// A failure of the line's connection, whose address another line of
    /// it names (`Disconnecting: Too many authentication failures`, a key
    /// exchange that failed).
    Unplaced,
    /// A `pam_unix` authentication failure: counted once confirmed, by a
    /// failure for another user, a login of another user, or a close
    /// before authentication (a user who mistypes and then logs in is not
    /// an attacker).
    PamFailure { addr: &'a str, user: &'a str },
    /// A login of `user` from `addr`.
    Accepted { addr: &'a str, user: &'a str },
    /// The connection's address, from a line that is no failure.
    Peer { addr: &'a str, opens: bool },
    /// The connection closed before authenticating (`[preauth]`).
    PreauthEnd { addr: &'a str, user: &'a str },
    /// The connection ended otherwise.
    End { addr: &'a str },
}

/// Read `message` for the broad count; `None` for lines that do not matter.
pub fn classify(message: &str) -> Option<Sign<'_>> {
    let message = message.trim_end();
    let (message, preauth) = match message.strip_suffix(" [preauth]") {
        Some(message) => (message, true),
        None => (message, false),
    };
    // Solaris and old macOS: `[ID 800047 auth.info] MESSAGE`.
    let message = match message.strip_prefix("[ID ") {
        Some(rest) => rest.split_once("] ").map_or(message, |(_, rest)| rest),
        None => message,
    };
    let message = message
        .strip_prefix("error: ")
        .or_else(|| message.strip_prefix("fatal: "))
        .unwrap_or(message);
    let sign = match message.as_bytes().first()? {
        b'A' => accepted(message),
        b'B' => bad_version(message),
        b'C' => connection(message, preauth),
        b'D' => disconnect(message, preauth).or_else(|| did_not_receive(message)),
        b'F' => failed(message),
        b'I' => invalid_user(message),
        b'P' => pam_error(message),
        b'R' => root_refused(message)
            .or_else(|| received_disconnect(message, preauth))
            .or_else(|| {
                message
                    .starts_with("Read from socket failed: ")
                    .then_some(Sign::Unplaced)
            }),
        b'S' => ssh_server_remote(message),
        b'T' => end_line(message, preauth),
        b'U' => user_not_allowed(message).or_else(|| unable_to_negotiate(message)),
        b'b' => banner_exchange(message),
        b'k' => key_exchange(message),
        b'm' => maximum_attempts(message),
        b'n' => message
            .starts_with("no matching ")
            .then_some(Sign::Unplaced),
        b'p' => pam_unix(message),
        b'r' => refused_connect(message),
        _ => None,
    }?;
    Some(normalised(sign))
}

/// `::ffff:192.0.2.1`, an IPv4 client of an IPv6 socket, is `192.0.2.1`:
/// one attacker, one address.
fn normalised(sign: Sign<'_>) -> Sign<'_> {
    fn plain(addr: &str) -> &str {
        match addr.strip_prefix("::ffff:") {
            Some(v4) if v4.parse::<std::net::Ipv4Addr>().is_ok() => v4,
            _ => addr,
        }
    }
    match sign {
        Sign::Failure { addr, user } => Sign::Failure {
            addr: plain(addr),
            user,
        },
        Sign::PamFailure { addr, user } => Sign::PamFailure {
            addr: plain(addr),
            user,
        },
        Sign::Accepted { addr, user } => Sign::Accepted {
            addr: plain(addr),
            user,
        },
        Sign::Peer { addr, opens } => Sign::Peer {
            addr: plain(addr),
            opens,
        },
        Sign::PreauthEnd { addr, user } => Sign::PreauthEnd {
            addr: plain(addr),
            user,
        },
        Sign::End { addr } => Sign::End { addr: plain(addr) },
        Sign::Unplaced => Sign::Unplaced,
    }
}

/// Whether `text` can be a client's address as sshd logs it: an IP
/// address, or a host name when `UseDNS` is on.
fn is_address(text: &str) -> bool {
    let dotted_quad = || {
        let parts: Vec<&str> = text.split('.').collect();
        parts.len() == 4
            && parts.iter().all(|part| {
                (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit())
            })
    };
    !text.is_empty()
        && (text.parse::<std::net::IpAddr>().is_ok()
            // Written with leading zeros (`192.030.0.6`), as some logs do.
            || dotted_quad()
            || (text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && text.bytes().any(|b| b.is_ascii_alphabetic())))
}

/// `ADDR[ port P][ sshN]` at the start of `text`: the address, the port
/// (0 when not logged) and what follows.
fn address_then(text: &str) -> Option<(&str, u16, &str)> {
    let (addr, mut rest) = text.split_once(' ').unwrap_or((text, ""));
    if !is_address(addr) {
        return None;
    }
    let mut port = 0;
    if let Some(after) = rest.strip_prefix("port ") {
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        port = after[..digits].parse().ok()?;
        rest = after[digits..].trim_start();
    }
    if let Some(after) = rest.strip_prefix("ssh")
        && after.bytes().next().is_none_or(|b| b.is_ascii_digit())
    {
        rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    Some((addr, port, rest))
}

/// `USER from ADDR[ port P][ sshN][: INFO]`. The user name is the client's
/// to choose, and so is the INFO of some methods: the address is the first
/// ` from ` that is followed by an address and then by the end or by `: `,
/// so that neither can put another address in its place.
pub(crate) fn user_from(text: &str) -> Option<(&str, &str, u16)> {
    // The common line: no `: ` before the last ` from ` (so no earlier
    // candidate can be followed by one), and the last followed by the end.
    // Taken without looking at each candidate: this runs for every failed
    // password.
    let (user, after) = rsplit_once(text, " from ")?;
    // With the space after it: `USER: from` is a `: ` too.
    if !has_info(&text.as_bytes()[..=user.len()])
        && let Some((addr, port)) = address_to_end(after)
    {
        return Some((user, addr, port));
    }
    let mut start = 0;
    while let Some((before, after)) = split_once(&text[start..], " from ") {
        let at = start + before.len();
        if let Some((addr, port, rest)) = address_then(after)
            && (rest.is_empty() || rest.starts_with(':'))
        {
            return Some((&text[..at], addr, port));
        }
        // Occurrences may share their spaces (`from from from`).
        start = at + 1;
    }
    None
}

/// Whether `text` has a `: `.
fn has_info(text: &[u8]) -> bool {
    text.windows(2).any(|pair| pair == b": ")
}

/// `ADDR[ port P][ sshN]` and nothing after, in the one form sshd writes
/// it (single spaces): the address and port (0 when not logged). `None`
/// for anything else, which [`address_then`] reads more slowly.
fn address_to_end(text: &str) -> Option<(&str, u16)> {
    let bytes = text.as_bytes();
    let addr_end = bytes.iter().position(|&b| b == b' ').unwrap_or(bytes.len());
    if addr_end == 0 {
        return None;
    }
    let mut rest = &bytes[addr_end..];
    let mut port: u16 = 0;
    if let Some(after) = rest.strip_prefix(b" port ") {
        let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for &digit in &after[..digits] {
            port = port.checked_mul(10)?.checked_add(u16::from(digit - b'0'))?;
        }
        rest = &after[digits..];
    }
    if let Some(after) = rest.strip_prefix(b" ssh") {
        let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
        rest = &after[digits..];
    }
    rest.is_empty().then(|| (&text[..addr_end], port))
}

/// `Accepted METHOD for USER from ADDR port P ssh2...`.
fn accepted(message: &str) -> Option<Sign<'_>> {
    let (_, rest) = split_once(message.strip_prefix("Accepted ")?, " for ")?;
    let (user, addr, _) = user_from(rest)?;
    Some(Sign::Accepted { addr, user })
}

/// `Bad protocol version identification 'X' from ADDR port P`.
fn bad_version(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("Bad protocol version identification ")?;
    let (_, tail) = rsplit_once(rest, " from ")?;
    let (addr, _, _) = address_then(tail)?;
    Some(Sign::Failure { addr, user: "" })
}

/// `Connection from ADDR port P[ on ...]` (a connection starts),
/// `Connection closed by ...`, `Connection reset by ...`.
fn connection(message: &str, preauth: bool) -> Option<Sign<'_>> {
    if let Some(rest) = message.strip_prefix("Connection from ") {
        let (addr, _, _) = address_then(rest)?;
        return Some(Sign::Peer { addr, opens: true });
    }
    end_line(message, preauth)
}

/// `Disconnecting: Too many authentication failures[ for U]` (no
/// address), `Disconnecting [authenticating |invalid ]user U ADDR port P:
/// WHY`, `Disconnected from ...`.
fn disconnect(message: &str, preauth: bool) -> Option<Sign<'_>> {
    if let Some(why) = message.strip_prefix("Disconnecting: ") {
        return why
            .starts_with("Too many authentication failures")
            .then_some(Sign::Unplaced);
    }
    if let Some(rest) = message.strip_prefix("Disconnecting ") {
        let (who, _) = split_once(rest, ": ").unwrap_or((rest, ""));
        let (user, addr) = user_and_address(who)?;
        return Some(Sign::Failure { addr, user });
    }
    end_line(message, preauth)
}

/// `[authenticating |invalid ]user U ADDR[ port P]` or `ADDR[ port P]`.
fn user_and_address(text: &str) -> Option<(&str, &str)> {
    let text = match rsplit_once(text, " port ") {
        Some((before, after)) if leading_port(after).is_some() => before,
        _ => text,
    };
    let named = text
        .strip_prefix("authenticating user ")
        .or_else(|| text.strip_prefix("invalid user "))
        .or_else(|| text.strip_prefix("user "));
    let (user, addr) = match named {
        Some(rest) => rest.rsplit_once(' ')?,
        None => ("", text),
    };
    is_address(addr).then_some((user, addr))
}

/// The lines that end a connection: closed, reset, disconnected, timed
/// out.
fn end_line(message: &str, preauth: bool) -> Option<Sign<'_>> {
    let rest = [
        "Connection closed by ",
        "Connection reset by ",
        "Disconnected from ",
        "Timeout, client not responding from ",
        "Timeout before authentication for ",
    ]
    .iter()
    .find_map(|prefix| message.strip_prefix(prefix))?;
    let (user, addr) = user_and_address(rest)?;
    Some(if preauth {
        Sign::PreauthEnd { addr, user }
    } else {
        Sign::End { addr }
    })
}

/// `Failed METHOD for [invalid user ]USER from ADDR ...`. A public key
/// refused for an existing user is no failure (clients offer their keys
/// one after the other); it still names the connection's address.
fn failed(message: &str) -> Option<Sign<'_>> {
    let (method, rest) = split_once(message.strip_prefix("Failed ")?, " for ")?;
    let (rest, invalid) = match rest.strip_prefix("invalid user ") {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let (user, addr, _) = user_from(rest)?;
    if method == "publickey" && !invalid {
        return Some(Sign::Peer { addr, opens: false });
    }
    Some(Sign::Failure { addr, user })
}

/// `Invalid user USER from ADDR[ port P]`.
fn invalid_user(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("Invalid user ")?;
    let (user, addr, _) = user_from(rest)?;
    Some(Sign::Failure { addr, user })
}

/// `PAM: Authentication failure for USER from HOST[ via ADDR]`, its
/// `authentication error` forms, and `PAM: User not known to the
/// underlying authentication module for illegal user USER from ADDR`.
fn pam_error(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("PAM: ")?;
    let (what, rest) = split_once(rest, " for ")?;
    let known = [
        "Authentication failure",
        "authentication failure",
        "Authentication error",
        "authentication error",
        "User not known to the underlying authentication module",
    ];
    if !known.contains(&what) {
        return None;
    }
    let rest = rest.strip_prefix("illegal user ").unwrap_or(rest);
    let (user, tail) = rsplit_once(rest, " from ")?;
    let addr = tail.split(' ').next()?;
    is_address(addr).then_some(Sign::Failure { addr, user })
}

/// `ROOT LOGIN REFUSED FROM ADDR[ port P]`.
fn root_refused(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("ROOT LOGIN REFUSED FROM ")?;
    let (addr, _, _) = address_then(rest)?;
    Some(Sign::Failure { addr, user: "root" })
}

/// `Received disconnect from ADDR[ port P]: CODE: WHY`: a failure for
/// code 3 (`Auth fail`) and 14 (no authentication method); before
/// authentication, a close; else the end of a session.
fn received_disconnect(message: &str, preauth: bool) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("Received disconnect from ")?;
    let (peer, why) = rest.split_once(':')?;
    let (addr, _, _) = address_then(peer.trim())?;
    let code = leading_port(why.trim_start());
    Some(match code {
        Some(3 | 14) => Sign::Failure { addr, user: "" },
        _ if preauth => Sign::PreauthEnd { addr, user: "" },
        _ => Sign::End { addr },
    })
}

/// `SSH: Server;Ltype: ...;Remote: ADDR-PORT;...` (a logging patch some
/// systems carry): the connection's address.
fn ssh_server_remote(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("SSH: Server;")?;
    let (_, remote) = rest.split_once(";Remote: ")?;
    let remote = remote.split(';').next()?;
    let (addr, port) = remote.rsplit_once('-')?;
    leading_port(port)?;
    is_address(addr).then_some(Sign::Peer { addr, opens: false })
}

/// `User USER from ADDR not allowed because ...`.
fn user_not_allowed(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("User ")?;
    let (who, _) = split_once(rest, " not allowed because ")?;
    let (user, addr) = rsplit_once(who, " from ")?;
    is_address(addr).then_some(Sign::Failure { addr, user })
}

/// `Unable to negotiate with ADDR port P: no matching ...`, and without
/// an address `Unable to negotiate a key exchange method`.
fn unable_to_negotiate(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("Unable to negotiate ")?;
    if let Some(rest) = rest.strip_prefix("with ") {
        let (peer, _) = rest.split_once(':')?;
        let (addr, _, _) = address_then(peer)?;
        return Some(Sign::Failure { addr, user: "" });
    }
    Some(Sign::Unplaced)
}

/// `banner exchange: Connection from ADDR port P: invalid format`.
fn banner_exchange(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("banner exchange: Connection from ")?;
    let (peer, _) = rest.split_once(':')?;
    let (addr, _, _) = address_then(peer)?;
    Some(Sign::Failure { addr, user: "" })
}

/// `kex_exchange_identification: WHY`: a client that spoke no SSH (a port
/// scan, a flood). A banner line too long is said again by the `banner
/// exchange` line that follows, which names the address.
fn key_exchange(message: &str) -> Option<Sign<'_>> {
    let why = message.strip_prefix("kex_exchange_identification: ")?;
    (!why.starts_with("banner line too long")).then_some(Sign::Unplaced)
}

/// `maximum authentication attempts exceeded for [invalid user ]USER from
/// ADDR port P ssh2`.
fn maximum_attempts(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("maximum authentication attempts exceeded for ")?;
    let rest = rest.strip_prefix("invalid user ").unwrap_or(rest);
    let (user, addr, _) = user_from(rest)?;
    Some(Sign::Failure { addr, user })
}

/// `pam_unix(sshd:auth): authentication failure; ... ruser=R rhost=ADDR
/// [user=U]`: the user is `user=`, else `ruser=`.
fn pam_unix(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("pam_unix(sshd:auth): authentication failure;")?;
    let (mut user, mut ruser, mut addr) = ("", "", "");
    for pair in rest.split_ascii_whitespace() {
        if let Some(value) = pair.strip_prefix("rhost=") {
            addr = value;
        } else if let Some(value) = pair.strip_prefix("ruser=") {
            ruser = value;
        } else if let Some(value) = pair.strip_prefix("user=") {
            user = value;
        }
    }
    let user = if user.is_empty() { ruser } else { user };
    is_address(addr).then_some(Sign::PamFailure { addr, user })
}

/// `refused connect from NAME (ADDR)` (TCP wrappers).
fn refused_connect(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("refused connect from ")?;
    let (_, inside) = rest.rsplit_once('(')?;
    let addr = inside.strip_suffix(')')?;
    is_address(addr).then_some(Sign::Failure { addr, user: "" })
}

/// `Did not receive identification string from ADDR[ port P]`: a client
/// that connected and said nothing.
fn did_not_receive(message: &str) -> Option<Sign<'_>> {
    let rest = message.strip_prefix("Did not receive identification string from ")?;
    let (addr, _, _) = address_then(rest)?;
    Some(Sign::Failure { addr, user: "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(addr: &'static str, user: &'static str) -> Option<Sign<'static>> {
        Some(Sign::Failure { addr, user })
    }

    #[test]
    fn the_address_is_the_one_no_user_name_or_info_can_forge() {
        for (line, addr, user) in [
            (
                "Failed password for invalid user test from 10.10.1.2 port 55555 ssh2 from 127.0.0.1 port 58946 ssh2",
                "127.0.0.1",
                "test from 10.10.1.2 port 55555 ssh2",
            ),
            (
                "Failed password for invalid user test from 127.0.0.1 port 58946 ssh2: from 10.10.1.2 port 55555 ssh2",
                "127.0.0.1",
                "test",
            ),
            (
                "Failed password for user from 127.0.0.1 port 20000 ssh1: ruser XX from 1.2.3.4",
                "127.0.0.1",
                "user",
            ),
            (
                "Failed password for invalid user from 10.10.1.1 from 127.0.0.1 port 58946 ssh2",
                "127.0.0.1",
                "from 10.10.1.1",
            ),
            (
                "Failed password for invalid user ROOT from aaaa:bbbb:cccc:1234::1:1",
                "aaaa:bbbb:cccc:1234::1:1",
                "ROOT",
            ),
            (
                "Bad protocol version identification 'x' from 192.0.2.1' from 69.61.56.115 port 31778",
                "69.61.56.115",
                "",
            ),
            (
                "Connection closed by authenticating user test 127.0.0.1 port 12345 192.0.2.11 port 46039 [preauth]",
                "192.0.2.11",
                "test 127.0.0.1 port 12345",
            ),
        ] {
            let sign = classify(line);
            let got = match sign {
                Some(Sign::Failure { addr, user }) | Some(Sign::PreauthEnd { addr, user }) => {
                    (addr, user)
                }
                other => panic!("{line}: {other:?}"),
            };
            assert_eq!(got, (addr, user), "{line}");
        }
    }

    #[test]
    fn every_kind_of_failure_is_a_sign() {
        let cases = [
            (
                "error: PAM: Authentication failure for stefanor from example.com",
                failure("example.com", "stefanor"),
            ),
            (
                "error: PAM: authentication error for james from example.com via 192.168.1.201",
                failure("example.com", "james"),
            ),
            (
                "ROOT LOGIN REFUSED FROM ::ffff:1.2.3.4",
                failure("1.2.3.4", "root"),
            ),
            (
                "User root from 46.45.128.3 not allowed because listed in DenyUsers",
                failure("46.45.128.3", "root"),
            ),
            (
                "refused connect from _U2F_@::ffff:218.249.210.161 (::ffff:218.249.210.161)",
                failure("218.249.210.161", ""),
            ),
            (
                "[ID 800047 auth.info] Failed keyboard-interactive for <invalid username> from 205.186.180.55 port 42742 ssh2",
                failure("205.186.180.55", "<invalid username>"),
            ),
            (
                "Disconnecting: Too many authentication failures for root [preauth]",
                Some(Sign::Unplaced),
            ),
            (
                "Disconnecting invalid user admin 192.0.2.117 port 44004: Change of username or service not allowed: (admin,ssh-connection) -> (user,ssh-connection) [preauth]",
                failure("192.0.2.117", "admin"),
            ),
            (
                "error: Received disconnect from 10.0.0.1 port 7736:3: com.jcraft.jsch.JSchException: Auth fail [preauth]",
                failure("10.0.0.1", ""),
            ),
            (
                "Received disconnect from 127.0.0.1: 14: No supported authentication methods available [preauth]",
                failure("127.0.0.1", ""),
            ),
            (
                "Received disconnect from 198.51.100.76 port 58846:11: Bye Bye [preauth]",
                Some(Sign::PreauthEnd {
                    addr: "198.51.100.76",
                    user: "",
                }),
            ),
            (
                "Received disconnect from 192.168.1.85 port 60116:11: disconnected by user",
                Some(Sign::End {
                    addr: "192.168.1.85",
                }),
            ),
            (
                "Did not receive identification string from 192.0.2.5 port 35836",
                failure("192.0.2.5", ""),
            ),
            (
                "fatal: Unable to negotiate with 192.0.2.5 port 55555: no matching everything new here found. Their offer: ...",
                failure("192.0.2.5", ""),
            ),
            (
                "fatal: Unable to negotiate a key exchange method [preauth]",
                Some(Sign::Unplaced),
            ),
            (
                "fatal: no matching mac found: client x server y [preauth]",
                Some(Sign::Unplaced),
            ),
            (
                "fatal: Read from socket failed: Connection reset by peer [preauth]",
                Some(Sign::Unplaced),
            ),
            (
                "error: kex_exchange_identification: Connection closed by remote host",
                Some(Sign::Unplaced),
            ),
            (
                "error: kex_exchange_identification: banner line too long",
                None,
            ),
            (
                "banner exchange: Connection from 192.0.2.12 port 44105: invalid format",
                failure("192.0.2.12", ""),
            ),
            (
                "SSH: Server;Ltype: Version;Remote: 127.0.0.1-1780;Protocol: 2.0;Client: libssh2_1.4.3",
                Some(Sign::Peer {
                    addr: "127.0.0.1",
                    opens: false,
                }),
            ),
            (
                "Connection from 192.0.2.16 port 51280 on 192.0.2.16 port 22 rdomain \"\"",
                Some(Sign::Peer {
                    addr: "192.0.2.16",
                    opens: true,
                }),
            ),
            (
                "Failed publickey for git from 192.0.2.1 port 57904 ssh2: ECDSA 0e:ff",
                Some(Sign::Peer {
                    addr: "192.0.2.1",
                    opens: false,
                }),
            ),
            (
                "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser=sudoer rhost=192.0.2.114",
                Some(Sign::PamFailure {
                    addr: "192.0.2.114",
                    user: "sudoer",
                }),
            ),
            (
                "Connection closed by 61.0.0.1 [preauth]",
                Some(Sign::PreauthEnd {
                    addr: "61.0.0.1",
                    user: "",
                }),
            ),
            ("User root not allowed because account is locked", None),
            ("input_userauth_request: invalid user root [preauth]", None),
            (
                "Address 1.2.3.4 maps to x.com, but this does not map back to the address - POSSIBLE BREAK-IN ATTEMPT!",
                None,
            ),
            (
                "Postponed publickey for git from 192.0.2.1 port 57904 ssh2 [preauth]",
                None,
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(classify(line), expected, "{line}");
        }
    }
}
