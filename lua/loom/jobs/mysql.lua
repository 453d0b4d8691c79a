-- loom.jobs on MySQL 8 / MariaDB 10.6+: what differs from
-- lua/loom/jobs/sql.lua's statements. No RETURNING on UPDATE, so a claim is
-- SELECT ... FOR UPDATE SKIP LOCKED then UPDATE in one READ COMMITTED
-- transaction (no gap locks); unique keys live in a generated column that
-- is NULL once the job is no longer queued or running.
local d = {
  now = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
  poll = 0.5, -- no notifications: polling is how other processes' jobs are seen
  insert_ignore = function(rest) return "INSERT IGNORE " .. rest end,
}

local DUPLICATE = 1062

function d.schema(p)
  return {
    { -- 1
      -- The claim index covers the WHERE and the ORDER BY: a filesort
      -- would lock every row it reads.
      ([[CREATE TABLE IF NOT EXISTS %sjobs (
        id BIGINT AUTO_INCREMENT PRIMARY KEY, queue VARCHAR(128) NOT NULL, name VARCHAR(255) NOT NULL,
        payload LONGTEXT NOT NULL, priority INT NOT NULL DEFAULT 0, state VARCHAR(16) NOT NULL DEFAULT 'available',
        run_at BIGINT NOT NULL, attempt INT NOT NULL DEFAULT 0, max_attempts INT NOT NULL DEFAULT 25,
        owner VARCHAR(191), claimed_at BIGINT, timeout_ms INT, last_error TEXT, traceback TEXT,
        unique_key VARCHAR(191), cancel_requested SMALLINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL,
        unique_live VARCHAR(191) AS (IF(state IN ('available', 'running'), unique_key, NULL)) PERSISTENT,
        UNIQUE KEY %sjobs_unique (unique_live), KEY %sjobs_claim (state, queue, priority, run_at, id),
        KEY %sjobs_owner (owner, state)) ENGINE = InnoDB]]):format(p, p, p, p),
      ("CREATE TABLE IF NOT EXISTS %sworkers (id VARCHAR(191) PRIMARY KEY, expires_at BIGINT NOT NULL) "
        .. "ENGINE = InnoDB"):format(p),
      ("CREATE TABLE IF NOT EXISTS %speriodic (name VARCHAR(191) PRIMARY KEY, next_at BIGINT NOT NULL) "
        .. "ENGINE = InnoDB"):format(p),
    },
  }
end

-- DDL commits on its own in MySQL: the GET_LOCK named lock is what keeps
-- two processes from migrating at once.
function d.exclusive(db, key, fn) return db:lock(key, fn) end

function d.prepare(sql, prefix)
  sql.pick = ([[SELECT id FROM %sjobs WHERE state = 'available' AND queue = ? AND run_at <= %s
    ORDER BY priority, run_at, id LIMIT ? FOR UPDATE SKIP LOCKED]]):format(prefix, d.now)
  sql.take = ("UPDATE %sjobs SET state = 'running', owner = ?, attempt = attempt + 1, claimed_at = %s WHERE id IN ")
    :format(prefix, d.now)
  sql.taken = ("SELECT %s FROM %sjobs WHERE id IN "):format(sql.returning, prefix)
end

-- A unique key already queued or running: nil, as the other databases'
-- ON CONFLICT DO NOTHING gives. A failed statement leaves MySQL's
-- transaction open, so this works inside the caller's too.
function d.enqueue(s, sql, params)
  local ok, n, id = pcall(s.exec, s, sql.insert, table.unpack(params, 1, 9))
  if ok then return n == 1 and id or nil end
  if type(n) == "table" and n.code == DUPLICATE then return nil end
  error(n, 0)
end

function d.claim(db, sql, queue, n, owner)
  return db:transaction(function(tx)
    local picked = tx:query(sql.pick, queue, n)
    if #picked == 0 then return picked end
    local ids = {}
    for i, r in ipairs(picked) do ids[i] = r.id end
    local list = "(" .. ("?, "):rep(#ids - 1) .. "?)"
    tx:exec(sql.take .. list, owner, table.unpack(ids))
    return tx:query(sql.taken .. list, table.unpack(ids))
  end, { isolation = "read committed", retries = 3 })
end

return d
