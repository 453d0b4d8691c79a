-- loom.pipeline(source):map(fn, {workers = n}):filter(fn):batch(n):collect()
--
-- Every stage runs in tasks of one group, joined by bounded channels: a slow
-- stage makes the ones before it wait (backpressure) instead of piling items
-- up in memory. An error anywhere cancels every stage and is raised by the
-- call that ran the pipeline.
return function(loom)
  local Pipeline = {}
  Pipeline.__index = Pipeline

  local is_callable = loom._is_callable
  local channel_mt = getmetatable(loom.channel())
  local SKIP = {}

  local function is_channel(v) return getmetatable(v) == channel_mt end

  local function argerror(n, fname, msg)
    loom.error("argument", ("bad argument #%d to '%s' (%s)"):format(n, fname, msg))
  end

  function loom.pipeline(source)
    local kind = type(source)
    if not (kind == "table" or kind == "function" or is_channel(source)) then
      argerror(1, "loom.pipeline", "array, iterator function or channel expected, got " .. kind)
    end
    return setmetatable({ source = source, stages = {} }, Pipeline)
  end

  local function stage_opts(opts, fname)
    opts = opts or {}
    if type(opts) ~= "table" then argerror(2, fname, "options table expected") end
    local workers = opts.workers or 1
    if math.type(workers) ~= "integer" or workers < 1 then
      argerror(2, fname, "workers must be a positive integer")
    end
    local buffer = opts.buffer or math.max(16, 2 * workers)
    if math.type(buffer) ~= "integer" or buffer < 0 then
      argerror(2, fname, "buffer must be a non-negative integer")
    end
    return workers, buffer, opts.ordered and workers > 1
  end

  local function add(self, stage)
    local stages = table.move(self.stages, 1, #self.stages, 1, {})
    stages[#stages + 1] = stage
    return setmetatable({ source = self.source, stages = stages }, Pipeline)
  end

  function Pipeline:map(fn, opts)
    if not is_callable(fn) then argerror(1, "map", "function expected, got " .. type(fn)) end
    local workers, buffer, ordered = stage_opts(opts, "map")
    return add(self, { workers = workers, buffer = buffer, ordered = ordered, apply = function(v)
      local r = fn(v)
      if r == nil then
        loom.error("usage", "a pipeline map function returned nil (use :filter to drop items)")
      end
      return r
    end })
  end

  function Pipeline:filter(fn, opts)
    if not is_callable(fn) then argerror(1, "filter", "function expected, got " .. type(fn)) end
    local workers, buffer, ordered = stage_opts(opts, "filter")
    return add(self, { workers = workers, buffer = buffer, ordered = ordered, apply = function(v)
      if fn(v) then return v end
      return SKIP
    end })
  end

  function Pipeline:batch(n)
    if math.type(n) ~= "integer" or n < 1 then argerror(1, "batch", "positive integer expected") end
    return add(self, { batch = n, buffer = 4 })
  end

  -- Runs `fn` in a task of g and closes `out` however it ends.
  local function produce(g, out, fn, ...)
    g:spawn(function(...)
      local _ <close> = out
      fn(...)
    end, ...)
  end

  local function start_source(g, source)
    local out = loom.channel(16)
    produce(g, out, function()
      if is_channel(source) then
        for v in source:iter() do out:send(v) end
      elseif type(source) == "function" then
        for v in source do out:send(v) end
      else
        for i = 1, #source do
          local v = source[i]
          if v == nil then loom.error("usage", "pipeline source has a hole at index " .. i) end
          out:send(v)
        end
      end
    end)
    return out
  end

  local function start_batch(g, input, st)
    local out = loom.channel(st.buffer)
    produce(g, out, function()
      local batch = {}
      for v in input:iter() do
        batch[#batch + 1] = v
        if #batch == st.batch then out:send(batch); batch = {} end
      end
      if #batch > 0 then out:send(batch) end
    end)
    return out
  end

  -- Several workers share one input; the output closes when the last ends.
  local function start_workers(g, out, st, work)
    local left = st.workers
    local last_out = setmetatable({}, { __close = function()
      left = left - 1
      if left == 0 then out:close() end
    end })
    for _ = 1, st.workers do
      g:spawn(function()
        local _ <close> = last_out
        work()
      end)
    end
  end

  local function start_unordered(g, input, st)
    local out = loom.channel(st.buffer)
    local apply = st.apply
    start_workers(g, out, st, function()
      for v in input:iter() do
        local r = apply(v)
        if r ~= SKIP then out:send(r) end
      end
    end)
    return out
  end

  -- Order kept across workers: items are numbered on the way in and put
  -- back in sequence on the way out. A semaphore bounds how far the
  -- fastest worker may run ahead of the slowest, so the reorder buffer stays
  -- as small as the window.
  local function start_ordered(g, input, st)
    local window = loom.semaphore(st.buffer + st.workers)
    local numbered = loom.channel(st.workers)
    local done = loom.channel(st.buffer)
    local out = loom.channel(st.buffer)
    produce(g, numbered, function()
      local seq = 0
      for v in input:iter() do
        window:acquire()
        seq = seq + 1
        numbered:send({ seq, v })
      end
    end)
    local apply = st.apply
    start_workers(g, done, st, function()
      for item in numbered:iter() do
        item[2] = apply(item[2])
        done:send(item)
      end
    end)
    produce(g, out, function()
      local pending, next_seq = {}, 1
      for item in done:iter() do
        pending[item[1]] = item[2]
        while pending[next_seq] ~= nil do
          local r = pending[next_seq]
          pending[next_seq] = nil
          next_seq = next_seq + 1
          window:release()
          if r ~= SKIP then out:send(r) end
        end
      end
    end)
    return out
  end

  function Pipeline:_run(sink)
    loom.group(function(g)
      local ch = start_source(g, self.source)
      for _, st in ipairs(self.stages) do
        if st.batch then
          ch = start_batch(g, ch, st)
        elseif st.ordered then
          ch = start_ordered(g, ch, st)
        else
          ch = start_unordered(g, ch, st)
        end
      end
      for v in ch:iter() do sink(v) end
    end)
  end

  function Pipeline:collect()
    local out, n = {}, 0
    self:_run(function(v) n = n + 1; out[n] = v end)
    return out
  end

  function Pipeline:each(fn)
    if not is_callable(fn) then argerror(1, "each", "function expected, got " .. type(fn)) end
    self:_run(fn)
  end

  -- Sends every result to ch and closes ch when the pipeline ends, so a
  -- consumer looping over ch:iter() stops with it.
  function Pipeline:into(ch)
    if not is_channel(ch) then argerror(1, "into", "channel expected, got " .. type(ch)) end
    local _ <close> = ch
    self:_run(function(v) ch:send(v) end)
  end
end
