-- The databases spec/db_conformance_spec.lua runs its cases against, and
-- what differs between their drivers: SQL each spells its own way and the
-- values each answers with. A case reads a difference from here, never
-- from a test of the driver's name. A server that cannot be started is a
-- failure of every case against it (spec/support/pg.lua, my.lua), never
-- a skip.
local support = require "spec.support.db"

local M = {}

-- The cases write placeholders as "?"; PostgreSQL numbers them.
local function numbered(sql)
  local n = 0
  return (sql:gsub("%?", function() n = n + 1 return "$" .. n end))
end
local function as_is(sql) return sql end

M.dialects = {
  postgres = {
    sql = numbered,
    placeholder = "$1",
    echo = "SELECT $1::int8", -- returns its integer parameter
    params_sql = "SELECT $1::int8 AS i, $2::float8 AS f, $3::bool AS b, $4::text AS t, $5::bytea AS x, "
      .. "$6::int AS n1, $7::text AS n2",
    bool = { [true] = true, [false] = false },
    serial = "SERIAL PRIMARY KEY",
    insert_ids = {}, -- no last insert id (RETURNING gives it)
    types = { blob = "bytea", bool = "bool", float = "float8" },
    syntax = { code = "42601", message = "syntax error" },
    unique = { code = "23505", text = "already exists" },
    primary_key = "23505",
    no_table = { code = "42P01" },
    unknown_column = "42703",
    read_only = { code = "25006" },
    series = function(n) return ("SELECT g AS x FROM generate_series(1, %d) g"):format(n) end,
    endless = "SELECT g AS x FROM generate_series(1, 100000000) g",
    stream_error = { sql = "SELECT 1/(g-3) FROM generate_series(1,5) g", code = "22012" },
    listens = true,
    slow_value = "SELECT $1::int FROM pg_sleep(0.05)", -- returns its parameter, slowly
    server = {
      support = "spec.support.pg",
      wrong_password = "08006",
      backend_sql = "SELECT pg_backend_pid()",
      sleep = function(s) return ("SELECT pg_sleep(%s)"):format(s) end,
      sleep_param = "SELECT pg_sleep($1)",
      soak_queries = 1000000,
      -- Statements with fragment still running, seen by a superuser.
      running = function(admin, fragment)
        return admin:value("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 "
          .. "AND pid <> pg_backend_pid()", "%" .. fragment .. "%")
      end,
      -- Ends every session of the test user; returns how many.
      kill_all = function(admin)
        return admin:value([[SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE usename = 'loom' AND backend_type = 'client backend']])
      end,
    },
  },
  mysql = {
    sql = as_is,
    placeholder = "?",
    echo = "SELECT ?",
    params_sql = "SELECT ? AS i, ? AS f, ? AS b, ? AS t, ? AS x, ? AS n1, ? AS n2",
    bool = { [true] = 1, [false] = 0 },
    serial = "INT AUTO_INCREMENT PRIMARY KEY",
    insert_ids = { 1, 4 }, -- of a multi-row INSERT, its first row's
    types = { blob = "MEDIUMBLOB", bool = "BOOL", float = "DOUBLE" },
    -- MySQL's codes are its error numbers; the SQLSTATE comes beside them
    syntax = { code = 1064, message = "SQL syntax", sqlstate = "42000" },
    unique = { code = 1062, text = "Duplicate", sqlstate = "23000" },
    primary_key = 1062,
    no_table = { code = 1146, sqlstate = "42S02" },
    unknown_column = 1054,
    read_only = { code = 1792, sqlstate = "25006" },
    series = function(n) return ("SELECT seq AS x FROM seq_1_to_%d"):format(n) end,
    endless = "SELECT seq AS x FROM seq_1_to_100000000",
    stream_error = { sql = "SELECT nope", code = 1054 },
    listens = false,
    slow_value = "SELECT ? FROM (SELECT SLEEP(0.05)) s",
    server = {
      support = "spec.support.my",
      wrong_password = 1045,
      backend_sql = "SELECT CONNECTION_ID()",
      sleep = function(s) return ("SELECT SLEEP(%s)"):format(s) end,
      sleep_param = "SELECT SLEEP(?)",
      soak_queries = 200000,
      -- A killed thread answers the client an instant before it shows as
      -- idle: a second's grace, far below the statements' own running time.
      running = function(admin, fragment)
        local n
        for _ = 1, 20 do
          n = admin:value("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' "
            .. "AND INFO LIKE ? AND ID <> CONNECTION_ID()", "%" .. fragment .. "%")
          if n == 0 then break end
          require("loom").sleep(0.05)
        end
        return n
      end,
      kill_all = function(admin)
        local ids = admin:query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'loom'")
        for _, r in ipairs(ids) do pcall(admin.exec, admin, "KILL CONNECTION " .. r.ID) end
        return #ids
      end,
    },
  },
  sqlite = {
    sql = as_is,
    placeholder = "?",
    echo = "SELECT ?",
    params_sql = "SELECT ? AS i, ? AS f, ? AS b, ? AS t, ? AS x, ? AS n1, ? AS n2",
    bool = { [true] = 1, [false] = 0 },
    serial = "INTEGER PRIMARY KEY",
    insert_ids = { 3, 4 }, -- of a multi-row INSERT, its last row's
    types = { blob = "BLOB", bool = "INTEGER", float = "REAL" },
    syntax = { code = "SQLITE_ERROR", message = "syntax error" },
    unique = { code = "SQLITE_CONSTRAINT_UNIQUE", text = "UNIQUE constraint failed" },
    primary_key = "SQLITE_CONSTRAINT_PRIMARYKEY",
    no_table = { code = "SQLITE_ERROR" },
    unknown_column = "SQLITE_ERROR",
    read_only = { code = "SQLITE_READONLY" },
    series = function(n)
      return ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) SELECT x FROM c"):format(n)
    end,
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
    stream_error = { sql = "SELECT 1 UNION ALL SELECT abs(-9223372036854775807 - 1)", code = "SQLITE_ERROR" },
    listens = false,
    slow_value = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) "
      .. "SELECT ? + count(*) - 300000 FROM c",
    server = nil, -- a file or memory: no server, no password, no backend to kill
  },
}

-- Each target: a name for the report, the driver, and how to get a URL
-- (called inside the cases: a server starts only when a case needs it).
M.targets = {
  { name = "sqlite file", driver = "sqlite", examples_default = true,
    url = function(t) t.path = t.path or support.tmpfile() return "sqlite:" .. t.path end,
    cleanup = function(t) if t.path then support.remove_db(t.path) t.path = nil end end },
  { name = "sqlite memory", driver = "sqlite", url = function() return "sqlite::memory:" end },
  { name = "postgres", driver = "postgres", url = function() return require("spec.support.pg").url() end },
  { name = "mysql", driver = "mysql", url = function() return require("spec.support.my").url() end },
}

return M
