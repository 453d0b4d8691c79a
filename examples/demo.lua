-- loom demo: a small shop in a SQLite file, worked on by many tasks at once.
--   bash scripts/demo.sh    (or: bash scripts/example.sh examples/demo.lua)
-- It builds the database, runs a parallel map over it with a concurrency
-- limit, a read -> transform -> write pipeline, and a stock reservation rush
-- guarded by optimistic locking; then it removes the file.
local loom = require "loom"

local function step(title) print(("\n== %s"):format(title)) end

local path = os.tmpname() .. ".db" -- a temp file; SQLite makes it a database
local db = loom.db.open("sqlite:" .. path, { pool = { readers = 4 } })

local PRODUCTS, CUSTOMERS, ORDERS = 40, 120, 4000

-- Progress bars redraw one line with \r, which only a terminal shows as a
-- bar: in a pipe, a log or CI every frame would pile up on one long line.
-- `test -t 1` runs in a shell that inherits this process's stdout, so it
-- asks the one question that matters (is *our* stdout a terminal?) with no C
-- and no guessing from TERM or CI variables. Without a terminal, each bar
-- prints its final figure only.
local on_terminal = os.execute("test -t 1") == true

local function bar(done, total, label)
  label = label or ""
  if not on_terminal then
    if done == total then print(("  %d/%d %s"):format(done, total, label)) end
    return
  end
  local width = 30
  local filled = done * width // total
  io.write(("\r  [%s%s] %4d/%d %s"):format(("#"):rep(filled), ("."):rep(width - filled), done, total, label))
  if done == total then io.write("\n") end
  io.flush()
end

loom.run(function()
  step("build a small shop database in " .. path)
  db:exec([[CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, cents INTEGER NOT NULL,
            stock INTEGER NOT NULL CHECK (stock >= 0), lock_version INTEGER NOT NULL DEFAULT 0)]])
  db:exec([[CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER NOT NULL,
            product INTEGER NOT NULL REFERENCES products, qty INTEGER NOT NULL)]])
  db:exec([[CREATE TABLE invoices (order_id INTEGER PRIMARY KEY, net INTEGER NOT NULL,
            tax INTEGER NOT NULL, total INTEGER NOT NULL)]])
  db:exec([[CREATE TABLE reservations (id INTEGER PRIMARY KEY, product INTEGER NOT NULL,
            shopper INTEGER NOT NULL, qty INTEGER NOT NULL)]])
  local products = {}
  for p = 1, PRODUCTS do products[p] = { p, ("product-%02d"):format(p), 150 + (p * 37) % 900, 100 } end
  db:insert_many("products", { "id", "name", "cents", "stock" }, products)
  -- Orders in 4 batches, written by 4 tasks: the one writer takes them in turn.
  local batches = {}
  for b = 1, 4 do
    local rows = {}
    for i = 1, ORDERS // 4 do
      local id = (b - 1) * (ORDERS // 4) + i
      rows[i] = { id, id % CUSTOMERS + 1, (id * 7) % PRODUCTS + 1, id % 5 + 1 }
    end
    batches[b] = rows
  end
  local written = 0
  loom.each(batches, function(rows)
    local n = db:insert_many("orders", { "id", "customer", "product", "qty" }, rows)
    written = written + n -- after the call: other tasks add to it while this one waits
    bar(written, ORDERS, "orders written")
  end)
  local n_orders = db:value("SELECT count(*) FROM orders")
  print(("  %d products, %d orders from %d customers"):format(
    db:value("SELECT count(*) FROM products"), n_orders, db:value("SELECT count(DISTINCT customer) FROM orders")))
  assert(n_orders == ORDERS)

  step(("a parallel map: a statement for each of %d customers, 6 at a time"):format(CUSTOMERS))
  local customers = {}
  for c = 1, CUSTOMERS do customers[c] = c end
  local done, inflight, most = 0, 0, 0
  local started = loom.now()
  local statements = loom.map(customers, function(c)
    inflight = inflight + 1
    most = math.max(most, inflight)
    local s = db:first([[SELECT count(*) AS orders, sum(o.qty * p.cents) AS cents
                         FROM orders o JOIN products p ON p.id = o.product WHERE o.customer = ?]], c)
    loom.sleep(0.005 + (c % 4) * 0.005) -- pretend to render and send the statement
    inflight = inflight - 1
    done = done + 1
    bar(done, CUSTOMERS, "statements sent")
    return s
  end, { concurrency = 6 })
  local counted, revenue = 0, 0
  for _, s in ipairs(statements) do counted, revenue = counted + s.orders, revenue + s.cents end
  print(("  %d statements covering %d orders, %.2f in all, in %.2f s (never more than %d at once)"):format(
    #statements, counted, revenue / 100, loom.now() - started, most))
  assert(counted == ORDERS and most <= 6)
  assert(revenue == db:value("SELECT sum(o.qty * p.cents) FROM orders o JOIN products p ON p.id = o.product"))

  step("a pipeline: read orders -> price them in 4 workers -> write invoices in batches of 500")
  -- A reader task streams the orders into a bounded channel (the pipeline's
  -- source): when the workers fall behind, the stream waits.
  local source = loom.channel(64)
  loom.spawn(function()
    local _ <close> = source
    for row in db:rows([[SELECT o.id, o.qty, p.cents FROM orders o JOIN products p ON p.id = o.product
                         ORDER BY o.id]]) do
      source:send(row)
    end
  end)
  local invoiced = 0
  started = loom.now()
  loom.pipeline(source)
    :map(function(o)
      local net = o.qty * o.cents
      local tax = (net * 19 + 50) // 100
      return { o.id, net, tax, net + tax }
    end, { workers = 4 })
    :batch(500)
    :each(function(rows)
      local n = db:insert_many("invoices", { "order_id", "net", "tax", "total" }, rows)
      invoiced = invoiced + n
      bar(invoiced, ORDERS, "invoices written")
    end)
  local net, total = db:value("SELECT sum(net) FROM invoices"), db:value("SELECT sum(total) FROM invoices")
  print(("  %d invoices in %.2f s: net %.2f, with tax %.2f"):format(
    db:value("SELECT count(*) FROM invoices"), loom.now() - started, net / 100, total / 100))
  assert(invoiced == ORDERS and net == revenue)

  step("a reservation rush: 24 shoppers, 4 hot products with 5 in stock each")
  db:exec("UPDATE products SET stock = 5 WHERE id <= 4")
  local stale, turned_away = 0, 0
  local function reserve(shopper, product, qty)
    -- Read without holding anything, decide, then write only if nobody
    -- changed the product since (its lock_version is still the one read).
    local p = db:first("SELECT stock, lock_version FROM products WHERE id = ?", product)
    if p.stock < qty then return false end
    loom.sleep(0.001 + 0.002 * math.random()) -- think time: others may reserve meanwhile
    db:transaction(function(tx)
      local n = tx:exec("UPDATE products SET stock = stock - ?, lock_version = lock_version + 1 "
        .. "WHERE id = ? AND lock_version = ?", qty, product, p.lock_version)
      if n == 0 then loom.error("stale", "product changed since it was read") end
      tx:exec("INSERT INTO reservations (product, shopper, qty) VALUES (?, ?, ?)", product, shopper, qty)
    end)
    return true
  end
  local shoppers = {}
  for s = 1, 24 do shoppers[s] = s end
  loom.each(shoppers, function(s)
    local product, qty = s % 4 + 1, s // 4 % 2 + 1 -- 6 shoppers want 9 of each
    local got = loom.retry(function() return reserve(s, product, qty) end, {
      attempts = 50, backoff = 0.001, max_delay = 0.01,
      retry_on = function(err)
        if loom.is_error(err, "stale") then stale = stale + 1; return true end
      end })
    if not got then turned_away = turned_away + 1 end
    if s % 3 == 0 then
      local what = got and ("reserved %d of product %d"):format(qty, product) or "not enough left"
      print(("  shopper %2d: %s"):format(s, what))
    end
  end)
  local sold = db:value("SELECT sum(qty) FROM reservations")
  for p = 1, 4 do
    local left = db:value("SELECT stock FROM products WHERE id = ?", p)
    local reserved = db:value("SELECT coalesce(sum(qty), 0) FROM reservations WHERE product = ?", p)
    print(("  product %d: %2d reserved, %d left"):format(p, reserved, left))
    assert(left >= 0 and left + reserved == 5)
  end
  print(("  no oversell: %d of 20 units reserved, %d shoppers turned away, %d stale reads retried"):format(
    sold, turned_away, stale))
  assert(sold <= 20)

  step("a timeout stops a slow query; the loop stays free meanwhile")
  local ticks = 0
  local ticker = loom.spawn(function() while true do loom.sleep(0.02); ticks = ticks + 1 end end)
  local ok, err = pcall(loom.timeout, 0.2, db.value, db, [[WITH RECURSIVE c(x) AS
    (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000) SELECT count(*) FROM c]])
  ticker:cancel()
  print(("  counting to 50 million: %s; %d ticks meanwhile; the next query answers %s"):format(
    tostring(err), ticks, db:value("SELECT 'at once'")))
  assert(not ok and loom.is_error(err, "timeout"))
end)
db:close()
for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
os.remove(path:sub(1, -4)) -- the empty file os.tmpname made
print("\ndone; the database file is removed")
