-- with(fn, ...) helpers for the sync primitives: the lock is released when fn
-- returns, raises or is cancelled.
return function(loom)
  local function add(object, name, fn)
    getmetatable(object).__index[name] = fn
  end

  add(loom.semaphore(1), "with", function(self, fn, ...)
    local _ <close> = self:acquire()
    return fn(...)
  end)

  add(loom.mutex(), "with", function(self, fn, ...)
    local _ <close> = self:lock()
    return fn(...)
  end)
end
