-- wrk script for benchmarks/overload/run.py --client wrk: counts answers by
-- status in every thread and prints, at the end, one line each of
--   STATUSES 200=N 503=N ...
--   LATENCY_US p50=N p99=N
--   ERRORS connect=N read=N write=N timeout=N
-- which run.py parses.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local counts = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         counts[status] = (counts[status] or 0) + n
      end
   end
   io.write("STATUSES")
   for status, n in pairs(counts) do
      io.write(string.format(" %d=%d", status, n))
   end
   io.write("\n")
   io.write(string.format("LATENCY_US p50=%d p99=%d\n",
                          latency:percentile(50), latency:percentile(99)))
   local e = summary.errors
   io.write(string.format("ERRORS connect=%d read=%d write=%d timeout=%d\n",
                          e.connect, e.read, e.write, e.timeout))
end
