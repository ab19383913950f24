-- wrk script for profiling runs: stop after WRK_REQUESTS responses (per wrk thread), so a
-- run is bounded in requests as well as in time (-d). Use with -t1.
local limit = tonumber(os.getenv("WRK_REQUESTS") or "10000")
local seen = 0

response = function(status, headers, body)
   seen = seen + 1
   if seen >= limit then
      wrk.thread:stop()
   end
end

done = function(summary, latency, requests)
   io.write(string.format("WRK requests=%d duration_us=%d errors_status=%d\n",
      summary.requests, summary.duration, summary.errors.status))
end
