//! Failed attempts per remote address within the failure window, with the
//! users they were for and the servers they were made on: what
//! `SSHDAttemptsExceeded` reports when an address reaches the limit.
//!
//! One map entry per address holds all of it, and each attempt its user
//! and server, in one list: an attempt costs one lookup and touches one
//! allocation (this runs for every failed password, and the addresses of a
//! busy log do not fit in a cache), and an address that is forgotten (a
//! login, a lockout, the window passing, a flood of addresses) takes
//! everything of it along. An address has at most `login_failure_limit`
//! attempts in memory: reaching it locks the address out and forgets it.

use correlator_sdk::collections::HashMap;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Users an event names at most, those of the latest attempts.
pub const USERS_NAMED: usize = 8;

/// Servers an event names at most, those of the latest attempts.
pub const SERVERS_NAMED: usize = 8;

/// Bytes of a user name kept. The name is the client's to choose, and a
/// flood of addresses each trying long names must not take the module past
/// its memory: longer names are cut on a character boundary and end in
/// `…`.
pub const USER_BYTES: usize = 64;

/// The server of an attempt counted before servers were kept (state
/// migrated from an older layout): counted, but named nowhere.
pub const UNKNOWN_SERVER: u32 = u32::MAX;

/// A user name as an attempt keeps it: in place when short (most are), so
/// that counting an attempt allocates nothing more.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Name {
    Short { len: u8, bytes: [u8; SHORT_NAME] },
    Long(Box<str>),
}

/// Bytes of a name kept in place.
const SHORT_NAME: usize = 22;

impl Name {
    /// `user`, cut to [`USER_BYTES`] (with `…`) when longer.
    pub(crate) fn new(user: &str) -> Name {
        if user.len() <= SHORT_NAME {
            let mut bytes = [0; SHORT_NAME];
            bytes[..user.len()].copy_from_slice(user.as_bytes());
            // At most SHORT_NAME (22), so it fits.
            let len = user.len() as u8;
            return Name::Short { len, bytes };
        }
        if user.len() <= USER_BYTES {
            return Name::Long(user.into());
        }
        let mut end = USER_BYTES - '…'.len_utf8();
        while !user.is_char_boundary(end) {
            end -= 1;
        }
        Name::Long(format!("{}…", &user[..end]).into())
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Copied from a `&str` on a character boundary (see `new`).
            Name::Short { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Name::Long(name) => name,
        }
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(Name::new(&name))
    }
}

/// One failed attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Hit {
    pub(crate) time: i64,
    /// Empty when the line names none.
    pub(crate) user: Name,
    pub(crate) server: u32,
}

/// One address's attempts within the window, oldest first.
pub(crate) type Attempts = VecDeque<Hit>;

/// What an address had done when it reached the limit.
#[derive(Debug, PartialEq, Eq)]
pub struct Lockout {
    /// Attempts within the window.
    pub count: usize,
    /// The time of the oldest of them.
    pub first: i64,
    /// Users of the latest attempts, at most [`USERS_NAMED`], sorted.
    pub users: Vec<Name>,
    /// Servers (as [`crate::tracker`] numbers them) of the latest attempts,
    /// at most [`SERVERS_NAMED`], the latest first (the tracker sorts their
    /// names).
    pub servers: Vec<u32>,
}

/// Failed attempts per address over the last `window_seconds` of record
/// time.
#[derive(Default, Serialize, Deserialize)]
pub struct FailureWindow {
    /// From the configuration at every start, not saved.
    #[serde(skip)]
    window_seconds: i64,
    by_addr: HashMap<String, Attempts>,
    /// The time of the latest attempt counted: how far the attempts'
    /// own clock has come (not saved: until the next attempt after a
    /// start, nothing is forgotten by time).
    #[serde(skip)]
    latest: i64,
}

impl FailureWindow {
    /// An empty window of `window_seconds`.
    pub fn new(window_seconds: i64) -> Self {
        FailureWindow {
            window_seconds,
            by_addr: HashMap::default(),
            latest: i64::MIN,
        }
    }

    /// Count over `window_seconds` from now on (loaded from state, or
    /// migrated).
    pub fn set_window(&mut self, window_seconds: i64) {
        self.window_seconds = window_seconds;
    }

    /// Addresses in memory with attempts from older layouts, for migrations.
    pub(crate) fn insert(&mut self, addr: String, attempts: Attempts) {
        self.by_addr.insert(addr, attempts);
    }

    /// Count an attempt from `addr` by `user` on `server` at `time` and
    /// return the attempts within the window ending there: those at most
    /// `window_seconds` before it, not as old as that.
    pub fn add(&mut self, addr: &str, time: i64, user: &str, server: u32) -> usize {
        let window = self.window_seconds;
        let hits = match self.by_addr.get_mut(addr) {
            Some(hits) => hits,
            None => {
                // Most addresses fail once or twice.
                let hits = VecDeque::with_capacity(1);
                self.by_addr.entry(addr.to_owned()).or_insert(hits)
            }
        };
        self.latest = self.latest.max(time);
        while hits.front().is_some_and(|hit| hit.time <= time - window) {
            hits.pop_front();
        }
        hits.push_back(Hit {
            time,
            user: Name::new(user),
            server,
        });
        hits.len()
    }

    /// Attempts counted for `addr`.
    #[cfg(test)]
    pub fn count(&self, addr: &str) -> usize {
        self.by_addr.get(addr).map_or(0, VecDeque::len)
    }

    /// Forget `addr` (it logged in).
    pub fn clear(&mut self, addr: &str) {
        self.by_addr.remove(addr);
    }

    /// Forget `addr` and say what it did.
    pub fn take(&mut self, addr: &str, now: i64) -> Option<Lockout> {
        let hits = self.by_addr.remove(addr)?;
        let mut users: Vec<Name> = Vec::with_capacity(USERS_NAMED);
        let mut servers: Vec<u32> = Vec::with_capacity(SERVERS_NAMED);
        for hit in hits.iter().rev() {
            if users.len() < USERS_NAMED
                && !hit.user.as_str().is_empty()
                && !users.contains(&hit.user)
            {
                users.push(hit.user.clone());
            }
            if servers.len() < SERVERS_NAMED
                && hit.server != UNKNOWN_SERVER
                && !servers.contains(&hit.server)
            {
                servers.push(hit.server);
            }
        }
        users.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        Some(Lockout {
            count: hits.len(),
            first: hits.front().map_or(now, |hit| hit.time),
            users,
            servers,
        })
    }

    /// Forget every address whose latest attempt left the window before
    /// `time`, bounding memory for addresses that stop; or before the
    /// latest attempt counted, if that is earlier. Attempts have a clock
    /// of their own: on a worker they come from every partition, each
    /// once every partition has passed it, so they lag behind this
    /// partition's records (whose ticks call this), and an attempt still
    /// to come must find its address's earlier ones.
    pub fn expire(&mut self, time: i64) {
        let time = time.min(self.latest);
        let window = self.window_seconds;
        self.by_addr
            .retain(|_, hits| hits.back().is_some_and(|hit| hit.time > time - window));
    }

    /// Keep at most `max_addrs` addresses, so that a flood of addresses
    /// cannot grow the window without bound: once there are more, those out
    /// of the window at `time` are forgotten, then, if still too many,
    /// those whose latest attempt is oldest, down to nine tenths of
    /// `max_addrs` (so that this runs once per tenth of `max_addrs` new
    /// addresses, not for every one). Returns how many were forgotten
    /// before their time.
    pub fn shrink_to(&mut self, max_addrs: usize, time: i64) -> usize {
        if self.by_addr.len() <= max_addrs {
            return 0;
        }
        self.expire(time);
        let target = max_addrs - max_addrs / 10;
        if self.by_addr.len() <= target {
            return 0;
        }
        correlator_sdk::collections::forget_oldest(&mut self.by_addr, target, |hits| {
            hits.back().map_or(i64::MIN, |hit| hit.time)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(users: &[Name]) -> Vec<&str> {
        users.iter().map(Name::as_str).collect()
    }

    #[test]
    fn attempts_that_come_late_still_find_their_address_after_a_tick() {
        let mut window = FailureWindow::new(300);
        assert_eq!(window.add("192.0.2.1", 1_000, "root", 0), 1);
        // The partition's own records are at 2,000; the attempts, which
        // wait for every partition, only at 1,000.
        window.expire(2_000);
        assert_eq!(window.add("192.0.2.1", 1_100, "root", 1), 2);
        // Attempts pass 1,400 (an hour of the partition's records later):
        // the address's last attempt (1,100) has left their window.
        assert_eq!(window.add("192.0.2.2", 1_400, "root", 0), 1);
        window.expire(5_000);
        assert_eq!(window.count("192.0.2.1"), 0);
        assert_eq!(window.count("192.0.2.2"), 1);
    }

    #[test]
    fn attempts_leave_the_window_and_a_lockout_says_who_and_where() {
        let mut window = FailureWindow::new(300);
        assert_eq!(window.add("192.0.2.1", 1_000, "root", 0), 1);
        assert_eq!(window.add("192.0.2.1", 1_200, "admin", 1), 2);
        assert_eq!(window.add("192.0.2.1", 1_250, "root", 0), 3);
        // 300 s after the first, the first has left the window.
        assert_eq!(window.add("192.0.2.1", 1_300, "test", 2), 3);
        let lockout = window.take("192.0.2.1", 1_300).expect("counted");
        assert_eq!((lockout.count, lockout.first), (3, 1_200));
        assert_eq!(names(&lockout.users), ["admin", "root", "test"]);
        assert_eq!(lockout.servers, [2, 0, 1]);
        assert_eq!(window.count("192.0.2.1"), 0);
        assert_eq!(window.take("192.0.2.1", 1_300), None);
    }

    #[test]
    fn users_of_attempts_that_left_the_window_are_not_named() {
        let mut window = FailureWindow::new(300);
        window.add("192.0.2.1", 1_000, "old", 0);
        window.add("192.0.2.1", 1_400, "new", 0);
        window.add("192.0.2.1", 1_401, "", 0);
        let lockout = window.take("192.0.2.1", 1_401).expect("counted");
        assert_eq!((lockout.count, names(&lockout.users)), (2, vec!["new"]));
    }

    #[test]
    fn a_lockout_names_the_latest_users_and_long_names_are_cut() {
        let mut window = FailureWindow::new(300);
        for n in 0..10 {
            window.add("192.0.2.1", 1_000 + n, &format!("u{n}"), 0);
        }
        let long = "é".repeat(40);
        window.add("192.0.2.1", 1_010, &long, UNKNOWN_SERVER);
        let lockout = window.take("192.0.2.1", 1_010).expect("counted");
        let cut = format!("{}…", "é".repeat(30));
        let mut expected: Vec<String> = (3..10).map(|n| format!("u{n}")).collect();
        expected.push(cut);
        expected.sort_unstable();
        assert_eq!(names(&lockout.users), expected);
        assert_eq!(lockout.servers, [0]);
        assert_eq!(lockout.count, 11);
    }

    #[test]
    fn names_keep_their_text_in_place_or_not() {
        for user in [
            "",
            "root",
            "a-name-of-22-bytes-xyz",
            "a-name-of-23-bytes-xyz!",
        ] {
            let name = Name::new(user);
            assert_eq!(name.as_str(), user);
            let saved = postcard::to_allocvec(&name).expect("serialise");
            let loaded: Name = postcard::from_bytes(&saved).expect("deserialise");
            assert_eq!(loaded.as_str(), user);
        }
        assert!(matches!(
            Name::new("a-name-of-22-bytes-xyz"),
            Name::Short { .. }
        ));
        assert!(matches!(
            Name::new("a-name-of-23-bytes-xyz!"),
            Name::Long(_)
        ));
    }

    #[test]
    fn a_flood_of_addresses_forgets_those_seen_longest_ago() {
        let mut window = FailureWindow::new(300);
        for n in 0..20 {
            window.add(&format!("192.0.2.{n}"), 1_000 + n, "root", 0);
        }
        assert_eq!(window.shrink_to(10, 1_020), 11);
        assert_eq!(window.by_addr.len(), 9);
        // The newest are kept.
        assert_eq!(
            (window.count("192.0.2.19"), window.count("192.0.2.10")),
            (1, 0)
        );
        // Past the window of the attempts' clock, all go, and are not
        // counted as forgotten early.
        window.expire(1_400);
        assert_eq!(window.by_addr.len(), 9, "no attempt came since 1,019");
        window.add("192.0.2.99", 1_400, "root", 0);
        window.expire(1_400);
        assert_eq!(window.by_addr.len(), 1);
    }
}
