/* op_reduce.c: sum, mean, var, max/min (with indices), argmax, quantile,
** any/all, and the sum back to an input's shape that broadcasting gradients
** need. The reduced dims are moved last and made contiguous, so every
** reduction is one reduce_rows kernel over [outer, inner] rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_internal.h"

typedef struct {
  fdm_tensor *rows;              /* [outer, inner] contiguous view of the input */
  int64_t outer, inner;
  int out_nd;                    /* result shape */
  int64_t out_shape[FDM_MAXDIM];
  int64_t keep_shape[FDM_MAXDIM];/* result shape with keepdim (for broadcasting back) */
} rowsplit;

/* ndims == 0: all dims */
static int split_rows(const char *op, fdm_tensor *t, int ndims, const int *dims, int keepdim, rowsplit *rs) {
  int red[FDM_MAXDIM] = {0}, perm[FDM_MAXDIM], k = 0;
  if (fdm_backend_check(op, 1, &t)) return -1;
  for (int i = 0; i < ndims; i++) {
    if (dims[i] < 0 || dims[i] >= t->ndim)
      return fdm_seterror("%s: dim %d out of range for a %d-d tensor", op, dims[i] + 1, t->ndim);
    if (red[dims[i]]++) return fdm_seterror("%s: dim %d given twice", op, dims[i] + 1);
  }
  if (ndims == 0) for (int d = 0; d < t->ndim; d++) red[d] = 1;
  if (fdm_shape_numel(op, t->ndim, t->shape) < 0) return -1;   /* outer * inner cannot overflow */
  rs->outer = rs->inner = 1; rs->out_nd = 0;
  for (int d = 0; d < t->ndim; d++) {
    rs->keep_shape[d] = red[d] ? 1 : t->shape[d];
    if (!red[d]) { perm[k++] = d; rs->outer *= t->shape[d]; rs->out_shape[rs->out_nd++] = t->shape[d]; }
    else if (keepdim) rs->out_shape[rs->out_nd++] = 1;
  }
  for (int d = 0; d < t->ndim; d++) if (red[d]) { perm[k++] = d; rs->inner *= t->shape[d]; }
  int prev = fdm_set_grad_enabled(0);
  fdm_tensor *p = fdm_permute(t, perm), *c = p ? fdm_contiguous(p) : NULL;
  fdm_set_grad_enabled(prev);
  fdm_release(p);
  if (!c) return -1;
  rs->rows = c;
  return 0;
}


/* the reduction kernel over the rows of rs into out (aux: second output or NULL) */
static int run_rows(const char *op, fdm_rows_kind kind, const rowsplit *rs, fdm_tensor *out,
                    fdm_tensor *aux, int64_t param, double fparam) {
  fdm_kview vo = fdm_kview_of(out), vx = fdm_kview_of(rs->rows), va;
  if (aux) va = fdm_kview_of(aux);
  return FDM_KERNEL(out->device, op, reduce_rows, kind, &vo, aux ? &va : NULL, &vx, rs->outer,
                    rs->inner, param, fparam);
}

/* what the backward of a reduction needs to broadcast its gradient back */
typedef struct {
  int nd;
  int64_t keep_shape[FDM_MAXDIM];   /* result shape with keepdim */
  double scale;                     /* sum: 1, mean: 1/count, var: 2/(count - correction) */
  fdm_tensor *x, *aux;              /* var: input and means; max/min: indices */
  int dim;
} reduce_state;

static void keep_shape(reduce_state *s, const rowsplit *rs, int nd) {
  s->nd = nd;
  memcpy(s->keep_shape, rs->keep_shape, nd * sizeof(int64_t));
}

/* gradient broadcast back: g reshaped to keep_shape and expanded to the input shape */
static fdm_tensor *expand_back(fdm_node *n, const reduce_state *s, fdm_tensor *g) {
  const fdm_node_input *in = fdm_node_input_at(n, 0);
  fdm_tensor *r = fdm_reshape(g, s->nd, s->keep_shape);
  if (!r) return NULL;
  fdm_tensor *e = fdm_expand(r, in->ndim, in->shape);
  fdm_release(r);
  if (!e) return NULL;
  fdm_tensor *c = fdm_contiguous(e);
  fdm_release(e);
  return c;
}

static int sum_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  reduce_state *s = FDM_NODE_STATE(n, reduce_state);
  fdm_tensor *e = s ? expand_back(n, s, g) : NULL;
  if (!e) return -1;
  if (s->scale != 1.0) {   /* mean: divide by the count */
    gin[0] = fdm_scale(e, s->scale);
    fdm_release(e);
    return gin[0] ? 0 : -1;
  }
  gin[0] = e;
  return 0;
}

/* records a reduction's node: scale, keep shape, and up to two saved tensors */
static int record_reduce(fdm_tensor *out, fdm_tensor *t, const char *op, fdm_backward_fn bw,
                         const rowsplit *rs, double scale, int dim, fdm_tensor *x, fdm_tensor *aux) {
  fdm_node *n;
  if (fdm_node_new(op, bw, 1, &t, sizeof(reduce_state), &n)) return -1;
  if (n) {
    reduce_state *s = n->state;
    keep_shape(s, rs, t->ndim);
    s->scale = scale; s->dim = dim;
    if (x) fdm_node_save(n, &s->x, x);
    if (aux) fdm_node_save(n, &s->aux, aux);
  }
  return fdm_node_attach(out, n);
}

static fdm_tensor *sum_mean(fdm_tensor *t, int ndims, const int *dims, int keepdim, int mean) {
  const char *op = mean ? "mean" : "sum";
  rowsplit rs;
  if ((t->dtype == FDM_FLOAT16 || t->dtype == FDM_BFLOAT16) && fdm_check_float(op, t)) return NULL;
  if (mean && t->dtype != FDM_FLOAT32) { fdm_seterror("mean: expected a float32 tensor, got %s (convert with :float())", fdm_dtype_name(t->dtype)); return NULL; }
  if (split_rows(op, t, ndims, dims, keepdim, &rs)) return NULL;
  fdm_dtype odt = t->dtype == FDM_FLOAT32 ? FDM_FLOAT32 : FDM_INT64;
  fdm_tensor *rows = odt == FDM_INT64 ? fdm_to_dtype(rs.rows, FDM_INT64) : (fdm_retain(rs.rows), rs.rows);
  fdm_release(rs.rows);
  rs.rows = rows;
  fdm_tensor *out = rows ? fdm_empty(odt, rs.out_nd, rs.out_shape, t->device) : NULL;
  if (out && run_rows(op, mean ? FDM_ROWS_MEAN : FDM_ROWS_SUM, &rs, out, NULL, 0, 0)) { fdm_release(out); out = NULL; }
  if (out && odt == FDM_FLOAT32 &&
      record_reduce(out, t, op, sum_backward, &rs, mean ? 1.0 / (double)rs.inner : 1.0, 0, NULL, NULL)) {
    fdm_release(out); out = NULL;
  }
  fdm_release(rs.rows);
  return out;
}

fdm_tensor *fdm_sum(fdm_tensor *t, int ndims, const int *dims, int keepdim) { return sum_mean(t, ndims, dims, keepdim, 0); }
fdm_tensor *fdm_mean(fdm_tensor *t, int ndims, const int *dims, int keepdim) { return sum_mean(t, ndims, dims, keepdim, 1); }

fdm_tensor *fdm_reduce_to_input(fdm_node *n, int i, fdm_tensor *g) {
  const fdm_node_input *in = fdm_node_input_at(n, i);
  if (!in) { fdm_seterror("%s: internal error, no input %d", n->name, i + 1); return NULL; }
  int nd = in->ndim;
  const int64_t *shape = in->shape;
  if (g->ndim == nd && memcmp(g->shape, shape, nd * sizeof(int64_t)) == 0) { fdm_retain(g); return g; }
  int dims[FDM_MAXDIM], k = 0, lead = g->ndim - nd;
  for (int d = 0; d < g->ndim; d++)
    if (d < lead || (shape[d - lead] == 1 && g->shape[d] != 1)) dims[k++] = d;
  fdm_tensor *s = k ? fdm_sum(g, k, dims, 1) : (fdm_retain(g), g);
  if (!s) return NULL;
  fdm_tensor *r = fdm_reshape(s, nd, shape);
  fdm_release(s);
  return r;
}

/* ---- variance ---- */
static int var_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  /* d var / dx = 2 (x - mean) / (N - correction) */
  reduce_state *s = FDM_NODE_STATE(n, reduce_state);
  if (!s) return -1;
  fdm_tensor *ge = expand_back(n, s, g), *me = expand_back(n, s, s->aux);
  fdm_tensor *d = (ge && me) ? fdm_binary(FDM_SUB, s->x, me) : NULL;
  fdm_tensor *p = d ? fdm_binary(FDM_MUL, d, ge) : NULL;
  gin[0] = p ? fdm_scale(p, s->scale) : NULL;
  fdm_release(ge); fdm_release(me); fdm_release(d); fdm_release(p);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_var(fdm_tensor *t, int ndims, const int *dims, int correction, int keepdim) {
  rowsplit rs;
  if (fdm_check_float("var", t) || split_rows("var", t, ndims, dims, keepdim, &rs)) return NULL;
  fdm_tensor *out = fdm_empty(FDM_FLOAT32, rs.out_nd, rs.out_shape, t->device);
  fdm_tensor *mean = fdm_empty(FDM_FLOAT32, rs.out_nd, rs.out_shape, t->device);
  int rc = (out && mean) ? run_rows("var", FDM_ROWS_VAR, &rs, out, mean, correction, 0) : -1;
  fdm_release(rs.rows);
  if (rc == 0)
    rc = record_reduce(out, t, "var", var_backward, &rs, 2.0 / ((double)rs.inner - correction), 0, t, mean);
  fdm_release(mean);
  if (rc) { fdm_release(out); return NULL; }
  return out;
}

/* ---- max / min ---- */
static int maxdim_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  /* scatter g to the chosen positions: gather's gradient with the indices kept in dim */
  reduce_state *s = FDM_NODE_STATE(n, reduce_state);
  if (!s) return -1;
  const fdm_node_input *in = fdm_node_input_at(n, 0);
  fdm_tensor *gx = fdm_zeros(FDM_FLOAT32, in->ndim, in->shape, g->device);
  fdm_tensor *idx = gx ? fdm_reshape(s->aux, s->nd, s->keep_shape) : NULL;
  fdm_tensor *gk = idx ? fdm_reshape(g, s->nd, s->keep_shape) : NULL;
  fdm_tensor *gc = gk ? fdm_contiguous(gk) : NULL, *ic = gc ? fdm_contiguous(idx) : NULL;
  int rc = -1;
  if (ic) {
    fdm_kview vgx = fdm_kview_of(gx), vi = fdm_kview_of(ic), vg = fdm_kview_of(gc);
    rc = FDM_KERNEL(gx->device, n->name, gather_backward, &vgx, &vi, &vg, s->dim);
  }
  fdm_release(idx); fdm_release(gk); fdm_release(gc); fdm_release(ic);
  if (rc) { fdm_release(gx); return -1; }
  gin[0] = gx;
  return 0;
}

fdm_tensor *fdm_max_dim(fdm_tensor *t, int dim, int keepdim, int is_min, fdm_tensor **indices) {
  const char *op = is_min ? "min" : "max";
  rowsplit rs;
  if (t->dtype != FDM_FLOAT32 && t->dtype != FDM_INT64) { fdm_seterror("%s: expected float32 or int64, got %s", op, fdm_dtype_name(t->dtype)); return NULL; }
  if (split_rows(op, t, 1, &dim, keepdim, &rs)) return NULL;
  if (rs.inner == 0) { fdm_release(rs.rows); fdm_seterror("%s: cannot reduce over an empty dim", op); return NULL; }
  fdm_tensor *out = fdm_empty(t->dtype, rs.out_nd, rs.out_shape, t->device);
  fdm_tensor *idx = fdm_empty(FDM_INT64, rs.out_nd, rs.out_shape, t->device);
  int rc = (out && idx) ? run_rows(op, is_min ? FDM_ROWS_MIN : FDM_ROWS_MAX, &rs, out, idx, 0, 0) : -1;
  fdm_release(rs.rows);
  if (rc == 0 && t->dtype == FDM_FLOAT32)
    rc = record_reduce(out, t, op, maxdim_backward, &rs, 1.0, dim, NULL, idx);
  if (rc) { fdm_release(out); fdm_release(idx); return NULL; }
  if (indices) *indices = idx; else fdm_release(idx);
  return out;
}

typedef struct { fdm_tensor *x, *v; } maxall_state;

static int maxall_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  /* ties share the gradient evenly (PyTorch's evenly_distribute_backward) */
  maxall_state *s = FDM_NODE_STATE(n, maxall_state);
  if (!s) return -1;
  fdm_tensor *mask = fdm_binary(FDM_EQ, s->x, s->v), *mf = mask ? fdm_to_dtype(mask, FDM_FLOAT32) : NULL;
  fdm_tensor *cnt = mf ? fdm_sum(mf, 0, NULL, 0) : NULL;
  fdm_tensor *share = cnt ? fdm_binary(FDM_DIV, g, cnt) : NULL;
  gin[0] = share ? fdm_binary(FDM_MUL, mf, share) : NULL;
  fdm_release(mask); fdm_release(mf); fdm_release(cnt); fdm_release(share);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_max_all(fdm_tensor *t, int is_min) {
  const char *op = is_min ? "min" : "max";
  if (fdm_numel(t) == 0) { fdm_seterror("%s: the tensor is empty", op); return NULL; }
  int prev = fdm_set_grad_enabled(0);
  int64_t n1 = fdm_numel(t);
  fdm_tensor *flat = fdm_reshape(t, 1, &n1);
  fdm_tensor *v = flat ? fdm_max_dim(flat, 0, 0, is_min, NULL) : NULL;
  fdm_set_grad_enabled(prev);
  fdm_release(flat);
  if (v && t->dtype == FDM_FLOAT32) {
    fdm_node *n;
    if (fdm_node_new(op, maxall_backward, 1, &t, sizeof(maxall_state), &n)) { fdm_release(v); return NULL; }
    if (n) {
      maxall_state *s = n->state;
      fdm_node_save(n, &s->x, t); fdm_node_save_output(n, &s->v, v);
    }
    if (fdm_node_attach(v, n)) { fdm_release(v); return NULL; }
  }
  return v;
}

fdm_tensor *fdm_argmax(fdm_tensor *t, int dim, int keepdim, int is_min) {
  fdm_tensor *idx = NULL;
  int prev = fdm_set_grad_enabled(0);
  fdm_tensor *v;
  if (dim == -1000) {
    int64_t n1 = fdm_numel(t);
    fdm_tensor *flat = fdm_reshape(t, 1, &n1);
    v = flat ? fdm_max_dim(flat, 0, 0, is_min, &idx) : NULL;
    fdm_release(flat);
  } else v = fdm_max_dim(t, dim, keepdim, is_min, &idx);
  fdm_set_grad_enabled(prev);
  fdm_release(v);
  return v ? idx : NULL;
}

/* ---- quantile (linear interpolation, as torch.quantile) ----
** The kernel finds the positions of the two order statistics of each row (no
** gradient); they are picked with gather and interpolated with ordinary ops,
** which gives the gradient: (1 - frac) to the lower element, frac to the
** upper one. A row holding NaN yields NaN, as in PyTorch. */
fdm_tensor *fdm_quantile(fdm_tensor *t, double q, int dim, int keepdim) {
  if (q < 0 || q > 1 || isnan(q)) { fdm_seterror("quantile: q must be in [0, 1], got %g", q); return NULL; }
  if (fdm_backend_check("quantile", 1, &t) || fdm_check_float("quantile", t)) return NULL;
  if (dim != -1000 && (dim < 0 || dim >= t->ndim)) { fdm_seterror("quantile: dim %d out of range for a %d-d tensor", dim + 1, t->ndim); return NULL; }
  /* rows: [outer, inner] with the reduced dim(s) last, built with recorded ops */
  int perm[FDM_MAXDIM], k = 0;
  int64_t outer = 1, inner = 1, out_shape[FDM_MAXDIM];
  int out_nd = 0;
  if (fdm_shape_numel("quantile", t->ndim, t->shape) < 0) return NULL;
  for (int d = 0; d < t->ndim; d++) {
    int red = dim == -1000 || d == dim;
    if (!red) { perm[k++] = d; outer *= t->shape[d]; out_shape[out_nd++] = t->shape[d]; }
    else if (keepdim) out_shape[out_nd++] = 1;
  }
  for (int d = 0; d < t->ndim; d++) if (dim == -1000 || d == dim) { perm[k++] = d; inner *= t->shape[d]; }
  if (inner == 0) { fdm_seterror("quantile: empty input"); return NULL; }
  int64_t rshape[2] = {outer, inner}, ishape[2] = {outer, 1};
  fdm_tensor *p = fdm_permute(t, perm), *rows = p ? fdm_reshape(p, 2, rshape) : NULL;
  fdm_release(p);
  if (!rows) return NULL;
  double pos = q * (double)(inner - 1);
  fdm_tensor *lo = fdm_empty(FDM_INT64, 2, ishape, t->device), *hi = fdm_empty(FDM_INT64, 2, ishape, t->device);
  fdm_tensor *frac = fdm_full(FDM_FLOAT32, 0, NULL, pos - floor(pos), t->device), *rc = fdm_contiguous(rows);
  fdm_tensor *out = NULL;
  if (lo && hi && frac && rc) {
    rowsplit rs = {.rows = rc, .outer = outer, .inner = inner};
    if (run_rows("quantile", FDM_ROWS_QUANTILE, &rs, lo, hi, 0, q) == 0) {
      fdm_tensor *vl = fdm_gather(rows, 1, lo), *vh = vl ? fdm_gather(rows, 1, hi) : NULL;
      fdm_tensor *dv = vh ? fdm_binary(FDM_SUB, vh, vl) : NULL, *st = dv ? fdm_binary(FDM_MUL, dv, frac) : NULL;
      fdm_tensor *v = st ? fdm_binary(FDM_ADD, vl, st) : NULL;
      out = v ? fdm_reshape(v, out_nd, out_shape) : NULL;
      fdm_release(vl); fdm_release(vh); fdm_release(dv); fdm_release(st); fdm_release(v);
    }
  }
  fdm_release(lo); fdm_release(hi); fdm_release(frac); fdm_release(rc); fdm_release(rows);
  return out;
}

fdm_tensor *fdm_any_all(fdm_tensor *t, int is_all) {
  const char *op = is_all ? "all" : "any";
  rowsplit rs;
  if (split_rows(op, t, 0, NULL, 0, &rs)) return NULL;
  fdm_tensor *b = fdm_to_dtype(rs.rows, FDM_BOOL);
  fdm_release(rs.rows);
  rs.rows = b;
  fdm_tensor *out = b ? fdm_empty(FDM_BOOL, 0, NULL, t->device) : NULL;
  if (out && run_rows(op, is_all ? FDM_ROWS_ALL : FDM_ROWS_ANY, &rs, out, NULL, 0, 0)) { fdm_release(out); out = NULL; }
  fdm_release(b);
  return out;
}
