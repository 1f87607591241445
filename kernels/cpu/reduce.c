/* reduce.c: CPU row reductions: x [outer, inner] (contiguous) -> out [outer].
** Float sums accumulate in double; int64 sums wrap, as PyTorch's do. */
#include <math.h>
#include <stdlib.h>
#include "cpu_kernels.h"

static void rows_sum_f32(const float *x, float *y, int64_t outer, int64_t inner, double scale) {
  if (outer == 1) {   /* one long row: split it across threads */
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (inner > CPU_PAR_MIN)
    for (int64_t j = 0; j < inner; j++) s += x[j];
    y[0] = (float)(s * scale);
    return;
  }
#pragma omp parallel for schedule(static) if (outer * inner > CPU_PAR_MIN)
  for (int64_t r = 0; r < outer; r++) {
    const float *xr = x + r * inner;
    double s = 0;
    for (int64_t j = 0; j < inner; j++) s += xr[j];
    y[r] = (float)(s * scale);
  }
}

static void rows_var(const float *x, float *y, float *mean, int64_t outer, int64_t inner, int64_t correction) {
  double denom = (double)inner - (double)correction;
#pragma omp parallel for schedule(static) if (outer * inner > CPU_PAR_MIN)
  for (int64_t r = 0; r < outer; r++) {
    const float *xr = x + r * inner;
    double s = 0, ss = 0;
    for (int64_t j = 0; j < inner; j++) s += xr[j];
    double mu = s / (double)inner;
    for (int64_t j = 0; j < inner; j++) { double d = xr[j] - mu; ss += d * d; }
    y[r] = denom > 0 ? (float)(ss / denom) : NAN;
    mean[r] = (float)mu;
  }
}

static void rows_extreme(const fdm_kview *xv, const fdm_kview *out, int64_t *pi, int64_t outer,
                         int64_t inner, int is_min) {
  if (xv->dtype == FDM_FLOAT32) {
    const float *x = xv->data;
    float *y = out->data;
    for (int64_t r = 0; r < outer; r++) {
      const float *xr = x + r * inner;
      int64_t best = 0;
      for (int64_t j = 1; j < inner; j++) {
        if (isnan(xr[best])) break;   /* NaN propagates, as in PyTorch */
        if (isnan(xr[j]) || (is_min ? xr[j] < xr[best] : xr[j] > xr[best])) best = j;
      }
      y[r] = xr[best]; pi[r] = best;
    }
    return;
  }
  const int64_t *x = xv->data;
  int64_t *y = out->data;
  for (int64_t r = 0; r < outer; r++) {
    const int64_t *xr = x + r * inner;
    int64_t best = 0;
    for (int64_t j = 1; j < inner; j++) if (is_min ? xr[j] < xr[best] : xr[j] > xr[best]) best = j;
    y[r] = xr[best]; pi[r] = best;
  }
}

/* ---- quantile: the positions of two order statistics of each row ---- */
typedef struct { float v; int64_t i; } valpos;
static int cmp_valpos(const void *a, const void *b) {
  float x = ((const valpos *)a)->v, y = ((const valpos *)b)->v;
  if (isnan(x)) return isnan(y) ? 0 : 1;
  if (isnan(y)) return -1;
  return (x > y) - (x < y);
}

static int rows_quantile(const float *x, int64_t *lo, int64_t *hi, int64_t outer, int64_t inner, double q) {
  valpos *buf = malloc((inner ? inner : 1) * sizeof *buf);
  if (!buf) return fdm_seterror("quantile: out of memory sorting rows of %lld elements", (long long)inner);
  double pos = q * (double)(inner - 1);
  int64_t l = (int64_t)floor(pos), h = l + 1 < inner ? l + 1 : l;
  for (int64_t r = 0; r < outer; r++) {
    int64_t nan_at = -1;
    for (int64_t j = 0; j < inner; j++) {
      buf[j].v = x[r * inner + j]; buf[j].i = j;
      if (nan_at < 0 && isnan(buf[j].v)) nan_at = j;
    }
    if (nan_at >= 0) { lo[r] = hi[r] = nan_at; continue; }   /* NaN in, NaN out, as PyTorch */
    qsort(buf, inner, sizeof *buf, cmp_valpos);
    lo[r] = buf[l].i; hi[r] = buf[h].i;
  }
  free(buf);
  return 0;
}

int cpu_kernel_reduce_rows(fdm_rows_kind kind, const fdm_kview *out, const fdm_kview *aux,
                           const fdm_kview *x, int64_t outer, int64_t inner, int64_t param,
                           double fparam) {
  switch (kind) {
    case FDM_ROWS_SUM:
    case FDM_ROWS_MEAN:
      if (x->dtype == FDM_FLOAT32) {
        rows_sum_f32(x->data, out->data, outer, inner, kind == FDM_ROWS_MEAN ? 1.0 / (double)inner : 1.0);
      } else {
        const int64_t *px = x->data;
        int64_t *py = out->data;
        for (int64_t r = 0; r < outer; r++) {
          uint64_t s = 0;
          for (int64_t j = 0; j < inner; j++) s += (uint64_t)px[r * inner + j];
          py[r] = (int64_t)s;
        }
      }
      return 0;
    case FDM_ROWS_VAR: rows_var(x->data, out->data, aux->data, outer, inner, param); return 0;
    case FDM_ROWS_MAX: case FDM_ROWS_MIN:
      rows_extreme(x, out, aux->data, outer, inner, kind == FDM_ROWS_MIN);
      return 0;
    case FDM_ROWS_ANY: case FDM_ROWS_ALL: {
      const uint8_t *p = x->data;
      uint8_t *y = out->data;
      int all = kind == FDM_ROWS_ALL;
      for (int64_t r = 0; r < outer; r++) {
        int v = all;
        for (int64_t j = 0; j < inner; j++)
          if (all ? !p[r * inner + j] : p[r * inner + j]) { v = !all; break; }
        y[r] = (uint8_t)v;
      }
      return 0;
    }
    case FDM_ROWS_QUANTILE: return rows_quantile(x->data, out->data, aux->data, outer, inner, fparam);
  }
  return fdm_seterror("reduce_rows: unknown reduction %d", (int)kind);
}
