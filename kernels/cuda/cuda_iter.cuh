/*
** cuda_iter.cuh: elementwise loops over up to four broadcast views on the
** GPU (the device side of kernels/cpu/cpu_iter.h). The host drops size-1
** dims and merges dims contiguous for every operand; the kernel maps each
** linear index of the output shape to one element offset per operand.
*/
#ifndef FDM_CUDA_ITER_CUH
#define FDM_CUDA_ITER_CUH
#include "cuda_kernels.h"
#include "common/philox.h"   /* fdm_f2u, fdm_u2f */

#define CI_THREADS 256

template <int N> struct cuda_iter {
  int nd;
  int64_t numel;
  int64_t shape[FDM_MAXDIM];          /* innermost last */
  int64_t st[N][FDM_MAXDIM];
};

/* ops[0]'s shape is the iteration shape; the others are broadcast to it */
template <int N> static cuda_iter<N> cuda_iter_make(const fdm_kview *const *ops) {
  cuda_iter<N> it;
  const fdm_kview *o = ops[0];
  int nd = 0;
  it.numel = 1;
  for (int d = 0; d < o->ndim; d++) {
    it.numel *= o->shape[d];
    if (o->shape[d] == 1) continue;
    it.shape[nd] = o->shape[d];
    for (int k = 0; k < N; k++) it.st[k][nd] = ops[k]->stride[d];
    nd++;
  }
  /* merge dim d-1 into d when every operand steps over d-1 as one run of d */
  int m = 0;
  for (int d = 0; d < nd; d++) {
    if (m > 0) {
      int ok = 1;
      for (int k = 0; k < N; k++)
        if (it.st[k][m - 1] != it.st[k][d] * it.shape[d]) { ok = 0; break; }
      if (ok) {
        it.shape[m - 1] *= it.shape[d];
        for (int k = 0; k < N; k++) it.st[k][m - 1] = it.st[k][d];
        continue;
      }
    }
    it.shape[m] = it.shape[d];
    for (int k = 0; k < N; k++) it.st[k][m] = it.st[k][d];
    m++;
  }
  it.nd = m;
  return it;
}

template <int N> static __host__ __device__ __forceinline__ void cuda_iter_offsets(const cuda_iter<N> &it, int64_t i,
                                                                          int64_t off[N]) {
  if (it.nd == 1) {   /* the common case: operands that merge to one run */
    for (int k = 0; k < N; k++) off[k] = i * it.st[k][0];
    return;
  }
  for (int k = 0; k < N; k++) off[k] = 0;
  if (it.numel <= 0x7fffffff) {   /* 32-bit division is several times cheaper */
    uint32_t r = (uint32_t)i;
    for (int d = it.nd - 1; d >= 0; d--) {
      uint32_t sz = (uint32_t)it.shape[d], c = r % sz;
      r /= sz;
      for (int k = 0; k < N; k++) off[k] += (int64_t)c * it.st[k][d];
    }
    return;
  }
  for (int d = it.nd - 1; d >= 0; d--) {
    int64_t s = it.shape[d], c = i % s;
    i /= s;
    for (int k = 0; k < N; k++) off[k] += c * it.st[k][d];
  }
}

#define CI_FOR(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* launches body(off) with the offsets of every element of the views */
template <int N, typename F> __global__ void cuda_iter_kernel(cuda_iter<N> it, F body) {
  int64_t off[N];
  CI_FOR(i, it.numel) {
    cuda_iter_offsets<N>(it, i, off);
    body(off);
  }
}

template <int N, typename F> static int cuda_iter_run(const char *what, const fdm_kview *const *ops, F body) {
  cuda_iter<N> it = cuda_iter_make<N>(ops);
  if (it.numel == 0) return 0;
  cuda_iter_kernel<N><<<fdm_cuda_blocks(it.numel, CI_THREADS), CI_THREADS, 0, fdm_cuda_stream()>>>(it, body);
  return fdm_cuda_launched(what);
}

/* ---- dtype conversions as runtime/core/dtype.c (bit for bit) ---- */
static __host__ __device__ __forceinline__ float ci_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) {
    if (man == 0) return fdm_u2f(sign);
    float f = (float)man / 1024.0f / 16384.0f;
    return sign ? -f : f;
  }
  if (exp == 31) return fdm_u2f(sign | 0x7f800000u | (man << 13));
  return fdm_u2f(sign | ((exp + 112) << 23) | (man << 13));
}
static __host__ __device__ __forceinline__ uint16_t ci_float_to_half(float f) {
  uint32_t u = fdm_f2u(f), sign = (u >> 16) & 0x8000;
  uint32_t au = u & 0x7fffffffu;
  if (au >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (au > 0x7f800000u ? 0x200 : 0));
  if (au >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);
  if (au < 0x38800000u) {
    float af = fdm_u2f(au) * 16777216.0f;
    uint32_t m = (uint32_t)af;
    float rem = af - (float)m;
    if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
    return (uint16_t)(sign | m);
  }
  uint32_t mant = au & 0x7fffff, exp = (au >> 23) - 112;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return (uint16_t)(sign | h);
}
static __host__ __device__ __forceinline__ float ci_bf16_to_float(uint16_t h) { return fdm_u2f((uint32_t)h << 16); }
static __host__ __device__ __forceinline__ uint16_t ci_float_to_bf16(float f) {
  uint32_t u = fdm_f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}
static inline size_t ci_dtype_size(fdm_dtype dt) {
  switch (dt) {
    case FDM_FLOAT32: return 4;
    case FDM_FLOAT16: case FDM_BFLOAT16: return 2;
    case FDM_INT64: return 8;
    default: return 1;
  }
}
/* float -> int64: NaN gives 0, out of range saturates (kernels/cpu/copy.c) */
static __host__ __device__ __forceinline__ int64_t ci_to_i64(double v) {
  if (v != v) return 0;
  if (v >= 9223372036854775807.0) return INT64_MAX;
  if (v <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)v;
}
static __device__ __forceinline__ double ci_load(const void *p, fdm_dtype dt, int64_t k) {
  switch (dt) {
    case FDM_FLOAT32: return ((const float *)p)[k];
    case FDM_FLOAT16: return ci_half_to_float(((const uint16_t *)p)[k]);
    case FDM_BFLOAT16: return ci_bf16_to_float(((const uint16_t *)p)[k]);
    case FDM_INT64: return (double)((const int64_t *)p)[k];
    case FDM_UINT8: return ((const uint8_t *)p)[k];
    case FDM_BOOL: return ((const uint8_t *)p)[k] != 0;
    default: return 0;
  }
}
static __device__ __forceinline__ void ci_store(void *p, fdm_dtype dt, int64_t k, double v) {
  switch (dt) {
    case FDM_FLOAT32: ((float *)p)[k] = (float)v; break;
    case FDM_FLOAT16: ((uint16_t *)p)[k] = ci_float_to_half((float)v); break;
    case FDM_BFLOAT16: ((uint16_t *)p)[k] = ci_float_to_bf16((float)v); break;
    case FDM_INT64: ((int64_t *)p)[k] = ci_to_i64(v); break;
    case FDM_UINT8: ((uint8_t *)p)[k] = (uint8_t)ci_to_i64(v); break;
    case FDM_BOOL: ((uint8_t *)p)[k] = v != 0; break;
    default: break;
  }
}
#endif
