-- The statements of loom.jobs that read the same on every database, written
-- once with "?" placeholders and the dialect's NOW (the database's clock in
-- epoch milliseconds: no process's clock is ever asked). A dialect file
-- (lua/loom/jobs/<driver>.lua) adds what differs: the schema, the claim,
-- the insert, notifications, the lock for migrations; d.mark turns "?"
-- into its placeholders.
--
-- Every write to a claimed job is fenced on state, owner and attempt: a
-- worker whose lease lapsed (its job taken back and maybe claimed again)
-- changes nothing.
-- Unless the dialect says otherwise: "?" placeholders, the payload as
-- text, upserts as ON CONFLICT DO NOTHING.
local function as_is(sql) return sql end
local function insert_ignore(rest) return "INSERT " .. rest .. " ON CONFLICT DO NOTHING" end

return function(d, prefix)
  d.mark, d.json_in, d.json_out = d.mark or as_is, d.json_in or "?", d.json_out or "payload"
  d.insert_ignore = d.insert_ignore or insert_ignore
  local jobs, workers, periodic = prefix .. "jobs", prefix .. "workers", prefix .. "periodic"
  local NOW = d.now
  local FENCE = " WHERE id = ? AND owner = ? AND attempt = ? AND state = 'running'"
  local s = {
    jobs = jobs,
    now = "SELECT " .. NOW .. " AS now",
    version_table = ("CREATE TABLE IF NOT EXISTS %sjobs_schema (version INTEGER NOT NULL)"):format(prefix),
    version = ("SELECT MAX(version) FROM %sjobs_schema"):format(prefix),
    set_version = ("INSERT INTO %sjobs_schema (version) VALUES (?)"):format(prefix),
    complete = "DELETE FROM " .. jobs .. FENCE,
    -- error text, traceback, state after, delay in ms
    fail = ("UPDATE %s SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE ? END, "
      .. "run_at = %s + ?, owner = NULL, last_error = ?, traceback = ?"):format(jobs, NOW) .. FENCE,
    cancelled = ("UPDATE %s SET state = 'cancelled', owner = NULL, last_error = ?"):format(jobs) .. FENCE,
    -- Given back unrun (a graceful stop): the attempt does not count.
    release = ("UPDATE %s SET state = 'available', owner = NULL, attempt = attempt - 1"):format(jobs) .. FENCE,
    cancel_queued = ("UPDATE %s SET state = 'cancelled' WHERE id = ? AND state = 'available'"):format(jobs),
    cancel_running = ("UPDATE %s SET cancel_requested = 1 WHERE id = ? AND state = 'running'"):format(jobs),
    cancel_asked = ("SELECT id, attempt FROM %s WHERE owner = ? AND state = 'running' AND cancel_requested = 1")
      :format(jobs),
    register = ("INSERT INTO %s (id, expires_at) VALUES (?, %s + ?)"):format(workers, NOW),
    renew = ("UPDATE %s SET expires_at = %s + ? WHERE id = ?"):format(workers, NOW),
    unregister = ("DELETE FROM %s WHERE id = ?"):format(workers),
    -- Jobs whose owner's lease lapsed go back to the queue (or fail, when
    -- that was their last attempt: a job that kills its worker every time
    -- must not kill every worker in turn).
    rescue = ("UPDATE %s SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' "
      .. "WHEN attempt >= max_attempts THEN 'failed' ELSE 'available' END, owner = NULL, "
      .. "last_error = 'its worker stopped renewing its lease' WHERE state = 'running' "
      .. "AND (owner IS NULL OR owner NOT IN (SELECT id FROM %s WHERE expires_at > %s))"):format(jobs, workers, NOW),
    expired = ("SELECT COUNT(*) FROM %s WHERE expires_at <= %s"):format(workers, NOW),
    reap = ("DELETE FROM %s WHERE expires_at < %s - ?"):format(workers, NOW),
    stats = ("SELECT queue, state, COUNT(*) AS n, MIN(CASE WHEN state = 'available' AND run_at <= %s "
      .. "THEN run_at END) AS oldest FROM %s GROUP BY queue, state"):format(NOW, jobs),
    periodic_add = d.insert_ignore(("INTO %s (name, next_at) VALUES (?, ?)"):format(periodic)),
    periodic_due = ("SELECT next_at, %s AS now FROM %s WHERE name = ?"):format(NOW, periodic),
    periodic_take = ("UPDATE %s SET next_at = ? WHERE name = ? AND next_at = ?"):format(periodic),
    get = ("SELECT id, queue, name, %s AS payload, priority, state, run_at, attempt, max_attempts, owner, "
      .. "last_error, traceback, unique_key, cancel_requested FROM %s WHERE id = ?"):format(d.json_out, jobs),
    insert = ("INSERT INTO %s (queue, name, payload, priority, run_at, max_attempts, unique_key, timeout_ms, "
      .. "created_at) VALUES (?, ?, %s, ?, COALESCE(?, %s + ?), ?, ?, ?, %s)"):format(jobs, d.json_in, NOW, NOW),
    returning = ("id, name, queue, %s AS payload, priority, attempt, max_attempts, timeout_ms, unique_key, "
      .. "run_at, claimed_at"):format(d.json_out),
  }
  -- n completions at once: (id, attempt) pairs after the owner.
  function s.complete_many(n)
    return ("DELETE FROM %s WHERE owner = ? AND state = 'running' AND (%s)")
      :format(jobs, ("(id = ? AND attempt = ?) OR "):rep(n - 1) .. "(id = ? AND attempt = ?)")
  end
  -- Claimed but never started (a worker's buffer): owner and id suffice,
  -- as the worker cannot have claimed them again meanwhile.
  function s.release_many(n)
    return ("UPDATE %s SET state = 'available', owner = NULL, attempt = attempt - 1 WHERE owner = ? "
      .. "AND state = 'running' AND id IN (%s)"):format(jobs, ("?, "):rep(n - 1) .. "?")
  end
  for k, v in pairs(s) do
    if type(v) == "string" then s[k] = d.mark(v) end
  end
  for _, name in ipairs({ "complete_many", "release_many" }) do
    local make = s[name]
    s[name] = function(n) return d.mark(make(n)) end
  end
  return s
end
