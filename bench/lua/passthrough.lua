-- wrk script: keep-alive POST of a ~250-byte JSON body to payshim's passthrough
-- route (bench/payshim-bench.toml adds POST /v2/bench/{id}). The same request is sent
-- to nginx, HAProxy and straight to the upstream. No request() function, so wrk
-- builds the request once and the client side costs as little as possible.

wrk.method = "POST"
wrk.path = "/v2/bench/order-42"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-storefront-key-0001"
-- 259 bytes
wrk.body = '{"data":{"type":"bench_event","order_id":"9b2f7c1e-3d4a-4b5c-8d6e-7f8a9b0c1d2e",'
    .. '"customer":{"name":"Ada Lovelace","email":"ada@example.com"},'
    .. '"items":[{"sku":"BOOK-001","quantity":1,"amount":4999},'
    .. '{"sku":"PEN-042","quantity":2,"amount":350}],"currency":"USD"}}'

-- One machine-readable line for run.sh (latencies in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d "
      .. "non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
