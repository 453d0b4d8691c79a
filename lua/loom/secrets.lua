-- Passwords that must never show: the parts of a URL that may be one,
-- and errors and text scrubbed of them. loom.db (connection URLs) and
-- loom.http (request URLs) share it.
local find = string.find

local secrets = {}

local function percent_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The parts of a connection URL that may be a password. Parsers disagree
-- about malformed URLs (one client library ends the user info at the
-- first '@', another at the last) and a driver or server may echo any part of
-- one in an error, so all that could be meant as a password counts:
-- what follows the first ':' up to each '@' after it, a "port" that is no
-- number (the '@' left out), and password= values; each as written and
-- percent-decoded. Longest first, so a longer one is hidden whole.
function secrets.of_url(url)
  local list, seen = {}, {}
  local function add1(v)
    if v ~= "" and not seen[v] then seen[v] = true; list[#list + 1] = v end
  end
  local function add(raw)
    for _, v in ipairs({ raw, percent_decode(raw) }) do
      add1(v)
      local cut = v:find("\0", 1, true) -- C text ends there
      if cut then add1(v:sub(1, cut - 1)) end
    end
  end
  local rest = url:match("^%s*%a[%w+.-]*:/*(.*)$") or url
  local colon = rest:find(":", 1, true)
  if colon then
    for at in rest:gmatch("()@") do
      if at > colon then add(rest:sub(colon + 1, at - 1)) end
    end
  end
  local authority = rest:match("^[^/?#]*")
  if not authority:find("@", 1, true) then
    local port = authority:match(":([^:]*)$")
    if port and not port:match("^%d*$") then add(port) end
  end
  for v in url:gmatch("[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]%s*=%s*'([^']*)'") do add(v) end
  for v in url:gmatch("[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]%s*=%s*([^&%s']*)") do add(v) end
  table.sort(list, function(a, b) return #a > #b end)
  return list
end

function secrets.scrub(text, list)
  for _, secret in ipairs(list) do
    local out, i = {}, 1
    while true do
      local a, b = find(text, secret, i, true)
      if not a then break end
      out[#out + 1] = text:sub(i, a - 1)
      out[#out + 1] = "***"
      i = b + 1
    end
    if #out > 0 then
      out[#out + 1] = text:sub(i)
      text = table.concat(out)
    end
  end
  return text
end

-- "scheme://user:secret@host/db" -> "scheme://user:***@host/db"
function secrets.redact(url) return secrets.scrub(url, secrets.of_url(url)) end

-- An error (a string, or a table's fields: message, detail and hint
-- unless named) with the secrets of list scrubbed.
local ERROR_FIELDS = { "message", "detail", "hint" }
function secrets.scrub_error(e, list, fields)
  if type(e) == "table" then
    for _, field in ipairs(fields or ERROR_FIELDS) do
      if type(e[field]) == "string" then e[field] = secrets.scrub(e[field], list) end
    end
  elseif type(e) == "string" then
    e = secrets.scrub(e, list)
  end
  return e
end

return secrets
