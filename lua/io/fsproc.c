/* loom's files, processes and signals: their classes and the core._fs_*,
 * _process_* and _signal_* functions lua/loom/fs.lua, process.lua and
 * signal.lua are written on. */
#include "lm_fsproc.h"

/* The module table is on top. */
void lm_open_fsproc(lua_State *L) {
  lm_open_fswait(L);
  lm_open_file(L);
  lm_open_process(L);
  lm_open_signal(L);
  const luaL_Reg *lists[] = {lm_fs_funcs, lm_file_funcs, lm_process_funcs, lm_signal_funcs};
  for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
    lm_push_ctx(L);
    luaL_setfuncs(L, lists[i], 1);
  }
}
