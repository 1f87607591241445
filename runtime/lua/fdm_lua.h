/*
** fdm_lua.h: what binding files (runtime/lua/l*.c) share. A binding checks
** its Lua arguments, calls the core, and pushes the result; it holds no
** numerical code.
*/
#ifndef FDM_LUA_H
#define FDM_LUA_H

#include <lua.h>
#include <lauxlib.h>
#include "fdm.h"

#define FDM_TENSOR_MT "fdm.Tensor"

/* argument idx must be a tensor; raises "bad argument #idx to 'op' (tensor expected, got X)" */
fdm_tensor *fdm_lua_check(lua_State *L, int idx);
fdm_tensor *fdm_lua_test(lua_State *L, int idx);   /* NULL when not a tensor */
/* pushes t as userdata, taking over the caller's reference.
** If t is NULL, raises a Lua error with fdm_lasterror(). */
void fdm_lua_push(lua_State *L, fdm_tensor *t);
/* raises a Lua error carrying fdm_lasterror() */
int fdm_lua_error(lua_State *L);
/* raises a Lua error with a message formatted by vsnprintf (C's printf
** formats: %lld, %zu, widths; checked by the compiler), with the position
** prefix luaL_error adds. Used instead of luaL_error, whose own formatter
** knows only %s %d %f %p %c %U %I and cannot be checked. */
int fdm_lua_errorf(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* v as an integer in [lo, hi], else an error naming op, what and v */
lua_Integer fdm_lua_range(lua_State *L, lua_Integer v, lua_Integer lo, lua_Integer hi,
                          const char *op, const char *what);
/* reads a shape given either as a table {2,3} or as integers from idx onwards;
** returns ndim, raises on bad input. */
int fdm_lua_shape(lua_State *L, int idx, int64_t *shape);
/* optional fields of an options table at idx (absent table = defaults) */
fdm_dtype fdm_lua_optdtype(lua_State *L, int idx, const char *field, fdm_dtype def);
fdm_device fdm_lua_optdevice(lua_State *L, int idx, const char *field, fdm_device def);
/* the device of new tensors when no device option is given (cpu unless set) */
fdm_device fdm_lua_default_device(void);
void fdm_lua_set_default_device(fdm_device d);
lua_Integer fdm_lua_optint(lua_State *L, int idx, const char *field, lua_Integer def);
lua_Number fdm_lua_optnum(lua_State *L, int idx, const char *field, lua_Number def);
int fdm_lua_optbool(lua_State *L, int idx, const char *field, int def);
/* dim argument as the user wrote it (1-based, negative counts from the end)
** -> 0-based; raises when out of range for ndim */
int fdm_lua_dim(lua_State *L, int idx, int ndim);

/* Each binding file registers its functions into the table on top of the
** stack (the fdm core module table). */
/* bindings that are both tensor methods and fdm.F functions (ltensor.c) */
extern const luaL_Reg fdm_lua_shared_fns[];
void fdm_open_tensor(lua_State *L);   /* ltensor.c: creation, views, math, autograd */
void fdm_open_nnops(lua_State *L);    /* lnnops.c: conv, pools, norms, ... (table F) */
void fdm_open_io(lua_State *L);       /* lio.c: png, safetensors, idx, gif, grids, plots */
void fdm_open_optim(lua_State *L);    /* loptim.c: fused optimizer steps */
void fdm_open_autocast(lua_State *L); /* lautocast.c: autocast, set_autocast, get_autocast */
void fdm_open_graph(lua_State *L);    /* lgraph.c: graph handles (fdm.graph) */

int luaopen_fdm_core(lua_State *L);

#endif
