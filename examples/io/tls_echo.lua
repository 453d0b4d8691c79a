-- A TLS echo server and a client that verifies it, in one script. A
-- throwaway CA and a certificate for localhost are made first with the
-- openssl command (test/tls_certs.sh); a real server is given its own.
-- The client checks the server's certificate against that CA and its name
-- against "localhost", and both sides agree on a protocol by ALPN.
local loom = require "loom"

local dir = os.tmpname()
os.remove(dir)
local here = arg[0]:match("^(.*)/") or "."
assert(os.execute(("bash %s/../../test/tls_certs.sh %s"):format(here, dir)), "openssl is needed")

loom.run(function()
  local srv = loom.tcp.listen("127.0.0.1", 0, function(stream)
    for line in stream:lines() do
      stream:write(line, "\n")
    end
  end, { tls = { cert = dir .. "/server.crt", key = dir .. "/server.key", alpn = { "echo/1" } } })
  print(("TLS echo server on %s port %d"):format(srv.address, srv.port))

  local s <close> = loom.tcp.connect("localhost", srv.port,
    { tls = { ca = dir .. "/ca.crt", alpn = { "echo/1" } } })
  print("verified localhost, ALPN chose " .. s:alpn())
  for i = 1, 3 do
    s:write("secret ", i, "\n")
    print("echoed: " .. s:read("l"))
  end

  -- A client that trusts only the system's CAs refuses this server.
  local ok, err = pcall(loom.tcp.connect, "localhost", srv.port, { tls = true })
  assert(not ok and err.kind == "tls")
  print("without the CA: " .. err.message)

  srv:close(1)
end)
os.execute("rm -rf " .. dir)
print("every line came back encrypted")
