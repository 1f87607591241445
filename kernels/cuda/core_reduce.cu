/* core_reduce.cu: row reductions x [outer, inner] (contiguous) -> out [outer]
** with kernels/cpu/reduce.c's semantics: float sums, means and variances in
** double (two passes for the variance), wrapping int64 sums, max/min with the
** first extreme's position (the first NaN wins), any/all, and the positions of
** two order statistics (quantile; a row holding NaN gives its first NaN's
** position). One warp per row; rows too long for one warp while there are
** few of them are split into chunks (a double partial per chunk, then a
** second kernel); the order statistics by radix selection, one block per row. */
#include "cuda_iter.cuh"

#define RT 256                 /* threads per block: 8 warps, one row each */
#define CHUNK 8192             /* elements per block in the split path */

static unsigned row_blocks(int64_t outer) {
  int64_t b = (outer + 7) / 8;
  if (b < 1) b = 1;
  if (b > 65535LL * 8) b = 65535LL * 8;
  return (unsigned)b;
}

#define FOR_ROWS(r, outer)                                                                        \
  for (int64_t r = ((int64_t)blockIdx.x * (RT / 32)) + (threadIdx.x >> 5); r < (outer);            \
       r += (int64_t)gridDim.x * (RT / 32))

static __device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* kind 0: out = sum * scale; kind 1: variance (two passes), mean to aux */
static __global__ void rows_sum_k(const float *x, float *out, float *mean, int64_t outer, int64_t inner,
                                  double scale, int var, double denom) {
  int lane = threadIdx.x & 31;
  FOR_ROWS(r, outer) {
    const float *xr = x + r * inner;
    double s = 0;
    for (int64_t j = lane; j < inner; j += 32) s += xr[j];
    s = warp_sum(s);
    if (!var) {
      if (lane == 0) out[r] = (float)(s * scale);
      continue;
    }
    double mu = s / (double)inner, ss = 0;
    for (int64_t j = lane; j < inner; j += 32) { double d = xr[j] - mu; ss += d * d; }
    ss = warp_sum(ss);
    if (lane == 0) { out[r] = denom > 0 ? (float)(ss / denom) : __int_as_float(0x7fc00000); mean[r] = (float)mu; }
  }
}

/* split rows: part[r * nchunk + c] = sum over chunk c of (x - mu[r])^2 or x */
static __global__ void rows_part_k(const float *x, double *part, const double *mu, int64_t inner, int64_t nchunk) {
  __shared__ double sh[RT / 32];
  int64_t r = blockIdx.y, c = blockIdx.x;
  const float *xr = x + r * inner;
  int64_t j0 = c * CHUNK, j1 = j0 + CHUNK < inner ? j0 + CHUNK : inner;
  double m = mu ? mu[r] : 0.0, s = 0;
  for (int64_t j = j0 + threadIdx.x; j < j1; j += RT) {
    double v = xr[j];
    if (mu) { v -= m; s += v * v; } else s += v;
  }
  s = warp_sum(s);
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int w = 0; w < RT / 32; w++) t += sh[w];
    part[r * nchunk + c] = t;
  }
}

/* sums the chunks of each row; mode 0: out = sum * scale; 1: mu = sum / inner
** (and mean out); 2: out = var from the squared deviations */
static __global__ void rows_final_k(const double *part, int64_t outer, int64_t nchunk, int mode, double scale,
                                    double inner, double denom, float *out, double *mu, float *mean) {
  int lane = threadIdx.x & 31;
  FOR_ROWS(r, outer) {
    double s = 0;
    for (int64_t c = lane; c < nchunk; c += 32) s += part[r * nchunk + c];
    s = warp_sum(s);
    if (lane) continue;
    if (mode == 0) out[r] = (float)(s * scale);
    else if (mode == 1) { mu[r] = s / inner; mean[r] = (float)(s / inner); }
    else out[r] = denom > 0 ? (float)(s / denom) : __int_as_float(0x7fc00000);
  }
}

static __global__ void rows_sum_i64_k(const int64_t *x, int64_t *out, int64_t outer, int64_t inner) {
  int lane = threadIdx.x & 31;
  FOR_ROWS(r, outer) {
    unsigned long long s = 0;
    for (int64_t j = lane; j < inner; j += 32) s += (unsigned long long)x[r * inner + j];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) out[r] = (int64_t)s;
  }
}

/* (value, position) of the extreme: NaN beats everything (the first NaN), then
** the larger (max) or smaller (min) value, then the earlier position */
template <typename T> static __device__ __forceinline__ bool isnan_(T v) { return v != v; }
template <typename T> static __device__ __forceinline__ bool better(T a, int64_t ia, T b, int64_t ib, int is_min) {
  bool na = isnan_(a), nb = isnan_(b);
  if (na || nb) return na && (!nb || ia < ib);
  if (a == b) return ia < ib;
  return is_min ? a < b : a > b;
}

template <typename T>
static __global__ void rows_extreme_k(const T *x, T *out, int64_t *pos, int64_t outer, int64_t inner, int is_min) {
  int lane = threadIdx.x & 31;
  FOR_ROWS(r, outer) {
    const T *xr = x + r * inner;
    T bv = xr[0];
    int64_t bi = 0;
    int have = 0;
    for (int64_t j = lane; j < inner; j += 32)
      if (!have || better(xr[j], j, bv, bi, is_min)) { bv = xr[j]; bi = j; have = 1; }
    for (int o = 16; o > 0; o >>= 1) {
      T ov = __shfl_xor_sync(0xffffffffu, bv, o);
      int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      int oh = __shfl_xor_sync(0xffffffffu, have, o);
      if (oh && (!have || better(ov, oi, bv, bi, is_min))) { bv = ov; bi = oi; have = 1; }
    }
    if (lane == 0) { out[r] = bv; pos[r] = bi; }
  }
}

static __global__ void rows_anyall_k(const uint8_t *x, uint8_t *out, int64_t outer, int64_t inner, int all) {
  int lane = threadIdx.x & 31;
  FOR_ROWS(r, outer) {
    int hit = 0;
    for (int64_t j = lane; j < inner && !hit; j += 32) hit = all ? !x[r * inner + j] : x[r * inner + j] != 0;
    hit = __any_sync(0xffffffffu, hit);
    if (lane == 0) out[r] = (uint8_t)(all ? !hit : hit);
  }
}

/* ---- quantile: radix selection of the k-th smallest key of each row ---- */
static __device__ __forceinline__ uint32_t order_key(float v) {
  uint32_t b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/* the smallest position holding the k-th smallest value (k 0-based) */
static __device__ int64_t select_kth(const float *xr, int64_t inner, int64_t k, unsigned *hist, int64_t *sh64) {
  uint32_t prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x) {
      uint32_t key = order_key(xr[j]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xff], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t below = 0;
      int d = 0;
      for (; d < 255; d++) {
        if (below + hist[d] > k) break;
        below += hist[d];
      }
      sh64[0] = d;
      sh64[1] = below;
    }
    __syncthreads();
    prefix |= (uint32_t)sh64[0] << shift;
    mask |= 0xffu << shift;
    k -= sh64[1];
    __syncthreads();
  }
  if (threadIdx.x == 0) sh64[2] = inner;
  __syncthreads();
  for (int64_t j = threadIdx.x; j < inner; j += blockDim.x)
    if (order_key(xr[j]) == prefix) atomicMin((unsigned long long *)&sh64[2], (unsigned long long)j);
  __syncthreads();
  int64_t p = sh64[2];
  __syncthreads();
  return p;
}

static __global__ void rows_quantile_k(const float *x, int64_t *lo, int64_t *hi, int64_t outer, int64_t inner,
                                       int64_t l, int64_t h) {
  __shared__ unsigned hist[256];
  __shared__ int64_t sh64[4];
  for (int64_t r = blockIdx.x; r < outer; r += gridDim.x) {
    const float *xr = x + r * inner;
    if (threadIdx.x == 0) sh64[3] = inner;
    __syncthreads();
    for (int64_t j = threadIdx.x; j < inner; j += blockDim.x)
      if (xr[j] != xr[j]) atomicMin((unsigned long long *)&sh64[3], (unsigned long long)j);
    __syncthreads();
    int64_t nan_at = sh64[3];
    __syncthreads();
    if (nan_at < inner) {
      if (threadIdx.x == 0) { lo[r] = nan_at; hi[r] = nan_at; }
      continue;
    }
    int64_t pl = select_kth(xr, inner, l, hist, sh64);
    int64_t ph = h == l ? pl : select_kth(xr, inner, h, hist, sh64);
    if (threadIdx.x == 0) { lo[r] = pl; hi[r] = ph; }
  }
}

extern "C" int cuda_kernel_reduce_rows(fdm_rows_kind kind, const fdm_kview *out, const fdm_kview *aux,
                                       const fdm_kview *x, int64_t outer, int64_t inner, int64_t param,
                                       double fparam) {
  if (outer == 0) return 0;
  cudaStream_t st = fdm_cuda_stream();
  unsigned nb = row_blocks(outer);
  switch (kind) {
    case FDM_ROWS_SUM:
    case FDM_ROWS_MEAN:
    case FDM_ROWS_VAR: {
      if (x->dtype == FDM_INT64) {
        rows_sum_i64_k<<<nb, RT, 0, st>>>((const int64_t *)x->data, (int64_t *)out->data, outer, inner);
        return fdm_cuda_launched("sum");
      }
      int var = kind == FDM_ROWS_VAR;
      double scale = kind == FDM_ROWS_MEAN ? 1.0 / (double)inner : 1.0;
      double denom = (double)inner - (double)param;
      const float *px = (const float *)x->data;
      float *po = (float *)out->data, *pm = var ? (float *)aux->data : NULL;
      int64_t nchunk = (inner + CHUNK - 1) / CHUNK;
      if (nchunk < 4 || outer >= 8LL * fdm_cuda_sm_count() || outer > 65535) {
        rows_sum_k<<<nb, RT, 0, st>>>(px, po, pm, outer, inner, scale, var, denom);
        return fdm_cuda_launched(var ? "var" : "sum");
      }
      size_t pbytes = (size_t)(outer * nchunk + outer) * sizeof(double);
      double *part = (double *)fdm_cuda_scratch_alloc(pbytes, "sum"), *mu = part + outer * nchunk;
      if (!part) return -1;
      dim3 g((unsigned)nchunk, (unsigned)outer);
      rows_part_k<<<g, RT, 0, st>>>(px, part, NULL, inner, nchunk);
      if (!var) rows_final_k<<<nb, RT, 0, st>>>(part, outer, nchunk, 0, scale, (double)inner, denom, po, NULL, NULL);
      else {
        rows_final_k<<<nb, RT, 0, st>>>(part, outer, nchunk, 1, scale, (double)inner, denom, NULL, mu, pm);
        rows_part_k<<<g, RT, 0, st>>>(px, part, mu, inner, nchunk);
        rows_final_k<<<nb, RT, 0, st>>>(part, outer, nchunk, 2, scale, (double)inner, denom, po, NULL, NULL);
      }
      fdm_cuda_scratch_release(part, pbytes);
      return fdm_cuda_launched(var ? "var" : "sum");
    }
    case FDM_ROWS_MAX:
    case FDM_ROWS_MIN:
      if (inner == 0) return fdm_cuda_seterror("max/min: reduction over an empty dimension");
      if (x->dtype == FDM_FLOAT32)
        rows_extreme_k<float><<<nb, RT, 0, st>>>((const float *)x->data, (float *)out->data, (int64_t *)aux->data,
                                                 outer, inner, kind == FDM_ROWS_MIN);
      else
        rows_extreme_k<int64_t><<<nb, RT, 0, st>>>((const int64_t *)x->data, (int64_t *)out->data,
                                                   (int64_t *)aux->data, outer, inner, kind == FDM_ROWS_MIN);
      return fdm_cuda_launched(kind == FDM_ROWS_MIN ? "min" : "max");
    case FDM_ROWS_ANY:
    case FDM_ROWS_ALL:
      rows_anyall_k<<<nb, RT, 0, st>>>((const uint8_t *)x->data, (uint8_t *)out->data, outer, inner,
                                       kind == FDM_ROWS_ALL);
      return fdm_cuda_launched(kind == FDM_ROWS_ALL ? "all" : "any");
    case FDM_ROWS_QUANTILE: {
      if (inner == 0) return fdm_cuda_seterror("quantile: empty rows");
      double pos = fparam * (double)(inner - 1);
      int64_t l = (int64_t)floor(pos), h = l + 1 < inner ? l + 1 : l;
      unsigned qb = outer < 65535 * 4 ? (unsigned)outer : 65535u * 4;
      rows_quantile_k<<<qb, RT, 0, st>>>((const float *)x->data, (int64_t *)out->data, (int64_t *)aux->data, outer,
                                         inner, l, h);
      return fdm_cuda_launched("quantile");
    }
  }
  return fdm_cuda_seterror("reduce_rows: unknown reduction %d", (int)kind);
}
