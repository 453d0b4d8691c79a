-- A named-lock critical section with db:lock: three workers want to run the
-- nightly job; the lock lets one in at a time, and a worker that cannot get
-- it within 50 ms gives up instead of queueing. With SQLite the lock lives
-- in this process (there is no server to hold it), shared by every task
-- using this db handle; the function gets the db.
local loom = require "loom"

local path = os.tmpname() -- a fresh temp file: SQLite makes it a database
local db = loom.db.open("sqlite:" .. path)

loom.run(function()
  db:exec("CREATE TABLE job_runs (id INTEGER PRIMARY KEY, worker TEXT NOT NULL, started REAL, finished REAL)")
  local inside, max_inside = 0, 0
  loom.each({ "w1", "w2", "w3" }, function(worker)
    db:lock("nightly-job", function(d)
      inside = inside + 1
      max_inside = math.max(max_inside, inside)
      print(("  %s holds the lock"):format(worker))
      local _, id = d:exec("INSERT INTO job_runs (worker, started) VALUES (?, ?)", worker, loom.now())
      loom.sleep(0.02) -- the job's work
      d:exec("UPDATE job_runs SET finished = ? WHERE id = ?", loom.now(), id)
      inside = inside - 1
    end)
  end)
  local runs = db:value("SELECT count(*) FROM job_runs")
  local overlaps = db:value([[SELECT count(*) FROM job_runs a JOIN job_runs b
                              ON a.id < b.id AND b.started < a.finished]])
  print(("all %d ran, never more than %d at once (%d overlapping runs on record)"):format(runs, max_inside, overlaps))
  assert(runs == 3 and max_inside == 1 and overlaps == 0)

  local holder = loom.spawn(function() db:lock("nightly-job", function() loom.sleep(0.3) end) end)
  loom.sleep(0.05)
  local ok, err = pcall(db.lock, db, "nightly-job", function() error("ran without the lock") end, { timeout = 0.05 })
  print("a fourth worker, with a 50 ms timeout: " .. tostring(err))
  assert(not ok and loom.is_error(err, "timeout"))
  print("another key is not blocked meanwhile: " .. db:lock("weekly-job", function() return "ok" end))
  holder:join()
  print("after the holder finished the lock is free: " .. db:lock("nightly-job", function() return "ok" end))
end)
db:close()
for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
