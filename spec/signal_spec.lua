-- loom.signal: signals as channels on uv_signal_t, closing the channel
-- stops the watching, and loom.signal.shutdown_on cancels a program's
-- main work on SIGINT/SIGTERM and returns after its cleanup (proved on a
-- child lua5.4 sent a real SIGTERM).
local loom = require "loom"
local signal = loom.signal

local expect_error = require("spec.support.io").expect_error

local build = os.getenv("LOOM_BUILD_DIR") or "build"

-- The next value of ch, waiting at most 5 s.
local function recv(ch)
  return (loom.timeout(5, ch.recv, ch))
end

-- Starts a Lua script as a child process with this checkout's loom.
local function spawn_script(source)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(source)
  f:close()
  local p = loom.process.spawn("lua5.4", { path }, {
    env = { LUA_PATH = "lua/?.lua;lua/?/init.lua;;", LUA_CPATH = build .. "/?.so;;" },
    stdin = "null", kill_grace = 1,
  })
  return p, path
end

describe("loom.signal", function()
  it("gives a channel that receives the name of each signal as it arrives", function()
    loom.run(function()
      local ch = signal("USR1", "SIGUSR2")
      signal.raise("USR1")
      assert.equal("USR1", recv(ch))
      signal.raise("USR2")
      signal.raise("USR1")
      local got = { recv(ch), recv(ch) }
      table.sort(got)
      assert.same({ "USR1", "USR2" }, got)
      ch:close()
    end)
  end)

  it("works with loom.select beside other channels", function()
    loom.run(function()
      local ch = signal("HUP")
      local other = loom.channel()
      loom.spawn(function() loom.sleep(0.02) signal.raise("HUP") end)
      local c, v = loom.select({ { other, "recv" }, { ch, "recv" }, timeout = 5 })
      assert.equal(2, c)
      assert.equal("HUP", v)
      ch:close()
    end)
  end)

  it("stops watching when its channel is closed: the signal's default action is back", function()
    -- In a child: once the channel is closed, SIGUSR1 ends the process as
    -- it does by default.
    loom.run(function()
      local p, path = spawn_script([[
        local loom = require "loom"
        loom.run(function()
          local ch = loom.signal("USR1")
          loom.signal.raise("USR1")
          print("got " .. ch:recv())
          ch:close()
          loom.sleep(0.05)
          io.stdout:flush()
          loom.signal.raise("USR1")
          loom.sleep(5)
          print("still alive")
        end)
      ]])
      local out = loom.timeout(30, p.stdout.read, p.stdout, "a")
      local code, sig = loom.timeout(30, p.wait, p)
      os.remove(path)
      assert.equal("got USR1\n", out)
      assert.is_nil(code)
      assert.equal("USR1", sig)
    end)
  end)

  it("a program that only waits for a signal is not a deadlock, and loom.run ends once main does", function()
    loom.run(function()
      local p, path = spawn_script([[
        local loom = require "loom"
        loom.run(function()
          local ch = loom.signal("TERM")
          print("ready")
          io.stdout:flush()
          print("received " .. ch:recv())
        end)
        print("run returned")
      ]])
      assert.equal("ready", loom.timeout(30, p.stdout.read, p.stdout, "l"))
      p:kill("TERM")
      local out = loom.timeout(30, p.stdout.read, p.stdout, "a")
      assert.same({ 0 }, { loom.timeout(30, p.wait, p) })
      os.remove(path)
      assert.equal("received TERM\nrun returned\n", out)
    end)
  end)

  it("refuses unknown signals and ones that cannot be caught", function()
    local err = expect_error("argument", signal, "NOSUCH")
    assert.is_truthy(err.message:find("to 'loom.signal' (NOSUCH", 1, true), err.message)
    err = expect_error("argument", signal, "INT", "KILL")
    assert.is_truthy(err.message:find("#2 to 'loom.signal' (KILL", 1, true), err.message)
    expect_error("argument", signal)
    expect_error("argument", signal.raise, "NOSUCH")
  end)
end)

describe("loom.signal.shutdown_on", function()
  it("on SIGTERM cancels main, runs its cleanup and returns the signal's name", function()
    loom.run(function()
      local p, path = spawn_script([[
        local loom = require "loom"
        local fn_result, sig = loom.signal.shutdown_on({ "INT", "TERM" }, function()
          local cleanup <close> = setmetatable({}, { __close = function()
            -- Cleanup may wait: a cancelled task waits inside loom.shield.
            loom.shield(function() loom.sleep(0.05) end)
            print("cleanup ran")
          end })
          local worker = loom.spawn(function() loom.sleep(60) end)
          print("ready")
          io.stdout:flush()
          worker:join()
          print("never here")
        end)
        print(("shutdown_on returned %s %s"):format(fn_result, sig))
      ]])
      assert.equal("ready", loom.timeout(30, p.stdout.read, p.stdout, "l"))
      p:kill("TERM")
      local out = loom.timeout(30, p.stdout.read, p.stdout, "a")
      local err = loom.timeout(30, p.stderr.read, p.stderr, "a")
      assert.same({ 0 }, { loom.timeout(30, p.wait, p) })
      os.remove(path)
      assert.equal("cleanup ran\nshutdown_on returned nil TERM\n", out)
      assert.equal("", err)
    end)
  end)

  it("inside a task, cancels fn's task alone and returns the signal's name", function()
    loom.run(function()
      local cleaned = false
      local raiser = loom.spawn(function() loom.sleep(0.02) signal.raise("USR1") end)
      local a, b = signal.shutdown_on({ "USR1", "USR2" }, function()
        local _ <close> = setmetatable({}, { __close = function() cleaned = true end })
        loom.sleep(30)
      end)
      assert.same({ nil, "USR1" }, { a, b })
      assert.is_true(cleaned)
      raiser:join()
    end)
  end)

  it("returns fn's results when fn ends first, and stops watching", function()
    loom.run(function()
      assert.same({ 1, nil, 3 }, { signal.shutdown_on({ "USR2" }, function(a, b, c) return a, b, c end, 1, nil, 3) })
      -- The watcher is gone: a later USR2 reaches a watcher of its own only.
      local ch = signal("USR2")
      signal.raise("USR2")
      assert.equal("USR2", recv(ch))
      ch:close()
    end)
    assert.equal("ok", signal.shutdown_on("USR1", function() return "ok" end))
  end)

  it("raises fn's error as it was", function()
    local ok, err = pcall(signal.shutdown_on, { "USR1" }, function() error({ code = 7 }) end)
    assert.is_false(ok)
    assert.same({ code = 7 }, err)
  end)

  it("names the bad argument", function()
    local err = expect_error("argument", signal.shutdown_on, { "INT" }, 5)
    assert.is_truthy(err.message:find("#2 to 'loom.signal.shutdown_on'", 1, true), err.message)
    expect_error("argument", signal.shutdown_on, 5, function() end)
  end)

  it("is loaded on first use of loom.signal", function()
    assert.equal(signal, require "loom.signal")
  end)
end)
