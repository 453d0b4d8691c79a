-- A streaming download into a file: the body arrives piece by piece and
-- goes to disk as it comes; the transfer pauses while the reader is
-- behind, so memory holds one buffer, not the file.
-- Needs a server: LOOM_HTTP_URL (scripts/example.sh starts a local nginx).
local loom = require "loom"
local base = assert(os.getenv("LOOM_HTTP_URL"), "set LOOM_HTTP_URL (scripts/example.sh does)")

local path = os.tmpname()

loom.run(function()
  local res <close> = loom.http.get(base .. "/large.bin", { stream = true, buffer = 128 * 1024, timeout = 60 })
  assert(res.status == 200, "the server answered " .. res.status)
  local expected = tonumber(res.headers["content-length"])
  local out = assert(io.open(path, "wb"))
  local written, most = 0, 0
  for piece in function() return res:read(64 * 1024) end do
    out:write(piece)
    written = written + #piece
    most = math.max(most, res:buffered())
  end
  out:close()
  assert(written == expected, ("wrote %d of %d bytes"):format(written, expected))
  local f = assert(io.open(path, "rb"))
  local size = f:seek("end")
  f:close()
  os.remove(path)
  assert(size == expected)
  print(("downloaded %d bytes; at most %d KiB waited in memory for the reader"):format(size, most // 1024))
end)
