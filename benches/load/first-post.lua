-- wrk script for benches/load/axum-orders.sh: POST /orders, each request a new order.
--
-- Every request carries an Idempotency-Key of its own, "<prefix>-<thread>-<n>", so none is a
-- replay: the prefix (FIRST_POST_KEY_PREFIX) names the build and the round, the thread's number
-- comes from setup, n counts the thread's requests. The body is ORDER_BODY. At the end it prints
-- one line, "first-post: " and a JSON object: requests, duration (µs), p50 and p99 latency (µs),
-- wrk's socket errors, and the count of each status (wrk itself only counts those over 399).

local prefix = os.getenv("FIRST_POST_KEY_PREFIX") or error("FIRST_POST_KEY_PREFIX is not set")

wrk.method = "POST"
wrk.body = os.getenv("ORDER_BODY") or error("ORDER_BODY is not set")
wrk.headers["Content-Type"] = "application/json"

-- setup runs in the main Lua state, once per thread, before the threads start: number them, and
-- keep them for done to read their statuses.
local threads = {}
function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

-- In each thread's own Lua state.
local sent = 0
statuses = {}

function request()
  sent = sent + 1
  wrk.headers["Idempotency-Key"] = prefix .. "-" .. thread_id .. "-" .. sent
  return wrk.format()
end

function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local by_status = {}
  for status, n in pairs(counts) do
    table.insert(by_status, string.format('"%d": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'first-post: {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, table.concat(by_status, ", ")))
end
