-- loom.timeout and loom.shield, on the C core's cancel scopes.
return function(loom, core)
  local new_scope = core._scope

  local is_callable = loom._is_callable

  local function close_with(scope, ok, ...)
    local expired = scope:close()
    if ok then return ... end
    local err = ...
    if expired and type(err) == "table" and err.scope == scope:id() then
      err.scope = nil
    end
    error(err, 0)
  end

  -- Runs fn(...) with a deadline. When it passes, the wait fn is in ends with
  -- an error of kind "timeout", and so does every later wait until fn is
  -- out of the scope, so the work inside is really stopped.
  function loom.timeout(seconds, fn, ...)
    if type(seconds) ~= "number" then
      loom.error("argument", "bad argument #1 to 'loom.timeout' (non-negative number of seconds expected, got "
        .. type(seconds) .. ")")
    end
    if not (seconds >= 0) then -- luacheck: ignore 581 (refuses NaN too)
      loom.error("argument", "bad argument #1 to 'loom.timeout' (non-negative number of seconds expected, got "
        .. tostring(seconds) .. ")")
    end
    if not is_callable(fn) then
      loom.error("argument", "bad argument #2 to 'loom.timeout' (function expected, got " .. type(fn) .. ")")
    end
    local scope = new_scope(seconds)
    return close_with(scope, pcall(fn, ...))
  end

  -- Runs fn(...) out of reach of the timeouts, group cancellations and
  -- task:cancel() around it: for cleanup that must wait (a rollback,
  -- closing a connection, letting children finish). A cancel of the task
  -- lands at its first wait after the shield. Timeouts opened inside it
  -- still apply.
  function loom.shield(fn, ...)
    if not is_callable(fn) then
      loom.error("argument", "bad argument #1 to 'loom.shield' (function expected, got " .. type(fn) .. ")")
    end
    local scope = new_scope(nil, true)
    return close_with(scope, pcall(fn, ...))
  end

  -- A scope that can be cancelled by hand (loom.group uses one for its body).
  loom._cancel_scope = function() return new_scope(nil) end
  loom._close_scope = close_with
end
