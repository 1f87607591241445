/* op_copy.c: ops that copy data: contiguous, clone, dtype conversion, copy_,
** fill_, cat, stack, flip, roll, pad; with their gradients. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_internal.h"
#include "iter.h"

/* load element k of a buffer of dtype dt as double / store a double */
static inline double load_d(const void *p, fdm_dtype dt, int64_t k) {
  switch (dt) {
    case FDM_FLOAT32: return ((const float *)p)[k];
    case FDM_FLOAT16: return fdm_half_to_float(((const uint16_t *)p)[k]);
    case FDM_BFLOAT16: return fdm_bf16_to_float(((const uint16_t *)p)[k]);
    case FDM_INT64: return (double)((const int64_t *)p)[k];
    case FDM_UINT8: return ((const uint8_t *)p)[k];
    case FDM_BOOL: return ((const uint8_t *)p)[k] != 0;
    default: return 0;
  }
}
static inline void store_d(void *p, fdm_dtype dt, int64_t k, double v) {
  switch (dt) {
    case FDM_FLOAT32: ((float *)p)[k] = (float)v; break;
    case FDM_FLOAT16: ((uint16_t *)p)[k] = fdm_float_to_half((float)v); break;
    case FDM_BFLOAT16: ((uint16_t *)p)[k] = fdm_float_to_bf16((float)v); break;
    case FDM_INT64: ((int64_t *)p)[k] = isnan(v) ? 0 : (int64_t)v; break;
    case FDM_UINT8: ((uint8_t *)p)[k] = (uint8_t)(int64_t)v; break;
    case FDM_BOOL: ((uint8_t *)p)[k] = v != 0; break;
    default: break;
  }
}

void fdm_strided_copy(fdm_tensor *dst, const fdm_tensor *src) {
  fdm_tensor *ops[2] = {dst, (fdm_tensor *)src};
  fdm_iter it;
  iter_init(&it, dst->ndim, dst->shape, 2, ops);
  void *pd = fdm_data(dst);
  const void *ps = fdm_data(src);
  if (dst->dtype == src->dtype) {
    size_t es = fdm_dtype_size(dst->dtype);
    if (it.nd == 1 && it.st[0][0] == 1 && it.st[1][0] == 1) { memcpy(pd, ps, it.numel * es); return; }
    if (es == 4) { uint32_t *d = pd; const uint32_t *s = ps; ITER_FOR(it, { d[o0] = s[o1]; }); return; }
    if (es == 8) { uint64_t *d = pd; const uint64_t *s = ps; ITER_FOR(it, { d[o0] = s[o1]; }); return; }
    if (es == 2) { uint16_t *d = pd; const uint16_t *s = ps; ITER_FOR(it, { d[o0] = s[o1]; }); return; }
    uint8_t *d = pd; const uint8_t *s = ps; ITER_FOR(it, { d[o0] = s[o1]; });
    return;
  }
  fdm_dtype dd = dst->dtype, sd = src->dtype;
  if (dd == FDM_FLOAT32 && sd == FDM_UINT8) {
    float *d = pd; const uint8_t *s = ps; ITER_FOR(it, { d[o0] = s[o1]; }); return;
  }
  if (dd == FDM_FLOAT32 && sd == FDM_INT64) {
    float *d = pd; const int64_t *s = ps; ITER_FOR(it, { d[o0] = (float)s[o1]; }); return;
  }
  ITER_FOR(it, { store_d(pd, dd, o0, load_d(ps, sd, o1)); });
}

/* ---- contiguous / clone: copies whose gradient passes straight through ---- */
static int identity_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  fdm_retain(g);
  gin[0] = g;
  return 0;
}

static fdm_tensor *copy_of(fdm_tensor *t, const char *name) {
  if (fdm_backend_check(name, 1, &t)) return NULL;
  fdm_tensor *r = fdm_empty(t->dtype, t->ndim, t->shape, t->device);
  if (!r) return NULL;
  fdm_strided_copy(r, t);
  if (t->dtype == FDM_FLOAT32) fdm_node_attach(r, fdm_node_new(name, identity_backward, 1, &t));
  return r;
}

fdm_tensor *fdm_contiguous(fdm_tensor *t) {
  if (t->storage && fdm_is_contiguous(t)) { fdm_retain(t); return t; }
  return copy_of(t, "contiguous");
}

fdm_tensor *fdm_clone(fdm_tensor *t) { return copy_of(t, "clone"); }

fdm_tensor *fdm_float_contig(fdm_tensor *t) {
  if (t->dtype == FDM_FLOAT32) return fdm_contiguous(t);
  fdm_tensor *f = fdm_to_dtype(t, FDM_FLOAT32);
  return f;
}

/* ---- dtype conversion ---- */
static int to_dtype_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  /* float -> half -> float: the gradient comes back as float32 */
  fdm_retain(g);
  gin[0] = g;
  return 0;
}

fdm_tensor *fdm_to_dtype(fdm_tensor *t, fdm_dtype dt) {
  if (fdm_backend_check("to", 1, &t)) return NULL;
  if (t->dtype == dt) { fdm_retain(t); return t; }
  fdm_tensor *r = fdm_empty(dt, t->ndim, t->shape, t->device);
  if (!r) return NULL;
  fdm_strided_copy(r, t);
  if (t->dtype == FDM_FLOAT32 && dt == FDM_FLOAT32)
    fdm_node_attach(r, fdm_node_new("to", to_dtype_backward, 1, &t));
  return r;
}

int fdm_copy_(fdm_tensor *dst, fdm_tensor *src) {
  fdm_tensor *chk[2] = {dst, src};
  if (fdm_check_inplace("copy_", dst) || fdm_backend_check("copy_", 2, chk)) return -1;
  int64_t shape[FDM_MAXDIM];
  int nd = fdm_broadcast_shape("copy_", dst, src, shape);
  if (nd < 0) return -1;
  if (nd != dst->ndim || memcmp(shape, dst->shape, nd * sizeof *shape)) {
    char b1[128], b2[128];
    return fdm_seterror("copy_: source shape %s cannot be broadcast to destination shape %s",
                        fdm_shapestr(src, b1, sizeof b1), fdm_shapestr(dst, b2, sizeof b2));
  }
  fdm_tensor *s = src;
  if (src->storage == dst->storage && src != dst) {   /* overlapping views: go through a copy */
    int prev = fdm_set_grad_enabled(0);
    s = fdm_clone(src);
    fdm_set_grad_enabled(prev);
    if (!s) return -1;
  } else fdm_retain(s);
  fdm_strided_copy(dst, s);
  fdm_release(s);
  return 0;
}

int fdm_fill_(fdm_tensor *dst, double v) {
  if (!dst->storage) return fdm_seterror("fill_: tensor was freed (t:free()) and cannot be used");
  if (fdm_check_inplace("fill_", dst)) return -1;
  fdm_tensor *ops[1] = {dst};
  fdm_iter it;
  iter_init(&it, dst->ndim, dst->shape, 1, ops);
  void *p = fdm_data(dst);
  switch (dst->dtype) {
    case FDM_FLOAT32: { float *d = p, f = (float)v; ITER_FOR(it, { d[o0] = f; }); break; }
    case FDM_INT64: { int64_t *d = p, f = (int64_t)v; ITER_FOR(it, { d[o0] = f; }); break; }
    default: { fdm_dtype dt = dst->dtype; ITER_FOR(it, { store_d(p, dt, o0, v); }); break; }
  }
  return 0;
}

/* ---- cat / stack ---- */
static int cat_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  int dim = (int)n->i[0];
  int64_t start = 0;
  for (int k = 0; k < n->ninputs; k++) {
    int64_t len = n->in_shape[k][dim];
    if (n->needs[k]) {
      fdm_tensor *v = fdm_narrow(g, dim, start, len);
      gin[k] = v ? fdm_contiguous(v) : NULL;
      fdm_release(v);
      if (!gin[k]) return -1;
    }
    start += len;
  }
  return 0;
}

static fdm_tensor *cat_impl(int n, fdm_tensor *const *ts, int dim, const char *name) {
  char b1[128], b2[128];
  if (n < 1) { fdm_seterror("%s: expected a non-empty list of tensors", name); return NULL; }
  if (fdm_backend_check(name, n, ts)) return NULL;
  const fdm_tensor *t0 = ts[0];
  if (dim < 0 || dim >= t0->ndim) { fdm_seterror("%s: dim %d out of range for %d-d tensors", name, dim + 1, t0->ndim); return NULL; }
  int64_t shape[FDM_MAXDIM];
  memcpy(shape, t0->shape, sizeof shape);
  shape[dim] = 0;
  fdm_dtype dt = t0->dtype;
  for (int k = 0; k < n; k++) {
    const fdm_tensor *t = ts[k];
    int ok = t->ndim == t0->ndim;
    for (int d = 0; ok && d < t->ndim; d++) if (d != dim && t->shape[d] != t0->shape[d]) ok = 0;
    if (!ok) {
      fdm_seterror("%s: tensor %d has shape %s, incompatible with %s (all dims but %d must match)",
                   name, k + 1, fdm_shapestr(t, b1, sizeof b1), fdm_shapestr(t0, b2, sizeof b2), dim + 1);
      return NULL;
    }
    if (t->dtype != dt) { fdm_seterror("%s: tensor %d is %s, tensor 1 is %s", name, k + 1, fdm_dtype_name(t->dtype), fdm_dtype_name(dt)); return NULL; }
    shape[dim] += t->shape[dim];
  }
  fdm_tensor *out = fdm_empty(dt, t0->ndim, shape, t0->device);
  if (!out) return NULL;
  int64_t start = 0;
  for (int k = 0; k < n; k++) {
    int prev = fdm_set_grad_enabled(0);
    fdm_tensor *v = fdm_narrow(out, dim, start, ts[k]->shape[dim]);
    fdm_set_grad_enabled(prev);
    if (!v) { fdm_release(out); return NULL; }
    fdm_strided_copy(v, ts[k]);
    fdm_release(v);
    start += ts[k]->shape[dim];
  }
  if (dt == FDM_FLOAT32 && n <= FDM_NODE_MAXIN) {
    fdm_node *node = fdm_node_new(name, cat_backward, n, ts);
    if (node) { node->i[0] = dim; fdm_node_attach(out, node); }
  } else if (dt == FDM_FLOAT32 && fdm_grad_enabled()) {
    for (int k = 0; k < n; k++)
      if (ts[k]->requires_grad) {
        fdm_release(out);
        fdm_seterror("%s: at most %d tensors can be joined while recording gradients", name, FDM_NODE_MAXIN);
        return NULL;
      }
  }
  return out;
}

fdm_tensor *fdm_cat(int n, fdm_tensor *const *ts, int dim) { return cat_impl(n, ts, dim, "cat"); }

fdm_tensor *fdm_stack(int n, fdm_tensor *const *ts, int dim) {
  if (n < 1) { fdm_seterror("stack: expected a non-empty list of tensors"); return NULL; }
  if (dim < 0 || dim > ts[0]->ndim) { fdm_seterror("stack: dim %d out of range", dim + 1); return NULL; }
  fdm_tensor *us[256];
  if (n > 256) { fdm_seterror("stack: at most 256 tensors at once"); return NULL; }
  for (int k = 0; k < n; k++) {
    char b1[128], b2[128];
    if (!fdm_same_shape(ts[k], ts[0])) {
      for (int j = 0; j < k; j++) fdm_release(us[j]);
      fdm_seterror("stack: tensor %d has shape %s, tensor 1 has %s (stack needs equal shapes)", k + 1,
                   fdm_shapestr(ts[k], b1, sizeof b1), fdm_shapestr(ts[0], b2, sizeof b2));
      return NULL;
    }
    us[k] = fdm_unsqueeze(ts[k], dim);
    if (!us[k]) { for (int j = 0; j < k; j++) fdm_release(us[j]); return NULL; }
  }
  fdm_tensor *r = cat_impl(n, us, dim, "stack");
  for (int k = 0; k < n; k++) fdm_release(us[k]);
  return r;
}

/* ---- flip / roll ---- */
static int flip_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  int dims[FDM_MAXDIM];
  for (int k = 0; k < n->i[0]; k++) dims[k] = (int)n->i[1 + k];
  gin[0] = fdm_flip(g, (int)n->i[0], dims);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_flip(fdm_tensor *t, int ndims, const int *dims) {
  if (fdm_backend_check("flip", 1, &t)) return NULL;
  int64_t stride[FDM_MAXDIM], off = t->offset;
  memcpy(stride, t->stride, sizeof stride);
  for (int k = 0; k < ndims; k++) {
    int d = dims[k];
    if (d < 0 || d >= t->ndim) { fdm_seterror("flip: dim %d out of range for a %d-d tensor", d + 1, t->ndim); return NULL; }
    if (t->shape[d] > 0) off += (t->shape[d] - 1) * t->stride[d];
    stride[d] = -t->stride[d];
  }
  /* a negative-stride view copied out: flips stay copies, as in PyTorch */
  fdm_tensor *v = fdm_make_view(t, t->ndim, t->shape, stride, off);
  if (!v) return NULL;
  fdm_tensor *r = fdm_empty(t->dtype, t->ndim, t->shape, t->device);
  if (r) fdm_strided_copy(r, v);
  fdm_release(v);
  if (r && t->dtype == FDM_FLOAT32) {
    fdm_node *node = fdm_node_new("flip", flip_backward, 1, &t);
    if (node) {
      node->i[0] = ndims;
      for (int k = 0; k < ndims; k++) node->i[1 + k] = dims[k];
      fdm_node_attach(r, node);
    }
  }
  return r;
}

static int roll_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  int k = (int)n->i[0], dims[FDM_MAXDIM];
  int64_t shifts[FDM_MAXDIM];
  for (int j = 0; j < k; j++) { shifts[j] = -n->i[1 + j]; dims[j] = (int)n->i[1 + FDM_MAXDIM + j]; }
  gin[0] = fdm_roll(g, k, shifts, dims);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_roll(fdm_tensor *t, int n, const int64_t *shifts, const int *dims) {
  if (fdm_backend_check("roll", 1, &t)) return NULL;
  if (n > FDM_MAXDIM) { fdm_seterror("roll: too many dims"); return NULL; }
  int prev = fdm_set_grad_enabled(0);
  fdm_tensor *cur = t;
  fdm_retain(cur);
  for (int k = 0; k < n && cur; k++) {
    int d = dims[k];
    if (d < 0 || d >= t->ndim) { fdm_seterror("roll: dim %d out of range for a %d-d tensor", d + 1, t->ndim); fdm_release(cur); cur = NULL; break; }
    int64_t len = t->shape[d];
    if (len == 0) continue;
    int64_t s = ((shifts[k] % len) + len) % len;
    if (s == 0) continue;
    fdm_tensor *a = fdm_narrow(cur, d, len - s, s), *b = fdm_narrow(cur, d, 0, len - s);
    fdm_tensor *parts[2] = {a, b};
    fdm_tensor *r = (a && b) ? fdm_cat(2, parts, d) : NULL;
    fdm_release(a); fdm_release(b); fdm_release(cur);
    cur = r;
  }
  fdm_set_grad_enabled(prev);
  if (cur && cur == t) { fdm_release(cur); cur = fdm_clone(t); if (cur) { fdm_node_release(cur->grad_fn); cur->grad_fn = NULL; cur->requires_grad = 0; } }
  if (cur && t->dtype == FDM_FLOAT32) {
    fdm_node *node = fdm_node_new("roll", roll_backward, 1, &t);
    if (node) {
      node->i[0] = n;
      for (int k = 0; k < n; k++) { node->i[1 + k] = shifts[k]; node->i[1 + FDM_MAXDIM + k] = dims[k]; }
      fdm_node_attach(cur, node);
    }
  }
  return cur;
}

/* ---- constant padding of the last dims ---- */
static int pad_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  fdm_tensor *cur = g;
  fdm_retain(cur);
  int npad = (int)n->i[0];
  for (int k = 0; k < npad / 2 && cur; k++) {
    int d = g->ndim - 1 - k;
    fdm_tensor *v = fdm_narrow(cur, d, n->i[1 + 2 * k], n->in_shape[0][d]);
    fdm_release(cur);
    cur = v;
  }
  gin[0] = cur ? fdm_contiguous(cur) : NULL;
  fdm_release(cur);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_pad(fdm_tensor *t, int npad, const int64_t *pads, double value) {
  if (fdm_backend_check("pad", 1, &t)) return NULL;
  if (npad % 2 || npad / 2 > t->ndim) {
    fdm_seterror("pad: expected an even number of paddings, at most 2 per dim (%d dims), got %d", t->ndim, npad);
    return NULL;
  }
  int64_t shape[FDM_MAXDIM];
  memcpy(shape, t->shape, sizeof shape);
  for (int k = 0; k < npad / 2; k++) {
    int d = t->ndim - 1 - k;
    if (pads[2 * k] < 0 || pads[2 * k + 1] < 0) { fdm_seterror("pad: negative padding is not supported"); return NULL; }
    shape[d] += pads[2 * k] + pads[2 * k + 1];
  }
  fdm_tensor *out = fdm_full(t->dtype, t->ndim, shape, value, t->device);
  if (!out) return NULL;
  int prev = fdm_set_grad_enabled(0);
  fdm_tensor *v = out;
  fdm_retain(v);
  for (int k = 0; k < npad / 2 && v; k++) {
    int d = t->ndim - 1 - k;
    fdm_tensor *w = fdm_narrow(v, d, pads[2 * k], t->shape[d]);
    fdm_release(v);
    v = w;
  }
  fdm_set_grad_enabled(prev);
  if (!v) { fdm_release(out); return NULL; }
  fdm_strided_copy(v, t);
  fdm_release(v);
  if (t->dtype == FDM_FLOAT32) {
    fdm_node *node = fdm_node_new("pad", pad_backward, 1, &t);
    if (node) {
      node->i[0] = npad;
      for (int k = 0; k < npad; k++) node->i[1 + k] = pads[k];
      fdm_node_attach(out, node);
    }
  }
  return out;
}
