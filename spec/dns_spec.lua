-- loom.dns.resolve on libuv's resolver (lua/io/dns.c, lua/loom/dns.lua).
-- Only names this machine answers itself: localhost and numeric addresses.
local loom = require "loom"
local child = require "spec.support.child"
local support = dofile("spec/support/io.lua")
local within, expect_error = support.within, support.expect_error

describe("loom.dns.resolve", function()
  it("lists a name's addresses with their family", function()
    within(10, function()
      local found = false
      for _, a in ipairs(loom.dns.resolve("localhost")) do
        assert.truthy(a.family == "inet" or a.family == "inet6")
        if a.address == "127.0.0.1" then found = (a.family == "inet") end
      end
      assert.is_true(found)
    end)
  end)

  it("gives a numeric address back as it is", function()
    within(10, function()
      assert.same({ { address = "::1", family = "inet6" } }, loom.dns.resolve("::1"))
      assert.same({ { address = "127.0.0.1", family = "inet" } }, loom.dns.resolve("127.0.0.1"))
    end)
  end)

  it("keeps the family asked for", function()
    within(10, function()
      assert.same({ { address = "127.0.0.1", family = "inet" } }, loom.dns.resolve("127.0.0.1", { family = "inet" }))
      local err = expect_error("dns", loom.dns.resolve, "127.0.0.1", { family = "inet6" })
      assert.equal("EAI_NONAME", err.code)
    end)
  end)

  it("raises kind dns with getaddrinfo's code for a name that does not resolve", function()
    within(10, function()
      local err = expect_error("dns", loom.dns.resolve, "no-such-host.invalid")
      assert.truthy(err.code:match("^EAI_"), err.code)
      assert.truthy(err.message:find("no-such-host.invalid", 1, true))
    end)
  end)

  it("resolves while other tasks run, and outside any task", function()
    within(10, function()
      local ticks = 0
      local ticker = loom.spawn(function() while true do loom.yield(); ticks = ticks + 1 end end)
      for _ = 1, 20 do loom.dns.resolve("localhost") end
      ticker:cancel()
      assert.is_true(ticks > 0)
    end)
    assert.equal("127.0.0.1", loom.dns.resolve("127.0.0.1")[1].address)
  end)

  it("loads on first use, with loom.tcp and loom.unix: require \"loom\" loads none of them", function()
    local ok, out = child.run([[
      local loom = require "loom"
      for _, m in ipairs({ "dns", "tcp", "unix", "server" }) do
        assert(package.loaded["loom." .. m] == nil, m .. " loaded by require 'loom'")
      end
      assert(loom.dns.resolve and loom.tcp.connect and loom.unix.listen)
      assert(package.loaded["loom.tcp"] == loom.tcp and package.loaded["loom.server"])
      print("lazy")
    ]], 20)
    assert.is_true(ok, out)
    assert.equal("lazy\n", out)
  end)

  it("checks its arguments", function()
    expect_error("argument", loom.dns.resolve, 42)
    expect_error("argument", loom.dns.resolve, "")
    expect_error("argument", loom.dns.resolve, "localhost", 1)
    expect_error("argument", loom.dns.resolve, "localhost", { family = "ipx" })
  end)
end)
