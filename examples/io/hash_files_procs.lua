-- Hashing a directory of files with a pool of processes: sha256sum runs
-- once per file through loom.process.run, at most 4 at a time
-- (loom.map's concurrency), while the loop goes on serving a ticker. The
-- files are written and listed with loom.fs, so nothing here blocks.
local loom = require "loom"

loom.run(function()
  local dir = os.tmpname()
  os.remove(dir)
  loom.fs.mkdir(dir .. "/data", { parents = true })
  for i = 1, 16 do
    local chunk = ("file %d line\n"):format(i)
    loom.fs.write(("%s/data/f%02d.txt"):format(dir, i), chunk:rep(2000 * i))
  end

  local ticks = 0
  local ticker = loom.spawn(function()
    while true do loom.sleep(0.005) ticks = ticks + 1 end
  end)

  local names = {}
  for _, e in ipairs(loom.fs.list(dir .. "/data")) do
    if e.type == "file" then names[#names + 1] = dir .. "/data/" .. e.name end
  end
  local running, most = 0, 0
  local sums = loom.map(names, function(path)
    running = running + 1
    most = math.max(most, running)
    local r = loom.process.run("sha256sum", { path }, { timeout = 30 })
    running = running - 1
    assert(r.code == 0, r.stderr)
    return r.stdout:match("^(%x+)")
  end, { concurrency = 4 })
  ticker:cancel()

  -- The same sums from one sha256sum over every file, to check against.
  local all = loom.process.run("sha256sum", names).stdout
  local i = 0
  for sum in all:gmatch("(%x+)  [^\n]+\n") do
    i = i + 1
    assert(sum == sums[i], "sum of " .. names[i])
  end
  assert(i == #names and most <= 4)
  print(("%d files hashed by at most %d sha256sum processes at a time; e.g. %s  %s")
    :format(#sums, most, sums[1]:sub(1, 16) .. "...", names[1]:match("[^/]+$")))
  print(("the loop ticked %d times meanwhile"):format(ticks))

  for _, name in ipairs(names) do loom.fs.remove(name) end
  loom.fs.remove(dir .. "/data")
  loom.fs.remove(dir)
  print("every file hashed by a process pool")
end)
