# shellcheck shell=bash
# bench/run.sh, sourced: processes, ports and CPU accounting for run.sh.
# Uses run.sh's globals (OUT, PIDS, the ports and settings); defines functions only.

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
