/* lcore.c: luaopen_fdm_core, the C module behind `require "fdm"`. */
#include <stdlib.h>
#include <string.h>
#include "fdm_lua.h"
#include "fdm_ops.h"
#include "fdm_autograd.h"
#include "fdm_engine.h"
#include "fdm_backend.h"

static int l_devices(lua_State *L) {
  lua_newtable(L);
  int n = 0;
  for (int d = 0; d < FDM_NDEVICE; d++)
    if (fdm_backend_available((fdm_device)d)) {   /* the devices registered now */
      lua_pushstring(L, fdm_device_name((fdm_device)d));
      lua_rawseti(L, -2, ++n);
    }
  return 1;
}

static fdm_device check_device(lua_State *L, int idx) {
  const char *name = luaL_checkstring(L, idx);
  fdm_device dev;
  if (fdm_device_from_name(name, &dev))
    fdm_lua_errorf(L, "unknown device '%s' (devices: cpu, cuda)", name);
  return dev;
}

/* fdm.load_backend(path): registers the device of a backend plugin (a shared
** object exporting fdm_backend_plugin_register); for backend developers */
static int l_load_backend(lua_State *L) {
  if (fdm_backend_load(luaL_checkstring(L, 1))) return fdm_lua_error(L);
  return 0;
}

/* fdm.supports(device, kernel) -> boolean; fdm.supports(device) -> list of its kernels */
static int l_supports(lua_State *L) {
  fdm_device dev = check_device(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    lua_pushboolean(L, fdm_backend_supports(dev, luaL_checkstring(L, 2)));
    return 1;
  }
  lua_newtable(L);
  int n = 0;
  for (const char *const *k = fdm_kernel_names(); *k; k++)
    if (fdm_backend_supports(dev, *k)) { lua_pushstring(L, *k); lua_rawseti(L, -2, ++n); }
  return 1;
}

/* fdm.empty_cache([device]) -> bytes given back: the allocator's cache of
** freed blocks, of one device or of all; a device's cache is what keeps its
** allocations cheap (cudaMalloc and cudaFree synchronise), so code that
** bounds host memory empties the CPU's alone */
static int l_empty_cache(lua_State *L) {
  size_t freed = lua_isnoneornil(L, 1) ? fdm_empty_cache() : fdm_empty_cache_device(check_device(L, 1));
  lua_pushinteger(L, (lua_Integer)freed);
  return 1;
}

/* fdm.backend_stats(device) -> {live_bytes, cached_bytes, allocs, uploads, downloads} */
static int l_backend_stats(lua_State *L) {
  const fdm_backend *be = fdm_backend_get(check_device(L, 1));
  if (!be) return fdm_lua_error(L);
  fdm_backend_stats st = {0};
  if (be->stats) be->stats(&st);
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, (lua_Integer)st.live_bytes); lua_setfield(L, -2, "live_bytes");
  lua_pushinteger(L, (lua_Integer)st.cached_bytes); lua_setfield(L, -2, "cached_bytes");
  lua_pushinteger(L, (lua_Integer)st.allocs); lua_setfield(L, -2, "allocs");
  lua_pushinteger(L, (lua_Integer)st.uploads); lua_setfield(L, -2, "uploads");
  lua_pushinteger(L, (lua_Integer)st.downloads); lua_setfield(L, -2, "downloads");
  return 1;
}

/* fdm.device_memory(device) -> available, total bytes (what a new allocation
** could still get, the device's size); nil and the reason where the device
** cannot say (the CPU: the loaders read MemAvailable) */
static int l_device_memory(lua_State *L) {
  const fdm_backend *be = fdm_backend_get(check_device(L, 1));
  if (!be) return fdm_lua_error(L);
  size_t avail = 0, total = 0;
  if (!be->mem_info) {
    lua_pushnil(L);
    lua_pushfstring(L, "device '%s' does not report its memory", be->name);
    return 2;
  }
  if (be->mem_info(&avail, &total) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, fdm_lasterror());
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)avail);
  lua_pushinteger(L, (lua_Integer)total);
  return 2;
}

/* fdm.set_tf32(on): lets matrix products and convolutions on the GPU use
** TF32 tensor cores (as FDM_TF32=1, which it sets; read by the CUDA kernels
** at each call); fdm.get_tf32() */
static int l_set_tf32(lua_State *L) {
  luaL_checktype(L, 1, LUA_TBOOLEAN);
  setenv("FDM_TF32", lua_toboolean(L, 1) ? "1" : "0", 1);
  return 0;
}
static int l_get_tf32(lua_State *L) {
  const char *t = getenv("FDM_TF32");
  lua_pushboolean(L, t && (strcmp(t, "1") == 0 || strcmp(t, "true") == 0));
  return 1;
}

/* device memory ran out: collect the tensors Lua no longer references */
static void reclaim(void *ud) { lua_gc((lua_State *)ud, LUA_GCCOLLECT); }

static const luaL_Reg device_funcs[] = {
  {"devices", l_devices}, {"set_tf32", l_set_tf32}, {"get_tf32", l_get_tf32},
  {"load_backend", l_load_backend}, {"supports", l_supports}, {"backend_stats", l_backend_stats},
  {"device_memory", l_device_memory}, {"empty_cache", l_empty_cache},
  {NULL, NULL}};

int luaopen_fdm_core(lua_State *L) {
  lua_State *main_L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  main_L = lua_tothread(L, -1);
  lua_pop(L, 1);
  fdm_backend_set_reclaim(reclaim, main_L);
  lua_newtable(L);
  lua_pushliteral(L, FDM_VERSION);
  lua_setfield(L, -2, "version");
  luaL_setfuncs(L, device_funcs, 0);
  fdm_open_tensor(L);
  fdm_open_nnops(L);
  fdm_open_io(L);
  fdm_open_optim(L);
  fdm_open_autocast(L);
  fdm_open_graph(L);
  return 1;
}
