/* Database errors as loom errors: a table with kind, code, SQLSTATE and
 * the rest of what the server said, with no password in any of it. */
#include <stdlib.h>
#include <string.h>
#include "lm_db.h"

/* Pushes text with every secret of db replaced by "***". */
static void push_scrubbed(lua_State *L, lm_db *db, const char *text) {
  lua_pushstring(L, text);
  if (db->secrets == NULL)
    return;
  for (const char *s = db->secrets; *s; s += strlen(s) + 1) {
    if (strstr(lua_tostring(L, -1), s)) {
      luaL_gsub(L, lua_tostring(L, -1), s, "***");
      lua_remove(L, -2);
    }
  }
}

void lm_db_push_error(lua_State *L, lm_db *db, int status, loom_db_error_t *e,
                          const char *sql) {
  const char *kind = "query";
  switch (status) {
  case LOOM_EDB_CONNECTION: case LOOM_ECLOSED: kind = "connection"; break;
  case LOOM_EDB_ARGUMENT: kind = "argument"; break;
  case LOOM_EDB_PROTOCOL: kind = "protocol"; break;
  case LOOM_ENOMEM: kind = "memory"; break;
  default: break;
  }
  push_scrubbed(L, db, e->message ? e->message : loom_strerror(status));
  lm_push_error(L, kind, "%s", lua_tostring(L, -1));
  lua_remove(L, -2);
  if (e->code[0]) {
    /* Error numbers (1213, 1064) are numbers, beside the SQLSTATE. */
    char *end;
    long num = strtol(e->code, &end, 10);
    if (db->driver->numeric_codes && *end == 0 && num > 0)
      lua_pushinteger(L, num);
    else
      lua_pushstring(L, e->code);
    lua_setfield(L, -2, "code");
  }
  if (e->sqlstate[0]) {
    lua_pushstring(L, e->sqlstate);
    lua_setfield(L, -2, "sqlstate");
  }
  if (e->detail) {
    push_scrubbed(L, db, e->detail);
    lua_setfield(L, -2, "detail");
  }
  if (e->hint) {
    push_scrubbed(L, db, e->hint);
    lua_setfield(L, -2, "hint");
  }
  if (e->position) {
    lua_pushinteger(L, e->position);
    lua_setfield(L, -2, "position");
  }
  if (e->statement) {
    lua_pushinteger(L, e->statement);
    lua_setfield(L, -2, "statement");
  }
  lua_pushstring(L, db->driver->name);
  lua_setfield(L, -2, "driver");
  if (sql) {
    lua_pushstring(L, sql);
    lua_setfield(L, -2, "sql");
  }
  loom_db_error_clear(e);
}

int lm_db_raise_error(lua_State *L, lm_db *db, int status, loom_db_error_t *e,
                          const char *sql) {
  lm_db_push_error(L, db, status, e, sql);
  return lua_error(L);
}

/* The secrets array at idx as one block: each string and its NUL, then a
 * final NUL. Strings holding a NUL cannot be found in C text; the caller
 * passes their part before the NUL as well. */
char *lm_db_copy_secrets(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE)
    return NULL;
  size_t total = 1;
  int n = (int)lua_rawlen(L, idx);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (s && len > 0 && strlen(s) == len)
      total += len + 1;
    lua_pop(L, 1);
  }
  if (total == 1)
    return NULL;
  char *block = malloc(total), *p = block;
  if (block == NULL)
    return NULL;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (s && len > 0 && strlen(s) == len) {
      memcpy(p, s, len + 1);
      p += len + 1;
    }
    lua_pop(L, 1);
  }
  *p = 0;
  return block;
}
