-- wrk script: random paths from a list file, optionally with If-None-Match.
--   wrk ... -s wrk_paths.lua URL -- LISTFILE [etag]
-- LISTFILE has one URL path per line, or "path<TAB>etag" lines for the etag mode.
-- With BENCH_AUTHORIZATION set in the environment, every request carries it as its
-- Authorization header (an API token, for `[auth] required = true`).
-- done() prints one machine-readable line starting with BENCH_JSON.

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end

local requests = {}

function init(args)
  local file = args[1]
  local with_etag = args[2] == "etag"
  local authorization = os.getenv("BENCH_AUTHORIZATION")
  for line in io.lines(file) do
    local path, etag = line:match("^([^\t]+)\t?(.*)$")
    if path then
      local headers = {}
      if with_etag then
        headers["If-None-Match"] = etag
      end
      if authorization and authorization ~= "" then
        headers["Authorization"] = authorization
      end
      requests[#requests + 1] = wrk.format("GET", path, headers)
    end
  end
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

function request()
  return requests[math.random(#requests)]
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"bytes":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
