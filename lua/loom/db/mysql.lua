-- The MySQL and MariaDB dialect: what loom.db asks of this driver.
return function(kit)
  local loom = kit.loom
  local unpack = table.unpack

  -- Multi-row INSERTs with ? parameters, each under the server's
  -- max_allowed_packet and the 65535 placeholders a statement may hold, all
  -- in one transaction (the caller's, if open). Full batches share one
  -- cached prepared statement.
  local BATCH_ROWS = 1000
  local function insert_rows(conn, head, columns, rows, n)
    local ncols = #columns
    local per = math.max(1, math.min(BATCH_ROWS, 65535 // ncols))
    local packet = conn:_value("SELECT @@max_allowed_packet", true)
    local budget = math.max(1024, math.floor(packet * 0.75) - #head)
    local group = "(" .. ("?, "):rep(ncols - 1) .. "?)"
    return kit.own_transaction(conn, "START TRANSACTION", function()
      local i = 1
      while i <= n do
        local params, np, bytes, count = {}, 0, 0, 0
        while i <= n and count < per do
          local row = rows[i]
          if type(row) ~= "table" then kit.argerror(3, "insert_many", "row " .. i .. " is not a table") end
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
      return n
    end)
  end

  local function quote(name) return "`" .. name:gsub("`", "``") .. "`" end

  -- A named lock (GET_LOCK) held by the session; names longer than the 64
  -- characters MySQL allows are hashed on the server.
  local function lock_name(key)
    local name = "loom:" .. tostring(key)
    return name, #name > 64 and "SHA1(?)" or "?"
  end

  return {
    schemes = { "mysql://", "mariadb://" },
    retryable = { [1213] = true, [1205] = true }, -- deadlock, lock wait timeout
    begin = function(opts, level)
      -- MySQL sets the level of the next transaction in its own statement.
      return opts.read_only and "START TRANSACTION READ ONLY" or "START TRANSACTION",
        level and ("SET TRANSACTION ISOLATION LEVEL " .. level) or nil
    end,
    insert_many = function(self, tbl, columns, rows, n)
      local q = {}
      for i, col in ipairs(columns) do q[i] = quote(col) end
      local parts = {}
      for part in tbl:gmatch("[^.]+") do parts[#parts + 1] = quote(part) end
      local head = ("INSERT INTO %s (%s) VALUES "):format(table.concat(parts, "."), table.concat(q, ", "))
      return self:_run(insert_rows, head, columns, rows, n)
    end,
    lock = kit.server_lock(function(s, key, timeout)
      local name, arg = lock_name(key)
      local take = "SELECT GET_LOCK(" .. arg .. ", ?)"
      local got
      if timeout then
        -- The server gives up at the timeout; loom.timeout covers a server
        -- that does not answer (and KILLs the wait).
        got = loom.timeout(timeout + 5, s._run, s, "_value", take, true, name, timeout)
      else
        got = s:_run("_value", take, true, name, 31536000)
      end
      if got ~= 1 then
        loom.error("timeout", ("the lock %q was not free within %g s"):format(tostring(key), timeout or 31536000))
      end
    end, function(s, key)
      local name, arg = lock_name(key)
      s:_run("_value", "SELECT RELEASE_LOCK(" .. arg .. ")", true, name)
    end),
    no_listen = "%s is PostgreSQL's LISTEN/NOTIFY: MySQL has no notifications",
    no_changes = "db:changes() is for SQLite: MySQL has no change stream",
  }
end
