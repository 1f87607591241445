/* index.c: CPU gather / index_select and their scatter-add gradients. Views
** are contiguous; index values are checked here, where they are read. */
#include <string.h>
#include "cpu_kernels.h"

/* sizes of the dims before and after dim */
static void around(const fdm_kview *v, int dim, int64_t *outer, int64_t *inner) {
  *outer = *inner = 1;
  for (int d = 0; d < dim; d++) *outer *= v->shape[d];
  for (int d = dim + 1; d < v->ndim; d++) *inner *= v->shape[d];
}

static int check_index(const char *op, const int64_t *pi, int64_t n, int64_t len, int dim) {
  for (int64_t k = 0; k < n; k++)
    if (pi[k] < 0 || pi[k] >= len)
      return fdm_seterror("%s: index %lld out of range for dim %d of size %lld (indices are 0-based)",
                          op, (long long)pi[k], dim + 1, (long long)len);
  return 0;
}

int cpu_kernel_gather(const fdm_kview *out, const fdm_kview *x, const fdm_kview *idx, int dim) {
  int64_t outer, inner, len = idx->shape[dim], xlen = x->shape[dim];
  around(idx, dim, &outer, &inner);
  const int64_t *pi = idx->data;
  if (check_index("gather", pi, outer * len * inner, xlen, dim)) return -1;
  const float *px = x->data;
  float *po = out->data;
  for (int64_t k = 0; k < outer * len * inner; k++) {
    int64_t o = k / (len * inner), i = k % inner;
    po[k] = px[(o * xlen + pi[k]) * inner + i];
  }
  return 0;
}

int cpu_kernel_gather_backward(const fdm_kview *gx, const fdm_kview *idx, const fdm_kview *g, int dim) {
  int64_t outer, inner, xouter, xinner, len = idx->shape[dim], xlen = gx->shape[dim];
  around(idx, dim, &outer, &inner);
  around(gx, dim, &xouter, &xinner);
  const int64_t *pi = idx->data;
  const float *pg = g->data;
  float *px = gx->data;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t l = 0; l < len; l++)
      for (int64_t i = 0; i < inner; i++) {
        int64_t k = (o * len + l) * inner + i;
        px[(o * xlen + pi[k]) * xinner + i] += pg[k];
      }
  return 0;
}

int cpu_kernel_index_select(const fdm_kview *out, const fdm_kview *x, const fdm_kview *idx, int dim) {
  int64_t outer, inner, k = idx->shape[0], len = x->shape[dim];
  around(x, dim, &outer, &inner);
  const int64_t *pi = idx->data;
  if (check_index("index_select", pi, k, len, dim)) return -1;
  size_t es = fdm_dtype_size(x->dtype);
  const char *px = x->data;
  char *po = out->data;
#pragma omp parallel for schedule(static) if (outer * k * inner > 262144)
  for (int64_t r = 0; r < outer * k; r++) {
    int64_t o = r / k, j = r % k;
    memcpy(po + r * inner * es, px + (o * len + pi[j]) * inner * es, inner * es);
  }
  return 0;
}

int cpu_kernel_index_select_backward(const fdm_kview *gx, const fdm_kview *idx, const fdm_kview *g, int dim) {
  int64_t outer, inner, k = idx->shape[0], len = gx->shape[dim];
  around(gx, dim, &outer, &inner);
  const int64_t *pi = idx->data;
  const float *pg = g->data;
  float *px = gx->data;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < k; j++) {
      float *dst = px + (o * len + pi[j]) * inner;
      const float *src = pg + (o * k + j) * inner;
      for (int64_t e = 0; e < inner; e++) dst[e] += src[e];
    }
  return 0;
}
