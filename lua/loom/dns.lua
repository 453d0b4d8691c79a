-- loom.dns: name lookups on libuv's resolver (lua/io/dns.c), off the loop.
--
--   loom.dns.resolve(name, {family = "inet" | "inet6", timeout = s})
--     -> {{address = "127.0.0.1", family = "inet"}, ...}
--
-- Every address, in the system's order of preference; a name that does not
-- resolve is an error of kind `dns` with getaddrinfo's code ("EAI_NONAME").
local core = require "loom.core"
local loom = require "loom"

local dns = {}

function dns.resolve(name, opts)
  if type(name) ~= "string" or name == "" then
    loom.error("argument", ("bad argument #1 to 'loom.dns.resolve' (name string expected, got %s)")
      :format(name == "" and "an empty string" or type(name)))
  end
  if opts ~= nil and type(opts) ~= "table" then
    loom.error("argument", ("bad argument #2 to 'loom.dns.resolve' (options table expected, got %s)")
      :format(type(opts)))
  end
  if name:find("\0", 1, true) then
    -- The resolver would read the name up to the NUL: another name.
    loom.error("argument", "bad argument #1 to 'loom.dns.resolve' (a name has no NUL byte)")
  end
  opts = opts or {}
  local timeout = opts.timeout
  if timeout ~= nil and not (type(timeout) == "number" and timeout >= 0) then
    loom.error("argument", "bad argument #2 to 'loom.dns.resolve' (timeout must be a non-negative number of seconds)")
  end
  local family = opts.family
  if family ~= nil and family ~= "inet" and family ~= "inet6" then
    loom.error("argument", "bad argument #2 to 'loom.dns.resolve' (family must be \"inet\" or \"inet6\")")
  end
  local all = core._dns_resolve(name, opts.timeout)
  if not family then return all end
  local some = {}
  for _, a in ipairs(all) do
    if a.family == family then some[#some + 1] = a end
  end
  if #some == 0 then
    loom.error("dns", ("resolve %s: no %s address"):format(name, family), { code = "EAI_NONAME" })
  end
  return some
end

loom.dns = dns
return dns
