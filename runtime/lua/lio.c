/*
** lio.c: Lua bindings of the file formats (fdm.io.*). The formats live in
** io_*.c (plain C, see fdm_io.h); this file converts tensors to and from
** their buffers and raises "<function>: '<path>': <problem>" on failure.
** Scratch memory comes from Lua userdata anchored on the stack, so a Lua
** error never leaks it; tensor references are released before raising.
*/
#define _GNU_SOURCE
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <errno.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include "fdm_lua.h"
#include "fdm_ops.h"
#include "fdm_io.h"

enum { R_01, R_PM1, R_BYTE };

static int io_fail(lua_State *L, const char *fn, const char *path) {
  return fdm_lua_errorf(L, "%s: '%s': %s", fn, path, fdm_lasterror());
}

static int opt_range(lua_State *L, int idx, const char *fn, int allow_byte) {
  if (lua_type(L, idx) != LUA_TTABLE) return R_01;
  lua_getfield(L, idx, "range");
  int r = R_01;
  if (!lua_isnil(L, -1)) {
    const char *s = lua_tostring(L, -1);
    if (s && strcmp(s, "01") == 0) r = R_01;
    else if (s && strcmp(s, "pm1") == 0) r = R_PM1;
    else if (s && allow_byte && strcmp(s, "byte") == 0) r = R_BYTE;
    else return fdm_lua_errorf(L, "%s: range must be \"01\" or \"pm1\"%s", fn, allow_byte ? " or \"byte\"" : "");
  }
  lua_pop(L, 1);
  return r;
}

static void *scratch(lua_State *L, int anchor, size_t n) {
  void *p = lua_newuserdatauv(L, n ? n : 1, 0);
  lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
  return p;
}

/* ---- tensors <-> 8-bit images ---- */

static inline uint8_t quant(float v, int range) {
  if (range == R_PM1) v = (v + 1.0f) * 0.5f;
  v = v * 255.0f + 0.5f;
  if (!(v > 0.0f)) return 0;      /* also NaN */
  if (v >= 255.0f) return 255;
  return (uint8_t)v;
}

/* [H,W] or [C,H,W] (C = 1, 3, 4) -> image with pixels in a userdata anchored
** at `anchor`. Returns -1 with the error set (nothing to free). */
static int tensor_to_image(lua_State *L, int anchor, fdm_tensor *t, int range, fdm_image *im) {
  char sb[96];
  if (t->device != FDM_CPU) return fdm_seterror("image tensor is on %s, not cpu", fdm_device_name(t->device));
  int C, H, W;
  if (t->ndim == 2) { C = 1; H = (int)t->shape[0]; W = (int)t->shape[1]; }
  else if (t->ndim == 3 && (t->shape[0] == 1 || t->shape[0] == 3 || t->shape[0] == 4)) {
    C = (int)t->shape[0]; H = (int)t->shape[1]; W = (int)t->shape[2];
  } else
    return fdm_seterror("image tensor must be [H, W] or [C, H, W] with C = 1, 3 or 4, got %s",
                        fdm_shapestr(t, sb, sizeof sb));
  if (t->ndim == 2 ? (t->shape[0] > 1 << 20 || t->shape[1] > 1 << 20)
                   : (t->shape[1] > 1 << 20 || t->shape[2] > 1 << 20))
    return fdm_seterror("image too large: %s", fdm_shapestr(t, sb, sizeof sb));
  if (H < 1 || W < 1) return fdm_seterror("empty image %s", fdm_shapestr(t, sb, sizeof sb));
  fdm_tensor *c;
  int byte = t->dtype == FDM_UINT8;
  if (byte || t->dtype == FDM_FLOAT32) c = fdm_host_contiguous(t);
  else {
    fdm_tensor *f = fdm_to_dtype(t, FDM_FLOAT32);
    if (!f) return -1;
    c = fdm_host_contiguous(f);
    fdm_release(f);
  }
  if (!c) return -1;
  size_t hw = (size_t)H * W;
  uint8_t *px = scratch(L, anchor, hw * C);
  if (byte) {
    const uint8_t *s = fdm_data(c);
    for (int k = 0; k < C; k++)
      for (size_t i = 0; i < hw; i++) px[i * C + k] = s[k * hw + i];
  } else {
    const float *s = fdm_data(c);
    for (int k = 0; k < C; k++)
      for (size_t i = 0; i < hw; i++) px[i * C + k] = quant(s[k * hw + i], range);
  }
  fdm_release(c);
  im->w = W; im->h = H; im->c = C; im->px = px;
  return 0;
}

/* images given as a [N,C,H,W] (or [N,H,W]) tensor or a Lua list of tensors */
static int collect_images(lua_State *L, int idx, int anchor, int range, const char *fn,
                          const char *path, fdm_image **out) {
  fdm_tensor *t = fdm_lua_test(L, idx);
  int n;
  if (t) {
    if (t->ndim != 4 && t->ndim != 3) {
      char sb[96];
      return fdm_lua_errorf(L, "%s: images must be [N, C, H, W] or a list of [C, H, W] tensors, got %s",
                        fn, fdm_shapestr(t, sb, sizeof sb));
    }
    if (t->shape[0] > 1 << 20) return fdm_lua_errorf(L, "%s: too many images", fn);
    n = (int)t->shape[0];
  } else if (lua_type(L, idx) == LUA_TTABLE) {
    n = (int)luaL_len(L, idx);
  } else
    return fdm_lua_errorf(L, "%s: images must be a tensor or a list of tensors", fn);
  if (n < 1) return fdm_lua_errorf(L, "%s: no images", fn);
  fdm_image *ims = scratch(L, anchor, sizeof(fdm_image) * (size_t)n);
  for (int i = 0; i < n; i++) {
    int r;
    if (t) {
      fdm_tensor *s = fdm_select(t, 0, i);
      if (!s) return io_fail(L, fn, path);
      r = tensor_to_image(L, anchor, s, range, &ims[i]);
      fdm_release(s);
    } else {
      lua_geti(L, idx, i + 1);
      fdm_tensor *s = fdm_lua_test(L, -1);
      if (!s) return fdm_lua_errorf(L, "%s: image %d is not a tensor", fn, i + 1);
      r = tensor_to_image(L, anchor, s, range, &ims[i]);
      lua_pop(L, 1);
    }
    if (r != 0) return fdm_lua_errorf(L, "%s: '%s': image %d: %s", fn, path, i + 1, fdm_lasterror());
  }
  *out = ims;
  return n;
}

/* list of strings (numbers are converted) anchored; returns count */
static int opt_strings(lua_State *L, int opts, const char *field, int anchor, const char *fn,
                       const char *const **out) {
  *out = NULL;
  if (lua_type(L, opts) != LUA_TTABLE) return 0;
  lua_getfield(L, opts, field);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return 0; }
  if (lua_type(L, -1) != LUA_TTABLE) return fdm_lua_errorf(L, "%s: %s must be a list of strings", fn, field);
  int n = (int)luaL_len(L, -1);
  int tbl = lua_gettop(L);
  const char **v = scratch(L, anchor, sizeof(char *) * (size_t)(n ? n : 1));
  for (int i = 0; i < n; i++) {
    lua_geti(L, tbl, i + 1);
    v[i] = luaL_tolstring(L, -1, NULL);
    lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);  /* keep the string alive */
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  *out = v;
  return n;
}

static const char *opt_string(lua_State *L, int opts, const char *field, int anchor) {
  if (lua_type(L, opts) != LUA_TTABLE) return NULL;
  lua_getfield(L, opts, field);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return NULL; }
  const char *s = luaL_tolstring(L, -1, NULL);
  lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
  lua_pop(L, 1);
  return s;
}

/* ---- PNG ---- */

/* read_png decodes row by row straight into the tensor (fdm_png_decode_to):
** no full 8-bit copy of the image next to the float one, and an image that
** would not fit in the memory available now is refused before allocating */
typedef struct {
  fdm_tensor *t;
  int range, c;
  size_t hw;
  int w;
} png_to_tensor;

static int png_tensor_begin(void *ud, int w, int h, int c, size_t scratch) {
  png_to_tensor *s = ud;
  size_t es = s->range == R_BYTE ? 1 : 4;
  size_t need = (size_t)w * h * c * es + scratch, avail = fdm_mem_available();
  if (need > avail)
    return fdm_seterror("a %dx%d image with %d channels needs %zu MiB as %s, only %zu MiB of memory are available%s",
                        w, h, c, need >> 20, es == 1 ? "uint8" : "float32", avail >> 20,
                        es == 1 ? "" : " (range = \"byte\" needs a quarter)");
  int64_t shape[3] = {c, h, w};
  s->t = fdm_empty(s->range == R_BYTE ? FDM_UINT8 : FDM_FLOAT32, 3, shape, FDM_CPU);
  if (!s->t) return -1;
  s->c = c; s->w = w; s->hw = (size_t)w * h;
  return 0;
}

static void png_tensor_row(void *ud, int y, const uint8_t *px) {
  png_to_tensor *s = ud;
  size_t off = (size_t)y * s->w;
  int c = s->c;
  if (s->range == R_BYTE) {
    uint8_t *d = fdm_data(s->t);
    for (int k = 0; k < c; k++)
      for (int x = 0; x < s->w; x++) d[k * s->hw + off + x] = px[(size_t)x * c + k];
  } else {
    float *d = fdm_data(s->t);
    float a = s->range == R_PM1 ? 2.0f / 255.0f : 1.0f / 255.0f, b = s->range == R_PM1 ? -1.0f : 0.0f;
    for (int k = 0; k < c; k++)
      for (int x = 0; x < s->w; x++) d[k * s->hw + off + x] = px[(size_t)x * c + k] * a + b;
  }
}

/* PNG and JPEG share the sink, so the readers differ only in the decoder;
** read_image picks it from the file's magic bytes, not from its name */
typedef int (*image_decoder)(const uint8_t *, size_t, size_t, const fdm_png_sink *);

static int read_image_as(lua_State *L, const char *fn, int kind) {
  const char *path = luaL_checkstring(L, 1);
  int range = opt_range(L, 2, fn, 1);
  uint8_t *buf; size_t n;
  if (fdm_read_file(path, (size_t)1 << 31, &buf, &n) != 0) return io_fail(L, fn, path);
  if (kind == FDM_IMAGE_UNKNOWN) {
    kind = fdm_image_kind(buf, n);
    if (kind == FDM_IMAGE_UNKNOWN) {
      free(buf);
      return fdm_lua_errorf(L, "%s: '%s': not a PNG or JPEG file (%s)", fn, path,
                            n < 8 ? "too short" : "unknown magic bytes");
    }
  }
  image_decoder decode = kind == FDM_IMAGE_PNG ? fdm_png_decode_to : fdm_jpeg_decode_to;
  size_t max_pixels = kind == FDM_IMAGE_PNG ? FDM_PNG_MAX_PIXELS : FDM_JPEG_MAX_PIXELS;
  png_to_tensor s = { NULL, range, 0, 0, 0 };
  fdm_png_sink sink = { png_tensor_begin, png_tensor_row, &s };
  int r = decode(buf, n, max_pixels, &sink);
  free(buf);
  if (r != 0) { fdm_release(s.t); return io_fail(L, fn, path); }
  fdm_lua_push(L, s.t);
  return 1;
}

static int l_read_png(lua_State *L) { return read_image_as(L, "read_png", FDM_IMAGE_PNG); }
static int l_read_jpeg(lua_State *L) { return read_image_as(L, "read_jpeg", FDM_IMAGE_JPEG); }
static int l_read_image(lua_State *L) { return read_image_as(L, "read_image", FDM_IMAGE_UNKNOWN); }

static int l_write_png(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  fdm_tensor *t = fdm_lua_check(L, 2);
  int range = opt_range(L, 3, "write_png", 0);
  lua_newtable(L);
  int anchor = lua_gettop(L);
  fdm_image im;
  if (tensor_to_image(L, anchor, t, range, &im) != 0 || fdm_png_write(path, &im) != 0)
    return io_fail(L, "write_png", path);
  return 0;
}

/* ---- grids and GIFs ---- */

static int default_scale(const fdm_image *ims, int n) {
  int big = 1;
  for (int i = 0; i < n; i++) {
    if (ims[i].w > big) big = ims[i].w;
    if (ims[i].h > big) big = ims[i].h;
  }
  return big >= 64 ? 1 : (64 + big - 1) / big;
}

static int l_save_grid(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int range = opt_range(L, 3, "save_grid", 0);
  lua_newtable(L);
  int anchor = lua_gettop(L);
  fdm_image *ims;
  int n = collect_images(L, 2, anchor, range, "save_grid", path, &ims);
  fdm_grid_opts o;
  memset(&o, 0, sizeof o);
  o.nrow = (int)fdm_lua_range(L, fdm_lua_optint(L, 3, "nrow", 0), 0, 1 << 20, "save_grid", "nrow");
  o.scale = (int)fdm_lua_range(L, fdm_lua_optint(L, 3, "scale", 0), 0, 64, "save_grid", "scale");
  o.nrow_captions = opt_strings(L, 3, "row_captions", anchor, "save_grid", &o.row_captions);
  o.ncol_captions = opt_strings(L, 3, "col_captions", anchor, "save_grid", &o.col_captions);
  o.ncaptions = opt_strings(L, 3, "captions", anchor, "save_grid", &o.captions);
  o.title = opt_string(L, 3, "title", anchor);
  fdm_grid_layout layout;
  o.layout = &layout;
  if (fdm_draw_grid(path, ims, n, &o) != 0) return io_fail(L, "save_grid", path);
  /* returns where things went: {width, height, texts = {{kind, index, text,
  ** x, y, w, h}}, cells = {{x, y, w, h}}} (1-based index; tests check that
  ** every line of text lies inside the canvas, clear of the others) */
  static const char *const kinds[] = {"title", "col", "row", "caption"};
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, layout.width); lua_setfield(L, -2, "width");
  lua_pushinteger(L, layout.height); lua_setfield(L, -2, "height");
  lua_createtable(L, layout.ntexts, 0);
  for (int i = 0; i < layout.ntexts; i++) {
    const fdm_grid_text *t = &layout.texts[i];
    lua_createtable(L, 0, 7);
    lua_pushstring(L, kinds[t->kind]); lua_setfield(L, -2, "kind");
    lua_pushinteger(L, t->index + 1); lua_setfield(L, -2, "index");
    lua_pushstring(L, t->text); lua_setfield(L, -2, "text");
    lua_pushnumber(L, t->x); lua_setfield(L, -2, "x");
    lua_pushnumber(L, t->y); lua_setfield(L, -2, "y");
    lua_pushnumber(L, t->w); lua_setfield(L, -2, "w");
    lua_pushnumber(L, t->h); lua_setfield(L, -2, "h");
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "texts");
  lua_createtable(L, layout.ncells, 0);
  for (int i = 0; i < layout.ncells; i++) {
    lua_createtable(L, 4, 0);
    for (int k = 0; k < 4; k++) { lua_pushnumber(L, layout.cells[i][k]); lua_rawseti(L, -2, k + 1); }
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "cells");
  fdm_grid_layout_free(&layout);
  return 1;
}

static int l_write_gif(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int range = opt_range(L, 3, "write_gif", 0);
  lua_newtable(L);
  int anchor = lua_gettop(L);
  fdm_image *ims;
  int n = collect_images(L, 2, anchor, range, "write_gif", path, &ims);
  int delay = (int)fdm_lua_range(L, fdm_lua_optint(L, 3, "delay_ms", 80), 0, 655350, "write_gif", "delay_ms");
  int loop = (int)fdm_lua_range(L, fdm_lua_optint(L, 3, "loop", 0), 0, 65535, "write_gif", "loop");
  lua_Integer scale = fdm_lua_range(L, fdm_lua_optint(L, 3, "scale", 0), 0, 64, "write_gif", "scale");
  if (scale == 0) scale = default_scale(ims, n);
  if (fdm_gif_write(path, ims, n, delay, loop, (int)scale) != 0) return io_fail(L, "write_gif", path);
  return 0;
}

/* ---- plots ---- */

static double *num_list(lua_State *L, int idx, int anchor, int *n, const char *what, int k) {
  *n = (int)luaL_len(L, idx);
  double *v = scratch(L, anchor, sizeof(double) * (size_t)(*n ? *n : 1));
  for (int i = 0; i < *n; i++) {
    lua_geti(L, idx, i + 1);
    int ok;
    v[i] = lua_tonumberx(L, -1, &ok);
    if (!ok) fdm_lua_errorf(L, "plot_curves: series %d: %s[%d] is not a number", k, what, i + 1);
    lua_pop(L, 1);
  }
  return v;
}

static int l_plot_curves(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_newtable(L);
  int anchor = lua_gettop(L);
  int ns = (int)luaL_len(L, 2);
  fdm_plot_series *s = scratch(L, anchor, sizeof(fdm_plot_series) * (size_t)(ns ? ns : 1));
  for (int k = 0; k < ns; k++) {
    lua_geti(L, 2, k + 1);
    int st = lua_gettop(L);
    if (lua_type(L, st) != LUA_TTABLE) return fdm_lua_errorf(L, "plot_curves: series %d is not a table", k + 1);
    lua_getfield(L, st, "name");
    s[k].name = lua_isnil(L, -1) ? NULL : luaL_tolstring(L, -1, NULL);
    if (s[k].name) { lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1); }
    lua_pop(L, 1);
    lua_getfield(L, st, "y");
    if (lua_type(L, -1) != LUA_TTABLE) return fdm_lua_errorf(L, "plot_curves: series %d has no y list", k + 1);
    s[k].y = num_list(L, lua_gettop(L), anchor, &s[k].n, "y", k + 1);
    lua_pop(L, 1);
    lua_getfield(L, st, "x");
    s[k].x = NULL;
    if (!lua_isnil(L, -1)) {
      int nx;
      if (lua_type(L, -1) != LUA_TTABLE) return fdm_lua_errorf(L, "plot_curves: series %d: x must be a list", k + 1);
      s[k].x = num_list(L, lua_gettop(L), anchor, &nx, "x", k + 1);
      if (nx != s[k].n)
        return fdm_lua_errorf(L, "plot_curves: series %d has %d x values and %d y values", k + 1, nx, s[k].n);
    }
    lua_pop(L, 2);
  }
  fdm_plot_opts o;
  memset(&o, 0, sizeof o);
  o.logy = fdm_lua_optbool(L, 3, "logy", 1);
  o.width = (int)fdm_lua_range(L, fdm_lua_optint(L, 3, "width", 800), 0, 1 << 14, "plot_curves", "width");
  o.height = (int)fdm_lua_range(L, fdm_lua_optint(L, 3, "height", 500), 0, 1 << 14, "plot_curves", "height");
  o.title = opt_string(L, 3, "title", anchor);
  o.xlabel = opt_string(L, 3, "xlabel", anchor);
  o.ylabel = opt_string(L, 3, "ylabel", anchor);
  if (fdm_plot_curves(path, s, ns, &o) != 0) return io_fail(L, "plot_curves", path);
  return 0;
}

/* ---- safetensors ---- */

/* The file's mapping, shared by the tensors that point into it (mmap = true):
** unmapped when the last of them is released. */
typedef struct { void *map; size_t len; int refs; } st_mapping;

static void st_mapping_release(void *ctx, void *data, size_t nbytes) {
  st_mapping *m = ctx;
  (void)data; (void)nbytes;
  if (--m->refs > 0) return;
  if (m->len) munmap(m->map, m->len);
  free(m);
}

/* a tensor of entry e: a view into the mapping when asked and the bytes are
** already the tensor's (same dtype, aligned), else a converted copy */
static fdm_tensor *st_tensor(const fdm_st_file *f, const fdm_st_entry *e, st_mapping *m, int map_it) {
  fdm_dtype dt = fdm_st_target(e->dtype);
  const uint8_t *src = f->data + e->begin;
  size_t nbytes = (size_t)(e->end - e->begin);
  int same_bytes = e->dtype == FDM_ST_F32 || e->dtype == FDM_ST_F16 || e->dtype == FDM_ST_BF16 ||
                   e->dtype == FDM_ST_I64 || e->dtype == FDM_ST_U8 || e->dtype == FDM_ST_BOOL;
  if (map_it && same_bytes && nbytes && (uintptr_t)src % fdm_dtype_size(dt) == 0) {
    fdm_tensor *t = fdm_from_external(dt, e->ndim, e->shape, FDM_CPU, (void *)src, nbytes,
                                      st_mapping_release, m);
    if (t) m->refs++;
    return t;
  }
  fdm_tensor *t = fdm_empty(dt, e->ndim, e->shape, FDM_CPU);
  if (t) fdm_st_convert(f, e, fdm_data(t));
  return t;
}

/* fdm.io.load_safetensors(path [, {device = "cpu", mmap = false}]) -> tensors, metadata.
** mmap: CPU tensors point into the file's (copy-on-write) mapping instead of
** being read into memory: large weights stay on disk until used. device:
** each tensor goes to that device through its backend's copy as it is read,
** so at most one tensor is staged in host memory. */
static int l_load_safetensors(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int opts = lua_istable(L, 2) ? 2 : 0;
  fdm_device dev = fdm_lua_optdevice(L, opts, "device", FDM_CPU);
  int map_it = fdm_lua_optbool(L, opts, "mmap", 0) && dev == FDM_CPU;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fdm_lua_errorf(L, "load_safetensors: '%s': cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return fdm_lua_errorf(L, "load_safetensors: '%s': not a regular file", path);
  }
  st_mapping *m = calloc(1, sizeof *m);
  if (!m) { close(fd); return fdm_lua_errorf(L, "load_safetensors: '%s': out of memory", path); }
  m->len = (size_t)st.st_size;
  m->refs = 1;   /* this function's own reference */
  m->map = (void *)"";
  if (m->len > 0) {
    void *p = mmap(NULL, m->len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      close(fd);
      free(m);
      return fdm_lua_errorf(L, "load_safetensors: '%s': mmap failed: %s", path, strerror(errno));
    }
    m->map = p;
  }
  close(fd);
  fdm_st_file f;
  if (fdm_st_parse(m->map, m->len, &f) != 0) {
    st_mapping_release(m, NULL, 0);
    return io_fail(L, "load_safetensors", path);
  }
  lua_createtable(L, 0, f.n);
  for (int i = 0; i < f.n; i++) {
    const fdm_st_entry *e = &f.e[i];
    fdm_tensor *t = st_tensor(&f, e, m, map_it);
    if (t && dev != FDM_CPU) {
      fdm_tensor *d = fdm_to_device(t, dev);
      fdm_release(t);
      t = d;
    }
    if (!t) {
      fdm_st_free(&f);
      st_mapping_release(m, NULL, 0);
      return io_fail(L, "load_safetensors", path);
    }
    fdm_lua_push(L, t);
    lua_setfield(L, -2, e->name);
  }
  lua_createtable(L, 0, f.nmeta);
  for (int i = 0; i < f.nmeta; i++) {
    lua_pushstring(L, f.meta[i].value);
    lua_setfield(L, -2, f.meta[i].key);
  }
  fdm_st_free(&f);
  st_mapping_release(m, NULL, 0);
  return 2;
}

static int l_save_safetensors(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  lua_newtable(L);
  int anchor = lua_gettop(L);
  int n = 0, nmeta = 0;
  lua_pushnil(L);
  while (lua_next(L, 2)) { n++; lua_pop(L, 1); }
  if (lua_istable(L, 3)) { lua_pushnil(L); while (lua_next(L, 3)) { nmeta++; lua_pop(L, 1); } }
  fdm_st_tensor *ts = scratch(L, anchor, sizeof(fdm_st_tensor) * (size_t)(n ? n : 1));
  fdm_st_meta *meta = scratch(L, anchor, sizeof(fdm_st_meta) * (size_t)(nmeta ? nmeta : 1));
  int k = 0;
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      return fdm_lua_errorf(L, "save_safetensors: '%s': tensor names must be strings", path);
    size_t namelen;
    const char *name = lua_tolstring(L, -2, &namelen);
    if (strlen(name) != namelen)
      return fdm_lua_errorf(L, "save_safetensors: '%s': tensor name '%s...' holds a NUL byte", path, name);
    fdm_tensor *t = fdm_lua_test(L, -1);
    if (!t) return fdm_lua_errorf(L, "save_safetensors: '%s': value of '%s' is not a tensor", path, name);
    fdm_tensor *c = fdm_host_contiguous(t);
    if (!c) return io_fail(L, "save_safetensors", path);
    fdm_lua_push(L, c);   /* the anchor owns it from here */
    lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
    ts[k].name = name;    /* keys stay alive in tbl */
    ts[k].dtype = c->dtype; ts[k].ndim = c->ndim; ts[k].shape = c->shape; ts[k].data = fdm_data(c);
    k++;
    lua_pop(L, 1);
  }
  k = 0;
  if (nmeta) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        return fdm_lua_errorf(L, "save_safetensors: '%s': metadata keys must be strings", path);
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        return fdm_lua_errorf(L, "save_safetensors: '%s': metadata value of '%s' must be a string",
                          path, lua_tostring(L, -2));
      size_t kl, vl;
      meta[k].key = (char *)lua_tolstring(L, -2, &kl);
      lua_pushvalue(L, -1);
      meta[k].value = (char *)lua_tolstring(L, -1, &vl);  /* converts the copy, not the table value */
      /* C strings in the format's writer and reader: a NUL would cut them */
      if (strlen(meta[k].key) != kl)
        return fdm_lua_errorf(L, "save_safetensors: '%s': metadata key '%s...' holds a NUL byte", path, meta[k].key);
      if (strlen(meta[k].value) != vl)
        return fdm_lua_errorf(L, "save_safetensors: '%s': metadata value of '%s' holds a NUL byte", path, meta[k].key);
      lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
      k++;
      lua_pop(L, 1);
    }
  }
  if (fdm_st_write(path, n, ts, nmeta, meta) != 0) return io_fail(L, "save_safetensors", path);
  return 0;
}

/* ---- IDX ---- */

static int l_read_idx(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  uint8_t *buf; size_t n;
  /* the file's bytes, at most half the memory available now (the tensor
  ** needs as much again, more for int types) and 64 GiB */
  size_t max = fdm_mem_available() / 2;
  if (max > (size_t)1 << 36) max = (size_t)1 << 36;
  if (fdm_idx_read(path, max, &buf, &n) != 0) return io_fail(L, "read_idx", path);
  fdm_idx_info info;
  if (fdm_idx_parse(buf, n, &info) != 0) { free(buf); return io_fail(L, "read_idx", path); }
  fdm_tensor *t = fdm_empty(fdm_idx_target(info.type), info.ndim, info.shape, FDM_CPU);
  if (!t) { free(buf); return io_fail(L, "read_idx", path); }
  fdm_idx_convert(&info, buf, fdm_data(t));
  free(buf);
  fdm_lua_push(L, t);
  return 1;
}

/* ---- run folders: lock files and stale temporaries ---- */

#define FDM_LOCK_MT "fdm.Lock"

static int lock_release(lua_State *L) {
  int *fd = luaL_checkudata(L, 1, FDM_LOCK_MT);
  if (*fd >= 0) { close(*fd); *fd = -1; }   /* closing the descriptor drops the flock */
  return 0;
}

/* fdm.io.lock(path) -> lock | nil, holder: an exclusive flock on path
** (created if missing). On success our PID is written into the file and a
** lock object returned (released by lock:release(), its collection, a
** <close> variable or the end of the process; a killed process's lock goes
** with it). When another process holds it: nil and the PID written in the
** file ("?" if unreadable). Other failures raise an error. */
static int l_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int *box = lua_newuserdatauv(L, sizeof(int), 0);
  *box = -1;
  luaL_setmetatable(L, FDM_LOCK_MT);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return fdm_lua_errorf(L, "lock: '%s': cannot open: %s", path, strerror(errno));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    if (e != EWOULDBLOCK) { close(fd); return fdm_lua_errorf(L, "lock: '%s': %s", path, strerror(e)); }
    char buf[32] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    long long pid = 0;
    lua_pushnil(L);
    if (n > 0 && sscanf(buf, "%lld", &pid) == 1 && pid > 0) lua_pushinteger(L, (lua_Integer)pid);
    else lua_pushliteral(L, "?");
    return 2;
  }
  *box = fd;
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%lld\n", (long long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n)
    return fdm_lua_errorf(L, "lock: '%s': cannot write: %s", path, strerror(errno));
  return 1;
}

/* a temporary of fdm_atomic_open: "<name>.tmp.XXXXXX" (mkstemp's 6 characters) */
static int is_atomic_temp(const char *name) {
  size_t n = strlen(name);
  if (n < 12) return 0;
  const char *t = name + n - 11;
  if (memcmp(t, ".tmp.", 5) != 0) return 0;
  for (int i = 5; i < 11; i++) {
    char c = t[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return 0;
  }
  return 1;
}

/* fdm.io.remove_temporaries(dir) -> list of removed names: the temporary
** files an atomic write leaves when its process is killed (only call it
** while holding the folder's lock, so no write of ours is in progress) */
static int l_remove_temporaries(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  DIR *d = opendir(dir);
  if (!d) return fdm_lua_errorf(L, "remove_temporaries: '%s': %s", dir, strerror(errno));
  lua_newtable(L);
  int k = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!is_atomic_temp(e->d_name)) continue;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    if (unlinkat(dirfd(d), e->d_name, 0) == 0) {
      lua_pushstring(L, e->d_name);
      lua_rawseti(L, -2, ++k);
    }
  }
  closedir(d);
  return 1;
}

static const luaL_Reg io_funcs[] = {
  {"lock", l_lock},
  {"remove_temporaries", l_remove_temporaries},
  {"read_png", l_read_png},
  {"read_jpeg", l_read_jpeg},
  {"read_image", l_read_image},
  {"write_png", l_write_png},
  {"save_grid", l_save_grid},
  {"write_gif", l_write_gif},
  {"plot_curves", l_plot_curves},
  {"load_safetensors", l_load_safetensors},
  {"save_safetensors", l_save_safetensors},
  {"read_idx", l_read_idx},
  {NULL, NULL}
};

void fdm_open_io(lua_State *L) {
  if (luaL_newmetatable(L, FDM_LOCK_MT)) {
    static const luaL_Reg lock_meta[] = {{"__gc", lock_release}, {"__close", lock_release}, {NULL, NULL}};
    luaL_setfuncs(L, lock_meta, 0);
    lua_newtable(L);
    lua_pushcfunction(L, lock_release);
    lua_setfield(L, -2, "release");
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, io_funcs);
  lua_setfield(L, -2, "io");
}
