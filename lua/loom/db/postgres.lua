-- The PostgreSQL dialect: what loom.db asks of this driver.
return function(kit)
  local loom, core = kit.loom, kit.core

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

  local function lock_arg(key)
    return math.type(key) == "integer" and "$1::bigint" or "hashtextextended($1, 0)"
  end

  return {
    schemes = { "postgres://", "postgresql://" },
    retryable = { ["40001"] = true, ["40P01"] = true }, -- serialization failure, deadlock
    begin = function(opts, level)
      local sql = "BEGIN"
      if level then sql = sql .. " ISOLATION LEVEL " .. level end
      if opts.read_only then sql = sql .. " READ ONLY" end
      return sql
    end,
    -- One COPY ... FROM STDIN, streamed in chunks.
    insert_many = function(self, tbl, columns, rows, n)
      local quoted = {}
      for i, col in ipairs(columns) do quoted[i] = kit.quote_ident(col) end
      local sql = ("COPY %s (%s) FROM STDIN"):format(kit.quote_table(tbl), table.concat(quoted, ", "))
      return self:_run(bulk, sql, columns, rows, n)
    end,
    lock = kit.server_lock(function(s, key, timeout)
      if type(key) == "string" and key:find("\0", 1, true) then
        loom.error("argument", "db:lock: a key cannot contain NUL bytes")
      end
      local take = "SELECT pg_advisory_lock(" .. lock_arg(key) .. ")"
      if timeout then
        -- A lock wait past the timeout is cancelled on the server too.
        loom.timeout(timeout, s._run, s, "_exec", take, true, key)
      else
        s:_run("_exec", take, true, key)
      end
    end, function(s, key)
      s:_run("_exec", "SELECT pg_advisory_unlock(" .. lock_arg(key) .. ")", true, key)
    end),
    -- The statement that subscribes the listening connection to a channel.
    -- PostgreSQL keeps NAMEDATALEN - 1 = 63 bytes of an identifier: a longer
    -- name could never receive anything (LISTEN keeps its first 63 bytes,
    -- pg_notify refuses the whole name), so it is refused before anything
    -- is sent.
    listen = function(name)
      if #name > 63 then
        loom.error("argument", ("db:listen: the channel name is %d bytes; PostgreSQL keeps only the first "
          .. "63 of a name, so nothing sent to it would arrive"):format(#name))
      end
      return 'LISTEN "' .. name:gsub('"', '""') .. '"'
    end,
    notify = function(db, channel, payload)
      db:_run("_exec", "SELECT pg_notify($1, $2)", db.cache, channel, payload)
    end,
    no_changes = "db:changes() is for SQLite; use db:listen() on a server",
  }
end
