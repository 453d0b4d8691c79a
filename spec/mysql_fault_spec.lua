-- MySQL/MariaDB under faults only it has: a query whose connection is
-- killed, idle connections dropped by wait_timeout. The faults every server
-- driver meets (killed sessions, a restart, a handle collected with work in
-- flight, a long run of queries) are in db_conformance_spec.lua.
local loom = require "loom"
local my = require "spec.support.my"

local URL = my.url()
local PASSWORD = URL:match("^mysql://[^:]+:([^@]+)@")

local function no_password(e)
  local text = tostring(e) .. " " .. tostring(type(e) == "table" and e.message or "")
  assert.is_falsy(text:find(PASSWORD, 1, true), "the password leaked into an error: " .. text)
end

describe("mysql faults", function()
  it("a query whose connection is killed fails with kind connection", function()
    local db = loom.db.open(URL, { pool = { max = 2 } })
    local admin = loom.db.open(my.admin_url())
    loom.run(function()
      local t = loom.spawn(function() return db:value("SELECT SLEEP(5) /* spec-victim */") end)
      loom.sleep(0.2)
      admin:exec([[SELECT 1 FROM DUAL]])
      local id = admin:value("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%spec-victim%' "
        .. "AND ID <> CONNECTION_ID()")
      admin:exec("KILL CONNECTION " .. id)
      local ok, e = pcall(t.join, t)
      assert.is_false(ok)
      assert.equal("connection", e.kind)
      no_password(e)
      assert.equal(1, db:value("SELECT 1"))
    end)
    db:close(); admin:close()
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
end)
