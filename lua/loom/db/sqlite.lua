-- The SQLite dialect: what loom.db asks of this driver.
return function(kit)
  local loom = kit.loom
  local argerror = kit.argerror

  -- "sqlite:path/to/file.db" or "sqlite::memory:" -> the driver's conninfo.
  -- An in-memory database is a named memdb: every connection of this
  -- handle (the writer and the readers) sees the same one.
  local memories = 0
  local function conninfo(url, opts)
    local path = url:sub(#"sqlite:" + 1)
    if path:sub(1, 2) == "//" then path = path:sub(3) end
    if path == "" then argerror(1, "loom.db.open", "sqlite: needs a file name or :memory:") end
    if path:find("\n", 1, true) then argerror(1, "loom.db.open", "file name contains a newline") end
    kit.check_name(path, 1, "loom.db.open", "the file name")
    local memory = path == ":memory:"
    if memory then
      memories = memories + 1
      path = ("file:/loom-%p-%d?vfs=memdb"):format(loom, memories)
    end
    -- SQLite takes milliseconds in an int: more than 2^31 - 1 ms (24 days)
    -- is as good as never.
    local busy = math.min((opts.busy_timeout or 5) * 1000, 2 ^ 31 - 1)
    local info = ("path=%s\nbusy_timeout=%d\nmemory=%d"):format(path, math.floor(busy), memory and 1 or 0)
    -- {pragmas = {"cache_size = -16000", "foreign_keys = on"}}: run on every
    -- connection as it opens (writer and readers alike).
    local pragmas = opts.pragmas or {}
    if type(pragmas) ~= "table" then argerror(2, "loom.db.open", "pragmas must be an array of strings") end
    for i, p in ipairs(pragmas) do
      if type(p) ~= "string" or p:find("[\n;\0]") then
        argerror(2, "loom.db.open", ("pragmas[%d] must be one PRAGMA's text, like 'cache_size = -16000'"):format(i))
      end
      info = info .. "\npragma=" .. p
    end
    return info
  end

  -- The one prepared INSERT for every row, in chunks handed to the
  -- connection's thread, all in one transaction (the caller's, if open).
  local INSERT_CHUNK = 4096
  local function insert_rows(conn, sql, columns, rows, n)
    return kit.own_transaction(conn, "BEGIN IMMEDIATE", function()
      for first = 1, n, INSERT_CHUNK do
        conn:_insert_rows(sql, columns, rows, first, math.min(n, first + INSERT_CHUNK - 1))
      end
      return n
    end)
  end

  return {
    schemes = { "sqlite:" },
    conninfo = conninfo,
    -- Statements that only read run on reader connections beside the one
    -- writer.
    split_reads = true,
    retryable = { SQLITE_BUSY = true, SQLITE_BUSY_SNAPSHOT = true },
    begin = function(opts)
      -- SQLite transactions are always serializable. A writing one takes
      -- the write lock up front: one that upgrades later can fail with BUSY.
      return opts.read_only and "BEGIN" or "BEGIN IMMEDIATE"
    end,
    insert_many = function(self, tbl, columns, rows, n)
      local quoted = {}
      for i, col in ipairs(columns) do quoted[i] = kit.quote_ident(col) end
      local marks = ("?, "):rep(#columns - 1) .. "?"
      local sql = ("INSERT INTO %s (%s) VALUES (%s)"):format(kit.quote_table(tbl), table.concat(quoted, ", "), marks)
      return self:_run(insert_rows, sql, columns, rows, n)
    end,
    -- No server holds locks for an embedded database.
    lock = kit.local_lock,
    -- Moves on every commit of another connection to the file.
    changes = { version_sql = "PRAGMA data_version" },
    no_listen = "%s needs a database server: SQLite has db:changes() instead",
  }
end
