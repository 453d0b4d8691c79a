-- A worker: what jobs:work{} starts in this process. One claimer task
-- per queue (claims with SKIP LOCKED in batches: its free slots plus a
-- prefetch buffer, so a busy queue costs one claim per many jobs; wakes
-- on NOTIFY or a local enqueue at once, on finished jobs once half the
-- batch is free; polls otherwise), a task per running job, a completer that deletes finished jobs in batches, a
-- heartbeat that renews this worker's lease (its row in <prefix>workers,
-- never the job rows), picks up cancel requests and takes back the jobs
-- of workers whose lease lapsed, and the periodic jobs' scheduler.
local loom = require "loom"
local Job = require "loom.jobs.job"

local null = loom.null

local Worker = {}
Worker.__index = Worker

local COMPLETE_BATCH = 500

local function hostname()
  local f = io.open("/etc/hostname")
  local name = f and f:read("l")
  if f then f:close() end
  return (name and name ~= "") and name or "host"
end

-- A worker's name must differ from every other's, also of processes
-- started in the same second from one binary: Lua's own seed comes from
-- the time and addresses, which may repeat (no ASLR, sanitizers).
local function unique_id()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(8)
  if f then f:close() end
  if not bytes or #bytes < 8 then
    bytes = string.pack("<d<d", loom.now(), os.clock()) .. tostring({})
  end
  return ("%s-%s"):format(hostname(), (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end)))
end

-- The text of what a handler raised, whatever it raised: a __tostring
-- that fails or returns no string falls back to the value's type.
local function message(e)
  if type(e) == "string" then return e end
  local ok, text = pcall(tostring, e)
  if ok and type(text) == "string" then return text end
  return ("(a %s error value that tostring cannot turn into text)"):format(type(e))
end

-- A column of text takes what every back end stores: PostgreSQL refuses
-- NUL and bytes that are not UTF-8, MySQL those too and more than 64 KiB
-- in TEXT. A refused outcome would leave its job running for ever, so
-- such bytes are written as \xNN and the text is cut (at a character).
local TEXT_MAX = 16384

local function storable(text)
  if text:find("[\0\128-\255]") and not (utf8.len(text) and not text:find("\0", 1, true)) then
    local out, i = {}, 1
    while i <= #text do
      local c = text:byte(i)
      local n = c < 0x80 and 1 or c >= 0xF0 and 4 or c >= 0xE0 and 3 or c >= 0xC2 and 2 or 0
      local piece = n > 0 and text:sub(i, i + n - 1)
      if c == 0 or n == 0 or #piece < n or not utf8.len(piece) then
        out[#out + 1] = ("\\x%02X"):format(c)
        i = i + 1
      else
        out[#out + 1] = piece
        i = i + n
      end
    end
    text = table.concat(out)
  end
  if #text > TEXT_MAX then
    local cut = TEXT_MAX
    while cut > 0 and (text:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
    text = text:sub(1, cut) .. ("... (%d bytes cut)"):format(#text - cut)
  end
  return text
end

local function poke(ch) if ch then ch:try_send(true) end end

function Worker.new(jobs, opts)
  local queues = {}
  for name, limit in pairs(opts.queues or { default = 10 }) do
    if type(name) ~= "string" or name == "" or math.type(limit) ~= "integer" or limit < 1 then
      loom.error("argument", "bad argument #1 to 'work' (queues maps queue names to concurrency, "
        .. "a whole number of 1 or more)")
    end
    queues[name] = { name = name, limit = limit, active = 0, wake = loom.channel(1), freed = loom.channel(1),
      buffer = {}, head = 1, tail = 0, prefetch = opts.prefetch or limit }
  end
  if opts.prefetch ~= nil and (math.type(opts.prefetch) ~= "integer" or opts.prefetch < 0) then
    loom.error("argument", "bad argument #1 to 'work' (prefetch must be a whole number of jobs, 0 or more)")
  end
  local lease = opts.lease or 30
  return setmetatable({
    jobs = jobs, db = jobs.db, sql = jobs.sql, dialect = jobs.dialect,
    id = unique_id(),
    queues = queues, running = {}, buffered = {}, active = 0, done = {}, done_wake = loom.channel(1),
    beat_wake = loom.channel(1), settled = loom.channel(1), entries = {},
    lease_ms = math.floor(lease * 1000), heartbeat = opts.heartbeat or lease / 3,
    rescue_every = opts.rescue_every or lease / 2,
    poll = opts.poll or jobs.dialect.poll, timeout = opts.timeout,
    on_error = opts.on_error or function(e, what)
      io.stderr:write(("loom.jobs: %s: %s\n"):format(what, message(e)))
    end,
  }, Worker)
end

-- Errors of the worker's own loops (the database went away) are reported
-- and retried; a worker does not die of a restart of its database.
function Worker:_report(e, what)
  pcall(self.on_error, e, what)
end

-- Waits for a poke, a finished job, a notification, or the poll interval
-- (nil: no limit). Returns "freed" when only a finished job woke it.
local function wait(q, timeout)
  local cases = { { q.wake, "recv" }, { q.freed, "recv" } }
  if q.note then cases[3] = { q.note, "recv" } end
  cases.timeout = timeout
  local i, _, ok = loom.select(cases)
  if i == 3 and not ok then q.note = nil end
  local woken = q.wake:try_recv() or i == 1 or i == 3 or i == nil
  q.freed:try_recv()
  while q.note do
    local _, more = q.note:try_recv()
    if not more then break end
    woken = true
  end
  return woken and "woken" or "freed"
end

local function handler_timeout(self, job, h)
  if job.timeout_ms ~= null and job.timeout_ms then return job.timeout_ms / 1000 end
  return h.timeout or self.timeout
end

-- Runs the handler; a failure comes back with the traceback where it was
-- raised.
local function invoke(self, job)
  local h = self.jobs.handlers[job.name]
  if not h then return false, ("no handler for jobs named %q on this worker"):format(job.name) end
  local tb
  local function trace(e)
    tb = debug.traceback(message(e), 2)
    return e
  end
  local timeout = handler_timeout(self, job, h)
  if timeout then
    local ok, inner_ok, err = pcall(loom.timeout, timeout, xpcall, h.fn, trace, job)
    if not ok then return false, inner_ok, tb end
    return inner_ok, err, tb
  end
  local ok, err = xpcall(h.fn, trace, job)
  return ok, err, tb
end

-- The job's outcome, written fenced. Done jobs go to the completer; a
-- failure, a cancel or a release is written here, retried while the
-- database is away (the job would otherwise sit in `running` until this
-- worker dies).
local function settle(self, entry, ok, err, tb)
  local job, sql, db = entry.job, self.sql, self.db
  if ok then
    self.done[#self.done + 1] = { job.id, job.attempt }
    poke(self.done_wake)
    return
  end
  local last = job.attempt >= job.max_attempts
  local wait_ms = 0
  if not (last or entry.cancel or entry.release) then
    local s, complaint = self.jobs:_backoff(job.attempt)
    if complaint then self:_report(complaint, "the backoff of " .. tostring(job)) end
    wait_ms = math.floor(s * 1000)
  end
  local text, trace = storable(message(err)), tb and storable(tb) or null
  local delay = 0.05
  for _ = 1, 8 do
    local done, e = pcall(function()
      if entry.cancel then
        db:exec(sql.cancelled, "cancelled", job.id, self.id, job.attempt)
      elseif entry.release then
        db:exec(sql.release, job.id, self.id, job.attempt)
      else
        db:exec(sql.fail, last and "failed" or "available", wait_ms, text, trace, job.id, self.id, job.attempt)
      end
    end)
    if done then return end
    self:_report(e, "recording the outcome of " .. tostring(job))
    loom.sleep(delay)
    delay = delay * 2
  end
end

local fill

-- A task cancelled before it starts never runs its function: so a job
-- task is only cancelled once started, and one told to stop before that
-- (entry.cancel, entry.release) finds out here.
local function cancel(entry, reason)
  if entry.started then entry.task:cancel(reason) end
end

local function run(self, q, entry, bad_payload)
  entry.started = true
  local ok, err, tb
  if entry.cancel or entry.release then
    ok, err = false, "stopped before it started"
  elseif bad_payload then
    ok, err = false, "payload is not JSON: " .. message(bad_payload)
  else
    ok, err, tb = invoke(self, entry.job)
  end
  -- A success only queues the completion (no wait, nothing to shield).
  if ok then settle(self, entry, ok) else loom.shield(settle, self, entry, ok, err, tb) end
  -- The same job may run here twice: a lease lost while the database was
  -- away, the job taken back and claimed again by this worker. The stale
  -- run ending must not hide the new one from cancels and the stop.
  if self.running[entry.job.id] == entry then self.running[entry.job.id] = nil end
  self.entries[entry] = nil
  q.active = q.active - 1
  self.active = self.active - 1
  fill(self, q)
  if self.active == 0 then poke(self.settled) end
  poke(q.freed)
end

-- A FIFO by head and tail: taken entries are nil, so # would not do.
local function buffered(q) return q.tail - q.head + 1 end

-- Starts buffered jobs while the queue has free slots.
function fill(self, q)
  while q.active < q.limit and q.head <= q.tail and not self.stopping do
    local row = q.buffer[q.head]
    q.buffer[q.head] = nil
    q.head = q.head + 1
    self.buffered[row.id] = nil
    if not row.cancelled then self:_start(q, row) end
  end
  if q.head > q.tail then q.buffer, q.head, q.tail = {}, 1, 0 end
end

function Worker:_start(q, row)
  local okp, payload = pcall(self.jobs.decode, row.payload)
  local entry = { job = Job.new(self, row, okp and payload or nil) }
  q.active = q.active + 1
  self.active = self.active + 1
  self.running[row.id] = entry
  self.entries[entry] = true
  entry.task = loom.spawn(run, self, q, entry, not okp and payload or nil)
end

local function by_order(a, b)
  if a.priority ~= b.priority then return a.priority < b.priority end
  if a.run_at ~= b.run_at then return a.run_at < b.run_at end
  return a.id < b.id
end

-- Claims what the queue has room for (free slots and buffer). A job
-- finishing alone does not call for a claim (a round trip per job): half
-- the room must be free, or a notification, an enqueue here or the poll
-- must say there may be work.
local function claimer(self, q)
  local delay = 0.05
  local why = "woken"
  local room = q.limit + q.prefetch
  while not self.stopping do
    local want = room - q.active - buffered(q)
    local more = false
    if want > 0 and (why == "woken" or want * 2 >= room) then
      local ok, rows = pcall(self.dialect.claim, self.db, self.sql, q.name, want, self.id)
      if ok then
        delay = 0.05
        table.sort(rows, by_order)
        for _, row in ipairs(rows) do
          q.tail = q.tail + 1
          q.buffer[q.tail] = row
          self.buffered[row.id] = q
        end
        fill(self, q)
        more = #rows == want
        why = "freed"
      else
        self:_report(rows, "claiming from queue " .. q.name)
        loom.sleep(delay * (0.5 + math.random()))
        delay = math.min(delay * 2, self.poll)
      end
    end
    if not more and not self.stopping then
      why = wait(q, q.active + buffered(q) < room and self.poll or nil)
    end
  end
end

local function complete(self, list)
  local d = self.dialect
  if d.complete_many then return d.complete_many(self.db, self.sql, self.id, list) end
  local params = { self.id }
  for _, c in ipairs(list) do params[#params + 1] = c[1]; params[#params + 1] = c[2] end
  return self.db:exec(self.sql.complete_many(#list), table.unpack(params))
end

-- Finished jobs are deleted in batches: one statement for all that ended
-- while the previous one ran.
local function completer(self)
  local delay = 0.05
  while not (self.closing and #self.done == 0) do
    if #self.done == 0 then self.done_wake:recv() end
    local list = self.done
    self.done = {}
    local i = 1
    while i <= #list do
      local chunk = table.move(list, i, math.min(#list, i + COMPLETE_BATCH - 1), 1, {})
      local ok, e = pcall(complete, self, chunk)
      if ok then
        i = i + #chunk
        delay = 0.05
      else
        self:_report(e, "completing jobs")
        loom.sleep(delay)
        delay = math.min(delay * 2, 1)
      end
    end
  end
end

local function beat(self)
  local db, sql = self.db, self.sql
  if db:exec(sql.renew, self.lease_ms, self.id) == 0 then
    -- Reaped while away: the jobs it held were taken back, and the
    -- fences keep its late writes out. It serves on under its name.
    db:exec(sql.register, self.id, self.lease_ms)
  end
  for _, r in ipairs(db:query(sql.cancel_asked, self.id)) do
    local entry = self.running[r.id]
    if entry and entry.job.attempt == r.attempt and not entry.cancel then
      entry.cancel = true
      cancel(entry, "job cancelled")
    elseif self.buffered[r.id] then
      local q = self.buffered[r.id]
      for i = q.head, q.tail do
        if q.buffer[i].id == r.id then q.buffer[i].cancelled = true end
      end
      self.buffered[r.id] = nil
      db:exec(sql.cancelled, "cancelled", r.id, self.id, r.attempt)
    end
  end
end

-- The rescue reads every running job, so it runs when a lease has
-- lapsed, and every RESCUE_ANYWAY rounds besides (for jobs whose worker
-- left without giving them back, its row gone).
local RESCUE_ANYWAY = 8

local function rescue(self)
  self.rescues = (self.rescues or 0) + 1
  if self.rescues % RESCUE_ANYWAY ~= 0 and self.db:value(self.sql.expired) == 0 then return end
  self.db:exec(self.sql.rescue)
  self.db:exec(self.sql.reap, self.lease_ms)
end

local function heartbeat(self)
  local next_rescue = loom.now() + self.rescue_every * math.random()
  while not self.stopped do
    loom.select({ { self.beat_wake, "recv" }, timeout = self.heartbeat })
    if self.stopped then return end
    -- Errors once stopped are the stop's own cancel.
    local ok, e = pcall(beat, self)
    if not ok and not self.stopped then self:_report(e, "renewing the lease") end
    if loom.now() >= next_rescue then
      ok, e = pcall(rescue, self)
      if not ok and not self.stopped then self:_report(e, "taking back jobs of lost workers") end
      next_rescue = loom.now() + self.rescue_every * (0.5 + math.random())
    end
  end
end

-- Periodic jobs: whoever moves next_at from the due time it read (a
-- fenced UPDATE) enqueues that period's job, in the same transaction and
-- with the unique key name@due, so each period runs once whatever the
-- number of workers.
local function schedule(self, spec)
  local db, sql = self.db, self.sql
  local r = db:first(sql.periodic_due, spec.name)
  if not r then
    local now = db:value(sql.now)
    db:exec(sql.periodic_add, spec.name, (now // spec.period_ms + 1) * spec.period_ms)
    return 0
  end
  if r.next_at > r.now then return r.next_at - r.now end
  local due = r.next_at
  local next_at = due + spec.period_ms * ((r.now - due) // spec.period_ms + 1)
  db:transaction(function(tx)
    if tx:exec(sql.periodic_take, next_at, spec.name, due) == 1 then
      self.jobs:enqueue(spec.name, spec.payload, { tx = tx, queue = spec.queue, unique_key = spec.name .. "@" .. due,
        max_attempts = spec.max_attempts, timeout = spec.timeout, priority = spec.priority })
    end
  end)
  return next_at - r.now
end

local function scheduler(self)
  while not self.stopped do
    local soonest = math.huge
    for _, spec in pairs(self.jobs.periodic) do
      local ok, wait_ms = pcall(schedule, self, spec)
      if not ok then
        self:_report(wait_ms, "scheduling periodic job " .. spec.name)
        wait_ms = 1000
      end
      soonest = math.min(soonest, wait_ms, spec.period_ms)
    end
    loom.sleep(math.max(soonest, 1) / 1000)
  end
end

function Worker:start()
  self.db:exec(self.sql.register, self.id, self.lease_ms)
  local d, prefix = self.dialect, self.jobs.prefix
  if d.listens then
    for name, q in pairs(self.queues) do q.note = self.db:listen(d.channel(prefix, name), { buffer = 1 }) end
    self.cancel_note = self.db:listen(d.channel(prefix, ""), { buffer = 1 })
  end
  self.tasks = { completer = loom.spawn(completer, self), heartbeat = loom.spawn(heartbeat, self) }
  if self.cancel_note then
    -- A cancel request wakes the heartbeat, which reads what to cancel.
    self.tasks.cancels = loom.spawn(function()
      for _ in self.cancel_note:iter() do poke(self.beat_wake) end
    end)
  end
  if next(self.jobs.periodic) then self.tasks.scheduler = loom.spawn(scheduler, self) end
  self.claimers = {}
  for _, q in pairs(self.queues) do self.claimers[#self.claimers + 1] = loom.spawn(claimer, self, q) end
  return self
end

-- A job of this worker was asked to stop (jobs:cancel in this process).
function Worker:_cancel_local() poke(self.beat_wake) end

-- Waits until no job runs, or the stop's deadline (which a later
-- jobs:stop may bring forward) passes: false then.
local function wait_idle(self)
  while self.active > 0 do
    local left = self.stop_by and self.stop_by - loom.now()
    if left and left <= 0 then return false end
    loom.select({ { self.settled, "recv" }, timeout = left })
  end
  return true
end

local function shut(self)
  for _, q in pairs(self.queues) do poke(q.wake) end
  for _, t in ipairs(self.claimers) do pcall(t.join, t) end
  -- Claimed, never started: back to the queue at once, for other workers.
  local ids = {}
  for id in pairs(self.buffered) do ids[#ids + 1] = id end
  self.buffered = {}
  self.released = #ids
  for first = 1, #ids, 500 do
    local chunk = table.move(ids, first, math.min(#ids, first + 499), 1, {})
    local ok, e = pcall(self.db.exec, self.db, self.sql.release_many(#chunk), self.id, table.unpack(chunk))
    if not ok then self:_report(e, "giving back claimed jobs") end
  end
  if not wait_idle(self) then
    self.cancelling = true
    for entry in pairs(self.entries) do
      if not entry.cancel and not entry.release then
        entry.release = true
        self.released = self.released + 1
      end
      cancel(entry, "worker stopping")
    end
    self.stop_by = nil
    wait_idle(self)
  end
  self.closing = true
  poke(self.done_wake)
  pcall(self.tasks.completer.join, self.tasks.completer)
  self.stopped = true
  for _, q in pairs(self.queues) do if q.note then q.note:close() end end
  if self.cancel_note then self.cancel_note:close() end
  for name, t in pairs(self.tasks) do
    if name ~= "completer" then t:cancel("worker stopped"); pcall(t.join, t) end
  end
  local ok, e = pcall(self.db.exec, self.db, self.sql.unregister, self.id)
  if not ok then self:_report(e, "leaving") end
end

-- Stops claiming, lets running jobs finish for up to `deadline` seconds
-- (nil: as long as they take), then cancels the rest and gives their jobs
-- back to the queue; flushes completions and leaves. Returns how many
-- jobs were given back.
--
-- The stop runs in a task of its own: a caller cancelled or timed out
-- while it waits leaves it going (a later stop waits for the same end,
-- and its deadline, if sooner, applies), never a worker half stopped. A
-- handler of this worker cannot wait for its own job to end: from one,
-- the stop starts and this returns nil at once.
function Worker:stop(deadline)
  local by = deadline and deadline < math.huge and loom.now() + deadline or nil
  if not self.stopping then
    self.stopping = true
    self.left = loom.event()
    self.stop_by = by
    loom.spawn(function()
      local ok, e = pcall(shut, self)
      if self.jobs.worker == self then self.jobs.worker = nil end
      self.left:set()
      if not ok then self:_report(e, "stopping") end
    end)
  elseif by and not self.cancelling and (not self.stop_by or by < self.stop_by) then
    self.stop_by = by
    poke(self.settled)
  end
  local me = loom.current()
  for entry in pairs(self.entries) do
    if entry.task == me then return nil end
  end
  self.left:wait()
  return self.released
end

return Worker
