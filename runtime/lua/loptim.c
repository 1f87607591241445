/* loptim.c: the fused optimizer step behind fdm.optim.Adam / AdamW. */
#include "fdm_lua.h"
#include "fdm_ops.h"

/* fdm.adam_step_(p, grad, exp_avg, exp_avg_sq, {lr, beta1, beta2, eps, weight_decay,
**                 step, decoupled, maximize, max_exp_avg_sq}) */
static void read_adam_opts(lua_State *L, int o, fdm_adam_params *a) {
  a->lr = (float)fdm_lua_optnum(L, o, "lr", 1e-3);
  a->beta1 = (float)fdm_lua_optnum(L, o, "beta1", 0.9);
  a->beta2 = (float)fdm_lua_optnum(L, o, "beta2", 0.999);
  a->eps = (float)fdm_lua_optnum(L, o, "eps", 1e-8);
  a->weight_decay = (float)fdm_lua_optnum(L, o, "weight_decay", 0);
  a->step = fdm_lua_optint(L, o, "step", 1);
  a->decoupled = fdm_lua_optbool(L, o, "decoupled", 0);
  a->maximize = fdm_lua_optbool(L, o, "maximize", 0);
}

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

/* fdm.adam_multi_step_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs | nil, opts):
** the same step for every parameter of the lists (one device), as adam_step_
** on each, in one kernel call (multi-tensor Adam). opts.lr_tensor and
** opts.step_tensor (one-element float32 / int64 tensors on the parameters'
** device) replace opts.lr and opts.step: the kernel reads them on the device
** (graphs) */
static int l_adam_multi_step_(lua_State *L) {
  for (int i = 1; i <= 4; i++) luaL_checktype(L, i, LUA_TTABLE);
  int has_max = !lua_isnoneornil(L, 5);
  if (has_max) luaL_checktype(L, 5, LUA_TTABLE);
  luaL_checktype(L, 6, LUA_TTABLE);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  for (int i = 2; i <= (has_max ? 5 : 4); i++)
    if ((lua_Integer)lua_rawlen(L, i) != n)
      return luaL_error(L, "adam_multi_step_: list #%d has %d entries, the parameters %d", i,
                        (int)lua_rawlen(L, i), (int)n);
  if (n == 0) return 0;
  if (n > 1 << 20) return luaL_error(L, "adam_multi_step_: too many parameters (%d)", (int)n);
  fdm_tensor **t = lua_newuserdatauv(L, (size_t)n * 5 * sizeof *t, 0);   /* freed by the GC */
  for (int l = 0; l < (has_max ? 5 : 4); l++)
    for (lua_Integer i = 0; i < n; i++) {
      lua_rawgeti(L, l + 1, i + 1);
      t[l * n + i] = fdm_lua_check(L, -1);
      lua_pop(L, 1);
    }
  fdm_adam_params a;
  read_adam_opts(L, 6, &a);
  fdm_tensor *lr_t = NULL, *step_t = NULL;
  if (lua_getfield(L, 6, "lr_tensor") != LUA_TNIL) lr_t = fdm_lua_check(L, -1);
  if (lua_getfield(L, 6, "step_tensor") != LUA_TNIL) step_t = fdm_lua_check(L, -1);
  if (!lr_t != !step_t) return luaL_error(L, "adam_multi_step_: lr_tensor and step_tensor go together");
  int rc = lr_t ? fdm_adam_multi_step_at_((int)n, t, t + n, t + 2 * n, t + 3 * n, has_max ? t + 4 * n : NULL, &a,
                                          lr_t, step_t)
                : fdm_adam_multi_step_((int)n, t, t + n, t + 2 * n, t + 3 * n, has_max ? t + 4 * n : NULL, &a);
  if (rc) return fdm_lua_error(L);
  return 0;
}

void fdm_open_optim(lua_State *L) {
  lua_pushcfunction(L, l_adam_multi_step_);
  lua_setfield(L, -2, "adam_multi_step_");
  lua_pushcfunction(L, l_adam_step_);
  lua_setfield(L, -2, "adam_step_");
}
