-- loom.db: the database API on top of the C pool and drivers.
--
-- A db is a pool. A call like db:query borrows a connection for the one
-- statement, unless the calling task holds one already (inside
-- db:transaction, db:with or while an db:acquire() session is open), in
-- which case it uses that one: a task never waits on the pool for a
-- connection it is itself holding.
--
-- Loaded on first use of loom.db (or by require "loom.db"), so a program
-- without databases loads none of this; a driver's C module (and its
-- client library) loads when a URL of that driver is opened.
local loom = require "loom"
local core = require "loom.core"

local pack, unpack = table.pack, table.unpack
local is_callable = loom._is_callable

local DB = {}
DB.__index = DB
local Session = {}
Session.__index = Session

-- Connections pinned to the task (or to code outside tasks) using them.
local OUTSIDE = {}
local pins = setmetatable({}, { __mode = "k" })

local current = loom.current
local function owner() return current() or OUTSIDE end

local function pinned(db)
  local p = pins[owner()]
  return p and p[db]
end

local function pin(db, conn)
  local o = owner()
  local p = pins[o]
  if not p then p = {}; pins[o] = p end
  local previous = p[db]
  p[db] = conn
  return previous
end

local function unpin(db, previous)
  local p = pins[owner()]
  if p then p[db] = previous end
end

-- Transactions that must not commit, by connection object: a savepoint
-- that could not be ended leaves its work in an unknown state, even if
-- the caller catches the error and carries on.
local doomed = setmetatable({}, { __mode = "k" })

local function argerror(n, fname, msg)
  loom.error("argument", ("bad argument #%d to '%s' (%s)"):format(n, fname, msg))
end

-- An error value to raise later (after cleanup) or to hand back.
local function make_error(kind, msg, fields)
  local _, e = pcall(loom.error, kind, msg, fields)
  return e
end

local find = string.find

-- Every entry point that takes SQL comes through here. A NUL byte ends
-- the text for some drivers (a client library reading a C string), so what runs would
-- not be what the caller wrote: "DELETE ... WHERE id = 1\0 AND owner = x"
-- would delete every row with id 1.
local function check_sql(sql, fname, where)
  if type(sql) ~= "string" then
    argerror(1, fname, (where or "") .. "SQL string expected, got " .. type(sql))
  end
  if find(sql, "\0", 1, true) then
    argerror(1, fname, (where or "") .. "the SQL text contains a NUL byte (binary data goes in a parameter)")
  end
end

local function check_name(name, n, fname, what)
  if find(name, "\0", 1, true) then argerror(n, fname, what .. " contains a NUL byte") end
end

local function released()
  loom.error("usage", "this session was released: a session serves until release(), "
    .. "or the end of the with() or transaction() that gave it")
end

---------------------------------------------------------------- passwords
local passwords = require "loom.secrets"
local url_secrets, scrub, scrub_error = passwords.of_url, passwords.scrub, passwords.scrub_error

-- What a handle must keep but never show: the URL as given (the
-- listener connects with it) and the password parts to scrub. Kept
-- here, by handle, not in its fields, where a debug dump, an inspect()
-- or a log of the table would print them.
local private = setmetatable({}, { __mode = "k" })

loom.db = {}

local dialects -- what differs between drivers, by URL scheme; loaded below

-- Whether this build has d's driver, asked without loading it (and its
-- client library): a C module on package.cpath, or in package.preload
-- (hosts that link loom in, loom_preload_drivers).
local function built(d)
  return package.preload[d.module] ~= nil or package.searchpath(d.module, package.cpath) ~= nil
end

-- d's driver, for core._db_open and core._listener: loading its module
-- loads its client library.
local function load_driver(d)
  if not built(d) then
    loom.error("argument", ("loom was built without the %s driver (the build option %s=ON builds it)")
      :format(d.name, d.option))
  end
  local ok, driver = pcall(require, d.module)
  if not ok then
    loom.error("argument", ("cannot load the %s driver: %s"):format(d.name, tostring(driver)))
  end
  return driver
end

local function check_seconds(v, n, fname, what)
  if v ~= nil and (type(v) ~= "number" or not (v >= 0)) then -- luacheck: ignore 581 (NaN)
    argerror(n, fname, what .. " must be a non-negative number of seconds, got "
      .. (type(v) == "number" and tostring(v) or type(v)))
  end
  return v
end

-- loom.db.open(url, {pool = {min=, max=, acquire_timeout=, max_lifetime=,
--   idle_timeout=, validate_after=}, statement_cache = true})
function loom.db.open(url, opts)
  if type(url) ~= "string" then argerror(1, "loom.db.open", "URL string expected, got " .. type(url)) end
  opts = opts or {}
  if type(opts) ~= "table" then argerror(2, "loom.db.open", "options table expected") end
  local secrets = url_secrets(url)
  local dialect
  for _, d in ipairs(dialects) do
    for _, prefix in ipairs(d.schemes) do
      if url:sub(1, #prefix) == prefix then dialect = d end
    end
  end
  if not dialect then
    -- Only a well-formed scheme is shown: the rest may hold a password.
    local scheme = url:match("^(%a[%w+.-]*):")
    local known = {}
    for _, d in ipairs(dialects) do
      if built(d) then
        for _, prefix in ipairs(d.schemes) do known[#known + 1] = prefix end
      end
    end
    table.sort(known)
    loom.error("argument", ("no database driver for %s (%s)"):format(
      scheme and ("'" .. scrub(scheme, secrets) .. ":'") or "this URL",
      #known > 0 and "URLs start with " .. table.concat(known, ", ") or "loom was built with no driver"))
  end
  check_name(url, 1, "loom.db.open", "the URL")
  check_seconds(opts.busy_timeout, 2, "loom.db.open", "busy_timeout")
  local conninfo = dialect.conninfo and dialect.conninfo(url, opts) or url
  local pool = opts.pool or {}
  if type(pool) ~= "table" then argerror(2, "loom.db.open", "pool must be a table") end
  local handle = core._db_open(load_driver(dialect), conninfo, pool, secrets)
  local db = setmetatable({
    handle = handle, driver = dialect.name, dialect = dialect, shown = scrub(url, secrets),
    cache = opts.statement_cache ~= false, split = dialect.split_reads and pool.readers ~= 0,
  }, DB)
  private[db] = { url = url, secrets = secrets }
  return db
end

DB.__tostring = function(db) return ("loom.db (%s)"):format(db.shown) end
DB.__close = function(db) db:close() end

---------------------------------------------------------------- statements
-- Everything below is written once against :_run(method, ...), which DB
-- (pinned or borrowed connection) and Session (its own) implement.

-- A driver with reader connections beside its one writer (its dialect's
-- split_reads) serves statements that only read on them: the driver reads
-- the SQL to tell (db:_run1's may_read, db:_acquire given the SQL).

local MODE = core._modes
local EXEC = MODE.exec
local ONE_CALL = { _query = MODE.rows, _value = MODE.value, _exec = MODE.exec }

-- method: a connection method's name, or a function(conn, ...).
function DB:_run(method, ...)
  local c = pinned(self)
  if not c then
    local mode = ONE_CALL[method]
    if mode then
      -- One statement: borrowed, run and given back by one C call.
      return self.handle:_run1(mode, self.split and mode ~= EXEC, ...)
    end
    local borrowed <close> = self.handle:_acquire()
    if type(method) == "function" then return method(borrowed, ...) end
    return borrowed[method](borrowed, ...)
  end
  if type(method) == "function" then return method(c, ...) end
  return c[method](c, ...)
end

-- A session's statements (DB has its own for all but batch, below).
-- query(sql, ...) -> rows, info   (rows keyed by column name)
function Session:query(sql, ...)
  check_sql(sql, "query")
  return self:_run("_query", sql, self.cache, ...)
end

-- exec(sql, ...) -> affected rows, last insert id
function Session:exec(sql, ...)
  check_sql(sql, "exec")
  return self:_run("_exec", sql, self.cache, ...)
end

function Session:first(sql, ...)
  check_sql(sql, "first")
  local rows = self:_run("_query", sql, self.cache, ...)
  return rows[1]
end

function Session:value(sql, ...)
  check_sql(sql, "value")
  return self:_run("_value", sql, self.cache, ...)
end

-- batch{ {sql, ...}, ... } -> { rows, rows, ... }: one round trip.
function Session:batch(list)
  if type(list) ~= "table" then argerror(1, "batch", "table of {sql, params...} expected") end
  for i = 1, #list do
    local item = list[i]
    if type(item) ~= "table" then argerror(1, "batch", ("item %d must be a table {sql, params...}"):format(i)) end
    check_sql(item[1], "batch", ("item %d: "):format(i))
  end
  return self:_run("_batch", list, self.cache)
end
DB.batch = Session.batch

-- The hot path of DB: one statement, no session held. Written out so a
-- query costs one Lua call and one C call (the generic _run forwards
-- its arguments twice).
local function direct(name, mode)
  local method = "_" .. name
  DB[name] = function(self, sql, ...)
    if type(sql) ~= "string" or find(sql, "\0", 1, true) then check_sql(sql, name) end
    local c = pinned(self)
    if c then return c[method](c, sql, self.cache, ...) end
    return self.handle:_run1(mode, mode ~= EXEC and self.split, sql, self.cache, ...)
  end
end
direct("query", MODE.rows)
direct("value", MODE.value)
direct("exec", MODE.exec)
function DB:first(sql, ...)
  if type(sql) ~= "string" or find(sql, "\0", 1, true) then check_sql(sql, "first") end
  local rows = self:query(sql, ...)
  return rows[1]
end

-- for row in db:rows(sql, ...) do ... end: rows arrive one at a time from
-- the server; leaving the loop early (break, error) cancels the rest and
-- gives the connection back clean.
local function stream(conn, owned, sql, ...)
  local ok, err = pcall(conn._stream, conn, sql, ...)
  if not ok then
    if owned then conn:_release() end
    error(err, 0)
  end
  local finished = false
  local closer = setmetatable({}, { __close = function()
    if not finished then conn:_stop() end
    if owned then conn:_release() end
  end })
  return function()
    if finished then return nil end
    local row = conn:_next()
    if row == nil then
      -- Done: give the connection back now, not only when a for loop's
      -- closing value runs (an iterator handed on, e.g. to loom.pipeline).
      finished = true
      if owned then owned = false; conn:_release() end
    end
    return row
  end, nil, nil, closer
end

function DB:rows(sql, ...)
  check_sql(sql, "rows")
  local c = pinned(self)
  if c then return stream(c, false, sql, ...) end
  return stream(self.handle:_acquire(self.split and sql), true, sql, ...)
end

function Session:rows(sql, ...)
  check_sql(sql, "rows")
  if not self.conn then released() end
  return stream(self.conn, false, sql, ...)
end

---------------------------------------------------------------- sessions
function Session:_run(method, ...)
  local c = self.conn
  if not c then released() end
  if type(method) == "function" then return method(c, ...) end
  return c[method](c, ...)
end

function Session:release()
  if self.conn == nil then return end
  local conn = self.conn
  self.conn = nil
  if self.pinned then unpin(self.db, self.previous) end
  if self.owns then
    doomed[conn] = nil
    conn:_release()
  end
end
Session.__close = Session.release

function Session:backend_id() return self.conn and self.conn:_backend_id() end

-- db:acquire() -> a session on one connection, pinned to this task until
-- released (`local s <close> = db:acquire()`). Asking again while holding
-- one gives a session on the same connection.
function DB:acquire(reading)
  local held = pinned(self)
  if held then
    return setmetatable({ db = self, conn = held, cache = self.cache, owns = false }, Session)
  end
  local conn = self.handle:_acquire(reading and self.split)
  local s = setmetatable({ db = self, conn = conn, cache = self.cache, owns = true, pinned = true }, Session)
  s.previous = pin(self, conn)
  return s
end

function DB:with(fn, ...)
  local s <close> = self:acquire()
  return fn(s, ...)
end

---------------------------------------------------------------- transactions
local ISOLATION = {
  ["serializable"] = "SERIALIZABLE", ["repeatable read"] = "REPEATABLE READ",
  ["read committed"] = "READ COMMITTED", ["read uncommitted"] = "READ UNCOMMITTED",
}

-- Ends conn's transaction with COMMIT. Once sent, COMMIT is waited for
-- whatever happens (a timeout or cancel lands at the next wait), so true
-- means committed and an error means not committed, except kind
-- commit_unknown: the connection broke with COMMIT on its way, and only
-- the server knows.
local function commit(conn)
  local ok, e = pcall(conn._settle, conn, "COMMIT")
  if ok then return true end
  if conn:_broken() or (type(e) == "table" and e.kind == "connection") then
    return false, make_error("commit_unknown", "the connection broke during COMMIT: "
      .. "the transaction may or may not have committed", { cause = e })
  end
  return false, e
end

local function rollback(conn)
  if conn:_txn() ~= "idle" and not conn:_broken() then pcall(conn._settle, conn, "ROLLBACK") end
end

-- Savepoint names are unique, never reused on a connection: on some
-- servers a SAVEPOINT with a name in use silently replaces the older one, and a
-- nested transaction would then destroy its caller's savepoint.
local savepoints = 0

local function savepoint(s, fn, ...)
  if not is_callable(fn) then argerror(1, "savepoint", "function expected, got " .. type(fn)) end
  local conn = s.conn
  if not conn then released() end
  savepoints = savepoints + 1
  local name = "loom_sp_" .. savepoints
  s:_run("_query", "SAVEPOINT " .. name, false)
  local r = pack(pcall(fn, s, ...))
  local ok, e
  if r[1] then
    ok, e = pcall(s._run, s, "_query", "RELEASE SAVEPOINT " .. name, false)
    if ok then return unpack(r, 2, r.n) end
  else
    ok, e = pcall(s._run, s, "_settle", "ROLLBACK TO SAVEPOINT " .. name)
    if ok then ok, e = pcall(s._run, s, "_settle", "RELEASE SAVEPOINT " .. name) end
    if ok then error(r[2], 0) end
    if type(e) == "table" then e.cause = r[2] end
  end
  doomed[conn] = doomed[conn] or e
  error(e, 0)
end

-- tx:savepoint(fn, ...): fn's work is undone alone if it fails. If the
-- savepoint itself cannot be ended, that error is raised and the
-- transaction around it will roll back, not commit.
Session.savepoint = savepoint

-- db:transaction(fn, {isolation=, read_only=, retries=0, backoff=0.01})
-- runs fn(tx) in a transaction: commit when it returns, rollback when it
-- raises. Serialization failures and deadlocks are retried with backoff
-- up to `retries` times (math.huge: no limit).
function DB:transaction(fn, opts)
  if not is_callable(fn) then argerror(1, "transaction", "function expected, got " .. type(fn)) end
  opts = opts or {}
  if type(opts) ~= "table" then argerror(2, "transaction", "options table expected") end
  local retries = opts.retries or 0
  -- luacheck: push ignore 581 (not (x >= 0) refuses NaN too)
  if type(retries) ~= "number" or not (retries >= 0) or (retries < math.huge and retries % 1 ~= 0) then
    -- luacheck: pop
    argerror(2, "transaction", "retries must be a whole number, 0 or more (math.huge: no limit), got "
      .. (type(retries) == "number" and tostring(retries) or type(retries)))
  end
  local delay = check_seconds(opts.backoff, 2, "transaction", "backoff") or 0.01
  local level = opts.isolation and ISOLATION[opts.isolation]
  if opts.isolation and not level then
    argerror(2, "transaction", "unknown isolation level '" .. tostring(opts.isolation) .. "'")
  end
  local held = pinned(self)
  if held and held:_txn() ~= "idle" then
    -- Already in this task's transaction: nest as a savepoint.
    return savepoint(setmetatable({ db = self, conn = held, cache = self.cache, owns = false }, Session), fn)
  end
  local sql, before = self.dialect.begin(opts, level)
  for attempt = 1, retries + 1 do
    local s <close> = self:acquire(opts.read_only)
    local conn = s.conn
    if before then s:_run("_query", before, false) end
    s:_run("_query", sql, false)
    local r = pack(pcall(fn, s))
    local err
    if s.conn ~= conn then
      -- fn released its session: the transaction was rolled back (by the
      -- pool, or here when the connection is the caller's).
      err = r[1] and make_error("usage", "the transaction's session was released inside it: nothing was committed")
        or r[2]
      pcall(rollback, conn)
    elseif r[1] and doomed[conn] then
      err = doomed[conn]
      rollback(conn)
    elseif r[1] then
      local ok, e = commit(conn)
      if ok then
        doomed[conn] = nil
        return unpack(r, 2, r.n)
      end
      err = e
      rollback(conn)
    else
      err = r[2]
      rollback(conn)
    end
    doomed[conn] = nil
    local retry = attempt <= retries and type(err) == "table" and self.dialect.retryable[err.code]
    if not retry then error(err, 0) end
    s:release()
    loom.sleep(delay * (0.5 + math.random()))
    delay = delay * 2
  end
end

---------------------------------------------------------------- bulk insert
local function quote_ident(name)
  return '"' .. name:gsub('"', '""') .. '"'
end

local function quote_table(name)
  local parts = {}
  for part in name:gmatch("[^.]+") do parts[#parts + 1] = quote_ident(part) end
  return table.concat(parts, ".")
end

-- Runs work(conn, ...) in a transaction of its own, begun with `begin`,
-- unless conn is in one already (then it is the caller's to end).
local function own_transaction(conn, begin, work, ...)
  if conn:_txn() ~= "idle" then return work(conn, ...) end
  conn:_exec(begin, false)
  local r = pack(pcall(work, conn, ...))
  if r[1] then
    local ok, e = commit(conn)
    if ok then return unpack(r, 2, r.n) end
    r[2] = e
  end
  rollback(conn)
  error(r[2], 0)
end

-- insert_many(table, columns, rows) -> rows inserted. Rows are arrays in
-- column order or tables keyed by column name. How they go in is the
-- dialect's choice.
local function insert_many(self, tbl, columns, rows)
  if type(tbl) ~= "string" or tbl == "" then argerror(1, "insert_many", "table name expected") end
  check_name(tbl, 1, "insert_many", "the table name")
  if type(columns) ~= "table" or #columns == 0 then
    argerror(2, "insert_many", "non-empty array of column names expected")
  end
  for i, col in ipairs(columns) do
    if type(col) ~= "string" then argerror(2, "insert_many", "column " .. i .. " is not a string") end
    check_name(col, 2, "insert_many", "column " .. i)
  end
  if type(rows) ~= "table" then argerror(3, "insert_many", "array of rows expected") end
  local n = #rows
  if n == 0 then return 0 end
  return (self.db or self).dialect.insert_many(self, tbl, columns, rows, n)
end
DB.insert_many = insert_many
Session.insert_many = insert_many

---------------------------------------------------------------- advisory locks
-- db:lock(key, fn, {timeout = s}): fn runs holding a lock on key (a
-- string or an integer); the lock is released however fn ends,
-- cancellation included. A task may take a lock it holds again: the
-- lock is counted and freed when the outermost call ends, as a server's
-- session-level locks are.
function DB:lock(key, fn, opts)
  local kt = math.type(key) == "integer" and "integer" or type(key)
  if kt ~= "string" and kt ~= "integer" then
    argerror(1, "lock", "string or integer key expected, got " .. type(key))
  end
  if not is_callable(fn) then argerror(2, "lock", "function expected, got " .. type(fn)) end
  opts = opts or {}
  if type(opts) ~= "table" then argerror(3, "lock", "options table expected") end
  local timeout = check_seconds(opts.timeout, 3, "lock", "timeout")
  -- A billion seconds (31 years) is as good as never, and a server can
  -- take it: math.huge it cannot.
  if timeout and timeout >= 1e9 then timeout = nil end
  return self.dialect.lock(self, key, fn, timeout)
end

-- A lock a server holds for the session: fn gets the session. take(s,
-- key, timeout) raises kind timeout when the lock stays taken.
local function server_lock(take, release)
  return function(db, key, fn, timeout)
    local s <close> = db:acquire()
    take(s, key, timeout)
    local r = pack(pcall(fn, s))
    loom.shield(pcall, release, s, key)
    if not r[1] then error(r[2], 0) end
    return unpack(r, 2, r.n)
  end
end

-- For a database with no server to hold locks: a named lock of the
-- handle, shared by its tasks. fn gets the db.
local function local_lock(db, key, fn, timeout)
  local locks = db._locks
  if not locks then locks = {}; db._locks = locks end
  local entry = locks[key]
  if not entry then entry = { mutex = loom.mutex(), users = 0, depth = 0 }; locks[key] = entry end
  local me = owner()
  entry.users = entry.users + 1
  local r = pack(pcall(function()
    if entry.holder == me then
      entry.depth = entry.depth + 1
      local inner = pack(pcall(fn, db))
      entry.depth = entry.depth - 1
      if not inner[1] then error(inner[2], 0) end
      return unpack(inner, 2, inner.n)
    end
    if timeout then loom.timeout(timeout, entry.mutex.lock, entry.mutex)
    else entry.mutex:lock() end
    entry.holder, entry.depth = me, 1
    local inner = pack(pcall(fn, db))
    entry.holder, entry.depth = nil, 0
    entry.mutex:unlock()
    if not inner[1] then error(inner[2], 0) end
    return unpack(inner, 2, inner.n)
  end))
  entry.users = entry.users - 1
  if entry.users == 0 then locks[key] = nil end
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

---------------------------------------------------------------- LISTEN / NOTIFY
local function check_buffer(opts, fname)
  opts = opts or {}
  if type(opts) ~= "table" then argerror(2, fname, "options table expected") end
  local b = opts.buffer
  -- luacheck: push ignore 581 (not (x >= 0) refuses NaN too)
  if b ~= nil and (type(b) ~= "number" or not (b >= 0) or b % 1 ~= 0 or b > 2 ^ 28) then
    -- luacheck: pop
    argerror(2, fname, "buffer must be a whole number of messages from 0 to 2^28")
  end
  return opts
end

-- db:changes({buffer = 1000, poll = 0.1}) -> a loom channel of {op=,
-- table=, rowid=} for rows written through this handle, sent
-- after their transaction commits, never for work rolled back. Writes
-- of another handle or process are not itemized, only announced: while
-- someone subscribes, the writer's data version (which moves on every
-- commit of any other connection) is read every `poll` seconds,
-- and a move sends {gap = true}, the marker a listener sends after a
-- reconnect. A subscriber that falls behind receives it too, once it has
-- room again. Close the channel to unsubscribe.
function DB:changes(opts)
  if not self.dialect.changes then loom.error("argument", self.dialect.no_changes) end
  opts = check_buffer(opts, "changes")
  -- luacheck: push ignore 581 (not (x > 0) refuses NaN too)
  if opts.poll ~= nil and (type(opts.poll) ~= "number" or not (opts.poll > 0)) then
    -- luacheck: pop
    argerror(1, "changes", "poll must be a positive number of seconds")
  end
  local subs = self._change_subs
  if not subs then
    subs = {}
    self._change_subs = subs
    self._change_poll = opts.poll or 0.1
    local behind = setmetatable({}, { __mode = "k" })
    local function live()
      for sub in pairs(subs) do
        if sub:is_closed() then subs[sub] = nil end
      end
      if next(subs) == nil and self._change_subs == subs then
        self.handle:_on_changes(nil)
        self._change_subs = nil
        if self._change_task then self._change_task:cancel("no subscriber left") end
        self._change_task = nil
      end
      return next(subs) ~= nil
    end
    self.handle:_on_changes(function(list)
      for sub in pairs(subs) do
        if not sub:is_closed() then
          if behind[sub] and sub:try_send({ gap = true }) then behind[sub] = nil end
          if not behind[sub] then
            for i = 1, #list do
              if not sub:try_send(list[i]) then behind[sub] = true break end
            end
          end
        end
      end
      live()
    end)
    -- The writer's own commits leave its data version alone; this
    -- handle's readers never commit: a move is someone else's write.
    local version_sql = self.dialect.changes.version_sql
    local version = self:value(version_sql)
    self._change_task = core._spawn_daemon(function()
      while not self.closed and self._change_subs == subs do
        loom.sleep(self._change_poll)
        if self.closed or not live() then return end
        local ok, now = pcall(self.value, self, version_sql)
        if ok and now ~= version then
          version = now
          for sub in pairs(subs) do behind[sub] = true end
        end
        for sub in pairs(behind) do
          if subs[sub] and sub:try_send({ gap = true }) then behind[sub] = nil end
        end
      end
    end)
  else
    self._change_poll = math.min(self._change_poll, opts.poll or self._change_poll)
  end
  local sub = loom.channel(opts.buffer or 1000)
  subs[sub] = true
  return sub
end

function DB:notify(channel, payload)
  if not self.dialect.listen then loom.error("argument", self.dialect.no_listen:format("db:notify")) end
  if type(channel) ~= "string" then argerror(1, "notify", "channel name expected, got " .. type(channel)) end
  if payload ~= nil and type(payload) ~= "string" then argerror(2, "notify", "string payload expected") end
  if channel:find("\0", 1, true) or (payload and payload:find("\0", 1, true)) then
    loom.error("argument", "db:notify: a channel name or payload cannot contain NUL bytes")
  end
  self.dialect.notify(self, channel, payload or "")
end

local Listener = {}
Listener.__index = Listener

-- Tells every subscriber that notifications may have been missed.
local function announce_gap(l)
  for name, subs in pairs(l.subs) do
    for sub in pairs(subs) do
      if sub:is_closed() then subs[sub] = nil -- unsubscribed: sending would raise
      elseif not sub:try_send({ channel = name, gap = true }) then l.gap_pending[sub] = true end
    end
  end
end

local function deliver(l, name, note)
  local subs = l.subs[name]
  if not subs then return end
  for sub in pairs(subs) do
    if sub:is_closed() then
      subs[sub] = nil
    else
      if l.gap_pending[sub] and sub:try_send({ channel = name, gap = true }) then
        l.gap_pending[sub] = nil
      end
      if l.gap_pending[sub] or not sub:try_send(note) then
        -- A subscriber that does not keep up loses messages, and hears so.
        l.gap_pending[sub] = true
      end
    end
  end
end

local function listen_all(l)
  for name in pairs(l.subs) do l.conn:_exec(l.listen_sql(name)) end
end

-- The dispatcher: reads notifications, fans them out, and after a lost
-- connection reconnects with backoff, LISTENs again and reports a gap.
local function dispatch(l)
  while true do
    local name, payload, pid = l.conn:_next()
    if name then
      deliver(l, name, { channel = name, payload = payload, pid = pid })
    elseif not l.closed then
      local delay = 0.05
      while not l.closed do
        local ok = pcall(function()
          l.conn:_connect()
          l.mutex:with(listen_all, l)
        end)
        if ok then break end
        loom.sleep(delay * (0.5 + math.random()))
        delay = math.min(delay * 2, 5)
      end
      announce_gap(l)
    else
      return
    end
  end
end

function Listener:close()
  if self.closed then return end
  self.closed = true
  if self.task then self.task:cancel("listener closed") end
  self.conn:_close()
  for _, subs in pairs(self.subs) do
    for sub in pairs(subs) do sub:close() end
  end
end

-- db:listen(channel, {buffer = 1000}) -> a loom channel receiving
-- {channel=, payload=, pid=}; after a reconnect (or if this subscriber
-- fell behind) it receives {channel=, gap=true}. Close it to unsubscribe.
function DB:listen(name, opts)
  if type(name) ~= "string" or name == "" then argerror(1, "listen", "channel name expected") end
  check_name(name, 1, "listen", "the channel name")
  if not self.dialect.listen then loom.error("argument", self.dialect.no_listen:format("db:listen")) end
  opts = check_buffer(opts, "listen")
  local l = self._listener
  if not l then
    l = setmetatable({ subs = {}, gap_pending = setmetatable({}, { __mode = "k" }),
      listen_sql = self.dialect.listen,
      mutex = loom.mutex(), conn = core._listener(load_driver(self.dialect), private[self].url) }, Listener)
    local ok, e = pcall(l.conn._connect, l.conn)
    if not ok then
      pcall(l.conn._close, l.conn)
      error(scrub_error(e, private[self].secrets), 0)
    end
    self._listener = l
    l.task = core._spawn_daemon(dispatch, l)
  end
  local sub = loom.channel(opts.buffer or 1000)
  local subs = l.subs[name]
  if not subs then
    -- Kept only once LISTEN worked: the reconnect LISTENs every name again.
    local sql = l.listen_sql(name)
    l.mutex:with(function() l.conn:_exec(sql) end)
    subs = l.subs[name] or {}
    l.subs[name] = subs
  end
  subs[sub] = true
  return sub
end

---------------------------------------------------------------- the rest
function DB:stats() return self.handle:_stats() end

function DB:close()
  if self.closed then return end
  self.closed = true
  if self._listener then self._listener:close() end
  if self._change_task then self._change_task:cancel("database handle closed") end
  self.handle:_close()
  -- Nothing more can arrive: a subscriber's loop ends once it has
  -- what was sent, as a db:listen() subscriber's does.
  local subs = self._change_subs
  if subs then
    self._change_subs, self._change_task = nil, nil
    self.handle:_on_changes(nil)
    for sub in pairs(subs) do sub:close() end
  end
end

---------------------------------------------------------------- dialects
-- What differs between drivers, and only that: the code above asks the
-- db's dialect and never names a driver. Each driver's dialect file,
-- lua/loom/db/<name>.lua, returns function(kit) -> its dialect:
--   schemes                    URL prefixes that open this driver
--   begin(opts, level)         -> BEGIN's SQL [, SQL to run before it]
--   retryable                  {[error code] = true}: a transaction retry may follow
--   insert_many(s, table, columns, rows, n) -> n, s a db or a session
--   lock(db, key, fn, timeout) kit.server_lock(take, release) or kit.local_lock
--   conninfo(url, opts)        optional: the driver's connect string
--   split_reads                optional: reads run on reader connections
--   listen(name) -> sql        optional, with notify: the statement that subscribes
--   notify(db, channel, payload)  the listening connection; db:listen and db:notify
--   changes = {version_sql =}  optional: db:changes
--   no_listen, no_changes      optional: the messages for what it lacks
local kit = {
  loom = loom, core = core, argerror = argerror, check_name = check_name,
  quote_ident = quote_ident, quote_table = quote_table, own_transaction = own_transaction,
  server_lock = server_lock, local_lock = local_lock,
}
dialects = {}
for i, name in ipairs(require "loom.db.drivers") do
  local d = require("loom.db." .. name)(kit)
  d.name, d.module, d.option = name, "loom.driver." .. name, "LOOM_WITH_" .. name:upper()
  d.no_listen = d.no_listen or ("%s needs notifications, which the " .. name .. " driver does not have")
  d.no_changes = d.no_changes or ("db:changes() is for embedded databases: the " .. name .. " driver has none")
  dialects[i] = d
end

loom.db._redact = passwords.redact
loom.db._DB, loom.db._Session = DB, Session

return loom.db
