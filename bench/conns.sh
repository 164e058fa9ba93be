#!/usr/bin/env bash
# Connection-level benchmarks, payshim beside nginx: memory per idle TLS connection, full
# TLS handshakes per proxy-CPU-second, and HTTP/2 from the client side (h2load).
#
#   bench/conns.sh [--mode rss|handshake|h2|all] [--rounds N] [--counts 1000,10000]
#                  [--duration 10s] [--base FILE] [--no-build]
#
# rss        COUNT TLS connections (each after one passthrough request) held idle, then
#            VmRSS of the proxy (nginx: master + worker) against the same proxy with one
#            request done and no connection open; KiB per connection (bench/idle-conns.py).
# rss-h2     the same over HTTP/2, as browsers connect (bench/idle-conns-h2.mjs, node's
#            http2 client; nginx with http2).
# handshake  `openssl s_time -new` (16 in parallel, on core 1): a full handshake per
#            connection, no session resumption on the client side; handshakes divided by
#            the proxy's CPU time (utime + stime from /proc/PID/stat) over the same seconds.
# h2         h2load, 16 connections x 10 streams, ALPN h2: the passthrough POST to nginx
#            (with http2) and payshim, and payments to payshim (the payment POST over
#            1,000 order ids; duplicate window off, one payment per order off, limits off).
#
# Targets: nginx (bench/nginx-conns.conf) and payshim (target/release/payshim, or
# BENCH_PAYSHIM_BIN); --base FILE adds payshim-base, another payshim build, to compare a
# change side by side with the build before it. Every round runs every target, the order
# reversed every other round; the summary is the per-target median. Proxy and upstream are
# pinned to core 0, the client to core 1. Output: bench/out/conns-<UTC timestamp>/.
# See bench/README.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")

MODE=all
ROUNDS=5
COUNTS=1000,10000
DURATION=10
BUILD=1
BASE_BIN=""

# Not run.sh's ports, so a run of each can share the machine (not the figures).
UPSTREAM_PORT=${BENCH_CONNS_UPSTREAM_PORT:-28080}
PAYSHIM_PORT=${BENCH_CONNS_PAYSHIM_PORT:-28443}
ADMIN_PORT=${BENCH_CONNS_ADMIN_PORT:-29901}
NGINX_PORT=${BENCH_CONNS_NGINX_PORT:-28444}
PROXY_CPU=0
CLIENT_CPU=1
STOREFRONT_KEY=bench-storefront-key-0001
# s_time waits for each handshake in turn (about 25 ms here): 16 of them give the proxy
# enough handshakes for its CPU time (10 ms ticks) to be read to a few per cent.
HS_CLIENTS=16

usage() { sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --mode) MODE=${2:?}; shift 2 ;;
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --counts) COUNTS=${2:?}; shift 2 ;;
        --duration) DURATION=${2%s}; shift 2 ;;
        --base) BASE_BIN=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "conns.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $MODE =~ ^(rss|rss-h2|handshake|h2|all)$ ]] || { echo "conns.sh: --mode rss|rss-h2|handshake|h2|all" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || { echo "conns.sh: --rounds 1..99" >&2; exit 2; }
[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 1 && DURATION <= 600 )) \
    || { echo "conns.sh: --duration 1s..600s" >&2; exit 2; }
[[ -z $BASE_BIN || -x $BASE_BIN ]] || { echo "conns.sh: --base $BASE_BIN is not executable" >&2; exit 2; }
for tool in nginx openssl h2load python3 node taskset curl ss; do
    command -v "$tool" >/dev/null || { echo "conns.sh: needs $tool (h2load: apt-get install nghttp2-client)" >&2; exit 1; }
done

log() { printf '[conns %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# 10,000 idle connections need as many descriptors in the client and in the proxy.
ulimit -n "$(ulimit -Hn)"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH_DIR/out/conns-$STAMP
mkdir -p "$OUT/tls"
log "output: $OUT"

declare -A PIDS=()
stop_proc() {
    local name=$1 pid=${PIDS[$1]:-} i
    [[ -z $pid ]] && return 0
    unset "PIDS[$name]"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# Per-request logs and audit files (hundreds of MB per h2 run): cut to their first 1000
# lines once the run is over.
trim_logs() {
    local f
    find "$1" -type f -size +1M -print0 | while IFS= read -r -d '' f; do
        head -n 1000 "$f" >"$f.head" && mv "$f.head" "$f"
    done
}
cleanup() {
    local rc=$? n
    trap - EXIT INT TERM
    for n in "${!PIDS[@]}"; do stop_proc "$n"; done
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

check_port() { [[ -z $(ss -Hltn "sport = :$1" 2>/dev/null) ]] || die "port $1 in use (set BENCH_CONNS_*_PORT)"; }
wait_ready() { # name url
    local i code
    for i in $(seq 1 150); do
        kill -0 "${PIDS[$1]}" 2>/dev/null || { log "$1 exited during start-up"; return 1; }
        code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$2" 2>/dev/null || true)
        [[ -n $code && $code != 000 ]] && return 0
        sleep 0.1
    done
    return 1
}

if (( BUILD )); then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release) >"$OUT/build.log" 2>&1 || die "build failed (see $OUT/build.log)"
fi
cp "${BENCH_PAYSHIM_BIN:-$ROOT/target/release/payshim}" "$OUT/payshim"
TARGETS=(nginx payshim)
if [[ -n $BASE_BIN ]]; then cp "$BASE_BIN" "$OUT/payshim-base"; TARGETS+=(payshim-base); fi
{
    echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ) mode=$MODE rounds=$ROUNDS counts=$COUNTS duration=${DURATION}s"
    echo "$(nginx -v 2>&1); $(openssl version); $(h2load --version | head -1)"
    for t in "${TARGETS[@]}"; do
        [[ $t == nginx ]] || echo "$t sha256 $(sha256sum "$OUT/$t" | cut -c1-16)"
    done
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/env.txt"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" 2>"$OUT/tls/openssl.log"

render() { # template out port
    sed -e "s|@OUT@|$OUT|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@PORT@|$3|g" "$1" >"$2"
}

check_port "$UPSTREAM_PORT"
mkdir -p "$OUT/upstream/tmp"
render "$BENCH_DIR/upstream/nginx-upstream.conf" "$OUT/upstream/nginx.conf" "$UPSTREAM_PORT"
taskset -c "$PROXY_CPU" nginx -p "$OUT/upstream" -e "$OUT/upstream/error.log" \
    -c "$OUT/upstream/nginx.conf" >/dev/null 2>&1 &
PIDS[upstream]=$!
wait_ready upstream "http://127.0.0.1:$UPSTREAM_PORT/" || die "upstream did not start"

# start TARGET DIR [ENV...]: the proxy under test, on core 0.
start() {
    local t=$1 dir=$2; shift 2
    mkdir -p "$dir"
    if [[ $t == nginx ]]; then
        check_port "$NGINX_PORT"
        mkdir -p "$dir/nginx/tmp"
        sed -e "s|@OUT@/nginx|$dir/nginx|g" -e "s|@OUT@|$OUT|g" \
            -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@PORT@|$NGINX_PORT|g" \
            "$BENCH_DIR/nginx-conns.conf" >"$dir/nginx.conf"
        taskset -c "$PROXY_CPU" nginx -p "$dir/nginx" -e "$dir/nginx/error.log" \
            -c "$dir/nginx.conf" >"$dir/nginx.stdout.log" 2>&1 &
        PIDS[$t]=$!
        wait_ready "$t" "https://127.0.0.1:$NGINX_PORT/"
        return
    fi
    check_port "$PAYSHIM_PORT"; check_port "$ADMIN_PORT"
    (
        cd "$dir"
        exec env "$@" \
            PAYSHIM__SERVER__LISTEN="127.0.0.1:$PAYSHIM_PORT" \
            PAYSHIM__ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT" \
            PAYSHIM__UPSTREAM__URL="http://127.0.0.1:$UPSTREAM_PORT" \
            PAYSHIM__SERVER__MAX_CONNECTIONS=15000 \
            PAYSHIM__SERVER__MAX_CONNECTIONS_PER_IP=15000 \
            PAYSHIM__SERVER__HEADER_READ_TIMEOUT=10min \
            PAYSHIM__SERVER__IDLE_TIMEOUT=10min \
            taskset -c "$PROXY_CPU" "$OUT/$t" --config "$BENCH_DIR/payshim-bench.toml"
    ) >"$dir/payshim.stdout.log" 2>"$dir/payshim.stderr.log" &
    PIDS[$t]=$!
    wait_ready "$t" "http://127.0.0.1:$ADMIN_PORT/readyz"
}
port_of() { [[ $1 == nginx ]] && echo "$NGINX_PORT" || echo "$PAYSHIM_PORT"; }
# The proxy's processes: payshim itself, nginx's master and its worker.
pids_of() { local p=${PIDS[$1]}; { echo "$p"; pgrep -P "$p" || true; } | paste -sd, -; }
# CPU time of the proxy's processes, all threads, in ns (/proc/PID/task/TID/schedstat:
# scheduler run time, user + system, exact rather than in 10 ms ticks).
cpu_ns() { # pid,pid,...
    local p
    for p in ${1//,/ }; do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done | awk '{ s += $1 } END { printf "%.0f", s }'
}

RESULTS=$OUT/results.tsv
printf 'mode\ttarget\tround\tvalue\tunit\tdetail\n' >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; log "$1 $2 round $3: $4 $5 ($6)"; }

run_rss() { # target round count [h2]
    local t=$1 r=$2 n=$3 mode=rss${4:+-h2} line client=(python3 "$BENCH_DIR/idle-conns.py")
    local dir=$OUT/$mode-$3/round$2/$1
    [[ -n ${4:-} ]] && client=(node "$BENCH_DIR/idle-conns-h2.mjs")
    start "$t" "$dir" || { record "$mode-$n" "$t" "$r" NA KiB/conn "did not start"; stop_proc "$t"; return; }
    line=$(taskset -c "$CLIENT_CPU" timeout 600 "${client[@]}" --port "$(port_of "$t")" \
        --count "$n" --pids "$(pids_of "$t")" --label "$t" 2>"$dir/client.err" || true)
    echo "$line" >"$dir/client.json"
    if [[ -n $line ]]; then
        record "$mode-$n" "$t" "$r" "$(jq -r .kib_per_conn <<<"$line")" KiB/conn \
            "$(jq -r '"\(.rss_before_kib) -> \(.rss_after_kib) KiB, \(.alive)/\(.connections) alive"' <<<"$line")"
    else
        record "$mode-$n" "$t" "$r" NA KiB/conn "client failed: $(tail -1 "$dir/client.err")"
    fi
    stop_proc "$t"
}

run_handshake() { # target round
    local t=$1 r=$2 dir=$OUT/handshake/round$2/$1 pids before after total=0 i
    start "$t" "$dir" || { record handshake "$t" "$r" NA hs/cpu-s "did not start"; stop_proc "$t"; return; }
    pids=$(pids_of "$t")
    taskset -c "$CLIENT_CPU" openssl s_time -connect "127.0.0.1:$(port_of "$t")" -new -time 1 >/dev/null 2>&1 || true
    before=$(cpu_ns "$pids")
    for i in $(seq 1 "$HS_CLIENTS"); do
        taskset -c "$CLIENT_CPU" timeout $((DURATION + 30)) openssl s_time \
            -connect "127.0.0.1:$(port_of "$t")" -new -time "$DURATION" >"$dir/s_time.$i.txt" 2>&1 &
    done
    wait_clients
    after=$(cpu_ns "$pids")
    for i in $(seq 1 "$HS_CLIENTS"); do
        total=$(( total + $(awk '/connections in/ { print $1; exit }' "$dir/s_time.$i.txt" || echo 0) ))
    done
    local cpu=$(( after - before ))
    if (( cpu > 0 )); then
        record handshake "$t" "$r" "$(awk -v n="$total" -v c="$cpu" 'BEGIN { printf "%.0f", n * 1e9 / c }')" \
            hs/cpu-s "$total handshakes, proxy CPU $(awk -v c="$cpu" 'BEGIN { printf "%.3f", c / 1e9 }') s"
    else
        record handshake "$t" "$r" NA hs/cpu-s "no CPU time measured"
    fi
    stop_proc "$t"
}
# Waits for every background job that is not a tracked daemon (the clients).
wait_clients() {
    local j
    for j in $(jobs -p); do
        [[ " ${PIDS[*]} " == *" $j "* ]] || wait "$j" || true
    done
}

H2_BODY=$OUT/passthrough-body.json
printf '%s' '{"data":{"type":"bench_event","order_id":"9b2f7c1e-3d4a-4b5c-8d6e-7f8a9b0c1d2e","customer":{"name":"Ada Lovelace","email":"ada@example.com"},"items":[{"sku":"BOOK-001","quantity":1,"amount":4999},{"sku":"PEN-042","quantity":2,"amount":350}],"currency":"USD"}}' >"$H2_BODY"
PAY_BODY=$OUT/payment-body.json
printf '%s' '{"data":{"gateway":"card_connect","method":"purchase","first_name":"Ada","last_name":"Lovelace","number":"4111111111111111","month":"12","year":"2031","verification_value":"123"}}' >"$PAY_BODY"

run_h2() { # target round request(passthrough|payments)
    local t=$1 r=$2 req=$3 dir=$OUT/h2/round$2/$1-$3 port pids before after env=() i
    if [[ $req == payments ]]; then
        env=(PAYSHIM__IDEMPOTENCY__DUPLICATE_WINDOW=off PAYSHIM__IDEMPOTENCY__ONE_PAYMENT_PER_ORDER=false)
    fi
    start "$t" "$dir" "${env[@]}" || { record "h2-$req" "$t" "$r" NA req/s "did not start"; stop_proc "$t"; return; }
    port=$(port_of "$t")
    local body=$H2_BODY uris=$dir/uris.txt
    if [[ $req == payments ]]; then
        body=$PAY_BODY
        for i in $(seq 1 1000); do
            printf 'https://127.0.0.1:%s/v2/orders/0a1b2c3d-0000-4000-8000-%012d/payments\n' "$port" "$i"
        done >"$uris"
    else
        echo "https://127.0.0.1:$port/v2/bench/order-42" >"$uris"
    fi
    pids=$(pids_of "$t")
    taskset -c "$CLIENT_CPU" timeout $((DURATION + 60)) h2load -t1 -c16 -m10 -D "$DURATION" --warm-up-time=2 \
        -d "$body" -H 'content-type: application/json' -H "authorization: Bearer $STOREFRONT_KEY" \
        -i "$uris" >"$dir/h2load.txt" 2>&1 &
    # The proxy's CPU over the measured part only (h2load counts requests after warm-up).
    local client=$!
    sleep 2
    before=$(cpu_ns "$pids")
    wait "$client" || true
    after=$(cpu_ns "$pids")
    local rps ok fail
    rps=$(awk '/^finished in/ { gsub(/,/, ""); for (i = 1; i <= NF; i++) if ($(i+1) == "req/s") print $i }' "$dir/h2load.txt")
    ok=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^succeeded/) print $i }' "$dir/h2load.txt")
    fail=$(awk '/^status codes:/ { print $5 + $7 + $9 + 0 }' "$dir/h2load.txt")
    record "h2-$req" "$t" "$r" "${rps:-NA}" req/s \
        "${ok:-?} succeeded, status 3xx-5xx ${fail:-?}, proxy $(awk -v c=$((after - before)) -v n="${ok:-0}" 'BEGIN { if (n > 0) printf "%.1f", c / 1e3 / n; else printf "?" }') us CPU/req"
    stop_proc "$t"
    trim_logs "$dir"
}

order_for_round() { # round -> targets, reversed every other round
    if (( $1 % 2 )); then echo "${TARGETS[@]}"; else printf '%s\n' "${TARGETS[@]}" | tac | paste -sd' ' -; fi
}

for r in $(seq 1 "$ROUNDS"); do
    read -r -a order <<<"$(order_for_round "$r")"
    if [[ $MODE == rss || $MODE == all ]]; then
        for n in ${COUNTS//,/ }; do
            for t in "${order[@]}"; do run_rss "$t" "$r" "$n"; done
        done
    fi
    if [[ $MODE == rss-h2 || $MODE == all ]]; then
        for n in ${COUNTS//,/ }; do
            for t in "${order[@]}"; do run_rss "$t" "$r" "$n" h2; done
        done
    fi
    if [[ $MODE == handshake || $MODE == all ]]; then
        for t in "${order[@]}"; do run_handshake "$t" "$r"; done
    fi
    if [[ $MODE == h2 || $MODE == all ]]; then
        for t in "${order[@]}"; do
            run_h2 "$t" "$r" passthrough
            [[ $t == nginx ]] || run_h2 "$t" "$r" payments
        done
    fi
done

# Medians per mode and target, and each against nginx's median (passthrough for h2).
echo
echo "medians of $ROUNDS rounds ($(date -u +%Y-%m-%d)); raw: $RESULTS"
awk -F'\t' 'NR > 1 && $4 != "NA" { k = $1 "\t" $2; V[k] = V[k] " " $4; U[$1] = $5 }
    END { for (k in V) print k "\t" U[substr(k, 1, index(k, "\t") - 1)] "\t" V[k] }' "$RESULTS" \
    | sort | while IFS=$'\t' read -r mode target unit vals; do
        med=$(tr ' ' '\n' <<<"$vals" | grep . | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
        printf '%s\t%s\t%s\t%s\t%s\n' "$mode" "$target" "$med" "$unit" "$vals"
    done >"$OUT/medians.tsv"
awk -F'\t' '{ m = $1; sub(/-payments$/, "-passthrough", m); if ($2 == "nginx") N[m] = $3; L[NR] = $0; M[NR] = m; V[NR] = $3 }
    END { printf "%-16s %-14s %10s %-10s %8s  %s\n", "mode", "target", "median", "unit", "/nginx", "rounds"
          for (i = 1; i <= NR; i++) { split(L[i], f, "\t")
            printf "%-16s %-14s %10s %-10s %8s  %s\n", f[1], f[2], f[3], f[4], (N[M[i]] > 0 ? sprintf("%.2fx", V[i] / N[M[i]]) : "-"), f[5] } }' \
    "$OUT/medians.tsv" | tee "$OUT/summary.txt"
