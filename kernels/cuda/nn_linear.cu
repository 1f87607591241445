/*
** nn_linear.cu: y = x w^T + b and its gradients through cuBLAS (column-major
** views of the row-major buffers), the bias add and the bias gradient (a
** column reduction in double, as kernels/cpu/linear.c); the weight widening
** shared by the NN kernels (nn_common.cuh).
**
** A float16/bfloat16 weight is widened to float32 block by block into the
** plugin's scratch (at most LINEAR_SCRATCH_BYTES at a time), each block one
** GEMM into its columns of y (forward) or one more term of the sum over
** output features (data gradient), as the CPU does.
**
** Autocast: x, w and gy are narrowed to bfloat16/float16 (cuda_autocast.cuh)
** and every product is one cublasGemmEx in that type with float32
** accumulation and a float32 result; the bias gradient sums the float32 gy.
*/
#include <limits.h>
#include "nn_common.cuh"
#include "cuda_autocast.cuh"

#define LINEAR_SCRATCH_BYTES ((int64_t)64 << 20)

static __global__ void widen_f16(const __half *src, int64_t n, float *dst) {
  NN_FOR(i, n) dst[i] = __half2float(src[i]);
}
static __global__ void widen_bf16(const __nv_bfloat16 *src, int64_t n, float *dst) {
  NN_FOR(i, n) dst[i] = __bfloat162float(src[i]);
}

int nn_widen_weights(const char *op, const fdm_kview *w, int64_t first, int64_t n, float *dst) {
  if (n <= 0) return 0;
  cudaStream_t st = fdm_cuda_stream();
  switch (w->dtype) {
    case FDM_FLOAT16:
      widen_f16<<<nn_blocks(n), NN_THREADS, 0, st>>>((const __half *)w->data + first, n, dst);
      break;
    case FDM_BFLOAT16:
      widen_bf16<<<nn_blocks(n), NN_THREADS, 0, st>>>((const __nv_bfloat16 *)w->data + first, n, dst);
      break;
    case FDM_FLOAT32:
      NN_CUDA(op, cudaMemcpyAsync(dst, (const float *)w->data + first, (size_t)n * sizeof(float),
                                  cudaMemcpyDeviceToDevice, st));
      return 0;
    default:
      return fdm_cuda_seterror("%s: weight dtype %d is not float32, float16 or bfloat16", op, (int)w->dtype);
  }
  NN_LAUNCHED(op);
  return 0;
}

/* C (m x n, ldc) = alpha op(A) op(B) + beta C, column-major, A and B of type ab (float32, or an autocast
** type: then float32 accumulation whatever the TF32 switch), C float32 */
static int gemm(const char *op, cudaDataType_t ab, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                int64_t k, const void *A, int64_t lda, const void *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX || ldc > INT_MAX)
    return fdm_cuda_seterror("%s: matrix dims %lld x %lld x %lld too large for cuBLAS", op, (long long)m,
                             (long long)n, (long long)k);
  cublasHandle_t h = fdm_cuda_cublas();   /* bound to fdm_cuda_stream() by the core */
  if (!h) return fdm_cuda_seterror("%s: no cuBLAS handle", op);
  const float alpha = 1.0f;
  cublasComputeType_t ct = nn_tf32() && ab == CUDA_R_32F ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  NN_CUBLAS(op, cublasGemmEx(h, ta, tb, (int)m, (int)n, (int)k, &alpha, A, ab, (int)lda, B, ab, (int)ldb, &beta, C,
                             CUDA_R_32F, (int)ldc, ct, CUBLAS_GEMM_DEFAULT));
  return 0;
}

/* rows of the weight widened per block: the whole weight when it fits */
static int64_t half_block_rows(int64_t OUT, int64_t IN) {
  int64_t rows = IN > 0 ? LINEAR_SCRATCH_BYTES / (IN * (int64_t)sizeof(float)) : OUT;
  if (rows < 1) rows = 1;
  return rows < OUT ? rows : OUT;
}

static __global__ void bias_rows(float *y, const float *b, int64_t M, int64_t OUT) {
  NN_FOR(i, M * OUT) y[i] = b[i % OUT];
}

/* gb[o] = sum over m of gy[m, o]: 32 columns per block, 8 row lanes, double sums */
static __global__ void bias_grad_cols(const float *gy, int64_t M, int64_t OUT, float *gb) {
  __shared__ double part[8][33];
  int64_t o = (int64_t)blockIdx.x * 32 + threadIdx.x;
  double s = 0.0;
  if (o < OUT)
    for (int64_t m = threadIdx.y; m < M; m += 8) s += gy[m * OUT + o];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && o < OUT) {
    for (int r = 1; r < 8; r++) s += part[r][threadIdx.x];
    gb[o] = (float)s;
  }
}

extern "C" int cuda_kernel_linear_forward(fdm_dtype autocast, int64_t M, int64_t IN, int64_t OUT,
                                          const fdm_kview *x, const fdm_kview *w, const fdm_kview *b,
                                          const fdm_kview *y) {
  const char *op = "linear";
  cudaStream_t st = fdm_cuda_stream();
  float *py = nn_f(y);
  if (!M || !OUT) return 0;
  if (b) {
    bias_rows<<<nn_blocks(M * OUT), NN_THREADS, 0, st>>>(py, nn_f(b), M, OUT);
    NN_LAUNCHED(op);
  }
  if (!IN) {
    if (!b) NN_CUDA(op, cudaMemsetAsync(py, 0, (size_t)(M * OUT) * sizeof(float), st));
    return 0;
  }
  float beta = b ? 1.0f : 0.0f;
  /* column-major y^T (OUT x M) = (w as IN x OUT)^T (x as IN x M) */
  if (autocast != FDM_FLOAT32) {
    const fdm_kview *ops[2] = {x, w};
    cuda_narrowed nar[2];
    if (cuda_autocast_operands(op, autocast, 2, ops, nar)) return -1;
    int rc = gemm(op, cuda_autocast_blas_type(autocast), CUBLAS_OP_T, CUBLAS_OP_N, OUT, M, IN, nar[1].p, IN,
                  nar[0].p, IN, beta, py, OUT);
    cuda_autocast_release(2, nar);
    return rc;
  }
  if (!nn_is_half(w))
    return gemm(op, CUDA_R_32F, CUBLAS_OP_T, CUBLAS_OP_N, OUT, M, IN, nn_f(w), IN, nn_f(x), IN, beta, py, OUT);
  int64_t rows = half_block_rows(OUT, IN);
  float *wf = (float *)fdm_cuda_scratch((size_t)(rows * IN) * sizeof(float));
  if (!wf) return -1;
  for (int64_t o0 = 0; o0 < OUT; o0 += rows) {
    int64_t nb = OUT - o0 < rows ? OUT - o0 : rows;
    if (nn_widen_weights(op, w, o0 * IN, nb * IN, wf) ||
        gemm(op, CUDA_R_32F, CUBLAS_OP_T, CUBLAS_OP_N, nb, M, IN, wf, IN, nn_f(x), IN, beta, py + o0, OUT))
      return -1;
  }
  return 0;
}

/* the autocast products: gx from w and gy, gw from x and gy, all narrowed */
static int linear_backward_autocast(fdm_dtype autocast, int64_t M, int64_t IN, int64_t OUT, const fdm_kview *x,
                                    const fdm_kview *w, const fdm_kview *gy, const fdm_kview *gx,
                                    const fdm_kview *gw) {
  const char *op = "linear";
  const fdm_kview *ops[3] = {gw ? x : NULL, gx ? w : NULL, gy};
  cuda_narrowed nar[3];
  if (cuda_autocast_operands(op, autocast, 3, ops, nar)) return -1;
  cudaDataType_t t = cuda_autocast_blas_type(autocast);
  int rc = 0;
  if (gx) rc = gemm(op, t, CUBLAS_OP_N, CUBLAS_OP_N, IN, M, OUT, nar[1].p, IN, nar[2].p, OUT, 0.0f, nn_f(gx), IN);
  if (gw && !rc) rc = gemm(op, t, CUBLAS_OP_N, CUBLAS_OP_T, IN, OUT, M, nar[0].p, IN, nar[2].p, OUT, 0.0f, nn_f(gw), IN);
  cuda_autocast_release(3, nar);
  return rc;
}

extern "C" int cuda_kernel_linear_backward(fdm_dtype autocast, int64_t M, int64_t IN, int64_t OUT,
                                           const fdm_kview *x, const fdm_kview *w, const fdm_kview *gy,
                                           const fdm_kview *gx, const fdm_kview *gw, const fdm_kview *gb) {
  const char *op = "linear";
  cudaStream_t st = fdm_cuda_stream();
  const float *pg = nn_f(gy);
  /* empty products (a zero dim) need no narrowing: the float32 branches below zero them */
  if (autocast != FDM_FLOAT32 && M && IN && OUT && (gx || gw)) {
    if (linear_backward_autocast(autocast, M, IN, OUT, x, w, gy, gx, gw)) return -1;
    gx = gw = NULL;
  }
  if (gx && M && IN) {
    float *pgx = nn_f(gx);
    if (!OUT) {
      NN_CUDA(op, cudaMemsetAsync(pgx, 0, (size_t)(M * IN) * sizeof(float), st));
    } else if (!nn_is_half(w)) {
      /* gx^T (IN x M) = w^T(col-major IN x OUT) gy^T (OUT x M) */
      if (gemm(op, CUDA_R_32F, CUBLAS_OP_N, CUBLAS_OP_N, IN, M, OUT, nn_f(w), IN, pg, OUT, 0.0f, pgx, IN)) return -1;
    } else {
      int64_t rows = half_block_rows(OUT, IN);
      float *wf = (float *)fdm_cuda_scratch((size_t)(rows * IN) * sizeof(float));
      if (!wf) return -1;
      for (int64_t o0 = 0; o0 < OUT; o0 += rows) {
        int64_t nb = OUT - o0 < rows ? OUT - o0 : rows;
        if (nn_widen_weights(op, w, o0 * IN, nb * IN, wf) ||
            gemm(op, CUDA_R_32F, CUBLAS_OP_N, CUBLAS_OP_N, IN, M, nb, wf, IN, pg + o0, OUT, o0 ? 1.0f : 0.0f, pgx, IN))
          return -1;
      }
    }
  }
  if (gw && OUT && IN) {
    float *pgw = nn_f(gw);
    if (!M) NN_CUDA(op, cudaMemsetAsync(pgw, 0, (size_t)(OUT * IN) * sizeof(float), st));
    /* gw^T (IN x OUT) = x^T (IN x M) gy (M x OUT) */
    else if (gemm(op, CUDA_R_32F, CUBLAS_OP_N, CUBLAS_OP_T, IN, OUT, M, nn_f(x), IN, pg, OUT, 0.0f, pgw, IN)) return -1;
  }
  if (gb && OUT) {
    dim3 blk(32, 8);
    bias_grad_cols<<<(unsigned)((OUT + 31) / 32), blk, 0, st>>>(pg, M, OUT, nn_f(gb));
    NN_LAUNCHED(op);
  }
  return 0;
}
