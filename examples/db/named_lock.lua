-- A named-lock critical section with db:lock: three workers (think: three
-- processes) want to run the nightly job; the lock lets one in at a time, a
-- worker that cannot get it within 50 ms gives up instead of queueing, and
-- the lock is released however the job ends. On PostgreSQL it is an
-- advisory lock, on MySQL GET_LOCK: held by the server, it also keeps out
-- other processes. SQLite has no server to hold it: the lock lives in this
-- process, shared by every task using this db handle. Runs on any database
-- (see database.lua).
package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local loom = require "loom"
local database = require "database"

local db, done = database.open({ pool = { max = 4 } })
local START = database.sql(db, "INSERT INTO example_job_runs (id, worker, started) VALUES (?, ?, ?)")
local FINISH = database.sql(db, "UPDATE example_job_runs SET finished = ? WHERE id = ?")

loom.run(function()
  db:exec("DROP TABLE IF EXISTS example_job_runs")
  db:exec([[CREATE TABLE example_job_runs (id INTEGER PRIMARY KEY, worker TEXT NOT NULL,
            started DOUBLE PRECISION, finished DOUBLE PRECISION)]])
  local inside, max_inside = 0, 0
  loom.each({ "w1", "w2", "w3" }, function(worker, i)
    -- fn gets the session holding the lock (the db itself on SQLite)
    db:lock("nightly-job", function(s)
      inside = inside + 1
      max_inside = math.max(max_inside, inside)
      print(("  %s holds the lock"):format(worker))
      s:exec(START, i, worker, loom.now())
      loom.sleep(0.02) -- the job's work
      s:exec(FINISH, loom.now(), i)
      inside = inside - 1
    end)
  end)
  local runs = db:value("SELECT count(*) FROM example_job_runs")
  local overlaps = db:value([[SELECT count(*) FROM example_job_runs a JOIN example_job_runs b
                              ON a.id < b.id AND b.started < a.finished AND a.started < b.finished]])
  print(("all %d ran, never more than %d at once (%d overlapping runs on record)"):format(runs, max_inside, overlaps))
  assert(runs == 3 and max_inside == 1 and overlaps == 0)

  local holder = loom.spawn(function() db:lock("nightly-job", function() loom.sleep(0.3) end) end)
  loom.sleep(0.05)
  local ok, err = pcall(db.lock, db, "nightly-job", function() error("ran without the lock") end, { timeout = 0.05 })
  print("a fourth worker, with a 50 ms timeout: " .. tostring(err))
  assert(not ok and loom.is_error(err, "timeout"))
  print("another key is not blocked meanwhile: " .. db:lock("weekly-job", function() return "ok" end))
  holder:join()
  assert(not pcall(db.lock, db, "nightly-job", function() error("the job failed") end))
  print("after a failed job the lock is free: " .. db:lock("nightly-job", function() return "ok" end, { timeout = 1 }))
  db:exec("DROP TABLE example_job_runs")
end)
done()
