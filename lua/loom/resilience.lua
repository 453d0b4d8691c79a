-- loom.lazy, loom.retry and loom.breaker: the helpers that keep a service
-- standing when what it depends on is slow or failing.
return function(loom)
  local pack, unpack = table.pack, table.unpack

  local function argerror(n, fname, msg)
    loom.error("argument", ("bad argument #%d to '%s' (%s)"):format(n, fname, msg))
  end

  local is_callable = loom._is_callable

  ---------------------------------------------------------------- lazy
  -- lazy:get() computes once, even when many tasks ask at the same time;
  -- a failure is not remembered, so the next get() tries again.
  local Lazy = {}
  Lazy.__index = Lazy

  function loom.lazy(fn)
    if not is_callable(fn) then argerror(1, "loom.lazy", "function expected, got " .. type(fn)) end
    return setmetatable({ fn = fn, state = "empty" }, Lazy)
  end

  function Lazy:get()
    while true do
      if self.state == "ready" then return unpack(self.value, 1, self.value.n) end
      local attempt = self.attempt
      if attempt then
        -- Someone is computing: wait and share their outcome. A computer
        -- that was cancelled leaves the value to the next one to try.
        attempt.done:wait()
        if attempt.failed and not loom.is_error(attempt.err, "cancelled") then
          error(attempt.err, 0)
        end
      else
        attempt = { done = loom.event() }
        self.attempt = attempt
        local r = pack(pcall(self.fn))
        if self.attempt == attempt then -- not reset meanwhile
          self.attempt = nil
          if r[1] then
            self.value = pack(unpack(r, 2, r.n))
            self.state = "ready"
          end
        end
        attempt.failed, attempt.err = not r[1], r[2]
        attempt.done:set()
        if not r[1] then error(r[2], 0) end
        return unpack(r, 2, r.n)
      end
    end
  end

  -- Forgets the value; the next get() computes it afresh. Callers already
  -- waiting on a computation in progress still get its result.
  function Lazy:reset()
    self.state, self.value, self.attempt = "empty", nil, nil
  end

  function Lazy:is_ready() return self.state == "ready" end

  ---------------------------------------------------------------- retry
  local function default_retry_on(err)
    return not (loom.is_error(err, "cancelled") or loom.is_error(err, "argument")
      or loom.is_error(err, "usage"))
  end

  -- loom.retry(fn, {attempts=3, backoff=0.1, factor=2, max_delay=10,
  --   jitter=0.5, retry_on=function(err) -> bool}) -> fn's results.
  -- The delay before attempt k+1 is backoff * factor^(k-1), capped at
  -- max_delay, then randomly shortened by up to `jitter` of itself so that
  -- many clients do not retry in lockstep. Cancellation is never retried.
  function loom.retry(fn, opts)
    if not is_callable(fn) then argerror(1, "loom.retry", "function expected, got " .. type(fn)) end
    opts = opts or {}
    if type(opts) ~= "table" then argerror(2, "loom.retry", "options table expected") end
    local attempts = opts.attempts or 3
    local delay = opts.backoff or 0.1
    local factor = opts.factor or 2
    local max_delay = opts.max_delay or 10
    local jitter = opts.jitter or 0.5
    local retry_on = opts.retry_on or default_retry_on
    if math.type(attempts) ~= "integer" or attempts < 1 then
      argerror(2, "loom.retry", "attempts must be a positive integer")
    end
    -- Written as not (x >= lower) so that NaN, which compares false with
    -- everything, is refused too.
    if type(delay) ~= "number" or not (delay >= 0) then -- luacheck: ignore 581 (NaN)
      argerror(2, "loom.retry", "backoff must be a non-negative number")
    end
    if type(factor) ~= "number" or not (factor >= 1) then -- luacheck: ignore 581 (NaN)
      argerror(2, "loom.retry", "factor must be a number >= 1")
    end
    if type(max_delay) ~= "number" or not (max_delay >= 0) then -- luacheck: ignore 581 (NaN)
      argerror(2, "loom.retry", "max_delay must be a non-negative number")
    end
    if type(jitter) ~= "number" or not (jitter >= 0 and jitter <= 1) then
      argerror(2, "loom.retry", "jitter must be a number from 0 to 1")
    end
    if not is_callable(retry_on) then
      argerror(2, "loom.retry", "retry_on must be a function")
    end
    for attempt = 1, attempts do
      local r = pack(pcall(fn, attempt))
      if r[1] then return unpack(r, 2, r.n) end
      local err = r[2]
      if attempt == attempts or not retry_on(err) or loom.is_error(err, "cancelled") then
        if type(err) == "table" and attempt > 1 then err.attempts = attempt end
        error(err, 0)
      end
      local wait = math.min(delay, max_delay)
      loom.sleep(wait * (1 - jitter * math.random()))
      delay = delay * factor
    end
  end

  ---------------------------------------------------------------- breaker
  -- A circuit breaker: after `failures` failures in a row it opens and
  -- fails calls at once with kind "breaker_open"; after `reset_after`
  -- seconds one probe call is let through (half-open): success closes it,
  -- failure opens it again.
  local Breaker = {}
  Breaker.__index = Breaker

  function loom.breaker(opts)
    opts = opts or {}
    if type(opts) ~= "table" then argerror(1, "loom.breaker", "options table expected") end
    local failures = opts.failures or 5
    local reset_after = opts.reset_after or 30
    if math.type(failures) ~= "integer" or failures < 1 then
      argerror(1, "loom.breaker", "failures must be a positive integer")
    end
    if type(reset_after) ~= "number" or not (reset_after >= 0) then -- luacheck: ignore 581 (refuses NaN)
      argerror(1, "loom.breaker", "reset_after must be a non-negative number")
    end
    for _, name in ipairs { "on_change", "failure_on" } do
      if opts[name] ~= nil and not is_callable(opts[name]) then
        argerror(1, "loom.breaker", name .. " must be a function")
      end
    end
    return setmetatable({
      threshold = failures, reset_after = reset_after, on_change = opts.on_change,
      failure_on = opts.failure_on,
      current = "closed", failures = 0, opened_at = 0, probing = false,
    }, Breaker)
  end

  function Breaker:_set(state)
    if self.current == state then return end
    local old = self.current
    self.current = state
    if self.on_change then self.on_change(state, old) end
  end

  function Breaker:state()
    if self.current == "open" and loom.now() - self.opened_at >= self.reset_after then
      self:_set("half_open")
    end
    return self.current
  end

  function Breaker:_counts(err)
    if loom.is_error(err, "cancelled") then return false end
    if self.failure_on then return self.failure_on(err) end
    return true
  end

  function Breaker:_open()
    self.opened_at = loom.now()
    self.probing = false
    self:_set("open")
  end

  function Breaker:call(fn, ...)
    local state = self:state()
    if state == "open" or (state == "half_open" and self.probing) then
      loom.error("breaker_open", "circuit breaker is open; calls fail fast until it resets",
        { retry_in = math.max(0, self.reset_after - (loom.now() - self.opened_at)) })
    end
    local probe = state == "half_open"
    if probe then self.probing = true end
    local r = pack(pcall(fn, ...))
    if r[1] then
      self.failures = 0
      self.probing = false
      self:_set("closed")
      return unpack(r, 2, r.n)
    end
    local err = r[2]
    if self:_counts(err) then
      self.failures = self.failures + 1
      if probe or self.failures >= self.threshold then self:_open() end
    elseif probe then
      self.probing = false
    end
    error(err, 0)
  end

  function Breaker:reset()
    self.failures, self.probing = 0, false
    self:_set("closed")
  end
end
