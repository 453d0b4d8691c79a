-- What the examples in this folder share: the database they run on and
-- the placeholders it takes. Each runs unchanged on SQLite, PostgreSQL and
-- MySQL/MariaDB:
--   lua5.4 optimistic_lock.lua                      a fresh SQLite file
--   lua5.4 optimistic_lock.lua postgres://u:p@host/db
--   LOOM_DB_URL=mysql://u:p@host/db lua5.4 optimistic_lock.lua
local loom = require "loom"

local M = {}

-- Opens the database named on the command line or in LOOM_DB_URL, else a
-- fresh temp file (SQLite makes it a database). Returns the handle and a
-- function that closes it and removes a temp file.
function M.open(opts)
  local url, path = arg[1] or os.getenv("LOOM_DB_URL"), nil
  if not url then
    path = os.tmpname()
    url = "sqlite:" .. path
  end
  local db = loom.db.open(url, opts)
  print(("on %s"):format(db.driver))
  return db, function()
    db:close()
    if path then
      for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
    end
  end
end

-- Placeholders are the driver's: PostgreSQL numbers them ($1, $2, ...),
-- the others take "?". The examples write "?"; this numbers them where the
-- driver wants numbers.
local NUMBERED = { postgres = true }
function M.sql(db, text)
  if not NUMBERED[db.driver] then return text end
  local n = 0
  return (text:gsub("%?", function() n = n + 1 return "$" .. n end))
end

return M
