-- A line-protocol chat over TCP: each connection's lines go to every other
-- one through a broadcast channel (a loom.channel per member, a task that
-- writes it out). Three scripted clients say hello, talk and leave; the
-- server stops by itself when the last one is gone.
local loom = require "loom"

loom.run(function()
  local members = {} -- name -> channel of lines to send that member
  local everyone_gone = loom.event()
  local room_full = loom.event() -- the script's clients speak once all three are in
  local joined = 0

  local function broadcast(from, line)
    for name, outbox in pairs(members) do
      if name ~= from then outbox:try_send(line) end -- a slow member drops lines, never stalls the room
    end
  end

  local srv = loom.tcp.listen("127.0.0.1", 0, function(stream)
    stream:write("name?\n")
    local name = stream:read("l")
    local outbox = loom.channel(64)
    members[name] = outbox
    joined = joined + 1
    broadcast(name, "* " .. name .. " joined")
    if joined == 3 then room_full:set() end
    -- One task writes what others say; this one reads what this member says.
    local writer = loom.spawn(function()
      for line in outbox:iter() do stream:write(line, "\n") end
    end)
    for line in stream:lines() do
      if line == "/quit" then break end
      broadcast(name, name .. ": " .. line)
    end
    members[name] = nil
    outbox:close()
    writer:join()
    broadcast(name, "* " .. name .. " left")
    if next(members) == nil and joined == 3 then everyone_gone:set() end
  end)

  -- A scripted client: joins, waits for the room to fill, says its lines,
  -- reads until it heard `expect` lines of the others (notices aside), quits.
  local function client(name, lines, expect)
    local s <close> = loom.tcp.connect("127.0.0.1", srv.port)
    assert(s:read("l") == "name?")
    s:write(name, "\n")
    local heard = {}
    local listener = loom.spawn(function()
      for line in s:lines() do
        if not line:match("^%*") then heard[#heard + 1] = line end
        if #heard == expect then return end
      end
    end)
    room_full:wait(30)
    for _, line in ipairs(lines) do s:write(line, "\n") end
    listener:join()
    s:write("/quit\n")
    return heard
  end

  local heard = loom.map({
    { "ann", { "hi all" } },
    { "bob", { "hello ann" } },
    { "cid", { "hey" } },
  }, function(c)
    return client(c[1], c[2], 2) -- each hears the two others speak once
  end)

  for i, who in ipairs({ "ann", "bob", "cid" }) do
    local said = heard[i]
    table.sort(said)
    print(who .. " heard: " .. table.concat(said, " | "))
    assert(#said == 2, who .. " missed a line")
  end

  everyone_gone:wait(30)
  srv:close(1)
  print("chat over: every member heard the other two")
end)
