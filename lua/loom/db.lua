-- loom.db: the database API on top of the C pool and drivers.
--
-- A db is a pool. A call like db:query borrows a connection for the one
-- statement, unless the calling task holds one already (inside
-- db:transaction, db:with or while an db:acquire() session is open), in
-- which case it uses that one: a task never waits on the pool for a
-- connection it is itself holding.
return function(loom, core)
  local pack, unpack = table.pack, table.unpack
  local sqlite_conninfo

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

  -- "sqlite:path/to/file.db" or "sqlite::memory:" -> the driver's conninfo.
  -- An in-memory database is a named memdb: every connection of this
  -- handle (the writer and the readers) sees the same one.
  local memories = 0
  sqlite_conninfo = function(url, opts)
    local path = url:sub(#"sqlite:" + 1)
    if path:sub(1, 2) == "//" then path = path:sub(3) end
    if path == "" then argerror(1, "loom.db.open", "sqlite: needs a file name or :memory:") end
    if path:find("\n", 1, true) then argerror(1, "loom.db.open", "file name contains a newline") end
    local memory = path == ":memory:"
    if memory then
      memories = memories + 1
      path = ("file:/loom-%p-%d?vfs=memdb"):format(loom, memories)
    end
    local busy = opts.busy_timeout or 5
    if type(busy) ~= "number" then argerror(2, "loom.db.open", "busy_timeout must be a number of seconds") end
    local info = ("path=%s\nbusy_timeout=%d\nmemory=%d"):format(path, math.floor(busy * 1000), memory and 1 or 0)
    -- {pragmas = {"cache_size = -16000", "foreign_keys = on"}}: run on every
    -- connection as it opens (writer and readers alike).
    local pragmas = opts.pragmas or {}
    if type(pragmas) ~= "table" then argerror(2, "loom.db.open", "pragmas must be an array of strings") end
    for i, p in ipairs(pragmas) do
      if type(p) ~= "string" or p:find("[\n;]") then
        argerror(2, "loom.db.open", ("pragmas[%d] must be one PRAGMA's text, like 'cache_size = -16000'"):format(i))
      end
      info = info .. "\npragma=" .. p
    end
    return info
  end

  -- loom.db.open(url, {pool = {min=, max=, acquire_timeout=, max_lifetime=,
  --   idle_timeout=, validate_after=}, statement_cache = true})
  function loom.db.open(url, opts)
    if type(url) ~= "string" then argerror(1, "loom.db.open", "URL string expected, got " .. type(url)) end
    opts = opts or {}
    if type(opts) ~= "table" then argerror(2, "loom.db.open", "options table expected") end
    local driver, conninfo = nil, url
    if url:match("^postgres://") or url:match("^postgresql://") then
      driver = "postgres"
    elseif url:match("^sqlite:") then
      driver = "sqlite"
      conninfo = sqlite_conninfo(url, opts)
    elseif url:match("^mysql://") or url:match("^mariadb://") then
      driver = "mysql"
    else
      local scheme = url:match("^(%a[%w+.-]*):") or url
      loom.error("argument", ("no database driver for '%s' (postgres://..., sqlite:FILE or sqlite::memory:)"):format(redact(scheme)))
    end
    local pool = opts.pool or {}
    if type(pool) ~= "table" then argerror(2, "loom.db.open", "pool must be a table") end
    local handle = core._db_open(driver, conninfo, pool)
    return setmetatable({
      handle = handle, driver = driver, shown = redact(url), url = url,
      cache = opts.statement_cache ~= false, listeners = nil,
      split = driver == "sqlite" and pool.readers ~= 0,
    }, DB)
  end

  DB.__tostring = function(db) return ("loom.db (%s)"):format(db.shown) end
  DB.__close = function(db) db:close() end

  ---------------------------------------------------------------- statements
  -- Everything below is written once against :_run(method, ...), which DB
  -- (pinned or borrowed connection) and Session (its own) implement.

  -- SQLite serves statements that only read on reader connections beside
  -- the one writer. What reads is decided from the SQL's first word, once
  -- per distinct SQL; a misjudged write fails loudly on a reader (they are
  -- query_only), it never corrupts anything.
  local reads_cache, reads_cached = {}, 0
  local WRITE_WORD = { insert = true, update = true, delete = true, replace = true }
  local function only_reads(sql)
    local r = reads_cache[sql]
    if r ~= nil then return r end
    local body = sql:gsub("^[%s(]+", "")
    while body:sub(1, 2) == "--" or body:sub(1, 2) == "/*" do
      if body:sub(1, 2) == "--" then body = body:gsub("^%-%-[^\n]*\n?", "")
      else body = body:gsub("^/%*.-%*/", "") end
      body = body:gsub("^[%s(]+", "")
    end
    local word = (body:match("^(%a+)") or ""):lower()
    r = word == "select" or word == "values" or word == "explain"
    if word == "with" then
      r = true
      for w in body:gmatch("%a+") do if WRITE_WORD[w:lower()] then r = false break end end
    end
    if reads_cached > 1000 then reads_cache, reads_cached = {}, 0 end
    reads_cache[sql] = r
    reads_cached = reads_cached + 1
    return r
  end

  local ONE_CALL = { _query = 0, _value = 1, _exec = 2 }

  -- method: a connection method's name, or a function(conn, ...).
  function DB:_run(method, ...)
    local c = pinned(self)
    if not c then
      local mode = ONE_CALL[method]
      if mode then
        -- One statement: borrowed, run and given back by one C call.
        return self.handle:_run1(mode, self.split and mode ~= 2 and only_reads((...)), ...)
      end
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

  -- The hot path of DB: one statement, no session held. Written out so a
  -- query costs one Lua call and one C call (the generic _run forwards
  -- its arguments twice).
  local function direct(name, mode)
    local method = "_" .. name
    DB[name] = function(self, sql, ...)
      if type(sql) ~= "string" then check_sql(sql, name) end
      local c = pinned(self)
      if c then return c[method](c, sql, self.cache, ...) end
      return self.handle:_run1(mode, mode ~= 2 and self.split and only_reads(sql), sql, self.cache, ...)
    end
  end
  direct("query", 0)
  direct("value", 1)
  direct("exec", 2)
  function DB:first(sql, ...)
    if type(sql) ~= "string" then check_sql(sql, "first") end
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
    return stream(self.handle:_acquire(self.split and only_reads(sql)), true, sql, ...)
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
  local RETRYABLE = { ["40001"] = true, ["40P01"] = true,
    [1213] = true, [1205] = true, -- MySQL: deadlock, lock wait timeout
    SQLITE_BUSY = true, SQLITE_BUSY_SNAPSHOT = true }

  local function begin_sql(opts, driver)
    local level = opts.isolation and ISOLATION[opts.isolation]
    if opts.isolation and not level then
      argerror(2, "transaction", "unknown isolation level '" .. tostring(opts.isolation) .. "'")
    end
    if driver == "sqlite" then
      -- SQLite transactions are always serializable. A writing one takes the
      -- write lock up front: one that upgrades later can fail with BUSY.
      return opts.read_only and "BEGIN" or "BEGIN IMMEDIATE"
    end
    if driver == "mysql" then
      -- MySQL sets the level of the next transaction in its own statement.
      local sql = opts.read_only and "START TRANSACTION READ ONLY" or "START TRANSACTION"
      return sql, level and ("SET TRANSACTION ISOLATION LEVEL " .. level) or nil
    end
    local sql = "BEGIN"
    if level then sql = sql .. " ISOLATION LEVEL " .. level end
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
    local sql, before = begin_sql(opts, self.driver)
    for attempt = 1, retries + 1 do
      local s <close> = self:acquire(opts.read_only)
      if before then s:_run("_query", before, false) end
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

  -- SQLite: the one prepared INSERT for every row, in chunks handed to the
  -- connection's thread, all in one transaction (the caller's, if open).
  local INSERT_CHUNK = 4096
  local function insert_rows(conn, sql, columns, rows, n)
    local own = conn:_txn() == "idle"
    if own then conn:_exec("BEGIN IMMEDIATE", false) end
    local ok, err = pcall(function()
      for first = 1, n, INSERT_CHUNK do
        conn:_insert_rows(sql, columns, rows, first, math.min(n, first + INSERT_CHUNK - 1))
      end
    end)
    if own then
      if ok then
        ok, err = pcall(conn._exec, conn, "COMMIT", false)
      end
      if not ok and conn:_txn() ~= "idle" and not conn:_broken() then
        pcall(loom.shield, conn._exec, conn, "ROLLBACK", false)
      end
    end
    if not ok then error(err, 0) end
    return n
  end

  -- MySQL: multi-row INSERTs with ? parameters, each under the server's
  -- max_allowed_packet and the 65535 placeholders a statement may hold, all
  -- in one transaction (the caller's, if open). Full batches share one
  -- cached prepared statement.
  local MY_BATCH_ROWS = 1000
  local function my_insert_rows(conn, head, columns, rows, n)
    local ncols = #columns
    local per = math.max(1, math.min(MY_BATCH_ROWS, 65535 // ncols))
    local packet = conn:_value("SELECT @@max_allowed_packet", true)
    local budget = math.max(1024, math.floor(packet * 0.75) - #head)
    local group = "(" .. ("?, "):rep(ncols - 1) .. "?)"
    local own = conn:_txn() == "idle"
    if own then conn:_exec("START TRANSACTION", false) end
    local ok, err = pcall(function()
      local i = 1
      while i <= n do
        local params, np, bytes, count = {}, 0, 0, 0
        while i <= n and count < per do
          local row = rows[i]
          if type(row) ~= "table" then argerror(3, "insert_many", "row " .. i .. " is not a table") end
          local keyed = type(next(row)) == "string"
          local size = 2 * ncols
          for c = 1, ncols do
            local v = row[keyed and columns[c] or c]
            size = size + (type(v) == "string" and #v + 9 or 9)
          end
          if count > 0 and bytes + size > budget then break end
          for c = 1, ncols do
            local v = row[keyed and columns[c] or c]
            np = np + 1
            params[np] = v
          end
          bytes, count, i = bytes + size, count + 1, i + 1
        end
        local sql = head .. (group .. ", "):rep(count - 1) .. group
        conn:_exec(sql, count == per, unpack(params, 1, np))
      end
    end)
    if own then
      if ok then ok, err = pcall(conn._exec, conn, "COMMIT", false) end
      if not ok and conn:_txn() ~= "idle" and not conn:_broken() then
        pcall(loom.shield, conn._exec, conn, "ROLLBACK", false)
      end
    end
    if not ok then error(err, 0) end
    return n
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
    if self.driver == "mysql" or (self.db and self.db.driver == "mysql") then
      local q = {}
      for i, col in ipairs(columns) do q[i] = "`" .. col:gsub("`", "``") .. "`" end
      local parts = {}
      for part in tbl:gmatch("[^.]+") do parts[#parts + 1] = "`" .. part:gsub("`", "``") .. "`" end
      local head = ("INSERT INTO %s (%s) VALUES "):format(table.concat(parts, "."), table.concat(q, ", "))
      return self:_run(my_insert_rows, head, columns, rows, n)
    end
    if self.driver == "sqlite" or (self.db and self.db.driver == "sqlite") then
      local marks = ("?, "):rep(#columns - 1) .. "?"
      local sql = ("INSERT INTO %s (%s) VALUES (%s)"):format(quote_table(tbl), table.concat(quoted, ", "), marks)
      return self:_run(insert_rows, sql, columns, rows, n)
    end
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
    if type(opts) ~= "table" then argerror(3, "lock", "options table expected") end
    if self.driver == "mysql" then
      -- A named lock (GET_LOCK) held by the session; names longer than the
      -- 64 characters MySQL allows are hashed on the server.
      local name = "loom:" .. tostring(key)
      local arg = #name > 64 and "SHA1(?)" or "?"
      local s <close> = self:acquire()
      local take = "SELECT GET_LOCK(" .. arg .. ", ?)"
      local got
      if opts.timeout then
        -- The server gives up at the timeout; loom.timeout covers a server
        -- that does not answer (and KILLs the wait).
        got = loom.timeout(opts.timeout + 5, s._run, s, "_value", take, true, name, opts.timeout)
      else
        got = s:_run("_value", take, true, name, 31536000)
      end
      if got ~= 1 then
        loom.error("timeout", ("the lock %q was not free within %g s"):format(tostring(key), opts.timeout or 31536000))
      end
      local r = pack(pcall(fn, s))
      loom.shield(pcall, s._run, s, "_value", "SELECT RELEASE_LOCK(" .. arg .. ")", true, name)
      if not r[1] then error(r[2], 0) end
      return unpack(r, 2, r.n)
    end
    if self.driver == "sqlite" then
      -- An embedded database has no server to hold locks: a named lock of
      -- this handle, shared by its tasks. fn gets the db.
      local locks = self._locks
      if not locks then locks = {}; self._locks = locks end
      local entry = locks[key]
      if not entry then entry = { mutex = loom.mutex(), users = 0 }; locks[key] = entry end
      entry.users = entry.users + 1
      local r = pack(pcall(function()
        if opts.timeout then loom.timeout(opts.timeout, entry.mutex.lock, entry.mutex)
        else entry.mutex:lock() end
        local inner = pack(pcall(fn, self))
        entry.mutex:unlock()
        if not inner[1] then error(inner[2], 0) end
        return unpack(inner, 2, inner.n)
      end))
      entry.users = entry.users - 1
      if entry.users == 0 then locks[key] = nil end
      if not r[1] then error(r[2], 0) end
      return unpack(r, 2, r.n)
    end
    if kt == "string" and key:find("\0", 1, true) then loom.error("argument", "db:lock: a key cannot contain NUL bytes") end
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
  local function server_only(db, what)
    if db.driver == "sqlite" then
      loom.error("argument", what .. " needs a database server: SQLite has db:changes() instead")
    end
    if db.driver == "mysql" then
      loom.error("argument", what .. " is PostgreSQL's LISTEN/NOTIFY: MySQL has no notifications")
    end
  end

  -- db:changes({buffer = 1000, poll = 0.1}) -> a loom channel of {op=,
  -- table=, rowid=} for rows written through this handle (SQLite), sent
  -- after their transaction commits, never for work rolled back. Writes
  -- of another handle or process are not itemized, only announced: while
  -- someone subscribes, the writer's PRAGMA data_version (which moves on
  -- every commit of any other connection) is read every `poll` seconds,
  -- and a move sends {gap = true}, the marker a listener sends after a
  -- reconnect. A subscriber that falls behind receives it too, once it has
  -- room again. Close the channel to unsubscribe.
  function DB:changes(opts)
    if self.driver ~= "sqlite" then
      loom.error("argument", "db:changes() is for SQLite; use db:listen() on a server")
    end
    opts = opts or {}
    if opts.poll ~= nil and (type(opts.poll) ~= "number" or not (opts.poll > 0)) then
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
      -- The writer's own commits leave its data_version alone; this
      -- handle's readers never commit: a move is someone else's write.
      local version = self:value("PRAGMA data_version")
      self._change_task = core._spawn_daemon(function()
        while not self.closed and self._change_subs == subs do
          loom.sleep(self._change_poll)
          if self.closed or not live() then return end
          local ok, now = pcall(self.value, self, "PRAGMA data_version")
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
    server_only(self, "db:notify")
    if type(channel) ~= "string" then argerror(1, "notify", "channel name expected, got " .. type(channel)) end
    if payload ~= nil and type(payload) ~= "string" then argerror(2, "notify", "string payload expected") end
    if channel:find("\0", 1, true) or (payload and payload:find("\0", 1, true)) then
      loom.error("argument", "db:notify: a channel name or payload cannot contain NUL bytes")
    end
    self:_run("_exec", "SELECT pg_notify($1, $2)", self.cache, channel, payload or "")
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
    for name in pairs(l.subs) do l.conn:_listen(name) end
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
    server_only(self, "db:listen")
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
      -- Kept only once LISTEN worked: the reconnect LISTENs every name again.
      l.mutex:with(function() l.conn:_listen(name) end)
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
  end

  loom.db._redact = redact
  loom.db._DB, loom.db._Session = DB, Session
end
