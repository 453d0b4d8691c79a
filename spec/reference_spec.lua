-- docs/REFERENCE.md (with the README) names every public name loom offers:
-- scripts/check-reference.lua lists them by using loom and reading its
-- sources, and names the ones the documents leave out.
local loom = require "loom"
local check = dofile("scripts/check-reference.lua")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

describe("the reference", function()
  local items
  setup(function() items = check.collect(loom) end)

  it("documents every public name", function()
    local missing = check.missing(items, check.docs())
    assert.are.same({}, missing)
  end)

  it("is checked against what loom really has", function()
    -- Names issue 11 found undocumented, one of each way a name is found:
    -- a module function, a method, a returned field, an error field, an
    -- option read at run time, a state, and names read from the sources.
    local wanted = {
      "loom.stats (loom function)", "sem:available (semaphore method)",
      "lazy:is_ready (lazy method)", "size (db:stats() field)",
      "failed_connects (db:stats() field)", "n (loom.map result field)",
      "batch_index (batch error field)", "failure_on (loom.breaker option)",
      "acquire_timeout (pool option)", "half_open (breaker state)",
      "pool_timeout (error kind)", "sslmode (MySQL URL option)",
      "LOOM_PG_URL (environment variable)",
    }
    local missing = {}
    for _, line in ipairs(check.missing(items, "")) do missing[line] = true end
    for _, line in ipairs(wanted) do
      assert.is_true(missing[line] ~= nil, line .. " is not among the names found")
    end
  end)

  it("names what a document leaves out, and only that", function()
    local docs = check.docs()
    local code = check.code_text(docs)
    assert.is_truthy(code:find("sem:available", 1, true))
    -- The same documents without the entry of sem:available and the
    -- fields of db:stats() that issue 11 found missing.
    local cut = docs:gsub("sem:available", "sem:_"):gsub("failed_connects", "_")
    local missing = check.missing(items, cut)
    table.sort(missing)
    assert.are.same({ "failed_connects (db:stats() field)", "sem:available (semaphore method)" }, missing)
  end)

  it("counts only code as a mention", function()
    local items1 = { { what = "test", needles = { "ch:recv" } } }
    assert.are.same({ "ch:recv (test)" }, check.missing(items1, "ch:recv in prose"))
    assert.are.same({}, check.missing(items1, "in a `ch:recv()` span"))
    assert.are.same({}, check.missing(items1, "```lua\nlocal v = ch:recv()\n```"))
    -- Part of a longer name is not a mention.
    assert.are.same({ "ch:recv (test)" }, check.missing(items1, "`ch:recv_all()`"))
  end)

  it("runs as a script, exiting 0 when nothing is missing", function()
    local build = os.getenv("LOOM_BUILD_DIR") or "build"
    local ok, how, code =
      os.execute(("env LOOM_BUILD_DIR=%q lua5.4 scripts/check-reference.lua >/dev/null"):format(build))
    assert.are.same({ true, "exit", 0 }, { ok, how, code })
    assert.is_truthy(read("README.md"):find("docs/REFERENCE.md", 1, true))
  end)
end)
