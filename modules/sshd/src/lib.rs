//! The OpenSSH logic module: follows every sshd connection from its first
//! line to its last, across the privilege-separated child's PID, and counts
//! failed passwords per remote host in a window of record time.
//!
//! Events: `SSHDLoginSucceeded` when an authenticated connection's session
//! closes, `SSHDLoginFailed` when a connection that named a user ends without
//! authenticating, `SSHDAttemptsExceeded` when a host's failed passwords
//! within `login_failure_window` seconds reach `login_failure_limit`, and
//! `SSHDStats` on request.
//!
//! What it follows is bounded whatever the log says, since anyone who can
//! connect to a server can make it log lines: at most
//! `max_connections_per_server` open connections per server and
//! `max_failure_hosts` addresses with failed passwords, the oldest
//! forgotten first and counted in `SSHDStats` as `evicted`.

mod attempt;
mod failures;
mod keyed;
mod line;
mod tracker;

use correlator_sdk::{
    ConfigItem, Descriptor, EventType, Module, Record, Severity, Tick, TickKind, Timestamp,
    export_module,
};
use tracker::{Attempts, Settings, Tracker};

/// Program names OpenSSH logs under: `sshd`, and since 9.8 the per-session
/// `sshd-session` and `sshd-auth` binaries.
fn is_sshd(app_name: &str) -> bool {
    app_name.eq_ignore_ascii_case("sshd")
        || app_name.eq_ignore_ascii_case("sshd-session")
        || app_name.eq_ignore_ascii_case("sshd-auth")
}

struct OpenSsh {
    tracker: Tracker,
}

impl Module for OpenSsh {
    fn describe() -> Descriptor {
        Descriptor::new(
            "sshd",
            "OpenSSH logins: sessions, failed logins and password guessing",
        )
        .config(ConfigItem::integer(
            "login_failure_window",
            300,
            "seconds of record time in which failed passwords from one host are counted",
        ))
        .config(ConfigItem::integer(
            "login_failure_limit",
            5,
            "attempts (what counts: see attempts) from one host within the window that dispatch SSHDAttemptsExceeded",
        ))
        .config(ConfigItem::text(
            "attempts",
            "passwords",
            "what counts towards login_failure_limit: \"passwords\" (failed passwords and keyboard-interactive) or \"all\" (every authentication failure OpenSSH logs: invalid users, PAM failures, users not allowed, too many authentication failures, refused connections, key-exchange failures, connections closed before authenticating)",
        ))
        .config(ConfigItem::integer(
            "max_transaction_age",
            2880,
            "minutes after which an unfinished connection is forgotten by the hourly maintenance",
        ))
        .config(ConfigItem::integer(
            "max_connections_per_server",
            20_000,
            "connections followed per server at most; beyond it the oldest are forgotten first (counted as evicted)",
        ))
        .config(ConfigItem::integer(
            "max_failure_hosts",
            100_000,
            "remote addresses whose failed passwords are counted at most; beyond it those seen longest ago are forgotten first (counted as evicted)",
        ))
        .event(
            EventType::new(
                "SSHDLoginSucceeded",
                Severity::Info,
                "a user logged in and the session closed",
            )
            .text("user", "user name")
            .text(
                "auth",
                "authentication method: password, publickey, keyboard-interactive/pam, ...",
            )
            .text("addr", "remote address")
            .integer("port", "remote port")
            .integer(
                "failures",
                "failed passwords of this connection before it was accepted",
            )
            .timestamp("start", "when the session opened")
            .timestamp("finish", "when the session closed")
            .float("duration", "session length in seconds")
            .text(
                "key",
                "key type and fingerprint for public keys, empty otherwise",
            ),
        )
        .event(
            EventType::new(
                "SSHDLoginFailed",
                Severity::Error,
                "a connection named a user and ended without authenticating",
            )
            .text("user", "user name tried")
            .text("addr", "remote address")
            .integer("port", "remote port (0 when sshd did not log it)")
            .integer("failures", "failed passwords of this connection"),
        )
        .event(
            EventType::new(
                "SSHDAttemptsExceeded",
                Severity::Error,
                "a host reached the failed-password limit within the window",
            )
            .text("host", "remote address")
            .integer("count", "attempts counted within the window")
            .integer("window", "the window, seconds (login_failure_window)")
            .text(
                "users",
                "users tried within the window, comma-separated (the latest 8)",
            )
            .text(
                "servers",
                "servers tried within the window, comma-separated (the latest 8)",
            )
            .timestamp("first", "the first attempt counted")
            .timestamp("last", "the attempt that reached the limit"),
        )
        .event(
            EventType::new("SSHDStats", Severity::Info, "counts since the last reset")
                .integer("sessions", "successful login sessions")
                .integer("denied", "failed logins")
                .integer("lockouts", "SSHDAttemptsExceeded events")
                .integer("expired", "connections forgotten by maintenance")
                .integer("partial", "connections still open")
                .integer(
                    "evicted",
                    "connections and failure counts forgotten early to stay within the module's bounds",
                ),
        )
    }

    fn init() -> Result<Self, String> {
        let window = correlator_sdk::config::integer("login_failure_window")?;
        let limit = correlator_sdk::config::integer("login_failure_limit")?;
        let max_age = correlator_sdk::config::integer("max_transaction_age")?;
        if window <= 0 {
            return Err(format!(
                "login_failure_window must be positive, not {window}"
            ));
        }
        let limit = usize::try_from(limit)
            .ok()
            .filter(|&limit| limit > 0)
            .ok_or_else(|| format!("login_failure_limit must be positive, not {limit}"))?;
        if max_age <= 0 {
            return Err(format!(
                "max_transaction_age must be positive, not {max_age}"
            ));
        }
        let at_least_ten = |key: &str| -> Result<usize, String> {
            let value = correlator_sdk::config::integer(key)?;
            usize::try_from(value)
                .ok()
                .filter(|&value| value >= 10)
                .ok_or_else(|| format!("{key} must be at least 10, not {value}"))
        };
        let max_connections_per_server = at_least_ten("max_connections_per_server")?;
        let max_failure_hosts = at_least_ten("max_failure_hosts")?;
        let attempts = match correlator_sdk::config::text("attempts")?.as_str() {
            "passwords" => Attempts::Passwords,
            "all" => Attempts::All,
            other => {
                return Err(format!(
                    "attempts must be \"passwords\" or \"all\", not \"{other}\""
                ));
            }
        };
        // Hourly maintenance keeps memory bounded; statistics are per day,
        // as the original's. The host gives both by record time during a
        // replay, so a replayed day runs them too.
        correlator_sdk::timers::every(TickKind::Hour)?;
        correlator_sdk::timers::daily_at(0, 0)?;
        // Connections open and failures counted when the host last stopped
        // (or crashed: then as of its last checkpoint) carry on.
        let tracker = Tracker::load(Settings {
            failure_window_seconds: window,
            failure_limit: limit,
            max_age_seconds: max_age.saturating_mul(60),
            max_connections_per_server,
            max_failure_hosts,
            attempts,
        })?;
        Ok(OpenSsh { tracker })
    }

    fn process(&mut self, record: &Record<'_>) {
        if is_sshd(record.app_name) {
            self.tracker.observe(record);
        }
    }

    fn receive(&mut self, addr: &str, payload: &[u8], time: Timestamp) {
        self.tracker.receive(addr, payload, time);
    }

    fn tick(&mut self, tick: &Tick) {
        match tick.kind {
            TickKind::Hour => self.tracker.expire(tick.time),
            TickKind::Daily => self.tracker.dispatch_statistics(true),
            _ => {}
        }
    }

    fn statistics(&mut self, reset: bool) {
        self.tracker.dispatch_statistics(reset);
    }

    const STATE_VERSION: u32 = tracker::STATE_VERSION;

    fn migrate(stored_version: u32) -> Result<(), String> {
        tracker::migrate(stored_version)
    }

    fn checkpoint(&mut self) {
        if let Err(error) = self.tracker.checkpoint() {
            correlator_sdk::log::error(&format!("state not saved: {error}"));
        }
    }
}

export_module!(OpenSsh);

/// The module's real `Module` implementation against the SDK's in-memory
/// test host: what a module author's own `cargo test` does.
#[cfg(test)]
mod tests {
    use super::*;
    use correlator_sdk::Value;
    use correlator_sdk::testing::{TestHost, TestRecord};

    /// A failed password for `user` from `addr` on `server`, `second`s in.
    fn failed(second: i64, server: &str, user: &str, addr: &str) -> TestRecord {
        TestRecord::new(
            1_676_905_967 + second,
            server,
            "sshd",
            &format!("Failed password for {user} from {addr} port 4242 ssh2"),
        )
        .pid(&format!("{}", 100 + second))
    }

    /// A test host and the module started on it, three failed passwords
    /// its limit.
    fn started_with_limit_3() -> (TestHost, OpenSsh) {
        let host = TestHost::new();
        host.set_config("login_failure_limit", Value::Integer(3));
        let module: OpenSsh = host.start().expect("the module starts");
        (host, module)
    }

    #[test]
    fn a_brute_force_over_two_servers_is_reported_once_with_who_and_where() {
        let (host, mut module) = started_with_limit_3();
        host.process(
            &mut module,
            &[
                failed(0, "web1", "root", "192.0.2.7"),
                failed(1, "web2", "admin", "192.0.2.7"),
                failed(2, "web1", "root", "198.51.100.1"),
            ],
        );
        assert!(host.events().is_empty());
        host.process(&mut module, &[failed(3, "web2", "oracle", "192.0.2.7")]);
        let events = host.take_events();
        assert_eq!(events.len(), 1, "{events:?}");
        let exceeded = &events[0];
        assert_eq!(exceeded.kind, "SSHDAttemptsExceeded");
        assert_eq!(
            exceeded.summary,
            "Host 192.0.2.7 reached 3 failed passwords within 300 seconds"
        );
        assert_eq!(
            (exceeded.text("users"), exceeded.text("servers")),
            (Some("admin, oracle, root"), Some("web1, web2"))
        );
        assert_eq!(
            (exceeded.integer("count"), exceeded.integer("window")),
            (Some(3), Some(300))
        );
        assert_eq!(exceeded.time.seconds, 1_676_905_970);
        // It asked for its hourly maintenance and midnight statistics.
        assert_eq!(
            host.timers(),
            [(TickKind::Hour, None), (TickKind::Daily, Some((0, 0)))]
        );
    }

    #[test]
    fn a_restart_goes_on_with_the_counts_the_checkpoint_saved() {
        let (host, mut module) = started_with_limit_3();
        host.process(
            &mut module,
            &[
                failed(0, "web1", "root", "192.0.2.7"),
                failed(1, "web1", "root", "192.0.2.7"),
            ],
        );
        let mut module = host.restart(module).expect("the module starts again");
        assert_eq!(host.state_keys(), ["tracker"]);
        host.process(&mut module, &[failed(2, "web1", "root", "192.0.2.7")]);
        let kinds: Vec<String> = host
            .take_events()
            .into_iter()
            .map(|event| event.kind)
            .collect();
        assert_eq!(kinds, ["SSHDAttemptsExceeded"]);
    }

    #[test]
    fn configuration_is_checked_as_the_runtime_checks_it() {
        let host = TestHost::new();
        host.set_config("login_failure_limit", Value::Integer(0));
        assert_eq!(
            host.start::<OpenSsh>().err().as_deref(),
            Some("login_failure_limit must be positive, not 0")
        );
        let host = TestHost::new();
        host.set_config("login_failure_limt", Value::Integer(3));
        assert_eq!(
            host.start::<OpenSsh>().err().as_deref(),
            Some("configuration item \"login_failure_limt\" is not declared by sshd")
        );
    }
}
