/* require "loom.driver.mysql": the MySQL and MariaDB driver
 * (core/db/mysql/), built as a module of its own so that only its users
 * load its client library. */
#include "driver.h"
#include "my.h"

int luaopen_loom_driver_mysql(lua_State *L) {
  return lm_driver_module(L, &loom_mysql_driver);
}
