/* lcore.c: luaopen_fdm_core, the C module behind `require "fdm"`. */
#include "fdm_lua.h"
#include "fdm_ops.h"
#include "fdm_autograd.h"
#include "fdm_engine.h"
#include "fdm_backend.h"

static int l_devices(lua_State *L) {
  lua_newtable(L);
  int n = 0;
  for (int d = 0; d < FDM_NDEVICE; d++)
    if (fdm_backend_get((fdm_device)d)) {   /* the devices this build can use */
      lua_pushstring(L, fdm_device_name((fdm_device)d));
      lua_rawseti(L, -2, ++n);
    }
  return 1;
}

int luaopen_fdm_core(lua_State *L) {
  lua_newtable(L);
  lua_pushliteral(L, FDM_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushcfunction(L, l_devices);
  lua_setfield(L, -2, "devices");
  fdm_open_tensor(L);
  fdm_open_nnops(L);
  fdm_open_io(L);
  fdm_open_optim(L);
  return 1;
}
