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

# Functions by concern; they use the globals set below and run only when called.
for lib in procs target ab report; do
    # shellcheck source=/dev/null
    source "$BENCH_DIR/lib/$lib.sh"
done

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

trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

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
# The rounds: every target (bench/lib/target.sh; --only ab: bench/lib/ab.sh) once a round.

PAYMENT_BODY='{"data":{"gateway":"card_connect","method":"purchase","first_name":"Ada","last_name":"Lovelace","number":"4111111111111111","month":"12","year":"2031","verification_value":"123"}}'
PASS_BODY_FILE=$OUT/passthrough-body.json
printf '%s' '{"data":{"type":"bench_event","order_id":"9b2f7c1e-3d4a-4b5c-8d6e-7f8a9b0c1d2e","customer":{"name":"Ada Lovelace","email":"ada@example.com"},"items":[{"sku":"BOOK-001","quantity":1,"amount":4999},{"sku":"PEN-042","quantity":2,"amount":350}],"currency":"USD"}}' >"$PASS_BODY_FILE"

# Results, one line per target (tab-separated), appended by run_target.
RESULTS=$OUT/results.tsv
printf 'target\trps\tp50_us\tp99_us\tnon2xx\terrors\taudit_records\trecords_per_s\tfsyncs\tfsync_source\tcpu0\tcpu1\tnote\tproxy_cpu_us_per_req\tround\n' >"$RESULTS"

# The audit writer's fsync counter, under whichever name this build exports it.
FSYNC_METRICS=(payshim_audit_syncs_total payshim_audit_fsyncs_total payshim_audit_syncs payshim_audit_fsyncs)

# The round being run (1..ROUNDS); with several rounds each has its own output folder.
ROUND=1

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
# Table (bench/lib/report.sh).

{
    print_table
    if (( ROUNDS > 1 )) || [[ -n ${WANT[payshim-ab]:-} ]]; then echo; print_medians; fi
} | tee "$OUT/summary.txt"
