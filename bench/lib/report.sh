# shellcheck shell=bash
# bench/run.sh, sourced: the result table and the per-target medians over rounds.
# Uses run.sh's globals (OUT, PIDS, the ports and settings); defines functions only.

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
