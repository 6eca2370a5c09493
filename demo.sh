#!/usr/bin/env bash
# The demo: the OpenSSH app over the original project's sample capture.
# Installs what it needs (the wasm32-wasip2 target), builds, and prints the
# events. Extra arguments go to `correlator run`, e.g.
#   ./demo.sh --option handler.console.format=json
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-wasip2 >&2
cargo build --release -p correlator >&2
# Durable state is off so that every run of the demo prints the same; by
# default a second replay would continue from the first (see README).
exec target/release/correlator run --app apps/ssh-report.toml --read-file data/sshd-1.cap -o state.enabled=false "$@"
