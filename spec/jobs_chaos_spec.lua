-- Chaos: LOOM_JOBS_CHAOS jobs (10000 unless set) served by three worker
-- processes (spec/support/jobs_worker.lua) on PostgreSQL, one of them
-- killed with SIGKILL each time another eighth of the jobs is done, and
-- started again: the kills follow the work, not the clock, so a fast
-- machine (or a slow one, under a sanitizer) sees as many. Every job
-- completes, none is lost, and jobs completing in their own transaction
-- leave exactly one row of side effect each.
local loom = require "loom"
local support = require "spec.support.db"
local pg = require "spec.support.pg"

local COUNT = tonumber(os.getenv("LOOM_JOBS_CHAOS") or "10000")
local build = os.getenv("LOOM_BUILD_DIR") or "build"

-- Starts a worker process in the background: its pid.
local function start(url, prefix, log)
  local cmd = ("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' "
    .. "lua5.4 spec/support/jobs_worker.lua '%s' '%s' >>%s 2>&1 & echo $!"):format(build, url, prefix, log)
  local p = io.popen(cmd)
  local pid = p:read("l")
  p:close()
  return assert(math.tointeger(tonumber(pid)), "no pid")
end

local function kill(pid) os.execute(("kill -9 %d 2>/dev/null"):format(pid)) end

describe("jobs chaos on PostgreSQL", function()
  it(("completes %d jobs while workers are killed with SIGKILL"):format(COUNT), function()
    local url = pg.url()
    local prefix = support.unique("chaos") .. "_"
    local log = os.tmpname()
    local pids = {}
    local kills, reruns = 0, 0
    local ok, err = pcall(support.run, function()
      local db = loom.db.open(url, { pool = { max = 4 } })
      local jobs = loom.jobs.open(db, { prefix = prefix })
      db:exec(("CREATE TABLE %seffects (job_id bigint NOT NULL)"):format(prefix))
      db:exec(("CREATE TABLE %sruns (job_id bigint NOT NULL)"):format(prefix))
      local list = {}
      for i = 1, COUNT do list[i] = { name = i % 4 == 0 and "plain" or "effect", payload = { i = i } } end
      assert.equal(COUNT, jobs:enqueue_many(list))
      for i = 1, 3 do pids[i] = start(url, prefix, log) end
      local deadline = loom.now() + 110
      local victim = 0
      local eighth = math.max(1, COUNT // 8)
      local kill_at = COUNT - eighth -- jobs left when the next kill comes
      while true do
        loom.sleep(0.02)
        local s = jobs:stats()
        local left = s.queued + s.running
        if left == 0 then break end
        assert(loom.now() < deadline, ("%d queued and %d running after %d kills"):format(s.queued, s.running, kills))
        if left <= kill_at then
          kill_at = left - eighth
          victim = victim % 3 + 1
          kill(pids[victim])
          kills = kills + 1
          pids[victim] = start(url, prefix, log)
        end
      end
      local s = jobs:stats()
      assert.equal(0, s.failed)
      -- Plain jobs run at least once: one killed mid-way ran again.
      reruns = db:value(("SELECT COUNT(*) - COUNT(DISTINCT job_id) FROM %sruns"):format(prefix))
      local effects = COUNT - COUNT // 4
      assert.equal(effects, db:value(("SELECT COUNT(*) FROM %seffects"):format(prefix)))
      assert.equal(effects, db:value(("SELECT COUNT(DISTINCT job_id) FROM %seffects"):format(prefix)))
      assert.equal(COUNT // 4, db:value(("SELECT COUNT(DISTINCT job_id) FROM %sruns"):format(prefix)))
      assert.equal(0, db:value(("SELECT COUNT(*) FROM %sjobs"):format(prefix)))
      db:close()
    end)
    for _, pid in ipairs(pids) do kill(pid) end
    local f = io.open(log)
    local out = f and f:read("a") or ""
    if f then f:close() end
    os.remove(log)
    assert(ok, tostring(err) .. "\nworker output:\n" .. out:sub(-3000))
    assert.is_true(kills >= math.min(3, COUNT // 1000), "too few kills to mean anything: " .. kills)
    -- The survivors never saw an error of their own loops, and none died
    -- of an error (a SIGKILL leaves no message).
    assert.is_falsy(out:find("loom.jobs:", 1, true), out:sub(-3000))
    assert.is_falsy(out:find("lua5.4:", 1, true), out:sub(-3000))
    print(("\n%d jobs, %d kills, %d plain jobs run twice"):format(COUNT, kills, reruns))
  end)
end)
