/* libFuzzer target: the loaders as Lua calls them (runtime/lua/lio.c):
** fdm.io.read_idx, read_png (every range) and load_safetensors on a file
** holding the input, through the real bindings, with their real limits
** (IDX: the memory-based limit; PNG: FDM_PNG_MAX_PIXELS). The first byte
** picks the loader; the rest is the file. A load that succeeds has its
** tensors checked (shape, numel) and read back (tolist of small ones).
** Built with the whole runtime (fuzz/run.sh). */
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int luaopen_fdm_core(lua_State *L);

static lua_State *L;
static char path[256];

static const char *checker =
  "local core, fn, path, opt = ...\n"
  "local ok, a, b = pcall(core.io[fn], path, opt)\n"
  "if not ok then\n"
  "  assert(type(a) == 'string' and a:find(fn, 1, true), 'error without the loader name: ' .. tostring(a))\n"
  "  assert(not a:find('invalid option', 1, true), a)\n"
  "  return\n"
  "end\n"
  "local ts = core.is_tensor(a) and {a} or a\n"
  "for _, t in pairs(ts) do\n"
  "  local n, lists = 1, 1\n"
  "  for i, s in ipairs(t.shape) do assert(s >= 0); n = n * s; if i < #t.shape then lists = lists * s end end\n"
  "  assert(t:numel() == n)\n"
  /* tolist makes one Lua table per row: a legal [2^29, 0] tensor would be 2^29 tables */
  "  if n <= 4096 and lists <= 4096 then t:tolist() end\n"
  "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  setenv("OMP_NUM_THREADS", "1", 1);
  snprintf(path, sizeof path, "/tmp/fdm_fuzz_lua_io.%d", (int)getpid());
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "fdm.core", luaopen_fdm_core, 0);
  lua_setglobal(L, "core");
  if (luaL_loadstring(L, checker) != LUA_OK) abort();
  lua_setglobal(L, "check");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  if (n < 1) return 0;
  static const char *fns[] = {"read_idx", "read_png", "read_png", "read_png", "load_safetensors"};
  static const char *ranges[] = {NULL, NULL, "pm1", "byte", NULL};
  int k = data[0] % 5;
  if (k >= 1 && k <= 3 && n > 25) {
    /* PNG: skip images over 2^22 pixels, which would decode (legitimately)
    ** to more than the fuzzer's memory limit; IHDR is the first chunk */
    const uint8_t *h = data + 1 + 16;
    uint64_t w = (uint64_t)h[0] << 24 | h[1] << 16 | h[2] << 8 | h[3];
    uint64_t hh = (uint64_t)h[4] << 24 | h[5] << 16 | h[6] << 8 | h[7];
    if (w * hh > ((uint64_t)1 << 22)) return 0;
  }
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (n > 1 && fwrite(data + 1, 1, n - 1, f) != n - 1) abort();
  fclose(f);
  lua_getglobal(L, "check");
  lua_getglobal(L, "core");
  lua_pushstring(L, fns[k]);
  lua_pushstring(L, path);
  if (ranges[k]) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, ranges[k]);
    lua_setfield(L, -2, "range");
  } else lua_pushnil(L);
  if (lua_pcall(L, 4, 0, 0) != LUA_OK) {
    fprintf(stderr, "fuzz_lua_io: %s: %s\n", fns[k], lua_tostring(L, -1));
    abort();
  }
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
