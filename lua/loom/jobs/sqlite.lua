-- loom.jobs on SQLite: one host, one writer at a time. What differs from
-- lua/loom/jobs/sql.lua's statements: the schema, the claim as one UPDATE
-- ... RETURNING (the write lock is its own, no SKIP LOCKED needed), and
-- migrations inside BEGIN IMMEDIATE, which other processes wait out.
local d = {
  now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
  poll = 0.2, -- no notifications: polling is how other processes' jobs are seen
}

function d.schema(p)
  return {
    { -- 1
      -- AUTOINCREMENT: a deleted (finished) job's id is never given to a
      -- new job, so a late fenced write cannot hit a stranger.
      ([[CREATE TABLE IF NOT EXISTS %sjobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, name TEXT NOT NULL, payload TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'available', run_at INTEGER NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL DEFAULT 25, owner TEXT,
        claimed_at INTEGER, timeout_ms INTEGER, last_error TEXT, traceback TEXT, unique_key TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL)]]):format(p),
      ("CREATE INDEX IF NOT EXISTS %sjobs_claim ON %sjobs (queue, priority, run_at, id) WHERE state = 'available'")
        :format(p, p),
      ("CREATE INDEX IF NOT EXISTS %sjobs_owner ON %sjobs (owner) WHERE state = 'running'"):format(p, p),
      ("CREATE UNIQUE INDEX IF NOT EXISTS %sjobs_unique ON %sjobs (unique_key) "
        .. "WHERE state IN ('available', 'running')"):format(p, p),
      ("CREATE TABLE IF NOT EXISTS %sworkers (id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)"):format(p),
      ("CREATE TABLE IF NOT EXISTS %speriodic (name TEXT PRIMARY KEY, next_at INTEGER NOT NULL)"):format(p),
    },
  }
end

function d.exclusive(db, _, fn) return db:transaction(fn) end

function d.prepare(sql, prefix)
  sql.insert_plain = sql.insert .. " ON CONFLICT DO NOTHING RETURNING id"
  sql.claim = ([[UPDATE %sjobs SET state = 'running', owner = ?, attempt = attempt + 1, claimed_at = %s
    WHERE id IN (SELECT id FROM %sjobs WHERE state = 'available' AND queue = ? AND run_at <= %s
      ORDER BY priority, run_at, id LIMIT ?) RETURNING %s]]):format(prefix, d.now, prefix, d.now, sql.returning)
end

function d.enqueue(s, sql, params)
  return s:value(sql.insert_plain, table.unpack(params, 1, 9))
end

function d.claim(db, sql, queue, n, owner)
  return db:query(sql.claim, owner, queue, n)
end

return d
