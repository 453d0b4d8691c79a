-- The nginx the HTTP client's specs run against: LOOM_HTTP_URL and
-- LOOM_HTTP_DIR when the run has one (scripts/test.sh, example.sh), or
-- else a throwaway one this process starts once and stops at exit
-- (spec/support/nginx_server.sh says what it serves).
local server = require "spec.support.server"

local S = server.new("nginx", "LOOM_HTTP", "spec/support/nginx_server.sh")

local M = { url = S.url, dir = S.dir }

-- A URL nginx_server.sh wrote beside the plain one: "h2c_url", "https_url".
function M.other(name) return server.read(S.dir() .. "/" .. name) end

return M
