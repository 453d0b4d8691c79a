-- Checks that every public name of loom is documented: lists what loom
-- offers at run time (the functions of the loaded module, the methods and
-- fields of each kind of object, the fields of the tables it hands out and
-- of its errors, the options it reads) and, from the sources, the error
-- kinds it raises, the MySQL URL options it accepts and the environment
-- variables the scripts read; then names each one that neither
-- docs/REFERENCE.md nor README.md mentions in code (a `span` or a fenced
-- block). A name starting with '_' is internal and not listed.
--
--   LOOM_BUILD_DIR=build lua5.4 scripts/check-reference.lua
--
-- run from the checkout; exits 1 naming what is missing. PostgreSQL and
-- MySQL error fields and notifications are looked at too when LOOM_PG_URL
-- and LOOM_MYSQL_URL are set (scripts/test.sh sets them). spec/reference_spec.lua
-- runs it through M.missing().
--
-- How a name must appear:
--   loom.name, loom.db.name            as written
--   a method of an object              prefix:name, with the object's prefix
--                                      (ch:recv, sem:available, db:stats)
--   a field of an object's own table   prefix.name (lazy.state, db.driver)
--   a field of a returned table, an    the word alone (size, wait_time,
--   option, an error kind or field,    batch_index, sslmode, LOOM_PG_URL)
--   a status, a URL option, a variable
local M = {}

-- The prefixes the reference writes each object's methods and fields with.
local PREFIXES = {
  task = { "t", "task" }, channel = { "ch" }, semaphore = { "sem" }, mutex = { "mu" },
  event = { "ev" }, waitgroup = { "wg" }, lazy = { "lazy" }, breaker = { "br" },
  pipeline = { "p" }, group = { "g" }, db = { "db" }, session = { "s", "tx", "sp" },
  ["thread pool"] = { "pool" }, ["thread channel"] = { "ch" },
}

local function public(name) return type(name) == "string" and name:sub(1, 1) ~= "_" end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do if public(k) then out[#out + 1] = k end end
  table.sort(out)
  return out
end

---------------------------------------------------------------- collecting
-- Every item: { needles = {...} (any one documents it), what = "..." }.
local function collector()
  local items, seen = {}, {}
  local c = {}
  function c.add(what, needles)
    local key = what .. "\0" .. needles[1]
    if seen[key] then return end
    seen[key] = true
    items[#items + 1] = { what = what, needles = needles }
  end
  function c.word(what, name) if public(name) then c.add(what, { name }) end end
  function c.fields(what, t)
    if type(t) == "table" then for _, k in ipairs(sorted_keys(t)) do c.word(what, k) end end
  end
  function c.object(kind, object)
    local prefixes = assert(PREFIXES[kind], kind)
    local mt = getmetatable(object)
    local methods = mt and type(mt.__index) == "table" and mt.__index or {}
    for _, name in ipairs(sorted_keys(methods)) do
      local needles = {}
      for i, p in ipairs(prefixes) do needles[i] = p .. ":" .. name end
      c.add(kind .. " method", needles)
    end
    if type(object) == "table" then
      for _, name in ipairs(sorted_keys(object)) do
        local needles = {}
        for i, p in ipairs(prefixes) do needles[i] = p .. "." .. name end
        c.add(kind .. " field", needles)
      end
    end
  end
  c.items = items
  return c
end

-- An options table that records every key read from it.
local function spy(c, what, inner)
  return setmetatable({}, { __index = function(_, k)
    c.word(what, k)
    return inner and inner[k]
  end })
end

local function caught(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error")
  return err
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- The files under dirs whose names end in one of the suffixes.
local function list_files(dirs, ...)
  local out, suffixes = {}, { ... }
  local p = io.popen("find " .. table.concat(dirs, " ") .. " -type f 2>/dev/null | sort")
  for line in p:lines() do
    for _, suffix in ipairs(suffixes) do
      if line:sub(-#suffix) == suffix then out[#out + 1] = line break end
    end
  end
  p:close()
  return out
end

-- What the sources say: error kinds, MySQL URL options, environment variables.
local function from_sources(c)
  local kind_patterns = {
    'lm_error%(L, "([%w_]+)"', 'lm_push_error%(L, "([%w_]+)"', 'loom%.error%("([%w_]+)"',
    'make_error%("([%w_]+)"', 'kind = "([%w_]+)"',
  }
  for _, file in ipairs(list_files({ "lua" }, ".c", ".h")) do
    local text = read_file(file)
    for _, pat in ipairs(kind_patterns) do
      for kind in text:gmatch(pat) do c.word("error kind", kind) end
    end
  end
  for _, file in ipairs(list_files({ "lua/loom" }, ".lua")) do
    local text = read_file(file)
    for _, pat in ipairs(kind_patterns) do
      for kind in text:gmatch(pat) do c.word("error kind", kind) end
    end
  end
  local my = read_file("core/db/mysql/my_sql.c") or ""
  for key in my:gmatch('KEY%("([%w_-]+)"%)') do c.word("MySQL URL option", key) end
  for _, file in ipairs(list_files({ "scripts", "spec", "examples" }, ".lua", ".sh")) do
    local text = read_file(file)
    for var in text:gmatch('getenv%("(LOOM_[%u%d_]+)"%)') do c.word("environment variable", var) end
    if file:match("%.sh$") then
      for var in text:gmatch('%${?(LOOM_[%u%d_]+)') do c.word("environment variable", var) end
    end
  end
end

-- What the loaded module offers, found by using it.
local function from_runtime(c, loom)
  require "loom.db" -- loaded on first use: now, so that it is listed
  require "loom.thread" -- likewise
  require "loom.http" -- likewise (its engine, libcurl, loads on the first request)
  for _, name in ipairs(sorted_keys(loom)) do
    local v = loom[name]
    c.add("loom function", { "loom." .. name })
    if type(v) == "table" and name ~= "null" then
      for _, sub in ipairs(sorted_keys(v)) do
        c.add("loom." .. name .. " function", { "loom." .. name .. "." .. sub })
      end
    end
  end
  c.fields("loom.stats() field", loom.stats())

  -- The sync objects, before any task runs: they are plain userdata.
  c.object("channel", loom.channel())
  c.object("semaphore", loom.semaphore(1))
  c.object("mutex", loom.mutex())
  c.object("event", loom.event())
  c.object("waitgroup", loom.waitgroup())

  loom.run(function()
    -- Tasks, and the statuses a task goes through.
    local statuses = {}
    local t = loom.spawn(function() loom.sleep(0) end)
    statuses[t:status()] = true
    loom.yield()
    statuses[t:status()] = true
    t:join()
    statuses[t:status()] = true
    local f = loom.spawn(error, "failed on purpose")
    local err = caught(f.join, f)
    statuses[f:status()] = true
    c.fields("task error field", type(err) == "table" and err or {})
    local k = loom.spawn(loom.sleep, 10)
    loom.yield()
    k:cancel("cancelled on purpose")
    c.fields("cancelled error field", caught(k.join, k))
    statuses[k:status()] = true
    c.object("task", t)
    for s in pairs(statuses) do c.word("task status", s) end
    c.fields("argument error field", caught(loom.sleep, -1))

    -- Structured concurrency.
    loom.group(function(g) g:spawn(function() end); c.object("group", g) end)
    local failed_group
    caught(loom.group, function(g)
      failed_group = g
      g:spawn(error, "child failed on purpose")
    end)
    c.object("group", failed_group)
    local results = loom.map({ 1, 2 }, function(x) return x end, spy(c, "loom.map option"))
    c.fields("loom.map result field", results)
    loom.each({ 1 }, function() end, spy(c, "loom.each option"))
    c.fields("loom.all result field", (loom.all(function() return 1 end)))
    c.fields("all_failed error field", caught(loom.first, function() error("a") end))
    c.fields("timeout error field", caught(loom.timeout, 0, loom.sleep, 1))
    c.fields("wait timeout error field", caught(loom.event().wait, loom.event(), 0))

    -- Resilience.
    local lazy = loom.lazy(function() return 1 end)
    lazy:get()
    c.object("lazy", lazy)
    loom.retry(function() end, spy(c, "loom.retry option"))
    c.fields("retry error field", caught(loom.retry, function() error({}) end, { backoff = 0, attempts = 2 }))
    local states = {}
    local opts = { failures = 1, reset_after = 0.001, on_change = function(new) states[new] = true end,
                   failure_on = function() return true end }
    local br = loom.breaker(spy(c, "loom.breaker option", opts))
    states[br:state()] = true
    pcall(br.call, br, error, "failed on purpose")
    c.fields("breaker_open error field", caught(br.call, br, function() end))
    loom.sleep(0.01)
    states[br:state()] = true
    br:call(function() end)
    c.object("breaker", br)
    for s in pairs(states) do c.word("breaker state", s) end

    -- Worker threads.
    local tp = loom.thread.pool(spy(c, "loom.thread.pool option", { size = 1 }))
    tp:map({ 1 }, function(x) return x end, spy(c, "pool:map option"))
    loom.thread.map({ 1 }, function(x) return x end, spy(c, "loom.thread.map option"))
    c.fields("pool:stats() field", tp:stats())
    c.object("thread pool", tp)
    tp:close()
    c.object("thread channel", loom.thread.channel(1))

    -- Pipelines.
    local p = loom.pipeline({ 1, 2, 3 })
    p:map(function(x) return x end, spy(c, "pipeline map option")):filter(function() return true end,
      spy(c, "pipeline filter option")):collect()
    c.object("pipeline", p)

    -- Databases, on SQLite (no server needed): a file, so that a second
    -- handle's write shows up as a gap in db:changes().
    local path = os.tmpname()
    local function remove_db()
      for _, suffix in ipairs({ "", "-wal", "-shm", "-journal" }) do os.remove(path .. suffix) end
    end
    local pool = spy(c, "pool option", { readers = 1 })
    local db = loom.db.open("sqlite:" .. path, spy(c, "loom.db.open option", { pool = pool }))
    local ok, e = pcall(function()
      db:exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
      local _, info = db:query("INSERT INTO t (name) VALUES (?)", "a")
      c.fields("query info field", info)
      c.fields("query info field", select(2, db:query("SELECT 1 AS one")))
      c.fields("query error field", caught(db.exec, db, "INSERT INTO t (name) VALUES ('a')"))
      c.fields("query error field", caught(db.query, db, "SELEC 1"))
      c.fields("query error field", caught(db.exec, db, "SELECT 1; SELEC 2"))
      c.fields("batch error field", caught(db.batch, db, { { "SELECT 1" }, { "SELEC 2" } }))
      c.fields("insert_many error field", caught(db.insert_many, db, "t", { "name" }, { { "b" }, { "a" } }))
      c.fields("db:stats() field", db:stats())
      db:transaction(function(tx)
        c.object("session", tx)
        tx:savepoint(function() end)
      end, spy(c, "db:transaction option"))
      db:lock("k", function() end, spy(c, "db:lock option"))
      local s = db:acquire()
      c.object("session", s)
      s:release()
      c.object("session", s)
      local changes = db:changes(spy(c, "db:changes option", { poll = 0.01 }))
      db:exec("INSERT INTO t (name) VALUES ('c')")
      c.fields("db:changes() item field", changes:recv())
      local other = loom.db.open("sqlite:" .. path)
      other:exec("INSERT INTO t (name) VALUES ('d')")
      other:close()
      local gap = loom.timeout(10, function()
        while true do
          local item = changes:recv()
          if item.gap then return item end
        end
      end)
      c.fields("db:changes() item field", gap)
      changes:close()
      c.object("db", db)
    end)
    db:close()
    c.object("db", db)
    remove_db()
    if not ok then error(e, 0) end
  end)
end

-- The servers' own error fields and notifications, when there is a server.
local function from_servers(c, loom)
  local pg_url, my_url = os.getenv("LOOM_PG_URL"), os.getenv("LOOM_MYSQL_URL")
  if pg_url and pg_url ~= "" then
    loom.run(function()
      local db = loom.db.open(pg_url)
      local ok, e = pcall(function()
        c.fields("query error field", caught(db.query, db, "SELECT nonexistent_function_of_loom(1)"))
        c.fields("query error field", caught(db.query, db, "SELECT 1 FROM (VALUES (1)) v(x) WHERE y = 1"))
        c.fields("query error field", caught(db.exec, db, "CREATE TEMP TABLE loom_ref (id int PRIMARY KEY); "
          .. "INSERT INTO loom_ref VALUES (1); INSERT INTO loom_ref VALUES (1)"))
        local ch = db:listen("loom_reference", spy(c, "db:listen option"))
        db:notify("loom_reference", "hello")
        c.fields("db:listen() item field", loom.timeout(10, ch.recv, ch))
        ch:close()
      end)
      db:close()
      if not ok then error(e, 0) end
    end)
  end
  if my_url and my_url ~= "" then
    loom.run(function()
      local db = loom.db.open(my_url)
      local ok, e = pcall(function()
        c.fields("query error field", caught(db.query, db, "SELEC 1"))
        c.fields("query error field", caught(db.exec, db, "SELECT 1; SELEC 2"))
      end)
      db:close()
      if not ok then error(e, 0) end
    end)
  end
end

---------------------------------------------------------------- checking
-- The text of the code in a Markdown document: fenced blocks and `spans`.
function M.code_text(md)
  local parts = {}
  md = md:gsub("```[^\n]*\n(.-)```", function(block)
    parts[#parts + 1] = block
    return ""
  end)
  for span in md:gmatch("`([^`\n]+)`") do parts[#parts + 1] = span end
  return table.concat(parts, "\n")
end

-- needle occurs in text, not as part of a longer name.
local function mentions(text, needle)
  local i = 1
  while true do
    local a, b = text:find(needle, i, true)
    if not a then return false end
    local before, after = text:sub(a - 1, a - 1), text:sub(b + 1, b + 1)
    if not before:match("[%w_]") and not after:match("[%w_]") then return true end
    i = a + 1
  end
end

-- Every public name found, as { what =, needles = }.
function M.collect(loom)
  local c = collector()
  from_runtime(c, loom)
  from_servers(c, loom)
  from_sources(c)
  return c.items
end

-- The items none of whose needles the Markdown text mentions in code, as
-- "needle (what)" lines.
function M.missing(items, markdown)
  local code = M.code_text(markdown)
  local out = {}
  for _, item in ipairs(items) do
    local found = false
    for _, needle in ipairs(item.needles) do
      if mentions(code, needle) then found = true break end
    end
    if not found then out[#out + 1] = item.needles[1] .. " (" .. item.what .. ")" end
  end
  return out
end

function M.docs()
  return (read_file("docs/REFERENCE.md") or "") .. "\n" .. (read_file("README.md") or "")
end

if arg and arg[0] and arg[0]:match("check%-reference%.lua$") then
  local build = os.getenv("LOOM_BUILD_DIR") or "build"
  package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
  package.cpath = build .. "/?.so;" .. package.cpath
  local items = M.collect(require "loom")
  local missing = M.missing(items, M.docs())
  for _, line in ipairs(missing) do print("undocumented: " .. line) end
  print(("%d public names, %d undocumented"):format(#items, #missing))
  os.exit(#missing == 0 and 0 or 1)
end

return M
