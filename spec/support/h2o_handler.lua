-- The handler spec/h2o_host_spec.lua and bench/host.sh give h2o_host: a
-- hello route (the same body as bench/host.sh's nginx), a PostgreSQL point
-- select (LOOM_PG_URL), a fetch through loom.http, a failing route, one that
-- answers wrongly, a slow one and an echo.
local loom = require "loom"

local url = os.getenv("LOOM_PG_URL")
local db = url and url ~= "" and loom.db.open(url, { pool = { max = tonumber(os.getenv("H2O_HOST_POOL")) or 8 } })

local TEXT = { ["content-type"] = "text/plain" }

local routes = {
  ["/hello"] = function() return 200, TEXT, "hello\n" end,
  ["/fail"] = function() error("this route fails") end,
  ["/bad"] = function() return 200, { ["x-count"] = 3 }, "a header that is not a string\n" end,
  ["/slow"] = function() loom.sleep(3600); return 200, TEXT, "too late\n" end,
  ["/echo"] = function(req)
    return 200, TEXT, ("%s %s %s %s"):format(req.method, req.path, req.headers["x-test"] or "-", req.body)
  end,
  ["/fetch"] = function(req)
    local target = req.path:match("[?&]url=([^&]+)")
    local res = loom.http.get(target, { timeout = 10 })
    return 200, TEXT, ("fetched %d %s"):format(res.status, res.body)
  end,
  ["/pg"] = function(req)
    local id = tonumber(req.path:match("[?&]id=(%d+)")) or 1
    local row = db:first("SELECT id, name FROM hosts_bench WHERE id = $1", id)
    if not row then return 404, TEXT, "no such row\n" end
    return 200, TEXT, ("%d %s\n"):format(row.id, row.name)
  end,
}

return function(req)
  local route = routes[req.path] or routes[req.path:match("^[^?]*")]
  if not route then return 404, TEXT, "no such route\n" end
  return route(req)
end
