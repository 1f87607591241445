/* core_index.cu: gather / index_select and their scatter-add gradients
** (atomicAdd, so the order of the additions is not fixed: results agree with
** the CPU to float rounding). Index values are checked where they are read:
** the first bad position is recorded on the device and reported with the
** CPU's message after the kernel. */
#include "cuda_iter.cuh"

#define IT 256

static void around(const fdm_kview *v, int dim, int64_t *outer, int64_t *inner) {
  *outer = *inner = 1;
  for (int d = 0; d < dim; d++) *outer *= v->shape[d];
  for (int d = dim + 1; d < v->ndim; d++) *inner *= v->shape[d];
}

/* a flag holding the smallest bad position (all ones: none) */
static unsigned long long *bad_flag(const char *op) {
  unsigned long long *f = (unsigned long long *)fdm_cuda_scratch_alloc(sizeof *f, op);
  if (f && fdm_cuda_check(cudaMemsetAsync(f, 0xff, sizeof *f, fdm_cuda_stream()), op)) {
    fdm_cuda_scratch_release(f, sizeof *f);
    return NULL;
  }
  return f;
}

/* after the kernel: 0, or -1 with the CPU's message for the first bad index */
static int check_flag(const char *op, unsigned long long *f, const int64_t *idx, int64_t len, int dim) {
  unsigned long long k = 0;
  int rc = fdm_cuda_launched(op);
  if (!rc) rc = fdm_cuda_to_host(&k, f, sizeof k);
  fdm_cuda_scratch_release(f, sizeof *f);
  if (rc || k == ~0ull) return rc;
  int64_t v = 0;
  if (fdm_cuda_to_host(&v, idx + k, sizeof v)) return -1;
  return fdm_cuda_seterror("%s: index %lld out of range for dim %d of size %lld (indices are 0-based)", op,
                           (long long)v, dim + 1, (long long)len);
}

static __global__ void gather_k(float *po, const float *px, const int64_t *pi, int64_t total, int64_t len,
                                int64_t inner, int64_t xlen, unsigned long long *bad) {
  CI_FOR(k, total) {
    int64_t o = k / (len * inner), i = k % inner, j = pi[k];
    if (j < 0 || j >= xlen) { atomicMin(bad, (unsigned long long)k); continue; }
    po[k] = px[(o * xlen + j) * inner + i];
  }
}

extern "C" int cuda_kernel_gather(const fdm_kview *out, const fdm_kview *x, const fdm_kview *idx, int dim) {
  int64_t outer, inner, len = idx->shape[dim], xlen = x->shape[dim];
  around(idx, dim, &outer, &inner);
  int64_t total = outer * len * inner;
  if (total == 0) return 0;
  unsigned long long *f = bad_flag("gather");
  if (!f) return -1;
  gather_k<<<fdm_cuda_blocks(total, IT), IT, 0, fdm_cuda_stream()>>>(
      (float *)out->data, (const float *)x->data, (const int64_t *)idx->data, total, len, inner, xlen, f);
  return check_flag("gather", f, (const int64_t *)idx->data, xlen, dim);
}

/* indices were checked by the forward pass */
static __global__ void gather_back_k(float *px, const float *pg, const int64_t *pi, int64_t total, int64_t len,
                                     int64_t inner, int64_t xlen, int64_t xinner) {
  CI_FOR(k, total) {
    int64_t o = k / (len * inner), i = k % inner;
    atomicAdd(&px[(o * xlen + pi[k]) * xinner + i], pg[k]);
  }
}

extern "C" int cuda_kernel_gather_backward(const fdm_kview *gx, const fdm_kview *idx, const fdm_kview *g, int dim) {
  int64_t outer, inner, xouter, xinner, len = idx->shape[dim], xlen = gx->shape[dim];
  around(idx, dim, &outer, &inner);
  around(gx, dim, &xouter, &xinner);
  int64_t total = outer * len * inner;
  if (total == 0) return 0;
  gather_back_k<<<fdm_cuda_blocks(total, IT), IT, 0, fdm_cuda_stream()>>>(
      (float *)gx->data, (const float *)g->data, (const int64_t *)idx->data, total, len, inner, xlen, xinner);
  return fdm_cuda_launched("gather backward");
}

template <typename T>
static __global__ void index_select_k(T *po, const T *px, const int64_t *pi, int64_t total, int64_t k,
                                      int64_t inner, int64_t len) {
  CI_FOR(e, total) {
    int64_t r = e / inner, i = e % inner, o = r / k, j = r % k, s = pi[j];
    if (s < 0 || s >= len) continue;   /* reported by check_k */
    po[e] = px[(o * len + s) * inner + i];
  }
}

static __global__ void check_k(const int64_t *pi, int64_t k, int64_t len, unsigned long long *bad) {
  CI_FOR(j, k) if (pi[j] < 0 || pi[j] >= len) atomicMin(bad, (unsigned long long)j);
}

extern "C" int cuda_kernel_index_select(const fdm_kview *out, const fdm_kview *x, const fdm_kview *idx, int dim) {
  int64_t outer, inner, k = idx->shape[0], len = x->shape[dim];
  around(x, dim, &outer, &inner);
  int64_t total = outer * k * inner;
  if (k == 0) return 0;
  unsigned long long *f = bad_flag("index_select");
  if (!f) return -1;
  const int64_t *pi = (const int64_t *)idx->data;
  cudaStream_t st = fdm_cuda_stream();
  check_k<<<fdm_cuda_blocks(k, IT), IT, 0, st>>>(pi, k, len, f);
  unsigned nb = fdm_cuda_blocks(total, IT);
  if (total > 0) switch (ci_dtype_size(x->dtype)) {
    case 8: index_select_k<uint64_t><<<nb, IT, 0, st>>>((uint64_t *)out->data, (const uint64_t *)x->data, pi, total, k, inner, len); break;
    case 4: index_select_k<uint32_t><<<nb, IT, 0, st>>>((uint32_t *)out->data, (const uint32_t *)x->data, pi, total, k, inner, len); break;
    case 2: index_select_k<uint16_t><<<nb, IT, 0, st>>>((uint16_t *)out->data, (const uint16_t *)x->data, pi, total, k, inner, len); break;
    default: index_select_k<uint8_t><<<nb, IT, 0, st>>>((uint8_t *)out->data, (const uint8_t *)x->data, pi, total, k, inner, len); break;
  }
  return check_flag("index_select", f, pi, len, dim);
}

static __global__ void index_select_back_k(float *px, const float *pg, const int64_t *pi, int64_t total, int64_t k,
                                           int64_t inner, int64_t len) {
  CI_FOR(e, total) {
    int64_t r = e / inner, i = e % inner, o = r / k, j = r % k;
    atomicAdd(&px[(o * len + pi[j]) * inner + i], pg[e]);
  }
}

extern "C" int cuda_kernel_index_select_backward(const fdm_kview *gx, const fdm_kview *idx, const fdm_kview *g,
                                                 int dim) {
  int64_t outer, inner, k = idx->shape[0], len = gx->shape[dim];
  around(gx, dim, &outer, &inner);
  int64_t total = outer * k * inner;
  if (total == 0) return 0;
  index_select_back_k<<<fdm_cuda_blocks(total, IT), IT, 0, fdm_cuda_stream()>>>(
      (float *)gx->data, (const float *)g->data, (const int64_t *)idx->data, total, k, inner, len);
  return fdm_cuda_launched("index_select backward");
}
