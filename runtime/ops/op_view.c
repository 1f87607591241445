/* op_view.c: views that share storage (view/reshape, narrow, slice, select,
** permute, expand, squeeze) and gather; with their gradients. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_internal.h"

static int shape_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  const fdm_node_input *in = fdm_node_input_at(n, 0);
  gin[0] = fdm_reshape(g, in->ndim, in->shape);
  return gin[0] ? 0 : -1;
}

/* records a node of state_size bytes on a float32 view; *state gets its state (NULL when
** nothing is recorded). Returns out, or NULL (out released) on failure. */
static fdm_tensor *record_state(fdm_tensor *out, fdm_tensor *in, const char *name, fdm_backward_fn bw,
                                size_t state_size, void **state) {
  if (state) *state = NULL;
  if (!out || in->dtype != FDM_FLOAT32) return out;
  fdm_node *n;
  if (fdm_node_new(name, bw, 1, &in, state_size, &n)) { fdm_release(out); return NULL; }
  if (n && state) *state = n->state;
  if (fdm_node_attach(out, n)) { fdm_release(out); return NULL; }
  return out;
}

static fdm_tensor *record(fdm_tensor *out, fdm_tensor *in, const char *name, fdm_backward_fn bw) {
  return record_state(out, in, name, bw, 0, NULL);
}

/* resolves one -1 and checks the element count (products checked against overflow) */
static int infer_shape(const char *op, const fdm_tensor *t, int ndim, const int64_t *in, int64_t *out) {
  int64_t n = 1, numel = fdm_numel(t);
  int neg = -1, zero = 0;
  char b[128];
  if (ndim < 0 || ndim > FDM_MAXDIM) return fdm_seterror("%s: at most %d dims", op, FDM_MAXDIM);
  for (int d = 0; d < ndim; d++) {
    out[d] = in[d];
    if (in[d] == -1) {
      if (neg >= 0) return fdm_seterror("%s: only one dimension can be -1", op);
      neg = d;
    } else if (in[d] < 0) return fdm_seterror("%s: invalid size %lld", op, (long long)in[d]);
    else if (in[d] == 0) zero = 1;
  }
  for (int d = 0; d < ndim; d++) {
    if (d == neg || in[d] == 0) continue;
    if (n > INT64_MAX / in[d]) goto bad;   /* sizes no tensor can have (zeros counted as ones) */
    n *= in[d];
  }
  if (zero) n = 0;
  if (neg >= 0) {
    if (n == 0 || numel % n) goto bad;
    out[neg] = numel / n;
  } else if (n != numel) goto bad;
  return 0;
bad:
  fdm_seterror("%s: shape [", op);
  {
    char msg[512]; size_t k = 0;
    for (int d = 0; d < ndim; d++) k += snprintf(msg + k, sizeof msg - k, d ? ", %lld" : "%lld", (long long)in[d]);
    return fdm_seterror("%s: shape [%s] is invalid for a tensor of shape %s (%lld elements)", op, msg,
                        fdm_shapestr(t, b, sizeof b), (long long)numel);
  }
}

/* strides for viewing t as shape without copying, if possible (PyTorch's computeStride) */
static int view_strides(const fdm_tensor *t, int nd, const int64_t *shape, int64_t *st) {
  if (fdm_is_contiguous(t)) {
    int64_t s = 1;
    for (int d = nd - 1; d >= 0; d--) { st[d] = s; s *= shape[d]; }
    return 1;
  }
  int64_t numel = fdm_numel(t);
  if (numel == 0) { for (int d = 0; d < nd; d++) st[d] = 1; return 1; }
  int view_d = nd - 1;
  int64_t chunk_base = t->stride[t->ndim - 1], tensor_numel = 1, view_numel = 1;
  for (int td = t->ndim - 1; td >= 0; td--) {
    tensor_numel *= t->shape[td];
    if (td == 0 || (t->shape[td - 1] != 1 && t->stride[td - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        st[view_d] = view_numel * chunk_base;
        view_numel *= shape[view_d];
        view_d--;
      }
      if (view_numel != tensor_numel) return 0;
      if (td > 0) { chunk_base = t->stride[td - 1]; tensor_numel = 1; view_numel = 1; }
    }
  }
  return view_d == -1;
}

fdm_tensor *fdm_view(fdm_tensor *t, int ndim, const int64_t *shape) {
  int64_t sh[FDM_MAXDIM], st[FDM_MAXDIM];
  char b[128];
  if (fdm_backend_check("view", 1, &t) || infer_shape("view", t, ndim, shape, sh)) return NULL;
  if (!view_strides(t, ndim, sh, st)) {
    fdm_seterror("view: tensor of shape %s with these strides cannot be viewed as the new shape; "
                 "use reshape() (it copies)", fdm_shapestr(t, b, sizeof b));
    return NULL;
  }
  return record(fdm_make_view(t, ndim, sh, st, t->offset), t, "view", shape_backward);
}

fdm_tensor *fdm_reshape(fdm_tensor *t, int ndim, const int64_t *shape) {
  int64_t sh[FDM_MAXDIM], st[FDM_MAXDIM];
  if (fdm_backend_check("reshape", 1, &t) || infer_shape("reshape", t, ndim, shape, sh)) return NULL;
  if (view_strides(t, ndim, sh, st))
    return record(fdm_make_view(t, ndim, sh, st, t->offset), t, "reshape", shape_backward);
  fdm_tensor *c = fdm_contiguous(t);
  if (!c) return NULL;
  fdm_tensor *r = fdm_view(c, ndim, sh);
  fdm_release(c);
  return r;
}

static int check_dim(const char *op, const fdm_tensor *t, int dim) {
  if (dim >= 0 && dim < t->ndim) return 0;
  return fdm_seterror("%s: dim %d out of range for a %d-d tensor", op, dim + 1, t->ndim);
}

/* a slice [start, stop) by step, or (is_select) the single index start, along dim */
typedef struct { int dim, is_select; int64_t start, stop, step; } window_state;

/* gradient of a sub-view: zeros of the input's shape with g written into the same window */
static int window_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  window_state *s = FDM_NODE_STATE(n, window_state);
  if (!s) return -1;
  const fdm_node_input *in = fdm_node_input_at(n, 0);
  fdm_tensor *z = fdm_zeros(FDM_FLOAT32, in->ndim, in->shape, g->device);
  if (!z) return -1;
  fdm_tensor *w = s->is_select ? fdm_select(z, s->dim, s->start)
                               : fdm_slice(z, s->dim, s->start, s->stop, s->step);
  int rc = w ? fdm_strided_copy(w, g) : -1;
  fdm_release(w);
  if (rc) { fdm_release(z); return -1; }
  gin[0] = z;
  return 0;
}

fdm_tensor *fdm_slice(fdm_tensor *t, int dim, int64_t start, int64_t stop, int64_t step) {
  if (fdm_backend_check("slice", 1, &t) || check_dim("slice", t, dim)) return NULL;
  int64_t len = t->shape[dim];
  if (step <= 0) { fdm_seterror("slice: step must be positive, got %lld", (long long)step); return NULL; }
  if (start < 0 || stop > len || start > stop) {
    fdm_seterror("slice: range [%lld, %lld) out of bounds for dim %d of size %lld",
                 (long long)start, (long long)stop, dim + 1, (long long)len);
    return NULL;
  }
  int64_t shape[FDM_MAXDIM], stride[FDM_MAXDIM];
  memcpy(shape, t->shape, sizeof shape); memcpy(stride, t->stride, sizeof stride);
  shape[dim] = stop > start ? (stop - start - 1) / step + 1 : 0;
  stride[dim] = t->stride[dim] * step;
  window_state *s;
  fdm_tensor *v = record_state(fdm_make_view(t, t->ndim, shape, stride, t->offset + start * t->stride[dim]),
                               t, "slice", window_backward, sizeof(window_state), (void **)&s);
  if (s) { s->dim = dim; s->start = start; s->stop = stop; s->step = step; }
  return v;
}

fdm_tensor *fdm_narrow(fdm_tensor *t, int dim, int64_t start, int64_t len) {
  if (check_dim("narrow", t, dim)) return NULL;
  if (len < 0 || start < 0 || start > t->shape[dim] - len) {
    fdm_seterror("narrow: start %llu + length %lld exceeds dim %d of size %lld", (unsigned long long)start + 1,
                 (long long)len, dim + 1, (long long)t->shape[dim]);
    return NULL;
  }
  return fdm_slice(t, dim, start, start + len, 1);
}

fdm_tensor *fdm_select(fdm_tensor *t, int dim, int64_t i) {
  if (fdm_backend_check("select", 1, &t) || check_dim("select", t, dim)) return NULL;
  if (i < 0 || i >= t->shape[dim]) {
    fdm_seterror("select: index %lld out of range for dim %d of size %lld", (long long)i + 1, dim + 1,
                 (long long)t->shape[dim]);
    return NULL;
  }
  int64_t shape[FDM_MAXDIM], stride[FDM_MAXDIM];
  int k = 0;
  for (int d = 0; d < t->ndim; d++) if (d != dim) { shape[k] = t->shape[d]; stride[k] = t->stride[d]; k++; }
  window_state *s;
  fdm_tensor *v = record_state(fdm_make_view(t, t->ndim - 1, shape, stride, t->offset + i * t->stride[dim]),
                               t, "select", window_backward, sizeof(window_state), (void **)&s);
  if (s) { s->dim = dim; s->is_select = 1; s->start = i; }
  return v;
}

typedef struct { int perm[FDM_MAXDIM]; } permute_state;

static int permute_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  permute_state *s = FDM_NODE_STATE(n, permute_state);
  if (!s) return -1;
  int inv[FDM_MAXDIM];
  for (int d = 0; d < g->ndim; d++) inv[s->perm[d]] = d;
  gin[0] = fdm_permute(g, inv);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_permute(fdm_tensor *t, const int *perm) {
  if (fdm_backend_check("permute", 1, &t)) return NULL;
  int seen[FDM_MAXDIM] = {0};
  int64_t shape[FDM_MAXDIM], stride[FDM_MAXDIM];
  for (int d = 0; d < t->ndim; d++) {
    int p = perm[d];
    if (p < 0 || p >= t->ndim || seen[p]++) {
      fdm_seterror("permute: the dims must be a permutation of 1..%d", t->ndim);
      return NULL;
    }
    shape[d] = t->shape[p]; stride[d] = t->stride[p];
  }
  permute_state *s;
  fdm_tensor *v = record_state(fdm_make_view(t, t->ndim, shape, stride, t->offset), t, "permute",
                               permute_backward, sizeof(permute_state), (void **)&s);
  if (s) memcpy(s->perm, perm, t->ndim * sizeof *perm);
  return v;
}

fdm_tensor *fdm_transpose(fdm_tensor *t, int d0, int d1) {
  if (check_dim("transpose", t, d0) || check_dim("transpose", t, d1)) return NULL;
  int perm[FDM_MAXDIM];
  for (int d = 0; d < t->ndim; d++) perm[d] = d;
  perm[d0] = d1; perm[d1] = d0;
  return fdm_permute(t, perm);
}

static int expand_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  gin[0] = fdm_reduce_to_input(n, 0, g);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_expand(fdm_tensor *t, int ndim, const int64_t *shape) {
  char b[128];
  if (fdm_backend_check("expand", 1, &t)) return NULL;
  if (ndim < t->ndim || ndim > FDM_MAXDIM) {
    fdm_seterror("expand: cannot expand shape %s to %d dims", fdm_shapestr(t, b, sizeof b), ndim);
    return NULL;
  }
  int64_t sh[FDM_MAXDIM], st[FDM_MAXDIM];
  int lead = ndim - t->ndim;
  for (int d = 0; d < ndim; d++) {
    int td = d - lead;
    int64_t want = shape[d];
    if (td < 0) {
      if (want < 0) { fdm_seterror("expand: -1 is not allowed for a new leading dim"); return NULL; }
      sh[d] = want; st[d] = 0;
    } else if (want == -1 || want == t->shape[td]) {
      sh[d] = t->shape[td]; st[d] = t->stride[td];
    } else if (t->shape[td] == 1) {
      sh[d] = want; st[d] = 0;
    } else {
      fdm_seterror("expand: the size of dim %d (%lld) must match the new size %lld or be 1 (shape %s)",
                   td + 1, (long long)t->shape[td], (long long)want, fdm_shapestr(t, b, sizeof b));
      return NULL;
    }
    if (sh[d] < 0) { fdm_seterror("expand: invalid size %lld for dim %d", (long long)sh[d], d + 1); return NULL; }
  }
  if (fdm_shape_numel("expand", ndim, sh) < 0) return NULL;   /* its element count must fit int64 */
  return record(fdm_make_view(t, ndim, sh, st, t->offset), t, "expand", expand_backward);
}

fdm_tensor *fdm_squeeze(fdm_tensor *t, int dim) {
  int64_t sh[FDM_MAXDIM];
  int k = 0;
  if (dim != -1 && check_dim("squeeze", t, dim)) return NULL;
  for (int d = 0; d < t->ndim; d++)
    if (!(t->shape[d] == 1 && (dim == -1 || dim == d))) sh[k++] = t->shape[d];
  return fdm_reshape(t, k, sh);
}

fdm_tensor *fdm_unsqueeze(fdm_tensor *t, int dim) {
  if (dim < 0 || dim > t->ndim || t->ndim == FDM_MAXDIM) {
    fdm_seterror("unsqueeze: dim %d out of range for a %d-d tensor", dim + 1, t->ndim);
    return NULL;
  }
  int64_t sh[FDM_MAXDIM], st[FDM_MAXDIM];
  for (int d = 0, k = 0; d <= t->ndim; d++) {
    if (d == dim) { sh[d] = 1; st[d] = (d < t->ndim) ? t->stride[d] * t->shape[d] : 1; }
    else { sh[d] = t->shape[k]; st[d] = t->stride[k]; k++; }
  }
  if (fdm_backend_check("unsqueeze", 1, &t)) return NULL;
  return record(fdm_make_view(t, t->ndim + 1, sh, st, t->offset), t, "unsqueeze", shape_backward);
}

fdm_tensor *fdm_detach(fdm_tensor *t) {
  if (fdm_backend_check("detach", 1, &t)) return NULL;
  return fdm_make_view(t, t->ndim, t->shape, t->stride, t->offset);
}

/* ---- gather ---- */
typedef struct { int dim; fdm_tensor *idx; } index_state;

/* the gradient of gather or index_select: zeros of the input's shape, and
** g added at the saved index by the device's scatter-add kernel */
static int index_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin, int is_gather) {
  index_state *s = FDM_NODE_STATE(n, index_state);
  if (!s) return -1;
  const fdm_node_input *in = fdm_node_input_at(n, 0);
  fdm_tensor *gx = fdm_zeros(FDM_FLOAT32, in->ndim, in->shape, g->device);
  if (!gx) return -1;
  fdm_kview vgx = fdm_kview_of(gx), vi = fdm_kview_of(s->idx), vg = fdm_kview_of(g);
  int rc = is_gather ? FDM_KERNEL(gx->device, "gather", gather_backward, &vgx, &vi, &vg, s->dim)
                     : FDM_KERNEL(gx->device, "index_select", index_select_backward, &vgx, &vi, &vg, s->dim);
  if (rc) { fdm_release(gx); return -1; }
  gin[0] = gx;
  return 0;
}

static int gather_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) { return index_backward(n, g, gin, 1); }

/* records gather / index_select's node, which keeps the (contiguous) index */
static int record_index(fdm_tensor *out, fdm_tensor *t, const char *name, fdm_backward_fn bw, int dim,
                        fdm_tensor *idx) {
  fdm_node *n;
  if (fdm_node_new(name, bw, 1, &t, sizeof(index_state), &n)) return -1;
  if (n) {
    index_state *s = n->state;
    s->dim = dim;
    fdm_node_save(n, &s->idx, idx);
  }
  return fdm_node_attach(out, n);
}

fdm_tensor *fdm_gather(fdm_tensor *t, int dim, fdm_tensor *index) {
  char b1[128], b2[128];
  fdm_tensor *chk[2] = {t, index};
  if (fdm_backend_check("gather", 2, chk) || check_dim("gather", t, dim)) return NULL;
  if (index->dtype != FDM_INT64) { fdm_seterror("gather: index must be int64, got %s", fdm_dtype_name(index->dtype)); return NULL; }
  if (fdm_check_float("gather", t)) return NULL;
  if (index->ndim != t->ndim) goto badshape;
  for (int d = 0; d < t->ndim; d++) if (d != dim && index->shape[d] != t->shape[d]) goto badshape;
  fdm_tensor *x = fdm_contiguous(t), *idx = fdm_contiguous(index);
  fdm_tensor *out = (x && idx) ? fdm_empty(FDM_FLOAT32, index->ndim, index->shape, t->device) : NULL;
  if (out) {
    fdm_kview vo = fdm_kview_of(out), vx = fdm_kview_of(x), vi = fdm_kview_of(idx);
    if (FDM_KERNEL(out->device, "gather", gather, &vo, &vx, &vi, dim) ||
        record_index(out, t, "gather", gather_backward, dim, idx)) {
      fdm_release(out); out = NULL;
    }
  }
  fdm_release(x); fdm_release(idx);
  return out;
badshape:
  fdm_seterror("gather: index shape %s must match input shape %s in every dim but %d",
               fdm_shapestr(index, b1, sizeof b1), fdm_shapestr(t, b2, sizeof b2), dim + 1);
  return NULL;
}

/* ---- index_select: rows picked by an int64 index (a batch from a data set) ---- */
static int index_select_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  return index_backward(n, g, gin, 0);
}

fdm_tensor *fdm_index_select(fdm_tensor *t, int dim, fdm_tensor *index) {
  fdm_tensor *chk[2] = {t, index};
  char b[128];
  if (fdm_backend_check("index_select", 2, chk) || check_dim("index_select", t, dim)) return NULL;
  if (index->dtype != FDM_INT64 || index->ndim != 1) {
    fdm_seterror("index_select: index must be a 1-d int64 tensor, got %s %s", fdm_dtype_name(index->dtype),
                 fdm_shapestr(index, b, sizeof b));
    return NULL;
  }
  fdm_tensor *x = fdm_contiguous(t), *idx = x ? fdm_contiguous(index) : NULL;
  if (!idx) { fdm_release(x); return NULL; }
  int64_t shape[FDM_MAXDIM];
  memcpy(shape, t->shape, sizeof shape);
  shape[dim] = idx->shape[0];
  fdm_tensor *out = fdm_empty(t->dtype, t->ndim, shape, t->device);
  if (out) {
    fdm_kview vo = fdm_kview_of(out), vx = fdm_kview_of(x), vi = fdm_kview_of(idx);
    if (FDM_KERNEL(out->device, "index_select", index_select, &vo, &vx, &vi, dim) ||
        (t->dtype == FDM_FLOAT32 && record_index(out, t, "index_select", index_select_backward, dim, idx))) {
      fdm_release(out); out = NULL;
    }
  }
  fdm_release(x); fdm_release(idx);
  return out;
}
