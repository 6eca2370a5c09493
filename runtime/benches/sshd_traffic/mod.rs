//! Generated sshd traffic for the benchmarks: the same capture on every
//! run, so that numbers compare.

use std::fmt::Write as _;

/// A deterministic xorshift generator: the same capture on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Servers logging, `node0` to `node63`: as many as the network benchmark's
/// largest connection count, so that each of its connections can be one
/// server sending its own log.
pub const SERVERS: u64 = 64;

/// Write `count` records of sshd traffic (plus a few other programs) to
/// `out`, one RFC 5424 line each.
pub fn generate(count: usize, out: &mut String) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut written = 0;
    let mut pid = 10_000u64;
    let mut second = 1_676_923_967u64;
    while written < count {
        pid += 1;
        second += rng.below(3);
        let host = format!("node{}", rng.below(SERVERS));
        let addr = if rng.below(5) == 0 {
            format!("2001:db8::{:x}", rng.below(4096))
        } else {
            format!("203.0.{}.{}", rng.below(64), rng.below(250))
        };
        let port = 1024 + rng.below(60_000);
        let time = format_time(second, rng.below(1_000_000));
        let mut line = |message: &str, pid: u64, out: &mut String| {
            let _ = writeln!(out, "<86>1 {time} {host} sshd {pid} - - {message}");
            written += 1;
        };
        match rng.below(10) {
            0..=2 => {
                let user = format!("user{}", rng.below(50));
                line(
                    &format!(
                        "Accepted publickey for {user} from {addr} port {port} ssh2: ED25519 SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
                    ),
                    pid,
                    out,
                );
                line(
                    &format!(
                        "pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)"
                    ),
                    pid,
                    out,
                );
                line(
                    &format!(
                        "Received disconnect from {addr} port {port}:11: disconnected by user"
                    ),
                    pid + 1,
                    out,
                );
                line(
                    &format!("Disconnected from user {user} {addr} port {port}"),
                    pid + 1,
                    out,
                );
                line(
                    &format!("pam_unix(sshd:session): session closed for user {user}"),
                    pid,
                    out,
                );
            }
            3..=6 => {
                let user = ["root", "admin", "oracle", "test", "ubuntu"][rng.below(5) as usize];
                line(
                    &format!("Invalid user {user} from {addr} port {port}"),
                    pid,
                    out,
                );
                for _ in 0..1 + rng.below(5) {
                    line(
                        &format!(
                            "Failed password for invalid user {user} from {addr} port {port} ssh2"
                        ),
                        pid,
                        out,
                    );
                }
                line(
                    &format!(
                        "Connection closed by invalid user {user} {addr} port {port} [preauth]"
                    ),
                    pid,
                    out,
                );
            }
            7..=8 => {
                line(
                    &format!("Connection closed by {addr} port {port} [preauth]"),
                    pid,
                    out,
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "<30>1 {time} {host} systemd 1 - - Started Session {pid} of user root."
                );
                written += 1;
            }
        }
    }
}

fn format_time(second: u64, micros: u64) -> String {
    let (year, month, date) = civil_from_days(second / 86_400);
    let rest = second % 86_400;
    format!(
        "{year}-{month:02}-{date:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's algorithm), so that large captures run into later months.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let date = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, date)
}
