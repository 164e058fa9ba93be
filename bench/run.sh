#!/usr/bin/env bash
# payshim load benchmark: direct upstream vs nginx vs HAProxy vs payshim, on loopback.
#
#   bench/run.sh [--duration 15s] [--only GROUP|TARGET[,...]] [--no-build] [--no-install]
#                [--perf] [--keep-logs] [--rounds N] [--ab-base FILE] [--ab-request REQ]
#                [--ab-idem local|redis]
#                [--upstream-tls]
#
# Groups: all (default), passthrough (direct nginx haproxy payshim-passthrough),
#         payments (payshim-payments), limits (payshim-payments payshim-payments-limits
#         payshim-payments-redis). Targets can also be named one by one, comma-separated.
#         ab (not in all): payshim-ab, two payshims at once on core 0, limits off and on,
#         each loaded by its own wrk with half the connections (the cost of limits measured
#         with both sides under the same machine state). --ab-base FILE compares builds
#         instead: the binary FILE (row payshim-ab-base) beside the current build (row
#         payshim-ab-new), limits off on both. --ab-request passthrough|payments (default
#         payments) picks the request both sides get. --ab-base nginx runs nginx (the
#         nginx target's config) beside the current build on the passthrough request
#         (rows payshim-ab-nginx and payshim-ab-payshim): the issue 2 comparison without
#         the drift between separate runs. --ab-base nginx --ab-request payments: nginx
#         still proxies the passthrough request, payshim gets payments with every local
#         limit on (the issue 17 payments figure). --ab-idem local|redis measures
#         idempotency: payments without keys with the duplicate window and the order lock
#         off (row payshim-ab-idem-off) beside payments each with a unique Idempotency-Key
#         and the defaults on (row payshim-ab-idem-local, or payshim-ab-idem-redis with the
#         keys in Redis), limits off on both.
# --upstream-tls: the proxies re-encrypt to the upstream, as in production: the upstream
#         nginx adds a TLS listener (HTTP/1.1, a localhost certificate from a bench CA),
#         nginx proxies to it with proxy_ssl and kept-alive connections
#         (nginx-proxy-tls.conf), payshim with upstream.url https://localhost:PORT and
#         upstream.ca the bench CA. Both verify the certificate.
#
# Proxy and upstream (and Redis) run pinned to core 0, wrk to core 1. Every target gets a
# 3 s warm-up, then one measured wrk run of --duration, 64 keep-alive connections.
# --rounds N runs the selected targets N times, reversing their order every other round
# (A B, B A, A B...), and adds a table of per-target medians: this VM drifts between fast
# and slow states for minutes, so compare medians of interleaved rounds, not single runs.
# Raw outputs go to bench/out/<UTC timestamp>/ (gitignored). --perf also samples payshim
# with `perf record -g` during the measured runs (rows marked "profiled"; slower).
# Access logs and audit files (~1 GB per full run) are cut to their first 1000 lines once
# counted and verified, unless --keep-logs. See bench/README.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")

DURATION=15s
WARMUP=3s
CONNS=64
ONLY=all
BUILD=1
INSTALL=1
PERF=0
KEEP_LOGS=0
ROUNDS=1
AB_BASE=""
AB_REQUEST=payments
AB_IDEM=""
AB_REQUEST_GIVEN=0
UPSTREAM_TLS=0

# Loopback ports (payshim's own are also in payshim-bench.toml; run.sh passes them as
# PAYSHIM__ overrides so the two cannot drift apart).
UPSTREAM_PORT=${BENCH_UPSTREAM_PORT:-18080}
UPSTREAM_TLS_PORT=${BENCH_UPSTREAM_TLS_PORT:-18081}
PAYSHIM_PORT=${BENCH_PAYSHIM_PORT:-18443}
ADMIN_PORT=${BENCH_ADMIN_PORT:-19901}
NGINX_PORT=${BENCH_NGINX_PORT:-18444}
HAPROXY_PORT=${BENCH_HAPROXY_PORT:-18445}
REDIS_PORT=${BENCH_REDIS_PORT:-16379}

PROXY_CPU=0
WRK_CPU=1

STOREFRONT_KEY=bench-storefront-key-0001
ALL_TARGETS=(direct nginx haproxy payshim-passthrough payshim-payments payshim-payments-limits payshim-payments-redis)

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION=${2:?--duration needs a value like 15s}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --only) ONLY=${2:?--only needs a group or target list}; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        --no-install) INSTALL=0; shift ;;
        --perf) PERF=1; shift ;;
        --keep-logs) KEEP_LOGS=1; shift ;;
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
        --rounds=*) ROUNDS=${1#*=}; shift ;;
        --ab-base) AB_BASE=${2:?--ab-base needs a payshim binary}; shift 2 ;;
        --ab-request) AB_REQUEST=${2:?--ab-request needs passthrough or payments}; AB_REQUEST_GIVEN=1; shift 2 ;;
        --ab-idem) AB_IDEM=${2:?--ab-idem needs local or redis}; shift 2 ;;
        --upstream-tls) UPSTREAM_TLS=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

# Duration in whole seconds ("15s", "1m", "20").
to_seconds() {
    local v=$1
    case "$v" in
        *ms) echo "run.sh: duration $v is too short" >&2; exit 2 ;;
        *s) v=${v%s}; [[ $v =~ ^[0-9]+$ ]] || { echo "run.sh: bad duration $1" >&2; exit 2; }; echo "$v" ;;
        *m) v=${v%m}; [[ $v =~ ^[0-9]+$ ]] || { echo "run.sh: bad duration $1" >&2; exit 2; }; echo $((v * 60)) ;;
        *) [[ $v =~ ^[0-9]+$ ]] || { echo "run.sh: bad duration $1" >&2; exit 2; }; echo "$v" ;;
    esac
}
DUR_S=$(to_seconds "$DURATION")
WARM_S=$(to_seconds "$WARMUP")
if ! [[ $ROUNDS =~ ^[1-9][0-9]?$ ]]; then
    echo "run.sh: --rounds must be a number from 1 to 99" >&2
    exit 2
fi
if [[ $AB_REQUEST != passthrough && $AB_REQUEST != payments ]]; then
    echo "run.sh: --ab-request must be passthrough or payments" >&2
    exit 2
fi
if [[ -n $AB_IDEM && $AB_IDEM != local && $AB_IDEM != redis ]]; then
    echo "run.sh: --ab-idem must be local or redis" >&2
    exit 2
fi
if [[ -n $AB_IDEM && -n $AB_BASE ]]; then
    echo "run.sh: --ab-idem and --ab-base do not go together" >&2
    exit 2
fi
if [[ -n $AB_BASE && $AB_BASE != nginx && ! -x $AB_BASE ]]; then
    echo "run.sh: --ab-base $AB_BASE is neither an executable nor 'nginx'" >&2
    exit 2
fi
# --ab-base nginx: nginx against the current build, on the passthrough request unless
# --ab-request payments (nginx then still gets the passthrough request).
[[ $AB_BASE == nginx ]] && (( ! AB_REQUEST_GIVEN )) && AB_REQUEST=passthrough
if (( DUR_S < 1 || DUR_S > 600 )); then
    echo "run.sh: --duration must be between 1s and 10m" >&2
    exit 2
fi

# Targets to run, in the fixed order of ALL_TARGETS.
declare -A WANT=()
IFS=',' read -r -a _sel <<<"$ONLY"
for s in "${_sel[@]}"; do
    case "$s" in
        all) for t in "${ALL_TARGETS[@]}"; do WANT[$t]=1; done ;;
        passthrough) for t in direct nginx haproxy payshim-passthrough; do WANT[$t]=1; done ;;
        payments) WANT[payshim-payments]=1 ;;
        limits) for t in payshim-payments payshim-payments-limits payshim-payments-redis; do WANT[$t]=1; done ;;
        ab|payshim-ab) WANT[payshim-ab]=1 ;;
        *)
            ok=0
            for t in "${ALL_TARGETS[@]}"; do [[ $t == "$s" ]] && ok=1; done
            if (( ! ok )); then
                echo "run.sh: unknown group or target '$s' (groups: all passthrough payments limits; targets: ${ALL_TARGETS[*]})" >&2
                exit 2
            fi
            WANT[$s]=1 ;;
    esac
done
TARGETS=()
for t in "${ALL_TARGETS[@]}" payshim-ab; do [[ -n ${WANT[$t]:-} ]] && TARGETS+=("$t"); done
wants_payshim=0; wants_redis=0; wants_haproxy=0
for t in "${TARGETS[@]}"; do
    [[ $t == payshim-* ]] && wants_payshim=1
    [[ $t == payshim-payments-redis ]] && wants_redis=1
    [[ $t == haproxy ]] && wants_haproxy=1
done
[[ $AB_IDEM == redis ]] && wants_redis=1

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------
# Packages (CI machines are fresh). Daemons are kept from starting on install.

install_missing() {
    local -a pkgs=()
    command -v wrk >/dev/null || pkgs+=(wrk)
    command -v nginx >/dev/null || pkgs+=(nginx-light)
    command -v curl >/dev/null || pkgs+=(curl)
    command -v openssl >/dev/null || pkgs+=(openssl)
    command -v taskset >/dev/null || pkgs+=(util-linux)
    command -v ss >/dev/null || pkgs+=(iproute2)
    if (( wants_haproxy )); then command -v haproxy >/dev/null || pkgs+=(haproxy); fi
    if (( wants_redis )); then
        command -v redis-server >/dev/null || pkgs+=(redis-server)
        command -v redis-cli >/dev/null || pkgs+=(redis-tools)
    fi
    (( ${#pkgs[@]} == 0 )) && return 0
    if (( ! INSTALL )); then die "missing packages: ${pkgs[*]} (run without --no-install)"; fi
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then sudo=sudo; fi
    log "installing ${pkgs[*]}"
    # The Debian packages start their daemons (nginx on :80, redis on :6379) on
    # install; a policy-rc.d that answers 101 prevents that, as in container images.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod 755 "$policy"
        added_policy=1
    fi
    local rc=0
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}"; } || rc=$?
    if (( added_policy )); then $sudo rm -f "$policy"; fi
    (( rc == 0 )) || die "apt-get install ${pkgs[*]} failed"
}
install_missing

NCPU=$(nproc)
if (( NCPU < 2 )); then
    log "WARNING: only $NCPU CPU: wrk shares the core with the proxy; figures are not comparable"
    WRK_CPU=0
fi

# ---------------------------------------------------------------------------------------
# Output directory, processes, cleanup.

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH_DIR/out/$STAMP
mkdir -p "$OUT"
log "output: $OUT"

declare -A PIDS=()     # name -> pid of every process this script started and still runs

stop_proc() {
    local name=$1 pid=${PIDS[$1]:-}
    [[ -z $pid ]] && return 0
    unset "PIDS[$name]"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) did not stop on SIGTERM; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local n
    for n in "${!PIDS[@]}"; do stop_proc "$n"; done
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

port_busy() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

check_ports() {
    local p
    for p in "$@"; do
        if port_busy "$p"; then
            die "port 127.0.0.1:$p is already in use (another bench run? set BENCH_*_PORT)"
        fi
    done
}

# wait_ready NAME URL: polls until URL answers (any HTTP status), the process is alive.
wait_ready() {
    local name=$1 url=$2 i code
    for i in $(seq 1 150); do
        if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
            log "$name exited during start-up"
            return 1
        fi
        code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
        if [[ -n $code && $code != 000 ]]; then return 0; fi
        sleep 0.1
    done
    log "$name not answering at $url after 15 s"
    return 1
}

render() { # template -> file, replacing the placeholders
    sed -e "s|@OUT@|$OUT|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@PORT@|$3|g" \
        -e "s|@UPSTREAM_TLS_PORT@|$UPSTREAM_TLS_PORT|g" "$1" >"$2"
}

# Machine conditions: the machine is shared; a concurrent build halves the figures.
busy_report() {
    local load others
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    others=$(ps -eo comm= | grep -cE '^(cargo|rustc|cc|c\+\+|ld|ld\.lld|mold|cc1|cc1plus|rust-lld)$' || true)
    echo "load=$load builds=$others"
}

# CPU time (ticks) of every process: "pid comm ticks". Processes that are not part of
# the benchmark and use CPU during a measured run (other people's builds, fuzzers) make
# the figures low; run_target reports them in the notes.
proc_times() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk '{
        s = $0; p = 0
        while ((k = index(substr(s, p + 1), ") ")) > 0) p += k
        o = index(s, "(")
        comm = substr(s, o + 1, p - o - 1); gsub(/[ \t]/, "_", comm)
        split(substr(s, p + 2), F, " ")
        # F[7] = flags; PF_KTHREAD (0x200000): kernel threads (I/O completion, writeback)
        # mostly work for the bench itself (the audit fsyncs); kept apart from "others".
        print $1, comm, F[12] + F[13], int(F[7] / 2097152) % 2, F[2] }' || true
}
# before after pid requests -> CPU microseconds per request of pid and its children
# (nginx's worker; payshim's threads are in its own line already)
proc_cpu_per_req() {
    local hz
    hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
    awk -v hz="$hz" -v root="$3" -v reqs="$4" '
        FNR == NR { B[$1] = $3; next }
        $1 == root || $5 == root { d += $3 - ($1 in B ? B[$1] : 0) }
        END { if (reqs > 0) printf "%.1f", d * 1e6 / hz / reqs }' <(echo "$1") <(echo "$2")
}
# before after seconds -> "N% (name N%, ...)" of CPU used by user processes outside the bench
others_cpu() {
    local hz
    hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
    awk -v hz="$hz" -v secs="$3" '
        FNR == NR { B[$1] = $3; next }
        { if ($4 == 1) next
          if ($2 ~ /^(wrk|nginx|haproxy|payshim|redis-server|perf|taskset|curl|timeout|sleep|run\.sh|bash|awk|cat|sed|grep)$/) next
          d = $3 - ($1 in B ? B[$1] : 0); if (d <= 0) next
          C[$2] += d; tot += d }
        END {
          pct = 100 * tot / hz / secs; out = sprintf("%.0f%%", pct)
          n = 0; for (c in C) { N[++n] = c }
          # top 3 by CPU
          for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (C[N[j]] > C[N[i]]) { t = N[i]; N[i] = N[j]; N[j] = t }
          sep = " ("; for (i = 1; i <= n && i <= 3; i++) {
            if (100 * C[N[i]] / hz / secs < 1) break
            out = out sep N[i] " " sprintf("%.0f%%", 100 * C[N[i]] / hz / secs); sep = ", " }
          if (sep == ", ") out = out ")"
          print out }' <(echo "$1") <(echo "$2")
}

# CPU busy percentage per core between two /proc/stat snapshots.
cpu_snapshot() { grep -E '^cpu[01] ' /proc/stat; }
cpu_busy() { # before after core -> percent
    local b a
    b=$(grep "^cpu$3 " <<<"$1"); a=$(grep "^cpu$3 " <<<"$2")
    awk -v b="$b" -v a="$a" 'BEGIN {
        nb = split(b, B, " "); split(a, A, " ");
        tb = 0; ta = 0; for (i = 2; i <= nb; i++) { tb += B[i]; ta += A[i] }
        ib = B[5] + B[6]; ia = A[5] + A[6];
        dt = ta - tb; if (dt <= 0) { print "?"; exit }
        printf "%.0f", 100 * (1 - (ia - ib) / dt) }'
}

# ---------------------------------------------------------------------------------------
# Build payshim, certificates, upstream.

{
    echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host=$(hostname) kernel=$(uname -r) cpus=$NCPU"
    grep -m1 'model name' /proc/cpuinfo || true
    grep MemTotal /proc/meminfo || true
    echo "duration=${DUR_S}s warmup=${WARM_S}s connections=$CONNS targets=${TARGETS[*]}"
    echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "nginx: $(nginx -v 2>&1)"
    if command -v haproxy >/dev/null; then echo "haproxy: $(haproxy -v 2>&1 | head -1)"; fi
    echo "openssl: $(openssl version)"
    echo "at start: $(busy_report)"
} >"$OUT/env.txt"

PAYSHIM_BIN=""
if (( wants_payshim )); then
    if (( BUILD )); then
        log "cargo build --release"
        (cd "$ROOT" && cargo build --release) >"$OUT/build.log" 2>&1 \
            || { tail -30 "$OUT/build.log" >&2; die "cargo build --release failed (see $OUT/build.log)"; }
    fi
    # BENCH_PAYSHIM_BIN: measure another build (a profiling build with frame pointers, an
    # older commit) instead of target/release/payshim.
    src_bin=${BENCH_PAYSHIM_BIN:-$ROOT/target/release/payshim}
    [[ -x $src_bin ]] || die "no $src_bin (build it or drop --no-build)"
    # A private copy: a rebuild by someone else during the run cannot swap the binary.
    cp "$src_bin" "$OUT/payshim"
    PAYSHIM_BIN=$OUT/payshim
    {
        echo "payshim: $src_bin sha256 $(sha256sum "$PAYSHIM_BIN" | cut -c1-16) built $(date -u -r "$src_bin" +%Y-%m-%dT%H:%M:%SZ)"
    } >>"$OUT/env.txt"
fi

mkdir -p "$OUT/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" 2>"$OUT/tls/openssl.log" \
    || die "openssl req failed (see $OUT/tls/openssl.log)"
cat "$OUT/tls/cert.pem" "$OUT/tls/key.pem" >"$OUT/tls/combined.pem"

# --upstream-tls: a bench CA and a localhost leaf it signs, for the upstream's TLS
# listener (rustls, like browsers, refuses a self-signed CA certificate as a server's).
NGINX_PROXY_CONF=$BENCH_DIR/nginx-proxy.conf
UPSTREAM_CONF=$BENCH_DIR/upstream/nginx-upstream.conf
PAYSHIM_UPSTREAM_ENV=(PAYSHIM__UPSTREAM__URL="http://127.0.0.1:$UPSTREAM_PORT")
upstream_tls_setup() {
    local d=$OUT/tls
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj "/CN=payshim bench upstream CA" -keyout "$d/upstream-ca.key" -out "$d/upstream-ca.pem" &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj /CN=localhost -keyout "$d/upstream-key.pem" -out "$d/upstream.csr" &&
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/upstream.ext" &&
        openssl x509 -req -in "$d/upstream.csr" -CA "$d/upstream-ca.pem" -CAkey "$d/upstream-ca.key" \
            -CAcreateserial -days 2 -extfile "$d/upstream.ext" -out "$d/upstream-cert.pem"
    } >>"$d/openssl.log" 2>&1 || die "upstream certificate failed (see $d/openssl.log)"
    NGINX_PROXY_CONF=$BENCH_DIR/nginx-proxy-tls.conf
    UPSTREAM_CONF=$BENCH_DIR/upstream/nginx-upstream-tls.conf
    PAYSHIM_UPSTREAM_ENV=(PAYSHIM__UPSTREAM__URL="https://localhost:$UPSTREAM_TLS_PORT"
        PAYSHIM__UPSTREAM__CA="$d/upstream-ca.pem")
    check_ports "$UPSTREAM_TLS_PORT"
    echo "upstream: TLS on 127.0.0.1:$UPSTREAM_TLS_PORT (--upstream-tls)" >>"$OUT/env.txt"
}
(( UPSTREAM_TLS )) && upstream_tls_setup

check_ports "$UPSTREAM_PORT"
mkdir -p "$OUT/upstream/tmp"
render "$UPSTREAM_CONF" "$OUT/upstream/nginx.conf" "$UPSTREAM_PORT"
taskset -c "$PROXY_CPU" nginx -p "$OUT/upstream" -e "$OUT/upstream/error.log" \
    -c "$OUT/upstream/nginx.conf" >"$OUT/upstream/stdout.log" 2>&1 &
PIDS[upstream]=$!
UPSTREAM_ROOT_PID=$!
wait_ready upstream "http://127.0.0.1:$UPSTREAM_PORT/" || die "upstream did not start (see $OUT/upstream/error.log)"
log "upstream nginx on 127.0.0.1:$UPSTREAM_PORT (core $PROXY_CPU)"

# ---------------------------------------------------------------------------------------
# One target.

PAYMENT_BODY='{"data":{"gateway":"card_connect","method":"purchase","first_name":"Ada","last_name":"Lovelace","number":"4111111111111111","month":"12","year":"2031","verification_value":"123"}}'
PASS_BODY_FILE=$OUT/passthrough-body.json
printf '%s' '{"data":{"type":"bench_event","order_id":"9b2f7c1e-3d4a-4b5c-8d6e-7f8a9b0c1d2e","customer":{"name":"Ada Lovelace","email":"ada@example.com"},"items":[{"sku":"BOOK-001","quantity":1,"amount":4999},{"sku":"PEN-042","quantity":2,"amount":350}],"currency":"USD"}}' >"$PASS_BODY_FILE"

# Results, one line per target (tab-separated), appended by run_target.
RESULTS=$OUT/results.tsv
printf 'target\trps\tp50_us\tp99_us\tnon2xx\terrors\taudit_records\trecords_per_s\tfsyncs\tfsync_source\tcpu0\tcpu1\tnote\tproxy_cpu_us_per_req\tround\n' >"$RESULTS"

start_payshim() { # name dir [extra env...]
    local name=$1 dir=$2; shift 2
    check_ports "$PAYSHIM_PORT" "$ADMIN_PORT"
    mkdir -p "$dir"
    (
        cd "$dir"
        exec env "$@" \
            PAYSHIM__SERVER__LISTEN="127.0.0.1:$PAYSHIM_PORT" \
            PAYSHIM__ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT" \
            "${PAYSHIM_UPSTREAM_ENV[@]}" \
            taskset -c "$PROXY_CPU" "$PAYSHIM_BIN" --config "$BENCH_DIR/payshim-bench.toml"
    ) >"$dir/payshim.stdout.log" 2>"$dir/payshim.stderr.log" &
    PIDS[$name]=$!
    wait_ready "$name" "http://127.0.0.1:$ADMIN_PORT/healthz" || {
        tail -n 5 "$dir/payshim.stderr.log" "$dir/payshim.stdout.log" >&2 || true
        return 1
    }
    # Ready = listeners up, upstream token, audit writable (and Redis, when configured).
    local i code
    for i in $(seq 1 50); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$ADMIN_PORT/readyz" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    log "$name: /readyz answers $code, continuing anyway"
}

start_redis() {
    check_ports "$REDIS_PORT"
    mkdir -p "$OUT/redis"
    taskset -c "$PROXY_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
        --save "" --appendonly no --protected-mode yes --dir "$OUT/redis" \
        --logfile "$OUT/redis/redis.log" &
    PIDS[redis]=$!
    local i
    for i in $(seq 1 50); do
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "redis-server did not start (see $OUT/redis/redis.log)"
    return 1
}

redis_commands() {
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info stats 2>/dev/null \
        | awk -F: '/^total_commands_processed:/ { gsub(/\r/, "", $2); print $2 }' || true
}

audit_lines() { # dir -> lines in every audit file (rotation keeps several)
    local d=$1/audit
    if [[ -d $d ]] && compgen -G "$d/*" >/dev/null; then
        cat "$d"/* 2>/dev/null | wc -l || true
    else
        echo 0
    fi
}

metric() { # file name -> value (sum over label sets), empty when absent
    awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $2; f = 1 } END { if (f) printf "%d", s }' "$1" 2>/dev/null || true
}

# The audit writer's fsync counter, under whichever name this build exports it.
FSYNC_METRICS=(payshim_audit_syncs_total payshim_audit_fsyncs_total payshim_audit_syncs payshim_audit_fsyncs)
fsync_metric() { # file -> value, empty when absent
    local m v
    for m in "${FSYNC_METRICS[@]}"; do
        v=$(metric "$1" "$m")
        if [[ -n $v ]]; then echo "$v"; return 0; fi
    done
}

# Big per-request files: count their lines, then keep the first 1000 as a sample.
trim_logs() {
    local dir=$1 f
    (( KEEP_LOGS )) && return 0
    while IFS= read -r -d '' f; do
        echo "${f#"$dir"/}: $(wc -l <"$f") lines, $(du -h "$f" | cut -f1)" >>"$dir/logs.txt"
        if [[ $f == */audit/payshim.jsonl.* ]]; then
            rm -f "$f"      # rotated audit files: verified and counted above
        else
            head -n 1000 "$f" >"$f.head" && mv "$f.head" "$f"
        fi
    done < <(find "$dir" -type f \( -name '*.log' -o -path '*/audit/*' \) -size +1M -print0 | sort -z)
    if [[ -s $dir/logs.txt ]]; then
        echo "(files above cut to their first 1000 lines; rotated audit files removed; --keep-logs keeps them)" >>"$dir/logs.txt"
    fi
}

# run_wrk SECONDS OUTFILE ARGS...: one bounded wrk run on the load core. In the
# background + wait, so that a signal to run.sh is handled at once (cleanup stops it).
run_wrk() {
    local secs=$1 out=$2; shift 2
    timeout -k 5 $((secs + 30)) taskset -c "$WRK_CPU" \
        wrk -t1 -c"$CONNS" -d"${secs}s" "$@" >"$out" 2>&1 &
    PIDS[wrk]=$!
    wait "${PIDS[wrk]}" || true
    unset "PIDS[wrk]"
}

# The round being run (1..ROUNDS); with several rounds each has its own output folder.
ROUND=1

# verify_audit DIR: `payshim audit verify` over DIR/audit (rotated files first, in
# order), output to DIR/audit-verify.txt; fails when the chain does not verify.
verify_audit() {
    local dir=$1 files
    files=$(cd "$dir" && { ls audit/payshim.jsonl.* 2>/dev/null | sort -V; ls audit/payshim.jsonl 2>/dev/null; } || true)
    # shellcheck disable=SC2086 # one file name per word (no spaces: we chose them)
    (cd "$dir" && timeout 120 "$PAYSHIM_BIN" --config "$BENCH_DIR/payshim-bench.toml" audit verify $files) \
        >"$dir/audit-verify.txt" 2>&1
}

run_target() {
    local t=$1 dir=$OUT/$1 url lua kind=tls note="" port
    (( ROUNDS > 1 )) && dir=$OUT/round$ROUND/$1
    mkdir -p "$dir"
    case "$t" in
        direct) kind=plain; port=$UPSTREAM_PORT; lua=passthrough ;;
        nginx) port=$NGINX_PORT; lua=passthrough ;;
        haproxy) port=$HAPROXY_PORT; lua=passthrough ;;
        payshim-passthrough) port=$PAYSHIM_PORT; lua=passthrough ;;
        payshim-payments*) port=$PAYSHIM_PORT; lua=payments ;;
    esac
    if [[ $lua == passthrough ]]; then
        url=$([[ $kind == plain ]] && echo http || echo https)://127.0.0.1:$port/v2/bench/order-42
    else
        url=https://127.0.0.1:$port/
    fi

    log "== $t"
    local limits_env=(PAYSHIM__LIMITS__PER_CLIENT=1000000/s PAYSHIM__LIMITS__PER_IP=1000000/s
        PAYSHIM__LIMITS__PER_ORDER=1000000/s PAYSHIM__LIMITS__PER_CARD=1000000/s
        PAYSHIM__LIMITS__CARD_ATTEMPTS=1000000/s)
    case "$t" in
        direct) ;;
        nginx)
            check_ports "$NGINX_PORT"
            mkdir -p "$dir/nginx/tmp"
            # The template's paths are under @OUT@/nginx; keep them inside this target.
            sed -e "s|@OUT@/nginx|$dir/nginx|g" -e "s|@OUT@|$OUT|g" \
                -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@PORT@|$NGINX_PORT|g" \
                -e "s|@UPSTREAM_TLS_PORT@|$UPSTREAM_TLS_PORT|g" \
                "$NGINX_PROXY_CONF" >"$dir/nginx.conf"
            taskset -c "$PROXY_CPU" nginx -p "$dir/nginx" -e "$dir/nginx/error.log" \
                -c "$dir/nginx.conf" >"$dir/nginx.stdout.log" 2>&1 &
            PIDS[$t]=$!
            wait_ready "$t" "https://127.0.0.1:$NGINX_PORT/" || { note="nginx did not start"; }
            ;;
        haproxy)
            check_ports "$HAPROXY_PORT"
            mkdir -p "$dir/haproxy"
            sed -e "s|@OUT@/haproxy|$dir/haproxy|g" -e "s|@OUT@|$OUT|g" \
                -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@PORT@|$HAPROXY_PORT|g" \
                "$BENCH_DIR/haproxy.cfg" >"$dir/haproxy.cfg"
            # -db: foreground; the request log goes to stdout (log stdout ...).
            taskset -c "$PROXY_CPU" haproxy -db -f "$dir/haproxy.cfg" \
                >"$dir/access.log" 2>"$dir/haproxy.stderr.log" &
            PIDS[$t]=$!
            wait_ready "$t" "https://127.0.0.1:$HAPROXY_PORT/" || { note="haproxy did not start"; }
            ;;
        payshim-passthrough|payshim-payments)
            start_payshim "$t" "$dir" || note="payshim did not start"
            ;;
        payshim-payments-limits)
            start_payshim "$t" "$dir" "${limits_env[@]}" || note="payshim did not start"
            ;;
        payshim-payments-redis)
            if start_redis; then
                start_payshim "$t" "$dir" "${limits_env[@]}" \
                    PAYSHIM__LIMITS__REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
                    || note="payshim did not start"
            else
                note="redis did not start"
            fi
            ;;
    esac
    if [[ -n $note ]]; then
        log "$t: $note; skipped"
        printf '%s\t\t\t\t\t\t\t\t\t\t\t\t%s\t\t%s\n' "$t" "$note" "$ROUND" >>"$RESULTS"
        stop_proc "$t"; stop_proc redis
        return 0
    fi

    # TLS parameters actually negotiated (wrk uses the same OpenSSL defaults).
    if [[ $kind == tls ]]; then
        openssl s_client -connect "127.0.0.1:$port" -servername localhost </dev/null 2>/dev/null \
            | grep -E '^(New,|Protocol|Cipher|Server Temp Key|Peer signature type)' >"$dir/tls.txt" || true
    fi

    # One request by hand: the route must answer 201 from the upstream.
    local status sanity_url
    if [[ $lua == payments ]]; then
        sanity_url=https://127.0.0.1:$port/v2/orders/$(cat /proc/sys/kernel/random/uuid)/payments
        status=$(curl -sk -o "$dir/sanity.body" -D "$dir/sanity.headers" -w '%{http_code}' --max-time 5 \
            -H 'Content-Type: application/json' -H "Authorization: Bearer $STOREFRONT_KEY" \
            --data-binary "$PAYMENT_BODY" "$sanity_url" || true)
    else
        status=$(curl -sk -o "$dir/sanity.body" -D "$dir/sanity.headers" -w '%{http_code}' --max-time 5 \
            -H 'Content-Type: application/json' -H "Authorization: Bearer $STOREFRONT_KEY" \
            --data-binary "@$PASS_BODY_FILE" "$url" || true)
    fi
    if [[ $status != 201 ]]; then
        note="sanity request answered ${status:-nothing}, expected 201 (see $t/sanity.body)"
        log "$t: $note; skipped"
        printf '%s\t\t\t\t\t\t\t\t\t\t\t\t%s\t\t%s\n' "$t" "$note" "$ROUND" >>"$RESULTS"
        stop_proc "$t"; stop_proc redis
        return 0
    fi

    local wrk_lua=$BENCH_DIR/lua/$lua.lua
    log "$t: warm-up ${WARM_S}s"
    run_wrk "$WARM_S" "$dir/warmup.txt" -s "$wrk_lua" "$url"

    # Counters before the measured run.
    local audit_before=0 audit_after=0 m_before="" m_after="" redis_before="" redis_after=""
    local perf_pid="" fsync_source=""
    if [[ $t == payshim-* ]]; then
        curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$dir/metrics-before.txt" || true
        audit_before=$(audit_lines "$dir")
        m_before=$(fsync_metric "$dir/metrics-before.txt")
        # No sync counter in /metrics: count fdatasync/fsync calls of the process instead.
        if [[ $lua == payments && -z $m_before ]] && command -v perf >/dev/null; then
            perf stat -x, -o "$dir/perf-fsync.csv" \
                -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync \
                -p "${PIDS[$t]}" -- sleep "$DUR_S" >/dev/null 2>&1 &
            perf_pid=$!
            PIDS[perf-$t]=$perf_pid
        fi
    fi
    if [[ $t == payshim-payments-redis ]]; then redis_before=$(redis_commands); fi

    local prof_pid=""
    if (( PERF )) && [[ $t == payshim-* ]] && command -v perf >/dev/null; then
        perf record -F 499 -g -o "$dir/perf.data" -p "${PIDS[$t]}" -- sleep "$DUR_S" \
            >"$dir/perf-record.log" 2>&1 &
        prof_pid=$!
        PIDS[prof-$t]=$prof_pid
    fi

    local proxy_root_pid=${PIDS[$t]:-} redis_root_pid=""
    if [[ $t == payshim-payments-redis ]]; then redis_root_pid=${PIDS[redis]:-}; fi

    local busy cpu_a cpu_b
    busy=$(busy_report)
    echo "before measured run: $busy" >"$dir/conditions.txt"
    log "$t: measuring ${DUR_S}s ($busy)"
    cpu_b=$(cpu_snapshot)
    local procs_b procs_a forks_b forks_a
    procs_b=$(proc_times)
    forks_b=$(awk '/^processes / { print $2 }' /proc/stat)
    run_wrk "$DUR_S" "$dir/wrk.txt" --latency -s "$wrk_lua" "$url"
    forks_a=$(awk '/^processes / { print $2 }' /proc/stat)
    cpu_a=$(cpu_snapshot)
    procs_a=$(proc_times)
    # Short-lived processes (a build's rustc, cc, ld...) end before the second snapshot
    # and escape others_cpu; count the processes started during the run instead. The
    # bench itself starts at most a handful here (timeout, wrk, perf, sleep).
    local forks=$((forks_a - forks_b))
    local others
    others=$(others_cpu "$procs_b" "$procs_a" "$DUR_S")
    {
        echo "after measured run: $(busy_report)"
        echo "CPU used by other processes during the run (share of one core): $others"
        echo "processes started during the run: $forks"
    } >>"$dir/conditions.txt"
    local cpu0 cpu1
    cpu0=$(cpu_busy "$cpu_b" "$cpu_a" 0)
    cpu1=$(cpu_busy "$cpu_b" "$cpu_a" 1)

    local audit_recs="" rps_audit="" fsyncs=""
    if [[ $t == payshim-* ]]; then
        sleep 0.2
        curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$dir/metrics-after.txt" || true
        audit_after=$(audit_lines "$dir")
        m_after=$(fsync_metric "$dir/metrics-after.txt")
        if [[ $lua == payments ]]; then
            audit_recs=$((audit_after - audit_before))
            rps_audit=$(awk -v r="$audit_recs" -v d="$DUR_S" 'BEGIN { printf "%.0f", r / d }')
            if [[ -n $m_before && -n $m_after ]]; then
                fsyncs=$((m_after - m_before)); fsync_source=metrics
            elif [[ -n $perf_pid ]]; then
                wait "$perf_pid" 2>/dev/null || true
                unset "PIDS[perf-$t]"
                fsyncs=$(awk -F, '/sys_enter_f(data)?sync/ && $1 ~ /^[0-9]+$/ { s += $1 } END { if (NR) print s + 0 }' "$dir/perf-fsync.csv" 2>/dev/null || true)
                [[ -n $fsyncs ]] && fsync_source=perf
            fi
            if (( audit_recs == 0 )); then
                note="no audit records written: payment pipeline not wired in this build?"
            fi
        fi
    fi
    if [[ $t == payshim-payments-redis ]]; then
        redis_after=$(redis_commands)
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info commandstats >"$dir/redis-commandstats.txt" 2>&1 || true
        if [[ -n $redis_before && -n $redis_after ]]; then
            # minus 1: the INFO that read redis_before is itself counted in redis_after
            local rc=$((redis_after - redis_before - 1))
            note="${note:+$note; }redis commands: $rc"
            (( rc == 0 )) && note="$note (limits not using Redis in this build?)"
        fi
    fi
    if [[ -n $perf_pid ]]; then stop_proc "perf-$t"; fi
    if [[ -n $prof_pid ]]; then
        wait "$prof_pid" 2>/dev/null || true
        unset "PIDS[prof-$t]"
        note="${note:+$note; }profiled (perf.data)"
    fi
    stop_proc "$t"
    stop_proc redis

    if [[ -n $prof_pid && -s $dir/perf.data ]]; then
        {
            echo "# CPU samples by thread and binary"
            perf report -i "$dir/perf.data" --no-children --sort comm,dso -g none --stdio 2>/dev/null \
                | grep -v '^#' | grep -v '^$'
            echo "# hottest symbols (self time)"
            perf report -i "$dir/perf.data" --no-children --sort comm,dso,symbol -g none \
                --percent-limit 0.4 --stdio 2>/dev/null | grep -v '^#' | grep -v '^$'
        } | sed 's/  */ /g' >"$dir/perf-report.txt" || true
    fi

    # After the run: the audit chain must verify, and every forwarded payment should
    # have its completed record (a missing one is an outcome to reconcile).
    if [[ $lua == payments && -d $dir/audit ]] && compgen -G "$dir/audit/*" >/dev/null; then
        local fwd cmp
        verify_audit "$dir" || note="${note:+$note; }AUDIT VERIFY FAILED (see $t/audit-verify.txt)"
        fwd=$(cat "$dir"/audit/* | grep -c '"event":"payment.forwarded"' || true)
        cmp=$(cat "$dir"/audit/* | grep -c '"event":"payment.completed"' || true)
        echo "payment.forwarded=$fwd payment.completed=$cmp (whole run, warm-up included)" >>"$dir/audit-verify.txt"
        if (( fwd > cmp )); then
            note="${note:+$note; }$((fwd - cmp)) forwarded without completed"
        fi
    fi

    trim_logs "$dir"

    local res
    res=$(grep '^BENCH_RESULT' "$dir/wrk.txt" || true)
    if [[ -z $res ]]; then
        note="${note:+$note; }wrk produced no result (see $t/wrk.txt)"
        printf '%s\t\t\t\t\t\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\t%s\n' "$t" "$audit_recs" "$rps_audit" \
            "$fsyncs" "$fsync_source" "$cpu0" "$cpu1" "$note" "$ROUND" >>"$RESULTS"
        return 0
    fi
    local rps p50 p99 non2xx errs reqs root us_req
    kv() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$res"; }
    rps=$(kv rps); p50=$(kv p50_us); p99=$(kv p99_us); non2xx=$(kv non2xx); reqs=$(kv requests)
    # CPU time the proxy (for "direct": the upstream) used per request, all threads and
    # worker processes, system time included.
    if [[ $t == direct ]]; then root=$UPSTREAM_ROOT_PID; else root=$proxy_root_pid; fi
    us_req=$(proc_cpu_per_req "$procs_b" "$procs_a" "$root" "$reqs")
    # The upstream shares core 0: how much of it a proxy's requests cost there is part of
    # the proxy's bill (request shape, connection reuse, batching).
    if [[ $t != direct ]]; then
        note="${note:+$note; }upstream $(proc_cpu_per_req "$procs_b" "$procs_a" "$UPSTREAM_ROOT_PID" "$reqs") us CPU/req"
    fi
    if [[ -n $redis_root_pid ]]; then
        note="${note:+$note; }redis-server $(proc_cpu_per_req "$procs_b" "$procs_a" "$redis_root_pid" "$reqs") us CPU/req"
    fi
    errs=$(( $(kv connect_err) + $(kv read_err) + $(kv write_err) + $(kv timeouts) ))
    if (( non2xx > 0 )); then note="${note:+$note; }$non2xx non-2xx responses"; fi
    # More than 5% of a core used by unrelated processes: the figures are not clean.
    if [[ ${others%%%*} -gt 5 ]]; then note="${note:+$note; }NOT CLEAN: others used $others of a core"; fi
    if (( forks > 10 )); then note="${note:+$note; }NOT CLEAN: $forks processes started during the run (a build?)"; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rps" "$p50" "$p99" \
        "$non2xx" "$errs" "$audit_recs" "$rps_audit" "$fsyncs" "$fsync_source" "$cpu0" "$cpu1" \
        "$note" "$us_req" "$ROUND" >>"$RESULTS"
    log "$t: $(awk -v r="$rps" 'BEGIN { printf "%.0f", r }') req/s, p50 ${p50} us, p99 ${p99} us"
}

# payshim-ab: payshim with limits off and payshim with every limit on (the
# payshim-payments-limits settings), started side by side on core 0 and loaded at the same
# time, each by its own wrk on core 1 with half the connections. Both share whatever state
# the machine is in, so their throughput ratio is the limits' cost without the minutes-long
# drift between separate runs. Two rows: payshim-ab-off and payshim-ab-limits. With
# --ab-base FILE the first side is that binary and the second the current build, limits
# off on both (rows payshim-ab-base and payshim-ab-new): a code change measured the same way.
# nginx as the nginx target runs it (nginx-proxy.conf), for the nginx side of payshim-ab.
start_ab_nginx() { # dir
    local dir=$1
    check_ports "$NGINX_PORT"
    mkdir -p "$dir/nginx/tmp"
    sed -e "s|@OUT@/nginx|$dir/nginx|g" -e "s|@OUT@|$OUT|g" \
        -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@PORT@|$NGINX_PORT|g" \
        -e "s|@UPSTREAM_TLS_PORT@|$UPSTREAM_TLS_PORT|g" \
        "$NGINX_PROXY_CONF" >"$dir/nginx.conf"
    taskset -c "$PROXY_CPU" nginx -p "$dir/nginx" -e "$dir/nginx/error.log" \
        -c "$dir/nginx.conf" >"$dir/nginx.stdout.log" 2>&1 &
    PIDS[ab-nginx]=$!
    wait_ready ab-nginx "https://127.0.0.1:$NGINX_PORT/"
}

run_ab() {
    local base=$OUT/payshim-ab
    (( ROUNDS > 1 )) && base=$OUT/round$ROUND/payshim-ab
    local half=$((CONNS / 2)) side url=https://127.0.0.1
    local a=off b=limits
    [[ -n $AB_BASE ]] && { a=base; b=new; }
    [[ $AB_BASE == nginx ]] && { a=nginx; b=payshim; }
    [[ -n $AB_IDEM ]] && { a=idem-off; b=idem-$AB_IDEM; }
    local -A port=([$a]=$PAYSHIM_PORT [$b]=$((PAYSHIM_PORT + 10)))
    [[ $a == nginx ]] && port[$a]=$NGINX_PORT
    local -A admin=([$a]=$ADMIN_PORT [$b]=$((ADMIN_PORT + 10)))
    local -A bin=([$a]=${AB_BASE:-$PAYSHIM_BIN} [$b]=$PAYSHIM_BIN)
    local -A wrkpid=() lua=([$a]=$AB_REQUEST [$b]=$AB_REQUEST) luaarg=([$a]= [$b]=)
    [[ $a == nginx ]] && lua[$a]=passthrough
    # payments.lua's one argument: a unique Idempotency-Key on every request.
    [[ -n $AB_IDEM ]] && luaarg[$b]=keyed
    log "== payshim-ab ($a and $b at once, $AB_REQUEST requests, $half connections each)"
    for side in $a $b; do
        if [[ $side == nginx ]]; then
            start_ab_nginx "$base/nginx" || {
                log "payshim-ab: nginx did not start; skipped"
                stop_proc ab-nginx
                return 0
            }
            continue
        fi
        local env=()
        [[ $side == limits || ( $side == payshim && $AB_REQUEST == payments ) ]] \
            && env=(PAYSHIM__LIMITS__PER_CLIENT=1000000/s
            PAYSHIM__LIMITS__PER_IP=1000000/s PAYSHIM__LIMITS__PER_ORDER=1000000/s
            PAYSHIM__LIMITS__PER_CARD=1000000/s PAYSHIM__LIMITS__CARD_ATTEMPTS=1000000/s)
        [[ $side == idem-off ]] && env=(PAYSHIM__IDEMPOTENCY__DUPLICATE_WINDOW=off
            PAYSHIM__IDEMPOTENCY__ONE_PAYMENT_PER_ORDER=false)
        if [[ $side == idem-redis ]]; then
            start_redis || { log "payshim-ab: redis did not start; skipped"; stop_proc "ab-$a"; return 0; }
            env=(PAYSHIM__LIMITS__REDIS_URL=redis://127.0.0.1:$REDIS_PORT)
        fi
        # start_payshim reads the binary and ports from these names; shadow them per side.
        PAYSHIM_BIN=${bin[$side]} PAYSHIM_PORT=${port[$side]} ADMIN_PORT=${admin[$side]} \
            start_payshim "ab-$side" "$base/$side" "${env[@]}" || {
            log "payshim-ab: the $side side did not start; skipped"
            stop_proc "ab-$a"; stop_proc "ab-$b"
            return 0
        }
    done
    # Warm-up, then the measured runs: both wrks at once.
    local phase secs procs_b=""
    for phase in warmup measure; do
        secs=$WARM_S; [[ $phase == measure ]] && secs=$DUR_S
        [[ $phase == measure ]] && { procs_b=$(proc_times); log "payshim-ab: measuring ${DUR_S}s ($(busy_report))"; }
        for side in $a $b; do
            timeout -k 5 $((secs + 30)) taskset -c "$WRK_CPU" wrk -t1 -c"$half" -d"${secs}s" \
                --latency -s "$BENCH_DIR/lua/${lua[$side]}.lua" "$url:${port[$side]}/" \
                ${luaarg[$side]:+-- "${luaarg[$side]}"} >"$base/$side/$phase.txt" 2>&1 &
            wrkpid[$side]=$!
            PIDS[wrk-$side]=${wrkpid[$side]}
        done
        for side in $a $b; do wait "${wrkpid[$side]}" || true; unset "PIDS[wrk-$side]"; done
    done
    local procs_a; procs_a=$(proc_times)
    for side in $a $b; do
        local dir=$base/$side res rps p50 p99 reqs us note=""
        local root=${PIDS[ab-$side]}
        stop_proc "ab-$side"
        if [[ $side != nginx ]]; then
            verify_audit "$dir" || note="AUDIT VERIFY FAILED (see $dir/audit-verify.txt)"
        fi
        trim_logs "$dir"
        res=$(grep '^BENCH_RESULT' "$dir/measure.txt" || true)
        kv() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$res"; }
        rps=$(kv rps); p50=$(kv p50_us); p99=$(kv p99_us); reqs=$(kv requests)
        us=$(proc_cpu_per_req "$procs_b" "$procs_a" "$root" "${reqs:-0}")
        local n2; n2=$(kv non2xx); n2=${n2:-0}
        (( n2 > 0 )) && note="${note:+$note; }$n2 non-2xx responses"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t\t\t\t\t\t\t%s\t%s\t%s\n' "payshim-ab-$side" "$rps" "$p50" \
            "$p99" "$(kv non2xx)" "$(( $(kv connect_err) + $(kv read_err) + $(kv write_err) + $(kv timeouts) ))" \
            "$note" "$us" "$ROUND" >>"$RESULTS"
        log "payshim-ab-$side: $(awk -v r="$rps" 'BEGIN { printf "%.0f", r }') req/s, p99 ${p99} us, ${us} us/req"
    done
    [[ $AB_IDEM == redis ]] && stop_proc redis
    return 0
}

for (( ROUND = 1; ROUND <= ROUNDS; ROUND++ )); do
    (( ROUNDS > 1 )) && log "-- round $ROUND of $ROUNDS"
    if (( ROUND % 2 )); then order=("${TARGETS[@]}"); else
        order=(); for (( i = ${#TARGETS[@]} - 1; i >= 0; i-- )); do order+=("${TARGETS[$i]}"); done
    fi
    for t in "${order[@]}"; do
        if [[ $t == payshim-ab ]]; then run_ab; else run_target "$t"; fi
    done
done
stop_proc upstream

# ---------------------------------------------------------------------------------------
# Table.

print_table() {
    awk -F'\t' -v dur="$DUR_S" -v conns="$CONNS" -v rounds="$ROUNDS" '
    function ms(us) { return us == "" ? "-" : sprintf("%.2f", us / 1000) }
    function dash(v) { return v == "" ? "-" : v }
    NR == 1 { next }
    { n++; T[n] = $1; R[n] = $2; P50[n] = $3; P99[n] = $4; N2[n] = $5; E[n] = $6
      A[n] = $7; AR[n] = $8; F[n] = $9; FSRC[n] = $10; C0[n] = $11; C1[n] = $12; NOTE[n] = $13
      U[n] = $14; RD[n] = $15 == "" ? 1 : $15
      if ($1 == "nginx" && $2 != "") NG[RD[n]] = $2 }
    END {
      printf "%-24s %9s %8s %8s %7s %8s %6s %9s %8s %8s %10s %6s %6s  %s\n", "target", "req/s", \
        "p50 ms", "p99 ms", "nginx%", "us/req", "errs", "audit", "recs/s", "fsyncs", "recs/fsync", \
        "cpu0%", "cpu1%", "notes"
      for (i = 1; i <= n; i++) {
        nginx = NG[RD[i]]
        rel = (nginx != "" && R[i] != "") ? sprintf("%.0f", 100 * R[i] / nginx) : "-"
        rpf = (F[i] != "" && F[i] > 0 && A[i] != "") ? sprintf("%.1f", A[i] / F[i]) : "-"
        fs = F[i] == "" ? "-" : F[i] (FSRC[i] == "perf" ? "*" : "")
        printf "%-24s %9s %8s %8s %7s %8s %6s %9s %8s %8s %10s %6s %6s  %s\n", \
          T[i] (rounds > 1 ? " #" RD[i] : ""), \
          (R[i] == "" ? "-" : sprintf("%.0f", R[i])), ms(P50[i]), ms(P99[i]), rel, dash(U[i]), \
          dash(E[i] == "" ? "" : E[i] + N2[i]), dash(A[i]), dash(AR[i]), fs, rpf, \
          dash(C0[i]), dash(C1[i]), NOTE[i]
      }
    }' "$RESULTS"
    echo
    echo "wrk -t1 -c$CONNS -d${DUR_S}s --latency, wrk on core $WRK_CPU, proxy+upstream on core $PROXY_CPU;" \
        "us/req = CPU time of the proxy (direct: the upstream) per request;"
    echo "errs = socket errors + non-2xx; audit = audit records written during the measured run;"
    echo "fsyncs from /metrics (payshim_audit_syncs_total or _fsyncs), or '*' = fdatasync/fsync syscalls counted with perf;" \
        "cpuN% = busy share of core N during the run. Raw output: $OUT"
}
# With --rounds: per target, the median over rounds of req/s, p99 and CPU per request, of
# its throughput as a share of the same round's nginx, and for the payment variants of
# their throughput against the same round's payments run (limits off): the paired
# ratios cancel most of the drift between rounds.
print_medians() {
    awk -F'\t' '
    function median(list,    a, k, i, j, v) {
      k = split(list, a, " ")
      if (k == 0) return ""
      for (i = 2; i <= k; i++) { v = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
      return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    function add(arr, key, v) { if (v != "") arr[key] = arr[key] " " v }
    NR == 1 { next }
    $2 != "" {
      if (!($1 in SEEN)) { SEEN[$1] = 1; ORDER[++n] = $1 }
      add(RPS, $1, $2); add(P99, $1, $4); add(US, $1, $14)
      R[$1, $15] = $2; ROUNDSEEN[$15] = 1
    }
    END {
      for (r in ROUNDSEEN) for (i = 1; i <= n; i++) {
        t = ORDER[i]
        if (((t, r) in R) && (("nginx", r) in R)) add(VSN, t, 100 * R[t, r] / R["nginx", r])
        if (t ~ /^payshim-payments-/ && ((t, r) in R) && (("payshim-payments", r) in R))
          add(VSP, t, 100 * (R[t, r] / R["payshim-payments", r] - 1))
        if (t == "payshim-ab-limits" && ((t, r) in R) && (("payshim-ab-off", r) in R))
          add(VSP, t, 100 * (R[t, r] / R["payshim-ab-off", r] - 1))
        if (t == "payshim-ab-new" && ((t, r) in R) && (("payshim-ab-base", r) in R))
          add(VSP, t, 100 * (R[t, r] / R["payshim-ab-base", r] - 1))
        if (t == "payshim-ab-payshim" && ((t, r) in R) && (("payshim-ab-nginx", r) in R))
          add(VSN, t, 100 * R[t, r] / R["payshim-ab-nginx", r])
      }
      printf "%-24s %7s %9s %8s %8s %8s %14s\n", "median over rounds", "rounds", "req/s", "p99 ms", \
        "us/req", "nginx%", "vs payments%"
      for (i = 1; i <= n; i++) {
        t = ORDER[i]; k = split(RPS[t], tmp, " ")
        vn = median(VSN[t]); vp = median(VSP[t]); us = median(US[t])
        printf "%-24s %7d %9.0f %8.2f %8s %8s %14s\n", t, k, median(RPS[t]), median(P99[t]) / 1000, \
          (us == "" ? "-" : sprintf("%.1f", us)), (vn == "" ? "-" : sprintf("%.0f", vn)), \
          (vp == "" ? "-" : sprintf("%+.1f", vp))
      }
    }' "$RESULTS"
    echo
    echo "nginx% and vs payments% are medians of per-round ratios (each run against the same round's nginx / limits-off payments;"
    echo "payshim-ab-new against payshim-ab-base; nginx% of payshim-ab-payshim against payshim-ab-nginx, run side by side)."
}

{
    print_table
    if (( ROUNDS > 1 )) || [[ -n ${WANT[payshim-ab]:-} ]]; then echo; print_medians; fi
} | tee "$OUT/summary.txt"
