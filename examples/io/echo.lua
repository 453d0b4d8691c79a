-- A TCP echo server and its clients in one script: the server runs a task
-- per connection (loom.tcp.listen), each client a task of its own; the
-- server stops once every client got its answers back.
local loom = require "loom"

loom.run(function()
  -- Port 0: the kernel picks a free one; srv.port says which.
  local srv = loom.tcp.listen("127.0.0.1", 0, function(stream)
    for line in stream:lines() do
      stream:write(line, "\n")
    end
  end)
  print(("echo server on %s port %d"):format(srv.address, srv.port))

  local replies = loom.map({ "alpha", "beta", "gamma" }, function(name)
    local s <close> = loom.tcp.connect("127.0.0.1", srv.port)
    local got = {}
    for i = 1, 3 do
      s:write(name, " ", i, "\n")
      got[i] = s:read("l")
    end
    return table.concat(got, ", ")
  end)
  for _, r in ipairs(replies) do print("client got back: " .. r) end
  assert(replies[2] == "beta 1, beta 2, beta 3")

  srv:close(1) -- stop accepting; handlers still running get 1 s
  print("every client got its lines echoed back")
end)
