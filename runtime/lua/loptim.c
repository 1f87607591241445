/* loptim.c: the fused optimizer step behind fdm.optim.Adam / AdamW. */
#include "fdm_lua.h"
#include "fdm_ops.h"

/* fdm.adam_step_(p, grad, exp_avg, exp_avg_sq, {lr, beta1, beta2, eps, weight_decay,
**                 step, decoupled, maximize, max_exp_avg_sq}) */
static int l_adam_step_(lua_State *L) {
  fdm_tensor *p = fdm_lua_check(L, 1), *g = fdm_lua_check(L, 2);
  fdm_tensor *m = fdm_lua_check(L, 3), *v = fdm_lua_check(L, 4), *vmax = NULL;
  luaL_checktype(L, 5, LUA_TTABLE);
  if (lua_getfield(L, 5, "max_exp_avg_sq") != LUA_TNIL) vmax = fdm_lua_check(L, lua_gettop(L));
  lua_pop(L, 1);
  fdm_adam_params a;
  a.lr = (float)fdm_lua_optnum(L, 5, "lr", 1e-3);
  a.beta1 = (float)fdm_lua_optnum(L, 5, "beta1", 0.9);
  a.beta2 = (float)fdm_lua_optnum(L, 5, "beta2", 0.999);
  a.eps = (float)fdm_lua_optnum(L, 5, "eps", 1e-8);
  a.weight_decay = (float)fdm_lua_optnum(L, 5, "weight_decay", 0);
  a.step = fdm_lua_optint(L, 5, "step", 1);
  a.decoupled = fdm_lua_optbool(L, 5, "decoupled", 0);
  a.maximize = fdm_lua_optbool(L, 5, "maximize", 0);
  if (fdm_adam_step_(p, g, m, v, vmax, &a)) return fdm_lua_error(L);
  return 0;
}

void fdm_open_optim(lua_State *L) {
  lua_pushcfunction(L, l_adam_step_);
  lua_setfield(L, -2, "adam_step_");
}
