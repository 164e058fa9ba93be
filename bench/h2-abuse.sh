#!/usr/bin/env bash
# HTTP/2 abuse benchmark: per attack, payshim's CPU and resident memory and a normal
# client's p50/p99, without and then with one attacker connection running the attack.
#
#   bench/h2-abuse.sh [--window SECS] [--rounds N] [--clients N] [--only NAME[,...]]
#                     [--release] [--bin FILE]
#
# Attacks (names for --only): rapid-reset, continuation-flood, huge-header-block,
# hpack-bomb, settings-flood, ping-flood, closed-window (see tests/it/support/h2abuse.rs).
# The harness is the ignored test `h2_abuse_bench::h2_abuse_figures` of the integration
# test binary: it starts payshim as a child process (the test build, or FILE with --bin),
# and runs the upstream test double and the normal client (--clients concurrent payments
# on one HTTP/2 connection, default 4) in the test process; the attacker (one connection
# at a time from 127.0.0.2, a new one when payshim ends the last) is a second process of
# the test binary at nice 19, so it takes only the CPU the normal client leaves. payshim
# is pinned to core 0, the test processes to core 1. Every window lasts
# --window seconds (default 5); each attacker connection is bounded in frames and time.
# --rounds N repeats every attack N times (order reversed every other round) and adds the
# median p99 ratio per attack: this machine's load drifts between windows. --release
# builds and runs all of it (payshim, harness, client, attacker) optimised: a debug
# harness is itself the bottleneck and blurs what payshim does.
# Loopback only. See bench/README.md, "HTTP/2 abuse".
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")

WINDOW=5
ROUNDS=1
CLIENTS=4
ONLY=""
BIN=""
RELEASE=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --window) WINDOW=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --release) RELEASE=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

cd "$ROOT"
PROFILE=()
if [[ $RELEASE == 1 ]]; then
    PROFILE=(--release)
fi
if [[ -n $BIN ]]; then
    if [[ ! -x $BIN ]]; then
        echo "not an executable: $BIN" >&2
        exit 2
    fi
    # payshim runs in a temporary directory: the path must not be relative.
    BIN=$(realpath "$BIN")
fi

# Built before pinning, so the build is not confined to one core.
cargo test "${PROFILE[@]}" --test it --no-run
export H2_ABUSE_WINDOW=$WINDOW H2_ABUSE_ROUNDS=$ROUNDS H2_ABUSE_CLIENTS=$CLIENTS H2_ABUSE_ONLY=$ONLY
export H2_ABUSE_PAYSHIM_CPU=0
if [[ -n $BIN ]]; then
    export PAYSHIM_BENCH_BIN=$BIN
fi
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(git rev-parse --short HEAD) window=${WINDOW}s" \
    "rounds=$ROUNDS clients=$CLIENTS ${PROFILE[*]}"
taskset -c 1 cargo test "${PROFILE[@]}" --test it h2_abuse_bench::h2_abuse_figures -- --ignored --nocapture \
    --test-threads=1 2>&1 | grep -E '^(\||payshim:|failures:)'
