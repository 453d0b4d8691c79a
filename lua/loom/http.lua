-- loom.http: an HTTP client on libcurl, driven by loom's own loop. Loaded
-- on the first use of loom.http; its engine (the loom.curl module, which
-- links libcurl) on the first request. The transfer object and its waits
-- are lua/http.c's, curl's side is core/http/.
local core = require "loom.core"
local loom = require "loom"
local passwords = require "loom.secrets"

local http = {}

-- What a transfer's wait reports (core/http/http.h, LOOM_HTTP_EV_*).
local HEAD, DATA, SEND, DONE = 1, 2, 4, 8
local HIGH_WATER = 256 * 1024 -- body buffered ahead of a streaming reader
local READ_CHUNK = 64 * 1024  -- what an upload asks a stream for at a time
local FOLLOW_DEFAULT = 10     -- follow = true
local versions = { ["1.1"] = 11, ["2"] = 0, h2c = 20 }
local version_names = { [10] = "1.0", [11] = "1.1", [20] = "2", [30] = "3" }

local engine
local function get_engine()
  if engine == nil then
    local ok, e = pcall(require, "loom.curl")
    if not ok then
      loom.error("http", "loom was built without its HTTP client (the build option "
        .. "LOOM_WITH_HTTP=ON builds it on libcurl): " .. tostring(e))
    end
    engine = e
  end
  return engine
end

local function argerror(fname, name, msg)
  loom.error("argument", ("bad argument '%s' to 'loom.http.%s' (%s)"):format(name, fname, msg))
end

local function expect(fname, name, value, want, optional)
  local got = type(value)
  if got == want or (optional and value == nil) then return value end
  argerror(fname, name, ("%s expected, got %s"):format(want, got))
end

-- A header name's or a method's characters (RFC 9110's token): nothing
-- curl would send as another header or cut short at a NUL.
local TOKEN = "^[%w!#$%%&'*+.^_`|~-]+$"

-- Headers to send, as curl takes them: "Name: value" lines. A list value
-- sends the header once per element.
local function header_lines(fname, headers)
  local lines = {}
  for name, value in pairs(headers) do
    if type(name) ~= "string" or not name:find(TOKEN) then
      argerror(fname, "headers", ("bad header name %q"):format(tostring(name)))
    end
    local list = type(value) == "table" and value or { value }
    for _, v in ipairs(list) do
      if type(v) ~= "string" and type(v) ~= "number" then
        argerror(fname, "headers", ("the value of %s must be a string, got %s"):format(name, type(v)))
      end
      v = tostring(v)
      if v:find("[\r\n]") then argerror(fname, "headers", ("the value of %s spans lines"):format(name)) end
      -- curl takes C strings: a NUL would cut the value short unseen.
      if v:find("\0", 1, true) then argerror(fname, "headers", ("the value of %s holds a NUL byte"):format(name)) end
      -- "Name:" alone would tell curl to drop the header: "Name;" sends it empty.
      lines[#lines + 1] = v == "" and name .. ";" or name .. ": " .. v
    end
  end
  return lines
end

-- A userdata need not be indexable: asking it for read must not raise.
local function has_read(body)
  local ok, read = pcall(function() return body.read end)
  return ok and read ~= nil
end

-- The request's body as the engine takes it: a string whole, anything
-- else pulled chunk by chunk (a function returning chunks then nil, or a
-- stream with read(n)).
local function body_source(fname, body)
  if body == nil or type(body) == "string" then return nil end
  if loom._is_callable(body) then return body end
  if (type(body) == "table" or type(body) == "userdata") and has_read(body) then
    return function() return body:read(READ_CHUNK) end
  end
  argerror(fname, "body", ("string, function or stream expected, got %s"):format(type(body)))
end

-- A string curl takes as a C string: a NUL would cut it short unseen.
local function c_string(fname, name, value, optional)
  expect(fname, name, value, "string", optional)
  if value and value:find("\0", 1, true) then argerror(fname, name, "holds a NUL byte") end
  return value
end

-- Seconds: positive; NaN is no number of seconds (huge ones mean none).
local function seconds(fname, name, value)
  expect(fname, name, value, "number", true)
  if value and (value <= 0 or value ~= value) then argerror(fname, name, "must be a positive number of seconds") end
  return value
end

local function options(fname, o)
  expect(fname, "opts", o, "table")
  local url = c_string(fname, "url", o.url)
  local method = expect(fname, "method", o.method, "string", true) or (o.body ~= nil and "POST" or "GET")
  if not method:find("^%u+$") then method = method:upper() end
  if not method:find(TOKEN) then argerror(fname, "method", ("bad method %q"):format(method)) end
  local timeout = seconds(fname, "timeout", o.timeout)
  local connect_timeout = seconds(fname, "connect_timeout", o.connect_timeout)
  local follow = o.follow
  if follow == true then follow = FOLLOW_DEFAULT
  elseif follow == nil or follow == false then follow = 0
  elseif math.type(follow) ~= "integer" or follow < 0 then
    argerror(fname, "follow", "a count of redirects (or true/false) expected")
  end
  local version = o.version
  if version ~= nil then
    version = versions[tostring(version)]
    if version == nil then argerror(fname, "version", 'expected "1.1", "2" or "h2c"') end
  end
  local pull = body_source(fname, o.body)
  local verify = o.verify
  if verify ~= nil and type(verify) ~= "boolean" then argerror(fname, "verify", "boolean expected") end
  local stream = expect(fname, "stream", o.stream, "boolean", true)
  local high_water = o.buffer or HIGH_WATER
  if math.type(high_water) ~= "integer" or high_water < 1 then
    argerror(fname, "buffer", "a positive count of bytes expected")
  end
  return {
    method = method, url = url,
    headers = header_lines(fname, expect(fname, "headers", o.headers, "table", true) or {}),
    body = not pull and o.body or nil, body_pull = pull ~= nil,
    timeout = timeout, connect_timeout = connect_timeout, follow = follow, version = version,
    verify = verify ~= false, cafile = c_string(fname, "cafile", o.cafile, true),
    high_water = stream and high_water or 0,
  }, pull, stream
end

-- The loom error for a transfer that failed: kind "timeout" when curl's
-- time ran out, else "http", with curl's code name and reason.
local function raise_failed(x, o)
  local name, reason = x:result()
  if not name then return end
  if name == "aborted" then loom.error("closed", "the HTTP response was closed") end
  -- A password in the URL never shows, wherever curl's words echo it.
  local hidden = passwords.of_url(o.url)
  local url = passwords.scrub(o.url, hidden)
  reason = passwords.scrub(reason, hidden)
  loom.error(name == "CURLE_OPERATION_TIMEDOUT" and "timeout" or "http",
    ("%s %s: %s (%s)"):format(o.method, url, reason, name),
    { code = name, reason = reason, url = url, method = o.method })
end

-- Response headers: lower-cased names with their first value; any other
-- case finds them too (res.headers["Content-Type"]). Every value of a
-- repeated header: res:header_all(name).
local function parse_headers(block)
  local first, all = {}, {}
  for line in block:gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
    if name then
      name = name:lower()
      local list = all[name]
      if list then list[#list + 1] = value
      else
        all[name] = { value }
        first[name] = value
      end
    end
  end
  return setmetatable(first, { __index = function(t, k)
    if type(k) == "string" then return rawget(t, k:lower()) end
  end }), all
end

local Response = {}
Response.__index = Response

function Response:__tostring()
  return ("loom.http response %d (%s)"):format(self.status, self.url)
end

-- Every value the response had for the header name, in order ({} if none).
function Response:header_all(name)
  local list = self._all[tostring(name):lower()]
  return list and table.move(list, 1, #list, 1, {}) or {}
end

-- Waits for more of a streamed body; false once there is no more (and
-- raises then if the transfer failed).
local function more(self)
  local x = self._x
  local n, done = x:buffered()
  if not done then
    x:wait(DATA)
    local m
    m, done = x:buffered()
    if m > n or not done then return true end
  end
  raise_failed(x, self._opts)
  return false
end

-- Waits until n bytes are buffered (false: the body ended first). A
-- read may want more than the buffer option lets the transfer hold ahead:
-- it goes on for that read rather than pause short of it for good.
local function fill(self, n)
  local x = self._x
  while x:buffered() < n do
    x:want(n)
    if not more(self) then return false end
  end
  return true
end

local function read_line(self, keep)
  local x = self._x
  while true do
    local at = x:find("\n")
    if at then
      local line = x:take(at)
      return keep and line or line:sub(1, -2):gsub("\r$", "")
    end
    if not fill(self, x:buffered() + 1) then
      local rest = x:take()
      if rest == "" then return nil end
      return rest
    end
  end
end

-- res:read(n | "a" | "l" | "L"), as a file's read: a streamed body in
-- pieces (nil at its end; "a" gives "" there). The transfer resumes as the
-- reader drains what was buffered, so a slow reader holds memory bounded.
function Response:read(fmt)
  local x = self._x
  if not x then
    if self.body ~= nil then loom.error("usage", "this response is not streamed: its body is res.body") end
    loom.error("closed", "the HTTP response was closed")
  end
  fmt = fmt or "l"
  if math.type(fmt) == "integer" then
    if fmt < 0 then argerror("read", "n", "must not be negative") end
    -- read(0), as a file's: "" unless the body is at its end.
    fill(self, math.max(fmt, 1))
    local s = x:take(fmt)
    if s == "" and x:buffered() == 0 then return nil end
    return s
  end
  fmt = type(fmt) == "string" and fmt:gsub("^%*", "") or fmt
  if fmt == "a" then
    fill(self, math.maxinteger)
    return x:take()
  elseif fmt == "l" or fmt == "L" then
    return read_line(self, fmt == "L")
  end
  argerror("read", "format", ('"a", "l", "L" or a byte count expected, got %s'):format(tostring(fmt)))
end

-- Bytes of a streamed body received and not read yet: at most about the
-- buffer option (256 KiB by default) plus what one network read brings.
function Response:buffered()
  return self._x and (self._x:buffered()) or 0
end

function Response:lines(fmt)
  return function() return self:read(fmt or "l") end
end

-- Stops the transfer of a streamed body and frees it (also when the
-- response is collected, or leaves a to-be-closed variable's scope).
function Response:close()
  if self._x then self._x:close() end
  self._x = nil
end
Response.__close = Response.close

local function pump(x, pull, want)
  while true do
    local ev = x:wait(want)
    if ev & SEND ~= 0 then
      local chunk
      -- An empty chunk is no chunk; asking again at once, a body that
      -- only ever gives "" would spin past every timeout and cancel.
      chunk = pull()
      while chunk == "" do
        loom.yield()
        chunk = pull()
      end
      if chunk ~= nil and type(chunk) ~= "string" then
        loom.error("argument", ("the request body gave a %s, not a string"):format(type(chunk)))
      end
      x:feed(chunk)
    end
    if ev & (DONE | (want & HEAD)) ~= 0 then return end
  end
end

-- loom.http.request{method =, url =, headers =, body =, timeout =, ...}:
-- the response once its headers are in and, unless stream = true, its
-- whole body. A status of 4xx or 5xx is a response too; an error is a
-- request that got none.
local function request(fname, o)
  local opts, pull, stream = options(fname, o)
  local x = core._http_start(get_engine(), opts)
  local ok, err = pcall(pump, x, pull, stream and (HEAD | SEND) or SEND)
  if not ok then
    x:close()
    error(err, 0)
  end
  if not stream then
    local fine, failure = pcall(raise_failed, x, opts)
    if not fine then
      x:close()
      error(failure, 0)
    end
  elseif x:buffered() == 0 then
    raise_failed(x, opts)
  end
  local status, version, block, url = x:head()
  local headers, all = parse_headers(block)
  local res = setmetatable({
    status = status, version = version_names[version] or tostring(version), headers = headers,
    url = passwords.redact(url or opts.url), _all = all, _opts = opts,
  }, Response)
  if stream then
    res._x = x
  else
    res.body = x:take()
    x:close()
  end
  return res
end

function http.request(o) return request("request", o) end

-- get, post...: request under their own names, in errors too.
local function with(fname, method, url, opts, body)
  expect(fname, "url", url, "string")
  local o = {}
  for k, v in pairs(expect(fname, "opts", opts, "table", true) or {}) do o[k] = v end
  o.method, o.url = method, url
  if body ~= nil then o.body = body end
  return request(fname, o)
end

function http.get(url, opts) return with("get", "GET", url, opts) end
function http.head(url, opts) return with("head", "HEAD", url, opts) end
function http.delete(url, opts) return with("delete", "DELETE", url, opts) end
function http.post(url, body, opts) return with("post", "POST", url, opts, body) end
function http.put(url, body, opts) return with("put", "PUT", url, opts, body) end
function http.patch(url, body, opts) return with("patch", "PATCH", url, opts, body) end

-- Counters of this state's client, for tests and leak checks: transfers
-- not freed, easy handles serving one and kept idle, sockets polled.
function http.stats()
  return core._http_stats() or { transfers = 0, easy_live = 0, easy_idle = 0, sockets = 0 }
end

return http
