-- loom.thread: Lua on worker threads (lua/thread/pool.c, worker.c, channel.c).
-- Loaded on the first use of loom.thread, so `require "loom"` starts no
-- thread; the default pool (one thread per core) starts on the first
-- loom.thread.run or loom.thread.map.
local core = require "loom.core"
local loom = require "loom"

local is_callable = loom._is_callable
local thread = {}

-- The pool's C methods, which map joins.
local Pool = core._thread_methods()

local function check_map(list, fn, opts, fname)
  if type(list) ~= "table" then
    loom.error("argument", ("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(list)))
  end
  if not is_callable(fn) then
    loom.error("argument", ("bad argument #2 to '%s' (function expected, got %s)"):format(fname, type(fn)))
  end
  if opts ~= nil and type(opts) ~= "table" then
    loom.error("argument", ("bad argument #3 to '%s' (options table expected, got %s)"):format(fname, type(opts)))
  end
  local chunk = opts and opts.chunk
  if chunk ~= nil and (math.type(chunk) ~= "integer" or chunk < 1) then
    loom.error("argument", ("bad argument #3 to '%s' (chunk must be a positive integer)"):format(fname))
  end
  return chunk
end

-- pool:map(list, fn, {chunk = n}): fn(item, index) for every item, chunk
-- items per job (default: about four jobs per worker), the jobs spread
-- over the pool; results in input order, results.n = #list. The first
-- failure cancels the other jobs and is raised.
function Pool.map(pool, list, fn, opts)
  local chunk = check_map(list, fn, opts, "map")
  local n = #list
  local results = { n = n }
  if n == 0 then return results end
  chunk = chunk or math.max(1, math.ceil(n / (4 * pool:size())))
  loom.group(function(g)
    for first = 1, n, chunk do
      local last = math.min(n, first + chunk - 1)
      local items = table.move(list, first, last, 1, { n = last - first + 1 })
      g:spawn(function()
        -- fn over the slice, in the worker (lua/thread/worker.c): fn
        -- crosses as a job's function, decoded once per worker when it
        -- has no upvalues but _ENV.
        local out = pool:_slice(fn, items, first)
        table.move(out, 1, out.n, first, results)
      end)
    end
  end)
  return results
end

-- loom.thread.pool{size = n, setup = fn, nice = n}: a pool of its own
-- (size default: one thread per core); setup(), copied, runs once in each
-- worker state before its first job; nice (0..19, default 10) lowers the
-- workers' scheduling priority below the loop's.
function thread.pool(opts)
  if opts ~= nil and type(opts) ~= "table" then
    loom.error("argument", ("bad argument #1 to 'loom.thread.pool' (options table expected, got %s)")
      :format(type(opts)))
  end
  opts = opts or {}
  local size = opts.size
  if size ~= nil and (math.type(size) ~= "integer" or size < 1 or size > 1024) then
    loom.error("argument", "bad argument #1 to 'loom.thread.pool' (size must be an integer from 1 to 1024)")
  end
  if opts.setup ~= nil and not is_callable(opts.setup) then
    loom.error("argument", ("bad argument #1 to 'loom.thread.pool' (setup must be a function, got %s)")
      :format(type(opts.setup)))
  end
  local nice = opts.nice
  if nice ~= nil and (math.type(nice) ~= "integer" or nice < 0 or nice > 19) then
    loom.error("argument", "bad argument #1 to 'loom.thread.pool' (nice must be an integer from 0 to 19)")
  end
  return core._thread_pool(size or 0, opts.setup, nice)
end

function thread.run(fn, ...)
  if not is_callable(fn) then
    loom.error("argument", ("bad argument #1 to 'loom.thread.run' (function expected, got %s)"):format(type(fn)))
  end
  return core._thread_default():run(fn, ...)
end

function thread.map(list, fn, opts)
  check_map(list, fn, opts, "loom.thread.map")
  return core._thread_default():map(list, fn, opts)
end

-- loom.thread.channel(n): a channel any state can use (passed to workers
-- as an argument or an upvalue), n >= 1; loom.channel's methods.
function thread.channel(n)
  if math.type(n) ~= "integer" or n < 1 or n > 1 << 28 then
    loom.error("argument", "bad argument #1 to 'loom.thread.channel' (capacity must be an integer "
      .. "from 1 to 2^28: a thread channel cannot be a rendezvous, loom.channel(0) is one within a state)")
  end
  return core._thread_channel(n)
end

function thread.stats()
  return core._thread_default():stats()
end

loom.thread = thread
return thread
