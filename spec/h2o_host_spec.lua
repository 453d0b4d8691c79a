-- examples/embed/h2o_host: an HTTP server on libh2o whose requests run as
-- loom tasks, two worker threads each with its own lua_State. Started on a
-- loopback port the kernel picks, with spec/support/h2o_handler.lua and a
-- short deadline; asked with curl, run under wrk with keep-alive and
-- without, given a slow client and clients that leave early; then stopped
-- with SIGTERM, which it must survive cleanly (exit 0, no sanitizer report).
local loom = require "loom"
local pg = require "spec.support.pg"
local net = require "spec.support.net"

local BUILD = os.getenv("LOOM_BUILD_DIR") or "build"
local HOST = BUILD .. "/examples/embed/h2o_host"
-- Short for the slow route, long enough for every other request even under
-- load and sanitizers.
local DEADLINE = 2
-- Bounds on waits for the host, far beyond what it needs (it starts in a
-- fraction of a second, under sanitizers too).
local START_BOUND, STOP_BOUND = 30, 30
local ROWS = 20

local dir, pid, port, base

local function sh(cmd)
  local p = io.popen(net.PLAIN .. "bash -c " .. ("%q"):format(cmd))
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

local function read(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function nap(s) os.execute("sleep " .. s) end

local function alive() return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true end

local function fd_count()
  local out = sh("ls /proc/" .. pid .. "/fd | wc -l")
  return tonumber(out)
end

-- curl: status and body. -m bounds every request.
local function get(path, args)
  local out = sh(("curl -s -m 10 %s -w '\\n%%{http_code}' '%s%s'"):format(args or "", base, path))
  local body, status = out:match("^(.*)\n(%d+)$")
  return tonumber(status), body
end

local function wrk(path, extra)
  local out = sh(("wrk -t1 -c32 -d2s --timeout 5s %s '%s%s'"):format(extra or "", base, path))
  local requests = tonumber(out:match("(%d+) requests in"))
  assert(requests and requests > 0, "wrk made no requests:\n" .. out)
  assert.is_nil(out:match("Non%-2xx"), out)
  assert.is_nil(out:match("Socket errors:[^\n]*timeout [1-9]"), out)
  return requests
end

describe("h2o_host", function()
  lazy_setup(function()
    local f = io.open(HOST)
    assert(f, HOST .. " was not built: scripts/deps.sh installs libh2o-dev, which CMake needs to build it")
    f:close()
    local db = loom.db.open(pg.url())
    db:exec("DROP TABLE IF EXISTS hosts_bench")
    db:exec("CREATE TABLE hosts_bench (id int PRIMARY KEY, name text NOT NULL)")
    db:exec("INSERT INTO hosts_bench SELECT i, 'host-' || i FROM generate_series(1, " .. ROWS .. ") AS i")
    db:close()

    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    -- The script waits for the host, so its exit status is kept. The host
    -- keeps the sanitizer options but not the preloaded runtime: an
    -- instrumented build links its own.
    local script = assert(io.open(dir .. "/run.sh", "w"))
    script:write(("env -u LD_PRELOAD LOOM_PG_URL='%s' '%s' --threads 2 --deadline %g spec/support/h2o_handler.lua "
      .. ">'%s/out' 2>'%s/err' &\necho $! >'%s/pid'\nwait $!\necho $? >'%s/status'\n")
      :format(pg.url(), HOST, DEADLINE, dir, dir, dir, dir))
    script:close()
    assert(os.execute(("bash '%s/run.sh' </dev/null >/dev/null 2>&1 &"):format(dir)))
    for _ = 1, START_BOUND * 10 do
      port = read(dir .. "/out"):match("listening on 127%.0%.0%.1:(%d+)")
      if port or read(dir .. "/status") ~= "" then break end
      nap(0.1)
    end
    assert(port, "h2o_host did not start:\n" .. read(dir .. "/err"))
    pid = read(dir .. "/pid"):match("%d+")
    base = "http://127.0.0.1:" .. port
  end)

  lazy_teardown(function()
    if pid and alive() then os.execute("kill -9 " .. pid) end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("answers from a Lua handler: method, path, headers and body reach it", function()
    assert.same({ 200, "hello\n" }, { get("/hello") })
    assert.same({ 200, "POST /echo?a=1 yes payload" },
      { get("/echo?a=1", "-H 'X-Test: yes' --data-binary payload") })
    assert.same({ 404, "no such route\n" }, { get("/nowhere") })
  end)

  it("answers over HTTP/2 (cleartext, prior knowledge and upgrade)", function()
    assert.same({ 200, "hello\n" }, { get("/hello", "--http2-prior-knowledge") })
    assert.same({ 200, "POST /echo yes h2" }, { get("/echo", "--http2 -H 'X-Test: yes' --data-binary h2") })
  end)

  it("answers from PostgreSQL through loom.db", function()
    for _, id in ipairs { 1, 7, ROWS } do
      assert.same({ 200, ("%d host-%d\n"):format(id, id) }, { get("/pg?id=" .. id) })
    end
    assert.same({ 404, "no such row\n" }, { get("/pg?id=" .. ROWS + 1) })
  end)

  it("fetches through loom.http from a handler (here from the host itself)", function()
    assert.same({ 200, "fetched 200 hello\n" }, { get("/fetch?url=" .. base .. "/hello") })
  end)

  it("gives a 500 for a handler that fails, and logs it", function()
    assert.same({ 500, "handler failed\n" }, { get("/fail") })
    local err = read(dir .. "/err")
    assert.matches("h2o_host: 500 GET /fail: [^\n]*this route fails", err)
    assert.matches("stack traceback", err)
  end)

  it("gives a 500 for an answer it cannot send, and logs it", function()
    assert.same({ 500, "handler failed\n" }, { get("/bad") })
    assert.matches("h2o_host: 500 GET /bad: bad answer: the headers must map names to strings", read(dir .. "/err"))
  end)

  it("cancels a handler past its deadline and gives a 504", function()
    assert.same({ 504, "handler deadline passed\n" }, { get("/slow") })
    assert.matches("h2o_host: 504 GET /slow: no answer within " .. DEADLINE .. " s", read(dir .. "/err"))
  end)

  it("serves others while a slow client trickles its request in", function()
    local out = dir .. "/slow_client"
    -- The request comes in three pieces, 0.3 s apart.
    local trickle = ("exec 3<>/dev/tcp/127.0.0.1/%s; printf 'GET /hel' >&3; sleep 0.3; "
      .. "printf 'lo HTTP/1.1\\r\\nHost: x\\r\\n' >&3; sleep 0.3; printf 'Connection: close\\r\\n\\r\\n' >&3; "
      .. "timeout 10 cat <&3 >%s"):format(port, out)
    assert(os.execute(net.PLAIN .. "bash -c " .. ("%q"):format(trickle) .. " &"))
    nap(0.1)
    assert.same({ 200, "hello\n" }, { get("/hello") })
    for _ = 1, 100 do
      if read(out):find("hello\n", 1, true) then break end
      nap(0.1)
    end
    local answer = read(out)
    assert.matches("^HTTP/1%.1 200 OK\r\n", answer)
    assert.matches("\r\n\r\nhello\n$", answer)
  end)

  it("survives clients that leave while their handler runs", function()
    -- Each gives up at 0.1 s; its handler runs until the deadline. Over
    -- HTTP/2 the stream is reset, and h2o 2.2 frees the request at once
    -- (h2o#1894): the handler's answer must find it gone.
    sh(("for v in --http1.1 --http1.1 --http2-prior-knowledge --http2-prior-knowledge; do "
      .. "curl -s -m 0.1 $v -o /dev/null '%s/slow' & done; wait"):format(base))
    assert.same({ 200, "hello\n" }, { get("/hello") })
    nap(DEADLINE + 0.5)
    assert.is_true(alive())
    assert.same({ 200, "hello\n" }, { get("/hello") })
  end)

  it("survives wrk with keep-alive and without, its descriptors as many after", function()
    -- The first burst fills each worker's database pool: what is open
    -- after it stays open.
    wrk("/pg?id=3")
    local before = fd_count()
    wrk("/hello")
    wrk("/hello", "-H 'Connection: close'")
    wrk("/pg?id=3")
    assert.is_true(alive())
    assert.same({ 200, "3 host-3\n" }, { get("/pg?id=3") })
    -- The last connections close as wrk ends; the server sees it at once.
    local after
    for _ = 1, 50 do
      after = fd_count()
      if after <= before then break end
      nap(0.1)
    end
    assert.is_true(after <= before, ("%d descriptors before wrk, %d after"):format(before, after))
  end)

  it("stops on SIGTERM, exiting 0 with nothing reported", function()
    assert(os.execute("kill -TERM " .. pid))
    local status
    for _ = 1, STOP_BOUND * 10 do
      status = read(dir .. "/status"):match("%d+")
      if status then break end
      nap(0.1)
    end
    local err = read(dir .. "/err")
    assert.equal("0", status, "h2o_host exit status " .. tostring(status) .. ":\n" .. err)
    assert.is_nil(err:match("Sanitizer"), err)
    assert.is_nil(err:match("runtime error:"), err)
  end)
end)
