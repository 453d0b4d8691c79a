/* Preloaded into sanitizer runs: Lua unloads C modules when its state
 * closes, before LeakSanitizer looks, and the leak reports would then show
 * "<unknown module>" instead of loom's file and line. Never unloading keeps
 * them readable. */
int dlclose(void *handle) {
  (void)handle;
  return 0;
}
