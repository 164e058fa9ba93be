# shellcheck shell=bash
# bench/run.sh, sourced: --only ab: two proxies loaded at once on one core (run_ab).
# Uses run.sh's globals (OUT, PIDS, the ports and settings); defines functions only.

# payshim-ab: payshim with limits off and payshim with every limit on (the
# payshim-payments-limits settings), started side by side on core 0 and loaded at the same
# time, each by its own wrk on core 1 with half the connections. Both share whatever state
# the machine is in, so their throughput ratio is the limits' cost without the minutes-long
# drift between separate runs. Two rows: payshim-ab-off and payshim-ab-limits. With
# --ab-base FILE the first side is that binary and the second the current build, limits
# off on both (rows payshim-ab-base and payshim-ab-new): a code change measured the same way.
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
            start_nginx_proxy "$base/nginx" ab-nginx || {
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
