-- wrk script: valid card payments through payshim's full pipeline,
-- POST /v2/orders/{uuid}/payments, each request with a DISTINCT order uuid and a
-- DISTINCT Luhn-valid 16-digit Visa PAN (so per-order and per-card limits, and the
-- card fingerprint, see a new key every time, as in a real payment stream).
--
-- PAN = "4" + 5-digit run tag + 9-digit counter + Luhn check digit.
-- uuid = random per-run prefix + thread number + counter (version 4, variant 8).

local counter = 0
local run_tag = 0
local uuid_a, uuid_b, uuid_c = 0, 0, 0
local tno = 0 -- from the global thread_no that setup() sets in this thread
-- `wrk ... -s payments.lua URL -- keyed`: a DISTINCT Idempotency-Key on every request, as
-- a storefront server that sets one per checkout attempt sends them (run.sh --ab-idem).
local keyed = false

local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer bench-storefront-key-0001",
}

-- Luhn check digit for a string of digits (without the check digit).
local function luhn_check_digit(s)
  local sum = 0
  local double = true -- the rightmost payload digit is doubled
  for i = #s, 1, -1 do
    local d = s:byte(i) - 48
    if double then
      d = d * 2
      if d > 9 then d = d - 9 end
    end
    sum = sum + d
    double = not double
  end
  return (10 - sum % 10) % 10
end

local next_thread = 0
function setup(thread)
  thread:set("thread_no", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  keyed = args[1] == "keyed"
  tno = tonumber(thread_no) or 0
  math.randomseed(os.time() * 1000 + tno)
  -- The 5-digit tag keeps runs apart; the thread number keeps threads apart.
  run_tag = (math.random(0, 9999) * 10 + (tno % 10)) % 100000
  uuid_a = math.random(0, 0xffff) * 0x10000 + math.random(0, 0xffff)
  uuid_b = math.random(0, 0xffff)
  uuid_c = math.random(0, 0xfff)
end

function request()
  counter = counter + 1
  local n = counter % 1000000000
  local payload = string.format("4%05d%09d", run_tag, n)
  local pan = payload .. luhn_check_digit(payload)
  local uuid = string.format("%08x-%04x-4%03x-8%03x-%04x%08x",
    uuid_a, uuid_b, uuid_c, tno % 0x1000, tno % 0x10000, n)
  local body = '{"data":{"gateway":"card_connect","method":"purchase",'
    .. '"first_name":"Ada","last_name":"Lovelace","number":"' .. pan .. '",'
    .. '"month":"12","year":"2031","verification_value":"123"}}'
  if keyed then
    headers["Idempotency-Key"] = string.format("bench-%05d-%d-%d", run_tag, tno, n)
  end
  return wrk.format("POST", "/v2/orders/" .. uuid .. "/payments", headers, body)
end

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
