/* ltensor.c: Lua bindings for tensors: creation, properties, views,
** elementwise math, reductions, autograd, RNG. Thin: check, call, push. */
#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "fdm_lua.h"
#include "fdm_ops.h"
#include "fdm_nnops.h"
#include "fdm_autograd.h"
#include "fdm_engine.h"
#include "fdm_backend.h"

#define CHECK(L, i) fdm_lua_check(L, i)
#define PUSH(L, t) (fdm_lua_push(L, (t)), 1)

/* the last argument if it is an options table (not a tensor, not a shape) */
static int opts_index(lua_State *L, int from) {
  int top = lua_gettop(L);
  if (top >= from && lua_istable(L, top) && !fdm_lua_test(L, top) && luaL_len(L, top) == 0) return top;
  return 0;
}

static void apply_requires_grad(lua_State *L, fdm_tensor *t, int opts) {
  if (opts && fdm_lua_optbool(L, opts, "requires_grad", 0)) {
    if (t->dtype != FDM_FLOAT32) fdm_lua_errorf(L, "only float32 tensors can require grad, got %s", fdm_dtype_name(t->dtype));
    t->requires_grad = 1;
  }
}

/* ---- creation ---- */
static int shaped(lua_State *L, int kind) {
  int64_t shape[FDM_MAXDIM];
  int nd = fdm_lua_shape(L, 1, shape);
  int first_after = lua_istable(L, 1) ? 2 : nd + 1;
  double v = 0;
  if (kind == 3) { v = luaL_checknumber(L, first_after); first_after++; }
  int opts = opts_index(L, first_after);
  fdm_dtype dt = fdm_lua_optdtype(L, opts, "dtype", FDM_FLOAT32);
  fdm_device dev = fdm_lua_optdevice(L, opts, "device", fdm_lua_default_device());
  fdm_tensor *t = NULL;
  switch (kind) {
    case 0: t = fdm_empty(dt, nd, shape, dev); break;
    case 1: t = fdm_zeros(dt, nd, shape, dev); break;
    case 2: t = fdm_full(dt, nd, shape, 1.0, dev); break;
    case 3: t = fdm_full(dt, nd, shape, v, dev); break;
    case 4: t = fdm_randn(nd, shape, dev); break;
    case 5: t = fdm_rand(nd, shape, dev); break;
  }
  if (t && (kind == 4 || kind == 5) && dt != FDM_FLOAT32) {
    fdm_tensor *c = fdm_to_dtype(t, dt);
    fdm_release(t);
    t = c;
  }
  if (!t) return fdm_lua_error(L);
  fdm_lua_push(L, t);
  apply_requires_grad(L, t, opts);
  return 1;
}
static int l_empty(lua_State *L) { return shaped(L, 0); }
static int l_zeros(lua_State *L) { return shaped(L, 1); }
static int l_ones(lua_State *L) { return shaped(L, 2); }
static int l_full(lua_State *L) { return shaped(L, 3); }
static int l_randn(lua_State *L) { return shaped(L, 4); }
static int l_rand(lua_State *L) { return shaped(L, 5); }

static int like(lua_State *L, int kind) {
  fdm_tensor *t = CHECK(L, 1), *r = NULL;
  int opts = opts_index(L, 2);
  fdm_dtype dt = fdm_lua_optdtype(L, opts, "dtype", t->dtype);
  switch (kind) {
    case 1: r = fdm_zeros(dt, t->ndim, t->shape, t->device); break;
    case 2: r = fdm_full(dt, t->ndim, t->shape, 1.0, t->device); break;
    case 3: r = fdm_full(dt, t->ndim, t->shape, luaL_checknumber(L, 2), t->device); break;
    case 4: r = fdm_randn(t->ndim, t->shape, t->device); break;
    case 5: r = fdm_rand(t->ndim, t->shape, t->device); break;
    case 0: r = fdm_empty(dt, t->ndim, t->shape, t->device); break;
  }
  return PUSH(L, r);
}
static int l_zeros_like(lua_State *L) { return like(L, 1); }
static int l_ones_like(lua_State *L) { return like(L, 2); }
static int l_full_like(lua_State *L) { return like(L, 3); }
static int l_randn_like(lua_State *L) { return like(L, 4); }
static int l_rand_like(lua_State *L) { return like(L, 5); }
static int l_empty_like(lua_State *L) { return like(L, 0); }

static int l_randint(lua_State *L) {
  lua_Integer lo = luaL_checkinteger(L, 1), hi = luaL_checkinteger(L, 2);
  int64_t shape[FDM_MAXDIM];
  int nd = fdm_lua_shape(L, 3, shape);
  int opts = opts_index(L, lua_istable(L, 3) ? 4 : 3 + nd);
  fdm_device dev = fdm_lua_optdevice(L, opts, "device", fdm_lua_default_device());
  return PUSH(L, fdm_randint(lo, hi, nd, shape, dev));
}

static int l_randperm(lua_State *L) {
  int opts = opts_index(L, 2);
  return PUSH(L, fdm_randperm(luaL_checkinteger(L, 1), fdm_lua_optdevice(L, opts, "device", fdm_lua_default_device())));
}

static int l_arange(lua_State *L) {
  int nnum = 0;
  while (lua_type(L, nnum + 1) == LUA_TNUMBER) nnum++;
  double start = 0, stop, step = 1;
  if (nnum == 0) return fdm_lua_errorf(L, "arange: expected arange(stop) or arange(start, stop [, step])");
  if (nnum == 1) stop = lua_tonumber(L, 1);
  else { start = lua_tonumber(L, 1); stop = lua_tonumber(L, 2); if (nnum > 2) step = lua_tonumber(L, 3); }
  int allint = 1;
  for (int i = 1; i <= nnum && i <= 3; i++) if (!lua_isinteger(L, i)) allint = 0;
  int opts = opts_index(L, nnum + 1);
  fdm_dtype dt = fdm_lua_optdtype(L, opts, "dtype", allint ? FDM_INT64 : FDM_FLOAT32);
  fdm_device dev = fdm_lua_optdevice(L, opts, "device", fdm_lua_default_device());
  fdm_tensor *t;
  if (allint && dt == FDM_INT64 && dev == FDM_CPU) {
    /* exact in int64: the core's fdm_arange counts in doubles, which round
    ** integers beyond 2^53 (arange(maxinteger - 2, maxinteger) had 0 elements) */
    lua_Integer a = nnum == 1 ? 0 : lua_tointeger(L, 1), b = nnum == 1 ? lua_tointeger(L, 1) : lua_tointeger(L, 2);
    lua_Integer s = nnum > 2 ? lua_tointeger(L, 3) : 1;
    if (s == 0) return fdm_lua_errorf(L, "arange: step must be nonzero");
    __int128 span = (__int128)b - a, cnt = 0;
    if ((span > 0 && s > 0) || (span < 0 && s < 0)) cnt = (span + (s > 0 ? s - 1 : s + 1)) / s;
    if (cnt > (__int128)1e12) return fdm_lua_errorf(L, "arange: too many elements (%.4g)", (double)cnt);
    int64_t n = (int64_t)cnt;
    t = fdm_empty(FDM_INT64, 1, &n, dev);
    if (t) {
      int64_t *p = fdm_data(t);
      for (int64_t i = 0; i < n; i++) p[i] = (int64_t)((__int128)a + (__int128)i * s);
    }
  } else t = fdm_arange(start, stop, step, dt, dev);
  fdm_lua_push(L, t);
  apply_requires_grad(L, t, opts);
  return 1;
}

static int l_linspace(lua_State *L) {
  int opts = opts_index(L, 4);
  fdm_tensor *t = fdm_linspace(luaL_checknumber(L, 1), luaL_checknumber(L, 2), luaL_checkinteger(L, 3),
                               fdm_lua_optdtype(L, opts, "dtype", FDM_FLOAT32), fdm_lua_optdevice(L, opts, "device", fdm_lua_default_device()));
  fdm_lua_push(L, t);
  apply_requires_grad(L, t, opts);
  return 1;
}

/* fdm.tensor(nested tables or number [, opts]) */
static void infer_nested(lua_State *L, int idx, int depth, int nd_seen, int64_t *shape, int *nd, int *kind) {
  int ty = lua_type(L, idx);
  if (ty == LUA_TTABLE) {
    int64_t n = (int64_t)luaL_len(L, idx);
    if (depth >= FDM_MAXDIM) fdm_lua_errorf(L, "tensor: nested deeper than %d levels", FDM_MAXDIM);
    if (depth >= *nd) { if (nd_seen) fdm_lua_errorf(L, "tensor: ragged nested table (depth %d)", depth + 1); shape[depth] = n; *nd = depth + 1; }
    else if (shape[depth] != n) fdm_lua_errorf(L, "tensor: ragged nested table: expected %lld elements at depth %d, got %lld",
                                           (long long)shape[depth], depth + 1, (long long)n);
    for (int64_t i = 1; i <= n; i++) {
      lua_geti(L, idx, i);
      infer_nested(L, lua_gettop(L), depth + 1, nd_seen || i > 1, shape, nd, kind);
      lua_pop(L, 1);
    }
    if (n == 0 && depth + 1 > *nd) *nd = depth + 1;
  } else if (ty == LUA_TNUMBER || ty == LUA_TBOOLEAN) {
    if (depth != *nd && (nd_seen || depth < *nd)) fdm_lua_errorf(L, "tensor: ragged nested table (a number at depth %d)", depth + 1);
    *nd = depth;
    int k = ty == LUA_TBOOLEAN ? 0 : lua_isinteger(L, idx) ? 1 : 2;
    if (k > *kind) *kind = k;
  } else fdm_lua_errorf(L, "tensor: expected numbers or nested tables of numbers, got %s", luaL_typename(L, idx));
}

static void fill_nested(lua_State *L, int idx, fdm_tensor *t, int64_t *pos) {
  if (lua_type(L, idx) == LUA_TTABLE) {
    int64_t n = (int64_t)luaL_len(L, idx);
    for (int64_t i = 1; i <= n; i++) { lua_geti(L, idx, i); fill_nested(L, lua_gettop(L), t, pos); lua_pop(L, 1); }
    return;
  }
  double v = lua_isboolean(L, idx) ? lua_toboolean(L, idx) : lua_tonumber(L, idx);
  /* integer dtypes: refuse what they cannot hold (a C cast would be undefined:
  ** 1e30 gave INT64_MIN) */
  if (t->dtype == FDM_INT64 && !lua_isinteger(L, idx) && !lua_isboolean(L, idx) &&
      !(v >= -0x1p63 && v < 0x1p63 && v == floor(v)))
    fdm_lua_errorf(L, "tensor: element %lld (%.15g) is not an integer that int64 can hold",
                   (long long)*pos + 1, v);
  if (t->dtype == FDM_UINT8 && !(v >= 0 && v <= 255 && v == floor(v)))
    fdm_lua_errorf(L, "tensor: element %lld (%.15g) is not an integer in 0..255, as uint8 needs",
                   (long long)*pos + 1, v);
  switch (t->dtype) {
    case FDM_FLOAT32: ((float *)fdm_data(t))[*pos] = (float)v; break;
    case FDM_INT64: ((int64_t *)fdm_data(t))[*pos] = lua_isinteger(L, idx) ? lua_tointeger(L, idx) : (int64_t)v; break;
    case FDM_UINT8: case FDM_BOOL: ((uint8_t *)fdm_data(t))[*pos] = t->dtype == FDM_BOOL ? v != 0 : (uint8_t)(int)v; break;
    case FDM_FLOAT16: ((uint16_t *)fdm_data(t))[*pos] = fdm_float_to_half((float)v); break;
    case FDM_BFLOAT16: ((uint16_t *)fdm_data(t))[*pos] = fdm_float_to_bf16((float)v); break;
    default: break;
  }
  (*pos)++;
}

static int l_tensor(lua_State *L) {
  if (fdm_lua_test(L, 1)) {   /* fdm.tensor(t): a copy */
    fdm_tensor *c = fdm_detach(CHECK(L, 1)), *r = c ? fdm_clone(c) : NULL;
    fdm_release(c);
    return PUSH(L, r);
  }
  int64_t shape[FDM_MAXDIM] = {0};
  int nd = 0, kind = 0;
  luaL_argexpected(L, lua_istable(L, 1) || lua_isnumber(L, 1) || lua_isboolean(L, 1), 1, "table or number");
  if (lua_istable(L, 1)) nd = -1 + 1, infer_nested(L, 1, 0, 0, shape, &nd, &kind);
  else kind = lua_isboolean(L, 1) ? 0 : lua_isinteger(L, 1) ? 1 : 2;
  int opts = lua_istable(L, 2) ? 2 : 0;
  /* Lua's integer/float subtypes are too easy to mix up to pick a dtype from
  ** (2^3 is a float, 6//2 an integer): numbers make float32, booleans bool */
  fdm_dtype def = kind == 0 ? FDM_BOOL : FDM_FLOAT32;
  fdm_dtype dt = fdm_lua_optdtype(L, opts, "dtype", def);
  fdm_device dev = fdm_lua_optdevice(L, opts, "device", fdm_lua_default_device());
  fdm_tensor *t = fdm_empty(dt, nd, shape, FDM_CPU);
  if (!t) return fdm_lua_error(L);
  int64_t pos = 0;
  fill_nested(L, 1, t, &pos);
  fdm_lua_push(L, t);   /* collected if the move fails */
  if (dev != FDM_CPU) {
    t = fdm_to_device(t, dev);
    if (!t) return fdm_lua_error(L);
    fdm_lua_push(L, t);
  }
  apply_requires_grad(L, t, opts);
  return 1;
}

/* ---- RNG ---- */
static int l_manual_seed(lua_State *L) { fdm_manual_seed((uint64_t)luaL_checkinteger(L, 1)); return 0; }
static int l_get_rng_state(lua_State *L) {
  uint64_t s, o;
  fdm_rng_get(&s, &o);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)s); lua_setfield(L, -2, "seed");
  lua_pushinteger(L, (lua_Integer)o); lua_setfield(L, -2, "offset");
  return 1;
}
static int l_set_rng_state(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "seed"); lua_getfield(L, 1, "offset");
  if (!lua_isinteger(L, -2) || !lua_isinteger(L, -1)) return fdm_lua_errorf(L, "set_rng_state: expected {seed=int, offset=int}");
  fdm_rng_set((uint64_t)lua_tointeger(L, -2), (uint64_t)lua_tointeger(L, -1));
  return 0;
}

/* ---- properties ---- */
static void push_shape(lua_State *L, const fdm_tensor *t) {
  lua_createtable(L, t->ndim, 0);
  for (int d = 0; d < t->ndim; d++) { lua_pushinteger(L, t->shape[d]); lua_rawseti(L, -2, d + 1); }
}

static int l_size(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  if (lua_isnoneornil(L, 2)) { push_shape(L, t); return 1; }
  lua_pushinteger(L, t->shape[fdm_lua_dim(L, 2, t->ndim)]);
  return 1;
}
static int l_stride(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  if (!lua_isnoneornil(L, 2)) { lua_pushinteger(L, t->stride[fdm_lua_dim(L, 2, t->ndim)]); return 1; }
  lua_createtable(L, t->ndim, 0);
  for (int d = 0; d < t->ndim; d++) { lua_pushinteger(L, t->stride[d]); lua_rawseti(L, -2, d + 1); }
  return 1;
}
static int l_dim(lua_State *L) { lua_pushinteger(L, CHECK(L, 1)->ndim); return 1; }
static int l_numel(lua_State *L) { lua_pushinteger(L, fdm_numel(CHECK(L, 1))); return 1; }
static int l_is_contiguous(lua_State *L) { lua_pushboolean(L, fdm_is_contiguous(CHECK(L, 1))); return 1; }
static int l_len(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  if (t->ndim == 0) return fdm_lua_errorf(L, "len() of a 0-d tensor");
  lua_pushinteger(L, t->shape[0]);
  return 1;
}
static int l_data_ptr(lua_State *L) { lua_pushinteger(L, (lua_Integer)(intptr_t)fdm_data(CHECK(L, 1))); return 1; }
static int l_storage_offset(lua_State *L) { lua_pushinteger(L, CHECK(L, 1)->offset); return 1; }
static int l_same_storage(lua_State *L) { lua_pushboolean(L, CHECK(L, 1)->storage == CHECK(L, 2)->storage); return 1; }

static void push_scalar(lua_State *L, const fdm_tensor *t, int64_t k) {
  const void *p = fdm_data(t);
  switch (t->dtype) {
    case FDM_FLOAT32: lua_pushnumber(L, ((const float *)p)[k]); break;
    case FDM_FLOAT16: lua_pushnumber(L, fdm_half_to_float(((const uint16_t *)p)[k])); break;
    case FDM_BFLOAT16: lua_pushnumber(L, fdm_bf16_to_float(((const uint16_t *)p)[k])); break;
    case FDM_INT64: lua_pushinteger(L, ((const int64_t *)p)[k]); break;
    case FDM_UINT8: lua_pushinteger(L, ((const uint8_t *)p)[k]); break;
    case FDM_BOOL: lua_pushboolean(L, ((const uint8_t *)p)[k]); break;
    default: lua_pushnil(L);
  }
}

static int l_item(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  char b[128];
  if (fdm_numel(t) != 1)
    return fdm_lua_errorf(L, "item: a tensor with %lld elements (shape %s) cannot be converted to a number",
                      (long long)fdm_numel(t), fdm_shapestr(t, b, sizeof b));
  fdm_tensor *h = fdm_host_contiguous(t);
  if (!h) return fdm_lua_error(L);
  push_scalar(L, h, 0);
  fdm_release(h);
  return 1;
}

static void tolist_rec(lua_State *L, const fdm_tensor *t, int d, int64_t off) {
  if (d == t->ndim) { push_scalar(L, t, off); return; }
  lua_createtable(L, (int)t->shape[d], 0);
  for (int64_t i = 0; i < t->shape[d]; i++) {
    tolist_rec(L, t, d + 1, off + i * t->stride[d]);
    lua_rawseti(L, -2, i + 1);
  }
}
/* Lua values tolist may build: tables for every index of the leading dims
** plus the numbers; beyond this it would exhaust memory (or run for minutes
** on an empty [2^62, 0] tensor) instead of answering */
#define TOLIST_MAX ((int64_t)1 << 28)

static int l_tolist(lua_State *L) {
  fdm_tensor *src = CHECK(L, 1);
  int64_t values = 1, tables = 1;
  for (int d = 0; d < src->ndim; d++) {
    int64_t s = src->shape[d] ? src->shape[d] : 1;
    values = values > TOLIST_MAX / s ? TOLIST_MAX + 1 : values * s;
    if (d < src->ndim - 1) tables = tables > TOLIST_MAX / s ? TOLIST_MAX + 1 : tables * s;
  }
  if (values > TOLIST_MAX || tables > TOLIST_MAX) {
    char b[128];
    return fdm_lua_errorf(L, "tolist: a tensor of shape %s would make more than %lld Lua values",
                          fdm_shapestr(src, b, sizeof b), (long long)TOLIST_MAX);
  }
  fdm_tensor *t = fdm_host_contiguous(src);
  if (!t) return fdm_lua_error(L);
  fdm_lua_push(L, t);   /* owned by the stack, so a Lua error cannot leak it */
  luaL_checkstack(L, t->ndim + 10, "tolist");
  tolist_rec(L, t, 0, 0);
  return 1;
}

static int l_to(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  fdm_dtype dt = t->dtype;
  fdm_device dev = t->device;
  for (int i = 2; i <= lua_gettop(L); i++) {
    if (lua_isstring(L, i)) {
      const char *s = lua_tostring(L, i);
      if (fdm_dtype_from_name(s, &dt) && fdm_device_from_name(s, &dev))
        return fdm_lua_errorf(L, "to: '%s' is neither a dtype nor a device", s);
    } else if (lua_istable(L, i)) {
      dt = fdm_lua_optdtype(L, i, "dtype", dt);
      dev = fdm_lua_optdevice(L, i, "device", dev);
    }
  }
  if (dev != t->device && !fdm_backend_get(dev)) return fdm_lua_errorf(L, "to: %s", fdm_lasterror());
  fdm_tensor *c = fdm_to_dtype(t, dt);
  if (!c) return fdm_lua_error(L);
  fdm_tensor *r = fdm_to_device(c, dev);
  fdm_release(c);
  return PUSH(L, r);
}

/* ---- views ---- */
static int l_view(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int64_t shape[FDM_MAXDIM];
  int nd = fdm_lua_shape(L, 2, shape);
  return PUSH(L, fdm_view(t, nd, shape));
}
static int l_reshape(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int64_t shape[FDM_MAXDIM];
  int nd = fdm_lua_shape(L, 2, shape);
  return PUSH(L, fdm_reshape(t, nd, shape));
}
static int l_narrow(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int d = fdm_lua_dim(L, 2, t->ndim);
  lua_Integer s = luaL_checkinteger(L, 3), n = luaL_checkinteger(L, 4);
  if (s < 0) s += t->shape[d] + 1;
  return PUSH(L, fdm_narrow(t, d, s - 1, n));
}
static int l_slice(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int d = fdm_lua_dim(L, 2, t->ndim);
  int64_t len = t->shape[d];
  lua_Integer s = luaL_optinteger(L, 3, 1), e = luaL_optinteger(L, 4, len), st = luaL_optinteger(L, 5, 1);
  if (s < 0) s += len + 1;
  if (e < 0) e += len + 1;
  if (e < s - 1) e = s - 1;
  return PUSH(L, fdm_slice(t, d, s - 1, e, st));
}
static int l_select(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int d = fdm_lua_dim(L, 2, t->ndim);
  lua_Integer i = luaL_checkinteger(L, 3);
  if (i < 0) i += t->shape[d] + 1;
  return PUSH(L, fdm_select(t, d, i - 1));
}
static int l_transpose(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  if (lua_isnoneornil(L, 2)) {
    if (t->ndim != 2) return fdm_lua_errorf(L, "t(): expects a 2-d tensor, got %d dims", t->ndim);
    return PUSH(L, fdm_transpose(t, 0, 1));
  }
  return PUSH(L, fdm_transpose(t, fdm_lua_dim(L, 2, t->ndim), fdm_lua_dim(L, 3, t->ndim)));
}
static int l_permute(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int perm[FDM_MAXDIM];
  int tab = lua_istable(L, 2);
  for (int d = 0; d < t->ndim; d++) {
    if (tab) lua_geti(L, 2, d + 1); else lua_pushvalue(L, d + 2);
    if (!lua_isinteger(L, -1)) return fdm_lua_errorf(L, "permute: expected %d dims, got fewer", t->ndim);
    perm[d] = fdm_lua_dim(L, lua_gettop(L), t->ndim);
    lua_pop(L, 1);
  }
  return PUSH(L, fdm_permute(t, perm));
}
static int l_expand(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int64_t shape[FDM_MAXDIM];
  int nd;
  fdm_tensor *o = fdm_lua_test(L, 2);
  if (o) { nd = o->ndim; memcpy(shape, o->shape, sizeof shape); }
  else nd = fdm_lua_shape(L, 2, shape);
  for (int d = 0; d < nd; d++)   /* -1 keeps a size; the core took other negatives as sizes */
    if (shape[d] < -1)
      return fdm_lua_errorf(L, "expand: size %lld at dim %d must be >= 0 (or -1 to keep the size)",
                            (long long)shape[d], d + 1);
  return PUSH(L, fdm_expand(t, nd, shape));
}
static int l_squeeze(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  return PUSH(L, fdm_squeeze(t, lua_isnoneornil(L, 2) ? -1 : fdm_lua_dim(L, 2, t->ndim)));
}
static int l_unsqueeze(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  return PUSH(L, fdm_unsqueeze(t, fdm_lua_dim(L, 2, t->ndim + 1)));
}
static int l_detach(lua_State *L) { return PUSH(L, fdm_detach(CHECK(L, 1))); }
static int l_contiguous(lua_State *L) { return PUSH(L, fdm_contiguous(CHECK(L, 1))); }
static int l_clone(lua_State *L) { return PUSH(L, fdm_clone(CHECK(L, 1))); }

static int dims_arg(lua_State *L, int idx, int ndim, int *dims) {
  int n = 0;
  if (lua_istable(L, idx)) {
    int len = (int)luaL_len(L, idx);
    for (int k = 0; k < len && k < FDM_MAXDIM; k++) {
      lua_geti(L, idx, k + 1);
      dims[n++] = fdm_lua_dim(L, lua_gettop(L), ndim);
      lua_pop(L, 1);
    }
  } else while (lua_isinteger(L, idx + n) && n < FDM_MAXDIM) { dims[n] = fdm_lua_dim(L, idx + n, ndim); n++; }
  return n;
}

static int l_flip(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int dims[FDM_MAXDIM], n = dims_arg(L, 2, t->ndim, dims);
  return PUSH(L, fdm_flip(t, n, dims));
}
/* entry k of a list (on top of the stack) as an integer, else an error */
static int64_t int_entry(lua_State *L, const char *op, const char *what, int k) {
  int ok;
  lua_Integer v = lua_tointegerx(L, -1, &ok);
  if (!ok) fdm_lua_errorf(L, "%s: %s[%d] must be an integer, got %s", op, what, k + 1, luaL_typename(L, -1));
  return v;
}
static int l_roll(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int64_t shifts[FDM_MAXDIM];
  int dims[FDM_MAXDIM], n;
  if (lua_istable(L, 2)) {
    n = (int)luaL_len(L, 2);
    if (n > FDM_MAXDIM || !lua_istable(L, 3) || luaL_len(L, 3) != n) return fdm_lua_errorf(L, "roll: shifts and dims must be tables of equal length");
    for (int k = 0; k < n; k++) {
      lua_geti(L, 2, k + 1); shifts[k] = int_entry(L, "roll", "shifts", k); lua_pop(L, 1);
      lua_geti(L, 3, k + 1); dims[k] = fdm_lua_dim(L, lua_gettop(L), t->ndim); lua_pop(L, 1);
    }
  } else { n = 1; shifts[0] = luaL_checkinteger(L, 2); dims[0] = fdm_lua_dim(L, 3, t->ndim); }
  return PUSH(L, fdm_roll(t, n, shifts, dims));
}

static int tensor_list(lua_State *L, int idx, fdm_tensor **ts, int max) {
  luaL_checktype(L, idx, LUA_TTABLE);
  int n = (int)luaL_len(L, idx);
  if (n > max) fdm_lua_errorf(L, "at most %d tensors at once, got %d", max, n);
  for (int k = 0; k < n; k++) {
    lua_geti(L, idx, k + 1);
    ts[k] = fdm_lua_test(L, -1);
    if (!ts[k]) fdm_lua_errorf(L, "element %d of the list is not a tensor (%s)", k + 1, luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  return n;
}
static int l_cat(lua_State *L) {
  fdm_tensor *ts[256];
  int n = tensor_list(L, 1, ts, 256);
  if (n == 0) return fdm_lua_errorf(L, "cat: expected a non-empty list of tensors");
  int dim = lua_isnoneornil(L, 2) ? 0 : fdm_lua_dim(L, 2, ts[0]->ndim);
  return PUSH(L, fdm_cat(n, ts, dim));
}
static int l_stack(lua_State *L) {
  fdm_tensor *ts[256];
  int n = tensor_list(L, 1, ts, 256);
  if (n == 0) return fdm_lua_errorf(L, "stack: expected a non-empty list of tensors");
  int dim = lua_isnoneornil(L, 2) ? 0 : fdm_lua_dim(L, 2, ts[0]->ndim + 1);
  return PUSH(L, fdm_stack(n, ts, dim));
}
static int l_pad(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int64_t pads[2 * FDM_MAXDIM];
  int n = (int)luaL_len(L, 2);
  if (n > 2 * FDM_MAXDIM) return fdm_lua_errorf(L, "pad: too many paddings");
  for (int k = 0; k < n; k++) { lua_geti(L, 2, k + 1); pads[k] = int_entry(L, "pad", "paddings", k); lua_pop(L, 1); }
  return PUSH(L, fdm_pad(t, n, pads, luaL_optnumber(L, 3, 0)));
}

/* ---- elementwise ---- */
static int binary(lua_State *L, fdm_binop op) {
  fdm_tensor *a = fdm_lua_test(L, 1), *b = fdm_lua_test(L, 2);
  if (a && b) return PUSH(L, fdm_binary(op, a, b));
  if (a && lua_isnumber(L, 2)) return PUSH(L, fdm_binary_scalar(op, a, lua_tonumber(L, 2), 0));
  if (b && lua_isnumber(L, 1)) return PUSH(L, fdm_binary_scalar(op, b, lua_tonumber(L, 1), 1));
  if (a && lua_isboolean(L, 2)) return PUSH(L, fdm_binary_scalar(op, a, lua_toboolean(L, 2), 0));
  return fdm_lua_errorf(L, "%s: expected tensors or numbers, got %s and %s", fdm_binop_name(op),
                    luaL_typename(L, 1), luaL_typename(L, 2));
}
#define BIN(name, op) static int l_##name(lua_State *L) { return binary(L, op); }
BIN(sub, FDM_SUB) BIN(mul, FDM_MUL) BIN(div, FDM_DIV) BIN(pow, FDM_POW)
BIN(maximum, FDM_MAXIMUM) BIN(minimum, FDM_MINIMUM) BIN(eq, FDM_EQ) BIN(ne, FDM_NE)
BIN(lt, FDM_LT) BIN(le, FDM_LE) BIN(gt, FDM_GT) BIN(ge, FDM_GE)
BIN(logical_and, FDM_AND) BIN(logical_or, FDM_OR)

static int l_add(lua_State *L) {
  if (lua_isnumber(L, 3)) {
    fdm_tensor *a = CHECK(L, 1), *b = fdm_lua_test(L, 2);
    if (b) return PUSH(L, fdm_add_scaled(a, b, lua_tonumber(L, 3)));
    return PUSH(L, fdm_binary_scalar(FDM_ADD, a, luaL_checknumber(L, 2) * lua_tonumber(L, 3), 0));
  }
  return binary(L, FDM_ADD);
}

static int binary_(lua_State *L, fdm_binop op) {
  fdm_tensor *a = CHECK(L, 1), *b = fdm_lua_test(L, 2);
  int rc;
  if (b) rc = (op == FDM_ADD && lua_isnumber(L, 3)) ? fdm_add_scaled_(a, b, lua_tonumber(L, 3)) : fdm_binary_(op, a, b);
  else rc = fdm_binary_scalar_(op, a, luaL_checknumber(L, 2) * (op == FDM_ADD ? luaL_optnumber(L, 3, 1) : 1));
  if (rc) return fdm_lua_error(L);
  lua_settop(L, 1);
  return 1;
}
#define BIN_(name, op) static int l_##name##_(lua_State *L) { return binary_(L, op); }
BIN_(add, FDM_ADD) BIN_(sub, FDM_SUB) BIN_(mul, FDM_MUL) BIN_(div, FDM_DIV) BIN_(pow, FDM_POW)

static int unary(lua_State *L, fdm_unop op) { return PUSH(L, fdm_unary(op, CHECK(L, 1))); }
static int unary_(lua_State *L, fdm_unop op) {
  if (fdm_unary_(op, CHECK(L, 1))) return fdm_lua_error(L);
  lua_settop(L, 1);
  return 1;
}
#define UN(name, op) static int l_##name(lua_State *L) { return unary(L, op); } \
                     static int l_##name##_(lua_State *L) { return unary_(L, op); }
UN(neg, FDM_NEG) UN(abs, FDM_ABS) UN(sqrt, FDM_SQRT) UN(rsqrt, FDM_RSQRT) UN(exp, FDM_EXP)
UN(log, FDM_LOG) UN(sin, FDM_SIN) UN(cos, FDM_COS) UN(square, FDM_SQUARE) UN(sign, FDM_SIGN)
UN(relu, FDM_RELU) UN(sigmoid, FDM_SIGMOID) UN(tanh, FDM_TANH) UN(silu, FDM_SILU)
UN(logical_not, FDM_NOT) UN(reciprocal, FDM_RECIPROCAL)

/* t:gelu() and F.gelu(x [, "tanh" | {approximate = "tanh"}]) */
static int l_gelu(lua_State *L) {
  fdm_tensor *x = CHECK(L, 1);
  const char *a = "none";
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "approximate");
    if (!lua_isnil(L, -1)) a = luaL_checkstring(L, -1);
    lua_pop(L, 1);
  } else if (!lua_isnoneornil(L, 2)) a = luaL_checkstring(L, 2);
  if (strcmp(a, "none") && strcmp(a, "tanh"))
    return fdm_lua_errorf(L, "gelu: approximate must be \"none\" or \"tanh\", got \"%s\"", a);
  return PUSH(L, fdm_gelu(x, strcmp(a, "tanh") == 0));
}

static int l_clamp(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  return PUSH(L, fdm_clamp(t, luaL_optnumber(L, 2, 0), luaL_optnumber(L, 3, 0), !lua_isnoneornil(L, 2), !lua_isnoneornil(L, 3)));
}
static int l_clamp_(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  if (fdm_clamp_(t, luaL_optnumber(L, 2, 0), luaL_optnumber(L, 3, 0), !lua_isnoneornil(L, 2), !lua_isnoneornil(L, 3)))
    return fdm_lua_error(L);
  lua_settop(L, 1);
  return 1;
}

static fdm_tensor *as_tensor(lua_State *L, int idx, const fdm_tensor *like) {
  fdm_tensor *t = fdm_lua_test(L, idx);
  if (t) { fdm_retain(t); return t; }
  if (!lua_isnumber(L, idx)) fdm_lua_errorf(L, "expected a tensor or a number, got %s", luaL_typename(L, idx));
  return fdm_full(like->dtype == FDM_INT64 && lua_isinteger(L, idx) ? FDM_INT64 : FDM_FLOAT32, 0, NULL,
                  lua_tonumber(L, idx), like->device);
}
static int l_where(lua_State *L) {
  fdm_tensor *c = CHECK(L, 1);
  fdm_tensor *ref = fdm_lua_test(L, 2) ? fdm_lua_test(L, 2) : fdm_lua_test(L, 3) ? fdm_lua_test(L, 3) : c;
  fdm_tensor *a = as_tensor(L, 2, ref), *b = as_tensor(L, 3, ref);
  fdm_tensor *r = (a && b) ? fdm_where(c, a, b) : NULL;
  fdm_release(a); fdm_release(b);
  return PUSH(L, r);
}

static int l_copy_(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1), *s = CHECK(L, 2);
  if (fdm_copy_(t, s)) return fdm_lua_error(L);
  lua_settop(L, 1);
  return 1;
}
static int l_fill_(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  double v = lua_isboolean(L, 2) ? lua_toboolean(L, 2) : luaL_checknumber(L, 2);
  if (fdm_check_inplace("fill_", t) || fdm_fill_(t, v)) return fdm_lua_error(L);
  lua_settop(L, 1);
  return 1;
}
static int l_zero_(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  if (fdm_check_inplace("zero_", t) || fdm_fill_(t, 0)) return fdm_lua_error(L);
  lua_settop(L, 1);
  return 1;
}

/* ---- reductions ---- */
static int reduce_dims(lua_State *L, int idx, const fdm_tensor *t, int *dims, int *keepdim) {
  int n = 0;
  if (lua_istable(L, idx)) n = dims_arg(L, idx, t->ndim, dims);
  else if (lua_isinteger(L, idx)) { dims[0] = fdm_lua_dim(L, idx, t->ndim); n = 1; }
  *keepdim = lua_toboolean(L, idx + 1);
  return n;
}
static int l_sum(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int dims[FDM_MAXDIM], keep, n = reduce_dims(L, 2, t, dims, &keep);
  if (n == 0 && !lua_isnoneornil(L, 2)) return fdm_lua_errorf(L, "sum: dim must be an integer or a table of integers");
  return PUSH(L, fdm_sum(t, n, dims, keep));
}
static int l_mean(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int dims[FDM_MAXDIM], keep, n = reduce_dims(L, 2, t, dims, &keep);
  return PUSH(L, fdm_mean(t, n, dims, keep));
}
static int var_std(lua_State *L, int sd) {
  fdm_tensor *t = CHECK(L, 1);
  int dims[FDM_MAXDIM], keep = 0, n = 0, unbiased = 1;
  int opts = 0;
  if (lua_istable(L, 2) && luaL_len(L, 2) == 0) opts = 2;
  else {
    n = reduce_dims(L, 2, t, dims, &keep);
    if (lua_istable(L, 3)) { opts = 3; keep = 0; }   /* var(dim, {unbiased=, keepdim=}) */
  }
  if (opts) { unbiased = fdm_lua_optbool(L, opts, "unbiased", 1); keep = fdm_lua_optbool(L, opts, "keepdim", keep); }
  fdm_tensor *v = fdm_var(t, n, dims, unbiased ? 1 : 0, keep);
  if (v && sd) { fdm_tensor *s = fdm_unary(FDM_SQRT, v); fdm_release(v); v = s; }
  return PUSH(L, v);
}
static int l_var(lua_State *L) { return var_std(L, 0); }
static int l_std(lua_State *L) { return var_std(L, 1); }

static int maxmin(lua_State *L, int is_min) {
  fdm_tensor *t = CHECK(L, 1);
  if (fdm_lua_test(L, 2)) return binary(L, is_min ? FDM_MINIMUM : FDM_MAXIMUM);
  if (lua_isnoneornil(L, 2)) return PUSH(L, fdm_max_all(t, is_min));
  fdm_tensor *idx = NULL;
  fdm_tensor *v = fdm_max_dim(t, fdm_lua_dim(L, 2, t->ndim), lua_toboolean(L, 3), is_min, &idx);
  fdm_lua_push(L, v);
  fdm_lua_push(L, idx);
  return 2;
}
static int l_max(lua_State *L) { return maxmin(L, 0); }
static int l_min(lua_State *L) { return maxmin(L, 1); }
static int argm(lua_State *L, int is_min) {
  fdm_tensor *t = CHECK(L, 1);
  int dim = lua_isnoneornil(L, 2) ? -1000 : fdm_lua_dim(L, 2, t->ndim);
  return PUSH(L, fdm_argmax(t, dim, lua_toboolean(L, 3), is_min));
}
static int l_argmax(lua_State *L) { return argm(L, 0); }
static int l_argmin(lua_State *L) { return argm(L, 1); }
static int l_quantile(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int dim = lua_isnoneornil(L, 3) ? -1000 : fdm_lua_dim(L, 3, t->ndim);
  return PUSH(L, fdm_quantile(t, luaL_checknumber(L, 2), dim, lua_toboolean(L, 4)));
}
static int l_all(lua_State *L) { return PUSH(L, fdm_any_all(CHECK(L, 1), 1)); }
static int l_any(lua_State *L) { return PUSH(L, fdm_any_all(CHECK(L, 1), 0)); }

static int l_matmul(lua_State *L) { return PUSH(L, fdm_matmul(CHECK(L, 1), CHECK(L, 2))); }

/* functions that are both tensor methods and members of fdm.F: one binding each */
const luaL_Reg fdm_lua_shared_fns[] = {
  {"matmul", l_matmul}, {"gelu", l_gelu}, {"silu", l_silu}, {"relu", l_relu},
  {"sigmoid", l_sigmoid}, {"tanh", l_tanh}, {NULL, NULL}};
static int l_index_select(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  return PUSH(L, fdm_index_select(t, fdm_lua_dim(L, 2, t->ndim), CHECK(L, 3)));
}
static int l_gather(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  return PUSH(L, fdm_gather(t, fdm_lua_dim(L, 2, t->ndim), CHECK(L, 3)));
}

/* ---- autograd ---- */
static int l_backward(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1), *g = lua_isnoneornil(L, 2) ? NULL : CHECK(L, 2);
  if (fdm_backward(t, g)) return fdm_lua_error(L);
  return 0;
}
static int l_requires_grad_(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  int on = lua_isnone(L, 2) ? 1 : lua_toboolean(L, 2);
  if (on && t->dtype != FDM_FLOAT32) return fdm_lua_errorf(L, "requires_grad_: only float32 tensors can require grad, got %s", fdm_dtype_name(t->dtype));
  if (!on && t->grad_fn) return fdm_lua_errorf(L, "requires_grad_: cannot turn off gradients of a non-leaf tensor; use detach()");
  t->requires_grad = on;
  lua_settop(L, 1);
  return 1;
}
static int l_zero_grad(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  fdm_release(t->grad);
  t->grad = NULL;
  return 0;
}
static int l_no_grad(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int prev = fdm_set_grad_enabled(0);
  int base = lua_gettop(L);
  int rc = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  fdm_set_grad_enabled(prev);
  if (rc != LUA_OK) return lua_error(L);
  return lua_gettop(L) - base + 1;
}
static int l_set_grad_enabled(lua_State *L) { lua_pushboolean(L, fdm_set_grad_enabled(lua_toboolean(L, 1))); return 1; }
static int l_is_grad_enabled(lua_State *L) { lua_pushboolean(L, fdm_grad_enabled()); return 1; }

/* ---- memory ---- */
static int l_free(lua_State *L) {
  fdm_tensor **box = luaL_checkudata(L, 1, FDM_TENSOR_MT);
  if (*box) { fdm_release(*box); *box = NULL; }
  return 0;
}
static int l_memory(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)fdm_live_bytes());
  lua_pushinteger(L, (lua_Integer)fdm_cached_bytes());
  return 2;
}
/* fdm.profile(true | false): starts (clearing the rows) or stops per-kernel timing */
static int l_profile(lua_State *L) {
  luaL_checktype(L, 1, LUA_TBOOLEAN);
  fdm_profile_enable(lua_toboolean(L, 1));
  return 0;
}
/* fdm.profile_rows(): {op =, kernel =, device =, calls =, seconds =} per row, most time first */
static int l_profile_rows(lua_State *L) {
  int n;
  const fdm_profile_row *r = fdm_profile_rows(&n);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_createtable(L, 0, 5);
    lua_pushstring(L, r[i].op);
    lua_setfield(L, -2, "op");
    lua_pushstring(L, r[i].kernel);
    lua_setfield(L, -2, "kernel");
    lua_pushstring(L, fdm_device_name(r[i].dev));
    lua_setfield(L, -2, "device");
    lua_pushinteger(L, (lua_Integer)r[i].calls);
    lua_setfield(L, -2, "calls");
    lua_pushnumber(L, r[i].seconds);
    lua_setfield(L, -2, "seconds");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}
/* monotonic wall clock in seconds, for progress bars and benchmarks */
static int l_time(lua_State *L) {
  lua_pushnumber(L, (lua_Number)fdm_clock());
  return 1;
}
static int l_isatty(lua_State *L) { lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1))); return 1; }
static int l_is_tensor(lua_State *L) { lua_pushboolean(L, fdm_lua_test(L, 1) != NULL); return 1; }

/* ---- metatable ---- */
static int l_index(lua_State *L) {
  fdm_tensor **box = luaL_checkudata(L, 1, FDM_TENSOR_MT);
  if (lua_isinteger(L, 2)) {
    fdm_tensor *t = CHECK(L, 1);
    if (t->ndim == 0) return fdm_lua_errorf(L, "cannot index a 0-d tensor");
    lua_Integer i = lua_tointeger(L, 2);
    if (i < 0) i += t->shape[0] + 1;
    return PUSH(L, fdm_select(t, 0, i - 1));
  }
  const char *k = luaL_checkstring(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;   /* a method */
  lua_pop(L, 1);
  fdm_tensor *t = *box;
  if (!t || !t->storage) return fdm_lua_errorf(L, "tensor was freed (t:free()) and cannot be used (reading '%s')", k);
  if (strcmp(k, "shape") == 0) { push_shape(L, t); return 1; }
  if (strcmp(k, "dtype") == 0) { lua_pushstring(L, fdm_dtype_name(t->dtype)); return 1; }
  if (strcmp(k, "device") == 0) { lua_pushstring(L, fdm_device_name(t->device)); return 1; }
  if (strcmp(k, "requires_grad") == 0) { lua_pushboolean(L, t->requires_grad); return 1; }
  if (strcmp(k, "grad") == 0) { if (!t->grad) return 0; fdm_retain(t->grad); return PUSH(L, t->grad); }
  if (strcmp(k, "grad_fn") == 0) { if (!t->grad_fn) return 0; lua_pushstring(L, t->grad_fn->name); return 1; }
  if (strcmp(k, "is_leaf") == 0) { lua_pushboolean(L, t->grad_fn == NULL); return 1; }
  if (strcmp(k, "ndim") == 0) { lua_pushinteger(L, t->ndim); return 1; }
  if (strcmp(k, "T") == 0) return PUSH(L, t->ndim == 2 ? fdm_transpose(t, 0, 1) : (fdm_retain(t), t));
  return 0;
}

static int l_newindex(lua_State *L) {
  fdm_tensor *t = CHECK(L, 1);
  if (lua_isinteger(L, 2)) {   /* t[i] = v: copy into the row */
    lua_Integer i = lua_tointeger(L, 2);
    if (t->ndim == 0) return fdm_lua_errorf(L, "cannot index a 0-d tensor");
    if (i < 0) i += t->shape[0] + 1;
    fdm_tensor *row = fdm_select(t, 0, i - 1);
    if (!row) return fdm_lua_error(L);
    int rc;
    fdm_tensor *src = fdm_lua_test(L, 3);
    if (src) rc = fdm_copy_(row, src);
    else rc = fdm_check_inplace("setindex", row) ? -1 : fdm_fill_(row, lua_isboolean(L, 3) ? lua_toboolean(L, 3) : luaL_checknumber(L, 3));
    fdm_release(row);
    if (rc) return fdm_lua_error(L);
    return 0;
  }
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "requires_grad") == 0) { lua_settop(L, 1); lua_pushboolean(L, 1); lua_pushvalue(L, 3); lua_remove(L, 2); return l_requires_grad_(L); }
  if (strcmp(k, "grad") == 0) {
    fdm_tensor *g = lua_isnil(L, 3) ? NULL : CHECK(L, 3);
    char b1[128], b2[128];
    if (g && !fdm_same_shape(g, t)) return fdm_lua_errorf(L, "grad: shape %s does not match the tensor's %s", fdm_shapestr(g, b1, sizeof b1), fdm_shapestr(t, b2, sizeof b2));
    fdm_retain(g); fdm_release(t->grad); t->grad = g;
    return 0;
  }
  return fdm_lua_errorf(L, "cannot set field '%s' of a tensor", k);
}

static int l_gc(lua_State *L) {
  fdm_tensor **box = luaL_checkudata(L, 1, FDM_TENSOR_MT);
  fdm_release(*box);
  *box = NULL;
  return 0;
}

static int l_tostring_raw(lua_State *L) {
  fdm_tensor **box = luaL_checkudata(L, 1, FDM_TENSOR_MT);
  char b[128];
  if (!*box || !(*box)->storage) { lua_pushstring(L, "tensor(<freed>)"); return 1; }
  lua_pushfstring(L, "tensor(shape=%s, dtype=%s, device=%s)", fdm_shapestr(*box, b, sizeof b),
                  fdm_dtype_name((*box)->dtype), fdm_device_name((*box)->device));
  return 1;
}

static const luaL_Reg methods[] = {
  {"size", l_size}, {"stride", l_stride}, {"dim", l_dim}, {"numel", l_numel}, {"nelement", l_numel},
  {"is_contiguous", l_is_contiguous}, {"item", l_item}, {"tolist", l_tolist}, {"to", l_to},
  {"data_ptr", l_data_ptr}, {"storage_offset", l_storage_offset}, {"same_storage", l_same_storage},
  {"view", l_view}, {"reshape", l_reshape}, {"narrow", l_narrow}, {"slice", l_slice}, {"select", l_select},
  {"transpose", l_transpose}, {"t", l_transpose}, {"permute", l_permute}, {"expand", l_expand},
  {"expand_as", l_expand}, {"squeeze", l_squeeze}, {"unsqueeze", l_unsqueeze}, {"detach", l_detach},
  {"contiguous", l_contiguous}, {"clone", l_clone}, {"flip", l_flip}, {"roll", l_roll},
  {"add", l_add}, {"sub", l_sub}, {"mul", l_mul}, {"div", l_div}, {"pow", l_pow},
  {"maximum", l_maximum}, {"minimum", l_minimum}, {"eq", l_eq}, {"ne", l_ne}, {"lt", l_lt}, {"le", l_le},
  {"gt", l_gt}, {"ge", l_ge}, {"logical_and", l_logical_and}, {"logical_or", l_logical_or},
  {"add_", l_add_}, {"sub_", l_sub_}, {"mul_", l_mul_}, {"div_", l_div_}, {"pow_", l_pow_},
#define UNREG(n) {#n, l_##n}, {#n "_", l_##n##_},
  UNREG(neg) UNREG(abs) UNREG(sqrt) UNREG(rsqrt) UNREG(exp) UNREG(log) UNREG(sin) UNREG(cos)
  UNREG(square) UNREG(sign) UNREG(relu) UNREG(sigmoid) UNREG(tanh) UNREG(silu) UNREG(logical_not)
  UNREG(reciprocal)
  {"gelu", l_gelu}, {"clamp", l_clamp}, {"clamp_", l_clamp_}, {"copy_", l_copy_}, {"fill_", l_fill_},
  {"zero_", l_zero_}, {"sum", l_sum}, {"mean", l_mean}, {"var", l_var}, {"std", l_std}, {"max", l_max},
  {"min", l_min}, {"argmax", l_argmax}, {"argmin", l_argmin}, {"quantile", l_quantile}, {"all", l_all},
  {"any", l_any}, {"matmul", l_matmul}, {"gather", l_gather}, {"index_select", l_index_select}, {"backward", l_backward},
  {"requires_grad_", l_requires_grad_}, {"zero_grad", l_zero_grad}, {"free", l_free},
  {"where", l_where}, {"pad", l_pad},
  {NULL, NULL}};

/* fdm.set_default_device(name): where creation functions (zeros, randn,
** tensor, arange, ...) put tensors when no device option is given */
static int l_set_default_device(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  fdm_device d;
  if (fdm_device_from_name(name, &d)) return luaL_error(L, "set_default_device: unknown device '%s' (cpu, cuda)", name);
  if (!fdm_backend_get(d)) return luaL_error(L, "set_default_device: %s", fdm_lasterror());
  fdm_lua_set_default_device(d);
  return 0;
}
static int l_get_default_device(lua_State *L) {
  lua_pushstring(L, fdm_device_name(fdm_lua_default_device()));
  return 1;
}

static const luaL_Reg functions[] = {
  {"set_default_device", l_set_default_device}, {"get_default_device", l_get_default_device},
  {"tensor", l_tensor}, {"empty", l_empty}, {"zeros", l_zeros}, {"ones", l_ones}, {"full", l_full},
  {"randn", l_randn}, {"rand", l_rand}, {"randint", l_randint}, {"randperm", l_randperm},
  {"arange", l_arange}, {"linspace", l_linspace}, {"zeros_like", l_zeros_like}, {"ones_like", l_ones_like},
  {"full_like", l_full_like}, {"randn_like", l_randn_like}, {"rand_like", l_rand_like}, {"empty_like", l_empty_like},
  {"manual_seed", l_manual_seed}, {"get_rng_state", l_get_rng_state}, {"set_rng_state", l_set_rng_state},
  {"cat", l_cat}, {"stack", l_stack}, {"no_grad", l_no_grad}, {"set_grad_enabled", l_set_grad_enabled},
  {"is_grad_enabled", l_is_grad_enabled}, {"memory", l_memory}, {"profile", l_profile}, {"profile_rows", l_profile_rows}, {"isatty", l_isatty}, {"time", l_time}, {"is_tensor", l_is_tensor},
  {NULL, NULL}};

void fdm_open_tensor(lua_State *L) {
  int mod = lua_gettop(L);
  luaL_newmetatable(L, FDM_TENSOR_MT);
  int mt = lua_gettop(L);
  lua_newtable(L);                         /* methods */
  luaL_setfuncs(L, methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, mod, "Tensor");          /* core.Tensor: the method table, Lua adds to it */
  lua_pushvalue(L, -1);
  lua_setfield(L, mt, "__methods");        /* for the REPL's completion */
  lua_pushcclosure(L, l_index, 1);
  lua_setfield(L, mt, "__index");
  static const luaL_Reg meta[] = {
    {"__newindex", l_newindex}, {"__gc", l_gc}, {"__close", l_gc}, {"__len", l_len},
    {"__tostring", l_tostring_raw}, {"__add", l_add}, {"__sub", l_sub}, {"__mul", l_mul},
    {"__div", l_div}, {"__pow", l_pow}, {"__unm", l_neg}, {NULL, NULL}};
  luaL_setfuncs(L, meta, 0);
  lua_pushliteral(L, "fdm.Tensor");
  lua_setfield(L, mt, "__name");
  lua_settop(L, mod);
  luaL_setfuncs(L, functions, 0);
  /* every method is also a function: fdm.add(a, b) == a:add(b) */
  for (const luaL_Reg *r = methods; r->name; r++) {
    lua_getfield(L, mod, r->name);
    if (lua_isnil(L, -1)) { lua_pushcfunction(L, r->func); lua_setfield(L, mod, r->name); }
    lua_pop(L, 1);
  }
}
