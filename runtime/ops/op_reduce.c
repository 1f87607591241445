/* op_reduce.c: sum, mean, var, max/min (with indices), argmax, quantile,
** any/all. The reduced dims are moved last and made contiguous, so every
** reduction is a loop over rows. Sums accumulate in double. */
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


/* gradient broadcast back: g reshaped to keep_shape and expanded to the input shape */
static fdm_tensor *expand_back(fdm_node *n, fdm_tensor *g) {
  int nd = n->in_ndim[0];
  int64_t keep[FDM_MAXDIM];
  memcpy(keep, &n->i[8], nd * sizeof(int64_t));
  fdm_tensor *r = fdm_reshape(g, nd, keep);
  if (!r) return NULL;
  fdm_tensor *e = fdm_expand(r, nd, n->in_shape[0]);
  fdm_release(r);
  if (!e) return NULL;
  fdm_tensor *c = fdm_contiguous(e);
  fdm_release(e);
  return c;
}

static void save_keep(fdm_node *n, const rowsplit *rs, int nd) { memcpy(&n->i[8], rs->keep_shape, nd * sizeof(int64_t)); }

static int sum_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  fdm_tensor *e = expand_back(n, g);
  if (!e) return -1;
  if (n->f[0] != 1.0) {   /* mean: divide by the count */
    gin[0] = fdm_scale(e, n->f[0]);
    fdm_release(e);
    return gin[0] ? 0 : -1;
  }
  gin[0] = e;
  return 0;
}

static fdm_tensor *sum_mean(fdm_tensor *t, int ndims, const int *dims, int keepdim, int mean) {
  const char *op = mean ? "mean" : "sum";
  rowsplit rs;
  if ((t->dtype == FDM_FLOAT16 || t->dtype == FDM_BFLOAT16) && fdm_check_float(op, t)) return NULL;
  if (mean && t->dtype != FDM_FLOAT32) { fdm_seterror("mean: expected a float32 tensor, got %s (convert with :float())", fdm_dtype_name(t->dtype)); return NULL; }
  if (split_rows(op, t, ndims, dims, keepdim, &rs)) return NULL;
  fdm_dtype odt = t->dtype == FDM_FLOAT32 ? FDM_FLOAT32 : FDM_INT64;
  fdm_tensor *out = fdm_empty(odt, rs.out_nd, rs.out_shape, t->device);
  if (!out) { fdm_release(rs.rows); return NULL; }
  int64_t outer = rs.outer, inner = rs.inner;
  if (t->dtype == FDM_FLOAT32) {
    const float *x = fdm_data(rs.rows); float *y = fdm_data(out);
    double scale = mean ? 1.0 / (double)inner : 1.0;
    if (outer == 1) {   /* one long row: split it across threads */
      double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (inner > FDM_PAR_MIN)
      for (int64_t j = 0; j < inner; j++) s += x[j];
      y[0] = (float)(s * scale);
    } else {
#pragma omp parallel for schedule(static) if (outer * inner > FDM_PAR_MIN)
      for (int64_t r = 0; r < outer; r++) {
        const float *xr = x + r * inner;
        double s = 0;
        for (int64_t j = 0; j < inner; j++) s += xr[j];
        y[r] = (float)(s * scale);
      }
    }
    fdm_node *n = fdm_node_new(op, sum_backward, 1, &t);
    if (n) { n->f[0] = scale; save_keep(n, &rs, t->ndim); fdm_node_attach(out, n); }
  } else {
    fdm_tensor *c = fdm_to_dtype(rs.rows, FDM_INT64);
    if (!c) { fdm_release(out); fdm_release(rs.rows); return NULL; }
    const int64_t *x = fdm_data(c); int64_t *y = fdm_data(out);
    for (int64_t r = 0; r < outer; r++) {
      int64_t s = 0;
      for (int64_t j = 0; j < inner; j++) s += x[r * inner + j];
      y[r] = s;
    }
    fdm_release(c);
  }
  fdm_release(rs.rows);
  return out;
}

fdm_tensor *fdm_sum(fdm_tensor *t, int ndims, const int *dims, int keepdim) { return sum_mean(t, ndims, dims, keepdim, 0); }
fdm_tensor *fdm_mean(fdm_tensor *t, int ndims, const int *dims, int keepdim) { return sum_mean(t, ndims, dims, keepdim, 1); }

/* ---- variance ---- */
static int var_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  /* d var / dx = 2 (x - mean) / (N - correction) */
  fdm_tensor *x = n->saved[0], *m = n->saved[1];
  fdm_tensor *ge = expand_back(n, g), *me = expand_back(n, m);
  fdm_tensor *d = (ge && me) ? fdm_binary(FDM_SUB, x, me) : NULL;
  fdm_tensor *p = d ? fdm_binary(FDM_MUL, d, ge) : NULL;
  gin[0] = p ? fdm_scale(p, n->f[0]) : NULL;
  fdm_release(ge); fdm_release(me); fdm_release(d); fdm_release(p);
  return gin[0] ? 0 : -1;
}

fdm_tensor *fdm_var(fdm_tensor *t, int ndims, const int *dims, int correction, int keepdim) {
  rowsplit rs;
  if (fdm_check_float("var", t) || split_rows("var", t, ndims, dims, keepdim, &rs)) return NULL;
  fdm_tensor *out = fdm_empty(FDM_FLOAT32, rs.out_nd, rs.out_shape, t->device);
  fdm_tensor *mean = fdm_empty(FDM_FLOAT32, rs.out_nd, rs.out_shape, t->device);
  if (!out || !mean) { fdm_release(out); fdm_release(mean); fdm_release(rs.rows); return NULL; }
  const float *x = fdm_data(rs.rows); float *y = fdm_data(out), *pm = fdm_data(mean);
  int64_t inner = rs.inner;
  double denom = (double)inner - correction;
#pragma omp parallel for schedule(static) if (rs.outer * inner > FDM_PAR_MIN)
  for (int64_t r = 0; r < rs.outer; r++) {
    const float *xr = x + r * inner;
    double s = 0, ss = 0;
    for (int64_t j = 0; j < inner; j++) s += xr[j];
    double mu = s / (double)inner;
    for (int64_t j = 0; j < inner; j++) { double d = xr[j] - mu; ss += d * d; }
    y[r] = denom > 0 ? (float)(ss / denom) : NAN;
    pm[r] = (float)mu;
  }
  fdm_release(rs.rows);
  fdm_node *n = fdm_node_new("var", var_backward, 1, &t);
  if (n) {
    n->f[0] = 2.0 / denom;
    save_keep(n, &rs, t->ndim);
    fdm_node_save(n, t); fdm_node_save(n, mean);
    fdm_node_attach(out, n);
  }
  fdm_release(mean);
  return out;
}

/* ---- max / min ---- */
static int maxdim_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  /* scatter g to the chosen positions: input viewed as [outer, len, inner] */
  fdm_tensor *idx = n->saved[0];
  fdm_tensor *gx = fdm_zeros(FDM_FLOAT32, n->in_ndim[0], n->in_shape[0], g->device);
  if (!gx) return -1;
  int dim = (int)n->i[0];
  int64_t outer = 1, inner = 1, len = n->in_shape[0][dim];
  for (int d = 0; d < dim; d++) outer *= n->in_shape[0][d];
  for (int d = dim + 1; d < n->in_ndim[0]; d++) inner *= n->in_shape[0][d];
  const int64_t *pi = fdm_data(idx);
  const float *pg = fdm_data(g);
  float *px = fdm_data(gx);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++)
      px[(o * len + pi[o * inner + i]) * inner + i] = pg[o * inner + i];
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
  if (!out || !idx) { fdm_release(out); fdm_release(idx); fdm_release(rs.rows); return NULL; }
  int64_t *pi = fdm_data(idx), inner = rs.inner;
  if (t->dtype == FDM_FLOAT32) {
    const float *x = fdm_data(rs.rows); float *y = fdm_data(out);
    for (int64_t r = 0; r < rs.outer; r++) {
      const float *xr = x + r * inner;
      int64_t best = 0;
      for (int64_t j = 1; j < inner; j++) {
        if (isnan(xr[best])) break;   /* NaN propagates, as in PyTorch */
        if (isnan(xr[j]) || (is_min ? xr[j] < xr[best] : xr[j] > xr[best])) best = j;
      }
      y[r] = xr[best]; pi[r] = best;
    }
  } else {
    const int64_t *x = fdm_data(rs.rows); int64_t *y = fdm_data(out);
    for (int64_t r = 0; r < rs.outer; r++) {
      const int64_t *xr = x + r * inner;
      int64_t best = 0;
      for (int64_t j = 1; j < inner; j++) if (is_min ? xr[j] < xr[best] : xr[j] > xr[best]) best = j;
      y[r] = xr[best]; pi[r] = best;
    }
  }
  fdm_release(rs.rows);
  if (t->dtype == FDM_FLOAT32) {
    fdm_node *n = fdm_node_new(op, maxdim_backward, 1, &t);
    if (n) { n->i[0] = dim; fdm_node_save(n, idx); fdm_node_attach(out, n); }
  }
  if (indices) *indices = idx; else fdm_release(idx);
  return out;
}

static int maxall_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  /* ties share the gradient evenly (PyTorch's evenly_distribute_backward) */
  fdm_tensor *x = n->saved[0], *v = n->saved[1];
  fdm_tensor *mask = fdm_binary(FDM_EQ, x, v), *mf = mask ? fdm_to_dtype(mask, FDM_FLOAT32) : NULL;
  fdm_release(mask);
  if (!mf) return -1;
  float *pm = fdm_data(mf);
  int64_t cnt = 0, m = fdm_numel(mf);
  for (int64_t k = 0; k < m; k++) cnt += pm[k] != 0;
  float gv = *(float *)fdm_data(g) / (float)(cnt ? cnt : 1);
  for (int64_t k = 0; k < m; k++) pm[k] *= gv;
  gin[0] = mf;
  return 0;
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
    fdm_node *n = fdm_node_new(op, maxall_backward, 1, &t);
    if (n) { fdm_node_save(n, t); fdm_node_save_output(n, v); fdm_node_attach(v, n); }
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
** The two order statistics are found by sorting each row (no gradient), then
** picked with gather and interpolated with ordinary ops, which gives the
** gradient: (1 - frac) to the lower element, frac to the upper one. */
typedef struct { float v; int64_t i; } valpos;
static int cmp_valpos(const void *a, const void *b) {
  float x = ((const valpos *)a)->v, y = ((const valpos *)b)->v;
  if (isnan(x)) return isnan(y) ? 0 : 1;
  if (isnan(y)) return -1;
  return (x > y) - (x < y);
}

fdm_tensor *fdm_quantile(fdm_tensor *t, double q, int dim, int keepdim) {
  if (q < 0 || q > 1 || isnan(q)) { fdm_seterror("quantile: q must be in [0, 1], got %g", q); return NULL; }
  if (fdm_backend_check("quantile", 1, &t) || fdm_check_float("quantile", t)) return NULL;
  if (dim != -1000 && (dim < 0 || dim >= t->ndim)) { fdm_seterror("quantile: dim %d out of range for a %d-d tensor", dim + 1, t->ndim); return NULL; }
  /* rows: [outer, inner] with the reduced dim(s) last, built with recorded ops */
  int perm[FDM_MAXDIM], k = 0;
  int64_t outer = 1, inner = 1, out_shape[FDM_MAXDIM];
  int out_nd = 0;
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
  fdm_tensor *lo = fdm_empty(FDM_INT64, 2, ishape, t->device), *hi = fdm_empty(FDM_INT64, 2, ishape, t->device);
  fdm_tensor *frac = fdm_empty(FDM_FLOAT32, 2, ishape, t->device), *rc = fdm_contiguous(rows);
  valpos *buf = malloc(inner * sizeof *buf);
  fdm_tensor *out = NULL;
  if (!lo || !hi || !frac || !rc || !buf) { if (!buf) fdm_seterror("quantile: out of memory"); goto done; }
  {
    const float *x = fdm_data(rc);
    int64_t *pl = fdm_data(lo), *ph = fdm_data(hi);
    float *pf = fdm_data(frac);
    double pos = q * (double)(inner - 1);
    int64_t l = (int64_t)floor(pos), h = l + 1 < inner ? l + 1 : l;
    for (int64_t r = 0; r < outer; r++) {
      for (int64_t j = 0; j < inner; j++) { buf[j].v = x[r * inner + j]; buf[j].i = j; }
      qsort(buf, inner, sizeof *buf, cmp_valpos);
      pl[r] = buf[l].i; ph[r] = buf[h].i; pf[r] = (float)(pos - (double)l);
    }
  }
  {
    fdm_tensor *vl = fdm_gather(rows, 1, lo), *vh = vl ? fdm_gather(rows, 1, hi) : NULL;
    fdm_tensor *dv = vh ? fdm_binary(FDM_SUB, vh, vl) : NULL, *st = dv ? fdm_binary(FDM_MUL, dv, frac) : NULL;
    fdm_tensor *v = st ? fdm_binary(FDM_ADD, vl, st) : NULL;
    out = v ? fdm_reshape(v, out_nd, out_shape) : NULL;
    fdm_release(vl); fdm_release(vh); fdm_release(dv); fdm_release(st); fdm_release(v);
  }
done:
  free(buf);
  fdm_release(lo); fdm_release(hi); fdm_release(frac); fdm_release(rc); fdm_release(rows);
  return out;
}

fdm_tensor *fdm_any_all(fdm_tensor *t, int is_all) {
  rowsplit rs;
  if (split_rows(is_all ? "all" : "any", t, 0, NULL, 0, &rs)) return NULL;
  fdm_tensor *b = fdm_to_dtype(rs.rows, FDM_BOOL);
  fdm_release(rs.rows);
  if (!b) return NULL;
  const uint8_t *p = fdm_data(b);
  int r = is_all;
  for (int64_t k = 0; k < rs.inner; k++) {
    if (is_all && !p[k]) { r = 0; break; }
    if (!is_all && p[k]) { r = 1; break; }
  }
  fdm_release(b);
  return fdm_full(FDM_BOOL, 0, NULL, r, t->device);
}
