-- Optimistic locking with a lock_version column on MySQL: five writers update
-- the same document; a write based on a stale read changes no row, raises
-- kind "stale", and is retried with backoff on a fresh read.
local loom = require "loom"
local db = loom.db.open(assert(os.getenv("LOOM_MYSQL_URL"), "set LOOM_MYSQL_URL"), { pool = { max = 5 } })

local function add_tag(id, tag)
  local doc = db:first("SELECT tags, lock_version FROM example_docs WHERE id = ?", id)
  loom.sleep(0.005 * math.random()) -- think time: others may write meanwhile
  local n = db:exec(
    "UPDATE example_docs SET tags = ?, lock_version = lock_version + 1 WHERE id = ? AND lock_version = ?",
    doc.tags .. tag .. ";", id, doc.lock_version)
  if n == 0 then
    loom.error("stale", ("document %d changed since version %d"):format(id, doc.lock_version))
  end
end

loom.run(function()
  db:exec("DROP TABLE IF EXISTS example_docs")
  db:exec("CREATE TABLE example_docs (id INT PRIMARY KEY, tags TEXT NOT NULL, lock_version INT NOT NULL DEFAULT 0)")
  db:exec("INSERT INTO example_docs (id, tags) VALUES (1, '')")
  local conflicts = 0
  loom.each({ "a", "b", "c", "d", "e" }, function(tag)
    loom.retry(function(attempt)
      local ok, err = pcall(add_tag, 1, tag)
      if not ok then
        if loom.is_error(err, "stale") then
          conflicts = conflicts + 1
          print(("  writer %s: %s, retrying (attempt %d)"):format(tag, err.message, attempt))
        end
        error(err, 0)
      end
    end, { attempts = 20, backoff = 0.002, retry_on = function(err) return loom.is_error(err, "stale") end })
  end)
  local doc = db:first("SELECT tags, lock_version FROM example_docs WHERE id = 1")
  print(("final tags %q at version %d after %d stale writes were retried"):format(doc.tags, doc.lock_version, conflicts))
  assert(#doc.tags == 10 and doc.lock_version == 5, "every writer's tag made it")
  db:exec("DROP TABLE example_docs")
end)
db:close()
