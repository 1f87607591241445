/* lnnops.c: Lua bindings of the neural-network ops, as table F of the module
** (fdm.F.conv2d, ...). Dims are 1-based here (converted with fdm_lua_dim);
** stride/padding/... take a number or an {h, w} pair. No numerical code. */
#include <limits.h>
#include <math.h>
#include <string.h>
#include "fdm_lua.h"
#include "fdm_ops.h"
#include "fdm_nnops.h"

/* optional tensor: nil/none -> NULL */
static fdm_tensor *opt_tensor(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return NULL;
  return fdm_lua_check(L, idx);
}

/* an integer pair entry: as the int64 it is, in 0..INT_MAX (the ops check
** their own lower bounds) */
static int pair_int(lua_State *L, lua_Integer v, const char *op, const char *what) {
  if (v < 0 || v > INT_MAX)
    fdm_lua_errorf(L, "%s: %s must be in 0..%d, got %lld", op, what, INT_MAX, (long long)v);
  return (int)v;
}

/* value at idx: nil -> def, number -> both, {a, b} -> pair ({a} -> both) */
static void get_pair(lua_State *L, int idx, const char *op, const char *what, int def, int *out) {
  idx = lua_absindex(L, idx);
  out[0] = out[1] = def;
  if (lua_isnoneornil(L, idx)) return;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    if (!lua_isinteger(L, idx)) fdm_lua_errorf(L, "%s: %s must be an integer or a pair {h, w}, got %g", op, what, lua_tonumber(L, idx));
    out[0] = out[1] = pair_int(L, lua_tointeger(L, idx), op, what);
    return;
  }
  if (lua_type(L, idx) == LUA_TTABLE) {
    lua_Integer n = luaL_len(L, idx);
    if (n == 1 || n == 2) {
      for (int i = 0; i < 2; i++) {
        lua_rawgeti(L, idx, n == 1 ? 1 : i + 1);
        if (!lua_isinteger(L, -1)) fdm_lua_errorf(L, "%s: %s must be an integer or a pair {h, w} of integers", op, what);
        out[i] = pair_int(L, lua_tointeger(L, -1), op, what);
        lua_pop(L, 1);
      }
      return;
    }
  }
  fdm_lua_errorf(L, "%s: %s must be an integer or a pair {h, w}, got %s", op, what, luaL_typename(L, idx));
}

/* options table field as a pair */
static void opt_pair(lua_State *L, int opts, const char *op, const char *field, int def, int *out) {
  out[0] = out[1] = def;
  if (opts == 0 || !lua_istable(L, opts)) return;
  lua_getfield(L, opts, field);
  get_pair(L, -1, op, field, def, out);
  lua_pop(L, 1);
}

static int opt_bool_arg(lua_State *L, int idx, int def) {
  if (lua_isnoneornil(L, idx)) return def;
  return lua_toboolean(L, idx);
}

static fdm_reduction check_reduction(lua_State *L, int idx, const char *op) {
  const char *s = "mean";
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "reduction");
    if (!lua_isnil(L, -1)) s = luaL_checkstring(L, -1);
    lua_pop(L, 1);
  } else if (!lua_isnoneornil(L, idx)) s = luaL_checkstring(L, idx);
  if (!strcmp(s, "mean")) return FDM_REDUCE_MEAN;
  if (!strcmp(s, "sum")) return FDM_REDUCE_SUM;
  if (!strcmp(s, "none")) return FDM_REDUCE_NONE;
  fdm_lua_errorf(L, "%s: reduction must be \"mean\", \"sum\" or \"none\", got \"%s\"", op, s);
  return FDM_REDUCE_MEAN;
}

/* ------------------------------------------------------------------ linear algebra */

static int l_bmm(lua_State *L) {
  fdm_lua_push(L, fdm_bmm(fdm_lua_check(L, 1), fdm_lua_check(L, 2)));
  return 1;
}

static int l_linear(lua_State *L) {
  fdm_lua_push(L, fdm_linear(fdm_lua_check(L, 1), fdm_lua_check(L, 2), opt_tensor(L, 3)));
  return 1;
}

/* ------------------------------------------------------------------ conv */

/* (x, w [, b] [, opts]); a plain table in place of b is taken as the options */
static int conv_common(lua_State *L, int transposed) {
  const char *op = transposed ? "conv_transpose2d" : "conv2d";
  fdm_tensor *x = fdm_lua_check(L, 1), *w = fdm_lua_check(L, 2), *b = NULL;
  int opts = 0;
  if (lua_istable(L, 3) && !fdm_lua_test(L, 3)) opts = 3;
  else {
    b = opt_tensor(L, 3);
    if (!lua_isnoneornil(L, 4)) { luaL_checktype(L, 4, LUA_TTABLE); opts = 4; }
  }
  fdm_conv_opts o;
  fdm_conv_opts_default(&o);
  opt_pair(L, opts, op, "stride", 1, o.stride);
  opt_pair(L, opts, op, "padding", 0, o.padding);
  opt_pair(L, opts, op, "dilation", 1, o.dilation);
  if (transposed) opt_pair(L, opts, op, "output_padding", 0, o.output_padding);
  if (opts) o.groups = (int)fdm_lua_range(L, fdm_lua_optint(L, opts, "groups", 1), 1, INT_MAX, op, "groups");
  fdm_lua_push(L, transposed ? fdm_conv_transpose2d(x, w, b, &o) : fdm_conv2d(x, w, b, &o));
  return 1;
}
static int l_conv2d(lua_State *L) { return conv_common(L, 0); }
static int l_conv_transpose2d(lua_State *L) { return conv_common(L, 1); }

/* (x, k [, {stride, padding}]) */
static int pool_common(lua_State *L, int is_max) {
  const char *op = is_max ? "max_pool2d" : "avg_pool2d";
  fdm_tensor *x = fdm_lua_check(L, 1);
  int k[2], s[2], p[2];
  if (lua_isnoneornil(L, 2)) fdm_lua_errorf(L, "%s: kernel size expected as argument #2", op);
  get_pair(L, 2, op, "kernel_size", 1, k);
  int opts = lua_istable(L, 3) ? 3 : 0;
  if (!opts && !lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  opt_pair(L, opts, op, "stride", -1, s);
  opt_pair(L, opts, op, "padding", 0, p);
  if (s[0] == -1) { s[0] = k[0]; s[1] = k[1]; }
  fdm_lua_push(L, is_max ? fdm_max_pool2d(x, k, s, p) : fdm_avg_pool2d(x, k, s, p));
  return 1;
}
static int l_avg_pool2d(lua_State *L) { return pool_common(L, 0); }
static int l_max_pool2d(lua_State *L) { return pool_common(L, 1); }

/* (x, {size = {h, w} | n, scale_factor = s | {sh, sw}, mode, align_corners}) */
static int l_interpolate(lua_State *L) {
  const char *op = "interpolate";
  fdm_tensor *x = fdm_lua_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (x->ndim != 4) {
    char b[128];
    return fdm_lua_errorf(L, "%s: expected a 4-D input [N, C, H, W], got %s", op, fdm_shapestr(x, b, sizeof b));
  }
  lua_getfield(L, 2, "mode");
  const char *ms = lua_isnil(L, -1) ? "nearest" : luaL_checkstring(L, -1);
  fdm_interp_mode mode;
  if (!strcmp(ms, "nearest")) mode = FDM_INTERP_NEAREST;
  else if (!strcmp(ms, "bilinear")) mode = FDM_INTERP_BILINEAR;
  else return fdm_lua_errorf(L, "%s: mode must be \"nearest\" or \"bilinear\", got \"%s\"", op, ms);
  lua_pop(L, 1);
  int ac = fdm_lua_optbool(L, 2, "align_corners", 0);
  lua_getfield(L, 2, "size");
  int has_size = !lua_isnil(L, -1);
  int size[2] = {0, 0};
  if (has_size) get_pair(L, -1, op, "size", 0, size);
  lua_pop(L, 1);
  lua_getfield(L, 2, "scale_factor");
  int has_scale = !lua_isnil(L, -1);
  double sc[2] = {0, 0};
  if (has_scale) {
    if (lua_type(L, -1) == LUA_TNUMBER) sc[0] = sc[1] = lua_tonumber(L, -1);
    else if (lua_istable(L, -1) && (luaL_len(L, -1) == 2 || luaL_len(L, -1) == 1)) {
      lua_Integer n = luaL_len(L, -1);
      for (int i = 0; i < 2; i++) {
        lua_rawgeti(L, -1, n == 1 ? 1 : i + 1);
        if (lua_type(L, -1) != LUA_TNUMBER) return fdm_lua_errorf(L, "%s: scale_factor must be a number or {sh, sw}", op);
        sc[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
      }
    } else return fdm_lua_errorf(L, "%s: scale_factor must be a number or {sh, sw}", op);
  }
  lua_pop(L, 1);
  if (has_size == has_scale) return fdm_lua_errorf(L, "%s: give exactly one of size and scale_factor", op);
  int64_t oh, ow;
  if (has_size) { oh = size[0]; ow = size[1]; sc[0] = sc[1] = 0; }
  else {
    if (!(sc[0] > 0) || !(sc[1] > 0)) return fdm_lua_errorf(L, "%s: scale_factor must be positive, got {%f, %f}", op, sc[0], sc[1]);
    oh = (int64_t)floor((double)x->shape[2] * sc[0]);
    ow = (int64_t)floor((double)x->shape[3] * sc[1]);
  }
  fdm_lua_push(L, fdm_interpolate(x, oh, ow, sc[0], sc[1], mode, ac));
  return 1;
}

/* ------------------------------------------------------------------ normalisation */

static int bn_common(lua_State *L, int gelu) {
  fdm_tensor *x = fdm_lua_check(L, 1);
  fdm_tensor *rm = opt_tensor(L, 2), *rv = opt_tensor(L, 3), *w = opt_tensor(L, 4), *b = opt_tensor(L, 5);
  int training = opt_bool_arg(L, 6, 0);
  double momentum = luaL_optnumber(L, 7, 0.1), eps = luaL_optnumber(L, 8, 1e-5);
  fdm_lua_push(L, gelu ? fdm_batch_norm_gelu(x, rm, rv, w, b, training, momentum, eps)
                       : fdm_batch_norm(x, rm, rv, w, b, training, momentum, eps));
  return 1;
}
static int l_batch_norm(lua_State *L) { return bn_common(L, 0); }
static int l_batch_norm_gelu(lua_State *L) { return bn_common(L, 1); }

static int l_group_norm(lua_State *L) {
  fdm_tensor *x = fdm_lua_check(L, 1);
  lua_Integer g = luaL_checkinteger(L, 2);
  fdm_lua_range(L, g, 1, INT_MAX, "group_norm", "groups");
  fdm_tensor *w = opt_tensor(L, 3), *b = opt_tensor(L, 4);
  double eps = luaL_optnumber(L, 5, 1e-5);
  fdm_lua_push(L, fdm_group_norm(x, (int)g, w, b, eps));
  return 1;
}

/* F.group_norm_act(x, groups, weight, bias, eps, {scale =, shift =, act = "gelu"|"silu"|"none"}) */
static int l_group_norm_act(lua_State *L) {
  static const char *const acts[] = {"none", "gelu", "silu", NULL};
  fdm_tensor *x = fdm_lua_check(L, 1);
  lua_Integer g = luaL_checkinteger(L, 2);
  fdm_lua_range(L, g, 1, INT_MAX, "group_norm_act", "groups");
  fdm_tensor *w = opt_tensor(L, 3), *b = opt_tensor(L, 4);
  double eps = luaL_optnumber(L, 5, 1e-5);
  fdm_tensor *scale = NULL, *shift = NULL;
  int act = FDM_ACT_NONE;
  if (!lua_isnoneornil(L, 6)) {
    luaL_checktype(L, 6, LUA_TTABLE);
    lua_getfield(L, 6, "scale");
    scale = opt_tensor(L, -1);
    lua_getfield(L, 6, "shift");
    shift = opt_tensor(L, -1);
    lua_getfield(L, 6, "act");
    if (!lua_isnil(L, -1)) {
      const char *name = lua_tostring(L, -1);
      act = -1;
      for (int i = 0; name && acts[i]; i++)
        if (strcmp(name, acts[i]) == 0) act = i;
      if (act < 0)
        return fdm_lua_errorf(L, "group_norm_act: act must be \"gelu\", \"silu\" or \"none\", got %s",
                              name ? name : luaL_typename(L, -1));
    }
    lua_pop(L, 1);   /* scale and shift stay on the stack while the op runs */
  }
  fdm_lua_push(L, fdm_group_norm_act(x, (int)g, w, b, eps, scale, shift, (fdm_act)act));
  return 1;
}

static int l_layer_norm(lua_State *L) {
  fdm_tensor *x = fdm_lua_check(L, 1);
  int64_t ns[FDM_MAXDIM];
  int nd;
  if (lua_type(L, 2) == LUA_TNUMBER) { ns[0] = luaL_checkinteger(L, 2); nd = 1; }
  else if (lua_istable(L, 2)) {
    lua_Integer n = luaL_len(L, 2);
    if (n < 1 || n > FDM_MAXDIM) return fdm_lua_errorf(L, "layer_norm: normalized_shape must have 1 to %d entries", FDM_MAXDIM);
    nd = (int)n;
    for (int i = 0; i < nd; i++) {
      lua_rawgeti(L, 2, i + 1);
      if (!lua_isinteger(L, -1)) return fdm_lua_errorf(L, "layer_norm: normalized_shape must hold integers");
      ns[i] = lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
  } else return fdm_lua_errorf(L, "layer_norm: normalized_shape must be a number or a table, got %s", luaL_typename(L, 2));
  fdm_tensor *w = opt_tensor(L, 3), *b = opt_tensor(L, 4);
  double eps = luaL_optnumber(L, 5, 1e-5);
  fdm_lua_push(L, fdm_layer_norm(x, nd, ns, w, b, eps));
  return 1;
}

/* ------------------------------------------------------------------ activations */

static int softmax_common(lua_State *L, int log) {
  fdm_tensor *x = fdm_lua_check(L, 1);
  int nd = x->ndim ? x->ndim : 1, dim = nd - 1;
  if (!lua_isnoneornil(L, 2)) {
    if (!lua_isinteger(L, 2))
      return fdm_lua_errorf(L, "%s: dim must be an integer, got %s", log ? "log_softmax" : "softmax", luaL_typename(L, 2));
    lua_Integer d = lua_tointeger(L, 2);
    if (d == 0 || d > nd || d < -nd)
      return fdm_lua_errorf(L, "%s: dim %lld out of range for a %d-d tensor (dims count from 1; negative from the end)",
                        log ? "log_softmax" : "softmax", (long long)d, x->ndim);
    dim = (int)(d > 0 ? d - 1 : nd + d);
  }
  fdm_lua_push(L, fdm_softmax(x, dim, log));
  return 1;
}
static int l_softmax(lua_State *L) { return softmax_common(L, 0); }
static int l_log_softmax(lua_State *L) { return softmax_common(L, 1); }

static int l_dropout(lua_State *L) {
  fdm_tensor *x = fdm_lua_check(L, 1);
  double p = luaL_optnumber(L, 2, 0.5);
  int training = opt_bool_arg(L, 3, 1);
  fdm_lua_push(L, fdm_dropout(x, p, training));
  return 1;
}

/* ------------------------------------------------------------------ losses, misc */

static int l_mse_loss(lua_State *L) {
  fdm_tensor *a = fdm_lua_check(L, 1), *b = fdm_lua_check(L, 2);
  fdm_lua_push(L, fdm_mse_loss(a, b, check_reduction(L, 3, "mse_loss")));
  return 1;
}

static int l_cross_entropy(lua_State *L) {
  fdm_tensor *a = fdm_lua_check(L, 1), *b = fdm_lua_check(L, 2);
  fdm_lua_push(L, fdm_cross_entropy(a, b, check_reduction(L, 3, "cross_entropy")));
  return 1;
}

static int l_one_hot(lua_State *L) {
  fdm_tensor *y = fdm_lua_check(L, 1);
  lua_Integer n = luaL_optinteger(L, 2, -1);
  fdm_lua_push(L, fdm_one_hot(y, n));
  return 1;
}

/* (x, kernel_size [, sigma]); kernel_size / sigma: number or {x (W), y (H)} as torchvision */
static int l_gaussian_blur(lua_State *L) {
  const char *op = "gaussian_blur";
  fdm_tensor *x = fdm_lua_check(L, 1);
  int k[2];
  if (lua_isnoneornil(L, 2)) return fdm_lua_errorf(L, "%s: kernel_size expected as argument #2", op);
  get_pair(L, 2, op, "kernel_size", 0, k);
  double s[2];
  for (int i = 0; i < 2; i++) s[i] = 0.3 * ((k[i] - 1) * 0.5 - 1) + 0.8;   /* torchvision's default */
  if (lua_type(L, 3) == LUA_TNUMBER) s[0] = s[1] = lua_tonumber(L, 3);
  else if (lua_istable(L, 3)) {
    lua_Integer n = luaL_len(L, 3);
    if (n != 1 && n != 2) return fdm_lua_errorf(L, "%s: sigma must be a number or {sx, sy}", op);
    for (int i = 0; i < 2; i++) {
      lua_rawgeti(L, 3, n == 1 ? 1 : i + 1);
      if (lua_type(L, -1) != LUA_TNUMBER) return fdm_lua_errorf(L, "%s: sigma must be a number or {sx, sy}", op);
      s[i] = lua_tonumber(L, -1);
      lua_pop(L, 1);
    }
  } else if (!lua_isnoneornil(L, 3)) return fdm_lua_errorf(L, "%s: sigma must be a number or {sx, sy}, got %s", op, luaL_typename(L, 3));
  fdm_lua_push(L, fdm_gaussian_blur(x, k[0], k[1], s[0], s[1]));
  return 1;
}

static int l_sdpa(lua_State *L) {
  fdm_tensor *q = fdm_lua_check(L, 1), *k = fdm_lua_check(L, 2), *v = fdm_lua_check(L, 3);
  fdm_tensor *m = opt_tensor(L, 4);
  fdm_lua_push(L, fdm_scaled_dot_product_attention(q, k, v, m));
  return 1;
}

static const luaL_Reg F_funcs[] = {
  {"bmm", l_bmm},
  {"linear", l_linear},
  {"conv2d", l_conv2d},
  {"conv_transpose2d", l_conv_transpose2d},
  {"avg_pool2d", l_avg_pool2d},
  {"max_pool2d", l_max_pool2d},
  {"interpolate", l_interpolate},
  {"batch_norm", l_batch_norm},
  {"batch_norm_gelu", l_batch_norm_gelu},
  {"group_norm", l_group_norm},
  {"group_norm_act", l_group_norm_act},
  {"layer_norm", l_layer_norm},
  {"softmax", l_softmax},
  {"log_softmax", l_log_softmax},
  {"dropout", l_dropout},
  {"mse_loss", l_mse_loss},
  {"cross_entropy", l_cross_entropy},
  {"one_hot", l_one_hot},
  {"gaussian_blur", l_gaussian_blur},
  {"scaled_dot_product_attention", l_sdpa},
  {NULL, NULL}
};

void fdm_open_nnops(lua_State *L) {
  luaL_checkstack(L, 4, "fdm_open_nnops");
  lua_getfield(L, -1, "F");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "F");
  }
  luaL_setfuncs(L, F_funcs, 0);
  luaL_setfuncs(L, fdm_lua_shared_fns, 0);   /* matmul, gelu, ...: the tensor methods' bindings */
  lua_pop(L, 1);
}
