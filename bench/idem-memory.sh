#!/usr/bin/env bash
# Memory and CPU per payment of one payshim with and without idempotency, on loopback:
# RSS growth per payment (what a kept answer costs) and the process's CPU time per payment.
#
#   bench/idem-memory.sh [SECONDS]      (default 15; release build and nginx needed)
#
# Three runs of SECONDS each against the bench upstream (bench/upstream/nginx-upstream.conf),
# 8 connections: "off" (payments without keys, duplicate window and order lock off),
# "keyed" (each payment with a unique Idempotency-Key, defaults on) and "window" (payments
# without keys, duplicate window on). Ports 38080/38443/39901, so it runs beside bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
bin=${PAYSHIM_BIN:-target/release/payshim}
out=$(mktemp -d /tmp/payshim-idem-memory.XXXXXX)
sed -e "s|@OUT@|$out|g" -e "s|@UPSTREAM_PORT@|38080|g" bench/upstream/nginx-upstream.conf >"$out/nginx.conf"
mkdir -p "$out/upstream/tmp"
nginx -p "$out/upstream" -e "$out/upstream/error.log" -c "$out/nginx.conf" &
upstream=$!
# The audit files of three runs are hundreds of MB: nothing is kept but the printed lines.
trap 'kill $upstream 2>/dev/null || true; rm -rf "$out"' EXIT
sleep 0.5

run() { # name payments.lua-argument (or "") [env...]
    local name=$1 arg=$2 d=$out/$1; shift 2
    mkdir -p "$d"
    (cd "$d" && env "$@" PAYSHIM__SERVER__LISTEN=127.0.0.1:38443 PAYSHIM__ADMIN__LISTEN=127.0.0.1:39901 \
        PAYSHIM__UPSTREAM__URL=http://127.0.0.1:38080 "$OLDPWD/$bin" --config "$OLDPWD/bench/payshim-bench.toml" \
        >stdout.log 2>stderr.log) &
    local sub=$! pid
    for _ in $(seq 1 60); do curl -sk -o /dev/null https://127.0.0.1:38443/ && break; sleep 0.5; done
    pid=$(pgrep -P "$sub" payshim || echo "$sub")
    local r0 t0 r1 t1 reqs
    r0=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status"); t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    wrk -t1 -c8 -d"${secs}s" -s bench/lua/payments.lua https://127.0.0.1:38443/ ${arg:+-- "$arg"} >"$d/wrk.txt"
    r1=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status"); t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    reqs=$(sed -n 's/.*BENCH_RESULT requests=\([0-9]*\).*/\1/p' "$d/wrk.txt")
    kill -INT "$pid"; wait "$sub" 2>/dev/null || true
    printf '%-7s payments=%-7s rss_kb=%s->%s bytes_per_payment=%-6s cpu_us_per_payment=%s\n' \
        "$name" "$reqs" "$r0" "$r1" $(( (r1 - r0) * 1024 / reqs )) $(( (t1 - t0) * 10000 / reqs ))
}
run off "" PAYSHIM__IDEMPOTENCY__DUPLICATE_WINDOW=off PAYSHIM__IDEMPOTENCY__ONE_PAYMENT_PER_ORDER=false
run keyed keyed
run window ""
