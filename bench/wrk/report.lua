-- wrk script for bench/run.sh.
--
-- Prints one machine-readable line at the end of a run:
--   BENCH {"requests":…,"duration_us":…,"rps":…,"p50_us":…,"p99_us":…,…}
--
-- With BENCH_TOKENS=<file> (one access token per line) every request carries the next token
-- as `Authorization: Bearer …` (cold-token runs). Only then is a per-request Lua function
-- defined; otherwise wrk sends its pre-built static request and Lua costs nothing per request.
-- When the tokens run out the list starts over; the number of wraps is reported so a run
-- that reused tokens (and so hit the cache) can be recognised.

local token_file = os.getenv("BENCH_TOKENS")
local tokens = nil
local idx = 0
wraps = 0  -- global: read by done() through thread:get

if token_file then
  tokens = {}
  for line in io.lines(token_file) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  if #tokens == 0 then error("BENCH_TOKENS file " .. token_file .. " is empty") end

  request = function()
    idx = idx + 1
    if idx > #tokens then
      idx = 1
      wraps = wraps + 1
    end
    wrk.headers["Authorization"] = "Bearer " .. tokens[idx]
    return wrk.format(nil, nil, wrk.headers)
  end
end

-- Each thread has its own Lua state; `wraps` is read back from the thread in done().
local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local total_wraps = 0
  for _, t in ipairs(threads) do
    total_wraps = total_wraps + (t:get("wraps") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"token_wraps":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout, total_wraps))
end
