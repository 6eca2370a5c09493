//! Following connections and counting failed passwords.
//!
//! A connection is keyed by the server's hostname and sshd's PID. With
//! privilege separation some lines of a connection carry a child's PID; those
//! are matched by the remote address and port instead.

use crate::attempt::{self, Sign};
use crate::failures::{self, FailureWindow, Lockout};
use crate::keyed;
use crate::line::{self, End, Line, UserKind};
use correlator_sdk::collections::HashMap;
use correlator_sdk::text::push_integer;
use correlator_sdk::{Event, Record, Timestamp, state};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The module's configuration, checked by `init`.
pub struct Settings {
    pub failure_window_seconds: i64,
    pub failure_limit: usize,
    pub max_age_seconds: i64,
    /// Connections followed per server at most; the oldest are forgotten
    /// first beyond it.
    pub max_connections_per_server: usize,
    /// Remote addresses whose failed passwords are counted at most.
    pub max_failure_hosts: usize,
    /// What counts as an attempt.
    pub attempts: Attempts,
}

/// What counts as an attempt towards `login_failure_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    /// Failed passwords (and keyboard-interactive), as the original did.
    Passwords,
    /// Every authentication failure OpenSSH logs (`attempt.rs`).
    All,
}

/// PAM failures' users kept per connection, to tell a mistyped password
/// from users being tried.
const TRIED_USERS: usize = 4;

/// How long an ended connection is remembered, so that the second and third
/// end lines of one connection do not report it again.
const ENDED_MEMORY_SECONDS: i64 = 120;

#[derive(Default, Serialize, Deserialize)]
struct Connection {
    user: String,
    addr: String,
    port: u16,
    failures: i64,
    first_seen: i64,
    accepted: Option<Accepted>,
    session_start: Option<Timestamp>,
    ended: bool,
    /// What the broad count (`attempts = "all"`) keeps of it; boxed and
    /// only made in that mode, so that the connections a flood makes cost
    /// a pointer more each otherwise.
    probe: Option<Box<Probe>>,
}

/// A connection as the broad count sees it.
#[derive(Default, Serialize, Deserialize)]
struct Probe {
    /// A failure of it was counted: its close is not another.
    failed: bool,
    /// Failures counted once a line names its address.
    unplaced: u32,
    /// PAM failures counted once confirmed ([`Sign::PamFailure`]).
    pam_pending: u32,
    /// Users its PAM failures were for.
    tried: Vec<String>,
}

impl Probe {
    fn tried_other_than(&self, user: &str) -> bool {
        !self.tried.is_empty() && !self.tried.iter().any(|tried| tried == user)
    }
}

#[derive(Serialize, Deserialize)]
struct Accepted {
    /// One of OpenSSH's few method names, kept without an allocation
    /// when it is one of them.
    method: std::borrow::Cow<'static, str>,
    key: String,
    at: Timestamp,
}

/// The connections of one server (one syslog hostname).
#[derive(Default, Serialize, Deserialize)]
struct Server {
    /// Its number in [`Tracker::server_names`], which attempts carry
    /// instead of its name.
    id: u32,
    connections: HashMap<u32, Connection>,
    /// Remote address → (remote port, PID) of its connections, to find the
    /// connection of a line that carries a child's PID. Keyed by address
    /// alone so that a lookup needs no allocation.
    by_peer: HashMap<String, Vec<(u16, u32)>>,
    /// Ended connections (the server's [`Server::latest`] when they ended,
    /// PID), oldest first. They are forgotten by this server's own record
    /// time, so that a server whose records come late (a sender catching
    /// up, a clock behind the others) keeps them as long as one that is on
    /// time.
    ended: VecDeque<(i64, u32)>,
    /// The latest record time this server has sent (seconds). Its clock for
    /// forgetting ended connections: it never goes back, so `ended` stays
    /// in order however the server's records are ordered.
    latest: i64,
    /// (first seen, PID) of its connections in the order they were opened,
    /// oldest first, for forgetting the oldest when there are too many.
    /// Entries of connections already gone are skipped when met (and
    /// dropped all at once when they are most of it). Not saved: rebuilt
    /// from `connections` on load.
    #[serde(skip)]
    opened: VecDeque<(i64, u32)>,
}

impl Server {
    /// Ready for a record at `now`: its clock moved, and room made for a
    /// new connection. Returns how many connections were forgotten.
    fn prepare(&mut self, now: i64, settings: &Settings) -> i64 {
        self.advance(now);
        // A flood of connections that never end (an attacker can make a
        // server log them by connecting) must not grow the module past its
        // memory: the oldest are forgotten first, and counted.
        self.make_room(settings.max_connections_per_server)
    }

    /// Move this server's clock to `now` (if later), and drop ended
    /// connections once their stray end lines can no longer come.
    fn advance(&mut self, now: i64) {
        self.latest = self.latest.max(now);
        let latest = self.latest;
        while let Some(&(at, pid)) = self.ended.front() {
            if at > latest - ENDED_MEMORY_SECONDS {
                break;
            }
            self.ended.pop_front();
            if self.connections.get(&pid).is_some_and(|c| c.ended) {
                self.remove(pid);
            }
        }
    }

    /// Make room for a new connection when the server has `max` or more:
    /// forget the oldest down to nine tenths of `max` (so that this runs
    /// once per tenth of `max` new connections). Returns how many were
    /// forgotten.
    fn make_room(&mut self, max: usize) -> i64 {
        if self.connections.len() < max {
            return 0;
        }
        if self.opened.len() < self.connections.len() {
            self.rebuild_opened();
        }
        let target = max - max / 10;
        let mut evicted = 0;
        while self.connections.len() > target {
            let Some((first_seen, pid)) = self.opened.pop_front() else {
                break;
            };
            if self
                .connections
                .get(&pid)
                .is_some_and(|connection| connection.first_seen == first_seen)
            {
                self.remove(pid);
                evicted += 1;
            }
        }
        if self.opened.len() > 2 * self.connections.len() + 1024 {
            self.rebuild_opened();
        }
        evicted
    }

    /// `opened` anew from the connections (after a load, or when it holds
    /// mostly connections already gone).
    fn rebuild_opened(&mut self) {
        let mut opened: Vec<(i64, u32)> = self
            .connections
            .iter()
            .map(|(&pid, connection)| (connection.first_seen, pid))
            .collect();
        opened.sort_unstable();
        self.opened = opened.into();
    }

    fn remove(&mut self, pid: u32) {
        if let Some(connection) = self.connections.remove(&pid)
            && let Some(peers) = self.by_peer.get_mut(connection.addr.as_str())
        {
            peers.retain(|&(port, owner)| !(port == connection.port && owner == pid));
            if peers.is_empty() {
                self.by_peer.remove(connection.addr.as_str());
            }
        }
    }

    /// The PID of the connection from `addr` port `port`, if known.
    fn by_peer(&self, addr: &str, port: u16) -> Option<u32> {
        self.by_peer
            .get(addr)?
            .iter()
            .find(|&&(known, _)| known == port)
            .map(|&(_, pid)| pid)
    }
}

/// Seconds to a tenth, as a summary shows a duration: whole tenths of the
/// exact times (half a tenth rounds to even), not `{:.1}` of the float,
/// which costs more than the rest of a login's event.
struct Tenths {
    negative: bool,
    tenths: u64,
}

impl Tenths {
    fn between(start: &Timestamp, end: &Timestamp) -> Tenths {
        let nanos = (end.seconds - start.seconds)
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(end.nanoseconds) - i64::from(start.nanoseconds));
        let magnitude = nanos.unsigned_abs();
        let (whole, rest) = (magnitude / 100_000_000, magnitude % 100_000_000);
        let up = rest > 50_000_000 || (rest == 50_000_000 && whole % 2 == 1);
        Tenths {
            negative: nanos < 0,
            tenths: whole + u64::from(up),
        }
    }
}

impl Tenths {
    /// Append it as `[-]S.T`.
    fn push_to(&self, out: &mut String) {
        if self.negative {
            out.push('-');
        }
        push_integer(out, i64::try_from(self.tenths / 10).unwrap_or(i64::MAX));
        out.push('.');
        push_integer(out, i64::try_from(self.tenths % 10).unwrap_or(0));
    }
}

/// A server first seen, numbered next in `names`.
fn add_server<'a>(
    servers: &'a mut HashMap<String, Server>,
    names: &mut Vec<String>,
    hostname: &str,
) -> &'a mut Server {
    let id = u32::try_from(names.len()).unwrap_or(failures::UNKNOWN_SERVER);
    names.push(hostname.to_owned());
    servers.entry(hostname.to_owned()).or_insert(Server {
        id,
        ..Server::default()
    })
}

/// Overwrite `target` with `text`, reusing its allocation.
fn assign(target: &mut String, text: &str) {
    if target != text {
        target.clear();
        target.push_str(text);
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Statistics {
    sessions: i64,
    denied: i64,
    lockouts: i64,
    expired: i64,
    /// Connections and failure counts forgotten early to stay within
    /// `max_connections_per_server` and `max_failure_hosts`.
    evicted: i64,
}

/// The state of the OpenSSH module.
pub struct Tracker {
    settings: Settings,
    servers: HashMap<String, Server>,
    /// Server names by [`Server::id`]. Not saved: rebuilt from `servers`.
    server_names: Vec<String>,
    failures: FailureWindow,
    statistics: Statistics,
    /// Whether anything changed since the last checkpoint.
    changed: bool,
}

/// The key the tracker's state is saved under.
const STATE_KEY: &str = "tracker";

/// What a checkpoint saves: everything but the settings, which come from
/// the configuration at every start.
#[derive(Serialize)]
struct SavedRef<'a> {
    servers: &'a HashMap<String, Server>,
    failures: &'a FailureWindow,
    statistics: &'a Statistics,
}

/// [`SavedRef`], read back.
#[derive(Deserialize)]
struct Saved {
    servers: HashMap<String, Server>,
    failures: FailureWindow,
    statistics: Statistics,
}

/// How the failure counts of layouts 1 to 4 were saved (the SDK's
/// `CountOverTime<String>`: its window, then each address's attempt times).
#[derive(Default, Deserialize)]
struct OldCounts {
    _window_seconds: i64,
    hits: HashMap<String, VecDeque<i64>>,
}

/// The layout of [`STATE_VERSION`] 1, which kept every server's ended
/// connections in one list, forgotten by the latest record time of any
/// server.
mod version1 {
    use super::*;

    #[derive(Deserialize)]
    pub struct Server {
        pub connections: HashMap<u32, version3::Connection>,
        pub by_peer: HashMap<String, Vec<(u16, u32)>>,
    }

    #[derive(Deserialize)]
    pub struct Saved {
        pub servers: HashMap<String, Server>,
        pub host_failures: OldCounts,
        pub ended: VecDeque<(i64, String, u32)>,
        pub statistics: super::version2::Statistics,
    }
}

/// The layout of [`STATE_VERSION`] 2: version 3's but for the count of
/// evictions in the statistics.
mod version2 {
    use super::*;

    #[derive(Default, Deserialize)]
    pub struct Statistics {
        pub sessions: i64,
        pub denied: i64,
        pub lockouts: i64,
        pub expired: i64,
    }

    impl From<Statistics> for super::Statistics {
        fn from(old: Statistics) -> Self {
            super::Statistics {
                sessions: old.sessions,
                denied: old.denied,
                lockouts: old.lockouts,
                expired: old.expired,
                evicted: 0,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Saved {
        pub servers: HashMap<String, version3::Server>,
        pub host_failures: OldCounts,
        pub statistics: Statistics,
    }
}

/// The layout of [`STATE_VERSION`] 3: connections without what the broad
/// count keeps, and no users and servers of attempts.
mod version3 {
    use super::*;

    #[derive(Default, Deserialize)]
    pub struct Connection {
        pub user: String,
        pub addr: String,
        pub port: u16,
        pub failures: i64,
        pub first_seen: i64,
        pub accepted: Option<Accepted>,
        pub session_start: Option<Timestamp>,
        pub ended: bool,
    }

    impl From<Connection> for super::Connection {
        fn from(old: Connection) -> Self {
            super::Connection {
                user: old.user,
                addr: old.addr,
                port: old.port,
                failures: old.failures,
                first_seen: old.first_seen,
                accepted: old.accepted,
                session_start: old.session_start,
                ended: old.ended,
                probe: None,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Server {
        pub connections: HashMap<u32, Connection>,
        pub by_peer: HashMap<String, Vec<(u16, u32)>>,
        pub ended: VecDeque<(i64, u32)>,
        pub latest: i64,
    }

    impl From<Server> for version4::Server {
        fn from(old: Server) -> Self {
            version4::Server {
                connections: old
                    .connections
                    .into_iter()
                    .map(|(pid, connection)| (pid, connection.into()))
                    .collect(),
                by_peer: old.by_peer,
                ended: old.ended,
                latest: old.latest,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Saved {
        pub servers: HashMap<String, Server>,
        pub host_failures: OldCounts,
        pub statistics: super::Statistics,
    }

    impl From<Saved> for version4::Saved {
        fn from(old: Saved) -> Self {
            version4::Saved {
                servers: old
                    .servers
                    .into_iter()
                    .map(|(name, server)| (name, server.into()))
                    .collect(),
                host_failures: old.host_failures,
                details: HashMap::default(),
                statistics: old.statistics,
            }
        }
    }
}

/// The layout of [`STATE_VERSION`] 4: failure counts and the users and
/// servers of attempts in two maps, servers by name.
mod version4 {
    use super::*;

    #[derive(Deserialize)]
    pub struct Server {
        pub connections: HashMap<u32, super::Connection>,
        pub by_peer: HashMap<String, Vec<(u16, u32)>>,
        pub ended: VecDeque<(i64, u32)>,
        pub latest: i64,
    }

    /// Users and servers of one address's attempts: `(name, last seen)`,
    /// and when a login forgot the attempts before.
    #[derive(Deserialize)]
    pub struct Detail {
        pub users: Vec<(String, i64)>,
        pub servers: Vec<(String, i64)>,
        pub cleared_at: i64,
    }

    #[derive(Deserialize)]
    pub struct Saved {
        pub servers: HashMap<String, Server>,
        pub host_failures: OldCounts,
        pub details: HashMap<String, Detail>,
        pub statistics: super::Statistics,
    }
}

/// The version of the saved layout ([`crate::OpenSsh`]'s `STATE_VERSION`).
pub const STATE_VERSION: u32 = 5;

/// Version 1's state in version 3's layout: each ended connection goes to
/// its server's list (in the order it ended there), and each server's clock
/// starts at the latest time version 1 knew of it.
fn upgrade_from_version1(old: version1::Saved) -> version3::Saved {
    let mut servers: HashMap<String, version3::Server> = old
        .servers
        .into_iter()
        .map(|(hostname, server)| {
            let latest = server
                .connections
                .values()
                .map(|connection| connection.first_seen)
                .max()
                .unwrap_or(i64::MIN);
            let server = version3::Server {
                connections: server.connections,
                by_peer: server.by_peer,
                ended: VecDeque::new(),
                latest,
            };
            (hostname, server)
        })
        .collect();
    for (at, hostname, pid) in old.ended {
        if let Some(server) = servers.get_mut(&hostname) {
            server.latest = server.latest.max(at);
            server.ended.push_back((server.latest, pid));
        }
    }
    version3::Saved {
        servers,
        host_failures: old.host_failures,
        statistics: old.statistics.into(),
    }
}

/// Version 4's state in the current layout: servers numbered in the order
/// of their names; each address's attempts carry the user and the server
/// it was last seen with (version 4 did not keep them per attempt).
fn upgrade_from_version4(old: version4::Saved) -> Saved {
    let mut names: Vec<&String> = old.servers.keys().collect();
    names.sort_unstable();
    let ids: HashMap<String, u32> = names
        .into_iter()
        .zip(0..)
        .map(|(name, id)| (name.clone(), id))
        .collect();
    let mut failures = FailureWindow::default();
    let mut details = old.details;
    for (addr, times) in old.host_failures.hits {
        let detail = details.remove(&addr);
        let server = detail
            .as_ref()
            .and_then(|detail| detail.servers.iter().max_by_key(|(_, seen)| *seen))
            .and_then(|(name, _)| ids.get(name).copied())
            .unwrap_or(failures::UNKNOWN_SERVER);
        let user = detail
            .as_ref()
            .and_then(|detail| {
                detail
                    .users
                    .iter()
                    .filter(|&&(_, seen)| seen >= detail.cleared_at)
                    .max_by_key(|(_, seen)| *seen)
            })
            .map_or("", |(user, _)| user.as_str());
        let user = failures::Name::new(user);
        let hits = times
            .into_iter()
            .map(|time| failures::Hit {
                time,
                user: user.clone(),
                server,
            })
            .collect();
        failures.insert(addr, hits);
    }
    let servers = old
        .servers
        .into_iter()
        .map(|(name, server)| {
            let id = ids.get(&name).copied().unwrap_or(failures::UNKNOWN_SERVER);
            let server = Server {
                id,
                connections: server.connections,
                by_peer: server.by_peer,
                ended: server.ended,
                latest: server.latest,
                opened: VecDeque::new(),
            };
            (name, server)
        })
        .collect();
    Saved {
        servers,
        failures,
        statistics: old.statistics,
    }
}

/// Rewrite state saved at `stored_version` in the current layout.
pub fn migrate(stored_version: u32) -> Result<(), String> {
    let saved: Option<version4::Saved> = match stored_version {
        1 => state::load::<version1::Saved>(STATE_KEY)?
            .map(upgrade_from_version1)
            .map(version4::Saved::from),
        2 => state::load::<version2::Saved>(STATE_KEY)?.map(|old| {
            version4::Saved::from(version3::Saved {
                servers: old.servers,
                host_failures: old.host_failures,
                statistics: old.statistics.into(),
            })
        }),
        3 => state::load::<version3::Saved>(STATE_KEY)?.map(version4::Saved::from),
        4 => state::load::<version4::Saved>(STATE_KEY)?,
        _ => {
            return Err(format!(
                "cannot read state written at version {stored_version} (this version is {STATE_VERSION}); discard it with --discard-state"
            ));
        }
    };
    let Some(saved) = saved.map(upgrade_from_version4) else {
        return Ok(());
    };
    state::save(
        STATE_KEY,
        &SavedRef {
            servers: &saved.servers,
            failures: &saved.failures,
            statistics: &saved.statistics,
        },
    )
}

impl Tracker {
    pub fn new(settings: Settings) -> Self {
        Tracker {
            failures: FailureWindow::new(settings.failure_window_seconds),
            settings,
            servers: HashMap::default(),
            server_names: Vec::new(),
            statistics: Statistics::default(),
            changed: false,
        }
    }

    /// The tracker as the last checkpoint left it (open connections,
    /// failure windows, statistics), or a new one.
    pub fn load(settings: Settings) -> Result<Self, String> {
        let Some(saved) = state::load::<Saved>(STATE_KEY)? else {
            return Ok(Tracker::new(settings));
        };
        let mut failures = saved.failures;
        failures.set_window(settings.failure_window_seconds);
        let mut servers = saved.servers;
        let mut server_names = vec![String::new(); servers.len()];
        for (name, server) in &mut servers {
            server.rebuild_opened();
            match server_names.get_mut(server.id as usize) {
                Some(slot) if slot.is_empty() => name.clone_into(slot),
                _ => {
                    return Err(format!(
                        "saved state numbers server {name:?} {}, which is out of range or taken",
                        server.id
                    ));
                }
            }
        }
        Ok(Tracker {
            settings,
            servers,
            server_names,
            failures,
            statistics: saved.statistics,
            changed: false,
        })
    }

    /// Save the state if it changed since the last checkpoint.
    pub fn checkpoint(&mut self) -> Result<(), String> {
        if !self.changed {
            return Ok(());
        }
        state::save(
            STATE_KEY,
            &SavedRef {
                servers: &self.servers,
                failures: &self.failures,
                statistics: &self.statistics,
            },
        )?;
        self.changed = false;
        Ok(())
    }

    /// Follow one sshd record.
    pub fn observe(&mut self, record: &Record<'_>) {
        let broad = self.settings.attempts == Attempts::All;
        if broad && let Some(sign) = attempt::classify(record.message) {
            self.weigh(record, sign);
        }
        let Some(line) = line::parse(record.message) else {
            return;
        };
        let pid: u32 = record.proc_id.parse().unwrap_or(0);
        let now = record.timestamp;
        self.changed = true;
        let server = match self.servers.get_mut(record.hostname) {
            Some(server) => server,
            None => add_server(&mut self.servers, &mut self.server_names, record.hostname),
        };
        self.statistics.evicted += server.prepare(now.seconds, &self.settings);
        match line {
            Line::Accepted {
                method,
                user,
                addr,
                port,
                key,
            } => {
                let connection = open(server, pid, now);
                assign(&mut connection.user, user);
                set_peer(server, pid, addr, port);
                if let Some(connection) = server.connections.get_mut(&pid) {
                    connection.accepted = Some(Accepted {
                        method: known_method(method),
                        key: key.to_owned(),
                        at: now,
                    });
                }
                // A login forgets the address's failed passwords; counting
                // every attempt, it does not (users tried before one that
                // got in are still an attack).
                if !broad {
                    keyed::send_login(addr);
                }
            }
            Line::FailedPassword { user, addr, port } => {
                let connection = open(server, pid, now);
                assign(&mut connection.user, user);
                connection.failures += 1;
                set_peer(server, pid, addr, port);
                if !broad {
                    keyed::send_attempts(addr, user, record.hostname, 1);
                }
            }
            Line::InvalidUser { user, addr, port } => {
                let connection = open(server, pid, now);
                assign(&mut connection.user, user);
                if connection.addr.is_empty() || port != 0 {
                    set_peer(server, pid, addr, port);
                }
            }
            Line::PamAuthFailure { user, addr } => {
                let connection = open(server, pid, now);
                if connection.user.is_empty() {
                    connection.user = user.to_owned();
                }
                if connection.addr.is_empty() {
                    connection.addr = addr.to_owned();
                }
            }
            Line::SessionOpened => {
                if let Some(connection) = server.connections.get_mut(&pid)
                    && connection.accepted.is_some()
                    && !connection.ended
                {
                    connection.session_start = Some(now);
                }
            }
            Line::SessionClosed => {
                let succeeded = server
                    .connections
                    .get(&pid)
                    .is_some_and(|c| c.accepted.is_some() && !c.ended);
                if succeeded {
                    self.finish(record.hostname, pid, now);
                }
            }
            Line::End(end) => self.end(record.hostname, pid, &end, now),
        }
    }

    /// Count what `sign` says for the broad count, with what the
    /// connection's earlier lines left.
    fn weigh(&mut self, record: &Record<'_>, sign: Sign<'_>) {
        self.changed = true;
        let pid: u32 = record.proc_id.parse().unwrap_or(0);
        let now = record.timestamp;
        let server = match self.servers.get_mut(record.hostname) {
            Some(server) => server,
            None => add_server(&mut self.servers, &mut self.server_names, record.hostname),
        };
        self.statistics.evicted += server.prepare(now.seconds, &self.settings);
        // `Connection from`: a new connection under this PID.
        if matches!(sign, Sign::Peer { opens: true, .. }) {
            server.remove(pid);
        }
        let connection = open(server, pid, now);
        let named = match sign {
            Sign::Failure { addr, .. }
            | Sign::PamFailure { addr, .. }
            | Sign::Accepted { addr, .. }
            | Sign::Peer { addr, .. }
            | Sign::PreauthEnd { addr, .. }
            | Sign::End { addr } => Some(addr),
            Sign::Unplaced => None,
        };
        if let Some(addr) = named
            && connection.addr.is_empty()
        {
            connection.addr = addr.to_owned();
        }
        let probe = connection.probe.get_or_insert_with(Box::default);
        // Failures that waited for the address are counted once it is known.
        let mut count = if connection.addr.is_empty() {
            0
        } else {
            std::mem::take(&mut probe.unplaced)
        };
        let mut user = "";
        match sign {
            Sign::Failure { user: tried, .. } => {
                count += 1;
                user = tried;
            }
            Sign::Unplaced if connection.addr.is_empty() => probe.unplaced += 1,
            Sign::Unplaced => count += 1,
            Sign::PamFailure { user: tried, .. } => {
                if probe.tried_other_than(tried) {
                    count += std::mem::take(&mut probe.pam_pending) + 1;
                } else {
                    probe.pam_pending += 1;
                }
                if !probe.tried.iter().any(|known| known == tried)
                    && probe.tried.len() < TRIED_USERS
                {
                    probe.tried.push(tried.to_owned());
                }
                user = tried;
            }
            Sign::Accepted { user: got_in, .. } => {
                if probe.tried_other_than(got_in) {
                    count += std::mem::take(&mut probe.pam_pending) + 1;
                    user = got_in;
                } else {
                    probe.pam_pending = 0;
                }
            }
            Sign::Peer { .. } => {}
            Sign::PreauthEnd { user: named, .. } => {
                // Closed before authenticating: a failure, unless one of
                // this connection was counted already.
                count += std::mem::take(&mut probe.pam_pending);
                if count == 0 && !probe.failed {
                    count = 1;
                }
                user = named;
            }
            Sign::End { .. } => probe.pam_pending = 0,
        }
        if count == 0 {
            return;
        }
        probe.failed = true;
        // The line's own address, else the connection's.
        let addr = named.unwrap_or(connection.addr.as_str()).to_owned();
        keyed::send_attempts(&addr, user, record.hostname, count);
    }

    /// A keyed message for `addr` (see [`keyed`]): count its failed
    /// attempts, or forget them after a login.
    pub fn receive(&mut self, addr: &str, payload: &[u8], now: Timestamp) {
        self.changed = true;
        match keyed::Message::decode(payload) {
            Some(keyed::Message::Login) => self.failures.clear(addr),
            Some(keyed::Message::Attempts {
                times,
                server,
                user,
            }) => {
                let server = match self.servers.get(server) {
                    Some(known) => known.id,
                    // Another partition's server (workers): numbered here.
                    None => add_server(&mut self.servers, &mut self.server_names, server).id,
                };
                let times = usize::try_from(times).unwrap_or(usize::MAX);
                self.count_attempts(addr, user, server, now, times);
            }
            None => correlator_sdk::log::warn(&format!(
                "a keyed message for {addr} is not one this module sends; ignored"
            )),
        }
    }

    /// Count `times` attempts from `addr` (by `user`, on `server`) and
    /// dispatch `SSHDAttemptsExceeded` when they reach the limit.
    fn count_attempts(
        &mut self,
        addr: &str,
        user: &str,
        server: u32,
        now: Timestamp,
        times: usize,
    ) {
        let window = self.settings.failure_window_seconds;
        for _ in 0..times {
            let count = self.failures.add(addr, now.seconds, user, server);
            let forgotten = self
                .failures
                .shrink_to(self.settings.max_failure_hosts, now.seconds);
            self.statistics.evicted += i64::try_from(forgotten).unwrap_or(i64::MAX);
            if count < self.settings.failure_limit {
                continue;
            }
            // The address has the newest attempt: a flood forgets it last.
            let Lockout {
                count,
                first,
                users,
                servers,
            } = self.failures.take(addr, now.seconds).unwrap_or(Lockout {
                count,
                first: now.seconds,
                users: Vec::new(),
                servers: Vec::new(),
            });
            let mut servers: Vec<&str> = servers
                .into_iter()
                .filter_map(|id| self.server_names.get(id as usize).map(String::as_str))
                .collect();
            servers.sort_unstable();
            self.statistics.lockouts += 1;
            let what = match self.settings.attempts {
                Attempts::Passwords => "failed passwords",
                Attempts::All => "failed attempts",
            };
            let _ = Event::new(
                "SSHDAttemptsExceeded",
                format!("Host {addr} reached {count} {what} within {window} seconds"),
            )
            .text("host", addr)
            .integer("count", i64::try_from(count).unwrap_or(i64::MAX))
            .integer("window", window)
            .text(
                "users",
                users
                    .iter()
                    .map(failures::Name::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
            .text("servers", servers.join(", "))
            .timestamp(
                "first",
                Timestamp {
                    seconds: first,
                    nanoseconds: 0,
                    offset_minutes: now.offset_minutes,
                },
            )
            .timestamp("last", now)
            .dispatch();
        }
    }

    /// A line that says a connection ended.
    fn end(&mut self, hostname: &str, pid: u32, end: &End<'_>, now: Timestamp) {
        let Some(server) = self.servers.get_mut(hostname) else {
            return;
        };
        let pid = if server.connections.contains_key(&pid) {
            Some(pid)
        } else {
            server.by_peer(end.addr, end.port)
        };
        let Some(pid) = pid else {
            // A connection we never saw start: report it only if the line
            // itself says that a named user did not authenticate.
            if end.user_kind == UserKind::Unauthenticated {
                dispatch_failed(end.user, end.addr, end.port, 0);
                self.statistics.denied += 1;
            }
            return;
        };
        let Some(connection) = server.connections.get_mut(&pid) else {
            return;
        };
        if connection.ended {
            return;
        }
        if connection.accepted.is_some() {
            // With a PAM session open, `session closed` is the end (it comes
            // last); without one, the first end line is.
            if connection.session_start.is_none() {
                self.finish(hostname, pid, now);
            }
            return;
        }
        if connection.user.is_empty() {
            connection.user = end.user.to_owned();
        }
        if connection.addr.is_empty() {
            connection.addr = end.addr.to_owned();
        }
        if connection.port == 0 {
            connection.port = end.port;
        }
        connection.ended = true;
        // A user was named, or a password failed: a failed login, even
        // for an empty user name (`Invalid user  from ...`).
        if !connection.user.is_empty() || connection.failures > 0 {
            dispatch_failed(
                &connection.user,
                &connection.addr,
                connection.port,
                connection.failures,
            );
            self.statistics.denied += 1;
        }
        server.ended.push_back((server.latest, pid));
    }

    /// An authenticated connection's session is over.
    fn finish(&mut self, hostname: &str, pid: u32, now: Timestamp) {
        let Some(server) = self.servers.get_mut(hostname) else {
            return;
        };
        let Some(connection) = server.connections.get_mut(&pid) else {
            return;
        };
        let Some(accepted) = &connection.accepted else {
            return;
        };
        let start = connection.session_start.unwrap_or(accepted.at);
        let duration = now.seconds_since(&start);
        let (open, key, close) = if accepted.key.is_empty() {
            ("", "", "")
        } else {
            (" (", accepted.key.as_str(), ")")
        };
        // Pushed, not formatted: a summary per session, and `core::fmt`
        // costs a guest several times as much.
        let mut summary = String::with_capacity(128 + accepted.key.len());
        for part in [
            "User ",
            connection.user.as_str(),
            " logged in from ",
            connection.addr.as_str(),
            " port ",
        ] {
            summary.push_str(part);
        }
        push_integer(&mut summary, i64::from(connection.port));
        for part in [" by ", &accepted.method, open, key, close] {
            summary.push_str(part);
        }
        summary.push_str("; the session lasted ");
        Tenths::between(&start, &now).push_to(&mut summary);
        summary.push_str(" seconds");
        let _ = Event::new("SSHDLoginSucceeded", summary)
            .text("user", connection.user.as_str())
            .text("auth", &*accepted.method)
            .text("addr", connection.addr.as_str())
            .integer("port", i64::from(connection.port))
            .integer("failures", connection.failures)
            .timestamp("start", start)
            .timestamp("finish", now)
            .float("duration", duration)
            .text("key", accepted.key.as_str())
            .dispatch();
        self.statistics.sessions += 1;
        connection.ended = true;
        server.ended.push_back((server.latest, pid));
    }

    /// Forget connections older than `max_transaction_age`.
    pub fn expire(&mut self, now: Timestamp) {
        self.changed = true;
        let oldest = now.seconds - self.settings.max_age_seconds;
        let mut expired = 0;
        for server in self.servers.values_mut() {
            let stale: Vec<u32> = server
                .connections
                .iter()
                .filter(|(_, c)| c.first_seen < oldest)
                .map(|(&pid, _)| pid)
                .collect();
            for pid in stale {
                if server.connections.get(&pid).is_some_and(|c| !c.ended) {
                    expired += 1;
                }
                server.remove(pid);
            }
            server.ended.retain(|&(at, _)| at >= oldest);
        }
        self.statistics.expired += expired;
        self.failures.expire(now.seconds);
    }

    /// Dispatch `SSHDStats`.
    pub fn dispatch_statistics(&mut self, reset: bool) {
        let partial: usize = self
            .servers
            .values()
            .map(|s| s.connections.values().filter(|c| !c.ended).count())
            .sum();
        let Statistics {
            sessions,
            denied,
            lockouts,
            expired,
            evicted,
        } = self.statistics;
        let _ = Event::new(
            "SSHDStats",
            format!(
                "{sessions} sessions, {denied} denied, {lockouts} lockouts, {expired} expired, {partial} partial, {evicted} evicted"
            ),
        )
        .integer("sessions", sessions)
        .integer("denied", denied)
        .integer("lockouts", lockouts)
        .integer("expired", expired)
        .integer("partial", i64::try_from(partial).unwrap_or(i64::MAX))
        .integer("evicted", evicted)
        .dispatch();
        if reset {
            self.statistics = Statistics::default();
            self.changed = true;
        }
    }
}

/// `method` as a static name when it is one OpenSSH uses, else owned.
fn known_method(method: &str) -> std::borrow::Cow<'static, str> {
    const METHODS: [&str; 6] = [
        "password",
        "publickey",
        "keyboard-interactive/pam",
        "hostbased",
        "gssapi-with-mic",
        "none",
    ];
    METHODS
        .into_iter()
        .find(|known| *known == method)
        .map_or_else(|| method.to_owned().into(), std::borrow::Cow::Borrowed)
}

/// The connection of `pid`, made anew if it is unknown or ended (PIDs are
/// reused).
fn open(server: &mut Server, pid: u32, now: Timestamp) -> &mut Connection {
    if server.connections.get(&pid).is_some_and(|c| c.ended) {
        server.remove(pid);
    }
    server.connections.entry(pid).or_insert_with(|| {
        server.opened.push_back((now.seconds, pid));
        Connection {
            first_seen: now.seconds,
            ..Connection::default()
        }
    })
}

fn set_peer(server: &mut Server, pid: u32, addr: &str, port: u16) {
    let Some(connection) = server.connections.get_mut(&pid) else {
        return;
    };
    if connection.addr == addr && connection.port == port {
        return;
    }
    if let Some(peers) = server.by_peer.get_mut(connection.addr.as_str()) {
        let old_port = connection.port;
        peers.retain(|&(known, owner)| !(known == old_port && owner == pid));
    }
    assign(&mut connection.addr, addr);
    connection.port = port;
    if port == 0 {
        return;
    }
    let peers = match server.by_peer.get_mut(addr) {
        Some(peers) => peers,
        None => server.by_peer.entry(addr.to_owned()).or_default(),
    };
    peers.retain(|&(known, _)| known != port);
    peers.push((port, pid));
}

fn dispatch_failed(user: &str, addr: &str, port: u16, failures: i64) {
    let plural = if failures == 1 { "" } else { "s" };
    let (who, user_shown) = if user.is_empty() {
        ("A user with an empty name", "")
    } else {
        ("User ", user)
    };
    let mut summary = String::with_capacity(96 + user.len());
    for part in [who, user_shown, " from host ", addr, " port "] {
        summary.push_str(part);
    }
    push_integer(&mut summary, i64::from(port));
    summary.push_str(" failed to log in after ");
    push_integer(&mut summary, failures);
    summary.push_str(" failed password");
    summary.push_str(plural);
    let _ = Event::new("SSHDLoginFailed", summary)
        .text("user", user)
        .text("addr", addr)
        .integer("port", i64::from(port))
        .integer("failures", failures)
        .dispatch();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended_server(pids: &[u32]) -> version1::Server {
        let ended = || version3::Connection {
            ended: true,
            ..version3::Connection::default()
        };
        version1::Server {
            connections: pids.iter().map(|&pid| (pid, ended())).collect(),
            by_peer: HashMap::default(),
        }
    }

    #[test]
    fn version_1_ended_connections_go_to_their_servers_in_order() {
        let old = version1::Saved {
            servers: [
                ("a".to_owned(), ended_server(&[1, 3])),
                ("b".to_owned(), ended_server(&[2])),
            ]
            .into_iter()
            .collect(),
            host_failures: OldCounts::default(),
            ended: [(10, "a", 1), (11, "b", 2), (12, "a", 3), (13, "gone", 4)]
                .into_iter()
                .map(|(at, host, pid)| (at, host.to_owned(), pid))
                .collect(),
            statistics: version2::Statistics {
                sessions: 3,
                ..version2::Statistics::default()
            },
        };
        let new = upgrade_from_version1(old);
        assert_eq!(new.servers.len(), 2);
        assert_eq!(new.servers["a"].ended, [(10, 1), (12, 3)]);
        assert_eq!(new.servers["b"].ended, [(11, 2)]);
        assert_eq!((new.servers["a"].latest, new.servers["b"].latest), (12, 11));
        assert_eq!(new.servers["a"].connections.len(), 2);
        assert_eq!(new.statistics.sessions, 3);
    }

    #[test]
    fn version_4_attempts_carry_the_user_and_server_their_address_was_last_seen_with() {
        let server = || version4::Server {
            connections: HashMap::default(),
            by_peer: HashMap::default(),
            ended: VecDeque::new(),
            latest: 100,
        };
        let names = |names: &[(&str, i64)]| -> Vec<(String, i64)> {
            names
                .iter()
                .map(|&(name, at)| (name.to_owned(), at))
                .collect()
        };
        let old = version4::Saved {
            servers: [("web2".to_owned(), server()), ("web1".to_owned(), server())]
                .into_iter()
                .collect(),
            host_failures: OldCounts {
                _window_seconds: 300,
                hits: [
                    ("192.0.2.7".to_owned(), VecDeque::from([90, 100])),
                    ("192.0.2.8".to_owned(), VecDeque::from([95])),
                ]
                .into_iter()
                .collect(),
            },
            details: [(
                "192.0.2.7".to_owned(),
                version4::Detail {
                    // The latest user stands for every attempt; `oracle`
                    // was tried before a login forgot the ones before.
                    users: names(&[("admin", 99), ("root", 100), ("oracle", 40)]),
                    servers: names(&[("web1", 90), ("web2", 100)]),
                    cleared_at: 60,
                },
            )]
            .into_iter()
            .collect(),
            statistics: Statistics::default(),
        };
        let mut new = upgrade_from_version4(old);
        new.failures.set_window(300);
        // Servers are numbered in the order of their names.
        assert_eq!((new.servers["web1"].id, new.servers["web2"].id), (0, 1));
        let lockout = new.failures.take("192.0.2.7", 100).expect("kept");
        let users: Vec<&str> = lockout.users.iter().map(failures::Name::as_str).collect();
        assert_eq!((lockout.count, lockout.first), (2, 90));
        assert_eq!((users, lockout.servers), (vec!["root"], vec![1]));
        // Without details: counted, named nowhere.
        let lockout = new.failures.take("192.0.2.8", 100).expect("kept");
        assert_eq!(
            (lockout.count, lockout.users.len(), lockout.servers.len()),
            (1, 0, 0)
        );
    }

    #[test]
    fn durations_are_shown_to_the_nearest_tenth() {
        let at = |seconds, nanoseconds| Timestamp {
            seconds,
            nanoseconds,
            offset_minutes: 0,
        };
        let shown = |start, end| {
            let mut out = String::new();
            Tenths::between(&start, &end).push_to(&mut out);
            out
        };
        assert_eq!(shown(at(100, 0), at(181, 340_000_000)), "81.3");
        assert_eq!(shown(at(100, 900_000_000), at(101, 0)), "0.1");
        assert_eq!(shown(at(100, 0), at(100, 49_999_999)), "0.0");
        assert_eq!(shown(at(100, 0), at(100, 50_000_001)), "0.1");
        // Half a tenth: to even.
        assert_eq!(shown(at(100, 0), at(100, 250_000_000)), "0.2");
        assert_eq!(shown(at(100, 0), at(100, 350_000_000)), "0.4");
        // Out of order: negative, as the float's would be.
        assert_eq!(shown(at(101, 0), at(100, 0)), "-1.0");
        assert_eq!(shown(at(100, 60_000_000), at(100, 0)), "-0.1");
        assert_eq!(shown(at(100, 40_000_000), at(100, 0)), "-0.0");
    }

    #[test]
    fn a_server_with_too_many_connections_forgets_the_oldest_first() {
        let mut server = Server::default();
        for pid in 0..100 {
            open(
                &mut server,
                pid,
                Timestamp {
                    seconds: i64::from(pid),
                    nanoseconds: 0,
                    offset_minutes: 0,
                },
            );
        }
        // One gone already: it is skipped, not counted.
        server.remove(3);
        assert_eq!(server.make_room(100), 0);
        // 99 left, limit 99: down to 90, the nine oldest (3 was gone).
        assert_eq!(server.make_room(99), 9);
        let mut left: Vec<u32> = server.connections.keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, (10..100).collect::<Vec<u32>>());
    }

    #[test]
    fn a_servers_clock_never_goes_back_so_its_ended_connections_are_forgotten_in_order() {
        let mut server = Server::default();
        // Records out of order: the connection ending at 400 counts as
        // ending at 1000, the server's latest time then.
        for (pid, at) in [(1, 1000), (2, 400), (3, 1010)] {
            server.advance(at);
            let ended = Connection {
                ended: true,
                ..Connection::default()
            };
            server.connections.insert(pid, ended);
            server.ended.push_back((server.latest, pid));
        }
        assert_eq!(server.ended, [(1000, 1), (1000, 2), (1010, 3)]);
        server.advance(500);
        assert_eq!((server.latest, server.connections.len()), (1010, 3));
        // 120 s after 1000: the first two are forgotten.
        server.advance(1120);
        assert_eq!(server.ended, [(1010, 3)]);
        assert_eq!(server.connections.keys().copied().collect::<Vec<_>>(), [3]);
    }
}
