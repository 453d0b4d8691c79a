-- The dashboard: three calls to three services in one loom.group, so the
-- page takes as long as the slowest call, not the sum. A failed call
-- cancels the others and is raised; a timeout bounds the whole page.
-- Needs a server: LOOM_HTTP_URL (scripts/example.sh starts a local nginx).
local loom = require "loom"
local base = assert(os.getenv("LOOM_HTTP_URL"), "set LOOM_HTTP_URL (scripts/example.sh does)")

loom.run(function()
  local greeting, lines, chunks
  local started = loom.now()
  loom.timeout(5, loom.group, function(g)
    g:spawn(function() greeting = loom.http.get(base .. "/small.txt").body end)
    g:spawn(function()
      local body = loom.http.get(base .. "/lines.txt").body
      lines = select(2, body:gsub("\n", ""))
    end)
    g:spawn(function()
      local res = loom.http.get(base .. "/chunked", { headers = { Accept = "text/plain" } })
      assert(res.status == 200, "the chunked service answered " .. res.status)
      chunks = select(2, res.body:gsub("\n", ""))
    end)
  end)
  print(("greeting: %s"):format(greeting:gsub("\n$", "")))
  print(("report:   %d lines"):format(lines))
  print(("feed:     %d chunks"):format(chunks))
  assert(greeting == "hello from nginx\n" and lines == 1000 and chunks == 10)
  print(("dashboard ready: 3 panels in %.0f ms"):format((loom.now() - started) * 1000))
end)
