#!/usr/bin/env bash
# Every test, from a fresh machine with only rustup: installs what it needs,
# then checks formatting and lints (host and guest crates), fuzzes every
# fuzz target for a bounded time, and runs every test of the workspace on
# the release profile (the one the demo and the benchmarks use, so nothing
# is built twice).
set -euo pipefail
cd "$(dirname "$0")"

rustup target add wasm32-wasip2
rustup component add rustfmt clippy

# Real syslog senders for the network tests: util-linux's logger (Debian's
# bsdutils), rsyslog and its RELP forwarder (rsyslog-relp); and the
# firewall tools the blocklist's files are loaded into (nftables, ipset),
# each in a network namespace of the test's own; Python's http.server as
# the webhooks' destination and aiosmtpd as the e-mails'; systemd-analyze
# (systemd) to verify the unit file; journalctl (systemd) and
# systemd-journal-remote, which writes the journal files `run --journal`
# reads; objcopy and readelf (binutils) to split the release binary's debug
# information; nats-server (JetStream), which the stream tests start on
# 127.0.0.1. The tests that need them fail without them.
if ! command -v logger >/dev/null || ! [ -x /usr/sbin/rsyslogd ] ||
   ! ls /usr/lib/*/rsyslog/omrelp.so >/dev/null 2>&1 ||
   ! [ -x /usr/sbin/nft ] || ! [ -x /usr/sbin/ipset ] || ! command -v python3 >/dev/null ||
   ! /usr/bin/python3 -c "import aiosmtpd" 2>/dev/null || ! command -v systemd-analyze >/dev/null ||
   ! command -v journalctl >/dev/null ||
   ! ls /lib/systemd/systemd-journal-remote /usr/lib/systemd/systemd-journal-remote >/dev/null 2>&1 ||
   ! command -v objcopy >/dev/null || ! command -v readelf >/dev/null ||
   ! [ -x /usr/sbin/nats-server ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        bsdutils rsyslog rsyslog-relp nftables ipset python3 python3-aiosmtpd systemd \
        systemd-journal-remote binutils nats-server >/dev/null
fi

# fail2ban's annotated sshd test log, which the sshd module is measured
# against: taken from Debian's fail2ban package into target/fail2ban, not
# installed (that would start its daemon).
FAIL2BAN=target/fail2ban
if ! [ -f "$FAIL2BAN/usr/lib/python3/dist-packages/fail2ban/tests/files/logs/sshd" ]; then
    mkdir -p "$FAIL2BAN"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    (cd "$FAIL2BAN" &&
        { apt-get download fail2ban 2>/dev/null ||
            { $sudo apt-get update -qq && apt-get download fail2ban; }; } &&
        dpkg -x fail2ban_*.deb .)
fi

GUESTS=(-p correlator-sdk -p correlator-module-sshd -p correlator-module-report
        -p correlator-module-log -p correlator-module-csv -p correlator-module-blocklist -p correlator-module-webhook -p correlator-module-sms -p correlator-module-email -p correlator-test-schema-breaker
        -p correlator-test-hostile -p correlator-test-hostile-fs -p correlator-test-hostile-net
        -p correlator-test-hostile-handler -p correlator-test-hostile-http
        -p correlator-test-hostile-block
        -p correlator-test-counter-v1 -p correlator-test-counter-v2
        -p correlator-test-plain-handler)

cargo fmt --all -- --check
# The example module is a crate of its own, outside the workspace.
cargo fmt --manifest-path examples/transmission/Cargo.toml -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo clippy --target wasm32-wasip2 --release "${GUESTS[@]}" -- -D warnings
# Every fuzz target for a bounded time (CORRELATOR_FUZZ_SECONDS each,
# default 30), after replaying the inputs that once found a bug.
./fuzz/run "${CORRELATOR_FUZZ_SECONDS:-30}"
cargo test --workspace --release
