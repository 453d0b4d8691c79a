-- The Lua half of h2o_host.c, run once in each worker's lua_State:
--   chunk(respond, handler_file, deadline) -> serve(req, ref)
-- h2o_host.c calls serve for each request, outside any task; serve starts the
-- handler as a loom task under loom.timeout(deadline) and answers through
-- respond(ref, status, headers, body) exactly once, whatever the handler does.
local loom = require "loom"

local respond, handler_file, deadline = ...
local handler = dofile(handler_file)
assert(loom._is_callable(handler), handler_file .. " must return a function(req)")

local function log(req, status, what)
  io.stderr:write(("h2o_host: %d %s %s: %s\n"):format(status, req.method, req.path, what))
end

-- Keeps the error as raised (a loom error is a table with a kind) and where
-- it was raised, for the log.
local function catch(err) return { err = err, where = debug.traceback("", 2) } end

local function describe(err)
  if type(err) == "table" and err.kind then return ("%s error: %s"):format(err.kind, tostring(err.message)) end
  return tostring(err)
end

local function fail(req, ref, status, what)
  log(req, status, what)
  respond(ref, status, { ["content-type"] = "text/plain" },
    status == 504 and "handler deadline passed\n" or "handler failed\n")
end

local function run(req, ref)
  local ok, status, headers, body = xpcall(loom.timeout, catch, deadline, handler, req)
  if not ok then
    local e = status
    if type(e.err) == "table" and e.err.kind == "timeout" then
      return fail(req, ref, 504, ("no answer within %g s (%s)"):format(deadline, describe(e.err)))
    end
    return fail(req, ref, 500, describe(e.err) .. e.where)
  end
  -- respond checks the answer before it sends anything: a bad one is the
  -- handler's failure, answered with a 500 in its place.
  local sent, err = pcall(respond, ref, status or 200, headers, body or "")
  if not sent then fail(req, ref, 500, "bad answer: " .. tostring(err)) end
end

return function(req, ref) loom.spawn(run, req, ref) end
