-- loom.fs: files and directories on libuv's thread pool (lua/io/fs.c,
-- file.c), so none of these calls blocks the loop. Inside a task a call
-- waits like any loom call (cancel and loom.timeout apply); outside one it
-- drives the loop until it is done.
--
-- Errors: kind "io" with the errno name as code ("ENOENT", "EACCES"...),
-- a message naming the path, and err.path; a bad argument is kind
-- "argument".
local core = require "loom.core"
local loom = require "loom"

local fs = {}

local function arg_error(fname, n, msg)
  loom.error("argument", ("bad argument #%d to 'loom.fs.%s' (%s)"):format(n, fname, msg))
end

local function check_path(fname, n, path)
  if type(path) ~= "string" then arg_error(fname, n, "path string expected, got " .. type(path)) end
  if path:find("\0", 1, true) then arg_error(fname, n, "a path cannot hold a zero byte") end
  return path
end

local function check_opts(fname, n, opts)
  if opts ~= nil and type(opts) ~= "table" then
    arg_error(fname, n, "options table expected, got " .. type(opts))
  end
  return opts or {}
end

local function check_mode(fname, n, mode)
  if mode ~= nil and (math.type(mode) ~= "integer" or mode < 0 or mode > 4095) then
    arg_error(fname, n, "mode must be an integer permission such as 420 (8#644)")
  end
  return mode
end

-- loom.fs.open(path [, mode]): a file with Lua io's methods: read("l" |
-- "L" | "a" | n, ...), lines([fmt]), write(...), seek([whence, offset]),
-- flush(), sync(), close(), and <close>. mode: "r" (default), "w", "a",
-- "r+", "w+", "a+", "wx" (create, failing if it exists); "b" is allowed.
function fs.open(path, mode)
  check_path("open", 1, path)
  if mode ~= nil and type(mode) ~= "string" then arg_error("open", 2, "mode string expected, got " .. type(mode)) end
  if mode ~= nil and not mode:match("^[rwa]%+?b?$") and not mode:match("^wb?x$") and not mode:match("^w%+?b?x$") then
    arg_error("open", 2, "invalid mode '" .. mode .. "' (r, w, a, r+, w+, a+ or wx, with b allowed)")
  end
  return core._fs_open(path, mode or "r")
end

-- loom.fs.read(path): the whole file as a string.
function fs.read(path)
  check_path("read", 1, path)
  local f <close> = core._fs_open(path, "r")
  return f:read("a")
end

-- loom.fs.stat(path [, {follow = false}]): {type = "file" | "directory" |
-- "link" | "fifo" | "socket" | "char" | "block", size, mtime, atime,
-- ctime (seconds, with fractions), mode (permission bits), nlink, uid,
-- gid, ino, dev, blocks}. A link is followed unless follow is false.
function fs.stat(path, opts)
  check_path("stat", 1, path)
  opts = check_opts("stat", 2, opts)
  return core._fs_stat(path, opts.follow ~= false)
end

-- loom.fs.exists(path): true, or false for ENOENT (other errors raise).
function fs.exists(path)
  check_path("exists", 1, path)
  local ok, err = pcall(core._fs_stat, path, true)
  if ok then return true end
  if loom.is_error(err, "io") and (err.code == "ENOENT" or err.code == "ENOTDIR") then return false end
  error(err, 0)
end

-- loom.fs.list(path): the directory's entries, sorted by name, each
-- {name =, type =} (type as stat's, or "unknown" where the file system
-- does not say).
function fs.list(path)
  check_path("list", 1, path)
  return core._fs_scandir(path)
end

-- loom.fs.rename(from, to): replaces `to` if it exists (rename(2)).
function fs.rename(from, to)
  check_path("rename", 1, from)
  check_path("rename", 2, to)
  core._fs_rename(from, to)
end

-- loom.fs.remove(path): a file, a link or an empty directory.
function fs.remove(path)
  check_path("remove", 1, path)
  local ok, err = pcall(core._fs_unlink, path)
  if ok then return end
  if loom.is_error(err, "io") and (err.code == "EISDIR" or err.code == "EPERM") then
    local st_ok, st = pcall(core._fs_stat, path, false)
    if st_ok and st.type == "directory" then return core._fs_rmdir(path) end
  end
  error(err, 0)
end

-- loom.fs.mkdir(path [, {parents = true, mode = 8#777}]): with parents,
-- the missing directories above it too, and no error if it exists
-- already as a directory.
function fs.mkdir(path, opts)
  check_path("mkdir", 1, path)
  opts = check_opts("mkdir", 2, opts)
  local mode = check_mode("mkdir", 2, opts.mode)
  if not opts.parents then return core._fs_mkdir(path, mode) end
  local ok, err = pcall(core._fs_mkdir, path, mode)
  if ok then return end
  if not loom.is_error(err, "io") then error(err, 0) end
  if err.code == "EEXIST" then
    if core._fs_stat(path, true).type == "directory" then return end
    error(err, 0)
  end
  if err.code ~= "ENOENT" then error(err, 0) end
  local parent = path:match("^(.*[^/])/+[^/]+/*$")
  if not parent then error(err, 0) end
  fs.mkdir(parent, { parents = true, mode = mode })
  ok, err = pcall(core._fs_mkdir, path, mode)
  -- Someone else made it meanwhile.
  if not ok and not (loom.is_error(err, "io") and err.code == "EEXIST") then error(err, 0) end
end

local function split(path)
  local dir, base = path:match("^(.*)/([^/]+)$")
  if not dir then return ".", path end
  return dir == "" and "/" or dir, base
end

-- Removes an atomic write's temporary file, whatever stopped it.
local function give_up(f, tmp)
  loom.shield(function()
    if f then
      f:_discard()
      pcall(f.close, f)
    end
    pcall(core._fs_unlink, tmp, true)
  end)
end

-- loom.fs.write(path, data [, {fsync = false, mode =}]): replaces the
-- file atomically: data goes to a temporary file in the same directory,
-- which is renamed over path once complete, so a reader sees the old file
-- or the new one, never a part. With fsync = true the data (and the
-- rename, through the directory) reaches the disk before it returns. The
-- new file keeps the old one's permissions (or mode, or 8#666 less the
-- umask). On any failure, a cancel or a timeout, the temporary file is
-- removed and the old file is left as it was. A device, a FIFO or a
-- socket at path is refused (EINVAL), never replaced.
function fs.write(path, data, opts)
  check_path("write", 1, path)
  if type(data) ~= "string" then
    if type(data) ~= "number" then arg_error("write", 2, "string expected, got " .. type(data)) end
    data = tostring(data)
  end
  opts = check_opts("write", 3, opts)
  local mode = check_mode("write", 3, opts.mode)
  -- Not a file's name: split would put the temporary file beside the
  -- current directory and the error would name that path. open(2) says
  -- the same of them.
  if path == "" or path:sub(-1) == "/" then
    local code, why = path == "" and "ENOENT" or "EISDIR",
      path == "" and "no such file or directory" or "illegal operation on a directory"
    loom.error("io", ("open '%s': %s"):format(path, why), { code = code, path = path })
  end
  local dir, base = split(path)
  local found, st = pcall(core._fs_stat, path, true)
  if found then
    -- The rename would put a regular file where a device, a FIFO or a
    -- socket was (as root, /dev/null itself): writing to one is
    -- fs.open's, replacing it nobody's.
    if st.type ~= "file" and st.type ~= "directory" then
      loom.error("io", ("write '%s': a %s, not a file: fs.write replaces files, fs.open writes to a %s")
        :format(path, st.type, st.type), { code = "EINVAL", path = path })
    end
    mode = mode or st.mode
  elseif not (loom.is_error(st, "io") and st.code == "ENOENT") then
    error(st, 0)
  end
  local tmp, f
  for _ = 1, 10 do
    tmp = ("%s/.%s.%08x.tmp"):format(dir, base, math.random(0, 0x7fffffff))
    -- An open that a cancel interrupts removes the file it made ("x").
    local ok, err = pcall(core._fs_open, tmp, "wx", 438)
    if ok then f = err break end
    if not (loom.is_error(err, "io") and err.code == "EEXIST") then error(err, 0) end
  end
  if not f then loom.error("io", "cannot find a free temporary name beside '" .. path .. "'", { code = "EEXIST" }) end
  local ok, err = pcall(function()
    f:write(data)
    f:flush()
    if opts.fsync then f:sync() end
    if mode then core._fs_chmod(tmp, mode) end
    f:close()
    core._fs_rename(tmp, path)
  end)
  if not ok then
    give_up(f, tmp)
    if loom.is_error(err, "io") and err.path == tmp then
      err.message = err.message .. " (writing '" .. path .. "')"
    end
    error(err, 0)
  end
  if opts.fsync then
    local d <close> = core._fs_open(dir, "r")
    d:sync()
  end
end

loom.fs = fs
return fs
