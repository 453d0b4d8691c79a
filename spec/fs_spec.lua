-- loom.fs: whole-file reads and atomic writes, files with Lua io's
-- methods, stat, list, rename, remove, mkdir; errors with the errno name
-- and the path; the loop runs while the thread pool does the work; cancel
-- and timeouts leave nothing behind. #subprocess marks the specs that run
-- a shell command (left out under ThreadSanitizer, which a shell does not
-- run with).
local loom = require "loom"
local fs = loom.fs

local support = require("spec.support.io")
local expect_error, remove_all = support.expect_error, support.remove_all

-- A fresh directory per spec, removed after it with whatever is left.
local dir
before_each(function() dir = support.new_dir() end)
after_each(function() remove_all(dir) end)

local function plain_read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function plain_write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function entries(path)
  local names = {}
  for _, e in ipairs(fs.list(path)) do names[#names + 1] = e.name end
  return names
end

local function open_fds()
  return #fs.list("/proc/self/fd")
end

describe("loom.fs.read and loom.fs.write", function()
  it("round-trips bytes, zeros and all, inside and outside tasks", function()
    local data = ("a\0b\r\n"):rep(1000) .. string.char(255)
    fs.write(dir .. "/x.bin", data)
    assert.equal(data, fs.read(dir .. "/x.bin"))
    loom.run(function()
      fs.write(dir .. "/y.bin", data, { fsync = true })
      assert.equal(data, fs.read(dir .. "/y.bin"))
    end)
    assert.equal(data, plain_read(dir .. "/y.bin"))
  end)

  it("replaces a file atomically: no temporary file left, the old permissions kept #subprocess", function()
    plain_write(dir .. "/f", "old")
    assert(os.execute("chmod 640 " .. dir .. "/f"))
    fs.write(dir .. "/f", "new contents")
    assert.equal("new contents", plain_read(dir .. "/f"))
    assert.same({ "f" }, entries(dir))
    assert.equal(416, fs.stat(dir .. "/f").mode) -- 8#640
    fs.write(dir .. "/g", "x", { mode = 384 })   -- 8#600
    assert.equal(384, fs.stat(dir .. "/g").mode)
  end)

  it("leaves the old file intact and removes its temporary file when the write fails", function()
    -- The rename cannot replace a directory: the write fails at its end.
    fs.mkdir(dir .. "/d")
    plain_write(dir .. "/d/keep", "")
    local err = expect_error("io", fs.write, dir .. "/d", "data")
    assert.is_truthy(err.code == "EISDIR" or err.code == "ENOTEMPTY" or err.code == "EEXIST", tostring(err))
    assert.same({ "d" }, entries(dir))
    assert.same({ "keep" }, entries(dir .. "/d"))
  end)

  it("leaves the old file intact when a timeout cuts a big write short", function()
    plain_write(dir .. "/f", "old")
    local big = ("z"):rep(64 << 20)
    loom.run(function()
      local err = expect_error("timeout", loom.timeout, 0.001, fs.write, dir .. "/f", big)
      assert.is_truthy(tostring(err):find("timed out", 1, true))
    end)
    assert.equal("old", plain_read(dir .. "/f"))
    assert.same({ "f" }, entries(dir))
  end)

  it("leaves no temporary file whichever step a timeout or a cancel interrupts", function()
    plain_write(dir .. "/f", "old")
    local data = ("d"):rep(1 << 20)
    loom.run(function()
      -- The deadlines fall before, in and after each step of the write
      -- (the open of the temporary file among them) on some of the tries.
      for i = 1, 200 do
        local ok = pcall(loom.timeout, (i % 20) * 0.0001, fs.write, dir .. "/f", data)
        local content = plain_read(dir .. "/f")
        assert.is_true(content == "old" or content == data, "a part of the data")
        if not ok then
          local t = loom.spawn(fs.write, dir .. "/f", data)
          for _ = 1, i % 4 do loom.yield() end
          t:cancel()
          pcall(t.join, t)
        end
      end
    end)
    local names = entries(dir)
    assert.same({ "f" }, names)
  end)

  it("raises kind io with the errno name and the path", function()
    local err = expect_error("io", fs.read, dir .. "/missing")
    assert.equal("ENOENT", err.code)
    assert.equal(dir .. "/missing", err.path)
    assert.is_truthy(err.message:find(dir .. "/missing", 1, true))
    err = expect_error("io", fs.write, dir .. "/no/such/dir/f", "x")
    assert.equal("ENOENT", err.code)
    err = expect_error("io", fs.read, dir)
    assert.equal("EISDIR", err.code)
  end)

  it("raises kind io EACCES where permission is denied #subprocess", function()
    plain_write(dir .. "/secret", "s")
    assert(os.execute("chmod 600 " .. dir .. "/secret && chmod 755 " .. dir))
    -- root may read anything: the read runs as nobody then.
    local build = os.getenv("LOOM_BUILD_DIR") or "build"
    local script = dir .. "/probe.lua"
    plain_write(script, ([[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = %q .. "/?.so;" .. package.cpath
      local loom = require "loom"
      local ok, err = pcall(loom.fs.read, %q)
      print(ok, err.kind, err.code)
      ok, err = pcall(loom.fs.write, %q, "x")
      print(ok, err.kind, err.code)
    ]]):format(build, dir .. "/secret", dir .. "/new"))
    assert(os.execute("chmod 644 " .. script))
    local drop = io.popen("id -u"):read("l") == "0" and "setpriv --reuid=65534 --regid=65534 --clear-groups " or ""
    local p = io.popen(drop .. "lua5.4 " .. script .. " 2>&1")
    local out = p:read("a")
    p:close()
    -- Under the sanitizers nobody may not read a preloaded library that
    -- lives in root's home: the loader says so and goes on.
    out = out:gsub("ERROR: ld%.so: [^\n]*\n", "")
    assert.equal("false\tio\tEACCES\nfalse\tio\tEACCES\n", out)
  end)

  it("names the bad argument", function()
    local err = expect_error("argument", fs.read, 42)
    assert.is_truthy(err.message:find("#1 to 'loom.fs.read'", 1, true), err.message)
    err = expect_error("argument", fs.write, dir .. "/f", {})
    assert.is_truthy(err.message:find("#2 to 'loom.fs.write'", 1, true), err.message)
    err = expect_error("argument", fs.open, dir .. "/f", "rw")
    assert.is_truthy(err.message:find("#2 to 'loom.fs.open'", 1, true), err.message)
    err = expect_error("argument", fs.mkdir, dir .. "/d", 5)
    assert.is_truthy(err.message:find("#2 to 'loom.fs.mkdir'", 1, true), err.message)
  end)
end)

describe("loom.fs.open", function()
  it("reads with Lua io's formats", function()
    plain_write(dir .. "/t", "one\ntwo\r\nthree\n\nlast")
    loom.run(function()
      local f <close> = fs.open(dir .. "/t")
      assert.equal("", f:read(0))
      assert.equal("one", f:read())
      assert.equal("two\r\n", f:read("L"))
      assert.same({ "thr", "ee", "" }, { f:read(3, "l", "l") })
      assert.equal("last", f:read("a"))
      assert.equal("", f:read("a"))
      assert.is_nil(f:read("l"))
      assert.is_nil(f:read(1))
      assert.is_nil(f:read(0))
      assert.equal(0, f:seek("set"))
      assert.same({ "one", "two\r" }, { f:read("l", "*l") })
    end)
  end)

  it("iterates lines, and returns nil for all formats after a failing one", function()
    local lines = {}
    for i = 1, 5000 do lines[i] = ("line %d %s"):format(i, ("x"):rep(i % 300)) end
    plain_write(dir .. "/t", table.concat(lines, "\n") .. "\n")
    loom.run(function()
      local f <close> = fs.open(dir .. "/t")
      local got = {}
      for l in f:lines() do got[#got + 1] = l end
      assert.same(lines, got)
      f:seek("set", 0)
      local n = 0
      for chunk in f:lines(4096) do n = n + #chunk end
      assert.equal(#table.concat(lines, "\n") + 1, n)
    end)
  end)

  it("writes, seeks and appends as Lua io does", function()
    loom.run(function()
      local f <close> = fs.open(dir .. "/w", "w+")
      assert.equal(f, f:write("hello", " ", 42, "\n"))
      for i = 1, 100000 do f:write(i, "\n") end
      f:flush()
      assert.equal(0, f:seek("set"))
      assert.equal("hello 42", f:read("l"))
      assert.equal("1", f:read("l"))
      local size = f:seek("end")
      assert.equal(#plain_read(dir .. "/w"), size)
      f:seek("set", 6)
      f:write("XY")
      f:flush()
      f:close()
      assert.equal("hello XY\n1\n", plain_read(dir .. "/w"):sub(1, 11))
      -- A seek and a sync write out the buffer first, as C's stdio does.
      local b <close> = fs.open(dir .. "/s", "w+")
      b:write("abc")
      assert.equal(1, b:seek("set", 1))
      assert.equal("bc", b:read("a"))
      b:write("d")
      assert.equal(b, b:sync())
      assert.equal("abcd", plain_read(dir .. "/s"))
      local a <close> = fs.open(dir .. "/w", "a")
      a:write("tail\n")
      a:close()
      assert.equal("tail\n", plain_read(dir .. "/w"):sub(-5))
    end)
  end)

  it("refuses what Lua io refuses, with loom errors", function()
    plain_write(dir .. "/r", "r")
    loom.run(function()
      local f = fs.open(dir .. "/r")
      expect_error("usage", f.write, f, "x")
      f:close()
      f:close() -- twice is fine
      expect_error("closed", f.read, f)
      expect_error("closed", f.write, f, "x")
      local w <close> = fs.open(dir .. "/w", "w")
      expect_error("usage", w.read, w)
      expect_error("argument", w.write, w, {})
      local x = expect_error("io", fs.open, dir .. "/r", "wx")
      assert.equal("EEXIST", x.code)
    end)
  end)

  -- Cached bytes are read in place; a file out of the page cache goes
  -- through the thread pool and reads ahead into a second buffer: both
  -- must give the same bytes in the same order, whatever moves the file.
  describe("out of the page cache #subprocess", function()
    local lines, text
    local function uncached(path)
      assert(os.execute(("sync %s && dd if=%s iflag=nocache count=0 2>/dev/null"):format(path, path)))
    end
    before_each(function()
      lines = {}
      for i = 1, 60000 do lines[i] = ("%06d %s"):format(i, ("abcdefghij"):sub(1, i % 11)) end
      text = table.concat(lines, "\n") .. "\n"
      plain_write(dir .. "/u", text)
      uncached(dir .. "/u")
    end)

    it("reads lines and chunks in order", function()
      loom.run(function()
        local f <close> = fs.open(dir .. "/u")
        local got = {}
        for l in f:lines() do got[#got + 1] = l end
        assert.equal(#lines, #got)
        assert.is_true(table.concat(got, "\n") .. "\n" == text, "lines differ")
        f:seek("set", 0)
        uncached(dir .. "/u")
        local parts = {}
        for chunk in f:lines(65536) do parts[#parts + 1] = chunk end
        assert.is_true(table.concat(parts) == text, "chunks differ")
      end)
    end)

    it("seeks, writes and closes with a read-ahead out", function()
      loom.run(function()
        local f = fs.open(dir .. "/u", "r+")
        assert.equal(text:sub(1, 70000), f:read(70000))
        assert.equal(100, f:seek("set", 100))
        assert.equal(text:sub(101, 120), f:read(20))
        uncached(dir .. "/u")
        assert.equal(text:sub(121, 300000), f:read(300000 - 120))
        f:write("XYZ")
        f:flush()
        assert.equal(300003, f:seek("cur"))
        assert.equal(text:sub(300004, 300010), f:read(7))
        f:close()
        assert.equal(text:sub(1, 300000) .. "XYZ" .. text:sub(300004), plain_read(dir .. "/u"))
      end)
    end)
  end)

  it("writes what is buffered when a file is dropped unclosed", function()
    loom.run(function()
      local f = fs.open(dir .. "/g", "w")
      f:write("kept")
    end)
    collectgarbage()
    collectgarbage()
    assert.equal("kept", plain_read(dir .. "/g"))
  end)

  it("gives one call at a time: a second task gets a busy error", function()
    plain_write(dir .. "/big", ("b"):rep(8 << 20))
    loom.run(function()
      local f <close> = fs.open(dir .. "/big")
      local reader = loom.spawn(function() return #f:read("a") end)
      loom.yield()
      expect_error("busy", f.read, f, 1)
      assert.equal(8 << 20, reader:join())
    end)
  end)

  it("keeps the loop running: a 10 ms ticker ticks while a big file is written and read", function()
    local big = ("q"):rep(128 << 20)
    local during_write, during_read = 0, 0
    loom.run(function()
      local ticks = 0
      local ticker = loom.spawn(function()
        while true do loom.sleep(0.01) ticks = ticks + 1 end
      end)
      -- A blocking call would let no tick through; a slow machine gets
      -- several tries at making one call outlast a tick.
      for _ = 1, 5 do
        local before = ticks
        fs.write(dir .. "/big", big)
        during_write = during_write + ticks - before
        before = ticks
        assert.equal(#big, #fs.read(dir .. "/big"))
        during_read = during_read + ticks - before
        if during_write > 0 and during_read > 0 then break end
      end
      ticker:cancel()
    end)
    assert.is_true(during_write > 0, "no tick while writing")
    assert.is_true(during_read > 0, "no tick while reading")
  end)

  it("a cancelled read waits out its request and the file closes after", function()
    plain_write(dir .. "/big", ("c"):rep(32 << 20))
    loom.run(function()
      local before = open_fds()
      for _ = 1, 20 do
        local t = loom.spawn(function()
          local f <close> = fs.open(dir .. "/big")
          return f:read("a")
        end)
        loom.yield()
        t:cancel()
        local ok, err = pcall(t.join, t)
        assert.is_true(ok or loom.is_error(err, "cancelled"), tostring(err))
      end
      collectgarbage()
      assert.equal(before, open_fds())
    end)
  end)
end)

describe("loom.fs.stat, list, rename, remove, mkdir", function()
  it("stats files, directories and links #subprocess", function()
    plain_write(dir .. "/f", "12345")
    assert(os.execute("ln -s f " .. dir .. "/l"))
    local st = fs.stat(dir .. "/f")
    assert.equal("file", st.type)
    assert.equal(5, st.size)
    assert.equal("float", math.type(st.mtime))
    assert.is_true(math.abs(st.mtime - os.time()) < 120)
    assert.equal("integer", math.type(st.mode))
    assert.equal("directory", fs.stat(dir).type)
    assert.equal("file", fs.stat(dir .. "/l").type)
    assert.equal("link", fs.stat(dir .. "/l", { follow = false }).type)
    assert.is_true(fs.exists(dir .. "/f"))
    assert.is_false(fs.exists(dir .. "/nope"))
    assert.equal("ENOENT", expect_error("io", fs.stat, dir .. "/nope").code)
  end)

  it("lists a directory's entries with their types, by name #subprocess", function()
    plain_write(dir .. "/b", "")
    assert(os.execute(("mkdir %s/a && ln -s b %s/c"):format(dir, dir)))
    assert.same({
      { name = "a", type = "directory" },
      { name = "b", type = "file" },
      { name = "c", type = "link" },
    }, fs.list(dir))
    assert.same({}, fs.list(dir .. "/a"))
    assert.equal("ENOTDIR", expect_error("io", fs.list, dir .. "/b").code)
  end)

  it("renames, removes files and empty directories, makes directories with their parents", function()
    loom.run(function()
      fs.mkdir(dir .. "/x/y/z", { parents = true })
      fs.mkdir(dir .. "/x/y/z", { parents = true }) -- there already: fine
      assert.equal("EEXIST", expect_error("io", fs.mkdir, dir .. "/x").code)
      fs.write(dir .. "/x/y/z/f", "f")
      fs.rename(dir .. "/x/y/z/f", dir .. "/x/g")
      assert.equal("f", fs.read(dir .. "/x/g"))
      assert.equal("ENOTEMPTY", expect_error("io", fs.remove, dir .. "/x/y").code)
      fs.remove(dir .. "/x/y/z")
      fs.remove(dir .. "/x/y")
      fs.remove(dir .. "/x/g")
      assert.same({}, fs.list(dir .. "/x"))
      assert.equal("ENOENT", expect_error("io", fs.remove, dir .. "/x/g").code)
      assert.equal("ENOENT", expect_error("io", fs.rename, dir .. "/x/g", dir .. "/h").code)
      plain_write(dir .. "/file", "")
      assert.equal("ENOTDIR", expect_error("io", fs.mkdir, dir .. "/file/sub", { parents = true }).code)
    end)
  end)

  it("is loaded on first use of loom.fs", function()
    assert.equal(fs, require "loom.fs")
    assert.equal(fs, loom.fs)
  end)
end)
