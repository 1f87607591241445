/* lgraph.c: the C side of fdm.graph (lua/fdm/graph.lua): graph handles
** (runtime/ops/op_graph.c) and the in-place counter used for step counts. */
#include "fdm_lua.h"
#include "fdm_ops.h"
#include "fdm_graph.h"
#include "fdm_backend.h"

#define FDM_GRAPH_MT "fdm.GraphHandle"

static fdm_graph **box_of(lua_State *L) { return luaL_checkudata(L, 1, FDM_GRAPH_MT); }

static fdm_graph *check_graph(lua_State *L) {
  fdm_graph *g = *box_of(L);
  if (!g) fdm_lua_errorf(L, "graph: this graph was freed");
  return g;
}

/* fdm._graph_begin(device, emulate) -> handle: starts capturing on device */
static int l_graph_begin(lua_State *L) {
  fdm_device dev = fdm_lua_optdevice(L, 1, "device", fdm_lua_default_device());
  int emulate = fdm_lua_optbool(L, 1, "emulate", 0);
  fdm_graph **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, FDM_GRAPH_MT);
  *box = fdm_graph_begin(dev, emulate);
  if (!*box) return fdm_lua_error(L);
  return 1;
}

static int l_graph_end(lua_State *L) {
  if (fdm_graph_end(check_graph(L))) return fdm_lua_error(L);
  return 0;
}

static int l_graph_abort(lua_State *L) {
  fdm_graph_abort(check_graph(L));
  return 0;
}

static int l_graph_replay(lua_State *L) {
  if (fdm_graph_replay(check_graph(L))) return fdm_lua_error(L);
  return 0;
}

static int l_graph_rerun_begin(lua_State *L) {
  if (fdm_graph_rerun_begin(check_graph(L))) return fdm_lua_error(L);
  return 0;
}

static int l_graph_rerun_end(lua_State *L) {
  if (fdm_graph_rerun_end(check_graph(L), lua_toboolean(L, 2))) return fdm_lua_error(L);
  return 0;
}

/* handle:info() -> device, emulated */
static int l_graph_info(lua_State *L) {
  fdm_graph *g = check_graph(L);
  lua_pushstring(L, fdm_device_name(fdm_graph_device(g)));
  lua_pushboolean(L, fdm_graph_emulated(g));
  return 2;
}

static int l_graph_free(lua_State *L) {
  fdm_graph **box = box_of(L);
  fdm_graph_free(*box);
  *box = NULL;
  return 0;
}

/* fdm.graph_capturing() -> the device a graph is being captured (or run) on, or nil */
static int l_graph_capturing(lua_State *L) {
  const fdm_graph *g = fdm_graph_current();
  if (!g) return 0;
  lua_pushstring(L, fdm_device_name(fdm_graph_device(g)));
  return 1;
}

/* fdm.graph_supported(device) -> whether the device can capture graphs */
static int l_graph_supported(lua_State *L) {
  fdm_device dev = fdm_lua_optdevice(L, 1, "device", fdm_lua_default_device());
  const fdm_backend *be = fdm_backend_available(dev) ? fdm_backend_get(dev) : NULL;
  lua_pushboolean(L, be && be->graph_begin);
  return 1;
}

/* fdm.counter_add_(t, delta): t (one-element int64) += delta on its device */
static int l_counter_add_(lua_State *L) {
  if (fdm_counter_add_(fdm_lua_check(L, 1), luaL_checkinteger(L, 2))) return fdm_lua_error(L);
  return 0;
}

static const luaL_Reg graph_methods[] = {
  {"finish", l_graph_end}, {"abort", l_graph_abort}, {"replay", l_graph_replay},
  {"rerun_begin", l_graph_rerun_begin}, {"rerun_end", l_graph_rerun_end}, {"info", l_graph_info},
  {"free", l_graph_free}, {NULL, NULL}};

static const luaL_Reg graph_funcs[] = {
  {"_graph_begin", l_graph_begin}, {"graph_capturing", l_graph_capturing}, {"counter_add_", l_counter_add_},
  {"graph_supported", l_graph_supported}, {NULL, NULL}};

void fdm_open_graph(lua_State *L) {
  if (luaL_newmetatable(L, FDM_GRAPH_MT)) {
    lua_pushcfunction(L, l_graph_free);
    lua_setfield(L, -2, "__gc");
    luaL_newlib(L, graph_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, graph_funcs, 0);
}
