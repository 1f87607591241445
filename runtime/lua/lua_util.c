/* lua_util.c: the helpers every binding file shares (fdm_lua.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "fdm_lua.h"
#include "fdm_ops.h"
#include "fdm_autograd.h"
#include "fdm_engine.h"
#include "fdm_backend.h"

fdm_tensor *fdm_lua_test(lua_State *L, int idx) {
  fdm_tensor **box = luaL_testudata(L, idx, FDM_TENSOR_MT);
  if (box && (!*box || !(*box)->storage))
    luaL_argerror(L, idx, "tensor was freed (t:free() or a <close> variable) and cannot be used");
  return box ? *box : NULL;
}

fdm_tensor *fdm_lua_check(lua_State *L, int idx) {
  fdm_tensor **box = luaL_testudata(L, idx, FDM_TENSOR_MT);
  if (!box) {
    luaL_typeerror(L, idx, "tensor");
    return NULL;
  }
  if (!*box || !(*box)->storage)
    luaL_argerror(L, idx, "tensor was freed (t:free() or a <close> variable) and cannot be used");
  return *box;
}

int fdm_lua_error(lua_State *L) { return fdm_lua_errorf(L, "%s", fdm_lasterror()); }

int fdm_lua_errorf(lua_State *L, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  luaL_where(L, 1);
  if (n < 0) lua_pushstring(L, fmt);
  else {
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    luaL_pushresultsize(&b, (size_t)n);
  }
  va_end(ap2);
  lua_concat(L, 2);
  return lua_error(L);
}

lua_Integer fdm_lua_range(lua_State *L, lua_Integer v, lua_Integer lo, lua_Integer hi,
                          const char *op, const char *what) {
  if (v < lo || v > hi)
    fdm_lua_errorf(L, "%s: %s must be in %lld..%lld, got %lld", op, what, (long long)lo, (long long)hi,
                   (long long)v);
  return v;
}

/* Tensor storage is invisible to Lua's collector; without help a loop that
** makes big tensors would grow until the Lua heap (tiny) triggers a cycle.
** So after enough new bytes (at least 32 MiB, or as much as was alive after the last one) we
** run a full collection, which keeps resident memory flat. */
static size_t bytes_since_gc, live_after_gc;

void fdm_lua_push(lua_State *L, fdm_tensor *t) {
  if (!t) { fdm_lua_error(L); return; }
  if (t->storage && t->storage->refs == 1) {
    size_t live = fdm_live_bytes();
    if (live < live_after_gc) live_after_gc = live;   /* freed meanwhile (t:free, collectgarbage) */
    bytes_since_gc += t->storage->nbytes;
    size_t limit = live_after_gc > ((size_t)32 << 20) ? live_after_gc : ((size_t)32 << 20);
    if (bytes_since_gc > limit) {
      bytes_since_gc = 0;
      lua_gc(L, LUA_GCCOLLECT);
      live_after_gc = fdm_live_bytes();
    }
  }
  fdm_tensor **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = t;
  luaL_setmetatable(L, FDM_TENSOR_MT);
}

int fdm_lua_shape(lua_State *L, int idx, int64_t *shape) {
  int nd = 0;
  if (lua_istable(L, idx) && !fdm_lua_test(L, idx)) {
    nd = (int)luaL_len(L, idx);
    if (nd > FDM_MAXDIM) fdm_lua_errorf(L, "shape has %d dims, at most %d are supported", nd, FDM_MAXDIM);
    for (int d = 0; d < nd; d++) {
      lua_geti(L, idx, d + 1);
      int ok;
      lua_Integer v = lua_tointegerx(L, -1, &ok);
      if (!ok) fdm_lua_errorf(L, "shape entry %d must be an integer, got %s", d + 1, luaL_typename(L, -1));
      shape[d] = v;
      lua_pop(L, 1);
    }
    return nd;
  }
  while (lua_type(L, idx + nd) == LUA_TNUMBER) {
    if (nd == FDM_MAXDIM) fdm_lua_errorf(L, "at most %d dims are supported", FDM_MAXDIM);
    int ok;
    shape[nd] = lua_tointegerx(L, idx + nd, &ok);
    if (!ok) fdm_lua_errorf(L, "size %d must be an integer, got %s", nd + 1, lua_tostring(L, idx + nd));
    nd++;
  }
  return nd;
}

static int getfield(lua_State *L, int idx, const char *field) {
  if (idx == 0 || !lua_istable(L, idx)) return LUA_TNIL;
  return lua_getfield(L, idx, field);
}

fdm_dtype fdm_lua_optdtype(lua_State *L, int idx, const char *field, fdm_dtype def) {
  fdm_dtype d = def;
  int ty = getfield(L, idx, field);
  if (ty == LUA_TSTRING) {
    if (fdm_dtype_from_name(lua_tostring(L, -1), &d))
      fdm_lua_errorf(L, "unknown dtype '%s' (float32, float16, bfloat16, int64, uint8, bool)", lua_tostring(L, -1));
  } else if (ty != LUA_TNIL) fdm_lua_errorf(L, "option '%s' must be a dtype name", field);
  if (idx && lua_istable(L, idx)) lua_pop(L, 1);
  return d;
}

/* where creation functions put tensors when no device is given
** (fdm.set_default_device) */
static fdm_device default_device = FDM_CPU;
fdm_device fdm_lua_default_device(void) { return default_device; }
void fdm_lua_set_default_device(fdm_device d) { default_device = d; }

fdm_device fdm_lua_optdevice(lua_State *L, int idx, const char *field, fdm_device def) {
  fdm_device d = def;
  int ty = getfield(L, idx, field);
  if (ty == LUA_TSTRING) {
    if (fdm_device_from_name(lua_tostring(L, -1), &d)) fdm_lua_errorf(L, "unknown device '%s' (cpu, cuda)", lua_tostring(L, -1));
  } else if (ty != LUA_TNIL) fdm_lua_errorf(L, "option '%s' must be a device name", field);
  if (idx && lua_istable(L, idx)) lua_pop(L, 1);
  return d;
}

lua_Integer fdm_lua_optint(lua_State *L, int idx, const char *field, lua_Integer def) {
  lua_Integer v = def;
  int ty = getfield(L, idx, field);
  if (ty != LUA_TNIL) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok) fdm_lua_errorf(L, "option '%s' must be an integer, got %s", field, luaL_typename(L, -1));
  }
  if (idx && lua_istable(L, idx)) lua_pop(L, 1);
  return v;
}

lua_Number fdm_lua_optnum(lua_State *L, int idx, const char *field, lua_Number def) {
  lua_Number v = def;
  int ty = getfield(L, idx, field);
  if (ty != LUA_TNIL) {
    if (ty != LUA_TNUMBER) fdm_lua_errorf(L, "option '%s' must be a number, got %s", field, luaL_typename(L, -1));
    v = lua_tonumber(L, -1);
  }
  if (idx && lua_istable(L, idx)) lua_pop(L, 1);
  return v;
}

int fdm_lua_optbool(lua_State *L, int idx, const char *field, int def) {
  int v = def;
  int ty = getfield(L, idx, field);
  if (ty != LUA_TNIL) v = lua_toboolean(L, -1);
  if (idx && lua_istable(L, idx)) lua_pop(L, 1);
  return v;
}

int fdm_lua_dim(lua_State *L, int idx, int ndim) {
  int ok;
  lua_Integer d = lua_tointegerx(L, idx, &ok);
  if (!ok) luaL_argerror(L, idx, "dim must be an integer");
  int n = ndim > 0 ? ndim : 1;
  if (d < 0) d += n + 1;
  if (d < 1 || d > n) {
    char m[160];
    snprintf(m, sizeof m, "dim %lld out of range for a %d-d tensor (dims count from 1; negative from the end)",
             (long long)lua_tointeger(L, idx), ndim);
    return luaL_argerror(L, idx, m);
  }
  return (int)d - 1;
}
