-- A named-lock critical section with GET_LOCK: three workers (think: three
-- processes) want to run the nightly job; the lock lets one in at a time,
-- a worker that cannot get it within 0.1 s gives up, and the lock is
-- released (RELEASE_LOCK) however the work ends.
local loom = require "loom"
local db = loom.db.open(assert(os.getenv("LOOM_MYSQL_URL"), "set LOOM_MYSQL_URL"), { pool = { max = 4 } })

loom.run(function()
  local inside, max_inside, ran = 0, 0, 0
  loom.each({ "w1", "w2", "w3" }, function(worker)
    db:lock("nightly-job", function()
      inside = inside + 1
      max_inside = math.max(max_inside, inside)
      print(("  %s holds the lock"):format(worker))
      loom.sleep(0.02)
      inside = inside - 1
      ran = ran + 1
    end)
  end)
  print(("all 3 ran, never more than %d at once"):format(max_inside))
  assert(ran == 3 and max_inside == 1)

  local holder = loom.spawn(function() db:lock("nightly-job", function() loom.sleep(0.3) end) end)
  loom.sleep(0.05)
  local ok, err = pcall(db.lock, db, "nightly-job", function() end, { timeout = 0.1 })
  print("a fourth worker, with a 0.1 s timeout: " .. tostring(err))
  assert(not ok and err.kind == "timeout")
  holder:join()
  pcall(db.lock, db, "nightly-job", function() error("the job failed") end)
  print("after a failed job the lock is free: " .. db:lock("nightly-job", function() return "ok" end, { timeout = 1 }))
end)
db:close()
