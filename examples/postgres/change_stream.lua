-- A change stream over LISTEN/NOTIFY fed by a trigger: every insert or
-- update on a table is announced; a subscriber task prints them as they
-- happen.
local loom = require "loom"
local db = loom.db.open((assert(os.getenv("LOOM_PG_URL"), "set LOOM_PG_URL")))

loom.run(function()
  db:exec("DROP TABLE IF EXISTS example_orders")
  db:exec("CREATE TABLE example_orders (id serial PRIMARY KEY, status text NOT NULL)")
  db:exec([[
    CREATE OR REPLACE FUNCTION example_orders_notify() RETURNS trigger AS $$
    BEGIN
      PERFORM pg_notify('example_orders', TG_OP || ' ' || NEW.id || ' ' || NEW.status);
      RETURN NEW;
    END $$ LANGUAGE plpgsql]])
  db:exec([[CREATE TRIGGER example_orders_changed AFTER INSERT OR UPDATE ON example_orders
            FOR EACH ROW EXECUTE FUNCTION example_orders_notify()]])

  local changes = db:listen("example_orders")
  local seen = {}
  local subscriber = loom.spawn(function()
    for change in changes:iter() do
      print("  change: " .. change.payload)
      seen[#seen + 1] = change.payload
      if #seen == 4 then return end
    end
  end)

  db:exec("INSERT INTO example_orders (status) VALUES ('new'), ('new')")
  db:exec("UPDATE example_orders SET status = 'paid' WHERE id = 1")
  db:exec("UPDATE example_orders SET status = 'shipped' WHERE id = 1")
  loom.timeout(5, subscriber.join, subscriber)
  print(("the subscriber saw %d changes, in commit order"):format(#seen))
  assert(seen[1] == "INSERT 1 new" and seen[4] == "UPDATE 1 shipped")
  changes:close()
  db:exec("DROP TABLE example_orders")
  db:exec("DROP FUNCTION example_orders_notify()")
end)
db:close()
