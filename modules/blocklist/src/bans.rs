//! The addresses banned, until when (record time), and the files that tell
//! a firewall: pure logic, tested natively.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// An address range never banned (`10.0.0.0/8`, `2001:db8::/32`, or one
/// address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `ADDRESS[/PREFIX]`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("\"{text}\" is not an address or ADDRESS/PREFIX"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("\"{text}\": the prefix must be 0 to {bits}"))?,
        };
        Ok(Cidr {
            network: network.to_canonical(),
            prefix,
        })
    }

    /// Whether `address` is inside.
    pub fn contains(&self, address: IpAddr) -> bool {
        let masked = |bits: u128, width: u32| {
            let shift = width - u32::from(self.prefix);
            if shift >= 128 { 0 } else { bits >> shift }
        };
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                masked(u128::from(u32::from(network)), 32)
                    == masked(u128::from(u32::from(address)), 32)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                masked(u128::from(network), 128) == masked(u128::from(address), 128)
            }
            _ => false,
        }
    }
}

/// How long a ban lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanTime {
    /// This many seconds of record time.
    Seconds(i64),
    /// Until the address is removed by hand.
    Forever,
}

/// The banned addresses: until when each is banned (seconds since the
/// epoch, record time), `None` for ever.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Bans {
    until: BTreeMap<IpAddr, Option<i64>>,
}

impl Bans {
    /// Ban `address` from `at` for `time`; a ban already longer stays.
    /// Returns whether anything changed.
    pub fn ban(&mut self, address: IpAddr, at: i64, time: BanTime) -> bool {
        let until = match time {
            BanTime::Seconds(seconds) => Some(at.saturating_add(seconds)),
            BanTime::Forever => None,
        };
        let address = address.to_canonical();
        match self.until.get(&address) {
            // Already for ever, or already at least as long.
            Some(None) => false,
            Some(Some(current)) if until.is_some_and(|until| until <= *current) => false,
            _ => {
                self.until.insert(address, until);
                true
            }
        }
    }

    /// Lift the bans that end by `now`; returns whether any did.
    pub fn expire(&mut self, now: i64) -> bool {
        let before = self.until.len();
        self.until
            .retain(|_, until| until.is_none_or(|until| until > now));
        self.until.len() != before
    }

    /// The plain list: one address a line, in order.
    pub fn render_list(&self) -> String {
        let mut text = String::new();
        for address in self.until.keys() {
            let _ = writeln!(text, "{address}");
        }
        text
    }

    /// Seconds left of each ban at `now` (at least 1; `None` for ever), by
    /// address family.
    fn remaining(&self, now: i64, v4: bool) -> impl Iterator<Item = (IpAddr, Option<i64>)> + '_ {
        self.until
            .iter()
            .filter(move |(address, _)| address.is_ipv4() == v4)
            .map(move |(address, until)| (*address, until.map(|until| (until - now).max(1))))
    }

    /// An nftables file for `nft -f`: table `inet TABLE` replaced whole (one
    /// transaction), with the sets `SET_v4` and `SET_v6` (each element with
    /// the time its ban has left at `now`) and, with `drop_chain`, a chain
    /// that drops what comes from them.
    pub fn render_nftables(&self, now: i64, table: &str, set: &str, drop_chain: bool) -> String {
        let mut text =
            String::from("# Written by correlator's blocklist handler; load with: nft -f FILE\n");
        let _ = writeln!(text, "table inet {table}");
        let _ = writeln!(text, "delete table inet {table}");
        let _ = writeln!(text, "table inet {table} {{");
        for (v4, suffix, kind) in [(true, "v4", "ipv4_addr"), (false, "v6", "ipv6_addr")] {
            let _ = writeln!(text, "\tset {set}_{suffix} {{");
            let _ = writeln!(text, "\t\ttype {kind}");
            text.push_str("\t\tflags timeout\n");
            let elements: Vec<String> = self
                .remaining(now, v4)
                .map(|(address, left)| match left {
                    Some(seconds) => format!("{address} timeout {seconds}s"),
                    None => address.to_string(),
                })
                .collect();
            if !elements.is_empty() {
                let _ = writeln!(text, "\t\telements = {{ {} }}", elements.join(", "));
            }
            text.push_str("\t}\n");
        }
        if drop_chain {
            text.push_str("\tchain input {\n");
            text.push_str("\t\ttype filter hook input priority filter - 1; policy accept;\n");
            let _ = writeln!(text, "\t\tip saddr @{set}_v4 drop");
            let _ = writeln!(text, "\t\tip6 saddr @{set}_v6 drop");
            text.push_str("\t}\n");
        }
        text.push_str("}\n");
        text
    }

    /// An ipset file for `ipset restore`: the sets `SET_v4` and `SET_v6`,
    /// each filled as a temporary set and swapped in (so that the kernel's
    /// set is never seen half filled), elements with the time their ban has
    /// left at `now` (0: for ever).
    pub fn render_ipset(&self, now: i64, set: &str) -> String {
        let mut text = String::new();
        for (v4, suffix, family) in [(true, "v4", "inet"), (false, "v6", "inet6")] {
            let name = format!("{set}_{suffix}");
            let temporary = format!("{set}_{suffix}_new");
            let create = |text: &mut String, name: &str| {
                let _ = writeln!(
                    text,
                    "create {name} hash:ip family {family} timeout 0 -exist"
                );
            };
            create(&mut text, &temporary);
            let _ = writeln!(text, "flush {temporary}");
            for (address, left) in self.remaining(now, v4) {
                let _ = writeln!(
                    text,
                    "add {temporary} {address} timeout {} -exist",
                    left.unwrap_or(0)
                );
            }
            create(&mut text, &name);
            let _ = writeln!(text, "swap {temporary} {name}");
            let _ = writeln!(text, "destroy {temporary}");
        }
        text
    }

    /// What the handler keeps between runs: the stream time it last saw,
    /// then each ban (`ADDRESS UNTIL`, `never` for ever).
    pub fn render_state(&self, now: i64) -> String {
        let mut text = format!("now {now}\n");
        for (address, until) in &self.until {
            match until {
                Some(until) => {
                    let _ = writeln!(text, "{address} {until}");
                }
                None => {
                    let _ = writeln!(text, "{address} never");
                }
            }
        }
        text
    }

    /// Read what [`Bans::render_state`] wrote: the bans and the time last
    /// seen. Lines that do not parse are returned to be reported (the rest
    /// is kept).
    pub fn parse_state(text: &str) -> (Bans, i64, Vec<String>) {
        let mut bans = Bans::default();
        let mut now = i64::MIN;
        let mut bad = Vec::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let mut parts = line.split_whitespace();
            let parsed = match (parts.next(), parts.next(), parts.next()) {
                (Some("now"), Some(seconds), None) => seconds.parse().ok().map(|seconds| {
                    now = seconds;
                }),
                (Some(address), Some(until), None) => {
                    let until = match until {
                        "never" => Some(None),
                        seconds => seconds.parse().ok().map(Some),
                    };
                    address
                        .parse::<IpAddr>()
                        .ok()
                        .zip(until)
                        .map(|(address, until)| {
                            bans.until.insert(address.to_canonical(), until);
                        })
                }
                _ => None,
            };
            if parsed.is_none() {
                bad.push(line.to_owned());
            }
        }
        (bans, now, bad)
    }
}

/// Whether `name` may name an nftables table or set, or an ipset: letters,
/// digits and `_`, starting with a letter, at most 24 characters (ipset's
/// limit is 31, with `_v4_new` added).
pub fn valid_set_name(name: &str) -> bool {
    (1..=24).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn cidrs_contain_what_their_prefix_covers() {
        let private = Cidr::parse("10.0.0.0/8").expect("valid");
        assert!(private.contains(ip("10.200.3.4")));
        assert!(!private.contains(ip("11.0.0.1")));
        assert!(private.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        let one = Cidr::parse("192.0.2.7").expect("valid");
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        let documentation = Cidr::parse(" 2001:db8::/32 ").expect("valid");
        assert!(documentation.contains(ip("2001:db8:1::5")));
        assert!(!documentation.contains(ip("2001:db9::5")));
        assert!(!documentation.contains(ip("10.0.0.1")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("valid")
                .contains(ip("8.8.8.8"))
        );
        assert_eq!(
            Cidr::parse("10.0.0.0/33"),
            Err("\"10.0.0.0/33\": the prefix must be 0 to 32".to_owned())
        );
        assert_eq!(
            Cidr::parse("ten/8"),
            Err("\"ten/8\" is not an address or ADDRESS/PREFIX".to_owned())
        );
    }

    #[test]
    fn a_ban_is_extended_never_shortened_and_ends_by_record_time() {
        let mut bans = Bans::default();
        assert!(bans.ban(ip("192.0.2.7"), 100, BanTime::Seconds(600)));
        assert!(
            !bans.ban(ip("192.0.2.7"), 50, BanTime::Seconds(600)),
            "shorter"
        );
        assert!(
            bans.ban(ip("::ffff:192.0.2.7"), 200, BanTime::Seconds(600)),
            "longer"
        );
        assert!(bans.ban(ip("2001:db8::1"), 100, BanTime::Forever));
        assert!(!bans.ban(ip("2001:db8::1"), 900, BanTime::Seconds(10)));
        assert_eq!(bans.render_list(), "192.0.2.7\n2001:db8::1\n");
        assert!(!bans.expire(799));
        assert!(bans.expire(800));
        assert_eq!(bans.render_list(), "2001:db8::1\n");
        assert!(!bans.expire(i64::MAX - 1), "for ever");
    }

    #[test]
    fn the_files_say_each_ban_with_the_time_it_has_left() {
        let mut bans = Bans::default();
        bans.ban(ip("198.51.100.9"), 1_000, BanTime::Seconds(600));
        bans.ban(ip("192.0.2.7"), 1_000, BanTime::Seconds(60));
        bans.ban(ip("2001:db8::1"), 1_000, BanTime::Forever);
        assert_eq!(bans.render_list(), "192.0.2.7\n198.51.100.9\n2001:db8::1\n");
        assert_eq!(
            bans.render_nftables(1_030, "correlator", "blocklist", true),
            "# Written by correlator's blocklist handler; load with: nft -f FILE\n\
             table inet correlator\n\
             delete table inet correlator\n\
             table inet correlator {\n\
             \tset blocklist_v4 {\n\
             \t\ttype ipv4_addr\n\
             \t\tflags timeout\n\
             \t\telements = { 192.0.2.7 timeout 30s, 198.51.100.9 timeout 570s }\n\
             \t}\n\
             \tset blocklist_v6 {\n\
             \t\ttype ipv6_addr\n\
             \t\tflags timeout\n\
             \t\telements = { 2001:db8::1 }\n\
             \t}\n\
             \tchain input {\n\
             \t\ttype filter hook input priority filter - 1; policy accept;\n\
             \t\tip saddr @blocklist_v4 drop\n\
             \t\tip6 saddr @blocklist_v6 drop\n\
             \t}\n\
             }\n"
        );
        assert_eq!(
            bans.render_ipset(1_030, "blocklist"),
            "create blocklist_v4_new hash:ip family inet timeout 0 -exist\n\
             flush blocklist_v4_new\n\
             add blocklist_v4_new 192.0.2.7 timeout 30 -exist\n\
             add blocklist_v4_new 198.51.100.9 timeout 570 -exist\n\
             create blocklist_v4 hash:ip family inet timeout 0 -exist\n\
             swap blocklist_v4_new blocklist_v4\n\
             destroy blocklist_v4_new\n\
             create blocklist_v6_new hash:ip family inet6 timeout 0 -exist\n\
             flush blocklist_v6_new\n\
             add blocklist_v6_new 2001:db8::1 timeout 0 -exist\n\
             create blocklist_v6 hash:ip family inet6 timeout 0 -exist\n\
             swap blocklist_v6_new blocklist_v6\n\
             destroy blocklist_v6_new\n"
        );
        let empty = Bans::default().render_nftables(0, "t", "s", false);
        assert!(!empty.contains("elements"), "nft refuses an empty list");
        assert!(!empty.contains("chain"));
    }

    #[test]
    fn the_state_reads_back_what_it_wrote_and_names_what_it_cannot() {
        let mut bans = Bans::default();
        bans.ban(ip("192.0.2.7"), 1_000, BanTime::Seconds(60));
        bans.ban(ip("2001:db8::1"), 1_000, BanTime::Forever);
        let text = bans.render_state(1_010);
        assert_eq!(text, "now 1010\n192.0.2.7 1060\n2001:db8::1 never\n");
        assert_eq!(Bans::parse_state(&text), (bans.clone(), 1_010, Vec::new()));
        let (read, now, bad) = Bans::parse_state(&format!("{text}garbage here\n1.2.3 5\n"));
        assert_eq!((read, now), (bans, 1_010));
        assert_eq!(bad, ["garbage here", "1.2.3 5"]);
    }

    #[test]
    fn set_names_cannot_carry_syntax() {
        assert!(valid_set_name("correlator_blocklist"));
        for bad in ["", "1abc", "a b", "a;flush ruleset", "a}", &"a".repeat(25)] {
            assert!(!valid_set_name(bad), "{bad}");
        }
    }
}
