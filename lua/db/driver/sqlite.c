/* require "loom.driver.sqlite": the SQLite driver (core/db/sqlite/), built
 * as a module of its own so that only its users load its client library. */
#include "driver.h"
#include "sqlite.h"

int luaopen_loom_driver_sqlite(lua_State *L) {
  return lm_driver_module(L, &loom_sqlite_driver);
}
