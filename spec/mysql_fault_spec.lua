-- MySQL/MariaDB under faults: connections killed on the server, a restarted
-- server, idle connections dropped by wait_timeout, handles collected with
-- work in flight, and a long run of queries.
local loom = require "loom"
local my = require "spec.support.my"

local URL = my.url()
local PASSWORD = URL:match("^mysql://[^:]+:([^@]+)@")

local function no_password(e)
  local text = tostring(e) .. " " .. tostring(type(e) == "table" and e.message or "")
  assert.is_falsy(text:find(PASSWORD, 1, true), "the password leaked into an error: " .. text)
end

describe("mysql faults", function()
  it("the pool heals after its connections are killed", function()
    local db = loom.db.open(URL, { pool = { max = 4 } })
    local admin = loom.db.open(my.admin_url())
    loom.run(function()
      loom.each({ 1, 2, 3, 4 }, function() db:value("SELECT SLEEP(0.01)") end)
      assert.equal(4, db:stats().total)
      local ids = admin:query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'loom'")
      assert.is_true(#ids >= 4)
      for _, r in ipairs(ids) do pcall(admin.exec, admin, "KILL CONNECTION " .. r.ID) end
      loom.sleep(0.2) -- the loop sees the sockets close
      for i = 1, 20 do assert.equal(i, db:value("SELECT ?", i)) end
      assert.is_true(db:stats().closed >= 4)
    end)
    db:close(); admin:close()
  end)

  it("a query whose connection is killed fails with kind connection", function()
    local db = loom.db.open(URL, { pool = { max = 2 } })
    local admin = loom.db.open(my.admin_url())
    loom.run(function()
      local t = loom.spawn(function() return db:value("SELECT SLEEP(5) /* spec-victim */") end)
      loom.sleep(0.2)
      admin:exec([[SELECT 1 FROM DUAL]])
      local id = admin:value("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%spec-victim%' AND ID <> CONNECTION_ID()")
      admin:exec("KILL CONNECTION " .. id)
      local ok, e = pcall(t.join, t)
      assert.is_false(ok)
      assert.equal("connection", e.kind)
      no_password(e)
      assert.equal(1, db:value("SELECT 1"))
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
            local ok, e = pcall(db.value, db, "SELECT SLEEP(0.02)")
            if ok then done = done + 1 else
              kinds[e.kind] = (kinds[e.kind] or 0) + 1
              no_password(e)
            end
          end
        end)
      end
      loom.sleep(0.3)
      -- blocks this process for a moment: the loop simply waits
      local restarted, why = pcall(my.restart)
      if not restarted then
        stop = true -- or the workers would keep run() from returning
        error(why, 0)
      end
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

  it("never hands out a connection the server dropped for idling (wait_timeout)", function()
    local admin = loom.db.open(my.admin_url())
    loom.run(function() admin:exec("SET GLOBAL wait_timeout = 1") end)
    local ok, err = pcall(function()
      -- Validation after idle (a ping) and noticing the closed socket both
      -- keep dead connections away; the second pool never pings.
      for _, validate in ipairs({ 0.5, 1000 }) do
        local db = loom.db.open(URL, { pool = { max = 3, validate_after = validate } })
        loom.run(function()
          loom.each({ 1, 2, 3 }, function() db:value("SELECT SLEEP(0.05)") end)
          assert.equal(3, db:stats().total)
          loom.sleep(2.5) -- the server closes them
          loom.each({ 1, 2, 3, 4, 5, 6 }, function(i) assert.equal(i, db:value("SELECT ?", i)) end)
          assert.is_true(db:stats().closed >= 3, "the dropped connections were closed")
        end)
        db:close()
      end
    end)
    loom.run(function() admin:exec("SET GLOBAL wait_timeout = 28800") end)
    admin:close()
    if not ok then error(err, 0) end
  end)

  it("collecting a db handle with queries in flight is safe", function()
    loom.run(function()
      local results = {}
      do
        local db = loom.db.open(URL, { pool = { max = 3 } })
        for i = 1, 6 do
          loom.spawn(function() results[i] = db:value("SELECT ? FROM (SELECT SLEEP(0.05)) s", i) end)
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
    local total = tonumber(os.getenv("LOOM_SOAK_QUERIES") or "") or 200000
    local db = loom.db.open(URL, { pool = { max = 4 } })
    loom.run(function()
      local per_task = total // 4
      local function run(n)
        loom.each({ 1, 2, 3, 4 }, function()
          for i = 1, n do db:value("SELECT ?", i) end
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
