-- PostgreSQL under faults: killed backends, a restarted server, handles
-- collected with work in flight, and a long run of queries.
local loom = require "loom"
local pg = require "spec.support.pg"

local URL = pg.url()

describe("postgres faults", function()
  it("the pool heals after its backends are killed", function()
    local db = loom.db.open(URL, { pool = { max = 4 } })
    local admin = loom.db.open(pg.admin_url())
    loom.run(function()
      loom.each({ 1, 2, 3, 4 }, function() db:value("SELECT pg_sleep(0.01)") end)
      assert.equal(4, db:stats().total)
      local killed = admin:value([[SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
        WHERE usename = 'loom' AND backend_type = 'client backend']])
      assert.is_true(killed >= 4)
      loom.sleep(0.2) -- the loop sees the sockets close
      for i = 1, 20 do assert.equal(i, db:value("SELECT $1::int", i)) end
      assert.is_true(db:stats().closed >= 4)
    end)
    db:close(); admin:close()
  end)

  it("survives a server restart under load: in-flight work fails with kind connection, later work succeeds", function()
    local db = loom.db.open(URL, { pool = { max = 4, acquire_timeout = 20 } })
    local kinds, done = {}, 0
    loom.run(function()
      local workers = {}
      local stop = false
      for w = 1, 4 do
        workers[w] = loom.spawn(function()
          while not stop do
            local ok, e = pcall(db.value, db, "SELECT pg_sleep(0.02)")
            if ok then done = done + 1
            elseif e.kind == "cancelled" then error(e) -- never swallow our own cancellation
            else kinds[e.kind] = (kinds[e.kind] or 0) + 1 end
          end
        end)
      end
      loom.sleep(0.3)
      pg.restart() -- blocks this process for a moment: the loop simply waits
      loom.sleep(0.5)
      local after = done
      loom.sleep(1)
      stop = true
      for _, t in ipairs(workers) do loom.timeout(30, t.join, t) end
      assert.is_true(done > after, "queries succeed again after the restart")
      for kind in pairs(kinds) do
        assert.is_true(kind == "connection" or kind == "pool_timeout", "unexpected error kind " .. kind)
      end
      assert.equal(1, db:value("SELECT 1"))
    end)
    db:close()
  end)

  it("collecting a db handle with queries in flight is safe", function()
    loom.run(function()
      local results = {}
      do
        local db = loom.db.open(URL, { pool = { max = 3 } })
        for i = 1, 6 do
          loom.spawn(function() results[i] = db:value("SELECT $1::int FROM pg_sleep(0.05)", i) end)
        end
      end
      for _ = 1, 5 do collectgarbage() loom.sleep(0.02) end
      loom.sleep(0.3)
      collectgarbage()
      for i = 1, 6 do assert.equal(i, results[i]) end
    end)
    collectgarbage()
  end)

  it("memory stays flat over many queries", function()
    local total = tonumber(os.getenv("LOOM_SOAK_QUERIES") or "") or 1000000
    local db = loom.db.open(URL, { pool = { max = 4 } })
    loom.run(function()
      local per_task = total // 4
      local function run(n)
        loom.each({ 1, 2, 3, 4 }, function()
          for i = 1, n do db:value("SELECT $1::int", i) end
        end)
      end
      run(per_task // 10)
      collectgarbage(); collectgarbage()
      local before = collectgarbage("count")
      run(per_task - per_task // 10)
      collectgarbage(); collectgarbage()
      local after = collectgarbage("count")
      assert.is_true(after - before < 512, ("Lua heap grew by %.0f KB over %d queries"):format(after - before, total))
    end)
    db:close()
  end)
end)
