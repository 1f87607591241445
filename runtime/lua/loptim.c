/* loptim.c: the fused optimizer step behind fdm.optim.Adam / AdamW. */
#include "fdm_lua.h"
#include "fdm_internal.h"
#include "cpu_optim.h"

static fdm_tensor *check_like(lua_State *L, int idx, const fdm_tensor *p, const char *what) {
  fdm_tensor *t = fdm_lua_check(L, idx);
  char b1[128], b2[128];
  if (t->dtype != FDM_FLOAT32 || !fdm_is_contiguous(t) || !fdm_same_shape(t, p) || t->device != p->device)
    fdm_lua_errorf(L, "adam_step_: %s must be a contiguous float32 tensor shaped like the parameter "
               "(%s %s, parameter %s %s)", what, fdm_shapestr(t, b1, sizeof b1), fdm_dtype_name(t->dtype),
               fdm_shapestr(p, b2, sizeof b2), fdm_dtype_name(p->dtype));
  return t;
}

/* fdm.adam_step_(p, grad, exp_avg, exp_avg_sq, {lr, beta1, beta2, eps, weight_decay,
**                 step, decoupled, maximize, max_exp_avg_sq}) */
static int l_adam_step_(lua_State *L) {
  fdm_tensor *p = fdm_lua_check(L, 1);
  if (p->dtype != FDM_FLOAT32 || !fdm_is_contiguous(p))
    return fdm_lua_errorf(L, "adam_step_: the parameter must be a contiguous float32 tensor");
  fdm_tensor *g = fdm_lua_check(L, 2), *gc = NULL;
  fdm_tensor *m = check_like(L, 3, p, "exp_avg"), *v = check_like(L, 4, p, "exp_avg_sq");
  luaL_checktype(L, 5, LUA_TTABLE);
  fdm_tensor *vmax = NULL;
  if (lua_getfield(L, 5, "max_exp_avg_sq") != LUA_TNIL) vmax = check_like(L, lua_gettop(L), p, "max_exp_avg_sq");
  lua_pop(L, 1);
  fdm_tensor *chk[2] = {p, g};
  if (fdm_backend_check("adam_step_", 2, chk)) return fdm_lua_error(L);
  if (p->device != FDM_CPU) return fdm_lua_errorf(L, "adam_step_: no kernel for device %s", fdm_device_name(p->device));
  cpu_adam_params a;
  a.lr = (float)fdm_lua_optnum(L, 5, "lr", 1e-3);
  a.beta1 = (float)fdm_lua_optnum(L, 5, "beta1", 0.9);
  a.beta2 = (float)fdm_lua_optnum(L, 5, "beta2", 0.999);
  a.eps = (float)fdm_lua_optnum(L, 5, "eps", 1e-8);
  a.weight_decay = (float)fdm_lua_optnum(L, 5, "weight_decay", 0);
  a.step = fdm_lua_optint(L, 5, "step", 1);
  a.decoupled = fdm_lua_optbool(L, 5, "decoupled", 0);
  a.maximize = fdm_lua_optbool(L, 5, "maximize", 0);
  if (a.step < 1) return fdm_lua_errorf(L, "adam_step_: step must be >= 1, got %d", (int)a.step);
  gc = fdm_float_contig(g);
  if (!gc) return fdm_lua_error(L);
  if (!fdm_same_shape(gc, p)) { fdm_release(gc); return fdm_lua_errorf(L, "adam_step_: gradient shape differs from the parameter's"); }
  cpu_adam_step(fdm_numel(p), &a, fdm_data(p), fdm_data(gc), fdm_data(m), fdm_data(v),
                vmax ? (float *)fdm_data(vmax) : NULL);
  fdm_release(gc);
  return 0;
}

void fdm_open_optim(lua_State *L) {
  lua_pushcfunction(L, l_adam_step_);
  lua_setfield(L, -2, "adam_step_");
}
