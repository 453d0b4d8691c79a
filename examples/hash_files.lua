-- Hashing a directory of files on worker threads: each job reads a file
-- with plain blocking io (io.open():read("a")) and hashes it in Lua, so
-- both the disk wait and the CPU work stay off the loop.
local loom = require "loom"

-- A directory of files to hash, made here.
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local names = {}
for i = 1, 24 do
  local name = ("%s/file-%02d.bin"):format(dir, i)
  local f = assert(io.open(name, "wb"))
  local parts = {}
  for j = 1, 2000 + i * 100 do parts[j] = string.char((i * 31 + j * 7) % 256) end
  f:write(table.concat(parts):rep(8))
  f:close()
  names[#names + 1] = name
end

-- FNV-1a, 32 bits: plain Lua, a function the workers receive as a copy.
local function hash_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  local h = 2166136261
  for i = 1, #data do
    h = ((h ~ data:byte(i)) * 16777619) & 0xffffffff
  end
  return { path = path, size = #data, fnv = ("%08x"):format(h) }
end

loom.run(function()
  local ticks = 0
  local ticker = loom.spawn(function()
    while true do loom.sleep(0.005); ticks = ticks + 1 end
  end)
  local results = loom.thread.map(names, hash_file, { chunk = 3 })
  ticker:cancel()

  local bytes = 0
  for i, r in ipairs(results) do
    assert(r.path == names[i], "results in input order")
    assert(r.fnv == hash_file(names[i]).fnv, "same hash as in this state")
    bytes = bytes + r.size
  end
  print(("hashed %d files (%d bytes), e.g. %s  %s; the loop ticked %d times meanwhile")
    :format(#results, bytes, results[1].fnv, results[1].path:match("[^/]+$"), ticks))
  assert(ticks > 0, "the loop kept running")
end)

for _, name in ipairs(names) do os.remove(name) end
os.remove(dir)
print("every file hashed off the loop")
