-- loom.db: the database API on top of the C pool and drivers.
--
-- A db is a pool. A call like db:query borrows a connection for the one
-- statement, unless the calling task holds one already (inside
-- db:transaction, db:with or while an db:acquire() session is open), in
-- which case it uses that one: a task never waits on the pool for a
-- connection it is itself holding.
return function(loom, core)
  local pack, unpack = table.pack, table.unpack

  local DB = {}
  DB.__index = DB
  local Session = {}
  Session.__index = Session

  -- Connections pinned to the task (or to code outside tasks) using them.
  local OUTSIDE = {}
  local pins = setmetatable({}, { __mode = "k" })

  local function owner() return loom.current() or OUTSIDE end

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

  local function argerror(n, fname, msg)
    loom.error("argument", ("bad argument #%d to '%s' (%s)"):format(n, fname, msg))
  end

  local function check_sql(sql, fname)
    if type(sql) ~= "string" then argerror(1, fname, "SQL string expected, got " .. type(sql)) end
  end

  -- "postgres://user:secret@host/db" -> "postgres://user:***@host/db"
  local function redact(url)
    url = url:gsub("^(%a[%w+.-]*://[^:/@]*):[^@]*@", "%1:***@")
    url = url:gsub("([?&]password=)[^&]*", "%1***")
    url = url:gsub("(password%s*=%s*)'[^']*'", "%1***"):gsub("(password%s*=%s*)[^%s']+", "%1***")
    return url
  end

  loom.db = {}

  -- loom.db.open(url, {pool = {min=, max=, acquire_timeout=, max_lifetime=,
  --   idle_timeout=, validate_after=}, statement_cache = true})
  function loom.db.open(url, opts)
    if type(url) ~= "string" then argerror(1, "loom.db.open", "URL string expected, got " .. type(url)) end
    opts = opts or {}
    if type(opts) ~= "table" then argerror(2, "loom.db.open", "options table expected") end
    local driver
    if url:match("^postgres://") or url:match("^postgresql://") then
      driver = "postgres"
    else
      local scheme = url:match("^(%a[%w+.-]*):") or url
      loom.error("argument", ("no database driver for '%s' (postgres://... is supported)"):format(redact(scheme)))
    end
    local pool = opts.pool or {}
    if type(pool) ~= "table" then argerror(2, "loom.db.open", "pool must be a table") end
    local handle = core._db_open(driver, url, pool)
    return setmetatable({
      handle = handle, driver = driver, shown = redact(url), url = url,
      cache = opts.statement_cache ~= false, listeners = nil,
    }, DB)
  end

  DB.__tostring = function(db) return ("loom.db (%s)"):format(db.shown) end
  DB.__close = function(db) db:close() end

  ---------------------------------------------------------------- statements
  -- Everything below is written once against :_run(method, ...), which DB
  -- (pinned or borrowed connection) and Session (its own) implement.

  -- method: a connection method's name, or a function(conn, ...).
  function DB:_run(method, ...)
    local c = pinned(self)
    if not c then
      local borrowed <close> = self.handle:_acquire()
      if type(method) == "function" then return method(borrowed, ...) end
      return borrowed[method](borrowed, ...)
    end
    if type(method) == "function" then return method(c, ...) end
    return c[method](c, ...)
  end

  local function define(T)
    -- query(sql, ...) -> rows, info   (rows keyed by column name)
    function T:query(sql, ...)
      check_sql(sql, "query")
      return self:_run("_query", sql, self.cache, ...)
    end

    -- exec(sql, ...) -> affected rows, last insert id
    function T:exec(sql, ...)
      check_sql(sql, "exec")
      return self:_run("_exec", sql, self.cache, ...)
    end

    function T:first(sql, ...)
      check_sql(sql, "first")
      local rows = self:_run("_query", sql, self.cache, ...)
      return rows[1]
    end

    function T:value(sql, ...)
      check_sql(sql, "value")
      return self:_run("_value", sql, self.cache, ...)
    end

    -- batch{ {sql, ...}, ... } -> { rows, rows, ... }: one round trip.
    function T:batch(list)
      if type(list) ~= "table" then argerror(1, "batch", "table of {sql, params...} expected") end
      return self:_run("_batch", list, self.cache)
    end
  end
  define(DB)
  define(Session)

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
      local row = conn:_next()
      if row == nil then finished = true end
      return row
    end, nil, nil, closer
  end

  function DB:rows(sql, ...)
    check_sql(sql, "rows")
    local c = pinned(self)
    if c then return stream(c, false, sql, ...) end
    return stream(self.handle:_acquire(), true, sql, ...)
  end

  function Session:rows(sql, ...)
    check_sql(sql, "rows")
    return stream(self.conn, false, sql, ...)
  end

  ---------------------------------------------------------------- sessions
  function Session:_run(method, ...)
    local c = self.conn
    if not c then loom.error("closed", "this session was released") end
    if type(method) == "function" then return method(c, ...) end
    return c[method](c, ...)
  end

  function Session:release()
    if self.conn == nil then return end
    local conn = self.conn
    self.conn = nil
    if self.pinned then unpin(self.db, self.previous) end
    if self.owns then conn:_release() end
  end
  Session.__close = Session.release

  function Session:backend_id() return self.conn and self.conn:_backend_id() end

  -- db:acquire() -> a session on one connection, pinned to this task until
  -- released (`local s <close> = db:acquire()`). Asking again while holding
  -- one gives a session on the same connection.
  function DB:acquire()
    local held = pinned(self)
    if held then
      return setmetatable({ db = self, conn = held, cache = self.cache, owns = false }, Session)
    end
    local conn = self.handle:_acquire()
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
  local RETRYABLE = { ["40001"] = true, ["40P01"] = true }

  local function begin_sql(opts)
    local sql = "BEGIN"
    if opts.isolation then
      local level = ISOLATION[opts.isolation]
      if not level then argerror(2, "transaction", "unknown isolation level '" .. tostring(opts.isolation) .. "'") end
      sql = sql .. " ISOLATION LEVEL " .. level
    end
    if opts.read_only then sql = sql .. " READ ONLY" end
    return sql
  end

  local function savepoint(s, fn, ...)
    s.depth = (s.depth or 0) + 1
    local name = "loom_sp_" .. s.depth
    s:_run("_query", "SAVEPOINT " .. name, false)
    local r = pack(pcall(fn, s, ...))
    if r[1] then
      s:_run("_query", "RELEASE SAVEPOINT " .. name, false)
      s.depth = s.depth - 1
      return unpack(r, 2, r.n)
    end
    s.depth = s.depth - 1
    pcall(s._run, s, "_query", "ROLLBACK TO SAVEPOINT " .. name, false)
    error(r[2], 0)
  end

  -- tx:savepoint(fn, ...): fn's work is undone alone if it fails.
  Session.savepoint = savepoint

  -- db:transaction(fn, {isolation=, read_only=, retries=0, backoff=0.01})
  -- runs fn(tx) in a transaction: commit when it returns, rollback when it
  -- raises. Serialization failures (40001) and deadlocks (40P01) are retried
  -- with backoff up to `retries` times.
  function DB:transaction(fn, opts)
    if type(fn) ~= "function" then argerror(1, "transaction", "function expected, got " .. type(fn)) end
    opts = opts or {}
    if type(opts) ~= "table" then argerror(2, "transaction", "options table expected") end
    local held = pinned(self)
    if held then
      -- Already in this task's transaction or session: nest as a savepoint.
      local s = setmetatable({ db = self, conn = held, cache = self.cache, owns = false }, Session)
      if held:_txn() ~= "idle" then return savepoint(s, fn) end
    end
    local retries = opts.retries or 0
    local delay = opts.backoff or 0.01
    local sql = begin_sql(opts)
    for attempt = 1, retries + 1 do
      local s <close> = self:acquire()
      s:_run("_query", sql, false)
      local r = pack(pcall(fn, s))
      local err
      if r[1] then
        local ok, e = pcall(s._run, s, "_query", "COMMIT", false)
        if ok then return unpack(r, 2, r.n) end
        err = e
      else
        err = r[2]
        -- Roll back here when we can; releasing rolls back otherwise.
        if s.conn:_txn() ~= "idle" and not s.conn:_broken() then
          pcall(loom.shield, s._run, s, "_query", "ROLLBACK", false)
        end
      end
      local retry = attempt <= retries and type(err) == "table" and RETRYABLE[err.code]
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

  local COPY_CHUNK = 4000 -- rows per chunk sent while the next is formatted

  local copy_format = core._copy_format
  local function bulk(conn, sql, columns, rows, n)
    -- The first chunk is formatted before the COPY starts, so bad input
    -- there is an error before anything is sent.
    local chunk = copy_format(rows, columns, 1, math.min(n, COPY_CHUNK))
    conn:_copy(sql)
    conn:_copy_data(chunk)
    for first = COPY_CHUNK + 1, n, COPY_CHUNK do
      conn:_copy_data(copy_format(rows, columns, first, math.min(n, first + COPY_CHUNK - 1)))
    end
    return conn:_copy_data()
  end

  -- insert_many(table, columns, rows) -> rows inserted. Rows are arrays in
  -- column order or tables keyed by column name. On PostgreSQL it is one
  -- COPY ... FROM STDIN, streamed in chunks.
  local function insert_many(self, tbl, columns, rows)
    if type(tbl) ~= "string" or tbl == "" then argerror(1, "insert_many", "table name expected") end
    if type(columns) ~= "table" or #columns == 0 then argerror(2, "insert_many", "non-empty array of column names expected") end
    for i, col in ipairs(columns) do
      if type(col) ~= "string" then argerror(2, "insert_many", "column " .. i .. " is not a string") end
    end
    if type(rows) ~= "table" then argerror(3, "insert_many", "array of rows expected") end
    local n = #rows
    if n == 0 then return 0 end
    local quoted = {}
    for i, col in ipairs(columns) do quoted[i] = quote_ident(col) end
    local sql = ("COPY %s (%s) FROM STDIN"):format(quote_table(tbl), table.concat(quoted, ", "))
    return self:_run(bulk, sql, columns, rows, n)
  end
  DB.insert_many = insert_many
  Session.insert_many = insert_many

  ---------------------------------------------------------------- advisory locks
  -- db:lock(key, fn, {timeout = s}): fn runs holding a session-level
  -- advisory lock on key (a string or an integer); the lock is released
  -- however fn ends, cancellation included. fn gets the session holding it.
  function DB:lock(key, fn, opts)
    local kt = math.type(key) == "integer" and "integer" or type(key)
    if kt ~= "string" and kt ~= "integer" then argerror(1, "lock", "string or integer key expected, got " .. type(key)) end
    if type(fn) ~= "function" then argerror(2, "lock", "function expected, got " .. type(fn)) end
    opts = opts or {}
    local arg = kt == "string" and "hashtextextended($1, 0)" or "$1::bigint"
    local s <close> = self:acquire()
    local take = "SELECT pg_advisory_lock(" .. arg .. ")"
    if opts.timeout then
      -- A lock wait past the timeout is cancelled on the server too.
      loom.timeout(opts.timeout, s._run, s, "_exec", take, true, key)
    else
      s:_run("_exec", take, true, key)
    end
    local r = pack(pcall(fn, s))
    loom.shield(pcall, s._run, s, "_exec", "SELECT pg_advisory_unlock(" .. arg .. ")", true, key)
    if not r[1] then error(r[2], 0) end
    return unpack(r, 2, r.n)
  end

  ---------------------------------------------------------------- LISTEN / NOTIFY
  function DB:notify(channel, payload)
    if type(channel) ~= "string" then argerror(1, "notify", "channel name expected, got " .. type(channel)) end
    if payload ~= nil and type(payload) ~= "string" then argerror(2, "notify", "string payload expected") end
    self:_run("_exec", "SELECT pg_notify($1, $2)", self.cache, channel, payload or "")
  end

  local Listener = {}
  Listener.__index = Listener

  -- Tells every subscriber that notifications may have been missed.
  local function announce_gap(l)
    for name, subs in pairs(l.subs) do
      for sub in pairs(subs) do
        if not sub:try_send({ channel = name, gap = true }) then l.gap_pending[sub] = true end
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
    for name in pairs(l.subs) do l.conn:_exec('LISTEN "' .. name:gsub('"', '""') .. '"') end
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
    opts = opts or {}
    local l = self._listener
    if not l then
      l = setmetatable({ subs = {}, gap_pending = setmetatable({}, { __mode = "k" }),
        mutex = loom.mutex(), conn = core._listener(self.driver, self.url) }, Listener)
      self._listener = l
      l.conn:_connect()
      l.task = core._spawn_daemon(dispatch, l)
    end
    local sub = loom.channel(opts.buffer or 1000)
    local subs = l.subs[name]
    if not subs then
      subs = {}
      l.subs[name] = subs
      l.mutex:with(function() l.conn:_exec('LISTEN "' .. name:gsub('"', '""') .. '"') end)
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
    self.handle:_close()
  end

  loom.db._redact = redact
  loom.db._DB, loom.db._Session = DB, Session
end
