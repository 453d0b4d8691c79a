-- Structured concurrency: loom.group and what is built on it (map, each,
-- all, first). A group's children never outlive it: it waits for all of
-- them, the first failure cancels the rest (and the group's own body), and
-- that failure is what the group raises.
return function(loom)
  local pack, unpack = table.pack, table.unpack
  local is_callable = loom._is_callable

  local Group = {}
  Group.__index = Group

  local function is_cancel(err)
    return loom.is_error(err, "cancelled")
  end

  function Group:_fail(err, task)
    if self.failure == nil then
      self.failure = { err = err, task = task }
    end
    self:cancel()
  end

  -- Every child that runs reports its failure here, from a <close> guard,
  -- so the rest are cancelled at once. A guard, not a pcall, keeps the
  -- traceback of where the child failed. __close gets nil both when the
  -- child returned and when it raised error(nil), so a child that returns
  -- says so first: nothing can run between that and its guard closing.
  -- A child that ends by a cancel of its own (child:cancel(), as asyncio's
  -- TaskGroup takes a child's own cancel) is no failure, just as a child
  -- cancelled before it started is none; a `cancelled` error the child
  -- caught elsewhere and raised still is one.
  local Guard = {}
  Guard.__index = Guard
  Guard.__close = function(guard, err)
    local returned = guard.returned
    guard.returned = false
    local g = guard.group
    if err == nil and returned then return end
    if is_cancel(err) and (g.cancelled or loom.current():_cancel_requested()) then return end
    g:_fail(err, loom.current())
  end

  local function returned(guard, ...)
    guard.returned = true
    return ...
  end

  local function child_main(guard, fn, ...)
    local _ <close> = guard
    return returned(guard, fn(...))
  end

  -- g:spawn(fn, ...) starts a child task of the group and returns it.
  function Group:spawn(fn, ...)
    if not is_callable(fn) then
      loom.error("argument", "bad argument #1 to 'spawn' (function expected, got " .. type(fn) .. ")")
    end
    if self.closed then
      loom.error("usage", "spawn on a group that has finished")
    end
    if self.cancelled then
      loom.error("cancelled", "spawn on a group that is being cancelled")
    end
    local t = self._counted:_spawn(child_main, self.guard, fn, ...)
    local n = self._nchildren + 1
    self.children[n], self._nchildren = t, n
    return t
  end

  -- g:cancel() stops every child and the group's body.
  function Group:cancel()
    if self.cancelled then return end
    self.cancelled = true
    self.scope:cancel()
    for _, t in ipairs(self.children) do t:cancel() end
  end

  local function finished(t)
    local s = t:status()
    return s ~= "pending" and s ~= "running"
  end

  -- Waits for every child (more may be spawned meanwhile). The children
  -- are counted in g._counted until they end, however they end (a child
  -- cancelled before it started never runs, so no guard of its could say
  -- so): one wait for all of them. When every one returned, that is all,
  -- and true says so. Otherwise (a child failed, the group is cancelled,
  -- the wait was interrupted) each child is joined in turn, which finds
  -- the failure to report.
  local function wait_children(g)
    local counted = g._counted
    if not g.cancelled then
      if counted:count() > 0 then pcall(counted.wait, counted) end
      if counted:count() == 0 and counted:_failed() == 0 then return true end
    end
    local i = 1
    while i <= #g.children do
      local t = g.children[i]
      local ok, err = pcall(t.join, t)
      if not ok and not finished(t) then
        -- Cancelled from outside, a timeout around the group, or a wait
        -- that can never end: the children go too, and the group still
        -- waits for them to unwind. Not with join: it would raise at once
        -- again (an expired scope, a deadlock, a place where no wait can
        -- happen) and retrying it would spin. _await blocks until the
        -- child is done, or raises when that can never happen.
        g:_fail(err, nil)
        for j = i, #g.children do g.children[j]:_await() end
        return
      end
      i = i + 1
    end
  end

  -- g:cancel() is caught by the group it cancelled, as a cancelled scope
  -- is in trio: the group ends normally, with the body's results if it
  -- returned and none if the cancel stopped it. What cancelled it from
  -- outside (task:cancel(), a timeout around it) is still raised.
  local function finish(g, ok, ...)
    local expired = g.scope:close()
    local stopped = false
    if not ok then
      local err = ...
      if expired and type(err) == "table" and err.scope == g.scope:id() then
        stopped = true
      else
        g:_fail(err, nil)
      end
    end
    local waited, all_returned = pcall(wait_children, g)
    g.closed = true
    -- Join every finished child so no failure is reported twice as never
    -- joined (children that all returned have nothing to report).
    if not (waited and all_returned) then
      for _, t in ipairs(g.children) do
        if finished(t) then pcall(t.join, t) end
      end
    end
    if not waited then error(all_returned, 0) end
    local failure = g.failure
    if failure then
      if failure.task then failure.task:join() end
      error(failure.err, 0)
    end
    if stopped then return end
    return ...
  end

  -- loom.group(fn, ...) runs fn(g, ...) and returns its results once every
  -- child spawned with g:spawn has finished.
  function loom.group(fn, ...)
    if not is_callable(fn) then
      loom.error("argument", "bad argument #1 to 'loom.group' (function expected, got " .. type(fn) .. ")")
    end
    local g = setmetatable({
      children = {}, _nchildren = 0, cancelled = false, closed = false, _counted = loom.waitgroup(),
    }, Group)
    g.guard = setmetatable({ group = g }, Guard)
    g.scope = loom._cancel_scope()
    return finish(g, pcall(fn, g, ...))
  end

  local function check_list(list, fname)
    if type(list) ~= "table" then
      loom.error("argument", ("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(list)))
    end
  end

  -- nil: no bound.
  local function concurrency_of(opts, fname)
    if opts ~= nil and type(opts) ~= "table" then
      loom.error("argument", ("bad argument #3 to '%s' (options table expected, got %s)"):format(fname, type(opts)))
    end
    local c = opts and opts.concurrency
    if c == nil then return nil end
    if math.type(c) ~= "integer" or c < 1 then
      loom.error("argument", ("bad argument #3 to '%s' (concurrency must be a positive integer)"):format(fname))
    end
    return c
  end

  -- Runs fn(item, index) for every item with at most `concurrency` running
  -- at once; workers pull the next index, so no task is spawned per item.
  -- Without `concurrency` no item ever waits for another to finish: the
  -- body spawns a worker, lets it run until it waits, and spawns another
  -- while items are left, so every item starts as soon as those before it
  -- wait. A worker whose item is done takes the next one left, so a map
  -- whose items wait briefly (a point select) needs far fewer tasks than
  -- items, and one whose items never wait needs one.
  local function run_each(list, fn, opts, fname, results)
    check_list(list, fname)
    if not is_callable(fn) then
      loom.error("argument", ("bad argument #2 to '%s' (function expected, got %s)"):format(fname, type(fn)))
    end
    local n = #list
    local workers = concurrency_of(opts, fname)
    if n == 0 then return end
    local next_index = 0
    local function worker()
      while true do
        next_index = next_index + 1
        local i = next_index
        if i > n then return end
        local value = fn(list[i], i)
        if results then results[i] = value end
      end
    end
    loom.group(function(g)
      if workers then
        for _ = 1, math.min(workers, n) do g:spawn(worker) end
        return
      end
      -- A worker is added on each of the body's turns, unless workers
      -- whose items were done took items since its last turn (not
      -- counting the first item of the worker it added then): the map is
      -- moving without one, and the body lets it.
      local mark, added = 0, false
      repeat
        if next_index - mark - (added and 1 or 0) > 0 then
          added = false
        else
          g:spawn(worker)
          added = true
        end
        mark = next_index
        loom.yield()
      until next_index >= n
    end)
  end

  -- loom.map(list, fn, {concurrency = n}) -> results in input order
  -- (results.n is #list, so nil results leave no doubt about the length).
  function loom.map(list, fn, opts)
    local results = { n = type(list) == "table" and #list or 0 }
    run_each(list, fn, opts, "loom.map", results)
    return results
  end

  function loom.each(list, fn, opts)
    run_each(list, fn, opts, "loom.each", nil)
  end

  local function check_functions(fns, fname)
    for i = 1, fns.n do
      if not is_callable(fns[i]) then
        loom.error("argument", ("bad argument #%d to '%s' (function expected, got %s)"):format(i, fname, type(fns[i])))
      end
    end
  end

  -- loom.all(f1, f2, ...) -> one packed table of results per function.
  function loom.all(...)
    local fns = pack(...)
    check_functions(fns, "loom.all")
    local results = {}
    loom.group(function(g)
      for i = 1, fns.n do
        g:spawn(function() results[i] = pack(fns[i]()) end)
      end
    end)
    return unpack(results, 1, fns.n)
  end

  -- loom.first(f1, f2, ...) -> the results of the first to succeed; the
  -- others are cancelled. If all fail, an error of kind "all_failed" whose
  -- `errors` lists every failure in argument order.
  function loom.first(...)
    local fns = pack(...)
    check_functions(fns, "loom.first")
    if fns.n == 0 then
      loom.error("argument", "bad argument #1 to 'loom.first' (at least one function expected)")
    end
    -- n: a failure may be error(nil), which would leave a hole.
    local winner, errors, failed = nil, { n = fns.n }, 0
    local decided = loom.event()
    local tasks = {}
    for i = 1, fns.n do
      tasks[i] = loom.spawn(function()
        local r = pack(pcall(fns[i]))
        if r[1] then
          if not winner then winner = r; decided:set() end
        else
          errors[i] = r[2]
          failed = failed + 1
          if failed == fns.n then decided:set() end
        end
      end)
    end
    local ok, err = pcall(decided.wait, decided)
    for _, t in ipairs(tasks) do t:cancel() end
    -- Not a join: one interrupted by a second cancel would stop waiting for
    -- an alternative that is still unwinding.
    for _, t in ipairs(tasks) do t:_await() end
    if not ok then error(err, 0) end
    if winner then return unpack(winner, 2, winner.n) end
    local first = errors[1]
    loom.error("all_failed", ("all %d alternatives failed; the first: %s"):format(fns.n, tostring(first)),
      { errors = errors })
  end
end
