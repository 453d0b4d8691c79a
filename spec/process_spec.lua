-- loom.process: run and spawn, pipes that never deadlock, env and cwd,
-- errors, and what a cancel or a timeout does to the child: SIGTERM, then
-- SIGKILL after the grace, and never a zombie left behind.
local loom = require "loom"
local process = loom.process
local run_child = require("spec.support.child").run

local expect_error = require("spec.support.io").expect_error

-- Whether pid is a process of this machine right now (a zombie counts).
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  f:close()
  return true
end

-- Waits (bounded) until pid is gone: reaped, not merely dead.
local function gone(pid)
  for _ = 1, 200 do
    if not alive(pid) then return true end
    loom.sleep(0.01)
  end
  return false
end

-- A shell child that ignores SIGTERM and says when it is ready.
local stubborn = { "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done" }

describe("loom.process.run", function()
  it("returns the exit code, stdout and stderr", function()
    local r = process.run("sh", { "-c", "echo out; echo err >&2; exit 3" })
    assert.same({ code = 3, stdout = "out\n", stderr = "err\n" }, r)
    r = loom.run(process.run, "true")
    assert.equal(0, r.code)
    assert.is_nil(r.signal)
    r = process.run("printf", { "%s|%d", "a b", 42 })
    assert.equal("a b|42", r.stdout)
  end)

  it("tells a child ended by a signal by its name", function()
    local r = process.run("sh", { "-c", "kill -KILL $$" })
    assert.is_nil(r.code)
    assert.equal("KILL", r.signal)
  end)

  it("feeds stdin, also far more than a pipe holds", function()
    assert.equal("hello", process.run("cat", {}, { stdin = "hello" }).stdout)
    local big = ("0123456789abcdef"):rep(1 << 18) -- 4 MiB
    local r = process.run("wc", { "-c" }, { stdin = big })
    assert.equal(#big, tonumber(r.stdout))
    -- A child that reads none of it is no error.
    assert.equal(0, process.run("true", {}, { stdin = big }).code)
  end)

  it("reads several MB from stdout and stderr at once without a deadlock", function()
    local script = [[
      local chunk = ("x"):rep(65536)
      for _ = 1, 64 do io.stdout:write(chunk) io.stderr:write(chunk) end
    ]]
    loom.run(function()
      local r = loom.timeout(60, process.run, "lua5.4", { "-e", script })
      assert.equal(0, r.code)
      assert.equal(4 << 20, #r.stdout)
      assert.equal(4 << 20, #r.stderr)
    end)
  end)

  it("sets the environment and the working directory", function()
    local r = process.run("sh", { "-c", 'echo "$LOOM_A|$LOOM_B|$HOME"; pwd' },
      { env = { LOOM_A = "a", LOOM_B = 2, HOME = false }, cwd = "/tmp" })
    assert.equal("a|2|\n/tmp\n", r.stdout)
    assert.is_not_nil(os.getenv("PATH"))
    r = process.run("/usr/bin/env", {}, { clear_env = true, env = { ONLY = "1" } })
    assert.equal("ONLY=1\n", r.stdout)
  end)

  it("raises kind io ENOENT for a command that does not exist, EACCES for one that may not run", function()
    local err = expect_error("io", process.run, "loom-no-such-command")
    assert.equal("ENOENT", err.code)
    assert.is_truthy(err.message:find("loom-no-such-command", 1, true))
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("#!/bin/sh\necho no\n")
    f:close()
    err = expect_error("io", process.run, path)
    os.remove(path)
    assert.equal("EACCES", err.code)
    err = expect_error("io", process.run, "true", {}, { cwd = "/loom/no/such/dir" })
    assert.equal("ENOENT", err.code)
  end)

  it("looks the command up in the child's PATH and runs a file without #! with sh, as execvp does", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local f = assert(io.open(dir .. "/loom-script", "w"))
    f:write("echo \"script $1\"\n")
    f:close()
    assert(os.execute("chmod +x " .. dir .. "/loom-script"))
    local ok, r = pcall(process.run, "loom-script", { "a" }, { env = { PATH = dir } })
    local ok2, r2 = pcall(process.run, dir .. "/loom-script", { "b" })
    os.remove(dir .. "/loom-script")
    os.remove(dir)
    assert(ok, r)
    assert.equal("script a\n", r.stdout)
    assert(ok2, r2)
    assert.equal("script b\n", r2.stdout)
  end)

  it("starts the child with default signal dispositions, none blocked (loom ignores SIGPIPE)", function()
    local status = process.run("cat", { "/proc/self/status" }).stdout
    assert.equal(0, tonumber(status:match("SigBlk:%s*(%x+)"), 16))
    -- Signals 1 to 31; glibc's posix_spawn leaves its own two (32, 33)
    -- ignored, and glibc programs take them back at start.
    assert.equal(0, tonumber(status:match("SigIgn:%s*(%x+)"), 16) & 0x7fffffff)
    -- A shell started with SIGPIPE ignored could not undo that.
    assert.equal("PIPE", process.run("sh", { "-c", "kill -PIPE $$" }).signal)
  end)

  it("leaks none of loom's descriptors into the child: its stdio is all it gets", function()
    loom.run(function()
      local other = process.spawn("sleep", { "10" })
      -- Every descriptor of the shell but its stdio, with what it is.
      local r = process.run("sh", { "-c", 'cd /proc/$$/fd && for f in *; do echo "$f $(readlink $f)"; done' })
      other:kill()
      other:wait()
      for _, s in ipairs({ other.stdin, other.stdout, other.stderr }) do s:close() end
      local fds = {}
      for fd, what in r.stdout:gmatch("(%d+) (%S+)") do fds[tonumber(fd)] = what end
      assert.equal("/dev/null", fds[0])
      assert.is_truthy(fds[1]:find("^socket:"), fds[1])
      assert.is_truthy(fds[2]:find("^socket:"), fds[2])
      for fd, what in pairs(fds) do
        -- What this process inherited may pass on; loom's pipes, pidfds,
        -- epoll and eventfds may not.
        if fd > 2 then
          assert.is_falsy(what:find("^socket:") or what:find("^anon_inode:"), fd .. " -> " .. what)
        end
      end
    end)
  end)

  it("passes no descriptor but its stdio, even those opened without close-on-exec", function()
    -- io.open (C's fopen) leaves its descriptor open across exec; a child
    -- holding it (or a driver's socket) would keep it alive after us.
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    loom.run(function()
      local r = process.run("sh", { "-c", 'cd /proc/$$/fd && for f in *; do echo "$f $(readlink $f)"; done' })
      assert.equal(0, r.code, r.stderr)
      assert.is_truthy(r.stdout:find("^0 "), r.stdout)
      assert.is_falsy(r.stdout:find(path, 1, true), r.stdout)
    end)
    f:close()
    os.remove(path)
  end)

  it("starts children from a parent with a large heap", function()
    local ok, out = run_child([[
      local loom = require "loom"
      local hold = {}
      for i = 1, 200 do hold[i] = ("x"):rep(1 << 20) .. i end -- about 200 MB
      for _ = 1, 20 do
        local r = loom.process.run("sh", { "-c", "echo $0", "big" }, { stdin = "in" })
        assert(r.code == 0 and r.stdout == "big\n", r.stdout)
      end
      print("started from " .. math.floor(collectgarbage("count") / 1024) .. " MB")
    ]], 120)
    assert.is_true(ok, out)
    assert.is_truthy(out:find("started from %d+ MB"), out)
  end)

  it("says where it looked when the working directory is not there", function()
    loom.run(function()
      local err = expect_error("io", process.run, "true", {}, { cwd = "/nonexistent-loom-dir" })
      assert.equal("ENOENT", err.code)
      assert.truthy(err.message:find("/nonexistent-loom-dir", 1, true), err.message)
    end)
  end)

  it("names the bad argument", function()
    local err = expect_error("argument", process.run, 42)
    assert.is_truthy(err.message:find("#1 to 'loom.process.run'", 1, true), err.message)
    err = expect_error("argument", process.run, "true", { {} })
    assert.is_truthy(err.message:find("#2 to 'loom.process.run'", 1, true), err.message)
    err = expect_error("argument", process.run, "true", {}, { stdin = 5 })
    assert.is_truthy(err.message:find("#3", 1, true), err.message)
    err = expect_error("argument", process.spawn, "true", {}, { stdout = "file" })
    assert.is_truthy(err.message:find("#3 to 'loom.process.spawn'", 1, true), err.message)
    expect_error("argument", process.run, "true", {}, { kill_grace = -1 })
    expect_error("argument", process.run, "true", {}, { on_cancel = "ignore" })
    err = expect_error("argument", process.run, "true", {}, { env = { A = {} } })
    assert.is_truthy(err.message:find("#3 to 'loom.process.run' (env.A", 1, true), err.message)
    err = expect_error("argument", process.spawn, "true", {}, { env = { "x" } })
    assert.is_truthy(err.message:find("#3 to 'loom.process.spawn'", 1, true), err.message)
  end)

  it("on timeout stops the child, SIGKILL when it ignores SIGTERM, and raises kind timeout", function()
    loom.run(function()
      local t0 = loom.now()
      local err = expect_error("timeout", process.run, "sh", stubborn, { timeout = 0.2, kill_grace = 0.2 })
      local took = loom.now() - t0
      assert.is_true(took >= 0.4, "returned before the grace was over: " .. took)
      assert.is_truthy(tostring(err):find("timed out", 1, true))
    end)
  end)
end)

describe("loom.process.spawn", function()
  it("gives the child's stdin, stdout and stderr as streams", function()
    loom.run(function()
      local p = process.spawn("sh", { "-c", "while read l; do echo \"got $l\"; echo \"e $l\" >&2; done; exit 7" })
      assert.equal("integer", math.type(p.pid))
      p.stdin:write("a\n", "b\n")
      p.stdin:close()
      local lines = {}
      for l in p.stdout:lines() do lines[#lines + 1] = l end
      assert.same({ "got a", "got b" }, lines)
      assert.equal("e a\ne b\n", p.stderr:read("a"))
      assert.same({ 7 }, { p:wait() })
      assert.same({ 7 }, { p:wait() }) -- again: the same answer
      assert.is_false(p:kill())
      p.stdout:close()
      p.stderr:close()
    end)
  end)

  it("kills with a signal by name or number", function()
    loom.run(function()
      local p = process.spawn("sleep", { "10" }, { stdin = "null", stdout = "null", stderr = "null" })
      assert.is_nil(p.stdout)
      assert.is_true(p:kill("INT"))
      assert.same({ nil, "INT" }, { p:wait() })
      p = process.spawn("sleep", { "10" }, { stdin = "null", stdout = "null", stderr = "null" })
      assert.is_true(p:kill(9))
      assert.same({ nil, "KILL" }, { p:wait() })
      expect_error("argument", p.kill, p, "NOSUCH")
    end)
  end)

  it("a cancelled wait sends SIGTERM, then SIGKILL after the grace to a child that ignores it, and reaps it",
    function()
      loom.run(function()
        local p = process.spawn("sh", stubborn, { kill_grace = 0.3, stdin = "null", stderr = "null" })
        assert.equal("ready", p.stdout:read("l"))
        local t0
        local waiter = loom.spawn(function() return p:wait() end)
        loom.sleep(0.05)
        t0 = loom.now()
        waiter:cancel()
        expect_error("cancelled", waiter.join, waiter)
        assert.is_true(loom.now() - t0 >= 0.25, "the wait ended before the grace")
        assert.same({ nil, "KILL" }, { p:wait() })
        assert.is_false(alive(p.pid), "left a zombie or a live child")
        p.stdout:close()
      end)
    end)

  it("a wait under loom.timeout kills the child and leaves no zombie", function()
    loom.run(function()
      local p = process.spawn("sleep", { "30" }, { stdin = "null", stdout = "null", stderr = "null" })
      local pid = p.pid
      expect_error("timeout", loom.timeout, 0.1, p.wait, p)
      assert.same({ nil, "TERM" }, { p:wait() })
      assert.is_false(alive(pid), "left a zombie or a live child")
    end)
  end)

  it("with on_cancel = \"leave\" the child runs on after a cancelled wait", function()
    loom.run(function()
      local p = process.spawn("sleep", { "30" },
        { on_cancel = "leave", stdin = "null", stdout = "null", stderr = "null" })
      expect_error("timeout", loom.timeout, 0.05, p.wait, p)
      assert.is_true(alive(p.pid))
      p:kill()
      assert.same({ nil, "TERM" }, { p:wait() })
    end)
  end)

  it("a process object collected while its child runs leaves no zombie", function()
    loom.run(function()
      local pid
      local t = loom.spawn(function()
        local p = process.spawn("sleep", { "0.2" }, { on_cancel = "leave", stdin = "null", stdout = "null",
          stderr = "null" })
        pid = p.pid
        return p:wait()
      end)
      loom.sleep(0.02)
      t:cancel()
      expect_error("cancelled", t.join, t)
      t = nil -- luacheck: ignore
      for _ = 1, 3 do collectgarbage() end
      assert.is_true(alive(pid), "the child should still run")
      assert.is_true(gone(pid), "the child was never reaped")
    end)
  end)

  it("a state closed while a task waits on a child exits cleanly", function()
    local ok, out = run_child([[
      local loom = require "loom"
      local p = loom.process.spawn("sleep", { "5" }, { stdin = "null", stdout = "null", stderr = "null" })
      loom.spawn(function() p:wait() end)
      loom.step(0)
      p = nil
      for _ = 1, 3 do collectgarbage() end
      print("leaving with a wait out")
    ]], 60)
    assert.is_true(ok, out)
    assert.is_truthy(out:find("leaving with a wait out", 1, true), out)
  end)

  it("a child still running when its state closes is reaped once it exits", function()
    loom.run(function()
      -- A worker's state spawns the child and closes with the pool, while
      -- the child runs on; this process lives on after that state.
      local pool = loom.thread.pool { size = 1 }
      local pid = pool:run(function()
        local p = require("loom").process.spawn("sleep", { "0.3" },
          { stdin = "null", stdout = "null", stderr = "null" })
        return p.pid
      end)
      pool:close()
      assert.is_true(alive(pid), "the child should still run")
      assert.is_true(gone(pid), "left a zombie")
    end)
  end)

  it("raises kind busy for a second waiter", function()
    loom.run(function()
      local p = process.spawn("sleep", { "10" }, { stdin = "null", stdout = "null", stderr = "null" })
      local t = loom.spawn(function() return p:wait() end)
      loom.yield()
      expect_error("busy", p.wait, p)
      p:kill()
      assert.same({ nil, "TERM" }, { t:join() })
    end)
  end)

  it("is loaded on first use of loom.process", function()
    assert.equal(process, require "loom.process")
  end)
end)
