#!/usr/bin/env bash
# The long soak and the card-leak test at scale (not in CI; the suite runs a 60-second soak).
#
#   scripts/soak.sh [SECONDS]      default 600
#
# Both runs send at full speed (PAYSHIM_SOAK_PACE_MS=0).
#
# 1. The soak (tests/it/soak/) for SECONDS at log level info: the release binary with Redis
#    limits and a rotating audit log under mixed traffic, while upstream resets, stalls and
#    500s, a Redis kill, an unwritable audit log and SIGKILLs of payshim are injected in
#    turn; then the checker (exactly-once, audit records, `audit pending`, fault windows,
#    chain, card data, memory and descriptors).
# 2. The leak test at scale: the same harness at log level trace, run until at least
#    PAYSHIM_SOAK_MIN_CARDS (default 10000) requests carried a distinct card number, every
#    fault included; no card number or CVV may be found in any output, file, response,
#    /metrics or Redis.
#
# Each run prints one `soak:` line with its figures. Needs redis-server on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-600}"
min_cards="${PAYSHIM_SOAK_MIN_CARDS:-10000}"
command -v redis-server >/dev/null 2>&1 || {
  echo "soak: redis-server is needed (apt-get install -y redis-server)" >&2
  exit 1
}
log_dir="$(mktemp -d)"

run() {
  local name="$1"
  shift
  echo "== $name"
  env "$@" cargo test --release --test it soak:: -- --nocapture >"$log_dir/$name.log" 2>&1 || {
    tail -n 60 "$log_dir/$name.log"
    echo "soak: $name FAILED (full output: $log_dir/$name.log)" >&2
    exit 1
  }
  grep '^soak:' "$log_dir/$name.log"
}

run soak PAYSHIM_SOAK_SECS="$secs" PAYSHIM_SOAK_LOG_LEVEL=info PAYSHIM_SOAK_MIN_CARDS=0 \
  PAYSHIM_SOAK_PACE_MS=0
run leak-at-scale PAYSHIM_SOAK_SECS=60 PAYSHIM_SOAK_LOG_LEVEL=trace \
  PAYSHIM_SOAK_MIN_CARDS="$min_cards" PAYSHIM_SOAK_PACE_MS=0
