-- loom.run with a LISTEN connection open: the listener's dispatcher is a
-- daemon whose connection keeps the loop alive, and run must never wait on
-- it. Each case runs in a child lua5.4, killed if it hangs: broken, run
-- would wait for a notification that never comes.
-- spec/support/pg.lua starts a throwaway server unless LOOM_PG_URL is set.
local pg = require "spec.support.pg"

-- Runs `body` (Lua source using `loom` and `url`) in a child process,
-- killed after `limit` seconds; returns whether it exited 0 and its output.
local function run_child(body, limit)
  return require("spec.support.child").run(
    ("local loom = require 'loom'\nlocal url = %q\n%s"):format(pg.url(), body), limit)
end

describe("loom.run with a postgres listener open", function()
  it("re-raises main's error at once while a task waits on the listen channel", function()
    local ok, out = run_child([[
      local db = loom.db.open(url)
      local reader
      local ok, err = pcall(loom.run, function()
        local ch = db:listen("spec_run")
        reader = loom.spawn(function() for _ in ch:iter() do end end)
        loom.yield()
        error("main broke", 0)
      end)
      print("result", ok, (tostring(err):match("^[^\n]*")), reader:status())
      db:close()
    ]], 30)
    assert.is_true(ok, "the script did not finish:\n" .. out)
    assert.truthy(out:find("result\tfalse\tmain broke\tcancelled", 1, true), out)
  end)

  it("re-raises main's error at once when main fails right after listening", function()
    local ok, out = run_child([[
      local db = loom.db.open(url)
      local ok, err = pcall(loom.run, function()
        db:listen("spec_run")
        error("main broke", 0)
      end)
      print("result", ok, err)
      db:close()
    ]], 30)
    assert.is_true(ok, "the script did not finish:\n" .. out)
    assert.truthy(out:find("result\tfalse\tmain broke", 1, true), out)
  end)

  it("returns from a later run that does not wait on the listener", function()
    local ok, out = run_child([[
      local db = loom.db.open(url)
      local ch
      loom.run(function() ch = db:listen("spec_run") end)
      print("result", loom.run(function() return "second run" end))
      -- and the listener still delivers
      print("payload", loom.run(function()
        db:notify("spec_run", "still there")
        return loom.timeout(10, ch.recv, ch).payload
      end))
      db:close()
    ]], 30)
    assert.is_true(ok, "the script did not finish:\n" .. out)
    assert.truthy(out:find("result\tsecond run", 1, true), out)
    assert.truthy(out:find("payload\tstill there", 1, true), out)
  end)
end)
