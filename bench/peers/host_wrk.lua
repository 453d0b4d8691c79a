-- wrk's request script for bench/host.sh's point select route: a random row
-- of hosts_bench each time (HOST_BENCH_ROWS rows), the same for every server.
local rows = tonumber(os.getenv("HOST_BENCH_ROWS")) or 10000
math.randomseed(os.time())
request = function() -- luacheck: ignore 111 (wrk calls the global)
  return wrk.format(nil, "/pg?id=" .. math.random(1, rows)) -- luacheck: ignore 113
end
