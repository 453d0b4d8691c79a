-- A crawler: pages fetched at most four at a time (loom.map's
-- concurrency), each retried with exponential backoff when the server is
-- busy (a 503) or the connection fails, and given up after a few tries.
-- Needs a server: LOOM_HTTP_URL (scripts/example.sh starts a local nginx),
-- whose /flaky/K answers 503 to its first requests.
local loom = require "loom"
local base = assert(os.getenv("LOOM_HTTP_URL"), "set LOOM_HTTP_URL (scripts/example.sh does)")

local run_id = tostring(os.time()) .. tostring(math.random(1e6))
local pages = {
  "/small.txt", "/lines.txt", "/chunked", "/redirect/2",
  ("/flaky/a%s?fail=1"):format(run_id), ("/flaky/b%s?fail=2"):format(run_id),
  ("/flaky/c%s?fail=9"):format(run_id), "/missing.txt",
}

local attempts, running, most = 0, 0, 0

-- One page: a 5xx or a transport failure is worth another try, a 4xx not.
local function fetch(path)
  return loom.retry(function()
    attempts = attempts + 1
    running = running + 1
    most = math.max(most, running)
    local ok, res = pcall(loom.http.get, base .. path, { follow = 3, timeout = 5 })
    running = running - 1
    if not ok then error(res, 0) end
    if res.status >= 500 then loom.error("busy", ("%s answered %d"):format(path, res.status)) end
    return res
  end, { attempts = 4, backoff = 0.01, factor = 2, jitter = 0.5 })
end

loom.run(function()
  local results = loom.map(pages, function(path)
    local ok, res = pcall(fetch, path)
    if not ok then return ("%-32s gave up: %s"):format(path, res.message or tostring(res)) end
    return ("%-32s %d, %d bytes"):format(path, res.status, #res.body)
  end, { concurrency = 4 })
  for _, line in ipairs(results) do print(line) end
  assert(most <= 4, "never more than 4 requests at once")
  assert(attempts == #pages + 1 + 2 + 3, "retries as the server's failures asked")
  print(("crawled %d pages in %d requests, at most %d at once"):format(#pages, attempts, most))
end)
