/* op_copy.c: ops that copy data: contiguous, clone, dtype conversion, copy_,
** fill_, cat, stack, flip, roll, pad; with their gradients. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_internal.h"

int fdm_strided_copy(fdm_tensor *dst, const fdm_tensor *src) {
  fdm_kview vd = fdm_kview_of(dst), vs = fdm_kview_bcast(src, dst->ndim, dst->shape);
  return FDM_KERNEL(dst->device, "copy", copy, &vd, &vs);
}

fdm_tensor *fdm_full(fdm_dtype dt, int ndim, const int64_t *shape, double v, fdm_device dev) {
  fdm_tensor *t = fdm_empty(dt, ndim, shape, dev);
  if (t && fdm_fill_(t, v) != 0) { fdm_release(t); return NULL; }
  return t;
}

fdm_tensor *fdm_scratch(fdm_device dev, size_t nfloats) {
  int64_t n = (int64_t)(nfloats ? nfloats : 1);
  return fdm_empty(FDM_FLOAT32, 1, &n, dev);
}


/* ---- contiguous / clone: copies whose gradient passes straight through ---- */
static int identity_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  fdm_retain(g);
  gin[0] = g;
  return 0;
}

/* records a node whose backward is the identity (no state) */
static int record_identity(fdm_tensor *out, fdm_tensor *in, const char *name) {
  fdm_node *n;
  if (fdm_node_new(name, identity_backward, 1, &in, 0, &n) || fdm_node_attach(out, n)) return -1;
  return 0;
}

static fdm_tensor *copy_of(fdm_tensor *t, const char *name) {
  if (fdm_backend_check(name, 1, &t)) return NULL;
  fdm_tensor *r = fdm_empty(t->dtype, t->ndim, t->shape, t->device);
  if (!r) return NULL;
  if (fdm_strided_copy(r, t) || (t->dtype == FDM_FLOAT32 && record_identity(r, t, name))) {
    fdm_release(r);
    return NULL;
  }
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

/* ---- dtype conversion (not differentiable: float32 -> float32 returns t itself) ---- */
fdm_tensor *fdm_to_dtype(fdm_tensor *t, fdm_dtype dt) {
  if (fdm_backend_check("to", 1, &t)) return NULL;
  if (t->dtype == dt) { fdm_retain(t); return t; }
  fdm_tensor *r = fdm_empty(dt, t->ndim, t->shape, t->device);
  if (!r) return NULL;
  if (fdm_strided_copy(r, t)) { fdm_release(r); return NULL; }
  return r;
}

/* ---- moving between devices: the storage's bytes go through the backends'
** upload/download; strided tensors are made contiguous on their device first */
static int to_device_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  fdm_device *dev = FDM_NODE_STATE(n, fdm_device);   /* the source's device */
  if (!dev) return -1;
  gin[0] = fdm_to_device(g, *dev);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_to_device(fdm_tensor *t, fdm_device dev) {
  if (fdm_backend_check("to", 1, &t) || !fdm_backend_get(dev)) return NULL;
  if (t->device == dev) { fdm_retain(t); return t; }
  int prev = fdm_set_grad_enabled(0);
  fdm_tensor *c = fdm_contiguous(t);
  fdm_set_grad_enabled(prev);
  if (!c) return NULL;
  fdm_tensor *r = fdm_empty(t->dtype, t->ndim, t->shape, dev);
  if (r && fdm_transfer_bytes(r, c)) { fdm_release(r); r = NULL; }
  fdm_release(c);
  if (r && t->dtype == FDM_FLOAT32) {
    fdm_node *n;
    if (fdm_node_new("to", to_device_backward, 1, &t, sizeof(fdm_device), &n)) { fdm_release(r); return NULL; }
    if (n) *(fdm_device *)n->state = t->device;
    if (fdm_node_attach(r, n)) { fdm_release(r); return NULL; }
  }
  return r;
}

fdm_tensor *fdm_host_contiguous(fdm_tensor *t) {
  int prev = fdm_set_grad_enabled(0);
  fdm_tensor *h = fdm_to_device(t, FDM_CPU), *c = h ? fdm_contiguous(h) : NULL;
  fdm_set_grad_enabled(prev);
  fdm_release(h);
  return c;
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
  int rc = fdm_strided_copy(dst, s);
  fdm_release(s);
  if (rc == 0) fdm_bump_version(dst);
  return rc;
}

int fdm_fill_(fdm_tensor *dst, double v) {
  if (!dst->storage) return fdm_seterror("fill_: tensor was freed (t:free()) and cannot be used");
  if (fdm_check_inplace("fill_", dst) || fdm_backend_check("fill_", 1, &dst)) return -1;
  fdm_kview vd = fdm_kview_of(dst);
  if (FDM_KERNEL(dst->device, "fill_", fill, &vd, v)) return -1;
  fdm_bump_version(dst);
  return 0;
}

/* ---- cat / stack ---- */
typedef struct { int dim; } cat_state;

static int cat_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  cat_state *s = FDM_NODE_STATE(n, cat_state);
  if (!s) return -1;
  int64_t start = 0;
  for (int k = 0; k < n->ninputs; k++) {
    int64_t len = fdm_node_input_at(n, k)->shape[s->dim];
    if (fdm_node_needs(n, k)) {
      fdm_tensor *v = fdm_narrow(g, s->dim, start, len);
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
    if (shape[dim] > INT64_MAX - t->shape[dim]) { fdm_seterror("%s: the joined size overflows", name); return NULL; }
    shape[dim] += t->shape[dim];
  }
  fdm_tensor *out = fdm_empty(dt, t0->ndim, shape, t0->device);
  if (!out) return NULL;
  int64_t start = 0;
  for (int k = 0; k < n; k++) {
    int prev = fdm_set_grad_enabled(0);
    fdm_tensor *v = fdm_narrow(out, dim, start, ts[k]->shape[dim]);
    fdm_set_grad_enabled(prev);
    int rc = v ? fdm_strided_copy(v, ts[k]) : -1;
    fdm_release(v);
    if (rc) { fdm_release(out); return NULL; }
    start += ts[k]->shape[dim];
  }
  if (dt == FDM_FLOAT32) {
    fdm_node *node;
    if (fdm_node_new(name, cat_backward, n, ts, sizeof(cat_state), &node)) { fdm_release(out); return NULL; }
    if (node) ((cat_state *)node->state)->dim = dim;
    if (fdm_node_attach(out, node)) { fdm_release(out); return NULL; }
  }
  return out;
}

fdm_tensor *fdm_cat(int n, fdm_tensor *const *ts, int dim) { return cat_impl(n, ts, dim, "cat"); }

fdm_tensor *fdm_stack(int n, fdm_tensor *const *ts, int dim) {
  if (n < 1) { fdm_seterror("stack: expected a non-empty list of tensors"); return NULL; }
  if (dim < 0 || dim > ts[0]->ndim) { fdm_seterror("stack: dim %d out of range", dim + 1); return NULL; }
  fdm_tensor **us = calloc(n, sizeof *us);
  if (!us) { fdm_seterror("stack: out of memory"); return NULL; }
  fdm_tensor *r = NULL;
  for (int k = 0; k < n; k++) {
    char b1[128], b2[128];
    if (!fdm_same_shape(ts[k], ts[0])) {
      fdm_seterror("stack: tensor %d has shape %s, tensor 1 has %s (stack needs equal shapes)", k + 1,
                   fdm_shapestr(ts[k], b1, sizeof b1), fdm_shapestr(ts[0], b2, sizeof b2));
      goto done;
    }
    us[k] = fdm_unsqueeze(ts[k], dim);
    if (!us[k]) goto done;
  }
  r = cat_impl(n, us, dim, "stack");
done:
  for (int k = 0; k < n; k++) fdm_release(us[k]);
  free(us);
  return r;
}

/* ---- flip / roll ---- */
typedef struct { int ndims; int dims[FDM_MAXDIM]; } flip_state;

static int flip_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  flip_state *s = FDM_NODE_STATE(n, flip_state);
  if (!s) return -1;
  gin[0] = fdm_flip(g, s->ndims, s->dims);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_flip(fdm_tensor *t, int ndims, const int *dims) {
  if (fdm_backend_check("flip", 1, &t)) return NULL;
  if (ndims < 0 || ndims > FDM_MAXDIM) { fdm_seterror("flip: at most %d dims, got %d", FDM_MAXDIM, ndims); return NULL; }
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
  if (r && fdm_strided_copy(r, v)) { fdm_release(r); r = NULL; }
  fdm_release(v);
  if (r && t->dtype == FDM_FLOAT32) {
    fdm_node *node;
    if (fdm_node_new("flip", flip_backward, 1, &t, sizeof(flip_state), &node)) { fdm_release(r); return NULL; }
    if (node) {
      flip_state *s = node->state;
      s->ndims = ndims;
      memcpy(s->dims, dims, ndims * sizeof *dims);
    }
    if (fdm_node_attach(r, node)) { fdm_release(r); return NULL; }
  }
  return r;
}

typedef struct { int n; int64_t shifts[FDM_MAXDIM]; int dims[FDM_MAXDIM]; } roll_state;

static int roll_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  roll_state *s = FDM_NODE_STATE(n, roll_state);
  if (!s) return -1;
  int64_t back[FDM_MAXDIM];
  for (int j = 0; j < s->n; j++) back[j] = -s->shifts[j];
  gin[0] = fdm_roll(g, s->n, back, s->dims);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_roll(fdm_tensor *t, int n, const int64_t *shifts, const int *dims) {
  if (fdm_backend_check("roll", 1, &t)) return NULL;
  if (n < 0 || n > FDM_MAXDIM) { fdm_seterror("roll: at most %d dims, got %d", FDM_MAXDIM, n); return NULL; }
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
  if (cur && cur == t) { fdm_release(cur); cur = fdm_clone(t); }
  fdm_set_grad_enabled(prev);
  if (cur && t->dtype == FDM_FLOAT32) {
    fdm_node *node;
    if (fdm_node_new("roll", roll_backward, 1, &t, sizeof(roll_state), &node)) { fdm_release(cur); return NULL; }
    if (node) {
      roll_state *s = node->state;
      s->n = n;
      for (int k = 0; k < n; k++) { s->shifts[k] = shifts[k]; s->dims[k] = dims[k]; }
    }
    if (fdm_node_attach(cur, node)) { fdm_release(cur); return NULL; }
  }
  return cur;
}

/* ---- constant padding of the last dims ---- */
typedef struct { int npad; int64_t pads[2 * FDM_MAXDIM]; } pad_state;

static int pad_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  pad_state *s = FDM_NODE_STATE(n, pad_state);
  if (!s) return -1;
  const int64_t *in_shape = fdm_node_input_at(n, 0)->shape;
  fdm_tensor *cur = g;
  fdm_retain(cur);
  for (int k = 0; k < s->npad / 2 && cur; k++) {
    int d = g->ndim - 1 - k;
    fdm_tensor *v = fdm_narrow(cur, d, s->pads[2 * k], in_shape[d]);
    fdm_release(cur);
    cur = v;
  }
  gin[0] = cur ? fdm_contiguous(cur) : NULL;
  fdm_release(cur);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_pad(fdm_tensor *t, int npad, const int64_t *pads, double value) {
  if (fdm_backend_check("pad", 1, &t)) return NULL;
  if (npad < 0 || npad % 2 || npad / 2 > t->ndim) {
    fdm_seterror("pad: expected an even number of paddings, at most 2 per dim (%d dims), got %d", t->ndim, npad);
    return NULL;
  }
  int64_t shape[FDM_MAXDIM];
  memcpy(shape, t->shape, sizeof shape);
  for (int k = 0; k < npad / 2; k++) {
    int d = t->ndim - 1 - k;
    if (pads[2 * k] < 0 || pads[2 * k + 1] < 0) { fdm_seterror("pad: negative padding is not supported"); return NULL; }
    if (pads[2 * k] > INT64_MAX / 4 || pads[2 * k + 1] > INT64_MAX / 4 || shape[d] > INT64_MAX / 2) {
      fdm_seterror("pad: padding too large");
      return NULL;
    }
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
  int rc = v ? fdm_strided_copy(v, t) : -1;
  fdm_release(v);
  if (rc) { fdm_release(out); return NULL; }
  if (t->dtype == FDM_FLOAT32) {
    fdm_node *node;
    if (fdm_node_new("pad", pad_backward, 1, &t, sizeof(pad_state), &node)) { fdm_release(out); return NULL; }
    if (node) {
      pad_state *s = node->state;
      s->npad = npad;
      memcpy(s->pads, pads, npad * sizeof *pads);
    }
    if (fdm_node_attach(out, node)) { fdm_release(out); return NULL; }
  }
  return out;
}
