/* require "loom.driver.postgres": the PostgreSQL driver
 * (core/db/postgres/), built as a module of its own so that only its users
 * load its client library. */
#include "driver.h"
#include "pg.h"

int luaopen_loom_driver_postgres(lua_State *L) {
  return lm_driver_module(L, &loom_pg_driver);
}
