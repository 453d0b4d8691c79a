-- loom.cqueues: a cqueues controller steps loom. A lua-http server (on
-- cqueues) answers requests whose handlers query PostgreSQL through loom,
-- while lua-http clients in the same controller send requests at once.
local loom = require "loom"
local cqueues = require "cqueues"
local lc = require "loom.cqueues"
local lh = require "spec.support.lua_http"
local pg = require "spec.support.pg"

-- The work takes well under a second; a stalled run ends here.
local BOUND = 20
local REQUESTS, POOL = 8, 4

-- Runs cq:loop() to its end, or fails after BOUND seconds.
local function loop(cq)
  local ok, err = cq:loop(BOUND)
  assert(ok, tostring(err))
  assert.equal(0, cq:count(), "the controller still had coroutines after " .. BOUND .. " s")
end

local function respond(stream, status, body)
  local h = lh.headers.new()
  h:append(":status", tostring(status))
  h:append("content-type", "text/plain")
  stream:write_headers(h, false)
  stream:write_chunk(body, true)
end

describe("loom.cqueues", function()
  it("steps sleeping tasks and channels beside cqueues' own coroutines", function()
    local cq = cqueues.new()
    local adapter = lc.wrap(cq)
    local log = {}
    cq:wrap(function()
      local got = adapter:call(function()
        local ch = loom.channel(0)
        loom.spawn(function()
          for i = 1, 3 do loom.sleep(0.01); ch:send(i) end
          ch:close()
        end)
        local sum = 0
        for v in ch:iter() do sum = sum + v; log[#log + 1] = "loom" end
        return sum
      end)
      log[#log + 1] = "result " .. got
      adapter:stop()
    end)
    cq:wrap(function()
      for _ = 1, 3 do cqueues.sleep(0.008); log[#log + 1] = "cqueues" end
    end)
    loop(cq)
    assert.equal("result 6", log[#log])
    local seen = {}
    for _, what in ipairs(log) do seen[what] = (seen[what] or 0) + 1 end
    assert.same({ loom = 3, cqueues = 3, ["result 6"] = 1 }, seen)
    assert.are_not.equal("cqueues", log[4], "loom ran only after cqueues' coroutine was done")
  end)

  it("raises a task's error in the calling coroutine", function()
    local cq = cqueues.new()
    local adapter = lc.wrap(cq)
    local ok, err
    cq:wrap(function()
      ok, err = pcall(adapter.call, adapter, function() loom.sleep(0.005); error({ kind = "mine" }) end)
      adapter:stop()
    end)
    loop(cq)
    assert.is_false(ok)
    assert.same({ kind = "mine" }, err)
  end)

  it("serves lua-http requests whose handlers query PostgreSQL through loom", function()
    local cq = cqueues.new()
    local adapter = lc.wrap(cq)
    local db = loom.db.open(pg.url(), { pool = { max = POOL } })
    local server = assert(lh.server.listen {
      host = "127.0.0.1", port = 0, cq = cq,
      onstream = function(_, stream)
        local h = assert(stream:get_headers())
        local n = tonumber(h:get(":path"):match("^/double/(%d+)$"))
        if not n then return respond(stream, 404, "no such route\n") end
        local ok, row = pcall(adapter.call, adapter, function()
          -- The sleep holds each connection a while: eight requests at
          -- once need all four of the pool's connections.
          return db:first("SELECT $1::int * 2 AS doubled, pg_backend_pid() AS pid FROM pg_sleep(0.05)", n)
        end)
        if not ok then return respond(stream, 500, tostring(row) .. "\n") end
        respond(stream, 200, ("%d %d\n"):format(row.doubled, row.pid))
      end,
      onerror = function(_, ctx, op, err) error(("server %s: %s %s"):format(tostring(ctx), op, err)) end,
    })
    assert(server:listen())
    local _, _, port = server:localname()
    local answers, pids, pending = {}, {}, REQUESTS
    for i = 1, REQUESTS do
      cq:wrap(function()
        local req = lh.request.new_from_uri(("http://127.0.0.1:%d/double/%d"):format(port, i))
        local headers, stream = assert(req:go(BOUND))
        local body = assert(stream:get_body_as_string(BOUND))
        local doubled, pid = body:match("^(%d+) (%d+)\n$")
        answers[i] = headers:get(":status") .. " " .. (doubled or body)
        if pid then pids[pid] = true end
        pending = pending - 1
        if pending == 0 then
          server:close()
          adapter:call(function() db:close() end)
          adapter:stop()
        end
      end)
    end
    loop(cq)
    for i = 1, REQUESTS do assert.equal("200 " .. 2 * i, answers[i]) end
    local backends = 0
    for _ in pairs(pids) do backends = backends + 1 end
    assert.equal(POOL, backends, "the handlers' queries did not run at once on the pool's connections")
  end)
end)
