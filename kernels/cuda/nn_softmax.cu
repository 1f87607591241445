/*
** nn_softmax.cu: (log-)softmax over the middle axis of [outer, D, inner] and
** its backward from the output, as kernels/cpu/softmax.c: exp(x - max) in
** float, an all -inf row gives NaN as in PyTorch (max taken as 0).
** inner == 1: one block per contiguous row (block reductions); otherwise
** one thread per (outer, inner) column walking D, so neighbouring threads
** read neighbouring floats.
*/
#include "nn_common.cuh"

/* v reduced over the block (max or sum), returned to every thread; sh holds 32 floats */
template <bool MAX>
static __device__ __forceinline__ float block_reduce(float v, float *sh) {
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = MAX ? nn_warp_maxf(v) : nn_warp_sumf(v);
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  if (wid == 0) {
    v = lane < nw ? sh[lane] : (MAX ? -INFINITY : 0.0f);
    v = MAX ? nn_warp_maxf(v) : nn_warp_sumf(v);
    if (lane == 0) sh[0] = v;
  }
  __syncthreads();
  return sh[0];
}

static __global__ void softmax_rows(int64_t outer, int64_t D, int log, const float *x, float *y) {
  __shared__ float sh[32];
  for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    const float *xr = x + o * D;
    float *yr = y + o * D;
    float mx = -INFINITY;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) mx = fmaxf(mx, xr[d]);
    mx = block_reduce<true>(mx, sh);
    if (mx == -INFINITY) mx = 0.0f;
    float s = 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) s += expf(xr[d] - mx);
    s = block_reduce<false>(s, sh);
    if (log) {
      float lse = mx + logf(s);
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) yr[d] = xr[d] - lse;
    } else {
      float inv = 1.0f / s;
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) yr[d] = expf(xr[d] - mx) * inv;
    }
  }
}

static __global__ void softmax_cols(int64_t outer, int64_t D, int64_t inner, int log, const float *x, float *y) {
  NN_FOR(t, outer * inner) {
    int64_t o = t / inner, i = t - o * inner;
    const float *xc = x + o * D * inner + i;
    float *yc = y + o * D * inner + i;
    float mx = -INFINITY;
    for (int64_t d = 0; d < D; d++) mx = fmaxf(mx, xc[d * inner]);
    if (mx == -INFINITY) mx = 0.0f;
    float s = 0.0f;
    for (int64_t d = 0; d < D; d++) s += expf(xc[d * inner] - mx);
    if (log) {
      float lse = mx + logf(s);
      for (int64_t d = 0; d < D; d++) yc[d * inner] = xc[d * inner] - lse;
    } else {
      float inv = 1.0f / s;
      for (int64_t d = 0; d < D; d++) yc[d * inner] = expf(xc[d * inner] - mx) * inv;
    }
  }
}

/* softmax: gx = y (gy - sum(gy y)); log-softmax: gx = gy - exp(y) sum(gy) */
static __global__ void softmax_rows_bwd(int64_t outer, int64_t D, int log, const float *y, const float *gy,
                                        float *gx) {
  __shared__ float sh[32];
  for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    const float *yr = y + o * D, *gr = gy + o * D;
    float *xr = gx + o * D;
    float acc = 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) acc += log ? gr[d] : gr[d] * yr[d];
    acc = block_reduce<false>(acc, sh);
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
      xr[d] = log ? gr[d] - expf(yr[d]) * acc : yr[d] * (gr[d] - acc);
  }
}

static __global__ void softmax_cols_bwd(int64_t outer, int64_t D, int64_t inner, int log, const float *y,
                                        const float *gy, float *gx) {
  NN_FOR(t, outer * inner) {
    int64_t o = t / inner, i = t - o * inner, base = o * D * inner + i;
    float acc = 0.0f;
    for (int64_t d = 0; d < D; d++) {
      int64_t a = base + d * inner;
      acc += log ? gy[a] : gy[a] * y[a];
    }
    for (int64_t d = 0; d < D; d++) {
      int64_t a = base + d * inner;
      gx[a] = log ? gy[a] - expf(y[a]) * acc : y[a] * (gy[a] - acc);
    }
  }
}

static int row_threads(int64_t D) {
  int t = 32;
  while (t < 256 && t < D) t *= 2;
  return t;
}

static unsigned row_blocks(int64_t outer) { return (unsigned)(outer < (1LL << 30) ? outer : (1LL << 30)); }

extern "C" int cuda_kernel_softmax_forward(int64_t outer, int64_t D, int64_t inner, int log, const fdm_kview *x,
                                           const fdm_kview *y) {
  const char *op = log ? "log_softmax" : "softmax";
  if (outer <= 0 || D <= 0 || inner <= 0) return 0;
  cudaStream_t st = fdm_cuda_stream();
  if (inner == 1)
    softmax_rows<<<row_blocks(outer), row_threads(D), 0, st>>>(outer, D, log, nn_f(x), nn_f(y));
  else
    softmax_cols<<<nn_blocks(outer * inner), NN_THREADS, 0, st>>>(outer, D, inner, log, nn_f(x), nn_f(y));
  NN_LAUNCHED(op);
  return 0;
}

extern "C" int cuda_kernel_softmax_backward(int64_t outer, int64_t D, int64_t inner, int log, const fdm_kview *y,
                                            const fdm_kview *gy, const fdm_kview *gx) {
  const char *op = log ? "log_softmax" : "softmax";
  if (outer <= 0 || D <= 0 || inner <= 0) return 0;
  cudaStream_t st = fdm_cuda_stream();
  if (inner == 1)
    softmax_rows_bwd<<<row_blocks(outer), row_threads(D), 0, st>>>(outer, D, log, nn_f(y), nn_f(gy), nn_f(gx));
  else
    softmax_cols_bwd<<<nn_blocks(outer * inner), NN_THREADS, 0, st>>>(outer, D, inner, log, nn_f(y), nn_f(gy),
                                                                      nn_f(gx));
  NN_LAUNCHED(op);
  return 0;
}
