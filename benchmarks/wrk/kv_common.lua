-- Shared wrk logic for benchmarks/compare (see benchmarks/compare --help).
--
-- Loaded with dofile() by ringkv.lua and etcd.lua, which define
--   make_write(item, value) -> request string
--   make_read(item)         -> request string
-- Configuration comes from environment variables, so that it reaches every Lua state
-- (setup/done run in one state, each thread in its own):
--   KV_TARGETS     "host:port,host:port,...": thread i talks to target (i-1) % #targets + 1
--   KV_KEYS_FILE   one key per line, already encoded as the system's API wants it
--   KV_VALUE_FILE  the value (already encoded as the system's API wants it)
--   KV_WORKLOAD    write | read | mix
--   KV_READ_RATIO  reads per write in the mix (10 -> 10:1)
-- done() prints one line "WRKJSON {...}" with throughput, latency percentiles (µs) and
-- a count of every HTTP status seen, which benchmarks/compare parses.

local function split(text, sep)
   local out = {}
   for part in string.gmatch(text, "([^" .. sep .. "]+)") do
      table.insert(out, part)
   end
   return out
end

local function read_file(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

-- setup/done phase (main Lua state) -------------------------------------------------

local threads = {}

function setup(thread)
   local targets = split(os.getenv("KV_TARGETS") or "", ",")
   local index = #threads + 1
   if #targets > 0 then
      local target = targets[(index - 1) % #targets + 1]
      local host, port = string.match(target, "^(.+):(%d+)$")
      thread.addr = wrk.lookup(host, port)[1]
   end
   thread:set("thread_id", index)
   table.insert(threads, thread)
end

-- running phase (one Lua state per thread) -------------------------------------------

function init(args)
   local workload = os.getenv("KV_WORKLOAD") or "mix"
   local ratio = tonumber(os.getenv("KV_READ_RATIO") or "10")
   local value = read_file(os.getenv("KV_VALUE_FILE"))
   local items = split(read_file(os.getenv("KV_KEYS_FILE")), "\n")
   nkeys = #items
   writes_req, reads_req = {}, {}
   for i, item in ipairs(items) do
      if workload ~= "read" then writes_req[i] = make_write(item, value) end
      if workload ~= "write" then reads_req[i] = make_read(item) end
   end
   math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
   -- writes happen on every (ratio+1)-th request: exactly ratio reads per write
   if workload == "write" then
      period = 1
   elseif workload == "read" then
      period = 0
   else
      period = ratio + 1
   end
   counter = math.random(0, math.max(period, 1) - 1)  -- threads do not write in lockstep
   sent_writes, sent_reads = 0, 0
   statuses = {}
end

function request()
   local i = math.random(1, nkeys)
   counter = counter + 1
   if period == 1 or (period > 1 and counter % period == 0) then
      sent_writes = sent_writes + 1
      return writes_req[i]
   end
   sent_reads = sent_reads + 1
   return reads_req[i]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local merged = {}
   local writes, reads = 0, 0
   for _, thread in ipairs(threads) do
      local st = thread:get("statuses") or {}
      for code, n in pairs(st) do
         merged[code] = (merged[code] or 0) + n
      end
      writes = writes + (thread:get("sent_writes") or 0)
      reads = reads + (thread:get("sent_reads") or 0)
   end
   local codes = {}
   for code, n in pairs(merged) do
      table.insert(codes, string.format('"%d": %d', code, n))
   end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"min": %d, "mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}, ' ..
      '"statuses": {%s}, "sent_writes": %d, "sent_reads": %d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.max,
      table.concat(codes, ", "), writes, reads))
end
