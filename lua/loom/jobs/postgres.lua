-- loom.jobs on PostgreSQL: what differs from lua/loom/jobs/sql.lua's
-- statements. Payloads are jsonb; workers wake on NOTIFY.
local NOW = "(extract(epoch from now()) * 1000)::bigint"

local function numbered(sql)
  local n = 0
  return (sql:gsub("%?", function() n = n + 1 return "$" .. n end))
end

local d = {
  now = NOW,
  mark = numbered,
  json_in = "?::jsonb",
  json_out = "payload::text",
  poll = 2, -- NOTIFY wakes workers; the poll finds jobs that became due
}

function d.schema(p)
  return {
    { -- 1
      ([[CREATE TABLE IF NOT EXISTS %sjobs (
        id bigserial PRIMARY KEY, queue text NOT NULL, name text NOT NULL, payload jsonb NOT NULL,
        priority integer NOT NULL DEFAULT 0, state text NOT NULL DEFAULT 'available', run_at bigint NOT NULL,
        attempt integer NOT NULL DEFAULT 0, max_attempts integer NOT NULL DEFAULT 25, owner text,
        claimed_at bigint, timeout_ms integer, last_error text, traceback text, unique_key text,
        cancel_requested smallint NOT NULL DEFAULT 0, created_at bigint NOT NULL)]]):format(p),
      -- Finished jobs are deleted, so the table stays small, but every
      -- claim and completion leaves a dead row: vacuum early.
      ("ALTER TABLE %sjobs SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000)")
        :format(p),
      ("CREATE INDEX IF NOT EXISTS %sjobs_claim ON %sjobs (queue, priority, run_at, id) WHERE state = 'available'")
        :format(p, p),
      -- No index on the running rows' owner: a table not yet analyzed
      -- makes the planner take it for a completion's DELETE, and it holds
      -- every dead row of that owner until a vacuum, so each batch would
      -- read all jobs the worker ever finished (completions slowed from
      -- 50k to 1k jobs/s). Completions go by id; the rescue, rare, scans.
      ("CREATE INDEX IF NOT EXISTS %sjobs_cancel ON %sjobs (owner) WHERE cancel_requested = 1"):format(p, p),
      ("CREATE UNIQUE INDEX IF NOT EXISTS %sjobs_unique ON %sjobs (unique_key) "
        .. "WHERE state IN ('available', 'running')"):format(p, p),
      ("CREATE TABLE IF NOT EXISTS %sworkers (id text PRIMARY KEY, expires_at bigint NOT NULL)"):format(p),
      ("CREATE TABLE IF NOT EXISTS %speriodic (name text PRIMARY KEY, next_at bigint NOT NULL)"):format(p),
    },
  }
end

-- Migrations run under a session-level advisory lock: a second process
-- waits, then finds the version moved on.
function d.exclusive(db, key, fn) return db:lock(key, fn) end

-- FNV-1a, 64 bits: a short stand-in for a long channel name.
local function fnv(text)
  local h = -3750763034362895579 -- 14695981039346656037 as a signed integer
  for i = 1, #text do h = (h ~ text:byte(i)) * 1099511628211 end
  return ("%016x"):format(h)
end

-- One channel per queue; the payload is constant, so notifications sent
-- in one transaction fold into one. PostgreSQL keeps 63 bytes of a
-- channel name (and pg_notify refuses more): a longer one is cut and a
-- hash of the whole appended, the same on every worker and producer.
function d.channel(prefix, queue)
  local name = prefix .. "jobs:" .. queue
  if #name <= 63 then return name end
  return name:sub(1, 46) .. "#" .. fnv(name)
end
d.listens = true

-- The insert, and the NOTIFY in the same statement (one round trip; sent
-- when its transaction commits). Nil for a unique_key already queued.
function d.enqueue(s, sql, params, channel)
  local stmt = channel and sql.insert_notify or sql.insert_plain
  if channel then params[#params + 1] = channel end
  return s:value(stmt, table.unpack(params, 1, 9 + (channel and 1 or 0)))
end

function d.prepare(sql, prefix)
  sql.insert_plain = sql.insert .. " ON CONFLICT DO NOTHING RETURNING id"
  sql.insert_notify = ("WITH ins AS (%s ON CONFLICT DO NOTHING RETURNING id) SELECT id FROM ins, pg_notify($10, '')")
    :format(sql.insert)
  -- The CTE is materialized so the UPDATE cannot be planned into a
  -- nested loop that claims past the LIMIT; SKIP LOCKED lets claimers
  -- in other processes take the next rows instead of waiting.
  sql.claim = ([[WITH c AS MATERIALIZED (
      SELECT id FROM %sjobs WHERE state = 'available' AND queue = $1 AND run_at <= %s
      ORDER BY priority, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
    UPDATE %sjobs j SET state = 'running', owner = $3, attempt = j.attempt + 1, claimed_at = %s
    FROM c WHERE j.id = c.id RETURNING j.%s]]):format(prefix, NOW, prefix, NOW,
    (sql.returning:gsub(", ", ", j.")))
  -- Completions by arrays: one statement text whatever their number.
  sql.complete_arrays = ([[DELETE FROM %sjobs j USING unnest($2::bigint[], $3::int[]) AS d(id, attempt)
    WHERE j.id = d.id AND j.attempt = d.attempt AND j.owner = $1 AND j.state = 'running']]):format(prefix)
  sql.notify = "SELECT pg_notify($1, '')"
end

function d.claim(db, sql, queue, n, owner)
  return db:query(sql.claim, queue, n, owner)
end

function d.complete_many(db, sql, owner, list)
  local ids, attempts = {}, {}
  for i, c in ipairs(list) do ids[i], attempts[i] = c[1], c[2] end
  return db:exec(sql.complete_arrays, owner, "{" .. table.concat(ids, ",") .. "}",
    "{" .. table.concat(attempts, ",") .. "}")
end

function d.notify(s, sql, channel) s:exec(sql.notify, channel) end

return d
