/*
** nn_common.cuh: what the CUDA neural-network kernels (kernels/cuda/nn_*.cu)
** share: the plugin's stream, library handles, scratch and error reporting
** (the core's kernels/cuda/cuda_common.h), status checks, launch
** geometry, half-precision weight widening and the TF32 switch.
**
** Every kernel-table entry here is `extern "C" int cuda_kernel_<slot>(...)`
** with the parameter list of its slot in kernels/fdm_kernels_nn.h. They take
** device pointers in fdm_kview.data, queue their work on fdm_cuda_stream()
** and return 0, or -1 with the error set through fdm_cuda_seterror (a
** failing CUDA, cuBLAS or cuDNN status is reported with its name, never
** aborted on).
*/
#ifndef FDM_CUDA_NN_COMMON_CUH
#define FDM_CUDA_NN_COMMON_CUH
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <cudnn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_kernels.h"   /* the weak cuda_kernel_<slot> declarations; cuda_common.h services */

/* ---- status checks: each returns -1 with the error set, naming the op ---- */
static inline int nn_cuda_fail(const char *op, const char *what, cudaError_t e) {
  return fdm_cuda_seterror("%s: %s failed: %s (%s)", op, what, cudaGetErrorName(e), cudaGetErrorString(e));
}
#define NN_CUDA(op, call)                                              \
  do {                                                                 \
    cudaError_t nn_e_ = (call);                                        \
    if (nn_e_ != cudaSuccess) return nn_cuda_fail((op), #call, nn_e_); \
  } while (0)
/* after a launch: the launch's own error (bad geometry, no kernel image) */
#define NN_LAUNCHED(op) NN_CUDA(op, cudaGetLastError())

static inline const char *nn_cublas_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "cublas status ?";
  }
}
#define NN_CUBLAS(op, call)                                                                        \
  do {                                                                                             \
    cublasStatus_t nn_s_ = (call);                                                                 \
    if (nn_s_ != CUBLAS_STATUS_SUCCESS)                                                            \
      return fdm_cuda_seterror("%s: %s failed: %s", (op), #call, nn_cublas_name(nn_s_));          \
  } while (0)
#define NN_CUDNN(op, call)                                                                         \
  do {                                                                                             \
    cudnnStatus_t nn_s_ = (call);                                                                  \
    if (nn_s_ != CUDNN_STATUS_SUCCESS)                                                             \
      return fdm_cuda_seterror("%s: %s failed: %s", (op), #call, cudnnGetErrorString(nn_s_));      \
  } while (0)

/* ---- launch geometry ---- */
#define NN_THREADS 256
/* blocks for a grid-stride loop over n elements (at least 1, capped) */
static inline unsigned nn_blocks(int64_t n) {
  int64_t b = (n + NN_THREADS - 1) / NN_THREADS;
  if (b < 1) b = 1;
  if (b > 65535LL * 32) b = 65535LL * 32;
  return (unsigned)b;
}
#define NN_FOR(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

static inline float *nn_f(const fdm_kview *v) { return v ? (float *)v->data : (float *)0; }

/* ---- block reductions (blockDim.x a multiple of 32, at most 1024) ---- */
static __device__ __forceinline__ double nn_warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}
static __device__ __forceinline__ float nn_warp_sumf(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}
static __device__ __forceinline__ float nn_warp_maxf(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
  return v;
}
/* the sums of a and b over the block, returned to every thread; sh holds 64 doubles */
static __device__ __forceinline__ void nn_block_sum2(double &a, double &b, double *sh) {
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  a = nn_warp_sum(a);
  b = nn_warp_sum(b);
  __syncthreads();   /* sh may still be read from a previous call */
  if (lane == 0) { sh[wid] = a; sh[32 + wid] = b; }
  __syncthreads();
  if (wid == 0) {
    a = lane < nw ? sh[lane] : 0.0;
    b = lane < nw ? sh[32 + lane] : 0.0;
    a = nn_warp_sum(a);
    b = nn_warp_sum(b);
    if (lane == 0) { sh[0] = a; sh[32] = b; }
  }
  __syncthreads();
  a = sh[0];
  b = sh[32];
}

/* ---- exact-erf GELU (kernels/cpu/activation.c) ---- */
#define NN_SQRT1_2 0.70710678118654752440f
#define NN_INV_SQRT_2PI 0.3989422804014327f
static __device__ __forceinline__ float nn_gelu(float x) { return 0.5f * x * erfcf(x * -NN_SQRT1_2); }
static __device__ __forceinline__ float nn_gelu_grad(float x) {
  float cdf = 0.5f * erfcf(x * -NN_SQRT1_2);
  float pdf = NN_INV_SQRT_2PI * expf(-0.5f * x * x);
  return cdf + x * pdf;
}

/* ---- the activations fused after a normalisation (fdm_act) ---- */
static __device__ __forceinline__ float nn_act(fdm_act act, float v) {
  if (act == FDM_ACT_GELU) return nn_gelu(v);
  if (act == FDM_ACT_SILU) return v * (1.0f / (1.0f + expf(-v)));
  return v;
}

/* ---- float16/bfloat16 weights ---- */
static inline int nn_is_half(const fdm_kview *w) { return w->dtype == FDM_FLOAT16 || w->dtype == FDM_BFLOAT16; }
/* dst[i] = float(src[first + i]) for i < n, on the stream */
int nn_widen_weights(const char *op, const fdm_kview *w, int64_t first, int64_t n, float *dst);

/* ---- TF32 ----
** Matrix products and convolutions use TF32 tensor cores only when the core
** allows it (fdm_cuda_tf32(): FDM_TF32=1), the analogue of PyTorch's
** torch.backends.{cuda.matmul,cudnn}.allow_tf32. Off by default so results
** match the CPU to float32 rounding. */
static inline int nn_tf32(void) { return fdm_cuda_tf32(); }
#endif
