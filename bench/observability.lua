-- wrk script for bench/observability: exactly WRK_REQUESTS responses, then wrk exits at
-- once. (bench/count.lua stops wrk's thread, but wrk's main thread then still sleeps until
-- -d is over; here the process ends.) Use with -t1. Prints one line:
--   WRK requests=N errors_status=M
local limit = tonumber(os.getenv("WRK_REQUESTS") or "10000")
local seen, bad = 0, 0

response = function(status, headers, body)
   seen = seen + 1
   if status < 200 or status > 299 then
      bad = bad + 1
   end
   if seen >= limit then
      io.write(string.format("WRK requests=%d errors_status=%d\n", seen, bad))
      io.flush()
      os.exit(0)
   end
end
