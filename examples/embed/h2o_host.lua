-- The Lua half of h2o_host.c, run once in each worker's lua_State:
--   chunk(respond, handler_file, deadline) -> serve(req, ref)
-- h2o_host.c calls serve for each request, outside any task; serve starts the
-- handler as a loom task and answers through respond(ref, status, headers,
-- body) exactly once, whatever the handler does.
--
-- The deadline is not a loom.timeout per request: that arms and disarms a
-- timer for every request, which cost a third of the host's time per hello
-- request. One sweeper task instead, while requests are in flight, wakes
-- every tick and cancels the handlers past their deadline (t:cancel, which
-- stops a database query on the server as a timeout does): a handler gets
-- between deadline and deadline + tick.
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

local TICK = math.max(0.01, math.min(deadline / 10, 0.5))
-- Ticks a handler may run: a request is stamped with the sweeper's tick
-- count, which costs nothing per request, unlike reading the clock.
local TICKS = math.ceil(deadline / TICK)
local inflight, sweeping, ticks = {}, false, 0 -- task -> tick it started in
local overdue = {}                             -- tasks the sweeper cancelled

local spawn, current = loom.spawn, loom.current

local function sweep()
  while next(inflight) do
    loom.sleep(TICK)
    ticks = ticks + 1
    for t, started in pairs(inflight) do
      if ticks - started > TICKS then
        inflight[t] = nil
        overdue[t] = true
        t:cancel()
      end
    end
  end
  sweeping = false
end

local function run(req, ref)
  local ok, status, headers, body = xpcall(handler, catch, req)
  local me = current()
  inflight[me] = nil
  -- Past its deadline, a handler's answer is a 504 even if it caught the
  -- cancellation and answered anyway.
  if overdue[me] then
    overdue[me] = nil
    return fail(req, ref, 504, ("no answer within %g s"):format(deadline))
  end
  if not ok then return fail(req, ref, 500, describe(status.err) .. status.where) end
  -- respond checks the answer before it sends anything: a bad one is the
  -- handler's failure, answered with a 500 in its place.
  local sent, err = respond(ref, status or 200, headers, body or "")
  if not sent then fail(req, ref, 500, "bad answer: " .. err) end
end

return function(req, ref)
  inflight[spawn(run, req, ref)] = ticks
  if not sweeping then
    sweeping = true
    spawn(sweep)
  end
end
