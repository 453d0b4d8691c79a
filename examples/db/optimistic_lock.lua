-- Optimistic locking with a lock_version column: five writers add a tag to
-- the same document. Each reads the document, thinks a little, and writes
-- only if the version is still the one it read; a write based on a stale
-- read changes no row, raises kind "stale" and is retried with loom.retry's
-- backoff on a fresh read. No update is lost, and nobody held a lock while
-- thinking. Runs on any database (see database.lua).
package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local loom = require "loom"
local database = require "database"

local db, done = database.open({ pool = { max = 5 } })
local READ = database.sql(db, "SELECT tags, lock_version FROM example_docs WHERE id = ?")
local WRITE = database.sql(db,
  "UPDATE example_docs SET tags = ?, lock_version = lock_version + 1 WHERE id = ? AND lock_version = ?")

local function add_tag(id, tag)
  local doc = db:first(READ, id)
  loom.sleep(0.002 + 0.005 * math.random()) -- think time: others may write meanwhile
  if db:exec(WRITE, doc.tags .. tag .. ";", id, doc.lock_version) == 0 then
    loom.error("stale", ("document %d changed since version %d"):format(id, doc.lock_version))
  end
  print(("  writer %s: wrote version %d"):format(tag, doc.lock_version + 1))
end

loom.run(function()
  db:exec("DROP TABLE IF EXISTS example_docs")
  db:exec([[CREATE TABLE example_docs (id INTEGER PRIMARY KEY, tags TEXT NOT NULL,
            lock_version INTEGER NOT NULL DEFAULT 0)]])
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
    end, { attempts = 30, backoff = 0.002, max_delay = 0.05,
           retry_on = function(err) return loom.is_error(err, "stale") end })
  end)
  local doc = db:first("SELECT tags, lock_version FROM example_docs WHERE id = 1")
  print(("final tags %q at version %d after %d stale writes were retried")
    :format(doc.tags, doc.lock_version, conflicts))
  assert(#doc.tags == 10 and doc.lock_version == 5, "every writer's tag made it")
  assert(conflicts >= 1, "the writers did race")
  db:exec("DROP TABLE example_docs")
end)
done()
