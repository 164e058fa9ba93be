# shellcheck shell=bash
# bench/run.sh, sourced: one target: start it, load it with wrk, collect its figures (run_target), and the helpers it needs.
# Uses run.sh's globals (OUT, PIDS, the ports and settings); defines functions only.

# nginx proxying as the nginx target does (nginx-proxy.conf, or nginx-proxy-tls.conf with
# --upstream-tls), its files under DIR, registered in PIDS as NAME; fails if it does not
# answer. The template's paths are under @OUT@/nginx; they are kept inside DIR.
start_nginx_proxy() { # dir name
    local dir=$1 name=$2
    check_ports "$NGINX_PORT"
    mkdir -p "$dir/nginx/tmp"
    sed -e "s|@OUT@/nginx|$dir/nginx|g" -e "s|@OUT@|$OUT|g" \
        -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@PORT@|$NGINX_PORT|g" \
        -e "s|@UPSTREAM_TLS_PORT@|$UPSTREAM_TLS_PORT|g" \
        "$NGINX_PROXY_CONF" >"$dir/nginx.conf"
    taskset -c "$PROXY_CPU" nginx -p "$dir/nginx" -e "$dir/nginx/error.log" \
        -c "$dir/nginx.conf" >"$dir/nginx.stdout.log" 2>&1 &
    PIDS[$name]=$!
    wait_ready "$name" "https://127.0.0.1:$NGINX_PORT/"
}

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
            start_nginx_proxy "$dir" "$t" || note="nginx did not start"
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
