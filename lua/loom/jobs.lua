-- loom.jobs: durable background jobs in the database the program already
-- uses (PostgreSQL, MySQL/MariaDB, SQLite), shared by any number of worker
-- processes on any number of machines.
--
--   local jobs = loom.jobs.open(db, {prefix = "loom_"})
--   jobs:handle("email", function(job) send(job.payload.to) end)
--   jobs:enqueue("email", {to = "a@b.c"}, {queue = "mail", delay = 5})
--   jobs:work{queues = {default = 10, mail = 2}}
--
-- Delivery is at least once: a handler whose worker dies runs again on
-- another, so handlers must be idempotent, or write their effects and
-- job:complete(tx) in one transaction (exactly once for those effects).
-- Finished jobs are deleted; failed and cancelled ones stay, with their
-- error and traceback. Every time is the database's clock.
--
-- Loaded on first use of loom.jobs. Needs lua-cjson for the payloads;
-- JSON null in a payload reads as loom.jobs.null.
local loom = require "loom"
local cjson = require("cjson").new() -- our own settings, whatever the program sets on its copy
local build_sql = require "loom.jobs.sql"
local Worker = require "loom.jobs.worker"

local null = loom.null
local is_callable = loom._is_callable

local Jobs = {}
Jobs.__index = Jobs

local function argerror(n, fname, msg)
  loom.error("argument", ("bad argument #%d to '%s' (%s)"):format(n, fname, msg))
end

-- The columns' ranges on every back end: times in epoch milliseconds
-- (bigint), timeouts in milliseconds, priorities and attempts (int4).
local MAX_SECONDS = 1e12
local MAX_TIMEOUT = 2147483
local INT4_MIN, INT4_MAX = -0x80000000, 0x7fffffff

-- What is wrong with an option of seconds, or nil.
local function bad_seconds(v, what, positive, max)
  -- luacheck: push ignore 581 (not (x >= 0) refuses NaN too)
  if v ~= nil and (type(v) ~= "number" or not (v >= 0) or (positive and v == 0) or (max and v > max)) then
    -- luacheck: pop
    return ("%s must be a %s number of seconds%s"):format(what, positive and "positive" or "non-negative",
      max and (", at most %.0f"):format(max) or "")
  end
end

local function seconds(v, n, fname, what, positive, max)
  local msg = bad_seconds(v, what, positive, max)
  if msg then argerror(n, fname, msg) end
  return v
end

-- What is wrong with an option of a whole number, or nil.
local function bad_whole(v, what, min, max)
  max = max or INT4_MAX
  if v ~= nil and (math.type(v) ~= "integer" or v < min or v > max) then
    return ("%s must be a whole number from %d to %d"):format(what, min, max)
  end
end

local function whole(v, n, fname, what, min, max)
  local msg = bad_whole(v, what, min, max)
  if msg then argerror(n, fname, msg) end
  return v
end

-- JSON has one kind of number; cjson reads every one as a float. Whole
-- numbers come back as Lua integers, as they most likely went in.
local function integral(v)
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = integral(x) end
    return v
  end
  return math.type(v) == "float" and math.tointeger(v) or v
end

local function decode(text) return integral(cjson.decode(text)) end

-- cjson writes numbers with 14 significant digits: a microsecond timestamp
-- or 0.1 + 0.2 would come back changed. A number that does not survive
-- that goes in as a placeholder string, replaced by its exact text in the
-- JSON: whole numbers in full (up to 2^53, what a JSON reader's double
-- holds exactly), floats with 17 digits. The walk also turns loom.null (a
-- row's NULL) into JSON null, and refuses strings that PostgreSQL and
-- MySQL would refuse (not UTF-8, NUL), so a payload stored on SQLite is
-- one the others store too. The caller's tables are copied, not changed.
local EXACT = 2 ^ 53
local MARK = ("\0loom.jobs.%08x:"):format(math.random(0, 0x7fffffff))
local MARKED = '"' .. MARK:gsub("\0", "\\u0000"):gsub("%p", "%%%0") .. '(%d+)\\u0000"'

local function prepare(v, exact, depth)
  local t = type(v)
  if t == "number" then
    if math.type(v) == "integer" then
      if v > EXACT or v < -EXACT then error("whole number " .. v .. " is past 2^53 (send it as a string)", 0) end
      if v >= -1e14 and v <= 1e14 then return v end
      exact[#exact + 1] = ("%d"):format(v)
    else
      if v ~= v or v == math.huge or v == -math.huge or tonumber(("%.14g"):format(v)) == v then return v end
      exact[#exact + 1] = ("%.17g"):format(v)
    end
    return MARK .. #exact .. "\0"
  elseif t == "string" then
    if not utf8.len(v) then error("a string is not UTF-8 text (send bytes encoded, as base64)", 0) end
    if v:find("\0", 1, true) then error("a string holds a NUL byte, which PostgreSQL refuses", 0) end
    return v
  elseif v == null then
    return cjson.null
  elseif t ~= "table" then
    return v -- cjson says what it thinks of it
  end
  if depth > 1000 then error("nested too deep (a cycle?)", 0) end
  local copy
  for k, x in pairs(v) do
    if type(k) == "string" then prepare(k, exact, depth) end
    local y = prepare(x, exact, depth + 1)
    if y ~= x and not copy then
      copy = {}
      for k2, x2 in pairs(v) do copy[k2] = x2 end
    end
    if copy then copy[k] = y end
  end
  return copy or v
end

-- The payload as JSON text, or nil and why not.
local function encode(payload)
  local exact = {}
  local ok, v = pcall(prepare, payload, exact, 0)
  if not ok then return nil, v end
  local json
  ok, json = pcall(cjson.encode, v == nil and cjson.null or v)
  if not ok then return nil, tostring(json) end
  if #exact > 0 then json = json:gsub(MARKED, function(i) return exact[tonumber(i)] end) end
  return json
end

local function migrate(self)
  local sql, steps = self.sql, self.dialect.schema(self.prefix)
  self.dialect.exclusive(self.db, "loom.jobs:" .. self.prefix, function(s)
    s:exec(sql.version_table)
    local have = s:value(sql.version)
    if have == null or have == nil then have = 0 end
    for v = have + 1, #steps do
      for _, stmt in ipairs(steps[v]) do s:exec(stmt) end
      s:exec(sql.set_version, v)
    end
  end)
end

-- loom.jobs.open(db, {prefix = "loom_", max_attempts = 25,
--   backoff = {base = 1, max = 3600} or function(attempt) -> seconds,
--   notify_interval = 0.01}) -> jobs: creates or migrates its tables.
local function open(db, opts)
  if type(db) ~= "table" or type(db.driver) ~= "string" then
    argerror(1, "loom.jobs.open", "a loom.db handle expected")
  end
  opts = opts or {}
  if type(opts) ~= "table" then argerror(2, "loom.jobs.open", "options table expected") end
  local prefix = opts.prefix or "loom_"
  if type(prefix) ~= "string" or not prefix:match("^[%a_][%w_]*$") or #prefix > 40 then
    argerror(2, "loom.jobs.open", "prefix must be letters, digits and _ (at most 40), starting with no digit")
  end
  local backoff = opts.backoff or {}
  if not is_callable(backoff) and type(backoff) ~= "table" then
    argerror(2, "loom.jobs.open", "backoff must be {base =, max =} or a function(attempt) -> seconds")
  end
  if type(backoff) == "table" then
    seconds(backoff.base, 2, "loom.jobs.open", "backoff.base", true)
    seconds(backoff.max, 2, "loom.jobs.open", "backoff.max", true)
  end
  local dialect = require("loom.jobs." .. db.driver)
  local sql = build_sql(dialect, prefix)
  dialect.prepare(sql, prefix)
  local self = setmetatable({
    db = db, dialect = dialect, sql = sql, prefix = prefix, handlers = {}, periodic = {},
    max_attempts = whole(opts.max_attempts, 2, "loom.jobs.open", "max_attempts", 1) or 25,
    backoff = backoff, decode = decode, notes = {},
    notify_interval = seconds(opts.notify_interval, 2, "loom.jobs.open", "notify_interval") or 0.01,
  }, Jobs)
  migrate(self)
  return self
end

-- Seconds before attempt n + 1: exponential, capped, with jitter so jobs
-- that failed together do not retry together.
local function exponential(b, attempt)
  local d = math.min(b.max or 3600, (b.base or 1) * 2 ^ (attempt - 1))
  return d * (0.5 + 0.5 * math.random())
end

-- A backoff function that raises or answers what no run_at can hold
-- (nil, NaN, negative, huge) must not leave its job unrecorded, running
-- for ever: the default's delay, and what was wrong as a second result
-- for the worker to report.
function Jobs:_backoff(attempt)
  local b = self.backoff
  if not is_callable(b) then return exponential(b, attempt) end
  local ok, d = pcall(b, attempt)
  if not ok then
    return exponential({}, attempt), "the backoff function raised: " .. (type(d) == "string" and d or "a " .. type(d))
  end
  -- luacheck: push ignore 581 (not (d >= 0) refuses NaN too)
  if type(d) ~= "number" or not (d >= 0 and d <= MAX_SECONDS) then
    -- luacheck: pop
    return exponential({}, attempt), ("the backoff function returned %s, not seconds from 0 to %.0f")
      :format(type(d) == "number" and ("%g"):format(d) or "a " .. type(d), MAX_SECONDS)
  end
  return d
end

-- The insert's parameters, in the order of sql.insert. The arguments are
-- #n (name), #n + 1 (payload), #n + 2 (options) of fname, or job `item` of
-- fname's list (argument #1).
local function row(self, fname, n, name, payload, o, item)
  local function bad(k, msg)
    if item then argerror(1, fname, ("job %d: %s"):format(item, msg)) end
    argerror(n + k, fname, msg)
  end
  if type(name) ~= "string" or name == "" then bad(0, "job name expected") end
  if type(o) ~= "table" then bad(2, "options table expected") end
  local queue = o.queue or "default"
  if type(queue) ~= "string" or queue == "" then bad(2, "queue must be a non-empty string") end
  if o.unique_key ~= nil and type(o.unique_key) ~= "string" then bad(2, "unique_key must be a string") end
  local msg = bad_seconds(o.run_at, "run_at (epoch seconds)", false, MAX_SECONDS)
    or bad_seconds(o.delay, "delay", false, MAX_SECONDS) or bad_seconds(o.timeout, "timeout", true, MAX_TIMEOUT)
    or bad_whole(o.priority, "priority", INT4_MIN) or bad_whole(o.max_attempts, "max_attempts", 1)
  if msg then bad(2, msg) end
  local run_at, delay, timeout = o.run_at, o.delay or 0, o.timeout
  if o.tx ~= nil and (type(o.tx) ~= "table" or not is_callable(o.tx.exec)) then
    bad(2, "tx must be a transaction of db:transaction")
  end
  local json, why = encode(payload)
  if not json then bad(1, "payload cannot be JSON: " .. why) end
  return {
    queue, name, json, o.priority or 0, run_at and math.floor(run_at * 1000) or null, math.floor(delay * 1000),
    o.max_attempts or self.max_attempts, o.unique_key or null, timeout and math.floor(timeout * 1000) or null,
  }
end

-- The channel to NOTIFY in the insert, or nil. Outside a transaction
-- NOTIFYs of a queue are throttled: the first goes at once, those within
-- notify_interval after it become one sent at the interval's end, so a
-- burst of enqueues costs one notification and none is lost.
function Jobs:_notify(queue, tx)
  local d = self.dialect
  if not d.listens then return nil end
  local channel = d.channel(self.prefix, queue)
  if tx then return channel end
  local st = self.notes[queue]
  if not st then st = { last = -math.huge }; self.notes[queue] = st end
  local now = loom.now()
  if now - st.last >= self.notify_interval then
    st.last = now
    return channel
  end
  if not st.pending then
    st.pending = true
    loom.spawn(function()
      loom.sleep(st.last + self.notify_interval - now)
      st.pending, st.last = false, loom.now()
      pcall(d.notify, self.db, self.sql, channel)
    end)
  end
  return nil
end

-- A worker of this process serving the queue needs no notification.
function Jobs:_wake(queue)
  local q = self.worker and self.worker.queues[queue]
  if q then q.wake:try_send(true) end
end

-- jobs:enqueue(name, payload, {queue = "default", priority = 0 (lower runs
-- first), delay = s | run_at = epoch s, max_attempts =, timeout = s,
-- unique_key =, tx =}) -> the job's id, or nil when a job with that
-- unique_key is queued or running. With tx the job exists only if tx
-- commits.
function Jobs:enqueue(name, payload, opts)
  opts = opts or {}
  local params = row(self, "enqueue", 1, name, payload, opts)
  local id = self.dialect.enqueue(opts.tx or self.db, self.sql, params, self:_notify(params[1], opts.tx))
  self:_wake(params[1])
  if id == null then id = nil end
  return id
end

local COLUMNS = { "queue", "name", "payload", "priority", "run_at", "max_attempts", "unique_key", "timeout_ms",
  "created_at" }

-- jobs:enqueue_many({ {name =, payload =, queue =, ...enqueue's options}, ... },
--   {tx =}) -> how many were enqueued. One insert_many (COPY on
-- PostgreSQL); jobs with a unique_key go one by one, as enqueue.
function Jobs:enqueue_many(list, opts)
  if type(list) ~= "table" then argerror(1, "enqueue_many", "array of jobs expected") end
  opts = opts or {}
  if type(opts) ~= "table" then argerror(2, "enqueue_many", "options table expected") end
  local s = opts.tx or self.db
  local rows, singles, queues = {}, {}, {}
  local now
  for i, item in ipairs(list) do
    if type(item) ~= "table" then argerror(1, "enqueue_many", ("job %d is not a table"):format(i)) end
    local p = row(self, "enqueue_many", 1, item.name, item.payload, item, i)
    queues[p[1]] = true
    if p[8] ~= null then
      singles[#singles + 1] = item
    else
      now = now or s:value(self.sql.now)
      rows[#rows + 1] = { p[1], p[2], p[3], p[4], p[5] ~= null and p[5] or now + p[6], p[7], null, p[9], now }
    end
  end
  local n = #rows > 0 and s:insert_many(self.sql.jobs, COLUMNS, rows) or 0
  for _, item in ipairs(singles) do
    if self:enqueue(item.name, item.payload, setmetatable({ tx = opts.tx }, { __index = item })) then n = n + 1 end
  end
  for queue in pairs(queues) do
    local channel = self:_notify(queue, opts.tx)
    if channel then self.dialect.notify(s, self.sql, channel) end
    self:_wake(queue)
  end
  return n
end

-- jobs:handle(name, fn(job), {timeout = s}): how this process runs jobs
-- of that name. A job's own timeout (enqueue's) wins over the handler's.
function Jobs:handle(name, fn, opts)
  if type(name) ~= "string" or name == "" then argerror(1, "handle", "job name expected") end
  if not is_callable(fn) then argerror(2, "handle", "function expected, got " .. type(fn)) end
  opts = opts or {}
  if type(opts) ~= "table" then argerror(3, "handle", "options table expected") end
  self.handlers[name] = { fn = fn, timeout = seconds(opts.timeout, 3, "handle", "timeout", true) }
  return self
end

-- jobs:every(name, period_s, {payload =, queue =, ...}): enqueue a job
-- named name once per period (at multiples of the period since the
-- epoch), once across all workers; a period missed while no worker ran
-- is skipped, not caught up. Takes effect in jobs:work.
function Jobs:every(name, period, opts)
  if type(name) ~= "string" or name == "" then argerror(1, "every", "job name expected") end
  seconds(period, 2, "every", "period", true, MAX_SECONDS)
  if period == nil then argerror(2, "every", "period expected") end
  opts = opts or {}
  if type(opts) ~= "table" then argerror(3, "every", "options table expected") end
  -- Checked now: a bad option found by the scheduler would fail every
  -- period, far from the call.
  local msg = opts.queue ~= nil and (type(opts.queue) ~= "string" or opts.queue == "")
    and "queue must be a non-empty string" or bad_whole(opts.priority, "priority", INT4_MIN)
    or bad_whole(opts.max_attempts, "max_attempts", 1) or bad_seconds(opts.timeout, "timeout", true, MAX_TIMEOUT)
  if not msg then
    local json, why = encode(opts.payload)
    if not json then msg = "payload cannot be JSON: " .. why end
  end
  if msg then argerror(3, "every", msg) end
  self.periodic[name] = {
    name = name, period_ms = math.max(1, math.floor(period * 1000)), payload = opts.payload,
    queue = opts.queue, max_attempts = opts.max_attempts, timeout = opts.timeout, priority = opts.priority,
  }
  return self
end

-- jobs:work{queues = {default = 10}, prefetch = n (each queue's
--   concurrency), poll = s, lease = 30, heartbeat = lease / 3,
--   rescue_every = lease / 2, timeout = s, on_error = fn(err, what)}
-- -> the worker: runs handlers as tasks until jobs:stop. Call it inside
-- loom.run. prefetch: jobs claimed beyond the free slots, held here
-- until a slot frees (fewer claims on a busy queue; another worker cannot
-- take them meanwhile).
function Jobs:work(opts)
  opts = opts or {}
  if type(opts) ~= "table" then argerror(1, "work", "options table expected") end
  if self.worker then loom.error("usage", "this jobs handle is working already (one worker per handle)") end
  if opts.queues ~= nil and type(opts.queues) ~= "table" then
    argerror(1, "work", "queues must map queue names to concurrency")
  end
  for _, k in ipairs({ "poll", "lease", "heartbeat", "rescue_every" }) do
    seconds(opts[k], 1, "work", k, true, MAX_SECONDS)
  end
  seconds(opts.timeout, 1, "work", "timeout", true)
  if opts.on_error ~= nil and not is_callable(opts.on_error) then
    argerror(1, "work", "on_error must be a function(err, what)")
  end
  self.worker = Worker.new(self, opts)
  local ok, e = pcall(self.worker.start, self.worker)
  if not ok then self.worker = nil; error(e, 0) end
  return self.worker
end

-- jobs:stop(deadline): stop claiming, let running jobs finish for up to
-- deadline seconds (nil: however long), cancel the rest and give them
-- back to the queue. Returns how many were given back.
function Jobs:stop(deadline)
  seconds(deadline, 1, "stop", "deadline")
  local w = self.worker
  if not w then return 0 end
  return w:stop(deadline) -- which lets go of self.worker once stopped
end

-- jobs:cancel(id) -> true when the job was queued (now cancelled) or
-- running (its handler is cancelled wherever it runs), false otherwise.
function Jobs:cancel(id)
  if math.type(id) ~= "integer" then argerror(1, "cancel", "job id expected") end
  local db, sql = self.db, self.sql
  if db:exec(sql.cancel_queued, id) == 1 then return true end
  if db:exec(sql.cancel_running, id) ~= 1 then return false end
  if self.dialect.listens then self.dialect.notify(db, sql, self.dialect.channel(self.prefix, "")) end
  if self.worker then self.worker:_cancel_local() end
  return true
end

-- jobs:stats() -> {queued =, running =, failed =, cancelled =, oldest_wait = s,
--   queues = {[name] = {queued =, running =, failed =, cancelled =, oldest_wait = s}}}
-- oldest_wait: how long the longest-waiting due job has waited.
local STATES = { available = "queued", running = "running", failed = "failed", cancelled = "cancelled" }

function Jobs:stats()
  local rows = self.db:query(self.sql.stats)
  local now = self.db:value(self.sql.now)
  local out = { queued = 0, running = 0, failed = 0, cancelled = 0, queues = {} }
  for _, r in ipairs(rows) do
    local q = out.queues[r.queue]
    if not q then
      q = { queued = 0, running = 0, failed = 0, cancelled = 0 }
      out.queues[r.queue] = q
    end
    local key = STATES[r.state]
    if key then
      q[key] = q[key] + r.n
      out[key] = out[key] + r.n
    end
    if r.oldest ~= null and r.oldest then
      local wait = math.max(0, now - r.oldest) / 1000
      q.oldest_wait = math.max(q.oldest_wait or 0, wait)
      out.oldest_wait = math.max(out.oldest_wait or 0, wait)
    end
  end
  return out
end

-- One row of the jobs table, for tests and tools: nil when the job is
-- gone (finished jobs are deleted).
function Jobs:get(id)
  if math.type(id) ~= "integer" then argerror(1, "get", "job id expected") end
  local r = self.db:first(self.sql.get, id)
  if r and r.payload then r.payload = decode(r.payload) end
  return r
end

loom.jobs = { open = open, null = cjson.null }
return loom.jobs
