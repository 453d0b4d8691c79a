-- loom embedded in a host that owns the loop: luv (libuv's own Lua binding,
-- the loop of luvit and Neovim) watches loom.fd() and arms a timer from
-- loom.next_timeout(), and calls loom.step(0) only when one of the two fires.
-- Nothing steps loom in a busy loop, so work that the fd and the timeout do
-- not announce is never done: the host stalls, and the bound below says so.
local loom = require "loom"
local uv = require "luv"
local pg = require "spec.support.pg"
local my = require "spec.support.my"

-- Far beyond what the work needs even under sanitizers on a loaded machine
-- (it finishes in a fraction of a second), and far below the connect and
-- acquire timeouts: a host that stalls until one of them fires and then goes
-- on fails here, rather than passing slowly.
local BOUND = 20
local SLOW_TIMEOUT = 120
-- A host told to step again at once, over and over, spins rather than
-- stalls. Steps come from I/O events and timers, not from the clock: each
-- piece of work below takes at most a few dozen.
local MAX_STEPS = 500

-- Runs the host until loom has no work left and returns how many steps it
-- took; after BOUND seconds it stops and fails with what describe_state()
-- says of the work.
local function host(describe_state)
  local poll, timer, guard = uv.new_poll(loom.fd()), uv.new_timer(), uv.new_timer()
  local steps, stalled, failure = 0, false, nil
  local function stop()
    poll:stop(); timer:stop(); guard:stop()
  end
  local function step()
    steps = steps + 1
    local ok, busy = pcall(loom.step, 0)
    if not ok then failure = busy; return stop() end
    if not busy then return stop() end
    if steps > MAX_STEPS then return stop() end
    local nt = loom.next_timeout()
    timer:stop()
    if nt then timer:start(math.ceil(nt * 1000), 0, step) end
  end
  poll:start("r", step)
  guard:start(BOUND * 1000, 0, function()
    stalled = true
    stop()
  end)
  step()
  uv.run("default")
  for _, h in ipairs { poll, timer, guard } do h:close() end
  uv.run("default")
  if failure then error(failure, 0) end
  if stalled then
    error(("the host stalled: loom still had work after %d s and %d steps; next_timeout() = %s; %s")
      :format(BOUND, steps, tostring(loom.next_timeout()), describe_state()), 0)
  end
  assert(steps <= MAX_STEPS, ("the host spun: over %d steps"):format(MAX_STEPS))
  return steps
end

-- The tasks and databases of the running spec. One that fails leaves its
-- work behind; cleared here (with plain bounded steps), it cannot drive or
-- hold up the next spec.
local tasks, dbs = {}, {}
local function spawn(fn) tasks[#tasks + 1] = loom.spawn(fn) end
local function open(url, opts)
  local db = loom.db.open(url, opts)
  dbs[#dbs + 1] = db
  return db
end
local function clean_up()
  for _, t in ipairs(tasks) do t:cancel() end
  local deadline = loom.now() + 10
  while loom.step(0.05) and loom.now() < deadline do end
  for _, db in ipairs(dbs) do db:close() end
  tasks, dbs = {}, {}
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- Eight queries at once on a fresh pool of four: the pool opens its
-- connections while tasks wait, and every new socket and every change of
-- interest has to reach the loop's fd before the host waits on it.
local function eight_queries(url, sql)
  url = url .. (url:find("?", 1, true) and "&" or "?") .. "connect_timeout=" .. SLOW_TIMEOUT
  local db = open(url, { pool = { max = 4, acquire_timeout = SLOW_TIMEOUT } })
  local ids, errors = {}, {}
  for i = 1, 8 do
    spawn(function()
      local ok, id = pcall(db.value, db, sql)
      if ok then ids[i] = id else errors[#errors + 1] = tostring(id) end
    end)
  end
  host(function()
    local s = db:stats()
    return ("pool: %d connections, %d in use, %d waiting; %d of 8 queries done"):format(
      s.total, s.in_use, s.waiting, #errors + count(ids))
  end)
  assert.same({}, errors)
  local distinct = {}
  for i = 1, 8 do
    assert.is_not_nil(ids[i], "query " .. i .. " has no result")
    distinct[ids[i]] = true
  end
  -- The queries sleep on the server, so eight at once need all four.
  assert.equal(4, count(distinct), "the queries did not run on four connections at once")
  assert.equal(4, db:stats().total)
end

describe("a luv host driving loom through fd and next_timeout", function()
  after_each(clean_up)

  it("runs sleeping tasks", function()
    local woke = {}
    for i = 1, 5 do
      spawn(function() loom.sleep(0.01 * i); woke[#woke + 1] = i end)
    end
    host(function() return #woke .. " of 5 sleepers woke" end)
    assert.same({ 1, 2, 3, 4, 5 }, woke)
  end)

  it("runs SQLite queries (answers from worker threads)", function()
    local db = open("sqlite::memory:")
    local sum = 0
    for i = 1, 8 do
      spawn(function()
        local v = db:value("SELECT ?", i)
        sum = sum + v
      end)
    end
    host(function() return "sum so far " .. sum end)
    assert.equal(36, sum)
  end)

  it("runs 8 queries on a fresh PostgreSQL pool of 4", function()
    eight_queries(pg.url(), "SELECT pg_backend_pid() FROM (SELECT pg_sleep(0.05)) AS s")
  end)

  it("runs 8 queries on a fresh MySQL pool of 4", function()
    eight_queries(my.url(), "SELECT CONNECTION_ID() + 0 * SLEEP(0.05)")
  end)
end)
