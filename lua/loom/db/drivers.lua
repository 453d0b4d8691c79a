-- The database drivers loom knows, one line each: each has its dialect in
-- lua/loom/db/<name>.lua and its C module loom.driver.<name>, built when
-- its LOOM_WITH_<NAME> build option is on (CMakeLists.txt).
return {
  "postgres",
  "mysql",
  "sqlite",
}
