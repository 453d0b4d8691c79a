-- loom.fs, loom.process and loom.signal used the way a careless or hostile
-- program uses them: bad arguments of every type, calls after close or
-- after a failure, endless or absent data, a cancel or a timeout at every
-- step, objects dropped with I/O out. Each call gets a clear error, never
-- a crash, a hang, lost data, a leaked descriptor or a zombie. #subprocess
-- marks the specs that start a process.
local loom = require "loom"
local fs = loom.fs
local process = loom.process
local signal = loom.signal
local run_child = require("spec.support.child").run
local support = require("spec.support.io")
local expect_error = support.expect_error

-- A fresh directory per spec, removed after it with whatever is left.
local dir
before_each(function() dir = support.new_dir() end)
after_each(function() support.remove_all(dir) end)

local function open_fds()
  return #fs.list("/proc/self/fd")
end

-- fn inside loom.run under a bound: no spec can hang.
local function within(seconds, fn, ...)
  return loom.run(loom.timeout, seconds, fn, ...)
end

describe("a loom.fs file", function()
  it("gives an argument error, not a bare string, for a bad seek", function()
    local path = dir .. "/f"
    fs.write(path, "abc")
    local f <close> = fs.open(path)
    local err = expect_error("argument", f.seek, f, "middle")
    assert.is_truthy(err.message:find("#2", 1, true), err.message)
    err = expect_error("argument", f.seek, f, 1)
    assert.is_truthy(err.message:find("#2", 1, true), err.message)
    err = expect_error("argument", f.seek, f, "set", 1.5)
    assert.is_truthy(err.message:find("#3", 1, true), err.message)
    expect_error("argument", f.seek, f, "set", "x")
    -- Past the range of an offset: EINVAL, and the position is unchanged.
    assert.equal(1, f:seek("set", 1))
    assert.equal("io", expect_error("io", f.seek, f, "cur", math.maxinteger).kind)
    assert.equal("EINVAL", expect_error("io", f.seek, f, "end", math.maxinteger).code)
    assert.equal("EINVAL", expect_error("io", f.seek, f, "end", math.mininteger).code)
    assert.equal("EINVAL", expect_error("io", f.seek, f, "set", -1).code)
    assert.equal(1, f:seek())
    assert.equal("bc", f:read("a"))
  end)

  it("reads the rest of the file for a count larger than memory", function()
    local path = dir .. "/f"
    fs.write(path, "abc")
    local f <close> = fs.open(path)
    assert.equal("abc", f:read(math.maxinteger))
    assert.is_nil(f:read(math.maxinteger))
    f:seek("set", 1)
    assert.same({ "b", "c" }, { f:read(1, 1 << 50) })
    f:seek("set", 0)
    local big = ("x"):rep(3 << 20)
    fs.write(path, big)
    local g <close> = fs.open(path)
    assert.equal(big, g:read(1 << 62))
  end)

  it("is closed after a close whose flush failed, and raises that failure once", function()
    -- /dev/full refuses every write with ENOSPC.
    local before = open_fds()
    local f = fs.open("/dev/full", "w")
    f:write("lost")
    local err = expect_error("io", f.close, f)
    assert.equal("ENOSPC", err.code)
    assert.equal(before, open_fds())
    assert.equal("loom.file (closed)", tostring(f))
    f:close() -- harmless now
    expect_error("closed", f.write, f, "x")
  end)

  it("writes out and closes in a task whose cancel was caught", function()
    local path = dir .. "/f"
    local before = open_fds()
    within(10, function()
      local f = fs.open(path, "w")
      f:write("kept")
      local t = loom.spawn(function()
        local ok, err = pcall(loom.sleep, 10)
        assert(not ok and err.kind == "cancelled")
        f:close()
        return "closed"
      end)
      loom.yield()
      t:cancel()
      assert.equal("closed", t:join())
      assert.equal("loom.file (closed)", tostring(f))
    end)
    assert.equal(before, open_fds())
    assert.equal("kept", fs.read(path))
  end)

  it("opens a FIFO without a peer at once instead of hanging the pool and the timeout #subprocess", function()
    local fifo = dir .. "/fifo"
    assert.equal(0, process.run("mkfifo", { fifo }).code)
    -- In a child: the open that blocks a pool thread for ever would hang
    -- this process, whose timeouts wait it out.
    local ok, out = run_child(([[
      local loom = require "loom"
      local fifo = %q
      local before = #loom.fs.list("/proc/self/fd")
      loom.run(function()
        -- No writer: an empty read, or an error; no reader: ENXIO.
        local ok, res = pcall(loom.timeout, 2, loom.fs.read, fifo)
        assert(ok or (loom.is_error(res) and res.kind ~= "timeout"), tostring(res))
        local ok2, err = pcall(loom.timeout, 2, loom.fs.open, fifo, "w")
        assert(not ok2 and err.code == "ENXIO", tostring(err))
      end)
      collectgarbage()
      assert(before == #loom.fs.list("/proc/self/fd"), "a descriptor leaked")
      print("done")
    ]]):format(fifo), 20)
    assert.is_true(ok, out)
    assert.equal("done\n", out)
  end)

  it("refuses a NUL in a path, a bad mode, and a directory", function()
    expect_error("argument", fs.open, dir .. "/a\0b", "w")
    expect_error("argument", fs.open, dir .. "/a", "rw")
    expect_error("argument", fs.open, dir .. "/a", 5)
    expect_error("argument", fs.write, dir .. "/a\0b", "x")
    expect_error("argument", fs.write, dir .. "/a", nil)
    expect_error("argument", fs.write, dir .. "/a", "x", { mode = 0 / 0 })
    expect_error("argument", fs.mkdir, dir .. "/a", { mode = -1 })
    assert.equal("EISDIR", expect_error("io", fs.read, dir).code)
    assert.equal("EISDIR", expect_error("io", fs.open, dir, "w").code)
    assert.equal("ENOENT", expect_error("io", fs.list, dir .. "/nope/x").code)
    -- Nothing was left behind by the failed writes.
    assert.same({}, fs.list(dir))
  end)

  it("an atomic write to a name that is no file's raises for that name and leaves nothing", function()
    fs.mkdir(dir .. "/sub")
    for _, p in ipairs({ dir .. "/sub/", dir .. "/new/" }) do
      local err = expect_error("io", fs.write, p, "x")
      assert.equal("EISDIR", err.code)
      assert.equal(p, err.path)
    end
    assert.equal("ENOENT", expect_error("io", fs.write, "", "x").code)
    for _, p in ipairs({ dir, dir .. "/sub/.", dir .. "/sub/.." }) do
      expect_error("io", fs.write, p, "x")
    end
    assert.same({ { name = "sub", type = "directory" } }, fs.list(dir))
    assert.same({}, fs.list(dir .. "/sub"))
  end)

  it("an atomic write refuses to replace a FIFO, a socket or a device with a file", function()
    within(20, function()
      local fifo = dir .. "/fifo"
      assert(os.execute("mkfifo " .. fifo))
      local srv = loom.unix.listen(dir .. "/sock", function() end)
      -- Not /dev/null: were this to fail as root, the spec would replace it.
      for _, p in ipairs({ fifo, dir .. "/sock" }) do
        local before = fs.stat(p)
        local err = expect_error("io", fs.write, p, "x")
        assert.equal("EINVAL", err.code)
        assert.equal(p, err.path)
        assert.truthy(err.message:find("fs.open", 1, true), err.message)
        local after = fs.stat(p)
        assert.equal(before.type, after.type)
        assert.equal(before.ino, after.ino)
      end
      srv:close(5)
      -- Nothing was left beside them: the FIFO alone (the socket file
      -- went with its server).
      assert.same({ { name = "fifo", type = "fifo" } }, fs.list(dir))
    end)
  end)

  it("every method of a closed file raises closed; close twice is harmless", function()
    local f = fs.open(dir .. "/f", "w+")
    f:close()
    f:close()
    for _, m in ipairs({ "read", "write", "flush", "sync", "seek" }) do
      expect_error("closed", f[m], f)
    end
    expect_error("argument", f.read, {})
    expect_error("argument", f.close, io.stdout)
  end)

  it("a file dropped with a read out is closed once the read ends", function()
    local path = dir .. "/big"
    fs.write(path, ("x"):rep(4 << 20))
    local before = open_fds()
    within(20, function()
      for _ = 1, 8 do
        local t = loom.spawn(function()
          local f = fs.open(path)
          f:read("a")
        end)
        loom.yield()
        t:cancel()
      end
      loom.sleep(0.2)
    end)
    collectgarbage()
    collectgarbage()
    assert.equal(before, open_fds())
  end)
end)

describe("loom.process, hostile", function()
  it("refuses a NUL byte in the command, an argument, an env entry or cwd #subprocess", function()
    local err = expect_error("argument", process.run, "ec\0ho", { "x" })
    assert.is_truthy(err.message:find("#1", 1, true), err.message)
    err = expect_error("argument", process.run, "echo", { "a\0b" })
    assert.is_truthy(err.message:find("#2", 1, true), err.message)
    expect_error("argument", process.spawn, "echo", {}, { env = { X = "a\0b" } })
    expect_error("argument", process.spawn, "echo", {}, { env = { ["X\0Y"] = "1" } })
    expect_error("argument", process.run, "pwd", {}, { cwd = "/t\0mp" })
  end)

  it("refuses env names that cannot be names: empty, or holding '=' #subprocess", function()
    expect_error("argument", process.run, "true", {}, { env = { [""] = "1" } })
    expect_error("argument", process.run, "true", {}, { env = { ["A=B"] = "1" } })
  end)

  it("refuses an argument list with a hole rather than dropping what follows #subprocess", function()
    local err = expect_error("argument", process.run, "echo", { "a", nil, "c" })
    assert.is_truthy(err.message:find("argument 2", 1, true), err.message)
    local many = {}
    for i = 1, 100001 do many[i] = "x" end
    err = expect_error("argument", process.spawn, "true", many)
    assert.is_truthy(err.message:find("'loom.process.spawn'", 1, true), err.message)
  end)

  it("names a signal that has no short name by its number #subprocess", function()
    within(10, function()
      local p = process.spawn("sleep", { "10" }, { stdin = "null", stdout = "null", stderr = "null" })
      assert.is_true(p:kill(40))
      local code, sig = p:wait()
      assert.is_nil(code)
      assert.equal("RTMIN+6", sig)
    end)
  end)

  it("kill and wait check their arguments and their self #subprocess", function()
    within(10, function()
      local p = process.spawn("sleep", { "10" }, { stdin = "null", stdout = "null", stderr = "null" })
      for _, bad in ipairs({ {}, true, 0, -1, 1.5, 65, "FOO", "sigterm" }) do
        expect_error("argument", p.kill, p, bad)
      end
      expect_error("argument", p.kill, {})
      expect_error("argument", p.wait, {})
      assert.is_true(p:kill("KILL"))
      assert.same({ nil, "KILL" }, { p:wait() })
      assert.is_false(p:kill())
      assert.same({ nil, "KILL" }, { p:wait() })
    end)
  end)

  it("a child killed while its stdout is read gives what it wrote, then EOF; no descriptor left #subprocess", function()
    local before = open_fds()
    within(20, function()
      local p = process.spawn("sh", { "-c", "echo a; exec sleep 10" })
      assert.equal("a", p.stdout:read("l"))
      local reader = loom.spawn(function() return p.stdout:read("a") end)
      loom.yield()
      p:kill("KILL")
      assert.same({ nil, "KILL" }, { p:wait() })
      assert.is_true(reader:join() == "" or reader:join() == nil)
      local err = expect_error("connection", p.stdin.write, p.stdin, ("x"):rep(1 << 20))
      assert.equal("EPIPE", err.code)
      p.stdin:close()
      p.stdout:close()
      p.stderr:close()
    end)
    collectgarbage()
    collectgarbage()
    assert.equal(before, open_fds())
  end)

  it("a second waiter gets busy; a timed-out wait with on_cancel = \"leave\" can wait again #subprocess", function()
    within(20, function()
      local p = process.spawn("sleep", { "0.3" }, { on_cancel = "leave", stdout = "null", stderr = "null" })
      local first = loom.spawn(function() return p:wait() end)
      loom.yield()
      expect_error("busy", p.wait, p)
      first:cancel()
      pcall(first.join, first)
      expect_error("timeout", loom.timeout, 0.01, p.wait, p)
      assert.same({ 0 }, { p:wait() })
    end)
  end)
end)

describe("loom.signal, hostile", function()
  it("refuses to watch a fault's signal, which would turn a crash into a busy loop", function()
    for _, name in ipairs({ "SEGV", "BUS", "FPE", "ILL", "SIGSEGV" }) do
      expect_error("argument", signal, name)
    end
  end)

  it("delivers each arrival once when a signal is named twice", function()
    within(10, function()
      local ch = signal("USR2", "SIGUSR2", "USR2")
      signal.raise("USR2")
      assert.equal("USR2", ch:recv())
      loom.sleep(0.05)
      assert.same({ nil, false }, { ch:try_recv() })
      ch:close()
    end)
  end)

  it("names a real-time signal it receives", function()
    within(10, function()
      local ch = signal(36)
      signal.raise(36)
      assert.equal("RTMIN+2", ch:recv())
      ch:close()
      -- And the name is taken back.
      ch = signal("RTMIN+2")
      signal.raise("SIGRTMIN+2")
      assert.equal("RTMIN+2", ch:recv())
      ch:close()
    end)
    -- Those the C library keeps for its threads are no one's to watch.
    expect_error("argument", signal, 32)
    expect_error("argument", signal, "RTMIN-1")
    expect_error("argument", signal, "RTMAX+1")
    expect_error("argument", signal, "RTMIN+x")
  end)

  it("leaves SIGPIPE ignored once a watch of it ends: writing to a gone peer fails, not kills #subprocess", function()
    local ok, out = run_child([[
      local loom = require "loom"
      loom.run(function()
        local ch = loom.signal("PIPE")
        ch:close()
        loom.sleep(0.02)
        local srv = loom.tcp.listen("127.0.0.1", 0, function(s) s:close() end)
        local c = loom.tcp.connect("127.0.0.1", srv.port)
        loom.sleep(0.1)
        local code
        for _ = 1, 5 do
          local ok, err = pcall(c.write, c, ("x"):rep(100000), { timeout = 2 })
          if not ok then code = err.code break end
          loom.sleep(0.05)
        end
        print("write failed with " .. tostring(code))
        c:close()
        srv:close()
      end)
    ]], 30)
    assert.is_true(ok, out)
    assert.is_truthy(out:find("write failed with E", 1, true), out)
  end)

  it("stops watching once its channel is dropped and collected: INT ends the process again #subprocess", function()
    local ok, out = run_child([[
      local loom = require "loom"
      loom.run(function()
        local before = loom.stats().tasks
        for _ = 1, 1000 do loom.signal("USR1") end
        loom.signal("INT")
        collectgarbage()
        collectgarbage()
        loom.sleep(0.1) -- the pumps see their channels gone, and end
        print("tasks left " .. loom.stats().tasks - before)
        io.stdout:flush()
        loom.signal.raise("INT")
        loom.sleep(1)
        print("survived INT")
      end)
    ]], 30)
    assert.is_falsy(ok, out) -- ended by the signal
    assert.is_truthy(out:find("tasks left 0", 1, true), out)
    assert.is_falsy(out:find("survived", 1, true), out)
  end)

  it("closing a channel with a receiver waiting ends the receive", function()
    within(10, function()
      local ch = signal("USR1")
      local t = loom.spawn(function() return ch:recv() end)
      loom.yield()
      ch:close()
      assert.same({ nil, false }, { t:join() })
    end)
  end)
end)
