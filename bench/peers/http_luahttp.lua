-- lua-http's side of bench/http.sh: CONC coroutines on one cqueues
-- controller, each a client request (http.request:go) after another,
-- until N requests are done, after a warm-up round. Prints "rps <n>".
-- Debian's lua-http is packaged for Lua 5.1 to 5.3 only, but it is plain
-- Lua on cqueues and luaossl, which Debian builds for 5.4 too: its files
-- are put on the path here and it runs on lua5.4.
--   lua5.4 bench/peers/http_luahttp.lua URL N CONC
for _, v in ipairs { "5.3", "5.1" } do
  package.path = package.path .. (";/usr/share/lua/%s/?.lua;/usr/share/lua/%s/?/init.lua"):format(v, v)
end
local cqueues = require "cqueues"
local request = require "http.request"

local url, n, conc = arg[1], tonumber(arg[2]) or 20000, tonumber(arg[3]) or 64

local function worker(count)
  for _ = 1, count do
    local headers, stream = assert(request.new_from_uri(url):go(10))
    if headers:get(":status") ~= "200" then error("status " .. headers:get(":status")) end
    assert(stream:get_body_as_string())
    stream:shutdown()
  end
end

local function round(count)
  local cq = cqueues.new()
  for _ = 1, conc do cq:wrap(worker, count) end
  assert(cq:loop())
end

round(2)
local share = n // conc
local t0 = cqueues.monotime()
round(share)
print(("rps %.1f"):format(share * conc / (cqueues.monotime() - t0)))
