-- The PostgreSQL server specs run against: LOOM_PG_URL when set (with
-- LOOM_PG_ADMIN_URL and LOOM_PG_DIR, as scripts/test.sh exports them), or
-- else a throwaway server this process starts once and stops at exit
-- (spec/support/server.lua, pg_server.sh). restart() is a fast shutdown
-- and start on the same port.
local server = require "spec.support.server"

local pg = server.new("pg", "LOOM_PG", "spec/support/pg_server.sh")

return { url = pg.url, admin_url = pg.admin_url, restart = pg.restart }
