#!/usr/bin/env bash
# A release binary to install, and its debug information in a file of its
# own: the binary cargo builds keeps line tables for backtraces (about
# 180 MB, most of it debug sections); the one this writes is about a sixth
# of that, and debuggers and perf find the rest through its debuglink.
#
#   runtime/packaging/dist.sh [OUT_DIR] [BINARY]
#
# writes OUT_DIR/correlator and OUT_DIR/correlator.debug (OUT_DIR: dist).
# Without BINARY it builds target/release/correlator first. Needs objcopy
# (Debian's binutils, which the Rust toolchain's linker already uses).
set -euo pipefail

out=${1:-dist}
binary=${2:-}
if [[ -z $binary ]]; then
    cd "$(dirname "$0")/../.."
    cargo build --release --locked -p correlator
    binary=target/release/correlator
fi
command -v objcopy > /dev/null || {
    echo "dist.sh: objcopy not found; install binutils" >&2
    exit 1
}
mkdir -p "$out"
objcopy --only-keep-debug "$binary" "$out/correlator.debug"
# The debuglink names the file; the tools look for it beside the binary
# (and in /usr/lib/debug), and check its CRC.
objcopy --strip-debug --add-gnu-debuglink="$out/correlator.debug" "$binary" "$out/correlator"
chmod 0755 "$out/correlator"
chmod 0644 "$out/correlator.debug"
ls -l "$out/correlator" "$out/correlator.debug"
