-- wrk script for bench/run: at the end of a run, print one machine-readable line.
-- Latencies are wrk's, in microseconds. Every request is a plain `GET /` with wrk's
-- default headers (keep-alive, HTTP/1.1).
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRK requests=%d duration_us=%d p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f " ..
      "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout))
end
