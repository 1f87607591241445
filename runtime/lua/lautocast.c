/* lautocast.c: fdm.autocast(dtype, fn, ...), fdm.set_autocast(dtype),
** fdm.get_autocast() (the state is the core's, runtime/core/autocast.c). */
#include <string.h>
#include "fdm_lua.h"

/* the dtype named at idx: "bfloat16"/"bf16", "float16"/"half"/"fp16"; nil or
** false turn autocast off (FDM_FLOAT32); anything else is an error saying what
** is accepted */
static fdm_dtype check_autocast_dtype(lua_State *L, int idx, const char *fn) {
  if (lua_isnoneornil(L, idx) || (lua_isboolean(L, idx) && !lua_toboolean(L, idx))) return FDM_FLOAT32;
  static const struct { const char *name; fdm_dtype d; } names[] = {
    {"bfloat16", FDM_BFLOAT16}, {"bf16", FDM_BFLOAT16},
    {"float16", FDM_FLOAT16}, {"half", FDM_FLOAT16}, {"fp16", FDM_FLOAT16},
  };
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *s = lua_tostring(L, idx);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
      if (strcmp(s, names[i].name) == 0) return names[i].d;
  }
  fdm_lua_errorf(L, "%s: dtype must be \"bfloat16\" (\"bf16\"), \"float16\" (\"half\", \"fp16\") or nil (off), "
                 "got %s%s%s", fn, lua_type(L, idx) == LUA_TSTRING ? "\"" : "", luaL_tolstring(L, idx, NULL),
                 lua_type(L, idx) == LUA_TSTRING ? "\"" : "");
  return FDM_FLOAT32;
}

static void push_autocast(lua_State *L, fdm_dtype d) {
  if (d == FDM_FLOAT32) lua_pushnil(L);
  else lua_pushstring(L, fdm_dtype_name(d));
}

static void set_state(lua_State *L, fdm_dtype d, fdm_dtype *prev) {
  if (fdm_set_autocast(d, prev)) fdm_lua_error(L);
}

/* fdm.autocast(dtype, fn, ...) -> fn(...)'s results, run with autocast set to
** dtype; the previous state comes back afterwards, also when fn raises */
static int l_autocast(lua_State *L) {
  fdm_dtype d = check_autocast_dtype(L, 1, "autocast"), prev;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  set_state(L, d, &prev);
  int base = 2;
  int rc = lua_pcall(L, lua_gettop(L) - base, LUA_MULTRET, 0);
  fdm_set_autocast(prev, NULL);
  if (rc != LUA_OK) return lua_error(L);
  return lua_gettop(L) - base + 1;
}

/* fdm.set_autocast(dtype | nil) -> the previous state (a dtype name or nil) */
static int l_set_autocast(lua_State *L) {
  fdm_dtype prev;
  set_state(L, check_autocast_dtype(L, 1, "set_autocast"), &prev);
  push_autocast(L, prev);
  return 1;
}

/* fdm.get_autocast() -> "bfloat16", "float16" or nil (off) */
static int l_get_autocast(lua_State *L) {
  push_autocast(L, fdm_autocast_dtype());
  return 1;
}

static const luaL_Reg autocast_funcs[] = {
  {"autocast", l_autocast}, {"set_autocast", l_set_autocast}, {"get_autocast", l_get_autocast}, {NULL, NULL}};

void fdm_open_autocast(lua_State *L) { luaL_setfuncs(L, autocast_funcs, 0); }
